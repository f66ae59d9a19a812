//! The use cases of slotd, one method per RPC: look the post up in the catalog, apply the rules
//! that need the clock, call the store's atomic operation. Handlers in `api` only convert wire
//! messages to and from these calls. One file per concern, named like the store's:
//! - `mod.rs`: `Slotd` (catalog, store, clock, calendar cache), `AppError`, the sweeper's round;
//! - `booking.rs`: book, read, cancel, reschedule an appointment;
//! - `holds.rs`: hold, confirm, release, reclaim expired holds;
//! - `waitlist.rs`: join, read, leave, the share of released seats;
//! - `inventory.rs`: the operator's slots (open, resize, close), manifest, receipts, audit,
//!   events;
//! - `calendar.rs`: the calendar reads and watchers, over `availability.rs` (this replica's
//!   calendar cache, slot feed and `WatchAvailability` fan-out);
//! - `room.rs`: the waiting room (`Room`): join, watch, leave, the admission ticker, and the
//!   gate booking calls pass through.
//!
//! Background tasks (slot feed, room ticker, sweeper) are started in one place,
//! `crate::tasks`, and tick on one grid of wall-clock time (`cadence.rs`).

pub mod availability;
mod booking;
pub mod cadence;
mod calendar;
mod holds;
mod inventory;
pub mod room;
mod waitlist;

pub use calendar::DateSeats;
pub use inventory::Closing;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::app::availability::{Availability, CalendarOptions};
use crate::domain::catalog::Catalog;
use crate::domain::clock::Clock;
use crate::domain::lifecycle::{DEFAULT_HOLD_TTL_SECS, DEFAULT_RESCHEDULE_LIMIT};
use crate::domain::types::DayRef;
use crate::domain::Error;
use crate::store::{Inventory, StoreError};

/// The use cases' one error type, what the api layer maps to a status: a refusal (the client's
/// to fix), unavailability (retry), an id collision (retry), or an internal fault (slotd's).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A rule refused the request; nothing changed.
    #[error(transparent)]
    Refused(#[from] Error),
    /// The store cannot be reached or timed out. The operation may or may not have been
    /// applied; retrying with the same request_id is safe.
    #[error("store unavailable: {detail}")]
    Unavailable { detail: String },
    /// Every freshly drawn id of one call (confirmation number, hold id, entry id) was taken: a
    /// run of random collisions, not the client's fault and not corrupt data; nothing changed,
    /// and the same request (same request_id) may be retried at once.
    #[error("no free {what} after several draws")]
    IdCollision { what: &'static str },
    /// A fault in slotd or its data (stored data that does not parse, a misconfigured store, a
    /// collision that escaped its retry): never the client's fault.
    #[error("internal fault: {detail}")]
    Internal { detail: String },
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Domain(e) => AppError::Refused(e),
            StoreError::Unavailable { detail } => AppError::Unavailable { detail },
            other @ (StoreError::Corrupt { .. }
            | StoreError::Misconfigured { .. }
            | StoreError::ConfirmationTaken) => AppError::Internal {
                detail: other.to_string(),
            },
        }
    }
}

/// Draws of a fresh id before giving up (a confirmation number collision needs ~2^34
/// appointments; hold and entry ids are 128 bits).
const CONFIRMATION_DRAWS: usize = 4;

/// A fresh id the store can use: `call` with a new id from `generate` until the store answers
/// something other than `ConfirmationTaken` (the id exists already: nothing changed, draw
/// another), at most `CONFIRMATION_DRAWS` times, then `IdCollision`. Returns the store's answer.
async fn fresh_id<I: FreshId, T, Fut>(
    generate: fn() -> I,
    mut call: impl FnMut(I) -> Fut,
) -> Result<Result<T, StoreError>, AppError>
where
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    for _ in 0..CONFIRMATION_DRAWS {
        match call(generate()).await {
            Err(StoreError::ConfirmationTaken) => continue,
            outcome => return Ok(outcome),
        }
    }
    Err(AppError::IdCollision { what: I::WHAT })
}

/// An id drawn at random for a new record, and its name in `AppError::IdCollision`.
trait FreshId {
    const WHAT: &'static str;
}

impl FreshId for crate::domain::types::ConfirmationNumber {
    const WHAT: &'static str = "confirmation number";
}

impl FreshId for crate::domain::lifecycle::HoldId {
    const WHAT: &'static str = "hold id";
}

impl FreshId for crate::domain::waitlist::EntryId {
    const WHAT: &'static str = "entry id";
}

/// Settings of the booking lifecycle (`--hold-ttl-secs`, `--reschedule-limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleOptions {
    /// How long a hold keeps its seats.
    pub hold_ttl: Duration,
    /// How many times each receipt may back a reschedule.
    pub reschedule_limit: u32,
}

impl Default for LifecycleOptions {
    fn default() -> Self {
        Self {
            hold_ttl: Duration::seconds(DEFAULT_HOLD_TTL_SECS as i64),
            reschedule_limit: DEFAULT_RESCHEDULE_LIMIT,
        }
    }
}

#[derive(Clone)]
pub struct Slotd {
    catalog: Arc<Catalog>,
    store: Arc<dyn Inventory>,
    clock: Arc<dyn Clock>,
    lifecycle: LifecycleOptions,
    availability: Arc<Availability>,
}

impl Slotd {
    pub fn new(catalog: Arc<Catalog>, store: Arc<dyn Inventory>, clock: Arc<dyn Clock>) -> Self {
        Self {
            catalog,
            store,
            clock,
            lifecycle: LifecycleOptions::default(),
            availability: Arc::new(Availability::new(CalendarOptions::default())),
        }
    }

    /// The same service with other calendar cache and feed settings (a fresh, empty cache).
    pub fn with_calendar(mut self, options: CalendarOptions) -> Self {
        self.availability = Arc::new(Availability::new(options));
        self
    }

    /// The calendar cache, slot feed and watchers of this replica.
    pub fn availability(&self) -> &Arc<Availability> {
        &self.availability
    }

    /// The same service with other hold and reschedule settings.
    pub fn with_lifecycle(mut self, lifecycle: LifecycleOptions) -> Self {
        self.lifecycle = lifecycle;
        self
    }

    pub fn lifecycle(&self) -> LifecycleOptions {
        self.lifecycle
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn store(&self) -> &Arc<dyn Inventory> {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// One round of the sweeper (`crate::tasks` runs it every `booking.sweep_interval_ms`):
    /// expired holds return their seats even when no request touches their date, waitlist
    /// entries whose range has passed retire, past appointments free their passports and leave
    /// their day's indexes, and records past their retention are forgotten (bounded batches).
    /// Failures are logged; the next round tries again.
    pub async fn sweep(&self) {
        match self.reclaim_expired_holds().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(reclaimed = n, "expired holds reclaimed"),
            Err(e) => tracing::warn!(error = %e, "hold sweep failed"),
        }
        // Waitlist entries whose range has passed: a bounded batch per tick.
        match self.store.retire_passed_waitlist(self.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(retired = n, "passed waitlist entries retired"),
            Err(e) => tracing::warn!(error = %e, "waitlist retirement failed"),
        }
        // Past appointments free their passports and leave their day's indexes; records
        // past their retention are forgotten (bounded batches per tick).
        match self.store.retire_past_appointments(self.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(retired = n, "past appointments retired"),
            Err(e) => tracing::warn!(error = %e, "appointment retirement failed"),
        }
    }
}

impl Slotd {
    /// After a write through this replica: its day is dirty at once (read-your-writes), not
    /// only when the feed reads the event. `day` answers None for a replay (nothing written).
    fn touched<T>(
        &self,
        outcome: Result<T, StoreError>,
        day: impl FnOnce(&T) -> Option<DayRef>,
    ) -> Result<T, AppError> {
        if let Some(day) = outcome.as_ref().ok().and_then(day) {
            self.availability.mark_dirty(day);
        }
        Ok(outcome?)
    }
}

/// Whether a stored instant is this call's `now`, i.e. the call wrote it. Both stores keep every
/// digit of the instant they are given (`codec::instant_text`), so a replay answering the first
/// outcome of a request carries that outcome's earlier instant.
fn written_at(stored: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    stored == now
}
