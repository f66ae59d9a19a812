//! Retention of past appointments on Redis (`lua/appt_expire.lua`, `lua/appt_retire.lua`,
//! `lua/day_retire.lua`; see `Inventory::retire_past_appointments` and docs/redis-keys.md).
//! Driven by two due indexes, so every run is O(batch): `days-due` (opened days by when they
//! have passed everywhere, written with `open_slots`) and `appt-expire` (retired records by the
//! end of their retention).

use chrono::{DateTime, Utc};

use super::codec::{at, instant_text, millis, status_reply, text, uint, unexpected};
use super::keys::hhmm;
use super::RedisStore;
use crate::domain::types::{parse_date, CategoryId, ConfirmationNumber, DayRef, PostId};
use crate::domain::waitlist::EntryId;
use crate::store::{StoreError, APPOINTMENT_RETIRE_BATCH};

/// How long a retired record outlives its retention when no sweeper forgets it (a backstop
/// only: `appt_expire` decides by slotd's clock).
const RECORD_BACKSTOP_MS: i64 = 24 * 60 * 60 * 1000;

/// Keys one backfill step's SCAN looks at (its COUNT): a keyspace of a million keys is
/// indexed in about a thousand sweeper ticks, once per deployment.
const BACKFILL_SCAN_COUNT: u32 = 1000;

/// `APPOINTMENT_RETIRE_BATCH` as a read limit.
const RETIRE_BATCH: usize = APPOINTMENT_RETIRE_BATCH as usize;

fn strings(what: &str, value: ::redis::Value) -> Result<Vec<String>, StoreError> {
    ::redis::from_redis_value(value)
        .map_err(|_| StoreError::corrupt(format!("{what}: expected a list of strings")))
}

/// The day of a `days-due` member `<POST>:<CAT>:<DATE>`.
fn parse_day_label(label: &str) -> Option<DayRef> {
    let mut parts = label.splitn(3, ':');
    let post = PostId::parse(parts.next()?).ok()?;
    let category = CategoryId::parse(parts.next()?).ok()?;
    let date = parse_date(parts.next()?).ok()?;
    Some(DayRef {
        post,
        category,
        date,
    })
}

impl RedisStore {
    /// At most `limit` members of the due index `index` (a sorted set scored by due time in ms)
    /// whose time has come by `now`, earliest first.
    pub(super) async fn due_batch(
        &self,
        what: &str,
        index: String,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let reply = self
            .conn
            .cmd(
                what,
                ::redis::cmd("ZRANGEBYSCORE")
                    .arg(index)
                    .arg("-inf")
                    .arg(millis(now))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        strings(what, reply)
    }

    /// The sweeper's retention step (see `Inventory::retire_past_appointments`): forgets at
    /// most a batch of records past their retention, then retires at most a batch of BOOKED
    /// appointments of due days (one `appt_retire` call each), retiring days left empty.
    pub(super) async fn retire_past(&self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        self.backfill_step().await?;
        self.forget_retired(now).await?;
        let what = "retire past appointments";
        let labels = self
            .due_batch(what, self.keys.days_due(), now, RETIRE_BATCH)
            .await?;
        let mut budget = APPOINTMENT_RETIRE_BATCH;
        let mut retired = 0;
        for label in labels {
            if budget == 0 {
                break;
            }
            let Some(day) = parse_day_label(&label) else {
                return Err(StoreError::corrupt(format!("{what}: bad day {label}")));
            };
            // At most `budget` distinct appointments of the day (HRANDFIELD is O(count)).
            let confirmations = strings(
                what,
                self.conn
                    .cmd(
                        what,
                        ::redis::cmd("HRANDFIELD")
                            .arg(self.keys.active(&day))
                            .arg(budget),
                    )
                    .await?,
            )?;
            if confirmations.is_empty() {
                self.retire_day(&day, &label, now).await?;
                continue;
            }
            for raw in confirmations {
                budget = budget.saturating_sub(1);
                let Ok(confirmation) = ConfirmationNumber::parse(&raw) else {
                    return Err(StoreError::corrupt(format!(
                        "{what}: bad confirmation {raw} in {label}"
                    )));
                };
                if self.retire_one(&day, &label, &confirmation, now).await? {
                    retired += 1;
                }
            }
        }
        Ok(retired)
    }

    /// One `appt_retire` call: true when the appointment was retired.
    async fn retire_one(
        &self,
        day: &DayRef,
        label: &str,
        confirmation: &ConfirmationNumber,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let what = "retire past appointment";
        // The passport keys come from the record; the script re-checks this read.
        let stored = self.read_appointment(confirmation).await?;
        let mut invocation = self
            .scripts
            .appt_retire
            .key(self.keys.appointment(confirmation));
        invocation
            .key(self.keys.active(day))
            .key(self.keys.day(day))
            .key(self.keys.days_due())
            .key(self.keys.appointment_expiry())
            .key(self.keys.events());
        if let Some(s) = &stored {
            for a in &s.appointment.applicants {
                invocation.key(self.keys.passport(&a.passport));
            }
            for a in &s.appointment.applicants {
                invocation.key(self.keys.receipt(&a.receipt));
            }
        }
        let slot = stored.as_ref().map(|s| &s.appointment.slot);
        invocation
            .arg(millis(now))
            .arg(instant_text(now))
            .arg(confirmation.as_str())
            .arg(label)
            .arg(if stored.is_some() { "1" } else { "0" })
            .arg(slot.map(|s| s.to_string()).unwrap_or_default())
            .arg(
                stored
                    .as_ref()
                    .map(|s| s.applicants_json.as_str())
                    .unwrap_or(""),
            )
            .arg(slot.map(|s| hhmm(s.time)).unwrap_or_default())
            .arg(self.retention.num_milliseconds().max(1))
            .arg(RECORD_BACKSTOP_MS);
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        match status.as_str() {
            "RETIRED" => Ok(true),
            "NOT_DUE" | "SKIPPED" | "STALE" => Ok(false),
            "STRAY" => {
                tracing::warn!(
                    confirmation = %confirmation,
                    day = %day,
                    "active index named no booked appointment of its day; entry dropped"
                );
                Ok(false)
            }
            _ => Err(unexpected(what, &status, &items)),
        }
    }

    /// A due day whose active index is empty leaves `days-due` (`day_retire`).
    async fn retire_day(
        &self,
        day: &DayRef,
        label: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let what = "retire past day";
        let mut invocation = self.scripts.day_retire.key(self.keys.days_due());
        invocation
            .key(self.keys.active(day))
            .arg(millis(now))
            .arg(label);
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        match status.as_str() {
            "OK" | "NOT_DUE" | "BUSY" => Ok(()),
            _ => Err(unexpected(what, &status, &items)),
        }
    }

    /// One bounded step (one SCAN of `BACKFILL_SCAN_COUNT`) of the one-time pass that indexes
    /// what was written before the due indexes existed: every `day:` key's day goes into
    /// `days-due`, every waitlist entry still in line into `wl-due` (`ZADD NX`: what is indexed
    /// already keeps its score; the retire scripts re-check everything). Once the SCAN has come
    /// round, `done` is set and a step costs one `HGET`. Concurrent replicas may repeat a step:
    /// harmless, every write is an idempotent `ZADD NX`.
    async fn backfill_step(&self) -> Result<(), StoreError> {
        let what = "backfill due indexes";
        let mut invocation = self.scripts.backfill_scan.key(self.keys.backfill());
        invocation
            .arg(format!("{}*", self.keys.prefix()))
            .arg(BACKFILL_SCAN_COUNT);
        // Read-only (`flags=no-writes`): never waits for replicas, so a lagging replica cannot
        // stop the sweep before its own steps.
        let (status, items) = status_reply(what, self.conn.read_script(what, &invocation).await?)?;
        match status.as_str() {
            "DONE" => return Ok(()),
            "KEYS" => {}
            _ => return Err(unexpected(what, &status, &items)),
        }
        let next = text(what, at(what, &items, 0)?)?;
        let mut days = ::redis::cmd("ZADD");
        days.arg(self.keys.days_due()).arg("NX");
        let mut any_day = false;
        let mut entries = Vec::new();
        for item in &items[1..] {
            let key = text(what, item)?;
            let Some(rest) = key.strip_prefix(self.keys.prefix()) else {
                continue;
            };
            if let Some(label) = rest.strip_prefix("day:") {
                if let Some(day) = parse_day_label(label) {
                    days.arg(millis(crate::store::appointment_retire_at(day.date)))
                        .arg(label);
                    any_day = true;
                }
            } else if let Some(id) = rest.strip_prefix("wle:") {
                if let Ok(id) = EntryId::parse(id) {
                    entries.push(id);
                }
            }
        }
        if any_day {
            self.conn.cmd(what, &days).await?;
        }
        if !entries.is_empty() {
            let mut pipe = ::redis::pipe();
            for id in &entries {
                pipe.cmd("HMGET")
                    .arg(self.keys.entry(id))
                    .arg("status")
                    .arg("to");
            }
            let replies = self.conn.pipeline(what, &pipe).await?;
            let mut due = ::redis::cmd("ZADD");
            due.arg(self.keys.waitlist_due()).arg("NX");
            let mut any_entry = false;
            for (id, reply) in entries.iter().zip(replies) {
                let fields: Vec<Option<String>> = ::redis::from_redis_value(reply)
                    .map_err(|_| StoreError::corrupt(format!("{what}: entry fields")))?;
                let (Some(Some(status)), Some(Some(to))) = (fields.first(), fields.get(1)) else {
                    continue;
                };
                // Only entries still in line can need retiring.
                if status != "WAITING" && status != "OFFERED" {
                    continue;
                }
                let Ok(to) = parse_date(to) else {
                    return Err(StoreError::corrupt(format!("{what}: entry {id} bad to")));
                };
                due.arg(millis(crate::store::waitlist_retire_at(to)))
                    .arg(id.as_str());
                any_entry = true;
            }
            if any_entry {
                self.conn.cmd(what, &due).await?;
            }
        }
        let mut record = ::redis::cmd("HSET");
        record.arg(self.keys.backfill());
        if next == "0" {
            record.arg("done").arg(1);
        } else {
            record.arg("cursor").arg(next.as_str());
        }
        self.conn.cmd(what, &record).await?;
        Ok(())
    }

    /// Forgets at most a batch of retired records whose retention has passed (`appt_expire`).
    async fn forget_retired(&self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        let what = "forget retired appointments";
        let due = self
            .due_batch(what, self.keys.appointment_expiry(), now, RETIRE_BATCH)
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.scripts.appt_expire.key(self.keys.appointment_expiry());
        invocation.arg(millis(now));
        for raw in &due {
            let Ok(confirmation) = ConfirmationNumber::parse(raw) else {
                return Err(StoreError::corrupt(format!(
                    "{what}: bad confirmation {raw}"
                )));
            };
            invocation
                .key(self.keys.appointment(&confirmation))
                .arg(raw.as_str());
        }
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        match status.as_str() {
            "OK" => uint(what, at(what, &items, 0)?),
            _ => Err(unexpected(what, &status, &items)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::keys::Keys;

    #[test]
    fn day_labels_round_trip() {
        let day = parse_day_label("BEIJING:ALL_OTHERS:2030-01-08").expect("parses");
        assert_eq!(Keys::day_label(&day), "BEIJING:ALL_OTHERS:2030-01-08");
        for bad in [
            "",
            "BEIJING",
            "BEIJING:ALL_OTHERS",
            "BEIJING:ALL_OTHERS:2030-13-01",
        ] {
            assert!(parse_day_label(bad).is_none(), "{bad}");
        }
    }
}
