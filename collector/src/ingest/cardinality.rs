//! Cardinality limits: how many distinct values one site may create per day, in every dimension
//! that becomes a key of the rollups (URLs, API routes, custom metric names, releases, envs, tag
//! keys and tag values).
//!
//! Every distinct value is a new key in every rollup that groups by it, kept for 400 days, and
//! the values come from the browser: one client, or a site whose URLs carry text slugs, can create
//! them without end. So, per site and per UTC day (Relay's cardinality limiter and Vector's
//! `tag_cardinality_limit` are the anchors):
//! - **URLs and API routes are clustered first** ([`Clusters`]): a path position whose distinct
//!   segments under one prefix exceed `url_cluster_threshold` becomes `*`, so
//!   `/products/blue-shoes-42` groups as `/products/*` without configuration (Sentry clusters
//!   transaction names the same way). Segments the page already templated (`:slug`, `*`) are left
//!   alone, so the agent's configured `routes` win.
//! - **Past a limit**, a new URL, route, release, env, tag key or tag value is folded into
//!   `(other)`: its metrics still count in every total. A new custom metric name is refused with
//!   the reason (it is the metric itself, not a dimension of it).
//! - **Per client**, so that one client cannot use up a site's day: in each dimension a client (an
//!   IPv4 address or IPv6 /64, as the quotas key it) may add at most
//!   `cardinality_new_values_per_client_per_day` new values ([`Over::Client`]). Values already in
//!   the site's sets are still kept as themselves, whoever sends them. (A dimension whose limit is
//!   no larger, envs at 50, is bounded by that limit alone.)
//!
//! The state is this collector's, in memory, bounded by the limits (the per-client counts have an
//! entry only for a client that added a value, so no more entries than values); it starts empty
//! at a restart and at each UTC day. With several collectors each keeps its own (so a site may
//! reach the limit once per collector).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::config::{CardinalityLimits, Config};

/// What a value past its limit becomes.
pub const OTHER: &str = "(other)";

/// The dimensions limited, for counters and `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    Url,
    Route,
    Name,
    Release,
    Env,
    TagKey,
    TagValue,
}

impl Dimension {
    pub const ALL: [Dimension; 7] =
        [Dimension::Url, Dimension::Route, Dimension::Name, Dimension::Release, Dimension::Env, Dimension::TagKey, Dimension::TagValue];

    fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Url => "url",
            Dimension::Route => "route",
            Dimension::Name => "metric_name",
            Dimension::Release => "release",
            Dimension::Env => "env",
            Dimension::TagKey => "tag_key",
            Dimension::TagValue => "tag_value",
        }
    }

    fn limit(self, l: &CardinalityLimits) -> usize {
        match self {
            Dimension::Url => l.urls,
            Dimension::Route => l.routes,
            Dimension::Name => l.metric_names,
            Dimension::Release => l.releases,
            Dimension::Env => l.envs,
            Dimension::TagKey => l.tag_keys,
            Dimension::TagValue => l.tag_values,
        }
    }
}

/// One site's distinct values of the day.
#[derive(Debug, Default)]
struct SiteDay {
    day: i64,
    seen: HashMap<Dimension, HashSet<String>>,
    /// Tag values are limited per tag key.
    tag_values: HashMap<String, HashSet<String>>,
    /// Folded or refused past the site's limits.
    folded: HashMap<Dimension, u64>,
    /// New values each client added today, per dimension (by [`Dimension::index`]). An entry is
    /// made only when a client's value enters a set: at most one per value held (about 50 bytes).
    added: HashMap<u128, [u32; 7]>,
}

/// Why a value was folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The site's limit for the day is reached.
    Site,
    /// The client that sent it has added its share of new values today.
    Client,
}

/// How one site stands against one limit (for `/healthz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub site: String,
    pub dimension: &'static str,
    pub distinct: usize,
    pub limit: usize,
    /// Values folded or refused today.
    pub over: u64,
}

/// The limits of every site, and what each has seen today.
#[derive(Debug)]
pub struct Cardinality {
    sites: HashMap<String, (Limits, Mutex<SiteDay>, Clusters)>,
}

/// One site's limits, and how many new values of each dimension one client may add.
#[derive(Debug)]
struct Limits {
    site: CardinalityLimits,
    per_client: usize,
}

impl Cardinality {
    pub fn new(config: &Config) -> Cardinality {
        let sites = config
            .sites
            .iter()
            .map(|s| {
                let limits = s.cardinality.resolve(&config.cardinality_defaults());
                let clusters = Clusters::new(config.url_cluster_threshold, limits.urls + limits.routes);
                let limits = Limits { site: limits, per_client: config.cardinality_new_values_per_client_per_day };
                (s.key.clone(), (limits, Mutex::new(SiteDay::default()), clusters))
            })
            .collect();
        Cardinality { sites }
    }

    /// A guard over one site's day (`day` = days since the epoch, UTC), reset when the day turned,
    /// for a beacon from `client` ([`client_key`](super::quota::client_key)).
    pub fn site(&self, site: &str, day: i64, client: u128) -> Option<SiteGuard<'_>> {
        let (limits, state, clusters) = self.sites.get(site)?;
        let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.day != day {
            *state = SiteDay { day, ..SiteDay::default() };
            clusters.reset();
        }
        Some(SiteGuard { limits, state, clusters, client })
    }

    /// Every site at 80 % of a limit or more, with what was folded or refused today.
    pub fn near_limits(&self) -> Vec<Standing> {
        let mut out = Vec::new();
        for (site, (limits, state, _)) in &self.sites {
            let Ok(state) = state.lock() else { continue };
            for dimension in Dimension::ALL {
                let limit = dimension.limit(&limits.site);
                let distinct = if dimension == Dimension::TagValue {
                    state.tag_values.values().map(HashSet::len).max().unwrap_or(0)
                } else {
                    state.seen.get(&dimension).map_or(0, HashSet::len)
                };
                let over = state.folded.get(&dimension).copied().unwrap_or(0);
                if distinct * 5 >= limit * 4 || over > 0 {
                    out.push(Standing { site: site.clone(), dimension: dimension.as_str(), distinct, limit, over });
                }
            }
        }
        out.sort_by(|a, b| (&a.site, a.dimension).cmp(&(&b.site, b.dimension)));
        out
    }
}

/// One site's state, locked for one beacon.
#[derive(Debug)]
pub struct SiteGuard<'a> {
    limits: &'a Limits,
    state: std::sync::MutexGuard<'a, SiteDay>,
    clusters: &'a Clusters,
    client: u128,
}

/// What became of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// Seen today, or new and within the limits.
    Kept(String),
    /// New past a limit: `(other)`.
    Folded(Over),
}

/// The folds of one beacon, for the counters.
pub type Folds = Vec<(Dimension, Over)>;

impl SiteGuard<'_> {
    /// `value` in `dimension`: kept, or `(other)` past a limit. `folded` counts the folds.
    pub fn fold(&mut self, dimension: Dimension, value: String, folded: &mut Folds) -> String {
        match self.admit(dimension, value) {
            Admitted::Kept(v) => v,
            Admitted::Folded(over) => {
                folded.push((dimension, over));
                OTHER.to_owned()
            }
        }
    }

    pub fn admit(&mut self, dimension: Dimension, value: String) -> Admitted {
        let state = &mut *self.state;
        let seen = state.seen.entry(dimension).or_default();
        admit(seen, self.limits, dimension, value, &mut state.folded, state.added.entry(self.client))
    }

    /// A tag value, limited per tag key.
    pub fn fold_tag_value(&mut self, key: &str, value: String, folded: &mut Folds) -> String {
        let state = &mut *self.state;
        let values = state.tag_values.entry(key.to_owned()).or_default();
        match admit(values, self.limits, Dimension::TagValue, value, &mut state.folded, state.added.entry(self.client)) {
            Admitted::Kept(value) => value,
            Admitted::Folded(over) => {
                folded.push((Dimension::TagValue, over));
                OTHER.to_owned()
            }
        }
    }

    /// A page URL: clustered, then limited.
    pub fn url(&mut self, url: String, folded: &mut Folds) -> String {
        let url = self.clusters.cluster(ClusterKind::Url, &url);
        self.fold(Dimension::Url, url, folded)
    }

    /// An API route: clustered, then limited.
    pub fn route(&mut self, route: String, folded: &mut Folds) -> String {
        let route = self.clusters.cluster(ClusterKind::Route, &route);
        self.fold(Dimension::Route, route, folded)
    }

    /// The limit on custom metric names (for the refusal's message).
    pub fn name_limit(&self) -> usize {
        self.limits.site.metric_names
    }

    /// How many new custom metric names one client may add per day (for the refusal's message).
    pub fn name_limit_per_client(&self) -> usize {
        self.limits.per_client
    }
}

/// `value` into `seen` while it holds fewer than the site's limit and the client (whose entry of
/// new values added is `added`) has added fewer than its share; otherwise a new value is folded
/// (past the site's limit, counted in `folded` under `dimension`). Empty means "not sent": never
/// a new value.
fn admit(
    seen: &mut HashSet<String>,
    limits: &Limits,
    dimension: Dimension,
    value: String,
    folded: &mut HashMap<Dimension, u64>,
    added: std::collections::hash_map::Entry<'_, u128, [u32; 7]>,
) -> Admitted {
    if value.is_empty() || value == OTHER || seen.contains(&value) {
        return Admitted::Kept(value);
    }
    if seen.len() >= dimension.limit(&limits.site) {
        *folded.entry(dimension).or_default() += 1;
        return Admitted::Folded(Over::Site);
    }
    let i = dimension.index();
    // An entry is made only here, for a value about to be added.
    let count = match added {
        std::collections::hash_map::Entry::Occupied(e) if e.get()[i] as usize >= limits.per_client => {
            return Admitted::Folded(Over::Client);
        }
        e => &mut e.or_default()[i],
    };
    *count += 1;
    seen.insert(value.clone());
    Admitted::Kept(value)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClusterKind {
    Url,
    Route,
}

/// Learns, per site, which path positions have too many distinct segments, and writes `*` there.
///
/// A trie of the paths seen: each node keeps its distinct child segments until there are more than
/// the threshold, then forgets them and becomes a wildcard (`*` for every segment at that
/// position). Memory is bounded: at most `max_nodes` nodes per site; a path that finds the trie
/// full is kept as it is (the URL limit folds it) and the next starts a new trie.
#[derive(Debug)]
pub struct Clusters {
    threshold: usize,
    max_nodes: usize,
    tries: Mutex<HashMap<ClusterKind, Trie>>,
}

#[derive(Debug, Default)]
struct Trie {
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, usize>,
    /// Every segment at this position is `*`; its one child is `wild_child`.
    wild: bool,
    wild_child: Option<usize>,
}

impl Clusters {
    pub fn new(threshold: usize, max_nodes: usize) -> Clusters {
        Clusters { threshold: threshold.max(1), max_nodes: max_nodes.max(1), tries: Mutex::new(HashMap::new()) }
    }

    /// Forgets what was learnt (each UTC day, like the limits).
    fn reset(&self) {
        self.tries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    fn cluster(&self, kind: ClusterKind, path: &str) -> String {
        let mut tries = self.tries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let trie = tries.entry(kind).or_default();
        if trie.nodes.len() >= self.max_nodes {
            // Full (of junk paths, or of subtrees a wildcard replaced): learn again from
            // scratch rather than stop clustering until the day ends.
            *trie = Trie::default();
        }
        if trie.nodes.is_empty() {
            trie.nodes.push(Node::default());
        }
        // A route may start with a host (`api.example/v1/…`): it is the first segment, never `*`.
        let (head, rest) = match path.find('/') {
            Some(0) => ("", path),
            Some(i) => path.split_at(i),
            None => return path.to_owned(),
        };
        let mut out = String::with_capacity(path.len());
        out.push_str(head);
        // `None` once the trie is out of nodes: the rest of the path is kept as it is.
        let mut node = Some(0usize);
        for segment in rest.split('/').skip(1) {
            out.push('/');
            let Some(n) = node else {
                out.push_str(segment);
                continue;
            };
            let room = trie.nodes.len() < self.max_nodes;
            // Templates and ids the page or the normaliser made stay as they are.
            let template = segment.starts_with(':') || segment == "*" || segment.is_empty();
            if trie.nodes[n].wild && !template {
                out.push('*');
                node = Self::child(trie, n, None, room);
                continue;
            }
            if let Some(&child) = trie.nodes[n].children.get(segment) {
                out.push_str(segment);
                node = Some(child);
                continue;
            }
            if !template && trie.nodes[n].children.len() >= self.threshold {
                // One distinct segment too many at this position: `*` from now on.
                let wild = &mut trie.nodes[n];
                wild.wild = true;
                wild.children.clear();
                out.push('*');
                node = Self::child(trie, n, None, room);
                continue;
            }
            out.push_str(segment);
            node = Self::child(trie, n, Some(segment), room);
        }
        out
    }

    /// The child of `node` for `segment` (`None`: the wildcard child), made when `grow`.
    fn child(trie: &mut Trie, node: usize, segment: Option<&str>, grow: bool) -> Option<usize> {
        let existing = match segment {
            Some(s) => trie.nodes[node].children.get(s).copied(),
            None => trie.nodes[node].wild_child,
        };
        if existing.is_some() || !grow {
            return existing;
        }
        let id = trie.nodes.len();
        trie.nodes.push(Node::default());
        match segment {
            Some(s) => {
                trie.nodes[node].children.insert(s.to_owned(), id);
            }
            None => trie.nodes[node].wild_child = Some(id),
        }
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clusters() -> Clusters {
        Clusters::new(3, 1_000)
    }

    #[test]
    fn a_position_with_too_many_segments_becomes_a_wildcard() {
        let c = clusters();
        let seen: Vec<String> =
            ["/products/a-1", "/products/b-2", "/products/c-3", "/products/d-4", "/products/e-5/reviews", "/products/a-1"]
                .iter()
                .map(|p| c.cluster(ClusterKind::Url, p))
                .collect();
        assert_eq!(seen, ["/products/a-1", "/products/b-2", "/products/c-3", "/products/*", "/products/*/reviews", "/products/*"]);
        assert_eq!(c.cluster(ClusterKind::Url, "/about"), "/about", "other prefixes are untouched");
        assert_eq!(c.cluster(ClusterKind::Url, "/products/:slug"), "/products/:slug", "templates win");
        assert_eq!(c.cluster(ClusterKind::Url, "/"), "/");
    }

    #[test]
    fn routes_keep_their_host() {
        let c = clusters();
        for i in 0..5 {
            let _ = c.cluster(ClusterKind::Route, &format!("api.example/v1/items-{i}"));
        }
        assert_eq!(c.cluster(ClusterKind::Route, "api.example/v1/items-9"), "api.example/v1/*");
        assert_eq!(c.cluster(ClusterKind::Url, "/v1/items-9"), "/v1/items-9", "URLs and routes are learnt apart");
    }

    #[test]
    fn the_trie_stops_growing_at_its_node_limit() {
        let c = Clusters::new(1_000_000, 10);
        for i in 0..100 {
            let path = format!("/{i}/x");
            assert_eq!(c.cluster(ClusterKind::Url, &path), path, "out of nodes, paths are kept as they are");
        }
        assert!(c.tries.lock().expect("lock").get(&ClusterKind::Url).expect("trie").nodes.len() <= 11);
    }

    #[test]
    fn values_past_the_limit_are_folded_and_the_day_resets() {
        let config = Config {
            sites: vec![crate::config::SiteConfig::parse("a=https://a.example").expect("site")],
            cardinality_releases_per_day: 2,
            ..Config::default()
        };
        let card = Cardinality::new(&config);
        let mut folded = Vec::new();
        let mut site = card.site("a", 100, 1).expect("site a");
        let releases: Vec<String> =
            ["1", "2", "3", "1", ""].iter().map(|r| site.fold(Dimension::Release, (*r).into(), &mut folded)).collect();
        // One client here, with a share larger than the limit: only the site's limit speaks.
        assert_eq!(releases, ["1", "2", OTHER, "1", ""]);
        assert_eq!(folded, [(Dimension::Release, Over::Site)]);
        drop(site);
        let standing = card.near_limits();
        assert_eq!(standing, vec![Standing { site: "a".into(), dimension: "release", distinct: 2, limit: 2, over: 1 }]);
        let mut next_day = card.site("a", 101, 1).expect("site a");
        assert_eq!(next_day.fold(Dimension::Release, "3".into(), &mut folded), "3", "a new day starts empty");
        assert!(card.site("unknown", 101, 1).is_none());
    }

    #[test]
    fn one_client_adds_at_most_its_share_of_new_values_and_others_still_add_theirs() {
        let config = Config {
            sites: vec![crate::config::SiteConfig::parse("a=https://a.example").expect("site")],
            cardinality_new_values_per_client_per_day: 3,
            cardinality_urls_per_day: 100,
            ..Config::default()
        };
        let card = Cardinality::new(&config);
        let (a, b) =
            (crate::ingest::quota::client_key([198, 51, 100, 1].into()), crate::ingest::quota::client_key([198, 51, 100, 2].into()));
        let mut folded = Vec::new();
        let mut site = card.site("a", 100, a).expect("site a");
        let urls: Vec<String> =
            ["/1", "/2", "/3", "/4", "/1", ""].iter().map(|u| site.fold(Dimension::Url, (*u).into(), &mut folded)).collect();
        assert_eq!(urls, ["/1", "/2", "/3", OTHER, "/1", ""], "a's fourth new URL folds; a known one is kept");
        assert_eq!(folded, [(Dimension::Url, Over::Client)]);
        // Another dimension has its own count.
        assert_eq!(site.fold(Dimension::Env, "prod".into(), &mut folded), "prod");
        assert_eq!(site.fold_tag_value("plan", "pro".into(), &mut folded), "pro");
        drop(site);
        let mut site = card.site("a", 100, b).expect("site a");
        assert_eq!(site.fold(Dimension::Url, "/4".into(), &mut folded), "/4", "b adds the URL a could not");
        drop(site);
        let mut site = card.site("a", 100, a).expect("site a");
        assert_eq!(site.fold(Dimension::Url, "/4".into(), &mut folded), "/4", "now known, a's /4 is kept too");
        // (The guard holds the site's lock, which near_limits takes too.)
        drop(site);
        assert_eq!(card.near_limits(), vec![], "client folds are not the site's limits");
        let state = card.sites["a"].1.lock().expect("lock");
        assert_eq!(state.added.len(), 2, "one entry per client that added a value");
        drop(state);
        let mut next_day = card.site("a", 101, a).expect("site a");
        assert_eq!(next_day.fold(Dimension::Url, "/5".into(), &mut folded), "/5", "a new day, a new share");
    }

    #[test]
    fn a_client_past_its_share_adds_no_entry_and_the_site_limit_speaks_first() {
        let config = Config {
            sites: vec![crate::config::SiteConfig::parse("a=https://a.example").expect("site")],
            cardinality_new_values_per_client_per_day: 1_000,
            cardinality_releases_per_day: 2,
            ..Config::default()
        };
        let card = Cardinality::new(&config);
        let mut folded = Vec::new();
        let mut site = card.site("a", 100, 1).expect("site a");
        assert_eq!(site.fold(Dimension::Release, "1".into(), &mut folded), "1");
        drop(site);
        let mut site = card.site("a", 100, 2).expect("site a");
        assert_eq!(site.fold(Dimension::Release, "2".into(), &mut folded), "2");
        drop(site);
        let mut site = card.site("a", 100, 3).expect("site a");
        assert_eq!(site.fold(Dimension::Release, "3".into(), &mut folded), OTHER);
        assert_eq!(folded, [(Dimension::Release, Over::Site)], "the site is full: its limit, not the client's");
        drop(site);
        assert_eq!(card.sites["a"].1.lock().expect("lock").added.len(), 2, "a client that added nothing has no entry");
    }
}
