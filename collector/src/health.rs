//! `GET /healthz` and `GET /metrics`: how the collector itself is doing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::App;

/// `healthy` when ClickHouse answers and the spool drains; `degraded` when ClickHouse does not
/// answer or inserts fail (beacons are still accepted: they wait in the spool) or the spool is
/// over 80 % full; `unhealthy` (HTTP 503) when the spool cannot take beacons (it refused one for
/// want of space, its last disk commit failed, or it is closed).
pub async fn healthz(State(app): State<Arc<App>>) -> Response {
    let ping = tokio::time::timeout(Duration::from_secs(2), crate::storage::ping(&app.clickhouse)).await;
    let clickhouse_error = match ping {
        Ok(Ok(())) => None,
        Ok(Err(err)) => {
            app.telemetry.clickhouse_errors.with_label_values(&["ping"]).inc();
            Some(err.to_string())
        }
        Err(_) => Some("no answer within 2 s".to_owned()),
    };
    let spool = app.spool.stats();
    let max = app.spool.max_bytes();
    let oldest_age = spool.oldest_ms.map(|t| (now_ms().saturating_sub(t)) as f64 / 1000.0);
    let writer_failing = app.writer_status.is_failing();
    let spool_full = spool.bytes >= max || app.spool.is_full();
    let spool_error = app.spool.failure();
    let status = if spool_full || app.spool.is_closed() || spool_error.is_some() {
        "unhealthy"
    } else if clickhouse_error.is_some() || writer_failing || spool.bytes * 5 >= max * 4 {
        "degraded"
    } else {
        "healthy"
    };
    let body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "services": {
            "clickhouse": {
                "status": if clickhouse_error.is_none() { "up" } else { "down" },
                "version": app.clickhouse_version.get(),
                "schema": if app.clickhouse_version.get().is_some() { "ready" } else { "waiting for ClickHouse" },
                "error": clickhouse_error,
            },
            "writer": {
                "status": if writer_failing { "retrying" } else { "ok" },
                "last_error": app.writer_status.last_error(),
                "dead_letter": {
                    "rows": app.writer_status.dead_letter_rows(),
                    "last_error": app.writer_status.dead_letter_error(),
                },
            },
        },
        "spool": {
            "bytes": spool.bytes,
            "max_bytes": max,
            "rows": spool.rows,
            "records": spool.records,
            "oldest_age_seconds": oldest_age,
            "full": spool_full,
            "error": spool_error,
            "salvaged_at_start": app.spool.salvage().map(|s| json!({
                "moved_to": s.moved_to.display().to_string(), "why": s.why, "cut_bytes": s.cut_bytes, "records": s.records,
            })),
        },
        "queue": { "depth": spool.records, "capacity": app.config.queue_capacity },
        // Sites at 80 % of a cardinality limit or past it today.
        "cardinality": app.cardinality.near_limits().into_iter().map(|s| json!({
            "site": s.site, "dimension": s.dimension, "distinct": s.distinct, "limit": s.limit, "folded": s.over,
        })).collect::<Vec<_>>(),
    });
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
