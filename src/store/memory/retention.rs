//! Retention (`appt_expire.lua`, `appt_retire.lua`; `redis/retention.rs`): cancelled and
//! retired records are forgotten once their retention has passed, and appointments of days that
//! have passed everywhere are retired.

use chrono::{DateTime, Utc};

use super::{event_time, unindex, State};
use crate::domain::rules::ManifestCursor;
use crate::domain::types::AppointmentStatus;

/// Expired cancelled records forgotten per store call at most (bounded work per call).
pub(super) const EXPIRE_BATCH: usize = 64;

impl State {
    /// Returns the seats, passports and receipts of every hold expired at `now`, oldest first,
    /// exactly once (a hold leaves `live_holds` when reclaimed, confirmed or released).
    /// Forgets cancelled appointments past their retention, at most `EXPIRE_BATCH` per call
    /// (as Redis expires the records by itself): the record and its cancelled-index member.
    pub(super) fn expire_records(&mut self, now: DateTime<Utc>) {
        for _ in 0..EXPIRE_BATCH {
            let Some(first) = self.expiring.first().cloned() else {
                return;
            };
            if first.0 > now {
                return;
            }
            self.expiring.remove(&first);
            if let Some(a) = self.appointments.remove(&first.1) {
                let member = ManifestCursor {
                    time: a.slot.time,
                    confirmation: a.confirmation.clone(),
                };
                unindex(&mut self.cancelled, &a.slot.day(), &member);
            }
        }
    }

    /// As `appt_expire.lua` then `appt_retire.lua` (see `Inventory::retire_past_appointments`):
    /// forgets at most a batch of retired records past their retention, then retires at most a
    /// batch of BOOKED appointments of days that have passed. Returns how many were retired.
    pub(super) fn retire_past_appointments(&mut self, now: DateTime<Utc>) -> u32 {
        let batch = crate::store::APPOINTMENT_RETIRE_BATCH as usize;
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
                unindex(&mut self.manifests, &day, &member);
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
}
