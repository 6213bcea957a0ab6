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
