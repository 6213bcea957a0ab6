//! A 202 is a promise: the real collector binary under concurrent load, killed with SIGKILL,
//! cut off from ClickHouse, with a full spool and a damaged one — every metric of every
//! acknowledged beacon ends up in ClickHouse (checked by metric id).
//!
//! Sleeps here only let real load accumulate against real processes; every wait for an outcome
//! polls with a deadline.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pulse_testkit::http::{get, try_send};
use pulse_testkit::{clickhouse, free_port, now_ms, temp_dir, ClickHouse, StoppableClickHouse};
use redb::{ReadableDatabase, ReadableTable};
use serde_json::{json, Value};

const METRICS_PER_BEACON: usize = 10;
/// API calls in each beacon besides its metrics (they have no id: answers count them once by
/// their page view and arrival order).
const CALLS_PER_BEACON: usize = 2;

/// The collector binary, restartable on the same port and spool.
struct Collector {
    child: Option<Child>,
    port: u16,
    spool: PathBuf,
    env: Vec<(String, String)>,
}

impl Collector {
    fn start(ch: &ClickHouse, db: &str, spool: &Path, extra: &[(&str, &str)]) -> Collector {
        let mut env: Vec<(String, String)> = vec![
            ("PULSE_CLICKHOUSE_URL".into(), ch.url.clone()),
            ("PULSE_CLICKHOUSE_DATABASE".into(), db.into()),
            ("PULSE_SPOOL_DIR".into(), spool.display().to_string()),
            ("PULSE_IP_RATE_PER_SECOND".into(), "1000000".into()),
            ("PULSE_IP_METRICS_PER_SECOND".into(), "1000000000".into()),
            ("PULSE_IP_BYTES_PER_SECOND".into(), "1000000000000".into()),
            ("PULSE_SITE_RATE_PER_SECOND".into(), "1000000".into()),
            ("PULSE_FLUSH_INTERVAL_MS".into(), "200".into()),
            ("PULSE_LOG".into(), "warn".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let mut c = Collector { child: None, port: free_port(), spool: spool.to_owned(), env };
        c.spawn();
        c
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pulse-collector"));
        command.env("PULSE_LISTEN", format!("127.0.0.1:{}", self.port)).stdout(Stdio::null()).stderr(Stdio::inherit());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        self.child = Some(command.spawn().expect("collector binary starts"));
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "collector did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Listening, and ours: a collector that could not bind has exited.
        let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        assert!(exited.is_none(), "the collector exited ({exited:?}); another process holds port {}", self.port);
    }

    /// SIGKILL: no shutdown code runs.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
struct Seen {
    /// Metric ids of every beacon answered 202.
    acked: Mutex<Vec<String>>,
    accepted: AtomicU64,
    status_503: AtomicU64,
    other: AtomicU64,
    unanswered: AtomicU64,
}

fn beacon(client: usize, seq: u64) -> (Value, Vec<String>) {
    let now = now_ms();
    let ids: Vec<String> = (0..METRICS_PER_BEACON).map(|k| format!("m-{client}-{seq}-{k}")).collect();
    let mut metrics: Vec<Value> =
        ids.iter().enumerate().map(|(k, id)| json!({"name": "LCP", "value": 1000.0 + k as f64, "at": now, "id": id})).collect();
    metrics.extend(
        (0..CALLS_PER_BEACON)
            .map(|k| json!({"name": "api", "value": 50.0, "at": now, "route": "/api/cart", "method": "GET", "status": 200 + k})),
    );
    let body = json!({"v": 1, "site": "demo", "session": format!("s-{client}"), "page": format!("p-{client}-{seq}"),
                      "url": "/checkout", "nav": "navigate", "sent_at": now, "metrics": metrics});
    (body, ids)
}

/// One client: posts beacons until `stop`, pausing `pause` between them.
async fn client(base: String, id: usize, pause: Duration, stop: Arc<AtomicBool>, seen: Arc<Seen>) {
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let (body, ids) = beacon(id, seq);
        let headers = [("content-type", "text/plain;charset=UTF-8"), ("origin", "http://localhost:3000")];
        match try_send("POST", &format!("{base}/v1/beacon"), &headers, body.to_string()).await {
            Ok(r) if r.status == 202 => {
                seen.accepted.fetch_add(1, Ordering::Relaxed);
                seen.acked.lock().expect("acked").extend(ids);
            }
            Ok(r) if r.status == 503 => {
                assert!(r.header("retry-after").is_some(), "a 503 says when to retry");
                seen.status_503.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                seen.other.fetch_add(1, Ordering::Relaxed);
                eprintln!("unexpected answer {}: {}", r.status, r.text());
            }
            // The process was killed mid-request, or is restarting: not acknowledged.
            Err(_) => {
                seen.unanswered.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

fn load(base: &str, clients: usize, pause: Duration) -> (Arc<AtomicBool>, Arc<Seen>, Vec<tokio::task::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let tasks = (0..clients).map(|i| tokio::spawn(client(base.to_owned(), i, pause, stop.clone(), seen.clone()))).collect();
    (stop, seen, tasks)
}

async fn stop_load(stop: Arc<AtomicBool>, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("load task");
    }
}

/// Waits until every acknowledged metric id is stored; returns (stored rows, duplicate rows).
async fn every_ack_is_stored(ch: &ClickHouse, db: &str, acked: &[String], limit: Duration) -> (u64, u64) {
    let started = Instant::now();
    let want: HashSet<&str> = acked.iter().map(String::as_str).collect();
    loop {
        let stored = ch.sql(&format!("SELECT metric_id FROM {db}.metrics FORMAT TSVRaw"));
        let have: HashSet<&str> = stored.lines().collect();
        let missing = want.iter().filter(|id| !have.contains(**id)).count();
        if missing == 0 {
            let rows = stored.lines().count() as u64;
            // And in the copy in time order that answers read for the part not final yet (a
            // view writes it after the rows themselves). Every report once: on 18.16 an insert
            // cut off by the server's stop may have written the table and not the view, and its
            // retry writes both again, so the two tables' row counts can differ for good.
            let reports = have.len() as u64;
            while ch.count(&format!("SELECT uniqExact(key) FROM {db}.metrics_recent")) < reports {
                assert!(started.elapsed() < limit, "metrics_recent is behind metrics after {limit:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return (rows, rows - have.len() as u64);
        }
        assert!(started.elapsed() < limit, "{missing} of {} acknowledged metrics are not in ClickHouse after {limit:?}", want.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_healthy(base: &str) {
    let started = Instant::now();
    loop {
        if let Ok(r) = try_send("GET", &format!("{base}/healthz"), &[], "").await {
            if r.status == 200 {
                return;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30), "collector not healthy within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acknowledged_metric() {
    let ch = clickhouse();
    let db = ch.fresh_database("kill9");
    let mut collector = Collector::start(ch, &db, &temp_dir("spool-kill9"), &[]);
    wait_healthy(&collector.base()).await;
    let (stop, seen, tasks) = load(&collector.base(), 8, Duration::ZERO);
    for round in 1..=3 {
        // Let load build up against the real process, then kill it without warning.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = seen.accepted.load(Ordering::Relaxed);
        collector.kill9();
        eprintln!("kill -9 #{round}: {before} beacons acknowledged so far");
        collector.spawn();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop_load(stop, tasks).await;
    let acked = seen.acked.lock().expect("acked").clone();
    assert!(seen.accepted.load(Ordering::Relaxed) > 100, "the load produced too little to test: {seen:?}");
    let (rows, duplicates) = every_ack_is_stored(ch, &db, &acked, Duration::from_secs(120)).await;
    eprintln!(
        "kill -9 ×3 under load: {} metrics acknowledged, all {} stored ({rows} rows, {duplicates} duplicates from batches shipped again after a kill; {} requests unanswered while the process was down)",
        acked.len(),
        acked.len(),
        seen.unanswered.load(Ordering::Relaxed)
    );
    assert_eq!(seen.status_503.load(Ordering::Relaxed) + seen.other.load(Ordering::Relaxed), 0, "{seen:?}");
    // The raw table may hold a batch twice (18.16 has no insert deduplication); answers count
    // every metric exactly once (beacons stored whose 202 the kill cut off count too).
    assert_answers_count_each_once(&collector, rows - duplicates).await;
    let to = now_ms() as u64 + 60_000;
    assert!(rows - duplicates >= acked.len() as u64);
    // API calls too: every call of an acknowledged beacon stored, each counted once.
    let calls = (seen.accepted.load(Ordering::Relaxed) as usize * CALLS_PER_BEACON) as u64;
    let distinct = format!("SELECT count() FROM (SELECT DISTINCT page, seq FROM {db}.api_calls)");
    let started = Instant::now();
    while ch.count(&distinct) < calls {
        assert!(started.elapsed() < Duration::from_secs(60), "acknowledged API calls missing");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (stored, raw) = (ch.count(&distinct), ch.count(&format!("SELECT count() FROM {db}.api_calls")));
    let answer = get(&format!("{}/v1/api-calls?site=demo&to={to}", collector.base()), &[("authorization", "Bearer dev-read-key")]).await;
    eprintln!("API calls: {calls} acknowledged, {stored} stored ({} raw duplicates)", raw - stored);
    assert_eq!(answer.json()["rows"][0]["count"].as_u64(), Some(stored), "{}", answer.text());
    collector.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clickhouse_outage_is_absorbed_by_the_spool() {
    let outage = Duration::from_secs(std::env::var("PULSE_TEST_OUTAGE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(90));
    let own = StoppableClickHouse::start("outage");
    let ch = &own.server;
    let db = ch.fresh_database("outage");
    let collector = Collector::start(ch, &db, &temp_dir("spool-outage"), &[]);
    wait_healthy(&collector.base()).await;
    // About 200 beacons a second: 4 clients, 20 ms apart.
    let (stop, seen, tasks) = load(&collector.base(), 4, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(2)).await;
    own.stop();
    let down_since = Instant::now();
    let mut degraded_seen = false;
    while down_since.elapsed() < outage {
        let health = get(&format!("{}/healthz", collector.base()), &[]).await;
        let body = health.json();
        if body["status"] == "degraded" && body["spool"]["rows"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(health.status, 200, "{body}");
            assert!(body["spool"]["oldest_age_seconds"].as_f64().is_some(), "{body}");
            degraded_seen = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let during = seen.accepted.load(Ordering::Relaxed);
    own.resume();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_load(stop, tasks).await;
    assert!(degraded_seen, "/healthz never said degraded with a growing spool during the outage");
    let acked = seen.acked.lock().expect("acked").clone();
    assert_eq!(seen.status_503.load(Ordering::Relaxed), 0, "beacons were refused while the spool had room: {seen:?}");
    assert_eq!(seen.other.load(Ordering::Relaxed) + seen.unanswered.load(Ordering::Relaxed), 0, "{seen:?}");
    let (rows, duplicates) = every_ack_is_stored(ch, &db, &acked, Duration::from_secs(120)).await;
    eprintln!(
        "ClickHouse down {outage:?} under load: {} beacons acknowledged ({during} by the end of the outage), {} metrics, all stored ({rows} rows, {duplicates} duplicates), zero 503",
        seen.accepted.load(Ordering::Relaxed),
        acked.len()
    );
    // Retries while the server is down are refused before anything is written; only the insert
    // under way when it stopped may have been written and then sent again (18.16 has no insert
    // deduplication tokens): at most one batch twice, and answers count every metric once.
    const BATCH_ROWS: u64 = 20_000; // batch_rows' default: the most rows one insert carries
    assert!(duplicates <= BATCH_ROWS, "more than the one batch in flight at the stop was stored twice: {duplicates}");
    assert_answers_count_each_once(&collector, rows - duplicates).await;
}

/// The raw answer for every LCP counts `distinct` metrics.
async fn assert_answers_count_each_once(collector: &Collector, distinct: u64) {
    let to = now_ms() as u64 + 60_000;
    let answer = get(
        &format!("{}/v1/vitals?site=demo&metric=LCP&source=raw&to={to}", collector.base()),
        &[("authorization", "Bearer dev-read-key")],
    )
    .await;
    assert_eq!(answer.json()["rows"][0]["count"].as_u64(), Some(distinct), "{}", answer.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_spool_answers_503_and_keeps_what_it_acknowledged() {
    let own = StoppableClickHouse::start("full");
    let ch = &own.server;
    let db = ch.fresh_database("full");
    let collector = Collector::start(ch, &db, &temp_dir("spool-full"), &[("PULSE_SPOOL_MAX_BYTES", "200000")]);
    wait_healthy(&collector.base()).await;
    own.stop();
    let seen = Arc::new(Seen::default());
    let started = Instant::now();
    let mut seq = 0;
    let refusal = loop {
        seq += 1;
        let (body, ids) = beacon(0, seq);
        let r = pulse_testkit::http::post_beacon(&collector.base(), body.to_string()).await;
        if r.status != 202 {
            break r;
        }
        seen.acked.lock().expect("acked").extend(ids);
        assert!(started.elapsed() < Duration::from_secs(60), "a 200 kB spool never filled");
    };
    assert_eq!(refusal.status, 503, "{}", refusal.text());
    assert_eq!(refusal.header("retry-after"), Some("30"));
    assert!(refusal.text().contains("spool is full"), "{}", refusal.text());
    // The browser retries the refused beacon; refused again, it is still not accepted.
    let (body, _) = beacon(0, seq);
    for _ in 0..3 {
        assert_eq!(pulse_testkit::http::post_beacon(&collector.base(), body.to_string()).await.status, 503);
    }
    let health = get(&format!("{}/healthz", collector.base()), &[]).await;
    assert_eq!((health.status, health.json()["status"].as_str().map(str::to_owned)), (503, Some("unhealthy".into())));
    let metrics = get(&format!("{}/metrics", collector.base()), &[]).await.text();
    assert!(metrics.contains("pulse_beacons_rejected_total{reason=\"spool_full\"} 4"), "{metrics}");
    let acked_so_far = seen.acked.lock().expect("acked").len();
    assert!(
        metrics.contains(&format!("pulse_metrics_accepted_total{{kind=\"vital\"}} {acked_so_far}")),
        "accepted counts only the metrics of beacons answered 202 ({acked_so_far}): {metrics}"
    );
    let calls = acked_so_far / METRICS_PER_BEACON * CALLS_PER_BEACON;
    assert!(metrics.contains(&format!("pulse_metrics_accepted_total{{kind=\"api\"}} {calls}")), "{metrics}");
    own.resume();
    let acked = seen.acked.lock().expect("acked").clone();
    let (rows, duplicates) = every_ack_is_stored(ch, &db, &acked, Duration::from_secs(60)).await;
    eprintln!("spool full after {} beacons: {rows} rows stored, {duplicates} duplicates", seq - 1);
    assert_eq!(duplicates, 0);
    // Drained: beacons are taken again.
    let started = Instant::now();
    loop {
        let (body, _) = beacon(1, 1);
        if pulse_testkit::http::post_beacon(&collector.base(), body.to_string()).await.status == 202 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the spool did not take beacons again after draining");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_spool_keeps_every_complete_record() {
    let own = StoppableClickHouse::start("damaged");
    let ch = &own.server;
    let db = ch.fresh_database("damaged");
    let spool = temp_dir("spool-damaged");
    let mut collector = Collector::start(ch, &db, &spool, &[]);
    wait_healthy(&collector.base()).await;
    own.stop();
    // One beacon at a time: record k holds beacon k.
    let mut acked = Vec::new();
    for seq in 0..20 {
        let (body, ids) = beacon(0, seq);
        assert_eq!(pulse_testkit::http::post_beacon(&collector.base(), body.to_string()).await.status, 202);
        acked.push(ids);
    }
    collector.kill9();

    // Damage record 5's payload (bit rot the database's own checks do not see), and leave a torn
    // write past the end of the file, as a crash while the file grew would.
    let file = spool.join("spool.redb");
    {
        let db = redb::Database::create(&file).expect("spool opens");
        let txn = db.begin_write().expect("write txn");
        {
            let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("records");
            let mut records = txn.open_table(table).expect("records table");
            let mut value = records.get(5).expect("read").expect("record 5").value().to_vec();
            let last = value.len() - 1;
            value[last] ^= 0x5a;
            records.insert(5, value.as_slice()).expect("overwrite");
        }
        txn.commit().expect("commit");
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(&file).expect("open spool file");
    std::io::Write::write_all(&mut f, &[0xa5; 3000]).expect("torn tail");
    drop(f);

    own.resume();
    collector.spawn();
    let kept: Vec<String> = acked.iter().enumerate().filter(|(i, _)| *i != 5).flat_map(|(_, ids)| ids.clone()).collect();
    let (rows, duplicates) = every_ack_is_stored(ch, &db, &kept, Duration::from_secs(60)).await;
    assert_eq!((rows, duplicates), (kept.len() as u64, 0), "every complete record once, the damaged one skipped");
    let metrics = get(&format!("{}/metrics", collector.base()), &[]).await.text();
    assert!(metrics.contains("pulse_spool_records_skipped_total 1"), "{metrics}");
    assert!(metrics.contains("pulse_spool_files_salvaged_total 1"), "{metrics}");
    let health = get(&format!("{}/healthz", collector.base()), &[("authorization", "Bearer dev-read-key")]).await.json();
    assert_eq!(health["spool"]["salvaged_at_start"]["cut_bytes"], 3000, "{health}");
    let moved_to = health["spool"]["salvaged_at_start"]["moved_to"].as_str().unwrap_or_default().to_owned();
    assert!(Path::new(&moved_to).exists(), "the damaged file is kept for inspection: {moved_to}");
    assert!(
        metrics.contains(&format!(
            "pulse_rows_dropped_total{{reason=\"damaged_record\",table=\"spool\"}} {}",
            METRICS_PER_BEACON + CALLS_PER_BEACON
        )),
        "{metrics}"
    );
    collector.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_collector_starts_and_accepts_while_clickhouse_is_down() {
    let own = StoppableClickHouse::start("down-at-start");
    let ch = &own.server;
    let db = ch.fresh_database("down_at_start");
    own.stop();
    let collector = Collector::start(ch, &db, &temp_dir("spool-down-at-start"), &[]);
    let health = {
        let started = Instant::now();
        loop {
            if let Ok(r) = try_send("GET", &format!("{}/healthz", collector.base()), &[], "").await {
                break r;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no /healthz answer");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let body = health.json();
    assert_eq!((health.status, body["status"].as_str()), (200, Some("degraded")), "{body}");
    assert_eq!(body["services"]["clickhouse"]["schema"], "waiting for ClickHouse", "{body}");
    let mut acked = Vec::new();
    for seq in 0..20 {
        let (beacon, ids) = beacon(0, seq);
        assert_eq!(pulse_testkit::http::post_beacon(&collector.base(), beacon.to_string()).await.status, 202);
        acked.extend(ids);
    }
    own.resume();
    // The collector retries the schema with backoff (at most 30 s apart), then ships the spool.
    let started = Instant::now();
    while get(&format!("{}/healthz", collector.base()), &[]).await.json()["services"]["clickhouse"]["schema"] != "ready" {
        assert!(started.elapsed() < Duration::from_secs(90), "the schema was not created after ClickHouse came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (rows, duplicates) = every_ack_is_stored(ch, &db, &acked, Duration::from_secs(90)).await;
    assert_eq!((rows, duplicates), (acked.len() as u64, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_collector_serves_while_clickhouse_takes_connections_and_never_answers() {
    // A "server" that accepts every connection and never says a word (a hung ClickHouse, a
    // black-holing proxy): the collector must listen and take beacons all the same, and stop.
    let silent = ClickHouse { url: pulse_testkit::silent_server(), dir: temp_dir("silent-clickhouse") };
    let started = Instant::now();
    let mut collector = Collector::start(&silent, "silent", &temp_dir("spool-silent"), &[("PULSE_SHUTDOWN_GRACE_SECONDS", "2")]);
    let (body, _) = beacon(0, 1);
    let answer = pulse_testkit::http::post_beacon(&collector.base(), body.to_string()).await;
    assert_eq!(answer.status, 202, "{}", answer.text());
    eprintln!("listening and accepting {:?} after the start", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let health = get(&format!("{}/healthz", collector.base()), &[]).await.json();
    assert_eq!(health["services"]["clickhouse"]["schema"], "waiting for ClickHouse", "{health}");

    // SIGTERM: the migration still waiting for its server is abandoned; the process exits, the
    // beacon stays in the spool.
    let mut child = collector.child.take().expect("running");
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let stopping = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(stopping.elapsed() < Duration::from_secs(20), "the collector did not stop within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let spool = redb::Database::create(collector.spool.join("spool.redb")).expect("spool opens");
    let txn = spool.begin_read().expect("read txn");
    let records: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("records");
    assert_eq!(txn.open_table(records).expect("records").iter().expect("iter").count(), 1, "the beacon waits in the spool");
}
