//! Route templates from the config (`/products/:slug`, `/docs/*`): a page or API path that
//! matches one is reported as the template, so pages whose ids the default normalisation cannot
//! recognise (slugs, names) still group. `:name` matches one segment, a final `*` the rest.

use alloc::string::String;
use pulse_protocol::text::pieces;

/// The first template matching `path` (query and fragment ignored).
pub fn apply(templates: &[String], path: &str) -> Option<String> {
    let path = pieces(path, b"?#").next().unwrap_or("");
    let template = templates.iter().find(|t| matches(t, path))?;
    Some(template.clone())
}

/// The non-empty segments of a path or template (one iterator type for both, so its code is
/// in the wasm once).
fn segments(path: &str) -> impl Iterator<Item = &str> {
    pieces(path, b"/").filter(|s| !s.is_empty())
}

fn matches(template: &str, path: &str) -> bool {
    let mut wanted = segments(template);
    let mut got = segments(path);
    loop {
        match (wanted.next(), got.next()) {
            (Some("*"), _) => return wanted.next().is_none(),
            (Some(w), Some(g)) if w.starts_with(":") || w == g => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    #[test]
    fn templates_match_segments_and_rests() {
        let t: Vec<String> = ["/products/:slug", "/docs/*", "/", "/a/:x/b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(apply(&t, "/products/blue-shoe").as_deref(), Some("/products/:slug"));
        assert_eq!(apply(&t, "/products/blue-shoe/").as_deref(), Some("/products/:slug"));
        assert_eq!(apply(&t, "/products/blue-shoe/reviews"), None);
        assert_eq!(apply(&t, "/products"), None);
        assert_eq!(apply(&t, "/docs").as_deref(), Some("/docs/*"));
        assert_eq!(apply(&t, "/docs/intro/setup?x=1").as_deref(), Some("/docs/*"));
        assert_eq!(apply(&t, "/").as_deref(), Some("/"));
        assert_eq!(apply(&t, "/a/1/b").as_deref(), Some("/a/:x/b"));
        assert_eq!(apply(&t, "/a/1/c"), None);
    }
}
