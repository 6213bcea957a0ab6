//! The Pulse agent: measures Core Web Vitals in the page exactly as Google's web-vitals library
//! defines them, times the page's `fetch` calls, records custom metrics, and sends them in
//! batches with `navigator.sendBeacon`.
//!
//! # Layout
//! The wasm makes every decision; `js/host.js`, a small hand-written binding, only forwards
//! between it and the page ([`host`]).
//! - [`fcp`], [`lcp`], [`cls`], [`inp`], [`fid`], [`ttfb`]: the vitals and their attribution. The
//!   algorithms of the three that need one ([`cls`], [`inp`], [`lcp`]) are pure Rust over plain
//!   entry values, tested natively with synthetic entry sequences; each module's second half
//!   reads entries for them. They depend on [`report`] and [`host`] only, never on the agent or
//!   each other.
//! - [`report`]: what the metric modules share — the page view, instances, attribution, metrics.
//! - [`api`]: `fetch` and `XMLHttpRequest` timing (`api` metrics). [`measure`]: `record()` and
//!   user timing. [`load`]: the page load (DOMContentLoaded, load event, a resource summary).
//! - [`queue`], [`transport`]: batching, payload splitting, the beacon's JSON. [`json`]: JSON text
//!   without `core::fmt`.
//! - [`session`]: session id and sampling. [`config`]: `init` options. [`routes`]: route templates.
//! - `agent`: the running agent: events in, metrics out, lifecycle (hide, bfcache restore,
//!   shutdown).
//!
//! The crate is `no_std` for the page (no formatting or panic machinery: a panic traps); the
//! `std` feature (default, for tests and tools) links the standard library instead.
//!
//! The JavaScript API is [`init`], returning a [`Pulse`] handle.
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

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
pub mod measure;
pub mod queue;
pub mod report;
pub mod routes;
pub mod session;
pub mod transport;
pub mod ttfb;

// A smaller allocator than the default dlmalloc (the agent's heap is small and short-lived).
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// Without `std` a panic (a bug) stops the wasm where it is: no message formatting in the page.
#[cfg(all(target_arch = "wasm32", not(feature = "std")))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use wasm_bindgen::prelude::*;

use crate::host::Kind;

pub use agent::Stats;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** Options of `init`. */
export interface PulseConfig {
  /** The collector's beacon URL, absolute or relative to the page (e.g. "/v1/beacon"). */
  endpoint: string;
  /** The site key the collector knows this site by. */
  site: string;
  /** Your release or version, to compare releases. */
  release?: string;
  /** Environment name (production, staging …). */
  env?: string;
  /** Share of sessions measured, 0..1 (default 1); decided once per session. */
  sampleRate?: number;
  /** Send when this many metrics are waiting (1..500, default 50). */
  batchSize?: number;
  /** Send at least this often while metrics wait, ms (1000..600000, default 30000). */
  flushInterval?: number;
  /** fetch calls whose absolute URL contains one of these strings or matches one of these RegExps are not timed. */
  ignoreUrls?: (string | RegExp)[];
  /** Path templates: "/products/:slug" (one segment), "/docs/*" (the rest). */
  routes?: string[];
  /** Sees each metric before it is queued: return it (possibly changed), or null/false to drop it. */
  beforeSend?: (metric: PulseMetric) => PulseMetric | null | false | undefined;
  /** Time the page's fetch calls (default true). */
  trackFetch?: boolean;
  /** Record performance.measure() entries as custom metrics (default true). */
  trackMeasures?: boolean;
  /**
   * Single-page apps: each soft navigation (a click that changes the URL and paints new content)
   * is a page view of its own, with its own FCP, LCP, CLS, INP and TTFB (0), as web-vitals'
   * `reportSoftNavs`. Default false: it changes when the first page's CLS and INP are final.
   * Browsers without soft-navigation entries measure as if it were off.
   */
  softNavigations?: boolean;
}

/** One measurement, as sent to the collector. */
export interface PulseMetric {
  /** FCP, LCP, CLS, FID, INP, TTFB; "api" for fetch calls; or a custom name. */
  name: string;
  value: number;
  /** Epoch ms when measured. */
  at: number;
  rating?: "good" | "needs-improvement" | "poor";
  delta?: number;
  id?: string;
  attribution?: Record<string, string | number>;
  route?: string;
  method?: string;
  status?: number;
  ok?: boolean;
  error?: string;
  server_timing?: { name: string; dur?: number; desc?: string }[];
  tags?: Record<string, string>;
}

/** What the agent has done so far. */
export interface PulseStats {
  measured: number;
  sent: number;
  beacons: number;
  retried: number;
  droppedUnsampled: number;
  droppedByBeforeSend: number;
  beforeSendErrors: number;
  droppedQueueFull: number;
  droppedTooLarge: number;
  rejectedRecords: number;
  /** Main-thread time spent in agent code (callbacks, the fetch wrapper, API calls), ms. */
  busyMs: number;
  /** The longest single stretch of agent code, ms. */
  longestMs: number;
}
"#;

/// Starts measuring. Throws an `Error` naming the option when the options are wrong, or when the
/// agent is already running. JavaScript calls it `start`; the package's entry module wraps it as
/// `init`, which first loads the WebAssembly.
#[wasm_bindgen(js_name = start)]
pub fn init(#[wasm_bindgen(unchecked_param_type = "PulseConfig")] options: JsValue) -> Result<Pulse, JsError> {
    let config = config::Config::from_js(&options).map_err(|e| JsError::new(&e.message()))?;
    let agent = agent::start(config).map_err(JsError::new)?;
    Ok(Pulse { agent })
}

/// The handle `init` returns. It drives the agent it was returned by, only: after `shutdown()`
/// it does nothing (and `record` throws), also when a new agent has been started since.
#[wasm_bindgen]
#[derive(Debug, Clone)]
pub struct Pulse {
    agent: Rc<agent::Agent>,
}

#[wasm_bindgen]
impl Pulse {
    /// Records a custom metric: `record('cart.items', 3, { plan: 'pro' })`. Throws an `Error`
    /// saying what is wrong with a bad name, value or tags (and counts it in `stats()`).
    pub fn record(
        &self,
        name: JsValue,
        value: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Record<string, string>")] tags: JsValue,
    ) -> Result<(), JsError> {
        let agent = &self.agent;
        if !agent.running() {
            return Err(JsError::new("pulse.record: the agent has been shut down"));
        }
        agent.timed(|| {
            let checked = read_record(&name, &value, &tags).map_err(String::from).and_then(|(name, value, tags)| {
                measure::check(&name, value, &tags).map_err(|rule| String::from("pulse.record: ") + rule)?;
                Ok((name, value, tags))
            });
            match checked {
                Ok((name, value, tags)) => {
                    agent.record(measure::metric(&name, value, host::epoch(), &tags));
                    Ok(())
                }
                Err(message) => {
                    agent.reject_record();
                    Err(JsError::new(&message))
                }
            }
        })
    }

    /// Sends everything waiting now.
    pub fn flush(&self) {
        if self.agent.running() {
            self.agent.timed(|| self.agent.flush());
        }
    }

    /// Sends what is waiting, stops every observer and listener, and restores the page's `fetch`.
    pub fn shutdown(&self) {
        self.agent.shutdown();
    }

    /// Calls `callback` with every metric measured (vitals when they are reported, API calls,
    /// custom metrics), whether or not the session is sampled.
    #[wasm_bindgen(js_name = onMetric)]
    pub fn on_metric(&self, #[wasm_bindgen(unchecked_param_type = "(metric: PulseMetric) => void")] callback: JsValue) {
        if self.agent.running() && host::kind_of(&callback) == Kind::Function {
            self.agent.add_listener(callback);
        }
    }

    /// Counts of what the agent measured, sent and dropped, and the time it spent.
    #[wasm_bindgen(unchecked_return_type = "PulseStats")]
    pub fn stats(&self) -> JsValue {
        host::parse(&self.agent.stats_json())
    }

    /// Whether this session is sampled (its metrics are sent).
    #[wasm_bindgen(getter)]
    pub fn sampled(&self) -> bool {
        self.agent.sampled()
    }

    /// The session id (kept in `sessionStorage` across page views of the tab).
    #[wasm_bindgen(getter)]
    pub fn session(&self) -> Option<String> {
        self.agent.running().then(|| self.agent.session_id())
    }

    /// The page-view id.
    #[wasm_bindgen(getter)]
    pub fn page(&self) -> Option<String> {
        self.agent.running().then(|| self.agent.page_id())
    }
}

fn read_record(name: &JsValue, value: &JsValue, tags: &JsValue) -> Result<(String, f64, report::Tags), &'static str> {
    if host::kind_of(name) != Kind::String {
        return Err("pulse.record: name must be a string");
    }
    let Some(number) = value.as_f64() else {
        return Err("pulse.record: value must be a number");
    };
    let mut list = Vec::new();
    match host::kind_of(tags) {
        Kind::Missing => {}
        Kind::Object => {
            for key in pulse_protocol::text::pieces(&host::keys(tags), b"\n").filter(|k| !k.is_empty()) {
                let value = host::get(tags, key);
                if host::kind_of(&value) != Kind::String {
                    return Err("pulse.record: tag values must be strings");
                }
                list.push((String::from(key), host::string(&value)));
            }
        }
        _ => return Err("pulse.record: tags must be an object of strings"),
    }
    Ok((host::string(name), number, list))
}
