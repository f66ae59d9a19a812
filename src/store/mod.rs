//! Storage of slot inventory, appointments and receipts.
//!
//! `Inventory` is operation-level: one method per business operation, each atomic inside its
//! backend, so no caller ever reads seats and writes them back (that races as soon as two
//! replicas run). Checks that depend on stored state (seats, receipts, one active appointment per
//! passport, idempotency) happen inside the operation; format rules were checked before, in
//! `domain`. Backends: `memory` (embedded, per process) and `redis` (production).

pub mod memory;
pub mod redis;
pub mod room;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::lifecycle::{
    Event, EventId, EventStart, Hold, HoldConfirmation, HoldId, HoldRelease, HoldRequest,
    Reschedule,
};
use crate::domain::rules::{
    AuditReport, Booking, Cancellation, DateRange, ManifestCursor, ManifestQuery, OpenPlan,
};
use crate::domain::types::{
    Appointment, CategoryId, ConfirmationNumber, DayRef, PassportNumber, PostId, Receipt, SlotRef,
    SlotState, SlotTime,
};
use crate::domain::waitlist::{EntryId, WaitlistEntry, WaitlistJoin};

/// Manifest entries one `manifest` call examines at most (both stores): however many cancelled
/// appointments lie between two live ones, one call's work is bounded; the page is then short
/// (even empty) with a `next` cursor, and the caller follows it.
pub const MANIFEST_SCAN_BUDGET: u32 = 1024;

/// Waitlist entries the sweeper retires per run at most (bounded work per call).
pub const WAITLIST_RETIRE_BATCH: u32 = 64;

/// When a waitlist entry's range `to` has passed in every time zone (00:00 UTC two days
/// after it): from then the sweeper retires the entry if it still waits.
pub fn waitlist_retire_at(to: chrono::NaiveDate) -> DateTime<Utc> {
    (to + chrono::Duration::days(2))
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
}

/// Past appointments (and past days) the sweeper handles per run at most, in each of its two
/// stages (retiring, then forgetting records past their retention): bounded work per call.
pub const APPOINTMENT_RETIRE_BATCH: u32 = 64;

/// When an appointment on `date` has passed, in every time zone (00:00 UTC two days after the
/// date, as `waitlist_retire_at`): from then the sweeper retires it (its passports are free to
/// book again, it leaves the day's manifest and active index) and its record is forgotten
/// `booking.retention_days` after this instant.
pub fn appointment_retire_at(date: chrono::NaiveDate) -> DateTime<Utc> {
    waitlist_retire_at(date)
}

/// Default `booking.retention_days`: how long a cancelled appointment stays readable.
pub const DEFAULT_RETENTION_DAYS: i64 = 90;

/// How long a request_id is remembered: a retry within this window returns the first outcome.
pub const IDEMPOTENCY_TTL_SECS: i64 = 24 * 60 * 60;

/// How many holds, reschedules, cancellations and waitlist joins one waiting-room admission may
/// make. Each of those operations, given the admission (`Booking::admission`,
/// `Reschedule::admission`, `Cancellation::admission`, `WaitlistJoin::admission`), checks the
/// count with its other checks and counts itself with its writes, in its own atomic step: a
/// refused step counts nothing (and changes nothing), `AdmissionUsed` once the admission booked,
/// `AdmissionStepsExhausted` after this many. Remembered as long as a request_id. Its one
/// booking is counted apart.
pub const ADMISSION_STEP_LIMIT: u32 = 8;

/// The store layer's one error type.
/// Clone: one failed batch call is the outcome of every call it carried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A business rule refused the operation; nothing changed.
    #[error(transparent)]
    Domain(#[from] crate::domain::Error),
    /// The backend cannot be reached or timed out. The operation may or may not have been
    /// applied; retrying with the same request_id is safe.
    #[error("store unavailable: {detail}")]
    Unavailable { detail: String },
    /// The freshly drawn id (confirmation number, hold id or waitlist entry id: every script
    /// answers `CONFIRMATION_TAKEN`) exists already; nothing changed and the caller draws
    /// another. Never leaves the app: after its draws it is `app::AppError::IdCollision`.
    #[error("confirmation number already taken")]
    ConfirmationTaken,
    /// The store was opened with settings it cannot run with (`redis.tag`): a start-up error.
    /// `config` checks the same rule first, so through the binary this never happens.
    #[error("config key `{key}`: {detail}")]
    Misconfigured { key: &'static str, detail: String },
    /// Stored data that does not parse: a bug or a foreign writer, never the client's fault.
    #[error("stored data is corrupt: {detail}")]
    Corrupt { detail: String },
}

impl StoreError {
    pub fn corrupt(detail: impl Into<String>) -> Self {
        StoreError::Corrupt {
            detail: detail.into(),
        }
    }
}

/// What `open_slots` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub opened: u32,
    pub updated: u32,
    /// Slots asked to go below the seats booked: they stay open at capacity == booked.
    pub kept_at_booked: Vec<SlotState>,
}

/// A page of the event log and where the next page starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// The last id returned, or the resolved start when the page is empty.
    pub next: EventId,
}

/// What a hold sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Holds whose seats came back.
    pub holds: u32,
    /// The days of those holds, each once.
    pub days: Vec<DayRef>,
}

/// A page of a day's manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestPage {
    pub appointments: Vec<Appointment>,
    pub next: Option<ManifestCursor>,
}

#[async_trait]
pub trait Inventory: Send + Sync + 'static {
    /// Opens (or re-opens and resizes) every slot of the plan. Seats that become bookable go to
    /// waiting entries first (offers expire from `now`).
    async fn open_slots(
        &self,
        plan: &OpenPlan,
        now: DateTime<Utc>,
    ) -> Result<OpenReport, StoreError>;

    /// Sets one existing slot's capacity; refuses `CapacityBelowBooked`. Seats added go to
    /// waiting entries first.
    async fn set_capacity(
        &self,
        slot: &SlotRef,
        capacity: u32,
        now: DateTime<Utc>,
    ) -> Result<SlotState, StoreError>;

    /// Closes one slot, or every slot of the day when `time` is None. Returns how many were open.
    async fn close_slots(&self, day: &DayRef, time: Option<SlotTime>) -> Result<u32, StoreError>;

    /// Every slot (open or closed) of a post and category in the range, ordered by date and time.
    async fn slots(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<Vec<SlotState>, StoreError>;

    /// Books the group on its slot with `confirmation` as the new appointment's number, all or
    /// nothing. A request_id seen before returns that first appointment (or `RequestIdReused`).
    async fn book(
        &self,
        booking: &Booking,
        confirmation: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError>;

    /// The appointment, if `passport` is one of its applicants' (else `AppointmentNotFound`).
    async fn appointment(
        &self,
        confirmation: &ConfirmationNumber,
        passport: &PassportNumber,
    ) -> Result<Appointment, StoreError>;

    /// Cancels: returns the seats and frees receipts and passports, exactly once.
    async fn cancel(
        &self,
        cancellation: &Cancellation,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError>;

    /// A page of the day's appointments ordered by (time, confirmation number).
    async fn manifest(&self, query: &ManifestQuery) -> Result<ManifestPage, StoreError>;

    /// Registers a paid receipt. Returns it and whether it is new; the identical receipt again is
    /// not an error, a different one under the same number is `ReceiptConflict`.
    async fn register_receipt(&self, receipt: &Receipt) -> Result<(Receipt, bool), StoreError>;

    /// Checks `booked + remaining == capacity` and `remaining >= 0` for every slot in the range.
    async fn audit(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<AuditReport, StoreError>;

    /// Ok when the backend answers (health checks).
    async fn ping(&self) -> Result<(), StoreError>;

    // ---- booking lifecycle: holds, reschedules, events ----

    /// The hold's `SlotFull` refusal when this store can give it without running the hold (and
    /// so before an admission step is counted for it): the slot is full of bookings (no seat
    /// left and none under a live hold) and the request_id was not seen (a seen one must replay
    /// its first outcome). Ok(()) means "run the hold": this never refuses a hold the hold itself
    /// would let through, except within the sold-out memo's bound on Redis (`sold_out.rs`:
    /// seats returned through another replica are seen at most its TTL later). The embedded
    /// store answers exactly; Redis from its memo (no script, one `EXISTS`).
    async fn refuse_sold_out_hold(
        &self,
        _request: &HoldRequest,
        _now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Takes the seats for the group until `expires_at`, with the same checks as `book` (a
    /// passport or receipt under a live hold counts as taken). A request_id seen before returns
    /// that first hold (or `RequestIdReused`).
    async fn hold(
        &self,
        request: &HoldRequest,
        id: &HoldId,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Hold, StoreError>;

    /// Turns a live hold into an appointment numbered `confirmation`. Confirming it again
    /// returns the same appointment; an expired hold fails `HoldExpired` and books nothing.
    async fn confirm_hold(
        &self,
        confirmation: &HoldConfirmation,
        number: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError>;

    /// Returns a live hold's seats; releasing it again returns it unchanged.
    async fn release_hold(
        &self,
        release: &HoldRelease,
        now: DateTime<Utc>,
    ) -> Result<Hold, StoreError>;

    /// A hold as stored (any status), if it exists.
    async fn find_hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError>;

    /// Returns the seats of every hold expired at `now` (the periodic sweeper; the operations
    /// above also reclaim the expired holds of the dates they touch). Returns how many, and the
    /// days whose seats came back (the calendar cache drops those only).
    async fn reclaim_expired_holds(&self, now: DateTime<Utc>) -> Result<Reclaimed, StoreError>;

    /// Retires at most `WAITLIST_RETIRE_BATCH` waitlist entries still in line whose range has
    /// passed (`waitlist_retire_at` <= `now`): they end EXPIRED (reason `DATES_PASSED`) and
    /// free their passports to join again. Returns how many (the sweeper runs it each tick).
    async fn retire_passed_waitlist(&self, now: DateTime<Utc>) -> Result<u32, StoreError>;

    /// The sweeper's retention step for past BOOKED appointments, bounded per call: first it
    /// forgets at most `APPOINTMENT_RETIRE_BATCH` retired records whose retention has passed
    /// (`appointment_retire_at(date) + retention <= now`: GetAppointment answers NOT_FOUND from
    /// then), then it retires at most `APPOINTMENT_RETIRE_BATCH` BOOKED appointments of days
    /// whose `appointment_retire_at` is `<= now`: each leaves its day's manifest and active
    /// index (and its seats the day's booked count), frees every passport claim that still
    /// names it (compare-and-set), keeps its receipts spent, and stays readable (BOOKED) until
    /// its retention ends. A retired appointment can no longer be cancelled or moved
    /// (`SlotStarted`). The Redis store also runs one bounded step of a one-time backfill that
    /// indexes days and waitlist entries written before the due indexes existed (the embedded
    /// store holds no such data). Returns how many were retired.
    async fn retire_past_appointments(&self, now: DateTime<Utc>) -> Result<u32, StoreError>;

    /// Moves the whole group to `new_slot` atomically, keeping the confirmation number; each
    /// receipt may back at most `limit` moves.
    async fn reschedule(
        &self,
        reschedule: &Reschedule,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError>;

    /// At most `limit` events after `start`, oldest first.
    async fn events(&self, start: EventStart, limit: u32) -> Result<EventPage, StoreError>;

    // ---- waitlist: released seats are offered in join order (`domain::waitlist`) ----

    /// Puts the group in line, after the same receipt and passport checks as a booking, and
    /// at most one entry in line per passport (`AlreadyWaiting`). A moving entry
    /// (`join.moving`) instead needs its appointment booked, on a date after the range, held by
    /// exactly this group, with a reschedule left under `limit` on every receipt. A request_id
    /// seen before answers that first entry (or `RequestIdReused`).
    async fn join_waitlist(
        &self,
        join: &WaitlistJoin,
        id: &EntryId,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<WaitlistEntry, StoreError>;

    /// The entry with its place in line and its offer (`WaitlistEntryNotFound`).
    async fn waitlist_entry(&self, id: &EntryId) -> Result<WaitlistEntry, StoreError>;

    /// Takes the entry out of line; a pending offer is declined (its seats go to the next
    /// entry). A finished entry is answered unchanged.
    async fn leave_waitlist(
        &self,
        id: &EntryId,
        now: DateTime<Utc>,
    ) -> Result<WaitlistEntry, StoreError>;

    /// Sets the percentage (0-100) of released seats of a post and category offered to its
    /// waitlist; the rest stays publicly bookable.
    async fn set_waitlist_share(
        &self,
        post: &PostId,
        category: &CategoryId,
        percent: u32,
    ) -> Result<u32, StoreError>;
}
