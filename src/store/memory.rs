//! The embedded backend: all state in one process behind one mutex. Every operation checks and
//! writes inside a single critical section (no await inside it), which is what makes booking and
//! cancelling atomic here. State is per process and lost on exit: for development, tests and
//! demos; production runs on Redis.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use super::{EventPage, Inventory, ManifestPage, OpenReport, StoreError, IDEMPOTENCY_TTL_SECS};
use crate::domain::lifecycle::{
    Event, EventId, EventStart, Hold, HoldConfirmation, HoldId, HoldRelease, HoldRequest,
    HoldStatus, Move, Reschedule,
};
use crate::domain::rules::{
    AuditReport, Booking, Cancellation, DateRange, ManifestCursor, ManifestQuery, OpenPlan,
};
use crate::domain::types::{
    format_date, Appointment, AppointmentStatus, CategoryId, ConfirmationNumber, DayRef,
    PassportNumber, PostId, Receipt, ReceiptNumber, RequestId, SlotRef, SlotState, SlotTime,
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
    /// Every appointment of a day (cancelled too), in manifest order.
    manifests: BTreeMap<DayRef, BTreeSet<ManifestCursor>>,
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
}

/// Events kept in process (the Redis Stream keeps about a million).
const MAX_EVENTS: usize = 100_000;

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
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
    fn reclaim(&mut self, now: DateTime<Utc>) -> u32 {
        let mut reclaimed = 0;
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
                    ("hold", id.to_string()),
                    ("slot", hold.slot.to_string()),
                    ("seats", hold.seats().to_string()),
                    ("expires_ms", hold.expires_at.timestamp_millis().to_string()),
                ],
            );
            reclaimed += 1;
        }
        reclaimed
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
            fields.push(("hold", h.to_string()));
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
        for a in &booking.applicants {
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
        if confirmation.is_some_and(|c| self.appointments.contains_key(c)) {
            return Err(StoreError::ConfirmationTaken);
        }
        Ok(())
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
    async fn open_slots(&self, plan: &OpenPlan) -> Result<OpenReport, StoreError> {
        let mut state = self.lock();
        let mut report = OpenReport::default();
        for day in plan.days() {
            let slots = state.days.entry(day.clone()).or_default();
            for time in plan.times() {
                match slots.get_mut(&time) {
                    None => {
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
                        rec.closed = false;
                        rec.capacity = plan.seats.max(rec.booked + rec.held);
                        report.updated += 1;
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
        Ok(report)
    }

    async fn set_capacity(&self, slot: &SlotRef, capacity: u32) -> Result<SlotState, StoreError> {
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
        rec.capacity = capacity;
        let updated = to_state(slot.clone(), rec);
        state.push_event(
            "capacity_set",
            &[
                ("slot", slot.to_string()),
                ("capacity", capacity.to_string()),
            ],
        );
        Ok(updated)
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
        state.reclaim(now);
        state.check_booking(booking, Some(confirmation), now)?;

        // Writes: nothing below can fail.
        let appointment =
            state.write_booking(&booking.slot, &booking.applicants, confirmation, None, now);
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
        for a in &applicants {
            if let Some(r) = state.receipts.get_mut(&a.receipt) {
                r.backing = None;
            }
            state.active.remove(&a.passport);
        }
        let updated = match state.appointments.get_mut(&cancellation.confirmation) {
            Some(a) => {
                a.status = AppointmentStatus::Cancelled;
                a.updated_at = now;
                a.clone()
            }
            None => return Err(StoreError::corrupt("appointment vanished inside the lock")),
        };
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
        Ok(updated)
    }

    async fn manifest(&self, query: &ManifestQuery) -> Result<ManifestPage, StoreError> {
        let state = self.lock();
        let mut page = ManifestPage::default();
        let Some(entries) = state.manifests.get(&query.day) else {
            return Ok(page);
        };
        let mut iter: Box<dyn Iterator<Item = &ManifestCursor>> = match &query.after {
            Some(after) => Box::new(
                entries.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            ),
            None => Box::new(entries.iter()),
        };
        let limit = query.limit as usize;
        for cursor in iter.by_ref() {
            let Some(a) = state.appointments.get(&cursor.confirmation) else {
                return Err(StoreError::corrupt("manifest names a missing appointment"));
            };
            if a.status == AppointmentStatus::Cancelled && !query.include_cancelled {
                continue;
            }
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
            if a.status == AppointmentStatus::Booked {
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

    async fn hold(
        &self,
        request: &HoldRequest,
        id: &HoldId,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Hold, StoreError> {
        let mut state = self.lock();
        let fingerprint = request.fingerprint();
        if let Some((fp, first, until)) = state.remembered_holds.get(&request.request_id) {
            if *until > now {
                if *fp != fingerprint {
                    return Err(Error::RequestIdReused {
                        request_id: request.request_id.to_string(),
                    }
                    .into());
                }
                return state
                    .holds
                    .get(first)
                    .cloned()
                    .ok_or_else(|| StoreError::corrupt("remembered request names a missing hold"));
            }
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
        };
        let seats = hold.seats();
        if let Some(rec) = state.slot_mut(&hold.slot) {
            rec.held += seats;
        }
        for a in &hold.applicants {
            if let Some(r) = state.receipts.get_mut(&a.receipt) {
                r.held_by = Some(id.clone());
            }
            state.held_passports.insert(a.passport.clone(), id.clone());
        }
        state.live_holds.insert((expires_at, id.clone()));
        state.holds.insert(id.clone(), hold.clone());
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
                ("hold", id.to_string()),
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
        if state.appointments.contains_key(number) {
            return Err(StoreError::ConfirmationTaken);
        }
        state.reclaim(now);

        // The hold's seats, passports and receipts become the appointment's.
        state.live_holds.remove(&(hold.expires_at, hold.id.clone()));
        state.free_hold(&hold);
        if let Some(h) = state.holds.get_mut(&hold.id) {
            h.status = HoldStatus::Confirmed;
            h.confirmation = Some(number.clone());
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
        state.live_holds.remove(&(hold.expires_at, hold.id.clone()));
        state.free_hold(&hold);
        let released = match state.holds.get_mut(&hold.id) {
            Some(h) => {
                h.status = HoldStatus::Released;
                h.clone()
            }
            None => return Err(StoreError::corrupt("hold vanished inside the lock")),
        };
        state.push_event(
            "hold_released",
            &[
                ("hold", hold.id.to_string()),
                ("slot", hold.slot.to_string()),
                ("seats", hold.seats().to_string()),
                ("at", event_time(now)),
            ],
        );
        Ok(released)
    }

    async fn reclaim_expired_holds(&self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        Ok(self.lock().reclaim(now))
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
        if let Some(r) = state.slot_mut(&from) {
            r.booked = r.booked.saturating_sub(seats);
        }
        if let Some(r) = state.slot_mut(to) {
            r.booked += seats;
        }
        for a in &appointment.applicants {
            if let Some(r) = state.receipts.get_mut(&a.receipt) {
                r.reschedules += 1;
            }
        }
        let old_cursor = ManifestCursor {
            time: from.time,
            confirmation: reschedule.confirmation.clone(),
        };
        if let Some(m) = state.manifests.get_mut(&from.day()) {
            m.remove(&old_cursor);
        }
        state
            .manifests
            .entry(to.day())
            .or_default()
            .insert(ManifestCursor {
                time: to.time,
                confirmation: reschedule.confirmation.clone(),
            });
        let moved = match state.appointments.get_mut(&reschedule.confirmation) {
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
        state.remember(
            Op::Reschedule,
            &reschedule.request_id,
            fingerprint,
            reschedule.confirmation.clone(),
            now,
        );
        state.push_event(
            "moved",
            &[
                ("confirmation", reschedule.confirmation.to_string()),
                ("from", from.to_string()),
                ("to", to.to_string()),
                ("seats", seats.to_string()),
                ("at", event_time(now)),
            ],
        );
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
}
