//! `--demo`: opens the next 60 days (weekdays, 08:00-11:45, 24 seats, every post and category)
//! and registers demo receipts, so a newcomer can book at once.

use chrono::{Duration, Weekday};

use crate::app::AppError;
use crate::app::Slotd;
use crate::domain::rules::{DateRange, OpenPlan};
use crate::domain::types::{Currency, Money, PassportNumber, Receipt, ReceiptNumber, SlotTime};

pub const DEMO_DAYS: i64 = 60;
pub const DEMO_SEATS: u32 = 24;
pub const DEMO_RECEIPTS: u32 = 100;

/// Demo applicant `i` (1-based): passport `E0000000i`-style, receipt `DEMO00000i`-style.
pub fn demo_applicant(i: u32) -> (String, String) {
    (format!("E{i:08}"), format!("DEMO{i:06}"))
}

pub async fn seed(app: &Slotd) -> Result<(u32, u32), AppError> {
    let now = app.now();
    let (first, last) = match (
        SlotTime::from_minutes(8 * 60),
        SlotTime::from_minutes(11 * 60 + 45),
    ) {
        (Some(f), Some(l)) => (f, l),
        _ => {
            return Err(AppError::Internal {
                detail: "demo times off the grid".into(),
            })
        }
    };
    let mut opened = 0;
    for post in app.catalog().posts() {
        let tomorrow = post.today(now) + Duration::days(1);
        let range = DateRange::new(tomorrow, tomorrow + Duration::days(DEMO_DAYS - 1))?;
        for category in &post.categories {
            let plan = OpenPlan {
                post: post.id.clone(),
                category: category.id.clone(),
                range,
                weekdays: vec![
                    Weekday::Mon,
                    Weekday::Tue,
                    Weekday::Wed,
                    Weekday::Thu,
                    Weekday::Fri,
                ],
                first,
                last,
                seats: DEMO_SEATS,
            };
            let report = app.open_slots(&plan).await?;
            opened += report.opened + report.updated;
        }
    }
    let mut receipts = 0;
    for i in 1..=DEMO_RECEIPTS {
        let (passport, number) = demo_applicant(i);
        let receipt = Receipt {
            number: ReceiptNumber::parse(&number)?,
            passport: PassportNumber::parse(&passport)?,
            paid_at: now - Duration::days(1),
            amount: Money {
                minor: 18_500, // 185.00 USD
                currency: Currency::Usd,
            },
        };
        match app.register_receipt(&receipt).await {
            Ok(_) => receipts += 1,
            // Seeded before with another payment time (a restart against the same Redis).
            Err(AppError::Refused(crate::domain::Error::ReceiptConflict { .. })) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((opened, receipts))
}

impl From<crate::domain::FieldViolation> for AppError {
    fn from(v: crate::domain::FieldViolation) -> Self {
        AppError::Internal {
            detail: format!("demo data invalid: {}", v.description),
        }
    }
}
