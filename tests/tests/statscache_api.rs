//! statscache's API at `/statscache/api/`, identifier by identifier, against real servers holding
//! the real corpus (stored by a real worker). Every row is checked against a reference: for the
//! volume by nothing, category and topic, computed here from the corpus file (windows by epoch
//! arithmetic, stamped with their end); for users and packages (named by our fedmsg.meta port),
//! a direct SQL count over our facts. Checked per identifier: the shape of a row, timestamps
//! (window ends), both orders, every page and its headers (`Link`, `X-Link-Count`,
//! `X-Link-Number`, CORS); then on some: `start`/`stop`, `limit`, JSONP, CSV, 406, 404, 400 and
//! the layout.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use statscache_shared::statscache::{identifiers, Identifier, Model};
use statscache_tests::corpus::real_lines;
use statscache_tests::stack::CorpusStack;
use statscache_tests::wait_for;

/// A statscache row: (timestamp, key, volume).
type Row = (i64, String, u64);

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn get(url: &str, accept: Option<&str>) -> Answer {
    let mut request = reqwest::Client::new().get(url);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.expect("request");
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.expect("body"),
    }
}

fn header(answer: &Answer, name: &str) -> String {
    answer
        .headers
        .get(name)
        .map(|value| value.to_str().expect("text header").to_string())
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// The keys the corpus message `envelope` counts under for `plugin`, where a reference can be
/// computed from the file (`None`: users and packages, checked against SQL).
fn corpus_keys(plugin: &str, envelope: &Value) -> Option<Vec<String>> {
    let topic = envelope["topic"].as_str().unwrap_or("").to_string();
    match plugin {
        "volume" => Some(vec![String::new()]),
        "volume-by-category" => Some(vec![topic.split('.').nth(3).unwrap_or("").to_string()]),
        "volume-by-topic" => Some(vec![topic]),
        _ => None,
    }
}

/// Every row of a volume identifier of `seconds` from the corpus file, newest first, keys in
/// order within a timestamp.
fn corpus_rows(plugin: &str, seconds: i64) -> Option<Vec<Row>> {
    let mut counts = std::collections::BTreeMap::new();
    for line in real_lines() {
        let envelope: Value = serde_json::from_str(&line).expect("corpus line");
        let time = envelope["timestamp"].as_f64().expect("timestamp").floor() as i64;
        let end = (time / seconds + 1) * seconds;
        for key in corpus_keys(plugin, &envelope)? {
            *counts.entry((end, key)).or_insert(0u64) += 1;
        }
    }
    Some(newest_first(
        counts.into_iter().map(|((end, key), n)| (end, key, n)),
    ))
}

fn newest_first(rows: impl IntoIterator<Item = Row>) -> Vec<Row> {
    let mut rows: Vec<Row> = rows.into_iter().collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    rows
}

fn oldest_first(rows: &[Row]) -> Vec<Row> {
    let mut rows = rows.to_vec();
    rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    rows
}

/// The same rows from a direct SQL count over our plugin's facts.
async fn sql_rows(stack: &CorpusStack, plugin: &str, seconds: i64) -> Vec<Row> {
    let table = format!("stat_{}", plugin.replace('-', "_"));
    let rows: Vec<(u32, String, u64)> = stack
        .servers
        .client()
        .query(&format!(
            "SELECT toUInt32(intDiv(toUInt32(time), {seconds}) * {seconds} + {seconds}) AS ts,
                    key, uniqExact(msg_id) FROM {table} GROUP BY ts, key"
        ))
        .fetch_all()
        .await
        .expect("SQL over the facts");
    newest_first(
        rows.into_iter()
            .map(|(end, key, n)| (i64::from(end), key, n)),
    )
}

/// The reference rows of a volume identifier.
async fn reference(stack: &CorpusStack, identifier: &Identifier) -> Vec<Row> {
    let seconds = i64::from(identifier.window.expect("a volume identifier has a window"));
    match corpus_rows(identifier.family.plugin, seconds) {
        Some(rows) => rows,
        None => sql_rows(stack, identifier.family.plugin, seconds).await,
    }
}

/// A JSON page's rows, each checked for statscache's shape: exactly `timestamp` (a float, as
/// Python wrote it), the key column and `volume`.
fn page_rows(identifier: &Identifier, body: &str) -> Vec<Row> {
    let page: Value = serde_json::from_str(body).expect("a JSON array");
    let mut rows = Vec::new();
    for row in page.as_array().expect("an array of rows") {
        let object = row.as_object().expect("a row is an object");
        let mut names: Vec<&str> = object.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut expected = vec!["timestamp", "volume"];
        expected.extend(identifier.family.column);
        expected.sort_unstable();
        assert_eq!(names, expected, "{}: {row}", identifier.ident);
        assert!(row["timestamp"].is_f64(), "{}: {row}", identifier.ident);
        let timestamp = row["timestamp"].as_f64().expect("timestamp");
        assert_eq!(timestamp.fract(), 0.0);
        let key = match identifier.family.column {
            Some(column) => row[column].as_str().expect("key").to_string(),
            None => String::new(),
        };
        rows.push((
            timestamp as i64,
            key,
            row["volume"].as_u64().expect("volume"),
        ));
    }
    rows
}

/// Every page of `path_and_query` (JSON), checking each page's headers; returns the rows in the
/// order served.
async fn all_pages(api: &str, identifier: &Identifier, query: &str, per_page: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut page = 1u64;
    loop {
        let url = format!(
            "{api}/statscache/api/{}?{query}&rows_per_page={per_page}&page={page}",
            identifier.ident
        );
        let answer = get(&url, Some("application/json")).await;
        assert_eq!(answer.status, StatusCode::OK, "{url}: {}", answer.body);
        assert_eq!(header(&answer, "content-type"), "application/json");
        assert_eq!(header(&answer, "access-control-allow-origin"), "*");
        assert_eq!(
            header(&answer, "access-control-expose-headers"),
            "Link, X-Link-Number, X-Link-Count"
        );
        let pages: u64 = header(&answer, "x-link-count").parse().expect("pages");
        assert_eq!(header(&answer, "x-link-number"), page.to_string());
        let link = header(&answer, "link");
        let base = format!("{api}/statscache/api/{}?{query}", identifier.ident);
        let mut expected_links = Vec::new();
        if page > 1 {
            expected_links.push(format!(
                "<{base}&rows_per_page={per_page}&page={}>; rel=\"previous\"",
                page - 1
            ));
        }
        if page < pages {
            expected_links.push(format!(
                "<{base}&rows_per_page={per_page}&page={}>; rel=\"next\"",
                page + 1
            ));
        }
        assert_eq!(link, expected_links.join(", "), "{url}");
        let served = page_rows(identifier, &answer.body);
        if pages > 0 {
            assert!(!served.is_empty(), "{url}");
        }
        assert!(served.len() as u64 <= per_page);
        rows.extend(served);
        if page >= pages {
            return rows;
        }
        page += 1;
    }
}

/// The rows plugin counted every row of the corpus (its rollups are recomputed in the same
/// batches as the volume's, which the stack waited for, but by other statements).
async fn wait_until_counted(api: &str, identifier: &Identifier, rows: usize) {
    let url = format!("{api}/statscache/api/{}?rows_per_page=1", identifier.ident);
    let what = format!("{} to count its {rows} rows", identifier.ident);
    wait_for(&what, std::time::Duration::from_secs(60), || {
        let url = url.clone();
        async move {
            let answer = get(&url, None).await;
            let pages: usize = answer
                .headers
                .get("x-link-count")?
                .to_str()
                .ok()?
                .parse()
                .ok()?;
            (pages == rows).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_identifier_answers_as_statscache_did() {
    let stack = CorpusStack::start(&real_lines(), &[]).await;
    let api = stack.api.as_str();

    index(api).await;
    for identifier in identifiers() {
        if identifier.family.model == Model::Log {
            continue;
        }
        let rows = reference(&stack, &identifier).await;
        wait_until_counted(api, &identifier, rows.len()).await;
        let newest = all_pages(api, &identifier, "order=desc", 100).await;
        assert_eq!(newest, rows, "{} newest first", identifier.ident);
        let oldest = all_pages(api, &identifier, "order=asc", 100).await;
        assert_eq!(
            oldest,
            oldest_first(&rows),
            "{} oldest first",
            identifier.ident
        );
        let window = i64::from(identifier.window.unwrap_or(1));
        assert!(rows.iter().all(|(end, _, _)| end % window == 0));
    }

    let volume_1s = statscache_shared::statscache::find("volume-1s").expect("volume-1s");
    let rows = reference(&stack, &volume_1s).await;
    small_pages_reach_into_every_year(api, &volume_1s, &rows).await;
    ranges(api, &rows).await;
    limits(api, &rows).await;
    formats(api, &rows).await;
    refusals(api).await;
    layout(api).await;
}

/// `GET /statscache/api/` (with statscache's trailing slash and without): every identifier, as
/// a JSON array, JSONP or CSV lines.
async fn index(api: &str) {
    let mut expected: Vec<String> = identifiers().into_iter().map(|i| i.ident).collect();
    expected.sort();
    for path in ["/statscache/api/", "/statscache/api"] {
        let answer = get(&format!("{api}{path}"), None).await;
        assert_eq!(answer.status, StatusCode::OK);
        let listed: Vec<String> = serde_json::from_str(&answer.body).expect("an array");
        assert_eq!(listed, expected);
    }
    let answer = get(&format!("{api}/statscache/api/"), Some("text/csv")).await;
    assert_eq!(header(&answer, "content-type"), "text/csv; charset=utf-8");
    assert_eq!(answer.body, expected.join("\n"));
    let answer = get(&format!("{api}/statscache/api/?callback=cb"), None).await;
    assert_eq!(header(&answer, "content-type"), "application/javascript");
    let inner = answer
        .body
        .strip_prefix("cb(")
        .and_then(|rest| rest.strip_suffix(')'))
        .expect("a call of cb");
    assert_eq!(
        serde_json::from_str::<Vec<String>>(inner).ok(),
        Some(expected)
    );
}

/// Pages of 3 rows deep into history: their spans are cut from years down to hours, and each
/// page is the reference's slice.
async fn small_pages_reach_into_every_year(api: &str, identifier: &Identifier, rows: &[Row]) {
    let pages = rows.len().div_ceil(3);
    for page in [1, 2, pages / 3, pages / 2, pages - 1, pages] {
        let url = format!(
            "{api}/statscache/api/{}?rows_per_page=3&page={page}",
            identifier.ident
        );
        let answer = get(&url, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{url}");
        let start = (page - 1) * 3;
        let end = (start + 3).min(rows.len());
        assert_eq!(
            page_rows(identifier, &answer.body),
            rows[start..end],
            "{url}"
        );
        let oldest = oldest_first(rows);
        let url = format!("{url}&order=asc");
        let answer = get(&url, None).await;
        assert_eq!(
            page_rows(identifier, &answer.body),
            oldest[start..end],
            "{url}"
        );
    }
}

/// `start` and `stop` keep the rows whose timestamp (window end) lies between them, both
/// included; fractions and ISO 8601 times too.
async fn ranges(api: &str, rows: &[Row]) {
    let volume_1s = statscache_shared::statscache::find("volume-1s").expect("volume-1s");
    let middle = rows[rows.len() / 2].0;
    let later = rows[rows.len() / 4].0;
    for (start, stop) in [
        (middle as f64, later as f64),
        (middle as f64 - 0.5, later as f64 + 0.5),
        (middle as f64 + 0.5, later as f64 - 0.5),
    ] {
        let expected: Vec<Row> = rows
            .iter()
            .filter(|(end, _, _)| *end as f64 >= start && *end as f64 <= stop)
            .cloned()
            .collect();
        let query = format!("start={start}&stop={stop}");
        let served = all_pages(api, &volume_1s, &query, 7).await;
        assert_eq!(served, expected, "{query}");
    }
    let iso = chrono::DateTime::from_timestamp(middle, 0)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let served = all_pages(api, &volume_1s, &format!("start={iso}"), 100).await;
    let expected: Vec<Row> = rows.iter().filter(|r| r.0 >= middle).cloned().collect();
    assert_eq!(served, expected, "start={iso}");
    // A stop before every window: no rows, no pages.
    let none = get(&format!("{api}/statscache/api/volume-1s?stop=100"), None).await;
    assert_eq!((none.status, none.body.as_str()), (StatusCode::OK, "[]"));
    assert_eq!(header(&none, "x-link-count"), "0");
}

/// `limit` caps the rows before pagination.
async fn limits(api: &str, rows: &[Row]) {
    let base = format!("{api}/statscache/api/volume-1m?limit=7&rows_per_page=5");
    let identifier = statscache_shared::statscache::find("volume-1m").expect("volume-1m");
    let expected = corpus_rows("volume", 60).expect("volume rows");
    let first = get(&format!("{base}&page=1"), None).await;
    assert_eq!(header(&first, "x-link-count"), "2");
    assert_eq!(page_rows(&identifier, &first.body), expected[..5]);
    let second = get(&format!("{base}&page=2"), None).await;
    assert_eq!(page_rows(&identifier, &second.body), expected[5..7]);
    // statscache: the page right after the rows is empty, the one after that a 400.
    let limit_10 = format!("{api}/statscache/api/volume-1s?limit=10&rows_per_page=5");
    let third = get(&format!("{limit_10}&page=3"), None).await;
    assert_eq!((third.status, third.body.as_str()), (StatusCode::OK, "[]"));
    let fourth = get(&format!("{limit_10}&page=4"), None).await;
    assert_eq!(fourth.status, StatusCode::BAD_REQUEST);
    // A limit past the rows is no limit; rows_per_page past 100 is 100.
    let wide = get(
        &format!(
            "{api}/statscache/api/volume-1s?limit={}&rows_per_page=1000",
            rows.len() + 50
        ),
        None,
    )
    .await;
    assert_eq!(
        header(&wide, "x-link-count"),
        rows.len().div_ceil(100).to_string()
    );
}

/// JSONP and CSV carry the same rows as JSON.
async fn formats(api: &str, rows: &[Row]) {
    let identifier = statscache_shared::statscache::find("volume-by-category-1m").expect("ident");
    let url = format!("{api}/statscache/api/volume-by-category-1m?rows_per_page=10");
    let json = get(&url, Some("application/json")).await;
    let expected = corpus_rows("volume-by-category", 60).expect("rows");
    assert_eq!(page_rows(&identifier, &json.body), expected[..10]);
    assert!(
        json.body.starts_with("[{\"timestamp\": ") && json.body.contains(", \"category\": "),
        "written as json.dumps wrote it: {}",
        json.body
    );

    let jsonp = get(&format!("{url}&callback=jQuery361_17"), None).await;
    assert_eq!(header(&jsonp, "content-type"), "application/javascript");
    assert_eq!(jsonp.body, format!("jQuery361_17({})", json.body));
    // `Accept: application/javascript` without a callback is JSON.
    let javascript = get(&url, Some("application/javascript")).await;
    assert_eq!(javascript.body, json.body);

    for (accept, content_type) in [
        ("text/csv", "text/csv; charset=utf-8"),
        ("application/csv", "application/csv"),
    ] {
        let csv = get(&url, Some(accept)).await;
        assert_eq!(header(&csv, "content-type"), content_type);
        let mut lines = csv.body.lines();
        assert_eq!(lines.next(), Some("timestamp,category,volume"));
        let mut served = Vec::new();
        for line in lines {
            let fields: Vec<&str> = line.split(',').collect();
            let timestamp: f64 = fields[0].parse().expect("timestamp");
            assert!(fields[0].ends_with(".0"), "{line}");
            served.push((
                timestamp as i64,
                fields[1].to_string(),
                fields[2].parse::<u64>().expect("volume"),
            ));
        }
        assert_eq!(served, expected[..10]);
        assert!(!csv.body.ends_with('\n'));
        assert_eq!(header(&csv, "x-link-number"), "1");
    }
    let volume_csv = get(
        &format!("{api}/statscache/api/volume-1s?rows_per_page=2"),
        Some("text/csv"),
    )
    .await;
    let expected_csv = format!(
        "timestamp,volume\n{}.0,{}\n{}.0,{}",
        rows[0].0, rows[0].2, rows[1].0, rows[1].2
    );
    assert_eq!(volume_csv.body, expected_csv);
}

/// 406 for an `Accept` statscache could not answer, 404 for what it did not have, 400 where it
/// failed with a 500; and our own `/api/` points statscache's identifiers here.
async fn refusals(api: &str) {
    let html = get(
        &format!("{api}/statscache/api/volume-1s"),
        Some("text/html"),
    )
    .await;
    assert_eq!(html.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(html.body, "Content-type(s) not available for volume-1s");
    let index = get(&format!("{api}/statscache/api/"), Some("image/png")).await;
    assert_eq!(index.status, StatusCode::NOT_ACCEPTABLE);

    let unknown = get(&format!("{api}/statscache/api/volume-2s"), None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body, "\"No such model for 'volume-2s'\"");
    let ours = get(&format!("{api}/api/volume-by-category-1m"), None).await;
    assert_eq!(ours.status, StatusCode::NOT_FOUND);
    assert!(
        ours.body.contains("/statscache/api/volume-by-category-1m"),
        "{}",
        ours.body
    );

    for query in [
        "page=0",
        "page=x",
        "rows_per_page=0",
        "start=soon",
        "callback=alert(1)",
    ] {
        let answer = get(&format!("{api}/statscache/api/volume-1m?{query}"), None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        let error: Value = serde_json::from_str(&answer.body).expect("a JSON error");
        assert_eq!(error["error"], "bad_parameter", "{query}");
    }

    // statscache's home was its web pages; ours is the dashboard.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for home in ["/statscache", "/statscache/"] {
        let response = no_redirects
            .get(format!("{api}{home}"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::FOUND, "{home}");
        assert_eq!(response.headers()["location"], "/");
    }

    // A page of another origin gets the headers echoed for its origin.
    let response = reqwest::Client::new()
        .get(format!("{api}/statscache/api/volume-1m"))
        .header("origin", "https://dashboard.example")
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://dashboard.example"
    );
}

/// The release-engineering layout: statscache's groups and component ids; no other identifier
/// has one.
async fn layout(api: &str) {
    let url = format!("{api}/statscache/api/release-engineering-event-logs/layout");
    let answer = get(&url, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let layout: Value = serde_json::from_str(&answer.body).expect("JSON");
    let mut ids = Vec::new();
    for group in layout["groups"].as_array().expect("groups") {
        for component in group["components"].as_array().expect("components") {
            ids.push(format!(
                "{}/{}",
                group["id"].as_str().expect("group id"),
                component["id"].as_str().expect("component id")
            ));
        }
    }
    assert_eq!(
        ids,
        [
            "compose/compose-rawhide_primary",
            "compose/compose-rawhide_arm",
            "compose/compose-rawhide_ppc",
            "compose/compose-rawhide_s390",
            "updates/updates-fedora",
            "updates/updates-epel",
            "amis/ami-branched",
            "amis/ami-rawhide",
            "appliance/artifact-appliance_armhfp",
            "livecd/artifact-livecd_x86_64",
            "livecd/artifact-livecd_i686",
        ]
    );
    assert_eq!(layout["default_options"]["show_status"], true);
    let jsonp = get(&format!("{url}?callback=render"), None).await;
    assert_eq!(jsonp.body, format!("render({})", answer.body));
    let csv = get(&url, Some("text/csv")).await;
    assert_eq!(csv.status, StatusCode::NOT_ACCEPTABLE);
    let none = get(&format!("{api}/statscache/api/volume-1s/layout"), None).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert_eq!(none.body, "No such resource for volume-1s");
}
