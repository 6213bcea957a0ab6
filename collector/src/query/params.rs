//! Query-string parsing for the read API, so every bad parameter comes back as a 400 naming it.

use std::collections::HashMap;

use pulse_protocol::metric::is_custom_name;
use pulse_protocol::route::normalise_path;
use pulse_protocol::{NavigationType, Vital};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::errors::QueryError;

/// The parameters of one request, checked against the endpoint's known names.
#[derive(Debug)]
pub struct Params {
    values: HashMap<String, String>,
}

/// Longest range any read parameter may span, days: longer than the rollups are kept (400 days
/// by default), short enough that no parameter asks ClickHouse for years.
pub const MAX_RANGE_DAYS: i64 = 800;

/// Refuses a range (epoch s) longer than [`MAX_RANGE_DAYS`], naming `field`.
pub fn check_span(field: &'static str, from: i64, to: i64) -> Result<(), QueryError> {
    if to.saturating_sub(from) > MAX_RANGE_DAYS * 86_400 {
        return Err(QueryError::bad(field, format!("ranges are limited to {MAX_RANGE_DAYS} days")));
    }
    Ok(())
}

impl Params {
    /// Parses a raw query string; parameters not in one of the `known` lists, and repeated
    /// ones, are refused.
    pub fn parse(raw: Option<&str>, known: &[&[&'static str]]) -> Result<Params, QueryError> {
        let known: Vec<&'static str> = known.iter().flat_map(|list| list.iter().copied()).collect();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| QueryError::bad("query", format!("cannot parse the query string: {e}")))?;
        let mut values = HashMap::new();
        for (name, value) in pairs {
            let Some(&known_name) = known.iter().find(|k| **k == name) else {
                return Err(QueryError::bad("query", format!("unknown parameter {name:?}; known: {}", known.join(", "))));
            };
            if values.insert(name, value).is_some() {
                return Err(QueryError::bad(known_name, "given more than once"));
            }
        }
        Ok(Params { values })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<&str, QueryError> {
        self.get(name).ok_or_else(|| QueryError::bad(name, "is required"))
    }

    /// One of `choices` (default `choices[0]`).
    pub fn choice(&self, name: &'static str, choices: &[&'static str]) -> Result<&'static str, QueryError> {
        match self.get(name) {
            None => Ok(choices[0]),
            Some(v) => choices
                .iter()
                .find(|c| **c == v)
                .copied()
                .ok_or_else(|| QueryError::bad(name, format!("{v:?} is not one of {}", choices.join(", ")))),
        }
    }

    pub fn limit(&self) -> Result<u64, QueryError> {
        self.limit_within(10_000, 100)
    }

    /// `limit`, a whole number from 1 to `max` (default `default`).
    pub fn limit_within(&self, max: u64, default: u64) -> Result<u64, QueryError> {
        match self.get("limit") {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(QueryError::bad("limit", format!("{v:?} is not a whole number from 1 to {max}"))),
            },
        }
    }

    /// `from` and `to` (RFC 3339 or epoch ms), defaulting to the last 24 hours.
    pub fn range(&self, now: OffsetDateTime) -> Result<TimeRange, QueryError> {
        self.range_or(now, time::Duration::hours(24))
    }

    /// `from` and `to`: `to` defaults to `now`, `from` to `length` before `to`.
    pub fn range_or(&self, now: OffsetDateTime, length: time::Duration) -> Result<TimeRange, QueryError> {
        let to = self.get("to").map(|v| parse_time("to", v)).transpose()?.unwrap_or(now);
        let from = self.get("from").map(|v| parse_time("from", v)).transpose()?.unwrap_or(to - length);
        if from >= to {
            return Err(QueryError::bad("from", "must be earlier than to"));
        }
        check_span("from", from.unix_timestamp(), to.unix_timestamp())?;
        Ok(TimeRange { from: from.unix_timestamp(), to: to.unix_timestamp() })
    }

    /// Percentile list such as `50,75,95,99` (each in (0, 100]).
    pub fn percentiles(&self, name: &'static str, default: &[f64]) -> Result<Vec<f64>, QueryError> {
        let Some(list) = self.get(name) else {
            return Ok(default.to_vec());
        };
        let mut out = Vec::new();
        for item in list.split(',') {
            let p: f64 = item.trim().parse().map_err(|_| QueryError::bad(name, format!("{item:?} is not a number")))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(QueryError::bad(name, format!("{item} is not in (0, 100]")));
            }
            if !out.contains(&p) {
                out.push(p);
            }
        }
        if out.len() > 10 {
            return Err(QueryError::bad(name, "at most 10 percentiles"));
        }
        Ok(out)
    }
}

/// A half-open time range `[from, to)` in epoch seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: i64,
    pub to: i64,
}

impl TimeRange {
    pub fn seconds(self) -> i64 {
        self.to - self.from
    }

    /// The range widened to whole buckets of `step` seconds (what a rollup can answer).
    pub fn aligned(self, step: i64) -> TimeRange {
        TimeRange { from: self.from.div_euclid(step) * step, to: (self.to + step - 1).div_euclid(step) * step }
    }
}

pub fn parse_time(name: &'static str, value: &str) -> Result<OffsetDateTime, QueryError> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let out_of_range = || QueryError::bad(name, format!("{value} epoch milliseconds is out of range"));
        // Up to 38 digits parse as an i128, whose nanoseconds could then overflow.
        let nanos = value.parse::<i128>().ok().and_then(|ms| ms.checked_mul(1_000_000)).ok_or_else(out_of_range)?;
        return OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| out_of_range());
    }
    OffsetDateTime::parse(value, &Rfc3339)
        .map_err(|_| QueryError::bad(name, format!("{value:?} is neither RFC 3339 (2026-11-23T10:00:00Z) nor epoch milliseconds")))
}

pub fn format_time(epoch_seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(epoch_seconds).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

/// A metric name the vitals endpoints accept: a web vital or a custom metric.
pub fn metric_name(params: &Params) -> Result<(String, Option<Vital>), QueryError> {
    let name = params.required("metric")?;
    if let Some(vital) = Vital::from_name(name) {
        return Ok((name.to_owned(), Some(vital)));
    }
    if name == pulse_protocol::metric::API {
        return Err(QueryError::bad("metric", "API calls are answered by /v1/api-calls"));
    }
    if is_custom_name(name) {
        return Ok((name.to_owned(), None));
    }
    Err(QueryError::bad("metric", format!("{name:?} is not FCP, LCP, CLS, FID, INP, TTFB or a custom metric name")))
}

/// The equality filters of the vitals endpoints: column name and value.
pub fn dimension_filters(params: &Params) -> Result<Vec<(&'static str, String)>, QueryError> {
    let mut filters = Vec::new();
    for column in DIMENSIONS {
        if let Some(value) = params.get(column) {
            if value.len() > 1024 {
                return Err(QueryError::bad(column, "is longer than 1024 bytes"));
            }
            let value = match column {
                "url" => crate::ingest::scrub::built_in(normalise_path(value)),
                "nav" if !NavigationType::ALL.iter().any(|n| n.as_str() == value) => {
                    return Err(QueryError::bad("nav", format!("{value:?} is not a navigation type")));
                }
                _ => value.to_owned(),
            };
            filters.push((column, value));
        }
    }
    Ok(filters)
}

/// Equality filters (column, value) and the status filter.
pub type ApiFilters = (Vec<(&'static str, String)>, Option<u16>);

/// The filters of API calls (`/v1/api-calls` and API alert rules): the page dimensions, `route`
/// (normalised), `method` (upper case) and `status`.
pub fn api_filters(params: &Params) -> Result<ApiFilters, QueryError> {
    let mut filters = dimension_filters(params)?;
    if let Some(route) = params.get("route") {
        filters.push(("route", crate::ingest::scrub::built_in(pulse_protocol::route::normalise_route(route))));
    }
    if let Some(method) = params.get("method") {
        filters.push(("method", method.to_ascii_uppercase()));
    }
    let status = params
        .get("status")
        .map(|s| s.parse::<u16>().map_err(|_| QueryError::bad("status", format!("{s:?} is not an HTTP status"))))
        .transpose()?;
    Ok((filters, status))
}

/// Columns that vitals can be grouped and filtered by (present in raw rows and rollups).
pub const DIMENSIONS: [&str; 7] = ["url", "device", "browser", "os", "country", "release", "nav"];

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Result<Params, QueryError> {
        Params::parse(Some(q), &[&["site", "metric", "from", "to", "percentiles", "limit"], &DIMENSIONS])
    }

    #[test]
    fn times_parse_both_ways_and_order_is_checked() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid");
        let r = params("from=2026-11-23T10:00:00Z&to=1795438800000").expect("ok").range(now).expect("ok");
        assert_eq!((r.from, r.to), (1795428000, 1795438800));
        let default = params("").expect("ok").range(now).expect("ok");
        assert_eq!(default.seconds(), 86_400);
        // Only `to`: `from` is the default length before it, not before now.
        let week = params("to=1795438800000").expect("ok").range_or(now, time::Duration::days(7)).expect("ok");
        assert_eq!((week.from, week.to), (1795438800 - 7 * 86_400, 1795438800));
        let err = params("from=2026-11-24T00:00:00Z&to=2026-11-23T00:00:00Z").expect("ok").range(now).expect_err("reversed");
        assert_eq!(err.to_string(), "from: must be earlier than to");
        assert!(params("from=yesterday").expect("ok").range(now).expect_err("bad").to_string().starts_with("from: "));
    }

    #[test]
    fn epoch_milliseconds_out_of_range_are_refused_not_overflowed() {
        // 10^37 ms parses as an i128, and its nanoseconds overflow it.
        for big in ["10000000000000000000000000000000000000", "170141183460469231731687303715884105727", "99999999999999999999"] {
            let err = parse_time("to", big).expect_err(big);
            assert_eq!(err.to_string(), format!("to: {big} epoch milliseconds is out of range"));
        }
        assert_eq!(parse_time("from", "1795438800000").expect("ok").unix_timestamp(), 1795438800);
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        assert!(params("metrics=LCP").expect_err("typo").to_string().contains("unknown parameter \"metrics\""));
        assert_eq!(params("site=a&site=b").expect_err("twice").to_string(), "site: given more than once");
    }

    #[test]
    fn percentiles_and_metrics() {
        let p = params("percentiles=75,90,75").expect("ok");
        assert_eq!(p.percentiles("percentiles", &[50.0]).expect("ok"), vec![75.0, 90.0]);
        for bad in ["0", "101", "abc", "NaN"] {
            let p = params(&format!("percentiles={bad}")).expect("ok");
            assert!(p.percentiles("percentiles", &[50.0]).is_err(), "{bad}");
        }
        assert!(metric_name(&params("metric=LCP").expect("ok")).expect("ok").1.is_some());
        assert!(metric_name(&params("metric=cart.total").expect("ok")).expect("ok").1.is_none());
        assert!(metric_name(&params("metric=LCP'%20OR%201=1").expect("ok")).is_err());
        assert!(metric_name(&params("metric=api").expect("ok")).is_err());
        assert!(params("limit=0").expect("ok").limit().is_err());
    }

    #[test]
    fn filters_are_normalised_and_checked() {
        let f = dimension_filters(&params("url=/users/42?x=1&nav=reload").expect("ok")).expect("ok");
        assert_eq!(f, vec![("url", "/users/:id".to_owned()), ("nav", "reload".to_owned())]);
        assert!(dimension_filters(&params("nav=teleport").expect("ok")).is_err());
        // Compared as stored: scrubbed (README, "Privacy").
        let f = dimension_filters(&params("url=/u/bob%2540shop.example/reset/Xk9aP2mQ7vL8nB3cR5tY1wZq").expect("ok")).expect("ok");
        assert_eq!(f, vec![("url", "/u/:email/reset/:token".to_owned())]);
    }

    #[test]
    fn alignment_widens_to_whole_buckets() {
        let r = TimeRange { from: 3_601, to: 7_201 };
        assert_eq!(r.aligned(3_600), TimeRange { from: 3_600, to: 10_800 });
    }
}
