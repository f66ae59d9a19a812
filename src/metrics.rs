//! Prometheus metrics: one process-wide registry (like Prometheus' default registry) served as
//! text on `/metrics` from its own port (`metrics.listen`), never on the gRPC port.
//!
//! Cardinality is bounded by construction: RPC labels are the fixed method paths and gRPC codes
//! (unknown paths collapse into `other`), bookings by ErrorInfo reason, seats per post and
//! category (summed over the next `metrics.seats_days` days, never per slot), Redis operations
//! by their static names.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::Days;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::app::Slotd;
use crate::domain::rules::DateRange;
use crate::room::Room;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeatLabels {
    pub post: String,
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoomLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedLabels {
    pub what: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub rpc_requests: Family<RpcLabels, Counter>,
    pub rpc_duration: HistogramFamily<RpcLabels>,
    pub bookings: Family<OutcomeLabels, Counter>,
    pub seats_remaining: Family<SeatLabels, Gauge>,
    pub waiting_room: Family<RoomLabels, Gauge>,
    pub slot_feed: Family<FeedLabels, Gauge>,
    pub redis_errors: Family<OpLabels, Counter>,
    pub redis_duration: HistogramFamily<OpLabels>,
    pub rate_limited: Family<LimitLabels, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("slotd");
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "gRPC calls finished, by method and status code",
            rpc_requests.clone(),
        );
        let rpc_duration: HistogramFamily<RpcLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "rpc_duration_seconds",
            "gRPC call latency until the status is sent, by method and status code",
            rpc_duration.clone(),
        );
        let bookings = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "bookings",
            "BookAppointment and ConfirmHold outcomes: booked, or the refusal reason in lower case (slot_full, ...)",
            bookings.clone(),
        );
        let seats_remaining = Family::<SeatLabels, Gauge>::default();
        registry.register(
            "seats_remaining",
            "bookable seats in open, not yet started slots over the next metrics.seats_days days",
            seats_remaining.clone(),
        );
        let waiting_room = Family::<RoomLabels, Gauge>::default();
        registry.register(
            "waiting_room",
            "waiting room: state=waiting|active (now), admitted|expired (totals since the room exists)",
            waiting_room.clone(),
        );
        let slot_feed = Family::<FeedLabels, Gauge>::default();
        registry.register(
            "slot_feed",
            "this replica's slot feed: what=watchers (WatchAvailability streams now), events, ticks, day_reads (totals since start; day_reads grows once per changed watched day per tick, not per watcher)",
            slot_feed.clone(),
        );
        let redis_errors = Family::<OpLabels, Counter>::default();
        registry.register(
            "redis_errors",
            "Redis calls that failed or timed out, by operation",
            redis_errors.clone(),
        );
        let redis_duration: HistogramFamily<OpLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "redis_duration_seconds",
            "Redis script and command latency, by operation",
            redis_duration.clone(),
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "calls refused RESOURCE_EXHAUSTED by a per-client limit",
            rate_limited.clone(),
        );
        Self {
            registry,
            rpc_requests,
            rpc_duration,
            bookings,
            seats_remaining,
            waiting_room,
            slot_feed,
            redis_errors,
            redis_duration,
            rate_limited,
        }
    }

    /// The registry in the Prometheus/OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        text
    }

    pub fn redis_call(&self, op: &str, elapsed: Duration, ok: bool) {
        let labels = OpLabels { op: op.to_owned() };
        self.redis_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if !ok {
            self.redis_errors.get_or_create(&labels).inc();
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Refreshes the gauges that need store reads (seats, waiting room) every `interval`, until
/// the task is aborted. A failing store leaves the last values and logs at debug.
pub async fn refresh_gauges(app: Slotd, room: Room, days: u32, interval: Duration) {
    loop {
        refresh_once(&app, &room, days).await;
        tokio::time::sleep(interval).await;
    }
}

pub async fn refresh_once(app: &Slotd, room: &Room, days: u32) {
    let m = metrics();
    let today = app.now().date_naive();
    let range = DateRange {
        from: today,
        to: today
            .checked_add_days(Days::new(u64::from(days)))
            .unwrap_or(today),
    };
    for post in app.catalog().posts() {
        for category in &post.categories {
            match app.available_dates(&post.id, &category.id, range).await {
                Ok(dates) => {
                    let seats: i64 = dates.iter().map(|d| i64::from(d.seats)).sum();
                    m.seats_remaining
                        .get_or_create(&SeatLabels {
                            post: post.id.to_string(),
                            category: category.id.to_string(),
                        })
                        .set(seats);
                }
                Err(e) => tracing::debug!(error = %e, "seats gauge not refreshed"),
            }
        }
    }
    match room.stats().await {
        Ok(stats) => {
            for (state, value) in [
                ("waiting", stats.waiting),
                ("active", stats.active),
                ("admitted", stats.admitted_total),
                ("expired", stats.expired_total),
            ] {
                m.waiting_room
                    .get_or_create(&RoomLabels {
                        state: state.into(),
                    })
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
        Err(e) => tracing::debug!(error = %e, "waiting room gauges not refreshed"),
    }
    let feed = app.availability().stats();
    for (what, value) in [
        ("watchers", feed.watchers),
        ("events", feed.events),
        ("ticks", feed.ticks),
        ("day_reads", feed.day_reads),
    ] {
        m.slot_feed
            .get_or_create(&FeedLabels { what: what.into() })
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    async fn scrape() -> impl axum::response::IntoResponse {
        (
            [(
                http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            metrics().render(),
        )
    }
    let router = axum::Router::new().route("/metrics", axum::routing::get(scrape));
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` for `serve_metrics`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
