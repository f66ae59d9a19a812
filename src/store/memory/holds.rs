//! Holds and the claims every booking shares (`hold.lua`, `confirm_hold.lua`,
//! `release_hold.lua`, `reclaim.lua`, `holds_lib.lua`): a passport or receipt is claimed by one
//! live appointment or hold at a time, and a request_id answers its first outcome.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use chrono::{DateTime, Duration, Utc};

use super::{event_time, Op, Remembered, State};
use crate::domain::lifecycle::{
    Hold, HoldConfirmation, HoldId, HoldRelease, HoldRequest, HoldStatus,
};
use crate::domain::types::{
    format_instant, Applicant, Appointment, ConfirmationNumber, RequestId, SlotRef,
};
use crate::domain::waitlist::EntryStatus;
use crate::domain::Error;
use crate::store::{Reclaimed, StoreError, ADMISSION_STEP_LIMIT, IDEMPOTENCY_TTL_SECS};

impl State {
    /// The Redis store's sold-out memo rule for holds, answered exactly: a slot full of
    /// bookings (so no live hold on it) refuses a hold whose request_id was not seen.
    pub(super) fn refuse_sold_out_hold(
        &self,
        request: &HoldRequest,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let slot = &request.slot;
        let full = self
            .slot_rec(slot)
            .is_some_and(|rec| !rec.closed && rec.booked >= rec.capacity);
        let seen = self
            .remembered_holds
            .get(&request.request_id)
            .is_some_and(|r| r.expires_at > now);
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

    pub(super) fn hold(
        &mut self,
        request: &HoldRequest,
        id: &HoldId,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Hold, StoreError> {
        let fingerprint = request.fingerprint();
        if let Some(first) = recall(
            &self.remembered_holds,
            &request.request_id,
            &request.request_id,
            &fingerprint,
            now,
        )? {
            return self
                .holds
                .get(&first)
                .cloned()
                .ok_or_else(|| StoreError::corrupt("remembered request names a missing hold"));
        }
        // Under an admission the hold is one of its counted steps (checked here, counted with
        // the writes below: a refused hold counts nothing).
        self.check_admission_step(request.admission.as_ref(), ADMISSION_STEP_LIMIT, now)?;
        self.reclaim_inline(now);
        // The same rules as a booking; a hold id collision is drawn again like a number.
        self.check_booking(request, None, now)?;
        if self.holds.contains_key(id) {
            return Err(StoreError::ConfirmationTaken);
        }
        self.count_admission_step(request.admission.as_ref(), now);

        let hold = Hold::placed(id, request, expires_at, now);
        let seats = hold.seats();
        self.place_hold(&hold, true);
        self.remembered_holds.insert(
            request.request_id.clone(),
            Remembered::new(fingerprint, id.clone(), now),
        );
        self.push_event(
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

    pub(super) fn confirm_hold(
        &mut self,
        confirmation: &HoldConfirmation,
        number: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let hold = self
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
                    .and_then(|c| self.appointments.get(c))
                    .cloned();
                return first
                    .ok_or_else(|| StoreError::corrupt("confirmed hold names no appointment"));
            }
            HoldStatus::Expired => {
                self.reclaim_inline(now);
                return Err(hold_expired(&hold).into());
            }
            s @ HoldStatus::Released => {
                return Err(Error::HoldNotActive {
                    hold_id: hold.id.to_string(),
                    status: s.as_str().to_owned(),
                }
                .into())
            }
        }
        self.check_admission(confirmation.admission.as_ref(), now)?;
        let moving = hold
            .entry
            .as_ref()
            .and_then(|e| self.entries.get(e))
            .and_then(|r| r.entry.moving.clone().map(|m| (m, r.limit)));
        if let Some((appointment, limit)) = moving {
            let moved = self.accept_move(&hold, &appointment, limit, now)?;
            self.record_admission(confirmation.admission.as_ref(), &moved.confirmation, now);
            return Ok(moved);
        }
        // Compare-and-set: the claims become the appointment's only while they still name this
        // hold (as confirm_hold.lua); a hold that lost one has expired and books nothing.
        let claims_held = hold.applicants.iter().all(|a| {
            self.receipts
                .get(&a.receipt)
                .is_some_and(|r| r.held_by.as_ref() == Some(&hold.id))
                && self.held_passports.get(&a.passport) == Some(&hold.id)
        });
        if !claims_held {
            return Err(hold_expired(&hold).into());
        }
        if self.appointments.contains_key(number) {
            return Err(StoreError::ConfirmationTaken);
        }
        self.reclaim_inline(now);
        self.record_admission(confirmation.admission.as_ref(), number, now);

        // The hold's seats, passports and receipts become the appointment's.
        self.confirm_writes(&hold, number, now);
        Ok(self.write_booking(&hold.slot, &hold.applicants, number, Some(&hold.id), now))
    }

    pub(super) fn release_hold(
        &mut self,
        release: &HoldRelease,
        now: DateTime<Utc>,
    ) -> Result<Hold, StoreError> {
        let hold = self
            .holds
            .get(&release.hold)
            .cloned()
            .ok_or(Error::HoldNotFound)?;
        match hold.status_at(now) {
            HoldStatus::Held => {}
            HoldStatus::Released => return Ok(hold),
            HoldStatus::Expired => {
                self.reclaim_inline(now);
                return Err(hold_expired(&hold).into());
            }
            s @ HoldStatus::Confirmed => {
                return Err(Error::HoldNotActive {
                    hold_id: hold.id.to_string(),
                    status: s.as_str().to_owned(),
                }
                .into())
            }
        }
        self.reclaim_inline(now);
        let released = self.release(&hold, now)?;
        let declined = self.offer_ended(&hold, false, now);
        self.offer_seats(&hold.slot, hold.seats(), declined.as_ref(), now);
        Ok(released)
    }

    pub(super) fn find_hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        Ok(self.holds.get(id).cloned())
    }

    /// The sweeper's reclaim (`reclaim.lua`): every hold expired at `now`, on every date.
    pub(super) fn reclaim(&mut self, now: DateTime<Utc>) -> Reclaimed {
        self.reclaim_expired(now, true)
    }

    /// The reclaim an operation does before its checks (`expired_holds` without `all` in
    /// holds_lib.lua): the holds of a date someone waits for are left to the sweeper, whose
    /// reclaim offers their seats to the line first; until then they count as held (errs
    /// towards refusing, never overbooks).
    pub(super) fn reclaim_inline(&mut self, now: DateTime<Utc>) {
        self.reclaim_expired(now, false);
    }

    /// Frees the expired holds first, all of them, then offers the seats that came back per
    /// slot in slot order, as `reclaim.lua` does per date: a group needing the seats of two
    /// holds reclaimed together gets them, in line order, instead of one hold's seats going to
    /// a smaller entry behind it.
    fn reclaim_expired(&mut self, now: DateTime<Utc>, all: bool) -> Reclaimed {
        let expired: Vec<(DateTime<Utc>, HoldId)> = self
            .live_holds
            .iter()
            .take_while(|(expires, _)| *expires <= now)
            .filter(|(_, id)| {
                all || self
                    .holds
                    .get(id)
                    .is_none_or(|h| !self.someone_waits_for(&h.slot.day()))
            })
            .cloned()
            .collect();
        let mut reclaimed = Reclaimed::default();
        let mut released: BTreeMap<SlotRef, u32> = BTreeMap::new();
        for (expires, id) in expired {
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
            *released.entry(hold.slot.clone()).or_default() += hold.seats();
            reclaimed.holds += 1;
            let day = hold.slot.day();
            if !reclaimed.days.contains(&day) {
                reclaimed.days.push(day);
            }
        }
        for (slot, seats) in released {
            self.offer_seats(&slot, seats, None, now);
        }
        reclaimed
    }

    /// The writes of a new hold: its seats, and (`claims`) its receipts and passports, are taken
    /// until expiry. An offer to a moving entry claims nothing: its appointment does.
    pub(super) fn place_hold(&mut self, hold: &Hold, claims: bool) {
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

    /// The writes of confirming a live hold as the appointment `number` (a booking, or a
    /// moving entry's accepted offer): it leaves the live holds, its seats and claims are freed
    /// (the caller books them again for the appointment), it is CONFIRMED, and the waitlist
    /// entry it was offered to is FULFILLED.
    pub(super) fn confirm_writes(
        &mut self,
        hold: &Hold,
        number: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) {
        self.live_holds.remove(&(hold.expires_at, hold.id.clone()));
        self.free_hold(hold);
        if let Some(h) = self.holds.get_mut(&hold.id) {
            h.status = HoldStatus::Confirmed;
            h.confirmation = Some(number.clone());
        }
        if let Some(entry) = &hold.entry {
            self.end_entry(entry, EntryStatus::Fulfilled, None, now);
            if let Some(rec) = self.entries.get_mut(entry) {
                rec.entry.confirmation = Some(number.clone());
            }
        }
    }

    /// The writes of releasing a live hold: its seats and claims come back, it is RELEASED, one
    /// `hold_released` event (ReleaseHold, and leaving the waitlist with a pending offer).
    pub(super) fn release(&mut self, hold: &Hold, now: DateTime<Utc>) -> Result<Hold, StoreError> {
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
    pub(super) fn free_hold(&mut self, hold: &Hold) {
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

    /// The receipt and passport rules of a group: a booking, hold or waitlist join refuses the
    /// first applicant that breaks one, and the offer step (`State::entry_refusal`) cancels an
    /// entry for it (as `check_applicants` in holds_lib.lua).
    pub(super) fn check_applicants(
        &self,
        applicants: &[Applicant],
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
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
                });
            }
            if rec.receipt.expires_at() <= now {
                return Err(Error::ReceiptExpired {
                    receipt_number: a.receipt.to_string(),
                    expired_at: format_instant(rec.receipt.expires_at()),
                });
            }
            if rec.backing.is_some() || rec.held_by.is_some() {
                return Err(Error::ReceiptInUse {
                    receipt_number: a.receipt.to_string(),
                });
            }
            if self.active.contains_key(&a.passport)
                || self.held_passports.contains_key(&a.passport)
            {
                return Err(Error::ApplicantAlreadyBooked {
                    passport_number: a.passport.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The outcome of a request_id seen before: Ok(Some) replays it, Err refuses a reused id.
    pub(super) fn replay(
        &self,
        op: Op,
        request_id: &RequestId,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Appointment>, StoreError> {
        let key = (op, request_id.clone());
        let Some(first) = recall(&self.remembered, &key, request_id, fingerprint, now)? else {
            return Ok(None);
        };
        self.appointments
            .get(&first)
            .cloned()
            .map(Some)
            .ok_or_else(|| StoreError::corrupt("remembered request names a missing appointment"))
    }

    pub(super) fn remember(
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
            Remembered::new(fingerprint, confirmation, now),
        );
    }
}

/// The refusal of a hold that has expired (or lost its claims to a faster replica's reclaim).
fn hold_expired(hold: &Hold) -> Error {
    Error::HoldExpired {
        hold_id: hold.id.to_string(),
        expired_at: format_instant(hold.expires_at),
    }
}

impl<T> Remembered<T> {
    /// Remembered from `now` for as long as a request_id is (`IDEMPOTENCY_TTL_SECS`).
    pub(super) fn new(fingerprint: String, first: T, now: DateTime<Utc>) -> Self {
        Self {
            fingerprint,
            first,
            expires_at: now + Duration::seconds(IDEMPOTENCY_TTL_SECS),
        }
    }
}

/// What a request_id remembered under `key` answers (as `remembered()` in holds_lib.lua):
/// Ok(Some(first)) replays the first outcome, Err refuses the id reused for other content,
/// Ok(None) is new (never seen, or forgotten).
pub(super) fn recall<K: Eq + Hash, T: Clone>(
    seen: &HashMap<K, Remembered<T>>,
    key: &K,
    request_id: &RequestId,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> Result<Option<T>, Error> {
    match seen.get(key) {
        Some(r) if r.expires_at > now => {
            if r.fingerprint != fingerprint {
                return Err(Error::RequestIdReused {
                    request_id: request_id.to_string(),
                });
            }
            Ok(Some(r.first.clone()))
        }
        _ => Ok(None),
    }
}
