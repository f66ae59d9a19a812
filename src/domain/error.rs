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
    /// The stable machine-readable name of this refusal: the `ErrorInfo.reason` clients see
    /// (`api::error`; the one exception is the no-oracle rule there, which reports
    /// `RECEIPT_PASSPORT_MISMATCH` as `RECEIPT_NOT_REGISTERED`) and the status a Redis script
    /// answers with. Unique per variant (tested).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => reason::INVALID_ARGUMENT,
            Error::PostNotFound { .. } => reason::POST_NOT_FOUND,
            Error::CategoryNotFound { .. } => reason::CATEGORY_NOT_FOUND,
            Error::SlotNotFound { .. } => reason::SLOT_NOT_FOUND,
            Error::SlotClosed { .. } => reason::SLOT_CLOSED,
            Error::SlotFull { .. } => reason::SLOT_FULL,
            Error::SlotStarted { .. } => reason::SLOT_STARTED,
            Error::CapacityBelowBooked { .. } => reason::CAPACITY_BELOW_BOOKED,
            Error::ReceiptNotRegistered { .. } => reason::RECEIPT_NOT_REGISTERED,
            Error::ReceiptPassportMismatch { .. } => reason::RECEIPT_PASSPORT_MISMATCH,
            Error::ReceiptExpired { .. } => reason::RECEIPT_EXPIRED,
            Error::ReceiptInUse { .. } => reason::RECEIPT_IN_USE,
            Error::ReceiptConflict { .. } => reason::RECEIPT_CONFLICT,
            Error::ApplicantAlreadyBooked { .. } => reason::APPLICANT_ALREADY_BOOKED,
            Error::AppointmentNotFound => reason::APPOINTMENT_NOT_FOUND,
            Error::AppointmentCancelled { .. } => reason::APPOINTMENT_CANCELLED,
            Error::RequestIdReused { .. } => reason::REQUEST_ID_REUSED,
            Error::HoldNotFound => reason::HOLD_NOT_FOUND,
            Error::HoldExpired { .. } => reason::HOLD_EXPIRED,
            Error::HoldNotActive { .. } => reason::HOLD_NOT_ACTIVE,
            Error::RescheduleLimit { .. } => reason::RESCHEDULE_LIMIT,
            Error::RescheduleSameSlot { .. } => reason::RESCHEDULE_SAME_SLOT,
            Error::WaitingRoomDisabled => reason::WAITING_ROOM_DISABLED,
            Error::TicketNotFound => reason::TICKET_NOT_FOUND,
            Error::TicketSecretInvalid => reason::TICKET_SECRET_INVALID,
            Error::AdmissionRequired => reason::ADMISSION_REQUIRED,
            Error::AdmissionInvalid => reason::ADMISSION_INVALID,
            Error::AdmissionExpired { .. } => reason::ADMISSION_EXPIRED,
            Error::AdmissionRevoked => reason::ADMISSION_REVOKED,
            Error::AdmissionInUse => reason::ADMISSION_IN_USE,
            Error::AdmissionUsed => reason::ADMISSION_USED,
            Error::AdmissionStepsExhausted { .. } => reason::ADMISSION_STEPS_EXHAUSTED,
            Error::TooManyWatchers { .. } => reason::TOO_MANY_WATCHERS,
            Error::WaitlistEntryNotFound => reason::WAITLIST_ENTRY_NOT_FOUND,
            Error::EntrySecretInvalid => reason::ENTRY_SECRET_INVALID,
            Error::AlreadyWaiting { .. } => reason::ALREADY_WAITING,
        }
    }
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::Invalid {
            violations: vec![FieldViolation::new(field, description)],
        }
    }
}

/// Every `ErrorInfo.reason` a domain refusal can carry, one constant each. The Redis scripts
/// answer a refusal with the same string as the first element of their status array
/// (`{"SLOT_FULL", remaining}`), and the Redis store's one decoder matches on these constants,
/// so the string a script returns and the one a client sees are the same by construction.
pub mod reason {
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    pub const POST_NOT_FOUND: &str = "POST_NOT_FOUND";
    pub const CATEGORY_NOT_FOUND: &str = "CATEGORY_NOT_FOUND";
    pub const SLOT_NOT_FOUND: &str = "SLOT_NOT_FOUND";
    pub const SLOT_CLOSED: &str = "SLOT_CLOSED";
    pub const SLOT_FULL: &str = "SLOT_FULL";
    pub const SLOT_STARTED: &str = "SLOT_STARTED";
    pub const CAPACITY_BELOW_BOOKED: &str = "CAPACITY_BELOW_BOOKED";
    pub const RECEIPT_NOT_REGISTERED: &str = "RECEIPT_NOT_REGISTERED";
    pub const RECEIPT_PASSPORT_MISMATCH: &str = "RECEIPT_PASSPORT_MISMATCH";
    pub const RECEIPT_EXPIRED: &str = "RECEIPT_EXPIRED";
    pub const RECEIPT_IN_USE: &str = "RECEIPT_IN_USE";
    pub const RECEIPT_CONFLICT: &str = "RECEIPT_CONFLICT";
    pub const APPLICANT_ALREADY_BOOKED: &str = "APPLICANT_ALREADY_BOOKED";
    pub const APPOINTMENT_NOT_FOUND: &str = "APPOINTMENT_NOT_FOUND";
    pub const APPOINTMENT_CANCELLED: &str = "APPOINTMENT_CANCELLED";
    pub const REQUEST_ID_REUSED: &str = "REQUEST_ID_REUSED";
    pub const HOLD_NOT_FOUND: &str = "HOLD_NOT_FOUND";
    pub const HOLD_EXPIRED: &str = "HOLD_EXPIRED";
    pub const HOLD_NOT_ACTIVE: &str = "HOLD_NOT_ACTIVE";
    pub const RESCHEDULE_LIMIT: &str = "RESCHEDULE_LIMIT";
    pub const RESCHEDULE_SAME_SLOT: &str = "RESCHEDULE_SAME_SLOT";
    pub const WAITING_ROOM_DISABLED: &str = "WAITING_ROOM_DISABLED";
    pub const TICKET_NOT_FOUND: &str = "TICKET_NOT_FOUND";
    pub const TICKET_SECRET_INVALID: &str = "TICKET_SECRET_INVALID";
    pub const ADMISSION_REQUIRED: &str = "ADMISSION_REQUIRED";
    pub const ADMISSION_INVALID: &str = "ADMISSION_INVALID";
    pub const ADMISSION_EXPIRED: &str = "ADMISSION_EXPIRED";
    pub const ADMISSION_REVOKED: &str = "ADMISSION_REVOKED";
    pub const ADMISSION_IN_USE: &str = "ADMISSION_IN_USE";
    pub const ADMISSION_USED: &str = "ADMISSION_USED";
    pub const ADMISSION_STEPS_EXHAUSTED: &str = "ADMISSION_STEPS_EXHAUSTED";
    pub const TOO_MANY_WATCHERS: &str = "TOO_MANY_WATCHERS";
    pub const WAITLIST_ENTRY_NOT_FOUND: &str = "WAITLIST_ENTRY_NOT_FOUND";
    pub const ENTRY_SECRET_INVALID: &str = "ENTRY_SECRET_INVALID";
    pub const ALREADY_WAITING: &str = "ALREADY_WAITING";

    /// Every reason above, once (the uniqueness test checks each variant's is here).
    pub const ALL: &[&str] = &[
        INVALID_ARGUMENT,
        POST_NOT_FOUND,
        CATEGORY_NOT_FOUND,
        SLOT_NOT_FOUND,
        SLOT_CLOSED,
        SLOT_FULL,
        SLOT_STARTED,
        CAPACITY_BELOW_BOOKED,
        RECEIPT_NOT_REGISTERED,
        RECEIPT_PASSPORT_MISMATCH,
        RECEIPT_EXPIRED,
        RECEIPT_IN_USE,
        RECEIPT_CONFLICT,
        APPLICANT_ALREADY_BOOKED,
        APPOINTMENT_NOT_FOUND,
        APPOINTMENT_CANCELLED,
        REQUEST_ID_REUSED,
        HOLD_NOT_FOUND,
        HOLD_EXPIRED,
        HOLD_NOT_ACTIVE,
        RESCHEDULE_LIMIT,
        RESCHEDULE_SAME_SLOT,
        WAITING_ROOM_DISABLED,
        TICKET_NOT_FOUND,
        TICKET_SECRET_INVALID,
        ADMISSION_REQUIRED,
        ADMISSION_INVALID,
        ADMISSION_EXPIRED,
        ADMISSION_REVOKED,
        ADMISSION_IN_USE,
        ADMISSION_USED,
        ADMISSION_STEPS_EXHAUSTED,
        TOO_MANY_WATCHERS,
        WAITLIST_ENTRY_NOT_FOUND,
        ENTRY_SECRET_INVALID,
        ALREADY_WAITING,
    ];
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

/// One value of every variant, for tests that must cover them all (`reason()` is an exhaustive
/// match, so a new variant without a reason does not compile; `every_reason_is_one_variants`
/// fails until the new variant is listed here).
#[cfg(test)]
pub(crate) fn one_of_each() -> Vec<Error> {
    use super::types::{CategoryId, PostId, SlotTime};
    let slot = SlotRef {
        post: PostId::parse("BEIJING").expect("post"),
        category: CategoryId::parse("ALL_OTHERS").expect("category"),
        date: chrono::NaiveDate::from_ymd_opt(2030, 1, 7).expect("date"),
        time: SlotTime::parse("08:00").expect("time"),
    };
    let receipt_number = "R0000001".to_owned();
    vec![
        super::waitlist::moving_range_error(slot.date),
        Error::PostNotFound {
            post_id: "PARIS".into(),
        },
        Error::CategoryNotFound {
            post_id: "BEIJING".into(),
            category: "STUDENT".into(),
        },
        Error::SlotNotFound { slot: slot.clone() },
        Error::SlotClosed { slot: slot.clone() },
        Error::SlotFull {
            slot: slot.clone(),
            requested: 2,
            remaining: 1,
        },
        Error::SlotStarted { slot: slot.clone() },
        Error::CapacityBelowBooked {
            slot: slot.clone(),
            capacity: 1,
            booked: 2,
        },
        Error::ReceiptNotRegistered {
            receipt_number: receipt_number.clone(),
        },
        Error::ReceiptPassportMismatch {
            receipt_number: receipt_number.clone(),
        },
        Error::ReceiptExpired {
            receipt_number: receipt_number.clone(),
            expired_at: "2030-01-06T10:00:00Z".into(),
        },
        Error::ReceiptInUse {
            receipt_number: receipt_number.clone(),
        },
        Error::ReceiptConflict {
            receipt_number: receipt_number.clone(),
        },
        Error::ApplicantAlreadyBooked {
            passport_number: "P0000001".into(),
        },
        Error::AppointmentNotFound,
        Error::AppointmentCancelled {
            confirmation_number: "C-1".into(),
        },
        Error::RequestIdReused {
            request_id: "r-1".into(),
        },
        Error::HoldNotFound,
        Error::HoldExpired {
            hold_id: "H-1".into(),
            expired_at: "2030-01-06T10:00:00Z".into(),
        },
        Error::HoldNotActive {
            hold_id: "H-1".into(),
            status: "RELEASED".into(),
        },
        Error::RescheduleLimit {
            receipt_number: receipt_number.clone(),
            limit: 2,
        },
        Error::RescheduleSameSlot {
            confirmation_number: "C-1".into(),
            slot: slot.clone(),
        },
        Error::WaitingRoomDisabled,
        Error::TicketNotFound,
        Error::TicketSecretInvalid,
        Error::AdmissionRequired,
        Error::AdmissionInvalid,
        Error::AdmissionExpired {
            expired_at: "2030-01-06T10:00:00Z".into(),
        },
        Error::AdmissionRevoked,
        Error::AdmissionInUse,
        Error::AdmissionUsed,
        Error::AdmissionStepsExhausted { limit: 8 },
        Error::TooManyWatchers { limit: 4 },
        Error::WaitlistEntryNotFound,
        Error::EntrySecretInvalid,
        Error::AlreadyWaiting {
            passport_number: "P0000001".into(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_reason_is_one_variants() {
        let all = one_of_each();
        let reasons: Vec<&str> = all.iter().map(Error::reason).collect();
        let distinct: BTreeSet<&str> = reasons.iter().copied().collect();
        assert_eq!(distinct.len(), reasons.len(), "two variants share a reason");
        let listed: BTreeSet<&str> = reason::ALL.iter().copied().collect();
        assert_eq!(listed.len(), reason::ALL.len(), "reason::ALL repeats one");
        assert_eq!(distinct, listed, "reason::ALL and the variants disagree");
        for r in reason::ALL {
            assert!(
                !r.is_empty() && r.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{r}: reasons are UPPER_SNAKE_CASE"
            );
        }
    }
}
