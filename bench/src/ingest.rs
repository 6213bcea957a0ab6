//! Ingest throughput: realistic beacons (10–50 metrics) fired at the collector binary on loopback
//! from 16 keep-alive connections, ClickHouse on the same machine; with 1 and 2 collector worker
//! threads, the disk spool synced before each 202 (the product) and, as the baseline of what
//! durability costs, the same spool without fsync. Beside it: the same number of rows inserted
//! straight into ClickHouse with the `clickhouse` crate's RowBinary insert from one client — the
//! storage's own limit here. Then an overload: 64 unpaced connections against a small spool.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pulse_collector::config::Config;
use pulse_collector::storage::rows::MetricRow;
use pulse_testkit::{clickhouse, free_port, now_ms};
use serde_json::{json, Value};

use crate::repo;
use crate::report::{median, percentile, Report};

pub const SECTION: &str = "3. ingest throughput (loopback, ClickHouse on the same machine)";
const CONNECTIONS: usize = 16;

/// `count` beacons of realistic shape: 10–50 metrics each, vitals with attribution, API calls with
/// Server-Timing, custom metrics with tags, over 20 pages.
pub fn beacons(count: usize) -> Vec<(Bytes, u64)> {
    let vitals = [("LCP", 2400.0), ("FCP", 1200.0), ("CLS", 0.08), ("INP", 180.0), ("TTFB", 600.0), ("FID", 20.0)];
    (0..count)
        .map(|i| {
            let n = 10 + (i * 7919) % 41;
            let now = now_ms();
            let metrics: Vec<Value> = (0..n)
                .map(|k| {
                    let jitter = ((i * 31 + k * 17) % 100) as f64 / 50.0;
                    match k % 5 {
                        0 | 1 => {
                            let (name, base) = vitals[(i + k) % vitals.len()];
                            json!({"name": name, "value": base * jitter, "at": now - 1000.0, "rating": "good", "delta": base * jitter,
                                   "id": format!("v1-{i}-{k}"), "attribution": {"element": "main>div.hero>img", "url": "https://cdn.example/hero.jpg", "timeToFirstByte": 210.5}})
                        }
                        2 | 3 => json!({"name": "api", "value": 80.0 * jitter + 5.0, "at": now - 500.0, "route": format!("/api/items/{}", k % 9), "method": "GET",
                                        "status": if k % 23 == 0 { 500 } else { 200 }, "ok": k % 23 != 0, "server_timing": [{"name": "db", "dur": 12.5}]}),
                        _ => json!({"name": "checkout.step", "value": jitter * 10.0, "at": now, "tags": {"plan": "pro", "step": format!("s{}", k % 4)}}),
                    }
                })
                .collect();
            let body = json!({"v": 1, "site": "demo", "session": format!("s-{}", i % 500), "page": format!("p-{i}"), "url": format!("/shop/category/{}", i % 20),
                              "nav": "navigate", "release": "1.2.3", "viewport": {"w": 1280, "h": 800}, "dpr": 2.0, "sent_at": now, "metrics": metrics});
            (Bytes::from(body.to_string()), n as u64)
        })
        .collect()
}

struct Collector {
    child: Child,
    base: String,
    spool: std::path::PathBuf,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}

impl Collector {
    /// Spool bytes per waiting row, from `/healthz`, when rows are waiting.
    async fn spool_bytes_per_row(&self) -> Option<f64> {
        let health = pulse_testkit::http::try_send("GET", &format!("{}/healthz", self.base), &[], "").await.ok()?.json();
        let (bytes, rows) = (health["spool"]["bytes"].as_f64()?, health["spool"]["rows"].as_f64()?);
        (rows > 0.0).then(|| bytes / rows)
    }

    /// Peak resident memory (VmHWM) of the collector process, MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

/// How the collector under test keeps what it accepted.
#[derive(Clone, Copy)]
struct Mode {
    threads: usize,
    fsync: bool,
    spool_max_bytes: u64,
}

async fn spawn_collector(db: &str, mode: Mode) -> Collector {
    let bin = repo().join("target/perf/pulse-collector");
    assert!(bin.exists(), "{} is missing: make bench builds it (cargo build --profile perf -p pulse-collector)", bin.display());
    let port = free_port();
    let spool = pulse_testkit::temp_dir("bench-spool");
    let threads = mode.threads;
    let child = Command::new(&bin)
        .env("PULSE_SPOOL_DIR", &spool)
        .env("PULSE_SPOOL_FSYNC", mode.fsync.to_string())
        .env("PULSE_SPOOL_MAX_BYTES", mode.spool_max_bytes.to_string())
        .env("PULSE_LISTEN", format!("127.0.0.1:{port}"))
        .env("PULSE_CLICKHOUSE_URL", &clickhouse().url)
        .env("PULSE_CLICKHOUSE_DATABASE", db)
        .env("PULSE_IP_RATE_PER_SECOND", "1000000")
        .env("PULSE_IP_READ_RATE_PER_SECOND", "1000000")
        .env("PULSE_IP_METRICS_PER_SECOND", "1000000000")
        .env("PULSE_IP_BYTES_PER_SECOND", "1000000000000")
        .env("PULSE_SITE_RATE_PER_SECOND", "1000000")
        .env("PULSE_LOG", "warn")
        .env("TOKIO_WORKER_THREADS", threads.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the collector");
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Collector { child, base, spool }
}

struct Load {
    accepted: u64,
    refused: u64,
    /// 503 answers that carried `Retry-After`.
    retry_after: u64,
    latencies_ms: Vec<f64>,
    seconds: f64,
}

async fn fire(base: &str, bodies: Arc<Vec<(Bytes, u64)>>, seconds: f64, connections: usize) -> Load {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(connections).build_http();
    let accepted = Arc::new(AtomicU64::new(0));
    let retry_after = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let uri: hyper::Uri = format!("{base}/v1/beacon").parse().expect("uri");
    let tasks: Vec<_> = (0..connections)
        .map(|t| {
            let (client, bodies, accepted, refused, latencies, uri, retry_after) =
                (client.clone(), bodies.clone(), accepted.clone(), refused.clone(), latencies.clone(), uri.clone(), retry_after.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut i = t;
                while Instant::now() < deadline {
                    let (body, _) = &bodies[i % bodies.len()];
                    i += connections;
                    let request = hyper::Request::post(uri.clone())
                        .header("content-type", "text/plain;charset=UTF-8")
                        .header("origin", "http://localhost:3000")
                        .header(
                            "user-agent",
                            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36",
                        )
                        .body(Full::new(body.clone()))
                        .expect("request");
                    let sent = Instant::now();
                    let Ok(response) = client.request(request).await else {
                        refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let status = response.status();
                    if status.as_u16() == 503 && response.headers().contains_key("retry-after") {
                        retry_after.fetch_add(1, Ordering::Relaxed);
                    }
                    let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    mine.push(sent.elapsed().as_secs_f64() * 1000.0);
                    if status.as_u16() == 202 {
                        let n = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| v["accepted"].as_u64()).unwrap_or(0);
                        accepted.fetch_add(n, Ordering::Relaxed);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies.lock().map(|mut l| l.extend(mine)).ok();
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies_ms = std::mem::take(&mut *latencies.lock().expect("latencies"));
    latencies_ms.sort_by(f64::total_cmp);
    Load {
        accepted: accepted.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        retry_after: retry_after.load(Ordering::Relaxed),
        latencies_ms,
        seconds,
    }
}

fn stored(db: &str) -> u64 {
    let ch = clickhouse();
    ch.count(&format!("SELECT count() FROM {db}.metrics")) + ch.count(&format!("SELECT count() FROM {db}.api_calls"))
}

pub async fn run(report: &mut Report, quick: bool) {
    // Three repetitions of 8 s per setting (medians reported); `--quick`: one of 3 s.
    let (repeats, seconds) = if quick { (1, 3.0) } else { (3, 8.0) };
    let bodies = Arc::new(beacons(2_000));
    let mut last_accepted = 0;
    let spool = 1 << 30;
    let modes = [
        ("1 worker thread", Mode { threads: 1, fsync: true, spool_max_bytes: spool }),
        ("2 worker threads", Mode { threads: 2, fsync: true, spool_max_bytes: spool }),
        ("2 worker threads, spool without fsync", Mode { threads: 2, fsync: false, spool_max_bytes: spool }),
    ];
    for (label, mode) in modes {
        let (mut stored_rate, mut accept_rate, mut p50, mut p99, mut rss, mut bytes_per_metric) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut lost, mut refused) = (0i64, 0u64);
        for repeat in 0..repeats {
            let db = clickhouse().fresh_database(&format!("bench_ingest_{}_{}_{repeat}", mode.threads, mode.fsync));
            let collector = spawn_collector(&db, mode).await;
            // Warm up (schema ready, connections open), then measure.
            let _ = fire(&collector.base, bodies.clone(), 0.5, CONNECTIONS).await;
            let before = wait_stored(&db, 0, Duration::from_secs(30)).await;
            let load = fire(&collector.base, bodies.clone(), seconds, CONNECTIONS).await;
            if let Some(b) = collector.spool_bytes_per_row().await {
                bytes_per_metric.push(b);
            }
            let expected = before + load.accepted;
            let started = Instant::now();
            let after = wait_stored(&db, expected, Duration::from_secs(120)).await;
            let drain = started.elapsed().as_secs_f64();
            stored_rate.push(load.accepted as f64 / (load.seconds + drain));
            accept_rate.push(load.accepted as f64 / load.seconds);
            p50.push(percentile(&load.latencies_ms, 0.5));
            p99.push(percentile(&load.latencies_ms, 0.99));
            rss.push(collector.peak_rss_mib());
            lost += after as i64 - expected as i64;
            refused += load.refused;
            last_accepted = load.accepted;
            drop(collector);
            let _ = clickhouse().sql(&format!("DROP DATABASE IF EXISTS {db}"));
        }
        let runs = if repeats > 1 { format!(" (median of {repeats})") } else { String::new() };
        report.add(SECTION, format!("{label}: metrics accepted and stored per second{runs}"), median(&mut stored_rate), "/s");
        report.add(SECTION, format!("{label}: metrics accepted per second, during load{runs}"), median(&mut accept_rate), "/s");
        report.add(SECTION, format!("{label}: response latency p50{runs}"), median(&mut p50), "ms");
        report.add(SECTION, format!("{label}: response latency p99{runs}"), median(&mut p99), "ms");
        report.add(SECTION, format!("{label}: collector peak RSS (largest)"), rss.iter().copied().fold(f64::NAN, f64::max), "MiB");
        if !bytes_per_metric.is_empty() {
            report.add(
                SECTION,
                format!("{label}: spool bytes per metric (rows waiting at the end of the load)"),
                median(&mut bytes_per_metric),
                "B",
            );
        }
        report.add(SECTION, format!("{label}: rows stored − rows accepted, all runs (0 = nothing lost)"), lost as f64, "rows");
        if refused > 0 {
            report.note(format!("{label}: {refused} requests answered 503 or failed"));
        }
    }
    let durable = report.best(SECTION, "2 worker threads: metrics accepted and stored per second");
    let unsynced = report.best(SECTION, "spool without fsync: metrics accepted and stored per second");
    report.compare(SECTION, "2 threads, stored metrics/s with fsync", durable, "/s", "the same spool without fsync".to_owned(), unsynced);
    overload(report, bodies, if quick { 3.0 } else { 8.0 }).await;
    direct(report, last_accepted.clamp(100_000, 2_000_000)).await;
}

/// Far more than the collector can store: 64 unpaced connections against a 32 MiB spool. What
/// it must do: refuse the excess with 503 + `Retry-After`, keep memory bounded, lose nothing it
/// acknowledged, and take beacons again by itself once the spool drains.
async fn overload(report: &mut Report, bodies: Arc<Vec<(Bytes, u64)>>, seconds: f64) {
    const LABEL: &str = "overload (64 connections, 32 MiB spool)";
    let db = clickhouse().fresh_database("bench_overload");
    let collector = spawn_collector(&db, Mode { threads: 2, fsync: true, spool_max_bytes: 32 << 20 }).await;
    let _ = fire(&collector.base, bodies.clone(), 0.5, CONNECTIONS).await;
    let before = wait_stored(&db, 0, Duration::from_secs(30)).await;
    let load = fire(&collector.base, bodies.clone(), seconds, 64).await;
    let expected = before + load.accepted;
    let after = wait_stored(&db, expected, Duration::from_secs(300)).await;
    let recovered = fire(&collector.base, bodies, 0.5, 1).await.accepted > 0;
    report.add(SECTION, format!("{LABEL}: metrics acknowledged per second"), load.accepted as f64 / load.seconds, "/s");
    report.add(SECTION, format!("{LABEL}: requests refused (503)"), load.refused as f64, "");
    report.add(SECTION, format!("{LABEL}: of them with Retry-After"), load.retry_after as f64, "");
    report.add(SECTION, format!("{LABEL}: collector peak RSS"), collector.peak_rss_mib(), "MiB");
    report.add(SECTION, format!("{LABEL}: rows stored − rows acknowledged (0 = nothing lost)"), after as f64 - expected as f64, "rows");
    report.add(SECTION, format!("{LABEL}: takes beacons again after draining (1 = yes)"), f64::from(u8::from(recovered)), "");
    drop(collector);
    let _ = clickhouse().sql(&format!("DROP DATABASE IF EXISTS {db}"));
}

async fn wait_stored(db: &str, expected: u64, limit: Duration) -> u64 {
    let started = Instant::now();
    let mut last = stored(db);
    let mut stable = 0;
    while started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = stored(db);
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
        if (expected > 0 && now >= expected) || (expected == 0 && stable >= 4) {
            break;
        }
    }
    last
}

/// The storage's own limit: `rows` metric rows inserted with RowBinary from one client in
/// batches of the collector's default `batch_rows`, rollup views included.
async fn direct(report: &mut Report, rows: u64) {
    let db = clickhouse().fresh_database("bench_direct");
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        clickhouse_url: clickhouse().url.clone(),
        clickhouse_database: db.clone(),
        ..Config::default()
    };
    pulse_collector::storage::schema::migrate(&config).await.expect("schema");
    let client = pulse_collector::storage::client(&config);
    let now = (now_ms() / 1000.0) as u32;
    let row = |i: u64| MetricRow {
        site: "demo".into(),
        event_time: now - (i % 600) as u32,
        received_at: now,
        name: ["LCP", "FCP", "CLS", "INP", "TTFB", "checkout.step"][(i % 6) as usize].into(),
        value: (i % 4000) as f64,
        delta: (i % 4000) as f64,
        rating: 1,
        metric_id: format!("v1-{i}"),
        session: format!("s-{}", i % 500),
        page: format!("p-{}", i / 30),
        url: format!("/shop/category/{}", i % 20),
        nav: "navigate".into(),
        release: "1.2.3".into(),
        env: String::new(),
        device: "desktop".into(),
        browser: "Chrome".into(),
        os: "Linux".into(),
        country: String::new(),
        ect: String::new(),
        viewport_w: 1280,
        viewport_h: 800,
        dpr: 2.0,
        memory: 8.0,
        cores: 8,
        skew_ms: 0,
        attribution: r#"{"element":"main>div.hero>img","url":"https://cdn.example/hero.jpg","timeToFirstByte":210.5}"#.into(),
        tag_keys: vec![],
        tag_values: vec![],
        seq: i,
        page_at: 0,
        report_n: 0,
    };
    let started = Instant::now();
    let mut i = 0;
    while i < rows {
        let end = (i + Config::default().batch_rows as u64).min(rows);
        let mut insert = client.insert::<MetricRow>("metrics").await.expect("insert");
        for k in i..end {
            insert.write(&row(k)).await.expect("write");
        }
        insert.end().await.expect("end");
        i = end;
    }
    let seconds = started.elapsed().as_secs_f64();
    let per_second = rows as f64 / seconds;
    let collector_best = report_best(report);
    report.compare(
        SECTION,
        "collector (best of 1/2 threads, fsync on), stored metrics/s",
        collector_best,
        "/s",
        format!("direct RowBinary insert, {rows} rows"),
        per_second,
    );
}

fn report_best(report: &Report) -> f64 {
    let one = report.best(SECTION, "1 worker thread: metrics accepted and stored per second");
    one.max(report.best(SECTION, "2 worker threads: metrics accepted and stored per second"))
}
