//! Command line and environment: every flag of `slotd serve` can also be set as `SLOTD_<NAME>`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SLOTD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Operator token for AdminService (`authorization: Bearer <token>`), at least 16 characters.
    /// Without it operator RPCs are refused (with --demo a random one is generated and printed).
    #[arg(long, env = "SLOTD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Key that signs waiting-room admission tokens and ticket secrets (at least 32 characters).
    /// Every replica behind one address needs the same key. Default: random per process.
    #[arg(long, env = "SLOTD_ADMISSION_KEY", hide_env_values = true)]
    pub admission_key: Option<String>,

    /// Seed the next 60 days of slots and 100 demo receipts.
    #[arg(long, env = "SLOTD_DEMO")]
    pub demo: bool,

    /// Redis URL (redis://host:port/db). Without it slotd keeps state in process memory.
    #[arg(long, env = "SLOTD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Hash tag every Redis key carries (`slotd:{<tag>}:...`), one per deployment sharing a
    /// Redis: 1-32 of A-Z, a-z, 0-9, '_' and '-'. See docs/redis-keys.md.
    #[arg(long, env = "SLOTD_REDIS_TAG", default_value = "slotd", value_parser = parse_redis_tag)]
    pub redis_tag: String,

    /// Milliseconds to establish a Redis connection before a call fails UNAVAILABLE.
    #[arg(long, env = "SLOTD_REDIS_CONNECT_TIMEOUT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub redis_connect_timeout_ms: u64,

    /// Milliseconds to wait for one Redis answer before a call fails UNAVAILABLE.
    #[arg(long, env = "SLOTD_REDIS_RESPONSE_TIMEOUT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub redis_response_timeout_ms: u64,

    /// Reconnection attempts (with short backoff) after the Redis connection is lost, before a
    /// call gives up; the next call tries again.
    #[arg(long, env = "SLOTD_REDIS_RECONNECT_RETRIES", default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=10))]
    pub redis_reconnect_retries: u64,

    /// Posts catalog (TOML). Default: the built-in copy of deploy/posts.toml.
    #[arg(long, env = "SLOTD_POSTS")]
    pub posts: Option<PathBuf>,

    /// Log format.
    #[arg(long, env = "SLOTD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Seconds to let in-flight calls finish after SIGTERM/SIGINT.
    #[arg(long, env = "SLOTD_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,
}

fn parse_redis_tag(text: &str) -> Result<String, String> {
    crate::store::redis::keys::validate_tag(text).map(|()| text.to_owned())
}

impl ServeArgs {
    /// The Redis store's options, when `--redis-url` is set.
    pub fn redis_options(&self) -> Option<crate::store::redis::RedisOptions> {
        use std::time::Duration;
        let url = self.redis_url.clone()?;
        Some(crate::store::redis::RedisOptions {
            conn: crate::store::redis::ConnOptions {
                url,
                connect_timeout: Duration::from_millis(self.redis_connect_timeout_ms),
                response_timeout: Duration::from_millis(self.redis_response_timeout_ms),
                reconnect_retries: usize::try_from(self.redis_reconnect_retries).unwrap_or(10),
            },
            tag: self.redis_tag.clone(),
        })
    }
}
