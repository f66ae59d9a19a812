//! The embedded backend: all state in one process behind one mutex. Every operation checks and
//! writes inside a single critical section (no await inside it), which is what makes booking and
//! cancelling atomic here. State is per process and lost on exit: for development, tests and
//! demos; production runs on Redis.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use super::{Inventory, ManifestPage, OpenReport, StoreError, IDEMPOTENCY_TTL_SECS};
use crate::domain::rules::{
    AuditReport, Booking, Cancellation, DateRange, ManifestCursor, ManifestQuery, OpenPlan,
    Violation,
};
use crate::domain::types::{
    Appointment, AppointmentStatus, CategoryId, ConfirmationNumber, DayRef, PassportNumber, PostId,
    Receipt, ReceiptNumber, RequestId, SlotRef, SlotState, SlotTime,
};
use crate::domain::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotRec {
    capacity: u32,
    booked: u32,
    closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Book,
    Cancel,
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
}

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

    /// Every stateful rule of a booking, checked before anything is written.
    fn check_booking(
        &self,
        booking: &Booking,
        confirmation: &ConfirmationNumber,
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
        let remaining = rec.capacity.saturating_sub(rec.booked);
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
            if rec.backing.is_some() {
                return Err(Error::ReceiptInUse {
                    receipt_number: a.receipt.to_string(),
                }
                .into());
            }
            if self.active.contains_key(&a.passport) {
                return Err(Error::ApplicantAlreadyBooked {
                    passport_number: a.passport.to_string(),
                }
                .into());
            }
        }
        if self.appointments.contains_key(confirmation) {
            return Err(StoreError::ConfirmationTaken);
        }
        Ok(())
    }
}

fn to_state(slot: SlotRef, r: &SlotRec) -> SlotState {
    SlotState {
        slot,
        capacity: r.capacity,
        booked: r.booked,
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
                                closed: false,
                            },
                        );
                        report.opened += 1;
                    }
                    Some(rec) => {
                        rec.closed = false;
                        rec.capacity = plan.seats.max(rec.booked);
                        report.updated += 1;
                        if plan.seats < rec.booked {
                            report.kept_at_booked.push(to_state(day.at(time), rec));
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    async fn set_capacity(&self, slot: &SlotRef, capacity: u32) -> Result<SlotState, StoreError> {
        let mut state = self.lock();
        let rec = state
            .days
            .get_mut(&slot.day())
            .and_then(|d| d.get_mut(&slot.time))
            .ok_or_else(|| Error::SlotNotFound { slot: slot.clone() })?;
        if capacity < rec.booked {
            return Err(Error::CapacityBelowBooked {
                slot: slot.clone(),
                capacity,
                booked: rec.booked,
            }
            .into());
        }
        rec.capacity = capacity;
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
        state.check_booking(booking, confirmation, now)?;

        // Writes: nothing below can fail.
        let slot = &booking.slot;
        if let Some(rec) = state
            .days
            .get_mut(&slot.day())
            .and_then(|d| d.get_mut(&slot.time))
        {
            rec.booked += booking.seats();
        }
        for a in &booking.applicants {
            if let Some(r) = state.receipts.get_mut(&a.receipt) {
                r.backing = Some(confirmation.clone());
            }
            state
                .active
                .insert(a.passport.clone(), confirmation.clone());
        }
        let appointment = Appointment {
            confirmation: confirmation.clone(),
            slot: slot.clone(),
            applicants: booking.applicants.clone(),
            status: AppointmentStatus::Booked,
            created_at: now,
            updated_at: now,
        };
        state
            .appointments
            .insert(confirmation.clone(), appointment.clone());
        state
            .manifests
            .entry(slot.day())
            .or_default()
            .insert(ManifestCursor {
                time: slot.time,
                confirmation: confirmation.clone(),
            });
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
        let mut report = AuditReport::default();
        for s in &slots {
            report.slots_checked += 1;
            if s.booked > s.capacity {
                report.violations.push(Violation {
                    slot: s.slot.clone(),
                    rule: "remaining >= 0".into(),
                    detail: format!("booked {} exceeds capacity {}", s.booked, s.capacity),
                });
            }
            let counted = seats_by_slot.get(&s.slot).copied().unwrap_or(0);
            if counted != s.booked {
                report.violations.push(Violation {
                    slot: s.slot.clone(),
                    rule: "booked == seats of active appointments".into(),
                    detail: format!(
                        "counter says {} booked, appointments hold {counted}",
                        s.booked
                    ),
                });
            }
        }
        Ok(report)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
