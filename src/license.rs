//! Licenses: what `license/<name>` holds, validated, with its expiry.
//!
//! A license is a JSON object:
//!
//! ```json
//! {"owner": "Acme Ltd", "seats": 25, "expires": "2027-12-31"}
//! ```
//!
//! - `owner`: who the license is for, a non-empty string (at most 256 bytes);
//! - `seats`: how many seats it grants, an integer from 1 to 1,000,000;
//! - `expires`: the last day it is valid, `YYYY-MM-DD` (UTC).
//!
//! Further fields (a signature, a product name) are kept as they are. Installing an
//! expired license is refused; showing one reports the days left, or that it expired.
//!
//! ```
//! use spectrum::license::{Date, License};
//!
//! let license = License::from_json_bytes(br#"{"owner":"Acme","seats":5,"expires":"2030-01-31"}"#).unwrap();
//! let today: Date = "2030-01-01".parse().unwrap();
//! assert_eq!(license.days_left(today), 30);
//! assert!(!license.is_expired(today));
//! assert!(license.is_expired("2030-02-01".parse().unwrap()));
//!
//! let err = License::from_json_bytes(br#"{"owner":"Acme","seats":5,"expires":"2030-02-30"}"#).unwrap_err();
//! assert_eq!(err.field, "expires");
//! ```

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

/// The name a license is stored under when none is given.
pub const DEFAULT_NAME: &str = "main";
/// Longest accepted `owner`, in bytes.
pub const MAX_OWNER_LEN: usize = 256;
/// Most seats a license may grant.
pub const MAX_SEATS: u64 = 1_000_000;

/// A calendar date (proleptic Gregorian, UTC), as `YYYY-MM-DD`, from year 1 to
/// 9999. The calendar arithmetic is [`jiff`]'s; this type only fixes the one text
/// form a license accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(jiff::civil::Date);

impl Date {
    /// The date `year`-`month`-`day`, when it exists (years 1 to 9999).
    pub fn new(year: i16, month: i8, day: i8) -> Option<Self> {
        if !(1..=9999).contains(&year) {
            return None;
        }
        jiff::civil::Date::new(year, month, day).ok().map(Self)
    }

    /// Today, in UTC, by the system clock.
    pub fn today() -> Self {
        Self(jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date())
    }

    /// Whole days from `earlier` to this date (negative when `earlier` is later).
    pub fn days_since(self, earlier: Date) -> i64 {
        self.0.duration_since(earlier.0).as_secs() / 86_400
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.0.year(), self.0.month(), self.0.day())
    }
}

/// Why text is not a [`Date`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not {what}")]
pub struct InvalidDate {
    /// The text (at most its first 32 bytes).
    pub text: String,
    /// What it should have been.
    pub what: &'static str,
}

impl FromStr for Date {
    type Err = InvalidDate;

    /// Parses exactly `YYYY-MM-DD` (jiff alone would also take other ISO 8601 forms).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |what| InvalidDate { text: cut(s, 32).to_owned(), what };
        let b = s.as_bytes();
        let shape = b.len() == 10
            && b.iter()
                .enumerate()
                .all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() });
        if !shape {
            return Err(bad("a date of the form YYYY-MM-DD"));
        }
        let num =
            |r: std::ops::Range<usize>| s[r].parse::<i16>().map_err(|_| bad("a date of the form YYYY-MM-DD"));
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (Ok(month), Ok(day)) = (i8::try_from(month), i8::try_from(day)) else {
            return Err(bad("a calendar date"));
        };
        Self::new(year, month, day).ok_or_else(|| bad("a calendar date"))
    }
}

/// Why a license document was refused: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("license field {field}: {reason}")]
pub struct LicenseError {
    /// The field (`"owner"`, `"seats"`, `"expires"`, or `"license"` for the document).
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl LicenseError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// A validated license.
#[derive(Debug, Clone, PartialEq)]
pub struct License {
    /// Who it is for.
    pub owner: String,
    /// How many seats it grants.
    pub seats: u32,
    /// The last day it is valid.
    pub expires: Date,
    /// The whole document, further fields included.
    pub document: Map<String, Value>,
}

impl License {
    /// Decodes and validates a license document (expiry is not checked here: see
    /// [`License::is_expired`]).
    ///
    /// # Errors
    ///
    /// A [`LicenseError`] naming the field at fault.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, LicenseError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| LicenseError::new("license", format!("expected a JSON object: {e}")))?;
        let Value::Object(document) = value else {
            return Err(LicenseError::new("license", "expected a JSON object"));
        };
        let owner = match document.get("owner") {
            None | Some(Value::Null) => return Err(LicenseError::new("owner", "missing")),
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(LicenseError::new("owner", "must not be empty"));
            }
            Some(Value::String(s)) if s.len() > MAX_OWNER_LEN => {
                return Err(LicenseError::new(
                    "owner",
                    format!("{} bytes; at most {MAX_OWNER_LEN} are allowed", s.len()),
                ));
            }
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                return Err(LicenseError::new("owner", "holds a control character"));
            }
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(LicenseError::new("owner", "expected a string")),
        };
        let seats = match document.get("seats") {
            None | Some(Value::Null) => return Err(LicenseError::new("seats", "missing")),
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_SEATS).contains(&n) => n as u32,
                _ => {
                    return Err(LicenseError::new(
                        "seats",
                        format!(
                            "expected an integer from 1 to {MAX_SEATS}, found {}",
                            cut(&v.to_string(), 32)
                        ),
                    ));
                }
            },
        };
        let expires = match document.get("expires") {
            None | Some(Value::Null) => return Err(LicenseError::new("expires", "missing")),
            Some(Value::String(s)) => {
                s.parse::<Date>().map_err(|e| LicenseError::new("expires", e.to_string()))?
            }
            Some(_) => return Err(LicenseError::new("expires", "expected a date string YYYY-MM-DD")),
        };
        Ok(Self { owner, seats, expires, document })
    }

    /// Days from `today` to the expiry date: 0 on the last valid day, negative once
    /// expired.
    pub fn days_left(&self, today: Date) -> i64 {
        self.expires.days_since(today)
    }

    /// Whether the license has expired by `today`.
    pub fn is_expired(&self, today: Date) -> bool {
        self.days_left(today) < 0
    }

    /// Checks that the license is still valid `today`.
    ///
    /// # Errors
    ///
    /// A [`LicenseError`] for field `expires` when it has expired.
    pub fn check_current(&self, today: Date) -> Result<(), LicenseError> {
        if self.is_expired(today) {
            return Err(LicenseError::new(
                "expires",
                format!(
                    "the license expired on {} ({} ago, today is {today})",
                    self.expires,
                    days(-self.days_left(today))
                ),
            ));
        }
        Ok(())
    }
}

fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `n` days in words: "1 day", "2 days".
pub(crate) fn days(n: i64) -> String {
    format!("{n} day{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_whole_days_and_print_as_they_parse() {
        let epoch: Date = "1970-01-01".parse().unwrap();
        for (text, days) in [
            ("1970-01-01", 0),
            ("2000-03-01", 11_017),
            ("1969-12-31", -1),
            ("2024-02-29", 19_782),
            ("0001-01-01", -719_162),
        ] {
            let date: Date = text.parse().unwrap();
            assert_eq!(date.days_since(epoch), days, "{text}");
            assert_eq!(date.to_string(), text);
        }
        assert_eq!(Date::new(2024, 2, 30), None);
        assert_eq!(Date::new(0, 1, 1), None, "years start at 1");
    }

    #[test]
    fn malformed_dates_are_refused() {
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "24-01-01",
            "2024/01/01",
            "+024-01-01",
            "20240101",
            "0000-01-01",
            "",
        ] {
            assert!(bad.parse::<Date>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: [(&[u8], &str); 8] = [
            (b"[1]", "license"),
            (b"not json", "license"),
            (br#"{"seats":1,"expires":"2030-01-01"}"#, "owner"),
            (br#"{"owner":"","seats":1,"expires":"2030-01-01"}"#, "owner"),
            (br#"{"owner":"a","seats":0,"expires":"2030-01-01"}"#, "seats"),
            (br#"{"owner":"a","seats":"many","expires":"2030-01-01"}"#, "seats"),
            (br#"{"owner":"a","seats":1}"#, "expires"),
            (br#"{"owner":"a","seats":1,"expires":"next year"}"#, "expires"),
        ];
        for (doc, field) in cases {
            let err = License::from_json_bytes(doc).unwrap_err();
            assert_eq!(err.field, field, "{}: {err}", String::from_utf8_lossy(doc));
        }
    }

    #[test]
    fn expiry_is_counted_in_whole_days_and_an_expired_license_is_refused() {
        let license =
            License::from_json_bytes(br#"{"owner":"a","seats":3,"expires":"2030-06-15","plan":"gold"}"#)
                .unwrap();
        assert_eq!(license.document["plan"], "gold");
        let day = |s: &str| s.parse::<Date>().unwrap();
        assert_eq!(license.days_left(day("2030-06-15")), 0);
        assert!(license.check_current(day("2030-06-15")).is_ok());
        let err = license.check_current(day("2030-06-17")).unwrap_err();
        assert_eq!(err.field, "expires");
        assert!(err.to_string().contains("expired on 2030-06-15 (2 days ago"), "{err}");
        assert!(Date::today() > day("2020-01-01"));
    }
}
