//! `GET /v1/alerts`, `/v1/alerts/history` and `/v1/alerts/rules` (read key).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::state::Phase;
use super::EventRow;
use crate::errors::QueryError;
use crate::query::params::{format_time, Params};
use crate::query::ReadAccess;
use crate::App;

fn site_param<'a>(params: &'a Params, app: &App) -> Result<Option<&'a str>, QueryError> {
    match params.get("site") {
        Some(site) if app.sites.get(site).is_none() => Err(QueryError::bad("site", format!("{site:?} is not a configured site"))),
        other => Ok(other),
    }
}

fn num(v: Option<f64>) -> Value {
    v.filter(|v| v.is_finite()).map_or(Value::Null, Value::from)
}

/// `GET /v1/alerts?site=`: pending and firing alerts with a severity summary; alerts held for
/// want of samples are listed under `insufficient_data`.
pub async fn alerts(State(app): State<Arc<App>>, _access: ReadAccess, RawQuery(query): RawQuery) -> Result<Response, QueryError> {
    let params = Params::parse(query.as_deref(), &[&SITE_PARAMS])?;
    let site = site_param(&params, &app)?;
    let tracked = app.alerts.current(&app).await.map_err(|e| QueryError::bad("site", format!("alert state unavailable: {e}")))?;
    let (mut critical, mut warning, mut info) = (0, 0, 0);
    let mut active = Vec::new();
    let mut insufficient = Vec::new();
    for t in tracked.iter().filter(|t| site.is_none_or(|s| s == t.site)) {
        let Some(rule) = app.alerts.rules.iter().find(|r| r.name == t.rule) else { continue };
        let a = &t.alert;
        if a.insufficient {
            insufficient.push(json!({"rule": t.rule, "group": t.group, "samples": a.samples, "min_samples": rule.limits.min_samples,
                                     "state": "insufficient data"}));
        }
        if a.phase == Phase::Normal {
            continue;
        }
        match (a.phase, a.severity) {
            (Phase::Pending, _) => info += 1,
            (_, Some(super::state::Severity::Critical)) => critical += 1,
            _ => warning += 1,
        }
        active.push(json!({
            "rule": t.rule, "site": t.site, "group": t.group, "metric": rule.metric, "stat": rule.stat.name(),
            "state": a.phase.as_str(),
            "severity": a.severity.map(|s| s.as_str()),
            "value": num(a.value),
            "threshold": num(a.severity.map(|s| rule.limits.threshold(s))),
            "samples": a.samples,
            "since": format_time(a.since),
            "note": if a.insufficient { Some("insufficient data") } else if a.no_data { Some("no data") } else { None },
            "last_notified": a.notified_at.map(format_time),
            "delivery_error": t.delivery_error(),
            "fingerprint": super::fingerprint(&t.rule, &t.group),
        }));
    }
    let summary = json!({"critical": critical, "warning": warning, "info": info, "total": critical + warning + info});
    Ok(Json(json!({"alerts": active, "summary": summary, "insufficient_data": insufficient})).into_response())
}

/// The parameters of `/v1/alerts` and `/v1/alerts/rules`, and of `/v1/alerts/history`.
pub const SITE_PARAMS: [&str; 1] = ["site"];
pub const HISTORY_PARAMS: [&str; 4] = ["site", "from", "to", "limit"];

/// `GET /v1/alerts/history?site=&from=&to=`: every recorded transition, newest first.
pub async fn history(State(app): State<Arc<App>>, _access: ReadAccess, RawQuery(query): RawQuery) -> Result<Response, QueryError> {
    let params = Params::parse(query.as_deref(), &[&HISTORY_PARAMS])?;
    let site = site_param(&params, &app)?;
    let range = params.range(OffsetDateTime::now_utc())?;
    let limit = params.limit()?;
    let mut sql = String::from("SELECT * FROM alert_events WHERE at >= toDateTime(?) AND at < toDateTime(?)");
    if site.is_some() {
        sql.push_str(" AND site = ?");
    }
    sql.push_str(" ORDER BY at_ms DESC LIMIT ?");
    let mut q = app.limited(app.clickhouse.query(&sql)).bind(range.from).bind(range.to);
    if let Some(site) = site {
        q = q.bind(site);
    }
    let rows = q.bind(limit).fetch_all::<EventRow>().await.map_err(QueryError::Storage)?;
    let events: Vec<Value> = rows
        .into_iter()
        .map(|e| {
            json!({
                "at": format_time(i64::from(e.at)), "rule": e.rule, "site": e.site, "group": e.grp, "state": e.phase,
                "severity": (!e.severity.is_empty()).then_some(e.severity), "notice": (!e.notice.is_empty()).then_some(e.notice),
                "value": num(Some(e.value)), "threshold": num(Some(e.threshold)), "samples": e.samples,
                "since": format_time(i64::from(e.since)),
            })
        })
        .collect();
    Ok(Json(json!({"from": format_time(range.from), "to": format_time(range.to), "events": events})).into_response())
}

/// `GET /v1/alerts/rules?site=`: the rules as checked (defaults filled in).
pub async fn rules(State(app): State<Arc<App>>, _access: ReadAccess, RawQuery(query): RawQuery) -> Result<Response, QueryError> {
    let params = Params::parse(query.as_deref(), &[&SITE_PARAMS])?;
    let site = site_param(&params, &app)?;
    let rules: Vec<Value> = app
        .alerts
        .rules
        .iter()
        .filter(|r| site.is_none_or(|s| s == r.site))
        .map(|r| {
            let l = &r.limits;
            json!({
                "name": r.name, "site": r.site, "metric": r.metric, "stat": r.stat.name(),
                "where": r.filters.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<serde_json::Map<String, Value>>(),
                "group_by": r.group_by, "max_groups": r.max_groups, "window_seconds": r.window.as_secs(),
                "for_seconds": l.pending_for, "keep_firing_for_seconds": l.keep_firing_for,
                "warning": l.warning, "critical": l.critical, "resolve": l.resolve,
                "direction": if l.above { "above" } else { "below" }, "min_samples": l.min_samples,
                "no_data": format!("{:?}", l.no_data).to_ascii_lowercase(),
                "repeat_warning_seconds": l.repeat_warning, "repeat_critical_seconds": l.repeat_critical,
                "notify": r.notify,
            })
        })
        .collect();
    Ok(Json(json!({"rules": rules, "interval_seconds": app.config.alert_interval_seconds})).into_response())
}
