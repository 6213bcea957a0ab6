//! The Pulse agent: measures Core Web Vitals in the page exactly as Google's web-vitals library
//! defines them, and (to come) times `fetch`, batches metrics and sends beacons.
//!
//! # Layout
//! One module per metric, like web-vitals' `onCLS.ts`, `onINP.ts`, `onLCP.ts`. Each holds the
//! metric's algorithm as pure Rust over plain entry values, so it is tested natively with synthetic
//! entry sequences; the browser observers that feed it are thin wrappers around these types.
//! - [`cls`]: layout shifts grouped into session windows; the largest window wins.
//! - [`inp`]: the longest interactions by `interactionId`; the p98 estimate from the interaction count.
//! - [`lcp`]: the last candidate before the first input or hide; finalisation rules.

pub mod cls;
pub mod inp;
pub mod lcp;
