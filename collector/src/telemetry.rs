//! The collector's own metrics, served as Prometheus text at `GET /metrics`.

use prometheus::{Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

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
    /// Beacons refused once their (configured) site was known, by detailed reason and site.
    pub refusals_by_site: IntCounterVec,
    /// Clients the per-client quota buckets remember, and requests that found the table full.
    pub rate_limit_clients: IntGauge,
    pub rate_limit_overflow: IntGauge,
    /// Values folded into `(other)` (or custom metric names refused) past a site's cardinality
    /// limit, by site and dimension.
    pub cardinality_folded: IntCounterVec,
    /// Values folded into `(other)` (or custom metric names refused) because the client that sent
    /// them had added its share of new values to the site today, by site and dimension.
    pub cardinality_client_folded: IntCounterVec,
    /// Values scrubbed before they were stored, by what they held (`email`, `jwt`, `token`,
    /// `query`, `rule`; see `ingest::scrub`).
    pub values_scrubbed: IntCounterVec,
    /// Bytes each site holds in the spool (only configured sites: a bounded label).
    pub spool_site_bytes: prometheus::IntGaugeVec,
    /// Beacons (spool records) not yet in ClickHouse.
    pub queue_depth: IntGauge,
    /// Bytes, rows and the oldest record's age (s) in the disk spool.
    pub spool_bytes: IntGauge,
    pub spool_rows: IntGauge,
    pub spool_oldest_age_seconds: Gauge,
    /// Durable spool commits so far (each shared by every beacon waiting at that moment).
    pub spool_commits: IntGauge,
    /// Spool records that could not be decoded and were skipped. Should stay 0.
    pub spool_records_skipped: IntCounter,
    /// Intact spool records of another format version, moved to the spool's quarantine table.
    pub spool_records_quarantined: IntCounter,
    /// Damaged spool files set aside at start (their readable records copied). Should stay 0.
    pub spool_files_salvaged: IntCounter,
    /// Rows per ClickHouse insert, by table.
    pub batch_rows: HistogramVec,
    /// Seconds per ClickHouse insert (including retries), by table.
    pub insert_seconds: HistogramVec,
    /// Rows stored, by table.
    pub rows_written: IntCounterVec,
    /// Rows accepted but given up on, by table and reason. Should stay 0.
    pub rows_dropped: IntCounterVec,
    /// Rows ClickHouse refused for good, kept as dead letters, by table and where they went
    /// (`clickhouse`: the `dead_letter` table, `file`: `<spool_dir>/dead-letter/`).
    pub dead_letter_rows: IntCounterVec,
    /// Release declarations (`POST /v1/releases`) by outcome: `declared`, `declared_again`, or
    /// why one was refused (`unauthorized`, `forbidden`, `unknown_site`, `invalid_release`, …).
    pub release_declarations: IntCounterVec,
    /// Alert rule evaluations by outcome (`ok`, `error`).
    pub alert_evaluations: IntCounterVec,
    /// Alert notifications by notifier and outcome (`delivered`, `failed` after the retries).
    pub alert_notifications: IntCounterVec,
    /// Groups a rule's evaluation saw but did not track, its `alert_max_groups_per_rule` reached.
    pub alert_groups_over_cap: IntCounterVec,
    /// Groups each rule tracks after its last evaluation (rules are configured: a bounded label).
    pub alert_groups: prometheus::IntGaugeVec,
    /// ClickHouse errors by operation (`insert`, `query`, `schema`, `retention`, `ping`, `finalize`).
    pub clickhouse_errors: IntCounterVec,
    /// Reports whose own time falls in an hour already final when they arrived: kept in the raw
    /// table, not in answers.
    pub late_reports: IntCounter,
    /// Hours made final by this collector's finalizer.
    pub hours_finalized: IntCounter,
    pub hours_refinalized: IntCounter,
    pub late_markers_lost: IntCounter,
    /// Everything first reported before this time (epoch s) is final.
    pub final_until_seconds: IntGauge,
    /// HTTP connections open now.
    pub connections_open: IntGauge,
    /// HTTP connections closed, by reason (`client`, `header_timeout`, `idle`, `shutdown`, and
    /// `ip_cap`: idle, closed to make room for a newer connection of its client).
    pub connections_closed: IntCounterVec,
    /// Times every `max_connections` slot was taken, so new connections waited in the backlog.
    pub connection_slots_exhausted: IntCounter,
    /// Connections closed as soon as they were accepted, by reason (`ip_cap`: the client had
    /// `ip_max_connections` open, none of them idle).
    pub connections_refused: IntCounterVec,
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
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique gauge");
            g
        };
        let queue_depth = gauge("queue_depth", "Beacons in the spool, not yet in ClickHouse.");
        let spool_oldest_age_seconds =
            Gauge::new("spool_oldest_age_seconds", "Age of the oldest row waiting in the spool, s.").expect("valid gauge");
        registry.register(Box::new(spool_oldest_age_seconds.clone())).expect("unique gauge");
        let plain_counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique counter");
            c
        };
        let skipped = plain_counter("spool_records_skipped_total", "Damaged spool records skipped.");
        let quarantined = plain_counter("spool_records_quarantined_total", "Spool records of another format version, kept aside.");
        let salvaged = plain_counter("spool_files_salvaged_total", "Damaged spool files set aside at start, their readable records kept.");
        let accepted = counter("metrics_accepted_total", "Metrics accepted, by kind.", &["kind"]);
        let late_reports =
            plain_counter("late_reports_total", "Reports that arrived after their hour was final (kept raw, not in answers).");
        let hours_finalized = plain_counter("hours_finalized_total", "Hours made final (metrics_final and rollups) by this collector.");
        let late_markers_lost = plain_counter(
            "late_markers_lost_total",
            "Batches stored late whose late_rows marker could not be recorded (their hours stay final without them).",
        );
        let hours_refinalized = plain_counter(
            "hours_refinalized_total",
            "Final hours this collector made final again because rows of theirs were stored late (counted when the rebuild starts).",
        );
        Telemetry {
            accepted_vital: accepted.with_label_values(&["vital"]),
            accepted_api: accepted.with_label_values(&["api"]),
            accepted_custom: accepted.with_label_values(&["custom"]),
            requests: counter("http_requests_total", "HTTP requests by route and status.", &["route", "status"]),
            metrics_rejected: counter("metrics_rejected_total", "Metrics dropped from a beacon, by reason.", &["reason"]),
            beacons_rejected: counter("beacons_rejected_total", "Whole beacons refused, by reason.", &["reason"]),
            refusals_by_site: counter(
                "ingest_refusals_total",
                "Beacons refused once their site was known, by reason (quotas with their unit) and site.",
                &["reason", "site"],
            ),
            cardinality_folded: counter(
                "cardinality_folded_total",
                "Values folded into (other), or custom metric names refused, past a site's cardinality limit, by site and dimension.",
                &["site", "dimension"],
            ),
            cardinality_client_folded: counter(
                "cardinality_client_folded_total",
                "Values folded into (other), or custom metric names refused, because their client had added its share of new values to the site today (cardinality_new_values_per_client_per_day), by site and dimension.",
                &["site", "dimension"],
            ),
            values_scrubbed: counter(
                "values_scrubbed_total",
                "Values scrubbed before they were stored (e-mail, JWT, token, query string, site rule), by kind.",
                &["kind"],
            ),
            rate_limit_clients: gauge("rate_limit_clients", "Clients the per-client quota buckets remember."),
            rate_limit_overflow: gauge(
                "rate_limit_overflow_requests",
                "Requests limited by a shared overflow bucket because the client table was at its cap.",
            ),
            spool_site_bytes: {
                let g = prometheus::IntGaugeVec::new(Opts::new("spool_site_bytes", "Bytes each site holds in the spool."), &["site"])
                    .expect("valid gauge");
                registry.register(Box::new(g.clone())).expect("unique gauge");
                g
            },
            queue_depth,
            spool_bytes: gauge("spool_bytes", "Bytes in the disk spool."),
            spool_rows: gauge("spool_rows", "Rows in the disk spool, not yet in ClickHouse."),
            spool_commits: gauge("spool_commits", "Durable spool commits since start."),
            spool_oldest_age_seconds,
            spool_records_skipped: skipped,
            spool_files_salvaged: salvaged,
            spool_records_quarantined: quarantined,
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
            dead_letter_rows: counter(
                "dead_letter_rows_total",
                "Rows ClickHouse refused for good, kept as dead letters, by table and where (clickhouse, file).",
                &["table", "to"],
            ),
            release_declarations: counter(
                "release_declarations_total",
                "Release declarations (POST /v1/releases), by outcome (declared, declared_again, or why refused).",
                &["outcome"],
            ),
            alert_evaluations: counter("alert_evaluations_total", "Alert rule evaluations, by outcome.", &["outcome"]),
            alert_notifications: counter(
                "alert_notifications_total",
                "Alert notifications, by notifier and outcome.",
                &["notifier", "outcome"],
            ),
            alert_groups_over_cap: counter(
                "alert_groups_over_cap_total",
                "Groups an alert rule saw but did not track because it tracked alert_max_groups_per_rule already, by rule.",
                &["rule"],
            ),
            alert_groups: {
                let g = prometheus::IntGaugeVec::new(Opts::new("alert_groups", "Groups each alert rule tracks."), &["rule"])
                    .expect("valid gauge");
                registry.register(Box::new(g.clone())).expect("unique gauge");
                g
            },
            clickhouse_errors: counter("clickhouse_errors_total", "ClickHouse errors, by operation.", &["op"]),
            late_reports,
            hours_finalized,
            hours_refinalized,
            late_markers_lost,
            final_until_seconds: gauge("final_until_seconds", "Everything first reported before this time (epoch s) is final."),
            connections_open: gauge("connections_open", "HTTP connections open."),
            connections_closed: counter("connections_closed_total", "HTTP connections closed, by reason.", &["reason"]),
            connection_slots_exhausted: plain_counter(
                "connection_slots_exhausted_total",
                "Times every connection slot (max_connections) was taken; new connections waited in the listen backlog.",
            ),
            connections_refused: counter(
                "connections_refused_total",
                "Connections closed as soon as they were accepted, by reason (ip_cap: the client had ip_max_connections open, none idle).",
                &["reason"],
            ),
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
