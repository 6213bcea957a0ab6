//! Spool record format 4's payload: a beacon's rows with what they share stored once.
//!
//! Every row of a beacon carries the same envelope (site, session, page, URL, release, env,
//! device, browser, country, viewport…): written per row, a beacon of 500 metrics with long
//! envelope strings took 22 times its wire size in the spool. Here a record keeps a table of
//! distinct envelopes and each row keeps only its own fields and the index of its envelope.
//! [`pack`] and [`unpack`] are exact inverses ([`super::decode`] gives back the [`Batch`]).
//!
//! Format 5 appends each metric's page clock and report number ([`Order`], one per metric, in
//! the metrics' order) after format 4's payload, which is otherwise unchanged: a format-4 record
//! is read as one without them.

use serde::{Deserialize, Serialize};

use crate::storage::rows::{ApiCallRow, Batch, MetricRow};

/// What the rows of one page view share. `S` is `&str` when packing (no copies) and `String`
/// when unpacking. API call rows use the fields up to `country`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Envelope<S> {
    site: S,
    received_at: u32,
    session: S,
    page: S,
    url: S,
    nav: S,
    release: S,
    env: S,
    device: S,
    browser: S,
    os: S,
    country: S,
    ect: S,
    viewport_w: u32,
    viewport_h: u32,
    dpr: f32,
    memory: f32,
    cores: u16,
    skew_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Metric<S> {
    envelope: u32,
    event_time: u32,
    name: S,
    value: f64,
    delta: f64,
    rating: i8,
    metric_id: S,
    attribution: S,
    tag_keys: Vec<S>,
    tag_values: Vec<S>,
    seq: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ApiCall<S> {
    envelope: u32,
    event_time: u32,
    route: S,
    method: S,
    status: u16,
    ok: u8,
    error: S,
    duration: f64,
    server_timing: S,
    seq: u64,
    call_id: S,
}

/// A metric's [`MetricRow::page_at`] and [`MetricRow::report_n`] (format 5).
pub type Order = (u64, u32);

/// The orders of `batch`'s metrics, stored after [`pack`]'s payload.
pub fn orders(batch: &Batch) -> Vec<Order> {
    batch.metrics.iter().map(|m| (m.page_at, m.report_n)).collect()
}

/// The payload as stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct Packed<S> {
    envelopes: Vec<Envelope<S>>,
    metrics: Vec<Metric<S>>,
    api_calls: Vec<ApiCall<S>>,
}

fn metric_envelope(r: &MetricRow) -> Envelope<&str> {
    Envelope {
        site: &r.site,
        received_at: r.received_at,
        session: &r.session,
        page: &r.page,
        url: &r.url,
        nav: &r.nav,
        release: &r.release,
        env: &r.env,
        device: &r.device,
        browser: &r.browser,
        os: &r.os,
        country: &r.country,
        ect: &r.ect,
        viewport_w: r.viewport_w,
        viewport_h: r.viewport_h,
        dpr: r.dpr,
        memory: r.memory,
        cores: r.cores,
        skew_ms: r.skew_ms,
    }
}

/// An API call's envelope, the fields it lacks empty.
fn api_envelope(r: &ApiCallRow) -> Envelope<&str> {
    Envelope {
        site: &r.site,
        received_at: r.received_at,
        session: &r.session,
        page: &r.page,
        url: &r.url,
        nav: &r.nav,
        release: &r.release,
        env: &r.env,
        device: &r.device,
        browser: &r.browser,
        os: &r.os,
        country: &r.country,
        ect: "",
        viewport_w: 0,
        viewport_h: 0,
        dpr: 0.0,
        memory: 0.0,
        cores: 0,
        skew_ms: 0,
    }
}

/// Whether an API call may use `e` (the fields it has are equal).
fn fits_api(e: &Envelope<&str>, a: &Envelope<&str>) -> bool {
    (e.site, e.received_at, e.session, e.page, e.url, e.nav, e.release, e.env, e.device, e.browser, e.os, e.country)
        == (a.site, a.received_at, a.session, a.page, a.url, a.nav, a.release, a.env, a.device, a.browser, a.os, a.country)
}

/// The index of `e` in `envelopes` (rows of one beacon share one: the last is checked first),
/// adding it when new.
fn index_of<'a>(
    envelopes: &mut Vec<Envelope<&'a str>>,
    e: Envelope<&'a str>,
    fits: impl Fn(&Envelope<&str>, &Envelope<&str>) -> bool,
) -> u32 {
    let found = envelopes.iter().rposition(|known| fits(known, &e));
    let index = found.unwrap_or_else(|| {
        envelopes.push(e);
        envelopes.len() - 1
    });
    u32::try_from(index).unwrap_or(u32::MAX)
}

pub fn pack(batch: &Batch) -> Packed<&str> {
    let mut envelopes: Vec<Envelope<&str>> = Vec::with_capacity(1);
    let metrics = batch
        .metrics
        .iter()
        .map(|r| Metric {
            envelope: index_of(&mut envelopes, metric_envelope(r), |a, b| a == b),
            event_time: r.event_time,
            name: r.name.as_str(),
            value: r.value,
            delta: r.delta,
            rating: r.rating,
            metric_id: r.metric_id.as_str(),
            attribution: r.attribution.as_str(),
            tag_keys: r.tag_keys.iter().map(String::as_str).collect(),
            tag_values: r.tag_values.iter().map(String::as_str).collect(),
            seq: r.seq,
        })
        .collect();
    let api_calls = batch
        .api_calls
        .iter()
        .map(|r| ApiCall {
            envelope: index_of(&mut envelopes, api_envelope(r), fits_api),
            event_time: r.event_time,
            route: r.route.as_str(),
            method: r.method.as_str(),
            status: r.status,
            ok: r.ok,
            error: r.error.as_str(),
            duration: r.duration,
            server_timing: r.server_timing.as_str(),
            seq: r.seq,
            call_id: r.call_id.as_str(),
        })
        .collect();
    Packed { envelopes, metrics, api_calls }
}

/// The rows of `packed`, each metric with its order from `orders` (empty for format 4: none).
pub fn unpack(packed: Packed<String>, orders: &[Order]) -> Result<Batch, String> {
    let Packed { envelopes, metrics, api_calls } = packed;
    if !orders.is_empty() && orders.len() != metrics.len() {
        return Err(format!("{} metric orders for {} metrics", orders.len(), metrics.len()));
    }
    let envelope = |i: u32| envelopes.get(i as usize).ok_or_else(|| format!("a row names envelope {i} of {}", envelopes.len()));
    let metrics = metrics
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let e = envelope(m.envelope)?;
            let (page_at, report_n) = orders.get(i).copied().unwrap_or((0, 0));
            Ok(MetricRow {
                site: e.site.clone(),
                event_time: m.event_time,
                received_at: e.received_at,
                name: m.name,
                value: m.value,
                delta: m.delta,
                rating: m.rating,
                metric_id: m.metric_id,
                session: e.session.clone(),
                page: e.page.clone(),
                url: e.url.clone(),
                nav: e.nav.clone(),
                release: e.release.clone(),
                env: e.env.clone(),
                device: e.device.clone(),
                browser: e.browser.clone(),
                os: e.os.clone(),
                country: e.country.clone(),
                ect: e.ect.clone(),
                viewport_w: e.viewport_w,
                viewport_h: e.viewport_h,
                dpr: e.dpr,
                memory: e.memory,
                cores: e.cores,
                skew_ms: e.skew_ms,
                attribution: m.attribution,
                tag_keys: m.tag_keys,
                tag_values: m.tag_values,
                seq: m.seq,
                page_at,
                report_n,
            })
        })
        .collect::<Result<_, String>>()?;
    let api_calls = api_calls
        .into_iter()
        .map(|a| {
            let e = envelope(a.envelope)?;
            Ok(ApiCallRow {
                site: e.site.clone(),
                event_time: a.event_time,
                received_at: e.received_at,
                route: a.route,
                method: a.method,
                status: a.status,
                ok: a.ok,
                error: a.error,
                duration: a.duration,
                server_timing: a.server_timing,
                session: e.session.clone(),
                page: e.page.clone(),
                url: e.url.clone(),
                nav: e.nav.clone(),
                release: e.release.clone(),
                env: e.env.clone(),
                device: e.device.clone(),
                browser: e.browser.clone(),
                os: e.os.clone(),
                country: e.country.clone(),
                seq: a.seq,
                call_id: a.call_id,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Batch { metrics, api_calls })
}
