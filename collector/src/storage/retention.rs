//! Retention: whole partitions past their age are dropped (cheap in ClickHouse, and works on
//! 18.16, which has no `TTL`). Raw tables are partitioned by day (`YYYYMMDD`), `metrics_final`
//! and the rollups by UTC day number, schema 1's rollups by day or month; a month is dropped once
//! all of it is past the cutoff.

use clickhouse::Client;

use super::histogram::{RUNNING_DAYS, RUNNING_HOUR_DAYS};
use serde::Deserialize;
use time::{Date, Duration, OffsetDateTime};

/// One table whose rows expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    pub table: String,
    /// The time column rows expire by (modern servers' `TTL`).
    pub column: &'static str,
    pub days: u32,
    granularity: Granularity,
}

/// How long each kind of row is kept, days: the settings `retention_days`,
/// `rollup_retention_days` and `alert_events_retention_days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub raw: u32,
    pub rollups: u32,
    pub alert_events: u32,
}

impl Keep {
    pub fn of(config: &crate::config::Config) -> Keep {
        Keep { raw: config.retention_days, rollups: config.rollup_retention_days, alert_events: config.alert_events_retention_days }
    }
}

/// Every table whose rows expire, how long each keeps them, and its partition granularity: the
/// partitions dropped here on 18.16, the `TTL`s of modern servers.
pub fn expiring(keep: Keep) -> Vec<Expiring> {
    let Keep { raw: raw_days, rollups: rollup_days, alert_events } = keep;
    let entry = |table: String, column, days, granularity| Expiring { table, column, days, granularity };
    let mut tables = vec![
        entry("metrics".into(), "event_time", raw_days, Granularity::Day),
        entry("api_calls".into(), "event_time", raw_days, Granularity::Day),
        entry("metrics_final".into(), "event_time", raw_days, Granularity::DayNumber),
        entry("metrics_recent".into(), "event_time", super::schema::RECENT_DAYS, Granularity::DayNumber),
        entry("metrics_1m".into(), "bucket", raw_days, Granularity::Day),
        entry("metrics_1h".into(), "bucket", rollup_days, Granularity::Month),
        entry("metrics_1d".into(), "bucket", rollup_days, Granularity::Month),
    ];
    for shape in super::schema::SHAPES {
        for grain in super::schema::GRAINS {
            let days = match (grain, shape.hour_days) {
                (super::schema::Grain::Hour, Some(days)) => days,
                _ => rollup_days,
            };
            tables.push(entry(shape.table(grain), "bucket", days, Granularity::DayNumber));
            if shape.running() {
                let days = if grain == super::schema::Grain::Day { RUNNING_DAYS } else { RUNNING_HOUR_DAYS };
                tables.push(entry(shape.running_table(grain), "at", days, Granularity::DayNumber));
            }
        }
    }
    tables.push(entry("hist_site_1h".into(), "bucket", rollup_days, Granularity::Month));
    // Owed notices are sent again for a day; a month keeps what was sent for a look back.
    tables.push(entry("alert_deliveries".into(), "at", 31, Granularity::Month));
    // Markers are handled within a finalizer interval or two of being written.
    tables.push(entry("late_rows".into(), "at", 31, Granularity::Month));
    // The latest event of an alert is its state: `alerts::rules::compile` keeps this longer than
    // any reminder period, so a firing alert always has a newer event than the cutoff.
    tables.push(entry("alert_events".into(), "at", alert_events, Granularity::Month));
    tables
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Granularity {
    /// `toYYYYMMDD`.
    Day,
    /// `toYYYYMM`.
    Month,
    /// Days since 1970-01-01 (UTC).
    DayNumber,
}

/// The partition id holding `date` (`YYYYMMDD` or `YYYYMM`).
fn partition_id(date: Date, granularity: Granularity) -> u32 {
    let ym = date.year() as u32 * 100 + u32::from(u8::from(date.month()));
    match granularity {
        Granularity::Day => ym * 100 + u32::from(date.day()),
        Granularity::Month => ym,
        Granularity::DayNumber => (date.to_julian_day() - time::macros::date!(1970 - 01 - 01).to_julian_day()) as u32,
    }
}

/// From when (epoch s, a UTC midnight) a table partitioned by day that keeps `days` still holds
/// every row at `now`, whatever hour retention last ran.
pub fn kept_from(now: i64, days: u32) -> i64 {
    (now.div_euclid(86_400) - i64::from(days) + 1) * 86_400
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
    keep: Keep,
) -> Result<Vec<(String, u32)>, clickhouse::error::Error> {
    #[derive(clickhouse::Row, Deserialize)]
    struct Part {
        partition: String,
    }
    let mut dropped: Vec<(String, u32)> = Vec::new();
    for Expiring { table, days: keep_days, granularity, .. } in expiring(keep) {
        let parts = client
            .query("SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active")
            .bind(database)
            .bind(&table)
            .fetch_all::<Part>()
            .await?;
        let ids: Vec<u32> = parts.iter().filter_map(|p| p.partition.trim_matches('\'').parse().ok()).collect();
        for id in expired(&ids, now, keep_days, granularity) {
            // `id` is a number we parsed, never text from a request.
            client.query(&format!("ALTER TABLE {table} DROP PARTITION {id}")).execute().await?;
            tracing::info!(%table, partition = id, "dropped partition past retention");
            dropped.push((table.clone(), id));
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
        // Day numbers: 2026-10-22 is day 20 748 since 1970-01-01.
        assert_eq!(partition_id(time::macros::date!(2026 - 10 - 22), Granularity::DayNumber), 20_748);
        assert_eq!(expired(&[20_747, 20_748, 20_749], now, 31, Granularity::DayNumber), vec![20_747, 20_748]);
    }
}
