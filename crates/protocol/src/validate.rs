//! Validation: wire types in, either clean [`Measurement`]s or an [`Invalid`] naming the field.
//!
//! The collector validates the envelope first ([`envelope`]: a failure rejects the whole beacon)
//! and then each metric on its own ([`metric`]: a failure drops only that metric). Ratings are
//! recomputed here from the value; the client's rating is ignored.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use alloc::collections::BTreeMap;
use core::fmt;

use crate::beacon::{AttrValue, Beacon, Metric, ServerTiming};
use crate::limits::*;
use crate::metric::{is_custom_name, MetricName, Vital};
use crate::rating::Rating;
use crate::route::{normalise_route, truncate};

/// Why a field was refused. [`Reason::code`] is a stable label for counters.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    Missing,
    NotFinite,
    Negative,
    TooLarge { max: f64 },
    TooLong { max: usize },
    TooMany { max: usize },
    Empty,
    BadCharacters,
    UnknownName,
    UnsupportedVersion { got: u32 },
    TooOld,
    InFuture,
    BadValue(&'static str),
}

impl Reason {
    /// Short, stable label (`not_finite`, `too_large`, …) for metrics and logs.
    pub const fn code(&self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::NotFinite => "not_finite",
            Reason::Negative => "negative",
            Reason::TooLarge { .. } => "too_large",
            Reason::TooLong { .. } => "too_long",
            Reason::TooMany { .. } => "too_many",
            Reason::Empty => "empty",
            Reason::BadCharacters => "bad_characters",
            Reason::UnknownName => "unknown_name",
            Reason::UnsupportedVersion { .. } => "unsupported_version",
            Reason::TooOld => "too_old",
            Reason::InFuture => "in_future",
            Reason::BadValue(_) => "bad_value",
        }
    }
}

/// A refused field: its path inside the envelope or metric, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub field: String,
    pub reason: Reason,
}

impl Invalid {
    fn new(field: impl Into<String>, reason: Reason) -> Self {
        Invalid { field: field.into(), reason }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.field)?;
        match &self.reason {
            Reason::Missing => f.write_str("is required"),
            Reason::NotFinite => f.write_str("must be a finite number"),
            Reason::Negative => f.write_str("must not be negative"),
            Reason::TooLarge { max } => write!(f, "is larger than the plausible maximum {max}"),
            Reason::TooLong { max } => write!(f, "is longer than {max} bytes"),
            Reason::TooMany { max } => write!(f, "has more than {max} entries"),
            Reason::Empty => f.write_str("must not be empty"),
            Reason::BadCharacters => f.write_str("contains characters that are not allowed"),
            Reason::UnknownName => {
                f.write_str("is not a known metric (FCP LCP CLS FID INP TTFB api) nor a custom name matching [a-z][a-z0-9_.:-]{0,63}")
            }
            Reason::UnsupportedVersion { got } => {
                write!(f, "version {got} is not supported (this collector speaks {})", crate::VERSION)
            }
            Reason::TooOld => write!(f, "was measured more than {} h before the beacon was sent", MAX_METRIC_AGE_MS / 3_600_000.0),
            Reason::InFuture => write!(f, "lies more than {} s after the beacon was sent", MAX_METRIC_FUTURE_MS / 1000.0),
            Reason::BadValue(why) => f.write_str(why),
        }
    }
}

impl core::error::Error for Invalid {}

/// Checks everything in the envelope except the metrics' contents (their count is checked).
pub fn envelope<M>(beacon: &Beacon<M>) -> Result<(), Invalid> {
    if beacon.v != crate::VERSION {
        return Err(Invalid::new("v", Reason::UnsupportedVersion { got: beacon.v }));
    }
    if site_key(&beacon.site).is_err() {
        let reason = match beacon.site.len() {
            0 => Reason::Empty,
            n if n > MAX_SITE_KEY_LEN => Reason::TooLong { max: MAX_SITE_KEY_LEN },
            _ => Reason::BadCharacters,
        };
        return Err(Invalid::new("site", reason));
    }
    token("session", &beacon.session, MAX_ID_LEN)?;
    token("page", &beacon.page, MAX_ID_LEN)?;
    text("url", &beacon.url, MAX_URL_LEN)?;
    if let Some(release) = &beacon.release {
        self::release(release)?;
    }
    if let Some(env) = &beacon.env {
        text("env", env, MAX_SHORT_LEN)?;
    }
    if let Some(ect) = &beacon.ect {
        text("ect", ect, MAX_ECT_LEN)?;
    }
    if let Some(dpr) = beacon.dpr {
        range("dpr", dpr, MAX_DPR)?;
    }
    if let Some(memory) = beacon.memory {
        range("memory", memory, MAX_MEMORY_GIB)?;
    }
    if let Some(cores) = beacon.cores {
        range("cores", f64::from(cores), f64::from(MAX_CORES))?;
    }
    if let Some(viewport) = beacon.viewport {
        if viewport.w > MAX_VIEWPORT_PX || viewport.h > MAX_VIEWPORT_PX {
            return Err(Invalid::new("viewport", Reason::TooLarge { max: f64::from(MAX_VIEWPORT_PX) }));
        }
    }
    if !beacon.sent_at.is_finite() {
        return Err(Invalid::new("sent_at", Reason::NotFinite));
    }
    if beacon.sent_at < MIN_EPOCH_MS {
        return Err(Invalid::new("sent_at", Reason::BadValue("must be epoch milliseconds after 2020-01-01")));
    }
    if beacon.metrics.len() > MAX_METRICS_PER_BEACON {
        return Err(Invalid::new("metrics", Reason::TooMany { max: MAX_METRICS_PER_BEACON }));
    }
    Ok(())
}

/// A metric that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Client clock when measured, epoch ms (the collector corrects it for skew).
    pub at: f64,
    /// A vital's report number for its id (`n`; 0 when not sent): orders the reports of one id
    /// before `at` does.
    pub report: u32,
    pub kind: Kind,
}

/// What was measured.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Vital {
        vital: Vital,
        value: f64,
        delta: f64,
        /// Recomputed from `value`.
        rating: Rating,
        id: String,
        attribution: BTreeMap<String, AttrValue>,
    },
    Api {
        /// Normalised route ([`normalise_route`]).
        route: String,
        method: String,
        /// 0 when no response arrived.
        status: u16,
        ok: bool,
        error: Option<String>,
        duration: f64,
        server_timing: Vec<ServerTiming>,
        /// The agent's id of this call: a resent beacon's copy counts once. Empty when not sent.
        id: String,
    },
    Custom {
        name: String,
        value: f64,
        tags: BTreeMap<String, String>,
        /// The agent's id of this measurement: a resent beacon's copy counts once. Empty when
        /// not sent.
        id: String,
    },
}

/// Validates one metric of a beacon sent at `sent_at` (client epoch ms).
pub fn metric(m: Metric, sent_at: f64) -> Result<Measurement, Invalid> {
    if !m.at.is_finite() {
        return Err(Invalid::new("at", Reason::NotFinite));
    }
    if m.at < sent_at - MAX_METRIC_AGE_MS {
        return Err(Invalid::new("at", Reason::TooOld));
    }
    if m.at > sent_at + MAX_METRIC_FUTURE_MS {
        return Err(Invalid::new("at", Reason::InFuture));
    }
    let name = MetricName::parse(&m.name).ok_or_else(|| Invalid::new("name", Reason::UnknownName))?;
    let value = m.value.ok_or_else(|| Invalid::new("value", Reason::NotFinite))?;
    // Every kind may carry an id (vitals: web-vitals' instance id; others: one per measurement),
    // checked after the kind's own fields.
    let id = |id: Option<String>| match id {
        Some(id) => token("id", &id, MAX_ID_LEN).map(|()| id),
        None => Ok(String::new()),
    };
    let mut report = 0;
    let kind = match name {
        MetricName::Vital(vital) => {
            let value = bounded("value", value, vital.max_value())?;
            let delta = match m.delta {
                Some(delta) if !delta.is_finite() => return Err(Invalid::new("delta", Reason::NotFinite)),
                Some(delta) if delta.abs() > vital.max_value() => {
                    return Err(Invalid::new("delta", Reason::TooLarge { max: vital.max_value() }))
                }
                Some(delta) => delta,
                None => value,
            };
            let id = id(m.id)?;
            report = match m.n {
                None => 0,
                // (`n as u32` saturates, and NaN becomes 0: only whole numbers in range survive.)
                Some(n) if (1..=MAX_REPORTS).contains(&(n as u32)) && f64::from(n as u32) == n => n as u32,
                Some(_) => {
                    return Err(Invalid::new("n", Reason::BadValue("must be a whole number from 1 (the report's number for its id)")))
                }
            };
            Kind::Vital {
                vital,
                value,
                delta,
                rating: vital.thresholds().rate(value),
                id,
                attribution: attribution(m.attribution.unwrap_or_default())?,
            }
        }
        MetricName::Api => {
            let duration = bounded("value", value, MAX_DURATION_MS)?;
            let route = m.route.ok_or_else(|| Invalid::new("route", Reason::Missing))?;
            text("route", &route, MAX_URL_LEN)?;
            let method = match m.method {
                Some(method) => {
                    if method.is_empty() || method.len() > MAX_METHOD_LEN || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                        return Err(Invalid::new("method", Reason::BadValue("must be an HTTP method such as GET")));
                    }
                    method.to_ascii_uppercase()
                }
                None => "GET".to_owned(),
            };
            let status = m.status.unwrap_or(0);
            if status > 599 || (status != 0 && status < 100) {
                return Err(Invalid::new("status", Reason::BadValue("must be 0 (no response) or 100..=599")));
            }
            let mut server_timing = m.server_timing.unwrap_or_default();
            if server_timing.len() > MAX_SERVER_TIMINGS {
                return Err(Invalid::new("server_timing", Reason::TooMany { max: MAX_SERVER_TIMINGS }));
            }
            for (i, st) in server_timing.iter_mut().enumerate() {
                text(&format!("server_timing[{i}].name"), &st.name, MAX_SHORT_LEN)?;
                // A description is free text from the server: kept, at most 256 bytes of it.
                if let Some(desc) = st.desc.take() {
                    st.desc = Some(truncate(desc, MAX_SHORT_LEN));
                }
                if let Some(dur) = st.dur {
                    bounded(&format!("server_timing[{i}].dur"), dur, MAX_DURATION_MS)?;
                }
            }
            Kind::Api {
                route: normalise_route(&route),
                method,
                status,
                ok: m.ok.unwrap_or((200..300).contains(&status)),
                error: m.error.map(|e| truncate(e, MAX_ERROR_LEN)),
                duration,
                server_timing,
                id: id(m.id)?,
            }
        }
        MetricName::Custom(name) => {
            let tags = m.tags.unwrap_or_default();
            custom(name, value, tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|(problem, key)| {
                let field = match key {
                    Some(key) => format!("tags.{key}"),
                    None => problem.field().to_owned(),
                };
                let reason = match problem {
                    CustomProblem::Name => Reason::UnknownName,
                    CustomProblem::NotFinite => Reason::NotFinite,
                    CustomProblem::TooLarge => Reason::TooLarge { max: MAX_CUSTOM_VALUE },
                    CustomProblem::TooManyTags => Reason::TooMany { max: MAX_TAGS },
                    CustomProblem::TagValueTooLong => Reason::TooLong { max: MAX_SHORT_LEN },
                    CustomProblem::TagValueBadCharacters => Reason::BadCharacters,
                    CustomProblem::TagKey => Reason::BadValue(problem.message()),
                };
                Invalid::new(field, reason)
            })?;
            Kind::Custom { name: name.to_owned(), value, tags, id: id(m.id)? }
        }
    };
    Ok(Measurement { at: m.at, report, kind })
}

/// The site key rule, shared by the agent's `init`, the collector's configuration and every
/// beacon: 1 to [`MAX_SITE_KEY_LEN`] ASCII letters, digits, `_` or `-`. The error completes
/// "the site key …".
pub fn site_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() || key.len() > MAX_SITE_KEY_LEN || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(SITE_KEY_RULE);
    }
    Ok(())
}

/// The site key rule in words (its numbers are [`MAX_SITE_KEY_LEN`]; a test holds them together).
pub const SITE_KEY_RULE: &str = "must be 1 to 64 ASCII letters, digits, _ or -";

/// What is wrong with a custom metric. The collector turns it into an [`Invalid`]; the agent's
/// `record()` shows [`CustomProblem::message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomProblem {
    Name,
    NotFinite,
    TooLarge,
    TooManyTags,
    TagKey,
    TagValueTooLong,
    TagValueBadCharacters,
}

impl CustomProblem {
    /// The field at fault (tag problems name the tag key instead, when there is one).
    pub const fn field(self) -> &'static str {
        match self {
            CustomProblem::Name => "name",
            CustomProblem::NotFinite | CustomProblem::TooLarge => "value",
            _ => "tags",
        }
    }

    /// The rule broken, in words. The numbers are the limits of [`crate::limits`]; a test holds
    /// them together (the agent carries no number formatting).
    pub const fn message(self) -> &'static str {
        match self {
            CustomProblem::Name => "name must match [a-z][a-z0-9_.:-]{0,63} and not be `api`",
            CustomProblem::NotFinite => "value must be a finite number",
            CustomProblem::TooLarge => "value must be within ±1e12",
            CustomProblem::TooManyTags => "at most 16 tags",
            CustomProblem::TagKey => "tag keys must match [a-z][a-z0-9_.:-]{0,63}",
            CustomProblem::TagValueTooLong => "tag values must be at most 256 bytes",
            CustomProblem::TagValueBadCharacters => "tag values must not contain control characters",
        }
    }
}

/// The rules of a custom metric (`record(name, value, tags)` in the agent, `tags` in the wire
/// format). On error, the problem and the tag key it concerns, if any.
pub fn custom<'a>(
    name: &str,
    value: f64,
    tags: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) -> Result<(), (CustomProblem, Option<&'a str>)> {
    if !is_custom_name(name) || name == crate::metric::API {
        return Err((CustomProblem::Name, None));
    }
    if !value.is_finite() {
        return Err((CustomProblem::NotFinite, None));
    }
    if value.abs() > MAX_CUSTOM_VALUE {
        return Err((CustomProblem::TooLarge, None));
    }
    if tags.len() > MAX_TAGS {
        return Err((CustomProblem::TooManyTags, None));
    }
    for (key, value) in tags {
        if !is_custom_name(key) || key.len() > MAX_TAG_KEY_LEN {
            return Err((CustomProblem::TagKey, Some(key)));
        }
        if value.len() > MAX_SHORT_LEN {
            return Err((CustomProblem::TagValueTooLong, Some(key)));
        }
        if value.chars().any(char::is_control) {
            return Err((CustomProblem::TagValueBadCharacters, Some(key)));
        }
    }
    Ok(())
}

fn attribution(map: BTreeMap<String, AttrValue>) -> Result<BTreeMap<String, AttrValue>, Invalid> {
    if map.len() > MAX_ATTRIBUTION_ENTRIES {
        return Err(Invalid::new("attribution", Reason::TooMany { max: MAX_ATTRIBUTION_ENTRIES }));
    }
    map.into_iter()
        .map(|(key, value)| {
            if key.is_empty() || key.len() > MAX_ATTRIBUTION_KEY_LEN || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(Invalid::new("attribution", Reason::BadValue("keys must be 1..=64 ASCII letters, digits or _")));
            }
            let value = match value {
                AttrValue::Num(n) if !n.is_finite() => return Err(Invalid::new(format!("attribution.{key}"), Reason::NotFinite)),
                AttrValue::Num(n) => AttrValue::Num(n),
                // Selectors and URLs can be long; keep their start rather than lose the metric.
                AttrValue::Str(s) => AttrValue::Str(truncate(s, MAX_SHORT_LEN)),
            };
            Ok((key, value))
        })
        .collect()
}

/// Finite, non-negative and at most `max`.
fn bounded(field: &str, value: f64, max: f64) -> Result<f64, Invalid> {
    if !value.is_finite() {
        Err(Invalid::new(field, Reason::NotFinite))
    } else if value < 0.0 {
        Err(Invalid::new(field, Reason::Negative))
    } else if value > max {
        Err(Invalid::new(field, Reason::TooLarge { max }))
    } else {
        Ok(value)
    }
}

fn range(field: &str, value: f64, max: f64) -> Result<(), Invalid> {
    bounded(field, value, max).map(|_| ())
}

/// An identifier: 1..=max printable ASCII characters without spaces or quotes.
fn token(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, Reason::Empty));
    }
    if value.len() > max {
        return Err(Invalid::new(field, Reason::TooLong { max }));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\' | b'`')) {
        return Err(Invalid::new(field, Reason::BadCharacters));
    }
    Ok(())
}

/// Free text: at most `max` bytes, no control characters.
/// A release name, as beacons send it and CI declares it (`POST /v1/releases`): at most
/// [`MAX_SHORT_LEN`] bytes, no control characters. (A beacon may send it empty: no release.)
pub fn release(value: &str) -> Result<(), Invalid> {
    text("release", value, MAX_SHORT_LEN)
}

fn text(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.len() > max {
        return Err(Invalid::new(field, Reason::TooLong { max }));
    }
    if has_control(value) {
        return Err(Invalid::new(field, Reason::BadCharacters));
    }
    Ok(())
}

/// Whether `value` holds a control character, which no short text field (names, routes, tag
/// values, `server_timing` names) may: the agent leaves out what would fail here.
pub fn has_control(value: &str) -> bool {
    // C0 controls and DEL are single bytes; the C1 controls (U+0080 to U+009F) are 0xC2 followed
    // by 0x80 to 0x9F.
    let mut after_c2 = false;
    for &b in value.as_bytes() {
        if b < 0x20 || b == 0x7f || (after_c2 && b < 0xa0) {
            return true;
        }
        after_c2 = b == 0xc2;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beacon::NavigationType;
    #[allow(unused_imports)]
    use alloc::boxed::Box;
    use alloc::{format, string::ToString, vec};

    const NOW: f64 = 1_800_000_000_000.0;

    fn beacon() -> Beacon {
        Beacon {
            v: 1,
            site: "demo".into(),
            session: "s-1".into(),
            page: "p-1".into(),
            url: "/".into(),
            nav: NavigationType::Navigate,
            release: None,
            env: None,
            viewport: None,
            dpr: None,
            memory: None,
            cores: None,
            ect: None,
            sent_at: NOW,
            metrics: vec![],
        }
    }

    fn vital(name: &str, value: f64) -> Metric {
        Metric { name: name.into(), value: Some(value), at: NOW - 10.0, ..Metric::default() }
    }

    fn reason(m: Metric) -> (String, &'static str) {
        let err = metric(m, NOW).expect_err("should be refused");
        (err.field, err.reason.code())
    }

    #[test]
    fn has_control_agrees_with_char_is_control() {
        let mut buf = [0u8; 4];
        for c in (0..=0x2ffu32).chain([0x2028, 0xfeff, 0x10ffff]).filter_map(char::from_u32) {
            let s = c.encode_utf8(&mut buf);
            assert_eq!(has_control(s), c.is_control(), "{c:?}");
            let t = alloc::format!("a{s}\u{c2}b");
            assert_eq!(has_control(&t), c.is_control(), "{t:?}");
        }
    }

    #[test]
    fn a_good_envelope_passes() {
        assert_eq!(envelope(&beacon()), Ok(()));
    }

    #[test]
    fn envelope_errors_name_the_field() {
        type Change = Box<dyn Fn(&mut Beacon)>;
        let cases: Vec<(Change, &str, &str)> = vec![
            (Box::new(|b| b.v = 2), "v", "unsupported_version"),
            (Box::new(|b| b.site = String::new()), "site", "empty"),
            (Box::new(|b| b.site = "x".repeat(65)), "site", "too_long"),
            (Box::new(|b| b.site = "demo' OR 1=1".into()), "site", "bad_characters"),
            (Box::new(|b| b.session = "a b".into()), "session", "bad_characters"),
            (Box::new(|b| b.url = "/x\n".into()), "url", "bad_characters"),
            (Box::new(|b| b.url = "/".repeat(3000)), "url", "too_long"),
            (Box::new(|b| b.sent_at = f64::NAN), "sent_at", "not_finite"),
            (Box::new(|b| b.sent_at = 1_700_000_000.0), "sent_at", "bad_value"),
            (Box::new(|b| b.site = "shop.example".into()), "site", "bad_characters"),
            (Box::new(|b| b.dpr = Some(-1.0)), "dpr", "negative"),
            (Box::new(|b| b.cores = Some(MAX_CORES + 1)), "cores", "too_large"),
            (Box::new(|b| b.memory = Some(MAX_MEMORY_GIB * 2.0)), "memory", "too_large"),
            (Box::new(|b| b.metrics = vec![Metric::default(); MAX_METRICS_PER_BEACON + 1]), "metrics", "too_many"),
        ];
        for (change, field, code) in cases {
            let mut b = beacon();
            change(&mut b);
            let err = envelope(&b).expect_err(field);
            assert_eq!((err.field.as_str(), err.reason.code()), (field, code));
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
        }
    }

    #[test]
    fn vitals_are_rated_by_the_collector() {
        let mut m = vital("LCP", 4100.0);
        m.rating = Some("good".into()); // the client's word is ignored
        let got = metric(m, NOW).expect("valid");
        match got.kind {
            Kind::Vital { vital, rating, delta, .. } => {
                assert_eq!(vital, Vital::Lcp);
                assert_eq!(rating, Rating::Poor);
                assert_eq!(delta, 4100.0, "delta defaults to the value");
            }
            other => panic!("not a vital: {other:?}"),
        }
    }

    #[test]
    fn bad_values_are_refused_by_class() {
        assert_eq!(reason(Metric { value: None, ..vital("LCP", 0.0) }), ("value".into(), "not_finite"));
        assert_eq!(reason(vital("LCP", f64::NAN)), ("value".into(), "not_finite"));
        assert_eq!(reason(vital("INP", f64::INFINITY)), ("value".into(), "not_finite"));
        assert_eq!(reason(vital("FCP", -1.0)), ("value".into(), "negative"));
        assert_eq!(reason(vital("CLS", 10.5)), ("value".into(), "too_large"));
        assert_eq!(reason(vital("TTFB", 3_600_001.0)), ("value".into(), "too_large"));
        assert_eq!(reason(vital("Lcp", 1.0)), ("name".into(), "unknown_name"));
        assert_eq!(reason(vital("Robert'); DROP TABLE metrics;--", 1.0)), ("name".into(), "unknown_name"));
        assert_eq!(reason(Metric { delta: Some(f64::NAN), ..vital("CLS", 0.1) }), ("delta".into(), "not_finite"));
        assert_eq!(reason(Metric { id: Some("x".repeat(200)), ..vital("CLS", 0.1) }), ("id".into(), "too_long"));
        for n in [0.0, -1.0, 1.5, f64::NAN, 2e6] {
            assert_eq!(reason(Metric { n: Some(n), ..vital("CLS", 0.1) }), ("n".into(), "bad_value"), "n = {n}");
        }
        assert_eq!(metric(Metric { n: Some(3.0), ..vital("CLS", 0.1) }, NOW).expect("valid").report, 3);
        assert_eq!(metric(vital("CLS", 0.1), NOW).expect("valid").report, 0, "no n: 0");
        assert_eq!(reason(Metric { at: NOW - MAX_METRIC_AGE_MS - 1.0, ..vital("LCP", 1.0) }), ("at".into(), "too_old"));
        assert_eq!(reason(Metric { at: NOW + MAX_METRIC_FUTURE_MS + 1.0, ..vital("LCP", 1.0) }), ("at".into(), "in_future"));
        assert_eq!(reason(vital("cart.total", 1e13)), ("value".into(), "too_large"));
    }

    #[test]
    fn custom_metrics_may_be_negative_but_tags_are_checked() {
        let ok = metric(vital("cart.delta", -3.5), NOW).expect("custom values may be negative");
        assert!(matches!(ok.kind, Kind::Custom { value, .. } if value == -3.5));

        let mut tags = BTreeMap::new();
        tags.insert("Bad Key".to_owned(), "x".to_owned());
        assert_eq!(reason(Metric { tags: Some(tags), ..vital("cart.total", 1.0) }), ("tags.Bad Key".into(), "bad_value"));

        let many: BTreeMap<_, _> = (0..=MAX_TAGS).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(reason(Metric { tags: Some(many), ..vital("cart.total", 1.0) }), ("tags".into(), "too_many"));
    }

    #[test]
    fn api_calls_are_normalised() {
        let m = Metric {
            name: "api".into(),
            value: Some(120.0),
            at: NOW,
            route: Some("/api/cart/42?x=1".into()),
            method: Some("post".into()),
            status: Some(503),
            ..Metric::default()
        };
        match metric(m, NOW).expect("valid").kind {
            Kind::Api { route, method, status, ok, duration, .. } => {
                assert_eq!((route.as_str(), method.as_str(), status, ok, duration), ("/api/cart/:id", "POST", 503, false, 120.0));
            }
            other => panic!("not an api call: {other:?}"),
        }
        let api = |status| Metric {
            name: "api".into(),
            value: Some(1.0),
            at: NOW,
            route: Some("/a".into()),
            status: Some(status),
            ..Metric::default()
        };
        assert_eq!(reason(api(700)), ("status".into(), "bad_value"));
        assert_eq!(reason(Metric { route: None, ..api(200) }), ("route".into(), "missing"));
        assert_eq!(reason(Metric { method: Some("GET /x".into()), ..api(200) }), ("method".into(), "bad_value"));
        // Status 0 means the request never got a response: a failure.
        assert!(matches!(metric(api(0), NOW).expect("valid").kind, Kind::Api { ok: false, .. }));
        // A server's description is kept, cut to 256 bytes; a long name refuses the metric.
        let timing = |name: &str, desc: &str| ServerTiming { name: name.into(), dur: Some(2.0), desc: Some(desc.into()) };
        let long = Metric { server_timing: Some(vec![timing("db", &"é".repeat(200))]), ..api(200) };
        match metric(long, NOW).expect("valid").kind {
            Kind::Api { server_timing, .. } => assert_eq!(server_timing, [timing("db", &"é".repeat(128))]),
            other => panic!("not an api call: {other:?}"),
        }
        let named = Metric { server_timing: Some(vec![timing(&"n".repeat(257), "")]), ..api(200) };
        assert_eq!(reason(named), ("server_timing[0].name".into(), "too_long"));
    }

    #[test]
    fn attribution_strings_are_cut_numbers_must_be_finite() {
        let mut attr = BTreeMap::new();
        attr.insert("target".to_owned(), AttrValue::Str("div".repeat(500)));
        attr.insert("resourceLoadDelay".to_owned(), AttrValue::Num(12.0));
        let m = Metric { attribution: Some(attr), ..vital("LCP", 1000.0) };
        match metric(m, NOW).expect("valid").kind {
            Kind::Vital { attribution, .. } => {
                assert!(matches!(&attribution["target"], AttrValue::Str(s) if s.len() == MAX_SHORT_LEN));
            }
            other => panic!("not a vital: {other:?}"),
        }
        let mut attr = BTreeMap::new();
        attr.insert("inputDelay".to_owned(), AttrValue::Num(f64::NAN));
        assert_eq!(reason(Metric { attribution: Some(attr), ..vital("INP", 10.0) }), ("attribution.inputDelay".into(), "not_finite"));
    }

    #[test]
    fn wire_json_round_trips_and_tolerates_unknown_fields() {
        let json = r#"{"v":1,"site":"demo","session":"s","page":"p","url":"/","nav":"back-forward-cache",
            "sent_at":1800000000000,"future_field":{"x":1},
            "metrics":[{"name":"CLS","value":0.05,"at":1800000000000,"new_thing":true}]}"#;
        let b: Beacon = serde_json::from_str(json).expect("parses");
        assert_eq!(b.nav, NavigationType::BackForwardCache);
        assert_eq!(b.metrics[0].value, Some(0.05));
        let again: Beacon = serde_json::from_str(&serde_json::to_string(&b).expect("serialises")).expect("parses");
        assert_eq!(again.metrics, b.metrics);
        // `JSON.stringify(NaN)` is `null`: it parses, and validation refuses it.
        let m: Metric = serde_json::from_str(r#"{"name":"LCP","value":null,"at":1}"#).expect("parses");
        assert_eq!(m.value, None);
        for nav in NavigationType::ALL {
            let s = serde_json::to_string(&nav).expect("serialises");
            assert_eq!(s, format!("\"{}\"", nav.as_str()));
        }
    }

    #[test]
    fn site_key_rule_is_one_rule() {
        for good in ["demo", "shop-eu_2", &"k".repeat(MAX_SITE_KEY_LEN)] {
            assert_eq!(site_key(good), Ok(()), "{good}");
        }
        for bad in ["", "my site", "shop.example", "ké", &"k".repeat(MAX_SITE_KEY_LEN + 1)] {
            assert_eq!(site_key(bad), Err(SITE_KEY_RULE), "{bad}");
        }
        assert!(SITE_KEY_RULE.contains(&format!(" {MAX_SITE_KEY_LEN} ")), "the words name the limit");
        let b = |site: &str| Beacon::<Metric> {
            site: site.into(),
            ..serde_json::from_str(
                r#"{"v":1,"site":"x","session":"s","page":"p","url":"/","nav":"navigate","sent_at":1800000000000,"metrics":[]}"#,
            )
            .expect("parses")
        };
        assert_eq!(envelope(&b("shop.example")).expect_err("refused").field, "site");
        assert_eq!(envelope(&b("shop-eu")), Ok(()));
    }

    /// The custom-metric messages (static text for the agent, which formats no numbers) state
    /// the limits of `limits.rs`.
    #[test]
    fn custom_metric_messages_state_the_limits() {
        let says = |p: CustomProblem, n: String| assert!(p.message().contains(&n), "{:?}: {:?} should mention {n}", p, p.message());
        says(CustomProblem::TooManyTags, format!(" {MAX_TAGS} "));
        says(CustomProblem::TagValueTooLong, format!(" {MAX_SHORT_LEN} "));
        says(CustomProblem::Name, format!("{{0,{}}}", MAX_CUSTOM_NAME_LEN - 1));
        says(CustomProblem::TagKey, format!("{{0,{}}}", MAX_TAG_KEY_LEN - 1));
        assert_eq!(MAX_CUSTOM_VALUE, 1e12, "CustomProblem::TooLarge says ±1e12");
        assert!(is_custom_name(&"a".repeat(MAX_CUSTOM_NAME_LEN)) && !is_custom_name(&"a".repeat(MAX_CUSTOM_NAME_LEN + 1)));

        let none: [(&str, &str); 0] = [];
        assert_eq!(custom("checkout", 1.0, none.iter().copied()), Ok(()));
        assert_eq!(custom("api", 1.0, none.iter().copied()), Err((CustomProblem::Name, None)));
        assert_eq!(custom("x", f64::NAN, none.iter().copied()), Err((CustomProblem::NotFinite, None)));
        assert_eq!(custom("x", -2e12, none.iter().copied()), Err((CustomProblem::TooLarge, None)));
        let many: Vec<(String, String)> = (0..=MAX_TAGS).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(custom("x", 1.0, many.iter().map(|(k, v)| (k.as_str(), v.as_str()))), Err((CustomProblem::TooManyTags, None)));
        assert_eq!(custom("x", 1.0, [("Bad", "v")].into_iter()), Err((CustomProblem::TagKey, Some("Bad"))));
        let long = "v".repeat(MAX_SHORT_LEN + 1);
        assert_eq!(custom("x", 1.0, [("k", long.as_str())].into_iter()), Err((CustomProblem::TagValueTooLong, Some("k"))));
        assert_eq!(custom("x", 1.0, [("k", "a\nb")].into_iter()), Err((CustomProblem::TagValueBadCharacters, Some("k"))));
    }
}
