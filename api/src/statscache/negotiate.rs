//! The response type, chosen from `Accept` as statscache chose it (werkzeug's
//! `accept_mimetypes.best_match` over the types it served): the offered type matched by the
//! highest quality wins, the first offered among equals. Anything else is a 406.
//!
//! One difference: a request without `Accept` (or with an empty one) gets JSON. statscache's
//! werkzeug matched nothing then and answered 406, which HTTP does not ask for (no `Accept`
//! means anything is acceptable) and no client relied on.

use poem::http::HeaderMap;

/// What statscache could answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mime {
    /// `application/json`, `text/json`, `application/javascript` or `text/javascript`: JSON,
    /// or JSONP when a `callback` is given.
    Json,
    /// `application/csv` or `text/csv`, answered with the type asked for.
    Csv(&'static str),
}

/// The types statscache offered, in its order (which decides ties).
const OFFERED: [(&str, Mime); 6] = [
    ("application/json", Mime::Json),
    ("text/json", Mime::Json),
    ("application/javascript", Mime::Json),
    ("text/javascript", Mime::Json),
    ("application/csv", Mime::Csv("application/csv")),
    ("text/csv", Mime::Csv("text/csv; charset=utf-8")),
];

/// A media range of `Accept` and its quality.
struct Range {
    media_type: String,
    quality: f32,
}

fn ranges(headers: &HeaderMap) -> Vec<Range> {
    let mut ranges = Vec::new();
    for value in headers.get_all("accept") {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let media_type = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if media_type.is_empty() {
                continue;
            }
            let mut quality = 1.0f32;
            for parameter in parts {
                if let Some((name, value)) = parameter.split_once('=') {
                    if name.trim().eq_ignore_ascii_case("q") {
                        quality = value.trim().parse().unwrap_or(0.0);
                    }
                }
            }
            ranges.push(Range {
                media_type,
                quality,
            });
        }
    }
    ranges
}

/// Whether the client's `range` covers the offered `media_type`.
fn covers(range: &str, media_type: &str) -> bool {
    if range == "*/*" || range == "*" || range == media_type {
        return true;
    }
    match (range.strip_suffix("/*"), media_type.split_once('/')) {
        (Some(range_type), Some((offered_type, _))) => range_type == offered_type,
        _ => false,
    }
}

/// The type to answer with, `None` for a 406.
pub fn negotiate(headers: &HeaderMap) -> Option<Mime> {
    let ranges = ranges(headers);
    if ranges.is_empty() {
        return Some(Mime::Json);
    }
    let mut best: Option<(f32, Mime)> = None;
    for (media_type, mime) in OFFERED {
        let mut quality = 0.0f32;
        for range in &ranges {
            if range.quality > quality && covers(&range.media_type, media_type) {
                quality = range.quality;
            }
        }
        if quality > 0.0 && best.is_none_or(|(best_quality, _)| quality > best_quality) {
            best = Some((quality, mime));
        }
    }
    best.map(|(_, mime)| mime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Option<Mime> {
        let mut headers = HeaderMap::new();
        headers.insert("accept", value.parse().unwrap());
        negotiate(&headers)
    }

    #[test]
    fn as_statscache_chose() {
        // jQuery's `dataType: 'json'`, a browser's navigation, curl.
        assert_eq!(
            accept("application/json, text/javascript, */*; q=0.01"),
            Some(Mime::Json)
        );
        assert_eq!(
            accept("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            Some(Mime::Json)
        );
        assert_eq!(accept("*/*"), Some(Mime::Json));
        assert_eq!(
            accept("text/csv"),
            Some(Mime::Csv("text/csv; charset=utf-8"))
        );
        assert_eq!(
            accept("application/csv"),
            Some(Mime::Csv("application/csv"))
        );
        assert_eq!(accept("text/*"), Some(Mime::Json), "text/json comes first");
        assert_eq!(
            accept("application/json;q=0.5, text/csv"),
            Some(Mime::Csv("text/csv; charset=utf-8"))
        );
        assert_eq!(accept("text/html"), None);
        assert_eq!(accept("text/csv;q=0"), None);
        assert_eq!(negotiate(&HeaderMap::new()), Some(Mime::Json));
    }
}
