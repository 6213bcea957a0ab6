//! What the metric modules share, and all they depend on besides [`crate::host`] (as web-vitals'
//! `onX.ts` files depend only on `lib/`): the page view being measured ([`View`]), one reported
//! instance of a vital ([`Instance`]), attribution, the [`Metric`] record, and the [`Outbox`]
//! metrics are put in. The agent empties the outbox after each event, the one place where the
//! page's callbacks run.

use alloc::string::String;
use alloc::vec::Vec;
use pulse_protocol::Vital;

use crate::host::{self, Js};
use crate::json::Obj;

/// The page view the vitals are measured in (a back/forward-cache restore starts a new one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// `activationStart` (prerendered pages measure from activation).
    pub activation_start: f64,
    /// `performance.now()` time the page was first hidden; 0 if it loaded hidden, ∞ while visible.
    pub first_hidden: f64,
    /// FCP was reported in this page view (CLS reports only after it, as in web-vitals).
    pub painted: bool,
}

impl View {
    pub fn new(activation_start: f64, first_hidden: f64) -> View {
        View { activation_start, first_hidden, painted: false }
    }
}

/// A custom metric's tags, as the page gave them (keys unique: an object's own keys).
pub type Tags = Vec<(String, String)>;

/// One measurement, written as it is sent (the protocol's `Metric` object) when it is measured:
/// the agent hands this JSON to `onMetric`, `beforeSend` and the beacon.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub json: String,
}

impl Metric {
    /// A metric `name` with `value` measured at `at` (epoch ms); `more` writes its other members.
    pub fn new(name: &str, value: f64, at: f64, more: impl FnOnce(&mut Obj<'_>)) -> Metric {
        let mut json = Metric::head(name, value, at);
        let mut o = Obj::after(&mut json);
        more(&mut o);
        o.end();
        Metric { json }
    }

    /// The metric's name: the first member, written without escapes (names are plain ASCII:
    /// the vitals', `api`, custom names the protocol's rule allows).
    pub fn name(json: &str) -> &str {
        json.get(r#"{"name":""#.len()..).and_then(|rest| pulse_protocol::text::pieces(rest, b"\"").next()).unwrap_or("")
    }

    /// The members every metric has, written once for all the callers of [`Metric::new`] (which
    /// is generic, so it is copied into each).
    #[inline(never)]
    fn head(name: &str, value: f64, at: f64) -> String {
        let mut json = String::with_capacity(128);
        let mut o = Obj::new(&mut json);
        o.str("name", name);
        o.num("value", value);
        o.num("at", at);
        json
    }
}

/// Writes a new `id` member (`m1-` and a random id): the collector counts a measurement once by
/// it, also when its beacon is sent again after a lost answer (the retry sends the same JSON).
pub fn id(o: &mut Obj<'_>) {
    let id = o.key("id");
    id.push_str("\"m1-");
    id.push_str(&host::random_id());
    id.push('"');
}

/// Attribution details of one vital (web-vitals' attribution build, flattened): the `attribution`
/// object, without its closing brace, or empty when it has no members.
#[derive(Debug, Default, Clone)]
pub struct Attribution(String);

impl Attribution {
    /// Adds `key` when `value` is finite.
    pub fn num(&mut self, key: &'static str, value: f64) -> &mut Attribution {
        if value.is_finite() {
            crate::json::number(self.key(key), value);
        }
        self
    }

    /// Adds `key` when `value` is a non-empty string.
    pub fn text(&mut self, key: &'static str, value: Option<String>) -> &mut Attribution {
        if let Some(value) = value {
            self.str(key, &value);
        }
        self
    }

    /// Adds `key` when `value` is not empty.
    pub fn str(&mut self, key: &'static str, value: &str) -> &mut Attribution {
        if !value.is_empty() {
            crate::json::string(self.key(key), value);
        }
        self
    }

    /// Starts a member; the first opens the object (closed when the metric is written).
    fn key(&mut self, key: &str) -> &mut String {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        crate::json::string(&mut self.0, key);
        self.0.push(':');
        &mut self.0
    }
}

/// One instance of a vital (web-vitals' `id`): what was last reported, for `delta`.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The random part of web-vitals' `id` (written after `v1-`).
    id: String,
    reported: Option<f64>,
    /// Reports sent so far: each report carries its number (`n`), which orders the reports of
    /// one id at the collector even when the page's clock repeats a millisecond or steps back.
    reports: u32,
}

impl Default for Instance {
    fn default() -> Instance {
        Instance { id: host::random_id(), reported: None, reports: 0 }
    }
}

impl Instance {
    /// A value was reported.
    pub fn reported(&self) -> bool {
        self.reported.is_some()
    }

    /// Reports `value` unless it equals what was last reported (or is not a number).
    pub fn report(&mut self, out: &mut Outbox, vital: Vital, value: f64, attribution: Attribution) {
        if self.reported == Some(value) || !value.is_finite() {
            return;
        }
        let delta = value - self.reported.unwrap_or(0.0);
        self.reported = Some(value);
        // Written here rather than through `Metric::new`'s closure, which would take the
        // members below by reference.
        let mut json = Metric::head(vital.name(), value, host::epoch());
        let mut o = Obj::after(&mut json);
        o.str("rating", vital.thresholds().rate(value).as_str());
        o.num("delta", delta);
        // `v1-` and the random id: base-36 characters, which need no escapes.
        let id = o.key("id");
        id.push_str("\"v1-");
        id.push_str(&self.id);
        id.push('"');
        self.reports += 1;
        o.num("n", f64::from(self.reports));
        if !attribution.0.is_empty() {
            let a = o.key("attribution");
            a.push_str(&attribution.0);
            a.push('}');
        }
        o.end();
        out.push(Metric { json });
    }
}

/// Metrics measured and not yet handed to the agent.
#[derive(Debug, Default)]
pub struct Outbox(pub Vec<Metric>);

impl Outbox {
    pub fn push(&mut self, metric: Metric) {
        self.0.push(metric);
    }
}

/// Where the page load stood at `time`, as web-vitals' attribution reports it.
pub fn load_state(time: f64) -> Option<String> {
    let state = if host::is(host::DOCUMENT, "readyState", "loading") {
        "loading"
    } else if let Some(nav) = host::navigation() {
        let before = |key: &'static str| {
            let mark = host::num(nav, key);
            mark.is_nan() || mark <= 0.0 || time < mark
        };
        if time < host::num(nav, "domInteractive") {
            "loading"
        } else if before("domContentLoadedEventStart") {
            "dom-interactive"
        } else if before("domComplete") {
            "dom-content-loaded"
        } else {
            "complete"
        }
    } else {
        "complete"
    };
    Some(String::from(state))
}

/// web-vitals' `getSelector`: a path from `node` up to the document (`html>body>main>img.hero`),
/// each step its `#id` (where the path stops) or its lower-case name with its classes sorted
/// (`div.card.hero`; a text node is `TEXT`), as long as the whole stays under 100 characters
/// (UTF-16 units, as JavaScript counts them) — but the first step whole. `None` for no node.
pub fn selector(node: Js) -> Option<String> {
    let mut sel = String::new();
    let mut current = node;
    loop {
        // Up to the document (9); a detached node ends at null, where web-vitals' loop throws.
        let kind = host::num(current, "nodeType");
        if kind == 9.0 || kind.is_nan() {
            break;
        }
        let id = host::text(current, "id").unwrap_or_default();
        let mut part = String::new();
        if !id.is_empty() {
            part.push('#');
            part.push_str(&id);
        } else {
            let mut name = host::text(current, "nodeName").unwrap_or_default();
            if kind == 1.0 {
                name.make_ascii_lowercase();
            } else {
                name.make_ascii_uppercase();
            }
            part.push_str(name.strip_prefix('#').filter(|_| kind != 1.0).unwrap_or(&name));
            // The class list's tokens (an SVG element's too), sorted, without repeats: the
            // smallest one after the last, until there is none (a few classes; no list).
            let classes = host::text(host::get(current, "classList"), "value").unwrap_or_default();
            let mut last = "";
            loop {
                let mut next: Option<&str> = None;
                for class in pulse_protocol::text::words(&classes) {
                    if class > last && next.is_none_or(|n| class < n) {
                        next = Some(class);
                    }
                }
                let Some(class) = next else { break };
                part.push('.');
                part.push_str(class);
                last = class;
            }
        }
        if units(&sel) + units(&part) > 99 {
            return Some(if sel.is_empty() { part } else { sel });
        }
        if !sel.is_empty() {
            part.push('>');
            part.push_str(&sel);
        }
        sel = part;
        if !id.is_empty() {
            break;
        }
        current = host::get(current, "parentNode");
    }
    (!sel.is_empty()).then_some(sel)
}

/// The length of `s` in UTF-16 units (JavaScript's `length`): one per character, two for one
/// of four UTF-8 bytes.
fn units(s: &str) -> usize {
    s.bytes().map(|b| usize::from(b & 0xC0 != 0x80) + usize::from(b >= 0xF0)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_count_as_javascript_does() {
        assert_eq!((units(""), units("div.a"), units("é"), units("😀"), units("a€😀b")), (0, 5, 1, 2, 5));
    }

    #[test]
    fn a_metric_knows_its_name_from_its_json() {
        for name in ["LCP", "api", "cart.items", "checkout:render", "page.slowest.img"] {
            let metric = Metric::new(name, 1.5, 1_790_000_000_000.0, |o| o.str("route", "/a\"b"));
            assert_eq!(Metric::name(&metric.json), name, "{}", metric.json);
        }
        assert_eq!(Metric::name("{}"), "");
    }
}
