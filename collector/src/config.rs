//! Configuration: documented defaults, then an optional TOML file, then `PULSE_*` environment
//! variables and command-line flags (flags win). With nothing set, the collector runs the dev setup
//! that the README's quick start relies on: site `demo` for localhost pages, read key `dev-read-key`.
//!
//! Each setting is declared once, in [`settings!`] below: its name (the TOML key), type, default
//! and doc. The environment variable (`PULSE_` + the name in capitals), the flag (`--` + the name
//! with dashes; singular for lists), the `--help` text and the README's table row are derived from
//! that one declaration; a test holds the README to it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use serde::Deserialize;

use crate::origin::OriginPattern;
use pulse_protocol::limits::{MAX_BODY_BYTES, MAX_METRICS_PER_BEACON};

/// The dev site key that `make run` and the demo page use.
pub const DEV_SITE: &str = "demo";
/// The dev read key for the query API.
pub const DEV_READ_KEY: &str = "dev-read-key";
/// The dev write key (`POST /v1/releases`) that `make run` gives for the dev site.
pub const DEV_WRITE_KEY: &str = "dev-write-key";

/// One setting as the outside world sees it: names, default and doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// TOML key and field name.
    pub key: &'static str,
    /// One-line description (unit included).
    pub doc: String,
    /// The default, as it would be written in the environment variable.
    pub default: String,
    /// Lists: the separator between items in the environment variable; the flag may repeat.
    pub delimiter: Option<char>,
    /// Values never shown in `--help` (passwords, keys).
    pub secret: bool,
}

impl Setting {
    /// `PULSE_` + the key in capitals.
    pub fn env(&self) -> String {
        format!("PULSE_{}", self.key.to_ascii_uppercase())
    }

    /// The flag without its dashes: the key with `-`, singular for lists (`--site`, `--read-key`,
    /// `--trusted-proxy`).
    pub fn flag(&self) -> String {
        let name = self.key.replace('_', "-");
        match self.delimiter {
            Some(_) => match name.strip_suffix("ies") {
                Some(stem) => format!("{stem}y"),
                None => name.strip_suffix('s').map(str::to_owned).unwrap_or(name),
            },
            None => name,
        }
    }

    /// An older spelling of the flag still accepted: `--trusted-proxie`, as it was first derived.
    fn old_flag(&self) -> Option<String> {
        let name = self.key.replace('_', "-");
        self.delimiter.and(name.strip_suffix('s')).map(str::to_owned).filter(|old| *old != self.flag())
    }
}

/// A setting's value type: read from text (the flag or environment variable) and written back
/// as text (the documented default).
pub trait SettingValue: Sized {
    /// Separator between list items (lists only).
    const DELIMITER: Option<char> = None;
    /// Parses the values given (one, or for lists each item).
    fn parse(items: &[&str]) -> Result<Self, String>;
    /// The value as it would be given.
    fn show(&self) -> String;
}

fn one<'a>(items: &[&'a str]) -> Result<&'a str, String> {
    match items {
        [item] => Ok(item),
        _ => Err("takes exactly one value".into()),
    }
}

macro_rules! from_str_values {
    ($($ty:ty),*) => {$(
        impl SettingValue for $ty {
            fn parse(items: &[&str]) -> Result<Self, String> {
                let item = one(items)?;
                item.parse().map_err(|e| format!("{item:?}: {e}"))
            }
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
from_str_values!(SocketAddr, String, u32, u64, usize);

impl SettingValue for bool {
    fn parse(items: &[&str]) -> Result<Self, String> {
        // `PULSE_DEV=1` as shells and CI systems write switches, as well as `true`.
        match one(items)? {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            item => Err(format!("{item:?} is not true, false, 1 or 0")),
        }
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for PathBuf {
    fn parse(items: &[&str]) -> Result<Self, String> {
        one(items).map(PathBuf::from)
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
}

impl<T: SettingValue> SettingValue for Option<T> {
    fn parse(items: &[&str]) -> Result<Self, String> {
        T::parse(items).map(Some)
    }
    fn show(&self) -> String {
        self.as_ref().map_or_else(|| "none".into(), T::show)
    }
}

impl SettingValue for Vec<String> {
    const DELIMITER: Option<char> = Some(',');
    fn parse(items: &[&str]) -> Result<Self, String> {
        Ok(items.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
    }
    fn show(&self) -> String {
        self.join(",")
    }
}

/// A bearer key as written in TOML, and the sites it may reach (all when unscoped).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ApiKeyConfig {
    Key(String),
    Scoped { key: String, sites: Vec<String> },
}

/// A bearer key: a read key of the query API (`read_keys`) or a write key that declares
/// releases (`write_keys`). The two lists are separate: a key of one is never accepted as the other.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "ApiKeyConfig")]
pub struct ApiKey {
    pub key: String,
    /// The sites this key may reach; `None`: every site.
    pub sites: Option<Vec<String>>,
}

/// A key of `read_keys`.
pub type ReadKey = ApiKey;
/// A key of `write_keys`.
pub type WriteKey = ApiKey;

impl From<ApiKeyConfig> for ApiKey {
    fn from(c: ApiKeyConfig) -> ApiKey {
        match c {
            ApiKeyConfig::Key(key) => ApiKey { key, sites: None },
            ApiKeyConfig::Scoped { key, sites } => ApiKey { key, sites: Some(sites) },
        }
    }
}

impl SettingValue for Vec<ApiKey> {
    const DELIMITER: Option<char> = Some(',');
    fn parse(items: &[&str]) -> Result<Self, String> {
        Ok(items
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| match s.split_once('@') {
                Some((key, sites)) => ApiKey { key: key.to_owned(), sites: Some(sites.split('+').map(str::to_owned).collect()) },
                None => ApiKey { key: s.to_owned(), sites: None },
            })
            .collect())
    }
    fn show(&self) -> String {
        self.iter()
            .map(|k| match &k.sites {
                Some(sites) => format!("{}@{}", k.key, sites.join("+")),
                None => k.key.clone(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl SettingValue for Vec<SiteConfig> {
    const DELIMITER: Option<char> = Some(';');
    fn parse(items: &[&str]) -> Result<Self, String> {
        items.iter().filter(|s| !s.trim().is_empty()).map(|s| SiteConfig::parse(s)).collect()
    }
    fn show(&self) -> String {
        self.iter().map(SiteConfig::show).collect::<Vec<_>>().join(";")
    }
}

impl SettingValue for LogFormat {
    fn parse(items: &[&str]) -> Result<Self, String> {
        match one(items)? {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not text or json")),
        }
    }
    fn show(&self) -> String {
        match self {
            LogFormat::Text => "text".into(),
            LogFormat::Json => "json".into(),
        }
    }
}

/// Declares the settings: the [`Config`] struct, its `Default`, the [`settings`] table and the
/// setter that flags and environment variables go through. Settings after `@toml_only` are
/// tables of the config file (notifiers, alert rules): no variable, no flag.
macro_rules! settings {
    (
        $( $(#[doc = $doc:literal])* $(#[secret $secret:tt])? $name:ident: $ty:ty = $default:expr; )*
        @toml_only
        $( $(#[doc = $tdoc:literal])* $tname:ident: $tty:ty = $tdefault:expr; )*
    ) => {
        /// Everything the collector can be told. Defaults are in [`Config::default`]; the README's
        /// configuration table lists them.
        #[derive(Debug, Clone, Deserialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $name: $ty, )*
            $( $(#[doc = $tdoc])* pub $tname: $tty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $name: $default, )* $( $tname: $tdefault, )* }
            }
        }

        /// Every setting, in declaration order, with its default.
        pub fn settings() -> Vec<Setting> {
            let defaults = Config::default();
            vec![$(
                Setting {
                    key: stringify!($name),
                    doc: one_line(&[$($doc),*]),
                    default: SettingValue::show(&defaults.$name),
                    delimiter: <$ty as SettingValue>::DELIMITER,
                    secret: false $( || stringify!($secret) == "true" )?,
                },
            )*]
        }

        impl Config {
            /// Sets one setting from the text of its flag or environment variable.
            fn set(&mut self, key: &str, items: &[&str]) -> Result<(), String> {
                match key {
                    $( stringify!($name) => self.$name = SettingValue::parse(items)?, )*
                    _ => return Err("is not a setting".into()),
                }
                Ok(())
            }
        }
    };
}

settings! {
    /// Address to listen on.
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080));
    /// Longest wait for a request's head, ms: from accept for a connection's first request, from
    /// its first byte for later ones; then the connection is closed. A browser sends a beacon's
    /// head (under 2 KiB) in one packet: 10 s covers a poor mobile link, and a client trickling
    /// a head (slowloris) holds a connection no longer.
    header_read_timeout_ms: u64 = 10_000;
    /// How long a keep-alive connection may sit idle between requests, ms. Longer than the 60 s
    /// of common load balancers (AWS ALB), so a proxy in front closes an idle connection first and
    /// never sends a request on one the collector is closing (nginx's default is 75 s too);
    /// browsers keep idle sockets longer (Chrome: 5 min) and reconnect when the server closed one.
    idle_timeout_ms: u64 = 75_000;
    /// Longest time spent reading one request body, ms. A beacon is at most 64 KiB: 10 s is a
    /// slow mobile link's worth; a client stalling longer is answered 400.
    body_timeout_ms: u64 = 10_000;
    /// Connections served at once. Beyond it new connections wait in the kernel's listen backlog
    /// until one closes (a beacon is served late rather than refused). Keep it below the
    /// open-file limit (`ulimit -n`): each connection holds a descriptor (and an 8 KiB read buffer).
    max_connections: usize = 10_000;
    /// Connections one client (the socket's peer: an IPv4 address or an IPv6 /64, never a
    /// header) may hold open at once. Past it, its longest-idle keep-alive connection is closed to
    /// make room (the browser reconnects for its next beacon), and when none is idle the new
    /// connection is closed at once (`pulse_connections_refused_total{reason="ip_cap"}`), so one
    /// address holding stalled connections cannot take every `max_connections` slot. A browser
    /// has one or two requests to the collector under way at a time; the campus of 5 000 people
    /// behind one address (200 beacons/s, each answered within tens of ms) has about 10 under
    /// way, so 256 leaves 25 times that. A trusted proxy (`trusted_proxies`, or with
    /// `client_ip_header` and no list a private peer) carries many clients and is not capped.
    ip_max_connections: usize = 256;
    /// ClickHouse HTTP endpoint.
    clickhouse_url: String = "http://127.0.0.1:8123".into();
    /// Database holding Pulse's tables (created at start).
    clickhouse_database: String = "pulse".into();
    /// ClickHouse user.
    clickhouse_user: String = "default".into();
    /// ClickHouse password.
    #[secret true]
    clickhouse_password: String = String::new();
    /// A cluster from the servers' `remote_servers` to spread the data over: local tables in
    /// `<database>_local` on every shard, `Distributed` tables over them in `<database>` (README,
    /// "Running on a cluster"). None: one server.
    clickhouse_cluster: Option<String> = None;
    /// With `clickhouse_cluster`: the HTTP URL of every shard (one server each), where the
    /// collector creates the tables and builds the rollups.
    clickhouse_shards: Vec<String> = Vec::new();
    /// Site keys and the origins that may send for each (`KEY=ORIGIN,ORIGIN;…`): exact
    /// (`https://shop.example`), any port (`http://localhost:*`) or any subdomain
    /// (`https://*.shop.example`); TOML sites may set `rate_per_second` and `scrub` rules.
    sites: Vec<SiteConfig> = vec![SiteConfig::dev()];
    /// Bearer keys of the read API; `KEY@SITE+SITE` limits a key to those sites (TOML:
    /// `{ key = "…", sites = ["shop"] }`).
    #[secret true]
    read_keys: Vec<ReadKey> = vec![ReadKey { key: DEV_READ_KEY.into(), sites: None }];
    /// Bearer keys that declare releases (`POST /v1/releases`, `pulse release new`), in the form
    /// of `read_keys` (`KEY@SITE+SITE`); none: releases cannot be declared. A write key is never
    /// a read key, nor the reverse.
    #[secret true]
    write_keys: Vec<WriteKey> = Vec::new();
    /// Directory of the disk spool, where accepted beacons wait (synced) until ClickHouse has them.
    spool_dir: PathBuf = PathBuf::from(".pulse/spool");
    /// Most bytes the spool may hold; beyond it ingest answers 503 with `Retry-After`.
    spool_max_bytes: u64 = 1 << 30;
    /// Sync each spool commit to disk before answering 202. Turn off only to measure what
    /// durability costs (`make bench`): a crash then loses the beacons of the last commits.
    spool_fsync: bool = true;
    /// Beacons waiting for the spool's next disk commit before ingest answers 503.
    queue_capacity: usize = 10_000;
    /// Rows per ClickHouse insert at most.
    batch_rows: usize = 20_000;
    /// Longest wait before spooled rows are inserted, ms.
    flush_interval_ms: u64 = 1_000;
    /// Times ClickHouse must refuse a batch's data (it answered with an error about the rows or
    /// the table, not an outage) before the refused rows go to the dead letters (the
    /// `dead_letter` table, else files in `<spool_dir>/dead-letter/`) so the rows behind them
    /// ship. Outages (no connection, timeouts, errors without a ClickHouse exception) never count.
    /// 10 refusals with the shipper's backoff take about 20 s.
    dead_letter_after_attempts: u32 = 10;
    /// Days of raw rows and final values (`metrics_final`) kept (whole days dropped).
    retention_days: u32 = 30;
    /// Days of hour and day rollups kept (whole days dropped).
    rollup_retention_days: u32 = 400;
    /// Minutes after an hour ends before its values are final (re-reported CLS and INP of its
    /// page views counted with their last value) and rolled up; reports arriving later stay in
    /// the raw table only (`pulse_late_reports_total`).
    final_grace_minutes: u32 = 30;
    /// How often the finalizer looks for hours to make final, s. Any number of collectors may
    /// run it: a lease in ClickHouse lets one at a time.
    finalize_interval_seconds: u64 = 60;
    /// Beacons per second per client (an IPv4 address or an IPv6 /64; burst twice this). Sized
    /// for a large office or campus behind one NAT address: 5 000 people on the site at once send
    /// about 200 beacons/s.
    ip_rate_per_second: u32 = 500;
    /// Metrics (rows) per second per client (burst twice this). That campus sends about 2 000 a
    /// second (10 a beacon); a flood of full 500-metric beacons is cut to 20 beacons/s.
    ip_metrics_per_second: u64 = 10_000;
    /// Body bytes per second per client (burst twice this). That campus sends about 400 KB/s; at
    /// this rate one client adds at most about 2 MB/s to the spool.
    ip_bytes_per_second: u64 = 1_000_000;
    /// Requests per second per client (burst twice this) to every route but `/v1/beacon` and
    /// `/agent/`: the read API, `/healthz`, `/metrics` and the dashboard's files. A dashboard
    /// load is about 15 requests, a scraper a few a minute; past it, `429` with `Retry-After`.
    ip_read_rate_per_second: u32 = 50;
    /// Most clients the per-client buckets remember (a client's buckets are full again, and it
    /// is forgotten, within 2 s of its last beacon, so this bounds clients active at once; 5 MiB
    /// at the default). Past it, new clients share 4 096 overflow buckets, so a flood from a
    /// million addresses costs no more memory.
    rate_limit_max_clients: usize = 100_000;
    /// Beacons per second per site unless the site sets its own `rate_per_second` (burst twice
    /// this). Counted only for beacons that validate. Sized for a site at 10 000 beacons/s.
    site_rate_per_second: u32 = 10_000;
    /// Metrics per second per site unless the site sets `metrics_per_second` (burst twice this):
    /// 10 000 beacons/s of 20 metrics.
    site_metrics_per_second: u64 = 200_000;
    /// Body bytes per second per site unless the site sets `bytes_per_second` (burst twice this):
    /// 10 000 beacons/s of 4 KB.
    site_bytes_per_second: u64 = 40_000_000;
    /// Distinct page URLs (after clustering) a site may create per UTC day; past it, new ones are
    /// stored as `(other)` (their metrics still count in every total). A large shop with text
    /// slugs clustered (`/products/*`) has a few hundred routes.
    cardinality_urls_per_day: usize = 10_000;
    /// Distinct API routes (after clustering) per site per day; past it, `(other)`.
    cardinality_routes_per_day: usize = 2_000;
    /// Distinct custom metric names per site per day; past it, a new name is refused with the
    /// reason (`metrics_rejected_total{reason="cardinality"}`).
    cardinality_metric_names_per_day: usize = 1_000;
    /// Distinct releases per site per day (a deploy a minute is 1 440); past it, `(other)`.
    cardinality_releases_per_day: usize = 2_000;
    /// Distinct envs per site per day; past it, `(other)`.
    cardinality_envs_per_day: usize = 50;
    /// Distinct custom-metric tag keys per site per day; past it, `(other)`.
    cardinality_tag_keys_per_day: usize = 200;
    /// Distinct values of one tag key per site per day; past it, `(other)`.
    cardinality_tag_values_per_day: usize = 1_000;
    /// New distinct values one client (an IPv4 address or IPv6 /64) may add to a site's sets per
    /// UTC day, in each dimension above; past it the client's new values are stored as `(other)`
    /// (a new custom metric name is refused) while values already known are kept
    /// (`pulse_cardinality_client_folded_total{site, dimension}`). A visitor adds a value only
    /// when it is the first to send it that day: a visit of 20 pages adds 20 URLs at most. So it
    /// takes 100 addresses to use up the default 10 000 URLs. A site whose visitors all come
    /// through one address (an intranet behind one NAT, no `client_ip_header`) should raise it.
    cardinality_new_values_per_client_per_day: usize = 100;
    /// Distinct segments at one path position (under one prefix) before that position becomes
    /// `*` (`/products/blue-shoes-42` → `/products/*`), for URLs and API routes. Segments the page
    /// templated (`:slug`) are kept, so the agent's `routes` win.
    url_cluster_threshold: usize = 200;
    /// Header with the client's address, which the proxies in front append to, e.g.
    /// `x-forwarded-for`; none: the socket's peer address. The client is the right-most address
    /// that is not in `trusted_proxies`.
    client_ip_header: Option<String> = None;
    /// The proxies in front of the collector (addresses or CIDRs, `10.0.0.0/8,fd00::/8`). The
    /// header is read only from them; none: a peer on loopback or a private network is the one
    /// proxy in front, so the header's last entry (the one it wrote) is the client, and the header
    /// of any other peer is ignored.
    trusted_proxies: Vec<String> = Vec::new();
    /// Trusted header with the visitor's country code, e.g. `cf-ipcountry`.
    country_header: Option<String> = None;
    /// MaxMind country database (`.mmdb`) for IP → country when no country header is present.
    geoip_database: Option<PathBuf> = None;
    /// Ranges up to this many hours are answered from raw rows (exact percentiles).
    raw_max_hours: u32 = 24;
    /// Longest a read query may run in ClickHouse, s (its `max_execution_time`, sent with every
    /// query of the read API and the alert evaluation): ClickHouse stops it and the request is
    /// answered 503 naming this setting. A year of rollups reads in well under a second.
    read_max_execution_seconds: u64 = 30;
    /// Most memory one read query may take in ClickHouse, bytes (its `max_memory_usage`); past it
    /// ClickHouse stops the query and the request is answered 503 naming this setting.
    read_max_memory_bytes: u64 = 2_000_000_000;
    /// Longest wait for a read request's answer, s, ClickHouse's included: a server that stops
    /// answering holds no request longer (503 with `Retry-After`). Longer than
    /// `read_max_execution_seconds`, so ClickHouse's own limit speaks first.
    read_timeout_seconds: u64 = 45;
    /// Comparisons' bootstraps and report pages computed at once (`/v1/compare`, `/v1/report`,
    /// release alerts), each on a blocking thread, off the threads that serve beacons. A request
    /// that finds them all busy is answered 503 with `Retry-After` (the alert evaluation waits its
    /// turn). 1 leaves a 2-core host's other core to ingest.
    read_compute_concurrency: usize = 1;
    /// Static files served at `/` (demo page, dashboard).
    www_dir: PathBuf = PathBuf::from("www");
    /// The built agent, served at `/agent/` (content-hashed files cached for a year).
    agent_dir: PathBuf = PathBuf::from("target/agent/dist");
    /// Dev mode (`make run` sets it): the dev site `demo` and read key `dev-read-key` are
    /// allowed on any address, and `/demo/api/*` is served. Without it a collector that listens
    /// on an address other machines reach (not loopback) refuses to start with either.
    dev: bool = false;
    /// Serve `/demo/api/{ok,fail,slow}` for the demo page, in `dev` mode only (never without it).
    demo_api: bool = true;
    /// Longest shutdown, s: requests under way get at most half of it to finish (connections
    /// between requests close at once), the shipper stores the spool's rows in the rest (what is
    /// left stays in the spool for the next start).
    shutdown_grace_seconds: u64 = 15;
    /// Log format, `text` or `json`; the level comes from `PULSE_LOG` (e.g. `debug`).
    log_format: LogFormat = LogFormat::Text;
    /// How often alert rules are evaluated, s.
    alert_interval_seconds: u64 = 60;
    /// Run the alert evaluation loop here. Any number of collectors may: a lease in ClickHouse
    /// lets exactly one evaluate at a time.
    alert_evaluator: bool = true;
    /// Groups one alert rule tracks at most (pending, firing, and those seen with data at the
    /// last evaluation; a group back to normal without data is forgotten). Past it, a group not
    /// yet tracked is not evaluated, the busiest first in, and counted in
    /// `pulse_alert_groups_over_cap_total`; tracked groups are never pushed out (a firing alert
    /// always gets its resolve).
    alert_max_groups_per_rule: usize = 200;
    /// Days of alert history (`alert_events`) kept (whole months dropped). The latest event of
    /// each alert is its state after a restart, so this must be longer than every rule's reminder
    /// period (`repeat_warning`, `repeat_critical`): a firing alert writes one each period.
    alert_events_retention_days: u32 = 90;
    /// Base URL of this collector as people reach it, for the dashboard links in notifications;
    /// none: `http://` + `listen`.
    public_url: Option<String> = None;
    @toml_only
    /// `[[notifiers]]`: where alert notifications go (README, "Alerts").
    notifiers: Vec<NotifierConfig> = Vec::new();
    /// `[[alert_rules]]`: what to watch (README, "Alerts").
    alert_rules: Vec<AlertRuleConfig> = Vec::new();
}

/// Doc-comment lines as one line.
fn one_line(lines: &[&str]) -> String {
    lines.iter().flat_map(|l| l.split_whitespace()).collect::<Vec<_>>().join(" ")
}

/// One site that may send beacons.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Public site key (`site` in beacons); the wire format's rule
    /// ([`pulse_protocol::validate::site_key`]).
    pub key: String,
    /// Origins allowed to send for this site. Beacons without an `Origin` header (server-side
    /// senders, curl) are accepted.
    pub origins: Vec<OriginPattern>,
    /// Beacons per second for this site; default: the global `site_rate_per_second`.
    #[serde(default)]
    pub rate_per_second: Option<u32>,
    /// Metrics per second for this site; default: the global `site_metrics_per_second`.
    #[serde(default)]
    pub metrics_per_second: Option<u64>,
    /// Body bytes per second for this site; default: the global `site_bytes_per_second`.
    #[serde(default)]
    pub bytes_per_second: Option<u64>,
    /// This site's own cardinality limits (`cardinality = { urls = 50000 }`); default: the
    /// global `cardinality_*_per_day`.
    #[serde(default)]
    pub cardinality: CardinalityOverrides,
    /// This site's own scrubbing rules, applied after the built-in ones to every stored URL,
    /// route and attribution text (`scrub = [{ pattern = "^/team/[^/]+", replacement =
    /// "/team/:user" }]`; README, "Privacy"). Default: none.
    #[serde(default)]
    pub scrub: Vec<ScrubRule>,
    /// Watch this site's Core Web Vitals with the default rules (p75 over an hour at
    /// web-vitals' needs-improvement / poor thresholds), notifying every notifier.
    #[serde(default)]
    pub default_alerts: bool,
    /// Releases whose names match this regular expression count as declared, ordered by when
    /// they were first seen (`release_pattern = "^\\d+\\.\\d+\\.\\d+$"`); none: only releases
    /// declared with `POST /v1/releases` do. Release rules compare declared releases only.
    #[serde(default)]
    pub release_pattern: Option<String>,
}

/// A site's scrubbing rule: every match of `pattern` (a regular expression of the `regex`
/// crate; `$1` in `replacement` is its first group) is replaced (see `ingest::scrub`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScrubRule {
    pub pattern: String,
    pub replacement: String,
}

/// `[[notifiers]]`: where notifications go.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    pub name: String,
    /// `webhook`, `slack` or `pagerduty`.
    pub kind: String,
    /// Where to POST (PagerDuty: default `https://events.pagerduty.com/v2/enqueue`).
    #[serde(default)]
    pub url: Option<String>,
    /// Webhook: the key of the HMAC-SHA256 signature of each body.
    #[serde(default)]
    pub secret: Option<String>,
    /// PagerDuty: the integration's routing key.
    #[serde(default)]
    pub routing_key: Option<String>,
}

/// `[[alert_rules]]`: one rule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleConfig {
    pub name: String,
    /// `threshold` (default): the statistic against warning/critical. `release`: each new
    /// release compared with the one before it (`/v1/compare`), notifying on a regression.
    #[serde(default)]
    pub kind: Option<String>,
    /// `release` rules: the smallest relative change that counts (default 0.2).
    #[serde(default)]
    pub min_change: Option<f64>,
    pub site: String,
    /// A vital, a custom metric name, or `api`.
    pub metric: String,
    /// `p50 p75 p90 p95 p99 avg good_share poor_share error_rate count`; default `p75`.
    #[serde(default)]
    pub stat: Option<String>,
    /// The query API's filters (`url device browser os country release nav`; `route method
    /// status` too for `api`).
    #[serde(default, rename = "where")]
    pub filters: BTreeMap<String, String>,
    /// One alert per value of this dimension (at most `max_groups`, the busiest first).
    #[serde(default)]
    pub group_by: Option<String>,
    #[serde(default)]
    pub max_groups: Option<usize>,
    /// Evaluation window, e.g. `15m`; default `15m`.
    #[serde(default)]
    pub window: Option<String>,
    /// How long a breach must last before the alert fires; default `5m`.
    #[serde(default, rename = "for")]
    pub pending_for: Option<String>,
    /// How long the value must stay on the good side before the alert resolves; default `0s`.
    #[serde(default)]
    pub keep_firing_for: Option<String>,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    /// Where the good side starts when resolving; default the lowest threshold.
    pub resolve: Option<f64>,
    /// Fewer samples than this hold the state ("insufficient data"); default ⌈10/(1−p)⌉ for
    /// percentiles (p75 → 40, p95 → 200), 10 for averages, shares and error rates, 0 for counts.
    pub min_samples: Option<u64>,
    /// `keep` (default), `ok` or `alert`.
    #[serde(default)]
    pub no_data: Option<String>,
    #[serde(default)]
    pub notify: Vec<String>,
    /// Reminder period while firing at each severity; defaults `1h` (warning) and `5m` (critical).
    #[serde(default)]
    pub repeat_warning: Option<String>,
    #[serde(default)]
    pub repeat_critical: Option<String>,
}

/// Distinct values a site may create per day, per dimension (see `ingest::cardinality`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardinalityLimits {
    pub urls: usize,
    pub routes: usize,
    pub metric_names: usize,
    pub releases: usize,
    pub envs: usize,
    pub tag_keys: usize,
    pub tag_values: usize,
}

/// A site's own cardinality limits; each unset one is the global setting's.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CardinalityOverrides {
    pub urls: Option<usize>,
    pub routes: Option<usize>,
    pub metric_names: Option<usize>,
    pub releases: Option<usize>,
    pub envs: Option<usize>,
    pub tag_keys: Option<usize>,
    pub tag_values: Option<usize>,
}

impl CardinalityOverrides {
    pub fn resolve(&self, d: &CardinalityLimits) -> CardinalityLimits {
        CardinalityLimits {
            urls: self.urls.unwrap_or(d.urls),
            routes: self.routes.unwrap_or(d.routes),
            metric_names: self.metric_names.unwrap_or(d.metric_names),
            releases: self.releases.unwrap_or(d.releases),
            envs: self.envs.unwrap_or(d.envs),
            tag_keys: self.tag_keys.unwrap_or(d.tag_keys),
            tag_values: self.tag_values.unwrap_or(d.tag_values),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl SiteConfig {
    /// The dev site: key `demo`, pages on localhost or 127.0.0.1 at any port.
    pub fn dev() -> Self {
        SiteConfig::parse("demo=http://localhost:*,http://127.0.0.1:*").unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// `KEY=ORIGIN[,ORIGIN…]` → a site.
    pub fn parse(spec: &str) -> Result<SiteConfig, String> {
        let (key, origins) = spec.split_once('=').ok_or_else(|| format!("{spec:?} is not KEY=ORIGIN[,ORIGIN…]"))?;
        Ok(SiteConfig {
            key: key.trim().to_owned(),
            origins: origins.split(',').map(str::trim).filter(|o| !o.is_empty()).map(OriginPattern::parse).collect::<Result<_, _>>()?,
            rate_per_second: None,
            metrics_per_second: None,
            bytes_per_second: None,
            cardinality: CardinalityOverrides::default(),
            scrub: Vec::new(),
            default_alerts: false,
            release_pattern: None,
        })
    }

    fn show(&self) -> String {
        let origins: Vec<String> = self.origins.iter().map(ToString::to_string).collect();
        format!("{}={}", self.key, origins.join(","))
    }
}

impl Config {
    /// The global cardinality limits (a site's own override them).
    pub fn cardinality_defaults(&self) -> CardinalityLimits {
        CardinalityLimits {
            urls: self.cardinality_urls_per_day,
            routes: self.cardinality_routes_per_day,
            metric_names: self.cardinality_metric_names_per_day,
            releases: self.cardinality_releases_per_day,
            envs: self.cardinality_envs_per_day,
            tag_keys: self.cardinality_tag_keys_per_day,
            tag_values: self.cardinality_tag_values_per_day,
        }
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    /// Whether the dev site or dev read key is in use (said loudly at start).
    pub fn uses_dev_credentials(&self) -> bool {
        self.sites.iter().any(|s| s.key == DEV_SITE)
            || self.read_keys.iter().any(|k| k.key == DEV_READ_KEY)
            || self.write_keys.iter().any(|k| k.key == DEV_WRITE_KEY)
    }

    /// Whether `/demo/api/*` is served: asked for, and in dev mode.
    pub fn serves_demo_api(&self) -> bool {
        self.dev && self.demo_api
    }

    /// Reads a TOML file whose keys are the settings' names.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_owned(), e))
    }

    /// Builds the configuration from the process's flags and environment, reading the file they
    /// name, then checks its own settings ([`Config::check`]). `--help` and `--version` print and
    /// exit here.
    pub fn from_env_and_args() -> Result<Config, ConfigError> {
        Config::load(command().get_matches())
    }

    /// Builds the configuration from parsed flags and environment ([`command`]), reading the file
    /// they name, then checks its own settings ([`Config::check`]).
    pub fn load(matches: ArgMatches) -> Result<Config, ConfigError> {
        let mut config = match matches.get_one::<String>("config") {
            Some(path) => Config::from_file(Path::new(path))?,
            None => Config::default(),
        };
        for setting in settings() {
            if let Some(values) = matches.get_many::<String>(setting.key) {
                let items: Vec<&str> = values.map(String::as_str).collect();
                config.set(setting.key, &items).map_err(|why| ConfigError::Invalid { field: setting.key, why })?;
            }
        }
        config.check()?;
        Ok(config)
    }

    /// Refuses settings that cannot work, with a message naming the setting. These are the plain
    /// settings; the parts that other modules compile (the sites' release patterns and scrub
    /// rules, the trusted proxies, the notifiers and alert rules) those modules check, and
    /// `pulse_collector::check` runs every check at start.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, why: String| Err(ConfigError::Invalid { field, why });
        if self.sites.is_empty() {
            return bad("sites", "at least one site is needed".into());
        }
        for site in &self.sites {
            if let Err(why) = pulse_protocol::validate::site_key(&site.key) {
                return bad("sites.key", format!("{:?} {why}", site.key));
            }
            if site.rate_per_second == Some(0) {
                return bad("sites.rate_per_second", format!("site {} allows 0 beacons per second", site.key));
            }
            if site.metrics_per_second.is_some_and(|m| m.saturating_mul(2) < MAX_METRICS_PER_BEACON as u64) {
                return bad(
                    "sites.metrics_per_second",
                    format!("site {}: the burst (twice this) must hold one full beacon of {MAX_METRICS_PER_BEACON} metrics", site.key),
                );
            }
            if site.bytes_per_second.is_some_and(|b| b.saturating_mul(2) < MAX_BODY_BYTES as u64) {
                return bad(
                    "sites.bytes_per_second",
                    format!("site {}: the burst (twice this) must hold one beacon of {MAX_BODY_BYTES} bytes", site.key),
                );
            }
        }
        // The dev credentials are printed in the README: on an address other machines reach they
        // would publish every site's data (and take anyone's beacons), so only in dev mode.
        if !self.dev && !self.listen.ip().is_loopback() {
            let why = |what: String| {
                format!(
                    "{what} is the dev setup's, and {} is reachable from other machines: configure your own, or set dev (PULSE_DEV=1) for a dev setup",
                    self.listen
                )
            };
            if self.read_keys.iter().any(|k| k.key == DEV_READ_KEY) {
                return bad("read_keys", why(format!("the read key {DEV_READ_KEY:?}")));
            }
            if self.write_keys.iter().any(|k| k.key == DEV_WRITE_KEY) {
                return bad("write_keys", why(format!("the write key {DEV_WRITE_KEY:?}")));
            }
            if self.sites.iter().any(|s| s.key == DEV_SITE) {
                return bad("sites", why(format!("the site {DEV_SITE:?}")));
            }
        }
        if self.read_keys.is_empty() || self.read_keys.iter().any(|k| k.key.is_empty()) {
            return bad("read_keys", "at least one non-empty read key is needed".into());
        }
        if self.write_keys.iter().any(|k| k.key.is_empty()) {
            return bad("write_keys", "a write key must not be empty".into());
        }
        for (field, keys) in [("read_keys", &self.read_keys), ("write_keys", &self.write_keys)] {
            for key in keys {
                for site in key.sites.iter().flatten() {
                    if !self.sites.iter().any(|s| &s.key == site) {
                        return bad(field, format!("a key is limited to {site:?}, which is not a configured site"));
                    }
                }
            }
        }
        // One text in both lists would be a write key accepted for reading, and the reverse.
        if self.write_keys.iter().any(|w| self.read_keys.iter().any(|r| r.key == w.key)) {
            return bad("write_keys", "a write key is also a read key; give each its own".into());
        }
        for (field, value) in [
            ("queue_capacity", self.queue_capacity as u64),
            ("spool_max_bytes", self.spool_max_bytes),
            ("batch_rows", self.batch_rows as u64),
            ("flush_interval_ms", self.flush_interval_ms),
            ("dead_letter_after_attempts", u64::from(self.dead_letter_after_attempts)),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("max_connections", self.max_connections as u64),
            ("ip_max_connections", self.ip_max_connections as u64),
            ("retention_days", u64::from(self.retention_days)),
            ("rollup_retention_days", u64::from(self.rollup_retention_days)),
            ("ip_rate_per_second", u64::from(self.ip_rate_per_second)),
            ("ip_read_rate_per_second", u64::from(self.ip_read_rate_per_second)),
            ("site_rate_per_second", u64::from(self.site_rate_per_second)),
            ("rate_limit_max_clients", self.rate_limit_max_clients as u64),
            ("url_cluster_threshold", self.url_cluster_threshold as u64),
            ("cardinality_new_values_per_client_per_day", self.cardinality_new_values_per_client_per_day as u64),
            ("alert_max_groups_per_rule", self.alert_max_groups_per_rule as u64),
            ("read_max_execution_seconds", self.read_max_execution_seconds),
            ("read_max_memory_bytes", self.read_max_memory_bytes),
            ("read_compute_concurrency", self.read_compute_concurrency as u64),
            ("alert_events_retention_days", u64::from(self.alert_events_retention_days)),
        ] {
            if value == 0 {
                return bad(field, "must be greater than 0".into());
            }
        }
        // A burst smaller than one beacon would refuse that beacon forever.
        for (field, rate, one_beacon) in [
            ("ip_metrics_per_second", self.ip_metrics_per_second, MAX_METRICS_PER_BEACON as u64),
            ("site_metrics_per_second", self.site_metrics_per_second, MAX_METRICS_PER_BEACON as u64),
            ("ip_bytes_per_second", self.ip_bytes_per_second, MAX_BODY_BYTES as u64),
            ("site_bytes_per_second", self.site_bytes_per_second, MAX_BODY_BYTES as u64),
        ] {
            if rate.saturating_mul(2) < one_beacon {
                return bad(field, format!("the burst (twice this) must hold one full beacon ({one_beacon}); {rate} is too small"));
            }
        }
        // The connection slots are a semaphore's permits, of which there are at most this many.
        if self.max_connections > tokio::sync::Semaphore::MAX_PERMITS {
            return bad("max_connections", format!("must be at most {}", tokio::sync::Semaphore::MAX_PERMITS));
        }
        if self.read_compute_concurrency > 1024 {
            return bad("read_compute_concurrency", "must be at most 1024 (each is a thread)".into());
        }
        if self.read_timeout_seconds <= self.read_max_execution_seconds {
            return bad(
                "read_timeout_seconds",
                format!(
                    "must be longer than read_max_execution_seconds ({}), so ClickHouse's limit speaks first",
                    self.read_max_execution_seconds
                ),
            );
        }
        if self.alert_interval_seconds == 0 {
            return bad("alert_interval_seconds", "must be greater than 0".into());
        }
        if self.finalize_interval_seconds == 0 {
            return bad("finalize_interval_seconds", "must be greater than 0".into());
        }
        if let Some(url) = &self.public_url {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return bad("public_url", format!("{url:?} must start with http:// or https://"));
            }
        }
        if !self.clickhouse_url.starts_with("http://") && !self.clickhouse_url.starts_with("https://") {
            return bad("clickhouse_url", format!("{:?} must start with http:// or https://", self.clickhouse_url));
        }
        if self.clickhouse_database.is_empty() || !self.clickhouse_database.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return bad("clickhouse_database", format!("{:?} must be letters, digits and _", self.clickhouse_database));
        }
        match (&self.clickhouse_cluster, self.clickhouse_shards.is_empty()) {
            (Some(cluster), _) if cluster.is_empty() || !cluster.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') => {
                return bad("clickhouse_cluster", format!("{cluster:?} must be letters, digits, - and _"));
            }
            (Some(_), true) => return bad("clickhouse_shards", "a cluster needs the HTTP URL of every shard".into()),
            (None, false) => return bad("clickhouse_cluster", "shards were given without the cluster's name".into()),
            _ => {}
        }
        if let Some(shard) = self.clickhouse_shards.iter().find(|u| !u.starts_with("http://") && !u.starts_with("https://")) {
            return bad("clickhouse_shards", format!("{shard:?} must start with http:// or https://"));
        }
        Ok(())
    }
}

impl Config {
    /// Where people reach this collector (dashboard links).
    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen))
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
    /// A notifier or alert rule, named in `field` (`alert_rules[checkout-lcp].window`).
    #[error("config: {field}: {why}")]
    Rule { field: String, why: String },
}

/// The command line: `--config FILE` and one flag per setting, each also read from its
/// environment variable. Flags and variables override the file.
pub fn command() -> Command {
    let mut command =
        Command::new("pulse-collector").version(env!("CARGO_PKG_VERSION")).about("Pulse collector: beacons in, percentiles out.").arg(
            Arg::new("config")
                .long("config")
                .env("PULSE_CONFIG")
                .value_name("FILE")
                .help("TOML configuration file (keys as in the README's configuration table)"),
        );
    for setting in settings() {
        let default = if setting.default.is_empty() { "empty".to_owned() } else { setting.default.clone() };
        let mut arg = Arg::new(setting.key)
            .long(setting.flag())
            .env(setting.env())
            .value_name(setting.key.to_ascii_uppercase())
            .help(format!("{} [default: {default}]", setting.doc));
        if let Some(delimiter) = setting.delimiter {
            arg = arg.action(ArgAction::Append).value_delimiter(delimiter);
        }
        if let Some(old) = setting.old_flag() {
            arg = arg.alias(old);
        }
        if setting.secret {
            arg = arg.hide_env_values(true);
        }
        command = command.arg(arg);
    }
    command
}

/// The README's configuration table (rows of key, variable / flag, default, meaning).
pub fn markdown_table() -> String {
    let mut out = String::from("| key (TOML) | env / flag | default | meaning |\n|---|---|---|---|\n");
    for s in settings() {
        let default = if s.default.is_empty() { "empty".to_owned() } else { format!("`{}`", s.default) };
        out.push_str(&format!("| `{}` | `{}` / `--{}` | {default} | {} |\n", s.key, s.env(), s.flag(), s.doc));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["pulse-collector"];
        argv.extend_from_slice(args);
        Config::load(command().try_get_matches_from(argv).expect("flags parse"))
    }

    #[test]
    fn defaults_are_the_dev_setup() {
        let c = Config::default();
        c.check().expect("defaults are valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.sites[0].key, "demo");
        assert!(c.uses_dev_credentials());
    }

    #[test]
    fn dev_credentials_on_an_address_others_reach_need_dev_mode() {
        let err = load(&["--listen", "0.0.0.0:8080"]).expect_err("dev read key on 0.0.0.0").to_string();
        assert!(err.starts_with("config: read_keys: the read key \"dev-read-key\" is the dev setup's, and 0.0.0.0:8080"), "{err}");
        assert!(err.contains("PULSE_DEV=1"), "{err}");
        let err = load(&["--listen", "[::]:8080", "--read-key", "k"]).expect_err("dev site on ::").to_string();
        assert!(err.starts_with("config: sites: the site \"demo\""), "{err}");
        load(&["--listen", "0.0.0.0:8080", "--read-key", "k", "--site", "shop=https://shop.example"]).expect("own credentials");
        load(&["--listen", "[::1]:8080"]).expect("loopback");
        let dev = load(&["--listen", "0.0.0.0:8080", "--dev", "1"]).expect("dev mode");
        assert!(dev.serves_demo_api());
        assert!(!Config::default().serves_demo_api(), "the demo API only in dev mode");
        assert!(load(&["--dev", "yes"]).expect_err("not a switch").to_string().contains("dev"));
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("pulse-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("pulse.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\nbatch_rows = 5\nread_keys = [\"k\"]\n[[sites]]\nkey = \"shop\"\norigins = [\"https://*.shop.example\"]\n",
        )
        .expect("write");
        let c = load(&["--config", file.to_str().expect("utf8"), "--batch-rows", "7"]).expect("loads");
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.batch_rows, 7);
        assert_eq!(c.sites.len(), 1);
        assert!(c.sites[0].origins[0].matches("https://www.shop.example"));
    }

    #[test]
    fn lists_take_repeated_flags() {
        let c = load(&["--site", "a=https://a.example", "--site", "b=https://b.example,http://localhost:*", "--read-key", "k1,k2"])
            .expect("loads");
        assert_eq!(c.sites.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(c.sites[1].origins.len(), 2);
        assert_eq!(c.read_keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(), ["k1", "k2"]);
        let c = load(&["--site", "a=https://a.example", "--site", "b=https://b.example", "--read-key", "all,mine@a,both@a+b"])
            .expect("scoped keys");
        assert_eq!(c.read_keys[1], ReadKey { key: "mine".into(), sites: Some(vec!["a".into()]) });
        assert_eq!(c.read_keys[2].sites.as_deref(), Some(&["a".to_owned(), "b".to_owned()][..]));
        let err = load(&["--site", "a=https://a.example", "--read-key", "k@nope"]).expect_err("unknown site");
        assert!(err.to_string().starts_with("config: read_keys: "), "{err}");
        let toml_keys: Config = toml::from_str("read_keys = [\"all\", { key = \"shop-key\", sites = [\"demo\"] }]").expect("TOML keys");
        assert_eq!(toml_keys.read_keys[1].sites, Some(vec!["demo".to_owned()]));
    }

    #[test]
    fn write_keys_are_their_own() {
        assert!(Config::default().write_keys.is_empty(), "no write key by default");
        let c = load(&["--site", "a=https://a.example", "--read-key", "r", "--write-key", "w@a,all"]).expect("write keys");
        assert_eq!(
            c.write_keys,
            vec![WriteKey { key: "w".into(), sites: Some(vec!["a".into()]) }, WriteKey { key: "all".into(), sites: None }]
        );
        let err = load(&["--site", "a=https://a.example", "--read-key", "k", "--write-key", "k"]).expect_err("shared key").to_string();
        assert_eq!(err, "config: write_keys: a write key is also a read key; give each its own");
        let err = load(&["--site", "a=https://a.example", "--read-key", "k", "--write-key", "w@b"]).expect_err("unknown site").to_string();
        assert!(err.starts_with("config: write_keys: a key is limited to \"b\""), "{err}");
        let err =
            load(&["--listen", "0.0.0.0:8080", "--read-key", "k", "--site", "shop=https://shop.example", "--write-key", "dev-write-key"])
                .expect_err("dev write key on 0.0.0.0")
                .to_string();
        assert!(err.starts_with("config: write_keys: the write key \"dev-write-key\" is the dev setup's"), "{err}");
    }

    #[test]
    fn bad_settings_are_named() {
        let err = Config { batch_rows: 0, ..Config::default() }.check().expect_err("zero batch");
        assert_eq!(err.to_string(), "config: batch_rows: must be greater than 0");
        assert!(load(&["--site", "shop"]).expect_err("no origins").to_string().contains("KEY=ORIGIN"));
        let err = load(&["--site", "shop=ftp://x"]).expect_err("bad origin").to_string();
        assert!(err.starts_with("config: sites: ") && err.contains("ftp://x"), "{err}");
        let err = load(&["--site", "a b=https://a.example"]).expect_err("bad key").to_string();
        assert!(err.starts_with("config: sites.key: "), "{err}");
        let err = toml::from_str::<Config>("unknown_key = 1").expect_err("unknown keys are refused");
        assert!(err.to_string().contains("unknown_key"), "{err}");
        let err = toml::from_str::<Config>("[[sites]]\nkey = \"shop\"\norigins = [\"shop.example\"]\n").expect_err("bad origin");
        assert!(err.to_string().contains("shop.example"), "{err}");
    }

    #[test]
    fn site_scrub_rules_are_read() {
        let site = |rules: &str| {
            format!("read_keys = [\"k\"]\n[[sites]]\nkey = \"shop\"\norigins = [\"https://shop.example\"]\nscrub = {rules}\n")
        };
        let config: Config = toml::from_str(&site(r#"[{ pattern = "^/team/[^/]+", replacement = "/team/:user" }]"#)).expect("parses");
        config.check().expect("a good rule");
        assert_eq!(config.sites[0].scrub, vec![ScrubRule { pattern: "^/team/[^/]+".into(), replacement: "/team/:user".into() }]);
        let err = toml::from_str::<Config>(&site(r#"[{ pattern = "x" }]"#)).expect_err("no replacement");
        assert!(err.to_string().contains("replacement"), "{err}");
    }

    /// The names are derived from the key, so none can drift from another.
    #[test]
    fn names_follow_the_key() {
        let all = settings();
        let find = |key: &str| all.iter().find(|s| s.key == key).expect("setting");
        assert_eq!(find("batch_rows").env(), "PULSE_BATCH_ROWS");
        assert_eq!(find("batch_rows").flag(), "batch-rows");
        assert_eq!(find("sites").flag(), "site");
        assert_eq!(find("read_keys").flag(), "read-key");
        assert_eq!(find("trusted_proxies").flag(), "trusted-proxy");
        assert_eq!(find("trusted_proxies").old_flag().as_deref(), Some("trusted-proxie"));
        assert_eq!(find("read_keys").old_flag(), None);
        for flag in ["--trusted-proxy", "--trusted-proxie"] {
            let c = load(&[flag, "10.0.0.0/8"]).expect("loads");
            assert_eq!(c.trusted_proxies, vec!["10.0.0.0/8".to_owned()], "{flag}");
        }
        assert_eq!(find("batch_rows").default, "20000");
        assert_eq!(find("sites").default, "demo=http://localhost:*,http://127.0.0.1:*");
        // Every default, given back as its flag, yields the default again.
        let mut argv = vec!["pulse-collector".to_owned()];
        for s in all.iter().filter(|s| !s.default.is_empty() && s.default != "none") {
            argv.push(format!("--{}={}", s.flag(), s.default));
        }
        let c = Config::load(command().try_get_matches_from(argv).expect("flags parse")).expect("loads");
        assert_eq!(c, Config::default());
    }

    /// The README's configuration table is the one derived from the declarations.
    #[test]
    fn readme_lists_every_setting() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
        let table = markdown_table();
        assert!(readme.contains(&table), "README.md's configuration table is out of date; it should read:\n\n{table}");
    }
}
