//! The `crowd` scenario: a flash crowd through the waiting room, over the public gRPC API only
//! (so it measures any implementation of the room).
//!
//! 1. The room is configured paused (AdminService) and N clients join in one burst, spread over
//!    every `--addr` replica; each opens a Watch stream (a connection carries at most
//!    `STREAMS_PER_CONNECTION` of them, below h2's default of 256 concurrent streams).
//! 2. The room is unpaused at `--rate` admissions per second. Each admitted client holds the hot
//!    slot with its token and confirms the hold; a share (`--abandon`) closes its stream
//!    mid-wait instead.
//! 3. Measured over the waiting phase (streams open): Redis CPU (`INFO cpu` of `--redis-url`)
//!    and slotd CPU (`/proc/<pid>/stat` of every `--server-pid`) per waiter-second, slotd RSS
//!    per open stream, messages per waiter-second (waiting-state messages received in the
//!    waiting phase, as the waiter-seconds are counted; a waiter's own state changes, the
//!    admission and an end, and the burst's messages before the unpause are counted apart),
//!    join throughput. Checked: admission order against join order (inversions), the rate bound
//!    `burst + rate·t` (violations), and overbooking of the hot slot (with the run's audit).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

use slotd::api::pb;
use slotd::api::pb::admin_service_client::AdminServiceClient;
use slotd::api::pb::booking_service_client::BookingServiceClient;
use slotd::api::pb::waiting_room_service_client::WaitingRoomServiceClient;

use super::{outcome_key, reason, rss_kib, with_token, Plan, Token};

/// Watch streams per HTTP/2 connection (h2 allows 256 concurrent streams by default).
pub const STREAMS_PER_CONNECTION: usize = 200;
/// Slack of the rate-bound check, in admissions (a tick's rounding).
const RATE_SLACK: f64 = 1.0;

/// What the crowd run measured and checked.
#[derive(Debug, Default, Serialize)]
pub struct CrowdReport {
    pub clients: usize,
    pub replicas: usize,
    pub connections: usize,
    pub admissions_per_sec: f64,
    pub joined: u64,
    pub join_seconds: f64,
    pub joins_per_sec: f64,
    /// Redis CPU (`INFO cpu`) over the burst (phase 1): every join, every stream's first status
    /// read and the replicas' ticks meanwhile.
    pub burst_redis_cpu_us: Option<f64>,
    /// `burst_redis_cpu_us` per client joined (its join and its Watch stream's first read).
    pub burst_redis_cpu_us_per_client: Option<f64>,
    pub streams_open_peak: u64,
    pub abandoned: u64,
    pub admitted_seen: u64,
    /// Live (not abandoned) clients never admitted before the deadline.
    pub not_admitted: u64,
    pub held: u64,
    pub booked: u64,
    pub hot_capacity: u32,
    pub waiter_seconds: f64,
    /// Stream messages of the waiting state received in the waiting phase (after the unpause,
    /// the span `waiter_seconds` covers).
    pub waiting_messages: u64,
    pub messages_per_waiter_second: f64,
    /// Waiting-state messages received before the unpause (each stream's first status and any
    /// heartbeat during the burst): outside the measured phase, reported apart.
    pub burst_messages: u64,
    /// Messages of a waiter's own state change (ADMITTED with its token, EXPIRED, LEFT,
    /// REVOKED, COMPLETED): not counted in `waiting_messages`, as the issue defines the target.
    pub state_messages: u64,
    pub redis_cpu_us: Option<f64>,
    pub redis_cpu_us_per_waiter_second: Option<f64>,
    /// `INFO commandstats` over the waiting phase (reset at the unpause): per command, calls and
    /// usec. Commands a script runs are counted under their own names as well as in its
    /// `FCALL`, so the usec of all rows do not add up to the CPU.
    pub redis_commands: BTreeMap<String, (u64, u64)>,
    pub slotd_cpu_us: Option<f64>,
    pub slotd_cpu_us_per_waiter_second: Option<f64>,
    pub slotd_rss_kib_before: Option<u64>,
    pub slotd_rss_kib_peak: Option<u64>,
    pub slotd_rss_bytes_per_stream: Option<f64>,
    pub admission_inversions: u64,
    pub rate_bound_violations: u64,
    pub overbooked: bool,
}

/// Everything the run needs from the caller.
pub struct Crowd<'a> {
    pub addrs: &'a [SocketAddr],
    pub channels: &'a [Channel],
    pub token: &'a Token,
    pub plan: &'a Plan,
    pub clients: usize,
    pub rate: f64,
    pub abandon: f64,
    /// The room's waiter timeout during the run (`--waiter-timeout`).
    pub waiter_timeout_secs: u32,
    pub hot_seats: u32,
    pub duration: Duration,
    pub redis_url: Option<&'a str>,
    pub server_pids: &'a [u32],
}

/// One client's story.
#[derive(Debug, Default, Clone)]
struct Client {
    ticket_number: u64,
    admission_number: Option<u64>,
    /// Seconds after the unpause at which the admission was first seen.
    admitted_after: Option<f64>,
    abandoned: bool,
}

#[derive(Default)]
struct Counters {
    joined: AtomicU64,
    open: AtomicI64,
    open_peak: AtomicU64,
    waiting: AtomicI64,
    waiting_messages: AtomicU64,
    burst_messages: AtomicU64,
    state_messages: AtomicU64,
    held: AtomicU64,
    booked: AtomicU64,
    abandoned: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn fail(&self, key: String) {
        if let Ok(mut f) = self.failures.lock() {
            *f.entry(key).or_default() += 1;
        }
    }
}

fn room(paused: bool, enabled: bool, rate: f64, waiter_timeout_secs: u32) -> pb::WaitingRoomConfig {
    pb::WaitingRoomConfig {
        enabled,
        admissions_per_minute: (rate * 60.0).round().clamp(1.0, 6_000_000.0) as u32,
        max_active_sessions: 10_000_000,
        session_duration_seconds: 300,
        // Abandoned places are skipped after this (`--waiter-timeout`).
        waiter_timeout_seconds: waiter_timeout_secs,
        paused,
        gate_calendar: false,
    }
}

async fn configure(
    channel: &Channel,
    token: &Token,
    config: pb::WaitingRoomConfig,
) -> Result<(), String> {
    AdminServiceClient::new(channel.clone())
        .configure_waiting_room(with_token(
            token,
            pb::ConfigureWaitingRoomRequest {
                config: Some(config),
            },
        ))
        .await
        .map(|_| ())
        .map_err(|e| format!("configure waiting room: {e}"))
}

async fn admitted_total(channel: &Channel, token: &Token) -> Result<u64, String> {
    Ok(AdminServiceClient::new(channel.clone())
        .get_waiting_room_stats(with_token(token, pb::GetWaitingRoomStatsRequest {}))
        .await
        .map_err(|e| format!("waiting room stats: {e}"))?
        .into_inner()
        .admitted_total)
}

/// CPU seconds Redis has used (user + system), from `INFO cpu`.
async fn redis_cpu(url: &str) -> Result<f64, String> {
    let info = redis_text(url, &["INFO", "cpu"]).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| format!("INFO cpu has no {name}"))
    };
    Ok(field("used_cpu_user:")? + field("used_cpu_sys:")?)
}

/// Runs one Redis command of plain arguments, answering its text (`INFO commandstats`, `CONFIG
/// RESETSTAT`, `SLOWLOG RESET`).
pub(crate) async fn redis_text(url: &str, args: &[&str]) -> Result<String, String> {
    let url = url.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let client = redis::Client::open(url.as_str()).map_err(|e| format!("--redis-url: {e}"))?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .map_err(|e| format!("--redis-url: {e}"))?;
        let mut cmd = redis::cmd(&args[0]);
        for a in &args[1..] {
            cmd.arg(a);
        }
        let value: redis::Value = cmd
            .query(&mut conn)
            .map_err(|e| format!("{}: {e}", args.join(" ")))?;
        Ok(match value {
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::VerbatimString { text, .. } => text,
            redis::Value::SimpleString(s) => s,
            _ => String::new(),
        })
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `INFO commandstats` as command -> (calls, usec).
pub(crate) fn command_stats(info: &str) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some((name, fields)) = line.trim().split_once(':') else {
            continue;
        };
        let Some(name) = name.strip_prefix("cmdstat_") else {
            continue;
        };
        let field = |key: &str| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(key))
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let (Some(calls), Some(usec)) = (field("calls="), field("usec=")) {
            out.insert(name.to_owned(), (calls, usec));
        }
    }
    out
}

/// CPU seconds a process has used (utime + stime of all its threads; USER_HZ is 100 on Linux).
pub(crate) fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

pub(crate) fn sum_over<T: std::iter::Sum>(pids: &[u32], f: impl Fn(u32) -> Option<T>) -> Option<T> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| f(*p)).sum()
}

fn admission_token<T>(message: T, token: &str) -> Result<Request<T>, Status> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = token
        .parse()
        .map_err(|_| Status::internal("admission token is not ASCII"))?;
    request.metadata_mut().insert("x-admission-token", value);
    Ok(request)
}

/// A client that got in: hold the hot slot, then confirm the hold. SLOT_FULL is expected.
async fn book(
    channel: Channel,
    plan: &Plan,
    i: u32,
    token: &str,
    counters: &Counters,
) -> Result<(), Status> {
    let mut booking = BookingServiceClient::new(channel);
    let held = booking
        .hold_slot(admission_token(
            pb::HoldSlotRequest {
                request_id: format!("crowd-hold-{}-{i}", plan.run),
                slot: Some(plan.hot_slot()),
                applicants: vec![plan.applicant(i)],
            },
            token,
        )?)
        .await;
    let hold = match held {
        Ok(h) => h.into_inner().hold.unwrap_or_default(),
        Err(s) if reason(&s) == "SLOT_FULL" => return Ok(()),
        Err(s) => return Err(s),
    };
    counters.held.fetch_add(1, Ordering::Relaxed);
    booking
        .confirm_hold(admission_token(
            pb::ConfirmHoldRequest {
                hold_id: hold.hold_id,
                request_id: format!("crowd-confirm-{}-{i}", plan.run),
            },
            token,
        )?)
        .await?;
    counters.booked.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Runs the crowd; unexpected outcomes go to `unexpected`.
pub async fn run(
    c: Crowd<'_>,
    unexpected: &mut BTreeMap<String, u64>,
) -> Result<CrowdReport, String> {
    let admin = &c.channels[0];
    let mut report = CrowdReport {
        clients: c.clients,
        replicas: c.addrs.len(),
        connections: c.channels.len(),
        admissions_per_sec: c.rate,
        hot_capacity: c.hot_seats,
        ..CrowdReport::default()
    };
    configure(
        admin,
        c.token,
        room(true, true, c.rate, c.waiter_timeout_secs),
    )
    .await?;
    let baseline = admitted_total(admin, c.token).await?;
    report.slotd_rss_kib_before = sum_over(c.server_pids, rss_kib);

    // Phase 1: the burst of joins, each followed by its Watch stream.
    let counters = Arc::new(Counters::default());
    let clients: Arc<Mutex<Vec<Client>>> = Arc::new(Mutex::new(vec![Client::default(); c.clients]));
    let (unpaused_tx, unpaused_rx) = tokio::sync::watch::channel::<Option<Instant>>(None);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<()>(c.clients.max(1));
    let deadline = Instant::now() + c.duration;
    let abandon_every = if c.abandon > 0.0 {
        Some((1.0 / c.abandon).round().max(1.0) as usize)
    } else {
        None
    };
    let burst_redis_before = match c.redis_url {
        Some(url) => Some(redis_cpu(url).await?),
        None => None,
    };
    let join_start = Instant::now();
    let mut tasks = Vec::with_capacity(c.clients);
    for i in 0..c.clients {
        let channel = c.channels[i % c.channels.len()].clone();
        let plan = c.plan.clone();
        let (counters, clients) = (counters.clone(), clients.clone());
        let mut unpaused = unpaused_rx.clone();
        let opened = opened_tx.clone();
        let abandons = abandon_every.is_some_and(|k| i % k == k / 2);
        tasks.push(tokio::spawn(async move {
            let applicant = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let mut room = WaitingRoomServiceClient::new(channel.clone());
            let joined = match room
                .join(pb::JoinRequest {
                    client_key: format!("crowd-{}-{i}.Kq7xZ2pLm9TvW4rN8sYb3c", plan.run),
                })
                .await
            {
                Ok(j) => j.into_inner(),
                Err(e) => {
                    counters.fail(format!("join {}", outcome_key(&e)));
                    let _ = opened.send(()).await;
                    return;
                }
            };
            counters.joined.fetch_add(1, Ordering::Relaxed);
            let status = joined.status.unwrap_or_default();
            if let Ok(mut all) = clients.lock() {
                all[i].ticket_number = status.ticket_number;
            }
            let stream = room
                .watch(pb::WatchRequest {
                    ticket_id: status.ticket_id,
                    ticket_secret: joined.ticket_secret,
                })
                .await;
            let mut stream = match stream {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    counters.fail(format!("watch {}", outcome_key(&e)));
                    let _ = opened.send(()).await;
                    return;
                }
            };
            let open = counters.open.fetch_add(1, Ordering::Relaxed) + 1;
            counters
                .open_peak
                .fetch_max(u64::try_from(open).unwrap_or(0), Ordering::Relaxed);
            counters.waiting.fetch_add(1, Ordering::Relaxed);
            let _ = opened.send(()).await;
            let end = tokio::time::Instant::from_std(deadline);
            // Abandoners leave 0.5-1.5 s after the unpause, if still waiting.
            let mut leave_at: Option<tokio::time::Instant> = None;
            let mut token = None;
            loop {
                let started = *unpaused.borrow();
                if abandons && leave_at.is_none() {
                    if let Some(t0) = started {
                        let delay = 0.5 + (i % 100) as f64 / 100.0;
                        leave_at = Some(tokio::time::Instant::from_std(
                            t0 + Duration::from_secs_f64(delay),
                        ));
                    }
                }
                let stop = leave_at.map_or(end, |l| l.min(end));
                let message = tokio::select! {
                    m = tokio::time::timeout_at(stop, stream.message()) => m,
                    _ = unpaused.changed(), if started.is_none() => continue,
                };
                match message {
                    Ok(Ok(Some(s))) => {
                        if s.state != pb::TicketState::Waiting as i32 {
                            counters.state_messages.fetch_add(1, Ordering::Relaxed);
                        }
                        if s.state == pb::TicketState::Admitted as i32 {
                            let after = started.map(|t0| t0.elapsed().as_secs_f64());
                            if let Ok(mut all) = clients.lock() {
                                all[i].admission_number = Some(s.admission_number);
                                all[i].admitted_after = after;
                            }
                            token = Some(s.admission_token);
                            break;
                        }
                        if s.state != pb::TicketState::Waiting as i32 {
                            // Ended otherwise: the stream ends after this message.
                            continue;
                        }
                        if started.is_some() {
                            counters.waiting_messages.fetch_add(1, Ordering::Relaxed);
                        } else {
                            counters.burst_messages.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Ok(None)) => {
                        counters.fail("stream ended before admission".into());
                        break;
                    }
                    Ok(Err(e)) => {
                        counters.fail(format!("stream {}", outcome_key(&e)));
                        break;
                    }
                    Err(_) => {
                        if leave_at.is_some_and(|l| tokio::time::Instant::now() >= l) {
                            counters.abandoned.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut all) = clients.lock() {
                                all[i].abandoned = true;
                            }
                        }
                        break;
                    }
                }
            }
            // Closing the stream: an abandon, or done waiting.
            drop(stream);
            counters.waiting.fetch_sub(1, Ordering::Relaxed);
            counters.open.fetch_sub(1, Ordering::Relaxed);
            if let Some(token) = token {
                if let Err(e) = book(channel, &plan, applicant, &token, &counters).await {
                    counters.fail(format!("book {}", outcome_key(&e)));
                }
            }
        }));
    }
    drop(opened_tx);
    let mut settled = 0;
    while settled < c.clients && Instant::now() < deadline {
        match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), opened_rx.recv())
            .await
        {
            Ok(Some(())) => settled += 1,
            _ => break,
        }
    }
    report.join_seconds = join_start.elapsed().as_secs_f64();
    report.joined = counters.joined.load(Ordering::Relaxed);
    report.joins_per_sec = report.joined as f64 / report.join_seconds.max(1e-9);
    if let (Some(a), Some(url)) = (burst_redis_before, c.redis_url) {
        let us = (redis_cpu(url).await? - a) * 1e6;
        report.burst_redis_cpu_us = Some(us);
        report.burst_redis_cpu_us_per_client = Some(us / (report.joined.max(1) as f64));
    }
    report.streams_open_peak = counters.open_peak.load(Ordering::Relaxed);
    report.slotd_rss_kib_peak = sum_over(c.server_pids, rss_kib);

    // Phase 2: the waiting phase, measured from here.
    if let Some(url) = c.redis_url {
        // The per-command breakdown (and a SLOWLOG, if the caller turned it on) of this phase.
        redis_text(url, &["CONFIG", "RESETSTAT"]).await?;
        redis_text(url, &["SLOWLOG", "RESET"]).await?;
    }
    let redis_before = match c.redis_url {
        Some(url) => Some(redis_cpu(url).await?),
        None => None,
    };
    let slotd_before = sum_over(c.server_pids, process_cpu);
    let t0 = Instant::now();
    configure(
        admin,
        c.token,
        room(false, true, c.rate, c.waiter_timeout_secs),
    )
    .await?;
    let _ = unpaused_tx.send(Some(t0));
    let mut waiter_seconds = 0.0;
    let mut last = Instant::now();
    let mut tasks = tasks.into_iter().peekable();
    while tasks.peek().is_some() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        waiter_seconds +=
            counters.waiting.load(Ordering::Relaxed).max(0) as f64 * (now - last).as_secs_f64();
        last = now;
        report.slotd_rss_kib_peak = report
            .slotd_rss_kib_peak
            .max(sum_over(c.server_pids, rss_kib));
        while tasks.peek().is_some_and(|t| t.is_finished()) {
            if let Some(t) = tasks.next() {
                let _ = t.await;
            }
        }
        if now > deadline + Duration::from_secs(30) {
            for t in tasks.by_ref() {
                t.abort();
            }
            counters.fail("clients still running 30 s past the deadline".into());
        }
    }
    let redis_after = match c.redis_url {
        Some(url) => Some(redis_cpu(url).await?),
        None => None,
    };
    let slotd_after = sum_over(c.server_pids, process_cpu);
    if let Some(url) = c.redis_url {
        report.redis_commands = command_stats(&redis_text(url, &["INFO", "commandstats"]).await?);
    }
    let admitted_after_run = admitted_total(admin, c.token).await?;
    // Leave the room as other scenarios expect it: off.
    configure(
        admin,
        c.token,
        room(false, false, c.rate, c.waiter_timeout_secs),
    )
    .await?;

    report.waiter_seconds = waiter_seconds;
    report.waiting_messages = counters.waiting_messages.load(Ordering::Relaxed);
    report.burst_messages = counters.burst_messages.load(Ordering::Relaxed);
    report.state_messages = counters.state_messages.load(Ordering::Relaxed);
    report.messages_per_waiter_second = report.waiting_messages as f64 / waiter_seconds.max(1e-9);
    let per_ws = |us: f64| us / waiter_seconds.max(1e-9);
    if let (Some(a), Some(b)) = (redis_before, redis_after) {
        report.redis_cpu_us = Some((b - a) * 1e6);
        report.redis_cpu_us_per_waiter_second = Some(per_ws((b - a) * 1e6));
    }
    if let (Some(a), Some(b)) = (slotd_before, slotd_after) {
        report.slotd_cpu_us = Some((b - a) * 1e6);
        report.slotd_cpu_us_per_waiter_second = Some(per_ws((b - a) * 1e6));
    }
    if let (Some(a), Some(b)) = (report.slotd_rss_kib_before, report.slotd_rss_kib_peak) {
        report.slotd_rss_bytes_per_stream =
            Some((b.saturating_sub(a) as f64 * 1024.0) / (report.streams_open_peak.max(1) as f64));
    }
    report.abandoned = counters.abandoned.load(Ordering::Relaxed);
    report.held = counters.held.load(Ordering::Relaxed);
    report.booked = counters.booked.load(Ordering::Relaxed);
    report.overbooked = report.booked > u64::from(c.hot_seats);

    let all = clients.lock().map(|c| c.clone()).unwrap_or_default();
    report.admitted_seen = all.iter().filter(|c| c.admission_number.is_some()).count() as u64;
    report.not_admitted = all
        .iter()
        .filter(|c| c.ticket_number > 0 && !c.abandoned && c.admission_number.is_none())
        .count() as u64;
    // Inversions: a client admitted before someone who joined ahead of it and was still
    // waiting (not abandoned). Sorted by join order, each admission number must exceed every
    // earlier one.
    let mut order: Vec<&Client> = all
        .iter()
        .filter(|c| c.ticket_number > 0 && !c.abandoned)
        .collect();
    order.sort_by_key(|c| c.ticket_number);
    // A live client still waiting at the deadline is reported as `not_admitted`, not judged:
    // its admission may have been on the wire when the run stopped.
    let mut highest = 0;
    for n in order.iter().filter_map(|c| c.admission_number) {
        if n < highest {
            report.admission_inversions += 1;
        }
        highest = highest.max(n);
    }
    // Rate bound: by t seconds after the unpause at most burst + rate·t admissions.
    let burst = c.rate.max(1.0);
    for client in &all {
        if let (Some(n), Some(t)) = (client.admission_number, client.admitted_after) {
            let k = n.saturating_sub(baseline) as f64;
            if k > burst + c.rate * t + RATE_SLACK {
                report.rate_bound_violations += 1;
            }
        }
    }
    let total = admitted_after_run.saturating_sub(baseline) as f64;
    let elapsed = t0.elapsed().as_secs_f64();
    if total > burst + c.rate * elapsed + RATE_SLACK {
        report.rate_bound_violations += 1;
    }
    if let Ok(f) = counters.failures.lock() {
        unexpected.extend(f.clone());
    }
    Ok(report)
}

pub fn print(r: &CrowdReport) {
    println!(
        "crowd: {} clients over {} replicas / {} connections, admitting {}/s",
        r.clients, r.replicas, r.connections, r.admissions_per_sec
    );
    println!(
        "  joins: {} in {:.2} s ({:.0}/s); streams open peak {}; abandoned {}",
        r.joined, r.join_seconds, r.joins_per_sec, r.streams_open_peak, r.abandoned
    );
    if let (Some(us), Some(per)) = (r.burst_redis_cpu_us, r.burst_redis_cpu_us_per_client) {
        println!(
            "  burst: Redis CPU {us:.0} µs, {per:.1} µs per client joined (its join and its \
             stream's first read, the ticks meanwhile)"
        );
    }
    println!(
        "  admitted seen {}, not admitted {}, held {}, booked {} of {} hot seats",
        r.admitted_seen, r.not_admitted, r.held, r.booked, r.hot_capacity
    );
    println!(
        "  {:.0} waiter-seconds, {} messages while waiting ({:.3} per waiter-second; apart: {} \
         of own state changes, {} before the unpause, {:.3} per waiter-second with those)",
        r.waiter_seconds,
        r.waiting_messages,
        r.messages_per_waiter_second,
        r.state_messages,
        r.burst_messages,
        (r.waiting_messages + r.state_messages + r.burst_messages) as f64
            / r.waiter_seconds.max(1e-9)
    );
    let us =
        |v: Option<f64>, digits: usize| v.map_or("n/a".to_string(), |v| format!("{v:.digits$} µs"));
    // Per waiter-second with two decimals: the targets (0.5 µs of Redis) sit there.
    println!(
        "  Redis CPU {} ({} per waiter-second); slotd CPU {} ({} per waiter-second)",
        us(r.redis_cpu_us, 0),
        us(r.redis_cpu_us_per_waiter_second, 2),
        us(r.slotd_cpu_us, 0),
        us(r.slotd_cpu_us_per_waiter_second, 2)
    );
    if !r.redis_commands.is_empty() {
        let mut rows: Vec<_> = r.redis_commands.iter().collect();
        rows.sort_by_key(|(_, (_, usec))| std::cmp::Reverse(*usec));
        let listed: Vec<String> = rows
            .iter()
            .filter(|(_, (_, usec))| *usec > 0)
            .map(|(name, (calls, usec))| format!("{name} {calls}/{usec}"))
            .collect();
        println!(
            "  Redis commands (calls/usec; a script's commands also under their own names): {}",
            listed.join(", ")
        );
    }
    if let (Some(a), Some(b), Some(per)) = (
        r.slotd_rss_kib_before,
        r.slotd_rss_kib_peak,
        r.slotd_rss_bytes_per_stream,
    ) {
        println!(
            "  slotd RSS {a} KiB before, {b} KiB peak: {:.1} KiB per stream",
            per / 1024.0
        );
    }
    println!(
        "  admission inversions {}, rate-bound violations {}, overbooked {}",
        r.admission_inversions, r.rate_bound_violations, r.overbooked
    );
}
