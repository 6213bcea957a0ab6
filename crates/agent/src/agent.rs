//! The running agent: the one place that wires events to the metric modules and runs the page's
//! callbacks.
//!
//! Everything the page tells the agent arrives through one callback ([`Agent::dispatch`]) as a
//! code from [`code`]. The measurement state ([`Core`]) is borrowed while an event is measured —
//! which reads entries and the clock but never runs page code — and released before the metrics
//! it produced are handed to `onMetric` listeners, `beforeSend` and the queue ([`Agent::deliver`])
//! and before beacons go out, so page code called from there may call the agent again.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use pulse_protocol::NavigationType;

use crate::api::{self, Begin, Calls};
use crate::config::Config;
use crate::host::{self, Js, Kept, Kind, DOCUMENT, WINDOW};
use crate::lcp::Finalizer;
use crate::queue::Queue;
use crate::report::{Metric, Outbox, View};
use crate::session::{Session, STORAGE_KEY};
use crate::transport::{self, Context, Queued, MAX_PAYLOAD_BYTES};
use crate::{cls, fcp, fid, inp, lcp, load, long_frames, measure, routes, ttfb};

/// Longest time session activity stays unwritten to `sessionStorage`, ms (far below the 30 min
/// idle rollover, so a page that dies without a hide loses nothing that matters).
const SESSION_SAVE_INTERVAL_MS: f64 = 5_000.0;

/// The codes the agent gives `js/host.js` for each observer, listener, timer and wrapper; the
/// host calls back with them.
mod code {
    pub const PAINT: u32 = 1;
    pub const LCP: u32 = 2;
    pub const SHIFT: u32 = 3;
    pub const EVENT: u32 = 4;
    pub const FIRST_INPUT: u32 = 5;
    pub const MEASURE: u32 = 6;
    pub const SOFT_NAVIGATION: u32 = 7;
    pub const INTERACTION_PAINT: u32 = 8;
    pub const INTERACTION: u32 = 9;
    pub const RESOURCE: u32 = 16;
    pub const LONG_FRAME: u32 = 17;
    pub const VISIBILITY: u32 = 10;
    pub const PAGEHIDE: u32 = 11;
    pub const PAGESHOW: u32 = 12;
    pub const INPUT: u32 = 13;
    pub const PRERENDERED: u32 = 14;
    pub const LOADED: u32 = 15;
    pub const TICK: u32 = 20;
    pub const TTFB: u32 = 21;
    pub const RESTORE_PAINTED: u32 = 22;
    pub const INPUT_PAINTED: u32 = 23;
    pub const FETCH_BEGIN: u32 = 30;
    pub const FETCH_END: u32 = 31;
    pub const XHR_BEGIN: u32 = 32;
    pub const XHR_END: u32 = 33;
    pub const POSTED: u32 = 34;
}

/// What the agent did, for the page (`stats()`): counts by the indexes in `agent::stat`.
#[derive(Debug, Clone, Default)]
pub struct Stats(pub [u32; stat::NAMES.len()]);

/// The counts in [`Stats`] and their names in `stats()`.
pub mod stat {
    /// Metrics measured or recorded (before sampling and `beforeSend`).
    pub const MEASURED: usize = 0;
    /// Metrics handed to the browser for sending.
    pub const SENT: usize = 1;
    pub const BEACONS: usize = 2;
    /// Metrics put back after a failed send.
    pub const RETRIED: usize = 3;
    pub const DROPPED_UNSAMPLED: usize = 4;
    pub const DROPPED_BY_BEFORE_SEND: usize = 5;
    pub const BEFORE_SEND_ERRORS: usize = 6;
    pub const DROPPED_QUEUE_FULL: usize = 7;
    pub const DROPPED_TOO_LARGE: usize = 8;
    /// `record` calls refused for bad input.
    pub const REJECTED_RECORDS: usize = 9;
    pub const NAMES: [&str; 10] = [
        "measured",
        "sent",
        "beacons",
        "retried",
        "droppedUnsampled",
        "droppedByBeforeSend",
        "beforeSendErrors",
        "droppedQueueFull",
        "droppedTooLarge",
        "rejectedRecords",
    ];
}

/// The measurement state: everything events change.
#[derive(Debug)]
struct Core {
    view: View,
    fcp: fcp::Watch,
    lcp: lcp::Watch,
    cls: cls::Watch,
    inp: inp::Watch,
    fid: fid::Watch,
    calls: Calls,
    out: Outbox,
    /// Metrics of earlier page views (before a soft navigation), with their context.
    ready: Vec<(Rc<Context>, Vec<Metric>)>,
    context: Rc<Context>,
    session: Session,
    /// When the session was last written to `sessionStorage`, epoch ms.
    session_saved_at: f64,
    queue: Queue<Queued>,
    stats: Stats,
    /// `pageshow` time of a back/forward-cache restore waiting for its first paint.
    restored_at: Option<f64>,
    /// The loaded page view: its `activationStart` and context, for what is measured once the
    /// load event is over (TTFB, the page load), also after a soft navigation or a restore.
    load: (f64, Rc<Context>),
    /// The browser has `layout-shift` entries (without them there is no CLS, not a CLS of 0).
    shifts: bool,
    /// Soft navigations start page views (asked for, and the browser reports them): a metric's
    /// page view is then the navigation it was measured in, not whatever the URL is now.
    soft: bool,
    /// The latest resource entries, for LCP's attribution.
    resources: lcp::Resources,
    /// The page view's long animation frames, where the browser reports them.
    long_frames: Option<long_frames::Summary>,
    /// Payloads handed to `fetch` with `keepalive`, by token, until it settles.
    posting: Vec<(f64, Vec<Queued>)>,
    next_token: f64,
}

/// What an event asks of the agent once measuring is done.
#[derive(Debug, Default)]
struct Effect {
    /// The callback's return value (a request id for the wrappers).
    value: f64,
    flush: bool,
}

#[derive(Debug)]
pub struct Agent {
    pub config: Config,
    core: RefCell<Core>,
    listeners: RefCell<Vec<Kept>>,
    running: Cell<bool>,
    /// Shutdown has sent its last beacon.
    stopped: Cell<bool>,
    /// A listener or `beforeSend` is running.
    calling: Cell<bool>,
    /// Nesting depth, start of the outermost timed call, total and longest main-thread time in
    /// agent code, ms.
    clock: Cell<(u32, f64, f64, f64)>,
}

impl Agent {
    /// A new agent for `config`: its session and first page view (nothing observed yet).
    pub fn new(config: Config) -> Rc<Agent> {
        let now = host::epoch();
        let session = host::load(STORAGE_KEY)
            .and_then(|stored| Session::resume(&stored, now))
            .unwrap_or_else(|| Session::start(host::random_id(), now, config.sample_rate, host::random()));
        let context = Context { session: session.id.clone(), page: host::random_id(), url: page_url(&config), nav: navigation_type() };
        let view = View::new(0.0, f64::INFINITY);
        let context = Rc::new(context);
        let core = Core {
            lcp: lcp::Watch::new(&view),
            view,
            fcp: fcp::Watch::default(),
            cls: cls::Watch::default(),
            inp: inp::Watch::default(),
            fid: fid::Watch::default(),
            calls: Calls::new(),
            out: Outbox::default(),
            ready: Vec::new(),
            context: context.clone(),
            session,
            session_saved_at: now,
            queue: Queue::new(config.batch_size),
            stats: Stats::default(),
            restored_at: None,
            load: (0.0, context.clone()),
            shifts: false,
            soft: false,
            resources: lcp::Resources::default(),
            long_frames: None,
            posting: Vec::new(),
            next_token: 0.0,
        };
        host::save(STORAGE_KEY, &core.session.encode());
        Rc::new(Agent {
            config,
            core: RefCell::new(core),
            listeners: RefCell::default(),
            running: Cell::new(true),
            stopped: Cell::new(false),
            calling: Cell::new(false),
            clock: Cell::new((0, 0.0, 0.0, 0.0)),
        })
    }

    /// Starts observing (a prerendered page: once it is activated).
    pub fn start(&self) {
        self.timed(|| {
            if host::prerendering() {
                // A prerendered page is measured from its activation (web-vitals' whenActivated).
                host::listen(DOCUMENT, "prerenderingchange", code::PRERENDERED);
            } else {
                self.core().measure(&self.config);
            }
        });
    }

    /// Runs `f` (agent code called by the browser or the page) on the agent's clock.
    pub fn timed<R>(&self, f: impl FnOnce() -> R) -> R {
        self.clock_enter();
        let result = f();
        self.clock_leave();
        result
    }

    // Out of line: `timed` is generic, so its body is copied into every caller.
    #[inline(never)]
    fn clock_enter(&self) {
        let (depth, start, busy, longest) = self.clock.get();
        let start = if depth == 0 { host::now() } else { start };
        self.clock.set((depth + 1, start, busy, longest));
    }

    #[inline(never)]
    fn clock_leave(&self) {
        let (depth, start, busy, longest) = self.clock.get();
        if depth == 1 {
            let spent = host::now() - start;
            self.clock.set((0, 0.0, busy + spent, longest.max(spent)));
        } else {
            self.clock.set((depth - 1, start, busy, longest));
        }
    }

    pub fn running(&self) -> bool {
        self.running.get()
    }

    /// The measurement state. Taken while nothing else holds it (page code runs only between
    /// borrows, and `dispatch` skips an event that would overlap); one out-of-line place for the
    /// check instead of a panic path at every use.
    #[inline(never)]
    fn core(&self) -> core::cell::RefMut<'_, Core> {
        match self.core.try_borrow_mut() {
            Ok(core) => core,
            Err(_) => trap(),
        }
    }

    /// One event from the page.
    pub fn dispatch(&self, code: u32, a: Js, b: Js, n: f64) -> f64 {
        if !self.running.get() {
            return 0.0;
        }
        self.timed(|| {
            // A request starts: described before the state is borrowed (reading its arguments may
            // run page code that calls the agent). One that a listener or `beforeSend` makes is
            // not timed: its metric would reach that listener again, round after round.
            let call = match code {
                code::FETCH_BEGIN if !self.calling.get() => api::describe(&self.config, Begin::Fetch(a, b)),
                code::XHR_BEGIN if !self.calling.get() => api::describe(&self.config, Begin::Xhr(a, b)),
                _ => None,
            };
            // Busy only if page code run while a measurement is under way (a page's own getter
            // on an element the agent reads) starts an event: it is skipped, and nothing else is
            // done until the measurement returns.
            let Ok(mut core) = self.core.try_borrow_mut() else { return 0.0 };
            let effect = core.handle(&self.config, code, a, b, n, call);
            drop(core);
            self.deliver();
            if effect.flush {
                self.flush();
            }
            effect.value
        })
    }

    /// Hands the measured metrics to listeners, sampling, `beforeSend` and the queue.
    pub fn deliver(&self) {
        loop {
            let (ready, metrics) = {
                let mut core = self.core();
                (core::mem::take(&mut core.ready), core::mem::take(&mut core.out.0))
            };
            if ready.is_empty() && metrics.is_empty() {
                return;
            }
            for (context, metrics) in ready {
                for metric in metrics {
                    self.emit(metric, Some(&context));
                }
            }
            for metric in metrics {
                self.emit(metric, None);
            }
        }
    }

    /// Adds a metric the page recorded.
    pub fn record(&self, metric: Metric) {
        self.core().out.push(metric);
        self.deliver();
    }

    pub fn reject_record(&self) {
        self.core().stats.0[stat::REJECTED_RECORDS] += 1;
    }

    /// One metric to the listeners, sampling, `beforeSend` and the queue; `context` is its page
    /// view when it is not the current one.
    fn emit(&self, metric: Metric, context: Option<&Rc<Context>>) {
        self.core().stats.0[stat::MEASURED] += 1;
        let Metric { json } = metric;
        // The listeners there now, by index: not borrowed across the call, which may add one.
        let listeners = read(&self.listeners).len();
        for i in 0..listeners {
            let Some(f) = read(&self.listeners).get(i).map(Kept::js) else { break };
            // Each its own copy: a listener changing it changes neither what the next one sees
            // nor what is sent.
            if let Err(error) = self.call_page(f, host::parse(&json)) {
                host::log(true, "pulse: an onMetric callback threw", error);
            }
        }
        let (context, sampled) = {
            let mut core = self.core();
            let now = core.context_now(&self.config);
            let context = context.map_or(now, Rc::clone);
            let sampled = core.session.sampled;
            if !sampled {
                core.stats.0[stat::DROPPED_UNSAMPLED] += 1;
            }
            (context, sampled)
        };
        if !sampled {
            return;
        }
        let Some(json) = self.before_send(json) else { return };
        let full = {
            let core = &mut *self.core();
            core.queue.push((context, json), &mut core.stats.0[stat::DROPPED_QUEUE_FULL])
        };
        // Stopped while this metric was with a listener or `beforeSend`: shutdown's last beacon
        // has gone, so it goes on its own.
        if full || self.stopped.get() {
            self.flush();
        }
    }

    /// Calls a listener or `beforeSend` with `arg`; a request it makes meanwhile is not timed.
    fn call_page(&self, f: Js, arg: Js) -> Result<Js, Js> {
        let was = self.calling.replace(true);
        let outcome = host::invoke(f, arg);
        self.calling.set(was);
        outcome
    }

    /// Runs `beforeSend`. What it returns is sent as it is (the collector validates every field);
    /// it must stay the same metric, so the name may not change.
    #[inline(never)] // smaller under brotli than inlined into its caller
    fn before_send(&self, json: String) -> Option<String> {
        let Some(hook) = &self.config.before_send else { return Some(json) };
        let outcome = self.call_page(hook.js(), host::parse(&json));
        let changed = match &outcome {
            // null or false (`undefined`, from a callback that forgot to return, is a mistake:
            // only null stringifies).
            Ok(v)
                if matches!(host::kind_of(*v), Kind::Bool(false))
                    || (host::kind_of(*v) == Kind::Missing && host::stringify(*v).is_some()) =>
            {
                self.core().stats.0[stat::DROPPED_BY_BEFORE_SEND] += 1;
                return None;
            }
            Ok(v) if host::is(*v, "name", Metric::name(&json)) => host::stringify(*v),
            _ => None,
        };
        if changed.is_none() {
            // Dropped, not sent unscrubbed: beforeSend is where pages remove private data.
            self.core().stats.0[stat::BEFORE_SEND_ERRORS] += 1;
            match outcome {
                Err(error) => host::log(true, "pulse: beforeSend threw; the metric was dropped", error),
                Ok(_) => host::log(
                    false,
                    "pulse: beforeSend must return the metric (same name, wire fields), null or false; the metric was dropped",
                    host::UNDEFINED,
                ),
            }
        }
        changed
    }

    /// Sends everything waiting: `sendBeacon` first; if the browser refuses it (over its budget,
    /// or no `sendBeacon`), `fetch` with `keepalive`, whose failure puts the metrics back.
    pub fn flush(&self) {
        let mut core = self.core();
        core.save_session();
        let items = core.queue.take();
        if items.is_empty() {
            return;
        }
        let config = &self.config;
        let payloads = transport::split(
            &items,
            |a, b| Rc::ptr_eq(&a.0, &b.0) || a.0 == b.0,
            config.batch_size,
            MAX_PAYLOAD_BYTES,
            |first, group| transport::payload(config, &first.0, group),
        );
        let sent = payloads.iter().map(|(_, g)| g.len()).sum::<usize>();
        core.stats.0[stat::SENT] += sent as u32;
        core.stats.0[stat::BEACONS] += payloads.len() as u32;
        // The items in no payload cannot fit even alone.
        core.stats.0[stat::DROPPED_TOO_LARGE] += (items.len() - sent) as u32;
        // Released before the browser is called: a wrapped `fetch` comes back to the agent.
        drop(core);
        for (body, group) in payloads {
            if host::beacon(&self.config.endpoint, &body) {
                continue;
            }
            let token = {
                let mut core = self.core();
                core.next_token += 1.0;
                let token = core.next_token;
                core.posting.push((token, group.to_vec()));
                token
            };
            if !host::post(&self.config.endpoint, &body, code::POSTED, token) {
                let mut core = self.core();
                let group = core.settled(token);
                core.requeue(group);
            }
        }
    }

    pub fn add_listener(&self, callback: Kept) {
        match self.listeners.try_borrow_mut() {
            Ok(mut listeners) => listeners.push(callback),
            Err(_) => trap(),
        }
    }

    /// `stats()` as JSON (camelCase, as JavaScript names things).
    pub fn stats_json(&self) -> String {
        let s = self.core().stats.clone();
        let (_, _, busy, longest) = self.clock.get();
        let mut out = String::new();
        let mut o = crate::json::Obj::new(&mut out);
        for (key, value) in stat::NAMES.iter().zip(s.0) {
            o.num(key, f64::from(value));
        }
        o.num("busyMs", busy);
        o.num("longestMs", longest);
        o.end();
        out
    }

    pub fn sampled(&self) -> bool {
        self.core().session.sampled
    }

    pub fn session_id(&self) -> String {
        self.core().session.id.clone()
    }

    pub fn page_id(&self) -> String {
        self.core().context.page.clone()
    }

    /// Stops the agent: reports what is final on hide, sends what is waiting, removes every
    /// listener and observer, restores `fetch` and XHR. Its handles do nothing afterwards.
    pub fn shutdown(&self) {
        // Not running from here on: a listener or `beforeSend` calling `shutdown()` again, or any
        // other handle method, does nothing.
        if !self.running.replace(false) {
            return;
        }
        self.timed(|| {
            self.core().hidden(&self.config);
            self.deliver();
            self.flush();
            // The page's entries kept for attribution are let go now, not when the next `init`
            // replaces this agent.
            let mut core = self.core();
            core.lcp.release();
            core.resources.release();
            core.inp.release();
        });
        self.stopped.set(true);
        // The listeners stay until the agent is dropped: one of them may be running this shutdown.
        host::stop();
    }
}

impl Core {
    /// Starts observing (at start, or when a prerendered page is activated).
    fn measure(&mut self, config: &Config) {
        let activation = host::activation_start();
        self.view = View::new(activation, first_hidden(activation));
        self.load = (activation, self.context.clone());
        self.lcp = lcp::Watch::new(&self.view);
        host::observe("paint", code::PAINT, 0.0);
        if host::observe("largest-contentful-paint", code::LCP, 0.0) {
            host::listen(WINDOW, "keydown", code::INPUT);
            host::listen(WINDOW, "click", code::INPUT);
            host::observe("resource", code::RESOURCE, 0.0);
        }
        self.shifts = host::observe("layout-shift", code::SHIFT, 0.0);
        host::observe("event", code::EVENT, 40.0);
        // Without `performance.interactionCount`, the count is estimated from the ids of every
        // event from 16 ms (the least a browser observes), as web-vitals' polyfill does.
        if inp::browser_count().is_none() {
            host::observe("event", code::INTERACTION, 16.0);
        }
        host::observe("first-input", code::FIRST_INPUT, 0.0);
        if host::observe("long-animation-frame", code::LONG_FRAME, 0.0) {
            self.long_frames = Some(long_frames::Summary::default());
        }
        if config.track_measures {
            host::observe("measure", code::MEASURE, 0.0);
        }
        // Last, so the shifts and interactions the browser delivers with a soft navigation are
        // counted before it (in the previous page view), as web-vitals' sorted batches do.
        if config.soft_navigations && soft_navigations_supported() {
            host::observe("interaction-contentful-paint", code::INTERACTION_PAINT, 0.0);
            self.soft = host::observe("soft-navigation", code::SOFT_NAVIGATION, 0.0);
        }
        // TTFB is read after the load event's task, when `loadEventEnd` is set.
        if host::is(DOCUMENT, "readyState", "complete") {
            host::later(0.0, code::TTFB);
        } else {
            host::listen(WINDOW, "load", code::LOADED);
        }
        if config.track_fetch {
            host::wrap_fetch(code::FETCH_BEGIN, code::FETCH_END);
            host::wrap_xhr(code::XHR_BEGIN, code::XHR_END);
        }
        host::listen(DOCUMENT, "visibilitychange", code::VISIBILITY);
        // Safari does not always fire visibilitychange when a page is left; pagehide it does.
        host::listen(WINDOW, "pagehide", code::PAGEHIDE);
        host::listen(WINDOW, "pageshow", code::PAGESHOW);
        host::every(f64::from(config.flush_interval_ms), code::TICK);
    }

    fn handle(&mut self, config: &Config, code: u32, a: Js, b: Js, n: f64, call: Option<(String, String)>) -> Effect {
        let mut effect = Effect::default();
        match code {
            code::PAINT => self.fcp.entry(a, &mut self.view, &mut self.out),
            code::LCP => self.lcp.entry(a),
            code::SHIFT => self.cls.entry(a),
            code::EVENT => self.inp.entry(a),
            code::INTERACTION => self.inp.seen(a),
            code::RESOURCE => self.resources.entry(a),
            code::LONG_FRAME => {
                self.inp.long_frame(a);
                if let Some(summary) = &mut self.long_frames {
                    summary.entry(a);
                }
            }
            code::FIRST_INPUT => {
                self.inp.entry(a);
                self.fid.entry(a, &self.view, &mut self.out);
            }
            code::MEASURE => measure::entry(a, &mut self.out),
            code::SOFT_NAVIGATION => self.soft_navigation(config, a),
            code::INTERACTION_PAINT => self.lcp.interaction_paint(a),
            code::VISIBILITY if host::hidden() => {
                if self.view.first_hidden == f64::INFINITY {
                    self.view.first_hidden = host::num(a, "timeStamp");
                }
                self.hidden(config);
                effect.flush = true;
            }
            code::PAGEHIDE => {
                self.hidden(config);
                effect.flush = true;
            }
            code::PAGESHOW if host::flag(a, "persisted") => {
                self.restored(host::num(a, "timeStamp"));
                effect.flush = true;
            }
            code::INPUT if self.lcp.input(host::flag(a, "isTrusted")) => host::paint(code::INPUT_PAINTED),
            code::INPUT_PAINTED if self.lcp.input_painted() => self.finalize_lcp(Finalizer::Input { trusted: true }),
            code::PRERENDERED => {
                self.measure(config);
                if host::hidden() {
                    self.view.first_hidden = 0.0;
                }
            }
            code::LOADED => host::later(0.0, code::TTFB),
            code::TTFB => {
                // The loaded page view's, even when a soft navigation or a restore came first.
                let (activation, context) = self.load.clone();
                ttfb::report(activation, &mut self.out);
                if let (Some(nav), Some(_)) = (host::navigation(), ttfb::value(activation)) {
                    load::report(nav, activation, &mut self.out);
                }
                if context.page != self.context.page {
                    self.stamp(&context);
                }
            }
            code::TICK => effect.flush = true,
            code::RESTORE_PAINTED => {
                if let Some(at) = self.restored_at.take() {
                    self.fcp.painted_after_restore(at, &mut self.view, &mut self.out);
                    self.lcp.painted_after_restore(at, &self.view, &mut self.out);
                }
            }
            code::FETCH_BEGIN | code::XHR_BEGIN => effect.value = call.map_or(0.0, |call| f64::from(self.calls.begin(call))),
            code::FETCH_END => self.calls.fetch_ended(n as u32, a, b, &mut self.out),
            code::XHR_END => self.calls.xhr_ended(n as u32, a, &mut self.out),
            code::POSTED => {
                // A response that is not a server error means delivered (a 4xx will not get better
                // by resending); an error or a 5xx/429 means try again with the next send.
                let status = host::num(a, "status");
                let delivered = host::kind_of(a) != Kind::Missing && status < 500.0 && status != 429.0;
                let group = self.settled(n);
                if !delivered {
                    self.requeue(group);
                }
            }
            _ => {}
        }
        effect
    }

    /// Entries of observer `code` recorded but not yet delivered.
    fn pending(code: u32) -> impl Iterator<Item = Js> {
        host::items(host::take(code))
    }

    fn finalize_lcp(&mut self, by: Finalizer) {
        if self.lcp.is_final() {
            return;
        }
        for entry in Core::pending(code::LCP) {
            self.lcp.entry(entry);
        }
        self.lcp.finalize(by, &self.resources, &mut self.out);
    }

    /// The page was hidden (or is being left): read what the observers hold, report what is
    /// final on hide.
    fn hidden(&mut self, config: &Config) {
        // A paint or input recorded but not yet delivered still counts (a visitor who leaves right
        // after the first paint would otherwise take FCP, and CLS with it, away) — in the load's
        // page view, so before a pending soft navigation starts the next one.
        for entry in Core::pending(code::PAINT) {
            self.fcp.entry(entry, &mut self.view, &mut self.out);
        }
        for entry in Core::pending(code::FIRST_INPUT) {
            self.inp.entry(entry);
            self.fid.entry(entry, &self.view, &mut self.out);
        }
        // A soft navigation the browser recorded but did not deliver yet still starts its page view.
        for entry in Core::pending(code::SOFT_NAVIGATION) {
            self.soft_navigation(config, entry);
        }
        if self.view.first_hidden == f64::INFINITY {
            self.view.first_hidden = host::now();
        }
        self.finalize_lcp(Finalizer::Hidden);
        if self.shifts {
            for entry in Core::pending(code::SHIFT) {
                self.cls.entry(entry);
            }
            self.cls.report(&self.view, &mut self.out);
        }
        for entry in Core::pending(code::EVENT) {
            self.inp.entry(entry);
        }
        self.inp.report(&mut self.out);
        self.report_long_frames();
    }

    /// The page view's long animation frames, once (they are custom metrics: a second report
    /// would count twice).
    fn report_long_frames(&mut self) {
        if let Some(summary) = &mut self.long_frames {
            summary.report(&mut self.out);
        }
    }

    /// A new page view: its long frames start over.
    fn new_long_frames(&mut self) {
        if self.long_frames.is_some() {
            self.long_frames = Some(long_frames::Summary::default());
        }
    }

    /// A soft navigation (a single-page app's route change, `entry` its `soft-navigation` entry),
    /// as web-vitals with `reportSoftNavs`: the page view so far ends — its LCP, CLS and INP are
    /// final and reported — and a new one starts at the interaction that changed the URL, with
    /// its own id and URL, TTFB 0 and FCP at once (the entry's first contentful paint), LCP from
    /// that interaction's contentful paints, CLS and INP counted from here.
    fn soft_navigation(&mut self, config: &Config, entry: Js) {
        // Shifts and interactions recorded but not delivered yet belong to the page view they
        // ended in: web-vitals sorts them with the soft navigation by start time + duration (the
        // soft navigation's is its first paint).
        let start = host::num(entry, "startTime");
        let boundary = start + host::num(entry, "duration");
        let after = |e: Js| host::num(e, "startTime") + host::num(e, "duration") > boundary;
        let (mut later_shifts, mut later_events) = (Vec::new(), Vec::new());
        for shift in Core::pending(code::SHIFT) {
            if after(shift) {
                later_shifts.push(shift);
            } else {
                self.cls.entry(shift);
            }
        }
        for event in Core::pending(code::EVENT) {
            if after(event) {
                later_events.push(event);
            } else {
                self.inp.entry(event);
            }
        }
        self.finalize_lcp(Finalizer::Hidden);
        if self.shifts {
            self.cls.report(&self.view, &mut self.out);
        }
        self.inp.report(&mut self.out);
        self.report_long_frames();
        let previous = self.context.clone();
        self.stamp(&previous);

        let path = host::text(host::url(&host::text(entry, "name").unwrap_or_default()), "pathname");
        self.context = Rc::new(Context {
            page: host::random_id(),
            url: route(config, path.as_deref().unwrap_or("/")),
            nav: NavigationType::SoftNavigation,
            ..(*previous).clone()
        });
        // CLS still needs the load's first paint, as in web-vitals.
        self.view = View { activation_start: start, first_hidden: f64::INFINITY, painted: self.view.painted };
        let painted = match host::num(entry, "presentationTime") {
            t if t > 0.0 => t,
            _ => host::num(entry, "paintTime"),
        };
        self.fcp.soft_navigation(if painted > 0.0 { (painted - start).max(0.0) } else { 0.0 }, &mut self.out);
        let largest = host::method(entry, "getLargestInteractionContentfulPaint");
        self.lcp = lcp::Watch::soft_navigation(start, host::num(entry, "interactionId"), largest);
        self.cls = cls::Watch::default();
        self.inp.restart(start);
        self.new_long_frames();
        ttfb::zero(0.0, &mut self.out);
        for shift in later_shifts {
            self.cls.entry(shift);
        }
        for event in later_events {
            self.inp.entry(event);
        }
    }

    /// Sets the metrics measured so far aside as `context`'s (an earlier page view's).
    fn stamp(&mut self, context: &Rc<Context>) {
        self.ready.push((context.clone(), core::mem::take(&mut self.out.0)));
    }

    /// A back/forward-cache restore: a new page view whose metrics start over.
    fn restored(&mut self, event_time: f64) {
        let mut next = (*self.context).clone();
        next.page = host::random_id();
        next.nav = NavigationType::BackForwardCache;
        self.context = Rc::new(next);
        self.view = View::new(0.0, if host::hidden() { 0.0 } else { f64::INFINITY });
        ttfb::zero(host::activation_start(), &mut self.out);
        self.fcp = fcp::Watch::default();
        self.lcp = lcp::Watch::new(&self.view);
        self.cls = cls::Watch::default();
        self.inp.restart(event_time);
        self.new_long_frames();
        self.restored_at = Some(event_time);
        host::paint(code::RESTORE_PAINTED);
    }

    /// Takes the metrics posted with `token` out of `posting`: their `fetch` settled.
    fn settled(&mut self, token: f64) -> Vec<Queued> {
        match self.posting.iter().position(|(t, _)| *t == token).filter(|i| *i < self.posting.len()) {
            Some(i) => self.posting.swap_remove(i).1,
            None => Vec::new(),
        }
    }

    /// Puts back metrics whose send failed.
    fn requeue(&mut self, group: Vec<Queued>) {
        let n = group.len() as u32;
        self.stats.0[stat::SENT] = self.stats.0[stat::SENT].saturating_sub(n);
        self.stats.0[stat::RETRIED] += n;
        self.queue.requeue(group, &mut self.stats.0[stat::DROPPED_QUEUE_FULL]);
    }

    /// The page view a metric measured now belongs to: rolls the session over after 30 idle
    /// minutes and follows the page's path (single-page apps change it).
    fn context_now(&mut self, config: &Config) -> Rc<Context> {
        let now = host::epoch();
        let rolled = self.session.expired(now);
        if rolled {
            self.session = Session::start(host::random_id(), now, config.sample_rate, host::random());
        }
        self.session.last_active = now;
        // Storage writes are the costliest part of taking a metric: write a new session at once,
        // activity at most every few seconds (and at every send, see `flush`).
        if rolled || now - self.session_saved_at >= SESSION_SAVE_INTERVAL_MS {
            self.save_session();
        }
        // Without soft navigations the page view follows the path (single-page apps change it).
        let url = if self.soft { self.context.url.clone() } else { page_url(config) };
        if self.context.session != self.session.id || self.context.url != url {
            let mut next = (*self.context).clone();
            next.session.clone_from(&self.session.id);
            next.url = url;
            self.context = Rc::new(next);
        }
        self.context.clone()
    }

    fn save_session(&mut self) {
        host::save(STORAGE_KEY, &self.session.encode());
        self.session_saved_at = host::epoch();
    }
}

/// `cell.borrow()` with a trap instead of its panic (whose message formatting would be linked).
fn read<T>(cell: &RefCell<T>) -> core::cell::Ref<'_, T> {
    match cell.try_borrow() {
        Ok(value) => value,
        Err(_) => trap(),
    }
}

/// Stops at a bug (the state borrowed twice): a trap in the page, a panic in native tests.
#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    unreachable!("the agent's state was borrowed twice")
}

/// When the page was first hidden, as web-vitals decides it: the first buffered
/// `visibility-state` entry saying hidden after activation (a tab opened in the background, or
/// hidden and shown again before the agent started); else 0 if it is hidden now (and not
/// prerendering), else never (∞).
fn first_hidden(activation: f64) -> f64 {
    let prerendering = host::prerendering();
    if !prerendering {
        for entry in host::items(host::entries("visibility-state")) {
            if host::is(entry, "name", "hidden") {
                let time = host::num(entry, "startTime");
                if time >= activation {
                    return time;
                }
            }
        }
    }
    if host::hidden() && !prerendering {
        0.0
    } else {
        f64::INFINITY
    }
}

/// The page's path as the envelope's `url`.
fn page_url(config: &Config) -> String {
    route(config, host::text(host::LOCATION, "pathname").as_deref().unwrap_or("/"))
}

/// A page path as the envelope's `url`: the first matching route template, else normalised.
fn route(config: &Config, path: &str) -> String {
    routes::apply(&config.routes, path).unwrap_or_else(|| pulse_protocol::route::normalise_path(path))
}

/// The browser reports soft navigations the way web-vitals 6 relies on (the entry type, and
/// `getLargestInteractionContentfulPaint` on its entries); older experimental versions do not.
fn soft_navigations_supported() -> bool {
    let entry = host::get(WINDOW, "PerformanceSoftNavigation");
    host::kind(host::get(host::get(entry, "prototype"), "getLargestInteractionContentfulPaint")) == 5
}

fn navigation_type() -> NavigationType {
    if host::prerendering() || host::activation_start() > 0.0 {
        return NavigationType::Prerender;
    }
    if host::flag(DOCUMENT, "wasDiscarded") {
        return NavigationType::Restore;
    }
    // Compared in the page, not copied into the wasm.
    match host::navigation() {
        Some(e) if host::is(e, "type", "reload") => NavigationType::Reload,
        Some(e) if host::is(e, "type", "back_forward") => NavigationType::BackForward,
        _ => NavigationType::Navigate,
    }
}
