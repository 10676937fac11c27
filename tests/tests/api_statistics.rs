//! Every route of the API, in each of its formats, against real servers holding the real corpus
//! (stored by a real worker). Each value is checked against a reference computed here from the
//! corpus file with plain code: buckets by epoch arithmetic, ranges by comparing timestamps.
//!
//! Time semantics the references follow: a message's time is its timestamp cut to whole seconds;
//! a range includes both ends (`start` cut down, `end` rounded up to whole seconds); day buckets
//! start at 00:00 UTC, weeks on Mondays, months on the 1st.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use statscache_tests::corpus::{category_of, real_lines, topic_of};
use statscache_tests::get_json;
use statscache_tests::stack::CorpusStack;

const CORPUS_SIZE: u64 = 324;
const BUILTIN_PLUGINS: [&str; 11] = [
    "pagure-contributions",
    "pagure-contributions-by-project",
    "pagure-contributions-by-user",
    "release-engineering-event-logs",
    "releng-dashboard",
    "statscache-rows",
    "volume",
    "volume-by-category",
    "volume-by-package",
    "volume-by-topic",
    "volume-by-user",
];

/// The corpus as (whole-second time, parsed envelope).
fn corpus() -> Vec<(i64, Value)> {
    let mut messages = Vec::new();
    for line in real_lines() {
        let envelope: Value = serde_json::from_str(&line).expect("corpus line");
        let timestamp = envelope["timestamp"].as_f64().expect("timestamp");
        messages.push((timestamp.floor() as i64, envelope));
    }
    messages
}

fn day_start(time: i64) -> i64 {
    time - time.rem_euclid(86_400)
}

fn week_start(time: i64) -> i64 {
    let day = Utc
        .timestamp_opt(day_start(time), 0)
        .single()
        .expect("time");
    let days_since_monday = i64::from(day.weekday().num_days_from_monday());
    day.timestamp() - days_since_monday * 86_400
}

fn month_start(time: i64) -> i64 {
    let moment = Utc.timestamp_opt(time, 0).single().expect("time");
    Utc.with_ymd_and_hms(moment.year(), moment.month(), 1, 0, 0, 0)
        .single()
        .expect("first of the month")
        .timestamp()
}

/// Count per (bucket start, key) over the messages whose time is in `[start, end]`.
fn reference(
    bucket_of: impl Fn(i64) -> i64,
    key_of: impl Fn(&Value) -> Vec<String>,
    start: i64,
    end: i64,
) -> BTreeMap<(i64, String), u64> {
    let mut counts = BTreeMap::new();
    for (time, envelope) in corpus() {
        if time < start || time > end {
            continue;
        }
        for key in key_of(&envelope) {
            *counts.entry((bucket_of(time), key)).or_insert(0) += 1;
        }
    }
    counts
}

/// The reference for `bucket=all`, whose rows carry no bucket.
fn reference_all(key_of: impl Fn(&Value) -> Vec<String>) -> BTreeMap<(i64, String), u64> {
    reference(|_| -1, key_of, i64::MIN, i64::MAX)
}

fn nothing(_: &Value) -> Vec<String> {
    vec![String::new()]
}

async fn get(url: &str, accept: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.expect("request");
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response
}

/// (bucket, key) → count of one JSON page's rows; `-1` as the bucket where rows have none.
fn json_rows(page: &Value) -> BTreeMap<(i64, String), u64> {
    let mut rows = BTreeMap::new();
    for row in page["rows"].as_array().expect("rows") {
        let bucket = row["bucket"].as_i64().unwrap_or(-1);
        let key = row["key"].as_str().expect("key").to_string();
        let count = row["count"].as_u64().expect("count");
        assert!(rows.insert((bucket, key), count).is_none(), "{row}");
    }
    rows
}

/// Splits one CSV line into fields (quoted fields may hold commas and doubled quotes).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut characters = line.chars().peekable();
    while let Some(character) = characters.next() {
        match (character, quoted) {
            ('"', true) if characters.peek() == Some(&'"') => {
                field.push('"');
                characters.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (other, _) => field.push(other),
        }
    }
    fields.push(field);
    fields
}

/// The same as [`json_rows`] from a CSV body with the header `bucket,key,count,...`.
fn csv_rows(body: &str) -> BTreeMap<(i64, String), u64> {
    let mut lines = body.lines();
    assert_eq!(
        lines.next(),
        Some("bucket,key,count,value,timestamp,msg_id")
    );
    let mut rows = BTreeMap::new();
    for line in lines {
        let fields = csv_fields(line);
        let bucket = if fields[0].is_empty() {
            -1
        } else {
            fields[0].parse().expect("bucket")
        };
        let count = fields[2].parse().expect("count");
        assert!(rows.insert((bucket, fields[1].clone()), count).is_none());
    }
    rows
}

fn ndjson_rows(body: &str) -> BTreeMap<(i64, String), u64> {
    let mut rows = Vec::new();
    for line in body.lines() {
        rows.push(serde_json::from_str::<Value>(line).expect("ndjson line"));
    }
    json_rows(&serde_json::json!({ "rows": rows }))
}

/// Every row of a statistic in one format, following `page` up to the reported `pages`.
async fn whole(api: &str, path_and_query: &str, format: &str) -> BTreeMap<(i64, String), u64> {
    let mut rows = BTreeMap::new();
    let mut page = 1;
    loop {
        let url = format!("{api}{path_and_query}&rows_per_page=100&page={page}&format={format}");
        let response = get(&url, None).await;
        let pages: u64 = response.headers()["x-link-count"]
            .to_str()
            .expect("header")
            .parse()
            .expect("pages");
        let body = response.text().await.expect("body");
        let page_rows = match format {
            "json" => json_rows(&serde_json::from_str(&body).expect("json")),
            "csv" => csv_rows(&body),
            _ => ndjson_rows(&body),
        };
        rows.extend(page_rows);
        if page >= pages {
            return rows;
        }
        page += 1;
    }
}

/// A statistic equals `expected` in JSON, CSV and NDJSON.
async fn assert_served(api: &str, path_and_query: &str, expected: &BTreeMap<(i64, String), u64>) {
    for format in ["json", "csv", "ndjson"] {
        let served = whole(api, path_and_query, format).await;
        assert_eq!(&served, expected, "{path_and_query} as {format}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_serves_the_corpus_statistics_in_every_format() {
    let stack = CorpusStack::start(&real_lines(), &[]).await;
    let api = stack.api.as_str();

    plugin_list(api).await;
    counts_in_every_bucket_and_format(api).await;
    ranges_keys_and_statscache_names(api).await;
    order_pagination_and_links(api).await;
    pages_cut_across_buckets(api).await;
    caching_and_cors(api).await;
    latest_values(api).await;
    layouts(api).await;
    history(api).await;
    documentation_and_probes(api).await;
}

async fn plugin_list(api: &str) {
    let plugins = get_json(&format!("{api}/api/")).await.expect("plugin list");
    let newest_corpus_time = corpus().iter().map(|(time, _)| *time).max();
    let mut identifiers = BTreeSet::new();
    for plugin in plugins.as_array().expect("array") {
        let identifier = plugin["identifier"].as_str().expect("identifier");
        identifiers.insert(identifier.to_string());
        let table = format!("stat_{}", identifier.replace('-', "_"));
        assert_eq!(plugin["table"], table.as_str(), "{plugin}");
        assert_eq!(
            plugin["buckets"],
            serde_json::json!(["minute", "hour", "day", "week", "month", "all"])
        );
        let latest = ["releng-dashboard", "release-engineering-event-logs"];
        let expected_kind = if latest.contains(&identifier) {
            "latest"
        } else {
            "count"
        };
        assert_eq!(plugin["kind"], expected_kind, "{plugin}");
        if identifier == "volume" {
            assert_eq!(plugin["newest_fact_time"].as_i64(), newest_corpus_time);
        }
    }
    let builtins: BTreeSet<String> = BUILTIN_PLUGINS.iter().map(|p| p.to_string()).collect();
    assert_eq!(identifiers, builtins);

    // The same list as CSV (by `Accept`, as statscache negotiated) and NDJSON.
    let csv = get(&format!("{api}/api/"), Some("text/csv")).await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let body = csv.text().await.expect("csv");
    let mut lines = body.lines();
    let header = csv_fields(lines.next().expect("header"));
    assert_eq!(header[0], "identifier");
    let mut csv_identifiers = BTreeSet::new();
    for line in lines {
        let fields = csv_fields(line);
        assert_eq!(fields.len(), header.len(), "{line}");
        csv_identifiers.insert(fields[0].clone());
    }
    assert_eq!(csv_identifiers, builtins);
    let ndjson = get(&format!("{api}/api/?format=ndjson"), None).await;
    let body = ndjson.text().await.expect("ndjson");
    let mut ndjson_identifiers = BTreeSet::new();
    for line in body.lines() {
        let plugin: Value = serde_json::from_str(line).expect("ndjson line");
        ndjson_identifiers.insert(plugin["identifier"].as_str().expect("id").to_string());
    }
    assert_eq!(ndjson_identifiers, builtins);
}

async fn counts_in_every_bucket_and_format(api: &str) {
    let everything = (i64::MIN, i64::MAX);
    assert_eq!(reference_all(nothing).values().sum::<u64>(), CORPUS_SIZE);
    assert_served(api, "/api/volume?bucket=all", &reference_all(nothing)).await;
    assert_served(
        api,
        "/api/volume-by-category?bucket=all",
        &reference_all(category_of),
    )
    .await;
    assert_served(
        api,
        "/api/volume-by-topic?bucket=day",
        &reference(day_start, topic_of, everything.0, everything.1),
    )
    .await;
    assert_served(
        api,
        "/api/volume-by-category?bucket=week",
        &reference(week_start, category_of, everything.0, everything.1),
    )
    .await;
    assert_served(
        api,
        "/api/volume?bucket=month",
        &reference(month_start, nothing, everything.0, everything.1),
    )
    .await;
    assert_served(
        api,
        "/api/volume?bucket=hour",
        &reference(
            |t| t - t.rem_euclid(3600),
            nothing,
            everything.0,
            everything.1,
        ),
    )
    .await;
    assert_served(
        api,
        "/api/volume?bucket=minute",
        &reference(
            |t| t - t.rem_euclid(60),
            nothing,
            everything.0,
            everything.1,
        ),
    )
    .await;
    // A count statistic defaults to daily buckets.
    let default_bucket = get_json(&format!("{api}/api/volume?rows_per_page=100"))
        .await
        .expect("volume");
    assert_eq!(default_bucket["bucket"], "day");
}

async fn ranges_keys_and_statscache_names(api: &str) {
    // 2014 and 2015, given once as ISO 8601 and once as epoch seconds (statscache's `stop`).
    let (start, end) = (1_388_534_400, 1_451_606_399);
    let expected = reference(|_| -1, category_of, start, end);
    assert!(expected.values().sum::<u64>() > 0);
    assert_served(
        api,
        "/api/volume-by-category?bucket=all&start=2014-01-01T00:00:00Z&end=2015-12-31T23:59:59Z",
        &expected,
    )
    .await;
    assert_served(
        api,
        &format!("/api/volume-by-category?bucket=all&start={start}&stop={end}"),
        &expected,
    )
    .await;
    // The range includes both ends: the first corpus second, alone.
    let first = corpus()[0].0;
    assert_served(
        api,
        &format!("/api/volume?bucket=all&start={first}&end={first}"),
        &reference(|_| -1, nothing, first, first),
    )
    .await;

    // Key filters (repeatable).
    let mut two_categories = BTreeMap::new();
    for ((bucket, key), count) in reference_all(category_of) {
        if key == "bodhi" || key == "compose" {
            two_categories.insert((bucket, key), count);
        }
    }
    assert_eq!(two_categories.len(), 2);
    assert_served(
        api,
        "/api/volume-by-category?bucket=all&key=bodhi&key=compose",
        &two_categories,
    )
    .await;

    // statscache's per-interval identifiers name the bucket.
    let daily = reference(day_start, category_of, i64::MIN, i64::MAX);
    assert_served(api, "/api/volume-by-category-daily?order=asc", &daily).await;
    let named = get_json(&format!("{api}/api/volume-by-category-monthly"))
        .await
        .expect("monthly");
    assert_eq!(named["bucket"], "month");
    assert_eq!(named["plugin"], "volume-by-category");
}

async fn order_pagination_and_links(api: &str) {
    // Buckets come newest first by default, oldest first with order=asc; keys ascend within.
    let descending = get_json(&format!("{api}/api/volume?bucket=month&rows_per_page=100"))
        .await
        .expect("descending");
    let ascending = get_json(&format!(
        "{api}/api/volume?bucket=month&rows_per_page=100&order=asc"
    ))
    .await
    .expect("ascending");
    let buckets = |page: &Value| -> Vec<i64> {
        let mut buckets = Vec::new();
        for row in page["rows"].as_array().expect("rows") {
            buckets.push(row["bucket"].as_i64().expect("bucket"));
        }
        buckets
    };
    let mut sorted = buckets(&ascending);
    sorted.sort();
    assert_eq!(buckets(&ascending), sorted);
    sorted.reverse();
    assert_eq!(buckets(&descending), sorted);

    // Pages of 7 rows: `total`, `pages`, and every row exactly once across them, whether pages
    // are asked for by number or reached by following the `Link` header from the first.
    let expected = reference_all(topic_of);
    let total = expected.len() as u64;
    let pages = total.div_ceil(7);
    let mut by_number = BTreeMap::new();
    for page in 1..=pages {
        // `limit` is statscache's name for `rows_per_page`.
        let url = format!("{api}/api/volume-by-topic?bucket=all&limit=7&page={page}");
        let body = get_json(&url).await.expect("page");
        assert_eq!(body["total"].as_u64(), Some(total));
        assert_eq!(body["pages"].as_u64(), Some(pages));
        assert_eq!(body["page"].as_u64(), Some(page));
        let rows = json_rows(&body);
        assert!(rows.len() <= 7);
        for (key, count) in rows {
            assert!(by_number.insert(key, count).is_none(), "a row on two pages");
        }
    }
    assert_eq!(by_number, expected);

    let mut by_link = BTreeMap::new();
    let mut next = Some("/api/volume-by-topic?bucket=all&rows_per_page=7&order=desc".to_string());
    let mut visited = 0;
    let mut previous_link_of_last = None;
    while let Some(path) = next.take() {
        let response = get(&format!("{api}{path}"), None).await;
        visited += 1;
        let headers = response.headers().clone();
        assert_eq!(headers["x-link-count"], pages.to_string().as_str());
        assert_eq!(headers["x-link-number"], visited.to_string().as_str());
        let links = headers
            .get("link")
            .map(|value| value.to_str().expect("link").to_string())
            .unwrap_or_default();
        let body: Value = response.json().await.expect("page");
        by_link.extend(json_rows(&body));
        for link in links.split(", ").filter(|link| !link.is_empty()) {
            let (target, relation) = link.split_once(">; rel=").expect("link shape");
            let target = target.trim_start_matches('<').to_string();
            assert!(target.contains("rows_per_page=7"), "{target}");
            match relation {
                "\"next\"" => next = Some(target),
                "\"previous\"" => previous_link_of_last = Some(target),
                other => panic!("unknown relation {other}"),
            }
        }
        assert!(visited <= pages, "the links go round");
    }
    assert_eq!(visited, pages);
    assert_eq!(by_link, expected);
    let previous = previous_link_of_last.expect("the last page links back");
    assert!(
        previous.contains(&format!("page={}", pages - 1)),
        "{previous}"
    );

    // Past the last page: an empty page, not an error.
    let beyond = get_json(&format!(
        "{api}/api/volume-by-topic?bucket=all&rows_per_page=7&page={}",
        pages + 1
    ))
    .await
    .expect("beyond");
    assert_eq!(beyond["rows"], serde_json::json!([]));
    assert_eq!(beyond["total"].as_u64(), Some(total));
}

/// Pages of a bucketed statistic are located by per-bucket row counts and read bucket by
/// bucket: small pages, in both orders, over all of history and over a window starting and
/// ending inside buckets, hold every row once and in order (bucket, then key). Some days and
/// months of the corpus have more topics than a page has rows: their pages are read by their
/// keys, taken from the presence rows first.
async fn pages_cut_across_buckets(api: &str) {
    let times: Vec<i64> = corpus().into_iter().map(|(time, _)| time).collect();
    let (first, last) = (times.iter().min().copied(), times.iter().max().copied());
    let (Some(first), Some(last)) = (first, last) else {
        panic!("an empty corpus");
    };
    // A window cutting its first and last day (and week, and month) in the middle.
    let inside = (
        first + (last - first) / 5 + 4_321,
        last - (last - first) / 5 - 1_234,
    );
    let inside_window = format!("&start={}&end={}", inside.0, inside.1);
    let windows = [
        (String::new(), (i64::MIN, i64::MAX)),
        (inside_window, inside),
    ];
    for (window, (start, end)) in windows {
        let buckets = [
            ("day", day_start as fn(i64) -> i64),
            ("week", week_start),
            ("month", month_start),
        ];
        for (bucket, bucket_of) in buckets {
            let expected = reference(bucket_of, topic_of, start, end);
            for order in ["asc", "desc"] {
                let mut in_order: Vec<((i64, String), u64)> =
                    expected.clone().into_iter().collect();
                if order == "desc" {
                    // Buckets newest first, keys still ascending within a bucket.
                    in_order.sort_by(|a, b| b.0 .0.cmp(&a.0 .0).then(a.0 .1.cmp(&b.0 .1)));
                }
                let total = in_order.len() as u64;
                let pages = total.div_ceil(7);
                let mut served = Vec::new();
                for page in 1..=pages {
                    let url = format!(
                        "{api}/api/volume-by-topic?bucket={bucket}&order={order}&rows_per_page=7&page={page}{window}"
                    );
                    let body = get_json(&url).await.expect("page");
                    assert_eq!(body["total"].as_u64(), Some(total), "{url}");
                    for row in body["rows"].as_array().expect("rows") {
                        let bucket = row["bucket"].as_i64().expect("bucket");
                        let key = row["key"].as_str().expect("key").to_string();
                        served.push(((bucket, key), row["count"].as_u64().expect("count")));
                    }
                }
                assert_eq!(served, in_order, "bucket={bucket} order={order}{window}");
            }
        }
    }
}

async fn caching_and_cors(api: &str) {
    let url = format!("{api}/api/volume-by-category?bucket=all&rows_per_page=100");
    let first = get(&url, None).await;
    let tag = first.headers()["etag"].to_str().expect("etag").to_string();
    assert!(first.headers()["cache-control"]
        .to_str()
        .expect("cache-control")
        .contains("max-age"));
    let http = reqwest::Client::new();
    let revalidated = http
        .get(&url)
        .header("if-none-match", &tag)
        .send()
        .await
        .expect("revalidate");
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.headers()["etag"], tag.as_str());
    assert!(revalidated.bytes().await.expect("body").is_empty());
    let stale = http
        .get(&url)
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .expect("stale copy");
    assert_eq!(stale.status(), StatusCode::OK);
    // Another format is another representation, with its own tag.
    let csv = get(&format!("{url}&format=csv"), None).await;
    assert_ne!(csv.headers()["etag"], tag.as_str());

    // A dashboard on another origin may read the statistic and its pagination headers.
    let cross_origin = http
        .get(&url)
        .header("origin", "https://dashboard.example")
        .send()
        .await
        .expect("cross-origin request");
    assert_eq!(cross_origin.status(), StatusCode::OK);
    let headers = cross_origin.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://dashboard.example"
    );
    let exposed = headers["access-control-expose-headers"]
        .to_str()
        .expect("exposed")
        .to_ascii_lowercase();
    for header in ["etag", "link", "x-link-count", "x-link-number"] {
        assert!(exposed.contains(header), "{exposed}");
    }
    let preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://dashboard.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "if-none-match")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://dashboard.example"
    );
}

async fn latest_values(api: &str) {
    // The release-engineering log defaults to one row per component, over all time. JSON and
    // CSV carry the same rows, and each row is a real corpus message at its own time.
    let page = get_json(&format!("{api}/api/releng-dashboard?rows_per_page=100"))
        .await
        .expect("releng");
    assert_eq!(page["bucket"], "all");
    let mut by_id = BTreeMap::new();
    for (_, envelope) in corpus() {
        if let Some(id) = envelope["msg_id"].as_str() {
            by_id.insert(id.to_string(), envelope["timestamp"].as_f64().expect("ts"));
        }
    }
    let rows = page["rows"].as_array().expect("rows");
    assert!(!rows.is_empty());
    let mut json_view = BTreeSet::new();
    for row in rows {
        let msg_id = row["msg_id"].as_str().expect("msg_id");
        let timestamp = row["timestamp"].as_f64().expect("timestamp");
        if let Some(corpus_timestamp) = by_id.get(msg_id) {
            assert_eq!(*corpus_timestamp, timestamp, "{row}");
        }
        assert!(!row["value"].is_null(), "{row}");
        let key = row["key"].as_str().expect("key").to_string();
        json_view.insert((key, msg_id.to_string(), timestamp.to_string()));
    }
    let csv = get(
        &format!("{api}/api/releng-dashboard?rows_per_page=100"),
        Some("text/csv"),
    )
    .await
    .text()
    .await
    .expect("csv");
    let mut csv_view = BTreeSet::new();
    for line in csv.lines().skip(1) {
        let fields = csv_fields(line);
        assert!(fields[0].is_empty() && fields[2].is_empty(), "{line}");
        assert!(!fields[3].is_empty(), "{line}");
        csv_view.insert((fields[1].clone(), fields[5].clone(), fields[4].clone()));
    }
    assert_eq!(csv_view, json_view);
}

/// `/api/<plugin>/layout`: every key once, grouped by its first `/` segment.
async fn layouts(api: &str) {
    let releng_rows = get_json(&format!("{api}/api/releng-dashboard?rows_per_page=100"))
        .await
        .expect("releng");
    let mut releng_keys = BTreeSet::new();
    for row in releng_rows["rows"].as_array().expect("rows") {
        releng_keys.insert(row["key"].as_str().expect("key").to_string());
    }
    let layout = get_json(&format!("{api}/api/releng-dashboard/layout"))
        .await
        .expect("releng layout");
    assert_eq!(layout["plugin"], "releng-dashboard");
    assert_eq!(layout["truncated"], false);
    let mut laid_out = BTreeSet::new();
    for group in layout["groups"].as_array().expect("groups") {
        let group_id = group["id"].as_str().expect("group id");
        for component in group["components"].as_array().expect("components") {
            let id = component["id"].as_str().expect("component id");
            let name = component["name"].as_str().expect("component name");
            assert_eq!(id, format!("{group_id}/{name}"), "{component}");
            assert!(laid_out.insert(id.to_string()), "{id} laid out twice");
        }
    }
    assert_eq!(laid_out, releng_keys);

    // Keys without a `/` are one group, named after the plugin.
    let layout = get_json(&format!("{api}/api/volume-by-category/layout"))
        .await
        .expect("category layout");
    let groups = layout["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["id"], "volume-by-category");
    let mut categories = BTreeSet::new();
    for component in groups[0]["components"].as_array().expect("components") {
        categories.insert(component["id"].as_str().expect("id").to_string());
    }
    let mut expected = BTreeSet::new();
    for (_, key) in reference_all(category_of).into_keys() {
        expected.insert(key);
    }
    assert_eq!(categories, expected);
    let unknown = reqwest::get(format!("{api}/api/no-such-plugin/layout"))
        .await
        .expect("unknown layout");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

async fn history(api: &str) {
    // August 2012 (datagrepper's /raw is bounded to 31 days a request).
    let (start, end) = (1_343_779_200_i64, 1_346_457_599_i64);
    let mut expected = BTreeSet::new();
    for (_, envelope) in corpus() {
        let timestamp = envelope["timestamp"].as_f64().expect("timestamp");
        if timestamp >= start as f64 && timestamp <= end as f64 {
            expected.insert((envelope["topic"].to_string(), envelope["msg"].to_string()));
        }
    }
    let mut served = BTreeSet::new();
    let mut page = 1;
    loop {
        let url =
            format!("{api}/raw?start={start}&end={end}&rows_per_page=100&order=asc&page={page}");
        let body = get_json(&url).await.expect("raw page");
        assert_eq!(body["total"].as_u64(), Some(expected.len() as u64));
        for message in body["raw_messages"].as_array().expect("raw_messages") {
            served.insert((message["topic"].to_string(), message["msg"].to_string()));
        }
        if page >= body["pages"].as_u64().expect("pages") {
            break;
        }
        page += 1;
    }
    assert_eq!(served, expected);

    // One message by its id, as datagrepper's /id.
    let (_, envelope) = corpus()
        .into_iter()
        .find(|(_, envelope)| envelope["msg_id"].is_string())
        .expect("a message with an id");
    let id = envelope["msg_id"].as_str().expect("id");
    let message = get_json(&format!("{api}/id?id={id}")).await.expect("/id");
    assert_eq!(message["msg_id"], id);
    assert_eq!(message["topic"], envelope["topic"]);
    assert_eq!(message["msg"], envelope["msg"]);
    let missing = reqwest::get(format!("{api}/id?id=no-such-message"))
        .await
        .expect("/id");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

async fn documentation_and_probes(api: &str) {
    let spec = get_json(&format!("{api}/openapi.json"))
        .await
        .expect("spec");
    for path in [
        "/api",
        "/api/{plugin}",
        "/api/{plugin}/layout",
        "/raw",
        "/id",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} not in the spec");
    }
    let docs = get(&format!("{api}/docs"), None).await;
    assert!(docs.text().await.expect("docs").contains("<html"));
    get(&format!("{api}/health/livez"), None).await;
    get(&format!("{api}/health/readyz"), None).await;
    let metrics = get(&format!("{api}/metrics"), None)
        .await
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics.contains("statscache_api_request_seconds_count{route=\"/api/:plugin\""),
        "{metrics}"
    );
    let unknown = reqwest::get(format!("{api}/api/no-such-plugin"))
        .await
        .expect("unknown plugin");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let body: Value = unknown.json().await.expect("error body");
    assert_eq!(body["error"], "not_found");
}
