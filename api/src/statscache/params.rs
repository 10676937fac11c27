//! statscache's query parameters, read as statscache read them: the first value of each name
//! (Flask's `args.get`), `order=asc` ascending and anything else descending, `limit=0` no
//! limit, a `rows_per_page` above the maximum lowered to it; unknown names (jQuery's `_`)
//! ignored. Where statscache failed with a 500 (a `page` that is not a number, a zero
//! `rows_per_page`), the answer is a 400 naming the parameter.

use poem::http::Uri;

use crate::error::ApiError;
use crate::params::{decode_query, parse_time, Order};

/// The longest JSONP callback accepted.
const MAX_CALLBACK_BYTES: usize = 128;

/// A statscache request's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub order: Order,
    /// Rows whose timestamp is at or after this (epoch seconds); `None`: from the beginning.
    pub start: Option<f64>,
    /// Rows whose timestamp is at or before this; statscache's default is now, which keeps the
    /// windows not yet closed out and the pages stable.
    pub stop: f64,
    /// At most this many rows before pagination.
    pub limit: Option<u64>,
    /// From 1.
    pub page: u64,
    pub rows_per_page: u64,
    /// JSONP: the function the answer calls.
    pub callback: Option<String>,
}

impl Params {
    /// The index of the page's first row.
    pub fn offset(&self) -> u64 {
        (self.page - 1).saturating_mul(self.rows_per_page)
    }
}

fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn whole(name: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_parameter(name, format!("{raw:?} is not a whole number ≥ 0")))
}

/// Reads `uri`'s query; `rows` is statscache's default and maximum rows per page, `now` the
/// default `stop`.
pub fn parse(uri: &Uri, rows: u64, now: f64) -> Result<Params, ApiError> {
    let pairs = decode_query(uri.query().unwrap_or(""))?;
    let order = match first(&pairs, "order") {
        Some("asc") => Order::Asc,
        _ => Order::Desc,
    };
    let start = match first(&pairs, "start") {
        Some(raw) => Some(parse_time("start", raw)?),
        None => None,
    };
    let stop = match first(&pairs, "stop") {
        Some(raw) => parse_time("stop", raw)?,
        None => now,
    };
    let limit = match first(&pairs, "limit") {
        Some(raw) => Some(whole("limit", raw)?).filter(|limit| *limit > 0),
        None => None,
    };
    let page = match first(&pairs, "page") {
        Some(raw) => whole("page", raw)?,
        None => 1,
    };
    if page == 0 {
        return Err(ApiError::bad_parameter("page", "pages are numbered from 1"));
    }
    let rows_per_page = match first(&pairs, "rows_per_page") {
        Some(raw) => whole("rows_per_page", raw)?.min(rows),
        None => rows,
    };
    if rows_per_page == 0 {
        return Err(ApiError::bad_parameter(
            "rows_per_page",
            "a page holds at least one row",
        ));
    }
    let callback = match first(&pairs, "callback") {
        None | Some("") => None,
        Some(name) => Some(checked_callback(name)?),
    };
    Ok(Params {
        order,
        start,
        stop,
        limit,
        page,
        rows_per_page,
        callback,
    })
}

/// A JSONP callback is written into a script: only a (dotted) JavaScript name is accepted, as
/// jQuery generates (`jQuery3610_1700000000000`), so no request can make the answer run
/// anything else.
fn checked_callback(name: &str) -> Result<String, ApiError> {
    let mut characters = name.chars();
    let starts_well = characters
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$');
    let rest_ok = characters.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.');
    if !starts_well || !rest_ok || name.len() > MAX_CALLBACK_BYTES {
        return Err(ApiError::bad_parameter(
            "callback",
            format!(
                "{name:?} is not a JavaScript function name (letters, digits, _, $ and dots, at \
                 most {MAX_CALLBACK_BYTES} bytes)"
            ),
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Result<Params, ApiError> {
        let uri: Uri = format!("/statscache/api/volume-1s?{query}")
            .parse()
            .unwrap();
        parse(&uri, 100, 1_700_000_000.5)
    }

    #[test]
    fn defaults_and_statscache_leniency() {
        let defaults = params("").ok().unwrap();
        assert_eq!(
            defaults,
            Params {
                order: Order::Desc,
                start: None,
                stop: 1_700_000_000.5,
                limit: None,
                page: 1,
                rows_per_page: 100,
                callback: None,
            }
        );
        let given = params("order=asc&order=desc&start=10&stop=20.5&limit=0&page=3&rows_per_page=500&callback=jQuery361_1&_=123")
            .ok()
            .unwrap();
        assert_eq!(given.order, Order::Asc);
        assert_eq!((given.start, given.stop), (Some(10.0), 20.5));
        assert_eq!(given.limit, None);
        assert_eq!((given.page, given.rows_per_page), (3, 100));
        assert_eq!(given.offset(), 200);
        assert_eq!(given.callback.as_deref(), Some("jQuery361_1"));
        assert_eq!(params("order=sideways").ok().unwrap().order, Order::Desc);
        assert_eq!(params("callback=").ok().unwrap().callback, None);
    }

    #[test]
    fn what_statscache_failed_on_is_a_400() {
        for bad in [
            "page=0",
            "page=two",
            "rows_per_page=0",
            "limit=-1",
            "start=yesterday",
            "callback=alert(1)",
            "callback=a%0Ab",
        ] {
            assert!(params(bad).is_err(), "{bad}");
        }
    }
}
