//! WaitingRoomService: join, watch (server stream), poll, leave.

use std::pin::Pin;
use std::time::Duration;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::error::status;
use super::pb;
use super::pb::waiting_room_service_server::WaitingRoomService;
use crate::app::room::{Room, Seen};
use crate::domain::room::{ClientKey, TicketId, TicketState};
use crate::domain::types::format_instant;
use crate::domain::{Error, Violations};

/// A slot watcher (`BookingService.WatchAvailability`) hears at least this often; waiting-room
/// watchers follow `room::WatchOptions::heartbeat`.
pub const HEARTBEAT: Duration = Duration::from_secs(3);

pub struct WaitingRoomApi {
    room: Room,
}

impl WaitingRoomApi {
    pub fn new(room: Room) -> Self {
        Self { room }
    }
}

fn credentials(ticket_id: &str, secret: &str) -> Result<(TicketId, String), Error> {
    let mut v = Violations::new();
    let id = v.take("ticket_id", TicketId::parse(ticket_id));
    if secret.is_empty() {
        v.push(
            "ticket_secret",
            "ticket_secret is required (Join returned it)",
        );
    } else if secret.len() > 128 {
        v.push("ticket_secret", "ticket_secret is at most 128 characters");
    }
    v.finish()?;
    id.map(|id| (id, secret.to_owned()))
        .ok_or_else(|| Error::invalid("ticket_id", "missing"))
}

pub fn ticket_pb(seen: &Seen) -> pb::TicketStatus {
    let v = &seen.view;
    let state = match v.state {
        TicketState::Waiting => pb::TicketState::Waiting,
        TicketState::Admitted => pb::TicketState::Admitted,
        TicketState::Expired => pb::TicketState::Expired,
        TicketState::Left => pb::TicketState::Left,
        TicketState::Completed => pb::TicketState::Completed,
        TicketState::Revoked => pb::TicketState::Revoked,
    };
    let waiting = v.state == TicketState::Waiting;
    pb::TicketStatus {
        ticket_id: v.id.to_string(),
        state: state as i32,
        ticket_number: v.number,
        people_ahead: v.ahead,
        position: if waiting { v.ahead + 1 } else { 0 },
        estimated_wait_seconds: if waiting { v.estimated_wait_secs() } else { 0 },
        admission_token: seen.token.clone().unwrap_or_default(),
        session_expires_at: v.session_expires_at.map(format_instant).unwrap_or_default(),
        admission_number: v.admission_number,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::TicketStatus, Status>> + Send>>;

#[tonic::async_trait]
impl WaitingRoomService for WaitingRoomApi {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let key = ClientKey::parse(&request.get_ref().client_key).map_err(|v| {
            status(Error::Invalid {
                violations: vec![v.within("client_key")],
            })
        })?;
        let (seen, secret) = self.room.join(&key).await.map_err(status)?;
        Ok(Response::new(pb::JoinResponse {
            ticket_secret: secret,
            status: Some(ticket_pb(&seen)),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (ticket, secret) = credentials(
            &request.get_ref().ticket_id,
            &request.get_ref().ticket_secret,
        )
        .map_err(status)?;
        // Refuses a wrong secret, an unknown ticket or one watched too often before the stream
        // starts; then the stream lives in the room's registry (no task of its own).
        let feed = self.room.watch(&ticket, &secret).await.map_err(status)?;
        let stream: WatchStream = Box::pin(feed.map(|seen| Ok(ticket_pb(&seen))));
        Ok(Response::new(stream))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let (ticket, secret) = credentials(
            &request.get_ref().ticket_id,
            &request.get_ref().ticket_secret,
        )
        .map_err(status)?;
        let seen = self.room.status(&ticket, &secret).await.map_err(status)?;
        Ok(Response::new(pb::GetStatusResponse {
            status: Some(ticket_pb(&seen)),
        }))
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        let (ticket, secret) = credentials(
            &request.get_ref().ticket_id,
            &request.get_ref().ticket_secret,
        )
        .map_err(status)?;
        let seen = self.room.leave(&ticket, &secret).await.map_err(status)?;
        Ok(Response::new(pb::LeaveResponse {
            status: Some(ticket_pb(&seen)),
        }))
    }
}
