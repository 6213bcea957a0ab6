//! Schema and migrations. At start the collector creates its database, then applies, in order,
//! every migration not yet recorded in `schema_migrations`. Each statement is idempotent
//! (`IF NOT EXISTS`), so a migration interrupted half-way is simply applied again.
//!
//! Tables:
//! - `metrics`, `api_calls`: raw rows, every report as it arrived (kept for audit), one day per
//!   partition (retention drops whole days), ordered by the common filters.
//! - `metrics_final`: one row per metric id once its hour is final (see
//!   [`super::finalize`]): the id's last reported value at the time of its first report.
//! - `rollup_<shape>_1d`, `rollup_<shape>_1h`: `AggregatingMergeTree` rollups of
//!   `metrics_final`, one per query shape ([`SHAPES`]), holding count / sum / min / max,
//!   good / needs-improvement / poor counts and a t-digest per hour (day) and per value of the
//!   shape's dimensions. Partitioned by UTC day number, so the finalizer can rebuild a day.
//! - `finalizer_progress`, `finalizer_lease`: how far the rollups are final, and which
//!   collector builds them.
//! - `releases`: the releases CI declared ([`crate::releases`]), each with its first `declared_at`.
//! - `dead_letter`: rows ClickHouse refused for good, as JSON text ([`super::dead_letter`]).
//! - `metrics_1m`, `metrics_1h`, `metrics_1d`: the rollups of schema 1–5 (insert-time views, which
//!   counted every report); no longer written or read, dropped by retention as they age.

use clickhouse::Client;
use serde::Deserialize;

use crate::config::Config;

/// Percentile levels kept in the rollups' t-digest states. Queries for other levels read raw rows.
pub const ROLLUP_LEVELS: [f64; 4] = [0.5, 0.75, 0.95, 0.99];

/// Dimensions of the rollups of schema 1 (every `group_by` and filter of the vitals API).
const ROLLUP_DIMENSIONS: &str = "url, device, browser, os, country, release, nav";

/// One rollup shape: the dimensions it keeps. A query is answered from the smallest shape that
/// holds every dimension it groups or filters by, or from raw rows when none does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub name: &'static str,
    pub dims: &'static [&'static str],
    /// Days of hour buckets kept; `None`: as long as the day buckets. Only the site-wide shape
    /// keeps every hour: per page, browser or country an hour holds about one value (an hour
    /// rollup would be as large as the raw table), so those keep the last few days' hours, for
    /// the partial day before the watermark; shorter ranges with dimensions are answered exactly
    /// from `metrics_final`.
    pub hour_days: Option<u32>,
}

impl Shape {
    pub fn table(self, grain: Grain) -> String {
        format!("rollup_{}_{}", self.name, grain.suffix())
    }

    pub fn holds(self, dims: &[&str]) -> bool {
        dims.iter().all(|d| self.dims.contains(d))
    }

    /// Whether hours are kept for any range (not only the last few days).
    pub fn all_hours(self) -> bool {
        self.hour_days.is_none()
    }

    /// Whether the shape keeps running totals (every shape answered in whole days: those with
    /// dimensions; the site-wide one keeps hourly histograms instead).
    pub fn running(self) -> bool {
        !self.all_hours()
    }

    pub fn running_table(self, grain: Grain) -> String {
        format!("running_{}_{}", self.name, grain.suffix())
    }
}

/// The grains every shape has.
pub const GRAINS: [Grain; 2] = [Grain::Hour, Grain::Day];

/// Days of hour buckets kept by shapes without every hour.
pub const RECENT_HOUR_DAYS: u32 = 3;

/// The shapes, smallest first. What the API and the dashboard ask: totals and series for a site
/// (`site`); by page, or one page's series (`page`); pages on one device class (`page_device`);
/// browsers and systems (`client`); countries (`geo`); releases and navigation types (`release`).
pub const SHAPES: [Shape; 6] = [
    Shape { name: "site", dims: &[], hour_days: None },
    Shape { name: "page", dims: &["url"], hour_days: Some(RECENT_HOUR_DAYS) },
    Shape { name: "page_device", dims: &["url", "device"], hour_days: Some(RECENT_HOUR_DAYS) },
    Shape { name: "geo", dims: &["device", "country"], hour_days: Some(RECENT_HOUR_DAYS) },
    Shape { name: "client", dims: &["device", "browser", "os"], hour_days: Some(RECENT_HOUR_DAYS) },
    Shape { name: "release", dims: &["release", "nav", "device"], hour_days: Some(RECENT_HOUR_DAYS) },
];

/// The smallest shape holding `dims`.
pub fn shape_for(dims: &[&str]) -> Option<Shape> {
    SHAPES.iter().copied().find(|s| s.holds(dims))
}

/// A rollup's bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Hour,
    Day,
}

impl Grain {
    pub fn seconds(self) -> i64 {
        match self {
            Grain::Hour => 3_600,
            Grain::Day => 86_400,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Grain::Hour => "1h",
            Grain::Day => "1d",
        }
    }
}

/// The aggregate states of a rollup row, in column order (the finalizer writes them, queries
/// merge them; the recent, not yet final part is turned into the same states at query time).
pub const STATE_COLUMNS: &str = "count_state, sum_state, min_state, max_state, good_state, ni_state, poor_state, quantiles_state";

/// The columns of [`STATE_COLUMNS`] with their types, in every rollup table.
const STATE_TYPES: &str = "count_state AggregateFunction(count), sum_state AggregateFunction(sum, Float64),
            min_state AggregateFunction(min, Float64), max_state AggregateFunction(max, Float64),
            good_state AggregateFunction(sum, UInt64), ni_state AggregateFunction(sum, UInt64), poor_state AggregateFunction(sum, UInt64),
            quantiles_state AggregateFunction(quantilesTDigest(0.5, 0.75, 0.95, 0.99), Float64)";

/// The expressions that make [`STATE_COLUMNS`] from a `value` and a `rating` column.
pub fn state_expressions(value: &str, rating: &str) -> String {
    format!(
        "countState() AS count_state, sumState({value}) AS sum_state, minState({value}) AS min_state, maxState({value}) AS max_state,
         sumState(toUInt64({rating} = 'good')) AS good_state, sumState(toUInt64({rating} = 'needs-improvement')) AS ni_state,
         sumState(toUInt64({rating} = 'poor')) AS poor_state, quantilesTDigestState(0.5, 0.75, 0.95, 0.99)({value}) AS quantiles_state"
    )
}

/// A shape's rollup table, partitioned by UTC day number (the finalizer drops and rebuilds a day).
fn shape_table(shape: Shape, grain: Grain) -> String {
    let dims: String = shape.dims.iter().map(|d| format!("{d} String, ")).collect();
    let order: String = shape.dims.iter().map(|d| format!("{d}, ")).collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            site String, name String, bucket DateTime, {dims}
            {STATE_TYPES}
        ) ENGINE = AggregatingMergeTree()
        PARTITION BY intDiv(toUInt32(bucket), 86400)
        ORDER BY (site, name, {order}bucket)",
        table = shape.table(grain)
    )
}

/// One migration: a version and its steps.
struct Migration {
    version: u32,
    name: &'static str,
    statements: Vec<Step>,
}

/// One idempotent step of a migration.
enum Step {
    /// A statement that is idempotent by itself (`IF NOT EXISTS`).
    Sql(String),
    /// `ALTER TABLE … ADD COLUMN`, skipped when the column exists (18.16 has no
    /// `ADD COLUMN IF NOT EXISTS`).
    AddColumn { table: &'static str, column: &'static str, definition: &'static str },
}

impl From<String> for Step {
    fn from(sql: String) -> Step {
        Step::Sql(sql)
    }
}

fn rollup_table(name: &str, partition: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (
            site String, name String, bucket DateTime,
            url String, device String, browser String, os String, country String, release String, nav String,
            {STATE_TYPES}
        ) ENGINE = AggregatingMergeTree()
        PARTITION BY {partition}(bucket)
        ORDER BY (site, name, bucket, {ROLLUP_DIMENSIONS})"
    )
}

fn rollup_view(table: &str, bucket_seconds: u32) -> String {
    format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {table}_mv TO {table} AS
        SELECT site, name, toDateTime(intDiv(toUInt32(event_time), {bucket_seconds}) * {bucket_seconds}) AS bucket, {ROLLUP_DIMENSIONS},
            countState() AS count_state,
            sumState(value) AS sum_state,
            minState(value) AS min_state,
            maxState(value) AS max_state,
            sumState(toUInt64(rating = 'good')) AS good_state,
            sumState(toUInt64(rating = 'needs-improvement')) AS ni_state,
            sumState(toUInt64(rating = 'poor')) AS poor_state,
            quantilesTDigestState(0.5, 0.75, 0.95, 0.99)(value) AS quantiles_state
        FROM metrics
        GROUP BY site, name, bucket, {ROLLUP_DIMENSIONS}"
    )
}

fn migrations() -> Vec<Migration> {
    vec![
        Migration {
            version: 1,
            name: "raw tables and minute/hour rollups",
            statements: vec![
                "CREATE TABLE IF NOT EXISTS metrics (
                site String,
                event_time DateTime,
                received_at DateTime,
                name String,
                value Float64,
                delta Float64,
                rating Enum8('none' = 0, 'good' = 1, 'needs-improvement' = 2, 'poor' = 3),
                metric_id String,
                session String,
                page String,
                url String,
                nav String,
                release String,
                env String,
                device String,
                browser String,
                os String,
                country String,
                ect String,
                viewport_w UInt32,
                viewport_h UInt32,
                dpr Float32,
                skew_ms Int64,
                attribution String,
                tag_keys Array(String),
                tag_values Array(String)
            ) ENGINE = MergeTree()
            PARTITION BY toYYYYMMDD(event_time)
            ORDER BY (site, name, url, event_time)"
                    .to_owned(),
                "CREATE TABLE IF NOT EXISTS api_calls (
                site String,
                event_time DateTime,
                received_at DateTime,
                route String,
                method String,
                status UInt16,
                ok UInt8,
                error String,
                duration Float64,
                server_timing String,
                session String,
                page String,
                url String,
                nav String,
                release String,
                env String,
                device String,
                browser String,
                os String,
                country String
            ) ENGINE = MergeTree()
            PARTITION BY toYYYYMMDD(event_time)
            ORDER BY (site, route, event_time)"
                    .to_owned(),
                rollup_table("metrics_1m", "toYYYYMMDD"),
                rollup_view("metrics_1m", 60),
                rollup_table("metrics_1h", "toYYYYMM"),
                rollup_view("metrics_1h", 3600),
            ]
            .into_iter()
            .map(Step::from)
            .collect(),
        },
        Migration {
            version: 2,
            name: "day rollup",
            statements: vec![
                rollup_table("metrics_1d", "toYYYYMM"),
                // History from the hour rollup (it keeps as long as the day rollup), once: only while
                // the day rollup is still empty, so a migration interrupted after this step and run
                // again does not count anything twice. Then the view takes new rows. The collector
                // migrates before it accepts beacons; rows another instance inserts between the two
                // steps would be missing from the day rollup only.
                format!(
                    "INSERT INTO metrics_1d
                SELECT site, name, toDateTime(intDiv(toUInt32(bucket), 86400) * 86400) AS day, {ROLLUP_DIMENSIONS},
                    countMergeState(count_state), sumMergeState(sum_state), minMergeState(min_state), maxMergeState(max_state),
                    sumMergeState(good_state), sumMergeState(ni_state), sumMergeState(poor_state),
                    quantilesTDigestMergeState(0.5, 0.75, 0.95, 0.99)(quantiles_state)
                FROM metrics_1h
                WHERE (SELECT count() FROM metrics_1d) = 0
                GROUP BY site, name, day, {ROLLUP_DIMENSIONS}"
                ),
                rollup_view("metrics_1d", 86_400),
            ]
            .into_iter()
            .map(Step::from)
            .collect(),
        },
        Migration {
            version: 3,
            name: "device memory and cores",
            statements: vec![
                // `navigator.deviceMemory` (GiB, 0 when not sent) and `hardwareConcurrency` (0 when not sent).
                Step::AddColumn { table: "metrics", column: "memory", definition: "Float32 DEFAULT 0 AFTER dpr" },
                Step::AddColumn { table: "metrics", column: "cores", definition: "UInt16 DEFAULT 0 AFTER memory" },
            ],
        },
        Migration {
            version: 4,
            name: "alert events and the evaluator lease",
            statements: vec![
                // Every transition and notification of every alert; the latest row per rule and
                // group is the alert's state after a restart.
                Step::Sql(
                    "CREATE TABLE IF NOT EXISTS alert_events (
                        rule String, grp String, site String, at DateTime, at_ms UInt64,
                        phase String, severity String, notice String,
                        value Float64, threshold Float64, samples UInt64, since DateTime, notified_at DateTime
                    ) ENGINE = MergeTree() PARTITION BY toYYYYMM(at) ORDER BY (site, rule, grp, at_ms)"
                        .to_owned(),
                ),
                // Heartbeats of the collectors that may evaluate; merges keep the latest per holder.
                // (`alert_events.recovering_since` comes with migration 5.)
                Step::Sql(
                    "CREATE TABLE IF NOT EXISTS alert_lease (holder String, first_ms UInt64, at_ms UInt64)
                    ENGINE = ReplacingMergeTree(at_ms) ORDER BY holder"
                        .to_owned(),
                ),
            ],
        },
        Migration {
            version: 5,
            name: "alert recovery start",
            statements: vec![Step::AddColumn { table: "alert_events", column: "recovering_since", definition: "DateTime DEFAULT 0" }],
        },
        Migration { version: 6, name: "final values: arrival order, metrics_final, rollups per query shape", statements: final_values() },
        Migration { version: 7, name: "recent raw rows in time order", statements: recent_rows() },
        Migration { version: 8, name: "histograms: site hours and running totals per shape", statements: histograms() },
        Migration {
            version: 9,
            name: "exact percentiles of each final hour",
            // Empty in hours finalized before: their series is read from the histograms.
            statements: vec![Step::AddColumn { table: "hist_site_1h", column: "q", definition: "Array(Float64)" }],
        },
        Migration {
            version: 10,
            name: "alert notifications owed until delivered",
            // A notice is written `owed` (with the body to send) before it is sent and
            // `delivered` after a 2xx; what is still owed is sent again, after a receiver outage
            // or a restart.
            statements: vec![Step::Sql(
                "CREATE TABLE IF NOT EXISTS alert_deliveries (
                    rule String, grp String, notifier String, notice_ms UInt64, at DateTime, at_ms UInt64,
                    state String, body String
                ) ENGINE = MergeTree() PARTITION BY toYYYYMM(at) ORDER BY (rule, grp, notifier, notice_ms, at_ms)"
                    .to_owned(),
            )],
        },
        Migration {
            version: 11,
            name: "arrival order of API calls",
            // With the page view it identifies a call (`rows::API_CALL_KEY`), so a call shipped
            // twice is counted once. 0 in rows stored before: those count once when equal in
            // every field. On a cluster, `distribute` then remakes the `Distributed` table.
            statements: vec![Step::AddColumn { table: "api_calls", column: "seq", definition: "UInt64 DEFAULT 0" }],
        },
        Migration {
            version: 12,
            name: "dead letters: rows ClickHouse refused for good",
            // One row per refused row ([`super::dead_letter`]), kept until a person deletes it
            // (no partitions, so retention leaves it alone). On a cluster `distribute` gives it a
            // `Distributed` table like the others.
            statements: vec![Step::Sql(
                "CREATE TABLE IF NOT EXISTS dead_letter (
                    dead_at DateTime, received_ms UInt64, spool_key UInt64, target String, error String, row String
                ) ENGINE = MergeTree() ORDER BY (dead_at, target, spool_key)"
                    .to_owned(),
            )],
        },
        Migration {
            version: 13,
            name: "agent ids of API calls",
            // With the page view it identifies a call across a resent beacon
            // (`rows::API_CALL_KEY`); empty in rows stored before and from older agents.
            statements: vec![Step::AddColumn { table: "api_calls", column: "call_id", definition: "String DEFAULT ''" }],
        },
        Migration {
            version: 14,
            name: "the page clock orders the reports of one id",
            // `page_at` (the metric's `at`) and `report_n` (the agent's `n`): the last report
            // of an id is the page's last, whichever collector received it when
            // (`finalize::REPORT_ORDER`); 0 in rows stored before, which keep the collectors'
            // order. A marker table for rows stored after their hour was made final.
            statements: page_order(),
        },
        Migration {
            version: 15,
            name: "declared releases",
            // One row per declaration (`POST /v1/releases`, [`crate::releases`]); a release is
            // stored once, and readers take its first declaration (`min(declared_ms)`). Kept for
            // good (no partitions, so retention leaves it alone); on a cluster `distribute` gives
            // it a `Distributed` table like the others.
            statements: vec![Step::Sql(
                "CREATE TABLE IF NOT EXISTS releases (
                    site String, release String, declared_at DateTime, declared_ms UInt64
                ) ENGINE = MergeTree() ORDER BY (site, release)"
                    .to_owned(),
            )],
        },
    ]
}

fn final_values() -> Vec<Step> {
    let mut steps = vec![
        Step::AddColumn { table: "metrics", column: "seq", definition: "UInt64 DEFAULT 0" },
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS metrics_final (
                site String, name String, event_time DateTime, metric_id String, value Float64,
                rating Enum8('none' = 0, 'good' = 1, 'needs-improvement' = 2, 'poor' = 3),
                reports UInt32, session String, page String,
                url String, nav String, release String, env String, device String, browser String, os String, country String
            ) ENGINE = MergeTree()
            PARTITION BY intDiv(toUInt32(event_time), 86400)
            ORDER BY (site, name, url, event_time)"
                .to_owned(),
        ),
        // Each finalizer span writes `started`, then `done`; the last `done` is the watermark.
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS finalizer_progress (at_ms UInt64, holder String, phase String, span_from DateTime, span_to DateTime)
            ENGINE = MergeTree() ORDER BY at_ms"
                .to_owned(),
        ),
        // Heartbeats of every collector: the lease, and the oldest row each still has to ship.
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS finalizer_lease (holder String, first_ms UInt64, at_ms UInt64, backlog_ms UInt64)
            ENGINE = ReplacingMergeTree(at_ms) ORDER BY holder"
                .to_owned(),
        ),
        Step::AddColumn { table: "alert_lease", column: "backlog_ms", definition: "UInt64 DEFAULT 0" },
    ];
    for shape in SHAPES {
        for grain in GRAINS {
            steps.push(Step::Sql(shape_table(shape, grain)));
        }
    }
    // The insert-time views counted every report of an id; the finalizer replaces them.
    for view in ["metrics_1m_mv", "metrics_1h_mv", "metrics_1d_mv"] {
        steps.push(Step::Sql(format!("DROP TABLE IF EXISTS {view}")));
    }
    // History older than the raw rows (which the finalizer starts from) moves from schema 1's
    // rollups into the new ones, as it was counted then; once: only into an empty table.
    for shape in SHAPES {
        for grain in GRAINS.into_iter().filter(|g| *g == Grain::Day || shape.all_hours()) {
            let (old, table) = (if grain == Grain::Hour { "metrics_1h" } else { "metrics_1d" }, shape.table(grain));
            let dims: String = shape.dims.iter().map(|d| format!(", {d}")).collect();
            steps.push(Step::Sql(format!(
                "INSERT INTO {table}
                 SELECT site, name, bucket{dims}, countMergeState(count_state), sumMergeState(sum_state), minMergeState(min_state),
                    maxMergeState(max_state), sumMergeState(good_state), sumMergeState(ni_state), sumMergeState(poor_state),
                    quantilesTDigestMergeState(0.5, 0.75, 0.95, 0.99)(quantiles_state)
                 FROM {old}
                 WHERE (SELECT count() FROM {table}) = 0 AND bucket < toDateTime({HISTORY_END})
                 GROUP BY site, name, bucket{dims}"
            )));
        }
    }
    // The copied history is final: the finalizer starts where it ends.
    steps.push(Step::Sql(format!(
        "INSERT INTO finalizer_progress (at_ms, holder, phase, span_from, span_to)
         SELECT 1, 'migration 6', 'done', toDateTime(end), toDateTime(end) FROM (SELECT {HISTORY_END} AS end)
         WHERE (SELECT count() FROM finalizer_progress) = 0 AND (SELECT count() FROM metrics_1h) > 0"
    )));
    steps
}

/// Days of raw rows `metrics_recent` keeps (whole UTC days, besides today's).
pub const RECENT_DAYS: u32 = 3;

/// What `metrics_recent` takes of each raw row: what answers read of rows not yet final, with the
/// row's report key ([`super::finalize::REPORT_KEY`]) computed once, at insert; since migration
/// 14 also the page's order of its reports (`with_page_order`).
fn recent_select(with_page_order: bool) -> String {
    format!(
        "SELECT site, name, event_time, {key} AS key, seq, value, rating, url, nav, release, env, device, browser, os, country{order} FROM metrics",
        key = super::finalize::REPORT_KEY,
        order = if with_page_order { ", page_at, report_n" } else { "" }
    )
}

/// Migration 14: the page's own clock and report number on raw rows, in `metrics` and its copy
/// in time order. The copying view is replaced by one that takes them (made before the old one
/// is dropped: a row inserted meanwhile may be copied twice, which answers read once).
fn page_order() -> Vec<Step> {
    let mut steps = Vec::new();
    for table in ["metrics", "metrics_recent"] {
        steps.push(Step::AddColumn { table, column: "page_at", definition: "UInt64 DEFAULT 0" });
        steps.push(Step::AddColumn { table, column: "report_n", definition: "UInt32 DEFAULT 0" });
    }
    steps
        .push(Step::Sql(format!("CREATE MATERIALIZED VIEW IF NOT EXISTS metrics_recent_mv2 TO metrics_recent AS {}", recent_select(true))));
    steps.push(Step::Sql("DROP TABLE IF EXISTS metrics_recent_mv".to_owned()));
    // Rows stored after their hour may have been made final: `late` (a shipper, from `hour` on)
    // and `done` (the finalizer handled the marker) rows per marker (`super::finalize`).
    steps.push(Step::Sql(
        "CREATE TABLE IF NOT EXISTS late_rows (at DateTime, at_ms UInt64, marker String, phase String, hour DateTime)
         ENGINE = MergeTree() PARTITION BY toYYYYMM(at) ORDER BY (marker, at_ms)"
            .to_owned(),
    ));
    steps
}

/// The columns of `metrics_recent` as migration 7 made it.
const RECENT_COLUMNS: &str = "site, name, event_time, key, seq, value, rating, url, nav, release, env, device, browser, os, country";

/// `metrics_recent`: the last few days of raw rows ordered by time, so the part of an answer that
/// is not final yet (the hour or two after the watermark) reads those rows only. `metrics` is
/// ordered by page for the finalizer and exact answers, so a time range there reads every row of
/// the metric in the day. Filled by a view at insert; the last days are copied once at migration
/// (rows the view also copied meanwhile are read once: the answers deduplicate reports).
fn recent_rows() -> Vec<Step> {
    vec![
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS metrics_recent (
                site String, name String, event_time DateTime, key UInt64, seq UInt64, value Float64,
                rating Enum8('none' = 0, 'good' = 1, 'needs-improvement' = 2, 'poor' = 3),
                url String, nav String, release String, env String, device String, browser String, os String, country String
            ) ENGINE = MergeTree()
            PARTITION BY intDiv(toUInt32(event_time), 86400)
            ORDER BY (site, name, event_time)"
                .to_owned(),
        ),
        Step::Sql(format!("CREATE MATERIALIZED VIEW IF NOT EXISTS metrics_recent_mv TO metrics_recent AS {}", recent_select(false))),
        // The columns named: applied again on a database where migration 14 gave
        // `metrics_recent` more columns, the copy still fills these.
        Step::Sql(format!(
            "INSERT INTO metrics_recent ({RECENT_COLUMNS}) {} WHERE event_time >= toDateTime((intDiv(toUInt32(now()), 86400) - {RECENT_DAYS}) * 86400)",
            recent_select(false)
        )),
    ]
}

/// The histogram columns (see [`super::histogram`]), after a row's time and keys.
/// Counts per bin are kept modulo 2³² (a running total may pass it; a difference of two, which
/// is what answers read, does not).
const HIST_COLUMNS: &str = "n UInt64, total Float64, good UInt64, ni UInt64, poor UInt64, bins Array(UInt16), counts Array(UInt32)";

/// `hist_site_1h`: a histogram per site, metric and hour (with the exact minimum and maximum),
/// partitioned by month: a month's series reads a part or two;
/// `running_<shape>_1d` and `_1h`: per key of each shape with dimensions, the running total of
/// every value first reported before `at`, at every UTC midnight (`_1d`) and at every other end
/// of a finalizer span (`_1h`, kept a few days, for the watermark). Partitioned by the UTC day of
/// `at - 1 s`, so a midnight point belongs to the day it closes and survives the finalizer's
/// rebuild of the day after. `histograms_since`: from when they hold every final value (the
/// epoch in a new database; the watermark when they were added to one with history).
fn histograms() -> Vec<Step> {
    let mut steps = vec![Step::Sql(format!(
        "CREATE TABLE IF NOT EXISTS hist_site_1h (site String, name String, bucket DateTime, {HIST_COLUMNS}, lo Float64, hi Float64)
         ENGINE = MergeTree() PARTITION BY toYYYYMM(bucket) ORDER BY (site, name, bucket)
         SETTINGS index_granularity = 1024"
    ))];
    for shape in SHAPES.iter().filter(|s| s.running()) {
        let dims: String = shape.dims.iter().map(|d| format!("{d} String, ")).collect();
        for grain in GRAINS {
            steps.push(Step::Sql(format!(
                "CREATE TABLE IF NOT EXISTS {table} (site String, name String, at DateTime, {dims}since DateTime, last DateTime, {HIST_COLUMNS})
                 ENGINE = MergeTree() PARTITION BY intDiv(toUInt32(at) - 1, 86400) ORDER BY (site, name, at, {order})
                 SETTINGS index_granularity = 256",
                table = shape.running_table(grain),
                order = shape.dims.join(", ")
            )));
        }
    }
    steps.push(Step::Sql("CREATE TABLE IF NOT EXISTS histograms_since (since DateTime) ENGINE = MergeTree() ORDER BY since".to_owned()));
    steps.push(Step::Sql(
        "INSERT INTO histograms_since
         SELECT toDateTime(if(count() = 0, 0, max(toUInt32(span_to)))) FROM finalizer_progress WHERE phase = 'done'
         HAVING (SELECT count() FROM histograms_since) = 0"
            .to_owned(),
    ));
    steps
}

/// From when (epoch s) `metrics_recent` holds every raw row, at `now`.
pub fn recent_from(now: i64) -> i64 {
    super::retention::kept_from(now, RECENT_DAYS)
}

/// Where the history copied from schema 1's rollups ends: the UTC day of the oldest raw row (from
/// there the finalizer makes values final), or today when no raw rows are left.
const HISTORY_END: &str = "(SELECT intDiv(toUInt32(if(count() = 0, now(), min(event_time))), 86400) * 86400 FROM metrics)";

#[cfg(test)]
mod tests {
    #[test]
    fn modern_servers_get_low_cardinality_codecs_and_ttl() {
        assert!(!super::is_modern("18.16.1") && super::is_modern("23.3.1") && super::is_modern("26.9.2.1"));
        let sql = "CREATE TABLE t (site String, url String, event_time DateTime, value Float64, device String) ENGINE = MergeTree()";
        assert_eq!(super::dialect(sql, false), sql);
        assert_eq!(
            super::dialect(sql, true),
            "CREATE TABLE t (site LowCardinality(String), url String, event_time DateTime CODEC(DoubleDelta, LZ4), \
             value Float64 CODEC(Gorilla, LZ4), device LowCardinality(String)) ENGINE = MergeTree()"
        );
    }

    #[test]
    fn deduplication_tokens_need_22_2() {
        for (version, ok) in
            [("18.16.1", false), ("22.1.3.7", false), ("22.2.2.1", true), ("24.8.4.13", true), ("26.9.1", true), ("", false)]
        {
            assert_eq!(super::supports_deduplication_token(version), ok, "{version}");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("ClickHouse at {url} is not reachable or refused {what}: {source}")]
    ClickHouse {
        url: String,
        what: String,
        #[source]
        source: clickhouse::error::Error,
    },
}

/// Longest wait for a server's first answer (its version) before migrating it.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Creates the database and applies pending migrations. Returns the server version.
pub async fn migrate(config: &Config) -> Result<String, SchemaError> {
    let mut version = String::new();
    for (url, database) in super::schema_targets(config) {
        version = migrate_server(config, &url, &database).await?;
        if let Some(cluster) = &config.clickhouse_cluster {
            distribute(config, &url, cluster).await?;
        }
    }
    if config.clickhouse_cluster.is_some() && !config.clickhouse_shards.contains(&config.clickhouse_url) {
        // The server this collector queries is not a shard: it gets the `Distributed` tables only.
        distribute(config, &config.clickhouse_url, config.clickhouse_cluster.as_deref().unwrap_or_default()).await?;
    }
    Ok(version)
}

/// Tables of the local database that get a `Distributed` table, and their sharding keys: the rows
/// of one page view stay on one shard (so its reports are deduplicated there); the rest spread.
fn sharding_key(table: &str) -> &'static str {
    match table {
        "metrics" | "api_calls" | "metrics_final" => "cityHash64(page)",
        _ => "rand()",
    }
}

/// Creates on the server at `url` a `Distributed` table in the configured database over each
/// table of the shards' local database (again, when the local table's columns changed).
async fn distribute(config: &Config, url: &str, cluster: &str) -> Result<(), SchemaError> {
    let err = |what: &str| {
        let url = url.to_owned();
        let what = what.to_owned();
        move |source| SchemaError::ClickHouse { url, what, source }
    };
    let (database, local) = (&config.clickhouse_database, super::local_database(config));
    let server = super::bare_client_at(config, url);
    server.query(&format!("CREATE DATABASE IF NOT EXISTS {database}")).execute().await.map_err(err("CREATE DATABASE"))?;
    #[derive(clickhouse::Row, Deserialize)]
    struct Table {
        name: String,
    }
    // The local tables as they are on the first shard (every shard is migrated the same way).
    let first = super::bare_client_at(config, config.clickhouse_shards.first().map_or(url, String::as_str));
    let tables = first
        .query("SELECT name FROM system.tables WHERE database = ? AND engine NOT IN ('MaterializedView', 'View') AND NOT startsWith(name, '.inner')")
        .bind(&local)
        .fetch_all::<Table>()
        .await
        .map_err(err("listing the local tables"))?;
    let columns = |client: &clickhouse::Client, database: &str, table: &str| {
        client.query("SELECT count() FROM system.columns WHERE database = ? AND table = ?").bind(database).bind(table).fetch_one::<u64>()
    };
    for table in tables {
        let local_columns = columns(&first, &local, &table.name).await.map_err(err("reading system.columns"))?;
        let existing = columns(&server, database, &table.name).await.map_err(err("reading system.columns"))?;
        if existing == local_columns {
            continue;
        }
        // Names come from the local database's own tables (letters, digits, _).
        let name = &table.name;
        if existing > 0 {
            server.query(&format!("DROP TABLE IF EXISTS {database}.{name}")).execute().await.map_err(err("DROP TABLE (distributed)"))?;
        }
        server
            .query(&format!(
                "CREATE TABLE IF NOT EXISTS {database}.{name} AS {local}.{name} ENGINE = Distributed({cluster}, {local}, {name}, {key})",
                key = sharding_key(name)
            ))
            .execute()
            .await
            .map_err(err("CREATE TABLE (distributed)"))?;
    }
    Ok(())
}

/// Creates `database` on the server at `url` and applies its pending migrations. Returns the
/// server's version.
async fn migrate_server(config: &Config, url: &str, database: &str) -> Result<String, SchemaError> {
    let err = |what: &str| {
        let url = url.to_owned();
        let what = what.to_owned();
        move |source| SchemaError::ClickHouse { url, what, source }
    };
    let server = super::bare_client_at(config, url);
    // A server that takes the connection and never answers is an error like a refused one (and
    // retried); one that answers gets all the time the migrations take.
    let version = tokio::time::timeout(PROBE_TIMEOUT, server.query("SELECT version()").fetch_one::<String>())
        .await
        .unwrap_or(Err(clickhouse::error::Error::TimedOut))
        .map_err(err("SELECT version()"))?;
    // The database name is checked by `Config::check` (letters, digits, _), so it is safe as an identifier.
    server.query(&format!("CREATE DATABASE IF NOT EXISTS {database}")).execute().await.map_err(err("CREATE DATABASE"))?;
    let client = super::client_at(config, url, database);
    client
        // A MergeTree (not TinyLog, which ClickHouse Cloud refuses). Databases made by earlier
        // versions keep their TinyLog table; both answer the same queries.
        .query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime)
             ENGINE = MergeTree() ORDER BY version",
        )
        .execute()
        .await
        .map_err(err("CREATE TABLE schema_migrations"))?;
    let applied = applied_versions(&client).await.map_err(err("reading schema_migrations"))?;
    let modern = is_modern(&version);
    for migration in migrations() {
        if applied.contains(&migration.version) {
            continue;
        }
        tracing::info!(version = migration.version, name = migration.name, "applying schema migration");
        for step in &migration.statements {
            let failed = err(&format!("migration {}", migration.version));
            match step {
                Step::Sql(sql) => client.query(&dialect(sql, modern)).execute().await.map_err(failed)?,
                Step::AddColumn { table, column, definition } => {
                    let exists = client
                        .query("SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = ?")
                        .bind(table)
                        .bind(column)
                        .fetch_one::<u64>()
                        .await
                        .map_err(err("reading system.columns"))?;
                    if exists == 0 {
                        let sql = dialect(&format!("ALTER TABLE {table} ADD COLUMN {column} {definition}"), modern);
                        client.query(&sql).execute().await.map_err(failed)?;
                    }
                }
            }
        }
        client
            .query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, now())")
            .bind(migration.version)
            .bind(migration.name)
            .execute()
            .await
            .map_err(err("recording a migration"))?;
    }
    if supports_deduplication_token(&version) {
        // Plain MergeTree keeps no insert hashes unless told to: the last 1 000 inserts' tokens
        // are remembered, so a batch sent again after a crash is dropped by the server.
        for table in ["metrics", "api_calls"] {
            client
                .query(&format!("ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = 1000"))
                .execute()
                .await
                .map_err(err("setting the deduplication window"))?;
        }
    }
    if modern {
        // Retention by TTL (merges drop expired rows and whole parts) instead of the hourly job;
        // set at every start, so a changed retention setting applies.
        for t in super::retention::expiring(super::retention::Keep::of(config)) {
            client
                .query(&format!("ALTER TABLE {} MODIFY TTL {} + INTERVAL {} DAY", t.table, t.column, t.days))
                .execute()
                .await
                .map_err(err("setting a table's TTL"))?;
        }
    }
    Ok(version)
}

/// Whether the server is modern (23 or later): low-cardinality columns, codecs and TTL.
pub fn is_modern(version: &str) -> bool {
    version.split('.').next().and_then(|m| m.parse::<u32>().ok()).is_some_and(|major| major >= 23)
}

/// Columns that hold few distinct values (`LowCardinality` on modern servers).
const LOW_CARDINALITY: [&str; 12] =
    ["site", "name", "nav", "release", "env", "device", "browser", "os", "country", "ect", "method", "phase"];

/// A statement as this server should run it: on modern servers, `LowCardinality(String)` for the
/// low-cardinality columns and codecs for times and values; 18.16 gets it as written.
pub fn dialect(sql: &str, modern: bool) -> String {
    if !modern {
        return sql.to_owned();
    }
    let mut out = sql.to_owned();
    for column in LOW_CARDINALITY {
        for end in [",", "\n", " DEFAULT", ")"] {
            out = out.replace(&format!(" {column} String{end}"), &format!(" {column} LowCardinality(String){end}"));
            out = out.replace(&format!("({column} String{end}"), &format!("({column} LowCardinality(String){end}"));
        }
    }
    out = out.replace("event_time DateTime,", "event_time DateTime CODEC(DoubleDelta, LZ4),");
    out = out.replace("received_at DateTime,", "received_at DateTime CODEC(DoubleDelta, LZ4),");
    out = out.replace("value Float64,", "value Float64 CODEC(Gorilla, LZ4),");
    out = out.replace("ADD COLUMN seq UInt64 DEFAULT 0", "ADD COLUMN seq UInt64 DEFAULT 0 CODEC(Delta, LZ4)");
    out
}

/// Every statement of every migration as a modern server runs them, in order (with `ADD COLUMN
/// IF NOT EXISTS`), then the TTLs: what `scripts/chdb-check.py` runs on chDB.
pub fn modern_statements(config: &Config) -> Vec<String> {
    let mut out = vec![
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = MergeTree() ORDER BY version"
            .to_owned(),
    ];
    for migration in migrations() {
        for step in migration.statements {
            out.push(match step {
                Step::Sql(sql) => dialect(&sql, true),
                Step::AddColumn { table, column, definition } => {
                    dialect(&format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition}"), true)
                }
            });
        }
        out.push(format!(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ({}, '{}', now())",
            migration.version, migration.name
        ));
    }
    for table in ["metrics", "api_calls"] {
        out.push(format!("ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = 1000"));
    }
    for t in super::retention::expiring(super::retention::Keep::of(config)) {
        out.push(format!("ALTER TABLE {} MODIFY TTL {} + INTERVAL {} DAY", t.table, t.column, t.days));
    }
    out
}

/// Whether the server takes `insert_deduplication_token` (ClickHouse 22.2 and later; the
/// `MergeTree` tables are given a deduplication window at start).
pub fn supports_deduplication_token(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (22, 2)
}

async fn applied_versions(client: &Client) -> Result<Vec<u32>, clickhouse::error::Error> {
    #[derive(clickhouse::Row, Deserialize)]
    struct Applied {
        version: u32,
    }
    let rows = client.query("SELECT version FROM schema_migrations").fetch_all::<Applied>().await?;
    Ok(rows.into_iter().map(|r| r.version).collect())
}
