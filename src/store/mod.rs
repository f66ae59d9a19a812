//! Storage of slot inventory, appointments and receipts.
//!
//! `Inventory` is operation-level: one method per business operation, each atomic inside its
//! backend, so no caller ever reads seats and writes them back (that races as soon as two
//! replicas run). Checks that depend on stored state (seats, receipts, one active appointment per
//! passport, idempotency) happen inside the operation; format rules were checked before, in
//! `domain`. Backends: `memory` (embedded, per process) and `redis` (production).

pub mod memory;
pub mod memory_room;
pub mod redis;
pub mod room;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::rules::{
    AuditReport, Booking, Cancellation, DateRange, ManifestCursor, ManifestQuery, OpenPlan,
};
use crate::domain::types::{
    Appointment, CategoryId, ConfirmationNumber, DayRef, PassportNumber, PostId, Receipt, SlotRef,
    SlotState, SlotTime,
};

/// How long a request_id is remembered: a retry within this window returns the first outcome.
pub const IDEMPOTENCY_TTL_SECS: i64 = 24 * 60 * 60;

/// The store layer's one error type.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A business rule refused the operation; nothing changed.
    #[error(transparent)]
    Domain(#[from] crate::domain::Error),
    /// The backend cannot be reached or timed out. The operation may or may not have been
    /// applied; retrying with the same request_id is safe.
    #[error("store unavailable: {detail}")]
    Unavailable { detail: String },
    /// The freshly generated confirmation number exists already; the caller draws another.
    #[error("confirmation number already taken")]
    ConfirmationTaken,
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

/// A page of a day's manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestPage {
    pub appointments: Vec<Appointment>,
    pub next: Option<ManifestCursor>,
}

#[async_trait]
pub trait Inventory: Send + Sync + 'static {
    /// Opens (or re-opens and resizes) every slot of the plan.
    async fn open_slots(&self, plan: &OpenPlan) -> Result<OpenReport, StoreError>;

    /// Sets one existing slot's capacity; refuses `CapacityBelowBooked`.
    async fn set_capacity(&self, slot: &SlotRef, capacity: u32) -> Result<SlotState, StoreError>;

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
}
