//! The holds this replica placed, remembered for their confirmation: `confirm_hold` names every
//! key from the hold's slot and applicants, which it read with an `HGETALL` of the hold record
//! first. A hold's slot and applicants never change after `hold.lua` wrote them (the id is
//! fresh, 128 random bits, refused `CONFIRMATION_TAKEN` if it existed), so for a hold placed
//! here the record's content is known without the read: one round trip less per booking made
//! through a hold on the replica that placed it (a waiting-room admission's hold and confirm).
//! Nothing is trusted that could have changed: `confirm_hold.lua` re-reads the record and
//! compares the applicants verbatim (`STALE` makes the caller read and try again), and every
//! state (status, expiry, claims, the admission) is the script's own read. Bounded: the oldest
//! of `PLACED_CAPACITY` is forgotten first (a forgotten hold is read as before); one confirm
//! takes its entry.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use super::codec::StoredHold;
use crate::domain::lifecycle::HoldId;

/// Holds remembered per replica at most (a few hundred bytes each).
pub const PLACED_CAPACITY: usize = 4096;

#[derive(Debug, Default)]
pub struct Placed {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    holds: HashMap<HoldId, StoredHold>,
    /// Insertion order, for the bound (ids already taken are skipped when they come up).
    order: VecDeque<HoldId>,
}

impl Placed {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a hold `hold.lua` just placed, as it wrote it.
    pub fn remember(&self, stored: StoredHold) {
        let mut inner = self.lock();
        let id = stored.hold.id.clone();
        if inner.holds.insert(id.clone(), stored).is_none() {
            inner.order.push_back(id);
        }
        while inner.order.len() > PLACED_CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.holds.remove(&old);
            }
        }
    }

    /// The hold as placed here, if remembered; forgotten by the call (a confirm that fails
    /// or is retried reads the record).
    pub fn take(&self, id: &HoldId) -> Option<StoredHold> {
        self.lock().holds.remove(id)
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.holds.len(), inner.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::{Hold, HoldStatus};
    use crate::domain::types::{CategoryId, PostId, SlotRef, SlotTime};

    fn stored(id: &HoldId) -> StoredHold {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("instant");
        StoredHold {
            hold: Hold {
                id: id.clone(),
                slot: SlotRef {
                    post: PostId::parse("BEIJING").expect("post"),
                    category: CategoryId::parse("ALL_OTHERS").expect("category"),
                    date: chrono::NaiveDate::from_ymd_opt(2027, 1, 4).expect("date"),
                    time: SlotTime::parse("08:00").expect("time"),
                },
                applicants: Vec::new(),
                status: HoldStatus::Held,
                created_at: now,
                expires_at: now,
                confirmation: None,
                entry: None,
            },
            applicants_json: "[]".into(),
        }
    }

    #[test]
    fn a_placed_hold_is_taken_once_and_the_memory_stays_bounded() {
        let placed = Placed::default();
        let first = HoldId::generate();
        placed.remember(stored(&first));
        assert!(placed.take(&first).is_some());
        assert!(placed.take(&first).is_none(), "taken once");
        let ids: Vec<HoldId> = (0..PLACED_CAPACITY + 10)
            .map(|_| HoldId::generate())
            .collect();
        for id in &ids {
            placed.remember(stored(id));
        }
        let (holds, order) = placed.len();
        assert!(holds <= PLACED_CAPACITY && order <= PLACED_CAPACITY);
        assert!(
            placed.take(&ids[0]).is_none(),
            "the oldest is forgotten first"
        );
        assert!(placed.take(&ids[ids.len() - 1]).is_some());
    }
}
