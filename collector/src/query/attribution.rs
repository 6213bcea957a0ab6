//! `GET /v1/attribution`: why a vital is slow, counted over page views.
//!
//! The agent sends each vital with its attribution (web-vitals' attribution build: the INP's
//! longest script and subparts, the LCP's element and subparts, the CLS's largest shift). This
//! endpoint groups the page views of a range by one of those and answers, per culprit, how many
//! page views it spoiled and how badly — exactly, from the raw rows (every page view's last
//! report, [`crate::storage::finalize::REPORT_ORDER`], as the other exact answers count it).
//!
//! Every answer is bounded: the `limit` largest groups (at most 100) and one `(other)` row for the
//! rest. Attribution strings come from pages, so the groups are as many as a client cares to
//! send; the two queries behind an answer scan the range's raw rows of one metric once each.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use clickhouse::Row;
use pulse_protocol::Vital;
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::params::{dimension_filters, Params, TimeRange, DIMENSIONS};
use super::render::{num, Format, Table};
use super::sql::{Bind, Sql};
use super::ReadAccess;
use crate::errors::QueryError;
use crate::storage::finalize::{LOOKBACK_SECONDS, REPORT_KEY, REPORT_ORDER, RE_REPORTED};
use crate::App;

/// Parameters besides the page filters ([`DIMENSIONS`]) and the culprit filters ([`By::FILTERS`]);
/// the OpenAPI document declares these.
pub const PARAMS: [&str; 7] = ["site", "metric", "by", "from", "to", "limit", "format"];

/// Most groups an answer lists (besides `(other)`).
pub const MAX_GROUPS: u64 = 100;

/// The row of the groups past the limit.
pub const OTHER: &str = "(other)";

/// What an answer groups by, per vital (`by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// INP: the longest script in the interaction's long animation frames (URL and function).
    Script,
    /// INP: input delay, processing, presentation; LCP: TTFB, load delay, load duration, render delay.
    Subpart,
    /// INP: the element interacted with; CLS: the element of the largest shift.
    Target,
    /// INP: pointer or keyboard.
    Type,
    /// LCP: the element.
    Element,
    /// LCP: the origin of the image or video (none for text).
    ResourceOrigin,
    /// Any vital: the page (to see where one culprit strikes, with a culprit filter).
    Url,
}

impl By {
    const NAMES: [(By, &'static str); 7] = [
        (By::Script, "script"),
        (By::Subpart, "subpart"),
        (By::Target, "target"),
        (By::Type, "type"),
        (By::Element, "element"),
        (By::ResourceOrigin, "resource_origin"),
        (By::Url, "url"),
    ];

    /// The culprit filters: a page view counts only if its culprit of that kind is the value
    /// given (`script` is the longest script's URL).
    pub const FILTERS: [&'static str; 5] = ["script", "target", "type", "element", "resource_origin"];

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(b, _)| *b == self).map_or("", |(_, n)| n)
    }

    /// What each vital can be grouped by; the first is the default.
    fn choices(vital: Vital) -> &'static [By] {
        match vital {
            Vital::Inp => &[By::Script, By::Subpart, By::Target, By::Type, By::Url],
            Vital::Lcp => &[By::Subpart, By::Element, By::ResourceOrigin, By::Url],
            _ => &[By::Target, By::Url],
        }
    }

    /// The attribution key of a grouping by one text (not for `script` and `subpart`).
    fn key(self, vital: Vital) -> &'static str {
        match (self, vital) {
            (By::Target, Vital::Cls) => "largestShiftTarget",
            (By::Target, _) => "interactionTarget",
            (By::Type, _) => "interactionType",
            (By::Element, _) => "target",
            _ => "url",
        }
    }
}

/// The subparts of each vital: attribution key and the name an answer gives it.
const INP_SUBPARTS: [(&str, &str); 3] =
    [("inputDelay", "input_delay"), ("processingDuration", "processing_duration"), ("presentationDelay", "presentation_delay")];
const LCP_SUBPARTS: [(&str, &str); 4] = [
    ("timeToFirstByte", "time_to_first_byte"),
    ("resourceLoadDelay", "resource_load_delay"),
    ("resourceLoadDuration", "resource_load_duration"),
    ("elementRenderDelay", "element_render_delay"),
];

/// `GET /v1/attribution`, checked.
#[derive(Debug)]
pub struct AttributionQuery {
    pub site: String,
    pub vital: Vital,
    pub by: By,
    pub filters: Vec<(&'static str, String)>,
    /// Culprit filters: the grouping whose value must equal the text.
    pub culprits: Vec<(By, String)>,
    pub range: TimeRange,
    pub limit: u64,
    pub format: Format,
}

impl AttributionQuery {
    pub fn parse(raw: Option<&str>, now: OffsetDateTime, app: &App) -> Result<AttributionQuery, QueryError> {
        let params = Params::parse(raw, &[&PARAMS, &DIMENSIONS, &By::FILTERS])?;
        let site = super::site(&params, app)?.to_owned();
        let metric = params.required("metric")?;
        let vital = match Vital::from_name(metric) {
            Some(v @ (Vital::Inp | Vital::Lcp | Vital::Cls)) => v,
            _ => return Err(QueryError::bad("metric", format!("{metric:?} has no attribution to count; use INP, LCP or CLS"))),
        };
        let choices = By::choices(vital);
        let by = match params.get("by") {
            None => choices[0],
            Some(name) => *choices.iter().find(|b| b.name() == name).ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|b| b.name()).collect();
                QueryError::bad("by", format!("{name:?} is not one of {} for {metric}", names.join(", ")))
            })?,
        };
        let limit = params.limit_within(MAX_GROUPS, 10)?;
        // Raw rows only: no range longer than they are kept.
        let range = params.range(now)?;
        let kept_days = i64::from(app.config.retention_days) + 1;
        if range.seconds() > kept_days * 86_400 {
            return Err(QueryError::bad(
                "from",
                format!("attribution is counted on raw rows, kept {kept_days} days (retention_days): ask for at most that"),
            ));
        }
        let mut culprits = Vec::new();
        for name in By::FILTERS {
            let Some(value) = params.get(name) else { continue };
            let kind = *choices.iter().find(|b| b.name() == name).ok_or_else(|| {
                let names: Vec<&str> = choices.iter().filter(|b| By::FILTERS.contains(&b.name())).map(|b| b.name()).collect();
                QueryError::bad(name, format!("{metric} has no {name}; its culprit filters are {}", names.join(", ")))
            })?;
            if value.len() > 1024 {
                return Err(QueryError::bad(name, "is longer than 1024 bytes"));
            }
            culprits.push((kind, value.to_owned()));
        }
        Ok(AttributionQuery {
            site,
            vital,
            by,
            culprits,
            filters: dimension_filters(&params)?,
            range,
            limit,
            format: Format::from_name(params.choice("format", &["json", "csv"])?),
        })
    }
}

/// One page view of the range: its value (last report), rating and attribution.
fn push_page_views(sql: &mut Sql, q: &AttributionQuery) {
    let name = q.vital.name();
    let TimeRange { from, to } = q.range;
    sql.push(
        &format!(
            "(SELECT argMax(value, {REPORT_ORDER}) AS v, argMax(rating, {REPORT_ORDER}) AS r,
                     argMax(attribution, {REPORT_ORDER}) AS a, min(event_time) AS first_time, any(url) AS page_url
              FROM metrics WHERE site = ? AND name = ?"
        ),
        [q.site.as_str().into(), name.into()],
    );
    if RE_REPORTED.contains(&name) {
        // The reports around the range of the page views first reported in it.
        sql.push(
            &format!(
                " AND event_time >= toDateTime(?) AND event_time < toDateTime(?)
                  AND {REPORT_KEY} IN (SELECT {REPORT_KEY} FROM metrics WHERE site = ? AND name = ?
                                       AND event_time >= toDateTime(?) AND event_time < toDateTime(?))"
            ),
            [(from - LOOKBACK_SECONDS).into(), (to + LOOKBACK_SECONDS).into(), q.site.as_str().into(), name.into(), from.into(), to.into()],
        );
    } else {
        sql.push(" AND event_time >= toDateTime(?) AND event_time < toDateTime(?)", [from.into(), to.into()]);
    }
    sql.push_filters(&q.filters);
    sql.push(
        &format!(" GROUP BY {REPORT_KEY} HAVING first_time >= toDateTime(?) AND first_time < toDateTime(?)"),
        [from.into(), to.into()],
    );
    for (by, value) in &q.culprits {
        let expression = grouping_of(*by, q.vital).keys[0].clone();
        sql.push(&format!(" AND {expression} = ?"), [value.as_str().into()]);
    }
    sql.push(")", []);
}

/// A text of the attribution (`''` when absent). `key` is from this module's fixed lists.
fn text(key: &str) -> String {
    format!("visitParamExtractString(a, '{key}')")
}

fn number(key: &str) -> String {
    format!("visitParamExtractFloat(a, '{key}')")
}

fn has(key: &str) -> String {
    format!("visitParamHas(a, '{key}')")
}

/// The grouping of an answer by texts: its key expressions, and which page views have them.
struct Grouping {
    keys: Vec<String>,
    present: String,
}

fn grouping(q: &AttributionQuery) -> Grouping {
    grouping_of(q.by, q.vital)
}

fn grouping_of(by: By, vital: Vital) -> Grouping {
    match by {
        By::Script => Grouping { keys: vec![text("longestScriptURL"), text("longestScriptFunction")], present: has("longestScriptURL") },
        By::ResourceOrigin => Grouping {
            // scheme://host:port of the element's resource; `''` for text, which has none.
            // (`\x3F` is `?`, which the SQL builder takes for a placeholder.)
            keys: vec![format!("extract({}, '^[A-Za-z][A-Za-z0-9+.-]*://[^/#\\\\x3F]*')", text("url"))],
            present: has("timeToFirstByte"),
        },
        By::Url => Grouping { keys: vec!["page_url".to_owned()], present: "1".to_owned() },
        by => Grouping { keys: vec![text(by.key(vital))], present: has(by.key(vital)) },
    }
}

#[derive(Debug, Row, Deserialize)]
struct Top {
    k1: String,
    k2: String,
}

#[derive(Debug, Row, Deserialize)]
struct Group {
    /// 0: one of the top groups; 1: `(other)`; 2: page views without this attribution.
    kind: u8,
    k1: String,
    k2: String,
    n: u64,
    p75: f64,
    extra_p75: f64,
    poor: u64,
}

#[derive(Debug, Row, Deserialize)]
struct Subparts {
    n: u64,
    p75: f64,
    parts_p75: Vec<f64>,
    parts_sum: Vec<f64>,
    value_sum: f64,
    poor: u64,
}

#[derive(Debug, Row, Deserialize)]
struct PageView {
    v: f64,
    parts: Vec<f64>,
}

/// `GET /v1/attribution`.
pub async fn handler(State(app): State<Arc<App>>, _access: ReadAccess, RawQuery(query): RawQuery) -> Result<Response, QueryError> {
    let (table, format) = attribution_table(&app, query.as_deref(), OffsetDateTime::now_utc()).await?;
    Ok(table.render(format))
}

/// The answer of `/v1/attribution` for a query string, with `now` as the default end of the
/// range (the report reads its culprits through here).
pub async fn attribution_table(app: &App, query: Option<&str>, now: OffsetDateTime) -> Result<(Table, Format), QueryError> {
    let q = AttributionQuery::parse(query, now, app)?;
    let table = match q.by {
        By::Subpart => subparts(app, &q).await?,
        _ => groups(app, &q).await?,
    };
    Ok((table, q.format))
}

fn meta(q: &AttributionQuery) -> serde_json::Map<String, Value> {
    let mut meta = super::base_meta(&q.site, q.range, "raw");
    meta.insert("metric".into(), q.vital.name().into());
    meta.insert("by".into(), q.by.name().into());
    meta.insert("unit".into(), q.vital.unit().into());
    let t = q.vital.thresholds();
    meta.insert("thresholds".into(), json!({"good": t.good, "poor": t.poor}));
    meta
}

/// The answer grouped by texts: the top groups by page views, `(other)`, and the totals.
async fn groups(app: &App, q: &AttributionQuery) -> Result<Table, QueryError> {
    let g = grouping(q);
    let k2 = g.keys.get(1).cloned().unwrap_or_else(|| "materialize('')".to_owned());
    let k1 = g.keys[0].clone();
    // The top groups by page views (ties by name, so answers are stable).
    let mut sql = Sql::new();
    sql.push(&format!("SELECT k1, k2 FROM (SELECT {k1} AS k1, {k2} AS k2 FROM "), []);
    push_page_views(&mut sql, q);
    sql.push(&format!(" WHERE {}) GROUP BY k1, k2 ORDER BY count() DESC, k1, k2 LIMIT ?", g.present), [q.limit.into()]);
    let top = app.query(&sql).fetch_all::<Top>().await.map_err(QueryError::Storage)?;

    // Every page view in one of three kinds: a top group, `(other)`, or without the attribution.
    let extra = if q.by == By::Script { number("longestScriptIntersectingDuration") } else { "toFloat64(0)".to_owned() };
    let mut sql = Sql::new();
    sql.push("SELECT kind, k1, k2, count() AS n, quantileExact(0.75)(v) AS p75, quantileExact(0.75)(x) AS extra_p75, countIf(r = 'poor') AS poor FROM (SELECT ", []);
    if top.is_empty() {
        sql.push(&format!("if({}, toUInt8(1), toUInt8(2)) AS kind, ", g.present), []);
    } else {
        sql.push(&format!("multiIf(({k1}, {k2}) IN ("), []);
        // At least two tuples: `IN (tuple(…))` alone would read as the tuple's own elements.
        let first = std::iter::once(&top[0]).filter(|_| top.len() == 1);
        for (i, t) in top.iter().chain(first).enumerate() {
            sql.push(if i == 0 { "tuple(?, ?)" } else { ", tuple(?, ?)" }, [Bind::from(t.k1.as_str()), Bind::from(t.k2.as_str())]);
        }
        sql.push(&format!(") AND {}, toUInt8(0), {}, toUInt8(1), toUInt8(2)) AS kind, ", g.present, g.present), []);
    }
    sql.push(&format!("if(kind = 0, {k1}, '') AS k1, if(kind = 0, {k2}, '') AS k2, v, r, {extra} AS x FROM "), []);
    push_page_views(&mut sql, q);
    sql.push(") GROUP BY kind, k1, k2", []);
    let mut rows = app.query(&sql).fetch_all::<Group>().await.map_err(QueryError::Storage)?;
    // Largest first, `(other)` last.
    rows.sort_by(|a, b| a.kind.cmp(&b.kind).then(b.n.cmp(&a.n)).then_with(|| (&a.k1, &a.k2).cmp(&(&b.k1, &b.k2))));

    let page_views: u64 = rows.iter().map(|r| r.n).sum();
    let poor_page_views: u64 = rows.iter().map(|r| r.poor).sum();
    let unattributed = rows.iter().filter(|r| r.kind == 2).map(|r| r.n).sum::<u64>();
    let site = app.sites.get(&q.site);
    let poor_share = |poor: u64| if poor_page_views == 0 { Value::Null } else { num(poor as f64 / poor_page_views as f64) };
    let (columns, table_rows): (Vec<&str>, Vec<Vec<Value>>) = match q.by {
        By::Script => (
            vec!["url", "function", "party", "page_views", "p75", "intersecting_p75", "poor_share"],
            rows.iter()
                .filter(|r| r.kind < 2)
                .map(|r| {
                    let (url, function, party) = if r.kind == 1 {
                        (OTHER.into(), Value::Null, Value::Null)
                    } else {
                        let party = party(&r.k1, |origin| site.is_some_and(|s| s.allows(Some(origin))));
                        (Value::from(r.k1.as_str()), Value::from(r.k2.as_str()), Value::from(party))
                    };
                    vec![url, function, party, r.n.into(), num(r.p75), num(r.extra_p75), poor_share(r.poor)]
                })
                .collect(),
        ),
        by => (
            vec![by.name(), "page_views", "p75", "poor_share"],
            rows.iter()
                .filter(|r| r.kind < 2)
                .map(|r| {
                    let name = if r.kind == 1 { OTHER } else { r.k1.as_str() };
                    vec![name.into(), r.n.into(), num(r.p75), poor_share(r.poor)]
                })
                .collect(),
        ),
    };
    let mut meta = meta(q);
    meta.insert("page_views".into(), page_views.into());
    meta.insert("poor_page_views".into(), poor_page_views.into());
    meta.insert("unattributed_page_views".into(), unattributed.into());
    Ok(Table {
        family: "pulse_attribution",
        rows_key: "rows",
        meta,
        labels: vec![("site", q.site.clone()), ("metric", q.vital.name().to_owned()), ("by", q.by.name().to_owned())],
        label_column: None,
        columns: columns.into_iter().map(str::to_owned).collect(),
        rows: table_rows,
    })
}

/// `first` when a script is the page's own — a relative URL, or an origin the site's pages are
/// served from (its configured origins) — else `third`.
fn party(url: &str, own: impl Fn(&str) -> bool) -> &'static str {
    let Some((scheme, rest)) = url.split_once("://") else { return "first" };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (scheme, host) = (scheme.to_ascii_lowercase(), rest[..host_end].to_ascii_lowercase());
    // The port a browser leaves out of an origin.
    let host = match scheme.as_str() {
        "https" => host.strip_suffix(":443").unwrap_or(&host),
        "http" => host.strip_suffix(":80").unwrap_or(&host),
        _ => &host,
    };
    if own(&format!("{scheme}://{host}")) {
        "first"
    } else {
        "third"
    }
}

/// The answer by subpart: each one's p75 and its share of the vital, and (LCP) the breakdown of
/// the page view at the p75, as CrUX and web.dev present LCP.
async fn subparts(app: &App, q: &AttributionQuery) -> Result<Table, QueryError> {
    let parts: &[(&str, &str)] = if q.vital == Vital::Inp { &INP_SUBPARTS } else { &LCP_SUBPARTS };
    let list = |f: &dyn Fn(&str) -> String| parts.iter().map(|(key, _)| f(key)).collect::<Vec<_>>().join(", ");
    let present = has(parts[0].0);
    let mut sql = Sql::new();
    sql.push(
        &format!(
            "SELECT count() AS n, quantileExact(0.75)(v) AS p75, [{}] AS parts_p75, [{}] AS parts_sum, sum(v) AS value_sum,
                    countIf(r = 'poor') AS poor FROM ",
            list(&|k| format!("quantileExact(0.75)({})", number(k))),
            list(&|k| format!("sum({})", number(k))),
        ),
        [],
    );
    push_page_views(&mut sql, q);
    sql.push(&format!(" WHERE {present}"), []);
    let totals = app.query(&sql).fetch_one::<Subparts>().await.map_err(QueryError::Storage)?;

    // LCP: the page view whose value is the p75 (the first of equal ones by its subparts).
    let at_p75 = if q.vital == Vital::Lcp && totals.n > 0 {
        let mut sql = Sql::new();
        sql.push(&format!("SELECT v, [{}] AS parts FROM ", list(&number)), []);
        push_page_views(&mut sql, q);
        sql.push(&format!(" WHERE {present} AND v = ? ORDER BY {} LIMIT 1", list(&number)), [totals.p75.into()]);
        app.query(&sql).fetch_optional::<PageView>().await.map_err(QueryError::Storage)?
    } else {
        None
    };
    let mut columns = vec!["subpart", "p75", "share"];
    if q.vital == Vital::Lcp {
        columns.extend(["at_p75", "share_at_p75"]);
    }
    let rows = parts
        .iter()
        .enumerate()
        .map(|(i, (_, name))| {
            let share = if totals.value_sum > 0.0 { num(totals.parts_sum[i] / totals.value_sum) } else { Value::Null };
            let p75 = if totals.n > 0 { num(totals.parts_p75[i]) } else { Value::Null };
            let mut row = vec![Value::from(*name), p75, share];
            if q.vital == Vital::Lcp {
                let at = at_p75.as_ref().map(|pv| (pv.parts[i], pv.v));
                row.push(at.map_or(Value::Null, |(part, _)| num(part)));
                row.push(at.map_or(Value::Null, |(part, v)| if v > 0.0 { num(part / v) } else { Value::Null }));
            }
            row
        })
        .collect();
    let mut meta = meta(q);
    meta.insert("page_views".into(), totals.n.into());
    meta.insert("poor_page_views".into(), totals.poor.into());
    meta.insert("p75".into(), if totals.n > 0 { num(totals.p75) } else { Value::Null });
    Ok(Table {
        family: "pulse_attribution",
        rows_key: "rows",
        meta,
        labels: vec![("site", q.site.clone()), ("metric", q.vital.name().to_owned()), ("by", "subpart".to_owned())],
        label_column: None,
        columns: columns.into_iter().map(str::to_owned).collect(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_is_first_party_when_relative_or_from_the_sites_origin() {
        let own = |origin: &str| origin == "https://shop.example";
        assert_eq!(party("https://shop.example/app.js", own), "first");
        assert_eq!(party("https://shop.example", own), "first");
        assert_eq!(party("/static/app.js", own), "first");
        assert_eq!(party("", own), "first");
        assert_eq!(party("https://cdn.tracker.example/t.js", own), "third");
        assert_eq!(party("https://shop.example.evil.example/x.js", own), "third");
        assert_eq!(party("https://shop.example:8443/x.js", own), "third");
        assert_eq!(party("HTTPS://Shop.Example:443/x.js", own), "first");
    }

    #[test]
    fn each_vital_has_its_groupings() {
        assert_eq!(By::choices(Vital::Inp)[0], By::Script);
        assert_eq!(By::choices(Vital::Lcp)[0], By::Subpart);
        assert_eq!(By::choices(Vital::Cls), &[By::Target, By::Url]);
        assert_eq!(By::Target.key(Vital::Cls), "largestShiftTarget");
        assert_eq!(By::Target.key(Vital::Inp), "interactionTarget");
    }
}
