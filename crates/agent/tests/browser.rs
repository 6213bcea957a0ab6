//! The agent in real browsers (`make test-wasm`: headless Chromium and Firefox through
//! `wasm-bindgen-test-runner`).
//!
//! Each test starts the agent on the test runner's page, drives it (records, fetches, DOM
//! changes that paint and shift, lifecycle events) and reads what it would have sent.
//! `navigator.sendBeacon` is replaced by a recorder here — the one stand-in, so the payloads can
//! be read; the end-to-end tests send real beacons to a real collector.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Object, Reflect};
use pulse_agent::{init, Pulse};
use pulse_protocol::{AttrValue, Beacon, Metric, NavigationType};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen(inline_js = r#"
export function record_beacons(accept) {
  window.__beacons = [];
  window.__accept = accept;
  Object.defineProperty(navigator, 'sendBeacon', {
    configurable: true, writable: true,
    value: function (url, body) { if (window.__accept) { window.__beacons.push({ url, body: String(body) }); } return window.__accept; },
  });
}
export function accept_beacons(accept) { window.__accept = accept; }
// Only the payloads the browser accepted.
export function beacon_bodies() { return window.__beacons.map(b => b.body); }
export function beacon_urls() { return window.__beacons.map(b => b.url); }

// A stand-in for the page's fetch, installed before init so the agent wraps it.
export function fake_fetch(mode) {
  window.__realFetch = window.__realFetch || window.fetch;
  window.__fetchCalls = [];
  window.fetch = function (input, init) {
    window.__fetchCalls.push({ input, init });
    if (mode === 'throw') { throw (window.__thrown = new Error('thrown synchronously')); }
    if (mode === 'reject') { return Promise.reject(new TypeError('offline')); }
    if (mode === 'pending') { return (window.__pending = new Promise(() => {})); }
    return Promise.resolve(new Response('', { status: 202 }));
  };
}
export function real_fetch() { if (window.__realFetch) { window.fetch = window.__realFetch; } }
export function fetch_calls() { return window.__fetchCalls; }
export function page_fetch(input, init) { return window.fetch(input, init); }
export function pending_promise() { return window.__pending; }
export function thrown_error() { return window.__thrown; }

export function xhr(method, url) {
  return new Promise((resolve) => {
    const x = new XMLHttpRequest();
    x.open(method, url);
    x.addEventListener('loadend', () => resolve(x.status));
    x.send();
  });
}
// One XMLHttpRequest opened again while its first request runs (which that ends without events).
export function xhr_reopened(first, second) {
  return new Promise((resolve) => {
    const x = new XMLHttpRequest();
    x.open('GET', first);
    x.send();
    x.open('GET', second);
    x.addEventListener('loadend', () => resolve(x.status));
    x.send();
  });
}
export function xhr_wrapped() { return XMLHttpRequest.prototype.open.toString().includes('__pulse'); }

export function supports(type) {
  return (PerformanceObserver.supportedEntryTypes || []).includes(type);
}
export function dispatch(type, persisted) {
  const event = persisted === undefined ? new Event(type) : new PageTransitionEvent(type, { persisted });
  (type === 'visibilitychange' ? document : window).dispatchEvent(event);
}
export function next_frame() { return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); }

// Content that paints (a large block of text becomes the LCP), then a banner pushed in above it
// so it shifts.
export async function paint_and_shift() {
  const main = document.createElement('main');
  main.id = 'content';
  main.innerHTML = '<p class="hero big" style="font-size:48px;line-height:1.2;margin:0">' + 'Pulse measures what people feel. '.repeat(12) + '</p>';
  document.body.prepend(main);
  await next_frame();
  await new Promise(r => setTimeout(r, 300));
  const banner = document.createElement('div');
  banner.className = 'banner';
  banner.style.height = '300px';
  main.prepend(banner);
  await next_frame();
  await new Promise(r => setTimeout(r, 300));
}
// What performance.getEntriesByType(type) answers, replaced by `json` until restore_entries().
export function fake_entries(type, json) {
  const real = Performance.prototype.getEntriesByType;
  const list = JSON.parse(json);
  performance.getEntriesByType = function (t) { return t === type ? list : real.call(performance, t); };
}
export function restore_entries() { delete performance.getEntriesByType; }
export function fake_interaction_count(n) {
  Object.defineProperty(performance, 'interactionCount', { configurable: true, get: () => n });
}
export function restore_interaction_count() { delete performance.interactionCount; }
// A task of `ms` milliseconds in a timer callback of its own: a long animation frame's script.
export function block_soon(ms) {
  return new Promise((resolve) => setTimeout(function blockTheMainThread() {
    const until = performance.now() + ms;
    while (performance.now() < until) { /* busy */ }
    resolve();
  }, 0));
}
export function measure(name, ms) {
  performance.mark(name + ':start', { startTime: performance.now() - ms });
  performance.measure(name, name + ':start');
}
"#)]
extern "C" {
    fn record_beacons(accept: bool);
    fn accept_beacons(accept: bool);
    fn beacon_bodies() -> Vec<String>;
    fn beacon_urls() -> Vec<String>;
    fn fake_fetch(mode: &str);
    fn real_fetch();
    fn fetch_calls() -> js_sys::Array;
    #[wasm_bindgen(catch)]
    fn page_fetch(input: &JsValue, init: &JsValue) -> Result<JsValue, JsValue>;
    fn pending_promise() -> JsValue;
    fn thrown_error() -> JsValue;
    fn supports(kind: &str) -> bool;
    fn xhr(method: &str, url: &str) -> js_sys::Promise;
    fn xhr_wrapped() -> bool;
    fn xhr_reopened(first: &str, second: &str) -> js_sys::Promise;
    fn dispatch(kind: &str, persisted: Option<bool>);
    fn next_frame() -> js_sys::Promise;
    fn paint_and_shift() -> js_sys::Promise;
    fn measure(name: &str, ms: f64);
    fn block_soon(ms: f64) -> js_sys::Promise;
    fn fake_entries(kind: &str, json: &str);
    fn restore_entries();
    fn fake_interaction_count(n: f64);
    fn restore_interaction_count();
}

/// The running agent; shut down when dropped so one failing test does not leave it running.
struct Agent(Pulse);

impl Drop for Agent {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

fn options(extra: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    let set = |k: &str, v: JsValue| Reflect::set(&o, &k.into(), &v).expect("set");
    set("endpoint", "/collect".into());
    set("site", "test-site".into());
    set("flushInterval", 600_000.into());
    for (k, v) in extra {
        set(k, v.clone());
    }
    o.into()
}

thread_local! {
    /// The last agent started: a failed test aborts without dropping its handle, so the next
    /// test stops it first instead of failing for it.
    static LAST: RefCell<Option<Pulse>> = const { RefCell::new(None) };
}

fn start(extra: &[(&str, JsValue)]) -> Agent {
    if let Some(left_running) = LAST.with(|l| l.borrow_mut().take()) {
        left_running.shutdown();
    }
    record_beacons(true);
    storage().clear().expect("clear sessionStorage");
    let agent = init(options(extra)).map_err(JsValue::from).expect("init");
    let agent = Agent(agent);
    LAST.with(|l| *l.borrow_mut() = Some(agent.0.clone()));
    agent
}

fn storage() -> web_sys::Storage {
    web_sys::window().expect("window").session_storage().expect("storage").expect("storage")
}

fn sent() -> Vec<Beacon> {
    beacon_bodies().iter().map(|b| serde_json::from_str(b).expect("a beacon is wire-format JSON")).collect()
}

fn sent_metrics() -> Vec<Metric> {
    sent().into_iter().flat_map(|b| b.metrics).collect()
}

fn named<'a>(metrics: &'a [Metric], name: &str) -> Vec<&'a Metric> {
    metrics.iter().filter(|m| m.name == name).collect()
}

fn record(agent: &Agent, name: &str, value: f64) {
    agent.0.record(name.into(), value.into(), JsValue::UNDEFINED).map_err(JsValue::from).expect("record");
}

fn error_message(result: Result<Pulse, JsError>) -> String {
    let error = JsValue::from(result.expect_err("an error"));
    Reflect::get(&error, &"message".into()).expect("message").as_string().expect("a string")
}

async fn sleep(ms: u32) {
    gloo_timers::future::TimeoutFuture::new(ms).await;
}

fn stat(agent: &Agent, key: &str) -> f64 {
    Reflect::get(&agent.0.stats(), &key.into()).expect("stat").as_f64().expect("a number")
}

fn num(v: f64) -> JsValue {
    JsValue::from_f64(v)
}

// ---- config ----

#[wasm_bindgen_test]
fn bad_options_are_refused_with_the_option_named() {
    let cases: [(JsValue, &str); 10] = [
        (JsValue::from_str("https://x"), "`options` must be an object"),
        (options(&[("sampleRate", num(2.0))]), "`sampleRate` must be a number from 0 to 1"),
        (options(&[("batchSize", num(0.0))]), "`batchSize` must be a whole number"),
        (options(&[("batchSize", num(2.5))]), "`batchSize` must be a whole number"),
        (options(&[("flushInterval", "soon".into())]), "`flushInterval` must be a finite number"),
        (options(&[("sampelRate", num(0.5))]), "`sampelRate` is not an option"),
        (options(&[("beforeSend", "drop".into())]), "`beforeSend` must be a function"),
        (options(&[("ignoreUrls", "/health".into())]), "`ignoreUrls` must be an array"),
        (options(&[("softNavigations", "yes".into())]), "`softNavigations` must be true or false"),
        (options(&[("routes", js_sys::Array::of1(&num(1.0)).into())]), "`routes` must hold strings"),
    ];
    for (opts, expected) in cases {
        let message = error_message(init(opts));
        assert!(message.contains(expected), "{message:?} should contain {expected:?}");
    }
    let without_site = Object::new();
    Reflect::set(&without_site, &"endpoint".into(), &"/collect".into()).expect("set");
    assert!(error_message(init(without_site.into())).contains("`site` is required"));

    let agent = start(&[]);
    assert!(error_message(init(options(&[]))).contains("already running"));
    drop(agent);
    let again = init(options(&[])).map_err(JsValue::from).expect("init works again after shutdown");
    again.shutdown();
}

// ---- queue, timer, transport ----

#[wasm_bindgen_test]
fn a_full_batch_is_sent_as_one_beacon() {
    let agent = start(&[("batchSize", num(3.0)), ("trackMeasures", JsValue::FALSE), ("release", "1.4.2".into())]);
    record(&agent, "cart.items", 1.0);
    record(&agent, "cart.items", 2.0);
    assert!(sent().is_empty(), "two of three: nothing sent yet");
    record(&agent, "cart.items", 3.0);
    let beacons = sent();
    assert_eq!(beacons.len(), 1);
    let b = &beacons[0];
    assert_eq!((b.v, b.site.as_str(), b.release.as_deref()), (1, "test-site", Some("1.4.2")));
    assert_eq!(b.metrics.iter().filter_map(|m| m.value).collect::<Vec<_>>(), vec![1.0, 2.0, 3.0]);
    assert_eq!(b.session, agent.0.session().expect("session"));
    assert_eq!(b.page, agent.0.page().expect("page"));
    assert!(b.url.starts_with('/'));
    assert!(b.viewport.is_some() && b.dpr.is_some());
    let now = js_sys::Date::now();
    assert!((b.sent_at - now).abs() < 60_000.0);
    assert!(beacon_urls()[0].ends_with("/collect") && beacon_urls()[0].starts_with("http"), "endpoint resolved against the page");
    assert_eq!(stat(&agent, "sent"), 3.0);
    assert_eq!(stat(&agent, "beacons"), 1.0);
    let (busy, longest) = (stat(&agent, "busyMs"), stat(&agent, "longestMs"));
    assert!(busy >= longest && longest >= 0.0, "the agent's own clock: {busy} ≥ {longest} ≥ 0");
}

#[wasm_bindgen_test]
fn a_device_hint_out_of_the_collectors_range_is_left_out_not_the_beacon() {
    let run = |js: &str| js_sys::eval(js).expect("eval");
    // devicePixelRatio is replaceable; navigator's getters are shadowed on the instance.
    run("window.devicePixelRatio = 20; Object.defineProperty(navigator, 'hardwareConcurrency', { value: 5000, configurable: true })");
    let agent = start(&[("batchSize", num(1.0)), ("trackMeasures", JsValue::FALSE)]);
    record(&agent, "cart.items", 1.0);
    run("delete window.devicePixelRatio; delete navigator.hardwareConcurrency");
    let beacons = sent();
    assert_eq!(beacons.len(), 1);
    let b = &beacons[0];
    assert_eq!((b.dpr, b.cores), (None, None), "out of range: left out");
    assert!(b.viewport.is_some(), "the other hints stay");
    pulse_protocol::validate::envelope(b).expect("the collector accepts the envelope");
}

#[wasm_bindgen_test]
async fn the_flush_interval_sends_what_waits() {
    let agent = start(&[("flushInterval", num(1_000.0)), ("trackMeasures", JsValue::FALSE)]);
    record(&agent, "tick", 1.0);
    sleep(400).await;
    assert!(sent().is_empty());
    sleep(1_000).await;
    assert_eq!(named(&sent_metrics(), "tick").len(), 1, "sent by the timer");
}

#[wasm_bindgen_test]
fn hide_and_pagehide_send_and_flush_sends() {
    let agent = start(&[("trackMeasures", JsValue::FALSE)]);
    record(&agent, "a", 1.0);
    dispatch("pagehide", Some(false));
    assert_eq!(named(&sent_metrics(), "a").len(), 1);
    record(&agent, "b", 1.0);
    agent.0.flush();
    assert_eq!(named(&sent_metrics(), "b").len(), 1);
}

#[wasm_bindgen_test]
fn large_batches_are_split_under_the_keepalive_budget() {
    let agent = start(&[("batchSize", num(500.0)), ("trackMeasures", JsValue::FALSE)]);
    let tags = Object::new();
    for key in ["a", "b", "c", "d"] {
        Reflect::set(&tags, &key.into(), &"x".repeat(250).into()).expect("set");
    }
    for i in 0..300 {
        agent.0.record("big".into(), num(f64::from(i)), tags.clone().into()).map_err(JsValue::from).expect("record");
    }
    agent.0.flush();
    let bodies = beacon_bodies();
    assert!(bodies.len() >= 5, "300 metrics of ~1 KB need several payloads, got {}", bodies.len());
    assert!(bodies.iter().all(|b| b.len() <= 60_000), "every payload under 60 000 bytes");
    let values: Vec<f64> = sent_metrics().iter().filter_map(|m| m.value).collect();
    assert_eq!(values, (0..300).map(f64::from).collect::<Vec<_>>(), "all sent once, in order");
}

#[wasm_bindgen_test]
async fn refused_beacons_fall_back_to_fetch_keepalive_and_failures_are_kept() {
    fake_fetch("reject");
    let agent = start(&[("trackMeasures", JsValue::FALSE), ("trackFetch", JsValue::FALSE)]);
    accept_beacons(false);
    record(&agent, "kept", 7.0);
    agent.0.flush();
    let calls = fetch_calls();
    assert_eq!(calls.length(), 1, "sendBeacon refused: fetch used");
    let init = Reflect::get(&calls.get(0), &"init".into()).expect("init");
    assert_eq!(Reflect::get(&init, &"keepalive".into()).expect("keepalive"), JsValue::TRUE);
    assert_eq!(Reflect::get(&init, &"method".into()).expect("method").as_string().as_deref(), Some("POST"));
    let body = Reflect::get(&init, &"body".into()).expect("body").as_string().expect("a text body");
    let refused: Beacon = serde_json::from_str(&body).expect("a beacon is wire-format JSON");
    let id = refused.metrics.iter().find(|m| m.name == "kept").and_then(|m| m.id.clone()).expect("a custom metric has an id");
    sleep(50).await;
    assert_eq!(stat(&agent, "retried"), 1.0, "the rejected send is queued again");
    accept_beacons(true);
    agent.0.flush();
    let kept = sent_metrics();
    let kept = named(&kept, "kept");
    assert_eq!(kept.len(), 1, "the next send carries it");
    assert_eq!(kept[0].id.as_deref(), Some(id.as_str()), "with the same id, so the collector counts it once");
    drop(agent);
    real_fetch();
}

// ---- session and sampling ----

#[wasm_bindgen_test]
fn the_session_survives_page_views_and_rolls_over_after_thirty_idle_minutes() {
    let agent = start(&[]);
    let first = agent.0.session().expect("session");
    drop(agent);
    // A second page view in the same tab (the agent starts again with the storage left as is).
    let second = init(options(&[])).map_err(JsValue::from).expect("init");
    assert_eq!(second.session().as_deref(), Some(first.as_str()));
    let page = second.page();
    second.shutdown();

    let stale = js_sys::Date::now() - 31.0 * 60_000.0;
    storage().set_item("pulse:session", &format!("{first}|{}|1", stale as u64)).expect("set");
    let third = init(options(&[])).map_err(JsValue::from).expect("init");
    assert_ne!(third.session().as_deref(), Some(first.as_str()), "idle for 31 minutes: a new session");
    assert_ne!(third.page(), page, "a new page view id per load");
    third.shutdown();
}

#[wasm_bindgen_test]
fn an_unsampled_session_measures_but_sends_nothing() {
    let agent = start(&[("sampleRate", num(0.0)), ("trackMeasures", JsValue::FALSE)]);
    assert!(!agent.0.sampled());
    let seen = Rc::new(RefCell::new(0));
    let counter = seen.clone();
    let listener = Closure::<dyn FnMut(JsValue)>::new(move |_| *counter.borrow_mut() += 1);
    agent.0.on_metric(listener.as_ref().clone());
    record(&agent, "x", 1.0);
    agent.0.flush();
    assert!(sent().is_empty());
    assert_eq!(*seen.borrow(), 1, "onMetric still sees it");
    assert_eq!(stat(&agent, "droppedUnsampled"), 1.0);
    drop(agent);
    // The decision is kept for the session: a sample rate of 1 on the next page view does not
    // turn an unsampled session on.
    let next = init(options(&[("sampleRate", num(1.0))])).map_err(JsValue::from).expect("init");
    assert!(!next.sampled());
    next.shutdown();
}

// ---- beforeSend and record ----

#[wasm_bindgen_test]
fn before_send_drops_scrubs_and_survives_errors() {
    let hook = Function::new_with_args(
        "m",
        "if (m.name === 'secret') return null; if (m.name === 'hush') return false; if (m.name === 'boom') throw new Error('bug'); \
         if (m.name === 'forgot') return; if (m.tags) { m.tags.email = '[redacted]'; } return m;",
    );
    let agent = start(&[("beforeSend", hook.into()), ("trackMeasures", JsValue::FALSE)]);
    record(&agent, "secret", 1.0);
    record(&agent, "hush", 1.0);
    record(&agent, "boom", 1.0);
    record(&agent, "forgot", 1.0);
    let tags = Object::new();
    Reflect::set(&tags, &"email".into(), &"a@b.c".into()).expect("set");
    agent.0.record("signup".into(), num(1.0), tags.into()).map_err(JsValue::from).expect("record");
    agent.0.flush();
    let metrics = sent_metrics();
    assert_eq!(metrics.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), vec!["signup"]);
    assert_eq!(metrics[0].tags.as_ref().and_then(|t| t.get("email")).map(String::as_str), Some("[redacted]"));
    assert_eq!(stat(&agent, "droppedByBeforeSend"), 2.0, "null and false drop");
    assert_eq!(stat(&agent, "beforeSendErrors"), 2.0, "a throw, and undefined: a missing return is a mistake, warned about");
}

#[wasm_bindgen_test]
fn each_listener_gets_its_own_copy_of_a_metric() {
    let agent = start(&[("trackMeasures", JsValue::FALSE), ("batchSize", num(1.0))]);
    let vandal = Function::new_with_args("m", "m.name = 'changed'; m.value = -1;");
    let seen = js_sys::Array::new();
    let into = seen.clone();
    let watcher = Closure::<dyn Fn(JsValue)>::new(move |m: JsValue| {
        into.push(&js_sys::Array::of2(
            &Reflect::get(&m, &"name".into()).unwrap_or_default(),
            &Reflect::get(&m, &"value".into()).unwrap_or_default(),
        ));
    });
    agent.0.on_metric(vandal.into());
    agent.0.on_metric(watcher.as_ref().clone());
    record(&agent, "two.listeners", 5.0);
    let last = js_sys::Array::from(&seen.to_vec().last().cloned().expect("the second listener ran"));
    assert_eq!((last.get(0), last.get(1)), (JsValue::from("two.listeners"), JsValue::from(5.0)), "untouched by the first listener");
    assert_eq!(named(&sent_metrics(), "two.listeners")[0].value, Some(5.0), "and sent as measured");
}

#[wasm_bindgen_test]
fn bad_records_throw_and_are_counted() {
    let agent = start(&[("trackMeasures", JsValue::FALSE)]);
    let tags = |js: &str| js_sys::eval(js).expect("tags");
    let bad: [(JsValue, JsValue, JsValue, &str); 7] = [
        ("Cart".into(), num(1.0), JsValue::UNDEFINED, "name must match"),
        ("x".into(), num(1.0), tags("({ plan: 'pro', Plan: 'pro' })"), "tag keys must match [a-z][a-z0-9_.:-]{0,63} (tag `Plan`)"),
        ("x".into(), num(1.0), tags("({ note: 'a\\nb' })"), "control characters (tag `note`)"),
        ("api".into(), num(1.0), JsValue::UNDEFINED, "name must match"),
        ("x".into(), num(f64::NAN), JsValue::UNDEFINED, "finite"),
        ("x".into(), "3".into(), JsValue::UNDEFINED, "value must be a number"),
        ("x".into(), num(1.0), "tag".into(), "tags must be an object"),
    ];
    for (name, value, tags, expected) in bad {
        let error = JsValue::from(agent.0.record(name, value, tags).expect_err("refused"));
        let message = Reflect::get(&error, &"message".into()).expect("message").as_string().unwrap_or_default();
        assert!(message.contains(expected), "{message:?} should contain {expected:?}");
    }
    assert_eq!(stat(&agent, "rejectedRecords"), 7.0);
    agent.0.flush();
    assert!(sent().is_empty());
}

#[wasm_bindgen_test]
async fn measures_become_custom_metrics() {
    let agent = start(&[]);
    measure("Checkout Render", 120.0);
    sleep(100).await;
    agent.0.flush();
    let metrics = sent_metrics();
    let m = named(&metrics, "checkout_render");
    assert_eq!(m.len(), 1, "{metrics:?}");
    assert!((m[0].value.unwrap_or_default() - 120.0).abs() < 5.0);
    assert_eq!(m[0].tags.as_ref().and_then(|t| t.get("source")).map(String::as_str), Some("measure"));
}

// ---- fetch ----

#[wasm_bindgen_test]
async fn fetches_are_timed_with_status_route_and_method() {
    real_fetch();
    let agent = start(&[
        ("trackMeasures", JsValue::FALSE),
        ("ignoreUrls", js_sys::Array::of1(&"/ignored".into()).into()),
        ("routes", js_sys::Array::of1(&"/shop/:slug".into()).into()),
    ]);
    let get = |input: JsValue, init: JsValue| async move {
        let promise = page_fetch(&input, &init).expect("fetch returns a promise");
        JsFuture::from(js_sys::Promise::from(promise)).await
    };
    let response = get("/api/items/123?color=red".into(), JsValue::UNDEFINED).await.expect("a response");
    assert!(response.is_instance_of::<web_sys::Response>(), "the page gets its Response");
    let post = web_sys::Request::new_with_str("/shop/blue-shoe").expect("request");
    let init = Object::new();
    Reflect::set(&init, &"method".into(), &"post".into()).expect("set");
    let _ = get(post.into(), init.into()).await;
    let url = web_sys::Url::new_with_base(
        "/api/things/550e8400-e29b-41d4-a716-446655440000",
        &web_sys::window().expect("w").location().href().expect("href"),
    )
    .expect("url");
    let _ = get(url.into(), JsValue::UNDEFINED).await;
    let _ = get("/ignored/ping".into(), JsValue::UNDEFINED).await;
    let failed = get("http://127.0.0.1:9/unreachable".into(), JsValue::UNDEFINED).await;
    let error = failed.expect_err("the page still sees the network error");
    assert_eq!(Reflect::get(&error, &"name".into()).expect("name").as_string().as_deref(), Some("TypeError"));
    sleep(50).await;
    agent.0.flush();
    let metrics = sent_metrics();
    let calls = named(&metrics, "api");
    type Summary<'a> = (Option<&'a str>, Option<&'a str>, Option<u16>, Option<bool>, Option<&'a str>);
    let summary: Vec<Summary> =
        calls.iter().map(|m| (m.route.as_deref(), m.method.as_deref(), m.status, m.ok, m.error.as_deref())).collect();
    assert_eq!(
        summary,
        vec![
            (Some("/api/items/:id"), Some("GET"), Some(404), Some(false), None),
            (Some("/shop/:slug"), Some("POST"), Some(404), Some(false), None),
            (Some("/api/things/:id"), Some("GET"), Some(404), Some(false), None),
            (Some("127.0.0.1:9/unreachable"), Some("GET"), Some(0), Some(false), Some("network")),
        ],
        "the ignored URL and the beacons are not timed"
    );
    assert!(calls.iter().all(|m| m.value.is_some_and(|v| (0.0..30_000.0).contains(&v))));
}

#[wasm_bindgen_test]
async fn xml_http_requests_are_timed_too() {
    // A frozen global RegExp matches too (its lastIndex cannot be written).
    let frozen = js_sys::Object::freeze(&js_sys::RegExp::new("/frozen/", "g"));
    let agent = start(&[("trackMeasures", JsValue::FALSE), ("ignoreUrls", js_sys::Array::of2(&"/ignored".into(), &frozen).into())]);
    assert!(xhr_wrapped());
    for (method, url) in [
        ("GET", "/api/orders/42?full=1"),
        ("post", "/api/orders"),
        ("GET", "/ignored/x"),
        ("GET", "/frozen/x"),
        ("GET", "/frozen/y"),
        ("GET", "http://127.0.0.1:9/down"),
    ] {
        let status = JsFuture::from(xhr(method, url)).await.expect("the page's request completes");
        assert_eq!(status.as_f64(), Some(if url.contains(":9/") { 0.0 } else { 404.0 }), "the page sees its own status");
    }
    sleep(50).await;
    agent.0.flush();
    let metrics = sent_metrics();
    type Call<'a> = (Option<&'a str>, Option<&'a str>, Option<u16>, Option<&'a str>);
    let calls: Vec<Call> =
        named(&metrics, "api").iter().map(|m| (m.route.as_deref(), m.method.as_deref(), m.status, m.error.as_deref())).collect();
    assert_eq!(
        calls,
        vec![
            (Some("/api/orders/:id"), Some("GET"), Some(404), None),
            (Some("/api/orders"), Some("POST"), Some(404), None),
            (Some("127.0.0.1:9/down"), Some("GET"), Some(0), Some("network")),
        ]
    );
    // Opened again mid-request: the first request never ends, so it is not reported.
    JsFuture::from(xhr_reopened("/api/first", "/api/second")).await.expect("the second request completes");
    sleep(50).await;
    agent.0.flush();
    let routes: Vec<Option<String>> = named(&sent_metrics(), "api").iter().map(|m| m.route.clone()).collect();
    assert_eq!(routes.last(), Some(&Some("/api/second".into())));
    assert!(!routes.contains(&Some("/api/first".into())), "{routes:?}");
    drop(agent);
    assert!(!xhr_wrapped(), "shutdown restores XMLHttpRequest");
}

#[wasm_bindgen_test]
fn the_wrapper_returns_what_fetch_returns_and_rethrows_what_it_throws() {
    fake_fetch("pending");
    let agent = start(&[("trackMeasures", JsValue::FALSE)]);
    let returned = page_fetch(&"/x".into(), &JsValue::UNDEFINED).expect("returns");
    assert!(Object::is(&returned, &pending_promise()), "the very same promise object");
    drop(agent);

    fake_fetch("throw");
    let agent = start(&[("trackMeasures", JsValue::FALSE)]);
    let thrown = page_fetch(&"/x".into(), &JsValue::UNDEFINED).expect_err("rethrown");
    assert!(Object::is(&thrown, &thrown_error()), "the very same error object");
    drop(agent);

    fake_fetch("resolve");
    let before = Reflect::get(&web_sys::window().expect("w"), &"fetch".into()).expect("fetch");
    let agent = start(&[]);
    let wrapped = Reflect::get(&web_sys::window().expect("w"), &"fetch".into()).expect("fetch");
    assert!(!Object::is(&before, &wrapped), "wrapped while running");
    drop(agent);
    let after = Reflect::get(&web_sys::window().expect("w"), &"fetch".into()).expect("fetch");
    assert!(Object::is(&before, &after), "shutdown restores the page's fetch");
    real_fetch();
}

/// The api metrics' routes in what was sent.
fn api_routes() -> Vec<String> {
    named(&sent_metrics(), "api").iter().filter_map(|m| m.route.clone()).collect()
}

async fn fetch_and_settle(input: &JsValue) {
    let promise = page_fetch(input, &JsValue::UNDEFINED).expect("fetch returns a promise");
    let _ = JsFuture::from(js_sys::Promise::from(promise)).await;
    sleep(50).await;
}

#[wasm_bindgen_test]
async fn a_request_a_listener_makes_is_not_timed_so_it_cannot_loop() {
    fake_fetch("resolve");
    let agent = start(&[("trackMeasures", JsValue::FALSE)]);
    // The usual web-vitals pattern: each metric posted to the page's own analytics.
    let listener = Function::new_with_args("m", "if (m.name === 'api') fetch('/analytics', { method: 'POST', body: JSON.stringify(m) });");
    agent.0.on_metric(listener.into());
    fetch_and_settle(&"/api/cart".into()).await;
    sleep(100).await;
    agent.0.flush();
    assert_eq!(api_routes(), ["/api/cart"], "the listener's own request is not timed");
    assert_eq!(fetch_calls().length(), 2, "the page's request and the listener's");
    real_fetch();
}

#[wasm_bindgen_test]
async fn page_code_run_while_a_request_is_read_may_call_the_agent() {
    fake_fetch("resolve");
    let agent = start(&[("trackMeasures", JsValue::FALSE)]);
    let handle = agent.0.clone();
    // fetch stringifies an input without `url`: here that runs page code that records a metric.
    let to_string = Closure::<dyn Fn() -> JsValue>::new(move || {
        handle.record("from.tostring".into(), 1.0.into(), JsValue::UNDEFINED).expect("record works from inside the wrapper");
        "/api/odd".into()
    });
    let input = Object::new();
    Reflect::set(&input, &"toString".into(), to_string.as_ref()).expect("set");
    fetch_and_settle(&input.into()).await;
    record(&agent, "afterwards", 1.0);
    agent.0.flush();
    let metrics = sent_metrics();
    assert_eq!((named(&metrics, "from.tostring").len(), named(&metrics, "afterwards").len()), (1, 1));
    assert_eq!(api_routes(), ["/api/odd"]);
    real_fetch();
}

#[wasm_bindgen_test]
async fn requests_are_timed_over_http_against_the_base_url() {
    fake_fetch("resolve");
    js_sys::eval("const b = document.createElement('base'); b.href = '/sub/'; document.head.prepend(b)").expect("base");
    let agent = start(&[("trackMeasures", JsValue::FALSE)]);
    fetch_and_settle(&"api/relative".into()).await;
    fetch_and_settle(&"data:text/plain,hello".into()).await;
    fetch_and_settle(&"blob:http://127.0.0.1/0f6b1c2e".into()).await;
    js_sys::eval("document.querySelector('base').remove()").expect("removed");
    agent.0.flush();
    assert_eq!(api_routes(), ["/sub/api/relative"], "relative to <base href>, and data: and blob: are not timed");
    real_fetch();
}

#[wasm_bindgen_test]
async fn a_start_that_failed_leaves_the_next_one_the_pages_current_fetch() {
    let run = |js: &str| js_sys::eval(js).expect("eval");
    fake_fetch("resolve");
    if let Some(left_running) = LAST.with(|l| l.borrow_mut().take()) {
        left_running.shutdown();
    }
    assert!(init(options(&[("batchSize", num(0.0))])).is_err(), "a bad option: no agent");
    // Another script wraps fetch before the next start.
    run("window.__otherCalls = 0; const f = window.fetch; window.fetch = function () { window.__otherCalls++; return f.apply(this, arguments); }");
    let agent = start(&[("trackMeasures", JsValue::FALSE)]);
    fetch_and_settle(&"/api/chained".into()).await;
    agent.0.flush();
    assert_eq!(run("window.__otherCalls"), JsValue::from(1), "the other script's wrapper is still called");
    assert_eq!(api_routes(), ["/api/chained"]);
    drop(agent);
    real_fetch();
}

#[wasm_bindgen_test]
async fn after_shutdown_a_wrapper_another_script_wrapped_stays_and_ours_times_nothing() {
    let run = |js: &str| js_sys::eval(js).expect("eval");
    fake_fetch("resolve");
    run("window.__nativeOpen = XMLHttpRequest.prototype.open");
    let first = start(&[("trackMeasures", JsValue::FALSE)]);
    // Another script wraps fetch and XMLHttpRequest's open over the agent's wrappers.
    run("const f = window.fetch; window.fetch = function () { return f.apply(this, arguments); }; \
         const o = XMLHttpRequest.prototype.open; XMLHttpRequest.prototype.open = window.__otherOpen = function () { return o.apply(this, arguments); };");
    drop(first);
    assert_eq!(run("XMLHttpRequest.prototype.open === window.__otherOpen"), JsValue::TRUE, "the other script's XHR wrapper stays");
    let second = start(&[("trackMeasures", JsValue::FALSE)]);
    fetch_and_settle(&"/api/once".into()).await;
    second.0.flush();
    assert_eq!(api_routes(), ["/api/once"], "timed once: the first agent's wrapper, still in the chain, passes it on");
    drop(second);
    run("XMLHttpRequest.prototype.open = window.__nativeOpen");
    real_fetch();
}

#[wasm_bindgen_test]
fn selectors_are_web_vitals_selectors() {
    use pulse_agent::host::Js;
    // A running agent: the host binding has the wasm's memory.
    let _agent = start(&[("trackFetch", JsValue::FALSE), ("trackMeasures", JsValue::FALSE)]);
    let long_id = "i".repeat(120);
    let html = format!(
        r#"<section id="s"><div class="b a b"><span>hi</span><svg class="icon z"><path class="p"></path></svg></div></section>
        <div class="outer"><div class="x-very-long-class-name-number-one x-very-long-class-name-number-two"><em class="x-very-long-class-name-number-three">!</em></div></div>
        <b><i id="{long_id}"></i></b>"#
    );
    let root = js_sys::eval("const r = document.createElement('div'); document.body.append(r); r").expect("root");
    Reflect::set(&root, &"innerHTML".into(), &html.into()).expect("html");
    let query = Function::new_with_args("r, css", "return css ? r.querySelector(css) : r.querySelector('span').firstChild");
    let select = |css: &str| pulse_agent::report::selector(Js::hold(&query.call2(&JsValue::NULL, &root, &css.into()).expect("query")));
    assert_eq!(select("span").as_deref(), Some("#s>div.a.b>span"), "classes sorted, no repeats, up to an id");
    assert_eq!(select("path").as_deref(), Some("#s>div.a.b>svg.icon.z>path.p"), "SVG classes too");
    assert_eq!(select("").as_deref(), Some("#s>div.a.b>span>TEXT"), "a text node");
    assert_eq!(select("em").as_deref(), Some("em.x-very-long-class-name-number-three"), "the parent would pass 99 characters");
    assert_eq!(select("i"), Some(format!("#{long_id}")), "the first step whole");
    assert_eq!(select("b").as_deref(), Some("html>body>div>b"), "up to the document");
    js_sys::Reflect::apply(&Reflect::get(&root, &"remove".into()).expect("remove").into(), &root, &js_sys::Array::new()).expect("removed");
    assert_eq!(select("span").as_deref(), Some("#s>div.a.b>span"), "detached: as far as it goes");
    assert_eq!(select("b").as_deref(), Some("div>b"), "detached: as far as it goes");
    assert_eq!(pulse_agent::report::selector(Js::hold(&JsValue::NULL)), None);
}

#[wasm_bindgen_test]
fn lcp_resources_are_found_in_the_agents_own_buffer_newest_first() {
    use pulse_agent::host::{self, Js};
    use pulse_agent::lcp::Resources;
    let _agent = start(&[("trackFetch", JsValue::FALSE), ("trackMeasures", JsValue::FALSE)]);
    let entry = |name: &str, request_start: f64, start_time: f64| {
        let o = Object::new();
        Reflect::set(&o, &"name".into(), &name.into()).expect("set");
        Reflect::set(&o, &"requestStart".into(), &request_start.into()).expect("set");
        Reflect::set(&o, &"startTime".into(), &start_time.into()).expect("set");
        Js::hold(&o)
    };
    let mut resources = Resources::default();
    resources.entry(entry("/dup", 5.0, 1.0));
    resources.entry(entry("/x", 0.0, 7.0));
    resources.entry(entry("/dup", 50.0, 1.0));
    for i in 0..47 {
        resources.entry(entry(&format!("/r{i}"), 100.0, 100.0));
    }
    let found = |resources: &Resources, url: &str, before: f64| {
        let e = resources.find(url, before);
        (host::kind(e) != 0).then(|| host::num(e, "requestStart"))
    };
    assert_eq!(
        (found(&resources, "/dup", 40.0), found(&resources, "/dup", 60.0), found(&resources, "/dup", 4.0)),
        (Some(5.0), Some(50.0), None),
        "the latest that started by then"
    );
    assert_eq!((found(&resources, "/x", 6.0), found(&resources, "/x", 8.0)), (None, Some(0.0)), "no requestStart: its startTime");
    // Three more: the oldest three go (/dup at 5, /x, /dup at 50), the newest stay.
    for i in 47..50 {
        resources.entry(entry(&format!("/r{i}"), 100.0, 100.0));
    }
    assert_eq!(
        (found(&resources, "/dup", 60.0), found(&resources, "/x", 8.0), found(&resources, "/r49", 100.0), found(&resources, "/r0", 100.0)),
        (None, None, Some(100.0), Some(100.0))
    );
}

// ---- long animation frames ----

/// A page view's long animation frames are summed up once, when it is first hidden, where the
/// browser reports them (Chromium); elsewhere nothing is sent. (The page's earlier frames count
/// too: the observer is buffered.)
#[wasm_bindgen_test]
async fn long_frames_are_summed_up_once_per_page_view() {
    let _agent = start(&[("batchSize", num(500.0)), ("trackFetch", JsValue::FALSE)]);
    JsFuture::from(block_soon(150.0)).await.expect("a long task");
    JsFuture::from(next_frame()).await.expect("its frame ends");
    sleep(200).await;
    dispatch("pagehide", Some(false));
    dispatch("pagehide", Some(false));
    let metrics = sent_metrics();
    if supports("long-animation-frame") {
        let value = |name: &str| {
            let found = named(&metrics, name);
            assert_eq!(found.len(), 1, "{name} once per page view: {metrics:?}");
            found[0].value.unwrap_or(f64::NAN)
        };
        let frames = value("page.long_frames");
        assert!(frames >= 1.0 && frames == frames.floor(), "{frames} frames");
        assert!(value("page.long_frame_blocking") >= 100.0, "the 150 ms task blocks for 100 ms beyond 50");
        assert!(value("page.long_frame_script") >= 140.0, "{metrics:?}");
        let script = named(&metrics, "page.long_frame_script")[0].tags.as_ref().and_then(|t| t.get("script").cloned());
        assert!(script.as_deref().is_some_and(|s| !s.is_empty() && !s.contains('?')), "its route: {script:?}");
    } else {
        assert!(metrics.iter().all(|m| !m.name.starts_with("page.long_frame")), "{metrics:?}");
    }
}

// ---- vitals on a page that paints and shifts ----

#[wasm_bindgen_test]
async fn vitals_are_observed_and_reported_on_hide() {
    let agent = start(&[("batchSize", num(500.0)), ("trackFetch", JsValue::FALSE)]);
    let seen: Rc<RefCell<Vec<JsValue>>> = Rc::default();
    let sink = seen.clone();
    let listener = Closure::<dyn FnMut(JsValue)>::new(move |m| sink.borrow_mut().push(m));
    agent.0.on_metric(listener.as_ref().clone());
    JsFuture::from(paint_and_shift()).await.expect("page content");
    sleep(200).await;
    dispatch("pagehide", Some(false));
    let metrics = sent_metrics();

    let fcp = named(&metrics, "FCP");
    assert_eq!(fcp.len(), 1, "{metrics:?}");
    let fcp = fcp[0];
    assert!(fcp.value.is_some_and(|v| v > 0.0 && v < 60_000.0));
    assert_eq!(fcp.delta, fcp.value, "first report: delta = value");
    assert!(fcp.id.as_deref().is_some_and(|id| id.starts_with("v1-")));
    assert!(matches!(fcp.rating.as_deref(), Some("good" | "needs-improvement" | "poor")));

    let ttfb = named(&metrics, "TTFB");
    assert_eq!(ttfb.len(), 1);
    assert!(ttfb[0].value.is_some_and(|v| v >= 0.0 && v <= fcp.value.unwrap_or_default()), "TTFB ≤ FCP");
    let attribution = ttfb[0].attribution.as_ref().expect("TTFB attribution");
    let parts: f64 = ["waitingDuration", "cacheDuration", "dnsDuration", "connectionDuration", "requestDuration"]
        .iter()
        .map(|k| match attribution.get(*k) {
            Some(AttrValue::Num(n)) => *n,
            _ => panic!("TTFB attribution lacks {k}"),
        })
        .sum();
    assert!((parts - ttfb[0].value.unwrap_or_default()).abs() < 0.01, "phases add up to TTFB");

    // The page load, once: DOMContentLoaded and load-event end from the navigation entry, and the
    // resources loaded by then (the test page loads its script and its wasm at least).
    let value = |name: &str| {
        let found = named(&metrics, name);
        assert_eq!(found.len(), 1, "{name} once: {metrics:?}");
        found[0].value.unwrap_or(f64::NAN)
    };
    let (dcl, load) = (value("page.dom_content_loaded"), value("page.load"));
    assert!(ttfb[0].value.is_some_and(|t| t <= dcl) && dcl <= load && load < 60_000.0, "TTFB ≤ DCL {dcl} ≤ load {load}");
    // Resources only add up: what was counted at the load is at most what the browser lists now.
    let resources = value("page.resources");
    let listed = js_sys::eval("performance.getEntriesByType('resource').length").ok().and_then(|v| v.as_f64()).unwrap_or(0.0);
    assert!(resources >= 2.0 && resources == resources.floor() && resources <= listed, "{resources} resources of {listed}");
    let bytes = value("page.resource_bytes");
    let transferred = js_sys::eval("performance.getEntriesByType('resource').reduce((n, r) => n + Math.max(r.transferSize || 0, 0), 0)")
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    assert!(bytes == bytes.floor() && bytes <= transferred, "{bytes} bytes of {transferred}");
    let slowest: Vec<_> = metrics.iter().filter(|m| m.name.starts_with("page.slowest.")).collect();
    assert!(!slowest.is_empty() && slowest.len() as f64 <= resources, "{slowest:?}");
    assert!(slowest.iter().all(|m| m.tags.as_ref().is_some_and(|t| t.get("resource").is_some_and(|r| !r.is_empty()))), "{slowest:?}");

    if supports("largest-contentful-paint") {
        let lcp = named(&metrics, "LCP");
        assert_eq!(lcp.len(), 1, "LCP reported once, on hide");
        assert!(lcp[0].value.unwrap_or_default() >= fcp.value.unwrap_or_default(), "LCP ≥ FCP");
        let target = lcp[0].attribution.as_ref().and_then(|a| a.get("target"));
        assert_eq!(target, Some(&AttrValue::Str("#content>p.big.hero".into())), "web-vitals' selector: classes sorted");
    } else {
        assert!(named(&metrics, "LCP").is_empty());
    }
    if supports("layout-shift") {
        let cls = named(&metrics, "CLS");
        assert_eq!(cls.len(), 1);
        assert!(cls[0].value.is_some_and(|v| v > 0.0), "the banner shifted the text");
        let target = cls[0].attribution.as_ref().and_then(|a| a.get("largestShiftTarget"));
        assert!(matches!(target, Some(AttrValue::Str(s)) if s.contains("hero")), "{target:?}");
    } else {
        assert!(named(&metrics, "CLS").is_empty(), "no layout-shift entries: no CLS, and nothing threw");
    }
    assert!(named(&metrics, "INP").is_empty(), "no interaction: no INP");
    assert_eq!(seen.borrow().len(), metrics.len(), "onMetric saw each metric sent");

    // Hidden again with nothing new: CLS and LCP are not reported twice.
    dispatch("pagehide", Some(false));
    assert_eq!(sent_metrics().len(), metrics.len());
}

#[wasm_bindgen_test]
async fn a_back_forward_cache_restore_starts_a_new_page_view() {
    let agent = start(&[("trackFetch", JsValue::FALSE), ("trackMeasures", JsValue::FALSE)]);
    sleep(100).await;
    dispatch("pagehide", Some(true));
    let first_page = agent.0.page().expect("page");
    dispatch("pageshow", Some(true));
    JsFuture::from(next_frame()).await.expect("frame");
    sleep(50).await;
    dispatch("pagehide", Some(true));
    assert_ne!(agent.0.page().expect("page"), first_page);
    let beacons = sent();
    let restored: Vec<&Beacon> = beacons.iter().filter(|b| b.nav == NavigationType::BackForwardCache).collect();
    assert!(!restored.is_empty());
    let metrics: Vec<&Metric> = restored.iter().flat_map(|b| &b.metrics).collect();
    let ttfb: Vec<_> = metrics.iter().filter(|m| m.name == "TTFB").collect();
    assert_eq!(ttfb.len(), 1);
    assert_eq!(ttfb[0].value, Some(0.0), "TTFB is 0 after a restore");
    let fcp: Vec<_> = metrics.iter().filter(|m| m.name == "FCP").collect();
    assert_eq!(fcp.len(), 1, "FCP measured to the next paint");
    assert!(fcp[0].value.is_some_and(|v| (0.0..5_000.0).contains(&v)));
    assert!(restored.iter().all(|b| b.page != first_page));
    assert!(beacons.iter().any(|b| b.page == first_page && b.nav != NavigationType::BackForwardCache));
}

// ---- web-vitals' rules found by replaying its end-to-end scenarios ----

#[wasm_bindgen_test]
async fn a_page_hidden_before_the_agent_started_reports_no_paint_metrics() {
    // The browser's buffered visibility-state entries say the page was hidden at 1 ms, before its
    // first paint (a tab opened in the background): web-vitals reports no FCP, LCP or CLS.
    fake_entries("visibility-state", r#"[{"name":"visible","startTime":0},{"name":"hidden","startTime":1}]"#);
    let agent = start(&[("trackFetch", JsValue::FALSE), ("trackMeasures", JsValue::FALSE)]);
    JsFuture::from(paint_and_shift()).await.expect("page content");
    dispatch("pagehide", Some(false));
    restore_entries();
    let metrics = sent_metrics();
    for name in ["FCP", "LCP", "CLS"] {
        assert!(named(&metrics, name).is_empty(), "{name}: {metrics:?}");
    }
    assert_eq!(named(&metrics, "TTFB").len(), 1, "TTFB does not depend on visibility");
    drop(agent);

    // The same page without that entry reports its paint.
    let _agent = start(&[("trackFetch", JsValue::FALSE), ("trackMeasures", JsValue::FALSE)]);
    sleep(50).await;
    dispatch("pagehide", Some(false));
    assert_eq!(named(&sent_metrics(), "FCP").len(), 1);
}

#[wasm_bindgen_test]
async fn a_restored_page_view_with_only_fast_interactions_reports_a_small_inp() {
    fake_interaction_count(5.0);
    let _agent = start(&[("trackFetch", JsValue::FALSE), ("trackMeasures", JsValue::FALSE)]);
    sleep(50).await;
    dispatch("pageshow", Some(true));
    JsFuture::from(next_frame()).await.expect("frame");
    // Two interactions since the restore, none long enough for the observer (40 ms).
    fake_interaction_count(7.0);
    dispatch("pagehide", Some(true));
    restore_interaction_count();
    let beacons = sent();
    let inp: Vec<(NavigationType, Option<f64>)> =
        beacons.iter().flat_map(|b| b.metrics.iter().filter(|m| m.name == "INP").map(move |m| (b.nav, m.value))).collect();
    assert_eq!(inp, vec![(NavigationType::BackForwardCache, Some(8.0))], "web-vitals 6 reports 8 ms; the load itself reports none");
    let metrics = sent_metrics();
    let attribution = named(&metrics, "INP")[0].attribution.clone().unwrap_or_default();
    let number = |k: &str| match attribution.get(k) {
        Some(AttrValue::Num(n)) => Some(*n),
        _ => None,
    };
    assert_eq!(
        (number("inputDelay"), number("processingDuration"), number("presentationDelay")),
        (Some(0.0), Some(0.0), Some(8.0)),
        "web-vitals' placeholder split"
    );
    assert_eq!(attribution.get("loadState"), Some(&AttrValue::Str("complete".into())));
}

#[wasm_bindgen_test]
async fn a_page_restored_while_hidden_still_reports_its_lcp_with_web_vitals_default_attribution() {
    let run = |js: &str| js_sys::eval(js).expect("eval");
    let _agent = start(&[("trackFetch", JsValue::FALSE), ("trackMeasures", JsValue::FALSE)]);
    sleep(50).await;
    dispatch("pagehide", Some(true));
    run("Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true })");
    dispatch("pageshow", Some(true));
    JsFuture::from(next_frame()).await.expect("frame");
    run("delete document.visibilityState");
    dispatch("pagehide", Some(true));
    let beacons = sent();
    let restored: Vec<&Metric> = beacons.iter().filter(|b| b.nav == NavigationType::BackForwardCache).flat_map(|b| &b.metrics).collect();
    let vital = |name: &str| *restored.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name} after the restore: {restored:?}"));
    let (fcp, lcp) = (vital("FCP"), vital("LCP"));
    assert!([fcp, lcp].iter().all(|m| m.value.is_some_and(|v| (0.0..5_000.0).contains(&v))), "both measured to the next paint");
    let attribution = |m: &Metric, k: &str| m.attribution.as_ref().and_then(|a| a.get(k)).cloned();
    let value = AttrValue::Num(lcp.value.expect("a value"));
    assert_eq!(attribution(lcp, "elementRenderDelay"), Some(value), "no entry: all of it render delay");
    assert_eq!(attribution(lcp, "timeToFirstByte"), Some(AttrValue::Num(0.0)));
    assert_eq!(attribution(fcp, "firstByteToFCP"), fcp.value.map(AttrValue::Num), "and TTFB 0");
    assert_eq!(attribution(fcp, "loadState"), Some(AttrValue::Str("complete".into())));
}

#[wasm_bindgen_test]
async fn ttfb_is_split_as_web_vitals_splits_it() {
    // A service worker started at 10 ms; the connection ended at 40 ms, the request went at 45.
    fake_entries(
        "navigation",
        r#"[{"type":"navigate","activationStart":0,"workerStart":10,"fetchStart":12,"domainLookupStart":20,
            "connectStart":25,"connectEnd":40,"requestStart":45,"responseStart":100}]"#,
    );
    let _agent = start(&[("trackFetch", JsValue::FALSE), ("trackMeasures", JsValue::FALSE)]);
    sleep(100).await;
    dispatch("pagehide", Some(false));
    restore_entries();
    let metrics = sent_metrics();
    let ttfb = named(&metrics, "TTFB");
    assert_eq!(ttfb.len(), 1);
    let attribution = ttfb[0].attribution.clone().unwrap_or_default();
    let split: Vec<Option<&AttrValue>> = ["waitingDuration", "cacheDuration", "dnsDuration", "connectionDuration", "requestDuration"]
        .iter()
        .map(|k| attribution.get(*k))
        .collect();
    let expected = [10.0, 10.0, 5.0, 15.0, 60.0].map(AttrValue::Num);
    assert_eq!(split, expected.iter().map(Some).collect::<Vec<_>>(), "from workerStart; the request from connectEnd");
    assert_eq!(ttfb[0].value, Some(100.0));
}

#[wasm_bindgen_test]
async fn without_a_usable_navigation_entry_no_ttfb_is_reported_even_after_a_restore() {
    fake_entries("navigation", r#"[{"type":"navigate","responseStart":0,"activationStart":0}]"#);
    let _agent = start(&[("trackFetch", JsValue::FALSE), ("trackMeasures", JsValue::FALSE)]);
    sleep(100).await;
    dispatch("pageshow", Some(true));
    JsFuture::from(next_frame()).await.expect("frame");
    dispatch("pagehide", Some(true));
    restore_entries();
    let metrics = sent_metrics();
    assert!(named(&metrics, "TTFB").is_empty(), "{metrics:?}");
    assert_eq!(named(&metrics, "FCP").len(), 1, "the restore itself is measured");
}

#[wasm_bindgen_test]
fn a_handle_drives_only_the_agent_it_was_returned_by() {
    let old = start(&[]);
    let kept = old.0.clone();
    drop(old); // shutdown()
    let new = start(&[]);
    assert!(kept.record("x".into(), 1.0.into(), JsValue::UNDEFINED).is_err(), "the old handle's agent is shut down");
    assert_eq!(kept.page(), None);
    kept.shutdown(); // does not stop the new agent
    record(&new, "still.running", 1.0);
    new.0.flush();
    assert_eq!(named(&sent_metrics(), "still.running").len(), 1);
}

#[wasm_bindgen_test]
fn a_listener_that_shuts_the_agent_down_leaves_the_other_listeners_their_metric_and_it_is_sent() {
    let agent = start(&[]);
    let handle = agent.0.clone();
    let stopper = Closure::<dyn Fn(JsValue)>::new(move |_| handle.shutdown());
    let seen = js_sys::Array::new();
    let into = seen.clone();
    let watcher = Closure::<dyn Fn(JsValue)>::new(move |m: JsValue| {
        into.push(&Reflect::get(&m, &"name".into()).unwrap_or_default());
    });
    agent.0.on_metric(stopper.as_ref().clone());
    agent.0.on_metric(watcher.as_ref().clone());
    record(&agent, "last.words", 1.0);
    // The shutdown reports the page view's vitals first (to both listeners); then the metric that
    // was being handed out reaches the second listener too.
    assert_eq!(seen.to_vec().last(), Some(&JsValue::from("last.words")), "the second listener still saw the metric: {seen:?}");
    assert_eq!(named(&sent_metrics(), "last.words").len(), 1, "and it was sent, after shutdown's last beacon");
    assert!(agent.0.record("after".into(), 1.0.into(), JsValue::UNDEFINED).is_err(), "and the agent is shut down");
    assert!(agent.0.sampled(), "sampled still says what the session decided");
    assert!(stat(&agent, "measured") >= 1.0, "stats() still gives the last counts");
}
