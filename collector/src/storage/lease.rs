//! A lease in ClickHouse, for work that one collector of several must do alone (alert
//! evaluation, building the rollups).
//!
//! Every collector writes a heartbeat each interval. The leader is, among the live holders (a
//! heartbeat within three intervals) that have been around for at least one interval, the one
//! that started first (ties by id). A collector that joins never takes over from a live leader,
//! and two that start together both wait one interval, by which time each sees the other's
//! heartbeat and they agree. Clocks are the collectors' own: they must agree to well within an
//! interval (NTP does). A holder's start is the one its latest heartbeat states (merges keep only
//! the latest row per holder, and a holder that rejoins states a new start).

use std::sync::Mutex;

use clickhouse::{Client, Row};
use serde::Deserialize;

#[derive(Debug, Row, Deserialize)]
struct LeaderRow {
    holder: String,
    first: u64,
}

/// One collector's place in the lease kept in `table` (columns `holder, first_ms, at_ms,
/// backlog_ms`).
#[derive(Debug)]
pub struct Lease {
    table: &'static str,
    holder: String,
    /// This holder's first heartbeat, epoch ms.
    first_ms: Mutex<Option<u64>>,
}

impl Lease {
    pub fn new(table: &'static str) -> Lease {
        Lease { table, holder: crate::spool::new_id(), first_ms: Mutex::new(None) }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Starts over as a newcomer (this collector was away longer than the lease lasts).
    pub fn rejoin(&self) {
        *self.first_ms.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Writes a heartbeat at `now_ms` (with the oldest receive time of the rows this collector
    /// has not shipped yet, 0 for none) and answers whether this collector leads.
    pub async fn renew(&self, client: &Client, now_ms: u64, interval_ms: u64, backlog_ms: u64) -> Result<bool, clickhouse::error::Error> {
        let first = *self.first_ms.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(now_ms);
        client
            .query(&format!("INSERT INTO {} (holder, first_ms, at_ms, backlog_ms) VALUES (?, ?, ?, ?)", self.table))
            .bind(&self.holder)
            .bind(first)
            .bind(now_ms)
            .bind(backlog_ms)
            .execute()
            .await?;
        let leader = client
            .query(&format!(
                "SELECT holder, argMax(first_ms, at_ms) AS first FROM {} GROUP BY holder
                 HAVING max(at_ms) >= ? AND first <= ? ORDER BY first, holder LIMIT 1",
                self.table
            ))
            .bind(now_ms.saturating_sub(3 * interval_ms))
            .bind(now_ms.saturating_sub(interval_ms))
            .fetch_all::<LeaderRow>()
            .await?;
        if let Some(l) = leader.first() {
            tracing::debug!(table = self.table, leader = %l.holder, since_ms = l.first, me = %self.holder, "lease");
        }
        Ok(leader.first().is_some_and(|l| l.holder == self.holder))
    }

    /// Whether `holder` has written a heartbeat within the lease (three intervals) before `now_ms`.
    pub async fn is_live(&self, client: &Client, holder: &str, now_ms: u64, interval_ms: u64) -> Result<bool, clickhouse::error::Error> {
        let live = client
            .query(&format!("SELECT count() FROM {} WHERE holder = ? AND at_ms >= ?", self.table))
            .bind(holder)
            .bind(now_ms.saturating_sub(3 * interval_ms))
            .fetch_one::<u64>()
            .await?;
        Ok(live > 0)
    }

    /// The oldest unshipped receive time among the live holders (epoch ms), if any has a backlog.
    pub async fn oldest_backlog(&self, client: &Client, now_ms: u64, interval_ms: u64) -> Result<Option<u64>, clickhouse::error::Error> {
        let oldest = client
            .query(&format!(
                "SELECT min(b) FROM (SELECT holder, argMax(backlog_ms, at_ms) AS b FROM {} GROUP BY holder HAVING max(at_ms) >= ?) WHERE b > 0",
                self.table
            ))
            .bind(now_ms.saturating_sub(3 * interval_ms))
            .fetch_one::<u64>()
            .await?;
        Ok((oldest > 0).then_some(oldest))
    }
}
