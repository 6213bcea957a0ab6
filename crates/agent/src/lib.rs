//! The Pulse agent: measures Core Web Vitals in the page exactly as Google's web-vitals library
//! defines them, times the page's `fetch` calls, records custom metrics, and sends them in
//! batches with `navigator.sendBeacon`.
//!
//! # Layout
//! The wasm makes every decision; `js/host.js`, a small hand-written binding, only forwards
//! between it and the page ([`host`]; numbers only, across `abi.rs`).
//! - [`fcp`], [`lcp`], [`cls`], [`inp`], [`fid`], [`ttfb`]: the vitals and their attribution. The
//!   algorithms of the three that need one ([`cls`], [`inp`], [`lcp`]) are pure Rust over plain
//!   entry values, tested natively with synthetic entry sequences; each module's second half
//!   reads entries for them. They depend on [`report`] and [`host`] only, never on the agent or
//!   each other.
//! - [`report`]: what the metric modules share — the page view, instances, attribution, metrics.
//! - [`api`]: `fetch` and `XMLHttpRequest` timing (`api` metrics). [`measure`]: `record()` and
//!   user timing. [`load`]: the page load (DOMContentLoaded, load event, a resource summary).
//!   [`long_frames`]: the page view's long animation frames, summed up.
//! - [`queue`], [`transport`]: batching, payload splitting, the beacon's JSON. [`json`]: JSON text
//!   without `core::fmt`.
//! - [`session`](mod@session): session id and sampling. [`config`]: `init` options. [`routes`]:
//!   route templates.
//! - `agent`: the running agent: events in, metrics out, lifecycle (hide, bfcache restore,
//!   shutdown).
//!
//! The crate is `no_std` for the page (no formatting or panic machinery: a panic traps); the
//! `std` feature (default, for tests and tools) links the standard library instead.
//!
//! The JavaScript API (`js/pulse.js`: `init`, returning a handle) calls the functions below
//! through `abi.rs`'s exports; the browser tests call them through `rust_api::Pulse` (feature
//! `std`).
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod abi;
mod agent;
pub mod api;
pub mod cls;
pub mod config;
pub mod fcp;
pub mod fid;
pub mod host;
pub mod inp;
pub mod json;
pub mod lcp;
pub mod load;
pub mod long_frames;
pub mod measure;
pub mod queue;
pub mod report;
pub mod routes;
pub mod session;
pub mod transport;
pub mod ttfb;

// A smaller allocator than the default dlmalloc (the agent's heap is small and short-lived). Each
// memory.grow becomes a heap of its own (talc's smaller source; extending the last heap instead
// costs 71 B brotli): the agent's allocations fit in a few pages.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::cell::TalcSyncCell<talc::wasm::WasmGrowAndClaim, talc::wasm::WasmBinning> =
    talc::cell::TalcSyncCell::new_wasm(talc::wasm::WasmGrowAndClaim);

/// Without `std` a panic (a bug) stops the wasm where it is: no message formatting in the page.
#[cfg(all(target_arch = "wasm32", not(feature = "std")))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::abi::CURRENT;
use crate::host::{Js, Kind};

pub use agent::Stats;

/// Generations of agents started: a handle is the generation it was returned by.
static STARTED: AtomicU32 = AtomicU32::new(0);

/// The running agent, if `handle` names it.
fn agent(handle: u32) -> Option<Rc<agent::Agent>> {
    last(handle).filter(|a| a.running())
}

/// The agent `handle` names, also after its shutdown (until the next one starts).
fn last(handle: u32) -> Option<Rc<agent::Agent>> {
    CURRENT.get().filter(|(h, _)| *h == handle).map(|(_, a)| a)
}

/// Starts measuring with `options` (the object passed to `init`); the new agent's handle. Fails
/// with a message naming the option when the options are wrong, or when an agent is running.
pub fn start(options: Js) -> Result<u32, String> {
    if CURRENT.get().is_some_and(|(_, a)| a.running()) {
        return Err(String::from("pulse.init: the agent is already running; call shutdown() on its handle first"));
    }
    let config = config::Config::from_js(options).map_err(|e| e.message())?;
    let handle = STARTED.fetch_add(1, Ordering::Relaxed) + 1;
    let agent = agent::Agent::new(config);
    CURRENT.set(Some((handle, agent.clone())));
    agent.start();
    Ok(handle)
}

/// One event from the page: `code` as the agent asked for it, its objects at `base` and
/// `base + 1`, a number. Returns what the host hands back (a request id for the wrappers).
pub fn event(code: u32, base: i32, n: f64) -> f64 {
    let current = CURRENT.get().map(|(_, a)| a);
    current.filter(|a| a.running()).map_or(0.0, |agent| agent.dispatch(code, Js::raw(base), Js::raw(base + 1), n))
}

/// Records a custom metric: `record('cart.items', 3, { plan: 'pro' })`. Fails saying what is
/// wrong with a bad name, value or tags (and counts it in the stats).
pub fn record(handle: u32, name: Js, value: Js, tags: Js) -> Result<(), String> {
    let Some(agent) = agent(handle) else {
        return Err(String::from("pulse.record: the agent has been shut down"));
    };
    agent.timed(|| {
        let checked = read_record(name, value, tags).map_err(String::from).and_then(|(name, value, tags)| {
            measure::check(&name, value, &tags)?;
            Ok((name, value, tags))
        });
        match checked {
            Ok((name, value, tags)) => {
                agent.record(measure::metric(&name, value, host::epoch(), &tags));
                Ok(())
            }
            Err(rule) => {
                agent.reject_record();
                Err(String::from("pulse.record: ") + &rule)
            }
        }
    })
}

/// Sends everything waiting now.
pub fn flush(handle: u32) {
    if let Some(agent) = agent(handle) {
        agent.timed(|| agent.flush());
    }
}

/// Sends what is waiting, stops every observer and listener, and restores the page's `fetch`.
pub fn shutdown(handle: u32) {
    if let Some(agent) = agent(handle) {
        agent.shutdown();
    }
}

/// Calls `callback` with every metric measured (vitals when they are reported, API calls,
/// custom metrics), whether or not the session is sampled.
pub fn on_metric(handle: u32, callback: Js) {
    if let Some(agent) = agent(handle).filter(|_| matches!(host::kind_of(callback), Kind::Function)) {
        agent.add_listener(host::keep(callback));
    }
}

/// Whether this session is sampled (its metrics are sent).
pub fn sampled(handle: u32) -> bool {
    last(handle).is_some_and(|a| a.sampled())
}

/// The session id (kept in `sessionStorage` across page views of the tab).
pub fn session(handle: u32) -> Option<String> {
    agent(handle).map(|a| a.session_id())
}

/// The page-view id.
pub fn page(handle: u32) -> Option<String> {
    agent(handle).map(|a| a.page_id())
}

/// Counts of what the agent measured, sent and dropped, and the time it spent, as JSON (also
/// after shutdown: the agent's last counts).
pub fn stats(handle: u32) -> Option<String> {
    last(handle).map(|a| a.stats_json())
}

/// The arguments of `record`, or what is wrong with them (the caller adds `pulse.record: `).
fn read_record(name: Js, value: Js, tags: Js) -> Result<(String, f64, report::Tags), &'static str> {
    if !matches!(host::kind_of(name), Kind::String) {
        return Err("name must be a string");
    }
    if !matches!(host::kind_of(value), Kind::Number) {
        return Err("value must be a number");
    }
    let mut list = Vec::new();
    match host::kind_of(tags) {
        Kind::Missing => {}
        Kind::Object => {
            for pair in host::items(host::pairs(tags)) {
                let value = host::at(pair, 1);
                if !matches!(host::kind_of(value), Kind::String) {
                    return Err("tag values must be strings");
                }
                list.push((host::string(host::at(pair, 0)), host::string(value)));
            }
        }
        _ => return Err("tags must be an object of strings"),
    }
    Ok((host::string(name), host::value(value), list))
}

/// The agent driven from Rust, as the page drives it from `js/pulse.js` (the browser tests).
#[cfg(feature = "std")]
mod rust_api {
    use alloc::string::String;
    use wasm_bindgen::prelude::*;

    use crate::host::Js;

    /// Starts the agent, as `init` does once the WebAssembly is loaded.
    pub fn init(options: JsValue) -> Result<Pulse, JsError> {
        std::thread_local! {
            static SINK: Closure<dyn Fn(i32, i32, f64) -> f64> =
                Closure::new(|code: i32, base: i32, n: f64| crate::event(code as u32, base, n));
        }
        SINK.with(|sink| crate::abi::setup(sink.as_ref(), &wasm_bindgen::memory()));
        let handle = crate::start(Js::hold(&options)).map_err(|m| JsError::new(&m))?;
        Ok(Pulse { handle })
    }

    /// The handle `init` returns. It drives the agent it was returned by, only: after
    /// `shutdown()` it does nothing (and `record` fails), also when a new agent has been started.
    #[derive(Debug, Clone)]
    pub struct Pulse {
        handle: u32,
    }

    impl Pulse {
        pub fn record(&self, name: JsValue, value: JsValue, tags: JsValue) -> Result<(), JsError> {
            crate::record(self.handle, Js::hold(&name), Js::hold(&value), Js::hold(&tags)).map_err(|m| JsError::new(&m))
        }

        pub fn flush(&self) {
            crate::flush(self.handle);
        }

        pub fn shutdown(&self) {
            crate::shutdown(self.handle);
        }

        pub fn on_metric(&self, callback: JsValue) {
            crate::on_metric(self.handle, Js::hold(&callback));
        }

        pub fn stats(&self) -> JsValue {
            crate::stats(self.handle).map_or(JsValue::UNDEFINED, |json| js_sys_parse(&json))
        }

        pub fn sampled(&self) -> bool {
            crate::sampled(self.handle)
        }

        pub fn session(&self) -> Option<String> {
            crate::session(self.handle)
        }

        pub fn page(&self) -> Option<String> {
            crate::page(self.handle)
        }
    }

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = JSON, js_name = parse)]
        fn js_sys_parse(json: &str) -> JsValue;
    }
}

#[cfg(feature = "std")]
pub use rust_api::{init, Pulse};
