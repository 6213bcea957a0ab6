//! Retention: whole partitions past their age are dropped (cheap in ClickHouse, and works on
//! 18.16, which has no `TTL`). Raw tables and the minute rollup are partitioned by day, the hour
//! rollup by month; a month is dropped once all of it is past the cutoff.

use clickhouse::Client;
use serde::Deserialize;
use time::{Date, Duration, OffsetDateTime};

/// Tables, how long each keeps rows, and its partition granularity.
fn tables(raw_days: u32, rollup_days: u32) -> [(&'static str, u32, Granularity); 5] {
    [
        ("metrics", raw_days, Granularity::Day),
        ("api_calls", raw_days, Granularity::Day),
        ("metrics_1m", raw_days, Granularity::Day),
        ("metrics_1h", rollup_days, Granularity::Month),
        ("metrics_1d", rollup_days, Granularity::Month),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Granularity {
    Day,
    Month,
}

/// The partition id holding `date` (`YYYYMMDD` or `YYYYMM`).
fn partition_id(date: Date, granularity: Granularity) -> u32 {
    let ym = date.year() as u32 * 100 + u32::from(u8::from(date.month()));
    match granularity {
        Granularity::Day => ym * 100 + u32::from(date.day()),
        Granularity::Month => ym,
    }
}

/// Partitions of `table` entirely older than `keep_days` before `now`.
fn expired(partitions: &[u32], now: OffsetDateTime, keep_days: u32, granularity: Granularity) -> Vec<u32> {
    let cutoff = partition_id((now - Duration::days(i64::from(keep_days))).date(), granularity);
    partitions.iter().copied().filter(|&p| p < cutoff).collect()
}

/// Drops expired partitions; returns `(table, partition)` for each one dropped.
pub async fn drop_expired(
    client: &Client,
    database: &str,
    now: OffsetDateTime,
    raw_days: u32,
    rollup_days: u32,
) -> Result<Vec<(&'static str, u32)>, clickhouse::error::Error> {
    #[derive(clickhouse::Row, Deserialize)]
    struct Part {
        partition: String,
    }
    let mut dropped = Vec::new();
    for (table, keep_days, granularity) in tables(raw_days, rollup_days) {
        let parts = client
            .query("SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active")
            .bind(database)
            .bind(table)
            .fetch_all::<Part>()
            .await?;
        let ids: Vec<u32> = parts.iter().filter_map(|p| p.partition.trim_matches('\'').parse().ok()).collect();
        for id in expired(&ids, now, keep_days, granularity) {
            // `id` is a number we parsed, never text from a request.
            client.query(&format!("ALTER TABLE {table} DROP PARTITION {id}")).execute().await?;
            tracing::info!(table, partition = id, "dropped partition past retention");
            dropped.push((table, id));
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn cutoffs_by_day_and_month() {
        let now = datetime!(2026-11-23 12:00 UTC);
        let days = [20261022, 20261023, 20261024, 20261123];
        assert_eq!(expired(&days, now, 31, Granularity::Day), vec![20261022]);
        let months = [202509, 202510, 202511];
        // 400 days before 2026-11-23 is 2025-10-19: September 2025 is wholly older, October is not.
        assert_eq!(expired(&months, now, 400, Granularity::Month), vec![202509]);
    }
}
