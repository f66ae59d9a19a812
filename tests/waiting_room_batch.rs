//! Joins and status reads in batches (#14 item 3): a replica coalesces its concurrent Join
//! calls (and status reads) into one store call, each caller getting its own outcome. The same
//! bodies run on every backend: the embedded store, Redis and Redis Cluster.

use crate::support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::Semaphore;

use slotd::app::room::Room;
use slotd::domain::admission::AdmissionKeys;
use slotd::domain::clock::{Clock, ManualClock};
use slotd::domain::room::{
    ClientKey, RoomConfig, RoomStats, Synced, TicketId, TicketState, TicketView,
};
use slotd::domain::Error;
use slotd::store::room::{Outcomes, WaitingRoomStore};
use slotd::store::StoreError;

const ADMISSION_KEY: &str = "batch-test-admission-key-0123456789abcdef";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 9, 0, 0).unwrap()
}

fn paused() -> RoomConfig {
    RoomConfig {
        enabled: true,
        paused: true,
        ..RoomConfig::default()
    }
}

fn key(name: &str) -> ClientKey {
    ClientKey::parse(&support::client_key(name)).expect("client key")
}

/// A room store whose batch calls wait at a gate while it is closed, and which records the
/// size of every batch it was given.
struct Gated {
    inner: Arc<dyn WaitingRoomStore>,
    closed: AtomicBool,
    gate: Semaphore,
    join_batches: Mutex<Vec<usize>>,
    /// The next join batch is applied, then answered `Unavailable` (as a timed-out call).
    lose_next_answer: AtomicBool,
}

impl Gated {
    fn new(inner: Arc<dyn WaitingRoomStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            closed: AtomicBool::new(false),
            gate: Semaphore::new(0),
            join_batches: Mutex::new(Vec::new()),
            lose_next_answer: AtomicBool::new(false),
        })
    }

    fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    fn join_batches(&self) -> Vec<usize> {
        self.join_batches.lock().unwrap().clone()
    }
}

#[async_trait]
impl WaitingRoomStore for Gated {
    async fn configure(
        &self,
        config: &RoomConfig,
        now: DateTime<Utc>,
    ) -> Result<RoomConfig, StoreError> {
        self.inner.configure(config, now).await
    }
    async fn config(&self) -> Result<RoomConfig, StoreError> {
        self.inner.config().await
    }
    async fn join(
        &self,
        client_key: &ClientKey,
        fresh: &TicketId,
        now: DateTime<Utc>,
    ) -> Result<TicketView, StoreError> {
        panic!("a replica joins in batches, never one by one ({client_key:?} {fresh:?} {now})")
    }
    async fn join_batch(&self, joins: &[(ClientKey, TicketId)], now: DateTime<Utc>) -> Outcomes {
        self.join_batches.lock().unwrap().push(joins.len());
        if self.closed.load(Ordering::SeqCst) {
            let _permit = self.gate.acquire().await;
        }
        let outcomes = self.inner.join_batch(joins, now).await;
        if self.lose_next_answer.swap(false, Ordering::SeqCst) {
            return outcomes
                .iter()
                .map(|_| {
                    Err(StoreError::Unavailable {
                        detail: "response timed out".into(),
                    })
                })
                .collect();
        }
        outcomes
    }
    async fn status(
        &self,
        ticket: &TicketId,
        now: DateTime<Utc>,
    ) -> Result<TicketView, StoreError> {
        self.inner.status(ticket, now).await
    }
    async fn status_batch(&self, tickets: &[TicketId], now: DateTime<Utc>) -> Outcomes {
        self.inner.status_batch(tickets, now).await
    }
    async fn end(
        &self,
        ticket: &TicketId,
        state: TicketState,
        now: DateTime<Utc>,
    ) -> Result<TicketView, StoreError> {
        self.inner.end(ticket, state, now).await
    }
    async fn sync(
        &self,
        after: Option<u64>,
        heartbeat: &[TicketId],
        max_events: usize,
        now: DateTime<Utc>,
    ) -> Result<Synced, StoreError> {
        self.inner.sync(after, heartbeat, max_events, now).await
    }
    async fn advance(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.advance(now).await
    }
    async fn check_session(&self, ticket: &TicketId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.check_session(ticket, now).await
    }
    async fn claim_session(&self, ticket: &TicketId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.claim_session(ticket, now).await
    }
    async fn release_session(&self, ticket: &TicketId) -> Result<(), StoreError> {
        self.inner.release_session(ticket).await
    }
    async fn stats(&self, now: DateTime<Utc>) -> Result<RoomStats, StoreError> {
        self.inner.stats(now).await
    }
}

/// Polls `done` every 10 ms for up to 60 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// Two replicas, each with its own store handle (on Redis its own connection) behind a gate.
/// While each replica's first join batch waits at its gate, the rest of a burst queues; opened,
/// each replica makes one more store call for all of it. Every caller gets its own place: the
/// numbers of both replicas are distinct and gap-free (one join order), a client key twice in
/// the burst gets one place, and the status reads of the new tickets are one batch too.
async fn a_burst_of_joins_on_two_replicas_is_one_gap_free_order_in_few_store_calls(
    backend: support::backend::Backend,
) {
    const PER_REPLICA: usize = 150;
    let clock = ManualClock::new(t0());
    backend.room().configure(&paused(), t0()).await.unwrap();
    let keys = AdmissionKeys::new(ADMISSION_KEY).unwrap();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let stores = [Gated::new(backend.room()), Gated::new(backend.room())];
    let rooms: Vec<Room> = stores
        .iter()
        .map(|s| Room::new(keys.clone(), s.clone(), shared.clone()))
        .collect();
    for s in &stores {
        s.closed.store(true, Ordering::SeqCst);
    }
    let mut calls = Vec::new();
    for (r, room) in rooms.iter().enumerate() {
        for i in 0..PER_REPLICA {
            let room = room.clone();
            // Replica 0's last caller refreshes its first caller's key inside the burst.
            let name = if r == 0 && i == PER_REPLICA - 1 {
                "burst-0-0".to_string()
            } else {
                format!("burst-{r}-{i}")
            };
            calls.push(tokio::spawn(async move { room.join(&key(&name)).await }));
            if i == 0 {
                // The first call of each replica is its first batch, now at the gate.
                let store = stores[r].clone();
                eventually("the first batch reached the gate", || {
                    store.join_batches() == vec![1]
                })
                .await;
            }
        }
    }
    for room in &rooms {
        eventually("the rest of the burst queued", || {
            room.queued_calls().0 == PER_REPLICA - 1
        })
        .await;
    }
    for s in &stores {
        s.open();
    }
    let mut views = Vec::new();
    for call in calls {
        let (seen, secret) = call.await.unwrap().expect("join");
        assert!(!secret.is_empty());
        views.push(seen.view);
    }
    for s in &stores {
        assert_eq!(
            s.join_batches(),
            vec![1, PER_REPLICA - 1],
            "one store call for the first join, one for the rest of the burst"
        );
    }
    // Replica 0's first and last callers share a ticket.
    let first = &views[0];
    let refreshed = &views[PER_REPLICA - 1];
    assert_eq!(
        (refreshed.id.clone(), refreshed.number),
        (first.id.clone(), first.number),
        "a refresh inside a batch returns the same place"
    );
    let ids: HashSet<&TicketId> = views.iter().map(|v| &v.id).collect();
    assert_eq!(ids.len(), 2 * PER_REPLICA - 1);
    let mut numbers: Vec<u64> = views.iter().map(|v| v.number).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(
        numbers,
        (1..=(2 * PER_REPLICA - 1) as u64).collect::<Vec<_>>(),
        "distinct, gap-free numbers in one order over both replicas"
    );
    for v in &views {
        assert_eq!(v.state, TicketState::Waiting);
        assert_eq!(
            v.ahead,
            v.number - 1,
            "everyone with a lower number is ahead"
        );
    }
    // Everyone reads its ticket at once (a new Watch stream's first read): the same places.
    let mut reads = Vec::new();
    for (i, v) in views.iter().enumerate() {
        let room = rooms[i % 2].clone();
        let id = v.id.clone();
        let secret = keys.ticket_secret(&id);
        reads.push(tokio::spawn(async move { room.status(&id, &secret).await }));
    }
    for (read, v) in reads.into_iter().zip(&views) {
        let seen = read.await.unwrap().expect("status");
        assert_eq!((seen.view.number, seen.view.ahead), (v.number, v.ahead));
        assert_eq!(seen.view.client_key, v.client_key);
    }
    let stats = backend.room().stats(t0()).await.unwrap();
    assert_eq!(stats.waiting, (2 * PER_REPLICA - 1) as u64);
    assert_eq!(stats.last_ticket_number, (2 * PER_REPLICA - 1) as u64);
}

/// One store call of three joins, the second refused (its fresh ticket id exists): the others
/// take their places as if it were not there (numbers 2 and 3, no gap), the refused one changes
/// nothing; with the room off every join of a batch is refused and nothing is written.
async fn one_refused_join_in_a_batch_does_not_affect_the_others(
    backend: support::backend::Backend,
) {
    let room = backend.room();
    let off = RoomConfig {
        enabled: false,
        ..paused()
    };
    room.configure(&off, t0()).await.unwrap();
    let disabled = room
        .join_batch(
            &[
                (key("off-a"), TicketId::generate()),
                (key("off-b"), TicketId::generate()),
            ],
            t0(),
        )
        .await;
    assert_eq!(disabled.len(), 2);
    for outcome in disabled {
        assert!(matches!(
            outcome,
            Err(StoreError::Domain(Error::WaitingRoomDisabled))
        ));
    }
    room.configure(&paused(), t0()).await.unwrap();
    let taken = room
        .join(&key("first"), &TicketId::generate(), t0())
        .await
        .unwrap();
    assert_eq!(taken.number, 1, "the room off wrote nothing");
    let (a, b) = (TicketId::generate(), TicketId::generate());
    let outcomes = room
        .join_batch(
            &[
                (key("a"), a.clone()),
                (key("b"), taken.id.clone()),
                (key("c"), b.clone()),
            ],
            t0(),
        )
        .await;
    assert_eq!(outcomes.len(), 3);
    let first = outcomes[0].as_ref().expect("the first join of the batch");
    assert_eq!((first.id.clone(), first.number, first.ahead), (a, 2, 1));
    assert!(
        matches!(outcomes[1], Err(StoreError::Corrupt { .. })),
        "a taken fresh id is refused: {:?}",
        outcomes[1]
    );
    let third = outcomes[2].as_ref().expect("the third join of the batch");
    assert_eq!((third.id.clone(), third.number, third.ahead), (b, 3, 2));
    let stats = room.stats(t0()).await.unwrap();
    assert_eq!((stats.waiting, stats.last_ticket_number), (3, 3));
    // The refused key holds nothing: its next join is a new place.
    let again = room
        .join(&key("b"), &TicketId::generate(), t0())
        .await
        .unwrap();
    assert_eq!(again.number, 4);
    // The taken ticket is still its own client's.
    let still = room.status(&taken.id, t0()).await.unwrap();
    assert_eq!((still.number, still.client_key), (1, key("first")));
}

/// A refresh (the same client key) inside a batch and across batches returns the same place;
/// a status batch answers each ticket on its own (an unknown one is refused alone).
async fn a_refresh_inside_a_batch_returns_the_same_place(backend: support::backend::Backend) {
    let room = backend.room();
    room.configure(&paused(), t0()).await.unwrap();
    let (f1, f2, f3) = (
        TicketId::generate(),
        TicketId::generate(),
        TicketId::generate(),
    );
    let outcomes = room
        .join_batch(
            &[
                (key("one"), f1.clone()),
                (key("two"), f2.clone()),
                (key("one"), f3.clone()),
            ],
            t0(),
        )
        .await;
    let views: Vec<TicketView> = outcomes.into_iter().map(|o| o.expect("join")).collect();
    assert_eq!(
        (views[0].id.clone(), views[0].number, views[0].ahead),
        (f1.clone(), 1, 0)
    );
    assert_eq!(
        (views[1].id.clone(), views[1].number, views[1].ahead),
        (f2.clone(), 2, 1)
    );
    assert_eq!(
        (views[2].id.clone(), views[2].number, views[2].ahead),
        (f1.clone(), 1, 0),
        "the key's second join in the batch gets its first one's place"
    );
    // The next batch: a refresh of "two" and a newcomer.
    let later = t0() + chrono::Duration::seconds(5);
    let outcomes = room
        .join_batch(
            &[
                (key("three"), TicketId::generate()),
                (key("two"), TicketId::generate()),
            ],
            later,
        )
        .await;
    let three = outcomes[0].as_ref().expect("newcomer");
    let two = outcomes[1].as_ref().expect("refresh");
    assert_eq!((three.number, three.ahead), (3, 2));
    assert_eq!((two.id.clone(), two.number, two.ahead), (f2.clone(), 2, 1));
    assert_eq!(two.client_key, key("two"));
    let stats = room.stats(later).await.unwrap();
    assert_eq!((stats.waiting, stats.last_ticket_number), (3, 3));
    // Status reads in one batch, one of them unknown.
    let read = room
        .status_batch(&[f2.clone(), TicketId::generate(), f1.clone()], later)
        .await;
    assert_eq!(read.len(), 3);
    let r2 = read[0].as_ref().expect("f2");
    assert_eq!((r2.id.clone(), r2.number, r2.ahead), (f2, 2, 1));
    assert_eq!(r2.client_key, key("two"));
    assert!(matches!(
        read[1],
        Err(StoreError::Domain(Error::TicketNotFound))
    ));
    let r1 = read[2].as_ref().expect("f1");
    assert_eq!(
        (r1.id.clone(), r1.number, r1.ahead, r1.state),
        (f1, 1, 0, TicketState::Waiting)
    );
}

/// A join batch the store applied but whose answer was lost (a response timeout) is sent once
/// more: the joins are idempotent by client key, so every caller gets the place the lost call
/// gave it, no number is taken twice and nobody sees UNAVAILABLE.
async fn a_join_batch_whose_answer_was_lost_is_sent_again_and_keeps_its_places(
    backend: support::backend::Backend,
) {
    const N: usize = 40;
    backend.room().configure(&paused(), t0()).await.unwrap();
    let keys = AdmissionKeys::new(ADMISSION_KEY).unwrap();
    let store = Gated::new(backend.room());
    let room = Room::new(keys, store.clone(), Arc::new(ManualClock::new(t0())));
    store.closed.store(true, Ordering::SeqCst);
    store.lose_next_answer.store(true, Ordering::SeqCst);
    let mut calls = Vec::new();
    for i in 0..N {
        let room = room.clone();
        calls.push(tokio::spawn(async move {
            room.join(&key(&format!("lost-{i}"))).await
        }));
        if i == 0 {
            // The first call alone is the first batch, now at the gate.
            eventually("the first batch reached the gate", || {
                store.join_batches() == vec![1]
            })
            .await;
        }
    }
    eventually("the burst queued behind the first batch", || {
        room.queued_calls().0 == N - 1
    })
    .await;
    store.open();
    let mut numbers = Vec::new();
    for call in calls {
        let (seen, _) = call.await.unwrap().expect("no join sees the lost answer");
        numbers.push(seen.view.number);
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=N as u64).collect::<Vec<_>>());
    let batches = store.join_batches();
    assert_eq!(
        batches,
        vec![1, 1, N - 1],
        "the lost batch was sent once more before the next batch"
    );
    let stats = backend.room().stats(t0()).await.unwrap();
    assert_eq!(
        (stats.waiting, stats.last_ticket_number),
        (N as u64, N as u64)
    );
}

async fn on_backend(
    backend: support::backend::Backend,
    case: impl AsyncFnOnce(support::backend::Backend),
) {
    case(backend).await;
}

backend_matrix!(
    on_backend;
    a_burst_of_joins_on_two_replicas_is_one_gap_free_order_in_few_store_calls,
    one_refused_join_in_a_batch_does_not_affect_the_others,
    a_refresh_inside_a_batch_returns_the_same_place,
    a_join_batch_whose_answer_was_lost_is_sent_again_and_keeps_its_places,
);
