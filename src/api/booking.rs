//! BookingService: applicants book, read and cancel appointments.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::confirmation;
use super::convert;
use super::error::status;
use super::pb;
use super::pb::booking_service_server::BookingService;
use super::room::HEARTBEAT;
use crate::app::room::{Gate, Room};
use crate::app::AppError;
use crate::app::Slotd;
use crate::domain::lifecycle::{HoldConfirmation, HoldId, HoldRequest};
use crate::domain::room::TicketId;
use crate::domain::waitlist::EntryId;
use crate::streams::Streams;

/// How often a WatchOffers stream re-reads its entry (an offer reaches the watcher within
/// this, plus a heartbeat every `HEARTBEAT` while nothing changes).
const OFFER_POLL: Duration = Duration::from_millis(500);

type OfferStream = Pin<Box<dyn Stream<Item = Result<pb::WaitlistEntry, Status>> + Send>>;

pub struct BookingApi {
    app: Slotd,
    room: Room,
    streams: Arc<Streams>,
}

impl BookingApi {
    pub fn new(app: Slotd, room: Room, streams: Arc<Streams>) -> Self {
        Self { app, room, streams }
    }

    /// Runs a call behind the waiting room from the gate to settling its admission in a task
    /// of its own, so a client whose deadline drops the request cannot cut the call between its
    /// booking's commit and the settle (which would give the admission back for a second
    /// booking). The booking step also records its admission atomically (`Booking::admission`):
    /// even an unsettled admission (slotd killed, room store down) books only once.
    ///
    /// Other steps (`Step::Counted`: holds, reschedules, cancellations, waitlist joins) are checked and counted
    /// against `ADMISSION_STEP_LIMIT` inside their own store call (the operation gets the
    /// admission and refuses `AdmissionUsed` / `AdmissionStepsExhausted` before any write), so
    /// they need no claim of the session: the claim exists so that one admission cannot *book*
    /// twice at the same instant, and a counted step is bounded by the step counter, which the
    /// step's own atomic script checks and increments, however many run at once. Such a step
    /// only checks that the session is live (one read) and has nothing to give back: per hold,
    /// 2 round trips instead of 4 (claim pipeline, `admission_step`, the hold, the claim's
    /// `DEL`).
    ///
    /// A hold (`sold_out`) on a slot the store already knows is full of bookings is refused
    /// right after the token's own checks, before the session is checked or a step counted
    /// (`Inventory::refuse_sold_out_hold`): the answer the hold would give, for no script.
    async fn admitted<T, F, Fut>(
        &self,
        token: Option<&str>,
        step: Step,
        fallback: Option<HoldId>,
        sold_out: Option<HoldRequest>,
        call: F,
    ) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(Slotd, Option<TicketId>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, AppError>> + Send + 'static,
    {
        let app = self.app.clone();
        // With the room off there is no admission to settle, so nothing a dropped call could
        // leave half done: the call runs inline, without a task of its own.
        if !self.room.gates_bookings() {
            return call(app, None).await.map_err(status);
        }
        let room = self.room.clone();
        let token = token.map(str::to_owned);
        // The task carries the RPC's span: its store calls stay children of the call's trace.
        let span = tracing::Span::current();
        let task = tokio::spawn(
            async move {
                // The token is verified once; the memo answers before the store is asked.
                let verified = room.token_ticket(token.as_deref(), Gate::Booking);
                if let (Some(request), Ok(Some(_))) = (&sold_out, &verified) {
                    app.refuse_sold_out_hold(request).await?;
                }
                let gated = match verified {
                    // A counted step checks the session; a booking claims it.
                    Ok(ticket) if step == Step::Counted => room.check(ticket).await,
                    Ok(ticket) => room.enter(ticket, Gate::Booking).await,
                    Err(refused) => Err(refused),
                };
                let admitted = match gated {
                    Ok(admitted) => admitted,
                    // A waitlist offer was earned in its own line: accepting it needs no second
                    // queue (its 128-bit hold id reached only the entry's holder).
                    Err(refused) => match fallback {
                        Some(hold) => match app.find_hold(&hold).await {
                            Ok(Some(hold)) if hold.entry.is_some() => None,
                            _ => return Err(refused.into()),
                        },
                        None => return Err(refused.into()),
                    },
                };
                let outcome = call(app, admitted.clone()).await;
                // Booking ends the admitted session (or gives the claim back when it failed); a
                // counted step claimed nothing.
                if step == Step::Booking {
                    room.settle(admitted, outcome.is_ok()).await;
                }
                outcome
            }
            .instrument(span),
        );
        match task.await {
            Ok(outcome) => outcome.map_err(status),
            Err(e) => {
                tracing::error!(error = %e, "admitted call failed");
                Err(Status::internal("the call failed inside slotd"))
            }
        }
    }
}

/// What a call behind the waiting room does with its admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Books (BookAppointment, ConfirmHold): once per admission, then the session ends.
    Booking,
    /// Holds, reschedules, cancels, joins the waitlist: at most `ADMISSION_STEP_LIMIT` in all,
    /// checked and counted by the operation's own store call (it gets the admission); the
    /// session is checked, not claimed.
    Counted,
}

#[tonic::async_trait]
impl BookingService for BookingApi {
    async fn book_appointment(
        &self,
        request: Request<pb::BookAppointmentRequest>,
    ) -> Result<Response<pb::BookAppointmentResponse>, Status> {
        let booking = convert::booking(request.get_ref()).map_err(status)?;
        let token = convert::admission_token(request.metadata());
        let appointment = self
            .admitted(
                token,
                Step::Booking,
                None,
                None,
                |app, admitted| async move { app.book(&booking.under_admission(admitted)).await },
            )
            .await?;
        tracing::info!(
            confirmation = %appointment.confirmation,
            slot = %appointment.slot,
            seats = appointment.seats(),
            "appointment booked"
        );
        Ok(Response::new(pb::BookAppointmentResponse {
            appointment: Some(convert::appointment_view_pb(
                &appointment,
                self.app.catalog(),
            )),
        }))
    }

    async fn get_appointment(
        &self,
        request: Request<pb::GetAppointmentRequest>,
    ) -> Result<Response<pb::GetAppointmentResponse>, Status> {
        let (confirmation, passport) = convert::lookup(request.get_ref()).map_err(status)?;
        let appointment = self
            .app
            .appointment(&confirmation, &passport)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::GetAppointmentResponse {
            appointment: Some(convert::appointment_view_pb(
                &appointment,
                self.app.catalog(),
            )),
        }))
    }

    async fn cancel_appointment(
        &self,
        request: Request<pb::CancelAppointmentRequest>,
    ) -> Result<Response<pb::CancelAppointmentResponse>, Status> {
        let cancellation = convert::cancellation(request.get_ref()).map_err(status)?;
        let token = convert::admission_token(request.metadata());
        let appointment = self
            .admitted(token, Step::Counted, None, None, |app, admitted| async move {
                app.cancel(&cancellation.under_admission(admitted)).await
            })
            .await?;
        tracing::info!(
            confirmation = %appointment.confirmation,
            slot = %appointment.slot,
            "appointment cancelled"
        );
        Ok(Response::new(pb::CancelAppointmentResponse {
            appointment: Some(convert::appointment_view_pb(
                &appointment,
                self.app.catalog(),
            )),
        }))
    }

    async fn hold_slot(
        &self,
        request: Request<pb::HoldSlotRequest>,
    ) -> Result<Response<pb::HoldSlotResponse>, Status> {
        let hold = convert::hold_request(request.get_ref()).map_err(status)?;
        let token = convert::admission_token(request.metadata());
        let hold = self
            .admitted(
                token,
                Step::Counted,
                None,
                Some(hold.clone()),
                |app, admitted| async move { app.hold(&hold.under_admission(admitted)).await },
            )
            .await?;
        tracing::info!(hold_ref = %hold.id.reference(), slot = %hold.slot, seats = hold.seats(), "seats held");
        Ok(Response::new(pb::HoldSlotResponse {
            hold: Some(convert::hold_pb(&hold, self.app.now())),
        }))
    }

    async fn confirm_hold(
        &self,
        request: Request<pb::ConfirmHoldRequest>,
    ) -> Result<Response<pb::ConfirmHoldResponse>, Status> {
        let confirmation = convert::hold_confirmation(request.get_ref()).map_err(status)?;
        let token = convert::admission_token(request.metadata());
        let hold = Some(confirmation.hold.clone());
        let confirmed = confirmation.clone();
        let appointment = self
            .admitted(
                token,
                Step::Booking,
                hold,
                None,
                |app, admitted| async move {
                    let confirmation = HoldConfirmation {
                        admission: admitted,
                        ..confirmed
                    };
                    app.confirm_hold(&confirmation).await
                },
            )
            .await?;
        tracing::info!(
            hold_ref = %confirmation.hold.reference(),
            confirmation = %appointment.confirmation,
            slot = %appointment.slot,
            "hold confirmed"
        );
        Ok(Response::new(pb::ConfirmHoldResponse {
            appointment: Some(convert::appointment_view_pb(
                &appointment,
                self.app.catalog(),
            )),
        }))
    }

    async fn release_hold(
        &self,
        request: Request<pb::ReleaseHoldRequest>,
    ) -> Result<Response<pb::ReleaseHoldResponse>, Status> {
        let release = convert::hold_release(request.get_ref()).map_err(status)?;
        let hold = self.app.release_hold(&release).await.map_err(status)?;
        tracing::info!(hold_ref = %hold.id.reference(), slot = %hold.slot, "hold released");
        Ok(Response::new(pb::ReleaseHoldResponse {
            hold: Some(convert::hold_pb(&hold, self.app.now())),
        }))
    }

    async fn reschedule_appointment(
        &self,
        request: Request<pb::RescheduleAppointmentRequest>,
    ) -> Result<Response<pb::RescheduleAppointmentResponse>, Status> {
        let reschedule = convert::reschedule(request.get_ref()).map_err(status)?;
        let token = convert::admission_token(request.metadata());
        let appointment = self
            .admitted(
                token,
                Step::Counted,
                None,
                None,
                |app, admitted| async move {
                    app.reschedule(&reschedule.under_admission(admitted)).await
                },
            )
            .await?;
        tracing::info!(
            confirmation = %appointment.confirmation,
            slot = %appointment.slot,
            "appointment rescheduled"
        );
        Ok(Response::new(pb::RescheduleAppointmentResponse {
            appointment: Some(convert::appointment_view_pb(
                &appointment,
                self.app.catalog(),
            )),
        }))
    }

    async fn render_confirmation(
        &self,
        request: Request<pb::RenderConfirmationRequest>,
    ) -> Result<Response<pb::RenderConfirmationResponse>, Status> {
        let (confirmation, passport) = convert::render_lookup(request.get_ref()).map_err(status)?;
        let appointment = self
            .app
            .appointment(&confirmation, &passport)
            .await
            .map_err(status)?;
        let html = confirmation::render(&appointment, self.app.catalog()).map_err(status)?;
        Ok(Response::new(pb::RenderConfirmationResponse {
            content_type: confirmation::CONTENT_TYPE.into(),
            html,
        }))
    }

    async fn join_waitlist(
        &self,
        request: Request<pb::JoinWaitlistRequest>,
    ) -> Result<Response<pb::JoinWaitlistResponse>, Status> {
        let join = convert::waitlist_join(request.get_ref()).map_err(status)?;
        // Joining the line is a booking step: behind the waiting room like BookAppointment
        // (the admitted session stays open: no seat was taken yet).
        let token = convert::admission_token(request.metadata());
        let entry = self
            .admitted(
                token,
                Step::Counted,
                None,
                None,
                |app, admitted| async move { app.join_waitlist_under(&join, admitted).await },
            )
            .await?;
        tracing::info!(entry = %entry.id, post = %entry.post, seats = entry.applicants.len(), "waitlist joined");
        Ok(Response::new(pb::JoinWaitlistResponse {
            entry_secret: self.room.keys().entry_secret(&entry.id),
            entry: Some(convert::entry_pb(&entry, self.app.now())),
        }))
    }

    async fn get_waitlist_entry(
        &self,
        request: Request<pb::GetWaitlistEntryRequest>,
    ) -> Result<Response<pb::GetWaitlistEntryResponse>, Status> {
        let req = request.get_ref();
        let id = self.entry_holder(&req.entry_id, &req.entry_secret)?;
        let entry = self.app.waitlist_entry(&id).await.map_err(status)?;
        Ok(Response::new(pb::GetWaitlistEntryResponse {
            entry: Some(convert::entry_pb(&entry, self.app.now())),
        }))
    }

    async fn leave_waitlist(
        &self,
        request: Request<pb::LeaveWaitlistRequest>,
    ) -> Result<Response<pb::LeaveWaitlistResponse>, Status> {
        let req = request.get_ref();
        let id = self.entry_holder(&req.entry_id, &req.entry_secret)?;
        let entry = self.app.leave_waitlist(&id).await.map_err(status)?;
        Ok(Response::new(pb::LeaveWaitlistResponse {
            entry: Some(convert::entry_pb(&entry, self.app.now())),
        }))
    }

    type WatchOffersStream = OfferStream;

    async fn watch_offers(
        &self,
        request: Request<pb::WatchOffersRequest>,
    ) -> Result<Response<Self::WatchOffersStream>, Status> {
        let req = request.get_ref();
        let id = self.entry_holder(&req.entry_id, &req.entry_secret)?;
        // Refuse an unknown entry before the stream starts.
        let first = self.app.waitlist_entry(&id).await.map_err(status)?;
        // Counted per client until the stream ends; refused past the cap.
        let permit = self
            .streams
            .open(self.streams.client(&request))
            .map_err(status)?;
        let deadline = self.streams.deadline();
        let (tx, rx) = mpsc::channel(4);
        let app = self.app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut seen = Ok(first);
            let mut last: Option<pb::WaitlistEntry> = None;
            let mut sent_at = Instant::now();
            loop {
                match seen {
                    Err(e) => {
                        // Store down: say so and end; the entry keeps its place.
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                    Ok(entry) => {
                        let message = convert::entry_pb(&entry, app.now());
                        if last.as_ref() != Some(&message) || sent_at.elapsed() >= HEARTBEAT {
                            if tx.send(Ok(message.clone())).await.is_err() {
                                return; // the watcher went away
                            }
                            sent_at = Instant::now();
                            last = Some(message);
                        }
                        if !entry.status.in_line() {
                            return;
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(OFFER_POLL) => {}
                    () = tx.closed() => return,
                    // The lifetime is over: end with OK; the client watches again and gets the
                    // entry as it is now first (crate::streams).
                    () = tokio::time::sleep_until(deadline) => return,
                }
                seen = app.waitlist_entry(&id).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl BookingApi {
    /// The entry named by a request, for the holder of its secret only.
    fn entry_holder(&self, entry_id: &str, secret: &str) -> Result<EntryId, Status> {
        let (id, secret) = convert::entry_credentials(entry_id, secret).map_err(status)?;
        self.room
            .keys()
            .check_entry_secret(&id, &secret)
            .map_err(status)?;
        Ok(id)
    }
}
