//! The domain's one error type: every rule slotd can refuse a request for. It names no transport
//! and no store; `api::error` maps it to a gRPC status exactly once.

use super::types::SlotRef;

/// One broken input rule: which field (a proto field path such as `applicants[1].surname`) and
/// which rule it broke, written for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }

    /// The same violation seen from a parent message (`slot` + `date` → `slot.date`).
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if parent.is_empty() {
            self.field
        } else if self.field.is_empty() {
            parent.to_owned()
        } else if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {}", describe(.violations))]
    Invalid { violations: Vec<FieldViolation> },
    #[error("post {post_id} does not exist")]
    PostNotFound { post_id: String },
    #[error("post {post_id} offers no category {category}")]
    CategoryNotFound { post_id: String, category: String },
    #[error("slot {slot} has not been opened")]
    SlotNotFound { slot: SlotRef },
    #[error("slot {slot} is closed for booking")]
    SlotClosed { slot: SlotRef },
    #[error("slot {slot} has {remaining} seats left, {requested} requested")]
    SlotFull {
        slot: SlotRef,
        requested: u32,
        remaining: u32,
    },
    #[error("slot {slot} has already started")]
    SlotStarted { slot: SlotRef },
    #[error("slot {slot} has {booked} seats booked, capacity {capacity} would be below that")]
    CapacityBelowBooked {
        slot: SlotRef,
        capacity: u32,
        booked: u32,
    },
    #[error("receipt {receipt_number} is not registered")]
    ReceiptNotRegistered { receipt_number: String },
    #[error("receipt {receipt_number} was paid for another passport")]
    ReceiptPassportMismatch { receipt_number: String },
    #[error("receipt {receipt_number} expired at {expired_at}")]
    ReceiptExpired {
        receipt_number: String,
        expired_at: String,
    },
    #[error("receipt {receipt_number} already backs an active appointment")]
    ReceiptInUse { receipt_number: String },
    #[error("receipt {receipt_number} is already registered with different details")]
    ReceiptConflict { receipt_number: String },
    #[error("passport {passport_number} already has an active appointment")]
    ApplicantAlreadyBooked { passport_number: String },
    #[error("no appointment matches this confirmation number and passport number")]
    AppointmentNotFound,
    #[error("appointment {confirmation_number} is already cancelled")]
    AppointmentCancelled { confirmation_number: String },
    #[error("request_id {request_id} was already used for a different request")]
    RequestIdReused { request_id: String },
    #[error("no hold matches this hold_id")]
    HoldNotFound,
    #[error("hold {hold_id} expired at {expired_at}; its seats were returned")]
    HoldExpired { hold_id: String, expired_at: String },
    #[error("hold {hold_id} is {status}, not held")]
    HoldNotActive { hold_id: String, status: String },
    #[error("receipt {receipt_number} was already used for {limit} reschedules")]
    RescheduleLimit { receipt_number: String, limit: u32 },
    #[error("appointment {confirmation_number} is already on slot {slot}")]
    RescheduleSameSlot {
        confirmation_number: String,
        slot: SlotRef,
    },
    #[error("the waiting room is not enabled: go straight to booking")]
    WaitingRoomDisabled,
    #[error("no such ticket")]
    TicketNotFound,
    #[error("ticket_secret does not match ticket_id")]
    TicketSecretInvalid,
    #[error(
        "the waiting room is enabled: send the admission token as `x-admission-token` metadata"
    )]
    AdmissionRequired,
    #[error("the admission token is not valid")]
    AdmissionInvalid,
    #[error(
        "the admission token expired at {expired_at}: watch or poll the ticket for a fresh one"
    )]
    AdmissionExpired { expired_at: String },
    #[error("the admitted session has ended (completed, left, expired or revoked)")]
    AdmissionRevoked,
    #[error("another call is using this admission token right now: retry once it has finished")]
    AdmissionInUse,
    #[error("this admission has booked already: one admission books once")]
    AdmissionUsed,
    #[error(
        "this admission has made its {limit} holds, reschedules, cancellations and waitlist joins: join the waiting room again"
    )]
    AdmissionStepsExhausted { limit: u32 },
    #[error("ticket already has {limit} open Watch streams on this server: close one first")]
    TooManyWatchers { limit: usize },
    #[error("no waitlist entry matches this entry_id")]
    WaitlistEntryNotFound,
    #[error("entry_secret does not match entry_id")]
    EntrySecretInvalid,
    #[error("passport {passport_number} is already waiting in a waitlist entry: leave it first")]
    AlreadyWaiting { passport_number: String },
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::Invalid {
            violations: vec![FieldViolation::new(field, description)],
        }
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects every violation of a request, so one answer names all of them.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the value when `result` is Ok, otherwise records its violation under `parent`.
    pub fn take<T>(&mut self, parent: &str, result: Result<T, FieldViolation>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(violation) => {
                self.0.push(violation.within(parent));
                None
            }
        }
    }

    /// Records the violations of a nested message under `parent`.
    pub fn nest<T>(&mut self, parent: &str, result: Result<T, Vec<FieldViolation>>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(violations) => {
                self.0
                    .extend(violations.into_iter().map(|v| v.within(parent)));
                None
            }
        }
    }

    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<FieldViolation> {
        self.0
    }

    /// Ok(()) when nothing was recorded, else the violations as an `Error::Invalid`.
    pub fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid { violations: self.0 })
        }
    }
}
