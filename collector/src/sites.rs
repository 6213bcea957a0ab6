//! Sites and their admission rules: which site keys exist, which origins may send for each, and
//! the token buckets (per client IP, per site) that turn floods into 429s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{Config, SiteConfig};
use crate::origin::OriginPattern;

/// A configured site.
#[derive(Debug)]
pub struct Site {
    pub key: String,
    origins: Vec<OriginPattern>,
    limiter: governor::DefaultDirectRateLimiter,
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

/// Why a request was throttled, and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub scope: &'static str,
    pub retry_after: Duration,
}

/// All sites and the rate limiters.
#[derive(Debug)]
pub struct Sites {
    sites: HashMap<String, Site>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
}

fn quota(per_second: u32) -> Quota {
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Quota::per_second(rate).allow_burst(burst)
}

impl Sites {
    /// Builds the registry from a checked [`Config`].
    pub fn new(config: &Config) -> Sites {
        let site = |s: &SiteConfig| Site {
            key: s.key.clone(),
            origins: s.origins.clone(),
            limiter: RateLimiter::direct(quota(s.rate_per_second.unwrap_or(config.site_rate_per_second))),
        };
        Sites {
            sites: config.sites.iter().map(|s| (s.key.clone(), site(s))).collect(),
            per_ip: RateLimiter::keyed(quota(config.ip_rate_per_second)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Site> {
        self.sites.get(key)
    }

    /// Whether any site accepts this origin (for CORS preflights, which carry no site key).
    pub fn any_allows(&self, origin: &str) -> bool {
        self.sites.values().any(|s| s.allows(Some(origin)))
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Throttled> {
        self.per_ip
            .check_key(&ip)
            .map_err(|not_until| Throttled { scope: "ip", retry_after: not_until.wait_time_from(DefaultClock::default().now()) })
    }

    pub fn check_site(&self, site: &Site) -> Result<(), Throttled> {
        site.limiter
            .check()
            .map_err(|not_until| Throttled { scope: "site", retry_after: not_until.wait_time_from(DefaultClock::default().now()) })
    }

    /// Forgets IPs whose buckets are full again, so the per-IP table does not grow forever.
    pub fn forget_idle_clients(&self) {
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_throttle_after_the_burst() {
        let config = Config { ip_rate_per_second: 2, ..Config::default() };
        let sites = Sites::new(&config);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let allowed = (0..10).filter(|_| sites.check_ip(ip).is_ok()).count();
        assert_eq!(allowed, 4, "burst is twice the rate");
        let throttled = sites.check_ip(ip).expect_err("throttled");
        assert_eq!(throttled.scope, "ip");
        assert!(throttled.retry_after > Duration::ZERO);
        assert!(sites.check_ip([10, 0, 0, 2].into()).is_ok(), "other clients are not affected");
    }
}
