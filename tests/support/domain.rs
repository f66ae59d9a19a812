//! Domain-level fixtures for tests that drive a store directly, without gRPC: the same people
//! as `super::applicant` (applicant `i` has passport P{i}, receipt R{i}, DS-160 AA{i}), their
//! receipts and opening plans that cover every weekday.

use chrono::{DateTime, Utc, Weekday};

use slotd::domain::rules::{DateRange, OpenPlan};
use slotd::domain::types::{
    Applicant, CategoryId, Currency, Ds160Number, Money, PassportNumber, PersonName, PostId,
    Receipt, ReceiptNumber, SlotTime,
};
use slotd::store::Inventory;

pub fn passport(i: u32) -> PassportNumber {
    PassportNumber::parse(&format!("P{i:07}")).expect("passport")
}

pub fn receipt_number(i: u32) -> ReceiptNumber {
    ReceiptNumber::parse(&format!("R{i:07}")).expect("receipt number")
}

/// Applicant `i`: Wei Zhang with passport P{i} and receipt R{i}.
pub fn applicant(i: u32) -> Applicant {
    Applicant {
        passport: passport(i),
        given_name: PersonName::parse("Wei").expect("name"),
        surname: PersonName::parse("Zhang").expect("name"),
        ds160: Ds160Number::parse(&format!("AA{i:08}")).expect("ds160"),
        receipt: receipt_number(i),
    }
}

/// Receipt R{i} for passport P{i}: 185.00 USD paid at `paid_at`.
pub fn receipt(i: u32, paid_at: DateTime<Utc>) -> Receipt {
    Receipt {
        number: receipt_number(i),
        passport: passport(i),
        paid_at,
        amount: Money {
            minor: 18_500,
            currency: Currency::Usd,
        },
    }
}

/// Registers receipt `i` paid a day before the epoch (`super::epoch`).
pub async fn register(store: &dyn Inventory, i: u32) {
    store
        .register_receipt(&receipt(i, super::epoch() - chrono::Duration::days(1)))
        .await
        .expect("register receipt");
}

pub fn every_weekday() -> Vec<Weekday> {
    use Weekday::*;
    vec![Mon, Tue, Wed, Thu, Fri, Sat, Sun]
}

/// Opens `first`..=`last` (every weekday of `range`) with `seats` per slot on BEIJING/ALL_OTHERS.
pub fn plan(range: DateRange, first: &str, last: &str, seats: u32) -> OpenPlan {
    OpenPlan {
        post: PostId::parse("BEIJING").expect("post"),
        category: CategoryId::parse("ALL_OTHERS").expect("category"),
        range,
        weekdays: every_weekday(),
        first: SlotTime::parse(first).expect("time"),
        last: SlotTime::parse(last).expect("time"),
        seats,
    }
}
