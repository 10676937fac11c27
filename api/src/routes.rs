//! The OpenAPI-described statistics routes. Handlers validate parameters, call the query
//! modules and render JSON, CSV or NDJSON.
//!
//! A statistic carries an `ETag` computed from its content; a client sending it back in
//! `If-None-Match` gets a bodiless 304 when nothing changed, which saves the transfer and the
//! rendering (not the query: freshness is only known by asking ClickHouse).
//!
//! Pagination is also in headers, as statscache sent it: `Link` (`rel="previous"`/`"next"`),
//! `X-Link-Count` (pages) and `X-Link-Number` (this page). Unlike statscache's, the links keep
//! the request's query string, so following them pages through the same statistic.

use std::time::{SystemTime, UNIX_EPOCH};

use poem::http::{HeaderMap, Uri};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object, OpenApi, ResponseContent};
use serde_json::Value;
use sha2::{Digest, Sha256};
use statscache_shared::config::StatisticKind;
use statscache_shared::schema::PluginCatalogRow;

use crate::error::ApiError;
use crate::params::{parse_time, reject_aliases, reject_repeated, with_page, Order, Page};
use crate::statistics::{self, Bucket, BucketName, StatisticQuery, StatisticRow};
use crate::svg;
use crate::AppState;

pub struct Api {
    pub state: AppState,
}

/// What a statistic computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "kebab-case")]
pub enum PluginKind {
    Count,
    DistinctCount,
    Latest,
}

impl From<StatisticKind> for PluginKind {
    fn from(kind: StatisticKind) -> PluginKind {
        match kind {
            StatisticKind::Count => PluginKind::Count,
            StatisticKind::DistinctCount => PluginKind::DistinctCount,
            StatisticKind::Latest => PluginKind::Latest,
        }
    }
}

/// The text of a value that serializes as a JSON string (an enum), for CSV.
fn json_text(value: &impl ToJSON) -> String {
    match value.to_json() {
        Some(Value::String(text)) => text,
        _ => String::new(),
    }
}

/// A plugin as listed by `GET /api/`.
#[derive(Debug, Clone, Object)]
pub struct PluginDoc {
    pub identifier: String,
    pub name: String,
    pub description: String,
    pub kind: PluginKind,
    /// The ClickHouse table holding the plugin's facts.
    pub table: String,
    /// Topic patterns the plugin processes (empty: all).
    pub topics: Vec<String>,
    /// Buckets the statistic can be requested in.
    pub buckets: Vec<Bucket>,
    /// How far back the plugin keeps statistics, in seconds (0: no limit).
    pub backlog_delta_seconds: u64,
    /// When a worker last published this plugin's definition (epoch seconds).
    pub updated_at: u32,
    /// The event time of the newest fact in the plugin's table (epoch seconds), null when the
    /// table holds none: how up to date the statistic is.
    #[oai(nullable)]
    pub newest_fact_time: Option<u32>,
}

/// One row of a statistic.
#[derive(Debug, Clone, Object)]
pub struct StatisticRowDoc {
    /// Bucket start (epoch seconds); absent for `bucket=all`.
    #[oai(skip_serializing_if_is_none)]
    pub bucket: Option<u32>,
    pub key: String,
    /// The count, for `count` and `distinct-count` statistics.
    #[oai(skip_serializing_if_is_none)]
    pub count: Option<u64>,
    /// The latest value (JSON when the plugin stores JSON), for `latest` statistics.
    #[oai(skip_serializing_if_is_none)]
    pub value: Option<Value>,
    #[oai(skip_serializing_if_is_none)]
    pub timestamp: Option<f64>,
    #[oai(skip_serializing_if_is_none)]
    pub msg_id: Option<String>,
}

/// How a dashboard can lay a statistic out, as statscache's `/api/<plugin>/layout`: its keys,
/// grouped by the part before the first `/` (`compose/rawhide/primary` is in group
/// `compose`); keys without a `/` form one group named after the plugin.
#[derive(Debug, Clone, Object)]
pub struct LayoutDoc {
    pub plugin: String,
    pub groups: Vec<LayoutGroup>,
    /// Whether keys were left out: a layout lists at most 10 000.
    pub truncated: bool,
}

#[derive(Debug, Clone, Object)]
pub struct LayoutGroup {
    pub id: String,
    pub components: Vec<LayoutComponent>,
}

#[derive(Debug, Clone, Object)]
pub struct LayoutComponent {
    /// The key, as in the statistic's rows and its `key` filter.
    pub id: String,
    /// The key without its group.
    pub name: String,
}

/// Groups `keys` (sorted) for [`LayoutDoc`].
fn layout_groups(plugin: &str, keys: Vec<String>) -> Vec<LayoutGroup> {
    let mut groups: Vec<LayoutGroup> = Vec::new();
    for key in keys {
        let (group_id, name) = match key.split_once('/') {
            Some((group, rest)) => (group.to_string(), rest.to_string()),
            None => (plugin.to_string(), key.clone()),
        };
        let component = LayoutComponent { id: key, name };
        match groups.iter_mut().find(|group| group.id == group_id) {
            Some(group) => group.components.push(component),
            None => groups.push(LayoutGroup {
                id: group_id,
                components: vec![component],
            }),
        }
    }
    groups
}

/// A page of a statistic.
#[derive(Debug, Clone, Object)]
pub struct StatisticPage {
    pub plugin: String,
    pub kind: PluginKind,
    pub bucket: Bucket,
    pub start: f64,
    pub end: f64,
    pub page: u32,
    pub rows_per_page: u32,
    pub pages: u64,
    pub total: u64,
    pub rows: Vec<StatisticRowDoc>,
}

/// The plugin list as JSON, CSV (topics and buckets separated by spaces) or NDJSON.
#[derive(ResponseContent)]
pub enum PluginListBody {
    Json(Json<Vec<PluginDoc>>),
    #[oai(content_type = "text/csv; charset=utf-8")]
    Csv(PlainText<String>),
    #[oai(content_type = "application/x-ndjson")]
    Ndjson(PlainText<String>),
}

#[derive(ApiResponse)]
pub enum PluginListResponse {
    /// The plugins, in the requested format.
    #[oai(status = 200)]
    Ok(PluginListBody),
}

#[derive(ResponseContent)]
pub enum StatisticBody {
    Json(Json<StatisticPage>),
    #[oai(content_type = "text/csv; charset=utf-8")]
    Csv(PlainText<String>),
    #[oai(content_type = "application/x-ndjson")]
    Ndjson(PlainText<String>),
    /// The page of rows drawn as a chart (see the `svg` module).
    #[oai(content_type = "image/svg+xml")]
    Svg(PlainText<String>),
}

#[derive(ApiResponse)]
pub enum StatisticResponse {
    /// The statistic, in the requested format.
    #[oai(status = 200)]
    Ok(
        StatisticBody,
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
        /// The previous and next pages (`rel="previous"`, `rel="next"`), where there are any.
        #[oai(header = "Link")]
        Option<String>,
        /// How many pages the statistic has.
        #[oai(header = "X-Link-Count")]
        u64,
        /// This page's number.
        #[oai(header = "X-Link-Number")]
        u32,
    ),
    /// The client's copy (`If-None-Match`) is current.
    #[oai(status = 304)]
    NotModified(
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Ndjson,
    Svg,
}

/// The values of `format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum FormatName {
    Json,
    Csv,
    Ndjson,
    /// Same as ndjson.
    Jsonl,
}

impl From<FormatName> for Format {
    fn from(name: FormatName) -> Format {
        match name {
            FormatName::Json => Format::Json,
            FormatName::Csv => Format::Csv,
            FormatName::Ndjson | FormatName::Jsonl => Format::Ndjson,
        }
    }
}

/// The values of a statistic's `format`: those of the plugin list, and a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum StatisticFormatName {
    Json,
    Csv,
    Ndjson,
    /// Same as ndjson.
    Jsonl,
    /// The page of rows as an SVG chart (`image/svg+xml`).
    Svg,
}

impl From<StatisticFormatName> for Format {
    fn from(name: StatisticFormatName) -> Format {
        match name {
            StatisticFormatName::Json => Format::Json,
            StatisticFormatName::Csv => Format::Csv,
            StatisticFormatName::Ndjson | StatisticFormatName::Jsonl => Format::Ndjson,
            StatisticFormatName::Svg => Format::Svg,
        }
    }
}

/// The format: `format` when given, else the media type `Accept` prefers (highest q-value;
/// the first listed among equals), JSON when it names none we serve. `image/svg+xml` counts
/// only where `svg` says a chart can be drawn.
fn negotiate(format: Option<Format>, headers: &HeaderMap, svg: bool) -> Format {
    if let Some(format) = format {
        return format;
    }
    let mut best: Option<(f32, Format)> = None;
    for value in headers.get_all("accept") {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for range in text.split(',') {
            let mut parts = range.split(';');
            let media_type = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut quality = 1.0f32;
            for parameter in parts {
                if let Some((name, value)) = parameter.split_once('=') {
                    if name.trim().eq_ignore_ascii_case("q") {
                        quality = value.trim().parse().unwrap_or(0.0);
                    }
                }
            }
            let format = match media_type.as_str() {
                "text/csv" => Format::Csv,
                "application/x-ndjson" => Format::Ndjson,
                "application/json" | "application/*" | "*/*" => Format::Json,
                "image/svg+xml" if svg => Format::Svg,
                _ => continue,
            };
            if quality <= 0.0 {
                continue;
            }
            if best.is_none_or(|(best_quality, _)| quality > best_quality) {
                best = Some((quality, format));
            }
        }
    }
    best.map_or(Format::Json, |(_, format)| format)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn row_doc(row: StatisticRow) -> StatisticRowDoc {
    let value = row
        .value
        .map(|text| match serde_json::from_str::<Value>(&text) {
            Ok(parsed) if parsed.is_object() || parsed.is_array() => parsed,
            _ => Value::String(text),
        });
    StatisticRowDoc {
        bucket: row.bucket,
        key: row.key,
        count: row.count,
        value,
        timestamp: row.timestamp,
        msg_id: row.msg_id,
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn render_csv(page: &StatisticPage) -> String {
    let mut out = String::from("bucket,key,count,value,timestamp,msg_id\n");
    for row in &page.rows {
        let bucket = row.bucket.map(|b| b.to_string()).unwrap_or_default();
        let count = row.count.map(|c| c.to_string()).unwrap_or_default();
        let value = match &row.value {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let timestamp = row.timestamp.map(|t| t.to_string()).unwrap_or_default();
        let msg_id = row.msg_id.clone().unwrap_or_default();
        let fields = [
            bucket,
            csv_field(&row.key),
            count,
            csv_field(&value),
            timestamp,
            csv_field(&msg_id),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn render_plugins_csv(plugins: &[PluginDoc]) -> String {
    let mut out = String::from(
        "identifier,name,description,kind,table,topics,buckets,backlog_delta_seconds,\
         updated_at,newest_fact_time\n",
    );
    for plugin in plugins {
        let buckets: Vec<&str> = plugin.buckets.iter().map(|bucket| bucket.name()).collect();
        let newest = plugin
            .newest_fact_time
            .map(|time| time.to_string())
            .unwrap_or_default();
        let fields = [
            csv_field(&plugin.identifier),
            csv_field(&plugin.name),
            csv_field(&plugin.description),
            json_text(&plugin.kind),
            csv_field(&plugin.table),
            csv_field(&plugin.topics.join(" ")),
            buckets.join(" "),
            plugin.backlog_delta_seconds.to_string(),
            plugin.updated_at.to_string(),
            newest,
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn render_plugins_ndjson(plugins: &[PluginDoc]) -> String {
    let mut out = String::new();
    for plugin in plugins {
        out.push_str(&plugin.to_json_string());
        out.push('\n');
    }
    out
}

fn render_ndjson(page: &StatisticPage) -> String {
    let mut out = String::new();
    for row in &page.rows {
        let mut object = serde_json::Map::new();
        if let Some(bucket) = row.bucket {
            object.insert("bucket".into(), bucket.into());
        }
        object.insert("key".into(), row.key.clone().into());
        if let Some(count) = row.count {
            object.insert("count".into(), count.into());
        }
        if let Some(value) = &row.value {
            object.insert("value".into(), value.clone());
        }
        if let Some(timestamp) = row.timestamp {
            object.insert("timestamp".into(), timestamp.into());
        }
        if let Some(msg_id) = &row.msg_id {
            object.insert("msg_id".into(), msg_id.clone().into());
        }
        out.push_str(&Value::Object(object).to_string());
        out.push('\n');
    }
    out
}

/// statscache's `Link` header for page `number` of `pages`: the same request with `page`
/// changed, as a path-absolute reference (RFC 8288 resolves it against the request URI).
fn pagination_links(uri: &Uri, number: u32, pages: u64) -> Option<String> {
    let mut links = Vec::new();
    if number > 1 {
        let previous = with_page(uri, u64::from(number) - 1);
        links.push(format!("<{previous}>; rel=\"previous\""));
    }
    if u64::from(number) < pages {
        let next = with_page(uri, u64::from(number) + 1);
        links.push(format!("<{next}>; rel=\"next\""));
    }
    if links.is_empty() {
        return None;
    }
    Some(links.join(", "))
}

pub(crate) fn etag(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let mut tag = String::from("\"");
    for byte in &digest[..12] {
        tag.push_str(&format!("{byte:02x}"));
    }
    tag.push('"');
    tag
}

/// Whether `If-None-Match` names `tag` (or is `*`). Weak tags compare equal to strong ones, as
/// RFC 9110 asks for this header.
pub(crate) fn client_has_current(headers: &HeaderMap, tag: &str) -> bool {
    for value in headers.get_all("if-none-match") {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for candidate in text.split(',') {
            let candidate = candidate.trim();
            let candidate = candidate.strip_prefix("W/").unwrap_or(candidate);
            if candidate == "*" || candidate == tag {
                return true;
            }
        }
    }
    false
}

impl Api {
    /// The catalog entry a request names, by identifier or by statscache's per-interval
    /// identifier (`volume-by-topic-daily`), with the bucket such a name implies.
    async fn find_plugin(
        &self,
        requested: &str,
    ) -> Result<(PluginCatalogRow, Option<Bucket>), ApiError> {
        let (identifier, bucket_from_name) = statistics::split_interval_suffix(requested);
        let catalog = statistics::catalog(&self.state.clickhouse).await?;
        for entry in catalog {
            if entry.identifier == identifier {
                return Ok((entry, bucket_from_name));
            }
        }
        if statscache_shared::statscache::find(requested).is_some() {
            return Err(ApiError::not_found(format!(
                "{requested:?} is a statscache identifier, served as statscache served it at \
                 /statscache/api/{requested}; see /api/ for the plugins here"
            )));
        }
        Err(ApiError::not_found(format!(
            "no plugin named {requested:?}; see /api/"
        )))
    }
}

#[OpenApi]
impl Api {
    /// List the statistics (plugins) the workers keep.
    #[oai(path = "/api/", method = "get")]
    async fn list_plugins(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        /// Default json; without it, the `Accept` header chooses (q-values honoured).
        format: Query<Option<FormatName>>,
    ) -> Result<PluginListResponse, ApiError> {
        reject_repeated(uri, &["format"])?;
        let format = negotiate(format.0.map(Format::from), headers, false);
        let catalog = statistics::catalog(&self.state.clickhouse).await?;
        let mut tables = Vec::with_capacity(catalog.len());
        for row in &catalog {
            tables.push(row.table_name.clone());
        }
        let newest_fact_times = statistics::newest_fact_times(&self.state.clickhouse, tables).await;
        let mut plugins = Vec::with_capacity(catalog.len());
        for row in catalog {
            // A kind this api does not know (a newer worker's) cannot be served: not listed.
            let Some(kind) = row.kind() else {
                tracing::warn!(plugin = %row.identifier, kind = %row.kind, "unknown plugin kind");
                continue;
            };
            let newest_fact_time = newest_fact_times.get(&row.table_name).copied();
            plugins.push(PluginDoc {
                buckets: statistics::BUCKETS.to_vec(),
                identifier: row.identifier,
                name: row.name,
                description: row.description,
                kind: PluginKind::from(kind),
                table: row.table_name,
                topics: row.topics,
                backlog_delta_seconds: row.backlog_delta_seconds,
                updated_at: row.updated_at,
                newest_fact_time,
            });
        }
        let body = match format {
            // Not negotiated here: there is no chart of the plugin list.
            Format::Json | Format::Svg => PluginListBody::Json(Json(plugins)),
            Format::Csv => PluginListBody::Csv(PlainText(render_plugins_csv(&plugins))),
            Format::Ndjson => PluginListBody::Ndjson(PlainText(render_plugins_ndjson(&plugins))),
        };
        Ok(PluginListResponse::Ok(body))
    }

    /// A plugin's layout: its keys, grouped, for a dashboard to arrange.
    #[oai(path = "/api/:plugin/layout", method = "get")]
    async fn layout(
        &self,
        /// Plugin identifier, as listed by `/api/`.
        plugin: Path<String>,
    ) -> Result<Json<LayoutDoc>, ApiError> {
        let (entry, _) = self.find_plugin(&plugin.0).await?;
        let limit = statistics::MAX_LAYOUT_KEYS;
        let mut keys =
            statistics::keys(&self.state.clickhouse, &entry.table_name, limit + 1).await?;
        let truncated = keys.len() as u64 > limit;
        keys.truncate(limit as usize);
        Ok(Json(LayoutDoc {
            groups: layout_groups(&entry.identifier, keys),
            plugin: entry.identifier,
            truncated,
        }))
    }

    /// One statistic, bucketed in time, filtered by key, paginated.
    ///
    /// statscache's interval identifiers (`volume-by-topic-daily`) select the bucket too.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/api/:plugin", method = "get")]
    async fn statistic(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        /// Plugin identifier, as listed by `/api/`.
        plugin: Path<String>,
        /// Range start: epoch seconds or ISO 8601 (default: the beginning).
        #[oai(validator(
            pattern = r"^(([0-9]{1,9}|[0-6][0-9]{9})(\.[0-9]+)?|(19[7-9][0-9]|2[01][0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?)$"
        ))]
        start: Query<Option<String>>,
        /// Range end: epoch seconds or ISO 8601 (default: now). Not with `stop`.
        #[oai(validator(
            pattern = r"^(([0-9]{1,9}|[0-6][0-9]{9})(\.[0-9]+)?|(19[7-9][0-9]|2[01][0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?)$"
        ))]
        end: Query<Option<String>>,
        /// statscache's name for `end`. Not with `end`.
        #[oai(validator(
            pattern = r"^(([0-9]{1,9}|[0-6][0-9]{9})(\.[0-9]+)?|(19[7-9][0-9]|2[01][0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?)$"
        ))]
        stop: Query<Option<String>>,
        /// Default: day for counts, all for latest; statscache's `hourly`, `daily`… and `none`
        /// (all) are accepted too. Must agree with an interval identifier (`…-daily`).
        bucket: Query<Option<BucketName>>,
        /// Only these keys (repeatable).
        key: Query<Vec<String>>,
        /// By bucket (default desc).
        order: Query<Option<Order>>,
        /// Page number, from 1.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000000")))]
        page: Query<Option<i64>>,
        /// Rows per page (default 25, at most 100). Not with `limit`.
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        rows_per_page: Query<Option<i64>>,
        /// statscache's name for `rows_per_page`. Not with `rows_per_page`.
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        /// Default json; without it, the `Accept` header chooses (q-values honoured;
        /// `image/svg+xml` asks for the chart).
        format: Query<Option<StatisticFormatName>>,
    ) -> Result<StatisticResponse, ApiError> {
        reject_repeated(
            uri,
            &[
                "start",
                "end",
                "stop",
                "bucket",
                "order",
                "page",
                "rows_per_page",
                "limit",
                "format",
            ],
        )?;
        reject_aliases(&[("end", end.0.is_some()), ("stop", stop.0.is_some())])?;
        reject_aliases(&[
            ("rows_per_page", rows_per_page.0.is_some()),
            ("limit", limit.0.is_some()),
        ])?;
        let format = negotiate(format.0.map(Format::from), headers, true);
        let (entry, bucket_from_name) = self.find_plugin(&plugin.0).await?;
        let Some(kind) = entry.kind() else {
            return Err(ApiError::not_found(format!(
                "plugin {:?} has an unknown kind {:?}",
                entry.identifier, entry.kind
            )));
        };
        let start_time = match start.0.as_deref() {
            Some(raw) => parse_time("start", raw)?,
            None => 0.0,
        };
        let end_time = match (end.0.as_deref(), stop.0.as_deref()) {
            (Some(raw), _) => parse_time("end", raw)?,
            (None, Some(raw)) => parse_time("stop", raw)?,
            (None, None) => now(),
        };
        if end_time < start_time {
            return Err(ApiError::bad_parameter("end", "end is before start"));
        }
        let bucket = match (bucket.0.map(Bucket::from), bucket_from_name) {
            // statscache's interval identifier is another way to give the bucket.
            (Some(given), Some(from_name)) if given != from_name => {
                return Err(ApiError::bad_parameter(
                    "bucket",
                    format!(
                        "bucket={} and the plugin name {:?} ask for different buckets; give only one",
                        given.name(),
                        plugin.0
                    ),
                ));
            }
            (Some(given), _) => given,
            (None, Some(from_name)) => from_name,
            (None, None) if kind == statscache_shared::config::StatisticKind::Latest => Bucket::All,
            (None, None) => Bucket::Day,
        };
        let rows = rows_per_page.0.or(limit.0);
        let api_config = &self.state.config.api;
        let page = Page::parse(
            page.0,
            rows,
            api_config.default_rows_per_page,
            api_config.max_rows_per_page,
        )?;
        let query = StatisticQuery {
            start: start_time,
            end: end_time,
            bucket,
            keys: key.0,
            order: order.0.unwrap_or(Order::Desc),
            page,
        };
        let (rows, total) =
            statistics::fetch(&self.state.clickhouse, &entry.table_name, kind, &query).await?;
        let result_pages = page.pages(total);
        let result = StatisticPage {
            plugin: entry.identifier.clone(),
            kind: PluginKind::from(kind),
            bucket,
            start: start_time,
            end: end_time,
            page: page.number,
            rows_per_page: page.rows_per_page,
            pages: result_pages,
            total,
            rows: rows.into_iter().map(row_doc).collect(),
        };
        let cache_control = "public, max-age=30".to_string();
        let tag = etag(&format!(
            "{format:?}|{}|{}",
            result.total,
            render_ndjson(&result)
        ));
        if client_has_current(headers, &tag) {
            return Ok(StatisticResponse::NotModified(tag, cache_control));
        }
        let body = match format {
            Format::Json => StatisticBody::Json(Json(result)),
            Format::Csv => StatisticBody::Csv(PlainText(render_csv(&result))),
            Format::Ndjson => StatisticBody::Ndjson(PlainText(render_ndjson(&result))),
            Format::Svg => StatisticBody::Svg(PlainText(svg::render(&result))),
        };
        let links = pagination_links(uri, page.number, result_pages);
        let response =
            StatisticResponse::Ok(body, tag, cache_control, links, result_pages, page.number);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn if_none_match_names_the_current_tag() {
        let tag = "\"abc\"";
        let mut headers = HeaderMap::new();
        assert!(!client_has_current(&headers, tag));
        headers.insert("if-none-match", "\"old\", W/\"abc\"".parse().unwrap());
        assert!(client_has_current(&headers, tag));
        headers.insert("if-none-match", "\"old\"".parse().unwrap());
        assert!(!client_has_current(&headers, tag));
        headers.insert("if-none-match", "*".parse().unwrap());
        assert!(client_has_current(&headers, tag));
    }

    #[test]
    fn layouts_group_keys_by_their_first_segment() {
        let keys = [
            "compose/rawhide/arm",
            "compose/rawhide/primary",
            "plain",
            "updates/f29",
        ];
        let groups = layout_groups("releng", keys.iter().map(|k| k.to_string()).collect());
        let shape: Vec<(String, Vec<(String, String)>)> = groups
            .into_iter()
            .map(|group| {
                let components = group
                    .components
                    .into_iter()
                    .map(|c| (c.id, c.name))
                    .collect();
                (group.id, components)
            })
            .collect();
        let pair = |id: &str, name: &str| (id.to_string(), name.to_string());
        assert_eq!(
            shape,
            vec![
                (
                    "compose".to_string(),
                    vec![
                        pair("compose/rawhide/arm", "rawhide/arm"),
                        pair("compose/rawhide/primary", "rawhide/primary")
                    ]
                ),
                ("releng".to_string(), vec![pair("plain", "plain")]),
                ("updates".to_string(), vec![pair("updates/f29", "f29")]),
            ]
        );
    }

    #[test]
    fn links_keep_the_query_and_change_the_page() {
        let uri: Uri = "/api/volume?bucket=all&page=2&key=a%26b".parse().unwrap();
        assert_eq!(
            pagination_links(&uri, 2, 3).as_deref(),
            Some(
                "</api/volume?bucket=all&key=a%26b&page=1>; rel=\"previous\", \
                 </api/volume?bucket=all&key=a%26b&page=3>; rel=\"next\""
            )
        );
        let first: Uri = "/api/volume".parse().unwrap();
        assert_eq!(
            pagination_links(&first, 1, 2).as_deref(),
            Some("</api/volume?page=2>; rel=\"next\"")
        );
        assert_eq!(pagination_links(&first, 1, 1), None);
    }

    #[test]
    fn format_negotiation() {
        let accept = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("accept", value.parse().unwrap());
            negotiate(None, &headers, false)
        };
        assert_eq!(negotiate(None, &HeaderMap::new(), true), Format::Json);
        assert_eq!(accept("text/csv"), Format::Csv);
        assert_eq!(accept("text/csv;q=0.5, */*"), Format::Json);
        assert_eq!(accept("application/json;q=0.1, text/csv"), Format::Csv);
        assert_eq!(accept("application/x-ndjson, text/csv"), Format::Ndjson);
        assert_eq!(accept("text/csv;q=0, text/html"), Format::Json);
        let mut headers = HeaderMap::new();
        headers.insert("accept", "text/csv".parse().unwrap());
        let jsonl = Some(Format::from(FormatName::Jsonl));
        assert_eq!(negotiate(jsonl, &headers, false), Format::Ndjson);
        // A chart where one can be drawn; elsewhere the next acceptable type.
        headers.insert("accept", "image/svg+xml, */*;q=0.8".parse().unwrap());
        assert_eq!(negotiate(None, &headers, true), Format::Svg);
        assert_eq!(negotiate(None, &headers, false), Format::Json);
    }
}
