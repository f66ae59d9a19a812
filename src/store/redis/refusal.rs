//! The one decoder of a script's refusal: a status array (`{"SLOT_FULL", remaining, held}`,
//! `{"RECEIPT_EXPIRED", applicant_index, expired_ms}`, …) becomes the `domain::Error` the
//! embedded store returns for the same rule. A refusal's status is the variant's
//! `domain::Error::reason()` (matched here on the `domain::error::reason` constants), apart from
//! the few script statuses below that name a store condition rather than a client reason.
//!
//! What the status array does not carry (the slot asked for, the request_id, the applicants in
//! the order the script indexes them) comes from `Asked`, filled by the caller with what it sent.
//! A status that needs context the caller did not give is an unexpected answer (`Corrupt`).

use chrono::{DateTime, Utc};
use redis::Value;

use super::applicant_at;
use super::codec::{at, instant_from_millis, int, text, uint, unexpected};
use crate::domain::error::reason;
use crate::domain::types::{format_instant, parse_date, Applicant, SlotRef};
use crate::domain::waitlist::moving_range_error;
use crate::domain::Error;
use crate::store::StoreError;

/// Script statuses that are not a client reason.
pub(super) mod status {
    /// A freshly drawn id (confirmation number, hold id, entry id) exists already: the app draws
    /// another (`StoreError::ConfirmationTaken`).
    pub const CONFIRMATION_TAKEN: &str = "CONFIRMATION_TAKEN";
    /// The appointment's own slot has started: `Error::SlotStarted` for that slot.
    pub const APPOINTMENT_PASSED: &str = "APPOINTMENT_PASSED";
    /// A moving entry's range reaches its appointment's date (`{status, date}`).
    pub const MOVING_RANGE: &str = "MOVING_RANGE";
    /// wl_leave.lua: no such entry (`Error::WaitlistEntryNotFound`).
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// A counted step's script (holds_lib.lua `admission_step_refusal`): the admission's steps
    /// are used up (`Error::AdmissionStepsExhausted`; the caller knows the limit).
    pub const EXHAUSTED: &str = "EXHAUSTED";
}

/// What the caller asked for, to fill the fields a status array leaves out.
#[derive(Debug, Default)]
pub(super) struct Asked<'a> {
    /// The slot the operation targets (booked, held, opened, moved to).
    pub slot: Option<&'a SlotRef>,
    /// Seats the operation asked for (`SlotFull.requested`).
    pub requested: u32,
    /// The capacity asked for (`CapacityBelowBooked.capacity`).
    pub capacity: Option<u32>,
    pub request_id: Option<String>,
    /// The applicants, in the order the script's 1-based applicant index counts them.
    pub applicants: &'a [Applicant],
    /// The appointment concerned; when None, APPOINTMENT_CANCELLED carries it as `items[0]`.
    pub confirmation: Option<String>,
    /// The appointment's current slot (`SlotStarted`, `RescheduleSameSlot`).
    pub current_slot: Option<SlotRef>,
    pub hold_id: Option<String>,
    pub hold_expires_at: Option<DateTime<Utc>>,
    /// The limit the caller passed; when None, RESCHEDULE_LIMIT carries it as `items[1]`.
    pub limit: Option<u32>,
    pub receipt_number: Option<String>,
}

/// A refusal as the store error the operation returns: a domain refusal, an id collision, or
/// `Corrupt` for a status (or shape) no script should answer.
pub(super) fn refusal(what: &str, status: &str, items: &[Value], asked: &Asked<'_>) -> StoreError {
    match decode(what, status, items, asked) {
        Ok(e) => StoreError::Domain(e),
        Err(e) => e,
    }
}

/// A refusal status array as the domain error it stands for.
pub(super) fn decode(
    what: &str,
    status: &str,
    items: &[Value],
    asked: &Asked<'_>,
) -> Result<Error, StoreError> {
    let missing = || unexpected(what, status, items);
    let slot = || asked.slot.cloned().ok_or_else(missing);
    let current_slot = || asked.current_slot.clone().ok_or_else(missing);
    let applicant = || applicant_at(what, asked.applicants, items);
    let receipt_number = || applicant().map(|a| a.receipt.to_string());
    let confirmation_number = || match &asked.confirmation {
        Some(c) => Ok(c.clone()),
        None => text(what, at(what, items, 0)?),
    };
    let hold_id = || asked.hold_id.clone().ok_or_else(missing);
    Ok(match status {
        reason::REQUEST_ID_REUSED => Error::RequestIdReused {
            request_id: asked.request_id.clone().ok_or_else(missing)?,
        },
        reason::ADMISSION_USED => Error::AdmissionUsed,
        reason::SLOT_NOT_FOUND => Error::SlotNotFound { slot: slot()? },
        reason::SLOT_CLOSED => Error::SlotClosed { slot: slot()? },
        reason::SLOT_FULL => Error::SlotFull {
            slot: slot()?,
            requested: asked.requested,
            remaining: uint(what, at(what, items, 0)?)?,
        },
        reason::CAPACITY_BELOW_BOOKED => Error::CapacityBelowBooked {
            slot: slot()?,
            capacity: asked.capacity.ok_or_else(missing)?,
            booked: uint(what, at(what, items, 0)?)?,
        },
        reason::RECEIPT_NOT_REGISTERED => Error::ReceiptNotRegistered {
            receipt_number: receipt_number()?,
        },
        reason::RECEIPT_PASSPORT_MISMATCH => Error::ReceiptPassportMismatch {
            receipt_number: receipt_number()?,
        },
        reason::RECEIPT_EXPIRED => Error::ReceiptExpired {
            receipt_number: receipt_number()?,
            expired_at: format_instant(instant_from_millis(int(what, at(what, items, 1)?)?)?),
        },
        reason::RECEIPT_IN_USE => Error::ReceiptInUse {
            receipt_number: receipt_number()?,
        },
        reason::RECEIPT_CONFLICT => Error::ReceiptConflict {
            receipt_number: asked.receipt_number.clone().ok_or_else(missing)?,
        },
        reason::APPLICANT_ALREADY_BOOKED => Error::ApplicantAlreadyBooked {
            passport_number: applicant()?.passport.to_string(),
        },
        reason::ALREADY_WAITING => Error::AlreadyWaiting {
            passport_number: applicant()?.passport.to_string(),
        },
        reason::APPOINTMENT_NOT_FOUND => Error::AppointmentNotFound,
        reason::APPOINTMENT_CANCELLED => Error::AppointmentCancelled {
            confirmation_number: confirmation_number()?,
        },
        status::APPOINTMENT_PASSED => Error::SlotStarted {
            slot: current_slot()?,
        },
        reason::RESCHEDULE_SAME_SLOT => Error::RescheduleSameSlot {
            confirmation_number: asked.confirmation.clone().ok_or_else(missing)?,
            slot: current_slot()?,
        },
        reason::RESCHEDULE_LIMIT => Error::RescheduleLimit {
            receipt_number: receipt_number()?,
            limit: match asked.limit {
                Some(limit) => limit,
                None => uint(what, at(what, items, 1)?)?,
            },
        },
        reason::HOLD_NOT_FOUND => Error::HoldNotFound,
        // room_*.lua (`room.rs` decodes every room refusal here).
        reason::TICKET_NOT_FOUND => Error::TicketNotFound,
        reason::WAITING_ROOM_DISABLED => Error::WaitingRoomDisabled,
        reason::HOLD_EXPIRED => Error::HoldExpired {
            hold_id: hold_id()?,
            expired_at: format_instant(asked.hold_expires_at.ok_or_else(missing)?),
        },
        reason::HOLD_NOT_ACTIVE => Error::HoldNotActive {
            hold_id: hold_id()?,
            status: text(what, at(what, items, 0)?)?,
        },
        status::NOT_FOUND => Error::WaitlistEntryNotFound,
        status::EXHAUSTED => Error::AdmissionStepsExhausted {
            limit: asked.limit.ok_or_else(missing)?,
        },
        status::MOVING_RANGE => {
            let date = parse_date(&text(what, at(what, items, 0)?)?)
                .map_err(|_| StoreError::corrupt(format!("{what}: bad date")))?;
            moving_range_error(date)
        }
        status::CONFIRMATION_TAKEN => return Err(StoreError::ConfirmationTaken),
        _ => return Err(missing()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::error::one_of_each;
    use crate::domain::types::{Ds160Number, PassportNumber, PersonName, ReceiptNumber, SlotRef};

    fn applicant() -> Applicant {
        Applicant {
            passport: PassportNumber::parse("P0000001").expect("passport"),
            given_name: PersonName::parse("Wei").expect("name"),
            surname: PersonName::parse("Zhang").expect("name"),
            ds160: Ds160Number::parse("AA00000001").expect("ds160"),
            receipt: ReceiptNumber::parse("R0000001").expect("receipt"),
        }
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn millis_of(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .expect("instant")
            .timestamp_millis()
    }

    /// How a script answers `e`: its status, the array after the status, and what the caller
    /// knows. None for a refusal no script returns (decided in Rust before any script runs).
    fn script_form<'a>(
        e: &'a Error,
        applicants: &'a [Applicant],
    ) -> Option<(&'static str, Vec<Value>, Asked<'a>)> {
        let first = Value::Int(1); // the 1-based index of the applicant refused
        let none = Asked::default();
        let with_slot = |slot: &'a SlotRef| Asked {
            slot: Some(slot),
            ..Asked::default()
        };
        Some(match e {
            Error::SlotNotFound { slot } | Error::SlotClosed { slot } => {
                (e.reason(), vec![], with_slot(slot))
            }
            Error::SlotFull {
                slot,
                requested,
                remaining,
            } => (
                e.reason(),
                vec![Value::Int((*remaining).into()), Value::Int(0)],
                Asked {
                    requested: *requested,
                    ..with_slot(slot)
                },
            ),
            Error::CapacityBelowBooked {
                slot,
                capacity,
                booked,
            } => (
                e.reason(),
                vec![Value::Int((*booked).into())],
                Asked {
                    capacity: Some(*capacity),
                    ..with_slot(slot)
                },
            ),
            Error::SlotStarted { slot } => (
                status::APPOINTMENT_PASSED,
                vec![],
                Asked {
                    current_slot: Some(slot.clone()),
                    ..Asked::default()
                },
            ),
            Error::ReceiptNotRegistered { .. }
            | Error::ReceiptPassportMismatch { .. }
            | Error::ReceiptInUse { .. }
            | Error::ApplicantAlreadyBooked { .. }
            | Error::AlreadyWaiting { .. } => (
                e.reason(),
                vec![first],
                Asked {
                    applicants,
                    ..Asked::default()
                },
            ),
            Error::ReceiptExpired { expired_at, .. } => (
                e.reason(),
                vec![first, Value::Int(millis_of(expired_at))],
                Asked {
                    applicants,
                    ..Asked::default()
                },
            ),
            Error::ReceiptConflict { receipt_number } => (
                e.reason(),
                vec![],
                Asked {
                    receipt_number: Some(receipt_number.clone()),
                    ..Asked::default()
                },
            ),
            Error::RequestIdReused { request_id } => (
                e.reason(),
                vec![],
                Asked {
                    request_id: Some(request_id.clone()),
                    ..Asked::default()
                },
            ),
            Error::AppointmentCancelled {
                confirmation_number,
            } => (e.reason(), vec![bulk(confirmation_number)], none),
            Error::RescheduleSameSlot {
                confirmation_number,
                slot,
            } => (
                e.reason(),
                vec![],
                Asked {
                    confirmation: Some(confirmation_number.clone()),
                    current_slot: Some(slot.clone()),
                    ..Asked::default()
                },
            ),
            Error::RescheduleLimit { limit, .. } => (
                e.reason(),
                vec![first, Value::Int((*limit).into())],
                Asked {
                    applicants,
                    ..Asked::default()
                },
            ),
            Error::HoldExpired {
                hold_id,
                expired_at,
            } => (
                e.reason(),
                vec![],
                Asked {
                    hold_id: Some(hold_id.clone()),
                    hold_expires_at: Some(
                        DateTime::from_timestamp_millis(millis_of(expired_at)).expect("instant"),
                    ),
                    ..Asked::default()
                },
            ),
            Error::HoldNotActive { hold_id, status } => (
                e.reason(),
                vec![bulk(status)],
                Asked {
                    hold_id: Some(hold_id.clone()),
                    ..Asked::default()
                },
            ),
            Error::AppointmentNotFound
            | Error::HoldNotFound
            | Error::AdmissionUsed
            | Error::TicketNotFound
            | Error::WaitingRoomDisabled => (e.reason(), vec![], none),
            Error::WaitlistEntryNotFound => (status::NOT_FOUND, vec![], none),
            Error::AdmissionStepsExhausted { limit } => (
                status::EXHAUSTED,
                vec![],
                Asked {
                    limit: Some(*limit),
                    ..Asked::default()
                },
            ),
            Error::Invalid { .. } => (status::MOVING_RANGE, vec![bulk("2030-01-07")], none),
            // Decided in Rust before (or without) a script: the catalog, admission tokens and
            // ticket secrets, the Watch stream cap, entry secrets.
            Error::PostNotFound { .. }
            | Error::CategoryNotFound { .. }
            | Error::TicketSecretInvalid
            | Error::AdmissionRequired
            | Error::AdmissionInvalid
            | Error::AdmissionExpired { .. }
            | Error::AdmissionRevoked
            | Error::AdmissionInUse
            | Error::TooManyWatchers { .. }
            | Error::EntrySecretInvalid => return None,
        })
    }

    #[test]
    fn every_script_refusal_decodes_to_the_variant_it_names() {
        let applicants = [applicant()];
        let mut decoded = 0;
        let all = one_of_each();
        for e in &all {
            let Some((status, items, asked)) = script_form(e, &applicants) else {
                continue;
            };
            if status == e.reason() {
                // The string the script returns is the reason the client sees.
                assert!(reason::ALL.contains(&status), "{status}");
            }
            match decode("test", status, &items, &asked) {
                Ok(got) => assert_eq!(&got, e, "{status}"),
                Err(err) => panic!("{status}: {err}"),
            }
            decoded += 1;
        }
        assert!(decoded >= 24, "only {decoded} refusals decoded");
    }

    #[test]
    fn a_taken_id_is_not_a_refusal() {
        assert!(matches!(
            refusal("test", status::CONFIRMATION_TAKEN, &[], &Asked::default()),
            StoreError::ConfirmationTaken
        ));
    }

    #[test]
    fn unknown_statuses_and_missing_context_are_corrupt_not_panics() {
        let asked = Asked::default();
        for (status, items) in [
            ("NO_SUCH_STATUS", vec![]),
            // Needs the slot asked for, which the caller did not give.
            (reason::SLOT_FULL, vec![Value::Int(0)]),
            // An applicant index past the applicants.
            (reason::RECEIPT_IN_USE, vec![Value::Int(3)]),
            // Too short a reply.
            (reason::HOLD_NOT_ACTIVE, vec![]),
        ] {
            assert!(
                matches!(
                    refusal("test", status, &items, &asked),
                    StoreError::Corrupt { .. }
                ),
                "{status}"
            );
        }
    }
}
