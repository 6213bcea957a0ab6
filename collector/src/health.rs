//! `GET /healthz` and `GET /metrics`: how the collector itself is doing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::App;

/// How often the background probe asks ClickHouse whether it answers, and how long it waits.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the background probe last found about ClickHouse. `/healthz` reads this and never calls
/// ClickHouse itself: a flood of health checks costs the database nothing.
#[derive(Debug, Default)]
pub struct Probe {
    state: Mutex<ProbeState>,
}

#[derive(Debug, Clone, Default)]
struct ProbeState {
    /// Why the last probe failed; `None` when ClickHouse answered it.
    error: Option<String>,
    /// Epoch ms of the last probe; `None` before the first (counted as down: not yet seen up).
    at_ms: Option<u64>,
    /// On a cluster, each shard's last outcome in `clickhouse_shards` order: why it did not
    /// answer, or `None`. Empty on one server.
    shards: Vec<Option<String>>,
}

impl Probe {
    /// Records one probe's outcome at `at_ms`: the configured server's, and on a cluster each
    /// shard's (in `clickhouse_shards` order).
    pub fn record(&self, outcome: Result<(), String>, shards: Vec<Result<(), String>>, at_ms: u64) {
        if let Ok(mut state) = self.state.lock() {
            *state = ProbeState { error: outcome.err(), at_ms: Some(at_ms), shards: shards.into_iter().map(Result::err).collect() };
        }
    }

    /// The shards (0-based, `clickhouse_shards` order) that did not answer the last probe, and
    /// why. Empty before the first probe: a shard is missing only once it was seen away.
    pub fn down_shards(&self) -> Vec<(usize, String)> {
        let state = self.state.lock().map(|s| s.clone()).unwrap_or_default();
        state.shards.into_iter().enumerate().filter_map(|(i, error)| error.map(|e| (i, e))).collect()
    }

    /// The last outcome: `Ok` when ClickHouse answered, else why not; and when it was checked.
    fn last(&self) -> (Result<(), String>, Option<u64>) {
        let state = self.state.lock().map(|s| s.clone()).unwrap_or_default();
        match (state.at_ms, state.error) {
            (None, _) => (Err("not checked yet".into()), None),
            (Some(at), Some(err)) => (Err(err), Some(at)),
            (Some(at), None) => (Ok(()), Some(at)),
        }
    }
}

/// The background probe: pings ClickHouse every [`PROBE_INTERVAL`] and keeps the outcome.
pub async fn watch(app: Arc<App>) {
    let mut every = tokio::time::interval(PROBE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let all = std::iter::once(app.clickhouse.clone()).chain(crate::storage::shard_servers(&app.config));
        let mut outcomes = ping_all(&app, all).await.into_iter();
        let outcome = outcomes.next().unwrap_or(Ok(()));
        app.clickhouse_probe.record(outcome, outcomes.collect(), now_ms());
    }
}

/// Asks each server `SELECT 1`, all at once, waiting at most [`PROBE_TIMEOUT`]: the outcomes in
/// the servers' order. Failures are counted.
async fn ping_all(app: &App, servers: impl Iterator<Item = clickhouse::Client>) -> Vec<Result<(), String>> {
    // All at once; awaited in order, so each outcome keeps its server's place.
    let asked: Vec<tokio::task::JoinHandle<Result<(), String>>> = servers
        .map(|client| {
            tokio::spawn(async move {
                match tokio::time::timeout(PROBE_TIMEOUT, crate::storage::ping(&client)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(err)) => Err(err.to_string()),
                    Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
                }
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(asked.len());
    for task in asked {
        outcomes.push(task.await.unwrap_or_else(|err| Err(format!("the check failed: {err}"))));
    }
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    app.telemetry.clickhouse_errors.with_label_values(&["ping"]).inc_by(failed as u64);
    outcomes
}

/// Asks the shards at `indices` (0-based, `clickhouse_shards` order) now: the ones that do not
/// answer, and why. Reads name with this the shards away when ClickHouse could not answer, or
/// when they answer partially.
pub async fn shards_away(app: &App, indices: &[usize]) -> Vec<(usize, String)> {
    let servers = crate::storage::shard_servers(&app.config);
    let asked: Vec<clickhouse::Client> = indices.iter().filter_map(|i| servers.get(*i).cloned()).collect();
    let outcomes = ping_all(app, asked.into_iter()).await;
    indices.iter().zip(outcomes).filter_map(|(i, outcome)| outcome.err().map(|e| (*i, e))).collect()
}

/// `GET /healthz`, from the state the background tasks keep (no ClickHouse call). `healthy` when
/// ClickHouse answered the last probe and the spool drains; `degraded` when it did not (beacons
/// are still accepted: they wait in the spool), inserts fail, or the spool is over 80 % full;
/// `unhealthy` (HTTP 503) when the spool cannot take beacons (it refused one for want of space,
/// its last disk commit failed, or it is closed).
///
/// Anyone gets the statuses and the numbers (as `/metrics` has them). The details — error texts
/// (which may name the ClickHouse URL), the spool's file paths, the server's version and the
/// sites near a cardinality limit — need a read key (a key limited to sites sees its own sites).
pub async fn healthz(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let (clickhouse, checked_at) = app.clickhouse_probe.last();
    let spool = app.spool.stats();
    let max = app.spool.max_bytes();
    let oldest_age = spool.oldest_ms.map(|t| (now_ms().saturating_sub(t)) as f64 / 1000.0);
    let writer_failing = app.writer_status.is_failing();
    let spool_full = spool.bytes >= max || app.spool.is_full();
    let spool_error = app.spool.failure();
    let shards_down = app.clickhouse_probe.down_shards();
    let shard_count = if app.config.clickhouse_cluster.is_some() { app.config.clickhouse_shards.len() } else { 0 };
    // Why the status is not `healthy`, in words; a missing shard is named.
    let mut reasons: Vec<String> = Vec::new();
    if spool_full {
        reasons.push("the spool is full: beacons are refused".into());
    }
    if app.spool.is_closed() {
        reasons.push("the spool is closed".into());
    }
    if spool_error.is_some() {
        reasons.push("the spool's last disk commit failed".into());
    }
    if clickhouse.is_err() {
        reasons.push("ClickHouse did not answer the last check: beacons wait in the spool".into());
    }
    for (shard, _) in &shards_down {
        reasons.push(format!(
            "shard {} of {shard_count} did not answer the last check: rows wait in the spool, reads fail without allow_partial=1",
            shard + 1
        ));
    }
    if writer_failing {
        reasons.push("storing rows in ClickHouse fails; the writer retries".into());
    }
    if spool.bytes * 5 >= max * 4 && !spool_full {
        reasons.push("the spool is over 80 % full".into());
    }
    let status = if spool_full || app.spool.is_closed() || spool_error.is_some() {
        "unhealthy"
    } else if clickhouse.is_err() || !shards_down.is_empty() || writer_failing || spool.bytes * 5 >= max * 4 {
        "degraded"
    } else {
        "healthy"
    };
    let mut body = json!({
        "status": status,
        "reasons": reasons,
        "version": env!("CARGO_PKG_VERSION"),
        "services": {
            "clickhouse": {
                "status": if clickhouse.is_ok() { "up" } else { "down" },
                "schema": if app.clickhouse_version.get().is_some() { "ready" } else { "waiting for ClickHouse" },
            },
            "writer": {
                "status": if writer_failing { "retrying" } else { "ok" },
                "dead_letter": { "rows": app.writer_status.dead_letter_rows() },
            },
        },
        "spool": {
            "bytes": spool.bytes,
            "max_bytes": max,
            "rows": spool.rows,
            "records": spool.records,
            "oldest_age_seconds": oldest_age,
            "full": spool_full,
        },
        "queue": { "depth": spool.records, "capacity": app.config.queue_capacity },
    });
    if shard_count > 0 {
        let down = |i: usize| shards_down.iter().find(|(s, _)| *s == i).map(|(_, why)| why.clone());
        body["services"]["clickhouse"]["shards"] =
            (0..shard_count).map(|i| json!({"shard": i + 1, "status": if down(i).is_some() { "down" } else { "up" }})).collect();
    }
    match crate::query::authorize(&app, &headers) {
        Ok(access) => {
            let details = [
                ("/services/clickhouse/version", json!(app.clickhouse_version.get())),
                ("/services/clickhouse/error", json!(clickhouse.err())),
                ("/services/clickhouse/checked_at_ms", json!(checked_at)),
                ("/services/writer/last_error", json!(app.writer_status.last_error())),
                ("/services/writer/dead_letter/last_error", json!(app.writer_status.dead_letter_error())),
                ("/spool/error", json!(spool_error)),
                (
                    "/spool/salvaged_at_start",
                    json!(app.spool.salvage().map(|s| json!({
                        "moved_to": s.moved_to.display().to_string(), "why": s.why, "cut_bytes": s.cut_bytes, "records": s.records,
                    }))),
                ),
            ];
            for (pointer, value) in details {
                let (parent, key) = pointer.rsplit_once('/').unwrap_or_default();
                if let Some(Value::Object(map)) = body.pointer_mut(parent) {
                    map.insert(key.to_owned(), value);
                }
            }
            if let Some(Value::Array(shards)) = body.pointer_mut("/services/clickhouse/shards") {
                for (shard, url) in shards.iter_mut().zip(&app.config.clickhouse_shards) {
                    let i = shard["shard"].as_u64().unwrap_or(0) as usize;
                    shard["url"] = json!(url);
                    shard["error"] = json!(shards_down.iter().find(|(s, _)| *s + 1 == i).map(|(_, why)| why));
                }
            }
            // Sites at 80 % of a cardinality limit or past it today.
            body["cardinality"] = app
                .cardinality
                .near_limits()
                .into_iter()
                .filter(|s| access.may_read(&s.site))
                .map(|s| json!({"site": s.site, "dimension": s.dimension, "distinct": s.distinct, "limit": s.limit, "folded": s.over}))
                .collect();
        }
        Err(_) => body["details"] = json!("errors, versions, paths and sites need Authorization: Bearer <read key>"),
    }
    let code = if status == "unhealthy" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(body)).into_response()
}

fn now_ms() -> u64 {
    u64::try_from(crate::ingest::now_ms()).unwrap_or(0)
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let spool = app.spool.stats();
    let t = &app.telemetry;
    t.queue_depth.set(spool.records as i64);
    t.spool_bytes.set(spool.bytes as i64);
    t.spool_rows.set(spool.rows as i64);
    t.spool_oldest_age_seconds.set(spool.oldest_ms.map_or(0.0, |o| now_ms().saturating_sub(o) as f64 / 1000.0));
    let commits = app.spool.commit_stats();
    t.spool_commits.set(commits.commits.load(std::sync::atomic::Ordering::Relaxed) as i64);
    t.rate_limit_clients.set(app.quotas.clients.len() as i64);
    t.rate_limit_overflow.set(app.quotas.clients.overflowed.load(std::sync::atomic::Ordering::Relaxed) as i64);
    for (site, bytes) in app.spool.site_bytes() {
        if app.sites.get(&site).is_some() {
            t.spool_site_bytes.with_label_values(&[&site]).set(bytes as i64);
        }
    }
    let mut response = app.telemetry.render().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
