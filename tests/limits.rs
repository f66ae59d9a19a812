//! Per-client rate limits through the real server: the waiting room is limited like every other
//! public service, so a crowd (or a flood pretending to be one) cannot join, poll or watch
//! without bound.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;

use slotd::api::pb;
use slotd::config::LimitSettings;
use slotd::server::ServeOptions;
use slotd::store::memory::MemoryStore;
use support::*;

fn assert_rate_limited(refused: &tonic::Status, limit: &str) {
    assert_refused(refused, Code::ResourceExhausted, "RATE_LIMITED");
    let retry = refused
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(60),
        "{retry:?}"
    );
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.metadata.get("limit").map(String::as_str), Some(limit));
}

#[tokio::test]
async fn join_get_status_and_watch_are_rate_limited_per_client_with_retry_info() {
    let server = TestServer::start_with(
        Arc::new(MemoryStore::new()),
        ServeOptions {
            limits: LimitSettings {
                room_per_minute: 1,
                room_burst: 4,
                ..LimitSettings::default()
            },
            ..ServeOptions::default()
        },
    )
    .await;
    configure_room(
        &server,
        pb::WaitingRoomConfig {
            waiter_timeout_seconds: 600,
            paused: true,
            ..room_config(60, 10)
        },
    )
    .await;
    let mut room = server.waiting_room().await;
    // The burst: one join, a poll, a watch and a second join (a refresh) pass.
    let joined = room
        .join(pb::JoinRequest {
            client_key: support::client_key("crowd-1"),
        })
        .await
        .expect("within the burst")
        .into_inner();
    let ticket_id = joined.status.expect("status").ticket_id;
    let secret = joined.ticket_secret;
    room.get_status(pb::GetStatusRequest {
        ticket_id: ticket_id.clone(),
        ticket_secret: secret.clone(),
    })
    .await
    .expect("within the burst");
    let stream = room
        .watch(pb::WatchRequest {
            ticket_id: ticket_id.clone(),
            ticket_secret: secret.clone(),
        })
        .await
        .expect("within the burst");
    drop(stream);
    room.join(pb::JoinRequest {
        client_key: support::client_key("crowd-1"),
    })
    .await
    .expect("within the burst");

    // Then every waiting-room call of this client is refused, the stream before it opens.
    let join = room
        .join(pb::JoinRequest {
            client_key: support::client_key("crowd-2"),
        })
        .await
        .expect_err("join over the limit");
    assert_rate_limited(&join, "room");
    let poll = room
        .get_status(pb::GetStatusRequest {
            ticket_id: ticket_id.clone(),
            ticket_secret: secret.clone(),
        })
        .await
        .expect_err("poll over the limit");
    assert_rate_limited(&poll, "room");
    let watch = room
        .watch(pb::WatchRequest {
            ticket_id,
            ticket_secret: secret,
        })
        .await
        .expect_err("watch over the limit");
    assert_rate_limited(&watch, "room");

    // The room's limit is its own: calendar reads of the same client still pass.
    server
        .calendar()
        .await
        .list_posts(pb::ListPostsRequest {})
        .await
        .expect("calendar has its own bucket");
    server.stop().await;
}

/// `limits.trusted_proxies` takes CIDRs: any peer inside one names its clients in
/// `x-client-id`, each with a bucket of its own.
#[tokio::test]
async fn a_proxy_inside_a_trusted_cidr_names_its_clients() {
    let server = TestServer::start_with(
        Arc::new(MemoryStore::new()),
        ServeOptions {
            limits: LimitSettings {
                calendar_per_minute: 1,
                calendar_burst: 2,
                trusted_proxies: vec!["127.0.0.0/8".parse().expect("cidr")],
                ..LimitSettings::default()
            },
            ..ServeOptions::default()
        },
    )
    .await;
    let mut calendar = server.calendar().await;
    let as_client = |id: &str| {
        let mut request = tonic::Request::new(pb::ListPostsRequest {});
        request
            .metadata_mut()
            .insert("x-client-id", id.parse().expect("ascii"));
        request
    };
    for _ in 0..2 {
        calendar
            .list_posts(as_client("user-a"))
            .await
            .expect("user-a's burst");
    }
    let refused = calendar
        .list_posts(as_client("user-a"))
        .await
        .expect_err("user-a is over its limit");
    assert_rate_limited(&refused, "calendar");
    calendar
        .list_posts(as_client("user-b"))
        .await
        .expect("user-b, behind the same proxy, has its own bucket");
    server.stop().await;
}

/// The binary reads CIDRs from its config and names the key of a bad one.
#[test]
fn config_check_takes_cidrs_and_names_a_bad_one() {
    let dir = tempfile::tempdir().expect("dir");
    let check = |name: &str, proxies: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("[limits]\ntrusted_proxies = {proxies}\n")).expect("write");
        std::process::Command::new(env!("CARGO_BIN_EXE_slotd"))
            .args(["config", "check", &path.display().to_string()])
            .env_remove("RUST_LOG")
            .output()
            .expect("run slotd")
    };
    let good = check(
        "good.toml",
        r#"["10.0.0.1", "10.0.0.0/8", "2001:db8::/32", "::1"]"#,
    );
    assert!(good.status.success(), "{good:?}");
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(stdout.contains("10.0.0.0/8"), "{stdout}");
    assert!(stdout.contains("2001:db8::/32"), "{stdout}");
    let bad = check("bad.toml", r#"["10.0.0.0/33"]"#);
    assert!(!bad.status.success(), "{bad:?}");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("limits.trusted_proxies"), "{stderr}");
    assert!(stderr.contains("0-32"), "{stderr}");
}
