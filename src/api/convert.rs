//! Wire ⇄ domain. Every request field is parsed here into a domain type, collecting every
//! violation (named by its proto field path) so one INVALID_ARGUMENT lists them all; nothing
//! reaches the store unless the whole request is valid.

use chrono::Weekday;

use super::pb;
use crate::app::DateSeats;
use crate::domain::catalog::{Catalog, Post, PostKind};
use crate::domain::lifecycle::{
    Event, EventId, EventStart, Hold, HoldConfirmation, HoldId, HoldRelease, HoldRequest,
    HoldStatus, Reschedule,
};
use crate::domain::room::{RoomConfig, RoomStats};
use crate::domain::rules::{
    check_capacity, check_group, AuditReport, Booking, Cancellation, DateRange, ManifestCursor,
    ManifestQuery, OpenPlan, DEFAULT_PAGE_SIZE, MAX_GROUP, MAX_PAGE_SIZE,
};
use crate::domain::types::{
    format_date, format_instant, parse_date, parse_instant, Applicant, Appointment,
    AppointmentStatus, CategoryId, ConfirmationNumber, Currency, DayRef, Ds160Number, Money,
    PassportNumber, PersonName, PostId, Receipt, ReceiptNumber, RequestId, SlotRef, SlotState,
    SlotTime,
};
use crate::domain::waitlist::{EntryId, EntryStatus, JoinGroup, JoinRequest, WaitlistEntry};
use crate::domain::{Error, FieldViolation, Violations};

type Parsed<T> = Result<T, Vec<FieldViolation>>;

fn finish<T>(v: Violations, value: impl FnOnce() -> Option<T>) -> Result<T, Error> {
    v.finish()?;
    // With no violation recorded every part parsed, so `value` is Some.
    value().ok_or_else(|| Error::invalid("", "request could not be parsed"))
}

fn slot_ref(slot: Option<&pb::SlotRef>) -> Parsed<SlotRef> {
    let Some(s) = slot else {
        return Err(vec![FieldViolation::new("", "slot is required")]);
    };
    let mut v = Violations::new();
    let post = v.take("post_id", PostId::parse(&s.post_id));
    let category = v.take("category", CategoryId::parse(&s.category));
    let date = v.take("date", parse_date(&s.date));
    let time = v.take("time", SlotTime::parse(&s.time));
    match (post, category, date, time) {
        (Some(post), Some(category), Some(date), Some(time)) if v.is_empty() => Ok(SlotRef {
            post,
            category,
            date,
            time,
        }),
        _ => Err(v.into_vec()),
    }
}

fn applicant(a: &pb::Applicant) -> Parsed<Applicant> {
    let mut v = Violations::new();
    let passport = v.take("passport_number", PassportNumber::parse(&a.passport_number));
    let given_name = v.take("given_name", PersonName::parse(&a.given_name));
    let surname = v.take("surname", PersonName::parse(&a.surname));
    let ds160 = v.take(
        "ds160_confirmation",
        Ds160Number::parse(&a.ds160_confirmation),
    );
    let receipt = v.take("receipt_number", ReceiptNumber::parse(&a.receipt_number));
    match (passport, given_name, surname, ds160, receipt) {
        (Some(passport), Some(given_name), Some(surname), Some(ds160), Some(receipt)) => {
            Ok(Applicant {
                passport,
                given_name,
                surname,
                ds160,
                receipt,
            })
        }
        _ => Err(v.into_vec()),
    }
}

/// post_id, category and date fields of list and admin requests.
fn day(v: &mut Violations, post_id: &str, category: &str, date: &str) -> Option<DayRef> {
    let post = v.take("post_id", PostId::parse(post_id));
    let category = v.take("category", CategoryId::parse(category));
    let date = v.take("date", parse_date(date));
    Some(DayRef {
        post: post?,
        category: category?,
        date: date?,
    })
}

fn range(v: &mut Violations, from: &str, to: &str) -> Option<DateRange> {
    let from = v.take("from_date", parse_date(from));
    let to = v.take("to_date", parse_date(to));
    // The domain names the range's end `to`; on the wire it is `to_date`.
    v.take(
        "",
        DateRange::new(from?, to?).map_err(|e| FieldViolation::new("to_date", e.description)),
    )
}

pub fn booking(req: &pb::BookAppointmentRequest) -> Result<Booking, Error> {
    let mut v = Violations::new();
    let request_id = v.take("request_id", RequestId::parse(&req.request_id));
    let slot = v.nest("slot", slot_ref(req.slot.as_ref()));
    let mut applicants = Vec::with_capacity(req.applicants.len().min(MAX_GROUP));
    if req.applicants.len() > MAX_GROUP {
        // Refuse before parsing a possibly huge list.
        v.push(
            "applicants",
            format!("a group has at most {MAX_GROUP} applicants (primary + 9 dependents)"),
        );
    } else {
        for (i, a) in req.applicants.iter().enumerate() {
            if let Some(a) = v.nest(&format!("applicants[{i}]"), applicant(a)) {
                applicants.push(a);
            }
        }
    }
    if applicants.len() == req.applicants.len() {
        // Group rules (count, duplicates) once every applicant parsed, so indices line up.
        v.nest("", check_group(&applicants));
    }
    v.finish()?;
    match (request_id, slot) {
        (Some(request_id), Some(slot)) => Booking::new(request_id, slot, applicants)
            .map_err(|violations| Error::Invalid { violations }),
        _ => Err(Error::invalid("", "request could not be parsed")),
    }
}

fn credentials(
    v: &mut Violations,
    confirmation: &str,
    passport: &str,
) -> Option<(ConfirmationNumber, PassportNumber)> {
    let c = v.take(
        "confirmation_number",
        ConfirmationNumber::parse(confirmation),
    );
    let p = v.take("passport_number", PassportNumber::parse(passport));
    Some((c?, p?))
}

pub fn lookup(
    req: &pb::GetAppointmentRequest,
) -> Result<(ConfirmationNumber, PassportNumber), Error> {
    let mut v = Violations::new();
    let creds = credentials(&mut v, &req.confirmation_number, &req.passport_number);
    finish(v, || creds)
}

pub fn cancellation(req: &pb::CancelAppointmentRequest) -> Result<Cancellation, Error> {
    let mut v = Violations::new();
    let request_id = v.take("request_id", RequestId::parse(&req.request_id));
    let creds = credentials(&mut v, &req.confirmation_number, &req.passport_number);
    finish(v, || {
        let (confirmation, passport) = creds?;
        Some(Cancellation {
            request_id: request_id?,
            confirmation,
            passport,
            admission: None,
        })
    })
}

pub fn dates_query(
    req: &pb::ListAvailableDatesRequest,
) -> Result<(PostId, CategoryId, DateRange), Error> {
    let mut v = Violations::new();
    let post = v.take("post_id", PostId::parse(&req.post_id));
    let category = v.take("category", CategoryId::parse(&req.category));
    let range = range(&mut v, &req.from_date, &req.to_date);
    finish(v, || Some((post?, category?, range?)))
}

pub fn slots_query(req: &pb::ListSlotsRequest) -> Result<DayRef, Error> {
    let mut v = Violations::new();
    let d = day(&mut v, &req.post_id, &req.category, &req.date);
    finish(v, || d)
}

fn weekday(w: i32) -> Option<Weekday> {
    match pb::Weekday::try_from(w).ok()? {
        pb::Weekday::Unspecified => None,
        pb::Weekday::Monday => Some(Weekday::Mon),
        pb::Weekday::Tuesday => Some(Weekday::Tue),
        pb::Weekday::Wednesday => Some(Weekday::Wed),
        pb::Weekday::Thursday => Some(Weekday::Thu),
        pb::Weekday::Friday => Some(Weekday::Fri),
        pb::Weekday::Saturday => Some(Weekday::Sat),
        pb::Weekday::Sunday => Some(Weekday::Sun),
    }
}

pub fn open_plan(req: &pb::OpenSlotsRequest) -> Result<OpenPlan, Error> {
    let mut v = Violations::new();
    let post = v.take("post_id", PostId::parse(&req.post_id));
    let category = v.take("category", CategoryId::parse(&req.category));
    let range = range(&mut v, &req.from_date, &req.to_date);
    let mut weekdays = Vec::new();
    if req.weekdays.is_empty() {
        v.push(
            "weekdays",
            "at least one weekday is required, e.g. [\"WEEKDAY_MONDAY\"]",
        );
    }
    for (i, w) in req.weekdays.iter().enumerate() {
        match weekday(*w) {
            Some(d) if !weekdays.contains(&d) => weekdays.push(d),
            Some(_) => {}
            None => v.push(
                format!("weekdays[{i}]"),
                "must be WEEKDAY_MONDAY … WEEKDAY_SUNDAY",
            ),
        }
    }
    let first = v.take("first_time", SlotTime::parse(&req.first_time));
    let last = v.take("last_time", SlotTime::parse(&req.last_time));
    if let (Some(f), Some(l)) = (first, last) {
        if l < f {
            v.push("last_time", "last_time must not be before first_time");
        }
    }
    let seats = v.take("seats_per_slot", check_capacity(req.seats_per_slot, 1));
    finish(v, || {
        Some(OpenPlan {
            post: post?,
            category: category?,
            range: range?,
            weekdays,
            first: first?,
            last: last?,
            seats: seats?,
        })
    })
}

pub fn capacity_change(req: &pb::SetSlotCapacityRequest) -> Result<(SlotRef, u32), Error> {
    let mut v = Violations::new();
    let slot = v.nest("slot", slot_ref(req.slot.as_ref()));
    let capacity = v.take("capacity", check_capacity(req.capacity, 0));
    finish(v, || Some((slot?, capacity?)))
}

pub fn closing(req: &pb::CloseSlotsRequest) -> Result<(DayRef, Option<SlotTime>), Error> {
    let mut v = Violations::new();
    let d = day(&mut v, &req.post_id, &req.category, &req.date);
    let time = if req.time.is_empty() {
        Some(None)
    } else {
        v.take("time", SlotTime::parse(&req.time)).map(Some)
    };
    finish(v, || Some((d?, time?)))
}

pub fn manifest_query(req: &pb::ListAppointmentsRequest) -> Result<ManifestQuery, Error> {
    let mut v = Violations::new();
    let d = day(&mut v, &req.post_id, &req.category, &req.date);
    let limit = match req.page_size {
        0 => Some(DEFAULT_PAGE_SIZE),
        n if n <= MAX_PAGE_SIZE => Some(n),
        _ => {
            v.push(
                "page_size",
                format!("page_size must be at most {MAX_PAGE_SIZE}"),
            );
            None
        }
    };
    let after = if req.page_token.is_empty() {
        Some(None)
    } else {
        v.take("", ManifestCursor::parse(&req.page_token)).map(Some)
    };
    finish(v, || {
        Some(ManifestQuery {
            day: d?,
            after: after?,
            limit: limit?,
            include_cancelled: req.include_cancelled,
        })
    })
}

pub fn receipt(req: &pb::RegisterReceiptRequest) -> Result<Receipt, Error> {
    let mut v = Violations::new();
    let number = v.take("receipt_number", ReceiptNumber::parse(&req.receipt_number));
    let passport = v.take(
        "passport_number",
        PassportNumber::parse(&req.passport_number),
    );
    let paid_at = v.take("paid_at", parse_instant(&req.paid_at));
    let minor = v.take("amount", Money::parse_amount(&req.amount));
    let currency = v.take("currency", Currency::parse(&req.currency));
    finish(v, || {
        Some(Receipt {
            number: number?,
            passport: passport?,
            paid_at: paid_at?,
            amount: Money {
                minor: minor?,
                currency: currency?,
            },
        })
    })
}

pub fn audit_query(
    req: &pb::AuditInventoryRequest,
) -> Result<(PostId, CategoryId, DateRange), Error> {
    let mut v = Violations::new();
    let post = v.take("post_id", PostId::parse(&req.post_id));
    let category = v.take("category", CategoryId::parse(&req.category));
    let range = range(&mut v, &req.from_date, &req.to_date);
    finish(v, || Some((post?, category?, range?)))
}

pub fn hold_request(req: &pb::HoldSlotRequest) -> Result<HoldRequest, Error> {
    // The same fields and rules as a booking.
    booking(&pb::BookAppointmentRequest {
        request_id: req.request_id.clone(),
        slot: req.slot.clone(),
        applicants: req.applicants.clone(),
    })
}

pub fn hold_confirmation(req: &pb::ConfirmHoldRequest) -> Result<HoldConfirmation, Error> {
    let mut v = Violations::new();
    let hold = v.take("hold_id", HoldId::parse(&req.hold_id));
    let request_id = v.take("request_id", RequestId::parse(&req.request_id));
    finish(v, || {
        Some(HoldConfirmation {
            request_id: request_id?,
            hold: hold?,
            admission: None,
        })
    })
}

pub fn hold_release(req: &pb::ReleaseHoldRequest) -> Result<HoldRelease, Error> {
    let mut v = Violations::new();
    let hold = v.take("hold_id", HoldId::parse(&req.hold_id));
    let request_id = v.take("request_id", RequestId::parse(&req.request_id));
    finish(v, || {
        Some(HoldRelease {
            request_id: request_id?,
            hold: hold?,
        })
    })
}

pub fn reschedule(req: &pb::RescheduleAppointmentRequest) -> Result<Reschedule, Error> {
    let mut v = Violations::new();
    let request_id = v.take("request_id", RequestId::parse(&req.request_id));
    let creds = credentials(&mut v, &req.confirmation_number, &req.passport_number);
    let new_slot = v.nest("new_slot", slot_ref(req.new_slot.as_ref()));
    finish(v, || {
        let (confirmation, passport) = creds?;
        Some(Reschedule {
            request_id: request_id?,
            confirmation,
            passport,
            new_slot: new_slot?,
            admission: None,
        })
    })
}

pub fn render_lookup(
    req: &pb::RenderConfirmationRequest,
) -> Result<(ConfirmationNumber, PassportNumber), Error> {
    let mut v = Violations::new();
    let creds = credentials(&mut v, &req.confirmation_number, &req.passport_number);
    finish(v, || creds)
}

pub fn slot_query(req: &pb::GetSlotRequest) -> Result<SlotRef, Error> {
    let mut v = Violations::new();
    let slot = v.nest("slot", slot_ref(req.slot.as_ref()));
    finish(v, || slot)
}

/// `after_id`: "$" or "" for new events only, else a stream id ("0" = the whole log).
pub fn event_start(req: &pb::WatchEventsRequest) -> Result<EventStart, Error> {
    let text = req.after_id.trim();
    if text.is_empty() || text == "$" {
        return Ok(EventStart::Latest);
    }
    let mut v = Violations::new();
    let id = v.take("after_id", EventId::parse(text));
    finish(v, || id.map(EventStart::After))
}

// ---- domain → wire ----

pub fn slot_ref_pb(s: &SlotRef) -> pb::SlotRef {
    pb::SlotRef {
        post_id: s.post.to_string(),
        category: s.category.to_string(),
        date: format_date(s.date),
        time: s.time.to_string(),
    }
}

pub fn appointment_pb(a: &Appointment) -> pb::Appointment {
    pb::Appointment {
        confirmation_number: a.confirmation.to_string(),
        slot: Some(slot_ref_pb(&a.slot)),
        applicants: a
            .applicants
            .iter()
            .map(|p| pb::Applicant {
                passport_number: p.passport.to_string(),
                given_name: p.given_name.to_string(),
                surname: p.surname.to_string(),
                ds160_confirmation: p.ds160.to_string(),
                receipt_number: p.receipt.to_string(),
            })
            .collect(),
        status: match a.status {
            AppointmentStatus::Booked => pb::AppointmentStatus::Booked,
            AppointmentStatus::Cancelled => pb::AppointmentStatus::Cancelled,
        } as i32,
        created_at: format_instant(a.created_at),
        updated_at: format_instant(a.updated_at),
        history: a
            .history
            .iter()
            .map(|m| pb::AppointmentMove {
                from_slot: Some(slot_ref_pb(&m.from)),
                to_slot: Some(slot_ref_pb(&m.to)),
                at: format_instant(m.at),
            })
            .collect(),
        ..Default::default()
    }
}

/// The appointment with what its printed confirmation page shows: post and category names and
/// address from the catalog.
pub fn appointment_view_pb(a: &Appointment, catalog: &Catalog) -> pb::Appointment {
    let mut out = appointment_pb(a);
    if let Ok(post) = catalog.post(&a.slot.post) {
        out.post_name_en = post.name_en.clone();
        out.post_name_zh = post.name_zh.clone();
        out.post_address_en = post.address_en.clone();
        out.post_address_zh = post.address_zh.clone();
        out.time_zone = post.time_zone.name().to_owned();
        if let Some(c) = post.categories.iter().find(|c| c.id == a.slot.category) {
            out.category_name_en = c.name_en.clone();
            out.category_name_zh = c.name_zh.clone();
        }
    }
    out
}

pub fn hold_pb(h: &Hold, now: chrono::DateTime<chrono::Utc>) -> pb::Hold {
    pb::Hold {
        hold_id: h.id.to_string(),
        slot: Some(slot_ref_pb(&h.slot)),
        applicants: h.applicants.iter().map(applicant_pb).collect(),
        status: match h.status_at(now) {
            HoldStatus::Held => pb::HoldStatus::Held,
            HoldStatus::Confirmed => pb::HoldStatus::Confirmed,
            HoldStatus::Released => pb::HoldStatus::Released,
            HoldStatus::Expired => pb::HoldStatus::Expired,
        } as i32,
        created_at: format_instant(h.created_at),
        expires_at: format_instant(h.expires_at),
        confirmation_number: h
            .confirmation
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        entry_id: h.entry.as_ref().map(|e| e.to_string()).unwrap_or_default(),
    }
}

fn applicant_pb(p: &Applicant) -> pb::Applicant {
    pb::Applicant {
        passport_number: p.passport.to_string(),
        given_name: p.given_name.to_string(),
        surname: p.surname.to_string(),
        ds160_confirmation: p.ds160.to_string(),
        receipt_number: p.receipt.to_string(),
    }
}

pub fn event_pb(e: &Event) -> pb::BookingEvent {
    pb::BookingEvent {
        id: e.id.to_string(),
        r#type: e.kind.clone(),
        fields: e.fields.clone().into_iter().collect(),
    }
}

pub fn slot_state_pb(s: &SlotState) -> pb::SlotState {
    pb::SlotState {
        slot: Some(slot_ref_pb(&s.slot)),
        capacity: s.capacity,
        booked: s.booked,
        remaining: s.remaining(),
        closed: s.closed,
        held: s.held,
    }
}

pub fn post_pb(p: &Post) -> pb::Post {
    pb::Post {
        post_id: p.id.to_string(),
        kind: match p.kind {
            PostKind::Embassy => pb::PostKind::Embassy,
            PostKind::Consulate => pb::PostKind::Consulate,
            PostKind::DocumentDropOff => pb::PostKind::DocumentDropOff,
        } as i32,
        name_en: p.name_en.clone(),
        name_zh: p.name_zh.clone(),
        address_en: p.address_en.clone(),
        address_zh: p.address_zh.clone(),
        city: p.city.clone(),
        postal_code: p.postal_code.clone(),
        time_zone: p.time_zone.name().to_owned(),
        categories: p
            .categories
            .iter()
            .map(|c| pb::Category {
                category_id: c.id.to_string(),
                name_en: c.name_en.clone(),
                name_zh: c.name_zh.clone(),
            })
            .collect(),
    }
}

pub fn date_seats_pb(d: &DateSeats) -> pb::DateAvailability {
    pb::DateAvailability {
        date: format_date(d.date),
        seats_available: d.seats,
        open_slots: d.open_slots,
    }
}

pub fn receipt_pb(r: &Receipt) -> pb::Receipt {
    pb::Receipt {
        receipt_number: r.number.to_string(),
        passport_number: r.passport.to_string(),
        paid_at: format_instant(r.paid_at),
        expires_at: format_instant(r.expires_at()),
        amount: r.amount.format_amount(),
        currency: r.amount.currency.code().to_owned(),
    }
}

pub fn audit_pb(r: &AuditReport) -> pb::AuditInventoryResponse {
    pb::AuditInventoryResponse {
        slots_checked: r.slots_checked,
        violations: r
            .violations
            .iter()
            .map(|v| pb::InventoryViolation {
                slot: Some(slot_ref_pb(&v.slot)),
                rule: v.rule.clone(),
                detail: v.detail.clone(),
            })
            .collect(),
    }
}

pub fn room_config(config: Option<&pb::WaitingRoomConfig>) -> Result<RoomConfig, Error> {
    let c = config.ok_or_else(|| Error::invalid("config", "config is required"))?;
    RoomConfig {
        enabled: c.enabled,
        admissions_per_minute: c.admissions_per_minute,
        max_active_sessions: c.max_active_sessions,
        session_duration_secs: c.session_duration_seconds,
        waiter_timeout_secs: c.waiter_timeout_seconds,
        paused: c.paused,
        gate_calendar: c.gate_calendar,
    }
    .validate()
    .map_err(|violations| Error::Invalid {
        violations: violations.into_iter().map(|v| v.within("config")).collect(),
    })
}

pub fn room_config_pb(c: &RoomConfig) -> pb::WaitingRoomConfig {
    pb::WaitingRoomConfig {
        enabled: c.enabled,
        admissions_per_minute: c.admissions_per_minute,
        max_active_sessions: c.max_active_sessions,
        session_duration_seconds: c.session_duration_secs,
        waiter_timeout_seconds: c.waiter_timeout_secs,
        paused: c.paused,
        gate_calendar: c.gate_calendar,
    }
}

pub fn room_stats_pb(s: &RoomStats) -> pb::GetWaitingRoomStatsResponse {
    pb::GetWaitingRoomStatsResponse {
        config: Some(room_config_pb(&s.config)),
        waiting: s.waiting,
        active: s.active,
        admitted_total: s.admitted_total,
        expired_total: s.expired_total,
        last_ticket_number: s.last_ticket_number,
        observed_admissions_per_minute: s.observed_per_minute,
    }
}

/// The `x-admission-token` metadata, if sent (a value that is not ASCII cannot be a token).
pub fn admission_token(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata
        .get(ADMISSION_HEADER)
        .map(|v| v.to_str().unwrap_or("\u{0}"))
}

pub const ADMISSION_HEADER: &str = "x-admission-token";

// ---- waitlist ----

/// At most this many acceptable times in one waitlist request (a day has 96 slots).
const MAX_WAITLIST_TIMES: usize = 96;

pub fn waitlist_join(req: &pb::JoinWaitlistRequest) -> Result<JoinRequest, Error> {
    let mut v = Violations::new();
    let request_id = v.take("request_id", RequestId::parse(&req.request_id));
    let post = v.take("post_id", PostId::parse(&req.post_id));
    let category = v.take("category", CategoryId::parse(&req.category));
    let from = v.take("from_date", parse_date(&req.from_date));
    let to = v.take("to_date", parse_date(&req.to_date));
    let range = match (from, to) {
        (Some(from), Some(to)) => v.take(
            "to_date",
            DateRange::new(from, to).map_err(|e| FieldViolation::new("", e.description)),
        ),
        _ => None,
    };
    let mut times = Vec::new();
    if req.times.len() > MAX_WAITLIST_TIMES {
        v.push(
            "times",
            format!("at most {MAX_WAITLIST_TIMES} times (a day has 96 slots)"),
        );
    } else {
        for (i, t) in req.times.iter().enumerate() {
            if let Some(t) = v.take(&format!("times[{i}]"), SlotTime::parse(t)) {
                times.push(t);
            }
        }
    }
    times.sort();
    times.dedup();
    let group = if req.confirmation_number.is_empty() && req.passport_number.is_empty() {
        let mut applicants = Vec::with_capacity(req.applicants.len().min(MAX_GROUP));
        if req.applicants.is_empty() {
            v.push("applicants", "at least one applicant is required");
        } else if req.applicants.len() > MAX_GROUP {
            v.push(
                "applicants",
                format!("a group has at most {MAX_GROUP} applicants (primary + 9 dependents)"),
            );
        } else {
            for (i, a) in req.applicants.iter().enumerate() {
                if let Some(a) = v.nest(&format!("applicants[{i}]"), applicant(a)) {
                    applicants.push(a);
                }
            }
        }
        if applicants.len() == req.applicants.len() {
            v.nest("", check_group(&applicants));
        }
        Some(JoinGroup::Applicants(applicants))
    } else {
        if !req.applicants.is_empty() {
            v.push(
                "applicants",
                "leave applicants empty with confirmation_number: the appointment's group waits",
            );
        }
        let appointment = v.take(
            "confirmation_number",
            ConfirmationNumber::parse(&req.confirmation_number),
        );
        let passport = v.take(
            "passport_number",
            PassportNumber::parse(&req.passport_number),
        );
        match (appointment, passport) {
            (Some(appointment), Some(passport)) => Some(JoinGroup::Moving {
                appointment,
                passport,
            }),
            _ => None,
        }
    };
    finish(v, || {
        Some(JoinRequest {
            request_id: request_id?,
            post: post?,
            category: category?,
            range: range?,
            times,
            group: group?,
        })
    })
}

/// entry_id and entry_secret of the entry-holder's requests.
pub fn entry_credentials(entry_id: &str, secret: &str) -> Result<(EntryId, String), Error> {
    let mut v = Violations::new();
    let id = v.take("entry_id", EntryId::parse(entry_id));
    if secret.is_empty() {
        v.push(
            "entry_secret",
            "entry_secret is required (JoinWaitlist returned it)",
        );
    } else if secret.len() > 128 {
        v.push("entry_secret", "entry_secret is at most 128 characters");
    }
    finish(v, || id.map(|id| (id, secret.to_owned())))
}

pub fn waitlist_share(
    req: &pb::SetWaitlistShareRequest,
) -> Result<(PostId, CategoryId, u32), Error> {
    let mut v = Violations::new();
    let post = v.take("post_id", PostId::parse(&req.post_id));
    let category = v.take("category", CategoryId::parse(&req.category));
    if req.percent > 100 {
        v.push("percent", "must be between 0 and 100");
    }
    finish(v, || Some((post?, category?, req.percent)))
}

pub fn entry_pb(e: &WaitlistEntry, now: chrono::DateTime<chrono::Utc>) -> pb::WaitlistEntry {
    pb::WaitlistEntry {
        entry_id: e.id.to_string(),
        post_id: e.post.to_string(),
        category: e.category.to_string(),
        from_date: format_date(e.range.from),
        to_date: format_date(e.range.to),
        times: e.times.iter().map(|t| t.to_string()).collect(),
        applicants: e.applicants.iter().map(applicant_pb).collect(),
        status: match e.status {
            EntryStatus::Waiting => pb::WaitlistStatus::Waiting,
            EntryStatus::Offered => pb::WaitlistStatus::Offered,
            EntryStatus::Fulfilled => pb::WaitlistStatus::Fulfilled,
            EntryStatus::Left => pb::WaitlistStatus::Left,
            EntryStatus::Expired => pb::WaitlistStatus::Expired,
            EntryStatus::Cancelled => pb::WaitlistStatus::Cancelled,
        } as i32,
        position: e.position.unwrap_or(0),
        offer: e.offer.as_ref().map(|h| hold_pb(h, now)),
        confirmation_number: e
            .confirmation
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        reason: e.reason.clone().unwrap_or_default(),
        moving_confirmation_number: e.moving.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        created_at: format_instant(e.created_at),
        updated_at: format_instant(e.updated_at),
    }
}
