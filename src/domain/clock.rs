//! The one clock every time rule reads (slots already begun, receipt expiry, hold expiry). slotd
//! passes `now` from here into each store operation, so tests move time without sleeping.
//! Replicas read their own system clocks: keep them NTP-synchronised; a skew of s seconds shifts
//! the "slot already started", "receipt expired" and "hold expired" edges by at most s seconds.
//! Skew never lets one passport or receipt back two live appointments: the stores take and free
//! claims compare-and-set (a hold whose claims a faster replica took can no longer be
//! confirmed; see docs/redis-keys.md, "Claims are compare-and-set").

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock tests set and advance by hand.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(at)))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
