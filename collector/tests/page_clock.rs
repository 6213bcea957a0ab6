//! Final values follow the page's own clock: the real collector binary, a real ClickHouse.
//!
//! - A fleet whose clocks differ: one collector runs under `faketime` (its wall clock 2 s ahead,
//!   `FAKETIME_DONT_FAKE_MONOTONIC=1`); each page view's first CLS report reaches it and the
//!   final one, 1.2 s later by the page's clock, the other collector.
//! - Reports whose arrival contradicts the page's order: the final report arrives first, both in
//!   the same moment; some pairs share one `at` and differ only by the agent's report number `n`.
//! - A collector cut off from ClickHouse past the finalizer's wait (its clock jumps three hours
//!   meanwhile, through libfaketime's timestamp file) ships its rows after their hour was made
//!   final: the hour is made final again, with every row once.
//!
//! Sleeps here only let real processes catch up; every wait for an outcome polls with a deadline.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulse_testkit::http::{get, post_beacon};
use pulse_testkit::{clickhouse, exact_percentile, free_port, now_ms, temp_dir};
use serde_json::{json, Value};

const AUTH: (&str, &str) = ("authorization", "Bearer dev-read-key");

/// A collector's wall clock.
#[derive(Clone, Copy)]
enum Clock<'a> {
    Real,
    /// Ahead by a fixed offset (`+2s`).
    Ahead(&'a str),
    /// Offset by what the file says (`+0`, `+3h`), read at every look at the clock.
    File(&'a std::path::Path),
}

/// One collector process; killed when dropped.
struct Collector {
    child: Child,
    port: u16,
    spool: PathBuf,
}

impl Collector {
    /// Starts the binary on ClickHouse at `clickhouse_url`, database `db`, with its wall clock
    /// as `clock` says.
    fn start(name: &str, clickhouse_url: &str, db: &str, clock: Clock<'_>, extra: &[(&str, &str)]) -> Collector {
        let port = free_port();
        let spool = temp_dir(&format!("spool-page-clock-{name}"));
        let binary = env!("CARGO_BIN_EXE_pulse-collector");
        let mut command = Command::new(binary);
        // Debian's faketime, preloaded into the collector itself (the `faketime` command would
        // run it as a child that outlives a kill of the command).
        match clock {
            Clock::Real => {}
            Clock::Ahead(offset) => {
                command.env("LD_PRELOAD", libfaketime()).env("FAKETIME", offset).env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            }
            Clock::File(path) => {
                command
                    .env("LD_PRELOAD", libfaketime())
                    .env("FAKETIME_TIMESTAMP_FILE", path)
                    .env("FAKETIME_NO_CACHE", "1")
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            }
        }
        command
            .env("PULSE_LISTEN", format!("127.0.0.1:{port}"))
            .env("PULSE_CLICKHOUSE_URL", clickhouse_url)
            .env("PULSE_CLICKHOUSE_DATABASE", db)
            .env("PULSE_SPOOL_DIR", &spool)
            .env("PULSE_IP_RATE_PER_SECOND", "1000000")
            .env("PULSE_IP_METRICS_PER_SECOND", "1000000000")
            .env("PULSE_IP_BYTES_PER_SECOND", "1000000000000")
            .env("PULSE_SITE_RATE_PER_SECOND", "1000000")
            .env("PULSE_FLUSH_INTERVAL_MS", "100")
            .env("PULSE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().expect("the collector starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "collector {name} did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Collector { child, port, spool }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn send(&self, body: Value) {
        let r = post_beacon(&self.base(), body.to_string()).await;
        assert_eq!(r.status, 202, "{}", r.text());
        assert!(r.json()["rejected"].as_array().is_none_or(Vec::is_empty), "{}", r.text());
    }

    async fn read(&self, path_and_query: &str) -> Value {
        let r = get(&format!("{}{path_and_query}", self.base()), &[AUTH]).await;
        assert_eq!(r.status, 200, "{path_and_query}: {}", r.text());
        r.json()
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = get(&format!("{}/metrics", self.base()), &[]).await.text();
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}

/// Debian's `libfaketime.so.1` (package `faketime`, installed by `make test`).
fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    found.expect("libfaketime.so.1 under /usr/lib/*/faketime: install Debian's faketime (make test does)")
}

/// One report of CLS `value` with id `id`, measured at `at` by the page's clock, in its own
/// beacon of page view `page`, sent at `at` (as an agent flushing on each hide sends it).
fn cls_beacon(page: &str, id: &str, value: f64, at: f64, n: Option<u32>) -> Value {
    let mut cls = json!({"name": "CLS", "value": value, "at": at, "id": id});
    if let Some(n) = n {
        cls["n"] = json!(n);
    }
    json!({"v": 1, "site": "demo", "session": format!("s-{page}"), "page": page, "url": "/checkout",
           "nav": "navigate", "sent_at": at, "metrics": [cls]})
}

/// The final CLS of page view `i` (spread over 0..0.6).
fn final_cls(i: usize) -> f64 {
    ((i as u64 * 7_919) % 1_000) as f64 / 1_000.0 * 0.6
}

fn p75(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    exact_percentile(&sorted, 75.0)
}

/// Page views whose smaller (first) report is the newer by the collectors' order (skew-corrected
/// time, then arrival): what picked the final value before the page's clock did.
fn first_reports_newer_by_the_collectors(db: &str) -> u64 {
    clickhouse().count(&format!(
        "SELECT count() FROM (SELECT metric_id, argMax(value, (event_time, seq)) AS v, max(value) AS top
         FROM {db}.metrics GROUP BY metric_id) WHERE v < top"
    ))
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// p75 and count of CLS over the last hour from raw rows, as `collector` answers it.
async fn raw_cls(collector: &Collector) -> (f64, u64) {
    let now = now_ms() as u64;
    let body = collector.read(&format!("/v1/vitals?site=demo&metric=CLS&source=raw&from={}&to={}", now - 3_600_000, now + 120_000)).await;
    let row = &body["rows"][0];
    (row["p75"].as_f64().unwrap_or(f64::NAN), row["count"].as_u64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_collector_with_its_clock_ahead_cannot_make_the_first_report_win() {
    let ch = clickhouse();
    let db = ch.fresh_database("page_clock_fleet");
    let fast = Collector::start("fast", &ch.url, &db, Clock::Ahead("+2s"), &[]);
    let exact = Collector::start("exact", &ch.url, &db, Clock::Real, &[]);
    let (views, t0) = (300, now_ms() - 60_000.0);
    let finals: Vec<f64> = (0..views).map(final_cls).collect();
    for (i, value) in finals.iter().enumerate() {
        let (page, id) = (format!("fleet-{i}"), format!("v1-fleet-{i}"));
        let at = t0 + i as f64 * 10.0;
        fast.send(cls_beacon(&page, &id, value * 0.1, at, None)).await;
        exact.send(cls_beacon(&page, &id, *value, at + 1_200.0, None)).await;
    }
    let rows = format!("SELECT count() FROM {db}.metrics_recent");
    wait_for("600 reports in metrics_recent", Duration::from_secs(30), || ch.count(&rows) >= 600).await;
    // The fast collector's clock really is ahead: its skew-corrected times are later than the
    // final reports', and its arrival order larger (what ordered reports before).
    let later = first_reports_newer_by_the_collectors(&db);
    assert!(later > 250, "only {later} of {views} first reports look newer by the collectors' clocks: is faketime working?");
    let want = p75(&finals);
    for collector in [&fast, &exact] {
        let (p75, count) = raw_cls(collector).await;
        assert_eq!(count, views as u64, "each page view once");
        assert_eq!(p75, want, "p75 CLS from the final reports");
    }
    eprintln!(
        "fleet with a clock 2 s ahead: p75 CLS {want} from both collectors ({later} first reports looked newer by the collectors' order)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_arriving_out_of_the_page_order_keep_the_page_order() {
    let ch = clickhouse();
    let db = ch.fresh_database("page_clock_pairs");
    let collector = Collector::start("pairs", &ch.url, &db, Clock::Real, &[]);
    let (views, t0) = (400, now_ms() - 120_000.0);
    let finals: Vec<f64> = (0..views).map(final_cls).collect();
    for (i, value) in finals.iter().enumerate() {
        let (page, id) = (format!("pair-{i}"), format!("v1-pair-{i}"));
        let first_at = t0 + i as f64 * 10.0;
        // Every tenth pair has one `at` for both (the page's clock repeated a millisecond): the
        // agent's report number orders them.
        let (final_at, numbers) = if i % 10 == 0 { (first_at, (Some(1), Some(2))) } else { (first_at + 5_000.0, (None, None)) };
        // The final report first, the first report at the same moment.
        let last = cls_beacon(&page, &id, *value, final_at, numbers.1);
        let first = cls_beacon(&page, &id, value * 0.1, first_at, numbers.0);
        tokio::join!(collector.send(last), collector.send(first));
    }
    let rows = format!("SELECT count() FROM {db}.metrics_recent");
    wait_for("800 reports in metrics_recent", Duration::from_secs(30), || ch.count(&rows) >= 800).await;
    let arrived_last = first_reports_newer_by_the_collectors(&db);
    let (got, count) = raw_cls(&collector).await;
    assert_eq!(count, views as u64);
    assert_eq!(got, p75(&finals));
    eprintln!(
        "{views} pairs sent at once, final report first: p75 CLS {got} (the final reports'); by arrival {arrived_last} first reports would have won"
    );
}

/// A TCP forwarder to ClickHouse that can be cut: while closed it drops every connection.
struct Link {
    port: u16,
    open: Arc<AtomicBool>,
}

impl Link {
    async fn to(upstream: &str) -> Link {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let port = listener.local_addr().expect("address").port();
        let open = Arc::new(AtomicBool::new(false));
        let open_flag = open.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !open_flag.load(Ordering::Relaxed) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Link { port, open }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// One LCP page view measured `before_ms` before the beacon was sent (now by the test's clock).
fn lcp_beacon(page: &str, value: f64, before_ms: f64) -> Value {
    let sent = now_ms();
    json!({"v": 1, "site": "demo", "session": format!("s-{page}"), "page": page, "url": "/late", "nav": "navigate",
           "sent_at": sent, "metrics": [{"name": "LCP", "value": value, "at": sent - before_ms, "id": format!("v1-{page}")}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_stored_after_their_hour_was_final_are_made_final() {
    let ch = clickhouse();
    let db = ch.fresh_database("page_clock_late");
    let link = Link::to(&ch.url).await;
    let fast_finalizer = [("PULSE_FINALIZE_INTERVAL_SECONDS", "1")];
    // The cut-off collector accepts this hour's page views in time (its clock is the test's),
    // then is cut off from ClickHouse while three hours pass for it (its clock jumps) and the
    // other collector, three hours ahead from the start, makes the hour final without them.
    const HOURS: f64 = 3.0 * 3_600_000.0;
    let clock_file = temp_dir("page-clock-late-clock").join("offset");
    std::fs::write(&clock_file, "+0\n").expect("writes the clock file");
    let cut_off = Collector::start("cut-off", &link.url(), &db, Clock::File(&clock_file), &fast_finalizer);
    let connected = Collector::start("connected", &ch.url, &db, Clock::Ahead("+3h"), &fast_finalizer);
    let hour = ((now_ms() / 1000.0) as i64).div_euclid(3_600) * 3_600;
    let late: Vec<f64> = (0..100).map(|i| 1_000.0 + f64::from(i) * 10.0).collect();
    let on_time: Vec<f64> = (0..100).map(|i| 3_000.0 + f64::from(i) * 10.0).collect();
    for (i, value) in late.iter().enumerate() {
        cut_off.send(lcp_beacon(&format!("late-{i}"), *value, 0.0)).await;
    }
    // Measured three hours before they were sent by the clock of the collector that receives
    // them: the same hour.
    for (i, value) in on_time.iter().enumerate() {
        connected.send(lcp_beacon(&format!("on-time-{i}"), *value, HOURS)).await;
    }
    // Two hours: the page views may straddle the end of the first (all are final by then for
    // the collector three hours ahead).
    let until = hour + 2 * 3_600;
    let in_hour = format!("event_time >= toDateTime({hour}) AND event_time < toDateTime({until})");
    let final_rows = format!("SELECT count() FROM {db}.metrics_final WHERE {in_hour}");
    let done = format!("SELECT toUInt32(max(span_to)) FROM {db}.finalizer_progress WHERE phase = 'done'");
    wait_for("the hour made final without the cut-off collector's rows", Duration::from_secs(60), || {
        ch.count(&final_rows) == 100 && ch.count(&done) as i64 >= until
    })
    .await;
    std::fs::write(&clock_file, "+3h\n").expect("moves the clock");
    link.open.store(true, Ordering::Relaxed);
    let raw_rows = format!("SELECT count() FROM {db}.metrics WHERE {in_hour}");
    wait_for("the cut-off collector's rows stored", Duration::from_secs(60), || ch.count(&raw_rows) == 200).await;
    wait_for("the hour made final again with every row", Duration::from_secs(60), || ch.count(&final_rows) == 200).await;
    let distinct = ch.count(&format!("SELECT uniqExact(metric_id) FROM {db}.metrics_final WHERE {in_hour}"));
    assert_eq!(distinct, 200, "each page view once");
    // Answers from the final tables (the hour is before the watermark) include both collectors'.
    let body = connected.read(&format!("/v1/vitals?site=demo&metric=LCP&from={}&to={}", hour * 1000, until * 1000)).await;
    let row = &body["rows"][0];
    let all: Vec<f64> = late.iter().chain(&on_time).copied().collect();
    assert_eq!(row["count"].as_u64(), Some(200), "{body}");
    assert_eq!(row["min"].as_f64(), Some(1_000.0), "{body}");
    assert_eq!(row["max"].as_f64(), Some(3_990.0), "{body}");
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    assert!((row["avg"].as_f64().unwrap_or(0.0) - mean).abs() < 1e-6, "{body}");
    let refinalized = cut_off.metric("pulse_hours_refinalized_total").await + connected.metric("pulse_hours_refinalized_total").await;
    assert!(refinalized >= 1.0, "/metrics counts the hours made final again");
    eprintln!("cut off past the finalizer's wait: 100 late + 100 on-time rows final, each once; {refinalized} hours made final again");
}
