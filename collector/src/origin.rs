//! Origin patterns of the sites' allow-lists, parsed once when the configuration is read.

use std::fmt;

use serde::Deserialize;

/// An allowed origin: `scheme://host[:port]`, where the port may be `*` (any port) and the host
/// may start with `*.` (any subdomain, not the bare domain).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct OriginPattern {
    text: String,
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
        Ok(OriginPattern { text: pattern.to_owned(), scheme: scheme.to_owned(), host, port })
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

impl TryFrom<String> for OriginPattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        OriginPattern::parse(&text)
    }
}

/// The pattern as it was written.
impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
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
        assert_eq!(sub.to_string(), "https://*.shop.example");

        let exact = OriginPattern::parse("https://shop.example:8443").expect("valid");
        assert!(exact.matches("https://shop.example:8443"));
        assert!(!exact.matches("https://shop.example"));

        for bad in ["shop.example", "ftp://x", "https://", "https://*shop.example", "http://x:port"] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
