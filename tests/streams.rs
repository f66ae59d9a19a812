//! Server streams are bounded (issue #20, item 3; src/streams.rs): one client holds at most
//! `streams.max_per_client` open WatchAvailability and WatchOffers streams together, and every
//! stream ends cleanly (status OK) after `streams.max_lifetime_secs`, after which the client
//! opens it again and starts from a full snapshot. The config keys reach the real binary.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Streaming};

use slotd::api::pb;
use slotd::api::pb::calendar_service_client::CalendarServiceClient;
use slotd::server::ServeOptions;
use slotd::store::memory::MemoryStore;
use slotd::streams::StreamOptions;
use support::redis::RedisServer;
use support::*;

fn watch_request(date: &str) -> pb::WatchAvailabilityRequest {
    pb::WatchAvailabilityRequest {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        from_date: date.into(),
        to_date: date.into(),
    }
}

async fn watch(
    client: &mut CalendarServiceClient<Channel>,
    date: &str,
) -> Result<Streaming<pb::AvailabilityUpdate>, tonic::Status> {
    client
        .watch_availability(watch_request(date))
        .await
        .map(|r| r.into_inner())
}

async fn first(stream: &mut Streaming<pb::AvailabilityUpdate>) -> pb::AvailabilityUpdate {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message in time")
        .expect("stream ok")
        .expect("stream open")
}

fn bounded(max_per_client: u32, lifetime: Duration) -> ServeOptions {
    ServeOptions {
        streams: StreamOptions {
            max_per_client,
            max_lifetime: lifetime,
        },
        ..ServeOptions::default()
    }
}

#[tokio::test]
async fn a_client_holds_at_most_max_per_client_streams_of_both_kinds() {
    let server = TestServer::start_with(
        Arc::new(MemoryStore::new()),
        bounded(3, Duration::from_secs(3600)),
    )
    .await;
    let date = day(2);
    open_times(&server, &date, "08:00", "08:00", 1).await;
    register_receipts(&server, 1..=2).await;
    let mut booking = server.booking().await;
    booking
        .book_appointment(book_request("a", slot(&date, "08:00"), vec![applicant(1)]))
        .await
        .expect("book");
    let joined = booking
        .join_waitlist(pb::JoinWaitlistRequest {
            request_id: "w".into(),
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: day(1),
            to_date: day(3),
            times: Vec::new(),
            applicants: vec![applicant(2)],
            confirmation_number: String::new(),
            passport_number: String::new(),
        })
        .await
        .expect("join")
        .into_inner();
    let offers = pb::WatchOffersRequest {
        entry_id: joined.entry.expect("entry").entry_id,
        entry_secret: joined.entry_secret,
    };

    let mut calendar = server.calendar().await;
    let mut a = watch(&mut calendar, &date).await.expect("first stream");
    first(&mut a).await;
    let mut b = watch(&mut calendar, &date).await.expect("second stream");
    first(&mut b).await;
    let mut c = booking
        .watch_offers(offers.clone())
        .await
        .expect("third stream: an offer watch")
        .into_inner();
    c.message().await.expect("entry").expect("entry");

    // The fourth of either kind is refused, naming the rule.
    let refused = watch(&mut calendar, &date).await.expect_err("over the cap");
    assert_refused(&refused, Code::ResourceExhausted, "TOO_MANY_STREAMS");
    let refused = booking
        .watch_offers(offers.clone())
        .await
        .expect_err("over the cap");
    assert_refused(&refused, Code::ResourceExhausted, "TOO_MANY_STREAMS");

    // Closing one frees its place (the server sees the reset shortly after).
    drop(a);
    let mut reopened = None;
    for _ in 0..250 {
        if let Ok(stream) = watch(&mut calendar, &date).await {
            reopened = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut reopened = reopened.expect("a closed stream frees its place");
    assert!(first(&mut reopened).await.snapshot);
    drop((b, c, reopened));
    server.stop().await;
}

/// A stream past its lifetime ends with OK; watching again starts from a snapshot that shows
/// what changed in between, and the ended stream no longer counts against the cap.
async fn a_stream_ends_cleanly_at_its_lifetime_and_the_client_resumes_from_a_snapshot(
    server: TestServer,
) {
    let date = day(2);
    open_times(&server, &date, "08:00", "08:00", 3).await;
    register_receipts(&server, 1..=1).await;
    let mut calendar = server.calendar().await;
    let mut stream = watch(&mut calendar, &date).await.expect("watch");
    assert!(first(&mut stream).await.snapshot);
    // Ends by itself: no error, no reset, just the end of the stream.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends within its lifetime");
    assert!(
        matches!(ended, Ok(None)),
        "ended with OK, not an error: {ended:?}"
    );
    // Changed while no stream was open.
    server
        .booking()
        .await
        .book_appointment(book_request("a", slot(&date, "08:00"), vec![applicant(1)]))
        .await
        .expect("book");
    // The ended stream's place is free again (cap 1), and the resumed stream starts with the
    // full current state.
    let mut resumed = None;
    for _ in 0..250 {
        if let Ok(stream) = watch(&mut calendar, &date).await {
            resumed = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut resumed = resumed.expect("the ended stream freed its place");
    let snapshot = first(&mut resumed).await;
    assert!(snapshot.snapshot);
    assert_eq!(snapshot.slots.len(), 1);
    assert_eq!(snapshot.slots[0].seats_available, 2);
    drop(resumed);
    server.stop().await;
}

#[tokio::test]
async fn memory_a_stream_ends_cleanly_at_its_lifetime_and_the_client_resumes_from_a_snapshot() {
    let server = TestServer::start_with(
        Arc::new(MemoryStore::new()),
        bounded(1, Duration::from_secs(1)),
    )
    .await;
    a_stream_ends_cleanly_at_its_lifetime_and_the_client_resumes_from_a_snapshot(server).await;
}

#[tokio::test]
async fn redis_a_stream_ends_cleanly_at_its_lifetime_and_the_client_resumes_from_a_snapshot() {
    let redis = RedisServer::start();
    let server = TestServer::start_with(redis.store(), bounded(1, Duration::from_secs(1))).await;
    a_stream_ends_cleanly_at_its_lifetime_and_the_client_resumes_from_a_snapshot(server).await;
}

/// `streams.max_per_client` set through the environment reaches the real binary.
#[tokio::test]
async fn the_binary_caps_streams_per_client_from_its_config() {
    let redis = RedisServer::start();
    let slotd = support::process::Slotd::start_env(
        0,
        &redis.url(),
        &[],
        &[("SLOTD__STREAMS__MAX_PER_CLIENT", "1")],
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", slotd.addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut calendar = CalendarServiceClient::new(channel);
    // The binary runs on the system clock and opens no slots: tomorrow's (empty) calendar.
    let date = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let mut kept = watch(&mut calendar, &date).await.expect("the first stream");
    first(&mut kept).await;
    let refused = watch(&mut calendar, &date).await.expect_err("over the cap");
    assert_refused(&refused, Code::ResourceExhausted, "TOO_MANY_STREAMS");
    drop(kept);
}
