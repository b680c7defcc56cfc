//! Parsing the ISO 8601 times clients put in list filters (`created_at=gt:<time>`), the way
//! Glance's `oslo_utils.timeutils.parse_isotime` reads them. Sluice prints times with
//! [`format_time`](super::format_time); this is the other direction, with sub-second precision
//! so that `gt:…T10:00:00.5Z` compares as Glance's microsecond columns would. The parsing is
//! `jiff`'s (Temporal's ISO 8601 grammar).

use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use crate::meta::Timestamp;

/// Nanoseconds in a second.
#[cfg(test)]
const NANOS_PER_SEC: i128 = 1_000_000_000;

/// An instant read from ISO 8601: nanoseconds since the Unix epoch (negative before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IsoTime(i128);

impl IsoTime {
    /// The instant of a stored timestamp (whole seconds).
    pub fn from_timestamp(ts: Timestamp) -> IsoTime {
        IsoTime(i128::from(ts).saturating_mul(1_000_000_000))
    }
}

/// Parses `YYYY-MM-DD`, optionally followed by `T` (or a space) and `HH:MM[:SS[.fraction]]`,
/// then optionally `Z` or an offset `±HH`, `±HHMM` or `±HH:MM`; a time without a zone is UTC.
///
/// `None` for anything else, for impossible dates and times (`2026-02-30`, `24:00`), for a
/// fraction of more than 9 digits, and for instants outside jiff's range (years -9999 to
/// 9999).
pub fn parse_isotime(text: &str) -> Option<IsoTime> {
    // With a zone it names an instant; without one it is a civil time, read as UTC.
    let instant = match text.parse::<jiff::Timestamp>() {
        Ok(instant) => instant,
        Err(_) => text
            .parse::<DateTime>()
            .ok()?
            .to_zoned(TimeZone::UTC)
            .ok()?
            .timestamp(),
    };
    Some(IsoTime(instant.as_nanosecond()))
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
        // jiff's instants end at 9999-12-30T22:00:00Z.
        for ts in [0, 951_782_400, 1_795_541_301, 253_402_128_000] {
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
            parse_isotime("2026-11-24T17:28:21.123456789Z"),
            Some(IsoTime(base + 123_456_789))
        );
        // More digits than nanoseconds: refused (Python's iso8601 drops them).
        assert_eq!(parse_isotime("2026-11-24T17:28:21.1234567891Z"), None);
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
