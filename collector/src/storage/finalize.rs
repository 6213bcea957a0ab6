//! The finalizer: makes whole hours final, once every report of their page views can be
//! expected to have arrived, and rolls them up.
//!
//! Web-vitals reports CLS and INP again (same id, new value) on each later hide when they grew.
//! The raw table keeps every report; answers count each metric id once, with its last value:
//!
//! - An id belongs to the time of its **first** report; its value is that of its **last** report
//!   by the page's own order ([`REPORT_ORDER`]: the agent's report number, then the page's clock,
//!   the collectors' arrival order only to break ties) among the reports up to
//!   [`LOOKBACK_SECONDS`] around it. [`REPORT_KEY`] is the id (a metric sent without one is its
//!   own row).
//! - `final_grace_minutes` after an hour ends (and once no collector still holds unshipped rows
//!   from before that), the leader of the `finalizer_lease` writes the hour's ids, one row each,
//!   to `metrics_final`, then the hour's states to every rollup shape (`rollup_<shape>_1h` and
//!   `_1d`). Queries read final hours from there and the rest from raw rows, deduplicated the
//!   same way ([`crate::query`]).
//! - Reports that arrive after their hour is final stay in the raw table, are counted in
//!   `pulse_late_reports_total`, and change no answer: at ingest, a report whose own time is
//!   before the watermark; in the finalizer, a re-report whose page view's first hour was due
//!   to be final (its end plus the grace period) before the re-report arrived.
//! - Rows a collector **stores** late — it accepted them in time, then could not reach
//!   ClickHouse for longer than the finalizer waits for it (a lease: three intervals without a
//!   heartbeat) — are made final too: after storing a batch the shipper writes a `late_rows`
//!   marker naming the earliest hour that may have been made final without one of its rows
//!   ([`late_hour`]), and the next run that finds such an hour below the watermark (and no live
//!   collector still draining a backlog) rebuilds its day onwards as after a crash (below),
//!   counted in `pulse_hours_refinalized_total`. A rebuilt day reads every raw row of its ids,
//!   reports that arrived late included.
//!
//! Crash safety: each span (whole hours within one UTC day, six at most) is recorded as `started` in
//! `finalizer_progress` before anything is written and `done` after. A run that finds its last
//! span `started` (a crash, a lost connection, a collector killed mid-way) drops that day's
//! partitions (and any later day's) of every derived table (all are partitioned by UTC day) and
//! rebuilds from the start of that day from the raw table, so no hour is ever counted twice. Several collectors may run: a lease lets one
//! at a time finalize.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use clickhouse::query::Query;
use clickhouse::{Client, Row};
use serde::Deserialize;
use time::OffsetDateTime;

use super::histogram::{bin_sql, RUNNING_DAYS};
use super::lease::Lease;
use super::schema::{state_expressions, Grain, GRAINS, ROLLUP_LEVELS, SHAPES};
use crate::App;

/// How far apart the reports of one id may be and still be counted as one: reports more than a
/// day after an id's first are counted as their own. Also how far back queries look for an id's
/// first report.
pub const LOOKBACK_SECONDS: i64 = 86_400;

/// The metrics web-vitals reports again for the same page view (when they grew). Others are
/// reported once; their only repeats are a beacon delivered twice (same time, same `seq`).
pub const RE_REPORTED: [&str; 2] = ["CLS", "INP"];

/// What identifies one metric of one page view: its id (vitals', and since issue 28 the agent's
/// id of each custom metric, so a resent beacon counts once), or, for metrics without one (older
/// agents), the row itself (its page view and arrival order; a row shipped twice is one). Rows stored
/// before `seq` existed that are equal in every field count once. A 64-bit hash: grouping by it
/// is cheaper than by the id's text, and two ids of one site and metric share one with odds of
/// about n²/2⁶⁵ (none expected below billions).
pub const REPORT_KEY: &str = "if(metric_id = '', cityHash64(page, session, seq, event_time, value, received_at), cityHash64(metric_id))";

/// Which report of one id is the last, as an `argMax` key: the agent's report number (`n`), then
/// the page's clock (`at`) — one page's reports come from one clock, so no skew correction is
/// needed to order them, and a collector whose clock is off cannot reorder them — then the
/// receiving collector's arrival order. Rows stored before the page's order was kept (both 0)
/// are ordered as they were: by skew-corrected time, then arrival.
pub const REPORT_ORDER: &str = "(report_n, page_at, if(page_at = 0, toUInt32(event_time), 0), seq)";

/// [`REPORT_ORDER`] of one row, for reports deduplicated outside ClickHouse.
pub fn report_order(report_n: u32, page_at: u64, event_time: u32, seq: u64) -> (u32, u64, u32, u64) {
    (report_n, page_at, if page_at == 0 { event_time } else { 0 }, seq)
}

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// How far another collector's clock may run ahead of this one's and its finalizer still not
/// make an hour final before this collector's shipper sees the hour's end plus grace pass.
const CLOCK_SLACK_SECONDS: i64 = 60;

/// The earliest hour (epoch s) that may have been made final without a row of metric `name`
/// (its own time `event_time`, received at `received_at`, epoch s) stored at `stored`: an hour
/// whose deadline (its end plus `grace`) came after the row's receipt — so the row was in time —
/// and before it was stored (within [`CLOCK_SLACK_SECONDS`]). A report is counted with the
/// first report of its id, whose hour is its own for metrics reported once and, for CLS and INP,
/// any hour from the first whose deadline came after the receipt. `None`: the row was late
/// already when received (kept raw, see the module doc), or no deadline passed before it was
/// stored.
pub fn late_hour(name: &str, event_time: u32, received_at: u32, stored: i64, grace: i64) -> Option<i64> {
    let deadline = |hour: i64| hour + HOUR + grace;
    let received = i64::from(received_at);
    let own = i64::from(event_time).div_euclid(HOUR) * HOUR;
    let first = if RE_REPORTED.contains(&name) { (received - grace).div_euclid(HOUR) * HOUR } else { own };
    (deadline(own) > received && deadline(first) <= stored + CLOCK_SLACK_SECONDS).then_some(first.min(own))
}

/// The columns of `metrics_final` besides the value, in order, as the finalizer takes them from
/// raw rows (aliases: 18.16 refuses an aggregate's alias that shadows a column).
const CARRIED: [&str; 10] = ["session", "page", "url", "nav", "release", "env", "device", "browser", "os", "country"];

#[derive(Debug, thiserror::Error)]
pub enum FinalizeError {
    #[error("an earlier finalizer statement is still running on the server; the rebuild waits for the next run")]
    StillWriting,
    #[error("ClickHouse refused {what}: {source}")]
    ClickHouse {
        what: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
}

fn ch(what: &'static str) -> impl FnOnce(clickhouse::error::Error) -> FinalizeError {
    move |source| FinalizeError::ClickHouse { what, source }
}

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Another collector finalizes.
    NotLeader,
    /// Nothing to finalize yet (no rows, or no hour past its grace period).
    Idle,
    /// Hours made final; everything first reported before `until` (epoch s) now is.
    Finalized { hours: i64, until: i64, rebuilt_day: bool },
}

#[derive(Debug, Row, Deserialize)]
struct ProgressRow {
    at_ms: u64,
    holder: String,
    phase: String,
    span_from: u32,
    span_to: u32,
}

/// One collector's finalizer.
#[derive(Debug)]
pub struct Finalizer {
    lease: Lease,
    /// One run at a time in this process (the background loop and tests driving `now`).
    running: tokio::sync::Mutex<()>,
    /// Everything first reported before this (epoch s, a whole hour) is final; 0: nothing yet.
    final_until: AtomicI64,
    /// The `now` of this collector's last heartbeat, epoch ms (0: none yet).
    last_heartbeat_ms: AtomicU64,
    /// From when the histograms hold every final value (epoch s; `i64::MAX`: not known yet).
    histograms_since: AtomicI64,
}

impl Default for Finalizer {
    fn default() -> Finalizer {
        Finalizer {
            lease: Lease::new("finalizer_lease"),
            running: tokio::sync::Mutex::new(()),
            final_until: AtomicI64::new(0),
            last_heartbeat_ms: AtomicU64::new(0),
            histograms_since: AtomicI64::new(i64::MAX),
        }
    }
}

impl Finalizer {
    /// Everything first reported before this time (epoch s) is final, as far as this collector
    /// knows (another collector's finalizer may be ahead; behind is always safe to read).
    pub fn final_until(&self) -> Option<i64> {
        Some(self.final_until.load(Ordering::Acquire)).filter(|t| *t > 0)
    }

    /// From when the histograms ([`super::histogram`]) hold every final value, if known.
    pub fn histograms_since(&self) -> Option<i64> {
        Some(self.histograms_since.load(Ordering::Acquire)).filter(|t| *t < i64::MAX)
    }

    /// Reads [`Finalizer::histograms_since`].
    async fn learn_histograms_since(&self, client: &Client) -> Result<(), FinalizeError> {
        let (n, since) = client
            .query("SELECT count(), toUInt32(max(since)) FROM histograms_since")
            .fetch_one::<(u64, u32)>()
            .await
            .map_err(ch("reading histograms_since"))?;
        self.histograms_since.store(if n > 0 { i64::from(since) } else { i64::MAX }, Ordering::Release);
        Ok(())
    }

    /// Takes everything before `until` as final without asking ClickHouse: for building the SQL
    /// of every query shape without a server (`tests/chdb.rs`).
    pub fn assume_final_until(&self, app: &App, until: i64) {
        self.publish(app, until);
        let _ = self.histograms_since.compare_exchange(i64::MAX, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    fn publish(&self, app: &App, until: i64) {
        self.final_until.store(until, Ordering::Release);
        app.telemetry.final_until_seconds.set(until);
    }

    /// One run at `now`: renews the lease, learns how far the values are final, and, when this
    /// collector leads, finalizes every whole hour that is due.
    pub async fn run(&self, app: &App, now: OffsetDateTime) -> Result<Outcome, FinalizeError> {
        let _one = self.running.lock().await;
        let client = &app.clickhouse;
        let began = std::time::Instant::now();
        let start_ms = (now.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
        // `now`, moving on while a long run (a backfill) works.
        let clock = || start_ms + began.elapsed().as_millis() as u64;
        let interval_ms = app.config.finalize_interval_seconds.max(1) * 1_000;
        let lease_ms = 3 * interval_ms;
        // Away longer than the lease lasts (a pause, a partition): someone else may have led
        // meanwhile; start over as a newcomer rather than take the lease straight back.
        let previous = self.last_heartbeat_ms.swap(start_ms, Ordering::AcqRel);
        if previous > 0 && start_ms.saturating_sub(previous) > lease_ms {
            self.lease.rejoin();
        }
        let renew = |at: u64| async move {
            let backlog_ms = app.spool.stats().oldest_ms.unwrap_or(0);
            self.lease.renew(client, at, interval_ms, backlog_ms).await.map_err(ch("the finalizer lease"))
        };
        let leading = renew(clock()).await?;
        self.learn_histograms_since(client).await?;
        let last = last_progress(client).await?;
        self.learn(app, last.as_ref());
        if !leading {
            return Ok(Outcome::NotLeader);
        }
        let mut at_ms = last.as_ref().map_or(0, |p| p.at_ms);
        let mut next_at = || {
            at_ms = clock().max(at_ms + 1);
            at_ms
        };

        // A span left `started`: rebuild its whole day (and any later one, should there be any).
        let mut rebuilt_day = false;
        let mut expected = last.as_ref().map(|p| p.at_ms);
        let mut from = match &last {
            Some(p) if p.phase == "started" => {
                if p.holder != self.lease.holder()
                    && self.lease.is_live(client, &p.holder, clock(), interval_ms).await.map_err(ch("the finalizer lease"))?
                {
                    // Its writer still heartbeats: a run in progress elsewhere, not a crash.
                    return Ok(Outcome::NotLeader);
                }
                let day = i64::from(p.span_from).div_euclid(DAY) * DAY;
                tracing::warn!(day = %crate::query::params::format_time(day), "the last finalizer run stopped mid-way; rebuilding from that day");
                expected = Some(self.start_over(app, day, interval_ms, next_at()).await?);
                rebuilt_day = true;
                day
            }
            Some(p) => i64::from(p.span_to),
            None => match first_day(client).await? {
                Some(day) => day,
                None => return Ok(Outcome::Idle),
            },
        };
        // Rows a collector stored after an hour they count in was made final (it was cut off from
        // ClickHouse longer than the finalizer waits for it): the day is made final again. Not
        // while a live collector still drains a backlog (its later batches would each ask again):
        // one rebuild once it has shipped.
        let backlog = self.lease.oldest_backlog(client, clock(), interval_ms).await.map_err(ch("the spool backlogs"))?;
        let draining = backlog.is_some_and(|oldest_ms| oldest_ms + interval_ms < clock());
        let late = if draining { Vec::new() } else { pending_late(client).await? };
        // Never before the oldest raw row: days whose raw rows retention dropped keep their
        // rollups (kept longer), and their late rows are gone with them.
        let oldest = if late.is_empty() { None } else { first_day(client).await? };
        let late_hour = late.iter().map(|l| i64::from(l.hour)).min().map(|hour| hour.max(oldest.unwrap_or(hour)));
        if let Some(hour) = late_hour.filter(|hour| *hour < from) {
            let day = hour.div_euclid(DAY) * DAY;
            tracing::warn!(
                hour = %crate::query::params::format_time(hour),
                "rows arrived after their hour was made final; finalizing again from that day"
            );
            expected = Some(self.start_over(app, day, interval_ms, next_at()).await?);
            app.telemetry.hours_refinalized.inc_by(((from - day) / HOUR) as u64);
            rebuilt_day = true;
            from = day;
        }
        // Handled: the day is rebuilt from `finalizer_progress` from here on (a crash now leaves a
        // span `started`, which rebuilds it again). In chunks: the markers are part of the
        // statement's text, which the server bounds (`max_query_size`).
        let handled_at = next_at();
        for chunk in late.chunks(1_000) {
            let markers: Vec<&str> = chunk.iter().map(|l| l.marker.as_str()).collect();
            client
                .query("INSERT INTO late_rows (at, at_ms, marker, phase, hour) SELECT toDateTime(intDiv(?, 1000)), ?, arrayJoin(?), 'done', toDateTime(0)")
                .bind(handled_at)
                .bind(handled_at)
                .bind(markers)
                .execute()
                .await
                .map_err(ch("recording late rows handled"))?;
        }

        // Due: whole hours that ended a grace period ago, and before any row still waiting in a
        // live collector's spool (a row may be up to a grace period older than its receipt).
        let grace = i64::from(app.config.final_grace_minutes) * 60;
        let mut due = (now.unix_timestamp() - grace).div_euclid(HOUR) * HOUR;
        if let Some(oldest_ms) = backlog {
            due = due.min(((oldest_ms / 1_000) as i64 - grace).div_euclid(HOUR) * HOUR);
        }
        // Late re-reports of a span are counted the first time it is finalized: not again when
        // a crash makes the day rebuilt (nor when a rebuild stopped half-way is continued).
        let counted_until = finalized_until(client).await?;
        let start = from;
        while from < due {
            // Still the leader (a long run outlives a lease unless it renews), and no other
            // finalizer wrote since (two leaders for a moment): otherwise leave the rest.
            if !renew(clock()).await? {
                break;
            }
            let now_last = last_progress(client).await?;
            if now_last.as_ref().map(|p| p.at_ms) != expected {
                tracing::warn!("another collector is finalizing; stopping this run");
                break;
            }
            let to = due.min((from.div_euclid(DAY) + 1) * DAY).min(from + MAX_SPAN_SECONDS);
            let started_at = next_at();
            record(client, started_at, self.lease.holder(), "started", from, to).await?;
            // Each shard rolls up its own rows (all reports of a page view are on one shard).
            for (i, shard) in app.shards.iter().enumerate() {
                let query_id = format!("{}{}-{started_at}-{i}", statement_prefix(app), self.lease.holder());
                finalize_span(shard, from, to, grace, &query_id, app, to > counted_until).await?;
            }
            let done_at = next_at();
            record(client, done_at, self.lease.holder(), "done", from, to).await?;
            expected = Some(done_at);
            app.telemetry.hours_finalized.inc_by(((to - from) / HOUR) as u64);
            if to % DAY == 0 {
                // A whole day is in: merge each day rollup's rows of it (one per span so far)
                // into one per key, so long ranges merge a state per day, not per span.
                for shard in &app.shards {
                    compact_day(shard, to - DAY).await?;
                }
            }
            self.publish(app, to);
            from = to;
        }
        if from > start || rebuilt_day {
            self.publish(app, from);
            return Ok(Outcome::Finalized { hours: (from - start) / HOUR, until: from, rebuilt_day });
        }
        Ok(Outcome::Idle)
    }

    /// Drops `day` and every later day from the derived tables and records everything before
    /// `day` as final (at `at_ms`, returned): finalizing goes on from there.
    async fn start_over(&self, app: &App, day: i64, interval_ms: u64, at_ms: u64) -> Result<u64, FinalizeError> {
        // Earlier statements may still be running on the server (the client gave up, the server
        // did not): dropping before they end would let their rows land after.
        for shard in &app.shards {
            wait_for_writes(shard, &statement_prefix(app), interval_ms).await?;
        }
        // This collector reads the day from raw rows while it is rebuilt; others read empty
        // final tables for the day until their next run (at most an interval).
        self.publish(app, day);
        for shard in &app.shards {
            drop_days_from(shard, day).await?;
        }
        record(&app.clickhouse, at_ms, self.lease.holder(), "done", day, day).await?;
        Ok(at_ms)
    }

    /// Learns how far values are final from `finalizer_progress` (at start, before the first run).
    pub async fn refresh(&self, app: &App) -> Result<(), FinalizeError> {
        self.learn_histograms_since(&app.clickhouse).await?;
        self.learn(app, last_progress(&app.clickhouse).await?.as_ref());
        Ok(())
    }

    /// Learns how far values are final from the last progress record: a span `done` ends the
    /// final part; a span `started` that begins earlier than what this collector knows (a
    /// rebuild, whose days are dropped from the final tables) moves it back to its start.
    fn learn(&self, app: &App, last: Option<&ProgressRow>) {
        match last {
            Some(p) if p.phase == "done" => self.publish(app, i64::from(p.span_to)),
            Some(p) if i64::from(p.span_from) < self.final_until.load(Ordering::Acquire) => self.publish(app, i64::from(p.span_from)),
            _ => {}
        }
    }
}

/// Merges the day rollups' parts of the UTC day `day` (idempotent).
async fn compact_day(client: &Client, day: i64) -> Result<(), FinalizeError> {
    let mut merges: Vec<(String, String)> = SHAPES.iter().map(|s| (s.table(Grain::Day), (day / DAY).to_string())).collect();
    // And the month of the site's hour histograms: one part per month.
    let date = time::OffsetDateTime::from_unix_timestamp(day).map_or(time::macros::date!(1970 - 01 - 01), |t| t.date());
    merges.push(("hist_site_1h".to_owned(), format!("{}{:02}", date.year(), u8::from(date.month()))));
    for (table, partition) in merges {
        client
            .query(&format!("OPTIMIZE TABLE {table} PARTITION {partition} FINAL"))
            .execute()
            .await
            .map_err(ch("merging a finished day"))?;
    }
    Ok(())
}

/// The start of the `query_id` of every finalizer statement on this database.
fn statement_prefix(app: &App) -> String {
    format!("pulse-finalize-{}-", app.config.clickhouse_database)
}

/// Waits (up to `limit_ms`) until no finalizer statement of this database runs on the server.
async fn wait_for_writes(client: &Client, prefix: &str, limit_ms: u64) -> Result<(), FinalizeError> {
    let began = std::time::Instant::now();
    loop {
        let running = client
            .query("SELECT count() FROM system.processes WHERE startsWith(query_id, ?)")
            .bind(prefix)
            .fetch_one::<u64>()
            .await
            .map_err(ch("reading system.processes"))?;
        if running == 0 {
            return Ok(());
        }
        if began.elapsed().as_millis() as u64 > limit_ms {
            return Err(FinalizeError::StillWriting);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn last_progress(client: &Client) -> Result<Option<ProgressRow>, FinalizeError> {
    let rows = client
        .query(
            "SELECT at_ms, holder, phase, toUInt32(span_from) AS span_from, toUInt32(span_to) AS span_to
             FROM finalizer_progress ORDER BY at_ms DESC, phase DESC LIMIT 1",
        )
        .fetch_all::<ProgressRow>()
        .await
        .map_err(ch("reading finalizer_progress"))?;
    Ok(rows.into_iter().next())
}

/// The end (epoch s) of the latest span ever finalized (0 when none was).
async fn finalized_until(client: &Client) -> Result<i64, FinalizeError> {
    let until = client
        .query("SELECT toUInt32(max(span_to)) FROM finalizer_progress WHERE phase = 'done'")
        .fetch_one::<u32>()
        .await
        .map_err(ch("reading finalizer_progress"))?;
    Ok(i64::from(until))
}

async fn record(client: &Client, at_ms: u64, holder: &str, phase: &str, from: i64, to: i64) -> Result<(), FinalizeError> {
    client
        .query("INSERT INTO finalizer_progress (at_ms, holder, phase, span_from, span_to) VALUES (?, ?, ?, toDateTime(?), toDateTime(?))")
        .bind(at_ms)
        .bind(holder)
        .bind(phase)
        .bind(from)
        .bind(to)
        .execute()
        .await
        .map_err(ch("recording finalizer progress"))
}

/// A `late_rows` marker no finalizer run has handled: rows from `hour` on were stored late.
#[derive(Debug, Row, Deserialize)]
struct Late {
    marker: String,
    hour: u32,
}

async fn pending_late(client: &Client) -> Result<Vec<Late>, FinalizeError> {
    client
        .query("SELECT marker, toUInt32(min(hour)) AS hour FROM late_rows GROUP BY marker HAVING countIf(phase = 'done') = 0")
        .fetch_all::<Late>()
        .await
        .map_err(ch("reading late_rows"))
}

/// The UTC day of the oldest raw row, where finalizing starts in a new database.
async fn first_day(client: &Client) -> Result<Option<i64>, FinalizeError> {
    let (n, first) = client
        .query("SELECT count(), toUInt32(min(event_time)) FROM metrics")
        .fetch_one::<(u64, u32)>()
        .await
        .map_err(ch("reading the oldest raw row"))?;
    Ok((n > 0).then(|| i64::from(first).div_euclid(DAY) * DAY))
}

/// Every table the finalizer writes that is partitioned by day (`hist_site_1h`, by month, is
/// not: see [`drop_days_from`]).
fn derived_tables() -> Vec<String> {
    let mut tables = vec!["metrics_final".to_owned()];
    for shape in SHAPES {
        tables.extend(GRAINS.iter().map(|g| shape.table(*g)));
        if shape.running() {
            tables.extend(GRAINS.iter().map(|g| shape.running_table(*g)));
        }
    }
    tables
}

/// Drops the UTC day `day` and every later one from every derived table (each is partitioned
/// by day number): whatever was finalized from there on is rebuilt.
async fn drop_days_from(client: &Client, day: i64) -> Result<(), FinalizeError> {
    #[derive(Debug, Row, Deserialize)]
    struct Part {
        table: String,
        partition: String,
    }
    let parts = client
        .query("SELECT DISTINCT table, partition FROM system.parts WHERE database = currentDatabase() AND active AND has(?, table)")
        .bind(derived_tables())
        .fetch_all::<Part>()
        .await
        .map_err(ch("listing the finalized days"))?;
    for part in parts {
        // Partition ids of these tables are day numbers; the table name comes from our own list.
        let Ok(number) = part.partition.trim_matches('\'').parse::<i64>() else { continue };
        if number >= day / DAY {
            client
                .query(&format!("ALTER TABLE {} DROP PARTITION {number}", part.table))
                .execute()
                .await
                .map_err(ch("dropping a partly finalized day"))?;
        }
    }
    // The site's hour histograms are partitioned by month (a 30-day series reads two parts, not
    // thirty): their hours from `day` on are deleted, and the rebuild waits until they are.
    client
        .query("ALTER TABLE hist_site_1h DELETE WHERE bucket >= toDateTime(?)")
        .bind(day)
        .execute()
        .await
        .map_err(ch("deleting partly finalized hours"))?;
    let started = std::time::Instant::now();
    while client
        .query("SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'hist_site_1h' AND is_done = 0")
        .fetch_one::<u64>()
        .await
        .map_err(ch("reading system.mutations"))?
        > 0
    {
        if started.elapsed() > std::time::Duration::from_secs(300) {
            return Err(FinalizeError::StillWriting);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The `SELECT` of one row per id first reported in `[from, to)`: its last value and rating,
/// its report count and the page view's columns. Only re-reported metrics of ids reported in the
/// span are read around it (a day before and after); the rest only in it. Binds: `from`, `to`,
/// `from - LOOKBACK`, `to + LOOKBACK`, `from`, `to`, `from`, `to`.
fn final_rows_sql() -> String {
    let carried: String = CARRIED.iter().map(|c| format!(", any({c}) AS c_{c}")).collect();
    format!(
        "SELECT site, name, min(event_time) AS first_time, any(metric_id) AS id,
            argMax(value, {REPORT_ORDER}) AS v, argMax(rating, {REPORT_ORDER}) AS r, toUInt32(count()) AS n{carried}
         FROM metrics
         WHERE (event_time >= toDateTime(?) AND event_time < toDateTime(?))
            OR (has({re}, name) AND event_time >= toDateTime(?) AND event_time < toDateTime(?)
                AND metric_id IN (SELECT metric_id FROM metrics WHERE has({re}, name) AND metric_id != ''
                                  AND event_time >= toDateTime(?) AND event_time < toDateTime(?)))
         GROUP BY site, name, {REPORT_KEY}
         HAVING first_time >= toDateTime(?) AND first_time < toDateTime(?)",
        re = re_reported_sql()
    )
}

/// [`RE_REPORTED`] as an SQL array literal.
pub fn re_reported_sql() -> String {
    format!("[{}]", RE_REPORTED.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", "))
}

/// Longest span finalized at once (memory: every id of a span is grouped in one query).
const MAX_SPAN_SECONDS: i64 = 6 * HOUR;

/// Makes `[from, to)` (whole hours within one UTC day) final: its ids into `metrics_final`, then
/// its states into every rollup.
/// The statements that make `[from, to)` final, in order: its ids into `metrics_final`, then its
/// states into every rollup; and the query counting its late re-reports. Each is named
/// (`query_id`), so a rebuild can wait until none is still running on the server.
pub fn span_statements(client: &Client, from: i64, to: i64, grace: i64, query_id: &str) -> (Vec<Query>, Query) {
    let mut n = 0;
    let mut named = |sql: &str| {
        n += 1;
        client.query(sql).with_setting("query_id", format!("{query_id}-{n}"))
    };
    let carried_out: String = CARRIED.iter().map(|c| format!(", c_{c}")).collect();
    let carried_in: String = CARRIED.iter().map(|c| format!(", {c}")).collect();
    let mut writes = vec![named(&format!(
        "INSERT INTO metrics_final (site, name, event_time, metric_id, value, rating, reports{carried_in})
         SELECT site, name, first_time, id, v, r, n{carried_out} FROM ({})",
        final_rows_sql()
    ))
    .bind(from)
    .bind(to)
    .bind(from - LOOKBACK_SECONDS)
    .bind(to + LOOKBACK_SECONDS)
    .bind(from)
    .bind(to)
    .bind(from)
    .bind(to)
    // A large span groups to disk rather than fail.
    .with_setting("max_bytes_before_external_group_by", "2000000000")];
    let states = state_expressions("value", "rating");
    for shape in SHAPES {
        let dims: String = shape.dims.iter().map(|d| format!(", {d}")).collect();
        for grain in GRAINS {
            let step = grain.seconds();
            writes.push(
                named(&format!(
                    "INSERT INTO {table} SELECT site, name, toDateTime(intDiv(toUInt32(event_time), {step}) * {step}) AS bucket{dims}, {states}
                     FROM metrics_final WHERE event_time >= toDateTime(?) AND event_time < toDateTime(?)
                     GROUP BY site, name, bucket{dims}",
                    table = shape.table(grain)
                ))
                .bind(from)
                .bind(to),
            );
        }
    }
    writes.extend(histogram_statements(from, to).into_iter().map(|(sql, binds)| binds.into_iter().fold(named(&sql), Query::bind)));
    // Re-reports in this span of page views first reported in an hour that was already due to be
    // final when they arrived: kept raw, not in any answer.
    let late = named(&format!(
        "SELECT countIf(t >= toDateTime(?) AND t < toDateTime(?) AND a >= toDateTime(deadline))
         FROM (SELECT intDiv(toUInt32(min(event_time)), 3600) * 3600 + 3600 + ? AS deadline,
                      groupArray(event_time) AS times, groupArray(received_at) AS arrivals
               FROM metrics WHERE has({re}, name) AND event_time >= toDateTime(?) AND event_time < toDateTime(?)
               GROUP BY site, name, {REPORT_KEY}
               HAVING min(event_time) < toDateTime(?) AND max(event_time) >= toDateTime(?))
         ARRAY JOIN times AS t, arrivals AS a",
        re = re_reported_sql()
    ))
    .bind(from)
    .bind(to)
    .bind(grace)
    .bind(from - LOOKBACK_SECONDS)
    .bind(to)
    .bind(from)
    .bind(from);
    (writes, late)
}

/// The statements that add `[from, to)` to the histograms, with their binds: its hours to
/// `hist_site_1h`, and per shape the running totals at `to` (those at `from` plus the span).
fn histogram_statements(from: i64, to: i64) -> Vec<(String, Vec<i64>)> {
    let bin = bin_sql("value");
    let counts = "count() AS c, sum(value) AS s, countIf(rating = 'good') AS g, countIf(rating = 'needs-improvement') AS x,
        countIf(rating = 'poor') AS p";
    // Per hour the histogram and, for the site's hourly series, the exact percentiles
    // ([`ROLLUP_LEVELS`], as `quantilesExact` over the hour's final values gives them).
    let levels = ROLLUP_LEVELS.map(|l| l.to_string()).join(", ");
    let hour = "toDateTime(intDiv(toUInt32(event_time), 3600) * 3600)";
    let mut out = vec![(
        format!(
            "INSERT INTO hist_site_1h (site, name, bucket, n, total, good, ni, poor, bins, counts, lo, hi, q)
             SELECT site, name, b, hn, ht, hg, hx, hp, hb, hc, hl, hh, q
             FROM (SELECT site, name, b, sum(c) AS hn, sum(s) AS ht, sum(g) AS hg, sum(x) AS hx, sum(p) AS hp, groupArray(bin) AS hb,
                          groupArray(toUInt32(c)) AS hc, min(l) AS hl, max(h) AS hh
                   FROM (SELECT site, name, {hour} AS b, {bin} AS bin, {counts}, min(value) AS l, max(value) AS h
                         FROM metrics_final WHERE event_time >= toDateTime(?) AND event_time < toDateTime(?)
                         GROUP BY site, name, b, bin)
                   GROUP BY site, name, b) AS hours
             ANY LEFT JOIN
                  (SELECT site, name, {hour} AS b, quantilesExact({levels})(value) AS q
                   FROM metrics_final WHERE event_time >= toDateTime(?) AND event_time < toDateTime(?)
                   GROUP BY site, name, b) AS percentiles
             USING (site, name, b)"
        ),
        vec![from, to, from, to],
    )];
    let grain = |at: i64| if at % DAY == 0 { Grain::Day } else { Grain::Hour };
    for shape in SHAPES.iter().filter(|s| s.running()) {
        let dims = shape.dims.join(", ");
        out.push((
            format!(
                "INSERT INTO {into} (site, name, at, {dims}, since, last, n, total, good, ni, poor, bins, counts)
                 SELECT site, name, toDateTime(?), {dims}, min(since_), max(last_), sum(n_), sum(total_), sum(good_), sum(ni_),
                     sum(poor_), tupleElement(sumMap(bins_, counts_), 1), arrayMap(x -> toUInt32(x), tupleElement(sumMap(bins_, counts_), 2))
                 FROM (SELECT site, name, {dims}, since AS since_, last AS last_, n AS n_, total AS total_, good AS good_, ni AS ni_,
                              poor AS poor_, bins AS bins_, counts AS counts_
                       FROM {before} WHERE at = toDateTime(?) AND last >= toDateTime(?)
                       UNION ALL
                       SELECT site, name, {dims}, toDateTime(?), toDateTime(?), sum(c), sum(s), sum(g), sum(x), sum(p),
                           groupArray(bin), groupArray(toUInt32(c))
                       FROM (SELECT site, name, {dims}, {bin} AS bin, {counts}
                             FROM metrics_final WHERE event_time >= toDateTime(?) AND event_time < toDateTime(?)
                             GROUP BY site, name, {dims}, bin)
                       GROUP BY site, name, {dims})
                 GROUP BY site, name, {dims}",
                into = shape.running_table(grain(to)),
                before = shape.running_table(grain(from)),
            ),
            // Keys carried: those with values in the last `RUNNING_DAYS`.
            vec![to, from, to - i64::from(RUNNING_DAYS) * DAY, from, to, from, to],
        ));
    }
    out
}

/// Finalizes one span on one shard; with `count_late`, adds its late re-reports to
/// `pulse_late_reports_total`.
async fn finalize_span(
    client: &Client,
    from: i64,
    to: i64,
    grace: i64,
    query_id: &str,
    app: &App,
    count_late: bool,
) -> Result<(), FinalizeError> {
    let (writes, late) = span_statements(client, from, to, grace, query_id);
    for (i, write) in writes.into_iter().enumerate() {
        write.execute().await.map_err(ch(if i == 0 { "writing metrics_final" } else { "writing a rollup" }))?;
    }
    if count_late {
        let late = late.fetch_one::<u64>().await.map_err(ch("counting late re-reports"))?;
        app.telemetry.late_reports.inc_by(late);
    }
    Ok(())
}

/// Runs the finalizer every `finalize_interval_seconds` with the wall clock as `now`.
pub async fn run_forever(app: std::sync::Arc<App>) {
    let period = std::time::Duration::from_secs(app.config.finalize_interval_seconds.max(1));
    // The first run one interval after start: the watermark was read at start, and a collector
    // must be around for an interval before it can lead anyway.
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if app.clickhouse_version.get().is_none() {
            continue; // the schema is not in place yet
        }
        match app.finalizer.run(&app, OffsetDateTime::now_utc()).await {
            Ok(Outcome::Finalized { hours, until, rebuilt_day }) => {
                tracing::info!(hours, until = %crate::query::params::format_time(until), rebuilt_day, "values final");
            }
            Ok(_) => {}
            Err(err) => {
                app.telemetry.clickhouse_errors.with_label_values(&["finalize"]).inc();
                tracing::warn!(%err, "finalizing failed; retrying at the next interval");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 1_800_000_000 / HOUR * HOUR; // an hour's start
    const GRACE: i64 = 1_800;

    fn at(t: i64) -> u32 {
        t as u32
    }

    #[test]
    fn a_row_stored_before_any_deadline_passed_needs_no_marker() {
        // Received and stored within a minute, half an hour into hour H.
        assert_eq!(late_hour("LCP", at(H + 1_800), at(H + 1_800), H + 1_860, GRACE), None);
        assert_eq!(late_hour("CLS", at(H + 1_800), at(H + 1_800), H + 1_860, GRACE), None);
    }

    #[test]
    fn a_row_stored_after_its_hours_deadline_marks_its_hour() {
        // Received in hour H, stored two hours later (H's deadline is H + 1 h + 30 min).
        assert_eq!(late_hour("LCP", at(H + 600), at(H + 600), H + 3 * HOUR, GRACE), Some(H));
        // Within the clock slack of the deadline: marked too (another collector's clock may be ahead).
        let deadline = H + HOUR + GRACE;
        assert_eq!(late_hour("LCP", at(H + 600), at(H + 600), deadline - CLOCK_SLACK_SECONDS, GRACE), Some(H));
        assert_eq!(late_hour("LCP", at(H + 600), at(H + 600), deadline - CLOCK_SLACK_SECONDS - 1, GRACE), None);
    }

    #[test]
    fn a_re_report_marks_the_earliest_hour_its_first_report_may_be_in() {
        // Received at H + 1 h + 5 min (its own hour H + 1 h): the id's first report may be in
        // hour H, whose deadline (H + 1 h 30) had not passed; stored at H + 1 h 40.
        let received = H + HOUR + 300;
        assert_eq!(late_hour("CLS", at(received), at(received), H + HOUR + 2_400, GRACE), Some(H));
        // The same LCP counts in its own hour only, whose deadline is still ahead.
        assert_eq!(late_hour("LCP", at(received), at(received), H + HOUR + 2_400, GRACE), None);
    }

    #[test]
    fn a_row_late_already_when_received_needs_no_marker() {
        // Its own time three hours before its receipt: its hour was due before it arrived.
        assert_eq!(late_hour("LCP", at(H), at(H + 3 * HOUR), H + 5 * HOUR, GRACE), None);
        assert_eq!(late_hour("INP", at(H), at(H + 3 * HOUR), H + 5 * HOUR, GRACE), None);
    }

    #[test]
    fn the_rust_order_is_the_sql_order() {
        // The page's report number first, then its clock, arrival last; old rows by time.
        assert!(report_order(2, 1_000, 50, 1) > report_order(1, 9_000, 99, 9));
        assert!(report_order(0, 2_000, 10, 1) > report_order(0, 1_000, 99, 9));
        assert!(report_order(0, 1_000, 10, 2) > report_order(0, 1_000, 10, 1));
        assert!(report_order(0, 0, 11, 1) > report_order(0, 0, 10, 9));
        assert_eq!(REPORT_ORDER, "(report_n, page_at, if(page_at = 0, toUInt32(event_time), 0), seq)");
    }
}
