//! The booking lifecycle over gRPC, on the real server (127.0.0.1:0): holds with the manual
//! clock, reschedules, the confirmation page, operator views, the event stream, a storm of
//! every lifecycle call on memory and Redis, and a reschedule storm across a Redis crash.

use crate::support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use tokio_stream::StreamExt;
use tonic::Code;

use slotd::api::pb;
use slotd::domain::lifecycle::{EventId, EventStart};
use slotd::store::Inventory;
use support::redis::RedisServer;
use support::*;

fn hold_req(request_id: &str, slot: pb::SlotRef, ids: &[u32]) -> pb::HoldSlotRequest {
    pb::HoldSlotRequest {
        request_id: request_id.into(),
        slot: Some(slot),
        applicants: ids.iter().map(|i| applicant(*i)).collect(),
    }
}

fn confirm_req(hold_id: &str, request_id: &str) -> pb::ConfirmHoldRequest {
    pb::ConfirmHoldRequest {
        hold_id: hold_id.into(),
        request_id: request_id.into(),
    }
}

fn move_req(
    confirmation: &str,
    passport: &str,
    request_id: &str,
    to: pb::SlotRef,
) -> pb::RescheduleAppointmentRequest {
    pb::RescheduleAppointmentRequest {
        confirmation_number: confirmation.into(),
        passport_number: passport.into(),
        request_id: request_id.into(),
        new_slot: Some(to),
    }
}

async fn get_slot(server: &TestServer, s: pb::SlotRef) -> pb::SlotState {
    server
        .admin()
        .await
        .get_slot(admin(pb::GetSlotRequest { slot: Some(s) }))
        .await
        .expect("get slot")
        .into_inner()
        .slot
        .expect("slot")
}

#[tokio::test]
async fn an_unconfirmed_hold_returns_its_seats_when_the_clock_passes_its_expiry() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_day(&server, &date, 4).await;
    register_receipts(&server, 1..=2).await;
    let mut booking = server.booking().await;
    let hold = booking
        .hold_slot(hold_req("h-1", slot(&date, "08:00"), &[1, 2]))
        .await
        .unwrap()
        .into_inner()
        .hold
        .unwrap();
    assert_eq!(hold.hold_id.len(), 32);
    assert_eq!(hold.status, pb::HoldStatus::Held as i32);
    assert_eq!(hold.expires_at, "2030-01-07T00:10:00Z");
    let s = get_slot(&server, slot(&date, "08:00")).await;
    assert_eq!((s.capacity, s.booked, s.held, s.remaining), (4, 0, 2, 2));
    assert_eq!(seats_left(&server, &date, "08:00").await, 2);

    // Ten minutes later, with nobody calling anything on the date, the seats are back.
    server.clock.advance(ChronoDuration::minutes(10));
    let s = get_slot(&server, slot(&date, "08:00")).await;
    assert_eq!((s.capacity, s.booked, s.held, s.remaining), (4, 0, 0, 4));
    let err = booking
        .confirm_hold(confirm_req(&hold.hold_id, "c-1"))
        .await
        .unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "HOLD_EXPIRED");
    let s = get_slot(&server, slot(&date, "08:00")).await;
    assert_eq!((s.booked, s.held), (0, 0));
    assert_audit_clean(&server, &date).await;
}

#[tokio::test]
async fn hold_confirm_release_and_reschedule_requests_name_every_bad_field() {
    let server = TestServer::memory().await;
    let mut booking = server.booking().await;
    let err = booking
        .hold_slot(pb::HoldSlotRequest {
            request_id: String::new(),
            slot: Some(slot("2030-02-30", "08:10")),
            applicants: vec![],
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    let fields = bad_fields(&err);
    for f in ["request_id", "slot.date", "slot.time", "applicants"] {
        assert!(fields.iter().any(|x| x == f), "{f} in {fields:?}");
    }
    let err = booking
        .confirm_hold(confirm_req("not-a-hold", ""))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["hold_id", "request_id"]);
    let err = booking
        .release_hold(pb::ReleaseHoldRequest {
            hold_id: String::new(),
            request_id: "r".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["hold_id"]);
    let err = booking
        .reschedule_appointment(pb::RescheduleAppointmentRequest {
            confirmation_number: "X".into(),
            passport_number: "P0000001".into(),
            request_id: "m-1".into(),
            new_slot: Some(slot(&day(3), "08:07")),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["confirmation_number", "new_slot.time"]);
    let err = booking
        .render_confirmation(pb::RenderConfirmationRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["confirmation_number", "passport_number"]);
    let mut ops = server.admin().await;
    let err = ops
        .get_slot(admin(pb::GetSlotRequest { slot: None }))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["slot"]);
    let err = ops
        .watch_events(admin(pb::WatchEventsRequest {
            after_id: "yesterday".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["after_id"]);
    // A well-formed but unknown hold.
    let err = booking
        .confirm_hold(confirm_req(&"ab".repeat(16), "c-1"))
        .await
        .unwrap_err();
    assert_refused(&err, Code::NotFound, "HOLD_NOT_FOUND");
}

#[tokio::test]
async fn a_rescheduled_appointment_keeps_its_number_shows_its_history_and_stops_at_the_limit() {
    let server = TestServer::memory().await;
    for d in [7, 8] {
        open_day(&server, &day(d), 4).await;
    }
    register_receipts(&server, 1..=2).await;
    let mut booking = server.booking().await;
    let appt = booking
        .book_appointment(book_request(
            "b-1",
            slot(&day(7), "08:00"),
            vec![applicant(1), applicant(2)],
        ))
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    let conf = appt.confirmation_number.clone();
    let moved = booking
        .reschedule_appointment(move_req(&conf, "P0000002", "m-1", slot(&day(8), "08:30")))
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    assert_eq!(moved.confirmation_number, conf);
    assert_eq!(moved.slot, Some(slot(&day(8), "08:30")));
    assert_eq!(seats_left(&server, &day(7), "08:00").await, 4);
    assert_eq!(seats_left(&server, &day(8), "08:30").await, 2);

    let read = booking
        .get_appointment(pb::GetAppointmentRequest {
            confirmation_number: conf.clone(),
            passport_number: "P0000001".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    assert_eq!(read.history.len(), 1);
    assert_eq!(read.history[0].from_slot, Some(slot(&day(7), "08:00")));
    assert_eq!(read.history[0].to_slot, Some(slot(&day(8), "08:30")));
    assert_eq!(read.post_name_en, "U.S. Embassy Beijing");
    assert!(read.post_name_zh.contains("北京"));
    assert!(!read.post_address_en.is_empty() && !read.post_address_zh.is_empty());
    assert!(!read.category_name_en.is_empty() && !read.category_name_zh.is_empty());
    assert_eq!(read.time_zone, "Asia/Shanghai");
    assert_eq!(read.applicants[1].ds160_confirmation, "AA00000002");

    booking
        .reschedule_appointment(move_req(&conf, "P0000001", "m-2", slot(&day(7), "08:45")))
        .await
        .unwrap();
    let before = (
        seats_left(&server, &day(7), "08:45").await,
        seats_left(&server, &day(8), "08:00").await,
    );
    let err = booking
        .reschedule_appointment(move_req(&conf, "P0000001", "m-3", slot(&day(8), "08:00")))
        .await
        .unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "RESCHEDULE_LIMIT");
    let after = (
        seats_left(&server, &day(7), "08:45").await,
        seats_left(&server, &day(8), "08:00").await,
    );
    assert_eq!(before, after);
    assert_audit_clean(&server, &day(7)).await;
    assert_audit_clean(&server, &day(8)).await;
}

#[tokio::test]
async fn the_confirmation_page_is_html_in_both_languages_for_the_appointments_applicants_only() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_day(&server, &date, 4).await;
    register_receipts(&server, 1..=2).await;
    let mut booking = server.booking().await;
    let appt = booking
        .book_appointment(book_request(
            "b-1",
            slot(&date, "08:15"),
            vec![applicant(1), applicant(2)],
        ))
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    let page = booking
        .render_confirmation(pb::RenderConfirmationRequest {
            confirmation_number: appt.confirmation_number.clone(),
            passport_number: "P0000002".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    for needle in [
        appt.confirmation_number.as_str(),
        &date,
        "08:15",
        "AA00000001",
        "AA00000002",
        "U.S. Embassy Beijing",
        "美国驻北京大使馆",
        "预约确认",
        "Appointment Confirmation",
    ] {
        assert!(page.html.contains(needle), "{needle} missing");
    }
    assert_eq!(
        support::qr::scan(&page.html),
        appt.confirmation_number,
        "the page's QR code scans to the confirmation number"
    );
    let err = booking
        .render_confirmation(pb::RenderConfirmationRequest {
            confirmation_number: appt.confirmation_number.clone(),
            passport_number: "P0000003".into(),
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::NotFound, "APPOINTMENT_NOT_FOUND");
}

#[tokio::test]
async fn closing_a_slot_can_list_the_appointments_it_affects() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_day(&server, &date, 4).await;
    register_receipts(&server, 1..=3).await;
    let mut booking = server.booking().await;
    let mut on_0800 = HashSet::new();
    for (i, time) in [(1, "08:00"), (2, "08:00"), (3, "08:15")] {
        let a = booking
            .book_appointment(book_request(
                &format!("b-{i}"),
                slot(&date, time),
                vec![applicant(i)],
            ))
            .await
            .unwrap()
            .into_inner()
            .appointment
            .unwrap();
        if time == "08:00" {
            on_0800.insert(a.confirmation_number);
        }
    }
    let closed = server
        .admin()
        .await
        .close_slots(admin(pb::CloseSlotsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            date: date.clone(),
            time: "08:00".into(),
            list_affected: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.slots_closed, 1);
    let affected: HashSet<_> = closed
        .affected
        .iter()
        .map(|a| a.confirmation_number.clone())
        .collect();
    assert_eq!(affected, on_0800);
    let s = get_slot(&server, slot(&date, "08:00")).await;
    assert!(s.closed);
    assert_eq!(s.booked, 2);
}

#[tokio::test]
async fn watch_events_follows_the_log_from_an_id_or_from_now() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_day(&server, &date, 4).await;
    register_receipts(&server, 1..=2).await;
    let mut booking = server.booking().await;
    booking
        .book_appointment(book_request(
            "b-1",
            slot(&date, "08:00"),
            vec![applicant(1)],
        ))
        .await
        .unwrap();
    let mut ops = server.admin().await;
    let mut from_start = ops
        .watch_events(admin(pb::WatchEventsRequest {
            after_id: "0".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut from_now = ops
        .watch_events(admin(pb::WatchEventsRequest {
            after_id: "$".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    // From the start: the operator's `opened`, then the booking.
    let opened = tokio::time::timeout(Duration::from_secs(10), from_start.next())
        .await
        .expect("an event")
        .expect("stream open")
        .expect("event");
    assert_eq!(opened.r#type, "opened");
    let first = tokio::time::timeout(Duration::from_secs(10), from_start.next())
        .await
        .expect("an event")
        .expect("stream open")
        .expect("event");
    assert_eq!(first.r#type, "booked");
    let hold = booking
        .hold_slot(hold_req("h-1", slot(&date, "08:15"), &[2]))
        .await
        .unwrap()
        .into_inner()
        .hold
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), from_now.next())
        .await
        .expect("an event")
        .expect("stream open")
        .expect("event");
    assert_eq!(next.r#type, "held");
    assert_eq!(
        next.fields["hold_ref"],
        slotd::domain::lifecycle::HoldId::parse(&hold.hold_id)
            .unwrap()
            .reference()
    );
    assert!(!next.fields.values().any(|v| v.contains(&hold.hold_id)));
    let second = tokio::time::timeout(Duration::from_secs(10), from_start.next())
        .await
        .expect("an event")
        .expect("stream open")
        .expect("event");
    assert_eq!(second.id, next.id);
    // Operator only.
    let err = ops
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

/// Many gRPC clients on three hot slots: holds, confirms, releases, bookings, cancels and
/// reschedules. Afterwards the audit is clean and every acknowledged appointment reads back.
async fn a_grpc_storm_of_lifecycle_calls_audits_clean(server: &TestServer) {
    let date = day(7);
    open_times(server, &date, "08:00", "08:30", 5).await;
    open_times(server, &day(8), "08:00", "08:30", 5).await;
    let clients = 40u32;
    register_receipts(server, 1..=clients).await;
    let times = ["08:00", "08:15", "08:30"];
    let mut tasks = Vec::new();
    for i in 1..=clients {
        let mut booking = server.booking().await;
        let date = date.clone();
        tasks.push(tokio::spawn(async move {
            let here = slot(&date, times[(i % 3) as usize]);
            let there = slot(&day(8), times[((i + 1) % 3) as usize]);
            let mut mine: Option<pb::Appointment> = None;
            match i % 5 {
                0 | 1 => {
                    if let Ok(h) = booking
                        .hold_slot(hold_req(&format!("h-{i}"), here, &[i]))
                        .await
                    {
                        let id = h.into_inner().hold.unwrap().hold_id;
                        if i % 5 == 0 {
                            if let Ok(a) = booking
                                .confirm_hold(confirm_req(&id, &format!("c-{i}")))
                                .await
                            {
                                mine = a.into_inner().appointment;
                            }
                        } else {
                            booking
                                .release_hold(pb::ReleaseHoldRequest {
                                    hold_id: id,
                                    request_id: format!("r-{i}"),
                                })
                                .await
                                .unwrap();
                        }
                    }
                }
                _ => {
                    let booked = booking
                        .book_appointment(book_request(&format!("b-{i}"), here, vec![applicant(i)]))
                        .await;
                    if let Ok(a) = booked {
                        let a = a.into_inner().appointment.unwrap();
                        let p = a.applicants[0].passport_number.clone();
                        mine = Some(a.clone());
                        if i % 5 == 3 {
                            if let Ok(m) = booking
                                .reschedule_appointment(move_req(
                                    &a.confirmation_number,
                                    &p,
                                    &format!("m-{i}"),
                                    there,
                                ))
                                .await
                            {
                                mine = m.into_inner().appointment;
                            }
                        } else if i % 5 == 4 {
                            booking
                                .cancel_appointment(pb::CancelAppointmentRequest {
                                    confirmation_number: a.confirmation_number.clone(),
                                    passport_number: p,
                                    request_id: format!("x-{i}"),
                                })
                                .await
                                .unwrap();
                            mine = None;
                        }
                    }
                }
            }
            mine
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        if let Some(a) = t.await.unwrap() {
            acknowledged.push(a);
        }
    }
    assert!(!acknowledged.is_empty());
    assert_audit_clean(server, &date).await;
    assert_audit_clean(server, &day(8)).await;
    let mut booking = server.booking().await;
    let mut per_slot: BTreeMap<(String, String), u32> = BTreeMap::new();
    for a in &acknowledged {
        let read = booking
            .get_appointment(pb::GetAppointmentRequest {
                confirmation_number: a.confirmation_number.clone(),
                passport_number: a.applicants[0].passport_number.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .appointment
            .unwrap();
        assert_eq!(read.status, pb::AppointmentStatus::Booked as i32);
        assert_eq!(read.slot, a.slot);
        let s = read.slot.unwrap();
        *per_slot.entry((s.date, s.time)).or_default() += 1;
    }
    for d in [date.clone(), day(8)] {
        for t in times {
            let s = get_slot(server, slot(&d, t)).await;
            assert_eq!(s.held, 0);
            assert_eq!(s.booked + s.held + s.remaining, s.capacity);
            assert_eq!(
                s.booked,
                per_slot
                    .get(&(d.clone(), t.to_owned()))
                    .copied()
                    .unwrap_or(0),
                "{d} {t}"
            );
        }
    }
}

/// Runs a case against a server on one backend (`backend_matrix!`, tests/support/backend.rs).
async fn on_server(backend: support::backend::Backend, case: impl AsyncFnOnce(&TestServer)) {
    let server = TestServer::start(backend.store()).await;
    case(&server).await;
    server.stop().await;
}

backend_matrix!(on_server; a_grpc_storm_of_lifecycle_calls_audits_clean);

/// Crash point: Redis is killed (SIGKILL) in the middle of a storm of reschedules and
/// restarted from its AOF. A reschedule is one script, checked before any write, and Redis
/// applies and logs a script whole, so afterwards every appointment is on exactly one slot:
/// the audit is clean (booked == seats of active appointments on every slot), each appointment
/// is in exactly one manifest, its history is a chain ending where it is, and each move's event
/// was written with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_in_a_storm_of_reschedules_never_leaves_a_half_move() {
    use slotd::domain::lifecycle::Reschedule;
    use slotd::domain::rules::{DateRange, ManifestQuery};
    use slotd::domain::types::{ConfirmationNumber, PassportNumber, RequestId, SlotRef};
    use slotd::store::StoreError;

    let mut redis = RedisServer::start();
    let store: Arc<dyn Inventory> = redis.store();
    let server = TestServer::start(store.clone()).await;
    let days = [day(7), day(8)];
    for d in &days {
        open_times(&server, d, "08:00", "09:45", 8).await;
    }
    let groups = 24u32;
    register_receipts(&server, 1..=groups).await;
    let mut booking = server.booking().await;
    let mut appts = Vec::new();
    for i in 1..=groups {
        let t = format!("08:{:02}", (i % 4) * 15);
        let a = booking
            .book_appointment(book_request(
                &format!("b-{i}"),
                slot(&days[0], &t),
                vec![applicant(i)],
            ))
            .await
            .unwrap()
            .into_inner()
            .appointment
            .unwrap();
        appts.push((
            ConfirmationNumber::parse(&a.confirmation_number).unwrap(),
            PassportNumber::parse(&a.applicants[0].passport_number).unwrap(),
        ));
    }
    let slot_ref = |d: &str, t: &str| -> SlotRef {
        let p = slot(d, t);
        SlotRef {
            post: slotd::domain::types::PostId::parse(&p.post_id).unwrap(),
            category: slotd::domain::types::CategoryId::parse(&p.category).unwrap(),
            date: slotd::domain::types::parse_date(&p.date).unwrap(),
            time: slotd::domain::types::SlotTime::parse(&p.time).unwrap(),
        }
    };
    let targets: Vec<SlotRef> = days
        .iter()
        .flat_map(|d| {
            (0..8).map(move |k| (d.clone(), format!("{:02}:{:02}", 8 + k / 4, (k % 4) * 15)))
        })
        .map(|(d, t)| slot_ref(&d, &t))
        .collect();
    // Live counts, so the crash follows the storm's own progress, not the machine's speed.
    let acked = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let refused = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for (n, (conf, passport)) in appts.iter().enumerate() {
        let store = store.clone();
        let (conf, passport) = (conf.clone(), passport.clone());
        let targets = targets.clone();
        let (acked, refused) = (acked.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut unavailable) = (0u32, 0u32);
            for k in 0..60usize {
                let r = Reschedule {
                    request_id: RequestId::parse(&format!("m-{n}-{k}")).unwrap(),
                    confirmation: conf.clone(),
                    passport: passport.clone(),
                    new_slot: targets[(n * 7 + k * 3) % targets.len()].clone(),
                    admission: None,
                };
                match store.reschedule(&r, 1_000, support::epoch()).await {
                    Ok(_) => {
                        ok += 1;
                        acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(StoreError::Unavailable { .. }) => {
                        unavailable += 1;
                        refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(StoreError::Domain(_)) => {}
                    Err(other) => panic!("unexpected {other:?}"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, unavailable)
        }));
    }
    // Each task makes 60 calls 10 ms apart, so it is still running when the first
    // reschedule is acknowledged (Redis dies then) and when the first one is refused
    // UNAVAILABLE (Redis comes back then).
    let wait_for = |count: Arc<std::sync::atomic::AtomicU32>, what: &'static str| async move {
        for _ in 0..6_000 {
            if count.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no {what} within 30 s");
    };
    wait_for(acked.clone(), "acknowledged reschedule").await;
    redis.stop();
    wait_for(refused.clone(), "UNAVAILABLE reschedule").await;
    redis.restart();
    let (mut ok, mut unavailable) = (0, 0);
    for t in tasks {
        let (o, u) = t.await.unwrap();
        ok += o;
        unavailable += u;
    }
    assert!(
        ok > 0 && unavailable > 0,
        "the storm spans the crash: {ok} ok, {unavailable} unavailable"
    );
    let mut ready = false;
    for _ in 0..100 {
        if store.ping().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "redis did not come back");

    for d in &days {
        assert_audit_clean(&server, d).await;
    }
    let mut listed: BTreeMap<ConfirmationNumber, u32> = BTreeMap::new();
    for d in &targets
        .iter()
        .map(|s| s.day())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let page = store
            .manifest(&ManifestQuery {
                day: d.clone(),
                after: None,
                limit: 500,
                include_cancelled: true,
            })
            .await
            .unwrap();
        for a in page.appointments {
            assert_eq!(a.slot.day(), *d);
            *listed.entry(a.confirmation).or_default() += 1;
        }
    }
    let mut history = 0;
    let mut seats = 0;
    for (conf, passport) in &appts {
        assert_eq!(listed.get(conf), Some(&1), "{conf} listed once");
        let a = store.appointment(conf, passport).await.unwrap();
        for pair in a.history.windows(2) {
            assert_eq!(pair[0].to, pair[1].from);
        }
        if let Some(last) = a.history.last() {
            assert_eq!(last.to, a.slot);
        }
        history += a.history.len();
        seats += a.seats();
    }
    let booked: u32 = store
        .slots(
            &targets[0].post,
            &targets[0].category,
            DateRange::new(targets[0].date, targets[targets.len() - 1].date).unwrap(),
        )
        .await
        .unwrap()
        .iter()
        .map(|s| s.booked)
        .sum();
    assert_eq!(booked, seats, "every group holds exactly its seats, once");
    let log = store
        .events(EventStart::After(EventId::default()), 100_000)
        .await
        .unwrap();
    let moved = log.events.iter().filter(|e| e.kind == "moved").count();
    assert_eq!(
        moved, history,
        "each applied move wrote its event in the same script"
    );
}

#[tokio::test]
async fn the_sweeper_returns_expired_seats_without_any_request() {
    use slotd::domain::rules::DateRange;
    use slotd::domain::types::{parse_date, CategoryId, PostId};
    use slotd::server::ServeOptions;

    // The server's own sweeper (started with every other background task in `slotd::tasks`),
    // over a store that counts its rounds.
    let counted =
        support::counting::CountingStore::new(Arc::new(slotd::store::memory::MemoryStore::new()));
    let server = TestServer::start_with(
        counted.clone(),
        ServeOptions {
            sweep_interval: Some(Duration::from_millis(20)),
            ..ServeOptions::default()
        },
    )
    .await;
    let date = day(7);
    open_day(&server, &date, 4).await;
    register_receipts(&server, 1..=3).await;
    server
        .booking()
        .await
        .hold_slot(hold_req("h-1", slot(&date, "08:00"), &[1, 2, 3]))
        .await
        .unwrap();
    let held = || async {
        let d = parse_date(&date).unwrap();
        server
            .store
            .slots(
                &PostId::parse("BEIJING").unwrap(),
                &CategoryId::parse("ALL_OTHERS").unwrap(),
                DateRange::new(d, d).unwrap(),
            )
            .await
            .unwrap()[0]
            .held
    };
    // Two whole sweeps (counted, not timed) after the hold was taken, while it is live: it stays.
    let before = counted.sweeps();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while counted.sweeps() < before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweeper never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(held().await, 3, "a live hold is not swept");
    server.clock.advance(ChronoDuration::minutes(10));
    let mut swept = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if held().await == 0 {
            swept = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(swept, "the sweeper returned the seats");
    assert_audit_clean(&server, &date).await;
}

/// Replica clocks differ: one whose clock runs ahead reclaims a hold; one whose clock runs
/// behind then tries to confirm (or release) it before its own idea of the expiry. The seats
/// went back once, so it answers HOLD_EXPIRED and books nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_reclaimed_by_a_replica_running_ahead_cannot_be_confirmed_by_one_running_behind() {
    use slotd::domain::lifecycle::{HoldConfirmation, HoldId, HoldRelease};
    use slotd::domain::rules::{Booking, DateRange};
    use slotd::domain::types::{
        parse_date, Applicant, CategoryId, ConfirmationNumber, Ds160Number, PassportNumber,
        PersonName, PostId, ReceiptNumber, RequestId, SlotRef, SlotTime,
    };
    use slotd::domain::Error;
    use slotd::store::StoreError;

    let redis = RedisServer::start();
    let store: Arc<dyn Inventory> = redis.store();
    let server = TestServer::start(store.clone()).await;
    let date = day(7);
    open_day(&server, &date, 2).await;
    register_receipts(&server, 1..=1).await;
    let s = SlotRef {
        post: PostId::parse("BEIJING").unwrap(),
        category: CategoryId::parse("ALL_OTHERS").unwrap(),
        date: parse_date(&date).unwrap(),
        time: SlotTime::parse("08:00").unwrap(),
    };
    let a = applicant(1);
    let request = Booking::new(
        RequestId::parse("h-1").unwrap(),
        s.clone(),
        vec![Applicant {
            passport: PassportNumber::parse(&a.passport_number).unwrap(),
            given_name: PersonName::parse(&a.given_name).unwrap(),
            surname: PersonName::parse(&a.surname).unwrap(),
            ds160: Ds160Number::parse(&a.ds160_confirmation).unwrap(),
            receipt: ReceiptNumber::parse(&a.receipt_number).unwrap(),
        }],
    )
    .unwrap();
    let t0 = epoch();
    let id = HoldId::generate();
    store
        .hold(&request, &id, t0 + ChronoDuration::minutes(10), t0)
        .await
        .unwrap();
    // The replica ahead sweeps at +11 min.
    assert_eq!(
        store
            .reclaim_expired_holds(t0 + ChronoDuration::minutes(11))
            .await
            .unwrap()
            .holds,
        1
    );
    // The replica behind (+9 min) confirms, then releases.
    let behind = t0 + ChronoDuration::minutes(9);
    let confirm = HoldConfirmation {
        request_id: RequestId::parse("c-1").unwrap(),
        hold: id.clone(),
        admission: None,
    };
    match store
        .confirm_hold(&confirm, &ConfirmationNumber::generate(), behind)
        .await
    {
        Err(StoreError::Domain(Error::HoldExpired { .. })) => {}
        other => panic!("{other:?}"),
    }
    let release = HoldRelease {
        request_id: RequestId::parse("r-1").unwrap(),
        hold: id,
    };
    match store.release_hold(&release, behind).await {
        Err(StoreError::Domain(Error::HoldExpired { .. })) => {}
        other => panic!("{other:?}"),
    }
    let d = parse_date(&date).unwrap();
    let state = store
        .slots(&s.post, &s.category, DateRange::new(d, d).unwrap())
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.slot == s)
        .unwrap();
    assert_eq!((state.booked, state.held, state.remaining()), (0, 0, 2));
    assert_audit_clean(&server, &date).await;
}
