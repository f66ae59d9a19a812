//! Model-based tests: random sequences of open / resize / book / retry / hold / confirm /
//! release / expire (advance the clock, reclaim) / cancel / reschedule go to a small reference
//! model and to a backend (the embedded store, and Redis on its own redis-server), and after
//! every step they must agree: the same outcome (OK or the same refusal) and the same state
//! (every slot's capacity, booked and held seats; every appointment's status and slot). A
//! differential run applies each step to Redis and the embedded store side by side and compares
//! their full answers. On a disagreement proptest shrinks the sequence and prints it.
//!
//! Bounded (fixed here, whatever PROPTEST_CASES says): on the embedded store 128 seeded cases
//! (the same every run; they must reach every interesting outcome) plus 128 fresh ones, of at
//! most 53 steps; on Redis 32 seeded plus 16 fresh cases of at most 43 steps.

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc, Weekday};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use slotd::domain::lifecycle::{HoldConfirmation, HoldId, HoldRelease, Reschedule};
use slotd::domain::rules::{Booking, Cancellation, DateRange, OpenPlan};
use slotd::domain::types::{
    CategoryId, ConfirmationNumber, DayRef, PostId, RequestId, SlotRef, SlotTime,
};
use slotd::store::memory::MemoryStore;
use slotd::store::redis::{ConnOptions, RedisOptions};
use slotd::store::{Inventory, StoreError};
use support::redis::RedisServer;

const SLOTS: usize = 3;
const PEOPLE: u32 = 6;
const HOLD_TTL_MINUTES: i64 = 10;
/// Lower than the default (2), so sequences reach the limit often.
const RESCHEDULE_LIMIT: u32 = 1;

use support::domain::applicant;
use support::epoch;

fn day() -> DayRef {
    DayRef {
        post: PostId::parse("BEIJING").expect("post"),
        category: CategoryId::parse("ALL_OTHERS").expect("category"),
        date: (epoch() + Duration::days(1)).date_naive(),
    }
}

fn time(slot: usize) -> SlotTime {
    SlotTime::from_minutes(8 * 60 + 15 * slot as u16).expect("on the grid")
}

fn slot_ref(slot: usize) -> SlotRef {
    day().at(time(slot))
}

fn request_id(text: &str) -> RequestId {
    RequestId::parse(text).expect("request id")
}

// ---------------------------------------------------------------------------------------------
// Operations

#[derive(Debug, Clone)]
enum Op {
    /// OpenSlots on one slot: creates it, or re-opens it at max(seats, booked + held).
    Open {
        slot: usize,
        seats: u32,
    },
    /// SetSlotCapacity.
    Resize {
        slot: usize,
        capacity: u32,
    },
    Book {
        slot: usize,
        group: Vec<u32>,
    },
    /// The last Book again, same request_id and content (a client retry).
    RetryBook,
    Hold {
        slot: usize,
        group: Vec<u32>,
    },
    /// Hold number `hold` modulo the holds so far, or (`unknown`, or no hold yet) an id nobody
    /// was given.
    Confirm {
        hold: usize,
        unknown: bool,
    },
    Release {
        hold: usize,
        unknown: bool,
    },
    /// Advance the clock, then run the sweeper.
    Expire {
        minutes: i64,
    },
    /// Appointment number `appt` modulo the appointments so far, as its first applicant or as
    /// `passport` (perhaps not one of its applicants).
    Cancel {
        appt: usize,
        passport: Option<u32>,
    },
    Reschedule {
        appt: usize,
        slot: usize,
    },
}

fn group() -> impl Strategy<Value = Vec<u32>> {
    proptest::sample::subsequence((1..=PEOPLE).collect::<Vec<_>>(), 1..=3).prop_shuffle()
}

/// Usually opens some slots first, then any steps.
fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    let open = (0..SLOTS, 1..=4u32).prop_map(|(slot, seats)| Op::Open { slot, seats });
    (
        proptest::collection::vec(open, 0..=3),
        proptest::collection::vec(op(), 1..max),
    )
        .prop_map(|(mut first, rest)| {
            first.extend(rest);
            first
        })
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    prop_oneof![
        2 => (slot.clone(), 1..=4u32).prop_map(|(slot, seats)| Op::Open { slot, seats }),
        1 => (slot.clone(), 0..=5u32).prop_map(|(slot, capacity)| Op::Resize { slot, capacity }),
        4 => (slot.clone(), group()).prop_map(|(slot, group)| Op::Book { slot, group }),
        1 => Just(Op::RetryBook),
        3 => (slot.clone(), group()).prop_map(|(slot, group)| Op::Hold { slot, group }),
        3 => (0..8usize, prop::bool::weighted(0.1))
            .prop_map(|(hold, unknown)| Op::Confirm { hold, unknown }),
        1 => (0..8usize, prop::bool::weighted(0.1))
            .prop_map(|(hold, unknown)| Op::Release { hold, unknown }),
        2 => prop_oneof![Just(1i64), Just(HOLD_TTL_MINUTES + 1)]
            .prop_map(|minutes| Op::Expire { minutes }),
        2 => (0..8usize, prop::option::weighted(0.25, 1..=PEOPLE))
            .prop_map(|(appt, passport)| Op::Cancel { appt, passport }),
        2 => (0..8usize, slot).prop_map(|(appt, slot)| Op::Reschedule { appt, slot }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The reference model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotM {
    capacity: u32,
    booked: u32,
    held: u32,
}

#[derive(Debug, Clone)]
struct ApptM {
    conf: ConfirmationNumber,
    slot: usize,
    group: Vec<u32>,
    cancelled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldState {
    Held,
    Confirmed(usize),
    Released,
    Expired,
}

#[derive(Debug, Clone)]
struct HoldM {
    id: HoldId,
    slot: usize,
    group: Vec<u32>,
    expires: DateTime<Utc>,
    state: HoldState,
}

/// What an operation answered: OK (with the appointment's number, for the ones that return
/// one) or the refusal's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Ok(Option<ConfirmationNumber>),
    Refused(&'static str),
    Reclaimed(u32),
}

#[derive(Debug, Clone)]
struct Model {
    now: DateTime<Utc>,
    slots: [Option<SlotM>; SLOTS],
    appts: Vec<ApptM>,
    holds: Vec<HoldM>,
    reschedules: BTreeMap<u32, u32>,
    /// The last booking: request_id, slot, group, and the appointment it made.
    last_book: Option<(String, usize, Vec<u32>, Option<usize>)>,
}

impl Model {
    fn new() -> Self {
        Self {
            now: epoch(),
            slots: [None; SLOTS],
            appts: Vec::new(),
            holds: Vec::new(),
            reschedules: BTreeMap::new(),
            last_book: None,
        }
    }

    fn reclaim(&mut self) -> u32 {
        let mut n = 0;
        for h in &mut self.holds {
            if h.state == HoldState::Held && h.expires <= self.now {
                h.state = HoldState::Expired;
                if let Some(s) = self.slots[h.slot].as_mut() {
                    s.held -= h.group.len() as u32;
                }
                n += 1;
            }
        }
        n
    }

    fn taken(&self, person: u32) -> bool {
        self.appts
            .iter()
            .any(|a| !a.cancelled && a.group.contains(&person))
            || self
                .holds
                .iter()
                .any(|h| h.state == HoldState::Held && h.group.contains(&person))
    }

    /// The checks a booking and a hold share, in the stores' order.
    fn check_booking(&self, slot: usize, group: &[u32]) -> Result<(), &'static str> {
        let s = self.slots[slot].ok_or("SlotNotFound")?;
        if s.capacity - s.booked - s.held < group.len() as u32 {
            return Err("SlotFull");
        }
        if group.iter().any(|&p| self.taken(p)) {
            // Receipt R{i} belongs to passport P{i}: a taken person's receipt is in use.
            return Err("ReceiptInUse");
        }
        Ok(())
    }

    fn book(&mut self, slot: usize, group: &[u32], conf: &ConfirmationNumber) -> Answer {
        self.reclaim();
        if let Err(why) = self.check_booking(slot, group) {
            return Answer::Refused(why);
        }
        if let Some(s) = self.slots[slot].as_mut() {
            s.booked += group.len() as u32;
        }
        self.appts.push(ApptM {
            conf: conf.clone(),
            slot,
            group: group.to_vec(),
            cancelled: false,
        });
        Answer::Ok(Some(conf.clone()))
    }

    fn apply(&mut self, op: &Op, fresh: &Fresh) -> Answer {
        match op {
            Op::Open { slot, seats } => {
                match self.slots[*slot].as_mut() {
                    None => {
                        self.slots[*slot] = Some(SlotM {
                            capacity: *seats,
                            booked: 0,
                            held: 0,
                        })
                    }
                    Some(s) => s.capacity = (*seats).max(s.booked + s.held),
                }
                Answer::Ok(None)
            }
            Op::Resize { slot, capacity } => match self.slots[*slot].as_mut() {
                None => Answer::Refused("SlotNotFound"),
                Some(s) if *capacity < s.booked + s.held => Answer::Refused("CapacityBelowBooked"),
                Some(s) => {
                    s.capacity = *capacity;
                    Answer::Ok(None)
                }
            },
            Op::Book { slot, group } => {
                let answer = self.book(*slot, group, &fresh.conf);
                let made = matches!(answer, Answer::Ok(_)).then(|| self.appts.len() - 1);
                self.last_book = Some((fresh.request_id.clone(), *slot, group.clone(), made));
                answer
            }
            Op::RetryBook => match self.last_book.clone() {
                None => Answer::Ok(None),
                Some((_, _, _, Some(made))) => Answer::Ok(Some(self.appts[made].conf.clone())),
                Some((rid, slot, group, None)) => {
                    let answer = self.book(slot, &group, &fresh.conf);
                    let made = matches!(answer, Answer::Ok(_)).then(|| self.appts.len() - 1);
                    self.last_book = Some((rid, slot, group, made));
                    answer
                }
            },
            Op::Hold { slot, group } => {
                self.reclaim();
                if let Err(why) = self.check_booking(*slot, group) {
                    return Answer::Refused(why);
                }
                if let Some(s) = self.slots[*slot].as_mut() {
                    s.held += group.len() as u32;
                }
                self.holds.push(HoldM {
                    id: fresh.hold.clone(),
                    slot: *slot,
                    group: group.clone(),
                    expires: self.now + Duration::minutes(HOLD_TTL_MINUTES),
                    state: HoldState::Held,
                });
                Answer::Ok(None)
            }
            Op::Confirm { hold, unknown } => {
                let Some(k) = pick(*hold, *unknown, self.holds.len()) else {
                    return Answer::Refused("HoldNotFound");
                };
                match self.hold_state(k) {
                    HoldState::Confirmed(a) => Answer::Ok(Some(self.appts[a].conf.clone())),
                    HoldState::Released => Answer::Refused("HoldNotActive"),
                    HoldState::Expired => {
                        self.reclaim();
                        Answer::Refused("HoldExpired")
                    }
                    HoldState::Held => {
                        self.reclaim();
                        let h = self.holds[k].clone();
                        if let Some(s) = self.slots[h.slot].as_mut() {
                            s.held -= h.group.len() as u32;
                            s.booked += h.group.len() as u32;
                        }
                        self.appts.push(ApptM {
                            conf: fresh.conf.clone(),
                            slot: h.slot,
                            group: h.group.clone(),
                            cancelled: false,
                        });
                        self.holds[k].state = HoldState::Confirmed(self.appts.len() - 1);
                        Answer::Ok(Some(fresh.conf.clone()))
                    }
                }
            }
            Op::Release { hold, unknown } => {
                let Some(k) = pick(*hold, *unknown, self.holds.len()) else {
                    return Answer::Refused("HoldNotFound");
                };
                match self.hold_state(k) {
                    HoldState::Confirmed(_) => Answer::Refused("HoldNotActive"),
                    HoldState::Released => Answer::Ok(None),
                    HoldState::Expired => {
                        self.reclaim();
                        Answer::Refused("HoldExpired")
                    }
                    HoldState::Held => {
                        self.reclaim();
                        let h = &mut self.holds[k];
                        h.state = HoldState::Released;
                        let (slot, seats) = (h.slot, h.group.len() as u32);
                        if let Some(s) = self.slots[slot].as_mut() {
                            s.held -= seats;
                        }
                        Answer::Ok(None)
                    }
                }
            }
            Op::Expire { minutes } => {
                self.now += Duration::minutes(*minutes);
                Answer::Reclaimed(self.reclaim())
            }
            Op::Cancel { appt, passport } => {
                if self.appts.is_empty() {
                    return Answer::Refused("AppointmentNotFound");
                }
                let k = appt % self.appts.len();
                let a = &mut self.appts[k];
                if !a.group.contains(&passport.unwrap_or(a.group[0])) {
                    return Answer::Refused("AppointmentNotFound");
                }
                if a.cancelled {
                    return Answer::Refused("AppointmentCancelled");
                }
                a.cancelled = true;
                let (slot, seats, conf) = (a.slot, a.group.len() as u32, a.conf.clone());
                if let Some(s) = self.slots[slot].as_mut() {
                    s.booked -= seats;
                }
                Answer::Ok(Some(conf))
            }
            Op::Reschedule { appt, slot } => {
                if self.appts.is_empty() {
                    return Answer::Refused("AppointmentNotFound");
                }
                self.reclaim();
                let k = appt % self.appts.len();
                let a = self.appts[k].clone();
                if a.cancelled {
                    return Answer::Refused("AppointmentCancelled");
                }
                if a.slot == *slot {
                    return Answer::Refused("RescheduleSameSlot");
                }
                let Some(to) = self.slots[*slot] else {
                    return Answer::Refused("SlotNotFound");
                };
                let seats = a.group.len() as u32;
                if to.capacity - to.booked - to.held < seats {
                    return Answer::Refused("SlotFull");
                }
                if a.group
                    .iter()
                    .any(|p| self.reschedules.get(p).copied().unwrap_or(0) >= RESCHEDULE_LIMIT)
                {
                    return Answer::Refused("RescheduleLimit");
                }
                for p in &a.group {
                    *self.reschedules.entry(*p).or_default() += 1;
                }
                if let Some(s) = self.slots[a.slot].as_mut() {
                    s.booked -= seats;
                }
                if let Some(s) = self.slots[*slot].as_mut() {
                    s.booked += seats;
                }
                self.appts[k].slot = *slot;
                Answer::Ok(Some(a.conf))
            }
        }
    }

    fn hold_state(&self, k: usize) -> HoldState {
        let h = &self.holds[k];
        match h.state {
            HoldState::Held if h.expires <= self.now => HoldState::Expired,
            s => s,
        }
    }
}

/// Which hold a confirm or release names: None for an id nobody was given.
fn pick(hold: usize, unknown: bool, holds: usize) -> Option<usize> {
    (!unknown && holds > 0).then(|| hold % holds)
}

/// The ids a step may need, drawn once per step so every backend gets the same ones.
struct Fresh {
    request_id: String,
    conf: ConfirmationNumber,
    hold: HoldId,
}

// ---------------------------------------------------------------------------------------------
// A backend under test

struct Backend {
    store: Arc<dyn Inventory>,
}

fn kind(e: &StoreError) -> Result<&'static str, String> {
    let StoreError::Domain(e) = e else {
        return Err(format!("not a business refusal: {e:?}"));
    };
    let debug = format!("{e:?}");
    let name = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default();
    // Leak-free 'static names: every kind the model can answer.
    const KINDS: [&str; 10] = [
        "SlotNotFound",
        "SlotFull",
        "ReceiptInUse",
        "CapacityBelowBooked",
        "HoldNotFound",
        "HoldNotActive",
        "HoldExpired",
        "AppointmentNotFound",
        "AppointmentCancelled",
        "RescheduleSameSlot",
    ];
    KINDS
        .iter()
        .chain(
            [
                "RescheduleLimit",
                "ApplicantAlreadyBooked",
                "RequestIdReused",
            ]
            .iter(),
        )
        .find(|k| **k == name)
        .copied()
        .ok_or_else(|| format!("unexpected refusal {e:?}"))
}

impl Backend {
    async fn setup(&self) {
        for i in 1..=PEOPLE {
            support::domain::register(self.store.as_ref(), i).await;
        }
    }

    /// Applies the step as the model did; returns the answer (kind only) and the full result
    /// text for the differential comparison.
    async fn apply(
        &self,
        op: &Op,
        model: &Model,
        fresh: &Fresh,
        last_book: &Option<(String, usize, Vec<u32>)>,
    ) -> Result<(Answer, String), String> {
        let now = model.now;
        let answer = |r: Result<Option<ConfirmationNumber>, StoreError>| match r {
            Ok(c) => Ok(Answer::Ok(c)),
            Err(e) => kind(&e).map(Answer::Refused),
        };
        let book = |rid: &str, slot: usize, group: &[u32]| {
            Booking::new(
                request_id(rid),
                slot_ref(slot),
                group.iter().map(|&i| applicant(i)).collect(),
            )
            .expect("valid group")
        };
        Ok(match op {
            Op::Open { slot, seats } => {
                let t = time(*slot);
                let r = self
                    .store
                    .open_slots(
                        &OpenPlan {
                            post: day().post,
                            category: day().category,
                            range: DateRange::new(day().date, day().date).expect("range"),
                            weekdays: support::domain::every_weekday(),
                            first: t,
                            last: t,
                            seats: *seats,
                        },
                        now,
                    )
                    .await;
                let text = format!("{r:?}");
                (answer(r.map(|_| None))?, text)
            }
            Op::Resize { slot, capacity } => {
                let r = self
                    .store
                    .set_capacity(&slot_ref(*slot), *capacity, now)
                    .await;
                let text = format!("{r:?}");
                (answer(r.map(|_| None))?, text)
            }
            Op::Book { slot, group } => {
                let r = self
                    .store
                    .book(&book(&fresh.request_id, *slot, group), &fresh.conf, now)
                    .await;
                let text = format!("{r:?}");
                (answer(r.map(|a| Some(a.confirmation)))?, text)
            }
            Op::RetryBook => match last_book {
                None => (Answer::Ok(None), String::new()),
                Some((rid, slot, group)) => {
                    let r = self
                        .store
                        .book(&book(rid, *slot, group), &fresh.conf, now)
                        .await;
                    let text = format!("{r:?}");
                    (answer(r.map(|a| Some(a.confirmation)))?, text)
                }
            },
            Op::Hold { slot, group } => {
                let r = self
                    .store
                    .hold(
                        &book(&fresh.request_id, *slot, group),
                        &fresh.hold,
                        now + Duration::minutes(HOLD_TTL_MINUTES),
                        now,
                    )
                    .await;
                let text = format!("{r:?}");
                (answer(r.map(|_| None))?, text)
            }
            Op::Confirm { hold, unknown } | Op::Release { hold, unknown } => {
                let id = pick(*hold, *unknown, model.holds.len())
                    .map(|k| model.holds[k].id.clone())
                    .unwrap_or_else(HoldId::generate);
                if matches!(op, Op::Confirm { .. }) {
                    let r = self
                        .store
                        .confirm_hold(
                            &HoldConfirmation {
                                request_id: request_id(&fresh.request_id),
                                hold: id,
                                admission: None,
                            },
                            &fresh.conf,
                            now,
                        )
                        .await;
                    let text = format!("{r:?}");
                    (answer(r.map(|a| Some(a.confirmation)))?, text)
                } else {
                    let r = self
                        .store
                        .release_hold(
                            &HoldRelease {
                                request_id: request_id(&fresh.request_id),
                                hold: id,
                            },
                            now,
                        )
                        .await;
                    let text = format!("{r:?}");
                    (answer(r.map(|_| None))?, text)
                }
            }
            Op::Expire { minutes } => {
                let r = self
                    .store
                    .reclaim_expired_holds(now + Duration::minutes(*minutes))
                    .await;
                let text = format!("{r:?}");
                match r {
                    Ok(n) => (Answer::Reclaimed(n.holds), text),
                    Err(e) => return Err(format!("reclaim failed: {e:?}")),
                }
            }
            Op::Cancel { appt, passport } => {
                let Some(a) =
                    (!model.appts.is_empty()).then(|| &model.appts[appt % model.appts.len()])
                else {
                    return Ok((Answer::Refused("AppointmentNotFound"), String::new()));
                };
                let r = self
                    .store
                    .cancel(
                        &Cancellation {
                            request_id: request_id(&fresh.request_id),
                            confirmation: a.conf.clone(),
                            passport: applicant(passport.unwrap_or(a.group[0])).passport,
                        },
                        now,
                    )
                    .await;
                let text = format!("{r:?}");
                (answer(r.map(|a| Some(a.confirmation)))?, text)
            }
            Op::Reschedule { appt, slot } => {
                let Some(a) =
                    (!model.appts.is_empty()).then(|| &model.appts[appt % model.appts.len()])
                else {
                    return Ok((Answer::Refused("AppointmentNotFound"), String::new()));
                };
                let r = self
                    .store
                    .reschedule(
                        &Reschedule {
                            request_id: request_id(&fresh.request_id),
                            confirmation: a.conf.clone(),
                            passport: applicant(a.group[0]).passport,
                            new_slot: slot_ref(*slot),
                        },
                        RESCHEDULE_LIMIT,
                        now,
                    )
                    .await;
                let text = format!("{r:?}");
                (answer(r.map(|a| Some(a.confirmation)))?, text)
            }
        })
    }

    /// The backend's state in the model's terms; also checks the audit.
    async fn state(&self, model: &Model) -> Result<String, String> {
        let range = DateRange::new(day().date, day().date).expect("range");
        let slots = self
            .store
            .slots(&day().post, &day().category, range)
            .await
            .map_err(|e| format!("slots: {e:?}"))?;
        let mut out = String::new();
        for (i, want) in model.slots.iter().enumerate() {
            let got = slots
                .iter()
                .find(|s| s.slot.time == time(i))
                .map(|s| SlotM {
                    capacity: s.capacity,
                    booked: s.booked,
                    held: s.held,
                });
            out += &format!("slot {i}: {got:?}\n");
            if got != *want {
                return Err(format!("slot {i}: backend {got:?}, model {want:?}"));
            }
        }
        for a in &model.appts {
            let got = self
                .store
                .appointment(&a.conf, &applicant(a.group[0]).passport)
                .await
                .map_err(|e| format!("appointment {}: {e:?}", a.conf))?;
            let status = got.status.as_str();
            out += &format!("{}: {status} at {}\n", a.conf, got.slot);
            let want = if a.cancelled { "CANCELLED" } else { "BOOKED" };
            if status != want
                || got.slot != slot_ref(a.slot)
                || got.seats() as usize != a.group.len()
            {
                return Err(format!(
                    "appointment {}: backend {status} at {} ({} seats), model {want} at {} ({})",
                    a.conf,
                    got.slot,
                    got.seats(),
                    slot_ref(a.slot),
                    a.group.len()
                ));
            }
        }
        let audit = self
            .store
            .audit(&day().post, &day().category, range)
            .await
            .map_err(|e| format!("audit: {e:?}"))?;
        if !audit.violations.is_empty() {
            return Err(format!("audit: {:?}", audit.violations));
        }
        Ok(out)
    }
}

/// Runs `ops` on the model and on each backend; with two backends also compares their full
/// answers (the differential). Err names the first step where anything disagrees.
async fn run(ops: &[Op], backends: &[Backend]) -> Result<(), String> {
    run_counting(ops, backends, &Coverage::default()).await
}

/// How often each operation was answered OK and refused over a whole test, so a generator
/// that stops reaching the interesting paths fails the test instead of passing vacuously.
#[derive(Default)]
struct Coverage(std::sync::Mutex<BTreeMap<String, u32>>);

impl Coverage {
    fn count(&self, op: &Op, answer: &Answer) {
        let name = format!("{op:?}");
        let name = name
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .unwrap_or_default();
        let what = match answer {
            Answer::Ok(_) | Answer::Reclaimed(0) => format!("{name} ok"),
            Answer::Reclaimed(_) => format!("{name} reclaimed"),
            Answer::Refused(why) => format!("{name} {why}"),
        };
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what)
            .or_default() += 1;
    }

    /// Panics unless every listed outcome happened at least once.
    fn require(&self, outcomes: &[&str]) {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!("coverage: {seen:?}");
        for o in outcomes {
            assert!(seen.contains_key(*o), "never reached {o:?}: {seen:?}");
        }
    }
}

const REQUIRED: &[&str] = &[
    "Open ok",
    "Resize ok",
    "Resize CapacityBelowBooked",
    "Book ok",
    "Book SlotFull",
    "Book ReceiptInUse",
    "Book SlotNotFound",
    "RetryBook ok",
    "Hold ok",
    "Confirm ok",
    "Confirm HoldExpired",
    "Confirm HoldNotFound",
    "Release ok",
    "Expire reclaimed",
    "Cancel ok",
    "Cancel AppointmentNotFound",
    "Cancel AppointmentCancelled",
    "Reschedule ok",
    "Reschedule SlotFull",
    "Reschedule RescheduleLimit",
];

async fn run_counting(ops: &[Op], backends: &[Backend], coverage: &Coverage) -> Result<(), String> {
    for b in backends {
        b.setup().await;
    }
    let mut model = Model::new();
    for (n, op) in ops.iter().enumerate() {
        let fresh = Fresh {
            request_id: format!("step-{n}"),
            conf: ConfirmationNumber::generate(),
            hold: HoldId::generate(),
        };
        let last_book = model
            .last_book
            .as_ref()
            .map(|(rid, slot, group, _)| (rid.clone(), *slot, group.clone()));
        let before = model.clone();
        let want = model.apply(op, &fresh);
        coverage.count(op, &want);
        let mut texts = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let (got, text) = b
                .apply(op, &before, &fresh, &last_book)
                .await
                .map_err(|e| format!("step {n} {op:?} on backend {i}: {e}"))?;
            if got != want {
                return Err(format!(
                    "step {n} {op:?}: backend {i} answered {got:?}, the model {want:?}\n  {text}"
                ));
            }
            let state = b
                .state(&model)
                .await
                .map_err(|e| format!("after step {n} {op:?}, backend {i}: {e}"))?;
            texts.push((text, state));
        }
        if let [(a, sa), (b, sb)] = texts.as_slice() {
            if a != b || sa != sb {
                return Err(format!(
                    "step {n} {op:?}: the backends differ\n  redis:  {a}\n  memory: {b}\n  \
                     redis state:\n{sa}  memory state:\n{sb}"
                ));
            }
        }
    }
    Ok(())
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        max_shrink_iters: 400,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Fresh random sequences on every run: over many CI runs this explores more.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(config(cases))
}

/// The same sequences on every run, so the coverage floor is checked deterministically and
/// never fails by chance.
fn seeded_runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        config(cases),
        TestRng::from_seed(RngAlgorithm::ChaCha, &SEED),
    )
}

const SEED: [u8; 32] = *b"slotd-model-based-test-seed-0001";

fn report(result: Result<(), TestError<Vec<Op>>>) {
    if let Err(e) = result {
        panic!("model disagreement (shrunk): {e}");
    }
}

#[test]
fn the_embedded_store_agrees_with_the_model_step_by_step() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let case = |ops: Vec<Op>, coverage: &Coverage| {
        let backend = Backend {
            store: Arc::new(MemoryStore::new()),
        };
        rt.block_on(run_counting(&ops, &[backend], coverage))
            .map_err(TestCaseError::fail)
    };
    // A fixed set of sequences that must reach every interesting outcome...
    let coverage = Coverage::default();
    report(seeded_runner(128).run(&ops(50), |ops| case(ops, &coverage)));
    coverage.require(REQUIRED);
    // ...then fresh ones, different on every run.
    let fresh = Coverage::default();
    report(runner(128).run(&ops(50), |ops| case(ops, &fresh)));
}

#[test]
fn redis_agrees_with_the_model_and_with_the_embedded_store() {
    let redis = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tags = std::sync::atomic::AtomicU32::new(0);
    let case = |ops: Vec<Op>, coverage: &Coverage| {
        // Each case (and each shrink step) gets its own key space on the one server.
        let n = tags.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _runtime = rt.enter();
        let redis_store = redis.store_with(RedisOptions {
            conn: ConnOptions {
                url: redis.url(),
                ..ConnOptions::default()
            },
            tag: format!("model{n}"),
        });
        let backends = [
            Backend { store: redis_store },
            Backend {
                store: Arc::new(MemoryStore::new()),
            },
        ];
        rt.block_on(run_counting(&ops, &backends, coverage))
            .map_err(TestCaseError::fail)
    };
    // Fixed sequences that must reach the main paths, then fresh ones.
    let coverage = Coverage::default();
    report(seeded_runner(32).run(&ops(40), |ops| case(ops, &coverage)));
    coverage.require(&[
        "Book ok",
        "Hold ok",
        "Confirm ok",
        "Cancel ok",
        "Reschedule ok",
        "Expire reclaimed",
    ]);
    let fresh = Coverage::default();
    report(runner(16).run(&ops(40), |ops| case(ops, &fresh)));
}

/// The harness can fail: the store refuses what breaks a rule, and a backend whose state differs
/// from the model's is reported.
#[test]
fn the_harness_catches_a_backend_that_disagrees() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // A backend that starts from other state than the model (a slot opened behind its back)
    // is reported at the first step where it shows.
    let skewed = Backend {
        store: Arc::new(MemoryStore::new()),
    };
    let result = rt.block_on(async {
        skewed.setup().await;
        skewed
            .store
            .open_slots(
                &OpenPlan {
                    post: day().post,
                    category: day().category,
                    range: DateRange::new(day().date, day().date).expect("range"),
                    weekdays: vec![Weekday::Tue],
                    first: time(1),
                    last: time(1),
                    seats: 1,
                },
                epoch(),
            )
            .await
            .expect("open");
        run(
            &[Op::Resize {
                slot: 1,
                capacity: 3,
            }],
            &[skewed],
        )
        .await
    });
    assert!(
        result.as_ref().is_err_and(|e| e.contains("SlotNotFound")),
        "{result:?}"
    );
}
