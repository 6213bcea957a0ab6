//! The page as the agent sees it: the hand-written binding `js/host.js`, which only forwards.
//!
//! Everything the page tells the agent arrives through one callback (see [`crate::agent`]) as a
//! code the agent chose, up to two objects and a number. Fields are read by name with [`num`],
//! [`text`] and [`get`]; a missing field reads as `NaN` or `None`, so a browser without a feature
//! reports nothing instead of throwing.

use alloc::string::String;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/js/host.js")]
extern "C" {
    /// Installs the callback every observer, listener, timer and wrapper calls.
    pub fn start(sink: &JsValue);
    /// Disconnects, removes and restores everything, and forgets the callback.
    pub fn stop();
    /// A buffered `PerformanceObserver` of `kind` (`threshold` > 0: its `durationThreshold`);
    /// false when the browser lacks the entry type.
    pub fn observe(kind: &str, code: u32, threshold: f64) -> bool;
    /// Entries of observer `code` recorded but not yet delivered (an array).
    pub fn take(code: u32) -> JsValue;
    /// A capturing listener on the window (`target` 0) or the document (1).
    pub fn listen(target: u32, kind: &str, code: u32);
    pub fn every(ms: f64, code: u32);
    pub fn later(ms: f64, code: u32);
    /// Calls back after the next paint (two animation frames).
    pub fn paint(code: u32);
    #[wasm_bindgen(js_name = wrapFetch)]
    pub fn wrap_fetch(begin: u32, end: u32);
    #[wasm_bindgen(js_name = wrapXhr)]
    pub fn wrap_xhr(begin: u32, end: u32);
    /// `navigator.sendBeacon(url, body)`: whether the browser took it.
    pub fn beacon(url: &str, body: &str) -> bool;
    /// POST with `keepalive` through the page's fetch; the outcome comes back as `code` with `token`.
    pub fn post(url: &str, body: &str, code: u32, token: f64) -> bool;

    pub fn num(o: &JsValue, key: &str) -> f64;
    pub fn text(o: &JsValue, key: &str) -> Option<String>;
    pub fn get(o: &JsValue, key: &str) -> JsValue;
    /// `o[key] === value` (a string), without copying the string into the wasm.
    pub fn is(o: &JsValue, key: &str, value: &str) -> bool;
    /// What a value is; see [`Kind`].
    pub fn kind(v: &JsValue) -> u32;
    /// An array's length (0 for anything else).
    pub fn len(v: &JsValue) -> u32;
    pub fn at(v: &JsValue, i: u32) -> JsValue;
    /// An object's own keys, one per line.
    pub fn keys(o: &JsValue) -> String;
    /// `String(v)`.
    pub fn string(v: &JsValue) -> String;
    /// See [`WINDOW`] … [`LOCATION`].
    pub fn root(i: u32) -> JsValue;
    pub fn entries(kind: &str) -> JsValue;
    /// The last `resource` entry of `url` whose request started by `before` (a resource requested
    /// again later did not paint what was painted before).
    pub fn resource(url: &str, before: f64) -> JsValue;
    /// `performance.now()`.
    pub fn now() -> f64;
    /// `Date.now()`.
    pub fn epoch() -> f64;
    pub fn random() -> f64;
    /// `new URL(u, location.href)`, or `undefined`.
    pub fn url(u: &str) -> JsValue;
    /// A response header of a `Response` or an `XMLHttpRequest`.
    pub fn header(o: &JsValue, name: &str) -> Option<String>;
    /// `parseFloat`.
    pub fn float(s: &str) -> f64;
    /// `sessionStorage`, where the page allows it.
    pub fn load(key: &str) -> Option<String>;
    pub fn save(key: &str, value: &str);
    /// `re.test(s)` from the start.
    pub fn test(re: &JsValue, s: &str) -> bool;
    pub fn parse(json: &str) -> JsValue;
    pub fn stringify(v: &JsValue) -> Option<String>;
    /// `o[name]()`: calls a method of a browser object (`undefined` if there is none or it throws).
    pub fn method(o: &JsValue, name: &str) -> JsValue;
    /// Calls a page function with one argument.
    #[wasm_bindgen(catch)]
    pub fn invoke(f: &JsValue, arg: &JsValue) -> Result<JsValue, JsValue>;
    /// `console.error` (error) or `console.warn`.
    pub fn log(error: bool, message: &str, detail: &JsValue);
}

pub const WINDOW: u32 = 0;
pub const DOCUMENT: u32 = 1;
pub const PERFORMANCE: u32 = 2;
pub const NAVIGATOR: u32 = 3;
pub const LOCATION: u32 = 4;

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

pub fn kind_of(v: &JsValue) -> Kind {
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
pub fn flag(o: &JsValue, key: &str) -> bool {
    kind_of(&get(o, key)) == Kind::Bool(true)
}

/// The items of an array (nothing for anything else).
pub fn items(v: JsValue) -> impl Iterator<Item = JsValue> {
    (0..len(&v)).map(move |i| at(&v, i))
}

/// The page's navigation timing entry, when the browser has one.
pub fn navigation() -> Option<JsValue> {
    let list = entries("navigation");
    (len(&list) > 0).then(|| at(&list, 0))
}

/// `document.prerendering`.
pub fn prerendering() -> bool {
    flag(&root(DOCUMENT), "prerendering")
}

pub fn hidden() -> bool {
    is(&root(DOCUMENT), "visibilityState", "hidden")
}

/// `activationStart` of the navigation (non-zero only for prerendered pages that were activated).
pub fn activation_start() -> f64 {
    navigation().map(|e| num(&e, "activationStart")).filter(|v| v.is_finite()).unwrap_or(0.0)
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
