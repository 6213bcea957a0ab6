//! Declared releases. A beacon's `release` is whatever the page — or anyone holding the public
//! site key — sends, so it cannot decide which releases alerts compare: a made-up release with a
//! few hundred poor values would page someone, and a stream of new names would hide a real
//! regression. As Sentry and Datadog learn releases from CI, Pulse learns them from
//! `POST /v1/releases` with a write key (`pulse release new`); a site may instead name its
//! releases by a pattern (`release_pattern`), and then the releases seen that match it count.
//! Undeclared releases are still stored and can be queried (`group_by=release`, `/v1/compare`).
//!
//! # The path of a declaration
//! 1. [`declare`] checks the bearer token against `write_keys` only (401), the body (400 naming
//!    the field: `site` a configured site, `release` the beacons' rule), and the key's sites (403).
//! 2. The `releases` table is asked whether the release is known; a new one is stored with its
//!    `declared_at` (201), a known one keeps its first (200): declaring twice is one release.
//! 3. Release rules ask [`newest_two`] for the newest declared release and the one declared
//!    before it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::errors::DeclareError;
use crate::query::params::format_time;
use crate::query::sql::Sql;
use crate::App;

/// Longest body of a declaration: two short strings.
const MAX_BODY_BYTES: usize = 4096;

/// Releases seen in a rule's window that a pattern is matched against, newest first: a day of
/// deploys every minute fits (`cardinality_releases_per_day` bounds what one site can create).
const PATTERN_CANDIDATES: u64 = 2_000;

/// A row of `releases`: one declaration.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct ReleaseRow {
    site: String,
    release: String,
    /// Epoch seconds.
    declared_at: u32,
    /// Epoch ms: orders the declarations of one second.
    declared_ms: u64,
}

/// The answer to a declaration.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Declared {
    pub site: String,
    pub release: String,
    /// When the release was first declared (RFC 3339).
    pub declared_at: String,
    /// Whether this request declared it (`false`: it was declared before, and keeps that time).
    pub created: bool,
}

/// The write key in `headers`' bearer token, compared with every key in constant time (as read
/// keys are); read keys are not looked at.
fn write_access(app: &App, headers: &HeaderMap) -> Result<Option<Vec<String>>, DeclareError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(DeclareError::Unauthorized)?;
    let mut found: Option<&crate::config::WriteKey> = None;
    for key in &app.config.write_keys {
        if bool::from(key.key.as_bytes().ct_eq(token.trim().as_bytes())) {
            found = Some(key);
        }
    }
    found.map(|k| k.sites.clone()).ok_or(DeclareError::Unauthorized)
}

/// A string field of the body, or a 400 naming it.
fn field<'a>(body: &'a Value, name: &'static str) -> Result<&'a str, DeclareError> {
    match body.get(name) {
        None | Some(Value::Null) => Err(DeclareError::malformed(name, "is required")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(DeclareError::malformed(name, "must be a string")),
    }
}

/// `POST /v1/releases`.
pub async fn declare(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = declared(&app, &headers, &body).await;
    let label = match &outcome {
        Ok(d) if d.created => "declared",
        Ok(_) => "declared_again",
        Err(e) => e.reason(),
    };
    app.telemetry.release_declarations.with_label_values(&[label]).inc();
    match outcome {
        Ok(d) => {
            tracing::info!(site = %d.site, release = %d.release, created = d.created, "release declared");
            let status = if d.created { StatusCode::CREATED } else { StatusCode::OK };
            (status, Json(d)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn declared(app: &App, headers: &HeaderMap, body: &[u8]) -> Result<Declared, DeclareError> {
    let sites = write_access(app, headers)?;
    if body.len() > MAX_BODY_BYTES {
        return Err(DeclareError::malformed("", format!("the body is larger than {MAX_BODY_BYTES} bytes")));
    }
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| DeclareError::malformed("", format!("the body is not JSON ({e}); send {{\"site\": \"…\", \"release\": \"…\"}}")))?;
    if !body.is_object() {
        return Err(DeclareError::malformed("", "the body must be a JSON object {\"site\": \"…\", \"release\": \"…\"}"));
    }
    let site = field(&body, "site")?;
    if app.sites.get(site).is_none() {
        return Err(DeclareError::UnknownSite(site.to_owned()));
    }
    if sites.as_ref().is_some_and(|s| !s.iter().any(|s| s == site)) {
        return Err(DeclareError::Forbidden(site.to_owned()));
    }
    let release = field(&body, "release")?;
    if release.is_empty() {
        return Err(DeclareError::malformed("release", "must not be empty"));
    }
    pulse_protocol::validate::release(release).map_err(DeclareError::Invalid)?;
    store(app, site, release, OffsetDateTime::now_utc()).await
}

/// Stores `release` of `site` unless it is declared already; the declaration as it stands.
async fn store(app: &App, site: &str, release: &str, now: OffsetDateTime) -> Result<Declared, DeclareError> {
    #[derive(Debug, Row, Deserialize)]
    struct Known {
        n: u64,
        first: u64,
    }
    let mut sql = Sql::new();
    sql.push("SELECT count() AS n, min(declared_ms) AS first FROM releases WHERE site = ? AND release = ?", [site.into(), release.into()]);
    let known = app.query(&sql).fetch_one::<Known>().await.map_err(DeclareError::Storage)?;
    let answer = |ms: u64, created: bool| Declared {
        site: site.to_owned(),
        release: release.to_owned(),
        declared_at: format_time((ms / 1000) as i64),
        created,
    };
    if known.n > 0 {
        return Ok(answer(known.first, false));
    }
    // Two declarations at once may both store a row: every reader takes the first declaration
    // of a release (`min(declared_ms)`), so they still make one release.
    let ms = (now.unix_timestamp_nanos() / 1_000_000) as u64;
    let row = ReleaseRow { site: site.to_owned(), release: release.to_owned(), declared_at: (ms / 1000) as u32, declared_ms: ms };
    crate::storage::writer::insert(&app.clickhouse, "releases", &[row]).await.map_err(DeclareError::Storage)?;
    Ok(answer(ms, true))
}

#[derive(Debug, Row, Deserialize)]
struct Name {
    release: String,
}

/// The newest release of `site` and the one before it, as release rules compare them: without
/// a `release_pattern`, the two declared last (up to `now`); with one, the two first seen last in
/// the window `from..to` (epoch s, with `filters`) among the releases matching it. `None` while
/// there are fewer than two.
pub async fn newest_two(
    app: &App,
    site: &str,
    metric: &str,
    (from, to): (i64, i64),
    filters: &[(&'static str, String)],
    now: OffsetDateTime,
) -> Result<Option<(String, String)>, clickhouse::error::Error> {
    let mut sql = Sql::new();
    let pattern = app.sites.get(site).and_then(|s| s.release_pattern.as_ref());
    let names: Vec<String> = match pattern {
        None => {
            let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as u64;
            sql.push(
                "SELECT release FROM releases WHERE site = ? AND declared_ms <= ? GROUP BY release ORDER BY min(declared_ms) DESC, release DESC LIMIT 2",
                [site.into(), now_ms.into()],
            );
            app.query(&sql).fetch_all::<Name>().await?.into_iter().map(|r| r.release).collect()
        }
        Some(pattern) => {
            sql.push(
                "SELECT release FROM metrics WHERE site = ? AND name = ? AND event_time >= toDateTime(?) AND event_time < toDateTime(?) AND release != ''",
                [site.into(), metric.into(), from.into(), to.into()],
            )
            .push_filters(filters)
            .push(" GROUP BY release ORDER BY min(event_time) DESC, release DESC LIMIT ?", [PATTERN_CANDIDATES.into()]);
            let seen = app.query(&sql).fetch_all::<Name>().await?;
            seen.into_iter().map(|r| r.release).filter(|r| pattern.is_match(r)).take(2).collect()
        }
    };
    Ok(match <[String; 2]>::try_from(names) {
        Ok([newest, previous]) => Some((newest, previous)),
        Err(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_fields_are_named_when_missing_or_of_the_wrong_type() {
        let body = serde_json::json!({"site": "shop", "release": 241});
        assert_eq!(field(&body, "site").ok(), Some("shop"));
        let err = field(&body, "release").expect_err("a number");
        assert_eq!((err.field(), err.to_string()), (Some("release".to_owned()), "release: must be a string".to_owned()));
        let err = field(&serde_json::json!({}), "site").expect_err("missing");
        assert_eq!(err.to_string(), "site: is required");
    }
}
