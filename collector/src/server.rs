//! The connection layer, before a request reaches the [`router`](crate::router): accepting
//! connections up to `max_connections`, and up to `ip_max_connections` per client
//! ([`PerClient`]), closing those that are slow to send a request head
//! (`header_read_timeout_ms`) or idle between requests (`idle_timeout_ms`), and draining them at
//! shutdown.
//!
//! # Why the timeouts are ours, not hyper's
//! hyper 1.12's `header_read_timeout` starts whenever the connection begins to read a head
//! (`proto/h1/conn.rs`, `poll_read_head`): right after accept and again right after each
//! response (`State::idle` sets `notify_read` so the next head read starts the timer). It is
//! therefore also the keep-alive idle timeout, with the same value, and its expiry cannot be told
//! apart from an idle close. So hyper's is turned off, and one watcher per connection enforces
//! both from what the connection does ([`Activity`]): bytes read (through [`Watched`]), requests
//! handed to the router and their responses finished.
//!
//! # Shutdown
//! [`Server::drain`] stops accepting, closes at once every connection without a request under
//! way (idle, or still sending a head: nothing was acknowledged on it), lets requests under way
//! finish (hyper closes their connection after the response), and at the drain deadline drops
//! whatever is still open: a request dropped then never got its 202.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::ingest::client_ip::ClientIp;
use crate::ingest::quota::client_key;
use crate::telemetry::Telemetry;

/// The connection limits, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From accept, or from the first byte of a later request, until its head is complete.
    pub header_read: Duration,
    /// Between the end of a response and the first byte of the next request.
    pub idle: Duration,
    /// Connections served at once; more wait in the kernel's listen backlog.
    pub max_connections: usize,
    /// Connections one client may hold open at once (see [`PerClient`]).
    pub ip_max_connections: usize,
}

/// Why a connection was closed (`pulse_connections_closed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client closed it, or broke the protocol.
    Client,
    /// A request head did not arrive in time.
    HeaderTimeout,
    /// No request came in time after the last response.
    Idle,
    /// Closed by shutdown: between requests at once, or still open at the drain deadline.
    Shutdown,
    /// Idle, closed to make room for a newer connection of its client (`ip_max_connections`).
    IpCap,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Client => "client",
            Closed::HeaderTimeout => "header_timeout",
            Closed::Idle => "idle",
            Closed::Shutdown => "shutdown",
            Closed::IpCap => "ip_cap",
        }
    }
}

/// What a connection is doing, as far as its timeouts care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    /// Requests handed to the router whose response has not been sent whole.
    in_flight: usize,
    /// Since when a request head is awaited: set at accept (a new connection owes its first
    /// request's head, as nginx's `client_header_timeout` runs from accept) and at the first byte
    /// read between requests; cleared when a request is handed to the router.
    head_since: Option<Instant>,
    /// When the last response was finished (idle from then on).
    idle_since: Instant,
    /// Its client needs the slot: close it as soon as it is idle.
    evicted: bool,
}

impl State {
    fn new(accepted: Instant) -> State {
        State { in_flight: 0, head_since: Some(accepted), idle_since: accepted, evicted: false }
    }

    /// When this connection is to be closed if nothing changes, and why. None while a request is
    /// under way: its body read is bounded by the handler (`body_timeout_ms`).
    fn due(&self, limits: &Limits) -> Option<(Instant, Closed)> {
        if self.in_flight > 0 {
            return None;
        }
        Some(match self.head_since {
            Some(since) => (since + limits.header_read, Closed::HeaderTimeout),
            None if self.evicted => (self.idle_since, Closed::IpCap),
            None => (self.idle_since + limits.idle, Closed::Idle),
        })
    }

    /// Idle after a response: closing it now loses nothing and costs its client only a new
    /// connection for its next request.
    fn idle(&self) -> bool {
        self.in_flight == 0 && self.head_since.is_none()
    }

    /// Nothing acknowledged can be lost by closing now.
    fn between_requests(&self) -> bool {
        self.in_flight == 0
    }

    fn read(&mut self, now: Instant) {
        // Bytes read during a request are its body (or a pipelined next head, left to the idle
        // timeout: browsers do not pipeline).
        if self.in_flight == 0 && self.head_since.is_none() {
            self.head_since = Some(now);
        }
    }

    fn request_started(&mut self) {
        self.in_flight += 1;
        self.head_since = None;
    }

    fn response_finished(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.idle_since = now;
    }
}

/// A connection's [`State`], shared by its IO, its requests and its watcher.
#[derive(Debug)]
struct Activity {
    state: Mutex<State>,
    /// Wakes the watcher when the deadline may have moved earlier.
    changed: Notify,
}

impl Activity {
    fn new(accepted: Instant) -> Activity {
        Activity { state: Mutex::new(State::new(accepted)), changed: Notify::new() }
    }

    fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn get(&self) -> State {
        self.update(|s| *s)
    }
}

/// The connections open per client, for `ip_max_connections`.
///
/// The client is the socket's peer (an IPv4 address, or an IPv6 /64 as the quotas group it):
/// connections come from whoever is in front, so a header means nothing here. A peer that is a
/// trusted proxy ([`ClientIp::is_proxy`]) carries many clients and is not counted. A client at its
/// cap makes room by closing its longest-idle keep-alive connection; with none idle (every one
/// under way or still owing a head, as a slowloris holds them) the new connection is refused.
/// Memory: an entry per client with a connection open, removed with its last connection, so at
/// most `max_connections` entries and one pointer per open connection.
#[derive(Debug)]
struct PerClient {
    cap: usize,
    proxies: ClientIp,
    open: Mutex<HashMap<u128, Vec<Arc<Activity>>>>,
}

/// A connection's place in [`PerClient`], given back when dropped.
struct ClientSlot {
    table: Arc<PerClient>,
    /// None for a trusted proxy (not counted).
    key: Option<u128>,
    activity: Arc<Activity>,
}

impl PerClient {
    fn new(cap: usize, proxies: ClientIp) -> PerClient {
        PerClient { cap: cap.max(1), proxies, open: Mutex::new(HashMap::new()) }
    }

    /// A slot for a connection from `peer`, or None when its client has `cap` connections open
    /// and none of them idle.
    fn admit(self: &Arc<Self>, peer: IpAddr, activity: &Arc<Activity>) -> Option<ClientSlot> {
        let slot = |key| ClientSlot { table: self.clone(), key, activity: activity.clone() };
        if self.proxies.is_proxy(peer) {
            return Some(slot(None));
        }
        let key = client_key(peer);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let conns = open.entry(key).or_default();
        // Those told to close still count until they are gone, so the cap is passed only by
        // connections about to close.
        if conns.len() >= self.cap {
            let idle = conns
                .iter()
                .filter_map(|c| {
                    let s = c.get();
                    (s.idle() && !s.evicted).then_some((s.idle_since, c))
                })
                .min_by_key(|(since, _)| *since)
                .map(|(_, c)| c.clone());
            let evicted = idle?;
            evicted.update(|s| s.evicted = true);
            evicted.changed.notify_one();
        }
        conns.push(activity.clone());
        Some(slot(Some(key)))
    }

    /// Clients with a connection open.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.open.lock().map_or(0, |o| o.len())
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut open = self.table.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conns) = open.get_mut(&key) {
            conns.retain(|c| !Arc::ptr_eq(c, &self.activity));
            if conns.is_empty() {
                open.remove(&key);
            }
        }
    }
}

/// Marks a request under way until dropped (with its response body, once sent whole).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> InFlight {
        activity.update(State::request_started);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|s| s.response_finished(Instant::now()));
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request under way until hyper drops it (sent whole, or the
/// connection gone), so a long download is not closed as idle.
struct Tracked {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    // Forwarded so hyper still sends `Content-Length` where the body's length is known.
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The accepted socket, telling [`Activity`] when bytes arrive.
struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let started = self.activity.update(|s| {
                let waiting = s.head_since.is_some();
                s.read(Instant::now());
                !waiting && s.head_since.is_some()
            });
            if started {
                self.activity.changed.notify_one();
            }
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Where the server is in its life; every connection watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Not accepting; connections close once no request is under way.
    Draining,
    /// The drain deadline passed: every connection is dropped.
    Closing,
}

/// The running accept loop and its connections.
#[derive(Debug)]
pub struct Server {
    phase: watch::Sender<Phase>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `router` on `listener` until [`Server::drain`].
    /// `proxies` tells which peers are trusted proxies, exempt from `ip_max_connections`.
    pub fn spawn(listener: TcpListener, router: Router, limits: Limits, proxies: ClientIp, telemetry: Telemetry) -> Server {
        let (phase, watching) = watch::channel(Phase::Serving);
        let per_client = Arc::new(PerClient::new(limits.ip_max_connections, proxies));
        let task = tokio::spawn(accept_loop(listener, router, limits, per_client, telemetry, watching));
        Server { phase, task }
    }

    /// Stops accepting, closes every connection without a request under way, lets the requests
    /// under way finish until `deadline`, then drops the connections still open. Returns when
    /// every connection is closed.
    pub async fn drain(self, deadline: Instant) {
        let _ = self.phase.send(Phase::Draining);
        let mut task = self.task;
        let finished = match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(finished) => finished,
            Err(_) => {
                let _ = self.phase.send(Phase::Closing);
                task.await
            }
        };
        if let Err(err) = finished {
            tracing::error!(%err, "server task failed");
        }
    }
}

/// The only accept errors that concern one connection (it went away while queued); anything else
/// (EMFILE, ENFILE, ENOBUFS) concerns the process and is waited out.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset)
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    per_client: Arc<PerClient>,
    telemetry: Telemetry,
    mut phase: watch::Receiver<Phase>,
) {
    // A permit per open connection. With every permit taken the loop stops accepting, and new
    // connections wait in the kernel's listen backlog (completed by the kernel, their request
    // unread) until a connection closes — at the latest after `header_read_timeout_ms` or
    // `idle_timeout_ms`. Accepting and closing them instead would fail every beacon sent
    // meanwhile; waiting serves it a little later, and the backlog bounds the queue.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let stopping = |p: &Phase| *p != Phase::Serving;
    'accepting: loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                telemetry.connection_slots_exhausted.inc();
                tracing::debug!(max_connections = limits.max_connections, "every connection slot taken; new connections wait");
                loop {
                    tokio::select! {
                        permit = slots.clone().acquire_owned() => match permit {
                            Ok(permit) => break permit,
                            Err(_) => break 'accepting, // never closed
                        },
                        Some(_) = connections.join_next(), if !connections.is_empty() => {}
                        _ = phase.wait_for(stopping) => break 'accepting,
                    }
                }
            }
        };
        let accepted = loop {
            tokio::select! {
                accepted = listener.accept() => break accepted,
                // Finished connections are reaped as they end, not kept until the next accept.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = phase.wait_for(stopping) => break 'accepting,
            }
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                // Out of file descriptors, most likely: connections closing free some.
                tracing::error!(%err, "accept failed; retrying in 1 s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = phase.wait_for(stopping) => break 'accepting,
                }
            }
        };
        let activity = Arc::new(Activity::new(Instant::now()));
        let Some(client_slot) = per_client.admit(peer.ip(), &activity) else {
            // Closed unread: a client holding this many connections, none idle, is not a
            // browser, and waiting in the backlog would let it hold the global slots instead.
            telemetry.connections_refused.with_label_values(&["ip_cap"]).inc();
            tracing::debug!(%peer, ip_max_connections = limits.ip_max_connections, "client at its connection cap; closed");
            drop(tcp);
            continue;
        };
        // Responses go out as soon as they are written: without TCP_NODELAY, a response's last
        // partial segment can wait for the client's delayed ACK (40 ms on Linux), which the
        // agent's wasm download hit, depending only on its byte size.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set: {e}");
        }
        let slots = (permit, client_slot);
        connections.spawn(connection(tcp, peer, activity, router.clone(), limits, telemetry.clone(), slots, phase.clone()));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until it ends, times out, or shutdown closes it; its slots are given
/// back when it returns.
#[allow(clippy::too_many_arguments)]
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    activity: Arc<Activity>,
    router: Router,
    limits: Limits,
    telemetry: Telemetry,
    _slots: (OwnedSemaphorePermit, ClientSlot),
    mut phase: watch::Receiver<Phase>,
) {
    telemetry.connections_open.inc();
    let io = TokioIo::new(Watched { tcp, activity: activity.clone() });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // What `into_make_service_with_connect_info` gave handlers (ingest reads the peer).
            request.extensions_mut().insert(ConnectInfo(peer));
            let in_flight = InFlight::new(activity.clone());
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| Tracked { body, _in_flight: in_flight }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's header timer also ends idle keep-alive waits (see the module doc); ours does both.
    builder.timer(TokioTimer::new()).header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);

    let mut draining = false;
    let closed = loop {
        if !draining && *phase.borrow() != Phase::Serving {
            draining = true;
            if activity.get().between_requests() {
                break Closed::Shutdown;
            }
            // Keep-alive off: hyper closes the connection once the response under way is sent.
            conn.as_mut().graceful_shutdown();
        }
        let due = activity.get().due(&limits);
        let sleep = async {
            match due {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!(%err, %peer, "connection ended with an error");
                }
                break if draining { Closed::Shutdown } else { Closed::Client };
            }
            () = sleep => {
                // Activity since the deadline was read may have moved it; the loop reads it again.
                if let Some((at, why)) = activity.get().due(&limits) {
                    if at <= Instant::now() {
                        break why;
                    }
                }
            }
            () = activity.changed.notified() => {}
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() == Phase::Closing {
                    break Closed::Shutdown;
                }
            }
        }
    };
    // Dropping the connection closes the socket; a request still under way (only at the drain
    // deadline) never answered, so nothing it acknowledged is lost.
    telemetry.connections_open.dec();
    telemetry.connections_closed.with_label_values(&[closed.as_str()]).inc();
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    /// The output of `f` if it is ready at its first poll.
    fn now_or_never<F: Future>(f: F) -> Option<F::Output> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(f).poll(&mut cx) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        }
    }

    const LIMITS: Limits =
        Limits { header_read: Duration::from_secs(10), idle: Duration::from_secs(75), max_connections: 10, ip_max_connections: 2 };

    #[test]
    fn a_new_connection_owes_its_head_from_accept() {
        let t0 = Instant::now();
        let mut s = State::new(t0);
        assert_eq!(s.due(&LIMITS), Some((t0 + LIMITS.header_read, Closed::HeaderTimeout)));
        // Its first bytes do not restart the clock: a trickled head is bounded from accept.
        s.read(t0 + Duration::from_secs(5));
        assert_eq!(s.due(&LIMITS), Some((t0 + LIMITS.header_read, Closed::HeaderTimeout)));
        assert!(s.between_requests());
    }

    #[test]
    fn a_request_under_way_has_no_deadline_here() {
        let t0 = Instant::now();
        let mut s = State::new(t0);
        s.request_started();
        // Its body arriving is not a new head.
        s.read(t0 + Duration::from_secs(1));
        assert_eq!(s.due(&LIMITS), None);
        assert!(!s.between_requests());
    }

    #[test]
    fn after_a_response_the_idle_clock_runs_until_the_next_heads_first_byte() {
        let t0 = Instant::now();
        let mut s = State::new(t0);
        s.request_started();
        let done = t0 + Duration::from_secs(2);
        s.response_finished(done);
        assert_eq!(s.due(&LIMITS), Some((done + LIMITS.idle, Closed::Idle)));
        assert!(s.between_requests());
        let next = done + Duration::from_secs(30);
        s.read(next);
        assert_eq!(s.due(&LIMITS), Some((next + LIMITS.header_read, Closed::HeaderTimeout)));
        s.request_started();
        assert_eq!(s.due(&LIMITS), None);
    }

    #[test]
    fn an_in_flight_guard_ends_the_request_when_dropped_and_wakes_the_watcher() {
        let activity = Arc::new(Activity::new(Instant::now()));
        let guard = InFlight::new(activity.clone());
        assert_eq!(activity.get().in_flight, 1);
        assert_eq!(now_or_never(activity.changed.notified()), None);
        drop(guard);
        assert_eq!(activity.get().in_flight, 0);
        assert_eq!(activity.get().head_since, None);
        assert_eq!(now_or_never(activity.changed.notified()), Some(()));
    }

    fn served(activity: &Activity) {
        activity.update(State::request_started);
        activity.update(|s| s.response_finished(Instant::now()));
    }

    #[test]
    fn a_client_at_its_cap_makes_room_from_an_idle_connection_or_is_refused() {
        let table = Arc::new(PerClient::new(2, ClientIp::default()));
        let a: IpAddr = [198, 51, 100, 1].into();
        let conns: Vec<Arc<Activity>> = (0..3).map(|_| Arc::new(Activity::new(Instant::now()))).collect();
        let first = table.admit(a, &conns[0]).expect("under the cap");
        let second = table.admit(a, &conns[1]).expect("at the cap");
        // Both still owe their first head (as a slowloris's do): nothing to make room from.
        assert!(table.admit(a, &conns[2]).is_none(), "past the cap, none idle");
        let other = table.admit([198, 51, 100, 2].into(), &conns[2]).expect("another client has its own cap");
        drop(other);
        // One answered and idle: it is told to close, and the new one is let in.
        served(&conns[0]);
        let third = table.admit(a, &conns[2]).expect("room made");
        assert!(conns[0].get().evicted);
        assert_eq!(conns[0].get().due(&LIMITS).map(|(_, why)| why), Some(Closed::IpCap));
        assert!(!conns[1].get().evicted);
        assert_eq!(now_or_never(conns[0].changed.notified()), Some(()), "its watcher is woken");
        // The evicted one counts until it is gone.
        assert!(table.admit(a, &Arc::new(Activity::new(Instant::now()))).is_none());
        drop((first, second, third));
        assert_eq!(table.clients(), 0, "a client's entry goes with its last connection");
    }

    #[test]
    fn ipv6_clients_are_capped_per_64_and_trusted_proxies_not_at_all() {
        let table = Arc::new(PerClient::new(1, ClientIp::new(Some("x-forwarded-for"), Vec::new())));
        let fresh = || Arc::new(Activity::new(Instant::now()));
        let _held = table.admit("2001:db8:1:2::1".parse().expect("valid"), &fresh()).expect("first");
        assert!(table.admit("2001:db8:1:2:ffff::9".parse().expect("valid"), &fresh()).is_none(), "same /64");
        assert!(table.admit("2001:db8:1:3::1".parse().expect("valid"), &fresh()).is_some(), "another /64");
        // With a header and no list, a private peer is the proxy in front: never capped.
        let proxy: Vec<ClientSlot> = (0..5).map(|_| table.admit([10, 0, 0, 1].into(), &fresh()).expect("proxy")).collect();
        assert_eq!(proxy.len(), 5);
        assert_eq!(table.clients(), 1);
    }
}
