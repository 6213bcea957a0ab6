//! Enrichment: what the collector adds to each beacon from the request itself — browser / OS /
//! device class from the User-Agent, country from a trusted header or a GeoIP database, and
//! clock-skew-corrected event times. (The client's address, for the quotas only, is
//! [`crate::ingest::client_ip`]'s.)

use std::net::IpAddr;
use std::path::Path;

use axum::http::HeaderMap;

/// What the User-Agent says about the visitor's software and device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub browser: String,
    pub os: String,
    /// `desktop`, `mobile`, `tablet`, `bot` or `other`.
    pub device: &'static str,
}

/// Parses a User-Agent with woothee (a maintained UA database) and classifies the device.
pub fn client(user_agent: Option<&str>) -> Client {
    let ua = user_agent.unwrap_or("");
    let Some(parsed) = woothee::parser::Parser::new().parse(ua) else {
        return Client { browser: "unknown".into(), os: "unknown".into(), device: "other" };
    };
    // woothee files tablets under "smartphone"; iPads and Android without "Mobile" are tablets
    // (Android's own UA convention: phones carry "Mobile", tablets do not). iPadOS in its default
    // desktop mode sends a Mac UA and is counted as desktop: the UA alone cannot tell them apart.
    let tablet = ua.contains("iPad") || (ua.contains("Android") && !ua.contains("Mobile")) || ua.contains("Tablet");
    let device = match parsed.category {
        "pc" => "desktop",
        "smartphone" | "mobilephone" if tablet => "tablet",
        "smartphone" | "mobilephone" => "mobile",
        "crawler" => "bot",
        _ => "other",
    };
    let known = |s: &str| if s.is_empty() || s == woothee::woothee::VALUE_UNKNOWN { "unknown".to_owned() } else { s.to_owned() };
    Client { browser: known(parsed.name), os: known(parsed.os), device }
}

/// Where countries come from.
#[derive(Debug, Default)]
pub struct Geo {
    header: Option<String>,
    database: Option<maxminddb::Reader<Vec<u8>>>,
}

impl Geo {
    pub fn new(header: Option<String>, database: Option<&Path>) -> Result<Geo, maxminddb::MaxMindDbError> {
        let database = database.map(maxminddb::Reader::open_readfile).transpose()?;
        Ok(Geo { header: header.map(|h| h.to_ascii_lowercase()), database })
    }

    /// ISO 3166-1 alpha-2 code, upper case, or empty when unknown.
    pub fn country(&self, headers: &HeaderMap, ip: IpAddr) -> String {
        if let Some(code) = self.header.as_deref().and_then(|h| headers.get(h)).and_then(|v| v.to_str().ok()) {
            let code = code.trim();
            // CDNs use XX / T1 for unknown and Tor; keep only real two-letter codes.
            if code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()) && !code.eq_ignore_ascii_case("XX") {
                return code.to_ascii_uppercase();
            }
        }
        let Some(db) = &self.database else {
            return String::new();
        };
        db.lookup(ip)
            .ok()
            .and_then(|result| result.decode::<maxminddb::geoip2::Country>().ok().flatten())
            .and_then(|record| record.country.iso_code.map(str::to_owned))
            .unwrap_or_default()
    }
}

/// Corrects a client timestamp for the client's clock skew: the beacon says when it was sent by
/// the client's clock (`sent_at`), we know when it arrived by ours, and the gap between a metric's
/// `at` and `sent_at` is the same on both clocks. Network delay is ignored (well under a second).
pub fn corrected_time_ms(at: f64, sent_at: f64, received_ms: i64) -> i64 {
    received_ms - (sent_at - at).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_DESKTOP: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const ANDROID_PHONE: &str =
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
    const ANDROID_TABLET: &str =
        "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const FIREFOX_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
    const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    #[test]
    fn user_agents_are_classified() {
        let c = client(Some(CHROME_DESKTOP));
        assert_eq!((c.browser.as_str(), c.os.as_str(), c.device), ("Chrome", "Linux", "desktop"));
        let c = client(Some(IPHONE));
        assert_eq!((c.browser.as_str(), c.os.as_str(), c.device), ("Safari", "iPhone", "mobile"));
        assert_eq!(client(Some(ANDROID_PHONE)).device, "mobile");
        assert_eq!(client(Some(ANDROID_TABLET)).device, "tablet");
        let c = client(Some(FIREFOX_WIN));
        assert_eq!((c.browser.as_str(), c.device), ("Firefox", "desktop"));
        assert_eq!(client(Some(GOOGLEBOT)).device, "bot");
        assert_eq!(client(None), Client { browser: "unknown".into(), os: "unknown".into(), device: "other" });
    }

    #[test]
    fn country_from_header() {
        let geo = Geo::new(Some("CF-IPCountry".into()), None).expect("no database to open");
        let ip = IpAddr::from([203, 0, 113, 9]);
        let mut h = HeaderMap::new();
        h.insert("cf-ipcountry", "de".parse().expect("header"));
        assert_eq!(geo.country(&h, ip), "DE");
        h.insert("cf-ipcountry", "XX".parse().expect("header"));
        assert_eq!(geo.country(&h, ip), "");
        h.insert("cf-ipcountry", "'; DROP".parse().expect("header"));
        assert_eq!(geo.country(&h, ip), "");
        assert!(Geo::new(None, Some(Path::new("/nonexistent.mmdb"))).is_err(), "a missing database is an error at start");
    }

    #[test]
    fn skew_correction() {
        // Client clock 1 h fast: sent_at = 10:00:05 client time, metric at 10:00:00 client time,
        // received 09:00:05 server time → metric happened at 09:00:00 server time.
        let hour = 3_600_000;
        let received = 1_800_000_000_000_i64;
        assert_eq!(corrected_time_ms((received + hour - 5_000) as f64, (received + hour) as f64, received), received - 5_000);
    }
}
