//! What a page passes to `init`, checked once: a wrong option is a clear `Error` naming it, never
//! a silent default or a crash later.
//!
//! Options (camelCase, as JavaScript users write them): `endpoint` and `site` (required),
//! `release`, `env`, `sampleRate` (0..=1, default 1), `batchSize` (1..=500, default 50),
//! `flushInterval` (ms, 1000..=600000, default 30000), `ignoreUrls` (strings matched as substrings
//! of the absolute URL, or `RegExp`s), `routes` (path templates such as `/products/:slug` or
//! `/docs/*`), `beforeSend` (function), `trackFetch` and `trackMeasures` (default true),
//! `softNavigations` (default false).

use crate::host::Kept;
use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use pulse_protocol::limits::{MAX_METRICS_PER_BEACON, MAX_SHORT_LEN};
use pulse_protocol::validate::has_control;

use crate::host::{self, Js, Kind};

pub const DEFAULT_BATCH_SIZE: usize = 50;
pub const DEFAULT_FLUSH_INTERVAL_MS: u32 = 30_000;
/// Every option, with the kind of value it takes (see [`host::kind`]).
const OPTIONS: [(&str, u32); 13] = [
    ("endpoint", STRING),
    ("site", STRING),
    ("release", STRING),
    ("env", STRING),
    ("sampleRate", NUMBER),
    ("batchSize", NUMBER),
    ("flushInterval", NUMBER),
    ("ignoreUrls", ARRAY),
    ("routes", ARRAY),
    ("beforeSend", FUNCTION),
    ("trackFetch", BOOLEAN),
    ("trackMeasures", BOOLEAN),
    ("softNavigations", BOOLEAN),
];
const BOOLEAN: u32 = 2;
const NUMBER: u32 = 3;
const STRING: u32 = 4;
const FUNCTION: u32 = 5;
const ARRAY: u32 = 6;

/// A URL the fetch wrapper does not time: a substring of the absolute URL, or a `RegExp`.
#[derive(Debug)]
pub enum Ignore {
    Contains(String),
    Matches(Kept),
}

#[derive(Debug)]
pub struct Config {
    /// Absolute beacon URL (`https://rum.example.com/v1/beacon`), resolved against the page.
    pub endpoint: String,
    /// The page's origin (`https://shop.example`): calls to it are routed by path.
    pub origin: String,
    /// The document's base URL is on that origin (no `<base href>` elsewhere): a path such as
    /// `/api/cart` is then a call to it, known without parsing.
    pub base_same_origin: bool,
    pub site: String,
    pub release: Option<String>,
    pub env: Option<String>,
    pub sample_rate: f64,
    pub batch_size: usize,
    pub flush_interval_ms: u32,
    pub ignore: Vec<Ignore>,
    pub routes: Vec<String>,
    pub before_send: Option<Kept>,
    pub track_fetch: bool,
    pub track_measures: bool,
    /// Each soft navigation of a single-page app is a page view of its own (web-vitals'
    /// `reportSoftNavs`), where the browser reports them.
    pub soft_navigations: bool,
}

/// Why `init` refused its options: the option and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub option: String,
    pub problem: &'static str,
}

impl ConfigError {
    fn new(option: &str, problem: &'static str) -> ConfigError {
        ConfigError { option: option.to_owned(), problem }
    }

    pub fn message(&self) -> String {
        let mut out = String::from("pulse.init: `");
        out.push_str(&self.option);
        out.push_str("` ");
        out.push_str(self.problem);
        out
    }
}

impl Default for Config {
    /// The defaults of every optional option (`endpoint` and `site` are required, so empty here).
    fn default() -> Config {
        Config {
            endpoint: String::new(),
            origin: String::new(),
            base_same_origin: true,
            site: String::new(),
            release: None,
            env: None,
            sample_rate: 1.0,
            batch_size: DEFAULT_BATCH_SIZE,
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
            ignore: Vec::new(),
            routes: Vec::new(),
            before_send: None,
            track_fetch: true,
            track_measures: true,
            soft_navigations: false,
        }
    }
}

impl Config {
    /// Reads and checks the options object.
    pub fn from_js(options: Js) -> Result<Config, ConfigError> {
        if !matches!(host::kind_of(options), Kind::Object) {
            return Err(ConfigError::new("options", "must be an object such as { endpoint: '/v1/beacon', site: 'my-site' }"));
        }
        for pair in host::items(host::pairs(options)) {
            let key = host::string(host::at(pair, 0));
            if !OPTIONS.iter().any(|(name, _)| *name == key) {
                return Err(ConfigError { option: key, problem: "is not an option (see PulseConfig in the types)" });
            }
        }
        // Every option is missing or of its kind (false and true are kinds 1 and 2); numbers are
        // finite. One loop, so one way out for all of them.
        let values: [Js; 13] = OPTIONS.map(|(name, _)| host::get(options, name));
        for ((name, want), value) in OPTIONS.iter().zip(&values) {
            let kind = host::kind(*value);
            let fits = kind == 0 || kind == *want || (*want == BOOLEAN && kind == 1);
            if !fits || (*want == NUMBER && kind != 0 && !host::value(*value).is_finite()) {
                let problem = match *want {
                    STRING => "must be a string",
                    NUMBER => "must be a finite number",
                    BOOLEAN => "must be true or false",
                    ARRAY => "must be an array",
                    _ => "must be a function",
                };
                return Err(ConfigError::new(name, problem));
            }
        }
        let [endpoint, site, release, env, rate, batch, interval, ignore, routes, before_send, track_fetch, track_measures, soft] = values;
        let text = |v: Js| (host::kind(v) != 0).then(|| host::string(v));
        let endpoint = text(endpoint).ok_or_else(|| ConfigError::new("endpoint", "is required: the collector's beacon URL"))?;
        let origin = host::text(host::LOCATION, "origin").unwrap_or_default();
        let mut config = Config {
            endpoint: host::text(host::url(&endpoint), "href").ok_or_else(|| ConfigError::new("endpoint", "is not a valid URL"))?,
            base_same_origin: host::is(host::url(""), "origin", &origin),
            origin,
            site: text(site).ok_or_else(|| ConfigError::new("site", "is required: the site key"))?,
            release: text(release),
            env: text(env),
            before_send: (host::kind(before_send) != 0).then(|| host::keep(before_send)),
            track_fetch: host::kind(track_fetch) != 1,
            track_measures: host::kind(track_measures) != 1,
            soft_navigations: host::kind(soft) == 2,
            ..Config::default()
        };
        let number = |v: Js| Some(host::value(v)).filter(|n| !n.is_nan());
        if let Some(rate) = number(rate) {
            config.sample_rate = rate;
        }
        if let Some(batch) = number(batch) {
            // Checked on the raw number so 0.5 batches are refused, not rounded.
            if batch != (batch as i64) as f64 {
                return Err(ConfigError::new("batchSize", "must be a whole number from 1 to 500"));
            }
            config.batch_size = batch as usize;
        }
        if let Some(interval) = number(interval) {
            config.flush_interval_ms = interval as u32;
        }
        for item in host::items(ignore) {
            config.ignore.push(
                match host::kind_of(item) {
                    Kind::String => Some(host::string(item)).filter(|s| !s.is_empty()).map(Ignore::Contains),
                    Kind::RegExp => Some(Ignore::Matches(host::keep(item))),
                    _ => None,
                }
                .ok_or_else(|| ConfigError::new("ignoreUrls", "must hold non-empty strings or RegExps"))?,
            );
        }
        for item in host::items(routes) {
            if !matches!(host::kind_of(item), Kind::String) {
                return Err(ConfigError::new("routes", "must hold strings"));
            }
            config.routes.push(host::string(item));
        }
        config.check()?;
        Ok(config)
    }

    /// Whether `url` (absolute) is on the ignore list entry `ignore`.
    pub fn ignores(&self, ignore: &Ignore, url: &str) -> bool {
        match ignore {
            Ignore::Contains(part) => pulse_protocol::route::find(url, part).is_some(),
            Ignore::Matches(re) => host::test(re.js(), url),
        }
    }

    /// The range checks, separate from reading JavaScript values so they are tested natively.
    pub fn check(&self) -> Result<(), ConfigError> {
        // The wire format's rule: a key the collector would refuse on every beacon fails here, loudly.
        pulse_protocol::validate::site_key(&self.site).map_err(|rule| ConfigError::new("site", rule))?;
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(ConfigError::new("sampleRate", "must be a number from 0 to 1"));
        }
        if !(1..=MAX_METRICS_PER_BEACON).contains(&self.batch_size) {
            return Err(ConfigError::new("batchSize", "must be a whole number from 1 to 500"));
        }
        if !(1_000..=600_000).contains(&self.flush_interval_ms) {
            return Err(ConfigError::new("flushInterval", "must be milliseconds from 1000 to 600000"));
        }
        for (name, value) in [("release", &self.release), ("env", &self.env)] {
            // The collector refuses every beacon whose release or env breaks these (a trailing
            // newline read from a VERSION file), and sendBeacon would hide that.
            if value.as_deref().is_some_and(|v| v.is_empty() || v.len() > MAX_SHORT_LEN || has_control(v)) {
                return Err(ConfigError::new(name, "must be 1 to 256 characters, none of them control characters"));
            }
        }
        if let Some(bad) = self.routes.iter().find(|r| !r.starts_with("/")) {
            return Err(ConfigError {
                option: "routes".to_owned() + " (" + bad + ")",
                problem: "must hold path templates starting with /",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn config() -> Config {
        Config { endpoint: "https://rum.example/v1/beacon".into(), site: "shop".into(), ..Config::default() }
    }

    #[test]
    fn defaults_pass() {
        assert_eq!(config().check(), Ok(()));
    }

    #[test]
    fn each_bad_value_names_its_option() {
        type Break = fn(&mut Config);
        let cases: [(Break, &str); 9] = [
            (|c| c.sample_rate = 1.5, "sampleRate"),
            (|c| c.sample_rate = -0.1, "sampleRate"),
            (|c| c.batch_size = 0, "batchSize"),
            (|c| c.batch_size = 501, "batchSize"),
            (|c| c.flush_interval_ms = 10, "flushInterval"),
            (|c| c.site = "my site".into(), "site"),
            (|c| c.release = Some(String::new()), "release"),
            (|c| c.release = Some("1.4.2\n".into()), "release"),
            (|c| c.env = Some("prod\tuction".into()), "env"),
        ];
        for (break_it, option) in cases {
            let mut c = config();
            break_it(&mut c);
            assert_eq!(c.check().map_err(|e| e.option), Err(option.to_owned()));
        }
        let mut c = config();
        c.routes = vec!["products/:id".into()];
        assert!(c.check().is_err_and(|e| e.message().contains("products/:id")));
    }
}
