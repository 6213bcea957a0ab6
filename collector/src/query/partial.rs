//! Reads while a shard of a cluster is away.
//!
//! A `Distributed` table cannot answer while one of its shards is unreachable. Rather than a bare
//! 503, a read then says which shard is missing; with `allow_partial=1` it answers from the live
//! shards instead (ClickHouse's `skip_unavailable_shards`) and the answer says so: `partial: true`
//! and `missing_shards`, a `Pulse-Missing-Shards` header on CSV and HTML. Ingest is not touched:
//! inserts wait for every shard, so the rows received since the shard went away (for any shard)
//! wait in the spool and are stored once it is back, after which the same read is complete.
//!
//! A read is refused only when ClickHouse could not answer it and a shard does not answer a ping
//! then (a shard slow to answer the health probe may still answer queries). A partial answer is
//! given when the probe ([`crate::health`]) saw a shard away, or when the query failed: every
//! shard is asked before and after the run, and every shard away at either time is named.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::errors::{QueryError, StorageFailure};
use crate::App;

/// The query parameter, accepted by every read that asks ClickHouse.
pub const PARAM: &str = "allow_partial";

/// The header that names the missing shards (`2` or `2,3`, counted from 1) on a partial answer.
pub const HEADER: HeaderName = HeaderName::from_static("pulse-missing-shards");

/// Largest JSON answer the layer re-writes to add `partial` (a read's answer is far smaller).
const MAX_ANSWER_BYTES: usize = 64 << 20;

tokio::task_local! {
    /// Set while a read runs that may skip the shards that are away.
    static SKIP_AWAY: bool;
}

/// Whether the read running on this task may skip unavailable shards ([`crate::App::limited`]
/// adds ClickHouse's `skip_unavailable_shards` then).
pub fn skipping() -> bool {
    SKIP_AWAY.try_with(|skip| *skip).unwrap_or(false)
}

/// A shard that did not answer: its place in `clickhouse_shards` (from 1), its URL and why.
#[derive(Debug, Clone)]
pub struct Missing {
    pub shard: usize,
    pub url: String,
    pub why: String,
}

/// The layer around the reads that ask ClickHouse. It takes `allow_partial` (`1`/`true` or
/// `0`/`false`) off the query string, so the handlers never see it.
pub async fn layer(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let allow = match take_param(&mut request) {
        Ok(allow) => allow,
        Err(err) => return err.into_response(),
    };
    let cluster = app.config.clickhouse_cluster.is_some();
    // Shards are named only to a read key that may read this site; anyone else gets the
    // handler's own answer (401, 403).
    let access = crate::query::authorize(&app, request.headers()).and_then(|a| a.check_query(request.uri().query()));
    if !cluster || access.is_err() {
        let response = next.run(request).await;
        return if allow { mark(response, &[]).await } else { response };
    }
    let all: Vec<usize> = (0..app.config.clickhouse_shards.len()).collect();
    // Asked for a partial answer while the probe saw a shard away: ask every shard now, skip the
    // ones away, and ask again after the run (a shard that went away meanwhile was skipped too).
    if allow && !app.clickhouse_probe.down_shards().is_empty() {
        let away = missing(&app, &all).await;
        if !away.is_empty() {
            let response = SKIP_AWAY.scope(true, next.run(request)).await;
            let away = union(away, missing(&app, &all).await);
            return mark(response, &away).await;
        }
    }
    // Otherwise run as usual: a read is never refused on the probe's word alone (a shard slow to
    // answer a ping may still answer the query). If ClickHouse fails, find out whether a shard is
    // away; then say which, or with allow_partial answer from the others.
    let retry = allow.then(|| (clone_request(&request), next.clone()));
    let response = next.run(request).await;
    if response.extensions().get::<StorageFailure>().is_none() {
        return if allow { mark(response, &[]).await } else { response };
    }
    let away = missing(&app, &all).await;
    match (away.is_empty(), retry) {
        (true, _) => response,
        (false, Some((request, next))) => {
            let response = SKIP_AWAY.scope(true, next.run(request)).await;
            let away = union(away, missing(&app, &all).await);
            mark(response, &away).await
        }
        (false, None) => QueryError::ShardsAway(describe(&away, app.config.clickhouse_shards.len())).into_response(),
    }
}

/// The shards of either list, once each, in order.
fn union(mut a: Vec<Missing>, b: Vec<Missing>) -> Vec<Missing> {
    for m in b {
        if !a.iter().any(|x| x.shard == m.shard) {
            a.push(m);
        }
    }
    a.sort_by_key(|m| m.shard);
    a
}

/// The shards among `indices` that do not answer now.
async fn missing(app: &App, indices: &[usize]) -> Vec<Missing> {
    crate::health::shards_away(app, indices)
        .await
        .into_iter()
        .map(|(i, why)| Missing { shard: i + 1, url: app.config.clickhouse_shards.get(i).cloned().unwrap_or_default(), why })
        .collect()
}

/// "shard 2 of 2 (http://…: why)" for each missing shard.
fn describe(away: &[Missing], of: usize) -> String {
    away.iter().map(|m| format!("shard {} of {of} ({}: {})", m.shard, m.url, first_line(&m.why))).collect::<Vec<_>>().join(", ")
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or_default();
    line.char_indices().nth(200).map_or(line, |(at, _)| &line[..at])
}

/// Removes `allow_partial` from the request's query string and reads it.
fn take_param(request: &mut Request) -> Result<bool, QueryError> {
    let Some(query) = request.uri().query() else { return Ok(false) };
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| QueryError::bad("query", format!("cannot parse the query string: {e}")))?;
    let mut values = pairs.iter().filter(|(name, _)| name == PARAM).map(|(_, v)| v.as_str());
    let allow = match (values.next(), values.next()) {
        // Left as sent (a re-encoded query could differ in its escapes).
        (None, _) => return Ok(false),
        (Some(_), Some(_)) => return Err(QueryError::bad(PARAM, "given more than once")),
        (Some("1" | "true"), None) => true,
        (Some("0" | "false" | ""), None) => false,
        (Some(other), None) => return Err(QueryError::bad(PARAM, format!("{other:?} is not 1, true, 0 or false"))),
    };
    let rest: Vec<&(String, String)> = pairs.iter().filter(|(name, _)| name != PARAM).collect();
    let rest = serde_urlencoded::to_string(rest).unwrap_or_default();
    let path = request.uri().path();
    let uri = if rest.is_empty() { path.to_owned() } else { format!("{path}?{rest}") };
    *request.uri_mut() = uri.parse().map_err(|_| QueryError::bad("query", "cannot rebuild the query string"))?;
    Ok(allow)
}

/// A copy of a read request (they have no body) to run again.
fn clone_request(request: &Request) -> Request {
    let mut copy = Request::new(Body::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    copy
}

/// Says in the answer whether it is partial: `partial` and `missing_shards` in a JSON object
/// answer, the [`HEADER`] on any partial one.
async fn mark(response: Response, away: &[Missing]) -> Response {
    let (mut parts, body) = response.into_parts();
    if !away.is_empty() {
        let shards = away.iter().map(|m| m.shard.to_string()).collect::<Vec<_>>().join(",");
        if let Ok(value) = HeaderValue::from_str(&shards) {
            parts.headers.insert(HEADER, value);
        }
    }
    let json = parts.headers.get(axum::http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !json || !parts.status.is_success() {
        return Response::from_parts(parts, body);
    }
    let bytes = match axum::body::to_bytes(body, MAX_ANSWER_BYTES).await {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::error!(%err, "cannot read a read's answer to mark it partial");
            return QueryError::Busy.into_response();
        }
    };
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    answer.insert("partial".into(), json!(!away.is_empty()));
    answer.insert(
        "missing_shards".into(),
        away.iter().map(|m| json!({"shard": m.shard, "url": m.url, "error": first_line(&m.why)})).collect(),
    );
    let body = serde_json::to_vec(&answer).unwrap_or_default();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(uri: &str) -> (Result<bool, String>, String) {
        let mut request = Request::builder().uri(uri).body(Body::empty()).expect("request");
        let outcome = take_param(&mut request).map_err(|e| e.to_string());
        (outcome, request.uri().to_string())
    }

    #[test]
    fn allow_partial_is_read_and_taken_off_the_query() {
        assert_eq!(take("/v1/vitals?site=demo&allow_partial=1&metric=LCP"), (Ok(true), "/v1/vitals?site=demo&metric=LCP".into()));
        assert_eq!(take("/v1/vitals?allow_partial=true"), (Ok(true), "/v1/vitals".into()));
        assert_eq!(take("/v1/vitals?site=demo&allow_partial=0"), (Ok(false), "/v1/vitals?site=demo".into()));
        assert_eq!(take("/v1/vitals?site=a%20b"), (Ok(false), "/v1/vitals?site=a%20b".into()));
        assert_eq!(take("/v1/vitals?url=%2Fa%26b&allow_partial=1"), (Ok(true), "/v1/vitals?url=%2Fa%26b".into()));
        let (refused, _) = take("/v1/vitals?allow_partial=yes");
        assert_eq!(refused, Err("allow_partial: \"yes\" is not 1, true, 0 or false".into()));
        let (refused, _) = take("/v1/vitals?allow_partial=1&allow_partial=1");
        assert_eq!(refused, Err("allow_partial: given more than once".into()));
    }
}
