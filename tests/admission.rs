//! One admission, one booking, whatever happens to the call: a client whose deadline drops the
//! request right after the booking committed, or a settle that never reaches the room store,
//! must not let the same admission token book again. Other steps under one admission (holds,
//! reschedules, cancellations, waitlist joins) are bounded. The same bodies run on the embedded
//! store and on Redis.

use crate::support;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use tonic::Code;

use slotd::api::pb;
use slotd::domain::clock::ManualClock;
use slotd::domain::room::{
    ClientKey, RoomConfig, RoomStats, Synced, TicketId, TicketState, TicketView,
};
use slotd::server::ServeOptions;
use slotd::store::room::{WaitingRoomStore, CLAIM_LEASE_SECS};
use slotd::store::{Inventory, StoreError, ADMISSION_STEP_LIMIT};
use support::*;

const NORMAL: u8 = 0;
const SLOW_SETTLE: u8 = 1;
const FAILING_SETTLE: u8 = 2;

/// A room store whose "this admission completed" write is slow or fails: the window between a
/// booking's commit and its settle, held open for the test.
struct Settling {
    inner: Arc<dyn WaitingRoomStore>,
    mode: AtomicU8,
}

#[async_trait]
impl WaitingRoomStore for Settling {
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
        self.inner.join(client_key, fresh, now).await
    }
    async fn status(
        &self,
        ticket: &TicketId,
        now: DateTime<Utc>,
    ) -> Result<TicketView, StoreError> {
        self.inner.status(ticket, now).await
    }
    async fn end(
        &self,
        ticket: &TicketId,
        state: TicketState,
        now: DateTime<Utc>,
    ) -> Result<TicketView, StoreError> {
        if state == TicketState::Completed {
            match self.mode.load(Ordering::SeqCst) {
                SLOW_SETTLE => tokio::time::sleep(Duration::from_millis(600)).await,
                FAILING_SETTLE => {
                    return Err(StoreError::Unavailable {
                        detail: "injected: the room store is down".into(),
                    })
                }
                _ => {}
            }
        }
        self.inner.end(ticket, state, now).await
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
    async fn sync(
        &self,
        after: Option<u64>,
        heartbeat: &[TicketId],
        max_events: usize,
        now: DateTime<Utc>,
    ) -> Result<Synced, StoreError> {
        self.inner.sync(after, heartbeat, max_events, now).await
    }
}

struct Setup {
    server: TestServer,
    clock: ManualClock,
    room: Arc<Settling>,
}

impl Setup {
    async fn start(store: Arc<dyn Inventory>, room: Arc<dyn WaitingRoomStore>) -> Self {
        let clock = ManualClock::new(epoch());
        let room = Arc::new(Settling {
            inner: room,
            mode: AtomicU8::new(NORMAL),
        });
        let server = TestServer::launch(
            store,
            room.clone() as Arc<dyn WaitingRoomStore>,
            clock.clone(),
            ServeOptions::default(),
        )
        .await;
        Self {
            server,
            clock,
            room,
        }
    }

    fn settle_mode(&self, mode: u8) {
        self.room.mode.store(mode, Ordering::SeqCst);
    }
}

struct Admitted {
    id: String,
    secret: String,
    token: String,
}

/// Opens the room and returns an admitted ticket for `key` (the ticker admits within ticks).
async fn admitted(s: &Setup, key: &str) -> Admitted {
    configure_room(
        &s.server,
        pb::WaitingRoomConfig {
            session_duration_seconds: 3600,
            waiter_timeout_seconds: 600,
            ..room_config(600, 100)
        },
    )
    .await;
    let joined = s
        .server
        .waiting_room()
        .await
        .join(pb::JoinRequest {
            client_key: support::client_key(key),
        })
        .await
        .expect("join")
        .into_inner();
    let status = joined.status.expect("status");
    let (id, secret) = (status.ticket_id, joined.ticket_secret);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = ticket(s, &id, &secret).await;
        if status.state == pb::TicketState::Admitted as i32 {
            return Admitted {
                id,
                secret,
                token: status.admission_token,
            };
        }
        assert!(Instant::now() < deadline, "never admitted: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ticket(s: &Setup, id: &str, secret: &str) -> pb::TicketStatus {
    s.server
        .waiting_room()
        .await
        .get_status(pb::GetStatusRequest {
            ticket_id: id.into(),
            ticket_secret: secret.into(),
        })
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status")
}

fn hold_request(request_id: &str, date: &str, i: u32) -> pb::HoldSlotRequest {
    pb::HoldSlotRequest {
        request_id: request_id.into(),
        slot: Some(slot(date, "08:00")),
        applicants: vec![applicant(i)],
    }
}

/// Sends more holds under `token` than an admission has steps (`<prefix>-<n>`, applicant `i`
/// on `date` 08:00), one after another, and asserts each is refused `reason`.
async fn refused_past_the_step_limit(
    booking: &mut pb::booking_service_client::BookingServiceClient<tonic::transport::Channel>,
    token: &str,
    prefix: &str,
    date: &str,
    i: u32,
    reason: &str,
) {
    for n in 0..ADMISSION_STEP_LIMIT + 3 {
        let refused = booking
            .hold_slot(with_token(
                hold_request(&format!("{prefix}-{n}"), date, i),
                token,
            ))
            .await
            .expect_err(reason);
        assert_refused(&refused, Code::FailedPrecondition, reason);
    }
}

/// Seats booked on `date` 08:00, read from the store itself (no cache in between).
async fn booked(s: &Setup, date: &str) -> u32 {
    let date = slotd::domain::types::parse_date(date).expect("date");
    s.server
        .store
        .slots(
            &slotd::domain::types::PostId::parse("BEIJING").expect("post"),
            &slotd::domain::types::CategoryId::parse("ALL_OTHERS").expect("category"),
            slotd::domain::rules::DateRange {
                from: date,
                to: date,
            },
        )
        .await
        .expect("slots")
        .first()
        .map(|slot| slot.booked)
        .unwrap_or(0)
}

fn spent(status: &tonic::Status) -> bool {
    matches!(
        (status.code(), reason(status).as_str()),
        (Code::PermissionDenied, "ADMISSION_USED") | (Code::PermissionDenied, "ADMISSION_REVOKED")
    )
}

/// The client's deadline expires while the booking it asked for has committed but its
/// admission is not settled yet. The booking stands, the admission still ends, and the same
/// token books nothing more, even after the claim's lease would have lapsed.
async fn a_deadline_that_drops_the_call_after_the_commit_does_not_let_the_token_book_again(
    s: Setup,
) {
    let date = day(7);
    open_times(&s.server, &date, "08:00", "08:00", 10).await;
    register_receipts(&s.server, 1..=3).await;
    let admission = admitted(&s, "deadline-1").await;
    s.settle_mode(SLOW_SETTLE);
    let mut request = with_token(
        book_request("deadline-1", slot(&date, "08:00"), vec![applicant(1)]),
        &admission.token,
    );
    request.set_timeout(Duration::from_millis(150));
    let dropped = s
        .server
        .booking()
        .await
        .book_appointment(request)
        .await
        .expect_err("the settle outlasts the client's deadline");
    assert!(
        matches!(dropped.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{dropped:?}"
    );
    // The booking committed and the admission ends although nobody waits for the call.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = ticket(&s, &admission.id, &admission.secret).await;
        if status.state == pb::TicketState::Completed as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped call never settled its admission: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(booked(&s, &date).await, 1);
    s.settle_mode(NORMAL);
    s.clock
        .advance(ChronoDuration::seconds(CLAIM_LEASE_SECS + 1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, id) in [(2u32, "deadline-2"), (3, "deadline-3")] {
        let again = s
            .server
            .booking()
            .await
            .book_appointment(with_token(
                book_request(id, slot(&date, "08:00"), vec![applicant(i)]),
                &admission.token,
            ))
            .await
            .expect_err("one admission books once");
        assert!(spent(&again), "{again:?}");
    }
    assert_eq!(booked(&s, &date).await, 1);
    assert_audit_clean(&s.server, &date).await;
    s.server.stop().await;
}

/// The room store cannot record that the admission completed (down at the wrong instant, or
/// slotd killed before it could): the booking itself recorded its admission, so once the claim
/// lapses the token still books nothing more, through BookAppointment or ConfirmHold, and
/// takes no hold either.
async fn an_admission_whose_settle_never_arrived_still_books_once(s: Setup) {
    let date = day(7);
    open_times(&s.server, &date, "08:00", "08:00", 10).await;
    register_receipts(&s.server, 1..=6).await;
    let mut booking = s.server.booking().await;

    // Booked directly.
    let first = admitted(&s, "unsettled-1").await;
    s.settle_mode(FAILING_SETTLE);
    booking
        .book_appointment(with_token(
            book_request("unsettled-1", slot(&date, "08:00"), vec![applicant(1)]),
            &first.token,
        ))
        .await
        .expect("the booking stands although its settle failed");
    // Booked through a hold.
    s.settle_mode(NORMAL);
    let second = admitted(&s, "unsettled-2").await;
    let hold = booking
        .hold_slot(with_token(
            hold_request("unsettled-hold-2", &date, 2),
            &second.token,
        ))
        .await
        .expect("hold")
        .into_inner()
        .hold
        .expect("hold");
    s.settle_mode(FAILING_SETTLE);
    booking
        .confirm_hold(with_token(
            pb::ConfirmHoldRequest {
                hold_id: hold.hold_id,
                request_id: "unsettled-confirm-2".into(),
            },
            &second.token,
        ))
        .await
        .expect("the confirmation stands although its settle failed");
    s.settle_mode(NORMAL);
    assert_eq!(booked(&s, &date).await, 2);

    // Both sessions are still open in the room (their settle never arrived); the claims lapse.
    s.clock
        .advance(ChronoDuration::seconds(CLAIM_LEASE_SECS + 1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (n, token) in [(3u32, &first.token), (4, &second.token)] {
        let again = booking
            .book_appointment(with_token(
                book_request(
                    &format!("unsettled-again-{n}"),
                    slot(&date, "08:00"),
                    vec![applicant(n)],
                ),
                token,
            ))
            .await
            .expect_err("one admission books once");
        assert_refused(&again, Code::PermissionDenied, "ADMISSION_USED");
        let held = booking
            .hold_slot(with_token(
                hold_request(&format!("unsettled-hold-again-{n}"), &date, n + 2),
                token,
            ))
            .await
            .expect_err("a spent admission takes no hold");
        assert_refused(&held, Code::PermissionDenied, "ADMISSION_USED");
    }
    assert_eq!(booked(&s, &date).await, 2);
    assert_audit_clean(&s.server, &date).await;
    s.server.stop().await;
}

/// An admission makes at most `ADMISSION_STEP_LIMIT` holds (and reschedules, cancellations,
/// waitlist joins) in all; its one booking is counted apart.
async fn one_admission_makes_a_bounded_number_of_holds(s: Setup) {
    let date = day(7);
    open_times(&s.server, &date, "08:00", "08:00", 10).await;
    register_receipts(&s.server, 1..=2).await;
    let admission = admitted(&s, "steps-1").await;
    let mut booking = s.server.booking().await;
    for n in 0..ADMISSION_STEP_LIMIT {
        let hold = booking
            .hold_slot(with_token(
                hold_request(&format!("steps-hold-{n}"), &date, 1),
                &admission.token,
            ))
            .await
            .unwrap_or_else(|e| panic!("hold {n}: {e:?}"))
            .into_inner()
            .hold
            .expect("hold");
        booking
            .release_hold(pb::ReleaseHoldRequest {
                hold_id: hold.hold_id,
                request_id: format!("steps-release-{n}"),
            })
            .await
            .expect("release");
    }
    let refused = booking
        .hold_slot(with_token(
            hold_request("steps-hold-last", &date, 1),
            &admission.token,
        ))
        .await
        .expect_err("past the step limit");
    assert_refused(
        &refused,
        Code::PermissionDenied,
        "ADMISSION_STEPS_EXHAUSTED",
    );
    assert_eq!(booked(&s, &date).await, 0);
    // The booking is counted apart: the admission still books once.
    booking
        .book_appointment(with_token(
            book_request("steps-book", slot(&date, "08:00"), vec![applicant(2)]),
            &admission.token,
        ))
        .await
        .expect("the admission's one booking");
    assert_eq!(booked(&s, &date).await, 1);
    s.server.stop().await;
}

/// A hold on a slot full of bookings is refused `SLOT_FULL` before the admission's step is
/// counted (`Inventory::refuse_sold_out_hold`; on Redis the sold-out memo answers, marked by
/// the first refusal): an admission that keeps trying a sold-out slot is told SLOT_FULL every
/// time, never ADMISSION_STEPS_EXHAUSTED, and keeps its steps for a slot that has seats.
async fn holds_refused_as_sold_out_cost_the_admission_no_step(s: Setup) {
    let date = day(7);
    let other = day(8);
    open_times(&s.server, &date, "08:00", "08:00", 1).await;
    open_times(&s.server, &other, "08:00", "08:00", 1).await;
    register_receipts(&s.server, 1..=3).await;
    let mut booking = s.server.booking().await;
    // Applicant 1 takes the only seat (the room still off: no admission needed).
    booking
        .book_appointment(book_request(
            "sold-book",
            slot(&date, "08:00"),
            vec![applicant(1)],
        ))
        .await
        .expect("the only seat");
    let admission = admitted(&s, "sold-1").await;
    refused_past_the_step_limit(
        &mut booking,
        &admission.token,
        "sold-hold",
        &date,
        2,
        "SLOT_FULL",
    )
    .await;
    // The first refusal ran the hold (a refused hold counts no step); every other one was
    // answered from the memo.
    booking
        .hold_slot(with_token(
            hold_request("sold-hold-elsewhere", &other, 2),
            &admission.token,
        ))
        .await
        .expect("a slot with a seat: the admission has steps left");
    assert_eq!(booked(&s, &date).await, 1);
    s.server.stop().await;
}

/// Holds sent at the same instant under one admission (each for another applicant) are
/// bounded by the admission's step counter, which each hold checks and counts in its own
/// atomic step: exactly `ADMISSION_STEP_LIMIT` are placed, every other one is refused
/// `ADMISSION_STEPS_EXHAUSTED` and changes nothing. A counted step claims no session, so none
/// is told `ADMISSION_IN_USE` (before, the claim turned all but one away, and each placed hold
/// cost a claim, an `admission_step` call and the claim's release besides the hold).
async fn concurrent_holds_under_one_admission_stay_within_its_steps(s: Setup) {
    let date = day(7);
    let extra = 4;
    open_times(&s.server, &date, "08:00", "08:00", 50).await;
    register_receipts(&s.server, 1..=ADMISSION_STEP_LIMIT + extra).await;
    let admission = admitted(&s, "concurrent-1").await;
    let mut calls = Vec::new();
    for i in 1..=ADMISSION_STEP_LIMIT + extra {
        let mut booking = s.server.booking().await;
        let request = with_token(
            hold_request(&format!("concurrent-hold-{i}"), &date, i),
            &admission.token,
        );
        calls.push(tokio::spawn(
            async move { booking.hold_slot(request).await },
        ));
    }
    let mut placed = 0;
    for call in calls {
        match call.await.expect("task") {
            Ok(_) => placed += 1,
            Err(refused) => assert_refused(
                &refused,
                Code::PermissionDenied,
                "ADMISSION_STEPS_EXHAUSTED",
            ),
        }
    }
    assert_eq!(
        placed, ADMISSION_STEP_LIMIT,
        "holds placed under one admission"
    );
    let slot = held_slot(&s, &date).await;
    assert_eq!(slot.held, ADMISSION_STEP_LIMIT, "seats under hold");
    assert_eq!(slot.booked, 0);
    s.server.stop().await;
}

/// A step the store refuses changes nothing, its admission's step count included: an
/// admission whose holds keep being refused (an unregistered receipt) still has every step
/// for a hold that is placed. Before, each refused hold had been counted before it ran.
async fn a_refused_step_costs_the_admission_no_step(s: Setup) {
    let date = day(7);
    open_times(&s.server, &date, "08:00", "08:00", 10).await;
    register_receipts(&s.server, [1]).await;
    let admission = admitted(&s, "refused-1").await;
    let mut booking = s.server.booking().await;
    // Receipt 2 is not registered.
    refused_past_the_step_limit(
        &mut booking,
        &admission.token,
        "refused-hold",
        &date,
        2,
        "RECEIPT_NOT_REGISTERED",
    )
    .await;
    booking
        .hold_slot(with_token(
            hold_request("refused-hold-ok", &date, 1),
            &admission.token,
        ))
        .await
        .expect("the refused holds cost no step");
    s.server.stop().await;
}

/// The slot `date` 08:00 as the store has it (no cache in between).
async fn held_slot(s: &Setup, date: &str) -> slotd::domain::types::SlotState {
    let date = slotd::domain::types::parse_date(date).expect("date");
    s.server
        .store
        .slots(
            &slotd::domain::types::PostId::parse("BEIJING").expect("post"),
            &slotd::domain::types::CategoryId::parse("ALL_OTHERS").expect("category"),
            slotd::domain::rules::DateRange {
                from: date,
                to: date,
            },
        )
        .await
        .expect("slots")
        .into_iter()
        .next()
        .expect("the slot")
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            use slotd::store::memory::MemoryStore;
            use slotd::store::memory::room::MemoryWaitingRoom;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let s = Setup::start(
                        Arc::new(MemoryStore::new()),
                        Arc::new(MemoryWaitingRoom::new()),
                    )
                    .await;
                    super::$name(s).await;
                }
            )*
        }
        mod redis {
            use super::*;
            use support::redis::RedisServer;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let redis = RedisServer::start();
                    let s = Setup::start(redis.patient_store(), redis.room()).await;
                    super::$name(s).await;
                    drop(redis);
                }
            )*
        }
    };
}

on_every_backend!(
    a_deadline_that_drops_the_call_after_the_commit_does_not_let_the_token_book_again,
    an_admission_whose_settle_never_arrived_still_books_once,
    one_admission_makes_a_bounded_number_of_holds,
    holds_refused_as_sold_out_cost_the_admission_no_step,
    concurrent_holds_under_one_admission_stay_within_its_steps,
    a_refused_step_costs_the_admission_no_step,
);

/// Through the room's store seam: a gated hold checks the session and claims nothing (so it
/// has nothing to give back), and its confirmation claims the session and ends it. Before, the
/// hold claimed the session and gave the claim back: 2 room calls more per hold.
async fn a_gated_hold_checks_the_session_and_claims_nothing(
    store: Arc<dyn Inventory>,
    room: Arc<dyn WaitingRoomStore>,
) {
    let counting = support::counting::CountingRoom::new(room);
    let s = Setup::start(store, counting.clone() as Arc<dyn WaitingRoomStore>).await;
    let date = day(7);
    open_times(&s.server, &date, "08:00", "08:00", 10).await;
    register_receipts(&s.server, [1]).await;
    let admission = admitted(&s, "seam-1").await;
    let mut booking = s.server.booking().await;
    let gated = |calls: &std::collections::HashMap<&'static str, u64>| {
        ["check_session", "claim_session", "release_session", "end"]
            .map(|m| calls.get(m).copied().unwrap_or(0))
    };
    counting.take();
    let hold = booking
        .hold_slot(with_token(
            hold_request("seam-hold", &date, 1),
            &admission.token,
        ))
        .await
        .expect("hold")
        .into_inner()
        .hold
        .expect("hold");
    assert_eq!(
        gated(&counting.take()),
        [1, 0, 0, 0],
        "a gated hold's room calls"
    );
    booking
        .confirm_hold(with_token(
            pb::ConfirmHoldRequest {
                hold_id: hold.hold_id,
                request_id: "seam-confirm".into(),
            },
            &admission.token,
        ))
        .await
        .expect("confirm");
    assert_eq!(
        gated(&counting.take()),
        [0, 1, 0, 1],
        "its confirmation's room calls"
    );
    assert_eq!(booked(&s, &date).await, 1);
    s.server.stop().await;
}

mod seam {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_a_gated_hold_checks_the_session_and_claims_nothing() {
        a_gated_hold_checks_the_session_and_claims_nothing(
            Arc::new(slotd::store::memory::MemoryStore::new()),
            Arc::new(slotd::store::memory::room::MemoryWaitingRoom::new()),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_a_gated_hold_checks_the_session_and_claims_nothing() {
        let redis = support::redis::RedisServer::start();
        a_gated_hold_checks_the_session_and_claims_nothing(redis.patient_store(), redis.room())
            .await;
        drop(redis);
    }
}

/// What one admission costs Redis, counted command by command (`SLOWLOG` with a threshold of 0
/// logs every command a client sends, and those a function calls from a fake client, skipped):
/// only the commands that name this admission's ticket, hold request or hold are counted, so
/// the room's ticks and the sweeper in between do not. A gated hold is the session check and
/// the hold itself (it checks and counts its admission step inside): 2 round trips, where it
/// was 4 (the claim pipeline `SET NX` + `ZSCORE`, `admission_step`, the hold, the claim's
/// `DEL`). Its confirmation on the replica that placed the hold reads no hold record: the claim
/// pipeline, `confirm_hold` and the session's end, 3 round trips where it was 4 (+ `HGETALL`).
mod redis_round_trips {
    use super::*;
    use support::redis::RedisServer;

    fn logged(conn: &mut ::redis::Connection, marks: &[&str]) -> Vec<String> {
        let entries: Vec<::redis::Value> = ::redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(-1)
            .query(conn)
            .expect("slowlog");
        let mut commands = Vec::new();
        for entry in entries.into_iter().rev() {
            let ::redis::Value::Array(fields) = entry else {
                panic!("slowlog entry {entry:?}");
            };
            let args: Vec<String> =
                ::redis::from_redis_value(fields[3].clone()).expect("slowlog args");
            // The commands a function calls are logged too, from the fake client `?:0`.
            let client: String =
                ::redis::from_redis_value(fields[4].clone()).expect("slowlog client");
            if client.starts_with('?') || !args.iter().any(|a| marks.iter().any(|m| a.contains(m)))
            {
                continue;
            }
            let command = args[0].to_uppercase();
            commands.push(if command == "FCALL" {
                format!("FCALL {}", args[1])
            } else {
                command
            });
        }
        ::redis::cmd("SLOWLOG")
            .arg("RESET")
            .query::<()>(conn)
            .expect("slowlog reset");
        commands
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gated_hold_and_its_confirmation_cost_five_round_trips() {
        let redis = RedisServer::start();
        let s = Setup::start(redis.patient_store(), redis.room()).await;
        let date = day(7);
        open_times(&s.server, &date, "08:00", "08:00", 10).await;
        register_receipts(&s.server, [1]).await;
        let admission = admitted(&s, "round-trips-1").await;
        let mut conn = redis.client();
        for (key, value) in [
            ("slowlog-log-slower-than", "0"),
            ("slowlog-max-len", "100000"),
        ] {
            ::redis::cmd("CONFIG")
                .arg("SET")
                .arg(key)
                .arg(value)
                .query::<()>(&mut conn)
                .expect("config set");
        }
        logged(&mut conn, &[]);
        let mut booking = s.server.booking().await;
        let hold = booking
            .hold_slot(with_token(
                hold_request("round-trips-hold", &date, 1),
                &admission.token,
            ))
            .await
            .expect("hold")
            .into_inner()
            .hold
            .expect("hold");
        let held = logged(&mut conn, &[&admission.id, "round-trips-hold"]);
        assert_eq!(held.len(), 2, "a gated hold: {held:?}");
        assert_eq!(held[0], "ZSCORE", "{held:?}");
        assert!(
            held[1].starts_with("FCALL ") && held[1].ends_with("_hold"),
            "{held:?}"
        );

        booking
            .confirm_hold(with_token(
                pb::ConfirmHoldRequest {
                    hold_id: hold.hold_id.clone(),
                    request_id: "round-trips-confirm".into(),
                },
                &admission.token,
            ))
            .await
            .expect("confirm");
        let confirmed = logged(&mut conn, &[&admission.id, &hold.hold_id]);
        assert_eq!(confirmed.len(), 4, "its confirmation: {confirmed:?}");
        assert_eq!(
            &confirmed[..2],
            ["SET", "ZSCORE"],
            "one pipeline: {confirmed:?}"
        );
        assert!(confirmed[2].ends_with("_confirm_hold"), "{confirmed:?}");
        assert!(confirmed[3].ends_with("_room_end"), "{confirmed:?}");
        assert_eq!(booked(&s, &date).await, 1);
        s.server.stop().await;
        drop(redis);
    }
}
