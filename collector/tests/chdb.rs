//! The collector's real SQL on a modern engine: chDB (ClickHouse 26 from PyPI, installed by
//! `scripts/setup.sh test`) runs the schema as a server ≥ 23 gets it (low-cardinality columns,
//! codecs, TTL), inserts of the real row types, the finalizer's statements, and every query shape
//! of the read API — all emitted here by the Rust code as it would send them, none copied into a
//! script. `scripts/chdb-check.py` only runs them in order.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use pulse_collector::config::Config;
use pulse_collector::spool::Spool;
use pulse_collector::storage::rows::{ApiCallRow, MetricRow};
use pulse_collector::storage::{finalize, schema};
use pulse_collector::{router, App};
use serde_json::{json, Value};
use tower::ServiceExt;

/// Every query shape of the read API (source, grouping, filters, intervals), over ranges that
/// cover both the final hours and the recent ones.
fn queries(from: u64, to: u64, month_from: u64) -> Vec<String> {
    let day = format!("from={from}&to={to}");
    let month = format!("from={month_from}&to={to}");
    let mut out = Vec::new();
    for metric in ["LCP", "CLS"] {
        out.push(format!("/v1/vitals?site=demo&metric={metric}&{day}&source=raw"));
        out.push(format!("/v1/vitals?site=demo&metric={metric}&{day}&source=raw&percentiles=90,99.9&group_by=url&device=mobile"));
        out.push(format!("/v1/vitals?site=demo&metric={metric}&{day}&source=rollup"));
        out.push(format!("/v1/vitals?site=demo&metric={metric}&{month}"));
        for group in ["url", "device", "browser", "os", "country", "release", "nav"] {
            out.push(format!("/v1/vitals?site=demo&metric={metric}&{month}&group_by={group}"));
        }
        out.push(format!("/v1/vitals?site=demo&metric={metric}&{month}&group_by=url&device=desktop"));
        for interval in ["1m", "1h", "1d"] {
            out.push(format!("/v1/vitals/series?site=demo&metric={metric}&interval={interval}&{day}"));
        }
        out.push(format!("/v1/vitals/series?site=demo&metric={metric}&interval=1h&{month}"));
        out.push(format!("/v1/vitals/series?site=demo&metric={metric}&interval=1d&{month}&url=/a"));
    }
    for group in ["route", "method", "status", "none"] {
        out.push(format!("/v1/api-calls?site=demo&{day}&group_by={group}"));
    }
    out.push(format!("/v1/compare?site=demo&metric=LCP&a=release:2.4.0&b=release:2.4.1&from={month_from}&to={to}"));
    out.push(format!(
        "/v1/compare?site=demo&metric=CLS&a=range:{from}..{}&b=range:{}..{to}&group_by=url",
        (from + to) / 2,
        (from + to) / 2
    ));
    out
}

fn metric(i: u32, at: u32, name: &str, value: f64, id: String, release: &str) -> MetricRow {
    MetricRow {
        site: "demo".into(),
        event_time: at,
        received_at: at,
        name: name.into(),
        value,
        delta: value,
        rating: 1,
        metric_id: id,
        session: "s".into(),
        page: format!("p-{}", i / 4),
        url: if i % 2 == 0 { "/a".into() } else { "/b".into() },
        nav: "navigate".into(),
        release: release.into(),
        env: String::new(),
        device: if i % 3 == 0 { "mobile".into() } else { "desktop".into() },
        browser: "Chrome".into(),
        os: "Linux".into(),
        country: "DE".into(),
        ect: "4g".into(),
        viewport_w: 1280,
        viewport_h: 800,
        dpr: 2.0,
        memory: 8.0,
        cores: 8,
        skew_ms: 0,
        attribution: String::new(),
        tag_keys: vec![],
        tag_values: vec![],
        seq: u64::from(i),
        page_at: u64::from(at) * 1_000,
        report_n: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collectors_sql_runs_on_a_modern_engine() {
    let dir = pulse_testkit::temp_dir("chdb-spool");
    // Nothing listens there: the read API's queries are kept as sent, then fail to connect.
    let config = Config { clickhouse_url: "http://127.0.0.1:9".into(), spool_dir: dir.clone(), ..Config::default() };
    let spool = Spool::open(&dir, config.spool_max_bytes, config.queue_capacity).expect("spool opens");
    let app = Arc::new(App::new(config.clone(), spool).expect("valid config"));
    let mut statements: Vec<Value> = Vec::new();
    let mut push =
        |kind: &str, label: &str, sql: String, rows: &str| statements.push(json!({"kind": kind, "label": label, "sql": sql, "rows": rows}));

    for sql in schema::modern_statements(&config) {
        push("schema", "migration", sql, "");
    }
    // Two days of rows ending an hour ago: LCP once per page view, CLS twice (a re-report).
    let now = (pulse_testkit::now_ms() / 1000.0) as u32;
    let (first, last) = (now / 3600 * 3600 - 2 * 86_400, now / 3600 * 3600 - 3600);
    let mut rows = Vec::new();
    for i in 0..400u32 {
        let at = first + (last - first) / 400 * i;
        let release = if i < 200 { "2.4.0" } else { "2.4.1" };
        rows.push(metric(i, at, "LCP", 1000.0 + f64::from(i * 7 % 3000), format!("v5-l{i}"), release));
        rows.push(metric(i, at, "CLS", 0.01 * f64::from(i % 30), format!("v5-c{i}"), release));
        rows.push(metric(i, at + 60, "CLS", 0.02 * f64::from(i % 30), format!("v5-c{i}"), release));
    }
    let lines: Vec<String> = rows.iter().map(|r| serde_json::to_string(r).expect("row as JSON")).collect();
    push("insert", "metrics", format!("INSERT INTO metrics FORMAT JSONEachRow {}", lines.join("\n")), "");
    let call = ApiCallRow {
        site: "demo".into(),
        event_time: last,
        received_at: last,
        route: "/api/cart".into(),
        method: "GET".into(),
        status: 200,
        ok: 1,
        error: String::new(),
        duration: 120.5,
        server_timing: String::new(),
        session: "s".into(),
        page: "p".into(),
        url: "/a".into(),
        nav: "navigate".into(),
        release: "2.4.1".into(),
        env: String::new(),
        device: "desktop".into(),
        browser: "Chrome".into(),
        os: "Linux".into(),
        country: "DE".into(),
        seq: 1,
        call_id: "m1-call".into(),
    };
    push("insert", "api_calls", format!("INSERT INTO api_calls FORMAT JSONEachRow {}", serde_json::to_string(&call).expect("JSON")), "");

    // The finalizer's statements for the first of the two days, one span of six hours at a time.
    let day = i64::from(first) / 86_400 * 86_400;
    for span in 0..4 {
        let (from, to) = (day + span * 6 * 3600, day + (span + 1) * 6 * 3600);
        let (writes, late) = finalize::span_statements(&app.clickhouse, from, to, 1800, "check");
        for write in writes {
            push("finalize", "span", write.sql_display().to_string(), "");
        }
        push("query", "late re-reports", late.sql_display().to_string(), "some");
    }
    push("query", "metrics_final", "SELECT count() FROM metrics_final HAVING count() > 0".into(), "some");

    // The read API, with the first day final and the rest read from raw rows.
    app.finalizer.assume_final_until(&app, day + 86_400);
    *app.sql_capture.lock().expect("capture") = Some(Vec::new());
    let router = router(app.clone());
    let (from, to) = (u64::from(first) * 1000, u64::from(now) * 1000);
    let paths = queries(from, to, u64::from(now - 30 * 86_400) * 1000);
    for path in &paths {
        let mut request = Request::get(path).header("authorization", "Bearer dev-read-key").body(Body::empty()).expect("request");
        request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let status = router.clone().oneshot(request).await.expect("router answers").status();
        assert!(status.is_server_error(), "{path}: {status} (the query must have been built and sent)");
    }
    let captured = app.sql_capture.lock().expect("capture").take().unwrap_or_default();
    assert!(captured.len() >= paths.len(), "{} queries captured for {} requests", captured.len(), paths.len());
    for sql in captured {
        push("query", "read API", sql, "some");
    }

    let out = pulse_testkit::repo_root().join("target/chdb");
    std::fs::create_dir_all(&out).expect("target/chdb");
    let file = out.join("statements.json");
    std::fs::write(&file, serde_json::to_string_pretty(&statements).expect("JSON")).expect("statements written");
    let python = std::env::var("PULSE_CHDB_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| pulse_testkit::repo_root().join(".pulse/chdb/bin/python"));
    let run = std::process::Command::new(&python)
        .arg(pulse_testkit::repo_root().join("scripts/chdb-check.py"))
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (`scripts/setup.sh test` installs chDB): {e}", python.display()));
    println!("{}", String::from_utf8_lossy(&run.stdout));
    assert!(run.status.success(), "chDB refused the collector's SQL:\n{}", String::from_utf8_lossy(&run.stderr));
}
