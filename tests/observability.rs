//! Operating slotd through the real binary: the Prometheus endpoint (families that never mix
//! counters and gauges, build info, serving, process metrics, and every metric name the alert
//! rules and the Grafana dashboard use is one a live slotd exports), `slotd health` (the container
//! health check, plaintext and TLS), and connection lifetimes (GOAWAY after
//! `server.max_connection_age_secs`, then clients reconnect; HTTP/2 keepalive pings).

use crate::support;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use slotd::api::pb;
use slotd::api::pb::booking_service_client::BookingServiceClient;
use slotd::api::pb::calendar_service_client::CalendarServiceClient;
use support::flow::{connect, open, real_date, register};
use support::process::{free_port, scrape, Slotd};
use support::redis::RedisServer;
use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// One scrape: sample values by series (`name{labels}` as printed), and family types by name.
struct Scrape {
    samples: Vec<(String, String, f64)>,
    types: HashMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value: {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name.to_owned(), labels.trim_end_matches('}').to_owned()),
                None => (series.to_owned(), String::new()),
            };
            samples.push((name, labels, value));
        }
        Self { samples, types }
    }

    /// The value of `name` whose labels contain every `k="v"` of `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
            })
            .map(|(_, _, v)| *v)
    }

    /// Every name a query may use: sample names and family names.
    fn names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.samples.iter().map(|(n, _, _)| n.clone()).collect();
        names.extend(self.types.keys().cloned());
        names
    }
}

/// `slotd health ARGS`: (exit success, stdout).
fn health(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slotd"))
        .arg("health")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run slotd health");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

/// Polls `f` until it returns Some, up to DEADLINE.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Metric names in a rules file or dashboard: `slotd_*` and `process_*` words.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if word(bytes[i]) && (i == 0 || !word(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && word(bytes[i]) {
                i += 1;
            }
            let w = &text[start..i];
            if w.starts_with("slotd_") || w.starts_with("process_") {
                names.insert(w.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_slotd_exports_every_metric_the_alerts_and_dashboard_use_and_serving_follows_health()
{
    let mut redis = RedisServer::start();
    let redis_url = redis.url();
    let (slotd, metrics_port) = Slotd::start_with_metrics(
        &["--redis-url", &redis_url, "--redis-reconnect-retries", "0"],
        &[
            ("SLOTD__METRICS__REFRESH_SECS", "1"),
            ("SLOTD__LIMITS__LOOKUP_FAILURE_BURST", "1"),
            ("SLOTD__LIMITS__LOOKUP_FAILURES_PER_HOUR", "1"),
        ],
    );
    let addr = format!("http://{}", slotd.addr());
    let channel = connect(&slotd.addr()).await;

    // Traffic that makes every family have series: bookings (ok and refused), Redis calls,
    // a failed lookup and then a rate-limited one.
    let date = real_date(7);
    open(&channel, &date, "08:00", "08:00", 5).await;
    register(&channel, [1]).await;
    let a = applicant(1);
    let mut booking = BookingServiceClient::new(channel.clone());
    booking
        .book_appointment(book_request("obs-1", slot(&date, "08:00"), vec![a.clone()]))
        .await
        .expect("booked");
    booking
        .book_appointment(book_request("obs-2", slot(&date, "08:00"), vec![a]))
        .await
        .expect_err("the receipt is used");
    for n in 0..2 {
        let _ = booking
            .get_appointment(pb::GetAppointmentRequest {
                confirmation_number: format!("ABCDEFGHJK{n:04}")
                    .replace('0', "2")
                    .replace('1', "3"),
                passport_number: "E12345678".into(),
            })
            .await;
    }

    // Serving: 1 now; `slotd health` agrees.
    let s = eventually("slotd_serving 1", || {
        let s = Scrape::parse(&scrape(metrics_port));
        (s.value("slotd_serving", &[]) == Some(1.0)
            && s.value("slotd_waiting_room", &[("state", "waiting")])
                .is_some()
            && s.value("slotd_slot_feed_watchers", &[]).is_some())
        .then_some(s)
    })
    .await;
    assert_eq!(s.value("slotd_store_up", &[]), Some(1.0));
    assert_eq!(health(&["--addr", &addr]), (true, "SERVING".to_owned()));

    // Redis goes away: health NOT_SERVING, slotd_serving and slotd_store_up 0, calls fail.
    redis.stop();
    let _ = CalendarServiceClient::new(channel.clone())
        .list_available_dates(pb::ListAvailableDatesRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: date.clone(),
            to_date: date.clone(),
        })
        .await;
    eventually("slotd_serving 0", || {
        let s = Scrape::parse(&scrape(metrics_port));
        (s.value("slotd_serving", &[]) == Some(0.0) && s.value("slotd_store_up", &[]) == Some(0.0))
            .then_some(())
    })
    .await;
    let (ok, said) = health(&["--addr", &addr]);
    assert!(!ok, "NOT_SERVING is unhealthy: {said}");
    assert_eq!(said, "NOT_SERVING");
    redis.restart();
    eventually("slotd_serving 1 again", || {
        let s = Scrape::parse(&scrape(metrics_port));
        (s.value("slotd_serving", &[]) == Some(1.0)).then_some(())
    })
    .await;
    assert!(health(&["--addr", &addr]).0);

    let s = Scrape::parse(&scrape(metrics_port));
    // Families never mix kinds: a counter's samples are all `<family>_total`, a gauge's are the
    // family name, a histogram's its buckets, sum and count.
    for (name, _, _) in &s.samples {
        let family = s
            .types
            .iter()
            .filter(|(f, _)| {
                name == *f
                    || name
                        .strip_prefix(f.as_str())
                        .is_some_and(|r| r.starts_with('_'))
            })
            .max_by_key(|(f, _)| f.len())
            .unwrap_or_else(|| panic!("{name} has no # TYPE"));
        let suffix = &name[family.0.len()..];
        let allowed: &[&str] = match family.1.as_str() {
            "counter" => &["_total"],
            "gauge" => &[""],
            "histogram" => &["_bucket", "_sum", "_count"],
            other => panic!("{name}: unexpected type {other}"),
        };
        assert!(
            allowed.contains(&suffix),
            "{name} in {} family {}",
            family.1,
            family.0
        );
    }
    for (old, label) in [
        ("slotd_waiting_room", "state=\"admitted\""),
        ("slotd_slot_feed", "what="),
    ] {
        assert!(
            !s.samples
                .iter()
                .any(|(n, l, _)| n == old && l.contains(label)),
            "{old}{{{label}..}} mixes totals into a gauge family"
        );
    }
    assert_eq!(
        s.value(
            "slotd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(s
        .value("process_cpu_seconds_total", &[])
        .is_some_and(|v| v > 0.0));
    assert!(s
        .value("process_resident_memory_bytes", &[])
        .is_some_and(|v| v > 1e6));
    assert!(s.value("process_open_fds", &[]).is_some_and(|v| v >= 3.0));
    assert!(s
        .value("slotd_redis_errors_total", &[])
        .is_some_and(|v| v >= 1.0));
    assert_eq!(
        s.value("slotd_rate_limited_total", &[("limit", "lookup_failures")]),
        Some(1.0)
    );
    assert!(s
        .value("slotd_grpc_connections", &[])
        .is_some_and(|v| v >= 1.0));

    // Every metric the rules and the dashboard name is exported.
    let exported = s.names();
    for file in ["deploy/prometheus/alerts.yml", "deploy/grafana/slotd.json"] {
        let used = metric_names_in(&repo_file(file));
        assert!(used.len() >= 8, "{file}: only {used:?}");
        let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics a live slotd does not export: {missing:?}\nexported: {exported:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// slotd health over TLS

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    other_ca_pem: String,
}

fn pki() -> Pki {
    use rcgen::{CertificateParams, KeyPair};
    use support::tls::ca;
    let (ca_pem, issuer) = ca("slotd health test CA");
    let (other_ca_pem, _) = ca("another CA");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("server cert");
    Pki {
        ca_pem,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        other_ca_pem,
    }
}

#[test]
fn slotd_health_checks_over_tls_and_plaintext_and_fails_on_anything_but_serving() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = pki();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let (ca, cert, key, other_ca) = (
        write("ca.pem", &pki.ca_pem),
        write("cert.pem", &pki.cert_pem),
        write("key.pem", &pki.key_pem),
        write("other-ca.pem", &pki.other_ca_pem),
    );
    let slotd = Slotd::start_args(0, &["--tls-cert", &cert, "--tls-key", &key], &[]);
    let tls_addr = format!("https://localhost:{}", slotd.port());
    let ip_addr = format!("https://127.0.0.1:{}", slotd.port());

    assert_eq!(
        health(&["--addr", &tls_addr, "--ca-cert", &ca]),
        (true, "SERVING".to_owned())
    );
    // The certificate names localhost, not the IP: --tls-domain says which name to expect.
    assert!(!health(&["--addr", &ip_addr, "--ca-cert", &ca]).0);
    assert!(
        health(&[
            "--addr",
            &ip_addr,
            "--ca-cert",
            &ca,
            "--tls-domain",
            "localhost"
        ])
        .0
    );
    assert!(
        health(&[
            "--addr",
            &tls_addr,
            "--ca-cert",
            &ca,
            "--service",
            "slotd.v1.BookingService"
        ])
        .0
    );
    let (ok, said) = health(&[
        "--addr",
        &tls_addr,
        "--ca-cert",
        &ca,
        "--service",
        "no.Such",
    ]);
    assert!(!ok);
    assert_eq!(said, "SERVICE_UNKNOWN");
    // A CA that did not sign the certificate, no CA, or plaintext to a TLS port: unhealthy.
    assert!(!health(&["--addr", &tls_addr, "--ca-cert", &other_ca]).0);
    assert!(!health(&["--addr", &tls_addr]).0);
    let plain = format!("http://127.0.0.1:{}", slotd.port());
    assert!(!health(&["--addr", &plain, "--timeout-secs", "2"]).0);
    // Nothing listening: unhealthy, saying why.
    let (ok, said) = health(&["--addr", &format!("http://127.0.0.1:{}", free_port())]);
    assert!(!ok);
    assert!(said.starts_with("unhealthy"), "{said}");
}

// ---------------------------------------------------------------------------------------------
// Connection age and keepalive, seen from a hand-written HTTP/2 client

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

/// A bare HTTP/2 connection: preface and SETTINGS sent, frames read one by one.
struct RawH2 {
    stream: TcpStream,
}

#[derive(Debug)]
enum Frame {
    Frame {
        kind: u8,
        flags: u8,
        payload: Vec<u8>,
    },
    Closed,
}

impl RawH2 {
    fn connect(addr: &str) -> Self {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        stream.write_all(PREFACE).expect("preface");
        let mut raw = Self { stream };
        raw.send(SETTINGS, 0, &[]);
        raw
    }

    fn send(&mut self, kind: u8, flags: u8, payload: &[u8]) {
        let len = u32::try_from(payload.len())
            .expect("small frame")
            .to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        // The server may have closed already; the next read says so.
        let _ = self.stream.write_all(&frame);
    }

    fn next(&mut self) -> Frame {
        let mut header = [0u8; 9];
        match self.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Frame::Closed,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Frame::Closed,
            Err(e) => panic!("no frame within {DEADLINE:?}: {e}"),
        }
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        if self.stream.read_exact(&mut payload).is_err() {
            return Frame::Closed;
        }
        Frame::Frame {
            kind: header[3],
            flags: header[4],
            payload,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_older_than_max_connection_age_gets_goaway_and_clients_reconnect() {
    let (slotd, metrics_port) = Slotd::start_with_metrics(
        &[],
        &[
            ("SLOTD__SERVER__MAX_CONNECTION_AGE_SECS", "1"),
            ("SLOTD__SERVER__MAX_CONNECTION_AGE_GRACE_SECS", "1"),
        ],
    );

    // A bare connection: the server sends GOAWAY once it is a second old. This client never
    // answers the server's shutdown PING, so the server would wait for it forever: the grace
    // period closes the connection anyway.
    let addr = slotd.addr();
    let goaway = tokio::task::spawn_blocking(move || {
        let mut raw = RawH2::connect(&addr);
        let mut saw_goaway = false;
        loop {
            match raw.next() {
                Frame::Frame { kind: GOAWAY, .. } => saw_goaway = true,
                Frame::Frame {
                    kind: SETTINGS,
                    flags,
                    ..
                } if flags & ACK == 0 => raw.send(SETTINGS, ACK, &[]),
                Frame::Frame { .. } => {}
                Frame::Closed => return saw_goaway,
            }
        }
    })
    .await
    .expect("raw client");
    assert!(goaway, "the server closed the aged connection with GOAWAY");

    // A real client keeps working across several ages: each call succeeds while the server
    // rotates its connection, which shows up as more accepted connections.
    let accepted = || {
        Scrape::parse(&scrape(metrics_port))
            .value("slotd_grpc_connections_accepted_total", &[])
            .unwrap_or(0.0)
    };
    let before = accepted();
    let mut calendar = CalendarServiceClient::new(connect(&slotd.addr()).await);
    let deadline = Instant::now() + DEADLINE;
    let mut calls = 0;
    while accepted() < before + 3.0 {
        assert!(
            Instant::now() < deadline,
            "the client did not reconnect: {} accepted after {calls} calls",
            accepted() - before
        );
        calendar
            .list_posts(pb::ListPostsRequest {})
            .await
            .expect("every call succeeds across connection ages");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn keepalive_pings_go_to_idle_clients_and_an_unanswered_one_closes_the_connection() {
    let slotd = Slotd::start_args(
        0,
        &[],
        &[
            ("SLOTD__SERVER__HTTP2_KEEPALIVE_INTERVAL_SECS", "1"),
            ("SLOTD__SERVER__HTTP2_KEEPALIVE_TIMEOUT_SECS", "1"),
        ],
    );
    let mut raw = RawH2::connect(&slotd.addr());
    // Answer three pings: the connection stays open.
    let mut answered = 0;
    while answered < 3 {
        match raw.next() {
            Frame::Frame {
                kind: PING,
                flags,
                payload,
            } if flags & ACK == 0 => {
                raw.send(PING, ACK, &payload);
                answered += 1;
            }
            Frame::Frame {
                kind: SETTINGS,
                flags,
                ..
            } if flags & ACK == 0 => raw.send(SETTINGS, ACK, &[]),
            Frame::Frame { kind: GOAWAY, .. } | Frame::Closed => {
                panic!("closed although {answered} pings were answered")
            }
            Frame::Frame { .. } => {}
        }
    }
    // Then stop answering: the server gives up on the connection.
    loop {
        match raw.next() {
            Frame::Closed | Frame::Frame { kind: GOAWAY, .. } => break,
            Frame::Frame { .. } => {}
        }
    }
}
