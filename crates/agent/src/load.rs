//! The page load, once per loaded page (not after a back/forward-cache restore or a soft
//! navigation, which load nothing): when the `DOMContentLoaded` handlers had run and when the
//! load event ended, from the navigation entry, counted from `activationStart` like TTFB; and a
//! summary of the resources loaded by then — how many, the bytes they took over the network, and
//! the slowest of each kind — a few numbers, not one metric per resource.
//!
//! They are custom metrics with names the agent reserves (`page.…`, see [`NAMES`]), reported
//! with TTFB after the load event. `page.resource_bytes` counts `transferSize`, which browsers
//! report as 0 for cached resources and for other origins' resources without
//! `Timing-Allow-Origin`. Each `page.slowest.<kind>` carries the resource's route as its
//! `resource` tag.

use crate::host::Js;
use pulse_protocol::limits::MAX_SHORT_LEN;
use pulse_protocol::route;

use crate::host;
use crate::measure::metric;
use crate::report::{Outbox, Tags};
use alloc::string::String;

/// Every name this module reports, for the README and the dashboard.
pub const NAMES: [&str; 9] = [
    "page.dom_content_loaded",
    "page.load",
    "page.resources",
    "page.resource_bytes",
    "page.slowest.script",
    "page.slowest.css",
    "page.slowest.img",
    "page.slowest.fetch",
    "page.slowest.other",
];

/// The kind of a resource by its `initiatorType`: the index of its `page.slowest.…` name, less 4.
fn kind(initiator: Option<&str>) -> usize {
    match initiator {
        Some("script") => 0,
        Some("link" | "css") => 1,
        Some("img" | "image") => 2,
        Some("fetch" | "xmlhttprequest" | "beacon") => 3,
        _ => 4,
    }
}

/// Reports the page load of the navigation entry `nav` (times counted from `activation`).
/// They are written by [`metric`], as the custom metrics they are (one writer for both kinds).
pub fn report(nav: Js, activation: f64, out: &mut Outbox) {
    let at = host::epoch();
    for (name, key) in [(NAMES[0], "domContentLoadedEventEnd"), (NAMES[1], "loadEventEnd")] {
        let time = host::num(nav, key);
        if time > 0.0 {
            out.push(metric(name, (time - activation).max(0.0), at, &Tags::new()));
        }
    }
    let (mut count, mut bytes) = (0.0, 0.0);
    // Per kind, the longest duration and its resource; the first with a duration counts even at 0.
    let mut slowest: [Option<(f64, Js)>; 5] = [None; 5];
    for resource in host::items(host::entries("resource")) {
        count += 1.0;
        let size = host::num(resource, "transferSize");
        if size > 0.0 {
            bytes += size;
        }
        let duration = host::num(resource, "duration");
        let Some(slot) = slowest.get_mut(kind(host::text(resource, "initiatorType").as_deref())) else { continue };
        if slot.map_or(duration >= 0.0, |(longest, _)| duration > longest) {
            *slot = Some((duration, resource));
        }
    }
    out.push(metric(NAMES[2], count, at, &Tags::new()));
    out.push(metric(NAMES[3], bytes, at, &Tags::new()));
    for (slot, name) in slowest.iter().zip(NAMES.iter().skip(4)) {
        let Some((duration, resource)) = slot else { continue };
        let Some(url) = host::text(*resource, "name") else { continue };
        let resource = route::truncate(route::normalise_route(&url), MAX_SHORT_LEN);
        out.push(metric(name, *duration, at, &alloc::vec![(String::from("resource"), resource)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_custom_names_and_kinds_match_them() {
        for name in NAMES {
            assert!(pulse_protocol::metric::is_custom_name(name), "{name}");
            assert!(name.starts_with(crate::measure::RESERVED), "{name} is kept from record()");
        }
        for (initiator, name) in [
            ("script", "page.slowest.script"),
            ("link", "page.slowest.css"),
            ("img", "page.slowest.img"),
            ("xmlhttprequest", "page.slowest.fetch"),
            ("iframe", "page.slowest.other"),
        ] {
            assert_eq!(NAMES[4 + kind(Some(initiator))], name);
        }
    }
}
