use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use slotd::app::Slotd;
use slotd::auth::admission::AdmissionKeys;
use slotd::auth::OperatorAuth;
use slotd::config::{Cli, Command, ServeArgs};
use slotd::domain::catalog::Catalog;
use slotd::domain::clock::SystemClock;
use slotd::room::Room;
use slotd::server::{serve, ServeOptions};
use slotd::store::memory::MemoryStore;
use slotd::store::memory_room::MemoryWaitingRoom;
use slotd::store::redis::room::RedisWaitingRoom;
use slotd::store::redis::RedisStore;
use slotd::store::room::WaitingRoom;
use slotd::store::Inventory;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            slotd::telemetry::init(args.log_format);
            match run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "slotd stopped");
                    eprintln!("slotd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
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

    let store: Arc<dyn Inventory> = match args.redis_options() {
        Some(options) => {
            let store = RedisStore::connect(&options).map_err(|e| format!("--redis-url: {e}"))?;
            // Not fatal: slotd serves with health NOT_SERVING until Redis answers.
            match store.ping().await {
                Ok(()) => tracing::info!(tag = %options.tag, "redis store answers"),
                Err(e) => tracing::warn!(error = %e, "redis store does not answer yet"),
            }
            Arc::new(store)
        }
        None => {
            tracing::warn!("no --redis-url: using the embedded in-memory store; state is per process and lost on exit");
            Arc::new(MemoryStore::new())
        }
    };
    let keys = match &args.admission_key {
        Some(key) => AdmissionKeys::new(key)?,
        None => {
            tracing::warn!("no admission key configured: using a random one; replicas behind one address must share --admission-key");
            AdmissionKeys::random()
        }
    };
    let room_store: Arc<dyn WaitingRoom> = match args.redis_options() {
        Some(options) => {
            Arc::new(RedisWaitingRoom::connect(&options).map_err(|e| format!("--redis-url: {e}"))?)
        }
        None => Arc::new(MemoryWaitingRoom::new()),
    };
    let clock = Arc::new(SystemClock);
    let room = Room::new(keys, room_store, clock.clone());
    let app = Slotd::new(Arc::new(catalog), store, clock);

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
    let options = ServeOptions {
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
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
