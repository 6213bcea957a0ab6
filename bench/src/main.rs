//! `make bench`: Pulse measured against its limits, each figure beside a baseline measured in the
//! same run. Prints a table and writes `target/bench/results.json`. Nothing here passes or fails.
//!
//! 1. Agent weight: wasm + glue (raw, gzip -9, brotli -q 11) beside web-vitals and other agents.
//! 2. Agent cost in the page (headless Chromium): init, main-thread time, per-fetch overhead.
//! 3. Ingest throughput: realistic beacons on loopback → stored metrics/s, latency, peak RSS;
//!    beside RowBinary inserts straight into ClickHouse; with 1 and 2 collector worker threads.
//! 4. Query latency over 1 M and 10 M realistic synthetic rows (30 days): the API (exact answers
//!    and rollups per query shape) beside the same question asked of the raw table; the
//!    finalizer's time and disk bytes per stored metric.
//! 5. Abuse limits: spool bytes per wire byte (realistic and costliest beacons), the quota
//!    table's memory at 1 M clients (capped and not), and the quotas' time per beacon.
//!
//! `--quick` (under 2 minutes) shortens every run and uses 100 k / 1 M rows; `--big` queries
//! 10 M and 100 M rows.

mod abuse;
mod agent;
mod ingest;
mod query;
mod report;

use std::path::PathBuf;

use report::Report;

/// The repository root (the bench runs from anywhere).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let big = args.iter().any(|a| a == "--big");
    // `--only weight|page|ingest|query|abuse`: one section (while working on it).
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let runs = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let started = std::time::Instant::now();
    let mut report = Report::new(quick);

    if runs("weight") {
        eprintln!("bench: 1/5 agent weight");
        agent::weight(&mut report);
    }
    if runs("page") {
        eprintln!("bench: 2/5 agent cost in Chromium");
        agent::in_page(&mut report, quick).await;
    }
    if runs("ingest") {
        eprintln!("bench: 3/5 ingest throughput");
        ingest::run(&mut report, quick).await;
    }
    if runs("query") {
        eprintln!("bench: 4/5 query latency");
        query::run(&mut report, quick, big).await;
    }

    if runs("abuse") {
        eprintln!("bench: 5/5 abuse limits");
        abuse::run(&mut report, quick).await;
    }

    report.finish(started.elapsed());
}
