//! Graceful shutdown of the real binary: beacons accepted just before SIGTERM are in ClickHouse
//! after the process exits.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pulse_testkit::http::{get, post_beacon};
use pulse_testkit::{beacon, clickhouse, free_port, metric};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacons_accepted_before_sigterm_are_stored_after_exit() {
    let ch = clickhouse();
    let db = ch.fresh_database("shutdown");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulse-collector"))
        .env("PULSE_LISTEN", format!("127.0.0.1:{port}"))
        .env("PULSE_CLICKHOUSE_URL", &ch.url)
        .env("PULSE_CLICKHOUSE_DATABASE", &db)
        .env("PULSE_SPOOL_DIR", pulse_testkit::temp_dir("spool-shutdown"))
        // Nothing is flushed by size or time before the signal: only shutdown can store the rows.
        .env("PULSE_FLUSH_INTERVAL_MS", "600000")
        .env("PULSE_BATCH_ROWS", "1000000")
        .env("PULSE_IP_RATE_PER_SECOND", "1000")
        .env("PULSE_IP_METRICS_PER_SECOND", "1000000000")
        .env("PULSE_IP_BYTES_PER_SECOND", "1000000000000")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("collector binary starts");

    let started = Instant::now();
    // Ready: the listener serves while the schema is still being migrated, and beacons taken
    // then are shipped as a backlog the moment the shipper starts — not what this test is about.
    let ready = || async { get(&format!("{base}/healthz"), &[]).await.json()["services"]["clickhouse"]["schema"] == "ready" };
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !ready().await {
        assert!(started.elapsed() < Duration::from_secs(30), "collector did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for i in 0..20 {
        let metrics = (0..10).map(|j| metric("LCP", f64::from(i * 10 + j), 0.0)).collect();
        let r = post_beacon(&base, beacon("demo", "/", metrics).to_string()).await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    assert_eq!(ch.count(&format!("SELECT count() FROM {db}.metrics")), 0, "nothing stored before the signal");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "collector did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit}");
    assert_eq!(ch.count(&format!("SELECT count() FROM {db}.metrics")), 200);
}
