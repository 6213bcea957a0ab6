//! Insecure defaults fail closed, on the real binary: the dev credentials (read key
//! `dev-read-key`, site `demo`), which the README prints, are refused on an address other machines
//! reach unless dev mode is on; the demo API is served in dev mode only.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pulse_testkit::http::get;
use pulse_testkit::{clickhouse, free_port};

fn collector(listen: &str, db: &str, extra: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pulse-collector"));
    command
        .env("PULSE_LISTEN", listen)
        .env("PULSE_CLICKHOUSE_URL", &clickhouse().url)
        .env("PULSE_CLICKHOUSE_DATABASE", db)
        .env("PULSE_SPOOL_DIR", pulse_testkit::temp_dir(&format!("spool-{db}")))
        .env_remove("PULSE_DEV")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        command.env(k, v);
    }
    command
}

/// Runs the collector until it exits (30 s at most).
fn refused(mut command: Command) -> Output {
    let child = command.spawn().expect("collector binary starts");
    let started = Instant::now();
    let id = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().expect("wait"));
    while !waiter.is_finished() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = Command::new("kill").args(["-KILL", &id.to_string()]).status();
            panic!("the collector started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    waiter.join().expect("waiter")
}

/// A running collector, stopped with SIGTERM when dropped, so a failed assertion leaves no
/// process behind.
struct Collector(Child);

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let started = Instant::now();
        while self.0.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.0.kill();
                let _ = self.0.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until the collector answers `/healthz` on `base`.
async fn serving(child: &mut Child, base: &str) {
    let started = Instant::now();
    loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            panic!("the collector exited: {exit}");
        }
        let port = base.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).expect("port");
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && get(&format!("{base}/healthz"), &[]).await.status == 200 {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "collector did not serve");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_credentials_on_an_open_address_refuse_to_start_unless_in_dev_mode() {
    let db = clickhouse().fresh_database("startup");
    let port = free_port();
    let open = format!("0.0.0.0:{port}");

    // The defaults on 0.0.0.0: refused, naming the setting and the way out.
    let out = refused(collector(&open, &db, &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("config: read_keys: the read key \"dev-read-key\" is the dev setup's"), "{err}");
    assert!(err.contains("PULSE_DEV=1"), "{err}");
    // Its own read key, but still the demo site: refused, naming `sites`.
    let out = refused(collector(&open, &db, &[("PULSE_READ_KEYS", "a-real-key")]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("config: sites: the site \"demo\""), "{err}");

    // Dev mode says yes, and serves the demo API.
    let mut child = Collector(collector(&open, &db, &[("PULSE_DEV", "1")]).spawn().expect("collector binary starts"));
    let base = format!("http://127.0.0.1:{port}");
    serving(&mut child.0, &base).await;
    assert_eq!(get(&format!("{base}/demo/api/ok"), &[]).await.status, 200);
    drop(child);

    // On loopback the dev credentials stay usable (the quick start), the demo API is off.
    let port = free_port();
    let mut child = Collector(collector(&format!("127.0.0.1:{port}"), &db, &[]).spawn().expect("collector binary starts"));
    let base = format!("http://127.0.0.1:{port}");
    serving(&mut child.0, &base).await;
    assert_eq!(get(&format!("{base}/demo/api/ok"), &[]).await.status, 404);
    let r = get(&format!("{base}/v1/vitals?site=demo&metric=LCP"), &[("authorization", "Bearer dev-read-key")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}
