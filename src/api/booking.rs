//! BookingService: applicants book, read and cancel appointments.

use tonic::{Request, Response, Status};

use super::confirmation;
use super::convert;
use super::error::status;
use super::pb;
use super::pb::booking_service_server::BookingService;
use crate::app::Slotd;
use crate::room::{Gate, Room};

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
        let appointment = self.app.book(&booking).await.map_err(status)?;
        if let Some(ticket) = admitted {
            self.room.complete(&ticket).await;
        }
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
        self.room
            .gate(convert::admission_token(request.metadata()), Gate::Booking)
            .await
            .map_err(status)?;
        let appointment = self.app.cancel(&cancellation).await.map_err(status)?;
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
        self.room
            .gate(convert::admission_token(request.metadata()), Gate::Booking)
            .await
            .map_err(status)?;
        let hold = self.app.hold(&hold).await.map_err(status)?;
        tracing::info!(hold = %hold.id, slot = %hold.slot, seats = hold.seats(), "seats held");
        Ok(Response::new(pb::HoldSlotResponse {
            hold: Some(convert::hold_pb(&hold, self.app.now())),
        }))
    }

    async fn confirm_hold(
        &self,
        request: Request<pb::ConfirmHoldRequest>,
    ) -> Result<Response<pb::ConfirmHoldResponse>, Status> {
        let confirmation = convert::hold_confirmation(request.get_ref()).map_err(status)?;
        let admitted = self
            .room
            .gate(convert::admission_token(request.metadata()), Gate::Booking)
            .await
            .map_err(status)?;
        let appointment = self.app.confirm_hold(&confirmation).await.map_err(status)?;
        if let Some(ticket) = admitted {
            self.room.complete(&ticket).await;
        }
        tracing::info!(
            hold = %confirmation.hold,
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
        tracing::info!(hold = %hold.id, slot = %hold.slot, "hold released");
        Ok(Response::new(pb::ReleaseHoldResponse {
            hold: Some(convert::hold_pb(&hold, self.app.now())),
        }))
    }

    async fn reschedule_appointment(
        &self,
        request: Request<pb::RescheduleAppointmentRequest>,
    ) -> Result<Response<pb::RescheduleAppointmentResponse>, Status> {
        let reschedule = convert::reschedule(request.get_ref()).map_err(status)?;
        self.room
            .gate(convert::admission_token(request.metadata()), Gate::Booking)
            .await
            .map_err(status)?;
        let appointment = self.app.reschedule(&reschedule).await.map_err(status)?;
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
}
