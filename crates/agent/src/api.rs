//! `fetch` and `XMLHttpRequest` timing: every call the page makes is reported as an `api` metric
//! (method, normalised route, status, ok, network error or timeout, duration until the response
//! headers arrived — `loadend` for XHR — and `Server-Timing` when the server exposes it).
//!
//! The wrappers in `js/host.js` hand the page exactly what the original returns — the same
//! promise object — and rethrow anything it throws; they ask here whether to time a call
//! ([`describe`], which decides, then [`Calls::begin`]) and say how it ended
//! ([`Calls::fetch_ended`], [`Calls::xhr_ended`]). Calls to the collector itself, URLs on the
//! ignore list and URLs that are not `http(s):` are not timed. Opaque responses (`no-cors`,
//! `redirect: 'manual'`) carry no status, so they are not reported.
//!
//! Known cost of returning the page's own promise: the wrapper watches it, so a rejection the page
//! leaves unhandled no longer fires `unhandledrejection` (web-vitals has no wrapper; Sentry and
//! Elastic return a derived promise instead, which changes the object the page gets).

use crate::host::Js;
use alloc::borrow::ToOwned;
use alloc::string::String;
use pulse_protocol::limits::{MAX_DURATION_MS, MAX_SHORT_LEN};
use pulse_protocol::text;
use pulse_protocol::validate::has_control;

use crate::config::Config;
use crate::host::{self, Kind};
use crate::json::Obj;
use crate::report::{Metric, Outbox};

/// Calls started and not yet ended that are kept (a call whose promise never settles is
/// forgotten after this many newer ones).
const MAX_PENDING: usize = 64;

/// What is known about a call before it ends.
#[derive(Debug)]
struct Call {
    id: u32,
    route: String,
    method: String,
    started: f64,
}

/// The calls in flight.
#[derive(Debug)]
pub struct Calls {
    /// A ring: call `id` sits at `id % MAX_PENDING`, where the 64th newer call overwrites it (no
    /// shifting, no panic paths).
    pending: [Option<Call>; MAX_PENDING],
    next_id: u32,
}

/// How a call is made: `fetch(input, init)`, or XHR's `(method, url)`.
#[derive(Debug)]
pub enum Begin {
    Fetch(Js, Js),
    Xhr(Js, Js),
}

/// The route and method of a call to time, or `None` for the collector's own beacons, the ignore
/// list and URLs that are not `http(s):` (`data:`, `blob:`). Reading the call's arguments may run
/// page code (a getter, a `toString`) that calls the agent: this runs while the agent's state is
/// not borrowed.
pub fn describe(config: &Config, how: Begin) -> Option<(String, String)> {
    let (url, mut method) = match how {
        Begin::Fetch(input, init) => {
            let url = match host::kind_of(input) {
                Kind::String => host::string(input),
                // A Request has `url`; URL objects and anything else `fetch` would stringify.
                _ => host::text(input, "url").unwrap_or_else(|| host::string(input)),
            };
            let method = host::text(init, "method").or_else(|| host::text(input, "method")).unwrap_or_else(|| "GET".to_owned());
            (url, method)
        }
        Begin::Xhr(method, url) => (host::string(url), host::string(method)),
    };
    // The common case, a same-origin absolute path (`/api/cart?id=3`), needs no URL parsing
    // (unless a `<base href>` points to another origin).
    let origin = &config.origin;
    let (href, same_origin_path) = if config.base_same_origin && url.starts_with("/") && !url.starts_with("//") {
        (origin.clone() + &url, Some(url))
    } else {
        let parsed = host::url(&url);
        let href = host::text(parsed, "href")?;
        let same_origin = host::is(parsed, "origin", origin);
        (href, if same_origin { host::text(parsed, "pathname") } else { None })
    };
    if !(href.starts_with("https:") || href.starts_with("http:"))
        || href.starts_with(&config.endpoint)
        || config.ignore.iter().any(|re| config.ignores(re, &href))
    {
        return None;
    }
    let route = match same_origin_path {
        Some(path) => crate::routes::apply(&config.routes, &path).unwrap_or_else(|| pulse_protocol::route::normalise_path(&path)),
        None => pulse_protocol::route::normalise_route(&href),
    };
    method.make_ascii_uppercase();
    Some((route, method))
}

impl Default for Calls {
    fn default() -> Calls {
        Calls::new()
    }
}

impl Calls {
    pub const fn new() -> Calls {
        Calls { pending: [const { None }; MAX_PENDING], next_id: 0 }
    }

    /// A call to time starts, as [`describe`]d: its id.
    pub fn begin(&mut self, (route, method): (String, String)) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.pending[self.next_id as usize % MAX_PENDING] = Some(Call { id: self.next_id, route, method, started: host::now() });
        self.next_id
    }

    /// A fetch settled: `response` or `error` (one of them is undefined).
    pub fn fetch_ended(&mut self, id: u32, response: Js, error: Js, out: &mut Outbox) {
        let Some(call) = self.take(id) else { return };
        let outcome = if host::kind_of(response) == Kind::Missing {
            Outcome::Failed(match host::text(error, "name").as_deref() {
                Some("AbortError") => "abort",
                Some("TimeoutError") => "timeout",
                Some("TypeError") => "network",
                _ => "error",
            })
        } else if host::is(response, "type", "opaque") || host::is(response, "type", "opaqueredirect") {
            // No status to report (`no-cors`, or `redirect: 'manual'`).
            return;
        } else {
            Outcome::Response(host::num(response, "status"), host::header(response, "server-timing"))
        };
        report(call, outcome, out);
    }

    /// An XMLHttpRequest finished (`loadend`).
    pub fn xhr_ended(&mut self, id: u32, xhr: Js, out: &mut Outbox) {
        let Some(call) = self.take(id) else { return };
        let status = host::num(xhr, "status");
        let timeout = host::num(xhr, "timeout");
        let outcome = if status > 0.0 {
            Outcome::Response(status, host::header(xhr, "server-timing"))
        } else if timeout > 0.0 && host::now() - call.started >= timeout {
            Outcome::Failed("timeout")
        } else {
            // XHR reports network errors and aborts alike as status 0.
            Outcome::Failed("network")
        };
        report(call, outcome, out);
    }

    fn take(&mut self, id: u32) -> Option<Call> {
        let slot = &mut self.pending[id as usize % MAX_PENDING];
        if slot.as_ref().is_some_and(|call| call.id == id) {
            slot.take()
        } else {
            None
        }
    }
}

/// How a timed call ended.
enum Outcome {
    /// A response: status, the `Server-Timing` header if exposed.
    Response(f64, Option<String>),
    /// No response: a short reason (network, abort, timeout).
    Failed(&'static str),
}

fn report(call: Call, outcome: Outcome, out: &mut Outbox) {
    let duration = host::now() - call.started;
    out.push(Metric::new(pulse_protocol::metric::API, duration.max(0.0), host::epoch_of(call.started), |o| {
        crate::report::id(o);
        o.str("route", &call.route);
        o.str("method", &call.method);
        match outcome {
            Outcome::Response(status, header) => {
                let status = status as u16;
                o.num("status", f64::from(status));
                o.bool("ok", (200..300).contains(&status));
                if let Some(header) = header {
                    let mut list = String::new();
                    server_timing(&header, host::float, |name, dur, desc| {
                        list.push(if list.is_empty() { '[' } else { ',' });
                        let mut e = Obj::new(&mut list);
                        e.str("name", name);
                        e.opt_num("dur", dur);
                        e.opt_str("desc", desc);
                        e.end();
                    });
                    // No entries: the member is left out.
                    if !list.is_empty() {
                        list.push(']');
                        o.key("server_timing").push_str(&list);
                    }
                }
            }
            Outcome::Failed(why) => {
                o.num("status", 0.0);
                o.bool("ok", false);
                o.str("error", why);
            }
        }
    }));
}

/// Parses a `Server-Timing` header (`db;dur=53.2, cache;desc="Cache Read";dur=2, miss`): calls
/// `each` with every entry's name, `dur` and `desc`, at most 16 entries, as the collector accepts
/// them; `parse_number` reads the `dur` values.
pub fn server_timing(header: &str, parse_number: impl Fn(&str) -> f64, mut each: impl FnMut(&str, Option<f64>, Option<&str>)) {
    // One pass: entries end at `,` and parameters at `;` or `,`, neither inside double quotes;
    // the end of the header ends both.
    let mut count = 0;
    let (mut name, mut dur, mut desc) = (None, None, None);
    let (mut dur_seen, mut desc_seen) = (false, false);
    let (mut quoted, mut start) = (false, 0);
    let bytes = header.as_bytes();
    for i in 0..=bytes.len() {
        let b = match bytes.get(i) {
            Some(&b) => {
                quoted ^= b == b'"';
                if quoted || (b != b',' && b != b';') {
                    continue;
                }
                b
            }
            None => b',',
        };
        let param = header.get(start..i).unwrap_or("");
        start = i + 1;
        if name.is_none() {
            name = Some(param.trim_ascii());
        } else {
            let (key, value) = text::split_once(param, b'=').unwrap_or((param, ""));
            let value = unquote(value.trim_ascii());
            let key = key.trim_ascii();
            if key.eq_ignore_ascii_case("dur") && !dur_seen {
                dur_seen = true;
                // An implausible duration is left out, as the collector would refuse it.
                dur = Some(parse_number(value)).filter(|d| *d >= 0.0 && *d <= MAX_DURATION_MS);
            } else if key.eq_ignore_ascii_case("desc") && !desc_seen {
                desc_seen = true;
                // A description longer than the collector keeps (256 bytes) is left out.
                desc = Some(value).filter(|d| d.len() <= MAX_SHORT_LEN);
            }
        }
        if b == b',' {
            // A name the collector would refuse (too long, a control character such as an inner
            // tab) leaves the entry out rather than failing the whole call's metric.
            if let Some(name) = name.take().filter(|n| !n.is_empty() && n.len() <= MAX_SHORT_LEN && !has_control(n)) {
                if count < pulse_protocol::limits::MAX_SERVER_TIMINGS {
                    count += 1;
                    each(name, dur, desc);
                }
            }
            (dur, desc, dur_seen, desc_seen) = (None, None, false, false);
        }
    }
}

/// `value` without the double quotes around it (all leading and trailing ones, as
/// `trim_matches('"')`).
fn unquote(value: &str) -> &str {
    let b = value.as_bytes();
    let (mut start, mut end) = (0, b.len());
    while start < end && b.get(start) == Some(&b'"') {
        start += 1;
    }
    while end > start && b.get(end - 1) == Some(&b'"') {
        end -= 1;
    }
    value.get(start..end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use pulse_protocol::ServerTiming;

    fn parse(h: &str) -> Vec<ServerTiming> {
        let mut out = Vec::new();
        server_timing(
            h,
            |s| s.parse().unwrap_or(f64::NAN),
            |name, dur, desc| out.push(ServerTiming { name: name.into(), dur, desc: desc.map(Into::into) }),
        );
        out
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
        assert_eq!(parse(r#"a;desc=""x"";dur="7", b;desc="""#), vec![st("a", Some(7.0), Some("x")), st("b", None, Some(""))]);
        assert_eq!(parse(r#"q;desc="x, y;z"#), vec![st("q", None, Some("x, y;z"))], "an unclosed quote runs to the end");
        assert_eq!(parse(&"a, ".repeat(40)).len(), 16);
    }

    #[test]
    fn server_timing_leaves_out_what_the_collector_refuses() {
        let long = "n".repeat(MAX_SHORT_LEN + 1);
        let header = alloc::format!("a\tb;dur=1, {long};dur=2, c\u{85}d, slow;dur=3600001, ok;dur=3600000");
        assert_eq!(parse(&header), vec![st("slow", None, None), st("ok", Some(MAX_DURATION_MS), None)]);
        assert_eq!(parse(&"n".repeat(MAX_SHORT_LEN)).len(), 1, "a name of the longest length is kept");
        let desc = |n| alloc::format!("x;desc=\"{}\"", "d".repeat(n));
        assert_eq!(parse(&desc(MAX_SHORT_LEN)), vec![st("x", None, Some(&"d".repeat(MAX_SHORT_LEN)))]);
        assert_eq!(parse(&desc(MAX_SHORT_LEN + 1)), vec![st("x", None, None)], "a desc over 256 bytes is left out");
    }
}
