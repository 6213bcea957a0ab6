//! Alerts end to end on real parts: a real ClickHouse, the collector, and a real local HTTP
//! receiver standing in for the webhook, Slack and PagerDuty endpoints.
//!
//! Time is driven: the beacons are placed in the past (their `at` times), and the test calls the
//! evaluator once per minute of a simulated hour with that minute as `now` — as the collector's
//! own loop does with the wall clock — instead of waiting.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use pulse_collector::alerts::rules::{AlertRuleConfig, NotifierConfig};
use pulse_collector::config::Config;
use pulse_collector::Running;
use pulse_testkit::http::{get, post_beacon, send};
use pulse_testkit::{clickhouse, now_ms, temp_dir};
use serde_json::{json, Value};
use sha2::Sha256;
use time::OffsetDateTime;

const AUTH: (&str, &str) = ("authorization", "Bearer dev-read-key");
const WRITE_KEY: &str = "ci-write-key";
const SECRET: &str = "webhook-secret";

/// What the receiver got: path, headers, body.
type Received = Arc<Mutex<Vec<(String, HeaderMap, Value)>>>;

/// A local HTTP server that records every POST and answers 200.
async fn receiver() -> (String, Received) {
    receiver_down_while(Arc::default()).await
}

/// A local HTTP server that answers 503 (recording nothing) while `down` is set, and otherwise
/// records every POST and answers 200.
async fn receiver_down_while(down: Arc<AtomicBool>) -> (String, Received) {
    let got: Received = Arc::default();
    async fn record(
        State((got, down)): State<(Received, Arc<AtomicBool>)>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        if down.load(Ordering::SeqCst) {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        // Keep the raw body for signature checks.
        let mut headers = headers;
        headers.insert("x-test-raw-body", String::from_utf8_lossy(&body).parse().expect("header value"));
        got.lock().expect("received").push((uri.path().to_owned(), headers, value));
        StatusCode::OK
    }
    let app = Router::new().route("/{*path}", post(record)).with_state((got.clone(), down));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver serves") });
    (format!("http://{addr}"), got)
}

fn rule(toml_text: &str) -> AlertRuleConfig {
    toml::from_str(toml_text).expect("rule")
}

fn config(db: &str, hooks: &str) -> Config {
    let notifier = |name: &str, kind: &str, path: &str| NotifierConfig {
        name: name.into(),
        kind: kind.into(),
        url: Some(format!("{hooks}/{path}")),
        secret: (kind == "webhook").then(|| SECRET.to_owned()),
        routing_key: (kind == "pagerduty").then(|| "R0UTING".to_owned()),
    };
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        clickhouse_url: clickhouse().url.clone(),
        clickhouse_database: db.into(),
        flush_interval_ms: 100,
        ip_rate_per_second: 100_000,
        ip_read_rate_per_second: 1_000_000,
        ip_metrics_per_second: 1_000_000_000,
        ip_bytes_per_second: 1_000_000_000_000,
        spool_dir: temp_dir("spool-alerts"),
        write_keys: vec![pulse_collector::config::WriteKey { key: WRITE_KEY.into(), sites: None }],
        // The test drives the evaluator itself.
        alert_evaluator: false,
        alert_interval_seconds: 60,
        notifiers: vec![notifier("ops", "webhook", "hook"), notifier("chat", "slack", "slack"), notifier("pager", "pagerduty", "pd")],
        alert_rules: vec![
            rule(
                r#"name = "checkout-lcp"
                site = "demo"
                metric = "LCP"
                stat = "p75"
                where = { url = "/checkout" }
                window = "10m"
                for = "5m"
                warning = 2500
                critical = 4000
                notify = ["ops", "chat", "pager"]"#,
            ),
            rule(
                r#"name = "quiet-page"
                site = "demo"
                metric = "LCP"
                where = { url = "/quiet" }
                window = "10m"
                for = "0s"
                warning = 100
                notify = ["ops"]"#,
            ),
        ],
        ..Config::default()
    }
}

/// Ten LCP values a minute on /checkout, `m` minutes before `base` for m in 52..=1: warning-level
/// (3 000 ms) first, then critical (4 500 ms), then good (1 000 ms); and two slow views of /quiet.
async fn history(base: &str, now: f64) {
    for m in 1..=52u32 {
        let value = match m {
            36..=52 => 3000.0,
            22..=35 => 4500.0,
            _ => 1000.0,
        };
        let at = now - f64::from(m) * 60_000.0;
        let metrics: Vec<Value> =
            (0..10).map(|i| json!({"name": "LCP", "value": value, "at": at + f64::from(i), "id": format!("l-{m}-{i}")})).collect();
        let beacon = json!({"v": 1, "site": "demo", "session": "s", "page": format!("p-{m}"), "url": "/checkout", "nav": "navigate",
                            "sent_at": now, "metrics": metrics});
        assert_eq!(post_beacon(base, beacon.to_string()).await.status, 202);
    }
    let quiet = json!({"v": 1, "site": "demo", "session": "s", "page": "q", "url": "/quiet", "nav": "navigate", "sent_at": now,
                       "metrics": [{"name": "LCP", "value": 9000, "at": now - 1_920_000.0}, {"name": "LCP", "value": 9100, "at": now - 1_860_000.0}]});
    assert_eq!(post_beacon(base, quiet.to_string()).await.status, 202);
}

/// Waits for `n` rows in `metrics` and in its copy in time order (written by a view after the
/// rows themselves), which answers read for the part not final yet.
async fn wait_stored(db: &str, n: u64) {
    let started = std::time::Instant::now();
    while clickhouse().count(&format!("SELECT least((SELECT count() FROM {db}.metrics), (SELECT count() FROM {db}.metrics_recent))")) < n {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "rows not stored: {} of {n}",
            clickhouse().count(&format!("SELECT count() FROM {db}.metrics"))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn at(now: f64, minutes_before: u32) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos((now as i128 - i128::from(minutes_before) * 60_000) * 1_000_000).expect("time")
}

/// Waits until the receiver holds `n` webhook bodies (deliveries run in the background).
async fn webhooks(got: &Received, n: usize) -> Vec<Value> {
    let started = std::time::Instant::now();
    loop {
        let hooks: Vec<Value> = got.lock().expect("received").iter().filter(|(p, _, _)| p == "/hook").map(|(_, _, v)| v.clone()).collect();
        if hooks.len() >= n || started.elapsed() > Duration::from_secs(10) {
            return hooks;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn notices(hooks: &[Value]) -> Vec<(String, String)> {
    hooks.iter().map(|h| (h["notice"].as_str().unwrap_or("").to_owned(), h["severity"].as_str().unwrap_or("-").to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fires_escalates_reminds_survives_a_restart_and_resolves() {
    let (hooks, got) = receiver().await;
    let db = clickhouse().fresh_database("alerts");
    let mut running: Running = pulse_collector::start(config(&db, &hooks)).await.expect("collector starts");
    let base = format!("http://{}", running.addr);
    let now = now_ms();
    history(&base, now).await;
    wait_stored(&db, 52 * 10 + 2).await;

    let mut fired_once_at = None;
    for minutes_before in (1..=60u32).rev() {
        if minutes_before == 25 {
            // A restart while firing: the new process reads the state back and pages nobody again.
            let before = webhooks(&got, 0).await.len();
            running.stop().await;
            running = pulse_collector::start(config(&db, &hooks)).await.expect("collector restarts");
            assert_eq!(webhooks(&got, 0).await.len(), before);
        }
        running.app.alerts.evaluate(&running.app, at(now, minutes_before)).await.expect("evaluates");
        if fired_once_at.is_none() && !webhooks(&got, 0).await.is_empty() {
            fired_once_at = Some(minutes_before);
        }
        if minutes_before == 30 {
            // Firing now: the API lists it with a summary; the quiet page is held for want of samples.
            let body = get(&format!("{}/v1/alerts?site=demo", running_url(&running)), &[AUTH]).await.json();
            assert_eq!(body["summary"]["total"], 1, "{body}");
            let alert = &body["alerts"][0];
            assert_eq!((alert["rule"].as_str(), alert["state"].as_str()), (Some("checkout-lcp"), Some("firing")), "{body}");
            assert!(alert["samples"].as_u64().unwrap_or(0) >= 40, "{body}");
            assert_eq!(body["insufficient_data"][0]["rule"], "quiet-page", "{body}");
        }
    }
    // Ten views a minute from 52 min before now: the window first holds min_samples (40) views at
    // 48 min before (until then "insufficient data" holds the state), pending from there, firing
    // after `for` (5 min) at 43.
    assert_eq!(fired_once_at, Some(43));
    let hooks_seen = webhooks(&got, 6).await;
    let seen = notices(&hooks_seen);
    let kinds: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"firing"), "{seen:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "firing").count(), 1, "one page, even across the restart: {seen:?}");
    assert_eq!(seen[0].1, "warning");
    assert_eq!(seen[1], ("severity_changed".to_owned(), "critical".to_owned()), "{seen:?}");
    let reminders = kinds.iter().filter(|k| **k == "reminder").count();
    assert!((2..=4).contains(&reminders), "critical reminders every 5 minutes for ~15 minutes: {seen:?}");
    assert_eq!(kinds.last(), Some(&"resolved"), "{seen:?}");
    assert_eq!(hooks_seen.last().map(|h| &h["started_at"]), Some(&hooks_seen[0]["started_at"]), "resolved says when it started firing");
    assert_eq!(kinds.len(), 2 + reminders + 1, "nothing else: {seen:?}");

    // The webhook's contract and signature.
    let (_, headers, first) = got.lock().expect("received").iter().find(|(p, _, _)| p == "/hook").cloned().expect("a webhook");
    for key in ["status", "rule", "severity", "value", "threshold", "site", "group", "started_at", "summary", "dashboard"] {
        assert!(first.get(key).is_some(), "webhook lacks {key}: {first}");
    }
    assert_eq!((first["status"].as_str(), first["threshold"].as_f64()), (Some("firing"), Some(2500.0)));
    assert!(first["summary"].as_str().unwrap_or("").contains("p75 LCP (url=/checkout)"), "{first}");
    assert!(first["dashboard"].as_str().unwrap_or("").contains("/dashboard.html?site=demo&metric=LCP"), "{first}");
    let raw = headers.get("x-test-raw-body").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(raw.as_bytes());
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(headers.get("x-pulse-signature").and_then(|v| v.to_str().ok()), Some(format!("sha256={expected}").as_str()));

    // Slack: an incoming-webhook payload. PagerDuty: Events v2, one dedup key from trigger to resolve.
    // (Each notifier delivers on its own: wait until the last notice reached the other two.)
    let started = std::time::Instant::now();
    let arrived = |path: &str| got.lock().expect("received").iter().filter(|(p, _, _)| p == path).count();
    while (arrived("/slack") < kinds.len() || arrived("/pd") < kinds.len()) && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = got.lock().expect("received").clone();
    let slack: Vec<&Value> = received.iter().filter(|(p, _, _)| p == "/slack").map(|(_, _, v)| v).collect();
    assert_eq!(slack.len(), kinds.len());
    assert!(slack[0]["text"].as_str().is_some_and(|t| t.contains("Firing")) && slack[0]["blocks"].is_array(), "{}", slack[0]);
    let pd: Vec<&Value> = received.iter().filter(|(p, _, _)| p == "/pd").map(|(_, _, v)| v).collect();
    assert_eq!(pd.first().map(|e| e["event_action"].as_str()), Some(Some("trigger")));
    assert_eq!(pd.last().map(|e| e["event_action"].as_str()), Some(Some("resolve")));
    assert!(pd.iter().all(|e| e["routing_key"] == "R0UTING" && e["dedup_key"] == pd[0]["dedup_key"]), "{pd:?}");
    assert_eq!(pd[0]["payload"]["severity"], "warning");
    assert!(pd[0]["payload"]["summary"].is_string() && pd[0]["payload"]["source"].is_string());

    // The quiet page (2 views, min_samples 40) never fired.
    assert!(hooks_seen.iter().all(|h| h["rule"] == "checkout-lcp"));
    let history = get(
        &format!("{}/v1/alerts/history?site=demo&from={}&to={}", running_url(&running), now as u64 - 7_200_000, now as u64 + 60_000),
        &[AUTH],
    )
    .await
    .json();
    let events = history["events"].as_array().cloned().unwrap_or_default();
    assert!(events.iter().any(|e| e["notice"] == "resolved") && events.iter().any(|e| e["state"] == "pending"), "{history}");
    let rules = get(&format!("{}/v1/alerts/rules?site=demo", running_url(&running)), &[AUTH]).await.json();
    assert_eq!(rules["rules"][0]["min_samples"], 40, "{rules}");
    let metrics = get(&format!("{}/metrics", running_url(&running)), &[]).await.text();
    assert!(metrics.contains("pulse_alert_notifications_total{notifier=\"ops\",outcome=\"delivered\"}"), "{metrics}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_send_one_notification() {
    let (hooks, got) = receiver().await;
    let db = clickhouse().fresh_database("alerts_two");
    let a = pulse_collector::start(config(&db, &hooks)).await.expect("collector a");
    let b = pulse_collector::start(config(&db, &hooks)).await.expect("collector b");
    let now = now_ms();
    history(&format!("http://{}", a.addr), now).await;
    wait_stored(&db, 52 * 10 + 2).await;
    for minutes_before in (40..=60u32).rev() {
        let t = at(now, minutes_before);
        let (ra, rb) = tokio::join!(a.app.alerts.evaluate(&a.app, t), b.app.alerts.evaluate(&b.app, t));
        let (ra, rb) = (ra.expect("a evaluates"), rb.expect("b evaluates"));
        assert!(!(ra && rb), "both collectors evaluated at {minutes_before} min before now");
    }
    let hooks_seen = webhooks(&got, 2).await;
    assert_eq!(notices(&hooks_seen), vec![("firing".to_owned(), "warning".to_owned())], "exactly one page");
    a.stop().await;
    b.stop().await;
}

/// Waits until `/metrics` counts `n` failed deliveries in all.
async fn failed_deliveries(running: &Running, n: u64) {
    let started = std::time::Instant::now();
    loop {
        let metrics = get(&format!("{}/metrics", running_url(running)), &[]).await.text();
        let failed: u64 = metrics
            .lines()
            .filter(|l| l.starts_with("pulse_alert_notifications_total{") && l.contains("outcome=\"failed\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum();
        if failed >= n {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{failed} of {n} deliveries failed so far");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_the_receiver_missed_is_sent_again_after_it_recovers_even_across_a_restart() {
    let down = Arc::new(AtomicBool::new(true));
    let (hooks, got) = receiver_down_while(down.clone()).await;
    let db = clickhouse().fresh_database("alerts_owed");
    let mut running = pulse_collector::start(config(&db, &hooks)).await.expect("collector starts");
    let now = now_ms();
    history(&format!("http://{}", running.addr), now).await;
    wait_stored(&db, 52 * 10 + 2).await;
    // Fires at 43 min before now (see the first test) while every receiver answers 503.
    for minutes_before in (43..=60u32).rev() {
        running.app.alerts.evaluate(&running.app, at(now, minutes_before)).await.expect("evaluates");
    }
    // ops, chat and pager each gave up after their retries.
    failed_deliveries(&running, 3).await;
    assert!(webhooks(&got, 0).await.is_empty());
    let alerts = get(&format!("{}/v1/alerts?site=demo", running_url(&running)), &[AUTH]).await.json();
    let error = alerts["alerts"][0]["delivery_error"].as_str().unwrap_or_default().to_owned();
    let m = get(&format!("{}/metrics", running_url(&running)), &[]).await.text();
    let m: Vec<&str> = m.lines().filter(|l| l.contains("notifications")).collect();
    assert!(["ops: ", "chat: ", "pager: "].iter().all(|n| error.contains(n)), "every notifier's failure is shown: {alerts} {m:?}");
    // A restart, then the receiver recovers: the next evaluation sends the owed notice, once.
    running.stop().await;
    running = pulse_collector::start(config(&db, &hooks)).await.expect("collector restarts");
    down.store(false, Ordering::SeqCst);
    // The stopped process's lease lapses after three intervals; then the new one leads.
    let mut minute = 42;
    while !running.app.alerts.evaluate(&running.app, at(now, minute)).await.expect("evaluates") {
        minute -= 1;
        assert!(minute > 36, "the restarted collector never took the lease");
    }
    let seen = webhooks(&got, 1).await;
    assert_eq!(notices(&seen), vec![("firing".to_owned(), "warning".to_owned())], "the missed page arrives");
    assert_eq!(seen[0]["started_at"], seen[0]["at"], "it is the notice of the firing minute, not a new one");
    running.app.alerts.evaluate(&running.app, at(now, minute - 1)).await.expect("evaluates");
    assert_eq!(webhooks(&got, 2).await.len(), 1, "delivered once, not again at the next evaluation");
    let pd = got.lock().expect("received").iter().filter(|(p, _, _)| p == "/pd").count();
    assert_eq!(pd, 1, "PagerDuty got its trigger too");
    running.stop().await;
}

/// An `api` rule without `group_by` judges every call of its route at once: 100 fast GETs and 40
/// slow POSTs have a p95 of the slow ones, not a call-weighted mean of each method's p95.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_rule_judges_every_method_of_its_route_together() {
    let (hooks, got) = receiver().await;
    let db = clickhouse().fresh_database("alerts_api");
    let mut cfg = config(&db, &hooks);
    cfg.alert_rules = vec![rule(
        r#"name = "orders-p95"
        site = "demo"
        metric = "api"
        stat = "p95"
        where = { route = "/api/orders/17" }
        window = "10m"
        for = "0s"
        warning = 1000
        min_samples = 100
        notify = ["ops"]"#,
    )];
    let running = pulse_collector::start(cfg).await.expect("collector starts");
    let now = now_ms();
    let call = |method: &str, duration: f64| {
        let mut call = pulse_testkit::api_call("/api/orders/17", method, 200, duration);
        call["at"] = json!(now - 120_000.0);
        call
    };
    let calls: Vec<Value> = (0..100).map(|_| call("GET", 50.0)).chain((0..40).map(|_| call("POST", 2000.0))).collect();
    let beacon = json!({"v": 1, "site": "demo", "session": "s", "page": "p-api", "url": "/shop", "nav": "navigate",
                        "sent_at": now, "metrics": calls});
    assert_eq!(post_beacon(&format!("http://{}", running.addr), beacon.to_string()).await.status, 202);
    let started = std::time::Instant::now();
    while clickhouse().count(&format!("SELECT count() FROM {db}.api_calls")) < 140 {
        assert!(started.elapsed() < Duration::from_secs(20), "API calls not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A newcomer's first heartbeat does not lead yet; its second does.
    for minutes_before in [1, 0] {
        running.app.alerts.evaluate(&running.app, at(now, minutes_before)).await.expect("evaluates");
    }
    let seen = webhooks(&got, 1).await;
    assert_eq!(notices(&seen), vec![("firing".to_owned(), "warning".to_owned())], "p95 over every call is 2000 ms");
    assert_eq!((seen[0]["value"].as_f64(), seen[0]["samples"].as_u64()), (Some(2000.0), Some(140)), "{}", seen[0]);
    running.stop().await;
}

/// A config that cannot work refuses to start, naming the rule and the field.
#[test]
fn bad_alert_config_is_refused_with_the_rule_and_field() {
    let mut c = config("x", "http://127.0.0.1:9");
    c.alert_rules[0].window = Some("ten minutes".into());
    let err = pulse_collector::check(&c).expect_err("bad window").to_string();
    assert_eq!(err, "config: alert_rules[checkout-lcp].window: \"ten minutes\" is not a duration like 30s, 15m, 1h or 1d");
    let mut c = config("x", "http://127.0.0.1:9");
    c.notifiers[0].url = Some("ftp://hooks.example/x".into());
    assert!(pulse_collector::check(&c).expect_err("bad url").to_string().starts_with("config: notifiers[ops].url:"));
    let mut c = config("x", "http://127.0.0.1:9");
    c.alert_rules[0].notify = vec!["nobody".into()];
    assert!(pulse_collector::check(&c).expect_err("unknown notifier").to_string().starts_with("config: alert_rules[checkout-lcp].notify:"));
}

fn running_url(running: &Running) -> String {
    format!("http://{}", running.addr)
}

/// Declares `release` of the demo site as CI does after a deploy.
async fn declare(base: &str, release: &str) {
    let auth = format!("Bearer {WRITE_KEY}");
    let body = json!({"site": "demo", "release": release}).to_string();
    let r =
        send("POST", &format!("{base}/v1/releases"), &[("authorization", auth.as_str()), ("content-type", "application/json")], body).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

/// Sends `per_minute` LCP values of `release` for each minute of `minutes` before `now`, value
/// `i` of a minute being `value(i)`.
async fn release_traffic(
    base: &str,
    now: f64,
    release: &str,
    minutes: std::ops::RangeInclusive<u32>,
    per_minute: u32,
    value: impl Fn(u32) -> f64,
) {
    for m in minutes {
        let metrics: Vec<Value> =
            (0..per_minute).map(|i| json!({"name": "LCP", "value": value(i), "at": now - f64::from(m) * 60_000.0})).collect();
        let b = json!({"v": 1, "site": "demo", "session": "s", "page": format!("{release}-{m}"), "url": "/", "nav": "navigate",
                       "release": release, "sent_at": now, "metrics": metrics});
        let r = post_beacon(base, b.to_string()).await;
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(r.json()["accepted"], per_minute, "{}", r.text());
    }
}

fn release_rule() -> AlertRuleConfig {
    rule(
        r#"name = "release-lcp"
        kind = "release"
        site = "demo"
        metric = "LCP"
        window = "1h"
        min_change = 0.1
        min_samples = 100
        notify = ["ops"]"#,
    )
}

/// `now` plus `minutes`.
fn after(now: f64, minutes: u32) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos((now as i128 + i128::from(minutes) * 60_000) * 1_000_000).expect("time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_regresses_is_announced_once_and_resolves_when_superseded() {
    let (hooks, got) = receiver().await;
    let db = clickhouse().fresh_database("alerts_release");
    let mut c = config(&db, &hooks);
    c.alert_rules = vec![release_rule()];
    let running = pulse_collector::start(c).await.expect("collector starts");
    let base = format!("http://{}", running.addr);
    let now = now_ms();
    // 2.4.0 forty to thirty minutes ago, 2.4.1 (30 % slower) twenty to ten minutes ago; both
    // declared (evaluations below run after the declarations).
    release_traffic(&base, now, "2.4.0", 31..=40, 20, |i| 1500.0 + 50.0 * f64::from(i)).await;
    release_traffic(&base, now, "2.4.1", 11..=20, 20, |i| 1.3 * (1500.0 + 50.0 * f64::from(i))).await;
    declare(&base, "2.4.0").await;
    declare(&base, "2.4.1").await;
    wait_stored(&db, 400).await;
    for minutes_after in [1, 2, 3] {
        running.app.alerts.evaluate(&running.app, after(now, minutes_after)).await.expect("evaluates");
    }
    let hooks_seen = webhooks(&got, 1).await;
    assert_eq!(notices(&hooks_seen), vec![("firing".to_owned(), "warning".to_owned())], "one announcement for one regressed release");
    let first = &hooks_seen[0];
    assert_eq!(first["group"], "2.4.0 → 2.4.1");
    let summary = first["summary"].as_str().unwrap_or("");
    assert!(summary.starts_with("Release regression: p75 LCP of release 2.4.1 against 2.4.0: +30"), "{summary}");
    // Two hours on, the window holds no values of either release: the pair resolves (no_data =
    // ok by default).
    for minutes_after in [120u32, 121, 122] {
        running.app.alerts.evaluate(&running.app, after(now, minutes_after)).await.expect("evaluates");
    }
    let hooks_seen = webhooks(&got, 2).await;
    assert_eq!(notices(&hooks_seen).last().map(|(n, _)| n.as_str()), Some("resolved"), "{hooks_seen:?}");
    running.stop().await;
}

/// A release name is whatever a beacon says: 300 poor values of a release nobody declared page
/// nobody and do not take the place of the newest declared release, whose regression is announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_release_never_notifies_and_hides_no_declared_regression() {
    let (hooks, got) = receiver().await;
    let db = clickhouse().fresh_database("alerts_undeclared");
    let mut c = config(&db, &hooks);
    c.alert_rules = vec![release_rule()];
    let running = pulse_collector::start(c).await.expect("collector starts");
    let base = format!("http://{}", running.addr);
    let now = now_ms();
    let good = |i: u32| 1500.0 + 50.0 * f64::from(i);
    release_traffic(&base, now, "2.4.0", 41..=50, 20, good).await;
    declare(&base, "2.4.0").await;
    // The forged release: first seen after 2.4.0, 300 poor LCP values (9 s, twice web-vitals' poor).
    release_traffic(&base, now, "9.9.9-forged", 31..=45, 20, |_| 9000.0).await;
    wait_stored(&db, 500).await;
    let owed = || clickhouse().count(&format!("SELECT count() FROM {db}.alert_deliveries"));
    let events = || clickhouse().count(&format!("SELECT count() FROM {db}.alert_events WHERE phase != 'normal'"));
    for minutes_after in [1, 2, 3] {
        running.app.alerts.evaluate(&running.app, after(now, minutes_after)).await.expect("evaluates");
    }
    // A notice is written owed before it is sent, within the evaluation: none was.
    assert_eq!((owed(), events()), (0, 0), "the forged release made an alert");
    let alerts = get(&format!("{base}/v1/alerts?site=demo"), &[AUTH]).await.json();
    assert!(!alerts.to_string().contains("forged"), "{alerts}");

    // CI declares 2.4.1, which is 30 % slower; the forger keeps sending new names meanwhile.
    release_traffic(&base, now, "2.4.1", 16..=25, 20, |i| 1.3 * good(i)).await;
    declare(&base, "2.4.1").await;
    release_traffic(&base, now, "9.9.10-forged", 5..=14, 30, |_| 9000.0).await;
    wait_stored(&db, 500 + 200 + 300).await;
    for minutes_after in [4, 5, 6] {
        running.app.alerts.evaluate(&running.app, after(now, minutes_after)).await.expect("evaluates");
    }
    let hooks_seen = webhooks(&got, 1).await;
    assert_eq!(notices(&hooks_seen), vec![("firing".to_owned(), "warning".to_owned())], "{hooks_seen:?}");
    assert_eq!(hooks_seen[0]["group"], "2.4.0 → 2.4.1");
    assert!(hooks_seen.iter().all(|h| !h.to_string().contains("forged")), "{hooks_seen:?}");
    // The forged releases are stored and can still be asked about.
    let by_release =
        get(&format!("{base}/v1/vitals?site=demo&metric=LCP&group_by=release&from={}&to={}", now as i64 - 3_600_000, now as i64), &[AUTH])
            .await
            .json();
    assert!(by_release.to_string().contains("9.9.9-forged"), "{by_release}");
    running.stop().await;
}

/// With a `release_pattern`, the releases seen that match it count as declared (by first seen);
/// the others are left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_pattern_counts_matching_releases_as_declared() {
    let (hooks, got) = receiver().await;
    let db = clickhouse().fresh_database("alerts_pattern");
    let mut c = config(&db, &hooks);
    c.alert_rules = vec![release_rule()];
    c.sites[0].release_pattern = Some(r"^\d+\.\d+\.\d+$".into());
    let running = pulse_collector::start(c).await.expect("collector starts");
    let base = format!("http://{}", running.addr);
    let now = now_ms();
    let good = |i: u32| 1500.0 + 50.0 * f64::from(i);
    release_traffic(&base, now, "2.4.0", 41..=50, 20, good).await;
    release_traffic(&base, now, "2.4.1", 21..=30, 20, |i| 1.3 * good(i)).await;
    release_traffic(&base, now, "2.4.2-forged", 5..=19, 20, |_| 9000.0).await;
    wait_stored(&db, 700).await;
    for minutes_after in [1, 2, 3] {
        running.app.alerts.evaluate(&running.app, after(now, minutes_after)).await.expect("evaluates");
    }
    let hooks_seen = webhooks(&got, 1).await;
    assert_eq!(notices(&hooks_seen), vec![("firing".to_owned(), "warning".to_owned())], "{hooks_seen:?}");
    assert_eq!(hooks_seen[0]["group"], "2.4.0 → 2.4.1");
    running.stop().await;
}

/// Page URLs are data: a URL that is a Slack channel ping or a Slack link reaches Slack as text,
/// and the one link in the message is the dashboard's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_urls_reach_slack_as_text_not_markup() {
    let (hooks, got) = receiver().await;
    let db = clickhouse().fresh_database("alerts_escape");
    let mut c = config(&db, &hooks);
    c.alert_rules = vec![rule(
        r#"name = "page-lcp"
        site = "demo"
        metric = "LCP"
        group_by = "url"
        window = "10m"
        for = "0s"
        warning = 100
        min_samples = 1
        notify = ["chat", "pager"]"#,
    )];
    let running = pulse_collector::start(c).await.expect("collector starts");
    let now = now_ms();
    for (page, url) in [("p1", "/<!channel>"), ("p2", "<https://evil|Log in>")] {
        let beacon = json!({"v": 1, "site": "demo", "session": "s", "page": page, "url": url, "nav": "navigate", "sent_at": now,
                            "metrics": [{"name": "LCP", "value": 5000, "at": now - 120_000.0}]});
        let r = post_beacon(&format!("http://{}", running.addr), beacon.to_string()).await;
        assert_eq!((r.status, r.json()["accepted"].as_u64()), (202, Some(1)), "{}", r.text());
    }
    wait_stored(&db, 2).await;
    // A newcomer's first heartbeat does not lead yet; its second does.
    for minutes_before in [1, 0] {
        running.app.alerts.evaluate(&running.app, at(now, minutes_before)).await.expect("evaluates");
    }
    let started = std::time::Instant::now();
    let slack = loop {
        let slack: Vec<Value> = got.lock().expect("received").iter().filter(|(p, _, _)| p == "/slack").map(|(_, _, v)| v.clone()).collect();
        if slack.len() >= 2 || started.elapsed() > Duration::from_secs(10) {
            break slack;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(slack.len(), 2, "one alert per page: {slack:?}");
    let bodies: Vec<String> = slack.iter().map(Value::to_string).collect();
    let all = bodies.join("\n");
    assert!(!all.contains("<!channel>") && !all.contains("<https:"), "markup from a page URL reached Slack: {all}");
    assert!(all.contains("url /&lt;!channel&gt;"), "the URL is shown as text: {all}");
    // Normalised as a path (`//` collapses): `/<https:/evil|Log in>`.
    assert!(all.contains("url /&lt;https:/evil|Log in&gt;"), "the URL is shown as text: {all}");
    for body in &bodies {
        assert_eq!(body.matches('<').count(), 1, "the dashboard link only: {body}");
        let link = body.split('<').nth(1).unwrap_or_default();
        assert!(
            link.starts_with("http://") && link.contains("/dashboard.html?site=demo&amp;metric=LCP|Open the Pulse dashboard>"),
            "{body}"
        );
    }
    // PagerDuty's summary is plain text: the URL as written, and no link but the dashboard's.
    let pd: Vec<Value> = got.lock().expect("received").iter().filter(|(p, _, _)| p == "/pd").map(|(_, _, v)| v.clone()).collect();
    assert!(pd.iter().all(|e| e["links"].as_array().map(Vec::len) == Some(1)), "{pd:?}");
    running.stop().await;
}

/// The value of one sample in `/metrics` text, 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

/// Attacker-chosen URLs cannot grow a `group_by` rule without bound: past
/// `alert_max_groups_per_rule` new groups are counted, not tracked (the busiest get in); groups
/// back to normal without data are forgotten with their delivery queues; and `alert_events`
/// older than its retention is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_groups_are_capped_and_forgotten_when_gone_and_events_expire() {
    let (hooks, got) = receiver().await;
    let db = clickhouse().fresh_database("alerts_cap");
    let mut c = config(&db, &hooks);
    c.alert_max_groups_per_rule = 3;
    c.alert_rules = vec![rule(
        r#"name = "page-lcp"
        site = "demo"
        metric = "LCP"
        group_by = "url"
        window = "10m"
        for = "0s"
        warning = 100
        min_samples = 1
        no_data = "ok"
        notify = ["ops"]"#,
    )];
    let running = pulse_collector::start(c).await.expect("collector starts");
    let base = format!("http://{}", running.addr);
    let now = now_ms();
    // Five pages, /p5 the busiest (5 views) down to /p1 (1 view), all slow.
    for views in 1..=5u32 {
        let metrics: Vec<Value> = (0..views).map(|i| json!({"name": "LCP", "value": 5000, "at": now - 120_000.0 + f64::from(i)})).collect();
        for (i, m) in metrics.into_iter().enumerate() {
            let b = json!({"v": 1, "site": "demo", "session": "s", "page": format!("p{views}-{i}"), "url": format!("/p{views}"),
                           "nav": "navigate", "sent_at": now, "metrics": [m]});
            assert_eq!(post_beacon(&base, b.to_string()).await.status, 202);
        }
    }
    wait_stored(&db, 15).await;
    for minutes_before in [1, 0] {
        running.app.alerts.evaluate(&running.app, at(now, minutes_before)).await.expect("evaluates");
    }
    let fired = webhooks(&got, 3).await;
    let mut groups: Vec<&str> = fired.iter().filter_map(|h| h["group"].as_str()).collect();
    groups.sort_unstable();
    assert_eq!(groups, vec!["/p3", "/p4", "/p5"], "the three busiest pages are tracked");
    let metrics = get(&format!("{base}/metrics"), &[]).await.text();
    assert_eq!(sample(&metrics, "pulse_alert_groups_over_cap_total{rule=\"page-lcp\"}"), 2.0, "{metrics}");
    assert_eq!(sample(&metrics, "pulse_alert_groups{rule=\"page-lcp\"}"), 3.0, "{metrics}");
    assert_eq!(running.app.alerts.delivery_queues(), 3);

    // Half an hour on the pages are quiet: each resolves (no_data = ok), then it is forgotten,
    // its delivery queue with it.
    let later =
        |minutes: u32| OffsetDateTime::from_unix_timestamp_nanos((now as i128 + i128::from(minutes) * 60_000) * 1_000_000).expect("time");
    // (A collector away longer than its lease rejoins as a newcomer: it leads from its second
    // heartbeat.)
    let mut minute = 30;
    while !running.app.alerts.evaluate(&running.app, later(minute)).await.expect("evaluates") {
        minute += 1;
        assert!(minute < 35, "the collector never took the lease back");
    }
    let seen = webhooks(&got, 6).await;
    assert_eq!(seen.iter().filter(|h| h["notice"] == "resolved").count(), 3, "{seen:?}");
    let metrics = get(&format!("{base}/metrics"), &[]).await.text();
    assert_eq!(sample(&metrics, "pulse_alert_groups{rule=\"page-lcp\"}"), 0.0, "{metrics}");
    assert_eq!(running.app.alerts.delivery_queues(), 0);
    assert_eq!(webhooks(&got, 7).await.len(), 6, "nothing more");

    // Retention: an event from 100 days ago goes, this test's stay.
    clickhouse().sql(&format!(
        "INSERT INTO {db}.alert_events (rule, grp, site, at, at_ms, phase, severity, notice, value, threshold, samples, since, notified_at)
         VALUES ('page-lcp', '/old', 'demo', toDateTime({old}), {old}000, 'firing', 'warning', 'firing', 1, 1, 1, toDateTime({old}), toDateTime({old}))",
        old = (now / 1000.0) as i64 - 100 * 86_400
    ));
    let events = |db: &str| clickhouse().count(&format!("SELECT count() FROM {db}.alert_events"));
    let before = events(&db);
    let keep = pulse_collector::storage::retention::Keep::of(&running.app.config);
    assert_eq!(keep.alert_events, 90, "the default");
    let dropped = pulse_collector::storage::retention::drop_expired(&running.app.clickhouse, &db, OffsetDateTime::now_utc(), keep)
        .await
        .expect("retention runs");
    assert!(dropped.iter().any(|(t, _)| t == "alert_events"), "{dropped:?}");
    assert_eq!(events(&db), before - 1, "only the old event is gone");
    running.stop().await;
}

/// A firing alert's latest event is its state after a restart: the retention must outlive every
/// rule's reminder period.
#[test]
fn alert_events_retention_shorter_than_a_reminder_period_is_refused() {
    let mut c = config("x", "http://127.0.0.1:9");
    c.alert_events_retention_days = 1;
    assert!(pulse_collector::check(&c).is_ok(), "reminders every 1 h and 5 min fit in a day");
    c.alert_rules[0].repeat_warning = Some("2d".into());
    let err = pulse_collector::check(&c).expect_err("a reminder period of two days").to_string();
    assert!(err.contains("alert_events_retention_days") && err.contains("checkout-lcp"), "{err}");
    c.alert_events_retention_days = 3;
    assert!(pulse_collector::check(&c).is_ok());
}
