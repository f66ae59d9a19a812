//! The calendar cache is robust (issue #20, item 4), on both backends, counted at the store
//! seam (`support::counting::CountingStore`): concurrent misses share one store read, a write
//! invalidates only the days it touched (a reschedule its two days, a hold sweep the days of the
//! holds it reclaimed), and a replayed request invalidates nothing.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;

use slotd::api::pb;
use slotd::app::availability::CalendarOptions;
use slotd::domain::lifecycle::{EventId, EventStart};
use slotd::domain::rules::DateRange;
use slotd::domain::types::{parse_date, CategoryId, PostId};
use slotd::store::memory::MemoryStore;
use slotd::store::Inventory;
use support::counting::CountingStore;
use support::redis::RedisServer;
use support::*;

/// A long staleness bound, so only invalidations make a cached day read again.
fn long_cache() -> CalendarOptions {
    CalendarOptions {
        cache_max_age: Duration::from_secs(60),
        feed_interval: Duration::from_millis(100),
    }
}

/// The backend under test, kept alive for the server's lifetime.
enum Backend {
    Memory,
    Redis(RedisServer),
}

impl Backend {
    fn store(&self) -> Arc<dyn Inventory> {
        match self {
            Backend::Memory => Arc::new(MemoryStore::new()),
            Backend::Redis(redis) => redis.patient_store(),
        }
    }
}

async fn start(backend: &Backend) -> (TestServer, Arc<CountingStore>) {
    let counting = CountingStore::new(backend.store());
    let server = TestServer::start_calendar(counting.clone(), long_cache()).await;
    (server, counting)
}

/// ListSlots of one day; returns the store reads it cost.
async fn list_day(server: &TestServer, counting: &CountingStore, date: &str) -> u64 {
    let before = counting.slot_reads();
    server
        .calendar()
        .await
        .list_slots(pb::ListSlotsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            date: date.into(),
        })
        .await
        .expect("list slots");
    counting.slot_reads() - before
}

async fn book(server: &TestServer, id: &str, i: u32, date: &str) -> pb::Appointment {
    server
        .booking()
        .await
        .book_appointment(book_request(id, slot(date, "08:00"), vec![applicant(i)]))
        .await
        .expect("book")
        .into_inner()
        .appointment
        .expect("appointment")
}

async fn reschedule(server: &TestServer, confirmation: &str, i: u32, id: &str, date: &str) {
    server
        .booking()
        .await
        .reschedule_appointment(pb::RescheduleAppointmentRequest {
            confirmation_number: confirmation.into(),
            passport_number: applicant(i).passport_number,
            request_id: id.into(),
            new_slot: Some(slot(date, "08:00")),
        })
        .await
        .expect("reschedule");
}

async fn setup(server: &TestServer, days: &[i64]) {
    for d in days {
        open_day(server, &day(*d), 5).await;
    }
    register_receipts(server, 1..=3).await;
}

/// Waits until the feed has read (and marked the days of) every event logged so far, so its
/// marks cannot land after the test filled the cache. The feed starts at the log's end when it
/// first runs, so if it started after some writes it never counts them: then the wait runs out
/// (and those writes are never marked, which is as good).
async fn feed_caught_up(server: &TestServer) {
    let logged = server
        .store
        .events(EventStart::After(EventId::default()), 10_000)
        .await
        .expect("events")
        .events
        .len() as u64;
    let availability = server.app.availability().clone();
    for _ in 0..250 {
        if availability.stats().events >= logged {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_reschedule_invalidates_only_the_days_it_touched(backend: Backend) {
    let (server, counting) = start(&backend).await;
    setup(&server, &[10, 12, 20]).await;
    let a = book(&server, "b-1", 1, &day(10)).await;
    feed_caught_up(&server).await;
    for d in [10, 12, 20] {
        list_day(&server, &counting, &day(d)).await;
        assert_eq!(
            list_day(&server, &counting, &day(d)).await,
            0,
            "day {d} cached"
        );
    }

    reschedule(&server, &a.confirmation_number, 1, "r-1", &day(12)).await;
    assert_eq!(
        list_day(&server, &counting, &day(20)).await,
        0,
        "a day the reschedule did not touch stays cached"
    );
    assert_eq!(
        list_day(&server, &counting, &day(10)).await,
        1,
        "the day it left"
    );
    assert_eq!(
        list_day(&server, &counting, &day(12)).await,
        1,
        "the day it reached"
    );
    assert_eq!(seats_left(&server, &day(10), "08:00").await, 5);
    assert_eq!(seats_left(&server, &day(12), "08:00").await, 4);
    server.stop().await;
}

#[tokio::test]
async fn memory_a_reschedule_invalidates_only_the_days_it_touched() {
    a_reschedule_invalidates_only_the_days_it_touched(Backend::Memory).await;
}

#[tokio::test]
async fn redis_a_reschedule_invalidates_only_the_days_it_touched() {
    a_reschedule_invalidates_only_the_days_it_touched(Backend::Redis(RedisServer::start())).await;
}

async fn replays_invalidate_nothing(backend: Backend) {
    let (server, counting) = start(&backend).await;
    setup(&server, &[10, 12]).await;
    let a = book(&server, "b-1", 1, &day(10)).await;
    let c = book(&server, "b-2", 2, &day(10)).await;
    reschedule(&server, &a.confirmation_number, 1, "r-1", &day(12)).await;
    server
        .booking()
        .await
        .cancel_appointment(pb::CancelAppointmentRequest {
            confirmation_number: c.confirmation_number.clone(),
            passport_number: applicant(2).passport_number,
            request_id: "x-1".into(),
        })
        .await
        .expect("cancel");
    feed_caught_up(&server).await;
    // Later: every replay answers its first outcome and writes nothing.
    server.clock.advance(ChronoDuration::seconds(5));
    for d in [10, 12] {
        list_day(&server, &counting, &day(d)).await;
        assert_eq!(list_day(&server, &counting, &day(d)).await, 0);
    }
    for _ in 0..20 {
        reschedule(&server, &a.confirmation_number, 1, "r-1", &day(12)).await;
        let again = book(&server, "b-1", 1, &day(10)).await;
        assert_eq!(again.confirmation_number, a.confirmation_number);
        server
            .booking()
            .await
            .cancel_appointment(pb::CancelAppointmentRequest {
                confirmation_number: c.confirmation_number.clone(),
                passport_number: applicant(2).passport_number,
                request_id: "x-1".into(),
            })
            .await
            .expect("cancel replay");
        for d in [10, 12] {
            assert_eq!(
                list_day(&server, &counting, &day(d)).await,
                0,
                "a replay invalidated day {d}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn memory_replays_invalidate_nothing() {
    replays_invalidate_nothing(Backend::Memory).await;
}

#[tokio::test]
async fn redis_replays_invalidate_nothing() {
    replays_invalidate_nothing(Backend::Redis(RedisServer::start())).await;
}

async fn a_hold_sweep_invalidates_only_the_days_of_the_holds_it_reclaimed(backend: Backend) {
    let (server, counting) = start(&backend).await;
    setup(&server, &[10, 20]).await;
    server
        .booking()
        .await
        .hold_slot(pb::HoldSlotRequest {
            request_id: "h-1".into(),
            slot: Some(slot(&day(10), "08:00")),
            applicants: vec![applicant(1)],
        })
        .await
        .expect("hold");
    feed_caught_up(&server).await;
    for d in [10, 20] {
        list_day(&server, &counting, &day(d)).await;
        assert_eq!(list_day(&server, &counting, &day(d)).await, 0);
    }
    server.clock.advance(ChronoDuration::minutes(11));
    assert_eq!(server.app.reclaim_expired_holds().await.expect("sweep"), 1);
    assert_eq!(
        list_day(&server, &counting, &day(20)).await,
        0,
        "a day without reclaimed holds stays cached"
    );
    assert_eq!(list_day(&server, &counting, &day(10)).await, 1);
    assert_eq!(seats_left(&server, &day(10), "08:00").await, 5);
    // A sweep that reclaims nothing invalidates nothing.
    assert_eq!(server.app.reclaim_expired_holds().await.expect("sweep"), 0);
    assert_eq!(list_day(&server, &counting, &day(10)).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn memory_a_hold_sweep_invalidates_only_the_days_of_the_holds_it_reclaimed() {
    a_hold_sweep_invalidates_only_the_days_of_the_holds_it_reclaimed(Backend::Memory).await;
}

#[tokio::test]
async fn redis_a_hold_sweep_invalidates_only_the_days_of_the_holds_it_reclaimed() {
    a_hold_sweep_invalidates_only_the_days_of_the_holds_it_reclaimed(Backend::Redis(
        RedisServer::start(),
    ))
    .await;
}

/// 64 concurrent misses of one range cost one store read: every call is polled up to its first
/// wait while the store is held at a gate, then the gate opens.
async fn concurrent_misses_share_one_store_read(backend: Backend) {
    let (server, counting) = start(&backend).await;
    setup(&server, &[10, 11, 12]).await;
    feed_caught_up(&server).await;
    let post = PostId::parse("BEIJING").expect("post");
    let category = CategoryId::parse("ALL_OTHERS").expect("category");
    let range = DateRange::new(
        parse_date(&day(1)).expect("date"),
        parse_date(&day(366)).expect("date"),
    )
    .expect("range");
    let before = counting.slot_reads();
    counting.close_gate();
    let app = server.app.clone();
    let calls =
        futures::future::join_all((0..64).map(|_| app.available_dates(&post, &category, range)));
    tokio::pin!(calls);
    // Every call runs to its first wait (the gate, or the calendar's single flight).
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut calls)
            .await
            .is_err(),
        "the gate holds the reads"
    );
    counting.open_gate();
    let answers = calls.await;
    for answer in &answers {
        assert_eq!(answer.as_ref().expect("dates").len(), 3);
    }
    assert_eq!(
        counting.slot_reads() - before,
        1,
        "64 concurrent misses of one range read the store once"
    );
    server.stop().await;
}

#[tokio::test]
async fn memory_concurrent_misses_share_one_store_read() {
    concurrent_misses_share_one_store_read(Backend::Memory).await;
}

#[tokio::test]
async fn redis_concurrent_misses_share_one_store_read() {
    concurrent_misses_share_one_store_read(Backend::Redis(RedisServer::start())).await;
}
