//! CalendarService: the public calendar.

use tonic::{Request, Response, Status};

use super::convert;
use super::error::status;
use super::pb;
use super::pb::calendar_service_server::CalendarService;
use crate::app::Slotd;

pub struct CalendarApi {
    app: Slotd,
}

impl CalendarApi {
    pub fn new(app: Slotd) -> Self {
        Self { app }
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
