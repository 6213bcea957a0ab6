//! Largest Contentful Paint, as web-vitals computes it.
//!
//! The value is the last `largest-contentful-paint` candidate's start time minus the page's
//! `activationStart` (prerendered pages count from activation), clamped at 0. Only candidates
//! painted before the page was first hidden count, and a page loaded in the background reports
//! nothing. The value is final at the first trusted `keydown` or `click`, or when the page is
//! hidden; scrolling alone does not finalise it (browsers stop emitting candidates on scroll, but
//! web-vitals waits for a real input).

use crate::host::{Js, Kept};
use alloc::string::String;
use alloc::vec::Vec;
use pulse_protocol::{Rating, Vital};

use crate::host;
use crate::report::{selector, Attribution, Instance, Outbox, View};

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
        self.candidate_since(start_time, self.activation_start)
    }

    /// A candidate painted at `time`, measured from `origin` (a soft navigation's start).
    pub fn candidate_since(&mut self, time: f64, origin: f64) -> Option<f64> {
        if self.final_value || time >= self.first_hidden {
            return None;
        }
        let value = (time - origin).max(0.0);
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

// ---- In the page: the entries and events that feed `Lcp`. ----

/// LCP of the current page view.
#[derive(Debug)]
pub struct Watch {
    lcp: Lcp,
    instance: Instance,
    /// The last candidate entry, for attribution, and its target, taken when it became the
    /// candidate (its element may be gone by the report).
    entry: Option<Kept>,
    target: Option<String>,
    /// A trusted input is waiting for its next paint to finalise LCP.
    input: bool,
    /// A soft navigation's page view: the `interactionId` that started it (only that
    /// interaction's contentful paints count; its start time is the `Lcp`'s activation start).
    soft: Option<f64>,
}

impl Watch {
    pub fn new(view: &View) -> Watch {
        Watch {
            lcp: Lcp::new(view.activation_start, view.first_hidden),
            instance: Instance::default(),
            entry: None,
            target: None,
            input: false,
            soft: None,
        }
    }

    /// Lets go of the kept entry (the agent has stopped).
    pub fn release(&mut self) {
        self.entry = None;
    }

    /// The LCP of a soft navigation started at `start` by interaction `interaction`, whose
    /// largest contentful paint so far is `largest` (an `interaction-contentful-paint` entry).
    /// As web-vitals: measured from the interaction's start, never hidden before it began.
    pub fn soft_navigation(start: f64, interaction: f64, largest: Js) -> Watch {
        let mut watch = Watch { soft: Some(interaction), ..Watch::new(&View::new(start, f64::INFINITY)) };
        watch.interaction_paint(largest);
        watch
    }

    /// A `largest-contentful-paint` entry (of the page load; a soft navigation's LCP comes from
    /// its interaction's paints).
    pub fn entry(&mut self, entry: Js) {
        if self.soft.is_none() && self.lcp.candidate(host::num(entry, "startTime")).is_some() {
            self.keep(entry);
        }
    }

    /// The candidate's entry, and its target as web-vitals takes it: the element's selector, or
    /// `#id` once the element has left the DOM.
    fn keep(&mut self, entry: Js) {
        self.entry = Some(host::keep(entry));
        self.target = selector(host::get(entry, "element"))
            .or_else(|| host::text(entry, "id").filter(|id| !id.is_empty()).map(|id| String::from("#") + &id));
    }

    /// An `interaction-contentful-paint` entry: a candidate if its interaction started the current
    /// soft navigation. The value is the paint's `renderTime` (0 when unknown, as web-vitals)
    /// minus the interaction's start.
    pub fn interaction_paint(&mut self, entry: Js) {
        let Some(interaction) = self.soft else { return };
        if host::num(entry, "interactionId") != interaction {
            return;
        }
        let largest = host::get(entry, "largestContentfulPaint");
        let render = host::num(largest, "renderTime");
        let render = if render.is_nan() { 0.0 } else { render };
        if self.lcp.candidate_since(render, host::num(entry, "startTime")).is_some() {
            self.keep(largest);
        }
    }

    pub fn is_final(&self) -> bool {
        self.lcp.is_final()
    }

    /// A `keydown` or `click`: whether to finalise after the next paint (a trusted input, LCP not
    /// final, none waiting). As web-vitals, not inside the page's own handling of the input,
    /// where the report and the page's `onMetric` callbacks would add to its latency.
    pub fn input(&mut self, trusted: bool) -> bool {
        let wait = trusted && !self.is_final() && !self.input;
        self.input |= wait;
        wait
    }

    /// The next paint after an input: whether it is still this page view's to finalise.
    pub fn input_painted(&mut self) -> bool {
        core::mem::take(&mut self.input)
    }

    fn candidate(&self) -> Js {
        self.entry.as_ref().map_or(host::UNDEFINED, Kept::js)
    }

    /// Applies a finalising event (pending entries read first); reports once.
    pub fn finalize(&mut self, by: Finalizer, resources: &Resources, out: &mut Outbox) {
        let Some(value) = self.lcp.finalize(by) else { return };
        // The page view's start, where its `Lcp` counts from (every new view has a new `Watch`); a
        // soft navigation's fetched no document, TTFB 0.
        let start = self.lcp.activation_start;
        let ttfb = match self.soft {
            Some(_) => 0.0,
            None => crate::ttfb::value(start).unwrap_or(0.0).min(value),
        };
        let target = self.target.take();
        self.instance.report(out, Vital::Lcp, value, attribution(start, ttfb, value, self.candidate(), target, resources));
    }

    /// The first paint after a back/forward-cache restore at `restored_at`: final at once.
    /// As web-vitals, whether the page was hidden meanwhile or not; no entry, so its placeholder
    /// attribution (all of it render delay).
    pub fn painted_after_restore(&mut self, restored_at: f64, view: &View, out: &mut Outbox) {
        *self = Watch::new(&View { activation_start: 0.0, first_hidden: f64::INFINITY, ..*view });
        self.lcp.candidate(host::now() - restored_at);
        if let Some(value) = self.lcp.finalize(Finalizer::Hidden) {
            self.instance.report(out, Vital::Lcp, value, attribution(0.0, 0.0, value, host::UNDEFINED, None, &Resources::default()));
        }
    }
}

/// Resource entries kept that many (web-vitals keeps 50).
const MAX_RESOURCES: usize = 50;

/// The latest resource entries, from an observer: the browser's timeline stops at 250 entries,
/// which a long single-page app passes, so the LCP element's resource is looked up here first (as
/// web-vitals does).
#[derive(Debug, Default)]
pub struct Resources {
    /// A ring: the entry seen `k`-th sits at `k % MAX_RESOURCES`.
    entries: Vec<Kept>,
    seen: usize,
}

impl Resources {
    /// A `resource` entry.
    pub fn entry(&mut self, entry: Js) {
        let entry = host::keep(entry);
        if self.entries.len() < MAX_RESOURCES {
            self.entries.push(entry);
        } else if let Some(oldest) = self.entries.get_mut(self.seen % MAX_RESOURCES) {
            *oldest = entry;
        }
        self.seen += 1;
    }

    /// The latest entry of `url` whose request started by `before`, here or else in the
    /// browser's timeline (`undefined` if none).
    pub fn find(&self, url: &str, before: f64) -> Js {
        // Latest first: those before the next slot, then those from it.
        let (newer, older) = self.entries.split_at_checked(self.seen % MAX_RESOURCES).unwrap_or_default();
        for entry in newer.iter().rev().chain(older.iter().rev()).map(Kept::js) {
            if host::is(entry, "name", url) && requested(entry) <= before {
                return entry;
            }
        }
        host::resource(url, before)
    }

    /// Lets go of the kept entries (the agent has stopped).
    pub fn release(&mut self) {
        *self = Resources::default();
    }
}

/// When a resource's request started: `requestStart`, or `startTime` where that is 0 (a
/// cross-origin resource without `Timing-Allow-Origin`).
fn requested(resource: Js) -> f64 {
    match host::num(resource, "requestStart") {
        t if t > 0.0 => t,
        _ => host::num(resource, "startTime"),
    }
}

/// web-vitals' LCP breakdown: time to first byte, resource load delay and duration, and the
/// element render delay, which add up to the value; times count from `activation` (a soft
/// navigation's start for one).
fn attribution(activation: f64, ttfb: f64, value: f64, entry: Js, target: Option<String>, resources: &Resources) -> Attribution {
    let url = host::text(entry, "url").filter(|u| !u.is_empty());
    // As web-vitals: the latest request of the URL that started before the element was painted.
    let painted = host::num(entry, "startTime");
    // `undefined` (kind 0) when there is no URL or no such request.
    let resource = url.as_deref().map_or(host::UNDEFINED, |url| resources.find(url, painted));
    let (request_start, response_end) = if host::kind(resource) == 0 {
        (ttfb, ttfb)
    } else {
        let request_start = (requested(resource) - activation).max(ttfb);
        (request_start, (host::num(resource, "responseEnd") - activation).max(request_start).min(value))
    };
    let mut attribution = Attribution::default();
    attribution
        .text("target", target)
        .text("url", url)
        .num("timeToFirstByte", ttfb)
        .num("resourceLoadDelay", request_start - ttfb)
        .num("resourceLoadDuration", response_end - request_start)
        .num("elementRenderDelay", (value - response_end).max(0.0));
    attribution
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
