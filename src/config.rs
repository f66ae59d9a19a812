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

    /// Seed the next 60 days of slots and 100 demo receipts.
    #[arg(long, env = "SLOTD_DEMO")]
    pub demo: bool,

    /// Redis URL (redis://host:port/db). Without it slotd keeps state in process memory.
    #[arg(long, env = "SLOTD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

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
