//! `pulse-collector`: reads configuration (flags, `PULSE_*`, optional TOML), sets up logging and
//! runs the collector until SIGINT/SIGTERM. See `--help`.

use pulse_collector::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env_and_args()?;
    let filter = EnvFilter::try_from_env("PULSE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt().with_env_filter(filter).json().init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    pulse_collector::run(config).await?;
    Ok(())
}
