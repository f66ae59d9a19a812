//! The production backend: slot inventory, appointments and receipts in Redis, with the same
//! semantics as `memory` (one conformance suite runs against both).
//!
//! Every mutation is one Lua function of slotd's Redis Functions library (`functions`, from
//! `lua/*.lua`, each with its KEYS/ARGV/return contract in a header, called with FCALL) that
//! checks everything first and writes last, so it is atomic even though Redis does
//! not roll a failing script back. All keys share one hash tag (`keys`, `docs/redis-keys.md`),
//! so a booking checks the global applicant rules and takes its seats in one call. Refusals come
//! back as status arrays (`{"SLOT_FULL", remaining}`), decoded here into `domain::Error`; Redis
//! failures are `StoreError::Unavailable` (`conn`). `now` comes from slotd's clock in ARGV;
//! scripts never read Redis TIME (see `domain::clock`).
//!
//! This module must not know about gRPC, and nothing above `store` sees a redis type.

mod admission;
mod codec;
pub mod conn;
pub mod functions;
pub mod keys;
pub mod layout;
mod placed;
mod refusal;
mod retention;
pub mod room;
mod sold_out;
mod waitlist;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use conn::ConnOptions;

use self::admission::steps_exhausted;
use self::codec::{
    applicants_json, at, decode_appointment, decode_hold, for_each_field, hash_fields,
    instant_text, int, millis, status_reply, text, uint, unexpected, StoredAppointment, StoredHold,
};
use self::conn::Conn;
use self::keys::{hhmm, parse_hhmm, Keys};
use self::refusal::{refusal, Asked};
use super::{
    EventPage, Inventory, ManifestPage, OpenReport, Reclaimed, StoreError, ADMISSION_STEP_LIMIT,
    IDEMPOTENCY_TTL_SECS,
};
use crate::domain::error::reason;
use crate::domain::lifecycle::{
    Event, EventId, EventStart, Hold, HoldConfirmation, HoldId, HoldRelease, HoldRequest,
    HoldStatus, Reschedule,
};
use crate::domain::rules::{
    audit_slot, AuditReport, Booking, Cancellation, DateRange, ManifestCursor, ManifestQuery,
    OpenPlan,
};
use crate::domain::types::{
    format_date, Appointment, AppointmentStatus, CategoryId, ConfirmationNumber, DayRef,
    PassportNumber, PostId, Receipt, SlotRef, SlotState, SlotTime,
};
use crate::domain::waitlist::{EntryId, WaitlistEntry, WaitlistJoin, DEFAULT_OFFER_TTL_SECS};
use crate::domain::Error;

/// How many times a cancel re-reads an appointment that changed under it (only possible while
/// its booking is landing) before giving up.
const CANCEL_ATTEMPTS: usize = 3;

/// How long a hold record outlives its expiry, so a late confirm answers HOLD_EXPIRED (not
/// HOLD_NOT_FOUND) and a retried hold request replays. Garbage collection only: no decision
/// reads this TTL.
const HOLD_RECORD_GRACE_SECS: i64 = 24 * 60 * 60;

/// How many due holds one sweep reads.
const SWEEP_BATCH: usize = 1000;

/// Everything the Redis store needs to know.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub conn: ConnOptions,
    /// The hash tag every key carries (`slotd:{<tag>}:...`).
    pub tag: String,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            conn: ConnOptions::default(),
            tag: keys::DEFAULT_TAG.into(),
        }
    }
}

struct Scripts {
    open_slots: conn::Function,
    set_capacity: conn::Function,
    close_slots: conn::Function,
    book: conn::Function,
    cancel: conn::Function,
    register_receipt: conn::Function,
    audit: conn::Function,
    manifest: conn::Function,
    hold: conn::Function,
    confirm_hold: conn::Function,
    release_hold: conn::Function,
    reclaim: conn::Function,
    reschedule: conn::Function,
    wl_join: conn::Function,
    wl_leave: conn::Function,
    wl_retire: conn::Function,
    appt_retire: conn::Function,
    appt_expire: conn::Function,
    day_retire: conn::Function,
    backfill_scan: conn::Function,
    layout: conn::Function,
}

impl Scripts {
    /// The library functions of `conn`'s version (the cluster-guarded library on a cluster).
    fn new(conn: &Conn) -> Self {
        use self::functions::Op;
        Self {
            open_slots: conn.function(Op::OpenSlots),
            set_capacity: conn.function(Op::SetCapacity),
            close_slots: conn.function(Op::CloseSlots),
            book: conn.function(Op::Book),
            cancel: conn.function(Op::Cancel),
            register_receipt: conn.function(Op::RegisterReceipt),
            audit: conn.function(Op::Audit),
            manifest: conn.function(Op::Manifest),
            hold: conn.function(Op::Hold),
            confirm_hold: conn.function(Op::ConfirmHold),
            release_hold: conn.function(Op::ReleaseHold),
            reclaim: conn.function(Op::Reclaim),
            reschedule: conn.function(Op::Reschedule),
            wl_join: conn.function(Op::WlJoin),
            wl_leave: conn.function(Op::WlLeave),
            wl_retire: conn.function(Op::WlRetire),
            appt_retire: conn.function(Op::ApptRetire),
            appt_expire: conn.function(Op::ApptExpire),
            day_retire: conn.function(Op::DayRetire),
            backfill_scan: conn.function(Op::BackfillScan),
            layout: conn.function(Op::Layout),
        }
    }
}

pub struct RedisStore {
    conn: Conn,
    keys: Keys,
    scripts: Scripts,
    sold_out: sold_out::SoldOut,
    /// The holds this replica placed, so their confirmation needs no read of the record.
    placed: placed::Placed,
    offer_ttl: chrono::Duration,
    retention: chrono::Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("conn", &self.conn)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Validates the options and prepares a lazy connection: nothing is sent until the first
    /// call, so slotd can start before Redis does (health says NOT_SERVING meanwhile). Must run
    /// inside a tokio runtime.
    pub fn connect(options: &RedisOptions) -> Result<Self, StoreError> {
        let keys = Keys::new(&options.tag).map_err(|detail| StoreError::Misconfigured {
            key: "redis.tag",
            detail,
        })?;
        let conn = Conn::open(&options.conn)?;
        Ok(Self {
            scripts: Scripts::new(&conn),
            conn,
            keys,
            sold_out: sold_out::SoldOut::new(sold_out::SOLD_OUT_TTL),
            placed: placed::Placed::default(),
            offer_ttl: chrono::Duration::seconds(DEFAULT_OFFER_TTL_SECS as i64),
            retention: chrono::Duration::days(super::DEFAULT_RETENTION_DAYS),
        })
    }

    /// At start: a TLS trust failure (wrong `redis.tls_ca_cert`, refused client certificate),
    /// named by its key, so slotd exits instead of serving NOT_SERVING forever.
    pub async fn tls_refusal(&self) -> Option<conn::ConnConfigError> {
        self.conn.tls_refusal().await
    }

    /// How long a waitlist offer keeps its seats (default 30 minutes).
    pub fn with_offer_ttl(mut self, ttl: chrono::Duration) -> Self {
        self.offer_ttl = ttl;
        self
    }

    /// How long a cancelled appointment stays readable before its record expires
    /// (`booking.retention_days`; default 90 days; at least 1 ms).
    pub fn with_retention(mut self, retention: chrono::Duration) -> Self {
        self.retention = retention.max(chrono::Duration::milliseconds(1));
        self
    }

    /// The five offer-context arguments of every script that may release seats (see
    /// `offer_context` in holds_lib.lua): key prefix, now, offer TTL, hold record TTL, nonce.
    fn offer_context(&self, invocation: &mut conn::Invocation<'_>, now: DateTime<Utc>) {
        use rand::Rng;
        let nonce: [u8; 16] = rand::rng().random();
        invocation
            .arg(self.keys.prefix())
            .arg(instant_text(now))
            .arg(self.offer_ttl.num_milliseconds())
            .arg(self.offer_ttl.num_seconds() + HOLD_RECORD_GRACE_SECS)
            .arg(hex::encode(nonce));
    }

    /// How long a slot seen sold out is refused without running the booking script
    /// (`sold_out`; default 500 ms, zero turns the memo off).
    pub fn with_sold_out_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.sold_out = sold_out::SoldOut::new(ttl);
        self
    }

    /// Marks the memo from a booking's or a hold's `SLOT_FULL` answer. Seats under live holds
    /// come back by themselves at an expiry in slotd's clock, which a wall-clock memo cannot
    /// see: only a slot full of bookings (nothing remaining, nothing held) is memoised.
    fn memo_refusal(
        &self,
        what: &str,
        refused: &str,
        items: &[::redis::Value],
        memo_key: String,
    ) -> Result<(), StoreError> {
        if refused == reason::SLOT_FULL {
            let remaining = uint(what, at(what, items, 0)?)?;
            let held = uint(what, at(what, items, 1)?)?;
            if remaining == 0 && held == 0 {
                self.sold_out.mark(memo_key, std::time::Instant::now());
            }
        }
        Ok(())
    }

    /// The sold-out memo's answer to a hold (the booking's, `book`, for holds): `SlotFull`
    /// without running the script when the memo knows the slot is full of bookings and the
    /// request_id was not seen (one `EXISTS`: a seen one replays its first outcome in the
    /// script); else the memo key, for the script's answer to mark.
    async fn sold_out_hold(&self, request: &HoldRequest) -> Result<String, StoreError> {
        let slot = &request.slot;
        let memo_key = memo_key(&self.keys.day(&slot.day()), &hhmm(slot.time));
        let memo = self.sold_out.lookup(&memo_key, std::time::Instant::now());
        if memo == sold_out::Memo::Stale {
            return self.recheck_sold_out_hold(request, memo_key).await;
        }
        if memo == sold_out::Memo::Fresh {
            let seen = self
                .conn
                .cmd(
                    "hold",
                    ::redis::cmd("EXISTS").arg(self.keys.idem_hold(&request.request_id)),
                )
                .await?;
            if int("hold", &seen)? == 0 {
                return Err(sold_out_refusal(slot, request.seats()));
            }
        }
        Ok(memo_key)
    }

    /// A hold on a slot the memo saw sold out more than its TTL ago (`sold_out::Memo::Stale`):
    /// one pipeline reads whether the request was seen and the slot's counters. Still full of
    /// bookings (open, nothing remaining, no seat under a hold, live or not) and not seen: the
    /// hold is refused `SlotFull` as hold.lua would refuse it, and the slot is remembered again.
    /// Anything else (seats back, a hold in the way, a replay): the memo key, for the script.
    async fn recheck_sold_out_hold(
        &self,
        request: &HoldRequest,
        memo_key: String,
    ) -> Result<String, StoreError> {
        let what = "hold";
        let slot = &request.slot;
        let t = hhmm(slot.time);
        let mut pipe = ::redis::pipe();
        pipe.cmd("EXISTS")
            .arg(self.keys.idem_hold(&request.request_id))
            .cmd("HMGET")
            .arg(self.keys.day(&slot.day()))
            .arg(format!("{t}:c"))
            .arg(format!("{t}:b"))
            .arg(format!("{t}:x"))
            .arg(format!("{t}:h"));
        let replies = self.conn.pipeline(what, &pipe).await?;
        let [seen, counters] = replies.as_slice() else {
            return Err(StoreError::corrupt(format!("{what}: reply count")));
        };
        let field = |i: usize| -> Result<Option<String>, StoreError> {
            match counters {
                ::redis::Value::Array(items) => match items.get(i) {
                    None | Some(::redis::Value::Nil) => Ok(None),
                    Some(v) => text(what, v).map(Some),
                },
                _ => Err(StoreError::corrupt(format!("{what}: slot counters"))),
            }
        };
        let number = |v: Option<String>| -> Option<i64> { v.map_or(Some(0), |v| v.parse().ok()) };
        let capacity = field(0)?.and_then(|c| c.parse::<i64>().ok());
        let closed = field(2)?.as_deref() == Some("1");
        let (booked, held) = (number(field(1)?), number(field(3)?));
        let full = match (capacity, booked, held) {
            (Some(c), Some(b), Some(0)) => !closed && b >= c,
            _ => false,
        };
        if int(what, seen)? == 0 && full {
            self.sold_out.mark(memo_key, std::time::Instant::now());
            return Err(sold_out_refusal(slot, request.seats()));
        }
        Ok(memo_key)
    }

    async fn read_appointment(
        &self,
        confirmation: &ConfirmationNumber,
    ) -> Result<Option<StoredAppointment>, StoreError> {
        let what = "read appointment";
        let value = self
            .conn
            .cmd(
                what,
                ::redis::cmd("HGETALL").arg(self.keys.appointment(confirmation)),
            )
            .await?;
        decode_appointment(confirmation, hash_fields(what, value)?)
    }

    /// The first outcome of a replayed request: the appointment it names, as it is now.
    async fn replayed(&self, confirmation: &str) -> Result<Appointment, StoreError> {
        let confirmation = ConfirmationNumber::parse(confirmation)
            .map_err(|_| StoreError::corrupt("idempotency record names a bad confirmation"))?;
        self.read_appointment(&confirmation)
            .await?
            .map(|s| s.appointment)
            .ok_or_else(|| StoreError::corrupt("remembered request names a missing appointment"))
    }

    fn slot_state(
        day: &DayRef,
        time: SlotTime,
        capacity: u32,
        booked: u32,
        closed: bool,
    ) -> SlotState {
        SlotState {
            slot: day.at(time),
            capacity,
            booked,
            held: 0,
            closed,
        }
    }

    async fn read_hold(&self, id: &HoldId) -> Result<Option<StoredHold>, StoreError> {
        let what = "read hold";
        let value = self
            .conn
            .cmd(what, ::redis::cmd("HGETALL").arg(self.keys.hold(id)))
            .await?;
        decode_hold(id, hash_fields(what, value)?)
    }
}

/// The slots of one day hash (fields `<HHMM>:c|b|x`), ordered by time.
fn day_slots(
    day: &DayRef,
    fields: &std::collections::HashMap<String, String>,
) -> Result<Vec<SlotState>, StoreError> {
    let mut slots = Vec::new();
    for (field, value) in fields {
        let Some(prefix) = field.strip_suffix(":c") else {
            continue;
        };
        let time = parse_hhmm(prefix)
            .ok_or_else(|| StoreError::corrupt(format!("day {day}: bad field {field}")))?;
        let number = |suffix: &str| -> Result<u32, StoreError> {
            match fields.get(&format!("{prefix}:{suffix}")) {
                None => Ok(0),
                Some(v) => v
                    .parse()
                    .map_err(|_| StoreError::corrupt(format!("day {day}: bad {prefix}:{suffix}"))),
            }
        };
        let capacity = value
            .parse()
            .map_err(|_| StoreError::corrupt(format!("day {day}: bad {field}")))?;
        slots.push(SlotState {
            held: number("h")?,
            ..RedisStore::slot_state(day, time, capacity, number("b")?, number("x")? == 1)
        });
    }
    slots.sort_by_key(|s| s.slot.time);
    Ok(slots)
}

/// The sold-out memo's key of a slot: `<day key>:<HHMM>`.
fn memo_key(day_key: &str, hhmm: &str) -> String {
    [day_key, hhmm].join(":")
}

/// The answer to a booking or hold on a slot the sold-out memo (or its recheck) knows is full of
/// bookings: what book.lua / hold.lua would refuse it with.
fn sold_out_refusal(slot: &SlotRef, requested: u32) -> StoreError {
    Error::SlotFull {
        slot: slot.clone(),
        requested,
        remaining: 0,
    }
    .into()
}

fn range_days(post: &PostId, category: &CategoryId, range: DateRange) -> Vec<DayRef> {
    range
        .days()
        .map(|date| DayRef {
            post: post.clone(),
            category: category.clone(),
            date,
        })
        .collect()
}

fn applicant_at<'a, T>(
    what: &str,
    list: &'a [T],
    items: &[::redis::Value],
) -> Result<&'a T, StoreError> {
    let index = int(what, at(what, items, 0)?)?;
    usize::try_from(index - 1)
        .ok()
        .and_then(|i| list.get(i))
        .ok_or_else(|| StoreError::corrupt(format!("{what}: applicant index {index} out of range")))
}

#[async_trait]
impl Inventory for RedisStore {
    async fn open_slots(
        &self,
        plan: &OpenPlan,
        now: DateTime<Utc>,
    ) -> Result<OpenReport, StoreError> {
        let what = "open slots";
        // Seats may come back: the sold-out memo forgets everything when this returns.
        let _seats_may_return = self.sold_out.forget_on_drop();
        let days: Vec<DayRef> = plan.days().collect();
        if days.is_empty() {
            return Ok(OpenReport::default());
        }
        // Index the days before opening them, so a day with slots is always in `days-due`
        // (the sweeper retires its appointments once it has passed); a day indexed whose
        // script then failed has no appointments and simply leaves the index when due.
        let mut index = ::redis::cmd("ZADD");
        index.arg(self.keys.days_due());
        for day in &days {
            index
                .arg(millis(super::appointment_retire_at(day.date)))
                .arg(Keys::day_label(day));
        }
        self.conn.cmd(what, &index).await?;
        let mut invocation = self.scripts.open_slots.key(self.keys.events());
        for day in &days {
            invocation.key(self.keys.day(day));
        }
        invocation
            .arg(plan.seats)
            .arg(plan.post.as_str())
            .arg(plan.category.as_str())
            .arg(format_date(plan.range.from))
            .arg(format_date(plan.range.to));
        self.offer_context(&mut invocation, now);
        invocation.arg(millis(now));
        for time in plan.times() {
            invocation.arg(hhmm(time));
        }
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        if status != "OK" {
            return Err(unexpected(what, &status, &items));
        }
        let mut report = OpenReport {
            opened: uint(what, at(what, &items, 0)?)?,
            updated: uint(what, at(what, &items, 1)?)?,
            kept_at_booked: Vec::new(),
        };
        for kept in items[2..].chunks(4) {
            let [day, time, booked, held] = kept else {
                return Err(StoreError::corrupt(format!("{what}: ragged kept list")));
            };
            let day = usize::try_from(int(what, day)?)
                .ok()
                .and_then(|i| days.get(i))
                .ok_or_else(|| StoreError::corrupt(format!("{what}: day index out of range")))?;
            let time = parse_hhmm(&text(what, time)?)
                .ok_or_else(|| StoreError::corrupt(format!("{what}: bad time")))?;
            let (booked, held) = (uint(what, booked)?, uint(what, held)?);
            report.kept_at_booked.push(SlotState {
                held,
                ..Self::slot_state(day, time, booked + held, booked, false)
            });
        }
        Ok(report)
    }

    async fn set_capacity(
        &self,
        slot: &SlotRef,
        capacity: u32,
        now: DateTime<Utc>,
    ) -> Result<SlotState, StoreError> {
        let what = "set capacity";
        // Seats may come back: the sold-out memo forgets everything when this returns.
        let _seats_may_return = self.sold_out.forget_on_drop();
        let mut invocation = self.scripts.set_capacity.key(self.keys.day(&slot.day()));
        invocation
            .key(self.keys.events())
            .arg(hhmm(slot.time))
            .arg(capacity)
            .arg(slot.to_string())
            .arg(slot.post.as_str())
            .arg(slot.category.as_str())
            .arg(format_date(slot.date));
        self.offer_context(&mut invocation, now);
        invocation.arg(millis(now));
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        match status.as_str() {
            "OK" => Ok(SlotState {
                slot: slot.clone(),
                capacity: uint(what, at(what, &items, 0)?)?,
                booked: uint(what, at(what, &items, 1)?)?,
                closed: int(what, at(what, &items, 2)?)? == 1,
                held: uint(what, at(what, &items, 3)?)?,
            }),
            refused => Err(refusal(
                what,
                refused,
                &items,
                &Asked {
                    slot: Some(slot),
                    capacity: Some(capacity),
                    ..Asked::default()
                },
            )),
        }
    }

    async fn close_slots(&self, day: &DayRef, time: Option<SlotTime>) -> Result<u32, StoreError> {
        let what = "close slots";
        // A closed slot answers SLOT_CLOSED, not a remembered SLOT_FULL.
        let _answer_changes = self.sold_out.forget_on_drop();
        let mut invocation = self.scripts.close_slots.key(self.keys.day(day));
        invocation
            .key(self.keys.events())
            .arg(time.map(hhmm).unwrap_or_default())
            .arg(day.to_string());
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        match status.as_str() {
            "OK" => uint(what, at(what, &items, 0)?),
            refused => {
                let slot = time.map(|t| day.at(t));
                let asked = Asked {
                    slot: slot.as_ref(),
                    ..Asked::default()
                };
                Err(refusal(what, refused, &items, &asked))
            }
        }
    }

    async fn slots(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<Vec<SlotState>, StoreError> {
        let what = "list slots";
        let days = range_days(post, category, range);
        // Plain reads, one round trip: a pipeline of HGETALLs (scripts never go in pipelines).
        let mut pipe = ::redis::pipe();
        for day in &days {
            pipe.cmd("HGETALL").arg(self.keys.day(day));
        }
        let replies = self.conn.pipeline(what, &pipe).await?;
        if replies.len() != days.len() {
            return Err(StoreError::corrupt(format!("{what}: reply count")));
        }
        let mut slots = Vec::new();
        for (day, reply) in days.iter().zip(replies) {
            slots.extend(day_slots(day, &hash_fields(what, reply)?)?);
        }
        Ok(slots)
    }

    async fn book(
        &self,
        booking: &Booking,
        confirmation: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let what = "book";
        let slot = &booking.slot;
        let day = slot.day();
        let day_key = self.keys.day(&day);
        let slot_hhmm = hhmm(slot.time);
        let memo_key = memo_key(&day_key, &slot_hhmm);
        if self
            .sold_out
            .is_sold_out(&memo_key, std::time::Instant::now())
        {
            // Idempotency first, as in book.lua: a remembered request_id replays its outcome.
            let seen = self
                .conn
                .cmd(
                    what,
                    ::redis::cmd("EXISTS").arg(self.keys.idem_book(&booking.request_id)),
                )
                .await?;
            if int(what, &seen)? == 0 {
                return Err(sold_out_refusal(slot, booking.seats()));
            }
        }
        let now_text = instant_text(now);
        let fingerprint = booking.fingerprint();
        // The idempotency record, built here rather than in the script (layout 2: the script
        // only checks and writes): "<fingerprint>|<CONF>|<expiry ms>".
        let expiry = (millis(now) + IDEMPOTENCY_TTL_SECS * 1000).to_string();
        let idempotency = [fingerprint.as_str(), confirmation.as_str(), &expiry].join("|");
        let mut invocation = self.scripts.book.key(day_key);
        invocation
            .key(self.keys.active(&day))
            .key(self.keys.appointment(confirmation))
            .key(self.keys.idem_book(&booking.request_id))
            .key(self.keys.events());
        for a in &booking.applicants {
            invocation
                .key(self.keys.receipt(&a.receipt))
                .key(self.keys.passport(&a.passport));
        }
        invocation
            .key(self.keys.holds(&day))
            .key(self.keys.holds_due());
        if let Some(ticket) = &booking.admission {
            invocation.key(self.keys.admission(ticket));
        }
        invocation
            .arg(millis(now))
            .arg(fingerprint.as_str())
            .arg(confirmation.as_str())
            .arg(slot_hhmm)
            .arg(booking.seats())
            .arg(IDEMPOTENCY_TTL_SECS)
            .arg(idempotency)
            .arg(now_text.as_str())
            .arg(slot.post.as_str())
            .arg(slot.category.as_str())
            .arg(format_date(slot.date))
            .arg(&slot.time.digits()[..])
            .arg(applicants_json(&booking.applicants)?);
        for a in &booking.applicants {
            invocation.arg(a.passport.as_str());
        }
        invocation.arg(Keys::day_label(&day)).arg(slot.to_string());
        if booking.admission.is_some() {
            invocation.arg(IDEMPOTENCY_TTL_SECS);
        }
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        match status.as_str() {
            "OK" => Ok(Appointment {
                confirmation: confirmation.clone(),
                slot: slot.clone(),
                applicants: booking.applicants.clone(),
                status: AppointmentStatus::Booked,
                created_at: now,
                updated_at: now,
                history: Vec::new(),
            }),
            "REPLAY" => self.replayed(&text(what, at(what, &items, 0)?)?).await,
            refused => {
                self.memo_refusal(what, refused, &items, memo_key)?;
                Err(refusal(
                    what,
                    refused,
                    &items,
                    &Asked {
                        request_id: Some(booking.request_id.to_string()),
                        ..booking_asked(booking)
                    },
                ))
            }
        }
    }

    async fn appointment(
        &self,
        confirmation: &ConfirmationNumber,
        passport: &PassportNumber,
    ) -> Result<Appointment, StoreError> {
        self.read_appointment(confirmation)
            .await?
            .map(|s| s.appointment)
            .filter(|a| a.includes(passport))
            .ok_or_else(|| Error::AppointmentNotFound.into())
    }

    async fn cancel(
        &self,
        cancellation: &Cancellation,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let what = "cancel";
        // Seats may come back: the sold-out memo forgets everything when this returns.
        let _seats_may_return = self.sold_out.forget_on_drop();
        let fingerprint = cancellation.fingerprint();
        let now_text = instant_text(now);
        for _ in 0..CANCEL_ATTEMPTS {
            // The keys to touch come from the appointment; the script re-checks this read.
            let stored = self.read_appointment(&cancellation.confirmation).await?;
            let mut invocation = self
                .scripts
                .cancel
                .key(self.keys.appointment(&cancellation.confirmation));
            invocation
                .key(self.keys.idem_cancel(&cancellation.request_id))
                .key(self.keys.events());
            if let Some(s) = &stored {
                let day = s.appointment.slot.day();
                invocation
                    .key(self.keys.day(&day))
                    .key(self.keys.active(&day));
                for a in &s.appointment.applicants {
                    invocation
                        .key(self.keys.receipt(&a.receipt))
                        .key(self.keys.passport(&a.passport));
                }
                invocation.key(self.keys.cancelled(&day));
            }
            // Under an admission the cancellation checks and counts its admission step itself.
            if let Some(ticket) = &cancellation.admission {
                invocation.key(self.keys.admission(ticket));
            }
            invocation
                .arg(millis(now))
                .arg(fingerprint.as_str())
                .arg(cancellation.confirmation.as_str())
                .arg(IDEMPOTENCY_TTL_SECS)
                .arg(now_text.as_str())
                .arg(if stored.is_some() { "1" } else { "0" })
                .arg(
                    stored
                        .as_ref()
                        .map(|s| s.applicants_json.as_str())
                        .unwrap_or(""),
                )
                .arg(match &stored {
                    Some(s) if s.appointment.includes(&cancellation.passport) => "1",
                    _ => "0",
                })
                .arg(
                    stored
                        .as_ref()
                        .map(|s| hhmm(s.appointment.slot.time))
                        .unwrap_or_default(),
                )
                .arg(
                    stored
                        .as_ref()
                        .map(|s| s.appointment.slot.to_string())
                        .unwrap_or_default(),
                );
            self.offer_context(&mut invocation, now);
            invocation
                .arg(self.retention.num_milliseconds().max(1))
                .arg(
                    stored
                        .as_ref()
                        .map(|s| {
                            ManifestCursor {
                                time: s.appointment.slot.time,
                                confirmation: cancellation.confirmation.clone(),
                            }
                            .encode()
                        })
                        .unwrap_or_default(),
                );
            if cancellation.admission.is_some() {
                invocation.arg(ADMISSION_STEP_LIMIT);
            }
            let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
            return match (status.as_str(), stored) {
                ("EXHAUSTED", _) => Err(steps_exhausted()),
                ("OK", Some(s)) => Ok(Appointment {
                    status: AppointmentStatus::Cancelled,
                    updated_at: now,
                    ..s.appointment
                }),
                ("REPLAY", _) => self.replayed(&text(what, at(what, &items, 0)?)?).await,
                ("STALE", _) => continue,
                (refused, stored) => Err(refusal(
                    what,
                    refused,
                    &items,
                    &Asked {
                        request_id: Some(cancellation.request_id.to_string()),
                        confirmation: Some(cancellation.confirmation.to_string()),
                        current_slot: stored.map(|s| s.appointment.slot),
                        ..Asked::default()
                    },
                )),
            };
        }
        Err(StoreError::corrupt(
            "cancel: the appointment kept changing under the read",
        ))
    }

    async fn manifest(&self, query: &ManifestQuery) -> Result<ManifestPage, StoreError> {
        let what = "manifest";
        let mut page = ManifestPage::default();
        if query.limit == 0 {
            return Ok(page);
        }
        let start = match &query.after {
            Some(after) => format!("({}", after.encode()),
            None => "-".into(),
        };
        let mut invocation = self.scripts.manifest.key(self.keys.active(&query.day));
        invocation
            .key(self.keys.cancelled(&query.day))
            .arg(start)
            .arg(u64::from(query.limit) + 1)
            .arg(if query.include_cancelled { "1" } else { "0" });
        let reply = self.conn.read_script(what, &invocation).await?;
        let (members, resume) = match reply {
            ::redis::Value::Array(mut parts) if parts.len() == 2 => {
                let resume = text(what, &parts[1])?;
                match parts.swap_remove(0) {
                    ::redis::Value::Array(members) => (members, resume),
                    _ => return Err(StoreError::corrupt(format!("{what}: expected members"))),
                }
            }
            _ => {
                return Err(StoreError::corrupt(format!(
                    "{what}: expected members and a resume point"
                )))
            }
        };
        // The scan budget ran out first: a short page, and the next starts after `resume`.
        let resume = match resume.as_str() {
            "" => None,
            member => Some(
                ManifestCursor::parse(member)
                    .map_err(|_| StoreError::corrupt(format!("{what}: bad member {member}")))?,
            ),
        };
        let mut cursors = Vec::with_capacity(members.len());
        for m in &members {
            let member = text(what, m)?;
            cursors.push(
                ManifestCursor::parse(&member)
                    .map_err(|_| StoreError::corrupt(format!("{what}: bad member {member}")))?,
            );
        }
        let limit = query.limit as usize;
        let more = cursors.len() > limit;
        cursors.truncate(limit);
        if cursors.is_empty() {
            page.next = resume;
            return Ok(page);
        }
        let mut pipe = ::redis::pipe();
        for c in &cursors {
            pipe.cmd("HGETALL")
                .arg(self.keys.appointment(&c.confirmation));
        }
        let replies = self.conn.pipeline(what, &pipe).await?;
        if replies.len() != cursors.len() {
            return Err(StoreError::corrupt(format!("{what}: reply count")));
        }
        for (c, reply) in cursors.iter().zip(replies) {
            let Some(stored) = decode_appointment(&c.confirmation, hash_fields(what, reply)?)?
            else {
                // A cancelled record past its retention (the day's cancelled index outlives
                // the records it names by up to the retention): expired, not listed.
                if query.include_cancelled {
                    continue;
                }
                return Err(StoreError::corrupt("manifest names a missing appointment"));
            };
            page.appointments.push(stored.appointment);
        }
        if more {
            page.next = cursors.last().cloned();
        } else if resume.is_some() {
            page.next = resume;
        }
        Ok(page)
    }

    async fn register_receipt(&self, receipt: &Receipt) -> Result<(Receipt, bool), StoreError> {
        let what = "register receipt";
        let expires = receipt.expires_at();
        let mut invocation = self
            .scripts
            .register_receipt
            .key(self.keys.receipt(&receipt.number));
        invocation
            .key(self.keys.events())
            .arg(receipt.passport.as_str())
            .arg(instant_text(receipt.paid_at))
            .arg(millis(expires))
            .arg(receipt.amount.minor)
            .arg(receipt.amount.currency.code())
            .arg(receipt.number.as_str());
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        match status.as_str() {
            "OK" => Ok((receipt.clone(), int(what, at(what, &items, 0)?)? == 1)),
            refused => Err(refusal(
                what,
                refused,
                &items,
                &Asked {
                    receipt_number: Some(receipt.number.to_string()),
                    ..Asked::default()
                },
            )),
        }
    }

    async fn audit(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<AuditReport, StoreError> {
        let what = "audit";
        let days = range_days(post, category, range);
        let mut invocation = self.scripts.audit.prepare_invoke();
        for day in &days {
            invocation
                .key(self.keys.day(day))
                .key(self.keys.active(day))
                .key(self.keys.holds(day));
        }
        let ::redis::Value::Array(items) = self.conn.read_script(what, &invocation).await? else {
            return Err(StoreError::corrupt(format!("{what}: expected a list")));
        };
        let mut rows = Vec::with_capacity(items.len() / 7);
        for row in items.chunks(7) {
            let [day, time, capacity, booked, active_seats, held, hold_seats] = row else {
                return Err(StoreError::corrupt(format!("{what}: ragged reply")));
            };
            let day_index = usize::try_from(int(what, day)?)
                .map_err(|_| StoreError::corrupt(format!("{what}: day index")))?;
            let day = days
                .get(day_index)
                .ok_or_else(|| StoreError::corrupt(format!("{what}: day index out of range")))?;
            let time = parse_hhmm(&text(what, time)?)
                .ok_or_else(|| StoreError::corrupt(format!("{what}: bad time")))?;
            let state = SlotState {
                slot: day.at(time),
                capacity: uint(what, capacity)?,
                booked: uint(what, booked)?,
                held: uint(what, held)?,
                closed: false,
            };
            rows.push((
                day_index,
                state,
                uint(what, active_seats)?,
                uint(what, hold_seats)?,
            ));
        }
        rows.sort_by_key(|r| (r.0, r.1.slot.time));
        let mut report = AuditReport::default();
        for (_, state, active_seats, hold_seats) in rows {
            report.slots_checked += 1;
            report
                .violations
                .extend(audit_slot(&state, active_seats, hold_seats));
        }
        Ok(report)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let what = "ping";
        let reply = self.conn.cmd(what, &::redis::cmd("PING")).await?;
        // The health loop pings every second: load the library once, keep it marked in use.
        self.conn.keep_library().await;
        match text(what, &reply)?.as_str() {
            "PONG" => Ok(()),
            other => Err(StoreError::Unavailable {
                detail: format!("ping answered {other}"),
            }),
        }
    }

    async fn hold(
        &self,
        request: &HoldRequest,
        id: &HoldId,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Hold, StoreError> {
        let what = "hold";
        let slot = &request.slot;
        let day = slot.day();
        let memo_key = self.sold_out_hold(request).await?;
        let mut invocation = self.scripts.hold.key(self.keys.day(&day));
        invocation
            .key(self.keys.holds(&day))
            .key(self.keys.holds_due())
            .key(self.keys.hold(id))
            .key(self.keys.idem_hold(&request.request_id))
            .key(self.keys.events());
        for a in &request.applicants {
            invocation
                .key(self.keys.receipt(&a.receipt))
                .key(self.keys.passport(&a.passport));
        }
        // Under an admission the hold checks and counts its admission step itself.
        if let Some(ticket) = &request.admission {
            invocation.key(self.keys.admission(ticket));
        }
        let ttl_secs = (expires_at - now).num_seconds().max(0);
        let applicants = applicants_json(&request.applicants)?;
        invocation
            .arg(millis(now))
            .arg(request.fingerprint())
            .arg(id.as_str())
            .arg(hhmm(slot.time))
            .arg(request.seats())
            .arg(IDEMPOTENCY_TTL_SECS)
            .arg(instant_text(now))
            .arg(slot.post.as_str())
            .arg(slot.category.as_str())
            .arg(format_date(slot.date))
            .arg(slot.time.to_string())
            .arg(applicants.as_str())
            .arg(millis(expires_at))
            .arg(Keys::day_label(&day))
            .arg(ttl_secs + HOLD_RECORD_GRACE_SECS);
        for a in &request.applicants {
            invocation.arg(a.passport.as_str());
        }
        if request.admission.is_some() {
            invocation.arg(ADMISSION_STEP_LIMIT);
        }
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        match status.as_str() {
            "OK" => {
                let hold = Hold::placed(id, request, expires_at, now);
                self.placed.remember(StoredHold {
                    hold: hold.clone(),
                    applicants_json: applicants,
                });
                Ok(hold)
            }
            "EXHAUSTED" => Err(steps_exhausted()),
            "REPLAY" => {
                let first = HoldId::parse(&text(what, at(what, &items, 0)?)?)
                    .map_err(|_| StoreError::corrupt("idempotency record names a bad hold"))?;
                self.read_hold(&first)
                    .await?
                    .map(|h| h.hold)
                    .ok_or_else(|| StoreError::corrupt("remembered request names a missing hold"))
            }
            refused => {
                self.memo_refusal(what, refused, &items, memo_key)?;
                Err(refusal(
                    what,
                    refused,
                    &items,
                    &Asked {
                        request_id: Some(request.request_id.to_string()),
                        ..booking_asked(request)
                    },
                ))
            }
        }
    }

    async fn refuse_sold_out_hold(
        &self,
        request: &HoldRequest,
        _now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.sold_out_hold(request).await.map(|_| ())
    }

    async fn confirm_hold(
        &self,
        confirmation: &HoldConfirmation,
        number: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let what = "confirm hold";
        // Accepting a moving entry's offer frees its old seats: the memo forgets on return.
        let _seats_may_return = self.sold_out.forget_on_drop();
        let now_text = instant_text(now);
        // A hold placed here is known without reading its record (`placed.rs`); the script
        // re-checks it like any read, and a STALE answer reads.
        let mut known = self.placed.take(&confirmation.hold);
        for _ in 0..CANCEL_ATTEMPTS {
            let stored = match known.take() {
                Some(stored) => stored,
                None => match self.read_hold(&confirmation.hold).await? {
                    Some(stored) => stored,
                    None => return Err(Error::HoldNotFound.into()),
                },
            };
            let hold = &stored.hold;
            let day = hold.slot.day();
            let mut invocation = self.scripts.confirm_hold.key(self.keys.hold(&hold.id));
            invocation
                .key(self.keys.day(&day))
                .key(self.keys.active(&day))
                .key(self.keys.appointment(number))
                .key(self.keys.holds(&day))
                .key(self.keys.holds_due())
                .key(self.keys.events());
            for a in &hold.applicants {
                invocation
                    .key(self.keys.receipt(&a.receipt))
                    .key(self.keys.passport(&a.passport));
            }
            if let Some(ticket) = &confirmation.admission {
                invocation.key(self.keys.admission(ticket));
            }
            invocation
                .arg(millis(now))
                .arg(hold.id.as_str())
                .arg(number.as_str())
                .arg(now_text.as_str())
                .arg(stored.applicants_json.as_str())
                .arg(Keys::day_label(&day))
                .arg(hhmm(hold.slot.time));
            self.offer_context(&mut invocation, now);
            if confirmation.admission.is_some() {
                invocation.arg(IDEMPOTENCY_TTL_SECS);
            }
            let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
            return match status.as_str() {
                "MOVED" => self.replayed(&text(what, at(what, &items, 0)?)?).await,
                "OK" => Ok(Appointment {
                    confirmation: number.clone(),
                    slot: hold.slot.clone(),
                    applicants: hold.applicants.clone(),
                    status: AppointmentStatus::Booked,
                    created_at: now,
                    updated_at: now,
                    history: Vec::new(),
                }),
                "REPLAY" => self.replayed(&text(what, at(what, &items, 0)?)?).await,
                "STALE" => continue,
                refused => Err(refusal(what, refused, &items, &hold_asked(hold))),
            };
        }
        Err(StoreError::corrupt(
            "confirm hold: the hold kept changing under the read",
        ))
    }

    async fn release_hold(
        &self,
        release: &HoldRelease,
        now: DateTime<Utc>,
    ) -> Result<Hold, StoreError> {
        let what = "release hold";
        // Seats may come back: the sold-out memo forgets everything when this returns.
        let _seats_may_return = self.sold_out.forget_on_drop();
        for _ in 0..CANCEL_ATTEMPTS {
            let Some(stored) = self.read_hold(&release.hold).await? else {
                return Err(Error::HoldNotFound.into());
            };
            let hold = stored.hold;
            let day = hold.slot.day();
            let mut invocation = self.scripts.release_hold.key(self.keys.hold(&hold.id));
            invocation
                .key(self.keys.day(&day))
                .key(self.keys.holds(&day))
                .key(self.keys.holds_due())
                .key(self.keys.events());
            for a in &hold.applicants {
                invocation
                    .key(self.keys.receipt(&a.receipt))
                    .key(self.keys.passport(&a.passport));
            }
            invocation
                .arg(millis(now))
                .arg(hold.id.as_str())
                .arg(stored.applicants_json.as_str())
                .arg(Keys::day_label(&day))
                .arg(instant_text(now))
                .arg(hhmm(hold.slot.time));
            self.offer_context(&mut invocation, now);
            let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
            return match status.as_str() {
                "OK" | "REPLAY" => Ok(Hold {
                    status: HoldStatus::Released,
                    ..hold
                }),
                "STALE" => continue,
                refused => Err(refusal(what, refused, &items, &hold_asked(&hold))),
            };
        }
        Err(StoreError::corrupt(
            "release hold: the hold kept changing under the read",
        ))
    }

    async fn find_hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        Ok(self.read_hold(id).await?.map(|s| s.hold))
    }

    async fn retire_passed_waitlist(&self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        self.wl_retire_passed(now).await
    }

    async fn retire_past_appointments(&self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        self.retire_past(now).await
    }

    async fn reclaim_expired_holds(&self, now: DateTime<Utc>) -> Result<Reclaimed, StoreError> {
        let what = "reclaim holds";
        // Seats may come back: the sold-out memo forgets everything when this returns.
        let _seats_may_return = self.sold_out.forget_on_drop();
        // A plain read names the dates with due holds; each date's script re-reads exactly.
        let members = self
            .due_batch(what, self.keys.holds_due(), now, SWEEP_BATCH)
            .await?;
        let mut days: Vec<DayRef> = Vec::new();
        for member in &members {
            let day = parse_due_day(member)
                .ok_or_else(|| StoreError::corrupt(format!("{what}: bad due member {member}")))?;
            if !days.contains(&day) {
                days.push(day);
            }
        }
        let mut reclaimed = Reclaimed::default();
        for day in days {
            let mut invocation = self.scripts.reclaim.key(self.keys.day(&day));
            invocation
                .key(self.keys.holds(&day))
                .key(self.keys.holds_due())
                .key(self.keys.events())
                .arg(millis(now))
                .arg(Keys::day_label(&day))
                .arg(day.to_string())
                .arg(day.post.as_str())
                .arg(day.category.as_str())
                .arg(format_date(day.date));
            self.offer_context(&mut invocation, now);
            let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
            match status.as_str() {
                "OK" => {
                    let n = uint(what, at(what, &items, 0)?)?;
                    if n > 0 {
                        reclaimed.holds += n;
                        reclaimed.days.push(day);
                    }
                }
                _ => return Err(unexpected(what, &status, &items)),
            }
        }
        if reclaimed.holds == 0 && !members.is_empty() {
            // Due entries of holds that are gone (confirmed or released between the read and
            // the script) are removed by those scripts; a leftover here means a stray member.
            tracing::debug!(due = members.len(), "due holds without expired members");
        }
        Ok(reclaimed)
    }

    async fn reschedule(
        &self,
        reschedule: &Reschedule,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Appointment, StoreError> {
        let what = "reschedule";
        // Seats may come back: the sold-out memo forgets everything when this returns.
        let _seats_may_return = self.sold_out.forget_on_drop();
        let fingerprint = reschedule.fingerprint();
        let now_text = instant_text(now);
        let to = &reschedule.new_slot;
        let new_day = to.day();
        for _ in 0..CANCEL_ATTEMPTS {
            let stored = self.read_appointment(&reschedule.confirmation).await?;
            let Some(stored) = stored else {
                // The idempotency record may still answer (a replay of a vanished appointment
                // is corrupt data anyway): unknown numbers are simply not found.
                return Err(Error::AppointmentNotFound.into());
            };
            let from = stored.appointment.slot.clone();
            let old_day = from.day();
            let mut invocation = self
                .scripts
                .reschedule
                .key(self.keys.appointment(&reschedule.confirmation));
            invocation
                .key(self.keys.idem_reschedule(&reschedule.request_id))
                .key(self.keys.events())
                .key(self.keys.day(&old_day))
                .key(self.keys.active(&old_day))
                .key(self.keys.day(&new_day))
                .key(self.keys.active(&new_day))
                .key(self.keys.holds(&new_day))
                .key(self.keys.holds_due());
            for a in &stored.appointment.applicants {
                invocation.key(self.keys.receipt(&a.receipt));
            }
            // Under an admission the move checks and counts its admission step itself.
            if let Some(ticket) = &reschedule.admission {
                invocation.key(self.keys.admission(ticket));
            }
            let history_line = format!("{from}|{to}|{now_text}");
            invocation
                .arg(millis(now))
                .arg(fingerprint.as_str())
                .arg(reschedule.confirmation.as_str())
                .arg(IDEMPOTENCY_TTL_SECS)
                .arg(now_text.as_str())
                .arg(stored.applicants_json.as_str())
                .arg(if stored.appointment.includes(&reschedule.passport) {
                    "1"
                } else {
                    "0"
                })
                .arg(from.to_string())
                .arg(to.to_string())
                .arg(hhmm(from.time))
                .arg(hhmm(to.time))
                .arg(limit)
                .arg(Keys::day_label(&new_day))
                .arg(to.post.as_str())
                .arg(to.category.as_str())
                .arg(format_date(to.date))
                .arg(to.time.to_string())
                .arg(history_line);
            self.offer_context(&mut invocation, now);
            if reschedule.admission.is_some() {
                invocation.arg(ADMISSION_STEP_LIMIT);
            }
            let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
            let applicants = &stored.appointment.applicants;
            return match status.as_str() {
                "EXHAUSTED" => Err(steps_exhausted()),
                "OK" => {
                    let mut moved = stored.appointment.clone();
                    moved.history.push(crate::domain::lifecycle::Move {
                        from: from.clone(),
                        to: to.clone(),
                        at: now,
                    });
                    moved.slot = to.clone();
                    moved.updated_at = now;
                    Ok(moved)
                }
                "REPLAY" => self.replayed(&text(what, at(what, &items, 0)?)?).await,
                "STALE" => continue,
                refused => Err(refusal(
                    what,
                    refused,
                    &items,
                    &Asked {
                        slot: Some(to),
                        requested: stored.appointment.seats(),
                        request_id: Some(reschedule.request_id.to_string()),
                        applicants,
                        confirmation: Some(reschedule.confirmation.to_string()),
                        current_slot: Some(from),
                        limit: Some(limit),
                        ..Asked::default()
                    },
                )),
            };
        }
        Err(StoreError::corrupt(
            "reschedule: the appointment kept changing under the read",
        ))
    }

    async fn join_waitlist(
        &self,
        join: &WaitlistJoin,
        id: &EntryId,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<WaitlistEntry, StoreError> {
        self.wl_join(join, id, limit, now).await
    }

    async fn waitlist_entry(&self, id: &EntryId) -> Result<WaitlistEntry, StoreError> {
        self.wl_entry(id).await
    }

    async fn leave_waitlist(
        &self,
        id: &EntryId,
        now: DateTime<Utc>,
    ) -> Result<WaitlistEntry, StoreError> {
        self.wl_leave(id, now).await
    }

    async fn set_waitlist_share(
        &self,
        post: &PostId,
        category: &CategoryId,
        percent: u32,
    ) -> Result<u32, StoreError> {
        self.wl_share(post, category, percent).await
    }

    async fn events(&self, start: EventStart, limit: u32) -> Result<EventPage, StoreError> {
        let what = "events";
        let after = match start {
            EventStart::After(id) => id,
            EventStart::Latest => {
                let reply = self
                    .conn
                    .cmd(
                        what,
                        ::redis::cmd("XREVRANGE")
                            .arg(self.keys.events())
                            .arg("+")
                            .arg("-")
                            .arg("COUNT")
                            .arg(1),
                    )
                    .await?;
                let latest = decode_stream(what, reply)?;
                return Ok(EventPage {
                    events: Vec::new(),
                    next: latest.last().map(|e| e.id).unwrap_or_default(),
                });
            }
        };
        if limit == 0 {
            return Ok(EventPage {
                events: Vec::new(),
                next: after,
            });
        }
        let reply = self
            .conn
            .cmd(
                what,
                ::redis::cmd("XRANGE")
                    .arg(self.keys.events())
                    .arg(format!("({after}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit),
            )
            .await?;
        let events = decode_stream(what, reply)?;
        let next = events.last().map(|e| e.id).unwrap_or(after);
        Ok(EventPage { events, next })
    }
}

/// The day of a due member `<POST>:<CAT>:<DATE>:<HHMM>:<seats>:<ID>`.
fn parse_due_day(member: &str) -> Option<DayRef> {
    let mut parts = member.split(':');
    let (post, category, date) = (parts.next()?, parts.next()?, parts.next()?);
    Some(DayRef {
        post: PostId::parse(post).ok()?,
        category: CategoryId::parse(category).ok()?,
        date: crate::domain::types::parse_date(date).ok()?,
    })
}

/// XRANGE / XREVRANGE entries: `[[id, [field, value, ...]], ...]`.
fn decode_stream(what: &str, reply: ::redis::Value) -> Result<Vec<Event>, StoreError> {
    let ::redis::Value::Array(entries) = reply else {
        return Err(StoreError::corrupt(format!("{what}: expected entries")));
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let ::redis::Value::Array(mut pair) = entry else {
            return Err(StoreError::corrupt(format!("{what}: expected an entry")));
        };
        if pair.len() != 2 {
            return Err(StoreError::corrupt(format!("{what}: ragged entry")));
        }
        let body = pair.pop().unwrap_or(::redis::Value::Nil);
        let id_text = text(what, &pair[0])?;
        let id = EventId::parse(&id_text)
            .map_err(|_| StoreError::corrupt(format!("{what}: bad id {id_text}")))?;
        // Field by field into the event (no hash map in between: the slot feed decodes every
        // booking's event, benches/README.md §25); a repeated field keeps its last value.
        let (mut kind, mut fields) = (String::new(), std::collections::BTreeMap::new());
        for_each_field(what, body, |k, v| {
            if k == "type" {
                kind = v;
            } else {
                fields.insert(k, v);
            }
        })?;
        out.push(Event { id, kind, fields });
    }
    Ok(out)
}

/// What a hold or booking asked for, for the refusal decoder (seats, receipts, passports).
fn booking_asked(booking: &Booking) -> Asked<'_> {
    Asked {
        slot: Some(&booking.slot),
        requested: booking.seats(),
        applicants: &booking.applicants,
        ..Asked::default()
    }
}

/// What a call on an existing hold asked about, for the refusal decoder.
fn hold_asked(hold: &Hold) -> Asked<'_> {
    Asked {
        slot: Some(&hold.slot),
        requested: hold.seats(),
        applicants: &hold.applicants,
        hold_id: Some(hold.id.to_string()),
        hold_expires_at: Some(hold.expires_at),
        ..Asked::default()
    }
}
