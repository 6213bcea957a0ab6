//! Cumulative Layout Shift, as web-vitals computes it.
//!
//! Shifts that follow recent input (`hadRecentInput`) are ignored. The rest are grouped into
//! session windows: a shift joins the current window while it comes less than 1 s after the
//! window's previous shift and less than 5 s after the window's first; otherwise it opens a new
//! window. CLS is the largest window's sum, and only grows.

use js_sys::Array;
use pulse_protocol::{Rating, Vital};
use wasm_bindgen::JsValue;

use crate::agent::{current, Agent, Attribution, Instance};
use crate::browser::{self, get, num, Observer};

/// Gap after which a new session window starts, ms.
pub const MAX_GAP_MS: f64 = 1_000.0;
/// Longest session window, ms.
pub const MAX_WINDOW_MS: f64 = 5_000.0;

/// The parts of a `layout-shift` entry CLS needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayoutShift {
    pub start_time: f64,
    pub value: f64,
    pub had_recent_input: bool,
}

/// Running CLS for one page view (a back/forward-cache restore starts a new one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cls {
    /// Largest window so far: the metric's value.
    value: f64,
    /// The shifts of the largest window, for attribution.
    largest: Vec<LayoutShift>,
    window_value: f64,
    window: Vec<LayoutShift>,
}

impl Cls {
    pub fn new() -> Cls {
        Cls::default()
    }

    /// Adds one entry; returns `true` when the reported value grew.
    pub fn add(&mut self, shift: LayoutShift) -> bool {
        if shift.had_recent_input {
            return false;
        }
        let continues = match (self.window.first(), self.window.last()) {
            // web-vitals continues a window only while it has a non-zero value.
            (Some(first), Some(last)) if self.window_value > 0.0 => {
                shift.start_time - last.start_time < MAX_GAP_MS && shift.start_time - first.start_time < MAX_WINDOW_MS
            }
            _ => false,
        };
        if continues {
            self.window_value += shift.value;
            self.window.push(shift);
        } else {
            self.window_value = shift.value;
            self.window.clear();
            self.window.push(shift);
        }
        if self.window_value > self.value {
            self.value = self.window_value;
            self.largest.clone_from(&self.window);
            true
        } else {
            false
        }
    }

    pub fn value(&self) -> f64 {
        self.value
    }

    /// The shifts of the largest window (attribution reads the largest of them).
    pub fn entries(&self) -> &[LayoutShift] {
        &self.largest
    }

    /// The single largest shift of the largest window.
    pub fn largest_shift(&self) -> Option<LayoutShift> {
        self.largest.iter().copied().max_by(|a, b| a.value.total_cmp(&b.value))
    }

    pub fn rating(&self) -> Rating {
        Vital::Cls.thresholds().rate(self.value)
    }
}

// ---- In the page: the observer that feeds `Cls`, reporting on hide. ----

/// Most `layout-shift` entries kept for attribution (the largest window's are among the latest).
const MAX_KEPT_ENTRIES: usize = 200;

/// CLS of the current page view.
#[derive(Debug)]
pub(crate) struct Watch {
    cls: Cls,
    instance: Instance,
    observer: Option<Observer>,
    entries: Vec<JsValue>,
}

impl Watch {
    pub(crate) fn new() -> Watch {
        Watch { cls: Cls::new(), instance: Instance::new(), observer: None, entries: Vec::new() }
    }

    fn take(&mut self, entries: Array) {
        for entry in entries.iter() {
            let shift = LayoutShift {
                start_time: num(&entry, "startTime"),
                value: num(&entry, "value"),
                had_recent_input: get(&entry, "hadRecentInput").is_truthy(),
            };
            if !shift.value.is_finite() {
                continue;
            }
            self.cls.add(shift);
            if !shift.had_recent_input {
                if self.entries.len() == MAX_KEPT_ENTRIES {
                    self.entries.remove(0);
                }
                self.entries.push(entry);
            }
        }
    }
}

pub(crate) fn start(agent: &Agent) {
    let observer = Observer::new("layout-shift", &[], |entries| {
        if let Some(agent) = current() {
            agent.cls.borrow_mut().take(entries);
        }
    });
    agent.cls.borrow_mut().observer = observer;
}

/// Reports CLS (on hide) if it changed since the last report, after reading pending entries.
/// Like web-vitals, nothing is reported for a page view without FCP.
pub(crate) fn report(agent: &Agent) {
    if !agent.fcp.borrow().reported {
        return;
    }
    let metric = {
        let mut watch = agent.cls.borrow_mut();
        let Some(records) = watch.observer.as_ref().map(Observer::take_records) else { return };
        watch.take(records);
        let value = watch.cls.value();
        let attribution = match watch.cls.largest_shift() {
            Some(largest) => {
                let entry =
                    watch.entries.iter().rev().find(|e| num(e, "startTime") == largest.start_time && num(e, "value") == largest.value);
                // The first source that is an element (web-vitals' choice), else the first.
                let sources: Vec<JsValue> =
                    entry.map(|e| get(e, "sources")).filter(Array::is_array).map_or_else(Vec::new, |s| Array::from(&s).iter().collect());
                let source = sources.iter().find(|s| num(&get(s, "node"), "nodeType") == 1.0).or(sources.first());
                Attribution::default()
                    .text("largestShiftTarget", source.and_then(|s| browser::selector(&get(s, "node"))))
                    .num("largestShiftValue", largest.value)
                    .num("largestShiftTime", largest.start_time)
                    .text("loadState", Some(browser::load_state(largest.start_time).to_owned()))
            }
            None => Attribution::default(),
        };
        watch.instance.metric(Vital::Cls, value, attribution)
    };
    if let Some(metric) = metric {
        agent.emit(metric);
    }
}

/// After a back/forward-cache restore CLS starts from 0 as a new instance.
pub(crate) fn restored(agent: &Agent) {
    let mut watch = agent.cls.borrow_mut();
    watch.cls = Cls::new();
    watch.instance = Instance::new();
    watch.entries.clear();
}

pub(crate) fn stop(agent: &Agent) {
    agent.cls.borrow_mut().observer = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shift(start_time: f64, value: f64) -> LayoutShift {
        LayoutShift { start_time, value, had_recent_input: false }
    }

    fn cls(shifts: &[LayoutShift]) -> f64 {
        let mut c = Cls::new();
        for s in shifts {
            c.add(*s);
        }
        c.value()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn shifts_less_than_a_second_apart_share_a_window() {
        assert!(close(cls(&[shift(100.0, 0.1), shift(900.0, 0.05), shift(1_800.0, 0.02)]), 0.17));
    }

    #[test]
    fn a_gap_of_one_second_or_more_opens_a_new_window() {
        // 0.1 + 0.05, then a gap of exactly 1000 ms: the new window (0.12) is smaller.
        let v = cls(&[shift(0.0, 0.1), shift(500.0, 0.05), shift(1_500.0, 0.12)]);
        assert!(close(v, 0.15), "{v}");
        // A later, larger window replaces the value.
        let v = cls(&[shift(0.0, 0.1), shift(3_000.0, 0.08), shift(3_500.0, 0.08)]);
        assert!(close(v, 0.16), "{v}");
    }

    #[test]
    fn windows_stop_at_five_seconds() {
        // Shifts every 900 ms: the window holds those within 5 s of its first (0..4500), then restarts.
        let shifts: Vec<_> = (0..8).map(|i| shift(f64::from(i) * 900.0, 0.01)).collect();
        let v = cls(&shifts);
        assert!(close(v, 0.06), "six shifts fit in one window: {v}");
    }

    #[test]
    fn shifts_after_input_are_ignored() {
        let mut c = Cls::new();
        assert!(!c.add(LayoutShift { start_time: 10.0, value: 0.5, had_recent_input: true }));
        assert!(c.add(shift(20.0, 0.01)));
        assert!(close(c.value(), 0.01));
        assert_eq!(c.rating(), Rating::Good);
    }

    #[test]
    fn the_largest_window_keeps_its_entries_for_attribution() {
        let mut c = Cls::new();
        for s in [shift(0.0, 0.3), shift(2_000.0, 0.1), shift(2_500.0, 0.1)] {
            c.add(s);
        }
        assert!(close(c.value(), 0.3));
        assert_eq!(c.entries(), &[shift(0.0, 0.3)]);
        assert_eq!(c.largest_shift(), Some(shift(0.0, 0.3)));
        assert_eq!(c.rating(), Rating::Poor);
    }
}
