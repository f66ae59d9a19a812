//! The waiting room on Redis. Its keys carry their own hash tag, `{<tag>-room}`, apart from the
//! booking state: the room is one global FIFO (one slot by nature) and can live on another shard.
//! Every operation is one script over the same ten fixed keys (see `lua/room_lib.lua`), so the
//! admission order is decided inside Redis and every replica admits in the one join order.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use ::redis::Value;

use super::codec::{instant_from_millis, int, millis, status_reply, text, unexpected};
use super::conn::{self, Conn};
use super::functions::Op;
use super::keys;
use super::refusal::{refusal, Asked};
use super::RedisOptions;
use crate::domain::room::{
    ClientKey, RoomConfig, RoomEvent, RoomStats, Synced, TicketId, TicketState, TicketView,
    EVENT_LOG_KEEP, EXPIRE_PER_STEP,
};
use crate::domain::Error;
use crate::store::room::{Outcomes, TickCall, Ticked, WaitingRoomStore, BATCH_MAX};
use crate::store::StoreError;

struct RoomScripts {
    join: conn::Function,
    status: conn::Function,
    end: conn::Function,
    advance: conn::Function,
    sync: conn::Function,
    tick: conn::Function,
    configure: conn::Function,
    stats: conn::Function,
}

pub struct RedisWaitingRoom {
    conn: Conn,
    keys: [String; 10],
    config_key: String,
    /// `<prefix>claim:` + ticket id: a call in flight holds the admitted session (SET NX PX).
    claim_prefix: String,
    scripts: RoomScripts,
}

impl std::fmt::Debug for RedisWaitingRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisWaitingRoom")
            .field("config_key", &self.config_key)
            .finish_non_exhaustive()
    }
}

impl RedisWaitingRoom {
    /// A lazy connection of its own; nothing is sent until the first call.
    pub fn connect(options: &RedisOptions) -> Result<Self, StoreError> {
        keys::validate_tag(&options.tag).map_err(|detail| StoreError::Misconfigured {
            key: "redis.tag",
            detail,
        })?;
        let prefix = format!("slotd:{{{}-room}}:room:", options.tag);
        let key = |name: &str| format!("{prefix}{name}");
        let keys = [
            key("config"),
            key("state"),
            key("waiting"),
            key("seen"),
            key("active"),
            key("admits"),
            key("tickets"),
            key("clients"),
            key("ended"),
            key("log"),
        ];
        let conn = Conn::open(&options.conn)?;
        Ok(Self {
            // The room functions of the library (functions.rs puts room_lib.lua before each).
            scripts: RoomScripts {
                join: conn.function(Op::RoomJoin),
                status: conn.function(Op::RoomStatus),
                end: conn.function(Op::RoomEnd),
                advance: conn.function(Op::RoomAdvance),
                sync: conn.function(Op::RoomSync),
                tick: conn.function(Op::RoomTick),
                configure: conn.function(Op::RoomConfigure),
                stats: conn.function(Op::RoomStats),
            },
            conn,
            config_key: keys[0].clone(),
            claim_prefix: format!("{prefix}claim:"),
            keys,
        })
    }

    fn invoke<'a>(&self, script: &'a conn::Function) -> conn::Invocation<'a> {
        let mut invocation = script.prepare_invoke();
        for k in &self.keys {
            invocation.key(k);
        }
        invocation
    }

    /// Runs a script that answers a ticket view, mapping refusals to domain errors.
    async fn view(
        &self,
        what: &str,
        invocation: &conn::Invocation<'_>,
    ) -> Result<TicketView, StoreError> {
        let (status, items) = status_reply(what, self.conn.script(what, invocation).await?)?;
        match status.as_str() {
            "OK" => decode_view(what, &items),
            "TICKET_TAKEN" => Err(StoreError::corrupt("a fresh ticket id already exists")),
            // WAITING_ROOM_DISABLED, TICKET_NOT_FOUND: the one refusal decoder.
            _ => Err(refusal(what, &status, &items, &Asked::default())),
        }
    }

    /// Runs a batch script: `{'OK', rate, log_seq, record per call}` (room_status) or `{'OK',
    /// rate, log_seq, first, ahead, record per call}` (room_join); `known` is what each call
    /// brought (all joins or all status reads).
    async fn batch(
        &self,
        what: &str,
        invocation: &conn::Invocation<'_>,
        known: &[Known<'_>],
    ) -> Result<Outcomes, StoreError> {
        let (status, items) = status_reply(what, self.conn.script(what, invocation).await?)?;
        match status.as_str() {
            "OK" => {}
            _ => return Err(refusal(what, &status, &items, &Asked::default())),
        }
        let rate_per_minute = float(what, &items, 0)?;
        let seq = count(what, &items, 1)?;
        // A join batch numbers its new places from `first`, with `ahead` waiting before them.
        let joins = matches!(known.first(), Some(Known::Join(..)));
        let header = if joins { 4 } else { 2 };
        let (mut next, mut ahead) = if joins {
            (count(what, &items, 2)?, count(what, &items, 3)?)
        } else {
            (0, 0)
        };
        let records = items.get(header..).unwrap_or_default();
        if records.len() != known.len() {
            return Err(StoreError::corrupt(format!(
                "{what}: batch reply of the wrong length"
            )));
        }
        let mut out = Vec::with_capacity(records.len());
        for (record, known) in records.iter().zip(known) {
            let record = text(what, record)?;
            if let ("N", Known::Join(key, fresh)) = (record.as_str(), known) {
                out.push(Ok(TicketView {
                    id: (*fresh).clone(),
                    client_key: (*key).clone(),
                    number: next,
                    state: TicketState::Waiting,
                    ahead,
                    admission_number: 0,
                    session_expires_at: None,
                    rate_per_minute,
                    seq,
                }));
                next += 1;
                ahead += 1;
                continue;
            }
            out.push(decode_record(what, &record, known, rate_per_minute, seq));
        }
        Ok(out)
    }
}

/// What a call of a batch brought to it.
enum Known<'a> {
    /// A join: its client key and fresh ticket id.
    Join(&'a ClientKey, &'a TicketId),
    /// A status read: the ticket id.
    Status(&'a TicketId),
}

/// One call's record of a batch reply (room_join.lua, room_status.lua) other than a new place
/// (`N`, decoded by `batch`):
/// `H|number|state|ahead|admission_number|expires_ms|id` (the place the key holds),
/// `S|number|state|ahead|admission_number|expires_ms|client_key` (a status), `T` (the fresh id
/// is taken), `X` (no such ticket).
fn decode_record(
    what: &str,
    record: &str,
    known: &Known<'_>,
    rate_per_minute: f64,
    seq: u64,
) -> Result<TicketView, StoreError> {
    let bad = || StoreError::corrupt(format!("{what}: record {record:?}"));
    let num = |field: Option<&str>| -> Result<u64, StoreError> {
        field.and_then(|f| f.parse::<u64>().ok()).ok_or_else(bad)
    };
    let mut fields = record.splitn(7, '|');
    let code = fields.next().ok_or_else(bad)?;
    let view = |id: TicketId, client_key: ClientKey, number, state, ahead| TicketView {
        id,
        client_key,
        number,
        state,
        ahead,
        admission_number: 0,
        session_expires_at: None,
        rate_per_minute,
        seq,
    };
    match (code, known) {
        ("T", Known::Join(..)) => Err(StoreError::corrupt("a fresh ticket id already exists")),
        ("X", Known::Status(_)) => Err(Error::TicketNotFound.into()),
        ("H" | "S", _) => {
            let number = num(fields.next())?;
            let state = fields.next().and_then(TicketState::parse).ok_or_else(bad)?;
            let ahead = num(fields.next())?;
            let admission_number = num(fields.next())?;
            let expires_ms = fields
                .next()
                .and_then(|f| f.parse::<i64>().ok())
                .ok_or_else(bad)?;
            let last = fields.next().ok_or_else(bad)?;
            let (id, client_key) = match known {
                Known::Join(key, _) => (TicketId::parse(last).map_err(|_| bad())?, (*key).clone()),
                Known::Status(id) => ((*id).clone(), ClientKey::stored(last).ok_or_else(bad)?),
            };
            Ok(TicketView {
                admission_number,
                session_expires_at: if expires_ms > 0 {
                    Some(instant_from_millis(expires_ms)?)
                } else {
                    None
                },
                ..view(id, client_key, number, state, ahead)
            })
        }
        _ => Err(bad()),
    }
}

fn item<'a>(what: &str, items: &'a [Value], i: usize) -> Result<&'a Value, StoreError> {
    items
        .get(i)
        .ok_or_else(|| StoreError::corrupt(format!("{what}: reply too short")))
}

fn count(what: &str, items: &[Value], i: usize) -> Result<u64, StoreError> {
    u64::try_from(int(what, item(what, items, i)?)?)
        .map_err(|_| StoreError::corrupt(format!("{what}: negative count")))
}

fn float(what: &str, items: &[Value], i: usize) -> Result<f64, StoreError> {
    text(what, item(what, items, i)?)?
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite())
        .ok_or_else(|| StoreError::corrupt(format!("{what}: bad rate")))
}

fn decode_view(what: &str, items: &[Value]) -> Result<TicketView, StoreError> {
    let bad = |field: &str| StoreError::corrupt(format!("{what}: stored ticket {field}"));
    let id = TicketId::parse(&text(what, item(what, items, 0)?)?).map_err(|_| bad("id"))?;
    let client_key =
        ClientKey::stored(&text(what, item(what, items, 1)?)?).ok_or_else(|| bad("client key"))?;
    let state =
        TicketState::parse(&text(what, item(what, items, 3)?)?).ok_or_else(|| bad("state"))?;
    let expires_ms = int(what, item(what, items, 6)?)?;
    Ok(TicketView {
        id,
        client_key,
        number: count(what, items, 2)?,
        state,
        ahead: count(what, items, 4)?,
        admission_number: count(what, items, 5)?,
        session_expires_at: if expires_ms > 0 {
            Some(instant_from_millis(expires_ms)?)
        } else {
            None
        },
        rate_per_minute: float(what, items, 7)?,
        seq: count(what, items, 8)?,
    })
}

/// One log member, `<id>|<number>|<state>|<admission_number>|<expires_ms>` (room_lib log_exit).
fn decode_event(what: &str, seq: u64, member: &str) -> Result<RoomEvent, StoreError> {
    let bad = || StoreError::corrupt(format!("{what}: stored event {member:?}"));
    let mut parts = member.split('|');
    let mut next = || parts.next().ok_or_else(bad);
    let id = TicketId::parse(next()?).map_err(|_| bad())?;
    let number = next()?.parse::<u64>().map_err(|_| bad())?;
    let state = TicketState::parse(next()?).ok_or_else(bad)?;
    let admission_number = next()?.parse::<u64>().map_err(|_| bad())?;
    let expires_ms = next()?.parse::<i64>().map_err(|_| bad())?;
    Ok(RoomEvent {
        seq,
        id,
        number,
        state,
        admission_number,
        session_expires_at: if expires_ms > 0 {
            Some(instant_from_millis(expires_ms)?)
        } else {
            None
        },
    })
}

/// The settings from their stored fields (`None`: the field is absent): an empty hash is the
/// defaults, a partial one corrupt.
fn decode_config(what: &str, fields: &[Option<String>; 7]) -> Result<RoomConfig, StoreError> {
    if fields.iter().all(Option::is_none) {
        return Ok(RoomConfig::default());
    }
    let names = [
        "enabled", "rate", "cap", "session", "timeout", "paused", "gate",
    ];
    let mut num = [0u32; 7];
    for (i, field) in fields.iter().enumerate() {
        num[i] = field
            .as_deref()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| StoreError::corrupt(format!("{what}: field {}", names[i])))?;
    }
    Ok(RoomConfig {
        enabled: num[0] == 1,
        admissions_per_minute: num[1],
        max_active_sessions: num[2],
        session_duration_secs: num[3],
        waiter_timeout_secs: num[4],
        paused: num[5] == 1,
        gate_calendar: num[6] == 1,
    })
}

/// Events of a sync reply: `seq, member` pairs.
fn decode_events(what: &str, items: &[Value]) -> Result<Vec<RoomEvent>, StoreError> {
    let mut events = Vec::with_capacity(items.len() / 2);
    for pair in items.chunks(2) {
        let [seq, member] = pair else {
            return Err(StoreError::corrupt(format!("{what}: odd event list")));
        };
        let seq = u64::try_from(int(what, seq)?)
            .map_err(|_| StoreError::corrupt(format!("{what}: negative seq")))?;
        events.push(decode_event(what, seq, &text(what, member)?)?);
    }
    Ok(events)
}

/// Ids per heartbeat chunk of one `room_sync` call (the script refuses more).
pub const SYNC_CHUNK: usize = 1_000;

fn flag(b: bool) -> u8 {
    u8::from(b)
}

#[async_trait]
impl WaitingRoomStore for RedisWaitingRoom {
    async fn configure(
        &self,
        config: &RoomConfig,
        now: DateTime<Utc>,
    ) -> Result<RoomConfig, StoreError> {
        let what = "room configure";
        let mut invocation = self.invoke(&self.scripts.configure);
        invocation
            .arg(millis(now))
            .arg(flag(config.enabled))
            .arg(config.admissions_per_minute)
            .arg(config.max_active_sessions)
            .arg(config.session_duration_secs)
            .arg(config.waiter_timeout_secs)
            .arg(flag(config.paused))
            .arg(flag(config.gate_calendar));
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        if status != "OK" {
            return Err(unexpected(what, &status, &items));
        }
        Ok(*config)
    }

    async fn config(&self) -> Result<RoomConfig, StoreError> {
        let what = "room config";
        let value = self
            .conn
            .cmd(what, ::redis::cmd("HGETALL").arg(&self.config_key))
            .await?;
        let mut fields = super::codec::hash_fields(what, value)?;
        let mut take = |name: &str| fields.remove(name);
        decode_config(
            what,
            &[
                take("enabled"),
                take("rate"),
                take("cap"),
                take("session"),
                take("timeout"),
                take("paused"),
                take("gate"),
            ],
        )
    }

    async fn join(
        &self,
        client_key: &ClientKey,
        fresh: &TicketId,
        now: DateTime<Utc>,
    ) -> Result<TicketView, StoreError> {
        let pair = [(client_key.clone(), fresh.clone())];
        self.join_batch(&pair, now)
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::corrupt("room join: no reply")))
    }

    async fn join_batch(&self, joins: &[(ClientKey, TicketId)], now: DateTime<Utc>) -> Outcomes {
        let mut out = Vec::with_capacity(joins.len());
        for chunk in joins.chunks(BATCH_MAX) {
            let mut invocation = self.invoke(&self.scripts.join);
            invocation.arg(millis(now));
            for (client_key, fresh) in chunk {
                invocation.arg(client_key.as_str()).arg(fresh.as_str());
            }
            let known: Vec<Known<'_>> = chunk.iter().map(|(k, f)| Known::Join(k, f)).collect();
            match self.batch("room join", &invocation, &known).await {
                Ok(views) => out.extend(views),
                Err(e) => out.extend(chunk.iter().map(|_| Err(e.clone()))),
            }
        }
        out
    }

    async fn status(
        &self,
        ticket: &TicketId,
        now: DateTime<Utc>,
    ) -> Result<TicketView, StoreError> {
        self.status_batch(std::slice::from_ref(ticket), now)
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::corrupt("room status: no reply")))
    }

    async fn status_batch(&self, tickets: &[TicketId], now: DateTime<Utc>) -> Outcomes {
        let mut out = Vec::with_capacity(tickets.len());
        for chunk in tickets.chunks(BATCH_MAX) {
            let mut invocation = self.invoke(&self.scripts.status);
            invocation.arg(millis(now));
            for ticket in chunk {
                invocation.arg(ticket.as_str());
            }
            let known: Vec<Known<'_>> = chunk.iter().map(Known::Status).collect();
            match self.batch("room status", &invocation, &known).await {
                Ok(views) => out.extend(views),
                Err(e) => out.extend(chunk.iter().map(|_| Err(e.clone()))),
            }
        }
        out
    }

    async fn end(
        &self,
        ticket: &TicketId,
        state: TicketState,
        now: DateTime<Utc>,
    ) -> Result<TicketView, StoreError> {
        let state = match state {
            TicketState::Left | TicketState::Completed | TicketState::Revoked => state.as_str(),
            TicketState::Waiting | TicketState::Admitted | TicketState::Expired => {
                return Err(StoreError::corrupt(
                    "a ticket can only be ended as left, completed or revoked",
                ))
            }
        };
        let mut invocation = self.invoke(&self.scripts.end);
        invocation.arg(millis(now)).arg(ticket.as_str()).arg(state);
        self.view("room end", &invocation).await
    }

    async fn advance(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let what = "room advance";
        let mut invocation = self.invoke(&self.scripts.advance);
        invocation
            .arg(millis(now))
            .arg(EXPIRE_PER_STEP)
            .arg(EVENT_LOG_KEEP);
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        if status != "OK" {
            return Err(unexpected(what, &status, &items));
        }
        count(what, &items, 0)
    }

    async fn sync(
        &self,
        after: Option<u64>,
        heartbeat: &[TicketId],
        max_events: usize,
        now: DateTime<Utc>,
    ) -> Result<Synced, StoreError> {
        let what = "room sync";
        let mut chunks = heartbeat.chunks(SYNC_CHUNK);
        let mut synced: Option<Synced> = None;
        loop {
            let chunk = chunks.next().unwrap_or_default();
            // The events come with the first chunk; the others only heartbeat.
            let cursor = if synced.is_none() { after } else { None };
            let mut invocation = self.invoke(&self.scripts.sync);
            invocation
                .arg(millis(now))
                .arg(cursor.map(|c| c.to_string()).unwrap_or_default())
                .arg(max_events);
            for id in chunk {
                invocation.arg(id.as_str());
            }
            // Heartbeats need no WAIT: a lost one costs nothing before the waiter timeout.
            let value = self.conn.read_script(what, &invocation).await?;
            let (status, items) = status_reply(what, value)?;
            if status != "OK" {
                return Err(unexpected(what, &status, &items));
            }
            if synced.is_none() {
                let head = count(what, &items, 0)?;
                let gap = count(what, &items, 1)? == 1;
                let rate_per_minute = float(what, &items, 2)?;
                let events = decode_events(what, items.get(3..).unwrap_or_default())?;
                synced = Some(Synced {
                    head,
                    gap,
                    events,
                    rate_per_minute,
                });
            }
            if chunks.len() == 0 {
                break;
            }
        }
        synced.ok_or_else(|| StoreError::corrupt(format!("{what}: no reply")))
    }

    async fn tick(&self, call: &TickCall<'_>) -> Result<Ticked, StoreError> {
        let what = "room tick";
        let (first, rest) = match call.sync {
            Some(s) => {
                let n = s.heartbeat.len().min(SYNC_CHUNK);
                (&s.heartbeat[..n], &s.heartbeat[n..])
            }
            None => (&[][..], &[][..]),
        };
        let mut invocation = self.invoke(&self.scripts.tick);
        invocation
            .arg(millis(call.now))
            .arg(u64::try_from(call.lease.as_millis()).unwrap_or(u64::MAX))
            .arg(EXPIRE_PER_STEP)
            .arg(EVENT_LOG_KEEP)
            .arg(
                call.sync
                    .and_then(|s| s.after)
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
            )
            .arg(call.sync.map_or(0, |s| s.max_events));
        for id in first {
            invocation.arg(id.as_str());
        }
        // Like room_sync, no WAIT for the settings read and the heartbeats; a step is confirmed
        // below like room_advance was.
        let (status, items) = status_reply(what, self.conn.read_script(what, &invocation).await?)?;
        if status != "OK" {
            return Err(unexpected(what, &status, &items));
        }
        let mut fields: [Option<String>; 7] = Default::default();
        for (i, field) in fields.iter_mut().enumerate() {
            let v = text(what, item(what, &items, i)?)?;
            *field = (!v.is_empty()).then_some(v);
        }
        let config = decode_config(what, &fields)?;
        let admitted = u64::try_from(int(what, item(what, &items, 7)?)?).ok();
        let synced = match call.sync {
            None => None,
            Some(_) => Some(Synced {
                head: count(what, &items, 8)?,
                gap: count(what, &items, 9)? == 1,
                rate_per_minute: float(what, &items, 10)?,
                events: decode_events(what, items.get(11..).unwrap_or_default())?,
            }),
        };
        if admitted.is_some() {
            if let Err(e) = self.conn.confirm_writes(what).await {
                // The step ran on the primary (its events are read above, the settings are
                // fresh); what the replicas lack is said, and the room goes on.
                tracing::warn!(error = %e, "waiting room admission step not confirmed by the replicas");
            }
        }
        if !rest.is_empty() {
            // The heartbeats past the first chunk, in room_sync calls of their own.
            self.sync(None, rest, 0, call.now).await?;
        }
        Ok(Ticked {
            config,
            admitted,
            synced,
        })
    }

    async fn check_session(&self, ticket: &TicketId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let what = "room session";
        let value = self
            .conn
            .cmd(
                what,
                ::redis::cmd("ZSCORE")
                    .arg(&self.keys[4])
                    .arg(ticket.as_str()),
            )
            .await?;
        let expires_ms = match value {
            Value::Nil => return Err(Error::AdmissionRevoked.into()),
            v => text(what, &v)?
                .parse::<f64>()
                .map_err(|_| StoreError::corrupt(format!("{what}: bad expiry")))?,
        };
        if expires_ms > millis(now) as f64 {
            Ok(())
        } else {
            Err(Error::AdmissionRevoked.into())
        }
    }

    async fn claim_session(&self, ticket: &TicketId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let what = "claim session";
        // Claim first, then check the session, in one round trip (a pipeline runs its commands
        // in order): an ended session never comes back, so a claim taken on a session that ends
        // meanwhile books nothing (the store refuses it below).
        let mut pipe = ::redis::pipe();
        pipe.cmd("SET")
            .arg(format!("{}{}", self.claim_prefix, ticket.as_str()))
            .arg(millis(now))
            .arg("NX")
            .arg("PX")
            .arg(crate::store::room::CLAIM_LEASE_SECS * 1000)
            .cmd("ZSCORE")
            .arg(&self.keys[4])
            .arg(ticket.as_str());
        let replies = self.conn.pipeline(what, &pipe).await?;
        let [claimed, expires] = replies.as_slice() else {
            return Err(StoreError::corrupt(format!("{what}: reply count")));
        };
        let live = match expires {
            Value::Nil => false,
            v => {
                text(what, v)?
                    .parse::<f64>()
                    .map_err(|_| StoreError::corrupt(format!("{what}: bad expiry")))?
                    > millis(now) as f64
            }
        };
        match (*claimed != Value::Nil, live) {
            (true, true) => Ok(()),
            (true, false) => {
                let _ = self.release_session(ticket).await;
                Err(Error::AdmissionRevoked.into())
            }
            // Held by a call in flight, or left by a call that ended the session.
            (false, true) => Err(Error::AdmissionInUse.into()),
            (false, false) => Err(Error::AdmissionRevoked.into()),
        }
    }

    async fn release_session(&self, ticket: &TicketId) -> Result<(), StoreError> {
        let what = "release session";
        self.conn
            .cmd(
                what,
                ::redis::cmd("DEL").arg(format!("{}{}", self.claim_prefix, ticket.as_str())),
            )
            .await?;
        Ok(())
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<RoomStats, StoreError> {
        let what = "room stats";
        let config = self.config().await?;
        let mut invocation = self.invoke(&self.scripts.stats);
        invocation.arg(millis(now));
        let (status, items) = status_reply(what, self.conn.read_script(what, &invocation).await?)?;
        if status != "OK" {
            return Err(unexpected(what, &status, &items));
        }
        Ok(RoomStats {
            config,
            waiting: count(what, &items, 0)?,
            active: count(what, &items, 1)?,
            admitted_total: count(what, &items, 2)?,
            expired_total: count(what, &items, 3)?,
            last_ticket_number: count(what, &items, 4)?,
            observed_per_minute: float(what, &items, 5)?,
        })
    }
}
