//! The use cases of slotd, one method per RPC: look the post up in the catalog, apply the rules
//! that need the clock, call the store's atomic operation. Handlers in `api` only convert wire
//! messages to and from these calls.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::availability::{Availability, CalendarOptions, SlotSeats, Watch};
use crate::domain::catalog::{Catalog, Post};
use crate::domain::clock::Clock;
use crate::domain::lifecycle::{
    EventStart, Hold, HoldConfirmation, HoldId, HoldRelease, HoldRequest, Reschedule,
    DEFAULT_HOLD_TTL_SECS, DEFAULT_RESCHEDULE_LIMIT,
};
use crate::domain::rules::{
    ensure_not_started, AuditReport, Booking, Cancellation, DateRange, ManifestQuery, OpenPlan,
};
use crate::domain::types::AppointmentStatus;
use crate::domain::types::{
    format_date, Appointment, CategoryId, ConfirmationNumber, DayRef, PassportNumber, PostId,
    Receipt, SlotRef, SlotState, SlotTime,
};
use crate::domain::waitlist::{
    moving_range_error, EntryId, JoinGroup, JoinRequest, WaitlistEntry, WaitlistJoin,
    BOOKING_WINDOW_DAYS,
};
use crate::domain::Error;
use crate::store::{EventPage, Inventory, ManifestPage, OpenReport, StoreError};

/// The use cases' one error type, what the api layer maps to a status: a refusal (the client's
/// to fix), unavailability (retry), an id collision (retry), or an internal fault (slotd's).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A rule refused the request; nothing changed.
    #[error(transparent)]
    Refused(#[from] Error),
    /// The store cannot be reached or timed out. The operation may or may not have been
    /// applied; retrying with the same request_id is safe.
    #[error("store unavailable: {detail}")]
    Unavailable { detail: String },
    /// Every freshly drawn id of one call (confirmation number, hold id, entry id) was taken: a
    /// run of random collisions, not the client's fault and not corrupt data; nothing changed,
    /// and the same request (same request_id) may be retried at once.
    #[error("no free {what} after several draws")]
    IdCollision { what: &'static str },
    /// A fault in slotd or its data (stored data that does not parse, a misconfigured store, a
    /// collision that escaped its retry): never the client's fault.
    #[error("internal fault: {detail}")]
    Internal { detail: String },
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Domain(e) => AppError::Refused(e),
            StoreError::Unavailable { detail } => AppError::Unavailable { detail },
            other @ (StoreError::Corrupt { .. }
            | StoreError::Misconfigured { .. }
            | StoreError::ConfirmationTaken) => AppError::Internal {
                detail: other.to_string(),
            },
        }
    }
}

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

/// Settings of the booking lifecycle (`--hold-ttl-secs`, `--reschedule-limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleOptions {
    /// How long a hold keeps its seats.
    pub hold_ttl: Duration,
    /// How many times each receipt may back a reschedule.
    pub reschedule_limit: u32,
}

impl Default for LifecycleOptions {
    fn default() -> Self {
        Self {
            hold_ttl: Duration::seconds(DEFAULT_HOLD_TTL_SECS as i64),
            reschedule_limit: DEFAULT_RESCHEDULE_LIMIT,
        }
    }
}

/// What `CloseSlots` did, with the appointments on the closed slots when asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closing {
    pub closed: u32,
    pub affected: Vec<Appointment>,
}

#[derive(Clone)]
pub struct Slotd {
    catalog: Arc<Catalog>,
    store: Arc<dyn Inventory>,
    clock: Arc<dyn Clock>,
    lifecycle: LifecycleOptions,
    availability: Arc<Availability>,
}

impl Slotd {
    pub fn new(catalog: Arc<Catalog>, store: Arc<dyn Inventory>, clock: Arc<dyn Clock>) -> Self {
        Self {
            catalog,
            store,
            clock,
            lifecycle: LifecycleOptions::default(),
            availability: Arc::new(Availability::new(CalendarOptions::default())),
        }
    }

    /// The same service with other calendar cache and feed settings (a fresh, empty cache).
    pub fn with_calendar(mut self, options: CalendarOptions) -> Self {
        self.availability = Arc::new(Availability::new(options));
        self
    }

    /// The calendar cache, slot feed and watchers of this replica.
    pub fn availability(&self) -> &Arc<Availability> {
        &self.availability
    }

    /// Runs the slot feed (one per replica) until the task is aborted: see `availability`.
    pub fn spawn_feed(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.availability.clone().run_feed(self.store.clone()))
    }

    /// The same service with other hold and reschedule settings.
    pub fn with_lifecycle(mut self, lifecycle: LifecycleOptions) -> Self {
        self.lifecycle = lifecycle;
        self
    }

    pub fn lifecycle(&self) -> LifecycleOptions {
        self.lifecycle
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

    pub async fn book(&self, booking: &Booking) -> Result<Appointment, AppError> {
        let post = self
            .catalog
            .post_with_category(&booking.slot.post, &booking.slot.category)?;
        let now = self.now();
        ensure_not_started(post, &booking.slot, now)?;
        for _ in 0..CONFIRMATION_DRAWS {
            let confirmation = ConfirmationNumber::generate();
            match self.store.book(booking, &confirmation, now).await {
                Err(StoreError::ConfirmationTaken) => continue,
                outcome => {
                    return self.touched(outcome, |a| {
                        written_at(a.created_at, now).then(|| a.slot.day())
                    })
                }
            }
        }
        Err(AppError::IdCollision {
            what: "confirmation number",
        })
    }

    pub async fn appointment(
        &self,
        confirmation: &ConfirmationNumber,
        passport: &PassportNumber,
    ) -> Result<Appointment, AppError> {
        Ok(self.store.appointment(confirmation, passport).await?)
    }

    pub async fn cancel(&self, cancellation: &Cancellation) -> Result<Appointment, AppError> {
        let now = self.now();
        let outcome = self.store.cancel(cancellation, now).await;
        self.touched(outcome, |a| {
            written_at(a.updated_at, now).then(|| a.slot.day())
        })
    }

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
}

// ---- booking lifecycle ----
impl Slotd {
    /// Takes the seats for the group for the configured hold time.
    pub async fn hold(&self, request: &HoldRequest) -> Result<Hold, AppError> {
        let post = self
            .catalog
            .post_with_category(&request.slot.post, &request.slot.category)?;
        let now = self.now();
        ensure_not_started(post, &request.slot, now)?;
        let expires_at = now + self.lifecycle.hold_ttl;
        for _ in 0..CONFIRMATION_DRAWS {
            let id = HoldId::generate();
            match self.store.hold(request, &id, expires_at, now).await {
                Err(StoreError::ConfirmationTaken) => continue,
                outcome => {
                    return self.touched(outcome, |h| {
                        written_at(h.created_at, now).then(|| h.slot.day())
                    })
                }
            }
        }
        Err(AppError::IdCollision { what: "hold id" })
    }

    /// A hold's `SlotFull` answer when the store knows it without running the hold
    /// (`Inventory::refuse_sold_out_hold`), checked before an admission step is counted for
    /// it. Only that refusal: a hold `hold` would refuse for another reason first (unknown post,
    /// slot started) goes on to `hold`, which gives that reason.
    pub async fn refuse_sold_out_hold(&self, request: &HoldRequest) -> Result<(), AppError> {
        let now = self.now();
        let Ok(post) = self
            .catalog
            .post_with_category(&request.slot.post, &request.slot.category)
        else {
            return Ok(());
        };
        if ensure_not_started(post, &request.slot, now).is_err() {
            return Ok(());
        }
        Ok(self.store.refuse_sold_out_hold(request, now).await?)
    }

    pub async fn confirm_hold(
        &self,
        confirmation: &HoldConfirmation,
    ) -> Result<Appointment, AppError> {
        let now = self.now();
        for _ in 0..CONFIRMATION_DRAWS {
            let number = ConfirmationNumber::generate();
            match self.store.confirm_hold(confirmation, &number, now).await {
                Err(StoreError::ConfirmationTaken) => continue,
                outcome => {
                    // An accepted waitlist move also frees seats on the day it left.
                    if let Ok(moved) = &outcome {
                        if let Some(m) = moved.history.last().filter(|m| written_at(m.at, now)) {
                            self.availability.mark_dirty(m.from.day());
                        }
                    }
                    // A replayed confirmation (created earlier) wrote nothing now.
                    return self.touched(outcome, |a| {
                        (written_at(a.created_at, now)
                            || a.history.last().is_some_and(|m| written_at(m.at, now)))
                        .then(|| a.slot.day())
                    });
                }
            }
        }
        Err(AppError::IdCollision {
            what: "confirmation number",
        })
    }

    /// A hold as stored (any status), if it exists.
    pub async fn find_hold(&self, id: &HoldId) -> Result<Option<Hold>, AppError> {
        Ok(self.store.find_hold(id).await?)
    }

    pub async fn release_hold(&self, release: &HoldRelease) -> Result<Hold, AppError> {
        let outcome = self.store.release_hold(release, self.now()).await;
        // Holds carry no release time: a replayed release marks its one day again.
        self.touched(outcome, |h| Some(h.slot.day()))
    }

    /// The sweeper's step: returns the seats of every hold expired by now (how many).
    pub async fn reclaim_expired_holds(&self) -> Result<u32, AppError> {
        let reclaimed = self.store.reclaim_expired_holds(self.now()).await?;
        // Only the days whose holds came back changed.
        for day in reclaimed.days {
            self.availability.mark_dirty(day);
        }
        Ok(reclaimed.holds)
    }

    /// Moves the group to another slot that has not started, keeping its confirmation number.
    pub async fn reschedule(&self, reschedule: &Reschedule) -> Result<Appointment, AppError> {
        let post = self
            .catalog
            .post_with_category(&reschedule.new_slot.post, &reschedule.new_slot.category)?;
        let now = self.now();
        ensure_not_started(post, &reschedule.new_slot, now)?;
        let outcome = self
            .store
            .reschedule(reschedule, self.lifecycle.reschedule_limit, now)
            .await;
        // A move made now changed the day it left and the day it reached; a replay (its move
        // made earlier) changed nothing.
        if let Ok(moved) = &outcome {
            if let Some(m) = moved.history.last().filter(|m| written_at(m.at, now)) {
                self.availability.mark_dirty(m.from.day());
                self.availability.mark_dirty(m.to.day());
            }
        }
        Ok(outcome?)
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

    /// Runs the hold sweeper every `interval` until the task is aborted: expired holds return
    /// their seats even when no request touches their date.
    pub fn spawn_hold_sweeper(&self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match app.reclaim_expired_holds().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(reclaimed = n, "expired holds reclaimed"),
                    Err(e) => tracing::warn!(error = %e, "hold sweep failed"),
                }
                // Waitlist entries whose range has passed: a bounded batch per tick.
                match app.store.retire_passed_waitlist(app.now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(retired = n, "passed waitlist entries retired"),
                    Err(e) => tracing::warn!(error = %e, "waitlist retirement failed"),
                }
                // Past appointments free their passports and leave their day's indexes; records
                // past their retention are forgotten (bounded batches per tick).
                match app.store.retire_past_appointments(app.now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(retired = n, "past appointments retired"),
                    Err(e) => tracing::warn!(error = %e, "appointment retirement failed"),
                }
            }
        })
    }
}

// ---- waitlist ----
impl Slotd {
    /// Puts the group in line for released seats in the range (from today at the post up to
    /// the bookable window).
    pub async fn join_waitlist(&self, request: &JoinRequest) -> Result<WaitlistEntry, AppError> {
        let post = self
            .catalog
            .post_with_category(&request.post, &request.category)?;
        let (applicants, moving) = match &request.group {
            JoinGroup::Applicants(applicants) => (applicants.clone(), None),
            JoinGroup::Moving {
                appointment,
                passport,
            } => {
                // The appointment's group waits; the store re-checks it atomically.
                let current = self.store.appointment(appointment, passport).await?;
                if current.status == AppointmentStatus::Cancelled {
                    return Err(Error::AppointmentCancelled {
                        confirmation_number: appointment.to_string(),
                    }
                    .into());
                }
                if current.slot.date <= request.range.to {
                    return Err(moving_range_error(current.slot.date).into());
                }
                (current.applicants, Some(appointment.clone()))
            }
        };
        let mut join = WaitlistJoin::new(
            request.request_id.clone(),
            request.post.clone(),
            request.category.clone(),
            request.range,
            request.times.clone(),
            applicants,
        )
        .map_err(|violations| Error::Invalid { violations })?;
        if let Some(appointment) = moving {
            join = join.moving(appointment);
        }
        let join = &join;
        let now = self.now();
        let today = post.today(now);
        if join.range.from < today {
            return Err(Error::invalid(
                "from_date",
                format!(
                    "{} is in the past at {} (today is {})",
                    format_date(join.range.from),
                    post.id,
                    format_date(today)
                ),
            )
            .into());
        }
        let last = today + Duration::days(BOOKING_WINDOW_DAYS);
        if join.range.to > last {
            return Err(Error::invalid(
                "to_date",
                format!(
                    "must be within the bookable window of {BOOKING_WINDOW_DAYS} days: {} at the latest",
                    format_date(last)
                ),
            )
            .into());
        }
        for _ in 0..CONFIRMATION_DRAWS {
            let id = EntryId::generate();
            match self
                .store
                .join_waitlist(join, &id, self.lifecycle.reschedule_limit, now)
                .await
            {
                Err(StoreError::ConfirmationTaken) => continue,
                outcome => return Ok(outcome?),
            }
        }
        Err(AppError::IdCollision { what: "entry id" })
    }

    pub async fn waitlist_entry(&self, id: &EntryId) -> Result<WaitlistEntry, AppError> {
        Ok(self.store.waitlist_entry(id).await?)
    }

    pub async fn leave_waitlist(&self, id: &EntryId) -> Result<WaitlistEntry, AppError> {
        let outcome = self.store.leave_waitlist(id, self.now()).await;
        // A declined offer's seats came back (or went on to the next entry).
        if let Ok(WaitlistEntry {
            offer: Some(offer), ..
        }) = &outcome
        {
            self.availability.mark_dirty(offer.slot.day());
        }
        Ok(outcome?)
    }

    pub async fn set_waitlist_share(
        &self,
        post: &PostId,
        category: &CategoryId,
        percent: u32,
    ) -> Result<u32, AppError> {
        self.catalog.post_with_category(post, category)?;
        Ok(self
            .store
            .set_waitlist_share(post, category, percent)
            .await?)
    }
}

impl Slotd {
    /// After a write through this replica: its day is dirty at once (read-your-writes), not
    /// only when the feed reads the event. `day` answers None for a replay (nothing written).
    fn touched<T>(
        &self,
        outcome: Result<T, StoreError>,
        day: impl FnOnce(&T) -> Option<DayRef>,
    ) -> Result<T, AppError> {
        if let Some(day) = outcome.as_ref().ok().and_then(day) {
            self.availability.mark_dirty(day);
        }
        Ok(outcome?)
    }
}

/// Whether a stored instant is this call's `now`, i.e. the call wrote it. Both stores keep every
/// digit of the instant they are given (`codec::instant_text`), so a replay answering the first
/// outcome of a request carries that outcome's earlier instant.
fn written_at(stored: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    stored == now
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
