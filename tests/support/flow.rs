//! What an operator checks on a new deployment, through a channel to a real `slotd` process
//! (which runs on the real clock): open a day, register receipts, book, wait in the room (join,
//! get admitted, book with the admission token) and audit.

use std::time::{Duration, Instant};

use chrono::Utc;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use slotd::api::pb;
use slotd::api::pb::admin_service_client::AdminServiceClient;
use slotd::api::pb::booking_service_client::BookingServiceClient;
use slotd::api::pb::waiting_room_service_client::WaitingRoomServiceClient;

use super::{admin, applicant, assert_refused, book_request, slot, with_token};

/// A channel to a slotd at `addr` (`127.0.0.1:N`), each call bounded by a generous 20 s.
pub async fn connect(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("connect to slotd")
}

/// A date `days` ahead at the post (the processes run on the real clock).
pub fn real_date(days: i64) -> String {
    (Utc::now() + chrono::Duration::days(days))
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive()
        .to_string()
}

pub async fn open(channel: &Channel, date: &str, first: &str, last: &str, seats: u32) {
    AdminServiceClient::new(channel.clone())
        .open_slots(admin(pb::OpenSlotsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: date.into(),
            to_date: date.into(),
            weekdays: (1..=7).collect(),
            first_time: first.into(),
            last_time: last.into(),
            seats_per_slot: seats,
        }))
        .await
        .expect("open slots");
}

pub async fn register(channel: &Channel, ids: impl IntoIterator<Item = u32>) {
    let mut client = AdminServiceClient::new(channel.clone());
    let paid_at = (Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    for i in ids {
        let a = applicant(i);
        client
            .register_receipt(admin(pb::RegisterReceiptRequest {
                receipt_number: a.receipt_number,
                passport_number: a.passport_number,
                paid_at: paid_at.clone(),
                amount: "185.00".into(),
                currency: "USD".into(),
            }))
            .await
            .expect("register receipt");
    }
}

/// Books applicant `first` directly, then turns the waiting room on and books applicant
/// `first + 1` through it (join, admitted, book with the token; without it the booking is
/// refused), reads both back and audits the day. Returns the two confirmation numbers.
pub async fn book_wait_audit(channel: &Channel, first: u32) -> (String, String) {
    let date = real_date(7);
    open(channel, &date, "08:00", "08:15", 5).await;
    register(channel, [first, first + 1]).await;
    let mut booking = BookingServiceClient::new(channel.clone());
    let direct = booking
        .book_appointment(book_request(
            &format!("direct-{first}"),
            slot(&date, "08:00"),
            vec![applicant(first)],
        ))
        .await
        .expect("book")
        .into_inner()
        .appointment
        .expect("appointment")
        .confirmation_number;

    let mut ops = AdminServiceClient::new(channel.clone());
    let room = |enabled: bool| pb::WaitingRoomConfig {
        enabled,
        admissions_per_minute: 6_000,
        max_active_sessions: 100,
        session_duration_seconds: 600,
        waiter_timeout_seconds: 600,
        ..Default::default()
    };
    ops.configure_waiting_room(admin(pb::ConfigureWaitingRoomRequest {
        config: Some(room(true)),
    }))
    .await
    .expect("room on");
    let request = book_request(
        &format!("room-{first}"),
        slot(&date, "08:15"),
        vec![applicant(first + 1)],
    );
    let refused = booking
        .book_appointment(request.clone())
        .await
        .expect_err("the room gates booking");
    assert_refused(&refused, Code::Unauthenticated, "ADMISSION_REQUIRED");

    let mut waiting = WaitingRoomServiceClient::new(channel.clone());
    let joined = waiting
        .join(pb::JoinRequest {
            client_key: format!("connect-{first}.Kq7xZ2pLm9TvW4rN8sYb3c"),
        })
        .await
        .expect("join")
        .into_inner();
    let ticket = joined.status.expect("status").ticket_id;
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        let status = waiting
            .get_status(pb::GetStatusRequest {
                ticket_id: ticket.clone(),
                ticket_secret: joined.ticket_secret.clone(),
            })
            .await
            .expect("status")
            .into_inner()
            .status
            .expect("status");
        if status.state == pb::TicketState::Admitted as i32 {
            break status.admission_token;
        }
        assert!(Instant::now() < deadline, "never admitted: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let admitted = booking
        .book_appointment(with_token(request, &token))
        .await
        .expect("book with the admission token")
        .into_inner()
        .appointment
        .expect("appointment")
        .confirmation_number;
    ops.configure_waiting_room(admin(pb::ConfigureWaitingRoomRequest {
        config: Some(room(false)),
    }))
    .await
    .expect("room off");

    let stored = super::history::manifest(channel, &date).await;
    for confirmation in [&direct, &admitted] {
        assert!(
            stored
                .iter()
                .any(|a| &a.confirmation_number == confirmation),
            "{confirmation} in the manifest: {stored:?}"
        );
    }
    super::history::audit_clean(channel, &date).await;
    (direct, admitted)
}
