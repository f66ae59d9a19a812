//! The waiting room's storage: one atomic method per operation, like `Inventory`. The order of
//! admission is decided here (in Redis by one script), never by a replica, so every replica
//! admits in the one global join order.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::room::{
    ClientKey, RoomConfig, RoomStats, Synced, TicketId, TicketState, TicketView,
};

/// How long an ended ticket stays readable (so a late poll learns why it ended).
pub const ENDED_TICKET_TTL_SECS: i64 = 3600;

/// How long a claim on an admitted session lasts if its call never settles it.
pub const CLAIM_LEASE_SECS: i64 = 30;

/// Joins or status reads one store call takes at most (the Redis scripts refuse more; the
/// batch methods chunk longer batches).
pub const BATCH_MAX: usize = 256;

/// One outcome per call of a batch, in the batch's order.
pub type Outcomes = Vec<Result<TicketView, StoreError>>;

/// What one replica's tick asks of the store (`WaitingRoomStore::tick`).
#[derive(Debug, Clone, Copy)]
pub struct TickCall<'a> {
    /// The step lease: the room steps when at least this much time (the store's own clock,
    /// not room time) passed since the last step of any replica; zero steps at every tick.
    pub lease: Duration,
    /// The registry's sync (`WaitingRoomStore::sync`), or None when it holds no stream.
    pub sync: Option<SyncCall<'a>>,
    pub now: DateTime<Utc>,
}

/// The sync part of a tick: as `WaitingRoomStore::sync`'s arguments.
#[derive(Debug, Clone, Copy)]
pub struct SyncCall<'a> {
    pub after: Option<u64>,
    pub heartbeat: &'a [TicketId],
    pub max_events: usize,
}

/// What a tick answers.
#[derive(Debug, Clone)]
pub struct Ticked {
    /// The settings (as `config` reads them).
    pub config: RoomConfig,
    /// The step's admissions, or None when no step ran (room off, or the lease not due).
    pub admitted: Option<u64>,
    /// The sync's answer when one was asked.
    pub synced: Option<Synced>,
}

#[async_trait]
pub trait WaitingRoomStore: Send + Sync + 'static {
    /// Replaces the configuration. Enabling fills the token bucket.
    async fn configure(
        &self,
        config: &RoomConfig,
        now: DateTime<Utc>,
    ) -> Result<RoomConfig, StoreError>;

    async fn config(&self) -> Result<RoomConfig, StoreError>;

    /// Takes the next place in line for `client_key` with id `fresh`, or returns the live ticket
    /// the client key already holds (a refresh keeps the place). Counts as a heartbeat.
    /// `WaitingRoomDisabled` when the room is off.
    async fn join(
        &self,
        client_key: &ClientKey,
        fresh: &TicketId,
        now: DateTime<Utc>,
    ) -> Result<TicketView, StoreError>;

    /// A batch of joins (one replica's concurrent Join calls) in one store call, in order: each
    /// as `join` would answer it one after the other, so a client key twice in the batch gets
    /// one place, numbers follow the batch's order without a gap, and a refused join (its fresh
    /// id taken) changes nothing for the others. A failure of the whole call (store down, room
    /// off) is every join's outcome. The default makes one `join` call per join.
    async fn join_batch(&self, joins: &[(ClientKey, TicketId)], now: DateTime<Utc>) -> Outcomes {
        let mut out = Vec::with_capacity(joins.len());
        for (client_key, fresh) in joins {
            out.push(self.join(client_key, fresh, now).await);
        }
        out
    }

    /// The ticket as its holder sees it; counts as a heartbeat while waiting.
    async fn status(&self, ticket: &TicketId, now: DateTime<Utc>)
        -> Result<TicketView, StoreError>;

    /// A batch of status reads (GetStatus calls and new Watch streams' first reads) in one
    /// store call, each answered as `status` would. The default makes one `status` call each.
    async fn status_batch(&self, tickets: &[TicketId], now: DateTime<Utc>) -> Outcomes {
        let mut out = Vec::with_capacity(tickets.len());
        for ticket in tickets {
            out.push(self.status(ticket, now).await);
        }
        out
    }

    /// Ends a live ticket (waiting or admitted) as `Left`, `Completed` or `Revoked`, freeing its
    /// place; an ended ticket stays as it is.
    async fn end(
        &self,
        ticket: &TicketId,
        state: TicketState,
        now: DateTime<Utc>,
    ) -> Result<TicketView, StoreError>;

    /// A replica's one call per tick for all the Watch streams it holds (`room::Watchers`):
    /// heartbeats every ticket of `heartbeat` that is still waiting (one multi-member write;
    /// others are left alone), and answers the events after `after` (at most `max_events`,
    /// `None`: none, just the head) with the observed admission rate. The caller chunks
    /// `heartbeat`; the store's work is O(heartbeats + events), whatever the line's length.
    async fn sync(
        &self,
        after: Option<u64>,
        heartbeat: &[TicketId],
        max_events: usize,
        now: DateTime<Utc>,
    ) -> Result<Synced, StoreError>;

    /// One admission step (see `domain::room`). Returns how many tickets it admitted.
    async fn advance(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// A replica's one store call per tick: reads the settings, runs an admission step when the
    /// room is on and the step lease is due (`TickCall::lease`: however many replicas tick,
    /// the room steps about once per lease), then the sync of its Watch streams, in that
    /// order and, in the stores of this crate, atomically. The default makes the three calls
    /// (and steps at every tick: no lease).
    async fn tick(&self, call: &TickCall<'_>) -> Result<Ticked, StoreError> {
        let config = self.config().await?;
        let admitted = if config.enabled {
            Some(self.advance(call.now).await?)
        } else {
            None
        };
        let synced = match call.sync {
            Some(s) => Some(
                self.sync(s.after, s.heartbeat, s.max_events, call.now)
                    .await?,
            ),
            None => None,
        };
        Ok(Ticked {
            config,
            admitted,
            synced,
        })
    }

    /// Ok when the ticket holds a live admitted session at `now`, else `AdmissionRevoked`.
    async fn check_session(&self, ticket: &TicketId, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Claims a live admitted session for one call until `release_session` or `end` (or until
    /// `CLAIM_LEASE_SECS` pass, should the caller die): a second claim meanwhile fails
    /// `AdmissionInUse`, so one admission cannot book twice at the same instant. Booking calls
    /// only: the other gated steps are bounded by their own atomic step count and only
    /// `check_session` (`api::booking` `admitted`).
    async fn claim_session(&self, ticket: &TicketId, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Gives a claim back (the call finished without ending the session).
    async fn release_session(&self, ticket: &TicketId) -> Result<(), StoreError>;

    async fn stats(&self, now: DateTime<Utc>) -> Result<RoomStats, StoreError>;
}
