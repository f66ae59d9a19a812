//! Per-client rate limits (token buckets, per replica, in memory).
//!
//! Who the client is: the peer IPv4 address, or the /64 prefix of a peer IPv6 address (one
//! subscriber gets a whole /64, so counting single IPv6 addresses would hand each attacker 2^64
//! identities). A peer in `limits.trusted_proxies` (addresses or CIDRs of the edge proxies that
//! terminate the public connections) may name the client in `x-client-id` metadata instead;
//! from anyone else `x-client-id` is ignored, so a client cannot dodge its limit by inventing
//! identities.
//!
//! Five buckets per client: BookingService calls, CalendarService calls, WaitingRoomService
//! calls (Join, GetStatus, Watch, Leave: a crowd must not be able to flood the room's store
//! either), failed lookups (NOT_FOUND from GetAppointment, CancelAppointment,
//! RescheduleAppointment, RenderConfirmation or JoinWaitlist; RECEIPT_NOT_REGISTERED from
//! BookAppointment, HoldSlot or JoinWaitlist), and failed operator authentications: a client
//! that guesses confirmation numbers, or probes which receipt numbers exist, runs out after a
//! handful of misses per hour, whatever its call rate, which with 68.7-bit numbers makes
//! enumeration hopeless.
//!
//! The state is bounded by `limits.max_clients`. When the table is full, only clients whose
//! bucket is full again (idle: forgetting them changes nothing) are forgotten, in one sweep at
//! most every `SWEEP_EVERY`; while no room is free, new clients share one overflow bucket. A
//! busy bucket, above all a spent failed-lookup budget, is never forgotten, so filling the table
//! cannot buy an enumerator a fresh budget. Limits are per replica: N replicas allow N times
//! the rate.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::LimitSettings;

/// Which limit a call counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Booking,
    Calendar,
    Room,
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
            Limit::Room => "room",
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

/// The bucket every client shares that arrives while the table is full of busy clients.
const OVERFLOW: &str = "overflow";
/// How often a full table is swept for idle clients (a sweep is O(table)).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Table {
    clients: HashMap<String, Bucket>,
    last_sweep: Option<Instant>,
}

#[derive(Debug)]
struct Buckets {
    per_sec: f64,
    burst: f64,
    max_clients: usize,
    table: Mutex<Table>,
}

impl Buckets {
    fn new(per_sec: f64, burst: u32, max_clients: usize) -> Self {
        Self {
            per_sec,
            burst: f64::from(burst.max(1)),
            max_clients,
            table: Mutex::new(Table::default()),
        }
    }

    /// The key whose bucket counts `client`: its own, or the shared overflow bucket while the
    /// table is full of busy clients. Never forgets a bucket that is not full.
    fn key_for<'a>(&self, table: &mut Table, client: &'a str, now: Instant) -> &'a str {
        if table.clients.contains_key(client) || table.clients.len() < self.max_clients {
            return client;
        }
        let due = table
            .last_sweep
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY);
        if due {
            table.last_sweep = Some(now);
            let (per_sec, burst) = (self.per_sec, self.burst);
            table.clients.retain(|key, b| {
                let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
                key == OVERFLOW || b.tokens + elapsed * per_sec < burst
            });
        }
        if table.clients.len() < self.max_clients {
            client
        } else {
            OVERFLOW
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
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let key = self.key_for(&mut table, client, now);
        // The overflow bucket may be one entry over `max_clients`: the bound stays exact + 1.
        let bucket = table.clients.entry(key.to_owned()).or_insert(Bucket {
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

    /// Spends one token, going no lower than empty (the overflow bucket's for a client that
    /// has none of its own).
    fn charge(&self, client: &str, now: Instant) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let key = if table.clients.contains_key(client) {
            client
        } else {
            OVERFLOW
        };
        if let Some(bucket) = table.clients.get_mut(key) {
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
    room: Buckets,
    lookups: Buckets,
    operators: Buckets,
    trusted_proxies: Vec<IpNet>,
}

/// An IP network, `10.0.0.0/8` or `2001:db8::/32`; a bare address is its own /32 or /128.
/// Written as that text in config (`limits.trusted_proxies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("`{text}` is not an IP address or CIDR (10.0.0.0/8, 2001:db8::/32)")
        })?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0-{max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl TryFrom<String> for IpNet {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<IpNet> for String {
    fn from(net: IpNet) -> String {
        net.to_string()
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The /64 network of an IPv6 address, the unit one subscriber is given.
fn slash_64(ip: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(ip) & (u128::MAX << 64))
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
            room: Buckets::new(
                f64::from(settings.room_per_minute.max(1)) / 60.0,
                settings.room_burst,
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
    /// `ip:<peer IPv4 address>` or `ip:<peer IPv6 /64>/64`.
    pub fn client(&self, peer: Option<SocketAddr>, client_id: Option<&str>) -> String {
        let Some(peer) = peer else {
            return "unknown".into();
        };
        let ip = peer.ip().to_canonical();
        if self.trusted_proxies.iter().any(|net| net.contains(ip)) {
            if let Some(id) = client_id.filter(|id| {
                (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
            }) {
                return format!("id:{id}");
            }
        }
        match ip {
            IpAddr::V4(v4) => format!("ip:{v4}"),
            IpAddr::V6(v6) => format!("ip:{}/64", slash_64(v6)),
        }
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
            Limit::Room => &self.room,
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
        let n = l.booking.table.lock().expect("lock").clients.len();
        // max_clients, plus the shared overflow bucket.
        assert!(n <= 3, "{n}");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_ipv4_by_address() {
        let l = limits();
        let a: SocketAddr = "[2001:db8:1:2:aaaa::1]:4000".parse().expect("addr");
        let b: SocketAddr = "[2001:db8:1:2:ffff:1:2:3]:4000".parse().expect("addr");
        let other: SocketAddr = "[2001:db8:1:3::1]:4000".parse().expect("addr");
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:4000".parse().expect("addr");
        assert_eq!(l.client(Some(a), None), "ip:2001:db8:1:2::/64");
        assert_eq!(l.client(Some(a), None), l.client(Some(b), None));
        assert_ne!(l.client(Some(a), None), l.client(Some(other), None));
        assert_eq!(l.client(Some(mapped), None), "ip:192.0.2.7");
        // One /64 shares one bucket: rotating addresses inside it gains nothing.
        for i in 0..3 {
            let peer: SocketAddr = format!("[2001:db8:1:2::{i:x}]:4000").parse().expect("addr");
            l.admit(Limit::Booking, false, &l.client(Some(peer), None))
                .expect("within the burst");
        }
        let next: SocketAddr = "[2001:db8:1:2::ffff]:4000".parse().expect("addr");
        l.admit(Limit::Booking, false, &l.client(Some(next), None))
            .expect_err("the /64 spent its burst");
    }

    #[test]
    fn trusted_proxies_accept_cidrs_and_plain_addresses() {
        let l = Limits::new(&LimitSettings {
            trusted_proxies: ["10.0.0.1", "192.168.0.0/16", "2001:db8:aa::/48"]
                .iter()
                .map(|t| t.parse().expect("net"))
                .collect(),
            ..LimitSettings::default()
        });
        for (peer, trusted) in [
            ("10.0.0.1:1", true),
            ("10.0.0.2:1", false),
            ("192.168.44.5:1", true),
            ("192.169.0.1:1", false),
            ("[2001:db8:aa:ffff::9]:1", true),
            ("[2001:db8:ab::9]:1", false),
            ("[::ffff:192.168.1.1]:1", true),
        ] {
            let peer: SocketAddr = peer.parse().expect("addr");
            let id = l.client(Some(peer), Some("user-1"));
            assert_eq!(id == "id:user-1", trusted, "{peer}: {id}");
        }
        for bad in [
            "10.0.0.0/33",
            "2001:db8::/129",
            "example.com",
            "10.0.0.0/",
            "/8",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
        assert_eq!(
            "10.0.0.0/8".parse::<IpNet>().expect("net").to_string(),
            "10.0.0.0/8"
        );
        assert!("0.0.0.0/0"
            .parse::<IpNet>()
            .expect("net")
            .contains("8.8.8.8".parse().expect("ip")));
    }

    #[test]
    fn a_full_client_table_never_forgets_a_spent_lookup_budget() {
        let l = limits(); // max_clients 2, lookup burst 2
        for c in ["enumerator", "busy"] {
            l.admit(Limit::Booking, true, c).expect("first lookup");
            l.lookup_failed(c);
            l.lookup_failed(c);
        }
        assert_eq!(
            l.admit(Limit::Booking, true, "enumerator")
                .expect_err("budget spent")
                .limit,
            Limit::LookupFailures
        );
        // A flood of new identities fills the table: they share the overflow bucket, nobody's
        // spent budget is forgotten.
        for i in 0..1000 {
            let _ = l.admit(Limit::Booking, true, &format!("ip:198.51.100.{i}"));
        }
        assert_eq!(
            l.admit(Limit::Booking, true, "enumerator")
                .expect_err("still spent after the flood")
                .limit,
            Limit::LookupFailures
        );
        let table = l.lookups.table.lock().expect("lock");
        assert!(table.clients.contains_key("enumerator"));
        assert!(table.clients.len() <= 3, "{}", table.clients.len());
    }

    #[test]
    fn idle_clients_make_room_for_new_ones() {
        let l = limits(); // max_clients 2
        let start = Instant::now();
        l.booking.take("a", 1.0, start).expect("a");
        l.booking.take("b", 1.0, start).expect("b");
        // Two seconds later both buckets are full again (60/min, burst 3): idle, forgettable.
        let later = start + Duration::from_secs(2);
        l.booking.take("c", 1.0, later).expect("c");
        let table = l.booking.table.lock().expect("lock");
        assert!(
            table.clients.contains_key("c"),
            "{:?}",
            table.clients.keys()
        );
        assert!(!table.clients.contains_key(OVERFLOW));
    }
}
