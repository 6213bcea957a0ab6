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

use foldhash::{HashMap, HashMapExt};

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

/// The bin of `value`, as [`bin_sql`] computes it.
pub fn bin(value: f64) -> u16 {
    if value.is_nan() || value <= 0.0 {
        0
    } else {
        ((value.ln() / BIN_LN).floor() as i64 + OFFSET).clamp(1, 65_535) as u16
    }
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
    /// Counts modulo 2³² (running totals can pass it; their differences cannot).
    pub counts: Vec<u32>,
}

/// A histogram with its count, sum, rating counts and (when known) exact minimum and maximum.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    pub n: i64,
    pub total: f64,
    pub good: i64,
    pub ni: i64,
    pub poor: i64,
    lo: f64,
    hi: f64,
    /// Whether `lo` and `hi` are exact (every part added brought its own).
    extremes_known: bool,
    /// Counts of bins `first..first + counts.len()`.
    first: u16,
    counts: Vec<i64>,
}

impl Default for Hist {
    fn default() -> Hist {
        Hist {
            n: 0,
            total: 0.0,
            good: 0,
            ni: 0,
            poor: 0,
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            extremes_known: true,
            first: 0,
            counts: Vec::new(),
        }
    }
}

impl Hist {
    /// Adds `row`.
    pub fn add(&mut self, row: &HistRow) {
        self.n += row.n as i64;
        self.total += row.total;
        self.good += row.good as i64;
        self.ni += row.ni as i64;
        self.poor += row.poor as i64;
        self.take_extremes(row.lo, row.hi);
        self.add_bins(&row.bins, &row.counts, 1);
    }

    /// Adds one value with its rating (0 none, 1 good, 2 needs improvement, 3 poor).
    pub fn add_value(&mut self, value: f64, rating: u8) {
        self.n += 1;
        self.total += value;
        match rating {
            1 => self.good += 1,
            2 => self.ni += 1,
            3 => self.poor += 1,
            _ => {}
        }
        self.take_extremes(value, value);
        self.add_bins(&[bin(value)], &[1], 1);
    }

    /// Adds `later` less `earlier`: two running totals of one key and run (the bins of the
    /// earlier are among the later's; counts are kept modulo 2³²).
    pub fn add_difference(&mut self, later: &HistRow, earlier: &HistRow) {
        self.n += later.n as i64 - earlier.n as i64;
        self.total += later.total - earlier.total;
        self.good += later.good as i64 - earlier.good as i64;
        self.ni += later.ni as i64 - earlier.ni as i64;
        self.poor += later.poor as i64 - earlier.poor as i64;
        self.extremes_known = false;
        if later.n <= u64::from(u32::MAX) {
            // No count of this run has wrapped: add one, take the other away.
            self.add_bins(&later.bins, &later.counts, 1);
            self.add_bins(&earlier.bins, &earlier.counts, -1);
            return;
        }
        // Bin by bin, modulo 2³².
        let before: HashMap<u16, u32> = earlier.bins.iter().copied().zip(earlier.counts.iter().copied()).collect();
        let counts: Vec<u32> =
            later.bins.iter().zip(&later.counts).map(|(bin, c)| c.wrapping_sub(before.get(bin).copied().unwrap_or(0))).collect();
        self.add_bins(&later.bins, &counts, 1);
    }

    fn add_bins(&mut self, bins: &[u16], counts: &[u32], sign: i64) {
        let (Some(lo), Some(hi)) = (bins.iter().min(), bins.iter().max()) else { return };
        self.cover(*lo, *hi);
        for (bin, count) in bins.iter().zip(counts) {
            if let Some(c) = self.counts.get_mut(usize::from(bin - self.first)) {
                *c += sign * i64::from(*count);
            }
        }
    }

    /// Takes in a part's exact minimum and maximum (NaN: not known).
    fn take_extremes(&mut self, lo: f64, hi: f64) {
        if lo.is_finite() && hi.is_finite() {
            self.lo = self.lo.min(lo);
            self.hi = self.hi.max(hi);
        } else {
            self.extremes_known = false;
        }
    }

    /// The minimum and maximum: exact when every part brought its own, else the outer edges of
    /// the lowest and highest bins holding values (within 2 % of the exact ones, never inside).
    pub fn extremes(&self) -> (f64, f64) {
        if self.extremes_known {
            return (self.lo, self.hi);
        }
        let mut held = self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, _)| self.first + i as u16);
        let Some(lowest) = held.next() else { return (f64::NAN, f64::NAN) };
        let highest = held.next_back().unwrap_or(lowest);
        (bin_value(lowest, 0.0).min(self.lo), if highest == 0 { 0.0 } else { bin_value(highest, 1.0) }.max(self.hi))
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

    /// The `levels` quantiles (0..1, ascending) as ClickHouse's `quantileExact` defines them —
    /// the value at 0-based rank ⌊level·n⌋ — each located in its bin and placed inside it by its
    /// rank there (on the log scale), clamped to the [`Hist::extremes`]. NaN when empty.
    pub fn quantiles(&self, levels: &[f64]) -> Vec<f64> {
        let total: i64 = self.counts.iter().map(|c| (*c).max(0)).sum();
        if total == 0 {
            return vec![f64::NAN; levels.len()];
        }
        let (lo, hi) = self.extremes();
        let mut out = Vec::with_capacity(levels.len());
        let (mut below, mut i) = (0, 0);
        for level in levels {
            let rank = ((level.clamp(0.0, 1.0) * total as f64).floor() as i64).min(total - 1);
            // Bins wholly below the rank (levels ascend, so the walk goes on from there).
            while let Some(count) = self.counts.get(i).map(|c| (*c).max(0)) {
                if below + count > rank {
                    break;
                }
                below += count;
                i += 1;
            }
            let count = self.counts.get(i).map_or(1, |c| (*c).max(1));
            let value = bin_value(self.first + i as u16, ((rank - below) as f64 + 0.5) / count as f64);
            out.push(if lo <= hi { value.clamp(lo, hi) } else { value });
        }
        out
    }

    /// The `level` quantile (see [`Hist::quantiles`]).
    pub fn quantile(&self, level: f64) -> f64 {
        self.quantiles(&[level])[0]
    }
}

/// The histogram of `key` in `hists`, made when missing. (A lookup first: `entry` with an owned
/// `String` key measured ten times slower here.)
pub fn slot(hists: &mut HashMap<(String, u32), Hist>, key: (String, u32)) -> &mut Hist {
    if !hists.contains_key(&key) {
        hists.insert(key.clone(), Hist::default());
    }
    hists.get_mut(&key).expect("inserted above")
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
            slot(&mut out, (row.grp.clone(), row.t)).add(row);
        } else if row.at == to && to != from {
            let hist = slot(&mut out, (row.grp.clone(), row.t));
            match earlier.get(&row.key).filter(|b| b.since == row.since) {
                Some(before) => hist.add_difference(row, before),
                None => {
                    hist.add(row);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: u64, since: u32, at: u32, values: &[f64]) -> HistRow {
        let mut bins: Vec<u16> = values.iter().map(|v| bin(*v)).collect();
        bins.sort_unstable();
        bins.dedup();
        let counts = bins.iter().map(|b| values.iter().filter(|v| bin(**v) == *b).count() as u32).collect();
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
    fn percentiles_are_clamped_to_the_extremes_and_zero_has_its_bin() {
        let mut r = row(0, 0, 0, &[0.0, 0.0, 0.0, 0.2]);
        (r.lo, r.hi) = (0.0, 0.2);
        let mut hist = Hist::default();
        hist.add(&r);
        assert_eq!(hist.quantile(0.5), 0.0);
        assert!((hist.quantile(1.0) / 0.2 - 1.0).abs() < 0.01, "{}", hist.quantile(1.0));
        // Clamped: never beyond the exact maximum.
        assert!(hist.quantile(1.0) <= 0.2);
        assert_eq!(hist.extremes(), (0.0, 0.2));
        // A part without exact extremes (a running total): the outer edges of the bins.
        hist.add(&row(0, 0, 0, &[5.0]));
        assert_eq!(hist.n, 5);
        let (lo, hi) = hist.extremes();
        assert_eq!(lo, 0.0);
        assert!((5.0..5.0 * 1.02).contains(&hi), "{hi}");
        assert!(Hist::default().quantile(0.5).is_nan());
    }

    #[test]
    fn running_totals_subtract_modulo_two_to_the_32() {
        let mut earlier = row(7, 1, 10, &[3.0]);
        let mut later = row(7, 1, 20, &[3.0, 3.0, 3.0]);
        // Counts past 2³² wrap around in both; their difference is still right.
        earlier.counts = vec![u32::MAX - 1];
        later.counts = vec![1];
        (earlier.n, later.n) = (u64::from(u32::MAX) - 1, u64::from(u32::MAX) + 2);
        let out = combine(&[earlier, later], 10, 20);
        let hist = &out[&("/a".to_owned(), 0)];
        assert_eq!(hist.n, 3);
        assert!((hist.quantile(0.5) / 3.0 - 1.0).abs() < 0.02);
    }
}
