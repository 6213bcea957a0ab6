//! Route normalisation: many URLs of one page or endpoint become one route, so percentiles group
//! by what a developer recognises (`/users/:id/orders/:id`) instead of by every id ever seen.
//!
//! Rules: the query and fragment are dropped; a path segment that is all digits, a UUID, or a
//! long hex string (≥ 16 hex digits, at least one of them a digit) becomes `:id`; a trailing slash
//! is dropped (except on `/`); the result is cut to [`MAX_ROUTE_LEN`] bytes.

use alloc::string::String;

use crate::limits::MAX_ROUTE_LEN;
use crate::text::pieces;

/// Placeholder for an id-like path segment.
pub const ID: &str = ":id";

/// Normalises a page URL or path to a route path, dropping any scheme and host
/// (`https://shop.example/cart/42?x=1` → `/cart/:id`).
pub fn normalise_path(url: &str) -> String {
    let (_, path) = split_origin(url);
    normalise_segments(path, String::with_capacity(path.len().min(MAX_ROUTE_LEN)))
}

/// Normalises the URL of an API call. Same-origin paths stay paths; an absolute URL keeps its host
/// so calls to different APIs stay apart (`https://api.example/v1/items/7` → `api.example/v1/items/:id`).
pub fn normalise_route(url: &str) -> String {
    let (host, path) = split_origin(url);
    let mut out = String::with_capacity(url.len().min(MAX_ROUTE_LEN));
    if let Some(host) = host {
        out.push_str(&host.to_ascii_lowercase());
    }
    normalise_segments(path, out)
}

/// Splits `scheme://host[:port]/path` into (`host[:port]`, `/path`); a relative URL has no host.
fn split_origin(url: &str) -> (Option<&str>, &str) {
    let url = url.trim_ascii();
    let b = url.as_bytes();
    // The scheme: letters, digits, `+`, `-` and `.`, up to the first byte that is none of them,
    // which must start `://` (a `:` cannot be in a scheme, so that is the first `://`). No indexing
    // by position: it brings `str`'s panic formatting into the wasm agent.
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')) {
            break;
        }
        i += 1;
    }
    if i == 0 || !matches!(b.get(i..), Some([b':', b'/', b'/', ..])) {
        return (None, url);
    }
    // The authority runs to the first `/`, `?` or `#`; any `user:password@` in it is dropped: it
    // must never be stored.
    let (mut host, mut end) = (i + 3, i + 3);
    while let Some(&c) = b.get(end) {
        if matches!(c, b'/' | b'?' | b'#') {
            break;
        }
        end += 1;
        if c == b'@' {
            host = end;
        }
    }
    match url.split_at_checked(end) {
        Some((authority, path)) => (authority.get(host..), path),
        None => (None, url),
    }
}

fn normalise_segments(path: &str, mut out: String) -> String {
    let path = pieces(path, b"?#").next().unwrap_or("");
    let start = out.len();
    for segment in pieces(path, b"/").filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(if is_id(segment) { ID } else { segment });
        if out.len() >= MAX_ROUTE_LEN {
            break;
        }
    }
    if out.len() == start {
        out.push('/');
    }
    truncate(out, MAX_ROUTE_LEN)
}

/// Whether a path segment looks like an identifier rather than a name.
fn is_id(segment: &str) -> bool {
    // One pass: all digits; a UUID (hex digits with `-` at 8, 13, 18 and 23); or a long hex
    // string with a digit in it.
    let b = segment.as_bytes();
    let (mut digits, mut hex, mut uuid) = (0, 0, b.len() == 36);
    for (i, &c) in b.iter().enumerate() {
        digits += usize::from(c.is_ascii_digit());
        hex += usize::from(c.is_ascii_hexdigit());
        uuid &= if matches!(i, 8 | 13 | 18 | 23) { c == b'-' } else { c.is_ascii_hexdigit() };
    }
    digits == b.len() || uuid || (b.len() >= 16 && hex == b.len() && digits > 0)
}

/// The byte offset of the first `needle` in `haystack` (`Some(0)` for an empty needle). What
/// `str::find` does, without `str`'s substring searcher: that searcher (with the panic formatting
/// and Unicode tables it pulls in) costs the wasm agent about 4 KB of brotli.
pub fn find(haystack: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.as_bytes().windows(needle.len()).position(|w| w == needle.as_bytes())
}

/// Cuts `s` to at most `max` bytes, on a char boundary.
pub fn truncate(mut s: String, max: usize) -> String {
    // Whole chars popped, not `String::truncate` (whose boundary assertion would bring panic
    // formatting into the wasm agent).
    while s.len() > max {
        s.pop();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use alloc::{format, string::ToString, vec};

    #[test]
    fn find_agrees_with_str_find() {
        for (haystack, needle) in [("https://a.b/c", "://"), ("/api/cart", "cart"), ("ab", "abc"), ("é/ü", "/"), ("x", ""), ("", "a")] {
            assert_eq!(find(haystack, needle), haystack.find(needle), "{haystack:?} {needle:?}");
        }
    }

    #[test]
    fn ids_become_placeholders() {
        let cases = [
            ("/users/123/orders/9f8e7d6c5b4a39281706f5e4d3c2b1a0", "/users/:id/orders/:id"),
            ("/users/123/orders/9f8e7d6c5b4a3928", "/users/:id/orders/:id"),
            ("/item/550e8400-e29b-41d4-a716-446655440000/edit", "/item/:id/edit"),
            ("/cart", "/cart"),
            ("/", "/"),
            ("", "/"),
            ("/blog/2024/deadbeef", "/blog/:id/deadbeef"),      // short hex words are names
            ("/a/abcdefabcdefabcdef", "/a/abcdefabcdefabcdef"), // hex letters only: a word
            ("/docs/", "/docs"),
            ("//double//slash", "/double/slash"),
        ];
        for (input, want) in cases {
            assert_eq!(normalise_path(input), want, "{input}");
        }
    }

    #[test]
    fn query_fragment_and_origin_are_dropped() {
        assert_eq!(normalise_path("/search?q=shoes&page=2#top"), "/search");
        assert_eq!(normalise_path("https://user:pw@shop.example:8443/cart/42?x=1"), "/cart/:id");
        assert_eq!(normalise_path("/p#/hash/route/7"), "/p");
        assert_eq!(normalise_path("?only=query"), "/");
    }

    #[test]
    fn api_routes_keep_their_host() {
        assert_eq!(normalise_route("/api/cart/7?x=1"), "/api/cart/:id");
        assert_eq!(normalise_route("https://API.example.com/v1/items/7"), "api.example.com/v1/items/:id");
        assert_eq!(normalise_route("https://token@api.example.com"), "api.example.com/");
        assert_eq!(normalise_route("http://localhost:8080/slow"), "localhost:8080/slow");
    }

    #[test]
    fn long_routes_are_cut_on_a_char_boundary() {
        let long = format!("/{}", "é".repeat(2000));
        let out = normalise_path(&long);
        assert!(out.len() <= MAX_ROUTE_LEN);
        assert!(out.starts_with("/é"));
    }
}
