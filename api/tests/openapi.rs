//! The OpenAPI document is the API's contract with its clients, so it is committed
//! (`api/tests/openapi.json`) and compared here: any change to a route, parameter or response
//! shows up in review as a diff of that file. After an intended change, rewrite it with
//!
//! ```sh
//! UPDATE_SNAPSHOTS=1 cargo test -p statscache-api --test openapi
//! ```
//!
//! Rendering needs a ClickHouse client but no server: nothing is queried.

use std::path::PathBuf;
use std::sync::Arc;

use statscache_api::AppState;
use statscache_shared::config::Config;

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openapi.json")
}

fn rendered_spec() -> String {
    let config = Config::defaults();
    let clickhouse = statscache_shared::schema::client(&config.clickhouse);
    let state = AppState {
        config: Arc::new(config),
        clickhouse,
    };
    let mut spec = statscache_api::openapi(state).spec();
    spec.push('\n');
    spec
}

/// The first line where `expected` and `actual` differ, for a readable failure.
fn first_difference(expected: &str, actual: &str) -> String {
    let mut expected_lines = expected.lines();
    let mut actual_lines = actual.lines();
    let mut number = 1;
    loop {
        match (expected_lines.next(), actual_lines.next()) {
            (Some(left), Some(right)) if left == right => number += 1,
            (left, right) => {
                return format!(
                    "line {number}:\n  snapshot: {}\n  rendered: {}",
                    left.unwrap_or("<end>"),
                    right.unwrap_or("<end>")
                )
            }
        }
    }
}

#[test]
fn the_openapi_document_matches_its_snapshot() {
    let rendered = rendered_spec();
    let path = snapshot_path();
    if std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::write(&path, &rendered).expect("write the snapshot");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "the OpenAPI document differs from {} at {}\nIf the change is intended: \
         UPDATE_SNAPSHOTS=1 cargo test -p statscache-api --test openapi",
        path.display(),
        first_difference(&committed, &rendered)
    );
}

#[test]
fn rendering_is_deterministic() {
    assert!(rendered_spec() == rendered_spec());
}
