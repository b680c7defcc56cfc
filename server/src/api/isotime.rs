//! Parsing the ISO 8601 times clients put in list filters (`created_at=gt:<time>`), the way
//! Glance's `oslo_utils.timeutils.parse_isotime` reads them. Sluice prints times with
//! [`format_time`](super::format_time); this is the other direction, with sub-second precision
//! so that `gt:…T10:00:00.5Z` compares as Glance's microsecond columns would.

use crate::meta::Timestamp;

/// Nanoseconds in a second.
const NANOS_PER_SEC: i128 = 1_000_000_000;

/// Seconds in a day.
const SECS_PER_DAY: i64 = 86_400;

/// Digits of a fraction of a second that count (nanoseconds); further digits are ignored, as
/// Python's `iso8601` ignores those beyond microseconds.
const MAX_FRACTION_DIGITS: usize = 9;

/// An instant read from ISO 8601: nanoseconds since the Unix epoch (negative before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IsoTime(i128);

impl IsoTime {
    /// The instant of a stored timestamp (whole seconds).
    pub fn from_timestamp(ts: Timestamp) -> IsoTime {
        IsoTime(i128::from(ts) * NANOS_PER_SEC)
    }
}

/// Parses `YYYY-MM-DD`, optionally followed by `T` (or a space) and `HH:MM[:SS[.fraction]]`,
/// then optionally `Z` or an offset `±HH`, `±HHMM` or `±HH:MM`; a time without a zone is UTC.
///
/// `None` for anything else, and for impossible dates and times (`2026-02-30`, `24:00`).
pub fn parse_isotime(text: &str) -> Option<IsoTime> {
    let days = parse_date(text.get(..10)?)?;
    let rest = text.get(10..)?;
    let (clock_nanos, offset_secs) = if rest.is_empty() {
        (0, 0)
    } else {
        let rest = rest.strip_prefix(['T', 't', ' '])?;
        let zone_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
        let (clock, zone) = rest.split_at(zone_at);
        (parse_clock(clock)?, parse_zone(zone)?)
    };
    let secs = i128::from(days) * i128::from(SECS_PER_DAY) - i128::from(offset_secs);
    Some(IsoTime(secs * NANOS_PER_SEC + clock_nanos))
}

/// `YYYY-MM-DD` → days since 1970-01-01.
fn parse_date(date: &str) -> Option<i64> {
    let mut parts = date.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || year.len() != 4 {
        return None;
    }
    let (year, month, day) = (digits(year)?, two_digits(month)?, two_digits(day)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// `HH:MM`, `HH:MM:SS` or `HH:MM:SS.fraction` → nanoseconds since midnight.
fn parse_clock(clock: &str) -> Option<i128> {
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, fraction)) => (hms, Some(fraction)),
        None => (clock, None),
    };
    let mut parts = hms.split(':');
    let (hour, minute) = (two_digits(parts.next()?)?, two_digits(parts.next()?)?);
    let second = match parts.next() {
        Some(s) => two_digits(s)?,
        None if fraction.is_none() => 0,
        None => return None,
    };
    if parts.next().is_some() || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let nanos = match fraction {
        None => 0,
        Some(f) => {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let kept = f.get(..MAX_FRACTION_DIGITS).unwrap_or(f);
            let scale = MAX_FRACTION_DIGITS
                .checked_sub(kept.len())
                .and_then(|n| u32::try_from(n).ok())
                .map(|n| 10i128.pow(n))?;
            kept.parse::<i128>().ok()? * scale
        }
    };
    let secs = hour * 3600 + minute * 60 + second;
    Some(i128::from(secs) * NANOS_PER_SEC + nanos)
}

/// `""`, `Z`, `±HH`, `±HHMM` or `±HH:MM` → seconds east of UTC.
fn parse_zone(zone: &str) -> Option<i64> {
    if zone.is_empty() || zone.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let sign = match zone.get(..1)? {
        "+" => 1,
        "-" => -1,
        _ => return None,
    };
    let hm = zone.get(1..)?;
    let (hours, minutes) = match hm.len() {
        2 => (hm, "00"),
        4 => (hm.get(..2)?, hm.get(2..)?),
        5 if hm.get(2..3) == Some(":") => (hm.get(..2)?, hm.get(3..)?),
        _ => return None,
    };
    let (hours, minutes) = (two_digits(hours)?, two_digits(minutes)?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

/// A non-empty run of ASCII digits (at most 18, so it fits) as a number.
fn digits(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Exactly two ASCII digits as a number.
fn two_digits(text: &str) -> Option<i64> {
    if text.len() != 2 {
        return None;
    }
    digits(text)
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::format_time;

    /// Seconds of a parsed time that falls on a whole second.
    fn secs(text: &str) -> i64 {
        let IsoTime(nanos) = parse_isotime(text).unwrap_or_else(|| panic!("{text} did not parse"));
        assert_eq!(nanos % NANOS_PER_SEC, 0, "{text}");
        i64::try_from(nanos / NANOS_PER_SEC).unwrap()
    }

    #[test]
    fn test_parse_isotime_inverts_format_time() {
        for ts in [0, 951_782_400, 1_795_541_301, 253_402_300_799] {
            assert_eq!(secs(&format_time(ts)), ts, "{}", format_time(ts));
        }
    }

    #[test]
    fn test_parse_isotime_accepted_forms_same_instant() {
        for text in [
            "2026-11-24T17:28:21Z",
            "2026-11-24t17:28:21z",
            "2026-11-24 17:28:21",
            "2026-11-24T17:28:21",
            "2026-11-24T17:28:21.000000",
            "2026-11-24T19:28:21+02:00",
            "2026-11-24T19:28:21+0200",
            "2026-11-24T15:28:21-02",
        ] {
            assert_eq!(secs(text), 1_795_541_301, "{text}");
        }
        assert_eq!(secs("2026-11-24"), 1_795_478_400);
        assert_eq!(secs("2026-11-24T17:28"), 1_795_541_280);
        assert_eq!(secs("1969-12-31T23:59:59Z"), -1);
    }

    #[test]
    fn test_parse_isotime_fraction_kept_to_nanoseconds() {
        let IsoTime(base) = IsoTime::from_timestamp(1_795_541_301);
        assert_eq!(
            parse_isotime("2026-11-24T17:28:21.5Z"),
            Some(IsoTime(base + 500_000_000))
        );
        assert_eq!(
            parse_isotime("2026-11-24T17:28:21.12345678912345678912345Z"),
            Some(IsoTime(base + 123_456_789))
        );
        assert!(parse_isotime("2026-11-24T17:28:21.000001Z") > Some(IsoTime(base)));
    }

    #[test]
    fn test_parse_isotime_malformed_or_impossible_none() {
        for text in [
            "",
            "yesterday",
            "2026-11",
            "2026-11-24T",
            "2026-11-24X17:28:21",
            "26-11-24",
            "2026-13-01",
            "2026-02-29",
            "2026-04-31",
            "2026-11-00",
            "2026-11-24T24:00:00",
            "2026-11-24T17:60:00",
            "2026-11-24T17:28:61",
            "2026-11-24T17:28:21.Z",
            "2026-11-24T17:28.5",
            "2026-11-24T17:28:21+2",
            "2026-11-24T17:28:21+02:60",
            "2026-11-24T17:28:21Z+01",
            "2026-11-24T17:28:21 UTC",
            "2026-11-24T1:28:21",
            "+026-11-24",
            "2026-\u{e9}1-24",
        ] {
            assert_eq!(parse_isotime(text), None, "{text:?}");
        }
        assert!(parse_isotime("2024-02-29").is_some());
    }
}
