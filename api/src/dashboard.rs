//! The dashboard: `/` and its scripts and style sheet, compiled into the binary.
//!
//! Embedded rather than read from a directory so that an api replica is one file to deploy and
//! a page can never be served with the scripts of another version. The page works from the api
//! alone (no CDN, no front-end build): plain ES modules that draw their charts as SVG.
//!
//! Caching: the assets live under `/assets/<version>/`, where the version is a digest of their
//! contents, so they are served `immutable` for a year and a new release changes their URLs.
//! The page itself names that version, so it is revalidated on every load (`no-cache` with an
//! `ETag`; a matching `If-None-Match` gets a bodiless 304).

use std::sync::OnceLock;

use poem::http::{header, HeaderMap, StatusCode};
use poem::web::Path;
use poem::{handler, IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::routes::{client_has_current, etag};

/// One embedded file of the dashboard.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: [Asset; 5] = [
    Asset {
        name: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/dashboard.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/api.js"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/charts.js"),
    },
    Asset {
        name: "format.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/format.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../assets/style.css"),
    },
];

/// The page, with `{{assets}}` where the versioned asset directory goes.
const INDEX_TEMPLATE: &str = include_str!("../assets/index.html");

/// Scripts and styles from this origin only: the page loads nothing from elsewhere.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'";

/// The rendered page and the digest of the assets, computed once.
struct Rendered {
    version: String,
    index: String,
    index_tag: String,
}

fn rendered() -> &'static Rendered {
    static RENDERED: OnceLock<Rendered> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let mut digest = Sha256::new();
        for asset in &ASSETS {
            digest.update(asset.name.as_bytes());
            digest.update(asset.body.as_bytes());
        }
        let mut version = String::new();
        for byte in &digest.finalize()[..6] {
            version.push_str(&format!("{byte:02x}"));
        }
        let index = INDEX_TEMPLATE.replace("{{assets}}", &format!("/assets/{version}"));
        let index_tag = etag(&index);
        Rendered {
            version,
            index,
            index_tag,
        }
    })
}

/// A 200 with `body`, or a 304 when the client holds `tag` already.
fn cached(
    headers: &HeaderMap,
    tag: &str,
    cache_control: &str,
    content_type: &str,
    body: &str,
) -> Response {
    let builder = Response::builder()
        .header(header::ETAG, tag)
        .header(header::CACHE_CONTROL, cache_control)
        .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if client_has_current(headers, tag) {
        return builder.status(StatusCode::NOT_MODIFIED).finish();
    }
    builder
        .header(header::CONTENT_TYPE, content_type)
        .body(body.to_string())
}

/// `GET /`: the dashboard page.
pub fn page(headers: &HeaderMap) -> Response {
    let rendered_page = rendered();
    cached(
        headers,
        &rendered_page.index_tag,
        "no-cache",
        "text/html; charset=utf-8",
        &rendered_page.index,
    )
}

/// `GET /assets/<version>/<name>`: a script or style sheet. A version other than this
/// binary's (a page from another replica during an upgrade) still gets this binary's file,
/// but not as immutable.
#[handler]
pub fn serve_asset(headers: &HeaderMap, Path((version, name)): Path<(String, String)>) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == name) else {
        return ApiError::not_found(format!("no dashboard asset named {name:?}")).into_response();
    };
    let cache_control = if version == rendered().version {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let tag = etag(asset.body);
    cached(headers, &tag, cache_control, asset.content_type, asset.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_asset_under_its_version() {
        let rendered_page = rendered();
        assert!(!rendered_page.index.contains("{{assets}}"));
        let prefix = format!("/assets/{}/", rendered_page.version);
        assert!(rendered_page
            .index
            .contains(&format!("{prefix}dashboard.js")));
        assert!(rendered_page.index.contains(&format!("{prefix}style.css")));
    }

    #[test]
    fn scripts_import_only_embedded_modules() {
        for asset in &ASSETS {
            for line in asset.body.lines() {
                let Some((_, imported)) = line.split_once(" from \"./") else {
                    continue;
                };
                let module = imported.trim_end_matches([';', '"']);
                assert!(
                    ASSETS.iter().any(|known| known.name == module),
                    "{} imports {module}, which is not embedded",
                    asset.name
                );
            }
        }
    }
}
