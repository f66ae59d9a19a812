//! Specification of the waiting room, through the real servers: two replicas sharing one room
//! store and one manual clock, each running its own admission ticker. The same bodies run on
//! every backend (see the modules at the bottom).

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use tokio_stream::StreamExt;
use tonic::{Code, Request};

use slotd::api::pb;
use slotd::app::room::WatchOptions;
use slotd::domain::clock::ManualClock;
use slotd::server::ServeOptions;
use slotd::store::room::WaitingRoomStore;
use slotd::store::Inventory;
use support::counting::CountingRoom;
use support::*;
use support::{configure_room as configure, room_config as config};

/// The Watch heartbeat of `Replicas` (see `Replicas::watch`).
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Two replicas of slotd sharing stores and a clock.
struct Replicas {
    a: TestServer,
    b: TestServer,
    clock: ManualClock,
}

impl Replicas {
    /// Replica a and b each get their own store handles (for Redis: their own connections).
    async fn start(
        a: (Arc<dyn Inventory>, Arc<dyn WaitingRoomStore>),
        b: (Arc<dyn Inventory>, Arc<dyn WaitingRoomStore>),
    ) -> Self {
        let clock = ManualClock::new(epoch());
        let a = TestServer::launch_watch(a.0, a.1, clock.clone(), Self::watch()).await;
        let b = TestServer::launch_watch(b.0, b.1, clock.clone(), Self::watch()).await;
        Self { a, b, clock }
    }

    /// Watch streams as in production but for the heartbeat (real time): every 500 ms instead
    /// of 3 s, so a test that waits for one does not wait seconds.
    fn watch() -> WatchOptions {
        WatchOptions {
            heartbeat: HEARTBEAT,
            ..WatchOptions::default()
        }
    }

    /// Waits until both replicas' tickers have run a whole tick at the current manual time.
    async fn settle(&self) {
        settle(&[&self.a, &self.b]).await;
    }

    async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
    }
}

async fn stats(server: &TestServer) -> pb::GetWaitingRoomStatsResponse {
    server
        .admin()
        .await
        .get_waiting_room_stats(admin(pb::GetWaitingRoomStatsRequest {}))
        .await
        .expect("stats")
        .into_inner()
}

struct Held {
    id: String,
    secret: String,
}

async fn join(server: &TestServer, key: &str) -> (Held, pb::TicketStatus) {
    let r = server
        .waiting_room()
        .await
        .join(pb::JoinRequest {
            client_key: client_key(key),
        })
        .await
        .expect("join")
        .into_inner();
    let status = r.status.expect("status");
    (
        Held {
            id: status.ticket_id.clone(),
            secret: r.ticket_secret,
        },
        status,
    )
}

async fn poll(server: &TestServer, held: &Held) -> pb::TicketStatus {
    server
        .waiting_room()
        .await
        .get_status(pb::GetStatusRequest {
            ticket_id: held.id.clone(),
            ticket_secret: held.secret.clone(),
        })
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status")
}

/// The statuses of many tickets `(id, secret)`, read concurrently over `channels` (in no
/// particular order: each carries its ticket number).
async fn statuses(
    channels: &[tonic::transport::Channel],
    tickets: Vec<(String, String)>,
) -> Vec<pb::TicketStatus> {
    const TASKS: usize = 50;
    let tickets = Arc::new(tickets);
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mut client = pb::waiting_room_service_client::WaitingRoomServiceClient::new(
            channels[t % channels.len()].clone(),
        );
        let tickets = tickets.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for (id, secret) in tickets.iter().skip(t).step_by(TASKS) {
                let status = client
                    .get_status(pb::GetStatusRequest {
                        ticket_id: id.clone(),
                        ticket_secret: secret.clone(),
                    })
                    .await
                    .expect("status")
                    .into_inner()
                    .status
                    .expect("status");
                seen.push(status);
            }
            seen
        }));
    }
    let mut all = Vec::with_capacity(tickets.len());
    for task in tasks {
        all.extend(task.await.expect("status reads"));
    }
    assert_eq!(all.len(), tickets.len());
    all
}

const WAITING: i32 = pb::TicketState::Waiting as i32;
const ADMITTED: i32 = pb::TicketState::Admitted as i32;

async fn a_rejoin_keeps_the_place_and_people_ahead_are_counted(r: &Replicas) {
    configure(
        &r.a,
        pb::WaitingRoomConfig {
            paused: true,
            ..config(60, 10)
        },
    )
    .await;
    let (one, s1) = join(&r.a, "client-1").await;
    let (_, s2) = join(&r.b, "client-2").await;
    let (_, s3) = join(&r.a, "client-3").await;
    assert_eq!(
        (s1.people_ahead, s2.people_ahead, s3.people_ahead),
        (0, 1, 2)
    );
    assert_eq!((s2.position, s2.state), (2, WAITING));
    assert!(s2.ticket_number > s1.ticket_number && s3.ticket_number > s2.ticket_number);
    assert_eq!(s3.estimated_wait_seconds, 2, "2 ahead at 60 per minute");
    // A refresh on the other replica: same ticket, same secret, same place.
    let (again, s2b) = join(&r.b, "client-2").await;
    assert_eq!(
        (s2b.ticket_id, s2b.ticket_number, s2b.people_ahead),
        (s2.ticket_id.clone(), s2.ticket_number, 1)
    );
    assert_eq!(poll(&r.a, &again).await.people_ahead, 1);
    // Leaving frees the place for those behind.
    r.a.waiting_room()
        .await
        .leave(pb::LeaveRequest {
            ticket_id: one.id.clone(),
            ticket_secret: one.secret.clone(),
        })
        .await
        .unwrap();
    assert_eq!(poll(&r.b, &again).await.people_ahead, 0);
    assert_eq!(stats(&r.a).await.waiting, 2);
}

async fn the_room_off_means_no_tickets_and_no_tokens_needed(r: &Replicas) {
    let status =
        r.a.waiting_room()
            .await
            .join(pb::JoinRequest {
                client_key: client_key("k"),
            })
            .await
            .unwrap_err();
    assert_refused(&status, Code::FailedPrecondition, "WAITING_ROOM_DISABLED");
    open_times(&r.a, &day(7), "08:00", "08:00", 5).await;
    register_receipts(&r.a, [1]).await;
    r.a.booking()
        .await
        .book_appointment(book_request(
            "off-1",
            slot(&day(7), "08:00"),
            vec![applicant(1)],
        ))
        .await
        .expect("no token needed while the room is off");
}

async fn a_stolen_ticket_id_without_its_secret_gets_nothing(r: &Replicas) {
    // Paused: the first tick would otherwise admit the victim (the bucket starts full).
    configure(
        &r.a,
        pb::WaitingRoomConfig {
            paused: true,
            ..config(60, 10)
        },
    )
    .await;
    let (mine, _) = join(&r.a, "victim").await;
    let (other, _) = join(&r.a, "thief").await;
    let mut client = r.b.waiting_room().await;
    for secret in ["", "guess", other.secret.as_str()] {
        let s = client
            .get_status(pb::GetStatusRequest {
                ticket_id: mine.id.clone(),
                ticket_secret: secret.into(),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(s.code(), Code::Unauthenticated | Code::InvalidArgument),
            "{s:?}"
        );
        let s = client
            .watch(pb::WatchRequest {
                ticket_id: mine.id.clone(),
                ticket_secret: secret.into(),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(s.code(), Code::Unauthenticated | Code::InvalidArgument),
            "{s:?}"
        );
        let s = client
            .leave(pb::LeaveRequest {
                ticket_id: mine.id.clone(),
                ticket_secret: secret.into(),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(s.code(), Code::Unauthenticated | Code::InvalidArgument),
            "{s:?}"
        );
    }
    let s = client
        .get_status(pb::GetStatusRequest {
            ticket_id: mine.id.clone(),
            ticket_secret: other.secret.clone(),
        })
        .await
        .unwrap_err();
    assert_refused(&s, Code::Unauthenticated, "TICKET_SECRET_INVALID");
    // The victim's place is untouched.
    assert_eq!(poll(&r.a, &mine).await.state, WAITING);
}

/// One admission, one booking: the same token sent 8 times at the same instant (each for
/// another applicant with a paid receipt) books at most once; the others are told the token is
/// in use (ABORTED) or spent (PERMISSION_DENIED). Five rounds, on both replicas at once.
async fn one_admission_books_once_even_when_its_token_is_sent_many_times_at_once(r: &Replicas) {
    let date = day(7);
    open_times(&r.a, &date, "08:00", "08:00", 100).await;
    register_receipts(&r.a, 1..=40).await;
    configure(&r.a, config(600, 10)).await;
    for round in 0..5u32 {
        let (held, _) = join(&r.a, &format!("burst-{round}")).await;
        r.settle().await;
        let admitted = poll(&r.a, &held).await;
        assert_eq!(admitted.state, ADMITTED);
        let token = admitted.admission_token;
        let mut calls = Vec::new();
        for i in 0..8u32 {
            let server = if i % 2 == 0 { &r.a } else { &r.b };
            let mut booking = server.booking().await;
            let request = with_token(
                book_request(
                    &format!("burst-{round}-{i}"),
                    slot(&date, "08:00"),
                    vec![applicant(round * 8 + i + 1)],
                ),
                &token,
            );
            calls.push(tokio::spawn(async move {
                booking.book_appointment(request).await
            }));
        }
        let mut booked = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(_) => booked += 1,
                Err(s) => assert!(
                    matches!(
                        (s.code(), reason(&s).as_str()),
                        (Code::Aborted, "ADMISSION_IN_USE")
                            | (Code::PermissionDenied, "ADMISSION_REVOKED")
                    ),
                    "{s:?}"
                ),
            }
        }
        assert_eq!(
            booked, 1,
            "round {round}: one admission booked {booked} times"
        );
    }
    assert_audit_clean(&r.a, &date).await;
}

async fn admission_tokens_gate_booking_and_bad_ones_change_nothing(r: &Replicas) {
    let date = day(7);
    open_times(&r.a, &date, "08:00", "08:00", 5).await;
    register_receipts(&r.a, [1, 2]).await;
    configure(&r.a, config(600, 10)).await;
    let (held, _) = join(&r.a, "booker").await;
    r.settle().await;
    let admitted = poll(&r.b, &held).await;
    assert_eq!(admitted.state, ADMITTED);
    let token = admitted.admission_token.clone();
    assert!(!token.is_empty());
    let mut booking = r.b.booking().await;
    let request = book_request("gate-1", slot(&date, "08:00"), vec![applicant(1)]);

    let s = booking.book_appointment(request.clone()).await.unwrap_err();
    assert_refused(&s, Code::Unauthenticated, "ADMISSION_REQUIRED");
    for bad in [
        "garbage",
        "a.b",
        &format!("{token}x"),
        &token.replace('.', ""),
    ] {
        let s = booking
            .book_appointment(with_token(request.clone(), bad))
            .await
            .unwrap_err();
        assert_refused(&s, Code::Unauthenticated, "ADMISSION_INVALID");
    }
    // A token signed with another key.
    let foreign =
        slotd::domain::admission::AdmissionKeys::new("some-other-key-some-other-key-0123")
            .unwrap()
            .mint(
                &slotd::domain::room::TicketId::parse(&held.id).unwrap(),
                &slotd::domain::room::ClientKey::parse(&client_key("booker")).unwrap(),
                epoch() + ChronoDuration::hours(1),
                epoch(),
            );
    let s = booking
        .book_appointment(with_token(request.clone(), &foreign))
        .await
        .unwrap_err();
    assert_refused(&s, Code::Unauthenticated, "ADMISSION_INVALID");
    assert_eq!(
        seats_left(&r.a, &date, "08:00").await,
        5,
        "refusals change nothing"
    );

    // The real token books once; the session then ends and the token is spent.
    booking
        .book_appointment(with_token(request, &token))
        .await
        .expect("admitted booking");
    assert_eq!(
        poll(&r.a, &held).await.state,
        pb::TicketState::Completed as i32
    );
    let again = book_request("gate-2", slot(&date, "08:00"), vec![applicant(2)]);
    let s = booking
        .book_appointment(with_token(again.clone(), &token))
        .await
        .unwrap_err();
    assert_refused(&s, Code::PermissionDenied, "ADMISSION_REVOKED");

    // An operator revokes a session; an expired token is refused as expired.
    let (second, _) = join(&r.a, "second").await;
    r.settle().await;
    let token2 = poll(&r.a, &second).await.admission_token;
    r.a.admin()
        .await
        .revoke_admission(admin(pb::RevokeAdmissionRequest {
            ticket_id: second.id.clone(),
        }))
        .await
        .unwrap();
    let s = booking
        .book_appointment(with_token(again.clone(), &token2))
        .await
        .unwrap_err();
    assert_refused(&s, Code::PermissionDenied, "ADMISSION_REVOKED");
    let (third, _) = join(&r.a, "third").await;
    r.settle().await;
    let token3 = poll(&r.a, &third).await.admission_token;
    for _ in 0..301 {
        r.clock.advance(ChronoDuration::seconds(2));
    }
    let s = booking
        .book_appointment(with_token(again, &token3))
        .await
        .unwrap_err();
    assert_refused(&s, Code::Unauthenticated, "ADMISSION_EXPIRED");
    assert_eq!(seats_left(&r.a, &date, "08:00").await, 4);
    assert_audit_clean(&r.a, &date).await;
}

async fn a_streaming_watcher_receives_its_token_without_polling(r: &Replicas) {
    configure(
        &r.a,
        pb::WaitingRoomConfig {
            paused: true,
            ..config(600, 10)
        },
    )
    .await;
    let (held, _) = join(&r.a, "watcher").await;
    let mut stream =
        r.b.waiting_room()
            .await
            .watch(pb::WatchRequest {
                ticket_id: held.id.clone(),
                ticket_secret: held.secret.clone(),
            })
            .await
            .unwrap()
            .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.state, WAITING);
    // A heartbeat arrives (every HEARTBEAT) even though nothing changes. The deadlines are
    // generous bounds for a loaded machine, not the promise.
    let beat = tokio::time::timeout(HEARTBEAT * 60, stream.next())
        .await
        .expect("heartbeat")
        .unwrap()
        .unwrap();
    assert_eq!(beat.state, WAITING);
    configure(&r.a, config(600, 10)).await;
    let admitted = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let s = stream.next().await.expect("stream open").expect("status");
            if s.state != WAITING {
                return s;
            }
        }
    })
    .await
    .expect("admitted within seconds");
    assert_eq!(admitted.state, ADMITTED);
    assert!(!admitted.admission_token.is_empty());
    assert!(
        stream.next().await.is_none(),
        "the stream ends after admission"
    );
}

async fn abandoned_tickets_are_skipped_and_not_counted(r: &Replicas) {
    configure(
        &r.a,
        pb::WaitingRoomConfig {
            paused: true,
            waiter_timeout_seconds: 10,
            ..config(60, 10)
        },
    )
    .await;
    let (first, _) = join(&r.a, "stays-1").await;
    let (gone, _) = join(&r.a, "abandons").await;
    let (last, _) = join(&r.b, "stays-2").await;
    // 12 seconds pass in 2-second steps, past the 10-second waiter timeout (a gap over 3 s
    // would read as a store outage, which costs nobody the place); the abandoner never polls
    // again.
    for _ in 0..6 {
        r.clock.advance(ChronoDuration::seconds(2));
        poll(&r.a, &first).await;
        poll(&r.b, &last).await;
        r.settle().await;
    }
    let s = stats(&r.a).await;
    assert_eq!((s.waiting, s.expired_total), (2, 1));
    assert_eq!(poll(&r.a, &last).await.people_ahead, 1);
    configure(
        &r.a,
        pb::WaitingRoomConfig {
            waiter_timeout_seconds: 10,
            ..config(60, 10)
        },
    )
    .await;
    r.clock.advance(ChronoDuration::seconds(1));
    r.settle().await;
    r.clock.advance(ChronoDuration::seconds(1));
    r.settle().await;
    assert_eq!(poll(&r.a, &first).await.admission_number, 1);
    assert_eq!(
        poll(&r.b, &last).await.admission_number,
        2,
        "the abandoned place did not stall the line"
    );
    let s =
        r.a.waiting_room()
            .await
            .get_status(pb::GetStatusRequest {
                ticket_id: gone.id.clone(),
                ticket_secret: gone.secret.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
    assert_eq!(s.state, pb::TicketState::Expired as i32);
}

/// The client key is the one credential that rejoins a place (and so gets its ticket secret,
/// its token and the power to leave): a guessable one is refused, and the store keeps only a
/// keyed digest of it, so reading the store (or an admission token) does not give it away.
async fn a_guessable_client_key_is_refused_and_the_store_never_holds_the_key(r: &Replicas) {
    configure(
        &r.a,
        pb::WaitingRoomConfig {
            paused: true,
            ..config(60, 10)
        },
    )
    .await;
    let mut client = r.b.waiting_room().await;
    for guessable in [
        "4471-2290-0183",
        "R000000000000000000000123",
        "receipt-2030-000123",
    ] {
        let s = client
            .join(pb::JoinRequest {
                client_key: guessable.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&s), vec!["client_key"], "{guessable}: {s:?}");
    }
    assert_eq!(stats(&r.a).await.last_ticket_number, 0, "nothing joined");
    let key = "Zr8-fQ2_xL0pVb7KmN4tYc9wJ1s";
    let joined = client
        .join(pb::JoinRequest {
            client_key: key.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let id = joined.status.unwrap().ticket_id;
    let ticket = slotd::domain::room::TicketId::parse(&id).unwrap();
    let stored = r.a.room.status(&ticket, epoch()).await.unwrap().client_key;
    assert!(
        !stored.as_str().contains(key) && stored.as_str().len() >= 22,
        "the store holds {stored}"
    );
    // The holder's refresh on the other replica still finds the place.
    let again =
        r.a.waiting_room()
            .await
            .join(pb::JoinRequest {
                client_key: key.into(),
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(
        (again.status.unwrap().ticket_id, again.ticket_secret),
        (id, joined.ticket_secret)
    );
}

async fn invalid_room_settings_are_refused_by_field(r: &Replicas) {
    let bad = pb::WaitingRoomConfig {
        admissions_per_minute: 0,
        session_duration_seconds: 5,
        ..config(60, 10)
    };
    let s =
        r.a.admin()
            .await
            .configure_waiting_room(admin(pb::ConfigureWaitingRoomRequest { config: Some(bad) }))
            .await
            .unwrap_err();
    assert_eq!(
        bad_fields(&s),
        vec![
            "config.admissions_per_minute",
            "config.session_duration_seconds"
        ]
    );
    let s =
        r.a.admin()
            .await
            .configure_waiting_room(Request::new(pb::ConfigureWaitingRoomRequest {
                config: Some(config(60, 10)),
            }))
            .await
            .unwrap_err();
    assert_refused(&s, Code::Unauthenticated, "UNAUTHENTICATED");
    assert!(
        !stats(&r.a).await.config.unwrap().enabled,
        "nothing changed"
    );
    let s =
        r.a.waiting_room()
            .await
            .join(pb::JoinRequest {
                client_key: "bad key".into(),
            })
            .await
            .unwrap_err();
    assert_eq!(bad_fields(&s), vec!["client_key"]);
}

/// 3,000 joins from many tasks through both replicas; every ticket keeps polling. Admissions
/// follow join order exactly, never faster than the rate (burst + rate × t), never above the cap.
async fn three_thousand_joins_are_admitted_in_join_order_within_rate_and_cap(r: &Replicas) {
    const N: usize = 3_000;
    const RATE: u32 = 18_000; // 300 per second, burst 300
    const CAP: u64 = 1_500;
    configure(
        &r.a,
        pb::WaitingRoomConfig {
            paused: true,
            session_duration_seconds: 30,
            waiter_timeout_seconds: 600,
            ..config(RATE, CAP as u32)
        },
    )
    .await;
    let channels = [
        r.a.channel().await,
        r.b.channel().await,
        r.a.channel().await,
        r.b.channel().await,
    ];
    let mut tasks = Vec::new();
    for t in 0..50 {
        let channel = channels[t % channels.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut client =
                pb::waiting_room_service_client::WaitingRoomServiceClient::new(channel);
            let mut held = Vec::new();
            for i in (t..N).step_by(50) {
                let r = client
                    .join(pb::JoinRequest {
                        client_key: client_key(&format!("fair-{i}")),
                    })
                    .await
                    .expect("join")
                    .into_inner();
                let s = r.status.expect("status");
                held.push((s.ticket_id, r.ticket_secret, s.ticket_number));
            }
            held
        }));
    }
    let mut tickets = Vec::new();
    for t in tasks {
        tickets.extend(t.await.unwrap());
    }
    assert_eq!(tickets.len(), N);
    configure(
        &r.a,
        pb::WaitingRoomConfig {
            session_duration_seconds: 30,
            waiter_timeout_seconds: 600,
            ..config(RATE, CAP as u32)
        },
    )
    .await;

    let burst = 300u64;
    let mut elapsed = 0u64;
    loop {
        r.settle().await;
        let s = stats(&r.b).await;
        assert!(s.active <= CAP, "cap exceeded: {} active", s.active);
        assert!(
            s.admitted_total <= burst + 300 * elapsed,
            "rate exceeded: {} admitted after {elapsed}s",
            s.admitted_total
        );
        if s.admitted_total == N as u64 {
            break;
        }
        assert!(elapsed < 120, "stalled: {s:?}");
        // While the cap holds the line nothing moves until sessions end: skip ahead.
        let step = if s.active >= CAP { 5 } else { 1 };
        r.clock.advance(ChronoDuration::seconds(step));
        elapsed += step as u64;
    }

    // Admission order equals join order: zero inversions.
    let ids: Vec<(String, String)> = tickets
        .iter()
        .map(|(id, secret, _)| (id.clone(), secret.clone()))
        .collect();
    let mut admitted: Vec<(u64, u64)> = Vec::with_capacity(N);
    for s in statuses(&channels, ids).await {
        assert_ne!(
            s.admission_number, 0,
            "ticket {} never admitted",
            s.ticket_number
        );
        admitted.push((s.ticket_number, s.admission_number));
    }
    admitted.sort();
    let inversions = admitted.windows(2).filter(|w| w[1].1 < w[0].1).count();
    assert_eq!(inversions, 0);
    let distinct: HashMap<u64, u64> = admitted.iter().map(|(n, a)| (*a, *n)).collect();
    assert_eq!(distinct.len(), N, "admission numbers are unique");
}

async fn calendar_reads_are_gated_only_when_the_operator_says_so(r: &Replicas) {
    let date = day(7);
    open_times(&r.a, &date, "08:00", "08:00", 5).await;
    let list = || pb::ListSlotsRequest {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        date: date.clone(),
    };
    configure(&r.a, config(600, 10)).await;
    r.settle().await;
    r.b.calendar()
        .await
        .list_slots(list())
        .await
        .expect("calendar open while not gated");
    configure(
        &r.a,
        pb::WaitingRoomConfig {
            gate_calendar: true,
            ..config(600, 10)
        },
    )
    .await;
    r.settle().await;
    let s = r.b.calendar().await.list_slots(list()).await.unwrap_err();
    assert_refused(&s, Code::Unauthenticated, "ADMISSION_REQUIRED");
    let (held, _) = join(&r.a, "browser").await;
    r.settle().await;
    let token = poll(&r.a, &held).await.admission_token;
    let slots =
        r.b.calendar()
            .await
            .list_slots(with_token(list(), &token))
            .await
            .unwrap()
            .into_inner()
            .slots;
    assert_eq!(slots.len(), 1);
}

/// Runs a case on two replicas of one backend, each with its own store and room handles
/// (`backend_matrix!`, tests/support/backend.rs).
async fn on_replicas(backend: support::backend::Backend, case: impl AsyncFnOnce(&Replicas)) {
    let r = Replicas::start(
        (backend.store(), backend.room()),
        (backend.store(), backend.room()),
    )
    .await;
    case(&r).await;
    r.stop().await;
}

backend_matrix!(
    on_replicas;
    a_guessable_client_key_is_refused_and_the_store_never_holds_the_key,
    one_admission_books_once_even_when_its_token_is_sent_many_times_at_once,
    a_rejoin_keeps_the_place_and_people_ahead_are_counted,
    the_room_off_means_no_tickets_and_no_tokens_needed,
    a_stolen_ticket_id_without_its_secret_gets_nothing,
    admission_tokens_gate_booking_and_bad_ones_change_nothing,
    a_streaming_watcher_receives_its_token_without_polling,
    abandoned_tickets_are_skipped_and_not_counted,
    invalid_room_settings_are_refused_by_field,
    three_thousand_joins_are_admitted_in_join_order_within_rate_and_cap,
    calendar_reads_are_gated_only_when_the_operator_says_so,
);

/// Redis down: the room fails closed (UNAVAILABLE, nobody admitted, no booking through a token),
/// and when Redis returns nobody has lost a place, even after an outage longer than the waiter
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_and_keeps_every_place() {
    let mut redis = support::redis::RedisServer::start();
    let store: Arc<dyn Inventory> = redis.store();
    let room: Arc<dyn WaitingRoomStore> = redis.room();
    let r = Replicas::start((store.clone(), room.clone()), (redis.store(), redis.room())).await;
    let date = day(7);
    open_times(&r.a, &date, "08:00", "08:00", 5).await;
    register_receipts(&r.a, [1]).await;
    configure(
        &r.a,
        pb::WaitingRoomConfig {
            paused: true,
            ..config(60, 10)
        },
    )
    .await;
    let (first, _) = join(&r.a, "before-1").await;
    let (second, _) = join(&r.b, "before-2").await;

    redis.stop();
    let s =
        r.a.waiting_room()
            .await
            .join(pb::JoinRequest {
                client_key: client_key("during"),
            })
            .await
            .unwrap_err();
    assert_refused(&s, Code::Unavailable, "STORE_UNAVAILABLE");
    let s =
        r.b.waiting_room()
            .await
            .get_status(pb::GetStatusRequest {
                ticket_id: first.id.clone(),
                ticket_secret: first.secret.clone(),
            })
            .await
            .unwrap_err();
    assert_refused(&s, Code::Unavailable, "STORE_UNAVAILABLE");
    // A valid-looking token cannot book while the room cannot confirm its session.
    let token = slotd::domain::admission::AdmissionKeys::new(ADMISSION_KEY)
        .unwrap()
        .mint(
            &slotd::domain::room::TicketId::parse(&second.id).unwrap(),
            &slotd::domain::room::ClientKey::parse(&client_key("before-2")).unwrap(),
            epoch() + ChronoDuration::hours(1),
            epoch(),
        );
    let s =
        r.a.booking()
            .await
            .book_appointment(with_token(
                book_request("down-1", slot(&date, "08:00"), vec![applicant(1)]),
                &token,
            ))
            .await
            .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    // Two minutes pass (twice the waiter timeout) while nobody can heartbeat.
    for _ in 0..60 {
        r.clock.advance(ChronoDuration::seconds(2));
    }
    r.settle().await;

    redis.restart();
    r.settle().await;
    r.settle().await;
    let s1 = poll(&r.a, &first).await;
    let s2 = poll(&r.b, &second).await;
    assert_eq!(
        (s1.state, s1.people_ahead),
        (WAITING, 0),
        "first keeps its place"
    );
    assert_eq!(
        (s2.state, s2.people_ahead),
        (WAITING, 1),
        "second keeps its place"
    );
    // Admission resumes in order.
    configure(&r.a, config(60, 10)).await;
    r.clock.advance(ChronoDuration::seconds(1));
    r.settle().await;
    assert_eq!(poll(&r.a, &first).await.state, ADMITTED);
    r.stop().await;
}

/// Three slotd replicas sharing one Redis (each with its own connections and admission ticker):
/// 3,000 joins spread over the three are admitted in exact join order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_redis_admit_in_one_fifo_order() {
    const N: usize = 3_000;
    let redis = support::redis::tenant();
    let clock = ManualClock::new(epoch());
    let mut servers = Vec::new();
    for _ in 0..3 {
        let store: Arc<dyn Inventory> = redis.store();
        let room: Arc<dyn WaitingRoomStore> = redis.room();
        servers.push(TestServer::launch(store, room, clock.clone(), ServeOptions::default()).await);
    }
    let paused = pb::WaitingRoomConfig {
        paused: true,
        waiter_timeout_seconds: 600,
        ..config(60_000, 10_000)
    };
    configure(&servers[0], paused).await;
    let mut tasks = Vec::new();
    for t in 0..30 {
        let channel = servers[t % 3].channel().await;
        tasks.push(tokio::spawn(async move {
            let mut client =
                pb::waiting_room_service_client::WaitingRoomServiceClient::new(channel);
            let mut held = Vec::new();
            for i in (t..N).step_by(30) {
                let r = client
                    .join(pb::JoinRequest {
                        client_key: client_key(&format!("three-{i}")),
                    })
                    .await
                    .expect("join")
                    .into_inner();
                held.push((r.status.expect("status").ticket_id, r.ticket_secret));
            }
            held
        }));
    }
    let mut tickets = Vec::new();
    for t in tasks {
        tickets.extend(t.await.expect("joins"));
    }
    configure(
        &servers[1],
        pb::WaitingRoomConfig {
            paused: false,
            ..paused
        },
    )
    .await;
    for _ in 0..10 {
        settle(&servers.iter().collect::<Vec<_>>()).await;
        if stats(&servers[2]).await.admitted_total == N as u64 {
            break;
        }
        clock.advance(ChronoDuration::seconds(1));
    }
    // Read back through all three replicas.
    let mut channels = Vec::new();
    for server in &servers {
        channels.push(server.channel().await);
    }
    let mut order = Vec::new();
    for s in statuses(&channels, tickets).await {
        assert_eq!(s.state, ADMITTED, "ticket {} admitted", s.ticket_number);
        order.push((s.ticket_number, s.admission_number));
    }
    order.sort();
    assert_eq!(
        order.windows(2).filter(|w| w[1].1 < w[0].1).count(),
        0,
        "zero inversions"
    );
    for s in servers {
        s.stop().await;
    }
}

/// Polls `done` every 50 ms for up to 60 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

/// Every message each watched ticket (by ticket number) received, in order.
type Inbox = Arc<std::sync::Mutex<HashMap<u64, Vec<pb::TicketStatus>>>>;

/// Opens one Watch stream per ticket, spread over `channels`, each read by a task into `inbox`.
async fn watch_all(
    channels: &[tonic::transport::Channel],
    tickets: &[(Held, u64)],
    inbox: &Inbox,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut readers = Vec::new();
    for (i, (held, number)) in tickets.iter().enumerate() {
        let mut client = pb::waiting_room_service_client::WaitingRoomServiceClient::new(
            channels[i % channels.len()].clone(),
        );
        let mut stream = client
            .watch(pb::WatchRequest {
                ticket_id: held.id.clone(),
                ticket_secret: held.secret.clone(),
            })
            .await
            .expect("watch")
            .into_inner();
        let inbox = inbox.clone();
        let number = *number;
        readers.push(tokio::spawn(async move {
            while let Some(Ok(s)) = stream.next().await {
                inbox.lock().unwrap().entry(number).or_default().push(s);
            }
        }));
    }
    readers
}

async fn join_many(server: &TestServer, prefix: &str, n: usize) -> Vec<(Held, u64)> {
    let mut client = server.waiting_room().await;
    let mut tickets = Vec::with_capacity(n);
    for i in 0..n {
        let r = client
            .join(pb::JoinRequest {
                client_key: client_key(&format!("{prefix}-{i}")),
            })
            .await
            .expect("join")
            .into_inner();
        let s = r.status.expect("status");
        tickets.push((
            Held {
                id: s.ticket_id,
                secret: r.ticket_secret,
            },
            s.ticket_number,
        ));
    }
    tickets
}

/// The cost model (#14.6): 2,000 Watch streams on one replica cost the store nothing of their
/// own. Counted through the store seam, a tick is one store call (`tick`: the settings, the
/// admission step when the lease is due, and the sync), whatever the number of streams; an
/// admission step sends messages only to the streams whose state changed (admitted) or whose
/// position moved by the configured step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_watchers_cost_a_bounded_number_of_store_calls_per_tick() {
    const N: usize = 2_000;
    let counting = CountingRoom::new(Arc::new(
        slotd::store::memory::room::MemoryWaitingRoom::new(),
    ));
    let room: Arc<dyn WaitingRoomStore> = counting.clone();
    let clock = ManualClock::new(epoch());
    let server = TestServer::launch_watch(
        Arc::new(slotd::store::memory::MemoryStore::new()),
        room,
        clock,
        slotd::app::room::WatchOptions {
            heartbeat: Duration::from_secs(300),
            position_step_percent: 50,
            position_interval: Duration::ZERO,
            max_watchers_per_ticket: 4,
        },
    )
    .await;
    // 300 a minute: the full bucket admits 5 at the first unpaused step, then (the manual clock
    // standing still) nobody more.
    let paused = pb::WaitingRoomConfig {
        paused: true,
        waiter_timeout_seconds: 600,
        ..config(300, 10_000)
    };
    configure(&server, paused).await;
    let tickets = join_many(&server, "cost", N).await;
    assert_eq!(
        tickets.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        (1..=N as u64).collect::<Vec<_>>()
    );
    // max_concurrent_streams is 256: eight connections of 250 streams.
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(server.channel().await);
    }
    let inbox: Inbox = Arc::default();
    let readers = watch_all(&channels, &tickets, &inbox).await;
    eventually("every stream got its first message", || {
        inbox.lock().unwrap().len() == N
    })
    .await;
    let opened = counting.take();
    assert_eq!(
        opened.get("status").copied(),
        Some(N as u64),
        "one read per stream opened: {opened:?}"
    );

    // Steady state: nothing moves. Ten ticks and more, no per-stream call, no message.
    let before: usize = inbox.lock().unwrap().values().map(Vec::len).sum();
    // Counted, not timed: a slow machine runs the same ten ticks, only later.
    let begun = server.room_calls.ticks_begun();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.room_calls.ticks_begun() < begun + 11 {
        assert!(std::time::Instant::now() < deadline, "the ticker stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls = counting.take();
    let ticks = calls.get("tick").copied().unwrap_or(0);
    assert!(ticks >= 9, "the ticker ran: {calls:?}");
    for (method, n) in &calls {
        match *method {
            // One store call per tick; `step` counts the ticks that stepped (a lone replica
            // steps at most at every tick).
            "tick" => {}
            "step" => assert!(*n <= ticks, "{n} steps in {ticks} ticks ({calls:?})"),
            other => panic!("{other} called {n} times by idle watchers: {calls:?}"),
        }
    }
    let after: usize = inbox.lock().unwrap().values().map(Vec::len).sum();
    assert_eq!(after, before, "no message while nothing moves");

    // One admission step: 5 admitted.
    configure(
        &server,
        pb::WaitingRoomConfig {
            paused: false,
            ..paused
        },
    )
    .await;
    counting.take();
    eventually("the five admitted got their tokens", || {
        let inbox = inbox.lock().unwrap();
        (1..=5).all(|n| {
            inbox[&n]
                .last()
                .is_some_and(|s| s.state == ADMITTED && !s.admission_token.is_empty())
        })
    })
    .await;
    server.next_tick().await;
    server.next_tick().await;
    let calls = counting.take();
    let ticks = calls.get("tick").copied().unwrap_or(0);
    assert!(ticks >= 1, "the ticker ran: {calls:?}");
    for (method, n) in &calls {
        match *method {
            "tick" => {}
            "step" => assert!(*n <= ticks, "{n} steps in {ticks} ticks ({calls:?})"),
            other => panic!("{other} called {n} times during an admission: {calls:?}"),
        }
    }
    check_admission_messages(&inbox.lock().unwrap());
    for r in readers {
        r.abort();
    }
    drop(channels);
    server.stop().await;
}

/// Who heard what after one admission step of five (see the test above).
fn check_admission_messages(inbox: &HashMap<u64, Vec<pb::TicketStatus>>) {
    let mut told: Vec<u64> = inbox
        .iter()
        .filter(|(_, got)| got.len() > 1)
        .map(|(n, _)| *n)
        .collect();
    told.sort_unstable();
    // 1-5 admitted; 6-11 had 5-10 ahead, now 0-5: moved by at least half. Everyone else: no
    // message at all.
    assert_eq!(told, (1..=11).collect::<Vec<_>>());
    for n in 1..=5u64 {
        assert_eq!(
            inbox[&n].len(),
            2,
            "ticket {n}: first status, then admitted"
        );
        assert_eq!(inbox[&n][1].admission_number, n);
    }
    for n in 6..=11u64 {
        let got = &inbox[&n];
        assert_eq!(got.len(), 2, "ticket {n}: {got:?}");
        assert_eq!((got[1].state, got[1].people_ahead), (WAITING, n - 6));
    }
}

/// Watchers' positions are derived in memory from the room's events, yet exact: after people
/// ahead leave, expire and are admitted (through another replica), every watcher's last
/// message equals what GetStatus (one exact count in the store) says.
async fn watched_positions_are_exact(
    a: (Arc<dyn Inventory>, Arc<dyn WaitingRoomStore>),
    b: (Arc<dyn Inventory>, Arc<dyn WaitingRoomStore>),
) {
    let clock = ManualClock::new(epoch());
    let every_change = slotd::app::room::WatchOptions {
        heartbeat: Duration::from_secs(300),
        position_step_percent: 0,
        position_interval: Duration::ZERO,
        max_watchers_per_ticket: 2,
    };
    let ra = TestServer::launch_watch(a.0, a.1, clock.clone(), every_change).await;
    let rb = TestServer::launch_watch(b.0, b.1, clock.clone(), every_change).await;
    let paused = pb::WaitingRoomConfig {
        paused: true,
        ..config(120, 100)
    };
    configure(&ra, paused).await;
    let tickets = join_many(&rb, "exact", 60).await;
    let channels = vec![ra.channel().await];
    // Watch the even numbers on replica a; the odd ones come and go through replica b.
    let watched: Vec<(Held, u64)> = tickets
        .iter()
        .filter(|(_, n)| n % 2 == 0)
        .map(|(h, n)| {
            (
                Held {
                    id: h.id.clone(),
                    secret: h.secret.clone(),
                },
                *n,
            )
        })
        .collect();
    let inbox: Inbox = Arc::default();
    let readers = watch_all(&channels, &watched, &inbox).await;
    // A second stream of one ticket is fine; a third is refused on this replica.
    let mut client = ra.waiting_room().await;
    let (extra, _) = &watched[0];
    let request = || pb::WatchRequest {
        ticket_id: extra.id.clone(),
        ticket_secret: extra.secret.clone(),
    };
    let _second = client.watch(request()).await.expect("second watcher");
    let s = client.watch(request()).await.unwrap_err();
    assert_refused(&s, Code::ResourceExhausted, "TOO_MANY_WATCHERS");
    // Odd tickets 1-19 leave through b; 21-39 fall silent and expire (the watched keep their
    // place: replica a heartbeats them); then two seconds of admissions.
    let mut b_client = rb.waiting_room().await;
    for (held, n) in &tickets {
        if n % 2 == 1 && *n < 20 {
            b_client
                .leave(pb::LeaveRequest {
                    ticket_id: held.id.clone(),
                    ticket_secret: held.secret.clone(),
                })
                .await
                .expect("leave");
        }
    }
    configure(
        &ra,
        pb::WaitingRoomConfig {
            waiter_timeout_seconds: 5,
            ..paused
        },
    )
    .await;
    for _ in 0..4 {
        clock.advance(ChronoDuration::seconds(2));
        for (held, n) in &tickets {
            if n % 2 == 1 && *n > 40 {
                poll(&rb, held).await;
            }
        }
        settle(&[&ra, &rb]).await;
    }
    configure(
        &ra,
        pb::WaitingRoomConfig {
            waiter_timeout_seconds: 5,
            paused: false,
            ..paused
        },
    )
    .await;
    for _ in 0..2 {
        clock.advance(ChronoDuration::seconds(1));
        for (held, n) in &tickets {
            if n % 2 == 1 && *n > 40 {
                poll(&rb, held).await;
            }
        }
        settle(&[&ra, &rb]).await;
    }
    configure(
        &ra,
        pb::WaitingRoomConfig {
            waiter_timeout_seconds: 5,
            ..paused
        },
    )
    .await;
    settle(&[&ra, &rb]).await;
    settle(&[&ra, &rb]).await;
    let mut checked = 0;
    for (held, n) in &watched {
        let truth = poll(&rb, held).await;
        let ok = || {
            let inbox = inbox.lock().unwrap();
            inbox.get(n).and_then(|got| got.last()).is_some_and(|last| {
                (last.state, last.people_ahead, last.admission_number)
                    == (truth.state, truth.people_ahead, truth.admission_number)
            })
        };
        eventually(&format!("ticket {n}: watcher agrees with {truth:?}"), ok).await;
        checked += usize::from(truth.state == WAITING && truth.people_ahead > 0);
    }
    assert!(checked > 5, "some watchers still wait with people ahead");
    let s = stats(&ra).await;
    assert!(s.expired_total >= 10, "the silent ones expired: {s:?}");
    for r in readers {
        r.abort();
    }
    drop((channels, client, b_client, _second));
    ra.stop().await;
    rb.stop().await;
}

type Handles = (Arc<dyn Inventory>, Arc<dyn WaitingRoomStore>);

/// Hands a case the store and room handles of two replicas (`backend_matrix!`).
async fn on_handles(backend: support::backend::Backend, case: impl AsyncFnOnce(Handles, Handles)) {
    case(
        (backend.store(), backend.room()),
        (backend.store(), backend.room()),
    )
    .await;
}

mod positions {
    use super::*;
    backend_matrix!(on_handles; watched_positions_are_exact);
}

/// A join flood that falls silent cannot turn one admission step into one long script: each
/// step drops at most `EXPIRE_PER_STEP` silent waiters, and a silent waiter the bound has not
/// reached yet is dropped, never admitted, when its turn comes.
async fn silent_waiters_are_dropped_in_bounded_steps_and_never_admitted(
    room: Arc<dyn WaitingRoomStore>,
) {
    use slotd::domain::room::{ClientKey, RoomConfig, TicketId, TicketState, EXPIRE_PER_STEP};
    const SILENT: usize = 2_500;
    let t0 = epoch();
    let at = |s: i64| t0 + ChronoDuration::seconds(s);
    let paused = RoomConfig {
        enabled: true,
        paused: true,
        admissions_per_minute: 60_000,
        max_active_sessions: 10_000,
        waiter_timeout_secs: 60,
        ..RoomConfig::default()
    };
    room.configure(&paused, t0).await.unwrap();
    for i in 0..SILENT {
        let key = ClientKey::parse(&format!("flood-{i}.Kq7xZ2pLm9TvW4rN8sYb3c")).unwrap();
        room.join(&key, &TicketId::generate(), t0).await.unwrap();
    }
    // One that keeps polling, behind the silent ones.
    let key = ClientKey::parse("stays.Kq7xZ2pLm9TvW4rN8sYb3c").unwrap();
    let stays = room.join(&key, &TicketId::generate(), t0).await.unwrap().id;
    // Steps every 2 s (no outage) up to the timeout: nobody silent for 60 s yet.
    for s in (0..60).step_by(2) {
        room.status(&stays, at(s)).await.unwrap();
        room.advance(at(s)).await.unwrap();
    }
    assert_eq!(room.stats(at(58)).await.unwrap().expired_total, 0);
    room.status(&stays, at(60)).await.unwrap();
    room.advance(at(60)).await.unwrap();
    let s = room.stats(at(60)).await.unwrap();
    assert_eq!(
        (s.expired_total, s.waiting),
        (
            EXPIRE_PER_STEP as u64,
            (SILENT - EXPIRE_PER_STEP + 1) as u64
        ),
        "one step drops at most {EXPIRE_PER_STEP}"
    );
    // Unpaused: 1,500 silent still ahead of `stays`; this step drops 1,000 more by the bound
    // and the admission skips (drops) the other 500 instead of letting them in.
    room.configure(
        &RoomConfig {
            paused: false,
            ..paused
        },
        at(62),
    )
    .await
    .unwrap();
    room.status(&stays, at(62)).await.unwrap();
    room.advance(at(62)).await.unwrap();
    let s = room.stats(at(62)).await.unwrap();
    assert_eq!((s.admitted_total, s.expired_total), (1, SILENT as u64));
    let v = room.status(&stays, at(62)).await.unwrap();
    assert_eq!((v.state, v.admission_number), (TicketState::Admitted, 1));
}

/// Silent waiters dropped by one step leave the line (and enter the event log) in the order
/// they fell silent, the oldest heartbeat first, on every backend alike (the embedded store
/// used ticket number order, Redis heartbeat order: the differential test's D3).
async fn silent_waiters_leave_in_the_order_they_fell_silent(room: Arc<dyn WaitingRoomStore>) {
    use slotd::domain::room::{ClientKey, RoomConfig, TicketId, TicketState};
    let t0 = epoch();
    let at_ms = |ms: i64| t0 + ChronoDuration::milliseconds(ms);
    let paused = RoomConfig {
        enabled: true,
        paused: true,
        waiter_timeout_secs: 60,
        ..RoomConfig::default()
    };
    room.configure(&paused, t0).await.unwrap();
    let mut ids = Vec::new();
    for name in ["first", "second", "third"] {
        let key = ClientKey::parse(&format!("{name}.Kq7xZ2pLm9TvW4rN8sYb3c")).unwrap();
        ids.push(room.join(&key, &TicketId::generate(), t0).await.unwrap().id);
    }
    // Last heard of: the third ticket first, then the first, then the second.
    let heard = [&ids[2], &ids[0], &ids[1]];
    for (k, id) in heard.iter().enumerate() {
        room.status(id, at_ms(1_000 + k as i64)).await.unwrap();
    }
    // Steps every 2 s (no outage); at 62 s all three have been silent for 60 s.
    for s in (0..=60).step_by(2) {
        room.advance(at_ms(s * 1000)).await.unwrap();
    }
    assert_eq!(room.stats(at_ms(60_000)).await.unwrap().expired_total, 0);
    let head = room
        .sync(Some(0), &[], 100, at_ms(60_000))
        .await
        .unwrap()
        .head;
    room.advance(at_ms(62_000)).await.unwrap();
    let events = room
        .sync(Some(head), &[], 100, at_ms(62_000))
        .await
        .unwrap()
        .events;
    let dropped: Vec<&TicketId> = events
        .iter()
        .filter(|e| e.state == TicketState::Expired)
        .map(|e| &e.id)
        .collect();
    assert_eq!(dropped, heard, "{events:?}");
}

/// One tick is one store call: the settings (as `config` reads them), the step when the lease
/// is due, and the sync. The lease is the store's own clock, not room time: however far room
/// time moves, a second tick within the lease does not step (another replica stepped), while
/// `advance` and a zero lease always step; the admissions are the token bucket's either way,
/// and the sync answers them as events in order.
async fn a_tick_reads_the_settings_steps_under_the_lease_and_syncs(
    room: Arc<dyn WaitingRoomStore>,
) {
    use slotd::domain::room::{ClientKey, RoomConfig, TicketId, TicketState};
    use slotd::store::room::{SyncCall, TickCall};
    let t0 = epoch();
    let at = |s: i64| t0 + ChronoDuration::seconds(s);
    let hour = Duration::from_secs(3600);
    let off = room
        .tick(&TickCall {
            lease: Duration::ZERO,
            sync: None,
            now: t0,
        })
        .await
        .unwrap();
    assert_eq!(
        (off.config, off.admitted),
        (room.config().await.unwrap(), None)
    );
    // One a second, burst 1.
    let config = RoomConfig {
        enabled: true,
        admissions_per_minute: 60,
        max_active_sessions: 100,
        waiter_timeout_secs: 600,
        ..RoomConfig::default()
    };
    room.configure(&config, t0).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        let key = ClientKey::parse(&format!("lease-{i}.Kq7xZ2pLm9TvW4rN8sYb3c")).unwrap();
        ids.push(room.join(&key, &TicketId::generate(), t0).await.unwrap().id);
    }
    let tick = |lease, s| {
        let room = room.clone();
        async move {
            room.tick(&TickCall {
                lease,
                sync: None,
                now: at(s),
            })
            .await
            .unwrap()
        }
    };
    let first = tick(hour, 0).await;
    assert_eq!((first.config, first.admitted), (config, Some(1)));
    // Ten seconds of room time later, within the hour's lease: no step.
    assert_eq!(tick(hour, 10).await.admitted, None);
    // The step alone steps; the bucket (not who steps) decides: burst 1.
    assert_eq!(room.advance(at(10)).await.unwrap(), 1);
    assert_eq!(tick(Duration::ZERO, 20).await.admitted, Some(1));
    assert_eq!(tick(hour, 30).await.admitted, None);
    // The sync part: the three admissions as events, in admission order; heartbeats write.
    let synced = room
        .tick(&TickCall {
            lease: Duration::ZERO,
            sync: Some(SyncCall {
                after: Some(0),
                heartbeat: &ids[3..],
                max_events: 100,
            }),
            now: at(40),
        })
        .await
        .unwrap();
    assert_eq!(synced.admitted, Some(1));
    let synced = synced.synced.expect("a sync was asked");
    assert!(!synced.gap);
    assert_eq!(synced.head, 4);
    let admitted: Vec<(u64, TicketState, u64)> = synced
        .events
        .iter()
        .map(|e| (e.seq, e.state, e.admission_number))
        .collect();
    assert_eq!(
        admitted,
        (1..=4)
            .map(|n| (n, TicketState::Admitted, n))
            .collect::<Vec<_>>()
    );
    for (e, id) in synced.events.iter().zip(&ids) {
        assert_eq!(&e.id, id, "join order");
    }
}

/// The observed rate (and so every waiter's estimate) counts from the last unpause: a room
/// paused for 50 s that then admits one a second shows about 66 a minute over its first ten
/// seconds (11 admissions in 10 s), not 11 a minute (the same admissions spread over the pause,
/// which admits nobody). Counting the pause showed every waiter a too-long estimate, and a new
/// one at every rise of the rate, for a minute after each unpause.
async fn the_observed_rate_starts_afresh_at_an_unpause(room: Arc<dyn WaitingRoomStore>) {
    use slotd::domain::room::{ClientKey, RoomConfig, TicketId};
    let t0 = epoch();
    let at = |s: i64| t0 + ChronoDuration::seconds(s);
    let paused = RoomConfig {
        enabled: true,
        paused: true,
        admissions_per_minute: 60,
        waiter_timeout_secs: 600,
        ..RoomConfig::default()
    };
    room.configure(&paused, t0).await.unwrap();
    for i in 0..20 {
        let key = ClientKey::parse(&format!("rate-{i}.Kq7xZ2pLm9TvW4rN8sYb3c")).unwrap();
        room.join(&key, &TicketId::generate(), t0).await.unwrap();
    }
    let unpaused = RoomConfig {
        paused: false,
        ..paused
    };
    room.configure(&unpaused, at(50)).await.unwrap();
    let mut admitted = 0;
    for s in 50..=60 {
        admitted += room.advance(at(s)).await.unwrap();
    }
    assert_eq!(
        admitted, 11,
        "one token a second, one in the bucket at the unpause"
    );
    let observed = room.stats(at(60)).await.unwrap().observed_per_minute;
    assert!(
        (observed - 66.0).abs() < 0.01,
        "observed {observed} a minute"
    );
}

/// Hands a case one backend's waiting room (`backend_matrix!`).
async fn on_room(
    backend: support::backend::Backend,
    case: impl AsyncFnOnce(Arc<dyn WaitingRoomStore>),
) {
    case(backend.room()).await;
}

mod bounded_steps {
    use super::*;
    backend_matrix!(
        on_room;
        silent_waiters_are_dropped_in_bounded_steps_and_never_admitted,
        silent_waiters_leave_in_the_order_they_fell_silent,
        a_tick_reads_the_settings_steps_under_the_lease_and_syncs,
        the_observed_rate_starts_afresh_at_an_unpause,
    );
}

/// A replica that cannot read the room's settings (its room store is down from the start)
/// does not take the room for disabled: booking is refused UNAVAILABLE and health says
/// NOT_SERVING, though the booking store answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_read_the_room_settings_fails_closed() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let mut redis = support::redis::RedisServer::start();
    let room: Arc<dyn WaitingRoomStore> = redis.room();
    redis.stop();
    let store: Arc<dyn Inventory> = Arc::new(slotd::store::memory::MemoryStore::new());
    let server = TestServer::launch(
        store,
        room,
        ManualClock::new(epoch()),
        ServeOptions::default(),
    )
    .await;
    let date = day(7);
    open_times(&server, &date, "08:00", "08:00", 5).await;
    register_receipts(&server, [1]).await;
    let s = server
        .booking()
        .await
        .book_appointment(book_request(
            "closed-1",
            slot(&date, "08:00"),
            vec![applicant(1)],
        ))
        .await
        .unwrap_err();
    assert_refused(&s, Code::Unavailable, "STORE_UNAVAILABLE");
    let mut health = HealthClient::new(server.channel().await);
    let mut status = None;
    for _ in 0..100 {
        let s = health
            .check(HealthCheckRequest {
                service: "slotd.v1.BookingService".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        status = Some(s);
        if s == ServingStatus::NotServing as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, Some(ServingStatus::NotServing as i32));
    // The room store comes back: the settings are read (room off) and booking goes through.
    redis.restart();
    let mut booked = false;
    for i in 0..200 {
        match server
            .booking()
            .await
            .book_appointment(book_request(
                &format!("open-{i}"),
                slot(&date, "08:00"),
                vec![applicant(1)],
            ))
            .await
        {
            Ok(_) => {
                booked = true;
                break;
            }
            Err(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(booked, "booking resumes once the settings are read");
    assert_eq!(seats_left(&server, &date, "08:00").await, 4, "booked once");
    server.stop().await;
}
