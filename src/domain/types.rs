//! Domain value types. Each is parsed from untrusted text exactly once, here; holding one means
//! it is valid. Parsers return a `FieldViolation` with an empty field name, which the caller
//! places under the proto field it came from.

use std::fmt;

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::error::FieldViolation;

fn bad(description: impl Into<String>) -> FieldViolation {
    FieldViolation::new("", description)
}

/// A catalog identifier (post or category): 1-32 of A-Z, 0-9, `_`. Case-insensitive on input.
fn parse_ident(text: &str, what: &str) -> Result<String, FieldViolation> {
    let upper = text.trim().to_ascii_uppercase();
    if upper.is_empty() {
        return Err(bad(format!("{what} is required")));
    }
    if upper.len() > 32
        || !upper
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(bad(format!("{what} must be 1-32 of A-Z, 0-9 and _")));
    }
    Ok(upper)
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// A post (embassy, consulate or drop-off site) id, e.g. `BEIJING`.
    PostId
);
string_newtype!(
    /// A category id within a post, e.g. `ALL_OTHERS`.
    CategoryId
);
string_newtype!(
    /// A passport number, stored upper case.
    PassportNumber
);
string_newtype!(
    /// A given name or surname in Latin letters, stored upper case as in the passport.
    PersonName
);
string_newtype!(
    /// A DS-160 confirmation number: `AA` + 8 letters/digits.
    Ds160Number
);
string_newtype!(
    /// An MRV fee receipt number.
    ReceiptNumber
);
string_newtype!(
    /// A client-chosen idempotency key.
    RequestId
);
string_newtype!(
    /// An appointment's confirmation number (see `confirmation`).
    ConfirmationNumber
);

impl PostId {
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        parse_ident(text, "post_id").map(Self)
    }
}

impl CategoryId {
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        parse_ident(text, "category").map(Self)
    }
}

impl PassportNumber {
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let upper = text.trim().to_ascii_uppercase();
        if upper.is_empty() {
            return Err(bad("passport_number is required"));
        }
        if !(5..=20).contains(&upper.len()) || !upper.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad("passport_number must be 5-20 letters A-Z or digits"));
        }
        Ok(Self(upper))
    }
}

impl PersonName {
    pub const MAX_LEN: usize = 64;

    /// Latin letters, with single spaces, hyphens or apostrophes between them.
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(bad("name is required"));
        }
        if trimmed.chars().count() > Self::MAX_LEN {
            return Err(bad(format!(
                "name must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        let mut previous_was_letter = false;
        for c in trimmed.chars() {
            if c.is_ascii_alphabetic() {
                previous_was_letter = true;
            } else if matches!(c, ' ' | '-' | '\'') && previous_was_letter {
                previous_was_letter = false;
            } else {
                return Err(bad(
                    "name must be Latin letters A-Z, with single spaces, hyphens or apostrophes between them (as in the passport)",
                ));
            }
        }
        if !previous_was_letter {
            return Err(bad("name must end with a letter"));
        }
        Ok(Self(trimmed.to_ascii_uppercase()))
    }
}

impl Ds160Number {
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let upper = text.trim().to_ascii_uppercase();
        if upper.len() != 10
            || !upper.starts_with("AA")
            || !upper.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(bad(
                "ds160_confirmation must be \"AA\" followed by 8 letters or digits, e.g. AA00ABCDEF",
            ));
        }
        Ok(Self(upper))
    }
}

impl ReceiptNumber {
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let upper = text.trim().to_ascii_uppercase();
        if upper.is_empty() {
            return Err(bad("receipt_number is required"));
        }
        if !(6..=32).contains(&upper.len()) || !upper.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad("receipt_number must be 6-32 letters A-Z or digits"));
        }
        Ok(Self(upper))
    }
}

impl RequestId {
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        if text.is_empty() {
            return Err(bad(
                "request_id is required: a unique id per logical request, reused only for retries",
            ));
        }
        if text.len() > 128
            || !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err(bad(
                "request_id must be 1-128 of A-Z, a-z, 0-9, '.', '_', ':', '-'",
            ));
        }
        Ok(Self(text.to_owned()))
    }
}

impl ConfirmationNumber {
    /// Typable without confusion: no 0/O, 1/I/L, and no U.
    pub const ALPHABET: &'static [u8; 30] = b"23456789ABCDEFGHJKMNPQRSTVWXYZ";
    /// 14 symbols of 30 = 68.7 bits.
    pub const LEN: usize = 14;

    /// A fresh number from the thread's CSPRNG (ChaCha, seeded by the OS).
    pub fn generate() -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        let text = (0..Self::LEN)
            .map(|_| Self::ALPHABET[rng.random_range(0..Self::ALPHABET.len())] as char)
            .collect();
        Self(text)
    }

    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let upper = text.trim().to_ascii_uppercase();
        if upper.is_empty() {
            return Err(bad("confirmation_number is required"));
        }
        if upper.len() != Self::LEN || !upper.bytes().all(|b| Self::ALPHABET.contains(&b)) {
            return Err(bad(format!(
                "confirmation_number must be {} characters from {}",
                Self::LEN,
                std::str::from_utf8(Self::ALPHABET).unwrap_or_default()
            )));
        }
        Ok(Self(upper))
    }
}

/// A calendar date, strictly `YYYY-MM-DD` and real (no 2025-02-30).
pub fn parse_date(text: &str) -> Result<NaiveDate, FieldViolation> {
    let b = text.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return Err(bad("date must be YYYY-MM-DD"));
    }
    // The shape is checked: plain digit arithmetic (chrono's format-string parser is a hot spot
    // of calendar calls).
    let num =
        |r: std::ops::Range<usize>| b[r].iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0'));
    i32::try_from(num(0..4))
        .ok()
        .and_then(|y| NaiveDate::from_ymd_opt(y, num(5..7), num(8..10)))
        .ok_or_else(|| bad(format!("{text} is not a real calendar date")))
}

pub fn format_date(date: NaiveDate) -> String {
    let mut text = String::with_capacity(10);
    push_date(&mut text, date);
    text
}

/// Appends `date` as `%Y-%m-%d` to `out` (the text of `format_date`, without its allocation).
pub fn push_date(out: &mut String, date: NaiveDate) {
    match date_digits(date) {
        Some(digits) => digits.iter().for_each(|&b| out.push(char::from(b))),
        None => out.push_str(&date.format("%Y-%m-%d").to_string()),
    }
}

/// `%Y-%m-%d` of a date of the years 0-9999, digit by digit: a booking formats about ten dates
/// and slot labels (keys, fingerprint, answer), and `format!` cost ~1,300 instructions each
/// (benches/README.md §20, §25). None for other years (chrono formats those).
fn date_digits(date: NaiveDate) -> Option<[u8; 10]> {
    use chrono::Datelike;
    let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    let digit = |n: u32| b'0' + (n % 10) as u8;
    let (month, day) = (date.month(), date.day());
    Some([
        digit(year / 1000),
        digit(year / 100),
        digit(year / 10),
        digit(year),
        b'-',
        digit(month / 10),
        digit(month),
        b'-',
        digit(day / 10),
        digit(day),
    ])
}

/// Writes `date` as `%Y-%m-%d` into a formatter without building a `String`.
fn write_date(f: &mut fmt::Formatter<'_>, date: NaiveDate) -> fmt::Result {
    match date_digits(date) {
        Some(digits) => f.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?),
        None => write!(f, "{}", date.format("%Y-%m-%d")),
    }
}

/// A slot's start time: minutes after midnight, on the 15-minute grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotTime(u16);

impl SlotTime {
    pub const STEP_MINUTES: u16 = 15;

    pub fn from_minutes(minutes: u16) -> Option<Self> {
        (minutes < 24 * 60 && minutes % Self::STEP_MINUTES == 0).then_some(Self(minutes))
    }

    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let b = text.as_bytes();
        let shaped = b.len() == 5
            && b[2] == b':'
            && b[0].is_ascii_digit()
            && b[1].is_ascii_digit()
            && b[3].is_ascii_digit()
            && b[4].is_ascii_digit();
        if !shaped {
            return Err(bad("time must be HH:MM"));
        }
        let hours = u16::from(b[0] - b'0') * 10 + u16::from(b[1] - b'0');
        let minutes = u16::from(b[3] - b'0') * 10 + u16::from(b[4] - b'0');
        if hours > 23 || minutes > 59 {
            return Err(bad(format!("{text} is not a time of day (00:00-23:45)")));
        }
        Self::from_minutes(hours * 60 + minutes)
            .ok_or_else(|| bad("time must be on the 15-minute grid (minutes 00, 15, 30 or 45)"))
    }

    pub fn minutes(self) -> u16 {
        self.0
    }

    /// `HH:MM`, the text of `Display`, as bytes (no formatting machinery: a booking writes
    /// several).
    pub fn digits(self) -> [u8; 5] {
        let (h, m) = (self.0 / 60, self.0 % 60);
        let digit = |n: u16| b'0' + (n % 10) as u8;
        [digit(h / 10), digit(h), b':', digit(m / 10), digit(m)]
    }

    /// Every grid time from `self` to `last`, both included.
    pub fn through(self, last: SlotTime) -> impl Iterator<Item = SlotTime> {
        (self.0..=last.0)
            .step_by(usize::from(Self::STEP_MINUTES))
            .map(SlotTime)
    }
}

impl fmt::Display for SlotTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.digits()).map_err(|_| fmt::Error)?)
    }
}

/// One calendar day of one post and category: the unit slots are stored and listed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DayRef {
    pub post: PostId,
    pub category: CategoryId,
    pub date: NaiveDate,
}

impl DayRef {
    pub fn at(&self, time: SlotTime) -> SlotRef {
        SlotRef {
            post: self.post.clone(),
            category: self.category.clone(),
            date: self.date,
            time,
        }
    }
}

impl fmt::Display for DayRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.post.as_str())?;
        f.write_str("/")?;
        f.write_str(self.category.as_str())?;
        f.write_str("/")?;
        write_date(f, self.date)
    }
}

/// One 15-minute slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotRef {
    pub post: PostId,
    pub category: CategoryId,
    pub date: NaiveDate,
    pub time: SlotTime,
}

impl SlotRef {
    pub fn day(&self) -> DayRef {
        DayRef {
            post: self.post.clone(),
            category: self.category.clone(),
            date: self.date,
        }
    }
}

impl fmt::Display for SlotRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.post.as_str())?;
        f.write_str("/")?;
        f.write_str(self.category.as_str())?;
        f.write_str("/")?;
        write_date(f, self.date)?;
        f.write_str(" ")?;
        self.time.fmt(f)
    }
}

/// A slot's inventory. Invariant: `booked + held + remaining == capacity` (see `remaining`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    pub slot: SlotRef,
    pub capacity: u32,
    pub booked: u32,
    /// Seats taken by live holds (not yet confirmed, released or expired).
    pub held: u32,
    pub closed: bool,
}

impl SlotState {
    pub fn remaining(&self) -> u32 {
        self.capacity
            .saturating_sub(self.booked.saturating_add(self.held))
    }

    /// Seats a new booking could take now (0 when closed).
    pub fn bookable(&self) -> u32 {
        if self.closed {
            0
        } else {
            self.remaining()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Currency {
    Usd,
    Cny,
}

impl Currency {
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        match text.trim().to_ascii_uppercase().as_str() {
            "USD" => Ok(Currency::Usd),
            "CNY" => Ok(Currency::Cny),
            _ => Err(bad("currency must be USD or CNY")),
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Currency::Usd => "USD",
            Currency::Cny => "CNY",
        }
    }
}

/// An amount in minor units (cents, fen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    pub minor: u64,
    pub currency: Currency,
}

impl Money {
    /// Largest amount accepted: a receipt is one visa fee, not a wire transfer.
    pub const MAX_MINOR: u64 = 10_000_000; // 100000.00

    /// A positive decimal with at most two fraction digits: "185", "185.5", "1369.00".
    pub fn parse_amount(text: &str) -> Result<u64, FieldViolation> {
        let rule = "amount must be a positive decimal with at most 2 fraction digits, e.g. 185.00";
        let text = text.trim();
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty()
            || whole.len() > 9
            || fraction.len() > 2
            || (text.contains('.') && fraction.is_empty())
            || !whole
                .bytes()
                .chain(fraction.bytes())
                .all(|b| b.is_ascii_digit())
        {
            return Err(bad(rule));
        }
        let whole: u64 = whole.parse().map_err(|_| bad(rule))?;
        let mut cents: u64 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().map_err(|_| bad(rule))?
        };
        if fraction.len() == 1 {
            cents *= 10;
        }
        let minor = whole * 100 + cents;
        if minor == 0 {
            return Err(bad(rule));
        }
        if minor > Self::MAX_MINOR {
            return Err(bad("amount must be at most 100000.00"));
        }
        Ok(minor)
    }

    pub fn format_amount(self) -> String {
        format!("{}.{:02}", self.minor / 100, self.minor % 100)
    }
}

/// Proof that the MRV fee was paid for one passport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub number: ReceiptNumber,
    pub passport: PassportNumber,
    pub paid_at: DateTime<Utc>,
    pub amount: Money,
}

impl Receipt {
    /// A receipt can back a booking for 365 days from payment.
    pub const VALID_DAYS: i64 = 365;

    pub fn expires_at(&self) -> DateTime<Utc> {
        self.paid_at + Duration::days(Self::VALID_DAYS)
    }
}

/// One person in a booking group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Applicant {
    pub passport: PassportNumber,
    pub given_name: PersonName,
    pub surname: PersonName,
    pub ds160: Ds160Number,
    pub receipt: ReceiptNumber,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppointmentStatus {
    Booked,
    Cancelled,
}

impl AppointmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentStatus::Booked => "BOOKED",
            AppointmentStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "BOOKED" => Some(AppointmentStatus::Booked),
            "CANCELLED" => Some(AppointmentStatus::Cancelled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appointment {
    pub confirmation: ConfirmationNumber,
    pub slot: SlotRef,
    /// applicants[0] is the primary applicant.
    pub applicants: Vec<Applicant>,
    pub status: AppointmentStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Every reschedule, oldest first.
    pub history: Vec<super::lifecycle::Move>,
}

impl Appointment {
    pub fn includes(&self, passport: &PassportNumber) -> bool {
        self.applicants.iter().any(|a| &a.passport == passport)
    }

    pub fn seats(&self) -> u32 {
        u32::try_from(self.applicants.len()).unwrap_or(u32::MAX)
    }
}

/// RFC 3339 in UTC with second precision, the one format for instants on the wire and in stores.
pub fn format_instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, FieldViolation> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad("must be an RFC 3339 timestamp, e.g. 2025-01-06T09:30:00+08:00"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn dates_must_be_real_and_strictly_formatted() {
        assert_eq!(format_date(parse_date("2025-01-27").unwrap()), "2025-01-27");
        assert!(parse_date("2024-02-29").is_ok());
        for bad in [
            "2025-02-30",
            "2025-02-29",
            "2025-13-01",
            "2025-1-27",
            "27/01/2025",
            "2025-01-27T00:00",
            "",
            "２０２５-01-27",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        // The fast paths agree with chrono's `%Y-%m-%d` both ways.
        for text in [
            "0000-01-01",
            "0999-12-31",
            "2030-01-07",
            "9999-12-31",
            "2024-02-29",
        ] {
            let d = parse_date(text).unwrap();
            assert_eq!(d, NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap());
            assert_eq!(format_date(d), d.format("%Y-%m-%d").to_string());
        }
        let far = NaiveDate::from_ymd_opt(12_345, 6, 7).unwrap();
        assert_eq!(format_date(far), far.format("%Y-%m-%d").to_string());
    }

    #[test]
    fn times_are_on_the_fifteen_minute_grid_within_the_day() {
        assert_eq!(SlotTime::parse("08:15").unwrap().to_string(), "08:15");
        assert_eq!(SlotTime::parse("23:45").unwrap().minutes(), 23 * 60 + 45);
        for bad in [
            "24:00", "08:10", "8:15", "08:60", "0815", "-1:00", "08:15:00", "",
        ] {
            assert!(SlotTime::parse(bad).is_err(), "{bad}");
        }
        let times: Vec<String> = SlotTime::parse("08:00")
            .unwrap()
            .through(SlotTime::parse("08:45").unwrap())
            .map(|t| t.to_string())
            .collect();
        assert_eq!(times, ["08:00", "08:15", "08:30", "08:45"]);
    }

    #[test]
    fn ds160_numbers_are_aa_and_eight_letters_or_digits() {
        assert_eq!(
            Ds160Number::parse("aa00abcdef").unwrap().as_str(),
            "AA00ABCDEF"
        );
        for bad in ["AB00ABCDEF", "AA00ABCDE", "AA00ABCDEFG", "AA00ABCDE-", ""] {
            assert!(Ds160Number::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_latin_letters_with_single_separators() {
        assert_eq!(
            PersonName::parse(" Mary-Jane ").unwrap().as_str(),
            "MARY-JANE"
        );
        assert!(PersonName::parse("O'Brien").is_ok());
        assert!(PersonName::parse("Xiao Ming").is_ok());
        for bad in [
            "",
            "  ",
            "张",
            "Wei2",
            "Wei  Ming",
            "-Wei",
            "Wei-",
            "Zoë",
            "Wei\tMing",
            "Wei\u{0}",
        ] {
            assert!(PersonName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(PersonName::parse(&"A".repeat(65)).is_err());
    }

    #[test]
    fn passports_receipts_and_request_ids_have_bounded_alphabets() {
        assert_eq!(
            PassportNumber::parse("e1234567").unwrap().as_str(),
            "E1234567"
        );
        for bad in ["E12", "E1234567-", "Е1234567", &"E".repeat(21)] {
            assert!(PassportNumber::parse(bad).is_err(), "{bad}");
        }
        assert!(ReceiptNumber::parse("R12345").is_ok());
        assert!(ReceiptNumber::parse("R1234").is_err());
        assert!(RequestId::parse("checkout:7f3a-01").is_ok());
        assert!(RequestId::parse("a b").is_err());
        assert!(RequestId::parse(&"r".repeat(129)).is_err());
    }

    #[test]
    fn confirmation_numbers_are_unguessable_and_typable() {
        // 30 symbols, 14 of them: log2(30^14) > 68 bits.
        assert!(
            (ConfirmationNumber::LEN as f64) * (ConfirmationNumber::ALPHABET.len() as f64).log2()
                >= 60.0
        );
        for ambiguous in b"01ILOU" {
            assert!(!ConfirmationNumber::ALPHABET.contains(ambiguous));
        }
        let many: HashSet<_> = (0..10_000)
            .map(|_| ConfirmationNumber::generate())
            .collect();
        assert_eq!(many.len(), 10_000);
        for c in many.iter().take(10) {
            assert_eq!(
                &ConfirmationNumber::parse(&c.as_str().to_ascii_lowercase()).unwrap(),
                c
            );
        }
        assert!(ConfirmationNumber::parse("ABCDEFGHJKMNP0").is_err());
    }

    #[test]
    fn amounts_are_positive_with_two_decimals_at_most() {
        assert_eq!(Money::parse_amount("185.00").unwrap(), 18500);
        assert_eq!(Money::parse_amount("1369").unwrap(), 136900);
        assert_eq!(Money::parse_amount("0.5").unwrap(), 50);
        for bad in [
            "0",
            "0.00",
            "-1",
            "1.234",
            "1.",
            ".5",
            "1e3",
            "",
            "100000.01",
        ] {
            assert!(Money::parse_amount(bad).is_err(), "{bad}");
        }
        let m = Money {
            minor: 136900,
            currency: Currency::Cny,
        };
        assert_eq!(m.format_amount(), "1369.00");
    }
}
