//! Prometheus metrics: one process-wide registry (like Prometheus' default registry) served as
//! text on `/metrics` from its own port (`metrics.listen`), never on the gRPC port.
//!
//! Families never mix kinds: a counter (`_total`) only grows, a gauge is a value now, so `sum()`
//! and `rate()` mean what they say. Besides slotd's own families (`slotd_*`) the endpoint carries
//! `slotd_build_info{version}`, `slotd_serving` (1 while health says SERVING),
//! `slotd_store_up` (1 while the store answers its ping) and the standard process metrics
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, ... read
//! from /proc on Linux, at scrape time).
//!
//! Cardinality is bounded by construction: RPC labels are the fixed method paths and gRPC codes
//! (unknown paths collapse into `other`), bookings by ErrorInfo reason, seats per post and
//! category (summed over the next `metrics.seats_days` days, never per slot), Redis operations
//! by their static names.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use chrono::Days;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::app::room::Room;
use crate::app::Slotd;
use crate::domain::rules::DateRange;

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
pub struct BuildLabels {
    pub version: String,
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
    /// 1 while health reports SERVING (store answers, not shutting down), else 0.
    pub serving: Gauge,
    /// 1 while the store answers its health ping, else 0.
    pub store_up: Gauge,
    /// gRPC connections open now, and accepted since start.
    pub grpc_connections: Gauge,
    pub grpc_connections_accepted: Counter,
    /// Store-read values emitted at scrape time (room totals, slot feed).
    snapshot: std::sync::Arc<Snapshot>,
    pub redis_errors: Family<OpLabels, Counter>,
    pub redis_duration: HistogramFamily<OpLabels>,
    pub rate_limited: Family<LimitLabels, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("slotd");
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "always 1; the version label is slotd's version",
            build_info,
        );
        let serving = Gauge::default();
        registry.register(
            "serving",
            "1 while grpc.health.v1 reports SERVING (the store answers and slotd is not shutting down), else 0",
            serving.clone(),
        );
        let store_up = Gauge::default();
        registry.register(
            "store_up",
            "1 while the store (Redis or the embedded one) answers the health ping, else 0",
            store_up.clone(),
        );
        let grpc_connections = Gauge::default();
        registry.register(
            "grpc_connections",
            "gRPC (HTTP/2) connections open now",
            grpc_connections.clone(),
        );
        let grpc_connections_accepted = Counter::default();
        registry.register(
            "grpc_connections_accepted",
            "gRPC connections accepted since start (rises with server.max_connection_age_secs as clients reconnect)",
            grpc_connections_accepted.clone(),
        );
        let snapshot = std::sync::Arc::new(Snapshot::default());
        registry.register_collector(Box::new(snapshot.clone()));
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
            "people in the waiting room now: state=waiting (in line) or active (admitted, session running)",
            waiting_room.clone(),
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
            registry: root,
            rpc_requests,
            rpc_duration,
            bookings,
            seats_remaining,
            waiting_room,
            serving,
            store_up,
            grpc_connections,
            grpc_connections_accepted,
            snapshot,
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
        crate::app::cadence::next_point(interval).await;
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
            for (state, value) in [("waiting", stats.waiting), ("active", stats.active)] {
                m.waiting_room
                    .get_or_create(&RoomLabels {
                        state: state.into(),
                    })
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            }
            m.snapshot.set_room(RoomSnapshot {
                admitted_total: stats.admitted_total,
                expired_total: stats.expired_total,
                admitting: stats.config.enabled && !stats.config.paused,
            });
        }
        Err(e) => tracing::debug!(error = %e, "waiting room gauges not refreshed"),
    }
    m.snapshot.set_feed(app.availability().stats());
}

/// The room's running totals (kept by the room store, shared by every replica).
#[derive(Debug, Clone, Copy)]
struct RoomSnapshot {
    admitted_total: u64,
    expired_total: u64,
    admitting: bool,
}

/// Values read from the store or the slot feed at the last refresh, emitted as counters and
/// gauges of their own families at scrape time (nothing before the first refresh).
#[derive(Debug, Default)]
struct Snapshot {
    room: Mutex<Option<RoomSnapshot>>,
    feed: Mutex<Option<crate::app::availability::FeedStats>>,
}

impl Snapshot {
    fn set_room(&self, room: RoomSnapshot) {
        if let Ok(mut slot) = self.room.lock() {
            *slot = Some(room);
        }
    }

    fn set_feed(&self, feed: crate::app::availability::FeedStats) {
        if let Ok(mut slot) = self.feed.lock() {
            *slot = Some(feed);
        }
    }
}

fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
    kind: MetricType,
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, None, kind)?;
    metric.encode(metric_encoder)
}

fn gauge_of(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let room = self.room.lock().ok().and_then(|r| *r);
        if let Some(room) = room {
            encode_one(
                &mut encoder,
                "waiting_room_admitted",
                "admissions since the waiting room exists (kept in the room store: the same on every replica, use max()).",
                ConstCounter::new(room.admitted_total),
                MetricType::Counter,
            )?;
            encode_one(
                &mut encoder,
                "waiting_room_expired",
                "waiters and sessions expired since the waiting room exists (room store, the same on every replica).",
                ConstCounter::new(room.expired_total),
                MetricType::Counter,
            )?;
            encode_one(
                &mut encoder,
                "waiting_room_admitting",
                "1 while the waiting room is enabled and not paused, else 0.",
                ConstGauge::new(i64::from(room.admitting)),
                MetricType::Gauge,
            )?;
        }
        let feed = self.feed.lock().ok().and_then(|f| *f);
        if let Some(feed) = feed {
            encode_one(
                &mut encoder,
                "slot_feed_watchers",
                "WatchAvailability streams open on this replica now.",
                gauge_of(feed.watchers),
                MetricType::Gauge,
            )?;
            encode_one(
                &mut encoder,
                "slot_feed_events",
                "events this replica's slot feed read from the event log since start.",
                ConstCounter::new(feed.events),
                MetricType::Counter,
            )?;
            encode_one(
                &mut encoder,
                "slot_feed_ticks",
                "slot feed ticks that found a changed watched day, since start.",
                ConstCounter::new(feed.ticks),
                MetricType::Counter,
            )?;
            encode_one(
                &mut encoder,
                "slot_feed_day_reads",
                "store reads of a changed watched day by the slot feed since start (one per day per tick, whatever the watcher count).",
                ConstCounter::new(feed.day_reads),
                MetricType::Counter,
            )?;
        }
        Ok(())
    }
}

/// The standard `process_*` metrics of the Prometheus client libraries, read from /proc at
/// scrape time (Linux; elsewhere, or when /proc is unreadable, they are left out).
#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second of /proc's times: USER_HZ, 100 on every Linux architecture slotd
/// builds for (the kernel converts to it for userspace; Prometheus' procfs assumes it too).
const USER_HZ: f64 = 100.0;

/// What /proc says about this process.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub threads: u64,
}

/// Reads /proc/self (None where there is no /proc).
pub fn process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let (utime, stime) = (field(14)?, field(15)?);
    let threads = field(20).unwrap_or(0);
    let start_ticks = field(22);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l["Max open files".len()..].split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        });
    let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    let start_time_seconds = match (boot_time, start_ticks) {
        (Some(boot), Some(ticks)) => Some(boot as f64 + ticks as f64 / USER_HZ),
        _ => None,
    };
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
        resident_bytes: kib("VmRSS:").unwrap_or(0),
        virtual_bytes: kib("VmSize:").unwrap_or(0),
        open_fds,
        max_fds,
        start_time_seconds,
        threads,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = process_stats() else {
            return Ok(());
        };
        encode_one(
            &mut encoder,
            "process_cpu_seconds",
            "user and system CPU time spent, in seconds.",
            ConstCounter::new(p.cpu_seconds),
            MetricType::Counter,
        )?;
        encode_one(
            &mut encoder,
            "process_resident_memory_bytes",
            "resident memory size in bytes.",
            gauge_of(p.resident_bytes),
            MetricType::Gauge,
        )?;
        encode_one(
            &mut encoder,
            "process_virtual_memory_bytes",
            "virtual memory size in bytes.",
            gauge_of(p.virtual_bytes),
            MetricType::Gauge,
        )?;
        encode_one(
            &mut encoder,
            "process_open_fds",
            "open file descriptors.",
            gauge_of(p.open_fds),
            MetricType::Gauge,
        )?;
        if let Some(max) = p.max_fds {
            encode_one(
                &mut encoder,
                "process_max_fds",
                "the soft limit of open file descriptors.",
                gauge_of(max),
                MetricType::Gauge,
            )?;
        }
        if let Some(start) = p.start_time_seconds {
            encode_one(
                &mut encoder,
                "process_start_time_seconds",
                "start time of the process since the Unix epoch, in seconds.",
                ConstGauge::new(start),
                MetricType::Gauge,
            )?;
        }
        encode_one(
            &mut encoder,
            "process_threads",
            "OS threads of the process.",
            gauge_of(p.threads),
            MetricType::Gauge,
        )?;
        Ok(())
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
