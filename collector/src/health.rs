//! `GET /healthz` and `GET /metrics`: how the collector itself is doing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::App;

/// `healthy` when ClickHouse answers and the queue flows; `degraded` when inserts are failing or
/// the queue is over 80 % full (beacons may soon get 503); `unhealthy` (HTTP 503) when ClickHouse
/// does not answer.
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
    let capacity = app.queue.max_capacity();
    let depth = capacity - app.queue.capacity();
    let writer_failing = app.writer_status.is_failing();
    let status = if clickhouse_error.is_some() {
        "unhealthy"
    } else if writer_failing || depth * 5 >= capacity * 4 {
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
                "version": app.clickhouse_version,
                "error": clickhouse_error,
            },
            "writer": {
                "status": if writer_failing { "retrying" } else { "ok" },
                "last_error": app.writer_status.last_error(),
            },
        },
        "queue": { "depth": depth, "capacity": capacity },
    });
    let code = if status == "unhealthy" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(body)).into_response()
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    app.telemetry.queue_depth.set((app.queue.max_capacity() - app.queue.capacity()) as i64);
    let mut response = app.telemetry.render().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
