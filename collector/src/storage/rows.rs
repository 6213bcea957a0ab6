//! Row types, field for field the columns of `schema.rs` (RowBinary is positional by name list).

use clickhouse::Row;
use serde::{Deserialize, Serialize};

/// Storage code of a rating (`Enum8` in the `metrics` table).
pub fn rating_code(rating: Option<pulse_protocol::Rating>) -> i8 {
    match rating {
        None => 0,
        Some(pulse_protocol::Rating::Good) => 1,
        Some(pulse_protocol::Rating::NeedsImprovement) => 2,
        Some(pulse_protocol::Rating::Poor) => 3,
    }
}

/// One vital or custom metric (`metrics` table).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct MetricRow {
    pub site: String,
    /// Skew-corrected event time, epoch seconds.
    pub event_time: u32,
    /// Server receive time, epoch seconds.
    pub received_at: u32,
    pub name: String,
    pub value: f64,
    pub delta: f64,
    /// See [`rating_code`].
    pub rating: i8,
    pub metric_id: String,
    pub session: String,
    pub page: String,
    pub url: String,
    pub nav: String,
    pub release: String,
    pub env: String,
    pub device: String,
    pub browser: String,
    pub os: String,
    pub country: String,
    pub ect: String,
    pub viewport_w: u32,
    pub viewport_h: u32,
    pub dpr: f32,
    /// `navigator.deviceMemory`, GiB; 0 when not sent.
    pub memory: f32,
    /// `navigator.hardwareConcurrency`; 0 when not sent.
    pub cores: u16,
    /// Server receive time minus client `sent_at`, ms.
    pub skew_ms: i64,
    /// Attribution as a JSON object (text; 18.16 has no `Map`).
    pub attribution: String,
    pub tag_keys: Vec<String>,
    pub tag_values: Vec<String>,
}

/// One timed `fetch`/XHR (`api_calls` table).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct ApiCallRow {
    pub site: String,
    pub event_time: u32,
    pub received_at: u32,
    pub route: String,
    pub method: String,
    pub status: u16,
    pub ok: u8,
    pub error: String,
    /// Milliseconds.
    pub duration: f64,
    /// `Server-Timing` entries as a JSON array.
    pub server_timing: String,
    pub session: String,
    pub page: String,
    pub url: String,
    pub nav: String,
    pub release: String,
    pub env: String,
    pub device: String,
    pub browser: String,
    pub os: String,
    pub country: String,
}

/// The rows of one accepted beacon: the unit that ingest stores in the spool, one record each.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub metrics: Vec<MetricRow>,
    pub api_calls: Vec<ApiCallRow>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.metrics.len() + self.api_calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
