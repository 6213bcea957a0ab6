//! First Input Delay: the first `first-input` entry's `processingStart − startTime`, reported
//! once if the input came before the page was first hidden. web-vitals dropped FID for INP in
//! version 5; it is kept here because teams still compare it with older reports.

use pulse_protocol::Vital;

use crate::agent::{current, Agent, Attribution, Instance};
use crate::browser::{self, num, Observer};

#[derive(Debug)]
pub(crate) struct Watch {
    instance: Instance,
    observer: Option<Observer>,
    reported: bool,
}

impl Watch {
    pub(crate) fn new() -> Watch {
        Watch { instance: Instance::new(), observer: None, reported: false }
    }
}

pub(crate) fn start(agent: &Agent) {
    let observer = Observer::new("first-input", &[], |entries| {
        let Some(agent) = current() else { return };
        if let Some(entry) = entries.iter().next() {
            input(&agent, &entry);
        }
    });
    agent.fid.borrow_mut().observer = observer;
}

/// On hide: a first input recorded but not yet delivered still counts.
pub(crate) fn take_pending(agent: &Agent) {
    let pending = agent.fid.borrow().observer.as_ref().map(Observer::take_records);
    if let Some(entry) = pending.and_then(|entries| entries.iter().next()) {
        input(agent, &entry);
    }
}

fn input(agent: &Agent, entry: &wasm_bindgen::JsValue) {
    let start_time = num(entry, "startTime");
    let metric = {
        let mut watch = agent.fid.borrow_mut();
        if watch.reported || start_time.is_nan() || start_time >= agent.first_hidden() {
            return;
        }
        watch.reported = true;
        let attribution = Attribution::default()
            .text("eventTarget", browser::selector(&browser::get(entry, "target")))
            .text("eventType", browser::text(entry, "name"))
            .text("loadState", Some(browser::load_state(start_time).to_owned()));
        watch.instance.metric(Vital::Fid, (num(entry, "processingStart") - start_time).max(0.0), attribution)
    };
    if let Some(metric) = metric {
        agent.emit(metric);
    }
}

pub(crate) fn stop(agent: &Agent) {
    agent.fid.borrow_mut().observer = None;
}
