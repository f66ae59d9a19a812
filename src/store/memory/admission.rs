//! What each waiting-room admission did (`admission_step.lua`; `redis/admission.rs`): its one
//! booking, and how many other steps it made.

use chrono::{DateTime, Duration, Utc};

use super::{AdmissionRec, State};
use crate::domain::room::TicketId;
use crate::domain::types::ConfirmationNumber;
use crate::domain::Error;
use crate::store::{StoreError, IDEMPOTENCY_TTL_SECS};

impl State {
    pub(super) fn admission_step(
        &mut self,
        ticket: &TicketId,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let rec = self.admission_rec(ticket, now);
        if rec.booked.is_some() {
            return Err(Error::AdmissionUsed.into());
        }
        if rec.steps >= limit {
            return Err(Error::AdmissionStepsExhausted { limit }.into());
        }
        rec.steps += 1;
        Ok(rec.steps)
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
