//! Honest comparisons of two sets of real-user values: the relative change of a percentile (or
//! the mean) from `a` to `b`, with a 95 % confidence interval and a verdict.
//!
//! The interval comes from a **bootstrap over page views** (percentile method): each side is
//! resampled with replacement `RESAMPLES` times, the statistic taken on each resample, and the
//! 2.5th and 97.5th percentiles of `stat(b*) / stat(a*) − 1` bound the change. Why the bootstrap:
//! real-user timings are skewed and heavy-tailed, so normal-theory intervals for a percentile are
//! wrong exactly where it matters (the tail), and a distribution-free order-statistic interval
//! exists for one percentile but not for the ratio of two; the bootstrap needs no distributional
//! assumption, handles the ratio directly, and is deterministic here (seeded).
//!
//! **A zero baseline.** A statistic of 0 on side `a` is common (most page views have a CLS of 0,
//! so its p75 often is 0). The relative change from 0 is then taken on the extended reals: 0 when
//! `b`'s is 0 too, +∞ when it rose (−∞ when it fell below 0), in the point estimate and in every
//! resample alike. No resample is dropped — dropping those with `a* = 0` keeps only the resamples
//! where `a` happened to be high and biases the interval towards "improvement". An infinite
//! change meets any `min_change`; significance still needs the interval to exclude 0 (its sign
//! in each resample is the sign of `b* − a*`). Because a ratio cannot tell how large a rise from
//! 0 is, every comparison also gives the absolute difference `b − a` in the metric's units, with
//! its interval from the same resamples. Each side is
//! capped at `MAX_VALUES` values (an evenly spaced subsample of the sorted values, which keeps the
//! distribution's shape), which bounds the work at ~10⁷ steps.

/// Resamples per comparison.
pub const RESAMPLES: usize = 400;
/// Most values used per side.
pub const MAX_VALUES: usize = 20_000;

/// The statistic compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    /// A percentile in (0, 100], ClickHouse's `quantileExact` definition: the value at 0-based
    /// rank ⌊p·n⌋ of the sorted values (clamped).
    Percentile(f64),
    Mean,
}

/// What the comparison concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Regression,
    Improvement,
    NoSignificantChange,
    InsufficientData,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Regression => "regression",
            Verdict::Improvement => "improvement",
            Verdict::NoSignificantChange => "no_significant_change",
            Verdict::InsufficientData => "insufficient_data",
        }
    }
}

/// The result of [`compare`].
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub a: f64,
    pub b: f64,
    /// `b / a − 1` ([`relative_change`]: ±∞ from a zero `a`).
    pub change: f64,
    pub ci95: (f64, f64),
    /// `b − a`, in the metric's units.
    pub difference: f64,
    pub difference_ci95: (f64, f64),
    pub verdict: Verdict,
}

/// `b / a − 1`, on the extended reals when `a` is 0: 0 when `b` is 0 too, ±∞ as `b` rose or fell.
pub fn relative_change(a: f64, b: f64) -> f64 {
    if a != 0.0 {
        b / a - 1.0
    } else if b == 0.0 {
        0.0
    } else {
        f64::INFINITY.copysign(b)
    }
}

/// `Statistic::Percentile(p)` of sorted values.
pub fn statistic(sorted: &[f64], stat: Statistic) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    match stat {
        Statistic::Percentile(p) => sorted[((p / 100.0 * sorted.len() as f64).floor() as usize).min(sorted.len() - 1)],
        Statistic::Mean => sorted.iter().sum::<f64>() / sorted.len() as f64,
    }
}

/// The smallest sample that makes a percentile meaningful: ⌈10/(1−p)⌉ (p75 → 40, p90 → 100,
/// [`pulse_protocol::metric::percentile_min_samples`]), and 10 for the mean.
pub fn min_samples(stat: Statistic) -> u64 {
    match stat {
        Statistic::Percentile(p) => pulse_protocol::metric::percentile_min_samples(p),
        Statistic::Mean => 10,
    }
}

/// FNV-1a over the parts' bytes, in order: a stable 64-bit hash (alert fingerprints, bootstrap
/// seeds), the same in every process and version.
pub fn fnv1a(parts: &[&str]) -> u64 {
    parts.iter().flat_map(|p| p.bytes()).fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A small, seeded generator (xorshift64*): deterministic answers for the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize
    }
}

/// At most `MAX_VALUES` of the sorted values, evenly spaced.
fn capped(mut values: Vec<f64>) -> Vec<f64> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    if values.len() <= MAX_VALUES {
        return values;
    }
    let step = values.len() as f64 / MAX_VALUES as f64;
    (0..MAX_VALUES).map(|i| values[((i as f64 + 0.5) * step) as usize]).collect()
}

fn resampled(sorted: &[f64], stat: Statistic, rng: &mut Rng, scratch: &mut Vec<f64>) -> f64 {
    scratch.clear();
    scratch.extend((0..sorted.len()).map(|_| sorted[rng.below(sorted.len())]));
    match stat {
        Statistic::Percentile(p) => {
            let k = ((p / 100.0 * scratch.len() as f64).floor() as usize).min(scratch.len() - 1);
            *scratch.select_nth_unstable_by(k, f64::total_cmp).1
        }
        Statistic::Mean => scratch.iter().sum::<f64>() / scratch.len() as f64,
    }
}

/// Compares `b` with `a`. `higher_is_worse`: durations, CLS, error rates (a rise is a
/// regression); `min_change`: the smallest relative change that counts (the verdict needs both
/// significance and size); `min_samples`: fewer values on either side give `insufficient_data`.
pub fn compare(
    a: Vec<f64>,
    b: Vec<f64>,
    stat: Statistic,
    higher_is_worse: bool,
    min_change: f64,
    min_samples: u64,
    seed: u64,
) -> Comparison {
    let (a, b) = (capped(a), capped(b));
    let (sa, sb) = (statistic(&a, stat), statistic(&b, stat));
    let (change, difference) = (relative_change(sa, sb), sb - sa);
    let none = (f64::NAN, f64::NAN);
    if (a.len() as u64) < min_samples.max(2) || (b.len() as u64) < min_samples.max(2) {
        return Comparison { a: sa, b: sb, change, ci95: none, difference, difference_ci95: none, verdict: Verdict::InsufficientData };
    }
    let mut rng = Rng(seed | 1);
    let mut scratch = Vec::with_capacity(a.len().max(b.len()));
    let (mut changes, mut differences): (Vec<f64>, Vec<f64>) = (0..RESAMPLES)
        .map(|_| {
            let ra = resampled(&a, stat, &mut rng, &mut scratch);
            let rb = resampled(&b, stat, &mut rng, &mut scratch);
            (relative_change(ra, rb), rb - ra)
        })
        .unzip();
    changes.sort_by(f64::total_cmp);
    differences.sort_by(f64::total_cmp);
    let interval = |sorted: &[f64]| {
        let at = |q: f64| sorted[((q * sorted.len() as f64) as usize).min(sorted.len() - 1)];
        (at(0.025), at(0.975))
    };
    let (ci95, difference_ci95) = (interval(&changes), interval(&differences));
    let worse = if higher_is_worse { ci95.0 > 0.0 && change >= min_change } else { ci95.1 < 0.0 && -change >= min_change };
    let better = if higher_is_worse { ci95.1 < 0.0 && -change >= min_change } else { ci95.0 > 0.0 && change >= min_change };
    let verdict = if worse {
        Verdict::Regression
    } else if better {
        Verdict::Improvement
    } else {
        Verdict::NoSignificantChange
    };
    Comparison { a: sa, b: sb, change, ci95, difference, difference_ci95, verdict }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log-normal-ish LCP values (skewed, heavy right tail), scaled by `scale`.
    fn lcp(n: usize, seed: u64, scale: f64) -> Vec<f64> {
        let mut rng = Rng(seed | 1);
        (0..n)
            .map(|_| {
                // Sum of uniforms ≈ normal; exp of it is skewed like real timings.
                let z: f64 = (0..12).map(|_| rng.below(1_000_000) as f64 / 1e6).sum::<f64>() - 6.0;
                scale * 2000.0 * (0.5 * z).exp()
            })
            .collect()
    }

    #[test]
    fn a_ten_percent_shift_of_the_p75_is_a_regression() {
        let c = compare(lcp(5_000, 1, 1.0), lcp(5_000, 2, 1.1), Statistic::Percentile(75.0), true, 0.05, 40, 7);
        assert_eq!(c.verdict, Verdict::Regression, "{c:?}");
        assert!((c.change - 0.1).abs() < 0.05, "{c:?}");
        assert!(c.ci95.0 > 0.0 && c.ci95.0 < c.change && c.change < c.ci95.1, "{c:?}");
        // The same shift downwards is an improvement.
        let c = compare(lcp(5_000, 1, 1.1), lcp(5_000, 2, 1.0), Statistic::Percentile(75.0), true, 0.05, 40, 7);
        assert_eq!(c.verdict, Verdict::Improvement, "{c:?}");
    }

    #[test]
    fn identical_distributions_rarely_look_different() {
        let mut calm = 0;
        let mut covered = 0;
        for trial in 0..100u64 {
            let c = compare(lcp(1_000, 100 + trial, 1.0), lcp(1_000, 500 + trial, 1.0), Statistic::Percentile(75.0), true, 0.2, 40, trial);
            calm += usize::from(c.verdict == Verdict::NoSignificantChange);
            covered += usize::from(c.ci95.0 <= 0.0 && 0.0 <= c.ci95.1);
        }
        assert!(calm >= 95, "{calm} of 100 trials said no_significant_change");
        // The interval itself is honest: it holds the true change (0) about 95 % of the time.
        assert!(covered >= 88, "the 95 % interval held the true change in only {covered} of 100 trials");
    }

    #[test]
    fn eight_samples_are_not_enough() {
        let c = compare(
            lcp(8, 1, 1.0),
            lcp(5_000, 2, 2.0),
            Statistic::Percentile(75.0),
            true,
            0.2,
            min_samples(Statistic::Percentile(75.0)),
            1,
        );
        assert_eq!(c.verdict, Verdict::InsufficientData);
        assert_eq!(min_samples(Statistic::Percentile(95.0)), 200);
        assert_eq!(min_samples(Statistic::Percentile(90.0)), 100, "not 101 from 1 − 0.9 in floating point");
    }

    #[test]
    fn percentiles_follow_quantile_exact_and_caps_keep_the_shape() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(statistic(&v, Statistic::Percentile(75.0)), 8.0, "rank ⌊0.75·10⌋ = 7 → 8");
        assert_eq!(statistic(&v, Statistic::Percentile(100.0)), 10.0);
        let big = lcp(100_000, 3, 1.0);
        let mut sorted = big.clone();
        sorted.sort_by(f64::total_cmp);
        let full = statistic(&sorted, Statistic::Percentile(75.0));
        let cap = capped(big);
        assert_eq!(cap.len(), MAX_VALUES);
        assert!((statistic(&cap, Statistic::Percentile(75.0)) / full - 1.0).abs() < 0.01);
    }

    /// `n` zeros and `m` times `value`, e.g. CLS: most page views do not shift at all.
    fn zeros_and(n: usize, m: usize, value: f64) -> Vec<f64> {
        vec![0.0; n].into_iter().chain(vec![value; m]).collect()
    }

    #[test]
    fn a_rise_from_a_zero_baseline_is_a_regression_not_missing_data() {
        // p75 of a is 0 (80 % zeros), of b 0.1 (50 % zeros): thousands of samples, a clear rise.
        let c = compare(zeros_and(1_600, 400, 0.1), zeros_and(1_000, 1_000, 0.1), Statistic::Percentile(75.0), true, 0.2, 40, 5);
        assert_eq!(c.verdict, Verdict::Regression, "{c:?}");
        assert_eq!((c.a, c.b, c.change), (0.0, 0.1, f64::INFINITY), "{c:?}");
        assert_eq!((c.difference, c.difference_ci95), (0.1, (0.1, 0.1)), "{c:?}");
        // Zero on both sides is no change, with an interval.
        let c = compare(zeros_and(1_600, 400, 0.1), zeros_and(1_600, 400, 0.2), Statistic::Percentile(75.0), true, 0.2, 40, 5);
        assert_eq!((c.change, c.ci95, c.verdict), (0.0, (0.0, 0.0), Verdict::NoSignificantChange), "{c:?}");
    }

    #[test]
    fn resamples_whose_baseline_is_zero_are_kept() {
        // The p75 of both sides sits on the edge between the zeros and the rest: about a quarter
        // of the resamples of a have a p75 of 0. Dropping them kept only the resamples where a
        // was high, and this came out as a significant 20 % improvement.
        let c = compare(zeros_and(740, 260, 0.05), zeros_and(740, 260, 0.04), Statistic::Percentile(75.0), true, 0.1, 40, 9);
        assert_eq!(c.verdict, Verdict::NoSignificantChange, "{c:?}");
        assert!((c.change + 0.2).abs() < 1e-9, "{c:?}");
        assert_eq!(c.ci95.1, f64::INFINITY, "resamples where a* = 0 < b* bound the interval: {c:?}");
        assert!(c.difference_ci95.0 < 0.0 && c.difference_ci95.1 > 0.0, "{c:?}");
    }

    #[test]
    fn shares_that_fall_are_regressions_when_higher_is_better() {
        let c = compare(
            vec![1.0; 900].into_iter().chain(vec![0.0; 100]).collect(),
            vec![1.0; 600].into_iter().chain(vec![0.0; 400]).collect(),
            Statistic::Mean,
            false,
            0.1,
            10,
            3,
        );
        assert_eq!(c.verdict, Verdict::Regression, "{c:?}");
    }
}
