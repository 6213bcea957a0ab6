//! Sites and their admission rules: which site keys exist and which origins may send for each.
//! (Their quotas are [`crate::ingest::quota`]'s.)

use std::collections::HashMap;

use crate::config::{Config, ConfigError};
use crate::ingest::scrub::Scrubber;
use crate::origin::OriginPattern;

/// A configured site.
#[derive(Debug)]
pub struct Site {
    pub key: String,
    origins: Vec<OriginPattern>,
    /// Releases matching it count as declared (`release_pattern`; [`crate::releases`]).
    pub release_pattern: Option<regex::Regex>,
    /// What is cut from its URLs before they are stored.
    pub scrub: Scrubber,
}

impl Site {
    /// Whether a request with this `Origin` header (or none) may send for the site.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(origin) => self.origins.iter().any(|p| p.matches(origin)),
        }
    }
}

/// All sites.
#[derive(Debug)]
pub struct Sites {
    sites: HashMap<String, Site>,
}

impl Sites {
    /// Builds the registry from the configured sites, compiling each one's release pattern and
    /// scrub rules; a bad one is refused naming the site and the field.
    pub fn from_config(config: &Config) -> Result<Sites, ConfigError> {
        let mut sites = HashMap::new();
        for s in &config.sites {
            let bad = |field: &'static str, why: String| ConfigError::Invalid { field, why: format!("site {}: {why}", s.key) };
            let release_pattern = s
                .release_pattern
                .as_deref()
                .map(|p| regex::Regex::new(p).map_err(|e| bad("sites.release_pattern", format!("{p:?} is not a regular expression: {e}"))))
                .transpose()?;
            let scrub = Scrubber::new(&s.scrub).map_err(|why| bad("sites.scrub", why))?;
            sites.insert(s.key.clone(), Site { key: s.key.clone(), origins: s.origins.clone(), release_pattern, scrub });
        }
        Ok(Sites { sites })
    }

    pub fn get(&self, key: &str) -> Option<&Site> {
        self.sites.get(key)
    }

    /// Whether any site accepts this origin (for CORS preflights, which carry no site key).
    pub fn any_allows(&self, origin: &str) -> bool {
        self.sites.values().any(|s| s.allows(Some(origin)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_site: &str) -> Config {
        toml::from_str(&format!("[[sites]]\nkey = \"shop\"\norigins = [\"https://shop.example\"]\n{toml_site}\n")).expect("TOML site")
    }

    #[test]
    fn release_patterns_are_checked() {
        let site = |pattern: &str| Sites::from_config(&config(&format!("release_pattern = {pattern:?}")));
        site("^\\d+\\.\\d+\\.\\d+$").expect("a valid pattern");
        let err = site("^(\\d+").expect_err("unclosed group").to_string();
        assert!(err.starts_with("config: sites.release_pattern: site shop: \"^(\\\\d+\" is not a regular expression"), "{err}");
    }

    #[test]
    fn a_bad_scrub_pattern_is_named() {
        let site = |rules: &str| Sites::from_config(&config(&format!("scrub = {rules}")));
        site(r#"[{ pattern = "^/team/[^/]+", replacement = "/team/:user" }]"#).expect("a good rule");
        let err = site(r#"[{ pattern = "ok", replacement = "" }, { pattern = "/(x", replacement = ":x" }]"#)
            .expect_err("a bad pattern")
            .to_string();
        assert!(err.starts_with(r#"config: sites.scrub: site shop: scrub[1]: pattern "/(x" is not a regular expression"#), "{err}");
    }
}
