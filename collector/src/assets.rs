//! Static files: the browser agent at `/agent/` (long-lived caching for content-hashed files),
//! the demo page's API endpoints at `/demo/api/`, and `www/` (demo page, dashboard) for the rest.

use std::path::Path;
use std::time::Duration;

use axum::extract::{Query, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tower_http::services::ServeDir;

/// `Cache-Control` of a file whose name carries its content hash (`pulse.3fa9c2d1.js`): it never
/// changes, so browsers keep it for a year without asking again.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of the entry files (`pulse.js`): cached, but revalidated on every use so a new
/// build is picked up at once.
pub const REVALIDATE: &str = "no-cache";

/// The agent's files, with cache headers by name.
pub fn agent(dir: &Path) -> Router {
    Router::new().fallback_service(ServeDir::new(dir)).layer(middleware::from_fn(cache_headers))
}

async fn cache_headers(request: Request, next: Next) -> Response {
    let hashed = is_content_hashed(request.uri().path());
    let mut response = next.run(request).await;
    if response.status().is_success() {
        let value = if hashed { IMMUTABLE } else { REVALIDATE };
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
        // Pages on other origins load the module: allow them to.
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    }
    response
}

/// Whether a file name has a content-hash part: `name.<8+ hex digits>.ext`.
pub fn is_content_hashed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    let mut parts = name.split('.');
    parts.next();
    let rest: Vec<&str> = parts.collect();
    rest.len() >= 2 && rest[..rest.len() - 1].iter().any(|p| p.len() >= 8 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The endpoints the demo page's buttons call: one that succeeds (with `Server-Timing`), one that
/// fails with 500, and one that answers after `?ms=` (default 800, at most 10 000).
pub fn demo_api<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/demo/api/ok", get(ok)).route("/demo/api/fail", get(fail)).route("/demo/api/slow", get(slow))
}

async fn ok() -> impl IntoResponse {
    (
        [
            (header::HeaderName::from_static("server-timing"), "db;dur=12.5;desc=\"orders\", app;dur=3"),
            (header::HeaderName::from_static("access-control-expose-headers"), "server-timing"),
        ],
        Json(serde_json::json!({"items": [{"id": 1, "name": "espresso"}, {"id": 2, "name": "flat white"}]})),
    )
}

async fn fail() -> impl IntoResponse {
    (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"error": "the demo endpoint fails on purpose"})))
}

#[derive(Debug, Deserialize)]
struct Slow {
    ms: Option<u64>,
}

async fn slow(Query(q): Query<Slow>) -> impl IntoResponse {
    let ms = q.ms.unwrap_or(800).min(10_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(serde_json::json!({"waited_ms": ms}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_are_recognised() {
        assert!(is_content_hashed("/pulse.3fa9c2d1.js"));
        assert!(is_content_hashed("/agent/pulse_bg.0123456789abcdef.wasm"));
        assert!(!is_content_hashed("/pulse.js"));
        assert!(!is_content_hashed("/pulse.d.ts"));
        assert!(!is_content_hashed("/deadbeef.js"), "a hash-looking name is not a hash part");
        assert!(!is_content_hashed("/pulse.nothex12.js"));
    }
}
