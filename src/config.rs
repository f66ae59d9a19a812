//! Configuration, layered: built-in defaults → TOML file (`--config FILE`) → `SLOTD__SECTION__KEY`
//! environment variables (double underscore nests: `SLOTD__REDIS__URL`) → command-line flags and
//! their single-underscore environment twins (`--redis-url` / `SLOTD_REDIS_URL`). The result is
//! validated once at start: a bad value fails fast with a message naming its key
//! (`redis.connect_timeout_ms`). `slotd config check FILE` runs the same loading and validation
//! without starting anything. Every key is listed in README.md (Configuration).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "slotd",
    version,
    about = "Appointment slot inventory service (gRPC)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(Box<ServeArgs>),
    /// Inspect configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Ask a running slotd's grpc.health.v1 service; exit 0 only when it answers SERVING (the
    /// container health check).
    Health(HealthArgs),
    /// Operate on the Redis that `redis.url` names.
    #[command(subcommand)]
    Redis(RedisCommand),
}

/// `slotd redis ...`.
#[derive(Debug, Subcommand)]
pub enum RedisCommand {
    /// Delete the slotd Redis Functions libraries no running replica uses, on every primary:
    /// keeps this build's version and every version whose in-use mark a replica refreshed
    /// within the last minute; prints each library kept or deleted.
    PruneFunctions(RedisArgs),
    /// Migrate the deployment's keys from the previous key layout (1) to this build's (2) and
    /// mark it (`slotd:{T}:layout`); `slotd serve` refuses layout-1 data until then. Stop every
    /// replica of the previous version first. Idempotent; `--dry-run` is not supported.
    Migrate(RedisArgs),
    /// Print this build's functions library (what slotd loads with FUNCTION LOAD), e.g.
    /// `slotd redis library | redis-cli -x FUNCTION LOAD REPLACE`; its first line names it.
    Library {
        /// The Redis Cluster variant (cluster_guard.lua before the operations it guards).
        #[arg(long)]
        cluster: bool,
    },
}

/// Flags of `slotd redis ...`: where Redis is, read like `slotd serve` reads it (the file,
/// `SLOTD__REDIS__*` variables, then these flags).
#[derive(Debug, Args, Clone, Default)]
pub struct RedisArgs {
    /// TOML configuration file (its [redis] table).
    #[arg(long, env = "SLOTD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Redis URL (every scheme `slotd serve --redis-url` takes).
    #[arg(long, env = "SLOTD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Print what would be deleted without deleting it.
    #[arg(long)]
    pub dry_run: bool,
}

impl RedisArgs {
    /// The Redis options of the layered configuration with these flags on top; an error names
    /// the key when no URL is given or it does not parse.
    pub fn redis_options(&self) -> Result<crate::store::redis::RedisOptions, ConfigError> {
        let mut settings = layered(self.config.as_deref(), std::env::vars())?;
        if let Some(url) = &self.redis_url {
            settings.redis.url = Some(url.clone());
        }
        let options = settings.redis_options().ok_or_else(|| {
            ConfigError::new(
                "redis.url",
                "needed (--redis-url, SLOTD_REDIS_URL or [redis] url)",
            )
        })?;
        crate::store::redis::conn::check(&options.conn)
            .map_err(|e| ConfigError::new(e.key, e.detail))?;
        Ok(options)
    }
}

/// Flags of `slotd health`.
#[derive(Debug, Args, Clone)]
pub struct HealthArgs {
    /// The server: http://host:port (plaintext) or https://host:port (TLS).
    #[arg(
        long,
        env = "SLOTD_HEALTH_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,

    /// The service to ask about ("" = the server as a whole), e.g. slotd.v1.BookingService.
    #[arg(long, default_value = "")]
    pub service: String,

    /// PEM CA that signed the server certificate (https only; needed for a private CA).
    #[arg(long, env = "SLOTD_HEALTH_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// Name the server certificate must carry, when it differs from the host in --addr
    /// (e.g. the certificate says slotd.internal and --addr is https://127.0.0.1:50051).
    #[arg(long, env = "SLOTD_HEALTH_TLS_DOMAIN")]
    pub tls_domain: Option<String>,

    /// Seconds for connecting and answering together.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout_secs: u64,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load FILE over the defaults, apply SLOTD__* variables, validate, and print the effective
    /// configuration (secrets redacted). Exits non-zero naming the first bad key.
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
}

/// Flags of `slotd serve`. Every one is optional: an unset flag leaves the value from the
/// layers below (file, `SLOTD__*`, defaults).
#[derive(Debug, Args, Default)]
#[command(after_help = OTEL_HELP)]
pub struct ServeArgs {
    /// TOML configuration file (see README, Configuration).
    #[arg(long, env = "SLOTD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on (server.listen).
    #[arg(long, env = "SLOTD_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Operator token for AdminService (`authorization: Bearer <token>`), at least 16 characters.
    /// Without it operator RPCs are refused (with --demo a random one is generated and printed).
    #[arg(long, env = "SLOTD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Key that signs waiting-room admission tokens, ticket secrets and waitlist entry secrets
    /// (at least 32 characters). Every replica behind one address needs the same key. Required
    /// with --redis-url; the embedded store generates a random one per process.
    #[arg(long, env = "SLOTD_ADMISSION_KEY", hide_env_values = true)]
    pub admission_key: Option<String>,

    /// Earlier admission keys, comma-separated: they no longer sign but still verify, so a key
    /// rotation keeps every ticket, token and entry secret issued before it (at most 4).
    #[arg(
        long,
        env = "SLOTD_PREVIOUS_ADMISSION_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub previous_admission_keys: Option<Vec<String>>,

    /// Seed the next 60 days of slots and 100 demo receipts.
    #[arg(long, env = "SLOTD_DEMO")]
    pub demo: bool,

    /// Serve the reference pages at / and gRPC-Web on the port (web.enabled and web.grpc_web).
    #[arg(long, env = "SLOTD_WEB")]
    pub web: bool,

    /// Redis URL: redis://host:port/db, rediss:// (TLS), unix:///path, Redis Cluster seeds
    /// redis-cluster://host:port,host:port (rediss-cluster:// over TLS), or Sentinel
    /// redis+sentinel://host:port,host:port/<master-name> (rediss+sentinel://). Without it slotd
    /// keeps state in process memory.
    #[arg(long, env = "SLOTD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// PEM CA that signs the Redis server certificates (rediss); default: the system roots.
    #[arg(long, env = "SLOTD_REDIS_CA_CERT")]
    pub redis_ca_cert: Option<PathBuf>,

    /// PEM client certificate for mutual TLS with Redis (needs --redis-client-key).
    #[arg(long, env = "SLOTD_REDIS_CLIENT_CERT")]
    pub redis_client_cert: Option<PathBuf>,

    /// PEM private key of --redis-client-cert.
    #[arg(long, env = "SLOTD_REDIS_CLIENT_KEY")]
    pub redis_client_key: Option<PathBuf>,

    /// Hash tag every Redis key carries (`slotd:{<tag>}:...`), one per deployment sharing a
    /// Redis: 1-32 of A-Z, a-z, 0-9, '_' and '-'. See docs/redis-keys.md.
    #[arg(long, env = "SLOTD_REDIS_TAG")]
    pub redis_tag: Option<String>,

    /// Milliseconds to establish a Redis connection before a call fails UNAVAILABLE.
    #[arg(long, env = "SLOTD_REDIS_CONNECT_TIMEOUT_MS")]
    pub redis_connect_timeout_ms: Option<u64>,

    /// Milliseconds to wait for one Redis answer before a call fails UNAVAILABLE.
    #[arg(long, env = "SLOTD_REDIS_RESPONSE_TIMEOUT_MS")]
    pub redis_response_timeout_ms: Option<u64>,

    /// Reconnection attempts (with short backoff) after the Redis connection is lost, before a
    /// call gives up; the next call tries again.
    #[arg(long, env = "SLOTD_REDIS_RECONNECT_RETRIES")]
    pub redis_reconnect_retries: Option<u64>,

    /// Acknowledge a write only once this many Redis replicas have it (WAIT); 0 = off.
    #[arg(long, env = "SLOTD_REDIS_WAIT_REPLICAS")]
    pub redis_wait_replicas: Option<u32>,

    /// Milliseconds WAIT may take before the write is answered UNAVAILABLE (a retry replays it).
    #[arg(long, env = "SLOTD_REDIS_WAIT_TIMEOUT_MS")]
    pub redis_wait_timeout_ms: Option<u64>,

    /// Posts catalog (TOML). Default: the built-in copy of deploy/posts.toml.
    #[arg(long, env = "SLOTD_POSTS")]
    pub posts: Option<PathBuf>,

    /// Log format.
    #[arg(long, env = "SLOTD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Seconds to let in-flight calls finish after SIGTERM/SIGINT.
    #[arg(long, env = "SLOTD_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,

    /// Seconds a hold (HoldSlot) keeps its seats before they return by themselves (default 600).
    #[arg(long, env = "SLOTD_HOLD_TTL_SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub hold_ttl_secs: Option<u64>,

    /// Seconds a waitlist offer keeps its seats for the entry before it expires and the seats
    /// pass to the next entry (default 1800).
    #[arg(long, env = "SLOTD_OFFER_TTL_SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub offer_ttl_secs: Option<u64>,

    /// How many times each receipt may back a RescheduleAppointment (default 2).
    #[arg(long, env = "SLOTD_RESCHEDULE_LIMIT", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub reschedule_limit: Option<u32>,

    /// Address of the Prometheus `/metrics` endpoint (off unless set).
    #[arg(long, env = "SLOTD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// OTLP/gRPC collector for spans, e.g. http://127.0.0.1:4317. Unset: the OpenTelemetry
    /// variables decide (see below); set, it wins over them.
    #[arg(long, env = "SLOTD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// PEM certificate chain: serve gRPC over TLS (needs --tls-key).
    #[arg(long, env = "SLOTD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "SLOTD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA of operator client certificates: AdminService then also accepts a verified client
    /// certificate for one of --tls-operator-names instead of the bearer token.
    #[arg(long, env = "SLOTD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// DNS names (subject alternative names) an operator client certificate must be valid for,
    /// comma-separated; required with --tls-client-ca.
    #[arg(long, env = "SLOTD_TLS_OPERATOR_NAMES", value_delimiter = ',')]
    pub tls_operator_names: Option<Vec<String>>,
}

/// The OpenTelemetry variables `slotd serve` reads (src/telemetry.rs), for `--help`.
const OTEL_HELP: &str = "OpenTelemetry environment (used when the matching telemetry.* setting is unset):
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT   OTLP/gRPC collector (traces one first)
  OTEL_EXPORTER_OTLP_TRACES_INSECURE, OTEL_EXPORTER_OTLP_INSECURE   `true`: a bare host:port is plaintext
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL   only `grpc` is supported
  OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES                       resource (default service.name: slotd)
  OTEL_TRACES_EXPORTER (otlp | none), OTEL_SDK_DISABLED (true)      turn span export on (default endpoint) or off";

/// The whole configuration; every field has a default, so an empty file is valid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub redis: RedisSettings,
    pub telemetry: TelemetrySettings,
    pub metrics: MetricsSettings,
    pub tls: TlsSettings,
    pub limits: LimitSettings,
    pub booking: BookingSettings,
    pub calendar: CalendarSettings,
    pub waiting_room: WaitingRoomSettings,
    pub streams: StreamSettings,
    pub web: WebSettings,
}

/// The browser front door (`src/web/`): gRPC-Web, CORS and the reference pages. All off by
/// default: the port then speaks native gRPC over HTTP/2 only, as before.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSettings {
    /// Accept gRPC-Web (HTTP/1.1 and HTTP/2) on the gRPC port for CalendarService,
    /// WaitingRoomService and BookingService (never AdminService, health or reflection).
    pub grpc_web: bool,
    /// Origins (`https://book.example.cn`: scheme, host, optional port, lower case) whose pages
    /// may call slotd cross-origin (CORS). Empty: only slotd's own pages (same origin).
    pub allowed_origins: Vec<String>,
    /// Serve the reference pages (waiting room, calendar, booking, confirmation) at `/`.
    /// Needs `grpc_web`.
    pub enabled: bool,
}

/// How Watch streams of the waiting room hear from it (`src/app/room.rs`, `WatchOptions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WaitingRoomSettings {
    /// Seconds a watcher waits at most for a message while nothing moves.
    pub watch_heartbeat_secs: u64,
    /// A waiter is sent a new position / estimate once it moved by this percentage of the value
    /// last sent (at least by one); 0 = every change.
    pub watch_position_step_percent: u32,
    /// ... at most once per this many milliseconds (a move within it is sent at its end; the
    /// admission and the end of a ticket are never held back); 0 = no bound.
    pub watch_position_interval_ms: u64,
    /// Open Watch streams one ticket may have on one replica.
    pub max_watchers_per_ticket: u32,
}

impl Default for WaitingRoomSettings {
    fn default() -> Self {
        let d = crate::app::room::WatchOptions::default();
        Self {
            watch_heartbeat_secs: d.heartbeat.as_secs(),
            watch_position_step_percent: d.position_step_percent,
            watch_position_interval_ms: u64::try_from(d.position_interval.as_millis())
                .unwrap_or(u64::MAX),
            max_watchers_per_ticket: u32::try_from(d.max_watchers_per_ticket).unwrap_or(4),
        }
    }
}

/// Bounds on server streams, WatchAvailability and WatchOffers (`src/streams.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSettings {
    /// Streams one client (peer IP, or `x-client-id` from a trusted proxy) may hold open at
    /// once; one more is refused RESOURCE_EXHAUSTED / TOO_MANY_STREAMS.
    pub max_per_client: u32,
    /// Seconds a stream lives; then it ends with OK and the client opens it again (its first
    /// message is a full snapshot).
    pub max_lifetime_secs: u64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        let d = crate::streams::StreamOptions::default();
        Self {
            max_per_client: d.max_per_client,
            max_lifetime_secs: d.max_lifetime.as_secs(),
        }
    }
}

/// The calendar cache and the slot feed (`src/app/availability.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalendarSettings {
    /// Milliseconds a cached calendar day may be served before it is read again, whatever the
    /// feed says (the staleness bound); 0 turns the cache off.
    pub cache_max_age_ms: u64,
    /// Milliseconds between two reads of the event log by the slot feed; also the shortest gap
    /// between two WatchAvailability updates.
    pub feed_interval_ms: u64,
}

impl Default for CalendarSettings {
    fn default() -> Self {
        let d = crate::app::availability::CalendarOptions::default();
        Self {
            cache_max_age_ms: u64::try_from(d.cache_max_age.as_millis()).unwrap_or(1000),
            feed_interval_ms: u64::try_from(d.feed_interval.as_millis()).unwrap_or(250),
        }
    }
}

/// The booking lifecycle: holds and reschedules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BookingSettings {
    /// Seconds a hold keeps its seats before they return by themselves.
    pub hold_ttl_secs: u64,
    /// How many times each receipt may back a reschedule.
    pub reschedule_limit: u32,
    /// Seconds a waitlist offer keeps its seats.
    pub offer_ttl_secs: u64,
    /// Milliseconds between two runs of the hold sweeper (expired holds return their seats).
    pub sweep_interval_ms: u64,
    /// Days a cancelled appointment stays readable (CANCELLED) before its record expires, and a
    /// past one (BOOKED) after 00:00 UTC two days after its date.
    pub retention_days: u32,
}

impl Default for BookingSettings {
    fn default() -> Self {
        let d = crate::app::LifecycleOptions::default();
        Self {
            hold_ttl_secs: u64::try_from(d.hold_ttl.num_seconds()).unwrap_or(600),
            reschedule_limit: d.reschedule_limit,
            offer_ttl_secs: crate::domain::waitlist::DEFAULT_OFFER_TTL_SECS,
            sweep_interval_ms: 1000,
            retention_days: crate::store::DEFAULT_RETENTION_DAYS as u32,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub admin_token: Option<String>,
    pub admission_key: Option<String>,
    /// Earlier keys that still verify (rotation); `admission_key` signs.
    pub previous_admission_keys: Vec<String>,
    pub demo: bool,
    pub posts: Option<PathBuf>,
    pub drain_timeout_secs: u64,
    /// Upper bound of every call; a shorter `grpc-timeout` from the client wins.
    pub request_timeout_secs: u64,
    /// HTTP/2 streams (concurrent calls) per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 initial stream and connection flow-control windows in KiB (0 = h2's 64 KiB).
    pub http2_window_kib: u32,
    /// HTTP/2 BDP-based adaptive flow-control windows.
    pub http2_adaptive_window: bool,
    /// Seconds after which a connection is sent GOAWAY so the client reconnects (and an L4
    /// balancer can pick another replica); 0 = never.
    pub max_connection_age_secs: u64,
    /// Seconds running calls may go on after that GOAWAY before the connection is closed.
    pub max_connection_age_grace_secs: u64,
    /// Seconds between HTTP/2 PINGs to the client; 0 = no pings.
    pub http2_keepalive_interval_secs: u64,
    /// Seconds a PING may go unanswered before the connection is closed.
    pub http2_keepalive_timeout_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            admin_token: None,
            admission_key: None,
            previous_admission_keys: Vec::new(),
            demo: false,
            posts: None,
            drain_timeout_secs: 10,
            request_timeout_secs: 30,
            max_concurrent_streams: 256,
            http2_window_kib: 0,
            http2_adaptive_window: false,
            max_connection_age_secs: 0,
            max_connection_age_grace_secs: 30,
            http2_keepalive_interval_secs: 0,
            http2_keepalive_timeout_secs: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// Every scheme of `store::redis::conn::SCHEMES` (one server, Cluster, Sentinel, TLS).
    pub url: Option<String>,
    /// PEM CA of the Redis server certificates (TLS URLs); default: the system roots.
    pub tls_ca_cert: Option<PathBuf>,
    /// PEM client certificate and key for mutual TLS (together).
    pub tls_client_cert: Option<PathBuf>,
    pub tls_client_key: Option<PathBuf>,
    pub tag: String,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
    pub reconnect_retries: u64,
    /// Replicas that must have a write before it is acknowledged (WAIT); 0 = off.
    pub wait_replicas: u32,
    pub wait_timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            tls_ca_cert: None,
            tls_client_cert: None,
            tls_client_key: None,
            tag: "slotd".into(),
            connect_timeout_ms: 1000,
            response_timeout_ms: 1000,
            reconnect_retries: 2,
            wait_replicas: 0,
            wait_timeout_ms: 500,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint; unset, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` decide (src/telemetry.rs).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans; unset, `OTEL_SERVICE_NAME`, then `OTEL_RESOURCE_ATTRIBUTES`,
    /// then `slotd`.
    pub service_name: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            service_name: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// `/metrics` address; off when unset.
    pub listen: Option<SocketAddr>,
    /// Days ahead summed into `slotd_seats_remaining` per post and category.
    pub seats_days: u32,
    /// Seconds between refreshes of the seats and waiting-room gauges.
    pub refresh_secs: u64,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: None,
            seats_days: 14,
            refresh_secs: 15,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    /// DNS names (subject alternative names) of accepted operator certificates.
    pub operator_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// BookingService calls per client and minute (sustained), and the burst above it.
    pub booking_per_minute: u32,
    pub booking_burst: u32,
    /// CalendarService calls per client and minute, and the burst.
    pub calendar_per_minute: u32,
    pub calendar_burst: u32,
    /// WaitingRoomService calls (Join, GetStatus, Watch, Leave) per client and minute, and the
    /// burst: a Watch stream counts once, when it opens.
    pub room_per_minute: u32,
    pub room_burst: u32,
    /// Failed confirmation lookups (NOT_FOUND from GetAppointment/CancelAppointment) per client
    /// and hour, and the burst: the anti-enumeration limit.
    pub lookup_failures_per_hour: u32,
    pub lookup_failure_burst: u32,
    /// Failed operator authentications (AdminService) per client and hour, and the burst:
    /// guessing the admin token or trying certificates stops after a handful.
    pub operator_failures_per_hour: u32,
    pub operator_failure_burst: u32,
    /// Peers (e.g. the edge proxies), as addresses or CIDRs (`10.0.0.0/8`), trusted to name
    /// the client in `x-client-id`; every other peer is limited by its IPv4 address or IPv6 /64.
    pub trusted_proxies: Vec<crate::limits::IpNet>,
    /// Clients tracked at once; beyond it idle clients are forgotten first.
    pub max_clients: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            booking_per_minute: 60,
            booking_burst: 20,
            calendar_per_minute: 600,
            calendar_burst: 100,
            room_per_minute: 120,
            room_burst: 60,
            lookup_failures_per_hour: 30,
            lookup_failure_burst: 10,
            operator_failures_per_hour: 60,
            operator_failure_burst: 10,
            trusted_proxies: Vec::new(),
            max_clients: 100_000,
        }
    }
}

impl LimitSettings {
    /// Limits nobody in practice (tests and benches that storm from one address).
    pub fn unlimited() -> Self {
        Self {
            booking_per_minute: u32::MAX,
            booking_burst: u32::MAX,
            calendar_per_minute: u32::MAX,
            calendar_burst: u32::MAX,
            room_per_minute: u32::MAX,
            room_burst: u32::MAX,
            lookup_failures_per_hour: u32::MAX,
            lookup_failure_burst: u32::MAX,
            operator_failures_per_hour: u32::MAX,
            operator_failure_burst: u32::MAX,
            ..Self::default()
        }
    }
}

/// A configuration problem, naming the key (`redis.tag`) or the source it came from.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {detail}")]
pub struct ConfigError {
    pub key: String,
    pub detail: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self {
            key: key.into(),
            detail: detail.to_string(),
        }
    }
}

/// Loads `serve`'s configuration: defaults → `args.config` → `SLOTD__*` → flags, validated.
pub fn load(args: &ServeArgs) -> Result<Settings, ConfigError> {
    let mut settings = layered(args.config.as_deref(), std::env::vars())?;
    args.apply(&mut settings);
    settings.validate()?;
    Ok(settings)
}

/// Defaults, then the file, then the `SLOTD__*` variables among `env`.
pub fn layered(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let mut tree =
        toml::Value::try_from(Settings::default()).map_err(|e| ConfigError::new("defaults", e))?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e))?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.message()))?;
        merge(&mut tree, toml::Value::Table(table));
    }
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with("SLOTD__"))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name["SLOTD__".len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::new(name, "empty key segment"));
        }
        set_env(&mut tree, &path, &raw).map_err(|detail| ConfigError::new(&name, detail))?;
    }
    serde_path_to_error::deserialize::<_, Settings>(tree)
        .map_err(|e| ConfigError::new(e.path().to_string(), e.inner()))
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(base), toml::Value::Table(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// Sets one `SLOTD__A__B` value, typed like the default at that key (numbers, booleans and
/// lists parse; everything else, including optional keys without a default, is a string).
fn set_env(tree: &mut toml::Value, path: &[String], raw: &str) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut node = tree;
    for key in parents {
        let table = node
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` is not a section"))?;
        node = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    let table = node
        .as_table_mut()
        .ok_or_else(|| "not a section".to_owned())?;
    let value = match table.get(last) {
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("`{raw}` is not an integer"))?,
        ),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
            raw.trim()
                .parse()
                .map_err(|_| format!("`{raw}` is not true or false"))?,
        ),
        Some(toml::Value::Array(_)) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_owned()),
    };
    table.insert(last.clone(), value);
    Ok(())
}

impl ServeArgs {
    /// The flag layer: every flag given (or its `SLOTD_*` twin) overrides the layers below.
    pub fn apply(&self, s: &mut Settings) {
        fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *slot = v.clone();
            }
        }
        fn set_opt<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
            if value.is_some() {
                slot.clone_from(value);
            }
        }
        set(&mut s.server.listen, &self.listen);
        set_opt(&mut s.server.admin_token, &self.admin_token);
        set_opt(&mut s.server.admission_key, &self.admission_key);
        set(
            &mut s.server.previous_admission_keys,
            &self.previous_admission_keys,
        );
        if self.demo {
            s.server.demo = true;
        }
        if self.web {
            s.web.enabled = true;
            s.web.grpc_web = true;
        }
        set_opt(&mut s.server.posts, &self.posts);
        set(&mut s.server.drain_timeout_secs, &self.drain_timeout_secs);
        set(&mut s.booking.hold_ttl_secs, &self.hold_ttl_secs);
        set(&mut s.booking.reschedule_limit, &self.reschedule_limit);
        set(&mut s.booking.offer_ttl_secs, &self.offer_ttl_secs);
        set_opt(&mut s.redis.url, &self.redis_url);
        set_opt(&mut s.redis.tls_ca_cert, &self.redis_ca_cert);
        set_opt(&mut s.redis.tls_client_cert, &self.redis_client_cert);
        set_opt(&mut s.redis.tls_client_key, &self.redis_client_key);
        set(&mut s.redis.tag, &self.redis_tag);
        set(
            &mut s.redis.connect_timeout_ms,
            &self.redis_connect_timeout_ms,
        );
        set(
            &mut s.redis.response_timeout_ms,
            &self.redis_response_timeout_ms,
        );
        set(
            &mut s.redis.reconnect_retries,
            &self.redis_reconnect_retries,
        );
        set(&mut s.redis.wait_replicas, &self.redis_wait_replicas);
        set(&mut s.redis.wait_timeout_ms, &self.redis_wait_timeout_ms);
        set(&mut s.telemetry.log_format, &self.log_format);
        set_opt(&mut s.telemetry.otlp_endpoint, &self.otlp_endpoint);
        set_opt(&mut s.metrics.listen, &self.metrics_listen);
        set_opt(&mut s.tls.cert, &self.tls_cert);
        set_opt(&mut s.tls.key, &self.tls_key);
        set_opt(&mut s.tls.client_ca, &self.tls_client_ca);
        if let Some(names) = &self.tls_operator_names {
            s.tls.operator_names = names.clone();
        }
    }
}

fn check(ok: bool, key: &str, detail: impl std::fmt::Display) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(key, detail))
    }
}

fn readable(key: &str, path: &Option<PathBuf>) -> Result<(), ConfigError> {
    if let Some(path) = path {
        std::fs::metadata(path)
            .map_err(|e| ConfigError::new(key, format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

impl Settings {
    /// Hold and reschedule settings for `Slotd::with_lifecycle`.
    pub fn lifecycle(&self) -> crate::app::LifecycleOptions {
        crate::app::LifecycleOptions {
            hold_ttl: chrono::Duration::seconds(
                i64::try_from(self.booking.hold_ttl_secs).unwrap_or(86_400),
            ),
            reschedule_limit: self.booking.reschedule_limit,
        }
    }

    /// How long a waitlist offer keeps its seats (the stores' `with_offer_ttl`).
    pub fn offer_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::try_from(self.booking.offer_ttl_secs).unwrap_or(86_400))
    }

    /// How long records are kept (the stores' `with_retention`).
    pub fn retention(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.booking.retention_days))
    }

    /// Calendar cache and slot feed settings for `Slotd::with_calendar`.
    pub fn calendar(&self) -> crate::app::availability::CalendarOptions {
        crate::app::availability::CalendarOptions {
            cache_max_age: Duration::from_millis(self.calendar.cache_max_age_ms),
            feed_interval: Duration::from_millis(self.calendar.feed_interval_ms),
        }
    }

    /// Watch stream settings for `Room::with_watch_options`.
    pub fn watch(&self) -> crate::app::room::WatchOptions {
        let w = &self.waiting_room;
        crate::app::room::WatchOptions {
            heartbeat: Duration::from_secs(w.watch_heartbeat_secs),
            position_step_percent: w.watch_position_step_percent,
            position_interval: Duration::from_millis(w.watch_position_interval_ms),
            max_watchers_per_ticket: usize::try_from(w.max_watchers_per_ticket).unwrap_or(1),
        }
    }

    /// Stream bounds for `ServeOptions::streams`.
    pub fn streams(&self) -> crate::streams::StreamOptions {
        crate::streams::StreamOptions {
            max_per_client: self.streams.max_per_client,
            max_lifetime: Duration::from_secs(self.streams.max_lifetime_secs),
        }
    }

    /// Every rule a value must follow, checked before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            (1..=300).contains(&self.waiting_room.watch_heartbeat_secs),
            "waiting_room.watch_heartbeat_secs",
            "must be 1-300 seconds",
        )?;
        check(
            self.waiting_room.watch_position_step_percent <= 100,
            "waiting_room.watch_position_step_percent",
            "must be 0-100 (0 = every change)",
        )?;
        check(
            self.waiting_room.watch_position_interval_ms <= 60_000,
            "waiting_room.watch_position_interval_ms",
            "must be 0-60000 milliseconds (0 = no bound)",
        )?;
        check(
            (1..=64).contains(&self.waiting_room.max_watchers_per_ticket),
            "waiting_room.max_watchers_per_ticket",
            "must be 1-64",
        )?;
        check(
            (1..=10_000).contains(&self.streams.max_per_client),
            "streams.max_per_client",
            "must be 1-10000",
        )?;
        check(
            (10..=86_400).contains(&self.streams.max_lifetime_secs),
            "streams.max_lifetime_secs",
            "must be 10-86400 seconds",
        )?;
        check(
            self.calendar.cache_max_age_ms <= 60_000,
            "calendar.cache_max_age_ms",
            "must be 0-60000 (0 turns the cache off)",
        )?;
        check(
            (10..=10_000).contains(&self.calendar.feed_interval_ms),
            "calendar.feed_interval_ms",
            "must be 10-10000",
        )?;
        check(
            (1..=86_400).contains(&self.booking.hold_ttl_secs),
            "booking.hold_ttl_secs",
            "must be 1-86400 seconds",
        )?;
        check(
            (1..=86_400).contains(&self.booking.offer_ttl_secs),
            "booking.offer_ttl_secs",
            "must be 1-86400 seconds",
        )?;
        check(
            (10..=3_600_000).contains(&self.booking.sweep_interval_ms),
            "booking.sweep_interval_ms",
            "must be 10-3600000 milliseconds",
        )?;
        check(
            (1..=3650).contains(&self.booking.retention_days),
            "booking.retention_days",
            "must be 1-3650 days",
        )?;
        check(
            self.booking.reschedule_limit <= 100,
            "booking.reschedule_limit",
            "must be 0-100",
        )?;
        let s = &self.server;
        if let Some(token) = &s.admin_token {
            crate::api::auth::OperatorAuth::new(Some(token))
                .map_err(|e| ConfigError::new("server.admin_token", e))?;
        }
        // The key itself may come from SLOTD_ADMISSION_KEY (a flag twin `config check` does not
        // read), so only `serve` insists on one with Redis (`serving_admission_keys`).
        self.admission_keys()?;
        if let Some(path) = &s.posts {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("server.posts", format!("{}: {e}", path.display()))
            })?;
            crate::domain::catalog::Catalog::from_toml(&text)
                .map_err(|e| ConfigError::new("server.posts", e))?;
        }
        check(
            s.drain_timeout_secs <= 3600,
            "server.drain_timeout_secs",
            "must be at most 3600",
        )?;
        check(
            (1..=3600).contains(&s.request_timeout_secs),
            "server.request_timeout_secs",
            "must be 1-3600",
        )?;
        check(
            s.http2_window_kib <= 65_536,
            "server.http2_window_kib",
            "must be 0 (h2's default) to 65536 KiB",
        )?;
        check(
            (1..=10_000).contains(&s.max_concurrent_streams),
            "server.max_concurrent_streams",
            "must be 1-10000",
        )?;
        check(
            s.max_connection_age_secs <= 604_800,
            "server.max_connection_age_secs",
            "must be 0 (off) to 604800 seconds",
        )?;
        check(
            (1..=3600).contains(&s.max_connection_age_grace_secs),
            "server.max_connection_age_grace_secs",
            "must be 1-3600 seconds",
        )?;
        check(
            s.http2_keepalive_interval_secs <= 86_400,
            "server.http2_keepalive_interval_secs",
            "must be 0 (off) to 86400 seconds",
        )?;
        check(
            (1..=600).contains(&s.http2_keepalive_timeout_secs),
            "server.http2_keepalive_timeout_secs",
            "must be 1-600 seconds",
        )?;

        let r = &self.redis;
        match self.redis_options() {
            // The connection code owns the schemes and the TLS files.
            Some(options) => crate::store::redis::conn::check(&options.conn)
                .map_err(|e| ConfigError::new(e.key, e.detail))?,
            None => {
                for (key, set) in [
                    ("redis.tls_ca_cert", r.tls_ca_cert.is_some()),
                    ("redis.tls_client_cert", r.tls_client_cert.is_some()),
                    ("redis.tls_client_key", r.tls_client_key.is_some()),
                ] {
                    check(!set, key, "needs redis.url")?;
                }
            }
        }
        crate::store::redis::keys::validate_tag(&r.tag)
            .map_err(|e| ConfigError::new("redis.tag", e))?;
        check(
            (1..=60_000).contains(&r.connect_timeout_ms),
            "redis.connect_timeout_ms",
            "must be 1-60000",
        )?;
        check(
            (1..=60_000).contains(&r.response_timeout_ms),
            "redis.response_timeout_ms",
            "must be 1-60000",
        )?;
        check(
            r.reconnect_retries <= 10,
            "redis.reconnect_retries",
            "must be 0-10",
        )?;
        check(r.wait_replicas <= 5, "redis.wait_replicas", "must be 0-5")?;
        check(
            (1..=10_000).contains(&r.wait_timeout_ms),
            "redis.wait_timeout_ms",
            "must be 1-10000",
        )?;

        if let Some(endpoint) = &self.telemetry.otlp_endpoint {
            check(
                endpoint.starts_with("http://") || endpoint.starts_with("https://"),
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL",
            )?;
        }
        if let Some(name) = &self.telemetry.service_name {
            check(
                !name.trim().is_empty(),
                "telemetry.service_name",
                "must not be empty (leave it out to use OTEL_SERVICE_NAME)",
            )?;
        }

        let m = &self.metrics;
        check(
            m.listen.is_none() || m.listen != Some(s.listen),
            "metrics.listen",
            "must differ from server.listen",
        )?;
        check(
            (1..=366).contains(&m.seats_days),
            "metrics.seats_days",
            "must be 1-366",
        )?;
        check(
            (1..=3600).contains(&m.refresh_secs),
            "metrics.refresh_secs",
            "must be 1-3600",
        )?;

        let t = &self.tls;
        check(
            t.cert.is_some() == t.key.is_some(),
            "tls.key",
            "tls.cert and tls.key go together",
        )?;
        check(
            t.client_ca.is_none() || t.cert.is_some(),
            "tls.client_ca",
            "needs tls.cert and tls.key",
        )?;
        check(
            t.client_ca.is_none() || !t.operator_names.is_empty(),
            "tls.operator_names",
            "needs at least one name with tls.client_ca: only certificates valid for these names are operators",
        )?;
        check(
            t.operator_names.is_empty() || t.client_ca.is_some(),
            "tls.operator_names",
            "needs tls.client_ca",
        )?;
        for name in &t.operator_names {
            check(
                crate::api::auth::OperatorNames::valid_name(name),
                "tls.operator_names",
                "each must be a DNS name without wildcards",
            )?;
        }
        readable("tls.cert", &t.cert)?;
        readable("tls.key", &t.key)?;
        readable("tls.client_ca", &t.client_ca)?;

        let l = &self.limits;
        for (key, value) in [
            ("limits.booking_per_minute", l.booking_per_minute),
            ("limits.booking_burst", l.booking_burst),
            ("limits.calendar_per_minute", l.calendar_per_minute),
            ("limits.calendar_burst", l.calendar_burst),
            ("limits.room_per_minute", l.room_per_minute),
            ("limits.room_burst", l.room_burst),
            (
                "limits.lookup_failures_per_hour",
                l.lookup_failures_per_hour,
            ),
            ("limits.lookup_failure_burst", l.lookup_failure_burst),
            (
                "limits.operator_failures_per_hour",
                l.operator_failures_per_hour,
            ),
            ("limits.operator_failure_burst", l.operator_failure_burst),
        ] {
            check(value >= 1, key, "must be at least 1")?;
        }
        check(
            (1..=10_000_000).contains(&l.max_clients),
            "limits.max_clients",
            "must be 1-10000000",
        )?;

        let w = &self.web;
        check(
            !w.enabled || w.grpc_web,
            "web.enabled",
            "the pages call slotd over gRPC-Web: set web.grpc_web = true too (or use --web)",
        )?;
        check(
            w.allowed_origins.is_empty() || w.grpc_web,
            "web.allowed_origins",
            "needs web.grpc_web = true",
        )?;
        check(
            w.allowed_origins.len() <= 64,
            "web.allowed_origins",
            "at most 64 origins",
        )?;
        for (i, origin) in w.allowed_origins.iter().enumerate() {
            crate::web::check_origin(origin)
                .map_err(|e| ConfigError::new(format!("web.allowed_origins[{i}]"), e))?;
        }
        Ok(())
    }

    /// The front door's settings for `ServeOptions::web`.
    pub fn web(&self) -> crate::web::WebOptions {
        crate::web::WebOptions {
            grpc_web: self.web.grpc_web,
            allowed_origins: self.web.allowed_origins.clone(),
            pages: self.web.enabled,
        }
    }

    /// The keys `slotd serve` runs with: as `admission_keys`, and a key is required with Redis.
    /// None only for the embedded store (it then uses a random per-process key: its state dies
    /// with the process anyway). With Redis, tickets, tokens and waitlist entries outlive a
    /// process, so their key must too.
    pub fn serving_admission_keys(
        &self,
    ) -> Result<Option<crate::domain::admission::AdmissionKeys>, ConfigError> {
        let keys = self.admission_keys()?;
        check(
            keys.is_some() || self.redis.url.is_none(),
            "server.admission_key",
            "required with redis.url (--admission-key / SLOTD_ADMISSION_KEY, at least 32 \
             characters, e.g. `openssl rand -hex 32`): tickets, admission tokens and waitlist \
             entry secrets live in Redis across restarts, so a random per-process key would \
             invalidate them all at each restart",
        )?;
        Ok(keys)
    }

    /// The waiting-room keys: `server.admission_key` signs, `server.previous_admission_keys`
    /// still verify; None when no key is configured.
    pub fn admission_keys(
        &self,
    ) -> Result<Option<crate::domain::admission::AdmissionKeys>, ConfigError> {
        use crate::domain::admission::{AdmissionKeys, MAX_PREVIOUS_KEYS};
        let s = &self.server;
        let Some(key) = &s.admission_key else {
            check(
                s.previous_admission_keys.is_empty(),
                "server.admission_key",
                "server.previous_admission_keys only verify: set the key that signs too",
            )?;
            return Ok(None);
        };
        check(
            s.previous_admission_keys.len() <= MAX_PREVIOUS_KEYS,
            "server.previous_admission_keys",
            format!("at most {MAX_PREVIOUS_KEYS} keys"),
        )?;
        for (i, previous) in s.previous_admission_keys.iter().enumerate() {
            check(
                previous != key,
                &format!("server.previous_admission_keys[{i}]"),
                "is the current server.admission_key",
            )?;
        }
        AdmissionKeys::with_previous(key, &s.previous_admission_keys)
            .map(Some)
            .map_err(|e| match e.index {
                None => ConfigError::new("server.admission_key", e),
                Some(i) => ConfigError::new(format!("server.previous_admission_keys[{i}]"), e),
            })
    }

    /// The Redis store's options, when `redis.url` is set.
    pub fn redis_options(&self) -> Option<crate::store::redis::RedisOptions> {
        let url = self.redis.url.clone()?;
        Some(crate::store::redis::RedisOptions {
            conn: crate::store::redis::ConnOptions {
                url,
                connect_timeout: Duration::from_millis(self.redis.connect_timeout_ms),
                response_timeout: Duration::from_millis(self.redis.response_timeout_ms),
                reconnect_retries: usize::try_from(self.redis.reconnect_retries).unwrap_or(10),
                wait_replicas: self.redis.wait_replicas,
                wait_timeout: Duration::from_millis(self.redis.wait_timeout_ms),
                tls: crate::store::redis::conn::TlsFiles {
                    ca_cert: self.redis.tls_ca_cert.clone(),
                    client_cert: self.redis.tls_client_cert.clone(),
                    client_key: self.redis.tls_client_key.clone(),
                },
            },
            tag: self.redis.tag.clone(),
        })
    }

    /// The effective configuration as TOML, secrets replaced by `<redacted>`.
    pub fn redacted_toml(&self) -> String {
        let mut copy = self.clone();
        let hide = |v: &mut Option<String>| {
            if v.is_some() {
                *v = Some("<redacted>".into());
            }
        };
        hide(&mut copy.server.admin_token);
        hide(&mut copy.server.admission_key);
        for key in &mut copy.server.previous_admission_keys {
            *key = "<redacted>".into();
        }
        if let Some(url) = &copy.redis.url {
            // Keep scheme and hosts, drop a password (redis://:secret@host).
            copy.redis.url = Some(crate::store::redis::conn::redacted_url(url));
        }
        toml::to_string(&copy).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn redis_tls_files_come_from_file_env_and_flags_and_are_checked_by_key() {
        let f = file("[redis]\nurl = \"rediss://cache:6380\"\ntls_ca_cert = \"/file/ca.pem\"\n");
        let mut s = layered(
            Some(f.path()),
            env(&[("SLOTD__REDIS__TLS_CLIENT_CERT", "/env/c.pem")]),
        )
        .expect("layers");
        assert_eq!(s.redis.tls_ca_cert, Some(PathBuf::from("/file/ca.pem")));
        assert_eq!(s.redis.tls_client_cert, Some(PathBuf::from("/env/c.pem")));
        ServeArgs {
            redis_ca_cert: Some("/flag/ca.pem".into()),
            redis_client_key: Some("/flag/c.key".into()),
            ..ServeArgs::default()
        }
        .apply(&mut s);
        assert_eq!(s.redis.tls_ca_cert, Some(PathBuf::from("/flag/ca.pem")));
        let conn = s.redis_options().expect("redis on").conn;
        assert_eq!(conn.tls.client_key, Some(PathBuf::from("/flag/c.key")));
        // The files do not exist: the first one checked is named.
        assert_eq!(s.validate().expect_err("missing").key, "redis.tls_ca_cert");
        s.redis.url = None;
        assert_eq!(
            s.validate().expect_err("no url").key,
            "redis.tls_ca_cert",
            "TLS files without redis.url"
        );
        let mut s = Settings::default();
        s.redis.url = Some("redis-cluster://10.0.0.1:7000,10.0.0.2:7000".into());
        s.validate().expect("cluster url");
        s.redis.url = Some("redis+sentinel://10.0.0.1:26379/slotd".into());
        s.validate().expect("sentinel url");
        s.redis.url = Some("memcached://x".into());
        let e = s.validate().expect_err("scheme");
        assert_eq!(e.key, "redis.url");
        assert!(e.detail.contains("redis-cluster://"), "{e}");
    }

    #[test]
    fn defaults_are_valid_and_an_empty_file_changes_nothing() {
        let f = file("");
        let s = layered(Some(f.path()), env(&[])).expect("empty file");
        assert_eq!(s, Settings::default());
        s.validate().expect("defaults valid");
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_flags() {
        let f = file(
            "[redis]\nurl = \"redis://file:6379\"\ntag = \"fromfile\"\nconnect_timeout_ms = 500\n\
             [limits]\nbooking_burst = 3\n",
        );
        let mut s = layered(
            Some(f.path()),
            env(&[
                ("SLOTD__REDIS__TAG", "fromenv"),
                ("SLOTD__LIMITS__TRUSTED_PROXIES", "10.0.0.1, 10.0.0.2"),
                ("SLOTD__SERVER__DEMO", "true"),
                ("SLOTD_REDIS_TAG", "single-underscore-is-a-flag-twin"),
                ("OTHER", "x"),
            ]),
        )
        .expect("layers");
        assert_eq!(s.redis.url.as_deref(), Some("redis://file:6379"));
        assert_eq!(s.redis.tag, "fromenv");
        assert_eq!(s.redis.connect_timeout_ms, 500);
        assert_eq!(s.redis.response_timeout_ms, 1000);
        assert_eq!(s.limits.booking_burst, 3);
        assert_eq!(s.limits.trusted_proxies.len(), 2);
        assert!(s.server.demo);
        // With Redis `serve` requires the admission key (it may come from a flag twin, so the
        // file alone is valid).
        s.validate().expect("valid without the key");
        let missing = s.serving_admission_keys().expect_err("no admission key");
        assert_eq!(missing.key, "server.admission_key");
        let flags = ServeArgs {
            redis_tag: Some("fromflag".into()),
            admission_key: Some("an-admission-key-of-32-characters-at-least".into()),
            ..ServeArgs::default()
        };
        flags.apply(&mut s);
        assert_eq!(s.redis.tag, "fromflag");
        s.validate().expect("valid");
    }

    #[test]
    fn a_bad_value_fails_naming_its_key() {
        let f = file("[redis]\nconnect_timeout_ms = \"soon\"\n");
        let e = layered(Some(f.path()), env(&[])).expect_err("bad type");
        assert_eq!(e.key, "redis.connect_timeout_ms", "{e}");

        let e = layered(None, env(&[("SLOTD__REDIS__RESPONSE_TIMEOUT_MS", "x")])).expect_err("env");
        assert_eq!(e.key, "SLOTD__REDIS__RESPONSE_TIMEOUT_MS", "{e}");

        let f = file("[redis]\ntagg = \"typo\"\n");
        let e = layered(Some(f.path()), env(&[])).expect_err("unknown key");
        assert!(e.to_string().contains("tagg"), "{e}");

        let s = layered(None, env(&[("SLOTD__REDIS__TAG", "bad tag!")])).expect("parses");
        assert_eq!(s.validate().expect_err("invalid tag").key, "redis.tag");

        let s = layered(None, env(&[("SLOTD__SERVER__ADMIN_TOKEN", "short")])).expect("parses");
        assert_eq!(
            s.validate().expect_err("weak token").key,
            "server.admin_token"
        );

        let s = layered(None, env(&[("SLOTD__TLS__CERT", "/nonexistent.pem")])).expect("parses");
        assert_eq!(s.validate().expect_err("cert without key").key, "tls.key");

        let s = layered(None, env(&[("SLOTD__CALENDAR__FEED_INTERVAL_MS", "0")])).expect("parses");
        assert_eq!(
            s.validate().expect_err("no feed").key,
            "calendar.feed_interval_ms"
        );
        let s = layered(
            None,
            env(&[("SLOTD__CALENDAR__CACHE_MAX_AGE_MS", "600000")]),
        )
        .expect("parses");
        assert_eq!(
            s.validate().expect_err("ten minutes stale").key,
            "calendar.cache_max_age_ms"
        );
        for (var, value, key) in [
            (
                "SLOTD__SERVER__MAX_CONNECTION_AGE_GRACE_SECS",
                "0",
                "server.max_connection_age_grace_secs",
            ),
            (
                "SLOTD__SERVER__MAX_CONNECTION_AGE_SECS",
                "99999999",
                "server.max_connection_age_secs",
            ),
            (
                "SLOTD__SERVER__HTTP2_KEEPALIVE_TIMEOUT_SECS",
                "0",
                "server.http2_keepalive_timeout_secs",
            ),
            (
                "SLOTD__SERVER__HTTP2_KEEPALIVE_INTERVAL_SECS",
                "99999999",
                "server.http2_keepalive_interval_secs",
            ),
            (
                "SLOTD__TELEMETRY__SERVICE_NAME",
                " ",
                "telemetry.service_name",
            ),
        ] {
            let s = layered(None, env(&[(var, value)])).expect("parses");
            assert_eq!(s.validate().expect_err(var).key, key);
        }
        let s = layered(
            None,
            env(&[
                ("SLOTD__SERVER__MAX_CONNECTION_AGE_SECS", "300"),
                ("SLOTD__SERVER__HTTP2_KEEPALIVE_INTERVAL_SECS", "60"),
            ]),
        )
        .expect("parses");
        s.validate().expect("age and keepalive are valid");
        // 0 turns the cache off, and is valid.
        let s = layered(None, env(&[("SLOTD__CALENDAR__CACHE_MAX_AGE_MS", "0")])).expect("parses");
        s.validate().expect("no cache is valid");
        assert!(s.calendar().cache_max_age.is_zero());
        for (var, value, key) in [
            (
                "SLOTD__WAITING_ROOM__WATCH_HEARTBEAT_SECS",
                "0",
                "waiting_room.watch_heartbeat_secs",
            ),
            (
                "SLOTD__WAITING_ROOM__WATCH_POSITION_STEP_PERCENT",
                "101",
                "waiting_room.watch_position_step_percent",
            ),
            (
                "SLOTD__WAITING_ROOM__WATCH_POSITION_INTERVAL_MS",
                "60001",
                "waiting_room.watch_position_interval_ms",
            ),
            (
                "SLOTD__WAITING_ROOM__MAX_WATCHERS_PER_TICKET",
                "0",
                "waiting_room.max_watchers_per_ticket",
            ),
        ] {
            let s = layered(None, env(&[(var, value)])).expect("parses");
            assert_eq!(s.validate().expect_err(var).key, key);
        }
        let s = layered(
            None,
            env(&[("SLOTD__WAITING_ROOM__WATCH_POSITION_STEP_PERCENT", "0")]),
        )
        .expect("parses");
        s.validate().expect("every change is valid");
        assert_eq!(s.watch().position_step_percent, 0);

        let s = layered(None, env(&[("SLOTD__STREAMS__MAX_PER_CLIENT", "0")])).expect("parses");
        assert_eq!(
            s.validate().expect_err("no streams").key,
            "streams.max_per_client"
        );
        let s = layered(None, env(&[("SLOTD__STREAMS__MAX_LIFETIME_SECS", "1")])).expect("parses");
        assert_eq!(
            s.validate().expect_err("a second").key,
            "streams.max_lifetime_secs"
        );
        let s = layered(
            None,
            env(&[
                ("SLOTD__STREAMS__MAX_PER_CLIENT", "4"),
                ("SLOTD__STREAMS__MAX_LIFETIME_SECS", "600"),
            ]),
        )
        .expect("parses");
        s.validate().expect("valid stream bounds");
        for bad in ["0", "3651"] {
            let r = layered(None, env(&[("SLOTD__BOOKING__RETENTION_DAYS", bad)])).expect("parses");
            assert_eq!(
                r.validate().expect_err("retention out of range").key,
                "booking.retention_days"
            );
        }
        let r = layered(None, env(&[("SLOTD__BOOKING__RETENTION_DAYS", "30")])).expect("parses");
        r.validate().expect("valid retention");
        assert_eq!(r.retention(), chrono::Duration::days(30));
        assert_eq!(s.streams().max_per_client, 4);
        assert_eq!(s.streams().max_lifetime, Duration::from_secs(600));
    }

    #[test]
    fn the_redacted_view_hides_secrets() {
        let mut s = Settings::default();
        s.server.admin_token = Some("secret-token-0123456789".into());
        s.redis.url = Some("redis://:pw@10.0.0.5:6379/0".into());
        let text = s.redacted_toml();
        assert!(!text.contains("secret-token"), "{text}");
        assert!(!text.contains(":pw@"), "{text}");
        assert!(text.contains("10.0.0.5:6379/0"), "{text}");
    }

    #[test]
    fn web_keys_are_off_by_default_and_checked_by_key() {
        let s = layered(None, env(&[])).expect("defaults");
        assert_eq!(s.web, WebSettings::default());
        assert!(!s.web().grpc_web && !s.web().pages);

        let f = file("[web]\ngrpc_web = true\nallowed_origins = [\"https://book.example.cn\", \"http://127.0.0.1:8080\"]\nenabled = true\n");
        let s = layered(Some(f.path()), env(&[])).expect("parses");
        s.validate().expect("valid");
        assert_eq!(s.web().allowed_origins.len(), 2);
        assert!(s.web().pages);

        let s = layered(
            None,
            env(&[
                ("SLOTD__WEB__GRPC_WEB", "true"),
                (
                    "SLOTD__WEB__ALLOWED_ORIGINS",
                    "https://a.example, https://b.example",
                ),
            ]),
        )
        .expect("parses");
        s.validate().expect("valid");
        assert_eq!(
            s.web.allowed_origins,
            ["https://a.example", "https://b.example"]
        );

        for (vars, key, says) in [
            (
                vec![("SLOTD__WEB__ENABLED", "true")],
                "web.enabled",
                "web.grpc_web",
            ),
            (
                vec![("SLOTD__WEB__ALLOWED_ORIGINS", "https://a.example")],
                "web.allowed_origins",
                "web.grpc_web",
            ),
            (
                vec![
                    ("SLOTD__WEB__GRPC_WEB", "true"),
                    (
                        "SLOTD__WEB__ALLOWED_ORIGINS",
                        "https://a.example,https://b.example/",
                    ),
                ],
                "web.allowed_origins[1]",
                "no path",
            ),
            (
                vec![
                    ("SLOTD__WEB__GRPC_WEB", "true"),
                    ("SLOTD__WEB__ALLOWED_ORIGINS", "*"),
                ],
                "web.allowed_origins[0]",
                "https://",
            ),
        ] {
            let s = layered(None, env(&vars)).expect("parses");
            let e = s.validate().expect_err("invalid");
            assert_eq!(e.key, key, "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }

        let mut s = Settings::default();
        let args = ServeArgs {
            web: true,
            ..ServeArgs::default()
        };
        args.apply(&mut s);
        s.validate().expect("--web is valid alone");
        assert!(s.web.enabled && s.web.grpc_web);
    }
}
