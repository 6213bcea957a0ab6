//! `pulse budget check` against a real collector and ClickHouse: exit codes and formats.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use pulse_collector::config::Config;
use pulse_testkit::http::post_beacon;
use pulse_testkit::{api_call, beacon, clickhouse, metric, now_ms, temp_dir};
use serde_json::{json, Value};

fn pulse(args: &[&str]) -> (i32, String, String) {
    pulse_with(args, &[])
}

/// `pulse` with `env` set (and no key from the test's own environment).
fn pulse_with(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pulse"))
        .args(args)
        .env_remove("PULSE_READ_KEY")
        .env_remove("PULSE_WRITE_KEY")
        .env_remove("PULSE_ENDPOINT")
        .envs(env.iter().copied())
        .output()
        .expect("pulse runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A collector on a free port with a fresh database of its own; its endpoint and database.
async fn collector(test: &str) -> (pulse_collector::Running, String, String) {
    collector_with(test, Config::default()).await
}

async fn collector_with(test: &str, base: Config) -> (pulse_collector::Running, String, String) {
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
        spool_dir: temp_dir(&format!("spool-{test}")),
        alert_evaluator: false,
        ..base
    };
    let running = pulse_collector::start(config).await.expect("collector starts");
    let endpoint = format!("http://{}", running.addr);
    (running, endpoint, db)
}

/// Waits until `table` of `db` holds `n` rows.
async fn wait_rows(db: &str, table: &str, n: u64) {
    let started = Instant::now();
    while clickhouse().count(&format!("SELECT count() FROM {db}.{table}")) < n {
        assert!(started.elapsed() < Duration::from_secs(20), "{table}: rows not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes a budget file into a fresh directory; its path.
fn budget_file(name: &str, text: &str) -> String {
    let path = temp_dir("budgets").join(name);
    std::fs::write(&path, text).expect("write budgets");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_pass_fail_and_error_with_their_exit_codes() {
    let (running, endpoint, db) = collector("cli").await;
    // /checkout: 100 page views, LCP 1000..=1990 ms (p75 = 1750); /rare: 3 views.
    let metrics: Vec<Value> = (0..100).map(|i| metric("LCP", 1000.0 + f64::from(i) * 10.0, 1000.0)).collect();
    assert_eq!(post_beacon(&endpoint, beacon("demo", "/checkout", metrics).to_string()).await.status, 202);
    let rare: Vec<Value> = (0..3).map(|_| metric("LCP", 9000.0, 1000.0)).collect();
    assert_eq!(post_beacon(&endpoint, beacon("demo", "/rare", rare).to_string()).await.status, 202);
    wait_rows(&db, "metrics", 103).await;

    let file = budget_file;
    let holds = file(
        "holds.toml",
        "site = \"demo\"\nwindow = \"24h\"\n[[budgets]]\nmetric = \"LCP\"\nmax = 2500\nwhere = { url = \"/checkout\" }\n",
    );
    let blown = file("blown.toml", "site = \"demo\"\nwindow = \"24h\"\n[[budgets]]\nmetric = \"LCP\"\nmax = 1500\nwhere = { url = \"/checkout\" }\n[[budgets]]\nname = \"rare page\"\nmetric = \"LCP\"\nmax = 2500\nwhere = { url = \"/rare\" }\n");
    let rare_only = file("rare.toml", "site = \"demo\"\n[[budgets]]\nmetric = \"LCP\"\nmax = 2500\nwhere = { url = \"/rare\" }\n");
    let broken = file("broken.toml", "site = \"demo\"\n[[budgets]]\nmetric = \"LCP\"\nstat = \"p42\"\nmax = 2500\n");
    let key = ["--endpoint", endpoint.as_str(), "--key", "dev-read-key"];
    let check = |f: &str, extra: &[&str]| {
        let mut args = vec!["budget", "check", f];
        args.extend_from_slice(&key);
        args.extend_from_slice(extra);
        pulse(&args)
    };

    let (code, out, err) = check(&holds, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("LCP p75 url=/checkout") && out.contains("1750") && out.contains("pass"), "{out}");

    let (code, out, _) = check(&blown, &["--format", "json"]);
    assert_eq!(code, 1, "{out}");
    let doc: Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(doc["results"][0]["verdict"], "fail");
    assert_eq!(doc["results"][0]["margin"], json!(-250.0));
    assert_eq!(doc["results"][1]["verdict"], "insufficient_data", "3 views < 40");
    let (_, junit, _) = check(&blown, &["--format", "junit"]);
    assert!(junit.contains("tests=\"2\" failures=\"1\" skipped=\"1\"") && junit.contains("<failure"), "{junit}");
    let (_, md, _) = check(&blown, &["--format", "markdown"]);
    assert!(md.contains("| ❌ | LCP p75 url=/checkout | 1750 | 1500 | -250 | 100 |") && md.contains("⚠️"), "{md}");

    // Too little data passes unless --strict.
    assert_eq!(check(&rare_only, &[]).0, 0);
    assert_eq!(check(&rare_only, &["--strict"]).0, 1);

    // Errors: a bad file (named budget and field), a wrong key, an unreachable collector.
    let (code, _, err) = check(&broken, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("budgets[0] (LCP p42).stat"), "{err}");
    let (code, _, err) = pulse(&["budget", "check", &holds, "--endpoint", &endpoint, "--key", "wrong"]);
    assert_eq!(code, 2);
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = pulse(&["budget", "check", &holds, "--endpoint", "http://127.0.0.1:9", "--key", "k"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach the collector"), "{err}");

    // The terminal client.
    let (code, out, err) =
        pulse(&["vitals", "--site", "demo", "--metric", "LCP", "--group-by", "url", "--endpoint", &endpoint, "--key", "dev-read-key"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/checkout") && out.contains("source: raw"), "{out}");
    // `pulse compare --stat p90` prints the p90 of each side (rank ⌊0.9·100⌋ = 90 → 1900 ms).
    let (from, to) = (now_ms() as i64 - 3_600_000, now_ms() as i64 + 60_000);
    let side = format!("range:{from}..{to}");
    let (code, out, err) = pulse(&[
        "compare",
        "--site",
        "demo",
        "--metric",
        "LCP",
        "--where",
        "url=/checkout",
        "--a",
        &side,
        "--b",
        &side,
        "--stat",
        "p90",
        "--endpoint",
        &endpoint,
        "--key",
        "dev-read-key",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("LCP p90: {side} 1900 (100 samples) → {side} 1900 (100 samples)")), "{out}");
    running.stop().await;
}

/// An `api` budget on a route holds for all of its calls: 1000 GET at 1 % errors and 400 POST at
/// 50 % errors are 15 % errors on the route, not the busiest method's 1 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_budget_counts_every_method_of_its_route() {
    let (running, endpoint, db) = collector("cli-api").await;
    // A minute ago: the budget's window ends at the second the check runs.
    let call = |method: &str, status: u16| {
        let mut call = api_call("/api/orders", method, status, 50.0);
        call["at"] = json!(now_ms() - 60_000.0);
        call
    };
    let calls: Vec<Value> = (0..1000)
        .map(|i| call("GET", if i % 100 == 0 { 500 } else { 200 }))
        .chain((0..400).map(|i| call("POST", if i % 2 == 0 { 500 } else { 201 })))
        .collect();
    for (n, chunk) in calls.chunks(200).enumerate() {
        let mut b = beacon("demo", "/shop", chunk.to_vec());
        b["page"] = json!(format!("page-{n}"));
        assert_eq!(post_beacon(&endpoint, b.to_string()).await.status, 202);
    }
    wait_rows(&db, "api_calls", 1400).await;

    let file = budget_file(
        "api.toml",
        "site = \"demo\"\nwindow = \"24h\"\n[[budgets]]\nmetric = \"api\"\nstat = \"error_rate\"\nmax = 0.1\nwhere = { route = \"/api/orders\" }\n",
    );
    let (code, out, err) = pulse(&["budget", "check", &file, "--endpoint", &endpoint, "--key", "dev-read-key", "--format", "json"]);
    assert_eq!(code, 1, "{out}{err}");
    let doc: Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(doc["results"][0]["verdict"], "fail", "{doc}");
    assert_eq!(doc["results"][0]["value"], json!(0.15), "{doc}");
    assert_eq!(doc["results"][0]["samples"], 1400, "{doc}");
    running.stop().await;
}

/// A server on a free port that answers every request `200 OK` with `body`; its endpoint.
fn answering_200(content_type: &'static str, body: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match std::io::Read::read(&mut stream, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut stream, answer.as_bytes());
        }
    });
    endpoint
}

/// A 200 that is not the collector's answer (a proxy's login page, a JSON without rows) is an
/// error, not "insufficient data" that passes.
#[test]
fn an_answer_that_is_not_the_collectors_is_an_error() {
    let file = budget_file("lcp.toml", "site = \"demo\"\n[[budgets]]\nmetric = \"LCP\"\nmax = 2500\n");
    let html = answering_200("text/html", "<!doctype html><title>Sign in</title>");
    let (code, out, err) = pulse(&["budget", "check", &file, "--endpoint", &html, "--key", "k"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("/v1/vitals: the collector answered 200 OK with a body that is not JSON") && err.contains("<!doctype html>"),
        "{err}"
    );
    let rowless = answering_200("application/json", "{\"site\": \"demo\"}");
    let (code, out, err) = pulse(&["budget", "check", &file, "--endpoint", &rowless, "--key", "k"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("/v1/vitals: the answer has no \"rows\" array"), "{err}");
}

/// A vital's name in the wrong case is a custom metric that never has data: refused.
#[test]
fn a_vital_in_lower_case_is_refused_naming_the_field() {
    let file = budget_file("lower.toml", "site = \"demo\"\n[[budgets]]\nmetric = \"lcp\"\nmax = 2500\n");
    let (code, out, err) = pulse(&["budget", "check", &file, "--endpoint", "http://127.0.0.1:9", "--key", "k"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("budgets[0] (lcp p75).metric: \"lcp\" is not a vital (names are upper case: \"LCP\")"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_new_declares_once_with_a_write_key_and_fails_without_one() {
    let write_keys = vec![pulse_collector::config::WriteKey { key: "ci-key".into(), sites: None }];
    let (running, endpoint, db) = collector_with("cli_release", Config { write_keys, ..Config::default() }).await;
    let declared = || clickhouse().count(&format!("SELECT count() FROM {db}.releases WHERE site = 'demo' AND release = '2.4.1'"));
    // Endpoint and key from the environment, as a CI step sets them.
    let env = [("PULSE_ENDPOINT", endpoint.as_str()), ("PULSE_WRITE_KEY", "ci-key")];
    let (code, out, err) = pulse_with(&["release", "new", "2.4.1", "--site", "demo"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("declared release 2.4.1 of site demo at "), "{out}");
    let (code, out, err) = pulse_with(&["release", "new", "2.4.1", "--site", "demo", "--endpoint", &endpoint, "--key", "ci-key"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("was already declared"), "{out}");
    assert_eq!(declared(), 1, "declared twice is one release");

    // A read key, an unknown site, a bad release and no key at all fail with the reason.
    let with_key = |key: &'static str| [("PULSE_ENDPOINT", endpoint.clone()), ("PULSE_WRITE_KEY", key.to_owned())];
    for (args, key, says) in [
        (vec!["release", "new", "2.4.2", "--site", "demo"], "dev-read-key", "401"),
        (vec!["release", "new", "2.4.2", "--site", "nope"], "ci-key", "(field site)"),
        (vec!["release", "new", "2.4.2\u{1}", "--site", "demo"], "ci-key", "(field release)"),
    ] {
        let env = with_key(key);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, out, err) = pulse_with(&args, &env);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, _, err) = pulse_with(&["release", "new", "2.4.2", "--site", "demo", "--endpoint", &endpoint], &[]);
    assert_ne!(code, 0, "no key: {err}");
    assert!(err.contains("--key"), "{err}");
    assert_eq!(clickhouse().count(&format!("SELECT count() FROM {db}.releases")), 1, "nothing refused was stored");
    running.stop().await;
}
