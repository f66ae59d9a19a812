//! What each waiting-room admission did (`holds_lib.lua`; `redis/admission.rs`): its one
//! booking, and how many other steps it made.

use chrono::{DateTime, Duration, Utc};

use super::{AdmissionRec, State};
use crate::domain::room::TicketId;
use crate::domain::types::ConfirmationNumber;
use crate::domain::Error;
use crate::store::IDEMPOTENCY_TTL_SECS;

impl State {
    /// A counted step's check (holds_lib.lua `admission_step_refusal`): `AdmissionUsed` once
    /// the admission booked, `AdmissionStepsExhausted` after `limit` steps. Read only: the
    /// step's own operation calls it with its other checks, in the same critical section.
    pub(super) fn check_admission_step(
        &self,
        admission: Option<&TicketId>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        match admission.and_then(|t| self.admissions.get(t)) {
            Some(rec) if rec.expires_at > now && rec.booked.is_some() => Err(Error::AdmissionUsed),
            Some(rec) if rec.expires_at > now && rec.steps >= limit => {
                Err(Error::AdmissionStepsExhausted { limit })
            }
            _ => Ok(()),
        }
    }

    /// Counts a step that happened (a write: after every check).
    pub(super) fn count_admission_step(
        &mut self,
        admission: Option<&TicketId>,
        now: DateTime<Utc>,
    ) {
        if let Some(ticket) = admission {
            self.admission_rec(ticket, now).steps += 1;
        }
    }

    /// Refuses a second booking under one admission (checked with the other rules).
    pub(super) fn check_admission(
        &self,
        admission: Option<&TicketId>,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        match admission.and_then(|t| self.admissions.get(t)) {
            Some(rec) if rec.expires_at > now && rec.booked.is_some() => Err(Error::AdmissionUsed),
            _ => Ok(()),
        }
    }

    /// Records the booking an admission made (a write: after every check).
    pub(super) fn record_admission(
        &mut self,
        admission: Option<&TicketId>,
        confirmation: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) {
        if let Some(ticket) = admission {
            let rec = self.admission_rec(ticket, now);
            rec.booked = Some(confirmation.clone());
        }
    }

    pub(super) fn admission_rec(
        &mut self,
        ticket: &TicketId,
        now: DateTime<Utc>,
    ) -> &mut AdmissionRec {
        let fresh = AdmissionRec {
            booked: None,
            steps: 0,
            expires_at: now + Duration::seconds(IDEMPOTENCY_TTL_SECS),
        };
        let rec = self
            .admissions
            .entry(ticket.clone())
            .or_insert(fresh.clone());
        if rec.expires_at <= now {
            *rec = fresh;
        }
        rec
    }
}
