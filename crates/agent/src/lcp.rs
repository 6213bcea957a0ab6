//! Largest Contentful Paint, as web-vitals computes it.
//!
//! The value is the last `largest-contentful-paint` candidate's start time minus the page's
//! `activationStart` (prerendered pages count from activation), clamped at 0. Only candidates
//! painted before the page was first hidden count, and a page loaded in the background reports
//! nothing. The value is final at the first trusted `keydown` or `click`, or when the page is
//! hidden; scrolling alone does not finalise it (browsers stop emitting candidates on scroll, but
//! web-vitals waits for a real input).

use pulse_protocol::{Rating, Vital};

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
