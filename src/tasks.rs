//! Every background task of one replica, started in one place (`Tasks::start`, which
//! `server::serve` calls) and stopped with the server:
//! - the health watcher: pings the store and mirrors the answer (and whether the waiting room's
//!   settings are known) in `grpc.health.v1`;
//! - the waiting room's admission ticker (`Room::run_ticker`);
//! - the slot feed: this replica's one reader of the event log, which keeps the calendar cache
//!   and the `WatchAvailability` streams fresh (`Availability::run_feed`);
//! - the sweeper (`Slotd::sweep`, every `ServeOptions::sweep_interval`; off in the library
//!   default, so a test drives time and sweeps itself, or sets the interval);
//! - with `ServeOptions::metrics`, the gauges refresher and the Prometheus endpoint.
//!
//! The periodic ones tick on one grid of wall-clock time (`app::cadence`), so they and those of
//! the other replicas reach the store in one instant: one wake-up of Redis instead of one each.
//!
//! Per-call tasks (a batch flush of the waiting room, a stream's forwarder) are not here: they
//! live and end with their call.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::app::cadence::next_point;
use crate::app::room::Room;
use crate::app::Slotd;
use crate::server::{set_all, ServeOptions};

/// The running background tasks of a replica. Dropping it aborts them all.
pub struct Tasks {
    /// Stopped as soon as shutdown begins (health goes NOT_SERVING and stays so).
    serving: Vec<JoinHandle<()>>,
    /// Stopped once in-flight calls have drained: the sweeper and the metrics endpoint.
    draining: Vec<JoinHandle<()>>,
}

impl Tasks {
    /// Starts every background task of the replica serving `app` and `room`. `metrics` is the
    /// Prometheus endpoint's bound listener (with `options.metrics`).
    pub fn start(
        app: &Slotd,
        room: &Room,
        health: &HealthReporter,
        options: &ServeOptions,
        metrics: Option<TcpListener>,
    ) -> Self {
        let serving = vec![
            tokio::spawn(watch_store(
                app.clone(),
                room.clone(),
                health.clone(),
                options.health_interval,
            )),
            tokio::spawn(room.clone().run_ticker()),
            tokio::spawn(app.availability().clone().run_feed(app.store().clone())),
        ];
        let mut draining = Vec::new();
        if let Some(interval) = options.sweep_interval {
            draining.push(tokio::spawn(sweep_every(app.clone(), interval)));
        }
        if let (Some(m), Some(listener)) = (&options.metrics, metrics) {
            draining.push(tokio::spawn(crate::metrics::refresh_gauges(
                app.clone(),
                room.clone(),
                m.seats_days,
                m.refresh,
            )));
            draining.push(tokio::spawn(async move {
                // An endpoint that fails stops here; the replica serves on without it.
                let _ = crate::metrics::serve_metrics(listener, std::future::pending()).await;
            }));
        }
        Self { serving, draining }
    }

    /// Shutdown has begun: the health watcher, room ticker and slot feed stop (health stays
    /// NOT_SERVING); the sweeper and metrics go on while calls drain.
    pub fn stop_serving(&mut self) {
        for task in self.serving.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in self.serving.drain(..).chain(self.draining.drain(..)) {
            task.abort();
        }
    }
}

/// Runs `Slotd::sweep` every `interval` until the task is aborted.
async fn sweep_every(app: Slotd, interval: Duration) {
    loop {
        app.sweep().await;
        next_point(interval).await;
    }
}

/// Pings the store and mirrors the answer in health, until the task is aborted. A replica that
/// does not know the waiting room's settings (it refuses gated calls) is NOT_SERVING too.
async fn watch_store(app: Slotd, room: Room, reporter: HealthReporter, interval: Duration) {
    let mut serving = None;
    loop {
        let ok = matches!(
            tokio::time::timeout(interval.max(Duration::from_millis(200)), app.store().ping())
                .await,
            Ok(Ok(()))
        );
        crate::metrics::metrics().store_up.set(i64::from(ok));
        let ok = ok && room.settings_known();
        if serving != Some(ok) {
            if ok {
                tracing::info!("store answers: serving");
            } else {
                tracing::warn!(
                    "store does not answer or the room settings are unknown: health NOT_SERVING"
                );
            }
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_all(&reporter, status).await;
            serving = Some(ok);
        }
        next_point(interval).await;
    }
}
