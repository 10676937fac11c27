//! Parsing and bounding of query parameters shared by the routes.

use chrono::{DateTime, NaiveDate, Utc};

use crate::error::ApiError;

/// Parses a time given as epoch seconds (`1344344053`, `1344344053.5`) or ISO 8601
/// (`2012-08-07T12:54:13Z`, `2012-08-07`).
pub fn parse_time(parameter: &str, raw: &str) -> Result<f64, ApiError> {
    let raw = raw.trim();
    if let Ok(seconds) = raw.parse::<f64>() {
        if seconds.is_finite() && (0.0..=4_294_967_295.0).contains(&seconds) {
            return Ok(seconds);
        }
        return Err(ApiError::bad_parameter(
            parameter,
            format!("{raw} is outside the epoch range 0..2^32"),
        ));
    }
    if let Ok(datetime) = DateTime::parse_from_rfc3339(raw) {
        return checked_epoch(parameter, datetime.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        if let Some(midnight) = date.and_hms_opt(0, 0, 0) {
            return checked_epoch(parameter, midnight.and_utc());
        }
    }
    Err(ApiError::bad_parameter(
        parameter,
        format!("{raw:?} is neither epoch seconds nor an ISO 8601 date or time"),
    ))
}

fn checked_epoch(parameter: &str, datetime: DateTime<Utc>) -> Result<f64, ApiError> {
    let seconds = datetime.timestamp();
    if !(0..=i64::from(u32::MAX)).contains(&seconds) {
        return Err(ApiError::bad_parameter(
            parameter,
            format!("{datetime} is outside 1970..2106"),
        ));
    }
    Ok(seconds as f64 + f64::from(datetime.timestamp_subsec_millis()) / 1000.0)
}

/// Sort order by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

impl Order {
    pub fn parse(raw: Option<&str>, default: Order) -> Result<Order, ApiError> {
        match raw.map(str::trim) {
            None | Some("") => Ok(default),
            Some(value) if value.eq_ignore_ascii_case("asc") => Ok(Order::Asc),
            Some(value) if value.eq_ignore_ascii_case("desc") => Ok(Order::Desc),
            Some(other) => Err(ApiError::bad_parameter(
                "order",
                format!("{other:?} is not asc or desc"),
            )),
        }
    }

    pub fn sql(self) -> &'static str {
        match self {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        }
    }
}

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// From 1.
    pub number: u32,
    pub rows_per_page: u32,
}

impl Page {
    pub fn parse(
        page: Option<i64>,
        rows_per_page: Option<i64>,
        default_rows: u32,
        max_rows: u32,
    ) -> Result<Page, ApiError> {
        let number = page.unwrap_or(1);
        if !(1..=1_000_000).contains(&number) {
            return Err(ApiError::bad_parameter(
                "page",
                format!("{number} is not between 1 and 1000000"),
            ));
        }
        let rows = rows_per_page.unwrap_or(i64::from(default_rows));
        if rows < 1 || rows > i64::from(max_rows) {
            return Err(ApiError::bad_parameter(
                "rows_per_page",
                format!("{rows} is not between 1 and {max_rows}"),
            ));
        }
        Ok(Page {
            number: number as u32,
            rows_per_page: rows as u32,
        })
    }

    pub fn offset(self) -> u64 {
        u64::from(self.number - 1) * u64::from(self.rows_per_page)
    }

    /// Pages needed for `total` rows (at least 1, as datagrepper reports).
    pub fn pages(self, total: u64) -> u64 {
        total.div_ceil(u64::from(self.rows_per_page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        assert_eq!(parse_time("start", "1344344053").ok(), Some(1344344053.0));
        assert_eq!(parse_time("start", "1344344053.5").ok(), Some(1344344053.5));
        assert_eq!(
            parse_time("start", "2012-08-07T12:54:13Z").ok(),
            Some(1344344053.0)
        );
        assert_eq!(parse_time("start", "2012-08-07").ok(), Some(1344297600.0));
        for bad in [
            "yesterday",
            "-5",
            "1e20",
            "NaN",
            "2012-13-45",
            "'; DROP TABLE messages; --",
        ] {
            assert!(parse_time("start", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_are_bounded() {
        assert!(Page::parse(Some(0), None, 25, 100).is_err());
        assert!(Page::parse(Some(-3), None, 25, 100).is_err());
        assert!(Page::parse(None, Some(101), 25, 100).is_err());
        let page = Page::parse(Some(3), Some(10), 25, 100).ok().unwrap();
        assert_eq!(page.offset(), 20);
        assert_eq!(page.pages(21), 3);
    }
}
