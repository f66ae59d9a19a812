//! The browser front door on the real binary (`web.*` config keys, `--web`): gRPC-Web framing
//! over plain HTTP/1.1 (a hand-written client on a TcpStream, as a browser's fetch sends it)
//! for CalendarService, WaitingRoomService and BookingService, unary calls and server streams;
//! CORS preflights; refused origins; AdminService, health and reflection refused; rate limits
//! and admission tokens applied as over native gRPC; the reference pages.

use crate::support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use prost::Message;
use slotd::api::pb;
use slotd::api::pb::admin_service_client::AdminServiceClient;
use slotd::api::pb::calendar_service_client::CalendarServiceClient;
use support::flow::{connect, real_date};
use support::process::Slotd;
use support::{admin, reason};
use tonic::Code;

const ORIGIN: &str = "https://book.example.cn";

/// `--demo` with gRPC-Web on and `ORIGIN` allowed, as a deployment with its own front end runs.
fn start(env: &[(&str, &str)]) -> Slotd {
    let mut all = vec![
        ("SLOTD__WEB__GRPC_WEB", "true"),
        ("SLOTD__WEB__ALLOWED_ORIGINS", ORIGIN),
    ];
    all.extend_from_slice(env);
    Slotd::start_args(0, &["--demo"], &all)
}

/// One HTTP/1.1 response, its body read as it comes (chunked or sized).
struct Reply {
    stream: BufReader<TcpStream>,
    status: u16,
    headers: http::HeaderMap,
    chunked: bool,
    remaining: usize,
    buffer: Vec<u8>,
    done: bool,
}

/// A finished gRPC-Web call: its messages and its status.
struct Call {
    status: tonic::Status,
    messages: Vec<Vec<u8>>,
    headers: http::HeaderMap,
}

fn send(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut s = stream.try_clone().expect("clone");
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    stream.read_line(&mut line).expect("status line");
    assert!(line.starts_with("HTTP/1.1 "), "not HTTP/1.1: {line:?}");
    let status: u16 = line[9..12].parse().expect("status code");
    let mut map = http::HeaderMap::new();
    loop {
        line.clear();
        stream.read_line(&mut line).expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header");
        map.append(
            http::HeaderName::from_bytes(k.trim().as_bytes()).expect("name"),
            http::HeaderValue::from_str(v.trim()).expect("value"),
        );
    }
    let chunked = map
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let remaining = map
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    Reply {
        stream,
        status,
        headers: map,
        chunked,
        remaining,
        buffer: Vec::new(),
        done: false,
    }
}

impl Reply {
    /// Reads more of the body into `buffer`; false at its end.
    fn fill(&mut self) -> bool {
        if self.done {
            return false;
        }
        if self.chunked {
            let mut line = String::new();
            self.stream.read_line(&mut line).expect("chunk size");
            let size = usize::from_str_radix(line.trim(), 16).expect("hex size");
            if size == 0 {
                let mut end = String::new();
                let _ = self.stream.read_line(&mut end);
                self.done = true;
                return false;
            }
            let mut chunk = vec![0; size + 2];
            self.stream.read_exact(&mut chunk).expect("chunk");
            self.buffer.extend_from_slice(&chunk[..size]);
            true
        } else {
            let mut rest = vec![0; self.remaining];
            self.stream.read_exact(&mut rest).expect("body");
            self.buffer.extend_from_slice(&rest);
            self.done = true;
            !rest.is_empty()
        }
    }

    /// The next gRPC-Web frame: (flags, payload), None at the end of the body.
    fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buffer.len() >= 5 {
                let len = u32::from_be_bytes(self.buffer[1..5].try_into().expect("4 bytes"));
                let len = len as usize;
                if self.buffer.len() >= 5 + len {
                    let flags = self.buffer[0];
                    let payload = self.buffer[5..5 + len].to_vec();
                    self.buffer.drain(..5 + len);
                    return Some((flags, payload));
                }
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// The next message of a stream, or the status it ended with.
    fn next(&mut self) -> Result<Vec<u8>, tonic::Status> {
        if let Some(status) = tonic::Status::from_header_map(&self.headers) {
            return Err(status);
        }
        match self.frame() {
            Some((0, payload)) => Ok(payload),
            Some((0x80, trailers)) => Err(trailer_status(&trailers)),
            Some((flags, _)) => panic!("unexpected frame flags {flags:#x}"),
            None => Err(tonic::Status::unknown("body ended without trailers")),
        }
    }

    fn finish(mut self) -> Call {
        let mut messages = Vec::new();
        let status = loop {
            match self.next() {
                Ok(m) => messages.push(m),
                Err(s) => break s,
            }
        };
        Call {
            status,
            messages,
            headers: self.headers,
        }
    }
}

fn trailer_status(block: &[u8]) -> tonic::Status {
    let text = String::from_utf8(block.to_vec()).expect("utf-8 trailers");
    let mut map = http::HeaderMap::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(':').expect("trailer line");
        map.insert(
            http::HeaderName::from_bytes(k.trim().as_bytes()).expect("name"),
            http::HeaderValue::from_str(v.trim()).expect("value"),
        );
    }
    tonic::Status::from_header_map(&map).expect("grpc-status in the trailers")
}

fn framed(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A gRPC-Web call over HTTP/1.1 with `extra` headers; the reply is read as it comes.
fn open(addr: &str, method: &str, message: &impl Message, extra: &[(&str, &str)]) -> Reply {
    let mut headers = vec![
        ("content-type", "application/grpc-web+proto"),
        ("x-grpc-web", "1"),
    ];
    headers.extend_from_slice(extra);
    send(
        addr,
        "POST",
        &format!("/slotd.v1.{method}"),
        &headers,
        &framed(message),
    )
}

fn call(addr: &str, method: &str, message: &impl Message, extra: &[(&str, &str)]) -> Call {
    let reply = open(addr, method, message, extra);
    assert_eq!(reply.status, 200, "{method}: HTTP {}", reply.status);
    reply.finish()
}

fn ok<M: Message + Default>(addr: &str, method: &str, message: &impl Message) -> M {
    let c = call(addr, method, message, &[]);
    assert_eq!(c.status.code(), Code::Ok, "{method}: {:?}", c.status);
    assert_eq!(c.messages.len(), 1, "{method}");
    M::decode(c.messages[0].as_slice()).expect("decode")
}

fn applicant(i: u32, given: &str) -> pb::Applicant {
    let (passport, receipt) = slotd::demo::demo_applicant(i);
    pb::Applicant {
        passport_number: passport,
        given_name: given.into(),
        surname: "Zhang".into(),
        ds160_confirmation: format!("AA{i:08}"),
        receipt_number: receipt,
    }
}

/// The first open date and time of BEIJING/ALL_OTHERS, read over gRPC-Web.
fn first_slot(addr: &str) -> pb::SlotRef {
    let dates: pb::ListAvailableDatesResponse = ok(
        addr,
        "CalendarService/ListAvailableDates",
        &pb::ListAvailableDatesRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: real_date(0),
            to_date: real_date(30),
        },
    );
    let date = dates.dates.first().expect("a demo date").date.clone();
    let slots: pb::ListSlotsResponse = ok(
        addr,
        "CalendarService/ListSlots",
        &pb::ListSlotsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            date: date.clone(),
        },
    );
    let time = slots.slots.first().expect("a demo time").time.clone();
    pb::SlotRef {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        date,
        time,
    }
}

#[test]
fn calendar_room_and_booking_answer_grpc_web_over_http1_unary_and_streaming() {
    let slotd = start(&[]);
    let addr = slotd.addr();

    // CalendarService: unary, then the WatchAvailability stream's first message (a snapshot).
    let posts: pb::ListPostsResponse =
        ok(&addr, "CalendarService/ListPosts", &pb::ListPostsRequest {});
    assert!(posts.posts.iter().any(|p| p.post_id == "BEIJING"));
    let slot = first_slot(&addr);
    let mut watch = open(
        &addr,
        "CalendarService/WatchAvailability",
        &pb::WatchAvailabilityRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: slot.date.clone(),
            to_date: slot.date.clone(),
        },
        &[],
    );
    assert_eq!(watch.status, 200);
    assert_eq!(
        watch.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/grpc-web+proto"[..])
    );
    let first =
        pb::AvailabilityUpdate::decode(watch.next().expect("snapshot").as_slice()).expect("decode");
    assert!(first.snapshot);
    let before = first
        .slots
        .iter()
        .find(|s| s.time == slot.time)
        .expect("the slot")
        .seats_available;

    // WaitingRoomService (its stream is in the gated test below): with the room off, Join
    // answers the service's own refusal.
    let c = call(
        &addr,
        "WaitingRoomService/Join",
        &pb::JoinRequest {
            client_key: support::client_key("web-journey"),
        },
        &[],
    );
    assert_eq!(reason(&c.status), "WAITING_ROOM_DISABLED", "{:?}", c.status);

    // BookingService: a primary and a dependent with demo receipts, then the confirmation.
    let booked: pb::BookAppointmentResponse = ok(
        &addr,
        "BookingService/BookAppointment",
        &pb::BookAppointmentRequest {
            request_id: "web-book-1".into(),
            slot: Some(slot.clone()),
            applicants: vec![applicant(1, "Wei"), applicant(2, "Li")],
        },
    );
    let appointment = booked.appointment.expect("appointment");
    assert_eq!(appointment.applicants.len(), 2);
    let page: pb::RenderConfirmationResponse = ok(
        &addr,
        "BookingService/RenderConfirmation",
        &pb::RenderConfirmationRequest {
            confirmation_number: appointment.confirmation_number.clone(),
            passport_number: applicant(1, "Wei").passport_number,
        },
    );
    assert!(page.html.contains(&appointment.confirmation_number));

    // The open WatchAvailability stream hears of the two seats.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let update = pb::AvailabilityUpdate::decode(watch.next().expect("update").as_slice())
            .expect("decode");
        if update
            .slots
            .iter()
            .any(|s| s.time == slot.time && s.seats_available == before - 2)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no update for the booked slot");
    }

    // A refusal carries its details as over native gRPC: the used receipt is named.
    let again = call(
        &addr,
        "BookingService/BookAppointment",
        &pb::BookAppointmentRequest {
            request_id: "web-book-2".into(),
            slot: Some(slot),
            applicants: vec![applicant(1, "Wei")],
        },
        &[],
    );
    assert_ne!(again.status.code(), Code::Ok);
    assert!(!reason(&again.status).is_empty(), "{:?}", again.status);
}

#[test]
fn a_preflight_from_an_allowed_origin_is_answered_and_its_calls_carry_cors_headers() {
    let slotd = start(&[]);
    let addr = slotd.addr();
    let reply = send(
        &addr,
        "OPTIONS",
        "/slotd.v1.BookingService/BookAppointment",
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type,x-grpc-web,x-admission-token,grpc-timeout",
            ),
        ],
        b"",
    );
    assert_eq!(reply.status, 204);
    let h = &reply.headers;
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert_eq!(h["access-control-allow-methods"], "POST");
    let allowed = h["access-control-allow-headers"].to_str().expect("ascii");
    for name in [
        "content-type",
        "x-grpc-web",
        "x-admission-token",
        "grpc-timeout",
    ] {
        assert!(allowed.contains(name), "{name} not in {allowed}");
    }
    assert!(!allowed.contains("x-client-id"), "{allowed}");
    assert!(h.contains_key("access-control-max-age"));

    let c = call(
        &addr,
        "CalendarService/ListPosts",
        &pb::ListPostsRequest {},
        &[("origin", ORIGIN)],
    );
    assert_eq!(c.status.code(), Code::Ok);
    assert_eq!(c.headers["access-control-allow-origin"], ORIGIN);
    let exposed = c.headers["access-control-expose-headers"]
        .to_str()
        .expect("ascii");
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
}

#[test]
fn a_disallowed_origin_is_refused_before_any_service_runs() {
    let slotd = start(&[]);
    let addr = slotd.addr();
    let reply = send(
        &addr,
        "OPTIONS",
        "/slotd.v1.BookingService/BookAppointment",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ],
        b"",
    );
    assert_eq!(reply.status, 403);
    assert!(!reply.headers.contains_key("access-control-allow-origin"));

    // The call itself changes nothing: the receipt stays unused.
    let slot = first_slot(&addr);
    let reply = open(
        &addr,
        "BookingService/BookAppointment",
        &pb::BookAppointmentRequest {
            request_id: "evil-1".into(),
            slot: Some(slot.clone()),
            applicants: vec![applicant(3, "Wei")],
        },
        &[("origin", "https://evil.example")],
    );
    assert_eq!(reply.status, 403);
    assert!(!reply.headers.contains_key("access-control-allow-origin"));
    let booked: pb::BookAppointmentResponse = ok(
        &addr,
        "BookingService/BookAppointment",
        &pb::BookAppointmentRequest {
            request_id: "good-1".into(),
            slot: Some(slot),
            applicants: vec![applicant(3, "Wei")],
        },
    );
    assert!(booked.appointment.is_some());
}

#[test]
fn admin_health_and_reflection_are_never_served_over_grpc_web() {
    let slotd = start(&[]);
    let addr = slotd.addr();
    let operator = ("authorization", "Bearer test-admin-token-0123456789");
    for origin in [None, Some(ORIGIN)] {
        let mut extra = vec![operator];
        extra.extend(origin.map(|o| ("origin", o)));
        let reply = send(
            &addr,
            "POST",
            "/slotd.v1.AdminService/GetWaitingRoomStats",
            &[("content-type", "application/grpc-web+proto"), operator],
            &framed(&pb::GetWaitingRoomStatsRequest {}),
        );
        let c = reply.finish();
        assert_eq!(c.status.code(), Code::Unimplemented, "{:?}", c.status);
        assert_eq!(reason(&c.status), "NOT_SERVED_OVER_GRPC_WEB");
        let c = call(
            &addr,
            "AdminService/GetWaitingRoomStats",
            &pb::GetWaitingRoomStatsRequest {},
            &extra,
        );
        assert_eq!(c.status.code(), Code::Unimplemented, "{:?}", c.status);
        assert!(c.messages.is_empty());
    }
    for path in [
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ] {
        let c = send(
            &addr,
            "POST",
            path,
            &[("content-type", "application/grpc-web+proto")],
            &framed(&pb::ListPostsRequest {}),
        )
        .finish();
        assert_eq!(
            c.status.code(),
            Code::Unimplemented,
            "{path}: {:?}",
            c.status
        );
    }
    // No preflight either, even from an allowed origin.
    let reply = send(
        &addr,
        "OPTIONS",
        "/slotd.v1.AdminService/ConfigureWaitingRoom",
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "POST"),
        ],
        b"",
    );
    assert_eq!(reply.status, 403);
    assert!(!reply.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_count_grpc_web_and_native_calls_of_one_peer_together() {
    let slotd = start(&[
        ("SLOTD__LIMITS__CALENDAR_BURST", "3"),
        ("SLOTD__LIMITS__CALENDAR_PER_MINUTE", "1"),
    ]);
    let addr = slotd.addr();
    let web = addr.clone();
    let refused = tokio::task::spawn_blocking(move || {
        for _ in 0..2 {
            let c = call(
                &web,
                "CalendarService/ListPosts",
                &pb::ListPostsRequest {},
                &[],
            );
            assert_eq!(c.status.code(), Code::Ok, "{:?}", c.status);
        }
        // A third over native gRPC spends the burst; the fourth, over gRPC-Web, is refused.
        web
    })
    .await
    .expect("web calls");
    let channel = connect(&addr).await;
    CalendarServiceClient::new(channel.clone())
        .list_posts(pb::ListPostsRequest {})
        .await
        .expect("third call, native");
    let c = tokio::task::spawn_blocking(move || {
        call(
            &refused,
            "CalendarService/ListPosts",
            &pb::ListPostsRequest {},
            &[("origin", ORIGIN)],
        )
    })
    .await
    .expect("fourth call");
    assert_eq!(c.status.code(), Code::ResourceExhausted, "{:?}", c.status);
    assert_eq!(reason(&c.status), "RATE_LIMITED");
    assert_eq!(c.headers["access-control-allow-origin"], ORIGIN);
    let native = CalendarServiceClient::new(channel)
        .list_posts(pb::ListPostsRequest {})
        .await
        .expect_err("native is refused too");
    assert_eq!(reason(&native), "RATE_LIMITED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_streams_and_gates_grpc_web_bookings_with_the_admission_token() {
    let slotd = start(&[]);
    let addr = slotd.addr();
    let channel = connect(&addr).await;
    AdminServiceClient::new(channel)
        .configure_waiting_room(admin(pb::ConfigureWaitingRoomRequest {
            config: Some(pb::WaitingRoomConfig {
                enabled: true,
                admissions_per_minute: 600,
                max_active_sessions: 100,
                session_duration_seconds: 600,
                waiter_timeout_seconds: 60,
                paused: false,
                gate_calendar: false,
            }),
        }))
        .await
        .expect("room on");
    let web = addr.clone();
    tokio::task::spawn_blocking(move || {
        let slot = first_slot(&web);
        let book = |token: Option<&str>| {
            let extra: Vec<(&str, &str)> = token
                .map(|t| ("x-admission-token", t))
                .into_iter()
                .collect();
            call(
                &web,
                "BookingService/BookAppointment",
                &pb::BookAppointmentRequest {
                    request_id: format!("gated-{}", token.is_some()),
                    slot: Some(slot.clone()),
                    applicants: vec![applicant(4, "Wei")],
                },
                &extra,
            )
        };
        // The replica that was configured knows the room is on at once.
        let c = book(None);
        assert_eq!(c.status.code(), Code::Unauthenticated, "{:?}", c.status);
        assert_eq!(reason(&c.status), "ADMISSION_REQUIRED", "{:?}", c.status);
        let deadline = Instant::now() + Duration::from_secs(20);
        let joined: pb::JoinResponse = ok(
            &web,
            "WaitingRoomService/Join",
            &pb::JoinRequest {
                client_key: support::client_key("web-gated"),
            },
        );
        let ticket = joined.status.expect("status");
        let mut watch = open(
            &web,
            "WaitingRoomService/Watch",
            &pb::WatchRequest {
                ticket_id: ticket.ticket_id,
                ticket_secret: joined.ticket_secret,
            },
            &[],
        );
        let token = loop {
            let s =
                pb::TicketStatus::decode(watch.next().expect("status").as_slice()).expect("decode");
            if s.state == pb::TicketState::Admitted as i32 {
                break s.admission_token;
            }
            assert!(Instant::now() < deadline, "never admitted");
        };
        let c = book(Some(&token));
        assert_eq!(c.status.code(), Code::Ok, "{:?}", c.status);
    })
    .await
    .expect("gated calls");
}

#[test]
fn without_the_web_keys_the_port_speaks_no_http1() {
    let slotd = Slotd::start_args(0, &["--demo"], &[]);
    let mut stream = TcpStream::connect(slotd.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let body = framed(&pb::ListPostsRequest {});
    let head = format!(
        "POST /slotd.v1.CalendarService/ListPosts HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    let _ = stream.write_all(&body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn a_bad_web_key_stops_the_binary_naming_it() {
    let dir = tempfile::tempdir().expect("dir");
    for (toml, key) in [
        (
            "[web]\ngrpc_web = true\nallowed_origins = [\"*\"]\n",
            "web.allowed_origins[0]",
        ),
        ("[web]\nenabled = true\n", "web.enabled"),
        (
            "[web]\nallowed_origins = [\"https://a.example\"]\n",
            "web.allowed_origins",
        ),
    ] {
        let path = dir.path().join("slotd.toml");
        std::fs::write(&path, toml).expect("write");
        let log = Slotd::refused("", &["--config".into(), path.display().to_string()]);
        assert!(log.contains(key), "{key}: {log}");
    }
}

#[test]
fn the_pages_are_served_with_web_enabled_only() {
    let slotd = Slotd::start_args(0, &["--demo", "--web"], &[]);
    let addr = slotd.addr();
    for (path, kind, needle) in [
        ("/", "text/html", "/assets/grpc-web.js"),
        ("/assets/app.js", "text/javascript", "WatchAvailability"),
        (
            "/assets/grpc-web.js",
            "text/javascript",
            "application/grpc-web+proto",
        ),
        ("/assets/style.css", "text/css", "progress"),
    ] {
        let mut reply = send(&addr, "GET", path, &[], b"");
        assert_eq!(reply.status, 200, "{path}");
        let content_type = reply.headers["content-type"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(
            reply.headers.contains_key("content-security-policy"),
            "{path}"
        );
        while reply.fill() {}
        let body = String::from_utf8(reply.buffer).expect("utf-8");
        assert!(body.contains(needle), "{path} lacks {needle}");
    }
    // Same origin: the page's own Origin needs no allow-list entry.
    let c = call(
        &addr,
        "CalendarService/ListPosts",
        &pb::ListPostsRequest {},
        &[("origin", &format!("http://{addr}"))],
    );
    assert_eq!(c.status.code(), Code::Ok, "{:?}", c.status);

    // gRPC-Web alone serves no pages.
    let slotd = start(&[]);
    let reply = send(&slotd.addr(), "GET", "/", &[], b"");
    assert_ne!(reply.status, 200);
}

/// gRPC-Web over HTTP/2 (prior knowledge, as behind a TLS port with ALPN h2): the body carries
/// the messages and the trailers frame, and the HTTP/2 trailers stay empty.
async fn h2_call(
    addr: &str,
    method: &str,
    message: &impl Message,
    frames: usize,
) -> Vec<(u8, Vec<u8>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/slotd.v1.{method}"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("send");
    body.send_data(bytes::Bytes::from(framed(message)), true)
        .expect("body");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(
        response.headers()["content-type"],
        "application/grpc-web+proto"
    );
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    let mut out = Vec::new();
    while out.len() < frames {
        let chunk = body.data().await.expect("more body").expect("body chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        buffer.extend_from_slice(&chunk);
        while buffer.len() >= 5 {
            let len = u32::from_be_bytes(buffer[1..5].try_into().expect("4 bytes")) as usize;
            if buffer.len() < 5 + len {
                break;
            }
            out.push((buffer[0], buffer[5..5 + len].to_vec()));
            buffer.drain(..5 + len);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_over_http2_answers_unary_calls_and_streams() {
    let slotd = start(&[]);
    let addr = slotd.addr();
    let frames = h2_call(
        &addr,
        "CalendarService/ListPosts",
        &pb::ListPostsRequest {},
        2,
    )
    .await;
    assert_eq!(frames[0].0, 0, "a message");
    let posts = pb::ListPostsResponse::decode(frames[0].1.as_slice()).expect("decode");
    assert!(posts.posts.iter().any(|p| p.post_id == "BEIJING"));
    assert_eq!(frames[1].0, 0x80, "then the trailers frame");
    assert_eq!(trailer_status(&frames[1].1).code(), Code::Ok);

    let from = real_date(0);
    let to = real_date(14);
    let frames = h2_call(
        &addr,
        "CalendarService/WatchAvailability",
        &pb::WatchAvailabilityRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: from,
            to_date: to,
        },
        1,
    )
    .await;
    let snapshot = pb::AvailabilityUpdate::decode(frames[0].1.as_slice()).expect("decode");
    assert!(snapshot.snapshot && !snapshot.slots.is_empty());
}

#[test]
fn a_grpc_timeout_header_ends_a_grpc_web_call_waiting_on_a_stopped_redis() {
    // Redis stopped (SIGSTOP) and slotd told to wait a minute for it: only the caller's
    // deadline can end the call before the client's 20 s read timeout.
    let redis = support::redis::RedisServer::start();
    let slotd = Slotd::start_args(
        0,
        &["--redis-url", &redis.url()],
        &[
            ("SLOTD__WEB__GRPC_WEB", "true"),
            ("SLOTD__REDIS__RESPONSE_TIMEOUT_MS", "60000"),
        ],
    );
    let addr = slotd.addr();
    redis.pause();
    let c = call(
        &addr,
        "BookingService/GetAppointment",
        &pb::GetAppointmentRequest {
            confirmation_number: "ABCDEFGHJKMNPQ".into(),
            passport_number: "E00000001".into(),
        },
        &[("grpc-timeout", "500m")],
    );
    redis.resume();
    assert!(
        matches!(c.status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{:?}",
        c.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_grpc_web_stream_counts_against_the_peers_stream_cap_like_a_native_one() {
    let slotd = start(&[("SLOTD__STREAMS__MAX_PER_CLIENT", "1")]);
    let addr = slotd.addr();
    let request = pb::WatchAvailabilityRequest {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        from_date: real_date(0),
        to_date: real_date(7),
    };
    let web = addr.clone();
    let web_request = request.clone();
    // The one stream this peer may hold, opened over gRPC-Web and kept open.
    let open_stream = tokio::task::spawn_blocking(move || {
        let mut reply = open(&web, "CalendarService/WatchAvailability", &web_request, &[]);
        reply.next().expect("snapshot");
        reply
    })
    .await
    .expect("first stream");
    let native = CalendarServiceClient::new(connect(&addr).await)
        .watch_availability(request.clone())
        .await
        .expect_err("a second stream of the same peer, native");
    assert_eq!(reason(&native), "TOO_MANY_STREAMS", "{native:?}");
    let web = addr.clone();
    let second = tokio::task::spawn_blocking(move || {
        call(&web, "CalendarService/WatchAvailability", &request, &[])
    })
    .await
    .expect("second web stream");
    assert_eq!(
        reason(&second.status),
        "TOO_MANY_STREAMS",
        "{:?}",
        second.status
    );
    // Closing the gRPC-Web stream frees the peer's one place: a native stream opens again.
    drop(open_stream);
    let channel = connect(&addr).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match CalendarServiceClient::new(channel.clone())
            .watch_availability(pb::WatchAvailabilityRequest {
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                from_date: real_date(0),
                to_date: real_date(7),
            })
            .await
        {
            Ok(_) => break,
            Err(e) => assert_eq!(reason(&e), "TOO_MANY_STREAMS", "{e:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream kept its place"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
