//! The Pulse wire format, shared by the wasm agent and the collector.
//!
//! A page's agent measures, batches and sends a [`Beacon`]; the collector parses it, runs
//! [`validate::envelope`] and [`validate::metric`] on it, and stores what passes. Nothing else in
//! the project defines these names, thresholds or limits.
//!
//! # Layout
//! - [`beacon`]: the envelope and metric types exactly as they travel (JSON field names are the
//!   public contract: add fields freely, rename none; unknown fields are ignored).
//! - [`metric`]: metric names (the six web vitals, `api`, custom names) and their plausible ranges.
//! - [`rating`]: good / needs-improvement / poor thresholds, as web-vitals and CrUX define them.
//! - [`route`]: URL → route normalisation (`/users/123` → `/users/:id`).
//! - [`limits`]: every size and count limit in one place.
//! - [`validate`]: turns wire types into [`validate::Measurement`]s or a field-named [`validate::Invalid`].
//!
//! The crate is `no_std` (it needs `alloc` only), builds for `wasm32-unknown-unknown` and depends on
//! `serde` alone (no `serde_json`), so the agent can use it without growing or linking `std`.

#![no_std]

extern crate alloc;

pub mod beacon;
pub mod limits;
pub mod metric;
pub mod rating;
pub mod route;
pub mod text;
pub mod validate;

pub use beacon::{AttrValue, Beacon, Metric, NavigationType, ServerTiming, Viewport};
pub use metric::{MetricName, Vital};
pub use rating::{Rating, Thresholds};

/// The wire format version this crate speaks (`v` in the envelope).
pub const VERSION: u32 = 1;
