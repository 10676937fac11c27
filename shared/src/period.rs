//! Rollup periods: the UTC hour, day, month and year a time falls in.
//!
//! Why one module: the worker decides which periods a batch touched, the api which whole
//! periods a request covers, and the SQL both send cuts `DateTime` columns into periods; all
//! three must cut time the same way. Times are epoch seconds as `u64`, so that the end of a
//! range just past the last representable `DateTime` (2106) is still a number.

use chrono::{DateTime, Datelike, NaiveDate};

/// A rollup level, finest first. `Ord` follows that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Hour,
    Day,
    Month,
    Year,
}

impl Level {
    /// Finest first: the order in which a batch recomputes them.
    pub const ALL: [Level; 4] = [Level::Hour, Level::Day, Level::Month, Level::Year];

    /// The suffix of the level's table (`stat_volume_hourly`).
    pub fn name(self) -> &'static str {
        match self {
            Level::Hour => "hourly",
            Level::Day => "daily",
            Level::Month => "monthly",
            Level::Year => "yearly",
        }
    }

    /// The level a period of this one is recomputed from; `None` means the facts.
    pub fn source(self) -> Option<Level> {
        match self {
            Level::Hour => None,
            Level::Day => Some(Level::Hour),
            Level::Month => Some(Level::Day),
            Level::Year => Some(Level::Month),
        }
    }

    /// The next coarser level, if any.
    pub fn coarser(self) -> Option<Level> {
        match self {
            Level::Hour => Some(Level::Day),
            Level::Day => Some(Level::Month),
            Level::Month => Some(Level::Year),
            Level::Year => None,
        }
    }

    /// The start of the period `time` falls in.
    pub fn start(self, time: u64) -> u64 {
        match self {
            Level::Hour => time / 3600 * 3600,
            Level::Day => time / 86400 * 86400,
            Level::Month => {
                let Some((year, month)) = year_month(time) else {
                    return time / 86400 * 86400;
                };
                month_start(year, month).unwrap_or(time)
            }
            Level::Year => {
                let Some((year, _)) = year_month(time) else {
                    return time / 86400 * 86400;
                };
                month_start(year, 1).unwrap_or(time)
            }
        }
    }

    /// The start of the period after the one starting at (or containing) `time`.
    pub fn next(self, time: u64) -> u64 {
        match self {
            Level::Hour => self.start(time) + 3600,
            Level::Day => self.start(time) + 86400,
            Level::Month => {
                let Some((year, month)) = year_month(time) else {
                    return self.start(time) + 86400 * 31;
                };
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                month_start(next_year, next_month).unwrap_or(u64::MAX)
            }
            Level::Year => {
                let Some((year, _)) = year_month(time) else {
                    return self.start(time) + 86400 * 366;
                };
                month_start(year + 1, 1).unwrap_or(u64::MAX)
            }
        }
    }

    /// The first period boundary at or after `time`.
    pub fn ceil(self, time: u64) -> u64 {
        let start = self.start(time);
        if start == time {
            start
        } else {
            self.next(time)
        }
    }

    /// SQL for the start (UInt32 epoch seconds) of the period of the `DateTime` `column`;
    /// independent of the server's time zone.
    pub fn sql(self, column: &str) -> String {
        match self {
            Level::Hour => format!("toUInt32(intDiv(toUInt32({column}), 3600) * 3600)"),
            Level::Day => format!("toUInt32(intDiv(toUInt32({column}), 86400) * 86400)"),
            Level::Month => {
                format!("toUInt32(toDateTime(toStartOfMonth({column}, 'UTC'), 'UTC'))")
            }
            Level::Year => {
                format!("toUInt32(toDateTime(toStartOfYear({column}, 'UTC'), 'UTC'))")
            }
        }
    }
}

fn year_month(time: u64) -> Option<(i32, u32)> {
    let moment = DateTime::from_timestamp(i64::try_from(time).ok()?, 0)?;
    Some((moment.year(), moment.month()))
}

fn month_start(year: i32, month: u32) -> Option<u64> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?.and_hms_opt(0, 0, 0)?;
    u64::try_from(first.and_utc().timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-02-29T13:45:10Z, a leap day.
    const LEAP_DAY_AFTERNOON: u64 = 1_709_214_310;

    #[test]
    fn periods_are_utc_hours_days_months_and_years() {
        let time = LEAP_DAY_AFTERNOON;
        assert_eq!(Level::Hour.start(time), 1_709_211_600);
        assert_eq!(Level::Day.start(time), 1_709_164_800);
        assert_eq!(Level::Month.start(time), 1_706_745_600); // 2024-02-01
        assert_eq!(Level::Month.next(time), 1_709_251_200); // 2024-03-01
        assert_eq!(Level::Month.next(1_733_011_200), 1_735_689_600); // Dec → Jan
        assert_eq!(Level::Hour.ceil(1_709_211_600), 1_709_211_600);
        assert_eq!(Level::Hour.ceil(1_709_211_601), 1_709_215_200);
        assert_eq!(Level::Month.ceil(0), 0);
        assert_eq!(Level::Year.start(time), 1_704_067_200); // 2024-01-01
        assert_eq!(Level::Year.next(time), 1_735_689_600); // 2025-01-01 (366 days later)
        assert_eq!(Level::Year.ceil(1_704_067_200), 1_704_067_200);
        assert_eq!(Level::Year.ceil(0), 0);
        assert_eq!(Level::Year.source(), Some(Level::Month));
        assert_eq!(Level::Month.coarser(), Some(Level::Year));
    }
}
