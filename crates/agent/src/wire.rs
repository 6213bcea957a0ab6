//! The wire format as JavaScript objects, built field by field. The names and shapes are those of
//! `crates/protocol` (`Beacon`, `Metric`); the agent's browser tests parse every payload back into
//! those types. Building the objects directly instead of through serde + serde-wasm-bindgen keeps
//! about 16 KB of generic serialisation code out of the wasm.

use std::collections::BTreeMap;

use js_sys::{Array, Object};
use pulse_protocol::{AttrValue, Beacon, Metric};
use wasm_bindgen::JsValue;

use crate::agent::Stats;
use crate::browser::set;

fn put_str(o: &Object, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        set(o, key, &JsValue::from_str(v));
    }
}

fn put_num(o: &Object, key: &str, value: Option<f64>) {
    if let Some(v) = value {
        set(o, key, &JsValue::from_f64(v));
    }
}

fn strings(map: &BTreeMap<String, String>) -> Object {
    let o = Object::new();
    for (k, v) in map {
        set(&o, k, &JsValue::from_str(v));
    }
    o
}

/// A metric as the page sees it (`onMetric`, `beforeSend`) and as it is sent.
pub(crate) fn metric(m: &Metric) -> JsValue {
    let o = Object::new();
    put_str(&o, "name", Some(&m.name));
    // `null` for a missing value, as `JSON.stringify(NaN)` would give.
    set(&o, "value", &m.value.map_or(JsValue::NULL, JsValue::from_f64));
    put_num(&o, "at", Some(m.at));
    put_str(&o, "rating", m.rating.as_deref());
    put_num(&o, "delta", m.delta);
    put_str(&o, "id", m.id.as_deref());
    if let Some(attribution) = &m.attribution {
        let a = Object::new();
        for (k, v) in attribution {
            match v {
                AttrValue::Num(n) => put_num(&a, k, Some(*n)),
                AttrValue::Str(s) => put_str(&a, k, Some(s)),
            }
        }
        set(&o, "attribution", &a);
    }
    put_str(&o, "route", m.route.as_deref());
    put_str(&o, "method", m.method.as_deref());
    put_num(&o, "status", m.status.map(f64::from));
    if let Some(ok) = m.ok {
        set(&o, "ok", &JsValue::from_bool(ok));
    }
    put_str(&o, "error", m.error.as_deref());
    if let Some(timings) = &m.server_timing {
        let list = Array::new();
        for t in timings {
            let e = Object::new();
            put_str(&e, "name", Some(&t.name));
            put_num(&e, "dur", t.dur);
            put_str(&e, "desc", t.desc.as_deref());
            list.push(&e);
        }
        set(&o, "server_timing", &list);
    }
    if let Some(tags) = &m.tags {
        set(&o, "tags", &strings(tags));
    }
    o.into()
}

/// The envelope of one beacon, with `metrics` set to the queued objects.
pub(crate) fn beacon<'a>(b: &Beacon<Metric>, metrics: impl Iterator<Item = &'a JsValue>) -> Object {
    let o = Object::new();
    put_num(&o, "v", Some(f64::from(b.v)));
    put_str(&o, "site", Some(&b.site));
    put_str(&o, "session", Some(&b.session));
    put_str(&o, "page", Some(&b.page));
    put_str(&o, "url", Some(&b.url));
    put_str(&o, "nav", Some(b.nav.as_str()));
    put_str(&o, "release", b.release.as_deref());
    put_str(&o, "env", b.env.as_deref());
    if let Some(v) = b.viewport {
        let vp = Object::new();
        put_num(&vp, "w", Some(f64::from(v.w)));
        put_num(&vp, "h", Some(f64::from(v.h)));
        set(&o, "viewport", &vp);
    }
    put_num(&o, "dpr", b.dpr);
    put_num(&o, "memory", b.memory);
    put_num(&o, "cores", b.cores.map(f64::from));
    put_str(&o, "ect", b.ect.as_deref());
    put_num(&o, "sent_at", Some(b.sent_at));
    set(&o, "metrics", &metrics.collect::<Array>());
    o
}

/// `stats()` for the page (camelCase, as JavaScript names things).
pub(crate) fn stats(s: &Stats) -> JsValue {
    let o = Object::new();
    for (key, value) in [
        ("measured", s.measured),
        ("sent", s.sent),
        ("beacons", s.beacons),
        ("retried", s.retried),
        ("droppedUnsampled", s.dropped_unsampled),
        ("droppedByBeforeSend", s.dropped_by_before_send),
        ("beforeSendErrors", s.before_send_errors),
        ("droppedQueueFull", s.dropped_queue_full),
        ("droppedTooLarge", s.dropped_too_large),
        ("rejectedRecords", s.rejected_records),
    ] {
        put_num(&o, key, Some(f64::from(value)));
    }
    put_num(&o, "busyMs", Some(s.busy_ms));
    put_num(&o, "longestMs", Some(s.longest_ms));
    o.into()
}
