//! Times given by people: on command lines and in API parameters.
//!
//! One parser for every service, so that `--start`, `--since` and `?start=` accept the same
//! forms: epoch seconds, RFC 3339 / ISO 8601 (with an offset, or without one meaning UTC), or a
//! date alone meaning its midnight UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// Latest plausible time, 2200-01-01: anything later is a unit mistake (milliseconds).
pub const MAX_PLAUSIBLE_TIME: f64 = 7_258_118_400.0;

/// Why a text is not a time we take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidTime {
    /// Neither epoch seconds nor ISO 8601.
    #[error("invalid time {text:?}: expected epoch seconds or ISO 8601 (e.g. 2019-08-06T19:06:17Z), between 1970 and 2200")]
    Unreadable { text: String },
    /// A time, but before 1970 or after 2200 (a unit mistake, a placeholder such as year 9999).
    #[error("time {text:?} is out of the supported range: 1970 to 2200")]
    OutOfRange { text: String },
}

/// Parses a command-line time: epoch seconds (`1565118377`, `1565118377.5`) or ISO 8601
/// (`2019-08-06T18:26:17Z`, with an offset, without one meaning UTC, or a date alone meaning
/// its midnight UTC).
pub fn parse_time(text: &str) -> Result<f64, InvalidTime> {
    let trimmed = text.trim();
    let invalid = || InvalidTime::Unreadable {
        text: text.to_string(),
    };
    let seconds = if let Ok(number) = trimmed.parse::<f64>() {
        number
    } else if let Ok(time) = DateTime::parse_from_rfc3339(trimmed) {
        time.timestamp() as f64 + f64::from(time.timestamp_subsec_micros()) / 1e6
    } else if let Ok(time) = NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M:%S%.f") {
        let time = time.and_utc();
        time.timestamp() as f64 + f64::from(time.timestamp_subsec_micros()) / 1e6
    } else if let Ok(date) = NaiveDate::parse_from_str(trimmed, "%Y-%m-%d") {
        let Some(midnight) = date.and_hms_opt(0, 0, 0) else {
            return Err(invalid());
        };
        midnight.and_utc().timestamp() as f64
    } else {
        return Err(invalid());
    };
    if !seconds.is_finite() {
        return Err(invalid());
    }
    if !(0.0..=MAX_PLAUSIBLE_TIME).contains(&seconds) {
        return Err(InvalidTime::OutOfRange {
            text: text.to_string(),
        });
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_epoch_seconds_or_iso_8601() {
        assert_eq!(parse_time("1565118377"), Ok(1565118377.0));
        assert_eq!(parse_time(" 1565118377.5 "), Ok(1565118377.5));
        assert_eq!(parse_time("2019-08-06T19:06:17Z"), Ok(1565118377.0));
        assert_eq!(parse_time("2019-08-06T21:06:17+02:00"), Ok(1565118377.0));
        assert_eq!(parse_time("2019-08-06T19:06:17.25"), Ok(1565118377.25));
        assert_eq!(parse_time("2019-08-06"), Ok(1565049600.0));
        for bad in ["", "yesterday", "NaN", "2019-13-01"] {
            assert!(
                matches!(parse_time(bad), Err(InvalidTime::Unreadable { .. })),
                "{bad:?} must be rejected as unreadable"
            );
        }
        for out_of_range in [
            "-5",
            "1e12",
            "9999-12-31T23:59:59Z",
            "1969-12-31T23:59:59Z",
            "9999-01-01",
        ] {
            let refused = parse_time(out_of_range);
            assert!(
                matches!(refused, Err(InvalidTime::OutOfRange { .. })),
                "{out_of_range:?}: {refused:?}"
            );
        }
        let year_9999 = parse_time("9999-12-31T23:59:59+00:00").expect_err("out of range");
        assert_eq!(
            year_9999.to_string(),
            "time \"9999-12-31T23:59:59+00:00\" is out of the supported range: 1970 to 2200"
        );
    }
}
