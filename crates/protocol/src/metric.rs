//! Metric names: the six web vitals, `api` for timed `fetch`/XHR calls, and custom names.

use crate::limits::{MAX_CLS, MAX_DURATION_MS};
use crate::rating::Thresholds;

/// The web vitals Pulse measures, with web-vitals' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vital {
    Fcp,
    Lcp,
    Cls,
    Fid,
    Inp,
    Ttfb,
}

impl Vital {
    /// Every vital, in a stable order.
    pub const ALL: [Vital; 6] = [Vital::Fcp, Vital::Lcp, Vital::Cls, Vital::Fid, Vital::Inp, Vital::Ttfb];

    /// The wire name (`LCP`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Vital::Fcp => "FCP",
            Vital::Lcp => "LCP",
            Vital::Cls => "CLS",
            Vital::Fid => "FID",
            Vital::Inp => "INP",
            Vital::Ttfb => "TTFB",
        }
    }

    /// Parses a wire name; names are case-sensitive, as in web-vitals.
    pub fn from_name(name: &str) -> Option<Vital> {
        Vital::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Thresholds from web-vitals / CrUX (ms, or unitless for CLS).
    pub const fn thresholds(self) -> Thresholds {
        let (good, poor) = match self {
            Vital::Fcp => (1800.0, 3000.0),
            Vital::Lcp => (2500.0, 4000.0),
            Vital::Cls => (0.1, 0.25),
            Vital::Fid => (100.0, 300.0),
            Vital::Inp => (200.0, 500.0),
            Vital::Ttfb => (800.0, 1800.0),
        };
        Thresholds { good, poor }
    }

    /// Largest plausible value; anything above is rejected rather than stored.
    pub const fn max_value(self) -> f64 {
        match self {
            Vital::Cls => MAX_CLS,
            _ => MAX_DURATION_MS,
        }
    }

    /// The unit of the value, for people reading the API.
    pub const fn unit(self) -> &'static str {
        match self {
            Vital::Cls => "score",
            _ => "ms",
        }
    }
}

/// What a metric's `name` says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricName<'a> {
    Vital(Vital),
    /// A timed `fetch` or `XMLHttpRequest` (`name: "api"`).
    Api,
    /// A user metric or user-timing measure matching [`is_custom_name`].
    Custom(&'a str),
}

/// The name of API-call metrics on the wire.
pub const API: &str = "api";

impl<'a> MetricName<'a> {
    /// Classifies a wire name, or `None` when it is neither known nor a valid custom name.
    pub fn parse(name: &'a str) -> Option<MetricName<'a>> {
        if let Some(vital) = Vital::from_name(name) {
            Some(MetricName::Vital(vital))
        } else if name == API {
            Some(MetricName::Api)
        } else if is_custom_name(name) {
            Some(MetricName::Custom(name))
        } else {
            None
        }
    }
}

/// The fewest samples that make percentile `p` (in %) mean something: ⌈10/(1−p/100)⌉, a sample
/// with 10 values above the percentile (CloudWatch's rule: p50 → 20, p75 → 40, p90 → 100, p95 →
/// 200, p99 → 1000), and 1000 for p100. Computed as 1000/(100−p), a quotient within 10⁻⁹ of a whole
/// number taken as that number: in floating point `1 − 0.9` is 0.09999999999999998, and the
/// ceiling of 10 over it made p90 need 101.
pub fn percentile_min_samples(p: f64) -> u64 {
    if p >= 100.0 {
        return 1_000;
    }
    let quotient = 1_000.0 / (100.0 - p);
    // Integer steps, not `round`/`ceil`: those are not in `core` at the crate's rust-version.
    let nearest = (quotient + 0.5) as u64;
    let truncated = quotient as u64;
    if (quotient - nearest as f64).abs() <= 1e-9 * quotient {
        nearest
    } else if (truncated as f64) < quotient {
        truncated + 1
    } else {
        truncated
    }
}

/// Whether `name` matches `[a-z][a-z0-9_.:-]{0,63}`, the custom-metric pattern.
pub fn is_custom_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            first.is_ascii_lowercase()
                && rest.len() < crate::limits::MAX_CUSTOM_NAME_LEN
                && rest.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-'))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rating::Rating;
    #[allow(unused_imports)]
    use alloc::{format, string::ToString, vec};

    #[test]
    fn percentile_min_samples_are_exact() {
        let got = [50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0].map(percentile_min_samples);
        assert_eq!(got, [20, 40, 100, 200, 1_000, 10_000, 1_000]);
        assert_eq!(percentile_min_samples(33.3), 15, "⌈14.99…⌉");
    }

    #[test]
    fn thresholds_at_the_boundaries() {
        // Good is inclusive of the first threshold, poor exclusive of the second.
        let cases = [
            (Vital::Lcp, 2500.0, 2500.1, 4000.0, 4000.1),
            (Vital::Fcp, 1800.0, 1800.5, 3000.0, 3000.5),
            (Vital::Inp, 200.0, 201.0, 500.0, 501.0),
            (Vital::Fid, 100.0, 100.01, 300.0, 300.01),
            (Vital::Ttfb, 800.0, 800.1, 1800.0, 1800.1),
            (Vital::Cls, 0.1, 0.1001, 0.25, 0.2501),
        ];
        for (vital, good, just_ni, ni, just_poor) in cases {
            let t = vital.thresholds();
            assert_eq!(t.rate(0.0), Rating::Good, "{vital:?} at 0");
            assert_eq!(t.rate(good), Rating::Good, "{vital:?} at {good}");
            assert_eq!(t.rate(just_ni), Rating::NeedsImprovement, "{vital:?} at {just_ni}");
            assert_eq!(t.rate(ni), Rating::NeedsImprovement, "{vital:?} at {ni}");
            assert_eq!(t.rate(just_poor), Rating::Poor, "{vital:?} at {just_poor}");
        }
    }

    #[test]
    fn names_round_trip_and_classify() {
        for vital in Vital::ALL {
            assert_eq!(Vital::from_name(vital.name()), Some(vital));
            assert_eq!(MetricName::parse(vital.name()), Some(MetricName::Vital(vital)));
        }
        assert_eq!(Vital::from_name("lcp"), None, "names are case-sensitive");
        assert_eq!(MetricName::parse("api"), Some(MetricName::Api));
        assert_eq!(MetricName::parse("cart.render"), Some(MetricName::Custom("cart.render")));
    }

    #[test]
    fn custom_name_pattern() {
        for ok in ["a", "checkout:step-2", "x.y_z", &format!("a{}", "b".repeat(63))] {
            assert!(is_custom_name(ok), "{ok} should be accepted");
        }
        for bad in ["", "1abc", "Abc", "a b", "a/b", "é", "a'; DROP TABLE metrics; --", &format!("a{}", "b".repeat(64))] {
            assert!(!is_custom_name(bad), "{bad} should be refused");
        }
    }
}
