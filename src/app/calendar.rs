//! Calendar reads: which dates and slots have seats, and the watchers of a range. Served from
//! this replica's calendar cache (`availability`), never straight from the store.

use chrono::{DateTime, NaiveDate, Utc};

use super::availability::{SlotSeats, Watch};
use super::{AppError, Slotd};
use crate::domain::catalog::Post;
use crate::domain::rules::DateRange;
use crate::domain::types::{CategoryId, DayRef, PostId, SlotState, SlotTime};

/// A date with bookable seats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateSeats {
    pub date: NaiveDate,
    pub seats: u32,
    pub open_slots: u32,
}

impl Slotd {
    /// Dates in the range with seats in slots that are open and not yet started.
    pub async fn available_dates(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<Vec<DateSeats>, AppError> {
        let p = self.catalog.post_with_category(post, category)?;
        let now = self.now();
        let today = p.today(now);
        let days = self
            .availability
            .days(self.store.as_ref(), post, category, range)
            .await?;
        let mut dates: Vec<DateSeats> = Vec::new();
        for day in &days {
            let mut seats = 0;
            let mut open_slots = 0;
            for s in day.iter().filter(|s| bookable_now(p, today, s, now)) {
                seats += s.bookable();
                open_slots += 1;
            }
            if let (Some(first), true) = (day.first(), open_slots > 0) {
                dates.push(DateSeats {
                    date: first.slot.date,
                    seats,
                    open_slots,
                });
            }
        }
        Ok(dates)
    }

    /// Every open, not yet started slot of the range with its bookable seats (0 when full),
    /// by date and time: a watcher's snapshot, served from the calendar cache.
    pub async fn range_seats(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<Vec<(NaiveDate, SlotSeats)>, AppError> {
        let p = self.catalog.post_with_category(post, category)?;
        let now = self.now();
        let today = p.today(now);
        let days = self
            .availability
            .snapshot(self.store.as_ref(), post, category, range)
            .await?;
        Ok(days
            .iter()
            .flat_map(|day| day.iter())
            .filter(|s| !s.closed && not_started(p, today, s, now))
            .map(|s| {
                (
                    s.slot.date,
                    SlotSeats {
                        time: s.slot.time,
                        seats: s.bookable(),
                    },
                )
            })
            .collect())
    }

    /// Registers a watcher of the range (checked against the catalog first).
    pub fn watch(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<Watch, AppError> {
        self.catalog.post_with_category(post, category)?;
        Ok(self.availability.watch(post, category, range))
    }

    /// Open, not yet started slots of a day with their free seats (0 when full).
    pub async fn day_slots(&self, day: &DayRef) -> Result<Vec<(SlotTime, u32)>, AppError> {
        let p = self.catalog.check_day(day)?;
        let now = self.now();
        let today = p.today(now);
        let range = DateRange {
            from: day.date,
            to: day.date,
        };
        let days = self
            .availability
            .days(self.store.as_ref(), &day.post, &day.category, range)
            .await?;
        Ok(days
            .iter()
            .flat_map(|d| d.iter())
            .filter(|s| !s.closed && not_started(p, today, s, now))
            .map(|s| (s.slot.time, s.bookable()))
            .collect())
    }
}

/// Whether the slot has not started: every slot of a later local date has not; only today's
/// need the time zone arithmetic.
fn not_started(post: &Post, today: NaiveDate, s: &SlotState, now: DateTime<Utc>) -> bool {
    match s.slot.date.cmp(&today) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => post.slot_start(&s.slot) > now,
    }
}

fn bookable_now(post: &Post, today: NaiveDate, s: &SlotState, now: DateTime<Utc>) -> bool {
    s.bookable() > 0 && not_started(post, today, s, now)
}
