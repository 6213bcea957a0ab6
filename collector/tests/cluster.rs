//! A ClickHouse cluster on real parts: two 18.16 servers on loopback as a two-shard cluster, two
//! collectors on it (each talking to a different server), beacons split between them — the first
//! report of every page view through one collector, its re-report through the other.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pulse_collector::config::Config;
use pulse_collector::storage::finalize::Outcome;
use pulse_collector::Running;
use pulse_testkit::http::{get, send};
use pulse_testkit::{exact_percentile, now_ms, re_reported_cls, StoppableClickHouse};
use serde_json::Value;

const AUTH: (&str, &str) = ("authorization", "Bearer dev-read-key");

async fn post(running: &Running, body: &Value) {
    let r = send(
        "POST",
        &format!("http://{}/v1/beacon", running.addr),
        &[("content-type", "text/plain;charset=UTF-8"), ("origin", "http://localhost:3000")],
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
}

async fn read(running: &Running, path: &str) -> Value {
    let r = get(&format!("http://{}{path}", running.addr), &[AUTH]).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

fn counts(body: &Value) -> Vec<u64> {
    body["rows"].as_array().expect("rows").iter().map(|r| r["count"].as_u64().expect("count")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_on_a_two_shard_cluster_count_each_page_view_once() {
    let servers = StoppableClickHouse::cluster("cluster", "pulse_test");
    let urls: Vec<String> = servers.iter().map(|s| s.server.url.clone()).collect();
    let config = |url: &str, name: &str| Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        clickhouse_url: url.to_owned(),
        clickhouse_database: "pulse".into(),
        clickhouse_cluster: Some("pulse_test".into()),
        clickhouse_shards: urls.clone(),
        flush_interval_ms: 100,
        ip_rate_per_second: 10_000,
        ip_metrics_per_second: 1_000_000_000,
        ip_bytes_per_second: 1_000_000_000_000,
        spool_dir: pulse_testkit::temp_dir(&format!("spool-cluster-{name}")),
        ..Config::default()
    };
    // One after the other: the second finds the schema in place.
    let a = pulse_collector::start(config(&urls[0], "a")).await.expect("collector a starts");
    let b = pulse_collector::start(config(&urls[1], "b")).await.expect("collector b starts");

    let (finals, beacons) = re_reported_cls(200);
    let (first_reports, final_reports) = beacons.split_at(beacons.len() / 2);
    for beacon in first_reports {
        post(&a, beacon).await;
    }
    for beacon in final_reports {
        post(&b, beacon).await;
    }
    let started = Instant::now();
    // The rows, and their copy in time order (written by a view after them).
    while servers[0].server.count("SELECT least((SELECT count() FROM pulse.metrics), (SELECT count() FROM pulse.metrics_recent))") < 400 {
        assert!(started.elapsed() < Duration::from_secs(20), "rows did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The rows are spread over both shards, every report of a page view on one of them.
    let local: Vec<u64> = servers.iter().map(|s| s.server.count("SELECT count() FROM pulse_local.metrics")).collect();
    assert!(local.iter().all(|n| *n > 0) && local.iter().sum::<u64>() == 400, "rows per shard: {local:?}");
    let pages: Vec<std::collections::BTreeSet<String>> = servers
        .iter()
        .map(|s| s.server.sql("SELECT DISTINCT page FROM pulse_local.metrics").lines().map(str::to_owned).collect())
        .collect();
    assert!(pages[0].is_disjoint(&pages[1]), "a page view's reports split over shards");

    let exact = {
        let mut v = finals.clone();
        v.sort_by(f64::total_cmp);
        v
    };
    let now = now_ms() as u64;
    let day = format!("from={}&to={}", now - 86_400_000, now + 60_000);
    let month = format!("from={}&to={}", now - 30 * 86_400_000, now + 3_600_000);
    // Exact answers from either collector, before and after the hours are final.
    for finalized in [false, true] {
        if finalized {
            let later = time::OffsetDateTime::now_utc() + time::Duration::hours(2);
            let mut done = false;
            for (running, at) in
                [(&a, later), (&b, later), (&a, later + time::Duration::minutes(2)), (&b, later + time::Duration::minutes(2))]
            {
                if let Outcome::Finalized { .. } = running.app.finalizer.run(&running.app, at).await.expect("finalizer runs") {
                    done = true;
                    break;
                }
            }
            assert!(done, "one of the collectors finalizes");
            let per_shard: Vec<u64> =
                servers.iter().map(|s| s.server.count("SELECT count() FROM pulse_local.metrics_final WHERE name = 'CLS'")).collect();
            assert!(per_shard.iter().all(|n| *n > 0) && per_shard.iter().sum::<u64>() == 200, "final rows per shard: {per_shard:?}");
            for running in [&a, &b] {
                running.app.finalizer.refresh(&running.app).await.expect("progress read");
            }
        }
        for running in [&a, &b] {
            let body = read(running, &format!("/v1/vitals?site=demo&metric=CLS&{day}&source=raw")).await;
            assert_eq!(counts(&body), vec![200], "{body}");
            for p in [50.0, 75.0, 95.0] {
                assert_eq!(body["rows"][0][format!("p{p}")].as_f64(), Some(exact_percentile(&exact, p)), "p{p}: {body}");
            }
            let body = read(running, &format!("/v1/vitals?site=demo&metric=CLS&{day}&source=raw&group_by=url")).await;
            assert_eq!(counts(&body), vec![100, 100], "{body}");
            // Rollups merged through the Distributed tables: counts exact, p75 within t-digest error.
            for (query, source) in [
                (format!("/v1/vitals?site=demo&metric=CLS&{month}"), "rollup_site"),
                (format!("/v1/vitals?site=demo&metric=CLS&{month}&group_by=url"), "rollup_page"),
            ] {
                let body = read(running, &query).await;
                assert_eq!(body["source"], source);
                assert_eq!(counts(&body).iter().sum::<u64>(), 200, "{body}");
            }
            let body = read(running, &format!("/v1/vitals?site=demo&metric=CLS&{month}")).await;
            let p75 = body["rows"][0]["p75"].as_f64().expect("p75");
            let rank = exact.partition_point(|v| *v < p75);
            assert!(rank.abs_diff(150) <= 200 / 33, "rollup p75 {p75} at rank {rank} of 200");
            let body = read(running, &format!("/v1/vitals/series?site=demo&metric=CLS&interval=1h&{month}&source=rollup")).await;
            let total: u64 = body["points"].as_array().expect("points").iter().map(|p| p["count"].as_u64().expect("count")).sum();
            assert_eq!(total, 200, "{body}");
            // Before: exact, from the raw rows. After: each shard finalized its part of the hour,
            // so the hour is merged from the histograms (percentiles per shard do not combine).
            assert_eq!(body["estimate"], if finalized { "histogram" } else { "exact" }, "{body}");
        }
    }

    // API calls through the Distributed table (which migration 11's `seq` column reached), each
    // counted once after its batch was stored twice on its shard (a distributed insert retried whole).
    for page in 0..20 {
        let calls: Vec<Value> = (0..3).map(|i| pulse_testkit::api_call("/api/cart", "GET", 200, f64::from(i))).collect();
        let mut beacon = pulse_testkit::beacon("demo", "/", calls);
        beacon["page"] = format!("api-{page}").into();
        post(if page % 2 == 0 { &a } else { &b }, &beacon).await;
    }
    let started = Instant::now();
    while servers[0].server.count("SELECT count() FROM pulse.api_calls") < 60 {
        assert!(started.elapsed() < Duration::from_secs(20), "API calls did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in &servers {
        s.server.sql("INSERT INTO pulse_local.api_calls SELECT * FROM pulse_local.api_calls");
    }
    assert_eq!(servers[1].server.count("SELECT count() FROM pulse.api_calls"), 120);
    for running in [&a, &b] {
        let body = read(running, &format!("/v1/api-calls?site=demo&{day}")).await;
        assert_eq!(counts(&body), vec![60], "{body}");
    }
    b.stop().await;
    a.stop().await;
}

/// `/healthz` of a collector, without a read key.
async fn health(running: &Running) -> Value {
    get(&format!("http://{}/healthz", running.addr), &[]).await.json()
}

/// Polls `/healthz` until `done` holds, for 30 s at most (the probe runs every 2 s).
async fn health_until(running: &Running, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let body = health(running).await;
        if done(&body) {
            return body;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{what}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One shard of two stopped and started again: ingest keeps accepting (rows for the missing shard
/// wait in the spool), `/healthz` says `degraded` naming the shard, reads refuse with a 503 that
/// names it unless `allow_partial=1` (then they answer from the live shard and say so, and the
/// dashboard shows a banner), and once the shard is back every answer is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_shard_away_reads_name_it_or_answer_partially_and_nothing_is_lost() {
    let servers = StoppableClickHouse::cluster("away", "pulse_away");
    let urls: Vec<String> = servers.iter().map(|s| s.server.url.clone()).collect();
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        clickhouse_url: urls[0].clone(),
        clickhouse_database: "pulse".into(),
        clickhouse_cluster: Some("pulse_away".into()),
        clickhouse_shards: urls.clone(),
        flush_interval_ms: 100,
        ip_rate_per_second: 10_000,
        ip_read_rate_per_second: 1_000_000,
        www_dir: repo.join("www"),
        spool_dir: pulse_testkit::temp_dir("spool-cluster-away"),
        ..Config::default()
    };
    let running = pulse_collector::start(config).await.expect("collector starts");
    let page_views = |from: u32, to: u32| -> Vec<Value> {
        (from..to)
            .map(|i| {
                let mut b = pulse_testkit::beacon("demo", "/", vec![pulse_testkit::metric("LCP", 1000.0 + f64::from(i), 1000.0)]);
                b["page"] = format!("away-{i}").into();
                b
            })
            .collect()
    };
    for beacon in page_views(0, 100) {
        post(&running, &beacon).await;
    }
    let started = Instant::now();
    while servers[0].server.count("SELECT count() FROM pulse.metrics") < 100 {
        assert!(started.elapsed() < Duration::from_secs(20), "rows did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on_first = servers[0].server.count("SELECT count() FROM pulse_local.metrics");
    assert!(on_first > 0 && on_first < 100, "rows on shard 1: {on_first} of 100");
    let body = health_until(&running, "every shard up", |h| h["status"] == "healthy").await;
    assert_eq!(body["services"]["clickhouse"]["shards"], serde_json::json!([{"shard": 1, "status": "up"}, {"shard": 2, "status": "up"}]));

    let now = now_ms() as u64;
    let day = format!("from={}&to={}", now - 86_400_000, now + 3_600_000);
    let vitals = format!("/v1/vitals?site=demo&metric=LCP&group_by=none&source=raw&{day}");
    let total = |body: &Value| counts(body).iter().sum::<u64>();
    let complete = read(&running, &format!("{vitals}&allow_partial=1")).await;
    assert_eq!((total(&complete), &complete["partial"], &complete["missing_shards"]), (100, &Value::Bool(false), &serde_json::json!([])));

    servers[1].stop();
    // At once (before or after the probe noticed, the answer is the same): a 503 naming shard 2.
    for _ in 0..2 {
        let refused = get(&format!("http://{}{vitals}", running.addr), &[AUTH]).await;
        assert_eq!(refused.status, 503, "{}", refused.text());
        let error = refused.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains("shard 2 of 2") && error.contains(&urls[1]) && error.contains("allow_partial=1"), "{error}");
        for (other, path) in
            [("series", "/v1/vitals/series?site=demo&metric=LCP&interval=1h&source=raw"), ("api", "/v1/api-calls?site=demo")]
        {
            let refused = get(&format!("http://{}{path}&{day}", running.addr), &[AUTH]).await;
            assert_eq!(refused.status, 503, "{other}: {}", refused.text());
            assert!(refused.text().contains("shard 2 of 2"), "{other}: {}", refused.text());
        }
    }
    let body = health_until(&running, "shard 2 seen away", |h| h["services"]["clickhouse"]["shards"][1]["status"] == "down").await;
    assert_eq!(body["status"], "degraded", "{body}");
    assert!(body["reasons"].as_array().is_some_and(|r| r.iter().any(|r| r.as_str().is_some_and(|r| r.contains("shard 2 of 2")))), "{body}");
    assert_eq!(body["services"]["clickhouse"]["shards"][1].get("url"), None, "shard URLs need a read key: {body}");
    let detailed = get(&format!("http://{}/healthz", running.addr), &[AUTH]).await.json();
    assert_eq!(detailed["services"]["clickhouse"]["shards"][1]["url"], urls[1].as_str(), "{detailed}");
    assert!(detailed["services"]["clickhouse"]["shards"][1]["error"].is_string(), "{detailed}");
    // Without a read key nothing is named: the usual 401.
    let anonymous = get(&format!("http://{}{vitals}", running.addr), &[]).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());

    // Partial answers when asked: shard 1's rows, said to be partial.
    let partial = read(&running, &format!("{vitals}&allow_partial=1")).await;
    assert_eq!(total(&partial), on_first, "{partial}");
    assert_eq!(partial["partial"], true, "{partial}");
    assert_eq!(partial["missing_shards"][0]["shard"], 2, "{partial}");
    assert_eq!(partial["missing_shards"][0]["url"], urls[1].as_str(), "{partial}");
    let csv = get(&format!("http://{}{vitals}&allow_partial=1&format=csv", running.addr), &[AUTH]).await;
    assert_eq!((csv.status, csv.header("pulse-missing-shards")), (200, Some("2")), "{}", csv.text());
    let bad = get(&format!("http://{}{vitals}&allow_partial=maybe", running.addr), &[AUTH]).await;
    assert_eq!((bad.status, bad.json()["field"].clone()), (400, Value::from("allow_partial")));

    // Ingest goes on: 202 for every beacon, the missing shard's rows waiting in the spool.
    for beacon in page_views(100, 150) {
        post(&running, &beacon).await;
    }

    // The dashboard says its figures are partial.
    let browser = pulse_testkit::browser::chromium().await;
    browser.client.goto(&format!("http://{}/dashboard.html", running.addr)).await.expect("open the dashboard");
    browser.wait_for("return document.body.dataset.loaded === 'true'").await;
    let banner = browser.js("const b = document.getElementById('partial'); return b.hidden ? '' : b.textContent").await;
    assert!(banner.as_str().is_some_and(|b| b.contains("shard 2")), "the dashboard's banner: {banner}");
    browser.close().await;

    servers[1].resume();
    health_until(&running, "shard 2 back and the spool drained", |h| h["status"] == "healthy" && h["spool"]["rows"] == 0).await;
    let started = Instant::now();
    loop {
        let body = read(&running, &format!("{vitals}&allow_partial=1")).await;
        if total(&body) == 150 {
            assert_eq!((&body["partial"], &body["missing_shards"]), (&Value::Bool(false), &serde_json::json!([])), "{body}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not complete after the shard came back: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(total(&read(&running, &vitals).await), 150);
    running.stop().await;
}
