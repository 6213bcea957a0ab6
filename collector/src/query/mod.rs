//! The read API: `/v1/vitals`, `/v1/vitals/series`, `/v1/api-calls`, and `/v1/compare`
//! ([`compare`], with the statistics of [`stats`]); on a cluster with a shard away, [`partial`].
//!
//! Each handler checks the bearer key, parses and checks its parameters ([`params`]), picks the
//! source that can answer (raw rows for short ranges and exact percentiles, minute or hour rollups
//! for long ranges), runs one SQL query with every user value bound as data, and renders the rows
//! ([`render`]). Column and table names in the SQL come only from fixed lists in this module.

pub mod attribution;
pub mod compare;
mod histograms;
pub mod params;
pub mod partial;
pub mod plan;
pub mod render;
pub mod report;
pub mod request;
pub mod sql;
pub mod stats;

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use clickhouse::Row;
use pulse_protocol::Vital;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use self::params::{format_time, Params, TimeRange};
use self::plan::{rollup_index, Need, Scope, Source};
use self::render::{num, Format, Table};
use self::request::{ApiCallsQuery, SeriesQuery, VitalsQuery};
use self::sql::{Bind, Sql};
use crate::errors::QueryError;
use crate::storage::rows::API_CALL_KEY;
use crate::storage::schema::ROLLUP_LEVELS;
use crate::App;

/// Most points one series may have.
const MAX_POINTS: i64 = 10_000;
/// Rollup summaries of ranges longer than this start at a whole UTC day (the day rollup answers
/// them; hours before the first whole day would cost more than all the days).
const WHOLE_DAYS_AFTER_SECONDS: i64 = 7 * 86_400;

/// The dimensions a query groups (`group_by`, if any) and filters by.
fn dims_of(group_by: Option<&'static str>, filters: &[(&'static str, String)]) -> Vec<&'static str> {
    let mut dims: Vec<&'static str> = filters.iter().map(|(column, _)| *column).collect();
    if let Some(group) = group_by.filter(|g| !dims.contains(g)) {
        dims.push(group);
    }
    dims
}

/// What the presented read key may read: every site, or the ones it is limited to. An extractor:
/// handlers that take it are authorized before they run.
#[derive(Debug, Clone)]
pub struct ReadAccess {
    sites: Option<Vec<String>>,
}

impl ReadAccess {
    pub fn may_read(&self, site: &str) -> bool {
        self.sites.as_ref().is_none_or(|sites| sites.iter().any(|s| s == site))
    }

    /// Refuses a query string whose `site` this key may not read (403).
    pub fn check_query(&self, raw: Option<&str>) -> Result<(), QueryError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or("")).unwrap_or_default();
        match pairs.iter().find(|(k, _)| k == "site") {
            Some((_, site)) if !self.may_read(site) => Err(QueryError::Forbidden(site.clone())),
            // A key limited to sites must name one where the endpoint would read them all.
            None if self.sites.is_some() => Err(QueryError::Forbidden(String::new())),
            _ => Ok(()),
        }
    }
}

impl axum::extract::FromRequestParts<Arc<App>> for ReadAccess {
    type Rejection = QueryError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, app: &Arc<App>) -> Result<Self, QueryError> {
        let access = authorize(app, &parts.headers)?;
        access.check_query(parts.uri.query())?;
        Ok(access)
    }
}

/// Runs CPU-heavy work of a read — a comparison's bootstrap, a report's page — on the blocking
/// pool, at most as many at once as `slots` has permits (`read_compute_concurrency`), so the
/// async workers keep serving beacons. With `wait` it queues for a slot (the alert evaluation);
/// otherwise a request that finds every slot taken is answered 503 with `Retry-After` (`Busy`).
pub(crate) async fn compute<T, F>(slots: &tokio::sync::Semaphore, wait: bool, work: F) -> Result<T, QueryError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let permit = if wait { slots.acquire().await.ok() } else { slots.try_acquire().ok() };
    let Some(_permit) = permit else { return Err(QueryError::Busy) };
    tokio::task::spawn_blocking(work).await.map_err(|err| {
        tracing::error!(%err, "a read's computation failed");
        QueryError::Busy
    })
}

/// The access of the read key in `headers`' bearer token.
pub(crate) fn authorize(app: &App, headers: &HeaderMap) -> Result<ReadAccess, QueryError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(QueryError::Unauthorized)?;
    // Compare against every key without stopping early, each in time independent of where the
    // bytes differ (`subtle`).
    let mut found: Option<&crate::config::ReadKey> = None;
    for key in &app.config.read_keys {
        let equal = key.key.as_bytes().ct_eq(token.trim().as_bytes());
        if bool::from(equal) {
            found = Some(key);
        }
    }
    found.map(|k| ReadAccess { sites: k.sites.clone() }).ok_or(QueryError::Unauthorized)
}

pub(crate) fn site<'a>(params: &'a Params, app: &App) -> Result<&'a str, QueryError> {
    let site = params.required("site")?;
    if app.sites.get(site).is_none() {
        return Err(QueryError::bad("site", format!("{site:?} is not a configured site")));
    }
    Ok(site)
}

/// Ranges up to this long are answered exactly by default.
fn raw_max_seconds(app: &App) -> i64 {
    i64::from(app.config.raw_max_hours) * 3_600
}

/// The percentile levels (in %) as the fractions ClickHouse's quantile functions take.
fn fractions(levels: &[f64]) -> impl Iterator<Item = Bind> + '_ {
    levels.iter().map(|p| Bind::from(p / 100.0))
}

fn percentile_column(p: f64) -> String {
    format!("p{}", p.to_string().replace('.', "_"))
}

fn base_meta(site: &str, range: TimeRange, source: &str) -> Map<String, Value> {
    let mut meta = Map::new();
    meta.insert("site".into(), site.into());
    meta.insert("from".into(), format_time(range.from).into());
    meta.insert("to".into(), format_time(range.to).into());
    meta.insert("source".into(), source.into());
    meta
}

/// `final_until` in an answer's metadata: values first reported before it were read final
/// (re-reports counted once), the rest deduplicated from raw rows at query time.
fn final_meta(meta: &mut Map<String, Value>, app: &App) {
    meta.insert("final_until".into(), app.finalizer.final_until().map_or(Value::Null, |t| format_time(t).into()));
}

/// One group of `/v1/vitals`.
#[derive(Debug, Row, Deserialize)]
pub(crate) struct StatsRow {
    pub grp: String,
    pub n: u64,
    pub q: Vec<f64>,
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    pub good: u64,
    pub ni: u64,
    pub poor: u64,
}

/// `GET /v1/vitals`: percentiles, count, mean, min, max and rating shares, per group.
pub async fn vitals(State(app): State<Arc<App>>, _access: ReadAccess, RawQuery(query): RawQuery) -> Result<Response, QueryError> {
    let (table, format) = vitals_table(&app, query.as_deref(), OffsetDateTime::now_utc()).await?;
    Ok(table.render(format))
}

/// The answer of `/v1/vitals` for a query string, with `now` as the default end of the range
/// (the alert evaluator reads through here with the time it is evaluating).
pub async fn vitals_table(app: &App, query: Option<&str>, now: OffsetDateTime) -> Result<(Table, Format), QueryError> {
    let VitalsQuery { site, metric, vital, group_by, percentiles, format, filters, limit, range: requested, source } =
        VitalsQuery::parse(query, now, app)?;
    let site = site.as_str();
    let dims = dims_of(group_by.column(), &filters);
    // Rollups answer long ranges in whole days; shorter ones need hours (site-wide only).
    let finest = if requested.seconds() > WHOLE_DAYS_AFTER_SECONDS { 86_400 } else { 3_600 };
    let need = Need { levels: &percentiles, dims: &dims, finest };
    let source = plan::choose(source, requested, &need, raw_max_seconds(app))?;
    let range = match source {
        Source::Exact => requested,
        Source::Rollup(shape) if !shape.all_hours() => requested.aligned(86_400),
        Source::Rollup(_) => match requested.aligned(3_600) {
            r if r.seconds() > WHOLE_DAYS_AFTER_SECONDS => TimeRange { from: r.from.div_euclid(86_400) * 86_400, ..r },
            r => r,
        },
    };
    let scope = Scope { group: group_by.column().unwrap_or("''"), ..Scope::at(app, now.unix_timestamp(), site, &metric, &filters, range) };
    let levels: Vec<f64> = if source == Source::Exact { percentiles.clone() } else { ROLLUP_LEVELS.iter().map(|l| l * 100.0).collect() };
    let from_histograms = match source {
        Source::Rollup(shape) if shape.running() => histograms::summary(app, &scope, shape, now.unix_timestamp()).await?,
        _ => None,
    };
    let estimate = match (source, &from_histograms) {
        (Source::Exact, _) => "exact",
        (_, Some(_)) => "histogram",
        (_, None) => "t-digest",
    };
    let rows = match from_histograms {
        Some(mut rows) => {
            rows.sort_by(|a, b| b.n.cmp(&a.n).then_with(|| a.grp.cmp(&b.grp)));
            if group_by.column().is_some() {
                rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            }
            rows
        }
        None => stats_rows(app, &scope, source, &levels, group_by.column().is_some().then_some(limit)).await?,
    };

    let mut columns = vec!["group".to_owned(), "count".to_owned()];
    columns.extend(percentiles.iter().map(|p| percentile_column(*p)));
    columns.extend(["avg", "min", "max", "good", "needs_improvement", "poor"].map(String::from));
    let table_rows = rows
        .into_iter()
        .filter(|r| r.n > 0)
        .map(|r| {
            let mut row: Vec<Value> = vec![r.grp.into(), r.n.into()];
            for p in &percentiles {
                let i = levels.iter().position(|l| (l - p).abs() < 1e-9).unwrap_or(0);
                row.push(num(r.q.get(i).copied().unwrap_or(f64::NAN)));
            }
            row.extend([num(r.mean), num(r.lo), num(r.hi)]);
            // Shares only mean something for metrics with thresholds.
            let share = |k: u64| if vital.is_some() { num(k as f64 / r.n as f64) } else { Value::Null };
            row.extend([share(r.good), share(r.ni), share(r.poor)]);
            row
        })
        .collect();

    let mut meta = base_meta(site, range, &source.name());
    meta.insert("estimate".into(), estimate.into());
    final_meta(&mut meta, app);
    meta.insert("metric".into(), metric.clone().into());
    meta.insert("group_by".into(), group_by.name().into());
    meta.insert("percentiles".into(), json!(percentiles));
    if let Some(vital) = vital {
        meta.insert("unit".into(), vital.unit().into());
        let t = vital.thresholds();
        meta.insert("thresholds".into(), json!({"good": t.good, "poor": t.poor}));
    }
    Ok((
        Table {
            family: "pulse_vitals",
            rows_key: "rows",
            meta,
            labels: vec![("site", site.to_owned()), ("metric", metric), ("group_by", group_by.name().to_owned())],
            label_column: Some("group"),
            columns,
            rows: table_rows,
        },
        format,
    ))
}

/// `/v1/vitals` rows by one SQL query: exact percentiles of the values, or t-digest states.
async fn stats_rows(app: &App, scope: &Scope<'_>, source: Source, levels: &[f64], limit: Option<u64>) -> Result<Vec<StatsRow>, QueryError> {
    let mut sql = Sql::new();
    match source {
        Source::Exact => {
            sql.push("SELECT grp, count() AS n, quantilesExact(", []).push_list(fractions(levels)).push(
                ")(v) AS q, avg(v) AS mean, min(v) AS lo, max(v) AS hi,
                    countIf(r = 'good') AS good, countIf(r = 'needs-improvement') AS ni, countIf(r = 'poor') AS poor FROM ",
                [],
            );
            scope.push_values(&mut sql);
        }
        Source::Rollup(shape) => {
            sql.push("SELECT grp, countMerge(count_state) AS n, arrayMap(x -> toFloat64(x), quantilesTDigestMerge(", [])
                .push_list(fractions(levels))
                .push(
                    ")(quantiles_state)) AS q, sumMerge(sum_state) / n AS mean, minMerge(min_state) AS lo, maxMerge(max_state) AS hi,
                    sumMerge(good_state) AS good, sumMerge(ni_state) AS ni, sumMerge(poor_state) AS poor FROM ",
                    [],
                );
            scope.push_states(&mut sql, shape);
        }
    }
    sql.push(" GROUP BY grp", []);
    if let Some(limit) = limit {
        sql.push(" ORDER BY n DESC, grp LIMIT ?", [limit.into()]);
    }
    app.query(&sql).fetch_all::<StatsRow>().await.map_err(QueryError::Storage)
}

#[derive(Debug, Row, Deserialize)]
pub(crate) struct PointRow {
    pub t: u32,
    pub n: u64,
    pub v: f64,
}

/// `GET /v1/vitals/series`: one percentile per time bucket.
pub async fn series(State(app): State<Arc<App>>, _access: ReadAccess, RawQuery(query): RawQuery) -> Result<Response, QueryError> {
    let now = OffsetDateTime::now_utc();
    let SeriesQuery { site, metric, vital, interval, percentile, format, filters, range: requested, source } =
        SeriesQuery::parse(query.as_deref(), now, &app)?;
    let (site, step) = (site.as_str(), interval.seconds());
    let range = requested.aligned(step);
    if range.seconds() / step > MAX_POINTS {
        return Err(QueryError::bad(
            "interval",
            format!("{} over this range gives more than {MAX_POINTS} points; use a longer interval", interval.name()),
        ));
    }
    let dims = dims_of(None, &filters);
    let need = Need { levels: &[percentile], dims: &dims, finest: step };
    let source = plan::choose(source, range, &need, raw_max_seconds(&app))?;
    let scope = Scope { step: Some(step), ..Scope::at(&app, now.unix_timestamp(), site, &metric, &filters, range) };
    let from_histograms = match (source, rollup_index(percentile)) {
        (Source::Rollup(shape), Some(_)) if shape.all_hours() => histograms::site_series(&app, &scope, percentile).await?,
        _ => None,
    };
    let (points, estimate) = match from_histograms {
        Some(answer) => answer,
        None => {
            let estimate = if matches!(source, Source::Rollup(_)) && rollup_index(percentile).is_some() { "t-digest" } else { "exact" };
            (series_points(&app, &scope, source, percentile).await?, estimate)
        }
    };

    let mut meta = base_meta(site, range, &source.name());
    meta.insert("estimate".into(), estimate.into());
    final_meta(&mut meta, &app);
    meta.insert("metric".into(), metric.clone().into());
    meta.insert("interval".into(), interval.name().into());
    meta.insert("percentile".into(), num(percentile));
    if let Some(vital) = vital.map(Vital::thresholds) {
        meta.insert("thresholds".into(), json!({"good": vital.good, "poor": vital.poor}));
    }
    Ok(Table {
        family: "pulse_vitals_series",
        rows_key: "points",
        meta,
        labels: vec![("site", site.to_owned()), ("metric", metric), ("interval", interval.name().to_owned())],
        label_column: Some("time"),
        columns: vec!["time".into(), "t".into(), "count".into(), "value".into()],
        rows: points
            .into_iter()
            .map(|p| vec![format_time(i64::from(p.t)).into(), (i64::from(p.t) * 1000).into(), p.n.into(), num(p.v)])
            .collect(),
    }
    .render(format))
}

/// `/v1/vitals/series` points by one SQL query: exact percentiles of the values, or t-digest states.
async fn series_points(app: &App, scope: &Scope<'_>, source: Source, percentile: f64) -> Result<Vec<PointRow>, QueryError> {
    let mut sql = Sql::new();
    match (source, rollup_index(percentile)) {
        (Source::Rollup(shape), Some(i)) => {
            sql.push("SELECT t, countMerge(count_state) AS n, toFloat64(quantilesTDigestMerge(", [])
                .push_list(fractions(&ROLLUP_LEVELS.map(|l| l * 100.0)))
                .push(&format!(")(quantiles_state)[{i}]) AS pv FROM "), []);
            scope.push_states(&mut sql, shape);
        }
        _ => {
            sql.push("SELECT t, count() AS n, quantileExact(?)(v) AS pv FROM ", [(percentile / 100.0).into()]);
            scope.push_values(&mut sql);
        }
    }
    sql.push(" GROUP BY t ORDER BY t", []);
    let q = app.query(&sql);
    q.fetch_all::<PointRow>().await.map_err(QueryError::Storage)
}

#[derive(Debug, Row, Deserialize)]
struct ApiRow {
    grp: String,
    n: u64,
    q: Vec<f64>,
    mean: f64,
    errors: u64,
}

/// `GET /v1/api-calls`: duration percentiles, count, error rate and rate per second per group.
/// Always read from raw rows (there is no API-call rollup yet), each call counted once.
pub async fn api_calls(State(app): State<Arc<App>>, _access: ReadAccess, RawQuery(query): RawQuery) -> Result<Response, QueryError> {
    let (table, format) = api_calls_table(&app, query.as_deref(), OffsetDateTime::now_utc()).await?;
    Ok(table.render(format))
}

/// The answer of `/v1/api-calls` for a query string, with `now` as the default end of the range.
pub async fn api_calls_table(app: &App, query: Option<&str>, now: OffsetDateTime) -> Result<(Table, Format), QueryError> {
    let ApiCallsQuery { site, group_by, percentiles, format, limit, range, filters, status } = ApiCallsQuery::parse(query, now, app)?;
    let site = site.as_str();
    let group_sql = group_by.expression();
    // Each call once (delivery from the spool is at least once): the inner query keeps one row
    // per call, the outer one aggregates them (aliases other than column names: 18.16 refuses an
    // aggregate's alias that shadows a column).
    let mut sql = Sql::new();
    sql.push("SELECT grp, count() AS n, quantilesExact(", [])
        .push_list(fractions(&percentiles))
        .push(
            &format!(
                ")(d) AS q, avg(d) AS mean, countIf(call_ok = 0) AS errors FROM (
                 SELECT {group_sql} AS grp, any(duration) AS d, any(ok) AS call_ok
                 FROM api_calls WHERE site = ? AND event_time >= toDateTime(?) AND event_time < toDateTime(?)"
            ),
            [site.into(), range.from.into(), range.to.into()],
        )
        .push_filters(&filters);
    if let Some(status) = status {
        sql.push(" AND status = ?", [status.into()]);
    }
    sql.push(&format!(" GROUP BY grp, {API_CALL_KEY}) GROUP BY grp ORDER BY n DESC, grp LIMIT ?"), [limit.into()]);
    let q = app.query(&sql);
    let rows = q.fetch_all::<ApiRow>().await.map_err(QueryError::Storage)?;

    let seconds = range.seconds() as f64;
    let mut columns = vec!["group".to_owned(), "count".to_owned()];
    columns.extend(percentiles.iter().map(|p| percentile_column(*p)));
    columns.extend(["avg", "errors", "error_rate", "rate_per_second"].map(String::from));
    let table_rows = rows
        .into_iter()
        .map(|r| {
            let mut row: Vec<Value> = vec![r.grp.into(), r.n.into()];
            row.extend(r.q.iter().map(|v| num(*v)));
            row.extend([num(r.mean), r.errors.into(), num(r.errors as f64 / r.n as f64), num(r.n as f64 / seconds)]);
            row
        })
        .collect();
    let mut meta = base_meta(site, range, "raw");
    meta.insert("group_by".into(), group_by.name().into());
    meta.insert("percentiles".into(), json!(percentiles));
    meta.insert("unit".into(), "ms".into());
    Ok((
        Table {
            family: "pulse_api_calls",
            rows_key: "rows",
            meta,
            labels: vec![("site", site.to_owned()), ("group_by", group_by.name().to_owned())],
            label_column: Some("group"),
            columns,
            rows: table_rows,
        },
        format,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compute_takes_a_free_slot_or_answers_busy_and_the_evaluator_waits() {
        let slots = tokio::sync::Semaphore::new(1);
        assert_eq!(compute(&slots, false, || 2 + 2).await.ok(), Some(4));
        let held = slots.try_acquire().expect("a free slot");
        assert!(matches!(compute(&slots, false, || ()).await, Err(QueryError::Busy)), "every slot taken: busy");
        let waiting = compute(&slots, true, || "mine");
        let release = async {
            tokio::task::yield_now().await;
            drop(held);
        };
        let (answer, ()) = tokio::join!(waiting, release);
        assert_eq!(answer.ok(), Some("mine"), "the evaluator got the slot once it was free");
        assert_eq!(slots.available_permits(), 1, "and gave it back");
    }

    #[test]
    fn dims_are_the_group_and_the_filters() {
        assert_eq!(dims_of(None, &[("url", "/a".into())]), vec!["url"]);
        assert_eq!(dims_of(Some("device"), &[("url", "/a".into())]), vec!["url", "device"]);
        assert_eq!(dims_of(Some("url"), &[("url", "/a".into())]), vec!["url"]);
    }

    #[test]
    fn rollup_levels_map_to_percentiles() {
        assert_eq!(rollup_index(75.0), Some(2));
        assert_eq!(rollup_index(99.0), Some(4));
        assert_eq!(rollup_index(90.0), None);
        assert_eq!(percentile_column(99.9), "p99_9");
    }
}
