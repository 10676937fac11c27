//! A statistic drawn as an SVG image (`format=svg`), for wikis, mails and READMEs, as
//! fedora-stats-tools made them: the same page of rows the JSON answer holds, drawn.
//!
//! Hand-written SVG rather than a plotting crate: the charts are three simple shapes (stacked
//! bars over time, bars per key, a table of latest values) and the markup is part of the
//! contract: every plotted value is in a `data-count` attribute and a `<title>` (a tooltip, and
//! what a screen reader says), and the image's total is in `data-total` on the root.
//!
//! Bucketed charts have a time axis: a bar sits where its period is, so gaps show.
//!
//! Readable without colour: series differ by pattern as well as by colour, stacked in legend
//! order, and every bar carries its value as text where there is room.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::DateTime;
use serde_json::Value;

use crate::routes::{PluginKind, StatisticPage, StatisticRowDoc};
use crate::statistics::Bucket;

const WIDTH: u32 = 800;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 48.0;
const PLOT_HEIGHT: f64 = 260.0;
const ROW_HEIGHT: f64 = 20.0;
const LEGEND_COLUMNS: usize = 3;
/// Labels along the time axis.
const TICKS: usize = 6;
/// Okabe–Ito: distinguishable with the common colour-vision deficiencies.
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999",
];
/// Overlays that tell series apart without colour: none, diagonal, dots, horizontal.
const PATTERNS: [&str; 4] = [
    "",
    r##"<path d="M0,8 L8,0" stroke="#000" stroke-opacity="0.55"/>"##,
    r##"<circle cx="4" cy="4" r="1.4" fill="#000" fill-opacity="0.55"/>"##,
    r##"<path d="M0,4 L8,4" stroke="#000" stroke-opacity="0.55"/>"##,
];

/// The SVG document for `page`.
pub fn render(page: &StatisticPage) -> String {
    if page.kind == PluginKind::Latest {
        return latest_table(page);
    }
    if page.bucket == Bucket::All {
        return bars_by_key(page);
    }
    stacked_by_bucket(page)
}

/// Text safe in XML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A bucket start (or any epoch time) as text, as fine as `bucket` needs.
fn time_label(seconds: f64, bucket: Bucket) -> String {
    let Some(time) = DateTime::from_timestamp(seconds.floor() as i64, 0) else {
        return seconds.to_string();
    };
    let format = match bucket {
        Bucket::Minute | Bucket::Hour => "%Y-%m-%d %H:%M",
        Bucket::Day | Bucket::Week => "%Y-%m-%d",
        Bucket::Month => "%Y-%m",
        Bucket::All => "%Y-%m-%d %H:%M:%S",
    };
    time.format(format).to_string()
}

/// The root element, title and description, and one fill pattern per series.
fn open_document(page: &StatisticPage, height: f64, total: u64, series: usize) -> String {
    let title = format!(
        "{}: {} per {}, {} to {} UTC",
        page.plugin,
        match page.kind {
            PluginKind::Count => "messages",
            PluginKind::DistinctCount => "distinct values",
            PluginKind::Latest => "latest value",
        },
        if page.bucket == Bucket::All {
            "key"
        } else {
            page.bucket.name()
        },
        time_label(page.start, Bucket::All),
        time_label(page.end, Bucket::All),
    );
    let description = format!(
        "{} rows (page {} of {}), total {}",
        page.rows.len(),
        page.page,
        page.pages,
        total
    );
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="chart-title chart-desc" font-family="sans-serif" font-size="12" data-plugin="{}" data-bucket="{}" data-total="{total}" data-rows="{}">"#,
        escape(&page.plugin),
        page.bucket.name(),
        page.rows.len(),
    );
    let _ = write!(
        out,
        r#"<title id="chart-title">{}</title><desc id="chart-desc">{}</desc>"#,
        escape(&title),
        escape(&description)
    );
    out.push_str(r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="24" font-size="15" font-weight="bold">{}</text>"#,
        escape(&title)
    );
    out.push_str("<defs>");
    for index in 0..series {
        let _ = write!(
            out,
            r#"<pattern id="series-{index}" width="8" height="8" patternUnits="userSpaceOnUse"><rect width="8" height="8" fill="{}"/>{}</pattern>"#,
            PALETTE[index % PALETTE.len()],
            PATTERNS[index % PATTERNS.len()]
        );
    }
    out.push_str("</defs>");
    out
}

fn empty_note(out: &mut String) {
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="{}">No data in this range.</text>"#,
        TOP + 20.0
    );
}

/// Count statistics bucketed in time: one stacked bar per bucket, one segment per key.
fn stacked_by_bucket(page: &StatisticPage) -> String {
    // Keys in stacking (and legend) order: largest first.
    let mut key_totals: BTreeMap<&str, u64> = BTreeMap::new();
    let mut buckets: BTreeMap<u32, Vec<&StatisticRowDoc>> = BTreeMap::new();
    for row in &page.rows {
        let count = row.count.unwrap_or(0);
        *key_totals.entry(row.key.as_str()).or_insert(0) += count;
        buckets
            .entry(row.bucket.unwrap_or(0))
            .or_default()
            .push(row);
    }
    let mut keys: Vec<(&str, u64)> = key_totals.into_iter().collect();
    keys.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let series_of = |key: &str| keys.iter().position(|(known, _)| *known == key);

    let total: u64 = keys.iter().map(|(_, count)| count).sum();
    let legend_rows = keys.len().div_ceil(LEGEND_COLUMNS) as f64;
    let height = TOP + PLOT_HEIGHT + 40.0 + legend_rows * ROW_HEIGHT;
    let mut out = open_document(page, height, total, keys.len());
    if buckets.is_empty() {
        empty_note(&mut out);
        out.push_str("</svg>");
        return out;
    }

    let mut largest = 1;
    for rows in buckets.values() {
        largest = largest.max(rows.iter().map(|row| row.count.unwrap_or(0)).sum::<u64>());
    }
    let plot_width = f64::from(WIDTH) - LEFT - RIGHT;
    let baseline = TOP + PLOT_HEIGHT;
    let scale = PLOT_HEIGHT / largest as f64;
    // Axis: gridlines at 0, half and the largest total.
    for value in [0, largest / 2, largest] {
        let y = baseline - value as f64 * scale;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ccc"/><text x="{}" y="{:.1}" text-anchor="end">{value}</text>"##,
            LEFT + plot_width,
            LEFT - 6.0,
            y + 4.0
        );
    }
    // A time axis: bars where their periods are, gaps where nothing was sent.
    let axis_start = buckets.keys().next().map_or(0, |first| u64::from(*first));
    let axis_end = buckets
        .keys()
        .next_back()
        .map_or(axis_start + 1, |last| page.bucket.end(*last));
    let axis_span = axis_end.saturating_sub(axis_start).max(1) as f64;
    let x_of = |time: u64| LEFT + time.saturating_sub(axis_start) as f64 / axis_span * plot_width;
    for tick in 0..TICKS {
        let time = axis_start + (axis_span * tick as f64 / TICKS as f64) as u64;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            x_of(time),
            baseline + 16.0,
            escape(&time_label(time as f64, page.bucket))
        );
    }
    for (bucket, rows) in &buckets {
        let x = x_of(u64::from(*bucket));
        let bar_width = ((x_of(page.bucket.end(*bucket)) - x) * 0.85).max(1.0);
        let label = time_label(f64::from(*bucket), page.bucket);
        let bucket_total: u64 = rows.iter().map(|row| row.count.unwrap_or(0)).sum();
        let _ = write!(
            out,
            r#"<g data-bucket="{bucket}" data-total="{bucket_total}"><title>{}: {bucket_total}</title>"#,
            escape(&label)
        );
        let mut ordered: Vec<&&StatisticRowDoc> = rows.iter().collect();
        ordered.sort_by_key(|row| series_of(&row.key));
        let mut top = baseline;
        for row in ordered {
            let count = row.count.unwrap_or(0);
            let segment = count as f64 * scale;
            top -= segment;
            let _ = write!(
                out,
                r##"<rect x="{x:.1}" y="{top:.1}" width="{bar_width:.1}" height="{segment:.1}" fill="url(#series-{})" stroke="#333" stroke-width="0.5" data-key="{}" data-bucket="{bucket}" data-count="{count}"><title>{}, {}: {count}</title></rect>"##,
                series_of(&row.key).unwrap_or(0),
                escape(&row.key),
                escape(&row.key),
                escape(&label),
            );
        }
        if bar_width >= 24.0 {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{bucket_total}</text>"#,
                x + bar_width / 2.0,
                top - 4.0
            );
        }
        out.push_str("</g>");
    }
    let legend_top = baseline + 40.0;
    let column_width = plot_width / LEGEND_COLUMNS as f64;
    for (index, (key, count)) in keys.iter().enumerate() {
        let x = LEFT + (index % LEGEND_COLUMNS) as f64 * column_width;
        let y = legend_top + (index / LEGEND_COLUMNS) as f64 * ROW_HEIGHT;
        let _ = write!(
            out,
            r##"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="url(#series-{index})" stroke="#333"/><text x="{:.1}" y="{y:.1}">{} ({count})</text>"##,
            y - 10.0,
            x + 16.0,
            escape(key)
        );
    }
    out.push_str("</svg>");
    out
}

/// Count statistics over the whole range: one labelled bar per key, largest first.
fn bars_by_key(page: &StatisticPage) -> String {
    let mut rows: Vec<&StatisticRowDoc> = page.rows.iter().collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
    let total: u64 = rows.iter().map(|row| row.count.unwrap_or(0)).sum();
    let height = TOP + (rows.len().max(1) as f64 + 1.0) * ROW_HEIGHT;
    let mut out = open_document(page, height, total, 1);
    if rows.is_empty() {
        empty_note(&mut out);
        out.push_str("</svg>");
        return out;
    }
    let label_width = 280.0;
    let bar_left = LEFT + label_width;
    let bar_room = f64::from(WIDTH) - bar_left - RIGHT - 60.0;
    let largest = rows.iter().filter_map(|row| row.count).max().unwrap_or(1);
    let scale = bar_room / largest.max(1) as f64;
    for (index, row) in rows.iter().enumerate() {
        let count = row.count.unwrap_or(0);
        let y = TOP + index as f64 * ROW_HEIGHT;
        let width = (count as f64 * scale).max(1.0);
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{bar_left:.1}" y="{:.1}" width="{width:.1}" height="{:.1}" fill="url(#series-0)" data-key="{}" data-count="{count}"><title>{}: {count}</title></rect><text x="{:.1}" y="{:.1}">{count}</text>"##,
            bar_left - 8.0,
            y + 14.0,
            escape(&row.key),
            y + 3.0,
            ROW_HEIGHT - 6.0,
            escape(&row.key),
            escape(&row.key),
            bar_left + width + 6.0,
            y + 14.0,
        );
    }
    out.push_str("</svg>");
    out
}

/// A latest value's text: its `status` when it is an object with one (releng-dashboard's
/// shape), else the value itself.
fn value_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(text)) => text.clone(),
        Some(object @ Value::Object(fields)) => match fields.get("status") {
            Some(Value::String(status)) => status.clone(),
            _ => object.to_string(),
        },
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Latest statistics: a table of key, value and time (`data-count` is absent: nothing is
/// counted; the root's `data-total` is the number of rows).
fn latest_table(page: &StatisticPage) -> String {
    let height = TOP + (page.rows.len().max(1) as f64 + 1.5) * ROW_HEIGHT;
    let mut out = open_document(page, height, page.rows.len() as u64, 0);
    if page.rows.is_empty() {
        empty_note(&mut out);
        out.push_str("</svg>");
        return out;
    }
    let columns = [LEFT - 56.0, 400.0, 600.0];
    for (x, heading) in columns.iter().zip(["key", "value", "time (UTC)"]) {
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" font-weight="bold">{heading}</text>"#,
            TOP
        );
    }
    for (index, row) in page.rows.iter().enumerate() {
        let y = TOP + (index as f64 + 1.0) * ROW_HEIGHT;
        let time = row
            .timestamp
            .map(|timestamp| time_label(timestamp, Bucket::Minute))
            .unwrap_or_default();
        let _ = write!(
            out,
            r#"<g data-key="{}" data-msg-id="{}"><text x="{:.1}" y="{y:.1}">{}</text><text x="{:.1}" y="{y:.1}">{}</text><text x="{:.1}" y="{y:.1}">{}</text></g>"#,
            escape(&row.key),
            escape(row.msg_id.as_deref().unwrap_or_default()),
            columns[0],
            escape(&row.key),
            columns[1],
            escape(&value_text(row.value.as_ref())),
            columns[2],
            escape(&time),
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(bucket: Bucket, rows: Vec<(Option<u32>, &str, u64)>) -> StatisticPage {
        StatisticPage {
            plugin: "volume-by-category".into(),
            kind: PluginKind::Count,
            bucket,
            start: 0.0,
            end: 1_000_000.0,
            page: 1,
            rows_per_page: 25,
            pages: 1,
            total: rows.len() as u64,
            rows: rows
                .into_iter()
                .map(|(bucket, key, count)| StatisticRowDoc {
                    bucket,
                    key: key.into(),
                    count: Some(count),
                    value: None,
                    timestamp: None,
                    msg_id: None,
                })
                .collect(),
        }
    }

    #[test]
    fn markup_in_keys_is_escaped() {
        let svg = render(&page(Bucket::All, vec![(None, "<b>&\"x'", 3)]));
        assert!(svg.contains("&lt;b&gt;&amp;&quot;x&apos;"));
        assert!(!svg.contains("<b>"));
    }

    #[test]
    fn stacked_bars_carry_every_count_and_the_total() {
        let rows = vec![
            (Some(86_400), "bodhi", 2),
            (Some(86_400), "koji", 5),
            (Some(172_800), "bodhi", 1),
        ];
        let svg = render(&page(Bucket::Day, rows));
        assert!(svg.contains(r#"data-total="8""#));
        assert!(svg.contains(r#"data-key="koji" data-bucket="86400" data-count="5""#));
        assert!(svg.contains(r#"data-key="bodhi" data-bucket="172800" data-count="1""#));
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn months_end_on_the_calendar() {
        // 2019-02-01 → 2019-03-01, 2020-02-01 (leap year) → 2020-03-01.
        assert_eq!(Bucket::Month.end(1_548_979_200), 1_551_398_400);
        assert_eq!(Bucket::Month.end(1_580_515_200), 1_583_020_800);
        assert_eq!(Bucket::Day.end(86_400), 172_800);
    }

    #[test]
    fn an_empty_range_says_so() {
        let svg = render(&page(Bucket::Day, vec![]));
        assert!(svg.contains("No data in this range."));
        assert!(svg.contains(r#"data-total="0""#));
    }
}
