//! What the protections against a hostile client cost, and what they bound:
//! - spool bytes per wire byte, for the realistic beacons of the ingest section and for the
//!   costliest legal beacon (500 metrics, every envelope string at its longest), measured on the
//!   collector binary with ClickHouse away (everything accepted stays in the spool);
//! - the per-client quota table's memory after 1 M distinct addresses, with its cap (the
//!   default) beside the same table uncapped;
//! - the quotas' time per beacon (three bucket charges), and the privacy scrubbing's (page URL,
//!   an API route, two attribution strings; a clean beacon, and one with an e-mail address, a
//!   token, a signed URL and a site rule), beside the time the whole ingest path takes per beacon
//!   in the ingest section.

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pulse_collector::config::{Config, ScrubRule};
use pulse_collector::ingest::quota::{ClientBuckets, Cost, Quotas, Rates};
use pulse_collector::ingest::scrub::{Scrubber, Tally};
use pulse_testkit::{free_port, now_ms};
use serde_json::{json, Value};

use crate::repo;
use crate::report::Report;

const SECTION: &str = "5. abuse limits (what they cost, what they bound)";

/// The costliest legal beacon.
fn worst_beacon(n: usize) -> Bytes {
    let at = now_ms();
    let metrics: Vec<Value> = (0..500).map(|i| json!({"name": format!("m{}", i % 10), "value": i, "at": at})).collect();
    let body = json!({"v": 1, "site": "demo", "session": format!("{n}-{}", "s".repeat(100)), "page": format!("{n}-{}", "p".repeat(100)),
                      "url": format!("/{}/{n}", "u".repeat(2000)), "nav": "navigate", "release": "r".repeat(256), "env": "e".repeat(256),
                      "sent_at": at, "metrics": metrics});
    Bytes::from(body.to_string())
}

/// Spool bytes per wire byte for these beacons, on the collector binary with ClickHouse away.
async fn spool_ratio(bodies: &[Bytes]) -> f64 {
    let bin = repo().join("target/perf/pulse-collector");
    let port = free_port();
    let spool = pulse_testkit::temp_dir("bench-abuse-spool");
    let mut child = Command::new(&bin)
        .env("PULSE_SPOOL_DIR", &spool)
        .env("PULSE_LISTEN", format!("127.0.0.1:{port}"))
        .env("PULSE_CLICKHOUSE_URL", format!("http://127.0.0.1:{}", free_port()))
        .env("PULSE_IP_RATE_PER_SECOND", "1000000")
        .env("PULSE_IP_READ_RATE_PER_SECOND", "1000000")
        .env("PULSE_IP_BYTES_PER_SECOND", "1000000000000")
        .env("PULSE_IP_METRICS_PER_SECOND", "1000000000000")
        // Every URL stored as itself, as a flood from many addresses would have it.
        .env("PULSE_CARDINALITY_NEW_VALUES_PER_CLIENT_PER_DAY", "1000000000")
        .env("PULSE_LOG", "error")
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
    let mut wire = 0usize;
    for body in bodies {
        let answer = pulse_testkit::http::post_beacon(&base, body.clone()).await;
        if answer.status == 202 {
            wire += body.len();
        }
    }
    let health = pulse_testkit::http::get(&format!("{base}/healthz"), &[]).await.json();
    let spooled = health["spool"]["bytes"].as_f64().unwrap_or(f64::NAN);
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&spool);
    spooled / wire as f64
}

/// Memory of the per-client table after `clients` distinct addresses (IPv6 /64s), and ns per charge.
fn client_table(clients: u32, cap: usize) -> (f64, f64, usize) {
    let buckets = ClientBuckets::new(Rates { beacons: 500, metrics: 10_000, bytes: 1_000_000 }, cap);
    let cost = Cost { beacons: 1, metrics: 20, bytes: 3_000 };
    let started = Instant::now();
    for i in 0..clients {
        let ip = IpAddr::from(((0x2001_0db8u128 << 96) | (u128::from(i) << 64)).to_be_bytes());
        let _ = buckets.charge(ip, cost, u64::from(i) * 1_000);
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(clients);
    (buckets.memory_bytes() as f64 / (1024.0 * 1024.0), ns, buckets.len())
}

pub async fn run(report: &mut Report, quick: bool) {
    let realistic: Vec<Bytes> = crate::ingest::beacons(if quick { 300 } else { 1_000 }).into_iter().map(|(b, _)| b).collect();
    let worst: Vec<Bytes> = (0..if quick { 30 } else { 100 }).map(worst_beacon).collect();
    report.add(SECTION, "spool bytes per wire byte, realistic beacons (10–50 metrics)", spool_ratio(&realistic).await, "B/B");
    report.add(
        SECTION,
        "spool bytes per wire byte, costliest legal beacon (500 metrics, longest envelope)",
        spool_ratio(&worst).await,
        "B/B",
    );
    report.note(
        "before spool format 4 (every row with its own envelope): 22.4 spool bytes per wire byte for the costliest beacon (issue 28)",
    );

    let clients = 1_000_000;
    let cap = Config::default().rate_limit_max_clients;
    let (capped_mib, capped_ns, capped_len) = client_table(clients, cap);
    let (free_mib, free_ns, _) = client_table(clients, usize::MAX);
    report.compare(
        SECTION,
        "quota table memory after 1 M distinct clients (default cap)",
        capped_mib,
        "MiB",
        "the same table without a cap".to_owned(),
        free_mib,
    );
    report.add(SECTION, "clients remembered at the cap (the rest share 4 096 overflow buckets)", capped_len as f64, "");
    report.compare(SECTION, "ns per client charge, 1 M new clients (capped)", capped_ns, "ns", "uncapped".to_owned(), free_ns);

    // A beacon's three charges (beacon, bytes+metrics, site) on a warm table of 10 000 clients.
    let quotas = Quotas::new(&Config { ip_rate_per_second: 1_000_000, ..Config::default() });
    let rounds = 1_000_000u32;
    let started = Instant::now();
    for i in 0..rounds {
        let ip = IpAddr::from((0x0a00_0000 + (i % 10_000)).to_be_bytes());
        let now = u64::from(i) * 10_000;
        let _ = quotas.charge_client(ip, Cost { beacons: 1, ..Cost::default() }, now);
        let _ = quotas.charge_client(ip, Cost { beacons: 0, metrics: 20, bytes: 3_000 }, now);
        let _ = quotas.charge_site("demo", Cost { beacons: 1, metrics: 20, bytes: 3_000 }, now);
    }
    let per_beacon = started.elapsed().as_nanos() as f64 / f64::from(rounds);
    let ingest_per_beacon_ns = {
        let per_s = report.best(crate::ingest::SECTION, "2 worker threads: metrics accepted per second, during load");
        // The ingest section's beacons carry 30 metrics on average.
        if per_s.is_finite() && per_s > 0.0 {
            30.0 / per_s * 1e9
        } else {
            f64::NAN
        }
    };
    report.compare(
        SECTION,
        "quota charges per beacon (3 charges, one thread)",
        per_beacon,
        "ns",
        "wall time per beacon of the whole ingest (section 3, 2 threads)".to_owned(),
        ingest_per_beacon_ns,
    );

    // Scrubbing as ingest runs it per beacon, on the already normalised URL and route.
    let rule = Scrubber::new(&[ScrubRule { pattern: "^/team/[^/]+".into(), replacement: "/team/:user".into() }]).expect("a good rule");
    let clean = ["/products/blue-shoes-42/reviews", "/api/cart/:id", "https://cdn.shop.example/img/hero.jpg", "img.hero"];
    let secrets = [
        "/team/alice/u/bob@shop.example/reset/Xk9aP2mQ7vL8nB3cR5tY1wZq",
        "api.example.com/v1/magic/Xk9_aP2mQ7vL-8nB3cR5tY1wZ/confirm",
        "https://cdn.example.com/hero.jpg?X-Amz-Signature=0a1b2c&X-Amz-Credential=AKIAEXAMPLE",
        "img.hero",
    ];
    let scrub_ns = |scrubber: &Scrubber, [url, route, lcp_url, target]: [&str; 4]| {
        let rounds = 1_000_000u32;
        let started = Instant::now();
        for _ in 0..rounds {
            let mut tally = Tally::default();
            std::hint::black_box(scrubber.path(std::hint::black_box(url).to_owned(), &mut tally));
            std::hint::black_box(scrubber.path(std::hint::black_box(route).to_owned(), &mut tally));
            std::hint::black_box(scrubber.text(std::hint::black_box(lcp_url).to_owned(), &mut tally));
            std::hint::black_box(scrubber.text(std::hint::black_box(target).to_owned(), &mut tally));
        }
        started.elapsed().as_nanos() as f64 / f64::from(rounds)
    };
    report.compare(
        SECTION,
        "privacy scrubbing per beacon, clean (URL, route, 2 attribution strings)",
        scrub_ns(&Scrubber::default(), clean),
        "ns",
        "with an e-mail, tokens, a signed URL and one site rule".to_owned(),
        scrub_ns(&rule, secrets),
    );
}
