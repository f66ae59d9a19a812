//! Booking use cases: book, read, cancel and reschedule an appointment (the store's `book.lua`,
//! `cancel.lua`, `reschedule.lua`; `store::memory::inventory`).

use super::{fresh_id, written_at, AppError, Slotd};
use crate::domain::lifecycle::Reschedule;
use crate::domain::rules::{ensure_not_started, Booking, Cancellation};
use crate::domain::types::{Appointment, ConfirmationNumber, PassportNumber};

impl Slotd {
    pub async fn book(&self, booking: &Booking) -> Result<Appointment, AppError> {
        let post = self
            .catalog
            .post_with_category(&booking.slot.post, &booking.slot.category)?;
        let now = self.now();
        ensure_not_started(post, &booking.slot, now)?;
        let outcome = fresh_id(ConfirmationNumber::generate, |number| async move {
            self.store.book(booking, &number, now).await
        })
        .await?;
        self.touched(outcome, |a| {
            written_at(a.created_at, now).then(|| a.slot.day())
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
}
