//! `XMLHttpRequest` timing (axios and older code use XHR): every request the page sends is reported
//! as an `api` metric like a `fetch` — method, normalised route, status, ok, network error or
//! timeout, duration until `loadend`, `Server-Timing` when exposed.
//!
//! Wrapping prototype methods needs the call's `this`, which a wasm-bindgen closure does not
//! receive, so the two wrappers are a few lines of JavaScript (below) that hand each finished
//! request to the agent. They call the original methods with the original arguments and return
//! what they return; `shutdown()` puts the originals back.

use js_sys::Function;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::*;

use crate::agent::{current, Agent};
use crate::browser;
use crate::fetch::{call, report, Outcome};

#[wasm_bindgen(inline_js = r#"
export function wrap_xhr(done) {
  const X = typeof XMLHttpRequest === 'function' ? XMLHttpRequest.prototype : null;
  if (!X) return null;
  const open = X.open, send = X.send;
  X.open = function (method, url) {
    this.__pulse = [String(method), String(url)];
    return open.apply(this, arguments);
  };
  X.send = function () {
    const info = this.__pulse;
    if (info) {
      const started = performance.now();
      this.addEventListener('loadend', () => {
        let timing = null;
        try { timing = this.getResponseHeader('server-timing'); } catch (e) {}
        done(info[0], info[1], this.status, started, this.timeout, timing);
      }, { once: true });
    }
    return send.apply(this, arguments);
  };
  return () => {
    if (X.open !== open) X.open = open;
    if (X.send !== send) X.send = send;
  };
}
"#)]
extern "C" {
    /// Wraps `XMLHttpRequest.prototype.open/send`; returns the function that unwraps them (or
    /// `null` without XHR).
    fn wrap_xhr(done: &Function) -> JsValue;
}

/// `(method, url, status, started, timeout, Server-Timing)` of one finished request.
type Done = dyn FnMut(String, String, u16, f64, f64, Option<String>);

/// Restores the prototype when dropped and keeps the callback alive until then.
struct Unwrap {
    restore: Function,
    _done: Closure<Done>,
}

impl Drop for Unwrap {
    fn drop(&mut self) {
        let _ = self.restore.call0(&JsValue::NULL);
    }
}

impl std::fmt::Debug for Unwrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unwrap")
    }
}

pub(crate) fn install(agent: &Agent) {
    let done = Closure::<Done>::new(|method: String, url: String, status: u16, started: f64, timeout: f64, timing: Option<String>| {
        browser::timed(|| {
            let Some(agent) = current() else { return };
            let Some(call) = call(&agent, url, method) else { return };
            let outcome = if status > 0 {
                Outcome::Response(status, (200..300).contains(&status), timing)
            } else if timeout > 0.0 && browser::now() - started >= timeout {
                Outcome::Failed("timeout")
            } else {
                // XHR reports network errors and aborts alike as status 0.
                Outcome::Failed("network")
            };
            report(call, started, outcome);
        })
    });
    if let Ok(restore) = wrap_xhr(done.as_ref().unchecked_ref()).dyn_into::<Function>() {
        agent.hook(Unwrap { restore, _done: done });
    }
}
