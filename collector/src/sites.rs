//! Sites and their admission rules: which site keys exist, which origins may send for each, and
//! the token buckets (per client IP, per site) that turn floods into 429s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{Config, SiteConfig};

/// An allowed origin: `scheme://host[:port]`, where the port may be `*` (any port) and the host
/// may start with `*.` (any subdomain, not the bare domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    host: Host,
    port: Port,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Exact(String),
    /// `*.example.com`: stores `.example.com`.
    Subdomains(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Port {
    Default,
    Any,
    Exact(u16),
}

impl OriginPattern {
    pub fn parse(pattern: &str) -> Result<OriginPattern, String> {
        let bad = || format!("{pattern:?} is not an origin like https://shop.example, http://localhost:* or https://*.shop.example");
        let (scheme, rest) = pattern.split_once("://").ok_or_else(bad)?;
        if scheme != "http" && scheme != "https" {
            return Err(bad());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, "*")) => (host, Port::Any),
            Some((host, port)) => (host, Port::Exact(port.parse().map_err(|_| bad())?)),
            None => (rest, Port::Default),
        };
        if host.is_empty() || host.contains('/') {
            return Err(bad());
        }
        let host = match host.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => Host::Subdomains(suffix.to_ascii_lowercase()),
            Some(_) => return Err(bad()),
            None => Host::Exact(host.to_ascii_lowercase()),
        };
        Ok(OriginPattern { scheme: scheme.to_owned(), host, port })
    }

    /// Whether an `Origin` header value matches.
    pub fn matches(&self, origin: &str) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(&self.scheme) {
            return false;
        }
        // IPv6 hosts (`[::1]:8080`) keep their brackets; the port follows the last ':' after them.
        let (host, port) = match rest.rfind(':').filter(|&i| !rest[i..].contains(']')) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<u16>().ok()),
            None => (rest, None),
        };
        let host = host.to_ascii_lowercase();
        let host_ok = match &self.host {
            Host::Exact(h) => *h == host,
            Host::Subdomains(suffix) => host.ends_with(suffix.as_str()) && host.len() > suffix.len(),
        };
        let port_ok = match self.port {
            Port::Any => true,
            Port::Default => port.is_none(),
            Port::Exact(p) => port == Some(p),
        };
        host_ok && port_ok
    }
}

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
            // `Config::check` has parsed every pattern already.
            origins: s.origins.iter().filter_map(|o| OriginPattern::parse(o).ok()).collect(),
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
    fn origin_patterns() {
        let any_port = OriginPattern::parse("http://localhost:*").expect("valid");
        assert!(any_port.matches("http://localhost:5173"));
        assert!(any_port.matches("http://localhost"));
        assert!(!any_port.matches("https://localhost:5173"));
        assert!(!any_port.matches("http://localhost.evil.example:80"));

        let sub = OriginPattern::parse("https://*.shop.example").expect("valid");
        assert!(sub.matches("https://www.shop.example"));
        assert!(sub.matches("https://A.B.Shop.Example"));
        assert!(!sub.matches("https://shop.example"));
        assert!(!sub.matches("https://evilshop.example"));

        let exact = OriginPattern::parse("https://shop.example:8443").expect("valid");
        assert!(exact.matches("https://shop.example:8443"));
        assert!(!exact.matches("https://shop.example"));

        for bad in ["shop.example", "ftp://x", "https://", "https://*shop.example", "http://x:port"] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

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
