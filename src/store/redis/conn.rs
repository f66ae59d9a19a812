//! The connection seam: everything the store sends to Redis goes through `Conn`, so the
//! multiplexed `ConnectionManager` used now can be swapped for a pool (deadpool-redis) when the
//! perf issue benches both, without touching the operations. It also owns the one mapping of
//! `redis::RedisError` to `StoreError`: the store never leaks redis types upwards.
//!
//! Fail fast: the manager retries a lost connection only a few times with short delays, every
//! call has a response timeout, and on top of that each call is bounded by `deadline` (connect +
//! response timeout), so a dead or hung Redis answers `Unavailable` within about a second or two
//! instead of queueing requests behind a reconnect loop. The manager reconnects by itself on the
//! next call after an I/O error, so slotd recovers without a restart.
//!
//! It also owns the URL schemes (`parse_url`): one server (`redis://`, `rediss://`, `unix://`),
//! Redis Cluster seeds (`redis-cluster://`, `rediss-cluster://`) and Sentinel
//! (`redis+sentinel://`, `rediss+sentinel://`), plus the TLS files of `rediss` links. Config
//! validation calls `check` so a bad URL or certificate fails at start naming its key.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClientBuilder, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    Client, ClientTlsConfig, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisError, RedisFuture, TlsCertificates, TlsMode, ToRedisArgs, Value,
};

use super::functions::{self, Library, Op};

use crate::store::StoreError;

/// How slotd talks to Redis.
#[derive(Debug, Clone)]
pub struct ConnOptions {
    pub url: String,
    /// Limit for establishing one TCP connection (and its handshake).
    pub connect_timeout: Duration,
    /// Limit for one command's answer.
    pub response_timeout: Duration,
    /// Reconnection attempts after a connection is lost, before a call gives up.
    pub reconnect_retries: usize,
    /// Acknowledge a script's writes only once this many replicas have them (`WAIT`); 0 = off.
    /// What each answer means (README, Guarantees; DEPLOYMENT.md):
    /// - OK to a first attempt: the write is on the primary and on `wait_replicas` replicas;
    ///   it survives the failover of its primary.
    /// - `Unavailable` because too few replicas are connected (`NOREPLICAS`, Redis's
    ///   `min-replicas-to-write`, shipped in deploy/redis.conf equal to `wait_replicas`): the
    ///   script was refused at its first write, and its checks come before any write, so
    ///   nothing was written.
    /// - `Unavailable` because `WAIT` fell short within `wait_timeout`: the write is committed on
    ///   the primary but not confirmed on replicas (a failover now may lose it).
    /// - OK to a replay (same request_id) of such a write: its committed outcome. slotd waits
    ///   for the replicas once more; if they still fall short it answers the outcome anyway
    ///   (logged), since the write stands on the primary and the client must learn it.
    pub wait_replicas: u32,
    pub wait_timeout: Duration,
    /// PEM files for `rediss` links (single server, cluster nodes, Sentinel and its primary).
    pub tls: TlsFiles,
}

/// PEM files of a TLS link to Redis. Without `ca_cert` the system trust store verifies the
/// server; `client_cert` and `client_key` (together) present a client certificate (mutual TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    fn any(&self) -> bool {
        self.ca_cert.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }
}

impl Default for ConnOptions {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            reconnect_retries: 2,
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(500),
            tls: TlsFiles::default(),
        }
    }
}

/// The URL scheme that selects Redis Cluster: `redis-cluster://host:port,host:port,...` lists
/// seed nodes. Every function call touches keys of one hash tag, so the cluster client routes
/// each FCALL to the one shard owning it and follows MOVED/ASK after a failover or resharding;
/// `FUNCTION LOAD` goes to every primary.
pub const CLUSTER_SCHEME: &str = "redis-cluster://";
/// Redis Cluster whose nodes speak TLS (`tls-cluster yes`).
pub const TLS_CLUSTER_SCHEME: &str = "rediss-cluster://";
/// Redis Sentinel: `redis+sentinel://[user:password@]host:port,host:port/<master-name>[/db]`
/// lists sentinels; the credentials and db are the primary's.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";
/// Sentinel, with TLS to the sentinels and to the primary.
pub const TLS_SENTINEL_SCHEME: &str = "rediss+sentinel://";

/// The schemes `redis.url` accepts, for messages.
pub const SCHEMES: &str = "redis://, rediss://, unix://, redis-cluster://, rediss-cluster://, \
                           redis+sentinel:// or rediss+sentinel://";

/// Where Redis is, as `redis.url` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// One server: the URL as the redis crate reads it.
    Single { url: String, tls: bool },
    /// Cluster seed nodes, each a `redis://` or `rediss://` URL carrying the credentials.
    Cluster { nodes: Vec<String>, tls: bool },
    /// Sentinels (host, port), the primary's name and how to log in to it.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
        username: Option<String>,
        password: Option<String>,
        db: i64,
        tls: bool,
    },
}

impl Endpoint {
    pub fn tls(&self) -> bool {
        match self {
            Endpoint::Single { tls, .. }
            | Endpoint::Cluster { tls, .. }
            | Endpoint::Sentinel { tls, .. } => *tls,
        }
    }
}

/// `[user:password@]rest` → (userinfo, rest).
fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    let hosts_end = rest.find('/').unwrap_or(rest.len());
    match rest[..hosts_end].rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    }
}

/// `host:port,host:port` → each one checked (a port is required).
fn host_list(list: &str) -> Result<Vec<(String, u16)>, String> {
    let mut hosts = Vec::new();
    for node in list.split(',').map(str::trim) {
        if node.is_empty() {
            continue;
        }
        let (host, port) = node
            .rsplit_once(':')
            .ok_or_else(|| format!("node `{node}` needs host:port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("node `{node}`: port must be 1-65535"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
            return Err(format!("node `{node}`: bad host"));
        }
        hosts.push((host.to_owned(), port));
    }
    if hosts.is_empty() {
        return Err("needs at least one host:port".into());
    }
    Ok(hosts)
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Parses `redis.url` (every scheme of `SCHEMES`); the error says what is wrong with it.
pub fn parse_url(url: &str) -> Result<Endpoint, String> {
    let url = url.trim();
    for (scheme, tls) in [(CLUSTER_SCHEME, false), (TLS_CLUSTER_SCHEME, true)] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (userinfo, rest) = split_userinfo(rest);
            let list = rest.strip_suffix('/').unwrap_or(rest);
            if list.contains(['/', '?', '#']) {
                return Err(format!(
                    "{scheme} takes host:port,host:port only (a cluster has no db number)"
                ));
            }
            let nodes = host_list(list)
                .map_err(|e| format!("{scheme}: {e}"))?
                .into_iter()
                .map(|(host, port)| {
                    let login = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
                    let scheme = if tls { "rediss" } else { "redis" };
                    format!("{scheme}://{login}{}/", host_port(&host, port))
                })
                .collect::<Vec<_>>();
            for node in &nodes {
                node.as_str()
                    .into_connection_info()
                    .map_err(|e| format!("{scheme}: {e}"))?;
            }
            return Ok(Endpoint::Cluster { nodes, tls });
        }
    }
    for (scheme, tls) in [(SENTINEL_SCHEME, false), (TLS_SENTINEL_SCHEME, true)] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (userinfo, rest) = split_userinfo(rest);
            let (list, path) = rest.split_once('/').unwrap_or((rest, ""));
            let sentinels = host_list(list).map_err(|e| format!("{scheme}: {e}"))?;
            let mut parts = path.trim_end_matches('/').split('/');
            let master = parts.next().unwrap_or_default().to_owned();
            if master.is_empty() || !master.chars().all(|c| c.is_ascii_graphic()) {
                return Err(format!(
                    "{scheme}host:port,host:port/<master-name> needs the master name"
                ));
            }
            let db = match parts.next() {
                None => 0,
                Some(db) => db
                    .parse::<i64>()
                    .ok()
                    .filter(|d| (0..=15).contains(d))
                    .ok_or_else(|| format!("{scheme}: db `{db}` must be 0-15"))?,
            };
            if parts.next().is_some() {
                return Err(format!("{scheme}: path is /<master-name>[/<db>]"));
            }
            // The credentials are the primary's; read them as the redis crate reads a URL.
            let (username, password) = match userinfo {
                None => (None, None),
                Some(u) => {
                    let info = format!("redis://{u}@127.0.0.1:6379/")
                        .into_connection_info()
                        .map_err(|e| format!("{scheme}: {e}"))?;
                    let r = info.redis_settings();
                    (
                        r.username().map(str::to_owned),
                        r.password().map(str::to_owned),
                    )
                }
            };
            return Ok(Endpoint::Sentinel {
                sentinels,
                master,
                username,
                password,
                db,
                tls,
            });
        }
    }
    let tls = url.starts_with("rediss://");
    if !(url.starts_with("redis://")
        || tls
        || url.starts_with("unix://")
        || url.starts_with("redis+unix://"))
    {
        return Err(format!("must start with {SCHEMES}"));
    }
    url.into_connection_info().map_err(|e| e.to_string())?;
    Ok(Endpoint::Single {
        url: url.to_owned(),
        tls,
    })
}

/// A configuration problem with the connection settings, naming the `redis.*` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnConfigError {
    pub key: &'static str,
    pub detail: String,
}

impl std::fmt::Display for ConnConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.detail)
    }
}

fn read_pem(
    key: &'static str,
    path: &std::path::Path,
    marker: &str,
) -> Result<Vec<u8>, ConnConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConnConfigError {
        key,
        detail: format!("{}: {e}", path.display()),
    })?;
    if !String::from_utf8_lossy(&bytes).contains(marker) {
        return Err(ConnConfigError {
            key,
            detail: format!("{}: no PEM `{marker}` block", path.display()),
        });
    }
    Ok(bytes)
}

/// The URL and the TLS files, checked and read: what `Conn::open` builds its clients from.
struct Checked {
    endpoint: Endpoint,
    certs: Option<TlsCertificates>,
}

fn checked(options: &ConnOptions) -> Result<Checked, ConnConfigError> {
    let endpoint = parse_url(&options.url).map_err(|detail| ConnConfigError {
        key: "redis.url",
        detail,
    })?;
    let tls = &options.tls;
    if tls.client_cert.is_some() != tls.client_key.is_some() {
        return Err(ConnConfigError {
            key: "redis.tls_client_key",
            detail: "redis.tls_client_cert and redis.tls_client_key go together".into(),
        });
    }
    if tls.any() && !endpoint.tls() {
        let key = if tls.ca_cert.is_some() {
            "redis.tls_ca_cert"
        } else {
            "redis.tls_client_cert"
        };
        return Err(ConnConfigError {
            key,
            detail: "needs a TLS redis.url (rediss://, rediss-cluster:// or rediss+sentinel://)"
                .into(),
        });
    }
    if !tls.any() {
        return Ok(Checked {
            endpoint,
            certs: None,
        });
    }
    let root_cert = match &tls.ca_cert {
        Some(path) => Some(read_pem(
            "redis.tls_ca_cert",
            path,
            "-----BEGIN CERTIFICATE-----",
        )?),
        None => None,
    };
    let client_tls = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read_pem("redis.tls_client_cert", cert, "-----BEGIN CERTIFICATE-----")?,
            client_key: read_pem("redis.tls_client_key", key, "PRIVATE KEY-----")?,
        }),
        _ => None,
    };
    let certs = TlsCertificates {
        client_tls,
        root_cert,
    };
    // The redis crate parses the PEM blocks here; a broken file fails now, not at connect.
    Client::build_with_tls("rediss://127.0.0.1:6379/", certs.clone()).map_err(|e| {
        ConnConfigError {
            key: if e.to_string().contains("root") {
                "redis.tls_ca_cert"
            } else {
                "redis.tls_client_cert"
            },
            detail: e.to_string(),
        }
    })?;
    Ok(Checked {
        endpoint,
        certs: Some(certs),
    })
}

/// Checks `redis.url` and the TLS files (readable, PEM, matching the scheme) without
/// connecting: config validation calls it, so `slotd config check` catches them too.
pub fn check(options: &ConnOptions) -> Result<(), ConnConfigError> {
    checked(options).map(|_| ())
}

/// `url` with any password replaced by `<redacted>` (for printing the configuration).
pub fn redacted_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match split_userinfo(rest) {
            (Some(_), hosts) => format!("{scheme}://<redacted>@{hosts}"),
            (None, _) => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// One Redis server (multiplexed `ConnectionManager`) or a Redis Cluster (`ClusterConnection`,
/// multiplexed per node). Both are cheap to clone and reconnect by themselves.
#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

fn wait_policy(options: &ConnOptions) -> Option<(u32, Duration)> {
    (options.wait_replicas > 0).then_some((options.wait_replicas, options.wait_timeout))
}

/// A cluster connection that can be replaced by a fresh one. Seen here: after a `CLUSTER
/// FAILOVER` mid-load, redis-rs's async cluster connection kept timing out on every call (its
/// slot refresh did not bring it back within a minute); a new connection reads the slot map
/// from the seed nodes and serves at once. So a timed-out cluster call replaces the connection,
/// at most once a second.
struct ClusterHandle {
    client: ::redis::cluster::ClusterClient,
    /// One plain client per seed node, for the start-up TLS check (`Conn::tls_refusal`): the
    /// cluster client retries a refused handshake in the background instead of reporting it.
    seeds: Vec<Client>,
    config: ClusterConfig,
    current: std::sync::RwLock<(ClusterConnection, std::time::Instant)>,
}

impl ClusterHandle {
    fn connection(&self) -> ClusterConnection {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    fn renew(&self) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.1.elapsed() >= Duration::from_secs(1) {
            tracing::warn!("redis cluster call timed out: opening a fresh cluster connection");
            *current = (
                self.client
                    .get_pending_async_connection_with_config(self.config.clone()),
                std::time::Instant::now(),
            );
        }
    }
}

fn open_cluster(
    nodes: Vec<String>,
    certs: Option<TlsCertificates>,
    options: &ConnOptions,
) -> Result<ClusterHandle, StoreError> {
    let seeds = nodes
        .iter()
        .map(|node| match &certs {
            Some(certs) => Client::build_with_tls(node.as_str(), certs.clone()),
            None => Client::open(node.as_str()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Unavailable {
            detail: format!("redis cluster url: {e}"),
        })?;
    let mut builder = ClusterClientBuilder::new(nodes);
    if let Some(certs) = certs {
        builder = builder.certs(certs);
    }
    let client = builder
        .connection_timeout(options.connect_timeout)
        .response_timeout(options.response_timeout)
        .retries(u32::try_from(options.reconnect_retries).unwrap_or(u32::MAX))
        .min_retry_wait(50)
        .max_retry_wait(500)
        .build()
        .map_err(|e| StoreError::Unavailable {
            detail: format!("redis cluster url: {e}"),
        })?;
    let config = ClusterConfig::new()
        .set_connection_timeout(options.connect_timeout)
        .set_response_timeout(options.response_timeout);
    // Pending: connects in the background, so slotd starts (NOT_SERVING) while the cluster is
    // down, like the single-server link.
    let connection = client.get_pending_async_connection_with_config(config.clone());
    Ok(ClusterHandle {
        client,
        seeds,
        config,
        current: std::sync::RwLock::new((connection, std::time::Instant::now())),
    })
}

/// The primary that Sentinel names, followed across failovers. The manager of the primary
/// found last serves every call; a call that fails (the primary died, or answers READONLY
/// because it was demoted) drops it, and the next call asks the sentinels again, which also
/// check that the node they name considers itself primary (`ROLE`). While the sentinels still
/// name a dead primary, lookups fail fast (at most one every `RELOOKUP_GAP`), so calls answer
/// `Unavailable` until the promotion, then reach the new primary.
struct SentinelHandle {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    config: ConnectionManagerConfig,
    current: std::sync::RwLock<Option<(ConnectionManager, Instant)>>,
    last_failure: std::sync::Mutex<Option<(Instant, String)>>,
    lookup_timeout: Duration,
}

const RELOOKUP_GAP: Duration = Duration::from_millis(200);

impl SentinelHandle {
    fn cached(&self) -> Option<ConnectionManager> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(m, _)| m.clone())
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(manager) = self.cached() {
            return Ok(manager);
        }
        let mut sentinel = self.sentinel.lock().await;
        if let Some(manager) = self.cached() {
            return Ok(manager);
        }
        if let Some((at, why)) = &*self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < RELOOKUP_GAP {
                return Err(StoreError::Unavailable {
                    detail: format!("sentinel: {why}"),
                });
            }
        }
        let found = tokio::time::timeout(self.lookup_timeout, sentinel.async_get_client()).await;
        let failure = match found {
            Ok(Ok(client)) => {
                match ConnectionManager::new_lazy_with_config(client, self.config.clone()) {
                    Ok(manager) => {
                        tracing::info!("redis sentinel: connected to the primary it names");
                        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                            Some((manager.clone(), Instant::now()));
                        return Ok(manager);
                    }
                    Err(e) => e.to_string(),
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no primary named within {:?}", self.lookup_timeout),
        };
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), failure.clone()));
        Err(StoreError::Unavailable {
            detail: format!("sentinel: {failure}"),
        })
    }

    /// After a failed call: look the primary up again (at most once a `RELOOKUP_GAP` per
    /// manager, so one outage does not make every caller query the sentinels).
    fn forget(&self) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= RELOOKUP_GAP)
        {
            tracing::warn!("redis call failed: asking the sentinels for the primary again");
            *current = None;
        }
    }
}

fn open_sentinel(
    endpoint: Endpoint,
    certs: Option<TlsCertificates>,
    options: &ConnOptions,
    config: ConnectionManagerConfig,
) -> Result<SentinelHandle, StoreError> {
    let Endpoint::Sentinel {
        sentinels,
        master,
        username,
        password,
        db,
        tls,
    } = endpoint
    else {
        return Err(StoreError::Unavailable {
            detail: "redis url: not a sentinel url".into(),
        });
    };
    let addrs = sentinels.into_iter().map(|(host, port)| {
        if tls {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, port)
        }
    });
    let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)
        .map_err(|e| StoreError::Unavailable {
            detail: format!("redis sentinel url: {e}"),
        })?
        .set_client_to_redis_db(db);
    if let Some(username) = username {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = password {
        builder = builder.set_client_to_redis_password(password);
    }
    if tls {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(certs) = certs {
            builder = builder
                .set_client_to_redis_certificates(certs.clone())
                .set_client_to_sentinel_certificates(certs);
        }
    }
    let sentinel = builder.build().map_err(|e| StoreError::Unavailable {
        detail: format!("redis sentinel url: {e}"),
    })?;
    Ok(SentinelHandle {
        sentinel: tokio::sync::Mutex::new(sentinel),
        config,
        current: std::sync::RwLock::new(None),
        last_failure: std::sync::Mutex::new(None),
        lookup_timeout: options.connect_timeout + options.response_timeout,
    })
}

/// What a `Conn` holds: one server's manager, the replaceable cluster connection, or the
/// primary Sentinel names.
#[derive(Clone)]
enum Target {
    Single(ConnectionManager),
    Cluster(std::sync::Arc<ClusterHandle>),
    Sentinel(std::sync::Arc<SentinelHandle>),
}

#[derive(Clone)]
pub struct Conn {
    wait: Option<(u32, Duration)>,
    target: Target,
    deadline: Duration,
    /// The functions library this connection calls (the cluster-guarded one on a cluster).
    library: &'static Library,
    /// When this process last loaded the library and marked it in use (`keep_library`).
    kept: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Creates the connection lazily: slotd starts (with health NOT_SERVING) even when Redis is
    /// not up yet, and connects on the first call.
    pub fn open(options: &ConnOptions) -> Result<Self, StoreError> {
        let Checked { endpoint, certs } =
            checked(options).map_err(|e| StoreError::Unavailable {
                detail: e.to_string(),
            })?;
        let deadline = options.connect_timeout + options.response_timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(options.reconnect_retries)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let library = Library::get(matches!(endpoint, Endpoint::Cluster { .. }));
        let target = match endpoint {
            Endpoint::Cluster { nodes, .. } => {
                Target::Cluster(std::sync::Arc::new(open_cluster(nodes, certs, options)?))
            }
            sentinel @ Endpoint::Sentinel { .. } => Target::Sentinel(std::sync::Arc::new(
                open_sentinel(sentinel, certs, options, config)?,
            )),
            Endpoint::Single { url, .. } => {
                let client = match certs {
                    Some(certs) => Client::build_with_tls(url.as_str(), certs),
                    None => Client::open(url.as_str()),
                }
                .map_err(|e| StoreError::Unavailable {
                    detail: format!("redis url: {e}"),
                })?;
                Target::Single(
                    ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?,
                )
            }
        };
        Ok(Self {
            wait: wait_policy(options),
            target,
            deadline: deadline + Duration::from_millis(250),
            library,
            kept: std::sync::Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// The link for one call (for Sentinel, looking the primary up when it is not known).
    async fn link(&self) -> Result<Link, StoreError> {
        match &self.target {
            Target::Single(m) => Ok(Link::Single(m.clone())),
            Target::Cluster(h) => Ok(Link::Cluster(h.connection())),
            Target::Sentinel(h) => h.connection().await.map(Link::Single),
        }
    }

    /// A first PING at start whose failure is a TLS trust problem, named by its key: the
    /// server's certificate is not signed by `redis.tls_ca_cert` (or the system roots), or the
    /// server refused our client certificate. Other failures (Redis not up yet) are not
    /// configuration problems: slotd starts NOT_SERVING and connects later.
    pub async fn tls_refusal(&self) -> Option<ConnConfigError> {
        if let Target::Cluster(handle) = &self.target {
            // Each seed on its own: the first that answers settles it.
            for seed in &handle.seeds {
                let config = ::redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.deadline))
                    .set_response_timeout(Some(self.deadline));
                let answer = tokio::time::timeout(self.deadline, async {
                    let mut c = seed
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?;
                    ::redis::cmd("PING").query_async::<Value>(&mut c).await
                })
                .await;
                match answer {
                    Ok(Ok(_)) => return None,
                    Ok(Err(e)) => {
                        if let Some(refusal) = tls_refusal(&format!("cluster seed: {e}")) {
                            return Some(refusal);
                        }
                    }
                    Err(_) => {}
                }
            }
            return None;
        }
        match self.cmd("ping", &::redis::cmd("PING")).await {
            Err(StoreError::Unavailable { detail }) => tls_refusal(&detail),
            _ => None,
        }
    }
}

/// A failure text that says TLS refused the link, as the key to fix.
fn tls_refusal(detail: &str) -> Option<ConnConfigError> {
    let lower = detail.to_ascii_lowercase();
    if lower.contains("invalid peer certificate") || lower.contains("unknownissuer") {
        Some(ConnConfigError {
            key: "redis.tls_ca_cert",
            detail: format!("the Redis server's certificate is not trusted: {detail}"),
        })
    } else if lower.contains("certificaterequired") || lower.contains("badcertificate") {
        Some(ConnConfigError {
            key: "redis.tls_client_cert",
            detail: format!("the Redis server refused the client certificate: {detail}"),
        })
    } else {
        None
    }
}

impl Conn {
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "redis",
            otel.name = %what,
            otel.kind = "client",
            db.system = "redis",
        );
        let started = std::time::Instant::now();
        let (result, timed_out) = match tokio::time::timeout(self.deadline, call)
            .instrument(span)
            .await
        {
            Ok(Ok(value)) => (Ok(value), false),
            Ok(Err(e)) => {
                let timed_out = e.is_timeout();
                (Err(map_error(what, e)), timed_out)
            }
            Err(_) => (
                Err(StoreError::Unavailable {
                    detail: format!("{what}: no answer within {:?}", self.deadline),
                }),
                true,
            ),
        };
        match (&self.target, &result) {
            (Target::Cluster(handle), Err(_)) if timed_out => handle.renew(),
            (Target::Sentinel(handle), Err(StoreError::Unavailable { .. })) => handle.forget(),
            _ => {}
        }
        crate::metrics::metrics().redis_call(what, started.elapsed(), result.is_ok());
        result
    }

    /// Runs a library function with FCALL. A primary that answers that the function does not
    /// exist (flushed, replaced, or never given this version) gets the library loaded and the
    /// call once more: nothing ran the first time. With `wait_replicas`, waits for the replicas.
    pub async fn script(
        &self,
        what: &str,
        invocation: &Invocation<'_>,
    ) -> Result<Value, StoreError> {
        let value = self.read_script(what, invocation).await?;
        if let Some((replicas, timeout)) = self.wait {
            match self.wait_for_replicas(what, replicas, timeout).await {
                Ok(()) => {}
                // A replay writes nothing new: it names an outcome committed before, which the
                // client could not learn while the replicas fell short. Answer it.
                Err(e) if is_replay(&value) => {
                    tracing::warn!(what, error = %e, "replay answered with its committed outcome; replicas not confirmed");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(value)
    }

    /// The `WAIT` that `script` makes after a write, on its own (a script that writes only
    /// sometimes, like the room's tick, runs as `read_script` and confirms what it wrote).
    pub async fn confirm_writes(&self, what: &str) -> Result<(), StoreError> {
        match self.wait {
            Some((replicas, timeout)) => self.wait_for_replicas(what, replicas, timeout).await,
            None => Ok(()),
        }
    }

    /// A function that writes nothing (flag `no-writes`): never waits for replicas, so
    /// reads keep working while a shard has lost its replica.
    pub async fn read_script(
        &self,
        what: &str,
        invocation: &Invocation<'_>,
    ) -> Result<Value, StoreError> {
        let cmd = invocation.cmd();
        match self.fcall(what, &cmd).await {
            Err(StoreError::Unavailable { detail }) if detail.contains("Function not found") => {
                tracing::warn!(
                    what,
                    library = self.library.name(),
                    "function missing on the primary: loading the library"
                );
                self.load_library(what).await?;
                self.fcall(what, &cmd).await
            }
            other => other,
        }
    }

    async fn fcall(&self, what: &str, cmd: &Cmd) -> Result<Value, StoreError> {
        let mut link = self.link().await?;
        self.bounded(what, cmd.query_async::<Value>(&mut link))
            .await
            .map_err(|e| self.locate(e))
    }

    /// An error whose text names library lines, naming the `.lua` file and line instead.
    fn locate(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Unavailable { detail } => StoreError::Unavailable {
                detail: self.library.locate(&detail),
            },
            StoreError::Corrupt { detail } => StoreError::Corrupt {
                detail: self.library.locate(&detail),
            },
            other => other,
        }
    }

    /// The handle of one library function of this connection's version.
    pub fn function(&self, op: Op) -> Function {
        Function {
            name: self.library.function(op),
        }
    }

    /// The library this connection calls.
    pub fn library(&self) -> &'static Library {
        self.library
    }

    /// `FUNCTION LOAD REPLACE` on every primary (the cluster client sends it to all of them):
    /// the same name always carries the same text, so replacing is loading. (The in-use mark
    /// is the health loop's: `keep_library`.)
    pub async fn load_library(&self, what: &str) -> Result<(), StoreError> {
        let load = ::redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(self.library.source())
            .to_owned();
        self.cmd(what, &load).await.map_err(|e| self.locate(e))?;
        tracing::info!(
            library = self.library.name(),
            "redis functions library loaded"
        );
        Ok(())
    }

    async fn mark_in_use(&self, what: &str) -> Result<(), StoreError> {
        let ttl = u64::try_from(functions::IN_USE_TTL.as_millis()).unwrap_or(u64::MAX);
        let mark = ::redis::cmd("SET")
            .arg(functions::in_use_key(self.library.name()))
            .arg(env!("CARGO_PKG_VERSION"))
            .arg("PX")
            .arg(ttl)
            .to_owned();
        self.cmd(what, &mark).await.map(|_| ())
    }

    /// At start and from the health loop: loads the library once per process and refreshes its
    /// in-use mark every `IN_USE_REFRESH` (prune keeps marked versions). Best effort: a failure
    /// is logged and retried at the next call; FCALL loads a missing library by itself anyway.
    pub async fn keep_library(&self) {
        let last = *self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let what = "functions library";
        let result = match last {
            None => match self.load_library(what).await {
                Ok(()) => self.mark_in_use(what).await,
                Err(e) => Err(e),
            },
            Some(at) if at.elapsed() >= functions::IN_USE_REFRESH => self.mark_in_use(what).await,
            Some(_) => return,
        };
        match result {
            Ok(()) => {
                *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis functions library not loaded or marked yet")
            }
        }
    }

    /// `cmd` on every primary, each answer apart (node, answer or error text): one entry for a
    /// single server or Sentinel's primary.
    pub async fn every_primary(
        &self,
        what: &str,
        cmd: &Cmd,
    ) -> Result<Vec<(String, Result<Value, String>)>, StoreError> {
        match &self.target {
            Target::Cluster(handle) => {
                use ::redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
                let mut connection = handle.connection();
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let answer = self
                    .bounded(what, connection.route_command(cmd.clone(), routing))
                    .await?;
                let Value::Map(nodes) = answer else {
                    return Err(StoreError::corrupt(format!("{what}: not a map of nodes")));
                };
                Ok(nodes
                    .into_iter()
                    .map(|(node, value)| {
                        let node = match node {
                            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                            other => format!("{other:?}"),
                        };
                        let value = match value {
                            Value::ServerError(e) => Err(format!("{e:?}")),
                            v => Ok(v),
                        };
                        (node, value)
                    })
                    .collect())
            }
            _ => {
                let mut link = self.link().await?;
                let answer = self
                    .bounded(what, cmd.query_async::<Value>(&mut link))
                    .await;
                Ok(vec![(
                    "primary".to_owned(),
                    answer.map_err(|e| e.to_string()),
                )])
            }
        }
    }

    /// `WAIT replicas timeout`: in a cluster it goes to every primary and the answer is the
    /// smallest count, so it covers whichever shard took the write.
    async fn wait_for_replicas(
        &self,
        what: &str,
        replicas: u32,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let mut link = self.link().await?;
        let acked = self
            .bounded(
                what,
                ::redis::cmd("WAIT")
                    .arg(replicas)
                    .arg(millis)
                    .query_async::<i64>(&mut link),
            )
            .await
            .map_err(|e| match e {
                // The write is committed; only its replication is unknown. A cluster answers
                // WAIT from every primary and a node mid-failover can answer something that is
                // not a count ("expected array of integers" from the aggregation): that is the
                // cluster being unavailable, not corrupt data, and the client must retry.
                StoreError::Corrupt { detail } => StoreError::Unavailable {
                    detail: format!("{what}: replicas not confirmed: {detail}"),
                },
                other => other,
            })?;
        if acked < i64::from(replicas) {
            return Err(StoreError::Unavailable {
                detail: format!(
                    "{what}: only {acked} of {replicas} replicas acknowledged within {timeout:?}"
                ),
            });
        }
        Ok(())
    }

    pub async fn cmd(&self, what: &str, cmd: &Cmd) -> Result<Value, StoreError> {
        let mut link = self.link().await?;
        self.bounded(what, cmd.query_async::<Value>(&mut link))
            .await
    }

    /// Plain commands in one round trip (never FCALL: a pipelined call would not load a missing
    /// library, see `read_script`).
    pub async fn pipeline(&self, what: &str, pipe: &Pipeline) -> Result<Vec<Value>, StoreError> {
        let mut link = self.link().await?;
        self.bounded(what, pipe.query_async::<Vec<Value>>(&mut link))
            .await
    }
}

/// One function of the library, by its registered (versioned) name.
#[derive(Debug, Clone)]
pub struct Function {
    name: String,
}

impl Function {
    /// A call with its first key.
    pub fn key<T: ToRedisArgs>(&self, key: T) -> Invocation<'_> {
        let mut invocation = self.prepare_invoke();
        invocation.key(key);
        invocation
    }

    /// A call with nothing yet.
    pub fn prepare_invoke(&self) -> Invocation<'_> {
        Invocation {
            function: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One FCALL being built: keys then arguments, like the operation file's header lists them.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    function: &'a Function,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Invocation<'_> {
    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// `FCALL <name> <numkeys> <keys...> <args...>`.
    fn cmd(&self) -> Cmd {
        let mut cmd = ::redis::cmd("FCALL");
        cmd.arg(&self.function.name).arg(self.keys.len());
        for key in &self.keys {
            cmd.arg(key.as_slice());
        }
        for arg in &self.args {
            cmd.arg(arg.as_slice());
        }
        cmd
    }
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable {
        detail: e.to_string(),
    }
}

/// Every Redis failure means "the store cannot answer now" (connection refused, timeouts, I/O,
/// LOADING, BUSY, TRYAGAIN, CLUSTERDOWN, MASTERDOWN, READONLY, OOM, script errors...): the
/// operation may or may not have been applied and a retry with the same request_id is safe.
/// The exceptions are replies that do not parse as what we asked for (WRONGTYPE on one of our
/// keys, a reply of the wrong shape): those are data we cannot read, `Corrupt`.
/// Whether a script's reply is `{"REPLAY", ...}`: a request_id seen before, answered with its
/// first outcome and no new write (book, cancel, hold, confirm_hold, release_hold, reschedule,
/// wl_join).
fn is_replay(value: &Value) -> bool {
    match value {
        Value::Array(items) => {
            matches!(
                items.first(),
                Some(Value::BulkString(s)) if s.as_slice() == b"REPLAY"
            ) || matches!(items.first(), Some(Value::SimpleString(s)) if s == "REPLAY")
        }
        _ => false,
    }
}

fn map_error(what: &str, e: RedisError) -> StoreError {
    if e.code() == Some("NOREPLICAS") || e.to_string().contains("NOREPLICAS") {
        // min-replicas-to-write: the script was refused at its first write; every script
        // checks before it writes, so nothing was written.
        return StoreError::Unavailable {
            detail: format!(
                "{what}: refused before writing, too few replicas connected (NOREPLICAS): {e}"
            ),
        };
    }
    // redis-rs exposes no code for an error inside a pipeline reply, hence the text check.
    let corrupt = matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType)
        || e.code() == Some("WRONGTYPE")
        || e.to_string().contains("WRONGTYPE");
    if corrupt {
        StoreError::corrupt(format!("{what}: {e}"))
    } else {
        StoreError::Unavailable {
            detail: format!("{what}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_is_refused_before_any_connection() {
        let options = ConnOptions {
            url: "not a url".into(),
            ..ConnOptions::default()
        };
        assert!(matches!(
            Conn::open(&options),
            Err(StoreError::Unavailable { .. })
        ));
    }

    #[test]
    fn every_scheme_parses_and_a_bad_url_says_what_is_wrong() {
        let single = parse_url("rediss://:pw@cache.example:6380/2").expect("rediss");
        assert!(matches!(single, Endpoint::Single { tls: true, .. }));
        assert!(matches!(
            parse_url("unix:///run/redis.sock").expect("unix"),
            Endpoint::Single { tls: false, .. }
        ));
        assert_eq!(
            parse_url("redis-cluster://:pw@10.0.0.1:7000, 10.0.0.2:7001/").expect("cluster"),
            Endpoint::Cluster {
                nodes: vec![
                    "redis://:pw@10.0.0.1:7000/".into(),
                    "redis://:pw@10.0.0.2:7001/".into()
                ],
                tls: false
            }
        );
        assert_eq!(
            parse_url("rediss-cluster://[::1]:7000").expect("tls cluster"),
            Endpoint::Cluster {
                nodes: vec!["rediss://[::1]:7000/".into()],
                tls: true
            }
        );
        assert_eq!(
            parse_url("redis+sentinel://user:pw@s1:26379,s2:26379/mymaster/3").expect("sentinel"),
            Endpoint::Sentinel {
                sentinels: vec![("s1".into(), 26379), ("s2".into(), 26379)],
                master: "mymaster".into(),
                username: Some("user".into()),
                password: Some("pw".into()),
                db: 3,
                tls: false,
            }
        );
        assert!(parse_url("rediss+sentinel://s1:26379/m")
            .expect("tls sentinel")
            .tls());
        for (bad, says) in [
            ("http://x:1", "must start with"),
            ("redis-cluster://", "at least one host:port"),
            ("redis-cluster://a:1/0", "no db number"),
            ("redis-cluster://a", "host:port"),
            ("redis-cluster://a:0", "port must be"),
            ("redis+sentinel://s1:26379", "master name"),
            ("redis+sentinel://s1:26379/m/99", "must be 0-15"),
            ("redis+sentinel://s1:26379/m/1/x", "path is"),
        ] {
            let e = parse_url(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn tls_files_are_checked_against_the_scheme_and_each_other() {
        let options = |url: &str, tls: TlsFiles| ConnOptions {
            url: url.into(),
            tls,
            ..ConnOptions::default()
        };
        let ca = TlsFiles {
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        };
        let e = check(&options("redis://h:1", ca.clone())).expect_err("plaintext url");
        assert_eq!(e.key, "redis.tls_ca_cert");
        assert!(e.detail.contains("TLS redis.url"), "{e}");
        let e = check(&options("rediss://h:1", ca)).expect_err("missing file");
        assert_eq!(e.key, "redis.tls_ca_cert");
        let half = TlsFiles {
            client_cert: Some("/nonexistent/c.pem".into()),
            ..TlsFiles::default()
        };
        let e = check(&options("rediss://h:1", half)).expect_err("cert without key");
        assert_eq!(e.key, "redis.tls_client_key");
        check(&options("rediss://h:1", TlsFiles::default())).expect("system roots");
        let e = check(&options("redis-cluster://", TlsFiles::default())).expect_err("no nodes");
        assert_eq!(e.key, "redis.url");
    }

    #[test]
    fn a_tls_sentinel_url_with_a_ca_and_a_client_certificate_opens_without_connecting() {
        let dir = tempfile::tempdir().expect("dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (ca, client, client_key) = (
            dir.path().join("ca.pem"),
            dir.path().join("c.pem"),
            dir.path().join("c.key"),
        );
        std::fs::write(&ca, cert.pem()).expect("write");
        std::fs::write(&client, cert.pem()).expect("write");
        std::fs::write(&client_key, key.serialize_pem()).expect("write");
        let options = ConnOptions {
            url: "rediss+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/primary/1".into(),
            tls: TlsFiles {
                ca_cert: Some(ca),
                client_cert: Some(client),
                client_key: Some(client_key.clone()),
            },
            ..ConnOptions::default()
        };
        let conn = Conn::open(&options).expect("lazy: nothing is contacted yet");
        assert!(matches!(conn.target, Target::Sentinel(_)));
        // A key file that is not a key is named.
        let mut broken = options.clone();
        broken.tls.client_key = broken.tls.ca_cert.clone();
        assert_eq!(
            check(&broken).expect_err("not a key").key,
            "redis.tls_client_key"
        );
    }

    #[test]
    fn passwords_are_redacted_on_every_scheme() {
        assert_eq!(
            redacted_url("redis-cluster://:pw@a:1,b:2"),
            "redis-cluster://<redacted>@a:1,b:2"
        );
        assert_eq!(
            redacted_url("redis+sentinel://u:pw@s:1/m"),
            "redis+sentinel://<redacted>@s:1/m"
        );
        assert_eq!(redacted_url("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn server_busy_and_io_errors_are_unavailable_and_wrongtype_is_corrupt() {
        let io: RedisError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(matches!(map_error("x", io), StoreError::Unavailable { .. }));
        let parse: RedisError = (ErrorKind::UnexpectedReturnType, "shape").into();
        assert!(matches!(map_error("x", parse), StoreError::Corrupt { .. }));
    }
}
