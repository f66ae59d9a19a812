//! Per-client rate limits (token buckets, per replica, in memory).
//!
//! Who the client is: the peer IP address. A peer listed in `limits.trusted_proxies` (the edge
//! proxy that terminates the public connections) may name the client in `x-client-id`
//! metadata instead; from anyone else `x-client-id` is ignored, so a client cannot dodge its
//! limit by inventing identities.
//!
//! Three buckets per client: BookingService calls, CalendarService calls, and failed
//! lookups (NOT_FOUND from GetAppointment, CancelAppointment, RescheduleAppointment,
//! RenderConfirmation or JoinWaitlist; RECEIPT_NOT_REGISTERED from BookAppointment, HoldSlot
//! or JoinWaitlist): a client that guesses confirmation numbers, or probes which receipt
//! numbers exist, runs out after a handful of misses per hour, whatever its call rate, which
//! with 68.7-bit numbers makes enumeration hopeless.
//!
//! The state is bounded by `limits.max_clients`; when full, clients whose bucket is full again
//! (idle) are forgotten first. Limits are per replica: N replicas allow N times the rate.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::LimitSettings;

/// Which limit a call counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Booking,
    Calendar,
    LookupFailures,
    /// Failed operator authentication (AdminService: wrong or missing token, certificate for a
    /// name not allowed).
    OperatorFailures,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Booking => "booking",
            Limit::Calendar => "calendar",
            Limit::LookupFailures => "lookup_failures",
            Limit::OperatorFailures => "operator_failures",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Buckets {
    per_sec: f64,
    burst: f64,
    max_clients: usize,
    clients: Mutex<HashMap<String, Bucket>>,
}

impl Buckets {
    fn new(per_sec: f64, burst: u32, max_clients: usize) -> Self {
        Self {
            per_sec,
            burst: f64::from(burst.max(1)),
            max_clients,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.at = now;
    }

    fn wait_for_one(&self, b: &Bucket) -> Duration {
        let missing = (1.0 - b.tokens).max(0.0);
        Duration::from_secs_f64((missing / self.per_sec).clamp(0.001, 3600.0))
    }

    /// Takes `cost` tokens (1 to spend, 0 to only look); Err(retry after) when empty.
    fn take(&self, client: &str, cost: f64, now: Instant) -> Result<(), Duration> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if !clients.contains_key(client) && clients.len() >= self.max_clients {
            let (per_sec, burst) = (self.per_sec, self.burst);
            clients.retain(|_, b| {
                let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
                b.tokens + elapsed * per_sec < burst
            });
            if clients.len() >= self.max_clients {
                // Everyone is busy: forget them all rather than grow without bound.
                clients.clear();
            }
        }
        let bucket = clients.entry(client.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= cost;
            Ok(())
        } else {
            Err(self.wait_for_one(bucket))
        }
    }

    /// Spends one token, going no lower than empty.
    fn charge(&self, client: &str, now: Instant) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = clients.get_mut(client) {
            self.refill(bucket, now);
            bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        }
    }
}

/// A refused call: which limit, and when one more call would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: Limit,
    pub retry_after: Duration,
}

#[derive(Debug)]
pub struct Limits {
    booking: Buckets,
    calendar: Buckets,
    lookups: Buckets,
    operators: Buckets,
    trusted_proxies: Vec<IpAddr>,
}

impl Limits {
    pub fn new(settings: &LimitSettings) -> Self {
        let max = settings.max_clients.max(1);
        Self {
            booking: Buckets::new(
                f64::from(settings.booking_per_minute.max(1)) / 60.0,
                settings.booking_burst,
                max,
            ),
            calendar: Buckets::new(
                f64::from(settings.calendar_per_minute.max(1)) / 60.0,
                settings.calendar_burst,
                max,
            ),
            lookups: Buckets::new(
                f64::from(settings.lookup_failures_per_hour.max(1)) / 3600.0,
                settings.lookup_failure_burst,
                max,
            ),
            operators: Buckets::new(
                f64::from(settings.operator_failures_per_hour.max(1)) / 3600.0,
                settings.operator_failure_burst,
                max,
            ),
            trusted_proxies: settings.trusted_proxies.clone(),
        }
    }

    /// The client a call is counted for: `id:<x-client-id>` from a trusted proxy, else
    /// `ip:<peer address>`.
    pub fn client(&self, peer: Option<SocketAddr>, client_id: Option<&str>) -> String {
        let Some(peer) = peer else {
            return "unknown".into();
        };
        let ip = peer.ip().to_canonical();
        if self.trusted_proxies.contains(&ip) {
            if let Some(id) = client_id.filter(|id| {
                (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
            }) {
                return format!("id:{id}");
            }
        }
        format!("ip:{ip}")
    }

    /// Admits one call of `limit` (and, for lookups, checks the failure budget is not spent).
    pub fn admit(&self, limit: Limit, lookup: bool, client: &str) -> Result<(), Exceeded> {
        let now = Instant::now();
        if lookup {
            self.lookups
                .take(client, 0.0, now)
                .map_err(|retry_after| Exceeded {
                    limit: Limit::LookupFailures,
                    retry_after,
                })?;
        }
        let buckets = match limit {
            Limit::Booking => &self.booking,
            Limit::Calendar => &self.calendar,
            Limit::LookupFailures => &self.lookups,
            Limit::OperatorFailures => &self.operators,
        };
        buckets
            .take(client, 1.0, now)
            .map_err(|retry_after| Exceeded { limit, retry_after })
    }

    /// A confirmation lookup by `client` failed: spends its failure budget.
    pub fn lookup_failed(&self, client: &str) {
        self.lookups.charge(client, Instant::now());
    }

    /// Whether `client` may still try to authenticate as an operator (its failure budget is
    /// not spent); checked before every AdminService call.
    pub fn admit_operator(&self, client: &str) -> Result<(), Exceeded> {
        self.operators
            .take(client, 0.0, Instant::now())
            .map_err(|retry_after| Exceeded {
                limit: Limit::OperatorFailures,
                retry_after,
            })
    }

    /// An operator authentication by `client` failed: spends its failure budget.
    pub fn operator_failed(&self, client: &str) {
        self.operators.charge(client, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(&LimitSettings {
            booking_per_minute: 60,
            booking_burst: 3,
            lookup_failures_per_hour: 1,
            lookup_failure_burst: 2,
            trusted_proxies: vec!["10.0.0.1".parse().expect("ip")],
            max_clients: 2,
            ..LimitSettings::default()
        })
    }

    #[test]
    fn a_client_gets_its_burst_then_a_retry_delay() {
        let l = limits();
        for _ in 0..3 {
            l.admit(Limit::Booking, false, "ip:1.2.3.4")
                .expect("within burst");
        }
        let e = l
            .admit(Limit::Booking, false, "ip:1.2.3.4")
            .expect_err("limited");
        assert_eq!(e.limit, Limit::Booking);
        assert!(e.retry_after > Duration::ZERO && e.retry_after <= Duration::from_secs(1));
        l.admit(Limit::Booking, false, "ip:5.6.7.8")
            .expect("another client has its own bucket");
    }

    #[test]
    fn failed_lookups_close_the_door_on_lookups_only() {
        let l = limits();
        l.admit(Limit::Booking, true, "c").expect("first lookup");
        l.lookup_failed("c");
        l.lookup_failed("c");
        let e = l
            .admit(Limit::Booking, true, "c")
            .expect_err("no misses left");
        assert_eq!(e.limit, Limit::LookupFailures);
        l.admit(Limit::Booking, false, "c")
            .expect("booking itself still passes");
    }

    #[test]
    fn x_client_id_counts_only_from_a_trusted_proxy() {
        let l = limits();
        let proxy: SocketAddr = "10.0.0.1:4000".parse().expect("addr");
        let other: SocketAddr = "10.0.0.9:4000".parse().expect("addr");
        assert_eq!(l.client(Some(proxy), Some("user-7")), "id:user-7");
        assert_eq!(l.client(Some(proxy), None), "ip:10.0.0.1");
        assert_eq!(l.client(Some(other), Some("user-7")), "ip:10.0.0.9");
        assert_eq!(l.client(Some(proxy), Some("bad id")), "ip:10.0.0.1");
    }

    #[test]
    fn the_client_table_stays_bounded() {
        let l = limits();
        for i in 0..10 {
            let _ = l.admit(Limit::Booking, false, &format!("ip:10.1.0.{i}"));
        }
        let n = l.booking.clients.lock().expect("lock").len();
        assert!(n <= 2, "{n}");
    }
}
