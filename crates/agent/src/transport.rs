//! Beacons: metrics grouped by the page view they belong to, encoded as the wire format's JSON,
//! split so no payload exceeds [`MAX_PAYLOAD_BYTES`], and sent with `navigator.sendBeacon` as
//! `text/plain` (no CORS preflight), falling back to `fetch` with `keepalive`.
//!
//! JSON is made by the browser (`JSON.stringify` of the objects [`crate::wire`] builds in the
//! protocol's shape), which keeps a JSON serialiser and float formatting out of the wasm.

use std::rc::Rc;

use js_sys::{Function, Object};
use pulse_protocol::{Beacon, NavigationType, Viewport, VERSION};
use wasm_bindgen::{JsCast, JsValue};

use crate::browser::{self, get, num};

/// The largest payload sent: under the browsers' 64 KiB keepalive budget with room for headers,
/// as other agents do.
pub const MAX_PAYLOAD_BYTES: usize = 60_000;

/// What every metric of one beacon shares: the envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub session: String,
    pub page: String,
    pub url: String,
    pub nav: NavigationType,
}

/// A metric waiting to be sent — as the JavaScript object `beforeSend` returned, so it is never
/// converted back — with the page view it was measured in.
pub type Queued = (Rc<Context>, JsValue);

/// Splits `items` into payloads: consecutive items of the same context, at most `max_count` per
/// payload, each encoding to at most `max_bytes` (halving a group until it fits). Returns the
/// payloads with the items each carries, and the items that cannot fit even alone.
pub fn split<T: Clone>(
    items: &[T],
    same_context: impl Fn(&T, &T) -> bool,
    max_count: usize,
    max_bytes: usize,
    mut encode: impl FnMut(&[T]) -> String,
) -> (Vec<(String, Vec<T>)>, Vec<T>) {
    let mut payloads = Vec::new();
    let mut too_large = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let mut end = start + 1;
        while end < items.len() && end - start < max_count && same_context(&items[start], &items[end]) {
            end += 1;
        }
        let mut pending = vec![&items[start..end]];
        while let Some(group) = pending.pop() {
            let body = encode(group);
            if body.len() <= max_bytes {
                payloads.push((body, group.to_vec()));
            } else if group.len() == 1 {
                too_large.extend_from_slice(group);
            } else {
                let (a, b) = group.split_at(group.len() / 2);
                // Popped last-in first-out: push the second half first to keep the order.
                pending.push(b);
                pending.push(a);
            }
        }
        start = end;
    }
    (payloads, too_large)
}

/// Builds the envelope for one page view (its metrics are added as JavaScript objects).
pub fn envelope(config: &crate::config::Config, context: &Context) -> Beacon<()> {
    Beacon {
        v: VERSION,
        site: config.site.clone(),
        session: context.session.clone(),
        page: context.page.clone(),
        url: context.url.clone(),
        nav: context.nav,
        release: config.release.clone(),
        env: config.env.clone(),
        viewport: None,
        dpr: None,
        memory: None,
        cores: None,
        ect: None,
        sent_at: 0.0,
        metrics: Vec::new(),
    }
}

/// Adds what the browser says about the device, and the send time.
pub(crate) fn describe_device(beacon: &mut Beacon<()>) {
    let Some(window) = browser::window() else { return };
    let (w, h) = (num(&window, "innerWidth"), num(&window, "innerHeight"));
    if w.is_finite() && h.is_finite() {
        beacon.viewport = Some(Viewport { w: w as u32, h: h as u32 });
    }
    let finite = |v: f64| v.is_finite().then_some(v);
    beacon.dpr = finite(num(&window, "devicePixelRatio"));
    let navigator = get(&window, "navigator");
    beacon.memory = finite(num(&navigator, "deviceMemory"));
    beacon.cores = finite(num(&navigator, "hardwareConcurrency")).map(|c| c as u32);
    beacon.ect = browser::text(&get(&navigator, "connection"), "effectiveType");
    beacon.sent_at = browser::epoch_ms();
}

/// The JSON payload of one beacon: the envelope with `metrics` set to the queued objects.
pub(crate) fn to_json(beacon: &Beacon<()>, metrics: &[Queued]) -> Option<String> {
    let object = crate::wire::beacon(beacon, metrics.iter().map(|(_, m)| m));
    js_sys::JSON::stringify(&object).ok()?.as_string()
}

/// Sends one payload. `sendBeacon` first; if the browser refuses it (over its budget, or no
/// `sendBeacon`), `fetch` with `keepalive`. `on_failure` runs when neither gets the payload out.
pub(crate) fn send(endpoint: &str, body: &str, fetch: Option<&Function>, on_failure: impl FnOnce() + 'static) {
    let Some(window) = browser::window() else { return on_failure() };
    let navigator = window.navigator();
    if get(&navigator, "sendBeacon").is_function() && navigator.send_beacon_with_opt_str(endpoint, Some(body)).unwrap_or(false) {
        return;
    }
    let Some(fetch) = fetch else { return on_failure() };
    let init = Object::new();
    browser::set(&init, "method", &JsValue::from_str("POST"));
    browser::set(&init, "body", &JsValue::from_str(body));
    browser::set(&init, "keepalive", &JsValue::TRUE);
    browser::set(&init, "credentials", &JsValue::from_str("omit"));
    let headers = Object::new();
    browser::set(&headers, "content-type", &JsValue::from_str("text/plain;charset=UTF-8"));
    browser::set(&init, "headers", &headers);
    let Ok(promise) = fetch.call2(&window, &JsValue::from_str(endpoint), &init) else { return on_failure() };
    // One handler for both outcomes: a Response that is not a server error means delivered (a 4xx
    // will not get better by resending); an error or a 5xx/429 means try again with the next send.
    browser::on_settle(&promise, move |outcome: JsValue| {
        let status = num(&outcome, "status");
        let delivered = outcome.is_instance_of::<web_sys::Response>() && status < 500.0 && status != 429.0;
        if !delivered {
            on_failure();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(items: &[(u8, String)]) -> String {
        serde_json::to_string(&items.iter().map(|(_, s)| s).collect::<Vec<_>>()).unwrap_or_default()
    }

    #[test]
    fn payloads_respect_count_context_and_size() {
        let items: Vec<(u8, String)> = (0..10).map(|i| (if i < 7 { 1 } else { 2 }, "x".repeat(10))).collect();
        let (payloads, too_large) = split(&items, |a, b| a.0 == b.0, 3, 1_000, encode);
        let sizes: Vec<usize> = payloads.iter().map(|(_, items)| items.len()).collect();
        assert_eq!(sizes, vec![3, 3, 1, 3], "groups of 3, and a new payload where the context changes");
        assert!(too_large.is_empty());
    }

    #[test]
    fn an_oversized_group_is_halved_until_every_payload_fits() {
        let items: Vec<(u8, String)> = (0..50).map(|i| (0, format!("{i:04}").repeat(250))).collect(); // ~1 KB each
        let (payloads, too_large) = split(&items, |_, _| true, 500, 12_000, encode);
        assert!(too_large.is_empty());
        assert!(payloads.iter().all(|(body, _)| body.len() <= 12_000));
        let sent: Vec<(u8, String)> = payloads.iter().flat_map(|(_, items)| items.clone()).collect();
        assert_eq!(sent, items, "every item once, in order");
        assert!(payloads.len() >= 5);
        for (body, items) in &payloads {
            assert_eq!(body, &encode(items), "a payload is exactly its items");
        }
    }

    #[test]
    fn an_item_too_large_alone_is_set_aside() {
        let mut items: Vec<(u8, String)> = (0..4).map(|_| (0, "a".repeat(10))).collect();
        items.insert(2, (0, "b".repeat(5_000)));
        let (payloads, too_large) = split(&items, |_, _| true, 500, 1_000, encode);
        assert_eq!(too_large, vec![(0, "b".repeat(5_000))]);
        assert_eq!(payloads.iter().map(|(_, i)| i.len()).sum::<usize>(), 4);
    }
}
