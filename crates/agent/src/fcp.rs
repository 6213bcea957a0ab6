//! First Contentful Paint, as web-vitals measures it: the `first-contentful-paint` paint entry's
//! start minus `activationStart` (clamped at 0), reported once, and only if the page had not been
//! hidden before it. After a back/forward-cache restore: the time from the `pageshow` event to the
//! next paint (two animation frames).

use crate::host::Js;
use alloc::string::String;
use pulse_protocol::Vital;

use crate::host;
use crate::report::{load_state, Attribution, Instance, Outbox, View};

/// FCP of the current page view.
#[derive(Debug, Default)]
pub struct Watch {
    instance: Instance,
}

impl Watch {
    /// A `paint` entry.
    pub fn entry(&mut self, entry: Js, view: &mut View, out: &mut Outbox) {
        if !host::is(entry, "name", "first-contentful-paint") {
            return;
        }
        let start_time = host::num(entry, "startTime");
        if view.painted || start_time.is_nan() || start_time >= view.first_hidden {
            return;
        }
        view.painted = true;
        let value = (start_time - view.activation_start).max(0.0);
        let ttfb = crate::ttfb::value(view.activation_start).unwrap_or(0.0);
        self.report(value, ttfb, load_state(start_time), out);
    }

    /// Reports `value` with web-vitals' attribution: the time to first byte, the rest of the value
    /// after it, and the load state (one writer for loads and soft navigations).
    fn report(&mut self, value: f64, ttfb: f64, load_state: Option<String>, out: &mut Outbox) {
        let mut attribution = Attribution::default();
        attribution.num("timeToFirstByte", ttfb).num("firstByteToFCP", (value - ttfb).max(0.0)).text("loadState", load_state);
        self.instance.report(out, Vital::Fcp, value, attribution);
    }

    /// A soft navigation (a single-page app's route change): its first contentful paint, from
    /// the `soft-navigation` entry, reported at once (web-vitals checks no visibility here).
    pub fn soft_navigation(&mut self, value: f64, out: &mut Outbox) {
        *self = Watch::default();
        // No document was fetched: TTFB 0, all of the value after it (`value` is never negative).
        self.report(value, 0.0, Some(String::from("complete")), out);
    }

    /// The first paint after a back/forward-cache restore at `restored_at` (web-vitals'
    /// attribution: TTFB 0, the load state at the restore).
    pub fn painted_after_restore(&mut self, restored_at: f64, view: &mut View, out: &mut Outbox) {
        *self = Watch::default();
        view.painted = true;
        self.report(host::now() - restored_at, 0.0, load_state(restored_at), out);
    }
}
