//! BookingService: applicants book, read and cancel appointments.

use tonic::{Request, Response, Status};

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
            appointment: Some(convert::appointment_pb(&appointment)),
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
            appointment: Some(convert::appointment_pb(&appointment)),
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
            appointment: Some(convert::appointment_pb(&appointment)),
        }))
    }
}
