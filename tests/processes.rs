//! Three slotd OS processes (the real binary, each on 127.0.0.1:0) behind one address list,
//! sharing one Redis: a booking storm spread over them books exactly the capacity, and the
//! waiting room admits in one FIFO order whichever process a client talks to.

mod support;

use std::time::{Duration, Instant};

use chrono::Utc;
use tonic::transport::{Channel, Endpoint};

use slotd::api::pb;
use slotd::api::pb::admin_service_client::AdminServiceClient;
use slotd::api::pb::booking_service_client::BookingServiceClient;
use slotd::api::pb::waiting_room_service_client::WaitingRoomServiceClient;
use support::process::Slotd;
use support::redis::RedisServer;
use support::*;

async fn connect(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

/// A date a week ahead at the post (the processes run on the real clock).
fn real_date() -> String {
    (Utc::now() + chrono::Duration::days(7))
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_on_one_redis_never_oversell_and_admit_in_one_fifo_order() {
    const SEATS: u32 = 60;
    const CLIENTS: u32 = 240;
    let redis = RedisServer::start();
    let processes: Vec<Slotd> = (0..3).map(|_| Slotd::start(0, &redis.url())).collect();
    let mut channels = Vec::new();
    for p in &processes {
        channels.push(connect(&p.addr()).await);
    }
    let date = real_date();

    // ---- the booking storm ----
    let mut ops = AdminServiceClient::new(channels[0].clone());
    ops.open_slots(admin(pb::OpenSlotsRequest {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        from_date: date.clone(),
        to_date: date.clone(),
        weekdays: (1..=7).collect(),
        first_time: "08:00".into(),
        last_time: "08:00".into(),
        seats_per_slot: SEATS,
    }))
    .await
    .unwrap();
    let paid_at = (Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    for i in 1..=CLIENTS {
        let a = applicant(i);
        AdminServiceClient::new(channels[(i % 3) as usize].clone())
            .register_receipt(admin(pb::RegisterReceiptRequest {
                receipt_number: a.receipt_number,
                passport_number: a.passport_number,
                paid_at: paid_at.clone(),
                amount: "185.00".into(),
                currency: "USD".into(),
            }))
            .await
            .unwrap();
    }
    let mut calls = Vec::new();
    for i in 1..=CLIENTS {
        let mut client = BookingServiceClient::new(channels[(i % 3) as usize].clone());
        let date = date.clone();
        calls.push(tokio::spawn(async move {
            client
                .book_appointment(book_request(
                    &format!("storm-{i}"),
                    slot(&date, "08:00"),
                    vec![applicant(i)],
                ))
                .await
                .map(|_| ())
                .map_err(|s| (s.code(), reason(&s)))
        }));
    }
    let mut booked = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(()) => booked += 1,
            Err((code, why)) => assert_eq!(
                (code, why.as_str()),
                (tonic::Code::FailedPrecondition, "SLOT_FULL")
            ),
        }
    }
    assert_eq!(
        booked, SEATS,
        "exactly the capacity is booked across three processes"
    );
    let report = AdminServiceClient::new(channels[2].clone())
        .audit_inventory(admin(pb::AuditInventoryRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: date.clone(),
            to_date: date.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(report.violations.is_empty(), "{:?}", report.violations);

    // ---- one FIFO order across the processes ----
    let room = |paused: bool| pb::WaitingRoomConfig {
        enabled: true,
        admissions_per_minute: 60_000,
        max_active_sessions: 10_000,
        session_duration_seconds: 600,
        waiter_timeout_seconds: 600,
        paused,
        gate_calendar: false,
    };
    ops.configure_waiting_room(admin(pb::ConfigureWaitingRoomRequest {
        config: Some(room(true)),
    }))
    .await
    .unwrap();
    let mut tickets = Vec::new();
    for i in 0..CLIENTS {
        let joined = WaitingRoomServiceClient::new(channels[(i % 3) as usize].clone())
            .join(pb::JoinRequest {
                client_key: format!("fifo-{i}"),
            })
            .await
            .unwrap()
            .into_inner();
        tickets.push((joined.status.unwrap().ticket_id, joined.ticket_secret));
    }
    AdminServiceClient::new(channels[1].clone())
        .configure_waiting_room(admin(pb::ConfigureWaitingRoomRequest {
            config: Some(room(false)),
        }))
        .await
        .unwrap();
    // Every process runs its own admission ticker on the shared store.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut order = Vec::new();
    for (k, (id, secret)) in tickets.iter().enumerate() {
        let mut client = WaitingRoomServiceClient::new(channels[(k + 1) % 3].clone());
        loop {
            let s = client
                .get_status(pb::GetStatusRequest {
                    ticket_id: id.clone(),
                    ticket_secret: secret.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap();
            if s.state == pb::TicketState::Admitted as i32 {
                order.push((s.ticket_number, s.admission_number));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ticket {} never admitted",
                s.ticket_number
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    order.sort();
    assert_eq!(order.len(), CLIENTS as usize);
    assert_eq!(
        order.windows(2).filter(|w| w[1].1 < w[0].1).count(),
        0,
        "admission follows join order across the three processes"
    );
    drop(processes);
}
