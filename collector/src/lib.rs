//! The Pulse collector.
//!
//! # The path of a beacon through the collector
//! 0. [`server`] accepts the connection (at most `max_connections` at once, `ip_max_connections`
//!    from one client), closes it when a request head is slow to come or it idles between
//!    requests, and hands each request to the [`router`].
//! 1. [`ingest::beacon`] (`POST /v1/beacon`) limits the body to 64 KiB, rate-limits the client IP,
//!    parses the envelope, checks the site key and the `Origin` ([`sites`]), validates the envelope
//!    and then every metric on its own with `pulse_protocol::validate` (a bad metric is dropped and
//!    reported, the rest kept), enriches each row ([`enrich`]: browser / OS / device class,
//!    country, skew-corrected time) and appends the rows to the disk [`spool`]; the 202 waits
//!    until they are synced (one fsync shared by the concurrent requests). A full spool answers
//!    503. No ClickHouse I/O happens in the request.
//! 2. [`storage::writer`] ships the spool's records into ClickHouse in batches, oldest first,
//!    retrying with backoff, and removes them from the spool only once ClickHouse has them;
//!    materialized views fill the minute, hour and day rollups ([`storage::schema`]).
//! 3. [`query`] answers percentile questions from raw rows or rollups; [`alerts`] evaluates the
//!    alert rules through it and notifies people (release rules compare the releases CI declared,
//!    [`releases`]); [`health`] reports on the collector itself;
//!    [`storage::retention`] drops partitions past their age.
//!
//! Errors of both request boundaries are mapped to HTTP in [`errors`]. [`config`] documents every
//! setting and its default, as plain data; [`check`] checks it whole at start, each part by the
//! module that owns it.

pub mod alerts;
pub mod assets;
pub mod config;
pub mod enrich;
pub mod errors;
pub mod health;
pub mod ingest;
pub mod openapi;
pub mod origin;
pub mod query;
pub mod releases;
pub mod server;
pub mod sites;
pub mod spool;
pub mod storage;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;

use crate::alerts::rules::{Notifier, Rule};
use crate::config::{Config, ConfigError};
use crate::enrich::Geo;
use crate::ingest::client_ip::ClientIp;
use crate::sites::Sites;
use crate::spool::{Spool, SpoolError};
use crate::storage::writer::{Shutdown, Writer, WriterStatus};
use crate::telemetry::Telemetry;

/// Shared state of the running collector.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub sites: Sites,
    /// Beacons, metrics and bytes per client and per site.
    pub quotas: ingest::quota::Quotas,
    /// Distinct values per site per day, and the learnt URL clusters.
    pub cardinality: ingest::cardinality::Cardinality,
    /// How a request's client address is found (trusted proxies).
    pub client_ip: ingest::client_ip::ClientIp,
    pub geo: Geo,
    pub telemetry: Telemetry,
    /// Where accepted rows wait, on disk, until ClickHouse has them.
    pub spool: Spool,
    pub alerts: Arc<alerts::Alerts>,
    pub clickhouse: clickhouse::Client,
    /// Each shard's own tables (on one server: that server's), for the finalizer and retention.
    pub shards: Vec<clickhouse::Client>,
    /// The server's version, once the schema is in place (the collector accepts beacons before).
    pub clickhouse_version: std::sync::OnceLock<String>,
    pub writer_status: Arc<WriterStatus>,
    /// What the background probe last found about ClickHouse (`/healthz` reads it).
    pub clickhouse_probe: health::Probe,
    /// Slots for the CPU-heavy part of reads (`read_compute_concurrency`; [`query::compute`]).
    pub compute: tokio::sync::Semaphore,
    /// Makes hours final and rolls them up (one collector at a time), and knows how far they are.
    pub finalizer: storage::finalize::Finalizer,
    /// When set, the text of every read-API query is kept here as it is sent (the check that
    /// runs the collector's SQL on a modern engine, `tests/chdb.rs`).
    pub sql_capture: std::sync::Mutex<Option<Vec<String>>>,
}

impl App {
    /// The ClickHouse query of `sql`, every value bound (and its text kept when capturing), with
    /// the read limits.
    pub fn query(&self, sql: &query::sql::Sql) -> clickhouse::query::Query {
        let q = self.limited(sql.query(&self.clickhouse));
        if let Ok(mut capture) = self.sql_capture.lock() {
            if let Some(capture) = capture.as_mut() {
                capture.push(q.sql_display().to_string());
            }
        }
        q
    }

    /// `query` with the read limits: ClickHouse stops it past `read_max_execution_seconds` or
    /// `read_max_memory_bytes` (answered 503 naming the setting, [`errors::QueryError`]).
    /// A read that may answer from the live shards ([`query::partial`]) skips the ones away.
    pub fn limited(&self, query: clickhouse::query::Query) -> clickhouse::query::Query {
        let query = query
            .with_setting("max_execution_time", self.config.read_max_execution_seconds.to_string())
            .with_setting("max_memory_usage", self.config.read_max_memory_bytes.to_string());
        if query::partial::skipping() {
            query.with_setting("skip_unavailable_shards", "1")
        } else {
            query
        }
    }
}

impl App {
    /// State without a running shipper: what ingest appends stays in the spool. Used by [`start`]
    /// and by tests that drive the router directly.
    pub fn new(config: Config, spool: Spool) -> Result<App, StartError> {
        let Checked { sites, client_ip, rules, notifiers } = check(&config)?;
        spool.share_among(config.sites.iter().map(|s| s.key.clone()).collect());
        Ok(App {
            alerts: Arc::new(alerts::Alerts::new(rules, notifiers, config.public_url())),
            sites,
            quotas: ingest::quota::Quotas::new(&config),
            cardinality: ingest::cardinality::Cardinality::new(&config),
            client_ip,
            geo: Geo::new(config.country_header.clone(), config.geoip_database.as_deref())
                .map_err(|e| StartError::GeoIp(config.geoip_database.clone().unwrap_or_default(), e))?,
            telemetry: Telemetry::new(),
            clickhouse: storage::client(&config),
            shards: storage::shard_clients(&config),
            clickhouse_version: std::sync::OnceLock::new(),
            writer_status: Arc::default(),
            clickhouse_probe: health::Probe::default(),
            compute: tokio::sync::Semaphore::new(config.read_compute_concurrency),
            finalizer: storage::finalize::Finalizer::default(),
            sql_capture: std::sync::Mutex::new(None),
            spool,
            config,
        })
    }
}

/// The HTTP surface: ingest (with CORS for the sites' origins), the read API, health, metrics,
/// and the static files of `www/` for everything else.
pub fn router(app: Arc<App>) -> Router {
    let cors_app = app.clone();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| origin.to_str().is_ok_and(|o| cors_app.sites.any_allows(o))))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE])
        // sendBeacon sends credentials, so the answer must name the origin (never `*`).
        .allow_credentials(true)
        .max_age(Duration::from_secs(86_400));
    let ingest = Router::new().route("/v1/beacon", post(ingest::beacon)).layer(cors);
    let mut router = Router::new().merge(ingest).nest_service("/agent", assets::agent(&app.config.agent_dir));
    if app.config.serves_demo_api() {
        router = router.merge(assets::demo_api());
    }
    // The reads that ask ClickHouse, which a cluster with a shard away answers partially or not.
    let reads = Router::new()
        .route("/v1/vitals", get(query::vitals))
        .route("/v1/vitals/series", get(query::series))
        .route("/v1/api-calls", get(query::api_calls))
        .route("/v1/compare", get(query::compare::compare))
        .route("/v1/report", get(query::report::handler))
        .route("/v1/alerts/history", get(alerts::api::history))
        .route("/v1/attribution", get(query::attribution::handler))
        .route_layer(middleware::from_fn_with_state(app.clone(), query::partial::layer));
    router
        .merge(reads)
        .route("/v1/releases", post(releases::declare))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/alerts", get(alerts::api::alerts))
        .route("/v1/alerts/rules", get(alerts::api::rules))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .fallback_service(ServeDir::new(&app.config.www_dir))
        .layer(middleware::from_fn_with_state(app.clone(), limit_reads))
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .with_state(app)
}

async fn count_requests(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "static".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    app.telemetry.requests.with_label_values(&[route.as_str(), response.status().as_str()]).inc();
    response
}

/// A per-client quota on every route but ingest (which has its own, in beacons, metrics and
/// bytes) and the agent's files (which every visitor's page loads): reads, health, metrics and
/// static files cost work, and a client that floods them is answered `429` with `Retry-After`.
async fn limit_reads(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/v1/beacon" || path.starts_with("/agent/") {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0);
    let ip = app.client_ip.of(request.headers(), peer);
    if let Err(retry_after) = app.quotas.charge_read(ip, app.quotas.now()) {
        return errors::QueryError::RateLimited(retry_after).into_response();
    }
    if !path.starts_with("/v1/") {
        return next.run(request).await;
    }
    // A read holds its request no longer than `read_timeout_seconds`, whatever ClickHouse does
    // (dropping the future drops the query's connection).
    let limit = Duration::from_secs(app.config.read_timeout_seconds);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => errors::QueryError::TimedOut(app.config.read_timeout_seconds).into_response(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot open GeoIP database {0}: {1}")]
    GeoIp(std::path::PathBuf, #[source] maxminddb::MaxMindDbError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, #[source] std::io::Error),
}

/// A started collector: serving, writing and cleaning up until [`Running::stop`].
#[derive(Debug)]
pub struct Running {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    pub app: Arc<App>,
    server: server::Server,
    writer_shutdown: Shutdown,
    writer: JoinHandle<()>,
    housekeeping: JoinHandle<()>,
    alerting: JoinHandle<()>,
    finalizing: JoinHandle<()>,
    probing: JoinHandle<()>,
}

/// The parts of the configuration that other modules compile, as [`check`] built them.
#[derive(Debug)]
pub struct Checked {
    pub sites: Sites,
    pub client_ip: ClientIp,
    pub rules: Vec<Rule>,
    pub notifiers: Vec<Notifier>,
}

/// Checks the whole configuration, as [`start`] does before anything else: the plain settings
/// ([`Config::check`]), then each part that another module owns, compiled by that module: the
/// sites' release patterns and scrub rules ([`Sites::from_config`]), the trusted proxies
/// ([`ClientIp::from_config`]), the notifiers and alert rules ([`alerts::rules::compile`]). The
/// error names the setting, site or rule at fault.
pub fn check(config: &Config) -> Result<Checked, ConfigError> {
    config.check()?;
    let sites = Sites::from_config(config)?;
    let client_ip = ClientIp::from_config(config)?;
    let (rules, notifiers) = alerts::rules::compile(config)?;
    Ok(Checked { sites, client_ip, rules, notifiers })
}

/// Migrates the schema, starts the writer and housekeeping, and begins serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    check(&config)?;
    let spool = Spool::open_with(&config.spool_dir, config.spool_max_bytes, config.queue_capacity, config.spool_fsync)?;
    let waiting = spool.stats();
    if waiting.records > 0 {
        tracing::info!(rows = waiting.rows, records = waiting.records, "the spool holds rows from an earlier run; shipping them first");
    }
    let salvaged = spool.salvage().is_some();
    let app = App::new(config, spool)?;
    if salvaged {
        app.telemetry.spool_files_salvaged.inc();
    }
    let app = Arc::new(app);
    // Beacons are accepted into the spool from the start: the listener serves before ClickHouse
    // is reached, and the schema is migrated and the shipper started as soon as ClickHouse
    // answers, so a restart during a ClickHouse outage (down, or not answering) loses nothing.
    let listener = tokio::net::TcpListener::bind(app.config.listen).await.map_err(|e| StartError::Listen(app.config.listen, e))?;
    let addr = listener.local_addr().map_err(|e| StartError::Listen(app.config.listen, e))?;
    let limits = server::Limits {
        header_read: app.config.header_read_timeout(),
        idle: app.config.idle_timeout(),
        max_connections: app.config.max_connections,
        ip_max_connections: app.config.ip_max_connections,
    };
    let server = server::Server::spawn(listener, router(app.clone()), limits, app.client_ip.clone(), app.telemetry.clone());
    tracing::info!("listening on http://{addr}");
    // One attempt before `start` returns: with ClickHouse up (the usual case) the schema is in
    // place then.
    let ready = match storage::schema::migrate(&app.config).await {
        Ok(version) => {
            tracing::info!(url = %app.config.clickhouse_url, database = %app.config.clickhouse_database, %version, "ClickHouse schema ready");
            if let Err(err) = app.finalizer.refresh(&app).await {
                tracing::warn!(%err, "cannot read how far values are final; reading raw rows until the finalizer runs");
            }
            Some(version)
        }
        Err(err) => {
            app.telemetry.clickhouse_errors.with_label_values(&["schema"]).inc();
            app.writer_status.record_error(err.to_string());
            tracing::warn!(%err, "ClickHouse not reachable at start; accepting beacons into the spool and retrying");
            None
        }
    };
    let (writer_shutdown, deadline) = storage::writer::shutdown_channel();
    let writer = tokio::spawn({
        let app = app.clone();
        async move {
            let version = match ready {
                Some(version) => version,
                None => match migrate_when_reachable(&app, &deadline).await {
                    Some(version) => version,
                    None => return,
                },
            };
            let deduplicate = storage::schema::supports_deduplication_token(&version);
            let _ = app.clickhouse_version.set(version);
            Writer {
                client: app.clickhouse.clone(),
                spool: app.spool.clone(),
                batch_rows: app.config.batch_rows,
                flush_interval: app.config.flush_interval(),
                telemetry: app.telemetry.clone(),
                status: app.writer_status.clone(),
                deduplicate,
                dead_letter_after: app.config.dead_letter_after_attempts,
                dead_letter_dir: app.config.spool_dir.join("dead-letter"),
                final_grace: i64::from(app.config.final_grace_minutes) * 60,
            }
            .run(deadline)
            .await;
        }
    });
    let housekeeping = tokio::spawn(housekeeping(app.clone()));
    let probing = tokio::spawn(health::watch(app.clone()));
    let alerting = tokio::spawn(alerting(app.clone()));
    let finalizing = tokio::spawn(storage::finalize::run_forever(app.clone()));

    if app.config.uses_dev_credentials() {
        tracing::warn!(
            "dev credentials in use: site key `{}` (origins http://localhost:*, http://127.0.0.1:*), read key `{}`, write key `{}`; configure `sites`, `read_keys` and `write_keys` before exposing this collector",
            config::DEV_SITE,
            config::DEV_READ_KEY,
            config::DEV_WRITE_KEY
        );
    }
    Ok(Running { addr, app, server, writer_shutdown, writer, housekeeping, alerting, finalizing, probing })
}

impl Running {
    /// Stops accepting requests, lets in-flight ones finish, then ships what the spool holds
    /// (the rest stays in the spool) before returning, all within `shutdown_grace_seconds`.
    pub async fn stop(self) {
        // One deadline for the whole stop, so a supervisor that kills after the grace period
        // (systemd, Kubernetes) does not. The two steps run one after the other, not at once:
        // the shipper's last pass must see every row that a request under way still appends.
        // Requests under way get at most half the grace (a beacon needs milliseconds, or at most
        // `body_timeout_ms` to read a slow body); stalled connections are closed at once, and
        // any still open at the drain deadline are dropped without an answer, so nothing they
        // carry was acknowledged. The shipper gets whatever is left, at least half.
        let started = tokio::time::Instant::now();
        let deadline = started + self.app.config.shutdown_grace();
        self.server.drain(started + self.app.config.shutdown_grace() / 2).await;
        let waiting = self.app.spool.stats_fast();
        tracing::info!(
            rows = waiting.rows,
            drained_ms = started.elapsed().as_millis() as u64,
            "no longer accepting beacons; shipping the spool"
        );
        self.writer_shutdown.begin(deadline.saturating_duration_since(tokio::time::Instant::now()));
        if let Err(err) = self.writer.await {
            tracing::error!(%err, "writer task failed");
        }
        // Aborted, then awaited: a task's future (and the `App` it holds, with the spool's file
        // lock) is dropped only when the runtime gets to it, and the next start in this process
        // must find the spool file free.
        for task in [self.housekeeping, self.alerting, self.finalizing, self.probing] {
            task.abort();
            let _ = task.await;
        }
        let spool = self.app.spool.clone();
        let _ = tokio::task::spawn_blocking(move || spool.close()).await;
    }
}

/// Migrates the schema, retrying with backoff (1 s doubling to 30 s) while ClickHouse does not
/// answer; `None` when shutdown begins first.
async fn migrate_when_reachable(app: &App, deadline: &tokio::sync::watch::Receiver<Option<std::time::Instant>>) -> Option<String> {
    let mut backoff = Duration::from_secs(1);
    let mut deadline = deadline.clone();
    loop {
        // A migration still waiting for its server when shutdown begins is abandoned (each step
        // is idempotent; the next start applies what is missing).
        let migrated = tokio::select! {
            migrated = storage::schema::migrate(&app.config) => migrated,
            _ = deadline.wait_for(Option::is_some) => return None,
        };
        match migrated {
            Ok(version) => {
                tracing::info!(url = %app.config.clickhouse_url, database = %app.config.clickhouse_database, %version, "ClickHouse schema ready");
                return Some(version);
            }
            Err(err) => {
                app.telemetry.clickhouse_errors.with_label_values(&["schema"]).inc();
                app.writer_status.record_error(err.to_string());
                tracing::warn!(%err, retry_in_s = backoff.as_secs(), "ClickHouse not ready; beacons wait in the spool");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = deadline.changed() => {}
        }
        if deadline.borrow().is_some() {
            return None;
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Hourly chores: forgetting idle clients' rate-limit buckets, and retention (18.16; modern
/// servers expire rows by TTL).
async fn housekeeping(app: Arc<App>) {
    let mut every = tokio::time::interval(Duration::from_secs(3_600));
    loop {
        every.tick().await;
        app.quotas.forget_idle_clients();
        if app.clickhouse_version.get().is_some_and(|v| storage::schema::is_modern(v)) {
            continue; // modern servers expire rows by TTL
        }
        let now = time::OffsetDateTime::now_utc();
        let database = if app.config.clickhouse_cluster.is_some() {
            storage::local_database(&app.config)
        } else {
            app.config.clickhouse_database.clone()
        };
        for shard in &app.shards {
            let result = storage::retention::drop_expired(shard, &database, now, storage::retention::Keep::of(&app.config)).await;
            if let Err(err) = result {
                app.telemetry.clickhouse_errors.with_label_values(&["retention"]).inc();
                tracing::warn!(%err, "retention pass failed; will retry in an hour");
            }
        }
    }
}

/// Evaluates the alert rules every `alert_interval_seconds`, with the wall clock as `now`.
async fn alerting(app: Arc<App>) {
    if app.alerts.rules.is_empty() || !app.config.alert_evaluator {
        return;
    }
    let period = Duration::from_secs(app.config.alert_interval_seconds);
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(err) = app.alerts.evaluate(&app, time::OffsetDateTime::now_utc()).await {
            app.telemetry.alert_evaluations.with_label_values(&["error"]).inc();
            tracing::warn!(%err, "alert evaluation failed; retrying at the next interval");
        }
    }
}

/// Runs until SIGINT or SIGTERM, then stops gracefully.
pub async fn run(config: Config) -> Result<(), StartError> {
    // Listened for before `start`: the listener serves (and answers 202) while `start` still
    // migrates, and a SIGTERM then must stop gracefully, not kill the process.
    let signal = shutdown_signal();
    let running = start(config).await?;
    signal.await;
    tracing::info!("shutdown signal received");
    running.stop().await;
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now; the future ends at the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (interrupt, terminate) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NotifierConfig, ScrubRule};

    /// The parts that other modules check still stop the start, each named as its setting.
    #[test]
    fn check_runs_every_owners_check() {
        check(&Config::default()).expect("the dev setup is valid");
        let c = Config { trusted_proxies: vec!["10.0.0.0/33".into()], ..Config::default() };
        let err = check(&c).expect_err("not a range").to_string();
        assert!(err.starts_with("config: trusted_proxies: \"10.0.0.0/33\""), "{err}");
        let mut c = Config::default();
        c.sites[0].scrub = vec![ScrubRule { pattern: "/(x".into(), replacement: ":x".into() }];
        let err = check(&c).expect_err("not a pattern").to_string();
        assert!(err.starts_with("config: sites.scrub: site demo: "), "{err}");
        let notifier = NotifierConfig { name: "ops".into(), kind: "sms".into(), url: None, secret: None, routing_key: None };
        let c = Config { notifiers: vec![notifier], ..Config::default() };
        let err = check(&c).expect_err("not a kind").to_string();
        assert!(err.starts_with("config: notifiers[ops].kind: "), "{err}");
    }
}
