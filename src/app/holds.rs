//! Hold use cases: take seats for a while, confirm them into an appointment, release them, and
//! the sweeper's reclaim of expired holds.

use super::{fresh_id, written_at, AppError, Slotd};
use crate::domain::lifecycle::{Hold, HoldConfirmation, HoldId, HoldRelease, HoldRequest};
use crate::domain::rules::ensure_not_started;
use crate::domain::types::{Appointment, ConfirmationNumber};

impl Slotd {
    /// Takes the seats for the group for the configured hold time.
    pub async fn hold(&self, request: &HoldRequest) -> Result<Hold, AppError> {
        let post = self
            .catalog
            .post_with_category(&request.slot.post, &request.slot.category)?;
        let now = self.now();
        ensure_not_started(post, &request.slot, now)?;
        let expires_at = now + self.lifecycle.hold_ttl;
        let outcome = fresh_id(HoldId::generate, |id| async move {
            self.store.hold(request, &id, expires_at, now).await
        })
        .await?;
        self.touched(outcome, |h| {
            written_at(h.created_at, now).then(|| h.slot.day())
        })
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
        let outcome = fresh_id(ConfirmationNumber::generate, |number| async move {
            self.store.confirm_hold(confirmation, &number, now).await
        })
        .await?;
        // An accepted waitlist move also frees seats on the day it left.
        if let Ok(moved) = &outcome {
            if let Some(m) = moved.history.last().filter(|m| written_at(m.at, now)) {
                self.availability.mark_dirty(m.from.day());
            }
        }
        // A replayed confirmation (created earlier) wrote nothing now.
        self.touched(outcome, |a| {
            (written_at(a.created_at, now)
                || a.history.last().is_some_and(|m| written_at(m.at, now)))
            .then(|| a.slot.day())
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
}
