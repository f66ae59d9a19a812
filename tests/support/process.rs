//! The real `slotd` binary as an OS process (kill -9, restarts, several processes on one
//! Redis), on 127.0.0.1, with its log in a temp file.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ADMIN_TOKEN, ADMISSION_KEY};

pub use super::free_port;

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
        Self::start_env(port, redis_url, &[], &[])
    }

    /// `start` with more `slotd serve` arguments (`--redis-ca-cert FILE`, ...; an
    /// `--admission-key` among them replaces the shared test key).
    pub fn start_with<S: AsRef<str>>(port: u16, redis_url: &str, extra: &[S]) -> Self {
        let extra: Vec<String> = extra.iter().map(|a| a.as_ref().to_string()).collect();
        Self::start_env(port, redis_url, &extra, &[])
    }

    /// `start_with` plus environment variables (`SLOTD_REDIS_CA_CERT`, ...).
    pub fn start_env(port: u16, redis_url: &str, extra: &[String], env: &[(&str, &str)]) -> Self {
        Self::launch(spawn(port, redis_url, None, extra, env))
    }

    /// `slotd serve` with the test token and key, JSON logs and high limits, then `args` and
    /// `env`; on the embedded store unless `args` names `--redis-url`.
    pub fn start_args(port: u16, args: &[&str], env: &[(&str, &str)]) -> Self {
        let extra: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        Self::launch(spawn(port, "", None, &extra, env))
    }

    /// `start_args` plus `--metrics-listen` on a free port of 127.0.0.1 (not port 0: slotd
    /// wants it to differ from `--listen 127.0.0.1:0`); returns the process and that port. The
    /// port may be taken between the pick and slotd's bind (slotd then exits naming it): the
    /// start is tried again on another port.
    pub fn start_with_metrics(args: &[&str], env: &[(&str, &str)]) -> (Self, u16) {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let mut all = args.to_vec();
            all.extend(["--metrics-listen", listen.as_str()]);
            let mut process = Self::start_args(0, &all, env);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let log = process.log();
                if log.contains("metrics listening") {
                    return (process, port);
                }
                if let Ok(Some(status)) = process.child.try_wait() {
                    assert!(
                        log.contains(&format!("metrics listen {listen}")),
                        "slotd exited with {status} before serving metrics:\n{log}"
                    );
                    last = log;
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "slotd did not serve metrics:\n{log}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("no metrics port after 5 tries:\n{last}");
    }

    /// As `start`, with extra environment (config keys), under `faketime -f <clock_offset>`
    /// (`"+60s"`) so its system clock runs that far off (the monotonic clock is left alone).
    pub fn start_skewed(
        port: u16,
        redis_url: &str,
        clock_offset: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::launch(spawn(port, redis_url, Some(clock_offset), &[], env))
    }

    /// Waits (bounded) for the process to log its listening address.
    fn launch((child, log): (Child, tempfile::NamedTempFile)) -> Self {
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

    /// Starts `slotd serve` expecting it to refuse to start: waits (bounded) for it to exit,
    /// asserts a failure exit code, and returns its output.
    pub fn refused(redis_url: &str, extra: &[String]) -> String {
        let (mut child, log) = spawn(0, redis_url, None, extra, &[]);
        let deadline = Instant::now() + Duration::from_secs(30);
        let read = || std::fs::read_to_string(log.path()).unwrap_or_default();
        loop {
            if let Some(status) = child.try_wait().expect("wait slotd") {
                assert!(!status.success(), "slotd exited 0:\n{}", read());
                return read();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("slotd kept running instead of failing fast:\n{}", read());
            }
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

    /// Sends signal `name` (`"TERM"`, `"HUP"`) through the shell's builtin kill (no procps
    /// needed on a minimal machine).
    pub fn signal(&self, name: &str) {
        let status = Command::new("sh")
            .args(["-c", "kill -s \"$0\" \"$1\""])
            .args([name, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -s {name}");
    }

    /// Waits (up to `limit`, a generous bound) for the process to exit; true when it exited 0.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "slotd did not exit within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no drain, no shutdown hook.
    pub fn kill(&mut self) {
        self.kill_group();
        self.child.kill().expect("kill -9 slotd");
        self.child.wait().expect("reap slotd");
    }

    /// SIGKILL to the child's whole process group (it leads one, see `spawn`): under `faketime`
    /// the child is the wrapper, and slotd its own child, which killing the wrapper alone
    /// would leave running, orphaned, after the test.
    fn kill_group(&self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Slotd {
    fn drop(&mut self) {
        self.kill_group();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `GET /metrics` on 127.0.0.1:`port` (a `--metrics-listen` endpoint); asserts 200.
pub fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

fn spawn(
    port: u16,
    redis_url: &str,
    clock_offset: Option<&str>,
    extra: &[String],
    env: &[(&str, &str)],
) -> (Child, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut command = match clock_offset {
        Some(offset) => {
            let mut c = Command::new("faketime");
            c.args(["-f", offset, env!("CARGO_BIN_EXE_slotd")])
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_slotd")),
    };
    let shared_key: &[&str] = if extra.iter().any(|a| a == "--admission-key") {
        &[]
    } else {
        &["--admission-key", ADMISSION_KEY]
    };
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-token", ADMIN_TOKEN])
        // "" = the embedded store.
        .args(
            Some(["--redis-url", redis_url])
                .filter(|_| !redis_url.is_empty())
                .into_iter()
                .flatten(),
        )
        // JSON lines unless the test chooses the format (`--log-format text` among `extra`).
        .args(
            Some(["--log-format", "json"])
                .filter(|_| !extra.iter().any(|a| a == "--log-format"))
                .into_iter()
                .flatten(),
        )
        .args(shared_key)
        .args(extra)
        .env("SLOTD__LIMITS__BOOKING_BURST", "100000")
        .env("SLOTD__LIMITS__BOOKING_PER_MINUTE", "100000")
        .env("SLOTD__LIMITS__ROOM_BURST", "100000")
        .env("SLOTD__LIMITS__ROOM_PER_MINUTE", "100000")
        // After the defaults, so a test may override them.
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.reopen().expect("log"))
        .stderr(log.reopen().expect("log"))
        // Its own process group, so `Slotd::kill_group` reaches slotd under `faketime` too.
        .process_group(0);
    (command.spawn().expect("spawn slotd"), log)
}

/// The address of the log line `slotd listening`: JSON
/// (`{"message":"slotd listening","addr":"127.0.0.1:N",...}`) or text (`... slotd listening
/// addr=127.0.0.1:N`).
fn listening_addr(log: &str) -> Option<String> {
    log.lines()
        .filter(|l| l.contains("slotd listening"))
        .find_map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(value) => {
                let find = |v: &serde_json::Value| {
                    v.get("addr").and_then(|a| a.as_str()).map(String::from)
                };
                find(&value).or_else(|| value.get("fields").and_then(find))
            }
            Err(_) => l
                .split_once("slotd listening addr=")
                .map(|(_, addr)| addr.trim().to_owned()),
        })
}
