//! The handlers of `/statscache/`: each answers a whole response itself (statscache's status
//! codes and bodies), in the order statscache checked: the identifier (404), the parameters
//! (400, ours: it failed with a 500), then `Accept` (406).

use std::time::{SystemTime, UNIX_EPOCH};

use poem::http::{header, HeaderMap, StatusCode, Uri};
use poem::web::{Data, Path};
use poem::{handler, IntoResponse, Request, Response};
use statscache_shared::schema::PluginCatalogRow;
use statscache_shared::statscache::{self, Identifier, Model, ROWS_PLUGIN};

use super::answer::{self, Pagination};
use super::layout::{releng, LAYOUT_IDENT};
use super::negotiate::{negotiate, Mime};
use super::params::{self, Params};
use super::query::{self, Reading, Source};
use crate::error::ApiError;
use crate::statistics;
use crate::AppState;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs_f64())
        .unwrap_or_default()
}

fn table_of<'a>(catalog: &'a [PluginCatalogRow], plugin: &str) -> Option<&'a str> {
    catalog
        .iter()
        .find(|entry| entry.identifier == plugin)
        .map(|entry| entry.table_name.as_str())
}

/// How `identifier` is read with the plugins of `catalog`; `None` when a plugin it needs is
/// not kept (disabled), and then it is not served.
fn source<'a>(identifier: &'a Identifier, catalog: &'a [PluginCatalogRow]) -> Option<Source<'a>> {
    let table = table_of(catalog, identifier.family.plugin)?;
    let reading = match (identifier.family.model, identifier.window) {
        (Model::Log, _) => Reading::Log,
        (Model::Volume, Some(seconds)) if identifier.counted_by_rows_plugin() => Reading::Windows {
            seconds,
            rows_table: table_of(catalog, ROWS_PLUGIN)?,
        },
        (Model::Volume, Some(_)) => Reading::Days,
        (Model::Volume, None) => return None,
    };
    Some(Source {
        ident: &identifier.ident,
        table,
        column: identifier.family.column,
        reading,
    })
}

/// The request's JSONP callback, read as the other parameters are (an invalid one is a 400).
fn callback(uri: &Uri, rows: u64) -> Result<Option<String>, ApiError> {
    params::parse(uri, rows, 0.0).map(|params| params.callback)
}

fn rows_per_page(state: &AppState) -> u64 {
    u64::from(state.config.api.max_rows_per_page)
}

/// `/statscache/`: statscache sent its home to its web pages; ours is the dashboard.
#[handler]
pub fn home() -> Response {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, "/")
        .finish()
}

/// `GET /statscache/api/`: the identifiers served, sorted.
#[handler]
pub async fn index(state: Data<&AppState>, uri: &Uri, headers: &HeaderMap) -> Response {
    let answer = async {
        let callback = callback(uri, rows_per_page(&state))?;
        let Some(mime) = negotiate(headers) else {
            return Ok(answer::not_acceptable(None));
        };
        let catalog = statistics::catalog(&state.clickhouse).await?;
        let all = statscache::identifiers();
        let mut idents = Vec::new();
        for identifier in &all {
            if source(identifier, &catalog).is_some() {
                idents.push(identifier.ident.clone());
            }
        }
        idents.sort();
        Ok::<_, ApiError>(answer::index(&idents, mime, callback.as_deref()))
    };
    answer::with_cors(answer.await.unwrap_or_else(IntoResponse::into_response))
}

/// statscache's 404 for a statistic it does not have.
fn no_model(ident: &str) -> Response {
    answer::not_found(format!("\"No such model for '{ident}'\""))
}

/// `GET /statscache/api/<ident>`: a page of the identifier's rows.
#[handler]
pub async fn model(
    state: Data<&AppState>,
    Path(ident): Path<String>,
    request: &Request,
) -> Response {
    // The whole path (`/statscache/api/...`), not the one inside this nest: links repeat it.
    let uri = request.original_uri();
    let headers = request.headers();
    let answer = async {
        let Some(identifier) = statscache::find(&ident) else {
            return Ok(no_model(&ident));
        };
        let catalog = statistics::catalog(&state.clickhouse).await?;
        let Some(source) = source(&identifier, &catalog) else {
            return Ok(no_model(&ident));
        };
        let params: Params = params::parse(uri, rows_per_page(&state), now())?;
        let Some(mime) = negotiate(headers) else {
            return Ok(answer::not_acceptable(Some(&ident)));
        };
        let page = query::read(&state.clickhouse, &source, &params).await?;
        let pages = page.items.div_ceil(params.rows_per_page);
        let mut columns: Vec<&str> = Vec::new();
        match identifier.family.model {
            Model::Volume => {
                columns.extend(identifier.family.column);
                columns.push("volume");
            }
            Model::Log => columns.extend(["category", "category_constraint", "message"]),
        }
        let pagination = Pagination {
            uri,
            headers,
            page: params.page,
            pages,
        };
        Ok::<_, ApiError>(answer::model(
            &columns,
            &page.rows,
            mime,
            params.callback.as_deref(),
            &pagination,
        ))
    };
    answer::with_cors(answer.await.unwrap_or_else(IntoResponse::into_response))
}

/// `GET /statscache/api/<ident>/layout`: only the release-engineering log has one.
#[handler]
pub async fn layout(
    state: Data<&AppState>,
    Path(ident): Path<String>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    let answer = async {
        let callback = callback(uri, rows_per_page(&state))?;
        if negotiate(headers) != Some(Mime::Json) {
            return Ok(answer::not_acceptable(Some(&ident)));
        }
        let catalog = statistics::catalog(&state.clickhouse).await?;
        let served = statscache::find(&ident)
            .is_some_and(|identifier| source(&identifier, &catalog).is_some());
        if ident != LAYOUT_IDENT || !served {
            return Ok(answer::not_found(format!("No such resource for {ident}")));
        }
        Ok::<_, ApiError>(answer::document(&releng(), callback.as_deref()))
    };
    answer::with_cors(answer.await.unwrap_or_else(IntoResponse::into_response))
}
