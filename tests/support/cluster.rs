//! A throwaway Redis Cluster per test: 3 primaries + 3 replicas on free loopback ports (each
//! port + 10000 free too, for the cluster bus), in one temp dir, created with
//! `redis-cli --cluster create`, killed on drop. `fail_over` promotes the replica of the primary
//! that owns a key's slot, as an operator (or a crashed primary) would.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use slotd::store::redis::room::RedisWaitingRoom;
use slotd::store::redis::{ConnOptions, RedisOptions, RedisStore};

pub struct RedisCluster {
    ports: Vec<u16>,
    children: Vec<(u16, Child)>,
    _dir: TempDir,
}

/// Ports below the usual ephemeral range whose cluster bus port (+10000) is free too.
pub fn free_ports(n: usize) -> Vec<u16> {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut ports = Vec::new();
    for _ in 0..10_000 {
        if ports.len() == n {
            return ports;
        }
        let port: u16 = rng.random_range(20_000..30_000);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !ports.contains(&port) && free(port) && free(port + 10_000) {
            ports.push(port);
        }
    }
    panic!("no {n} free port pairs in 20000-39999");
}

fn spawn_node(port: u16, dir: &std::path::Path) -> Child {
    Command::new("redis-server")
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
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .args(["--maxmemory-policy", "noeviction"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}): the cluster tests need redis-server 7 on PATH")
        })
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

fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl RedisCluster {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(6);
        let mut children = Vec::new();
        for port in &ports {
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let child = spawn_node(*port, &node_dir);
            children.push((*port, child));
        }
        let cluster = Self {
            ports,
            children,
            _dir: dir,
        };
        for port in &cluster.ports {
            let port = *port;
            wait_until("node answers PING", 10, || {
                redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            });
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli (package redis-tools) on PATH");
        assert!(status.success(), "redis-cli --cluster create failed");
        cluster.wait_healthy();
        cluster
    }

    /// Every node reports cluster_state:ok and three primaries each have a replica.
    pub fn wait_healthy(&self) {
        for port in &self.ports {
            let port = *port;
            wait_until("cluster_state:ok on every node", 30, || {
                try_client(port)
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .map(|info| info.contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
        }
        wait_until("three primaries with a replica each", 30, || {
            let nodes = self.nodes();
            let primaries = nodes
                .iter()
                .filter(|n| n.primary && !n.slots.is_empty())
                .count();
            let replicas = nodes.iter().filter(|n| !n.primary).count();
            primaries == 3 && replicas == 3
        });
        for node in self.nodes().into_iter().filter(|n| !n.primary) {
            wait_until("every replica's link to its primary is up", 30, || {
                try_client(node.port)
                    .and_then(|mut c| {
                        redis::cmd("INFO")
                            .arg("replication")
                            .query::<String>(&mut c)
                    })
                    .map(|info| info.contains("master_link_status:up"))
                    .unwrap_or(false)
            });
        }
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
                // Short enough that a call caught in a failover pause is retried in time.
                response_timeout: Duration::from_secs(3),
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
        options.conn.response_timeout = Duration::from_secs(3);
        options.conn.wait_replicas = replicas;
        options.conn.wait_timeout = Duration::from_secs(2);
        Arc::new(RedisStore::connect(&options).expect("cluster store"))
    }

    pub fn room(&self) -> Arc<RedisWaitingRoom> {
        Arc::new(RedisWaitingRoom::connect(&self.options("slotd")).expect("cluster room"))
    }

    /// SIGKILL one node, like a crash.
    pub fn kill(&mut self, port: u16) {
        if let Some((_, child)) = self.children.iter_mut().find(|(p, _)| *p == port) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed node again on its port and dir: with its nodes.conf it rejoins the
    /// cluster, as a replica of whichever node took its slots.
    pub fn restart(&mut self, port: u16) {
        let dir = self._dir.path().join(port.to_string());
        if let Some(entry) = self.children.iter_mut().find(|(p, _)| *p == port) {
            let _ = entry.1.kill();
            let _ = entry.1.wait();
            entry.1 = spawn_node(port, &dir);
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
        // Ask any node that answers (one may have been killed).
        let text: String = self
            .ports
            .iter()
            .find_map(|p| {
                redis::Client::open(format!("redis://127.0.0.1:{p}/"))
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("NODES").query(&mut c))
                    .ok()
            })
            .expect("some cluster node answers");
        text.lines().filter_map(Node::parse).collect()
    }

    /// The primary that owns `key`'s slot.
    pub fn owner(&self, key: &str) -> Node {
        let slot = key_slot(key);
        self.nodes()
            .into_iter()
            .find(|n| n.primary && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .expect("an owner for every slot")
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
        let _: String = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query(&mut client(replica.port))
            .expect("CLUSTER FAILOVER");
        wait_until("the replica took over the slot", 30, || {
            self.owner(key).port == replica.port
        });
        self.wait_healthy();
        (old.port, replica.port)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
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
