//! The waitlist (`wl_join.lua`, `wl_leave.lua`, `wl_retire.lua`, the offer step and its
//! helpers; `redis/waitlist.rs`): released seats are offered to the entries in line in join
//! order (`domain::waitlist`).

use chrono::{DateTime, Utc};

use super::holds::recall;
use super::{event_time, EntryRec, Remembered, State};
use crate::domain::error::reason;
use crate::domain::lifecycle::{Hold, HoldId, HoldStatus};
use crate::domain::types::{
    Applicant, Appointment, AppointmentStatus, CategoryId, ConfirmationNumber, DayRef,
    PassportNumber, PostId, SlotRef,
};
use crate::domain::waitlist::{
    moving_range_error, EntryId, EntryStatus, WaitlistEntry, WaitlistJoin, DATES_PASSED,
    OFFER_SCAN_LIMIT,
};
use crate::domain::Error;
use crate::store::{StoreError, ADMISSION_STEP_LIMIT};

impl State {
    pub(super) fn join_waitlist(
        &mut self,
        join: &WaitlistJoin,
        id: &EntryId,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<WaitlistEntry, StoreError> {
        let fingerprint = join.fingerprint();
        let request_id = &join.request_id;
        if let Some(first) = recall(
            &self.remembered_joins,
            request_id,
            request_id,
            &fingerprint,
            now,
        )? {
            return self
                .entry_view(&first)
                .ok_or_else(|| StoreError::corrupt("remembered join names a missing entry"));
        }
        // Under an admission the join is one of its counted steps (checked here, counted with
        // the writes below: a refused join counts nothing).
        self.check_admission_step(join.admission.as_ref(), ADMISSION_STEP_LIMIT, now)?;
        self.reclaim_inline(now);
        // Checks, in the Redis script's order: ownership first (receipts, or the appointment's
        // number and passport), so ALREADY_WAITING answers only a caller who proved it.
        match &join.moving {
            Some(appointment) => self.check_moving(join, appointment, limit)?,
            None => self.check_applicants(&join.applicants, now)?,
        }
        for a in &join.applicants {
            if self.waiting_passports.contains_key(&a.passport) {
                return Err(Error::AlreadyWaiting {
                    passport_number: a.passport.to_string(),
                }
                .into());
            }
        }
        if self.entries.contains_key(id) {
            return Err(StoreError::ConfirmationTaken);
        }

        // Writes.
        self.count_admission_step(join.admission.as_ref(), now);
        self.join_seq += 1;
        let seq = self.join_seq;
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
        self.entries.insert(
            id.clone(),
            EntryRec {
                entry,
                seq,
                offer: None,
                limit,
            },
        );
        self.lines
            .entry((join.post.clone(), join.category.clone()))
            .or_default()
            .insert(seq, id.clone());
        self.retire_due.insert(
            (crate::store::waitlist_retire_at(join.range.to), seq),
            id.clone(),
        );
        for a in &join.applicants {
            self.waiting_passports
                .insert(a.passport.clone(), id.clone());
        }
        self.remembered_joins.insert(
            join.request_id.clone(),
            Remembered::new(fingerprint, id.clone(), now),
        );
        self.push_event(
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
        self.entry_view(id)
            .ok_or_else(|| StoreError::corrupt("entry vanished inside the lock"))
    }

    pub(super) fn waitlist_entry(&self, id: &EntryId) -> Result<WaitlistEntry, StoreError> {
        self.entry_view(id)
            .ok_or_else(|| Error::WaitlistEntryNotFound.into())
    }

    pub(super) fn leave_waitlist(
        &mut self,
        id: &EntryId,
        now: DateTime<Utc>,
    ) -> Result<WaitlistEntry, StoreError> {
        let rec = self
            .entries
            .get(id)
            .cloned()
            .ok_or(Error::WaitlistEntryNotFound)?;
        if rec.entry.status.in_line() {
            self.end_entry(id, EntryStatus::Left, None, now);
            let offer = rec
                .offer
                .as_ref()
                .filter(|_| rec.entry.status == EntryStatus::Offered)
                .and_then(|h| self.holds.get(h))
                .filter(|h| h.status_at(now) == HoldStatus::Held)
                .cloned();
            if let Some(hold) = offer {
                self.release(&hold, now)?;
                self.offer_seats(&hold.slot, hold.seats(), Some(id), now);
            }
            self.push_event("waitlist_left", &[("entry", id.to_string())]);
        }
        self.entry_view(id)
            .ok_or_else(|| StoreError::corrupt("entry vanished inside the lock"))
    }

    pub(super) fn set_waitlist_share(
        &mut self,
        post: &PostId,
        category: &CategoryId,
        percent: u32,
    ) -> Result<u32, StoreError> {
        let share = self
            .shares
            .entry((post.clone(), category.clone()))
            .or_insert((100, 0));
        share.0 = percent;
        Ok(percent)
    }

    pub(super) fn retire_passed_waitlist(&mut self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        // As wl_retire.lua: at most WAITLIST_RETIRE_BATCH due entries per call; a WAITING one
        // ends EXPIRED (DATES_PASSED), an OFFERED one is looked at again after the offer TTL,
        // a finished one just leaves the index.
        let due: Vec<((DateTime<Utc>, u64), EntryId)> = self
            .retire_due
            .range(..=(now, u64::MAX))
            .take(crate::store::WAITLIST_RETIRE_BATCH as usize)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let mut retired = 0;
        for (key, id) in due {
            self.retire_due.remove(&key);
            match self.entries.get(&id).map(|r| r.entry.status) {
                Some(EntryStatus::Offered) => {
                    let later = now + self.offer_ttl;
                    self.retire_due.insert((later, key.1), id);
                }
                Some(EntryStatus::Waiting) => {
                    self.drop_entry(&id, EntryStatus::Expired, DATES_PASSED, now);
                    retired += 1;
                }
                _ => {}
            }
        }
        Ok(retired)
    }

    /// A moving entry's rules at join: its appointment is booked, held by exactly this group,
    /// later than the range, and every receipt has a reschedule left.
    pub(super) fn check_moving(
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
        Ok(self.check_reschedules_left(&a.applicants, limit)?)
    }

    /// The entry as shown: with its place in line and its offer.
    pub(super) fn entry_view(&self, id: &EntryId) -> Option<WaitlistEntry> {
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

    /// Whether an entry in line accepts `day` (the date's `wl:` key exists, waitlist_lib.lua):
    /// then expired holds of the day wait for the sweeper, which offers their seats first.
    pub(super) fn someone_waits_for(&self, day: &DayRef) -> bool {
        self.lines
            .get(&(day.post.clone(), day.category.clone()))
            .is_some_and(|line| {
                line.values().any(|id| {
                    self.entries.get(id).is_some_and(|r| {
                        r.entry.range.from <= day.date && day.date <= r.entry.range.to
                    })
                })
            })
    }

    /// Takes an entry out of line for good.
    pub(super) fn end_entry(
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

    /// Ends an entry that slotd takes out of line (`status` CANCELLED or EXPIRED, with its
    /// `reason`), with the `waitlist_cancelled` event every such end writes.
    fn drop_entry(&mut self, id: &EntryId, status: EntryStatus, reason: &str, now: DateTime<Utc>) {
        self.end_entry(id, status, Some(reason), now);
        self.push_event(
            "waitlist_cancelled",
            &[("entry", id.to_string()), ("reason", reason.to_owned())],
        );
    }

    /// Ends a moving entry for good (`reason`) that can never move its appointment: the seats
    /// of its live offer come back at once (the offer claims no passport or receipt) and go to
    /// the next entries (as `cancel_moving_entry` in waitlist_lib.lua).
    pub(super) fn cancel_moving_entry(
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
        self.drop_entry(id, EntryStatus::Cancelled, reason, now);
        if let Some(hold) = offer {
            self.offer_seats(&hold.slot, hold.seats(), None, now);
        }
        Ok(())
    }

    /// A decline puts the entry of an offer back in line, an expiry ends it. Returns the entry
    /// when `hold` was its pending offer.
    pub(super) fn offer_ended(
        &mut self,
        hold: &Hold,
        expired: bool,
        at: DateTime<Utc>,
    ) -> Option<EntryId> {
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

    /// Why an entry's group may not take seats now, or None: the rules of a booking
    /// (`check_applicants`), as the reason the entry is cancelled with.
    pub(super) fn entry_refusal(
        &self,
        applicants: &[Applicant],
        now: DateTime<Utc>,
    ) -> Option<&'static str> {
        self.check_applicants(applicants, now)
            .err()
            .map(|e| e.reason())
    }

    /// Offers the free seats of `slot` to the entries in line for it, in join order, after
    /// `released` seats came back: each offer is a hold for the entry's group expiring
    /// `offer_ttl` from now. The share setting limits how many released seats the line takes;
    /// entries that no longer qualify are cancelled; `skip` (just declined) is passed over.
    /// The same step as `offer_seats` in waitlist_lib.lua. Returns the seats offered.
    pub(super) fn offer_seats(
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
        let Some(rec) = self.slot_rec(slot).copied() else {
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
                self.drop_entry(&id, EntryStatus::Cancelled, reason, now);
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

    /// Why a moving entry's appointment may not move to `slot` now: None = it may, Some(None) =
    /// not this slot (not earlier), Some(Some(reason)) = never again (the entry is cancelled).
    pub(super) fn moving_refusal(
        &self,
        appointment: &ConfirmationNumber,
        limit: u32,
        slot: &SlotRef,
    ) -> Option<Option<&'static str>> {
        let Some(a) = self.appointments.get(appointment) else {
            return Some(Some(reason::APPOINTMENT_CANCELLED));
        };
        if let Err(e) = self.check_movable(a) {
            return Some(Some(e.reason()));
        }
        if (slot.date, slot.time) >= (a.slot.date, a.slot.time) {
            return Some(None);
        }
        self.check_reschedules_left(&a.applicants, limit)
            .err()
            .map(|e| Some(e.reason()))
    }

    /// A moving entry's appointment can still move: it is neither cancelled nor retired (past),
    /// else the entry can never be served (`APPOINTMENT_CANCELLED`).
    fn check_movable(&self, appointment: &Appointment) -> Result<(), Error> {
        if appointment.status == AppointmentStatus::Cancelled
            || self.retired.contains(&appointment.confirmation)
        {
            return Err(Error::AppointmentCancelled {
                confirmation_number: appointment.confirmation.to_string(),
            });
        }
        Ok(())
    }

    /// Accepting an offer made to a moving entry: its appointment moves onto the offered seats
    /// (a reschedule, same number), the seats left behind go to that date's line.
    pub(super) fn accept_move(
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
        let refused = self
            .check_movable(&current)
            .and_then(|()| self.check_reschedules_left(&current.applicants, limit));
        if let Err(error) = refused {
            if let Some(entry) = &hold.entry {
                self.cancel_moving_entry(entry, error.reason(), now)?;
            }
            return Err(error.into());
        }
        self.reclaim_inline(now);
        self.confirm_writes(hold, appointment, now);
        let moved = self.move_appointment(&current, &hold.slot, now)?;
        self.offer_seats(&current.slot, current.seats(), None, now);
        Ok(moved)
    }
}
