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
//!
//! The state is this collector's, in memory, bounded by the limits; it starts empty at a restart
//! and at each UTC day. With several collectors each keeps its own (so a site may reach the
//! limit once per collector).

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
    folded: HashMap<Dimension, u64>,
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
    sites: HashMap<String, (CardinalityLimits, Mutex<SiteDay>, Clusters)>,
}

impl Cardinality {
    pub fn new(config: &Config) -> Cardinality {
        let sites = config
            .sites
            .iter()
            .map(|s| {
                let limits = s.cardinality.resolve(&config.cardinality_defaults());
                let clusters = Clusters::new(config.url_cluster_threshold, limits.urls + limits.routes);
                (s.key.clone(), (limits, Mutex::new(SiteDay::default()), clusters))
            })
            .collect();
        Cardinality { sites }
    }

    /// A guard over one site's day (`day` = days since the epoch, UTC), reset when the day turned.
    pub fn site(&self, site: &str, day: i64) -> Option<SiteGuard<'_>> {
        let (limits, state, clusters) = self.sites.get(site)?;
        let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.day != day {
            *state = SiteDay { day, ..SiteDay::default() };
            clusters.reset();
        }
        Some(SiteGuard { limits, state, clusters })
    }

    /// Every site at 80 % of a limit or more, with what was folded or refused today.
    pub fn near_limits(&self) -> Vec<Standing> {
        let mut out = Vec::new();
        for (site, (limits, state, _)) in &self.sites {
            let Ok(state) = state.lock() else { continue };
            for dimension in Dimension::ALL {
                let limit = dimension.limit(limits);
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
    limits: &'a CardinalityLimits,
    state: std::sync::MutexGuard<'a, SiteDay>,
    clusters: &'a Clusters,
}

/// What became of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// Seen today, or new and within the limit.
    Kept(String),
    /// New past the limit: `(other)`.
    Folded,
}

impl SiteGuard<'_> {
    /// `value` in `dimension`: kept, or `(other)` past the limit. `folded` counts the folds.
    pub fn fold(&mut self, dimension: Dimension, value: String, folded: &mut Vec<Dimension>) -> String {
        match self.admit(dimension, value) {
            Admitted::Kept(v) => v,
            Admitted::Folded => {
                folded.push(dimension);
                OTHER.to_owned()
            }
        }
    }

    pub fn admit(&mut self, dimension: Dimension, value: String) -> Admitted {
        let state = &mut *self.state;
        admit(state.seen.entry(dimension).or_default(), dimension.limit(self.limits), value, dimension, &mut state.folded)
    }

    /// A tag value, limited per tag key.
    pub fn fold_tag_value(&mut self, key: &str, value: String, folded: &mut Vec<Dimension>) -> String {
        let state = &mut *self.state;
        let values = state.tag_values.entry(key.to_owned()).or_default();
        match admit(values, self.limits.tag_values, value, Dimension::TagValue, &mut state.folded) {
            Admitted::Kept(value) => value,
            Admitted::Folded => {
                folded.push(Dimension::TagValue);
                OTHER.to_owned()
            }
        }
    }

    /// A page URL: clustered, then limited.
    pub fn url(&mut self, url: String, folded: &mut Vec<Dimension>) -> String {
        let url = self.clusters.cluster(ClusterKind::Url, &url);
        self.fold(Dimension::Url, url, folded)
    }

    /// An API route: clustered, then limited.
    pub fn route(&mut self, route: String, folded: &mut Vec<Dimension>) -> String {
        let route = self.clusters.cluster(ClusterKind::Route, &route);
        self.fold(Dimension::Route, route, folded)
    }

    /// The limit on custom metric names (for the refusal's message).
    pub fn name_limit(&self) -> usize {
        self.limits.metric_names
    }
}

/// `value` into `seen` while it holds fewer than `limit` values; past it, a new value is folded
/// (counted in `folded` under `dimension`). Empty means "not sent": never a new value.
fn admit(seen: &mut HashSet<String>, limit: usize, value: String, dimension: Dimension, folded: &mut HashMap<Dimension, u64>) -> Admitted {
    if value.is_empty() || value == OTHER || seen.contains(&value) {
        return Admitted::Kept(value);
    }
    if seen.len() < limit {
        seen.insert(value.clone());
        return Admitted::Kept(value);
    }
    *folded.entry(dimension).or_default() += 1;
    Admitted::Folded
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
        let mut site = card.site("a", 100).expect("site a");
        let releases: Vec<String> =
            ["1", "2", "3", "1", ""].iter().map(|r| site.fold(Dimension::Release, (*r).into(), &mut folded)).collect();
        assert_eq!(releases, ["1", "2", OTHER, "1", ""]);
        assert_eq!(folded, [Dimension::Release]);
        drop(site);
        let standing = card.near_limits();
        assert_eq!(standing, vec![Standing { site: "a".into(), dimension: "release", distinct: 2, limit: 2, over: 1 }]);
        let mut next_day = card.site("a", 101).expect("site a");
        assert_eq!(next_day.fold(Dimension::Release, "3".into(), &mut folded), "3", "a new day starts empty");
        assert!(card.site("unknown", 101).is_none());
    }
}
