//! The wire format as JavaScript objects, built field by field. The names and shapes are those of
//! `crates/protocol` (`Beacon`, `Metric`); the agent's browser tests parse every payload back into
//! those types. Building the objects directly instead of through serde + serde-wasm-bindgen keeps
//! about 16 KB of generic serialisation code out of the wasm.

use js_sys::{Array, Object};
use pulse_protocol::{AttrValue, Beacon, ServerTiming};
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

/// One measured metric on its way to becoming a JavaScript object: the protocol's `Metric`, with
/// attribution and tags as short lists rather than maps (no map code in the wasm; their keys are
/// unique by construction: fixed attribution names, and the keys of the page's tags object).
#[derive(Debug, Default)]
pub(crate) struct Metric {
    pub name: String,
    pub value: Option<f64>,
    pub at: f64,
    pub rating: Option<&'static str>,
    pub delta: Option<f64>,
    pub id: Option<String>,
    pub attribution: Vec<(&'static str, AttrValue)>,
    pub route: Option<String>,
    pub method: Option<String>,
    pub status: Option<u16>,
    pub ok: Option<bool>,
    pub error: Option<&'static str>,
    pub server_timing: Option<Vec<ServerTiming>>,
    pub tags: crate::measure::Tags,
}

/// A metric as the page sees it (`onMetric`, `beforeSend`) and as it is sent.
pub(crate) fn metric(m: &Metric) -> JsValue {
    let o = Object::new();
    put_str(&o, "name", Some(&m.name));
    // `null` for a missing value, as `JSON.stringify(NaN)` would give.
    set(&o, "value", &m.value.map_or(JsValue::NULL, JsValue::from_f64));
    put_num(&o, "at", Some(m.at));
    put_str(&o, "rating", m.rating);
    put_num(&o, "delta", m.delta);
    put_str(&o, "id", m.id.as_deref());
    if !m.attribution.is_empty() {
        let a = Object::new();
        for (k, v) in &m.attribution {
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
    put_str(&o, "error", m.error);
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
    if !m.tags.is_empty() {
        let t = Object::new();
        for (k, v) in &m.tags {
            set(&t, k, &JsValue::from_str(v));
        }
        set(&o, "tags", &t);
    }
    o.into()
}

/// The envelope of one beacon, with `metrics` set to the queued objects.
pub(crate) fn beacon<'a>(b: &Beacon<()>, metrics: impl Iterator<Item = &'a JsValue>) -> Object {
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
