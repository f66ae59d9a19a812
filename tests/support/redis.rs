//! Redis for tests, two ways:
//! - `shared()`: one `redis-server` per test binary, started lazily on first use, on a Unix
//!   socket in its own temp dir, and `tenant()`: a fresh `redis.tag` on it for each test, so a
//!   test never sees another's keys (every slotd key carries its tag). It goes away with the
//!   test process (`reaped`).
//! - `RedisServer::start()`: a throwaway server of one test's own, for tests that stop, pause,
//!   restart or inspect the whole server. AOF with `appendfsync always` (as deploy/redis.conf),
//!   killed on drop; `restart()` keeps the socket and the dir, so the AOF survives like a
//!   crashed-and-restarted production Redis.
//!
//! Both listen on a Unix socket (no port to race for); `start_tcp()` is for the one thing that
//! needs TCP (`REPLICAOF host port`). Without `redis-server` on PATH these tests fail loudly (CI
//! installs it); they never pass silently.

use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use slotd::store::redis::room::RedisWaitingRoom;
use slotd::store::redis::{ConnOptions, RedisOptions, RedisStore};

/// Where a test Redis listens.
#[derive(Clone, Debug)]
enum Listen {
    Socket(PathBuf),
    Port(u16),
}

/// A response timeout generous enough that a slow shared CI machine does not turn a queued
/// answer into UNAVAILABLE (tests about timeouts set their own).
pub const PATIENT: Duration = Duration::from_secs(20);

/// Arguments of every test `redis-server` that may have replicas: a replica's full sync starts
/// at once instead of after Redis 7's default 5 s wait for more replicas to share the diskless
/// transfer (which every cluster start, failover and REPLICAOF would otherwise pay).
pub const PROMPT_SYNC: [&str; 2] = ["--repl-diskless-sync-delay", "0"];

/// A `redis.tag` no other test of this process has (tags are per process, servers per binary).
pub fn fresh_tag() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Starts `command` so that it dies with this test process: a shell runs it in the background
/// and kills it when its stdin (a pipe this process holds open until it exits, however it
/// exits) reaches end of file. For servers shared by a whole test binary, which no `Drop` ends.
pub fn reaped(command: &mut Command) -> (Child, ChildStdin) {
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#""$@" </dev/null & pid=$!; read -r _; kill -9 "$pid" 2>/dev/null; wait"#)
        .arg("sh")
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start sh ({e})"));
    let stdin = child.stdin.take().expect("piped stdin");
    (child, stdin)
}

/// The output of `cli` (a `redis-cli` command with its connection arguments) run against
/// 127.0.0.1:`port` with `args` ("" when it fails).
pub fn cli_query(mut cli: Command, port: u16, args: &[&str]) -> String {
    cli.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Polls `ok` (blocking) until it holds, up to `secs` seconds, or fails naming `what`.
pub fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    if !poll_until(secs, &mut ok) {
        panic!("{what} within {secs} s");
    }
}

/// Polls `ok` (blocking) every 50 ms for up to `secs` seconds; whether it came to hold.
pub fn poll_until(secs: u64, ok: &mut impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The Redis of this test binary (see the module comment), started on first use.
pub fn shared() -> &'static SharedRedis {
    static SHARED: OnceLock<SharedRedis> = OnceLock::new();
    SHARED.get_or_init(SharedRedis::start)
}

/// A fresh key space on the shared Redis: its own tag.
pub fn tenant() -> Tenant {
    Tenant {
        url: shared().url(),
        tag: fresh_tag(),
        timeout: PATIENT,
    }
}

pub struct SharedRedis {
    dir: TempDir,
    _reaper: Mutex<(Child, ChildStdin)>,
}

impl SharedRedis {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the shared redis");
        let listen = Listen::Socket(dir.path().join("redis.sock"));
        let mut command = redis_command(&listen, dir.path());
        // Nothing of it outlives the binary: no persistence to pay for.
        command.args(["--appendonly", "no"]);
        let reaper = reaped(&mut command);
        wait_ready(&url_of(&listen));
        Self {
            dir,
            _reaper: Mutex::new(reaper),
        }
    }

    pub fn url(&self) -> String {
        url_of(&Listen::Socket(self.dir.path().join("redis.sock")))
    }
}

/// One test's key space on the shared Redis (or on a shared cluster): a URL and a tag.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub url: String,
    pub tag: String,
    /// The response timeout of the stores and rooms it makes.
    pub timeout: Duration,
}

impl Tenant {
    pub fn options(&self) -> RedisOptions {
        RedisOptions {
            conn: ConnOptions {
                url: self.url.clone(),
                response_timeout: self.timeout,
                ..ConnOptions::default()
            },
            tag: self.tag.clone(),
        }
    }

    /// A store (its own connection) in this key space.
    pub fn store(&self) -> Arc<RedisStore> {
        Arc::new(RedisStore::connect(&self.options()).expect("redis store"))
    }

    /// A waiting room (its own connection) in this key space.
    pub fn room(&self) -> Arc<RedisWaitingRoom> {
        Arc::new(RedisWaitingRoom::connect(&self.options()).expect("redis waiting room"))
    }
}

fn url_of(listen: &Listen) -> String {
    match listen {
        Listen::Socket(path) => format!("unix://{}", path.display()),
        Listen::Port(port) => format!("redis://127.0.0.1:{port}/"),
    }
}

fn redis_command(listen: &Listen, dir: &std::path::Path) -> Command {
    let mut command = Command::new("redis-server");
    match listen {
        Listen::Socket(path) => {
            command
                .args(["--port", "0"])
                .arg("--unixsocket")
                .arg(path)
                .args(["--unixsocketperm", "700"]);
        }
        Listen::Port(port) => {
            command
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"]);
        }
    }
    command
        .arg("--dir")
        .arg(dir)
        .args(["--save", ""])
        .args(["--maxmemory-policy", "noeviction"])
        .args(PROMPT_SYNC)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// PING answered within 10 s (a generous bound for a loaded machine), or a loud failure.
fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = redis::Client::open(url).expect("redis url");
    loop {
        let ready = client
            .get_connection_with_timeout(Duration::from_millis(200))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        if ready.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server at {url} did not answer PING within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct RedisServer {
    listen: Listen,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// A server of this test's own on a Unix socket in its temp dir.
    pub fn start() -> Self {
        let mut server = Self::unstarted();
        server.spawn();
        server
    }

    /// A server on a TCP port of 127.0.0.1 (for `REPLICAOF host port`). The port is free when
    /// chosen; if another process takes it first, the server cannot bind and the start is
    /// tried again on another port.
    pub fn start_tcp() -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let mut server = Self {
                listen: Listen::Port(super::free_port()),
                dir: tempfile::tempdir().expect("temp dir for redis"),
                child: None,
            };
            match server.try_spawn() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("no redis-server on a TCP port after 5 tries: {last}");
    }

    /// A server whose socket and dir are fixed but which is not running yet (Redis
    /// unreachable); `restart()` starts it.
    pub fn unstarted() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        Self {
            listen: Listen::Socket(dir.path().join("redis.sock")),
            dir,
            child: None,
        }
    }

    pub fn url(&self) -> String {
        url_of(&self.listen)
    }

    /// The TCP port of a `start_tcp()` server.
    pub fn port(&self) -> u16 {
        match self.listen {
            Listen::Port(port) => port,
            Listen::Socket(_) => panic!("this test redis listens on a Unix socket: start_tcp()"),
        }
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let mut command = redis_command(&self.listen, self.dir.path());
        command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        let mut child = command.spawn().map_err(|e| {
            format!(
                "cannot start redis-server ({e}): the Redis tests need redis-server 7 on PATH \
                 (Debian: apt-get install redis-server)"
            )
        })?;
        let url = self.url();
        let client = redis::Client::open(url.as_str()).expect("redis url");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ready.is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server at {url} exited at start ({status})"));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server at {url} did not answer PING within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (like a crash: SIGKILL, no shutdown save).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process stays connected but answers nothing (a hung replica).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status()
                .expect("kill");
            assert!(status.success(), "kill {signal}");
        }
    }

    /// Starts it again on the same port and dir; the AOF brings the data back.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A synchronous connection for test setup and inspection.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect to test redis")
    }

    /// A store on this server with the default tag and fail-fast timeouts.
    pub fn store(&self) -> Arc<RedisStore> {
        self.store_with(RedisOptions {
            conn: ConnOptions {
                url: self.url(),
                ..ConnOptions::default()
            },
            ..RedisOptions::default()
        })
    }

    /// A store for load tests: generous response timeout, so a slow shared CI machine does not
    /// turn a queued answer into UNAVAILABLE.
    pub fn patient_store(&self) -> Arc<RedisStore> {
        self.store_with(RedisOptions {
            conn: ConnOptions {
                url: self.url(),
                response_timeout: PATIENT,
                ..ConnOptions::default()
            },
            ..RedisOptions::default()
        })
    }

    /// A waiting room on this server (its own connection), patient like `patient_store`.
    pub fn room(&self) -> Arc<slotd::store::redis::room::RedisWaitingRoom> {
        Arc::new(
            slotd::store::redis::room::RedisWaitingRoom::connect(&RedisOptions {
                conn: ConnOptions {
                    url: self.url(),
                    response_timeout: PATIENT,
                    ..ConnOptions::default()
                },
                ..RedisOptions::default()
            })
            .expect("redis waiting room"),
        )
    }

    pub fn store_with(&self, options: RedisOptions) -> Arc<RedisStore> {
        Arc::new(RedisStore::connect(&options).expect("redis store"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
