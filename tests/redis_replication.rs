//! `redis.wait_replicas` answers honestly (issue #20, item 7), with a real primary and replica
//! on loopback: with too few replicas connected a booking is refused before it writes (the
//! primary runs deploy/redis-replicated.conf's `min-replicas-to-write`), and a booking that
//! committed while its WAIT fell short is answered, on replay, with its outcome.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Code;

use slotd::api::pb;
use slotd::store::redis::ConnOptions;
use slotd::store::redis::RedisOptions;
use slotd::store::Inventory;
use support::redis::RedisServer;
use support::*;

fn info(server: &RedisServer, section: &str) -> String {
    ::redis::cmd("INFO")
        .arg(section)
        .query::<String>(&mut server.client())
        .expect("INFO")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A primary and one replica of it, in sync.
fn primary_and_replica() -> (RedisServer, RedisServer) {
    let primary = RedisServer::start_tcp();
    let replica = RedisServer::start_tcp();
    ::redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port())
        .query::<String>(&mut replica.client())
        .expect("REPLICAOF");
    wait_until("the replica's link is up", || {
        info(&replica, "replication").contains("master_link_status:up")
    });
    wait_until("the primary sees its replica in sync", || {
        info(&primary, "replication").contains("state=online")
    });
    wait_acknowledged(&primary);
    (primary, replica)
}

/// Waits until the replica acknowledges the primary's writes (`WAIT 1` on a probe write), as
/// the stores' WAIT will need: "online" alone may come before its first acknowledgement.
fn wait_acknowledged(primary: &RedisServer) {
    let mut client = primary.client();
    wait_until("the replica acknowledges a write", || {
        // Refused (NOREPLICAS under min-replicas-to-write) until the replica counts: retry.
        let set: ::redis::RedisResult<()> = ::redis::cmd("SET")
            .arg("replication-probe")
            .arg("1")
            .query(&mut client);
        let acked: i64 = ::redis::cmd("WAIT")
            .arg(1)
            .arg(200)
            .query(&mut client)
            .expect("WAIT");
        set.is_ok() && acked >= 1
    });
    let _: () = ::redis::cmd("DEL")
        .arg("replication-probe")
        .query(&mut client)
        .expect("DEL");
}

/// A store that acknowledges writes once one replica has them.
fn waiting_store(primary: &RedisServer) -> Arc<dyn Inventory> {
    primary.store_with(RedisOptions {
        conn: ConnOptions {
            url: primary.url(),
            response_timeout: Duration::from_secs(5),
            wait_replicas: 1,
            wait_timeout: Duration::from_millis(300),
            ..ConnOptions::default()
        },
        ..RedisOptions::default()
    })
}

/// The `min-replicas-*` settings deploy/redis-replicated.conf ships, applied to `primary`.
fn apply_shipped_min_replicas(primary: &RedisServer) {
    let conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/redis-replicated.conf"
    ))
    .expect("deploy/redis-replicated.conf");
    let mut applied = 0;
    for line in conf.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        if let (Some(key), Some(value)) = (words.next(), words.next()) {
            if key.starts_with("min-replicas-") {
                ::redis::cmd("CONFIG")
                    .arg("SET")
                    .arg(key)
                    .arg(value)
                    .query::<String>(&mut primary.client())
                    .expect("CONFIG SET");
                applied += 1;
            }
        }
    }
    assert_eq!(
        applied, 2,
        "redis-replicated.conf sets min-replicas-to-write and min-replicas-max-lag"
    );
}

async fn book(server: &TestServer, id: &str, date: &str) -> Result<pb::Appointment, tonic::Status> {
    server
        .booking()
        .await
        .book_appointment(book_request(id, slot(date, "08:00"), vec![applicant(1)]))
        .await
        .map(|r| r.into_inner().appointment.expect("appointment"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_too_few_replicas_connected_a_booking_is_refused_before_it_writes_anything() {
    let (primary, mut replica) = primary_and_replica();
    apply_shipped_min_replicas(&primary);
    let server = TestServer::start(waiting_store(&primary)).await;
    let date = day(2);
    open_times(&server, &date, "08:00", "08:00", 3).await;
    register_receipts(&server, 1..=1).await;

    replica.stop();
    wait_until("the primary lost its replica", || {
        info(&primary, "replication").contains("connected_slaves:0")
    });
    let keys_before: i64 = ::redis::cmd("DBSIZE")
        .query(&mut primary.client())
        .expect("DBSIZE");
    let refused = book(&server, "b-1", &date).await.expect_err("no replica");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // Nothing was written: no key, no seat, no event.
    let keys_after: i64 = ::redis::cmd("DBSIZE")
        .query(&mut primary.client())
        .expect("DBSIZE");
    assert_eq!(keys_before, keys_after, "a refused booking wrote keys");
    assert_eq!(seats_left(&server, &date, "08:00").await, 3);

    // The replica back: the same request books, once.
    replica.restart();
    ::redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port())
        .query::<String>(&mut replica.client())
        .expect("REPLICAOF");
    wait_until("the replica is in sync again", || {
        info(&replica, "replication").contains("master_link_status:up")
            && info(&primary, "replication").contains("state=online")
    });
    wait_acknowledged(&primary);
    let booked = book(&server, "b-1", &date)
        .await
        .expect("booked with a replica");
    let again = book(&server, "b-1", &date).await.expect("replay");
    assert_eq!(booked.confirmation_number, again.confirmation_number);
    assert_eq!(seats_left(&server, &date, "08:00").await, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_a_booking_committed_while_wait_fell_short_returns_its_outcome() {
    let (primary, replica) = primary_and_replica();
    let server = TestServer::start(waiting_store(&primary)).await;
    let date = day(2);
    open_times(&server, &date, "08:00", "08:00", 3).await;
    register_receipts(&server, 1..=1).await;

    // A hung replica: connected, so the write is accepted, but it never acknowledges.
    replica.pause();
    let first = book(&server, "b-1", &date)
        .await
        .expect_err("WAIT fell short");
    assert_eq!(first.code(), Code::Unavailable, "{first:?}");
    // The write stands on the primary; the replay tells the client its outcome.
    let replayed = book(&server, "b-1", &date)
        .await
        .expect("a replay answers the committed booking");
    assert_eq!(replayed.slot.expect("slot").date, date);
    let again = book(&server, "b-1", &date).await.expect("replay again");
    assert_eq!(replayed.confirmation_number, again.confirmation_number);
    // Booked once.
    assert_eq!(seats_left(&server, &date, "08:00").await, 2);
    replica.resume();
    // A fresh booking with the replica back is acknowledged normally.
    register_receipts(&server, 2..=2).await;
    server
        .booking()
        .await
        .book_appointment(book_request(
            "b-2",
            slot(&date, "08:00"),
            vec![applicant(2)],
        ))
        .await
        .expect("acknowledged with the replica back");
    assert_eq!(seats_left(&server, &date, "08:00").await, 1);
    server.stop().await;
}
