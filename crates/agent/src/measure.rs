//! Custom metrics: `record(name, value, tags)` from the page, and user-timing `measure` entries
//! (`performance.measure('checkout:render', …)`), each becoming a metric of that name.

use pulse_protocol::limits::MAX_CUSTOM_NAME_LEN;
use pulse_protocol::metric::API;
use pulse_protocol::validate;

use crate::host::Js;
use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec;

use crate::host;
use crate::json::Obj;
use crate::report::{Metric, Outbox, Tags};

/// Checks a `record` call against the wire format's custom-metric rules (the collector applies
/// the same ones) and the names the agent keeps for itself; the error says what is wrong, and
/// with which tag.
pub fn check(name: &str, value: f64, tags: &[(String, String)]) -> Result<(), String> {
    if name.starts_with(RESERVED) {
        return Err(String::from("names starting with page. are the agent's own (the page load)"));
    }
    validate::custom(name, value, tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|(problem, key)| {
        let mut message = String::from(problem.message());
        if let Some(key) = key {
            for part in [" (tag `", key, "`)"] {
                message.push_str(part);
            }
        }
        message
    })
}

/// The prefix of the page-load metrics the agent reports itself ([`crate::load`]).
pub const RESERVED: &str = "page.";

pub fn metric(name: &str, value: f64, at: f64, tags: &Tags) -> Metric {
    Metric::new(name, value, at, |o| {
        crate::report::id(o);
        if !tags.is_empty() {
            let mut t = Obj::new(o.key("tags"));
            for (k, v) in tags {
                t.str(k, v);
            }
            t.end();
        }
    })
}

/// A user-timing name as a custom metric name: lower case, other characters as `_`, starting
/// with a letter, at most 64 characters (`Checkout Render` → `checkout_render`).
pub fn measure_name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_CUSTOM_NAME_LEN));
    // One character of the name per character of `raw`: the bytes that continue a UTF-8
    // character (0b10xx_xxxx) add nothing.
    for b in raw.bytes().filter(|b| b & 0xc0 != 0x80) {
        let b = b.to_ascii_lowercase();
        out.push(char::from(if b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-') { b } else { b'_' }));
    }
    if out == API {
        out.push('_');
    }
    // Names start with a letter, and are not mistaken for the agent's own page-load metrics. One
    // prefix for both: a name not starting with a letter is neither `api` nor reserved.
    if !raw.as_bytes().first().is_some_and(u8::is_ascii_alphabetic) || out.starts_with(RESERVED) {
        out.insert_str(0, "m_");
    }
    pulse_protocol::route::truncate(out, MAX_CUSTOM_NAME_LEN)
}

/// A `measure` entry: a custom metric named after it, with tag `source: measure`.
pub fn entry(entry: Js, out: &mut Outbox) {
    let Some(name) = host::text(entry, "name") else { return };
    let duration = host::num(entry, "duration");
    if duration.is_nan() || duration < 0.0 {
        return;
    }
    let tags = vec![("source".to_owned(), "measure".to_owned())];
    let end = host::num(entry, "startTime") + duration;
    out.push(metric(&measure_name(&name), duration, host::epoch_of(end), &tags));
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec::Vec;

    #[test]
    fn record_checks_name_value_and_tags() {
        let none = Vec::new();
        assert_eq!(check("cart.items", 3.0, &none), Ok(()));
        for bad in ["", "Cart", "1st", "api", "a b", &"x".repeat(65)] {
            assert!(check(bad, 1.0, &none).is_err(), "{bad:?}");
        }
        assert!(check("x", f64::NAN, &none).is_err());
        assert!(check("page.load", 1.0, &none).is_err(), "the agent's own name");
        assert_eq!(check("pages.load", 1.0, &none), Ok(()));
        assert!(check("x", 2e12, &none).is_err());
        let tags = vec![("Plan".to_owned(), "pro".to_owned())];
        assert!(check("x", 1.0, &tags).is_err());
        let tags: Tags = (0..17).map(|i| (format!("t{i}"), String::new())).collect();
        assert!(check("x", 1.0, &tags).is_err());
    }

    #[test]
    fn measure_names_become_custom_names() {
        assert_eq!(measure_name("checkout:render"), "checkout:render");
        assert_eq!(measure_name("Checkout Render"), "checkout_render");
        assert_eq!(measure_name("Next.js-hydration"), "next.js-hydration");
        assert_eq!(measure_name("⚡ boot"), "m___boot");
        assert_eq!(measure_name("api"), "api_");
        assert_eq!(measure_name("page.load"), "m_page.load");
        assert_eq!(measure_name(&"A".repeat(100)).len(), 64);
        for raw in ["x", "Mixed Case 123", "<script>", "", "9"] {
            use pulse_protocol::metric::is_custom_name;
            assert!(is_custom_name(&measure_name(raw)), "{raw:?}");
        }
    }
}
