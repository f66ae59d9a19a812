//! The real `slotd` binary as an OS process (kill -9, restarts, several processes on one
//! Redis), on 127.0.0.1, with its log in a temp file.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ADMIN_TOKEN, ADMISSION_KEY};

/// A port free right now (for restarting a process on the port it had).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct Slotd {
    child: Child,
    addr: String,
    log: tempfile::NamedTempFile,
}

impl Slotd {
    /// `slotd serve` on 127.0.0.1:`port` (0 = ephemeral, read back from the log) and
    /// `redis_url`, with the test operator token and admission key (processes share them, as
    /// replicas behind one address must) and limits high enough for a storm from one address.
    pub fn start(port: u16, redis_url: &str) -> Self {
        Self::start_with(port, &["--redis-url", redis_url], &[])
    }

    /// `slotd serve` on 127.0.0.1:`port` with the test token and key, JSON logs, high limits,
    /// no RUST_LOG, and then `args` and `env` (so they win). Without `--redis-url` in `args`
    /// it runs on the embedded store.
    pub fn start_with(port: u16, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_slotd"));
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-token", ADMIN_TOKEN])
            .args(["--admission-key", ADMISSION_KEY, "--log-format", "json"])
            .args(args)
            .env("SLOTD__LIMITS__BOOKING_BURST", "100000")
            .env("SLOTD__LIMITS__BOOKING_PER_MINUTE", "100000")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"));
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn slotd");
        let mut process = Self {
            child,
            addr: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(addr) = listening_addr(&process.log()) {
                process.addr = addr;
                return process;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!(
                    "slotd exited with {status} before listening:\n{}",
                    process.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "slotd did not start:\n{}",
                process.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// `127.0.0.1:<port>` it listens on.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// The OS process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, no shutdown hook.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill -9 slotd");
        self.child.wait().expect("reap slotd");
    }
}

impl Drop for Slotd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address of the JSON log line `{"message":"slotd listening","addr":"127.0.0.1:N",...}`.
fn listening_addr(log: &str) -> Option<String> {
    log.lines()
        .filter(|l| l.contains("slotd listening"))
        .find_map(|l| {
            let value: serde_json::Value = serde_json::from_str(l).ok()?;
            let find =
                |v: &serde_json::Value| v.get("addr").and_then(|a| a.as_str()).map(String::from);
            find(&value).or_else(|| value.get("fields").and_then(find))
        })
}
