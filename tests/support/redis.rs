//! A throwaway `redis-server` per test: a free port on 127.0.0.1, its own temp dir, AOF with
//! `appendfsync always` (as deploy/redis.conf), killed on drop. `restart()` keeps the port and
//! the dir, so the AOF survives like a crashed-and-restarted production Redis.
//!
//! Without `redis-server` on PATH these tests fail loudly (CI installs it); they never pass
//! silently.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use slotd::store::redis::{ConnOptions, RedisOptions, RedisStore};

pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let port = free_port();
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    /// A server whose port and dir are fixed but which is not running yet (Redis unreachable);
    /// `restart()` starts it.
    pub fn unstarted() -> Self {
        Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir for redis"),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .args(["--maxmemory-policy", "noeviction"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): the Redis tests need redis-server 7 on PATH \
                     (Debian: apt-get install redis-server)"
                )
            });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url()).expect("redis url");
        loop {
            let ready = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ready.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
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
                response_timeout: Duration::from_secs(20),
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
                    response_timeout: Duration::from_secs(20),
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
