//! First Contentful Paint, as web-vitals measures it: the `first-contentful-paint` paint entry's
//! start minus `activationStart` (clamped at 0), reported once, and only if the page had not been
//! hidden before it. After a back/forward-cache restore: the time from the `pageshow` event to the
//! next paint (two animation frames).

use pulse_protocol::Vital;

use crate::agent::{current, Agent, Attribution, Instance};
use crate::browser::{self, num, Observer};

#[derive(Debug)]
pub(crate) struct Watch {
    instance: Instance,
    observer: Option<Observer>,
    /// FCP was reported for the current page view (CLS waits for it, as in web-vitals).
    pub reported: bool,
}

impl Watch {
    pub(crate) fn new() -> Watch {
        Watch { instance: Instance::new(), observer: None, reported: false }
    }
}

pub(crate) fn start(agent: &Agent) {
    let observer = Observer::new("paint", &[], |entries| {
        if let Some(agent) = current() {
            take(&agent, entries);
        }
    });
    agent.fcp.borrow_mut().observer = observer;
}

fn take(agent: &Agent, entries: js_sys::Array) {
    for entry in entries.iter() {
        if browser::text(&entry, "name").as_deref() == Some("first-contentful-paint") {
            paint(agent, num(&entry, "startTime"));
        }
    }
}

/// On hide: a paint the observer has recorded but not yet delivered still counts (a visitor who
/// leaves right after the first paint would otherwise take FCP, and CLS with it, away).
pub(crate) fn take_pending(agent: &Agent) {
    let pending = agent.fcp.borrow().observer.as_ref().map(Observer::take_records);
    if let Some(entries) = pending {
        take(agent, entries);
    }
}

fn paint(agent: &Agent, start_time: f64) {
    let metric = {
        let mut watch = agent.fcp.borrow_mut();
        if watch.reported || start_time.is_nan() || start_time >= agent.first_hidden() {
            return;
        }
        watch.reported = true;
        let value = (start_time - agent.activation_start.get()).max(0.0);
        let ttfb = crate::ttfb::value(agent.activation_start.get()).unwrap_or(0.0);
        let attribution = Attribution::default()
            .num("timeToFirstByte", ttfb)
            .num("firstByteToFCP", (value - ttfb).max(0.0))
            .text("loadState", Some(browser::load_state(start_time).to_owned()));
        watch.instance.metric(Vital::Fcp, value, attribution)
    };
    if let Some(metric) = metric {
        agent.emit(metric);
    }
}

pub(crate) fn restored(agent: &Agent, event_time: f64) {
    *agent.fcp.borrow_mut() = Watch::new();
    browser::after_next_paint(move || {
        if let Some(agent) = current() {
            let value = browser::now() - event_time;
            let metric = {
                let mut watch = agent.fcp.borrow_mut();
                watch.reported = true;
                watch.instance.metric(Vital::Fcp, value, Attribution::default())
            };
            if let Some(metric) = metric {
                agent.emit(metric);
            }
        }
    });
}

pub(crate) fn stop(agent: &Agent) {
    agent.fcp.borrow_mut().observer = None;
}
