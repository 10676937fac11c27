//! statscache's answers, byte for byte where clients could tell: JSON as Python's `json.dumps`
//! wrote it (`[{"timestamp": 1443000000.0, "category": "bodhi", "volume": 3}]`, whole-second
//! timestamps as floats), JSONP as `callback(json)` with `application/javascript`, CSV as its
//! models wrote it (`timestamp` then the other columns sorted, one row per line, no final
//! newline), and on a page of rows `Link` (always sent, empty without links), `X-Link-Count`,
//! `X-Link-Number` and the CORS headers it set itself.
//!
//! Differences, all where statscache's output was broken: `Link` keeps the query string (statscache's
//! dropped it, so its next page was the unfiltered statistic); CSV fields holding a comma, a quote
//! or a line break are quoted (RFC 4180; statscache wrote them bare); error bodies are plain text
//! (its HTML error pages named the identifier unescaped).

use poem::http::{header, HeaderMap, StatusCode, Uri};
use poem::{IntoResponse, Response};
use serde_json::Value;
use statscache_shared::statscache::python_json;

use super::negotiate::Mime;
use super::query::{Cell, ModelRow};
use crate::params::with_page;

/// The headers statscache put on every page of rows, for pages of other origins.
const EXPOSED: &str = "Link, X-Link-Number, X-Link-Count";

fn cell_json(cell: &Cell) -> Value {
    match cell {
        Cell::Text(text) => Value::String(text.clone()),
        Cell::Count(count) => Value::from(*count),
    }
}

/// A row as JSON: `timestamp` first, then the other columns in order.
fn row_json(row: &ModelRow) -> String {
    let mut items = vec![format!(
        "\"timestamp\": {}",
        python_json(&Value::from(row.timestamp))
    )];
    for (name, cell) in &row.columns {
        items.push(format!(
            "{}: {}",
            python_json(&Value::String(name.to_string())),
            python_json(&cell_json(cell))
        ));
    }
    format!("{{{}}}", items.join(", "))
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// `timestamp` then the other columns sorted by name, as statscache's models wrote CSV.
fn rows_csv(columns: &[&str], rows: &[ModelRow]) -> String {
    let mut sorted: Vec<&str> = columns.to_vec();
    sorted.sort_unstable();
    let mut lines = Vec::with_capacity(rows.len() + 1);
    let mut header = vec!["timestamp"];
    header.extend(&sorted);
    lines.push(header.join(","));
    for row in rows {
        let mut fields = vec![format!("{:.1}", row.timestamp)];
        for name in &sorted {
            let cell = row.columns.iter().find(|(column, _)| column == name);
            fields.push(match cell {
                Some((_, Cell::Text(text))) => csv_field(text),
                Some((_, Cell::Count(count))) => count.to_string(),
                None => String::new(),
            });
        }
        lines.push(fields.join(","));
    }
    lines.join("\n")
}

/// A JSON body as JSON, or as a call of `callback` (JSONP).
fn json_response(json: String, callback: Option<&str>) -> Response {
    match callback {
        Some(callback) => Response::builder()
            .content_type("application/javascript")
            .body(format!("{callback}({json})")),
        None => Response::builder()
            .content_type("application/json")
            .body(json),
    }
}

/// The identifiers, in `mime`.
pub fn index(idents: &[String], mime: Mime, callback: Option<&str>) -> Response {
    match mime {
        Mime::Json => {
            let list: Vec<Value> = idents.iter().map(|i| Value::String(i.clone())).collect();
            json_response(python_json(&Value::Array(list)), callback)
        }
        Mime::Csv(content_type) => Response::builder()
            .content_type(content_type)
            .body(idents.join("\n")),
    }
}

/// A JSON document (a layout), as JSON or JSONP.
pub fn document(value: &Value, callback: Option<&str>) -> Response {
    json_response(python_json(value), callback)
}

/// Where this page's pagination links point.
pub struct Pagination<'a> {
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub page: u64,
    pub pages: u64,
}

/// The scheme and host the client reached us by (a proxy's `X-Forwarded-*` first), for
/// absolute links as statscache's (its pages followed them from other origins, where a
/// path alone would resolve against the wrong host); `None` without a usable host.
fn origin(headers: &HeaderMap) -> Option<String> {
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.split(',').next())
            .map(str::trim)
            .filter(|text| !text.is_empty())
    };
    let host = value("x-forwarded-host").or_else(|| value("host"))?;
    let host_ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !host_ok {
        return None;
    }
    let scheme = match value("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    Some(format!("{scheme}://{host}"))
}

/// statscache's `Link`: the previous and next pages, the request otherwise unchanged.
fn links(pagination: &Pagination<'_>) -> String {
    let base = origin(pagination.headers).unwrap_or_default();
    let mut links = Vec::new();
    if pagination.page > 1 {
        let previous = with_page(pagination.uri, pagination.page - 1);
        links.push(format!("<{base}{previous}>; rel=\"previous\""));
    }
    if pagination.page < pagination.pages {
        let next = with_page(pagination.uri, pagination.page + 1);
        links.push(format!("<{base}{next}>; rel=\"next\""));
    }
    links.join(", ")
}

/// A page of `rows` (whose non-timestamp columns are `columns`) in `mime`.
pub fn model(
    columns: &[&str],
    rows: &[ModelRow],
    mime: Mime,
    callback: Option<&str>,
    pagination: &Pagination<'_>,
) -> Response {
    let mut response = match mime {
        Mime::Json => {
            let items: Vec<String> = rows.iter().map(row_json).collect();
            json_response(format!("[{}]", items.join(", ")), callback)
        }
        Mime::Csv(content_type) => Response::builder()
            .content_type(content_type)
            .body(rows_csv(columns, rows)),
    };
    let headers = response.headers_mut();
    let pairs = [
        ("link", links(pagination)),
        ("x-link-count", pagination.pages.to_string()),
        ("x-link-number", pagination.page.to_string()),
        ("access-control-expose-headers", EXPOSED.to_string()),
    ];
    for (name, value) in pairs {
        if let Ok(value) = value.parse() {
            headers.insert(name, value);
        }
    }
    response
}

/// statscache's 404 for an identifier it does not serve (`what`: `model` for a statistic,
/// `resource` for a layout).
pub fn not_found(body: String) -> Response {
    (StatusCode::NOT_FOUND, body)
        .with_content_type("text/plain; charset=utf-8")
        .into_response()
}

/// statscache's 406, for an `Accept` it cannot answer.
pub fn not_acceptable(ident: Option<&str>) -> Response {
    let body = match ident {
        Some(ident) => format!("Content-type(s) not available for {ident}"),
        None => "Content-type(s) not available".to_string(),
    };
    (StatusCode::NOT_ACCEPTABLE, body)
        .with_content_type("text/plain; charset=utf-8")
        .into_response()
}

/// statscache allowed every origin on its own, whatever the request.
pub fn with_cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::HeaderValue::from_static("*"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(timestamp: f64, category: &str, volume: u64) -> ModelRow {
        ModelRow {
            timestamp,
            columns: vec![
                ("category", Cell::Text(category.to_string())),
                ("volume", Cell::Count(volume)),
            ],
        }
    }

    #[test]
    fn json_and_csv_as_statscache_wrote_them() {
        let rows = [
            row(1_443_000_060.0, "bodhi", 3),
            row(1_443_000_000.0, "a,b", 1),
        ];
        assert_eq!(
            row_json(&rows[0]),
            r#"{"timestamp": 1443000060.0, "category": "bodhi", "volume": 3}"#
        );
        assert_eq!(
            rows_csv(&["volume", "category"], &rows),
            "timestamp,category,volume\n1443000060.0,bodhi,3\n1443000000.0,\"a,b\",1"
        );
    }

    #[test]
    fn links_are_absolute_and_keep_the_query() {
        let uri: Uri = "/statscache/api/volume-1s?start=5&page=2".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", "stats.example:8080".parse().unwrap());
        let pagination = Pagination {
            uri: &uri,
            headers: &headers,
            page: 2,
            pages: 3,
        };
        assert_eq!(
            links(&pagination),
            "<http://stats.example:8080/statscache/api/volume-1s?start=5&page=1>; rel=\"previous\", \
             <http://stats.example:8080/statscache/api/volume-1s?start=5&page=3>; rel=\"next\""
        );
        let mut proxied = headers.clone();
        proxied.insert("x-forwarded-proto", "https".parse().unwrap());
        proxied.insert("x-forwarded-host", "apps.example".parse().unwrap());
        let last = Pagination {
            headers: &proxied,
            page: 3,
            ..pagination
        };
        assert_eq!(
            links(&last),
            "<https://apps.example/statscache/api/volume-1s?start=5&page=2>; rel=\"previous\""
        );
        let only = Pagination {
            page: 1,
            pages: 1,
            ..last
        };
        assert_eq!(links(&only), "");
    }
}
