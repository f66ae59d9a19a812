//! Bounds on server streams (`WatchAvailability`, `WatchOffers`): each client (as `limits`
//! identifies it: `x-client-id` from a trusted proxy, else the peer IP) holds at most
//! `streams.max_per_client` open streams at once, and every stream ends after
//! `streams.max_stream_lifetime_secs`.
//!
//! The end at the lifetime is clean: the stream closes with status OK and no error. The client
//! resumes by opening the same call again: `WatchAvailability` starts with a full snapshot
//! (`snapshot = true`) of its range and `WatchOffers` with the entry as it is now, so nothing
//! is missed between the two streams and no cursor is needed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::limits::Limits;

/// The settings (`streams.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Streams one client may hold open at once.
    pub max_per_client: u32,
    /// How long one stream lives before it ends cleanly (the client opens a new one).
    pub max_lifetime: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            max_per_client: 32,
            max_lifetime: Duration::from_secs(30 * 60),
        }
    }
}

impl StreamOptions {
    /// No per-client cap and a day's lifetime: the library default (tests, benches); the binary
    /// sets `streams.*`.
    pub fn unlimited() -> Self {
        Self {
            max_per_client: u32::MAX,
            max_lifetime: Duration::from_secs(86_400),
        }
    }
}

/// A client already holds its cap of open streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManyStreams {
    pub max: u32,
}

/// The open streams of every client of this replica.
pub struct Streams {
    options: StreamOptions,
    /// Who a call is counted for (the rate limits' client rule, trusted proxies included).
    limits: Arc<Limits>,
    open: Mutex<HashMap<String, u32>>,
}

/// One open stream; dropping it (the stream ended or the client left) frees its place.
pub struct StreamPermit {
    owner: Arc<Streams>,
    client: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.owner.lock();
        if let Some(n) = open.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

impl Streams {
    pub fn new(options: StreamOptions, limits: Arc<Limits>) -> Arc<Self> {
        Arc::new(Self {
            options,
            limits,
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn options(&self) -> StreamOptions {
        self.options
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Streams `client` holds open now.
    pub fn open_for(&self, client: &str) -> u32 {
        self.lock().get(client).copied().unwrap_or(0)
    }

    /// The client a call is counted for.
    pub fn client<T>(&self, request: &tonic::Request<T>) -> String {
        let client_id = request
            .metadata()
            .get("x-client-id")
            .and_then(|v| v.to_str().ok());
        self.limits.client(request.remote_addr(), client_id)
    }

    /// Takes one of the client's places, or refuses when it holds `max_per_client` already.
    pub fn open(self: &Arc<Self>, client: String) -> Result<StreamPermit, TooManyStreams> {
        let mut open = self.lock();
        let n = open.entry(client.clone()).or_insert(0);
        if *n >= self.options.max_per_client {
            return Err(TooManyStreams {
                max: self.options.max_per_client,
            });
        }
        *n += 1;
        drop(open);
        Ok(StreamPermit {
            owner: self.clone(),
            client,
        })
    }

    /// When a stream opened now must end.
    pub fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.options.max_lifetime
    }
}
