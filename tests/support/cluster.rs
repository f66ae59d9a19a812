//! Redis Cluster for tests (3 primaries + 3 replicas on loopback, each node in its own dir of one
//! temp dir, created with `redis-cli --cluster create`), two ways:
//! - `shared()` / `tenant()`: one cluster per test binary, started lazily on first use, and a
//!   fresh `redis.tag` per test, so a test never sees another's keys (tags spread tests over
//!   the shards). Its nodes go away with the test process.
//! - `RedisCluster::start()`: a cluster of one test's own, for tests that fail over, kill or
//!   restart nodes; killed on drop. `fail_over` promotes the replica of the primary that owns a
//!   key's slot, as an operator (or a crashed primary) would.
//!
//! Ports: a node's port and its cluster bus port (+10000) are both below the kernel's ephemeral
//! range, so no outgoing connection can take one between the check and the bind; two tests that
//! pick the same port at once are caught at start (the node that answers must be ours, by its
//! dir) and the whole start is tried again on new ports. Every wait and every `redis-cli` run is
//! bounded, so a cluster that does not form fails the test instead of hanging the suite.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::redis::{fresh_tag, poll_until, reaped, wait_until, Tenant};
use slotd::store::redis::{ConnOptions, RedisOptions, RedisStore};

/// A response timeout short enough that a call caught in a failover pause is retried in time.
pub const CLUSTER_TIMEOUT: Duration = Duration::from_secs(3);

struct NodeProcess {
    port: u16,
    child: Child,
    /// Set for a shared cluster's node: `child` is the reaping shell (see `reaped`).
    _reaper: Option<ChildStdin>,
}

impl NodeProcess {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct RedisCluster {
    ports: Vec<u16>,
    children: Vec<NodeProcess>,
    _dir: TempDir,
}

/// The URL of this test binary's cluster (see the module comment), started on first use.
pub fn shared_url() -> &'static str {
    static SHARED: OnceLock<(String, Mutex<RedisCluster>)> = OnceLock::new();
    &SHARED
        .get_or_init(|| {
            let cluster = RedisCluster::start_as(true);
            (cluster.url(), Mutex::new(cluster))
        })
        .0
}

/// A fresh key space on the shared cluster: its own tag.
pub fn tenant() -> Tenant {
    Tenant {
        url: shared_url().to_owned(),
        tag: fresh_tag(),
        timeout: CLUSTER_TIMEOUT,
    }
}

/// The lowest port the kernel hands out for outgoing connections (32768 when unreadable).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768)
}

/// `n` distinct ports, each with its bus port (+10000) free too, all below the ephemeral range.
pub fn free_ports(n: usize) -> Vec<u16> {
    use rand::Rng;
    let top = ephemeral_low().saturating_sub(10_000).max(2_000);
    let bottom = 1_024u16.max(top.saturating_sub(12_000));
    let mut rng = rand::rng();
    let mut ports = Vec::new();
    for _ in 0..10_000 {
        if ports.len() == n {
            return ports;
        }
        let port: u16 = rng.random_range(bottom..top);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !ports.contains(&port) && free(port) && free(port + 10_000) {
            ports.push(port);
        }
    }
    panic!("no {n} free port pairs in {bottom}..{top} (+10000)");
}

fn node_command(port: u16, dir: &Path) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .args(["--cluster-node-timeout", "2000"])
        .arg("--dir")
        .arg(dir)
        // Replication is what the failover tests are about; no persistence to pay for (a
        // restarted node rejoins from its nodes.conf and resyncs from its primary).
        .args(["--save", "", "--appendonly", "no"])
        .args(["--maxmemory-policy", "noeviction"])
        .args(super::redis::PROMPT_SYNC)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn spawn_node(port: u16, dir: &Path, shared: bool) -> NodeProcess {
    let mut command = node_command(port, dir);
    if shared {
        let (child, stdin) = reaped(&mut command);
        return NodeProcess {
            port,
            child,
            _reaper: Some(stdin),
        };
    }
    let child = command.spawn().unwrap_or_else(|e| {
        panic!("cannot start redis-server ({e}): the cluster tests need redis-server 7 on PATH")
    });
    NodeProcess {
        port,
        child,
        _reaper: None,
    }
}

fn try_client(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))?
        .get_connection_with_timeout(Duration::from_millis(500))
}

fn client(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .expect("url")
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect to cluster node")
}

/// Runs `command` to its end within `secs`, else kills it. Ok(true) = exit status 0.
pub fn run_bounded(command: &mut Command, secs: u64) -> Result<bool, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status.success());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{:?} did not finish within {secs} s",
                command.get_program()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The node on `port` answers and is ours (its dir is `dir`), not another test's.
fn is_our_node(port: u16, dir: &Path) -> bool {
    let answer: redis::RedisResult<Vec<String>> =
        try_client(port).and_then(|mut c| redis::cmd("CONFIG").arg("GET").arg("dir").query(&mut c));
    match answer {
        Ok(pair) => pair.get(1).map(PathBuf::from).as_deref() == Some(dir),
        Err(_) => false,
    }
}

impl RedisCluster {
    /// A cluster of this test's own (see the module comment).
    pub fn start() -> Self {
        Self::start_as(false)
    }

    fn start_as(shared: bool) -> Self {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(shared) {
                Ok(cluster) => return cluster,
                Err(e) => failures.push(e),
            }
        }
        panic!("no Redis Cluster after 3 tries: {}", failures.join("; "));
    }

    fn try_start(shared: bool) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(6);
        let mut cluster = Self {
            ports: ports.clone(),
            children: Vec::new(),
            _dir: dir,
        };
        for port in &ports {
            let node_dir = cluster._dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            cluster.children.push(spawn_node(*port, &node_dir, shared));
        }
        for port in &ports {
            // Canonical, as Redis reports it back.
            let node_dir = std::fs::canonicalize(cluster._dir.path().join(port.to_string()))
                .expect("node dir");
            if !poll_until(10, &mut || is_our_node(*port, &node_dir)) {
                return Err(format!("node {port} did not come up as ours within 10 s"));
            }
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = run_bounded(
            Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(&nodes)
                .args(["--cluster-replicas", "1", "--cluster-yes"]),
            60,
        )?;
        if !created {
            return Err("redis-cli --cluster create failed".into());
        }
        cluster.try_wait_healthy(60)?;
        Ok(cluster)
    }

    /// Every node reports cluster_state:ok and three primaries each have a replica.
    pub fn wait_healthy(&self) {
        if let Err(e) = self.try_wait_healthy(30) {
            panic!("{e}");
        }
    }

    fn try_wait_healthy(&self, secs: u64) -> Result<(), String> {
        for port in &self.ports {
            let port = *port;
            let ok = poll_until(secs, &mut || {
                try_client(port)
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .map(|info| info.contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
            if !ok {
                return Err(format!("cluster_state:ok on node {port} within {secs} s"));
            }
        }
        let ok = poll_until(secs, &mut || {
            let nodes = self.try_nodes().unwrap_or_default();
            let primaries = nodes
                .iter()
                .filter(|n| n.primary && !n.slots.is_empty())
                .count();
            let replicas = nodes.iter().filter(|n| !n.primary).count();
            primaries == 3 && replicas == 3
        });
        if !ok {
            return Err(format!(
                "three primaries with a replica each within {secs} s"
            ));
        }
        let replicas: Vec<Node> = self
            .try_nodes()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| !n.primary)
            .collect();
        for node in replicas {
            let ok = poll_until(secs, &mut || {
                try_client(node.port)
                    .and_then(|mut c| {
                        redis::cmd("INFO")
                            .arg("replication")
                            .query::<String>(&mut c)
                    })
                    .map(|info| info.contains("master_link_status:up"))
                    .unwrap_or(false)
            });
            if !ok {
                return Err(format!(
                    "the link of replica {} to its primary up within {secs} s",
                    node.port
                ));
            }
        }
        Ok(())
    }

    /// `redis-cluster://` seed list of the primaries and replicas.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis-cluster://{}", nodes.join(","))
    }

    fn options(&self, tag: &str) -> RedisOptions {
        RedisOptions {
            conn: ConnOptions {
                url: self.url(),
                response_timeout: CLUSTER_TIMEOUT,
                ..ConnOptions::default()
            },
            tag: tag.into(),
        }
    }

    pub fn store(&self) -> Arc<RedisStore> {
        Arc::new(RedisStore::connect(&self.options("slotd")).expect("cluster store"))
    }

    /// A store that acknowledges a write only once `replicas` replicas have it (WAIT).
    pub fn durable_store(&self, replicas: u32) -> Arc<RedisStore> {
        let mut options = self.options("slotd");
        options.conn.wait_replicas = replicas;
        options.conn.wait_timeout = Duration::from_secs(2);
        Arc::new(RedisStore::connect(&options).expect("cluster store"))
    }

    /// SIGKILL one node, like a crash.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.children.iter_mut().find(|n| n.port == port) {
            node.kill();
        }
    }

    /// Starts a killed node again on its port and dir: with its nodes.conf it rejoins the
    /// cluster, as a replica of whichever node took its slots.
    pub fn restart(&mut self, port: u16) {
        let dir = self._dir.path().join(port.to_string());
        if let Some(node) = self.children.iter_mut().find(|n| n.port == port) {
            node.kill();
            *node = spawn_node(port, &dir, false);
        }
        self.wait_healthy();
    }

    /// Waits until a node other than `dead` owns `key`'s slot and serves it.
    pub fn wait_promoted(&self, key: &str, dead: u16) {
        wait_until("a replica was promoted", 60, || {
            let alive = self.ports.iter().copied().find(|p| *p != dead);
            let Some(port) = alive else { return false };
            let text: Result<String, _> = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
                .and_then(|mut c| redis::cmd("CLUSTER").arg("NODES").query(&mut c));
            text.map(|t| {
                t.lines().filter_map(Node::parse).any(|n| {
                    n.primary
                        && n.port != dead
                        && n.slots
                            .iter()
                            .any(|(a, b)| (*a..=*b).contains(&key_slot(key)))
                })
            })
            .unwrap_or(false)
        });
    }

    pub fn nodes(&self) -> Vec<Node> {
        self.try_nodes().expect("some cluster node answers")
    }

    /// CLUSTER NODES of any node that answers (one may have been killed).
    fn try_nodes(&self) -> Option<Vec<Node>> {
        let text: String = self.ports.iter().find_map(|p| {
            try_client(*p)
                .and_then(|mut c| redis::cmd("CLUSTER").arg("NODES").query(&mut c))
                .ok()
        })?;
        Some(text.lines().filter_map(Node::parse).collect())
    }

    /// The primary that owns `key`'s slot.
    pub fn owner(&self, key: &str) -> Node {
        self.try_owner(key).expect("an owner for every slot")
    }

    fn try_owner(&self, key: &str) -> Option<Node> {
        let slot = key_slot(key);
        self.try_nodes()?
            .into_iter()
            .find(|n| n.primary && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
    }

    /// Promotes the replica of `key`'s primary with CLUSTER FAILOVER and waits until it owns the
    /// slot and the cluster is healthy again. Returns (old primary port, new primary port).
    pub fn fail_over(&self, key: &str) -> (u16, u16) {
        let old = self.owner(key);
        let replica = self
            .nodes()
            .into_iter()
            .find(|n| !n.primary && n.primary_id.as_deref() == Some(old.id.as_str()))
            .expect("the owner has a replica");
        // A manual failover is abandoned by Redis if the replica cannot catch up within its
        // timeout (a loaded machine): ask again, and FORCE (no catch-up handshake) last.
        let took_over = || self.try_owner(key).map(|n| n.port) == Some(replica.port);
        let mut done = false;
        for force in [false, false, true] {
            let mut command = redis::cmd("CLUSTER");
            command.arg("FAILOVER");
            if force {
                command.arg("FORCE");
            }
            let _: String = command
                .query(&mut client(replica.port))
                .expect("CLUSTER FAILOVER");
            if poll_until(15, &mut || took_over()) {
                done = true;
                break;
            }
        }
        assert!(
            done,
            "the replica took over the slot after 3 CLUSTER FAILOVER"
        );
        self.wait_healthy();
        (old.port, replica.port)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.children {
            node.kill();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    pub primary_id: Option<String>,
    pub slots: Vec<(u16, u16)>,
}

impl Node {
    /// One line of CLUSTER NODES: `<id> <ip:port@bus> <flags> <primary|-> <ping> <pong> <epoch> <link> <slots...>`.
    fn parse(line: &str) -> Option<Node> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[2].contains("fail") {
            return None;
        }
        let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
        let slots = f[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|x| (x, x)),
            })
            .collect();
        Some(Node {
            id: f[0].to_owned(),
            port,
            primary: f[2].contains("master"),
            primary_id: (f[3] != "-").then(|| f[3].to_owned()),
            slots,
        })
    }
}

/// CRC16/XMODEM of the key's hash tag, mod 16384 (the Redis Cluster key slot).
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = key
        .find('{')
        .and_then(|open| key[open + 1..].find('}').map(|len| (open + 1, len)))
        .filter(|(_, len)| *len > 0)
        .map(|(start, len)| &bytes[start..start + len])
        .unwrap_or(bytes);
    let mut crc: u16 = 0;
    for b in tagged {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}
