//! ClickHouse storage: the row types, the schema and its migrations, the batch writer that drains
//! the ingest queue, and retention.
//!
//! Everything here speaks the portable SQL subset that both ClickHouse 18.16 (this machine's
//! Debian server) and modern servers accept: no `DateTime64`, `TTL`, `LowCardinality`, `Map` or
//! server-side parameters. Values from users are always bound with `.bind()`.
//!
//! On a cluster (`clickhouse_cluster`), every table lives on each shard in `<database>_local`;
//! `<database>` holds a `Distributed` table of the same name over each, so every query and insert
//! of the collector reads the whole cluster unchanged. The finalizer and retention work on each
//! shard's local tables ([`shard_clients`]).

pub mod dead_letter;
pub mod finalize;
pub mod histogram;
pub mod lease;
pub mod retention;
pub mod rows;
pub mod schema;
pub mod writer;

use crate::config::Config;

/// A ClickHouse client for the configured server and database. On a cluster that database holds
/// the `Distributed` tables, and inserts return once every shard has its rows.
pub fn client(config: &Config) -> clickhouse::Client {
    let client = server_client_at(config, &config.clickhouse_url).with_database(&config.clickhouse_database);
    if config.clickhouse_cluster.is_some() {
        // `IN (subquery)` inside a distributed query reads each shard's local table: the reports
        // of one page view are all on one shard.
        client.with_setting("insert_distributed_sync", "1").with_setting("distributed_product_mode", "local")
    } else {
        client
    }
}

/// A client without a database, for creating it.
pub fn server_client(config: &Config) -> clickhouse::Client {
    server_client_at(config, &config.clickhouse_url)
}

/// Validation is off: the crate's schema validation asks the server for metadata in a form
/// 18.16 cannot give; our row types mirror `schema.rs` and the integration tests check the pair.
fn server_client_at(config: &Config, url: &str) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(url)
        .with_user(&config.clickhouse_user)
        .with_password(&config.clickhouse_password)
        .with_validation(false)
}

/// The database of the shards' local tables on a cluster.
pub fn local_database(config: &Config) -> String {
    format!("{}_local", config.clickhouse_database)
}

/// Clients of the tables the finalizer and retention work on, one per shard: on a cluster each
/// shard's local tables; on one server, that server's tables.
pub fn shard_clients(config: &Config) -> Vec<clickhouse::Client> {
    if config.clickhouse_cluster.is_none() {
        return vec![client(config)];
    }
    config.clickhouse_shards.iter().map(|url| server_client_at(config, url).with_database(local_database(config))).collect()
}

/// On a cluster, a client of each shard's server (no database), in `clickhouse_shards` order, for
/// the health probe; none on one server.
pub fn shard_servers(config: &Config) -> Vec<clickhouse::Client> {
    match &config.clickhouse_cluster {
        None => Vec::new(),
        Some(_) => config.clickhouse_shards.iter().map(|url| server_client_at(config, url)).collect(),
    }
}

/// Every server to migrate, with the database of its tables: on a cluster, each shard's local
/// database; on one server, the configured one.
pub fn schema_targets(config: &Config) -> Vec<(String, String)> {
    match &config.clickhouse_cluster {
        None => vec![(config.clickhouse_url.clone(), config.clickhouse_database.clone())],
        Some(_) => config.clickhouse_shards.iter().map(|url| (url.clone(), local_database(config))).collect(),
    }
}

pub(crate) fn client_at(config: &Config, url: &str, database: &str) -> clickhouse::Client {
    server_client_at(config, url).with_database(database)
}

pub(crate) fn bare_client_at(config: &Config, url: &str) -> clickhouse::Client {
    server_client_at(config, url)
}

/// Cheap liveness check used by `/healthz`.
pub async fn ping(client: &clickhouse::Client) -> Result<(), clickhouse::error::Error> {
    client.query("SELECT 1").fetch_one::<u8>().await.map(|_| ())
}
