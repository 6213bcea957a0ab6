//! Integration: beacons in over HTTP → rows in a real ClickHouse → answers from the query API.
//! Each test runs its own collector on a free port with its own database.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pulse_collector::config::Config;
use pulse_collector::storage::finalize::Outcome;
use pulse_collector::Running;
use pulse_testkit::http::{get, post_beacon, send};
use pulse_testkit::{api_call, beacon, clickhouse, exact_percentile, metric, now_ms, re_reported_cls};
use serde_json::{json, Value};

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const DESKTOP: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const AUTH: (&str, &str) = ("authorization", "Bearer dev-read-key");

struct Collector {
    running: Running,
    base: String,
    db: String,
}

async fn collector(test: &str) -> Collector {
    collector_with(test, Config::default()).await
}

/// A collector on `base`'s settings, with this test's database, spool, port and no client limits.
async fn collector_with(test: &str, base: Config) -> Collector {
    let ch = clickhouse();
    let db = ch.fresh_database(test);
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        clickhouse_url: ch.url.clone(),
        clickhouse_database: db.clone(),
        flush_interval_ms: 100,
        ip_rate_per_second: 10_000,
        ip_read_rate_per_second: 1_000_000,
        ip_metrics_per_second: 1_000_000_000,
        ip_bytes_per_second: 1_000_000_000_000,
        // Every beacon here comes from one address; the tests of the site's limits need all of them.
        cardinality_new_values_per_client_per_day: 1_000_000_000,
        spool_dir: pulse_testkit::temp_dir(&format!("spool-{test}")),
        ..base
    };
    let running = pulse_collector::start(config).await.expect("collector starts");
    let base = format!("http://{}", running.addr);
    Collector { running, base, db }
}

impl Collector {
    async fn post(&self, body: &Value, user_agent: &str) -> Value {
        let r = send(
            "POST",
            &format!("{}/v1/beacon", self.base),
            &[("content-type", "text/plain;charset=UTF-8"), ("origin", "http://localhost:3000"), ("user-agent", user_agent)],
            body.to_string(),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()
    }

    async fn read(&self, path_and_query: &str) -> Value {
        let r = get(&format!("{}{path_and_query}", self.base), &[AUTH]).await;
        assert_eq!(r.status, 200, "{path_and_query}: {}", r.text());
        r.json()
    }

    /// Waits until `table` holds `n` rows (the writer flushes every 100 ms).
    async fn wait_rows(&self, table: &str, n: u64) {
        self.wait_count(&format!("SELECT count() FROM {}.{table}", self.db), table, n).await;
        if table == "metrics" {
            // The copy in time order (written by a view after the rows themselves) is what
            // answers read for the part not final yet.
            self.wait_count(&format!("SELECT count() FROM {}.metrics_recent", self.db), "metrics_recent", n).await;
        }
    }

    /// Makes every hour up to now final: the finalizer driven at `now + ahead` (the current hour
    /// over and its grace period passed when `ahead` is 2 h).
    async fn finalize_at(&self, ahead: time::Duration) -> Outcome {
        let app = &self.running.app;
        let now = time::OffsetDateTime::now_utc() + ahead;
        match app.finalizer.run(app, now).await.expect("finalizer runs") {
            // The lease goes to a collector that has been around for an interval.
            Outcome::NotLeader => app.finalizer.run(app, now + time::Duration::minutes(2)).await.expect("finalizer runs"),
            outcome => outcome,
        }
    }

    async fn finalize(&self) -> Outcome {
        self.finalize_at(time::Duration::hours(2)).await
    }

    async fn wait_count(&self, sql: &str, table: &str, n: u64) {
        let started = Instant::now();
        loop {
            let got = clickhouse().count(sql);
            if got == n {
                return;
            }
            assert!(got < n, "{table} has {got} rows, expected {n}");
            assert!(started.elapsed() < Duration::from_secs(20), "{table} has {got} rows after 20 s, expected {n}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A range that surely covers everything sent in this test.
fn range() -> String {
    let now = now_ms() as u64;
    format!("from={}&to={}", now - 3_600_000, now + 120_000)
}

fn values(n: usize, seed: u64) -> Vec<f64> {
    (0..n as u64).map(|i| ((i * 7_919 + seed * 104_729) % 6_000) as f64 + 0.5).collect()
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The `count` of each point of a `/v1/vitals/series` answer.
fn point_counts(body: &Value) -> Vec<u64> {
    body["points"].as_array().expect("points").iter().map(|p| p["count"].as_u64().expect("count")).collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_match_the_values_sent_exactly_from_raw_and_closely_from_rollups() {
    let c = collector("percentiles").await;
    let all = values(300, 1);
    // Six beacons of 50: pages /a and /b alternate, phones and desktops alternate.
    for (i, chunk) in all.chunks(50).enumerate() {
        let url = if i % 2 == 0 { "/a" } else { "/b" };
        let ua = if i % 3 == 0 { IPHONE } else { DESKTOP };
        let receipt = c.post(&beacon("demo", url, chunk.iter().map(|v| metric("LCP", *v, 1_000.0)).collect()), ua).await;
        assert_eq!(receipt["accepted"], 50);
    }
    c.wait_rows("metrics", 300).await;

    let exact = sorted(all.clone());
    let body = c.read(&format!("/v1/vitals?site=demo&metric=LCP&{}&source=raw", range())).await;
    assert_eq!(body["source"], "raw");
    let row = &body["rows"][0];
    assert_eq!(row["count"], 300);
    for p in [50.0, 75.0, 95.0, 99.0] {
        assert_eq!(f(&row[format!("p{p}")]), exact_percentile(&exact, p), "p{p}");
    }
    let good = all.iter().filter(|v| **v <= 2500.0).count() as f64 / 300.0;
    let ni = all.iter().filter(|v| **v > 2500.0 && **v <= 4000.0).count() as f64 / 300.0;
    let poor = all.iter().filter(|v| **v > 4000.0).count() as f64 / 300.0;
    assert_eq!((f(&row["good"]), f(&row["needs_improvement"]), f(&row["poor"])), (good, ni, poor));
    assert_eq!((f(&row["min"]), f(&row["max"])), (exact[0], exact[299]));
    assert!((f(&row["avg"]) - all.iter().sum::<f64>() / 300.0).abs() < 1e-6);

    // Any percentile from raw rows, exact too.
    let body = c.read(&format!("/v1/vitals?site=demo&metric=LCP&{}&percentiles=90,99.9", range())).await;
    assert_eq!(f(&body["rows"][0]["p90"]), exact_percentile(&exact, 90.0));
    assert_eq!(f(&body["rows"][0]["p99_9"]), exact_percentile(&exact, 99.9));

    // Per page, and filtered by device.
    let body = c.read(&format!("/v1/vitals?site=demo&metric=LCP&{}&group_by=url", range())).await;
    for page in ["/a", "/b"] {
        let of_page: Vec<f64> =
            all.chunks(50).enumerate().filter(|(i, _)| (*i % 2 == 0) == (page == "/a")).flat_map(|(_, c)| c.to_vec()).collect();
        let row = body["rows"].as_array().expect("rows").iter().find(|r| r["group"] == page).expect("page row");
        assert_eq!(row["count"], 150);
        assert_eq!(f(&row["p75"]), exact_percentile(&sorted(of_page), 75.0), "{page}");
    }
    let body = c.read(&format!("/v1/vitals?site=demo&metric=LCP&{}&group_by=device&url=/a", range())).await;
    let phones: Vec<f64> = all.chunks(50).enumerate().filter(|(i, _)| i % 2 == 0 && i % 3 == 0).flat_map(|(_, c)| c.to_vec()).collect();
    let row = body["rows"].as_array().expect("rows").iter().find(|r| r["group"] == "mobile").expect("mobile row");
    assert_eq!(row["count"], phones.len());
    assert_eq!(f(&row["p75"]), exact_percentile(&sorted(phones), 75.0));

    // Rollups, before the hour is final (states made from raw rows at query time) and after (the
    // finalizer's rollups): counts, shares, min and max exact; percentiles within t-digest
    // error, checked by rank (the answer must lie within ±3 % of ranks of the exact one).
    for finalized in [false, true] {
        if finalized {
            assert!(matches!(c.finalize().await, Outcome::Finalized { .. }));
        }
        let body = c.read(&format!("/v1/vitals?site=demo&metric=LCP&{}&source=rollup", range())).await;
        assert_eq!(body["source"], "rollup_site");
        assert_eq!(body["final_until"].is_string(), finalized, "{body}");
        let row = &body["rows"][0];
        assert_eq!(row["count"], 300);
        assert_eq!((f(&row["good"]), f(&row["needs_improvement"]), f(&row["poor"])), (good, ni, poor));
        assert_eq!((f(&row["min"]), f(&row["max"])), (exact[0], exact[299]));
        for p in [50.0, 75.0, 95.0, 99.0] {
            let got = f(&row[format!("p{p}")]);
            let rank = (p / 100.0 * 300.0) as usize;
            let (lo, hi) = (exact[rank.saturating_sub(9)], exact[(rank + 9).min(299)]);
            assert!(got >= lo - 1.0 && got <= hi + 1.0, "rollup p{p} = {got}, exact {} (allowed {lo}..{hi})", exact_percentile(&exact, p));
        }
        // A long range is answered by the day rollup with the same counts; exact answers too.
        let now = now_ms() as u64;
        let body = c.read(&format!("/v1/vitals?site=demo&metric=LCP&from={}&to={}", now - 30 * 86_400_000, now + 3_600_000)).await;
        assert_eq!(body["source"], "rollup_site");
        assert_eq!(body["rows"][0]["count"], 300);
        let body = c.read(&format!("/v1/vitals?site=demo&metric=LCP&{}&source=raw&group_by=url", range())).await;
        let counts: Vec<u64> = body["rows"].as_array().expect("rows").iter().map(|r| r["count"].as_u64().expect("count")).collect();
        assert_eq!(counts, vec![150, 150]);
    }
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_buckets_hold_the_right_values() {
    let c = collector("series").await;
    // Bucket k (k minutes ago) gets k+1 values: 100k + j.
    // All values of one bucket share one `at`, so none can straddle a minute boundary.
    let base = now_ms();
    let mut metrics = Vec::new();
    let mut buckets: Vec<Vec<f64>> = Vec::new();
    for k in 0..5u32 {
        let vals: Vec<f64> = (0..=k).map(|j| f64::from(100 * k + j)).collect();
        metrics.extend(vals.iter().map(|v| json!({"name": "INP", "value": v, "at": base - f64::from(k) * 60_000.0})));
        buckets.push(vals);
    }
    c.post(&beacon("demo", "/", metrics), DESKTOP).await;
    c.wait_rows("metrics", 15).await;

    let body = c.read(&format!("/v1/vitals/series?site=demo&metric=INP&interval=1m&percentile=75&{}", range())).await;
    assert_eq!(body["source"], "raw");
    let points = body["points"].as_array().expect("points");
    assert_eq!(points.len(), 5, "{body}");
    // Oldest first: bucket 4 (5 values) … bucket 0 (1 value).
    for (point, k) in points.iter().zip((0..5).rev()) {
        assert_eq!(point["count"], k + 1, "{point}");
        assert_eq!(f(&point["value"]), exact_percentile(&buckets[k], 75.0), "{point}");
        assert_eq!(point["t"].as_i64().expect("t") % 60_000, 0, "buckets start on the minute");
    }
    let times: Vec<i64> = points.iter().map(|p| p["t"].as_i64().expect("t")).collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] == 60_000), "{times:?}");

    // Rollups hold whole hours.
    let r = get(&format!("{}/v1/vitals/series?site=demo&metric=INP&interval=1m&{}&source=rollup", c.base, range()), &[AUTH]).await;
    assert_eq!((r.status, r.json()["field"].as_str()), (400, Some("source")), "{}", r.text());

    for finalized in [false, true] {
        if finalized {
            c.finalize().await;
        }
        for source in ["raw", "rollup"] {
            let body = c.read(&format!("/v1/vitals/series?site=demo&metric=INP&interval=1h&{}&source={source}", range())).await;
            let total: u64 = point_counts(&body).iter().sum();
            assert_eq!(total, 15, "{body}");
        }
        // The minute series is exact after finalizing too (read from the final values).
        let body = c.read(&format!("/v1/vitals/series?site=demo&metric=INP&interval=1m&percentile=75&{}", range())).await;
        assert_eq!(point_counts(&body), vec![5, 4, 3, 2, 1]);
    }
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_error_rate_and_rate_per_second() {
    let c = collector("api_calls").await;
    let cart = [(200, 10.0), (200, 20.0), (200, 30.0), (500, 40.0), (500, 50.0), (0, 60.0)];
    let user = [(200, 5.0), (200, 6.0), (200, 7.0), (404, 8.0)];
    let mut calls: Vec<Value> = cart.iter().map(|(s, d)| api_call("/api/cart?id=3", "GET", *s, *d)).collect();
    calls.extend(user.iter().map(|(s, d)| api_call(&format!("/api/user/{}", *d as u32), "post", *s, *d)));
    calls[5]["error"] = json!("TypeError: Failed to fetch");
    c.post(&beacon("demo", "/", calls), DESKTOP).await;
    c.wait_rows("api_calls", 10).await;

    let now = now_ms() as u64;
    let (from, to) = (now - 3_600_000, now + 3_600_000);
    let body = c.read(&format!("/v1/api-calls?site=demo&from={from}&to={to}")).await;
    let rows = body["rows"].as_array().expect("rows");
    let cart_row = rows.iter().find(|r| r["group"] == "/api/cart").expect("cart");
    assert_eq!(cart_row["count"], 6);
    assert_eq!(cart_row["errors"], 3);
    assert_eq!(f(&cart_row["error_rate"]), 0.5);
    assert_eq!(f(&cart_row["p95"]), exact_percentile(&[10.0, 20.0, 30.0, 40.0, 50.0, 60.0], 95.0));
    let seconds = ((to - from) / 1000) as f64;
    assert!((f(&cart_row["rate_per_second"]) - 6.0 / seconds).abs() < 1e-12);
    let user_row = rows.iter().find(|r| r["group"] == "/api/user/:id").expect("user route normalised");
    assert_eq!((user_row["count"].as_u64(), f(&user_row["error_rate"])), (Some(4), 0.25));

    let body = c.read(&format!("/v1/api-calls?site=demo&group_by=status&from={from}&to={to}")).await;
    let by_status: Vec<(String, u64)> = body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["group"].as_str().expect("g").to_owned(), r["count"].as_u64().expect("n")))
        .collect();
    assert_eq!(by_status, vec![("200".into(), 6), ("500".into(), 2), ("0".into(), 1), ("404".into(), 1)]);
    // `group_by=none`: one row over every call the filters match.
    let body = c.read(&format!("/v1/api-calls?site=demo&group_by=none&from={from}&to={to}")).await;
    let all = body["rows"].as_array().expect("rows");
    assert_eq!(all.len(), 1, "{body}");
    assert_eq!((all[0]["group"].as_str(), all[0]["count"].as_u64(), f(&all[0]["error_rate"])), (Some(""), Some(10), 0.4), "{body}");
    let body = c.read(&format!("/v1/api-calls?site=demo&group_by=method&route=/api/user/1&from={from}&to={to}")).await;
    assert_eq!(body["rows"], json!([body["rows"][0].clone()]));
    assert_eq!((body["rows"][0]["group"].as_str(), body["rows"][0]["count"].as_u64()), (Some("POST"), Some(4)));
    let stored_error = clickhouse().sql(&format!("SELECT error FROM {}.api_calls WHERE status = 0 FORMAT TSV", c.db));
    assert_eq!(stored_error.trim(), "TypeError: Failed to fetch");
    c.running.stop().await;
}

/// Delivery from the spool is at least once: a kill -9 between an insert and the spool's removal
/// (or a distributed insert retried whole) stores a batch's rows again, field for field. Every
/// answer about API calls counts each call once; two equal calls in one beacon are still two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_shipped_twice_are_counted_once() {
    let c = collector("api_calls_twice").await;
    let calls = vec![
        api_call("/api/cart", "GET", 200, 10.0),
        api_call("/api/cart", "GET", 200, 10.0),
        api_call("/api/cart", "GET", 500, 30.0),
        api_call("/api/user", "POST", 200, 5.0),
    ];
    c.post(&beacon("demo", "/", calls), DESKTOP).await;
    c.wait_rows("api_calls", 4).await;
    // The same batch shipped again: the same rows once more.
    let ch = clickhouse();
    ch.sql(&format!("INSERT INTO {db}.api_calls SELECT * FROM {db}.api_calls", db = c.db));
    assert_eq!(ch.count(&format!("SELECT count() FROM {}.api_calls", c.db)), 8);

    let now = now_ms() as u64;
    let (from, to) = (now - 3_600_000, now + 3_600_000);
    let body = c.read(&format!("/v1/api-calls?site=demo&from={from}&to={to}")).await;
    let rows = body["rows"].as_array().expect("rows");
    let cart = rows.iter().find(|r| r["group"] == "/api/cart").expect("cart");
    assert_eq!((cart["count"].as_u64(), cart["errors"].as_u64()), (Some(3), Some(1)), "{body}");
    assert_eq!(f(&cart["error_rate"]), 1.0 / 3.0);
    assert_eq!(f(&cart["p50"]), exact_percentile(&[10.0, 10.0, 30.0], 50.0));
    assert!((f(&cart["rate_per_second"]) - 3.0 / ((to - from) / 1000) as f64).abs() < 1e-12);
    let user = rows.iter().find(|r| r["group"] == "/api/user").expect("user");
    assert_eq!(user["count"].as_u64(), Some(1), "{body}");
    let body = c.read(&format!("/v1/api-calls?site=demo&group_by=status&from={from}&to={to}")).await;
    let by_status: Vec<(Value, Value)> =
        body["rows"].as_array().expect("rows").iter().map(|r| (r["group"].clone(), r["count"].clone())).collect();
    assert_eq!(by_status, vec![(json!("200"), json!(3)), (json!("500"), json!(1))]);
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_prometheus_formats_parse_and_agree_with_json() {
    let c = collector("formats").await;
    let vals = values(40, 2);
    c.post(&beacon("demo", "/p \"quoted\", page", vals.iter().map(|v| metric("FCP", *v, 0.0)).collect()), DESKTOP).await;
    c.wait_rows("metrics", 40).await;
    let q = format!("/v1/vitals?site=demo&metric=FCP&group_by=url&{}", range());
    let json = c.read(&q).await;
    let row = &json["rows"][0];

    let csv_text = get(&format!("{}{q}&format=csv", c.base), &[AUTH]).await;
    assert!(csv_text.header("content-type").unwrap_or("").starts_with("text/csv"));
    let mut reader = csv::Reader::from_reader(csv_text.body.as_ref());
    let headers = reader.headers().expect("header").clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        vec!["group", "count", "p50", "p75", "p95", "p99", "avg", "min", "max", "good", "needs_improvement", "poor"]
    );
    let records: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("valid CSV");
    assert_eq!(records.len(), 1);
    assert_eq!(&records[0][0], "/p \"quoted\", page");
    for (i, name) in headers.iter().enumerate().skip(1) {
        let v: f64 = records[0][i].parse().unwrap_or_else(|_| panic!("{name} = {:?}", &records[0][i]));
        assert_eq!(v, f(&row[name]), "{name}");
    }

    let prom = get(&format!("{}{q}&format=prometheus", c.base), &[AUTH]).await;
    let text = prom.text();
    let mut samples = 0;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad sample value in {line}"));
        let (name, labels) = series.split_once('{').expect("labels");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
        assert!(labels.ends_with('}') && labels.contains("group=\"/p \\\"quoted\\\", page\""), "{labels}");
        if name == "pulse_vitals_p75" {
            assert_eq!(value, f(&row["p75"]));
        }
        samples += 1;
    }
    assert_eq!(samples, 11, "{text}");
    c.running.stop().await;
}

/// A release name that is a spreadsheet formula reaches CSV as text (a leading `'`); a negative
/// custom metric's statistics stay numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_cells_that_a_spreadsheet_would_run_are_neutralised() {
    let c = collector("csv_formulas").await;
    let formula = "=HYPERLINK(\"https://evil.example\",\"Log in\")";
    let mut b = beacon("demo", "/cart", vec![metric("cart.delta", -3.5, 0.0), metric("cart.delta", -1.5, 0.0)]);
    b["release"] = json!(formula);
    c.post(&b, DESKTOP).await;
    c.wait_rows("metrics", 2).await;
    let q = format!("/v1/vitals?site=demo&metric=cart.delta&group_by=release&{}&format=csv", range());
    let r = get(&format!("{}{q}", c.base), &[AUTH]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut reader = csv::Reader::from_reader(r.body.as_ref());
    let headers = reader.headers().expect("header").clone();
    let records: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("valid CSV");
    assert_eq!(records.len(), 1, "{}", r.text());
    assert_eq!(&records[0][0], format!("'{formula}"), "{}", r.text());
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!((&records[0][column("min")], &records[0][column("max")]), ("-3.5", "-1.5"), "{}", r.text());
    // JSON says what was sent: the mark is CSV's alone.
    let json = c.read(&q.replace("&format=csv", "")).await;
    assert_eq!(json["rows"][0]["group"], formula, "{json}");
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_specific_answers_and_lose_nothing_else() {
    let c = collector("bad_inputs").await;
    let good = || beacon("demo", "/good", vec![metric("TTFB", 120.0, 0.0)]);
    let now = now_ms();
    let with_metric =
        |m: &str| format!(r#"{{"v":1,"site":"demo","session":"s","page":"p","url":"/","nav":"navigate","sent_at":{now},"metrics":[{m}]}}"#);
    let many = |m: &str, n: usize| {
        format!(
            r#"{{"v":1,"site":"demo","session":"s","page":"p","url":"/","nav":"navigate","sent_at":{now},"metrics":[{}]}}"#,
            vec![m; n].join(",")
        )
    };
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let mut invalid_utf8 = with_metric(r#"{"name":"LCP","value":1,"at":0}"#).replace("\"/\"", "\"/XX\"").into_bytes();
    let at = invalid_utf8.windows(2).position(|w| w == b"XX").expect("marker");
    invalid_utf8[at] = 0xff;
    invalid_utf8[at + 1] = 0xfe;

    // (name, body, headers' origin, status, text the answer must contain)
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        ("malformed JSON", b"{\"v\":1,".to_vec(), "http://localhost:3000", 400, "malformed JSON body"),
        (
            "wrong type",
            with_metric("").replace("\"metrics\":[]", "\"metrics\":\"LCP\"").into_bytes(),
            "http://localhost:3000",
            400,
            "metrics: invalid type",
        ),
        (
            "NaN literal",
            with_metric(&format!(r#"{{"name":"LCP","value":NaN,"at":{now}}}"#)).into_bytes(),
            "http://localhost:3000",
            400,
            "malformed JSON body",
        ),
        (
            "Infinity literal",
            with_metric(&format!(r#"{{"name":"LCP","value":Infinity,"at":{now}}}"#)).into_bytes(),
            "http://localhost:3000",
            400,
            "malformed JSON body",
        ),
        (
            "null value (JSON.stringify(NaN))",
            with_metric(&format!(r#"{{"name":"LCP","value":null,"at":{now}}}"#)).into_bytes(),
            "http://localhost:3000",
            202,
            "value: must be a finite number",
        ),
        (
            "negative",
            with_metric(&format!(r#"{{"name":"FCP","value":-5,"at":{now}}}"#)).into_bytes(),
            "http://localhost:3000",
            202,
            "value: must not be negative",
        ),
        (
            "huge",
            with_metric(&format!(r#"{{"name":"CLS","value":1e9,"at":{now}}}"#)).into_bytes(),
            "http://localhost:3000",
            202,
            "value: is larger than the plausible maximum 10",
        ),
        (
            "beyond f64",
            with_metric(&format!(r#"{{"name":"LCP","value":1e400,"at":{now}}}"#)).into_bytes(),
            "http://localhost:3000",
            202,
            "number out of range",
        ),
        (
            "unknown metric",
            with_metric(&format!(r#"{{"name":"Lcp","value":1,"at":{now}}}"#)).into_bytes(),
            "http://localhost:3000",
            202,
            "name: is not a known metric",
        ),
        (
            "10k metrics",
            many(&format!(r#"{{"name":"LCP","value":1,"at":{now}}}"#), 10_000).into_bytes(),
            "http://localhost:3000",
            413,
            "larger than 65536 bytes",
        ),
        ("10k tiny metrics", many("{}", 10_000).into_bytes(), "http://localhost:3000", 400, "metrics: has more than 500 entries"),
        ("1 MB body", vec![b' '; 1 << 20], "http://localhost:3000", 413, "larger than 65536 bytes"),
        ("bad site", good().to_string().replace("\"demo\"", "\"acme\"").into_bytes(), "http://localhost:3000", 403, "unknown site key"),
        ("disallowed origin", good().to_string().into_bytes(), "https://evil.example", 403, "may not send beacons"),
        ("invalid UTF-8", invalid_utf8, "http://localhost:3000", 400, "malformed JSON body"),
        // Nesting where a value is parsed hits serde_json's recursion limit (128) and drops the
        // metric; nesting in an ignored unknown field is skipped without recursion and harmless.
        (
            "deeply nested value",
            with_metric(&format!(r#"{{"name":"LCP","value":1,"at":{now},"attribution":{{"target":{deep}}}}}"#)).into_bytes(),
            "http://localhost:3000",
            202,
            "recursion limit exceeded",
        ),
        (
            "deeply nested unknown field",
            with_metric("").replace("\"metrics\":[]", &format!("\"metrics\":[],\"extra\":{deep}")).into_bytes(),
            "http://localhost:3000",
            202,
            "\"accepted\":0",
        ),
    ];
    let mut goods = 0;
    for (name, body, origin, status, text) in cases {
        let r = send("POST", &format!("{}/v1/beacon", c.base), &[("content-type", "text/plain"), ("origin", origin)], body).await;
        assert_eq!(r.status, status, "{name}: {}", r.text());
        assert!(r.text().contains(text), "{name}: {}", r.text());
        let ok = post_beacon(&c.base, good().to_string()).await;
        assert_eq!(ok.status, 202, "good beacon after {name}");
        goods += 1;
    }

    // SQL-looking strings are data: stored verbatim, matched as values.
    let sneaky_url = "/x'; DROP TABLE metrics; --";
    let mut sql = beacon("demo", sneaky_url, vec![metric("LCP", 1.0, 0.0)]);
    sql["metrics"][0]["name"] = json!("evil.tag");
    sql["metrics"][0]["tags"] = json!({"q": "'); DROP TABLE metrics; --"});
    sql["memory"] = json!(4);
    sql["cores"] = json!(8);
    assert_eq!(c.post(&sql, DESKTOP).await["accepted"], 1);
    c.wait_rows("metrics", goods + 1).await;
    let stored =
        clickhouse().sql(&format!("SELECT url, tag_values[1], memory, cores FROM {}.metrics WHERE name = 'evil.tag' FORMAT TSVRaw", c.db));
    assert_eq!(stored.trim_end(), format!("{sneaky_url}\t'); DROP TABLE metrics; --\t4\t8"), "device memory and cores are stored too");
    let q = format!("/v1/vitals?site=demo&metric=evil.tag&url={}&{}", "%2Fx%27%3B%20DROP%20TABLE%20metrics%3B%20--", range());
    assert_eq!(c.read(&q).await["rows"][0]["count"], 1, "the filter value is bound, not spliced");
    let q = format!("/v1/vitals?site=demo&metric=TTFB&device=%27%20OR%20%271%27%3D%271&{}", range());
    assert_eq!(c.read(&q).await["rows"], json!([]), "an injected OR matches nothing");
    let r = get(&format!("{}/v1/vitals?site=demo%27--&metric=LCP", c.base), &[AUTH]).await;
    assert_eq!(r.status, 400);

    let body = c.read(&format!("/v1/vitals?site=demo&metric=TTFB&{}", range())).await;
    assert_eq!(body["rows"][0]["count"], goods, "every good beacon sent between the bad ones was stored");
    let health = get(&format!("{}/healthz", c.base), &[]).await;
    assert_eq!(health.json()["status"], "healthy");
    let metrics = get(&format!("{}/metrics", c.base), &[]).await.text();
    assert!(metrics.contains("pulse_beacons_rejected_total{reason=\"too_large\"} 2"), "{metrics}");
    assert!(metrics.contains("pulse_metrics_rejected_total{reason=\"negative\"} 1"), "{metrics}");
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_partitions_and_migrations_are_idempotent() {
    let c = collector("retention").await;
    let ch = clickhouse();
    let old = (now_ms() / 1000.0) as u64 - 60 * 86_400;
    let new = (now_ms() / 1000.0) as u64;
    for table in ["metrics", "metrics_final"] {
        ch.sql(&format!(
            "INSERT INTO {db}.{table} (site, event_time, name, value) VALUES ('demo', {old}, 'LCP', 1), ('demo', {new}, 'LCP', 2)",
            db = c.db
        ));
    }
    ch.sql(&format!(
        "INSERT INTO {db}.rollup_site_1h (site, name, bucket, count_state) SELECT 'demo', 'LCP', toDateTime(t), countState() FROM (SELECT arrayJoin([{old}, {new}]) AS t) GROUP BY t",
        db = c.db
    ));
    ch.sql(&format!(
        "INSERT INTO {db}.running_page_1d (site, name, at, url) VALUES ('demo', 'LCP', {old}, '/'), ('demo', 'LCP', {new}, '/')",
        db = c.db
    ));
    let dropped = pulse_collector::storage::retention::drop_expired(
        &c.running.app.clickhouse,
        &c.db,
        time::OffsetDateTime::now_utc(),
        pulse_collector::storage::retention::Keep { raw: 30, rollups: 400, alert_events: 90 },
    )
    .await
    .expect("retention runs");
    // The collector's own retention pass (the same call, at start, concurrent with the inserts
    // above) may have dropped some of these days first: the outcome is what is checked, and
    // this call drops no other table.
    let expiring = ["metrics", "metrics_final", "metrics_recent", "running_page_1d"];
    assert!(dropped.iter().all(|(t, _)| expiring.contains(&t.as_str())), "{dropped:?}");
    for table in expiring {
        let time = if table.starts_with("running") { "at" } else { "event_time" };
        let left = ch.sql(&format!("SELECT toUInt32({time}) FROM {}.{table} ORDER BY {time} FORMAT TSV", c.db));
        assert_eq!(left.trim(), new.to_string(), "{table}: old day partitions dropped, today kept");
    }
    assert_eq!(
        ch.count(&format!("SELECT countMerge(count_state) FROM {}.rollup_site_1h", c.db)),
        2,
        "the rollups keep 400 days, running totals 35"
    );

    // Starting again on the same database applies nothing twice.
    pulse_collector::storage::schema::migrate(&c.running.app.config).await.expect("second migration run");
    assert_eq!(ch.count(&format!("SELECT count() FROM {}.schema_migrations", c.db)), 15, "migrations 1 to 15, once each");
    let added =
        format!("SELECT count() FROM system.columns WHERE database = '{}' AND table = 'metrics' AND name IN ('memory', 'cores')", c.db);
    assert_eq!(ch.count(&added), 2, "columns added once, whatever the number of runs");
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_inserts_are_retried_until_clickhouse_takes_them() {
    let c = collector("retry").await;
    let ch = clickhouse();
    // Make inserts fail: the table the writer targets disappears for a while.
    ch.sql(&format!("RENAME TABLE {db}.metrics TO {db}.metrics_away", db = c.db));
    c.post(&beacon("demo", "/", (0..25).map(|i| metric("CLS", f64::from(i) / 100.0, 0.0)).collect()), DESKTOP).await;
    let started = Instant::now();
    loop {
        let health = get(&format!("{}/healthz", c.base), &[AUTH]).await.json();
        if health["services"]["writer"]["status"] == "retrying" {
            assert_eq!(health["status"], "degraded");
            assert!(health["services"]["writer"]["last_error"].as_str().unwrap_or("").contains("metrics"), "{health}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "writer never reported failing inserts: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ch.sql(&format!("RENAME TABLE {db}.metrics_away TO {db}.metrics", db = c.db));
    c.wait_rows("metrics", 25).await;
    let metrics = get(&format!("{}/metrics", c.base), &[]).await.text();
    assert!(metrics.contains("pulse_clickhouse_errors_total{op=\"insert\"}"), "{metrics}");
    assert!(!metrics.contains("pulse_rows_dropped_total{"), "nothing was dropped: {metrics}");
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_not_stored_by_shutdown_stay_in_the_spool_for_the_next_start() {
    let ch = clickhouse();
    let db = ch.fresh_database("give_up");
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        clickhouse_url: ch.url.clone(),
        clickhouse_database: db.clone(),
        flush_interval_ms: 100,
        shutdown_grace_seconds: 1,
        spool_dir: pulse_testkit::temp_dir("spool-give-up"),
        ..Config::default()
    };
    let running = pulse_collector::start(config.clone()).await.expect("starts");
    let app = running.app.clone();
    ch.sql(&format!("RENAME TABLE {db}.metrics TO {db}.metrics_away"));
    let base = format!("http://{}", running.addr);
    assert_eq!(
        post_beacon(&base, beacon("demo", "/", vec![metric("LCP", 1.0, 0.0), metric("FCP", 1.0, 0.0)]).to_string()).await.status,
        202
    );
    running.stop().await;
    let text = app.telemetry.render();
    assert!(!text.contains("pulse_rows_dropped_total{"), "nothing is given up: {text}");
    assert_eq!(app.spool.stats().rows, 2, "the rows wait in the spool");
    drop(app);

    // The next start ships them.
    ch.sql(&format!("RENAME TABLE {db}.metrics_away TO {db}.metrics"));
    let running = pulse_collector::start(config).await.expect("starts again");
    let started = Instant::now();
    while ch.count(&format!("SELECT count() FROM {db}.metrics")) < 2 {
        assert!(started.elapsed() < Duration::from_secs(20), "the spooled rows were not shipped after the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
    assert_eq!(ch.count(&format!("SELECT count() FROM {db}.metrics")), 2, "once each");
}

/// Rows written straight into the raw table, `per_hour` values an hour for `hours` hours ending
/// at the last whole hour; returns the values, oldest first, and the first hour.
fn history(db: &str, hours: u32, per_hour: u32) -> (Vec<f64>, u32) {
    let last_hour = (now_ms() / 1000.0) as u32 / 3600 * 3600 - 3600;
    let first = last_hour - (hours - 1) * 3600;
    let mut values = Vec::new();
    let mut rows = Vec::new();
    for h in 0..hours {
        for k in 0..per_hour {
            let v = f64::from(1000 + (h * 37 + k * 101) % 3000);
            values.push(v);
            rows.push(format!("('demo', toDateTime({}), 'LCP', {v}, 'good', '/p', 'desktop')", first + h * 3600 + k * 60));
        }
    }
    clickhouse().sql(&format!("INSERT INTO {db}.metrics (site, event_time, name, value, rating, url, device) VALUES {}", rows.join(",")));
    (values, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_is_read_from_whole_days_and_the_hours_around_them() {
    let c = collector("day_rollup").await;
    // Ten days of hourly values: the range below covers the whole days in between from the day
    // rollup and the partial days at both ends from the hour rollup.
    let (values, first) = history(&c.db, 240, 3);
    let outcome = c.finalize().await;
    assert!(matches!(outcome, Outcome::Finalized { hours, .. } if hours >= 240), "{outcome:?}");
    let ch = clickhouse();
    assert_eq!(
        ch.count(&format!("SELECT countMerge(count_state) FROM {}.rollup_page_1d", c.db)),
        720,
        "the finalizer fills the day rollup"
    );
    assert_eq!(ch.count(&format!("SELECT countMerge(count_state) FROM {}.rollup_site_1h", c.db)), 720);
    // Over a week by page: whole days (in the answer) from the day rollup.
    let (from, to) = (i64::from(first + 5 * 3600), i64::from(first + 230 * 3600));
    let body = c.read(&format!("/v1/vitals?site=demo&metric=LCP&group_by=url&from={}&to={}", from * 1000, to * 1000)).await;
    assert_eq!(body["source"], "rollup_page");
    let time_of = |field: &str| {
        time::OffsetDateTime::parse(body[field].as_str().expect("time"), &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339")
            .unix_timestamp()
    };
    let (start, to) = (time_of("from"), time_of("to"));
    assert_eq!(start, from.div_euclid(86_400) * 86_400, "a long range by page is read in whole days");
    assert_eq!(to, (i64::from(first + 230 * 3600) + 86_399).div_euclid(86_400) * 86_400);
    let at = |i: usize| i64::from(first) + (i as i64 / 3) * 3600 + (i as i64 % 3) * 60;
    let inside: Vec<f64> = (0..values.len()).filter(|&i| at(i) >= start && at(i) < to).map(|i| values[i]).collect();
    let row = &body["rows"][0];
    assert_eq!(row["count"], inside.len());
    let mut sorted = inside.clone();
    sorted.sort_by(f64::total_cmp);
    // Whole days by page come from the running totals (histograms): min and max are the edges
    // of the outer bins, within 2 %.
    assert_eq!(body["estimate"], "histogram");
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    let (lo, hi) = (f(&row["min"]), f(&row["max"]));
    assert!(lo <= min && lo > min / 1.02 && hi >= max && hi < max * 1.02, "{lo}..{hi}, exact {min}..{max}");
    let p75 = f(&row["p75"]);
    let rank = sorted.partition_point(|v| *v < p75);
    let expected = (0.75 * sorted.len() as f64) as usize;
    assert!(rank.abs_diff(expected) <= sorted.len() / 33, "rollup p75 {p75} at rank {rank}, exact rank {expected}");
    let raw = c.read(&format!("/v1/vitals?site=demo&metric=LCP&group_by=url&from={}&to={}&source=raw", start * 1000, to * 1000)).await;
    assert_eq!(raw["rows"][0]["count"], row["count"]);
    // Up to a week site-wide: exact to the hour, the whole days from the day rollup, the hours
    // around them from the hour rollup.
    let (from, to) = (i64::from(first + 5 * 3600), i64::from(first + 100 * 3600));
    let body = c.read(&format!("/v1/vitals?site=demo&metric=LCP&from={}&to={}", from * 1000, to * 1000)).await;
    assert_eq!(body["source"], "rollup_site");
    assert_eq!(body["rows"][0]["count"], 95 * 3, "{body}");

    // Daily points come from the day rollup, each day's count exact.
    let body = c
        .read(&format!("/v1/vitals/series?site=demo&metric=LCP&interval=1d&from={}&to={}", u64::from(first) * 1000, now_ms() as u64))
        .await;
    assert_eq!(body["source"], "rollup_site");
    let total: u64 = point_counts(&body).iter().sum();
    assert_eq!(total, 720);
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_day_rollup_is_filled_from_the_hour_rollup_once() {
    let c = collector("day_backfill").await;
    let ch = clickhouse();
    // Back to a database that has only migration 1: no day rollup, history in the hour rollup.
    for sql in ["DROP TABLE IF EXISTS {db}.metrics_1d_mv", "DROP TABLE {db}.metrics_1d", "DROP TABLE {db}.schema_migrations"] {
        ch.sql(&sql.replace("{db}", &c.db));
    }
    ch.sql(&format!("CREATE TABLE {}.schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = TinyLog", c.db));
    ch.sql(&format!("INSERT INTO {}.schema_migrations VALUES (1, 'raw tables and minute/hour rollups', now())", c.db));
    history(&c.db, 72, 2);
    // What schema 1's hour view wrote (migration 6 dropped the views).
    ch.sql(&format!(
        "INSERT INTO {db}.metrics_1h SELECT site, name, toDateTime(intDiv(toUInt32(event_time), 3600) * 3600) AS bucket,
            url, device, browser, os, country, release, nav, countState(), sumState(value), minState(value), maxState(value),
            sumState(toUInt64(rating = 'good')), sumState(toUInt64(rating = 'needs-improvement')), sumState(toUInt64(rating = 'poor')),
            quantilesTDigestState(0.5, 0.75, 0.95, 0.99)(value)
         FROM {db}.metrics GROUP BY site, name, bucket, url, device, browser, os, country, release, nav",
        db = c.db
    ));
    let config = Config { clickhouse_url: ch.url.clone(), clickhouse_database: c.db.clone(), ..Config::default() };
    pulse_collector::storage::schema::migrate(&config).await.expect("migration 2");
    let day_count = format!("SELECT countMerge(count_state) FROM {}.metrics_1d", c.db);
    assert_eq!(ch.count(&day_count), 144, "history copied from the hour rollup");
    let per_day = ch.sql(&format!("SELECT sum(n) FROM (SELECT countMerge(count_state) AS n FROM {}.metrics_1d GROUP BY bucket)", c.db));
    assert_eq!(per_day.trim(), "144");
    // Applying the migration again (as after an interruption) copies nothing twice.
    ch.sql(&format!("DROP TABLE {}.schema_migrations", c.db));
    ch.sql(&format!("CREATE TABLE {}.schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = TinyLog", c.db));
    ch.sql(&format!("INSERT INTO {}.schema_migrations VALUES (1, 'raw tables and minute/hour rollups', now())", c.db));
    pulse_collector::storage::schema::migrate(&config).await.expect("migration 2 again");
    assert_eq!(ch.count(&day_count), 144);
    // Migration 6 (applied again with it) drops the views again: schema 1's rollups take no new rows.
    history(&c.db, 1, 5);
    assert_eq!(ch.count(&day_count), 144);
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_are_compared_with_an_interval_and_a_verdict() {
    let c = collector("compare").await;
    // 300 page views per release on two pages; 2.4.1 is ~30 % slower on /checkout only.
    let mut rng = 7u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % 1000) as f64 / 1000.0
    };
    let mut sent = 0;
    for (release, slow) in [("2.4.0", 1.0), ("2.4.1", 1.3)] {
        for url in ["/checkout", "/home"] {
            for chunk in 0..3 {
                let metrics: Vec<Value> = (0..100)
                    .map(|_| {
                        let base = 1500.0 + 1500.0 * next();
                        metric("LCP", if url == "/checkout" { base * slow } else { base }, 1000.0)
                    })
                    .collect();
                let mut b = beacon("demo", url, metrics);
                b["release"] = json!(release);
                b["page"] = json!(format!("{release}-{url}-{chunk}"));
                c.post(&b, DESKTOP).await;
                sent += 100;
            }
        }
    }
    let mut few = beacon("demo", "/rare", (0..8).map(|i| metric("LCP", 1000.0 + f64::from(i), 1000.0)).collect());
    few["release"] = json!("2.4.1");
    c.post(&few, DESKTOP).await;
    c.wait_rows("metrics", sent + 8).await;

    let body = c.read("/v1/compare?site=demo&metric=LCP&a=release:2.4.0&b=release:2.4.1&url=/checkout&min_change=0.1").await;
    assert_eq!(body["verdict"], "regression", "{body}");
    assert_eq!((body["a"]["count"].as_u64(), body["b"]["count"].as_u64()), (Some(300), Some(300)), "{body}");
    let (change, lo, hi) = (f(&body["change"]), f(&body["ci95"][0]), f(&body["ci95"][1]));
    assert!(lo > 0.0 && lo < change && change < hi && (0.2..0.4).contains(&change), "{body}");
    assert_eq!(body["source"], "raw");
    assert!(body["method"].as_str().unwrap_or("").starts_with("bootstrap"), "{body}");

    let body = c.read("/v1/compare?site=demo&metric=LCP&a=release:2.4.0&b=release:2.4.1&url=/home").await;
    assert_eq!(body["verdict"], "no_significant_change", "{body}");

    // Release sides read `from`..`to`; with only `to`, `from` is 7 days before it (not 24 h).
    let to = now_ms() as i64 + 60_000;
    let body = c.read(&format!("/v1/compare?site=demo&metric=LCP&a=release:2.4.0&b=release:2.4.1&url=/checkout&to={to}")).await;
    let seconds = |t: &Value| {
        time::OffsetDateTime::parse(t.as_str().unwrap_or(""), &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp())
            .ok()
    };
    assert_eq!((seconds(&body["a"]["from"]), seconds(&body["b"]["to"])), (Some(to / 1000 - 7 * 86_400), Some(to / 1000)), "{body}");
    assert_eq!(body["a"]["count"], 300, "{body}");
    // Each side's summary holds the statistic compared, whichever it is.
    for stat in ["p50", "p75", "p90", "p95", "p99", "avg"] {
        let body = c.read(&format!("/v1/compare?site=demo&metric=LCP&a=release:2.4.0&b=release:2.4.1&stat={stat}")).await;
        assert!(body["a"][stat].is_number() && body["b"][stat].is_number(), "{stat}: {body}");
    }

    let body = c.read("/v1/compare?site=demo&metric=LCP&a=release:2.4.0&b=release:2.4.1&group_by=url&min_change=0.1").await;
    let verdicts: Vec<(String, String)> = body["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|g| (g["group"].as_str().unwrap_or("").to_owned(), g["verdict"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert!(verdicts.contains(&("/checkout".into(), "regression".into())), "{verdicts:?}");
    assert!(verdicts.contains(&("/home".into(), "no_significant_change".into())), "{verdicts:?}");
    assert!(verdicts.contains(&("/rare".into(), "insufficient_data".into())), "{verdicts:?}");
    let rare = body["groups"].as_array().and_then(|g| g.iter().find(|g| g["group"] == "/rare").cloned()).unwrap_or_default();
    assert_eq!(rare["needed"]["min_samples"], 40, "{rare}");

    for (query, field) in [
        ("a=2.4.0&b=release:2.4.1", "a"),
        ("a=release:2.4.0", "b"),
        ("a=release:1&b=range:5..1", "b"),
        ("a=release:1&b=release:2&stat=p42", "stat"),
    ] {
        let r = get(&format!("{}/v1/compare?site=demo&metric=LCP&{query}", c.base), &[AUTH]).await;
        assert_eq!((r.status, r.json()["field"].as_str().map(str::to_owned)), (400, Some(field.to_owned())), "{query}: {}", r.text());
    }
    c.running.stop().await;
}

/// Every endpoint's real answers validate against `/v1/openapi.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_openapi_document() {
    let write_keys = vec![pulse_collector::config::WriteKey { key: "ci".into(), sites: None }];
    let c = collector_with("openapi", Config { write_keys, ..Config::default() }).await;
    let mut sent = 0;
    for (release, url) in [("1.0", "/"), ("1.1", "/checkout")] {
        let mut metrics: Vec<Value> = (0..50).map(|i| metric("LCP", 1000.0 + f64::from(i) * 20.0, 1000.0)).collect();
        metrics.push(json!({"name": "checkout.step", "value": 3.0, "at": now_ms(), "tags": {"plan": "pro"}}));
        metrics.push(api_call("/api/cart", "GET", 500, 120.0));
        let mut b = beacon("demo", url, metrics);
        b["release"] = json!(release);
        c.post(&b, DESKTOP).await;
        sent += 51;
    }
    c.wait_rows("metrics", sent).await;
    let doc = c.read("/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");

    let errors = |path: &str, method: &str, status: u16, body: &Value| -> Vec<String> {
        let response = &doc["paths"][path][method]["responses"][status.to_string()];
        let schema = &response["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{method} {path} {status} is not in the document");
        let root = json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "components": doc["components"], "allOf": [schema]});
        let validator = jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{path}: the document's schema does not compile: {e}"));
        validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect()
    };
    let check = |path: &str, method: &str, status: u16, body: &Value| {
        let found = errors(path, method, status, body);
        assert!(found.is_empty(), "{method} {path} {status} does not match the document: {found:?}\n{body}");
    };
    // The check can fail: a count given as text is caught.
    let mut wrong = c.read(&format!("/v1/vitals?site=demo&metric=LCP&{}", range())).await;
    wrong["rows"][0]["count"] = json!("many");
    assert!(!errors("/v1/vitals", "get", 200, &wrong).is_empty(), "a wrong answer passed: {wrong}");
    let range = range();
    for path in [
        format!("/v1/vitals?site=demo&metric=LCP&group_by=url&{range}"),
        format!("/v1/vitals?site=demo&metric=checkout.step&percentiles=50,99.9&{range}"),
        format!("/v1/vitals/series?site=demo&metric=LCP&interval=1m&{range}"),
        format!("/v1/api-calls?site=demo&group_by=route&{range}"),
        "/v1/compare?site=demo&metric=LCP&a=release:1.0&b=release:1.1&group_by=url&min_samples=10".to_owned(),
        "/v1/report?site=demo&period=day&format=json".to_owned(),
        format!("/v1/attribution?site=demo&metric=LCP&by=element&{range}"),
        format!("/v1/attribution?site=demo&metric=LCP&by=subpart&{range}"),
        "/v1/alerts?site=demo".to_owned(),
        "/v1/alerts/history?site=demo".to_owned(),
        "/v1/alerts/rules".to_owned(),
    ] {
        let body = c.read(&path).await;
        check(path.split('?').next().unwrap_or(""), "get", 200, &body);
    }
    check("/healthz", "get", 200, &get(&format!("{}/healthz", c.base), &[]).await.json());
    let receipt = c.post(&beacon("demo", "/", vec![metric("LCP", 1.0, 0.0), metric("LCP", -1.0, 0.0)]), DESKTOP).await;
    check("/v1/beacon", "post", 202, &receipt);
    let refused = send("POST", &format!("{}/v1/beacon", c.base), &[("content-type", "text/plain")], "{\"v\": 1}").await;
    check("/v1/beacon", "post", 400, &refused.json());
    let unauthorized = get(&format!("{}/v1/vitals?site=demo&metric=LCP", c.base), &[]).await;
    check("/v1/vitals", "get", 401, &unauthorized.json());
    let declare = |key: &'static str, body: Value| {
        let url = format!("{}/v1/releases", c.base);
        async move { send("POST", &url, &[("authorization", key), ("content-type", "application/json")], body.to_string()).await }
    };
    for (key, body, status) in [
        ("Bearer ci", json!({"site": "demo", "release": "1.1"}), 201),
        ("Bearer ci", json!({"site": "demo", "release": "1.1"}), 200),
        ("Bearer ci", json!({"site": "demo", "release": ""}), 400),
        ("Bearer dev-read-key", json!({"site": "demo", "release": "1.1"}), 401),
    ] {
        let r = declare(key, body).await;
        assert_eq!(r.status, status, "{}", r.text());
        check("/v1/releases", "post", status, &r.json());
    }
    c.running.stop().await;
}

/// Checks every answer counts each page view once with its final value: raw and rollup
/// summaries, `group_by`, both series.
async fn assert_counted_once(c: &Collector, finals: &[f64]) {
    let n = finals.len();
    let exact = sorted(finals.to_vec());
    let now = now_ms() as u64;
    let day = format!("from={}&to={}", now - 86_400_000, now + 60_000);
    let three_days = format!("from={}&to={}", now - 3 * 86_400_000, now + 3_600_000);
    let body = c.read(&format!("/v1/vitals?site=demo&metric=CLS&{day}&source=raw")).await;
    let row = &body["rows"][0];
    assert_eq!(row["count"], n, "{body}");
    for p in [50.0, 75.0, 95.0] {
        assert_eq!(f(&row[format!("p{p}")]), exact_percentile(&exact, p), "p{p}: {body}");
    }
    let poor = finals.iter().filter(|v| **v > 0.25).count() as f64 / n as f64;
    assert_eq!(f(&row["poor"]), poor);
    let body = c.read(&format!("/v1/vitals?site=demo&metric=CLS&{day}&source=raw&group_by=url")).await;
    let counts: Vec<u64> = body["rows"].as_array().expect("rows").iter().map(|r| r["count"].as_u64().expect("count")).collect();
    assert_eq!(counts, vec![n as u64 / 2, n as u64 / 2], "{body}");

    let body = c.read(&format!("/v1/vitals?site=demo&metric=CLS&{three_days}")).await;
    assert_eq!(body["source"], "rollup_site");
    let row = &body["rows"][0];
    assert_eq!(row["count"], n, "{body}");
    let p75 = f(&row["p75"]);
    let rank = exact.partition_point(|v| *v < p75);
    assert!(rank.abs_diff(3 * n / 4) <= n / 33, "rollup p75 {p75} at rank {rank} of the final values");
    assert_eq!(f(&row["poor"]), poor);
    let month = format!("from={}&to={}", now - 30 * 86_400_000, now + 3_600_000);
    for (range, source) in [(&three_days, "raw"), (&month, "rollup_page")] {
        let body = c.read(&format!("/v1/vitals?site=demo&metric=CLS&{range}&group_by=url")).await;
        assert_eq!(body["source"], source);
        let counts: Vec<u64> = body["rows"].as_array().expect("rows").iter().map(|r| r["count"].as_u64().expect("count")).collect();
        assert_eq!(counts, vec![n as u64 / 2, n as u64 / 2], "{body}");
    }
    let body = c.read(&format!("/v1/vitals?site=demo&metric=CLS&{month}&group_by=url")).await;
    let counts: Vec<u64> = body["rows"].as_array().expect("rows").iter().map(|r| r["count"].as_u64().expect("count")).collect();
    assert_eq!(counts, vec![n as u64 / 2, n as u64 / 2], "{body}");
    for source in ["raw", "rollup"] {
        let body = c.read(&format!("/v1/vitals/series?site=demo&metric=CLS&interval=1h&{three_days}&source={source}")).await;
        assert_eq!(point_counts(&body).iter().sum::<u64>(), n as u64, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_page_view_counts_once_with_its_last_value() {
    let c = collector("final_values").await;
    let (finals, beacons) = re_reported_cls(400);
    for b in &beacons {
        c.post(b, DESKTOP).await;
    }
    // A final report delivered twice (a retried beacon) is still one page view.
    c.post(beacons.last().expect("beacons"), DESKTOP).await;
    // Custom metrics have no id: three equal ones in one beacon are three.
    let custom = (0..3).map(|_| json!({"name": "cart.items", "value": 2.0, "at": now_ms() - 1_000.0})).collect();
    c.post(&beacon("demo", "/a", custom), DESKTOP).await;
    let duplicate = beacons.last().expect("beacons")["metrics"].as_array().expect("metrics").len() as u64;
    c.wait_rows("metrics", 800 + duplicate + 3).await;

    // Not yet final: deduplicated from raw rows at query time.
    assert_counted_once(&c, &finals).await;
    // Final: `metrics_final` and the rollups hold one row per page view.
    assert!(matches!(c.finalize().await, Outcome::Finalized { .. }));
    let ch = clickhouse();
    assert_eq!(ch.count(&format!("SELECT count() FROM {}.metrics_final WHERE name = 'CLS'", c.db)), 400);
    assert_eq!(ch.count(&format!("SELECT count() FROM {}.metrics_final WHERE name = 'CLS' AND reports >= 2", c.db)), 400);
    assert_counted_once(&c, &finals).await;
    let now = now_ms() as u64;
    let body = c.read(&format!("/v1/vitals?site=demo&metric=cart.items&from={}&to={}", now - 3_600_000, now + 60_000)).await;
    assert_eq!(body["rows"][0]["count"], 3);

    // A report arriving after its hour is final is kept raw, counted as late, and changes nothing.
    let late = json!({"name": "CLS", "value": 0.9, "id": "v5-0", "at": now_ms() - 60_000.0});
    c.post(&beacon("demo", "/a", vec![late]), DESKTOP).await;
    c.wait_rows("metrics", 800 + duplicate + 4).await;
    assert_counted_once(&c, &finals).await;
    let metrics = get(&format!("{}/metrics", c.base), &[]).await.text();
    assert!(metrics.contains("pulse_late_reports_total 1"), "{metrics}");
    c.running.stop().await;
}

/// The page's clock decides which report is the last, not their arrival: every beacon is sent
/// when its report was measured (so the collector places both reports at their arrival) and the
/// final reports arrive first. Raw answers, the finalizer and the rollups keep the final values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_clock_orders_reports_that_arrive_out_of_order() {
    let c = collector("page_order").await;
    let (finals, beacons) = re_reported_cls(200);
    let (first, last) = beacons.split_at(beacons.len() / 2);
    for b in last.iter().chain(first) {
        let mut b = b.clone();
        b["sent_at"] = b["metrics"][0]["at"].clone();
        c.post(&b, DESKTOP).await;
    }
    c.wait_rows("metrics", 400).await;
    let ch = clickhouse();
    // By the collector's clock the first reports are the newer ones.
    let newer = ch.count(&format!(
        "SELECT count() FROM (SELECT metric_id, argMax(value, (event_time, seq)) AS v, max(value) AS top
         FROM {}.metrics GROUP BY metric_id) WHERE v < top",
        c.db
    ));
    assert!(newer > 150, "only {newer} first reports look newer by arrival");
    assert_counted_once(&c, &finals).await;
    assert!(matches!(c.finalize().await, Outcome::Finalized { .. }));
    assert_eq!(ch.count(&format!("SELECT count() FROM {}.metrics_final WHERE name = 'CLS'", c.db)), 200);
    assert_counted_once(&c, &finals).await;
    c.running.stop().await;
}

/// `pulse_late_reports_total` counts each late re-report once: not again when a crash makes the
/// finalizer rebuild the day that holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_day_counts_its_late_reports_once() {
    let c = collector("late_once").await;
    let ch = clickhouse();
    let db = &c.db;
    // Two days ago: a CLS first reported at 01:10 and again at 07:20 (the 01:00 hour was due to
    // be final at 02:30), which the span 06:00–12:00 counts as late.
    let day = (now_ms() / 1000.0) as i64 / 86_400 * 86_400 - 2 * 86_400;
    let (first, again) = (day + 3_600 + 600, day + 7 * 3_600 + 1_200);
    ch.sql(&format!(
        "INSERT INTO {db}.metrics (site, event_time, received_at, name, value, rating, metric_id, session, page, url, device, seq)
         VALUES ('demo', {first}, {first}, 'CLS', 0.1, 'good', 'late-1', 's', 'p', '/a', 'desktop', 1),
                ('demo', {again}, {again}, 'CLS', 0.3, 'poor', 'late-1', 's', 'p', '/a', 'desktop', 2)"
    ));
    let late_total = || async {
        let metrics = get(&format!("{}/metrics", c.base), &[]).await.text();
        metrics.lines().find_map(|l| l.strip_prefix("pulse_late_reports_total ").map(str::to_owned)).unwrap_or_default()
    };
    assert!(matches!(c.finalize().await, Outcome::Finalized { rebuilt_day: false, .. }));
    assert_eq!(late_total().await, "1");

    // A run that died mid-way through a later span of that day: the next run rebuilds the day.
    let next_at = ch.count(&format!("SELECT max(at_ms) + 1 FROM {db}.finalizer_progress"));
    ch.sql(&format!(
        "INSERT INTO {db}.finalizer_progress VALUES ({next_at}, 'crashed', 'started', toDateTime({}), toDateTime({}))",
        day + 12 * 3_600,
        day + 18 * 3_600
    ));
    assert!(matches!(c.finalize_at(time::Duration::minutes(125)).await, Outcome::Finalized { rebuilt_day: true, .. }));
    assert_eq!(ch.count(&format!("SELECT count() FROM {db}.metrics_final")), 1);
    assert_eq!(late_total().await, "1", "the rebuilt day's late report counted again");
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizing_survives_a_crash_mid_way_and_a_second_collector() {
    let c = collector("finalizer_crash").await;
    let (finals, beacons) = re_reported_cls(100);
    for b in &beacons {
        c.post(b, DESKTOP).await;
    }
    c.wait_rows("metrics", 200).await;
    assert!(matches!(c.finalize().await, Outcome::Finalized { rebuilt_day: false, .. }));
    assert_counted_once(&c, &finals).await;

    // A run that died mid-way: its span recorded as started and part of it written twice.
    let ch = clickhouse();
    let db = &c.db;
    let hour = (now_ms() / 1000.0 - 300.0) as i64 / 3600 * 3600;
    let next_at = ch.count(&format!("SELECT max(at_ms) + 1 FROM {db}.finalizer_progress"));
    ch.sql(&format!(
        "INSERT INTO {db}.finalizer_progress VALUES ({next_at}, 'crashed', 'started', toDateTime({hour}), toDateTime({}))",
        hour + 3600
    ));
    for table in ["metrics_final", "rollup_site_1h", "rollup_site_1d", "rollup_page_1d"] {
        ch.sql(&format!("INSERT INTO {db}.{table} SELECT * FROM {db}.{table}"));
    }
    let doubled = c.read("/v1/vitals?site=demo&metric=CLS&source=raw").await;
    assert_eq!(doubled["rows"][0]["count"], 200, "the damage shows before the next run");
    // The next run rebuilds the day from the raw rows.
    assert!(matches!(c.finalize_at(time::Duration::minutes(125)).await, Outcome::Finalized { rebuilt_day: true, .. }));
    assert_eq!(ch.count(&format!("SELECT count() FROM {db}.metrics_final")), 100);
    assert_counted_once(&c, &finals).await;

    // Two collectors on one database run the finalizer at the same moments: one leads, nothing
    // is written twice.
    let config = Config { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..c.running.app.config.clone() };
    let config = Config { spool_dir: pulse_testkit::temp_dir("spool-finalizer-second"), ..config };
    let second = pulse_collector::start(config).await.expect("second collector starts");
    // Both keep their heartbeats going (every minute, as they do when running): one leads
    // throughout, the other never writes.
    let t0 = time::OffsetDateTime::now_utc() + time::Duration::minutes(130);
    c.running.app.finalizer.run(&c.running.app, t0).await.expect("first runs");
    second.app.finalizer.run(&second.app, t0).await.expect("second runs");
    for minutes in 1..=70 {
        let now = t0 + time::Duration::minutes(minutes);
        let (a, b) = tokio::join!(c.running.app.finalizer.run(&c.running.app, now), second.app.finalizer.run(&second.app, now));
        let (a, b) = (a.expect("first runs"), b.expect("second runs"));
        assert!(a == Outcome::NotLeader || b == Outcome::NotLeader, "{a:?} and {b:?}");
    }
    assert_eq!(ch.count(&format!("SELECT count() FROM {db}.metrics_final")), 100);
    assert_counted_once(&c, &finals).await;
    second.stop().await;
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_in_the_old_rollups_moves_into_the_new_ones_once() {
    let c = collector("old_rollups").await;
    let ch = clickhouse();
    let db = &c.db;
    // A database of schema 5 whose raw rows have expired: 48 hours of history only in the
    // hour and day rollups that the views of schema 1 and 2 filled.
    let (_, first) = history(db, 48, 2);
    // Without raw rows, history ends at the start of today (the finalizer starts there).
    let today = (now_ms() / 1000.0) as u32 / 86_400 * 86_400;
    let before_today = (0..48).filter(|h| first + h * 3600 < today).count() as u64 * 2;
    for (table, step) in [("metrics_1h", 3_600), ("metrics_1d", 86_400)] {
        ch.sql(&format!(
            "INSERT INTO {db}.{table} SELECT site, name, toDateTime(intDiv(toUInt32(event_time), {step}) * {step}) AS bucket,
                url, device, browser, os, country, release, nav, countState(), sumState(value), minState(value), maxState(value),
                sumState(toUInt64(rating = 'good')), sumState(toUInt64(rating = 'needs-improvement')), sumState(toUInt64(rating = 'poor')),
                quantilesTDigestState(0.5, 0.75, 0.95, 0.99)(value)
             FROM {db}.metrics GROUP BY site, name, bucket, url, device, browser, os, country, release, nav"
        ));
    }
    ch.sql(&format!("ALTER TABLE {db}.metrics DELETE WHERE 1 = 1"));
    ch.sql(&format!("ALTER TABLE {db}.metrics_recent DELETE WHERE 1 = 1"));
    let started = Instant::now();
    while ch.count(&format!("SELECT count() FROM {db}.metrics")) + ch.count(&format!("SELECT count() FROM {db}.metrics_recent")) > 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "the raw rows were not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Forget migration 6 and the histograms' start (migration 8), as a database of schema 5 has neither.
    ch.sql(&format!("ALTER TABLE {db}.schema_migrations DELETE WHERE version IN (6, 8)"));
    ch.sql(&format!("ALTER TABLE {db}.histograms_since DELETE WHERE 1 = 1"));
    let started = Instant::now();
    while ch.count(&format!("SELECT count() FROM {db}.schema_migrations WHERE version IN (6, 8)"))
        + ch.count(&format!("SELECT count() FROM {db}.histograms_since"))
        > 0
    {
        assert!(started.elapsed() < Duration::from_secs(20), "migrations 6 and 8 were not forgotten");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..2 {
        pulse_collector::storage::schema::migrate(&c.running.app.config).await.expect("migration 6");
    }
    // What a collector does at start, after migrating: learn how far values are final.
    c.running.app.finalizer.refresh(&c.running.app).await.expect("progress read");
    for table in ["rollup_site_1h", "rollup_site_1d", "rollup_page_1d", "rollup_client_1d"] {
        assert_eq!(ch.count(&format!("SELECT countMerge(count_state) FROM {db}.{table}")), before_today, "{table}: copied once");
    }
    let now = now_ms() as u64;
    let body = c.read(&format!("/v1/vitals?site=demo&metric=LCP&from={}&to={now}&group_by=url", now - 30 * 86_400_000)).await;
    assert_eq!((body["source"].as_str(), body["rows"][0]["count"].as_u64()), (Some("rollup_page"), Some(before_today)), "{body}");
    c.running.stop().await;
}

/// The value at 0-based rank ⌊p·n⌋ of `values` (what `quantileExact` answers).
fn rank_value(values: &[f64], p: f64) -> f64 {
    let sorted = sorted(values.to_vec());
    sorted[((p / 100.0 * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_ranges_are_read_from_histograms_within_two_percent() {
    let c = collector("histograms").await;
    let ch = clickhouse();
    let db = &c.db;
    // Twelve days of hourly values on two pages and two devices, spread over two decades; a
    // third page only on the first day.
    let last_hour = (now_ms() / 1000.0) as i64 / 3600 * 3600 - 3600;
    let first = last_hour - 287 * 3600;
    let mut rows = Vec::new();
    let mut sent: Vec<(i64, &str, f64)> = Vec::new();
    for h in 0..288 {
        for k in 0..6_i64 {
            let url = if h < 24 && k == 5 {
                "/old"
            } else if k % 2 == 0 {
                "/a"
            } else {
                "/b"
            };
            let device = if k % 3 == 0 { "mobile" } else { "desktop" };
            let v = 200.0 * 1.013_f64.powi(((h * 41 + k * 67) % 180) as i32);
            let at = first + h * 3600 + k * 60;
            rows.push(format!("('demo', toDateTime({at}), 'LCP', {v}, 'good', 'v{h}-{k}', '{url}', '{device}')"));
            sent.push((at, url, v));
        }
    }
    for chunk in rows.chunks(500) {
        ch.sql(&format!(
            "INSERT INTO {db}.metrics (site, event_time, name, value, rating, metric_id, url, device) VALUES {}",
            chunk.join(",")
        ));
    }
    assert!(matches!(c.finalize().await, Outcome::Finalized { .. }));
    // One more value after the watermark: read from raw rows and merged in.
    let late_at = (now_ms() / 1000.0) as i64 + 3 * 3600;
    ch.sql(&format!(
        "INSERT INTO {db}.metrics (site, event_time, name, value, rating, metric_id, url, device) VALUES ('demo', toDateTime({late_at}), 'LCP', 9000, 'poor', 'late', '/a', 'mobile')"
    ));
    sent.push((late_at, "/a", 9000.0));
    let now = now_ms() as i64;
    let to = (late_at + 3600) * 1000;

    let check = |body: &Value, from: i64, to: i64, estimate: &str| {
        assert_eq!((body["source"].as_str(), body["estimate"].as_str()), (Some("rollup_page"), Some(estimate)), "{body}");
        let rows = body["rows"].as_array().expect("rows");
        for url in ["/a", "/b", "/old"] {
            let values: Vec<f64> = sent.iter().filter(|(at, u, _)| *u == url && *at >= from && *at < to).map(|(_, _, v)| *v).collect();
            let row = rows.iter().find(|r| r["group"] == url);
            let Some(row) = row else {
                assert!(values.is_empty(), "{url}: no row for {} values", values.len());
                continue;
            };
            assert_eq!(row["count"], values.len(), "{url}");
            let sorted = sorted(values.clone());
            let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
            if estimate == "histogram" {
                // The outer edges of the lowest and highest bins: never inside, within 2 %.
                let (lo, hi) = (f(&row["min"]), f(&row["max"]));
                assert!(lo <= min && lo > min / 1.02 && hi >= max && hi < max * 1.02, "{url}: {lo}..{hi}, exact {min}..{max}");
            } else {
                assert_eq!((f(&row["min"]), f(&row["max"])), (min, max), "{url}");
            }
            for p in [50.0, 75.0, 95.0] {
                let (got, exact) = (f(&row[format!("p{p}")]), rank_value(&values, p));
                let allowed = if estimate == "histogram" { 0.02 } else { 0.1 };
                assert!((got / exact - 1.0).abs() < allowed, "{url} p{p}: {got}, exact {exact}");
            }
        }
    };
    // Thirty days by page: two running-total points per key and the value not final yet.
    let body = c.read(&format!("/v1/vitals?site=demo&metric=LCP&group_by=url&from={}&to={to}", now - 30 * 86_400_000)).await;
    let (from, until) = (body["from"].as_str().map(str::to_owned), body["to"].as_str().map(str::to_owned));
    let seconds = |t: Option<String>| {
        time::OffsetDateTime::parse(&t.expect("time"), &time::format_description::well_known::Rfc3339).expect("RFC 3339").unix_timestamp()
    };
    check(&body, seconds(from), seconds(until), "histogram");
    // A week from the third day: the first day's page had no values in it, so it has no row.
    let third = (first / 86_400 + 2) * 86_400;
    let body =
        c.read(&format!("/v1/vitals?site=demo&metric=LCP&group_by=url&from={}&to={}", third * 1000, (third + 8 * 86_400) * 1000)).await;
    check(&body, third, third + 8 * 86_400, "histogram");
    // Pages on phones: the shape with the device.
    let body = c.read(&format!("/v1/vitals?site=demo&metric=LCP&group_by=url&device=mobile&from={}&to={to}", third * 1000)).await;
    assert_eq!((body["source"].as_str(), body["estimate"].as_str()), (Some("rollup_page_device"), Some("histogram")), "{body}");
    let phones = (0..288_i64).flat_map(|h| [0, 3].map(|k| (h, k))).filter(|(h, _)| first + h * 3600 >= third).count() + 1;
    let total: u64 = body["rows"].as_array().expect("rows").iter().map(|r| r["count"].as_u64().expect("count")).sum();
    assert_eq!(total as usize, phones);

    // The site-wide hourly series: exact, from each final hour's percentiles and the late value.
    let series = |interval: &str| format!("/v1/vitals/series?site=demo&metric=LCP&interval={interval}&from={}&to={to}", first * 1000);
    let check_series = |body: &Value, step: i64, estimate: &str, points: usize| {
        assert_eq!((body["source"].as_str(), body["estimate"].as_str()), (Some("rollup_site"), Some(estimate)), "{body}");
        let got = body["points"].as_array().expect("points");
        assert_eq!(got.len(), points, "{body}");
        for point in got {
            let t = point["t"].as_i64().expect("t") / 1000;
            let values: Vec<f64> = sent.iter().filter(|(at, _, _)| *at >= t.max(first) && *at < t + step).map(|(_, _, v)| *v).collect();
            assert_eq!(point["count"], values.len(), "{t}");
            let (got, exact) = (f(&point["value"]), rank_value(&values, 75.0));
            let allowed = if estimate == "exact" { 1e-12 } else { 0.02 };
            assert!((got / exact - 1.0).abs() < allowed, "{t}: p75 {got}, exact {exact}");
        }
    };
    let hourly = c.read(&series("1h")).await;
    check_series(&hourly, 3600, "exact", 289);
    // Equal to the raw path's answer to the last digit (the values above went through text).
    let raw = c.read(&format!("{}&source=raw", series("1h"))).await;
    assert_eq!((hourly["points"].as_array().map(Vec::len), raw["estimate"].as_str()), (Some(289), Some("exact")), "{raw}");
    assert_eq!(hourly["points"], raw["points"]);
    // Days: the hours' histograms summed (and the late value's day).
    let days = (late_at / 86_400 - first / 86_400 + 1) as usize;
    check_series(&c.read(&series("1d")).await, 86_400, "histogram", days);
    // Hours finalized before their percentiles were kept: from the histograms.
    ch.sql(&format!("ALTER TABLE {db}.hist_site_1h UPDATE q = emptyArrayFloat64() WHERE bucket < toDateTime({})", first + 5 * 3600));
    let started = Instant::now();
    while ch.count(&format!("SELECT count() FROM {db}.hist_site_1h WHERE empty(q)")) < 5 {
        assert!(started.elapsed() < Duration::from_secs(20), "the percentiles were not emptied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check_series(&c.read(&series("1h")).await, 3600, "histogram", 289);

    // Histograms added to a database with history start at its watermark: ranges from before
    // are read from the t-digest rollups, with the same counts.
    ch.sql(&format!("ALTER TABLE {db}.histograms_since DELETE WHERE 1 = 1"));
    let started = Instant::now();
    while ch.count(&format!("SELECT count() FROM {db}.histograms_since")) > 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "histograms_since was not emptied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ch.sql(&format!("INSERT INTO {db}.histograms_since VALUES ({})", last_hour));
    c.running.app.finalizer.refresh(&c.running.app).await.expect("progress read");
    let body =
        c.read(&format!("/v1/vitals?site=demo&metric=LCP&group_by=url&from={}&to={}", third * 1000, (third + 8 * 86_400) * 1000)).await;
    check(&body, third, third + 8 * 86_400, "t-digest");
    let body = c.read(&format!("/v1/vitals/series?site=demo&metric=LCP&interval=1h&from={}&to={to}", first * 1000)).await;
    assert_eq!(body["estimate"], "t-digest");
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_slug_urls_cluster_into_one_route_and_the_totals_stay_exact() {
    let c = std::sync::Arc::new(collector("cardinality_slugs").await);
    let n = 20_000usize;
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in (t..n).step_by(16) {
                    let mut b = beacon(
                        "demo",
                        &format!("/products/blue-shoes-{}-{i}", ["red", "big", "new"][i % 3]),
                        vec![metric("LCP", 1_000.0 + i as f64, 0.0)],
                    );
                    b["page"] = json!(format!("pv-{i}"));
                    c.post(&b, DESKTOP).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("sender");
    }
    c.wait_rows("metrics", n as u64).await;
    let answer = c.read(&format!("/v1/vitals?site=demo&metric=LCP&group_by=url&limit=1000&{}", range())).await;
    let rows = answer["rows"].as_array().expect("rows");
    let total: u64 = rows.iter().map(|r| r["count"].as_u64().expect("count")).sum();
    assert_eq!(total, n as u64, "every page view counts in the total");
    let clustered = rows.iter().find(|r| r["group"] == "/products/*").expect("a clustered route");
    assert!(rows.len() <= 201, "{} routes: the first 200 slugs, then one", rows.len());
    assert_eq!(clustered["count"].as_u64(), Some(n as u64 - 200), "all but the 200 slugs seen before the position clustered");
    let health = get(&format!("{}/healthz", c.base), &[AUTH]).await.json();
    assert_eq!(health["cardinality"], json!([]), "clustering kept the site far from its URL limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_names_past_the_limit_are_refused_and_releases_fold_into_other() {
    let config = Config { cardinality_metric_names_per_day: 100, cardinality_releases_per_day: 2, ..Config::default() };
    let c = collector_with("cardinality_names", config).await;
    let (mut accepted, mut refused) = (0, 0);
    for b in 0..20 {
        let metrics = (0..500).map(|i| metric(&format!("widget.m{}", b * 500 + i), 1.0, 0.0)).collect();
        let receipt = c.post(&beacon("demo", "/", metrics), DESKTOP).await;
        accepted += receipt["accepted"].as_u64().expect("accepted");
        for r in receipt["rejected"].as_array().expect("rejected") {
            assert!(r["error"].as_str().expect("error").contains("100 distinct custom metric names today"), "{r}");
            refused += 1;
        }
    }
    assert_eq!((accepted, refused), (100, 9_900));
    for (i, release) in ["r1", "r2", "r3", "r4", "r1"].iter().enumerate() {
        let mut b = beacon("demo", "/", vec![metric("LCP", 2_000.0, 0.0)]);
        b["release"] = json!(release);
        b["page"] = json!(format!("pv-{i}"));
        c.post(&b, DESKTOP).await;
    }
    c.wait_rows("metrics", 105).await;
    let answer = c.read(&format!("/v1/vitals?site=demo&metric=LCP&group_by=release&{}", range())).await;
    let mut by_release: Vec<(String, u64)> = answer["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["group"].as_str().expect("group").to_owned(), r["count"].as_u64().expect("count")))
        .collect();
    by_release.sort();
    assert_eq!(by_release, [("(other)".to_owned(), 2), ("r1".to_owned(), 2), ("r2".to_owned(), 1)]);
    let metrics = get(&format!("{}/metrics", c.base), &[]).await.text();
    assert!(metrics.contains(r#"pulse_cardinality_folded_total{dimension="metric_name",site="demo"} 9900"#), "{metrics}");
    assert!(metrics.contains(r#"pulse_cardinality_folded_total{dimension="release",site="demo"} 2"#));
    let health = get(&format!("{}/healthz", c.base), &[AUTH]).await.json();
    let standing = health["cardinality"].as_array().expect("cardinality");
    assert!(
        standing.contains(&json!({"site": "demo", "dimension": "metric_name", "distinct": 100, "limit": 100, "folded": 9_900})),
        "{standing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_beacon_counts_its_custom_metrics_and_api_calls_once() {
    let c = collector("resent_once").await;
    // As the agent sends them: every custom metric and API call with an id of its own. Two calls
    // equal in every field but their ids are two calls.
    let with_id = |mut m: Value, id: &str| {
        m["id"] = json!(id);
        m
    };
    let metrics = vec![
        with_id(api_call("/api/cart", "GET", 200, 10.0), "m1-a"),
        with_id(api_call("/api/cart", "GET", 200, 10.0), "m1-b"),
        with_id(api_call("/api/cart", "GET", 500, 30.0), "m1-c"),
        with_id(metric("cart.items", 3.0, 0.0), "m1-d"),
        with_id(metric("cart.items", 3.0, 0.0), "m1-e"),
    ];
    let b = beacon("demo", "/", metrics);
    // The answer was lost (a proxy's 504): the agent sends the very same beacon again, and the
    // collector receives it at another time (another `seq`).
    c.post(&b, DESKTOP).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    c.post(&b, DESKTOP).await;
    c.wait_rows("api_calls", 6).await;
    c.wait_rows("metrics", 4).await;
    let body = c.read(&format!("/v1/api-calls?site=demo&{}", range())).await;
    let cart = body["rows"].as_array().expect("rows").iter().find(|r| r["group"] == "/api/cart").cloned().expect("cart");
    assert_eq!((cart["count"].as_u64(), cart["errors"].as_u64()), (Some(3), Some(1)), "{body}");
    let body = c.read(&format!("/v1/vitals?site=demo&metric=cart.items&{}", range())).await;
    assert_eq!(body["rows"][0]["count"].as_u64(), Some(2), "{body}");
    // And once final.
    c.finalize_at(time::Duration::hours(2)).await;
    let now = now_ms() as u64;
    let body = c.read(&format!("/v1/vitals?site=demo&metric=cart.items&from={}&to={}&source=rollup", now - 3_600_000, now + 120_000)).await;
    assert_eq!(body["rows"][0]["count"].as_u64(), Some(2), "{body}");
    c.running.stop().await;
}

/// `/healthz` answers from what the background probe keeps: a flood of health checks sends
/// ClickHouse no query, and a stopped server shows as down without a request waiting for it.
/// The details (error texts, paths) need a read key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_from_state_without_asking_clickhouse() {
    // A server of this test's own: its query counter counts this collector's queries only.
    let server = pulse_testkit::StoppableClickHouse::start("healthz");
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        clickhouse_url: server.server.url.clone(),
        clickhouse_database: server.server.fresh_database("healthz_state"),
        spool_dir: pulse_testkit::temp_dir("spool-healthz-state"),
        // No background work but the probe: no rows to ship, no finalizer run, no alerts.
        finalize_interval_seconds: 3_600,
        ip_read_rate_per_second: 1_000_000,
        ..Config::default()
    };
    let running = pulse_collector::start(config).await.expect("collector starts");
    let c = Collector { base: format!("http://{}", running.addr), db: String::new(), running };
    let queries = || server.server.count("SELECT value FROM system.events WHERE event = 'Query'");
    let started = Instant::now();
    while get(&format!("{}/healthz", c.base), &[]).await.json()["services"]["clickhouse"]["status"] != "up" {
        assert!(started.elapsed() < Duration::from_secs(10), "the probe never saw ClickHouse up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = queries();
    let checking = Instant::now();
    let mut healthy = 0;
    for _ in 0..200 {
        let r = get(&format!("{}/healthz", c.base), &[AUTH]).await;
        healthy += usize::from(r.json()["status"] == "healthy");
    }
    let (asked, took) = (queries() - before, checking.elapsed());
    println!("200 /healthz requests in {took:?}: {asked} ClickHouse queries meanwhile (the probe's, and this count's own)");
    assert_eq!(healthy, 200);
    // The checks themselves ask nothing (before: one query each, 200). The probe and the
    // collector's other background work ask on their own clocks, more on a loaded machine where
    // the checks take longer: a bound by count, not by time.
    assert!(asked < 100, "{asked} queries for 200 health checks in {took:?}");

    // Anonymous: statuses and numbers, no error texts, versions or paths.
    let anonymous = get(&format!("{}/healthz", c.base), &[]).await.json();
    assert_eq!(anonymous["services"]["clickhouse"].get("version"), None, "{anonymous}");
    assert!(anonymous["details"].as_str().is_some_and(|d| d.contains("read key")), "{anonymous}");

    // The server stops: the probe notices; health checks keep answering from the state.
    server.stop();
    let started = Instant::now();
    let health = loop {
        let health = get(&format!("{}/healthz", c.base), &[AUTH]).await.json();
        if health["services"]["clickhouse"]["status"] == "down" {
            break health;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the probe never saw ClickHouse down: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health["services"]["clickhouse"]["error"].is_string(), "with a read key, why: {health}");
    let anonymous = get(&format!("{}/healthz", c.base), &[]).await.json();
    assert_eq!((anonymous["status"].as_str(), anonymous["services"]["clickhouse"].get("error")), (Some("degraded"), None), "{anonymous}");
    c.running.stop().await;
}

/// The read limits reach ClickHouse with every query: a query over `read_max_memory_bytes` is
/// stopped by the server and answered 503 naming the setting, not held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_over_its_clickhouse_limit_is_refused_naming_the_setting() {
    let c = collector_with("read_limits", Config { read_max_memory_bytes: 1_000, ..Config::default() }).await;
    c.post(&beacon("demo", "/", vec![metric("LCP", 1000.0, 0.0)]), DESKTOP).await;
    c.wait_rows("metrics", 1).await;
    let r = get(&format!("{}/v1/vitals?site=demo&metric=LCP&{}", c.base, range()), &[AUTH]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["error"].as_str().is_some_and(|e| e.contains("read_max_memory_bytes")), "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("5"));
    c.running.stop().await;
}

/// A storm of comparisons and reports leaves ingest answering: their bootstraps run one at a time
/// (`read_compute_concurrency` 1) on a blocking thread, and requests that find the slot taken are
/// answered 503 with Retry-After. The beacons' latency meanwhile is printed, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compare_storm_leaves_ingest_answering() {
    let c = collector("compare_storm").await;
    // 10 000 page views per release: each comparison resamples 10 000 values 400 times a side.
    for (release, scale) in [("1.0", 1.0), ("1.1", 1.2)] {
        for chunk in 0..20 {
            let metrics: Vec<Value> =
                (0..500).map(|i| metric("LCP", scale * (1000.0 + f64::from((chunk * 500 + i) % 3000)), 60_000.0)).collect();
            let mut b = beacon("demo", "/", metrics);
            b["release"] = json!(release);
            b["page"] = json!(format!("{release}-{chunk}"));
            c.post(&b, DESKTOP).await;
        }
    }
    c.wait_rows("metrics", 20_000).await;
    let compare = format!("{}/v1/compare?site=demo&metric=LCP&a=release:1.0&b=release:1.1", c.base);
    let storm: Vec<_> = (0..6)
        .map(|_| {
            let compare = compare.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for _ in 0..4 {
                    let r = get(&compare, &[AUTH]).await;
                    answers.push((r.status, r.header("retry-after").map(str::to_owned)));
                }
                answers
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for i in 0..100 {
        let started = Instant::now();
        let r = post_beacon(&c.base, beacon("demo", &format!("/during-{i}"), vec![metric("FCP", 500.0, 0.0)]).to_string()).await;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.status, 202, "a beacon during the storm: {}", r.text());
    }
    let mut answers = Vec::new();
    for task in storm {
        answers.extend(task.await.expect("storm task"));
    }
    latencies.sort_by(f64::total_cmp);
    let busy = answers.iter().filter(|(s, _)| *s == 503).count();
    println!(
        "ingest during a storm of 24 comparisons (6 at a time): p50 {:.1} ms, p99 {:.1} ms; {} comparisons answered, {busy} busy",
        latencies[49],
        latencies[98],
        answers.len() - busy
    );
    for (status, retry_after) in &answers {
        assert!(*status == 200 || (*status == 503 && retry_after.as_deref() == Some("1")), "{answers:?}");
    }
    assert!(busy > 0 && busy < answers.len(), "one at a time: some busy, some answered: {answers:?}");
    c.running.stop().await;
}

/// Privacy by default (README, "Privacy"): e-mail addresses, JWTs and tokens in paths, query
/// strings of attribution URLs and what a site's own rule names never reach ClickHouse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_stored_scrubbed_with_the_sites_own_rules() {
    use pulse_collector::config::{ScrubRule, SiteConfig};
    let rule = ScrubRule { pattern: "^/team/[^/]+".into(), replacement: "/team/:user".into() };
    let c = collector_with("scrubbed", Config { sites: vec![SiteConfig { scrub: vec![rule], ..SiteConfig::dev() }], ..Config::default() })
        .await;
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    let url = format!(
        "https://shop.example/team/alice/u/bob@shop.example/verify/{jwt}/reset/Xk9aP2mQ7vL8nB3cR5tY1wZq?email=bob%40shop.example#t"
    );
    let mut lcp = metric("LCP", 2_000.0, 0.0);
    lcp["attribution"] = json!({
        "url": "https://cdn.example.com/u/bob%40shop.example/hero.jpg?X-Amz-Signature=0a1b2c&X-Amz-Credential=AKIAEXAMPLE",
        "target": "img.hero",
    });
    let api = api_call("https://api.example.com/v1/magic/Xk9_aP2mQ7vL-8nB3cR5tY1wZ/confirm?key=sk_live_1", "POST", 200, 10.0);
    let slug = metric("LCP", 1_000.0, 0.0);
    c.post(&beacon("demo", &url, vec![lcp, api]), DESKTOP).await;
    c.post(&beacon("demo", "/blog/how-to-measure-inp-in-2024-with-web-vitals", vec![slug]), DESKTOP).await;
    c.wait_rows("metrics", 2).await;
    c.wait_rows("api_calls", 1).await;

    let ch = clickhouse();
    let stored = ch.sql(&format!("SELECT url, attribution FROM {}.metrics ORDER BY value DESC FORMAT JSONEachRow", c.db));
    let rows: Vec<Value> = stored.lines().map(|l| serde_json::from_str(l).expect("a JSON row")).collect();
    assert_eq!(rows[0]["url"], "/team/:user/u/:email/verify/:token/reset/:token", "{stored}");
    let attribution: Value = serde_json::from_str(rows[0]["attribution"].as_str().expect("text")).expect("JSON");
    assert_eq!(attribution["url"], "https://cdn.example.com/u/:email/hero.jpg", "{stored}");
    assert_eq!(attribution["target"], "img.hero", "{stored}");
    assert_eq!(rows[1]["url"], "/blog/how-to-measure-inp-in-2024-with-web-vitals", "a slug stays");
    let calls = ch.sql(&format!("SELECT route, url FROM {}.api_calls FORMAT TSV", c.db));
    assert_eq!(calls.trim(), "api.example.com/v1/magic/:token/confirm\t/team/:user/u/:email/verify/:token/reset/:token");
    // Nothing of the secrets anywhere in the rows, whatever the column.
    for table in ["metrics", "api_calls"] {
        let all = ch.sql(&format!("SELECT * FROM {}.{table} FORMAT TSV", c.db));
        for secret in ["bob", "alice", "eyJ", "Xk9", "Amz", "sk_live", "key="] {
            assert!(!all.contains(secret), "{table} holds {secret:?}: {all}");
        }
    }
    // The rollups are built from the raw rows: scrubbed as well.
    c.finalize().await;
    let finals = ch.sql(&format!("SELECT DISTINCT url FROM {}.metrics_final ORDER BY url FORMAT TSV", c.db));
    assert_eq!(finals, "/blog/how-to-measure-inp-in-2024-with-web-vitals\n/team/:user/u/:email/verify/:token/reset/:token\n");

    let metrics = get(&format!("{}/metrics", c.base), &[]).await.text();
    for (kind, n) in [("email", 2), ("jwt", 1), ("token", 2), ("query", 1), ("rule", 1)] {
        let line = format!("pulse_values_scrubbed_total{{kind=\"{kind}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
    c.running.stop().await;
}

/// `/v1/attribution` on known attributions: page views per culprit, their p75 and shares exactly
/// as computed here from the values sent; each page view counted once with its last report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribution_counts_the_culprits_of_each_vital() {
    let c = collector("attribution").await;
    let scripts = [
        ("http://localhost:3000/app.js", "onCheckout", "first"),
        ("https://cdn.widgets.example/widget.js", "track", "third"),
        ("http://localhost:3000/vendor.js", "", "first"),
    ];
    // 40 INP page views: 20 with script 0, 13 with script 1, 5 with script 2, 2 without long
    // animation frames (no script keys). INP 48 + 16·i ms, its subparts a fifth, two fifths and
    // the rest; every third from the keyboard.
    struct Inp {
        value: f64,
        script: Option<usize>,
        intersecting: f64,
        target: String,
        keyboard: bool,
    }
    let inp: Vec<Inp> = (0..40)
        .map(|i| Inp {
            value: 48.0 + 16.0 * f64::from(i),
            script: match i % 8 {
                0..=3 => Some(0),
                4 | 5 => Some(1),
                6 => Some(if i < 40 - 8 * 3 { 2 } else { 1 }),
                _ => {
                    if i < 24 {
                        Some(2)
                    } else {
                        None
                    }
                }
            },
            intersecting: 10.0 + f64::from(i % 7),
            target: format!("button#b{}", i % 3),
            keyboard: i % 3 == 0,
        })
        .collect();
    let mut metrics = Vec::new();
    for (i, page_view) in inp.iter().enumerate() {
        let value = page_view.value;
        let mut attribution = json!({
            "interactionTarget": page_view.target, "interactionType": if page_view.keyboard { "keyboard" } else { "pointer" },
            "inputDelay": value / 5.0, "processingDuration": value * 2.0 / 5.0, "presentationDelay": value * 2.0 / 5.0,
        });
        if let Some(s) = page_view.script {
            attribution["longestScriptURL"] = json!(scripts[s].0);
            attribution["longestScriptFunction"] = json!(scripts[s].1);
            attribution["longestScriptIntersectingDuration"] = json!(page_view.intersecting);
        }
        // The first page view was reported earlier with another script and a smaller value:
        // only its last report counts.
        if i == 0 {
            let mut early = attribution.clone();
            early["longestScriptURL"] = json!(scripts[1].0);
            metrics.push(json!({"name": "INP", "value": 8.0, "id": "inp-0", "n": 1, "at": now_ms() - 2_000.0, "attribution": early}));
        }
        metrics.push(
            json!({"name": "INP", "value": value, "id": format!("inp-{i}"), "n": 2, "at": now_ms() - 1_000.0, "attribution": attribution}),
        );
    }
    // 9 LCP page views: 8 images from two origins, one text; subparts known.
    let lcp: Vec<(f64, [f64; 4], &str)> = (0..9)
        .map(|i| {
            let f = f64::from(i);
            let parts = [100.0 + 10.0 * f, 50.0 * f, 400.0 + 30.0 * f, 200.0 + 5.0 * (8.0 - f)];
            let origin = match i {
                0..=4 => "https://img.cdn.example",
                5..=7 => "http://localhost:3000",
                _ => "",
            };
            (parts.iter().sum(), parts, origin)
        })
        .collect();
    for (i, (value, parts, origin)) in lcp.iter().enumerate() {
        let url = if origin.is_empty() { Value::Null } else { json!(format!("{origin}/hero-{i}.jpg?sig=secret")) };
        let mut attribution = json!({
            "target": if origin.is_empty() { "h1.title" } else { "img.hero" },
            "timeToFirstByte": parts[0], "resourceLoadDelay": parts[1], "resourceLoadDuration": parts[2], "elementRenderDelay": parts[3],
        });
        if !url.is_null() {
            attribution["url"] = url;
        }
        metrics
            .push(json!({"name": "LCP", "value": value, "id": format!("lcp-{i}"), "at": now_ms() - 1_000.0, "attribution": attribution}));
    }
    // CLS: 6 page views, the largest shift in two places.
    for i in 0..6 {
        let target = if i < 4 { "div.banner" } else { "footer" };
        let attribution = json!({"largestShiftTarget": target, "largestShiftValue": 0.05});
        metrics.push(json!({"name": "CLS", "value": 0.05 * f64::from(i), "id": format!("cls-{i}"), "at": now_ms() - 1_000.0, "attribution": attribution}));
    }
    let sent = metrics.len() as u64;
    for chunk in metrics.chunks(40) {
        c.post(&beacon("demo", "/checkout", chunk.to_vec()), DESKTOP).await;
    }
    c.wait_rows("metrics", sent).await;
    let range = range();

    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let poor_total = inp.iter().filter(|p| p.value > 500.0).count() as f64;
    let script_rows = |limit: usize| -> Vec<Value> {
        let mut groups: Vec<(usize, Vec<&Inp>)> = (0..3).map(|s| (s, inp.iter().filter(|p| p.script == Some(s)).collect())).collect();
        groups.sort_by_key(|g| std::cmp::Reverse(g.1.len()));
        let row = |url: Value, function: Value, party: Value, views: &[&Inp]| {
            let p75 = exact_percentile(&sorted(views.iter().map(|p| p.value).collect()), 75.0);
            let intersecting = exact_percentile(&sorted(views.iter().map(|p| p.intersecting).collect()), 75.0);
            let poor = views.iter().filter(|p| p.value > 500.0).count() as f64;
            json!({"url": url, "function": function, "party": party, "page_views": views.len(), "p75": p75,
                   "intersecting_p75": intersecting, "poor_share": poor / poor_total})
        };
        let mut rows: Vec<Value> =
            groups.iter().take(limit).map(|(s, v)| row(json!(scripts[*s].0), json!(scripts[*s].1), json!(scripts[*s].2), v)).collect();
        let rest: Vec<&Inp> = groups.iter().skip(limit).flat_map(|(_, v)| v.iter().copied()).collect();
        if !rest.is_empty() {
            rows.push(row(json!("(other)"), Value::Null, Value::Null, &rest));
        }
        rows
    };
    for limit in [10, 2] {
        let body = c.read(&format!("/v1/attribution?site=demo&metric=INP&by=script&limit={limit}&{range}")).await;
        assert_eq!(body["rows"], json!(script_rows(limit)), "limit {limit}: {body}");
        let unattributed = inp.iter().filter(|p| p.script.is_none()).count() as u64;
        assert_eq!((body["page_views"].as_u64(), body["unattributed_page_views"].as_u64()), (Some(40), Some(unattributed)), "{body}");
    }
    // Where one script strikes: the pages of the page views it was the longest script of (shares
    // of the answer's own page views: here one page has all of them).
    let third: Vec<f64> = sorted(inp.iter().filter(|p| p.script == Some(1)).map(|p| p.value).collect());
    let body = c.read(&format!("/v1/attribution?site=demo&metric=INP&by=url&script={}&{range}", scripts[1].0)).await;
    assert_eq!(
        body["rows"],
        json!([{"url": "/checkout", "page_views": third.len(), "p75": exact_percentile(&third, 75.0),
        "poor_share": 1.0}]),
        "{body}"
    );
    // Subparts: p75 of each, and its share of all INP.
    let body = c.read(&format!("/v1/attribution?site=demo&metric=INP&by=subpart&{range}")).await;
    let total: f64 = inp.iter().map(|p| p.value).sum();
    type Part = fn(f64) -> f64;
    let subparts: [(&str, Part); 3] =
        [("input_delay", |v| v / 5.0), ("processing_duration", |v| v * 2.0 / 5.0), ("presentation_delay", |v| v * 2.0 / 5.0)];
    for (row, (name, part)) in body["rows"].as_array().expect("rows").iter().zip(subparts) {
        let parts: Vec<f64> = inp.iter().map(|p| part(p.value)).collect();
        assert_eq!(row["subpart"], name, "{body}");
        assert_eq!(row["p75"].as_f64(), Some(exact_percentile(&sorted(parts.clone()), 75.0)), "{body}");
        let share = row["share"].as_f64().expect("share");
        assert!((share - parts.iter().sum::<f64>() / total).abs() < 1e-9, "{body}");
    }
    let body = c.read(&format!("/v1/attribution?site=demo&metric=INP&by=type&{range}")).await;
    let keyboard = inp.iter().filter(|p| p.keyboard).count();
    let counts: Vec<(String, u64)> = body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["type"].as_str().unwrap_or("").to_owned(), r["page_views"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(counts, vec![("pointer".to_owned(), (40 - keyboard) as u64), ("keyboard".to_owned(), keyboard as u64)], "{body}");
    let body = c.read(&format!("/v1/attribution?site=demo&metric=INP&by=target&limit=1&{range}")).await;
    assert_eq!(body["rows"][0]["target"], "button#b0", "{body}");
    assert_eq!(body["rows"][1]["target"], "(other)", "{body}");
    assert_eq!(body["rows"][1]["page_views"], 26, "{body}");

    // LCP: the breakdown of the page view at the p75, and each subpart's p75.
    let body = c.read(&format!("/v1/attribution?site=demo&metric=LCP&{range}")).await;
    assert_eq!(body["by"], "subpart");
    let mut by_value = lcp.clone();
    by_value.sort_by(|a, b| a.0.total_cmp(&b.0));
    let at_p75 = &by_value[(0.75 * 9.0f64).floor() as usize];
    assert_eq!(body["p75"].as_f64(), Some(at_p75.0), "{body}");
    for (i, row) in body["rows"].as_array().expect("rows").iter().enumerate() {
        assert_eq!(row["at_p75"].as_f64(), Some(at_p75.1[i]), "{body}");
        assert_eq!(row["p75"].as_f64(), Some(exact_percentile(&sorted(lcp.iter().map(|l| l.1[i]).collect()), 75.0)), "{body}");
    }
    let body = c.read(&format!("/v1/attribution?site=demo&metric=LCP&by=resource_origin&{range}")).await;
    let origins: Vec<(String, u64)> = body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["resource_origin"].as_str().unwrap_or("?").to_owned(), r["page_views"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(origins, vec![("https://img.cdn.example".into(), 5), ("http://localhost:3000".into(), 3), (String::new(), 1)], "{body}");
    let body = c.read(&format!("/v1/attribution?site=demo&metric=CLS&{range}")).await;
    assert_eq!(body["rows"][0]["target"], "div.banner", "{body}");
    assert_eq!(body["rows"][0]["page_views"], 4, "{body}");
    assert_eq!(body["rows"][0]["p75"].as_f64(), Some(exact_percentile(&[0.0, 0.05, 0.1, 0.15000000000000002], 75.0)), "{body}");

    // Bad parameters are named.
    for (query, field) in [
        ("metric=FCP", "metric"),
        ("metric=INP&by=element", "by"),
        ("metric=INP&limit=101", "limit"),
        ("metric=INP&group_by=url", "query"),
        ("metric=LCP&script=x", "script"),
    ] {
        let r = get(&format!("{}/v1/attribution?site=demo&{query}", c.base), &[AUTH]).await;
        assert_eq!((r.status, r.json()["field"].as_str().map(str::to_owned)), (400, Some(field.to_owned())), "{query}");
    }
    c.running.stop().await;
}
