//! The documented Redis deployments, driven through the real `slotd` binary (issue 15): Redis
//! Cluster from `--redis-url redis-cluster://...`, Redis over TLS (private CA, mutual TLS, a
//! TLS cluster, Sentinel over TLS) and Redis Sentinel following a failover. Each one books,
//! waits in the room and audits through the process; `slotd config check` takes the same URLs.

use crate::support;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use support::cluster::RedisCluster;
use support::flow::{book_wait_audit, connect, open, real_date, register};
use support::history::{self, until_acknowledged, History, StormPlan};
use support::process::Slotd;
use support::sentinel::SentinelSet;
use support::tls::{Pki, TlsCluster, TlsRedis};

/// `slotd config check FILE` on a file holding `toml`: (exit ok, stdout + stderr).
fn config_check(toml: &str) -> (bool, String) {
    let mut file = tempfile::NamedTempFile::new().expect("config file");
    file.write_all(toml.as_bytes()).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_slotd"))
        .args(["config", "check"])
        .arg(file.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run slotd config check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_on_a_cluster_url_books_waits_in_the_room_and_audits() {
    let cluster = RedisCluster::start();
    let url = cluster.url();

    let (ok, out) = config_check(&format!("[redis]\nurl = \"{url}\"\n"));
    assert!(ok, "config check takes the cluster url: {out}");
    assert!(out.contains("redis-cluster://127.0.0.1:"), "{out}");
    let secret = url.replacen("redis-cluster://", "redis-cluster://:hunter2@", 1);
    let (ok, out) = config_check(&format!("[redis]\nurl = \"{secret}\"\n"));
    assert!(ok && !out.contains("hunter2"), "password redacted: {out}");
    let (ok, out) = config_check("[redis]\nurl = \"redis-cluster://\"\n");
    assert!(!ok && out.contains("`redis.url`"), "{out}");
    let (ok, out) = config_check("[redis]\nurl = \"redis-cluster://127.0.0.1:7000/3\"\n");
    assert!(
        !ok && out.contains("`redis.url`"),
        "a cluster has no db: {out}"
    );

    // Two processes on the cluster: what one books, the other reads.
    let a = Slotd::start(0, &url);
    let b = Slotd::start(0, &url);
    let channel = connect(&a.addr()).await;
    let (direct, admitted) = book_wait_audit(&channel, 1).await;
    let other = connect(&b.addr()).await;
    let stored = history::manifest(&other, &real_date(7)).await;
    for confirmation in [&direct, &admitted] {
        assert!(stored
            .iter()
            .any(|s| &s.confirmation_number == confirmation));
    }
    assert!(
        a.log().contains("redis store answers"),
        "slotd reached the cluster:\n{}",
        a.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_books_and_a_wrong_ca_fails_fast_naming_the_key() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, "no");

    let (ok, out) = config_check(&format!(
        "[redis]\nurl = \"{}\"\ntls_ca_cert = \"{}\"\n",
        redis.url(),
        pki.ca()
    ));
    assert!(ok, "{out}");
    let (ok, out) = config_check(&format!(
        "[redis]\nurl = \"redis://127.0.0.1:6379/\"\ntls_ca_cert = \"{}\"\n",
        pki.ca()
    ));
    assert!(
        !ok && out.contains("`redis.tls_ca_cert`"),
        "a CA needs a TLS url: {out}"
    );
    let (ok, out) = config_check(&format!(
        "[redis]\nurl = \"{}\"\ntls_ca_cert = \"{}\"\n",
        redis.url(),
        pki.path("server.key").display()
    ));
    assert!(
        !ok && out.contains("`redis.tls_ca_cert`"),
        "not a certificate: {out}"
    );

    // The CA from the flag's environment twin (the other tests pass --redis-ca-cert).
    let slotd = Slotd::start_env(0, &redis.url(), &[], &[("SLOTD_REDIS_CA_CERT", &pki.ca())]);
    let channel = connect(&slotd.addr()).await;
    book_wait_audit(&channel, 1).await;

    let refused = Slotd::refused(&redis.url(), &args(&["--redis-ca-cert", &pki.other_ca()]));
    assert!(
        refused.contains("config key `redis.tls_ca_cert`") && refused.contains("not trusted"),
        "a wrong CA fails at start naming the key:\n{refused}"
    );
    // Without --redis-ca-cert the system roots do not know the test CA either.
    let refused = Slotd::refused(&redis.url(), &[]);
    assert!(refused.contains("`redis.tls_ca_cert`"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_books_and_a_missing_client_certificate_fails_fast() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, "yes");
    let mut with_cert = args(&["--redis-ca-cert", &pki.ca()]);
    with_cert.extend(pki.client_args());
    let slotd = Slotd::start_with(0, &redis.url(), &with_cert);
    let channel = connect(&slotd.addr()).await;
    book_wait_audit(&channel, 1).await;

    let refused = Slotd::refused(&redis.url(), &args(&["--redis-ca-cert", &pki.ca()]));
    assert!(
        refused.contains("config key `redis.tls_client_cert`")
            && refused.contains("refused the client certificate"),
        "a refused client certificate fails at start naming the key:\n{refused}"
    );
    let mut half = args(&["--redis-ca-cert", &pki.ca(), "--redis-client-cert"]);
    half.push(pki.path("client.pem").display().to_string());
    let refused = Slotd::refused(&redis.url(), &half);
    assert!(refused.contains("`redis.tls_client_key`"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_with_mutual_tls_books_waits_in_the_room_and_audits() {
    let pki = Pki::new();
    let cluster = TlsCluster::start(&pki);
    let mut tls = args(&["--redis-ca-cert", &pki.ca()]);
    tls.extend(pki.client_args());

    let (ok, out) = config_check(&format!(
        "[redis]\nurl = \"{}\"\ntls_ca_cert = \"{}\"\ntls_client_cert = \"{}\"\n\
         tls_client_key = \"{}\"\n",
        cluster.url(),
        pki.ca(),
        pki.path("client.pem").display(),
        pki.path("client.key").display()
    ));
    assert!(ok, "{out}");

    let slotd = Slotd::start_with(0, &cluster.url(), &tls);
    let channel = connect(&slotd.addr()).await;
    book_wait_audit(&channel, 1).await;

    let mut wrong = args(&["--redis-ca-cert", &pki.other_ca()]);
    wrong.extend(pki.client_args());
    let refused = Slotd::refused(&cluster.url(), &wrong);
    assert!(
        refused.contains("config key `redis.tls_ca_cert`"),
        "a wrong CA fails at start on a cluster too:\n{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_over_tls_books_waits_in_the_room_and_audits() {
    let pki = Pki::new();
    let set = SentinelSet::start_tls(&pki);
    assert!(set.url().starts_with("rediss+sentinel://"));
    let mut tls = args(&["--redis-ca-cert", &pki.ca()]);
    tls.extend(pki.client_args());
    let slotd = Slotd::start_with(0, &set.url(), &tls);
    let channel = connect(&slotd.addr()).await;
    book_wait_audit(&channel, 1).await;
}

async fn until_readable(channel: &Channel, date: &str, secs: u64) -> Duration {
    let started = Instant::now();
    loop {
        let read = slotd::api::pb::admin_service_client::AdminServiceClient::new(channel.clone())
            .list_appointments(support::admin(slotd::api::pb::ListAppointmentsRequest {
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                date: date.into(),
                ..Default::default()
            }))
            .await;
        if read.is_ok() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "slotd did not follow the promoted replica within {secs} s: {read:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_mid_storm_is_followed_and_loses_no_acknowledged_booking() {
    let mut set = SentinelSet::start();
    let url = set.url();
    let (ok, out) = config_check(&format!("[redis]\nurl = \"{url}\"\nwait_replicas = 1\n"));
    assert!(ok, "{out}");
    let (ok, out) = config_check("[redis]\nurl = \"redis+sentinel://127.0.0.1:26379\"\n");
    assert!(!ok && out.contains("master name"), "{out}");

    let slotd = Slotd::start_with(
        0,
        &url,
        &args(&[
            "--redis-wait-replicas",
            "1",
            "--redis-wait-timeout-ms",
            "1000",
        ]),
    );
    let channel = connect(&slotd.addr()).await;
    let probe = connect(&slotd.addr()).await;
    let plan = StormPlan {
        date: real_date(7),
        times: (0..8)
            .map(|q| format!("{:02}:{:02}", 8 + q / 4, (q % 4) * 15))
            .collect(),
        workers: 6,
        requests_per_worker: 30,
        first_applicant: 1,
        cancel_every: 4,
        pace: Duration::from_millis(60),
        // Spans the failover and the dead node's restart as a replica (WAIT 1 cannot be met
        // before it), with room to spare on a slow machine.
        patience: Duration::from_secs(60),
    };
    open(&channel, &plan.date, "08:00", "09:45", 16).await;
    open(&channel, &plan.date, "10:00", "10:00", 1_000).await;
    register(&channel, plan.applicant_ids()).await;
    // For one write outside the storm (on another day, so the storm's check does not see it).
    let aside = real_date(8);
    open(&channel, &aside, "10:00", "10:00", 10).await;
    register(&channel, [100_000]).await;

    let history = History::new();
    let storm = tokio::spawn(history::run_storm(
        channel.clone(),
        plan.clone(),
        history.clone(),
    ));
    until_acknowledged(&history, 15).await;
    let primary = set.primary();
    let before = history.acknowledged_books();
    set.kill(primary);
    let killed = Instant::now();
    let promoted = tokio::task::block_in_place(|| set.wait_promoted(primary, 60));
    let promotion = killed.elapsed();
    let followed = until_readable(&probe, &plan.date, 60).await;
    // While the new primary has no replica, a write is applied but not acknowledged: WAIT 1
    // times out and slotd answers UNAVAILABLE (clients retry with their request_id).
    let lone = slotd::api::pb::booking_service_client::BookingServiceClient::new(probe.clone())
        .book_appointment(support::book_request(
            "lone-primary",
            support::slot(&aside, "10:00"),
            vec![support::applicant(100_000)],
        ))
        .await;
    tokio::task::block_in_place(|| set.restart_as_replica(primary, promoted));
    storm.await.expect("storm");

    let verdict = history::check(&channel, &plan, &history).await;
    history::audit_clean(&channel, &plan.date).await;
    let log = slotd.log();
    // What the UNAVAILABLE answers were, from slotd's log (`store unavailable`, by detail).
    let mut unavailable = std::collections::BTreeMap::<String, u32>::new();
    for line in log.lines().filter(|l| l.contains("store unavailable")) {
        let detail = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["fields"]["detail"].as_str().map(String::from))
            .unwrap_or_else(|| "(no detail)".into());
        let kind: String = detail.chars().filter(|c| !c.is_ascii_digit()).collect();
        *unavailable.entry(kind).or_default() += 1;
    }
    let wait_short = log.matches("replicas acknowledged within").count();
    eprintln!(
        "sentinel failover: promoted {promoted} {promotion:?} after the kill, slotd read \
         through it {followed:?} later; {before} acknowledged before the kill; a write on the \
         lone primary answered {:?}; {wait_short} answers of WAIT short of its replica; {}; \
         retried answers {:?}; UNAVAILABLE details {unavailable:#?}; {verdict:?}",
        lone.as_ref()
            .map(|_| ())
            .map_err(|s| (s.code(), support::reason(s))),
        history.summary(),
        history.retry_codes(),
    );
    let refused = lone.expect_err("WAIT 1 cannot be met on a lone primary");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        verdict.acknowledged_books > before,
        "bookings were acknowledged through the promoted primary: {verdict:?}"
    );
    assert!(
        log.contains("asking the sentinels for the primary again"),
        "slotd looked the primary up again:\n{log}"
    );
}
