//! Answers from the histograms ([`crate::storage::histogram`]): summaries over whole days by
//! any shape with dimensions from two running-total points per key, and the site-wide series
//! from one histogram per hour. Each answer runs its parts as concurrent queries: the points (or
//! hours), the values not final yet, and (for summaries) the exact minimum and maximum of the
//! final part from the t-digest rollups. `None` when the histograms do not cover the range (it
//! starts before they were added, or before the points still kept); the t-digest rollups answer
//! then.

use clickhouse::Row;
use serde::Deserialize;

use super::params::TimeRange;
use super::plan::Scope;
use super::sql::Sql;
use super::{PointRow, StatsRow};
use crate::errors::QueryError;
use crate::storage::histogram::{combine, HistRow, RUNNING_DAYS, RUNNING_HOUR_DAYS};
use crate::storage::schema::{Shape, ROLLUP_LEVELS};
use crate::App;

const DAY: i64 = 86_400;

#[derive(Debug, Row, Deserialize)]
struct Extremes {
    grp: String,
    lo: f64,
    hi: f64,
}

async fn fetch(app: &App, sql: Option<Sql>) -> Result<Vec<HistRow>, QueryError> {
    match sql {
        Some(sql) => app.query(&sql).fetch_all::<HistRow>().await.map_err(QueryError::Storage),
        None => Ok(Vec::new()),
    }
}

/// The not-yet-final part's histograms, if there is such a part.
fn recent_sql(scope: &Scope, recent: Option<TimeRange>) -> Option<Sql> {
    recent.map(|recent| {
        let mut sql = Sql::new();
        scope.push_recent_histograms(&mut sql, recent);
        sql
    })
}

/// A summary by `shape` (one with running totals) over whole days, at `now` (epoch s).
pub async fn summary(app: &App, scope: &Scope<'_>, shape: Shape, now: i64) -> Result<Option<Vec<StatsRow>>, QueryError> {
    let (Some(since), (Some(done), recent)) = (app.finalizer.histograms_since(), scope.parts()) else { return Ok(None) };
    let (a, b) = (done.from, done.to);
    // Daily points are kept `RUNNING_DAYS` (partitioned by the day before theirs), the others
    // (the watermark's) a few days.
    let daily_from = (now.div_euclid(DAY) - i64::from(RUNNING_DAYS) + 1) * DAY;
    let hourly_from = (now.div_euclid(DAY) - i64::from(RUNNING_HOUR_DAYS) + 1) * DAY;
    if a % DAY != 0 || a < since || a < daily_from || (b % DAY != 0 && b < hourly_from) {
        return Ok(None);
    }
    let mut points = Sql::new();
    scope.push_points(&mut points, shape, a, b);
    // The exact minimum and maximum of the final part, from the t-digest rollups' small states.
    let final_part = Scope { range: done, final_until: Some(b), ..scope.clone() };
    let mut extremes = Sql::new();
    extremes.push("SELECT grp, minMerge(min_state) AS lo, maxMerge(max_state) AS hi FROM ", []);
    final_part.push_states(&mut extremes, shape);
    extremes.push(" GROUP BY grp", []);
    let extremes = app.query(&extremes);
    let (points, recent, extremes) =
        tokio::try_join!(fetch(app, Some(points)), fetch(app, recent_sql(scope, recent)), async {
            extremes.fetch_all::<Extremes>().await.map_err(QueryError::Storage)
        })?;
    let rows: Vec<HistRow> = points.into_iter().chain(recent).collect();
    let mut hists = combine(&rows, a as u32, b as u32);
    for e in extremes {
        if let Some(hist) = hists.get_mut(&(e.grp, 0)) {
            hist.widen(e.lo, e.hi);
        }
    }
    Ok(Some(
        hists
            .into_iter()
            .filter(|(_, h)| h.n > 0)
            .map(|((grp, _), h)| StatsRow {
                grp,
                n: h.n as u64,
                q: ROLLUP_LEVELS.iter().map(|l| h.quantile(*l)).collect(),
                mean: h.total / h.n as f64,
                lo: h.lo,
                hi: h.hi,
                good: h.good.max(0) as u64,
                ni: h.ni.max(0) as u64,
                poor: h.poor.max(0) as u64,
            })
            .collect(),
    ))
}

/// The site-wide series of `percentile` (in %) from the hourly histograms.
pub async fn site_series(app: &App, scope: &Scope<'_>, percentile: f64) -> Result<Option<Vec<PointRow>>, QueryError> {
    let Some(since) = app.finalizer.histograms_since() else { return Ok(None) };
    let (done, recent) = scope.parts();
    if done.is_some_and(|d| d.from < since) {
        return Ok(None);
    }
    let hours = done.map(|done| {
        let mut sql = Sql::new();
        scope.push_site_hours(&mut sql, done);
        sql
    });
    let (hours, recent) = tokio::try_join!(fetch(app, hours), fetch(app, recent_sql(scope, recent)))?;
    let rows: Vec<HistRow> = hours.into_iter().chain(recent).collect();
    let mut points: Vec<PointRow> = combine(&rows, 0, 0)
        .into_iter()
        .filter(|(_, h)| h.n > 0)
        .map(|((_, t), h)| PointRow { t, n: h.n as u64, v: h.quantile(percentile / 100.0) })
        .collect();
    points.sort_by_key(|p| p.t);
    Ok(Some(points))
}
