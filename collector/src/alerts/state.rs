//! One alert's state machine (a rule × group), as plain data: an observation and `now` in,
//! transitions out. No clock, no I/O — the evaluator feeds it, tests drive it.
//!
//! normal → pending (a threshold is breached) → firing (still breached after `for`) → normal
//! again once the value has stayed on the good side of the resolve threshold for
//! `keep_firing_for` (hysteresis: between the resolve threshold and the lowest threshold the
//! alert keeps firing). Each transition that a person should hear about is a [`Notice`]: firing,
//! a severity change, a reminder every repeat interval of the current severity, resolved. A
//! breach that clears while pending is never announced. Below `min_samples` the state holds.

use serde::Serialize;

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        match text {
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Normal,
    Pending,
    Firing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Normal => "normal",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
        }
    }
}

/// What to do when the window holds no data at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoData {
    /// Hold the current state (the default: a quiet night pages nobody).
    Keep,
    /// Count it as good.
    Ok,
    /// Count it as a breach at the rule's lowest severity.
    Alert,
}

/// The numbers of a rule the state machine needs. Times in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    /// The good side starts here (default: the lowest threshold).
    pub resolve: f64,
    /// `true` when higher values are worse (durations, CLS, error rates); `false` for shares of
    /// good experiences.
    pub above: bool,
    pub pending_for: i64,
    pub keep_firing_for: i64,
    pub min_samples: u64,
    pub no_data: NoData,
    pub repeat_warning: i64,
    pub repeat_critical: i64,
}

impl Limits {
    fn worse(&self, value: f64, threshold: f64) -> bool {
        if self.above {
            value > threshold
        } else {
            value < threshold
        }
    }

    /// The severity a value breaches, if any.
    pub fn severity(&self, value: f64) -> Option<Severity> {
        if self.critical.is_some_and(|t| self.worse(value, t)) {
            Some(Severity::Critical)
        } else if self.warning.is_some_and(|t| self.worse(value, t)) {
            Some(Severity::Warning)
        } else {
            None
        }
    }

    pub fn threshold(&self, severity: Severity) -> f64 {
        match severity {
            Severity::Critical => self.critical.or(self.warning),
            Severity::Warning => self.warning.or(self.critical),
        }
        .unwrap_or(f64::NAN)
    }

    fn lowest_severity(&self) -> Severity {
        if self.warning.is_some() {
            Severity::Warning
        } else {
            Severity::Critical
        }
    }

    fn repeat(&self, severity: Severity) -> i64 {
        match severity {
            Severity::Warning => self.repeat_warning,
            Severity::Critical => self.repeat_critical,
        }
    }

    /// On the good side of the resolve threshold (hysteresis).
    fn recovered(&self, value: f64) -> bool {
        if self.above {
            value <= self.resolve
        } else {
            value >= self.resolve
        }
    }
}

/// What one evaluation saw for one group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The statistic over the window; `None` when the window holds no data.
    pub value: Option<f64>,
    pub samples: u64,
}

/// A transition someone should be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Firing,
    /// Severity went up or down while firing.
    SeverityChanged,
    Reminder,
    Resolved,
}

impl Notice {
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::Firing => "firing",
            Notice::SeverityChanged => "severity_changed",
            Notice::Reminder => "reminder",
            Notice::Resolved => "resolved",
        }
    }
}

/// One alert (rule × group). Times are epoch seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub phase: Phase,
    pub severity: Option<Severity>,
    /// When the current phase began (pending or firing); for normal, when the last firing began.
    pub since: i64,
    /// First evaluation on the good side while firing.
    pub recovering_since: Option<i64>,
    /// Last notification sent: when and at which severity.
    pub notified_at: Option<i64>,
    pub value: Option<f64>,
    pub samples: u64,
    /// The last observation had fewer than `min_samples` samples: the state was held.
    pub insufficient: bool,
    pub no_data: bool,
}

impl Default for Alert {
    fn default() -> Self {
        Alert {
            phase: Phase::Normal,
            severity: None,
            since: 0,
            recovering_since: None,
            notified_at: None,
            value: None,
            samples: 0,
            insufficient: false,
            no_data: false,
        }
    }
}

/// What a step changed: the phase moved, and perhaps a notice to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub changed: bool,
    pub notice: Option<Notice>,
}

impl Alert {
    /// Applies one observation at `now`.
    pub fn step(&mut self, limits: &Limits, obs: Observation, now: i64) -> Step {
        let before = (self.phase, self.severity);
        self.samples = obs.samples;
        self.no_data = obs.value.is_none();
        self.insufficient = false;
        // A pending alert needs `for` of *continuous* breach: a gap in the data (held below)
        // ends the pending period quietly, and the count starts again with the next breach.
        let hold = |alert: &mut Alert| {
            if alert.phase == Phase::Pending {
                alert.phase = Phase::Normal;
                alert.severity = None;
            }
            Step { changed: (alert.phase, alert.severity) != before, notice: None }
        };
        let breach = match obs.value {
            None => match limits.no_data {
                NoData::Keep => return hold(self),
                NoData::Ok => None,
                // A firing alert keeps its severity: losing the data never makes it look better.
                NoData::Alert => Some(self.severity.unwrap_or(limits.lowest_severity())),
            },
            Some(value) => {
                self.value = Some(value);
                if obs.samples < limits.min_samples {
                    // Too few page views for the statistic to mean anything: hold.
                    self.insufficient = true;
                    return hold(self);
                }
                limits.severity(value)
            }
        };
        let recovered = obs.value.map_or(breach.is_none(), |v| limits.recovered(v) && breach.is_none());
        let notice = match (self.phase, breach) {
            (Phase::Normal, Some(severity)) => {
                self.phase = Phase::Pending;
                self.severity = Some(severity);
                self.since = now;
                self.fire_if_due(limits, now)
            }
            (Phase::Normal, None) => None,
            (Phase::Pending, Some(severity)) => {
                self.severity = Some(severity);
                self.fire_if_due(limits, now)
            }
            (Phase::Pending, None) => {
                // Cleared before `for`: never announced.
                self.phase = Phase::Normal;
                self.severity = None;
                None
            }
            (Phase::Firing, Some(severity)) => {
                self.recovering_since = None;
                if Some(severity) != self.severity {
                    self.severity = Some(severity);
                    self.notified_at = Some(now);
                    Some(Notice::SeverityChanged)
                } else {
                    self.remind_if_due(limits, now)
                }
            }
            (Phase::Firing, None) if recovered => {
                let since = *self.recovering_since.get_or_insert(now);
                if now - since >= limits.keep_firing_for {
                    // `since` keeps the firing time: the resolved notice says when it started.
                    self.phase = Phase::Normal;
                    self.severity = None;
                    self.recovering_since = None;
                    self.notified_at = Some(now);
                    Some(Notice::Resolved)
                } else {
                    None
                }
            }
            // Between the resolve threshold and the lowest threshold: keeps firing, at the lowest
            // severity (a critical alert whose value is back under the critical threshold is no
            // longer critical, and its reminders must not say so).
            (Phase::Firing, None) => {
                self.recovering_since = None;
                let lowest = limits.lowest_severity();
                if self.severity != Some(lowest) {
                    self.severity = Some(lowest);
                    self.notified_at = Some(now);
                    Some(Notice::SeverityChanged)
                } else {
                    self.remind_if_due(limits, now)
                }
            }
        };
        Step { changed: (self.phase, self.severity) != before, notice }
    }

    fn fire_if_due(&mut self, limits: &Limits, now: i64) -> Option<Notice> {
        if now - self.since >= limits.pending_for {
            self.phase = Phase::Firing;
            self.since = now;
            self.recovering_since = None;
            self.notified_at = Some(now);
            Some(Notice::Firing)
        } else {
            None
        }
    }

    fn remind_if_due(&mut self, limits: &Limits, now: i64) -> Option<Notice> {
        let severity = self.severity?;
        let last = self.notified_at.unwrap_or(self.since);
        if now - last >= limits.repeat(severity) {
            self.notified_at = Some(now);
            Some(Notice::Reminder)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            warning: Some(2500.0),
            critical: Some(4000.0),
            resolve: 2500.0,
            above: true,
            pending_for: 300,
            keep_firing_for: 0,
            min_samples: 40,
            no_data: NoData::Keep,
            repeat_warning: 3600,
            repeat_critical: 300,
        }
    }

    fn seen(value: f64) -> Observation {
        Observation { value: Some(value), samples: 100 }
    }

    /// Feeds `values` one minute apart from t = 0; returns the notices with their times.
    fn run(limits: &Limits, alert: &mut Alert, values: &[f64]) -> Vec<(i64, Notice)> {
        values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let now = i as i64 * 60;
                alert.step(limits, seen(*v), now).notice.map(|n| (now, n))
            })
            .collect()
    }

    #[test]
    fn fires_after_for_once_then_resolves() {
        let mut a = Alert::default();
        let notices = run(&limits(), &mut a, &[3000.0, 3000.0, 3000.0, 3000.0, 3000.0, 3000.0, 3000.0, 2000.0]);
        assert_eq!(notices, vec![(300, Notice::Firing), (420, Notice::Resolved)]);
        assert_eq!(a.phase, Phase::Normal);
    }

    #[test]
    fn a_breach_that_clears_while_pending_is_never_announced() {
        let mut a = Alert::default();
        assert_eq!(run(&limits(), &mut a, &[3000.0, 3000.0, 2000.0, 3000.0, 2000.0]), vec![]);
        assert_eq!(a.phase, Phase::Normal);
    }

    #[test]
    fn escalates_repeats_per_severity_and_deescalates() {
        let mut l = limits();
        l.pending_for = 0;
        let mut a = Alert::default();
        // Warning at 0; critical at 60 (changed); critical reminders every 5 min; back to warning.
        let values = [3000.0, 4500.0, 4500.0, 4500.0, 4500.0, 4500.0, 4500.0, 3000.0, 3000.0];
        let notices = run(&l, &mut a, &values);
        assert_eq!(
            notices,
            vec![(0, Notice::Firing), (60, Notice::SeverityChanged), (360, Notice::Reminder), (420, Notice::SeverityChanged)]
        );
        assert_eq!(a.severity, Some(Severity::Warning));
    }

    #[test]
    fn hysteresis_keeps_an_oscillating_value_from_flapping() {
        let mut l = limits();
        l.pending_for = 0;
        l.resolve = 2200.0;
        let mut a = Alert::default();
        let values = [2600.0, 2400.0, 2600.0, 2450.0, 2550.0, 2300.0, 2100.0];
        assert_eq!(run(&l, &mut a, &values), vec![(0, Notice::Firing), (360, Notice::Resolved)]);
    }

    #[test]
    fn inside_the_hysteresis_band_a_critical_alert_steps_down_to_warning() {
        let mut l = limits();
        l.pending_for = 0;
        l.resolve = 2200.0;
        let mut a = Alert::default();
        // 4500 fires critical; 2400 is under the warning threshold but not back under `resolve`:
        // still firing, now as a warning, whose reminders come hourly, not every 5 minutes.
        let values = [4500.0, 2400.0, 2400.0, 2400.0, 2400.0, 2400.0, 2400.0, 2400.0];
        assert_eq!(run(&l, &mut a, &values), vec![(0, Notice::Firing), (60, Notice::SeverityChanged)]);
        assert_eq!((a.phase, a.severity), (Phase::Firing, Some(Severity::Warning)));
        // Critical only: the band keeps it critical (there is nothing lower).
        let only_critical = Limits { warning: None, resolve: 3000.0, ..l };
        let mut b = Alert::default();
        assert_eq!(run(&only_critical, &mut b, &[4500.0, 3500.0]), vec![(0, Notice::Firing)]);
        assert_eq!(b.severity, Some(Severity::Critical));
    }

    #[test]
    fn no_data_alerting_never_lowers_a_firing_alerts_severity() {
        let mut l = limits();
        l.pending_for = 0;
        l.no_data = NoData::Alert;
        let mut a = Alert::default();
        assert_eq!(a.step(&l, seen(5000.0), 0).notice, Some(Notice::Firing));
        assert_eq!(a.step(&l, Observation { value: None, samples: 0 }, 60).notice, None);
        assert_eq!((a.phase, a.severity), (Phase::Firing, Some(Severity::Critical)));
    }

    #[test]
    fn keep_firing_for_needs_a_sustained_recovery() {
        let mut l = limits();
        l.pending_for = 0;
        l.keep_firing_for = 120;
        let mut a = Alert::default();
        let values = [3000.0, 2000.0, 2000.0, 3000.0, 2000.0, 2000.0, 2000.0];
        assert_eq!(run(&l, &mut a, &values), vec![(0, Notice::Firing), (360, Notice::Resolved)]);
    }

    #[test]
    fn a_gap_in_the_data_restarts_the_pending_period() {
        let mut a = Alert::default();
        let l = limits();
        a.step(&l, seen(3000.0), 0);
        assert_eq!(a.phase, Phase::Pending);
        a.step(&l, Observation { value: None, samples: 0 }, 120);
        assert_eq!(a.phase, Phase::Normal, "no data while pending");
        // Breached again at 180: `for` (300 s) counts from there, not from 0.
        assert_eq!(a.step(&l, seen(3000.0), 180).notice, None);
        assert_eq!(a.step(&l, seen(3000.0), 360).notice, None);
        assert_eq!(a.step(&l, seen(3000.0), 480).notice, Some(Notice::Firing));
    }

    #[test]
    fn low_traffic_never_fires() {
        let mut a = Alert::default();
        for i in 0..30 {
            let step = a.step(&limits(), Observation { value: Some(9000.0), samples: 10 }, i * 60);
            assert_eq!(step.notice, None);
        }
        assert_eq!(a.phase, Phase::Normal);
        assert!(a.insufficient);
    }

    #[test]
    fn no_data_modes() {
        let nothing = Observation { value: None, samples: 0 };
        let mut l = limits();
        l.pending_for = 0;
        // keep: a firing alert stays firing through a silent night.
        let mut a = Alert::default();
        a.step(&l, seen(5000.0), 0);
        for i in 1..20 {
            assert_eq!(a.step(&l, nothing, i * 60).notice, None);
        }
        assert_eq!(a.phase, Phase::Firing);
        // ok: silence resolves it.
        l.no_data = NoData::Ok;
        assert_eq!(a.step(&l, nothing, 2000).notice, Some(Notice::Resolved));
        // alert: silence fires at the lowest severity (a warning, not a page).
        l.no_data = NoData::Alert;
        let mut b = Alert::default();
        assert_eq!(b.step(&l, nothing, 0).notice, Some(Notice::Firing));
        assert_eq!(b.severity, Some(Severity::Warning));
    }

    #[test]
    fn shares_alert_when_they_fall() {
        let l = Limits { warning: Some(0.9), critical: Some(0.75), resolve: 0.9, above: false, pending_for: 0, ..limits() };
        assert_eq!(l.severity(0.95), None);
        assert_eq!(l.severity(0.8), Some(Severity::Warning));
        assert_eq!(l.severity(0.5), Some(Severity::Critical));
        let mut a = Alert::default();
        assert_eq!(a.step(&l, seen(0.7), 0).notice, Some(Notice::Firing));
        assert_eq!(a.step(&l, seen(0.95), 60).notice, Some(Notice::Resolved));
    }
}
