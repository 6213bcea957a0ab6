//! Slow and stalled clients against the real binary: connections that never finish a request
//! head, or idle after one, are closed; the connection cap holds, and so does the cap per client;
//! and SIGTERM with hundreds of stalled connections open still ends within the grace period with
//! every acknowledged row stored.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pulse_testkit::http::post_beacon;
use pulse_testkit::{beacon, clickhouse, free_port, metric};

/// What a client sends before it stalls: half a request head.
const HALF_HEAD: &[u8] = b"POST /v1/beacon HTTP/1.1\r\nHost: x\r\n";

/// The collector binary, killed when dropped (a failing test leaves no process behind).
struct Collector {
    child: Child,
    port: u16,
    db: String,
}

impl Collector {
    async fn start(test: &str, env: &[(&str, &str)]) -> Collector {
        let ch = clickhouse();
        let db = ch.fresh_database(test);
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_pulse-collector"));
        command
            .env("PULSE_LISTEN", format!("127.0.0.1:{port}"))
            .env("PULSE_CLICKHOUSE_URL", &ch.url)
            .env("PULSE_CLICKHOUSE_DATABASE", &db)
            .env("PULSE_SPOOL_DIR", pulse_testkit::temp_dir(test))
            .env("PULSE_IP_RATE_PER_SECOND", "1000")
            .env("PULSE_IP_METRICS_PER_SECOND", "1000000000")
            .env("PULSE_IP_BYTES_PER_SECOND", "1000000000000")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let collector = Collector { child: command.spawn().expect("collector binary starts"), port, db };
        // Ready once the schema is in place (beacons are accepted before, but these tests count
        // what shutdown ships, not a backlog shipped when the shipper starts).
        let started = Instant::now();
        while !collector.get("/healthz").is_some_and(|(status, body)| status == 200 && body.contains(r#""schema":"ready""#)) {
            assert!(started.elapsed() < Duration::from_secs(30), "collector did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        collector
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port)).expect("connects")
    }

    /// A connection from `from` (loopback has every `127.x.y.z`: a client of its own each).
    async fn connect_from(&self, from: [u8; 4]) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::from((from, 0))).expect("bound to its own address");
        let tcp = socket.connect(SocketAddr::from(([127, 0, 0, 1], self.port))).await.expect("connects").into_std().expect("std");
        tcp.set_nonblocking(false).expect("blocking");
        tcp
    }

    /// A beacon from `from` on a connection of its own: its status, or None when the connection
    /// is closed without an answer.
    async fn beacon_from(&self, from: [u8; 4]) -> Option<u16> {
        let mut tcp = self.connect_from(from).await;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let body = beacon("demo", "/", vec![metric("LCP", 1500.0, 0.0)]).to_string();
        tcp.write_all(beacon_request(&body).as_bytes()).ok()?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).ok()?;
        parse(&answer).map(|(status, _)| status)
    }

    /// A connection that sent half a request head and then nothing.
    fn stalled(&self) -> TcpStream {
        let mut tcp = self.connect();
        tcp.write_all(HALF_HEAD).expect("half a head sent");
        tcp
    }

    /// GET on a connection of its own (`Connection: close`); None when it cannot connect, breaks
    /// or gets no answer within 5 s.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).ok()?;
        parse(&answer)
    }

    fn metric(&self, line_start: &str) -> f64 {
        let (_, text) = self.get("/metrics").expect("/metrics answers");
        text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()).map_or(0.0, |v| v.parse().expect("a number"))
    }

    fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success());
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status and body of a whole HTTP/1.1 answer (the body read to the connection's end).
fn parse(answer: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(answer);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// A beacon POST as `sendBeacon` sends it, on its own connection.
fn beacon_request(body: &str) -> String {
    format!(
        "POST /v1/beacon HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain;charset=UTF-8\r\nOrigin: http://localhost:3000\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Whether the server has closed `tcp` (end of stream or a reset); never blocks.
fn closed_by_server(tcp: &mut TcpStream) -> bool {
    tcp.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 512];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (none is expected) before the close
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// Polls until every connection is closed by the server or `within` passes; returns when each was
/// first seen closed.
async fn wait_closed(connections: &mut [TcpStream], within: Duration) -> Vec<Instant> {
    let started = Instant::now();
    let mut closed_at: Vec<Option<Instant>> = vec![None; connections.len()];
    while closed_at.iter().any(Option::is_none) {
        for (tcp, at) in connections.iter_mut().zip(closed_at.iter_mut()) {
            if at.is_none() && closed_by_server(tcp) {
                *at = Some(Instant::now());
            }
        }
        let open = closed_at.iter().filter(|c| c.is_none()).count();
        assert!(started.elapsed() < within, "{open} of {} connections still open after {within:?}", connections.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    closed_at.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_idle_connections_are_closed_while_beacons_are_served() {
    // The idle timeout is the longer one, so an idle close cannot be the header timer.
    let collector = Collector::start("slow_timeouts", &[("PULSE_HEADER_READ_TIMEOUT_MS", "1000"), ("PULSE_IDLE_TIMEOUT_MS", "2500")]).await;

    let opened = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..50).map(|_| collector.stalled()).collect();

    // A keep-alive connection: one request answered whole, then silence.
    let mut idle = collector.connect();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("request sent");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let answered = loop {
        let n = idle.read(&mut buf).expect("answer read");
        assert!(n > 0, "closed before the whole answer");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().expect("length")))
            .expect("a Content-Length");
        if body.len() >= length {
            break Instant::now();
        }
    };
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));

    // Beacons on fresh connections are answered throughout.
    let sending = {
        let base = collector.base();
        tokio::spawn(async move {
            let mut sent = 0;
            while opened.elapsed() < Duration::from_secs(4) {
                let r = post_beacon(&base, beacon("demo", "/", vec![metric("LCP", 1200.0, 0.0)]).to_string()).await;
                assert_eq!(r.status, 202, "{}", r.text());
                sent += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sent
        })
    };

    let closed = wait_closed(&mut stalled, Duration::from_secs(15)).await;
    // Not before the header timeout: each was accepted after `opened`.
    assert!(closed.iter().all(|at| at.duration_since(opened) >= Duration::from_millis(1000)));
    let idle_closed = wait_closed(std::slice::from_mut(&mut idle), Duration::from_secs(15)).await[0];
    // The idle timer starts when the answer was sent, a moment before it was read here.
    let idled = idle_closed.duration_since(answered);
    assert!(idled >= Duration::from_millis(2400), "an idle connection closed after {idled:?}, before its idle timeout");

    let sent = sending.await.expect("beacons sent");
    assert!(sent >= 10, "{sent} beacons sent");
    assert!(collector.metric(r#"pulse_connections_closed_total{reason="header_timeout"}"#) >= 50.0);
    assert!(collector.metric(r#"pulse_connections_closed_total{reason="idle"}"#) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_stalled_connections_exits_within_the_grace_period_with_every_accepted_row() {
    let grace = Duration::from_secs(5);
    let mut collector = Collector::start(
        "slow_sigterm",
        &[
            // Stalled connections are still open at the signal.
            ("PULSE_HEADER_READ_TIMEOUT_MS", "600000"),
            ("PULSE_IDLE_TIMEOUT_MS", "600000"),
            ("PULSE_SHUTDOWN_GRACE_SECONDS", "5"),
            // Nothing is flushed by size or time before the signal: only shutdown can store rows.
            ("PULSE_FLUSH_INTERVAL_MS", "600000"),
            ("PULSE_BATCH_ROWS", "1000000"),
        ],
    )
    .await;
    let base = collector.base();
    for i in 0..20 {
        let metrics = (0..10).map(|j| metric("LCP", f64::from(i * 10 + j), 0.0)).collect();
        let r = post_beacon(&base, beacon("demo", "/", metrics).to_string()).await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let stalled: Vec<TcpStream> = (0..200).map(|_| collector.stalled()).collect();
    // Requests under way that never finish: a beacon whose body stops halfway (read for up to
    // `body_timeout_ms`, longer than the drain). They are dropped at the drain deadline, never
    // acknowledged.
    let body = beacon("demo", "/", vec![metric("LCP", 9999.0, 0.0)]).to_string();
    let request = beacon_request(&body);
    let half_body: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut tcp = collector.connect();
            tcp.write_all(&request.as_bytes()[..request.len() - body.len() / 2]).expect("half a body sent");
            tcp
        })
        .collect();
    // Every one accepted (a connection the kernel completed may wait a moment in the backlog).
    let started = Instant::now();
    while collector.metric("pulse_connections_open ") < 206.0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the stalled connections were not all accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    collector.sigterm();
    let signalled = Instant::now();
    let exit = loop {
        if let Some(exit) = collector.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(signalled.elapsed() < Duration::from_secs(30), "collector did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    eprintln!("exited {took:?} after SIGTERM with {} stalled connections (grace {grace:?})", stalled.len() + half_body.len());
    assert!(exit.success(), "exit status {exit}");
    // The margin is for the process's own exit, not a benchmark.
    assert!(took < grace + Duration::from_secs(3), "exit took {took:?}, grace {grace:?}");
    let db = &collector.db;
    assert_eq!(clickhouse().count(&format!("SELECT count() FROM {db}.metrics")), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_a_connection_waits_for_a_free_slot() {
    let collector = Collector::start(
        "slow_cap",
        &[("PULSE_MAX_CONNECTIONS", "20"), ("PULSE_HEADER_READ_TIMEOUT_MS", "600000"), ("PULSE_IDLE_TIMEOUT_MS", "600000")],
    )
    .await;
    // The readiness checks' connections are gone (their close reached the server): only the
    // connection asking is open.
    let started = Instant::now();
    while collector.metric("pulse_connections_open ") != 1.0 {
        assert!(started.elapsed() < Duration::from_secs(10), "earlier connections still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stalled: Vec<TcpStream> = (0..20).map(|_| collector.stalled()).collect();

    // The 21st connection is made (the kernel's backlog) but its request is not read.
    let body = beacon("demo", "/", vec![metric("LCP", 1500.0, 0.0)]).to_string();
    let mut waiting = collector.connect();
    waiting.write_all(beacon_request(&body).as_bytes()).expect("request sent");
    waiting.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout set");
    let mut buf = [0u8; 64];
    let early = waiting.read(&mut buf);
    assert!(
        early.as_ref().is_err_and(|e| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "the 21st connection was answered while 20 were open: {early:?}"
    );

    // One stalled client goes away: its slot serves the waiting request.
    drop(stalled.pop());
    waiting.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout set");
    let mut answer = Vec::new();
    waiting.read_to_end(&mut answer).expect("answered once a slot is free");
    assert_eq!(parse(&answer).map(|(status, _)| status), Some(202), "{}", String::from_utf8_lossy(&answer));

    drop(stalled.pop()); // a slot for the question below
    assert!(collector.metric("pulse_connection_slots_exhausted_total") >= 1.0);
    let mut collector = collector;
    assert!(collector.child.try_wait().expect("wait").is_none(), "the collector is still running");
}

/// Open connections that nobody has closed yet.
fn still_open(connections: &mut [TcpStream]) -> usize {
    connections.iter_mut().map(|tcp| !closed_by_server(tcp)).filter(|&open| open).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_connection_cap_a_client_is_closed_at_once_while_others_are_served() {
    let collector = Collector::start(
        "slow_ip_cap",
        &[
            ("PULSE_IP_MAX_CONNECTIONS", "5"),
            ("PULSE_HEADER_READ_TIMEOUT_MS", "600000"),
            ("PULSE_IDLE_TIMEOUT_MS", "600000"),
            // 127.0.0.1 is the proxy in front (and asks for /metrics); 127.0.0.2 and the others
            // are clients that talk to the collector directly, capped by their own address.
            ("PULSE_CLIENT_IP_HEADER", "x-forwarded-for"),
            ("PULSE_TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    )
    .await;
    let refused = || collector.metric(r#"pulse_connections_refused_total{reason="ip_cap"}"#);

    // Eight idle connections (nothing sent, as a slowloris holds them) from one client.
    let mut flood = Vec::new();
    for _ in 0..8 {
        flood.push(collector.connect_from([127, 0, 0, 2]).await);
    }
    let started = Instant::now();
    while refused() < 3.0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the connections past the cap were not refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The three past the cap are closed at once, not at a timeout (both are 10 minutes here).
    let started = Instant::now();
    while still_open(&mut flood) > 5 {
        assert!(started.elapsed() < Duration::from_secs(5), "{} of 8 still open", still_open(&mut flood));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(still_open(&mut flood), 5, "the cap's five are served");
    assert_eq!(collector.beacon_from([127, 0, 0, 2]).await, None, "a ninth from the same client is closed unanswered");
    assert_eq!(refused(), 4.0);

    // Another client is served meanwhile, and so is the trusted proxy, past any client's cap.
    assert_eq!(collector.beacon_from([127, 0, 0, 3]).await, Some(202));
    let mut proxied = Vec::new();
    for _ in 0..8 {
        proxied.push(collector.connect_from([127, 0, 0, 1]).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(still_open(&mut proxied), 8, "a trusted proxy carries many clients: not capped");
    assert_eq!(refused(), 4.0);

    // A client at its cap with an idle keep-alive connection: that one makes room.
    let mut idle = collector.connect_from([127, 0, 0, 4]).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("request sent");
    idle.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout set");
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).expect("answered");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(collector.connect_from([127, 0, 0, 4]).await);
    }
    assert_eq!(collector.beacon_from([127, 0, 0, 4]).await, Some(202), "the idle connection made room");
    wait_closed(std::slice::from_mut(&mut idle), Duration::from_secs(5)).await;
    assert_eq!(refused(), 4.0);
    assert!(collector.metric(r#"pulse_connections_closed_total{reason="ip_cap"}"#) >= 1.0);

    // Once its connections are gone, the first client is served again.
    drop(flood);
    let started = Instant::now();
    loop {
        match collector.beacon_from([127, 0, 0, 2]).await {
            Some(status) => break assert_eq!(status, 202),
            // Its closes may not have reached the server yet.
            None => assert!(started.elapsed() < Duration::from_secs(10), "still refused after its connections closed"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((proxied, stalled));
}
