//! The envelope and metric types exactly as they travel as JSON.
//!
//! Optional fields are `Option`s and every struct ignores unknown fields, so an older collector
//! keeps working with a newer agent. Values are left as the client sent them (`value` may be
//! `null` when JavaScript serialised `NaN`); [`crate::validate`] decides what is acceptable.

use alloc::string::String;
use alloc::vec::Vec;

use alloc::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One beacon: the page it came from and the metrics measured there.
///
/// `M` is the metric type: [`Metric`] for the agent, or an unparsed JSON value on the collector,
/// which parses each metric on its own so one bad metric does not sink the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Beacon<M = Metric> {
    /// Wire format version; [`crate::VERSION`].
    pub v: u32,
    /// Public site key.
    pub site: String,
    /// Random session id; rolls over after 30 minutes idle.
    pub session: String,
    /// Page-view id; new per load and per back/forward-cache restore.
    pub page: String,
    /// Path of the page, normalised (see [`crate::route`]).
    pub url: String,
    /// How the page view started.
    pub nav: NavigationType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewport: Option<Viewport>,
    /// `window.devicePixelRatio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpr: Option<f64>,
    /// `navigator.deviceMemory`, GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<f64>,
    /// `navigator.hardwareConcurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// `navigator.connection.effectiveType` (`4g`, `3g`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ect: Option<String>,
    /// Client clock when the beacon was sent, epoch ms; with `at` it corrects clock skew.
    pub sent_at: f64,
    pub metrics: Vec<M>,
}

/// How a page view started, as web-vitals' `navigationType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NavigationType {
    Navigate,
    Reload,
    BackForward,
    BackForwardCache,
    Prerender,
    Restore,
    SoftNavigation,
}

impl NavigationType {
    pub const ALL: [NavigationType; 7] = [
        NavigationType::Navigate,
        NavigationType::Reload,
        NavigationType::BackForward,
        NavigationType::BackForwardCache,
        NavigationType::Prerender,
        NavigationType::Restore,
        NavigationType::SoftNavigation,
    ];

    /// The wire and storage spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            NavigationType::Navigate => "navigate",
            NavigationType::Reload => "reload",
            NavigationType::BackForward => "back-forward",
            NavigationType::BackForwardCache => "back-forward-cache",
            NavigationType::Prerender => "prerender",
            NavigationType::Restore => "restore",
            NavigationType::SoftNavigation => "soft-navigation",
        }
    }
}

/// CSS pixel size of the layout viewport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewport {
    pub w: u32,
    pub h: u32,
}

/// One measurement. Which fields matter depends on `name`: vitals use `rating`, `delta`, `id`
/// and `attribution`; `api` uses `route` … `server_timing` with `value` as the duration in ms;
/// custom metrics use `tags`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    /// `null` (what `JSON.stringify(NaN)` gives) is representable so it can be rejected clearly.
    pub value: Option<f64>,
    /// Client clock when measured, epoch ms.
    pub at: f64,
    /// The client's rating; informative only, the collector recomputes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// Unique id of the metric instance (web-vitals' `id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A vital's report number for its `id` (1, 2, …): of two reports of one id, the higher is
    /// the newer, whatever the clocks say. A number here (not an integer type) so a bad one is
    /// refused with its field, not with the whole beacon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<BTreeMap<String, AttrValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTP status; 0 when the request failed before a response (network error, abort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_timing: Option<Vec<ServerTiming>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

/// An attribution detail: a selector or URL, or a duration / score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttrValue {
    Num(f64),
    Str(String),
}

/// One `Server-Timing` entry of an API response (`name;dur=…;desc=…`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerTiming {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dur: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
}
