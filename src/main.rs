use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use slotd::api::auth::OperatorAuth;
use slotd::app::room::Room;
use slotd::app::Slotd;
use slotd::config::{Cli, Command, ConfigCommand, RedisCommand, Settings};
use slotd::domain::admission::AdmissionKeys;
use slotd::domain::catalog::Catalog;
use slotd::domain::clock::SystemClock;
use slotd::server::{serve, MetricsOptions, ServeOptions, TlsOptions};
use slotd::store::memory::room::MemoryWaitingRoom;
use slotd::store::memory::MemoryStore;
use slotd::store::redis::room::RedisWaitingRoom;
use slotd::store::redis::RedisStore;
use slotd::store::room::WaitingRoomStore;
use slotd::store::Inventory;

/// mimalloc instead of the system allocator: every RPC allocates (protobuf strings, Redis
/// replies, futures), and on the booking path it measured faster (benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often at most an idle runtime thread hands its freed memory back (`collect_when_idle`).
const COLLECT_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    /// When this thread last ran `mi_collect`.
    static COLLECTED_AT: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Whether a thread that last collected at `last` collects again at `now`.
fn collect_due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= COLLECT_EVERY)
}

/// Runs when a runtime thread goes idle: at most once per `COLLECT_EVERY`, mimalloc frees this
/// thread's empty pages and returns them to the OS. A block freed by another thread (a future
/// polled to the end on another worker, a crowd's join burst answered) only goes back to its
/// page's own thread, which otherwise collects every 10,000 slow-path allocations: an idle
/// worker could keep a burst's memory for good (benches/README.md §12).
fn collect_when_idle() {
    let now = Instant::now();
    if COLLECTED_AT.with(|at| collect_due(at.get(), now)) {
        COLLECTED_AT.with(|at| at.set(Some(now)));
        // SAFETY: `mi_collect` takes no pointer and only touches the calling thread's mimalloc
        // heap (and mimalloc's own thread-safe arenas); the global allocator is mimalloc.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

fn main() -> ExitCode {
    // What #[tokio::main] builds, plus the idle hook.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_when_idle)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("slotd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli_main())
}

async fn cli_main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            // Fail fast, before anything starts, naming the bad key.
            let settings = match slotd::config::load(&args) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("slotd: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let telemetry = match slotd::telemetry::init(&settings.telemetry) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("slotd: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let code = match run(settings).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "slotd stopped");
                    eprintln!("slotd: {e}");
                    ExitCode::FAILURE
                }
            };
            telemetry.shutdown().await;
            code
        }
        Command::Health(args) => {
            let verdict = slotd::health::check(&args).await;
            println!("{verdict}");
            if verdict.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Redis(RedisCommand::PruneFunctions(args)) => match prune_functions(&args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("slotd: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Redis(RedisCommand::Migrate(args)) => match migrate(&args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("slotd: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Redis(RedisCommand::Library { cluster }) => {
            use std::io::Write;
            let source = slotd::store::redis::functions::Library::get(cluster).source();
            // A closed pipe (`| head`) is the reader's choice, not a failure.
            let _ = std::io::stdout().write_all(source.as_bytes());
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { file }) => {
            match slotd::config::layered(Some(&file), std::env::vars())
                .and_then(|s| s.validate().map(|()| s))
            {
                Ok(settings) => {
                    println!("# {}: ok", file.display());
                    print!("{}", settings.redacted_toml());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("slotd: {}: {e}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `slotd redis prune-functions`: one line per slotd library on the Redis, kept or deleted.
async fn prune_functions(args: &slotd::config::RedisArgs) -> Result<(), String> {
    let options = args.redis_options().map_err(|e| e.to_string())?;
    let conn = slotd::store::redis::conn::Conn::open(&options.conn).map_err(|e| e.to_string())?;
    let pruned = slotd::store::redis::functions::prune(&conn, args.dry_run)
        .await
        .map_err(|e| e.to_string())?;
    for (name, why) in &pruned.kept {
        println!("kept {name} ({why})");
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for name in &pruned.deleted {
        println!("{verb} {name}");
    }
    Ok(())
}

/// `slotd redis migrate`: moves layout-1 data to this build's key layout and marks it.
async fn migrate(args: &slotd::config::RedisArgs) -> Result<(), String> {
    if args.dry_run {
        return Err("slotd redis migrate: --dry-run is not supported".into());
    }
    let options = args.redis_options().map_err(|e| e.to_string())?;
    let store = RedisStore::connect(&options).map_err(|e| format!("--redis-url: {e}"))?;
    let (deleted, moved) = store.migrate_layout().await.map_err(|e| e.to_string())?;
    println!(
        "migrated to key layout {}: {deleted} layout-1 manifest keys deleted, {moved} receipt claims moved onto their passport records",
        slotd::store::redis::layout::LAYOUT
    );
    Ok(())
}

/// The start-up layout check: Ok when this build may serve the deployment's data.
async fn check_layout(store: &RedisStore) -> Result<(), String> {
    use slotd::store::redis::layout::LayoutCheck;
    match store.check_layout().await.map_err(|e| e.to_string())? {
        LayoutCheck::Current => Ok(()),
        LayoutCheck::Refused { advice, .. } => Err(advice),
    }
}

fn read_pem(what: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

async fn run(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let args = &settings.server;
    let catalog = match &args.posts {
        Some(path) => Catalog::from_toml(
            &std::fs::read_to_string(path).map_err(|e| format!("posts {}: {e}", path.display()))?,
        )?,
        None => Catalog::builtin()?,
    };
    let token = match (&args.admin_token, args.demo) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => {
            let t = OperatorAuth::generate_token();
            println!("demo admin token: {t}");
            Some(t)
        }
        (None, false) => {
            tracing::warn!("no admin token configured: AdminService refuses every call");
            None
        }
    };
    let auth = OperatorAuth::new(token.as_deref())?;

    let store: Arc<dyn Inventory> = match settings.redis_options() {
        Some(options) => {
            let store = RedisStore::connect(&options)
                .map_err(|e| format!("--redis-url: {e}"))?
                .with_offer_ttl(settings.offer_ttl())
                .with_retention(settings.retention());
            // A certificate Redis or slotd refuses is a configuration error: fail fast.
            if let Some(e) = store.tls_refusal().await {
                return Err(format!("config key `{}`: {}", e.key, e.detail).into());
            }
            // Not fatal: slotd serves with health NOT_SERVING until Redis answers.
            match store.ping().await {
                Ok(()) => {
                    tracing::info!(tag = %options.tag, "redis store answers");
                    // Data of another key layout is never served: refuse to start.
                    check_layout(&store).await?;
                }
                Err(e) => tracing::warn!(error = %e, "redis store does not answer yet"),
            }
            let store = Arc::new(store);
            if store.ping().await.is_err() {
                // Checked once Redis answers; data of another layout stops this process.
                let store = store.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        match check_layout(&store).await {
                            Ok(()) => break,
                            Err(e) if store.ping().await.is_ok() => {
                                tracing::error!(error = %e, "slotd stopped");
                                eprintln!("slotd: {e}");
                                std::process::exit(1);
                            }
                            Err(_) => {}
                        }
                    }
                });
            }
            store
        }
        None => {
            tracing::warn!("no --redis-url: using the embedded in-memory store; state is per process and lost on exit");
            Arc::new(
                MemoryStore::new()
                    .with_offer_ttl(settings.offer_ttl())
                    .with_retention(settings.retention()),
            )
        }
    };
    // Validated already: with Redis a missing key stopped slotd at start.
    let keys = match settings.serving_admission_keys()? {
        Some(keys) => keys,
        None => {
            tracing::warn!("no admission key configured: the embedded store uses a random one per process; replicas behind one address must share --admission-key");
            AdmissionKeys::random()
        }
    };
    let room_store: Arc<dyn WaitingRoomStore> = match settings.redis_options() {
        Some(options) => {
            Arc::new(RedisWaitingRoom::connect(&options).map_err(|e| format!("--redis-url: {e}"))?)
        }
        None => Arc::new(MemoryWaitingRoom::new()),
    };
    let clock = Arc::new(SystemClock);
    let room = Room::new(keys, room_store, clock.clone()).with_watch_options(settings.watch());
    let app = Slotd::new(Arc::new(catalog), store, clock)
        .with_lifecycle(settings.lifecycle())
        .with_calendar(settings.calendar());

    if args.demo {
        let (slots, receipts) = slotd::demo::seed(&app).await?;
        let (passport, receipt) = slotd::demo::demo_applicant(1);
        tracing::info!(slots, receipts, "demo data seeded");
        println!("demo: {slots} slots opened, {receipts} receipts registered (e.g. passport {passport} with receipt {receipt})");
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("listen {}: {e}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "slotd listening");
    let tls = match (&settings.tls.cert, &settings.tls.key) {
        (Some(cert), Some(key)) => Some(TlsOptions {
            cert_pem: read_pem("tls.cert", cert)?,
            key_pem: read_pem("tls.key", key)?,
            client_ca_pem: match &settings.tls.client_ca {
                Some(ca) => Some(read_pem("tls.client_ca", ca)?),
                None => None,
            },
            operator_names: settings.tls.operator_names.clone(),
        }),
        _ => None,
    };
    let options = ServeOptions {
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        max_concurrent_streams: args.max_concurrent_streams,
        http2_window_kib: args.http2_window_kib,
        http2_adaptive_window: args.http2_adaptive_window,
        limits: settings.limits.clone(),
        streams: settings.streams(),
        max_connection_age: (args.max_connection_age_secs > 0)
            .then(|| Duration::from_secs(args.max_connection_age_secs)),
        max_connection_age_grace: Duration::from_secs(args.max_connection_age_grace_secs),
        http2_keepalive_interval: (args.http2_keepalive_interval_secs > 0)
            .then(|| Duration::from_secs(args.http2_keepalive_interval_secs)),
        http2_keepalive_timeout: Duration::from_secs(args.http2_keepalive_timeout_secs),
        tls,
        metrics: settings.metrics.listen.map(|listen| MetricsOptions {
            listen,
            seats_days: settings.metrics.seats_days,
            refresh: Duration::from_secs(settings.metrics.refresh_secs),
        }),
        web: settings.web(),
        // Expired holds return their seats even on dates nobody touches.
        sweep_interval: Some(Duration::from_millis(settings.booking.sweep_interval_ms)),
        ..ServeOptions::default()
    };
    serve(listener, app, room, auth, options, shutdown_signal()).await?;
    tracing::info!("slotd stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_thread_collects_at_most_once_per_interval() {
        let start = Instant::now();
        assert!(collect_due(None, start), "the first idle moment collects");
        assert!(!collect_due(Some(start), start));
        assert!(!collect_due(Some(start), start + COLLECT_EVERY / 2));
        assert!(collect_due(Some(start), start + COLLECT_EVERY));
        // A clock read before `last` (another thread's Instant) is no reason to collect.
        assert!(!collect_due(Some(start + COLLECT_EVERY), start));
    }
}
