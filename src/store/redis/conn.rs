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

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClientBuilder, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Script, ScriptInvocation, Value,
};

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
        }
    }
}

/// The URL scheme that selects Redis Cluster: `redis-cluster://host:port,host:port,...` lists
/// seed nodes. Every script touches keys of one hash tag, so the cluster client routes each call
/// to the one shard owning it, follows MOVED/ASK after a failover or resharding, and loads
/// scripts on every primary (`SCRIPT LOAD` goes to all of them).
pub const CLUSTER_SCHEME: &str = "redis-cluster://";

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

fn open_cluster(nodes: &str, options: &ConnOptions) -> Result<ClusterHandle, StoreError> {
    let nodes: Vec<String> = nodes
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| format!("redis://{n}"))
        .collect();
    if nodes.is_empty() {
        return Err(StoreError::Unavailable {
            detail: format!("redis url: {CLUSTER_SCHEME} needs at least one host:port"),
        });
    }
    let client = ClusterClientBuilder::new(nodes)
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
        config,
        current: std::sync::RwLock::new((connection, std::time::Instant::now())),
    })
}

/// What a `Conn` holds: one server's manager, or the replaceable cluster connection.
#[derive(Clone)]
enum Target {
    Single(ConnectionManager),
    Cluster(std::sync::Arc<ClusterHandle>),
}

#[derive(Clone)]
pub struct Conn {
    wait: Option<(u32, Duration)>,
    target: Target,
    deadline: Duration,
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
        if let Some(nodes) = options.url.strip_prefix(CLUSTER_SCHEME) {
            return Ok(Self {
                wait: wait_policy(options),
                target: Target::Cluster(std::sync::Arc::new(open_cluster(nodes, options)?)),
                deadline: options.connect_timeout
                    + options.response_timeout
                    + Duration::from_millis(250),
            });
        }
        let client = Client::open(options.url.as_str()).map_err(|e| StoreError::Unavailable {
            detail: format!("redis url: {e}"),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(options.reconnect_retries)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager =
            ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(Self {
            wait: wait_policy(options),
            target: Target::Single(manager),
            deadline: options.connect_timeout
                + options.response_timeout
                + Duration::from_millis(250),
        })
    }

    /// Every Redis call: bounded by `deadline`, traced as a child span of the RPC named after
    /// the operation (`book`, `read appointment`), and measured (`slotd_redis_*` metrics).
    fn link(&self) -> Link {
        match &self.target {
            Target::Single(m) => Link::Single(m.clone()),
            Target::Cluster(h) => Link::Cluster(h.connection()),
        }
    }

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
        if let (Target::Cluster(handle), true) = (&self.target, timed_out) {
            handle.renew();
        }
        crate::metrics::metrics().redis_call(what, started.elapsed(), result.is_ok());
        result
    }

    /// Runs a script with EVALSHA, loading it on NOSCRIPT (after a restart, failover or SCRIPT
    /// FLUSH). Pipelined `invoke_script` would not reload, so scripts never go in pipelines.
    pub async fn script(
        &self,
        what: &str,
        invocation: &ScriptInvocation<'_>,
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

    /// A script that writes nothing (`#!lua flags=no-writes`): never waits for replicas, so
    /// reads keep working while a shard has lost its replica.
    pub async fn read_script(
        &self,
        what: &str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<Value, StoreError> {
        let mut manager = self.link();
        self.bounded(what, invocation.invoke_async::<Value>(&mut manager))
            .await
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
        let mut manager = self.link();
        let acked = self
            .bounded(
                what,
                ::redis::cmd("WAIT")
                    .arg(replicas)
                    .arg(millis)
                    .query_async::<i64>(&mut manager),
            )
            .await?;
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
        let mut manager = self.link();
        self.bounded(what, cmd.query_async::<Value>(&mut manager))
            .await
    }

    /// Plain commands in one round trip (never scripts, see `script`).
    pub async fn pipeline(&self, what: &str, pipe: &Pipeline) -> Result<Vec<Value>, StoreError> {
        let mut manager = self.link();
        self.bounded(what, pipe.query_async::<Vec<Value>>(&mut manager))
            .await
    }
}

/// A script handle; `Script::new` computes the SHA1 once.
pub fn script(source: &str) -> Script {
    Script::new(source)
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
    fn server_busy_and_io_errors_are_unavailable_and_wrongtype_is_corrupt() {
        let io: RedisError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(matches!(map_error("x", io), StoreError::Unavailable { .. }));
        let parse: RedisError = (ErrorKind::UnexpectedReturnType, "shape").into();
        assert!(matches!(map_error("x", parse), StoreError::Corrupt { .. }));
    }
}
