//! The booking lifecycle beyond book and cancel: holds (two-phase booking), reschedules and the
//! event log. Pure types and commands; the stores apply them atomically.
//!
//! Hold ids are the hold's only credential (whoever knows one may confirm or release it), so
//! they carry 128 bits from the CSPRNG.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::error::FieldViolation;
use super::rules::Booking;
use super::types::{Applicant, ConfirmationNumber, PassportNumber, RequestId, SlotRef};

/// How long a hold keeps its seats unless configured otherwise.
pub const DEFAULT_HOLD_TTL_SECS: u64 = 10 * 60;
/// How often a group may move its appointment (per receipt) unless configured otherwise.
pub const DEFAULT_RESCHEDULE_LIMIT: u32 = 2;
/// Event pages.
pub const MAX_EVENT_PAGE: u32 = 1000;

random_hex_id!(
    /// A hold's id and only credential: 128 bits from the CSPRNG.
    HoldId,
    "hold_id"
);

impl HoldId {
    /// Hex digits of a hold's reference.
    pub const REFERENCE_LEN: usize = 16;

    /// What events and logs name a hold by: the first 16 hex digits of SHA-1(`hold:<id>`). It
    /// grants nothing (the id cannot be recovered from it), yet the holder, who knows the id,
    /// can compute it to find its hold's events. The Redis scripts compute the same value
    /// (`hold_ref` in holds_lib.lua, with `redis.sha1hex`).
    pub fn reference(&self) -> String {
        let digest = sha1_smol::Sha1::from(format!("hold:{}", self.as_str()))
            .digest()
            .to_string();
        digest[..Self::REFERENCE_LEN].to_owned()
    }
}

/// Where a hold is in its life. Only `Held` holds seats, and only until `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStatus {
    Held,
    Confirmed,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Held => "HELD",
            HoldStatus::Confirmed => "CONFIRMED",
            HoldStatus::Released => "RELEASED",
            HoldStatus::Expired => "EXPIRED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "HELD" => Some(HoldStatus::Held),
            "CONFIRMED" => Some(HoldStatus::Confirmed),
            "RELEASED" => Some(HoldStatus::Released),
            "EXPIRED" => Some(HoldStatus::Expired),
            _ => None,
        }
    }
}

/// Seats taken for a group for a while, to be confirmed into an appointment or released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: HoldId,
    pub slot: SlotRef,
    pub applicants: Vec<Applicant>,
    pub status: HoldStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The appointment it became, once confirmed.
    pub confirmation: Option<ConfirmationNumber>,
    /// The waitlist entry it was offered to, when it is an offer.
    pub entry: Option<super::waitlist::EntryId>,
}

impl Hold {
    /// The hold `request` makes as `id`, held from `now` until `expires_at` (both backends
    /// answer a new hold with exactly this).
    pub fn placed(
        id: &HoldId,
        request: &HoldRequest,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Self {
        Hold {
            id: id.clone(),
            slot: request.slot.clone(),
            applicants: request.applicants.clone(),
            status: HoldStatus::Held,
            created_at: now,
            expires_at,
            confirmation: None,
            entry: None,
        }
    }

    pub fn seats(&self) -> u32 {
        u32::try_from(self.applicants.len()).unwrap_or(u32::MAX)
    }

    /// The status as seen at `now`: a held hold past its expiry is expired, reclaimed or not.
    pub fn status_at(&self, now: DateTime<Utc>) -> HoldStatus {
        match self.status {
            HoldStatus::Held if self.expires_at <= now => HoldStatus::Expired,
            s => s,
        }
    }
}

/// Take seats for a group now, confirm later: the same checks as a booking.
pub type HoldRequest = Booking;

/// Turn a live hold into an appointment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldConfirmation {
    pub request_id: RequestId,
    pub hold: HoldId,
    /// The waiting-room admission the call passed the gate with (see `Booking::admission`).
    pub admission: Option<crate::domain::room::TicketId>,
}

impl HoldConfirmation {
    pub fn fingerprint(&self) -> String {
        fingerprint(&[self.hold.as_str()])
    }
}

/// Give a hold's seats back before it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRelease {
    pub request_id: RequestId,
    pub hold: HoldId,
}

/// Move a whole group to another slot, keeping its confirmation number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reschedule {
    pub request_id: RequestId,
    pub confirmation: ConfirmationNumber,
    pub passport: PassportNumber,
    pub new_slot: SlotRef,
    /// The waiting-room admission the call passed the gate with: the move is one of its
    /// counted steps, checked and counted in the move's own atomic step (see
    /// `Inventory::reschedule`). Not part of the fingerprint.
    pub admission: Option<crate::domain::room::TicketId>,
}

impl Reschedule {
    /// The same move, made under the admission of `ticket`.
    pub fn under_admission(mut self, ticket: Option<crate::domain::room::TicketId>) -> Self {
        self.admission = ticket;
        self
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&[
            self.confirmation.as_str(),
            self.passport.as_str(),
            &self.new_slot.to_string(),
        ])
    }
}

/// One entry of an appointment's move history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: SlotRef,
    pub to: SlotRef,
    pub at: DateTime<Utc>,
}

fn fingerprint(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0x1f]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Position in the event log: `<ms>-<seq>` as in a Redis Stream (the embedded store counts
/// `0-<n>`). Ordered like stream ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    /// `<ms>-<seq>` or `<ms>` (= `<ms>-0`).
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let bad = || FieldViolation::new("", "must be an event id such as 1700000000000-0");
        let (ms, seq) = match text.split_once('-') {
            Some((ms, seq)) => (ms, seq),
            None => (text, "0"),
        };
        let num = |s: &str| -> Result<u64, FieldViolation> {
            if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse().map_err(|_| bad())
        };
        Ok(Self {
            ms: num(ms)?,
            seq: num(seq)?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Where to start reading events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStart {
    /// Only events appended after the call ("$" or empty).
    Latest,
    /// Events strictly after this id (`0` for the whole log).
    After(EventId),
}

/// One entry of the event log: `type` (held, hold_expired, hold_released, booked, moved,
/// cancelled, ...) and its fields as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub kind: String,
    pub fields: BTreeMap<String, String>,
}

impl Event {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_ids_are_128_random_bits_in_hex() {
        let a = HoldId::generate();
        let b = HoldId::generate();
        assert_ne!(a, b);
        assert_eq!(HoldId::parse(a.as_str()).unwrap(), a);
        assert!(HoldId::parse("xyz").is_err());
        assert!(HoldId::parse("").is_err());
    }

    #[test]
    fn event_ids_parse_like_stream_ids_and_order_numerically() {
        assert_eq!(EventId::parse("5").unwrap(), EventId { ms: 5, seq: 0 });
        assert!(EventId::parse("10-0").unwrap() > EventId::parse("9-7").unwrap());
        for bad in ["", "-", "a-1", "1-", "1-2-3", "99999999999999999999999"] {
            assert!(EventId::parse(bad).is_err(), "{bad}");
        }
    }
}
