//! Wires the gRPC server: the three slotd services, health (`grpc.health.v1`, NOT_SERVING while
//! the store does not answer) and reflection (v1 and v1alpha, so grpcurl 1.8 works), served on a
//! listener the caller bound, until `shutdown` resolves. Shutdown: health NOT_SERVING first, stop
//! accepting, drain in-flight calls for at most `drain_timeout` (tonic has no drain deadline of
//! its own, grpc-rust#1820).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Status};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::api::admin::AdminApi;
use crate::api::booking::BookingApi;
use crate::api::calendar::CalendarApi;
use crate::api::pb;
use crate::api::pb::admin_service_server::AdminServiceServer;
use crate::api::pb::booking_service_server::BookingServiceServer;
use crate::api::pb::calendar_service_server::CalendarServiceServer;
use crate::api::pb::waiting_room_service_server::WaitingRoomServiceServer;
use crate::api::room::WaitingRoomApi;
use crate::app::Slotd;
use crate::auth::OperatorAuth;
use crate::room::Room;

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
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
            health_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_SERVICES {
        reporter.set_service_status(*name, status).await;
    }
}

/// Pings the store and mirrors the answer in health, until the task is aborted.
async fn watch_store(app: Slotd, reporter: HealthReporter, interval: Duration) {
    let mut serving = None;
    loop {
        let ok = matches!(
            tokio::time::timeout(interval.max(Duration::from_millis(200)), app.store().ping())
                .await,
            Ok(Ok(()))
        );
        if serving != Some(ok) {
            if ok {
                tracing::info!("store answers: serving");
            } else {
                tracing::warn!("store does not answer: health NOT_SERVING");
            }
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_all(&reporter, status).await;
            serving = Some(ok);
        }
        tokio::time::sleep(interval).await;
    }
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
    let watcher = tokio::spawn(watch_store(
        app.clone(),
        reporter.clone(),
        options.health_interval,
    ));
    let ticker = tokio::spawn(room.clone().run_ticker());

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let admin = InterceptedService::new(
        AdminServiceServer::new(AdminApi::new(app.clone(), room.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        move |request: Request<()>| -> Result<Request<()>, Status> {
            auth.check(request.metadata()).map_err(Status::from)?;
            Ok(request)
        },
    );

    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    let server = Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            CalendarServiceServer::new(CalendarApi::new(app.clone(), room.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            BookingServiceServer::new(BookingApi::new(app.clone(), room.clone()))
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
                .with_keepalive(Some(Duration::from_secs(60))),
            async move {
                stopped.notified().await;
            },
        );
    tokio::pin!(server);

    let outcome = tokio::select! {
        result = &mut server => result.map_err(ServeError::from),
        () = shutdown => {
            tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
            watcher.abort();
            ticker.abort();
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
    watcher.abort();
    ticker.abort();
    outcome
}
