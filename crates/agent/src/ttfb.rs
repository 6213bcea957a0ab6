//! Time to First Byte, as web-vitals measures it: the navigation entry's `responseStart` minus
//! `activationStart`, clamped at 0, read once the page has loaded. Attribution splits it into
//! waiting (redirects, service worker start), cache, DNS, connection and request time. A
//! back/forward-cache restore reports 0 (nothing was fetched).

use pulse_protocol::Vital;

use crate::agent::{current, Agent, Attribution, Instance};
use crate::browser::{self, num, Listener};

/// TTFB of the navigation, if the browser has a usable navigation entry.
pub(crate) fn value(activation_start: f64) -> Option<f64> {
    let nav = browser::navigation_entry()?;
    let response_start = num(&nav, "responseStart");
    // Some browsers report 0 or a time in the future for odd navigations; web-vitals skips those.
    (response_start > 0.0 && response_start <= browser::now()).then(|| (response_start - activation_start).max(0.0))
}

pub(crate) fn start(agent: &Agent) {
    let loaded = browser::document().is_some_and(|d| d.ready_state() == "complete");
    if loaded {
        later(report);
    } else if let Some(window) = browser::window() {
        agent.hook(Listener::new(&window, "load", true, |_| later(report)));
    }
}

/// After the current task, so `loadEventEnd` is set when the entry is read. The one-shot timer is
/// deliberately not kept: it runs once, and after `shutdown` it finds no agent and does nothing.
fn later(f: fn()) {
    gloo_timers::callback::Timeout::new(0, move || crate::browser::timed(f)).forget();
}

fn report() {
    let Some(agent) = current() else { return };
    let activation = agent.activation_start.get();
    let (Some(value), Some(nav)) = (value(activation), browser::navigation_entry()) else { return };
    let at = |key: &str| (num(&nav, key) - activation).max(0.0);
    let fetch_start = at("fetchStart");
    let dns_start = at("domainLookupStart").max(fetch_start);
    let connect_start = at("connectStart").max(dns_start);
    let request_start = at("requestStart").max(connect_start);
    let attribution = Attribution::default()
        .num("waitingDuration", fetch_start.min(value))
        .num("cacheDuration", (dns_start - fetch_start).max(0.0))
        .num("dnsDuration", (connect_start - dns_start).max(0.0))
        .num("connectionDuration", (request_start - connect_start).max(0.0))
        .num("requestDuration", (value - request_start).max(0.0));
    if let Some(metric) = Instance::new().metric(Vital::Ttfb, value, attribution) {
        agent.emit(metric);
    }
}

pub(crate) fn restored(agent: &Agent) {
    if let Some(metric) = Instance::new().metric(Vital::Ttfb, 0.0, Attribution::default()) {
        agent.emit(metric);
    }
}
