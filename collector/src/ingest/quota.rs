//! Quotas in the units that cost: beacons, metrics (rows) and bytes, per client and per site.
//!
//! A beacon's price is what it costs us downstream, so one client (or one site) is limited in all
//! three units at once: 500 tiny beacons a second and 20 huge ones a second are both floods. Each
//! unit is a token bucket kept as GCRA (the generic cell rate algorithm): one "theoretical arrival
//! time" per unit, which a request of cost `n` pushes `n` emission intervals forward; the request
//! passes while that time is at most `burst` intervals ahead of now.
//!
//! Written here rather than with `governor` because (1) a beacon is checked against its three
//! buckets together and charged only if all three allow it (a beacon refused for its bytes spends
//! no beacon token); (2) the table of clients has a hard memory cap: past it, new clients share a
//! fixed set of overflow buckets instead of growing the table (a million spoofed or IPv6
//! addresses cost at most the cap); (3) `now` is a parameter, so tests drive time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Config;

/// Why a request was throttled, and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// `ip` or `site`.
    pub scope: &'static str,
    /// The unit whose bucket is empty: `beacons`, `metrics` or `bytes`.
    pub unit: &'static str,
    pub retry_after: Duration,
}

/// What one request costs, in each unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub beacons: u64,
    pub metrics: u64,
    pub bytes: u64,
}

impl Cost {
    fn units(self) -> [u64; 3] {
        [self.beacons, self.metrics, self.bytes]
    }
}

const UNITS: [&str; 3] = ["beacons", "metrics", "bytes"];

/// Sustained rates per second of each unit; the burst is twice the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub beacons: u64,
    pub metrics: u64,
    pub bytes: u64,
}

/// How far ahead of now a bucket's arrival time may run, ns: a burst of twice the rate is two
/// seconds' worth of units, whatever the unit.
const TOLERANCE: f64 = 2e9;

/// The three buckets' parameters, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Time one unit takes to earn back.
    interval: [f64; 3],
}

impl Limits {
    fn new(rates: Rates) -> Limits {
        Limits { interval: [rates.beacons, rates.metrics, rates.bytes].map(|r| 1e9 / r.max(1) as f64) }
    }

    /// The arrival times after admitting `cost` at `now`, or which unit refuses and for how long.
    fn admit(&self, tat: &[u64; 3], cost: Cost, now: u64) -> Result<[u64; 3], (usize, Duration)> {
        let mut next = *tat;
        for (i, n) in cost.units().into_iter().enumerate() {
            if n == 0 {
                continue;
            }
            let start = tat[i].max(now) as f64;
            let after = start + n as f64 * self.interval[i];
            let ahead = after - now as f64;
            if ahead > TOLERANCE {
                let wait = (ahead - TOLERANCE).min(3.6e12);
                return Err((i, Duration::from_nanos(wait as u64)));
            }
            next[i] = after as u64;
        }
        Ok(next)
    }
}

/// Buckets keyed by client address, with a memory cap.
#[derive(Debug)]
pub struct ClientBuckets {
    limits: Limits,
    cap: usize,
    table: Mutex<ClientTable>,
    /// Requests answered from the shared overflow buckets because the table was full.
    pub overflowed: AtomicU64,
}

#[derive(Debug)]
struct ClientTable {
    clients: HashMap<u128, [u64; 3]>,
    /// Shared by clients that arrive while the table is full, by a hash of their address.
    overflow: Vec<[u64; 3]>,
    last_sweep: Option<u64>,
}

/// Overflow buckets: enough that one flood's addresses rarely share with a real visitor's, few
/// enough to cost nothing (96 KiB).
const OVERFLOW_SLOTS: usize = 4096;
/// Bytes one client costs in the table: key, three arrival times, and the hash table's control
/// byte, at its load factor of 7/8.
const CLIENT_BYTES: usize = (16 + 24) * 8 / 7 + 1;

/// The key a client is limited by: its IPv4 address, or the /64 of its IPv6 address (one
/// subscriber usually holds a whole /64, and rotating through it must not escape the limit).
pub fn client_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) | (0xffff << 32),
        IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 64) - 1),
    }
}

impl ClientBuckets {
    pub fn new(rates: Rates, cap: usize) -> ClientBuckets {
        ClientBuckets {
            limits: Limits::new(rates),
            cap: cap.max(1),
            table: Mutex::new(ClientTable { clients: HashMap::new(), overflow: vec![[0; 3]; OVERFLOW_SLOTS], last_sweep: None }),
            overflowed: AtomicU64::new(0),
        }
    }

    /// Charges `cost` to the client at `ip` if each of its buckets allows it.
    pub fn charge(&self, ip: IpAddr, cost: Cost, now: u64) -> Result<(), (usize, Duration)> {
        let key = client_key(ip);
        // A panic under the lock leaves the buckets as they were: keep limiting with them.
        let mut table = self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let table = &mut *table;
        if let Some(tat) = table.clients.get_mut(&key) {
            *tat = self.limits.admit(tat, cost, now)?;
            return Ok(());
        }
        if table.clients.len() >= self.cap {
            // At most one sweep a second: forget clients whose buckets are full again (they
            // would start from a full bucket anyway).
            if table.last_sweep.is_none_or(|at| now.saturating_sub(at) >= 1_000_000_000) {
                table.last_sweep = Some(now);
                table.clients.retain(|_, tat| tat.iter().any(|&t| t > now));
            }
            if table.clients.len() >= self.cap {
                self.overflowed.fetch_add(1, Ordering::Relaxed);
                let slot = overflow_slot(key);
                let tat = &mut table.overflow[slot];
                *tat = self.limits.admit(tat, cost, now)?;
                return Ok(());
            }
        }
        let tat = self.limits.admit(&[0; 3], cost, now)?;
        table.clients.insert(key, tat);
        Ok(())
    }

    /// Clients in the table.
    pub fn len(&self) -> usize {
        self.table.lock().map_or(0, |t| t.clients.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory the table holds, bytes (its capacity, not just what is in use).
    pub fn memory_bytes(&self) -> usize {
        self.table.lock().map_or(0, |t| t.clients.capacity() * CLIENT_BYTES + t.overflow.len() * 24)
    }

    /// Forgets clients whose buckets are full again, and gives the memory back.
    pub fn forget_idle(&self, now: u64) {
        if let Ok(mut table) = self.table.lock() {
            table.clients.retain(|_, tat| tat.iter().any(|&t| t > now));
            table.clients.shrink_to_fit();
        }
    }
}

fn overflow_slot(key: u128) -> usize {
    use std::hash::Hasher;
    // A fixed hash is enough: the slot only decides which overflow bucket a client shares.
    let mut h = std::hash::DefaultHasher::new();
    h.write_u128(key);
    (h.finish() % OVERFLOW_SLOTS as u64) as usize
}

/// Every quota of the collector: per client IP and per site.
#[derive(Debug)]
pub struct Quotas {
    epoch: Instant,
    pub clients: ClientBuckets,
    /// Requests per client to every route but ingest (reads, health, metrics, static files).
    pub reads: ClientBuckets,
    sites: HashMap<String, (Limits, Mutex<[u64; 3]>)>,
}

impl Quotas {
    pub fn new(config: &Config) -> Quotas {
        let sites = config
            .sites
            .iter()
            .map(|s| {
                let rates = Rates {
                    beacons: u64::from(s.rate_per_second.unwrap_or(config.site_rate_per_second)),
                    metrics: s.metrics_per_second.unwrap_or(config.site_metrics_per_second),
                    bytes: s.bytes_per_second.unwrap_or(config.site_bytes_per_second),
                };
                (s.key.clone(), (Limits::new(rates), Mutex::new([0; 3])))
            })
            .collect();
        let client_rates = Rates {
            beacons: u64::from(config.ip_rate_per_second),
            metrics: config.ip_metrics_per_second,
            bytes: config.ip_bytes_per_second,
        };
        // Only the first unit is charged for reads; the others never run out.
        let read_rates = Rates { beacons: u64::from(config.ip_read_rate_per_second), metrics: 1, bytes: 1 };
        Quotas {
            epoch: Instant::now(),
            clients: ClientBuckets::new(client_rates, config.rate_limit_max_clients),
            reads: ClientBuckets::new(read_rates, config.rate_limit_max_clients),
            sites,
        }
    }

    /// Nanoseconds since the quotas were made: the clock the buckets run on.
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn charge_client(&self, ip: IpAddr, cost: Cost, now: u64) -> Result<(), Throttled> {
        self.clients.charge(ip, cost, now).map_err(|(unit, retry_after)| Throttled { scope: "ip", unit: UNITS[unit], retry_after })
    }

    /// Charges one request to a route other than ingest to the client at `ip`; `Err` says when
    /// to come back.
    pub fn charge_read(&self, ip: IpAddr, now: u64) -> Result<(), Duration> {
        self.reads.charge(ip, Cost { beacons: 1, metrics: 0, bytes: 0 }, now).map_err(|(_, retry_after)| retry_after)
    }

    /// Charges a site (one that validated: junk with a valid key does not spend its visitors'
    /// tokens). Unknown sites are not limited here: they never get this far.
    pub fn charge_site(&self, site: &str, cost: Cost, now: u64) -> Result<(), Throttled> {
        let Some((limits, tat)) = self.sites.get(site) else { return Ok(()) };
        let mut tat = tat.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *tat = limits.admit(&tat, cost, now).map_err(|(unit, retry_after)| Throttled { scope: "site", unit: UNITS[unit], retry_after })?;
        Ok(())
    }

    /// Hourly: forgets idle clients.
    pub fn forget_idle_clients(&self) {
        self.clients.forget_idle(self.now());
        self.reads.forget_idle(self.now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn rates(beacons: u64, metrics: u64, bytes: u64) -> Rates {
        Rates { beacons, metrics, bytes }
    }

    fn beacon(metrics: u64, bytes: u64) -> Cost {
        Cost { beacons: 1, metrics, bytes }
    }

    #[test]
    fn buckets_throttle_after_the_burst_and_refill_with_time() {
        let buckets = ClientBuckets::new(rates(2, 1_000, 1_000_000), 100);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let allowed = (0..10).filter(|_| buckets.charge(ip, beacon(1, 10), 0).is_ok()).count();
        assert_eq!(allowed, 4, "burst is twice the rate");
        let (unit, wait) = buckets.charge(ip, beacon(1, 10), 0).expect_err("throttled");
        assert_eq!(UNITS[unit], "beacons");
        assert_eq!(wait, Duration::from_millis(500), "one beacon earns back in half a second");
        assert!(buckets.charge([10, 0, 0, 2].into(), beacon(1, 10), 0).is_ok(), "other clients are not affected");
        assert!(buckets.charge(ip, beacon(1, 10), S / 2).is_ok(), "half a second later, one more");
        assert!(buckets.charge(ip, beacon(1, 10), S / 2).is_err());
    }

    #[test]
    fn metrics_and_bytes_are_limited_as_well_as_beacons() {
        let buckets = ClientBuckets::new(rates(1_000, 100, 10_000), 100);
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert!(buckets.charge(ip, beacon(150, 10), 0).is_ok());
        let (unit, wait) = buckets.charge(ip, beacon(100, 10), 0).expect_err("over 200 metrics");
        assert_eq!((UNITS[unit], wait), ("metrics", Duration::from_millis(500)));
        let other: IpAddr = [10, 0, 0, 2].into();
        assert!(buckets.charge(other, beacon(1, 15_000), 0).is_ok());
        let (unit, _) = buckets.charge(other, beacon(1, 6_000), 0).expect_err("over 20 000 bytes");
        assert_eq!(UNITS[unit], "bytes");
        // A refused beacon spent nothing: after the bytes earn back, the beacons still allow 1 999 more.
        assert!(buckets.charge(other, beacon(1, 1_000), 0).is_ok(), "the refusal took no beacon or byte token");
    }

    #[test]
    fn ipv6_is_limited_per_64_and_ipv4_mapped_as_ipv4() {
        let buckets = ClientBuckets::new(rates(1, 1_000, 1_000_000), 100);
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("valid");
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().expect("valid");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("valid");
        assert!(buckets.charge(a, beacon(1, 1), 0).is_ok());
        assert!(buckets.charge(b, beacon(1, 1), 0).is_ok());
        assert!(buckets.charge(a, beacon(1, 1), 0).is_err(), "a and b share one /64");
        assert!(buckets.charge(c, beacon(1, 1), 0).is_ok(), "another /64");
        assert_eq!(client_key("::ffff:192.0.2.1".parse().expect("valid")), client_key([192, 0, 2, 1].into()));
    }

    #[test]
    fn the_table_never_grows_past_its_cap() {
        let buckets = ClientBuckets::new(rates(1, 1_000, 1_000_000), 1_000);
        for i in 0..5_000u32 {
            let _ = buckets.charge(IpAddr::from(i.to_be_bytes()), beacon(1, 1), 0);
        }
        assert_eq!(buckets.len(), 1_000);
        assert_eq!(buckets.overflowed.load(Ordering::Relaxed), 4_000);
        // A flood through the overflow is still limited: its buckets are shared, not fresh, so
        // 20 000 more addresses get no more than the overflow's bursts (2 each).
        let allowed = (0..20_000u32).filter(|i| buckets.charge(IpAddr::from((i + 10_000).to_be_bytes()), beacon(1, 1), 0).is_ok()).count();
        assert!(allowed <= 2 * OVERFLOW_SLOTS, "{allowed} of 20 000 allowed");
        assert_eq!(buckets.len(), 1_000);
        // Two seconds on, the buckets are full again: the sweep forgets them and new clients get entries.
        assert!(buckets.charge([192, 0, 2, 1].into(), beacon(1, 1), 10 * S).is_ok());
        assert_eq!(buckets.len(), 1);
    }

    #[test]
    fn sites_are_charged_per_site() {
        let config = Config {
            sites: vec![
                crate::config::SiteConfig::parse("a=https://a.example").expect("valid"),
                crate::config::SiteConfig {
                    rate_per_second: Some(1),
                    ..crate::config::SiteConfig::parse("b=https://b.example").expect("valid")
                },
            ],
            site_rate_per_second: 100,
            ..Config::default()
        };
        let quotas = Quotas::new(&config);
        assert!((0..2).all(|_| quotas.charge_site("b", beacon(1, 1), 0).is_ok()));
        let refused = quotas.charge_site("b", beacon(1, 1), 0).expect_err("b's own rate");
        assert_eq!((refused.scope, refused.unit), ("site", "beacons"));
        assert!((0..200).all(|_| quotas.charge_site("a", beacon(1, 1), 0).is_ok()));
        assert!(quotas.charge_site("a", beacon(1, 1), 0).is_err());
    }
}
