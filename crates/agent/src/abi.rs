//! The boundary with `js/host.js`: the functions the wasm imports from it and, in the page's
//! build, the functions it exports to it. Numbers only (`i32`, `f64`): handles of page objects,
//! pointers and lengths of UTF-8 bytes in the wasm's memory, codes.
//!
//! The page's build (`--no-default-features`) imports `host.js`'s `host` object directly as the
//! import module `h` and exports plain functions: no generated glue, which would weigh more than
//! the binding. That needs this module's `unsafe_code`: an `unsafe extern` block (its functions
//! declared `safe`: they take and return plain numbers and touch no Rust memory, except `copy`,
//! which writes the bytes `host.js` last encoded into a buffer of exactly that length the caller
//! owns — see [`received`], which also takes them as UTF-8 unchecked: `TextEncoder` made them) and
//! `#[unsafe(no_mangle)]` exports (the names `js/pulse.js` calls). The wasm is single-threaded (no
//! `atomics` target feature), which is what makes [`Current`] `Sync`. The browser tests' build
//! (feature `std`) declares the same imports through wasm-bindgen and calls the agent from Rust, so
//! it needs none of this.
#![allow(unsafe_code)]

// Each import is named by one letter in the wasm (`= "a"`): its key in `host.js`'s `host` object,
// which names the Rust function in a comment. Short names cost less in the wasm and the bundle.
macro_rules! imports {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $js:literal;)*) => {
        #[cfg(feature = "std")]
        #[wasm_bindgen::prelude::wasm_bindgen(module = "/js/host.js", js_namespace = host)]
        extern "C" {
            $($(#[$doc])* #[wasm_bindgen(js_name = $js)] pub fn $name($($arg: $ty),*) $(-> $ret)?;)*
        }
        #[cfg(not(feature = "std"))]
        #[link(wasm_import_module = "h")]
        unsafe extern "C" {
            $($(#[$doc])* #[link_name = $js] pub safe fn $name($($arg: $ty),*) $(-> $ret)?;)*
        }
    };
}

imports! {
    fn stop() = "a";
    fn keep(h: i32) -> i32 = "b";
    fn release(h: i32) = "c";
    fn get(h: i32, p: i32, n: i32) -> i32 = "d";
    fn at(h: i32, i: i32) -> i32 = "e";
    fn num(h: i32, p: i32, n: i32) -> f64 = "f";
    fn value(h: i32) -> f64 = "g";
    fn txt(h: i32, p: i32, n: i32) -> i32 = "h";
    fn string(h: i32) -> i32 = "i";
    /// Writes the bytes `host.js` last encoded at `p` (the caller's buffer of their length).
    fn copy(p: i32) = "j";
    fn is(h: i32, p: i32, n: i32, sp: i32, sn: i32) -> i32 = "k";
    fn kind(h: i32) -> i32 = "l";
    fn len(h: i32) -> i32 = "m";
    fn pairs(h: i32) -> i32 = "n";
    fn observe(p: i32, n: i32, code: i32, threshold: f64) -> i32 = "o";
    fn take(code: i32) -> i32 = "p";
    fn listen(target: i32, p: i32, n: i32, code: i32) = "q";
    fn every(ms: f64, code: i32) = "r";
    fn later(ms: f64, code: i32) = "s";
    fn paint(code: i32) = "t";
    fn wrap_fetch(begin: i32, end: i32) = "u";
    fn wrap_xhr(begin: i32, end: i32) = "v";
    fn beacon(up: i32, un: i32, bp: i32, bn: i32) -> i32 = "w";
    fn post(up: i32, un: i32, bp: i32, bn: i32, code: i32, token: f64) -> i32 = "x";
    fn entries(p: i32, n: i32) -> i32 = "y";
    fn resource(p: i32, n: i32, before: f64) -> i32 = "z";
    fn now() -> f64 = "A";
    fn epoch() -> f64 = "B";
    fn random() -> f64 = "C";
    fn url(p: i32, n: i32) -> i32 = "D";
    fn header(h: i32, p: i32, n: i32) -> i32 = "E";
    fn float(p: i32, n: i32) -> f64 = "F";
    fn load(p: i32, n: i32) -> i32 = "G";
    fn save(kp: i32, kn: i32, vp: i32, vn: i32) = "H";
    fn test(h: i32, p: i32, n: i32) -> i32 = "I";
    fn parse(p: i32, n: i32) -> i32 = "J";
    fn stringify(h: i32) -> i32 = "K";
    fn invoke(f: i32, a: i32) -> i32 = "L";
    fn method(h: i32, p: i32, n: i32) -> i32 = "M";
    fn log(error: i32, p: i32, n: i32, h: i32) = "N";
    /// Hands the page a string: an API call's answer, or the message of the error it throws.
    fn give(p: i32, n: i32) = "O";
}

// Only the browser tests' build: values from Rust into the table, the callback and the memory.
#[cfg(feature = "std")]
#[wasm_bindgen::prelude::wasm_bindgen(module = "/js/host.js", js_namespace = host)]
extern "C" {
    pub fn hold(v: &wasm_bindgen::JsValue) -> i32;
    pub fn setup(callback: &wasm_bindgen::JsValue, memory: &wasm_bindgen::JsValue);
}

/// The `n` bytes `host.js` last encoded, as a string.
pub fn received(n: usize) -> alloc::string::String {
    let mut buf = alloc::vec![0u8; n];
    copy(buf.as_mut_ptr() as i32);
    // SAFETY: `host.js` encodes every string it hands over with `TextEncoder`, whose output is
    // UTF-8 (a lone surrogate becomes U+FFFD); not checking again keeps the validator out of the
    // wasm.
    unsafe { alloc::string::String::from_utf8_unchecked(buf) }
}

/// The running agent and its generation (a handle names the generation it was returned by). A
/// `Cell` read by taking and putting back: no borrow that could fail (its panic path would bring
/// message formatting into the wasm).
pub struct Current(core::cell::Cell<Option<(u32, alloc::rc::Rc<crate::agent::Agent>)>>);

impl Current {
    pub fn get(&self) -> Option<(u32, alloc::rc::Rc<crate::agent::Agent>)> {
        let now = self.0.take();
        self.0.set(now.clone());
        now
    }

    pub fn set(&self, agent: Option<(u32, alloc::rc::Rc<crate::agent::Agent>)>) {
        self.0.set(agent);
    }
}

// SAFETY: the wasm32 target without `atomics` has one thread, so nothing is shared between threads.
unsafe impl Sync for Current {}

pub static CURRENT: Current = Current(core::cell::Cell::new(None));

// The page build's exports, called by `js/pulse.js` (inside `host.js`'s `scoped`), each named by
// one letter.
#[cfg(not(feature = "std"))]
mod exports {
    use crate::host::{self, Js};

    #[unsafe(export_name = "s")]
    pub extern "C" fn start(options: i32) -> i32 {
        crate::start(Js::raw(options)).map_or_else(|message| fail(&message), |handle| handle as i32)
    }

    #[unsafe(export_name = "e")]
    pub extern "C" fn ev(code: i32, base: i32, n: f64) -> f64 {
        crate::event(code as u32, base, n)
    }

    /// 1, or 0 having set the error to throw.
    #[unsafe(export_name = "r")]
    pub extern "C" fn record(handle: i32, name: i32, value: i32, tags: i32) -> i32 {
        crate::record(handle as u32, Js::raw(name), Js::raw(value), Js::raw(tags)).map_or_else(|message| fail(&message), |()| 1)
    }

    #[unsafe(export_name = "f")]
    pub extern "C" fn flush(handle: i32) {
        crate::flush(handle as u32);
    }

    #[unsafe(export_name = "d")]
    pub extern "C" fn shutdown(handle: i32) {
        crate::shutdown(handle as u32);
    }

    #[unsafe(export_name = "o")]
    pub extern "C" fn on_metric(handle: i32, callback: i32) {
        crate::on_metric(handle as u32, Js::raw(callback));
    }

    /// `what`: 0 sampled (1 or 0), 1 the session id, 2 the page id, 3 the stats' JSON — strings
    /// through `give`, 1 when there is one.
    #[unsafe(export_name = "a")]
    pub extern "C" fn about(handle: i32, what: i32) -> i32 {
        let handle = handle as u32;
        let text = match what {
            0 => return i32::from(crate::sampled(handle)),
            1 => crate::session(handle),
            2 => crate::page(handle),
            _ => crate::stats(handle),
        };
        text.map_or(0, |t| {
            host::give(&t);
            1
        })
    }

    fn fail(message: &str) -> i32 {
        host::give(message);
        0
    }
}
