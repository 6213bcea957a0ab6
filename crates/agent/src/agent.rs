//! The running agent: one per page, reachable from every browser callback through [`current`].
//!
//! Callbacks hold no reference to the agent (so nothing keeps it alive after `shutdown`, and
//! there are no reference cycles); they look it up when they fire and do nothing when it is gone.
//! No `RefCell` borrow is held while calling into the page's JavaScript (`onMetric` listeners,
//! `beforeSend`), so those may call back into the agent.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::Function;
use pulse_protocol::{AttrValue, NavigationType, Vital};
use wasm_bindgen::{JsCast, JsValue};

use crate::browser::{self, Listener};
use crate::config::Config;
use crate::queue::Queue;
use crate::session::{Session, STORAGE_KEY};
use crate::transport::{self, Context, Queued, MAX_PAYLOAD_BYTES};
use crate::wire::Metric;
use crate::{cls, fcp, fetch, fid, inp, lcp, measure, routes, ttfb, wire, xhr};

/// Longest time session activity stays unwritten to `sessionStorage`, ms (far below the 30 min
/// idle rollover, so a page that dies without a hide loses nothing that matters).
const SESSION_SAVE_INTERVAL_MS: f64 = 5_000.0;

thread_local! {
    static CURRENT: RefCell<Option<Rc<Agent>>> = const { RefCell::new(None) };
}

/// The running agent, if any.
pub(crate) fn current() -> Option<Rc<Agent>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// What the agent did, for the page (`stats()`) and for tests.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Metrics measured or recorded (before sampling and `beforeSend`).
    pub measured: u32,
    /// Metrics handed to the browser for sending.
    pub sent: u32,
    pub beacons: u32,
    /// Metrics put back after a failed send.
    pub retried: u32,
    pub dropped_unsampled: u32,
    pub dropped_by_before_send: u32,
    pub before_send_errors: u32,
    pub dropped_queue_full: u32,
    pub dropped_too_large: u32,
    /// `record` calls refused for bad input.
    pub rejected_records: u32,
    /// Main-thread time spent in agent code (callbacks, wrapper, API calls), ms.
    pub busy_ms: f64,
    /// The longest single stretch of agent code, ms.
    pub longest_ms: f64,
}

/// One instance of a metric (web-vitals' `id`): what was last reported, for `delta`.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    id: String,
    reported: Option<f64>,
}

impl Instance {
    pub(crate) fn new() -> Instance {
        Instance { id: String::from("v1-") + &browser::random_id(), reported: None }
    }

    /// The metric to report for `value`, or `None` when it equals what was last reported.
    pub(crate) fn metric(&mut self, vital: Vital, value: f64, attribution: Attribution) -> Option<Metric> {
        if self.reported == Some(value) || !value.is_finite() {
            return None;
        }
        let delta = value - self.reported.unwrap_or(0.0);
        self.reported = Some(value);
        Some(Metric {
            name: vital.name().to_owned(),
            value: Some(value),
            at: browser::epoch_ms(),
            rating: Some(vital.thresholds().rate(value).as_str()),
            delta: Some(delta),
            id: Some(self.id.clone()),
            attribution: attribution.0,
            ..Metric::default()
        })
    }
}

/// Attribution details of one vital (web-vitals' attribution build, flattened).
#[derive(Debug, Default)]
pub(crate) struct Attribution(Vec<(&'static str, AttrValue)>);

impl Attribution {
    pub(crate) fn num(mut self, key: &'static str, value: f64) -> Attribution {
        if value.is_finite() {
            self.0.push((key, AttrValue::Num(value)));
        }
        self
    }

    pub(crate) fn text(mut self, key: &'static str, value: Option<String>) -> Attribution {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            self.0.push((key, AttrValue::Str(value)));
        }
        self
    }
}

#[derive(Debug)]
pub(crate) struct Agent {
    pub config: Config,
    /// The page's origin (`https://shop.example`), read once.
    pub origin: String,
    /// `activationStart` of the navigation (prerendered pages measure from activation).
    pub activation_start: Cell<f64>,
    /// `performance.now()` time the page was first hidden; 0 if it loaded hidden, ∞ while visible.
    first_hidden: Cell<f64>,
    context: RefCell<Rc<Context>>,
    session: RefCell<Session>,
    /// When the session was last written to `sessionStorage`, epoch ms.
    session_saved_at: Cell<f64>,
    queue: RefCell<Queue<Queued>>,
    pub stats: RefCell<Stats>,
    listeners: RefCell<Vec<Function>>,
    /// Listeners, observers and timers that undo themselves when dropped.
    hooks: RefCell<Vec<Box<dyn Any>>>,
    /// The page's `fetch` before the agent wrapped it (beacons fall back to it).
    pub original_fetch: RefCell<Option<Function>>,
    pub fcp: RefCell<fcp::Watch>,
    pub lcp: RefCell<lcp::Watch>,
    pub cls: RefCell<cls::Watch>,
    pub inp: RefCell<inp::Watch>,
    pub fid: RefCell<fid::Watch>,
}

/// Starts the agent. Fails when one is already running.
pub(crate) fn start(config: Config) -> Result<Rc<Agent>, &'static str> {
    if current().is_some() {
        return Err("pulse.init: the agent is already running; call shutdown() on its handle first");
    }
    let now = browser::epoch_ms();
    let session = load_session(&config, now);
    let nav = navigation_type();
    let context = Context { session: session.id.clone(), page: browser::random_id(), url: page_url(&config), nav };
    let agent = Rc::new(Agent {
        queue: RefCell::new(Queue::new(config.batch_size)),
        origin: browser::window().and_then(|w| w.location().origin().ok()).unwrap_or_default(),
        config,
        activation_start: Cell::new(browser::activation_start()),
        first_hidden: Cell::new(if browser::is_hidden() && !browser::prerendering() { 0.0 } else { f64::INFINITY }),
        context: RefCell::new(Rc::new(context)),
        session: RefCell::new(session),
        session_saved_at: Cell::new(now),
        stats: RefCell::default(),
        listeners: RefCell::default(),
        hooks: RefCell::default(),
        original_fetch: RefCell::new(browser::window().map(|w| browser::get(&w, "fetch")).and_then(|f| f.dyn_into::<Function>().ok())),
        fcp: RefCell::new(fcp::Watch::new()),
        lcp: RefCell::new(lcp::Watch::new(f64::INFINITY)),
        cls: RefCell::new(cls::Watch::new()),
        inp: RefCell::new(inp::Watch::new()),
        fid: RefCell::new(fid::Watch::new()),
    });
    save_session(&agent.session.borrow());
    browser::reset_clock();
    CURRENT.with(|c| *c.borrow_mut() = Some(agent.clone()));
    if browser::prerendering() {
        // A prerendered page is measured from its activation (web-vitals' whenActivated).
        if let Some(document) = browser::document() {
            agent.hook(Listener::new(&document, "prerenderingchange", true, |_| {
                if let Some(agent) = current() {
                    agent.activation_start.set(browser::activation_start());
                    agent.measure();
                }
            }));
        }
    } else {
        agent.measure();
    }
    Ok(agent)
}

impl Agent {
    pub(crate) fn hook<T: 'static>(&self, hook: T) {
        self.hooks.borrow_mut().push(Box::new(hook));
    }

    pub(crate) fn first_hidden(&self) -> f64 {
        self.first_hidden.get()
    }

    /// Installs the observers, the fetch wrapper and the lifecycle listeners.
    fn measure(&self) {
        *self.lcp.borrow_mut() = lcp::Watch::new(self.first_hidden());
        fcp::start(self);
        lcp::start(self);
        cls::start(self);
        inp::start(self);
        fid::start(self);
        ttfb::start(self);
        if self.config.track_fetch {
            fetch::install(self);
            xhr::install(self);
        }
        if self.config.track_measures {
            measure::start(self);
        }
        if let Some(document) = browser::document() {
            self.hook(Listener::new(&document, "visibilitychange", true, |_| {
                if let Some(agent) = current() {
                    if browser::is_hidden() {
                        agent.hidden();
                    }
                }
            }));
        }
        if let Some(window) = browser::window() {
            // Safari does not always fire visibilitychange when a page is left; pagehide it does.
            self.hook(Listener::new(&window, "pagehide", true, |_| {
                if let Some(agent) = current() {
                    agent.hidden();
                }
            }));
            self.hook(Listener::new(&window, "pageshow", true, |event| {
                if browser::get(&event, "persisted").is_truthy() {
                    if let Some(agent) = current() {
                        agent.restored(event.time_stamp());
                    }
                }
            }));
        }
        self.hook(gloo_timers::callback::Interval::new(self.config.flush_interval_ms, || {
            if let Some(agent) = current() {
                browser::timed(|| agent.flush());
            }
        }));
    }

    /// The page was hidden (or is being left): report what is final on hide, then send.
    pub(crate) fn hidden(&self) {
        if self.first_hidden.get() == f64::INFINITY {
            self.first_hidden.set(browser::now());
        }
        fcp::take_pending(self);
        fid::take_pending(self);
        lcp::finalize(self, crate::lcp::Finalizer::Hidden);
        cls::report(self);
        inp::report(self);
        self.flush();
    }

    /// A back/forward-cache restore: a new page view whose metrics start over.
    fn restored(&self, event_time: f64) {
        self.flush();
        {
            let mut context = self.context.borrow_mut();
            let mut next = (**context).clone();
            next.page = browser::random_id();
            next.nav = NavigationType::BackForwardCache;
            *context = Rc::new(next);
        }
        self.first_hidden.set(if browser::is_hidden() { 0.0 } else { f64::INFINITY });
        ttfb::restored(self);
        fcp::restored(self, event_time);
        lcp::restored(self, event_time);
        cls::restored(self);
        inp::restored(self);
    }

    pub(crate) fn add_listener(&self, callback: Function) {
        self.listeners.borrow_mut().push(callback);
    }

    /// Takes one measured metric: listeners, sampling, `beforeSend`, queue.
    pub(crate) fn emit(&self, metric: Metric) {
        self.stats.borrow_mut().measured += 1;
        let listeners = self.listeners.borrow().clone();
        if !listeners.is_empty() {
            // Their own copy: a listener changing it does not change what is sent.
            let object = wire::metric(&metric);
            for listener in listeners {
                if let Err(error) = listener.call1(&JsValue::NULL, &object) {
                    web_sys::console::error_2(&JsValue::from_str("pulse: an onMetric callback threw"), &error);
                }
            }
        }
        let context = self.context_now();
        if !self.session.borrow().sampled {
            self.stats.borrow_mut().dropped_unsampled += 1;
            return;
        }
        let Some(metric) = self.before_send(wire::metric(&metric), &metric.name) else { return };
        let full = {
            let mut queue = self.queue.borrow_mut();
            let dropped = queue.dropped;
            let full = queue.push((context, metric));
            self.stats.borrow_mut().dropped_queue_full += queue.dropped - dropped;
            full
        };
        if full {
            self.flush();
        }
    }

    /// The page view a metric measured now belongs to: rolls the session over after 30 idle
    /// minutes and follows the page's path (single-page apps change it).
    fn context_now(&self) -> Rc<Context> {
        let now = browser::epoch_ms();
        let session_id = {
            let mut session = self.session.borrow_mut();
            let rolled = session.expired(now);
            if rolled {
                *session = Session::start(browser::random_id(), now, self.config.sample_rate, js_sys::Math::random());
            }
            session.last_active = now;
            // Storage writes are the costliest part of taking a metric: write a new session at
            // once, activity at most every few seconds (and at every send, see `flush`).
            if rolled || now - self.session_saved_at.get() >= SESSION_SAVE_INTERVAL_MS {
                save_session(&session);
                self.session_saved_at.set(now);
            }
            session.id.clone()
        };
        let url = page_url(&self.config);
        let mut context = self.context.borrow_mut();
        if context.session != session_id || context.url != url {
            let mut next = (**context).clone();
            next.session = session_id;
            next.url = url;
            *context = Rc::new(next);
        }
        context.clone()
    }

    /// Runs `beforeSend`. What it returns is sent as it is (the collector validates every field);
    /// it must stay the same metric, so the name may not change.
    fn before_send(&self, metric: JsValue, name: &str) -> Option<JsValue> {
        let Some(hook) = &self.config.before_send else { return Some(metric) };
        let outcome = hook.call1(&JsValue::NULL, &metric);
        let mut stats = self.stats.borrow_mut();
        match outcome {
            Ok(v) if v.is_null() || v.is_undefined() || v == JsValue::FALSE => {
                stats.dropped_by_before_send += 1;
                None
            }
            Ok(v) => match browser::text(&v, "name") {
                Some(changed) if changed == name => Some(v),
                _ => {
                    stats.before_send_errors += 1;
                    web_sys::console::warn_1(&JsValue::from_str(
                        "pulse: beforeSend must return the metric (same name, wire fields), null or false; the metric was dropped",
                    ));
                    None
                }
            },
            Err(error) => {
                // Dropped, not sent unscrubbed: beforeSend is where pages remove private data.
                stats.before_send_errors += 1;
                web_sys::console::error_2(&JsValue::from_str("pulse: beforeSend threw; the metric was dropped"), &error);
                None
            }
        }
    }

    /// Sends everything waiting.
    pub(crate) fn flush(&self) {
        save_session(&self.session.borrow());
        self.session_saved_at.set(browser::epoch_ms());
        let items = self.queue.borrow_mut().take();
        if items.is_empty() {
            return;
        }
        let config = &self.config;
        let (payloads, too_large) = transport::split(
            &items,
            |a, b| Rc::ptr_eq(&a.0, &b.0) || a.0 == b.0,
            config.batch_size,
            MAX_PAYLOAD_BYTES,
            |group| {
                let mut beacon = transport::envelope(config, &group[0].0);
                transport::describe_device(&mut beacon);
                transport::to_json(&beacon, group).unwrap_or_default()
            },
        );
        self.stats.borrow_mut().dropped_too_large += too_large.len() as u32;
        let fetch = self.original_fetch.borrow().clone();
        for (body, group) in payloads {
            {
                let mut stats = self.stats.borrow_mut();
                stats.beacons += 1;
                stats.sent += group.len() as u32;
            }
            transport::send(&config.endpoint, &body, fetch.as_ref(), move || {
                if let Some(agent) = current() {
                    agent.requeue(group);
                }
            });
        }
    }

    fn requeue(&self, group: Vec<Queued>) {
        let mut stats = self.stats.borrow_mut();
        stats.sent = stats.sent.saturating_sub(group.len() as u32);
        stats.retried += group.len() as u32;
        let mut queue = self.queue.borrow_mut();
        let dropped = queue.dropped;
        queue.requeue(group);
        stats.dropped_queue_full += queue.dropped - dropped;
    }

    pub(crate) fn sampled(&self) -> bool {
        self.session.borrow().sampled
    }

    pub(crate) fn session_id(&self) -> String {
        self.session.borrow().id.clone()
    }

    pub(crate) fn page_id(&self) -> String {
        self.context.borrow().page.clone()
    }
}

/// Stops the agent: sends what is waiting, removes every listener and observer, restores `fetch`.
pub(crate) fn shutdown() {
    let Some(agent) = current() else { return };
    agent.hidden();
    agent.hooks.borrow_mut().clear();
    agent.listeners.borrow_mut().clear();
    fcp::stop(&agent);
    lcp::stop(&agent);
    cls::stop(&agent);
    inp::stop(&agent);
    fid::stop(&agent);
    CURRENT.with(|c| *c.borrow_mut() = None);
}

/// The page's path as the envelope's `url`: the first matching route template, else normalised.
fn page_url(config: &Config) -> String {
    let path = browser::window().and_then(|w| w.location().pathname().ok()).unwrap_or_else(|| "/".to_owned());
    routes::apply(&config.routes, &path).unwrap_or_else(|| pulse_protocol::route::normalise_path(&path))
}

fn navigation_type() -> NavigationType {
    if browser::prerendering() || browser::activation_start() > 0.0 {
        return NavigationType::Prerender;
    }
    if browser::document().is_some_and(|d| browser::get(&d, "wasDiscarded").is_truthy()) {
        return NavigationType::Restore;
    }
    match browser::navigation_entry().and_then(|e| browser::text(&e, "type")).as_deref() {
        Some("reload") => NavigationType::Reload,
        Some("back_forward") => NavigationType::BackForward,
        _ => NavigationType::Navigate,
    }
}

fn storage() -> Option<web_sys::Storage> {
    // Throws in sandboxed frames and with storage disabled: then the session lasts for the page.
    browser::window()?.session_storage().ok()?
}

fn load_session(config: &Config, now: f64) -> Session {
    storage()
        .and_then(|s| s.get_item(STORAGE_KEY).ok()?)
        .and_then(|stored| Session::resume(&stored, now))
        .unwrap_or_else(|| Session::start(browser::random_id(), now, config.sample_rate, js_sys::Math::random()))
}

fn save_session(session: &Session) {
    if let Some(storage) = storage() {
        let _ = storage.set_item(STORAGE_KEY, &session.encode());
    }
}
