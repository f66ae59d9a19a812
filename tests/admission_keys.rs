//! The waiting-room key through the real binary: with Redis, tickets, admission tokens and
//! waitlist entries outlive a slotd process, so the key that signs them must be configured
//! (a missing one is a start-up error naming it), and a restart, or a key rotation with the old
//! key kept as a previous key, keeps every credential issued before it.

use crate::support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Duration as ChronoDuration, Utc};
use tonic::transport::Channel;
use tonic::Code;

use slotd::api::pb;
use slotd::api::pb::admin_service_client::AdminServiceClient;
use slotd::api::pb::booking_service_client::BookingServiceClient;
use slotd::api::pb::waiting_room_service_client::WaitingRoomServiceClient;
use support::process::Slotd;
use support::redis::RedisServer;
use support::*;

const NEW_KEY: &str = "the-rotated-admission-key-0123456789abcdef";

/// Runs `slotd` with `args` until it exits (at most 30 s): its status and its output.
fn run_to_exit(args: &[&str]) -> (std::process::ExitStatus, String) {
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_slotd"))
        .args(args)
        .env_remove("SLOTD_ADMISSION_KEY")
        .env_remove("SLOTD_PREVIOUS_ADMISSION_KEYS")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.reopen().expect("log"))
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("spawn slotd");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (
                status,
                std::fs::read_to_string(log.path()).unwrap_or_default(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "slotd kept running: {}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn with_redis_and_no_admission_key_slotd_refuses_to_start_naming_the_key() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (status, log) = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-token",
        ADMIN_TOKEN,
        "--redis-url",
        &url,
    ]);
    assert!(!status.success(), "{log}");
    assert!(log.contains("server.admission_key"), "{log}");
    assert!(!log.contains("slotd listening"), "{log}");

    // Previous keys only verify: without the key that signs they are refused too.
    let (status, log) = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-token",
        ADMIN_TOKEN,
        "--previous-admission-keys",
        ADMISSION_KEY,
    ]);
    assert!(!status.success(), "{log}");
    assert!(log.contains("server.admission_key"), "{log}");
    // A short previous key is named by its index.
    let (status, log) = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-token",
        ADMIN_TOKEN,
        "--redis-url",
        &url,
        "--admission-key",
        NEW_KEY,
        "--previous-admission-keys",
        &format!("{ADMISSION_KEY},short"),
    ]);
    assert!(!status.success(), "{log}");
    assert!(log.contains("server.previous_admission_keys[1]"), "{log}");

    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("slotd.toml");
    std::fs::write(
        &file,
        "[server]\nprevious_admission_keys = [\"short\"]\n[redis]\nurl = \"redis://127.0.0.1:1/\"\n",
    )
    .expect("write");
    // `slotd config check` validates the keys a file names (the key itself may come from the
    // environment at start, so a file without one passes).
    let (status, log) = run_to_exit(&["config", "check", &file.display().to_string()]);
    assert!(!status.success(), "{log}");
    assert!(log.contains("server.admission_key"), "{log}");
}

/// A channel to `slotd` once its store answers (a fresh process may not be connected yet).
async fn connect_ready(slotd: &Slotd) -> Channel {
    let channel = support::flow::connect(&slotd.addr()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while AdminServiceClient::new(channel.clone())
        .get_waiting_room_stats(admin(pb::GetWaitingRoomStatsRequest {}))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the store never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    channel
}

/// A date `days` from today (UTC; Beijing is ahead, so still in the future there).
fn from_today(days: i64) -> String {
    (Utc::now() + ChronoDuration::days(days))
        .format("%Y-%m-%d")
        .to_string()
}

struct Issued {
    ticket_id: String,
    ticket_secret: String,
    token: String,
    entry_id: String,
    entry_secret: String,
}

/// Issues every kind of credential on `slotd`: a waitlist entry, then (room on) an admitted
/// ticket with its token.
async fn issue(slotd: &Slotd) -> Issued {
    let channel = connect_ready(slotd).await;
    let mut ops = AdminServiceClient::new(channel.clone());
    let a = applicant(1);
    // The first call may find the store not connected yet (UNAVAILABLE): retry until it answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let registered = ops
            .register_receipt(admin(pb::RegisterReceiptRequest {
                receipt_number: a.receipt_number.clone(),
                passport_number: a.passport_number.clone(),
                paid_at: (Utc::now() - ChronoDuration::days(1)).to_rfc3339(),
                amount: "185.00".into(),
                currency: "USD".into(),
            }))
            .await;
        match registered {
            Ok(_) => break,
            Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("register receipt: {e:?}"),
        }
    }
    let entry = BookingServiceClient::new(channel.clone())
        .join_waitlist(pb::JoinWaitlistRequest {
            request_id: "keys-wait-1".into(),
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: from_today(2),
            to_date: from_today(5),
            times: Vec::new(),
            applicants: vec![a],
            confirmation_number: String::new(),
            passport_number: String::new(),
        })
        .await
        .expect("join waitlist")
        .into_inner();
    ops.configure_waiting_room(admin(pb::ConfigureWaitingRoomRequest {
        config: Some(pb::WaitingRoomConfig {
            enabled: true,
            admissions_per_minute: 600,
            max_active_sessions: 100,
            session_duration_seconds: 3600,
            waiter_timeout_seconds: 3600,
            paused: false,
            gate_calendar: false,
        }),
    }))
    .await
    .expect("configure waiting room");
    let joined = WaitingRoomServiceClient::new(channel.clone())
        .join(pb::JoinRequest {
            client_key: support::client_key("keys-client-1"),
        })
        .await
        .expect("join")
        .into_inner();
    let ticket_id = joined.status.expect("status").ticket_id;
    let ticket_secret = joined.ticket_secret;
    let deadline = Instant::now() + Duration::from_secs(20);
    let token = loop {
        let status = status(&channel, &ticket_id, &ticket_secret)
            .await
            .expect("status");
        if status.state == pb::TicketState::Admitted as i32 {
            break status.admission_token;
        }
        assert!(Instant::now() < deadline, "never admitted: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Issued {
        ticket_id,
        ticket_secret,
        token,
        entry_id: entry.entry.expect("entry").entry_id,
        entry_secret: entry.entry_secret,
    }
}

async fn status(
    channel: &Channel,
    ticket_id: &str,
    secret: &str,
) -> Result<pb::TicketStatus, tonic::Status> {
    Ok(WaitingRoomServiceClient::new(channel.clone())
        .get_status(pb::GetStatusRequest {
            ticket_id: ticket_id.into(),
            ticket_secret: secret.into(),
        })
        .await?
        .into_inner()
        .status
        .expect("status"))
}

/// Every credential of `issued`, checked against `slotd`: Ok when all are accepted, else the
/// first refusal. The token is tried on a gated call that then fails on its own merits (no
/// slot is open that day): past the gate means the token verified.
async fn accepted(slotd: &Slotd, issued: &Issued) -> Result<(), tonic::Status> {
    let channel = connect_ready(slotd).await;
    let ticket = status(&channel, &issued.ticket_id, &issued.ticket_secret).await?;
    assert_eq!(ticket.state, pb::TicketState::Admitted as i32);
    BookingServiceClient::new(channel.clone())
        .get_waitlist_entry(pb::GetWaitlistEntryRequest {
            entry_id: issued.entry_id.clone(),
            entry_secret: issued.entry_secret.clone(),
        })
        .await?;
    let booked = BookingServiceClient::new(channel)
        .book_appointment(with_token(
            book_request(
                "keys-book-1",
                slot(&from_today(3), "08:00"),
                vec![applicant(1)],
            ),
            &issued.token,
        ))
        .await
        .expect_err("no slot is open that day");
    match booked.code() {
        Code::NotFound => Ok(()),
        _ => Err(booked),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_survive_a_restart_and_a_key_rotation_keeps_them_until_the_old_key_goes() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut first = Slotd::start(0, &url);
    let issued = issue(&first).await;
    accepted(&first, &issued).await.expect("freshly issued");
    first.kill();

    // The same key after a restart: the same credentials.
    let mut restarted = Slotd::start(0, &url);
    accepted(&restarted, &issued)
        .await
        .expect("a restart keeps every credential");
    restarted.kill();

    // Rotation: the new key signs, the old one still verifies.
    let previous = ["--admission-key", NEW_KEY, "--previous-admission-keys"];
    let mut rotated = Slotd::start_with(0, &url, &[&previous[..], &[ADMISSION_KEY]].concat());
    accepted(&rotated, &issued)
        .await
        .expect("the old key still verifies after a rotation");
    let fresh = WaitingRoomServiceClient::new(connect_ready(&rotated).await)
        .join(pb::JoinRequest {
            client_key: support::client_key("keys-client-2"),
        })
        .await
        .expect("join after the rotation")
        .into_inner();
    let fresh_id = fresh.status.expect("status").ticket_id;
    rotated.kill();

    // The old key removed: what it signed is worth nothing, what the new key signed stands.
    let retired = Slotd::start_with(0, &url, &["--admission-key", NEW_KEY]);
    let channel = connect_ready(&retired).await;
    status(&channel, &fresh_id, &fresh.ticket_secret)
        .await
        .expect("signed by the new key");
    let refused = accepted(&retired, &issued)
        .await
        .expect_err("the retired key verifies nothing");
    assert_refused(&refused, Code::Unauthenticated, "TICKET_SECRET_INVALID");
    let entry = BookingServiceClient::new(channel)
        .get_waitlist_entry(pb::GetWaitlistEntryRequest {
            entry_id: issued.entry_id.clone(),
            entry_secret: issued.entry_secret.clone(),
        })
        .await
        .expect_err("the retired key verifies no entry secret");
    assert_eq!(entry.code(), Code::Unauthenticated, "{entry:?}");
}
