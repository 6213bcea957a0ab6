//! Test harness on real parts, shared by the collector's integration tests and the end-to-end
//! tests: a throwaway ClickHouse server ([`clickhouse`]), free ports, a minimal HTTP client
//! ([`http`]) and beacon builders ([`beacon`]).
//!
//! The ClickHouse server is started once per test binary in a temporary directory on free ports;
//! each test creates its own database in it ([`ClickHouse::fresh_database`]). A watchdog shell ends
//! the server when the test process exits, however it exits.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

pub mod browser;
pub mod http;

/// A ClickHouse server for this test process.
#[derive(Debug)]
pub struct ClickHouse {
    /// HTTP endpoint, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    pub dir: PathBuf,
}

static SERVER: OnceLock<ClickHouse> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The test process's ClickHouse server, started on first use.
///
/// `PULSE_TEST_CLICKHOUSE_URL` points the tests at an existing server instead.
pub fn clickhouse() -> &'static ClickHouse {
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("PULSE_TEST_CLICKHOUSE_URL") {
            return ClickHouse { url, dir: PathBuf::new() };
        }
        start_clickhouse().unwrap_or_else(|e| panic!("cannot start a test ClickHouse server: {e}"))
    })
}

impl ClickHouse {
    /// A database name no other test in this run uses (the collector creates it).
    pub fn fresh_database(&self, test: &str) -> String {
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let clean: String = test.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        format!("t_{clean}_{}_{n}", std::process::id())
    }

    /// Runs one SQL statement over HTTP and returns the response text (`TSV` for selects).
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", &format!("{}/", self.url), "--data-binary", sql])
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "ClickHouse refused {sql:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
        text
    }

    /// Runs a `SELECT count() …` and parses the number.
    pub fn count(&self, sql: &str) -> u64 {
        let text = self.sql(sql);
        text.trim().parse().unwrap_or_else(|_| panic!("not a count: {text:?} from {sql}"))
    }
}

/// A ClickHouse server of one test's own, which the test may stop and start again (same ports,
/// same data) to play an outage. Started by `scripts/clickhouse.sh`; a watchdog stops it and
/// removes its directory when the test process is gone, however it ends.
#[derive(Debug)]
pub struct StoppableClickHouse {
    pub server: ClickHouse,
    http_port: u16,
    tcp_port: u16,
    /// Stops the server and removes its directory once this process is gone; never waited for.
    _watchdog: std::process::Child,
}

impl StoppableClickHouse {
    pub fn start(name: &str) -> StoppableClickHouse {
        let ch = StoppableClickHouse::prepare(name);
        ch.resume();
        ch
    }

    /// Two servers on loopback forming the two-shard cluster `cluster` (each server's
    /// `config.d/cluster.xml`, beside the config `scripts/clickhouse.sh` writes, names both).
    pub fn cluster(name: &str, cluster: &str) -> [StoppableClickHouse; 2] {
        let servers = [StoppableClickHouse::prepare(&format!("{name}-1")), StoppableClickHouse::prepare(&format!("{name}-2"))];
        let shards: String = servers
            .iter()
            .map(|s| format!("      <shard><replica><host>127.0.0.1</host><port>{}</port></replica></shard>\n", s.tcp_port))
            .collect();
        let xml = format!("<?xml version=\"1.0\"?>\n<yandex>\n  <remote_servers>\n    <{cluster}>\n{shards}    </{cluster}>\n  </remote_servers>\n</yandex>\n");
        for server in &servers {
            let dir = server.server.dir.join("config.d");
            std::fs::create_dir_all(&dir).expect("config.d");
            std::fs::write(dir.join("cluster.xml"), &xml).expect("cluster.xml");
            server.resume();
        }
        servers
    }

    /// The server's directory, ports and watchdog, not started.
    fn prepare(name: &str) -> StoppableClickHouse {
        let dir = temp_dir(&format!("clickhouse-{name}"));
        let (http_port, tcp_port) = (free_port(), free_port());
        let server = ClickHouse { url: format!("http://127.0.0.1:{http_port}"), dir };
        let watchdog = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; '{script}' stop '{d}'; rm -rf '{d}'",
            parent = std::process::id(),
            script = repo_root().join("scripts/clickhouse.sh").display(),
            d = server.dir.display(),
        );
        let watchdog = Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("watchdog shell starts");
        StoppableClickHouse { server, http_port, tcp_port, _watchdog: watchdog }
    }

    /// Starts the server (again) and waits until it answers.
    pub fn resume(&self) {
        let script = repo_root().join("scripts/clickhouse.sh");
        let dir = self.server.dir.display().to_string();
        let out = Command::new(&script)
            .args(["start", &dir, &self.http_port.to_string(), &self.tcp_port.to_string()])
            .output()
            .expect("scripts/clickhouse.sh runs");
        assert!(
            out.status.success(),
            "ClickHouse did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (the data stays).
    pub fn stop(&self) {
        let script = repo_root().join("scripts/clickhouse.sh");
        let out =
            Command::new(&script).args(["stop", &self.server.dir.display().to_string()]).output().expect("scripts/clickhouse.sh runs");
        assert!(out.status.success(), "ClickHouse did not stop: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for StoppableClickHouse {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.server.dir);
    }
}

/// A fresh, empty directory under the system's temp directory, unique to this call (spools,
/// agent builds). Removed by the OS's temp cleaning, or by the test.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pulse-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// The URL of a "server" that accepts every connection and never says a word (a hung ClickHouse,
/// a black-holing proxy). It lives as long as the test process.
pub fn silent_server() -> String {
    let silent = TcpListener::bind("127.0.0.1:0").expect("binds");
    let url = format!("http://{}", silent.local_addr().expect("address"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    url
}

/// A port that was free a moment ago, and that no other caller in this process got: a test that
/// restarts a server on its port (the kill tests) leaves it free for a moment, and must not find
/// another test's server there when it comes back.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The repository's root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

fn start_clickhouse() -> Result<ClickHouse, String> {
    let dir = std::env::temp_dir().join(format!("pulse-test-clickhouse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (http_port, tcp_port) = (free_port(), free_port());
    let d = dir.display();
    // The server's XML config has one author, the script `make run` uses too.
    let script = repo_root().join("scripts/clickhouse.sh");
    let out = Command::new(&script)
        .args(["config", &d.to_string(), &http_port.to_string(), &tcp_port.to_string()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} config failed: {}", script.display(), String::from_utf8_lossy(&out.stderr)));
    }
    let config_path = dir.join("config.xml");
    // The watchdog: runs the server in the foreground of a shell that kills it, and removes its
    // directory, as soon as this test process is gone.
    let script = format!(
        "clickhouse-server --config-file='{cfg}' >'{d}/log/stdout.log' 2>&1 & srv=$!; \
         while kill -0 {parent} 2>/dev/null && kill -0 $srv 2>/dev/null; do sleep 0.5; done; \
         kill $srv 2>/dev/null; wait $srv; rm -rf '{d}'",
        cfg = config_path.display(),
        parent = std::process::id(),
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run clickhouse-server (is it installed? `make setup`): {e}"))?;
    let url = format!("http://127.0.0.1:{http_port}");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let ok = Command::new("curl").args(["-fsS", &format!("{url}/ping")]).output().is_ok_and(|o| o.status.success());
        if ok {
            return Ok(ClickHouse { url, dir });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.join("log/error.log")).unwrap_or_default();
    Err(format!("ClickHouse did not answer on {url} within 30 s; error log:\n{log}"))
}

/// Milliseconds since the epoch now.
pub fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as f64).unwrap_or(0.0)
}

/// A beacon for site `demo` sent now, carrying `metrics`.
pub fn beacon(site: &str, url: &str, metrics: Vec<Value>) -> Value {
    json!({
        "v": 1,
        "site": site,
        "session": "sess-1",
        "page": "page-1",
        "url": url,
        "nav": "navigate",
        "sent_at": now_ms(),
        "metrics": metrics,
    })
}

/// A vital or custom metric measured `ago_ms` before now.
pub fn metric(name: &str, value: f64, ago_ms: f64) -> Value {
    json!({"name": name, "value": value, "at": now_ms() - ago_ms})
}

/// CLS of `n` page views reported twice (web-vitals re-reports on a later hide when it grew): a
/// partial value, then the final one. Returns the final values and the beacons (first reports,
/// then final reports, 50 page views each), pages `/a` and `/b` alternating by page view.
pub fn re_reported_cls(n: usize) -> (Vec<f64>, Vec<Value>) {
    let finals: Vec<f64> = (0..n as u64).map(|i| ((i * 7_919) % 1_000) as f64 / 1_000.0 * 0.6).collect();
    let mut beacons = Vec::new();
    for (report, ago) in [(0, 600_000.0), (1, 300_000.0)] {
        for (chunk, ids) in (0..n).collect::<Vec<_>>().chunks(25).enumerate() {
            for url in ["/a", "/b"] {
                let metrics: Vec<Value> = ids
                    .iter()
                    .filter(|&&i| (i % 2 == 0) == (url == "/a"))
                    .map(|&i| {
                        let value = if report == 0 { finals[i] * 0.4 } else { finals[i] };
                        json!({"name": "CLS", "value": value, "id": format!("v5-{i}"), "at": now_ms() - ago})
                    })
                    .collect();
                let mut b = beacon("demo", url, metrics);
                b["page"] = json!(format!("pv-{url}-{chunk}"));
                beacons.push(b);
            }
        }
    }
    (finals, beacons)
}

/// An API-call metric.
pub fn api_call(route: &str, method: &str, status: u16, duration: f64) -> Value {
    json!({"name": "api", "value": duration, "at": now_ms(), "route": route, "method": method, "status": status})
}

/// Value at 0-based rank ⌊p·n⌋ of the sorted values (clamped): the definition of the raw
/// percentiles the collector answers with (ClickHouse's `quantileExact`).
pub fn exact_percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).floor() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
