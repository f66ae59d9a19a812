//! The sold-out memo: once a booking or hold script has answered `SLOT_FULL` with no seat left
//! and none under a live hold, further bookings and holds of that slot are refused here for at
//! most `ttl` without running the script (only an `EXISTS` of the request's idempotency record
//! goes to Redis, see below; a hold under a waiting-room admission is refused before its
//! admission step is counted, `Inventory::refuse_sold_out_hold`). On a hot slot that sold out,
//! nearly every request is such a refusal, and each one would otherwise cost a script call in
//! the single Redis thread that also serves the bookings that can still succeed.
//!
//! Correct by bound: a slot remembered as sold out may get seats back (a cancel, a capacity raise,
//! a released or expired hold, a reschedule away), possibly on another replica. Seats returned
//! through *this* store clear the memo at once (`forget_all`); seats returned anywhere else are
//! seen at most `ttl` later (`SOLD_OUT_TTL`, 500 ms). During that window a booking may be refused
//! `SLOT_FULL` although a seat is free, never the opposite: the memo can only refuse, and the
//! booking script still checks every seat it takes, so it cannot overbook.
//!
//! Warm for holds: past `ttl` a remembered slot is *stale*, not forgotten (until
//! `RECHECK_HORIZON`). A hold on a stale slot asks Redis for the slot's counters in the same
//! round trip as the `EXISTS` (a pipeline of two plain reads); if the slot is still full of
//! bookings (nothing remaining, nothing held, not closed) the hold is refused as from a fresh
//! memo and the slot is remembered again, so on a slot that stays sold out the script never
//! runs again, instead of once per replica and `ttl` (each such hold under a waiting-room
//! admission also cost the session claim, an admission step and the claim's release). The
//! counters are read at that instant: a stale recheck sees seats that came back anywhere.
//!
//! Why not zero round trips: a `request_id` that already booked must replay its first outcome
//! (README, idempotency), even after the slot sold out (the retry of a booking whose answer was
//! lost). Only Redis knows that, so the fast path asks `EXISTS` on the idempotency record (a
//! plain command, ~0.3 µs of Redis CPU instead of a script) and falls through to the script when
//! the request was seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a sold-out answer is trusted without asking Redis again.
pub const SOLD_OUT_TTL: Duration = Duration::from_millis(500);

/// How long past its mark a slot stays worth the cheap recheck of a stale memo.
pub const RECHECK_HORIZON: Duration = Duration::from_secs(60);

/// What the memo knows of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memo {
    /// Seen sold out less than `ttl` ago: refuse without asking.
    Fresh,
    /// Seen sold out earlier (within `RECHECK_HORIZON`): worth a cheap recheck.
    Stale,
    /// Nothing known: run the script.
    Unknown,
}

/// Remembered slots at most; past it the memo starts over (it only saves work, never decides).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
pub struct SoldOut {
    ttl: Duration,
    seen: Mutex<HashMap<String, Instant>>,
}

impl SoldOut {
    /// A memo trusting a sold-out answer for `ttl` (zero turns it off).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // The map holds plain data with no invariant a panic could break half way.
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `slot` was seen sold out less than `ttl` ago.
    pub fn is_sold_out(&self, slot: &str, now: Instant) -> bool {
        self.lookup(slot, now) == Memo::Fresh
    }

    /// What the memo knows of `slot` at `now` (an entry past `RECHECK_HORIZON` is dropped).
    pub fn lookup(&self, slot: &str, now: Instant) -> Memo {
        if self.ttl.is_zero() {
            return Memo::Unknown;
        }
        let mut seen = self.entries();
        let Some(at) = seen.get(slot) else {
            return Memo::Unknown;
        };
        let age = now.saturating_duration_since(*at);
        if age < self.ttl {
            Memo::Fresh
        } else if age < RECHECK_HORIZON.max(self.ttl) {
            Memo::Stale
        } else {
            seen.remove(slot);
            Memo::Unknown
        }
    }

    /// Remembers that a booking script found `slot` with no seat left at `at`.
    pub fn mark(&self, slot: String, at: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut seen = self.entries();
        if seen.len() >= MAX_ENTRIES {
            seen.clear();
        }
        seen.insert(slot, at);
    }

    /// Seats may have come back (cancel, capacity, hold released, reschedule): trust nothing.
    pub fn forget_all(&self) {
        self.entries().clear();
    }

    /// Forgets everything when dropped, i.e. after the operation that may return seats has its
    /// answer, whichever way it returns.
    pub fn forget_on_drop(&self) -> Forget<'_> {
        Forget(self)
    }
}

/// See `SoldOut::forget_on_drop`.
pub struct Forget<'a>(&'a SoldOut);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.forget_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sold_out_slot_is_remembered_for_the_ttl_only() {
        let memo = SoldOut::new(Duration::from_millis(500));
        let t0 = Instant::now();
        assert!(!memo.is_sold_out("a", t0));
        memo.mark("a".into(), t0);
        assert!(memo.is_sold_out("a", t0 + Duration::from_millis(499)));
        assert!(!memo.is_sold_out("b", t0));
        assert!(!memo.is_sold_out("a", t0 + Duration::from_millis(500)));
        // Past the TTL it is stale (worth a recheck), past the horizon gone, not revived.
        assert_eq!(
            memo.lookup("a", t0 + Duration::from_millis(500)),
            Memo::Stale
        );
        assert_eq!(memo.lookup("a", t0 + RECHECK_HORIZON), Memo::Unknown);
        assert_eq!(memo.lookup("a", t0), Memo::Unknown);
        assert_eq!(memo.lookup("b", t0), Memo::Unknown);
    }

    #[test]
    fn returning_seats_forgets_everything_and_a_zero_ttl_is_off() {
        let memo = SoldOut::new(Duration::from_secs(1));
        let t0 = Instant::now();
        memo.mark("a".into(), t0);
        memo.forget_all();
        assert!(!memo.is_sold_out("a", t0));
        let off = SoldOut::new(Duration::ZERO);
        off.mark("a".into(), t0);
        assert!(!off.is_sold_out("a", t0));
    }
}
