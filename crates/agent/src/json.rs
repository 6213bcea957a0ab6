//! JSON text written by hand: strings with the escapes JSON needs, and numbers without `core::fmt`
//! (whose float formatting alone would cost the agent about 10 KB).
//!
//! A number is written with the fewest decimals that read back as exactly the same `f64`: the
//! decimal must lie strictly between the halfway points to the neighbouring doubles, checked in
//! exact integer arithmetic. That is the value `JSON.stringify` gives for every number the agent
//! sends (durations, epoch times, CLS), written without an exponent. Below 1e-4 (where 21
//! decimals no longer hold 17 significant digits) the value is rounded to 21 decimals, and
//! below about 3e-23 it is written as 0.

use alloc::string::String;

/// An object being written: `{"a":1,"b":"x"}`.
#[derive(Debug)]
pub struct Obj<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> Obj<'a> {
    pub fn new(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, empty: true }
    }

    /// Continues an object whose opening brace and first members `out` already holds.
    pub fn after(out: &'a mut String) -> Obj<'a> {
        Obj { out, empty: false }
    }

    /// Starts a member; the caller writes its value into the returned string.
    pub fn key(&mut self, key: &str) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        string(self.out, key);
        self.out.push(':');
        self.out
    }

    pub fn str(&mut self, key: &str, value: &str) {
        string(self.key(key), value);
    }

    pub fn opt_str(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.str(key, v);
        }
    }

    /// A number; `null` when it is not finite.
    pub fn num(&mut self, key: &str, value: f64) {
        number(self.key(key), value);
    }

    pub fn opt_num(&mut self, key: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.num(key, v);
        }
    }

    pub fn bool(&mut self, key: &str, value: bool) {
        self.key(key).push_str(if value { "true" } else { "false" });
    }

    pub fn end(self) {
        self.out.push('}');
    }
}

/// Appends `s` as a JSON string.
pub fn string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    // Runs of bytes that need no escape are copied as they are; every byte that does is ASCII, so
    // the runs end on char boundaries.
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.push_str(s.get(run..i).unwrap_or(""));
        run = i + 1;
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
    out.push_str(s.get(run..).unwrap_or(""));
    out.push('"');
}

/// Appends `n` in decimal.
pub fn uint(out: &mut String, n: u64) {
    decimal(out, n, 0);
}

/// Appends `n / 10^decimals` in decimal, without trailing zeros after the point (`1250, 3` →
/// `1.25`, `5, 3` → `0.005`). Digits are written from the most significant one, so nothing is
/// indexed or inserted (which would bring panic paths into the wasm).
fn decimal(out: &mut String, mut n: u64, mut decimals: u32) {
    // Trailing zeros after the point are dropped before writing, not popped after.
    while decimals > 0 && n % 10 == 0 {
        n /= 10;
        decimals -= 1;
    }
    let (mut len, mut place) = (1, 1u64); // `n` has `len` digits, the first worth `place`
    while place <= n / 10 {
        place *= 10;
        len += 1;
    }
    let fraction_only = decimals >= len;
    if fraction_only {
        out.push_str("0.");
        for _ in len..decimals {
            out.push('0');
        }
    }
    loop {
        if len == decimals && !fraction_only {
            out.push('.');
        }
        // `place` is at least 1; `max` says so to the compiler (no divide-by-zero panic path).
        let place_ = place.max(1);
        out.push(char::from(b'0' + (n / place_) as u8));
        n %= place_;
        len -= 1;
        if place == 1 {
            break;
        }
        place /= 10;
    }
}

/// Appends `x` as a JSON number (`null` when it is not finite).
pub fn number(out: &mut String, x: f64) {
    if !x.is_finite() {
        out.push_str("null");
        return;
    }
    let bits = x.to_bits();
    if x < 0.0 {
        out.push('-');
    }
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, exp) = if biased == 0 { (fraction, -1074) } else { (fraction | 1 << 52, biased - 1075) };
    if mantissa == 0 {
        out.push('0');
        return;
    }
    // x = mantissa · 2^exp
    if exp >= 0 {
        uint(out, if exp < 11 { mantissa << exp } else { u64::MAX });
        return;
    }
    let shift = (-exp) as u32;
    if shift >= 120 {
        out.push('0');
        return;
    }
    let m = u128::from(mantissa);
    // Halfway points to the neighbours, times 4 (the lower gap is half as wide at a power of two).
    let low = if fraction == 0 && biased > 1 { 4 * m - 1 } else { 4 * m - 2 };
    let high = 4 * m + 2;
    // `n`, `low` and `high` times 10^k, each step multiplied by ten (smaller in the wasm than
    // three `u128` products by a power of ten).
    let (mut n, mut low, mut high) = (m, low, high);
    let mut digits = 0u64;
    let mut decimals = 0u32;
    for k in 0..=21 {
        if k > 0 {
            n = (n << 3) + (n << 1);
            low = (low << 3) + (low << 1);
            high = (high << 3) + (high << 1);
        }
        let mut c = n >> shift;
        if (n - (c << shift)) << 1 >= 1u128 << shift {
            c += 1;
        }
        digits = c as u64;
        decimals = k;
        let v = (4 * c) << shift;
        if low < v && v < high {
            break;
        }
    }
    decimal(out, digits, decimals);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    fn num(x: f64) -> String {
        let mut s = String::new();
        number(&mut s, x);
        s
    }

    #[test]
    fn numbers_are_shortest_and_read_back_exactly() {
        for (x, want) in [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (1234.5, "1234.5"),
            (0.1, "0.1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-42.125, "-42.125"),
            (1_790_000_000_123.0, "1790000000123"),
            (1_790_000_000_123.4, "1790000000123.4"),
            (2.5e-3, "0.0025"),
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
        ] {
            assert_eq!(num(x), want, "{x:?}");
        }
        // Many values of the kinds the agent sends: each reads back exactly and is no longer than
        // Rust's own shortest form.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for i in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let unit = (seed >> 11) as f64 / (1u64 << 53) as f64;
            let x = match i % 4 {
                0 => unit,            // CLS-like
                1 => unit * 60_000.0, // durations
                2 => (unit * 600_000.0).round() / 10.0,
                _ => 1.79e12 + unit * 1e9, // epoch ms
            };
            let s = num(x);
            assert_eq!(s.parse::<f64>().ok(), Some(x), "{x:?} → {s}");
            assert!(s.len() <= format!("{x}").len(), "{x:?} → {s}, shortest is {x}");
        }
    }

    #[test]
    fn tiny_values_stay_close() {
        for x in [1e-5, 3.3e-7, 1.234_567e-10] {
            let back: f64 = num(x).parse().expect("a number");
            assert!((back - x).abs() <= 5e-22, "{x:?} → {}", num(x));
        }
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let mut out = String::new();
        let mut o = Obj::new(&mut out);
        o.str("name", "LCP");
        o.num("value", 1.5);
        o.opt_str("id", None);
        o.bool("ok", true);
        o.key("tags").push_str("{}");
        o.end();
        assert_eq!(out, r#"{"name":"LCP","value":1.5,"ok":true,"tags":{}}"#);
    }
}
