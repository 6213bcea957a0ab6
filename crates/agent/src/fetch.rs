//! The `fetch` wrapper: every call the page makes is timed and reported as an `api` metric
//! (method, normalised route, status, ok, network error, duration until the response headers
//! arrived, `Server-Timing` when the server exposes it).
//!
//! The wrapper hands the page exactly what the original `fetch` returns — the same promise
//! object — and rethrows anything it throws; the timing hangs off a separate `then`. Calls to the
//! collector itself and URLs on the ignore list are not timed. Opaque (`no-cors`) responses carry
//! no status, so they are not reported.

use js_sys::{Function, Object};
use pulse_protocol::ServerTiming;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Request, Response};

use crate::agent::{current, Agent};
use crate::browser::{self, get, text};
use crate::wire::Metric;

/// Puts the original `fetch` back when dropped, if the page's `fetch` is still the wrapper.
#[derive(Debug)]
struct Restore {
    original: Function,
    wrapper: JsValue,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(window) = browser::window() {
            if get(&window, "fetch") == self.wrapper {
                browser::set(&window, "fetch", &self.original);
            }
        }
    }
}

pub(crate) fn install(agent: &Agent) {
    let (Some(window), Some(original)) = (browser::window(), agent.original_fetch.borrow().clone()) else { return };
    let inner = original.clone();
    let wrapper = Closure::<dyn FnMut(JsValue, JsValue) -> Result<JsValue, JsValue>>::new(move |input: JsValue, init: JsValue| {
        let this = browser::window().map_or(JsValue::UNDEFINED, JsValue::from);
        let Some(agent) = current() else { return inner.call2(&this, &input, &init) };
        let call = browser::timed(|| describe(&agent, &input, &init));
        let started = browser::now();
        let result = inner.call2(&this, &input, &init)?;
        if let Some(call) = call {
            browser::timed(|| watch(call, started, &result));
        }
        Ok(result)
    });
    let wrapper_fn: JsValue = wrapper.as_ref().clone();
    // Never freed: code that captured `window.fetch` while wrapped keeps a working function (it
    // passes straight through once the agent has stopped).
    wrapper.forget();
    browser::set(&window, "fetch", &wrapper_fn);
    agent.hook(Restore { original, wrapper: wrapper_fn });
}

/// What is known about a call before it starts.
pub(crate) struct Call {
    route: String,
    method: String,
}

fn describe(agent: &Agent, input: &JsValue, init: &JsValue) -> Option<Call> {
    let request = input.dyn_ref::<Request>();
    let url = match (input.as_string(), request) {
        (Some(url), _) => url,
        (None, Some(request)) => request.url(),
        // URL objects and anything else `fetch` would stringify.
        (None, None) => String::from(input.unchecked_ref::<Object>().to_string()),
    };
    let method = text(init, "method").or_else(|| request.map(Request::method)).unwrap_or_else(|| "GET".to_owned());
    call(agent, url, method)
}

/// The route and method of a call to `url`, or `None` for the collector's own beacons and the
/// ignore list.
pub(crate) fn call(agent: &Agent, url: String, method: String) -> Option<Call> {
    // The common case, a same-origin absolute path (`/api/cart?id=3`), needs no URL parsing.
    let (href, same_origin_path) = if url.starts_with('/') && !url.starts_with("//") {
        (agent.origin.clone() + &url, Some(url))
    } else {
        let parsed = web_sys::Url::new_with_base(&url, &browser::window()?.location().href().ok()?).ok()?;
        let same_origin = parsed.origin() == agent.origin;
        (parsed.href(), same_origin.then(|| parsed.pathname()))
    };
    if href.starts_with(&agent.config.endpoint) || agent.config.ignore.iter().any(|i| i.matches(&href)) {
        return None;
    }
    let route = match same_origin_path {
        Some(path) => crate::routes::apply(&agent.config.routes, &path).unwrap_or_else(|| pulse_protocol::route::normalise_path(&path)),
        None => pulse_protocol::route::normalise_route(&href),
    };
    Some(Call { route, method: method.to_ascii_uppercase() })
}

/// How a timed call ended.
pub(crate) enum Outcome {
    /// A response: status, ok, the `Server-Timing` header if exposed.
    Response(u16, bool, Option<String>),
    /// No response: a short reason (network, abort, timeout).
    Failed(&'static str),
}

/// Reports one timed call as an `api` metric.
pub(crate) fn report(call: Call, started: f64, outcome: Outcome) {
    let duration = browser::now() - started;
    let mut metric = Metric {
        name: pulse_protocol::metric::API.to_owned(),
        value: Some(duration.max(0.0)),
        at: browser::epoch_of(started),
        route: Some(call.route),
        method: Some(call.method),
        ..Metric::default()
    };
    match outcome {
        Outcome::Response(status, ok, header) => {
            metric.status = Some(status);
            metric.ok = Some(ok);
            metric.server_timing = header.map(|h| parse_server_timing(&h, js_sys::Number::parse_float)).filter(|t| !t.is_empty());
        }
        Outcome::Failed(why) => {
            metric.status = Some(0);
            metric.ok = Some(false);
            metric.error = Some(why);
        }
    }
    if let Some(agent) = current() {
        agent.emit(metric);
    }
}

fn watch(call: Call, started: f64, result: &JsValue) {
    browser::on_settle(result, move |outcome: JsValue| {
        let outcome = match outcome.dyn_ref::<Response>() {
            Some(response) if response.type_() == web_sys::ResponseType::Opaque => return,
            Some(response) => Outcome::Response(response.status(), response.ok(), response.headers().get("server-timing").ok().flatten()),
            None => Outcome::Failed(error_kind(&outcome)),
        };
        report(call, started, outcome);
    });
}

/// A short, stable name for why a request failed.
fn error_kind(error: &JsValue) -> &'static str {
    match text(error, "name").as_deref() {
        Some("AbortError") => "abort",
        Some("TimeoutError") => "timeout",
        Some("TypeError") => "network",
        _ => "error",
    }
}

/// Parses a `Server-Timing` header (`db;dur=53.2, cache;desc="Cache Read";dur=2, miss`), keeping
/// at most 16 entries; `parse_number` reads the `dur` values.
pub fn parse_server_timing(header: &str, parse_number: impl Fn(&str) -> f64) -> Vec<ServerTiming> {
    let mut out = Vec::new();
    for part in split_outside_quotes(header, ',') {
        let mut params = split_outside_quotes(part, ';').into_iter();
        let name = params.next().unwrap_or("").trim();
        if name.is_empty() || out.len() == pulse_protocol::limits::MAX_SERVER_TIMINGS {
            continue;
        }
        let mut timing = ServerTiming { name: name.to_owned(), dur: None, desc: None };
        let (mut dur_seen, mut desc_seen) = (false, false);
        for param in params {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "dur" if !dur_seen => {
                    dur_seen = true;
                    timing.dur = Some(parse_number(value)).filter(|d| d.is_finite() && *d >= 0.0);
                }
                "desc" if !desc_seen => {
                    desc_seen = true;
                    timing.desc = Some(value.to_owned());
                }
                _ => {}
            }
        }
        out.push(timing);
    }
    out
}

fn split_outside_quotes(s: &str, separator: char) -> Vec<&str> {
    let mut quoted = false;
    s.split(|c| {
        quoted ^= c == '"';
        c == separator && !quoted
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(h: &str) -> Vec<ServerTiming> {
        parse_server_timing(h, |s| s.parse().unwrap_or(f64::NAN))
    }

    fn st(name: &str, dur: Option<f64>, desc: Option<&str>) -> ServerTiming {
        ServerTiming { name: name.into(), dur, desc: desc.map(Into::into) }
    }

    #[test]
    fn server_timing_headers_parse() {
        assert_eq!(
            parse(r#"db;dur=53.2, cache;desc="Cache Read; hit, warm";dur=2, miss"#),
            vec![st("db", Some(53.2), None), st("cache", Some(2.0), Some("Cache Read; hit, warm")), st("miss", None, None)]
        );
        assert_eq!(parse("app;dur=abc;dur=4"), vec![st("app", None, None)], "the first dur counts, even when bad");
        assert_eq!(parse("x;DUR=-1"), vec![st("x", None, None)], "negative durations are dropped");
        assert_eq!(parse(" , ;dur=1"), vec![]);
        assert_eq!(parse(&"a, ".repeat(40)).len(), 16);
    }
}
