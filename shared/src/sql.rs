//! Values bound to the `?` placeholders of the SQL the worker and the api assemble from parts.
//!
//! Why: a query built from several parts (segments of a time range, lists of keys) binds its
//! values in the order the parts were written, so each part carries its values beside its text.
//! Lists are bound one value per placeholder (`key IN (?, ?)`), because ClickHouse 18.16 does not
//! accept an array where `IN` expects a list.

/// A value bound to one `?`.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// Epoch seconds, for `toDateTime(?)`.
    Time(u32),
    Text(String),
}

/// Binds `values` in order.
pub fn bind_all(mut query: clickhouse::query::Query, values: &[Bound]) -> clickhouse::query::Query {
    for value in values {
        query = match value {
            Bound::Time(seconds) => query.bind(*seconds),
            Bound::Text(text) => query.bind(text.as_str()),
        };
    }
    query
}

/// `?, ?, ?`: one placeholder per value of a list.
pub fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

/// A time as a `DateTime` can hold it (the last second of 2106 at most).
pub fn clamp_time(seconds: u64) -> u32 {
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

/// `AND key IN (?, ...)` for `keys` (nothing if empty), appending the keys to `binds`: a
/// filter on the first column of every statistic table's sort key.
pub fn key_filter(keys: &[String], binds: &mut Vec<Bound>) -> String {
    if keys.is_empty() {
        return String::new();
    }
    for key in keys {
        binds.push(Bound::Text(key.clone()));
    }
    format!(" AND key IN ({})", placeholders(keys.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_get_one_placeholder_per_value() {
        let mut binds = Vec::new();
        let keys = vec!["a".to_string(), "b".to_string()];
        assert_eq!(key_filter(&keys, &mut binds), " AND key IN (?, ?)");
        assert_eq!(binds.len(), 2);
        assert_eq!(key_filter(&[], &mut binds), "");
        assert_eq!(clamp_time(1 << 40), u32::MAX);
    }
}
