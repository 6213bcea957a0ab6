//! The agent's weight (beside web-vitals, Elastic APM RUM, Grafana Faro and Sentry, installed from
//! npm in the same run) and its cost in a page (headless Chromium).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use pulse_collector::config::Config;
use pulse_testkit::browser::chromium;
use pulse_testkit::clickhouse;
use serde_json::Value;

use crate::repo;
use crate::report::Report;

const SECTION_WEIGHT: &str = "1. agent weight (bytes on the wire)";
const SECTION_PAGE: &str = "2. agent cost in the page (headless Chromium)";

/// Raw, gzip -9 and brotli -q 11 sizes of a set of files, each compressed on its own (as served).
fn sizes(files: &[PathBuf]) -> Option<(f64, f64, f64)> {
    let mut total = (0.0, 0.0, 0.0);
    for file in files {
        let raw = std::fs::metadata(file).ok()?.len() as f64;
        let gz = piped("gzip", &["-9", "-c"], file)?;
        let br = piped("brotli", &["-q", "11", "-c"], file)?;
        total = (total.0 + raw, total.1 + gz, total.2 + br);
    }
    Some(total)
}

fn piped(program: &str, args: &[&str], file: &Path) -> Option<f64> {
    let out = Command::new(program).args(args).arg(file).output().ok()?;
    out.status.success().then_some(out.stdout.len() as f64)
}

fn files_matching(dir: &Path, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&pred)).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Installs the other agents from npm (once) into `.pulse/bench-npm`, and bundles Sentry, which
/// ships no browser bundle in its npm package, with esbuild as a user's bundler would.
fn baselines() -> Vec<(String, Vec<PathBuf>)> {
    let dir = repo().join(".pulse/bench-npm");
    let modules = dir.join("node_modules");
    let packages = ["web-vitals@6", "@elastic/apm-rum@5", "@grafana/faro-web-sdk@2", "@sentry/browser@11", "esbuild@0.25"];
    if !modules.join("esbuild").exists() || !modules.join("@sentry/browser").exists() {
        let _ = std::fs::create_dir_all(&dir);
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--no-package-lock", "--prefix"])
            .arg(&dir)
            .args(packages)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("bench: npm install of the baselines failed; their sizes are left out");
        }
    }
    let version = |pkg: &str| -> String {
        std::fs::read_to_string(modules.join(pkg).join("package.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into())
    };
    let sentry_entry = dir.join("sentry-entry.js");
    let sentry_out = dir.join("sentry.bundle.min.js");
    let _ = std::fs::write(
        &sentry_entry,
        "import { init, browserTracingIntegration } from '@sentry/browser';\n\
         init({ dsn: 'https://public@o0.ingest.sentry.io/0', integrations: [browserTracingIntegration()], tracesSampleRate: 1 });\n",
    );
    let _ = Command::new(modules.join(".bin/esbuild"))
        .arg(&sentry_entry)
        .args(["--bundle", "--minify", "--format=esm", "--log-level=warning"])
        .arg(format!("--outfile={}", sentry_out.display()))
        .status();
    let mut out = vec![
        (format!("web-vitals {} (iife)", version("web-vitals")), vec![modules.join("web-vitals/dist/web-vitals.iife.js")]),
        (
            format!("web-vitals {} attribution (iife)", version("web-vitals")),
            vec![modules.join("web-vitals/dist/web-vitals.attribution.iife.js")],
        ),
        (
            format!("@elastic/apm-rum {} (umd.min)", version("@elastic/apm-rum")),
            vec![modules.join("@elastic/apm-rum/dist/bundles/elastic-apm-rum.umd.min.js")],
        ),
        (
            format!("@grafana/faro-web-sdk {} (iife)", version("@grafana/faro-web-sdk")),
            vec![modules.join("@grafana/faro-web-sdk/dist/bundle/faro-web-sdk.iife.js")],
        ),
        (format!("@sentry/browser {} + tracing (esbuild)", version("@sentry/browser")), vec![sentry_out]),
    ];
    out.retain(|(_, files)| files.iter().all(|f| f.exists()));
    out
}

pub fn weight(report: &mut Report) {
    let dist = repo().join("target/agent/dist");
    let wasm = files_matching(&dist, |n| n.ends_with(".wasm"));
    // One module: the entry and the host binding, bundled.
    let js = files_matching(&dist, |n| n.ends_with(".js"));
    let (Some(w), Some(j)) = (sizes(&wasm), sizes(&js)) else {
        report.note("target/agent/dist is missing: run scripts/build-agent.sh first");
        return;
    };
    let pulse = (w.0 + j.0, w.1 + j.1, w.2 + j.2);
    report.add(SECTION_WEIGHT, "pulse wasm raw", w.0, "B");
    report.add(SECTION_WEIGHT, "pulse wasm gzip -9", w.1, "B");
    report.add(SECTION_WEIGHT, "pulse wasm brotli -q 11", w.2, "B");
    report.add(SECTION_WEIGHT, "pulse JS (entry + host binding, one file) raw", j.0, "B");
    report.add(SECTION_WEIGHT, "pulse JS brotli -q 11", j.2, "B");
    for (name, files) in baselines() {
        if let Some(b) = sizes(&files) {
            report.compare(SECTION_WEIGHT, "pulse wasm + JS, raw", pulse.0, "B", format!("{name} raw"), b.0);
            report.compare(SECTION_WEIGHT, "pulse wasm + JS, gzip -9", pulse.1, "B", format!("{name} gzip"), b.1);
            report.compare(SECTION_WEIGHT, "pulse wasm + JS, brotli -q 11", pulse.2, "B", format!("{name} brotli"), b.2);
        }
    }
    twiggy(report);
}

/// The largest contributors to the wasm, from a build that keeps function names.
fn twiggy(report: &mut Report) {
    let built = repo().join("target/wasm32-unknown-unknown/release-wasm/pulse_agent.wasm");
    let tmp = repo().join("target/bench/names");
    let _ = std::fs::create_dir_all(&tmp);
    let ok = Command::new(repo().join(".pulse/tools/node_modules/.bin/wasm-opt"))
        .args([
            "-Oz",
            "-g",
            "--enable-bulk-memory",
            "--enable-sign-ext",
            "--enable-mutable-globals",
            "--enable-nontrapping-float-to-int",
            "--enable-reference-types",
            "--enable-multivalue",
        ])
        .arg(&built)
        .arg("-o")
        .arg(tmp.join("named.wasm"))
        .status()
        .is_ok_and(|s| s.success());
    let top = ok.then(|| Command::new("twiggy").args(["top", "-n", "12"]).arg(tmp.join("named.wasm")).output().ok()).flatten();
    match top {
        Some(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<String> = text
                .lines()
                .skip(2)
                .filter(|l| !l.contains("function names"))
                .take(10)
                .map(|l| l.chars().take(130).collect::<String>().trim().to_owned())
                .collect();
            report.note(format!("twiggy top (largest wasm items, names kept):\n      {}", lines.join("\n      ")));
        }
        _ => report.note("twiggy (cargo install twiggy) or wasm-bindgen not available: no breakdown of the wasm"),
    }
}

pub async fn in_page(report: &mut Report, quick: bool) {
    let ch = clickhouse();
    let db = ch.fresh_database("bench_page");
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        clickhouse_url: ch.url.clone(),
        clickhouse_database: db,
        www_dir: repo().join("bench/www"),
        agent_dir: repo().join("target/agent/dist"),
        ip_rate_per_second: 10_000,
        ip_read_rate_per_second: 1_000_000,
        ip_metrics_per_second: 1_000_000_000,
        ip_bytes_per_second: 1_000_000_000_000,
        spool_dir: pulse_testkit::temp_dir("bench-agent-spool"),
        // The bench page calls `/demo/api/ok`.
        dev: true,
        ..Config::default()
    };
    let running = pulse_collector::start(config).await.expect("collector starts");
    let browser = chromium().await;
    browser.client.goto(&format!("http://{}/", running.addr)).await.expect("open the bench page");
    browser.wait_for("return typeof window.runBench === 'function'").await;
    let calls = if quick { 60 } else { 200 };
    browser
        .js(&format!("window.runBench({calls}).then(r => window.__result = r, e => window.__result = {{error: String(e)}}); return true"))
        .await;
    let mut result = Value::Null;
    for _ in 0..1200 {
        result = browser.js("return window.__result || null").await;
        if !result.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    browser.close().await;
    running.stop().await;
    if let Some(error) = result["error"].as_str() {
        report.note(format!("in-page bench failed: {error}"));
        return;
    }
    let get = |k: &str| result[k].as_f64().unwrap_or(f64::NAN);
    report.add(SECTION_PAGE, "init: download + compile + start (first call, localhost)", get("initFirstMs"), "ms");
    report.add(SECTION_PAGE, "start: init to observers registered (wasm loaded), median", get("startMs"), "ms");
    report.compare(
        SECTION_PAGE,
        format!("fetch round trip, median of {} calls, with agent", calls * 5),
        get("fetchWithMs"),
        "ms",
        "without agent (same page, interleaved)",
        get("fetchWithoutMs"),
    );
    report.add(
        SECTION_PAGE,
        "fetch overhead per call (median with − median without)",
        (get("fetchWithMs") - get("fetchWithoutMs")) * 1000.0,
        "µs",
    );
    report.compare(
        SECTION_PAGE,
        "fetch() call returning (synchronous part), mean over a burst",
        get("callWithMs"),
        "ms",
        "without agent",
        get("callWithoutMs"),
    );
    report.add(SECTION_PAGE, "synchronous overhead per fetch() call", (get("callWithMs") - get("callWithoutMs")) * 1000.0, "µs");
    report.add(SECTION_PAGE, "  of which inside agent code (its own clock)", get("callOwnMs") * 1000.0, "µs");
    report.add(SECTION_PAGE, "scripted session: page time (200 records, 30 fetches, 10 shifts, 20 measures, hide)", get("sessionMs"), "ms");
    report.add(SECTION_PAGE, "  of which main-thread time inside the agent (its own clock)", get("busyMs"), "ms");
    report.add(SECTION_PAGE, "  longest single agent task", get("longestMs"), "ms");
    report.add(SECTION_PAGE, "  metrics measured", get("metrics"), "rows");
    report.add(SECTION_PAGE, "  beacons sent", get("beacons"), "rows");
}
