//! Parsing and bounding of query parameters shared by the routes.
//!
//! Besides typed parsing, the raw query string is checked before any route sees it
//! ([`check_query_string`]): poem decodes percent-encoded bytes that are not UTF-8 into U+FFFD,
//! which would silently turn a malformed filter into a different, valid one, and an unbounded
//! query string would become an unbounded SQL statement. Routes also refuse a single-valued
//! parameter given twice ([`reject_repeated`]) instead of guessing which one was meant.

use poem::http::Uri;

use crate::error::ApiError;

/// The longest query string accepted, in bytes (percent-encoded, as sent). Bound values end up
/// in SQL, so this also bounds the size of every statement sent to ClickHouse.
pub const MAX_QUERY_STRING_BYTES: usize = 8192;

/// Checks the whole query string: at most [`MAX_QUERY_STRING_BYTES`], and every name and value
/// valid UTF-8 once percent-decoded.
pub fn check_query_string(uri: &Uri) -> Result<(), ApiError> {
    let query = uri.query().unwrap_or("");
    if query.len() > MAX_QUERY_STRING_BYTES {
        return Err(ApiError::bad_request(format!(
            "the query string is {} bytes long; at most {MAX_QUERY_STRING_BYTES} are accepted",
            query.len()
        )));
    }
    decode_query(query)?;
    Ok(())
}

/// Refuses a request where one of `single_valued` appears more than once.
pub fn reject_repeated(uri: &Uri, single_valued: &[&str]) -> Result<(), ApiError> {
    let pairs = decode_query(uri.query().unwrap_or(""))?;
    for name in single_valued {
        let occurrences = pairs.iter().filter(|(key, _)| key == name).count();
        if occurrences > 1 {
            return Err(ApiError::bad_parameter(
                name,
                format!("{name} is given {occurrences} times; give it at most once"),
            ));
        }
    }
    Ok(())
}

/// Refuses a request that gives both names of one parameter (`end` and statscache's `stop`):
/// which one was meant cannot be told, so neither is guessed.
pub fn reject_aliases(pairs: &[(&str, bool)]) -> Result<(), ApiError> {
    let given: Vec<&str> = pairs
        .iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| *name)
        .collect();
    if given.len() > 1 {
        return Err(ApiError::bad_parameter(
            given[0],
            format!(
                "{} name the same parameter; give only one of them",
                given.join(" and ")
            ),
        ));
    }
    Ok(())
}

/// `uri`'s path and query with every `page` parameter replaced by `page=number`; the other
/// parameters are kept as they were sent (still percent-encoded), in their order.
pub fn with_page(uri: &Uri, number: u64) -> String {
    let mut kept = Vec::new();
    for pair in uri.query().unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
        if percent_decode(raw_name) == b"page" {
            continue;
        }
        kept.push(pair);
    }
    let page = format!("page={number}");
    kept.push(&page);
    format!("{}?{}", uri.path(), kept.join("&"))
}

/// Decodes `application/x-www-form-urlencoded` pairs as poem does (`+` is a space, a `%` not
/// followed by two hex digits stays as is), except that bytes which are not UTF-8 are an error.
pub(crate) fn decode_query(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = Vec::new();
    for pair in query.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name_bytes = percent_decode(raw_name);
        let Ok(name) = String::from_utf8(name_bytes) else {
            return Err(ApiError::bad_request(format!(
                "the parameter name {raw_name:?} is not UTF-8 once percent-decoded"
            )));
        };
        let Ok(value) = String::from_utf8(percent_decode(raw_value)) else {
            return Err(ApiError::bad_parameter(
                &name,
                format!("the value {raw_value:?} is not UTF-8 once percent-decoded"),
            ));
        };
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn percent_decode(encoded: &str) -> Vec<u8> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'+' {
            decoded.push(b' ');
            index += 1;
            continue;
        }
        if byte == b'%' && index + 2 < bytes.len() {
            let high = hex_value(bytes[index + 1]);
            let low = hex_value(bytes[index + 2]);
            if let (Some(high), Some(low)) = (high, low) {
                decoded.push(high * 16 + low);
                index += 3;
                continue;
            }
        }
        decoded.push(byte);
        index += 1;
    }
    decoded
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Parses a time given as epoch seconds (`1344344053`, `1344344053.5`) or ISO 8601
/// (`2012-08-07T12:54:13Z`, `2012-08-07`), as every statscache command does.
pub fn parse_time(parameter: &str, raw: &str) -> Result<f64, ApiError> {
    // As the OpenAPI pattern says: no surrounding spaces.
    if raw.trim() != raw {
        return Err(ApiError::bad_parameter(
            parameter,
            format!("{raw:?} has surrounding spaces"),
        ));
    }
    statscache_shared::time::parse_time(raw)
        .map_err(|invalid| ApiError::bad_parameter(parameter, invalid.to_string()))
}

/// Sort order by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum Order {
    Asc,
    Desc,
}

impl Order {
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
    fn query_strings_must_decode_to_utf8() {
        let uri = |text: &str| text.parse::<Uri>().unwrap();
        assert_eq!(
            decode_query("topic=a+b%2Ec&x=%zz&empty").ok(),
            Some(vec![
                ("topic".to_string(), "a b.c".to_string()),
                ("x".to_string(), "%zz".to_string()),
                ("empty".to_string(), String::new()),
            ])
        );
        assert_eq!(
            decode_query("user=%C3%A9").ok(),
            Some(vec![("user".to_string(), "\u{e9}".to_string())])
        );
        assert!(check_query_string(&uri("/raw?user=%FF")).is_err());
        assert!(check_query_string(&uri("/raw?%FE=1")).is_err());
        assert!(check_query_string(&uri("/raw?user=%C3")).is_err());
        let long = format!("/raw?topic={}", "a".repeat(MAX_QUERY_STRING_BYTES));
        assert!(check_query_string(&uri(&long)).is_err());
        assert!(check_query_string(&uri("/raw?user=a&user=b")).is_ok());
    }

    #[test]
    fn single_valued_parameters_given_twice_are_refused() {
        let uri = "/raw?page=1&user=a&user=b&pa%67e=2".parse::<Uri>().unwrap();
        assert!(reject_repeated(&uri, &["user"]).is_err());
        assert!(reject_repeated(&uri, &["page"]).is_err());
        assert!(reject_repeated(&uri, &["start", "end"]).is_ok());
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
