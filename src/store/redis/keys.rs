//! Key names, built here and documented in `docs/redis-keys.md` (the exceptions, keys the
//! waitlist offer step and its kin derive inside scripts from `Keys::prefix`, run behind
//! `lua/cluster_guard.lua` on a Redis Cluster). Every key carries the deployment's one hash tag, `{slotd}` by default,
//! so every script touches keys of one Redis Cluster slot and may check the global applicant
//! rules (one active appointment per passport, one per receipt) atomically with the seats.

use crate::domain::lifecycle::HoldId;
use crate::domain::types::{
    push_date, CategoryId, ConfirmationNumber, DayRef, PassportNumber, PostId, ReceiptNumber,
    RequestId, SlotTime,
};
use crate::domain::waitlist::EntryId;

/// The default hash tag.
pub const DEFAULT_TAG: &str = "slotd";

/// A hash tag is 1-32 of A-Z, a-z, 0-9, `_` and `-` (no braces or colons, which would change the
/// cluster slot or the key layout).
pub fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "redis tag {tag:?} must be 1-32 of A-Z, a-z, 0-9, '_' and '-'"
        ))
    }
}

/// `HHMM` of a slot time, the field prefix in day hashes and active indexes ("0815").
pub fn hhmm(time: SlotTime) -> String {
    let [h1, h2, _, m1, m2] = time.digits();
    [h1, h2, m1, m2].into_iter().map(char::from).collect()
}

/// The slot time of an `HHMM` field prefix.
pub fn parse_hhmm(text: &str) -> Option<SlotTime> {
    if text.len() != 4 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: u16 = text[..2].parse().ok()?;
    let minutes: u16 = text[2..].parse().ok()?;
    if minutes >= 60 {
        return None;
    }
    SlotTime::from_minutes(hours * 60 + minutes)
}

/// Builds every key of one deployment: `slotd:{<tag>}:<kind>:...`.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(tag: &str) -> Result<Self, String> {
        validate_tag(tag)?;
        Ok(Self {
            prefix: format!("slotd:{{{tag}}}:"),
        })
    }

    /// `<prefix><part><part>...`, sized once: keys are built on every call, and `format!` of
    /// its keys and labels cost a booking ~20,000 instructions (benches/README.md §25).
    fn key(&self, parts: &[&str]) -> String {
        let mut key =
            String::with_capacity(self.prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        key.push_str(&self.prefix);
        parts.iter().for_each(|p| key.push_str(p));
        key
    }

    /// `<prefix><kind><POST>:<CAT>:<DATE>`.
    fn day_key(&self, kind: &str, day: &DayRef) -> String {
        let mut key = String::with_capacity(
            self.prefix.len()
                + kind.len()
                + day.post.as_str().len()
                + day.category.as_str().len()
                + 12,
        );
        key.push_str(&self.prefix);
        key.push_str(kind);
        push_day_suffix(&mut key, day);
        key
    }

    /// Hash of a day's slots: `<HHMM>:c` capacity, `<HHMM>:b` booked, `<HHMM>:x` closed (0/1).
    pub fn day(&self, day: &DayRef) -> String {
        self.day_key("day:", day)
    }

    /// Hash of a day's BOOKED appointments: confirmation → `<HHMM>:<seats>`.
    pub fn active(&self, day: &DayRef) -> String {
        self.day_key("active:", day)
    }

    /// Layout 1 only (before `LAYOUT`): the day's manifest sorted set, score 0, member
    /// `<MMMM>-<CONF>`. Layout 2 writes none (the manifest is the active index, sorted when
    /// read); `slotd redis migrate` deletes what layout 1 left.
    pub fn manifest(&self, day: &DayRef) -> String {
        self.day_key("manifest:", day)
    }

    /// Sorted set of a day's cancelled appointments (as the manifest: score 0, member
    /// `<MMMM>-<CONF>`), for listings with cancelled ones; it expires
    /// `booking.retention_days` after its latest cancellation.
    pub fn cancelled(&self, day: &DayRef) -> String {
        self.day_key("cancelled:", day)
    }

    pub fn receipt(&self, number: &ReceiptNumber) -> String {
        self.key(&["receipt:", number.as_str()])
    }

    pub fn passport(&self, number: &PassportNumber) -> String {
        self.key(&["passport:", number.as_str()])
    }

    pub fn appointment(&self, confirmation: &ConfirmationNumber) -> String {
        self.key(&["appt:", confirmation.as_str()])
    }

    pub fn idem_book(&self, request_id: &RequestId) -> String {
        self.key(&["idem:book:", request_id.as_str()])
    }

    pub fn idem_cancel(&self, request_id: &RequestId) -> String {
        self.key(&["idem:cancel:", request_id.as_str()])
    }

    pub fn events(&self) -> String {
        self.key(&["events"])
    }

    /// Sorted set of a day's holds (live, or expired and not yet reclaimed): member
    /// `<HHMM>:<seats>:<HOLD_ID>`, score = expiry in ms.
    pub fn holds(&self, day: &DayRef) -> String {
        self.day_key("holds:", day)
    }

    /// Sorted set of every hold of every day, for the sweeper: member
    /// `<POST>:<CAT>:<DATE>:<HHMM>:<seats>:<HOLD_ID>`, score = expiry in ms.
    /// Hash of what one waiting-room admission did (`booked`, `steps`): in the booking hash
    /// tag, so the booking script records it atomically.
    pub fn admission(&self, ticket: &crate::domain::room::TicketId) -> String {
        format!("{}admission:{ticket}", self.prefix)
    }

    pub fn holds_due(&self) -> String {
        self.key(&["holds-due"])
    }

    pub fn hold(&self, id: &HoldId) -> String {
        format!("{}hold:{id}", self.prefix)
    }

    pub fn idem_hold(&self, request_id: &RequestId) -> String {
        self.key(&["idem:hold:", request_id.as_str()])
    }

    pub fn idem_reschedule(&self, request_id: &RequestId) -> String {
        self.key(&["idem:reschedule:", request_id.as_str()])
    }

    /// The prefix `slotd:{<tag>}:` every key starts with (the offer step builds waitlist keys
    /// from it inside scripts, see `holds_lib.lua`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Hash of a waitlist entry.
    pub fn entry(&self, id: &EntryId) -> String {
        format!("{}wle:{id}", self.prefix)
    }

    /// Sorted set of the entries in line for a post and category, score = join sequence.
    pub fn line(&self, post: &PostId, category: &CategoryId) -> String {
        format!("{}wlq:{post}:{category}", self.prefix)
    }

    /// Sorted set of the entries in line that accept a date, score = join sequence.
    pub fn date_line(&self, day: &DayRef) -> String {
        self.day_key("wl:", day)
    }

    /// The entry a passport waits in.
    pub fn waiting_passport(&self, number: &PassportNumber) -> String {
        self.key(&["wlp:", number.as_str()])
    }

    /// Sorted set of the entries in line by when their range has passed (retire-at, ms): the
    /// sweeper retires them in bounded batches.
    pub fn waitlist_due(&self) -> String {
        self.key(&["wl-due"])
    }

    /// Sorted set of the opened days by when they have passed everywhere (retire-at, ms),
    /// member `<POST>:<CAT>:<DATE>`: the sweeper retires their BOOKED appointments.
    pub fn days_due(&self) -> String {
        self.key(&["days-due"])
    }

    /// Sorted set of retired appointments by the end of their retention (ms), member
    /// `<CONF>`: the sweeper forgets their records then.
    pub fn appointment_expiry(&self) -> String {
        self.key(&["appt-expire"])
    }

    /// String: the deployment's key layout version (`layout::LAYOUT`), written at the first
    /// start on an empty deployment or by `slotd redis migrate`.
    pub fn layout(&self) -> String {
        self.key(&["layout"])
    }

    /// Hash of the one-time backfill pass into the due indexes (`cursor`, `done`).
    pub fn backfill(&self) -> String {
        self.key(&["backfill"])
    }

    pub fn join_sequence(&self) -> String {
        self.key(&["wlseq"])
    }

    /// Hash `<POST>:<CAT>` → percent of released seats offered to the waitlist.
    pub fn waitlist_share(&self) -> String {
        self.key(&["wlshare"])
    }

    pub fn idem_waitlist(&self, request_id: &RequestId) -> String {
        self.key(&["idem:wl:", request_id.as_str()])
    }

    /// `<POST>:<CAT>:<DATE>`, the day part of a due member.
    pub fn day_label(day: &DayRef) -> String {
        let mut label =
            String::with_capacity(day.post.as_str().len() + day.category.as_str().len() + 12);
        push_day_suffix(&mut label, day);
        label
    }
}

/// Appends `<POST>:<CAT>:<DATE>` to `out`.
fn push_day_suffix(out: &mut String, day: &DayRef) {
    out.push_str(day.post.as_str());
    out.push(':');
    out.push_str(day.category.as_str());
    out.push(':');
    push_date(out, day.date);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_short_plain_identifiers() {
        for ok in ["slotd", "prod-1", "A_b-9", &"x".repeat(32)] {
            assert!(validate_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a{b", "a}b", "a:b", "a b", "é", &"x".repeat(33)] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hhmm_round_trips_on_the_grid() {
        for m in (0..24 * 60).step_by(15) {
            let t = SlotTime::from_minutes(m).unwrap();
            assert_eq!(parse_hhmm(&hhmm(t)), Some(t));
        }
        assert_eq!(hhmm(SlotTime::parse("08:15").unwrap()), "0815");
        for bad in ["", "815", "0860", "2400", "08:1", "0807"] {
            assert_eq!(parse_hhmm(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_key_carries_the_tag() {
        let keys = Keys::new("slotd").unwrap();
        let day = DayRef {
            post: crate::domain::types::PostId::parse("BEIJING").unwrap(),
            category: crate::domain::types::CategoryId::parse("ALL_OTHERS").unwrap(),
            date: crate::domain::types::parse_date("2030-01-08").unwrap(),
        };
        assert_eq!(
            keys.day(&day),
            "slotd:{slotd}:day:BEIJING:ALL_OTHERS:2030-01-08"
        );
        assert_eq!(keys.events(), "slotd:{slotd}:events");
        assert_eq!(
            keys.holds(&day),
            "slotd:{slotd}:holds:BEIJING:ALL_OTHERS:2030-01-08"
        );
        assert_eq!(keys.holds_due(), "slotd:{slotd}:holds-due");
        let id = crate::domain::lifecycle::HoldId::parse(&"ab".repeat(16)).unwrap();
        assert_eq!(keys.hold(&id), format!("slotd:{{slotd}}:hold:{id}"));
        // The offer step derives these inside scripts from the prefix: keep them in step.
        assert_eq!(
            keys.date_line(&day),
            format!("{}wl:BEIJING:ALL_OTHERS:2030-01-08", keys.prefix())
        );
        assert_eq!(
            keys.holds(&day).replacen(":holds:", ":wl:", 1),
            keys.date_line(&day)
        );
        let entry = EntryId::parse(&"cd".repeat(16)).unwrap();
        assert_eq!(keys.entry(&entry), format!("slotd:{{slotd}}:wle:{entry}"));
    }
}
