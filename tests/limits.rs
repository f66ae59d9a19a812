//! Per-client rate limits through the real server: the waiting room is limited like every other
//! public service, so a crowd (or a flood pretending to be one) cannot join, poll or watch
//! without bound.

mod support;

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;

use slotd::api::pb;
use slotd::config::LimitSettings;
use slotd::server::ServeOptions;
use slotd::store::memory::MemoryStore;
use support::*;

fn assert_rate_limited(refused: &tonic::Status, limit: &str) {
    assert_refused(refused, Code::ResourceExhausted, "RATE_LIMITED");
    let retry = refused
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(60),
        "{retry:?}"
    );
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.metadata.get("limit").map(String::as_str), Some(limit));
}

#[tokio::test]
async fn join_get_status_and_watch_are_rate_limited_per_client_with_retry_info() {
    let server = TestServer::start_with(
        Arc::new(MemoryStore::new()),
        ServeOptions {
            limits: LimitSettings {
                room_per_minute: 1,
                room_burst: 4,
                ..LimitSettings::default()
            },
            ..ServeOptions::default()
        },
    )
    .await;
    server
        .admin()
        .await
        .configure_waiting_room(admin(pb::ConfigureWaitingRoomRequest {
            config: Some(pb::WaitingRoomConfig {
                enabled: true,
                admissions_per_minute: 60,
                max_active_sessions: 10,
                session_duration_seconds: 600,
                waiter_timeout_seconds: 600,
                paused: true,
                gate_calendar: false,
            }),
        }))
        .await
        .expect("operators are not limited");
    let mut room = server.waiting_room().await;
    // The burst: one join, a poll, a watch and a second join (a refresh) pass.
    let joined = room
        .join(pb::JoinRequest {
            client_key: "crowd-1".into(),
        })
        .await
        .expect("within the burst")
        .into_inner();
    let ticket_id = joined.status.expect("status").ticket_id;
    let secret = joined.ticket_secret;
    room.get_status(pb::GetStatusRequest {
        ticket_id: ticket_id.clone(),
        ticket_secret: secret.clone(),
    })
    .await
    .expect("within the burst");
    let stream = room
        .watch(pb::WatchRequest {
            ticket_id: ticket_id.clone(),
            ticket_secret: secret.clone(),
        })
        .await
        .expect("within the burst");
    drop(stream);
    room.join(pb::JoinRequest {
        client_key: "crowd-1".into(),
    })
    .await
    .expect("within the burst");

    // Then every waiting-room call of this client is refused, the stream before it opens.
    let join = room
        .join(pb::JoinRequest {
            client_key: "crowd-2".into(),
        })
        .await
        .expect_err("join over the limit");
    assert_rate_limited(&join, "room");
    let poll = room
        .get_status(pb::GetStatusRequest {
            ticket_id: ticket_id.clone(),
            ticket_secret: secret.clone(),
        })
        .await
        .expect_err("poll over the limit");
    assert_rate_limited(&poll, "room");
    let watch = room
        .watch(pb::WatchRequest {
            ticket_id,
            ticket_secret: secret,
        })
        .await
        .expect_err("watch over the limit");
    assert_rate_limited(&watch, "room");

    // The room's limit is its own: calendar reads of the same client still pass.
    server
        .calendar()
        .await
        .list_posts(pb::ListPostsRequest {})
        .await
        .expect("calendar has its own bucket");
    server.stop().await;
}
