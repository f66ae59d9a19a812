//! End-to-end specification of the booking API: the real server on 127.0.0.1:0 (embedded store,
//! manual clock) driven through the generated gRPC clients.

use crate::support;

use std::collections::HashSet;

use chrono::Duration as ChronoDuration;
use tonic::{Code, Request};

use slotd::api::pb;
use support::*;

fn get(conf: &str, passport: &str) -> pb::GetAppointmentRequest {
    pb::GetAppointmentRequest {
        confirmation_number: conf.into(),
        passport_number: passport.into(),
    }
}

fn cancel(conf: &str, passport: &str, request_id: &str) -> pb::CancelAppointmentRequest {
    pb::CancelAppointmentRequest {
        confirmation_number: conf.into(),
        passport_number: passport.into(),
        request_id: request_id.into(),
    }
}

#[tokio::test]
async fn the_whole_booking_journey_works_end_to_end() {
    let server = TestServer::memory().await;
    let date = day(7);

    // The calendar lists the posts of the guide.
    let posts = server
        .calendar()
        .await
        .list_posts(pb::ListPostsRequest {})
        .await
        .unwrap()
        .into_inner()
        .posts;
    let beijing = posts
        .iter()
        .find(|p| p.post_id == "BEIJING")
        .expect("BEIJING listed");
    assert_eq!(beijing.address_zh, "北京市朝阳区安家楼路55号");
    assert!(beijing
        .categories
        .iter()
        .any(|c| c.category_id == "ALL_OTHERS"));
    assert_eq!(posts.len(), 10);

    // An operator opens a day; the payment system registers two receipts.
    open_day(&server, &date, 30).await;
    register_receipts(&server, [1, 2]).await;

    let dates = server
        .calendar()
        .await
        .list_available_dates(pb::ListAvailableDatesRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: day(0),
            to_date: day(30),
        })
        .await
        .unwrap()
        .into_inner()
        .dates;
    assert_eq!(dates.len(), 1);
    assert_eq!(dates[0].date, date);
    assert_eq!(dates[0].seats_available, 120);
    assert_eq!(dates[0].open_slots, 4);

    // A primary applicant and a dependent book 08:15 together.
    let mut booking = server.booking().await;
    let appt = booking
        .book_appointment(book_request(
            "journey-1",
            slot(&date, "08:15"),
            vec![applicant(1), applicant(2)],
        ))
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    assert_eq!(appt.confirmation_number.len(), 14);
    assert_eq!(appt.status, pb::AppointmentStatus::Booked as i32);
    assert_eq!(appt.applicants.len(), 2);
    assert_eq!(appt.applicants[0].given_name, "WEI");
    assert_eq!(seats_left(&server, &date, "08:15").await, 28);

    // Either applicant's passport reads it back.
    let read = booking
        .get_appointment(get(&appt.confirmation_number, "p0000002"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.appointment.unwrap(), appt);

    // The operator's manifest shows it.
    let manifest = server
        .admin()
        .await
        .list_appointments(admin(pb::ListAppointmentsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            date: date.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(manifest.appointments, vec![appt.clone()]);
    assert!(manifest.next_page_token.is_empty());

    // Cancelling returns both seats.
    let cancelled = booking
        .cancel_appointment(cancel(
            &appt.confirmation_number,
            "P0000001",
            "journey-cancel",
        ))
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    assert_eq!(cancelled.status, pb::AppointmentStatus::Cancelled as i32);
    assert_eq!(seats_left(&server, &date, "08:15").await, 30);
    assert_audit_clean(&server, &date).await;
    server.stop().await;
}

#[tokio::test]
async fn invalid_requests_are_refused_naming_each_field_and_change_nothing() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_day(&server, &date, 5).await;
    register_receipts(&server, [1, 2]).await;
    let mut booking = server.booking().await;

    let long = "A".repeat(10_000);
    let with = |f: &dyn Fn(&mut pb::BookAppointmentRequest)| {
        let mut r = book_request("bad-1", slot(&date, "08:00"), vec![applicant(1)]);
        f(&mut r);
        r
    };
    let cases: Vec<(pb::BookAppointmentRequest, &str)> = vec![
        (with(&|r| r.request_id = String::new()), "request_id"),
        (with(&|r| r.request_id = "has space".into()), "request_id"),
        (with(&|r| r.request_id = long.clone()), "request_id"),
        (with(&|r| r.slot = None), "slot"),
        (
            with(&|r| r.slot.as_mut().unwrap().date = "2031-02-30".into()),
            "slot.date",
        ),
        (
            with(&|r| r.slot.as_mut().unwrap().date = "2031-2-3".into()),
            "slot.date",
        ),
        (
            with(&|r| r.slot.as_mut().unwrap().time = "08:10".into()),
            "slot.time",
        ),
        (
            with(&|r| r.slot.as_mut().unwrap().time = "24:00".into()),
            "slot.time",
        ),
        (
            with(&|r| r.slot.as_mut().unwrap().time = "8:00".into()),
            "slot.time",
        ),
        (
            with(&|r| r.slot.as_mut().unwrap().post_id = "bei jing".into()),
            "slot.post_id",
        ),
        (
            with(&|r| r.slot.as_mut().unwrap().category = String::new()),
            "slot.category",
        ),
        (with(&|r| r.applicants.clear()), "applicants"),
        (
            with(&|r| r.applicants = (1..=11).map(applicant).collect()),
            "applicants",
        ),
        (
            with(&|r| r.applicants = vec![applicant(1), applicant(1)]),
            "applicants[1].passport_number",
        ),
        (
            with(&|r| r.applicants[0].passport_number = "E12".into()),
            "applicants[0].passport_number",
        ),
        (
            with(&|r| r.applicants[0].passport_number = long.clone()),
            "applicants[0].passport_number",
        ),
        (
            with(&|r| r.applicants[0].given_name = "W3i".into()),
            "applicants[0].given_name",
        ),
        (
            with(&|r| r.applicants[0].given_name = "伟".into()),
            "applicants[0].given_name",
        ),
        (
            with(&|r| r.applicants[0].given_name = "Wei\u{0007}".into()),
            "applicants[0].given_name",
        ),
        (
            with(&|r| r.applicants[0].given_name = "Wеi".into()),
            "applicants[0].given_name",
        ), // Cyrillic е
        (
            with(&|r| r.applicants[0].surname = String::new()),
            "applicants[0].surname",
        ),
        (
            with(&|r| r.applicants[0].surname = long.clone()),
            "applicants[0].surname",
        ),
        (
            with(&|r| r.applicants[0].ds160_confirmation = "AB00ABCDEF".into()),
            "applicants[0].ds160_confirmation",
        ),
        (
            with(&|r| r.applicants[0].ds160_confirmation = "AA00ABCDE".into()),
            "applicants[0].ds160_confirmation",
        ),
        (
            with(&|r| r.applicants[0].receipt_number = "R-1".into()),
            "applicants[0].receipt_number",
        ),
    ];
    for (request, field) in cases {
        let status = booking.book_appointment(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(reason(&status), "INVALID_ARGUMENT", "{field}");
        assert!(
            bad_fields(&status).iter().any(|f| f == field),
            "{field} not named in {:?}",
            bad_fields(&status)
        );
        assert!(
            status.message().contains(field),
            "{field} not in message {}",
            status.message()
        );
    }

    // Several violations come back together.
    let mut many = book_request("", slot(&date, "08:07"), vec![applicant(1)]);
    many.applicants[0].ds160_confirmation = "x".into();
    let status = booking.book_appointment(many).await.unwrap_err();
    assert_eq!(
        bad_fields(&status),
        vec![
            "request_id",
            "slot.time",
            "applicants[0].ds160_confirmation"
        ]
    );

    // Unknown post or category: NOT_FOUND.
    let mut r = book_request("nf-1", slot(&date, "08:00"), vec![applicant(1)]);
    r.slot.as_mut().unwrap().post_id = "LHASA".into();
    assert_refused(
        &booking.book_appointment(r).await.unwrap_err(),
        Code::NotFound,
        "POST_NOT_FOUND",
    );
    let mut r = book_request("nf-2", slot(&date, "08:00"), vec![applicant(1)]);
    r.slot.as_mut().unwrap().category = "INTERVIEW_WAIVER".into();
    assert_refused(
        &booking.book_appointment(r).await.unwrap_err(),
        Code::NotFound,
        "CATEGORY_NOT_FOUND",
    );
    // A slot never opened: NOT_FOUND.
    let r = book_request("nf-3", slot(&date, "15:00"), vec![applicant(1)]);
    assert_refused(
        &booking.book_appointment(r).await.unwrap_err(),
        Code::NotFound,
        "SLOT_NOT_FOUND",
    );

    // Past dates are invalid; a slot that already started today fails its precondition.
    let r = book_request("past-1", slot(&day(-1), "08:00"), vec![applicant(1)]);
    let status = booking.book_appointment(r).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&status), vec!["slot.date"]);
    open_day(&server, &day(0), 5).await; // today: the epoch is 08:00 in Beijing
    let r = book_request("started-1", slot(&day(0), "08:00"), vec![applicant(1)]);
    assert_refused(
        &booking.book_appointment(r).await.unwrap_err(),
        Code::FailedPrecondition,
        "SLOT_STARTED",
    );
    let r = book_request("started-2", slot(&day(0), "08:15"), vec![applicant(1)]);
    booking
        .book_appointment(r)
        .await
        .expect("08:15 today has not started yet");

    // Nothing changed on the day refused above.
    for time in ["08:00", "08:15", "08:30", "08:45"] {
        assert_eq!(seats_left(&server, &date, time).await, 5, "{time}");
    }
    assert_audit_clean(&server, &date).await;

    // Calendar, lookup and admin inputs are validated the same way.
    let status = server
        .calendar()
        .await
        .list_available_dates(pb::ListAvailableDatesRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: day(10),
            to_date: day(2),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), vec!["to_date"]);
    let status = server
        .calendar()
        .await
        .list_available_dates(pb::ListAvailableDatesRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: day(0),
            to_date: day(400),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), vec!["to_date"]);
    let status = booking
        .get_appointment(get("0OIL", "P0000001"))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), vec!["confirmation_number"]);
    server.stop().await;
}

#[tokio::test]
async fn hostile_messages_are_refused_and_the_server_keeps_serving() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_day(&server, &date, 5).await;
    let mut booking = server.booking().await;
    // A message far over the 64 KiB request limit.
    let mut huge = book_request("huge-1", slot(&date, "08:00"), vec![applicant(1)]);
    huge.applicants[0].given_name = "A".repeat(200_000);
    let status = booking.book_appointment(huge).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument
        ),
        "{status:?}"
    );
    // A thousand applicants are refused before being parsed one by one.
    let crowd = book_request(
        "crowd-1",
        slot(&date, "08:00"),
        (1..=1000).map(applicant).collect(),
    );
    let status = booking.book_appointment(crowd).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(seats_left(&server, &date, "08:00").await, 5);
    server.stop().await;
}

#[tokio::test]
async fn stored_state_rules_refuse_bookings_and_change_nothing() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_day(&server, &date, 5).await;
    register_receipts(&server, [1, 2]).await;
    let mut booking = server.booking().await;

    // A receipt nobody registered.
    let r = book_request("s-1", slot(&date, "08:00"), vec![applicant(9)]);
    assert_refused(
        &booking.book_appointment(r).await.unwrap_err(),
        Code::FailedPrecondition,
        "RECEIPT_NOT_REGISTERED",
    );
    // Someone else's receipt: answered like one nobody registered (no oracle).
    let mut a = applicant(1);
    a.receipt_number = applicant(2).receipt_number;
    let r = book_request("s-2", slot(&date, "08:00"), vec![a]);
    assert_refused(
        &booking.book_appointment(r).await.unwrap_err(),
        Code::FailedPrecondition,
        "RECEIPT_NOT_REGISTERED",
    );

    // Book applicant 1, then the same receipt again, and the same passport with a second receipt.
    let r = book_request("s-3", slot(&date, "08:00"), vec![applicant(1)]);
    booking.book_appointment(r).await.unwrap();
    let r = book_request("s-4", slot(&date, "08:30"), vec![applicant(1)]);
    assert_refused(
        &booking.book_appointment(r).await.unwrap_err(),
        Code::FailedPrecondition,
        "RECEIPT_IN_USE",
    );
    let mut second = applicant(1);
    second.receipt_number = "RSECOND1".into();
    server
        .admin()
        .await
        .register_receipt(admin(pb::RegisterReceiptRequest {
            receipt_number: "RSECOND1".into(),
            passport_number: second.passport_number.clone(),
            paid_at: epoch().to_rfc3339(),
            amount: "1369.00".into(),
            currency: "CNY".into(),
        }))
        .await
        .unwrap();
    let r = book_request("s-5", slot(&date, "08:30"), vec![second]);
    assert_refused(
        &booking.book_appointment(r).await.unwrap_err(),
        Code::AlreadyExists,
        "APPLICANT_ALREADY_BOOKED",
    );

    // A receipt paid 364 days before the epoch expires two days later.
    let mut old = applicant(3);
    old.receipt_number = "ROLD0003".into();
    server
        .admin()
        .await
        .register_receipt(admin(pb::RegisterReceiptRequest {
            receipt_number: "ROLD0003".into(),
            passport_number: old.passport_number.clone(),
            paid_at: (epoch() - ChronoDuration::days(364)).to_rfc3339(),
            amount: "185".into(),
            currency: "usd".into(),
        }))
        .await
        .unwrap();
    server.clock.advance(ChronoDuration::days(2));
    let r = book_request("s-6", slot(&date, "08:30"), vec![old]);
    assert_refused(
        &booking.book_appointment(r).await.unwrap_err(),
        Code::FailedPrecondition,
        "RECEIPT_EXPIRED",
    );

    assert_eq!(seats_left(&server, &date, "08:00").await, 4);
    assert_eq!(seats_left(&server, &date, "08:30").await, 5);
    assert_audit_clean(&server, &date).await;
    server.stop().await;
}

#[tokio::test]
async fn receipts_register_idempotently_and_conflicts_are_refused() {
    let server = TestServer::memory().await;
    let mut admin_client = server.admin().await;
    let receipt = pb::RegisterReceiptRequest {
        receipt_number: "R7777777".into(),
        passport_number: "E7777777".into(),
        paid_at: "2030-01-06T09:30:00+08:00".into(),
        amount: "185.00".into(),
        currency: "USD".into(),
    };
    let first = admin_client
        .register_receipt(admin(receipt.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let stored = first.receipt.unwrap();
    assert_eq!(stored.paid_at, "2030-01-06T01:30:00Z");
    assert_eq!(stored.expires_at, "2031-01-06T01:30:00Z");
    let again = admin_client
        .register_receipt(admin(receipt.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    let mut other = receipt.clone();
    other.passport_number = "E8888888".into();
    assert_refused(
        &admin_client
            .register_receipt(admin(other))
            .await
            .unwrap_err(),
        Code::AlreadyExists,
        "RECEIPT_CONFLICT",
    );

    for (field, mutate) in [
        (
            "amount",
            Box::new(|r: &mut pb::RegisterReceiptRequest| r.amount = "-5".into())
                as Box<dyn Fn(&mut _)>,
        ),
        (
            "amount",
            Box::new(|r: &mut pb::RegisterReceiptRequest| r.amount = "1.234".into()),
        ),
        (
            "amount",
            Box::new(|r: &mut pb::RegisterReceiptRequest| r.amount = "0".into()),
        ),
        (
            "currency",
            Box::new(|r: &mut pb::RegisterReceiptRequest| r.currency = "EUR".into()),
        ),
        (
            "paid_at",
            Box::new(|r: &mut pb::RegisterReceiptRequest| r.paid_at = "yesterday".into()),
        ),
        (
            "paid_at",
            Box::new(|r: &mut pb::RegisterReceiptRequest| {
                r.paid_at = "2031-01-01T00:00:00Z".into()
            }),
        ),
        (
            "receipt_number",
            Box::new(|r: &mut pb::RegisterReceiptRequest| r.receipt_number = "R1".into()),
        ),
    ] {
        let mut r = receipt.clone();
        r.receipt_number = "R9999999".into();
        mutate(&mut r);
        let status = admin_client.register_receipt(admin(r)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(bad_fields(&status), vec![field]);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_concurrent_bookings_on_24_seats_book_exactly_24() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_times(&server, &date, "09:00", "09:00", 24).await;
    register_receipts(&server, 1..=1000).await;

    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(server.channel().await);
    }
    let mut tasks = Vec::new();
    for i in 1..=1000u32 {
        let channel = channels[i as usize % channels.len()].clone();
        let date = date.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = pb::booking_service_client::BookingServiceClient::new(channel);
            client
                .book_appointment(book_request(
                    &format!("storm-{i}"),
                    slot(&date, "09:00"),
                    vec![applicant(i)],
                ))
                .await
        }));
    }
    let mut confirmations = HashSet::new();
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert!(
                    confirmations.insert(r.into_inner().appointment.unwrap().confirmation_number)
                );
            }
            Err(status) => {
                assert_refused(&status, Code::FailedPrecondition, "SLOT_FULL");
                full += 1;
            }
        }
    }
    assert_eq!(confirmations.len(), 24);
    assert_eq!(full, 976);
    assert_eq!(seats_left(&server, &date, "09:00").await, 0);
    assert_audit_clean(&server, &date).await;
    server.stop().await;
}

#[tokio::test]
async fn a_group_books_all_or_nothing() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_times(&server, &date, "08:00", "08:00", 3).await;
    register_receipts(&server, [1, 2, 3, 4]).await;
    let mut booking = server.booking().await;

    // The third member's receipt is not registered: nobody is booked.
    let r = book_request(
        "g-1",
        slot(&date, "08:00"),
        vec![applicant(1), applicant(2), applicant(9)],
    );
    assert_refused(
        &booking.book_appointment(r).await.unwrap_err(),
        Code::FailedPrecondition,
        "RECEIPT_NOT_REGISTERED",
    );
    assert_eq!(seats_left(&server, &date, "08:00").await, 3);

    // Two seats taken; a group of two no longer fits the one seat left.
    let r = book_request(
        "g-2",
        slot(&date, "08:00"),
        vec![applicant(1), applicant(2)],
    );
    booking.book_appointment(r).await.unwrap();
    let r = book_request(
        "g-3",
        slot(&date, "08:00"),
        vec![applicant(3), applicant(4)],
    );
    let status = booking.book_appointment(r).await.unwrap_err();
    assert_refused(&status, Code::FailedPrecondition, "SLOT_FULL");
    assert_eq!(seats_left(&server, &date, "08:00").await, 1);
    // The members of the refused group are free to book alone.
    let r = book_request("g-4", slot(&date, "08:00"), vec![applicant(3)]);
    booking.book_appointment(r).await.unwrap();
    assert_audit_clean(&server, &date).await;
    server.stop().await;
}

#[tokio::test]
async fn cancelling_returns_the_seats_exactly_once() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_times(&server, &date, "08:00", "08:00", 10).await;
    register_receipts(&server, [1, 2, 3]).await;
    let mut booking = server.booking().await;
    let appt = booking
        .book_appointment(book_request(
            "c-1",
            slot(&date, "08:00"),
            vec![applicant(1), applicant(2), applicant(3)],
        ))
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    assert_eq!(seats_left(&server, &date, "08:00").await, 7);

    // A wrong passport neither reads nor cancels, and says nothing about the appointment.
    let status = booking
        .get_appointment(get(&appt.confirmation_number, "P0000009"))
        .await
        .unwrap_err();
    assert_refused(&status, Code::NotFound, "APPOINTMENT_NOT_FOUND");
    let status = booking
        .cancel_appointment(cancel(&appt.confirmation_number, "P0000009", "c-x"))
        .await
        .unwrap_err();
    assert_refused(&status, Code::NotFound, "APPOINTMENT_NOT_FOUND");

    // Twenty concurrent cancels with different request ids: one wins.
    let channel = server.channel().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut client = pb::booking_service_client::BookingServiceClient::new(channel.clone());
        let conf = appt.confirmation_number.clone();
        tasks.push(tokio::spawn(async move {
            client
                .cancel_appointment(cancel(&conf, "P0000002", &format!("cancel-{i}")))
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_refused(&status, Code::FailedPrecondition, "APPOINTMENT_CANCELLED")
            }
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(seats_left(&server, &date, "08:00").await, 10);

    // The freed receipts book again.
    let r = book_request("c-2", slot(&date, "08:00"), vec![applicant(1)]);
    booking.book_appointment(r).await.unwrap();
    assert_eq!(seats_left(&server, &date, "08:00").await, 9);
    assert_audit_clean(&server, &date).await;
    server.stop().await;
}

#[tokio::test]
async fn a_retried_request_id_returns_the_first_outcome_and_books_nothing_twice() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_times(&server, &date, "08:00", "08:00", 10).await;
    register_receipts(&server, [1, 2]).await;
    let mut booking = server.booking().await;
    let request = book_request("idem-1", slot(&date, "08:00"), vec![applicant(1)]);
    let first = booking
        .book_appointment(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = booking
        .book_appointment(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    assert_eq!(seats_left(&server, &date, "08:00").await, 9);

    // The same id with other content is refused, not answered with the first outcome.
    let other = book_request("idem-1", slot(&date, "08:00"), vec![applicant(2)]);
    assert_refused(
        &booking.book_appointment(other).await.unwrap_err(),
        Code::AlreadyExists,
        "REQUEST_ID_REUSED",
    );

    // Cancel retries likewise.
    let conf = first.appointment.unwrap().confirmation_number;
    let c1 = booking
        .cancel_appointment(cancel(&conf, "P0000001", "idem-c"))
        .await
        .unwrap()
        .into_inner();
    let c2 = booking
        .cancel_appointment(cancel(&conf, "P0000001", "idem-c"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c1, c2);
    assert_eq!(seats_left(&server, &date, "08:00").await, 10);
    assert_audit_clean(&server, &date).await;
    server.stop().await;
}

#[tokio::test]
async fn operator_rpcs_need_the_admin_token_and_change_nothing_without_it() {
    let server = TestServer::memory().await;
    let date = day(7);
    let mut client = server.admin().await;
    let open = pb::OpenSlotsRequest {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        from_date: date.clone(),
        to_date: date.clone(),
        weekdays: vec![pb::Weekday::Monday as i32, pb::Weekday::Tuesday as i32],
        first_time: "08:00".into(),
        last_time: "09:00".into(),
        seats_per_slot: 10,
    };
    let status = client.open_slots(open.clone()).await.unwrap_err();
    assert_refused(&status, Code::Unauthenticated, "UNAUTHENTICATED");
    for header in [
        "Bearer wrong-token-but-long-enough",
        "test-admin-token-0123456789",
        "Basic abc",
    ] {
        let mut request = Request::new(open.clone());
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
        let status = client.open_slots(request).await.unwrap_err();
        assert_refused(&status, Code::Unauthenticated, "UNAUTHENTICATED");
    }
    assert_eq!(seats_left(&server, &date, "08:00").await, 0);
    let report = client.open_slots(admin(open)).await.unwrap().into_inner();
    // day(7) is a Monday: 08:00..=09:00 is five slots.
    assert_eq!(report.slots_opened, 5);
    server.stop().await;
}

#[tokio::test]
async fn capacity_never_drops_below_seats_booked_and_closing_keeps_appointments() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_times(&server, &date, "08:00", "08:15", 5).await;
    register_receipts(&server, [1, 2, 3]).await;
    let mut booking = server.booking().await;
    let appt = booking
        .book_appointment(book_request(
            "k-1",
            slot(&date, "08:00"),
            vec![applicant(1), applicant(2), applicant(3)],
        ))
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    let mut ops = server.admin().await;

    let status = ops
        .set_slot_capacity(admin(pb::SetSlotCapacityRequest {
            slot: Some(slot(&date, "08:00")),
            capacity: 2,
        }))
        .await
        .unwrap_err();
    assert_refused(&status, Code::FailedPrecondition, "CAPACITY_BELOW_BOOKED");
    let state = ops
        .set_slot_capacity(admin(pb::SetSlotCapacityRequest {
            slot: Some(slot(&date, "08:00")),
            capacity: 3,
        }))
        .await
        .unwrap()
        .into_inner()
        .slot
        .unwrap();
    assert_eq!((state.capacity, state.booked, state.remaining), (3, 3, 0));
    let status = ops
        .set_slot_capacity(admin(pb::SetSlotCapacityRequest {
            slot: Some(slot(&date, "08:00")),
            capacity: 10_001,
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), vec!["capacity"]);

    // Re-opening with fewer seats than booked keeps the slot at its bookings and says so.
    let report = ops
        .open_slots(admin(pb::OpenSlotsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: date.clone(),
            to_date: date.clone(),
            weekdays: (1..=7).collect(),
            first_time: "08:00".into(),
            last_time: "08:30".into(),
            seats_per_slot: 1,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((report.slots_opened, report.slots_updated), (1, 2));
    assert_eq!(report.kept_at_booked.len(), 1);
    assert_eq!(report.kept_at_booked[0].capacity, 3);

    // Closing the day stops bookings; the appointment stays readable and cancellable.
    let closed = ops
        .close_slots(admin(pb::CloseSlotsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            date: date.clone(),
            time: String::new(),
            list_affected: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.slots_closed, 3);
    register_receipts(&server, [4]).await;
    let status = booking
        .book_appointment(book_request(
            "k-2",
            slot(&date, "08:15"),
            vec![applicant(4)],
        ))
        .await
        .unwrap_err();
    assert_refused(&status, Code::FailedPrecondition, "SLOT_CLOSED");
    assert_eq!(
        seats_left(&server, &date, "08:15").await,
        0,
        "closed slots are not listed"
    );
    booking
        .get_appointment(get(&appt.confirmation_number, "P0000001"))
        .await
        .unwrap();
    booking
        .cancel_appointment(cancel(&appt.confirmation_number, "P0000001", "k-c"))
        .await
        .unwrap();
    assert_audit_clean(&server, &date).await;
    server.stop().await;
}

#[tokio::test]
async fn the_manifest_pages_in_a_stable_order() {
    let server = TestServer::memory().await;
    let date = day(7);
    open_day(&server, &date, 10).await;
    register_receipts(&server, 1..=25).await;
    let mut booking = server.booking().await;
    let times = ["08:00", "08:15", "08:30", "08:45"];
    for i in 1..=25u32 {
        let t = times[i as usize % 4];
        booking
            .book_appointment(book_request(
                &format!("m-{i}"),
                slot(&date, t),
                vec![applicant(i)],
            ))
            .await
            .unwrap();
    }
    let mut ops = server.admin().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = ops
            .list_appointments(admin(pb::ListAppointmentsRequest {
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                date: date.clone(),
                page_size: 7,
                page_token: token.clone(),
                include_cancelled: false,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.appointments.len() <= 7);
        seen.extend(page.appointments.into_iter().map(|a| {
            let s = a.slot.unwrap();
            (s.time, a.confirmation_number)
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 25);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);

    let status = ops
        .list_appointments(admin(pb::ListAppointmentsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            date: date.clone(),
            page_size: 501,
            page_token: "garbage".into(),
            include_cancelled: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), vec!["page_size", "page_token"]);
    server.stop().await;
}

#[tokio::test]
async fn health_reports_serving_for_every_service() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let server = TestServer::memory().await;
    // Every slotd service the server registers, as reflection lists them.
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let listed = match answers
        .message()
        .await
        .expect("answer")
        .and_then(|r| r.message_response)
    {
        Some(MessageResponse::ListServicesResponse(list)) => list.service,
        other => panic!("not a service list: {other:?}"),
    };
    let mut services: Vec<String> = listed
        .into_iter()
        .map(|s| s.name)
        .filter(|name| name.starts_with("slotd."))
        .collect();
    services.sort();
    assert_eq!(
        services,
        [
            "slotd.v1.AdminService",
            "slotd.v1.BookingService",
            "slotd.v1.CalendarService",
            "slotd.v1.WaitingRoomService",
        ]
    );
    let mut health = HealthClient::new(server.channel().await);
    for service in std::iter::once(String::new()).chain(services) {
        let service = service.as_str();
        let mut status = 0;
        for _ in 0..50 {
            status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            if status == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(status, 1, "{service} SERVING");
    }
    server.stop().await;
}
