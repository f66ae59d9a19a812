//! CalendarService: the public calendar.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert;
use super::error::status;
use super::pb;
use super::pb::calendar_service_server::CalendarService;
use crate::app::availability::{DayChange, WatchEvent};
use crate::app::room::{Gate, Room};
use crate::app::Slotd;
use crate::domain::rules::DateRange;
use crate::domain::types::{format_date, CategoryId, PostId};
use crate::streams::Streams;

pub struct CalendarApi {
    app: Slotd,
    room: Room,
    streams: Arc<Streams>,
}

impl CalendarApi {
    pub fn new(app: Slotd, room: Room, streams: Arc<Streams>) -> Self {
        Self { app, room, streams }
    }

    async fn gate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.room
            .gate(convert::admission_token(request.metadata()), Gate::Calendar)
            .await
            .map(|_| ())
            .map_err(status)
    }
}

/// Updates buffered per watcher; the feed sends at most one per tick, so this is seconds.
const WATCH_BUFFER: usize = 8;

type AvailabilityStream =
    Pin<Box<dyn Stream<Item = Result<pb::AvailabilityUpdate, Status>> + Send>>;

/// The snapshot message of a watcher's range.
async fn snapshot(
    app: &Slotd,
    post: &PostId,
    category: &CategoryId,
    range: DateRange,
) -> Result<pb::AvailabilityUpdate, Status> {
    let seats = app
        .range_seats(post, category, range)
        .await
        .map_err(status)?;
    Ok(pb::AvailabilityUpdate {
        snapshot: true,
        slots: seats
            .into_iter()
            .map(|(date, s)| pb::SlotSeats {
                date: format_date(date),
                time: s.time.to_string(),
                seats_available: s.seats,
            })
            .collect(),
    })
}

/// The part of one feed message that falls in the watcher's range.
fn changes_in(
    changes: &[DayChange],
    post: &PostId,
    category: &CategoryId,
    range: DateRange,
) -> Vec<pb::SlotSeats> {
    changes
        .iter()
        .filter(|c| {
            c.day.post == *post
                && c.day.category == *category
                && range.from <= c.day.date
                && c.day.date <= range.to
        })
        .flat_map(|c| {
            let date = format_date(c.day.date);
            c.slots.iter().map(move |s| pb::SlotSeats {
                date: date.clone(),
                time: s.time.to_string(),
                seats_available: s.seats,
            })
        })
        .collect()
}

#[tonic::async_trait]
impl CalendarService for CalendarApi {
    type WatchAvailabilityStream = AvailabilityStream;

    async fn watch_availability(
        &self,
        request: Request<pb::WatchAvailabilityRequest>,
    ) -> Result<Response<Self::WatchAvailabilityStream>, Status> {
        let r = request.get_ref();
        let (post, category, range) = convert::dates_query(&pb::ListAvailableDatesRequest {
            post_id: r.post_id.clone(),
            category: r.category.clone(),
            from_date: r.from_date.clone(),
            to_date: r.to_date.clone(),
        })
        .map_err(status)?;
        self.gate(&request).await?;
        // Counted per client until the stream ends; refused past the cap.
        let permit = self
            .streams
            .open(self.streams.client(&request))
            .map_err(status)?;
        let deadline = self.streams.deadline();
        // Registered (subscribed) before the snapshot is read: no change falls in between.
        let mut watch = self.app.watch(&post, &category, range).map_err(status)?;
        let first = snapshot(&self.app, &post, &category, range).await?;
        let app = self.app.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            let _permit = permit;
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                let message = tokio::select! {
                    received = watch.next() => received,
                    () = tx.closed() => return,
                    // The lifetime is over: end with OK; the client watches again and starts
                    // from a fresh snapshot (crate::streams).
                    () = tokio::time::sleep_until(deadline) => return,
                };
                let update = match message {
                    WatchEvent::Changes(changes) => {
                        let slots = changes_in(&changes, &post, &category, range);
                        if slots.is_empty() {
                            continue;
                        }
                        Ok(pb::AvailabilityUpdate {
                            snapshot: false,
                            slots,
                        })
                    }
                    // Fell behind the feed: start over from a fresh snapshot.
                    WatchEvent::Lagged => snapshot(&app, &post, &category, range).await,
                    WatchEvent::Closed => return,
                };
                let failed = update.is_err();
                if tx.send(update).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

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
