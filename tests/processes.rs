//! Three slotd OS processes (the real binary, each on 127.0.0.1:0) behind one address list,
//! sharing one Redis: a booking storm spread over them books exactly the capacity, and the
//! waiting room admits in one FIFO order whichever process a client talks to.

use crate::support;

use std::time::{Duration, Instant};

use slotd::api::pb;
use slotd::api::pb::admin_service_client::AdminServiceClient;
use slotd::api::pb::booking_service_client::BookingServiceClient;
use slotd::api::pb::waiting_room_service_client::WaitingRoomServiceClient;
use support::flow::{connect, open, real_date, register};
use support::process::Slotd;
use support::redis::RedisServer;
use support::*;

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
    let date = real_date(7);

    // ---- the booking storm ----
    let mut ops = AdminServiceClient::new(channels[0].clone());
    open(&channels[0], &date, "08:00", "08:00", SEATS).await;
    // Receipts registered through all three processes: they share one Redis.
    for (k, channel) in channels.iter().enumerate() {
        register(channel, (1..=CLIENTS).filter(|i| (i % 3) as usize == k)).await;
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
                client_key: client_key(&format!("fifo-{i}")),
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

/// Issue #20's reproduction with real processes: two slotd replicas on one Redis, the second
/// under `faketime -f +60s`. A hold for passport P is made on the first (hold TTL 30 s, so to
/// the second its claim has lapsed at once); the second books P on another date; then the first
/// confirms the hold. Before claims were compare-and-set both succeeded (one passport and one
/// receipt behind two BOOKED appointments); now the confirm is refused HOLD_EXPIRED. The second
/// replica's sweeper is slowed to once an hour so it cannot reclaim the hold first and hide the
/// interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_clock_a_minute_ahead_never_lets_one_passport_back_two_appointments() {
    let redis = RedisServer::start();
    let slow = [
        ("SLOTD_HOLD_TTL_SECS", "30"),
        ("SLOTD__BOOKING__SWEEP_INTERVAL_MS", "3600000"),
    ];
    let first = Slotd::start_env(0, &redis.url(), &[], &slow);
    let ahead = Slotd::start_skewed(0, &redis.url(), "+60s", &slow);
    let (one, two) = (connect(&first.addr()).await, connect(&ahead.addr()).await);
    let date = real_date(7);
    let other_date = real_date(8);
    for d in [&date, &other_date] {
        open(&one, d, "08:00", "08:00", 5).await;
    }
    register(&one, [1]).await;
    let mut ops = AdminServiceClient::new(one.clone());

    let hold = BookingServiceClient::new(one.clone())
        .hold_slot(pb::HoldSlotRequest {
            request_id: "skew-hold".into(),
            slot: Some(slot(&date, "08:00")),
            applicants: vec![applicant(1)],
        })
        .await
        .unwrap()
        .into_inner()
        .hold
        .unwrap();
    let booked = BookingServiceClient::new(two.clone())
        .book_appointment(book_request(
            "skew-book",
            slot(&other_date, "08:00"),
            vec![applicant(1)],
        ))
        .await
        .expect("to the replica a minute ahead the hold's claims have lapsed")
        .into_inner()
        .appointment
        .unwrap();
    let confirm = BookingServiceClient::new(one.clone())
        .confirm_hold(pb::ConfirmHoldRequest {
            hold_id: hold.hold_id.clone(),
            request_id: "skew-confirm".into(),
        })
        .await;
    match confirm {
        Ok(r) => panic!(
            "one passport backs two appointments: {} and {:?}",
            booked.confirmation_number,
            r.into_inner().appointment.map(|a| a.confirmation_number)
        ),
        Err(status) => assert_refused(&status, tonic::Code::FailedPrecondition, "HOLD_EXPIRED"),
    }
    // Exactly one BOOKED appointment on either date, and the passport stays taken on both
    // replicas.
    let mut live = Vec::new();
    for d in [&date, &other_date] {
        let page = ops
            .list_appointments(admin(pb::ListAppointmentsRequest {
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                date: d.to_string(),
                page_size: 100,
                page_token: String::new(),
                include_cancelled: false,
            }))
            .await
            .unwrap()
            .into_inner();
        live.extend(page.appointments.into_iter().map(|a| a.confirmation_number));
    }
    assert_eq!(live, vec![booked.confirmation_number.clone()]);
    for (channel, id) in [(&one, "skew-third-1"), (&two, "skew-third-2")] {
        let status = BookingServiceClient::new(channel.clone())
            .book_appointment(book_request(id, slot(&date, "08:00"), vec![applicant(1)]))
            .await
            .unwrap_err();
        assert!(
            ["RECEIPT_IN_USE", "APPLICANT_ALREADY_BOOKED"].contains(&reason(&status).as_str()),
            "{status:?}"
        );
    }
    drop((first, ahead));
}

/// Credentials stay private (issue #20, item 6), read from outside the real binary: hold ids
/// (plain holds and waitlist offers) and entry secrets appear neither in the event stream an
/// operator reads with WatchEvents nor in any log line; both name holds by `hold_ref`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_ids_and_entry_secrets_appear_in_no_event_and_no_log_line() {
    use tokio_stream::StreamExt;
    let redis = RedisServer::start();
    let process = Slotd::start(0, &redis.url());
    let channel = connect(&process.addr()).await;
    let date = real_date(7);
    open(&channel, &date, "08:00", "08:15", 1).await;
    register(&channel, 1..=4).await;
    let mut ops = AdminServiceClient::new(channel.clone());
    let mut booking = BookingServiceClient::new(channel.clone());
    let holder = booking.clone();
    let hold = |request_id: &'static str, time: &'static str, i: u32| {
        let mut booking = holder.clone();
        let date = date.clone();
        async move {
            booking
                .hold_slot(pb::HoldSlotRequest {
                    request_id: request_id.into(),
                    slot: Some(slot(&date, time)),
                    applicants: vec![applicant(i)],
                })
                .await
                .unwrap()
                .into_inner()
                .hold
                .unwrap()
                .hold_id
        }
    };
    let confirmed = hold("cred-h1", "08:15", 1).await;
    booking
        .confirm_hold(pb::ConfirmHoldRequest {
            hold_id: confirmed.clone(),
            request_id: "cred-confirm".into(),
        })
        .await
        .unwrap();
    let appointment = booking
        .book_appointment(book_request(
            "cred-book",
            slot(&date, "08:00"),
            vec![applicant(2)],
        ))
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    let joined = booking
        .join_waitlist(pb::JoinWaitlistRequest {
            request_id: "cred-join".into(),
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: date.clone(),
            to_date: date.clone(),
            times: Vec::new(),
            applicants: vec![applicant(3)],
            confirmation_number: String::new(),
            passport_number: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let (entry_id, secret) = (joined.entry.unwrap().entry_id, joined.entry_secret);
    booking
        .cancel_appointment(pb::CancelAppointmentRequest {
            confirmation_number: appointment.confirmation_number,
            passport_number: applicant(2).passport_number,
            request_id: "cred-cancel".into(),
        })
        .await
        .unwrap();
    let offer = booking
        .get_waitlist_entry(pb::GetWaitlistEntryRequest {
            entry_id: entry_id.clone(),
            entry_secret: secret.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap()
        .offer
        .expect("the released seat is offered")
        .hold_id;
    booking
        .release_hold(pb::ReleaseHoldRequest {
            hold_id: offer.clone(),
            request_id: "cred-decline".into(),
        })
        .await
        .unwrap();
    let released = hold("cred-h2", "08:00", 4).await;
    booking
        .release_hold(pb::ReleaseHoldRequest {
            hold_id: released.clone(),
            request_id: "cred-release".into(),
        })
        .await
        .unwrap();

    let secrets = [&confirmed, &offer, &released, &secret];
    let mut stream = ops
        .watch_events(admin(pb::WatchEventsRequest {
            after_id: "0".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut seen: Vec<pb::BookingEvent> = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event")
            .expect("stream open")
            .expect("event");
        seen.push(event);
        if seen.iter().filter(|e| e.r#type == "hold_released").count() == 2 {
            break;
        }
    }
    let kinds: Vec<&str> = seen.iter().map(|e| e.r#type.as_str()).collect();
    for kind in [
        "held",
        "booked",
        "offered",
        "offer_declined",
        "hold_released",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    for e in &seen {
        for value in e.fields.values() {
            for s in secrets {
                assert!(
                    !value.contains(s.as_str()),
                    "{} carries a credential: {e:?}",
                    e.r#type
                );
            }
        }
    }
    assert!(seen.iter().any(|e| e.fields.contains_key("hold_ref")));

    let log = process.log();
    assert!(
        log.contains("seats held") && log.contains("hold_ref"),
        "{log}"
    );
    for s in secrets {
        assert!(
            !log.contains(s.as_str()),
            "a credential is in the log:\n{log}"
        );
    }
}

/// The waiting room's Watch settings reach the binary as config keys: with
/// `waiting_room.max_watchers_per_ticket = 1` a ticket's second stream is refused, and the
/// first one hears its heartbeat at `waiting_room.watch_heartbeat_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_the_waiting_room_watch_settings() {
    use tokio_stream::StreamExt;
    let redis = RedisServer::start();
    let slotd = Slotd::start_env(
        0,
        &redis.url(),
        &[],
        &[
            ("SLOTD__WAITING_ROOM__MAX_WATCHERS_PER_TICKET", "1"),
            ("SLOTD__WAITING_ROOM__WATCH_HEARTBEAT_SECS", "1"),
            // Accepted (an unknown key would stop the binary); no bound on position messages.
            ("SLOTD__WAITING_ROOM__WATCH_POSITION_INTERVAL_MS", "0"),
        ],
    );
    let channel = connect(&slotd.addr()).await;
    AdminServiceClient::new(channel.clone())
        .configure_waiting_room(admin(pb::ConfigureWaitingRoomRequest {
            config: Some(pb::WaitingRoomConfig {
                enabled: true,
                admissions_per_minute: 60,
                max_active_sessions: 10,
                session_duration_seconds: 600,
                waiter_timeout_seconds: 60,
                paused: true,
                gate_calendar: false,
            }),
        }))
        .await
        .unwrap();
    let mut room = WaitingRoomServiceClient::new(channel);
    let joined = room
        .join(pb::JoinRequest {
            client_key: client_key("binary-watch"),
        })
        .await
        .unwrap()
        .into_inner();
    let request = || pb::WatchRequest {
        ticket_id: joined.status.clone().unwrap().ticket_id,
        ticket_secret: joined.ticket_secret.clone(),
    };
    let mut first = room.watch(request()).await.unwrap().into_inner();
    let s = room.watch(request()).await.unwrap_err();
    assert_refused(&s, tonic::Code::ResourceExhausted, "TOO_MANY_WATCHERS");
    // The first message, then heartbeats (1 s apart; the deadline is only a bound).
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(30), first.next())
            .await
            .expect("a message")
            .expect("stream open")
            .expect("status");
        assert_eq!(m.state, pb::TicketState::Waiting as i32);
    }
    drop(slotd);
}
