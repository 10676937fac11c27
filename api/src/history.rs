//! Message history with datagrepper's interface: `GET /raw` and `GET /id`, answered from the
//! ClickHouse `messages` table, so that datagrepper clients (dashboards, backfill tools, scripts)
//! work unchanged against statscache.
//!
//! The reference is datagrepper 0.9.7 over datanommer.models 0.9.1: the same parameters, the same
//! response shape (`raw_messages`, `count`, `pages`, `total`, `arguments`) and the same twelve keys
//! per message (datanommer's `Message.__json__`), rebuilt from the envelope stored in `body`.
//! Where datagrepper answers a bad parameter with a 500, we answer 400 with our JSON error.
//!
//! Order, as datagrepper's: by timestamp to the microsecond (datanommer's precision), ties by
//! arrival, `order=desc` reversing both. datanommer's arrival order is its row id; ours is the
//! stream sequence, which the worker stores in `messages` and in the lookup tables (so that a
//! lookup-table query sorts without reading `messages`). datagrepper does not name the tie
//! order: it is what its database returns for `ORDER BY timestamp` (SQLite: row id order,
//! reversed for `desc`; PostgreSQL promises nothing). Pages cut through a tie therefore hold
//! the same messages as datagrepper's over the same history stored in the same order.
//!
//! `contains`, as datagrepper's: `LIKE '%value%'` on datanommer's JSON text of `msg`
//! ([`statscache_shared::datanommer`]: sorted keys, `,` and `:` without spaces, `\uXXXX`
//! escapes, so `"author":"ralph"` matches and `"author": "ralph"` does not), values ORed. The
//! pattern is read as PostgreSQL (production datagrepper's database) reads it: case-sensitive,
//! `%` and `_` wildcards, `\` escaping the next character ([`contains_pattern`]); SQLite's
//! `LIKE` would ignore ASCII case and have no escape. Why a stored column: the envelope as
//! published (`body`) differs from datanommer's text in key order, spacing, escapes and number
//! spelling, so no filter on it is exact, and doing the `LIKE` in Rust would mean shipping every
//! body of the window to the api before a page can be counted. The worker writes the text once
//! (`messages.datanommer_msg`); ClickHouse scans that column for the window's rows of the topic
//! or category, as datagrepper's database scans `_msg` — no more than the old scan of `body`.
//!
//! Bounds, so that one request cannot exhaust ClickHouse (each is a 400 when exceeded):
//! - the window is at most 31 days ([`timerange::MAX_RANGE_SECONDS`]); no window means the last
//!   hour ([`timerange::DEFAULT_QUERY_DELTA_SECONDS`]), not the whole history;
//! - `page × rows_per_page` is at most [`MAX_PAGE_DEPTH`]: a deeper page makes ClickHouse sort
//!   that many keys and hold them as a set; narrow the window instead;
//! - `contains` needs a `topic` or `category` and a start within the last 32 weeks (datagrepper's
//!   own rules), since it scans the text of every message of the topic or category;
//! - the query string is at most [`crate::params::MAX_QUERY_STRING_BYTES`].
//!
//! Known differences, documented rather than hidden:
//! - `msg_id`: a message published without one has our stable identity (`sha256:…`) where
//!   datanommer made up a random `<year>-<uuid>`;
//! - `source_name` / `source_version` are the envelope's own (null when absent), where datanommer
//!   put its own name and version;
//! - `contains` does not find messages stored before schema version 4 (their
//!   `datanommer_msg` is empty: SQL cannot compute it); it reaches 32 weeks back at most, so the
//!   gap closes 32 weeks after the upgrade. Integers beyond 64 bits are spelt as floats there;
//! - `meta` ([`crate::message_meta`]): `usernames` and `packages` as the worker stored them;
//!   `title`, `subtitle`, `link`, `icon`, `secondary_icon` and `objects` from the shared port of
//!   fedmsg.meta, computed per page, `null` for services the port does not cover;
//! - `meta=date`, `grouped=true`, JSONP `callback` and HTML rendering are not supported (400);
//! - a message stored twice (published again after JetStream's duplicate window) sorts by its
//!   last arrival; datanommer refuses the second copy and keeps the first.
//!
//! Every value from the request reaches SQL through the clickhouse crate's `bind` (escaped
//! literals), never by formatting it into the statement.

use std::time::{SystemTime, UNIX_EPOCH};

use clickhouse::query::Query as SqlQuery;
use clickhouse::Row;
use poem::http::Uri;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::message_meta::{check_meta, MessageMeta};
use crate::params::reject_repeated;
use crate::timerange::{self, datagrepper_timestamp, RangeParameters, TimeRange};
use crate::AppState;

/// The deepest row a page may reach (`page × rows_per_page`).
pub const MAX_PAGE_DEPTH: u64 = 10_000;

/// datagrepper's `contains` rule: the window must start at most 32 weeks ago.
const CONTAINS_MAX_AGE_SECONDS: f64 = 32.0 * 7.0 * 86400.0;

/// Values of datagrepper's HTML-only `size` parameter; validated for compatibility, then unused.
const SIZES: &[&str] = &["small", "medium", "large", "extra-large"];

/// A message's event time (the Float64 `column`) in whole microseconds, rounded as datanommer
/// stores it (half away from zero where Python rounds half to even: the two differ only on an
/// exact half microsecond).
fn timestamp_micros_sql(column: &str) -> String {
    format!(
        "(toInt64(floor({column})) * 1000000 \
         + toInt64(round(({column} - floor({column})) * 1000000)))"
    )
}

pub struct HistoryApi {
    pub state: AppState,
}

/// A message as datanommer's `Message.__json__` renders it: always these twelve keys.
#[derive(Debug, Clone, Object)]
pub struct RawMessage {
    /// The publisher's sequence number (0 when the envelope had none).
    pub i: u64,
    /// The message identity: the envelope's `msg_id`, or `sha256:…` of its content.
    pub msg_id: String,
    pub topic: String,
    /// Epoch seconds, truncated to the second as datagrepper shows them.
    pub timestamp: f64,
    #[oai(nullable)]
    pub certificate: Option<String>,
    #[oai(nullable)]
    pub signature: Option<String>,
    /// The Unix account of the publishing process, not a person.
    #[oai(nullable)]
    pub username: Option<String>,
    #[oai(nullable)]
    pub crypto: Option<String>,
    /// The message body.
    pub msg: Value,
    /// The envelope's headers (`{}` when it had none).
    pub headers: Value,
    #[oai(nullable)]
    pub source_name: Option<String>,
    #[oai(nullable)]
    pub source_version: Option<String>,
    /// Present when `meta` was given.
    #[oai(skip_serializing_if_is_none)]
    pub meta: Option<MessageMeta>,
}

/// The query as understood, with datagrepper's keys and value types.
#[derive(Debug, Clone, Object)]
pub struct RawArguments {
    pub start: f64,
    pub end: f64,
    pub delta: f64,
    pub users: Vec<String>,
    pub packages: Vec<String>,
    pub categories: Vec<String>,
    pub topics: Vec<String>,
    pub contains: Vec<String>,
    pub not_users: Vec<String>,
    pub not_packages: Vec<String>,
    pub not_categories: Vec<String>,
    pub not_topics: Vec<String>,
    pub page: u64,
    pub rows_per_page: u64,
    pub order: String,
    pub meta: Vec<String>,
    pub grouped: bool,
}

/// One page of history, in datagrepper's shape.
#[derive(Debug, Clone, Object)]
pub struct RawPage {
    pub raw_messages: Vec<RawMessage>,
    /// Messages on this page.
    pub count: u64,
    /// Pages in the whole result.
    pub pages: u64,
    /// Messages in the whole result.
    pub total: u64,
    pub arguments: RawArguments,
}

/// The columns a history answer is rebuilt from.
#[derive(Debug, Row, Deserialize)]
struct StoredMessage {
    msg_id: String,
    topic: String,
    timestamp: f64,
    i: u64,
    usernames: Vec<String>,
    packages: Vec<String>,
    body: String,
}

const STORED_COLUMNS: &str = "msg_id, topic, timestamp, i, usernames, packages, body";

/// A value bound to one `?` of a statement.
#[derive(Debug, Clone)]
enum Bound {
    Seconds(u32),
    Micros(i64),
    Text(String),
    Texts(Vec<String>),
}

/// A WHERE clause and the values for its placeholders, in order.
#[derive(Debug, Default)]
struct Filter {
    conditions: Vec<String>,
    values: Vec<Bound>,
}

impl Filter {
    fn push(&mut self, condition: &str, values: Vec<Bound>) {
        self.conditions.push(condition.to_string());
        self.values.extend(values);
    }

    fn sql(&self) -> String {
        self.conditions.join(" AND ")
    }

    fn bind(&self, mut query: SqlQuery) -> SqlQuery {
        for value in &self.values {
            query = match value {
                Bound::Seconds(seconds) => query.bind(*seconds),
                Bound::Micros(micros) => query.bind(*micros),
                Bound::Text(text) => query.bind(text.as_str()),
                Bound::Texts(texts) => query.bind(texts.as_slice()),
            };
        }
        query
    }
}

/// The list filters of `/raw`, as given.
#[derive(Debug, Clone, Default)]
struct ListFilters {
    users: Vec<String>,
    packages: Vec<String>,
    categories: Vec<String>,
    topics: Vec<String>,
    contains: Vec<String>,
    not_users: Vec<String>,
    not_packages: Vec<String>,
    not_categories: Vec<String>,
    not_topics: Vec<String>,
}

/// The window: `time` (whole seconds, the sorting key) prunes; the microsecond test decides. A
/// timestamp just under a second may round up into the window, hence the second before `start`.
fn window_filter(range: &TimeRange) -> Filter {
    let mut filter = Filter::default();
    let (start_micros, end_micros) = range.micros();
    let (first_second, last_second) = window_seconds(range);
    filter.push(
        "time >= toDateTime(?) AND time <= toDateTime(?)",
        vec![Bound::Seconds(first_second), Bound::Seconds(last_second)],
    );
    let micros = timestamp_micros_sql("timestamp");
    filter.push(
        &format!("{micros} >= ? AND {micros} <= ?"),
        vec![Bound::Micros(start_micros), Bound::Micros(end_micros)],
    );
    filter
}

/// The whole seconds a window's messages may have as `time`.
fn window_seconds(range: &TimeRange) -> (u32, u32) {
    let (start_micros, end_micros) = range.micros();
    let first_second = (start_micros.div_euclid(1_000_000) - 1).clamp(0, i64::from(u32::MAX));
    let last_second = end_micros
        .div_euclid(1_000_000)
        .clamp(0, i64::from(u32::MAX));
    (first_second as u32, last_second as u32)
}

/// datanommer's filters: values of one parameter are ORed, parameters ANDed.
fn push_any_of(filter: &mut Filter, any_of: &[(&str, &Vec<String>)]) {
    for (condition, values) in any_of {
        if !values.is_empty() {
            filter.push(condition, vec![Bound::Texts(values.to_vec())]);
        }
    }
}

/// The topic and category filters, on columns `messages` and the lookup tables share.
fn push_topic_filters(filter: &mut Filter, lists: &ListFilters) {
    push_any_of(
        filter,
        &[
            ("has(?, category)", &lists.categories),
            ("has(?, topic)", &lists.topics),
            ("NOT has(?, category)", &lists.not_categories),
            ("NOT has(?, topic)", &lists.not_topics),
        ],
    );
}

/// Every condition of a `/raw` query, on `messages`.
fn history_filter(range: &TimeRange, lists: &ListFilters) -> Filter {
    let mut filter = window_filter(range);
    push_any_of(
        &mut filter,
        &[
            ("hasAny(usernames, ?)", &lists.users),
            ("hasAny(packages, ?)", &lists.packages),
            ("NOT hasAny(usernames, ?)", &lists.not_users),
            ("NOT hasAny(packages, ?)", &lists.not_packages),
        ],
    );
    push_topic_filters(&mut filter, lists);
    if !lists.contains.is_empty() {
        let mut alternatives = Vec::with_capacity(lists.contains.len());
        let mut values = Vec::with_capacity(lists.contains.len());
        for needle in &lists.contains {
            alternatives.push("like(datanommer_msg, ?)");
            values.push(Bound::Text(contains_pattern(needle)));
        }
        filter.push(&format!("({})", alternatives.join(" OR ")), values);
    }
    filter
}

/// datanommer's `LIKE '%needle%'` as PostgreSQL reads it (`%` any run, `_` any one character,
/// `\` makes the next character literal, so a trailing `\` escapes the closing `%`), written
/// for ClickHouse's `like`, whose escapes differ for other characters: there only `%`, `_` and
/// `\` are escaped.
fn contains_pattern(needle: &str) -> String {
    let postgres_pattern = format!("%{needle}%");
    let mut pattern = String::with_capacity(postgres_pattern.len() + 2);
    let mut characters = postgres_pattern.chars();
    while let Some(character) = characters.next() {
        let literal = match character {
            '%' | '_' => {
                pattern.push(character);
                continue;
            }
            // The pattern ends with `%`, so an escape always has a next character.
            '\\' => characters.next().unwrap_or('\\'),
            other => other,
        };
        if matches!(literal, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(literal);
    }
    pattern
}

/// `name IN (?, …)` over a lookup table's sort key, with its values.
fn names_condition(names: &[String]) -> (String, Vec<Bound>) {
    let placeholders = vec!["?"; names.len()].join(", ");
    let values = names.iter().cloned().map(Bound::Text).collect();
    (format!("name IN ({placeholders})"), values)
}

/// A `/raw` query naming people or packages (and no `not_user`, `not_package` or `contains`,
/// which need the message itself) is answered by a lookup table: the names are a range of its
/// sort key, and it carries the time, topic and category the other filters test.
fn lookup_filter(range: &TimeRange, lists: &ListFilters) -> Option<(&'static str, Filter)> {
    if !lists.not_users.is_empty() || !lists.not_packages.is_empty() || !lists.contains.is_empty() {
        return None;
    }
    let (table, names) = if !lists.users.is_empty() {
        ("message_users", &lists.users)
    } else if !lists.packages.is_empty() {
        ("message_packages", &lists.packages)
    } else {
        return None;
    };
    let mut filter = Filter::default();
    let (condition, values) = names_condition(names);
    filter.push(&condition, values);
    let window = window_filter(range);
    filter.conditions.extend(window.conditions);
    filter.values.extend(window.values);
    push_topic_filters(&mut filter, lists);
    if table == "message_users" && !lists.packages.is_empty() {
        let (condition, mut values) = names_condition(&lists.packages);
        let (first_second, last_second) = window_seconds(range);
        values.push(Bound::Seconds(first_second));
        values.push(Bound::Seconds(last_second));
        filter.push(
            &format!(
                "(time, msg_id) IN (SELECT time, msg_id FROM message_packages \
                 WHERE {condition} AND time >= toDateTime(?) AND time <= toDateTime(?))"
            ),
            values,
        );
    }
    Some((table, filter))
}

/// The messages a `/raw` query selects, one row per message: `time, msg_id, event_timestamp,
/// sequence`, read from narrow columns only (a lookup table, else `messages` without its bodies
/// unless `contains` tests datanommer's text), so that bodies are read for the page alone.
///
/// `sequence` is the arrival order. A lookup table may hold a message twice until merges fold
/// it, once with sequence 0 if written before schema version 4: the greatest is taken, as
/// `messages FINAL` keeps the last row written.
fn selected_messages(range: &TimeRange, lists: &ListFilters) -> (String, Filter) {
    if let Some((table, filter)) = lookup_filter(range, lists) {
        let sql = format!(
            "SELECT time, msg_id, max(timestamp) AS event_timestamp, \
             max(stream_sequence) AS sequence FROM {table} \
             WHERE {} GROUP BY time, msg_id",
            filter.sql()
        );
        return (sql, filter);
    }
    let filter = history_filter(range, lists);
    let sql = format!(
        "SELECT time, msg_id, timestamp AS event_timestamp, stream_sequence AS sequence \
         FROM messages FINAL WHERE {}",
        filter.sql()
    );
    (sql, filter)
}

/// datagrepper's order: by timestamp (to the microsecond, as datanommer stores it), ties by
/// arrival (datanommer's row id, our stream sequence); `desc` reverses both.
fn order_by(timestamp: &str, sequence: &str, direction: &str) -> String {
    format!(
        "{} {direction}, {sequence} {direction}",
        timestamp_micros_sql(timestamp)
    )
}

/// datagrepper's `rows_per_page` and `page`, bounded.
fn page_bounds(
    page: Option<i64>,
    rows_per_page: Option<i64>,
    state: &AppState,
) -> Result<(u64, u64), ApiError> {
    let api_config = &state.config.api;
    let rows = rows_per_page.unwrap_or(i64::from(api_config.default_rows_per_page));
    let max_rows = i64::from(api_config.max_rows_per_page);
    if rows < 1 || rows > max_rows {
        return Err(ApiError::bad_parameter(
            "rows_per_page",
            format!("{rows} is not between 1 and {max_rows}"),
        ));
    }
    let page = page.unwrap_or(1);
    if page < 1 {
        return Err(ApiError::bad_parameter(
            "page",
            format!("{page} is not 1 or more"),
        ));
    }
    let depth = (page as u64).saturating_mul(rows as u64);
    if depth > MAX_PAGE_DEPTH {
        return Err(ApiError::bad_parameter(
            "page",
            format!(
                "page {page} of {rows} rows reaches row {depth}; at most {MAX_PAGE_DEPTH}: narrow the window instead"
            ),
        ));
    }
    Ok((page as u64, rows as u64))
}

fn parse_order(raw: Option<&str>) -> Result<String, ApiError> {
    match raw {
        None => Ok("desc".to_string()),
        Some(order @ ("asc" | "desc")) => Ok(order.to_string()),
        Some(other) => Err(ApiError::bad_parameter(
            "order",
            format!("{other:?} is not asc or desc"),
        )),
    }
}

/// datagrepper reads `grouped` with Paste's `asbool`; grouping itself is not supported.
fn parse_grouped(raw: Option<&str>) -> Result<bool, ApiError> {
    let Some(text) = raw else {
        return Ok(false);
    };
    match text.trim().to_ascii_lowercase().as_str() {
        "false" | "no" | "off" | "n" | "f" | "0" => Ok(false),
        "true" | "yes" | "on" | "y" | "t" | "1" => Err(ApiError::bad_parameter(
            "grouped",
            "grouped=true (fedmsg.meta's conglomeration) is not supported",
        )),
        _ => Err(ApiError::bad_parameter(
            "grouped",
            format!("{text:?} is not true or false"),
        )),
    }
}

/// datagrepper validates its HTML-only parameters even for JSON answers; so do we. JSONP is
/// refused rather than ignored, so that a JSONP client gets a clear error.
fn check_presentation(
    size: Option<&str>,
    chrome: Option<&str>,
    callback: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(size) = size {
        if !SIZES.contains(&size) {
            return Err(ApiError::bad_parameter(
                "size",
                format!("{size:?} is not one of {}", SIZES.join(", ")),
            ));
        }
    }
    if let Some(chrome) = chrome {
        check_true_or_false("chrome", chrome)?;
    }
    if callback.is_some_and(|name| !name.is_empty()) {
        return Err(ApiError::bad_parameter(
            "callback",
            "JSONP is not supported; the API answers JSON",
        ));
    }
    Ok(())
}

fn check_true_or_false(parameter: &str, value: &str) -> Result<(), ApiError> {
    if value == "true" || value == "false" {
        return Ok(());
    }
    Err(ApiError::bad_parameter(
        parameter,
        format!("{value:?} is not true or false"),
    ))
}

/// datagrepper's two extra rules for `contains`, which scans message bodies.
fn check_contains(lists: &ListFilters, range: &TimeRange, now: f64) -> Result<(), ApiError> {
    if lists.contains.is_empty() {
        return Ok(());
    }
    if range.start < now - CONTAINS_MAX_AGE_SECONDS {
        return Err(ApiError::bad_parameter(
            "contains",
            "When using contains, specify a start at most eight months into the past",
        ));
    }
    if lists.categories.is_empty() && lists.topics.is_empty() {
        return Err(ApiError::bad_parameter(
            "contains",
            "When using contains, specify either a topic or a category as well",
        ));
    }
    Ok(())
}

fn now_micros() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
}

fn string_field(envelope: &Value, key: &str) -> Option<String> {
    envelope
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Rebuilds datanommer's view of a stored message from its envelope.
fn raw_message(stored: StoredMessage, meta: &[String]) -> RawMessage {
    let envelope = match serde_json::from_str::<Value>(&stored.body) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::error!(msg_id = %stored.msg_id, %error, "a stored envelope is not JSON");
            Value::Null
        }
    };
    // datanommer stores no headers as `{}` too.
    let headers = match envelope.get("headers") {
        Some(Value::Object(headers)) => Value::Object(headers.clone()),
        _ => Value::Object(serde_json::Map::new()),
    };
    let meta = MessageMeta::asked(meta, &envelope, &stored.usernames, &stored.packages);
    RawMessage {
        i: stored.i,
        timestamp: datagrepper_timestamp(stored.timestamp),
        certificate: string_field(&envelope, "certificate"),
        signature: string_field(&envelope, "signature"),
        username: string_field(&envelope, "username"),
        crypto: string_field(&envelope, "crypto"),
        msg: envelope.get("msg").cloned().unwrap_or(Value::Null),
        headers,
        source_name: string_field(&envelope, "source_name"),
        source_version: string_field(&envelope, "source_version"),
        meta,
        msg_id: stored.msg_id,
        topic: stored.topic,
    }
}

#[OpenApi]
impl HistoryApi {
    /// Message history, datagrepper-compatible (`/raw`).
    ///
    /// Filters are ANDed; the values of one filter are ORed; `not_*` exclude. With no `start`,
    /// `end` or `delta` the window is the last hour; `end` alone means the 600 s before it. A
    /// window is at most 31 days, `page × rows_per_page` at most 10000.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/raw", method = "get")]
    async fn raw(
        &self,
        uri: &Uri,
        /// Window start: epoch seconds (or ISO 8601).
        #[oai(validator(
            pattern = r"^(([0-9]{1,9}|[0-6][0-9]{9})(\.[0-9]+)?|(19[7-9][0-9]|2[01][0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?)$"
        ))]
        start: Query<Option<String>>,
        /// Window end: epoch seconds (or ISO 8601); default now.
        #[oai(validator(
            pattern = r"^(([0-9]{1,9}|[0-6][0-9]{9})(\.[0-9]+)?|(19[7-9][0-9]|2[01][0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?)$"
        ))]
        end: Query<Option<String>>,
        /// Window length in seconds, back from `end` (or forward from `start`).
        #[oai(validator(pattern = r"^([0-9]{1,6}|1[0-9]{6}|2[0-5][0-9]{5})(\.[0-9]+)?$"))]
        delta: Query<Option<String>>,
        /// Page number, from 1.
        #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
        page: Query<Option<i64>>,
        /// Messages per page (default 25, at most 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        rows_per_page: Query<Option<i64>>,
        /// `desc` (default, newest first) or `asc`, by timestamp.
        #[oai(validator(pattern = r"^(asc|desc)$"))]
        order: Query<Option<String>>,
        /// Messages concerning any of these people (fedmsg.meta usernames). Repeatable.
        user: Query<Vec<String>>,
        /// Messages concerning any of these packages (fedmsg.meta packages). Repeatable.
        package: Query<Vec<String>>,
        /// Messages of any of these categories (4th topic token). Repeatable.
        category: Query<Vec<String>>,
        /// Messages of any of these exact topics. Repeatable.
        topic: Query<Vec<String>>,
        /// Messages whose `msg`, as datanommer's JSON text (sorted keys, no spaces, `\uXXXX`
        /// escapes), is `LIKE '%value%'` for any value: case-sensitive, `%` and `_` are
        /// wildcards, `\` escapes. Needs a `topic` or `category` and a start at most 32 weeks
        /// ago. Repeatable.
        contains: Query<Vec<String>>,
        /// Exclude messages concerning any of these people. Repeatable.
        not_user: Query<Vec<String>>,
        /// Exclude messages concerning any of these packages. Repeatable.
        not_package: Query<Vec<String>>,
        /// Exclude these categories. Repeatable.
        not_category: Query<Vec<String>>,
        /// Exclude these topics. Repeatable.
        not_topic: Query<Vec<String>>,
        /// Add `meta` to each message: `usernames`, `packages`, and fedmsg.meta's `title`,
        /// `subtitle`, `link`, `icon`, `secondary_icon`, `objects`. Repeatable.
        meta: Query<Vec<String>>,
        /// Only `false` is supported.
        #[oai(validator(pattern = r"^(false|no|off|n|f|0)$"))]
        grouped: Query<Option<String>>,
        /// datagrepper's HTML card size; validated, unused.
        #[oai(validator(pattern = r"^(small|medium|large|extra-large)$"))]
        size: Query<Option<String>>,
        /// datagrepper's HTML chrome switch (`true`/`false`); validated, unused.
        #[oai(validator(pattern = r"^(true|false)$"))]
        chrome: Query<Option<String>>,
        /// JSONP is not supported: a value is a 400 (empty, as datagrepper, means none).
        #[oai(validator(max_length = 0))]
        callback: Query<Option<String>>,
    ) -> Result<Json<RawPage>, ApiError> {
        reject_repeated(
            uri,
            &[
                "start",
                "end",
                "delta",
                "page",
                "rows_per_page",
                "order",
                "grouped",
                "size",
                "chrome",
                "callback",
            ],
        )?;
        let now = now_micros();
        let range = timerange::assemble(
            RangeParameters {
                start: start.0.as_deref(),
                end: end.0.as_deref(),
                delta: delta.0.as_deref(),
            },
            now,
        )?;
        let (page, rows_per_page) = page_bounds(page.0, rows_per_page.0, &self.state)?;
        let order = parse_order(order.0.as_deref())?;
        let grouped = parse_grouped(grouped.0.as_deref())?;
        check_meta(&meta.0)?;
        check_presentation(
            size.0.as_deref(),
            chrome.0.as_deref(),
            callback.0.as_deref(),
        )?;
        let lists = ListFilters {
            users: user.0,
            packages: package.0,
            categories: category.0,
            topics: topic.0,
            contains: contains.0,
            not_users: not_user.0,
            not_packages: not_package.0,
            not_categories: not_category.0,
            not_topics: not_topic.0,
        };
        check_contains(&lists, &range, timerange::from_micros(now))?;

        let (selected_sql, filter) = selected_messages(&range, &lists);
        let direction = if order == "asc" { "ASC" } else { "DESC" };
        let count_sql = format!("SELECT count() FROM ({selected_sql})");
        // The page's keys from the narrow columns, then the bodies of those keys alone (the set
        // of keys prunes `messages`' sort key).
        let page_sql = format!(
            "SELECT {STORED_COLUMNS} FROM messages FINAL WHERE (time, msg_id) IN (
                SELECT time, msg_id FROM ({selected_sql})
                ORDER BY {} LIMIT ? OFFSET ?)
             ORDER BY {}",
            order_by("event_timestamp", "sequence", direction),
            order_by("timestamp", "stream_sequence", direction),
        );
        let client = &self.state.clickhouse;
        let count_query = filter.bind(client.query(&count_sql)).fetch_one::<u64>();
        let page_query = filter
            .bind(client.query(&page_sql))
            .bind(rows_per_page)
            .bind((page - 1) * rows_per_page)
            .fetch_all::<StoredMessage>();
        let (total, stored) =
            tokio::try_join!(count_query, page_query).map_err(ApiError::unavailable)?;

        let mut raw_messages = Vec::with_capacity(stored.len());
        for message in stored {
            raw_messages.push(raw_message(message, &meta.0));
        }
        let arguments = RawArguments {
            start: range.start,
            end: range.end,
            delta: range.delta,
            users: lists.users,
            packages: lists.packages,
            categories: lists.categories,
            topics: lists.topics,
            contains: lists.contains,
            not_users: lists.not_users,
            not_packages: lists.not_packages,
            not_categories: lists.not_categories,
            not_topics: lists.not_topics,
            page,
            rows_per_page,
            order,
            meta: meta.0,
            grouped,
        };
        Ok(Json(RawPage {
            count: raw_messages.len() as u64,
            pages: total.div_ceil(rows_per_page),
            total,
            raw_messages,
            arguments,
        }))
    }

    /// One message by its `msg_id`, datagrepper-compatible (`/id`).
    ///
    /// Found through an index on `msg_id` (the `message_index` table): the cost does not grow
    /// with the history. When two different messages share an id, the first stored is returned.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/id", method = "get")]
    async fn id(
        &self,
        uri: &Uri,
        /// The message identity (`msg_id`, or statscache's `sha256:…` for messages without one).
        #[oai(validator(min_length = 1))]
        id: Query<Option<String>>,
        /// Add `meta`: `usernames`, `packages`, `title`, `subtitle`, `link`, `icon`,
        /// `secondary_icon`, `objects`. Repeatable.
        meta: Query<Vec<String>>,
        /// datagrepper's HTML card size; validated, unused.
        #[oai(validator(pattern = r"^(small|medium|large|extra-large)$"))]
        size: Query<Option<String>>,
        /// datagrepper's HTML chrome switch; validated, unused.
        #[oai(validator(pattern = r"^(true|false)$"))]
        chrome: Query<Option<String>>,
        /// datagrepper's HTML switch (`true`/`false`); validated, unused.
        #[oai(validator(pattern = r"^(true|false)$"))]
        is_raw: Query<Option<String>>,
        /// JSONP is not supported: a value is a 400 (empty, as datagrepper, means none).
        #[oai(validator(max_length = 0))]
        callback: Query<Option<String>>,
    ) -> Result<Json<RawMessage>, ApiError> {
        reject_repeated(uri, &["id", "size", "chrome", "is_raw", "callback"])?;
        let Some(msg_id) = id.0 else {
            return Err(ApiError::bad_parameter("id", "id is required"));
        };
        check_meta(&meta.0)?;
        check_presentation(
            size.0.as_deref(),
            chrome.0.as_deref(),
            callback.0.as_deref(),
        )?;
        if let Some(is_raw) = is_raw.0.as_deref() {
            check_true_or_false("is_raw", is_raw)?;
        }
        let sql = format!(
            "SELECT {STORED_COLUMNS} FROM messages
             WHERE time IN (SELECT time FROM message_index WHERE msg_id = ?) AND msg_id = ?
             ORDER BY stream_sequence ASC LIMIT 1"
        );
        let stored = self
            .state
            .clickhouse
            .query(&sql)
            .bind(msg_id.as_str())
            .bind(msg_id.as_str())
            .fetch_optional::<StoredMessage>()
            .await
            .map_err(ApiError::unavailable)?;
        let Some(stored) = stored else {
            return Err(ApiError::not_found(format!(
                "no message with id {msg_id:?}"
            )));
        };
        Ok(Json(raw_message(stored, &meta.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_bind_every_value_in_order() {
        let range = TimeRange {
            start: 1344344053.5,
            end: 1344350000.0,
            delta: 5946.5,
        };
        let lists = ListFilters {
            topics: vec!["a'; DROP TABLE messages; --".to_string()],
            contains: vec!["x".to_string(), "y?".to_string()],
            not_users: vec!["ralph".to_string()],
            ..ListFilters::default()
        };
        let filter = history_filter(&range, &lists);
        let placeholders = filter.sql().matches('?').count();
        assert_eq!(placeholders, filter.values.len());
        assert!(!filter.sql().contains("DROP"));
        assert!(filter.sql().contains("NOT hasAny(usernames, ?)"));
        assert!(filter
            .sql()
            .contains("(like(datanommer_msg, ?) OR like(datanommer_msg, ?))"));
    }

    #[test]
    fn contains_reads_its_pattern_as_postgresql_does() {
        assert_eq!(contains_pattern("ralph"), "%ralph%");
        assert_eq!(contains_pattern("a_b%c"), "%a_b%c%");
        // Escaped wildcards and backslashes stay literal, in ClickHouse's spelling.
        assert_eq!(contains_pattern(r"50\%"), r"%50\%%");
        assert_eq!(contains_pattern(r"a\_b"), r"%a\_b%");
        assert_eq!(contains_pattern(r"a\\u00e9"), r"%a\\u00e9%");
        // An escaped ordinary character is that character (ClickHouse would not match it).
        assert_eq!(contains_pattern(r"\a"), "%a%");
        // A trailing backslash escapes datanommer's closing `%`.
        assert_eq!(contains_pattern("ends\\"), r"%ends\%");
    }

    #[test]
    fn people_and_packages_are_looked_up_by_sort_key() {
        let range = TimeRange {
            start: 1344344053.5,
            end: 1344350000.0,
            delta: 5946.5,
        };
        let lists = ListFilters {
            users: vec!["ralph".to_string(), "mjw".to_string()],
            packages: vec!["valgrind".to_string()],
            topics: vec!["org.fedoraproject.prod.git.branch".to_string()],
            ..ListFilters::default()
        };
        let (sql, filter) = selected_messages(&range, &lists);
        assert!(sql.contains("FROM message_users"));
        assert!(filter.sql().starts_with("name IN (?, ?) AND "));
        assert!(filter
            .sql()
            .contains("FROM message_packages WHERE name IN (?)"));
        assert_eq!(filter.sql().matches('?').count(), filter.values.len());

        // Excluding people needs each message's whole list: `messages`, without bodies.
        let excluding = ListFilters {
            not_users: vec!["ralph".to_string()],
            ..lists
        };
        let (sql, filter) = selected_messages(&range, &excluding);
        assert!(sql.contains("FROM messages FINAL"));
        assert!(!sql.contains("body"));
        assert_eq!(filter.sql().matches('?').count(), filter.values.len());
    }

    #[test]
    fn grouped_and_meta_follow_datagrepper_names() {
        assert_eq!(parse_grouped(Some("No")).ok(), Some(false));
        assert!(parse_grouped(Some("yes")).is_err());
        assert!(parse_grouped(Some("maybe")).is_err());
        assert!(check_meta(&["usernames".to_string(), "packages".to_string()]).is_ok());
        assert!(check_meta(&["title".to_string(), "objects".to_string()]).is_ok());
        assert!(check_meta(&["date".to_string()]).is_err());
        assert!(check_meta(&["bogus".to_string()]).is_err());
        assert!(parse_order(Some("DESC")).is_err());
        assert!(check_presentation(Some("huge"), None, None).is_err());
        assert!(check_presentation(None, None, Some("cb")).is_err());
    }

    #[test]
    fn envelopes_become_datanommer_messages() {
        let stored = StoredMessage {
            msg_id: "sha256:ab".to_string(),
            topic: "org.fedoraproject.prod.git.branch".to_string(),
            timestamp: 1344350850.886738,
            i: 0,
            usernames: vec!["limburgher".to_string()],
            packages: vec![],
            body: r#"{"topic":"org.fedoraproject.prod.git.branch","msg":{"agent":"limburgher"},"timestamp":1344350850.886738,"crypto":"x509"}"#.to_string(),
        };
        let message = raw_message(stored, &["usernames".to_string()]);
        assert_eq!(message.timestamp, 1344350850.0);
        assert_eq!(message.crypto.as_deref(), Some("x509"));
        assert_eq!(message.username, None);
        assert_eq!(message.headers, serde_json::json!({}));
        assert_eq!(message.msg, serde_json::json!({"agent": "limburgher"}));
        let meta = message.meta.unwrap();
        assert_eq!(meta.usernames, Some(vec!["limburgher".to_string()]));
        assert_eq!(meta.packages, None);
    }
}
