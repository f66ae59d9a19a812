//! Hostile input over gRPC, on the real server (127.0.0.1:0): oversized messages, 10k-character
//! strings, control characters and mixed scripts in names, invalid bytes in metadata,
//! impossible dates and off-grid times, negative and huge capacities, duplicate passports,
//! expired, mismatched and reused receipts. Each is refused with the right code, names the
//! field when a field is at fault, and changes nothing: slot counters, appointments, the event
//! log and the audit are compared before and after. (tests/booking_api.rs has the basic
//! per-field validation table; this goes further.)

use crate::support;

use chrono::Duration as ChronoDuration;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use slotd::api::pb;
use slotd::domain::lifecycle::{EventId, EventStart};
use support::history;
use support::*;

const TIMES: [&str; 4] = ["08:00", "08:15", "08:30", "08:45"];

/// Everything a refused call must leave alone: each slot's counters, the day's appointments
/// (cancelled ones too), the length of the event log; and the audit must be clean.
async fn snapshot(server: &TestServer, date: &str) -> String {
    let channel = server.channel().await;
    let mut out = String::new();
    for t in TIMES {
        let state = server
            .admin()
            .await
            .get_slot(admin(pb::GetSlotRequest {
                slot: Some(slot(date, t)),
            }))
            .await
            .map(|r| r.into_inner().slot);
        out += &format!("{t}: {state:?}\n");
    }
    for a in history::manifest(&channel, date).await {
        out += &format!(
            "{} {} {:?}\n",
            a.confirmation_number,
            a.status,
            a.slot.map(|s| s.time)
        );
    }
    let events = server
        .store
        .events(EventStart::After(EventId::default()), 100_000)
        .await
        .expect("events")
        .events
        .len();
    out += &format!("events: {events}\n");
    history::audit_clean(&channel, date).await;
    out
}

/// A server with `date` open (4 slots, 5 seats), receipts for applicants 1-9, and one booking
/// (applicant 9 at 08:00) so there is state to disturb.
async fn setup() -> (TestServer, String) {
    let server = TestServer::memory().await;
    let date = day(7);
    open_day(&server, &date, 5).await;
    register_receipts(&server, 1..=9).await;
    server
        .booking()
        .await
        .book_appointment(book_request(
            "setup-9",
            slot(&date, "08:00"),
            vec![applicant(9)],
        ))
        .await
        .expect("setup booking");
    (server, date)
}

#[track_caller]
fn assert_names(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    assert_eq!(reason(status), "INVALID_ARGUMENT", "{field}");
    assert!(
        bad_fields(status).iter().any(|f| f == field),
        "{field} not named in {:?}",
        bad_fields(status)
    );
    assert!(
        status.message().contains(field),
        "{field} not in the message {:?}",
        status.message()
    );
}

#[tokio::test]
async fn oversized_messages_are_refused_before_decoding_and_change_nothing() {
    let (server, date) = setup().await;
    let before = snapshot(&server, &date).await;
    let mut booking = server.booking().await;
    // Over the 64 KiB request limit: tonic refuses to decode it, OUT_OF_RANGE per the gRPC
    // spec ("message larger than max").
    for size in [70_000, 1_000_000] {
        let mut huge = book_request("huge-1", slot(&date, "08:15"), vec![applicant(1)]);
        huge.applicants[0].given_name = "A".repeat(size);
        let status = booking.book_appointment(huge).await.unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange, "{size} bytes: {status:?}");
        assert!(
            status.message().contains("message length too large"),
            "{status:?}"
        );
    }
    // The same on an operator RPC, where the token is checked too.
    let mut open = pb::OpenSlotsRequest {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        from_date: date.clone(),
        to_date: date.clone(),
        weekdays: vec![1],
        first_time: "08:00".into(),
        last_time: "08:00".into(),
        seats_per_slot: 100,
    };
    open.post_id = "B".repeat(100_000);
    let status = server
        .admin()
        .await
        .open_slots(admin(open))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // Just under the limit it is decoded, then refused by validation, naming the field.
    let mut big = book_request("big-1", slot(&date, "08:15"), vec![applicant(1)]);
    big.applicants[0].given_name = "A".repeat(60_000);
    assert_names(
        &booking.book_appointment(big).await.unwrap_err(),
        "applicants[0].given_name",
    );
    assert_eq!(snapshot(&server, &date).await, before);
    // The connection is still good.
    booking
        .book_appointment(book_request(
            "after-1",
            slot(&date, "08:15"),
            vec![applicant(1)],
        ))
        .await
        .expect("the server keeps serving on the same channel");
    server.stop().await;
}

#[tokio::test]
async fn ten_thousand_character_strings_are_refused_naming_each_field() {
    let (server, date) = setup().await;
    let before = snapshot(&server, &date).await;
    let long = "A".repeat(10_000);
    let mut booking = server.booking().await;
    let mut admin_client = server.admin().await;

    let book = |f: &dyn Fn(&mut pb::BookAppointmentRequest)| {
        let mut r = book_request("long-1", slot(&date, "08:15"), vec![applicant(1)]);
        f(&mut r);
        r
    };
    let cases: Vec<(pb::BookAppointmentRequest, &str)> = vec![
        (book(&|r| r.request_id = long.clone()), "request_id"),
        (
            book(&|r| r.slot.as_mut().unwrap().post_id = long.clone()),
            "slot.post_id",
        ),
        (
            book(&|r| r.slot.as_mut().unwrap().category = long.clone()),
            "slot.category",
        ),
        (
            book(&|r| r.slot.as_mut().unwrap().date = long.clone()),
            "slot.date",
        ),
        (
            book(&|r| r.slot.as_mut().unwrap().time = long.clone()),
            "slot.time",
        ),
        (
            book(&|r| r.applicants[0].passport_number = long.clone()),
            "applicants[0].passport_number",
        ),
        (
            book(&|r| r.applicants[0].given_name = long.clone()),
            "applicants[0].given_name",
        ),
        (
            book(&|r| r.applicants[0].surname = long.clone()),
            "applicants[0].surname",
        ),
        (
            book(&|r| r.applicants[0].ds160_confirmation = long.clone()),
            "applicants[0].ds160_confirmation",
        ),
        (
            book(&|r| r.applicants[0].receipt_number = long.clone()),
            "applicants[0].receipt_number",
        ),
    ];
    for (request, field) in cases {
        let hold = pb::HoldSlotRequest {
            request_id: request.request_id.clone(),
            slot: request.slot.clone(),
            applicants: request.applicants.clone(),
        };
        assert_names(&booking.book_appointment(request).await.unwrap_err(), field);
        assert_names(&booking.hold_slot(hold).await.unwrap_err(), field);
    }

    let status = booking
        .get_appointment(pb::GetAppointmentRequest {
            confirmation_number: long.clone(),
            passport_number: long.clone(),
        })
        .await
        .unwrap_err();
    assert_names(&status, "confirmation_number");
    assert_names(&status, "passport_number");
    let status = booking
        .cancel_appointment(pb::CancelAppointmentRequest {
            confirmation_number: long.clone(),
            passport_number: "P0000009".into(),
            request_id: long.clone(),
        })
        .await
        .unwrap_err();
    assert_names(&status, "confirmation_number");
    assert_names(&status, "request_id");
    let status = booking
        .confirm_hold(pb::ConfirmHoldRequest {
            hold_id: long.clone(),
            request_id: "c-1".into(),
        })
        .await
        .unwrap_err();
    assert_names(&status, "hold_id");
    let status = booking
        .release_hold(pb::ReleaseHoldRequest {
            hold_id: long.clone(),
            request_id: "r-1".into(),
        })
        .await
        .unwrap_err();
    assert_names(&status, "hold_id");
    let status = booking
        .reschedule_appointment(pb::RescheduleAppointmentRequest {
            confirmation_number: "ABCDEFGHJKMNPQ".into(),
            passport_number: "P0000009".into(),
            request_id: "m-1".into(),
            new_slot: Some(pb::SlotRef {
                time: long.clone(),
                ..slot(&date, "08:15")
            }),
        })
        .await
        .unwrap_err();
    assert_names(&status, "new_slot.time");
    let status = admin_client
        .register_receipt(admin(pb::RegisterReceiptRequest {
            receipt_number: long.clone(),
            passport_number: long.clone(),
            paid_at: long.clone(),
            amount: long.clone(),
            currency: long.clone(),
        }))
        .await
        .unwrap_err();
    for field in [
        "receipt_number",
        "passport_number",
        "paid_at",
        "amount",
        "currency",
    ] {
        assert_names(&status, field);
    }
    let status = admin_client
        .list_appointments(admin(pb::ListAppointmentsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            date: date.clone(),
            page_size: 10,
            page_token: long.clone(),
            include_cancelled: false,
        }))
        .await
        .unwrap_err();
    assert_names(&status, "page_token");
    let status = server
        .waiting_room()
        .await
        .join(pb::JoinRequest {
            client_key: long.clone(),
        })
        .await
        .unwrap_err();
    // The waiting room is off: JOIN refuses that first, or names the key.
    assert!(
        matches!(
            status.code(),
            Code::InvalidArgument | Code::FailedPrecondition
        ),
        "{status:?}"
    );
    assert_eq!(snapshot(&server, &date).await, before);
    server.stop().await;
}

#[tokio::test]
async fn control_characters_and_mixed_scripts_in_names_are_refused() {
    let (server, date) = setup().await;
    let before = snapshot(&server, &date).await;
    let mut booking = server.booking().await;
    let hostile = [
        "Wei\u{0}",          // NUL
        "W\nei",             // newline (log injection)
        "Wei\r\nX-Admin: 1", // header-style injection
        "\u{202e}ieW",       // right-to-left override
        "W\u{200b}ei",       // zero-width space
        "Wеi",               // Cyrillic е among Latin letters
        "Ｗei",              // fullwidth W
        "伟Wei",             // Han and Latin mixed
        "W\u{0301}ei",       // combining accent
        "W\tei",             // tab
        "<script>alert(1)</script>",
        "Robert'); DROP TABLE--",
        "\u{1F600}", // emoji
        "   ",       // blanks only
    ];
    for (n, name) in hostile.iter().enumerate() {
        for field in ["given_name", "surname"] {
            let mut r = book_request(
                &format!("name-{n}-{field}"),
                slot(&date, "08:15"),
                vec![applicant(1)],
            );
            if field == "given_name" {
                r.applicants[0].given_name = (*name).into();
            } else {
                r.applicants[0].surname = (*name).into();
            }
            let status = booking
                .book_appointment(r)
                .await
                .map(|r| r.into_inner().appointment)
                .expect_err(&format!("{field} {name:?} must be refused"));
            assert_names(&status, &format!("applicants[0].{field}"));
        }
    }
    assert_eq!(snapshot(&server, &date).await, before);
    // The rule is not "refuse everything": real Latin names with spaces, hyphens and
    // apostrophes book; whitespace around a name (a trailing newline from a form) is trimmed,
    // never stored.
    for (i, (given, surname)) in [
        ("Anne-Marie", "O'Neil"),
        ("Maria Jose", "de la Cruz"),
        ("\tWei\n", " Zhang\r\n"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut a = applicant(i as u32 + 1);
        a.given_name = given.into();
        a.surname = surname.into();
        let booked = booking
            .book_appointment(book_request(
                &format!("ok-name-{i}"),
                slot(&date, "08:15"),
                vec![a],
            ))
            .await
            .unwrap_or_else(|e| panic!("{given:?} {surname:?}: {e:?}"))
            .into_inner()
            .appointment
            .expect("appointment");
        let stored = &booked.applicants[0];
        assert_eq!(stored.given_name, given.trim().to_uppercase());
        assert_eq!(stored.surname, surname.trim().to_uppercase());
    }
    server.stop().await;
}

/// A request with `header` set to raw `bytes` (obs-text bytes 0x80-0xff are legal in HTTP/2
/// header values, so they reach slotd; they are not UTF-8).
fn with_raw_header<T>(message: T, header: &'static str, bytes: &[u8]) -> Request<T> {
    let mut request = Request::new(message);
    let value = AsciiMetadataValue::try_from(bytes).expect("a legal header value");
    request.metadata_mut().insert(header, value);
    request
}

#[tokio::test]
async fn invalid_bytes_in_metadata_are_refused_or_ignored_and_change_nothing() {
    let (server, date) = setup().await;
    let before = snapshot(&server, &date).await;
    let values: [&[u8]; 4] = [
        b"\xff\xfe\xfd",
        "Bearer t\u{e9}st".as_bytes(), // UTF-8 é: not ASCII
        b"Bearer \x80\x81",
        &[b'x'; 8_000],
    ];
    let open = pb::OpenSlotsRequest {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        from_date: date.clone(),
        to_date: date.clone(),
        weekdays: (1..=7).collect(),
        first_time: "08:00".into(),
        last_time: "08:00".into(),
        seats_per_slot: 100,
    };
    let mut admin_client = server.admin().await;
    let mut booking = server.booking().await;
    for value in values {
        // authorization: never a panic, never a pass.
        let status = admin_client
            .open_slots(with_raw_header(open.clone(), "authorization", value))
            .await
            .unwrap_err();
        assert_refused(&status, Code::Unauthenticated, "UNAUTHENTICATED");
        // Tracing and identity headers slotd reads: garbage is ignored, the call works.
        for header in ["x-request-id", "x-client-id", "traceparent", "tracestate"] {
            booking
                .get_appointment(with_raw_header(
                    pb::GetAppointmentRequest {
                        confirmation_number: "ABCDEFGHJKMNPQ".into(),
                        passport_number: "P0000009".into(),
                    },
                    header,
                    value,
                ))
                .await
                .map(|_| ())
                .or_else(|s| {
                    (s.code() == Code::NotFound && reason(&s) == "APPOINTMENT_NOT_FOUND")
                        .then_some(())
                        .ok_or(s)
                })
                .unwrap_or_else(|s| panic!("{header}: {s:?}"));
        }
    }
    assert_eq!(snapshot(&server, &date).await, before);

    // With the waiting room on, a non-ASCII admission token is refused as invalid.
    configure_room(&server, room_config(60, 10)).await;
    let before = snapshot(&server, &date).await;
    for value in values {
        let status = booking
            .book_appointment(with_raw_header(
                book_request("meta-1", slot(&date, "08:15"), vec![applicant(1)]),
                "x-admission-token",
                value,
            ))
            .await
            .unwrap_err();
        assert_refused(&status, Code::Unauthenticated, "ADMISSION_INVALID");
    }
    // Binary metadata under the token's name is not the token either.
    let mut request = Request::new(book_request(
        "meta-2",
        slot(&date, "08:15"),
        vec![applicant(1)],
    ));
    request.metadata_mut().insert_bin(
        "x-admission-token-bin",
        MetadataValue::from_bytes(b"\x00\xff token"),
    );
    let status = booking.book_appointment(request).await.unwrap_err();
    assert_refused(&status, Code::Unauthenticated, "ADMISSION_REQUIRED");
    assert_eq!(snapshot(&server, &date).await, before);
    server.stop().await;
}

#[tokio::test]
async fn impossible_dates_and_off_grid_times_are_refused_everywhere() {
    let (server, date) = setup().await;
    let before = snapshot(&server, &date).await;
    let bad_dates = [
        "2030-02-30",
        "2030-02-29", // 2030 is not a leap year
        "2030-13-01",
        "2030-00-10",
        "2030-01-32",
        "2030-1-5",
        "2030-01-14T00:00",
        "14/01/2030",
        "",
    ];
    let bad_times = [
        "24:00", "23:60", "08:10", "08:07", "8:00", "08:00:00", "-1:00", "",
    ];
    let mut booking = server.booking().await;
    let mut admin_client = server.admin().await;
    let mut calendar = server.calendar().await;
    for d in bad_dates {
        let s = slot(d, "08:15");
        assert_names(
            &booking
                .book_appointment(book_request("d-1", s.clone(), vec![applicant(1)]))
                .await
                .unwrap_err(),
            "slot.date",
        );
        assert_names(
            &booking
                .hold_slot(pb::HoldSlotRequest {
                    request_id: "d-2".into(),
                    slot: Some(s.clone()),
                    applicants: vec![applicant(1)],
                })
                .await
                .unwrap_err(),
            "slot.date",
        );
        assert_names(
            &admin_client
                .set_slot_capacity(admin(pb::SetSlotCapacityRequest {
                    slot: Some(s.clone()),
                    capacity: 3,
                }))
                .await
                .unwrap_err(),
            "slot.date",
        );
        assert_names(
            &admin_client
                .close_slots(admin(pb::CloseSlotsRequest {
                    post_id: "BEIJING".into(),
                    category: "ALL_OTHERS".into(),
                    date: d.into(),
                    time: String::new(),
                    list_affected: false,
                }))
                .await
                .unwrap_err(),
            "date",
        );
        assert_names(
            &calendar
                .list_slots(pb::ListSlotsRequest {
                    post_id: "BEIJING".into(),
                    category: "ALL_OTHERS".into(),
                    date: d.into(),
                })
                .await
                .unwrap_err(),
            "date",
        );
        assert_names(
            &admin_client
                .open_slots(admin(pb::OpenSlotsRequest {
                    post_id: "BEIJING".into(),
                    category: "ALL_OTHERS".into(),
                    from_date: date.clone(),
                    to_date: d.into(),
                    weekdays: vec![1],
                    first_time: "08:00".into(),
                    last_time: "08:00".into(),
                    seats_per_slot: 5,
                }))
                .await
                .unwrap_err(),
            "to_date",
        );
    }
    for t in bad_times {
        let s = slot(&date, t);
        assert_names(
            &booking
                .book_appointment(book_request("t-1", s.clone(), vec![applicant(1)]))
                .await
                .unwrap_err(),
            "slot.time",
        );
        assert_names(
            &booking
                .reschedule_appointment(pb::RescheduleAppointmentRequest {
                    confirmation_number: "ABCDEFGHJKMNPQ".into(),
                    passport_number: "P0000009".into(),
                    request_id: "t-2".into(),
                    new_slot: Some(s.clone()),
                })
                .await
                .unwrap_err(),
            "new_slot.time",
        );
        assert_names(
            &admin_client
                .get_slot(admin(pb::GetSlotRequest {
                    slot: Some(s.clone()),
                }))
                .await
                .unwrap_err(),
            "slot.time",
        );
        if !t.is_empty() {
            assert_names(
                &admin_client
                    .close_slots(admin(pb::CloseSlotsRequest {
                        post_id: "BEIJING".into(),
                        category: "ALL_OTHERS".into(),
                        date: date.clone(),
                        time: t.into(),
                        list_affected: false,
                    }))
                    .await
                    .unwrap_err(),
                "time",
            );
        }
        for (first, last, field) in [(t, "09:00", "first_time"), ("08:00", t, "last_time")] {
            assert_names(
                &admin_client
                    .open_slots(admin(pb::OpenSlotsRequest {
                        post_id: "BEIJING".into(),
                        category: "ALL_OTHERS".into(),
                        from_date: date.clone(),
                        to_date: date.clone(),
                        weekdays: vec![1],
                        first_time: first.into(),
                        last_time: last.into(),
                        seats_per_slot: 5,
                    }))
                    .await
                    .unwrap_err(),
                field,
            );
        }
    }
    assert_eq!(snapshot(&server, &date).await, before);
    // A real leap day is a date (control: the refusals above are about the dates).
    calendar
        .list_slots(pb::ListSlotsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            date: "2032-02-29".into(),
        })
        .await
        .expect("2032-02-29 exists");
    server.stop().await;
}

/// OpenSlotsRequest / SetSlotCapacityRequest as a client with a signed-integer schema would
/// send them: int32 where slotd has uint32, so -1 arrives as a 10-byte varint.
#[derive(Clone, PartialEq, prost::Message)]
struct SignedOpenSlots {
    #[prost(string, tag = "1")]
    post_id: String,
    #[prost(string, tag = "2")]
    category: String,
    #[prost(string, tag = "3")]
    from: String,
    #[prost(string, tag = "4")]
    to: String,
    #[prost(int32, repeated, tag = "5")]
    weekdays: Vec<i32>,
    #[prost(string, tag = "6")]
    first_time: String,
    #[prost(string, tag = "7")]
    last_time: String,
    #[prost(int32, tag = "8")]
    seats_per_slot: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SignedSetCapacity {
    #[prost(message, optional, tag = "1")]
    slot: Option<pb::SlotRef>,
    #[prost(int64, tag = "2")]
    capacity: i64,
}

async fn raw_unary<M, R>(channel: Channel, path: &'static str, message: M) -> Result<R, Status>
where
    M: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("not ready: {e}")))?;
    grpc.unary(
        admin(message),
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::<M, R>::default(),
    )
    .await
    .map(|r| r.into_inner())
}

#[tokio::test]
async fn negative_and_huge_capacities_are_refused() {
    let (server, date) = setup().await;
    let before = snapshot(&server, &date).await;
    let mut admin_client = server.admin().await;
    let open = |seats: u32| pb::OpenSlotsRequest {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        from_date: date.clone(),
        to_date: date.clone(),
        weekdays: (1..=7).collect(),
        first_time: "08:00".into(),
        last_time: "08:45".into(),
        seats_per_slot: seats,
    };
    for seats in [0, 10_001, u32::MAX] {
        assert_names(
            &admin_client
                .open_slots(admin(open(seats)))
                .await
                .unwrap_err(),
            "seats_per_slot",
        );
    }
    for capacity in [10_001, u32::MAX] {
        assert_names(
            &admin_client
                .set_slot_capacity(admin(pb::SetSlotCapacityRequest {
                    slot: Some(slot(&date, "08:15")),
                    capacity,
                }))
                .await
                .unwrap_err(),
            "capacity",
        );
    }
    // Below the seats booked: a business refusal, not a validation one.
    let status = admin_client
        .set_slot_capacity(admin(pb::SetSlotCapacityRequest {
            slot: Some(slot(&date, "08:00")),
            capacity: 0,
        }))
        .await
        .unwrap_err();
    assert_refused(&status, Code::FailedPrecondition, "CAPACITY_BELOW_BOOKED");
    // Negative numbers from a signed schema: decoded as huge unsigned ones, refused by range.
    for seats in [-1, i32::MIN] {
        let status = raw_unary::<_, pb::OpenSlotsResponse>(
            server.channel().await,
            "/slotd.v1.AdminService/OpenSlots",
            SignedOpenSlots {
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                from: date.clone(),
                to: date.clone(),
                weekdays: vec![1, 2, 3, 4, 5, 6, 7, -1],
                first_time: "08:00".into(),
                last_time: "08:45".into(),
                seats_per_slot: seats,
            },
        )
        .await
        .unwrap_err();
        assert_names(&status, "seats_per_slot");
    }
    // int64 on the wire where slotd has uint32: the decoder keeps the low 32 bits, so each of
    // these arrives as a number over 10000 and is refused by range.
    for capacity in [-1i64, -10_000, i64::from(u32::MAX) + 20_001] {
        let status = raw_unary::<_, pb::SetSlotCapacityResponse>(
            server.channel().await,
            "/slotd.v1.AdminService/SetSlotCapacity",
            SignedSetCapacity {
                slot: Some(slot(&date, "08:15")),
                capacity,
            },
        )
        .await
        .unwrap_err();
        assert_names(&status, "capacity");
    }
    // Page sizes too.
    for page_size in [501, u32::MAX] {
        assert_names(
            &admin_client
                .list_appointments(admin(pb::ListAppointmentsRequest {
                    post_id: "BEIJING".into(),
                    category: "ALL_OTHERS".into(),
                    date: date.clone(),
                    page_size,
                    page_token: String::new(),
                    include_cancelled: false,
                }))
                .await
                .unwrap_err(),
            "page_size",
        );
    }
    assert_eq!(snapshot(&server, &date).await, before);
    server.stop().await;
}

#[tokio::test]
async fn duplicate_passports_and_receipts_in_a_group_are_refused() {
    let (server, date) = setup().await;
    let before = snapshot(&server, &date).await;
    let mut booking = server.booking().await;
    let mut lower = applicant(1);
    lower.passport_number = lower.passport_number.to_lowercase();
    let mut same_receipt = applicant(2);
    same_receipt.receipt_number = applicant(1).receipt_number;
    let cases = [
        (
            vec![applicant(1), applicant(1)],
            "applicants[1].passport_number",
        ),
        // Passports are case-insensitive: p0000001 is P0000001.
        (vec![applicant(1), lower], "applicants[1].passport_number"),
        (
            vec![applicant(1), applicant(2), applicant(3), applicant(2)],
            "applicants[3].passport_number",
        ),
        (
            vec![applicant(1), same_receipt],
            "applicants[1].receipt_number",
        ),
    ];
    for (n, (group, field)) in cases.into_iter().enumerate() {
        let status = booking
            .book_appointment(book_request(
                &format!("dup-{n}"),
                slot(&date, "08:15"),
                group.clone(),
            ))
            .await
            .unwrap_err();
        assert_names(&status, field);
        let status = booking
            .hold_slot(pb::HoldSlotRequest {
                request_id: format!("dup-hold-{n}"),
                slot: Some(slot(&date, "08:15")),
                applicants: group,
            })
            .await
            .unwrap_err();
        assert_names(&status, field);
    }
    assert_eq!(snapshot(&server, &date).await, before);
    server.stop().await;
}

#[tokio::test]
async fn expired_mismatched_unregistered_and_reused_receipts_are_refused() {
    let (server, date) = setup().await;
    let mut booking = server.booking().await;
    let mut admin_client = server.admin().await;
    // Applicant 20's receipt was paid 400 days ago: it expired after 365.
    let old = applicant(20);
    admin_client
        .register_receipt(admin(pb::RegisterReceiptRequest {
            receipt_number: old.receipt_number.clone(),
            passport_number: old.passport_number.clone(),
            paid_at: (epoch() - ChronoDuration::days(400)).to_rfc3339(),
            amount: "185.00".into(),
            currency: "USD".into(),
        }))
        .await
        .expect("register an old receipt");
    let before = snapshot(&server, &date).await;
    let mut mismatched = applicant(1);
    mismatched.receipt_number = applicant(2).receipt_number;
    let cases = [
        (old, Code::FailedPrecondition, "RECEIPT_EXPIRED"),
        (
            mismatched,
            Code::FailedPrecondition,
            "RECEIPT_NOT_REGISTERED",
        ),
        (
            applicant(30),
            Code::FailedPrecondition,
            "RECEIPT_NOT_REGISTERED",
        ),
        // Applicant 9's receipt already backs the setup booking.
        (applicant(9), Code::FailedPrecondition, "RECEIPT_IN_USE"),
    ];
    for (n, (a, code, why)) in cases.into_iter().enumerate() {
        let status = booking
            .book_appointment(book_request(
                &format!("rcpt-{n}"),
                slot(&date, "08:30"),
                vec![a.clone()],
            ))
            .await
            .unwrap_err();
        assert_refused(&status, code, why);
        assert!(
            status.message().contains(&a.receipt_number),
            "names the receipt: {status:?}"
        );
        // In a group, the good applicant books nothing either (all or nothing).
        let status = booking
            .book_appointment(book_request(
                &format!("rcpt-group-{n}"),
                slot(&date, "08:30"),
                vec![applicant(3), a],
            ))
            .await
            .unwrap_err();
        assert_refused(&status, code, why);
    }
    // The same receipt number registered again for another passport: a conflict.
    let status = admin_client
        .register_receipt(admin(pb::RegisterReceiptRequest {
            receipt_number: applicant(1).receipt_number,
            passport_number: applicant(2).passport_number,
            paid_at: (epoch() - ChronoDuration::days(1)).to_rfc3339(),
            amount: "185.00".into(),
            currency: "USD".into(),
        }))
        .await
        .unwrap_err();
    assert_refused(&status, Code::AlreadyExists, "RECEIPT_CONFLICT");
    // A payment time in the future is invalid input.
    let status = admin_client
        .register_receipt(admin(pb::RegisterReceiptRequest {
            receipt_number: "R7777777".into(),
            passport_number: "P7777777".into(),
            paid_at: (epoch() + ChronoDuration::days(1)).to_rfc3339(),
            amount: "185.00".into(),
            currency: "USD".into(),
        }))
        .await
        .unwrap_err();
    assert_names(&status, "paid_at");
    // A retry of a refused booking with the same request_id is refused again, the same way.
    let status = booking
        .book_appointment(book_request(
            "rcpt-3",
            slot(&date, "08:30"),
            vec![applicant(9)],
        ))
        .await
        .unwrap_err();
    assert_refused(&status, Code::FailedPrecondition, "RECEIPT_IN_USE");
    assert_eq!(snapshot(&server, &date).await, before);
    server.stop().await;
}
