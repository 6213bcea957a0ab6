//! Time to First Byte, as web-vitals measures it: the navigation entry's `responseStart` minus
//! `activationStart`, clamped at 0, read once the page has loaded. Attribution splits it as
//! web-vitals' attribution build does: waiting (redirects, until the service worker or the fetch
//! starts), cache, DNS, connection and request time. A back/forward-cache restore reports 0
//! (nothing was fetched) — but only when the load had a usable navigation entry, as in
//! web-vitals.

use pulse_protocol::Vital;

use crate::host::{self, Js};
use crate::report::{Attribution, Instance, Outbox};

/// TTFB of the navigation, if the browser has a usable navigation entry: some browsers report
/// `responseStart` 0 or in the future for odd navigations, and web-vitals skips those.
pub fn value(activation_start: f64) -> Option<f64> {
    from_entry(host::navigation()?, activation_start)
}

/// TTFB from the navigation entry `nav`.
fn from_entry(nav: Js, activation_start: f64) -> Option<f64> {
    let response_start = host::num(nav, "responseStart");
    (response_start > 0.0 && response_start < host::now()).then(|| (response_start - activation_start).max(0.0))
}

/// Reports TTFB of the load (called after the load event's task).
pub fn report(activation: f64, out: &mut Outbox) {
    let Some(nav) = host::navigation() else { return };
    let Some(value) = from_entry(nav, activation) else { return };
    // web-vitals' split: waiting until the service worker or the fetch started, then cache, DNS,
    // connection (to connectEnd: 0 under a service worker) and the request (the rest).
    let at = |key: &'static str| (host::num(nav, key) - activation).max(0.0);
    let first = |key: &'static str| Some(host::num(nav, key)).filter(|t| *t > 0.0);
    let wait_end = (first("workerStart").or_else(|| first("fetchStart")).unwrap_or(0.0) - activation).max(0.0);
    let dns_start = at("domainLookupStart");
    let connect_start = at("connectStart");
    let connect_end = at("connectEnd");
    send(value, wait_end, dns_start, connect_start, connect_end, out);
}

/// Reports `value` with its split: waiting until `wait_end`, cache until `dns_start`, DNS until
/// `connect_start`, the connection until `connect_end`, the request the rest.
fn send(value: f64, wait_end: f64, dns_start: f64, connect_start: f64, connect_end: f64, out: &mut Outbox) {
    let mut attribution = Attribution::default();
    attribution
        .num("waitingDuration", wait_end)
        .num("cacheDuration", dns_start - wait_end)
        .num("dnsDuration", connect_start - dns_start)
        .num("connectionDuration", connect_end - connect_start)
        .num("requestDuration", value - connect_end);
    Instance::default().report(out, Vital::Ttfb, value, attribution);
}

/// A new page view without a request (a back/forward-cache restore, a soft navigation): TTFB 0,
/// when the load had a usable navigation entry.
pub fn zero(activation: f64, out: &mut Outbox) {
    if value(activation).is_some() {
        // Every part 0.
        send(0.0, 0.0, 0.0, 0.0, 0.0, out);
    }
}
