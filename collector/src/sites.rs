//! Sites and their admission rules: which site keys exist and which origins may send for each.
//! (Their quotas are [`crate::ingest::quota`]'s.)

use std::collections::HashMap;

use crate::config::{Config, SiteConfig};
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
    /// Builds the registry from a checked [`Config`].
    pub fn new(config: &Config) -> Sites {
        // The patterns compiled when the configuration was checked.
        let site = |s: &SiteConfig| Site {
            key: s.key.clone(),
            origins: s.origins.clone(),
            release_pattern: s.release_pattern.as_deref().and_then(|p| regex::Regex::new(p).ok()),
            scrub: Scrubber::new(&s.scrub).unwrap_or_else(|e| unreachable!("checked by Config::check: {e}")),
        };
        Sites { sites: config.sites.iter().map(|s| (s.key.clone(), site(s))).collect() }
    }

    pub fn get(&self, key: &str) -> Option<&Site> {
        self.sites.get(key)
    }

    /// Whether any site accepts this origin (for CORS preflights, which carry no site key).
    pub fn any_allows(&self, origin: &str) -> bool {
        self.sites.values().any(|s| s.allows(Some(origin)))
    }
}
