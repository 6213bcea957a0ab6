//! Alerts: Pulse tells people when real users' experience gets worse.
//!
//! # The path of an evaluation
//! 1. Every `alert_interval_seconds` the evaluator ([`Alerts::evaluate`], which takes `now`)
//!    first renews its lease: several collectors may run, and only the one holding the lease
//!    (the longest-running live one; see [`Lease`]) evaluates.
//! 2. For each rule it asks the query layer ([`crate::query::vitals_table`] or
//!    [`crate::query::api_calls_table`]) for the statistic over the window ending at `now`, per
//!    group: exact from raw rows for windows up to `raw_max_hours`, from rollups beyond.
//! 3. Each rule × group has a state machine ([`state::Alert`]); its transitions are written to
//!    the `alert_events` table in ClickHouse, so a restart (or another collector taking over)
//!    neither forgets a firing alert nor announces it again.
//! 4. Transitions someone should hear about go to the rule's notifiers ([`notify`]): each notice
//!    is written to `alert_deliveries` as owed (with the body to send) and delivered in the
//!    background; a 2xx writes it delivered. Each evaluation first sends again what is still
//!    owed (oldest first; at most a day old; not when a later notice of the same alert already
//!    reached that notifier), so a receiver outage or a restart delays a notice but does not
//!    lose it. A notice may arrive twice (delivered, but not yet recorded as delivered);
//!    receivers deduplicate by `fingerprint` and `at` (PagerDuty by `dedup_key`).

pub mod api;
pub mod notify;
pub mod rules;
pub mod state;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use self::notify::Message;
use self::rules::{Notifier, Rule, Stat};
use self::state::{Alert, Notice, Observation, Phase, Severity};
use crate::query::params::format_time;
use crate::storage::lease::Lease;
use crate::App;

/// One notice to one notifier: rule, group, notifier, the notice's `at_ms`.
type DeliveryId = (String, String, String, u64);

/// The notices of one alert for one notifier (rule, group, notifier), delivered one at a time.
type DeliveryQueue = tokio::sync::mpsc::UnboundedSender<DeliveryRow>;

/// One rule × group being watched.
#[derive(Debug, Clone, Serialize)]
pub struct Tracked {
    pub rule: String,
    pub site: String,
    pub group: String,
    pub alert: Alert,
    /// The notifiers whose last delivery of this alert's notices failed, with the failure.
    #[serde(skip)]
    delivery_errors: BTreeMap<String, String>,
    /// What the last evaluation found, in words (release rules: the comparison).
    pub detail: Option<String>,
}

impl Tracked {
    /// Each notifier whose last delivery of this alert's notices failed, with the failure.
    pub fn delivery_error(&self) -> Option<String> {
        (!self.delivery_errors.is_empty())
            .then(|| self.delivery_errors.iter().map(|(n, e)| format!("{n}: {e}")).collect::<Vec<_>>().join("; "))
    }
}

/// A row of `alert_events`: one transition or notification of one alert.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct EventRow {
    pub rule: String,
    pub grp: String,
    pub site: String,
    /// Epoch seconds.
    pub at: u32,
    /// Epoch ms, orders events of the same second.
    pub at_ms: u64,
    pub phase: String,
    pub severity: String,
    /// `firing`, `severity_changed`, `reminder`, `resolved`, or empty for a silent transition.
    pub notice: String,
    /// NaN when there was no data.
    pub value: f64,
    pub threshold: f64,
    pub samples: u64,
    pub since: u32,
    pub notified_at: u32,
    /// First evaluation back on the good side while firing (0: none), so a restart does not
    /// restart `keep_firing_for`.
    pub recovering_since: u32,
}

/// A row of `alert_deliveries`: a notice owed to a notifier (with its body), or its delivery.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct DeliveryRow {
    rule: String,
    grp: String,
    notifier: String,
    /// The notice's `at_ms` in `alert_events`: with rule, group and notifier, the notice's id.
    notice_ms: u64,
    at: u32,
    at_ms: u64,
    /// `owed` or `delivered`.
    state: String,
    /// Owed rows: the body to send, as [`notify::body`] made it.
    body: String,
}

/// How long an undelivered notice is sent again.
const OWED_FOR_MS: u64 = 86_400_000;

/// The alerting engine of one collector.
#[derive(Debug)]
pub struct Alerts {
    pub rules: Vec<Rule>,
    pub notifiers: Vec<Notifier>,
    tracked: Mutex<BTreeMap<(String, String), Tracked>>,
    restored: AtomicBool,
    /// This collector led the last evaluation (its in-memory states are current).
    evaluating: AtomicBool,
    /// This collector's place in the evaluator lease.
    lease: Lease,
    /// When this collector last wrote a heartbeat (epoch s of the evaluated `now`).
    last_heartbeat: Mutex<Option<i64>>,
    /// One queue per alert and notifier, so notices arrive in the order they were made (a
    /// resolve never overtakes the trigger it resolves, a re-sent trigger never follows it).
    queues: Mutex<BTreeMap<(String, String, String), DeliveryQueue>>,
    /// Deliveries under way (rule, group, notifier, notice_ms): not started again meanwhile.
    in_flight: Mutex<std::collections::BTreeSet<DeliveryId>>,
    client: notify::HttpClient,
    /// Base of the dashboard links in notifications.
    public_url: String,
}

impl Alerts {
    pub fn new(rules: Vec<Rule>, notifiers: Vec<Notifier>, public_url: String) -> Alerts {
        Alerts {
            rules,
            notifiers,
            tracked: Mutex::new(BTreeMap::new()),
            restored: AtomicBool::new(false),
            evaluating: AtomicBool::new(false),
            lease: Lease::new("alert_lease"),
            last_heartbeat: Mutex::new(None),
            queues: Mutex::new(BTreeMap::new()),
            in_flight: Mutex::default(),
            client: notify::client(),
            public_url,
        }
    }

    /// Every watched alert (a copy): this collector's own states when it evaluates, otherwise the
    /// last recorded ones from `alert_events` (another collector evaluates).
    pub async fn current(&self, app: &App) -> Result<Vec<Tracked>, String> {
        if !self.evaluating.load(Ordering::Acquire) {
            // Read into a copy: the evaluator's own states are never replaced by a snapshot.
            return Ok(self.load(app).await?.into_values().collect());
        }
        Ok(self.tracked.lock().map(|t| t.values().cloned().collect()).unwrap_or_default())
    }

    /// One evaluation of every rule at `now`. Returns whether this collector evaluated (it holds
    /// the lease).
    pub async fn evaluate(&self, app: &App, now: OffsetDateTime) -> Result<bool, String> {
        if self.rules.is_empty() {
            return Ok(false);
        }
        // The lease taken below holds for `lease_window` from about now.
        let started = std::time::Instant::now();
        let t = now.unix_timestamp();
        let lease_window = 3 * app.config.alert_interval_seconds.max(1) as i64;
        let lapsed = self.last_heartbeat.lock().ok().and_then(|l| *l).is_some_and(|last| t - last > lease_window);
        if lapsed {
            // This collector was away longer than the lease: someone else may have led and
            // notified meanwhile. Start over as a newcomer, from the recorded states.
            self.lease.rejoin();
            self.restored.store(false, Ordering::Release);
            self.evaluating.store(false, Ordering::Release);
        }
        if !self.restored.load(Ordering::Acquire) {
            self.restore(app).await?;
            self.restored.store(true, Ordering::Release);
        }
        let leading = self.is_leader(app, now).await;
        if let Ok(mut last) = self.last_heartbeat.lock() {
            *last = leading.is_ok().then_some(t).or(*last);
        }
        if !leading.inspect_err(|_| self.restored.store(false, Ordering::Release))? {
            // Another collector evaluates; what it decides is read back when this one leads.
            self.restored.store(false, Ordering::Release);
            self.evaluating.store(false, Ordering::Release);
            return Ok(false);
        }
        self.evaluating.store(true, Ordering::Release);
        // An evaluation slower than the lease (a stalled query) may have been taken over
        // meanwhile: it stops before recording or sending anything more, and starts again from the
        // recorded states next time.
        let lease_left = |alerts: &Alerts| {
            let ok = started.elapsed().as_secs() < lease_window as u64;
            if !ok {
                tracing::warn!("an alert evaluation outlasted the lease; another collector may lead now");
                alerts.restored.store(false, Ordering::Release);
                alerts.evaluating.store(false, Ordering::Release);
            }
            ok
        };
        // Before this evaluation's notices, so an alert's notices keep their order.
        if let Err(err) = self.redeliver(app, now).await {
            tracing::warn!(%err, "cannot read the notifications still owed; they are sent at a later evaluation");
        }
        for rule in &self.rules {
            let result = match rule.release {
                Some(terms) => observe_release(app, rule, terms, now).await,
                None => observe(app, rule, now).await.map(|o| (o, BTreeMap::new())),
            };
            let (observed, details) = match result {
                Ok(observed) => observed,
                Err(err) => {
                    app.telemetry.alert_evaluations.with_label_values(&["error"]).inc();
                    tracing::warn!(rule = %rule.name, %err, "alert rule could not be evaluated; its state is kept");
                    continue;
                }
            };
            app.telemetry.alert_evaluations.with_label_values(&["ok"]).inc();
            let mut observed = observed;
            if rule.group_by.is_none() {
                observed.entry(String::new()).or_insert(Observation { value: None, samples: 0 });
            }
            let tracked_now: Vec<String> = self
                .tracked
                .lock()
                .map(|t| t.keys().filter(|(r, _)| r == &rule.name).map(|(_, g)| g.clone()).collect())
                .unwrap_or_default();
            let (groups, over_cap) = admit(observed, tracked_now, rule.max_groups, app.config.alert_max_groups_per_rule);
            if over_cap > 0 {
                app.telemetry.alert_groups_over_cap.with_label_values(&[rule.name.as_str()]).inc_by(over_cap as u64);
                tracing::warn!(rule = %rule.name, over_cap, cap = app.config.alert_max_groups_per_rule, "alert groups past the cap are not evaluated");
            }
            let seen: Vec<(String, bool)> = groups.iter().map(|(g, o)| (g.clone(), o.value.is_some())).collect();
            for (group, observation) in groups {
                let key = (rule.name.clone(), group.clone());
                let (step, before, tracked) = {
                    let Ok(mut all) = self.tracked.lock() else { continue };
                    let entry = all.entry(key.clone()).or_insert_with(|| Tracked {
                        rule: rule.name.clone(),
                        site: rule.site.clone(),
                        group: group.clone(),
                        alert: Alert::default(),
                        delivery_errors: BTreeMap::new(),
                        detail: None,
                    });
                    let before = entry.alert.clone();
                    let step = entry.alert.step(&rule.limits, observation, t);
                    if let Some(detail) = details.get(&group) {
                        entry.detail = Some(detail.clone());
                    }
                    (step, before, entry.clone())
                };
                let recovering_moved = before.recovering_since != tracked.alert.recovering_since;
                if !step.changed && step.notice.is_none() && !recovering_moved {
                    continue;
                }
                if !lease_left(self) {
                    if let Ok(mut all) = self.tracked.lock() {
                        if let Some(entry) = all.get_mut(&key) {
                            entry.alert = before;
                        }
                    }
                    return Ok(true);
                }
                let event = event_row(rule, &tracked, step.notice, now);
                if let Err(err) = store_event(app, &event).await {
                    // Unrecorded, a transition would be repeated after a restart (a second page):
                    // undo it and try again at the next evaluation.
                    tracing::error!(rule = %rule.name, %err, "cannot record an alert transition; it is retried next time");
                    if let Ok(mut all) = self.tracked.lock() {
                        if let Some(entry) = all.get_mut(&key) {
                            entry.alert = before;
                        }
                    }
                    continue;
                }
                if let Some(notice) = step.notice {
                    // Recorded: owed to the notifiers; sent now unless the lease ran out meanwhile
                    // (then whoever leads sends it from `alert_deliveries`).
                    let send_now = lease_left(self);
                    self.announce(app, rule, &tracked, notice, now, event.at_ms, send_now).await;
                    if !send_now {
                        return Ok(true);
                    }
                }
            }
            self.forget_gone(app, &rule.name, &seen);
        }
        Ok(true)
    }

    /// Forgets the groups of `rule` that are back to normal and had no data at this evaluation
    /// (`seen`: the groups evaluated, and whether each had data): a normal alert carries nothing
    /// the next breach needs, so a group that is gone costs no memory, and its delivery queues
    /// close (each task ends once the notices already queued are delivered).
    fn forget_gone(&self, app: &App, rule: &str, seen: &[(String, bool)]) {
        let Ok(mut tracked) = self.tracked.lock() else { return };
        let with_data = |group: &str| seen.iter().any(|(g, data)| g == group && *data);
        tracked.retain(|(r, g), t| r != rule || t.alert.phase != Phase::Normal || with_data(g));
        let count = tracked.keys().filter(|(r, _)| r == rule).count();
        app.telemetry.alert_groups.with_label_values(&[rule]).set(count as i64);
        if let Ok(mut queues) = self.queues.lock() {
            queues.retain(|(r, g, _), _| tracked.contains_key(&(r.clone(), g.clone())));
        }
    }

    /// Records the notice as owed to each of the rule's notifiers, then (with `send_now`) sends
    /// it in the background. `notice_ms` is its `alert_events` row's `at_ms`.
    #[allow(clippy::too_many_arguments)]
    async fn announce(
        &self,
        app: &App,
        rule: &Rule,
        tracked: &Tracked,
        notice: Notice,
        now: OffsetDateTime,
        notice_ms: u64,
        send_now: bool,
    ) {
        let message = message(rule, tracked, notice, now, &self.public_url);
        tracing::info!(rule = %rule.name, group = %tracked.group, notice = notice.as_str(), summary = %message.summary, "alert");
        let at_ms = (now.unix_timestamp_nanos() / 1_000_000) as u64;
        let owed: Vec<DeliveryRow> = rule
            .notify
            .iter()
            .filter_map(|name| self.notifiers.iter().find(|n| &n.name == name))
            .map(|notifier| DeliveryRow {
                rule: rule.name.clone(),
                grp: tracked.group.clone(),
                notifier: notifier.name.clone(),
                notice_ms,
                at: now.unix_timestamp() as u32,
                at_ms,
                state: "owed".into(),
                // The message, not the notifier's body: that is made when it is sent, with the
                // notifier's settings then (a rotated PagerDuty key is not kept here).
                body: serde_json::to_string(&message).unwrap_or_default(),
            })
            .collect();
        if let Err(err) = insert_deliveries(&app.clickhouse, &owed).await {
            // Still sent now; only a second chance after a failure is lost.
            tracing::error!(rule = %rule.name, %err, "cannot record the notifications owed; each is sent once");
        }
        if send_now {
            for row in owed {
                self.send(app, row);
            }
        }
    }

    /// Sends again, oldest first, each notice still owed to a notifier: at most a day old, and
    /// not when a later notice of the same alert already reached that notifier.
    async fn redeliver(&self, app: &App, now: OffsetDateTime) -> Result<(), String> {
        #[derive(Debug, Row, Deserialize)]
        struct Owed {
            rule: String,
            grp: String,
            notifier: String,
            notice_ms: u64,
            delivered: u64,
            body: String,
        }
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as u64;
        let rows = app
            .clickhouse
            .query(
                "SELECT rule, grp, notifier, notice_ms, countIf(state = 'delivered') AS delivered, maxIf(body, state = 'owed') AS owed_body
                 FROM alert_deliveries WHERE notice_ms >= ? AND notice_ms <= ?
                 GROUP BY rule, grp, notifier, notice_ms ORDER BY notice_ms",
            )
            .bind(now_ms.saturating_sub(OWED_FOR_MS))
            .bind(now_ms)
            .fetch_all::<Owed>()
            .await
            .map_err(|e| e.to_string())?;
        let mut latest_delivered: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.delivered > 0) {
            latest_delivered.insert((&r.rule, &r.grp, &r.notifier), r.notice_ms);
        }
        for r in &rows {
            let superseded =
                latest_delivered.get(&(r.rule.as_str(), r.grp.as_str(), r.notifier.as_str())).is_some_and(|d| *d >= r.notice_ms);
            // Only to a notifier the rule still notifies.
            let known = self.rules.iter().any(|rule| rule.name == r.rule && rule.notify.contains(&r.notifier));
            if superseded || !known || r.body.is_empty() {
                continue;
            }
            let row = DeliveryRow {
                rule: r.rule.clone(),
                grp: r.grp.clone(),
                notifier: r.notifier.clone(),
                notice_ms: r.notice_ms,
                at: now.unix_timestamp() as u32,
                at_ms: now_ms,
                state: "owed".into(),
                body: r.body.clone(),
            };
            tracing::info!(rule = %r.rule, group = %r.grp, notifier = %r.notifier, "sending an owed notification again");
            self.send(app, row);
        }
        Ok(())
    }

    /// Queues one owed notice for delivery in the background, behind the notices of its alert
    /// already queued for that notifier. Does nothing while the same notice is queued.
    fn send(&self, app: &App, owed: DeliveryRow) {
        let id = (owed.rule.clone(), owed.grp.clone(), owed.notifier.clone(), owed.notice_ms);
        if !self.in_flight.lock().is_ok_and(|mut f| f.insert(id.clone())) {
            return;
        }
        let Ok(mut queues) = self.queues.lock() else { return };
        let key = (owed.rule.clone(), owed.grp.clone(), owed.notifier.clone());
        let queue = queues.entry(key).or_insert_with(|| self.deliverer(app));
        if queue.send(owed).is_err() {
            if let Ok(mut f) = self.in_flight.lock() {
                f.remove(&id);
            }
        }
    }

    /// The task that delivers one alert's notices to one notifier in order, each with its
    /// retries, recording each delivered on a 2xx. A notice older than one it already delivered
    /// (re-sent from `alert_deliveries` while a newer one was under way) is dropped: it would
    /// undo the newer one at the receiver.
    fn deliverer(&self, app: &App) -> DeliveryQueue {
        let (queue, mut notices) = tokio::sync::mpsc::unbounded_channel::<DeliveryRow>();
        let (client, telemetry, alerts, clickhouse) =
            (self.client.clone(), app.telemetry.clone(), app.alerts.clone(), app.clickhouse.clone());
        tokio::spawn(async move {
            let mut newest_delivered = 0;
            while let Some(owed) = notices.recv().await {
                let id = (owed.rule.clone(), owed.grp.clone(), owed.notifier.clone(), owed.notice_ms);
                let notifier = alerts.notifiers.iter().find(|n| n.name == owed.notifier).cloned();
                let message = serde_json::from_str::<Message>(&owed.body);
                if let (Some(notifier), Ok(message), true) = (notifier, message, owed.notice_ms > newest_delivered) {
                    let body = serde_json::to_vec(&notify::body(&notifier, &message)).unwrap_or_default();
                    let outcome = notify::deliver(&client, &notifier, &body).await;
                    let label = if outcome.is_ok() { "delivered" } else { "failed" };
                    if outcome.is_ok() {
                        newest_delivered = owed.notice_ms;
                        let done = DeliveryRow { state: "delivered".into(), body: String::new(), ..owed.clone() };
                        if let Err(err) = insert_deliveries(&clickhouse, &[done]).await {
                            tracing::warn!(rule = %owed.rule, %err, "a delivered notification could not be recorded; it may be sent twice");
                        }
                    }
                    if let Ok(mut all) = alerts.tracked.lock() {
                        if let Some(t) = all.get_mut(&(owed.rule.clone(), owed.grp.clone())) {
                            match outcome {
                                Ok(()) => t.delivery_errors.remove(&notifier.name),
                                Err(e) => t.delivery_errors.insert(notifier.name.clone(), e),
                            };
                        }
                    }
                    // Counted last: whoever sees the count sees the alert's delivery error too.
                    telemetry.alert_notifications.with_label_values(&[notifier.name.as_str(), label]).inc();
                }
                if let Ok(mut f) = alerts.in_flight.lock() {
                    f.remove(&id);
                }
            }
        });
        queue
    }

    /// Writes this collector's heartbeat and answers whether it leads (see [`Lease`]).
    pub async fn is_leader(&self, app: &App, now: OffsetDateTime) -> Result<bool, String> {
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as u64;
        let interval_ms = app.config.alert_interval_seconds.max(1) * 1_000;
        self.lease.renew(&app.clickhouse, now_ms, interval_ms, 0).await.map_err(|e| e.to_string())
    }

    /// Delivery queues open (one per alert and notifier that has had a notice since it was
    /// last forgotten).
    pub fn delivery_queues(&self) -> usize {
        self.queues.lock().map_or(0, |q| q.len())
    }

    /// Replaces the in-memory states with the last recorded ones.
    async fn restore(&self, app: &App) -> Result<(), String> {
        let loaded = self.load(app).await?;
        *self.tracked.lock().map_err(|e| e.to_string())? = loaded;
        Ok(())
    }

    /// Reads every alert's last recorded state from `alert_events`.
    async fn load(&self, app: &App) -> Result<BTreeMap<(String, String), Tracked>, String> {
        let rows = app
            .clickhouse
            .query(
                // Aliases differ from the columns: an alias named like a column would be read by
                // the other aggregates (rows decode by position, not by name).
                "SELECT rule, grp, argMax(site, at_ms) AS l_site, max(at) AS l_at, max(at_ms) AS l_at_ms,
                    argMax(phase, at_ms) AS l_phase, argMax(severity, at_ms) AS l_severity, argMax(notice, at_ms) AS l_notice,
                    argMax(value, at_ms) AS l_value, argMax(threshold, at_ms) AS l_threshold, argMax(samples, at_ms) AS l_samples,
                    argMax(since, at_ms) AS l_since, argMax(notified_at, at_ms) AS l_notified_at,
                    argMax(recovering_since, at_ms) AS l_recovering_since
                 FROM alert_events GROUP BY rule, grp",
            )
            .fetch_all::<EventRow>()
            .await
            .map_err(|e| e.to_string())?;
        let mut tracked = BTreeMap::new();
        for row in rows {
            if !self.rules.iter().any(|r| r.name == row.rule) {
                continue;
            }
            let phase = match row.phase.as_str() {
                "firing" => Phase::Firing,
                "pending" => Phase::Pending,
                // A normal alert carries nothing the next breach needs: the evaluation makes it
                // again when its group has data (every group ever seen is not kept in memory).
                _ => continue,
            };
            let alert = Alert {
                phase,
                severity: Severity::parse(&row.severity),
                since: i64::from(row.since),
                recovering_since: (row.recovering_since > 0).then_some(i64::from(row.recovering_since)),
                notified_at: (row.notified_at > 0).then_some(i64::from(row.notified_at)),
                // NaN is "no data"; a release regression from 0 is stored as +∞.
                value: (!row.value.is_nan()).then_some(row.value),
                samples: row.samples,
                insufficient: false,
                no_data: row.value.is_nan(),
            };
            tracked.insert(
                (row.rule.clone(), row.grp.clone()),
                Tracked { rule: row.rule, site: row.site, group: row.grp, alert, delivery_errors: BTreeMap::new(), detail: None },
            );
        }
        Ok(tracked)
    }
}

/// The groups one evaluation of a rule steps, and how many it leaves out for the cap.
///
/// Every tracked group is stepped: with what was observed, or with no data when the answer was
/// complete (fewer than `max_groups` rows; a cut answer may merely have left it out of the
/// busiest). New groups join, the busiest first, while the rule tracks fewer than `cap`; the rest
/// are counted, not tracked. Tracked groups are never pushed out: a firing alert keeps its resolve.
fn admit(
    mut observed: BTreeMap<String, Observation>,
    tracked: Vec<String>,
    max_groups: usize,
    cap: usize,
) -> (BTreeMap<String, Observation>, usize) {
    let complete = observed.len() < max_groups;
    let mut groups = BTreeMap::new();
    for group in tracked {
        match observed.remove(&group) {
            Some(o) => {
                groups.insert(group, o);
            }
            None if complete => {
                groups.insert(group, Observation { value: None, samples: 0 });
            }
            None => {}
        }
    }
    let mut fresh: Vec<(String, Observation)> = observed.into_iter().collect();
    fresh.sort_by(|a, b| b.1.samples.cmp(&a.1.samples).then_with(|| a.0.cmp(&b.0)));
    let room = cap.saturating_sub(groups.len());
    let over = fresh.len().saturating_sub(room);
    groups.extend(fresh.into_iter().take(room));
    (groups, over)
}

/// Where an evaluation window ends, epoch ms. Rows reach ClickHouse up to `flush_interval` after
/// they were accepted: the window ends that much (and a second) before `now`, so the newest edge
/// is not judged half-empty.
fn window_end_ms(app: &App, now: OffsetDateTime) -> i64 {
    (now.unix_timestamp_nanos() / 1_000_000) as i64 - app.config.flush_interval_ms as i64 - 1_000
}

/// The statistic per group over the rule's window ending at `now`, through the query layer.
async fn observe(app: &App, rule: &Rule, now: OffsetDateTime) -> Result<BTreeMap<String, Observation>, String> {
    let to = i128::from(window_end_ms(app, now));
    let from = to - rule.window.as_millis() as i128;
    let mut query = vec![("site", rule.site.clone()), ("from", from.to_string()), ("to", to.to_string())];
    let api = rule.metric == pulse_protocol::metric::API;
    if !api {
        query.push(("metric", rule.metric.clone()));
    }
    // Without `group_by` one row over every call or view: exact for every statistic.
    query.push(("group_by", rule.group_by.clone().unwrap_or_else(|| "none".into())));
    query.push(("limit", rule.max_groups.to_string()));
    if let Stat::Percentile(p) = rule.stat {
        query.push(("percentiles", p.to_string()));
    }
    let mut text = serde_urlencoded::to_string(&query).map_err(|e| e.to_string())?;
    if !rule.filters.is_empty() {
        text.push('&');
        text.push_str(&serde_urlencoded::to_string(&rule.filters).map_err(|e| e.to_string())?);
    }
    let (table, _) = if api {
        crate::query::api_calls_table(app, Some(&text), now).await
    } else {
        crate::query::vitals_table(app, Some(&text), now).await
    }
    .map_err(|e| e.to_string())?;
    let column = |name: &str| table.columns.iter().position(|c| c == name);
    let (group_col, count_col) = (column("group"), column("count"));
    let stat_col = column(&rule.stat.column()).ok_or_else(|| format!("the answer has no column {}", rule.stat.column()))?;
    let mut out: BTreeMap<String, Observation> = BTreeMap::new();
    for row in &table.rows {
        let group =
            if rule.group_by.is_some() { group_col.and_then(|i| row[i].as_str()).unwrap_or_default().to_owned() } else { String::new() };
        let samples = count_col.and_then(|i| row[i].as_u64()).unwrap_or(0);
        let value = row.get(stat_col).and_then(Value::as_f64);
        out.insert(group, Observation { value, samples });
    }
    if rule.stat == Stat::Count {
        for o in out.values_mut() {
            o.value = Some(o.samples as f64);
        }
    }
    Ok(out)
}

/// A release rule: the newest declared release against the one declared before it
/// ([`crate::releases::newest_two`]; releases beacons name but CI never declared are left out,
/// so a made-up release neither fires nor supersedes anything), their values in the window. The
/// group is `<previous> → <newest>`; its value is the relative change while the comparison says
/// `regression`, else at most 0. Until both releases have `min_samples` values in the window (or
/// while fewer than two are declared) the window holds no data and older pairs resolve quietly.
async fn observe_release(
    app: &App,
    rule: &Rule,
    (min_change, min_samples): (f64, u64),
    now: OffsetDateTime,
) -> Result<(BTreeMap<String, Observation>, BTreeMap<String, String>), String> {
    let to = window_end_ms(app, now).div_euclid(1000);
    let from = to - rule.window.as_secs() as i64;
    let filters: Vec<(&'static str, String)> = rule
        .normalised
        .iter()
        .filter_map(|(k, v)| crate::query::params::DIMENSIONS.iter().find(|d| *d == k).map(|d| (*d, v.clone())))
        .collect();
    let releases =
        crate::releases::newest_two(app, &rule.site, &rule.metric, (from, to), &filters, now).await.map_err(|e| e.to_string())?;
    let mut observed = BTreeMap::new();
    let mut details = BTreeMap::new();
    let Some((newest, previous)) = releases else { return Ok((observed, details)) };
    let stat = match rule.stat {
        Stat::Percentile(p) => crate::query::stats::Statistic::Percentile(p),
        _ => crate::query::stats::Statistic::Mean,
    };
    let c = crate::query::compare::compare_releases(
        app,
        &rule.site,
        &rule.metric,
        stat,
        min_change,
        min_samples,
        (&previous, &newest),
        (from, to),
        &filters,
    )
    .await
    .map_err(|e| e.to_string())?;
    let group = format!("{previous} → {newest}");
    // Release names are cut for the notice (the group keeps them whole).
    let (newest_name, previous_name) =
        (notify::capped(&newest, notify::MAX_VALUE_CHARS), notify::capped(&previous, notify::MAX_VALUE_CHARS));
    let verdict = c["verdict"].as_str().unwrap_or("");
    // A null change with data is a rise (or fall) from a statistic of 0: infinite, not missing.
    let change = c["change"].as_f64().or_else(|| c["difference"].as_f64().map(|d| f64::INFINITY.copysign(d)));
    if verdict == "insufficient_data" {
        return Ok((observed, details));
    }
    let samples = c["b"]["count"].as_u64().unwrap_or(0);
    let value = change.map(|ch| if verdict == "regression" { ch } else { ch.min(0.0) });
    let pct = |v: &serde_json::Value| v.as_f64().map_or_else(|| "?".to_owned(), |f| format!("{:+.1} %", f * 100.0));
    details.insert(
        group.clone(),
        format!(
            "{} {} of release {} against {}: {} (95 % interval {} to {}; {} and {} samples): {}",
            rule.stat.name(),
            rule.metric,
            newest_name,
            previous_name,
            match (c["change"].as_f64(), c["difference"].as_f64()) {
                (None, Some(d)) => format!("up from 0 by {}", human(d)),
                _ => pct(&c["change"]),
            },
            pct(&c["ci95"][0]),
            pct(&c["ci95"][1]),
            c["a"]["count"],
            c["b"]["count"],
            verdict.replace('_', " ")
        ),
    );
    observed.insert(group, Observation { value, samples });
    Ok((observed, details))
}

fn event_row(rule: &Rule, tracked: &Tracked, notice: Option<Notice>, now: OffsetDateTime) -> EventRow {
    let a = &tracked.alert;
    let severity = a.severity;
    EventRow {
        rule: rule.name.clone(),
        grp: tracked.group.clone(),
        site: rule.site.clone(),
        at: now.unix_timestamp() as u32,
        at_ms: (now.unix_timestamp_nanos() / 1_000_000) as u64,
        phase: a.phase.as_str().into(),
        severity: severity.map(Severity::as_str).unwrap_or_default().into(),
        notice: notice.map(Notice::as_str).unwrap_or_default().into(),
        value: a.value.unwrap_or(f64::NAN),
        threshold: severity.map_or(rule.limits.resolve, |s| rule.limits.threshold(s)),
        samples: a.samples,
        since: a.since.max(0) as u32,
        notified_at: a.notified_at.unwrap_or(0).max(0) as u32,
        recovering_since: a.recovering_since.unwrap_or(0).max(0) as u32,
    }
}

async fn insert_deliveries(clickhouse: &clickhouse::Client, rows: &[DeliveryRow]) -> Result<(), clickhouse::error::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    crate::storage::writer::insert(clickhouse, "alert_deliveries", rows).await
}

async fn store_event(app: &App, event: &EventRow) -> Result<(), clickhouse::error::Error> {
    crate::storage::writer::insert(&app.clickhouse, "alert_events", std::slice::from_ref(event)).await
}

/// A number as people read it: up to three decimals, no trailing zeros.
fn human(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn message(rule: &Rule, tracked: &Tracked, notice: Notice, now: OffsetDateTime, public_url: &str) -> Message {
    let a = &tracked.alert;
    let resolved = notice == Notice::Resolved;
    let severity = if resolved { None } else { a.severity };
    // Firing between the resolve threshold and the lowest threshold (hysteresis): the value no
    // longer breaches any threshold, it is just not back on the good side yet.
    let in_band = severity.is_some() && a.value.is_some_and(|v| rule.limits.severity(v).is_none());
    let threshold = match severity {
        Some(s) if !in_band => rule.limits.threshold(s),
        _ => rule.limits.resolve,
    };
    let unit = pulse_protocol::Vital::from_name(&rule.metric).map_or("", |v| if v.unit() == "ms" { " ms" } else { "" });
    let unit = match rule.stat {
        Stat::GoodShare | Stat::PoorShare | Stat::ErrorRate | Stat::Count => "",
        _ if rule.metric == pulse_protocol::metric::API => " ms",
        _ => unit,
    };
    let subject = {
        let mut s = format!("{} {}", rule.stat.name(), rule.metric);
        if !rule.filters.is_empty() {
            let filters: Vec<String> = rule.filters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!(" ({})", filters.join(", ")));
        }
        if let Some(g) = &rule.group_by {
            s.push_str(&format!(" for {g} {}", notify::capped(&tracked.group, notify::MAX_VALUE_CHARS)));
        }
        s
    };
    let value = a.value.map_or_else(|| "no data".to_owned(), |v| format!("{}{unit}", human(v)));
    let window = format!("{} min", rule.window.as_secs() / 60);
    let summary = match (notice, severity) {
        (Notice::Resolved, _) => format!(
            "Resolved: {subject} is {value}, back on the good side of {}{unit} ({window} window, {} samples)",
            human(threshold),
            a.samples
        ),
        (_, Some(_)) if in_band => format!(
            "{}: {subject} is {value}, not yet back on the good side of {}{unit} ({window} window, {} samples)",
            if notice == Notice::Reminder { "Still firing" } else { "Firing" },
            human(threshold),
            a.samples
        ),
        (_, Some(s)) => format!(
            "{}: {subject} is {value}, {} the {} threshold {}{unit} ({window} window, {} samples)",
            if notice == Notice::Reminder { "Still firing" } else { "Firing" },
            if rule.limits.above { "over" } else { "under" },
            s.as_str(),
            human(threshold),
            a.samples
        ),
        (_, None) => format!("{subject} is {value}"),
    };
    let summary = match (&rule.release, &tracked.detail) {
        (Some(_), Some(detail)) if resolved => format!("Resolved: {detail}"),
        (Some(_), Some(detail)) => format!("Release regression: {detail}"),
        _ => summary,
    };
    let summary = notify::capped(&summary, notify::MAX_SUMMARY_CHARS);
    // Every parameter encoded: the link is Pulse's, whatever the values hold.
    let mut link = vec![("site", rule.site.as_str()), ("metric", rule.metric.as_str())];
    link.extend(rule.filters.iter().find(|(k, _)| k == "url").map(|(_, v)| ("url", v.as_str())));
    let dashboard =
        format!("{}/dashboard.html?{}", public_url.trim_end_matches('/'), serde_urlencoded::to_string(&link).unwrap_or_default());
    Message {
        version: 1,
        status: if resolved { "resolved" } else { "firing" }.to_owned(),
        notice: notice.as_str().to_owned(),
        rule: rule.name.clone(),
        site: rule.site.clone(),
        group: notify::capped(&tracked.group, notify::MAX_VALUE_CHARS),
        metric: rule.metric.clone(),
        stat: rule.stat.name(),
        severity: severity.map(|s| s.as_str().to_owned()),
        value: a.value,
        threshold,
        samples: a.samples,
        window: format!("{}s", rule.window.as_secs()),
        started_at: format_time(a.since),
        at: format_time(now.unix_timestamp()),
        summary,
        dashboard,
        fingerprint: fingerprint(&rule.name, &tracked.group),
    }
}

/// Stable id of an alert (rule × group): 16 hex digits of FNV-1a.
pub fn fingerprint(rule: &str, group: &str) -> String {
    format!("{:016x}", crate::query::stats::fnv1a(&[rule, "\0", group]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(groups: &[(&str, u64)]) -> BTreeMap<String, Observation> {
        groups.iter().map(|(g, n)| ((*g).to_owned(), Observation { value: Some(1.0), samples: *n })).collect()
    }

    #[test]
    fn new_groups_join_busiest_first_up_to_the_cap_and_tracked_ones_stay() {
        let observed = seen(&[("/a", 1), ("/b", 9), ("/c", 5), ("/d", 5)]);
        let (groups, over) = admit(observed, vec!["/old".into()], 50, 3);
        assert_eq!(
            groups.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["/b", "/c", "/old"],
            "the tracked one first, then the busiest"
        );
        assert_eq!(groups["/old"].value, None, "a complete answer without it: no data");
        assert_eq!(over, 2);
        // A full rule takes no new group, and keeps every tracked one even past a lowered cap.
        let (groups, over) = admit(seen(&[("/x", 100), ("/a", 1)]), vec!["/a".into(), "/b".into()], 50, 1);
        assert_eq!((groups.keys().map(String::as_str).collect::<Vec<_>>(), over), (vec!["/a", "/b"], 1));
    }

    #[test]
    fn a_cut_answer_leaves_tracked_groups_it_lacks_unstepped() {
        let (groups, over) = admit(seen(&[("/a", 3), ("/b", 2)]), vec!["/c".into()], 2, 10);
        assert_eq!((groups.keys().map(String::as_str).collect::<Vec<_>>(), over), (vec!["/a", "/b"], 0));
    }
}
