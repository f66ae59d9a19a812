//! AdminService: operators open, resize and close slots, read manifests, register receipts and
//! audit. Authentication happens in an interceptor (see `server`), before any handler runs.

use tonic::{Request, Response, Status};

use super::convert;
use super::error::status;
use super::pb;
use super::pb::admin_service_server::AdminService;
use crate::app::room::Room;
use crate::app::Slotd;
use crate::domain::lifecycle::EventStart;
use crate::domain::room::TicketId;
use crate::domain::Error;

/// WatchEvents polls the event log this often while it has nothing new (plain reads: a blocking
/// XREAD would tie up the shared multiplexed Redis connection).
const WATCH_POLL: std::time::Duration = std::time::Duration::from_millis(200);
const WATCH_PAGE: u32 = 500;
const WATCH_BUFFER: usize = 256;

type EventStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::BookingEvent, Status>> + Send + 'static>,
>;

pub struct AdminApi {
    app: Slotd,
    room: Room,
}

impl AdminApi {
    pub fn new(app: Slotd, room: Room) -> Self {
        Self { app, room }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn open_slots(
        &self,
        request: Request<pb::OpenSlotsRequest>,
    ) -> Result<Response<pb::OpenSlotsResponse>, Status> {
        let plan = convert::open_plan(request.get_ref()).map_err(status)?;
        let report = self.app.open_slots(&plan).await.map_err(status)?;
        tracing::info!(
            post = %plan.post,
            category = %plan.category,
            opened = report.opened,
            updated = report.updated,
            kept_at_booked = report.kept_at_booked.len(),
            "slots opened"
        );
        Ok(Response::new(pb::OpenSlotsResponse {
            slots_opened: report.opened,
            slots_updated: report.updated,
            kept_at_booked: report
                .kept_at_booked
                .iter()
                .map(convert::slot_state_pb)
                .collect(),
        }))
    }

    async fn set_slot_capacity(
        &self,
        request: Request<pb::SetSlotCapacityRequest>,
    ) -> Result<Response<pb::SetSlotCapacityResponse>, Status> {
        let (slot, capacity) = convert::capacity_change(request.get_ref()).map_err(status)?;
        let state = self
            .app
            .set_capacity(&slot, capacity)
            .await
            .map_err(status)?;
        tracing::info!(slot = %slot, capacity, "slot capacity set");
        Ok(Response::new(pb::SetSlotCapacityResponse {
            slot: Some(convert::slot_state_pb(&state)),
        }))
    }

    async fn close_slots(
        &self,
        request: Request<pb::CloseSlotsRequest>,
    ) -> Result<Response<pb::CloseSlotsResponse>, Status> {
        let (day, time) = convert::closing(request.get_ref()).map_err(status)?;
        let closing = self
            .app
            .close_slots_listing(&day, time, request.get_ref().list_affected)
            .await
            .map_err(status)?;
        tracing::info!(day = %day, closed = closing.closed, "slots closed");
        Ok(Response::new(pb::CloseSlotsResponse {
            slots_closed: closing.closed,
            affected: closing
                .affected
                .iter()
                .map(|a| convert::appointment_view_pb(a, self.app.catalog()))
                .collect(),
        }))
    }

    async fn list_appointments(
        &self,
        request: Request<pb::ListAppointmentsRequest>,
    ) -> Result<Response<pb::ListAppointmentsResponse>, Status> {
        let query = convert::manifest_query(request.get_ref()).map_err(status)?;
        let page = self.app.manifest(&query).await.map_err(status)?;
        Ok(Response::new(pb::ListAppointmentsResponse {
            appointments: page
                .appointments
                .iter()
                .map(|a| convert::appointment_view_pb(a, self.app.catalog()))
                .collect(),
            next_page_token: page.next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn register_receipt(
        &self,
        request: Request<pb::RegisterReceiptRequest>,
    ) -> Result<Response<pb::RegisterReceiptResponse>, Status> {
        let receipt = convert::receipt(request.get_ref()).map_err(status)?;
        let (receipt, created) = self.app.register_receipt(&receipt).await.map_err(status)?;
        Ok(Response::new(pb::RegisterReceiptResponse {
            receipt: Some(convert::receipt_pb(&receipt)),
            created,
        }))
    }

    async fn audit_inventory(
        &self,
        request: Request<pb::AuditInventoryRequest>,
    ) -> Result<Response<pb::AuditInventoryResponse>, Status> {
        let (post, category, range) = convert::audit_query(request.get_ref()).map_err(status)?;
        let report = self
            .app
            .audit(&post, &category, range)
            .await
            .map_err(status)?;
        if !report.violations.is_empty() {
            tracing::error!(
                violations = report.violations.len(),
                "inventory audit found violations"
            );
        }
        Ok(Response::new(convert::audit_pb(&report)))
    }

    async fn get_slot(
        &self,
        request: Request<pb::GetSlotRequest>,
    ) -> Result<Response<pb::GetSlotResponse>, Status> {
        let slot = convert::slot_query(request.get_ref()).map_err(status)?;
        let state = self.app.slot(&slot).await.map_err(status)?;
        Ok(Response::new(pb::GetSlotResponse {
            slot: Some(convert::slot_state_pb(&state)),
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let start = convert::event_start(request.get_ref()).map_err(status)?;
        // Resolve "$" now, so events appended after this call are never missed.
        let first = self.app.events(start, 0).await.map_err(status)?;
        let mut after = match start {
            EventStart::Latest => first.next,
            EventStart::After(id) => id,
        };
        let app = self.app.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            loop {
                let page = match app.events(EventStart::After(after), WATCH_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                };
                let full = page.events.len() >= WATCH_PAGE as usize;
                for e in &page.events {
                    if tx.send(Ok(convert::event_pb(e))).await.is_err() {
                        return; // the client went away
                    }
                }
                after = page.next;
                if !full {
                    tokio::select! {
                        () = tokio::time::sleep(WATCH_POLL) => {}
                        () = tx.closed() => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn configure_waiting_room(
        &self,
        request: Request<pb::ConfigureWaitingRoomRequest>,
    ) -> Result<Response<pb::ConfigureWaitingRoomResponse>, Status> {
        let config = convert::room_config(request.get_ref().config.as_ref()).map_err(status)?;
        let stored = self.room.configure(&config).await.map_err(status)?;
        tracing::info!(
            enabled = stored.enabled,
            paused = stored.paused,
            per_minute = stored.admissions_per_minute,
            max_active = stored.max_active_sessions,
            "waiting room configured"
        );
        Ok(Response::new(pb::ConfigureWaitingRoomResponse {
            config: Some(convert::room_config_pb(&stored)),
        }))
    }

    async fn get_waiting_room_stats(
        &self,
        _request: Request<pb::GetWaitingRoomStatsRequest>,
    ) -> Result<Response<pb::GetWaitingRoomStatsResponse>, Status> {
        let stats = self.room.stats().await.map_err(status)?;
        Ok(Response::new(convert::room_stats_pb(&stats)))
    }

    async fn revoke_admission(
        &self,
        request: Request<pb::RevokeAdmissionRequest>,
    ) -> Result<Response<pb::RevokeAdmissionResponse>, Status> {
        let ticket = TicketId::parse(&request.get_ref().ticket_id).map_err(|v| {
            status(Error::Invalid {
                violations: vec![v.within("ticket_id")],
            })
        })?;
        self.room.revoke(&ticket).await.map_err(status)?;
        tracing::info!(ticket = %ticket, "admission revoked");
        Ok(Response::new(pb::RevokeAdmissionResponse {}))
    }

    async fn set_waitlist_share(
        &self,
        request: Request<pb::SetWaitlistShareRequest>,
    ) -> Result<Response<pb::SetWaitlistShareResponse>, Status> {
        let (post, category, percent) =
            convert::waitlist_share(request.get_ref()).map_err(status)?;
        let percent = self
            .app
            .set_waitlist_share(&post, &category, percent)
            .await
            .map_err(status)?;
        tracing::info!(post = %post, category = %category, percent, "waitlist share set");
        Ok(Response::new(pb::SetWaitlistShareResponse { percent }))
    }
}
