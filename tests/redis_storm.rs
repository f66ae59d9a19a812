//! The gRPC server on Redis under contention and under failure: thousands of concurrent
//! bookings (one slotd and two slotd instances sharing one Redis) never oversell, and a Redis
//! outage answers UNAVAILABLE fast, flips health to NOT_SERVING, and heals by itself after the
//! restart. Needs `redis-server`.

use crate::support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::Code;

use slotd::api::pb;
use slotd::api::pb::booking_service_client::BookingServiceClient;
use slotd::server::ServeOptions;
use slotd::store::Inventory;
use support::redis::RedisServer;
use support::*;

/// Registers receipts R{i} for P{i} straight through the store (setup only; faster than RPCs).
async fn register_direct(store: &Arc<dyn Inventory>, ids: impl IntoIterator<Item = u32>) {
    let calls = ids.into_iter().map(|i| {
        let store = store.clone();
        async move {
            support::domain::register(store.as_ref(), i).await;
        }
    });
    futures::future::join_all(calls).await;
}

/// Fires one booking per applicant id, spread over `channels` and `times`, all at once.
/// Returns the confirmation numbers acknowledged; every refusal must be SLOT_FULL.
async fn storm(
    channels: &[Channel],
    date: &str,
    times: &[&str],
    ids: std::ops::RangeInclusive<u32>,
) -> Vec<(String, String)> {
    let mut tasks = Vec::new();
    for i in ids {
        let mut client = BookingServiceClient::new(channels[i as usize % channels.len()].clone());
        let time = times[i as usize % times.len()];
        let request = book_request(&format!("storm-{i}"), slot(date, time), vec![applicant(i)]);
        tasks.push(tokio::spawn(async move {
            (i, client.book_appointment(request).await)
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        let (i, outcome) = t.await.unwrap();
        match outcome {
            Ok(r) => acknowledged.push((
                r.into_inner().appointment.unwrap().confirmation_number,
                applicant(i).passport_number,
            )),
            Err(status) => assert_refused(&status, Code::FailedPrecondition, "SLOT_FULL"),
        }
    }
    acknowledged
}

async fn channels(server: &TestServer, n: usize) -> Vec<Channel> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(server.channel().await);
    }
    out
}

async fn assert_every_appointment_readable(server: &TestServer, acknowledged: &[(String, String)]) {
    let unique: HashSet<_> = acknowledged.iter().map(|(c, _)| c).collect();
    assert_eq!(
        unique.len(),
        acknowledged.len(),
        "duplicate confirmation numbers"
    );
    let mut client = server.booking().await;
    for (conf, passport) in acknowledged {
        let a = client
            .get_appointment(pb::GetAppointmentRequest {
                confirmation_number: conf.clone(),
                passport_number: passport.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("{conf} not readable: {s:?}"))
            .into_inner()
            .appointment
            .unwrap();
        assert_eq!(&a.confirmation_number, conf);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_bookings_through_grpc_book_exactly_the_capacity() {
    let redis = RedisServer::start();
    let store: Arc<dyn Inventory> = redis.patient_store();
    let server = TestServer::start(store.clone()).await;
    let date = day(3);
    open_times(&server, &date, "08:00", "08:30", 24).await;
    register_direct(&store, 1..=2000).await;

    let acknowledged = storm(
        &channels(&server, 16).await,
        &date,
        &["08:00", "08:15", "08:30"],
        1..=2000,
    )
    .await;
    assert_eq!(acknowledged.len(), 3 * 24);
    for time in ["08:00", "08:15", "08:30"] {
        assert_eq!(seats_left(&server, &date, time).await, 0);
    }
    assert_audit_clean(&server, &date).await;
    assert_every_appointment_readable(&server, &acknowledged).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slotd_instances_sharing_one_redis_never_oversell() {
    let redis = RedisServer::start();
    // Each instance has its own store and so its own connection.
    let first = TestServer::start(redis.patient_store()).await;
    let second = TestServer::start(redis.patient_store()).await;
    let date = day(4);
    open_times(&first, &date, "09:00", "09:00", 30).await;
    register_direct(&first.store, 1..=600).await;

    let mut all = channels(&first, 4).await;
    all.extend(channels(&second, 4).await);
    let acknowledged = storm(&all, &date, &["09:00"], 1..=600).await;
    assert_eq!(acknowledged.len(), 30);
    assert_eq!(seats_left(&second, &date, "09:00").await, 0);
    assert_audit_clean(&first, &date).await;
    assert_every_appointment_readable(&second, &acknowledged).await;
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_answers_unavailable_fast_and_the_service_heals_after_the_restart() {
    const SERVING: i32 = 1;
    const NOT_SERVING: i32 = 2;
    let mut redis = RedisServer::start();
    let options = ServeOptions {
        health_interval: Duration::from_millis(200),
        ..ServeOptions::default()
    };
    // The production defaults: 1 s connect, 1 s response timeout.
    let server = TestServer::start_with(redis.store(), options).await;
    let date = day(2);
    open_times(&server, &date, "10:00", "10:00", 10).await;
    register_direct(&server.store, 1..=3).await;
    let mut booking = server.booking().await;
    let first = booking
        .book_appointment(book_request(
            "before",
            slot(&date, "10:00"),
            vec![applicant(1)],
        ))
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    let health_channel = server.channel().await;
    wait_for_health(&health_channel, SERVING).await;

    redis.stop();
    for attempt in 0..3 {
        let started = Instant::now();
        let status = booking
            .book_appointment(book_request(
                "during",
                slot(&date, "10:00"),
                vec![applicant(2)],
            ))
            .await
            .unwrap_err();
        assert_refused(&status, Code::Unavailable, "STORE_UNAVAILABLE");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "attempt {attempt} took {:?}",
            started.elapsed()
        );
    }
    let status = server
        .calendar()
        .await
        .list_slots(pb::ListSlotsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            date: date.clone(),
        })
        .await
        .unwrap_err();
    assert_refused(&status, Code::Unavailable, "STORE_UNAVAILABLE");
    wait_for_health(&health_channel, NOT_SERVING).await;

    redis.restart();
    wait_for_health(&health_channel, SERVING).await;
    // The retry of the failed request (same request_id) now books, exactly once.
    let deadline = Instant::now() + Duration::from_secs(15);
    let retried = loop {
        match booking
            .book_appointment(book_request(
                "during",
                slot(&date, "10:00"),
                vec![applicant(2)],
            ))
            .await
        {
            Ok(r) => break r.into_inner().appointment.unwrap(),
            Err(s) => {
                assert_refused(&s, Code::Unavailable, "STORE_UNAVAILABLE");
                assert!(Instant::now() < deadline, "no recovery: {s:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_ne!(retried.confirmation_number, first.confirmation_number);
    assert_eq!(seats_left(&server, &date, "10:00").await, 8);
    let again = booking
        .get_appointment(pb::GetAppointmentRequest {
            confirmation_number: first.confirmation_number.clone(),
            passport_number: applicant(1).passport_number,
        })
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    assert_eq!(again.confirmation_number, first.confirmation_number);
    assert_audit_clean(&server, &date).await;
    server.stop().await;
}
