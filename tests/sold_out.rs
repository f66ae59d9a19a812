//! The Redis store's sold-out memo (src/store/redis/sold_out.rs): a slot seen sold out is refused
//! without running the booking script for a bounded time, and stays correct when seats come back
//! and when a successful booking is replayed.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use slotd::api::pb;
use slotd::store::redis::{ConnOptions, RedisOptions, RedisStore};
use support::redis::RedisServer;
use support::*;

/// A store on `redis` whose memo trusts a sold-out answer for `ttl`.
fn store(redis: &RedisServer, ttl: Duration) -> Arc<RedisStore> {
    let options = RedisOptions {
        conn: ConnOptions {
            url: redis.url(),
            response_timeout: Duration::from_secs(20),
            ..ConnOptions::default()
        },
        ..RedisOptions::default()
    };
    Arc::new(
        RedisStore::connect(&options)
            .expect("redis store")
            .with_sold_out_ttl(ttl),
    )
}

/// Cancels `confirmation_number` of applicant `i`'s group, which must succeed.
async fn cancel(server: &TestServer, confirmation_number: String, i: u32, request_id: &str) {
    server
        .booking()
        .await
        .cancel_appointment(pb::CancelAppointmentRequest {
            confirmation_number,
            passport_number: applicant(i).passport_number,
            request_id: request_id.into(),
        })
        .await
        .expect("cancel");
}

async fn book(server: &TestServer, id: &str, i: u32, date: &str) -> Result<String, tonic::Status> {
    server
        .booking()
        .await
        .book_appointment(book_request(id, slot(date, "08:00"), vec![applicant(i)]))
        .await
        .map(|r| {
            r.into_inner()
                .appointment
                .map(|a| a.confirmation_number)
                .unwrap_or_default()
        })
}

#[tokio::test]
async fn a_sold_out_slot_is_bookable_at_once_after_a_cancel_on_the_same_replica() {
    let redis = RedisServer::start();
    // A memo far longer than the test: only invalidation can make the second booking pass.
    let server = TestServer::start(store(&redis, Duration::from_secs(3600))).await;
    let date = day(3);
    open_day(&server, &date, 1).await;
    register_receipts(&server, 1..=2).await;

    let first = book(&server, "b-1", 1, &date).await.expect("first seat");
    for attempt in 0..2 {
        let refused = book(&server, &format!("b-2-{attempt}"), 2, &date)
            .await
            .expect_err("sold out");
        assert_refused(&refused, Code::FailedPrecondition, "SLOT_FULL");
    }
    cancel(&server, first, 1, "c-1").await;
    book(&server, "b-2-again", 2, &date)
        .await
        .expect("the cancelled seat is bookable at once");
    assert_audit_clean(&server, &date).await;
    server.stop().await;
}

#[tokio::test]
async fn a_replayed_booking_returns_its_appointment_while_the_slot_is_remembered_sold_out() {
    let redis = RedisServer::start();
    let server = TestServer::start(store(&redis, Duration::from_secs(3600))).await;
    let date = day(3);
    open_day(&server, &date, 1).await;
    register_receipts(&server, 1..=2).await;

    let first = book(&server, "b-1", 1, &date).await.expect("first seat");
    let refused = book(&server, "b-2", 2, &date).await.expect_err("sold out");
    assert_refused(&refused, Code::FailedPrecondition, "SLOT_FULL");
    let replayed = book(&server, "b-1", 1, &date)
        .await
        .expect("a retry of the successful booking replays it");
    assert_eq!(replayed, first);
    server.stop().await;
}

#[tokio::test]
async fn seats_added_on_another_replica_are_bookable_once_the_memo_bound_has_passed() {
    let redis = RedisServer::start();
    let ttl = Duration::from_millis(300);
    let remembering = TestServer::start(store(&redis, ttl)).await;
    let other = TestServer::start(store(&redis, ttl)).await;
    let date = day(3);
    open_day(&remembering, &date, 1).await;
    register_receipts(&remembering, 1..=2).await;

    book(&remembering, "b-1", 1, &date)
        .await
        .expect("first seat");
    let refused = book(&remembering, "b-2", 2, &date)
        .await
        .expect_err("sold out");
    assert_refused(&refused, Code::FailedPrecondition, "SLOT_FULL");

    other
        .admin()
        .await
        .set_slot_capacity(admin(pb::SetSlotCapacityRequest {
            slot: Some(slot(&date, "08:00")),
            capacity: 2,
        }))
        .await
        .expect("capacity raised elsewhere");
    // The bound: at most `ttl` after the raise, the replica that remembered the slot sells it.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    book(&remembering, "b-2-later", 2, &date)
        .await
        .expect("the new seat is bookable once the memo expired");
    assert_audit_clean(&remembering, &date).await;
    remembering.stop().await;
    other.stop().await;
}

async fn hold(
    server: &TestServer,
    id: &str,
    i: u32,
    date: &str,
) -> Result<pb::Hold, tonic::Status> {
    server
        .booking()
        .await
        .hold_slot(pb::HoldSlotRequest {
            request_id: id.into(),
            slot: Some(slot(date, "08:00")),
            applicants: vec![applicant(i)],
        })
        .await
        .map(|r| r.into_inner().hold.unwrap_or_default())
}

/// Holds use the booking's memo: once a hold found the slot full of bookings, further holds are
/// refused SLOT_FULL without the script (seats added behind the memo's back, on another
/// replica, are not seen while it trusts the answer), a replayed hold still gets its first
/// hold, and seats given back through the remembering replica (a cancel) clear the memo at once.
#[tokio::test]
async fn holds_on_a_sold_out_slot_are_refused_from_the_memo_until_seats_come_back() {
    let redis = RedisServer::start();
    let remembering = TestServer::start(store(&redis, Duration::from_secs(3600))).await;
    let other = TestServer::start(store(&redis, Duration::from_secs(3600))).await;
    let date = day(3);
    open_day(&remembering, &date, 1).await;
    register_receipts(&remembering, 1..=4).await;

    let first = hold(&remembering, "h-1", 1, &date).await.expect("the seat");
    let booked = remembering
        .booking()
        .await
        .confirm_hold(pb::ConfirmHoldRequest {
            hold_id: first.hold_id.clone(),
            request_id: "h-1-confirm".into(),
        })
        .await
        .expect("confirmed")
        .into_inner()
        .appointment
        .map(|a| a.confirmation_number)
        .unwrap_or_default();
    // The script's refusal marks the memo (the slot is full of bookings, no live hold).
    let refused = hold(&remembering, "h-2", 2, &date).await.expect_err("full");
    assert_refused(&refused, Code::FailedPrecondition, "SLOT_FULL");
    other
        .admin()
        .await
        .set_slot_capacity(admin(pb::SetSlotCapacityRequest {
            slot: Some(slot(&date, "08:00")),
            capacity: 2,
        }))
        .await
        .expect("capacity raised elsewhere");
    // The memo answers: the script would have held the new seat.
    let refused = hold(&remembering, "h-3", 3, &date)
        .await
        .expect_err("remembered sold out");
    assert_refused(&refused, Code::FailedPrecondition, "SLOT_FULL");
    // A replay is no new hold: it gets its first answer, memo or not.
    let replayed = hold(&remembering, "h-1", 1, &date).await.expect("replayed");
    assert_eq!(replayed.hold_id, first.hold_id);
    // Seats given back through this replica clear the memo at once.
    cancel(&remembering, booked, 1, "h-1-cancel").await;
    hold(&remembering, "h-4", 4, &date)
        .await
        .expect("seats are back: the memo forgot");
    assert_audit_clean(&remembering, &date).await;
    remembering.stop().await;
    other.stop().await;
}

/// Past the memo's TTL a slot seen sold out is stale, not forgotten: a hold on it is rechecked
/// with one pipeline of two plain reads (the request's idempotency record and the slot's
/// counters) and refused SLOT_FULL without the hold script while the slot stays full of
/// bookings; seats added behind the memo's back (another replica) are seen at that recheck.
#[tokio::test]
async fn a_stale_memo_refuses_holds_on_a_slot_still_sold_out_with_two_reads_and_no_script() {
    let redis = RedisServer::start();
    let ttl = Duration::from_millis(200);
    let remembering = TestServer::start(store(&redis, ttl)).await;
    let other = TestServer::start(store(&redis, ttl)).await;
    let date = day(3);
    open_day(&remembering, &date, 1).await;
    register_receipts(&remembering, 1..=4).await;
    let first = hold(&remembering, "s-1", 1, &date).await.expect("the seat");
    remembering
        .booking()
        .await
        .confirm_hold(pb::ConfirmHoldRequest {
            hold_id: first.hold_id.clone(),
            request_id: "s-1-confirm".into(),
        })
        .await
        .expect("confirmed");
    // The script refuses and marks the memo; then the memo goes stale.
    let refused = hold(&remembering, "s-2", 2, &date).await.expect_err("full");
    assert_refused(&refused, Code::FailedPrecondition, "SLOT_FULL");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;

    let client = ::redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_connection().expect("connection");
    let _: () = ::redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .expect("resetstat");
    let refused = hold(&remembering, "s-3", 3, &date)
        .await
        .expect_err("still sold out");
    assert_refused(&refused, Code::FailedPrecondition, "SLOT_FULL");
    let stats: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .expect("commandstats");
    // hold.lua's first call is the GET of the idempotency record: it never ran.
    assert!(!stats.contains("cmdstat_get:"), "{stats}");
    assert!(stats.contains("cmdstat_exists:calls=1,"), "{stats}");

    // Seats added elsewhere: the next stale recheck sees them and the script holds one.
    other
        .admin()
        .await
        .set_slot_capacity(admin(pb::SetSlotCapacityRequest {
            slot: Some(slot(&date, "08:00")),
            capacity: 2,
        }))
        .await
        .expect("capacity raised elsewhere");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    hold(&remembering, "s-4", 4, &date)
        .await
        .expect("the new seat is held once the memo is stale");
    assert_audit_clean(&remembering, &date).await;
    remembering.stop().await;
    other.stop().await;
}
