//! Privacy scrubbing: what a beacon sends as a URL is stored without personal data or secrets.
//!
//! Runs after validation and before the cardinality limits, on every text a beacon sends that can
//! hold a URL: the page `url` and API `route` (already normalised by
//! [`pulse_protocol::route`]: no query or fragment, ids as `:id`), attribution strings (LCP `url`,
//! selectors) and custom metric tag values. Built-in rules first, then the site's own `scrub`
//! rules (config `sites`, `scrub = [{ pattern, replacement }]`):
//!
//! - a path segment that holds an e-mail address becomes `:email`: text, then `@` (or `%40`),
//!   then a domain whose last label is letters (`bob@shop.example`; not `react@18.2.0`);
//! - a JWT segment becomes `:token`: three base64url parts joined by `.`, the first two starting
//!   `eyJ` (JSON objects; two parts: one cut before its signature);
//! - a long random token becomes `:token` (magic-link and reset tokens, API keys): at least
//!   [`TOKEN_MIN_LEN`] characters of `[A-Za-z0-9_-]` (base64 `=` padding aside) with letters and
//!   digits, unless it reads as a slug: words joined by `-` or `_`, each at most
//!   [`SLUG_WORD_MAX_LEN`] characters with at most one change of case inside (`iPhone`), one of
//!   them at least three letters (`/blog/how-to-measure-inp-2024`, `iphone-15-pro-max-256gb`);
//! - an attribution or tag value that is a URL (`http(s)://`, `//` or `/…`) loses its query,
//!   fragment and `user:password@`, and its path segments go through the rules above; a `data:`
//!   URL keeps only its media type; in other text (selectors) e-mail addresses become `:email`.
//!
//! Everything here is linear in the input; a value with nothing to scrub is not copied.

use std::borrow::Cow;

use regex::Regex;

use crate::config::ScrubRule;

/// Placeholder for a segment holding an e-mail address.
pub const EMAIL: &str = ":email";
/// Placeholder for a JWT or a long random token.
pub const TOKEN: &str = ":token";
/// Shortest random token (shorter ones are too often names).
pub const TOKEN_MIN_LEN: usize = 20;
/// Longest word of a slug.
pub const SLUG_WORD_MAX_LEN: usize = 12;

/// What a scrubbed value held (the label of `pulse_values_scrubbed_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Email,
    Jwt,
    Token,
    /// A query string or fragment cut from an attribution or tag URL.
    Query,
    /// A site's own rule matched.
    Rule,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Email, Kind::Jwt, Kind::Token, Kind::Query, Kind::Rule];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Jwt => "jwt",
            Kind::Token => "token",
            Kind::Query => "query",
            Kind::Rule => "rule",
        }
    }
}

/// Scrubbed values of one beacon, by [`Kind`] (counted once the beacon is kept).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally([u64; 5]);

impl Tally {
    fn add(&mut self, kind: Kind) {
        self.0[kind as usize] += 1;
    }

    pub fn get(&self, kind: Kind) -> u64 {
        self.0[kind as usize]
    }
}

/// One site's scrubbing: the built-in rules, then its own.
#[derive(Debug, Default)]
pub struct Scrubber {
    rules: Vec<(Regex, String)>,
}

impl Scrubber {
    /// Compiles a site's rules; an error names the rule (`scrub[1]`) and why its pattern fails.
    pub fn new(rules: &[ScrubRule]) -> Result<Scrubber, String> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| match Regex::new(&rule.pattern) {
                // It would put its replacement between every two characters of every value.
                Ok(re) if re.is_match("") => Err(format!("scrub[{i}]: pattern {:?} matches the empty text", rule.pattern)),
                Ok(re) => Ok((re, rule.replacement.clone())),
                Err(e) => Err(format!("scrub[{i}]: pattern {:?} is not a regular expression: {e}", rule.pattern)),
            })
            .collect::<Result<_, _>>()?;
        Ok(Scrubber { rules })
    }

    /// A normalised page path or API route.
    pub fn path(&self, path: String, tally: &mut Tally) -> String {
        let path = match scrub_segments(&path, tally) {
            Some(scrubbed) => scrubbed,
            None => path,
        };
        self.apply_rules(path, tally)
    }

    /// An attribution string or tag value: URLs lose their query and secrets; then the site's rules.
    pub fn text(&self, text: String, tally: &mut Tally) -> String {
        let text = match scrub_url(&text, tally) {
            Some(scrubbed) => scrubbed,
            None => text,
        };
        self.apply_rules(text, tally)
    }

    fn apply_rules(&self, mut text: String, tally: &mut Tally) -> String {
        for (pattern, replacement) in &self.rules {
            if let Cow::Owned(replaced) = pattern.replace_all(&text, replacement.as_str()) {
                tally.add(Kind::Rule);
                text = replaced;
            }
        }
        text
    }
}

/// A path or route through the built-in rules only: what a read filter (`url=`, `route=`) is
/// compared as, so a filter written with the address or token itself finds the stored rows.
pub fn built_in(path: String) -> String {
    Scrubber::default().path(path, &mut Tally::default())
}

/// `text` with its URL parts scrubbed, or `None` when it is not a URL or has nothing to scrub.
fn scrub_url(text: &str, tally: &mut Tally) -> Option<String> {
    if let Some(rest) = text.strip_prefix("data:") {
        // The payload can be anything the page inlined; the media type says what it was.
        let media = rest.split([';', ',']).next().unwrap_or("");
        return (media.len() != rest.len()).then(|| format!("data:{media}"));
    }
    let (origin, path) = match text.find("://") {
        Some(i) if i > 0 && text[..i].bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')) => {
            let start = i + 3;
            let end = text[start..].find(['/', '?', '#']).map_or(text.len(), |e| start + e);
            // `user:password@` is never stored.
            let host = text[start..end].rfind('@').map_or(start, |at| start + at + 1);
            (Some((&text[..start], &text[host..end], host != start)), &text[end..])
        }
        _ if text.starts_with('/') => (None, text),
        _ => return scrub_words(text, tally),
    };
    let cut = path.find(['?', '#']);
    if cut.is_some() {
        tally.add(Kind::Query);
    }
    let path = &path[..cut.unwrap_or(path.len())];
    let segments = scrub_segments(path, tally);
    let userinfo = origin.is_some_and(|(_, _, userinfo)| userinfo);
    if cut.is_none() && segments.is_none() && !userinfo {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    if let Some((scheme, host, _)) = origin {
        out.push_str(scheme);
        out.push_str(host);
    }
    out.push_str(segments.as_deref().unwrap_or(path));
    Some(out)
}

/// `path` with its e-mail, JWT and token segments replaced, or `None` when none is.
fn scrub_segments(path: &str, tally: &mut Tally) -> Option<String> {
    scrub_pieces(path, |c| c == '/', classify, tally)
}

/// Free text (a selector, `a[href="mailto:bob@shop.example"]`) with the e-mail addresses in it
/// replaced, or `None` when it holds none. Only addresses: a long word in a selector is more
/// often a generated class name than a secret.
fn scrub_words(text: &str, tally: &mut Tally) -> Option<String> {
    if !text.contains('@') && !text.contains("%40") {
        return None;
    }
    // Separators are ASCII, so each is one byte (`scrub_pieces` relies on it).
    let separator = |c: char| c.is_ascii() && !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-' | '@'));
    scrub_pieces(text, separator, |word| is_email(word).then_some(Kind::Email), tally)
}

/// `text` with each piece between one-byte separators that `classify` names replaced by its
/// placeholder, or `None` when none is.
fn scrub_pieces(
    text: &str,
    separator: impl Fn(char) -> bool,
    classify: impl Fn(&str) -> Option<Kind>,
    tally: &mut Tally,
) -> Option<String> {
    let mut out: Option<String> = None;
    let mut done = 0;
    let mut start = 0;
    for piece in text.split(separator) {
        let end = start + piece.len();
        if let Some(kind) = classify(piece) {
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[done..start]);
            out.push_str(if kind == Kind::Email { EMAIL } else { TOKEN });
            done = end;
            tally.add(kind);
        }
        start = end + 1;
    }
    out.map(|mut out| {
        out.push_str(&text[done..]);
        out
    })
}

/// What a path segment holds that must not be stored, if anything.
pub fn classify(segment: &str) -> Option<Kind> {
    // Most segments are short names: one pass rules them out (an e-mail address needs `@` or
    // `%40`; a JWT's header and the start of its payload are already longer than this).
    if segment.len() < TOKEN_MIN_LEN && !segment.bytes().any(|c| c == b'@' || c == b'%') {
        return None;
    }
    if is_email(segment) {
        Some(Kind::Email)
    } else if is_jwt(segment) {
        Some(Kind::Jwt)
    } else if is_token(segment) {
        Some(Kind::Token)
    } else {
        None
    }
}

fn is_email(segment: &str) -> bool {
    let b = segment.as_bytes();
    let at = b
        .iter()
        .position(|&c| c == b'@')
        .map(|i| (i, 1))
        .or_else(|| b.windows(3).position(|w| w[0] == b'%' && w[1] == b'4' && w[2] == b'0').map(|i| (i, 3)));
    let Some((at, len)) = at else { return false };
    let domain = &segment[at + len..];
    // A domain of at least two labels, the last one letters (`react@18.2.0` is a package version).
    at > 0
        && matches!(domain.rsplit_once('.'), Some((name, tld)) if !name.is_empty() && tld.len() >= 2 && tld.bytes().all(|c| c.is_ascii_alphabetic()))
}

fn is_jwt(segment: &str) -> bool {
    // The signature may be missing: a URL cut at its length limit, or an unsigned token.
    let mut parts = segment.split('.');
    let base64url = |p: &str| p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    let (Some(header), Some(payload), signature, None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    // Header and payload are JSON objects: base64url of `{"` is `eyJ`.
    header.len() > 3
        && header.starts_with("eyJ")
        && payload.starts_with("eyJ")
        && base64url(header)
        && base64url(payload)
        && signature.is_none_or(base64url)
}

fn is_token(segment: &str) -> bool {
    let s = segment.trim_end_matches('=');
    let b = s.as_bytes();
    if b.len() < TOKEN_MIN_LEN || !b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
        return false;
    }
    if !b.iter().any(u8::is_ascii_digit) || !b.iter().any(u8::is_ascii_alphabetic) {
        return false;
    }
    !is_slug(s)
}

/// Words joined by `-` or `_`: each short, cased like a word, one of them three letters or more.
fn is_slug(s: &str) -> bool {
    let mut count = 0;
    let mut has_word = false;
    for word in s.split(['-', '_']).filter(|w| !w.is_empty()) {
        count += 1;
        let changes = word.as_bytes().windows(2).filter(|w| w[0].is_ascii_lowercase() && w[1].is_ascii_uppercase()).count();
        if word.len() > SLUG_WORD_MAX_LEN || changes > 1 {
            return false;
        }
        has_word |= word.len() >= 3 && word.bytes().all(|c| c.is_ascii_alphabetic());
    }
    count >= 2 && has_word
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

    fn path(p: &str) -> String {
        Scrubber::default().path(p.to_owned(), &mut Tally::default())
    }

    fn text(t: &str) -> String {
        Scrubber::default().text(t.to_owned(), &mut Tally::default())
    }

    #[test]
    fn secrets_in_paths_become_placeholders() {
        let cases = [
            ("/users/bob@shop.example/orders", "/users/:email/orders"),
            ("/u/bob.smith%40mail.example.co.uk", "/u/:email"),
            ("/u/Bob%40Mail.Example", "/u/:email"),
            (&format!("/auth/{JWT}"), "/auth/:token"),
            ("/auth/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIx", "/auth/:token"),
            ("/reset/Xk9aP2mQ7vL8nB3cR5tY1wZq", "/reset/:token"),
            ("/magic/Xk9_aP2mQ7vL-8nB3cR5tY1wZ", "/magic/:token"),
            ("/k/c2VjcmV0LWFwaS1rZXktMTIzNDU2Nzg5MA==", "/k/:token"),
            ("/invite/k3j9-x8m2-p4q7-r5t1-w6y0", "/invite/:token"),
            ("/order-a1b2c3d4e5f6g7h8x/x", "/:token/x"),
            ("api.example.com/v1/keys/sk_live_51HxYz2eZvKYlo2C0abcDEF", "api.example.com/v1/keys/:token"),
        ];
        for (input, want) in cases {
            assert_eq!(path(input), want, "{input}");
        }
    }

    #[test]
    fn names_and_slugs_stay() {
        for input in [
            "/products/blue-shoes-42",
            "/blog/how-to-measure-inp",
            "/blog/how-to-measure-inp-in-2024-with-web-vitals",
            "/shop/apple-iPhone-15-pro-max-256gb-blue",
            "/docs/user_profile_settings_2024_edition",
            "/ProductCategoryOverviewPage",
            "/npm/react@18.2.0/umd/react.production.min.js",
            "/npm/@babel/core",
            "/@alice.example",
            "/static/js/main.8f3a2b1c9d0e7f6a5b4c.js",
            "/eyJ.js",
            "/eyJxyz.png",
            "/users/:id/orders/:id",
            "/a/short1token",
            "/",
        ] {
            assert_eq!(path(input), input, "{input}");
        }
    }

    #[test]
    fn attribution_urls_lose_query_fragment_and_credentials() {
        let signed = "https://cdn.example.com/img/hero.jpg?X-Amz-Signature=abc123&X-Amz-Credential=AKIA%2F";
        assert_eq!(text(signed), "https://cdn.example.com/img/hero.jpg");
        assert_eq!(text("https://u:pw@cdn.example.com/a.png"), "https://cdn.example.com/a.png");
        assert_eq!(text("//cdn.example.com/u/bob@shop.example/a.png#x"), "//cdn.example.com/u/:email/a.png");
        assert_eq!(text("/img/a.png?v=2"), "/img/a.png");
        assert_eq!(text("https://cdn.example.com?sig=1"), "https://cdn.example.com");
        assert_eq!(text("data:image/png;base64,iVBORw0KGgo="), "data:image/png");
        // In other text (selectors), e-mail addresses only.
        assert_eq!(text(r#"a[href="mailto:bob@shop.example"] > span"#), r#"a[href="mailto::email"] > span"#);
        assert_eq!(text("#user-bob%40shop.example é"), "#:email é");
        assert_eq!(text("div.Button_primary__3xYz9AbCdEfGh12QwE"), "div.Button_primary__3xYz9AbCdEfGh12QwE");
        // Not URLs, or clean: kept as they are.
        for clean in ["html > body > img.hero", "keyboard", "https://cdn.example.com/img/hero.jpg", "data:", "mailto?x"] {
            assert_eq!(text(clean), clean);
        }
    }

    #[test]
    fn site_rules_run_after_the_built_in_ones_and_are_counted() {
        let rules = [
            ScrubRule { pattern: "^/team/[^/]+".into(), replacement: "/team/:user".into() },
            ScrubRule { pattern: "secret-(\\w+)".into(), replacement: "secret-$1-x".into() },
        ];
        let scrubber = Scrubber::new(&rules).expect("good rules");
        let mut tally = Tally::default();
        assert_eq!(scrubber.path("/team/alice/reset/Xk9aP2mQ7vL8nB3cR5tY1wZq".into(), &mut tally), "/team/:user/reset/:token");
        assert_eq!(scrubber.text("#secret-box".into(), &mut tally), "#secret-box-x");
        assert_eq!(scrubber.text("/a?b".into(), &mut tally), "/a");
        assert_eq!((tally.get(Kind::Token), tally.get(Kind::Rule), tally.get(Kind::Query), tally.get(Kind::Email)), (1, 2, 1, 0));
        // Nothing to scrub: nothing counted.
        let mut clean = Tally::default();
        assert_eq!(scrubber.path("/cart".into(), &mut clean), "/cart");
        assert_eq!(clean, Tally::default());
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let rules = [
            ScrubRule { pattern: "ok".into(), replacement: String::new() },
            ScrubRule { pattern: "(unclosed".into(), replacement: ":x".into() },
        ];
        let err = Scrubber::new(&rules).expect_err("a bad rule");
        assert!(err.starts_with("scrub[1]: pattern \"(unclosed\""), "{err}");
        let err = Scrubber::new(&[ScrubRule { pattern: "x*".into(), replacement: ":x".into() }]).expect_err("an empty match");
        assert_eq!(err, "scrub[0]: pattern \"x*\" matches the empty text");
    }
}
