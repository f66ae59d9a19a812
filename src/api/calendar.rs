//! CalendarService: the public calendar.

use tonic::{Request, Response, Status};

use super::convert;
use super::error::status;
use super::pb;
use super::pb::calendar_service_server::CalendarService;
use crate::app::Slotd;
use crate::room::{Gate, Room};

pub struct CalendarApi {
    app: Slotd,
    room: Room,
}

impl CalendarApi {
    pub fn new(app: Slotd, room: Room) -> Self {
        Self { app, room }
    }

    async fn gate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.room
            .gate(convert::admission_token(request.metadata()), Gate::Calendar)
            .await
            .map(|_| ())
            .map_err(status)
    }
}

#[tonic::async_trait]
impl CalendarService for CalendarApi {
    async fn list_posts(
        &self,
        _request: Request<pb::ListPostsRequest>,
    ) -> Result<Response<pb::ListPostsResponse>, Status> {
        let posts = self
            .app
            .catalog()
            .posts()
            .iter()
            .map(convert::post_pb)
            .collect();
        Ok(Response::new(pb::ListPostsResponse { posts }))
    }

    async fn list_available_dates(
        &self,
        request: Request<pb::ListAvailableDatesRequest>,
    ) -> Result<Response<pb::ListAvailableDatesResponse>, Status> {
        let (post, category, range) = convert::dates_query(request.get_ref()).map_err(status)?;
        self.gate(&request).await?;
        let dates = self
            .app
            .available_dates(&post, &category, range)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListAvailableDatesResponse {
            dates: dates.iter().map(convert::date_seats_pb).collect(),
        }))
    }

    async fn list_slots(
        &self,
        request: Request<pb::ListSlotsRequest>,
    ) -> Result<Response<pb::ListSlotsResponse>, Status> {
        let day = convert::slots_query(request.get_ref()).map_err(status)?;
        self.gate(&request).await?;
        let slots = self.app.day_slots(&day).await.map_err(status)?;
        Ok(Response::new(pb::ListSlotsResponse {
            slots: slots
                .into_iter()
                .map(|(time, seats)| pb::SlotAvailability {
                    time: time.to_string(),
                    seats_available: seats,
                })
                .collect(),
        }))
    }
}
