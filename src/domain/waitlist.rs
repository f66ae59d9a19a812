//! The waitlist: applicants wait for seats that come back in a date range, and released seats
//! are offered to them in join order instead of going to whoever refreshes fastest. Pure types;
//! the stores keep the line and make each offer atomically with the release that frees the
//! seats (see `docs/redis-keys.md`, "Waitlist").
//!
//! An offer is a hold (`lifecycle::Hold` with `entry` set) with its own expiry: the applicant
//! accepts it with ConfirmHold or declines it with ReleaseHold. A declined offer keeps the
//! entry's place; an offer left to expire ends the entry (an unresponsive applicant must not
//! hold up the line again and again).

use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};

use super::error::FieldViolation;
use super::lifecycle::Hold;
use super::rules::{check_group, DateRange};
use super::types::{Applicant, CategoryId, ConfirmationNumber, PostId, RequestId, SlotTime};

/// How long an offer keeps its seats unless configured otherwise.
pub const DEFAULT_OFFER_TTL_SECS: u64 = 30 * 60;
/// How far ahead (days after today at the post) a waitlist range may reach: the bookable window.
pub const BOOKING_WINDOW_DAYS: i64 = 365;
/// How many waiting entries one release looks at, per slot (bounded work inside the atomic
/// step; entries further back are reached as those ahead are served or leave).
pub const OFFER_SCAN_LIMIT: usize = 500;
/// The reason an entry in line ends EXPIRED with once every date it accepts has passed (not a
/// refusal: it is stored on the entry and shown by GetWaitlistEntry).
pub const DATES_PASSED: &str = "DATES_PASSED";

random_hex_id!(
    /// A waitlist entry's id: 128 bits from the CSPRNG (reading it needs the entry secret too).
    EntryId,
    "entry_id"
);

/// Where an entry is in its life. Only `Waiting` and `Offered` are in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStatus {
    Waiting,
    Offered,
    Fulfilled,
    Left,
    Expired,
    Cancelled,
}

impl EntryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Waiting => "WAITING",
            EntryStatus::Offered => "OFFERED",
            EntryStatus::Fulfilled => "FULFILLED",
            EntryStatus::Left => "LEFT",
            EntryStatus::Expired => "EXPIRED",
            EntryStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "WAITING" => EntryStatus::Waiting,
            "OFFERED" => EntryStatus::Offered,
            "FULFILLED" => EntryStatus::Fulfilled,
            "LEFT" => EntryStatus::Left,
            "EXPIRED" => EntryStatus::Expired,
            "CANCELLED" => EntryStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn in_line(self) -> bool {
        matches!(self, EntryStatus::Waiting | EntryStatus::Offered)
    }
}

/// Join the line for seats of a post and category in a date range, at some times or any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitlistJoin {
    pub request_id: RequestId,
    pub post: PostId,
    pub category: CategoryId,
    pub range: DateRange,
    /// Acceptable slot times, ascending and distinct; empty = any.
    pub times: Vec<SlotTime>,
    pub applicants: Vec<Applicant>,
    /// The appointment this group already has and wants to move earlier: accepting an offer
    /// then reschedules it (same confirmation number, counted against the reschedule limit).
    pub moving: Option<ConfirmationNumber>,
    /// The waiting-room admission the call passed the gate with: the join is one of its
    /// counted steps, checked and counted in the join's own atomic step (see
    /// `Inventory::join_waitlist`). Not part of the fingerprint.
    pub admission: Option<crate::domain::room::TicketId>,
}

impl WaitlistJoin {
    /// Checks the group rules; violations name `applicants[i].…` fields. Times are sorted and
    /// deduplicated.
    pub fn new(
        request_id: RequestId,
        post: PostId,
        category: CategoryId,
        range: DateRange,
        mut times: Vec<SlotTime>,
        applicants: Vec<Applicant>,
    ) -> Result<Self, Vec<FieldViolation>> {
        check_group(&applicants)?;
        times.sort();
        times.dedup();
        Ok(Self {
            request_id,
            post,
            category,
            range,
            times,
            applicants,
            moving: None,
            admission: None,
        })
    }

    /// The same join, made under the admission of `ticket`.
    pub fn under_admission(mut self, ticket: Option<crate::domain::room::TicketId>) -> Self {
        self.admission = ticket;
        self
    }

    /// The same request for a group that moves `appointment` earlier.
    pub fn moving(mut self, appointment: ConfirmationNumber) -> Self {
        self.moving = Some(appointment);
        self
    }

    pub fn seats(&self) -> u32 {
        // MAX_GROUP fits any integer type.
        self.applicants.len() as u32
    }

    /// Identifies the request's content (a reused request_id with other content is refused).
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.post.as_str(),
            self.category.as_str(),
            &super::types::format_date(self.range.from),
            &super::types::format_date(self.range.to),
        ] {
            h.update(part);
            h.update([0x1f]);
        }
        if let Some(c) = &self.moving {
            h.update(c.as_str());
        }
        h.update([0x1d]);
        for t in &self.times {
            h.update(t.to_string());
            h.update([0x1e]);
        }
        for a in &self.applicants {
            h.update(a.passport.as_str());
            h.update([0x1f]);
            h.update(a.receipt.as_str());
            h.update([0x1f]);
            h.update(a.given_name.to_string());
            h.update([0x1f]);
            h.update(a.surname.to_string());
            h.update([0x1f]);
            h.update(a.ds160.to_string());
            h.update([0x1e]);
        }
        hex::encode(&h.finalize()[..16])
    }

    /// Whether a slot at `date`/`time` is one this entry accepts.
    pub fn accepts(&self, date: NaiveDate, time: SlotTime) -> bool {
        accepts(self.range, &self.times, date, time)
    }
}

/// A moving entry must wait for dates before its appointment's (`appointment_date`).
pub fn moving_range_error(appointment_date: NaiveDate) -> super::Error {
    super::Error::invalid(
        "to_date",
        format!(
            "must be before the appointment's date {}: the waitlist only moves it earlier",
            super::types::format_date(appointment_date)
        ),
    )
}

/// Whether `date`/`time` lies in `range` and (when `times` is not empty) at one of `times`.
pub fn accepts(range: DateRange, times: &[SlotTime], date: NaiveDate, time: SlotTime) -> bool {
    range.from <= date && date <= range.to && (times.is_empty() || times.contains(&time))
}

/// Who joins the line: a new group, or the group of an appointment that wants to move earlier
/// (named by its confirmation number and any applicant's passport).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinGroup {
    Applicants(Vec<Applicant>),
    Moving {
        appointment: ConfirmationNumber,
        passport: super::types::PassportNumber,
    },
}

/// A JoinWaitlist request as parsed: the group is resolved by the use case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub request_id: RequestId,
    pub post: PostId,
    pub category: CategoryId,
    pub range: DateRange,
    pub times: Vec<SlotTime>,
    pub group: JoinGroup,
}

/// One entry of the line as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitlistEntry {
    pub id: EntryId,
    pub post: PostId,
    pub category: CategoryId,
    pub range: DateRange,
    pub times: Vec<SlotTime>,
    pub applicants: Vec<Applicant>,
    pub status: EntryStatus,
    /// 1 = next in line; None when not in line.
    pub position: Option<u32>,
    /// The pending offer (OFFERED), or the accepted one (FULFILLED).
    pub offer: Option<Hold>,
    /// The appointment the accepted offer became (for a moving entry: the moved one).
    pub confirmation: Option<ConfirmationNumber>,
    /// The appointment a moving entry wants to move earlier.
    pub moving: Option<ConfirmationNumber>,
    /// Why the entry was cancelled (a refusal reason such as RECEIPT_EXPIRED).
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_are_128_random_bits_in_hex() {
        let a = EntryId::generate();
        assert_ne!(a, EntryId::generate());
        assert_eq!(EntryId::parse(&a.as_str().to_uppercase()).unwrap(), a);
        for bad in ["", "xyz", &"g".repeat(32), &"a".repeat(31)] {
            assert!(EntryId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_round_trip_and_only_two_are_in_line() {
        for s in [
            EntryStatus::Waiting,
            EntryStatus::Offered,
            EntryStatus::Fulfilled,
            EntryStatus::Left,
            EntryStatus::Expired,
            EntryStatus::Cancelled,
        ] {
            assert_eq!(EntryStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                s.in_line(),
                matches!(s, EntryStatus::Waiting | EntryStatus::Offered)
            );
        }
        assert_eq!(EntryStatus::parse("waiting"), None);
    }

    #[test]
    fn accepts_checks_range_and_times() {
        let d = |s| super::super::types::parse_date(s).unwrap();
        let t = |s| SlotTime::parse(s).unwrap();
        let range = DateRange::new(d("2030-01-08"), d("2030-01-10")).unwrap();
        assert!(accepts(range, &[], d("2030-01-08"), t("08:00")));
        assert!(accepts(range, &[], d("2030-01-10"), t("23:45")));
        assert!(!accepts(range, &[], d("2030-01-11"), t("08:00")));
        assert!(!accepts(range, &[], d("2030-01-07"), t("08:00")));
        assert!(accepts(range, &[t("08:15")], d("2030-01-09"), t("08:15")));
        assert!(!accepts(range, &[t("08:15")], d("2030-01-09"), t("08:30")));
    }
}
