//! Answers from the histograms ([`crate::storage::histogram`]): summaries over whole days by
//! any shape with dimensions from two running-total points per key, and the site-wide series
//! from one histogram per hour. Each answer runs its two parts as concurrent queries: the points
//! (or hours) and the values not final yet. `None` when the histograms do not cover the range (it
//! starts before they were added, or before the points still kept); the t-digest rollups answer
//! then.

use clickhouse::Row;
use foldhash::{HashMap, HashMapExt};
use serde::Deserialize;

use super::params::TimeRange;
use super::plan::{rollup_index, Scope};
use super::sql::Sql;
use super::{PointRow, StatsRow};
use crate::errors::QueryError;
use crate::storage::finalize::report_order;
use crate::storage::histogram::{combine, slot, Hist, HistRow, RUNNING_DAYS, RUNNING_HOUR_DAYS};
use crate::storage::retention::kept_from;
use crate::storage::schema::{Shape, ROLLUP_LEVELS};
use crate::App;

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

/// The two parts of an answer run at once, each on one thread of the server (on a small machine
/// two queries of two threads each slow each other down more than they gain).
const THREADS: &str = "1";

async fn fetch<T: clickhouse::RowOwned + clickhouse::RowRead>(app: &App, sql: Option<Sql>) -> Result<Vec<T>, QueryError> {
    match sql {
        Some(sql) => app.query(&sql).with_setting("max_threads", THREADS).fetch_all::<T>().await.map_err(QueryError::Storage),
        None => Ok(Vec::new()),
    }
}

/// One raw report of a value not final yet.
#[derive(Debug, Row, Deserialize)]
struct Report {
    report: u64,
    at: u32,
    seq: u64,
    report_n: u32,
    page_at: u64,
    value: f64,
    rating: u8,
    grp: String,
}

/// One value not final yet: its group, time bucket, value and rating.
struct RecentValue {
    grp: String,
    t: u32,
    v: f64,
    rating: u8,
}

/// The values of the not-yet-final part, if there is such a part: its raw reports, deduplicated
/// here as the finalizer does (per id the last report, at the time of the first; cheaper than
/// grouping them in ClickHouse), then binned by the caller.
async fn recent_values(app: &App, scope: &Scope<'_>, recent: Option<TimeRange>) -> Result<Vec<RecentValue>, QueryError> {
    let Some(recent) = recent else { return Ok(Vec::new()) };
    let mut sql = Sql::new();
    scope.push_recent_rows(&mut sql, recent);
    let reports = app.query(&sql).with_setting("max_threads", THREADS).fetch_all::<Report>().await.map_err(QueryError::Storage)?;
    // Per id: the first report's time, and the last report (by the page's order, then arrival).
    let mut ids: HashMap<u64, (u32, Report)> = HashMap::with_capacity(reports.len());
    for report in reports {
        match ids.entry(report.report) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((report.at, report));
            }
            std::collections::hash_map::Entry::Occupied(mut slot) => {
                let (first, last) = slot.get_mut();
                *first = (*first).min(report.at);
                let order = |r: &Report| report_order(r.report_n, r.page_at, r.at, r.seq);
                if order(&report) > order(last) {
                    *last = report;
                }
            }
        }
    }
    let (from, to) = (recent.from.clamp(0, i64::from(u32::MAX)) as u32, recent.to.clamp(0, i64::from(u32::MAX)) as u32);
    Ok(ids
        .into_values()
        .filter(|(first, _)| *first >= from && *first < to)
        .map(|(first, last)| {
            let t = scope.step.map_or(0, |step| first - first % step.clamp(1, i64::from(u32::MAX)) as u32);
            RecentValue { grp: last.grp, t, v: last.value, rating: last.rating }
        })
        .collect())
}

/// Sums the histogram rows ([`combine`], points `from` and `to`) and the recent values by group
/// and time bucket.
fn sum_up(rows: &[HistRow], from: u32, to: u32, recent: Vec<RecentValue>) -> HashMap<(String, u32), Hist> {
    let mut hists = combine(rows, from, to);
    for value in recent {
        slot(&mut hists, (value.grp, value.t)).add_value(value.v, value.rating);
    }
    hists
}

/// A summary by `shape` (one with running totals) over whole days, at `now` (epoch s).
pub async fn summary(app: &App, scope: &Scope<'_>, shape: Shape, now: i64) -> Result<Option<Vec<StatsRow>>, QueryError> {
    let (Some(since), (Some(done), recent)) = (app.finalizer.histograms_since(), scope.split()) else { return Ok(None) };
    let (a, b) = (done.from, done.to);
    // Daily points are kept `RUNNING_DAYS` (partitioned by the day before theirs), the others
    // (the watermark's) a few days.
    let (daily_from, hourly_from) = (kept_from(now, RUNNING_DAYS), kept_from(now, RUNNING_HOUR_DAYS));
    if a % DAY != 0 || a < since || a < daily_from || (b % DAY != 0 && b < hourly_from) {
        return Ok(None);
    }
    let mut points = Sql::new();
    scope.push_points(&mut points, shape, a, b);
    let (points, recent) = tokio::try_join!(fetch(app, Some(points)), recent_values(app, scope, recent))?;
    let hists = sum_up(&points, a as u32, b as u32, recent);
    Ok(Some(
        hists
            .into_iter()
            .filter(|(_, h)| h.n > 0)
            .map(|((grp, _), h)| {
                let (lo, hi) = h.extremes();
                StatsRow {
                    grp,
                    n: h.n as u64,
                    q: h.quantiles(&ROLLUP_LEVELS),
                    mean: h.total / h.n as f64,
                    lo,
                    hi,
                    good: h.good.max(0) as u64,
                    ni: h.ni.max(0) as u64,
                    poor: h.poor.max(0) as u64,
                }
            })
            .collect(),
    ))
}

/// One final hour of the site-wide series: its count and exact percentiles ([`ROLLUP_LEVELS`];
/// `parts` rows: one, unless several shards finalized the hour).
#[derive(Debug, Row, Deserialize)]
struct HourRow {
    t: u32,
    parts: u64,
    n: u64,
    q: Vec<f64>,
}

/// The site-wide series of `percentile` (in %) and how it was estimated. Hourly, for a level the
/// finalizer keeps ([`ROLLUP_LEVELS`]): exact, from each final hour's percentiles and the values
/// not final yet (the watermark is a whole hour, so no hour mixes the two). Otherwise, or for
/// hours finalized before their percentiles were kept (or by several shards), from the hourly
/// histograms.
pub async fn site_series(app: &App, scope: &Scope<'_>, percentile: f64) -> Result<Option<(Vec<PointRow>, &'static str)>, QueryError> {
    let Some(since) = app.finalizer.histograms_since() else { return Ok(None) };
    let (done, recent) = scope.split();
    if done.is_some_and(|d| d.from < since) {
        return Ok(None);
    }
    let histograms = |done: TimeRange| {
        let mut sql = Sql::new();
        scope.push_site_hours(&mut sql, done);
        sql
    };
    // `rollup_index` counts from 1, as ClickHouse arrays do.
    if let (Some(HOUR), Some(i)) = (scope.step, rollup_index(percentile)) {
        let hours = done.map(|done| {
            let mut sql = Sql::new();
            scope.push_site_hour_percentiles(&mut sql, done);
            sql
        });
        let (hours, values) = tokio::try_join!(fetch::<HourRow>(app, hours), recent_values(app, scope, recent))?;
        if hours.iter().all(|h| h.parts == 1 && h.q.len() == ROLLUP_LEVELS.len()) {
            return Ok(Some((exact_points(hours, i - 1, values), "exact")));
        }
        let hours = fetch::<HistRow>(app, done.map(histograms)).await?;
        return Ok(Some((histogram_points(&hours, values, percentile), "histogram")));
    }
    let (hours, values) = tokio::try_join!(fetch::<HistRow>(app, done.map(histograms)), recent_values(app, scope, recent))?;
    Ok(Some((histogram_points(&hours, values, percentile), "histogram")))
}

/// Hourly points from final hours' percentile `i` and the exact percentile of the values not
/// final yet, per hour (the value at rank ⌊level·n⌋, as `quantileExact` takes it).
fn exact_points(hours: Vec<HourRow>, i: usize, values: Vec<RecentValue>) -> Vec<PointRow> {
    let level = ROLLUP_LEVELS[i];
    let mut points: Vec<PointRow> = hours.into_iter().filter_map(|h| Some(PointRow { t: h.t, n: h.n, v: *h.q.get(i)? })).collect();
    let mut by_hour: HashMap<u32, Vec<f64>> = HashMap::new();
    for value in values {
        by_hour.entry(value.t).or_default().push(value.v);
    }
    for (t, mut values) in by_hour {
        let n = values.len();
        let (_, v, _) = values.select_nth_unstable_by(((level * n as f64) as usize).min(n - 1), f64::total_cmp);
        points.push(PointRow { t, n: n as u64, v: *v });
    }
    points.sort_by_key(|p| p.t);
    points
}

/// Points from histogram rows (hours, or hours summed into longer buckets) and recent values.
fn histogram_points(hours: &[HistRow], values: Vec<RecentValue>, percentile: f64) -> Vec<PointRow> {
    let mut points: Vec<PointRow> = sum_up(hours, 0, 0, values)
        .into_iter()
        .filter(|(_, h)| h.n > 0)
        .map(|((_, t), h)| PointRow { t, n: h.n as u64, v: h.quantile(percentile / 100.0) })
        .collect();
    points.sort_by_key(|p| p.t);
    points
}
