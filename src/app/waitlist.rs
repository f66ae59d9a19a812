//! Waitlist use cases: join (a group, or an appointment waiting to move earlier), read, leave,
//! and the operator's share of released seats.

use chrono::Duration;

use super::{fresh_id, AppError, Slotd};
use crate::domain::room::TicketId;
use crate::domain::types::{format_date, AppointmentStatus, CategoryId, PostId};
use crate::domain::waitlist::{
    moving_range_error, EntryId, JoinGroup, JoinRequest, WaitlistEntry, WaitlistJoin,
    BOOKING_WINDOW_DAYS,
};
use crate::domain::Error;

impl Slotd {
    /// Puts the group in line for released seats in the range (from today at the post up to
    /// the bookable window).
    pub async fn join_waitlist(&self, request: &JoinRequest) -> Result<WaitlistEntry, AppError> {
        self.join_waitlist_under(request, None).await
    }

    /// `join_waitlist` under a waiting-room admission: the join checks and counts its step
    /// itself (`WaitlistJoin::admission`).
    pub async fn join_waitlist_under(
        &self,
        request: &JoinRequest,
        admission: Option<TicketId>,
    ) -> Result<WaitlistEntry, AppError> {
        let post = self
            .catalog
            .post_with_category(&request.post, &request.category)?;
        let (applicants, moving) = match &request.group {
            JoinGroup::Applicants(applicants) => (applicants.clone(), None),
            JoinGroup::Moving {
                appointment,
                passport,
            } => {
                // The appointment's group waits; the store re-checks it atomically.
                let current = self.store.appointment(appointment, passport).await?;
                if current.status == AppointmentStatus::Cancelled {
                    return Err(Error::AppointmentCancelled {
                        confirmation_number: appointment.to_string(),
                    }
                    .into());
                }
                if current.slot.date <= request.range.to {
                    return Err(moving_range_error(current.slot.date).into());
                }
                (current.applicants, Some(appointment.clone()))
            }
        };
        let mut join = WaitlistJoin::new(
            request.request_id.clone(),
            request.post.clone(),
            request.category.clone(),
            request.range,
            request.times.clone(),
            applicants,
        )
        .map_err(|violations| Error::Invalid { violations })?
        .under_admission(admission);
        if let Some(appointment) = moving {
            join = join.moving(appointment);
        }
        let join = &join;
        let now = self.now();
        let today = post.today(now);
        if join.range.from < today {
            return Err(Error::invalid(
                "from_date",
                format!(
                    "{} is in the past at {} (today is {})",
                    format_date(join.range.from),
                    post.id,
                    format_date(today)
                ),
            )
            .into());
        }
        let last = today + Duration::days(BOOKING_WINDOW_DAYS);
        if join.range.to > last {
            return Err(Error::invalid(
                "to_date",
                format!(
                    "must be within the bookable window of {BOOKING_WINDOW_DAYS} days: {} at the latest",
                    format_date(last)
                ),
            )
            .into());
        }
        let limit = self.lifecycle.reschedule_limit;
        let outcome = fresh_id(EntryId::generate, |id| async move {
            self.store.join_waitlist(join, &id, limit, now).await
        })
        .await?;
        Ok(outcome?)
    }

    pub async fn waitlist_entry(&self, id: &EntryId) -> Result<WaitlistEntry, AppError> {
        Ok(self.store.waitlist_entry(id).await?)
    }

    pub async fn leave_waitlist(&self, id: &EntryId) -> Result<WaitlistEntry, AppError> {
        let outcome = self.store.leave_waitlist(id, self.now()).await;
        // A declined offer's seats came back (or went on to the next entry).
        if let Ok(WaitlistEntry {
            offer: Some(offer), ..
        }) = &outcome
        {
            self.availability.mark_dirty(offer.slot.day());
        }
        Ok(outcome?)
    }

    pub async fn set_waitlist_share(
        &self,
        post: &PostId,
        category: &CategoryId,
        percent: u32,
    ) -> Result<u32, AppError> {
        self.catalog.post_with_category(post, category)?;
        Ok(self
            .store
            .set_waitlist_share(post, category, percent)
            .await?)
    }
}
