//! Largest Contentful Paint, as web-vitals computes it.
//!
//! The value is the last `largest-contentful-paint` candidate's start time minus the page's
//! `activationStart` (prerendered pages count from activation), clamped at 0. Only candidates
//! painted before the page was first hidden count, and a page loaded in the background reports
//! nothing. The value is final at the first trusted `keydown` or `click`, or when the page is
//! hidden; scrolling alone does not finalise it (browsers stop emitting candidates on scroll, but
//! web-vitals waits for a real input).

use js_sys::Array;
use pulse_protocol::{Rating, Vital};
use wasm_bindgen::JsValue;

use crate::agent::{current, Agent, Attribution, Instance};
use crate::browser::{self, num, Listener, Observer};

/// What can end LCP measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finalizer {
    /// A `keydown` or `click`; `trusted` is `event.isTrusted` (script-made events don't count).
    Input { trusted: bool },
    /// `visibilitychange` to hidden.
    Hidden,
    /// A scroll: does not finalise.
    Scroll,
}

/// Running LCP for one page view.
#[derive(Debug, Clone, PartialEq)]
pub struct Lcp {
    activation_start: f64,
    /// `performance.now()` time the page was first hidden (0 when it loaded hidden; infinity while
    /// it has stayed visible).
    first_hidden: f64,
    value: Option<f64>,
    final_value: bool,
}

impl Lcp {
    pub fn new(activation_start: f64, first_hidden: f64) -> Lcp {
        Lcp { activation_start, first_hidden, value: None, final_value: false }
    }

    /// Offers a candidate (its `startTime`); returns the new value when it counts.
    pub fn candidate(&mut self, start_time: f64) -> Option<f64> {
        if self.final_value || start_time >= self.first_hidden {
            return None;
        }
        let value = (start_time - self.activation_start).max(0.0);
        self.value = Some(value);
        Some(value)
    }

    /// Applies an event; returns the value to report when it finalises LCP (once).
    pub fn finalize(&mut self, by: Finalizer) -> Option<f64> {
        let finalizes = match by {
            Finalizer::Input { trusted } => trusted,
            Finalizer::Hidden => true,
            Finalizer::Scroll => false,
        };
        if !finalizes || self.final_value {
            return None;
        }
        self.final_value = true;
        self.value
    }

    pub fn is_final(&self) -> bool {
        self.final_value
    }

    pub fn value(&self) -> Option<f64> {
        self.value
    }

    pub fn rating(value: f64) -> Rating {
        Vital::Lcp.thresholds().rate(value)
    }
}

// ---- In the page: the observer and listeners that feed `Lcp`. ----

/// LCP of the current page view, with the observer and the listeners that finalise it.
#[derive(Debug)]
pub(crate) struct Watch {
    lcp: Lcp,
    instance: Instance,
    observer: Option<Observer>,
    /// The last candidate entry, for attribution.
    entry: JsValue,
    listeners: Vec<Listener>,
}

impl Watch {
    pub(crate) fn new(first_hidden: f64) -> Watch {
        Watch {
            lcp: Lcp::new(0.0, first_hidden),
            instance: Instance::new(),
            observer: None,
            entry: JsValue::UNDEFINED,
            listeners: Vec::new(),
        }
    }

    fn take(&mut self, entries: Array) {
        for entry in entries.iter() {
            if self.lcp.candidate(num(&entry, "startTime")).is_some() {
                self.entry = entry;
            }
        }
    }
}

pub(crate) fn start(agent: &Agent) {
    let observer = Observer::new("largest-contentful-paint", &[], |entries| {
        if let Some(agent) = current() {
            agent.lcp.borrow_mut().take(entries);
        }
    });
    let mut watch = agent.lcp.borrow_mut();
    watch.lcp = Lcp::new(agent.activation_start.get(), agent.first_hidden());
    if observer.is_none() {
        return;
    }
    watch.observer = observer;
    if let Some(window) = browser::window() {
        for kind in ["keydown", "click"] {
            watch.listeners.push(Listener::new(&window, kind, true, |event| {
                if let Some(agent) = current() {
                    finalize(&agent, Finalizer::Input { trusted: event.is_trusted() });
                }
            }));
        }
    }
}

/// Applies a finalising event: reads pending entries first, then reports once.
pub(crate) fn finalize(agent: &Agent, by: Finalizer) {
    let metric = {
        let mut watch = agent.lcp.borrow_mut();
        if watch.lcp.is_final() || watch.observer.is_none() {
            return;
        }
        if let Some(records) = watch.observer.as_ref().map(Observer::take_records) {
            watch.take(records);
        }
        let Some(value) = watch.lcp.finalize(by) else { return };
        let attribution = attribution(agent.activation_start.get(), value, &watch.entry);
        watch.instance.metric(Vital::Lcp, value, attribution)
    };
    if let Some(metric) = metric {
        agent.emit(metric);
    }
}

/// web-vitals' LCP breakdown: time to first byte, resource load delay and duration, and the
/// element render delay, which add up to the value.
fn attribution(activation: f64, value: f64, entry: &JsValue) -> Attribution {
    let ttfb = crate::ttfb::value(activation).unwrap_or(0.0).min(value);
    let url = browser::text(entry, "url").filter(|u| !u.is_empty());
    let resource = url.as_deref().and_then(|url| {
        let performance = browser::window()?.performance()?;
        let found = performance.get_entries_by_name_with_entry_type(url, "resource").get(0);
        (!found.is_undefined()).then_some(found)
    });
    let (request_start, response_end) = match &resource {
        Some(r) => {
            let requested = match num(r, "requestStart") {
                t if t > 0.0 => t,
                _ => num(r, "startTime"),
            };
            let request_start = (requested - activation).max(ttfb);
            (request_start, (num(r, "responseEnd") - activation).max(request_start).min(value))
        }
        None => (ttfb, ttfb),
    };
    Attribution::default()
        .text("element", browser::selector(&browser::get(entry, "element")))
        .text("url", url)
        .num("timeToFirstByte", ttfb)
        .num("resourceLoadDelay", request_start - ttfb)
        .num("resourceLoadDuration", response_end - request_start)
        .num("elementRenderDelay", (value - response_end).max(0.0))
}

/// After a back/forward-cache restore: the time from `pageshow` to the next paint, final at once.
pub(crate) fn restored(agent: &Agent, event_time: f64) {
    {
        let mut watch = agent.lcp.borrow_mut();
        watch.lcp = Lcp::new(0.0, agent.first_hidden());
        watch.instance = Instance::new();
        watch.entry = JsValue::UNDEFINED;
    }
    browser::after_next_paint(move || {
        let Some(agent) = current() else { return };
        let metric = {
            let mut watch = agent.lcp.borrow_mut();
            let value = browser::now() - event_time;
            watch.lcp.candidate(value);
            let value = watch.lcp.finalize(Finalizer::Hidden);
            value.and_then(|v| watch.instance.metric(Vital::Lcp, v, Attribution::default()))
        };
        if let Some(metric) = metric {
            agent.emit(metric);
        }
    });
}

pub(crate) fn stop(agent: &Agent) {
    let mut watch = agent.lcp.borrow_mut();
    watch.observer = None;
    watch.listeners.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_candidate_before_input_is_the_value() {
        let mut lcp = Lcp::new(0.0, f64::INFINITY);
        lcp.candidate(800.0);
        lcp.candidate(1_900.0);
        assert_eq!(lcp.finalize(Finalizer::Input { trusted: true }), Some(1_900.0));
        assert_eq!(lcp.candidate(3_000.0), None, "candidates after input are ignored");
        assert_eq!(lcp.finalize(Finalizer::Hidden), None, "reported once");
        assert_eq!(lcp.value(), Some(1_900.0));
    }

    #[test]
    fn scroll_and_synthetic_clicks_do_not_finalise() {
        let mut lcp = Lcp::new(0.0, f64::INFINITY);
        lcp.candidate(500.0);
        assert_eq!(lcp.finalize(Finalizer::Scroll), None);
        assert_eq!(lcp.finalize(Finalizer::Input { trusted: false }), None);
        lcp.candidate(2_600.0);
        assert!(!lcp.is_final());
        assert_eq!(lcp.finalize(Finalizer::Hidden), Some(2_600.0));
        assert_eq!(Lcp::rating(2_600.0), Rating::NeedsImprovement);
    }

    #[test]
    fn prerendered_pages_count_from_activation() {
        let mut lcp = Lcp::new(1_000.0, f64::INFINITY);
        assert_eq!(lcp.candidate(400.0), Some(0.0), "painted during prerender: clamped to 0");
        assert_eq!(lcp.candidate(1_700.0), Some(700.0));
    }

    #[test]
    fn nothing_counts_after_the_page_was_first_hidden() {
        let mut background = Lcp::new(0.0, 0.0);
        assert_eq!(background.candidate(300.0), None, "loaded in the background");
        assert_eq!(background.finalize(Finalizer::Hidden), None);

        let mut lcp = Lcp::new(0.0, 2_000.0);
        lcp.candidate(1_500.0);
        assert_eq!(lcp.candidate(2_500.0), None, "painted after the tab was hidden");
        assert_eq!(lcp.finalize(Finalizer::Input { trusted: true }), Some(1_500.0));
    }
}
