//! Configuration: documented defaults, then an optional TOML file, then `PULSE_*` environment
//! variables and command-line flags (flags win). With nothing set, the collector runs the dev setup
//! that the README's quick start relies on: site `demo` for localhost pages, read key `dev-read-key`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// The dev site key that `make run` and the demo page use.
pub const DEV_SITE: &str = "demo";
/// The dev read key for the query API.
pub const DEV_READ_KEY: &str = "dev-read-key";

/// Everything the collector can be told. Each field's doc states its unit and default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// ClickHouse HTTP endpoint. Default `http://127.0.0.1:8123`.
    pub clickhouse_url: String,
    /// Database holding Pulse's tables; created at start. Default `pulse`.
    pub clickhouse_database: String,
    /// ClickHouse user. Default `default`.
    pub clickhouse_user: String,
    /// ClickHouse password. Default empty.
    pub clickhouse_password: String,
    /// Sites allowed to send beacons. Default: the dev site `demo` for localhost origins.
    pub sites: Vec<SiteConfig>,
    /// Bearer keys accepted by the read API. Default `["dev-read-key"]`.
    pub read_keys: Vec<String>,
    /// Beacons held in memory between the ingest route and the writer; when full, ingest answers
    /// 503. Default 10 000.
    pub queue_capacity: usize,
    /// Rows per ClickHouse insert at most. Default 20 000.
    pub batch_rows: usize,
    /// Longest time rows wait before being inserted, ms. Default 1 000.
    pub flush_interval_ms: u64,
    /// Days of raw rows and per-minute rollups kept; older day partitions are dropped. Default 30.
    pub retention_days: u32,
    /// Days of per-hour rollups kept (whole months are dropped). Default 400.
    pub rollup_retention_days: u32,
    /// Beacons per second allowed from one client IP (burst: twice this). Default 20.
    pub ip_rate_per_second: u32,
    /// Beacons per second allowed for one site unless the site sets its own (burst: twice). Default 2 000.
    pub site_rate_per_second: u32,
    /// Header carrying the client IP when behind a trusted proxy (first entry of e.g.
    /// `x-forwarded-for`). Default none: the socket peer address is used.
    pub client_ip_header: Option<String>,
    /// Header carrying the visitor's ISO country code, set by a trusted CDN (e.g. `cf-ipcountry`).
    /// Default none.
    pub country_header: Option<String>,
    /// MaxMind GeoIP2/GeoLite2 country database used when no country header is present. Default none.
    pub geoip_database: Option<PathBuf>,
    /// Query ranges up to this many hours read raw rows (exact percentiles); longer ones read
    /// rollups. Default 24.
    pub raw_max_hours: u32,
    /// Directory of static files served at `/` (demo page, dashboard). Default `www`.
    pub www_dir: PathBuf,
    /// Directory of the built browser agent (`scripts/build-agent.sh`), served at `/agent/`:
    /// content-hashed files cached for a year, the `pulse.js` entry revalidated. Default
    /// `target/agent/dist`.
    pub agent_dir: PathBuf,
    /// Serve `/demo/api/{ok,fail,slow}`, the endpoints the demo page calls. Default true; turn it
    /// off in production.
    pub demo_api: bool,
    /// On SIGTERM/SIGINT, how long the writer keeps retrying to store queued rows, s. Default 15.
    pub shutdown_grace_seconds: u64,
    /// Log format: `text` or `json`. Default `text`.
    pub log_format: LogFormat,
}

/// One site that may send beacons.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Public site key (`site` in beacons).
    pub key: String,
    /// Origins allowed to send for this site: exact (`https://shop.example`), any port
    /// (`http://localhost:*`) or any subdomain (`https://*.shop.example`). Beacons without an
    /// `Origin` header (server-side senders, curl) are accepted.
    pub origins: Vec<String>,
    /// Beacons per second for this site; default: the global `site_rate_per_second`.
    #[serde(default)]
    pub rate_per_second: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            clickhouse_url: "http://127.0.0.1:8123".into(),
            clickhouse_database: "pulse".into(),
            clickhouse_user: "default".into(),
            clickhouse_password: String::new(),
            sites: vec![SiteConfig::dev()],
            read_keys: vec![DEV_READ_KEY.into()],
            queue_capacity: 10_000,
            batch_rows: 20_000,
            flush_interval_ms: 1_000,
            retention_days: 30,
            rollup_retention_days: 400,
            ip_rate_per_second: 20,
            site_rate_per_second: 2_000,
            client_ip_header: None,
            country_header: None,
            geoip_database: None,
            raw_max_hours: 24,
            www_dir: PathBuf::from("www"),
            agent_dir: PathBuf::from("target/agent/dist"),
            demo_api: true,
            shutdown_grace_seconds: 15,
            log_format: LogFormat::Text,
        }
    }
}

impl SiteConfig {
    /// The dev site: key `demo`, pages on localhost or 127.0.0.1 at any port.
    pub fn dev() -> Self {
        SiteConfig { key: DEV_SITE.into(), origins: vec!["http://localhost:*".into(), "http://127.0.0.1:*".into()], rate_per_second: None }
    }
}

impl Config {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// Whether the dev site or dev read key is in use (said loudly at start).
    pub fn uses_dev_credentials(&self) -> bool {
        self.sites.iter().any(|s| s.key == DEV_SITE) || self.read_keys.iter().any(|k| k == DEV_READ_KEY)
    }

    /// Reads a TOML file whose keys are this struct's field names.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_owned(), e))
    }

    /// Builds the configuration from the command line and environment (`Args`), reading the file
    /// it names, then checks it.
    pub fn load(args: Args) -> Result<Config, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        args.apply(&mut config)?;
        config.check()?;
        Ok(config)
    }

    /// Refuses settings that cannot work, with a message naming the setting.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, why: String| Err(ConfigError::Invalid { field, why });
        if self.sites.is_empty() {
            return bad("sites", "at least one site is needed".into());
        }
        for site in &self.sites {
            if site.key.is_empty() || site.key.len() > 64 || !site.key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return bad("sites.key", format!("{:?} must be 1..=64 letters, digits, _ or -", site.key));
            }
            for origin in &site.origins {
                crate::sites::OriginPattern::parse(origin).map_err(|why| ConfigError::Invalid { field: "sites.origins", why })?;
            }
            if site.rate_per_second == Some(0) {
                return bad("sites.rate_per_second", format!("site {} allows 0 beacons per second", site.key));
            }
        }
        if self.read_keys.is_empty() || self.read_keys.iter().any(String::is_empty) {
            return bad("read_keys", "at least one non-empty read key is needed".into());
        }
        for (field, value) in [
            ("queue_capacity", self.queue_capacity as u64),
            ("batch_rows", self.batch_rows as u64),
            ("flush_interval_ms", self.flush_interval_ms),
            ("retention_days", u64::from(self.retention_days)),
            ("rollup_retention_days", u64::from(self.rollup_retention_days)),
            ("ip_rate_per_second", u64::from(self.ip_rate_per_second)),
            ("site_rate_per_second", u64::from(self.site_rate_per_second)),
        ] {
            if value == 0 {
                return bad(field, "must be greater than 0".into());
            }
        }
        if !self.clickhouse_url.starts_with("http://") && !self.clickhouse_url.starts_with("https://") {
            return bad("clickhouse_url", format!("{:?} must start with http:// or https://", self.clickhouse_url));
        }
        if self.clickhouse_database.is_empty() || !self.clickhouse_database.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return bad("clickhouse_database", format!("{:?} must be letters, digits and _", self.clickhouse_database));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(PathBuf, #[source] toml::de::Error),
    #[error("config: {field}: {why}")]
    Invalid { field: &'static str, why: String },
}

/// Command line and environment. Every flag also reads `PULSE_<NAME>`; flags override the file.
#[derive(Debug, Default, Parser)]
#[command(name = "pulse-collector", version, about = "Pulse collector: beacons in, percentiles out.", long_about = None)]
pub struct Args {
    /// TOML configuration file (keys as in the README's configuration table).
    #[arg(long, env = "PULSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "PULSE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// ClickHouse HTTP URL [default: http://127.0.0.1:8123].
    #[arg(long, env = "PULSE_CLICKHOUSE_URL")]
    pub clickhouse_url: Option<String>,
    /// ClickHouse database [default: pulse].
    #[arg(long, env = "PULSE_CLICKHOUSE_DATABASE")]
    pub clickhouse_database: Option<String>,
    /// ClickHouse user [default: default].
    #[arg(long, env = "PULSE_CLICKHOUSE_USER")]
    pub clickhouse_user: Option<String>,
    /// ClickHouse password [default: empty].
    #[arg(long, env = "PULSE_CLICKHOUSE_PASSWORD", hide_env_values = true)]
    pub clickhouse_password: Option<String>,
    /// A site as KEY=ORIGIN[,ORIGIN…]; repeat the flag, or separate sites with ';' in PULSE_SITES.
    /// Replaces the configured sites [default: demo=http://localhost:*,http://127.0.0.1:*].
    #[arg(long = "site", env = "PULSE_SITES", value_delimiter = ';')]
    pub sites: Vec<String>,
    /// Read API bearer key; repeat, or comma-separate in PULSE_READ_KEYS [default: dev-read-key].
    #[arg(long = "read-key", env = "PULSE_READ_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub read_keys: Vec<String>,
    /// Beacons queued in memory before ingest answers 503 [default: 10000].
    #[arg(long, env = "PULSE_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Rows per ClickHouse insert at most [default: 20000].
    #[arg(long, env = "PULSE_BATCH_ROWS")]
    pub batch_rows: Option<usize>,
    /// Longest wait before queued rows are inserted, ms [default: 1000].
    #[arg(long, env = "PULSE_FLUSH_INTERVAL_MS")]
    pub flush_interval_ms: Option<u64>,
    /// Days of raw rows and per-minute rollups kept [default: 30].
    #[arg(long, env = "PULSE_RETENTION_DAYS")]
    pub retention_days: Option<u32>,
    /// Days of per-hour rollups kept [default: 400].
    #[arg(long, env = "PULSE_ROLLUP_RETENTION_DAYS")]
    pub rollup_retention_days: Option<u32>,
    /// Beacons per second per client IP [default: 20].
    #[arg(long, env = "PULSE_IP_RATE_PER_SECOND")]
    pub ip_rate_per_second: Option<u32>,
    /// Beacons per second per site [default: 2000].
    #[arg(long, env = "PULSE_SITE_RATE_PER_SECOND")]
    pub site_rate_per_second: Option<u32>,
    /// Trusted header with the client IP, e.g. x-forwarded-for [default: socket address].
    #[arg(long, env = "PULSE_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,
    /// Trusted header with the visitor's country code, e.g. cf-ipcountry [default: none].
    #[arg(long, env = "PULSE_COUNTRY_HEADER")]
    pub country_header: Option<String>,
    /// MaxMind country database (.mmdb) for IP → country [default: none].
    #[arg(long, env = "PULSE_GEOIP_DATABASE")]
    pub geoip_database: Option<PathBuf>,
    /// Ranges up to this many hours are answered from raw rows [default: 24].
    #[arg(long, env = "PULSE_RAW_MAX_HOURS")]
    pub raw_max_hours: Option<u32>,
    /// Static files served at / [default: www].
    #[arg(long, env = "PULSE_WWW_DIR")]
    pub www_dir: Option<PathBuf>,
    /// Built agent served at /agent/ [default: target/agent/dist].
    #[arg(long, env = "PULSE_AGENT_DIR")]
    pub agent_dir: Option<PathBuf>,
    /// Serve the demo page's API endpoints under /demo/api/ [default: true].
    #[arg(long, env = "PULSE_DEMO_API")]
    pub demo_api: Option<bool>,
    /// Seconds the writer keeps retrying queued rows at shutdown [default: 15].
    #[arg(long, env = "PULSE_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
    /// Log format [default: text].
    #[arg(long, env = "PULSE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

impl Args {
    fn apply(self, c: &mut Config) -> Result<(), ConfigError> {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { c.$field = v; } )* };
        }
        set!(
            listen,
            clickhouse_url,
            clickhouse_database,
            clickhouse_user,
            clickhouse_password,
            queue_capacity,
            batch_rows,
            flush_interval_ms,
            retention_days,
            rollup_retention_days,
            ip_rate_per_second,
            site_rate_per_second,
            raw_max_hours,
            www_dir,
            agent_dir,
            demo_api,
            shutdown_grace_seconds,
            log_format
        );
        if self.client_ip_header.is_some() {
            c.client_ip_header = self.client_ip_header;
        }
        if self.country_header.is_some() {
            c.country_header = self.country_header;
        }
        if self.geoip_database.is_some() {
            c.geoip_database = self.geoip_database;
        }
        if !self.sites.is_empty() {
            c.sites = self.sites.iter().map(|s| parse_site(s)).collect::<Result<_, _>>()?;
        }
        if !self.read_keys.is_empty() {
            c.read_keys = self.read_keys;
        }
        Ok(())
    }
}

/// `KEY=ORIGIN[,ORIGIN…]` → a site.
fn parse_site(spec: &str) -> Result<SiteConfig, ConfigError> {
    let (key, origins) = spec
        .split_once('=')
        .ok_or_else(|| ConfigError::Invalid { field: "site", why: format!("{spec:?} is not KEY=ORIGIN[,ORIGIN…]") })?;
    Ok(SiteConfig {
        key: key.trim().to_owned(),
        origins: origins.split(',').map(str::trim).filter(|o| !o.is_empty()).map(str::to_owned).collect(),
        rate_per_second: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_dev_setup() {
        let c = Config::default();
        c.check().expect("defaults are valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.sites[0].key, "demo");
        assert!(c.uses_dev_credentials());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("pulse-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("pulse.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\nbatch_rows = 5\n[[sites]]\nkey = \"shop\"\norigins = [\"https://*.shop.example\"]\n",
        )
        .expect("write");
        let args = Args::parse_from(["pulse-collector", "--config", file.to_str().expect("utf8"), "--batch-rows", "7"]);
        let c = Config::load(args).expect("loads");
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.batch_rows, 7);
        assert_eq!(c.sites.len(), 1);
        assert_eq!(c.sites[0].origins, vec!["https://*.shop.example"]);
    }

    #[test]
    fn bad_settings_are_named() {
        let err = Config { batch_rows: 0, ..Config::default() }.check().expect_err("zero batch");
        assert_eq!(err.to_string(), "config: batch_rows: must be greater than 0");
        let args = Args::parse_from(["pulse-collector", "--site", "shop"]);
        assert!(Config::load(args).expect_err("no origins").to_string().contains("KEY=ORIGIN"));
        let args = Args::parse_from(["pulse-collector", "--site", "shop=ftp://x"]);
        assert!(Config::load(args).expect_err("bad origin").to_string().contains("sites.origins"));
        let err = toml::from_str::<Config>("unknown_key = 1").expect_err("unknown keys are refused");
        assert!(err.to_string().contains("unknown_key"), "{err}");
    }
}
