//! The `pulse` command: performance budgets checked against real-user data in CI, releases
//! declared from CI (`pulse release new`), and the query API from a terminal. A thin client: every number comes from the collector's read API.
//!
//! # The path of `pulse budget check`
//! 1. [`Budgets::parse`] reads the TOML file and checks every budget (errors name the budget
//!    and the field).
//! 2. For each budget, [`Client`] asks `/v1/vitals` (or `/v1/api-calls` for `metric = "api"`)
//!    for the statistic over the window ending now, with the budget's filters.
//! 3. [`verdict`] compares it with `max` (too few samples: "insufficient data", a failure only with
//!    `--strict`), and [`render`] prints the results as a table, JSON, JUnit XML or Markdown.
//!    The exit code: 0 all hold, 1 any blown, 2 errors.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use pulse_protocol::metric::MetricName;
use pulse_protocol::Vital;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The budget file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    pub site: String,
    /// How far back from now the data is read, e.g. `7d` (default), `24h`.
    #[serde(default)]
    pub window: Option<String>,
    #[serde(default)]
    pub budgets: Vec<Budget>,
}

/// One budget.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// A label; default `<metric> <stat> <filters>`.
    #[serde(default)]
    pub name: Option<String>,
    /// A vital, a custom metric, or `api`.
    pub metric: String,
    /// `p50 p75 p90 p95 p99 avg`, and `error_rate` for `api`; default `p75`.
    #[serde(default)]
    pub stat: Option<String>,
    pub max: f64,
    #[serde(default, rename = "where")]
    pub filters: BTreeMap<String, String>,
    /// Fewer samples than this: "insufficient data" (default ⌈10/(1−p)⌉ for percentiles, 10 else).
    #[serde(default)]
    pub min_samples: Option<u64>,
}

/// Why a budget file or a check could not be used (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

const STATS: [&str; 7] = ["p50", "p75", "p90", "p95", "p99", "avg", "error_rate"];
const PAGE_FILTERS: [&str; 7] = ["url", "device", "browser", "os", "country", "release", "nav"];
const API_FILTERS: [&str; 3] = ["route", "method", "status"];

impl Budget {
    pub fn stat(&self) -> &str {
        self.stat.as_deref().unwrap_or("p75")
    }

    pub fn label(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let mut label = format!("{} {}", self.metric, self.stat());
        for (k, v) in &self.filters {
            let _ = write!(label, " {k}={v}");
        }
        label
    }

    pub fn min_samples(&self) -> u64 {
        self.min_samples.unwrap_or_else(|| match self.stat().strip_prefix('p').and_then(|p| p.parse::<f64>().ok()) {
            Some(p) => pulse_protocol::metric::percentile_min_samples(p),
            None => 10,
        })
    }
}

/// `30m`, `24h`, `7d` in seconds.
pub fn parse_window(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3_600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .filter(|s| *s > 0)
}

impl Budgets {
    /// Parses and checks a budget file; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Budgets, Error> {
        let budgets: Budgets = toml::from_str(text).map_err(|e| Error(format!("{source}: {e}")))?;
        let bad = |i: usize, b: &Budget, field: &str, why: String| Error(format!("{source}: budgets[{i}] ({}).{field}: {why}", b.label()));
        if budgets.site.is_empty() {
            return Err(Error(format!("{source}: site: must not be empty")));
        }
        if let Some(w) = &budgets.window {
            if parse_window(w).is_none() {
                return Err(Error(format!("{source}: window: {w:?} is not a duration like 30m, 24h or 7d")));
            }
        }
        if budgets.budgets.is_empty() {
            return Err(Error(format!("{source}: budgets: the file has no [[budgets]]")));
        }
        for (i, b) in budgets.budgets.iter().enumerate() {
            // The wire's own names: what the collector would refuse fails here, naming the budget.
            let api = match MetricName::parse(&b.metric) {
                Some(MetricName::Api) => true,
                Some(MetricName::Vital(_)) => false,
                // `lcp` is a valid custom name, but one that never has data: surely LCP was meant.
                Some(MetricName::Custom(name)) => match Vital::ALL.into_iter().find(|v| v.name().eq_ignore_ascii_case(name)) {
                    Some(vital) => {
                        return Err(bad(i, b, "metric", format!("{name:?} is not a vital (names are upper case: {:?})", vital.name())));
                    }
                    None => false,
                },
                None => {
                    return Err(bad(
                        i,
                        b,
                        "metric",
                        format!(
                            "{:?} is neither FCP, LCP, CLS, FID, INP, TTFB, api nor a custom metric name ([a-z][a-z0-9_.:-]{{0,63}})",
                            b.metric
                        ),
                    ));
                }
            };
            if !STATS.contains(&b.stat()) || (b.stat() == "error_rate" && !api) {
                return Err(bad(i, b, "stat", format!("{:?} is not one of p50 p75 p90 p95 p99 avg (error_rate for api)", b.stat())));
            }
            if !b.max.is_finite() {
                return Err(bad(i, b, "max", "must be a finite number".into()));
            }
            for key in b.filters.keys() {
                let allowed = PAGE_FILTERS.contains(&key.as_str()) || (api && API_FILTERS.contains(&key.as_str()));
                if !allowed {
                    return Err(bad(
                        i,
                        b,
                        "where",
                        format!("{key:?} is not a filter (url device browser os country release nav; route method status for api)"),
                    ));
                }
            }
        }
        Ok(budgets)
    }
}

/// What a budget check found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Outcome {
    pub name: String,
    pub metric: String,
    pub stat: String,
    #[serde(rename = "where")]
    pub filters: BTreeMap<String, String>,
    pub value: Option<f64>,
    pub max: f64,
    /// `max − value` (negative: blown by that much).
    pub margin: Option<f64>,
    pub samples: u64,
    pub min_samples: u64,
    /// `pass`, `fail` or `insufficient_data`.
    pub verdict: &'static str,
}

/// Compares a measured value with the budget.
pub fn verdict(budget: &Budget, value: Option<f64>, samples: u64) -> Outcome {
    let min_samples = budget.min_samples();
    let verdict = match value {
        _ if samples < min_samples => "insufficient_data",
        Some(v) if v <= budget.max => "pass",
        Some(_) => "fail",
        None => "insufficient_data",
    };
    Outcome {
        name: budget.label(),
        metric: budget.metric.clone(),
        stat: budget.stat().to_owned(),
        filters: budget.filters.clone(),
        value,
        max: budget.max,
        margin: value.map(|v| budget.max - v),
        samples,
        min_samples,
        verdict,
    }
}

/// The exit code of a set of outcomes: 1 when any budget is blown (or, with `strict`, lacks data).
pub fn exit_code(outcomes: &[Outcome], strict: bool) -> i32 {
    let failed = outcomes.iter().any(|o| o.verdict == "fail" || (strict && o.verdict == "insufficient_data"));
    i32::from(failed)
}

/// The collector's read API over HTTP(S).
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: String,
    key: String,
    http: hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Client {
    pub fn new(endpoint: &str, key: &str) -> Result<Client, Error> {
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(Error(format!("--endpoint: {endpoint:?} must start with http:// or https://")));
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Ok(Client { endpoint: endpoint.trim_end_matches('/').to_owned(), key: key.to_owned(), http })
    }

    /// GETs `path` with `query`; the JSON answer, or an error with the collector's message.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, Error> {
        let mut url = format!("{}{path}?", self.endpoint);
        for (i, (k, v)) in query.iter().enumerate() {
            if i > 0 {
                url.push('&');
            }
            url.push_str(k);
            url.push('=');
            url.push_str(&encode(v));
        }
        let request = hyper::Request::get(&url)
            .header("authorization", format!("Bearer {}", self.key))
            .header("user-agent", "pulse-cli")
            .body(Full::new(Bytes::new()))
            .map_err(|e| Error(format!("{url}: {e}")))?;
        self.send(path, request).await.map(|(_, value)| value)
    }

    /// POSTs `body` as JSON to `path`; the status and the JSON answer, or an error with the
    /// collector's message.
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), Error> {
        let url = format!("{}{path}", self.endpoint);
        let request = hyper::Request::post(&url)
            .header("authorization", format!("Bearer {}", self.key))
            .header("content-type", "application/json")
            .header("user-agent", "pulse-cli")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| Error(format!("{url}: {e}")))?;
        self.send(path, request).await
    }

    async fn send(&self, path: &str, request: hyper::Request<Full<Bytes>>) -> Result<(u16, Value), Error> {
        let response = tokio::time::timeout(Duration::from_secs(30), self.http.request(request))
            .await
            .map_err(|_| Error(format!("{}: no answer within 30 s", self.endpoint)))?
            .map_err(|e| Error(format!("cannot reach the collector at {}: {e}", self.endpoint)))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| Error(format!("{path}: {e}")))?.to_bytes();
        let parsed = serde_json::from_slice::<Value>(&body);
        if !status.is_success() {
            let value = parsed.unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&body)}));
            let field = value["field"].as_str().map(|f| format!(" (field {f})")).unwrap_or_default();
            return Err(Error(format!("{path}: the collector answered {status}: {}{field}", value["error"].as_str().unwrap_or(""))));
        }
        // A proxy's or login page's HTML is not "no data": the check did not happen.
        let value = parsed.map_err(|e| {
            let start: String = String::from_utf8_lossy(&body).chars().take(80).collect();
            Error(format!("{path}: the collector answered {status} with a body that is not JSON ({e}): {start:?}"))
        })?;
        Ok((status.as_u16(), value))
    }

    /// Measures one budget over the last `window` seconds.
    pub async fn measure(&self, site: &str, budget: &Budget, window: u64) -> Result<Outcome, Error> {
        let to = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        let from = to - window as i64 * 1000;
        let mut query = vec![("site", site.to_owned()), ("from", from.to_string()), ("to", to.to_string())];
        let stat = budget.stat();
        let percentile = stat.strip_prefix('p').map(str::to_owned);
        if let Some(p) = &percentile {
            query.push(("percentiles", p.clone()));
        }
        let api = budget.metric == "api";
        if !api {
            query.push(("metric", budget.metric.clone()));
        }
        // One row over every call (or page view) the filters match: a budget on a route holds
        // for all of its methods, not only the busiest one.
        query.push(("group_by", "none".into()));
        for (k, v) in &budget.filters {
            query.push((k.as_str(), v.clone()));
        }
        let path = if api { "/v1/api-calls" } else { "/v1/vitals" };
        let answer = self.get(path, &query).await?;
        let rows = match answer["rows"].as_array() {
            Some(rows) if rows.len() <= 1 => rows.clone(),
            Some(rows) => return Err(Error(format!("{path}: the answer has {} rows for group_by=none, expected at most one", rows.len()))),
            None => return Err(Error(format!("{path}: the answer has no \"rows\" array"))),
        };
        let column = match &percentile {
            Some(p) => format!("p{p}"),
            None => stat.to_owned(),
        };
        // `group_by=none`: one row, or none without data.
        let samples = rows.first().map_or(0, |r| r["count"].as_u64().unwrap_or(0));
        let value = rows.first().and_then(|r| r[&column].as_f64());
        Ok(verdict(budget, value, samples))
    }
}

fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/:".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn number(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) => {
            let s = format!("{v:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
    }
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The results in one of `table`, `json`, `junit`, `markdown`.
pub fn render(site: &str, outcomes: &[Outcome], format: &str, strict: bool) -> String {
    let failed = outcomes.iter().filter(|o| o.verdict == "fail").count();
    let short = outcomes.iter().filter(|o| o.verdict == "insufficient_data").count();
    match format {
        "json" => {
            let doc = json!({"site": site, "passed": exit_code(outcomes, strict) == 0, "failed": failed, "insufficient_data": short, "results": outcomes});
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        }
        "junit" => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
            let failures = failed + if strict { short } else { 0 };
            let skipped = if strict { 0 } else { short };
            let _ = writeln!(
                out,
                "<testsuites><testsuite name=\"pulse budgets ({})\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
                xml(site),
                outcomes.len()
            );
            for o in outcomes {
                let _ = write!(out, "  <testcase classname=\"pulse.budget.{}\" name=\"{}\">", xml(site), xml(&o.name));
                let detail = format!("{} is {} (max {}, {} samples)", o.name, number(o.value), number(Some(o.max)), o.samples);
                match o.verdict {
                    "fail" => {
                        let _ = write!(out, "<failure message=\"{}\">{}</failure>", xml(&format!("budget blown: {detail}")), xml(&detail));
                    }
                    "insufficient_data" if strict => {
                        let _ = write!(out, "<failure message=\"{}\"/>", xml(&format!("insufficient data: {detail}")));
                    }
                    "insufficient_data" => {
                        let _ = write!(out, "<skipped message=\"{}\"/>", xml(&format!("insufficient data: {detail}")));
                    }
                    _ => {}
                }
                out.push_str("</testcase>\n");
            }
            out.push_str("</testsuite></testsuites>\n");
            out
        }
        "markdown" => {
            let mut out = format!(
                "### Performance budgets — {site}\n\n| | Budget | Value | Max | Margin | Samples |\n|---|---|---:|---:|---:|---:|\n"
            );
            for o in outcomes {
                let icon = match o.verdict {
                    "pass" => "✅",
                    "fail" => "❌",
                    _ => "⚠️",
                };
                let _ = writeln!(
                    out,
                    "| {icon} | {} | {} | {} | {} | {} |",
                    o.name,
                    number(o.value),
                    number(Some(o.max)),
                    number(o.margin),
                    o.samples
                );
            }
            let _ = write!(out, "\n{} of {} budgets hold", outcomes.len() - failed - short, outcomes.len());
            if short > 0 {
                let _ = write!(out, "; {short} without enough data");
            }
            out.push('\n');
            out
        }
        _ => {
            let width = outcomes.iter().map(|o| o.name.chars().count()).max().unwrap_or(6).max(6);
            let mut out = format!("{:<width$}  {:>10}  {:>10}  {:>10}  {:>8}  verdict\n", "budget", "value", "max", "margin", "samples");
            for o in outcomes {
                let verdict = if o.verdict == "insufficient_data" { "insufficient data" } else { o.verdict };
                let _ = writeln!(
                    out,
                    "{:<width$}  {:>10}  {:>10}  {:>10}  {:>8}  {verdict}",
                    o.name,
                    number(o.value),
                    number(Some(o.max)),
                    number(o.margin),
                    o.samples
                );
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "site = \"shop\"\n[[budgets]]\nmetric = \"LCP\"\nmax = 2500\nwhere = { url = \"/checkout\" }\n";

    #[test]
    fn budgets_parse_with_defaults() {
        let b = Budgets::parse(FILE, "b.toml").expect("valid");
        assert_eq!(b.budgets[0].stat(), "p75");
        assert_eq!(b.budgets[0].min_samples(), 40);
        let p90 = Budgets::parse(&FILE.replace("max = 2500", "max = 2500\nstat = \"p90\""), "b.toml").expect("valid");
        assert_eq!(p90.budgets[0].min_samples(), 100, "not 101 from 1 − 0.9 in floating point");
        assert_eq!(b.budgets[0].label(), "LCP p75 url=/checkout");
    }

    #[test]
    fn bad_files_name_the_budget_and_field() {
        let err = Budgets::parse(&FILE.replace("max = 2500", "max = 2500\nstat = \"p42\""), "b.toml").expect_err("bad stat");
        assert_eq!(
            err.0,
            "b.toml: budgets[0] (LCP p42 url=/checkout).stat: \"p42\" is not one of p50 p75 p90 p95 p99 avg (error_rate for api)"
        );
        let err = Budgets::parse(&FILE.replace("url =", "page ="), "b.toml").expect_err("bad filter");
        assert!(err.0.contains(".where: \"page\""), "{err}");
        assert!(Budgets::parse("site = \"shop\"\n", "b.toml").expect_err("empty").0.contains("no [[budgets]]"));
        assert!(Budgets::parse(&FILE.replace("max = 2500", "max = \"fast\""), "b.toml").expect_err("type").0.starts_with("b.toml: "));
    }

    #[test]
    fn metric_names_are_the_wire_names() {
        // `lcp` is a valid custom name that never has data: refused, pointing at the vital.
        let err = Budgets::parse(&FILE.replace("\"LCP\"", "\"lcp\""), "b.toml").expect_err("lower-case vital");
        assert_eq!(err.0, "b.toml: budgets[0] (lcp p75 url=/checkout).metric: \"lcp\" is not a vital (names are upper case: \"LCP\")");
        let err = Budgets::parse(&FILE.replace("\"LCP\"", "\"Cart.Total\""), "b.toml").expect_err("not a wire name");
        assert!(err.0.contains(".metric: \"Cart.Total\" is neither"), "{err}");
        assert!(Budgets::parse(&FILE.replace("\"LCP\"", "\"cart.total\""), "b.toml").is_ok());
        assert!(Budgets::parse(&FILE.replace("\"LCP\"", "\"api\"").replace("url =", "route ="), "b.toml").is_ok());
    }

    #[test]
    fn verdicts_and_exit_codes() {
        let b = Budgets::parse(FILE, "b.toml").expect("valid").budgets.remove(0);
        let pass = verdict(&b, Some(2400.0), 100);
        let fail = verdict(&b, Some(2600.0), 100);
        let short = verdict(&b, Some(9000.0), 8);
        assert_eq!((pass.verdict, fail.verdict, short.verdict), ("pass", "fail", "insufficient_data"));
        assert_eq!(fail.margin, Some(-100.0));
        assert_eq!(exit_code(&[pass.clone(), short.clone()], false), 0);
        assert_eq!(exit_code(&[pass.clone(), short.clone()], true), 1);
        assert_eq!(exit_code(&[pass.clone(), fail.clone()], false), 1);
        let junit = render("shop", &[pass, fail, short], "junit", false);
        assert!(junit.contains("tests=\"3\" failures=\"1\" skipped=\"1\""), "{junit}");
    }
}
