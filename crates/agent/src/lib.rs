//! The Pulse agent: measures Core Web Vitals in the page exactly as Google's web-vitals library
//! defines them, times the page's `fetch` calls, records custom metrics, and sends them in
//! batches with `navigator.sendBeacon`.
//!
//! # Layout
//! One module per metric, like web-vitals' `onCLS.ts` … `onTTFB.ts`. The algorithms of the
//! three that need one ([`cls`], [`inp`], [`lcp`]) are pure Rust over plain entry values, tested
//! natively with synthetic entry sequences; each module's second half is the thin browser glue
//! that feeds them.
//! - [`fcp`], [`lcp`], [`cls`], [`inp`], [`fid`], [`ttfb`]: the vitals and their attribution.
//! - [`fetch`], [`xhr`]: `fetch` and `XMLHttpRequest` timing (`api` metrics). [`measure`]:
//!   `record()` and user timing.
//! - [`queue`], [`transport`]: batching, payload splitting, `sendBeacon` / `fetch keepalive`.
//! - [`session`]: session id and sampling. [`config`]: `init` options. [`routes`]: route templates.
//! - `agent`: the running agent and its lifecycle (hide, bfcache restore, shutdown).
//! - `browser`: helpers over the page's APIs. `wire`: the wire format as JavaScript objects.
//!
//! The JavaScript API is [`init`], returning a [`Pulse`] handle.

mod agent;
mod browser;
pub mod cls;
pub mod config;
pub mod fcp;
pub mod fetch;
pub mod fid;
pub mod inp;
pub mod lcp;
pub mod measure;
pub mod queue;
pub mod routes;
pub mod session;
pub mod transport;
pub mod ttfb;
mod wire;
pub mod xhr;

// A smaller allocator than the default dlmalloc (the agent's heap is small and short-lived).
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

use wasm_bindgen::prelude::*;

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
    agent::start(config).map_err(JsError::new)?;
    Ok(Pulse { _private: () })
}

/// The handle `init` returns.
#[wasm_bindgen]
#[derive(Debug, Clone)]
pub struct Pulse {
    _private: (),
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
        browser::timed(|| self.record_timed(&name, &value, &tags))
    }

    /// Sends everything waiting now.
    pub fn flush(&self) {
        if let Some(agent) = agent::current() {
            browser::timed(|| agent.flush());
        }
    }

    /// Sends what is waiting, stops every observer and listener, and restores the page's `fetch`.
    pub fn shutdown(&self) {
        agent::shutdown();
    }

    /// Calls `callback` with every metric measured (vitals when they are reported, API calls,
    /// custom metrics), whether or not the session is sampled.
    #[wasm_bindgen(js_name = onMetric)]
    pub fn on_metric(&self, #[wasm_bindgen(unchecked_param_type = "(metric: PulseMetric) => void")] callback: js_sys::Function) {
        if let Some(agent) = agent::current() {
            agent.add_listener(callback);
        }
    }

    /// Counts of what the agent measured, sent and dropped, and the time it spent.
    #[wasm_bindgen(unchecked_return_type = "PulseStats")]
    pub fn stats(&self) -> JsValue {
        agent::current().map_or(JsValue::NULL, |a| {
            let mut stats = a.stats.borrow().clone();
            (stats.busy_ms, stats.longest_ms) = browser::clock();
            wire::stats(&stats)
        })
    }

    /// Whether this session is sampled (its metrics are sent).
    #[wasm_bindgen(getter)]
    pub fn sampled(&self) -> bool {
        agent::current().is_some_and(|a| a.sampled())
    }

    /// The session id (kept in `sessionStorage` across page views of the tab).
    #[wasm_bindgen(getter)]
    pub fn session(&self) -> Option<String> {
        agent::current().map(|a| a.session_id())
    }

    /// The page-view id.
    #[wasm_bindgen(getter)]
    pub fn page(&self) -> Option<String> {
        agent::current().map(|a| a.page_id())
    }
}

impl Pulse {
    fn record_timed(&self, name: &JsValue, value: &JsValue, tags: &JsValue) -> Result<(), JsError> {
        let agent = agent::current().ok_or_else(|| JsError::new("pulse.record: the agent has been shut down"))?;
        let checked = read_record(name, value, tags).map_err(String::from).and_then(|(name, value, tags)| {
            measure::check(&name, value, &tags).map_err(|rule| {
                let mut message = String::from("pulse.record: ");
                message.push_str(rule);
                message
            })?;
            Ok((name, value, tags))
        });
        match checked {
            Ok((name, value, tags)) => {
                agent.emit(measure::metric(name, value, browser::epoch_ms(), tags));
                Ok(())
            }
            Err(message) => {
                agent.stats.borrow_mut().rejected_records += 1;
                Err(JsError::new(&message))
            }
        }
    }
}

fn read_record(name: &JsValue, value: &JsValue, tags: &JsValue) -> Result<(String, f64, measure::Tags), &'static str> {
    let name = name.as_string().ok_or("pulse.record: name must be a string")?;
    let value = value.as_f64().ok_or("pulse.record: value must be a number")?;
    let mut list = Vec::new();
    if !(tags.is_undefined() || tags.is_null()) {
        if !tags.is_object() || js_sys::Array::is_array(tags) {
            return Err("pulse.record: tags must be an object of strings");
        }
        for entry in js_sys::Object::entries(tags.unchecked_ref()).iter() {
            let key = browser::get(&entry, "0").as_string().unwrap_or_default();
            let value = browser::get(&entry, "1").as_string().ok_or("pulse.record: tag values must be strings")?;
            list.push((key, value));
        }
    }
    Ok((name, value, list))
}
