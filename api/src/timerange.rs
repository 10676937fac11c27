//! The time window of a history query, computed exactly as datagrepper 0.9.7 does
//! (`datagrepper.util.assemble_timerange` and the defaulting in `datagrepper.app.raw`), so that
//! the `start`, `end` and `delta` echoed in `arguments` — and the messages selected — are the
//! same numbers a datagrepper client gets today.
//!
//! Why whole microseconds: datagrepper turns every bound into a Python `datetime`, which holds
//! microseconds (rounded half to even), and datanommer stores each message's timestamp the same
//! way. Doing the arithmetic on integer microseconds reproduces its floats bit for bit.
//!
//! Where we differ, on purpose:
//! - with no `start`, `end` or `delta`, the window is the last [`DEFAULT_QUERY_DELTA_SECONDS`]
//!   (Fedora's production datagrepper setting), never the whole history;
//! - a window longer than [`MAX_RANGE_SECONDS`], an inverted one, a negative `delta`, or `start`,
//!   `end` and `delta` all together (a `TypeError` in datagrepper) is a 400.

use crate::error::ApiError;
use crate::params::parse_time;

/// The window when the request names none: datagrepper's `DEFAULT_QUERY_DELTA` as Fedora runs
/// it (`DEFAULT_QUERY_DELTA = 3600` in fedora-infra/ansible's datagrepper.cfg.py).
pub const DEFAULT_QUERY_DELTA_SECONDS: f64 = 3600.0;

/// The longest window one request may cover: 31 days. Longer windows are split by the client;
/// analysts with bigger questions query ClickHouse directly.
pub const MAX_RANGE_SECONDS: f64 = 31.0 * 86400.0;

/// datagrepper's window when only `end` is given: the 600 s before it.
const END_ONLY_SPAN_MICROS: i64 = 600 * MICROS_PER_SECOND;

const MICROS_PER_SECOND: i64 = 1_000_000;

/// The resolved window, as datagrepper reports it in `arguments`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeRange {
    pub start: f64,
    pub end: f64,
    pub delta: f64,
}

impl TimeRange {
    /// The inclusive bounds in whole microseconds, as datanommer compares them.
    pub fn micros(&self) -> (i64, i64) {
        (to_micros(self.start), to_micros(self.end))
    }
}

/// The raw `start`, `end` and `delta` parameters of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeParameters<'a> {
    pub start: Option<&'a str>,
    pub end: Option<&'a str>,
    pub delta: Option<&'a str>,
}

/// Resolves the window of a request at `now_micros` (epoch microseconds).
pub fn assemble(parameters: RangeParameters<'_>, now_micros: i64) -> Result<TimeRange, ApiError> {
    let start = parse_bound("start", parameters.start)?;
    let end = parse_bound("end", parameters.end)?;
    let delta = parse_delta(parameters.delta)?;
    let range = match delta {
        Some(delta) => with_delta(start, end, delta, now_micros)?,
        None if start.is_none() && end.is_none() => {
            with_delta(None, None, DEFAULT_QUERY_DELTA_SECONDS, now_micros)?
        }
        None => without_delta(start, end, now_micros),
    };
    check_bounds(&range, parameters.delta.is_some())?;
    Ok(range)
}

/// datagrepper's `elif delta:` branch.
fn with_delta(
    start: Option<f64>,
    end: Option<f64>,
    delta: f64,
    now_micros: i64,
) -> Result<TimeRange, ApiError> {
    let delta_micros = to_micros(delta);
    let (start, end) = match (start, end) {
        (None, None) => (
            from_micros(now_micros - delta_micros),
            from_micros(now_micros),
        ),
        // datagrepper keeps `start` as given here, unrounded.
        (Some(start), None) => (start, from_micros(to_micros(start + delta))),
        (None, Some(end)) => {
            let end_micros = to_micros(end);
            (
                from_micros(end_micros - delta_micros),
                from_micros(end_micros),
            )
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_parameter(
                "delta",
                "give at most two of start, end and delta",
            ))
        }
    };
    Ok(TimeRange {
        start,
        end,
        delta: end - start,
    })
}

/// datagrepper's `else:` branch: `end` defaults to now, `start` to 600 s before `end`.
fn without_delta(start: Option<f64>, end: Option<f64>, now_micros: i64) -> TimeRange {
    let end_micros = match end {
        Some(end) => to_micros(end),
        None => now_micros,
    };
    let start_micros = match start {
        Some(start) => to_micros(start),
        None => end_micros - END_ONLY_SPAN_MICROS,
    };
    TimeRange {
        start: from_micros(start_micros),
        end: from_micros(end_micros),
        delta: from_micros(end_micros - start_micros),
    }
}

fn check_bounds(range: &TimeRange, delta_given: bool) -> Result<(), ApiError> {
    let parameter = if delta_given { "delta" } else { "start" };
    if range.end < range.start {
        return Err(ApiError::bad_parameter(
            parameter,
            format!(
                "the window ends ({}) before it starts ({})",
                range.end, range.start
            ),
        ));
    }
    if range.end - range.start > MAX_RANGE_SECONDS {
        return Err(ApiError::bad_parameter(
            parameter,
            format!(
                "the window is {} s long; at most {MAX_RANGE_SECONDS} s (31 days) per request",
                range.end - range.start
            ),
        ));
    }
    Ok(())
}

fn parse_bound(parameter: &str, raw: Option<&str>) -> Result<Option<f64>, ApiError> {
    match raw {
        None => Ok(None),
        Some(text) if text.trim().is_empty() => Err(ApiError::bad_parameter(
            parameter,
            format!("{parameter} is empty"),
        )),
        Some(text) => parse_time(parameter, text).map(Some),
    }
}

fn parse_delta(raw: Option<&str>) -> Result<Option<f64>, ApiError> {
    let Some(text) = raw else {
        return Ok(None);
    };
    let Ok(seconds) = text.trim().parse::<f64>() else {
        return Err(ApiError::bad_parameter(
            "delta",
            format!("{text:?} is not a number of seconds"),
        ));
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(ApiError::bad_parameter(
            "delta",
            format!("{text:?} is not a non-negative number of seconds"),
        ));
    }
    // Refused here, before any arithmetic, so that every later computation stays in range.
    if seconds > MAX_RANGE_SECONDS {
        return Err(ApiError::bad_parameter(
            "delta",
            format!("{seconds} s is longer than {MAX_RANGE_SECONDS} s (31 days)"),
        ));
    }
    Ok(Some(seconds))
}

/// Epoch seconds to whole microseconds, as Python's `datetime.fromtimestamp` rounds them:
/// the fraction, times a million, rounded half to even. Callers pass validated times (within
/// 0..2^32 s, give or take a bounded delta), far inside what an `i64` of microseconds holds.
pub fn to_micros(seconds: f64) -> i64 {
    debug_assert!(seconds.abs() < 1e12, "{seconds} s is not a validated time");
    let whole = seconds.trunc();
    let fraction_micros = ((seconds - whole) * 1e6).round_ties_even();
    whole as i64 * MICROS_PER_SECOND + fraction_micros as i64
}

/// Whole microseconds to epoch seconds, as Python's `datetime.timestamp()` computes them.
pub fn from_micros(micros: i64) -> f64 {
    micros as f64 / 1e6
}

/// The `timestamp` datagrepper shows for a message: its stored (microsecond) time, truncated
/// to the second by `time.mktime(datetime.timetuple())` in fedmsg's JSON encoder.
pub fn datagrepper_timestamp(seconds: f64) -> f64 {
    to_micros(seconds).div_euclid(MICROS_PER_SECOND) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    // The expected numbers below were read from a real datagrepper 0.9.7.
    const NOW: i64 = 1_795_373_894_197_569;

    fn range(start: Option<&str>, end: Option<&str>, delta: Option<&str>) -> Option<TimeRange> {
        assemble(RangeParameters { start, end, delta }, NOW).ok()
    }

    #[test]
    fn end_alone_means_the_600_seconds_before_it() {
        let resolved = range(None, Some("1344350850.886738"), None).unwrap();
        assert_eq!(resolved.start, 1344350250.886738);
        assert_eq!(resolved.end, 1344350850.886738);
        assert_eq!(resolved.delta, 600.0);
    }

    #[test]
    fn start_and_delta_extend_forward() {
        let resolved = range(Some("1344344053"), None, Some("1000")).unwrap();
        assert_eq!(
            (resolved.start, resolved.end, resolved.delta),
            (1344344053.0, 1344345053.0, 1000.0)
        );
    }

    #[test]
    fn delta_alone_ends_now() {
        let resolved = range(None, None, Some("100")).unwrap();
        assert_eq!(resolved.end, 1795373894.197569);
        assert_eq!(resolved.start, 1795373794.197569);
        assert_eq!(resolved.delta, 100.0);
        let default = range(None, None, None).unwrap();
        assert_eq!(default.delta, DEFAULT_QUERY_DELTA_SECONDS);
    }

    #[test]
    fn bounds_are_rounded_to_microseconds() {
        let resolved = range(Some("1344344053.2337211"), Some("1344350000"), None).unwrap();
        assert_eq!(resolved.start, 1344344053.233721);
        assert_eq!(resolved.micros(), (1344344053233721, 1344350000000000));
        assert_eq!(datagrepper_timestamp(1344350850.886738), 1344350850.0);
        assert_eq!(datagrepper_timestamp(1344350850.9999997), 1344350851.0);
    }

    #[test]
    fn over_specified_inverted_or_huge_windows_are_refused() {
        assert!(range(Some("1344344053"), Some("1344350851"), Some("5")).is_none());
        assert!(range(Some("5"), Some("1"), None).is_none());
        assert!(range(None, None, Some("-5")).is_none());
        assert!(range(Some("0"), Some("2000000000"), None).is_none());
        assert!(range(None, None, Some("inf")).is_none());
        assert!(range(None, None, Some("1e308")).is_none());
        assert!(range(Some("4294967295"), None, Some("1e300")).is_none());
        assert!(range(Some(""), None, None).is_none());
        assert!(range(Some("abc"), None, None).is_none());
        assert!(range(None, None, Some("2678400")).is_some());
        assert!(range(None, None, Some("2678401")).is_none());
    }
}
