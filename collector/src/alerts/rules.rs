//! Alert rules and notifiers checked into the form the evaluation uses, from their config-file
//! form ([`AlertRuleConfig`], [`NotifierConfig`]: plain data of [`crate::config`]). A bad rule
//! stops the collector at start with the rule's name and the field at fault.

use std::collections::BTreeMap;
use std::time::Duration;

use pulse_protocol::metric::{is_custom_name, API};
use pulse_protocol::Vital;
use serde::Serialize;

use super::state::{Limits, NoData};
use crate::config::{Config, ConfigError};
use crate::errors::QueryError;
use crate::query::params::{api_filters, dimension_filters, Params};

// Plain data of the configuration; still named here, beside the rules they become.
pub use crate::config::{AlertRuleConfig, NotifierConfig};

/// The statistic a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    Percentile(f64),
    Avg,
    GoodShare,
    PoorShare,
    ErrorRate,
    Count,
}

impl Stat {
    pub fn parse(text: &str) -> Option<Stat> {
        Some(match text {
            "p50" => Stat::Percentile(50.0),
            "p75" => Stat::Percentile(75.0),
            "p90" => Stat::Percentile(90.0),
            "p95" => Stat::Percentile(95.0),
            "p99" => Stat::Percentile(99.0),
            "avg" => Stat::Avg,
            "good_share" => Stat::GoodShare,
            "poor_share" => Stat::PoorShare,
            "error_rate" => Stat::ErrorRate,
            "count" => Stat::Count,
            _ => return None,
        })
    }

    pub fn name(self) -> String {
        match self {
            Stat::Percentile(p) => format!("p{p}"),
            Stat::Avg => "avg".into(),
            Stat::GoodShare => "good_share".into(),
            Stat::PoorShare => "poor_share".into(),
            Stat::ErrorRate => "error_rate".into(),
            Stat::Count => "count".into(),
        }
    }

    /// The column of the query API's answer that holds it.
    pub fn column(self) -> String {
        match self {
            Stat::Percentile(p) => format!("p{p}"),
            Stat::Avg => "avg".into(),
            Stat::GoodShare => "good".into(),
            Stat::PoorShare => "poor".into(),
            Stat::ErrorRate => "error_rate".into(),
            Stat::Count => "count".into(),
        }
    }

    fn default_min_samples(self) -> u64 {
        match self {
            // CloudWatch's rule: a percentile needs 10/(1−p) points to mean anything.
            Stat::Percentile(p) => pulse_protocol::metric::percentile_min_samples(p),
            Stat::Count => 0,
            _ => 10,
        }
    }
}

/// A checked rule, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub site: String,
    pub metric: String,
    pub stat: Stat,
    /// `where` as written (the query API normalises it at each evaluation).
    pub filters: Vec<(String, String)>,
    /// `where` as the query API reads it (a URL as its route, a method in upper case), for the
    /// queries built here rather than through the query API (release rules).
    pub normalised: Vec<(String, String)>,
    pub group_by: Option<String>,
    pub max_groups: usize,
    pub window: Duration,
    pub limits: Limits,
    pub notify: Vec<String>,
    /// Set for `kind = "release"` rules: the comparison's `min_change` and `min_samples` per side.
    pub release: Option<(f64, u64)>,
}

/// A checked notifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifier {
    pub name: String,
    pub kind: NotifierKind,
    pub url: String,
    pub secret: Option<String>,
    pub routing_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifierKind {
    Webhook,
    Slack,
    PagerDuty,
}

impl NotifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifierKind::Webhook => "webhook",
            NotifierKind::Slack => "slack",
            NotifierKind::PagerDuty => "pagerduty",
        }
    }
}

const PAGE_FILTERS: [&str; 7] = ["url", "device", "browser", "os", "country", "release", "nav"];
const API_FILTERS: [&str; 3] = ["route", "method", "status"];
const DEFAULT_MAX_GROUPS: usize = 50;
const MAX_WINDOW: Duration = Duration::from_secs(86_400);
/// The longest `for`, `keep_firing_for`, repeat or (release) window.
const MAX_DURATION: Duration = Duration::from_secs(30 * 86_400);

/// `30s`, `15m`, `1h`, `1d`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let seconds = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3_600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

/// The configuration's notifiers and alert rules, checked (the configured rules, then each
/// site's defaults). The error names the notifier or rule and the field at fault.
pub fn compile(config: &Config) -> Result<(Vec<Rule>, Vec<Notifier>), ConfigError> {
    let invalid = |(field, why): (String, String)| ConfigError::Rule { field, why };
    let notifiers = check_notifiers(&config.notifiers).map_err(invalid)?;
    let sites: Vec<&str> = config.sites.iter().map(|s| s.key.as_str()).collect();
    let mut configs = config.alert_rules.clone();
    for site in config.sites.iter().filter(|s| s.default_alerts) {
        configs.extend(default_rules(&site.key, &notifiers));
    }
    let mut checked: Vec<Rule> = Vec::new();
    for c in &configs {
        let rule = check_rule(c, &sites, &notifiers).map_err(invalid)?;
        if checked.iter().any(|r| r.name == rule.name) {
            return Err(ConfigError::Rule { field: format!("alert_rules[{}].name", rule.name), why: "is used by two rules".into() });
        }
        checked.push(rule);
    }
    // A firing alert's latest event (its state after a restart) must outlive the wait for
    // its next reminder, which writes a newer one.
    let kept = i64::from(config.alert_events_retention_days) * 86_400;
    if let Some(rule) = checked.iter().find(|r| r.limits.repeat_warning.max(r.limits.repeat_critical) >= kept) {
        return Err(ConfigError::Invalid {
            field: "alert_events_retention_days",
            why: format!("{} days is not longer than the reminder period of rule {:?}", config.alert_events_retention_days, rule.name),
        });
    }
    Ok((checked, notifiers))
}

/// Checks the notifiers; the error names the notifier and the field.
pub fn check_notifiers(configs: &[NotifierConfig]) -> Result<Vec<Notifier>, (String, String)> {
    let mut out: Vec<Notifier> = Vec::new();
    for c in configs {
        let field = |f: &str| format!("notifiers[{}].{f}", c.name);
        if c.name.is_empty() {
            return Err(("notifiers.name".into(), "must not be empty".into()));
        }
        if out.iter().any(|n| n.name == c.name) {
            return Err((field("name"), "is used by two notifiers".into()));
        }
        let kind = match c.kind.as_str() {
            "webhook" => NotifierKind::Webhook,
            "slack" => NotifierKind::Slack,
            "pagerduty" => NotifierKind::PagerDuty,
            other => return Err((field("kind"), format!("{other:?} is not webhook, slack or pagerduty"))),
        };
        let url = match (&c.url, kind) {
            (Some(url), _) => url.clone(),
            (None, NotifierKind::PagerDuty) => "https://events.pagerduty.com/v2/enqueue".into(),
            (None, _) => return Err((field("url"), "is required".into())),
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() < 10 {
            return Err((field("url"), "must be an http:// or https:// URL".into()));
        }
        if kind == NotifierKind::PagerDuty && c.routing_key.as_deref().is_none_or(str::is_empty) {
            return Err((field("routing_key"), "is required for pagerduty (the integration key)".into()));
        }
        if c.secret.as_deref() == Some("") {
            return Err((field("secret"), "must not be empty (leave it out for unsigned webhooks)".into()));
        }
        out.push(Notifier { name: c.name.clone(), kind, url, secret: c.secret.clone(), routing_key: c.routing_key.clone() });
    }
    Ok(out)
}

/// Checks one rule against the configured sites and notifiers.
pub fn check_rule(c: &AlertRuleConfig, sites: &[&str], notifiers: &[Notifier]) -> Result<Rule, (String, String)> {
    let field = |f: &str| format!("alert_rules[{}].{f}", c.name);
    let bad = |f: &str, why: String| Err((field(f), why));
    if c.name.is_empty() {
        return Err(("alert_rules.name".into(), "must not be empty".into()));
    }
    if !sites.contains(&c.site.as_str()) {
        return bad("site", format!("{:?} is not a configured site", c.site));
    }
    let api = c.metric == API;
    let vital = Vital::from_name(&c.metric);
    if !api && vital.is_none() && !is_custom_name(&c.metric) {
        return bad("metric", format!("{:?} is not a vital (FCP LCP CLS FID INP TTFB), a custom metric name or api", c.metric));
    }
    let stat_text = c.stat.as_deref().unwrap_or("p75");
    let Some(stat) = Stat::parse(stat_text) else {
        return bad("stat", format!("{stat_text:?} is not one of p50 p75 p90 p95 p99 avg good_share poor_share error_rate count"));
    };
    match stat {
        Stat::ErrorRate if !api => return bad("stat", "error_rate applies to metric = \"api\" only".into()),
        Stat::GoodShare | Stat::PoorShare if vital.is_none() => {
            return bad("stat", format!("{stat_text} needs a vital with rating thresholds"));
        }
        _ => {}
    }
    let release = match c.kind.as_deref().unwrap_or("threshold") {
        "threshold" => false,
        "release" => true,
        other => return bad("kind", format!("{other:?} is not threshold or release")),
    };
    if release {
        if api || !matches!(stat, Stat::Percentile(_) | Stat::Avg) {
            return bad("stat", "release rules compare a percentile or avg of a vital or custom metric".into());
        }
        if c.warning.is_some() || c.critical.is_some() || c.group_by.is_some() {
            return bad("kind", "release rules take min_change, not warning, critical or group_by".into());
        }
    } else if c.min_change.is_some() {
        return bad("min_change", "applies to kind = \"release\" only".into());
    }
    let allowed: Vec<&str> = if api { PAGE_FILTERS.iter().chain(&API_FILTERS).copied().collect() } else { PAGE_FILTERS.to_vec() };
    for key in c.filters.keys() {
        if !allowed.contains(&key.as_str()) {
            return bad("where", format!("{key:?} is not a filter here (one of {})", allowed.join(" ")));
        }
    }
    // Values are checked and normalised as the query API does (a URL to its route, a method to
    // upper case), so a rule's filter matches what ingest stored and a value the query would
    // refuse stops the start, not every evaluation.
    let normalised = checked_filters(&c.filters, api).map_err(|(key, why)| (field(&format!("where.{key}")), why))?;
    let groupable: &[&str] = if api { &API_FILTERS } else { &PAGE_FILTERS };
    if let Some(g) = &c.group_by {
        if !groupable.contains(&g.as_str()) {
            return bad("group_by", format!("{g:?} is not one of {}", groupable.join(" ")));
        }
    }
    let duration = |f: &str, value: &Option<String>, default: &str| -> Result<Duration, (String, String)> {
        let text = value.as_deref().unwrap_or(default);
        parse_duration(text).ok_or_else(|| (field(f), format!("{text:?} is not a duration like 30s, 15m, 1h or 1d")))
    };
    // Every duration fits the state machine's seconds; beyond 30 days none makes sense.
    let duration = |f: &str, value: &Option<String>, default: &str| -> Result<Duration, (String, String)> {
        let d = duration(f, value, default)?;
        if d > MAX_DURATION {
            return Err((field(f), format!("must be at most {}d", MAX_DURATION.as_secs() / 86_400)));
        }
        Ok(d)
    };
    let window = duration("window", &c.window, if release { "7d" } else { "15m" })?;
    let max_window = if release { MAX_WINDOW * 30 } else { MAX_WINDOW };
    if window.is_zero() || window > max_window {
        return bad("window", format!("must be from 1s to {}d", max_window.as_secs() / 86_400));
    }
    let pending_for = duration("for", &c.pending_for, if release { "0s" } else { "5m" })?;
    let keep_firing_for = duration("keep_firing_for", &c.keep_firing_for, "0s")?;
    let repeat_warning = duration("repeat_warning", &c.repeat_warning, if release { "1d" } else { "1h" })?;
    let repeat_critical = duration("repeat_critical", &c.repeat_critical, if release { "1d" } else { "5m" })?;
    for (name, d) in [("repeat_warning", repeat_warning), ("repeat_critical", repeat_critical)] {
        if d.is_zero() {
            return bad(name, "must be longer than 0s".into());
        }
    }
    let min_change = c.min_change.unwrap_or(0.2);
    if !(0.0..=10.0).contains(&min_change) {
        return bad("min_change", "must be from 0 to 10".into());
    }
    // Shares of good experiences alert when they fall; everything else when it rises. A release
    // rule watches the relative change of a regressed release (> 0 only when it is a regression).
    let above = stat != Stat::GoodShare;
    let (warning, critical) = if release { (Some(0.0), None) } else { (c.warning, c.critical) };
    if warning.is_none() && critical.is_none() {
        return bad("warning", "a rule needs warning, critical or both".into());
    }
    for (name, t) in [("warning", warning), ("critical", critical), ("resolve", c.resolve)] {
        if t.is_some_and(|t| !t.is_finite()) {
            return bad(name, "must be a finite number".into());
        }
    }
    // Shares and error rates are fractions: `warning = 5` meant as 5 % could never fire (or, for
    // a good share, never resolve). Everything else a rule watches is at least 0.
    let fraction = matches!(stat, Stat::GoodShare | Stat::PoorShare | Stat::ErrorRate);
    for (name, t) in [("warning", warning), ("critical", critical), ("resolve", c.resolve)] {
        match t {
            Some(t) if fraction && !(0.0..=1.0).contains(&t) => {
                return bad(name, format!("{t} is not a fraction from 0 to 1 ({stat_text} is a share: 0.05 = 5 %)"));
            }
            // Custom metrics may be negative; a release rule watches a change, which may be too.
            Some(t) if t < 0.0 && !release && (vital.is_some() || api || stat == Stat::Count) => {
                return bad(name, format!("{t} is below 0, which {stat_text} of {} never is", c.metric));
            }
            _ => {}
        }
    }
    if let (Some(w), Some(cr)) = (warning, critical) {
        if (above && cr < w) || (!above && cr > w) {
            let order = if above { "at least" } else { "at most" };
            return bad(
                "critical",
                format!("{cr} must be {order} warning {w} ({stat_text} alerts when it {})", if above { "rises" } else { "falls" }),
            );
        }
    }
    // The first threshold crossed on the way from good to bad.
    let lowest = warning.or(critical).unwrap_or(0.0);
    let resolve = c.resolve.unwrap_or(lowest);
    if (above && resolve > lowest) || (!above && resolve < lowest) {
        return bad("resolve", format!("{resolve} must be on the good side of the lowest threshold {lowest}"));
    }
    let no_data = match c.no_data.as_deref().unwrap_or(if release { "ok" } else { "keep" }) {
        "keep" => NoData::Keep,
        "ok" => NoData::Ok,
        "alert" => NoData::Alert,
        other => return bad("no_data", format!("{other:?} is not keep, ok or alert")),
    };
    for name in &c.notify {
        if !notifiers.iter().any(|n| &n.name == name) {
            return bad("notify", format!("{name:?} is not a configured notifier"));
        }
    }
    let max_groups = c.max_groups.unwrap_or(DEFAULT_MAX_GROUPS);
    if max_groups == 0 || max_groups > 1_000 {
        return bad("max_groups", "must be from 1 to 1000".into());
    }
    Ok(Rule {
        name: c.name.clone(),
        site: c.site.clone(),
        metric: c.metric.clone(),
        stat,
        filters: c.filters.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        normalised,
        group_by: c.group_by.clone(),
        max_groups,
        window,
        limits: Limits {
            warning,
            critical,
            resolve,
            above,
            pending_for: pending_for.as_secs() as i64,
            keep_firing_for: keep_firing_for.as_secs() as i64,
            // Release rules: the comparison itself needs min_samples per side.
            min_samples: if release { 0 } else { c.min_samples.unwrap_or_else(|| stat.default_min_samples()) },
            no_data,
            repeat_warning: repeat_warning.as_secs() as i64,
            repeat_critical: repeat_critical.as_secs() as i64,
        },
        notify: c.notify.clone(),
        release: release.then_some((min_change, c.min_samples.unwrap_or_else(|| stat.default_min_samples()))),
    })
}

/// A rule's `where` as the query API reads it: each value checked and normalised. Errors name
/// the filter.
fn checked_filters(filters: &BTreeMap<String, String>, api: bool) -> Result<Vec<(String, String)>, (String, String)> {
    if let Some((key, _)) = filters.iter().find(|(_, v)| v.is_empty()) {
        return Err((key.clone(), "must not be empty".into()));
    }
    let text = serde_urlencoded::to_string(filters).map_err(|e| ("where".to_owned(), e.to_string()))?;
    let named = |e: QueryError| match e {
        QueryError::BadParam { param, message } => (param.to_owned(), message),
        other => ("where".to_owned(), other.to_string()),
    };
    let params = Params::parse(Some(&text), &[&PAGE_FILTERS, &API_FILTERS]).map_err(named)?;
    let (mut checked, status) = if api { api_filters(&params).map_err(named)? } else { (dimension_filters(&params).map_err(named)?, None) };
    checked.extend(status.map(|s| ("status", s.to_string())));
    Ok(checked.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// The Core Web Vitals rules of a site with `default_alerts = true`: p75 over an hour at
/// web-vitals' needs-improvement (warning) and poor (critical) thresholds, notifying every
/// notifier.
pub fn default_rules(site: &str, notifiers: &[Notifier]) -> Vec<AlertRuleConfig> {
    [Vital::Lcp, Vital::Inp, Vital::Cls, Vital::Fcp, Vital::Ttfb]
        .into_iter()
        .map(|vital| {
            let t = vital.thresholds();
            AlertRuleConfig {
                kind: None,
                min_change: None,
                name: format!("{site}-{}-p75", vital.name().to_ascii_lowercase()),
                site: site.to_owned(),
                metric: vital.name().to_owned(),
                stat: Some("p75".into()),
                filters: BTreeMap::new(),
                group_by: None,
                max_groups: None,
                window: Some("1h".into()),
                pending_for: Some("10m".into()),
                keep_firing_for: None,
                warning: Some(t.good),
                critical: Some(t.poor),
                resolve: None,
                min_samples: None,
                no_data: None,
                notify: notifiers.iter().map(|n| n.name.clone()).collect(),
                repeat_warning: None,
                repeat_critical: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> AlertRuleConfig {
        toml::from_str(toml_text).expect("rule parses")
    }

    fn base() -> String {
        "name = \"checkout-lcp\"\nsite = \"shop\"\nmetric = \"LCP\"\nwarning = 2500\ncritical = 4000\n".to_owned()
    }

    fn check(extra: &str) -> Result<Rule, (String, String)> {
        let notifiers = check_notifiers(&[NotifierConfig {
            name: "ops".into(),
            kind: "webhook".into(),
            url: Some("https://hooks.example/pulse".into()),
            secret: Some("s".into()),
            routing_key: None,
        }])
        .expect("notifier");
        check_rule(&rule(&format!("{}{extra}", base())), &["shop"], &notifiers)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let r = check("").expect("valid");
        assert_eq!(r.stat, Stat::Percentile(75.0));
        assert_eq!(r.limits.min_samples, 40, "p75 → ⌈10/0.25⌉");
        assert_eq!((r.window.as_secs(), r.limits.pending_for), (900, 300));
        assert_eq!((r.limits.repeat_critical, r.limits.repeat_warning), (300, 3600));
        assert_eq!(r.limits.resolve, 2500.0);
        assert_eq!(check("stat = \"p95\"").expect("valid").limits.min_samples, 200);
        assert_eq!(check("stat = \"p99\"").expect("valid").limits.min_samples, 1000);
    }

    #[test]
    fn bad_rules_name_the_rule_and_field() {
        let cases = [
            ("metric = \"Nope\"", "metric"),
            ("stat = \"p42\"", "stat"),
            ("stat = \"error_rate\"", "stat"),
            ("window = \"15x\"", "window"),
            ("for = \"soon\"", "for"),
            ("critical = 2000", "critical"),
            ("notify = [\"pager\"]", "notify"),
            ("no_data = \"panic\"", "no_data"),
            ("group_by = \"route\"", "group_by"),
            ("resolve = 3000", "resolve"),
            ("where = { nav = \"navigation\" }", "where.nav"),
            ("where = { url = \"\" }", "where.url"),
            ("for = \"200000000000000d\"", "for"),
            ("repeat_critical = \"31d\"", "repeat_critical"),
        ];
        for (extra, field) in cases {
            // Later keys replace the base's (toml refuses duplicates, so rebuild the text).
            let key = extra.split(' ').next().unwrap_or_default();
            let text: String = base().lines().filter(|l| !l.starts_with(&format!("{key} "))).map(|l| format!("{l}\n")).collect();
            let err = check_rule(&rule(&format!("{text}{extra}")), &["shop"], &[]).expect_err(extra);
            assert_eq!(err.0, format!("alert_rules[checkout-lcp].{field}"), "{extra}: {}", err.1);
        }
        let err = check_rule(&rule(&base().replace("\"shop\"", "\"blog\"")), &["shop"], &[]).expect_err("unknown site");
        assert_eq!(err.0, "alert_rules[checkout-lcp].site");
    }

    #[test]
    fn filters_are_checked_and_normalised_as_the_query_api_does() {
        let r = check("where = { url = \"https://shop.example/product/123?ref=mail\", nav = \"reload\" }").expect("valid");
        assert_eq!(r.normalised, vec![("url".to_owned(), "/product/:id".to_owned()), ("nav".to_owned(), "reload".to_owned())]);
        // As written for the query API, which normalises once (a route normalised twice is not
        // the same: `api.example/v1/items/:id` would become a path).
        assert_eq!(r.filters[1], ("url".to_owned(), "https://shop.example/product/123?ref=mail".to_owned()));
        let api = |extra: &str| {
            check_rule(
                &rule(&format!("name = \"a\"\nsite = \"shop\"\nmetric = \"api\"\nstat = \"p95\"\nwarning = 800\n{extra}")),
                &["shop"],
                &[],
            )
        };
        let r = api("where = { route = \"/api/cart/42\", method = \"post\", status = \"503\" }").expect("valid");
        assert_eq!(
            r.normalised,
            vec![
                ("route".to_owned(), "/api/cart/:id".to_owned()),
                ("method".to_owned(), "POST".to_owned()),
                ("status".to_owned(), "503".to_owned())
            ]
        );
        let cross_origin = api("where = { route = \"https://api.example/v1/items/7\" }").expect("valid");
        assert_eq!(cross_origin.filters, vec![("route".to_owned(), "https://api.example/v1/items/7".to_owned())]);
        let err = api("where = { status = \"5xx\" }").expect_err("not a status");
        assert_eq!(err.0, "alert_rules[a].where.status", "{}", err.1);
    }

    #[test]
    fn thresholds_in_the_wrong_unit_or_range_are_refused() {
        let shares = |extra: &str| check_rule(&rule(&format!("name = \"s\"\nsite = \"shop\"\nmetric = \"LCP\"\n{extra}")), &["shop"], &[]);
        let err = shares("stat = \"good_share\"\nwarning = 90\ncritical = 75").expect_err("percent, not a fraction");
        assert_eq!(err.0, "alert_rules[s].warning", "{}", err.1);
        assert!(err.1.contains("fraction"), "{}", err.1);
        assert!(shares("stat = \"good_share\"\nwarning = 0.9\ncritical = 0.75").is_ok());
        let err = shares("stat = \"count\"\nwarning = -1").expect_err("negative count");
        assert_eq!(err.0, "alert_rules[s].warning");
        // A custom metric may be negative (a balance, a temperature).
        let custom =
            check_rule(&rule("name = \"c\"\nsite = \"shop\"\nmetric = \"cart.delta\"\nstat = \"avg\"\nwarning = -5\n"), &["shop"], &[]);
        assert!(custom.is_ok(), "{custom:?}");
        let api =
            check_rule(&rule("name = \"e\"\nsite = \"shop\"\nmetric = \"api\"\nstat = \"error_rate\"\nwarning = 5\n"), &["shop"], &[]);
        assert_eq!(api.expect_err("5 meant as 5 %").0, "alert_rules[e].warning");
    }

    #[test]
    fn release_rules_take_min_change_not_thresholds() {
        let release = |extra: &str| {
            check_rule(&rule(&format!("name = \"r\"\nkind = \"release\"\nsite = \"shop\"\nmetric = \"LCP\"\n{extra}")), &["shop"], &[])
        };
        let r = release("").expect("valid");
        assert_eq!(r.release, Some((0.2, 40)));
        assert_eq!((r.window.as_secs(), r.limits.pending_for, r.limits.no_data), (7 * 86_400, 0, NoData::Ok));
        assert_eq!(release("warning = 2500").expect_err("thresholds").0, "alert_rules[r].kind");
        assert_eq!(release("stat = \"good_share\"").expect_err("stat").0, "alert_rules[r].stat");
        assert_eq!(check("min_change = 0.1").expect_err("threshold rules").0, "alert_rules[checkout-lcp].min_change");
    }

    #[test]
    fn notifiers_are_checked() {
        let n = |kind: &str, url: Option<&str>, key: Option<&str>| NotifierConfig {
            name: "n".into(),
            kind: kind.into(),
            url: url.map(String::from),
            secret: None,
            routing_key: key.map(String::from),
        };
        assert!(check_notifiers(&[n("webhook", Some("ftp://x.example/hook"), None)]).expect_err("scheme").0.ends_with(".url"));
        assert!(check_notifiers(&[n("sms", Some("https://x.example"), None)]).expect_err("kind").0.ends_with(".kind"));
        assert!(check_notifiers(&[n("pagerduty", None, None)]).expect_err("key").0.ends_with(".routing_key"));
        let pd = check_notifiers(&[n("pagerduty", None, Some("R0UT1NG"))]).expect("valid");
        assert_eq!(pd[0].url, "https://events.pagerduty.com/v2/enqueue");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        for bad in ["", "m", "15", "1w", "-5m", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn default_rules_are_valid_core_web_vitals_rules() {
        let rules = default_rules("shop", &[]);
        assert_eq!(rules.len(), 5);
        for r in &rules {
            let checked = check_rule(r, &["shop"], &[]).expect("valid");
            assert_eq!(checked.window.as_secs(), 3_600);
        }
        assert_eq!((rules[0].warning, rules[0].critical), (Some(2500.0), Some(4000.0)));
    }
}
