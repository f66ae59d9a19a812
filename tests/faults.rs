//! Fault injection: booking storms over gRPC while Redis or slotd itself fails, each checked
//! against its recorded history (tests/support/history.rs): every acknowledged booking and
//! cancel is in the final state, refused ones left nothing, indeterminate ones resolved one way
//! or the other consistently, every slot's counters match its appointments and the audit is
//! clean. Loopback only; each storm is a few hundred requests and a few seconds. Needs
//! `redis-server`.

use crate::support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use slotd::api::pb::booking_service_client::BookingServiceClient;
use support::flow::{open, real_date, register};
use support::history::{self, until_acknowledged, History, Outcome, StormPlan};
use support::process::{free_port, Slotd};
use support::redis::RedisServer;
use support::*;

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

/// Eight storm slots 08:00-09:45 with `seats` each (few enough that some bookings are refused
/// SLOT_FULL), and 10:00 with room for every applicant (the claim probe after the storm).
fn plan(date: &str, first_applicant: u32) -> StormPlan {
    StormPlan {
        date: date.into(),
        times: (0..8)
            .map(|q| format!("{:02}:{:02}", 8 + q / 4, (q % 4) * 15))
            .collect(),
        workers: 12,
        requests_per_worker: 10,
        first_applicant,
        cancel_every: 3,
        pace: Duration::from_millis(25),
        patience: Duration::from_secs(20),
    }
}

const STORM_SEATS: u32 = 16;

async fn prepare(server: &TestServer, plan: &StormPlan) {
    open_times(server, &plan.date, "08:00", "09:45", STORM_SEATS).await;
    open_times(server, &plan.date, "10:00", "10:00", 1_000).await;
    register_receipts(server, plan.applicant_ids()).await;
}

async fn client_channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_storm_and_restarted_from_its_aof_loses_no_acknowledged_booking() {
    let mut redis = RedisServer::start();
    let server = TestServer::start(redis.store()).await;
    let plan = plan(&day(7), 1);
    prepare(&server, &plan).await;
    let channel = client_channel(&server.addr.to_string()).await;
    let history = History::new();
    let storm = tokio::spawn(history::run_storm(
        channel.clone(),
        plan.clone(),
        history.clone(),
    ));

    until_acknowledged(&history, 20).await;
    // SIGKILL: no shutdown save; only what `appendfsync always` wrote survives.
    tokio::task::block_in_place(|| redis.stop());
    tokio::time::sleep(Duration::from_millis(400)).await;
    tokio::task::block_in_place(|| redis.restart());
    storm.await.expect("storm");

    eprintln!("kill -9 redis: {}", history.summary());
    assert!(
        history.retried() > 0,
        "the storm spans the crash: {}",
        history.summary()
    );
    let verdict = history::check(&channel, &plan, &history).await;
    assert!(verdict.acknowledged_books >= 20, "{verdict:?}");
    history::check_claims(&channel, &plan, "10:00").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_flush_mid_storm_reaches_no_client() {
    let redis = RedisServer::start();
    let server = TestServer::start(redis.store()).await;
    let plan = plan(&day(7), 1);
    prepare(&server, &plan).await;
    let channel = client_channel(&server.addr.to_string()).await;
    let history = History::new();

    // Flush the functions library every few milliseconds for the whole storm.
    let stop = Arc::new(AtomicBool::new(false));
    let url = redis.url();
    let flusher = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = ::redis::Client::open(url)
                .expect("url")
                .get_connection()
                .expect("connect");
            let mut flushes = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let _: () = ::redis::cmd("FUNCTION")
                    .arg("FLUSH")
                    .query(&mut conn)
                    .expect("function flush");
                flushes += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
            flushes
        })
    };
    history::run_storm(channel.clone(), plan.clone(), history.clone()).await;
    stop.store(true, Ordering::SeqCst);
    let flushes = flusher.await.expect("flusher");

    eprintln!("function flush x{flushes}: {}", history.summary());
    assert!(flushes >= 10, "only {flushes} flushes");
    // slotd reloads a flushed library itself (once per call: a second flush inside that
    // reload's round trip answers UNAVAILABLE, which the client's retry absorbs). Nothing but
    // UNAVAILABLE reaches a client, and every request ends definitely.
    let codes = history.retry_codes();
    assert!(
        codes.keys().all(|c| c == "Unavailable"),
        "{}",
        history.summary()
    );
    for e in history.entries() {
        assert!(
            !matches!(e.outcome, Outcome::Indeterminate(_)),
            "{e:?} after FUNCTION FLUSH"
        );
    }
    history::check(&channel, &plan, &history).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_beyond_the_timeout_with_clients_retrying_books_each_request_once() {
    let redis = RedisServer::start();
    // slotd's default Redis response timeout is 1 s; the pause lasts 2.5 s.
    let server = TestServer::start(redis.store()).await;
    let plan = StormPlan {
        // Enough seats for everyone: every request must end up booked exactly once.
        cancel_every: 0,
        ..plan(&day(7), 1)
    };
    open_times(&server, &plan.date, "08:00", "09:45", 100).await;
    open_times(&server, &plan.date, "10:00", "10:00", 1_000).await;
    register_receipts(&server, plan.applicant_ids()).await;
    let channel = client_channel(&server.addr.to_string()).await;
    let history = History::new();
    let storm = tokio::spawn(history::run_storm(
        channel.clone(),
        plan.clone(),
        history.clone(),
    ));
    until_acknowledged(&history, 10).await;
    let mut conn = redis.client();
    let _: () = ::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2500)
        .arg("ALL")
        .query(&mut conn)
        .expect("client pause");
    storm.await.expect("storm");

    eprintln!("client pause 2.5 s: {}", history.summary());
    assert!(
        history.retried() > 0,
        "calls timed out during the pause and were retried: {}",
        history.summary()
    );
    let total = (plan.workers * plan.requests_per_worker) as usize;
    let entries = history.entries();
    assert_eq!(entries.len(), total);
    for e in &entries {
        assert!(
            matches!(e.outcome, Outcome::Ok(_)),
            "every retried request ends booked: {e:?}"
        );
    }
    // Exactly one appointment per request, under the number its client got (check), and no
    // more appointments than requests.
    let verdict = history::check(&channel, &plan, &history).await;
    assert_eq!(verdict.acknowledged_books, total);
    assert_eq!(history::manifest(&channel, &plan.date).await.len(), total);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The real binary, as an OS process.

async fn prepare_real(channel: &Channel, plan: &StormPlan) {
    open(channel, &plan.date, "08:00", "09:45", STORM_SEATS).await;
    open(channel, &plan.date, "10:00", "10:00", 1_000).await;
    register(channel, plan.applicant_ids()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slotd_starting_before_redis_is_not_serving_then_serves_once_redis_comes() {
    let mut redis = RedisServer::unstarted();
    let slotd = Slotd::start(free_port(), &redis.url());
    let channel = client_channel(&slotd.addr()).await;
    // Up, listening, but honest: the store does not answer.
    wait_for_health(&channel, NOT_SERVING).await;
    let date = real_date(7);
    let status = BookingServiceClient::new(channel.clone())
        .book_appointment(book_request(
            "early-1",
            slot(&date, "08:00"),
            vec![applicant(1)],
        ))
        .await
        .expect_err("no store yet");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        slotd.log().contains("does not answer"),
        "the start-up warns: {}",
        slotd.log()
    );

    tokio::task::block_in_place(|| redis.restart());
    wait_for_health(&channel, SERVING).await;
    let plan = StormPlan {
        workers: 1,
        requests_per_worker: 1,
        ..plan(&date, 1)
    };
    prepare_real(&channel, &plan).await;
    let appointment = BookingServiceClient::new(channel.clone())
        .book_appointment(book_request(
            "late-1",
            slot(&date, "08:00"),
            vec![applicant(1)],
        ))
        .await
        .expect("books once redis is up")
        .into_inner()
        .appointment
        .expect("appointment");
    assert_eq!(appointment.applicants.len(), 1);
    history::audit_clean(&channel, &date).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slotd_killed_mid_storm_leaves_no_half_written_state() {
    let redis = RedisServer::start();
    let port = free_port();
    let mut slotd = Slotd::start(port, &redis.url());
    let channel = client_channel(&slotd.addr()).await;
    let plan = plan(&real_date(7), 1);
    prepare_real(&channel, &plan).await;
    let history = History::new();
    let storm = tokio::spawn(history::run_storm(
        channel.clone(),
        plan.clone(),
        history.clone(),
    ));

    until_acknowledged(&history, 20).await;
    slotd.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new process on the same address: the clients' retries reach it.
    let slotd = Slotd::start(port, &redis.url());
    storm.await.expect("storm");

    eprintln!("kill -9 slotd: {}", history.summary());
    assert!(
        history.retried() > 0,
        "the storm spans the kill: {}",
        history.summary()
    );
    let verdict = history::check(&channel, &plan, &history).await;
    assert!(verdict.acknowledged_books >= 20, "{verdict:?}");
    history::check_claims(&channel, &plan, "10:00").await;
    drop(slotd);
}

/// The checker itself: a history claiming an acknowledged booking the store does not have, or
/// a refused one the store does have, is caught.
#[tokio::test]
async fn the_history_checker_catches_a_lost_or_phantom_booking() {
    use support::history::{Entry, Op};
    let server = TestServer::memory().await;
    let plan = StormPlan {
        workers: 1,
        requests_per_worker: 2,
        ..plan(&day(7), 1)
    };
    prepare(&server, &plan).await;
    let channel = client_channel(&server.addr.to_string()).await;
    let booked = server
        .booking()
        .await
        .book_appointment(book_request(
            "real-1",
            slot(&plan.date, "08:00"),
            vec![applicant(1)],
        ))
        .await
        .expect("book")
        .into_inner()
        .appointment
        .expect("appointment");
    let book = |outcome: Outcome| Entry {
        op: Op::Book {
            request_id: "real-1".into(),
            time: "08:00".into(),
            applicants: vec![1],
        },
        outcome,
    };
    let verdict = |history: Arc<History>| {
        let (channel, plan) = (channel.clone(), plan.clone());
        tokio::spawn(async move { history::check(&channel, &plan, &history).await })
    };
    // The true history passes.
    let truth = History::new();
    truth.record(book(Outcome::Ok(booked.confirmation_number.clone())));
    verdict(truth).await.expect("the true history checks");
    // A refused booking that is stored, an acknowledged one that is not, and a stored one that
    // nobody asked for all fail.
    let refused = History::new();
    refused.record(book(Outcome::Failed("SLOT_FULL".into())));
    let lost = History::new();
    lost.record(book(Outcome::Ok(booked.confirmation_number.clone())));
    lost.record(Entry {
        op: Op::Book {
            request_id: "ghost-1".into(),
            time: "08:15".into(),
            applicants: vec![2],
        },
        outcome: Outcome::Ok("ABCDEFGHJKMNPQ".into()),
    });
    let phantom = History::new();
    for (name, history) in [("refused", refused), ("lost", lost), ("phantom", phantom)] {
        let result = verdict(history).await;
        assert!(
            result.as_ref().is_err_and(|e| e.is_panic()),
            "{name}: the checker let it pass"
        );
    }
    server.stop().await;
}
