//! The two request boundaries' errors — ingest and query — and their one mapping to HTTP.
//!
//! Every error answers JSON `{"error": "<message>", "field": "<path>"?}` with the status the
//! contract names. Client errors are logged at debug; server errors at error, and their message to
//! the client hides internals.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::ingest::quota::Throttled;

/// Why a beacon was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("body is larger than {max} bytes; split the batch", max = pulse_protocol::limits::MAX_BODY_BYTES)]
    TooLarge,
    #[error("the request body could not be read")]
    BodyUnreadable,
    #[error("content type {0:?} is not accepted; send text/plain or application/json")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    Malformed { field: String, message: String },
    #[error("{0}")]
    Invalid(pulse_protocol::validate::Invalid),
    #[error("unknown site key {0:?}")]
    UnknownSite(String),
    #[error("origin {origin:?} may not send beacons for site {site:?}")]
    OriginNotAllowed { site: String, origin: String },
    #[error("too many {} from this {}; retry later", .0.unit, .0.scope)]
    RateLimited(Throttled),
    #[error("the collector is overloaded; retry later")]
    Overloaded,
    #[error("the collector's spool is full; retry later")]
    SpoolFull,
    #[error("this site's share of the collector's spool is full; retry later")]
    SiteShareFull,
    #[error("the collector cannot store beacons right now; retry later")]
    Storage,
    #[error("the collector is shutting down; retry later")]
    ShuttingDown,
}

impl IngestError {
    /// Stable label for `pulse_beacons_rejected_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::TooLarge => "too_large",
            IngestError::BodyUnreadable => "body_unreadable",
            IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
            IngestError::Malformed { .. } => "malformed",
            IngestError::Invalid(_) => "invalid_envelope",
            IngestError::UnknownSite(_) => "unknown_site",
            IngestError::OriginNotAllowed { .. } => "origin_not_allowed",
            IngestError::RateLimited(t) if t.scope == "ip" => "rate_limited_ip",
            IngestError::RateLimited(_) => "rate_limited_site",
            IngestError::Overloaded => "overloaded",
            IngestError::SpoolFull => "spool_full",
            IngestError::SiteShareFull => "spool_site_share_full",
            IngestError::Storage => "storage_error",
            IngestError::ShuttingDown => "shutting_down",
        }
    }

    /// [`IngestError::reason`], with the unit for a quota (`rate_limited_ip_bytes`), for
    /// `pulse_ingest_refusals_total{reason, site}`.
    pub fn detailed_reason(&self) -> String {
        match self {
            IngestError::RateLimited(t) => format!("{}_{}", self.reason(), t.unit),
            _ => self.reason().to_owned(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            IngestError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::BodyUnreadable | IngestError::Malformed { .. } | IngestError::Invalid(_) => StatusCode::BAD_REQUEST,
            IngestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::UnknownSite(_) | IngestError::OriginNotAllowed { .. } => StatusCode::FORBIDDEN,
            IngestError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Overloaded
            | IngestError::SpoolFull
            | IngestError::SiteShareFull
            | IngestError::Storage
            | IngestError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn field(&self) -> Option<String> {
        match self {
            IngestError::Malformed { field, .. } if !field.is_empty() && field != "." => Some(field.clone()),
            IngestError::Invalid(invalid) => Some(invalid.field.clone()),
            IngestError::UnknownSite(_) | IngestError::OriginNotAllowed { .. } => Some("site".into()),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            IngestError::RateLimited(t) => Some(t.retry_after),
            IngestError::Overloaded => Some(Duration::from_secs(1)),
            // A full spool drains at ClickHouse's pace: come back in a while, not at once.
            IngestError::SpoolFull | IngestError::SiteShareFull => Some(Duration::from_secs(30)),
            IngestError::Storage => Some(Duration::from_secs(5)),
            IngestError::ShuttingDown => Some(Duration::from_secs(5)),
            _ => None,
        }
    }
}

impl From<Throttled> for IngestError {
    fn from(t: Throttled) -> Self {
        IngestError::RateLimited(t)
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        tracing::debug!(reason = self.reason(), error = %self, "beacon refused");
        let mut response = error_response(self.status(), self.to_string(), self.field());
        if let Some(wait) = self.retry_after() {
            set_retry_after(&mut response, wait);
        }
        response
    }
}

/// Why a read request failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("missing or wrong bearer token; send Authorization: Bearer <read key>")]
    Unauthorized,
    #[error("{param}: {message}")]
    BadParam { param: &'static str, message: String },
    #[error("the database could not answer")]
    Storage(#[source] clickhouse::error::Error),
    #[error("this read key may not read site {0:?}")]
    Forbidden(String),
    #[error("too many requests from this address; retry later")]
    RateLimited(Duration),
    #[error("no answer within read_timeout_seconds ({0} s); retry later")]
    TimedOut(u64),
    #[error("the collector is busy with other comparisons and reports; retry later")]
    Busy,
    #[error(
        "the cluster is missing {0}: an answer now would miss its rows; retry later, or add allow_partial=1 to answer from the live shards"
    )]
    ShardsAway(String),
}

/// Marks the answer of a read that ClickHouse could not answer (`QueryError::Storage`), so the
/// layer of [`crate::query::partial`] can find out whether a shard is away.
#[derive(Debug, Clone, Copy)]
pub struct StorageFailure;

impl QueryError {
    pub fn bad(param: &'static str, message: impl Into<String>) -> Self {
        QueryError::BadParam { param, message: message.into() }
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        match &self {
            QueryError::Unauthorized => {
                let mut r = error_response(StatusCode::UNAUTHORIZED, self.to_string(), None);
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            QueryError::Forbidden(_) => error_response(StatusCode::FORBIDDEN, self.to_string(), Some("site".to_owned())),
            QueryError::BadParam { param, .. } => {
                tracing::debug!(error = %self, "query refused");
                error_response(StatusCode::BAD_REQUEST, self.to_string(), Some((*param).to_owned()))
            }
            QueryError::RateLimited(wait) => {
                let mut r = error_response(StatusCode::TOO_MANY_REQUESTS, self.to_string(), None);
                set_retry_after(&mut r, *wait);
                r
            }
            QueryError::Busy => {
                let mut r = error_response(StatusCode::SERVICE_UNAVAILABLE, self.to_string(), None);
                set_retry_after(&mut r, Duration::from_secs(1));
                r
            }
            QueryError::TimedOut(_) => {
                tracing::warn!(error = %self, "read timed out");
                let mut r = error_response(StatusCode::SERVICE_UNAVAILABLE, self.to_string(), None);
                set_retry_after(&mut r, Duration::from_secs(5));
                r
            }
            QueryError::Storage(err) => {
                // ClickHouse stopped the query at a read limit: say which, and what helps.
                let text = err.to_string();
                let message = if text.contains("Code: 159") {
                    "the query ran past read_max_execution_seconds in ClickHouse; narrow the range or the filters".to_owned()
                } else if text.contains("Code: 241") {
                    "the query needed more than read_max_memory_bytes in ClickHouse; narrow the range or the filters".to_owned()
                } else {
                    tracing::error!(%err, "query failed in ClickHouse");
                    self.to_string()
                };
                let mut r = error_response(StatusCode::SERVICE_UNAVAILABLE, message, None);
                set_retry_after(&mut r, Duration::from_secs(5));
                r.extensions_mut().insert(StorageFailure);
                r
            }
            QueryError::ShardsAway(_) => {
                tracing::warn!(error = %self, "read refused: a shard is away");
                let mut r = error_response(StatusCode::SERVICE_UNAVAILABLE, self.to_string(), None);
                set_retry_after(&mut r, Duration::from_secs(5));
                r
            }
        }
    }
}

/// Why a release declaration (`POST /v1/releases`) was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeclareError {
    #[error("missing or wrong bearer token; send Authorization: Bearer <write key> (a key of write_keys; read keys cannot declare)")]
    Unauthorized,
    #[error("{}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
    Malformed { field: &'static str, message: String },
    #[error("{0}")]
    Invalid(pulse_protocol::validate::Invalid),
    #[error("site: {0:?} is not a configured site")]
    UnknownSite(String),
    #[error("this write key may not declare releases of site {0:?}")]
    Forbidden(String),
    #[error("the database could not store the release; retry later")]
    Storage(#[source] clickhouse::error::Error),
}

impl DeclareError {
    pub fn malformed(field: &'static str, message: impl Into<String>) -> Self {
        DeclareError::Malformed { field, message: message.into() }
    }

    /// Stable label for `pulse_release_declarations_total{outcome}`.
    pub fn reason(&self) -> &'static str {
        match self {
            DeclareError::Unauthorized => "unauthorized",
            DeclareError::Malformed { field: "", .. } => "malformed",
            DeclareError::Malformed { field: "site", .. } => "invalid_site",
            DeclareError::Malformed { .. } | DeclareError::Invalid(_) => "invalid_release",
            DeclareError::UnknownSite(_) => "unknown_site",
            DeclareError::Forbidden(_) => "forbidden",
            DeclareError::Storage(_) => "storage_error",
        }
    }

    /// The body field at fault, if one is.
    pub fn field(&self) -> Option<String> {
        match self {
            DeclareError::Malformed { field, .. } if !field.is_empty() => Some((*field).to_owned()),
            DeclareError::Invalid(invalid) => Some(invalid.field.clone()),
            DeclareError::UnknownSite(_) | DeclareError::Forbidden(_) => Some("site".to_owned()),
            _ => None,
        }
    }
}

impl IntoResponse for DeclareError {
    fn into_response(self) -> Response {
        let status = match &self {
            DeclareError::Unauthorized => StatusCode::UNAUTHORIZED,
            DeclareError::Malformed { .. } | DeclareError::Invalid(_) | DeclareError::UnknownSite(_) => StatusCode::BAD_REQUEST,
            DeclareError::Forbidden(_) => StatusCode::FORBIDDEN,
            DeclareError::Storage(err) => {
                tracing::error!(%err, "cannot store a declared release");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        if status.is_client_error() {
            tracing::debug!(error = %self, "release declaration refused");
        }
        let mut response = error_response(status, self.to_string(), self.field());
        match status {
            StatusCode::UNAUTHORIZED => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => set_retry_after(&mut response, Duration::from_secs(5)),
            _ => {}
        }
        response
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

fn error_response(status: StatusCode, error: String, field: Option<String>) -> Response {
    (status, Json(ErrorBody { error, field })).into_response()
}

fn set_retry_after(response: &mut Response, wait: Duration) {
    // Retry-After is whole seconds; round up so a client never comes back too early.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
}
