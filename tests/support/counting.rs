//! Store seams that count what goes through them: an `Inventory` that counts the slot reads and
//! can hold them at a gate (the calendar cache tests: how many store reads did the calls
//! cost?), and a `WaitingRoomStore` that counts every call by method and the admission ticker's
//! ticks (`TestServer::settle` waits for whole ticks with it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;

use slotd::domain::lifecycle::{
    EventStart, Hold, HoldConfirmation, HoldId, HoldRelease, HoldRequest, Reschedule,
};
use slotd::domain::rules::{
    AuditReport, Booking, Cancellation, DateRange, ManifestQuery, OpenPlan,
};
use slotd::domain::types::{
    Appointment, CategoryId, ConfirmationNumber, DayRef, PassportNumber, PostId, Receipt, SlotRef,
    SlotState, SlotTime,
};
use slotd::domain::waitlist::{EntryId, WaitlistEntry, WaitlistJoin};
use slotd::store::room::WaitingRoomStore;
use slotd::store::{EventPage, Inventory, ManifestPage, OpenReport, Reclaimed, StoreError};

pub struct CountingStore {
    inner: Arc<dyn Inventory>,
    slot_reads: AtomicU64,
    /// `retire_past_appointments` calls answered: the last step of every hold-sweeper round.
    sweeps: AtomicU64,
    gated: AtomicBool,
    gate: Semaphore,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn Inventory>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            slot_reads: AtomicU64::new(0),
            sweeps: AtomicU64::new(0),
            gated: AtomicBool::new(false),
            gate: Semaphore::new(0),
        })
    }

    /// `slots` calls so far (each one store read of a range).
    pub fn slot_reads(&self) -> u64 {
        self.slot_reads.load(Ordering::SeqCst)
    }

    /// Hold-sweeper rounds completed through this store so far (see `sweeps`).
    pub fn sweeps(&self) -> u64 {
        self.sweeps.load(Ordering::SeqCst)
    }

    /// From now on `slots` waits at the gate until `open_gate`.
    pub fn close_gate(&self) {
        self.gated.store(true, Ordering::SeqCst);
    }

    pub fn open_gate(&self) {
        self.gated.store(false, Ordering::SeqCst);
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

#[async_trait]
impl Inventory for CountingStore {
    async fn open_slots(
        &self,
        plan: &OpenPlan,
        now: DateTime<Utc>,
    ) -> Result<OpenReport, StoreError> {
        self.inner.open_slots(plan, now).await
    }
    async fn set_capacity(
        &self,
        slot: &SlotRef,
        capacity: u32,
        now: DateTime<Utc>,
    ) -> Result<SlotState, StoreError> {
        self.inner.set_capacity(slot, capacity, now).await
    }
    async fn close_slots(&self, day: &DayRef, time: Option<SlotTime>) -> Result<u32, StoreError> {
        self.inner.close_slots(day, time).await
    }
    async fn slots(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<Vec<SlotState>, StoreError> {
        self.slot_reads.fetch_add(1, Ordering::SeqCst);
        if self.gated.load(Ordering::SeqCst) {
            let _permit = self.gate.acquire().await;
        }
        self.inner.slots(post, category, range).await
    }
    async fn book(
        &self,
        booking: &Booking,
        confirmation: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        self.inner.book(booking, confirmation, now).await
    }
    async fn appointment(
        &self,
        confirmation: &ConfirmationNumber,
        passport: &PassportNumber,
    ) -> Result<Appointment, StoreError> {
        self.inner.appointment(confirmation, passport).await
    }
    async fn cancel(
        &self,
        cancellation: &Cancellation,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        self.inner.cancel(cancellation, now).await
    }
    async fn manifest(&self, query: &ManifestQuery) -> Result<ManifestPage, StoreError> {
        self.inner.manifest(query).await
    }
    async fn register_receipt(&self, receipt: &Receipt) -> Result<(Receipt, bool), StoreError> {
        self.inner.register_receipt(receipt).await
    }
    async fn audit(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<AuditReport, StoreError> {
        self.inner.audit(post, category, range).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn refuse_sold_out_hold(
        &self,
        request: &HoldRequest,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.refuse_sold_out_hold(request, now).await
    }
    async fn hold(
        &self,
        request: &HoldRequest,
        id: &HoldId,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Hold, StoreError> {
        self.inner.hold(request, id, expires_at, now).await
    }
    async fn confirm_hold(
        &self,
        confirmation: &HoldConfirmation,
        number: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        self.inner.confirm_hold(confirmation, number, now).await
    }
    async fn release_hold(
        &self,
        release: &HoldRelease,
        now: DateTime<Utc>,
    ) -> Result<Hold, StoreError> {
        self.inner.release_hold(release, now).await
    }
    async fn find_hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        self.inner.find_hold(id).await
    }
    async fn reclaim_expired_holds(&self, now: DateTime<Utc>) -> Result<Reclaimed, StoreError> {
        self.inner.reclaim_expired_holds(now).await
    }
    async fn retire_passed_waitlist(&self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        self.inner.retire_passed_waitlist(now).await
    }

    async fn retire_past_appointments(&self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        let retired = self.inner.retire_past_appointments(now).await;
        self.sweeps.fetch_add(1, Ordering::SeqCst);
        retired
    }
    async fn reschedule(
        &self,
        reschedule: &Reschedule,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        self.inner.reschedule(reschedule, limit, now).await
    }
    async fn events(&self, start: EventStart, limit: u32) -> Result<EventPage, StoreError> {
        self.inner.events(start, limit).await
    }
    async fn join_waitlist(
        &self,
        join: &WaitlistJoin,
        id: &EntryId,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<WaitlistEntry, StoreError> {
        self.inner.join_waitlist(join, id, limit, now).await
    }
    async fn waitlist_entry(&self, id: &EntryId) -> Result<WaitlistEntry, StoreError> {
        self.inner.waitlist_entry(id).await
    }
    async fn leave_waitlist(
        &self,
        id: &EntryId,
        now: DateTime<Utc>,
    ) -> Result<WaitlistEntry, StoreError> {
        self.inner.leave_waitlist(id, now).await
    }
    async fn set_waitlist_share(
        &self,
        post: &PostId,
        category: &CategoryId,
        percent: u32,
    ) -> Result<u32, StoreError> {
        self.inner.set_waitlist_share(post, category, percent).await
    }
}

/// The waiting room seen through its store seam: every call counted by method.
pub struct CountingRoom {
    inner: Arc<dyn WaitingRoomStore>,
    calls: std::sync::Mutex<HashMap<&'static str, u64>>,
    /// `tick` calls begun, never reset: the admission ticker makes one per tick, nothing else.
    ticks: AtomicU64,
    /// When the latest tick that stepped (or had nothing to step: room off, store down) began.
    settled_at: std::sync::Mutex<Option<std::time::Instant>>,
}

impl CountingRoom {
    pub fn new(inner: Arc<dyn WaitingRoomStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: std::sync::Mutex::new(HashMap::new()),
            ticks: AtomicU64::new(0),
            settled_at: std::sync::Mutex::new(None),
        })
    }

    fn count(&self, method: &'static str) {
        self.count_n(method, 1);
    }

    fn count_n(&self, method: &'static str, n: u64) {
        *self.calls.lock().unwrap().entry(method).or_default() += n;
    }

    /// Ticks begun so far (see `ticks`).
    pub fn ticks_begun(&self) -> u64 {
        self.ticks.load(Ordering::SeqCst)
    }

    /// Whether a tick that began after `since` has stepped the room (or had nothing to step)
    /// and returned. With the step lease one replica steps per interval, so `settle` asks this of
    /// every server sharing the room.
    pub fn stepped_since(&self, since: std::time::Instant) -> bool {
        self.settled_at.lock().unwrap().is_some_and(|at| at > since)
    }

    /// The calls since the last take, by method.
    pub fn take(&self) -> HashMap<&'static str, u64> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

#[async_trait]
impl WaitingRoomStore for CountingRoom {
    async fn configure(
        &self,
        config: &slotd::domain::room::RoomConfig,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<slotd::domain::room::RoomConfig, slotd::store::StoreError> {
        self.count("configure");
        self.inner.configure(config, now).await
    }
    async fn config(&self) -> Result<slotd::domain::room::RoomConfig, slotd::store::StoreError> {
        self.count("config");
        self.inner.config().await
    }
    async fn join(
        &self,
        client_key: &slotd::domain::room::ClientKey,
        fresh: &slotd::domain::room::TicketId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<slotd::domain::room::TicketView, slotd::store::StoreError> {
        self.count("join");
        self.inner.join(client_key, fresh, now).await
    }
    async fn status(
        &self,
        ticket: &slotd::domain::room::TicketId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<slotd::domain::room::TicketView, slotd::store::StoreError> {
        self.count("status");
        self.inner.status(ticket, now).await
    }
    /// Counted as one `join_batch` call and, per join it carries, one `join`.
    async fn join_batch(
        &self,
        joins: &[(
            slotd::domain::room::ClientKey,
            slotd::domain::room::TicketId,
        )],
        now: chrono::DateTime<chrono::Utc>,
    ) -> slotd::store::room::Outcomes {
        self.count_n("join_batch", 1);
        self.count_n("join", joins.len() as u64);
        self.inner.join_batch(joins, now).await
    }
    /// Counted as one `status_batch` call and, per ticket it reads, one `status`.
    async fn status_batch(
        &self,
        tickets: &[slotd::domain::room::TicketId],
        now: chrono::DateTime<chrono::Utc>,
    ) -> slotd::store::room::Outcomes {
        self.count_n("status_batch", 1);
        self.count_n("status", tickets.len() as u64);
        self.inner.status_batch(tickets, now).await
    }
    async fn end(
        &self,
        ticket: &slotd::domain::room::TicketId,
        state: slotd::domain::room::TicketState,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<slotd::domain::room::TicketView, slotd::store::StoreError> {
        self.count("end");
        self.inner.end(ticket, state, now).await
    }
    async fn sync(
        &self,
        after: Option<u64>,
        heartbeat: &[slotd::domain::room::TicketId],
        max_events: usize,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<slotd::domain::room::Synced, slotd::store::StoreError> {
        self.count("sync");
        self.inner.sync(after, heartbeat, max_events, now).await
    }
    async fn advance(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, slotd::store::StoreError> {
        self.count("advance");
        self.inner.advance(now).await
    }
    /// Counted as one `tick`, and one `step` when the lease let it step.
    async fn tick(
        &self,
        call: &slotd::store::room::TickCall<'_>,
    ) -> Result<slotd::store::room::Ticked, slotd::store::StoreError> {
        let begun = std::time::Instant::now();
        self.ticks.fetch_add(1, Ordering::SeqCst);
        self.count("tick");
        let ticked = self.inner.tick(call).await;
        if ticked.as_ref().is_ok_and(|t| t.admitted.is_some()) {
            self.count("step");
        }
        // Settled: it stepped, or there was nothing to step (room off, or the store down: the
        // tick failed, as every tick will until it answers).
        if ticked
            .as_ref()
            .map_or(true, |t| t.admitted.is_some() || !t.config.enabled)
        {
            let mut at = self.settled_at.lock().unwrap();
            *at = Some(at.map_or(begun, |a| a.max(begun)));
        }
        ticked
    }
    async fn check_session(
        &self,
        ticket: &slotd::domain::room::TicketId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), slotd::store::StoreError> {
        self.count("check_session");
        self.inner.check_session(ticket, now).await
    }
    async fn claim_session(
        &self,
        ticket: &slotd::domain::room::TicketId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), slotd::store::StoreError> {
        self.count("claim_session");
        self.inner.claim_session(ticket, now).await
    }
    async fn release_session(
        &self,
        ticket: &slotd::domain::room::TicketId,
    ) -> Result<(), slotd::store::StoreError> {
        self.count("release_session");
        self.inner.release_session(ticket).await
    }
    async fn stats(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<slotd::domain::room::RoomStats, slotd::store::StoreError> {
        self.count("stats");
        self.inner.stats(now).await
    }
}
