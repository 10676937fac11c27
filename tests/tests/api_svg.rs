//! `GET /api/<plugin>?format=svg` against real servers holding the real corpus: the answer is
//! well-formed SVG (parsed here with quick-xml, end tags checked) whose plotted values — the
//! `data-count` of every bar and the root's `data-total` — are the rows and total of the same
//! request in JSON; latest statistics list every row's key and message. `Accept:
//! image/svg+xml` asks for the chart too, and its `ETag` revalidates to a 304.

use std::collections::BTreeMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use serde_json::Value;
use statscache_tests::corpus::real_lines;
use statscache_tests::get_json;
use statscache_tests::stack::CorpusStack;

/// What an SVG chart plots: the root's attributes and each element carrying `data-key`.
struct Plotted {
    root: BTreeMap<String, String>,
    marks: Vec<BTreeMap<String, String>>,
}

fn attributes(element: &BytesStart) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for attribute in element.attributes() {
        let attribute = attribute.expect("well-formed attribute");
        let name = String::from_utf8_lossy(attribute.key.as_ref()).to_string();
        let value = attribute.unescape_value().expect("attribute value");
        found.insert(name, value.to_string());
    }
    found
}

/// Parses the whole document (panicking on any XML error) and collects what it plots.
fn parse(svg: &str) -> Plotted {
    let mut reader = Reader::from_str(svg);
    let mut root = None;
    let mut marks = Vec::new();
    let mut depth = 0usize;
    loop {
        let event = reader.read_event().expect("well-formed SVG");
        let element = match &event {
            Event::Start(element) => {
                depth += 1;
                element
            }
            Event::Empty(element) => element,
            Event::End(_) => {
                depth -= 1;
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let found = attributes(element);
        if root.is_none() {
            assert_eq!(element.name().as_ref(), b"svg", "the root is <svg>");
            assert_eq!(
                found.get("xmlns").map(String::as_str),
                Some("http://www.w3.org/2000/svg")
            );
            root = Some(found);
            continue;
        }
        if found.contains_key("data-key") {
            marks.push(found);
        }
    }
    assert_eq!(depth, 0, "every element is closed");
    Plotted {
        root: root.expect("an <svg> root"),
        marks,
    }
}

/// (bucket, key) → count, from the JSON rows or from the SVG's bars.
fn json_counts(answer: &Value) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for row in answer["rows"].as_array().expect("rows") {
        let bucket = row["bucket"]
            .as_u64()
            .map(|b| b.to_string())
            .unwrap_or_default();
        let key = row["key"].as_str().expect("key").to_string();
        counts.insert((bucket, key), row["count"].as_u64().expect("count"));
    }
    counts
}

fn plotted_counts(plotted: &Plotted) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for mark in &plotted.marks {
        let bucket = mark.get("data-bucket").cloned().unwrap_or_default();
        let key = mark["data-key"].clone();
        let count: u64 = mark["data-count"].parse().expect("numeric data-count");
        let previous = counts.insert((bucket, key), count);
        assert!(previous.is_none(), "one bar per bucket and key");
    }
    counts
}

async fn svg(url: &str) -> String {
    let response = reqwest::get(url).await.expect("GET svg");
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap_or_default();
    assert!(
        content_type.starts_with("image/svg+xml"),
        "{url}: {content_type}"
    );
    response.text().await.expect("svg body")
}

#[tokio::test]
async fn svg_charts_plot_the_statistic() {
    let stack = CorpusStack::start(&real_lines(), &[]).await;
    let api = &stack.api;
    let count_requests = [
        ("volume-by-category", "bucket=month&rows_per_page=100"),
        ("volume-by-category", "bucket=year&rows_per_page=100"),
        ("volume-by-user", "bucket=all&rows_per_page=100"),
        ("volume-by-topic", "bucket=all&rows_per_page=100&page=2"),
        (
            "volume",
            "bucket=day&start=2012-08-01T00:00:00Z&end=2012-09-01T00:00:00Z",
        ),
        ("volume", "bucket=hour&start=1&end=2"),
    ];
    for (plugin, params) in count_requests {
        let json_url = format!("{api}/api/{plugin}?{params}");
        let Some(answer) = get_json(&json_url).await else {
            // `bucket=year` is no bucket: refused in both formats alike.
            let response = reqwest::get(format!("{json_url}&format=svg"))
                .await
                .expect("GET");
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{json_url}");
            continue;
        };
        let plotted = parse(&svg(&format!("{json_url}&format=svg")).await);
        let expected = json_counts(&answer);
        assert_eq!(plotted_counts(&plotted), expected, "{json_url}");
        let total: u64 = expected.values().sum();
        assert_eq!(plotted.root["data-total"], total.to_string(), "{json_url}");
        assert_eq!(plotted.root["data-plugin"], plugin);
        let rows = answer["rows"].as_array().map_or(0, Vec::len);
        assert_eq!(plotted.root["data-rows"], rows.to_string(), "{json_url}");
    }

    // The whole corpus by month: every message is plotted once.
    let all = format!("{api}/api/volume?bucket=month&rows_per_page=100&format=svg");
    let plotted = parse(&svg(&all).await);
    assert_eq!(plotted.root["data-total"], real_lines().len().to_string());

    // Latest statistics: one entry per row, naming its message.
    let latest = format!("{api}/api/releng-dashboard?rows_per_page=100");
    let answer = get_json(&latest).await.expect("releng json");
    let plotted = parse(&svg(&format!("{latest}&format=svg")).await);
    let mut expected = Vec::new();
    for row in answer["rows"].as_array().expect("rows") {
        let key = row["key"].as_str().expect("key").to_string();
        let msg_id = row["msg_id"].as_str().expect("msg_id").to_string();
        expected.push((key, msg_id));
    }
    assert!(!expected.is_empty(), "the corpus has releng events");
    let mut listed = Vec::new();
    for mark in &plotted.marks {
        listed.push((mark["data-key"].clone(), mark["data-msg-id"].clone()));
    }
    assert_eq!(listed, expected);

    // Content negotiation, and revalidation of the chart.
    let url = format!("{api}/api/volume-by-category?bucket=all&rows_per_page=100");
    let client = reqwest::Client::new();
    let response = client
        .get(&url)
        .header(ACCEPT, "image/svg+xml, */*;q=0.8")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "image/svg+xml");
    let tag = response.headers()[ETAG].clone();
    let body = response.text().await.expect("body");
    assert_eq!(
        parse(&body).root["data-total"],
        real_lines().len().to_string()
    );
    let again = client
        .get(format!("{url}&format=svg"))
        .header(IF_NONE_MATCH, tag)
        .send()
        .await
        .expect("GET");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    // The plugin list has no chart: JSON for the same Accept.
    let list = client
        .get(format!("{api}/api/"))
        .header(ACCEPT, "image/svg+xml, */*;q=0.8")
        .send()
        .await
        .expect("GET");
    assert!(list.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap_or_default()
        .starts_with("application/json"));
}
