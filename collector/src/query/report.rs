//! `GET /v1/report?site=&period=day|week`: what a team reads on Monday morning — the Core Web
//! Vitals at p75 with their ratings and distributions, the change against the previous period
//! with the comparison's verdicts and the top culprit of LCP, INP and CLS (from the attribution),
//! the most regressed pages, API routes by error rate and p95, and the alerts of the period. A printable HTML page (default) or JSON (`format=json`).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use clickhouse::Row;
use pulse_protocol::Vital;
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::compare::compare_periods;
use super::params::{format_time, Params};
use super::{api_calls_table, site, vitals_table, ReadAccess};
use crate::errors::QueryError;
use crate::App;

const VITALS: [Vital; 5] = [Vital::Lcp, Vital::Inp, Vital::Cls, Vital::Fcp, Vital::Ttfb];

#[derive(Debug, Row, Deserialize)]
struct AlertRow {
    at: u32,
    rule: String,
    grp: String,
    notice: String,
    severity: String,
    value: f64,
}

fn column(table: &super::render::Table, row: &[Value], name: &str) -> Value {
    table.columns.iter().position(|c| c == name).and_then(|i| row.get(i).cloned()).unwrap_or(Value::Null)
}

/// The top culprit of a vital in a period ([`super::attribution`]): INP's script that was most
/// often the longest in slow interactions' frames, LCP's largest part at the p75 page view, CLS's
/// element that shifts most often. `null` without attribution (other vitals, no data).
///
/// Counted on the raw rows of the period, or of its last `retention_days` when they are kept
/// for less; a culprit that cannot be counted (a read limit) is `null`, not a failed report.
async fn culprit(app: &App, vital: Vital, site: &str, (from, to): (i64, i64), now: OffsetDateTime) -> Value {
    let by = match vital {
        Vital::Inp => "script",
        Vital::Lcp => "subpart",
        Vital::Cls => "target",
        _ => return Value::Null,
    };
    let from = from.max(to - i64::from(app.config.retention_days) * 86_400);
    let query = format!("site={site}&from={}&to={}&metric={}&by={by}&limit=1", from * 1000, to * 1000, vital.name());
    match super::attribution::attribution_table(app, Some(&query), now).await {
        Ok((table, _)) => top_culprit(vital, by, &table),
        Err(err) => {
            tracing::warn!(%err, metric = vital.name(), "the report's culprit could not be counted");
            Value::Null
        }
    }
}

/// The first row of an attribution answer as a report's culprit.
fn top_culprit(vital: Vital, by: &str, table: &super::render::Table) -> Value {
    let total = table.meta.get("page_views").and_then(Value::as_u64).unwrap_or(0);
    let rows = table.rows.iter().map(|r| table.columns.iter().cloned().zip(r.iter().cloned()).collect::<serde_json::Map<_, _>>());
    let culprit = match vital {
        // The part of the p75 page view's LCP that took longest.
        Vital::Lcp => rows
            .filter(|r| r["at_p75"].is_number())
            .max_by(|a, b| a["at_p75"].as_f64().unwrap_or(0.0).total_cmp(&b["at_p75"].as_f64().unwrap_or(0.0)))
            .map(|r| json!({"by": "subpart", "name": r["subpart"], "value": r["at_p75"], "share": r["share_at_p75"]})),
        _ => rows.take(1).find(|r| r.get(table.columns[0].as_str()).is_some_and(|n| n != super::attribution::OTHER)).map(|r| {
            let views = r["page_views"].as_u64().unwrap_or(0);
            json!({"by": by, "name": r[table.columns[0].as_str()], "function": r.get("function"), "party": r.get("party"),
                   "page_views": views, "share": if total > 0 { json!(views as f64 / total as f64) } else { Value::Null }, "p75": r["p75"]})
        }),
    };
    culprit.unwrap_or(Value::Null)
}

/// The report's data.
async fn report(app: &App, site: &str, period: &str, now: OffsetDateTime) -> Result<Value, QueryError> {
    let span = if period == "week" { 7 * 86_400 } else { 86_400 };
    let to = now.unix_timestamp();
    let (from, before) = (to - span, (to - 2 * span, to - span));
    let range = |f: i64, t: i64| format!("site={site}&from={}&to={}", f * 1000, t * 1000);

    let mut vitals = Vec::new();
    let mut regressed = Vec::new();
    for vital in VITALS {
        let metric = vital.name();
        let (now_table, _) =
            vitals_table(app, Some(&format!("{}&metric={metric}&group_by=none&percentiles=75", range(from, to))), now).await?;
        let row = now_table.rows.first().cloned().unwrap_or_default();
        let (overall, pages) = compare_periods(app, site, metric, "url", before, (from, to), 20).await?;
        let p75 = column(&now_table, &row, "p75");
        let t = vital.thresholds();
        let rating = p75.as_f64().map(|v| t.rate(v).as_str());
        let culprit = culprit(app, vital, site, (from, to), now).await;
        vitals.push(json!({
            "metric": metric, "unit": vital.unit(), "p75": p75, "count": column(&now_table, &row, "count"), "culprit": culprit,
            "rating": rating, "good": column(&now_table, &row, "good"),
            "needs_improvement": column(&now_table, &row, "needs_improvement"), "poor": column(&now_table, &row, "poor"),
            "thresholds": {"good": t.good, "poor": t.poor},
            "previous_p75": overall["a"]["p75"], "change": overall["change"], "difference": overall["difference"], "ci95": overall["ci95"], "verdict": overall["verdict"],
        }));
        for page in pages.into_iter().filter(|p| p["verdict"] == "regression") {
            regressed.push(json!({"metric": metric, "url": page["group"], "before": page["a"]["p75"], "after": page["b"]["p75"],
                                  "change": page["change"], "difference": page["difference"], "ci95": page["ci95"],
                                  "count": page["b"]["count"]}));
        }
    }
    // A regression without a relative change rose from 0: the largest change there is.
    let change = |v: &Value| v["change"].as_f64().unwrap_or(f64::INFINITY);
    regressed.sort_by(|a, b| change(b).total_cmp(&change(a)));
    regressed.truncate(10);

    let (routes_table, _) = api_calls_table(app, Some(&format!("{}&group_by=route&percentiles=95&limit=50", range(from, to))), now).await?;
    let mut routes: Vec<Value> = routes_table
        .rows
        .iter()
        .map(|r| {
            json!({"route": column(&routes_table, r, "group"), "count": column(&routes_table, r, "count"),
                   "p95": column(&routes_table, r, "p95"), "error_rate": column(&routes_table, r, "error_rate")})
        })
        .collect();
    routes.sort_by(|a, b| {
        let key = |v: &Value| (v["error_rate"].as_f64().unwrap_or(0.0), v["p95"].as_f64().unwrap_or(0.0));
        key(b).0.total_cmp(&key(a).0).then(key(b).1.total_cmp(&key(a).1))
    });
    routes.truncate(10);

    let alerts = app
        .limited(app.clickhouse.query(
            "SELECT at, rule, grp, notice, severity, value FROM alert_events
             WHERE site = ? AND at >= toDateTime(?) AND at < toDateTime(?) AND notice != '' ORDER BY at_ms DESC LIMIT 100",
        ))
        .bind(site)
        .bind(from)
        .bind(to)
        .fetch_all::<AlertRow>()
        .await
        .map_err(QueryError::Storage)?;
    let alerts: Vec<Value> = alerts
        .into_iter()
        .map(|a| {
            json!({"at": format_time(i64::from(a.at)), "rule": a.rule, "group": a.grp, "notice": a.notice,
                   "severity": (!a.severity.is_empty()).then_some(a.severity), "value": a.value.is_finite().then_some(a.value)})
        })
        .collect();

    Ok(json!({
        "site": site, "period": period, "from": format_time(from), "to": format_time(to),
        "previous": {"from": format_time(before.0), "to": format_time(before.1)},
        "vitals": vitals, "regressed_pages": regressed, "api_routes": routes, "alerts": alerts,
        "method": "p75 per period; change and verdicts from /v1/compare (bootstrap over page views, min_change 0.1)",
    }))
}

/// The parameters `/v1/report` takes.
pub const PARAMS: [&str; 3] = ["site", "period", "format"];

pub async fn handler(State(app): State<Arc<App>>, _access: ReadAccess, RawQuery(query): RawQuery) -> Result<Response, QueryError> {
    let params = Params::parse(query.as_deref(), &[&PARAMS])?;
    let site = site(&params, &app)?;
    let period = params.choice("period", &["day", "week"])?;
    let format = params.choice("format", &["html", "json"])?;
    let data = report(&app, site, period, OffsetDateTime::now_utc()).await?;
    if format == "json" {
        return Ok(Json(data).into_response());
    }
    let page = super::compute(&app.compute, false, move || html(&data)).await?;
    let mut response = page.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    Ok(response)
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn value(metric: &str, v: &Value) -> String {
    match v.as_f64() {
        None => "–".into(),
        Some(v) if metric == "CLS" => format!("{v:.3}"),
        Some(v) if v < 1000.0 => format!("{v:.0} ms"),
        Some(v) => format!("{:.2} s", v / 1000.0),
    }
}

fn pct(v: &Value) -> String {
    v.as_f64().map_or_else(|| "–".into(), |f| format!("{:+.1} %", f * 100.0))
}

/// A comparison's relative change; from a baseline of 0 there is none, only a rise.
fn change_text(v: &Value) -> String {
    match (v["change"].as_f64(), v["difference"].as_f64()) {
        (None, Some(d)) if d > 0.0 => "up from 0".into(),
        _ => pct(&v["change"]),
    }
}

/// "Top culprit: …" under a vital's card, or nothing.
fn culprit_text(metric: &str, c: &Value) -> String {
    let name = esc(c["name"].as_str().unwrap_or(""));
    let text = match c["by"].as_str() {
        Some("subpart") => {
            format!("{} {} ({:.0} % of the p75 page view)", name.replace('_', " "), value(metric, &c["value"]), share(&c["share"]))
        }
        Some("script") => {
            let function = c["function"].as_str().filter(|f| !f.is_empty()).map(|f| format!(" {}()", esc(f))).unwrap_or_default();
            let party = if c["party"] == "third" { "third-party" } else { "first-party" };
            format!(
                "{party} script {}{function} in {:.0} % of page views",
                if name.is_empty() { "(inline)".into() } else { name },
                share(&c["share"])
            )
        }
        Some(_) => format!("{} in {:.0} % of page views", if name.is_empty() { "(none)".into() } else { name }, share(&c["share"])),
        None => return String::new(),
    };
    format!(r#"<br><span class="culprit">Top culprit: {text}</span>"#)
}

fn share(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0) * 100.0
}

/// The printable page.
fn html(d: &Value) -> String {
    let site = esc(d["site"].as_str().unwrap_or(""));
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Pulse report — {site}</title><style>
body {{ font: 14px/1.45 system-ui, sans-serif; color: #1b1f24; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; }}
h1 {{ font-size: 1.4rem; margin: 0; }} h2 {{ font-size: 1.05rem; margin: 1.6rem 0 .5rem; }} .muted {{ color: #5b6570; }}
.cards {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(10.5rem, 1fr)); gap: .6rem; }}
.card {{ border: 1px solid #d9dee3; border-radius: 8px; padding: .6rem; break-inside: avoid; }}
.card b {{ display: block; font-size: 1.5rem; }} .good {{ color: #0c9d58; }} .needs-improvement {{ color: #b07a00; }} .poor {{ color: #e2412e; }}
.bar {{ display: flex; height: .5rem; border-radius: 3px; overflow: hidden; background: #d9dee3; margin: .3rem 0; }}
.bar span {{ display: block; }} .bar .g {{ background: #0c9d58; }} .bar .n {{ background: #f2a900; }} .bar .p {{ background: #e2412e; }}
.verdict-regression {{ color: #e2412e; font-weight: 600; }} .verdict-improvement {{ color: #0c9d58; font-weight: 600; }}
table {{ border-collapse: collapse; width: 100%; }} th, td {{ text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #d9dee3; }}
td.num, th.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
@media print {{ body {{ margin: 0; }} .card, table {{ break-inside: avoid; }} }}
</style></head><body>
<h1>Pulse report — {site}</h1>
<p class="muted">{period}: {from} to {to} · compared with {pfrom} to {pto}</p>
<h2>Core Web Vitals at p75</h2><div class="cards" id="vitals">"#,
        period = if d["period"] == "week" { "Last 7 days" } else { "Last 24 hours" },
        from = esc(d["from"].as_str().unwrap_or("")),
        to = esc(d["to"].as_str().unwrap_or("")),
        pfrom = esc(d["previous"]["from"].as_str().unwrap_or("")),
        pto = esc(d["previous"]["to"].as_str().unwrap_or("")),
    );
    for v in d["vitals"].as_array().into_iter().flatten() {
        let metric = v["metric"].as_str().unwrap_or("");
        let verdict = v["verdict"].as_str().unwrap_or("");
        let _ = write!(
            out,
            r#"<div class="card" data-metric="{metric}"><span class="muted">{metric}</span><b class="{rating}" data-p75="{raw}">{p75}</b>
<div class="bar"><span class="g" style="width:{g:.1}%"></span><span class="n" style="width:{n:.1}%"></span><span class="p" style="width:{p:.1}%"></span></div>
<span class="muted">{count} samples · before {before}</span><br><span class="verdict-{verdict}">{change} · {verdict_text}</span>{culprit}</div>"#,
            rating = v["rating"].as_str().unwrap_or(""),
            raw = v["p75"].as_f64().map(|f| f.to_string()).unwrap_or_default(),
            p75 = value(metric, &v["p75"]),
            g = share(&v["good"]),
            n = share(&v["needs_improvement"]),
            p = share(&v["poor"]),
            count = v["count"].as_u64().unwrap_or(0),
            before = value(metric, &v["previous_p75"]),
            change = change_text(v),
            verdict_text = verdict.replace('_', " "),
            culprit = culprit_text(metric, &v["culprit"]),
        );
    }
    out.push_str("</div><h2>Most regressed pages</h2><table id=\"regressed\"><thead><tr><th>Metric</th><th>Page</th><th class=\"num\">Before</th><th class=\"num\">After</th><th class=\"num\">Change (95 % interval)</th></tr></thead><tbody>");
    let regressed = d["regressed_pages"].as_array().cloned().unwrap_or_default();
    if regressed.is_empty() {
        out.push_str("<tr><td colspan=\"5\" class=\"muted\">No page regressed significantly.</td></tr>");
    }
    for r in regressed {
        let metric = r["metric"].as_str().unwrap_or("");
        let _ = write!(
            out,
            "<tr><td>{metric}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} ({} to {})</td></tr>",
            esc(r["url"].as_str().unwrap_or("")),
            value(metric, &r["before"]),
            value(metric, &r["after"]),
            change_text(&r),
            pct(&r["ci95"][0]),
            pct(&r["ci95"][1]),
        );
    }
    out.push_str("</tbody></table><h2>API routes by error rate and p95</h2><table id=\"routes\"><thead><tr><th>Route</th><th class=\"num\">Calls</th><th class=\"num\">p95</th><th class=\"num\">Error rate</th></tr></thead><tbody>");
    let routes = d["api_routes"].as_array().cloned().unwrap_or_default();
    if routes.is_empty() {
        out.push_str("<tr><td colspan=\"4\" class=\"muted\">No API calls in this period.</td></tr>");
    }
    for r in routes {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1} %</td></tr>",
            esc(r["route"].as_str().unwrap_or("")),
            r["count"].as_u64().unwrap_or(0),
            value("api", &r["p95"]),
            share(&r["error_rate"]),
        );
    }
    out.push_str("</tbody></table><h2>Alerts</h2><table id=\"alerts\"><thead><tr><th>Time</th><th>Rule</th><th>Group</th><th>Notice</th><th>Severity</th></tr></thead><tbody>");
    let alerts = d["alerts"].as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        out.push_str("<tr><td colspan=\"5\" class=\"muted\">No alerts in this period.</td></tr>");
    }
    for a in alerts {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(a["at"].as_str().unwrap_or("")),
            esc(a["rule"].as_str().unwrap_or("")),
            esc(a["group"].as_str().unwrap_or("")),
            esc(a["notice"].as_str().unwrap_or("")),
            esc(a["severity"].as_str().unwrap_or("–")),
        );
    }
    let _ = writeln!(out, "</tbody></table><p class=\"muted\">{}</p></body></html>", esc(d["method"].as_str().unwrap_or("")));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_rise_from_zero_reads_as_one_not_as_a_dash() {
        assert_eq!(super::change_text(&json!({"change": 0.125, "difference": 0.01})), "+12.5 %");
        assert_eq!(super::change_text(&json!({"change": null, "difference": 0.3})), "up from 0");
        assert_eq!(super::change_text(&json!({"change": null, "difference": 0.0})), "–");
    }
}
