//! Splitting and trimming text at ASCII bytes.
//!
//! What `str::split`, `str::trim` and `str::split_whitespace` do for ASCII separators, without
//! `str`'s pattern searchers and Unicode tables: the wasm agent links this crate, and those
//! searchers (with the panic formatting they bring) are a large part of its size. Splitting at an
//! ASCII byte always lands on a char boundary, so nothing here can panic.

/// The pieces of `s` between the bytes in `separators` (all ASCII), as `str::split` with a set
/// of chars: `pieces("a/b//c", b"/")` yields `a`, `b`, ``, `c`.
pub fn pieces<'a>(s: &'a str, separators: &'a [u8]) -> Pieces<'a> {
    Pieces { rest: Some(s), separators }
}

/// The iterator of [`pieces`].
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    rest: Option<&'a str>,
    separators: &'a [u8],
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        for (i, &b) in rest.as_bytes().iter().enumerate() {
            // Not `contains`: that is `memchr` for bytes, larger in the wasm.
            for &s in self.separators {
                if s == b {
                    let (head, tail) = rest.split_at_checked(i)?;
                    self.rest = tail.get(1..);
                    return Some(head);
                }
            }
        }
        self.rest = None;
        Some(rest)
    }
}

/// ASCII whitespace, as HTTP headers and class lists use it.
pub const WHITESPACE: &[u8] = b" \t\n\r\x0c";

/// The non-empty pieces of `s` between ASCII whitespace (`str::split_whitespace` for ASCII text).
pub fn words(s: &str) -> impl Iterator<Item = &str> {
    pieces(s, WHITESPACE).filter(|w| !w.is_empty())
}

/// The text before and after the first `separator` (ASCII), as `str::split_once`.
pub fn split_once(s: &str, separator: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|b| b == separator)?;
    s.get(..i).zip(s.get(i + 1..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn pieces_agree_with_str_split() {
        for s in ["a/b//c", "", "/", "é/ü/", "no separator", "?x#y/z"] {
            let ours: Vec<&str> = pieces(s, b"/?#").collect();
            let std: Vec<&str> = s.split(['/', '?', '#']).collect();
            assert_eq!(ours, std, "{s:?}");
        }
        let words: Vec<&str> = words("  a\tbc \n d  ").collect();
        assert_eq!(words, ["a", "bc", "d"]);
        assert_eq!(split_once("k=v=w", b'='), Some(("k", "v=w")));
        assert_eq!(split_once("kv", b'='), None);
    }
}
