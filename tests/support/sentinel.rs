//! A throwaway Sentinel deployment on loopback: one primary, one replica and three sentinels
//! (quorum 2, down-after 1 s) monitoring it as `slotd-primary`, in one temp dir, killed on drop.
//! No persistence: the replica holds the data (that is what WAIT acknowledges). `start_tls`
//! makes every node and sentinel TLS-only (mutual TLS, replication and sentinel links too).
//! Inspected with `redis-cli` (`--tls` for the TLS set).

use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::process::free_port;
use super::redis::{cli_query, wait_until};
use super::tls::Pki;

pub const MASTER: &str = "slotd-primary";

pub struct SentinelSet {
    /// Data nodes (port, process); the primary is first at the start.
    nodes: Vec<(u16, Option<Child>)>,
    sentinels: Vec<(u16, Child)>,
    /// TLS arguments of every redis-server (empty: plaintext).
    tls_args: Vec<String>,
    /// `redis-cli` arguments to reach a node (`--tls ...` for the TLS set).
    cli_args: Vec<String>,
    dir: TempDir,
}

/// `redis-cli cli_args -p port args...`'s output ("" when it fails).
fn query(cli_args: &[String], port: u16, args: &[&str]) -> String {
    let mut cli = Command::new("redis-cli");
    cli.args(cli_args);
    cli_query(cli, port, args)
}

/// The port arguments: `--port P`, or `--port 0 --tls-port P` plus the TLS files.
fn port_args(port: u16, tls_args: &[String]) -> Vec<String> {
    if tls_args.is_empty() {
        vec!["--port".into(), port.to_string()]
    } else {
        let mut args = vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-replication".into(),
            "yes".into(),
        ];
        args.extend(tls_args.iter().cloned());
        args
    }
}

fn data_node(
    port: u16,
    dir: &std::path::Path,
    replica_of: Option<u16>,
    tls_args: &[String],
) -> Child {
    let mut c = Command::new("redis-server");
    c.args(port_args(port, tls_args))
        .args(["--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--maxmemory-policy", "noeviction"])
        .args(super::redis::PROMPT_SYNC)
        .arg("--dir")
        .arg(dir);
    if let Some(primary) = replica_of {
        c.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
    }
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): needs redis-server 7"))
}

impl SentinelSet {
    pub fn start() -> Self {
        Self::start_with(Vec::new(), Vec::new())
    }

    /// Everything over TLS with the certificates of `pki` (mutual TLS everywhere).
    pub fn start_tls(pki: &Pki) -> Self {
        let p = |n: &str| pki.path(n).display().to_string();
        let cli = vec![
            "--tls".into(),
            "--cacert".into(),
            p("ca.pem"),
            "--cert".into(),
            p("client.pem"),
            "--key".into(),
            p("client.key"),
        ];
        Self::start_with(pki.server_args("yes"), cli)
    }

    fn start_with(tls_args: Vec<String>, cli_args: Vec<String>) -> Self {
        let info = |port: u16| query(&cli_args, port, &["INFO", "replication"]);
        let dir = tempfile::tempdir().expect("temp dir");
        let primary = free_port();
        let mut replica = free_port();
        while replica == primary {
            replica = free_port();
        }
        let node_dir = |port: u16| {
            let d = dir.path().join(port.to_string());
            std::fs::create_dir_all(&d).expect("node dir");
            d
        };
        let nodes = vec![
            (
                primary,
                Some(data_node(primary, &node_dir(primary), None, &tls_args)),
            ),
            (
                replica,
                Some(data_node(
                    replica,
                    &node_dir(replica),
                    Some(primary),
                    &tls_args,
                )),
            ),
        ];
        wait_until("the replica's link to the primary is up", 20, || {
            info(replica).contains("master_link_status:up")
        });
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let mut port = free_port();
            while port == primary || port == replica || sentinels.iter().any(|(p, _)| *p == port) {
                port = free_port();
            }
            let conf = dir.path().join(format!("sentinel-{port}.conf"));
            // `--port/--tls-port` go on the command line; the file holds the monitoring.
            std::fs::write(
                &conf,
                format!(
                    "bind 127.0.0.1\ndir {}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 10000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    dir.path().display()
                ),
            )
            .expect("sentinel.conf");
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .args(port_args(port, &tls_args))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel");
            sentinels.push((port, child));
        }
        let set = Self {
            nodes,
            sentinels,
            tls_args,
            cli_args,
            dir,
        };
        for (port, _) in &set.sentinels {
            let port = *port;
            wait_until("every sentinel sees the replica and the others", 30, || {
                let out = set.query(port, &["SENTINEL", "MASTER", MASTER]);
                let fields: Vec<&str> = out.lines().collect();
                let field = |name: &str| {
                    fields
                        .iter()
                        .position(|f| *f == name)
                        .and_then(|i| fields.get(i + 1))
                        .copied()
                        .unwrap_or_default()
                };
                field("num-slaves") == "1" && field("num-other-sentinels") == "2"
            });
        }
        set
    }

    fn query(&self, port: u16, args: &[&str]) -> String {
        query(&self.cli_args, port, args)
    }

    fn info(&self, port: u16) -> String {
        self.query(port, &["INFO", "replication"])
    }

    /// `redis+sentinel://` (`rediss+sentinel://` for the TLS set) with the three sentinels.
    pub fn url(&self) -> String {
        let list: Vec<String> = self
            .sentinels
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        let scheme = if self.tls_args.is_empty() {
            "redis+sentinel"
        } else {
            "rediss+sentinel"
        };
        format!("{scheme}://{}/{MASTER}", list.join(","))
    }

    /// The port the sentinels name as primary now.
    pub fn primary(&self) -> u16 {
        for (port, _) in &self.sentinels {
            let out = self.query(*port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER]);
            if let Some(p) = out.lines().nth(1).and_then(|p| p.trim().parse().ok()) {
                return p;
            }
        }
        panic!("no sentinel names a primary");
    }

    /// SIGKILL a data node, like a crash.
    pub fn kill(&mut self, port: u16) {
        if let Some((_, slot)) = self.nodes.iter_mut().find(|(p, _)| *p == port) {
            if let Some(mut child) = slot.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Waits until the sentinels name another primary than `dead` and it answers as primary.
    pub fn wait_promoted(&self, dead: u16, secs: u64) -> u16 {
        let mut promoted = 0;
        wait_until("the sentinels promote the replica", secs, || {
            promoted = self.primary();
            promoted != dead && self.info(promoted).contains("role:master")
        });
        promoted
    }

    /// Restarts the dead node as a replica of `primary` (what an orchestrator does), and waits
    /// for its link.
    pub fn restart_as_replica(&mut self, port: u16, primary: u16) {
        let dir = self.dir.path().join(port.to_string());
        let slot = self
            .nodes
            .iter_mut()
            .find(|(p, _)| *p == port)
            .map(|(_, slot)| slot)
            .expect("a node of this set");
        *slot = Some(data_node(port, &dir, Some(primary), &self.tls_args));
        wait_until("the restarted node replicates the new primary", 30, || {
            self.info(port).contains("master_link_status:up")
        });
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (_, slot) in &mut self.nodes {
            if let Some(mut child) = slot.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
