//! BookingService: applicants book, read and cancel appointments.

use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::confirmation;
use super::convert;
use super::error::status;
use super::pb;
use super::pb::booking_service_server::BookingService;
use super::room::HEARTBEAT;
use crate::app::Slotd;
use crate::domain::waitlist::EntryId;
use crate::room::{Gate, Room};

/// How often a WatchOffers stream re-reads its entry (an offer reaches the watcher within
/// this, plus a heartbeat every `HEARTBEAT` while nothing changes).
const OFFER_POLL: Duration = Duration::from_millis(500);

type OfferStream = Pin<Box<dyn Stream<Item = Result<pb::WaitlistEntry, Status>> + Send>>;

pub struct BookingApi {
    app: Slotd,
    room: Room,
}

impl BookingApi {
    pub fn new(app: Slotd, room: Room) -> Self {
        Self { app, room }
    }
}

#[tonic::async_trait]
impl BookingService for BookingApi {
    async fn book_appointment(
        &self,
        request: Request<pb::BookAppointmentRequest>,
    ) -> Result<Response<pb::BookAppointmentResponse>, Status> {
        let booking = convert::booking(request.get_ref()).map_err(status)?;
        let admitted = self
            .room
            .gate(convert::admission_token(request.metadata()), Gate::Booking)
            .await
            .map_err(status)?;
        let outcome = self.app.book(&booking).await;
        // Booking ends the admitted session; a refusal gives it back for another try.
        self.room.settle(admitted, outcome.is_ok()).await;
        let appointment = outcome.map_err(status)?;
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
        let admitted = self
            .room
            .gate(convert::admission_token(request.metadata()), Gate::Booking)
            .await
            .map_err(status)?;
        let outcome = self.app.cancel(&cancellation).await;
        self.room.settle(admitted, false).await;
        let appointment = outcome.map_err(status)?;
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
        let admitted = self
            .room
            .gate(convert::admission_token(request.metadata()), Gate::Booking)
            .await
            .map_err(status)?;
        let outcome = self.app.hold(&hold).await;
        self.room.settle(admitted, false).await;
        let hold = outcome.map_err(status)?;
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
        let admitted = match self
            .room
            .gate(convert::admission_token(request.metadata()), Gate::Booking)
            .await
        {
            Ok(admitted) => admitted,
            // A waitlist offer was earned in its own line: accepting it needs no second queue
            // (its 128-bit hold id reached only the entry's holder).
            Err(refused) => match self.app.find_hold(&confirmation.hold).await {
                Ok(Some(hold)) if hold.entry.is_some() => None,
                _ => return Err(status(refused)),
            },
        };
        let outcome = self.app.confirm_hold(&confirmation).await;
        self.room.settle(admitted, outcome.is_ok()).await;
        let appointment = outcome.map_err(status)?;
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
        let admitted = self
            .room
            .gate(convert::admission_token(request.metadata()), Gate::Booking)
            .await
            .map_err(status)?;
        let outcome = self.app.reschedule(&reschedule).await;
        self.room.settle(admitted, false).await;
        let appointment = outcome.map_err(status)?;
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
        let admitted = self
            .room
            .gate(convert::admission_token(request.metadata()), Gate::Booking)
            .await
            .map_err(status)?;
        let outcome = self.app.join_waitlist(&join).await;
        self.room.settle(admitted, false).await;
        let entry = outcome.map_err(status)?;
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
        let (tx, rx) = mpsc::channel(4);
        let app = self.app.clone();
        tokio::spawn(async move {
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
