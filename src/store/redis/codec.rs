//! Stored representations and script replies ⇄ domain types. Anything that does not decode is
//! `StoreError::Corrupt` (a bug or a foreign writer), never a panic.

use std::collections::HashMap;

use ::redis::Value;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::lifecycle::{Hold, HoldId, HoldStatus, Move};
use crate::domain::types::{
    parse_date, Applicant, Appointment, AppointmentStatus, CategoryId, ConfirmationNumber,
    Ds160Number, PassportNumber, PersonName, PostId, ReceiptNumber, SlotRef, SlotTime,
};
use crate::domain::waitlist::EntryId;
use crate::store::StoreError;

/// An instant as stored: RFC 3339 in UTC with every digit of precision it has, so it reads
/// back equal (`format_instant` on the wire rounds to seconds; the store must not).
pub fn instant_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub fn parse_stored_instant(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::corrupt(format!("stored instant {text:?}")))
}

/// The clock value scripts compare with: ms since the epoch.
pub fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub fn instant_from_millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::corrupt(format!("stored instant {ms} ms")))
}

/// One applicant inside an appointment's `applicants` JSON field.
#[derive(Debug, Serialize, Deserialize)]
struct StoredApplicant {
    passport: String,
    given_name: String,
    surname: String,
    ds160: String,
    receipt: String,
}

pub fn applicants_json(applicants: &[Applicant]) -> Result<String, StoreError> {
    let stored: Vec<StoredApplicant> = applicants
        .iter()
        .map(|a| StoredApplicant {
            passport: a.passport.to_string(),
            given_name: a.given_name.to_string(),
            surname: a.surname.to_string(),
            ds160: a.ds160.to_string(),
            receipt: a.receipt.to_string(),
        })
        .collect();
    serde_json::to_string(&stored)
        .map_err(|e| StoreError::corrupt(format!("encoding applicants: {e}")))
}

pub fn parse_applicants(json: &str) -> Result<Vec<Applicant>, StoreError> {
    let stored: Vec<StoredApplicant> = serde_json::from_str(json)
        .map_err(|e| StoreError::corrupt(format!("stored applicants: {e}")))?;
    let bad = |what: &str| StoreError::corrupt(format!("stored applicant {what}"));
    stored
        .into_iter()
        .map(|a| {
            Ok(Applicant {
                passport: PassportNumber::parse(&a.passport).map_err(|_| bad("passport"))?,
                given_name: PersonName::parse(&a.given_name).map_err(|_| bad("given name"))?,
                surname: PersonName::parse(&a.surname).map_err(|_| bad("surname"))?,
                ds160: Ds160Number::parse(&a.ds160).map_err(|_| bad("ds160"))?,
                receipt: ReceiptNumber::parse(&a.receipt).map_err(|_| bad("receipt"))?,
            })
        })
        .collect()
}

/// An appointment hash as read with HGETALL; None when the key does not exist.
#[derive(Debug, Clone)]
pub struct StoredAppointment {
    pub appointment: Appointment,
    /// The `applicants` field verbatim (cancel compares it inside the script).
    pub applicants_json: String,
}

pub fn decode_appointment(
    confirmation: &ConfirmationNumber,
    fields: HashMap<String, String>,
) -> Result<Option<StoredAppointment>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let get = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| StoreError::corrupt(format!("appointment {confirmation} lacks {name}")))
    };
    let bad = |what: &str| StoreError::corrupt(format!("appointment {confirmation}: bad {what}"));
    let slot = SlotRef {
        post: PostId::parse(get("post")?).map_err(|_| bad("post"))?,
        category: CategoryId::parse(get("category")?).map_err(|_| bad("category"))?,
        date: parse_date(get("date")?).map_err(|_| bad("date"))?,
        time: SlotTime::parse(get("time")?).map_err(|_| bad("time"))?,
    };
    let applicants_json = get("applicants")?.clone();
    let appointment = Appointment {
        confirmation: confirmation.clone(),
        slot,
        applicants: parse_applicants(&applicants_json)?,
        status: AppointmentStatus::parse(get("status")?).ok_or_else(|| bad("status"))?,
        created_at: parse_stored_instant(get("created_at")?)?,
        updated_at: parse_stored_instant(get("updated_at")?)?,
        history: match fields.get("history") {
            Some(text) => parse_history(text).map_err(|_| bad("history"))?,
            None => Vec::new(),
        },
    };
    if appointment.applicants.is_empty() {
        return Err(bad("applicants"));
    }
    Ok(Some(StoredAppointment {
        appointment,
        applicants_json,
    }))
}

/// A slot label as scripts write it: `<POST>/<CAT>/<DATE> <HH:MM>` (= `SlotRef`'s Display).
pub fn parse_slot_label(text: &str) -> Option<SlotRef> {
    let (day, time) = text.split_once(' ')?;
    let mut parts = day.split('/');
    let (post, category, date) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(SlotRef {
        post: PostId::parse(post).ok()?,
        category: CategoryId::parse(category).ok()?,
        date: parse_date(date).ok()?,
        time: SlotTime::parse(time).ok()?,
    })
}

/// The `history` field: one `<from label>|<to label>|<RFC 3339>` line per move.
fn parse_history(text: &str) -> Result<Vec<Move>, ()> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut parts = line.split('|');
            let (from, to, at) = (
                parts.next().ok_or(())?,
                parts.next().ok_or(())?,
                parts.next().ok_or(())?,
            );
            Ok(Move {
                from: parse_slot_label(from).ok_or(())?,
                to: parse_slot_label(to).ok_or(())?,
                at: parse_stored_instant(at).map_err(|_| ())?,
            })
        })
        .collect()
}

/// A hold record as read with HGETALL; None when the key does not exist.
#[derive(Debug, Clone)]
pub struct StoredHold {
    pub hold: Hold,
    /// The `applicants` field verbatim (scripts compare it).
    pub applicants_json: String,
}

pub fn decode_hold(
    id: &HoldId,
    fields: HashMap<String, String>,
) -> Result<Option<StoredHold>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let get = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| StoreError::corrupt(format!("hold {id} lacks {name}")))
    };
    let bad = |what: &str| StoreError::corrupt(format!("hold {id}: bad {what}"));
    let slot = SlotRef {
        post: PostId::parse(get("post")?).map_err(|_| bad("post"))?,
        category: CategoryId::parse(get("category")?).map_err(|_| bad("category"))?,
        date: parse_date(get("date")?).map_err(|_| bad("date"))?,
        time: SlotTime::parse(get("time")?).map_err(|_| bad("time"))?,
    };
    let applicants_json = get("applicants")?.clone();
    let expires_ms: i64 = get("expires_ms")?.parse().map_err(|_| bad("expires_ms"))?;
    let confirmation = match fields.get("confirmation") {
        Some(c) => Some(ConfirmationNumber::parse(c).map_err(|_| bad("confirmation"))?),
        None => None,
    };
    let hold = Hold {
        id: id.clone(),
        slot,
        applicants: parse_applicants(&applicants_json)?,
        status: HoldStatus::parse(get("status")?).ok_or_else(|| bad("status"))?,
        created_at: parse_stored_instant(get("created_at")?)?,
        expires_at: instant_from_millis(expires_ms)?,
        confirmation,
        entry: match fields.get("entry") {
            Some(e) => Some(EntryId::parse(e).map_err(|_| bad("entry"))?),
            None => None,
        },
    };
    if hold.applicants.is_empty() {
        return Err(bad("applicants"));
    }
    Ok(Some(StoredHold {
        hold,
        applicants_json,
    }))
}

/// Field → value pairs of an HGETALL reply (RESP2 flat array or RESP3 map).
pub fn hash_fields(what: &str, value: Value) -> Result<HashMap<String, String>, StoreError> {
    let mut out = HashMap::new();
    for_each_field(what, value, |k, v| {
        out.insert(k, v);
    })?;
    Ok(out)
}

/// Calls `f` with each field and value of a hash-shaped reply (`HGETALL`, a stream entry's
/// body: a flat array, a RESP3 map, or nil for none), taking the reply's bytes.
pub fn for_each_field(
    what: &str,
    value: Value,
    mut f: impl FnMut(String, String),
) -> Result<(), StoreError> {
    match value {
        Value::Nil => {}
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(StoreError::corrupt(format!("{what}: odd hash reply")));
            }
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                f(into_text(what, k)?, into_text(what, v)?);
            }
        }
        Value::Map(pairs) => {
            for (k, v) in pairs {
                f(into_text(what, k)?, into_text(what, v)?);
            }
        }
        other => {
            return Err(StoreError::corrupt(format!(
                "{what}: expected a hash, got {other:?}"
            )))
        }
    }
    Ok(())
}

/// A reply element as text (bulk or simple strings, integers).
pub fn text(what: &str, value: &Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone())
            .map_err(|_| StoreError::corrupt(format!("{what}: reply is not UTF-8"))),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        Value::Okay => Ok("OK".into()),
        other => Err(StoreError::corrupt(format!(
            "{what}: expected text, got {other:?}"
        ))),
    }
}

/// A reply element as text, taking its bytes (no copy: `text` for a borrowed element).
pub fn into_text(what: &str, value: Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes)
            .map_err(|_| StoreError::corrupt(format!("{what}: reply is not UTF-8"))),
        Value::SimpleString(s) => Ok(s),
        other => text(what, &other),
    }
}

/// A reply element as an integer (integers or numeric strings).
pub fn int(what: &str, value: &Value) -> Result<i64, StoreError> {
    match value {
        Value::Int(i) => Ok(*i),
        other => text(what, other)?
            .parse()
            .map_err(|_| StoreError::corrupt(format!("{what}: expected an integer"))),
    }
}

pub fn uint(what: &str, value: &Value) -> Result<u32, StoreError> {
    u32::try_from(int(what, value)?)
        .map_err(|_| StoreError::corrupt(format!("{what}: integer out of range")))
}

/// A script's status reply: `{"OK", ...}` or `{"<REFUSAL>", ...}` as (status, rest).
pub fn status_reply(what: &str, value: Value) -> Result<(String, Vec<Value>), StoreError> {
    let Value::Array(mut items) = value else {
        return Err(StoreError::corrupt(format!(
            "{what}: expected a status array, got {value:?}"
        )));
    };
    if items.is_empty() {
        return Err(StoreError::corrupt(format!("{what}: empty reply")));
    }
    let status = text(what, &items.remove(0))?;
    if status == "TRYAGAIN" {
        // cluster_guard.lua: the tag's slot is moving between cluster nodes; nothing written.
        return Err(StoreError::Unavailable {
            detail: format!("{what}: the booking slot is migrating between cluster nodes"),
        });
    }
    Ok((status, items))
}

/// Element `i` of a script reply's payload.
pub fn at<'a>(what: &str, items: &'a [Value], i: usize) -> Result<&'a Value, StoreError> {
    items
        .get(i)
        .ok_or_else(|| StoreError::corrupt(format!("{what}: reply too short")))
}

/// A script refusal that is not a domain rule: a bad call (a slotd bug) or unreadable data.
pub fn unexpected(what: &str, status: &str, items: &[Value]) -> StoreError {
    let detail = items
        .first()
        .and_then(|v| text(what, v).ok())
        .unwrap_or_default();
    StoreError::corrupt(format!("{what}: script answered {status} {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_keep_their_precision() {
        let at = DateTime::parse_from_rfc3339("2030-01-07T00:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_stored_instant(&instant_text(at)).unwrap(), at);
    }

    #[test]
    fn garbage_replies_are_corrupt_not_panics() {
        assert!(status_reply("x", Value::Nil).is_err());
        assert!(status_reply("x", Value::Array(vec![])).is_err());
        assert!(int("x", &Value::BulkString(b"12a".to_vec())).is_err());
        assert!(hash_fields("x", Value::Array(vec![Value::Int(1)])).is_err());
        assert!(parse_applicants("[{}]").is_err());
    }
}
