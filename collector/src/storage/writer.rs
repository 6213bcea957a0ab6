//! The shipper: moves rows from the disk spool ([`crate::spool`]) into ClickHouse, one insert per
//! table per batch, when `batch_rows` rows are waiting or `flush_interval` has passed, oldest
//! first. Records leave the spool only after ClickHouse confirmed their inserts.
//!
//! Failed inserts (and inserts without an answer within 60 s) are retried with exponential
//! backoff (100 ms doubling to 10 s) for as long as ClickHouse is out; meanwhile ingest keeps
//! accepting into the spool, which grows until `spool_max_bytes`.
//!
//! An insert ClickHouse refuses for good — it answered, and the answer is about the data
//! ([`super::dead_letter::classify`]) — is tried `dead_letter_after_attempts` times, then bisected
//! to find the refused rows: each half is inserted once, a refused half is halved again, down to
//! single rows (an error about the table's shape refuses every row, so that group is not split).
//! The rows found refused go to the dead letters ([`super::dead_letter`]); the rest are stored.
//! Then the batch leaves the spool and the rows behind it ship. Bisecting costs about
//! `2 × log2(rows)` inserts per bad row, paid only when a batch is refused. At shutdown the shipper keeps
//! shipping for the grace period at most; what it could not ship stays in the spool and is
//! shipped at the next start — nothing accepted is dropped.
//!
//! On servers that support it (ClickHouse ≥ 22), each batch carries an
//! `insert_deduplication_token` made of the spool's id and the batch's key range, and the range is
//! recorded in the spool before the insert: after a crash between the insert and the removal, the
//! same batch is sent again with the same token and the server drops the copy. Older servers
//! (18.16) store such a batch twice (at least once delivery; see the README).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickhouse::{Client, Row, RowWrite};
use serde::Serialize;
use tokio::sync::watch;

use super::dead_letter::{self, DeadRow, Refusal};
use super::finalize::late_hour;
use super::rows::Batch;
use crate::spool::{Record, Spool};
use crate::telemetry::Telemetry;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest wait for one insert (sending the rows and ClickHouse's answer): a server that takes
/// the connection and never answers gets a retry, not a shipper stuck for ever.
const INSERT_TIMEOUT: Duration = Duration::from_secs(60);

/// What `/healthz` needs to know about the shipper.
#[derive(Debug, Default)]
pub struct WriterStatus {
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Rows kept as dead letters since start, and the last refusal that sent rows there.
    dead_letter_rows: std::sync::atomic::AtomicU64,
    dead_letter_error: Mutex<Option<String>>,
}

impl WriterStatus {
    /// Whether the last insert attempt failed (the shipper is retrying).
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    /// Rows kept as dead letters since start.
    pub fn dead_letter_rows(&self) -> u64 {
        self.dead_letter_rows.load(Ordering::Relaxed)
    }

    /// The error of the last rows kept as dead letters.
    pub fn dead_letter_error(&self) -> Option<String> {
        self.dead_letter_error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    fn record_dead(&self, rows: usize, error: &str) {
        self.dead_letter_rows.fetch_add(rows as u64, Ordering::Relaxed);
        if let Ok(mut last) = self.dead_letter_error.lock() {
            *last = Some(error.to_owned());
        }
    }

    /// Marks the shipper as failing with `error` (also before it runs: the schema is not ready).
    pub fn record_error(&self, error: String) {
        self.record(Some(error));
    }

    fn record(&self, error: Option<String>) {
        self.failing.store(error.is_some(), Ordering::Relaxed);
        if let Some(error) = error {
            if let Ok(mut last) = self.last_error.lock() {
                *last = Some(error);
            }
        }
    }
}

/// Tells a running shipper to stop: it ships what the spool holds, trying until `grace` has
/// passed, and leaves the rest in the spool.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Sender<Option<Instant>>);

impl Shutdown {
    pub fn begin(&self, grace: Duration) {
        let _ = self.0.send(Some(Instant::now() + grace));
    }
}

/// The shipping ran past the shutdown deadline; the rest stays in the spool.
struct GaveUp;

#[derive(Debug)]
pub struct Writer {
    pub client: Client,
    pub spool: Spool,
    pub batch_rows: usize,
    pub flush_interval: Duration,
    pub telemetry: Telemetry,
    pub status: Arc<WriterStatus>,
    /// Send `insert_deduplication_token`s (the server supports them).
    pub deduplicate: bool,
    /// Refusals of a batch's data before its refused rows become dead letters
    /// (`dead_letter_after_attempts`).
    pub dead_letter_after: u32,
    /// Where dead letters go when ClickHouse refuses them too (`<spool_dir>/dead-letter`).
    pub dead_letter_dir: std::path::PathBuf,
    /// `final_grace_minutes`, in seconds: metric rows stored after the end of an hour they may
    /// count in plus this may have missed its finalizing, and get a `late_rows` marker
    /// ([`super::finalize::late_hour`]).
    pub final_grace: i64,
}

/// Where a row comes from: its spool record's key and receive time (ms).
type Origin = (u64, u64);

/// ClickHouse's answer to a refused insert, and what it means.
type Refused = (String, Refusal);

/// How one insert ended once ClickHouse answered.
enum Answer {
    Stored,
    Refused(String, Refusal),
}

/// The shutdown signal of a shipper: [`Shutdown::begin`] on one end, [`Writer::run`] watching the other.
pub fn shutdown_channel() -> (Shutdown, watch::Receiver<Option<Instant>>) {
    let (tx, rx) = watch::channel(None);
    (Shutdown(tx), rx)
}

impl Writer {
    /// Ships until [`Shutdown::begin`] (then ships what it can within the grace period).
    pub async fn run(self, mut deadline: watch::Receiver<Option<Instant>>) {
        // A batch the previous run was inserting when it stopped goes first, exactly as it was,
        // so its deduplication token matches: a read error is retried, not skipped (the records
        // regrouped would carry another token, and a modern server would store them twice).
        let spool = self.spool.clone();
        let inflight = retry_read(&self.status, "the in-flight mark", &deadline, || {
            let spool = spool.clone();
            async move { blocking(move || spool.inflight().map_err(|e| e.to_string())).await }
        })
        .await;
        match inflight {
            Ok(Some((_, last))) => {
                let records = retry_read(&self.status, "the in-flight batch", &deadline, || self.read(Some(last))).await;
                match records {
                    Ok(records) if !records.is_empty() => {
                        if self.ship(records, &deadline).await.is_err() {
                            return self.stopped();
                        }
                    }
                    Ok(_) => {}
                    Err(GaveUp) => return self.stopped(),
                }
            }
            Ok(None) => {}
            Err(GaveUp) => return self.stopped(),
        }
        let mut ticker = tokio::time::interval(self.flush_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut due = false;
            let mut dropped = false;
            tokio::select! {
                _ = self.spool.appended().notified() => {}
                _ = ticker.tick() => due = true,
                changed = deadline.changed() => dropped = changed.is_err(),
            }
            // A dropped `Shutdown` handle means stop too (no one can ask any more).
            let stopping = dropped || deadline.borrow().is_some();
            let waiting = self.spool.stats_fast().rows;
            if waiting == 0 {
                if stopping {
                    break;
                }
                continue;
            }
            if waiting as usize >= self.batch_rows || due || stopping {
                if self.ship_all(&deadline).await.is_err() || stopping {
                    break;
                }
                ticker.reset();
            }
        }
        self.stopped();
    }

    fn stopped(&self) {
        let left = self.spool.stats_fast();
        if left.rows > 0 {
            tracing::warn!(
                rows = left.rows,
                records = left.records,
                "shipper stopped; these rows stay in the spool and are shipped at the next start"
            );
        } else {
            tracing::info!("shipper stopped; the spool is empty");
        }
    }

    /// Ships every record the spool holds, batch after batch (a backlog drains back to back).
    async fn ship_all(&self, deadline: &watch::Receiver<Option<Instant>>) -> Result<(), GaveUp> {
        loop {
            // A long healthy drain ends at the shutdown deadline too; the rest stays in the spool.
            if deadline.borrow().is_some_and(|d| Instant::now() >= d) {
                return Err(GaveUp);
            }
            let records = retry_read(&self.status, "the next batch", deadline, || self.read(None)).await?;
            if records.is_empty() {
                return Ok(());
            }
            self.ship(records, deadline).await?;
        }
    }

    /// The oldest records, up to `batch_rows` rows (or exactly through `until`).
    async fn read(&self, until: Option<u64>) -> Result<Vec<Record>, String> {
        let spool = self.spool.clone();
        let max_rows = self.batch_rows as u64;
        blocking(move || spool.read(None, max_rows, until).map_err(|e| e.to_string())).await
    }

    async fn ship(&self, records: Vec<Record>, deadline: &watch::Receiver<Option<Instant>>) -> Result<(), GaveUp> {
        let (Some(first), Some(last)) = (records.first().map(|r| r.key), records.last().map(|r| r.key)) else {
            return Ok(());
        };
        let mut batch = Batch::default();
        let (mut metric_origins, mut api_origins) = (Vec::new(), Vec::new());
        let mut foreign = Vec::new();
        // Part of the deduplication token: a batch's key range alone could repeat if a spool ever
        // fell back to an older commit; its records' checksums make the token its content's.
        let mut crcs: u32 = 0;
        for record in records {
            crcs = crcs.rotate_left(5) ^ record.crc;
            match record.batch {
                Ok(mut rows) => {
                    let origin = (record.key, record.received_ms);
                    metric_origins.resize(metric_origins.len() + rows.metrics.len(), origin);
                    api_origins.resize(api_origins.len() + rows.api_calls.len(), origin);
                    batch.metrics.append(&mut rows.metrics);
                    batch.api_calls.append(&mut rows.api_calls);
                }
                Err(why) if record.foreign => {
                    tracing::error!(key = record.key, rows = record.rows, %why, "a spool record this collector cannot read is kept in the spool's quarantine table for a collector that can");
                    self.telemetry.spool_records_quarantined.inc();
                    foreign.push(record.key);
                }
                Err(why) => {
                    tracing::error!(key = record.key, rows = record.rows, bytes = record.bytes, %why, "skipping a damaged spool record");
                    self.telemetry.spool_records_skipped.inc();
                    self.telemetry.rows_dropped.with_label_values(&["spool", "damaged_record"]).inc_by(record.rows);
                }
            }
        }
        if self.deduplicate {
            if let Err(err) = self.spool.mark_inflight(Some((first, last))).await {
                tracing::warn!(%err, "cannot mark the batch in flight; a crash now could store it twice");
            }
        }
        let token = |table: &str| format!("pulse-{}-{table}-{first}-{last}-{crcs:08x}", self.spool.id());
        self.store("metrics", &batch.metrics, &metric_origins, token("metrics"), deadline).await?;
        self.store("api_calls", &batch.api_calls, &api_origins, token("api_calls"), deadline).await?;
        // Before the records leave the spool: a crash before the marker ships them again, and
        // marks them then.
        let now = crate::ingest::now_ms() / 1000;
        let late = batch.metrics.iter().filter_map(|m| late_hour(&m.name, m.event_time, m.received_at, now, self.final_grace)).min();
        if let Some(hour) = late {
            self.mark_late(&format!("{}-{first}-{last}", self.spool.id()), hour, deadline).await?;
        }
        let mut backoff = FIRST_BACKOFF;
        while let Err(err) = self.spool.remove_through(last, foreign.clone()).await {
            // The rows are in ClickHouse; if they stay in the spool they are shipped again.
            tracing::error!(%err, "cannot remove shipped records from the spool; retrying");
            if deadline.borrow().is_some_and(|d| Instant::now() + backoff > d) {
                return Err(GaveUp);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Ok(())
    }

    /// Records that rows counted from `hour` (epoch s) on were stored late, as `marker` (the same
    /// for a batch shipped again). Retried like an insert, `dead_letter_after_attempts` times at
    /// most: a table this user may not write must not stop shipping (the failure is logged and
    /// counted, and those hours stay final without the rows). At shutdown the records stay in the
    /// spool, shipped and marked again at the next start.
    async fn mark_late(&self, marker: &str, hour: i64, deadline: &watch::Receiver<Option<Instant>>) -> Result<(), GaveUp> {
        tracing::info!(marker, hour, "rows stored after an hour they count in may have been made final; marking it to be made final again");
        let mut backoff = FIRST_BACKOFF;
        for _ in 0..self.dead_letter_after.max(1) {
            let insert = self
                .client
                .query("INSERT INTO late_rows (at, at_ms, marker, phase, hour) VALUES (now(), ?, ?, 'late', toDateTime(?))")
                .bind(crate::ingest::now_ms().max(0) as u64)
                .bind(marker)
                .bind(hour)
                .execute();
            match tokio::time::timeout(INSERT_TIMEOUT, insert).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(err)) => {
                    self.telemetry.clickhouse_errors.with_label_values(&["insert"]).inc();
                    tracing::warn!(%err, "cannot record late rows; retrying");
                }
                Err(_) => tracing::warn!("recording late rows got no answer; retrying"),
            }
            pause(deadline, &mut backoff).await?;
        }
        self.telemetry.late_markers_lost.inc();
        tracing::error!(marker, hour, "could not record late rows: their hours stay final without them");
        Ok(())
    }

    /// Inserts `rows`, retrying until it succeeds or the shutdown deadline passes; rows
    /// ClickHouse refuses for good become dead letters (see the module doc).
    async fn store<T>(
        &self,
        table: &'static str,
        rows: &[T],
        origins: &[Origin],
        token: String,
        deadline: &watch::Receiver<Option<Instant>>,
    ) -> Result<(), GaveUp>
    where
        T: Row + RowWrite + Serialize + Send + Sync + 'static,
        for<'a> T: Row<Value<'a> = T>,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut refusals = 0;
        let (error, refusal) = loop {
            match self.insert_answered(table, rows, &token, deadline, &mut backoff).await? {
                Answer::Stored => {
                    self.telemetry.insert_seconds.with_label_values(&[table]).observe(started.elapsed().as_secs_f64());
                    return Ok(());
                }
                Answer::Refused(error, refusal) => {
                    refusals += 1;
                    if refusals >= self.dead_letter_after {
                        break (error, refusal);
                    }
                    tracing::warn!(table, rows = rows.len(), %error, refusals, "ClickHouse refuses the batch's data; retrying");
                    pause(deadline, &mut backoff).await?;
                }
            }
        };
        tracing::error!(table, rows = rows.len(), %error, refusals, "ClickHouse refuses the batch for good; looking for the refused rows");
        // Groups still to try, and groups known refused (with the answer); the first half of a
        // group is done before the second, so the rows keep their order.
        let mut todo: Vec<(std::ops::Range<usize>, Option<Refused>)> = vec![(0..rows.len(), Some((error, refusal)))];
        while let Some((range, refused)) = todo.pop() {
            match refused {
                None => {
                    let token = format!("{token}-{}-{}", range.start, range.end);
                    if let Answer::Refused(error, refusal) =
                        self.insert_answered(table, &rows[range.clone()], &token, deadline, &mut backoff).await?
                    {
                        todo.push((range, Some((error, refusal))));
                    }
                }
                Some((_, Refusal::Rows)) if range.len() > 1 => {
                    let middle = range.start + range.len() / 2;
                    todo.push((middle..range.end, None));
                    todo.push((range.start..middle, None));
                }
                Some((error, _)) => {
                    self.dead_letter(table, &rows[range.clone()], &origins[range.clone()], &error, &token, deadline).await?;
                }
            }
        }
        self.telemetry.insert_seconds.with_label_values(&[table]).observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// One insert of `rows`, retried while ClickHouse is out, until ClickHouse answers.
    async fn insert_answered<T>(
        &self,
        table: &'static str,
        rows: &[T],
        token: &str,
        deadline: &watch::Receiver<Option<Instant>>,
        backoff: &mut Duration,
    ) -> Result<Answer, GaveUp>
    where
        T: Row + RowWrite + Serialize + Send + Sync + 'static,
        for<'a> T: Row<Value<'a> = T>,
    {
        let client = self.client_with_token(token);
        loop {
            // An insert under way when the grace period ends is abandoned: its rows stay in the
            // spool (shipped again at the next start, at least once as always).
            let attempt = tokio::select! {
                result = insert(&client, table, rows) => result,
                () = passed(deadline.clone()) => {
                    tracing::warn!(table, rows = rows.len(), "shutdown grace period over during an insert");
                    return Err(GaveUp);
                }
            };
            match attempt {
                Ok(()) => {
                    self.status.record(None);
                    self.telemetry.batch_rows.with_label_values(&[table]).observe(rows.len() as f64);
                    self.telemetry.rows_written.with_label_values(&[table]).inc_by(rows.len() as u64);
                    return Ok(Answer::Stored);
                }
                Err(err) => {
                    self.telemetry.clickhouse_errors.with_label_values(&["insert"]).inc();
                    self.status.record(Some(err.to_string()));
                    let refusal = dead_letter::classify(&err);
                    if refusal.is_for_good() {
                        return Ok(Answer::Refused(err.to_string(), refusal));
                    }
                    tracing::warn!(table, rows = rows.len(), %err, retry_in_ms = backoff.as_millis() as u64, "ClickHouse insert failed; retrying");
                    pause(deadline, backoff).await.inspect_err(|_| {
                        tracing::warn!(table, rows = rows.len(), %err, "shutdown grace period over and ClickHouse still refuses the insert");
                    })?;
                }
            }
        }
    }

    /// Keeps `rows` (refused with `error`) in the `dead_letter` table, or when ClickHouse refuses
    /// that too, in a file of the dead-letter directory. An outage is waited out like any insert.
    async fn dead_letter<T: Serialize>(
        &self,
        table: &'static str,
        rows: &[T],
        origins: &[Origin],
        error: &str,
        token: &str,
        deadline: &watch::Receiver<Option<Instant>>,
    ) -> Result<(), GaveUp> {
        let now = u32::try_from(crate::ingest::now_ms() / 1000).unwrap_or(u32::MAX);
        let dead: Vec<DeadRow> = rows.iter().zip(origins).map(|(row, origin)| DeadRow::new(table, row, *origin, error, now)).collect();
        let (first_key, first_row) = origins.first().copied().unwrap_or((0, 0));
        tracing::error!(table, rows = dead.len(), spool_key = first_key, error, "rows ClickHouse refused for good go to the dead letters");
        // The row range, not only the record: two rows of one record refused one by one are two
        // inserts, and one must not be taken for a retry of the other.
        let client = self.client_with_token(&format!("{token}-dead-{first_key}-{first_row}-{}", dead.len()));
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = tokio::select! {
                result = insert(&client, dead_letter::TABLE, &dead) => result,
                () = passed(deadline.clone()) => return Err(GaveUp),
            };
            let to = match attempt {
                Ok(()) => "clickhouse",
                Err(err) if dead_letter::classify(&err) == Refusal::Outage => {
                    self.telemetry.clickhouse_errors.with_label_values(&["insert"]).inc();
                    self.status.record(Some(err.to_string()));
                    tracing::warn!(%err, "cannot store dead letters in ClickHouse; retrying");
                    pause(deadline, &mut backoff).await?;
                    continue;
                }
                Err(err) => {
                    // ClickHouse answered and refuses the dead letters too: to the file.
                    self.telemetry.clickhouse_errors.with_label_values(&["insert"]).inc();
                    tracing::error!(%err, dir = %self.dead_letter_dir.display(), "ClickHouse refuses the dead letters too; writing them to a file");
                    let (dir, lines) = (self.dead_letter_dir.clone(), dead.clone());
                    match blocking(move || dead_letter::append_to_file(&dir, &lines).map_err(|e| e.to_string())).await {
                        Ok(_) => "file",
                        Err(why) => {
                            // Nowhere to keep them: they stay in the spool, and this is retried.
                            self.status.record(Some(format!("cannot write dead letters to {}: {why}", self.dead_letter_dir.display())));
                            tracing::error!(%why, "cannot write dead letters to a file; they stay in the spool; retrying");
                            pause(deadline, &mut backoff).await?;
                            continue;
                        }
                    }
                }
            };
            self.status.record_dead(dead.len(), error);
            self.telemetry.dead_letter_rows.with_label_values(&[table, to]).inc_by(dead.len() as u64);
            return Ok(());
        }
    }

    fn client_with_token(&self, token: &str) -> Client {
        if self.deduplicate {
            self.client.clone().with_setting("insert_deduplication_token", token.to_owned())
        } else {
            self.client.clone()
        }
    }
}

/// Sleeps `backoff` (then doubles it, up to the most), or gives up when the shutdown deadline
/// would pass first. Wakes early when shutdown begins, so the deadline is honoured.
async fn pause(deadline: &watch::Receiver<Option<Instant>>, backoff: &mut Duration) -> Result<(), GaveUp> {
    let mut deadline = deadline.clone();
    let until = *deadline.borrow_and_update();
    if until.is_some_and(|d| Instant::now() + *backoff > d) {
        return Err(GaveUp);
    }
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        _ = deadline.changed() => {}
    }
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    Ok(())
}

/// Runs a blocking spool call off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| e.to_string())?
}

/// Reads from the spool with `attempt`, retrying with backoff until it succeeds or the shutdown
/// deadline passes. Meanwhile the error is the writer's status (`/healthz` says degraded and
/// shows it), so a spool that cannot be read is not silent.
async fn retry_read<T, F, Fut>(
    status: &WriterStatus,
    what: &str,
    deadline: &watch::Receiver<Option<Instant>>,
    mut attempt: F,
) -> Result<T, GaveUp>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut deadline = deadline.clone();
    let mut failed = false;
    loop {
        match attempt().await {
            Ok(value) => {
                if failed {
                    status.record(None);
                }
                return Ok(value);
            }
            Err(err) => {
                failed = true;
                status.record(Some(format!("cannot read {what} from the spool: {err}")));
                if deadline.borrow().is_some_and(|d| Instant::now() + backoff > d) {
                    tracing::error!(%err, "cannot read {what} from the spool; shutdown grace period over");
                    return Err(GaveUp);
                }
                tracing::error!(%err, retry_in_ms = backoff.as_millis() as u64, "cannot read {what} from the spool; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = deadline.changed() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Resolves once the shutdown deadline has passed (never while no shutdown has begun).
async fn passed(mut deadline: watch::Receiver<Option<Instant>>) {
    loop {
        let until = *deadline.borrow_and_update();
        match until {
            Some(d) => return tokio::time::sleep_until(d.into()).await,
            None => {
                if deadline.changed().await.is_err() {
                    // No one can begin a shutdown any more.
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// Inserts `rows` into `table` in one request, bounded by [`INSERT_TIMEOUT`].
pub(crate) async fn insert<T>(client: &Client, table: &str, rows: &[T]) -> Result<(), clickhouse::error::Error>
where
    T: Row + RowWrite + Serialize + Send + Sync + 'static,
    for<'a> T: Row<Value<'a> = T>,
{
    let attempt = async {
        let mut insert = client.insert::<T>(table).await?.with_timeouts(Some(INSERT_TIMEOUT), Some(INSERT_TIMEOUT));
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await
    };
    // Also bounds what `with_timeouts` does not cover (opening the request).
    tokio::time::timeout(INSERT_TIMEOUT, attempt).await.unwrap_or(Err(clickhouse::error::Error::TimedOut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spool_read_errors_are_retried_and_shown_until_a_read_succeeds() {
        let status = WriterStatus::default();
        let (shutdown, deadline) = shutdown_channel();
        let mut failures = 2;
        let mut seen_failing = Vec::new();
        let read = retry_read(&status, "the next batch", &deadline, || {
            seen_failing.push(status.is_failing());
            let result = if failures > 0 { Err("disk says no".to_owned()) } else { Ok(7) };
            failures -= 1;
            async move { result }
        })
        .await;
        assert_eq!(read.ok(), Some(7));
        assert_eq!(seen_failing, vec![false, true, true], "the failure is the writer's status while it lasts");
        assert!(!status.is_failing(), "cleared by the read that succeeded");
        assert_eq!(status.last_error().as_deref(), Some("cannot read the next batch from the spool: disk says no"));

        // At shutdown the retries stop at the grace deadline.
        shutdown.begin(Duration::from_millis(50));
        let started = Instant::now();
        let read = retry_read(&status, "the in-flight batch", &deadline, || async { Err::<(), _>("still no".to_owned()) }).await;
        assert!(read.is_err() && started.elapsed() < Duration::from_secs(5));
        assert!(status.is_failing());
    }

    /// ClickHouse down (connection refused) is an outage however long it lasts: the rows stay in
    /// the spool, none become dead letters, even with `dead_letter_after` at 1.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_never_makes_dead_letters() {
        let url = format!("http://127.0.0.1:{}", pulse_testkit::free_port());
        let dir = crate::spool::tests::temp_dir("writer-outage");
        let spool = Spool::open(&dir, 1 << 30, 100).expect("opens");
        spool.append(&crate::spool::tests::batch(&[1.0, 2.0]), 1_000).await.expect("appends");
        let writer = test_writer(&url, &spool, &dir);
        let (status, telemetry) = (writer.status.clone(), writer.telemetry.clone());
        let (shutdown, deadline) = shutdown_channel();
        let running = tokio::spawn(writer.run(deadline));
        tokio::time::sleep(Duration::from_secs(2)).await;
        shutdown.begin(Duration::from_millis(200));
        tokio::time::timeout(Duration::from_secs(10), running).await.expect("stops").expect("writer task");
        assert!(telemetry.clickhouse_errors.with_label_values(&["insert"]).get() >= 3, "it kept trying");
        assert!(status.is_failing());
        assert_eq!(status.dead_letter_rows(), 0);
        assert!(!dir.join("dead-letter").exists());
        assert_eq!(spool.stats_fast().rows, 2, "the rows stay in the spool");
        spool.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A shipper of `spool` to ClickHouse at `url`, one row a batch, refusals dead letters at once.
    fn test_writer(url: &str, spool: &Spool, dir: &std::path::Path) -> Writer {
        Writer {
            client: Client::default().with_url(url).with_validation(false),
            spool: spool.clone(),
            batch_rows: 1,
            flush_interval: Duration::from_millis(10),
            telemetry: Telemetry::new(),
            status: Arc::new(WriterStatus::default()),
            deduplicate: false,
            dead_letter_after: 1,
            dead_letter_dir: dir.join("dead-letter"),
            final_grace: 1_800,
        }
    }

    /// A ClickHouse that takes the connection and never answers: the insert hangs, and shutdown
    /// still ends at the grace deadline, the rows kept in the spool.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_insert_does_not_outlast_the_grace_period() {
        let url = pulse_testkit::silent_server();
        let dir = crate::spool::tests::temp_dir("writer-hanging");
        let spool = Spool::open(&dir, 1 << 30, 100).expect("opens");
        spool.append(&crate::spool::tests::batch(&[1.0, 2.0]), 1_000).await.expect("appends");
        let writer = test_writer(&url, &spool, &dir);
        let (shutdown, deadline) = shutdown_channel();
        let running = tokio::spawn(writer.run(deadline));
        // Let the shipper get stuck in its insert, then stop with one second of grace.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stopping = Instant::now();
        shutdown.begin(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(10), running).await.expect("stops within the grace period").expect("writer task");
        assert!(stopping.elapsed() < Duration::from_secs(3), "stopped after {:?}", stopping.elapsed());
        assert_eq!(spool.stats_fast().rows, 2, "the rows stay in the spool");
        spool.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
