//! A public site key against the real binary: what one hostile client can cost is bounded.
//!
//! - A flood from one address is answered 429 (in bytes and metrics, not only beacons) long
//!   before its site's part of the spool is full, while another site's visitors all get 202.
//! - A site's flood, from many addresses, fills only what is not other sites' reserve.
//! - The spool keeps a beacon's envelope once: at most 2 spool bytes per wire byte.
//! - A spoofed `X-Forwarded-For` behind a trusted proxy does not escape the per-client limit.
//! - One client's made-up URLs use only its share of the site's distinct URLs of the day: another
//!   client's new URL is still stored as itself, and every metric counts.
//!
//! Loopback has many addresses: each client binds its socket to its own `127.0.0.x`. ClickHouse
//! is away (a port nobody listens on), as in an outage: everything accepted stays in the spool;
//! except where a test stores rows and gives a ClickHouse of its own.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pulse_testkit::{beacon, clickhouse, free_port, now_ms};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The collector binary, killed when dropped.
struct Collector {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Collector {
    async fn start(test: &str, env: &[(&str, &str)]) -> Collector {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_pulse-collector"));
        command
            .env("PULSE_LISTEN", format!("127.0.0.1:{port}"))
            // Nobody listens there: an outage for the whole test.
            .env("PULSE_CLICKHOUSE_URL", format!("http://127.0.0.1:{}", free_port()))
            .env("PULSE_SPOOL_DIR", pulse_testkit::temp_dir(test))
            .env("PULSE_SITES", "a=http://localhost:*;b=http://localhost:*")
            .env("PULSE_READ_KEYS", "test-read-key")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let collector =
            Collector { child: command.spawn().expect("collector binary starts"), addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        let started = Instant::now();
        while collector.request([127, 0, 0, 1], "GET", "/metrics", &[], "").await.is_none() {
            assert!(started.elapsed() < Duration::from_secs(30), "collector did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        collector
    }

    /// One request on a connection of its own from `from`; (status, headers, body) or None
    /// when there is no answer.
    async fn request(&self, from: [u8; 4], method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Option<Answer> {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::from((from, 0))).ok()?;
        let mut tcp = socket.connect(self.addr).await.ok()?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        tcp.write_all(head.as_bytes()).await.ok()?;
        tcp.write_all(body.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw)).await.ok()?.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some(Answer { status, head: head.to_ascii_lowercase(), body: body.to_owned() })
    }

    async fn beacon(&self, from: [u8; 4], body: &str, headers: &[(&str, &str)]) -> Answer {
        let mut all = vec![("content-type", "text/plain")];
        all.extend_from_slice(headers);
        self.request(from, "POST", "/v1/beacon", &all, body).await.expect("an answer")
    }

    /// The value of the first `/metrics` line starting with `start` (0 when absent).
    async fn metric(&self, start: &str) -> f64 {
        let answer = self.request([127, 0, 0, 1], "GET", "/metrics", &[], "").await.expect("/metrics answers");
        answer.body.lines().find(|l| l.starts_with(start)).and_then(|l| l.rsplit(' ').next()).map_or(0.0, |v| v.parse().expect("a number"))
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    /// The status line and headers, lower case.
    head: String,
    body: String,
}

/// The costliest legal beacon: 500 metrics and every envelope string at its longest.
fn worst_beacon(site: &str, n: usize) -> String {
    let at = now_ms();
    let metrics: Vec<Value> = (0..500).map(|i| json!({"name": format!("m{}", i % 10), "value": i, "at": at})).collect();
    let mut b = beacon(site, &format!("/{}/{}", "u".repeat(2000), n), metrics);
    b["release"] = json!("r".repeat(256));
    b["env"] = json!("e".repeat(256));
    b["session"] = json!(format!("{n}-{}", "s".repeat(100)));
    b["page"] = json!(format!("{n}-{}", "p".repeat(100)));
    b.to_string()
}

fn small_beacon(site: &str, n: usize) -> String {
    let mut b = beacon(site, "/", vec![json!({"name": "LCP", "value": 1200 + n, "at": now_ms(), "id": format!("v5-{n}")})]);
    b["page"] = json!(format!("p-{n}"));
    b.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_is_refused_while_another_site_gets_202() {
    let c = Collector::start(
        "abuse-flood",
        &[("PULSE_SPOOL_MAX_BYTES", "16777216"), ("PULSE_IP_BYTES_PER_SECOND", "100000"), ("PULSE_IP_RATE_PER_SECOND", "500")],
    )
    .await;
    let (mut accepted, mut refused, mut wire) = (0, 0, 0usize);
    for n in 0..200 {
        let body = worst_beacon("a", n);
        let answer = c.beacon([127, 0, 0, 2], &body, &[]).await;
        match answer.status {
            202 => {
                accepted += 1;
                wire += body.len();
            }
            429 => {
                refused += 1;
                assert!(answer.head.contains("retry-after: "), "{}", answer.head);
                assert!(answer.body.contains("too many bytes from this ip"), "{}", answer.body);
            }
            other => panic!("flood answered {other}: {}", answer.body),
        }
        // Another site's visitor, from another address, meanwhile.
        if n % 10 == 0 {
            let b = c.beacon([127, 0, 0, 3], &small_beacon("b", n), &[]).await;
            assert_eq!(b.status, 202, "site b refused during the flood: {}", b.body);
        }
    }
    assert!(accepted >= 1 && refused >= 100, "{accepted} accepted, {refused} refused");
    let spool = c.metric("pulse_spool_bytes ").await;
    let share = 16_777_216.0 / 2.0;
    assert!(spool < share / 4.0, "the flood took {spool} bytes of the spool, its site's part is {share}");
    // Site b's beacons are in the spool too, but small beside the flood's.
    assert!(spool / wire as f64 <= 2.0, "spool bytes per wire byte: {spool} / {wire}");
    eprintln!(
        "flood: {accepted} accepted ({wire} wire bytes, {spool} spool bytes: {:.2} per wire byte), {refused} refused",
        spool / wire as f64
    );
    assert!(c.metric(r#"pulse_ingest_refusals_total{reason="rate_limited_ip_bytes",site="a"}"#).await >= 100.0);
    let health = c.request([127, 0, 0, 1], "GET", "/healthz", &[], "").await.expect("healthz");
    assert!(health.body.contains(r#""full":false"#), "{}", health.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_flood_fills_only_what_is_not_another_sites_reserve() {
    let max = 4 * 1024 * 1024;
    let c = Collector::start(
        "abuse-share",
        &[
            ("PULSE_SPOOL_MAX_BYTES", &max.to_string()),
            ("PULSE_IP_BYTES_PER_SECOND", "1000000000"),
            ("PULSE_IP_METRICS_PER_SECOND", "1000000000"),
            ("PULSE_IP_RATE_PER_SECOND", "100000"),
        ],
    )
    .await;
    let mut wire = 0usize;
    let mut refusal = None;
    for n in 0..1_000 {
        // Many addresses, as a botnet would: the per-client limits do not help here.
        let from = [127, 0, 1, (n % 200) as u8 + 1];
        let body = worst_beacon("a", n);
        let answer = c.beacon(from, &body, &[]).await;
        if answer.status == 202 {
            wire += body.len();
        } else {
            refusal = Some(answer);
            break;
        }
    }
    let refusal = refusal.expect("the flood is refused before 1 000 beacons");
    assert_eq!(refusal.status, 503, "{}", refusal.body);
    assert!(refusal.body.contains("share of the collector's spool"), "{}", refusal.body);
    let held = c.metric(r#"pulse_spool_site_bytes{site="a"}"#).await;
    assert!(held > (max / 4) as f64, "a took more than its own reserve ({held} bytes): the shared part is first come");
    for n in 0..20 {
        let b = c.beacon([127, 0, 0, 3], &small_beacon("b", n), &[]).await;
        assert_eq!(b.status, 202, "site b refused once a's flood filled the rest: {}", b.body);
    }
    assert!(c.metric(r#"pulse_ingest_refusals_total{reason="spool_site_share_full",site="a"}"#).await >= 1.0);
    eprintln!("share: site a held {held} bytes of {max} ({wire} wire bytes) when refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_does_not_escape_the_limit_behind_a_trusted_proxy() {
    let c = Collector::start(
        "abuse-xff",
        &[("PULSE_CLIENT_IP_HEADER", "x-forwarded-for"), ("PULSE_TRUSTED_PROXIES", "127.0.0.1/32"), ("PULSE_IP_RATE_PER_SECOND", "2")],
    )
    .await;
    // The proxy (127.0.0.1) appends the address it saw, 127.0.0.9, to whatever the client wrote.
    let mut statuses = Vec::new();
    for n in 0..12 {
        let spoofed = format!("10.{}.{}.1, 127.0.0.9", n / 250, n % 250);
        statuses.push(c.beacon([127, 0, 0, 1], &small_beacon("b", n), &[("x-forwarded-for", &spoofed)]).await.status);
    }
    let accepted = statuses.iter().filter(|&&s| s == 202).count();
    assert!((4..=5).contains(&accepted), "the burst of 4 (and what a second earns), whatever the first entry: {statuses:?}");
    assert_eq!(statuses.last(), Some(&429));
    let other = c.beacon([127, 0, 0, 1], &small_beacon("b", 99), &[("x-forwarded-for", "10.0.0.1, 127.0.0.10")]).await;
    assert_eq!(other.status, 202, "another client behind the same proxy has its own bucket: {}", other.body);
    // A client that talks to the collector directly cannot pick its address with the header.
    let mut direct = Vec::new();
    for n in 0..8 {
        let spoofed = format!("127.0.0.{}", 20 + n);
        direct.push(c.beacon([127, 0, 0, 5], &small_beacon("b", n), &[("x-forwarded-for", &spoofed)]).await.status);
    }
    assert_eq!(direct.last(), Some(&429), "{direct:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_made_up_urls_do_not_use_up_the_sites_day() {
    let ch = clickhouse();
    let db = ch.fresh_database("abuse_card_client");
    let c = Collector::start(
        "abuse-card-client",
        &[
            ("PULSE_CLICKHOUSE_URL", &ch.url),
            ("PULSE_CLICKHOUSE_DATABASE", &db),
            ("PULSE_FLUSH_INTERVAL_MS", "100"),
            ("PULSE_CARDINALITY_NEW_VALUES_PER_CLIENT_PER_DAY", "10"),
            ("PULSE_CARDINALITY_URLS_PER_DAY", "25"),
        ],
    )
    .await;
    let send = |from: [u8; 4], url: String, n: usize| {
        let c = &c;
        async move {
            let mut b = beacon("a", &url, vec![json!({"name": "LCP", "value": 1000 + n, "at": now_ms(), "id": format!("v5-{n}")})]);
            b["page"] = json!(format!("p-{n}"));
            let answer = c.beacon(from, &b.to_string(), &[]).await;
            assert_eq!(answer.status, 202, "{}", answer.body);
            assert!(answer.body.contains(r#""accepted":1"#), "{}", answer.body);
        }
    };
    // Client A makes up 30 URLs: more than its 10, and more than the site's 25.
    for n in 0..30 {
        send([127, 0, 0, 2], format!("/made-up/page-{n}"), n).await;
    }
    // Client B's new URL is stored as itself; A's known URLs are kept, its new ones are not.
    send([127, 0, 0, 3], "/checkout".into(), 100).await;
    send([127, 0, 0, 2], "/made-up/page-0".into(), 101).await;
    send([127, 0, 0, 2], "/made-up/new".into(), 102).await;

    let started = Instant::now();
    while ch.count(&format!("SELECT count() FROM {db}.metrics")) < 33 {
        assert!(started.elapsed() < Duration::from_secs(30), "the rows were not stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let by_url = ch.sql(&format!("SELECT url, count() FROM {db}.metrics GROUP BY url ORDER BY url FORMAT TSV"));
    let by_url: Vec<(String, u64)> = by_url
        .lines()
        .map(|l| {
            let (url, n) = l.split_once('\t').expect("two columns");
            (url.to_owned(), n.parse().expect("a count"))
        })
        .collect();
    let count = |url: &str| by_url.iter().find(|(u, _)| u == url).map_or(0, |(_, n)| *n);
    assert_eq!(count("(other)"), 21, "A's 20 URLs past its 10, and its later new one: {by_url:?}");
    assert_eq!(count("/checkout"), 1, "B's new URL is itself: {by_url:?}");
    assert_eq!(count("/made-up/page-0"), 2, "a URL the site knows is kept, whoever sends it: {by_url:?}");
    assert_eq!(by_url.len(), 10 + 2, "A's ten, B's one and (other): {by_url:?}");
    assert_eq!(by_url.iter().map(|(_, n)| n).sum::<u64>(), 33, "every metric counts");
    assert_eq!(c.metric(r#"pulse_cardinality_client_folded_total{dimension="url",site="a"}"#).await, 21.0);
    assert_eq!(c.metric(r#"pulse_cardinality_folded_total{dimension="url",site="a"}"#).await, 0.0, "the site's limit was never reached");
}
