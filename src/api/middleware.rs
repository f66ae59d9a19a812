//! The tower layer every gRPC call passes through, before its service: one tracing span per RPC
//! named after the method (`slotd.v1.BookingService/BookAppointment`) whose parent is the
//! caller's W3C `traceparent`, the per-client rate limits (`crate::limits`), and the RPC
//! metrics (count and latency by method and gRPC status, booking outcomes).
//!
//! The gRPC status of a successful or streaming call travels in the HTTP/2 trailers, so the
//! response body is wrapped to see them; a body dropped before its trailers (the client went
//! away, or the drain deadline passed) counts as CANCELLED.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use prost::Message;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tonic_types::StatusExt;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::error::ApiError;
use crate::domain::error::reason;
use crate::limits::{Limit, Limits};
use crate::metrics::{metrics, OutcomeLabels, RpcLabels};

/// The method paths slotd serves (`/pkg.Service/Method`), read from the descriptor sets so the
/// list follows the protos; anything else is counted as `other`, keeping label sets bounded.
#[derive(Debug)]
pub struct Methods(HashSet<String>);

impl Methods {
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Self {
        let mut paths = HashSet::new();
        for set in sets {
            if let Ok(fds) = prost_types::FileDescriptorSet::decode(*set) {
                for file in fds.file {
                    let package = file.package.unwrap_or_default();
                    for service in file.service {
                        let service_name = service.name.unwrap_or_default();
                        for method in service.method {
                            paths.insert(format!(
                                "/{package}.{service_name}/{}",
                                method.name.unwrap_or_default()
                            ));
                        }
                    }
                }
            }
        }
        for reflection in [
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            paths.insert(reflection.to_owned());
        }
        Self(paths)
    }

    fn label(&self, path: &str) -> String {
        if self.0.contains(path) {
            path.trim_start_matches('/').to_owned()
        } else {
            "other".to_owned()
        }
    }
}

/// Which limits a method counts against, and whether it is a confirmation lookup.
fn limit_of(path: &str) -> Option<(Limit, bool)> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    match service {
        "slotd.v1.BookingService" => {
            // Every method that takes a confirmation number and a passport (each answers
            // NOT_FOUND to a wrong pair) or a receipt and a passport (RECEIPT_NOT_REGISTERED to
            // a pair that is not registered): each must spend the failed-lookup budget.
            let lookup = matches!(
                method,
                "GetAppointment"
                    | "CancelAppointment"
                    | "RescheduleAppointment"
                    | "JoinWaitlist"
                    | "BookAppointment"
                    | "HoldSlot"
            ) || method.contains("Confirmation");
            Some((Limit::Booking, lookup))
        }
        "slotd.v1.CalendarService" => Some((Limit::Calendar, false)),
        "slotd.v1.WaitingRoomService" => Some((Limit::Room, false)),
        _ => None,
    }
}

#[derive(Clone)]
pub struct RpcLayer {
    methods: Arc<Methods>,
    limits: Option<Arc<Limits>>,
}

impl RpcLayer {
    /// `limits: None` limits nobody (tests); the binary always has limits.
    pub fn new(methods: Methods, limits: Option<Arc<Limits>>) -> Self {
        Self {
            methods: Arc::new(methods),
            limits,
        }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rpc {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Rpc<S> {
    inner: S,
    layer: RpcLayer,
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

fn peer<B>(request: &Request<B>) -> Option<SocketAddr> {
    let ext = request.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

/// What is recorded once a call's status is known.
struct Finish {
    path: String,
    method: String,
    lookup_client: Option<(Arc<Limits>, String)>,
    started: Instant,
    span: tracing::Span,
}

impl Finish {
    fn done(self, headers: Option<&HeaderMap>) {
        let status = headers.and_then(Status::from_header_map);
        let code = match (&status, headers) {
            (Some(s), _) => s.code(),
            // Trailers without grpc-status, or none at all: the call did not end properly.
            (None, Some(_)) => Code::Unknown,
            (None, None) => Code::Cancelled,
        };
        let m = metrics();
        let labels = RpcLabels {
            method: self.method.clone(),
            code: format!("{code:?}"),
        };
        m.rpc_requests.get_or_create(&labels).inc();
        m.rpc_duration
            .get_or_create(&labels)
            .observe(self.started.elapsed().as_secs_f64());
        if crate::telemetry::exporting_spans() {
            self.span
                .record("rpc.grpc.status_code", code as i32)
                .record("otel.status_code", server_span_status(code));
        }
        // Both ways to end up with an appointment count as bookings.
        if self.path == "/slotd.v1.BookingService/BookAppointment"
            || self.path == "/slotd.v1.BookingService/ConfirmHold"
        {
            let outcome = match (&status, code) {
                (_, Code::Ok) => "booked".to_owned(),
                (Some(s), _) => s
                    .get_details_error_info()
                    .map(|i| i.reason.to_ascii_lowercase())
                    .unwrap_or_else(|| format!("{code:?}").to_ascii_lowercase()),
                (None, _) => format!("{code:?}").to_ascii_lowercase(),
            };
            m.bookings.get_or_create(&OutcomeLabels { outcome }).inc();
        }
        if let Some((limits, client)) = &self.lookup_client {
            // A wrong number (NOT_FOUND) or a receipt the caller could not show is theirs
            // (RECEIPT_NOT_REGISTERED: unknown, or paid for another passport) is a failed lookup.
            let receipt_probe = code == Code::FailedPrecondition
                && status
                    .as_ref()
                    .and_then(|s| s.get_details_error_info())
                    .is_some_and(|i| i.reason == reason::RECEIPT_NOT_REGISTERED);
            if code == Code::NotFound || receipt_probe {
                limits.lookup_failed(client);
            }
        }
    }
}

/// OpenTelemetry's rule for gRPC server spans: refusals the client caused (NOT_FOUND,
/// SLOT_FULL...) are not server errors.
fn server_span_status(code: Code) -> &'static str {
    match code {
        Code::Unknown
        | Code::DeadlineExceeded
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss => "error",
        _ => "ok",
    }
}

/// Records a call whose future is dropped before it answers (tonic's request timeout, or the
/// drain deadline) as CANCELLED, the status the client sees.
struct Pending(Option<Finish>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(finish) = self.0.take() {
            finish.done(None);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports the status carried by its trailers.
    struct Watched {
        #[pin]
        inner: Body,
        finish: Option<Finish>,
    }

    impl PinnedDrop for Watched {
        fn drop(this: Pin<&mut Self>) {
            if let Some(finish) = this.project().finish.take() {
                finish.done(None);
            }
        }
    }
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(finish) = this.finish.take() {
                        finish.done(Some(trailers));
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(finish) = this.finish.take() {
                    finish.done(Some(&HeaderMap::new()));
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<Request<B>> for Rpc<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone-and-swap keeps the instance poll_ready prepared (tower's convention).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();

        let path = request.uri().path().to_owned();
        let method = layer.methods.label(&path);
        let span = tracing::info_span!(
            "rpc",
            otel.name = %method,
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
        );
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
        let _ = span.set_parent(parent);

        let limited = layer.limits.clone().zip(limit_of(&path));
        let client = limited.as_ref().map(|(limits, _)| {
            let client_id = request
                .headers()
                .get("x-client-id")
                .and_then(|v| v.to_str().ok());
            limits.client(peer(&request), client_id)
        });
        let finish = Finish {
            path,
            method,
            lookup_client: match (&limited, &client) {
                (Some((limits, (_, true))), Some(c)) => Some((limits.clone(), c.clone())),
                _ => None,
            },
            started: Instant::now(),
            span: span.clone(),
        };

        if let (Some((limits, (limit, lookup))), Some(client)) = (&limited, &client) {
            if let Err(exceeded) = limits.admit(*limit, *lookup, client) {
                metrics()
                    .rate_limited
                    .get_or_create(&crate::metrics::LimitLabels {
                        limit: exceeded.limit.name().to_owned(),
                    })
                    .inc();
                let _entered = span.enter();
                tracing::debug!(client = %client, limit = exceeded.limit.name(), "rate limited");
                let status = Status::from(ApiError::RateLimited {
                    limit: exceeded.limit.name(),
                    retry_after: exceeded.retry_after,
                });
                let response: Response<Body> = status.into_http();
                // A refused lookup is not a failed lookup: do not charge it again.
                let finish = Finish {
                    lookup_client: None,
                    ..finish
                };
                finish.done(Some(response.headers()));
                return Box::pin(async move { Ok(response) });
            }
        }

        let call = inner.call(request).instrument(span);
        Box::pin(async move {
            let mut pending = Pending(Some(finish));
            let response = call.await?;
            let (parts, body) = response.into_parts();
            let finish = pending.0.take();
            if parts.headers.contains_key("grpc-status") {
                // Trailers-only response: the status is already here.
                if let Some(finish) = finish {
                    finish.done(Some(&parts.headers));
                }
                return Ok(Response::from_parts(parts, body));
            }
            let body = Body::new(Watched {
                inner: body,
                finish,
            });
            Ok(Response::from_parts(parts, body))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_descriptors_and_unknown_paths_collapse() {
        let methods = Methods::from_descriptor_sets(&[crate::api::pb::FILE_DESCRIPTOR_SET]);
        assert_eq!(
            methods.label("/slotd.v1.BookingService/BookAppointment"),
            "slotd.v1.BookingService/BookAppointment"
        );
        assert_eq!(methods.label("/slotd.v1.BookingService/Nope"), "other");
        assert_eq!(
            limit_of("/slotd.v1.BookingService/GetAppointment"),
            Some((Limit::Booking, true))
        );
        assert_eq!(
            limit_of("/slotd.v1.CalendarService/ListSlots"),
            Some((Limit::Calendar, false))
        );
        for method in ["Join", "GetStatus", "Watch", "Leave"] {
            assert_eq!(
                limit_of(&format!("/slotd.v1.WaitingRoomService/{method}")),
                Some((Limit::Room, false)),
                "{method}"
            );
        }
        assert_eq!(limit_of("/slotd.v1.AdminService/OpenSlots"), None);
    }
}
