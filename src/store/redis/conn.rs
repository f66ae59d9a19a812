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

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Cmd, ErrorKind, Pipeline, RedisError, Script, ScriptInvocation, Value};

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
}

impl Default for ConnOptions {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            reconnect_retries: 2,
        }
    }
}

#[derive(Clone)]
pub struct Conn {
    manager: ConnectionManager,
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
            manager,
            deadline: options.connect_timeout
                + options.response_timeout
                + Duration::from_millis(250),
        })
    }

    /// Every Redis call: bounded by `deadline`, traced as a child span of the RPC named after
    /// the operation (`book`, `read appointment`), and measured (`slotd_redis_*` metrics).
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
        let result = match tokio::time::timeout(self.deadline, call)
            .instrument(span)
            .await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(map_error(what, e)),
            Err(_) => Err(StoreError::Unavailable {
                detail: format!("{what}: no answer within {:?}", self.deadline),
            }),
        };
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
        let mut manager = self.manager.clone();
        self.bounded(what, invocation.invoke_async::<Value>(&mut manager))
            .await
    }

    pub async fn cmd(&self, what: &str, cmd: &Cmd) -> Result<Value, StoreError> {
        let mut manager = self.manager.clone();
        self.bounded(what, cmd.query_async::<Value>(&mut manager))
            .await
    }

    /// Plain commands in one round trip (never scripts, see `script`).
    pub async fn pipeline(&self, what: &str, pipe: &Pipeline) -> Result<Vec<Value>, StoreError> {
        let mut manager = self.manager.clone();
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
fn map_error(what: &str, e: RedisError) -> StoreError {
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
