//! Commands a store executes, built only from valid parts, and the rules that need no stored
//! state: group size, duplicate passports, date ranges, the 15-minute grid, slots already begun.
//! Rules that depend on stored state (seats, receipts, one appointment per passport) are checked
//! inside the store's atomic operation instead.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc, Weekday};
use sha2::{Digest, Sha256};

use super::catalog::Post;
use super::error::{Error, FieldViolation, Violations};
use super::room::TicketId;
use super::types::{
    Applicant, CategoryId, ConfirmationNumber, DayRef, PassportNumber, PostId, RequestId, SlotRef,
    SlotTime,
};

/// A group is the primary applicant plus at most nine dependents.
pub const MAX_GROUP: usize = 10;
/// The widest date range one request may span.
pub const MAX_RANGE_DAYS: i64 = 366;
/// The largest capacity of one 15-minute slot.
pub const MAX_CAPACITY: u32 = 10_000;
/// Manifest pages.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 500;

/// Book one slot for a whole group, all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub request_id: RequestId,
    pub slot: SlotRef,
    pub applicants: Vec<Applicant>,
    /// The waiting-room admission the call passed the gate with: a booking records it in its
    /// own atomic step, so one admission books at most once (`AdmissionUsed`), whatever happens
    /// to the call afterwards. Not part of the fingerprint.
    pub admission: Option<TicketId>,
}

impl Booking {
    /// Checks the group rules; violations name `applicants[i].…` fields.
    pub fn new(
        request_id: RequestId,
        slot: SlotRef,
        applicants: Vec<Applicant>,
    ) -> Result<Self, Vec<FieldViolation>> {
        check_group(&applicants)?;
        Ok(Self {
            request_id,
            slot,
            applicants,
            admission: None,
        })
    }

    /// The same booking, made under the admission of `ticket`.
    pub fn under_admission(mut self, ticket: Option<TicketId>) -> Self {
        self.admission = ticket;
        self
    }

    pub fn seats(&self) -> u32 {
        // MAX_GROUP fits any integer type.
        self.applicants.len() as u32
    }

    /// Identifies the request's content, so a reused request_id with other content is refused
    /// instead of answered with someone else's outcome.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.slot.to_string());
        for a in &self.applicants {
            for part in [
                a.passport.as_str(),
                a.given_name.as_str(),
                a.surname.as_str(),
                a.ds160.as_str(),
                a.receipt.as_str(),
            ] {
                h.update([0x1f]);
                h.update(part);
            }
            h.update([0x1e]);
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// 1-10 applicants, no passport or receipt twice.
pub fn check_group(applicants: &[Applicant]) -> Result<(), Vec<FieldViolation>> {
    let mut v = Violations::new();
    if applicants.is_empty() {
        v.push(
            "applicants",
            "at least one applicant (the primary applicant) is required",
        );
    }
    if applicants.len() > MAX_GROUP {
        v.push(
            "applicants",
            format!("a group has at most {MAX_GROUP} applicants (primary + 9 dependents)"),
        );
    }
    let mut passports = HashSet::new();
    let mut receipts = HashSet::new();
    for (i, a) in applicants.iter().enumerate() {
        if !passports.insert(&a.passport) {
            v.push(
                format!("applicants[{i}].passport_number"),
                "the same passport appears twice in the group",
            );
        }
        if !receipts.insert(&a.receipt) {
            v.push(
                format!("applicants[{i}].receipt_number"),
                "each applicant needs a receipt of their own; this one appears twice in the group",
            );
        }
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(v.into_vec())
    }
}

/// Cancel a whole appointment; the passport must be one of its applicants'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancellation {
    pub request_id: RequestId,
    pub confirmation: ConfirmationNumber,
    pub passport: PassportNumber,
    /// The waiting-room admission the call passed the gate with: the cancellation is one of
    /// its counted steps, checked and counted in the cancellation's own atomic step (see
    /// `Inventory::cancel`). Not part of the fingerprint.
    pub admission: Option<TicketId>,
}

impl Cancellation {
    /// The same cancellation, made under the admission of `ticket`.
    pub fn under_admission(mut self, ticket: Option<TicketId>) -> Self {
        self.admission = ticket;
        self
    }

    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.confirmation.as_str());
        h.update([0x1f]);
        h.update(self.passport.as_str());
        hex::encode(&h.finalize()[..16])
    }
}

/// An inclusive range of dates, at most `MAX_RANGE_DAYS` long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl DateRange {
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Self, FieldViolation> {
        if to < from {
            return Err(FieldViolation::new(
                "to",
                "the last date must not be before the first",
            ));
        }
        if (to - from).num_days() >= MAX_RANGE_DAYS {
            return Err(FieldViolation::new(
                "to",
                format!("the range may span at most {MAX_RANGE_DAYS} days"),
            ));
        }
        Ok(Self { from, to })
    }

    pub fn days(self) -> impl Iterator<Item = NaiveDate> {
        let count = (self.to - self.from).num_days();
        (0..=count).map(move |i| self.from + Duration::days(i))
    }
}

/// What `OpenSlots` creates: every chosen weekday of a range, every quarter hour between two
/// times, each with the same number of seats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPlan {
    pub post: PostId,
    pub category: CategoryId,
    pub range: DateRange,
    pub weekdays: Vec<Weekday>,
    pub first: SlotTime,
    pub last: SlotTime,
    pub seats: u32,
}

impl OpenPlan {
    /// The days of the plan, one `DayRef` each, with the times to open on it.
    pub fn days(&self) -> impl Iterator<Item = DayRef> + '_ {
        self.range
            .days()
            .filter(|d| self.weekdays.contains(&d.weekday()))
            .map(|date| DayRef {
                post: self.post.clone(),
                category: self.category.clone(),
                date,
            })
    }

    pub fn times(&self) -> impl Iterator<Item = SlotTime> {
        self.first.through(self.last)
    }
}

/// Seats for one slot: 0..=MAX_CAPACITY (`minimum` is 1 when opening).
pub fn check_capacity(seats: u32, minimum: u32) -> Result<u32, FieldViolation> {
    if seats < minimum || seats > MAX_CAPACITY {
        return Err(FieldViolation::new(
            "",
            format!("must be between {minimum} and {MAX_CAPACITY}"),
        ));
    }
    Ok(seats)
}

/// A slot can be booked only before it starts, on a date that is not yet past at the post.
pub fn ensure_not_started(post: &Post, slot: &SlotRef, now: DateTime<Utc>) -> Result<(), Error> {
    if slot.date < post.today(now) {
        return Err(Error::invalid(
            "slot.date",
            format!(
                "{} is in the past at {} (time zone {})",
                super::types::format_date(slot.date),
                post.id,
                post.time_zone
            ),
        ));
    }
    if post.slot_start(slot) <= now {
        return Err(Error::SlotStarted { slot: slot.clone() });
    }
    Ok(())
}

/// A place in a day's manifest, which is ordered by (time, confirmation number): the next page
/// starts after it, so pages stay stable while bookings arrive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManifestCursor {
    pub time: SlotTime,
    pub confirmation: ConfirmationNumber,
}

impl ManifestCursor {
    pub fn encode(&self) -> String {
        format!("{:04}-{}", self.time.minutes(), self.confirmation)
    }

    pub fn parse(token: &str) -> Result<Self, FieldViolation> {
        let bad = || {
            FieldViolation::new(
                "page_token",
                "page_token must be a next_page_token this service returned",
            )
        };
        let (minutes, conf) = token.split_once('-').ok_or_else(bad)?;
        let minutes: u16 = minutes.parse().map_err(|_| bad())?;
        Ok(Self {
            time: SlotTime::from_minutes(minutes).ok_or_else(bad)?,
            confirmation: ConfirmationNumber::parse(conf).map_err(|_| bad())?,
        })
    }
}

/// One page of a day's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestQuery {
    pub day: DayRef,
    pub after: Option<ManifestCursor>,
    pub limit: u32,
    pub include_cancelled: bool,
}

/// A slot that breaks `booked + remaining == capacity` or `remaining >= 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub slot: SlotRef,
    pub rule: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditReport {
    pub slots_checked: u32,
    pub violations: Vec<Violation>,
}

/// The invariants of one slot: `booked + held + remaining == capacity` with `remaining >= 0`
/// (so `booked + held <= capacity`), the booked counter equals the seats of its active
/// appointments and the held counter the seats of its live holds. Both stores word violations
/// through here.
pub fn audit_slot(
    s: &super::types::SlotState,
    active_seats: u32,
    hold_seats: u32,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let taken = u64::from(s.booked) + u64::from(s.held);
    if taken > u64::from(s.capacity) {
        out.push(Violation {
            slot: s.slot.clone(),
            rule: "remaining >= 0".into(),
            detail: format!(
                "booked {} + held {} exceeds capacity {}",
                s.booked, s.held, s.capacity
            ),
        });
    }
    if active_seats != s.booked {
        out.push(Violation {
            slot: s.slot.clone(),
            rule: "booked == seats of active appointments".into(),
            detail: format!(
                "counter says {} booked, appointments hold {active_seats}",
                s.booked
            ),
        });
    }
    if hold_seats != s.held {
        out.push(Violation {
            slot: s.slot.clone(),
            rule: "held == seats of live holds".into(),
            detail: format!("counter says {} held, holds take {hold_seats}", s.held),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::types::{Ds160Number, PersonName, ReceiptNumber};

    fn applicant(passport: &str, receipt: &str) -> Applicant {
        Applicant {
            passport: PassportNumber::parse(passport).unwrap(),
            given_name: PersonName::parse("Wei").unwrap(),
            surname: PersonName::parse("Zhang").unwrap(),
            ds160: Ds160Number::parse("AA00ABCDEF").unwrap(),
            receipt: ReceiptNumber::parse(receipt).unwrap(),
        }
    }

    #[test]
    fn a_group_of_one_to_ten_distinct_applicants_is_accepted() {
        assert!(check_group(&[applicant("E1234567", "R000001")]).is_ok());
        let ten: Vec<_> = (0..10)
            .map(|i| applicant(&format!("E100000{i}"), &format!("R10000{i}")))
            .collect();
        assert!(check_group(&ten).is_ok());
    }

    #[test]
    fn empty_oversized_and_duplicate_groups_are_refused_naming_the_field() {
        assert_eq!(check_group(&[]).unwrap_err()[0].field, "applicants");
        let eleven: Vec<_> = (0..11)
            .map(|i| applicant(&format!("E10000{i:02}"), &format!("R1000{i:02}")))
            .collect();
        assert_eq!(check_group(&eleven).unwrap_err()[0].field, "applicants");
        let dup = check_group(&[
            applicant("E1234567", "R000001"),
            applicant("E1234567", "R000002"),
        ])
        .unwrap_err();
        assert_eq!(dup[0].field, "applicants[1].passport_number");
        let dup = check_group(&[
            applicant("E1234567", "R000001"),
            applicant("E7654321", "R000001"),
        ])
        .unwrap_err();
        assert_eq!(dup[0].field, "applicants[1].receipt_number");
    }

    #[test]
    fn date_ranges_are_ordered_and_bounded() {
        let d = |s| crate::domain::types::parse_date(s).unwrap();
        assert!(DateRange::new(d("2025-01-02"), d("2025-01-01")).is_err());
        assert!(DateRange::new(d("2025-01-01"), d("2025-12-31")).is_ok());
        assert!(DateRange::new(d("2025-01-01"), d("2026-01-02")).is_err());
        assert_eq!(
            DateRange::new(d("2025-01-30"), d("2025-02-02"))
                .unwrap()
                .days()
                .count(),
            4
        );
    }

    #[test]
    fn manifest_cursors_round_trip_and_reject_garbage() {
        let c = ManifestCursor {
            time: SlotTime::parse("08:15").unwrap(),
            confirmation: ConfirmationNumber::generate(),
        };
        assert_eq!(ManifestCursor::parse(&c.encode()).unwrap(), c);
        for bad in [
            "",
            "x",
            "0007-ABCDEFGHJKMNPQ",
            "0015-short",
            "99999-ABCDEFGHJKMNPQ",
        ] {
            assert!(ManifestCursor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_differ_when_the_content_differs() {
        let slot = SlotRef {
            post: PostId::parse("BEIJING").unwrap(),
            category: CategoryId::parse("ALL_OTHERS").unwrap(),
            date: crate::domain::types::parse_date("2025-01-27").unwrap(),
            time: SlotTime::parse("08:00").unwrap(),
        };
        let rid = RequestId::parse("r1").unwrap();
        let a = Booking::new(
            rid.clone(),
            slot.clone(),
            vec![applicant("E1234567", "R000001")],
        )
        .unwrap();
        let b = Booking::new(rid, slot, vec![applicant("E1234568", "R000001")]).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }
}
