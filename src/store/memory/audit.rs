//! The audit (`audit.lua`): every slot's counts against the appointments and holds that take
//! its seats.

use std::collections::HashMap;

use super::State;
use crate::domain::rules::{AuditReport, DateRange};
use crate::domain::types::{AppointmentStatus, CategoryId, PostId, SlotRef};
use crate::store::StoreError;

impl State {
    pub(super) fn audit(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<AuditReport, StoreError> {
        let slots = self.slots(post, category, range)?;
        let mut seats_by_slot: HashMap<&SlotRef, u32> = HashMap::new();
        for a in self.appointments.values() {
            // A retired (past) appointment left its slot's booked count with its day's index.
            if a.status == AppointmentStatus::Booked && !self.retired.contains(&a.confirmation) {
                *seats_by_slot.entry(&a.slot).or_default() += a.seats();
            }
        }
        let mut held_by_slot: HashMap<&SlotRef, u32> = HashMap::new();
        for (_, id) in &self.live_holds {
            if let Some(h) = self.holds.get(id) {
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
}
