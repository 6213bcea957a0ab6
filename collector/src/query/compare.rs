//! `GET /v1/compare`: did release 2.4.1 make checkout slower? Two sides — `release:X` (within
//! `from`..`to`, default the last 7 days) or `range:FROM..TO` — compared on one statistic with a
//! bootstrap confidence interval ([`super::stats`]), overall and optionally per group.
//!
//! Always answered from exact values (`source: "raw"`: final values, and raw rows deduplicated
//! for the hours not yet final; each metric id once); each side reads at most `MAX_ROWS` values
//! (the newest), and the bootstrap uses at most
//! [`super::stats::MAX_VALUES`] of them per side (an even subsample of the sorted values).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use clickhouse::Row;
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::params::{dimension_filters, format_time, metric_name, parse_time, Params, TimeRange, DIMENSIONS};
use super::plan::Scope;
use super::sql::Sql;
use super::stats::{self, Statistic, Verdict};
use super::{site, ReadAccess};
use crate::errors::QueryError;
use crate::App;

/// Parameters besides the page filters ([`DIMENSIONS`]).
pub const PARAMS: [&str; 11] = ["site", "metric", "a", "b", "from", "to", "stat", "min_change", "group_by", "limit", "min_samples"];
const MAX_ROWS: u64 = 1_000_000;
const DEFAULT_DAYS: i64 = 7;

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
struct Side {
    label: String,
    release: Option<String>,
    from: i64,
    to: i64,
}

fn side(params: &Params, name: &'static str, default_range: (i64, i64)) -> Result<Side, QueryError> {
    let text = params.required(name)?;
    if let Some(release) = text.strip_prefix("release:") {
        if release.is_empty() || release.len() > 256 {
            return Err(QueryError::bad(name, "release:<version> needs a version"));
        }
        return Ok(Side { label: text.to_owned(), release: Some(release.to_owned()), from: default_range.0, to: default_range.1 });
    }
    if let Some(range) = text.strip_prefix("range:") {
        let (from, to) = range.split_once("..").ok_or_else(|| QueryError::bad(name, "range:FROM..TO takes two times"))?;
        let (from, to) = (parse_time(name, from)?.unix_timestamp(), parse_time(name, to)?.unix_timestamp());
        if from >= to {
            return Err(QueryError::bad(name, "range:FROM..TO needs FROM before TO"));
        }
        // As long as `from`/`to` may be: a side is a range like any other.
        super::params::check_span(name, from, to)?;
        return Ok(Side { label: text.to_owned(), release: None, from, to });
    }
    Err(QueryError::bad(name, format!("{text:?} is neither release:<version> nor range:FROM..TO")))
}

#[derive(Debug, Row, Deserialize)]
struct ValueRow {
    grp: String,
    value: f64,
}

/// The values of one side, by group.
async fn values(
    app: &App,
    site: &str,
    metric: &str,
    side: &Side,
    group: &str,
    filters: &[(&'static str, String)],
) -> Result<BTreeMap<String, Vec<f64>>, QueryError> {
    let mut filters = filters.to_vec();
    if let Some(release) = &side.release {
        filters.push(("release", release.clone()));
    }
    let range = TimeRange { from: side.from, to: side.to };
    let scope = Scope {
        group: if group == "none" { "''" } else { group },
        step: Some(1),
        ..Scope::at(app, OffsetDateTime::now_utc().unix_timestamp(), site, metric, &filters, range)
    };
    let mut sql = Sql::new();
    sql.push("SELECT grp, v FROM ", []);
    scope.push_values(&mut sql);
    sql.push(" ORDER BY t DESC LIMIT ?", [MAX_ROWS.into()]);
    let rows = app.query(&sql).fetch_all::<ValueRow>().await.map_err(QueryError::Storage)?;
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for row in rows {
        out.entry(row.grp).or_default().push(row.value);
    }
    Ok(out)
}

fn summary(label: &str, values: &[f64]) -> Value {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let num = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
    json!({
        "label": label,
        "count": sorted.len(),
        // Every `stat` a comparison takes, so the one compared is always beside its change.
        "p50": num(stats::statistic(&sorted, Statistic::Percentile(50.0))),
        "p75": num(stats::statistic(&sorted, Statistic::Percentile(75.0))),
        "p90": num(stats::statistic(&sorted, Statistic::Percentile(90.0))),
        "p95": num(stats::statistic(&sorted, Statistic::Percentile(95.0))),
        "p99": num(stats::statistic(&sorted, Statistic::Percentile(99.0))),
        "avg": num(stats::statistic(&sorted, Statistic::Mean)),
    })
}

fn seed(site: &str, metric: &str, group: &str) -> u64 {
    stats::fnv1a(&[site, metric, group])
}

/// What every comparison of one request uses.
#[derive(Debug, Clone, Copy)]
struct Terms {
    stat: Statistic,
    min_change: f64,
    min_samples: u64,
}

/// One comparison as JSON (`change`, `ci95`, `verdict`, and what is missing when insufficient).
fn compared(a: &Side, av: &[f64], b: &Side, bv: &[f64], terms: Terms, seed: u64) -> Value {
    let Terms { stat, min_change, min_samples } = terms;
    let c = stats::compare(av.to_vec(), bv.to_vec(), stat, true, min_change, min_samples, seed);
    let num = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
    let mut out = json!({
        "a": summary(&a.label, av),
        "b": summary(&b.label, bv),
        // ±∞ (a rise from a zero `a`) has no JSON number: null, with `difference` telling the size.
        "change": num(c.change),
        "ci95": [num(c.ci95.0), num(c.ci95.1)],
        "difference": num(c.difference),
        "difference_ci95": [num(c.difference_ci95.0), num(c.difference_ci95.1)],
        "verdict": c.verdict.as_str(),
    });
    if c.verdict == Verdict::InsufficientData {
        out["needed"] = json!({"min_samples": min_samples, "a": av.len(), "b": bv.len()});
    }
    out
}

/// The busiest groups of side b (at most `limit`), each compared with the same group of side a.
#[allow(clippy::too_many_arguments)] // The terms of one comparison, passed whole into a blocking task.
fn grouped(
    a: &Side,
    av: &BTreeMap<String, Vec<f64>>,
    b: &Side,
    bv: &BTreeMap<String, Vec<f64>>,
    terms: Terms,
    site: &str,
    metric: &str,
    limit: usize,
) -> Vec<Value> {
    let mut groups: Vec<(&String, &Vec<f64>)> = bv.iter().collect();
    groups.sort_by(|x, y| y.1.len().cmp(&x.1.len()).then(x.0.cmp(y.0)));
    let empty = Vec::new();
    groups
        .into_iter()
        .take(limit)
        .map(|(group, values_b)| {
            let mut row = compared(a, av.get(group).unwrap_or(&empty), b, values_b, terms, seed(site, metric, group));
            row["group"] = json!(group);
            row
        })
        .collect()
}

fn all(m: &BTreeMap<String, Vec<f64>>) -> Vec<f64> {
    m.values().flatten().copied().collect()
}

/// Two periods compared on the p75 (min_change 0.1, the default min_samples), overall and, with
/// `group_by`, for the busiest groups of the later period — what the report shows.
pub(crate) async fn compare_periods(
    app: &App,
    site: &str,
    metric: &str,
    group_by: &str,
    before: (i64, i64),
    after: (i64, i64),
    limit: usize,
) -> Result<(Value, Vec<Value>), QueryError> {
    let a = Side { label: "previous period".into(), release: None, from: before.0, to: before.1 };
    let b = Side { label: "this period".into(), release: None, from: after.0, to: after.1 };
    let stat = Statistic::Percentile(75.0);
    let terms = Terms { stat, min_change: 0.1, min_samples: stats::min_samples(stat) };
    let (av, bv) = tokio::try_join!(values(app, site, metric, &a, group_by, &[]), values(app, site, metric, &b, group_by, &[]))?;
    let (site, metric, limit) = (site.to_owned(), metric.to_owned(), if group_by == "none" { 0 } else { limit });
    super::compute(&app.compute, false, move || {
        let overall = compared(&a, &all(&av), &b, &all(&bv), terms, seed(&site, &metric, ""));
        (overall, grouped(&a, &av, &b, &bv, terms, &site, &metric, limit))
    })
    .await
}

/// Release `a` against release `b` within `range`, with `filters` — what a release alert rule
/// evaluates. The JSON of one comparison (`a`, `b`, `change`, `ci95`, `verdict`).
#[allow(clippy::too_many_arguments)] // One call site, each argument a distinct term of the question.
pub(crate) async fn compare_releases(
    app: &App,
    site: &str,
    metric: &str,
    stat: Statistic,
    min_change: f64,
    min_samples: u64,
    releases: (&str, &str),
    range: (i64, i64),
    filters: &[(&'static str, String)],
) -> Result<Value, QueryError> {
    let side = |release: &str| Side { label: format!("release:{release}"), release: Some(release.to_owned()), from: range.0, to: range.1 };
    let (a, b) = (side(releases.0), side(releases.1));
    let (av, bv) = tokio::try_join!(values(app, site, metric, &a, "none", filters), values(app, site, metric, &b, "none", filters))?;
    let seed = seed(site, metric, releases.1);
    // The evaluator waits for a slot: a busy read API must not skip an evaluation.
    super::compute(&app.compute, true, move || compared(&a, &all(&av), &b, &all(&bv), Terms { stat, min_change, min_samples }, seed)).await
}

pub async fn compare(State(app): State<Arc<App>>, _access: ReadAccess, RawQuery(query): RawQuery) -> Result<Response, QueryError> {
    let params = Params::parse(query.as_deref(), &[&PARAMS, &DIMENSIONS])?;
    let site = site(&params, &app)?;
    let (metric, _) = metric_name(&params)?;
    let stat_text = params.choice("stat", &["p75", "p50", "p90", "p95", "p99", "avg"])?;
    let stat = match stat_text {
        "avg" => Statistic::Mean,
        p => Statistic::Percentile(p[1..].parse().unwrap_or(75.0)),
    };
    let min_change: f64 = match params.get("min_change") {
        None => 0.2,
        Some(v) => v
            .parse()
            .ok()
            .filter(|c: &f64| (0.0..=10.0).contains(c))
            .ok_or_else(|| QueryError::bad("min_change", format!("{v:?} is not a number from 0 to 10")))?,
    };
    let min_samples: u64 = match params.get("min_samples") {
        None => stats::min_samples(stat),
        Some(v) => {
            v.parse().ok().filter(|n| *n >= 2).ok_or_else(|| QueryError::bad("min_samples", format!("{v:?} is not a whole number ≥ 2")))?
        }
    };
    let group_by = params.choice("group_by", &["none", "url", "device", "browser", "os", "country", "nav"])?;
    let limit = params.limit()?.min(200) as usize;
    let now = OffsetDateTime::now_utc();
    let range = params.range_or(now, time::Duration::days(DEFAULT_DAYS))?;
    let default_range = (range.from, range.to);
    let (a, b) = (side(&params, "a", default_range)?, side(&params, "b", default_range)?);
    let filters = dimension_filters(&params)?;
    if filters.iter().any(|(c, _)| *c == "release") && (a.release.is_some() || b.release.is_some()) {
        return Err(QueryError::bad("release", "a release filter and release:<version> sides do not mix"));
    }
    let (av, bv) =
        tokio::try_join!(values(&app, site, &metric, &a, group_by, &filters), values(&app, site, &metric, &b, group_by, &filters))?;
    let terms = Terms { stat, min_change, min_samples };
    let (mut answer, rows) = {
        let (a, b, site, metric) = (a.clone(), b.clone(), site.to_owned(), metric.clone());
        let limit = if group_by == "none" { 0 } else { limit };
        super::compute(&app.compute, false, move || {
            let overall = compared(&a, &all(&av), &b, &all(&bv), terms, seed(&site, &metric, ""));
            (overall, grouped(&a, &av, &b, &bv, terms, &site, &metric, limit))
        })
        .await?
    };
    answer["site"] = json!(site);
    answer["metric"] = json!(metric);
    answer["stat"] = json!(stat_text);
    answer["min_change"] = json!(min_change);
    answer["min_samples"] = json!(min_samples);
    answer["source"] = json!("raw");
    answer["method"] = json!(format!(
        "bootstrap over page views: {} resamples of each side (at most {} values each), percentile interval",
        stats::RESAMPLES,
        stats::MAX_VALUES
    ));
    answer["a"]["from"] = json!(format_time(a.from));
    answer["a"]["to"] = json!(format_time(a.to));
    answer["b"]["from"] = json!(format_time(b.from));
    answer["b"]["to"] = json!(format_time(b.to));
    if group_by != "none" {
        // The busiest groups of side b, each compared on its own.
        answer["group_by"] = json!(group_by);
        answer["groups"] = json!(rows);
    }
    Ok(Json(answer).into_response())
}
