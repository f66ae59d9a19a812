//! The printable appointment confirmation page (Chinese and English), rendered from
//! `templates/confirmation.html` with minijinja. The template's name ends in `.html`, so every
//! `{{ field }}` is HTML-escaped: names and other stored text cannot inject markup.
//!
//! Like the guide's confirmation letter it shows the number of applicants, the visa category,
//! the post's name and street address in Chinese and in English with city and postal code, its
//! contact lines (catalog `contact`), and
//! a QR code of the confirmation number to scan at the door: drawn here as inline SVG (one
//! path of unit squares; no image, no script, no network), the only unescaped markup.

use minijinja::{context, Environment};
use serde::Serialize;

use crate::domain::catalog::Catalog;
use crate::domain::types::{format_date, format_instant, Appointment, AppointmentStatus};
use crate::store::StoreError;

const TEMPLATE: &str = include_str!("templates/confirmation.html");
const NAME: &str = "confirmation.html";
pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";

#[derive(Serialize)]
struct ApplicantView {
    surname: String,
    given_name: String,
    passport: String,
    ds160: String,
}

#[derive(Serialize)]
struct MoveView {
    from: String,
    to: String,
    at: String,
}

/// Modules of white border around the code (the QR standard's quiet zone).
const QUIET_ZONE: usize = 4;

/// The QR code of `text` as an inline SVG: one `<path>` of 1x1 squares `M{x},{y}h1v1h-1z`, one
/// per dark module, in a viewBox with the quiet zone (so it scales to any print size).
pub fn qr_svg(text: &str) -> Result<String, StoreError> {
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M)
        .map_err(|e| StoreError::corrupt(format!("confirmation QR code: {e}")))?;
    let width = code.width();
    let size = width + 2 * QUIET_ZONE;
    let mut path = String::with_capacity(width * width * 6);
    for (i, color) in code.to_colors().iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (x, y) = (i % width + QUIET_ZONE, i / width + QUIET_ZONE);
            path.push_str(&format!("M{x},{y}h1v1h-1z"));
        }
    }
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"qr\" viewBox=\"0 0 {size} {size}\" \
         width=\"{px}\" height=\"{px}\" shape-rendering=\"crispEdges\" role=\"img\" \
         aria-label=\"QR {text}\"><rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/>\
         <path fill=\"#000\" d=\"{path}\"/></svg>",
        px = size * 4,
    ))
}

/// The page for an appointment. Failures are template bugs, reported as `Corrupt` (INTERNAL).
pub fn render(appointment: &Appointment, catalog: &Catalog) -> Result<String, StoreError> {
    let mut env = Environment::new();
    env.add_template(NAME, TEMPLATE)
        .map_err(|e| StoreError::corrupt(format!("confirmation template: {e}")))?;
    let template = env
        .get_template(NAME)
        .map_err(|e| StoreError::corrupt(format!("confirmation template: {e}")))?;
    let post = catalog.post(&appointment.slot.post).ok();
    let category = post.and_then(|p| {
        p.categories
            .iter()
            .find(|c| c.id == appointment.slot.category)
    });
    let (status_zh, status_en) = match appointment.status {
        AppointmentStatus::Booked => ("已预约", "Booked"),
        AppointmentStatus::Cancelled => ("已取消", "Cancelled"),
    };
    let applicants: Vec<ApplicantView> = appointment
        .applicants
        .iter()
        .map(|a| ApplicantView {
            surname: a.surname.to_string(),
            given_name: a.given_name.to_string(),
            passport: a.passport.to_string(),
            ds160: a.ds160.to_string(),
        })
        .collect();
    let history: Vec<MoveView> = appointment
        .history
        .iter()
        .map(|m| MoveView {
            from: m.from.to_string(),
            to: m.to.to_string(),
            at: format_instant(m.at),
        })
        .collect();
    // A confirmation number is 14 characters of an unambiguous alphabet: nothing to escape.
    let qr = minijinja::Value::from_safe_string(qr_svg(appointment.confirmation.as_str())?);
    template
        .render(context! {
            confirmation_number => appointment.confirmation.to_string(),
            qr,
            applicant_count => appointment.applicants.len(),
            post_id => appointment.slot.post.to_string(),
            city => post.map(|p| p.city.clone()).unwrap_or_default(),
            postal_code => post.map(|p| p.postal_code.clone()).unwrap_or_default(),
            contact => post.map(|p| p.contact.clone()).unwrap_or_default(),
            status_zh, status_en,
            post_name_zh => post.map(|p| p.name_zh.clone()).unwrap_or_default(),
            post_name_en => post.map(|p| p.name_en.clone()).unwrap_or_else(|| appointment.slot.post.to_string()),
            post_address_zh => post.map(|p| p.address_zh.clone()).unwrap_or_default(),
            post_address_en => post.map(|p| p.address_en.clone()).unwrap_or_default(),
            time_zone => post.map(|p| p.time_zone.name().to_owned()).unwrap_or_default(),
            category_name_zh => category.map(|c| c.name_zh.clone()).unwrap_or_default(),
            category_name_en => category.map(|c| c.name_en.clone()).unwrap_or_else(|| appointment.slot.category.to_string()),
            date => format_date(appointment.slot.date),
            time => appointment.slot.time.to_string(),
            applicants,
            history,
        })
        .map_err(|e| StoreError::corrupt(format!("confirmation page: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::types::{
        parse_date, Applicant, ConfirmationNumber, Ds160Number, PassportNumber, PersonName,
        ReceiptNumber, SlotRef, SlotTime,
    };
    use crate::domain::types::{CategoryId, PostId};

    fn appointment() -> Appointment {
        let now = chrono::DateTime::parse_from_rfc3339("2030-01-07T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        Appointment {
            confirmation: ConfirmationNumber::generate(),
            slot: SlotRef {
                post: PostId::parse("BEIJING").unwrap(),
                category: CategoryId::parse("ALL_OTHERS").unwrap(),
                date: parse_date("2030-01-08").unwrap(),
                time: SlotTime::parse("08:15").unwrap(),
            },
            applicants: vec![Applicant {
                passport: PassportNumber::parse("E12345678").unwrap(),
                given_name: PersonName::parse("Wei").unwrap(),
                surname: PersonName::parse("Zhang").unwrap(),
                ds160: Ds160Number::parse("AA00ABCDEF").unwrap(),
                receipt: ReceiptNumber::parse("RCPT000001").unwrap(),
            }],
            status: AppointmentStatus::Booked,
            created_at: now,
            updated_at: now,
            history: Vec::new(),
        }
    }

    #[test]
    fn the_page_shows_post_date_time_category_applicants_and_ds160_in_both_languages() {
        let catalog = Catalog::builtin().unwrap();
        let a = appointment();
        let html = render(&a, &catalog).unwrap();
        let post = catalog.post(&a.slot.post).unwrap();
        for needle in [
            a.confirmation.as_str(),
            "2030-01-08",
            "08:15",
            "AA00ABCDEF",
            "E12345678",
            "ZHANG",
            "预约确认",
            "Appointment Confirmation",
            post.name_zh.as_str(),
        ] {
            assert!(html.contains(needle), "missing {needle} in {html}");
        }
    }

    #[test]
    fn the_letter_shows_applicant_count_category_both_addresses_postal_code_and_contact() {
        let catalog = Catalog::builtin().unwrap();
        let mut a = appointment();
        let mut dependent = a.applicants[0].clone();
        dependent.passport = PassportNumber::parse("E87654321").unwrap();
        a.applicants.push(dependent);
        let html = render(&a, &catalog).unwrap();
        let post = catalog.post(&a.slot.post).unwrap();
        let category = &post.categories[0];
        for needle in [
            "申请人数量 Number of applicants: 2",
            post.address_zh.as_str(),
            post.address_en.as_str(),
            post.postal_code.as_str(),
            post.city.as_str(),
            category.name_zh.as_str(),
            category.name_en.as_str(),
            "E87654321",
            post.contact[0].as_str(),
        ] {
            assert!(html.contains(needle), "missing {needle} in {html}");
        }
    }

    #[test]
    fn a_field_containing_a_script_tag_is_escaped() {
        // Applicant names cannot hold markup (they are validated), but catalog text is
        // operator-supplied (`--posts`): the template must escape it.
        let builtin = Catalog::builtin().unwrap();
        let name = builtin
            .post(&PostId::parse("BEIJING").unwrap())
            .unwrap()
            .name_en
            .clone();
        let toml =
            crate::domain::catalog::DEFAULT_CATALOG.replacen(&name, "<script>alert(1)</script>", 1);
        let catalog = Catalog::from_toml(&toml).unwrap();
        let html = render(&appointment(), &catalog).unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)"), "{html}");
    }
}
