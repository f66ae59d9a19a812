//! OpenTelemetry end to end: a local OTLP/gRPC collector (the OTLP TraceService from
//! opentelemetry-proto, served by tonic in this test) receives slotd's spans; the RPC span
//! continues the caller's W3C `traceparent` and the Redis script runs as its child.
//! Every test runs the real binary (the tracing subscriber is process-wide, and this test binary
//! is shared by every suite). Started with the OpenTelemetry variables, it shows they are
//! honoured as the specification says (traces endpoint over the generic one, service name and
//! resource attributes, explicit slotd settings over the variables) and that its JSON log lines
//! carry the trace and span ids.

use crate::support;

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;

use slotd::api::pb;
use slotd::api::pb::booking_service_client::BookingServiceClient;
use slotd::api::pb::calendar_service_client::CalendarServiceClient;
use support::flow::{connect, open, real_date, register};
use support::process::Slotd;
use support::*;

struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let _ = self.0.send(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The SDK's batch span processor exports every 5 s by default; every test here waits for a
/// span to arrive, so the binary exports every 100 ms (a standard OpenTelemetry variable).
const PROMPT_EXPORT: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

/// Through the real binary on Redis: the tracing subscriber is process-wide, and this test
/// binary is shared by every suite, so no test installs one in process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_spans_continue_the_callers_traceparent_and_store_calls_are_children() {
    let (addr, mut rx) = collector().await;
    let endpoint = format!("http://{addr}");
    let redis = support::redis::tenant();
    let slotd = Slotd::start_args(
        0,
        &[
            "--redis-url",
            redis.url.as_str(),
            "--otlp-endpoint",
            endpoint.as_str(),
        ],
        &[("SLOTD__REDIS__TAG", redis.tag.as_str()), PROMPT_EXPORT],
    );
    let channel = connect(&slotd.addr()).await;
    let date = real_date(7);
    open(&channel, &date, "08:00", "08:00", 5).await;
    register(&channel, [1]).await;
    BookingServiceClient::new(channel)
        .book_appointment(traced(book_request(
            "traced-1",
            slot(&date, "08:00"),
            vec![applicant(1)],
        )))
        .await
        .expect("booked");

    let trace_id = hex::decode(TRACE_ID).expect("hex");
    let caller = hex::decode(CALLER_SPAN_ID).expect("hex");
    // The script span ends before the RPC span: both may come in one batch or in two.
    let mut spans: Vec<Span> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (rpc, book) = loop {
        let rpc = spans
            .iter()
            .find(|s| s.name == "slotd.v1.BookingService/BookAppointment");
        let book = rpc.and_then(|rpc| {
            spans
                .iter()
                .find(|s| s.name == "book" && s.parent_span_id == rpc.span_id)
        });
        if let (Some(rpc), Some(book)) = (rpc, book) {
            break (rpc.clone(), book.clone());
        }
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        let batch = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no BookAppointment span with a `book` script span under it among \
                     {names:?}:\n{}",
                    slotd.log()
                )
            })
            .expect("collector open");
        for resource in batch.resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    };
    assert_eq!(rpc.trace_id, trace_id, "the caller's trace continues");
    assert_eq!(
        rpc.parent_span_id, caller,
        "the caller's span is the parent"
    );
    assert_eq!(book.trace_id, trace_id);
    // The call's status is recorded on its span when spans are exported (and only then).
    let status = rpc
        .attributes
        .iter()
        .find(|kv| kv.key == "rpc.grpc.status_code")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone());
    assert_eq!(status, Some(AnyValue::IntValue(0)), "{:?}", rpc.attributes);
}

/// An OTLP/gRPC collector on 127.0.0.1:0: its address and the batches it receives.
async fn collector() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind collector");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (addr, rx)
}

/// A port nothing listens on (bound, then released).
fn dead_endpoint() -> String {
    let port = support::process::free_port();
    format!("http://127.0.0.1:{port}")
}

fn attribute(resource: &Resource, key: &str) -> Option<String> {
    resource
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

/// Waits (bounded) until a span named `name` arrives; returns it with its resource.
async fn wait_for_span(
    rx: &mut mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
    name: &str,
    log: impl Fn() -> String,
) -> (Resource, Span) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let batch = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no `{name}` span reached the collector:\n{}", log()))
            .expect("collector open");
        for resource_spans in batch.resource_spans {
            let resource = resource_spans.resource.unwrap_or_default();
            for scope in resource_spans.scope_spans {
                if let Some(span) = scope.spans.into_iter().find(|s| s.name == name) {
                    return (resource, span);
                }
            }
        }
    }
}

fn traced<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")
            .parse()
            .expect("ascii"),
    );
    request
}

/// `--log-format text` (the default) into a file: the booking's line is plain text in the shape
/// of tracing-subscriber's default format, with the RPC as its context and no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_plain_text_log_lines_to_a_file() {
    let slotd = Slotd::start_args(0, &["--log-format", "text"], &[]);
    let channel = connect(&slotd.addr()).await;
    let date = real_date(7);
    open(&channel, &date, "08:00", "08:00", 5).await;
    register(&channel, [1]).await;
    let booked = BookingServiceClient::new(channel)
        .book_appointment(book_request(
            "text-log-1",
            slot(&date, "08:00"),
            vec![applicant(1)],
        ))
        .await
        .expect("booked")
        .into_inner()
        .appointment
        .expect("appointment");
    let confirmation = booked.confirmation_number;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let line = loop {
        let log = slotd.log();
        if let Some(line) = log.lines().find(|l| l.contains("appointment booked")) {
            break line.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no booking line:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (stamp, rest) = line.split_once(' ').expect("a timestamp first");
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok() && stamp.ends_with('Z'),
        "{line}"
    );
    assert!(
        rest.starts_with(" INFO rpc{")
            && rest.contains("rpc.method=slotd.v1.BookingService/BookAppointment"),
        "{line}"
    );
    assert!(
        rest.contains("}: slotd::api::booking: appointment booked")
            && rest.contains(&format!("confirmation={confirmation}")),
        "{line}"
    );
    assert!(!slotd.log().contains('\u{1b}'), "no ANSI escape codes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_honours_the_otel_variables_and_its_json_logs_carry_trace_and_span_ids() {
    let (addr, mut rx) = collector().await;
    // The generic endpoint points nowhere: the traces endpoint must win, used as is (its
    // /v1/traces path is OTLP/HTTP's and no part of a gRPC target).
    let traces_endpoint = format!("http://{addr}/v1/traces");
    let generic = dead_endpoint();
    let slotd = Slotd::start_args(
        0,
        &[],
        &[
            PROMPT_EXPORT,
            ("OTEL_EXPORTER_OTLP_ENDPOINT", generic.as_str()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces_endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "slotd-canary"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=overridden,deployment.environment.name=ci%20run,service.instance.id=pod-7",
            ),
        ],
    );
    let channel = connect(&slotd.addr()).await;
    let date = real_date(7);
    open(&channel, &date, "08:00", "08:00", 5).await;
    register(&channel, [1]).await;
    BookingServiceClient::new(channel)
        .book_appointment(traced(book_request(
            "otel-env-1",
            slot(&date, "08:00"),
            vec![applicant(1)],
        )))
        .await
        .expect("booked");

    let (resource, rpc) = wait_for_span(&mut rx, "slotd.v1.BookingService/BookAppointment", || {
        slotd.log()
    })
    .await;
    assert_eq!(rpc.trace_id, hex::decode(TRACE_ID).expect("hex"));
    assert_eq!(
        attribute(&resource, "service.name").as_deref(),
        Some("slotd-canary"),
        "OTEL_SERVICE_NAME wins over service.name in OTEL_RESOURCE_ATTRIBUTES"
    );
    assert_eq!(
        attribute(&resource, "deployment.environment.name").as_deref(),
        Some("ci run"),
        "OTEL_RESOURCE_ATTRIBUTES values are percent-decoded"
    );
    assert_eq!(
        attribute(&resource, "service.instance.id").as_deref(),
        Some("pod-7")
    );
    assert_eq!(
        attribute(&resource, "service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );

    // The log line the booking handler writes inside the RPC span names that span.
    let span_id = hex::encode(&rpc.span_id);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let line = loop {
        let found = slotd.log().lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v.pointer("/fields/message")?.as_str()? == "appointment booked").then_some(v)
        });
        if let Some(v) = found {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `appointment booked` line:\n{}",
            slotd.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(line["trace_id"].as_str(), Some(TRACE_ID), "{line}");
    assert_eq!(line["span_id"].as_str(), Some(span_id.as_str()), "{line}");
    // A line outside any span has no ids.
    let listening = slotd
        .log()
        .lines()
        .find(|l| l.contains("slotd listening"))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .expect("listening line");
    assert!(listening.get("trace_id").is_none(), "{listening}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_slotd_settings_win_over_the_otel_variables() {
    let (addr, mut rx) = collector().await;
    let endpoint = format!("http://{addr}");
    let nowhere = dead_endpoint();
    let slotd = Slotd::start_args(
        0,
        &["--otlp-endpoint", endpoint.as_str()],
        &[
            PROMPT_EXPORT,
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", nowhere.as_str()),
            ("OTEL_SERVICE_NAME", "from-the-environment"),
            ("SLOTD__TELEMETRY__SERVICE_NAME", "from-the-config"),
        ],
    );
    CalendarServiceClient::new(connect(&slotd.addr()).await)
        .list_posts(traced(pb::ListPostsRequest {}))
        .await
        .expect("posts");
    let (resource, span) = wait_for_span(&mut rx, "slotd.v1.CalendarService/ListPosts", || {
        slotd.log()
    })
    .await;
    assert_eq!(span.trace_id, hex::decode(TRACE_ID).expect("hex"));
    assert_eq!(
        attribute(&resource, "service.name").as_deref(),
        Some("from-the-config")
    );
}

#[test]
fn an_otlp_http_protocol_stops_the_binary_naming_the_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slotd"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env_remove("RUST_LOG")
        .output()
        .expect("run slotd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{stderr}");
}
