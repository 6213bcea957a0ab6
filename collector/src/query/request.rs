//! The checked parameters of each read endpoint, as types: a handler gets every value parsed,
//! bounded and of a closed set where the SQL names a column from it, or a 400 naming the
//! parameter ([`super::params`] does the parsing).

use pulse_protocol::Vital;
use time::OffsetDateTime;

use super::params::{api_filters, dimension_filters, metric_name, Params, TimeRange, DIMENSIONS};
use super::render::Format;
use crate::errors::QueryError;
use crate::App;

const DEFAULT_PERCENTILES: [f64; 4] = [50.0, 75.0, 95.0, 99.0];

/// Parameters of each endpoint besides the page filters ([`DIMENSIONS`]); the OpenAPI document
/// declares exactly these (a test checks).
pub const VITALS_PARAMS: [&str; 9] = ["site", "metric", "from", "to", "group_by", "percentiles", "format", "source", "limit"];
pub const SERIES_PARAMS: [&str; 8] = ["site", "metric", "from", "to", "interval", "percentile", "format", "source"];
pub const API_CALLS_PARAMS: [&str; 10] = ["site", "from", "to", "group_by", "percentiles", "format", "limit", "route", "method", "status"];

/// A configured site named by `site`.
fn site(params: &Params, app: &App) -> Result<String, QueryError> {
    super::site(params, app).map(str::to_owned)
}

/// Where an answer may come from (`source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceChoice {
    /// Raw rows for short ranges and other percentiles, rollups otherwise.
    Auto,
    Raw,
    Rollup,
}

impl SourceChoice {
    fn parse(params: &Params) -> Result<SourceChoice, QueryError> {
        Ok(match params.choice("source", &["auto", "raw", "rollup"])? {
            "raw" => SourceChoice::Raw,
            "rollup" => SourceChoice::Rollup,
            _ => SourceChoice::Auto,
        })
    }
}

/// What `/v1/vitals` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    None,
    Url,
    Device,
    Browser,
    Os,
    Country,
    Release,
    Nav,
}

impl GroupBy {
    const ALL: [(GroupBy, &'static str); 8] = [
        (GroupBy::None, "none"),
        (GroupBy::Url, "url"),
        (GroupBy::Device, "device"),
        (GroupBy::Browser, "browser"),
        (GroupBy::Os, "os"),
        (GroupBy::Country, "country"),
        (GroupBy::Release, "release"),
        (GroupBy::Nav, "nav"),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(g, _)| *g == self).map_or("none", |(_, n)| n)
    }

    /// The column grouped by; `None` when the answer is one row.
    pub fn column(self) -> Option<&'static str> {
        (self != GroupBy::None).then(|| self.name())
    }

    fn parse(params: &Params) -> Result<GroupBy, QueryError> {
        let names: Vec<&'static str> = Self::ALL.iter().map(|(_, n)| *n).collect();
        let name = params.choice("group_by", &names)?;
        Ok(Self::ALL.iter().find(|(_, n)| *n == name).map_or(GroupBy::None, |(g, _)| *g))
    }
}

/// `GET /v1/vitals`.
#[derive(Debug)]
pub struct VitalsQuery {
    pub site: String,
    pub metric: String,
    /// The web vital, when `metric` is one (custom metrics have no thresholds).
    pub vital: Option<Vital>,
    pub group_by: GroupBy,
    /// Percentile levels in %.
    pub percentiles: Vec<f64>,
    pub format: Format,
    /// Equality filters on the page dimensions (column, value).
    pub filters: Vec<(&'static str, String)>,
    pub limit: u64,
    pub range: TimeRange,
    pub source: SourceChoice,
}

impl VitalsQuery {
    /// Parses and checks `raw`; `now` is the default end of the range.
    pub fn parse(raw: Option<&str>, now: OffsetDateTime, app: &App) -> Result<VitalsQuery, QueryError> {
        let params = Params::parse(raw, &[&VITALS_PARAMS, &DIMENSIONS])?;
        let site = site(&params, app)?;
        let (metric, vital) = metric_name(&params)?;
        Ok(VitalsQuery {
            site,
            metric,
            vital,
            group_by: GroupBy::parse(&params)?,
            percentiles: params.percentiles("percentiles", &DEFAULT_PERCENTILES)?,
            format: Format::from_name(params.choice("format", &Format::NAMES)?),
            filters: dimension_filters(&params)?,
            limit: params.limit()?,
            range: params.range(now)?,
            source: SourceChoice::parse(&params)?,
        })
    }
}

/// A series' bucket size (`interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Minute,
    Hour,
    Day,
}

impl Interval {
    pub fn name(self) -> &'static str {
        match self {
            Interval::Minute => "1m",
            Interval::Hour => "1h",
            Interval::Day => "1d",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Interval::Minute => 60,
            Interval::Hour => 3_600,
            Interval::Day => 86_400,
        }
    }
}

/// `GET /v1/vitals/series`.
#[derive(Debug)]
pub struct SeriesQuery {
    pub site: String,
    pub metric: String,
    pub vital: Option<Vital>,
    pub interval: Interval,
    /// The one percentile level, in %.
    pub percentile: f64,
    pub format: Format,
    pub filters: Vec<(&'static str, String)>,
    pub range: TimeRange,
    pub source: SourceChoice,
}

impl SeriesQuery {
    pub fn parse(raw: Option<&str>, now: OffsetDateTime, app: &App) -> Result<SeriesQuery, QueryError> {
        let params = Params::parse(raw, &[&SERIES_PARAMS, &DIMENSIONS])?;
        let site = site(&params, app)?;
        let (metric, vital) = metric_name(&params)?;
        let interval = match params.choice("interval", &["1h", "1m", "1d"])? {
            "1m" => Interval::Minute,
            "1d" => Interval::Day,
            _ => Interval::Hour,
        };
        let percentile = match params.percentiles("percentile", &[75.0])?.as_slice() {
            [p] => *p,
            _ => return Err(QueryError::bad("percentile", "give exactly one percentile, e.g. 75")),
        };
        Ok(SeriesQuery {
            site,
            metric,
            vital,
            interval,
            percentile,
            format: Format::from_name(params.choice("format", &Format::NAMES)?),
            filters: dimension_filters(&params)?,
            range: params.range(now)?,
            source: SourceChoice::parse(&params)?,
        })
    }
}

/// What `/v1/api-calls` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiGroupBy {
    Route,
    Method,
    Status,
    /// One row over every call that matches the filters (what a budget or rule on one route
    /// needs: a figure per method would hide the other methods' calls).
    None,
}

impl ApiGroupBy {
    pub fn name(self) -> &'static str {
        match self {
            ApiGroupBy::Route => "route",
            ApiGroupBy::Method => "method",
            ApiGroupBy::Status => "status",
            ApiGroupBy::None => "none",
        }
    }

    /// The grouping expression (a string in every case).
    pub fn expression(self) -> &'static str {
        match self {
            ApiGroupBy::Status => "toString(status)",
            ApiGroupBy::None => "''",
            other => other.name(),
        }
    }
}

/// `GET /v1/api-calls`.
#[derive(Debug)]
pub struct ApiCallsQuery {
    pub site: String,
    pub group_by: ApiGroupBy,
    pub percentiles: Vec<f64>,
    pub format: Format,
    pub limit: u64,
    pub range: TimeRange,
    /// Page dimensions, `route` (normalised) and `method` (upper case).
    pub filters: Vec<(&'static str, String)>,
    pub status: Option<u16>,
}

impl ApiCallsQuery {
    pub fn parse(raw: Option<&str>, now: OffsetDateTime, app: &App) -> Result<ApiCallsQuery, QueryError> {
        let params = Params::parse(raw, &[&API_CALLS_PARAMS, &DIMENSIONS])?;
        let site = site(&params, app)?;
        let group_by = match params.choice("group_by", &["route", "method", "status", "none"])? {
            "method" => ApiGroupBy::Method,
            "status" => ApiGroupBy::Status,
            "none" => ApiGroupBy::None,
            _ => ApiGroupBy::Route,
        };
        let (filters, status) = api_filters(&params)?;
        Ok(ApiCallsQuery {
            site,
            group_by,
            percentiles: params.percentiles("percentiles", &DEFAULT_PERCENTILES)?,
            format: Format::from_name(params.choice("format", &Format::NAMES)?),
            limit: params.limit()?,
            range: params.range(now)?,
            filters,
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_sets_map_to_their_names() {
        for (g, name) in GroupBy::ALL {
            assert_eq!(g.name(), name);
        }
        assert_eq!(GroupBy::None.column(), None);
        assert_eq!(GroupBy::Country.column(), Some("country"));
        assert_eq!(ApiGroupBy::Status.expression(), "toString(status)");
        assert_eq!((ApiGroupBy::None.name(), ApiGroupBy::None.expression()), ("none", "''"));
        assert_eq!((Interval::Day.name(), Interval::Day.seconds()), ("1d", 86_400));
    }
}
