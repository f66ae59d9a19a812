//! The waitlist on Redis (`lua/wl_*.lua`; the offer step itself lives in `holds_lib.lua`, run by
//! every script that releases seats). Entries share the booking hash tag: an offer must be made
//! in the same script as the release that frees its seats.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::codec::{
    applicants_json, at, hash_fields, instant_from_millis, millis, parse_applicants, status_reply,
    text, unexpected,
};
use super::keys::{hhmm, parse_hhmm};
use super::refusal::{refusal, Asked};
use super::RedisStore;
use crate::domain::rules::DateRange;
use crate::domain::types::{format_date, parse_date, CategoryId, ConfirmationNumber, PostId};
use crate::domain::waitlist::{EntryId, EntryStatus, WaitlistEntry, WaitlistJoin};
use crate::domain::Error;
use crate::store::{StoreError, IDEMPOTENCY_TTL_SECS};

impl RedisStore {
    /// The sweeper's waitlist step: retires at most `WAITLIST_RETIRE_BATCH` entries whose range
    /// has passed (one `wl_retire` call each). Returns how many were retired.
    pub(super) async fn wl_retire_passed(&self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        let what = "retire waitlist entries";
        let due: Vec<String> = self
            .conn
            .cmd(
                what,
                ::redis::cmd("ZRANGEBYSCORE")
                    .arg(self.keys.waitlist_due())
                    .arg("-inf")
                    .arg(millis(now))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(crate::store::WAITLIST_RETIRE_BATCH),
            )
            .await
            .and_then(|v| {
                ::redis::from_redis_value(v)
                    .map_err(|_| StoreError::corrupt(format!("{what}: expected entry ids")))
            })?;
        let mut retired = 0;
        for raw in due {
            let Ok(id) = EntryId::parse(&raw) else {
                return Err(StoreError::corrupt(format!("{what}: bad entry id {raw}")));
            };
            let mut invocation = self.scripts.wl_retire.key(self.keys.entry(&id));
            invocation
                .key(self.keys.waitlist_due())
                .key(self.keys.events())
                .arg(millis(now))
                .arg(id.as_str())
                .arg(self.offer_ttl.num_milliseconds().max(1));
            let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
            match status.as_str() {
                "RETIRED" => retired += 1,
                "SKIPPED" | "LATER" => {}
                _ => return Err(unexpected(what, &status, &items)),
            }
        }
        Ok(retired)
    }

    pub(super) async fn wl_join(
        &self,
        join: &WaitlistJoin,
        id: &EntryId,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<WaitlistEntry, StoreError> {
        let what = "join waitlist";
        let mut invocation = self
            .scripts
            .wl_join
            .key(self.keys.idem_waitlist(&join.request_id));
        invocation
            .key(self.keys.entry(id))
            .key(self.keys.line(&join.post, &join.category))
            .key(self.keys.join_sequence())
            .key(self.keys.events());
        for a in &join.applicants {
            invocation
                .key(self.keys.receipt(&a.receipt))
                .key(self.keys.passport(&a.passport))
                .key(self.keys.waiting_passport(&a.passport));
        }
        invocation.key(self.keys.waitlist_due());
        let mut dates = Vec::new();
        for date in join.range.days() {
            let day = crate::domain::types::DayRef {
                post: join.post.clone(),
                category: join.category.clone(),
                date,
            };
            invocation.key(self.keys.date_line(&day));
            dates.push(format_date(date));
        }
        // Under an admission the join checks and counts its admission step itself.
        if let Some(ticket) = &join.admission {
            invocation.key(self.keys.admission(ticket));
        }
        let words = |items: Vec<String>| items.join(" ");
        invocation
            .arg(millis(now))
            .arg(join.fingerprint())
            .arg(id.as_str())
            .arg(join.post.as_str())
            .arg(join.category.as_str())
            .arg(format_date(join.range.from))
            .arg(format_date(join.range.to))
            .arg(words(join.times.iter().map(|t| hhmm(*t)).collect()))
            .arg(applicants_json(&join.applicants)?)
            .arg(join.seats())
            .arg(IDEMPOTENCY_TTL_SECS)
            .arg(dates.join(" "))
            .arg(words(
                join.applicants
                    .iter()
                    .map(|a| a.passport.to_string())
                    .collect(),
            ))
            .arg(words(
                join.applicants
                    .iter()
                    .map(|a| a.receipt.to_string())
                    .collect(),
            ))
            .arg(join.moving.as_ref().map(|c| c.as_str()).unwrap_or(""))
            .arg(limit)
            .arg(millis(crate::store::waitlist_retire_at(join.range.to)));
        if join.admission.is_some() {
            invocation.arg(crate::store::ADMISSION_STEP_LIMIT);
        }
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        match status.as_str() {
            "OK" => self.wl_entry(id).await,
            "EXHAUSTED" => Err(super::admission::steps_exhausted()),
            "REPLAY" => {
                let first = EntryId::parse(&text(what, at(what, &items, 0)?)?)
                    .map_err(|_| StoreError::corrupt("idempotency record names a bad entry"))?;
                self.wl_entry(&first).await
            }
            refused => Err(refusal(
                what,
                refused,
                &items,
                &Asked {
                    request_id: Some(join.request_id.to_string()),
                    applicants: &join.applicants,
                    confirmation: Some(
                        join.moving
                            .as_ref()
                            .map(|c| c.to_string())
                            .unwrap_or_default(),
                    ),
                    limit: Some(limit),
                    ..Asked::default()
                },
            )),
        }
    }

    pub(super) async fn wl_entry(&self, id: &EntryId) -> Result<WaitlistEntry, StoreError> {
        let what = "read waitlist entry";
        let value = self
            .conn
            .cmd(what, ::redis::cmd("HGETALL").arg(self.keys.entry(id)))
            .await?;
        let fields = hash_fields(what, value)?;
        if fields.is_empty() {
            return Err(Error::WaitlistEntryNotFound.into());
        }
        let mut entry = decode_entry(id, &fields)?;
        if entry.status.in_line() {
            let rank = self
                .conn
                .cmd(
                    what,
                    ::redis::cmd("ZRANK")
                        .arg(self.keys.line(&entry.post, &entry.category))
                        .arg(id.as_str()),
                )
                .await?;
            entry.position = match rank {
                ::redis::Value::Int(r) => u32::try_from(r + 1).ok(),
                _ => None,
            };
        }
        if let Some(offer) = fields.get("offer") {
            let hold = crate::domain::lifecycle::HoldId::parse(offer)
                .map_err(|_| StoreError::corrupt(format!("entry {id}: bad offer")))?;
            entry.offer = self.read_hold(&hold).await?.map(|s| s.hold);
        }
        Ok(entry)
    }

    pub(super) async fn wl_leave(
        &self,
        id: &EntryId,
        now: DateTime<Utc>,
    ) -> Result<WaitlistEntry, StoreError> {
        let what = "leave waitlist";
        // Seats may come back: the sold-out memo forgets everything when this returns.
        let _seats_may_return = self.sold_out.forget_on_drop();
        let mut invocation = self.scripts.wl_leave.key(self.keys.entry(id));
        invocation
            .key(self.keys.events())
            .arg(millis(now))
            .arg(id.as_str());
        self.offer_context(&mut invocation, now);
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        match status.as_str() {
            "OK" => self.wl_entry(id).await,
            refused => Err(refusal(what, refused, &items, &Asked::default())),
        }
    }

    pub(super) async fn wl_share(
        &self,
        post: &PostId,
        category: &CategoryId,
        percent: u32,
    ) -> Result<u32, StoreError> {
        let what = "set waitlist share";
        self.conn
            .cmd(
                what,
                ::redis::cmd("HSET")
                    .arg(self.keys.waitlist_share())
                    .arg(format!("{post}:{category}"))
                    .arg(percent),
            )
            .await?;
        Ok(percent)
    }
}

fn decode_entry(
    id: &EntryId,
    fields: &HashMap<String, String>,
) -> Result<WaitlistEntry, StoreError> {
    let get = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| StoreError::corrupt(format!("entry {id} lacks {name}")))
    };
    let bad = |what: &str| StoreError::corrupt(format!("entry {id}: bad {what}"));
    let ms = |name: &str| -> Result<DateTime<Utc>, StoreError> {
        instant_from_millis(get(name)?.parse().map_err(|_| bad(name))?)
    };
    let from = parse_date(get("from")?).map_err(|_| bad("from"))?;
    let to = parse_date(get("to")?).map_err(|_| bad("to"))?;
    let times = get("times")?
        .split_whitespace()
        .map(|t| parse_hhmm(t).ok_or_else(|| bad("times")))
        .collect::<Result<Vec<_>, _>>()?;
    let applicants = parse_applicants(get("applicants")?)?;
    if applicants.is_empty() {
        return Err(bad("applicants"));
    }
    Ok(WaitlistEntry {
        id: id.clone(),
        post: PostId::parse(get("post")?).map_err(|_| bad("post"))?,
        category: CategoryId::parse(get("category")?).map_err(|_| bad("category"))?,
        range: DateRange::new(from, to).map_err(|_| bad("range"))?,
        times,
        applicants,
        status: EntryStatus::parse(get("status")?).ok_or_else(|| bad("status"))?,
        position: None,
        offer: None,
        confirmation: match fields.get("confirmation") {
            Some(c) => Some(ConfirmationNumber::parse(c).map_err(|_| bad("confirmation"))?),
            None => None,
        },
        moving: match fields.get("moves") {
            Some(c) => Some(ConfirmationNumber::parse(c).map_err(|_| bad("moves"))?),
            None => None,
        },
        reason: fields.get("reason").cloned(),
        created_at: ms("created_ms")?,
        updated_at: ms("updated_ms")?,
    })
}
