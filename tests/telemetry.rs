//! OpenTelemetry end to end: a local OTLP/gRPC collector (the OTLP TraceService from
//! opentelemetry-proto, served by tonic in this test) receives slotd's spans; the RPC span
//! continues the caller's W3C `traceparent` and the Redis script runs as its child.
//! Its own test binary: the tracing subscriber is process-wide.

mod support;

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

use slotd::config::TelemetrySettings;
use support::redis::RedisServer;
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

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_spans_continue_the_callers_traceparent_and_store_calls_are_children() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind collector");
    let collector_addr = listener.local_addr().expect("addr");
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    // Spans are info level: make sure a RUST_LOG from the environment does not filter them.
    std::env::set_var("RUST_LOG", "info");
    let telemetry = slotd::telemetry::init(&TelemetrySettings {
        otlp_endpoint: Some(format!("http://{collector_addr}")),
        ..TelemetrySettings::default()
    })
    .expect("telemetry");

    let redis = RedisServer::start();
    let server = TestServer::start(redis.store()).await;
    let date = day(2);
    open_day(&server, &date, 5).await;
    register_receipts(&server, [1]).await;

    let mut request = Request::new(book_request(
        "traced-1",
        slot(&date, "08:15"),
        vec![applicant(1)],
    ));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")
            .parse()
            .expect("ascii"),
    );
    server
        .booking()
        .await
        .book_appointment(request)
        .await
        .expect("booked");
    server.stop().await;
    tokio::time::timeout(Duration::from_secs(20), telemetry.shutdown())
        .await
        .expect("telemetry flushed without hanging");

    let mut spans: Vec<Span> = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        for resource in batch.resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    let trace_id = hex::decode(TRACE_ID).expect("hex");
    let caller = hex::decode(CALLER_SPAN_ID).expect("hex");
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let rpc = spans
        .iter()
        .find(|s| s.name == "slotd.v1.BookingService/BookAppointment")
        .unwrap_or_else(|| panic!("no BookAppointment span among {names:?}"));
    assert_eq!(rpc.trace_id, trace_id, "the caller's trace continues");
    assert_eq!(
        rpc.parent_span_id, caller,
        "the caller's span is the parent"
    );
    let book = spans
        .iter()
        .find(|s| s.name == "book" && s.parent_span_id == rpc.span_id)
        .unwrap_or_else(|| panic!("no `book` script span under the RPC among {names:?}"));
    assert_eq!(book.trace_id, trace_id);
}
