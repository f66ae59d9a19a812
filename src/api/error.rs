//! The API layer's error type and the one mapping of every error slotd can return to a gRPC
//! status. Each status carries a `google.rpc.ErrorInfo` whose `reason` is stable and
//! machine-readable (e.g. `SLOT_FULL`), and INVALID_ARGUMENT also a `google.rpc.BadRequest` that
//! names each offending field. The matches are exhaustive on purpose: a new error variant does
//! not compile until someone decides its status code.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::app::AppError;
use crate::domain::error::reason;
use crate::domain::Error;
use crate::store::StoreError;

/// The `domain` of every ErrorInfo slotd returns.
pub const ERROR_DOMAIN: &str = "slotd";

/// The reason of `StoreError::IdCollision` (a store condition, not a domain refusal).
pub const ID_COLLISION: &str = "ID_COLLISION";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Operator credentials missing or wrong.
    #[error("{detail}")]
    Unauthenticated { detail: String },
    /// A per-client rate limit (`crate::limits`) refused the call.
    #[error("rate limit `{limit}` exceeded; retry in {} ms", retry_after.as_millis())]
    RateLimited {
        limit: &'static str,
        retry_after: std::time::Duration,
    },
    /// The client holds `streams.max_per_client` open streams already (`crate::streams`).
    #[error("too many open streams: at most {max} per client; close one first")]
    TooManyStreams { max: u32 },
    /// A gRPC-Web call (a browser) to a service only native gRPC may reach (`crate::web`).
    #[error("{service} is not served over gRPC-Web: call it over native gRPC (HTTP/2)")]
    NotServedOverGrpcWeb { service: String },
    /// What a use case (or a store call made directly) answered.
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::App(e.into())
    }
}

impl From<crate::streams::TooManyStreams> for ApiError {
    fn from(e: crate::streams::TooManyStreams) -> Self {
        ApiError::TooManyStreams { max: e.max }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::App(AppError::Refused(e))
    }
}

/// For `map_err`: anything the layers below return, as a status.
pub fn status(e: impl Into<ApiError>) -> Status {
    Status::from(e.into())
}

fn with_info(code: Code, message: String, reason: &str, meta: &[(&str, String)]) -> Status {
    let mut details = ErrorDetails::new();
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    details.set_error_info(reason, ERROR_DOMAIN, meta);
    Status::with_error_details(code, message, details)
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let message = e.to_string();
        match e {
            ApiError::Unauthenticated { .. } => {
                with_info(Code::Unauthenticated, message, "UNAUTHENTICATED", &[])
            }
            ApiError::RateLimited { limit, retry_after } => {
                let mut details = ErrorDetails::new();
                details.set_retry_info(Some(retry_after));
                let meta: HashMap<String, String> = [("limit".to_owned(), limit.to_owned())].into();
                details.set_error_info("RATE_LIMITED", ERROR_DOMAIN, meta);
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ApiError::NotServedOverGrpcWeb { service } => with_info(
                Code::Unimplemented,
                message,
                "NOT_SERVED_OVER_GRPC_WEB",
                &[("service", service)],
            ),
            ApiError::TooManyStreams { max } => with_info(
                Code::ResourceExhausted,
                message,
                "TOO_MANY_STREAMS",
                &[("max_per_client", max.to_string())],
            ),
            ApiError::App(AppError::Unavailable { detail }) => {
                tracing::warn!(%detail, "store unavailable");
                with_info(
                    Code::Unavailable,
                    "the booking store is unavailable; retry with the same request_id".into(),
                    "STORE_UNAVAILABLE",
                    &[],
                )
            }
            ApiError::App(AppError::Internal { detail }) => {
                tracing::error!(%detail, "internal fault");
                with_info(Code::Internal, "internal error".into(), "INTERNAL", &[])
            }
            // Every freshly drawn id was taken: chance, not the client's fault and not a fault
            // in slotd's data, and nothing was written. UNAVAILABLE (not INTERNAL, not ABORTED)
            // because the right move is the one for a transient outage: retry the same call with
            // the same request_id, and gRPC retry policies retry UNAVAILABLE by default. The
            // reason tells it apart from STORE_UNAVAILABLE for operators.
            ApiError::App(AppError::IdCollision { what }) => {
                tracing::error!(what, "every freshly drawn id was taken");
                with_info(
                    Code::Unavailable,
                    "could not draw a free id; retry with the same request_id".into(),
                    ID_COLLISION,
                    &[("id", what.to_owned())],
                )
            }
            ApiError::App(AppError::Refused(d)) => domain_status(d, message),
        }
    }
}

fn domain_status(e: Error, message: String) -> Status {
    use Code::*;
    let reason = e.reason();
    match e {
        Error::Invalid { violations } => {
            let mut details = ErrorDetails::new();
            for v in &violations {
                details.add_bad_request_violation(v.field.clone(), v.description.clone());
            }
            let fields = violations
                .iter()
                .map(|v| v.field.as_str())
                .collect::<Vec<_>>()
                .join(",");
            let meta: HashMap<String, String> = [("fields".to_owned(), fields)].into();
            details.set_error_info(reason, ERROR_DOMAIN, meta);
            Status::with_error_details(InvalidArgument, message, details)
        }
        Error::PostNotFound { post_id } => {
            with_info(NotFound, message, reason, &[("post_id", post_id)])
        }
        Error::CategoryNotFound { post_id, category } => with_info(
            NotFound,
            message,
            reason,
            &[("post_id", post_id), ("category", category)],
        ),
        Error::SlotNotFound { slot } => with_info(
            NotFound,
            message,
            reason,
            &[("slot", slot.to_string())],
        ),
        Error::SlotClosed { slot } => with_info(
            FailedPrecondition,
            message,
            reason,
            &[("slot", slot.to_string())],
        ),
        Error::SlotFull {
            slot,
            requested,
            remaining,
        } => with_info(
            FailedPrecondition,
            message,
            reason,
            &[
                ("slot", slot.to_string()),
                ("requested", requested.to_string()),
                ("remaining", remaining.to_string()),
            ],
        ),
        Error::SlotStarted { slot } => with_info(
            FailedPrecondition,
            message,
            reason,
            &[("slot", slot.to_string())],
        ),
        Error::CapacityBelowBooked {
            slot,
            capacity,
            booked,
        } => with_info(
            FailedPrecondition,
            message,
            reason,
            &[
                ("slot", slot.to_string()),
                ("capacity", capacity.to_string()),
                ("booked", booked.to_string()),
            ],
        ),
        // No oracle: an unknown receipt and someone else's receipt answer alike, so a caller who
        // cannot show the passport it was paid for learns nothing about whether it exists. What
        // the applicant who mistyped either number needs is the same in both cases: check the
        // receipt and passport numbers. (The middleware charges this answer to the caller's
        // failed-lookup budget.)
        Error::ReceiptNotRegistered { receipt_number }
        | Error::ReceiptPassportMismatch { receipt_number } => with_info(
            FailedPrecondition,
            format!(
                "receipt {receipt_number} is not registered for this passport: check the receipt and passport numbers"
            ),
            reason::RECEIPT_NOT_REGISTERED,
            &[("receipt_number", receipt_number)],
        ),
        Error::ReceiptExpired {
            receipt_number,
            expired_at,
        } => with_info(
            FailedPrecondition,
            message,
            reason,
            &[
                ("receipt_number", receipt_number),
                ("expired_at", expired_at),
            ],
        ),
        Error::ReceiptInUse { receipt_number } => with_info(
            FailedPrecondition,
            message,
            reason,
            &[("receipt_number", receipt_number)],
        ),
        Error::ReceiptConflict { receipt_number } => with_info(
            AlreadyExists,
            message,
            reason,
            &[("receipt_number", receipt_number)],
        ),
        Error::ApplicantAlreadyBooked { passport_number } => with_info(
            AlreadyExists,
            message,
            reason,
            &[("passport_number", passport_number)],
        ),
        Error::AppointmentNotFound => with_info(NotFound, message, reason, &[]),
        Error::AppointmentCancelled {
            confirmation_number,
        } => with_info(
            FailedPrecondition,
            message,
            reason,
            &[("confirmation_number", confirmation_number)],
        ),
        Error::RequestIdReused { request_id } => with_info(
            AlreadyExists,
            message,
            reason,
            &[("request_id", request_id)],
        ),
        Error::HoldNotFound => with_info(NotFound, message, reason, &[]),
        Error::HoldExpired {
            hold_id,
            expired_at,
        } => with_info(
            FailedPrecondition,
            message,
            reason,
            &[("hold_id", hold_id), ("expired_at", expired_at)],
        ),
        Error::HoldNotActive { hold_id, status } => with_info(
            FailedPrecondition,
            message,
            reason,
            &[("hold_id", hold_id), ("status", status)],
        ),
        Error::RescheduleLimit {
            receipt_number,
            limit,
        } => with_info(
            FailedPrecondition,
            message,
            reason,
            &[
                ("receipt_number", receipt_number),
                ("limit", limit.to_string()),
            ],
        ),
        Error::RescheduleSameSlot {
            confirmation_number,
            slot,
        } => with_info(
            FailedPrecondition,
            message,
            reason,
            &[
                ("confirmation_number", confirmation_number),
                ("slot", slot.to_string()),
            ],
        ),
        Error::WaitingRoomDisabled => {
            with_info(FailedPrecondition, message, reason, &[])
        }
        Error::TicketNotFound => with_info(NotFound, message, reason, &[]),
        Error::WaitlistEntryNotFound => {
            with_info(NotFound, message, reason, &[])
        }
        Error::EntrySecretInvalid => {
            with_info(Unauthenticated, message, reason, &[])
        }
        Error::AlreadyWaiting { passport_number } => with_info(
            AlreadyExists,
            message,
            reason,
            &[("passport_number", passport_number)],
        ),
        Error::TicketSecretInvalid => {
            with_info(Unauthenticated, message, reason, &[])
        }
        Error::AdmissionRequired => with_info(Unauthenticated, message, reason, &[]),
        Error::AdmissionInvalid => with_info(Unauthenticated, message, reason, &[]),
        Error::AdmissionExpired { expired_at } => with_info(
            Unauthenticated,
            message,
            reason,
            &[("expired_at", expired_at)],
        ),
        Error::AdmissionRevoked => with_info(PermissionDenied, message, reason, &[]),
        Error::AdmissionInUse => with_info(Aborted, message, reason, &[]),
        Error::AdmissionUsed => with_info(PermissionDenied, message, reason, &[]),
        Error::AdmissionStepsExhausted { limit } => with_info(
            PermissionDenied,
            message,
            reason,
            &[("limit", limit.to_string())],
        ),
        Error::TooManyWatchers { limit } => with_info(
            ResourceExhausted,
            message,
            reason,
            &[("limit", limit.to_string())],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_collision_is_unavailable_with_its_own_reason() {
        let status = Status::from(ApiError::App(AppError::IdCollision { what: "hold id" }));
        assert_eq!(status.code(), Code::Unavailable);
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.reason, ID_COLLISION);
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata.get("id").map(String::as_str), Some("hold id"));
    }

    #[test]
    fn every_domain_refusal_reports_its_reason() {
        for e in crate::domain::error::one_of_each() {
            let expected = match &e {
                // No oracle: a receipt paid for another passport reads as an unknown receipt.
                Error::ReceiptPassportMismatch { .. } => reason::RECEIPT_NOT_REGISTERED,
                other => other.reason(),
            };
            let status = Status::from(ApiError::from(e));
            let info = status.get_details_error_info().expect("error info");
            assert_eq!(info.reason, expected);
        }
    }
}
