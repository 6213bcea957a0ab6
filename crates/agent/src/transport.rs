//! Beacons: metrics grouped by the page view they belong to, encoded as the wire format's JSON,
//! split so no payload exceeds [`MAX_PAYLOAD_BYTES`], and sent with `navigator.sendBeacon` as
//! `text/plain` (no CORS preflight), falling back to `fetch` with `keepalive`.
//!
//! The JSON is written in the wasm ([`crate::json`], no `core::fmt`): each metric is its JSON from
//! the moment it is measured, and a payload wraps them in the envelope.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use pulse_protocol::limits::{MAX_CORES, MAX_DPR, MAX_MEMORY_GIB, MAX_VIEWPORT_PX};
use pulse_protocol::{NavigationType, VERSION};

use crate::config::Config;
use crate::host;
use crate::json::Obj;

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

/// A metric waiting to be sent — as JSON text, as `beforeSend` left it — with the page view it
/// was measured in.
pub type Queued = (Rc<Context>, String);

/// Splits `items` into payloads: consecutive items of the same context, at most `max_count` per
/// payload, each encoding to at most `max_bytes` (halving a group until it fits; `encode` is given
/// the run's first item, whose context every item of the group shares). Returns the payloads with
/// the items each carries (borrowed: most are sent at once and need no copy); an item that cannot
/// fit even alone is left out.
pub fn split<T>(
    items: &[T],
    same_context: impl Fn(&T, &T) -> bool,
    max_count: usize,
    max_bytes: usize,
    mut encode: impl FnMut(&T, &[T]) -> String,
) -> Vec<(String, &[T])> {
    let mut payloads = Vec::new();
    // Slices are taken with `get` and `split_at_checked`: no panic paths in the wasm.
    let mut rest = items;
    while let Some(first) = rest.first() {
        let mut end = 1;
        while end < max_count && rest.get(end).is_some_and(|item| same_context(first, item)) {
            end += 1;
        }
        let Some((run, after)) = rest.split_at_checked(end) else { break };
        rest = after;
        let mut pending = vec![run];
        while let Some(group) = pending.pop() {
            let body = encode(first, group);
            if body.len() <= max_bytes {
                payloads.push((body, group));
            } else if let Some((a, b)) = group.split_at_checked(group.len() / 2).filter(|(a, _)| !a.is_empty()) {
                // Popped last-in first-out: push the second half first to keep the order.
                pending.push(b);
                pending.push(a);
            }
        }
    }
    payloads
}

/// The JSON payload of one beacon: the envelope of `context`, what the browser says about the
/// device, the send time, and the metrics.
pub fn payload(config: &Config, context: &Context, metrics: &[Queued]) -> String {
    let mut out = String::with_capacity(256 + metrics.iter().map(|(_, m)| m.len() + 1).sum::<usize>());
    let mut o = Obj::new(&mut out);
    o.num("v", f64::from(VERSION));
    o.str("site", &config.site);
    o.str("session", &context.session);
    o.str("page", &context.page);
    o.str("url", &context.url);
    o.str("nav", context.nav.as_str());
    o.opt_str("release", config.release.as_deref());
    o.opt_str("env", config.env.as_deref());
    // Each hint only within the collector's range: it refuses the whole beacon for one out of
    // range (a devicePixelRatio over 16 at a high zoom, a page's own override).
    let within = |v: f64, max: f64| (0.0..=max).contains(&v).then_some(v);
    let window = host::WINDOW;
    let viewport = f64::from(MAX_VIEWPORT_PX);
    if let (Some(w), Some(h)) = (within(host::num(window, "innerWidth"), viewport), within(host::num(window, "innerHeight"), viewport)) {
        let mut vp = Obj::new(o.key("viewport"));
        vp.num("w", (w as u32).into());
        vp.num("h", (h as u32).into());
        vp.end();
    }
    o.opt_num("dpr", within(host::num(window, "devicePixelRatio"), MAX_DPR));
    let navigator = host::NAVIGATOR;
    o.opt_num("memory", within(host::num(navigator, "deviceMemory"), MAX_MEMORY_GIB));
    o.opt_num("cores", within(host::num(navigator, "hardwareConcurrency"), f64::from(MAX_CORES)).map(|c| f64::from(c as u32)));
    o.opt_str("ect", host::text(host::get(navigator, "connection"), "effectiveType").as_deref());
    o.num("sent_at", host::epoch());
    let list = o.key("metrics");
    list.push('[');
    for (i, (_, m)) in metrics.iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        list.push_str(m);
    }
    list.push(']');
    o.end();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use alloc::format;

    fn encode(_: &(u8, String), items: &[(u8, String)]) -> String {
        serde_json::to_string(&items.iter().map(|(_, s)| s).collect::<Vec<_>>()).unwrap_or_default()
    }

    #[test]
    fn payloads_respect_count_context_and_size() {
        let items: Vec<(u8, String)> = (0..10).map(|i| (if i < 7 { 1 } else { 2 }, "x".repeat(10))).collect();
        let payloads = split(&items, |a, b| a.0 == b.0, 3, 1_000, encode);
        let sizes: Vec<usize> = payloads.iter().map(|(_, items)| items.len()).collect();
        assert_eq!(sizes, vec![3, 3, 1, 3], "groups of 3, and a new payload where the context changes");
    }

    #[test]
    fn an_oversized_group_is_halved_until_every_payload_fits() {
        let items: Vec<(u8, String)> = (0..50).map(|i| (0, format!("{i:04}").repeat(250))).collect(); // ~1 KB each
        let payloads = split(&items, |_, _| true, 500, 12_000, encode);
        assert!(payloads.iter().all(|(body, _)| body.len() <= 12_000));
        let sent: Vec<(u8, String)> = payloads.iter().flat_map(|(_, items)| items.to_vec()).collect();
        assert_eq!(sent, items, "every item once, in order");
        assert!(payloads.len() >= 5);
        for (body, items) in &payloads {
            assert_eq!(body, &encode(&items[0], items), "a payload is exactly its items");
        }
    }

    #[test]
    fn an_item_too_large_alone_is_set_aside() {
        let mut items: Vec<(u8, String)> = (0..4).map(|_| (0, "a".repeat(10))).collect();
        items.insert(2, (0, "b".repeat(5_000)));
        let payloads = split(&items, |_, _| true, 500, 1_000, encode);
        assert!(payloads.iter().all(|(_, i)| !i.contains(&(0, "b".repeat(5_000)))));
        assert_eq!(payloads.iter().map(|(_, i)| i.len()).sum::<usize>(), 4);
    }
}
