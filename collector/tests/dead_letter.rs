//! Dead letters on a real ClickHouse: rows the server refuses for good leave the spool for the
//! `dead_letter` table (or, when that is refused too, a file), the good rows of the same batch
//! are stored, and the shipper goes on with the rows behind them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pulse_collector::config::Config;
use pulse_testkit::http::{get, send};
use pulse_testkit::{api_call, beacon, clickhouse, metric};
use serde_json::Value;

/// The value the test's `metrics` table refuses.
const POISON: f64 = 666.0;

async fn post(base: &str, body: &Value) {
    let r = send(
        "POST",
        &format!("{base}/v1/beacon"),
        &[("content-type", "text/plain;charset=UTF-8"), ("origin", "http://localhost:3000")],
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
}

/// Waits until `sql` counts `n`.
async fn wait_count(sql: &str, n: u64) {
    let started = Instant::now();
    loop {
        let got = clickhouse().count(sql);
        if got == n {
            return;
        }
        assert!(got < n, "{sql}: {got}, expected {n}");
        assert!(started.elapsed() < Duration::from_secs(30), "{sql}: {got} after 30 s, expected {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metric_value(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)).map_or(0.0, |v| v.trim().parse().expect("a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_clickhouse_refuses_for_good_become_dead_letters_and_the_rest_ships() {
    let ch = clickhouse();
    let db = ch.fresh_database("dead_letter");
    let spool_dir = pulse_testkit::temp_dir("spool-dead-letter");
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        clickhouse_url: ch.url.clone(),
        clickhouse_database: db.clone(),
        flush_interval_ms: 100,
        ip_rate_per_second: 10_000,
        dead_letter_after_attempts: 2,
        spool_dir: spool_dir.clone(),
        ..Config::default()
    };
    let running = pulse_collector::start(config).await.expect("collector starts");
    let base = format!("http://{}", running.addr);
    // A check the server runs on every inserted row, before it writes any (a MATERIALIZED
    // column; 18.16 has no CHECK constraints): a row whose value is POISON is refused with
    // `Code: 395` (throwIf), every other row is stored.
    ch.sql(&format!("ALTER TABLE {db}.metrics ADD COLUMN poison UInt8 MATERIALIZED throwIf(value = {POISON})"));

    // One beacon (one spool record, one insert) with good rows around the bad one, and an API
    // call in the same beacon.
    let mut metrics: Vec<Value> = [100.0, 200.0, POISON, 300.0, 400.0].iter().map(|v| metric("LCP", *v, 1_000.0)).collect();
    metrics.push(api_call("/api/cart", "GET", 200, 12.0));
    post(&base, &beacon("demo", "/a", metrics)).await;
    wait_count(&format!("SELECT count() FROM {db}.dead_letter"), 1).await;
    wait_count(&format!("SELECT count() FROM {db}.metrics"), 4).await;
    wait_count(&format!("SELECT count() FROM {db}.api_calls"), 1).await;
    assert_eq!(
        ch.sql(&format!("SELECT arraySort(groupArray(value)) FROM {db}.metrics")).trim(),
        "[100,200,300,400]",
        "the good rows of the refused batch are stored"
    );
    let dead = ch.sql(&format!("SELECT target, spool_key, error, row FROM {db}.dead_letter FORMAT JSONEachRow"));
    let dead: Value = serde_json::from_str(dead.trim()).expect("one dead row");
    assert_eq!(dead["target"], "metrics");
    assert!(dead["error"].as_str().is_some_and(|e| e.contains("Code: 395")), "{dead}");
    let row: Value = serde_json::from_str(dead["row"].as_str().expect("row text")).expect("the row as JSON");
    assert_eq!((row["value"].as_f64(), row["name"].as_str(), row["url"].as_str()), (Some(POISON), Some("LCP"), Some("/a")));

    // The shipper is not stuck: later beacons ship, and the spool is empty.
    post(&base, &beacon("demo", "/b", vec![metric("LCP", 500.0, 1_000.0)])).await;
    wait_count(&format!("SELECT count() FROM {db}.metrics"), 5).await;
    let started = Instant::now();
    while running.app.spool.stats_fast().rows > 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the spool drains");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics_text = get(&format!("{base}/metrics"), &[]).await.text();
    assert_eq!(metric_value(&metrics_text, r#"pulse_dead_letter_rows_total{table="metrics",to="clickhouse"}"#), 1.0);
    // The error texts need a read key.
    let health = get(&format!("{base}/healthz"), &[("authorization", "Bearer dev-read-key")]).await.json();
    assert_eq!(health["services"]["writer"]["dead_letter"]["rows"], 1, "{health}");
    assert!(health["services"]["writer"]["dead_letter"]["last_error"].as_str().is_some_and(|e| e.contains("throwIf")), "{health}");

    // When ClickHouse refuses the dead letters too, they go to a file in the spool directory.
    ch.sql(&format!("RENAME TABLE {db}.dead_letter TO {db}.dead_letter_gone"));
    post(&base, &beacon("demo", "/c", vec![metric("LCP", POISON, 1_000.0), metric("LCP", 600.0, 1_000.0)])).await;
    wait_count(&format!("SELECT count() FROM {db}.metrics"), 6).await;
    let started = Instant::now();
    let lines = loop {
        let files: Vec<_> =
            std::fs::read_dir(spool_dir.join("dead-letter")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        let text: String = files.iter().map(|f| std::fs::read_to_string(f).expect("reads")).collect();
        if !text.is_empty() {
            break text;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no dead-letter file after 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dead: Value = serde_json::from_str(lines.trim()).expect("one JSON line");
    assert_eq!(dead["target"], "metrics");
    assert!(dead["row"].as_str().is_some_and(|r| r.contains("\"value\":666.0") && r.contains("\"url\":\"/c\"")), "{dead}");
    let started = Instant::now();
    loop {
        let text = get(&format!("{base}/metrics"), &[]).await.text();
        if metric_value(&text, r#"pulse_dead_letter_rows_total{table="metrics",to="file"}"#) == 1.0
            && running.app.spool.stats_fast().rows == 0
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "counted and removed from the spool");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(running.app.writer_status.dead_letter_rows(), 2);
    running.stop().await;
    let _ = std::fs::remove_dir_all(&spool_dir);
}
