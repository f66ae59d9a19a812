//! The embedded backend: all state in one process behind one mutex. Every operation checks and
//! writes inside a single critical section (no await inside it), which is what makes booking and
//! cancelling atomic here. State is per process and lost on exit: for development, tests and
//! demos; production runs on Redis.
//!
//! Laid out like the Redis backend and its scripts, so a rule is found at the same name in both
//! (`Inventory::book` is `State::book` in `inventory.rs` here, `book.lua` there):
//! - `mod.rs`: `MemoryStore`, the shared state and its records, the event log, and the
//!   `Inventory` implementation, one line per operation into `State`;
//! - `inventory.rs`: open / set capacity / close slots, book, cancel, reschedule, manifest,
//!   receipts (`open_slots.lua`, `set_capacity.lua`, `close_slots.lua`, `book.lua`,
//!   `cancel.lua`, `reschedule.lua`, `manifest.lua`, `register_receipt.lua`);
//! - `holds.rs`: hold, confirm, release, reclaim, and the claim and request_id rules every
//!   booking shares (`hold.lua`, `confirm_hold.lua`, `release_hold.lua`, `reclaim.lua`,
//!   `holds_lib.lua`);
//! - `waitlist.rs`: join, leave, read, share, retire, and the offer step (`wl_*.lua`,
//!   `waitlist_lib.lua`; `redis/waitlist.rs`);
//! - `retention.rs`: forgetting records past their retention, retiring past appointments
//!   (`appt_expire.lua`, `appt_retire.lua`; `redis/retention.rs`);
//! - `admission.rs`: what each waiting-room admission did (its booking in `book.lua` /
//!   `confirm_hold.lua`, its counted steps in `holds_lib.lua`; `redis/admission.rs`);
//! - `audit.rs`: the audit snapshot (`audit.lua`);
//! - `room.rs`: the waiting room (`WaitingRoomStore`; `room_*.lua`, `redis/room.rs`).

mod admission;
mod audit;
mod holds;
mod inventory;
mod retention;
pub mod room;
mod waitlist;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use super::{EventPage, Inventory, ManifestPage, OpenReport, Reclaimed, StoreError};
use crate::domain::lifecycle::{
    Event, EventId, EventStart, Hold, HoldConfirmation, HoldId, HoldRelease, HoldRequest,
    Reschedule,
};
use crate::domain::room::TicketId;
use crate::domain::rules::{
    AuditReport, Booking, Cancellation, DateRange, ManifestCursor, ManifestQuery, OpenPlan,
};
use crate::domain::types::{
    Appointment, CategoryId, ConfirmationNumber, DayRef, PassportNumber, PostId, Receipt,
    ReceiptNumber, RequestId, SlotRef, SlotState, SlotTime,
};
use crate::domain::waitlist::{EntryId, WaitlistEntry, WaitlistJoin, DEFAULT_OFFER_TTL_SECS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotRec {
    capacity: u32,
    booked: u32,
    held: u32,
    closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Book,
    Cancel,
    Reschedule,
}

/// What a request_id answers while it is remembered: the first outcome `first` of the request
/// whose content had `fingerprint`.
#[derive(Debug, Clone)]
struct Remembered<T> {
    fingerprint: String,
    first: T,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct ReceiptRec {
    receipt: Receipt,
    /// The active appointment this receipt backs.
    backing: Option<ConfirmationNumber>,
    /// The live hold it is held by.
    held_by: Option<HoldId>,
    /// Moves of appointments it backed.
    reschedules: u32,
}

#[derive(Debug, Default)]
struct State {
    days: BTreeMap<DayRef, BTreeMap<SlotTime, SlotRec>>,
    appointments: HashMap<ConfirmationNumber, Appointment>,
    /// The live (BOOKED) appointments of a day, in manifest order.
    manifests: BTreeMap<DayRef, BTreeSet<ManifestCursor>>,
    /// The cancelled appointments of a day, in manifest order (Redis `cancelled:` index).
    cancelled: BTreeMap<DayRef, BTreeSet<ManifestCursor>>,
    /// Cancelled appointments by the end of their retention (Redis: the record's PEXPIRE).
    expiring: BTreeSet<(DateTime<Utc>, ConfirmationNumber)>,
    retention: Duration,
    receipts: HashMap<ReceiptNumber, ReceiptRec>,
    /// Passport → its one active appointment.
    active: HashMap<PassportNumber, ConfirmationNumber>,
    remembered: HashMap<(Op, RequestId), Remembered<ConfirmationNumber>>,
    writes_since_prune: u32,
    holds: HashMap<HoldId, Hold>,
    /// Live holds by expiry: the exact reclaim order.
    live_holds: BTreeSet<(DateTime<Utc>, HoldId)>,
    /// Passport → its one live hold.
    held_passports: HashMap<PassportNumber, HoldId>,
    /// request_id of a hold → the hold it took.
    remembered_holds: HashMap<RequestId, Remembered<HoldId>>,
    /// The in-process event log (same entries as the Redis Stream), ids `0-<n>`.
    events: Vec<Event>,
    /// Waitlist entries, in line or finished.
    entries: HashMap<EntryId, EntryRec>,
    /// Entries in line per post and category, by join sequence.
    lines: BTreeMap<(PostId, CategoryId), BTreeMap<u64, EntryId>>,
    /// Passport → the entry it waits in.
    waiting_passports: HashMap<PassportNumber, EntryId>,
    /// request_id of a join → the entry it made.
    remembered_joins: HashMap<RequestId, Remembered<EntryId>>,
    /// (post, category) → (percent offered to the waitlist, remainder of the share count).
    shares: HashMap<(PostId, CategoryId), (u32, u32)>,
    join_seq: u64,
    /// Entries by when their range has passed (Redis `wl-due`): (retire at, join seq) → entry.
    retire_due: BTreeMap<(DateTime<Utc>, u64), EntryId>,
    offer_ttl: Duration,
    /// Opened days by when they have passed everywhere (Redis `days-due`): the sweeper retires
    /// their BOOKED appointments from then (`Inventory::retire_past_appointments`).
    past_days: BTreeSet<(DateTime<Utc>, DayRef)>,
    /// Retired (past) appointments: still BOOKED and readable, no longer cancellable or movable.
    retired: HashSet<ConfirmationNumber>,
    /// Retired records by the end of their retention (Redis `appt-expire`).
    retired_expiry: BTreeSet<(DateTime<Utc>, ConfirmationNumber)>,
    /// What each waiting-room admission has done (see `ADMISSION_STEP_LIMIT`).
    admissions: HashMap<TicketId, AdmissionRec>,
}

/// The booking an admission made and its other steps, remembered as long as a request_id.
#[derive(Debug, Clone)]
struct AdmissionRec {
    booked: Option<ConfirmationNumber>,
    steps: u32,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct EntryRec {
    /// As shown, without position and offer (computed when read).
    entry: WaitlistEntry,
    seq: u64,
    offer: Option<HoldId>,
    /// The reschedule limit a moving entry's offers are checked against.
    limit: u32,
}

/// Events kept in process (the Redis Stream keeps about a million).
const MAX_EVENTS: usize = 100_000;

#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                offer_ttl: Duration::seconds(DEFAULT_OFFER_TTL_SECS as i64),
                retention: Duration::days(crate::store::DEFAULT_RETENTION_DAYS),
                ..State::default()
            }),
        }
    }

    /// How long a waitlist offer keeps its seats (default 30 minutes).
    pub fn with_offer_ttl(self, ttl: Duration) -> Self {
        self.lock().offer_ttl = ttl;
        self
    }

    /// How long a cancelled appointment stays readable before it is forgotten
    /// (`booking.retention_days`; default 90 days; at least 1 ms).
    pub fn with_retention(self, retention: Duration) -> Self {
        self.lock().retention = retention.max(Duration::milliseconds(1));
        self
    }

    /// Sizes of the per-day structures and records, for tests that show they stay bounded:
    /// (appointments, live manifest members, cancelled index members, days with a manifest).
    pub fn footprint(&self) -> (usize, usize, usize, usize) {
        let state = self.lock();
        (
            state.appointments.len(),
            state.manifests.values().map(BTreeSet::len).sum(),
            state.cancelled.values().map(BTreeSet::len).sum(),
            state.manifests.len() + state.cancelled.len(),
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied operation: every operation
        // checks first and writes last without anything fallible in between.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn push_event(&mut self, kind: &str, fields: &[(&str, String)]) {
        let seq = self.events.last().map(|e| e.id.seq + 1).unwrap_or(1);
        if self.events.len() >= MAX_EVENTS {
            self.events.drain(..MAX_EVENTS / 10);
        }
        self.events.push(Event {
            id: EventId { ms: 0, seq },
            kind: kind.to_owned(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        });
    }

    /// At most `limit` events after `start`, oldest first (the slot feed's read).
    fn events(&self, start: EventStart, limit: u32) -> Result<EventPage, StoreError> {
        let after = match start {
            EventStart::Latest => {
                return Ok(EventPage {
                    events: Vec::new(),
                    next: self.events.last().map(|e| e.id).unwrap_or_default(),
                })
            }
            EventStart::After(id) => id,
        };
        let from = self.events.partition_point(|e| e.id <= after);
        let events: Vec<Event> = self.events[from..]
            .iter()
            .take(limit as usize)
            .cloned()
            .collect();
        let next = events.last().map(|e| e.id).unwrap_or(after);
        Ok(EventPage { events, next })
    }

    fn slot_mut(&mut self, slot: &SlotRef) -> Option<&mut SlotRec> {
        self.days
            .get_mut(&slot.day())
            .and_then(|d| d.get_mut(&slot.time))
    }

    fn slot_rec(&self, slot: &SlotRef) -> Option<&SlotRec> {
        self.days.get(&slot.day()).and_then(|d| d.get(&slot.time))
    }
}

/// Takes `member` out of a day's index (live manifest or cancelled index), and the day out of
/// the index once it has no member left (so the maps stay as small as what is stored).
fn unindex(
    index: &mut BTreeMap<DayRef, BTreeSet<ManifestCursor>>,
    day: &DayRef,
    member: &ManifestCursor,
) {
    if let Some(set) = index.get_mut(day) {
        set.remove(member);
        if set.is_empty() {
            index.remove(day);
        }
    }
}

/// Instants in events: RFC 3339 UTC with full precision, as the Redis store writes them.
fn event_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn to_state(slot: SlotRef, r: &SlotRec) -> SlotState {
    SlotState {
        slot,
        capacity: r.capacity,
        booked: r.booked,
        held: r.held,
        closed: r.closed,
    }
}

#[async_trait]
impl Inventory for MemoryStore {
    async fn open_slots(
        &self,
        plan: &OpenPlan,
        now: DateTime<Utc>,
    ) -> Result<OpenReport, StoreError> {
        self.lock().open_slots(plan, now)
    }

    async fn set_capacity(
        &self,
        slot: &SlotRef,
        capacity: u32,
        now: DateTime<Utc>,
    ) -> Result<SlotState, StoreError> {
        self.lock().set_capacity(slot, capacity, now)
    }

    async fn close_slots(&self, day: &DayRef, time: Option<SlotTime>) -> Result<u32, StoreError> {
        self.lock().close_slots(day, time)
    }

    async fn slots(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<Vec<SlotState>, StoreError> {
        self.lock().slots(post, category, range)
    }

    async fn book(
        &self,
        booking: &Booking,
        confirmation: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        self.lock().book(booking, confirmation, now)
    }

    async fn appointment(
        &self,
        confirmation: &ConfirmationNumber,
        passport: &PassportNumber,
    ) -> Result<Appointment, StoreError> {
        self.lock().appointment(confirmation, passport)
    }

    async fn cancel(
        &self,
        cancellation: &Cancellation,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        self.lock().cancel(cancellation, now)
    }

    async fn manifest(&self, query: &ManifestQuery) -> Result<ManifestPage, StoreError> {
        self.lock().manifest(query)
    }

    async fn register_receipt(&self, receipt: &Receipt) -> Result<(Receipt, bool), StoreError> {
        self.lock().register_receipt(receipt)
    }

    async fn audit(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<AuditReport, StoreError> {
        self.lock().audit(post, category, range)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn refuse_sold_out_hold(
        &self,
        request: &HoldRequest,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.lock().refuse_sold_out_hold(request, now)
    }

    async fn hold(
        &self,
        request: &HoldRequest,
        id: &HoldId,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Hold, StoreError> {
        self.lock().hold(request, id, expires_at, now)
    }

    async fn confirm_hold(
        &self,
        confirmation: &HoldConfirmation,
        number: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        self.lock().confirm_hold(confirmation, number, now)
    }

    async fn release_hold(
        &self,
        release: &HoldRelease,
        now: DateTime<Utc>,
    ) -> Result<Hold, StoreError> {
        self.lock().release_hold(release, now)
    }

    async fn find_hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        self.lock().find_hold(id)
    }

    async fn reclaim_expired_holds(&self, now: DateTime<Utc>) -> Result<Reclaimed, StoreError> {
        Ok(self.lock().reclaim(now))
    }

    async fn retire_passed_waitlist(&self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        self.lock().retire_passed_waitlist(now)
    }

    async fn retire_past_appointments(&self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        Ok(self.lock().retire_past_appointments(now))
    }

    async fn reschedule(
        &self,
        reschedule: &Reschedule,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        self.lock().reschedule(reschedule, limit, now)
    }

    async fn events(&self, start: EventStart, limit: u32) -> Result<EventPage, StoreError> {
        self.lock().events(start, limit)
    }

    async fn join_waitlist(
        &self,
        join: &WaitlistJoin,
        id: &EntryId,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<WaitlistEntry, StoreError> {
        self.lock().join_waitlist(join, id, limit, now)
    }

    async fn waitlist_entry(&self, id: &EntryId) -> Result<WaitlistEntry, StoreError> {
        self.lock().waitlist_entry(id)
    }

    async fn leave_waitlist(
        &self,
        id: &EntryId,
        now: DateTime<Utc>,
    ) -> Result<WaitlistEntry, StoreError> {
        self.lock().leave_waitlist(id, now)
    }

    async fn set_waitlist_share(
        &self,
        post: &PostId,
        category: &CategoryId,
        percent: u32,
    ) -> Result<u32, StoreError> {
        self.lock().set_waitlist_share(post, category, percent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::{DateRange, OpenPlan};
    use crate::domain::types::{
        Applicant, CategoryId, Currency, Ds160Number, Money, PersonName, PostId, Receipt,
        RequestId, SlotTime,
    };

    fn epoch() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2030-01-07T00:00:00Z")
            .expect("epoch")
            .with_timezone(&Utc)
    }

    fn applicant() -> Applicant {
        Applicant {
            passport: PassportNumber::parse("P0000001").expect("passport"),
            given_name: PersonName::parse("Wei").expect("name"),
            surname: PersonName::parse("Zhang").expect("name"),
            ds160: Ds160Number::parse("AA00000001").expect("ds160"),
            receipt: ReceiptNumber::parse("R0000001").expect("receipt"),
        }
    }

    /// A store with a one-hour retention, tomorrow's 08:00 open with 2 seats, and the receipt of
    /// `applicant()` registered.
    async fn one_slot_with_a_receipt() -> (MemoryStore, DayRef, SlotTime, Applicant) {
        let store = MemoryStore::new().with_retention(Duration::hours(1));
        let day = DayRef {
            post: PostId::parse("BEIJING").expect("post"),
            category: CategoryId::parse("ALL_OTHERS").expect("category"),
            date: (epoch() + Duration::days(1)).date_naive(),
        };
        let time = SlotTime::parse("08:00").expect("time");
        store
            .open_slots(
                &OpenPlan {
                    post: day.post.clone(),
                    category: day.category.clone(),
                    range: DateRange::new(day.date, day.date).expect("range"),
                    weekdays: vec![chrono::Weekday::Tue],
                    first: time,
                    last: time,
                    seats: 2,
                },
                epoch(),
            )
            .await
            .expect("open");
        let a = applicant();
        store
            .register_receipt(&Receipt {
                number: a.receipt.clone(),
                passport: a.passport.clone(),
                paid_at: epoch() - Duration::days(1),
                amount: Money {
                    minor: 18_500,
                    currency: Currency::Usd,
                },
            })
            .await
            .expect("receipt");
        (store, day, time, a)
    }

    /// #20 bounded data, embedded store: a book/cancel loop of 500 on one day keeps the live
    /// manifest empty and the number of days with an index at one; cancelled records stay
    /// readable (CANCELLED) within the retention and are forgotten, with their cancelled-index
    /// members, once it has passed (so the maps do not grow with the loop).
    #[tokio::test]
    async fn a_book_cancel_loop_keeps_the_maps_flat_and_records_expire_after_the_retention() {
        let (store, day, time, a) = one_slot_with_a_receipt().await;
        let mut first = None;
        let mut at = epoch();
        for n in 0..500 {
            // Ten seconds apart: the first cancellations pass the hour of retention mid-loop.
            at += Duration::seconds(10);
            let booking = Booking::new(
                RequestId::parse(&format!("b{n}")).expect("id"),
                day.at(time),
                vec![a.clone()],
            )
            .expect("booking");
            let booked = store
                .book(&booking, &ConfirmationNumber::generate(), at)
                .await
                .expect("book");
            store
                .cancel(
                    &Cancellation {
                        request_id: RequestId::parse(&format!("c{n}")).expect("id"),
                        confirmation: booked.confirmation.clone(),
                        passport: a.passport.clone(),
                        admission: None,
                    },
                    at,
                )
                .await
                .expect("cancel");
            first.get_or_insert(booked.confirmation);
            let (records, live, cancelled, days) = store.footprint();
            assert_eq!((live, days), (0, 1), "iteration {n}");
            // At most an hour of cancellations (360 at 10 s) plus one call's batch are kept.
            assert!(
                records <= 360 + retention::EXPIRE_BATCH,
                "{records} records at {n}"
            );
            assert_eq!(records, cancelled);
        }
        let first = first.expect("one booked");
        assert!(
            store.appointment(&first, &a.passport).await.is_err(),
            "forgotten after the retention"
        );
        let (records, ..) = store.footprint();
        assert!(records <= 361, "{records}");
    }

    /// #20 bounded data, embedded store: retiring a past appointment frees a passport only
    /// while its claim still names that appointment (compare-and-set; a claim naming another
    /// appointment, as the pre-#20 double booking could leave, stays), the day's manifest goes,
    /// the day leaves the index, and the record is forgotten after the retention.
    #[tokio::test]
    async fn retiring_a_past_appointment_frees_only_the_claims_that_still_name_it() {
        let (store, day, time, a) = one_slot_with_a_receipt().await;
        let booking = Booking::new(
            RequestId::parse("b1").expect("id"),
            day.at(time),
            vec![a.clone()],
        )
        .expect("booking");
        let booked = store
            .book(&booking, &ConfirmationNumber::generate(), epoch())
            .await
            .expect("book");
        let other = ConfirmationNumber::generate();
        store
            .lock()
            .active
            .insert(a.passport.clone(), other.clone());

        let due = crate::store::appointment_retire_at(day.date);
        assert_eq!(
            store.retire_past_appointments(due).await.expect("retire"),
            1
        );
        {
            let state = store.lock();
            assert_eq!(state.active.get(&a.passport), Some(&other), "not freed");
            assert_eq!(
                state
                    .receipts
                    .get(&a.receipt)
                    .and_then(|r| r.backing.clone()),
                Some(booked.confirmation.clone()),
                "the receipt stays spent"
            );
            assert!(state.manifests.is_empty());
        }
        assert_eq!(
            store.retire_past_appointments(due).await.expect("retire"),
            0
        );
        assert!(store.lock().past_days.is_empty());
        let until = due + Duration::hours(1);
        store
            .retire_past_appointments(until - Duration::milliseconds(1))
            .await
            .expect("retire");
        assert!(store
            .appointment(&booked.confirmation, &a.passport)
            .await
            .is_ok());
        store.retire_past_appointments(until).await.expect("retire");
        assert!(store
            .appointment(&booked.confirmation, &a.passport)
            .await
            .is_err());
        let state = store.lock();
        assert!(state.retired.is_empty() && state.retired_expiry.is_empty());
    }
}
