//! Jepsen-style history checking for booking storms over gRPC.
//!
//! A storm's clients record every request they send (a book or a cancel, with its request_id)
//! and how it ended: acknowledged (OK), definitely refused (a business error such as SLOT_FULL:
//! nothing was applied) or indeterminate (UNAVAILABLE, DEADLINE_EXCEEDED, a dropped connection:
//! it may or may not have been applied). Clients retry indeterminate calls with the same
//! request_id, so most resolve; the rest stay indeterminate.
//!
//! `check` then reads the final state (manifest with cancelled appointments, every slot's
//! counters, the audit) and holds it against the history like a bank test:
//! - every acknowledged booking is present, on its slot, with its applicants, under the
//!   confirmation number the client got; every acknowledged cancel left it CANCELLED;
//! - a definitely refused booking left nothing behind; every stored appointment comes from a
//!   booking that was acknowledged or indeterminate (no phantoms);
//! - each booking request resolved to at most one appointment (retries booked nothing twice);
//! - per slot, the `booked` counter equals the seats of its BOOKED appointments, and lies
//!   between what the acknowledged operations alone imply and what they plus every
//!   indeterminate operation could imply (no seat counted twice, none lost);
//! - no passport is in two BOOKED appointments.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Status};

use slotd::api::pb;
use slotd::api::pb::admin_service_client::AdminServiceClient;
use slotd::api::pb::booking_service_client::BookingServiceClient;

use super::{applicant, book_request, reason, slot};

/// How one request ended, after its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged; for a booking, with the confirmation number the client got.
    Ok(String),
    /// Refused by a business rule (the ErrorInfo reason): nothing was applied.
    Failed(String),
    /// Every attempt ended without an answer that says whether it applied.
    Indeterminate(String),
}

#[derive(Debug, Clone)]
pub enum Op {
    Book {
        request_id: String,
        time: String,
        applicants: Vec<u32>,
    },
    Cancel {
        confirmation: String,
    },
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub op: Op,
    pub outcome: Outcome,
}

/// The record of one storm, shared by its clients.
#[derive(Debug, Default)]
pub struct History {
    entries: Mutex<Vec<Entry>>,
    /// Attempts answered with an error the client treats as "retry" (never a business error).
    retried: Mutex<u32>,
    /// Which codes those retried answers had, by name.
    retry_codes: Mutex<BTreeMap<String, u32>>,
}

impl History {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn record(&self, entry: Entry) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn retried(&self) -> u32 {
        *self.retried.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count_retry(&self, status: &Status) {
        *self.retried.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        *self
            .retry_codes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(format!("{:?}", status.code()))
            .or_default() += 1;
    }

    /// The codes of the retried answers, e.g. {"Unavailable": 12}.
    pub fn retry_codes(&self) -> BTreeMap<String, u32> {
        self.retry_codes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn acknowledged_books(&self) -> usize {
        self.entries()
            .iter()
            .filter(|e| matches!(e.op, Op::Book { .. }) && matches!(e.outcome, Outcome::Ok(_)))
            .count()
    }

    pub fn summary(&self) -> String {
        let entries = self.entries();
        let count = |book: bool, f: &dyn Fn(&Outcome) -> bool| {
            entries
                .iter()
                .filter(|e| matches!(e.op, Op::Book { .. }) == book && f(&e.outcome))
                .count()
        };
        let ok = |o: &Outcome| matches!(o, Outcome::Ok(_));
        let failed = |o: &Outcome| matches!(o, Outcome::Failed(_));
        let unknown = |o: &Outcome| matches!(o, Outcome::Indeterminate(_));
        format!(
            "books {} ok / {} refused / {} indeterminate; cancels {} ok / {} refused / {} \
             indeterminate; {} attempts retried {:?}",
            count(true, &ok),
            count(true, &failed),
            count(true, &unknown),
            count(false, &ok),
            count(false, &failed),
            count(false, &unknown),
            self.retried(),
            self.retry_codes()
        )
    }
}

/// Codes after which the call may or may not have been applied: retry with the same request_id.
pub fn indeterminate(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// Codes a business rule answers with; anything else (INTERNAL, ...) is a bug the storm reports.
fn definite(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::NotFound
            | Code::ResourceExhausted
            | Code::Aborted
    ) && !reason(status).is_empty()
}

/// What the storm's clients do and how hard they retry.
#[derive(Debug, Clone)]
pub struct StormPlan {
    pub date: String,
    /// Slot times the bookings spread over (open them with few enough seats that some fill up).
    pub times: Vec<String>,
    pub workers: u32,
    pub requests_per_worker: u32,
    /// Applicants are numbered from here; register receipts for `applicant_ids()`.
    pub first_applicant: u32,
    /// Every `cancel_every`-th acknowledged booking of a worker is cancelled (0: never).
    pub cancel_every: u32,
    /// Pause between one worker's requests, so the storm spans the fault.
    pub pace: Duration,
    /// How long one request keeps retrying before it is left indeterminate.
    pub patience: Duration,
}

impl StormPlan {
    /// Request k of worker w books 1 applicant, or 2 when k is odd.
    fn group(&self, w: u32, k: u32) -> Vec<u32> {
        let base = self.first_applicant + (w * self.requests_per_worker + k) * 2;
        if k % 2 == 1 {
            vec![base, base + 1]
        } else {
            vec![base]
        }
    }

    pub fn applicant_ids(&self) -> impl Iterator<Item = u32> {
        let first = self.first_applicant;
        first..first + self.workers * self.requests_per_worker * 2
    }

    /// Every date-time this plan books.
    pub fn slots(&self) -> Vec<pb::SlotRef> {
        self.times.iter().map(|t| slot(&self.date, t)).collect()
    }
}

/// Sends `call` until it answers definitely or `patience` runs out; records retries.
async fn with_retries<T, F, Fut>(
    history: &History,
    patience: Duration,
    mut call: F,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let deadline = Instant::now() + patience;
    let mut backoff = Duration::from_millis(25);
    loop {
        match call().await {
            Err(status) if indeterminate(&status) && Instant::now() < deadline => {
                history.count_retry(&status);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(400));
            }
            other => return other,
        }
    }
}

fn outcome_of<T>(result: &Result<T, Status>, ok: impl Fn(&T) -> String) -> Outcome {
    match result {
        Ok(value) => Outcome::Ok(ok(value)),
        Err(status) if indeterminate(status) => Outcome::Indeterminate(format!("{status:?}")),
        Err(status) => {
            assert!(
                definite(status),
                "an error beyond retries reached a client: {status:?}"
            );
            Outcome::Failed(reason(status))
        }
    }
}

/// Runs the storm to the end (every request acknowledged, refused, or out of patience).
pub async fn run_storm(channel: Channel, plan: StormPlan, history: Arc<History>) {
    let plan = Arc::new(plan);
    let mut tasks = Vec::new();
    for w in 0..plan.workers {
        let (channel, plan, history) = (channel.clone(), plan.clone(), history.clone());
        tasks.push(tokio::spawn(async move {
            let client = BookingServiceClient::new(channel);
            let mut acknowledged = 0u32;
            for k in 0..plan.requests_per_worker {
                tokio::time::sleep(plan.pace).await;
                let ids = plan.group(w, k);
                let time = plan.times[((w + k * 7) as usize) % plan.times.len()].clone();
                let request_id = format!("storm-w{w}-b{k}");
                let request = book_request(
                    &request_id,
                    slot(&plan.date, &time),
                    ids.iter().map(|&i| applicant(i)).collect(),
                );
                let result = with_retries(&history, plan.patience, || {
                    let mut c = client.clone();
                    let r = request.clone();
                    async move { c.book_appointment(r).await.map(|r| r.into_inner()) }
                })
                .await;
                let outcome = outcome_of(&result, |r| {
                    r.appointment
                        .as_ref()
                        .map(|a| a.confirmation_number.clone())
                        .unwrap_or_default()
                });
                history.record(Entry {
                    op: Op::Book {
                        request_id,
                        time,
                        applicants: ids.clone(),
                    },
                    outcome: outcome.clone(),
                });
                let Outcome::Ok(confirmation) = outcome else {
                    continue;
                };
                acknowledged += 1;
                if plan.cancel_every == 0 || acknowledged % plan.cancel_every != 0 {
                    continue;
                }
                let request_id = format!("storm-w{w}-c{k}");
                let passport = applicant(ids[ids.len() - 1]).passport_number;
                let request = pb::CancelAppointmentRequest {
                    confirmation_number: confirmation.clone(),
                    passport_number: passport,
                    request_id,
                };
                let result = with_retries(&history, plan.patience, || {
                    let mut c = client.clone();
                    let r = request.clone();
                    async move { c.cancel_appointment(r).await.map(|r| r.into_inner()) }
                })
                .await;
                history.record(Entry {
                    op: Op::Cancel { confirmation },
                    outcome: outcome_of(&result, |_| String::new()),
                });
            }
        }));
    }
    for task in tasks {
        task.await.expect("storm worker");
    }
}

/// The day's appointments (cancelled ones too), every page.
pub async fn manifest(channel: &Channel, date: &str) -> Vec<pb::Appointment> {
    let mut admin = AdminServiceClient::new(channel.clone());
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_appointments(super::admin(pb::ListAppointmentsRequest {
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                date: date.into(),
                page_size: 500,
                page_token: token.clone(),
                include_cancelled: true,
            }))
            .await
            .expect("manifest")
            .into_inner();
        all.extend(page.appointments);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

/// One slot's counters through the operator API.
pub async fn slot_state(channel: &Channel, slot: pb::SlotRef) -> pb::SlotState {
    AdminServiceClient::new(channel.clone())
        .get_slot(super::admin(pb::GetSlotRequest { slot: Some(slot) }))
        .await
        .expect("get slot")
        .into_inner()
        .slot
        .expect("slot state")
}

/// What `check` established, for the test's own assertions and its log line.
#[derive(Debug, Default)]
pub struct Verdict {
    pub acknowledged_books: usize,
    pub acknowledged_cancels: usize,
    pub indeterminate: usize,
    /// Indeterminate bookings that turned out applied.
    pub indeterminate_applied: usize,
    pub booked_seats: u32,
}

/// Holds the final state read through `channel` against the history; panics naming the first
/// broken promise.
pub async fn check(channel: &Channel, plan: &StormPlan, history: &History) -> Verdict {
    let entries = history.entries();
    let stored = manifest(channel, &plan.date).await;
    let passport_of = |i: u32| applicant(i).passport_number;

    // Stored appointments by confirmation number, and which one each passport is in.
    let mut by_conf: HashMap<String, &pb::Appointment> = HashMap::new();
    let mut by_passport: HashMap<String, Vec<&pb::Appointment>> = HashMap::new();
    for a in &stored {
        assert!(
            by_conf.insert(a.confirmation_number.clone(), a).is_none(),
            "appointment {} listed twice",
            a.confirmation_number
        );
        for p in &a.applicants {
            by_passport
                .entry(p.passport_number.clone())
                .or_default()
                .push(a);
        }
    }
    for (passport, appts) in &by_passport {
        let booked = appts
            .iter()
            .filter(|a| a.status == pb::AppointmentStatus::Booked as i32)
            .count();
        assert!(
            booked <= 1,
            "passport {passport} is in {booked} BOOKED appointments"
        );
    }

    // Cancels per confirmation number.
    let mut cancels: HashMap<&str, &Outcome> = HashMap::new();
    for e in &entries {
        if let Op::Cancel { confirmation, .. } = &e.op {
            cancels.insert(confirmation.as_str(), &e.outcome);
        }
    }

    let mut verdict = Verdict::default();
    // Per slot time: seats the acknowledged operations alone imply, and the extra seats the
    // indeterminate ones could add.
    let mut must: BTreeMap<String, u32> = BTreeMap::new();
    let mut may: BTreeMap<String, u32> = BTreeMap::new();
    let mut explained: HashSet<String> = HashSet::new();
    for e in &entries {
        match (&e.op, &e.outcome) {
            (Op::Cancel { .. }, Outcome::Ok(_)) => verdict.acknowledged_cancels += 1,
            (Op::Cancel { .. }, Outcome::Indeterminate(_)) => verdict.indeterminate += 1,
            (Op::Cancel { .. }, Outcome::Failed(why)) => {
                panic!("cancel of an acknowledged booking refused: {why} ({e:?})")
            }
            (
                Op::Book {
                    request_id,
                    time,
                    applicants,
                },
                outcome,
            ) => {
                let seats = applicants.len() as u32;
                let passports: Vec<String> = applicants.iter().map(|&i| passport_of(i)).collect();
                // Appointments holding any of this request's passports: at most one, with all.
                let mut found: Vec<&pb::Appointment> = passports
                    .iter()
                    .flat_map(|p| by_passport.get(p).into_iter().flatten().copied())
                    .collect();
                found.sort_by(|a, b| a.confirmation_number.cmp(&b.confirmation_number));
                found.dedup_by(|a, b| a.confirmation_number == b.confirmation_number);
                assert!(
                    found.len() <= 1,
                    "{request_id} resolved to {} appointments",
                    found.len()
                );
                if let Some(a) = found.first() {
                    let got: Vec<&str> = a
                        .applicants
                        .iter()
                        .map(|p| p.passport_number.as_str())
                        .collect();
                    assert_eq!(got, passports, "{request_id}: stored with other applicants");
                    assert_eq!(
                        a.slot.as_ref().map(|s| s.time.as_str()),
                        Some(time.as_str()),
                        "{request_id}: stored on another slot"
                    );
                }
                match outcome {
                    Outcome::Ok(confirmation) => {
                        verdict.acknowledged_books += 1;
                        let a = found.first().unwrap_or_else(|| {
                            panic!("acknowledged booking {request_id} ({confirmation}) is missing")
                        });
                        assert_eq!(
                            &a.confirmation_number, confirmation,
                            "{request_id}: stored under another number than acknowledged"
                        );
                        explained.insert(confirmation.clone());
                        let booked = a.status == pb::AppointmentStatus::Booked as i32;
                        match cancels.get(confirmation.as_str()) {
                            None => {
                                assert!(booked, "{confirmation} cancelled by nobody");
                                *must.entry(time.clone()).or_default() += seats;
                            }
                            Some(Outcome::Ok(_)) => {
                                assert!(!booked, "acknowledged cancel of {confirmation} lost");
                            }
                            Some(_) => {
                                if booked {
                                    *may.entry(time.clone()).or_default() += seats;
                                }
                            }
                        }
                    }
                    Outcome::Failed(why) => {
                        assert!(
                            found.is_empty(),
                            "{request_id} was refused ({why}) but booked {:?}",
                            found.first().map(|a| &a.confirmation_number)
                        );
                    }
                    Outcome::Indeterminate(_) => {
                        verdict.indeterminate += 1;
                        if let Some(a) = found.first() {
                            verdict.indeterminate_applied += 1;
                            explained.insert(a.confirmation_number.clone());
                            if a.status == pb::AppointmentStatus::Booked as i32 {
                                *may.entry(time.clone()).or_default() += seats;
                            }
                        }
                    }
                }
            }
        }
    }
    for a in &stored {
        assert!(
            explained.contains(&a.confirmation_number),
            "phantom appointment {} ({:?}) from no acknowledged or indeterminate booking",
            a.confirmation_number,
            a.applicants
                .iter()
                .map(|p| &p.passport_number)
                .collect::<Vec<_>>()
        );
    }

    // The bank balance per slot: counters agree with the records and with the history.
    for s in plan.slots() {
        let state = slot_state(channel, s.clone()).await;
        let on_slot: u32 = stored
            .iter()
            .filter(|a| {
                a.status == pb::AppointmentStatus::Booked as i32
                    && a.slot.as_ref().map(|x| &x.time) == Some(&s.time)
            })
            .map(|a| a.applicants.len() as u32)
            .sum();
        assert_eq!(
            state.booked, on_slot,
            "{}: counter says {} booked, appointments hold {on_slot} seats",
            s.time, state.booked
        );
        let lo = must.get(&s.time).copied().unwrap_or(0);
        let hi = lo + may.get(&s.time).copied().unwrap_or(0);
        assert!(
            (lo..=hi).contains(&state.booked),
            "{}: {} seats booked, the history allows {lo}..={hi}",
            s.time,
            state.booked
        );
        assert_eq!(
            state.booked + state.held + state.remaining,
            state.capacity,
            "{}: counters do not add up",
            s.time
        );
        verdict.booked_seats += state.booked;
    }
    audit_clean(channel, &plan.date).await;
    verdict
}

/// AuditInventory over `date` reports no violation.
pub async fn audit_clean(channel: &Channel, date: &str) {
    let report = AdminServiceClient::new(channel.clone())
        .audit_inventory(super::admin(pb::AuditInventoryRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            from_date: date.into(),
            to_date: date.into(),
        }))
        .await
        .expect("audit")
        .into_inner();
    assert!(
        report.violations.is_empty(),
        "audit violations: {:?}",
        report.violations
    );
}

/// Every passport of the storm is claimed exactly as the final state says: one in a BOOKED
/// appointment cannot book again, every other one (cancelled, refused, never applied) can. Run
/// last: it books the free ones (on `probe_time`, which must have room for them).
pub async fn check_claims(channel: &Channel, plan: &StormPlan, probe_time: &str) {
    let stored = manifest(channel, &plan.date).await;
    let booked: HashSet<String> = stored
        .iter()
        .filter(|a| a.status == pb::AppointmentStatus::Booked as i32)
        .flat_map(|a| a.applicants.iter().map(|p| p.passport_number.clone()))
        .collect();
    let mut client = BookingServiceClient::new(channel.clone());
    for i in plan.applicant_ids() {
        let a = applicant(i);
        let taken = booked.contains(&a.passport_number);
        let result = client
            .book_appointment(book_request(
                &format!("claim-probe-{i}"),
                slot(&plan.date, probe_time),
                vec![a.clone()],
            ))
            .await;
        match (taken, result) {
            (false, Ok(_)) => {}
            (true, Err(status))
                if matches!(
                    reason(&status).as_str(),
                    "APPLICANT_ALREADY_BOOKED" | "RECEIPT_IN_USE"
                ) => {}
            (taken, result) => panic!(
                "passport {} (booked: {taken}) claimed inconsistently: {result:?}",
                a.passport_number
            ),
        }
    }
}

/// Waits until the storm recorded in `history` has at least `n` acknowledged bookings (up to a
/// generous 60 s): fault tests strike after real progress, not after a fixed time.
pub async fn until_acknowledged(history: &History, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while history.acknowledged_books() < n {
        assert!(
            Instant::now() < deadline,
            "storm stalled: {}",
            history.summary()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
