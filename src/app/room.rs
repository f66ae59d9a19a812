//! Use cases of the waiting room: join, watch/poll, leave, operator settings, the admission
//! ticker every replica runs, and the gate booking calls pass through.
//!
//! The room's settings are cached per replica and refreshed by the ticker (every
//! `TICK_INTERVAL`), so a gate check costs no store call while the room is off; a change made on
//! one replica reaches the others within one tick. The room fails closed: while this replica has
//! not read the settings within `SETTINGS_FRESH` (its store is down, or it has just started),
//! booking calls are refused UNAVAILABLE instead of passing as if the room were off, and health
//! reports NOT_SERVING; calendar reads stay open only if the last settings read did not gate
//! them (never read: refused too).
//!
//! Watch streams cost the store nothing of their own. Each replica keeps its open streams in
//! one in-memory registry (`Watchers`): per ticket a few numbers and the streams' outboxes, no
//! task and no timer per stream. Once per tick the replica makes one store call,
//! `WaitingRoomStore::tick`: the settings, the room's admission step when the step lease is due
//! (`STEP_LEASE`: about one step per interval for the whole room, whichever replica takes it),
//! and the sync of all its streams (heartbeats chunked when large): the heartbeats that fall due
//! (each waiter every half of the waiter timeout) and the room's events since the last tick
//! (tickets leaving the line, in one global sequence). From those it derives, in memory, every watcher's exact `people_ahead`, who
//! was admitted (the token is minted here) and who ended. A stream is sent a message only when
//! its own state changes, when its position or estimate moved by the configured step, or at the
//! heartbeat interval.
//!
//! Joins and status reads are batched per replica (`Batch`): a call queues itself and, when no
//! store call of its kind is in flight, starts one flush task; the task takes everything queued
//! (at most `BATCH_MAX`) into one store call (`WaitingRoomStore::join_batch` / `status_batch`) and
//! hands each caller its own outcome, then takes what queued meanwhile, until nothing is left.
//! A lone call waits for nothing (its batch is itself); a burst costs one store call per batch
//! instead of one per caller. The order of joins is still decided by the store (the batch's
//! order, then the next batch's, from any replica), so every replica admits in one join order.
//! Calls the store answers `Unavailable` (a response timeout: applied or not) are sent once more:
//! a join is idempotent by its client key, a status read by nature.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::domain::admission::AdmissionKeys;
use crate::domain::clock::Clock;
use crate::domain::room::{
    estimate_wait_secs, ClientKey, RoomConfig, RoomEvent, RoomStats, Synced, TicketId, TicketState,
    TicketView,
};
use crate::domain::Error;
use crate::store::room::{Outcomes, SyncCall, TickCall, WaitingRoomStore, BATCH_MAX};
use crate::store::StoreError;

/// How often each replica ticks: refreshes its copy of the settings, syncs its Watch streams
/// and offers the room an admission step. Ticks fall on the multiples of the interval of the
/// wall clock (`cadence`), with those of the slot feed and of the other replicas. 250 ms, not
/// less: what a tick costs Redis is mostly waking it (benches/README.md §23), an admitted
/// waiter hears of it within a tick either way (a quarter of a second on a page that says
/// "you will be let in shortly"), and positions are sent at most once a second
/// (`WatchOptions::position_interval`); the admission rate does not depend on it (the token
/// bucket counts room time).
pub const TICK_INTERVAL: Duration = Duration::from_millis(250);

/// The step lease (`TickCall::lease`): the room steps when this much time passed since the last
/// step of any replica. Four fifths of the tick interval: a lone replica steps at every tick
/// even when the one before came up to 50 ms late (ticks fall on the grid, not a full interval
/// after the last), and N replicas cost the room about one step per tick interval instead of
/// N (their ticks come within milliseconds of one another, on the same grid).
pub const STEP_LEASE: Duration = Duration::from_millis(200);

/// A copy of the settings older than this (real time) is not trusted: gated calls are refused.
pub const SETTINGS_FRESH: Duration = Duration::from_secs(3);

/// Events one sync reads at most; a replica further behind catches up over the next ticks.
pub const SYNC_MAX_EVENTS: usize = 5_000;

/// Watched tickets re-read one by one per tick at most (only after the event log was trimmed
/// past this replica's cursor, e.g. after a long outage).
pub const REFRESH_PER_TICK: usize = 50;

/// Recent events kept in memory, so a view read just before the registry moved on is caught up.
const RECENT_EVENTS: usize = 8_192;

/// Closed streams leave the registry at most this often (a scan of every entry), and only
/// after one closed: until then a closed stream's ticket is heartbeated and told for nothing.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// What a gate protects: calendar reads are gated only when the operator says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Booking,
    Calendar,
}

/// A ticket as its holder sees it, with an admission token when admitted.
#[derive(Debug, Clone)]
pub struct Seen {
    pub view: TicketView,
    pub token: Option<String>,
}

/// How this replica's Watch streams hear from the room (config `waiting_room.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// A stream is sent its status at least this often while nothing moves.
    pub heartbeat: Duration,
    /// A waiting stream is sent a new `people_ahead` / estimate once either moved by at least
    /// this percentage of the value last sent (and by at least one); 0 = every change.
    pub position_step_percent: u32,
    /// ... but at most once per this interval (real time): a move within it waits for the
    /// interval's end (it is deferred, never dropped). Near the front of a fast line every
    /// admission step moves a waiter by more than the step (10 % of 5 ahead is one person), so
    /// without it a waiter would get one message per tick for its last stretch; its own state
    /// change (admitted, ended) is never held back. Zero: no bound.
    pub position_interval: Duration,
    /// Open Watch streams one ticket may have on this replica.
    pub max_watchers_per_ticket: usize,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(3),
            position_step_percent: 10,
            position_interval: Duration::from_secs(1),
            max_watchers_per_ticket: 4,
        }
    }
}

impl WatchOptions {
    /// Whether `now` differs from `sent` by the step.
    fn moved(&self, sent: u64, now: u64) -> bool {
        let delta = sent.abs_diff(now);
        delta > 0
            && delta.saturating_mul(100)
                >= sent.saturating_mul(u64::from(self.position_step_percent))
    }
}

#[derive(Clone)]
pub struct Room {
    keys: AdmissionKeys,
    store: Arc<dyn WaitingRoomStore>,
    clock: Arc<dyn Clock>,
    /// The settings last read and when (real time); None until the first read.
    config: Arc<RwLock<Option<(RoomConfig, Instant)>>>,
    watchers: Arc<Mutex<Watchers>>,
    /// Watch streams closed since the registry last dropped closed ones (`PRUNE_EVERY`).
    closes: Arc<AtomicUsize>,
    options: WatchOptions,
    joins: Arc<Batch<(ClientKey, TicketId)>>,
    statuses: Arc<Batch<TicketId>>,
}

impl Room {
    pub fn new(
        keys: AdmissionKeys,
        store: Arc<dyn WaitingRoomStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            keys,
            store,
            clock,
            config: Arc::new(RwLock::new(None)),
            watchers: Arc::new(Mutex::new(Watchers::default())),
            closes: Arc::new(AtomicUsize::new(0)),
            options: WatchOptions::default(),
            joins: Arc::new(Batch::default()),
            statuses: Arc::new(Batch::default()),
        }
    }

    pub fn with_watch_options(mut self, options: WatchOptions) -> Self {
        self.options = options;
        self
    }

    /// The signing keys (waitlist entry secrets are derived with them too).
    pub fn keys(&self) -> &AdmissionKeys {
        &self.keys
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The settings, if read within `SETTINGS_FRESH`.
    pub fn known_config(&self) -> Option<RoomConfig> {
        let cached = *self.config.read().unwrap_or_else(|e| e.into_inner());
        cached
            .filter(|(_, at)| at.elapsed() <= SETTINGS_FRESH)
            .map(|(c, _)| c)
    }

    /// The settings last read, however long ago.
    fn last_config(&self) -> Option<RoomConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(c, _)| c)
    }

    /// Whether this replica knows the room's settings (health reports it).
    pub fn settings_known(&self) -> bool {
        self.known_config().is_some()
    }

    fn cache(&self, config: RoomConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Some((config, Instant::now()));
    }

    /// Reads the settings once (at start; the ticker's `tick` reads them every tick).
    pub async fn refresh_settings(&self) -> Result<RoomConfig, StoreError> {
        let config = self.store.config().await?;
        self.cache(config);
        Ok(config)
    }

    fn seen(&self, view: TicketView) -> Seen {
        let token = match (view.state, view.session_expires_at) {
            (TicketState::Admitted, Some(expires)) => {
                Some(
                    self.keys
                        .mint(&view.id, &view.client_key, expires, self.now()),
                )
            }
            _ => None,
        };
        Seen { view, token }
    }

    /// Takes a place in line (or, for the holder's key, the place it holds), in this replica's
    /// next join batch.
    pub async fn join(&self, client_key: &ClientKey) -> Result<(Seen, String), StoreError> {
        let (outcome, start) = self
            .joins
            .push((self.keys.client_ref(client_key), TicketId::generate()));
        if start {
            tokio::spawn(self.clone().flush_joins());
        }
        let view = received(outcome.await)?;
        let secret = self.keys.ticket_secret(&view.id);
        Ok((self.seen(view), secret))
    }

    /// The ticket, for the holder of its secret only; also the holder's heartbeat. Read in this
    /// replica's next status batch.
    pub async fn status(&self, ticket: &TicketId, secret: &str) -> Result<Seen, StoreError> {
        self.keys.check_ticket_secret(ticket, secret)?;
        let (outcome, start) = self.statuses.push(ticket.clone());
        if start {
            tokio::spawn(self.clone().flush_statuses());
        }
        let view = received(outcome.await)?;
        Ok(self.seen(view))
    }

    /// The join flush task (`flush`). A join the store answered `Unavailable` (a timeout:
    /// applied or not) is idempotent by its client key, so one that was applied answers its
    /// place again when sent once more.
    async fn flush_joins(self) {
        self.flush(&self.joins).await;
    }

    /// The status flush task (`flush`; a read and a heartbeat can be repeated).
    async fn flush_statuses(self) {
        self.flush(&self.statuses).await;
    }

    /// A flush task's loop: one store call per batch until nothing is queued; the calls of a
    /// batch answered `Unavailable` are sent once more in one call, then every caller gets its
    /// outcome.
    async fn flush<C: Batched>(&self, batch: &Batch<C>) {
        let _flushing = Flushing(batch);
        while let Some((calls, replies)) = batch.next() {
            let mut outcomes = C::send(&*self.store, &calls, self.now()).await;
            let again = unavailable(&outcomes);
            if !again.is_empty() {
                tracing::warn!(
                    calls = again.len(),
                    "{} batch unavailable: sent once more",
                    C::WHAT
                );
                let retry: Vec<C> = again.iter().map(|&i| calls[i].clone()).collect();
                let second = C::send(&*self.store, &retry, self.now()).await;
                replace(&mut outcomes, &again, second);
            }
            deliver(replies, outcomes);
        }
    }

    /// Joins and status reads queued for this replica's next batches (a burst's backlog).
    pub fn queued_calls(&self) -> (usize, usize) {
        (self.joins.queued(), self.statuses.queued())
    }

    /// Opens a Watch stream for the holder of the ticket's secret: one status read (refusing a
    /// wrong secret or an unknown ticket, and the first heartbeat), then the stream lives in the
    /// registry and costs the store nothing of its own.
    pub async fn watch(&self, ticket: &TicketId, secret: &str) -> Result<WatchFeed, StoreError> {
        let first = self.status(ticket, secret).await?;
        let outbox = Arc::new(Outbox::default());
        let feed = WatchFeed {
            outbox: outbox.clone(),
            closes: self.closes.clone(),
        };
        if first.view.state != TicketState::Waiting {
            outbox.push(first, true);
            return Ok(feed);
        }
        let mut w = self.lock_watchers();
        let limit = self.options.max_watchers_per_ticket;
        let entry = match w.tickets.get_mut(ticket) {
            Some(entry) => {
                entry.streams.retain(|s| !s.is_closed());
                if entry.streams.len() >= limit {
                    return Err(Error::TooManyWatchers { limit }.into());
                }
                entry
            }
            None => {
                let mut entry = w.watched(&first.view);
                entry.beaten_at = self.now();
                w.tickets.entry(ticket.clone()).or_insert(entry)
            }
        };
        // The entry's own numbers: a second stream of a ticket sees what the first one sees.
        let view = entry.view(ticket, first.view.rate_per_minute);
        entry.streams.push(outbox.clone());
        drop(w);
        outbox.push(self.seen(view), false);
        Ok(feed)
    }

    /// Open Watch streams in this replica's registry, and tickets they watch.
    pub fn watch_counts(&self) -> (usize, usize) {
        let w = self.lock_watchers();
        let streams = w
            .tickets
            .values()
            .map(|e| e.streams.iter().filter(|s| !s.is_closed()).count())
            .sum();
        (streams, w.tickets.len())
    }

    fn lock_watchers(&self) -> MutexGuard<'_, Watchers> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn leave(&self, ticket: &TicketId, secret: &str) -> Result<Seen, StoreError> {
        self.keys.check_ticket_secret(ticket, secret)?;
        let view = self
            .store
            .end(ticket, TicketState::Left, self.now())
            .await?;
        Ok(self.seen(view))
    }

    pub async fn revoke(&self, ticket: &TicketId) -> Result<(), StoreError> {
        self.store
            .end(ticket, TicketState::Revoked, self.now())
            .await
            .map(|_| ())
    }

    pub async fn configure(&self, config: &RoomConfig) -> Result<RoomConfig, StoreError> {
        let stored = self.store.configure(config, self.now()).await?;
        self.cache(stored);
        Ok(stored)
    }

    pub async fn stats(&self) -> Result<RoomStats, StoreError> {
        self.store.stats(self.now()).await
    }

    /// Whether a booking call has to pass `gate` at all: false only while this replica knows
    /// the room is off (then `gate` would answer Ok(None) without a store call).
    pub fn gates_bookings(&self) -> bool {
        self.known_config().is_none_or(|c| c.enabled)
    }

    /// Lets a call through the room: Ok(None) when the room does not gate it, Ok(Some(ticket))
    /// for a valid token of a live admitted session. Settings this replica could not read are
    /// no reason to let anyone through: UNAVAILABLE.
    pub async fn gate(
        &self,
        token: Option<&str>,
        gate: Gate,
    ) -> Result<Option<TicketId>, StoreError> {
        self.enter(self.token_ticket(token, gate)?, gate).await
    }

    /// The store part of `gate`, for a token `token_ticket` already verified: a booking call
    /// claims the session (until `settle`), a read checks it. None (the room does not gate the
    /// call) passes.
    pub async fn enter(
        &self,
        ticket: Option<TicketId>,
        gate: Gate,
    ) -> Result<Option<TicketId>, StoreError> {
        let Some(ticket) = ticket else {
            return Ok(None);
        };
        let now = self.now();
        match gate {
            // Reads may share a session; a booking call holds it until `settle`.
            Gate::Calendar => self.store.check_session(&ticket, now).await?,
            Gate::Booking => self.store.claim_session(&ticket, now).await?,
        }
        Ok(Some(ticket))
    }

    /// The store part of the gate for a booking step that claims nothing: a step bounded by
    /// its own store call (a hold, reschedule or waitlist join checks and counts its admission
    /// step atomically, `Inventory::hold`), so only a live session is asked for, as a read's.
    pub async fn check(&self, ticket: Option<TicketId>) -> Result<Option<TicketId>, StoreError> {
        self.enter(ticket, Gate::Calendar).await
    }

    /// The part of `gate` that needs no store call: the settings and the token's signature and
    /// expiry. Ok(None) when the room does not gate the call, Ok(Some(ticket)) for a token
    /// `gate` would go on to check in the store.
    pub fn token_ticket(
        &self,
        token: Option<&str>,
        gate: Gate,
    ) -> Result<Option<TicketId>, StoreError> {
        let config = match (self.known_config(), gate) {
            (Some(config), _) => config,
            // Reads stay open on the last settings read if those did not gate them.
            (None, Gate::Calendar) => match self.last_config() {
                Some(c) if !c.enabled || !c.gate_calendar => return Ok(None),
                _ => return Err(settings_unknown()),
            },
            (None, Gate::Booking) => return Err(settings_unknown()),
        };
        if !config.enabled || (gate == Gate::Calendar && !config.gate_calendar) {
            return Ok(None);
        }
        let token = token.ok_or(Error::AdmissionRequired)?;
        let (_, ticket) = self.keys.verify(token, self.now())?;
        Ok(Some(ticket))
    }

    /// Ends a booking call that passed the gate with `ticket`: `completed` (it booked) ends
    /// the session, freeing its place under the active cap; otherwise the claim is given back
    /// and the session may be used again.
    pub async fn settle(&self, ticket: Option<TicketId>, completed: bool) {
        let Some(ticket) = ticket else {
            return;
        };
        // An ended session never comes back, so its claim guards nothing any more: it lapses
        // with its lease instead of costing a round trip (a claim on it answers
        // AdmissionRevoked either way). Otherwise (not completed, or the end failed) the claim
        // is given back.
        let outcome = if completed {
            match self
                .store
                .end(&ticket, TicketState::Completed, self.now())
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => {
                    let _ = self.store.release_session(&ticket).await;
                    Err(e)
                }
            }
        } else {
            self.store.release_session(&ticket).await
        };
        if let Err(e) = outcome {
            // The call's outcome stands; the claim lapses after its lease (the session at its
            // duration) instead.
            tracing::warn!(error = %e, ticket = %ticket, completed, "could not settle the admitted session");
        }
    }

    /// One tick: one store call (`WaitingRoomStore::tick`) reads the settings, runs the room's
    /// admission step when the step lease is due (about one step per `STEP_LEASE` for the whole
    /// room, however many replicas tick) and syncs this replica's Watch streams; then the
    /// streams are told. Returns the step's admissions (0 when another replica stepped).
    pub async fn tick(&self) -> Result<u64, StoreError> {
        let now = self.now();
        // The heartbeat period of the settings last read (a change applies from the next tick).
        let beat_every = self
            .last_config()
            .map_or_else(|| beat_period(&RoomConfig::default()), |c| beat_period(&c));
        let (after, beats, stale) = {
            let mut w = self.lock_watchers();
            let due = w.pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
            if due && self.closes.swap(0, Ordering::Relaxed) > 0 {
                w.prune();
                w.pruned_at = Some(Instant::now());
            }
            if w.tickets.is_empty() {
                // Nobody to tell: no sync (the cursor is set by the next stream's view).
                w.cursor = None;
                w.recent.clear();
                (None, None, Vec::new())
            } else {
                // One pass: the heartbeats due, and a few stale entries to re-read.
                let beat_before = now - beat_every;
                let mut beats = Vec::new();
                let mut stale = Vec::new();
                for (id, e) in &w.tickets {
                    if e.beaten_at <= beat_before {
                        beats.push(id.clone());
                    }
                    if e.stale && stale.len() < REFRESH_PER_TICK {
                        stale.push(id.clone());
                    }
                }
                (w.cursor, Some(beats), stale)
            }
        };
        let ticked = self
            .store
            .tick(&TickCall {
                lease: STEP_LEASE,
                sync: beats.as_deref().map(|heartbeat| SyncCall {
                    after,
                    heartbeat,
                    max_events: SYNC_MAX_EVENTS,
                }),
                now,
            })
            .await?;
        self.cache(ticked.config);
        if let (Some(synced), Some(beats)) = (ticked.synced, beats) {
            self.tell_watchers(now, after, &beats, synced, stale)
                .await?;
        }
        Ok(ticked.admitted.unwrap_or(0))
    }

    /// Applies a sync's answer to the registry and tells the streams; then re-reads a few
    /// stale tickets exactly (bounded per tick).
    async fn tell_watchers(
        &self,
        now: DateTime<Utc>,
        after: Option<u64>,
        beats: &[TicketId],
        synced: Synced,
        stale: Vec<TicketId>,
    ) -> Result<(), StoreError> {
        let mut out: Vec<(Arc<Outbox>, Seen, bool)> = Vec::new();
        {
            let mut w = self.lock_watchers();
            for id in beats {
                if let Some(e) = w.tickets.get_mut(id) {
                    e.beaten_at = now;
                }
            }
            w.rate_per_minute = synced.rate_per_minute;
            if synced.gap {
                tracing::info!(
                    after = ?after,
                    head = synced.head,
                    "waiting room event log trimmed past this replica: re-reading its watched tickets"
                );
                for e in w.tickets.values_mut() {
                    e.stale = true;
                }
                w.recent.clear();
                w.cursor = Some(synced.head);
            } else {
                let ended = w.apply(&synced.events, synced.head);
                for (event, client_key, streams) in ended {
                    let seen = self.seen(event_view(&event, client_key, w.rate_per_minute));
                    for s in streams {
                        out.push((s, seen.clone(), true));
                    }
                }
            }
            w.messages(&self.options, Instant::now(), |outbox, view| {
                out.push((outbox, self.seen(view), false));
            });
        }
        for (outbox, seen, last) in out {
            outbox.push(seen, last);
        }
        // After a gap: re-read a few watched tickets exactly (bounded per tick).
        for id in stale {
            match self.store.status(&id, self.now()).await {
                Ok(view) => {
                    let mut w = self.lock_watchers();
                    let outcome = w.refresh(&view);
                    drop(w);
                    if let Some((streams, last)) = outcome {
                        let seen = self.seen(view);
                        for s in streams {
                            s.push(seen.clone(), last);
                        }
                    }
                }
                Err(StoreError::Domain(Error::TicketNotFound)) => {
                    let mut w = self.lock_watchers();
                    if let Some(e) = w.tickets.remove(&id) {
                        for s in e.streams {
                            s.finish();
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Ticks until the task is aborted. Errors (store down) are logged; the room fails closed:
    /// nobody is admitted until the store answers again, and nobody loses a place meanwhile
    /// beyond the waiter timeout counted in the store's own time.
    pub async fn run_ticker(self) {
        let mut failing = false;
        loop {
            match self.tick().await {
                Ok(_) if failing => {
                    tracing::info!("waiting room store answers again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "waiting room admission step failed");
                    failing = true;
                }
                Err(_) => {}
            }
            super::cadence::next_point(TICK_INTERVAL).await;
        }
    }
}

type Reply = oneshot::Sender<Result<TicketView, StoreError>>;

/// Calls of one kind (joins, status reads) waiting for this replica's next store call of that
/// kind, and whether a flush task is making those calls.
struct Batch<C> {
    state: Mutex<BatchState<C>>,
}

struct BatchState<C> {
    calls: Vec<C>,
    replies: Vec<Reply>,
    flushing: bool,
}

impl<C> Default for Batch<C> {
    fn default() -> Self {
        Self {
            state: Mutex::new(BatchState {
                calls: Vec::new(),
                replies: Vec::new(),
                flushing: false,
            }),
        }
    }
}

impl<C> Batch<C> {
    fn lock(&self) -> MutexGuard<'_, BatchState<C>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a call: its outcome to come, and whether the caller has to start the flush task
    /// (none is running).
    fn push(&self, call: C) -> (oneshot::Receiver<Result<TicketView, StoreError>>, bool) {
        let (tx, rx) = oneshot::channel();
        let mut s = self.lock();
        s.calls.push(call);
        s.replies.push(tx);
        let start = !s.flushing;
        s.flushing = true;
        (rx, start)
    }

    /// The next batch (the oldest `BATCH_MAX` calls), or None, and then the flush task ends:
    /// under the same lock as `push`, so a call queued after this sees no flush task and starts
    /// one.
    fn next(&self) -> Option<(Vec<C>, Vec<Reply>)> {
        let mut s = self.lock();
        if s.calls.is_empty() {
            s.flushing = false;
            return None;
        }
        let n = s.calls.len().min(BATCH_MAX);
        let calls = s.calls.drain(..n).collect();
        let replies = s.replies.drain(..n).collect();
        Some((calls, replies))
    }

    fn queued(&self) -> usize {
        self.lock().calls.len()
    }
}

/// Held by a flush task: should the store call panic, the next call starts a new task (the
/// batch in flight answers UNAVAILABLE: its senders are dropped).
struct Flushing<'a, C>(&'a Batch<C>);

impl<C> Drop for Flushing<'_, C> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().flushing = false;
        }
    }
}

/// The calls of a batch the store answered `Unavailable`, by index.
fn unavailable(outcomes: &Outcomes) -> Vec<usize> {
    outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Err(StoreError::Unavailable { .. })))
        .map(|(i, _)| i)
        .collect()
}

/// Puts the second attempt's outcomes at the indexes `again` of the first attempt's.
fn replace(outcomes: &mut Outcomes, again: &[usize], second: Outcomes) {
    for (&i, outcome) in again.iter().zip(second) {
        if let Some(slot) = outcomes.get_mut(i) {
            *slot = outcome;
        }
    }
}

/// A kind of batched call: what one store call does with a batch of them.
#[async_trait::async_trait]
trait Batched: Clone + Send + Sync + 'static {
    /// Its name in logs.
    const WHAT: &'static str;
    async fn send(store: &dyn WaitingRoomStore, calls: &[Self], now: DateTime<Utc>) -> Outcomes;
}

#[async_trait::async_trait]
impl Batched for (ClientKey, TicketId) {
    const WHAT: &'static str = "join";
    async fn send(store: &dyn WaitingRoomStore, calls: &[Self], now: DateTime<Utc>) -> Outcomes {
        store.join_batch(calls, now).await
    }
}

#[async_trait::async_trait]
impl Batched for TicketId {
    const WHAT: &'static str = "status";
    async fn send(store: &dyn WaitingRoomStore, calls: &[Self], now: DateTime<Utc>) -> Outcomes {
        store.status_batch(calls, now).await
    }
}

/// Hands every caller of a batch its own outcome (a caller gone meanwhile is skipped).
fn deliver(replies: Vec<Reply>, outcomes: Outcomes) {
    let mut outcomes = outcomes.into_iter();
    for reply in replies {
        let outcome = outcomes.next().unwrap_or_else(|| {
            Err(StoreError::corrupt(
                "a batch answered fewer calls than it took",
            ))
        });
        let _ = reply.send(outcome);
    }
}

/// A batched call's outcome; its batch lost (the flush task died) answers UNAVAILABLE.
fn received(
    outcome: Result<Result<TicketView, StoreError>, oneshot::error::RecvError>,
) -> Result<TicketView, StoreError> {
    outcome.unwrap_or_else(|_| {
        Err(StoreError::Unavailable {
            detail: "the waiting room's batched call was lost".into(),
        })
    })
}

fn settings_unknown() -> StoreError {
    StoreError::Unavailable {
        detail: "the waiting room's settings could not be read lately: gated calls are refused until they are".into(),
    }
}

/// How often a watched waiter is heartbeated in the store (room time): twice per waiter
/// timeout. A beat that fails (store down) is sent again at the next tick, so a waiter goes
/// unseen for half the timeout plus the ticks until the store answers; the other half is the
/// margin for the replicas' clock skew (the step counts silence in the stepping replica's
/// clock) and a slow tick. The room's outage rule (`room_lib.lua` `step`, `resumed_ms`) keeps
/// places through a longer outage. Every third of the timeout cost 50 % more heartbeats (the
/// largest per-waiter cost in the store) for a margin nobody needed.
fn beat_period(config: &RoomConfig) -> chrono::Duration {
    chrono::Duration::milliseconds(i64::from(config.waiter_timeout_secs) * 1000 / 2)
}

/// One replica's open Watch streams, by ticket.
#[derive(Default)]
struct Watchers {
    tickets: HashMap<TicketId, Watched>,
    /// The last event applied; None while nobody watches.
    cursor: Option<u64>,
    /// `(seq, number)` of the last events applied, oldest first.
    recent: VecDeque<(u64, u64)>,
    rate_per_minute: f64,
    /// When closed streams were last dropped (`PRUNE_EVERY`).
    pruned_at: Option<Instant>,
}

/// A watched waiting ticket: what its streams were last told and what it is now.
struct Watched {
    client_key: ClientKey,
    number: u64,
    /// Live waiters ahead, counting every event up to `seq`.
    ahead: u64,
    seq: u64,
    /// `ahead` is unknown (the log was trimmed past it): re-read before telling positions.
    stale: bool,
    sent_ahead: u64,
    sent_wait: u32,
    sent_at: Instant,
    /// When the store last heard this waiter is alive (room time).
    beaten_at: DateTime<Utc>,
    streams: Vec<Arc<Outbox>>,
}

impl Watched {
    fn view(&self, id: &TicketId, rate_per_minute: f64) -> TicketView {
        TicketView {
            id: id.clone(),
            client_key: self.client_key.clone(),
            number: self.number,
            state: TicketState::Waiting,
            ahead: self.ahead,
            admission_number: 0,
            session_expires_at: None,
            rate_per_minute,
            seq: self.seq,
        }
    }
}

/// A watched ticket as the event that took it out of the line leaves it.
fn event_view(event: &RoomEvent, client_key: ClientKey, rate_per_minute: f64) -> TicketView {
    TicketView {
        id: event.id.clone(),
        client_key,
        number: event.number,
        state: event.state,
        ahead: 0,
        admission_number: event.admission_number,
        session_expires_at: event.session_expires_at,
        rate_per_minute,
        seq: event.seq,
    }
}

/// Watched tickets that left the line: the event, their client key and streams.
type Ended = Vec<(RoomEvent, ClientKey, Vec<Arc<Outbox>>)>;

impl Watchers {
    /// A new entry for a waiting view, caught up with the events this registry applied after
    /// the view was read; stale when they are no longer all at hand.
    fn watched(&mut self, view: &TicketView) -> Watched {
        let now = Instant::now();
        let mut entry = Watched {
            client_key: view.client_key.clone(),
            number: view.number,
            ahead: view.ahead,
            seq: view.seq,
            stale: false,
            sent_ahead: view.ahead,
            sent_wait: view.estimated_wait_secs(),
            sent_at: now,
            // The status read was a heartbeat (`watch` sets its time).
            beaten_at: DateTime::<Utc>::MIN_UTC,
            streams: Vec::new(),
        };
        self.catch_up(&mut entry, view);
        if self.cursor.is_none() {
            self.cursor = Some(view.seq);
        }
        entry
    }

    /// Applies to `entry` (read at `view.seq`) the recent events after it.
    fn catch_up(&self, entry: &mut Watched, view: &TicketView) {
        let Some(cursor) = self.cursor else {
            return;
        };
        if view.seq >= cursor {
            return; // the sync applies the later events, skipping those up to `seq`
        }
        let covered = self
            .recent
            .front()
            .is_some_and(|(oldest, _)| *oldest <= view.seq + 1);
        if !covered {
            entry.stale = true;
            return;
        }
        for (seq, number) in &self.recent {
            if *seq <= view.seq {
                continue;
            }
            if *number == view.number {
                // It left the line meanwhile: a re-read tells how.
                entry.stale = true;
            } else if *number < view.number {
                entry.ahead = entry.ahead.saturating_sub(1);
            }
        }
        entry.seq = cursor;
    }

    /// Drops closed streams and tickets nobody watches any more.
    fn prune(&mut self) {
        self.tickets.retain(|_, e| {
            e.streams.retain(|s| !s.is_closed());
            !e.streams.is_empty()
        });
    }

    /// Applies events in sequence order: the watched tickets among them leave the registry
    /// (returned, to be told), everyone else's `ahead` drops by the lower numbers that left.
    fn apply(&mut self, events: &[RoomEvent], head: u64) -> Ended {
        let mut ended = Vec::new();
        let Some(last) = events.last() else {
            if self.cursor.is_none() {
                self.cursor = Some(head);
            }
            return ended;
        };
        let last_seq = last.seq;
        let first_seq = events[0].seq;
        for event in events {
            self.recent.push_back((event.seq, event.number));
            if let Some(e) = self.tickets.remove(&event.id) {
                ended.push((event.clone(), e.client_key, e.streams));
            }
        }
        while self.recent.len() > RECENT_EVENTS {
            self.recent.pop_front();
        }
        let mut numbers: Vec<u64> = events.iter().map(|e| e.number).collect();
        numbers.sort_unstable();
        for e in self.tickets.values_mut() {
            if e.seq >= last_seq {
                continue;
            }
            let below = if e.seq < first_seq {
                numbers.partition_point(|n| *n < e.number) as u64
            } else {
                events
                    .iter()
                    .filter(|ev| ev.seq > e.seq && ev.number < e.number)
                    .count() as u64
            };
            e.ahead = e.ahead.saturating_sub(below);
            e.seq = last_seq;
        }
        self.cursor = Some(last_seq);
        ended
    }

    /// Calls `send` for every entry whose position or estimate moved by the step and whose
    /// streams heard nothing for the position interval, or heard nothing for the heartbeat
    /// interval.
    fn messages(
        &mut self,
        options: &WatchOptions,
        now: Instant,
        mut send: impl FnMut(Arc<Outbox>, TicketView),
    ) {
        let rate = self.rate_per_minute;
        for (id, e) in &mut self.tickets {
            let wait = estimate_wait_secs(e.ahead, rate);
            let quiet = now.duration_since(e.sent_at);
            let moved = !e.stale
                && quiet >= options.position_interval
                && (options.moved(e.sent_ahead, e.ahead)
                    || options.moved(u64::from(e.sent_wait), u64::from(wait)));
            if !moved && quiet < options.heartbeat {
                continue;
            }
            if !e.stale {
                e.sent_ahead = e.ahead;
                e.sent_wait = wait;
            }
            e.sent_at = now;
            let mut view = e.view(id, rate);
            view.ahead = e.sent_ahead;
            for s in &e.streams {
                send(s.clone(), view.clone());
            }
        }
    }

    /// Takes an exact re-read of a stale entry: Some((streams, last)) to tell.
    fn refresh(&mut self, view: &TicketView) -> Option<(Vec<Arc<Outbox>>, bool)> {
        if view.state != TicketState::Waiting {
            let e = self.tickets.remove(&view.id)?;
            return Some((e.streams, true));
        }
        let fresh = self.watched(view);
        let e = self.tickets.get_mut(&view.id)?;
        if fresh.stale {
            return None; // still behind: next tick
        }
        e.ahead = fresh.ahead;
        e.seq = fresh.seq;
        e.stale = false;
        e.sent_ahead = e.ahead;
        e.sent_wait = fresh.sent_wait;
        e.sent_at = Instant::now();
        Some((e.streams.clone(), false))
    }
}

/// Where the registry leaves a stream's next message: the latest one wins (a watcher needs
/// only the newest status, and a slow reader never holds up the tick).
#[derive(Default)]
pub struct Outbox {
    state: Mutex<OutboxState>,
}

#[derive(Default)]
struct OutboxState {
    next: Option<Seen>,
    /// End the stream after `next`.
    last: bool,
    /// The stream was dropped (the watcher went away).
    closed: bool,
    waker: Option<Waker>,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, seen: Seen, last: bool) {
        let waker = {
            let mut s = self.lock();
            if s.last {
                return; // already ended
            }
            s.next = Some(seen);
            s.last = last;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ends the stream without a further message.
    fn finish(&self) {
        let waker = {
            let mut s = self.lock();
            s.last = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// The receiving end of one Watch stream.
pub struct WatchFeed {
    outbox: Arc<Outbox>,
    closes: Arc<AtomicUsize>,
}

impl tokio_stream::Stream for WatchFeed {
    type Item = Seen;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Seen>> {
        let mut s = self.outbox.lock();
        if let Some(seen) = s.next.take() {
            return Poll::Ready(Some(seen));
        }
        if s.last {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for WatchFeed {
    fn drop(&mut self) {
        self.outbox.lock().closed = true;
        self.closes.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(number: u64, ahead: u64, seq: u64) -> TicketView {
        TicketView {
            id: TicketId::generate(),
            client_key: ClientKey::stored("ref").unwrap_or_else(|| unreachable!()),
            number,
            state: TicketState::Waiting,
            ahead,
            admission_number: 0,
            session_expires_at: None,
            rate_per_minute: 60.0,
            seq,
        }
    }

    fn left(seq: u64, number: u64) -> RoomEvent {
        RoomEvent {
            seq,
            id: TicketId::generate(),
            number,
            state: TicketState::Left,
            admission_number: 0,
            session_expires_at: None,
        }
    }

    #[test]
    fn the_step_is_a_share_of_the_value_last_sent_and_at_least_one() {
        let o = WatchOptions {
            position_step_percent: 10,
            ..WatchOptions::default()
        };
        assert!(!o.moved(100, 91));
        assert!(o.moved(100, 90));
        assert!(o.moved(5, 4), "near the front every move counts");
        assert!(!o.moved(7, 7));
        let every = WatchOptions {
            position_step_percent: 0,
            ..o
        };
        assert!(every.moved(1_000_000, 999_999));
    }

    /// Near the front every step moves a waiter by more than the step; the move is told once
    /// per position interval (deferred to its end, not dropped), never once per tick.
    #[test]
    fn a_move_is_told_at_most_once_per_position_interval() {
        let o = WatchOptions {
            heartbeat: Duration::from_secs(3),
            position_step_percent: 10,
            position_interval: Duration::from_secs(1),
            max_watchers_per_ticket: 4,
        };
        let mut w = Watchers::default();
        let v = view(6, 5, 10);
        let mut e = w.watched(&v);
        let t0 = e.sent_at;
        e.streams.push(Arc::new(Outbox::default()));
        w.tickets.insert(v.id.clone(), e);
        w.rate_per_minute = 60.0;
        let told = |w: &mut Watchers, at: Instant, o: &WatchOptions| {
            let mut got = Vec::new();
            w.messages(o, at, |_, view| got.push(view.ahead));
            got
        };
        // Two people ahead leave 200 ms after the first message: moved by 40 %, held back.
        w.apply(&[left(11, 1), left(12, 2)], 12);
        assert!(told(&mut w, t0 + Duration::from_millis(200), &o).is_empty());
        // At the interval's end the latest position goes out, once.
        assert_eq!(told(&mut w, t0 + Duration::from_millis(1_000), &o), vec![3]);
        assert!(told(&mut w, t0 + Duration::from_millis(1_100), &o).is_empty());
        // With no interval the same move is told at once.
        let at_once = WatchOptions {
            position_interval: Duration::ZERO,
            ..o
        };
        w.apply(&[left(13, 3)], 13);
        assert_eq!(
            told(&mut w, t0 + Duration::from_millis(1_200), &at_once),
            vec![2]
        );
    }

    #[test]
    fn a_watched_waiter_is_heartbeated_twice_per_waiter_timeout() {
        let config = RoomConfig {
            waiter_timeout_secs: 60,
            ..RoomConfig::default()
        };
        assert_eq!(beat_period(&config), chrono::Duration::seconds(30));
        let shortest = RoomConfig {
            waiter_timeout_secs: 5,
            ..RoomConfig::default()
        };
        assert_eq!(
            beat_period(&shortest),
            chrono::Duration::milliseconds(2_500)
        );
    }

    /// Events apply to a view only after the sequence it was read at, whether they arrive in
    /// the next sync or were applied before the view registered (the recent ring).
    #[test]
    fn events_count_once_for_every_view_whenever_it_registered() {
        let mut w = Watchers::default();
        // A view at seq 10: 5 ahead (numbers 1..=5 live), it is number 6.
        let early = view(6, 5, 10);
        let e = w.watched(&early);
        w.tickets.insert(early.id.clone(), e);
        assert_eq!(w.cursor, Some(10));
        // Events 11-12: numbers 2 and 9 leave.
        w.apply(&[left(11, 2), left(12, 9)], 12);
        assert_eq!(w.tickets[&early.id].ahead, 4);
        // A view read at seq 11 (it saw number 2 leave, not 9) registers after the sync.
        let late = view(10, 7, 11);
        let e = w.watched(&late);
        assert_eq!((e.ahead, e.seq, e.stale), (6, 12, false));
        w.tickets.insert(late.id.clone(), e);
        // A view read at seq 12 and a sync still answering events up to 12 and then 13.
        let fresh = view(11, 6, 12);
        let e = w.watched(&fresh);
        w.tickets.insert(fresh.id.clone(), e);
        w.apply(&[left(13, 1)], 13);
        assert_eq!(w.tickets[&early.id].ahead, 3);
        assert_eq!(w.tickets[&late.id].ahead, 5);
        assert_eq!(w.tickets[&fresh.id].ahead, 5);
        // A view older than the ring is stale (re-read), never guessed.
        w.recent.clear();
        let old = view(20, 9, 5);
        assert!(w.watched(&old).stale);
    }
}
