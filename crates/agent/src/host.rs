//! The page as the agent sees it: the hand-written binding `js/host.js`, which only forwards.
//!
//! Only numbers cross the boundary. The page's objects stay in a table in `host.js`; the agent
//! names them by handle ([`Js`]). Field names and strings cross as UTF-8 bytes in the wasm's
//! memory. Everything the page tells the agent arrives through one callback (see
//! the `agent` module) as a code the agent chose, up to two objects and a number. Fields are read
//! by name with [`num`], [`text`] and [`get`]; a missing field reads as `NaN` or `None`, so a
//! browser without a feature reports nothing instead of throwing.
//!
//! A [`Js`] handle is valid until the call from the page that produced it returns; an object the
//! agent keeps longer (an LCP candidate, the page's `beforeSend`) is a [`Kept`], released when
//! it is dropped.

use alloc::string::String;

/// A page object, by its index in `host.js`'s table (scratch: valid during the current call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Js(i32);

pub const UNDEFINED: Js = Js(0);
pub const WINDOW: Js = Js(1);
pub const DOCUMENT: Js = Js(2);
pub const PERFORMANCE: Js = Js(3);
pub const NAVIGATOR: Js = Js(4);
pub const LOCATION: Js = Js(5);

impl Js {
    /// The handle `host.js` passed.
    pub fn raw(h: i32) -> Js {
        Js(h)
    }

    /// A value from Rust (the browser tests' build), put in the table.
    #[cfg(feature = "std")]
    pub fn hold(v: &wasm_bindgen::JsValue) -> Js {
        Js(crate::abi::hold(v))
    }
}

/// A page object kept across calls; released when dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct Kept(i32);

impl Kept {
    pub fn js(&self) -> Js {
        Js(self.0)
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        crate::abi::release(self.0);
    }
}

use crate::abi;

fn ptr(s: &str) -> (i32, i32) {
    (s.as_ptr() as i32, s.len() as i32)
}

/// The string `host.js` just encoded (`n` bytes; negative: there was none).
#[inline(never)]
fn bytes(n: i32) -> Option<String> {
    Some(abi::received(usize::try_from(n).ok()?))
}

pub fn keep(o: Js) -> Kept {
    Kept(abi::keep(o.0))
}

pub fn num(o: Js, key: &'static str) -> f64 {
    let (p, n) = ptr(key);
    abi::num(o.0, p, n)
}

pub fn text(o: Js, key: &'static str) -> Option<String> {
    let (p, n) = ptr(key);
    bytes(abi::txt(o.0, p, n))
}

pub fn get(o: Js, key: &'static str) -> Js {
    let (p, n) = ptr(key);
    Js(abi::get(o.0, p, n))
}

/// `o[key] === value` (a string), without copying the string into the wasm.
pub fn is(o: Js, key: &'static str, value: &str) -> bool {
    let ((p, n), (vp, vn)) = (ptr(key), ptr(value));
    abi::is(o.0, p, n, vp, vn) != 0
}

/// The value itself when it is a number, else `NaN`.
pub fn value(o: Js) -> f64 {
    abi::value(o.0)
}

/// `String(o)`.
pub fn string(o: Js) -> String {
    bytes(abi::string(o.0)).unwrap_or_default()
}

/// What a value is; see [`Kind`].
pub fn kind(o: Js) -> u32 {
    abi::kind(o.0) as u32
}

/// An array's length (0 for anything else).
pub fn len(o: Js) -> u32 {
    abi::len(o.0) as u32
}

pub fn at(o: Js, i: u32) -> Js {
    Js(abi::at(o.0, i as i32))
}

/// An object's own `[key, value]` pairs, as an array.
pub fn pairs(o: Js) -> Js {
    Js(abi::pairs(o.0))
}

/// A buffered `PerformanceObserver` of `kind` (`threshold` > 0: its `durationThreshold`);
/// false when the browser lacks the entry type.
pub fn observe(kind: &str, code: u32, threshold: f64) -> bool {
    let (p, n) = ptr(kind);
    abi::observe(p, n, code as i32, threshold) != 0
}

/// Entries of observer `code` recorded but not yet delivered (an array).
pub fn take(code: u32) -> Js {
    Js(abi::take(code as i32))
}

/// A capturing listener on the window or the document.
pub fn listen(target: Js, kind: &str, code: u32) {
    let (p, n) = ptr(kind);
    abi::listen(target.0, p, n, code as i32);
}

pub fn every(ms: f64, code: u32) {
    abi::every(ms, code as i32);
}

pub fn later(ms: f64, code: u32) {
    abi::later(ms, code as i32);
}

/// Calls back after the next paint (two animation frames).
pub fn paint(code: u32) {
    abi::paint(code as i32);
}

pub fn wrap_fetch(begin: u32, end: u32) {
    abi::wrap_fetch(begin as i32, end as i32);
}

pub fn wrap_xhr(begin: u32, end: u32) {
    abi::wrap_xhr(begin as i32, end as i32);
}

/// `navigator.sendBeacon(url, body)`: whether the browser took it.
pub fn beacon(url: &str, body: &str) -> bool {
    let ((up, un), (bp, bn)) = (ptr(url), ptr(body));
    abi::beacon(up, un, bp, bn) != 0
}

/// POST with `keepalive` through the page's fetch; the outcome comes back as `code` with `token`.
pub fn post(url: &str, body: &str, code: u32, token: f64) -> bool {
    let ((up, un), (bp, bn)) = (ptr(url), ptr(body));
    abi::post(up, un, bp, bn, code as i32, token) != 0
}

pub fn entries(kind: &str) -> Js {
    let (p, n) = ptr(kind);
    Js(abi::entries(p, n))
}

/// The last `resource` entry of `url` whose request started by `before` (a resource requested
/// again later did not paint what was painted before).
pub fn resource(url: &str, before: f64) -> Js {
    let (p, n) = ptr(url);
    Js(abi::resource(p, n, before))
}

/// `performance.now()`.
pub fn now() -> f64 {
    abi::now()
}

/// `Date.now()`.
pub fn epoch() -> f64 {
    abi::epoch()
}

pub fn random() -> f64 {
    abi::random()
}

/// `new URL(u, location.href)`, or `undefined`.
pub fn url(u: &str) -> Js {
    let (p, n) = ptr(u);
    Js(abi::url(p, n))
}

/// A response header of a `Response` or an `XMLHttpRequest`.
pub fn header(o: Js, name: &str) -> Option<String> {
    let (p, n) = ptr(name);
    bytes(abi::header(o.0, p, n))
}

/// `parseFloat`.
pub fn float(s: &str) -> f64 {
    let (p, n) = ptr(s);
    abi::float(p, n)
}

/// `sessionStorage`, where the page allows it.
pub fn load(key: &str) -> Option<String> {
    let (p, n) = ptr(key);
    bytes(abi::load(p, n))
}

pub fn save(key: &str, value: &str) {
    let ((kp, kn), (vp, vn)) = (ptr(key), ptr(value));
    abi::save(kp, kn, vp, vn);
}

/// `re.test(s)` from the start.
pub fn test(re: Js, s: &str) -> bool {
    let (p, n) = ptr(s);
    abi::test(re.0, p, n) != 0
}

pub fn parse(json: &str) -> Js {
    let (p, n) = ptr(json);
    Js(abi::parse(p, n))
}

pub fn stringify(o: Js) -> Option<String> {
    bytes(abi::stringify(o.0))
}

/// Calls a page function with one argument: what it returned, or what it threw.
pub fn invoke(f: Js, arg: Js) -> Result<Js, Js> {
    match abi::invoke(f.0, arg.0) {
        h if h >= 0 => Ok(Js(h)),
        h => Err(Js(-1 - h)),
    }
}

/// `o[name]()`: calls a method of a browser object (`undefined` if there is none or it throws).
pub fn method(o: Js, name: &'static str) -> Js {
    let (p, n) = ptr(name);
    Js(abi::method(o.0, p, n))
}

/// `console.error` (error) or `console.warn`.
pub fn log(error: bool, message: &str, detail: Js) {
    let (p, n) = ptr(message);
    abi::log(i32::from(error), p, n, detail.0);
}

/// Hands the page a string: the return value of the API call under way, or the error it throws
/// (the page reads it at once).
pub fn give(s: &str) {
    let (p, n) = ptr(s);
    abi::give(p, n);
}

/// Disconnects, removes and restores everything, and forgets the callback.
pub fn stop() {
    abi::stop();
}

/// What [`kind`] says a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    Bool(bool),
    Number,
    String,
    Function,
    Array,
    RegExp,
    Object,
}

pub fn kind_of(v: Js) -> Kind {
    match kind(v) {
        0 => Kind::Missing,
        1 => Kind::Bool(false),
        2 => Kind::Bool(true),
        3 => Kind::Number,
        4 => Kind::String,
        5 => Kind::Function,
        6 => Kind::Array,
        7 => Kind::RegExp,
        _ => Kind::Object,
    }
}

/// `o[key]` is `true`.
pub fn flag(o: Js, key: &'static str) -> bool {
    kind(get(o, key)) == 2
}

/// The items of an array (nothing for anything else).
pub fn items(v: Js) -> impl Iterator<Item = Js> {
    (0..len(v)).map(move |i| at(v, i))
}

/// The page's navigation timing entry, when the browser has one.
pub fn navigation() -> Option<Js> {
    let list = entries("navigation");
    (len(list) > 0).then(|| at(list, 0))
}

/// `document.prerendering`.
pub fn prerendering() -> bool {
    flag(DOCUMENT, "prerendering")
}

pub fn hidden() -> bool {
    is(DOCUMENT, "visibilityState", "hidden")
}

/// `activationStart` of the navigation (non-zero only for prerendered pages that were activated).
pub fn activation_start() -> f64 {
    navigation().map(|e| num(e, "activationStart")).filter(|v| v.is_finite()).unwrap_or(0.0)
}

/// Epoch ms of a `performance.now()`-based time.
pub fn epoch_of(time: f64) -> f64 {
    epoch() - (now() - time)
}

/// A random id of 16 base-36 characters (about 82 bits).
pub fn random_id() -> String {
    let mut out = String::with_capacity(16);
    for _ in 0..2 {
        let mut n = (random() * 2_821_109_907_456.0) as u64; // 36^8
        for _ in 0..8 {
            out.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
            n /= 36;
        }
    }
    out
}
