//! The batch writer: drains the ingest queue into ClickHouse, one insert per table per batch,
//! when `batch_rows` rows are waiting or `flush_interval` has passed, whichever comes first.
//!
//! Failed inserts are retried with exponential backoff (100 ms doubling to 10 s) for as long as
//! the collector runs: while the writer retries it stops draining, the queue fills and ingest
//! answers 503, which tells agents to keep their metrics. Rows are only given up at shutdown, once
//! the grace period is over; they are then counted in `pulse_rows_dropped_total` and logged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickhouse::{Client, Row, RowWrite};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::rows::Batch;
use crate::telemetry::Telemetry;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Creates the bounded queue between the ingest route and the writer (capacity in beacons).
pub fn queue(capacity: usize) -> (mpsc::Sender<Batch>, mpsc::Receiver<Batch>) {
    mpsc::channel(capacity)
}

/// What `/healthz` needs to know about the writer.
#[derive(Debug, Default)]
pub struct WriterStatus {
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl WriterStatus {
    /// Whether the last insert attempt failed (the writer is retrying).
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
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

/// Tells a running writer to stop: it closes the queue, stores what is in it, and gives up on
/// rows it cannot store once `grace` has passed.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Sender<Option<Instant>>);

impl Shutdown {
    pub fn begin(&self, grace: Duration) {
        let _ = self.0.send(Some(Instant::now() + grace));
    }
}

#[derive(Debug)]
pub struct Writer {
    pub client: Client,
    pub batch_rows: usize,
    pub flush_interval: Duration,
    pub telemetry: Telemetry,
    pub status: Arc<WriterStatus>,
}

impl Writer {
    /// Starts the writer on its own task. Await the handle after [`Shutdown::begin`].
    pub fn spawn(self, rx: mpsc::Receiver<Batch>) -> (Shutdown, tokio::task::JoinHandle<()>) {
        let (tx, deadline) = watch::channel(None);
        let handle = tokio::spawn(self.run(rx, deadline));
        (Shutdown(tx), handle)
    }

    async fn run(self, mut rx: mpsc::Receiver<Batch>, mut deadline: watch::Receiver<Option<Instant>>) {
        let mut pending = Batch::default();
        let mut ticker = tokio::time::interval(self.flush_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = rx.recv() => match received {
                    Some(batch) => {
                        self.telemetry.queue_depth.set(rx.len() as i64);
                        append(&mut pending, batch);
                        if pending.len() >= self.batch_rows {
                            self.flush(&mut pending, &deadline).await;
                        }
                    }
                    None => break,
                },
                _ = ticker.tick() => {
                    if !pending.is_empty() {
                        self.flush(&mut pending, &deadline).await;
                    }
                }
                _ = deadline.changed() => break,
            }
        }
        // Shutting down: refuse new beacons, then store everything already accepted.
        rx.close();
        while let Some(batch) = rx.recv().await {
            append(&mut pending, batch);
            if pending.len() >= self.batch_rows {
                self.flush(&mut pending, &deadline).await;
            }
        }
        self.telemetry.queue_depth.set(0);
        self.flush(&mut pending, &deadline).await;
        tracing::info!("writer stopped; queue flushed");
    }

    async fn flush(&self, pending: &mut Batch, deadline: &watch::Receiver<Option<Instant>>) {
        self.store("metrics", &mut pending.metrics, deadline).await;
        self.store("api_calls", &mut pending.api_calls, deadline).await;
    }

    /// Inserts `rows`, retrying until it succeeds or the shutdown deadline passes; empties `rows`.
    async fn store<T>(&self, table: &'static str, rows: &mut Vec<T>, deadline: &watch::Receiver<Option<Instant>>)
    where
        T: Row + RowWrite + Serialize + Send + Sync + 'static,
        for<'a> T: Row<Value<'a> = T>,
    {
        if rows.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut deadline = deadline.clone();
        loop {
            match insert(&self.client, table, rows).await {
                Ok(()) => {
                    self.status.record(None);
                    self.telemetry.batch_rows.with_label_values(&[table]).observe(rows.len() as f64);
                    self.telemetry.insert_seconds.with_label_values(&[table]).observe(started.elapsed().as_secs_f64());
                    self.telemetry.rows_written.with_label_values(&[table]).inc_by(rows.len() as u64);
                    rows.clear();
                    return;
                }
                Err(err) => {
                    self.telemetry.clickhouse_errors.with_label_values(&["insert"]).inc();
                    self.status.record(Some(err.to_string()));
                    let until = *deadline.borrow();
                    if until.is_some_and(|d| Instant::now() + backoff > d) {
                        tracing::error!(
                            table, rows = rows.len(), %err,
                            "shutdown grace period over and ClickHouse still refuses the insert: dropping these rows"
                        );
                        self.telemetry
                            .rows_dropped
                            .with_label_values(&[table, "shutdown_while_clickhouse_failing"])
                            .inc_by(rows.len() as u64);
                        rows.clear();
                        return;
                    }
                    tracing::warn!(table, rows = rows.len(), %err, retry_in_ms = backoff.as_millis() as u64, "ClickHouse insert failed; retrying");
                    // Wake early when shutdown starts, so the deadline is honoured.
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = deadline.changed() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

fn append(pending: &mut Batch, mut batch: Batch) {
    pending.metrics.append(&mut batch.metrics);
    pending.api_calls.append(&mut batch.api_calls);
}

async fn insert<T>(client: &Client, table: &str, rows: &[T]) -> Result<(), clickhouse::error::Error>
where
    T: Row + RowWrite + Serialize + Send + Sync + 'static,
    for<'a> T: Row<Value<'a> = T>,
{
    let mut insert = client.insert::<T>(table).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}
