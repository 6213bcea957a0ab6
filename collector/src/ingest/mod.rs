//! `POST /v1/beacon`: the hot path. Find the client ([`client_ip`]) and charge its quota
//! ([`quota`]), limit the body, parse, check the site, validate each metric, charge the site for
//! what validated, scrub personal data and secrets out of its URLs ([`scrub`]), enrich, append
//! the rows to the disk spool within the site's share (a group commit shared with concurrent
//! requests), answer 202 once they are synced. No ClickHouse I/O here.

pub mod cardinality;
pub mod client_ip;
pub mod quota;
pub mod scrub;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use pulse_protocol::limits::MAX_BODY_BYTES;
use pulse_protocol::route::normalise_path;
use pulse_protocol::validate::{self, Kind, Measurement};
use pulse_protocol::{AttrValue, Beacon, Metric};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::enrich;
use crate::errors::IngestError;
use crate::ingest::cardinality::{Admitted, Dimension, Folds, Over, SiteGuard};
use crate::ingest::quota::{client_key, Cost};
use crate::ingest::scrub::Scrubber;
use crate::spool::SpoolError;
use crate::storage::rows::{rating_code, ApiCallRow, Batch, MetricRow};
use crate::App;

/// The 202 answer: how many metrics were kept, and why each other one was dropped.
#[derive(Debug, Serialize)]
pub struct Receipt {
    pub accepted: usize,
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Serialize)]
pub struct Rejected {
    pub index: usize,
    pub error: String,
}

pub async fn beacon(State(app): State<Arc<App>>, request: Request) -> Response {
    let mut site = None;
    match ingest(&app, request, &mut site).await {
        Ok(receipt) => (StatusCode::ACCEPTED, Json(receipt)).into_response(),
        Err(err) => {
            app.telemetry.beacons_rejected.with_label_values(&[err.reason()]).inc();
            if let Some(site) = site {
                app.telemetry.refusals_by_site.with_label_values(&[&err.detailed_reason(), site]).inc();
            }
            err.into_response()
        }
    }
}

/// `site` is set once the beacon names a configured site (for the refusals by site).
async fn ingest<'a>(app: &'a App, request: Request, site_seen: &mut Option<&'a str>) -> Result<Receipt, IngestError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    check_content_type(headers)?;
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let ip = app.client_ip.of(headers, peer);
    // The client pays for the beacon before its body is read, then for the bytes it sent and
    // the metrics it claims, valid or not.
    let quotas = &app.quotas;
    quotas.charge_client(ip, Cost { beacons: 1, ..Cost::default() }, quotas.now())?;

    let (read, body) = read_body(body, headers, app.config.body_timeout()).await;
    if body.is_err() {
        // What was read of a refused body costs the client too (the refusal's reason wins).
        let _ = quotas.charge_client(ip, Cost { bytes: read as u64, ..Cost::default() }, quotas.now());
    }
    let body = body?;
    let parsed = parse_beacon(&body);
    let site = parsed.as_ref().ok().and_then(|b| app.sites.get(&b.site));
    *site_seen = site.map(|s| s.key.as_str());
    // More than a beacon may carry is refused by validation below; the bucket is charged at most that.
    let claimed = parsed.as_ref().map_or(0, |b| b.metrics.len().min(pulse_protocol::limits::MAX_METRICS_PER_BEACON) as u64);
    quotas.charge_client(ip, Cost { beacons: 0, metrics: claimed, bytes: body.len() as u64 }, quotas.now())?;
    let beacon = parsed?;
    let site = site.ok_or_else(|| IngestError::UnknownSite(beacon.site.clone()))?;
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if !site.allows(origin) {
        return Err(IngestError::OriginNotAllowed { site: beacon.site.clone(), origin: origin.unwrap_or_default().to_owned() });
    }
    validate::envelope(&beacon).map_err(IngestError::Invalid)?;

    let received_ms = now_ms();
    let mut rejected = Vec::new();
    let reject = |rejected: &mut Vec<Rejected>, index: usize, (reason, error): (&'static str, String)| {
        app.telemetry.metrics_rejected.with_label_values(&[reason]).inc();
        rejected.push(Rejected { index, error });
    };
    let mut valid = Vec::with_capacity(beacon.metrics.len());
    for (index, raw) in beacon.metrics.iter().enumerate() {
        match parse_metric(raw).and_then(|m| validate::metric(m, beacon.sent_at).map_err(|e| (e.reason.code(), e.to_string()))) {
            Ok(measurement) => valid.push((index, measurement)),
            Err(why) => reject(&mut rejected, index, why),
        }
    }
    if valid.is_empty() {
        // Nothing to keep: neither the site's quota nor its day's distinct values are spent.
        return Ok(Receipt { accepted: 0, rejected });
    }
    // The site pays only for what validates: junk sent with its (public) key does not spend its
    // real visitors' tokens, nor (below) the day's distinct URLs, releases and names.
    quotas.charge_site(&site.key, Cost { beacons: 1, metrics: valid.len() as u64, bytes: body.len() as u64 }, quotas.now())?;
    let mut batch = Batch::default();
    let mut tally = Tally::default();
    let mut folded = Vec::new();
    let mut scrubbed = scrub::Tally::default();
    {
        // The site's distinct values of the day, locked for this beacon (never across an await).
        let mut card = app.cardinality.site(&site.key, received_ms.div_euclid(86_400_000), client_key(ip));
        let page = PageContext::new(app, &beacon, headers, ip, received_ms, card.as_mut(), &mut folded, &site.scrub, &mut scrubbed);
        for (index, measurement) in valid {
            let measurement = scrub_measurement(&site.scrub, measurement, &mut scrubbed);
            let measurement = match card.as_mut() {
                Some(card) => limit_cardinality(card, measurement, &mut folded, &site.key),
                None => Ok(measurement),
            };
            match measurement {
                Ok(measurement) => page.add(measurement, index, &mut batch, &mut tally),
                Err(why) => reject(&mut rejected, index, why),
            }
        }
    }
    // Refusals were added in beacon order, then the cardinality ones: the receipt lists them by index.
    rejected.sort_by_key(|r| r.index);
    for (dimension, over) in folded {
        let counter = match over {
            Over::Site => &app.telemetry.cardinality_folded,
            Over::Client => &app.telemetry.cardinality_client_folded,
        };
        counter.with_label_values(&[&site.key, dimension.as_str()]).inc();
    }
    let accepted = batch.len();
    if accepted > 0 {
        // The 202 is a promise: it waits until the rows are synced to the spool.
        app.spool.append(&batch, u64::try_from(received_ms).unwrap_or(0)).await.map_err(|err| match err {
            SpoolError::Full { .. } => IngestError::SpoolFull,
            SpoolError::ShareFull { .. } => IngestError::SiteShareFull,
            SpoolError::Busy => IngestError::Overloaded,
            SpoolError::Closed => IngestError::ShuttingDown,
            SpoolError::Open(..) | SpoolError::Storage(_) => {
                tracing::error!(%err, "spool append failed");
                IngestError::Storage
            }
        })?;
        // Counted once kept: a beacon answered 503 or 500 (and each retry of it) is not accepted.
        tally.count(&app.telemetry);
        for kind in scrub::Kind::ALL {
            let n = scrubbed.get(kind);
            if n > 0 {
                app.telemetry.values_scrubbed.with_label_values(&[kind.as_str()]).inc_by(n);
            }
        }
    }
    Ok(Receipt { accepted, rejected })
}

/// What one beacon adds to the acceptance counters, once its rows are in the spool.
#[derive(Debug, Default)]
struct Tally {
    vital: u64,
    custom: u64,
    api: u64,
    /// Reports from before the watermark (see [`crate::storage::finalize`]).
    late: u64,
}

impl Tally {
    fn count(&self, telemetry: &crate::telemetry::Telemetry) {
        telemetry.accepted_vital.inc_by(self.vital);
        telemetry.accepted_custom.inc_by(self.custom);
        telemetry.accepted_api.inc_by(self.api);
        telemetry.late_reports.inc_by(self.late);
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), IngestError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let essence = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    // sendBeacon with a string body sends text/plain (no CORS preflight); fetch may send JSON.
    if essence == "text/plain" || essence == "application/json" {
        Ok(())
    } else {
        Err(IngestError::UnsupportedMediaType(text.to_owned()))
    }
}

/// Bodies up to this size are read to the end even when over the limit, and discarded, so the
/// client receives the 413: closing a socket with unread data makes the kernel send a reset that
/// can destroy the answer before the client reads it (the "lingering close" of nginx).
const LINGER_MAX_BYTES: usize = 1 << 20;
/// Reads the body, taking at most `timeout` (`body_timeout_ms`).
/// The body, and how many bytes were read for it (the client pays for those, also when the body
/// is refused as too large or unreadable).
async fn read_body(body: Body, headers: &HeaderMap, timeout: Duration) -> (usize, Result<bytes::Bytes, IngestError>) {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > LINGER_MAX_BYTES as u64) {
        return (0, Err(IngestError::TooLarge));
    }
    let mut too_large = declared.is_some_and(|len| len > MAX_BODY_BYTES as u64);
    // Counted outside the read, so a read cut short by the timeout still tells how much it took.
    let mut seen = 0usize;
    let read = async {
        let mut body = body;
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(|_| IngestError::BodyUnreadable)?.into_data() else { continue };
            seen += data.len();
            if seen > MAX_BODY_BYTES {
                too_large = true;
                buf = bytes::BytesMut::new();
            }
            if too_large {
                if seen > LINGER_MAX_BYTES {
                    break;
                }
                continue;
            }
            buf.extend_from_slice(&data);
        }
        Ok::<_, IngestError>(buf.freeze())
    };
    let result = match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(IngestError::BodyUnreadable),
        Ok(Err(e)) => Err(e),
        Ok(Ok(_)) if too_large => Err(IngestError::TooLarge),
        Ok(Ok(bytes)) => Ok(bytes),
    };
    (seen, result)
}

/// The envelope, each metric left as raw JSON (validated one by one).
fn parse_beacon(body: &[u8]) -> Result<Beacon<Box<RawValue>>, IngestError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let beacon: Beacon<Box<RawValue>> = serde_path_to_error::deserialize(&mut de).map_err(malformed)?;
    de.end().map_err(|e| IngestError::Malformed { field: String::new(), message: format!("trailing data after the JSON body: {e}") })?;
    Ok(beacon)
}

fn malformed(err: serde_path_to_error::Error<serde_json::Error>) -> IngestError {
    let mut field = err.path().to_string();
    // serde_path_to_error says "." for the root and "?" where a syntax error left no path.
    if field == "." || field == "?" {
        field.clear();
    }
    let inner = err.inner();
    let message = match (inner.classify(), field.is_empty()) {
        (serde_json::error::Category::Syntax | serde_json::error::Category::Eof, _) | (_, true) => format!("malformed JSON body: {inner}"),
        _ => format!("{field}: {inner}"),
    };
    IngestError::Malformed { field, message }
}

fn parse_metric(raw: &RawValue) -> Result<Metric, (&'static str, String)> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let message = if path == "." || path == "?" { err.inner().to_string() } else { format!("{path}: {}", err.inner()) };
        ("parse", message)
    })
}

/// Scrubs what a metric sends that can hold a URL: the API route, attribution strings and tag
/// values (the page URL is [`PageContext::new`]'s).
fn scrub_measurement(scrubber: &Scrubber, mut m: Measurement, tally: &mut scrub::Tally) -> Measurement {
    match &mut m.kind {
        Kind::Api { route, .. } => *route = scrubber.path(std::mem::take(route), tally),
        Kind::Vital { attribution, .. } => {
            for value in attribution.values_mut() {
                if let AttrValue::Str(text) = value {
                    *text = scrubber.text(std::mem::take(text), tally);
                }
            }
        }
        Kind::Custom { tags, .. } => {
            for value in tags.values_mut() {
                *value = scrubber.text(std::mem::take(value), tally);
            }
        }
    }
    m
}

/// Folds a metric's API route and tags past the site's limits; refuses a new custom metric name
/// past its limit.
fn limit_cardinality(
    card: &mut SiteGuard<'_>,
    mut m: Measurement,
    folded: &mut Folds,
    site: &str,
) -> Result<Measurement, (&'static str, String)> {
    match &mut m.kind {
        Kind::Custom { name, tags, .. } => {
            match card.admit(Dimension::Name, std::mem::take(name)) {
                Admitted::Kept(kept) => *name = kept,
                Admitted::Folded(over) => {
                    folded.push((Dimension::Name, over));
                    let why = match over {
                        Over::Site => format!(
                            "name: site {site} has used its {} distinct custom metric names today; a new name is refused until tomorrow (cardinality_metric_names_per_day)",
                            card.name_limit()
                        ),
                        Over::Client => format!(
                            "name: this client has added its {} new custom metric names to site {site} today; a new name is refused until tomorrow (cardinality_new_values_per_client_per_day)",
                            card.name_limit_per_client()
                        ),
                    };
                    return Err(("cardinality", why));
                }
            }
            let limited: BTreeMap<String, String> = std::mem::take(tags)
                .into_iter()
                .map(|(key, value)| {
                    let key = card.fold(Dimension::TagKey, key, folded);
                    let value = card.fold_tag_value(&key, value, folded);
                    (key, value)
                })
                .collect();
            *tags = limited;
        }
        Kind::Api { route, .. } => {
            *route = card.route(std::mem::take(route), folded);
        }
        Kind::Vital { .. } => {}
    }
    Ok(m)
}

/// What every row of one beacon shares.
struct PageContext<'a> {
    site: &'a str,
    session: &'a str,
    page: &'a str,
    url: String,
    nav: &'static str,
    release: String,
    env: String,
    client: enrich::Client,
    country: String,
    ect: &'a str,
    viewport: (u32, u32),
    dpr: f32,
    memory: f32,
    cores: u16,
    sent_at: f64,
    received_ms: i64,
    /// `received_ms` in epoch seconds, for the `received_at` columns.
    received_at: u32,
    /// Values first reported before this (epoch s) are final; a report from then is late.
    final_until: i64,
}

impl<'a> PageContext<'a> {
    /// The beacon's envelope, its URL clustered and scrubbed (`scrubber`), and its URL, release
    /// and env folded past the site's cardinality limits (`card`).
    #[allow(clippy::too_many_arguments)]
    fn new(
        app: &App,
        beacon: &'a Beacon<Box<RawValue>>,
        headers: &HeaderMap,
        ip: std::net::IpAddr,
        received_ms: i64,
        card: Option<&mut SiteGuard<'_>>,
        folded: &mut Folds,
        scrubber: &Scrubber,
        scrubbed: &mut scrub::Tally,
    ) -> Self {
        let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
        let url = scrubber.path(normalise_path(&beacon.url), scrubbed);
        let release = beacon.release.clone().unwrap_or_default();
        let env = beacon.env.clone().unwrap_or_default();
        let (url, release, env) = match card {
            Some(card) => (card.url(url, folded), card.fold(Dimension::Release, release, folded), card.fold(Dimension::Env, env, folded)),
            None => (url, release, env),
        };
        PageContext {
            site: &beacon.site,
            session: &beacon.session,
            page: &beacon.page,
            url,
            nav: beacon.nav.as_str(),
            release,
            env,
            client: enrich::client(user_agent),
            country: app.geo.country(headers, ip),
            ect: beacon.ect.as_deref().unwrap_or(""),
            viewport: beacon.viewport.map_or((0, 0), |v| (v.w, v.h)),
            dpr: beacon.dpr.unwrap_or(0.0) as f32,
            memory: beacon.memory.unwrap_or(0.0) as f32,
            // Validation bounds it by `MAX_CORES`.
            cores: beacon.cores.map_or(0, |c| u16::try_from(c).unwrap_or(u16::MAX)),
            sent_at: beacon.sent_at,
            received_ms,
            received_at: epoch_seconds(received_ms),
            final_until: app.finalizer.final_until().unwrap_or(0),
        }
    }

    /// Adds one measurement, the `index`-th metric of its beacon.
    fn add(&self, m: Measurement, index: usize, batch: &mut Batch, tally: &mut Tally) {
        let event_time = epoch_seconds(enrich::corrected_time_ms(m.at, self.sent_at, self.received_ms));
        if i64::from(event_time) < self.final_until {
            tally.late += 1;
        }
        // Arrival order: the receive time, then the position in the beacon (at most
        // `MAX_METRICS_PER_BEACON` < 1 024). Breaks ties between reports of one id in one second.
        let seq = (u64::try_from(self.received_ms).unwrap_or(0) << 10) | (index as u64 & 1023);
        // The page's own order of its reports (validation bounds `at` near `sent_at`, after 2020).
        let order = (m.at.round() as u64, m.report);
        let counter = match m.kind {
            Kind::Vital { vital, value, delta, rating, id, attribution } => {
                batch.metrics.push(self.metric_row(
                    event_time,
                    vital.name().to_owned(),
                    value,
                    delta,
                    rating_code(Some(rating)),
                    id,
                    attribution_json(&attribution),
                    BTreeMap::new(),
                    seq,
                    order,
                ));
                &mut tally.vital
            }
            Kind::Custom { name, value, tags, id } => {
                batch.metrics.push(self.metric_row(
                    event_time,
                    name,
                    value,
                    value,
                    rating_code(None),
                    // The agent's id: a resent beacon's copy is the same report (`REPORT_KEY`).
                    id,
                    String::new(),
                    tags,
                    seq,
                    order,
                ));
                &mut tally.custom
            }
            Kind::Api { route, method, status, ok, error, duration, server_timing, id } => {
                batch.api_calls.push(ApiCallRow {
                    site: self.site.to_owned(),
                    event_time,
                    received_at: self.received_at,
                    route,
                    method,
                    status,
                    ok: u8::from(ok),
                    error: error.unwrap_or_default(),
                    duration,
                    server_timing: if server_timing.is_empty() {
                        String::new()
                    } else {
                        serde_json::to_string(&server_timing).unwrap_or_default()
                    },
                    session: self.session.to_owned(),
                    page: self.page.to_owned(),
                    url: self.url.clone(),
                    nav: self.nav.to_owned(),
                    release: self.release.clone(),
                    env: self.env.clone(),
                    device: self.client.device.to_owned(),
                    browser: self.client.browser.clone(),
                    os: self.client.os.clone(),
                    country: self.country.clone(),
                    seq,
                    call_id: id,
                });
                &mut tally.api
            }
        };
        *counter += 1;
    }

    #[allow(clippy::too_many_arguments)]
    fn metric_row(
        &self,
        event_time: u32,
        name: String,
        value: f64,
        delta: f64,
        rating: i8,
        metric_id: String,
        attribution: String,
        tags: BTreeMap<String, String>,
        seq: u64,
        (page_at, report_n): (u64, u32),
    ) -> MetricRow {
        let (tag_keys, tag_values) = tags.into_iter().unzip();
        MetricRow {
            site: self.site.to_owned(),
            event_time,
            received_at: self.received_at,
            name,
            value,
            delta,
            rating,
            metric_id,
            session: self.session.to_owned(),
            page: self.page.to_owned(),
            url: self.url.clone(),
            nav: self.nav.to_owned(),
            release: self.release.clone(),
            env: self.env.clone(),
            device: self.client.device.to_owned(),
            browser: self.client.browser.clone(),
            os: self.client.os.clone(),
            country: self.country.clone(),
            ect: self.ect.to_owned(),
            viewport_w: self.viewport.0,
            viewport_h: self.viewport.1,
            dpr: self.dpr,
            memory: self.memory,
            cores: self.cores,
            skew_ms: self.received_ms - self.sent_at.round() as i64,
            attribution,
            tag_keys,
            tag_values,
            seq,
            page_at,
            report_n,
        }
    }
}

fn attribution_json(attribution: &BTreeMap<String, AttrValue>) -> String {
    if attribution.is_empty() {
        String::new()
    } else {
        serde_json::to_string(attribution).unwrap_or_default()
    }
}

/// The wall clock, epoch ms.
pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Epoch ms → epoch s for a `DateTime` column (clamped to its range).
fn epoch_seconds(ms: i64) -> u32 {
    (ms.div_euclid(1000)).clamp(0, i64::from(u32::MAX)) as u32
}
