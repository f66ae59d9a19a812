//! slotd-load: a bounded load generator for a slotd on loopback, and a correctness check.
//!
//! It opens its own slots and registers its own receipts (operator token), drives one scenario
//! for a duration or a request count with `--concurrency` workers over `--connections` HTTP/2
//! connections (closed loop, or open loop at `--rate` requests/s), records latency in an HDR
//! histogram, then audits the inventory it touched. It exits non-zero on overbooking, an audit
//! violation or any unexpected error code (SLOT_FULL on the hot slot is expected; anything else
//! is not). Figures and how to read them: benches/README.md.
//!
//! The `crowd` scenario (a flash crowd through the waiting room, over several replicas) lives in
//! `slotd-load/crowd.rs`.
//!
//! It refuses any target that is not a loopback address unless `--allow-remote` is given: load
//! belongs on a machine you own, never on a shared or production endpoint.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Duration as Days, NaiveDate, Utc};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::Rng;
use serde::Serialize;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_types::StatusExt;

use slotd::api::pb;
use slotd::api::pb::admin_service_client::AdminServiceClient;
use slotd::api::pb::booking_service_client::BookingServiceClient;
use slotd::api::pb::calendar_service_client::CalendarServiceClient;
use slotd::api::pb::waiting_room_service_client::WaitingRoomServiceClient;

#[path = "slotd-load/crowd.rs"]
mod crowd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// grpc.health.v1.Health/Check: the gRPC ceiling of this machine.
    Ping,
    /// BookAppointment on random slots of `--days` days with plenty of seats.
    BookSpread,
    /// Everyone books one slot of `--hot-seats` seats: sold out within the run.
    BookHot,
    /// ListAvailableDates over the opened days and ListSlots of a random day, alternately.
    Calendar,
    /// WaitingRoomService.Join with a fresh client key each time (enables the room, paused, for
    /// the run: the line grows as in a burst and no admission step competes with the joins).
    Join,
    /// Opens `--concurrency` Watch streams (room paused) and holds them for the duration.
    Watch,
    /// 60 % calendar, 30 % book-spread, 10 % ping.
    Mixed,
    /// A flash crowd: `--concurrency` clients join the paused room in a burst over every
    /// `--addr`, each holding a Watch stream; the room then admits at `--rate` per second, the
    /// admitted hold and book the hot slot (`--hot-seats`), `--abandon` of them close their
    /// stream mid-wait. Reports Redis (`--redis-url`) and slotd (`--server-pid`) costs per
    /// waiter-second; fails on an admission inversion, a rate-bound violation or overbooking.
    Crowd,
}

#[derive(Debug, Parser)]
#[command(
    name = "slotd-load",
    about = "Bounded load generator and correctness check for slotd (loopback only)"
)]
struct Args {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// slotd address (host:port); loopback only unless --allow-remote.
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: String,
    /// `crowd`: every replica's address (repeat the flag); clients are spread over them.
    /// Default: `--target`.
    #[arg(long = "addr")]
    addrs: Vec<String>,
    /// `crowd`: the share of clients that close their stream mid-wait (0-1).
    #[arg(long, default_value_t = 0.1)]
    abandon: f64,
    /// `crowd`: the room's waiter timeout in seconds (5-3600). A watched waiter is heartbeated
    /// three times per timeout, so its Redis cost scales with 1/timeout: 5 (the room's minimum,
    /// abandoned places skipped quickly) is the harsh case, 60 the room's default.
    #[arg(long, default_value_t = 5)]
    waiter_timeout: u32,
    /// The store's Redis. `crowd`: for its CPU (`INFO cpu`) over the waiting phase.
    /// `book-spread`, `book-hot`, `mixed`: `INFO commandstats` (`cmdstat_fcall`) is read before
    /// and after the run and the report gives Redis µs per confirmed booking (every FCALL of
    /// the run, so for `mixed` the calendar's reads too). A cluster node's URL reads that node.
    #[arg(long)]
    redis_url: Option<String>,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    allow_remote: bool,
    /// Operator token: opens slots, registers receipts, configures the room, audits.
    #[arg(long, env = "SLOTD_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Concurrent workers (each has one call in flight), or Watch streams for `watch`.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the workers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Run length in seconds (bounded to 600).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests (whichever of duration and count comes first).
    #[arg(long)]
    requests: Option<u64>,
    /// Open loop: start requests at this rate (per second) whatever the latency; latency is then
    /// measured from each request's scheduled start (no coordinated omission). For `crowd`:
    /// the room's admissions per second (default 50).
    #[arg(long)]
    rate: Option<f64>,
    /// Applicants (receipts) registered before a booking run: an upper bound on bookings.
    #[arg(long, default_value_t = 30_000)]
    applicants: u32,
    /// Days opened for book-spread and calendar, from tomorrow at the post.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Seats per slot on those days.
    #[arg(long, default_value_t = 10_000)]
    seats: u32,
    /// Seats of the hot slot.
    #[arg(long, default_value_t = 500)]
    hot_seats: u32,
    #[arg(long, default_value = "BEIJING")]
    post: String,
    #[arg(long, default_value = "ALL_OTHERS")]
    category: String,
    /// slotd's process id: report its resident memory (VmRSS) before and during the run, and
    /// its CPU (`/proc/<pid>/stat`, utime + stime) over the run: per request and per confirmed
    /// booking for the request scenarios, per waiter-second for `crowd`. Repeat the flag for
    /// several replicas (summed).
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Names this run's applicants and hot slot (default: from the clock). With the same id, a
    /// `--skip-setup` run reuses what a `--setup-only` run opened and registered.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..1_000_000))]
    run_id: Option<u32>,
    /// Only open slots and register receipts, then exit (measure Redis without the setup).
    #[arg(long, conflicts_with = "skip_setup")]
    setup_only: bool,
    /// Assume a `--setup-only` run with the same `--run-id` and arguments did the setup.
    #[arg(long)]
    skip_setup: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// What one run measured.
#[derive(Debug, Default, Serialize)]
struct Report {
    scenario: Option<Scenario>,
    target: String,
    concurrency: usize,
    connections: usize,
    rate: Option<f64>,
    seconds: f64,
    requests: u64,
    ok: u64,
    throughput_per_sec: f64,
    ok_per_sec: f64,
    latency_us: Latency,
    /// Open loop only: how late each request started after its scheduled start (inside
    /// `latency_us`, which counts from the scheduled start): the generator's own delay.
    send_lag_us: Option<Latency>,
    /// Outcomes other than OK, by `CODE/REASON`.
    outcomes: BTreeMap<String, u64>,
    unexpected: BTreeMap<String, u64>,
    bookings_confirmed: u64,
    /// With `--redis-url` on a booking scenario: the store's FCALL cost over the run.
    redis: Option<RedisCost>,
    /// With `--server-pid` on a request scenario: slotd's own CPU over the run.
    server_cpu: Option<ServerCpu>,
    hot: Option<HotReport>,
    audit_slots_checked: u32,
    audit_violations: Vec<String>,
    watch_streams_open: u64,
    watch_messages: u64,
    crowd: Option<crowd::CrowdReport>,
    server_rss_kib_before: Option<u64>,
    server_rss_kib_peak: Option<u64>,
    applicant_pool_exhausted: bool,
    passed: bool,
}

#[derive(Debug, Default, Serialize)]
struct Latency {
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    mean: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// `cmdstat_fcall` of the store's Redis over a run (`INFO commandstats` before and after).
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct RedisCost {
    /// FCALLs Redis ran during the run.
    fcall_calls: u64,
    /// Their Redis CPU, µs (commandstats `usec`: the functions' commands and Lua together).
    fcall_usec: u64,
    /// `fcall_usec` per confirmed booking (null without one).
    usec_per_booking: Option<f64>,
    /// `fcall_usec` per FCALL.
    usec_per_fcall: Option<f64>,
}

/// `cmdstat_fcall` (calls, usec) from `INFO commandstats` of `url`; (0, 0) before any FCALL.
async fn fcall_stats(url: &str) -> Result<(u64, u64), String> {
    Ok(parse_fcall_stats(
        &crowd::redis_text(url, &["INFO", "commandstats"]).await?,
    ))
}

/// (calls, usec) of the `cmdstat_fcall:calls=..,usec=..,...` line; (0, 0) without one.
fn parse_fcall_stats(info: &str) -> (u64, u64) {
    crowd::command_stats(info)
        .get("fcall")
        .copied()
        .unwrap_or((0, 0))
}

fn redis_cost(before: (u64, u64), after: (u64, u64), bookings: u64) -> RedisCost {
    let calls = after.0.saturating_sub(before.0);
    let usec = after.1.saturating_sub(before.1);
    RedisCost {
        fcall_calls: calls,
        fcall_usec: usec,
        usec_per_booking: (bookings > 0).then(|| usec as f64 / bookings as f64),
        usec_per_fcall: (calls > 0).then(|| usec as f64 / calls as f64),
    }
}

/// slotd's CPU over a run (`/proc/<pid>/stat` utime + stime of every `--server-pid`, summed,
/// before and after; 10 ms resolution, so a run should use a few seconds of CPU).
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct ServerCpu {
    cpu_seconds: f64,
    /// CPU µs per request sent (every outcome).
    usec_per_request: Option<f64>,
    /// CPU µs per confirmed booking (null without one).
    usec_per_booking: Option<f64>,
}

fn server_cpu(before: f64, after: f64, requests: u64, bookings: u64) -> ServerCpu {
    let cpu = (after - before).max(0.0);
    let per = |n: u64| (n > 0).then(|| cpu * 1e6 / n as f64);
    ServerCpu {
        cpu_seconds: cpu,
        usec_per_request: per(requests),
        usec_per_booking: per(bookings),
    }
}

#[derive(Debug, Default, Serialize)]
struct HotReport {
    slot: String,
    capacity: u32,
    confirmed: u64,
    seats_left_after: u32,
    sold_out: bool,
    overbooked: bool,
}

/// The slots a run opened.
#[derive(Debug, Clone)]
struct Plan {
    post: String,
    category: String,
    first_day: NaiveDate,
    hot_day: NaiveDate,
    /// The hot slot's time: `crowd` takes another one than `book-hot`, so two runs a few
    /// seconds apart (CI) never share a hot slot.
    hot_time: &'static str,
    run: String,
}

impl Plan {
    fn day(&self, i: u32) -> String {
        (self.first_day + Days::days(i64::from(i)))
            .format("%Y-%m-%d")
            .to_string()
    }

    fn slot(&self, date: String, time: String) -> pb::SlotRef {
        pb::SlotRef {
            post_id: self.post.clone(),
            category: self.category.clone(),
            date,
            time,
        }
    }

    fn hot_slot(&self) -> pb::SlotRef {
        self.slot(
            self.hot_day.format("%Y-%m-%d").to_string(),
            self.hot_time.into(),
        )
    }

    fn applicant(&self, i: u32) -> pb::Applicant {
        pb::Applicant {
            passport_number: format!("L{}{i:07}", self.run),
            given_name: "Load".into(),
            surname: "Test".into(),
            ds160_confirmation: format!("AA{i:08}"),
            receipt_number: format!("R{}{i:07}", self.run),
        }
    }
}

/// State every worker shares.
struct Shared {
    args: Args,
    plan: Plan,
    channels: Vec<Channel>,
    token: Token,
    issued: AtomicU64,
    done: AtomicU64,
    next_applicant: AtomicU64,
    exhausted: AtomicBool,
    stop: AtomicBool,
    start: Instant,
    deadline: Instant,
    /// Open loop (`--rate`): the scheduled starts, from the pacer thread (`pace`).
    paced: Option<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Instant>>>,
}

type Token = Option<MetadataValue<tonic::metadata::Ascii>>;

/// Wraps an operator call with the bearer token.
fn with_token<T>(token: &Token, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", token.clone());
    }
    request
}

impl Shared {
    fn admin<T>(&self, message: T) -> Request<T> {
        with_token(&self.token, message)
    }

    /// The next request slot, or None when the run is over. With `--rate`, waits for the
    /// request's scheduled start (from the pacer thread) and returns it: latency counts from
    /// there, so a request that waits for a free worker counts its wait (no coordinated
    /// omission).
    async fn next(&self) -> Option<Instant> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(paced) = &self.paced {
            return paced.lock().await.recv().await;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        if self.args.requests.is_some_and(|limit| n >= limit) {
            return None;
        }
        let at = match self.args.rate {
            Some(rate) => self.start + Duration::from_secs_f64(n as f64 / rate),
            None => Instant::now(),
        };
        if at >= self.deadline {
            return None;
        }
        tokio::time::sleep_until(at.into()).await;
        Some(at)
    }

    /// The open loop's pacer, on a thread of its own: sleeps (nanosleep: tens of µs late at
    /// most) to each request's scheduled start and hands it to the next free worker. A worker
    /// sleeping in tokio's timer itself woke at the next millisecond tick instead, 0-1 ms late,
    /// and that lag counted in every latency (p50 +0.5 ms; `send_lag_us` reports what is left).
    fn pace(&self, rate: f64, tx: tokio::sync::mpsc::UnboundedSender<Instant>) {
        let mut n: u64 = 0;
        while !self.stop.load(Ordering::Relaxed) && self.args.requests.is_none_or(|l| n < l) {
            let at = self.start + Duration::from_secs_f64(n as f64 / rate);
            if at >= self.deadline {
                return;
            }
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send(at).is_err() {
                return;
            }
            n += 1;
        }
    }

    fn take_applicant(&self) -> Option<u32> {
        let i = self.next_applicant.fetch_add(1, Ordering::Relaxed);
        if i >= u64::from(self.args.applicants) {
            self.exhausted.store(true, Ordering::Relaxed);
            return None;
        }
        u32::try_from(i + 1).ok()
    }
}

/// How many times a booking whose answer was lost (UNAVAILABLE) is sent again with the same
/// request_id before its UNAVAILABLE counts as an outcome.
const LOST_ANSWER_RETRIES: usize = 3;

/// One worker's tally.
struct Tally {
    histogram: Histogram<u64>,
    /// Open loop: each request's start after its scheduled start, µs.
    lag: Histogram<u64>,
    ok: u64,
    outcomes: BTreeMap<String, u64>,
    unexpected: BTreeMap<String, u64>,
    hot_confirmed: u64,
    booked: u64,
}

impl Tally {
    fn new() -> Self {
        Self {
            // 1 µs .. 60 s, 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
            lag: Histogram::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
            ok: 0,
            outcomes: BTreeMap::new(),
            unexpected: BTreeMap::new(),
            hot_confirmed: 0,
            booked: 0,
        }
    }

    fn record(&mut self, started: Instant, outcome: &Result<(), Status>, expected: &[&str]) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(1));
        match outcome {
            Ok(()) => self.ok += 1,
            Err(status) => {
                let key = outcome_key(status);
                *self.outcomes.entry(key.clone()).or_default() += 1;
                if !expected.iter().any(|e| *e == reason(status)) {
                    *self.unexpected.entry(key).or_default() += 1;
                }
            }
        }
    }
}

fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

fn outcome_key(status: &Status) -> String {
    let reason = reason(status);
    if reason.is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}/{reason}", status.code())
    }
}

/// Refuses anything but loopback unless allowed.
async fn resolve(target: &str, allow_remote: bool) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target)
        .await
        .map_err(|e| format!("--target {target}: {e}"))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| format!("--target {target}: no address"))?;
    if !allow_remote && !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err(format!(
            "--target {target} is not a loopback address: slotd-load only loads 127.0.0.1/::1 unless --allow-remote"
        ));
    }
    Ok(first)
}

/// Connection window of the `watch` scenario's connections. h2 (0.4.20) closes a connection
/// with GOAWAY ENHANCE_YOUR_CALM ("too_many_data_frames", seen by tonic as RESOURCE_EXHAUSTED on
/// every stream of it) when the small DATA frames it has received but the application has not
/// yet read outweigh half the connection window. With ~208 Watch streams per connection, a
/// broadcast reaching all of them while the starved load generator is slow to poll can exceed
/// the adaptive window's small budget; a fixed 16 MiB window makes the budget 8 MiB.
const WATCH_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

async fn connect(addr: SocketAddr, n: usize, many_streams: bool) -> Result<Vec<Channel>, String> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let endpoint = if many_streams {
            endpoint
                .http2_adaptive_window(false)
                .initial_connection_window_size(WATCH_CONNECTION_WINDOW)
        } else {
            endpoint.http2_adaptive_window(true)
        };
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

fn today_at_post() -> NaiveDate {
    Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive()
}

fn needs_inventory(s: Scenario) -> bool {
    matches!(
        s,
        Scenario::BookSpread
            | Scenario::BookHot
            | Scenario::Calendar
            | Scenario::Mixed
            | Scenario::Crowd
    )
}

fn books(s: Scenario) -> bool {
    matches!(
        s,
        Scenario::BookSpread | Scenario::BookHot | Scenario::Mixed | Scenario::Crowd
    )
}

/// Scenarios that open and check the hot slot.
fn hot(s: Scenario) -> bool {
    matches!(s, Scenario::BookHot | Scenario::Crowd)
}

/// What setup needs: the run's arguments, plan, connections and token.
struct Setup<'a> {
    args: &'a Args,
    plan: &'a Plan,
    channels: &'a [Channel],
    token: &'a Token,
}

/// Opens the spread days and the hot slot, and registers the applicants' receipts.
async fn setup(s: Setup<'_>) -> Result<(), String> {
    let (args, plan) = (s.args, s.plan);
    let mut admin = AdminServiceClient::new(s.channels[0].clone());
    let all_days = (1..=7).collect::<Vec<i32>>();
    let open =
        |from: String, to: String, first: &str, last: &str, seats: u32| pb::OpenSlotsRequest {
            post_id: plan.post.clone(),
            category: plan.category.clone(),
            from_date: from,
            to_date: to,
            weekdays: all_days.clone(),
            first_time: first.into(),
            last_time: last.into(),
            seats_per_slot: seats,
        };
    admin
        .open_slots(with_token(
            s.token,
            open(
                plan.day(0),
                plan.day(args.days - 1),
                "08:00",
                "11:45",
                args.seats,
            ),
        ))
        .await
        .map_err(|e| format!("open slots: {e}"))?;
    if hot(args.scenario) {
        let hot = plan.hot_slot();
        admin
            .open_slots(with_token(
                s.token,
                open(
                    hot.date.clone(),
                    hot.date,
                    &hot.time,
                    &hot.time,
                    args.hot_seats,
                ),
            ))
            .await
            .map_err(|e| format!("open hot slot: {e}"))?;
    }
    if books(args.scenario) {
        register_receipts(&s).await?;
    }
    Ok(())
}

async fn register_receipts(s: &Setup<'_>) -> Result<(), String> {
    let total = s.args.applicants;
    let next = Arc::new(AtomicU64::new(1));
    let paid_at = (Utc::now() - Days::days(1)).to_rfc3339();
    let workers = 64.min(total.max(1) as usize);
    let bar = progress(u64::from(total), "registering receipts");
    let mut tasks: tokio::task::JoinSet<Result<(), String>> = tokio::task::JoinSet::new();
    for w in 0..workers {
        let next = next.clone();
        let paid_at = paid_at.clone();
        let bar = bar.clone();
        let plan = s.plan.clone();
        let token = s.token.clone();
        let mut admin = AdminServiceClient::new(s.channels[w % s.channels.len()].clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Ok(i) = u32::try_from(i) else {
                    return Ok(());
                };
                if i > total {
                    return Ok(());
                }
                let a = plan.applicant(i);
                admin
                    .register_receipt(with_token(
                        &token,
                        pb::RegisterReceiptRequest {
                            receipt_number: a.receipt_number,
                            passport_number: a.passport_number,
                            paid_at: paid_at.clone(),
                            amount: "185.00".into(),
                            currency: "USD".into(),
                        },
                    ))
                    .await
                    .map_err(|e| format!("register receipt: {e}"))?;
                bar.inc(1);
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.map_err(|e| e.to_string())??;
    }
    bar.finish_and_clear();
    Ok(())
}

fn progress(len: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec}")
    {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar
}

/// A client per worker, over one of the shared connections.
struct Clients {
    health: HealthClient<Channel>,
    booking: BookingServiceClient<Channel>,
    calendar: CalendarServiceClient<Channel>,
    room: WaitingRoomServiceClient<Channel>,
}

async fn worker(shared: Arc<Shared>, id: usize) -> Tally {
    let channel = shared.channels[id % shared.channels.len()].clone();
    let mut c = Clients {
        health: HealthClient::new(channel.clone()),
        booking: BookingServiceClient::new(channel.clone()),
        calendar: CalendarServiceClient::new(channel.clone()),
        room: WaitingRoomServiceClient::new(channel),
    };
    let mut tally = Tally::new();
    // An applicant is used until one of its bookings succeeds (a refused booking leaves it free).
    let mut applicant: Option<u32> = None;
    let mut n: u64 = 0;
    let scenario = shared.args.scenario;
    while let Some(started) = shared.next().await {
        n += 1;
        if shared.paced.is_some() {
            let lag = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            tally.lag.saturating_record(lag.max(1));
        }
        let op = match scenario {
            Scenario::Mixed => match rand::rng().random_range(0..10) {
                0..=5 => Scenario::Calendar,
                6..=8 => Scenario::BookSpread,
                _ => Scenario::Ping,
            },
            s => s,
        };
        match op {
            Scenario::Ping => {
                let outcome = c
                    .health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|_| ());
                tally.record(started, &outcome, &[]);
            }
            Scenario::Calendar => {
                let outcome = calendar_call(&shared, &mut c.calendar, n).await;
                tally.record(started, &outcome, &[]);
            }
            Scenario::Join => {
                let outcome = c
                    .room
                    .join(pb::JoinRequest {
                        client_key: format!(
                            "load-{}-{id}-{n}.Kq7xZ2pLm9TvW4rN8sYb3c",
                            shared.plan.run
                        ),
                    })
                    .await
                    .map(|_| ());
                tally.record(started, &outcome, &[]);
            }
            Scenario::BookSpread | Scenario::BookHot => {
                let i = match applicant {
                    Some(i) => i,
                    None => match shared.take_applicant() {
                        Some(i) => i,
                        None => break,
                    },
                };
                applicant = Some(i);
                let hot = op == Scenario::BookHot;
                let slot = if hot {
                    shared.plan.hot_slot()
                } else {
                    let (day, minutes) = {
                        let mut rng = rand::rng();
                        (
                            rng.random_range(0..shared.args.days),
                            8 * 60 + 15 * rng.random_range(0..16u32),
                        )
                    };
                    shared.plan.slot(
                        shared.plan.day(day),
                        format!("{:02}:{:02}", minutes / 60, minutes % 60),
                    )
                };
                let request = pb::BookAppointmentRequest {
                    request_id: format!("load-{}-{id}-{n}", shared.plan.run),
                    slot: Some(slot),
                    applicants: vec![shared.plan.applicant(i)],
                };
                let mut outcome = c
                    .booking
                    .book_appointment(request.clone())
                    .await
                    .map(|_| ());
                // UNAVAILABLE means the answer was lost (a store timeout): the booking may have
                // committed. A real client sends the same request again (README, idempotency)
                // and gets the first outcome replayed; a new request_id would find its own
                // passport booked (RECEIPT_IN_USE) forever. A lost answer is the machine's
                // speed, not a wrong answer: counted apart, never as unexpected.
                for _ in 0..LOST_ANSWER_RETRIES {
                    match &outcome {
                        Err(status) if status.code() == tonic::Code::Unavailable => {
                            *tally
                                .outcomes
                                .entry(format!("{} (answer lost, sent again)", outcome_key(status)))
                                .or_default() += 1;
                            outcome = c
                                .booking
                                .book_appointment(request.clone())
                                .await
                                .map(|_| ());
                        }
                        _ => break,
                    }
                }
                if outcome.is_ok() {
                    applicant = None;
                    tally.booked += 1;
                    if hot {
                        tally.hot_confirmed += 1;
                    }
                }
                let expected: &[&str] = if hot { &["SLOT_FULL"] } else { &[] };
                tally.record(started, &outcome, expected);
            }
            Scenario::Watch | Scenario::Mixed | Scenario::Crowd => break,
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

async fn calendar_call(
    shared: &Shared,
    calendar: &mut CalendarServiceClient<Channel>,
    n: u64,
) -> Result<(), Status> {
    let plan = &shared.plan;
    if n % 2 == 0 {
        calendar
            .list_available_dates(pb::ListAvailableDatesRequest {
                post_id: plan.post.clone(),
                category: plan.category.clone(),
                from_date: plan.day(0),
                to_date: plan.day(shared.args.days - 1),
            })
            .await
            .map(|_| ())
    } else {
        let day = rand::rng().random_range(0..shared.args.days);
        calendar
            .list_slots(pb::ListSlotsRequest {
                post_id: plan.post.clone(),
                category: plan.category.clone(),
                date: plan.day(day),
            })
            .await
            .map(|_| ())
    }
}

fn room_config(paused: bool, enabled: bool) -> pb::WaitingRoomConfig {
    pb::WaitingRoomConfig {
        enabled,
        admissions_per_minute: 6_000_000,
        max_active_sessions: 10_000_000,
        session_duration_seconds: 300,
        waiter_timeout_seconds: 60,
        paused,
        gate_calendar: false,
    }
}

async fn configure_room(shared: &Shared, config: pb::WaitingRoomConfig) -> Result<(), String> {
    AdminServiceClient::new(shared.channels[0].clone())
        .configure_waiting_room(shared.admin(pb::ConfigureWaitingRoomRequest {
            config: Some(config),
        }))
        .await
        .map(|_| ())
        .map_err(|e| format!("configure waiting room: {e}"))
}

/// Joins `--concurrency` tickets and holds a Watch stream on each until the deadline.
async fn watch_run(shared: &Arc<Shared>, report: &mut Report) -> Result<(), String> {
    let open = Arc::new(AtomicU64::new(0));
    let messages = Arc::new(AtomicU64::new(0));
    let failures: Arc<std::sync::Mutex<BTreeMap<String, u64>>> = Arc::default();
    let fail = |failures: &std::sync::Mutex<BTreeMap<String, u64>>, key: String| {
        if let Ok(mut f) = failures.lock() {
            *f.entry(key).or_default() += 1;
        }
    };
    let mut tasks = Vec::new();
    for id in 0..shared.args.concurrency {
        let shared = shared.clone();
        let (open, messages, failures) = (open.clone(), messages.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let channel = shared.channels[id % shared.channels.len()].clone();
            let mut room = WaitingRoomServiceClient::new(channel);
            let joined = room
                .join(pb::JoinRequest {
                    client_key: format!("watch-{}-{id}.Kq7xZ2pLm9TvW4rN8sYb3c", shared.plan.run),
                })
                .await;
            let joined = match joined {
                Ok(j) => j,
                Err(e) => return fail(&failures, format!("join {}", outcome_key(&e))),
            };
            let joined = joined.into_inner();
            let ticket_id = joined.status.map(|s| s.ticket_id).unwrap_or_default();
            let stream = room
                .watch(pb::WatchRequest {
                    ticket_id,
                    ticket_secret: joined.ticket_secret,
                })
                .await;
            let stream = match stream {
                Ok(s) => s,
                Err(e) => return fail(&failures, format!("watch {}", outcome_key(&e))),
            };
            open.fetch_add(1, Ordering::Relaxed);
            let mut stream = stream.into_inner();
            let deadline = tokio::time::Instant::from_std(shared.deadline);
            loop {
                match tokio::time::timeout_at(deadline, stream.message()).await {
                    Ok(Ok(Some(_))) => {
                        messages.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(None)) => {
                        fail(&failures, "stream ended early".into());
                        break;
                    }
                    Ok(Err(e)) => {
                        fail(&failures, format!("stream {}", outcome_key(&e)));
                        break;
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    let mut peak = report.server_rss_kib_before;
    while Instant::now() < shared.deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(shared.args.server_pid.first().copied().and_then(rss_kib));
    }
    for t in tasks {
        let _ = t.await;
    }
    report.watch_streams_open = open.load(Ordering::Relaxed);
    report.watch_messages = messages.load(Ordering::Relaxed);
    report.server_rss_kib_peak = peak;
    if let Ok(f) = failures.lock() {
        report.unexpected.extend(f.clone());
    }
    Ok(())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// AuditInventory over every day the run opened, and the hot slot's count.
async fn audit(shared: &Shared, report: &mut Report) -> Result<(), String> {
    let plan = &shared.plan;
    let mut admin = AdminServiceClient::new(shared.channels[0].clone());
    let last = if hot(shared.args.scenario) {
        plan.hot_day.format("%Y-%m-%d").to_string()
    } else {
        plan.day(shared.args.days - 1)
    };
    let audit = admin
        .audit_inventory(shared.admin(pb::AuditInventoryRequest {
            post_id: plan.post.clone(),
            category: plan.category.clone(),
            from_date: plan.day(0),
            to_date: last,
        }))
        .await
        .map_err(|e| format!("audit inventory: {e}"))?
        .into_inner();
    report.audit_slots_checked = audit.slots_checked;
    report.audit_violations = audit
        .violations
        .iter()
        .map(|v| {
            let slot = v
                .slot
                .as_ref()
                .map(|s| format!("{}/{}/{} {}", s.post_id, s.category, s.date, s.time))
                .unwrap_or_default();
            format!("{slot}: {}: {}", v.rule, v.detail)
        })
        .collect();
    if let Some(hot) = report.hot.as_mut() {
        let slot = plan.hot_slot();
        let slots = CalendarServiceClient::new(shared.channels[0].clone())
            .list_slots(pb::ListSlotsRequest {
                post_id: slot.post_id,
                category: slot.category,
                date: slot.date,
            })
            .await
            .map_err(|e| format!("list hot slot: {e}"))?
            .into_inner()
            .slots;
        hot.seats_left_after = slots
            .iter()
            .find(|s| s.time == plan.hot_time)
            .map(|s| s.seats_available)
            .unwrap_or(0);
        hot.sold_out = hot.seats_left_after == 0;
        hot.overbooked = hot.confirmed > u64::from(hot.capacity);
    }
    Ok(())
}

async fn run(args: Args) -> Result<Report, String> {
    if !(args.duration > 0.0 && args.duration <= 600.0) {
        return Err("--duration must be in (0, 600] seconds".into());
    }
    if args.days == 0 || args.days > 300 {
        return Err("--days must be 1..=300".into());
    }
    if args.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
        return Err("--rate must be positive".into());
    }
    let addr = resolve(&args.target, args.allow_remote).await?;
    let crowd_run = args.scenario == Scenario::Crowd;
    if crowd_run {
        if !(0.0..=1.0).contains(&args.abandon) {
            return Err("--abandon must be 0-1".into());
        }
        if !(5..=3_600).contains(&args.waiter_timeout) {
            return Err("--waiter-timeout must be 5-3600".into());
        }
        if (args.applicants as usize) < args.concurrency {
            return Err("--applicants must be at least --concurrency for crowd".into());
        }
    }
    let mut addrs = Vec::new();
    for a in &args.addrs {
        addrs.push(resolve(a, args.allow_remote).await?);
    }
    if addrs.is_empty() {
        addrs.push(addr);
    }
    let token = match &args.admin_token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| "--admin-token is not ASCII".to_string())?,
        ),
        None if args.scenario != Scenario::Ping => {
            return Err(format!(
                "--admin-token (or SLOTD_ADMIN_TOKEN) is needed for {:?}: the run opens slots and audits them",
                args.scenario
            ))
        }
        None => None,
    };
    let channels = if crowd_run {
        // Enough connections for one Watch stream per client, spread over the replicas.
        let needed = args.concurrency.div_ceil(crowd::STREAMS_PER_CONNECTION);
        let per_addr = needed.max(args.connections).div_ceil(addrs.len());
        let mut channels = Vec::new();
        for _ in 0..per_addr {
            for a in &addrs {
                channels.extend(connect(*a, 1, true).await?);
            }
        }
        channels
    } else {
        connect(addr, args.connections, args.scenario == Scenario::Watch).await?
    };
    let today = today_at_post();
    let stamp = Utc::now().timestamp();
    let run_number = args
        .run_id
        .map(i64::from)
        .unwrap_or(stamp.rem_euclid(1_000_000));
    let run = format!("{run_number:06}");
    let plan = Plan {
        post: args.post.clone(),
        category: args.category.clone(),
        first_day: today + Days::days(1),
        // A fresh hot slot per run (most of the time), beyond the spread days.
        hot_day: today + Days::days(i64::from(args.days) + 1 + run_number.rem_euclid(300)),
        hot_time: if args.scenario == Scenario::Crowd {
            "09:00"
        } else {
            "08:00"
        },
        run,
    };
    if needs_inventory(args.scenario) && !args.skip_setup {
        setup(Setup {
            args: &args,
            plan: &plan,
            channels: &channels,
            token: &token,
        })
        .await?;
    }
    if args.setup_only {
        return Ok(Report {
            scenario: Some(args.scenario),
            target: addr.to_string(),
            passed: true,
            ..Report::default()
        });
    }
    let now = Instant::now();
    let mut shared = Shared {
        plan,
        channels,
        token,
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        next_applicant: AtomicU64::new(0),
        exhausted: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        start: now,
        deadline: now,
        paced: None,
        args,
    };
    let mut report = Report {
        scenario: Some(shared.args.scenario),
        target: addr.to_string(),
        concurrency: shared.args.concurrency,
        connections: shared.args.connections,
        rate: shared.args.rate,
        ..Report::default()
    };
    let scenario = shared.args.scenario;
    if matches!(scenario, Scenario::Join | Scenario::Watch) {
        configure_room(&shared, room_config(true, true)).await?;
    }
    if hot(scenario) {
        report.hot = Some(HotReport {
            slot: {
                let s = shared.plan.hot_slot();
                format!("{}/{}/{} {}", s.post_id, s.category, s.date, s.time)
            },
            capacity: shared.args.hot_seats,
            ..HotReport::default()
        });
    }
    report.server_rss_kib_before = shared.args.server_pid.first().copied().and_then(rss_kib);
    let redis_url = shared.args.redis_url.clone().filter(|_| {
        matches!(
            scenario,
            Scenario::BookSpread | Scenario::BookHot | Scenario::Mixed
        )
    });
    let redis_before = match &redis_url {
        Some(url) => Some(fcall_stats(url).await?),
        None => None,
    };
    let request_run = !matches!(scenario, Scenario::Watch | Scenario::Crowd);
    let cpu_before = request_run
        .then(|| crowd::sum_over(&shared.args.server_pid, crowd::process_cpu))
        .flatten();

    let start = Instant::now();
    shared.start = start;
    shared.deadline = start + Duration::from_secs_f64(shared.args.duration);
    let pacer = match (request_run, shared.args.rate) {
        (true, Some(rate)) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            shared.paced = Some(tokio::sync::Mutex::new(rx));
            Some((rate, tx))
        }
        _ => None,
    };
    let shared = Arc::new(shared);
    if let Some((rate, tx)) = pacer {
        let s = shared.clone();
        std::thread::spawn(move || s.pace(rate, tx));
    }
    let outcome = if scenario == Scenario::Watch {
        watch_run(&shared, &mut report).await
    } else if scenario == Scenario::Crowd {
        let run = crowd::run(
            crowd::Crowd {
                addrs: &addrs,
                channels: &shared.channels,
                token: &shared.token,
                plan: &shared.plan,
                clients: shared.args.concurrency,
                rate: shared.args.rate.unwrap_or(50.0),
                abandon: shared.args.abandon,
                waiter_timeout_secs: shared.args.waiter_timeout,
                hot_seats: shared.args.hot_seats,
                duration: Duration::from_secs_f64(shared.args.duration),
                redis_url: shared.args.redis_url.as_deref(),
                server_pids: &shared.args.server_pid,
            },
            &mut report.unexpected,
        )
        .await;
        run.map(|crowd| {
            if let Some(h) = report.hot.as_mut() {
                h.confirmed = crowd.booked;
            }
            report.bookings_confirmed = crowd.booked;
            report.requests = crowd.joined;
            report.crowd = Some(crowd);
        })
    } else {
        drive(&shared, &mut report).await
    };
    report.seconds = start.elapsed().as_secs_f64();
    // Before the audit, which costs slotd CPU and FCALLs too.
    if let Some(before) = cpu_before {
        if let Some(after) = crowd::sum_over(&shared.args.server_pid, crowd::process_cpu) {
            report.server_cpu = Some(server_cpu(
                before,
                after,
                report.requests,
                report.bookings_confirmed,
            ));
        }
    }
    if let (Some(before), Some(url), true) = (redis_before, &redis_url, outcome.is_ok()) {
        let after = fcall_stats(url).await?;
        report.redis = Some(redis_cost(before, after, report.bookings_confirmed));
    }
    if matches!(scenario, Scenario::Join | Scenario::Watch) {
        // Leave the room as other scenarios expect it: off (booking needs no token).
        configure_room(&shared, room_config(false, false)).await?;
    }
    outcome?;
    report.throughput_per_sec = report.requests as f64 / report.seconds.max(1e-9);
    report.ok_per_sec = report.ok as f64 / report.seconds.max(1e-9);
    report.applicant_pool_exhausted = shared.exhausted.load(Ordering::Relaxed);
    if needs_inventory(scenario) {
        audit(&shared, &mut report).await?;
    }
    let overbooked = report.hot.as_ref().is_some_and(|h| h.overbooked);
    let crowd_ok = report.crowd.as_ref().is_none_or(|c| {
        c.admission_inversions == 0 && c.rate_bound_violations == 0 && !c.overbooked
    });
    report.passed = report.unexpected.is_empty()
        && report.audit_violations.is_empty()
        && !overbooked
        && crowd_ok;
    Ok(report)
}

/// Runs the workers with a live progress bar, then merges their tallies into the report.
async fn drive(shared: &Arc<Shared>, report: &mut Report) -> Result<(), String> {
    let bar = match shared.args.requests {
        Some(n) => progress(n, "requests"),
        None => progress((shared.args.duration * 1000.0) as u64, "elapsed ms"),
    };
    let workers: Vec<_> = (0..shared.args.concurrency.max(1))
        .map(|id| tokio::spawn(worker(shared.clone(), id)))
        .collect();
    let ticker = {
        let shared = shared.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = shared.done.load(Ordering::Relaxed);
                let elapsed = shared.start.elapsed();
                if shared.args.requests.is_some() {
                    bar.set_position(done);
                } else {
                    bar.set_position(elapsed.as_millis() as u64);
                }
                bar.set_message(format!(
                    "{done} requests, {:.0}/s",
                    done as f64 / elapsed.as_secs_f64().max(1e-3)
                ));
            }
        })
    };
    let mut total = Tally::new();
    let mut hot = 0;
    let mut booked = 0;
    for w in workers {
        let tally = w.await.map_err(|e| format!("worker: {e}"))?;
        total
            .histogram
            .add(&tally.histogram)
            .map_err(|e| format!("histogram: {e}"))?;
        total
            .lag
            .add(&tally.lag)
            .map_err(|e| format!("histogram: {e}"))?;
        total.ok += tally.ok;
        hot += tally.hot_confirmed;
        booked += tally.booked;
        for (k, v) in tally.outcomes {
            *total.outcomes.entry(k).or_default() += v;
        }
        for (k, v) in tally.unexpected {
            *total.unexpected.entry(k).or_default() += v;
        }
    }
    ticker.abort();
    bar.finish_and_clear();
    report.requests = total.histogram.len();
    report.ok = total.ok;
    report.latency_us = Latency::of(&total.histogram);
    report.send_lag_us = shared.paced.is_some().then(|| Latency::of(&total.lag));
    report.outcomes = total.outcomes;
    report.unexpected = total.unexpected;
    report.bookings_confirmed = booked;
    if let Some(h) = report.hot.as_mut() {
        h.confirmed = hot;
    }
    Ok(())
}

fn print_human(r: &Report) {
    if let Some(c) = &r.crowd {
        crowd::print(c);
    } else {
        print_requests(r);
    }
    print_checks(r);
}

fn print_requests(r: &Report) {
    println!(
        "{:?}: {} requests in {:.2} s over {} workers / {} connections{}",
        r.scenario.unwrap_or(Scenario::Ping),
        r.requests,
        r.seconds,
        r.concurrency,
        r.connections,
        r.rate
            .map(|x| format!(", open loop at {x}/s"))
            .unwrap_or_default()
    );
    println!(
        "throughput {:.0} req/s ({:.0} OK/s); latency µs p50 {} p90 {} p99 {} max {} mean {:.0}",
        r.throughput_per_sec,
        r.ok_per_sec,
        r.latency_us.p50,
        r.latency_us.p90,
        r.latency_us.p99,
        r.latency_us.max,
        r.latency_us.mean
    );
    if let Some(l) = &r.send_lag_us {
        println!(
            "  open loop: requests started µs after their scheduled start p50 {} p99 {} max {} \
             (inside the latency, which counts from the scheduled start)",
            l.p50, l.p99, l.max
        );
    }
    for (k, v) in &r.outcomes {
        println!("  {k}: {v}");
    }
    if let Some(c) = &r.redis {
        println!(
            "redis: {} FCALLs, {} µs; {} µs per confirmed booking ({} bookings), {} µs per FCALL",
            c.fcall_calls,
            c.fcall_usec,
            c.usec_per_booking
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "-".into()),
            r.bookings_confirmed,
            c.usec_per_fcall
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    print_server_cpu(r);
}

fn print_server_cpu(r: &Report) {
    if let Some(c) = &r.server_cpu {
        let us = |x: Option<f64>| x.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
        println!(
            "slotd CPU: {:.2} s; {} µs per request, {} µs per confirmed booking",
            c.cpu_seconds,
            us(c.usec_per_request),
            us(c.usec_per_booking)
        );
    }
}

fn print_checks(r: &Report) {
    if let Some(h) = &r.hot {
        println!(
            "hot slot {}: capacity {}, confirmed {}, seats left {}, sold out {}, overbooked {}",
            h.slot, h.capacity, h.confirmed, h.seats_left_after, h.sold_out, h.overbooked
        );
    }
    if r.watch_streams_open > 0 {
        println!(
            "watch: {} streams open, {} messages",
            r.watch_streams_open, r.watch_messages
        );
    }
    if let (Some(a), Some(b)) = (r.server_rss_kib_before, r.server_rss_kib_peak) {
        println!("server RSS: {a} KiB before, {b} KiB peak");
    } else if let Some(a) = r.server_rss_kib_before {
        println!("server RSS: {a} KiB before");
    }
    if r.applicant_pool_exhausted {
        println!("note: the applicant pool (--applicants) ran out before the end");
    }
    println!(
        "audit: {} slots checked, {} violations",
        r.audit_slots_checked,
        r.audit_violations.len()
    );
    for v in &r.audit_violations {
        println!("  violation {v}");
    }
    for (k, v) in &r.unexpected {
        println!("  UNEXPECTED {k}: {v}");
    }
    println!("{}", if r.passed { "PASS" } else { "FAIL" });
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slotd-load: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("slotd-load: json: {e}"),
                }
            } else {
                print_human(&report);
            }
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("slotd-load: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fcall_stats_read_from_commandstats() {
        let info = "# Commandstats\r\ncmdstat_get:calls=3,usec=4,usec_per_call=1.33,rejected_calls=0,failed_calls=0\r\ncmdstat_fcall:calls=200,usec=5000,usec_per_call=25.00,rejected_calls=0,failed_calls=1\r\n";
        assert_eq!(parse_fcall_stats(info), (200, 5000));
        assert_eq!(parse_fcall_stats("# Commandstats\r\n"), (0, 0));
        let c = redis_cost((100, 1000), (300, 6000), 50);
        assert_eq!((c.fcall_calls, c.fcall_usec), (200, 5000));
        assert_eq!(c.usec_per_booking, Some(100.0));
        assert_eq!(c.usec_per_fcall, Some(25.0));
        assert_eq!(redis_cost((0, 0), (0, 0), 0).usec_per_booking, None);
    }

    #[test]
    fn server_cpu_per_request_and_per_booking() {
        let c = server_cpu(1.5, 3.5, 40_000, 20_000);
        assert!((c.cpu_seconds - 2.0).abs() < 1e-9);
        assert!((c.usec_per_request.unwrap_or(0.0) - 50.0).abs() < 1e-9);
        assert!((c.usec_per_booking.unwrap_or(0.0) - 100.0).abs() < 1e-9);
        let none = server_cpu(2.0, 2.0, 10, 0);
        assert_eq!(none.usec_per_booking, None);
        assert_eq!(none.cpu_seconds, 0.0);
    }
}
