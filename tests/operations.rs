//! Operations, end to end: per-client rate limits with RetryInfo, TLS with operator client
//! certificates, and the real `slotd` binary — layered configuration and `config check`, the
//! Prometheus endpoint, and SIGTERM during a booking storm on Redis.

use crate::support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Duration as ChronoDuration, Utc};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request};
use tonic_types::StatusExt;

use slotd::api::pb;
use slotd::api::pb::admin_service_client::AdminServiceClient;
use slotd::api::pb::booking_service_client::BookingServiceClient;
use slotd::api::pb::calendar_service_client::CalendarServiceClient;
use slotd::config::LimitSettings;
use slotd::server::{ServeOptions, TlsOptions};
use slotd::store::memory::MemoryStore;
use support::flow::{connect, open, real_date, register};
use support::process::{scrape, Slotd};
use support::redis::RedisServer;
use support::*;

// ---------------------------------------------------------------------------------------------
// Rate limits

fn limited(limits: LimitSettings) -> ServeOptions {
    ServeOptions {
        limits,
        ..ServeOptions::default()
    }
}

#[tokio::test]
async fn a_client_over_its_calendar_limit_gets_resource_exhausted_with_retry_info() {
    let server = TestServer::start_with(
        Arc::new(MemoryStore::new()),
        limited(LimitSettings {
            calendar_per_minute: 1,
            calendar_burst: 3,
            ..LimitSettings::default()
        }),
    )
    .await;
    let mut calendar = server.calendar().await;
    for _ in 0..3 {
        calendar
            .list_posts(pb::ListPostsRequest {})
            .await
            .expect("within the burst");
    }
    let refused = calendar
        .list_posts(pb::ListPostsRequest {})
        .await
        .expect_err("over the limit");
    assert_refused(&refused, Code::ResourceExhausted, "RATE_LIMITED");
    let retry = refused
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(60),
        "{retry:?}"
    );
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        info.metadata.get("limit").map(String::as_str),
        Some("calendar")
    );

    // Operators are not rate limited.
    server
        .admin()
        .await
        .audit_inventory(admin(pb::AuditInventoryRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: day(1),
            to_date: day(1),
        }))
        .await
        .expect("admin passes");
    server.stop().await;
}

#[tokio::test]
async fn guessing_confirmation_numbers_runs_out_of_failed_lookups_quickly() {
    let server = TestServer::start_with(
        Arc::new(MemoryStore::new()),
        limited(LimitSettings {
            lookup_failures_per_hour: 1,
            lookup_failure_burst: 3,
            ..LimitSettings::default()
        }),
    )
    .await;
    let mut booking = server.booking().await;
    let guess = |n: u32| pb::GetAppointmentRequest {
        confirmation_number: format!("ABCDEFGHJK{n:04}")
            .replace('0', "2")
            .replace('1', "3"),
        passport_number: "E12345678".into(),
    };
    for n in 0..3 {
        let miss = booking
            .get_appointment(guess(n))
            .await
            .expect_err("no such appointment");
        assert_refused(&miss, Code::NotFound, "APPOINTMENT_NOT_FOUND");
    }
    let refused = booking
        .get_appointment(guess(9))
        .await
        .expect_err("lookups exhausted");
    assert_refused(&refused, Code::ResourceExhausted, "RATE_LIMITED");
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        info.metadata.get("limit").map(String::as_str),
        Some("lookup_failures")
    );
    assert!(refused.get_details_retry_info().is_some());

    // Another client (a trusted proxy naming it) is not affected; an untrusted peer cannot
    // pick a new identity with x-client-id.
    let mut request = Request::new(guess(10));
    request
        .metadata_mut()
        .insert("x-client-id", "someone-else".parse().expect("ascii"));
    let still = booking
        .get_appointment(request)
        .await
        .expect_err("still limited");
    assert_refused(&still, Code::ResourceExhausted, "RATE_LIMITED");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_grpc_timeout_ends_a_call_stuck_on_the_store() {
    let redis = RedisServer::start();
    let server = TestServer::start(redis.store()).await;
    let date = day(2);
    open_day(&server, &date, 5).await;
    // The metrics are the process's (shared by every test of this binary): count from here.
    let list_slots = "slotd.v1.CalendarService/ListSlots";
    let cancelled = || {
        let samples = parse_metrics(&slotd::metrics::metrics().render());
        let n = sample(
            &samples,
            "slotd_rpc_requests_total",
            &[("method", list_slots), ("code", "Cancelled")],
        );
        (n.unwrap_or(0.0), samples)
    };
    let before = cancelled().0;
    // Redis holds every command for 3 s: without the deadline the call would wait for the
    // store's own timeout and fail UNAVAILABLE.
    let _: () = ::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("ALL")
        .query(&mut redis.client())
        .expect("client pause");
    let mut request = Request::new(pb::ListSlotsRequest {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        date: date.clone(),
    });
    request
        .metadata_mut()
        .insert("grpc-timeout", "200m".parse().expect("ascii"));
    let refused = server
        .calendar()
        .await
        .list_slots(request)
        .await
        .expect_err("deadline");
    assert!(
        matches!(refused.code(), Code::Cancelled | Code::DeadlineExceeded),
        "the server honours grpc-timeout: {refused:?}"
    );
    // The call that never answered is still counted, with the status the client saw (once
    // tonic drops the abandoned call, just after answering).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (now, samples) = cancelled();
        if now > before {
            break;
        }
        let seen: Vec<_> = samples
            .iter()
            .filter(|(n, l, _)| {
                n == "slotd_rpc_requests_total"
                    && l.get("method").map(String::as_str) == Some(list_slots)
            })
            .collect();
        assert!(Instant::now() < deadline, "not counted: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _: () = ::redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut redis.client())
        .expect("unpause");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// TLS

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    operator_cert: String,
    operator_key: String,
    /// Issued by the operator CA, but for a name not in tls.operator_names.
    intruder_cert: String,
    intruder_key: String,
    stranger_cert: String,
    stranger_key: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let (ca_pem, issuer) = support::tls::ca("slotd test CA");

    let server_key = KeyPair::generate().expect("server key");
    let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("server params")
        .signed_by(&server_key, &issuer)
        .expect("server cert");

    let operator_key = KeyPair::generate().expect("operator key");
    let mut operator_params =
        CertificateParams::new(vec![OPERATOR_NAME.to_owned()]).expect("params");
    operator_params
        .distinguished_name
        .push(DnType::CommonName, "operator");
    let operator_cert = operator_params
        .signed_by(&operator_key, &issuer)
        .expect("operator cert");
    // Same CA, another name (its common name claims the operator's, which counts for nothing).
    let intruder_key = KeyPair::generate().expect("intruder key");
    let mut intruder_params =
        CertificateParams::new(vec!["intruder.slotd.test".to_owned()]).expect("params");
    intruder_params
        .distinguished_name
        .push(DnType::CommonName, OPERATOR_NAME);
    let intruder_cert = intruder_params
        .signed_by(&intruder_key, &issuer)
        .expect("intruder cert");

    // Signed by a CA slotd does not trust.
    let other_key = KeyPair::generate().expect("other ca key");
    let mut other_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_issuer = Issuer::new(other_params, other_key);
    let stranger_key = KeyPair::generate().expect("stranger key");
    let stranger_cert = CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .signed_by(&stranger_key, &other_issuer)
        .expect("stranger cert");

    Pki {
        ca_pem,
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        operator_cert: operator_cert.pem(),
        operator_key: operator_key.serialize_pem(),
        intruder_cert: intruder_cert.pem(),
        intruder_key: intruder_key.serialize_pem(),
        stranger_cert: stranger_cert.pem(),
        stranger_key: stranger_key.serialize_pem(),
    }
}

/// The one name operator certificates are accepted for (tls.operator_names).
const OPERATOR_NAME: &str = "ops.slotd.test";

async fn tls_channel(
    server: &TestServer,
    pki: &Pki,
    client: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    tls_channel_at(server.addr.port(), pki, client).await
}

async fn tls_channel_at(
    port: u16,
    pki: &Pki,
    client: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("endpoint")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

fn audit_request() -> pb::AuditInventoryRequest {
    pb::AuditInventoryRequest {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        from_date: day(1),
        to_date: day(1),
    }
}

#[tokio::test]
async fn tls_serves_everyone_and_a_verified_operator_certificate_replaces_the_token() {
    let pki = pki();
    let server = TestServer::start_with(
        Arc::new(MemoryStore::new()),
        ServeOptions {
            tls: Some(TlsOptions {
                cert_pem: pki.server_cert.clone().into_bytes(),
                key_pem: pki.server_key.clone().into_bytes(),
                client_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
                operator_names: vec![OPERATOR_NAME.to_owned()],
            }),
            ..ServeOptions::default()
        },
    )
    .await;

    // Plaintext gRPC does not get through a TLS port.
    let plain = Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(plain) = plain {
        CalendarServiceClient::new(plain)
            .list_posts(pb::ListPostsRequest {})
            .await
            .expect_err("plaintext refused");
    }

    // An applicant (no client certificate): public services work; operators need the token.
    let anonymous = tls_channel(&server, &pki, None).await.expect("tls");
    CalendarServiceClient::new(anonymous.clone())
        .list_posts(pb::ListPostsRequest {})
        .await
        .expect("public call over tls");
    let refused = AdminServiceClient::new(anonymous.clone())
        .audit_inventory(audit_request())
        .await
        .expect_err("no token, no certificate");
    assert_refused(&refused, Code::Unauthenticated, "UNAUTHENTICATED");
    AdminServiceClient::new(anonymous)
        .audit_inventory(admin(audit_request()))
        .await
        .expect("the bearer token still works");

    // An operator with a certificate from the operator CA needs no token.
    let operator = tls_channel(&server, &pki, Some((&pki.operator_cert, &pki.operator_key)))
        .await
        .expect("mutual tls");
    AdminServiceClient::new(operator)
        .audit_inventory(audit_request())
        .await
        .expect("certificate is enough");

    // A certificate of the same CA for a name not in tls.operator_names is no operator (before
    // issue #20 any certificate under the CA was full admin); its holder may still use the token.
    let intruder = tls_channel(&server, &pki, Some((&pki.intruder_cert, &pki.intruder_key)))
        .await
        .expect("mutual tls");
    let refused = AdminServiceClient::new(intruder.clone())
        .audit_inventory(audit_request())
        .await
        .expect_err("a certificate for another name is not an operator");
    assert_refused(&refused, Code::Unauthenticated, "UNAUTHENTICATED");
    assert!(
        refused.message().contains("tls.operator_names"),
        "{refused:?}"
    );
    AdminServiceClient::new(intruder)
        .audit_inventory(admin(audit_request()))
        .await
        .expect("the bearer token still works");

    // A certificate from another CA fails the handshake or the call, never authenticates.
    if let Ok(stranger) =
        tls_channel(&server, &pki, Some((&pki.stranger_cert, &pki.stranger_key))).await
    {
        let result = AdminServiceClient::new(stranger)
            .audit_inventory(audit_request())
            .await;
        assert!(result.is_err(), "an untrusted certificate must not pass");
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The real binary

fn slotd_config(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_slotd"));
    command.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run slotd")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[test]
fn config_check_accepts_a_good_file_and_names_the_bad_key() {
    let dir = tempfile::tempdir().expect("dir");
    let good = write(
        dir.path(),
        "good.toml",
        "[server]\nlisten = \"127.0.0.1:6000\"\nadmin_token = \"a-very-secret-operator-token\"\n\
         admission_key = \"a-very-secret-admission-key-0123456789\"\n\
         [redis]\nurl = \"redis://127.0.0.1:6379/0\"\n[metrics]\nlisten = \"127.0.0.1:9464\"\n\
         [limits]\ntrusted_proxies = [\"10.0.0.1\"]\n",
    );
    let out = slotd_config(&["config", "check", &good], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains(": ok"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:9464"), "{stdout}");
    assert!(
        !stdout.contains("a-very-secret-operator-token"),
        "secrets are redacted: {stdout}"
    );
    assert!(
        !stdout.contains("a-very-secret-admission-key"),
        "secrets are redacted: {stdout}"
    );

    let bad = write(dir.path(), "bad.toml", "[redis]\nconnect_timeout_ms = 0\n");
    let out = slotd_config(&["config", "check", &bad], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("redis.connect_timeout_ms"), "{stderr}");

    // The environment layer is checked too, and `serve` fails fast on it, naming the key.
    let out = slotd_config(
        &["config", "check", &good],
        &[("SLOTD__LIMITS__BOOKING_BURST", "lots")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SLOTD__LIMITS__BOOKING_BURST"));
    let out = slotd_config(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("SLOTD__REDIS__TAG", "not a tag")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("redis.tag"));
}

/// Parses the Prometheus text format into (name, labels) → value.
fn parse_metrics(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').expect("label=value");
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), HashMap::new()),
        };
        samples.push((name, labels, value));
    }
    samples
}

fn sample(
    samples: &[(String, HashMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

/// The first date with seats and its first time, from the live calendar.
async fn first_open_slot(channel: &Channel) -> (String, String) {
    let mut calendar = CalendarServiceClient::new(channel.clone());
    let today = Utc::now().date_naive();
    let dates = calendar
        .list_available_dates(pb::ListAvailableDatesRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: today.to_string(),
            to_date: (today + ChronoDuration::days(30)).to_string(),
        })
        .await
        .expect("dates")
        .into_inner()
        .dates;
    let date = dates.first().expect("a demo date").date.clone();
    let slots = calendar
        .list_slots(pb::ListSlotsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            date: date.clone(),
        })
        .await
        .expect("slots")
        .into_inner()
        .slots;
    (date, slots.first().expect("a demo slot").time.clone())
}

#[tokio::test]
async fn the_metrics_endpoint_counts_rpcs_bookings_seats_and_the_waiting_room() {
    let (slotd, metrics_port) =
        Slotd::start_with_metrics(&["--demo"], &[("SLOTD__METRICS__REFRESH_SECS", "1")]);
    let channel = connect(&slotd.addr()).await;
    let (date, time) = first_open_slot(&channel).await;
    let mut booking = BookingServiceClient::new(channel.clone());
    let (passport, receipt) = slotd::demo::demo_applicant(1);
    let applicant = pb::Applicant {
        passport_number: passport,
        given_name: "Wei".into(),
        surname: "Zhang".into(),
        ds160_confirmation: "AA00ABCDEF".into(),
        receipt_number: receipt,
    };
    let slot = pb::SlotRef {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        date,
        time,
    };
    booking
        .book_appointment(book_request(
            "metrics-1",
            slot.clone(),
            vec![applicant.clone()],
        ))
        .await
        .expect("booked");
    let refused = booking
        .book_appointment(book_request("metrics-2", slot, vec![applicant]))
        .await
        .expect_err("the receipt and the passport are taken");
    let refused_code = format!("{:?}", refused.code());
    let refused_outcome = reason(&refused).to_ascii_lowercase();
    assert!(!refused_outcome.is_empty(), "{refused:?}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let samples = loop {
        let samples = parse_metrics(&scrape(metrics_port));
        let ready = sample(&samples, "slotd_seats_remaining", &[("post", "BEIJING")]).is_some()
            && sample(&samples, "slotd_waiting_room", &[("state", "waiting")]).is_some();
        if ready || Instant::now() > deadline {
            break samples;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let book = "slotd.v1.BookingService/BookAppointment";
    assert_eq!(
        sample(
            &samples,
            "slotd_rpc_requests_total",
            &[("method", book), ("code", "Ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            "slotd_rpc_requests_total",
            &[("method", book), ("code", refused_code.as_str())]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &samples,
            "slotd_rpc_duration_seconds_count",
            &[("method", book)]
        )
        .is_some(),
        "latency histogram"
    );
    assert_eq!(
        sample(&samples, "slotd_bookings_total", &[("outcome", "booked")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            "slotd_bookings_total",
            &[("outcome", refused_outcome.as_str())]
        ),
        Some(1.0)
    );
    let seats = sample(
        &samples,
        "slotd_seats_remaining",
        &[("post", "BEIJING"), ("category", "ALL_OTHERS")],
    )
    .expect("seats gauge");
    assert!(seats > 0.0, "{seats}");
    assert_eq!(
        sample(&samples, "slotd_waiting_room", &[("state", "waiting")]),
        Some(0.0)
    );
    // The slot feed's counters are there (no watcher in this test).
    assert_eq!(sample(&samples, "slotd_slot_feed_watchers", &[]), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_booking_storm_keeps_every_acknowledged_booking_and_fails_the_rest_cleanly(
) {
    const APPLICANTS: u32 = 120;
    let redis = RedisServer::start();
    let mut slotd = Slotd::start_args(
        0,
        &[
            "--redis-url",
            &redis.url(),
            "--admission-key",
            ADMISSION_KEY,
            "--drain-timeout-secs",
            "5",
        ],
        &[
            ("SLOTD__LIMITS__BOOKING_BURST", "100000"),
            ("SLOTD__LIMITS__BOOKING_PER_MINUTE", "100000"),
        ],
    );
    let channel = connect(&slotd.addr()).await;
    // A week ahead at the post, so no slot starts during the test.
    let date = real_date(7);
    open(&channel, &date, "08:00", "11:45", 50).await;
    register(&channel, 1..=APPLICANTS).await;

    // The storm: every applicant books on its own connection-sharing client, a few at a time.
    let times: Vec<String> = (0..16)
        .map(|q| format!("{:02}:{:02}", 8 + q / 4, (q % 4) * 15))
        .collect();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 1..=APPLICANTS {
        let channel = channel.clone();
        let slot = slot(&date, &times[(i as usize) % times.len()]);
        let acknowledged = acknowledged.clone();
        tasks.push(tokio::spawn(async move {
            // Spread the calls over time so some are in flight when SIGTERM lands.
            tokio::time::sleep(Duration::from_millis(u64::from(i) * 5)).await;
            let result = BookingServiceClient::new(channel)
                .book_appointment(book_request(
                    &format!("storm-{i}"),
                    slot,
                    vec![applicant(i)],
                ))
                .await;
            if result.is_ok() {
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            (i, result.map(|r| r.into_inner()))
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.load(Ordering::SeqCst) < 10 {
        assert!(Instant::now() < deadline, "no booking acknowledged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    slotd.signal("TERM");

    let mut booked = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (i, result) = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("no call hangs")
            .expect("task");
        match result {
            Ok(response) => {
                let appointment = response.appointment.expect("appointment");
                booked.push((i, appointment.confirmation_number));
            }
            Err(status) => {
                // A call the client starts on a connection that already got the server's GOAWAY
                // never reaches the server: h2 refuses it locally with GoAway(NO_ERROR), which
                // tonic reports as INTERNAL. The server never saw it, so it booked nothing and is
                // safe to retry, like UNAVAILABLE.
                let refused_by_goaway = status.code() == Code::Internal
                    && format!("{status:?}").contains("GoAway(b\"\", NO_ERROR, Remote)");
                assert!(
                    matches!(status.code(), Code::Unavailable | Code::Cancelled)
                        || refused_by_goaway,
                    "applicant {i}: unclean error {status:?}"
                );
                failed += 1;
            }
        }
    }
    assert!(
        slotd.wait_exit(Duration::from_secs(15)),
        "slotd exits 0 after draining:\n{}",
        slotd.log()
    );
    let log = slotd.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("slotd stopped"), "{log}");
    eprintln!(
        "storm: {} acknowledged, {failed} refused cleanly",
        booked.len()
    );
    assert!(
        booked.len() >= 10,
        "{} booked, {failed} failed",
        booked.len()
    );

    // Every acknowledged booking is in Redis: read back through a fresh server on it.
    let server = TestServer::start(redis.store()).await;
    let mut reader = server.booking().await;
    for (i, confirmation) in &booked {
        let appointment = reader
            .get_appointment(pb::GetAppointmentRequest {
                confirmation_number: confirmation.clone(),
                passport_number: applicant(*i).passport_number,
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged booking {confirmation} lost: {e:?}"))
            .into_inner()
            .appointment
            .expect("appointment");
        assert_eq!(appointment.confirmation_number, *confirmation);
    }
    server.stop().await;
}

/// Failed operator authentication is rate limited per client (issue #20, item 8): after the
/// burst of failures (wrong or missing token) the client is refused RESOURCE_EXHAUSTED with
/// RetryInfo (limit `operator_failures`) before any check, even with the right token, while
/// successful calls never spend the budget and other clients are not affected.
#[tokio::test]
async fn failed_operator_authentication_is_rate_limited_per_client() {
    let burst = LimitSettings::default().operator_failure_burst;
    let server = TestServer::start_with(
        Arc::new(MemoryStore::new()),
        ServeOptions {
            limits: LimitSettings {
                booking_per_minute: 1_000_000,
                booking_burst: 1_000_000,
                ..LimitSettings::default()
            },
            ..ServeOptions::default()
        },
    )
    .await;
    let mut ops = server.admin().await;
    for _ in 0..(2 * burst) {
        ops.audit_inventory(admin(audit_request()))
            .await
            .expect("successes spend nothing");
    }
    let wrong = |message: pb::AuditInventoryRequest| {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            "Bearer not-the-operator-token-at-all"
                .parse()
                .expect("ascii"),
        );
        request
    };
    let (mut refused, mut limited) = (0u32, 0u32);
    for n in 0..(burst + 20) {
        let status = if n % 2 == 0 {
            ops.audit_inventory(wrong(audit_request())).await
        } else {
            ops.audit_inventory(audit_request()).await
        }
        .expect_err("no operator");
        match status.code() {
            Code::Unauthenticated => refused += 1,
            _ => {
                assert_refused(&status, Code::ResourceExhausted, "RATE_LIMITED");
                let info = status.get_details_error_info().expect("ErrorInfo");
                assert_eq!(
                    info.metadata.get("limit").map(String::as_str),
                    Some("operator_failures")
                );
                assert!(status.get_details_retry_info().is_some());
                limited += 1;
            }
        }
    }
    assert!(
        refused <= burst + 1 && limited >= 19,
        "{refused} refused, {limited} limited"
    );
    // Spent: now even the right token from this client waits.
    let status = ops
        .audit_inventory(admin(audit_request()))
        .await
        .expect_err("the client's failure budget is spent");
    assert_refused(&status, Code::ResourceExhausted, "RATE_LIMITED");
    server.stop().await;
}

/// Through the binary (issue #20, item 8): `--tls-operator-names` (`tls.operator_names`) is the
/// allow-list of operator certificate names; a certificate of the operator CA for another name
/// is refused; and `--tls-client-ca` without any name does not start, naming the key.
#[tokio::test]
async fn the_binary_accepts_operator_certificates_only_for_the_configured_names() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("dir");
    let cert = write(dir.path(), "server.pem", &pki.server_cert);
    let key = write(dir.path(), "server.key", &pki.server_key);
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let tls = [
        "--tls-cert",
        cert.as_str(),
        "--tls-key",
        key.as_str(),
        "--tls-client-ca",
        ca.as_str(),
    ];
    let out = slotd_config(
        &[&["serve", "--listen", "127.0.0.1:0"][..], &tls[..]].concat(),
        &[],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tls.operator_names"),
        "{out:?}"
    );

    let process = Slotd::start_args(
        0,
        &[
            &tls[..],
            &["--tls-operator-names", "other.slotd.test,ops.slotd.test"][..],
        ]
        .concat(),
        &[],
    );
    let operator = tls_channel_at(
        process.port(),
        &pki,
        Some((&pki.operator_cert, &pki.operator_key)),
    )
    .await
    .expect("mutual tls");
    AdminServiceClient::new(operator)
        .audit_inventory(audit_request())
        .await
        .expect("an allowed name is an operator");
    let intruder = tls_channel_at(
        process.port(),
        &pki,
        Some((&pki.intruder_cert, &pki.intruder_key)),
    )
    .await
    .expect("mutual tls");
    let refused = AdminServiceClient::new(intruder)
        .audit_inventory(audit_request())
        .await
        .expect_err("another name is no operator");
    assert_refused(&refused, Code::Unauthenticated, "UNAUTHENTICATED");
}
