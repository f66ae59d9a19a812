//! Wires the gRPC server: the three slotd services, health (`grpc.health.v1`, NOT_SERVING while
//! the store does not answer) and reflection (v1 and v1alpha, so grpcurl 1.8 works), served on a
//! listener the caller bound, until `shutdown` resolves. Shutdown: health NOT_SERVING first, stop
//! accepting, drain in-flight calls for at most `drain_timeout` (tonic has no drain deadline of
//! its own, grpc-rust#1820).
//!
//! Connections: with `max_connection_age` each HTTP/2 connection is sent GOAWAY once it is that
//! old, and closed `max_connection_age_grace` later if calls are still running, so clients
//! reconnect and an L4 balancer spreads them over replicas that joined since; with
//! `http2_keepalive_interval` the server pings idle connections and closes one whose ping is not
//! answered within `http2_keepalive_timeout` (a dead peer behind a NAT or balancer). Accepted and
//! open connections are counted (`slotd_grpc_connections_accepted_total`, `slotd_grpc_connections`).
//!
//! Every call passes `api::middleware` (span per RPC from the caller's `traceparent`, per-client
//! rate limits, RPC metrics) and tonic's own limits: `request_timeout` (a shorter `grpc-timeout`
//! from the client wins), HTTP/2 streams per connection, 64 KiB requests. With `tls` the port
//! speaks TLS only; with a client CA, AdminService also accepts a verified client certificate
//! in place of the bearer token.
//!
//! With `web.grpc_web` the port also speaks HTTP/1.1 and gRPC-Web for browsers (`crate::web`,
//! the outermost layer), and with `web.enabled` it serves the reference pages.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_stream::StreamExt as _;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::api::admin::AdminApi;
use crate::api::auth::OperatorAuth;
use crate::api::booking::BookingApi;
use crate::api::calendar::CalendarApi;
use crate::api::middleware::{Methods, RpcLayer};
use crate::api::pb;
use crate::api::pb::admin_service_server::AdminServiceServer;
use crate::api::pb::booking_service_server::BookingServiceServer;
use crate::api::pb::calendar_service_server::CalendarServiceServer;
use crate::api::pb::waiting_room_service_server::WaitingRoomServiceServer;
use crate::api::room::WaitingRoomApi;
use crate::app::room::Room;
use crate::app::Slotd;
use crate::config::LimitSettings;
use crate::limits::Limits;
use crate::streams::{StreamOptions, Streams};
use crate::tasks::Tasks;
use crate::web::WebLayer;

/// The largest request slotd decodes: a full group booking is about 1 KiB.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Every service name health reports on ("" is the server as a whole).
const HEALTH_SERVICES: &[&str] = &[
    "",
    "slotd.v1.CalendarService",
    "slotd.v1.BookingService",
    "slotd.v1.AdminService",
    "slotd.v1.WaitingRoomService",
];

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub drain_timeout: Duration,
    /// How often the store is pinged to keep health current.
    pub health_interval: Duration,
    /// How often the sweeper runs (`crate::tasks`; `booking.sweep_interval_ms`). None: no
    /// sweeper, the library default (tests, benches), where a test sweeps when it chooses.
    pub sweep_interval: Option<Duration>,
    /// Upper bound of every call (tonic answers DEADLINE_EXCEEDED / CANCELLED past it).
    pub request_timeout: Duration,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 initial stream and connection windows in KiB (0 = h2's default, 64 KiB).
    pub http2_window_kib: u32,
    /// HTTP/2 BDP-based adaptive windows.
    pub http2_adaptive_window: bool,
    /// Per-client rate limits. The library default (tests, benches) is
    /// `LimitSettings::unlimited()`; the binary sets them from `limits.*`.
    pub limits: LimitSettings,
    /// Per-client cap on open server streams and their lifetime (`crate::streams`). The
    /// library default is `StreamOptions::unlimited()`; the binary sets `streams.*`.
    pub streams: StreamOptions,
    pub tls: Option<TlsOptions>,
    pub metrics: Option<MetricsOptions>,
    /// GOAWAY to a connection this old (none = connections live as long as the client likes).
    pub max_connection_age: Option<Duration>,
    /// After that GOAWAY, how long running calls may go on before the connection is closed.
    pub max_connection_age_grace: Duration,
    /// HTTP/2 PING to the client this often (none = no pings).
    pub http2_keepalive_interval: Option<Duration>,
    /// A ping not answered within this closes the connection.
    pub http2_keepalive_timeout: Duration,
    /// gRPC-Web, CORS and the reference pages (`crate::web`); the default is all off.
    pub web: crate::web::WebOptions,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
            health_interval: Duration::from_secs(1),
            sweep_interval: None,
            request_timeout: Duration::from_secs(30),
            max_concurrent_streams: 256,
            http2_window_kib: 0,
            http2_adaptive_window: false,
            limits: LimitSettings::unlimited(),
            streams: StreamOptions::unlimited(),
            tls: None,
            metrics: None,
            max_connection_age: None,
            max_connection_age_grace: Duration::from_secs(30),
            http2_keepalive_interval: None,
            http2_keepalive_timeout: Duration::from_secs(20),
            web: crate::web::WebOptions::default(),
        }
    }
}

/// PEM contents for TLS on the gRPC port.
#[derive(Clone)]
pub struct TlsOptions {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// CA of operator client certificates (optional client auth).
    pub client_ca_pem: Option<Vec<u8>>,
    /// DNS names an operator certificate must be valid for (`tls.operator_names`); a verified
    /// certificate for none of them is no operator.
    pub operator_names: Vec<String>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("client_ca", &self.client_ca_pem.is_some())
            .field("operator_names", &self.operator_names)
            .finish_non_exhaustive()
    }
}

/// The Prometheus endpoint and its store-read gauges.
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    pub listen: std::net::SocketAddr,
    pub seats_days: u32,
    pub refresh: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("metrics listen {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

pub(crate) async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_SERVICES {
        reporter.set_service_status(*name, status).await;
    }
    crate::metrics::metrics()
        .serving
        .set(i64::from(status == ServingStatus::Serving));
}

pub async fn serve(
    listener: TcpListener,
    app: Slotd,
    room: Room,
    auth: OperatorAuth,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_all(&reporter, ServingStatus::NotServing).await;
    // Gated calls are refused until the room's settings are read: try once before serving.
    if let Err(e) = room.refresh_settings().await {
        tracing::warn!(error = %e, "waiting room settings unreadable: gated calls refused until they are");
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let operator_names = options
        .tls
        .as_ref()
        .filter(|t| t.client_ca_pem.is_some())
        .map(|t| crate::api::auth::OperatorNames::new(&t.operator_names));
    let limits = Arc::new(Limits::new(&options.limits));
    let operator_limits = limits.clone();
    let admin = InterceptedService::new(
        AdminServiceServer::new(AdminApi::new(app.clone(), room.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        move |request: Request<()>| -> Result<Request<()>, Status> {
            let client = operator_limits.client(
                request.remote_addr(),
                request
                    .metadata()
                    .get("x-client-id")
                    .and_then(|v| v.to_str().ok()),
            );
            // A client that failed to authenticate too often is refused before any check.
            if let Err(exceeded) = operator_limits.admit_operator(&client) {
                crate::metrics::metrics()
                    .rate_limited
                    .get_or_create(&crate::metrics::LimitLabels {
                        limit: exceeded.limit.name().to_owned(),
                    })
                    .inc();
                return Err(Status::from(crate::api::error::ApiError::RateLimited {
                    limit: exceeded.limit.name(),
                    retry_after: exceeded.retry_after,
                }));
            }
            // rustls verified any presented client certificate against the operator CA during
            // the handshake; it makes an operator only when valid for an allowed name.
            let certificate = request
                .peer_certs()
                .and_then(|c| c.first().cloned())
                .zip(operator_names.as_ref());
            if let Some((cert, names)) = &certificate {
                if names.accepts(cert) {
                    return Ok(request);
                }
            }
            match auth.check(request.metadata()) {
                Ok(()) => Ok(request),
                Err(e) => {
                    operator_limits.operator_failed(&client);
                    Err(Status::from(match (certificate, e) {
                        (Some(_), crate::api::error::ApiError::Unauthenticated { detail }) => {
                            crate::api::error::ApiError::Unauthenticated {
                                detail: format!(
                                    "the client certificate is valid for none of tls.operator_names, and {detail}"
                                ),
                            }
                        }
                        (_, e) => e,
                    }))
                }
            }
        },
    );

    let metrics_listener = match &options.metrics {
        Some(m) => {
            let listener =
                crate::metrics::bind(m.listen)
                    .await
                    .map_err(|source| ServeError::Metrics {
                        addr: m.listen,
                        source,
                    })?;
            tracing::info!(addr = %listener.local_addr().unwrap_or(m.listen), "metrics listening");
            Some(listener)
        }
        None => None,
    };
    // Every background task (health watcher, room ticker, slot feed, sweeper, metrics).
    let mut tasks = Tasks::start(&app, &room, &reporter, &options, metrics_listener);

    let window =
        (options.http2_window_kib > 0).then(|| options.http2_window_kib.saturating_mul(1024));
    let mut builder = Server::builder()
        .timeout(options.request_timeout)
        .max_concurrent_streams(options.max_concurrent_streams)
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .http2_adaptive_window(Some(options.http2_adaptive_window))
        .http2_keepalive_interval(options.http2_keepalive_interval)
        .http2_keepalive_timeout(Some(options.http2_keepalive_timeout))
        // gRPC-Web from browsers may come over HTTP/1.1; native gRPC stays HTTP/2.
        .accept_http1(options.web.http1());
    // tonic sends GOAWAY at the age; the grace is enforced by `CountedConnection` (tonic 0.14.9's
    // own `max_connection_age_grace` skips the GOAWAY and only closes hard at age + grace).
    if let Some(age) = options.max_connection_age {
        builder = builder.max_connection_age(age);
    }
    let hard_close = options
        .max_connection_age
        .map(|age| age.saturating_add(options.max_connection_age_grace));
    if let Some(tls) = &options.tls {
        let mut config =
            ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
        if let Some(ca) = &tls.client_ca_pem {
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(true);
        }
        builder = builder.tls_config(config)?;
    }
    let methods = Methods::from_descriptor_sets(&[
        pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ]);
    let streams = Streams::new(options.streams, limits.clone());
    let limits = Some(limits);

    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    // The front door first: a gRPC-Web call is translated before the RPC layer counts, limits
    // and times it, exactly as a native call (tonic's grpc-timeout deadline wraps both).
    let server = builder
        // Off (the default), no layer at all: native calls pay nothing for the front door.
        .layer(tower::util::option_layer(
            options
                .web
                .grpc_web
                .then(|| WebLayer::new(options.web.clone())),
        ))
        .layer(RpcLayer::new(methods, limits))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            CalendarServiceServer::new(CalendarApi::new(
                app.clone(),
                room.clone(),
                streams.clone(),
            ))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            BookingServiceServer::new(BookingApi::new(app.clone(), room.clone(), streams))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            WaitingRoomServiceServer::new(WaitingRoomApi::new(room))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(admin)
        .serve_with_incoming_shutdown(
            // Nagle's algorithm would hold small responses for the peer's delayed ACK (~40 ms).
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60)))
                .map(move |accepted| accepted.map(|tcp| CountedConnection::new(tcp, hard_close))),
            async move {
                stopped.notified().await;
            },
        );
    tokio::pin!(server);

    let outcome = tokio::select! {
        result = &mut server => result.map_err(ServeError::from),
        () = shutdown => {
            tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
            tasks.stop_serving();
            set_all(&reporter, ServingStatus::NotServing).await;
            stop.notify_one();
            match tokio::time::timeout(options.drain_timeout, &mut server).await {
                Ok(result) => result.map_err(ServeError::from),
                Err(_) => {
                    tracing::warn!(timeout = ?options.drain_timeout, "drain timed out: dropping remaining calls");
                    Ok(())
                }
            }
        }
    };
    drop(tasks);
    outcome
}

pin_project_lite::pin_project! {
    /// An accepted gRPC connection, counted in `slotd_grpc_connections` while it is open, and
    /// closed once `close_at` passes (max connection age + grace) whatever still runs on it.
    pub struct CountedConnection {
        #[pin]
        inner: TcpStream,
        close_at: Option<Pin<Box<tokio::time::Sleep>>>,
        open: OpenConnection,
    }
}

/// Decrements the open-connections gauge when the connection is dropped.
struct OpenConnection;

impl Drop for OpenConnection {
    fn drop(&mut self) {
        crate::metrics::metrics().grpc_connections.dec();
    }
}

impl CountedConnection {
    fn new(inner: TcpStream, close_after: Option<Duration>) -> Self {
        let m = crate::metrics::metrics();
        m.grpc_connections_accepted.inc();
        m.grpc_connections.inc();
        Self {
            inner,
            close_at: close_after.map(|d| Box::pin(tokio::time::sleep(d))),
            open: OpenConnection,
        }
    }
}

/// The error that ends a connection past its age and grace (hyper then drops it).
fn past_grace(close_at: &mut Option<Pin<Box<tokio::time::Sleep>>>, cx: &mut Context<'_>) -> bool {
    close_at
        .as_mut()
        .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
}

fn grace_over() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "server.max_connection_age_grace_secs is over: connection closed",
    )
}

impl Connected for CountedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for CountedConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        // Polling the timer here registers the read's waker with it: hyper always has a read
        // pending, so the connection ends when the timer fires even if the peer is silent.
        if past_grace(this.close_at, cx) {
            return Poll::Ready(Err(grace_over()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        if past_grace(this.close_at, cx) {
            return Poll::Ready(Err(grace_over()));
        }
        this.inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
