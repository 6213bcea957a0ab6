//! Small helpers over the page's APIs: reading entry fields, listeners and observers that undo
//! themselves when dropped, the navigation entry, selectors for attribution, random ids.
//!
//! Entry types that web-sys does not model (`largest-contentful-paint`, `layout-shift`, `event`)
//! are read field by field with `Reflect`; a missing field reads as `NaN` or `None`, so a browser
//! without a feature reports nothing instead of throwing.

use js_sys::{Array, Function, Object, Reflect};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Document, Event, EventTarget, PerformanceObserver, PerformanceObserverEntryList, Window};

thread_local! {
    /// The agent's own clock: nesting depth, start of the outermost timed call, total and
    /// longest main-thread time spent in agent code, ms.
    static CLOCK: std::cell::Cell<(u32, f64, f64, f64)> = const { std::cell::Cell::new((0, 0.0, 0.0, 0.0)) };
}

/// Runs `f` (agent code called by the browser or the page) on the agent's clock.
pub(crate) fn timed<R>(f: impl FnOnce() -> R) -> R {
    let (depth, start, busy, longest) = CLOCK.get();
    let start = if depth == 0 { now() } else { start };
    CLOCK.set((depth + 1, start, busy, longest));
    let result = f();
    let (depth, start, busy, longest) = CLOCK.get();
    if depth == 1 {
        let spent = now() - start;
        CLOCK.set((0, 0.0, busy + spent, longest.max(spent)));
    } else {
        CLOCK.set((depth - 1, start, busy, longest));
    }
    result
}

/// Total and longest main-thread time spent in agent code since [`reset_clock`], ms.
pub(crate) fn clock() -> (f64, f64) {
    let (_, _, busy, longest) = CLOCK.get();
    (busy, longest)
}

pub(crate) fn reset_clock() {
    CLOCK.set((0, 0.0, 0.0, 0.0));
}

pub(crate) fn window() -> Option<Window> {
    web_sys::window()
}

pub(crate) fn document() -> Option<Document> {
    window()?.document()
}

/// `obj[key]`, or `undefined`. Primitives (`undefined`, strings …) give `undefined` without
/// calling `Reflect.get`, which would throw — and a thrown error costs far more than the lookup.
pub(crate) fn get(obj: &impl AsRef<JsValue>, key: &str) -> JsValue {
    let obj = obj.as_ref();
    if !obj.is_object() && !obj.is_function() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// `obj[key]` as a number; `NaN` when it is missing or not a number.
pub(crate) fn num(obj: &impl AsRef<JsValue>, key: &str) -> f64 {
    get(obj, key).as_f64().unwrap_or(f64::NAN)
}

/// `obj[key]` as a string, if it is one.
pub(crate) fn text(obj: &impl AsRef<JsValue>, key: &str) -> Option<String> {
    get(obj, key).as_string()
}

pub(crate) fn set(obj: &JsValue, key: &str, value: &JsValue) {
    // Setting a property on a plain object cannot fail.
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

/// `performance.now()`, ms since the time origin.
pub(crate) fn now() -> f64 {
    window().and_then(|w| w.performance()).map_or(0.0, |p| p.now())
}

/// The client's wall clock, epoch ms.
pub(crate) fn epoch_ms() -> f64 {
    js_sys::Date::now()
}

/// Epoch ms of a `performance.now()`-based time.
pub(crate) fn epoch_of(time: f64) -> f64 {
    epoch_ms() - (now() - time)
}

/// The page's navigation timing entry, when the browser has one.
pub(crate) fn navigation_entry() -> Option<JsValue> {
    let entries = window()?.performance()?.get_entries_by_type("navigation");
    let entry = entries.get(0);
    (!entry.is_undefined()).then_some(entry)
}

/// `activationStart` of the navigation (non-zero only for prerendered pages that were activated).
pub(crate) fn activation_start() -> f64 {
    navigation_entry().map(|e| num(&e, "activationStart")).filter(|v| v.is_finite()).unwrap_or(0.0)
}

/// `document.prerendering`.
pub(crate) fn prerendering() -> bool {
    document().is_some_and(|d| get(&d, "prerendering").is_truthy())
}

pub(crate) fn is_hidden() -> bool {
    document().is_some_and(|d| d.visibility_state() == web_sys::VisibilityState::Hidden)
}

/// Where the page load stood at `time`, as web-vitals' attribution reports it.
pub(crate) fn load_state(time: f64) -> &'static str {
    if document().is_some_and(|d| d.ready_state() == "loading") {
        return "loading";
    }
    let Some(nav) = navigation_entry() else { return "complete" };
    let before = |key: &str| {
        let mark = num(&nav, key);
        mark.is_nan() || mark <= 0.0 || time < mark
    };
    if time < num(&nav, "domInteractive") {
        "loading"
    } else if before("domContentLoadedEventStart") {
        "dom-interactive"
    } else if before("domComplete") {
        "dom-content-loaded"
    } else {
        "complete"
    }
}

/// A short CSS-like path to `node` (`main>div.hero>img#banner`), at most 100 characters, for
/// attribution. Walks up until an element with an id or the `<body>`.
pub(crate) fn selector(node: &JsValue) -> Option<String> {
    const MAX: usize = 100;
    let mut parts: Vec<String> = Vec::new();
    let mut len = 0;
    let mut current = node.clone();
    while let Some(element) = current.dyn_ref::<web_sys::Element>() {
        let mut part = element.local_name();
        if part == "html" || part == "body" {
            if parts.is_empty() {
                parts.push(part);
            }
            break;
        }
        let id = element.id();
        if !id.is_empty() {
            part.push('#');
            part.push_str(&id);
        } else {
            for class in element.class_name().split_whitespace() {
                part.push('.');
                part.push_str(class);
            }
        }
        if len + part.len() + 1 > MAX && !parts.is_empty() {
            break;
        }
        len += part.len() + 1;
        parts.push(part);
        if !id.is_empty() {
            break;
        }
        current = get(&current, "parentElement");
    }
    if parts.is_empty() {
        // A text node: describe its parent element.
        let parent = get(node, "parentElement");
        return if parent.is_null() || parent.is_undefined() { None } else { selector(&parent) };
    }
    parts.reverse();
    Some(pulse_protocol::route::truncate(parts.join(">"), MAX))
}

/// An event listener that removes itself when dropped.
pub(crate) struct Listener {
    target: EventTarget,
    kind: &'static str,
    capture: bool,
    callback: Closure<dyn FnMut(Event)>,
}

impl Listener {
    pub(crate) fn new(target: &EventTarget, kind: &'static str, capture: bool, f: impl FnMut(Event) + 'static) -> Listener {
        let mut f = f;
        let callback = Closure::<dyn FnMut(Event)>::new(move |event| timed(|| f(event)));
        let _ = target.add_event_listener_with_callback_and_bool(kind, callback.as_ref().unchecked_ref(), capture);
        Listener { target: target.clone(), kind, capture, callback }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.target.remove_event_listener_with_callback_and_bool(self.kind, self.callback.as_ref().unchecked_ref(), self.capture);
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind)
    }
}

/// A `PerformanceObserver` for one entry type that disconnects when dropped.
pub(crate) struct Observer {
    observer: PerformanceObserver,
    _callback: Closure<dyn FnMut(PerformanceObserverEntryList)>,
}

impl Observer {
    /// Observes `kind` (buffered, so entries from before the agent loaded count), with extra
    /// options such as `durationThreshold`. `None` when the browser lacks the entry type.
    pub(crate) fn new(kind: &str, extra: &[(&str, f64)], mut f: impl FnMut(Array) + 'static) -> Option<Observer> {
        let types = get(&get(&window()?, "PerformanceObserver"), "supportedEntryTypes");
        let includes = get(&types, "includes").dyn_into::<Function>().ok()?;
        if !includes.call1(&types, &JsValue::from_str(kind)).ok()?.is_truthy() {
            return None;
        }
        let callback = Closure::<dyn FnMut(PerformanceObserverEntryList)>::new(move |list: PerformanceObserverEntryList| {
            timed(|| f(list.get_entries()));
        });
        let observer = PerformanceObserver::new(callback.as_ref().unchecked_ref()).ok()?;
        let options = Object::new();
        set(&options, "type", &JsValue::from_str(kind));
        set(&options, "buffered", &JsValue::TRUE);
        for (key, value) in extra {
            set(&options, key, &JsValue::from_f64(*value));
        }
        // Some browsers throw for options they do not know; then this metric is simply not measured.
        let observed =
            Reflect::get(&observer, &JsValue::from_str("observe")).ok()?.dyn_into::<Function>().ok()?.call1(&observer, &options).is_ok();
        observed.then_some(Observer { observer, _callback: callback })
    }

    /// Entries recorded but not yet delivered to the callback (read before reporting on hide).
    pub(crate) fn take_records(&self) -> Array {
        self.observer.take_records()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.observer.disconnect();
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// Runs `f` after the next paint: two animation frames (how web-vitals times FCP and LCP after a
/// back/forward-cache restore).
pub(crate) fn after_next_paint(f: impl FnOnce() + 'static) {
    let Some(w) = window() else { return };
    let second = Closure::once_into_js(move || {
        if let Some(w) = window() {
            let _ = w.request_animation_frame(Closure::once_into_js(move || timed(f)).unchecked_ref());
        }
    });
    let _ = w.request_animation_frame(second.unchecked_ref());
}

/// Calls `f` with the outcome of `promise`, fulfilled or rejected (a rejection handled here
/// leaves the page's own handling of the same promise unchanged).
pub(crate) fn on_settle(promise: &JsValue, f: impl FnOnce(JsValue) + 'static) {
    let promise = js_sys::Promise::resolve(promise);
    let settle = Closure::once_into_js(move |outcome| timed(|| f(outcome)));
    if let Ok(then) = get(&promise, "then").dyn_into::<Function>() {
        let _ = then.call2(&promise, &settle, &settle);
    }
}

/// A random id of 16 base-36 characters (about 82 bits).
pub(crate) fn random_id() -> String {
    let mut out = String::with_capacity(16);
    for _ in 0..2 {
        let mut n = (js_sys::Math::random() * 36f64.powi(8)) as u64;
        for _ in 0..8 {
            out.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
            n /= 36;
        }
    }
    out
}
