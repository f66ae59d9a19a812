//! slotd on a real Redis Cluster (3 primaries + 3 replicas on loopback, tests/support/cluster.rs):
//! the booking storm and three slotd replicas (on the binary's shared cluster, each in its own
//! key space), a manual failover mid-storm, and a primary killed mid-storm with
//! wait-before-acknowledge on (each on a cluster of its own). Every test audits afterwards and checks that every
//! acknowledged booking is still there.

use crate::support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::Code;

use slotd::api::pb;
use slotd::api::pb::booking_service_client::BookingServiceClient;
use slotd::store::Inventory;
use support::cluster::RedisCluster;
use support::*;

const TIMES: [&str; 3] = ["08:00", "08:15", "08:30"];
const SEATS: u32 = 24;

/// Books applicant `i` on one of three 24-seat slots, retrying UNAVAILABLE with the same
/// request_id (a failover in progress) for up to 60 s. Ok(confirmation) or Err(final status).
async fn book_with_retries(
    channel: Channel,
    date: String,
    i: u32,
) -> Result<String, tonic::Status> {
    let mut client = BookingServiceClient::new(channel);
    let request = book_request(
        &format!("cluster-{i}"),
        slot(&date, TIMES[i as usize % 3]),
        vec![applicant(i)],
    );
    let mut last = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        match client.book_appointment(request.clone()).await {
            Ok(r) => {
                return Ok(r
                    .into_inner()
                    .appointment
                    .expect("appointment")
                    .confirmation_number)
            }
            Err(s) if s.code() == Code::Unavailable => {
                last = Some(s);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => return Err(s),
        }
    }
    Err(last.unwrap_or_else(|| tonic::Status::unknown("no attempt")))
}

/// Runs `n` concurrent bookings spread over `servers`; calls `during` once a third are done.
async fn storm(
    servers: &[&TestServer],
    n: u32,
    during: impl FnOnce() + Send + 'static,
) -> Vec<(u32, String)> {
    let date = day(7);
    let mut channels = Vec::new();
    for s in servers {
        for _ in 0..4 {
            channels.push(s.channel().await);
        }
    }
    let done = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut during = Some(during);
    let mut tasks = Vec::new();
    for i in 1..=n {
        let channel = channels[i as usize % channels.len()].clone();
        let date = date.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let r = book_with_retries(channel, date, i).await;
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (i, r)
        }));
    }
    // Trigger the fault once a third of the calls have answered: after real progress, not
    // after a guess at how long that takes (bounded by a generous 60 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while done.load(std::sync::atomic::Ordering::SeqCst) < n / 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the storm made no progress before the fault"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(f) = during.take() {
        tokio::task::spawn_blocking(f)
            .await
            .expect("fault injection");
    }
    let mut booked = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            (i, Ok(conf)) => booked.push((i, conf)),
            (_, Err(s)) => assert_refused(&s, Code::FailedPrecondition, "SLOT_FULL"),
        }
    }
    booked
}

async fn check_outcome(server: &TestServer, booked: &[(u32, String)]) {
    let date = day(7);
    assert_eq!(booked.len() as u32, SEATS * 3, "exactly capacity booked");
    let distinct: HashSet<&String> = booked.iter().map(|(_, c)| c).collect();
    assert_eq!(
        distinct.len(),
        booked.len(),
        "no duplicate confirmation numbers"
    );
    let mut client = server.booking().await;
    for (i, conf) in booked {
        let a = client
            .get_appointment(pb::GetAppointmentRequest {
                confirmation_number: conf.clone(),
                passport_number: applicant(*i).passport_number,
            })
            .await
            .expect("every acknowledged booking is still there")
            .into_inner();
        assert_eq!(
            a.appointment.expect("appointment").status,
            pb::AppointmentStatus::Booked as i32
        );
    }
    for t in TIMES {
        assert_eq!(seats_left(server, &date, t).await, 0);
    }
    assert_audit_clean(server, &date).await;
}

async fn setup(server: &TestServer, n: u32) {
    open_times(server, &day(7), "08:00", "08:30", SEATS).await;
    register_receipts(server, 1..=n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_storm_on_a_cluster_books_exactly_capacity() {
    let tenant = support::cluster::tenant();
    let a = TestServer::start(tenant.store()).await;
    let b = TestServer::start(tenant.store()).await;
    setup(&a, 600).await;
    let booked = storm(&[&a, &b], 600, || {}).await;
    check_outcome(&a, &booked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_slotd_replicas_on_one_cluster_book_exactly_capacity() {
    let tenant = support::cluster::tenant();
    let a = TestServer::start(tenant.store()).await;
    let b = TestServer::start(tenant.store()).await;
    let c = TestServer::start(tenant.store()).await;
    setup(&a, 600).await;
    let booked = storm(&[&a, &b, &c], 600, || {}).await;
    check_outcome(&b, &booked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_mid_storm_loses_nothing_and_overbooks_nothing() {
    let cluster = Arc::new(RedisCluster::start());
    let a = TestServer::start(cluster.store()).await;
    let b = TestServer::start(cluster.store()).await;
    setup(&a, 600).await;
    let c = cluster.clone();
    let booked = storm(&[&a, &b], 600, move || {
        let (old, new) = c.fail_over("{slotd}");
        assert_ne!(old, new);
    })
    .await;
    check_outcome(&a, &booked).await;
}

/// kill -9 of the primary owning the booking tag mid-storm: the cluster promotes its replica
/// after the node timeout. With WAIT 1 before acknowledging, every acknowledged booking was on
/// the replica, so none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_on_a_killed_primary_loses_no_acknowledged_booking() {
    let cluster = Arc::new(std::sync::Mutex::new(RedisCluster::start()));
    let (s1, s2) = {
        let c = cluster.lock().expect("cluster");
        (c.durable_store(1), c.durable_store(1))
    };
    let store: Arc<dyn Inventory> = s1;
    let a = TestServer::start(store).await;
    let b = TestServer::start(s2).await;
    // Setup through a plain store: the test is about acknowledged bookings across the kill.
    let plain_store = cluster.lock().expect("cluster").store();
    let plain = TestServer::start(plain_store).await;
    setup(&plain, 600).await;
    let c = cluster.clone();
    // The primary dies; its replica takes over; the dead node comes back as the new replica
    // (an orchestrator restarting it). Until then WAIT 1 cannot be met: writes answer
    // UNAVAILABLE and clients retry with their request_id.
    let booked = storm(&[&a, &b], 600, move || {
        let mut c = c.lock().expect("cluster");
        let owner = c.owner("{slotd}");
        c.kill(owner.port);
        c.wait_promoted("{slotd}", owner.port);
        c.restart(owner.port);
    })
    .await;
    check_outcome(&a, &booked).await;
}
