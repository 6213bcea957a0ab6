//! **A size spike, not the agent** (issue 16; `measure.sh` builds it and prints its size). It
//! measures how small a numbers-only binding makes the agent's code: the page's objects stay in
//! a JS table (`host.js`), fields and type names are small numbers, strings cross as UTF-8 bytes,
//! safe Rust throughout, wasm-bindgen as the build tool. The subset is the agent's skeleton plus
//! a representative part of its work: options with errors naming the option; FCP, LCP (finalised
//! on input or hide, element attribution), CLS session windows, FID, TTFB and INP; `fetch` and
//! XHR timing with route templates; `record()` with the protocol's validation; `beforeSend`;
//! back/forward-cache restores; the session in `sessionStorage`; batching (50 metrics or 30 s);
//! the beacon's JSON with shortest round-trip numbers (the agent's own `json.rs`); flush on hide.
//! It is not exact to web-vitals (restores simplified, no prerender or hidden-at-load rules) and
//! is not tested; delete it when agent v2 lands.
#![no_std]
extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

#[path = "../../../crates/agent/src/json.rs"]
#[allow(dead_code)]
mod json;

#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

// Host: objects live in a JS table; slot 0 = current event/entry, 1 = options, 2 = navigation
// entry, 3 = an element. Keys and type names are small numbers the JS maps to strings.
use wasm_bindgen::prelude::*;

// Every import takes and returns `i32` and `f64` only: wasm-bindgen then imports it from
// `host.js` directly, without a glue shim (a `u32` gets one, for its `>>> 0`); the `&mut [u8]`
// ones keep theirs.
#[wasm_bindgen(module = "/host.js")]
extern "C" {
    fn observe(kind: i32) -> i32;
    fn listen(target: i32, kind: i32);
    fn later(ms: f64, code: i32);
    fn num(slot: i32, key: i32) -> f64;
    /// Writes the string field into `buf` (UTF-8); its length, or -1 when not a string.
    fn txt(slot: i32, key: i32, buf: &mut [u8]) -> i32;
    fn sub(slot: i32, key: i32, to: i32) -> i32;
    fn now() -> f64;
    fn epoch() -> f64;
    fn random() -> f64;
    fn load(key: i32, buf: &mut [u8]) -> i32;
    fn save(key: i32, ptr: i32, len: i32);
    fn send(url: i32, url_len: i32, body: i32, body_len: i32) -> i32;
    fn fail(ptr: i32, len: i32);
    /// The number a wrapper's call gets back (the call's id).
    #[wasm_bindgen(js_name = result)]
    fn set_result(n: f64);
    /// Wraps the page's `fetch`: each call is event `C_FETCH` (slot 0 the URL holder, slot 1 the
    /// init; the returned number is the call's id, 0 untimed), each end `C_FETCHED` (slot 0 the
    /// response or undefined, `n` the id).
    fn wrap_fetch();
    /// The same for `XMLHttpRequest` (`open`/`send`, the request's end on `loadend`).
    fn wrap_xhr();
    /// Calls back with `code` after the next paint (two animation frames).
    fn paint(code: i32);
    /// Calls the page's `beforeSend` (slot 6) with the metric's JSON parsed: -1 dropped, -2
    /// unchanged, else the length of the changed metric's JSON written into `buf`.
    fn before_send(ptr: i32, len: i32, buf: &mut [u8]) -> i32;
}
// Keys (the JS has the same table).
const K_ENDPOINT: i32 = 0;
const K_SITE: i32 = 1;
const K_SAMPLE: i32 = 2;
const K_RELEASE: i32 = 3;
const K_START: i32 = 4;
const K_VALUE: i32 = 5;
const K_RECENT: i32 = 6;
const K_RENDER: i32 = 7;
const K_LOAD: i32 = 8;
const K_NAME: i32 = 9;
const K_PROC: i32 = 10;
const K_RESP: i32 = 11;
const K_ELEMENT: i32 = 12;
const K_TAG: i32 = 13;
const K_ID: i32 = 14;
const K_URL: i32 = 15;
const K_HREF: i32 = 16;
const K_VIS: i32 = 17;
const K_ACT: i32 = 18;
const K_IID: i32 = 19;
const K_DUR: i32 = 20;
const K_TARGET: i32 = 21;
const K_METHOD: i32 = 22;
const K_STATUS: i32 = 23;
const K_PERSISTED: i32 = 24;
const K_BEFORE_SEND: i32 = 27;
const K_LENGTH: i32 = 25;
/// The slot's value itself, not a field of it.
const K_SELF: i32 = 26;
/// Keys from here read array items (`ITEM + i`).
const ITEM: i32 = 1000;
// Entry types / events.
const T_PAINT: i32 = 0;
const T_LCP: i32 = 1;
const T_SHIFT: i32 = 2;
const T_FIRST_INPUT: i32 = 3;
const E_VIS: i32 = 4;
const E_HIDE: i32 = 5;
const E_KEY: i32 = 6;
const E_POINTER: i32 = 7;
const C_TICK: i32 = 8;
const T_EVENT: i32 = 9;
const C_FETCH: i32 = 10;
const C_FETCHED: i32 = 11;
const E_SHOW: i32 = 12;
const C_PAINTED: i32 = 13;

fn text(slot: i32, key: i32) -> Option<String> {
    let mut buf = [0u8; 2048];
    let n = txt(slot, key, &mut buf);
    let b = buf.get(..usize::try_from(n).ok()?)?;
    Some(String::from(core::str::from_utf8(b).ok()?))
}

fn fail_with(option: &str, what: &str) {
    let mut m = String::from("pulse.init: option `");
    m.push_str(option);
    m.push_str("` ");
    m.push_str(what);
    fail(m.as_ptr() as i32, m.len() as i32)
}

#[derive(Default)]
struct State {
    endpoint: String,
    site: String,
    release: String,
    session: String,
    page: String,
    url: String,
    nav: String,
    sampled: bool,
    hidden_at: f64,
    act: f64,
    fcp_done: bool,
    lcp: f64,
    lcp_el: String,
    lcp_done: bool,
    cls: f64,
    win: f64,
    win_first: f64,
    win_last: f64,
    cls_n: i32,
    fid_done: bool,
    queue: Vec<String>,
    n: i32,
    /// The longest interactions (id, duration, event type and target), longest first.
    longest: Vec<(f64, f64, String)>,
    ids: (f64, f64),
    calls: Vec<(f64, f64, String, String)>,
    next_call: f64,
    before_send: bool,
    restored_at: f64,
}

/// The running agent; the page's binding calls [`Agent::ev`] with each event's code.
#[wasm_bindgen]
pub struct Agent(RefCell<State>);

#[wasm_bindgen]
impl Agent {
    pub fn ev(&self, code: i32) {
        if let Ok(mut s) = self.0.try_borrow_mut() {
            s.event(code);
        }
    }

    /// `record(name, value, tags)`: the name in slot 7, the tags' `[key, value]` pairs in slot 8.
    /// Throws an error naming the field at fault.
    pub fn record(&self, value: f64) {
        let name = text(7, K_SELF).unwrap_or_default();
        let mut tags = Vec::new();
        for i in 0..num(8, K_LENGTH).max(0.0) as i32 {
            if sub(8, ITEM + i, 3) != 0 {
                tags.push((text(3, ITEM).unwrap_or_default(), text(3, ITEM + 1).unwrap_or_default()));
            }
        }
        if let Err((problem, key)) = pulse_protocol::validate::custom(&name, value, tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            fail_with(key.unwrap_or(problem.field()), problem.message());
            return;
        }
        let Ok(mut s) = self.0.try_borrow_mut() else { return };
        s.n += 1;
        let mut out = String::new();
        let mut o = json::Obj::new(&mut out);
        o.str("name", &name);
        o.num("value", value);
        o.num("at", epoch());
        let t = o.key("tags");
        let mut to = json::Obj::new(t);
        for (k, v) in &tags {
            to.str(k, v);
        }
        to.end();
        o.end();
        s.queue.push(out);
    }
}

fn id() -> String {
    let mut s = String::new();
    for _ in 0..16 {
        let d = (random() * 36.0) as u32;
        s.push(char::from_digit(d.min(35), 36).unwrap_or('0'));
    }
    s
}

fn rating(v: f64, good: f64, poor: f64) -> &'static str {
    if v <= good {
        "good"
    } else if v <= poor {
        "needs-improvement"
    } else {
        "poor"
    }
}

impl State {
    fn metric(&mut self, name: &str, v: f64, good: f64, poor: f64, attr: Option<(&str, &str)>) {
        self.n += 1;
        let mut out = String::new();
        let mut o = json::Obj::new(&mut out);
        o.str("name", name);
        o.num("value", v);
        o.num("delta", v);
        let mut mid = String::from("v5-");
        mid.push_str(&self.page);
        mid.push('-');
        json::uint(&mut mid, self.n as u64);
        o.str("id", &mid);
        o.num("at", epoch());
        o.str("rating", rating(v, good, poor));
        if let Some((k, val)) = attr {
            let a = o.key("attribution");
            let mut ao = json::Obj::new(a);
            ao.str(k, val);
            ao.end();
        }
        o.end();
        self.queue.push(out);
        if self.queue.len() >= 50 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.queue.is_empty() || !self.sampled {
            self.queue.clear();
            return;
        }
        let mut b = String::new();
        let mut o = json::Obj::new(&mut b);
        o.num("v", 1.0);
        o.str("site", &self.site);
        o.str("session", &self.session);
        o.str("page", &self.page);
        o.str("url", &self.url);
        o.str("nav", &self.nav);
        o.opt_str("release", (!self.release.is_empty()).then_some(self.release.as_str()));
        o.num("sent_at", epoch());
        let m = o.key("metrics");
        m.push('[');
        let mut first = true;
        for q in &self.queue {
            let mut buf = [0u8; 2048];
            let kept = if self.before_send { before_send(q.as_ptr() as i32, q.len() as i32, &mut buf) } else { -2 };
            let q = match kept {
                -2 => q.as_str(),
                n => match buf.get(..usize::try_from(n).unwrap_or(0)).and_then(|b| core::str::from_utf8(b).ok()) {
                    Some(changed) if n > 0 => changed,
                    _ => continue,
                },
            };
            if !first {
                m.push(',');
            }
            first = false;
            m.push_str(q);
        }
        m.push(']');
        o.end();
        if send(self.endpoint.as_ptr() as i32, self.endpoint.len() as i32, b.as_ptr() as i32, b.len() as i32) != 0 {
            self.queue.clear();
        }
    }

    fn lcp_final(&mut self) {
        if !self.lcp_done && self.lcp > 0.0 {
            self.lcp_done = true;
            let el = core::mem::take(&mut self.lcp_el);
            self.metric("LCP", self.lcp, 2500.0, 4000.0, Some(("element", &el)));
        }
    }

    fn hidden(&mut self) {
        self.lcp_final();
        if self.cls_n > 0 {
            self.metric("CLS", self.cls, 0.1, 0.25, None);
        }
        // INP: the longest interaction, or the 98th percentile when there were many (one
        // candidate skipped per 50 interactions).
        let count = if self.ids.1 > 0.0 { ((self.ids.1 - self.ids.0) / 7.0) as usize + 1 } else { 0 };
        if let Some((_, d, target)) = self.longest.get((count / 50).min(self.longest.len().saturating_sub(1))) {
            let (d, target) = (*d, target.clone());
            self.metric("INP", d, 200.0, 500.0, Some(("interactionTarget", &target)));
            self.longest.clear();
        }
        self.flush();
    }

    fn event(&mut self, code: i32) {
        let t = num(0, K_START);
        match code {
            T_PAINT => {
                if !self.fcp_done && text(0, K_NAME).as_deref() == Some("first-contentful-paint") && t < self.hidden_at {
                    self.fcp_done = true;
                    self.metric("FCP", (t - self.act).max(0.0), 1800.0, 3000.0, None);
                }
            }
            T_LCP => {
                if self.lcp_done || t >= self.hidden_at {
                    return;
                }
                let r = num(0, K_RENDER);
                let v = if r > 0.0 { r } else { num(0, K_LOAD) };
                self.lcp = (v.max(t) - self.act).max(0.0);
                self.lcp_el.clear();
                if sub(0, K_ELEMENT, 3) != 0 {
                    if let Some(tag) = text(3, K_TAG) {
                        self.lcp_el.push_str(&tag.to_ascii_lowercase());
                    }
                    if let Some(id) = text(3, K_ID).filter(|s| !s.is_empty()) {
                        self.lcp_el.push('#');
                        self.lcp_el.push_str(&id);
                    }
                }
            }
            T_SHIFT => {
                if num(0, K_RECENT) > 0.0 {
                    return;
                }
                let v = num(0, K_VALUE);
                self.cls_n += 1;
                if self.win > 0.0 && t - self.win_last < 1000.0 && t - self.win_first < 5000.0 {
                    self.win += v;
                } else {
                    self.win = v;
                    self.win_first = t;
                }
                self.win_last = t;
                if self.win > self.cls {
                    self.cls = self.win;
                }
            }
            T_FIRST_INPUT => {
                if !self.fid_done {
                    self.fid_done = true;
                    let d = num(0, K_PROC) - t;
                    let name = text(0, K_NAME).unwrap_or_default();
                    self.metric("FID", d, 100.0, 300.0, Some(("eventType", &name)));
                }
            }
            T_EVENT => {
                let id = num(0, K_IID);
                if !(id > 0.0) {
                    return;
                }
                self.ids = if self.ids.1 > 0.0 { (self.ids.0.min(id), self.ids.1.max(id)) } else { (id, id) };
                let d = num(0, K_DUR);
                // Kept longest first by moving an entry up past shorter ones (no sort: a general
                // sort costs about 1.5 KB of wasm).
                let mut i = match self.longest.iter().position(|x| x.0 == id) {
                    Some(i) => i,
                    None if self.longest.len() < 10 || self.longest.last().is_some_and(|x| d > x.1) => {
                        let mut target = String::new();
                        if sub(0, K_TARGET, 3) != 0 {
                            if let Some(tag) = text(3, K_TAG) {
                                target.push_str(&tag.to_ascii_lowercase());
                            }
                        }
                        self.longest.push((id, 0.0, target));
                        self.longest.len() - 1
                    }
                    None => return,
                };
                if let Some(x) = self.longest.get_mut(i) {
                    x.1 = x.1.max(d);
                }
                while i > 0 && self.longest.get(i - 1).map(|x| x.1) < self.longest.get(i).map(|x| x.1) {
                    self.longest.swap(i - 1, i);
                    i -= 1;
                }
                self.longest.truncate(10);
            }
            C_FETCH => {
                let url = text(0, K_URL).unwrap_or_default();
                if url.starts_with(self.endpoint.as_str()) {
                    return;
                }
                let method = text(1, K_METHOD).unwrap_or_else(|| String::from("GET")).to_ascii_uppercase();
                self.next_call += 1.0;
                self.calls.push((self.next_call, now(), url, method));
                set_result(self.next_call);
            }
            C_FETCHED => {
                let id = num(2, K_ID);
                let Some(i) = self.calls.iter().position(|c| c.0 == id) else { return };
                let (_, started, url, method) = self.calls.swap_remove(i);
                let status = num(0, K_STATUS);
                let d = now() - started;
                self.n += 1;
                let mut out = String::new();
                let mut o = json::Obj::new(&mut out);
                o.str("name", "api");
                o.num("value", d);
                o.num("at", epoch());
                let a = o.key("attributes");
                let mut ao = json::Obj::new(a);
                ao.str("url", &pulse_protocol::route::normalise_route(&url));
                ao.str("method", &method);
                if status.is_finite() {
                    ao.num("status", status);
                } else {
                    ao.bool("failed", true);
                }
                ao.end();
                o.end();
                self.queue.push(out);
            }
            E_SHOW => {
                if num(0, K_PERSISTED) > 0.0 {
                    // A back/forward-cache restore: a new page view, measured from the event.
                    self.flush();
                    self.page = id();
                    self.nav = String::from("back-forward-cache");
                    self.restored_at = num(0, K_START);
                    (self.fcp_done, self.lcp_done, self.fid_done) = (true, true, true);
                    (self.cls, self.win, self.cls_n, self.hidden_at) = (0.0, 0.0, 0, f64::INFINITY);
                    self.longest.clear();
                    self.ids = (0.0, 0.0);
                    paint(C_PAINTED);
                }
            }
            C_PAINTED => {
                let d = (now() - self.restored_at).max(0.0);
                self.metric("FCP", d, 1800.0, 3000.0, None);
                self.metric("LCP", d, 2500.0, 4000.0, None);
            }
            E_KEY | E_POINTER => self.lcp_final(),
            E_VIS => {
                if text(0, K_VIS).as_deref() == Some("hidden") {
                    self.hidden_at = self.hidden_at.min(now());
                    self.hidden();
                }
            }
            E_HIDE => self.hidden(),
            C_TICK => {
                self.flush();
                later(30_000.0, C_TICK);
            }
            _ => {}
        }
    }
}

#[wasm_bindgen]
pub fn start() -> Option<Agent> {
    let Some(endpoint) = text(1, K_ENDPOINT).filter(|e| !e.is_empty()) else {
        fail_with("endpoint", "must be a non-empty string (the collector's beacon URL)");
        return None;
    };
    let Some(site) = text(1, K_SITE) else {
        fail_with("site", "must be a string");
        return None;
    };
    if site.is_empty() || site.len() > 64 || !site.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        fail_with("site", "must be 1 to 64 letters, digits, - or _");
        return None;
    }
    let mut rate = num(1, K_SAMPLE);
    if rate.is_nan() {
        rate = 1.0;
    } else if !(0.0..=1.0).contains(&rate) {
        fail_with("sampleRate", "must be a number from 0 to 1");
        return None;
    }
    let release = text(1, K_RELEASE).unwrap_or_default();
    let mut buf = [0u8; 64];
    let n = load(0, &mut buf);
    let session = buf
        .get(..usize::try_from(n).unwrap_or(0))
        .and_then(|b| core::str::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
        .map_or_else(id, String::from);
    save(0, session.as_ptr() as i32, session.len() as i32);
    let mut s = State {
        endpoint,
        site,
        release,
        sampled: random() < rate,
        session,
        page: id(),
        url: text(4, K_HREF).unwrap_or_default(),
        nav: String::from("navigate"),
        before_send: sub(1, K_BEFORE_SEND, 6) != 0,
        hidden_at: if text(5, K_VIS).as_deref() == Some("hidden") { 0.0 } else { f64::INFINITY },
        ..State::default()
    };
    if sub(5, K_URL, 2) != 0 {
        s.act = num(2, K_ACT).max(0.0);
        let r = num(2, K_RESP);
        if r > 0.0 && r < now() {
            s.metric("TTFB", (r - s.act).max(0.0), 800.0, 1800.0, None);
        }
    }
    for kind in [T_PAINT, T_LCP, T_SHIFT, T_FIRST_INPUT, T_EVENT] {
        observe(kind);
    }
    wrap_fetch();
    wrap_xhr();
    listen(0, E_SHOW);
    listen(1, E_VIS);
    listen(0, E_HIDE);
    listen(0, E_KEY);
    listen(0, E_POINTER);
    later(30_000.0, C_TICK);
    Some(Agent(RefCell::new(s)))
}
