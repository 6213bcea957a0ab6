//! Where an answer comes from, and the SQL that reads it.
//!
//! Every metric id counts once, with its last reported value, at the time of its first report
//! ([`crate::storage::finalize`]). Hours before the finalizer's watermark are final: exact
//! answers read them from `metrics_final`, rollup answers from the rollup of the smallest shape
//! that holds the query's dimensions. Hours after it are read from raw rows, deduplicated the same
//! way at query time (for rollup answers, turned into the same aggregate states and merged).

use super::params::TimeRange;
use super::request::SourceChoice;
use super::sql::Sql;
use crate::errors::QueryError;
use crate::storage::finalize::{LOOKBACK_SECONDS, REPORT_KEY, REPORT_ORDER, RE_REPORTED};
use crate::storage::schema::{recent_from, shape_for, state_expressions, Grain, Shape, ROLLUP_LEVELS, STATE_COLUMNS};
use crate::App;

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// Where an answer comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Exact percentiles: final values from `metrics_final`, the rest from raw rows.
    Exact,
    /// t-digest percentiles (p50, p75, p95, p99) from one rollup shape, the rest from raw rows.
    Rollup(Shape),
}

impl Source {
    pub fn name(self) -> String {
        match self {
            Source::Exact => "raw".to_owned(),
            Source::Rollup(shape) => format!("rollup_{}", shape.name),
        }
    }
}

/// What a query asks of its source.
#[derive(Debug)]
pub struct Need<'a> {
    /// Percentile levels in %.
    pub levels: &'a [f64],
    /// Dimensions it groups or filters by.
    pub dims: &'a [&'a str],
    /// The finest bucket it needs, s (a 1-minute series cannot come from an hour rollup, a week
    /// by page needs whole days).
    pub finest: i64,
}

/// Picks the source: `choice` is the `source` parameter; `raw_max_seconds` the longest range
/// answered exactly by default.
pub fn choose(choice: SourceChoice, range: TimeRange, need: &Need, raw_max_seconds: i64) -> Result<Source, QueryError> {
    let in_rollup = need.levels.iter().all(|p| rollup_index(*p).is_some());
    let shape = shape_for(need.dims);
    // Why no rollup can answer, if none can.
    let refusal = if !in_rollup {
        Some("rollups hold p50, p75, p95 and p99 only; use source=raw for other percentiles".to_owned())
    } else if need.finest < HOUR {
        Some("rollups hold whole hours; use source=raw for minutes".to_owned())
    } else if shape.is_none() {
        Some(format!("no rollup keeps {} together; use source=raw", need.dims.join(" and ")))
    } else if need.finest < DAY && !shape.is_some_and(|s| s.all_hours()) {
        Some(format!("rollups by {} hold whole days; use interval=1d, a range over 7 days, or source=raw", need.dims.join(" and ")))
    } else {
        None
    };
    match (choice, refusal, shape) {
        (SourceChoice::Raw, ..) => Ok(Source::Exact),
        (SourceChoice::Rollup, Some(why), _) => Err(QueryError::bad("source", why)),
        (SourceChoice::Rollup, None, Some(shape)) => Ok(Source::Rollup(shape)),
        (_, None, Some(shape)) if range.seconds() > raw_max_seconds => Ok(Source::Rollup(shape)),
        _ => Ok(Source::Exact),
    }
}

/// 1-based index of a percentile in the rollup's quantile array.
pub fn rollup_index(percentile: f64) -> Option<usize> {
    ROLLUP_LEVELS.iter().position(|l| (l * 100.0 - percentile).abs() < 1e-9).map(|i| i + 1)
}

/// One query's reading of the store: the site, metric and filters, the range, the watermark.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    pub site: &'a str,
    pub metric: &'a str,
    pub filters: &'a [(&'static str, String)],
    pub range: TimeRange,
    /// Everything first reported before this is final (epoch s); `None`: nothing is yet.
    pub final_until: Option<i64>,
    /// The grouping expression (a column name from the code's fixed lists, or `''`).
    pub group: &'a str,
    /// Bucket size of a series, s; `None` for a summary (every row in bucket 0).
    pub step: Option<i64>,
    /// From when `metrics_recent` holds every raw row ([`crate::storage::schema::recent_from`]).
    pub recent_from: i64,
}

impl<'a> Scope<'a> {
    /// A site-wide summary scope over `range`, read at `now` (epoch s): the watermark the app
    /// knows and `metrics_recent`'s start then. Series and groupings set `step` and `group`.
    pub fn at(app: &App, now: i64, site: &'a str, metric: &'a str, filters: &'a [(&'static str, String)], range: TimeRange) -> Scope<'a> {
        Scope {
            site,
            metric,
            filters,
            range,
            final_until: app.finalizer.final_until(),
            group: "''",
            step: None,
            recent_from: recent_from(now),
        }
    }

    /// `[from, final_until)` and `[final_until, to)`, each if not empty.
    pub fn split(&self) -> (Option<TimeRange>, Option<TimeRange>) {
        let TimeRange { from, to } = self.range;
        let w = self.final_until.unwrap_or(i64::MIN).clamp(from, to);
        ((w > from).then_some(TimeRange { from, to: w }), (to > w).then_some(TimeRange { from: w, to }))
    }

    /// The grouping expression, never a constant (see [`Scope::bucket`]).
    fn group_expr(&self) -> String {
        if self.group == "''" {
            "materialize('')".to_owned()
        } else {
            self.group.to_owned()
        }
    }

    fn bucket(&self, column: &str) -> String {
        match self.step {
            Some(step) => format!("toUInt32(intDiv(toUInt32({column}), {step}) * {step})"),
            // Not a constant: ClickHouse 18.16 refuses a constant column in a `UNION ALL` of
            // `Distributed` reads ("non constant in source stream but must be constant").
            None => "materialize(toUInt32(0))".to_owned(),
        }
    }

    fn push_where(&self, sql: &mut Sql, time: &str, range: TimeRange) {
        sql.push(
            &format!(" WHERE site = ? AND name = ? AND {time} >= toDateTime(?) AND {time} < toDateTime(?)"),
            [self.site.into(), self.metric.into(), range.from.into(), range.to.into()],
        );
        sql.push_filters(self.filters);
    }

    /// The raw rows of `range` as one row per id (`grp`, `t`, `v`, `r`): from `metrics_recent`
    /// when it holds every report around the range, else from `metrics`.
    fn push_recent(&self, sql: &mut Sql, range: TimeRange) {
        sql.push(&format!("SELECT grp, {} AS t, v, r FROM (", self.bucket("first_time")), []);
        // The last report's value; for metrics reported once every copy holds the same value
        // (a beacon delivered twice), so any is the last, and cheaper.
        let (value, rating) = if RE_REPORTED.contains(&self.metric) {
            (format!("argMax(value, {REPORT_ORDER})"), format!("argMax(rating, {REPORT_ORDER})"))
        } else {
            ("any(value)".to_owned(), "any(rating)".to_owned())
        };
        sql.push(
            &format!("SELECT min(event_time) AS first_time, {value} AS v, {rating} AS r, any({group}) AS grp", group = self.group_expr()),
            [],
        );
        let key = self.push_recent_reports(sql, range);
        sql.push(
            &format!(" GROUP BY {key} HAVING first_time >= toDateTime(?) AND first_time < toDateTime(?))"),
            [range.from.into(), range.to.into()],
        );
    }

    /// `FROM … WHERE …` of the raw reports that decide the values first reported in `range`:
    /// from `metrics_recent` when it holds every report around the range, else from `metrics`.
    /// Returns the expression of the report key there (`metrics_recent` keeps it).
    fn push_recent_reports(&self, sql: &mut Sql, range: TimeRange) -> &'static str {
        let (table, key) =
            if range.from - LOOKBACK_SECONDS >= self.recent_from { ("metrics_recent", "key") } else { ("metrics", REPORT_KEY) };
        sql.push(&format!(" FROM {table} WHERE site = ? AND name = ?"), [self.site.into(), self.metric.into()]);
        if RE_REPORTED.contains(&self.metric) {
            // The reports around the range of the ids reported in it (their first report may be
            // before it, their last after it).
            sql.push(
                &format!(
                    " AND ((event_time >= toDateTime(?) AND event_time < toDateTime(?))
                    OR (event_time >= toDateTime(?) AND event_time < toDateTime(?)
                        AND {key} IN (SELECT {key} FROM {table} WHERE site = ? AND name = ?
                                          AND event_time >= toDateTime(?) AND event_time < toDateTime(?))))"
                ),
                [
                    range.from.into(),
                    range.to.into(),
                    (range.from - LOOKBACK_SECONDS).into(),
                    (range.to + LOOKBACK_SECONDS).into(),
                    self.site.into(),
                    self.metric.into(),
                    range.from.into(),
                    range.to.into(),
                ],
            );
        } else {
            sql.push(" AND event_time >= toDateTime(?) AND event_time < toDateTime(?)", [range.from.into(), range.to.into()]);
        }
        sql.push_filters(self.filters);
        key
    }

    /// The raw reports of the values first reported in `recent`, not deduplicated (the caller
    /// keeps, per [`REPORT_KEY`], the last report by [`crate::storage::finalize::report_order`]
    /// and the time of the first): `key`, `at`, the order (`o_seq`, `o_n`, `o_at`: `seq`,
    /// `report_n`, `page_at`), `value`, `rating` (0 none, 1 good, 2 needs improvement, 3 poor)
    /// and `grp`.
    pub fn push_recent_rows(&self, sql: &mut Sql, recent: TimeRange) {
        let mut from = Sql::new();
        let key = self.push_recent_reports(&mut from, recent);
        // The order of reports only matters between reports of different values: only metrics
        // reported again have those. (Aliases of their own: one named `seq` would replace the
        // column inside the report key of rows without an id.)
        let order = if RE_REPORTED.contains(&self.metric) {
            "seq AS o_seq, report_n AS o_n, page_at AS o_at"
        } else {
            "materialize(toUInt64(0)) AS o_seq, materialize(toUInt32(0)) AS o_n, materialize(toUInt64(0)) AS o_at"
        };
        sql.push(
            &format!(
                "SELECT {key} AS report, toUInt32(event_time) AS at, {order}, value, toUInt8(rating) AS rating, {group} AS grp",
                group = self.group_expr()
            ),
            [],
        );
        sql.append(from);
    }

    /// One row per metric id first reported in the range (`grp`, `t`, `v`, `r`): final ones from
    /// `metrics_final`, the rest deduplicated from raw rows.
    pub fn push_values(&self, sql: &mut Sql) {
        let (done, recent) = self.split();
        sql.push("(", []);
        if let Some(done) = done {
            sql.push(
                &format!(
                    "SELECT {} AS grp, {} AS t, value AS v, rating AS r FROM metrics_final",
                    self.group_expr(),
                    self.bucket("event_time")
                ),
                [],
            );
            self.push_where(sql, "event_time", done);
            if recent.is_some() {
                sql.push(" UNION ALL ", []);
            }
        }
        if let Some(recent) = recent {
            self.push_recent(sql, recent);
        }
        sql.push(")", []);
    }

    /// Aggregate states ([`STATE_COLUMNS`]) by `grp` and `t`: final hours from `shape`'s rollups
    /// (whole days from the day rollup where the buckets allow; hours from the hour rollup, or
    /// from `metrics_final` for shapes without one), the rest from raw rows.
    pub fn push_states(&self, sql: &mut Sql, shape: Shape) {
        let (done, recent) = self.split();
        let mut parts: Vec<(Option<Grain>, TimeRange)> = Vec::new();
        if let Some(done) = done {
            match self.step {
                Some(step) if step < DAY => parts.push((Some(Grain::Hour), done)),
                _ => {
                    // Only whole days are read from the day rollup: its current day may already
                    // hold hours this reader does not count as final yet. Hours around them from
                    // the hour rollup while it keeps them, else from `metrics_final`.
                    let (days, rest) = day_segments(done);
                    let kept_from = shape.hour_days.map_or(i64::MIN, |d| self.final_until.unwrap_or(done.to) - (i64::from(d) - 1) * DAY);
                    parts.extend(days.map(|d| (Some(Grain::Day), d)));
                    parts.extend(rest.into_iter().map(|h| ((h.from >= kept_from).then_some(Grain::Hour), h)));
                }
            }
        }
        sql.push("(", []);
        for (i, (grain, part)) in parts.iter().enumerate() {
            if i > 0 {
                sql.push(" UNION ALL ", []);
            }
            match grain {
                Some(grain) => {
                    sql.push(
                        &format!(
                            "SELECT {} AS grp, {} AS t, {STATE_COLUMNS} FROM {}",
                            self.group_expr(),
                            self.bucket("bucket"),
                            shape.table(*grain)
                        ),
                        [],
                    );
                    self.push_where(sql, "bucket", *part);
                }
                None => {
                    sql.push(
                        &format!(
                            "SELECT {} AS grp, {} AS t, {} FROM metrics_final",
                            self.group_expr(),
                            self.bucket("event_time"),
                            state_expressions("value", "rating")
                        ),
                        [],
                    );
                    self.push_where(sql, "event_time", *part);
                    sql.push(" GROUP BY grp, t", []);
                }
            }
        }
        if let Some(recent) = recent {
            if !parts.is_empty() {
                sql.push(" UNION ALL ", []);
            }
            sql.push(&format!("SELECT grp, t, {} FROM (", state_expressions("v", "r")), []);
            self.push_recent(sql, recent);
            sql.push(") GROUP BY grp, t", []);
        }
        sql.push(")", []);
    }
}

impl Scope<'_> {
    /// The running totals of `shape` at the points `a` and `b` ([`crate::storage::histogram::combine`] takes
    /// one from the other), as [`crate::storage::histogram::HistRow`]s.
    pub fn push_points(&self, sql: &mut Sql, shape: Shape, a: i64, b: i64) {
        for (i, at) in [a, b].into_iter().enumerate() {
            if i > 0 {
                sql.push(" UNION ALL ", []);
            }
            let grain = if at % DAY == 0 { Grain::Day } else { Grain::Hour };
            sql.push(
                &format!(
                    "SELECT {grp} AS grp, materialize(toUInt32(0)) AS t, cityHash64({dims}) AS key, toUInt32(since) AS ep, toUInt32(at) AS pt,
                        n, total, good, ni, poor, materialize(nan) AS lo, materialize(nan) AS hi, bins, counts FROM {table}
                     WHERE site = ? AND name = ? AND at = toDateTime(?)",
                    grp = self.group_expr(),
                    dims = shape.dims.join(", "),
                    table = shape.running_table(grain)
                ),
                [self.site.into(), self.metric.into(), at.into()],
            );
            sql.push_filters(self.filters);
        }
    }

    /// The hours of `hist_site_1h` in `done`, by `t`, as [`crate::storage::histogram::HistRow`]s.
    pub fn push_site_hours(&self, sql: &mut Sql, done: TimeRange) {
        sql.push(
            &format!(
                "SELECT {grp} AS grp, {t} AS t, materialize(toUInt64(0)) AS key, materialize(toUInt32(0)) AS ep, materialize(toUInt32(0)) AS pt,
                    n, total, good, ni, poor, lo, hi, bins, counts FROM hist_site_1h",
                grp = self.group_expr(),
                t = self.bucket("bucket")
            ),
            [],
        );
        self.push_where(sql, "bucket", done);
    }

    /// Per final hour of `done`: `t`, `parts` (rows of the hour), `n` and the exact percentiles `q`.
    pub fn push_site_hour_percentiles(&self, sql: &mut Sql, done: TimeRange) {
        sql.push("SELECT toUInt32(bucket) AS t, count() AS parts, sum(n) AS hn, any(q) AS hq FROM hist_site_1h", []);
        self.push_where(sql, "bucket", done);
        sql.push(" GROUP BY t", []);
    }
}

/// `[from, to)` as its whole UTC days and the hours before and after them.
fn day_segments(part: TimeRange) -> (Option<TimeRange>, Vec<TimeRange>) {
    let TimeRange { from, to } = part;
    let (first_day, days_end) = ((from + DAY - 1).div_euclid(DAY) * DAY, to.div_euclid(DAY) * DAY);
    if first_day >= days_end {
        return (None, vec![part]);
    }
    let mut hours = Vec::new();
    if from < first_day {
        hours.push(TimeRange { from, to: first_day });
    }
    if days_end < to {
        hours.push(TimeRange { from: days_end, to });
    }
    (Some(TimeRange { from: first_day, to: days_end }), hours)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: i64 = 86_400;
    const H: i64 = 3_600;

    fn r(from: i64, to: i64) -> TimeRange {
        TimeRange { from, to }
    }

    #[test]
    fn summaries_read_whole_days_and_the_hours_around_them() {
        assert_eq!(
            day_segments(r(10 * D + 5 * H, 14 * D + 3 * H)),
            (Some(r(11 * D, 14 * D)), vec![r(10 * D + 5 * H, 11 * D), r(14 * D, 14 * D + 3 * H)])
        );
        assert_eq!(day_segments(r(10 * D, 14 * D)), (Some(r(10 * D, 14 * D)), vec![]));
        // Less than a whole day: hours only.
        assert_eq!(day_segments(r(10 * D + H, 11 * D + 5 * H)), (None, vec![r(10 * D + H, 11 * D + 5 * H)]));
    }

    #[test]
    fn the_smallest_shape_that_holds_the_dimensions_answers() {
        let need = |dims: &'static [&'static str]| Need { levels: &[75.0], dims, finest: DAY };
        let hourly = |dims: &'static [&'static str]| Need { levels: &[75.0], dims, finest: H };
        let long = r(0, 30 * D);
        let name = |s: Source| s.name();
        assert_eq!(name(choose(SourceChoice::Auto, long, &need(&[]), D).expect("ok")), "rollup_site");
        assert_eq!(name(choose(SourceChoice::Auto, long, &need(&["url"]), D).expect("ok")), "rollup_page");
        assert_eq!(name(choose(SourceChoice::Auto, long, &need(&["url", "device"]), D).expect("ok")), "rollup_page_device");
        assert_eq!(name(choose(SourceChoice::Auto, long, &need(&["browser"]), D).expect("ok")), "rollup_client");
        assert_eq!(name(choose(SourceChoice::Auto, long, &need(&["nav"]), D).expect("ok")), "rollup_release");
        // No shape keeps a page and a country together: raw rows answer, or a clear error.
        assert_eq!(choose(SourceChoice::Auto, long, &need(&["url", "country"]), D).expect("ok"), Source::Exact);
        let err = choose(SourceChoice::Rollup, long, &need(&["url", "country"]), D).expect_err("no shape");
        assert!(err.to_string().contains("url and country"), "{err}");
        // Hours only site-wide: a page's hourly series is exact, or a clear error.
        assert_eq!(name(choose(SourceChoice::Auto, long, &hourly(&[]), D).expect("ok")), "rollup_site");
        assert_eq!(choose(SourceChoice::Auto, long, &hourly(&["url"]), D).expect("ok"), Source::Exact);
        let err = choose(SourceChoice::Rollup, long, &hourly(&["url"]), D).expect_err("days only");
        assert!(err.to_string().contains("whole days"), "{err}");
        // Short ranges and other percentiles are exact.
        assert_eq!(choose(SourceChoice::Auto, r(0, D), &need(&[]), D).expect("ok"), Source::Exact);
        assert_eq!(choose(SourceChoice::Auto, long, &Need { levels: &[90.0], dims: &[], finest: DAY }, D).expect("ok"), Source::Exact);
    }
}
