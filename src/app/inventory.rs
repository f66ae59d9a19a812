//! Operator use cases on the slot inventory: open, resize and close slots, read a slot and a
//! day's manifest, register receipts, audit, read the event log.

use chrono::Duration;

use super::{AppError, Slotd};
use crate::domain::lifecycle::EventStart;
use crate::domain::rules::{AuditReport, DateRange, ManifestQuery, OpenPlan};
use crate::domain::types::{
    format_date, Appointment, CategoryId, DayRef, PostId, Receipt, SlotRef, SlotState, SlotTime,
};
use crate::domain::Error;
use crate::store::{EventPage, ManifestPage, OpenReport};

/// How far in the future a receipt's payment time may lie (clock skew between systems).
const PAYMENT_CLOCK_SKEW_SECS: i64 = 300;

/// What `CloseSlots` did, with the appointments on the closed slots when asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closing {
    pub closed: u32,
    pub affected: Vec<Appointment>,
}

impl Slotd {
    pub async fn open_slots(&self, plan: &OpenPlan) -> Result<OpenReport, AppError> {
        let post = self
            .catalog
            .post_with_category(&plan.post, &plan.category)?;
        let today = post.today(self.now());
        if plan.range.from < today {
            return Err(Error::invalid(
                "from",
                format!(
                    "{} is in the past at {} (today is {})",
                    format_date(plan.range.from),
                    post.id,
                    format_date(today)
                ),
            )
            .into());
        }
        let outcome = self.store.open_slots(plan, self.now()).await;
        if outcome.is_ok() {
            self.availability
                .mark_range_dirty(&plan.post, &plan.category, plan.range);
        }
        Ok(outcome?)
    }

    pub async fn set_capacity(&self, slot: &SlotRef, capacity: u32) -> Result<SlotState, AppError> {
        self.catalog
            .post_with_category(&slot.post, &slot.category)?;
        let outcome = self.store.set_capacity(slot, capacity, self.now()).await;
        self.touched(outcome, |s| Some(s.slot.day()))
    }

    pub async fn close_slots(&self, day: &DayRef, time: Option<SlotTime>) -> Result<u32, AppError> {
        self.catalog.check_day(day)?;
        let outcome = self.store.close_slots(day, time).await;
        self.touched(outcome, |_| Some(day.clone()))
    }

    pub async fn manifest(&self, query: &ManifestQuery) -> Result<ManifestPage, AppError> {
        self.catalog.check_day(&query.day)?;
        Ok(self.store.manifest(query).await?)
    }

    pub async fn register_receipt(&self, receipt: &Receipt) -> Result<(Receipt, bool), AppError> {
        if receipt.paid_at > self.now() + Duration::seconds(PAYMENT_CLOCK_SKEW_SECS) {
            return Err(Error::invalid("paid_at", "paid_at must not be in the future").into());
        }
        Ok(self.store.register_receipt(receipt).await?)
    }

    pub async fn audit(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<AuditReport, AppError> {
        self.catalog.post_with_category(post, category)?;
        Ok(self.store.audit(post, category, range).await?)
    }

    /// One slot's inventory, expired holds reclaimed first so `held` counts live holds only.
    pub async fn slot(&self, slot: &SlotRef) -> Result<SlotState, AppError> {
        self.catalog
            .post_with_category(&slot.post, &slot.category)?;
        self.reclaim_expired_holds().await?;
        let range = DateRange {
            from: slot.date,
            to: slot.date,
        };
        self.store
            .slots(&slot.post, &slot.category, range)
            .await?
            .into_iter()
            .find(|s| s.slot.time == slot.time)
            .ok_or_else(|| Error::SlotNotFound { slot: slot.clone() }.into())
    }

    /// Closes, then (when asked) lists the BOOKED appointments on the closed slots. Closed slots
    /// take no new bookings or moves, so the list can only shrink (cancels, moves away) after.
    pub async fn close_slots_listing(
        &self,
        day: &DayRef,
        time: Option<SlotTime>,
        list_affected: bool,
    ) -> Result<Closing, AppError> {
        let closed = self.close_slots(day, time).await?;
        let mut affected = Vec::new();
        if list_affected {
            let mut query = ManifestQuery {
                day: day.clone(),
                after: None,
                limit: crate::domain::rules::MAX_PAGE_SIZE,
                include_cancelled: false,
            };
            loop {
                let page = self.store.manifest(&query).await?;
                affected.extend(
                    page.appointments
                        .into_iter()
                        .filter(|a| time.is_none_or(|t| a.slot.time == t)),
                );
                match page.next {
                    Some(next) => query.after = Some(next),
                    None => break,
                }
            }
        }
        Ok(Closing { closed, affected })
    }

    pub async fn events(&self, start: EventStart, limit: u32) -> Result<EventPage, AppError> {
        Ok(self.store.events(start, limit).await?)
    }
}
