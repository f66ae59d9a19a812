//! The slot inventory and its appointments (`open_slots.lua`, `set_capacity.lua`,
//! `close_slots.lua`, `book.lua`, `cancel.lua`, `reschedule.lua`, `manifest.lua`,
//! `register_receipt.lua`, and the event log the slot feed reads).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::{event_time, to_state, unindex, Op, ReceiptRec, SlotRec, State};
use crate::domain::error::reason;
use crate::domain::lifecycle::{HoldId, Move, Reschedule};
use crate::domain::rules::{
    Booking, Cancellation, DateRange, ManifestCursor, ManifestQuery, OpenPlan,
};
use crate::domain::types::{
    format_date, Applicant, Appointment, AppointmentStatus, CategoryId, ConfirmationNumber, DayRef,
    PassportNumber, PostId, Receipt, SlotRef, SlotState, SlotTime,
};
use crate::domain::waitlist::EntryId;
use crate::domain::Error;
use crate::store::{ManifestPage, OpenReport, StoreError, ADMISSION_STEP_LIMIT};

impl State {
    pub(super) fn open_slots(
        &mut self,
        plan: &OpenPlan,
        now: DateTime<Utc>,
    ) -> Result<OpenReport, StoreError> {
        let mut report = OpenReport::default();
        let mut freed: Vec<(SlotRef, u32)> = Vec::new();
        for day in plan.days() {
            // As the Redis store's `days-due`: every opened day is retired once it has passed.
            let due = crate::store::appointment_retire_at(day.date);
            self.past_days.insert((due, day.clone()));
            let slots = self.days.entry(day.clone()).or_default();
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
        self.push_event(
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
            self.offer_seats(&slot, seats, None, now);
        }
        Ok(report)
    }

    pub(super) fn set_capacity(
        &mut self,
        slot: &SlotRef,
        capacity: u32,
        now: DateTime<Utc>,
    ) -> Result<SlotState, StoreError> {
        let rec = self
            .slot_mut(slot)
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
        self.push_event(
            "capacity_set",
            &[
                ("slot", slot.to_string()),
                ("capacity", capacity.to_string()),
            ],
        );
        self.offer_seats(slot, raised, None, now);
        let rec = self
            .slot_rec(slot)
            .ok_or_else(|| StoreError::corrupt("slot vanished inside the lock"))?;
        Ok(to_state(slot.clone(), rec))
    }

    pub(super) fn close_slots(
        &mut self,
        day: &DayRef,
        time: Option<SlotTime>,
    ) -> Result<u32, StoreError> {
        let Some(slots) = self.days.get_mut(day) else {
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
            self.push_event(
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

    pub(super) fn slots(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<Vec<SlotState>, StoreError> {
        let from = DayRef {
            post: post.clone(),
            category: category.clone(),
            date: range.from,
        };
        let to = DayRef {
            date: range.to,
            ..from.clone()
        };
        Ok(self
            .days
            .range(from..=to)
            .flat_map(|(day, slots)| slots.iter().map(|(t, r)| to_state(day.at(*t), r)))
            .collect())
    }

    pub(super) fn book(
        &mut self,
        booking: &Booking,
        confirmation: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let fingerprint = booking.fingerprint();
        if let Some(first) = self.replay(Op::Book, &booking.request_id, &fingerprint, now)? {
            return Ok(first);
        }
        self.check_admission(booking.admission.as_ref(), now)?;
        self.reclaim_inline(now);
        self.expire_records(now);
        self.check_booking(booking, Some(confirmation), now)?;

        // Writes: nothing below can fail.
        let appointment =
            self.write_booking(&booking.slot, &booking.applicants, confirmation, None, now);
        self.record_admission(booking.admission.as_ref(), confirmation, now);
        self.remember(
            Op::Book,
            &booking.request_id,
            fingerprint,
            confirmation.clone(),
            now,
        );
        Ok(appointment)
    }

    pub(super) fn appointment(
        &self,
        confirmation: &ConfirmationNumber,
        passport: &PassportNumber,
    ) -> Result<Appointment, StoreError> {
        self.appointments
            .get(confirmation)
            .filter(|a| a.includes(passport))
            .cloned()
            .ok_or_else(|| Error::AppointmentNotFound.into())
    }

    pub(super) fn cancel(
        &mut self,
        cancellation: &Cancellation,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        self.expire_records(now);
        let fingerprint = cancellation.fingerprint();
        if let Some(first) = self.replay(Op::Cancel, &cancellation.request_id, &fingerprint, now)? {
            return Ok(first);
        }
        // Under an admission the cancellation is one of its counted steps (checked here,
        // counted with the writes below: a refused cancellation counts nothing).
        self.check_admission_step(cancellation.admission.as_ref(), ADMISSION_STEP_LIMIT, now)?;
        let appointment = self.changeable(&cancellation.confirmation, &cancellation.passport)?;
        let slot = appointment.slot.clone();
        let seats = appointment.seats();
        let applicants = appointment.applicants.clone();
        self.count_admission_step(cancellation.admission.as_ref(), now);

        if let Some(rec) = self.slot_mut(&slot) {
            rec.booked = rec.booked.saturating_sub(seats);
        }
        // Compare-and-set: only claims that still name this appointment are freed.
        let confirmation = &cancellation.confirmation;
        for a in &applicants {
            if let Some(r) = self.receipts.get_mut(&a.receipt) {
                if r.backing.as_ref() == Some(confirmation) {
                    r.backing = None;
                }
            }
            if self.active.get(&a.passport) == Some(confirmation) {
                self.active.remove(&a.passport);
            }
        }
        let updated = match self.appointments.get_mut(&cancellation.confirmation) {
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
        unindex(&mut self.manifests, &day, &member);
        self.cancelled.entry(day).or_default().insert(member);
        let until = now + self.retention;
        self.expiring.insert((until, confirmation.clone()));
        self.remember(
            Op::Cancel,
            &cancellation.request_id,
            fingerprint,
            cancellation.confirmation.clone(),
            now,
        );
        self.push_event(
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
            .filter_map(|a| self.waiting_passports.get(&a.passport).cloned())
            .filter(|e| {
                self.entries.get(e).and_then(|r| r.entry.moving.as_ref()) == Some(confirmation)
            })
            .collect();
        for entry in movers {
            self.cancel_moving_entry(&entry, reason::APPOINTMENT_CANCELLED, now)?;
        }
        self.offer_seats(&slot, seats, None, now);
        Ok(updated)
    }

    pub(super) fn reschedule(
        &mut self,
        reschedule: &Reschedule,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let fingerprint = reschedule.fingerprint();
        if let Some(first) =
            self.replay(Op::Reschedule, &reschedule.request_id, &fingerprint, now)?
        {
            return Ok(first);
        }
        // Under an admission the move is one of its counted steps (checked here, counted with
        // the writes below: a refused move counts nothing).
        self.check_admission_step(reschedule.admission.as_ref(), ADMISSION_STEP_LIMIT, now)?;
        self.reclaim_inline(now);
        // Checks, in the Redis script's order.
        let appointment = self
            .changeable(&reschedule.confirmation, &reschedule.passport)?
            .clone();
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
        self.check_seats(to, seats)?;
        self.check_reschedules_left(&appointment.applicants, limit)?;

        // Writes: both slots change in this one critical section.
        let moved = self.move_appointment(&appointment, to, now)?;
        self.count_admission_step(reschedule.admission.as_ref(), now);
        self.remember(
            Op::Reschedule,
            &reschedule.request_id,
            fingerprint,
            reschedule.confirmation.clone(),
            now,
        );
        self.offer_seats(&from, seats, None, now);
        Ok(moved)
    }

    pub(super) fn manifest(&self, query: &ManifestQuery) -> Result<ManifestPage, StoreError> {
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
        let live = self.manifests.get(&query.day).unwrap_or(&empty);
        // As manifest.lua: the live manifest holds BOOKED appointments only; with cancelled
        // ones, at most limit + 1 members of each set are read and merged in order.
        let mut members = after(live);
        if query.include_cancelled {
            members.extend(after(self.cancelled.get(&query.day).unwrap_or(&empty)));
            members.sort();
            members.truncate(limit + 1);
        }
        for cursor in &members {
            let Some(a) = self.appointments.get(&cursor.confirmation) else {
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

    pub(super) fn register_receipt(
        &mut self,
        receipt: &Receipt,
    ) -> Result<(Receipt, bool), StoreError> {
        if let Some(existing) = self.receipts.get(&receipt.number) {
            return if &existing.receipt == receipt {
                Ok((existing.receipt.clone(), false))
            } else {
                Err(Error::ReceiptConflict {
                    receipt_number: receipt.number.to_string(),
                }
                .into())
            };
        }
        self.receipts.insert(
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

    /// Every stateful rule of a booking, checked before anything is written.
    /// `confirmation` is the new appointment's number (None for a hold).
    pub(super) fn check_booking(
        &self,
        booking: &Booking,
        confirmation: Option<&ConfirmationNumber>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.check_seats(&booking.slot, booking.seats())?;
        self.check_applicants(&booking.applicants, now)?;
        if confirmation.is_some_and(|c| self.appointments.contains_key(c)) {
            return Err(StoreError::ConfirmationTaken);
        }
        Ok(())
    }

    /// The slot exists, is open and has `seats` free (seats under live holds count as taken).
    fn check_seats(&self, slot: &SlotRef, seats: u32) -> Result<(), Error> {
        let rec = self
            .slot_rec(slot)
            .ok_or_else(|| Error::SlotNotFound { slot: slot.clone() })?;
        if rec.closed {
            return Err(Error::SlotClosed { slot: slot.clone() });
        }
        let remaining = rec.capacity.saturating_sub(rec.booked + rec.held);
        if remaining < seats {
            return Err(Error::SlotFull {
                slot: slot.clone(),
                requested: seats,
                remaining,
            });
        }
        Ok(())
    }

    /// The appointment a cancellation or reschedule changes: `passport` is one of its
    /// applicants', it is not cancelled, and not retired (a past appointment has given its
    /// passports back: it is history now, and answers `SlotStarted`).
    fn changeable(
        &self,
        confirmation: &ConfirmationNumber,
        passport: &PassportNumber,
    ) -> Result<&Appointment, Error> {
        let appointment = self
            .appointments
            .get(confirmation)
            .filter(|a| a.includes(passport))
            .ok_or(Error::AppointmentNotFound)?;
        if appointment.status == AppointmentStatus::Cancelled {
            return Err(Error::AppointmentCancelled {
                confirmation_number: confirmation.to_string(),
            });
        }
        if self.retired.contains(confirmation) {
            return Err(Error::SlotStarted {
                slot: appointment.slot.clone(),
            });
        }
        Ok(appointment)
    }

    /// Every receipt of the group has a reschedule left under `limit` (a reschedule, and a
    /// moving waitlist entry at its join, offer and acceptance). Receipts are never forgotten,
    /// so a missing one cannot happen; it would count as used up.
    pub(super) fn check_reschedules_left(
        &self,
        applicants: &[Applicant],
        limit: u32,
    ) -> Result<(), Error> {
        match applicants.iter().find(|a| {
            self.receipts
                .get(&a.receipt)
                .is_none_or(|r| r.reschedules >= limit)
        }) {
            Some(a) => Err(Error::RescheduleLimit {
                receipt_number: a.receipt.to_string(),
                limit,
            }),
            None => Ok(()),
        }
    }

    /// The writes of a booking whose checks passed: seats, receipts, passports, appointment,
    /// manifest, event. `hold` names the hold it confirms, if any.
    pub(super) fn write_booking(
        &mut self,
        slot: &SlotRef,
        applicants: &[Applicant],
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

    /// The writes of a reschedule whose checks passed: both slots, the receipts' move counts,
    /// the manifests, the appointment and its history, the `moved` event.
    pub(super) fn move_appointment(
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
}
