//! The collector's own metrics, served as Prometheus text at `GET /metrics`.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Every counter the collector keeps. One instance per running app (tests run several).
#[derive(Debug, Clone)]
pub struct Telemetry {
    registry: Registry,
    /// HTTP requests by matched route and status.
    pub requests: IntCounterVec,
    /// Metrics accepted by kind (`vital`, `api`, `custom`): `pulse_metrics_accepted_total{kind}`,
    /// resolved once because ingest counts every metric.
    pub accepted_vital: IntCounter,
    pub accepted_api: IntCounter,
    pub accepted_custom: IntCounter,
    /// Metrics dropped from otherwise good beacons, by reason (`not_finite`, `parse`, …).
    pub metrics_rejected: IntCounterVec,
    /// Whole beacons refused, by reason (`too_large`, `malformed`, `unknown_site`, …).
    pub beacons_rejected: IntCounterVec,
    /// Beacons waiting in the queue.
    pub queue_depth: IntGauge,
    /// Rows per ClickHouse insert, by table.
    pub batch_rows: HistogramVec,
    /// Seconds per ClickHouse insert (including retries), by table.
    pub insert_seconds: HistogramVec,
    /// Rows stored, by table.
    pub rows_written: IntCounterVec,
    /// Rows accepted but given up on, by table and reason. Should stay 0.
    pub rows_dropped: IntCounterVec,
    /// ClickHouse errors by operation (`insert`, `query`, `schema`, `retention`, `ping`).
    pub clickhouse_errors: IntCounterVec,
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let registry = Registry::new_custom(Some("pulse".into()), None).expect("valid registry prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique counter");
            c
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["table"]).expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("unique histogram");
            h
        };
        let queue_depth = IntGauge::new("queue_depth", "Beacons waiting for the ClickHouse writer.").expect("valid gauge");
        registry.register(Box::new(queue_depth.clone())).expect("unique gauge");
        let accepted = counter("metrics_accepted_total", "Metrics accepted, by kind.", &["kind"]);
        Telemetry {
            accepted_vital: accepted.with_label_values(&["vital"]),
            accepted_api: accepted.with_label_values(&["api"]),
            accepted_custom: accepted.with_label_values(&["custom"]),
            requests: counter("http_requests_total", "HTTP requests by route and status.", &["route", "status"]),
            metrics_rejected: counter("metrics_rejected_total", "Metrics dropped from a beacon, by reason.", &["reason"]),
            beacons_rejected: counter("beacons_rejected_total", "Whole beacons refused, by reason.", &["reason"]),
            queue_depth,
            batch_rows: histogram(
                "insert_batch_rows",
                "Rows per ClickHouse insert.",
                vec![1.0, 10.0, 100.0, 1_000.0, 5_000.0, 20_000.0, 100_000.0],
            ),
            insert_seconds: histogram(
                "insert_duration_seconds",
                "Seconds per ClickHouse insert, retries included.",
                prometheus::exponential_buckets(0.001, 4.0, 9).expect("valid buckets"),
            ),
            rows_written: counter("rows_written_total", "Rows stored in ClickHouse, by table.", &["table"]),
            rows_dropped: counter("rows_dropped_total", "Accepted rows given up on, by table and reason.", &["table", "reason"]),
            clickhouse_errors: counter("clickhouse_errors_total", "ClickHouse errors, by operation.", &["op"]),
            registry,
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a failure would be a bug in the registry.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%err, "encoding /metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}
