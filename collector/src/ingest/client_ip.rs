//! Who sent a beacon: the client address that the rate limits are keyed by (never stored).
//!
//! Behind proxies, the address is read from a header such as `X-Forwarded-For`, where every
//! proxy appends the address it received the request from. Only the entries appended by proxies
//! we trust mean anything: whatever is to their left was written by the client and may be any
//! text. So the client is the **right-most** address that is not a trusted proxy, walking in from
//! the socket's peer, and the header is ignored entirely when the peer itself is not trusted.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnetwork::IpNetwork;

use crate::config::{Config, ConfigError};

/// How to find the client's address in a request.
#[derive(Debug, Clone, Default)]
pub struct ClientIp {
    /// The header the proxies append to (lower case), if any.
    header: Option<String>,
    /// The proxies in front of the collector. Empty with a header: a peer on loopback or a
    /// private network is the one proxy in front; a public peer's header is ignored (it would be
    /// a client naming its own address).
    trusted: Vec<IpNetwork>,
}

/// Parses `trusted_proxies` entries: CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses.
pub fn parse_trusted(entries: &[String]) -> Result<Vec<IpNetwork>, String> {
    entries
        .iter()
        .map(|e| {
            let e = e.trim();
            e.parse::<IpNetwork>()
                .or_else(|_| e.parse::<IpAddr>().map(IpNetwork::from))
                .map_err(|_| format!("{e:?} is neither an IP address nor a CIDR range"))
        })
        .collect()
}

impl ClientIp {
    /// From `client_ip_header` and `trusted_proxies`; an entry of the list that is no address or
    /// range is refused naming the setting.
    pub fn from_config(config: &Config) -> Result<ClientIp, ConfigError> {
        let trusted = parse_trusted(&config.trusted_proxies).map_err(|why| ConfigError::Invalid { field: "trusted_proxies", why })?;
        Ok(ClientIp::new(config.client_ip_header.as_deref(), trusted))
    }

    pub fn new(header: Option<&str>, trusted: Vec<IpNetwork>) -> ClientIp {
        ClientIp { header: header.map(str::to_ascii_lowercase), trusted }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// Whether `peer` is a proxy whose header is believed: one is configured, and the peer is in
    /// `trusted_proxies` (with no list: on loopback or a private network). Its requests come from
    /// many clients, so the per-client connection cap does not apply to it.
    pub fn is_proxy(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        // With no list, a private peer is taken to be the one proxy in front (it wrote the last
        // entry); a collector reachable directly from the internet never believes the header.
        self.header.is_some() && if self.trusted.is_empty() { is_private(peer) } else { self.is_trusted(peer) }
    }

    /// The client's address: the socket's peer, or — when the peer is a trusted proxy — the
    /// right-most address of the header that is not a trusted proxy.
    pub fn of(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip().to_canonical());
        let Some(name) = self.header.as_deref() else { return peer };
        if !self.is_proxy(peer) {
            return peer;
        }
        let one_hop = self.trusted.is_empty();
        // Every line of the header, in order, as one list (proxies may add a line each).
        let entries: Vec<&str> =
            headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim).collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = parse_entry(entry) else {
                // Text a trusted proxy would not have written: stop at the last trusted hop.
                return client;
            };
            client = ip;
            if one_hop || !self.is_trusted(ip) {
                return ip;
            }
        }
        client
    }
}

/// Loopback, private (RFC 1918), unique-local and link-local addresses: where a proxy in front
/// of the collector is, when none is configured.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

/// One header entry: an address, with or without a port (`203.0.113.9:4711`, `[2001:db8::1]:80`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry.parse::<SocketAddr>().ok().map(|s| s.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append("x-forwarded-for", line.parse().expect("header"));
        }
        h
    }

    fn peer(ip: [u8; 4]) -> Option<SocketAddr> {
        Some(SocketAddr::from((ip, 5000)))
    }

    #[test]
    fn without_a_header_the_peer_is_the_client() {
        let c = ClientIp::new(None, Vec::new());
        assert_eq!(c.of(&headers(&["203.0.113.9"]), peer([127, 0, 0, 1])), IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn one_proxy_the_last_entry_is_the_client() {
        let c = ClientIp::new(Some("X-Forwarded-For"), Vec::new());
        // nginx's $proxy_add_x_forwarded_for: what the client sent, then the address nginx saw.
        let h = headers(&["1.2.3.4, 203.0.113.9"]);
        assert_eq!(c.of(&h, peer([10, 0, 0, 5])), IpAddr::from([203, 0, 113, 9]));
        assert_eq!(c.of(&HeaderMap::new(), peer([10, 0, 0, 5])), IpAddr::from([10, 0, 0, 5]));
        assert_eq!(c.of(&h, peer([198, 51, 100, 7])), IpAddr::from([198, 51, 100, 7]), "a public peer's header is its own text");
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let c = ClientIp::new(Some("x-forwarded-for"), parse_trusted(&["10.0.0.0/8".into(), "192.0.2.7".into()]).expect("valid"));
        let h = headers(&["6.6.6.6, 203.0.113.9", "192.0.2.7"]);
        assert_eq!(c.of(&h, peer([10, 1, 1, 1])), IpAddr::from([203, 0, 113, 9]), "skips the trusted hops, not the client's text");
        assert_eq!(c.of(&h, peer([198, 51, 100, 1])), IpAddr::from([198, 51, 100, 1]), "an untrusted peer wrote the header itself");
        let spoof = headers(&["garbage, 10.2.2.2"]);
        assert_eq!(c.of(&spoof, peer([10, 1, 1, 1])), IpAddr::from([10, 2, 2, 2]), "junk stops the walk at the last trusted hop");
        let ports = headers(&["[2001:db8::1]:443, 10.3.3.3:80"]);
        assert_eq!(c.of(&ports, peer([10, 1, 1, 1])), "2001:db8::1".parse::<IpAddr>().expect("valid"));
    }

    #[test]
    fn a_peer_is_a_proxy_only_when_its_header_is_believed() {
        let private = IpAddr::from([10, 0, 0, 5]);
        assert!(!ClientIp::new(None, Vec::new()).is_proxy(private), "no header: every peer is a client");
        assert!(ClientIp::new(Some("x-forwarded-for"), Vec::new()).is_proxy(private));
        assert!(!ClientIp::new(Some("x-forwarded-for"), Vec::new()).is_proxy([198, 51, 100, 7].into()));
        let listed = ClientIp::new(Some("x-forwarded-for"), parse_trusted(&["192.0.2.7".into()]).expect("valid"));
        assert!(listed.is_proxy([192, 0, 2, 7].into()));
        assert!(!listed.is_proxy(private), "with a list, only the list");
    }

    #[test]
    fn bad_entries_are_named() {
        assert!(parse_trusted(&["10.0.0.0/33".into()]).expect_err("refused").contains("10.0.0.0/33"));
        assert_eq!(parse_trusted(&["::1".into(), "fd00::/8".into()]).expect("valid").len(), 2);
    }
}
