//! The embedded waiting room: one mutex, every operation one critical section.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use crate::domain::room::{
    admit_count, is_stale, resumed_at, Bucket, ClientKey, RoomConfig, RoomEvent, RoomStats, Synced,
    TicketId, TicketState, TicketView, EVENT_LOG_KEEP, EXPIRE_PER_STEP, RATE_WINDOW_SECS,
};
use crate::domain::Error;
use crate::store::room::{Outcomes, TickCall, Ticked, WaitingRoomStore, ENDED_TICKET_TTL_SECS};
use crate::store::StoreError;

#[derive(Debug, Clone)]
struct Ticket {
    id: TicketId,
    client_key: ClientKey,
    number: u64,
    state: TicketState,
    last_seen: DateTime<Utc>,
    admission_number: u64,
    session_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct Room {
    config: RoomConfig,
    bucket: Option<Bucket>,
    enabled_since: Option<DateTime<Utc>>,
    last_step_ms: Option<i64>,
    resumed_ms: Option<i64>,
    /// Room time of the last sweep (forgetting old ended tickets), as room_lib.lua's `swept_ms`.
    swept_ms: Option<i64>,
    /// When the last tick stepped (this process's clock: the step lease, as Redis's TIME).
    step_at: Option<Instant>,
    last_number: u64,
    admitted_total: u64,
    expired_total: u64,
    tickets: HashMap<TicketId, Ticket>,
    by_client: HashMap<ClientKey, TicketId>,
    /// Live waiters by ticket number, ascending (numbers only grow, so joining appends).
    waiting: VecDeque<(u64, TicketId)>,
    active: HashMap<TicketId, DateTime<Utc>>,
    /// Admission instants within the rate window.
    admissions: VecDeque<DateTime<Utc>>,
    /// Ended tickets by end time, to forget them after `ENDED_TICKET_TTL_SECS`.
    ended: VecDeque<(DateTime<Utc>, TicketId)>,
    /// Admitted sessions claimed by a call in flight, until the lease ends.
    claims: HashMap<TicketId, DateTime<Utc>>,
    /// Tickets leaving the line, the last `EVENT_LOG_KEEP` (what watch registries read).
    log: VecDeque<RoomEvent>,
    seq: u64,
}

#[derive(Debug, Default)]
pub struct MemoryWaitingRoom {
    room: Mutex<Room>,
}

impl MemoryWaitingRoom {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Room> {
        self.room.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Room {
    fn rate_per_minute(&self, now: DateTime<Utc>) -> f64 {
        // Over the last minute, or since the observation began (enabling or the last unpause)
        // if later, counting only the admissions made since then (room_lib.lua `rate`).
        let window_start = now - Duration::seconds(RATE_WINDOW_SECS);
        let began = self.enabled_since;
        let seen = self
            .admissions
            .iter()
            .filter(|t| **t > window_start && began.is_none_or(|b| **t >= b))
            .count();
        if seen == 0 {
            return f64::from(self.config.admissions_per_minute);
        }
        let since = began.unwrap_or(window_start).max(window_start);
        let window_ms = (now - since).num_milliseconds().max(1000) as f64;
        seen as f64 * 60_000.0 / window_ms
    }

    fn view(&self, t: &Ticket, now: DateTime<Utc>) -> TicketView {
        let ahead = if t.state == TicketState::Waiting {
            self.waiting.partition_point(|(n, _)| *n < t.number) as u64
        } else {
            0
        };
        TicketView {
            id: t.id.clone(),
            client_key: t.client_key.clone(),
            number: t.number,
            state: t.state,
            ahead,
            admission_number: t.admission_number,
            session_expires_at: t.session_expires_at,
            rate_per_minute: self.rate_per_minute(now),
            seq: self.seq,
        }
    }

    /// Takes the next place for `client_key`, or returns the live one it holds (a refresh).
    fn join(
        &mut self,
        client_key: &ClientKey,
        fresh: &TicketId,
        now: DateTime<Utc>,
    ) -> Result<TicketView, StoreError> {
        if !self.config.enabled {
            return Err(Error::WaitingRoomDisabled.into());
        }
        if let Some(id) = self.by_client.get(client_key).cloned() {
            if let Some(t) = self.tickets.get_mut(&id) {
                if t.state.is_live() {
                    if t.state == TicketState::Waiting && t.last_seen < now {
                        t.last_seen = now;
                    }
                    let t = t.clone();
                    return Ok(self.view(&t, now));
                }
            }
        }
        if self.tickets.contains_key(fresh) {
            return Err(StoreError::corrupt("a fresh ticket id already exists"));
        }
        self.last_number += 1;
        let ticket = Ticket {
            id: fresh.clone(),
            client_key: client_key.clone(),
            number: self.last_number,
            state: TicketState::Waiting,
            last_seen: now,
            admission_number: 0,
            session_expires_at: None,
        };
        self.waiting.push_back((ticket.number, fresh.clone()));
        self.by_client.insert(client_key.clone(), fresh.clone());
        self.tickets.insert(fresh.clone(), ticket.clone());
        Ok(self.view(&ticket, now))
    }

    /// The ticket as its holder sees it; a waiter's read is its heartbeat.
    fn status(&mut self, ticket: &TicketId, now: DateTime<Utc>) -> Result<TicketView, StoreError> {
        let t = self.tickets.get_mut(ticket).ok_or(Error::TicketNotFound)?;
        if t.state == TicketState::Waiting && t.last_seen < now {
            t.last_seen = now;
        }
        let t = t.clone();
        Ok(self.view(&t, now))
    }

    /// Appends "`t` left the line" to the event log.
    fn log_exit(&mut self, t: &Ticket) {
        self.seq += 1;
        self.log.push_back(RoomEvent {
            seq: self.seq,
            id: t.id.clone(),
            number: t.number,
            state: t.state,
            admission_number: t.admission_number,
            session_expires_at: t.session_expires_at,
        });
        while self.log.len() as u64 > EVENT_LOG_KEEP {
            self.log.pop_front();
        }
    }

    fn is_stale_waiter(&self, id: &TicketId, resumed: i64, now_ms: i64) -> bool {
        self.tickets.get(id).is_some_and(|t| {
            is_stale(
                t.last_seen.timestamp_millis(),
                resumed,
                now_ms,
                &self.config,
            )
        })
    }

    /// Moves a live ticket to an ended state, out of the queue and the active set.
    fn finish(&mut self, id: &TicketId, state: TicketState, now: DateTime<Utc>) {
        let Some(t) = self.tickets.get_mut(id) else {
            return;
        };
        if !t.state.is_live() {
            return;
        }
        if t.state == TicketState::Waiting {
            let number = t.number;
            if let Ok(i) = self.waiting.binary_search_by_key(&number, |(n, _)| *n) {
                self.waiting.remove(i);
            }
        }
        self.active.remove(id);
        if state == TicketState::Expired {
            self.expired_total += 1;
        }
        let was_waiting = t.state == TicketState::Waiting;
        t.state = state;
        let t = t.clone();
        if self.by_client.get(&t.client_key) == Some(id) {
            self.by_client.remove(&t.client_key);
        }
        self.ended.push_back((now, id.clone()));
        if was_waiting {
            self.log_exit(&t);
        }
    }

    /// Ends expired sessions, drops silent waiters (at most `EXPIRE_PER_STEP`), forgets old
    /// ended tickets (as many); returns the instant silence is counted from.
    fn expire_and_drop(&mut self, now: DateTime<Utc>) -> i64 {
        let over: Vec<TicketId> = self
            .active
            .iter()
            .filter(|(_, exp)| **exp <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in over {
            self.finish(&id, TicketState::Expired, now);
        }
        let now_ms = now.timestamp_millis();
        let resumed = resumed_at(self.last_step_ms, self.resumed_ms, now_ms);
        self.last_step_ms = Some(now_ms);
        self.resumed_ms = Some(resumed);
        // Bounded like the Redis step, and in its order: the oldest heartbeat first, ties by
        // ticket id (room_lib.lua's ZRANGEBYSCORE of `seen`); the rest go in the next steps,
        // and admission skips any still in line.
        let mut stale: Vec<(i64, String, TicketId)> = self
            .waiting
            .iter()
            .filter(|(_, id)| self.is_stale_waiter(id, resumed, now_ms))
            .filter_map(|(_, id)| {
                let t = self.tickets.get(id)?;
                Some((t.last_seen.timestamp_millis(), id.to_string(), id.clone()))
            })
            .collect();
        stale.sort_unstable();
        stale.truncate(EXPIRE_PER_STEP);
        for (_, _, id) in stale {
            self.finish(&id, TicketState::Expired, now);
        }
        // Once per second of room time, or at every step while a sweep finds a full bound.
        let sweep = self
            .swept_ms
            .is_none_or(|swept| now_ms - swept >= 1000 || now_ms < swept);
        if sweep {
            let forget_before = now - Duration::seconds(ENDED_TICKET_TTL_SECS);
            let mut forgot = 0;
            while forgot < EXPIRE_PER_STEP {
                match self.ended.front() {
                    Some((at, _)) if *at <= forget_before => {}
                    _ => break,
                }
                if let Some((_, id)) = self.ended.pop_front() {
                    self.tickets.remove(&id);
                }
                forgot += 1;
            }
            if forgot < EXPIRE_PER_STEP {
                self.swept_ms = Some(now_ms);
            }
        }
        let window_start = now - Duration::seconds(RATE_WINDOW_SECS);
        while self.admissions.front().is_some_and(|t| *t <= window_start) {
            self.admissions.pop_front();
        }
        resumed
    }

    /// One admission step (`WaitingRoomStore::advance`; room_lib.lua's `step`).
    fn step(&mut self, now: DateTime<Utc>) -> u64 {
        let resumed = self.expire_and_drop(now);
        let now_ms = now.timestamp_millis();
        let config = self.config;
        let Some(mut bucket) = self.bucket else {
            return 0;
        };
        bucket.refill(&config, now);
        let n = admit_count(
            &config,
            bucket.tokens,
            self.active.len() as u64,
            self.waiting.len() as u64,
        );
        let mut admitted = 0;
        // Silent waiters the bounded drop has not reached yet are expired, never admitted;
        // they count against the same per-step bound.
        let mut skips = EXPIRE_PER_STEP;
        while admitted < n {
            let Some((_, id)) = self.waiting.front().cloned() else {
                break;
            };
            if self.is_stale_waiter(&id, resumed, now_ms) {
                if skips == 0 {
                    break;
                }
                skips -= 1;
                self.finish(&id, TicketState::Expired, now);
                continue;
            }
            self.waiting.pop_front();
            self.admitted_total += 1;
            admitted += 1;
            let admission_number = self.admitted_total;
            let expires = now + config.session_duration();
            let Some(t) = self.tickets.get_mut(&id) else {
                continue;
            };
            t.state = TicketState::Admitted;
            t.admission_number = admission_number;
            t.session_expires_at = Some(expires);
            let t = t.clone();
            self.log_exit(&t);
            self.active.insert(id, expires);
            self.admissions.push_back(now);
        }
        bucket.tokens -= admitted as f64;
        self.bucket = Some(bucket);
        admitted
    }

    /// `WaitingRoomStore::sync` (room_sync.lua).
    fn sync(
        &mut self,
        after: Option<u64>,
        heartbeat: &[TicketId],
        max_events: usize,
        now: DateTime<Utc>,
    ) -> Synced {
        for id in heartbeat {
            if let Some(t) = self.tickets.get_mut(id) {
                if t.state == TicketState::Waiting && t.last_seen < now {
                    t.last_seen = now;
                }
            }
        }
        let head = self.seq;
        let oldest = self.log.front().map_or(head + 1, |e| e.seq);
        let (gap, events) = match after {
            None => (false, Vec::new()),
            Some(after) if after >= head => (false, Vec::new()),
            Some(after) if after + 1 < oldest => (true, Vec::new()),
            Some(after) => {
                let skip = usize::try_from(after + 1 - oldest).unwrap_or(usize::MAX);
                let events = self
                    .log
                    .iter()
                    .skip(skip)
                    .take(max_events)
                    .cloned()
                    .collect();
                (false, events)
            }
        };
        Synced {
            head,
            gap,
            events,
            rate_per_minute: self.rate_per_minute(now),
        }
    }
}

#[async_trait]
impl WaitingRoomStore for MemoryWaitingRoom {
    async fn configure(
        &self,
        config: &RoomConfig,
        now: DateTime<Utc>,
    ) -> Result<RoomConfig, StoreError> {
        let mut room = self.lock();
        if config.enabled && !room.config.enabled {
            room.bucket = Some(Bucket::full(config, now));
            room.enabled_since = Some(now);
        } else if config.enabled && room.config.paused && !config.paused {
            // Unpaused: the observed rate's window starts afresh (a pause admits nobody).
            room.enabled_since = Some(now);
        }
        room.config = *config;
        Ok(room.config)
    }

    async fn config(&self) -> Result<RoomConfig, StoreError> {
        Ok(self.lock().config)
    }

    async fn join(
        &self,
        client_key: &ClientKey,
        fresh: &TicketId,
        now: DateTime<Utc>,
    ) -> Result<TicketView, StoreError> {
        self.lock().join(client_key, fresh, now)
    }

    async fn join_batch(&self, joins: &[(ClientKey, TicketId)], now: DateTime<Utc>) -> Outcomes {
        // One critical section, joins in order: what the Redis script does in one call.
        let mut room = self.lock();
        joins
            .iter()
            .map(|(client_key, fresh)| room.join(client_key, fresh, now))
            .collect()
    }

    async fn status(
        &self,
        ticket: &TicketId,
        now: DateTime<Utc>,
    ) -> Result<TicketView, StoreError> {
        self.lock().status(ticket, now)
    }

    async fn status_batch(&self, tickets: &[TicketId], now: DateTime<Utc>) -> Outcomes {
        let mut room = self.lock();
        tickets.iter().map(|t| room.status(t, now)).collect()
    }

    async fn end(
        &self,
        ticket: &TicketId,
        state: TicketState,
        now: DateTime<Utc>,
    ) -> Result<TicketView, StoreError> {
        let mut room = self.lock();
        if !room.tickets.contains_key(ticket) {
            return Err(Error::TicketNotFound.into());
        }
        room.finish(ticket, state, now);
        let t = room
            .tickets
            .get(ticket)
            .cloned()
            .ok_or(Error::TicketNotFound)?;
        Ok(room.view(&t, now))
    }

    async fn advance(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(self.lock().step(now))
    }

    async fn sync(
        &self,
        after: Option<u64>,
        heartbeat: &[TicketId],
        max_events: usize,
        now: DateTime<Utc>,
    ) -> Result<Synced, StoreError> {
        Ok(self.lock().sync(after, heartbeat, max_events, now))
    }

    async fn tick(&self, call: &TickCall<'_>) -> Result<Ticked, StoreError> {
        // One critical section, in room_tick.lua's order: settings, step if due, sync.
        let mut room = self.lock();
        let config = room.config;
        let mut admitted = None;
        if config.enabled {
            let at = Instant::now();
            let due = room
                .step_at
                .is_none_or(|last| at.saturating_duration_since(last) >= call.lease);
            if due {
                room.step_at = Some(at);
                admitted = Some(room.step(call.now));
            }
        }
        let synced = call
            .sync
            .map(|s| room.sync(s.after, s.heartbeat, s.max_events, call.now));
        Ok(Ticked {
            config,
            admitted,
            synced,
        })
    }

    async fn check_session(&self, ticket: &TicketId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let room = self.lock();
        match room.active.get(ticket) {
            Some(expires) if *expires > now => Ok(()),
            _ => Err(Error::AdmissionRevoked.into()),
        }
    }

    async fn claim_session(&self, ticket: &TicketId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut room = self.lock();
        match room.active.get(ticket) {
            Some(expires) if *expires > now => {}
            _ => return Err(Error::AdmissionRevoked.into()),
        }
        room.claims.retain(|_, until| *until > now);
        if room.claims.contains_key(ticket) {
            return Err(Error::AdmissionInUse.into());
        }
        room.claims.insert(
            ticket.clone(),
            now + chrono::Duration::seconds(crate::store::room::CLAIM_LEASE_SECS),
        );
        Ok(())
    }

    async fn release_session(&self, ticket: &TicketId) -> Result<(), StoreError> {
        self.lock().claims.remove(ticket);
        Ok(())
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<RoomStats, StoreError> {
        // Read only, like the Redis script: silent waiters leave at the next step.
        let room = self.lock();
        Ok(RoomStats {
            config: room.config,
            waiting: room.waiting.len() as u64,
            active: room.active.len() as u64,
            admitted_total: room.admitted_total,
            expired_total: room.expired_total,
            last_ticket_number: room.last_number,
            observed_per_minute: room.rate_per_minute(now),
        })
    }
}
