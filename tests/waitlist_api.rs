//! The waitlist over gRPC on the real server (127.0.0.1:0), on every backend (`backend_matrix!`):
//! the whole flow with WatchOffers (join, a cancellation, the offer on the stream, accept),
//! every refusal naming its field and changing nothing, the entry secret, the operator share,
//! and a public booking storm that never takes a seat a waiter is owed.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Code;

use slotd::api::pb;
use slotd::domain::admission::AdmissionKeys;
use slotd::domain::waitlist::EntryId;
use slotd::store::Inventory;
use support::*;

/// Runs a case on one backend's store (`backend_matrix!`, tests/support/backend.rs).
async fn on_store(backend: support::backend::Backend, case: impl AsyncFnOnce(Arc<dyn Inventory>)) {
    case(backend.store()).await;
}

backend_matrix!(
    on_store;
    a_waiter_watches_its_offer_arrive_after_a_cancellation_and_accepts_it,
    waitlist_refusals_name_the_field_and_change_nothing,
    a_public_booking_storm_never_takes_a_seat_a_waiter_is_owed,
    an_offer_is_accepted_without_queueing_again_in_the_waiting_room,
    an_appointment_waits_for_an_earlier_date_and_moves_when_one_comes,
);

fn join_req(request_id: &str, from: &str, to: &str, ids: &[u32]) -> pb::JoinWaitlistRequest {
    pb::JoinWaitlistRequest {
        request_id: request_id.into(),
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        from_date: from.into(),
        to_date: to.into(),
        times: Vec::new(),
        applicants: ids.iter().map(|i| applicant(*i)).collect(),
        confirmation_number: String::new(),
        passport_number: String::new(),
    }
}

fn cancel_req(
    confirmation: &str,
    passport: &str,
    request_id: &str,
) -> pb::CancelAppointmentRequest {
    pb::CancelAppointmentRequest {
        confirmation_number: confirmation.into(),
        passport_number: passport.into(),
        request_id: request_id.into(),
    }
}

async fn a_waiter_watches_its_offer_arrive_after_a_cancellation_and_accepts_it(
    store: Arc<dyn Inventory>,
) {
    let server = TestServer::start(store).await;
    let date = day(2);
    open_times(&server, &date, "08:00", "08:00", 1).await;
    register_receipts(&server, 1..=3).await;
    let mut booking = server.booking().await;
    let taken = booking
        .book_appointment(book_request("a", slot(&date, "08:00"), vec![applicant(1)]))
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();

    let joined = booking
        .join_waitlist(join_req("w", &day(1), &day(3), &[2, 3]))
        .await
        .unwrap()
        .into_inner();
    let entry = joined.entry.unwrap();
    assert_eq!(entry.status, pb::WaitlistStatus::Waiting as i32);
    assert_eq!(entry.position, 1);
    assert_eq!(entry.entry_id.len(), 32);

    let mut stream = booking
        .watch_offers(pb::WatchOffersRequest {
            entry_id: entry.entry_id.clone(),
            entry_secret: joined.entry_secret.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.status, pb::WaitlistStatus::Waiting as i32);

    // One seat comes back: the group needs two, so nothing is offered and the seat stays public.
    booking
        .cancel_appointment(cancel_req(&taken.confirmation_number, "P0000001", "c1"))
        .await
        .unwrap();
    assert_eq!(seats_left(&server, &date, "08:00").await, 1);
    // The operator adds a seat: now the group fits, and both seats are offered at once.
    server
        .admin()
        .await
        .set_slot_capacity(admin(pb::SetSlotCapacityRequest {
            slot: Some(slot(&date, "08:00")),
            capacity: 2,
        }))
        .await
        .unwrap();
    assert_eq!(seats_left(&server, &date, "08:00").await, 0);

    let offered = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the offer reaches the watcher within seconds")
        .unwrap()
        .unwrap();
    assert_eq!(offered.status, pb::WaitlistStatus::Offered as i32);
    let offer = offered.offer.unwrap();
    assert_eq!(offer.entry_id, entry.entry_id);
    assert_eq!(offer.slot.as_ref().unwrap().time, "08:00");
    assert_eq!(offer.applicants.len(), 2);

    let appointment = booking
        .confirm_hold(pb::ConfirmHoldRequest {
            hold_id: offer.hold_id.clone(),
            request_id: "accept".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    assert_eq!(appointment.applicants.len(), 2);
    let last = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the fulfilment reaches the watcher")
        .unwrap()
        .unwrap();
    assert_eq!(last.status, pb::WaitlistStatus::Fulfilled as i32);
    assert_eq!(last.confirmation_number, appointment.confirmation_number);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the stream ends")
            .is_none(),
        "a finished entry ends its stream"
    );
    let read = booking
        .get_waitlist_entry(pb::GetWaitlistEntryRequest {
            entry_id: entry.entry_id.clone(),
            entry_secret: joined.entry_secret.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(read.status, pb::WaitlistStatus::Fulfilled as i32);
    assert_eq!(read.position, 0);
    assert_audit_clean(&server, &date).await;
    server.stop().await;
}

async fn waitlist_refusals_name_the_field_and_change_nothing(store: Arc<dyn Inventory>) {
    let server = TestServer::start(store).await;
    let date = day(1);
    open_times(&server, &date, "08:00", "08:00", 1).await;
    register_receipts(&server, 1..=2).await;
    let mut booking = server.booking().await;

    let cases: Vec<(pb::JoinWaitlistRequest, &str)> = vec![
        (join_req("r1", &day(-1), &day(2), &[1]), "from_date"),
        (join_req("r2", &day(1), &day(400), &[1]), "to_date"),
        (join_req("r3", &day(3), &day(1), &[1]), "to_date"),
        (join_req("r4", "2030-02-30", &day(2), &[1]), "from_date"),
        (join_req("r5", &day(1), &day(2), &[]), "applicants"),
        (
            join_req("r6", &day(1), &day(2), &[1, 1]),
            "applicants[1].passport_number",
        ),
        (join_req("", &day(1), &day(2), &[1]), "request_id"),
        (
            pb::JoinWaitlistRequest {
                times: vec!["08:07".into()],
                ..join_req("r7", &day(1), &day(2), &[1])
            },
            "times[0]",
        ),
        (
            pb::JoinWaitlistRequest {
                times: vec!["24:00".into()],
                ..join_req("r8", &day(1), &day(2), &[1])
            },
            "times[0]",
        ),
        (
            pb::JoinWaitlistRequest {
                post_id: "x".repeat(10_000),
                ..join_req("r9", &day(1), &day(2), &[1])
            },
            "post_id",
        ),
    ];
    for (request, field) in cases {
        let status = booking.join_waitlist(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            bad_fields(&status).iter().any(|f| f == field),
            "{field}: {:?} {status:?}",
            bad_fields(&status)
        );
    }
    // Stateful refusals.
    let status = booking
        .join_waitlist(join_req("r10", &day(1), &day(2), &[9]))
        .await
        .unwrap_err();
    assert_refused(&status, Code::FailedPrecondition, "RECEIPT_NOT_REGISTERED");
    let joined = booking
        .join_waitlist(join_req("ok", &day(1), &day(2), &[1]))
        .await
        .unwrap()
        .into_inner();
    let status = booking
        .join_waitlist(join_req("again", &day(1), &day(3), &[2, 1]))
        .await
        .unwrap_err();
    assert_refused(&status, Code::AlreadyExists, "ALREADY_WAITING");

    // The entry secret guards reading, watching and leaving.
    let entry_id = joined.entry.unwrap().entry_id;
    let wrong = booking
        .get_waitlist_entry(pb::GetWaitlistEntryRequest {
            entry_id: entry_id.clone(),
            entry_secret: "not-the-secret".into(),
        })
        .await
        .unwrap_err();
    assert_refused(&wrong, Code::Unauthenticated, "ENTRY_SECRET_INVALID");
    let wrong = booking
        .leave_waitlist(pb::LeaveWaitlistRequest {
            entry_id: entry_id.clone(),
            entry_secret: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    assert!(bad_fields(&wrong).contains(&"entry_secret".to_string()));
    let wrong = booking
        .watch_offers(pb::WatchOffersRequest {
            entry_id: "zz".into(),
            entry_secret: joined.entry_secret.clone(),
        })
        .await
        .unwrap_err();
    assert!(bad_fields(&wrong).contains(&"entry_id".to_string()));
    // Another entry's secret does not open this one; an unknown entry with its own secret is
    // simply not found.
    let keys = AdmissionKeys::new(ADMISSION_KEY).unwrap();
    let unknown = EntryId::generate();
    let wrong = booking
        .get_waitlist_entry(pb::GetWaitlistEntryRequest {
            entry_id: unknown.to_string(),
            entry_secret: joined.entry_secret.clone(),
        })
        .await
        .unwrap_err();
    assert_refused(&wrong, Code::Unauthenticated, "ENTRY_SECRET_INVALID");
    let missing = booking
        .get_waitlist_entry(pb::GetWaitlistEntryRequest {
            entry_id: unknown.to_string(),
            entry_secret: keys.entry_secret(&unknown),
        })
        .await
        .unwrap_err();
    assert_refused(&missing, Code::NotFound, "WAITLIST_ENTRY_NOT_FOUND");

    // The operator share: token required, 0-100.
    let mut ops = server.admin().await;
    let share = |percent| pb::SetWaitlistShareRequest {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        percent,
    };
    assert_eq!(
        ops.set_waitlist_share(share(50)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let bad = ops.set_waitlist_share(admin(share(101))).await.unwrap_err();
    assert!(bad_fields(&bad).contains(&"percent".to_string()));
    let bad = ops
        .set_waitlist_share(admin(pb::SetWaitlistShareRequest {
            post_id: "NOWHERE".into(),
            ..share(10)
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::NotFound);
    assert_eq!(
        ops.set_waitlist_share(admin(share(100)))
            .await
            .unwrap()
            .into_inner()
            .percent,
        100
    );

    // Nothing above changed the inventory, and the one valid entry is first in line.
    assert_eq!(seats_left(&server, &date, "08:00").await, 1);
    let read = booking
        .get_waitlist_entry(pb::GetWaitlistEntryRequest {
            entry_id,
            entry_secret: joined.entry_secret,
        })
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(read.position, 1);
    assert_audit_clean(&server, &date).await;
    server.stop().await;
}

async fn a_public_booking_storm_never_takes_a_seat_a_waiter_is_owed(store: Arc<dyn Inventory>) {
    let server = TestServer::start(store).await;
    let date = day(1);
    open_times(&server, &date, "08:00", "08:00", 4).await;
    register_receipts(&server, 1..=208).await;
    let mut booking = server.booking().await;
    let mut numbers = Vec::new();
    for i in 1..=4u32 {
        let a = booking
            .book_appointment(book_request(
                &format!("a{i}"),
                slot(&date, "08:00"),
                vec![applicant(i)],
            ))
            .await
            .unwrap()
            .into_inner()
            .appointment
            .unwrap();
        numbers.push((i, a.confirmation_number));
    }
    let mut entries = Vec::new();
    for i in 5..=8u32 {
        let joined = booking
            .join_waitlist(join_req(&format!("w{i}"), &date, &date, &[i]))
            .await
            .unwrap()
            .into_inner();
        entries.push(joined);
    }
    // 200 public bookings race the 4 cancellations on 4 connections.
    let mut tasks = Vec::new();
    for i in 9..=208u32 {
        let mut client = if i % 4 == 0 {
            booking.clone()
        } else {
            server.booking().await
        };
        let date = date.clone();
        tasks.push(tokio::spawn(async move {
            client
                .book_appointment(book_request(
                    &format!("p{i}"),
                    slot(&date, "08:00"),
                    vec![applicant(i)],
                ))
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }));
    }
    for (i, number) in numbers {
        let mut client = booking.clone();
        tasks.push(tokio::spawn(async move {
            client
                .cancel_appointment(cancel_req(&number, &format!("P{i:07}"), &format!("c{i}")))
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(code) => assert_eq!(code, Code::FailedPrecondition),
        }
    }
    assert_eq!(
        ok, 4,
        "only the 4 cancellations succeed: every freed seat was owed"
    );
    for joined in entries {
        let entry = booking
            .get_waitlist_entry(pb::GetWaitlistEntryRequest {
                entry_id: joined.entry.unwrap().entry_id,
                entry_secret: joined.entry_secret,
            })
            .await
            .unwrap()
            .into_inner()
            .entry
            .unwrap();
        assert_eq!(entry.status, pb::WaitlistStatus::Offered as i32);
    }
    assert_eq!(seats_left(&server, &date, "08:00").await, 0);
    assert_audit_clean(&server, &date).await;
    server.stop().await;
}

async fn an_offer_is_accepted_without_queueing_again_in_the_waiting_room(
    store: Arc<dyn Inventory>,
) {
    let server = TestServer::start(store).await;
    let date = day(1);
    open_times(&server, &date, "08:00", "08:15", 1).await;
    register_receipts(&server, 1..=3).await;
    let mut booking = server.booking().await;
    let taken = booking
        .book_appointment(book_request("a", slot(&date, "08:00"), vec![applicant(1)]))
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    let joined = booking
        .join_waitlist(join_req("w", &date, &date, &[2]))
        .await
        .unwrap()
        .into_inner();
    let plain_hold = booking
        .hold_slot(pb::HoldSlotRequest {
            request_id: "h".into(),
            slot: Some(slot(&date, "08:15")),
            applicants: vec![applicant(3)],
        })
        .await
        .unwrap()
        .into_inner()
        .hold
        .unwrap();

    // The rush begins: the operator turns the waiting room on.
    configure_room(&server, room_config(60, 10)).await;
    // (The cancellation comes from a store call: a gated CancelAppointment needs a token.)
    server
        .store
        .cancel(
            &slotd::domain::rules::Cancellation {
                request_id: slotd::domain::types::RequestId::parse("c").unwrap(),
                confirmation: slotd::domain::types::ConfirmationNumber::parse(
                    &taken.confirmation_number,
                )
                .unwrap(),
                passport: slotd::domain::types::PassportNumber::parse("P0000001").unwrap(),
                admission: None,
            },
            epoch(),
        )
        .await
        .unwrap();
    let offer = booking
        .get_waitlist_entry(pb::GetWaitlistEntryRequest {
            entry_id: joined.entry.unwrap().entry_id,
            entry_secret: joined.entry_secret,
        })
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap()
        .offer
        .expect("the freed seat is offered");
    // An ordinary hold still needs an admission token; the offer does not.
    let refused = booking
        .confirm_hold(pb::ConfirmHoldRequest {
            hold_id: plain_hold.hold_id,
            request_id: "confirm-plain".into(),
        })
        .await
        .unwrap_err();
    assert_refused(&refused, Code::Unauthenticated, "ADMISSION_REQUIRED");
    booking
        .confirm_hold(pb::ConfirmHoldRequest {
            hold_id: offer.hold_id,
            request_id: "accept".into(),
        })
        .await
        .unwrap();
    assert_audit_clean(&server, &date).await;
    server.stop().await;
}

async fn an_appointment_waits_for_an_earlier_date_and_moves_when_one_comes(
    store: Arc<dyn Inventory>,
) {
    let server = TestServer::start(store).await;
    open_times(&server, &day(1), "08:00", "08:00", 1).await;
    open_times(&server, &day(5), "08:00", "08:00", 1).await;
    register_receipts(&server, 1..=2).await;
    let mut booking = server.booking().await;
    let book = |request_id: &str, date: &str, i: u32| {
        book_request(request_id, slot(date, "08:00"), vec![applicant(i)])
    };
    let mine = booking
        .book_appointment(book("mine", &day(5), 1))
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    let early = booking
        .book_appointment(book("early", &day(1), 2))
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    let moving = |request_id: &str, to: &str| pb::JoinWaitlistRequest {
        confirmation_number: mine.confirmation_number.clone(),
        passport_number: "P0000001".into(),
        ..join_req(request_id, &day(1), to, &[])
    };
    // Applicants come from the appointment; the range must end before it.
    let status = booking
        .join_waitlist(pb::JoinWaitlistRequest {
            applicants: vec![applicant(1)],
            ..moving("m0", &day(2))
        })
        .await
        .unwrap_err();
    assert!(bad_fields(&status).contains(&"applicants".to_string()));
    let status = booking
        .join_waitlist(moving("m1", &day(5)))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), vec!["to_date"]);
    let status = booking
        .join_waitlist(pb::JoinWaitlistRequest {
            passport_number: "P0000002".into(),
            ..moving("m2", &day(2))
        })
        .await
        .unwrap_err();
    assert_refused(&status, Code::NotFound, "APPOINTMENT_NOT_FOUND");
    let joined = booking
        .join_waitlist(moving("m3", &day(2)))
        .await
        .unwrap()
        .into_inner();
    let entry = joined.entry.unwrap();
    assert_eq!(entry.moving_confirmation_number, mine.confirmation_number);
    assert_eq!(entry.applicants.len(), 1);

    booking
        .cancel_appointment(cancel_req(&early.confirmation_number, "P0000002", "c"))
        .await
        .unwrap();
    let offer = booking
        .get_waitlist_entry(pb::GetWaitlistEntryRequest {
            entry_id: entry.entry_id.clone(),
            entry_secret: joined.entry_secret.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap()
        .offer
        .unwrap();
    let moved = booking
        .confirm_hold(pb::ConfirmHoldRequest {
            hold_id: offer.hold_id,
            request_id: "accept".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    assert_eq!(moved.confirmation_number, mine.confirmation_number);
    assert_eq!(moved.slot.unwrap().date, day(1));
    assert_eq!(moved.history.len(), 1);
    // The late seat is public again.
    assert_eq!(seats_left(&server, &day(5), "08:00").await, 1);
    assert_audit_clean(&server, &day(1)).await;
    assert_audit_clean(&server, &day(5)).await;
    server.stop().await;
}
