//! Fedora's statscache API, unchanged for its clients, mounted at `/statscache/`: a client
//! configured with `https://apps.fedoraproject.org/statscache/` works with only the host changed.
//! Our richer API stays at `/api/`; the two share plugins, facts and rollups, and differ only in
//! how they name and shape a statistic (docs/statscache.md has the whole mapping).
//!
//! - `GET /statscache/api/` — the identifiers, a JSON array (CSV: one per line).
//! - `GET /statscache/api/<ident>` — a page of the identifier's model rows, a JSON array of
//!   `{"timestamp": <window end>, <columns>}`, newest first, with statscache's parameters
//!   (`order`, `start`, `stop`, `limit`, `page`, `rows_per_page`, `callback`), `Accept`
//!   negotiation (JSON, JavaScript, CSV, else 406) and pagination headers.
//! - `GET /statscache/api/<ident>/layout` — the release-engineering dashboard's layout.
//!
//! One file per concept: [`negotiate`] (`Accept`, as werkzeug's `best_match`), [`params`] (the
//! query), [`window`] (which seconds hold the windows of a range), [`spans`] (where a page lies
//! among periods counted by rollups), [`query`] (reading rows: windows shorter than a day from
//! the `statscache-rows` plugin and the facts, days from the daily rollups, the log from the
//! yearly rollup), [`answer`] (JSON, JSONP, CSV and headers), [`layout`], and [`handler`].
//!
//! Every number comes from the same facts and rollups as `/api/`, at a cost bounded by a page:
//! a page is located from per-period row counts (years, then months, days and hours only where
//! the page falls), then read from the rows of its own hours.

pub mod answer;
pub mod handler;
pub mod layout;
pub mod negotiate;
pub mod params;
pub mod query;
pub mod spans;
pub mod window;

use poem::{get, Route};

/// The routes, to be nested at `/statscache`.
pub fn routes() -> Route {
    Route::new()
        .at("/", get(handler::home))
        .at("/api", get(handler::index))
        .at("/api/:ident", get(handler::model))
        .at("/api/:ident/layout", get(handler::layout))
}
