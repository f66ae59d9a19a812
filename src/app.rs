//! The use cases of slotd, one method per RPC: look the post up in the catalog, apply the rules
//! that need the clock, call the store's atomic operation. Handlers in `api` only convert wire
//! messages to and from these calls.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::domain::catalog::{Catalog, Post};
use crate::domain::clock::Clock;
use crate::domain::rules::{
    ensure_not_started, AuditReport, Booking, Cancellation, DateRange, ManifestQuery, OpenPlan,
};
use crate::domain::types::{
    format_date, Appointment, CategoryId, ConfirmationNumber, DayRef, PassportNumber, PostId,
    Receipt, SlotRef, SlotState, SlotTime,
};
use crate::domain::Error;
use crate::store::{Inventory, ManifestPage, OpenReport, StoreError};

/// A date with bookable seats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateSeats {
    pub date: NaiveDate,
    pub seats: u32,
    pub open_slots: u32,
}

/// How far in the future a receipt's payment time may lie (clock skew between systems).
const PAYMENT_CLOCK_SKEW_SECS: i64 = 300;

/// Draws of a fresh confirmation number before giving up (a collision needs ~2^34 appointments).
const CONFIRMATION_DRAWS: usize = 4;

#[derive(Clone)]
pub struct Slotd {
    catalog: Arc<Catalog>,
    store: Arc<dyn Inventory>,
    clock: Arc<dyn Clock>,
}

impl Slotd {
    pub fn new(catalog: Arc<Catalog>, store: Arc<dyn Inventory>, clock: Arc<dyn Clock>) -> Self {
        Self {
            catalog,
            store,
            clock,
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn store(&self) -> &Arc<dyn Inventory> {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Dates in the range with seats in slots that are open and not yet started.
    pub async fn available_dates(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<Vec<DateSeats>, StoreError> {
        let p = self.catalog.post_with_category(post, category)?;
        let now = self.now();
        let slots = self.store.slots(post, category, range).await?;
        let mut dates: Vec<DateSeats> = Vec::new();
        for s in slots.iter().filter(|s| bookable_now(p, s, now)) {
            match dates.last_mut() {
                Some(d) if d.date == s.slot.date => {
                    d.seats += s.bookable();
                    d.open_slots += 1;
                }
                _ => dates.push(DateSeats {
                    date: s.slot.date,
                    seats: s.bookable(),
                    open_slots: 1,
                }),
            }
        }
        Ok(dates)
    }

    /// Open, not yet started slots of a day with their free seats (0 when full).
    pub async fn day_slots(&self, day: &DayRef) -> Result<Vec<(SlotTime, u32)>, StoreError> {
        let p = self.catalog.check_day(day)?;
        let now = self.now();
        let range = DateRange {
            from: day.date,
            to: day.date,
        };
        let slots = self.store.slots(&day.post, &day.category, range).await?;
        Ok(slots
            .iter()
            .filter(|s| !s.closed && p.slot_start(&s.slot) > now)
            .map(|s| (s.slot.time, s.bookable()))
            .collect())
    }

    pub async fn book(&self, booking: &Booking) -> Result<Appointment, StoreError> {
        let post = self
            .catalog
            .post_with_category(&booking.slot.post, &booking.slot.category)?;
        let now = self.now();
        ensure_not_started(post, &booking.slot, now)?;
        for _ in 0..CONFIRMATION_DRAWS {
            let confirmation = ConfirmationNumber::generate();
            match self.store.book(booking, &confirmation, now).await {
                Err(StoreError::ConfirmationTaken) => continue,
                outcome => return outcome,
            }
        }
        Err(StoreError::corrupt(
            "no free confirmation number after several draws",
        ))
    }

    pub async fn appointment(
        &self,
        confirmation: &ConfirmationNumber,
        passport: &PassportNumber,
    ) -> Result<Appointment, StoreError> {
        self.store.appointment(confirmation, passport).await
    }

    pub async fn cancel(&self, cancellation: &Cancellation) -> Result<Appointment, StoreError> {
        self.store.cancel(cancellation, self.now()).await
    }

    pub async fn open_slots(&self, plan: &OpenPlan) -> Result<OpenReport, StoreError> {
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
        self.store.open_slots(plan).await
    }

    pub async fn set_capacity(
        &self,
        slot: &SlotRef,
        capacity: u32,
    ) -> Result<SlotState, StoreError> {
        self.catalog
            .post_with_category(&slot.post, &slot.category)?;
        self.store.set_capacity(slot, capacity).await
    }

    pub async fn close_slots(
        &self,
        day: &DayRef,
        time: Option<SlotTime>,
    ) -> Result<u32, StoreError> {
        self.catalog.check_day(day)?;
        self.store.close_slots(day, time).await
    }

    pub async fn manifest(&self, query: &ManifestQuery) -> Result<ManifestPage, StoreError> {
        self.catalog.check_day(&query.day)?;
        self.store.manifest(query).await
    }

    pub async fn register_receipt(&self, receipt: &Receipt) -> Result<(Receipt, bool), StoreError> {
        if receipt.paid_at > self.now() + Duration::seconds(PAYMENT_CLOCK_SKEW_SECS) {
            return Err(Error::invalid("paid_at", "paid_at must not be in the future").into());
        }
        self.store.register_receipt(receipt).await
    }

    pub async fn audit(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<AuditReport, StoreError> {
        self.catalog.post_with_category(post, category)?;
        self.store.audit(post, category, range).await
    }
}

fn bookable_now(post: &Post, s: &SlotState, now: DateTime<Utc>) -> bool {
    s.bookable() > 0 && post.slot_start(&s.slot) > now
}
