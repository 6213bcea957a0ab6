//! ClickHouse storage: the row types, the schema and its migrations, the batch writer that drains
//! the ingest queue, and retention.
//!
//! Everything here speaks the portable SQL subset that both ClickHouse 18.16 (this machine's
//! Debian server) and modern servers accept: no `DateTime64`, `TTL`, `LowCardinality`, `Map` or
//! server-side parameters. Values from users are always bound with `.bind()`.

pub mod finalize;
pub mod lease;
pub mod retention;
pub mod rows;
pub mod schema;
pub mod writer;

use crate::config::Config;

/// A ClickHouse client for the configured server and database.
///
/// Validation is off: the crate's schema validation asks the server for metadata in a form
/// 18.16 cannot give; our row types mirror `schema.rs` and the integration tests check the pair.
pub fn client(config: &Config) -> clickhouse::Client {
    server_client(config).with_database(&config.clickhouse_database)
}

/// A client without a database, for creating it.
pub fn server_client(config: &Config) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(&config.clickhouse_url)
        .with_user(&config.clickhouse_user)
        .with_password(&config.clickhouse_password)
        .with_validation(false)
}

/// Cheap liveness check used by `/healthz`.
pub async fn ping(client: &clickhouse::Client) -> Result<(), clickhouse::error::Error> {
    client.query("SELECT 1").fetch_one::<u8>().await.map(|_| ())
}
