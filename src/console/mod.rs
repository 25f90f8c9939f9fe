//! The Management Console: a browser UI at `/console` on every node's public port
//! (so through the balancer), built on the [HTTP/JSON API](crate::http_api).
//!
//! Static HTML, CSS and JavaScript embedded in the binary (`include_str!`): no
//! build step beyond `cargo build`, nothing fetched from elsewhere at run time
//! (the page's Content-Security-Policy allows only its own origin). Charts are
//! drawn as inline SVG by the page's own script.
//!
//! Pages: cluster overview (members with state and liveness, peers with
//! replication lag and clock offset, and a live chart of both, sampled every two
//! seconds from whichever node answers; and the balancer's request rate, failures
//! and latency per node, from the balancer's own `/api/v1/balancer/stats`, or a
//! note that the page was not reached through a balancer), licenses, dataflows,
//! resources (a form per kind, each field's validation error shown beside it,
//! secrets write-only, availability on every member), nodes (drain, undrain,
//! remove), users and the audit log. Sign-in takes a token, kept in the
//! browser's `sessionStorage` only (gone when the tab closes); every call sends
//! it as `Authorization: Bearer …`, and any node can answer.

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};

/// Where the console lives.
pub const PATH: &str = "/console";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The page may load and call only its own origin.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The console's routes, to merge into the node's router.
pub(crate) fn routes() -> axum::Router {
    axum::Router::new()
        .route(PATH, get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/console/", get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/console/app.js", get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }))
        .route("/console/app.css", get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_embedded_assets() {
        for url in ["/console/app.js", "/console/app.css"] {
            assert!(INDEX_HTML.contains(url), "{url}");
        }
        for attr in ["src=\"", "href=\""] {
            for (at, _) in INDEX_HTML.match_indices(attr) {
                let target = &INDEX_HTML[at + attr.len()..];
                assert!(target.starts_with('/') || target.starts_with('#'), "{attr}{}", &target[..20]);
            }
        }
        assert!(!APP_CSS.contains("url(") && !APP_CSS.contains("@import"), "the stylesheet loads nothing");
        for (at, _) in APP_JS.match_indices("fetch(") {
            assert!(APP_JS[at..].starts_with("fetch('/api/v1'"), "the script calls only its own API");
        }
        for other in ["XMLHttpRequest", "WebSocket", "EventSource", "import("] {
            assert!(!APP_JS.contains(other), "{other}");
        }
        assert!(!INDEX_HTML.contains("<script>"), "no inline script: the CSP forbids it");
    }
}
