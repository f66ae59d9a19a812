//! Who may do what, over gRPC on the real server (127.0.0.1:0): operator RPCs need the exact
//! operator token; bookings behind the waiting room need a live admission token (the forged,
//! other-key, expired, revoked and spent cases are in tests/waiting_room.rs
//! `admission_tokens_gate_booking_and_bad_ones_change_nothing`; here: a token for a ticket that
//! left or never existed, and on every gated RPC); an appointment opens only with its
//! confirmation number and one of its own passports, and a wrong passport looks exactly like a
//! number that does not exist; guessing confirmation numbers runs into the failed-lookup limit
//! on every RPC that takes them; a hold opens only with its exact 128-bit id (holds are bearer
//! credentials: whoever has the id may confirm or release it).

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use slotd::api::pb;
use slotd::config::LimitSettings;
use slotd::server::ServeOptions;
use slotd::store::memory::MemoryStore;
use support::history;
use support::*;

fn with_auth<T>(message: T, header: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = header.parse().expect("ascii");
    request.metadata_mut().insert("authorization", value);
    request
}

fn maybe_auth<T>(header: &Option<String>, message: T) -> Request<T> {
    match header {
        None => Request::new(message),
        Some(h) => with_auth(message, h),
    }
}

/// Slot counters, the day's appointments and the audit: what a refused call must not change.
async fn state(server: &TestServer, date: &str) -> String {
    let channel = server.channel().await;
    let mut out = String::new();
    for t in ["08:00", "08:15", "08:30", "08:45"] {
        out += &format!(
            "{t}: {:?}\n",
            server
                .admin()
                .await
                .get_slot(admin(pb::GetSlotRequest {
                    slot: Some(slot(date, t)),
                }))
                .await
                .map(|r| r.into_inner().slot)
        );
    }
    for a in history::manifest(&channel, date).await {
        out += &format!("{} {} {:?}\n", a.confirmation_number, a.status, a.slot);
    }
    history::audit_clean(&channel, date).await;
    out
}

#[tokio::test]
async fn every_operator_rpc_refuses_a_missing_or_wrong_token_and_changes_nothing() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_day(&server, &date, 5).await;
    register_receipts(&server, [1]).await;
    let booked = server
        .booking()
        .await
        .book_appointment(book_request(
            "sec-1",
            slot(&date, "08:00"),
            vec![applicant(1)],
        ))
        .await
        .expect("book")
        .into_inner()
        .appointment
        .expect("appointment");
    let before = state(&server, &date).await;
    let wrong = [
        None,
        Some(String::new()),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
        Some(format!("bearer {ADMIN_TOKEN}")),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some(ADMIN_TOKEN.to_owned()),
        Some(format!("Bearer {}", ADMIN_TOKEN.to_uppercase())),
        Some("Bearer ".to_owned()),
    ];
    let mut client = server.admin().await;
    let slot_ref = slot(&date, "08:00");
    for header in &wrong {
        let mut refusals: Vec<(&str, Status)> = Vec::new();
        macro_rules! call {
            ($name:literal, $rpc:ident, $msg:expr) => {
                refusals.push((
                    $name,
                    client
                        .$rpc(maybe_auth(header, $msg))
                        .await
                        .map(|_| ())
                        .expect_err(concat!($name, " without the token")),
                ))
            };
        }
        call!(
            "OpenSlots",
            open_slots,
            pb::OpenSlotsRequest {
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                from_date: date.clone(),
                to_date: date.clone(),
                weekdays: (1..=7).collect(),
                first_time: "08:00".into(),
                last_time: "08:45".into(),
                seats_per_slot: 100,
            }
        );
        call!(
            "SetSlotCapacity",
            set_slot_capacity,
            pb::SetSlotCapacityRequest {
                slot: Some(slot_ref.clone()),
                capacity: 100,
            }
        );
        call!(
            "CloseSlots",
            close_slots,
            pb::CloseSlotsRequest {
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                date: date.clone(),
                time: String::new(),
                list_affected: true,
            }
        );
        call!(
            "ListAppointments",
            list_appointments,
            pb::ListAppointmentsRequest {
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                date: date.clone(),
                page_size: 10,
                page_token: String::new(),
                include_cancelled: true,
            }
        );
        call!(
            "RegisterReceipt",
            register_receipt,
            pb::RegisterReceiptRequest {
                receipt_number: "R9999999".into(),
                passport_number: "P9999999".into(),
                paid_at: epoch().to_rfc3339(),
                amount: "185.00".into(),
                currency: "USD".into(),
            }
        );
        call!(
            "AuditInventory",
            audit_inventory,
            pb::AuditInventoryRequest {
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                from_date: date.clone(),
                to_date: date.clone(),
            }
        );
        call!(
            "GetSlot",
            get_slot,
            pb::GetSlotRequest {
                slot: Some(slot_ref.clone()),
            }
        );
        call!(
            "WatchEvents",
            watch_events,
            pb::WatchEventsRequest {
                after_id: "0".into(),
            }
        );
        call!(
            "ConfigureWaitingRoom",
            configure_waiting_room,
            pb::ConfigureWaitingRoomRequest {
                config: Some(pb::WaitingRoomConfig {
                    enabled: true,
                    admissions_per_minute: 1,
                    max_active_sessions: 1,
                    session_duration_seconds: 60,
                    waiter_timeout_seconds: 60,
                    paused: true,
                    gate_calendar: true,
                }),
            }
        );
        call!(
            "GetWaitingRoomStats",
            get_waiting_room_stats,
            pb::GetWaitingRoomStatsRequest {}
        );
        call!(
            "RevokeAdmission",
            revoke_admission,
            pb::RevokeAdmissionRequest {
                ticket_id: "0123456789abcdef0123456789abcdef".into(),
            }
        );
        assert_eq!(refusals.len(), 11, "every AdminService method");
        for (name, status) in refusals {
            assert_refused(&status, Code::Unauthenticated, "UNAUTHENTICATED");
            assert!(
                !status.message().contains(ADMIN_TOKEN),
                "{name}: the refusal must not echo the token: {status:?}"
            );
        }
    }
    assert_eq!(state(&server, &date).await, before);
    // The booking side is not an operator: its room stays off and the appointment stands.
    let still = server
        .booking()
        .await
        .get_appointment(pb::GetAppointmentRequest {
            confirmation_number: booked.confirmation_number.clone(),
            passport_number: applicant(1).passport_number,
        })
        .await
        .expect("read")
        .into_inner()
        .appointment
        .expect("appointment");
    assert_eq!(still.status, pb::AppointmentStatus::Booked as i32);
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_passport_reads_and_changes_nothing_and_looks_like_no_appointment() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_day(&server, &date, 5).await;
    register_receipts(&server, 1..=3).await;
    let mut booking = server.booking().await;
    let mine = booking
        .book_appointment(book_request(
            "mine-1",
            slot(&date, "08:00"),
            vec![applicant(1), applicant(2)],
        ))
        .await
        .expect("book")
        .into_inner()
        .appointment
        .expect("appointment");
    let theirs = booking
        .book_appointment(book_request(
            "theirs-1",
            slot(&date, "08:15"),
            vec![applicant(3)],
        ))
        .await
        .expect("book")
        .into_inner()
        .appointment
        .expect("appointment");
    let before = state(&server, &date).await;
    let conf = mine.confirmation_number.clone();
    // Someone else's real passport, a made-up one, and a real number that does not exist.
    let attempts = [
        (conf.clone(), applicant(3).passport_number),
        (conf.clone(), "E99999999".to_owned()),
        (
            theirs.confirmation_number.clone(),
            applicant(1).passport_number,
        ),
    ];
    let mut answers = Vec::new();
    for (n, (conf, passport)) in attempts.iter().enumerate() {
        let get = booking
            .get_appointment(pb::GetAppointmentRequest {
                confirmation_number: conf.clone(),
                passport_number: passport.clone(),
            })
            .await
            .unwrap_err();
        let render = booking
            .render_confirmation(pb::RenderConfirmationRequest {
                confirmation_number: conf.clone(),
                passport_number: passport.clone(),
            })
            .await
            .unwrap_err();
        let cancel = booking
            .cancel_appointment(pb::CancelAppointmentRequest {
                confirmation_number: conf.clone(),
                passport_number: passport.clone(),
                request_id: format!("steal-cancel-{n}"),
            })
            .await
            .unwrap_err();
        let moved = booking
            .reschedule_appointment(pb::RescheduleAppointmentRequest {
                confirmation_number: conf.clone(),
                passport_number: passport.clone(),
                request_id: format!("steal-move-{n}"),
                new_slot: Some(slot(&date, "08:45")),
            })
            .await
            .unwrap_err();
        let wait = booking
            .join_waitlist(pb::JoinWaitlistRequest {
                request_id: format!("steal-wait-{n}"),
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                from_date: day(1),
                to_date: day(3),
                times: Vec::new(),
                applicants: Vec::new(),
                confirmation_number: conf.clone(),
                passport_number: passport.clone(),
            })
            .await
            .unwrap_err();
        for status in [&get, &render, &cancel, &moved, &wait] {
            assert_refused(status, Code::NotFound, "APPOINTMENT_NOT_FOUND");
            assert!(
                !status
                    .message()
                    .contains(&applicant(1).surname.to_uppercase())
                    && !status.message().contains("P0000002"),
                "a refusal leaks nothing: {status:?}"
            );
        }
        answers.push(get.message().to_owned());
    }
    // A number that does not exist at all answers the very same thing: no oracle for "this
    // number exists, only the passport is wrong".
    let none = booking
        .get_appointment(pb::GetAppointmentRequest {
            confirmation_number: "ABCDEFGHJKMNPQ".into(),
            passport_number: applicant(1).passport_number,
        })
        .await
        .unwrap_err();
    assert_refused(&none, Code::NotFound, "APPOINTMENT_NOT_FOUND");
    for a in &answers {
        assert_eq!(a, none.message());
    }
    assert_eq!(state(&server, &date).await, before);
    // Either applicant of the group may read it (the dependent too).
    for a in [applicant(1), applicant(2)] {
        booking
            .get_appointment(pb::GetAppointmentRequest {
                confirmation_number: conf.clone(),
                passport_number: a.passport_number.to_lowercase(),
            })
            .await
            .expect("an applicant of the group reads it");
    }
    server.stop().await;
}

/// Limits as the binary has them by default, except a booking rate high enough that only the
/// failed-lookup budget (10 misses, then 30 an hour) stops a guesser.
fn guessing_limits() -> ServeOptions {
    ServeOptions {
        limits: LimitSettings {
            booking_per_minute: 1_000_000,
            booking_burst: 1_000_000,
            ..LimitSettings::default()
        },
        ..ServeOptions::default()
    }
}

/// A plausible confirmation number for guess `n` (14 characters of the alphabet, no 0/O/1/I/L/U).
fn guess(n: u32) -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut x = u64::from(n) * 2_654_435_761 + 12_345;
    (0..14)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x = x / ALPHABET.len() as u64 + u64::from(n) * 7 + 3;
            c
        })
        .collect()
}

#[tokio::test]
async fn guessing_confirmation_numbers_at_scale_is_rate_limited_on_every_rpc_and_yields_nothing() {
    const GUESSES: u32 = 300;
    let limit_burst = LimitSettings::default().lookup_failure_burst;
    for rpc in [
        "GetAppointment",
        "RenderConfirmation",
        "CancelAppointment",
        "RescheduleAppointment",
        "JoinWaitlist",
    ] {
        let server = TestServer::start_with(Arc::new(MemoryStore::new()), guessing_limits()).await;
        let date = day(7);
        open_day(&server, &date, 5).await;
        register_receipts(&server, [1]).await;
        let mut booking = server.booking().await;
        booking
            .book_appointment(book_request(
                "target-1",
                slot(&date, "08:00"),
                vec![applicant(1)],
            ))
            .await
            .expect("the appointment a guesser is after");
        let before = state(&server, &date).await;
        let passport = applicant(1).passport_number;
        let (mut not_found, mut limited, mut found) = (0u32, 0u32, 0u32);
        for n in 0..GUESSES {
            let conf = guess(n);
            let result = match rpc {
                "GetAppointment" => booking
                    .get_appointment(pb::GetAppointmentRequest {
                        confirmation_number: conf,
                        passport_number: passport.clone(),
                    })
                    .await
                    .map(|_| ()),
                "RenderConfirmation" => booking
                    .render_confirmation(pb::RenderConfirmationRequest {
                        confirmation_number: conf,
                        passport_number: passport.clone(),
                    })
                    .await
                    .map(|_| ()),
                "CancelAppointment" => booking
                    .cancel_appointment(pb::CancelAppointmentRequest {
                        confirmation_number: conf,
                        passport_number: passport.clone(),
                        request_id: format!("guess-{n}"),
                    })
                    .await
                    .map(|_| ()),
                "JoinWaitlist" => booking
                    .join_waitlist(pb::JoinWaitlistRequest {
                        request_id: format!("guess-{n}"),
                        post_id: "BEIJING".into(),
                        category: "ALL_OTHERS".into(),
                        from_date: day(1),
                        to_date: day(3),
                        times: Vec::new(),
                        applicants: Vec::new(),
                        confirmation_number: conf,
                        passport_number: passport.clone(),
                    })
                    .await
                    .map(|_| ()),
                _ => booking
                    .reschedule_appointment(pb::RescheduleAppointmentRequest {
                        confirmation_number: conf,
                        passport_number: passport.clone(),
                        request_id: format!("guess-{n}"),
                        new_slot: Some(slot(&date, "08:30")),
                    })
                    .await
                    .map(|_| ()),
            };
            match result {
                Ok(()) => found += 1,
                Err(s) if s.code() == Code::NotFound => not_found += 1,
                Err(s) => {
                    assert_refused(&s, Code::ResourceExhausted, "RATE_LIMITED");
                    let info = s.get_details_error_info().expect("ErrorInfo");
                    assert_eq!(
                        info.metadata.get("limit").map(String::as_str),
                        Some("lookup_failures"),
                        "{rpc}"
                    );
                    let retry = s.get_details_retry_info().expect("RetryInfo");
                    assert!(
                        retry.retry_delay.is_some_and(|d| d > Duration::ZERO),
                        "{rpc}: {retry:?}"
                    );
                    limited += 1;
                }
            }
        }
        eprintln!("{rpc}: {not_found} misses answered, {limited} limited, {found} found");
        assert_eq!(found, 0, "{rpc}: a guess hit");
        // The burst, plus at most a token or two refilled while the loop ran.
        assert!(
            not_found <= limit_burst + 2,
            "{rpc}: {not_found} misses answered before the limit"
        );
        assert_eq!(not_found + limited, GUESSES, "{rpc}");
        assert_eq!(state(&server, &date).await, before, "{rpc}");
        server.stop().await;
    }
}

#[tokio::test]
async fn a_hold_opens_only_with_its_exact_id() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_day(&server, &date, 5).await;
    register_receipts(&server, 1..=2).await;
    // Two clients on their own connections; each holds for its own applicant.
    let mut alice = server.booking().await;
    let mut mallory = server.booking().await;
    let hold = |rid: &str, i: u32| pb::HoldSlotRequest {
        request_id: rid.into(),
        slot: Some(slot(&date, "08:15")),
        applicants: vec![applicant(i)],
    };
    let alices = alice
        .hold_slot(hold("alice-hold", 1))
        .await
        .expect("hold")
        .into_inner()
        .hold
        .expect("hold");
    let mallorys = mallory
        .hold_slot(hold("mallory-hold", 2))
        .await
        .expect("hold")
        .into_inner()
        .hold
        .expect("hold");
    assert_eq!(alices.hold_id.len(), 32, "128 bits as hex");
    let before = state(&server, &date).await;

    // Guessed ids: random 128-bit values, and Alice's id with one digit changed.
    let mut guesses: Vec<String> = (0..200)
        .map(|_| {
            slotd::domain::lifecycle::HoldId::generate()
                .as_str()
                .to_owned()
        })
        .collect();
    for i in 0..32 {
        let mut chars: Vec<char> = alices.hold_id.chars().collect();
        chars[i] = if chars[i] == '0' { '1' } else { '0' };
        guesses.push(chars.into_iter().collect());
    }
    for (n, id) in guesses.iter().enumerate() {
        let s = mallory
            .confirm_hold(pb::ConfirmHoldRequest {
                hold_id: id.clone(),
                request_id: format!("guess-confirm-{n}"),
            })
            .await
            .unwrap_err();
        assert_refused(&s, Code::NotFound, "HOLD_NOT_FOUND");
        let s = mallory
            .release_hold(pb::ReleaseHoldRequest {
                hold_id: id.clone(),
                request_id: format!("guess-release-{n}"),
            })
            .await
            .unwrap_err();
        assert_refused(&s, Code::NotFound, "HOLD_NOT_FOUND");
    }
    // A prefix or an extended id is not the id.
    for id in [
        &alices.hold_id[..31],
        &alices.hold_id[..16],
        &format!("{}0", alices.hold_id),
    ] {
        let s = mallory
            .confirm_hold(pb::ConfirmHoldRequest {
                hold_id: id.to_owned(),
                request_id: "prefix".into(),
            })
            .await
            .unwrap_err();
        assert_names_field(&s, "hold_id");
    }
    assert_eq!(state(&server, &date).await, before);

    // Mallory's own id confirms Mallory's hold, never Alice's: the id selects the hold.
    let confirmed = mallory
        .confirm_hold(pb::ConfirmHoldRequest {
            hold_id: mallorys.hold_id.clone(),
            request_id: "mallory-confirm".into(),
        })
        .await
        .expect("own hold")
        .into_inner()
        .appointment
        .expect("appointment");
    assert_eq!(
        confirmed.applicants[0].passport_number,
        applicant(2).passport_number
    );
    // Alice's hold is still hers to confirm, with the exact id.
    let alice_appt = alice
        .confirm_hold(pb::ConfirmHoldRequest {
            hold_id: alices.hold_id.clone(),
            request_id: "alice-confirm".into(),
        })
        .await
        .expect("alice confirms")
        .into_inner()
        .appointment
        .expect("appointment");
    assert_eq!(
        alice_appt.applicants[0].passport_number,
        applicant(1).passport_number
    );
    server.stop().await;
}

#[track_caller]
fn assert_names_field(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(bad_fields(status).iter().any(|f| f == field), "{status:?}");
}

async fn enable_room(server: &TestServer) {
    configure_room(server, room_config(600, 10)).await;
}

/// Joins and waits (bounded) until admitted; returns ticket id, secret and token.
async fn admitted(server: &TestServer, key: &str) -> (String, String, String) {
    let joined = server
        .waiting_room()
        .await
        .join(pb::JoinRequest {
            client_key: client_key(key),
        })
        .await
        .expect("join")
        .into_inner();
    let id = joined.status.expect("status").ticket_id;
    for _ in 0..100 {
        let status = server
            .waiting_room()
            .await
            .get_status(pb::GetStatusRequest {
                ticket_id: id.clone(),
                ticket_secret: joined.ticket_secret.clone(),
            })
            .await
            .expect("status")
            .into_inner()
            .status
            .expect("status");
        if !status.admission_token.is_empty() {
            return (id, joined.ticket_secret, status.admission_token);
        }
        tokio::time::sleep(slotd::app::room::TICK_INTERVAL).await;
    }
    panic!("{key} was never admitted");
}

#[tokio::test]
async fn admission_tokens_of_a_ticket_that_left_or_never_existed_open_nothing() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_day(&server, &date, 5).await;
    register_receipts(&server, 1..=3).await;
    enable_room(&server).await;
    let mut booking = server.booking().await;
    let before = state(&server, &date).await;

    // Admitted, then left: the token dies with the session.
    let (id, secret, token) = admitted(&server, "leaver").await;
    server
        .waiting_room()
        .await
        .leave(pb::LeaveRequest {
            ticket_id: id,
            ticket_secret: secret,
        })
        .await
        .expect("leave");
    // A correctly signed token for a ticket the room never issued (as from a leaked key).
    let ghost = slotd::domain::admission::AdmissionKeys::new(ADMISSION_KEY)
        .expect("key")
        .mint(
            &slotd::domain::room::TicketId::generate(),
            &slotd::domain::room::ClientKey::parse(&client_key("ghost")).expect("key"),
            epoch() + chrono::Duration::minutes(10),
            epoch(),
        );
    for token in [token, ghost] {
        let request = book_request("room-1", slot(&date, "08:15"), vec![applicant(1)]);
        let s = booking
            .book_appointment(with_token(request, &token))
            .await
            .unwrap_err();
        assert_refused(&s, Code::PermissionDenied, "ADMISSION_REVOKED");
        // Every gated RPC: holds, confirms, releases and moves too.
        let s = booking
            .hold_slot(with_token(
                pb::HoldSlotRequest {
                    request_id: "room-2".into(),
                    slot: Some(slot(&date, "08:15")),
                    applicants: vec![applicant(1)],
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_refused(&s, Code::PermissionDenied, "ADMISSION_REVOKED");
    }
    // Without any token, every gated RPC asks for one.
    let s = booking
        .hold_slot(pb::HoldSlotRequest {
            request_id: "room-3".into(),
            slot: Some(slot(&date, "08:15")),
            applicants: vec![applicant(1)],
        })
        .await
        .unwrap_err();
    assert_refused(&s, Code::Unauthenticated, "ADMISSION_REQUIRED");
    let s = booking
        .reschedule_appointment(pb::RescheduleAppointmentRequest {
            confirmation_number: "ABCDEFGHJKMNPQ".into(),
            passport_number: applicant(1).passport_number,
            request_id: "room-4".into(),
            new_slot: Some(slot(&date, "08:30")),
        })
        .await
        .unwrap_err();
    assert_refused(&s, Code::Unauthenticated, "ADMISSION_REQUIRED");
    assert_eq!(state(&server, &date).await, before);
    server.stop().await;
}

/// No receipt oracle (issue #20, item 5): a receipt nobody registered and someone else's
/// receipt answer exactly alike (RECEIPT_NOT_REGISTERED, same message but for the number the
/// caller sent), on BookAppointment, HoldSlot and JoinWaitlist; a passport that waits answers
/// ALREADY_WAITING only with its own receipt; and receipt probes spend the failed-lookup budget,
/// so probing which receipts exist stops after the burst. The applicant who mistyped a number
/// gets the refusal that tells them what to check, and books at once with the right one.
#[tokio::test]
async fn receipt_probes_answer_alike_learn_nothing_and_spend_the_failed_lookup_budget() {
    let limit_burst = LimitSettings::default().lookup_failure_burst;
    for rpc in ["BookAppointment", "HoldSlot", "JoinWaitlist"] {
        let server = TestServer::start_with(Arc::new(MemoryStore::new()), guessing_limits()).await;
        let date = day(7);
        open_day(&server, &date, 5).await;
        register_receipts(&server, [1, 2, 3]).await;
        let mut booking = server.booking().await;
        // Applicant 3 waits: the waitlist part of the oracle.
        booking
            .join_waitlist(pb::JoinWaitlistRequest {
                request_id: "waiting".into(),
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                from_date: day(1),
                to_date: day(3),
                times: Vec::new(),
                applicants: vec![applicant(3)],
                confirmation_number: String::new(),
                passport_number: String::new(),
            })
            .await
            .unwrap();
        let before = state(&server, &date).await;
        let call = |n: u32, a: pb::Applicant| {
            let mut booking = booking.clone();
            let date = date.clone();
            async move {
                let request_id = format!("probe-{n}");
                match rpc {
                    "BookAppointment" => booking
                        .book_appointment(book_request(&request_id, slot(&date, "08:00"), vec![a]))
                        .await
                        .map(|_| ()),
                    "HoldSlot" => booking
                        .hold_slot(pb::HoldSlotRequest {
                            request_id,
                            slot: Some(slot(&date, "08:00")),
                            applicants: vec![a],
                        })
                        .await
                        .map(|_| ()),
                    _ => booking
                        .join_waitlist(pb::JoinWaitlistRequest {
                            request_id,
                            post_id: "BEIJING".into(),
                            category: "ALL_OTHERS".into(),
                            from_date: day(1),
                            to_date: day(3),
                            times: Vec::new(),
                            applicants: vec![a],
                            confirmation_number: String::new(),
                            passport_number: String::new(),
                        })
                        .await
                        .map(|_| ()),
                }
            }
        };
        // The receipt of applicant 2 exists, that of 9 does not: the answers must not differ.
        let with_receipt = |passport: u32, receipt: u32| pb::Applicant {
            receipt_number: applicant(receipt).receipt_number,
            ..applicant(passport)
        };
        let someone_elses = call(0, with_receipt(1, 2)).await.unwrap_err();
        let nobodys = call(1, with_receipt(1, 9)).await.unwrap_err();
        for s in [&someone_elses, &nobodys] {
            assert_refused(s, Code::FailedPrecondition, "RECEIPT_NOT_REGISTERED");
        }
        assert_eq!(
            someone_elses
                .message()
                .replace(&applicant(2).receipt_number, "R"),
            nobodys.message().replace(&applicant(9).receipt_number, "R"),
            "{rpc}"
        );
        // A waiting passport with a receipt that is not its own: no ALREADY_WAITING.
        let waiting = call(2, with_receipt(3, 2)).await.unwrap_err();
        assert_refused(&waiting, Code::FailedPrecondition, "RECEIPT_NOT_REGISTERED");
        assert_eq!(state(&server, &date).await, before, "{rpc}");

        // Probing on: after the burst (three misses spent above) the budget is gone.
        let (mut answered, mut limited) = (3u32, 0u32);
        for n in 3..40 {
            match call(n, with_receipt(1, 100 + n)).await {
                Ok(()) => panic!("{rpc}: a probe succeeded"),
                Err(s) if s.code() == Code::FailedPrecondition => {
                    assert_refused(&s, Code::FailedPrecondition, "RECEIPT_NOT_REGISTERED");
                    answered += 1;
                }
                Err(s) => {
                    assert_refused(&s, Code::ResourceExhausted, "RATE_LIMITED");
                    let info = s.get_details_error_info().expect("ErrorInfo");
                    assert_eq!(
                        info.metadata.get("limit").map(String::as_str),
                        Some("lookup_failures"),
                        "{rpc}"
                    );
                    limited += 1;
                }
            }
        }
        assert!(
            answered <= limit_burst + 2 && limited > 0,
            "{rpc}: {answered} probes answered, {limited} limited"
        );
        assert_eq!(state(&server, &date).await, before, "{rpc}");
        server.stop().await;

        // The applicant who mistyped once is answered what to check, and then succeeds.
        let server = TestServer::start_with(Arc::new(MemoryStore::new()), guessing_limits()).await;
        open_day(&server, &date, 5).await;
        register_receipts(&server, [1]).await;
        let mut booking = server.booking().await;
        let mut typo = applicant(1);
        typo.receipt_number = applicant(7).receipt_number;
        let status = booking
            .book_appointment(book_request("typo", slot(&date, "08:00"), vec![typo]))
            .await
            .unwrap_err();
        assert_refused(&status, Code::FailedPrecondition, "RECEIPT_NOT_REGISTERED");
        assert!(
            status
                .message()
                .contains("check the receipt and passport numbers"),
            "{status:?}"
        );
        booking
            .book_appointment(book_request(
                "right",
                slot(&date, "08:00"),
                vec![applicant(1)],
            ))
            .await
            .expect("the right numbers book");
        server.stop().await;
    }
}
