//! The embedded backend: all state in one process behind one mutex. Every operation checks and
//! writes inside a single critical section (no await inside it), which is what makes booking and
//! cancelling atomic here. State is per process and lost on exit: for development, tests and
//! demos; production runs on Redis.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use super::{
    EventPage, Inventory, ManifestPage, OpenReport, Reclaimed, StoreError, IDEMPOTENCY_TTL_SECS,
};
use crate::domain::error::reason;
use crate::domain::lifecycle::{
    Event, EventId, EventStart, Hold, HoldConfirmation, HoldId, HoldRelease, HoldRequest,
    HoldStatus, Move, Reschedule,
};
use crate::domain::room::TicketId;
use crate::domain::rules::{
    AuditReport, Booking, Cancellation, DateRange, ManifestCursor, ManifestQuery, OpenPlan,
};
use crate::domain::types::{
    format_date, Applicant, Appointment, AppointmentStatus, CategoryId, ConfirmationNumber, DayRef,
    PassportNumber, PostId, Receipt, ReceiptNumber, RequestId, SlotRef, SlotState, SlotTime,
};
use crate::domain::waitlist::{
    moving_range_error, EntryId, EntryStatus, WaitlistEntry, WaitlistJoin, DEFAULT_OFFER_TTL_SECS,
    OFFER_SCAN_LIMIT,
};
use crate::domain::Error;

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

#[derive(Debug, Clone)]
struct Remembered {
    fingerprint: String,
    confirmation: ConfirmationNumber,
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
    remembered: HashMap<(Op, RequestId), Remembered>,
    writes_since_prune: u32,
    holds: HashMap<HoldId, Hold>,
    /// Live holds by expiry: the exact reclaim order.
    live_holds: BTreeSet<(DateTime<Utc>, HoldId)>,
    /// Passport → its one live hold.
    held_passports: HashMap<PassportNumber, HoldId>,
    /// request_id of a hold → (fingerprint, hold, remembered until).
    remembered_holds: HashMap<RequestId, (String, HoldId, DateTime<Utc>)>,
    /// The in-process event log (same entries as the Redis Stream), ids `0-<n>`.
    events: Vec<Event>,
    /// Waitlist entries, in line or finished.
    entries: HashMap<EntryId, EntryRec>,
    /// Entries in line per post and category, by join sequence.
    lines: BTreeMap<(PostId, CategoryId), BTreeMap<u64, EntryId>>,
    /// Passport → the entry it waits in.
    waiting_passports: HashMap<PassportNumber, EntryId>,
    /// request_id of a join → (fingerprint, entry, remembered until).
    remembered_joins: HashMap<RequestId, (String, EntryId, DateTime<Utc>)>,
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
    /// What each waiting-room admission has done (see `Inventory::admission_step`).
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

/// Expired cancelled records forgotten per store call at most (bounded work per call).
const EXPIRE_BATCH: usize = 64;

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
                retention: Duration::days(super::DEFAULT_RETENTION_DAYS),
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
    /// The outcome of a request_id seen before: Ok(Some) replays it, Err refuses a reused id.
    fn replay(
        &self,
        op: Op,
        request_id: &RequestId,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Appointment>, StoreError> {
        let Some(seen) = self.remembered.get(&(op, request_id.clone())) else {
            return Ok(None);
        };
        if seen.expires_at <= now {
            return Ok(None);
        }
        if seen.fingerprint != fingerprint {
            return Err(Error::RequestIdReused {
                request_id: request_id.to_string(),
            }
            .into());
        }
        self.appointments
            .get(&seen.confirmation)
            .cloned()
            .map(Some)
            .ok_or_else(|| StoreError::corrupt("remembered request names a missing appointment"))
    }

    /// Refuses a second booking under one admission (checked with the other rules).
    fn check_admission(
        &self,
        admission: Option<&TicketId>,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        match admission.and_then(|t| self.admissions.get(t)) {
            Some(rec) if rec.expires_at > now && rec.booked.is_some() => Err(Error::AdmissionUsed),
            _ => Ok(()),
        }
    }

    /// Records the booking an admission made (a write: after every check).
    fn record_admission(
        &mut self,
        admission: Option<&TicketId>,
        confirmation: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) {
        if let Some(ticket) = admission {
            let rec = self.admission_rec(ticket, now);
            rec.booked = Some(confirmation.clone());
        }
    }

    fn admission_rec(&mut self, ticket: &TicketId, now: DateTime<Utc>) -> &mut AdmissionRec {
        let fresh = AdmissionRec {
            booked: None,
            steps: 0,
            expires_at: now + Duration::seconds(IDEMPOTENCY_TTL_SECS),
        };
        let rec = self
            .admissions
            .entry(ticket.clone())
            .or_insert(fresh.clone());
        if rec.expires_at <= now {
            *rec = fresh;
        }
        rec
    }

    fn remember(
        &mut self,
        op: Op,
        request_id: &RequestId,
        fingerprint: String,
        confirmation: ConfirmationNumber,
        now: DateTime<Utc>,
    ) {
        self.writes_since_prune += 1;
        if self.writes_since_prune >= 4096 {
            self.writes_since_prune = 0;
            self.remembered.retain(|_, r| r.expires_at > now);
            self.admissions.retain(|_, r| r.expires_at > now);
        }
        self.remembered.insert(
            (op, request_id.clone()),
            Remembered {
                fingerprint,
                confirmation,
                expires_at: now + Duration::seconds(IDEMPOTENCY_TTL_SECS),
            },
        );
    }

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

    fn slot_mut(&mut self, slot: &SlotRef) -> Option<&mut SlotRec> {
        self.days
            .get_mut(&slot.day())
            .and_then(|d| d.get_mut(&slot.time))
    }

    /// Returns the seats, passports and receipts of every hold expired at `now`, oldest first,
    /// exactly once (a hold leaves `live_holds` when reclaimed, confirmed or released).
    /// Forgets cancelled appointments past their retention, at most `EXPIRE_BATCH` per call
    /// (as Redis expires the records by itself): the record and its cancelled-index member.
    fn expire_records(&mut self, now: DateTime<Utc>) {
        for _ in 0..EXPIRE_BATCH {
            let Some(first) = self.expiring.first().cloned() else {
                return;
            };
            if first.0 > now {
                return;
            }
            self.expiring.remove(&first);
            if let Some(a) = self.appointments.remove(&first.1) {
                let day = a.slot.day();
                if let Some(set) = self.cancelled.get_mut(&day) {
                    set.remove(&ManifestCursor {
                        time: a.slot.time,
                        confirmation: a.confirmation.clone(),
                    });
                    if set.is_empty() {
                        self.cancelled.remove(&day);
                    }
                }
            }
        }
    }

    /// As `appt_expire.lua` then `appt_retire.lua` (see `Inventory::retire_past_appointments`):
    /// forgets at most a batch of retired records past their retention, then retires at most a
    /// batch of BOOKED appointments of days that have passed. Returns how many were retired.
    fn retire_past(&mut self, now: DateTime<Utc>) -> u32 {
        let batch = super::APPOINTMENT_RETIRE_BATCH as usize;
        for _ in 0..batch {
            let Some(first) = self.retired_expiry.first().cloned() else {
                break;
            };
            if first.0 > now {
                break;
            }
            self.retired_expiry.remove(&first);
            if self.retired.remove(&first.1) {
                self.appointments.remove(&first.1);
            }
        }
        let mut budget = batch;
        let mut retired = 0;
        while budget > 0 {
            let Some((due, day)) = self.past_days.first().cloned() else {
                break;
            };
            if due > now {
                break;
            }
            let members: Vec<ManifestCursor> = self
                .manifests
                .get(&day)
                .map(|m| m.iter().take(budget).cloned().collect())
                .unwrap_or_default();
            if members.is_empty() {
                // Every appointment of the day is retired (or gone): the day leaves the index.
                self.manifests.remove(&day);
                self.past_days.remove(&(due, day));
                continue;
            }
            budget -= members.len();
            for member in members {
                if let Some(m) = self.manifests.get_mut(&day) {
                    m.remove(&member);
                    if m.is_empty() {
                        self.manifests.remove(&day);
                    }
                }
                let confirmation = member.confirmation;
                let Some(a) = self.appointments.get(&confirmation).cloned() else {
                    continue;
                };
                if a.status != AppointmentStatus::Booked
                    || a.slot.day() != day
                    || self.retired.contains(&confirmation)
                {
                    continue;
                }
                if let Some(rec) = self.slot_mut(&a.slot) {
                    rec.booked = rec.booked.saturating_sub(a.seats());
                }
                // Compare-and-set: a passport is freed only while it still names this
                // appointment. Receipts stay spent: the fee paid for this interview is used.
                for x in &a.applicants {
                    if self.active.get(&x.passport) == Some(&confirmation) {
                        self.active.remove(&x.passport);
                    }
                }
                let until = due + self.retention;
                if until <= now {
                    self.appointments.remove(&confirmation);
                } else {
                    self.retired.insert(confirmation.clone());
                    self.retired_expiry.insert((until, confirmation.clone()));
                }
                self.push_event(
                    "passed",
                    &[
                        ("confirmation", confirmation.to_string()),
                        ("slot", a.slot.to_string()),
                        ("seats", a.seats().to_string()),
                        ("at", event_time(now)),
                    ],
                );
                retired += 1;
            }
        }
        retired
    }

    fn reclaim(&mut self, now: DateTime<Utc>) -> Reclaimed {
        let mut reclaimed = Reclaimed::default();
        while let Some((expires, id)) = self.live_holds.first().cloned() {
            if expires > now {
                break;
            }
            self.live_holds.remove(&(expires, id.clone()));
            let Some(hold) = self.holds.get_mut(&id) else {
                continue;
            };
            hold.status = HoldStatus::Expired;
            let hold = hold.clone();
            self.free_hold(&hold);
            self.push_event(
                "hold_expired",
                &[
                    ("hold_ref", id.reference()),
                    ("slot", hold.slot.to_string()),
                    ("seats", hold.seats().to_string()),
                    ("expires_ms", hold.expires_at.timestamp_millis().to_string()),
                ],
            );
            self.offer_ended(&hold, true, hold.expires_at);
            self.offer_seats(&hold.slot, hold.seats(), None, now);
            reclaimed.holds += 1;
            let day = hold.slot.day();
            if !reclaimed.days.contains(&day) {
                reclaimed.days.push(day);
            }
        }
        reclaimed
    }

    /// Takes an entry out of line for good.
    fn end_entry(
        &mut self,
        id: &EntryId,
        status: EntryStatus,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) {
        let Some(rec) = self.entries.get_mut(id) else {
            return;
        };
        rec.entry.status = status;
        rec.entry.updated_at = at;
        if let Some(r) = reason {
            rec.entry.reason = Some(r.to_owned());
        }
        let (line, seq) = (
            (rec.entry.post.clone(), rec.entry.category.clone()),
            rec.seq,
        );
        let passports: Vec<PassportNumber> = rec
            .entry
            .applicants
            .iter()
            .map(|a| a.passport.clone())
            .collect();
        if let Some(l) = self.lines.get_mut(&line) {
            l.remove(&seq);
        }
        for p in passports {
            if self.waiting_passports.get(&p) == Some(id) {
                self.waiting_passports.remove(&p);
            }
        }
    }

    /// Ends a moving entry for good (`reason`) that can never move its appointment: the seats
    /// of its live offer come back at once (the offer claims no passport or receipt) and go to
    /// the next entries (as `cancel_moving_entry` in holds_lib.lua).
    fn cancel_moving_entry(
        &mut self,
        id: &EntryId,
        reason: &'static str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let Some(rec) = self.entries.get(id) else {
            return Ok(());
        };
        if !rec.entry.status.in_line() {
            return Ok(());
        }
        let offer = match (&rec.offer, rec.entry.status) {
            (Some(h), EntryStatus::Offered) => self
                .holds
                .get(h)
                .filter(|h| h.status_at(now) == HoldStatus::Held)
                .cloned(),
            _ => None,
        };
        if let Some(hold) = &offer {
            self.release(hold, now)?;
        }
        self.end_entry(id, EntryStatus::Cancelled, Some(reason), now);
        self.push_event(
            "waitlist_cancelled",
            &[("entry", id.to_string()), ("reason", reason.to_owned())],
        );
        if let Some(hold) = offer {
            self.offer_seats(&hold.slot, hold.seats(), None, now);
        }
        Ok(())
    }

    /// A decline puts the entry of an offer back in line, an expiry ends it. Returns the entry
    /// when `hold` was its pending offer.
    fn offer_ended(&mut self, hold: &Hold, expired: bool, at: DateTime<Utc>) -> Option<EntryId> {
        let id = hold.entry.clone()?;
        let rec = self.entries.get_mut(&id)?;
        if rec.offer.as_ref() != Some(&hold.id) || rec.entry.status != EntryStatus::Offered {
            return Some(id);
        }
        if expired {
            self.end_entry(&id, EntryStatus::Expired, None, at);
            self.push_event(
                "offer_expired",
                &[("entry", id.to_string()), ("hold_ref", hold.id.reference())],
            );
        } else {
            rec.entry.status = EntryStatus::Waiting;
            rec.entry.updated_at = at;
            rec.offer = None;
            self.push_event(
                "offer_declined",
                &[("entry", id.to_string()), ("hold_ref", hold.id.reference())],
            );
        }
        Some(id)
    }

    /// Why an entry's group may not take seats now, or None (the rules of a booking).
    fn entry_refusal(&self, applicants: &[Applicant], now: DateTime<Utc>) -> Option<&'static str> {
        for a in applicants {
            let Some(r) = self.receipts.get(&a.receipt) else {
                return Some(reason::RECEIPT_NOT_REGISTERED);
            };
            if r.receipt.passport != a.passport {
                return Some(reason::RECEIPT_PASSPORT_MISMATCH);
            }
            if r.receipt.expires_at() <= now {
                return Some(reason::RECEIPT_EXPIRED);
            }
            if r.backing.is_some() || r.held_by.is_some() {
                return Some(reason::RECEIPT_IN_USE);
            }
            if self.active.contains_key(&a.passport)
                || self.held_passports.contains_key(&a.passport)
            {
                return Some(reason::APPLICANT_ALREADY_BOOKED);
            }
        }
        None
    }

    /// Offers the free seats of `slot` to the entries in line for it, in join order, after
    /// `released` seats came back: each offer is a hold for the entry's group expiring
    /// `offer_ttl` from now. The share setting limits how many released seats the line takes;
    /// entries that no longer qualify are cancelled; `skip` (just declined) is passed over.
    /// The same step as `offer_seats` in holds_lib.lua. Returns the seats offered.
    fn offer_seats(
        &mut self,
        slot: &SlotRef,
        released: u32,
        skip: Option<&EntryId>,
        now: DateTime<Utc>,
    ) -> u32 {
        let line_key = (slot.post.clone(), slot.category.clone());
        let candidates: Vec<EntryId> = match self.lines.get(&line_key) {
            Some(line) if released > 0 => line
                .values()
                .filter(|id| {
                    self.entries.get(*id).is_some_and(|r| {
                        r.entry.range.from <= slot.date && slot.date <= r.entry.range.to
                    })
                })
                .take(OFFER_SCAN_LIMIT)
                .cloned()
                .collect(),
            _ => return 0,
        };
        if candidates.is_empty() {
            return 0;
        }
        let Some(rec) = self
            .days
            .get(&slot.day())
            .and_then(|d| d.get(&slot.time))
            .copied()
        else {
            return 0;
        };
        if rec.closed {
            return 0;
        }
        let mut budget = rec.capacity.saturating_sub(rec.booked + rec.held);
        if let Some((share, acc)) = self.shares.get_mut(&line_key) {
            if *share < 100 {
                let total = *acc + released * *share;
                let granted = total / 100;
                *acc = total - granted * 100;
                budget = budget.min(granted);
            }
        }
        let mut offered = 0;
        for id in candidates {
            if budget == 0 {
                break;
            }
            let Some(rec) = self.entries.get(&id) else {
                continue;
            };
            let entry = &rec.entry;
            let seats = u32::try_from(entry.applicants.len()).unwrap_or(u32::MAX);
            if entry.status != EntryStatus::Waiting
                || skip == Some(&id)
                || seats > budget
                || !(entry.times.is_empty() || entry.times.contains(&slot.time))
            {
                continue;
            }
            let applicants = entry.applicants.clone();
            let moving = entry.moving.clone();
            let refusal = match &moving {
                Some(appointment) => match self.moving_refusal(appointment, rec.limit, slot) {
                    Some(None) => continue,
                    Some(Some(reason)) => Some(reason),
                    None => None,
                },
                None => self.entry_refusal(&applicants, now),
            };
            if let Some(reason) = refusal {
                self.end_entry(&id, EntryStatus::Cancelled, Some(reason), now);
                self.push_event(
                    "waitlist_cancelled",
                    &[("entry", id.to_string()), ("reason", reason.to_owned())],
                );
                continue;
            }
            let hold = Hold {
                id: HoldId::generate(),
                slot: slot.clone(),
                applicants,
                status: HoldStatus::Held,
                created_at: now,
                expires_at: now + self.offer_ttl,
                confirmation: None,
                entry: Some(id.clone()),
            };
            self.place_hold(&hold, moving.is_none());
            if let Some(rec) = self.entries.get_mut(&id) {
                rec.entry.status = EntryStatus::Offered;
                rec.entry.updated_at = now;
                rec.offer = Some(hold.id.clone());
            }
            self.push_event(
                "offered",
                &[
                    ("entry", id.to_string()),
                    ("hold_ref", hold.id.reference()),
                    ("slot", slot.to_string()),
                    ("seats", seats.to_string()),
                    ("expires_ms", hold.expires_at.timestamp_millis().to_string()),
                    ("at", event_time(now)),
                ],
            );
            budget -= seats;
            offered += seats;
        }
        offered
    }

    /// The writes of a reschedule whose checks passed: both slots, the receipts' move counts,
    /// the manifests, the appointment and its history, the `moved` event.
    fn move_appointment(
        &mut self,
        appointment: &Appointment,
        to: &SlotRef,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let from = appointment.slot.clone();
        let seats = appointment.seats();
        let confirmation = &appointment.confirmation;
        if let Some(r) = self.slot_mut(&from) {
            r.booked = r.booked.saturating_sub(seats);
        }
        if let Some(r) = self.slot_mut(to) {
            r.booked += seats;
        }
        for a in &appointment.applicants {
            if let Some(r) = self.receipts.get_mut(&a.receipt) {
                r.reschedules += 1;
            }
        }
        let old_cursor = ManifestCursor {
            time: from.time,
            confirmation: confirmation.clone(),
        };
        if let Some(m) = self.manifests.get_mut(&from.day()) {
            m.remove(&old_cursor);
        }
        self.manifests
            .entry(to.day())
            .or_default()
            .insert(ManifestCursor {
                time: to.time,
                confirmation: confirmation.clone(),
            });
        let moved = match self.appointments.get_mut(confirmation) {
            Some(a) => {
                a.slot = to.clone();
                a.updated_at = now;
                a.history.push(Move {
                    from: from.clone(),
                    to: to.clone(),
                    at: now,
                });
                a.clone()
            }
            None => return Err(StoreError::corrupt("appointment vanished inside the lock")),
        };
        self.push_event(
            "moved",
            &[
                ("confirmation", confirmation.to_string()),
                ("from", from.to_string()),
                ("to", to.to_string()),
                ("seats", seats.to_string()),
                ("at", event_time(now)),
            ],
        );
        Ok(moved)
    }

    /// Why a moving entry's appointment may not move to `slot` now: None = it may, Some(None) =
    /// not this slot (not earlier), Some(Some(reason)) = never again (the entry is cancelled).
    fn moving_refusal(
        &self,
        appointment: &ConfirmationNumber,
        limit: u32,
        slot: &SlotRef,
    ) -> Option<Option<&'static str>> {
        let Some(a) = self.appointments.get(appointment).filter(|a| {
            a.status == AppointmentStatus::Booked && !self.retired.contains(appointment)
        }) else {
            // Cancelled, or retired (past): it can never move again.
            return Some(Some(reason::APPOINTMENT_CANCELLED));
        };
        if (slot.date, slot.time) >= (a.slot.date, a.slot.time) {
            return Some(None);
        }
        let used_up = a.applicants.iter().any(|x| {
            self.receipts
                .get(&x.receipt)
                .is_none_or(|r| r.reschedules >= limit)
        });
        if used_up {
            return Some(Some(reason::RESCHEDULE_LIMIT));
        }
        None
    }

    /// Accepting an offer made to a moving entry: its appointment moves onto the offered seats
    /// (a reschedule, same number), the seats left behind go to that date's line.
    fn accept_move(
        &mut self,
        hold: &Hold,
        appointment: &ConfirmationNumber,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let current = self
            .appointments
            .get(appointment)
            .cloned()
            .ok_or_else(|| StoreError::corrupt("moving entry names a missing appointment"))?;
        // A refusal is final for the entry: the offer's seats come back at once, the entry ends.
        let refused = if current.status == AppointmentStatus::Cancelled
            || self.retired.contains(appointment)
        {
            Some(Error::AppointmentCancelled {
                confirmation_number: appointment.to_string(),
            })
        } else {
            current
                .applicants
                .iter()
                .find(|a| {
                    let used = self.receipts.get(&a.receipt).map(|r| r.reschedules);
                    used.is_none_or(|u| u >= limit)
                })
                .map(|a| Error::RescheduleLimit {
                    receipt_number: a.receipt.to_string(),
                    limit,
                })
        };
        if let Some(error) = refused {
            if let Some(entry) = &hold.entry {
                self.cancel_moving_entry(entry, error.reason(), now)?;
            }
            return Err(error.into());
        }
        self.reclaim(now);
        self.live_holds.remove(&(hold.expires_at, hold.id.clone()));
        self.free_hold(hold);
        if let Some(h) = self.holds.get_mut(&hold.id) {
            h.status = HoldStatus::Confirmed;
            h.confirmation = Some(appointment.clone());
        }
        if let Some(entry) = &hold.entry {
            self.end_entry(entry, EntryStatus::Fulfilled, None, now);
            if let Some(rec) = self.entries.get_mut(entry) {
                rec.entry.confirmation = Some(appointment.clone());
            }
        }
        let moved = self.move_appointment(&current, &hold.slot, now)?;
        self.offer_seats(&current.slot, current.seats(), None, now);
        Ok(moved)
    }

    /// The writes of a new hold: its seats, and (`claims`) its receipts and passports, are taken
    /// until expiry. An offer to a moving entry claims nothing: its appointment does.
    fn place_hold(&mut self, hold: &Hold, claims: bool) {
        let seats = hold.seats();
        if let Some(rec) = self.slot_mut(&hold.slot) {
            rec.held += seats;
        }
        for a in hold.applicants.iter().filter(|_| claims) {
            if let Some(r) = self.receipts.get_mut(&a.receipt) {
                r.held_by = Some(hold.id.clone());
            }
            self.held_passports
                .insert(a.passport.clone(), hold.id.clone());
        }
        self.live_holds.insert((hold.expires_at, hold.id.clone()));
        self.holds.insert(hold.id.clone(), hold.clone());
    }

    /// The entry as shown: with its place in line and its offer.
    fn entry_view(&self, id: &EntryId) -> Option<WaitlistEntry> {
        let rec = self.entries.get(id)?;
        let mut entry = rec.entry.clone();
        if entry.status.in_line() {
            let line = self
                .lines
                .get(&(entry.post.clone(), entry.category.clone()));
            entry.position =
                line.map(|l| u32::try_from(l.range(..rec.seq).count() + 1).unwrap_or(u32::MAX));
        }
        entry.offer = rec.offer.as_ref().and_then(|h| self.holds.get(h)).cloned();
        Some(entry)
    }

    /// The writes of releasing a live hold: its seats and claims come back, it is RELEASED, one
    /// `hold_released` event (ReleaseHold, and leaving the waitlist with a pending offer).
    fn release(&mut self, hold: &Hold, now: DateTime<Utc>) -> Result<Hold, StoreError> {
        self.live_holds.remove(&(hold.expires_at, hold.id.clone()));
        self.free_hold(hold);
        let released = match self.holds.get_mut(&hold.id) {
            Some(h) => {
                h.status = HoldStatus::Released;
                h.clone()
            }
            None => return Err(StoreError::corrupt("hold vanished inside the lock")),
        };
        self.push_event(
            "hold_released",
            &[
                ("hold_ref", hold.id.reference()),
                ("slot", hold.slot.to_string()),
                ("seats", hold.seats().to_string()),
                ("at", event_time(now)),
            ],
        );
        Ok(released)
    }

    /// A hold's seats, passports and receipts back to free (its status is set by the caller).
    fn free_hold(&mut self, hold: &Hold) {
        let seats = hold.seats();
        if let Some(rec) = self.slot_mut(&hold.slot) {
            rec.held = rec.held.saturating_sub(seats);
        }
        for a in &hold.applicants {
            if let Some(r) = self.receipts.get_mut(&a.receipt) {
                if r.held_by.as_ref() == Some(&hold.id) {
                    r.held_by = None;
                }
            }
            if self.held_passports.get(&a.passport) == Some(&hold.id) {
                self.held_passports.remove(&a.passport);
            }
        }
    }

    /// The writes of a booking whose checks passed: seats, receipts, passports, appointment,
    /// manifest, event. `hold` names the hold it confirms, if any.
    fn write_booking(
        &mut self,
        slot: &SlotRef,
        applicants: &[crate::domain::types::Applicant],
        confirmation: &ConfirmationNumber,
        hold: Option<&HoldId>,
        now: DateTime<Utc>,
    ) -> Appointment {
        let seats = u32::try_from(applicants.len()).unwrap_or(u32::MAX);
        if let Some(rec) = self.slot_mut(slot) {
            rec.booked += seats;
        }
        for a in applicants {
            if let Some(r) = self.receipts.get_mut(&a.receipt) {
                r.backing = Some(confirmation.clone());
            }
            self.active.insert(a.passport.clone(), confirmation.clone());
        }
        let appointment = Appointment {
            confirmation: confirmation.clone(),
            slot: slot.clone(),
            applicants: applicants.to_vec(),
            status: AppointmentStatus::Booked,
            created_at: now,
            updated_at: now,
            history: Vec::new(),
        };
        self.appointments
            .insert(confirmation.clone(), appointment.clone());
        self.manifests
            .entry(slot.day())
            .or_default()
            .insert(ManifestCursor {
                time: slot.time,
                confirmation: confirmation.clone(),
            });
        let mut fields = vec![
            ("confirmation", confirmation.to_string()),
            ("slot", slot.to_string()),
            ("seats", seats.to_string()),
            ("at", event_time(now)),
        ];
        if let Some(h) = hold {
            fields.push(("hold_ref", h.reference()));
        }
        self.push_event("booked", &fields);
        appointment
    }

    /// Every stateful rule of a booking, checked before anything is written.
    /// `confirmation` is the new appointment's number (None for a hold).
    fn check_booking(
        &self,
        booking: &Booking,
        confirmation: Option<&ConfirmationNumber>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let slot = &booking.slot;
        let rec = self
            .days
            .get(&slot.day())
            .and_then(|d| d.get(&slot.time))
            .ok_or_else(|| Error::SlotNotFound { slot: slot.clone() })?;
        if rec.closed {
            return Err(Error::SlotClosed { slot: slot.clone() }.into());
        }
        let remaining = rec.capacity.saturating_sub(rec.booked + rec.held);
        if remaining < booking.seats() {
            return Err(Error::SlotFull {
                slot: slot.clone(),
                requested: booking.seats(),
                remaining,
            }
            .into());
        }
        self.check_applicants(&booking.applicants, now)?;
        if confirmation.is_some_and(|c| self.appointments.contains_key(c)) {
            return Err(StoreError::ConfirmationTaken);
        }
        Ok(())
    }

    /// A moving entry's rules at join: its appointment is booked, held by exactly this group,
    /// later than the range, and every receipt has a reschedule left.
    fn check_moving(
        &self,
        join: &WaitlistJoin,
        appointment: &ConfirmationNumber,
        limit: u32,
    ) -> Result<(), StoreError> {
        let a = self
            .appointments
            .get(appointment)
            .ok_or(Error::AppointmentNotFound)?;
        // The group first (as wl_join.lua): a number without its group learns nothing.
        if a.applicants != join.applicants {
            return Err(Error::AppointmentNotFound.into());
        }
        if a.status == AppointmentStatus::Cancelled {
            return Err(Error::AppointmentCancelled {
                confirmation_number: appointment.to_string(),
            }
            .into());
        }
        if a.slot.date <= join.range.to {
            return Err(moving_range_error(a.slot.date).into());
        }
        for x in &a.applicants {
            let used = self.receipts.get(&x.receipt).map(|r| r.reschedules);
            if used.is_none_or(|u| u >= limit) {
                return Err(Error::RescheduleLimit {
                    receipt_number: x.receipt.to_string(),
                    limit,
                }
                .into());
            }
        }
        Ok(())
    }

    /// The receipt and passport rules of a group (booking, hold or waitlist join).
    fn check_applicants(
        &self,
        applicants: &[Applicant],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for a in applicants {
            let rec = self
                .receipts
                .get(&a.receipt)
                .ok_or_else(|| Error::ReceiptNotRegistered {
                    receipt_number: a.receipt.to_string(),
                })?;
            if rec.receipt.passport != a.passport {
                return Err(Error::ReceiptPassportMismatch {
                    receipt_number: a.receipt.to_string(),
                }
                .into());
            }
            if rec.receipt.expires_at() <= now {
                return Err(Error::ReceiptExpired {
                    receipt_number: a.receipt.to_string(),
                    expired_at: crate::domain::types::format_instant(rec.receipt.expires_at()),
                }
                .into());
            }
            if rec.backing.is_some() || rec.held_by.is_some() {
                return Err(Error::ReceiptInUse {
                    receipt_number: a.receipt.to_string(),
                }
                .into());
            }
            if self.active.contains_key(&a.passport)
                || self.held_passports.contains_key(&a.passport)
            {
                return Err(Error::ApplicantAlreadyBooked {
                    passport_number: a.passport.to_string(),
                }
                .into());
            }
        }
        Ok(())
    }
}

/// What a request_id remembered with its fingerprint (until an instant) answers: Ok(Some(first))
/// replays the first outcome, Err refuses the id reused for other content, Ok(None) is new.
fn recall<T: Clone>(
    seen: &HashMap<RequestId, (String, T, DateTime<Utc>)>,
    request_id: &RequestId,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> Result<Option<T>, StoreError> {
    match seen.get(request_id) {
        Some((fp, first, until)) if *until > now => {
            if fp != fingerprint {
                return Err(Error::RequestIdReused {
                    request_id: request_id.to_string(),
                }
                .into());
            }
            Ok(Some(first.clone()))
        }
        _ => Ok(None),
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
        let mut state = self.lock();
        let mut report = OpenReport::default();
        let mut freed: Vec<(SlotRef, u32)> = Vec::new();
        for day in plan.days() {
            // As the Redis store's `days-due`: every opened day is retired once it has passed.
            let due = super::appointment_retire_at(day.date);
            state.past_days.insert((due, day.clone()));
            let slots = state.days.entry(day.clone()).or_default();
            for time in plan.times() {
                match slots.get_mut(&time) {
                    None => {
                        freed.push((day.at(time), plan.seats));
                        slots.insert(
                            time,
                            SlotRec {
                                capacity: plan.seats,
                                booked: 0,
                                held: 0,
                                closed: false,
                            },
                        );
                        report.opened += 1;
                    }
                    Some(rec) => {
                        let before = if rec.closed {
                            0
                        } else {
                            rec.capacity.saturating_sub(rec.booked + rec.held)
                        };
                        rec.closed = false;
                        rec.capacity = plan.seats.max(rec.booked + rec.held);
                        report.updated += 1;
                        let after = rec.capacity - (rec.booked + rec.held);
                        if after > before {
                            freed.push((day.at(time), after - before));
                        }
                        if plan.seats < rec.booked + rec.held {
                            report.kept_at_booked.push(to_state(day.at(time), rec));
                        }
                    }
                }
            }
        }
        // The same operator events as the Redis scripts (the slot feed reads them).
        state.push_event(
            "opened",
            &[
                ("post", plan.post.to_string()),
                ("category", plan.category.to_string()),
                ("from", format_date(plan.range.from)),
                ("to", format_date(plan.range.to)),
                ("seats", plan.seats.to_string()),
                ("opened", report.opened.to_string()),
                ("updated", report.updated.to_string()),
            ],
        );
        for (slot, seats) in freed {
            state.offer_seats(&slot, seats, None, now);
        }
        Ok(report)
    }

    async fn set_capacity(
        &self,
        slot: &SlotRef,
        capacity: u32,
        now: DateTime<Utc>,
    ) -> Result<SlotState, StoreError> {
        let mut state = self.lock();
        let rec = state
            .days
            .get_mut(&slot.day())
            .and_then(|d| d.get_mut(&slot.time))
            .ok_or_else(|| Error::SlotNotFound { slot: slot.clone() })?;
        // Seats under live holds count as taken.
        if capacity < rec.booked + rec.held {
            return Err(Error::CapacityBelowBooked {
                slot: slot.clone(),
                capacity,
                booked: rec.booked + rec.held,
            }
            .into());
        }
        let raised = capacity.saturating_sub(rec.capacity);
        rec.capacity = capacity;
        state.push_event(
            "capacity_set",
            &[
                ("slot", slot.to_string()),
                ("capacity", capacity.to_string()),
            ],
        );
        state.offer_seats(slot, raised, None, now);
        let rec = state
            .days
            .get(&slot.day())
            .and_then(|d| d.get(&slot.time))
            .ok_or_else(|| StoreError::corrupt("slot vanished inside the lock"))?;
        Ok(to_state(slot.clone(), rec))
    }

    async fn close_slots(&self, day: &DayRef, time: Option<SlotTime>) -> Result<u32, StoreError> {
        let mut state = self.lock();
        let Some(slots) = state.days.get_mut(day) else {
            // A day with no slots has nothing to close; one named slot must exist.
            return match time {
                Some(t) => Err(Error::SlotNotFound { slot: day.at(t) }.into()),
                None => Ok(0),
            };
        };
        let mut closed = 0;
        match time {
            Some(t) => {
                let rec = slots
                    .get_mut(&t)
                    .ok_or_else(|| Error::SlotNotFound { slot: day.at(t) })?;
                if !rec.closed {
                    rec.closed = true;
                    closed += 1;
                }
            }
            None => {
                for rec in slots.values_mut().filter(|r| !r.closed) {
                    rec.closed = true;
                    closed += 1;
                }
            }
        }
        if closed > 0 {
            state.push_event(
                "closed",
                &[
                    ("day", day.to_string()),
                    // HHMM like the Redis script's event, "day" for the whole day.
                    (
                        "time",
                        time.map_or_else(
                            || "day".to_owned(),
                            |t| format!("{:02}{:02}", t.minutes() / 60, t.minutes() % 60),
                        ),
                    ),
                    ("closed", closed.to_string()),
                ],
            );
        }
        Ok(closed)
    }

    async fn slots(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<Vec<SlotState>, StoreError> {
        let state = self.lock();
        let from = DayRef {
            post: post.clone(),
            category: category.clone(),
            date: range.from,
        };
        let to = DayRef {
            date: range.to,
            ..from.clone()
        };
        Ok(state
            .days
            .range(from..=to)
            .flat_map(|(day, slots)| slots.iter().map(|(t, r)| to_state(day.at(*t), r)))
            .collect())
    }

    async fn book(
        &self,
        booking: &Booking,
        confirmation: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let mut state = self.lock();
        let fingerprint = booking.fingerprint();
        if let Some(first) = state.replay(Op::Book, &booking.request_id, &fingerprint, now)? {
            return Ok(first);
        }
        state.check_admission(booking.admission.as_ref(), now)?;
        state.reclaim(now);
        state.expire_records(now);
        state.check_booking(booking, Some(confirmation), now)?;

        // Writes: nothing below can fail.
        let appointment =
            state.write_booking(&booking.slot, &booking.applicants, confirmation, None, now);
        state.record_admission(booking.admission.as_ref(), confirmation, now);
        state.remember(
            Op::Book,
            &booking.request_id,
            fingerprint,
            confirmation.clone(),
            now,
        );
        Ok(appointment)
    }

    async fn appointment(
        &self,
        confirmation: &ConfirmationNumber,
        passport: &PassportNumber,
    ) -> Result<Appointment, StoreError> {
        let state = self.lock();
        state
            .appointments
            .get(confirmation)
            .filter(|a| a.includes(passport))
            .cloned()
            .ok_or_else(|| Error::AppointmentNotFound.into())
    }

    async fn cancel(
        &self,
        cancellation: &Cancellation,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let mut state = self.lock();
        state.expire_records(now);
        let fingerprint = cancellation.fingerprint();
        if let Some(first) =
            state.replay(Op::Cancel, &cancellation.request_id, &fingerprint, now)?
        {
            return Ok(first);
        }
        let appointment = state
            .appointments
            .get(&cancellation.confirmation)
            .filter(|a| a.includes(&cancellation.passport))
            .ok_or(Error::AppointmentNotFound)?;
        if appointment.status == AppointmentStatus::Cancelled {
            return Err(Error::AppointmentCancelled {
                confirmation_number: cancellation.confirmation.to_string(),
            }
            .into());
        }
        // A retired (past) appointment has given its passports back: it is history now.
        if state.retired.contains(&cancellation.confirmation) {
            return Err(Error::SlotStarted {
                slot: appointment.slot.clone(),
            }
            .into());
        }
        let slot = appointment.slot.clone();
        let seats = appointment.seats();
        let applicants = appointment.applicants.clone();

        if let Some(rec) = state
            .days
            .get_mut(&slot.day())
            .and_then(|d| d.get_mut(&slot.time))
        {
            rec.booked = rec.booked.saturating_sub(seats);
        }
        // Compare-and-set: only claims that still name this appointment are freed.
        let confirmation = &cancellation.confirmation;
        for a in &applicants {
            if let Some(r) = state.receipts.get_mut(&a.receipt) {
                if r.backing.as_ref() == Some(confirmation) {
                    r.backing = None;
                }
            }
            if state.active.get(&a.passport) == Some(confirmation) {
                state.active.remove(&a.passport);
            }
        }
        let updated = match state.appointments.get_mut(&cancellation.confirmation) {
            Some(a) => {
                a.status = AppointmentStatus::Cancelled;
                a.updated_at = now;
                a.clone()
            }
            None => return Err(StoreError::corrupt("appointment vanished inside the lock")),
        };
        // As cancel.lua: the member leaves the manifest for the day's cancelled index, and the
        // record is forgotten once the retention has passed.
        let member = ManifestCursor {
            time: slot.time,
            confirmation: confirmation.clone(),
        };
        let day = slot.day();
        if let Some(set) = state.manifests.get_mut(&day) {
            set.remove(&member);
            if set.is_empty() {
                state.manifests.remove(&day);
            }
        }
        state.cancelled.entry(day).or_default().insert(member);
        let until = now + state.retention;
        state.expiring.insert((until, confirmation.clone()));
        state.remember(
            Op::Cancel,
            &cancellation.request_id,
            fingerprint,
            cancellation.confirmation.clone(),
            now,
        );
        state.push_event(
            "cancelled",
            &[
                ("confirmation", cancellation.confirmation.to_string()),
                ("slot", updated.slot.to_string()),
                ("seats", seats.to_string()),
                ("at", event_time(now)),
            ],
        );
        // The entry that waited to move this appointment can never move it: it ends now.
        let movers: Vec<EntryId> = applicants
            .iter()
            .filter_map(|a| state.waiting_passports.get(&a.passport).cloned())
            .filter(|e| {
                state.entries.get(e).and_then(|r| r.entry.moving.as_ref()) == Some(confirmation)
            })
            .collect();
        for entry in movers {
            state.cancel_moving_entry(&entry, reason::APPOINTMENT_CANCELLED, now)?;
        }
        state.offer_seats(&slot, seats, None, now);
        Ok(updated)
    }

    async fn manifest(&self, query: &ManifestQuery) -> Result<ManifestPage, StoreError> {
        let state = self.lock();
        let mut page = ManifestPage::default();
        let limit = query.limit as usize;
        if limit == 0 {
            return Ok(page);
        }
        let after = |set: &'_ BTreeSet<ManifestCursor>| -> Vec<ManifestCursor> {
            let iter: Box<dyn Iterator<Item = &ManifestCursor>> = match &query.after {
                Some(after) => Box::new(
                    set.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
                ),
                None => Box::new(set.iter()),
            };
            iter.take(limit + 1).cloned().collect()
        };
        let empty = BTreeSet::new();
        let live = state.manifests.get(&query.day).unwrap_or(&empty);
        // As manifest.lua: the live manifest holds BOOKED appointments only; with cancelled
        // ones, at most limit + 1 members of each set are read and merged in order.
        let mut members = after(live);
        if query.include_cancelled {
            members.extend(after(state.cancelled.get(&query.day).unwrap_or(&empty)));
            members.sort();
            members.truncate(limit + 1);
        }
        for cursor in &members {
            let Some(a) = state.appointments.get(&cursor.confirmation) else {
                return Err(StoreError::corrupt("manifest names a missing appointment"));
            };
            if page.appointments.len() == limit {
                // One more exists: the page ends at the previous entry.
                page.next = page.appointments.last().map(|last| ManifestCursor {
                    time: last.slot.time,
                    confirmation: last.confirmation.clone(),
                });
                break;
            }
            page.appointments.push(a.clone());
        }
        Ok(page)
    }

    async fn register_receipt(&self, receipt: &Receipt) -> Result<(Receipt, bool), StoreError> {
        let mut state = self.lock();
        if let Some(existing) = state.receipts.get(&receipt.number) {
            return if &existing.receipt == receipt {
                Ok((existing.receipt.clone(), false))
            } else {
                Err(Error::ReceiptConflict {
                    receipt_number: receipt.number.to_string(),
                }
                .into())
            };
        }
        state.receipts.insert(
            receipt.number.clone(),
            ReceiptRec {
                receipt: receipt.clone(),
                backing: None,
                held_by: None,
                reschedules: 0,
            },
        );
        Ok((receipt.clone(), true))
    }

    async fn audit(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<AuditReport, StoreError> {
        let slots = self.slots(post, category, range).await?;
        let state = self.lock();
        let mut seats_by_slot: HashMap<&SlotRef, u32> = HashMap::new();
        for a in state.appointments.values() {
            // A retired (past) appointment left its slot's booked count with its day's index.
            if a.status == AppointmentStatus::Booked && !state.retired.contains(&a.confirmation) {
                *seats_by_slot.entry(&a.slot).or_default() += a.seats();
            }
        }
        let mut held_by_slot: HashMap<&SlotRef, u32> = HashMap::new();
        for (_, id) in &state.live_holds {
            if let Some(h) = state.holds.get(id) {
                *held_by_slot.entry(&h.slot).or_default() += h.seats();
            }
        }
        let mut report = AuditReport::default();
        for s in &slots {
            let counted = seats_by_slot.get(&s.slot).copied().unwrap_or(0);
            let counted_held = held_by_slot.get(&s.slot).copied().unwrap_or(0);
            report.slots_checked += 1;
            report
                .violations
                .extend(crate::domain::rules::audit_slot(s, counted, counted_held));
        }
        Ok(report)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn refuse_sold_out_hold(
        &self,
        request: &HoldRequest,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // The Redis store's memo rule, answered exactly: a slot full of bookings (so no live
        // hold on it) refuses a hold whose request_id was not seen.
        let state = self.lock();
        let slot = &request.slot;
        let full = state
            .days
            .get(&slot.day())
            .and_then(|d| d.get(&slot.time))
            .is_some_and(|rec| !rec.closed && rec.booked >= rec.capacity);
        let seen = state
            .remembered_holds
            .get(&request.request_id)
            .is_some_and(|(_, _, until)| *until > now);
        if full && !seen {
            return Err(Error::SlotFull {
                slot: slot.clone(),
                requested: request.seats(),
                remaining: 0,
            }
            .into());
        }
        Ok(())
    }

    async fn hold(
        &self,
        request: &HoldRequest,
        id: &HoldId,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Hold, StoreError> {
        let mut state = self.lock();
        let fingerprint = request.fingerprint();
        if let Some(first) = recall(
            &state.remembered_holds,
            &request.request_id,
            &fingerprint,
            now,
        )? {
            return state
                .holds
                .get(&first)
                .cloned()
                .ok_or_else(|| StoreError::corrupt("remembered request names a missing hold"));
        }
        state.reclaim(now);
        // The same rules as a booking; a hold id collision is drawn again like a number.
        state.check_booking(request, None, now)?;
        if state.holds.contains_key(id) {
            return Err(StoreError::ConfirmationTaken);
        }

        let hold = Hold {
            id: id.clone(),
            slot: request.slot.clone(),
            applicants: request.applicants.clone(),
            status: HoldStatus::Held,
            created_at: now,
            expires_at,
            confirmation: None,
            entry: None,
        };
        let seats = hold.seats();
        state.place_hold(&hold, true);
        state.remembered_holds.insert(
            request.request_id.clone(),
            (
                fingerprint,
                id.clone(),
                now + Duration::seconds(IDEMPOTENCY_TTL_SECS),
            ),
        );
        state.push_event(
            "held",
            &[
                ("hold_ref", id.reference()),
                ("slot", hold.slot.to_string()),
                ("seats", seats.to_string()),
                ("expires_ms", expires_at.timestamp_millis().to_string()),
                ("at", event_time(now)),
            ],
        );
        Ok(hold)
    }

    async fn confirm_hold(
        &self,
        confirmation: &HoldConfirmation,
        number: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let mut state = self.lock();
        let hold = state
            .holds
            .get(&confirmation.hold)
            .cloned()
            .ok_or(Error::HoldNotFound)?;
        match hold.status_at(now) {
            HoldStatus::Held => {}
            HoldStatus::Confirmed => {
                // Confirming again answers the first outcome.
                let first = hold
                    .confirmation
                    .as_ref()
                    .and_then(|c| state.appointments.get(c))
                    .cloned();
                return first
                    .ok_or_else(|| StoreError::corrupt("confirmed hold names no appointment"));
            }
            HoldStatus::Expired => {
                state.reclaim(now);
                return Err(Error::HoldExpired {
                    hold_id: hold.id.to_string(),
                    expired_at: crate::domain::types::format_instant(hold.expires_at),
                }
                .into());
            }
            s @ HoldStatus::Released => {
                return Err(Error::HoldNotActive {
                    hold_id: hold.id.to_string(),
                    status: s.as_str().to_owned(),
                }
                .into())
            }
        }
        state.check_admission(confirmation.admission.as_ref(), now)?;
        let moving = hold
            .entry
            .as_ref()
            .and_then(|e| state.entries.get(e))
            .and_then(|r| r.entry.moving.clone().map(|m| (m, r.limit)));
        if let Some((appointment, limit)) = moving {
            let moved = state.accept_move(&hold, &appointment, limit, now)?;
            state.record_admission(confirmation.admission.as_ref(), &moved.confirmation, now);
            return Ok(moved);
        }
        // Compare-and-set: the claims become the appointment's only while they still name this
        // hold (as confirm_hold.lua); a hold that lost one has expired and books nothing.
        let claims_held = hold.applicants.iter().all(|a| {
            state
                .receipts
                .get(&a.receipt)
                .is_some_and(|r| r.held_by.as_ref() == Some(&hold.id))
                && state.held_passports.get(&a.passport) == Some(&hold.id)
        });
        if !claims_held {
            return Err(Error::HoldExpired {
                hold_id: hold.id.to_string(),
                expired_at: crate::domain::types::format_instant(hold.expires_at),
            }
            .into());
        }
        if state.appointments.contains_key(number) {
            return Err(StoreError::ConfirmationTaken);
        }
        state.reclaim(now);
        state.record_admission(confirmation.admission.as_ref(), number, now);

        // The hold's seats, passports and receipts become the appointment's.
        state.live_holds.remove(&(hold.expires_at, hold.id.clone()));
        state.free_hold(&hold);
        if let Some(h) = state.holds.get_mut(&hold.id) {
            h.status = HoldStatus::Confirmed;
            h.confirmation = Some(number.clone());
        }
        if let Some(entry) = &hold.entry {
            state.end_entry(entry, EntryStatus::Fulfilled, None, now);
            if let Some(rec) = state.entries.get_mut(entry) {
                rec.entry.confirmation = Some(number.clone());
            }
        }
        Ok(state.write_booking(&hold.slot, &hold.applicants, number, Some(&hold.id), now))
    }

    async fn release_hold(
        &self,
        release: &HoldRelease,
        now: DateTime<Utc>,
    ) -> Result<Hold, StoreError> {
        let mut state = self.lock();
        let hold = state
            .holds
            .get(&release.hold)
            .cloned()
            .ok_or(Error::HoldNotFound)?;
        match hold.status_at(now) {
            HoldStatus::Held => {}
            HoldStatus::Released => return Ok(hold),
            HoldStatus::Expired => {
                state.reclaim(now);
                return Err(Error::HoldExpired {
                    hold_id: hold.id.to_string(),
                    expired_at: crate::domain::types::format_instant(hold.expires_at),
                }
                .into());
            }
            s @ HoldStatus::Confirmed => {
                return Err(Error::HoldNotActive {
                    hold_id: hold.id.to_string(),
                    status: s.as_str().to_owned(),
                }
                .into())
            }
        }
        state.reclaim(now);
        let released = state.release(&hold, now)?;
        let declined = state.offer_ended(&hold, false, now);
        state.offer_seats(&hold.slot, hold.seats(), declined.as_ref(), now);
        Ok(released)
    }

    async fn find_hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        Ok(self.lock().holds.get(id).cloned())
    }

    async fn reclaim_expired_holds(&self, now: DateTime<Utc>) -> Result<Reclaimed, StoreError> {
        Ok(self.lock().reclaim(now))
    }

    async fn retire_passed_waitlist(&self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        // As wl_retire.lua: at most WAITLIST_RETIRE_BATCH due entries per call; a WAITING one
        // ends EXPIRED (DATES_PASSED), an OFFERED one is looked at again after the offer TTL,
        // a finished one just leaves the index.
        let mut state = self.lock();
        let due: Vec<((DateTime<Utc>, u64), EntryId)> = state
            .retire_due
            .range(..=(now, u64::MAX))
            .take(super::WAITLIST_RETIRE_BATCH as usize)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let mut retired = 0;
        for (key, id) in due {
            state.retire_due.remove(&key);
            match state.entries.get(&id).map(|r| r.entry.status) {
                Some(EntryStatus::Offered) => {
                    let later = now + state.offer_ttl;
                    state.retire_due.insert((later, key.1), id);
                }
                Some(EntryStatus::Waiting) => {
                    state.end_entry(&id, EntryStatus::Expired, Some("DATES_PASSED"), now);
                    state.push_event(
                        "waitlist_cancelled",
                        &[
                            ("entry", id.to_string()),
                            ("reason", "DATES_PASSED".to_owned()),
                        ],
                    );
                    retired += 1;
                }
                _ => {}
            }
        }
        Ok(retired)
    }

    async fn retire_past_appointments(&self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        let mut state = self.lock();
        Ok(state.retire_past(now))
    }

    async fn reschedule(
        &self,
        reschedule: &Reschedule,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let mut state = self.lock();
        let fingerprint = reschedule.fingerprint();
        if let Some(first) =
            state.replay(Op::Reschedule, &reschedule.request_id, &fingerprint, now)?
        {
            return Ok(first);
        }
        state.reclaim(now);
        // Checks, in the Redis script's order.
        let appointment = state
            .appointments
            .get(&reschedule.confirmation)
            .filter(|a| a.includes(&reschedule.passport))
            .cloned()
            .ok_or(Error::AppointmentNotFound)?;
        if appointment.status == AppointmentStatus::Cancelled {
            return Err(Error::AppointmentCancelled {
                confirmation_number: reschedule.confirmation.to_string(),
            }
            .into());
        }
        if state.retired.contains(&reschedule.confirmation) {
            return Err(Error::SlotStarted {
                slot: appointment.slot.clone(),
            }
            .into());
        }
        let to = &reschedule.new_slot;
        let from = appointment.slot.clone();
        if *to == from {
            return Err(Error::RescheduleSameSlot {
                confirmation_number: reschedule.confirmation.to_string(),
                slot: from,
            }
            .into());
        }
        let seats = appointment.seats();
        let rec = state
            .days
            .get(&to.day())
            .and_then(|d| d.get(&to.time))
            .ok_or_else(|| Error::SlotNotFound { slot: to.clone() })?;
        if rec.closed {
            return Err(Error::SlotClosed { slot: to.clone() }.into());
        }
        let remaining = rec.capacity.saturating_sub(rec.booked + rec.held);
        if remaining < seats {
            return Err(Error::SlotFull {
                slot: to.clone(),
                requested: seats,
                remaining,
            }
            .into());
        }
        for a in &appointment.applicants {
            let used = state
                .receipts
                .get(&a.receipt)
                .map(|r| r.reschedules)
                .ok_or_else(|| StoreError::corrupt("appointment names a missing receipt"))?;
            if used >= limit {
                return Err(Error::RescheduleLimit {
                    receipt_number: a.receipt.to_string(),
                    limit,
                }
                .into());
            }
        }

        // Writes: both slots change in this one critical section.
        let moved = state.move_appointment(&appointment, to, now)?;
        state.remember(
            Op::Reschedule,
            &reschedule.request_id,
            fingerprint,
            reschedule.confirmation.clone(),
            now,
        );
        state.offer_seats(&from, seats, None, now);
        Ok(moved)
    }

    async fn events(&self, start: EventStart, limit: u32) -> Result<EventPage, StoreError> {
        let state = self.lock();
        let after = match start {
            EventStart::Latest => {
                return Ok(EventPage {
                    events: Vec::new(),
                    next: state.events.last().map(|e| e.id).unwrap_or_default(),
                })
            }
            EventStart::After(id) => id,
        };
        let from = state.events.partition_point(|e| e.id <= after);
        let events: Vec<Event> = state.events[from..]
            .iter()
            .take(limit as usize)
            .cloned()
            .collect();
        let next = events.last().map(|e| e.id).unwrap_or(after);
        Ok(EventPage { events, next })
    }

    async fn join_waitlist(
        &self,
        join: &WaitlistJoin,
        id: &EntryId,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<WaitlistEntry, StoreError> {
        let mut state = self.lock();
        let fingerprint = join.fingerprint();
        if let Some(first) = recall(&state.remembered_joins, &join.request_id, &fingerprint, now)? {
            return state
                .entry_view(&first)
                .ok_or_else(|| StoreError::corrupt("remembered join names a missing entry"));
        }
        state.reclaim(now);
        // Checks, in the Redis script's order: ownership first (receipts, or the appointment's
        // number and passport), so ALREADY_WAITING answers only a caller who proved it.
        match &join.moving {
            Some(appointment) => state.check_moving(join, appointment, limit)?,
            None => state.check_applicants(&join.applicants, now)?,
        }
        for a in &join.applicants {
            if state.waiting_passports.contains_key(&a.passport) {
                return Err(Error::AlreadyWaiting {
                    passport_number: a.passport.to_string(),
                }
                .into());
            }
        }
        if state.entries.contains_key(id) {
            return Err(StoreError::ConfirmationTaken);
        }

        // Writes.
        state.join_seq += 1;
        let seq = state.join_seq;
        let entry = WaitlistEntry {
            id: id.clone(),
            post: join.post.clone(),
            category: join.category.clone(),
            range: join.range,
            times: join.times.clone(),
            applicants: join.applicants.clone(),
            status: EntryStatus::Waiting,
            position: None,
            offer: None,
            confirmation: None,
            moving: join.moving.clone(),
            reason: None,
            created_at: now,
            updated_at: now,
        };
        state.entries.insert(
            id.clone(),
            EntryRec {
                entry,
                seq,
                offer: None,
                limit,
            },
        );
        state
            .lines
            .entry((join.post.clone(), join.category.clone()))
            .or_default()
            .insert(seq, id.clone());
        state
            .retire_due
            .insert((super::waitlist_retire_at(join.range.to), seq), id.clone());
        for a in &join.applicants {
            state
                .waiting_passports
                .insert(a.passport.clone(), id.clone());
        }
        state.remembered_joins.insert(
            join.request_id.clone(),
            (
                fingerprint,
                id.clone(),
                now + Duration::seconds(IDEMPOTENCY_TTL_SECS),
            ),
        );
        state.push_event(
            "waitlist_joined",
            &[
                ("entry", id.to_string()),
                ("post", join.post.to_string()),
                ("category", join.category.to_string()),
                ("from", crate::domain::types::format_date(join.range.from)),
                ("to", crate::domain::types::format_date(join.range.to)),
                ("seats", join.seats().to_string()),
            ],
        );
        state
            .entry_view(id)
            .ok_or_else(|| StoreError::corrupt("entry vanished inside the lock"))
    }

    async fn waitlist_entry(&self, id: &EntryId) -> Result<WaitlistEntry, StoreError> {
        self.lock()
            .entry_view(id)
            .ok_or_else(|| Error::WaitlistEntryNotFound.into())
    }

    async fn leave_waitlist(
        &self,
        id: &EntryId,
        now: DateTime<Utc>,
    ) -> Result<WaitlistEntry, StoreError> {
        let mut state = self.lock();
        let rec = state
            .entries
            .get(id)
            .cloned()
            .ok_or(Error::WaitlistEntryNotFound)?;
        if rec.entry.status.in_line() {
            state.end_entry(id, EntryStatus::Left, None, now);
            let offer = rec
                .offer
                .as_ref()
                .filter(|_| rec.entry.status == EntryStatus::Offered)
                .and_then(|h| state.holds.get(h))
                .filter(|h| h.status_at(now) == HoldStatus::Held)
                .cloned();
            if let Some(hold) = offer {
                state.release(&hold, now)?;
                state.offer_seats(&hold.slot, hold.seats(), Some(id), now);
            }
            state.push_event("waitlist_left", &[("entry", id.to_string())]);
        }
        state
            .entry_view(id)
            .ok_or_else(|| StoreError::corrupt("entry vanished inside the lock"))
    }

    async fn admission_step(
        &self,
        ticket: &TicketId,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let mut state = self.lock();
        let rec = state.admission_rec(ticket, now);
        if rec.booked.is_some() {
            return Err(Error::AdmissionUsed.into());
        }
        if rec.steps >= limit {
            return Err(Error::AdmissionStepsExhausted { limit }.into());
        }
        rec.steps += 1;
        Ok(rec.steps)
    }

    async fn set_waitlist_share(
        &self,
        post: &PostId,
        category: &CategoryId,
        percent: u32,
    ) -> Result<u32, StoreError> {
        let mut state = self.lock();
        let share = state
            .shares
            .entry((post.clone(), category.clone()))
            .or_insert((100, 0));
        share.0 = percent;
        Ok(percent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::{DateRange, OpenPlan};
    use crate::domain::types::{
        CategoryId, Currency, Ds160Number, Money, PersonName, PostId, Receipt, RequestId, SlotTime,
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
                    },
                    at,
                )
                .await
                .expect("cancel");
            first.get_or_insert(booked.confirmation);
            let (records, live, cancelled, days) = store.footprint();
            assert_eq!((live, days), (0, 1), "iteration {n}");
            // At most an hour of cancellations (360 at 10 s) plus one call's batch are kept.
            assert!(records <= 360 + EXPIRE_BATCH, "{records} records at {n}");
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
