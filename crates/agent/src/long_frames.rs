//! Long animation frames of the page view, summed up (where the browser has the Long Animation
//! Frames API: Chromium): how many frames took over 50 ms, how long they blocked input in all
//! (their `blockingDuration`), and the script that spent the most time in them — a few numbers
//! per page view, not one metric per frame. (The frames that overlap the INP interaction are
//! [`crate::inp`]'s.)
//!
//! They are custom metrics with names the agent reserves (`page.…`, see [`NAMES`]), reported once
//! per page view, when it is first hidden (or left, or when a soft navigation ends it):
//! `page.long_frames` (a count), `page.long_frame_blocking` (ms) and `page.long_frame_script`
//! (ms that script's entries lasted in long frames, its route — host kept, query and ids
//! dropped, as `page.slowest.script`'s — in the `script` tag; none without a script with a URL).
//! A browser without the API reports none of them.

use alloc::string::String;
use alloc::vec::Vec;
use pulse_protocol::limits::MAX_SHORT_LEN;
use pulse_protocol::route;

use crate::host::{self, Js};
use crate::measure::metric;
use crate::report::{Outbox, Tags};

/// Every name this module reports, for the README and the dashboard.
pub const NAMES: [&str; 3] = ["page.long_frames", "page.long_frame_blocking", "page.long_frame_script"];

/// Distinct scripts summed per page view; the time of scripts first seen after these is not
/// counted (a page view runs a few dozen scripts at most; this bounds the work per frame).
pub const MAX_SCRIPTS: usize = 64;

/// The long animation frames of one page view.
#[derive(Debug, Default)]
pub struct Summary {
    count: u32,
    blocking: f64,
    /// Time in long frames per script route (its URL normalised and cut as it is reported), in
    /// the order first seen.
    scripts: Vec<(String, f64)>,
    /// Reported (once per page view).
    reported: bool,
}

impl Summary {
    /// Adds a frame that blocked input for `blocking` ms.
    pub fn add(&mut self, blocking: f64) {
        self.count += 1;
        if blocking > 0.0 {
            self.blocking += blocking;
        }
    }

    /// Adds `duration` ms of the script at `url` in a long frame.
    pub fn add_script(&mut self, url: String, duration: f64) {
        if let Some(item) = self.scripts.iter_mut().find(|(u, _)| *u == url) {
            item.1 += duration.max(0.0);
        } else if self.scripts.len() < MAX_SCRIPTS && duration > 0.0 {
            self.scripts.push((url, duration));
        }
    }

    /// The script that spent the most time in long frames (the first of equals), and that time.
    pub fn top_script(&self) -> Option<&(String, f64)> {
        let mut top: Option<&(String, f64)> = None;
        for script in &self.scripts {
            if top.is_none_or(|t| script.1 > t.1) {
                top = Some(script);
            }
        }
        top
    }

    /// A `long-animation-frame` entry.
    pub fn entry(&mut self, entry: Js) {
        self.add(host::num(entry, "blockingDuration"));
        for script in host::items(host::get(entry, "scripts")) {
            if let Some(url) = host::text(script, "sourceURL").filter(|u| !u.is_empty()) {
                // Summed by route, so one script loaded with varying queries (cache-busters,
                // JSONP callbacks) counts once, and a long URL (`data:`) is kept short.
                self.add_script(route::truncate(route::normalise_route(&url), MAX_SHORT_LEN), host::num(script, "duration"));
            }
        }
    }

    /// Reports the page view's summary, the first time only.
    pub fn report(&mut self, out: &mut Outbox) {
        if core::mem::replace(&mut self.reported, true) {
            return;
        }
        let at = host::epoch();
        out.push(metric(NAMES[0], f64::from(self.count), at, &Tags::new()));
        out.push(metric(NAMES[1], self.blocking, at, &Tags::new()));
        if let Some((route, time)) = self.top_script() {
            out.push(metric(NAMES[2], *time, at, &alloc::vec![(String::from("script"), route.clone())]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_reserved_custom_names() {
        for name in NAMES {
            assert!(pulse_protocol::metric::is_custom_name(name), "{name}");
            assert!(name.starts_with(crate::measure::RESERVED), "{name} is kept from record()");
        }
    }

    fn add(s: &mut Summary, blocking: f64, scripts: &[(&str, f64)]) {
        s.add(blocking);
        for (route, duration) in scripts {
            s.add_script(String::from(*route), *duration);
        }
    }

    #[test]
    fn frames_are_counted_blocking_summed_and_the_script_with_most_time_named() {
        let mut s = Summary::default();
        assert_eq!(s.top_script(), None);
        // Frame 1 blocked 70 ms: app.js ran 60 ms and 30 ms, ads.js 90 ms.
        add(&mut s, 70.0, &[("/app.js", 60.0), ("cdn.example/ads.js", 90.0), ("/app.js", 30.0)]);
        // Frame 2 (a long frame of short tasks) blocked nothing; app.js 10 ms more.
        add(&mut s, 0.0, &[("/app.js", 10.0)]);
        assert_eq!((s.count, s.blocking), (2, 70.0));
        // app.js: 60 + 30 + 10 = 100 ms, over ads.js' 90.
        assert_eq!(s.top_script(), Some(&(String::from("/app.js"), 100.0)));
        // Equal times: the first seen stays.
        add(&mut s, 25.0, &[("cdn.example/ads.js", 10.0)]);
        assert_eq!(s.top_script(), Some(&(String::from("/app.js"), 100.0)));
        assert_eq!((s.count, s.blocking), (3, 95.0));
    }

    #[test]
    fn scripts_beyond_the_cap_are_not_counted() {
        let mut s = Summary::default();
        for i in 0..MAX_SCRIPTS + 5 {
            s.add_script(alloc::format!("/s{i}.js"), 1.0 + i as f64);
        }
        assert_eq!(s.scripts.len(), MAX_SCRIPTS);
        assert_eq!(s.top_script().map(|t| t.1), Some(MAX_SCRIPTS as f64));
    }
}
