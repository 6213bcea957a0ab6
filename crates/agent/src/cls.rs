//! Cumulative Layout Shift, as web-vitals computes it.
//!
//! Shifts that follow recent input (`hadRecentInput`) are ignored. The rest are grouped into
//! session windows: a shift joins the current window while it comes less than 1 s after the
//! window's previous shift and less than 5 s after the window's first; otherwise it opens a new
//! window. CLS is the largest window's sum, and only grows.

use crate::host::Js;
use alloc::string::String;
use alloc::vec::Vec;
use pulse_protocol::{Rating, Vital};

use crate::host;
use crate::report::{load_state, selector, Attribution, Instance, Outbox, View};

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
    /// The largest shift of the largest window, for attribution.
    largest: Option<LayoutShift>,
    /// The current window, if any.
    window: Option<Window>,
}

/// What CLS needs of a session window: windows only grow until the next starts, so their shifts
/// are not kept, only the times that decide whether a shift joins and the largest shift so far.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Window {
    value: f64,
    first: f64,
    last: f64,
    /// The largest shift, the latest of equal ones (as `max_by` over the window would choose).
    largest: LayoutShift,
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
        let time = shift.start_time;
        let window = match &mut self.window {
            // web-vitals continues a window only while it has a non-zero value.
            Some(window) if window.value > 0.0 && time - window.last < MAX_GAP_MS && time - window.first < MAX_WINDOW_MS => {
                window.value += shift.value;
                window.last = time;
                if shift.value.total_cmp(&window.largest.value).is_ge() {
                    window.largest = shift;
                }
                window
            }
            window => window.insert(Window { value: shift.value, first: time, last: time, largest: shift }),
        };
        if window.value > self.value {
            self.value = window.value;
            self.largest = Some(window.largest);
            true
        } else {
            false
        }
    }

    pub fn value(&self) -> f64 {
        self.value
    }

    /// The single largest shift of the largest window.
    pub fn largest_shift(&self) -> Option<LayoutShift> {
        self.largest
    }

    pub fn rating(&self) -> Rating {
        Vital::Cls.thresholds().rate(self.value)
    }
}

// ---- In the page: the entries that feed `Cls`, reported on hide. ----

/// Most `layout-shift` entries kept for attribution (the largest window's are among the latest).
const MAX_KEPT_ENTRIES: usize = 200;

/// CLS of the current page view.
#[derive(Debug, Default)]
pub struct Watch {
    cls: Cls,
    instance: Instance,
    /// The latest shifts without recent input, a ring of [`MAX_KEPT_ENTRIES`] (the one found for
    /// attribution is matched by time and value, so their order does not matter).
    entries: Vec<Shift>,
    /// Shifts kept so far (the next one replaces `kept % MAX_KEPT_ENTRIES` once the ring is full).
    kept: usize,
}

/// A shift kept for attribution, with what web-vitals takes from it when it happens (its node
/// may be gone by the report).
#[derive(Debug)]
struct Shift {
    start_time: f64,
    value: f64,
    /// It had sources; the selector of the largest one's node (the first that is an element,
    /// else the first).
    sources: bool,
    target: Option<String>,
}

impl Watch {
    /// A `layout-shift` entry.
    pub fn entry(&mut self, entry: Js) {
        let shift = LayoutShift {
            start_time: host::num(entry, "startTime"),
            value: host::num(entry, "value"),
            had_recent_input: host::flag(entry, "hadRecentInput"),
        };
        if !shift.value.is_finite() {
            return;
        }
        self.cls.add(shift);
        if !shift.had_recent_input {
            let mut node = None;
            for source in host::items(host::get(entry, "sources")) {
                let this = host::get(source, "node");
                if host::num(this, "nodeType") == 1.0 {
                    node = Some(this);
                    break;
                }
                node = node.or(Some(this));
            }
            let kept = Shift { start_time: shift.start_time, value: shift.value, sources: node.is_some(), target: node.and_then(selector) };
            if self.entries.len() < MAX_KEPT_ENTRIES {
                self.entries.push(kept);
            } else if let Some(oldest) = self.entries.get_mut(self.kept % MAX_KEPT_ENTRIES) {
                *oldest = kept;
            }
            self.kept += 1;
        }
    }

    /// Reports CLS (on hide) if it changed since the last report. Like web-vitals, nothing is
    /// reported for a page view without FCP.
    pub fn report(&mut self, view: &View, out: &mut Outbox) {
        if !view.painted {
            return;
        }
        // As web-vitals: nothing when the largest shift had no sources.
        let mut attribution = Attribution::default();
        if let Some(largest) = self.cls.largest_shift() {
            for kept in &self.entries {
                if kept.sources && kept.start_time == largest.start_time && kept.value == largest.value {
                    attribution
                        .text("largestShiftTarget", kept.target.clone())
                        .num("largestShiftValue", largest.value)
                        .num("largestShiftTime", largest.start_time)
                        .text("loadState", load_state(largest.start_time));
                    break;
                }
            }
        }
        self.instance.report(out, Vital::Cls, self.cls.value(), attribution);
    }
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
        assert_eq!(c.largest_shift(), Some(shift(0.0, 0.3)));
        assert_eq!(c.rating(), Rating::Poor);
    }
}
