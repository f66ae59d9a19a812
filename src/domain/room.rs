//! The waiting room's rules: its configuration, tickets, the admission step and the estimate of
//! wait. Pure: the stores call `admit_count` and `Bucket` so every backend admits alike.
//!
//! Model: each arrival draws the next ticket number (join order). An admission step, run by
//! every replica a few times a second and atomic in the store, (1) ends sessions past their
//! duration, (2) drops waiters that neither watched nor polled for the waiter timeout, (3) refills
//! a token bucket at the configured rate and (4) admits the lowest-numbered live waiters, as many
//! as the bucket and the cap on active sessions allow. Order is join order because (2) runs
//! before (4) and (4) always takes the lowest numbers.

use std::fmt;

use chrono::{DateTime, Duration, Utc};

use super::error::FieldViolation;

fn bad(description: impl Into<String>) -> FieldViolation {
    FieldViolation::new("", description)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomConfig {
    pub enabled: bool,
    pub admissions_per_minute: u32,
    pub max_active_sessions: u32,
    pub session_duration_secs: u32,
    pub waiter_timeout_secs: u32,
    pub paused: bool,
    /// Calendar reads need an admission token too.
    pub gate_calendar: bool,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            admissions_per_minute: 600,
            max_active_sessions: 1000,
            session_duration_secs: 600,
            waiter_timeout_secs: 60,
            paused: false,
            gate_calendar: false,
        }
    }
}

pub const MAX_ADMISSIONS_PER_MINUTE: u32 = 6_000_000;
pub const MAX_ACTIVE_SESSIONS: u32 = 10_000_000;

impl RoomConfig {
    /// Checks each setting; violations name the proto field.
    pub fn validate(self) -> Result<Self, Vec<FieldViolation>> {
        let mut v = Vec::new();
        if !(1..=MAX_ADMISSIONS_PER_MINUTE).contains(&self.admissions_per_minute) {
            v.push(FieldViolation::new(
                "admissions_per_minute",
                format!("must be between 1 and {MAX_ADMISSIONS_PER_MINUTE}"),
            ));
        }
        if !(1..=MAX_ACTIVE_SESSIONS).contains(&self.max_active_sessions) {
            v.push(FieldViolation::new(
                "max_active_sessions",
                format!("must be between 1 and {MAX_ACTIVE_SESSIONS}"),
            ));
        }
        if !(30..=86_400).contains(&self.session_duration_secs) {
            v.push(FieldViolation::new(
                "session_duration_seconds",
                "must be between 30 and 86400",
            ));
        }
        if !(5..=3_600).contains(&self.waiter_timeout_secs) {
            v.push(FieldViolation::new(
                "waiter_timeout_seconds",
                "must be between 5 and 3600",
            ));
        }
        if v.is_empty() {
            Ok(self)
        } else {
            Err(v)
        }
    }

    /// Tokens the bucket holds at most: one second of admissions, at least one. Over any window
    /// of t seconds at most `burst + rate × t` tickets are admitted.
    pub fn burst(&self) -> f64 {
        (f64::from(self.admissions_per_minute) / 60.0).max(1.0)
    }

    pub fn session_duration(&self) -> Duration {
        Duration::seconds(i64::from(self.session_duration_secs))
    }

    pub fn waiter_timeout(&self) -> Duration {
        Duration::seconds(i64::from(self.waiter_timeout_secs))
    }
}

/// The admission token bucket, shared by every replica through the store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub refilled_at_ms: i64,
}

impl Bucket {
    pub fn full(config: &RoomConfig, now: DateTime<Utc>) -> Self {
        Self {
            tokens: config.burst(),
            refilled_at_ms: now.timestamp_millis(),
        }
    }

    /// Adds the tokens earned since the last refill. A clock reading behind the last refill
    /// (replica skew) earns nothing and does not move the refill time back.
    pub fn refill(&mut self, config: &RoomConfig, now: DateTime<Utc>) {
        let now_ms = now.timestamp_millis();
        let elapsed = now_ms - self.refilled_at_ms;
        if elapsed > 0 {
            let earned = elapsed as f64 * f64::from(config.admissions_per_minute) / 60_000.0;
            self.tokens = (self.tokens + earned).min(config.burst());
            self.refilled_at_ms = now_ms;
        }
    }
}

/// How many waiters one admission step lets in.
pub fn admit_count(config: &RoomConfig, tokens: f64, active: u64, waiting: u64) -> u64 {
    if !config.enabled || config.paused {
        return 0;
    }
    let room = u64::from(config.max_active_sessions).saturating_sub(active);
    let allowed = tokens.max(0.0).floor() as u64;
    allowed.min(room).min(waiting)
}

/// Seconds until `ahead` people are admitted at `rate_per_minute`.
pub fn estimate_wait_secs(ahead: u64, rate_per_minute: f64) -> u32 {
    if ahead == 0 {
        return 0;
    }
    if rate_per_minute <= 0.0 {
        return u32::MAX;
    }
    let secs = (ahead as f64 * 60.0 / rate_per_minute).ceil();
    if secs >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        secs as u32
    }
}

/// A pause between two admission steps longer than this means no replica could reach the store
/// (or none ran): waiters could not heartbeat meanwhile, so their silence is counted again from
/// the step that resumed.
pub const OUTAGE_GAP_MS: i64 = 3_000;

/// When the admission step at `now_ms` follows the previous one at `last_ms`, the instant silence
/// is counted from (`resumed_ms` before, or `now_ms` after an outage).
pub fn resumed_at(last_ms: Option<i64>, resumed_ms: Option<i64>, now_ms: i64) -> i64 {
    match (last_ms, resumed_ms) {
        (Some(last), Some(resumed)) if now_ms - last <= OUTAGE_GAP_MS => resumed,
        _ => now_ms,
    }
}

/// Whether a waiter last seen at `last_seen_ms` is dropped: silent for the whole timeout, counted
/// from no earlier than when the room last resumed.
pub fn is_stale(last_seen_ms: i64, resumed_ms: i64, now_ms: i64, config: &RoomConfig) -> bool {
    now_ms - last_seen_ms.max(resumed_ms) >= i64::from(config.waiter_timeout_secs) * 1000
}

/// Window over which the admission rate is observed.
pub const RATE_WINDOW_SECS: i64 = 60;

/// Shortest client key accepted: 22 characters hold 128 random bits in base64url.
pub const MIN_CLIENT_KEY_LEN: usize = 22;

/// Who a ticket belongs to, and the one credential that rejoins it: Join is idempotent per
/// client key, so whoever presents the key gets the place back with its ticket secret. It must
/// therefore be a random value the front end generates per browser session (16 or more random
/// bytes, base64url), never a receipt number, passport, e-mail or anything another person could
/// know or guess. slotd checks what it can (22-128 characters, at least 8 distinct) and keeps
/// only a keyed digest of it (`AdmissionKeys::client_ref`): the store, and the admission tokens
/// that carry it, never hold the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(String);

impl ClientKey {
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        if text.is_empty() {
            return Err(bad(
                "client_key is required: a random value per browser session (16+ random bytes, base64url)",
            ));
        }
        if text.len() > 128
            || !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err(bad(
                "client_key must be 22-128 of A-Z, a-z, 0-9, '.', '_', ':', '-'",
            ));
        }
        let distinct = text
            .bytes()
            .collect::<std::collections::BTreeSet<u8>>()
            .len();
        if text.len() < MIN_CLIENT_KEY_LEN || distinct < 8 {
            return Err(bad(format!(
                "client_key must be a random value of at least {MIN_CLIENT_KEY_LEN} characters \
                 (16+ random bytes, base64url), never a receipt number or other guessable id: \
                 whoever presents it rejoins the place"
            )));
        }
        Ok(Self(text.to_owned()))
    }

    /// A key as the store keeps it (a digest, or a key stored before the length rule): only
    /// the character set is checked.
    pub fn stored(text: &str) -> Option<Self> {
        let ok = !text.is_empty()
            && text.len() <= 128
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        ok.then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A ticket id: 32 lower-case hex digits (128 random bits). Knowing it is worth nothing without
/// the ticket secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TicketId(String);

impl TicketId {
    pub fn generate() -> Self {
        use rand::Rng;
        let bytes: [u8; 16] = rand::rng().random();
        Self(hex::encode(bytes))
    }

    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        if text.len() != 32
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("ticket_id must be the 32 hex digits Join returned"));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketState {
    Waiting,
    /// Admitted: may book until the session expires.
    Admitted,
    /// Dropped for not watching or polling, or its session ran out.
    Expired,
    Left,
    /// The admitted session ended with a booking.
    Completed,
    /// An operator ended it.
    Revoked,
}

impl TicketState {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketState::Waiting => "WAITING",
            TicketState::Admitted => "ADMITTED",
            TicketState::Expired => "EXPIRED",
            TicketState::Left => "LEFT",
            TicketState::Completed => "COMPLETED",
            TicketState::Revoked => "REVOKED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "WAITING" => TicketState::Waiting,
            "ADMITTED" => TicketState::Admitted,
            "EXPIRED" => TicketState::Expired,
            "LEFT" => TicketState::Left,
            "COMPLETED" => TicketState::Completed,
            "REVOKED" => TicketState::Revoked,
            _ => return None,
        })
    }

    pub fn is_live(self) -> bool {
        matches!(self, TicketState::Waiting | TicketState::Admitted)
    }
}

/// What a ticket holder sees.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketView {
    pub id: TicketId,
    pub client_key: ClientKey,
    /// Join order, from 1.
    pub number: u64,
    pub state: TicketState,
    /// Live waiters with a lower number (0 unless waiting).
    pub ahead: u64,
    /// Admission order, from 1 (0 until admitted).
    pub admission_number: u64,
    pub session_expires_at: Option<DateTime<Utc>>,
    /// Admissions per minute seen over the last minute (configured rate until any are seen).
    pub rate_per_minute: f64,
    /// The room's event sequence when this view was read (see `RoomEvent`): a watch registry
    /// applies only later events to it.
    pub seq: u64,
}

impl TicketView {
    pub fn estimated_wait_secs(&self) -> u32 {
        estimate_wait_secs(self.ahead, self.rate_per_minute)
    }
}

/// One ticket leaving the line (admitted, expired, left, revoked), in the room's one event
/// sequence. Every ticket leaves the line at most once, so the sequence is what a replica needs
/// to keep its watchers' `people_ahead` exact without a read per watcher: a waiter's count drops
/// by one for every event of a lower ticket number after the view it started from.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomEvent {
    pub seq: u64,
    pub id: TicketId,
    pub number: u64,
    /// The state the ticket left the line in.
    pub state: TicketState,
    pub admission_number: u64,
    pub session_expires_at: Option<DateTime<Utc>>,
}

/// What one replica's watch sync learns (see `WaitingRoomStore::sync`).
#[derive(Debug, Clone, PartialEq)]
pub struct Synced {
    /// The last event's sequence number (0 before any).
    pub head: u64,
    /// The events after the requested cursor are no longer all kept (the log was trimmed past
    /// it): the caller must re-read its tickets instead of applying `events`.
    pub gap: bool,
    /// Events after the cursor, in sequence order, at most the requested number.
    pub events: Vec<RoomEvent>,
    /// Admissions per minute seen over the last minute (as in `TicketView`).
    pub rate_per_minute: f64,
}

/// How many events the store keeps for watch registries to catch up with; a replica that falls
/// further behind re-reads its tickets one by one (a few per tick).
pub const EVENT_LOG_KEEP: u64 = 100_000;

/// At most this many silent waiters are dropped, and this many ended tickets forgotten, in one
/// admission step: a join flood followed by mass abandonment cannot turn one step into a long
/// script (the rest go in the following steps, ten a second per replica).
pub const EXPIRE_PER_STEP: usize = 1_000;

#[derive(Debug, Clone, PartialEq)]
pub struct RoomStats {
    pub config: RoomConfig,
    pub waiting: u64,
    pub active: u64,
    pub admitted_total: u64,
    pub expired_total: u64,
    pub last_ticket_number: u64,
    pub observed_per_minute: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(rate: u32, cap: u32) -> RoomConfig {
        RoomConfig {
            enabled: true,
            admissions_per_minute: rate,
            max_active_sessions: cap,
            ..RoomConfig::default()
        }
    }

    #[test]
    fn the_bucket_refills_at_the_rate_and_never_beyond_one_second() {
        let cfg = enabled(120, 1000); // 2 per second
        let t0 = DateTime::<Utc>::UNIX_EPOCH + Duration::days(10_000);
        let mut b = Bucket::full(&cfg, t0);
        assert_eq!(b.tokens, 2.0);
        b.tokens = 0.0;
        b.refill(&cfg, t0 + Duration::milliseconds(500));
        assert!((b.tokens - 1.0).abs() < 1e-9);
        b.refill(&cfg, t0 + Duration::seconds(60));
        assert_eq!(b.tokens, 2.0);
        // A clock behind the last refill earns nothing and keeps the refill time.
        b.tokens = 0.0;
        b.refill(&cfg, t0);
        assert_eq!(
            (b.tokens, b.refilled_at_ms),
            (0.0, (t0 + Duration::seconds(60)).timestamp_millis())
        );
    }

    #[test]
    fn admissions_respect_tokens_cap_waiters_pause_and_disable() {
        let cfg = enabled(600, 10);
        assert_eq!(admit_count(&cfg, 5.7, 0, 100), 5);
        assert_eq!(admit_count(&cfg, 50.0, 8, 100), 2);
        assert_eq!(admit_count(&cfg, 50.0, 12, 100), 0);
        assert_eq!(admit_count(&cfg, 50.0, 0, 3), 3);
        assert_eq!(
            admit_count(
                &RoomConfig {
                    paused: true,
                    ..cfg
                },
                50.0,
                0,
                3
            ),
            0
        );
        assert_eq!(
            admit_count(
                &RoomConfig {
                    enabled: false,
                    ..cfg
                },
                50.0,
                0,
                3
            ),
            0
        );
    }

    #[test]
    fn the_estimate_is_people_ahead_over_the_rate() {
        assert_eq!(estimate_wait_secs(0, 60.0), 0);
        assert_eq!(estimate_wait_secs(30, 60.0), 30);
        assert_eq!(estimate_wait_secs(1, 7.0), 9);
        assert_eq!(estimate_wait_secs(5, 0.0), u32::MAX);
    }

    #[test]
    fn silence_during_an_outage_does_not_cost_the_place() {
        let cfg = RoomConfig {
            waiter_timeout_secs: 60,
            ..RoomConfig::default()
        };
        // Steady ticking: the resume instant stays put.
        assert_eq!(resumed_at(Some(10_000), Some(1_000), 10_200), 1_000);
        // Ten minutes without a step: silence counts from now.
        let r = resumed_at(Some(10_000), Some(1_000), 610_000);
        assert_eq!(r, 610_000);
        assert!(!is_stale(5_000, r, 610_000, &cfg));
        assert!(is_stale(5_000, r, 670_000, &cfg));
        assert!(!is_stale(620_000, r, 670_000, &cfg));
    }

    #[test]
    fn settings_are_bounded_and_named() {
        let bad = RoomConfig {
            admissions_per_minute: 0,
            waiter_timeout_secs: 1,
            ..RoomConfig::default()
        };
        let fields: Vec<_> = bad
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["admissions_per_minute", "waiter_timeout_seconds"]);
        assert!(RoomConfig::default().validate().is_ok());
    }

    #[test]
    fn ids_and_keys_parse_strictly() {
        let id = TicketId::generate();
        assert_eq!(TicketId::parse(id.as_str()).unwrap(), id);
        assert!(TicketId::parse("ABC").is_err());
        assert!(TicketId::parse(&"G".repeat(32)).is_err());
        assert!(ClientKey::parse("sess-01:Kq7xZ2pLm9TvW4rN8sYb3c").is_ok());
        assert!(ClientKey::parse("").is_err());
        assert!(ClientKey::parse("a b").is_err());
        // Guessable: short, or long but made of a few characters.
        assert!(ClientKey::parse("receipt-12345").is_err());
        assert!(ClientKey::parse("0000000000000000000000123").is_err());
        assert!(ClientKey::stored("sess-01").is_some());
    }
}
