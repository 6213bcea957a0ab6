//! Log-scale histograms: the rollups that answer long ranges fast.
//!
//! A value `v > 0` falls in bin `floor(ln v / ln 1.02) + OFFSET`, so a bin is 2 % wide and a
//! percentile read from it (interpolated inside the bin, clamped to the exact minimum and
//! maximum) is within 1 % of a value of the right rank; values ≤ 0 fall in bin 0. Unlike t-digest
//! states, histograms add and subtract: the finalizer keeps, per key of a rollup shape, the
//! **running total** of every value first reported before a point in time (`running_<shape>`),
//! so any range of whole days is the difference of two rows per key, however long it is. The
//! site-wide series reads one histogram per hour (`hist_site_1h`).
//!
//! A key's running total starts when it first has values (`since`) and is carried from point to
//! point while it had values in the last [`RUNNING_DAYS`]; one that comes back after that starts
//! again from zero with a later `since`. Two points of a key subtract only when their `since` is
//! the same; otherwise the later one holds only values after the earlier point.

use std::collections::HashMap;

use clickhouse::Row;
use serde::Deserialize;

/// `ln 1.02`: each bin is 2 % wider than the one before.
const BIN_LN: f64 = 0.019_802_627_296_179_713;
/// The bin of 1.0; bins below it hold values down to 1.02^-4095 (about 1e-35).
const OFFSET: i64 = 4096;

/// Days of daily running-total points kept; longer or older ranges are read from the t-digest
/// day rollups.
pub const RUNNING_DAYS: u32 = 35;
/// Days of hourly running-total points kept (they only serve the watermark).
pub const RUNNING_HOUR_DAYS: u32 = 3;

/// The SQL of the bin of `value` (a `UInt16`).
pub fn bin_sql(value: &str) -> String {
    format!("if({value} <= 0, toUInt16(0), toUInt16(least(65535, greatest(1, floor(log({value}) / {BIN_LN}) + {OFFSET}))))")
}

/// The value at fraction `f` (0..1) of bin `bin`.
fn bin_value(bin: u16, f: f64) -> f64 {
    if bin == 0 {
        return 0.0;
    }
    (((i64::from(bin) - OFFSET) as f64 + f) * BIN_LN).exp()
}

/// One row of histogram data as the queries read it: a running total at a point (`key`,
/// `since`, `at` set), an hour of `hist_site_1h`, or the not-yet-final values (`key` 0).
#[derive(Debug, Clone, Row, Deserialize)]
pub struct HistRow {
    pub grp: String,
    pub t: u32,
    pub key: u64,
    pub since: u32,
    pub at: u32,
    pub n: u64,
    pub total: f64,
    pub good: u64,
    pub ni: u64,
    pub poor: u64,
    pub lo: f64,
    pub hi: f64,
    pub bins: Vec<u16>,
    pub counts: Vec<u64>,
}

/// A histogram with its count, sum, rating counts and (when known) exact minimum and maximum.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    pub n: i64,
    pub total: f64,
    pub good: i64,
    pub ni: i64,
    pub poor: i64,
    pub lo: f64,
    pub hi: f64,
    /// Counts of bins `first..first + counts.len()`.
    first: u16,
    counts: Vec<i64>,
}

impl Default for Hist {
    fn default() -> Hist {
        Hist { n: 0, total: 0.0, good: 0, ni: 0, poor: 0, lo: f64::INFINITY, hi: f64::NEG_INFINITY, first: 0, counts: Vec::new() }
    }
}

impl Hist {
    /// Adds `row` (`sign` 1) or takes it away (`sign` -1). Minimum and maximum only widen.
    pub fn add(&mut self, row: &HistRow, sign: i64) {
        self.n += sign * row.n as i64;
        self.total += sign as f64 * row.total;
        self.good += sign * row.good as i64;
        self.ni += sign * row.ni as i64;
        self.poor += sign * row.poor as i64;
        self.widen(row.lo, row.hi);
        let (Some(&lo), Some(&hi)) = (row.bins.iter().min(), row.bins.iter().max()) else { return };
        self.cover(lo, hi);
        for (bin, count) in row.bins.iter().zip(&row.counts) {
            if let Some(c) = self.counts.get_mut(usize::from(bin - self.first)) {
                *c += sign * *count as i64;
            }
        }
    }

    /// Adds another histogram.
    pub fn merge(&mut self, other: &Hist) {
        self.n += other.n;
        self.total += other.total;
        self.good += other.good;
        self.ni += other.ni;
        self.poor += other.poor;
        self.widen(other.lo, other.hi);
        if other.counts.is_empty() {
            return;
        }
        let last = other.first + (other.counts.len() - 1) as u16;
        self.cover(other.first, last);
        for (i, count) in other.counts.iter().enumerate() {
            if let Some(c) = self.counts.get_mut(usize::from(other.first - self.first) + i) {
                *c += count;
            }
        }
    }

    /// Takes in an exact minimum and maximum (NaN: not known).
    pub fn widen(&mut self, lo: f64, hi: f64) {
        if lo.is_finite() {
            self.lo = self.lo.min(lo);
        }
        if hi.is_finite() {
            self.hi = self.hi.max(hi);
        }
    }

    /// Grows the bins held to `lo..=hi`.
    fn cover(&mut self, lo: u16, hi: u16) {
        if self.counts.is_empty() {
            self.first = lo;
            self.counts = vec![0; usize::from(hi - lo) + 1];
            return;
        }
        if lo < self.first {
            let mut grown = vec![0; usize::from(self.first - lo)];
            grown.append(&mut self.counts);
            self.counts = grown;
            self.first = lo;
        }
        let last = self.first + (self.counts.len() - 1) as u16;
        if hi > last {
            self.counts.resize(self.counts.len() + usize::from(hi - last), 0);
        }
    }

    /// The `level` quantile (0..1) as ClickHouse's `quantileExact` defines it — the value at
    /// 0-based rank ⌊level·n⌋ — located in its bin and placed inside it by its rank there (on the
    /// log scale), clamped to the minimum and maximum when they are known. NaN when empty.
    pub fn quantile(&self, level: f64) -> f64 {
        let total: i64 = self.counts.iter().map(|c| (*c).max(0)).sum();
        if total == 0 {
            return f64::NAN;
        }
        let rank = ((level.clamp(0.0, 1.0) * total as f64).floor() as i64).min(total - 1);
        let mut below = 0;
        let mut value = f64::NAN;
        for (i, count) in self.counts.iter().enumerate() {
            let count = (*count).max(0);
            if below + count > rank {
                value = bin_value(self.first + i as u16, ((rank - below) as f64 + 0.5) / count as f64);
                break;
            }
            below += count;
        }
        if self.lo.is_finite() {
            value = value.max(self.lo);
        }
        if self.hi.is_finite() {
            value = value.min(self.hi);
        }
        value
    }
}

/// Sums rows by group and time bucket: running-total points as the difference of the two points
/// `from` and `to` of each key (the earlier one taken away only when it has the same `since`),
/// every other row (`key` 0) as it is.
pub fn combine(rows: &[HistRow], from: u32, to: u32) -> HashMap<(String, u32), Hist> {
    let mut out: HashMap<(String, u32), Hist> = HashMap::new();
    let mut earlier: HashMap<u64, &HistRow> = HashMap::new();
    for row in rows.iter().filter(|r| r.key != 0 && r.at == from) {
        earlier.insert(row.key, row);
    }
    for row in rows {
        if row.key == 0 {
            out.entry((row.grp.clone(), row.t)).or_default().add(row, 1);
        } else if row.at == to && to != from {
            let hist = out.entry((row.grp.clone(), row.t)).or_default();
            hist.add(row, 1);
            if let Some(before) = earlier.get(&row.key).filter(|b| b.since == row.since) {
                hist.add(before, -1);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin_of(v: f64) -> u16 {
        if v <= 0.0 {
            0
        } else {
            ((v.ln() / BIN_LN).floor() as i64 + OFFSET).clamp(1, 65_535) as u16
        }
    }

    fn row(key: u64, since: u32, at: u32, values: &[f64]) -> HistRow {
        let mut bins: Vec<u16> = values.iter().map(|v| bin_of(*v)).collect();
        bins.sort_unstable();
        bins.dedup();
        let counts = bins.iter().map(|b| values.iter().filter(|v| bin_of(**v) == *b).count() as u64).collect();
        HistRow {
            grp: "/a".into(),
            t: 0,
            key,
            since,
            at,
            n: values.len() as u64,
            total: values.iter().sum(),
            good: 0,
            ni: 0,
            poor: 0,
            lo: f64::NAN,
            hi: f64::NAN,
            bins,
            counts,
        }
    }

    #[test]
    fn a_percentile_is_within_one_percent_of_the_exact_one() {
        let values: Vec<f64> = (1..=10_000).map(|i| 300.0 + f64::from(i).powf(1.3) * 0.9).collect();
        let hist = combine(&[row(0, 0, 0, &values)], 0, 0).remove(&("/a".into(), 0)).expect("group");
        for level in [0.5, 0.75, 0.95, 0.99] {
            let exact = values[(level * values.len() as f64) as usize];
            let got = hist.quantile(level);
            assert!((got / exact - 1.0).abs() < 0.01, "p{level}: {got} vs {exact}");
        }
        assert_eq!(hist.n, 10_000);
    }

    #[test]
    fn a_range_is_the_later_point_less_the_earlier_one_of_the_same_run() {
        let (old, new): (Vec<f64>, Vec<f64>) = ((1..=100).map(f64::from).collect(), (1..=50).map(|i| 1_000.0 + f64::from(i)).collect());
        let both: Vec<f64> = old.iter().chain(&new).copied().collect();
        // Key 1: the same run at both points; key 2: a run that started after the earlier
        // point (its earlier row, of an older run, is not taken away).
        let mut two_new = row(2, 9, 20, &new);
        two_new.grp = "/b".into();
        let rows = [row(1, 5, 10, &old), row(1, 5, 20, &both), row(2, 1, 10, &old), two_new];
        let out = combine(&rows, 10, 20);
        let a = &out[&("/a".to_owned(), 0)];
        assert_eq!(a.n, 50);
        assert!(a.quantile(0.0) > 1_000.0 * 0.98, "{}", a.quantile(0.0));
        let b = &out[&("/b".to_owned(), 0)];
        assert_eq!(b.n, 50);
        // A key with no row at the later point had no values since: no group.
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn percentiles_are_clamped_to_the_exact_extremes_and_zero_has_its_bin() {
        let mut r = row(0, 0, 0, &[0.0, 0.0, 0.0, 0.2]);
        r.lo = 0.0;
        r.hi = 0.2;
        let mut hist = Hist::default();
        hist.add(&r, 1);
        assert_eq!(hist.quantile(0.5), 0.0);
        assert!((hist.quantile(1.0) / 0.2 - 1.0).abs() < 0.01, "{}", hist.quantile(1.0));
        // Clamped: never beyond the exact maximum.
        assert!(hist.quantile(1.0) <= 0.2);
        let mut other = Hist::default();
        let mut five = row(0, 0, 0, &[5.0]);
        (five.lo, five.hi) = (5.0, 5.0);
        other.add(&five, 1);
        hist.merge(&other);
        assert_eq!(hist.n, 5);
        assert!(hist.quantile(1.0) <= 5.0 && (hist.quantile(1.0) / 5.0 - 1.0).abs() < 0.01);
        assert!(Hist::default().quantile(0.5).is_nan());
    }
}
