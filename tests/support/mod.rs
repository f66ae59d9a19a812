//! Test harness shared by the integration tests: the real slotd server, in process, on
//! 127.0.0.1:0, driven with the generated clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use slotd::api::auth::OperatorAuth;
use slotd::api::pb;
use slotd::api::pb::admin_service_client::AdminServiceClient;
use slotd::api::pb::booking_service_client::BookingServiceClient;
use slotd::api::pb::calendar_service_client::CalendarServiceClient;
use slotd::api::pb::waiting_room_service_client::WaitingRoomServiceClient;
use slotd::app::availability::CalendarOptions;
use slotd::app::room::{Room, WatchOptions};
use slotd::app::Slotd;
use slotd::domain::admission::AdmissionKeys;
use slotd::domain::catalog::Catalog;
use slotd::domain::clock::{Clock, ManualClock};
use slotd::server::{serve, ServeOptions};
use slotd::store::memory::room::MemoryWaitingRoom;
use slotd::store::memory::MemoryStore;
use slotd::store::room::WaitingRoomStore;
use slotd::store::Inventory;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const ADMISSION_KEY: &str = "test-admission-key-0123456789abcdef";

/// A client key for `name` that passes the rule (22+ characters, random-looking): tests name
/// their clients, real front ends draw 16 random bytes.
pub fn client_key(name: &str) -> String {
    format!("{name}.Kq7xZ2pLm9TvW4rN8sYb3c")
}

/// A TCP port of 127.0.0.1 free right now (for a server the test starts that must be told its
/// port, or restarted on the one it had). Another process may take it before it is bound:
/// servers started on it retry on a new one (RedisServer::start_tcp).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// 2030-01-07 00:00 UTC = 08:00 in Beijing, a Monday; tests book days after it.
pub fn epoch() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-07T00:00:00Z")
        .expect("valid instant")
        .with_timezone(&Utc)
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub clock: ManualClock,
    pub store: Arc<dyn Inventory>,
    pub room: Arc<dyn WaitingRoomStore>,
    /// The server's use cases (its calendar cache and slot feed: `app.availability()`).
    pub app: Slotd,
    /// The room store as the server's room sees it: counts its calls and ticker ticks.
    pub room_calls: Arc<counting::CountingRoom>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server on the embedded store with a manual clock at `epoch()`.
    pub async fn memory() -> Self {
        Self::start(Arc::new(MemoryStore::new())).await
    }

    pub async fn start(store: Arc<dyn Inventory>) -> Self {
        Self::start_with(store, ServeOptions::default()).await
    }

    pub async fn start_with(store: Arc<dyn Inventory>, options: ServeOptions) -> Self {
        let room: Arc<dyn WaitingRoomStore> = Arc::new(MemoryWaitingRoom::new());
        Self::launch(store, room, ManualClock::new(epoch()), options).await
    }

    /// A server on `store` with other calendar cache and slot feed settings.
    pub async fn start_calendar(store: Arc<dyn Inventory>, calendar: CalendarOptions) -> Self {
        let room: Arc<dyn WaitingRoomStore> = Arc::new(MemoryWaitingRoom::new());
        Self::launch_calendar(
            store,
            room,
            ManualClock::new(epoch()),
            ServeOptions::default(),
            calendar,
        )
        .await
    }

    /// A server on the given stores and clock (replicas share stores and a clock).
    pub async fn launch(
        store: Arc<dyn Inventory>,
        room_store: Arc<dyn WaitingRoomStore>,
        clock: ManualClock,
        options: ServeOptions,
    ) -> Self {
        Self::launch_calendar(
            store,
            room_store,
            clock,
            options,
            CalendarOptions::default(),
        )
        .await
    }

    pub async fn launch_calendar(
        store: Arc<dyn Inventory>,
        room_store: Arc<dyn WaitingRoomStore>,
        clock: ManualClock,
        options: ServeOptions,
        calendar: CalendarOptions,
    ) -> Self {
        Self::launch_full(
            store,
            room_store,
            clock,
            options,
            calendar,
            WatchOptions::default(),
        )
        .await
    }

    /// A server whose waiting-room Watch streams follow `watch`.
    pub async fn launch_watch(
        store: Arc<dyn Inventory>,
        room_store: Arc<dyn WaitingRoomStore>,
        clock: ManualClock,
        watch: WatchOptions,
    ) -> Self {
        Self::launch_full(
            store,
            room_store,
            clock,
            ServeOptions::default(),
            CalendarOptions::default(),
            watch,
        )
        .await
    }

    async fn launch_full(
        store: Arc<dyn Inventory>,
        room_store: Arc<dyn WaitingRoomStore>,
        clock: ManualClock,
        options: ServeOptions,
        calendar: CalendarOptions,
        watch: WatchOptions,
    ) -> Self {
        let catalog = Arc::new(Catalog::builtin().expect("builtin catalog"));
        let shared_clock = Arc::new(clock.clone()) as Arc<dyn Clock>;
        let app = Slotd::new(catalog, store.clone(), shared_clock.clone()).with_calendar(calendar);
        let served = app.clone();
        let keys = AdmissionKeys::new(ADMISSION_KEY).expect("admission key");
        let room_calls = counting::CountingRoom::new(room_store.clone());
        let room = Room::new(keys, room_calls.clone(), shared_clock).with_watch_options(watch);
        let auth = OperatorAuth::new(Some(ADMIN_TOKEN)).expect("token");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = serve(listener, served, room, auth, options, shutdown).await {
                panic!("server failed: {e}");
            }
        });
        Self {
            addr,
            clock,
            store,
            room: room_store,
            app,
            room_calls,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Waits until this server's waiting-room ticker has run a whole tick that began after
    /// the call (so it has seen the current manual time and settings). See `settle`.
    pub async fn next_tick(&self) {
        settle(&[self]).await;
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect")
    }

    pub async fn calendar(&self) -> CalendarServiceClient<Channel> {
        CalendarServiceClient::new(self.channel().await)
    }

    pub async fn booking(&self) -> BookingServiceClient<Channel> {
        BookingServiceClient::new(self.channel().await)
    }

    pub async fn waiting_room(&self) -> WaitingRoomServiceClient<Channel> {
        WaitingRoomServiceClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Waits until the room has stepped in a tick begun after this call (on any of the servers:
/// they share the room, and the step lease lets one replica step per interval; a room that is
/// off counts as stepped), then until every server's waiting-room ticker has run a whole tick
/// begun after that: a tick is one `tick` call (`CountingRoom::ticks_begun`), so once two more
/// have begun, the first of them (which read the clock and the step's events after the step)
/// has finished. A condition, not a guess at how long a tick takes; bounded by a generous 30 s.
pub async fn settle(servers: &[&TestServer]) {
    let since = std::time::Instant::now();
    let deadline = since + Duration::from_secs(30);
    while !servers.iter().any(|s| s.room_calls.stepped_since(since)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiting room did not step within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let begun: Vec<u64> = servers.iter().map(|s| s.room_calls.ticks_begun()).collect();
    while servers
        .iter()
        .zip(&begun)
        .any(|(s, b)| s.room_calls.ticks_begun() < b + 2)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "a waiting-room ticker did not tick within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wraps a message with the operator token.
pub fn admin<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {ADMIN_TOKEN}").parse().expect("ascii");
    request.metadata_mut().insert("authorization", value);
    request
}

/// The gRPC health status of `slotd.v1.BookingService` on `channel` (-1 when the check fails).
pub async fn booking_health(channel: &Channel) -> i32 {
    tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "slotd.v1.BookingService".into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

/// Polls `booking_health` until it is `want` (1 SERVING, 2 NOT_SERVING), up to a generous 20 s.
pub async fn wait_for_health(channel: &Channel, want: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while booking_health(channel).await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "health never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wraps a message with an admission token (`x-admission-token`), as a client let in by the
/// waiting room sends it.
pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = token.parse().expect("ascii token");
    request.metadata_mut().insert("x-admission-token", value);
    request
}

/// The ErrorInfo reason of a status ("" when there is none).
pub fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// The BadRequest field names of a status.
pub fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[track_caller]
pub fn assert_refused(status: &Status, code: Code, why: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(status), why, "{status:?}");
}

/// A date `days` after the epoch, as YYYY-MM-DD.
pub fn day(days: i64) -> String {
    (epoch() + ChronoDuration::days(days))
        .format("%Y-%m-%d")
        .to_string()
}

pub fn slot(date: &str, time: &str) -> pb::SlotRef {
    pb::SlotRef {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        date: date.into(),
        time: time.into(),
    }
}

/// Applicant `i` with passport `P{i}` and receipt `R{i}` (pad to the formats' minimum lengths).
pub fn applicant(i: u32) -> pb::Applicant {
    pb::Applicant {
        passport_number: format!("P{i:07}"),
        given_name: "Wei".into(),
        surname: "Zhang".into(),
        ds160_confirmation: format!("AA{i:08}"),
        receipt_number: format!("R{i:07}"),
    }
}

/// Opens `date` 08:00-08:45 (4 slots) with `seats` each on BEIJING/ALL_OTHERS.
pub async fn open_day(server: &TestServer, date: &str, seats: u32) {
    open_times(server, date, "08:00", "08:45", seats).await;
}

pub async fn open_times(server: &TestServer, date: &str, first: &str, last: &str, seats: u32) {
    let all_days = (1..=7).collect();
    server
        .admin()
        .await
        .open_slots(admin(pb::OpenSlotsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: date.into(),
            to_date: date.into(),
            weekdays: all_days,
            first_time: first.into(),
            last_time: last.into(),
            seats_per_slot: seats,
        }))
        .await
        .expect("open slots");
}

/// Waiting-room settings: on, `rate` admissions a minute, at most `cap` active sessions of
/// 10 minutes, waiters dropped after 60 s of silence, not paused, calendar reads not gated.
pub fn room_config(rate: u32, cap: u32) -> pb::WaitingRoomConfig {
    pb::WaitingRoomConfig {
        enabled: true,
        admissions_per_minute: rate,
        max_active_sessions: cap,
        session_duration_seconds: 600,
        waiter_timeout_seconds: 60,
        paused: false,
        gate_calendar: false,
    }
}

/// ConfigureWaitingRoom on `server`, as the operator.
pub async fn configure_room(server: &TestServer, config: pb::WaitingRoomConfig) {
    server
        .admin()
        .await
        .configure_waiting_room(admin(pb::ConfigureWaitingRoomRequest {
            config: Some(config),
        }))
        .await
        .expect("configure waiting room");
}

/// Registers receipts R{i} for passports P{i}, i in `ids`, paid a day before the epoch (setup:
/// 32 calls at a time over one connection).
pub async fn register_receipts(server: &TestServer, ids: impl IntoIterator<Item = u32>) {
    use futures::StreamExt;
    let client = server.admin().await;
    let paid_at = (epoch() - ChronoDuration::days(1)).to_rfc3339();
    let calls = ids.into_iter().map(|i| {
        let mut client = client.clone();
        let paid_at = paid_at.clone();
        async move {
            let a = applicant(i);
            client
                .register_receipt(admin(pb::RegisterReceiptRequest {
                    receipt_number: a.receipt_number,
                    passport_number: a.passport_number,
                    paid_at,
                    amount: "185.00".into(),
                    currency: "USD".into(),
                }))
                .await
                .expect("register receipt");
        }
    });
    futures::stream::iter(calls)
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

pub fn book_request(
    request_id: &str,
    slot: pb::SlotRef,
    applicants: Vec<pb::Applicant>,
) -> pb::BookAppointmentRequest {
    pb::BookAppointmentRequest {
        request_id: request_id.into(),
        slot: Some(slot),
        applicants,
    }
}

/// Seats still free on a slot, read through ListSlots (0 when not listed).
pub async fn seats_left(server: &TestServer, date: &str, time: &str) -> u32 {
    let slots = server
        .calendar()
        .await
        .list_slots(pb::ListSlotsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            date: date.into(),
        })
        .await
        .expect("list slots")
        .into_inner()
        .slots;
    slots
        .iter()
        .find(|s| s.time == time)
        .map(|s| s.seats_available)
        .unwrap_or(0)
}

/// AuditInventory over `date` must report no violation.
pub async fn assert_audit_clean(server: &TestServer, date: &str) {
    history::audit_clean(&server.channel().await, date).await;
}
#[macro_use]
pub mod backend;
pub mod cluster;
pub mod counting;
pub mod domain;
pub mod flow;
pub mod history;
pub mod process;
pub mod qr;
pub mod redis;
pub mod sentinel;
pub mod tls;
