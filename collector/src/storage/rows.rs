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
    /// Arrival order (receive time in ms, then the position in the beacon): of two reports of
    /// one metric id that the page's clock cannot tell apart, the later arrival is the newer.
    pub seq: u64,
    /// The page's own clock when measured (the metric's `at`, epoch ms, not skew-corrected): the
    /// reports of one id come from one page, so this orders them whatever the collectors'
    /// clocks say. 0 in rows stored before it existed.
    pub page_at: u64,
    /// A vital's report number for its id (the agent's `n`; 0 when not sent): orders the
    /// reports of one id before `page_at` does (a page's clock may step back or repeat a ms).
    pub report_n: u32,
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
    /// Arrival order, as [`MetricRow::seq`]: with the page view it identifies the call, so a row
    /// shipped twice (delivery from the spool is at least once) is counted once.
    pub seq: u64,
    /// The agent's id of the call: with the page view it identifies the call across a resent
    /// beacon (which arrives with another `seq`). Empty from agents that send none.
    pub call_id: String,
}

/// What identifies one API call (as [`super::finalize::REPORT_KEY`] does a custom metric): the
/// row itself, its page view and arrival order. A row shipped twice is one; rows stored before
/// `seq` existed that are equal in every field count once.
pub const API_CALL_KEY: &str =
    "if(call_id = '', cityHash64(page, session, seq, event_time, received_at, route, method, status, duration), cityHash64(page, session, call_id))";

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

/// Rows as spool record format 1 stored them (before `seq`), read so that records spooled by an
/// older collector are shipped, not quarantined, after an upgrade.
pub mod v1 {
    use serde::Deserialize;

    use super::v2::ApiCallRow;

    #[derive(Debug, Deserialize)]
    pub struct MetricRow {
        site: String,
        event_time: u32,
        received_at: u32,
        name: String,
        value: f64,
        delta: f64,
        rating: i8,
        metric_id: String,
        session: String,
        page: String,
        url: String,
        nav: String,
        release: String,
        env: String,
        device: String,
        browser: String,
        os: String,
        country: String,
        ect: String,
        viewport_w: u32,
        viewport_h: u32,
        dpr: f32,
        memory: f32,
        cores: u16,
        skew_ms: i64,
        attribution: String,
        tag_keys: Vec<String>,
        tag_values: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    pub struct Batch {
        metrics: Vec<MetricRow>,
        api_calls: Vec<ApiCallRow>,
    }

    impl Batch {
        /// Today's rows, with the arrival order ingest would have given them (`received_ms` is
        /// the record's receive time).
        pub fn upgrade(self, received_ms: u64) -> super::Batch {
            let metrics = self.metrics.into_iter().enumerate().map(|(i, m)| (m, (received_ms << 10) | (i as u64 & 1023))).collect();
            super::v2::Batch { metrics, api_calls: self.api_calls }.upgrade(received_ms)
        }
    }

    impl MetricRow {
        /// Today's row, with the arrival order `seq` (formats 2 and 3 stored a row as these
        /// fields and then `seq`) and no page clock.
        pub(super) fn with_seq(self, seq: u64) -> super::MetricRow {
            let m = self;
            super::MetricRow {
                site: m.site,
                event_time: m.event_time,
                received_at: m.received_at,
                name: m.name,
                value: m.value,
                delta: m.delta,
                rating: m.rating,
                metric_id: m.metric_id,
                session: m.session,
                page: m.page,
                url: m.url,
                nav: m.nav,
                release: m.release,
                env: m.env,
                device: m.device,
                browser: m.browser,
                os: m.os,
                country: m.country,
                ect: m.ect,
                viewport_w: m.viewport_w,
                viewport_h: m.viewport_h,
                dpr: m.dpr,
                memory: m.memory,
                cores: m.cores,
                skew_ms: m.skew_ms,
                attribution: m.attribution,
                tag_keys: m.tag_keys,
                tag_values: m.tag_values,
                seq,
                page_at: 0,
                report_n: 0,
            }
        }
    }
}

/// Rows as spool record format 2 stored them (API calls before `seq`).
pub mod v2 {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    pub struct ApiCallRow {
        site: String,
        event_time: u32,
        received_at: u32,
        route: String,
        method: String,
        status: u16,
        ok: u8,
        error: String,
        duration: f64,
        server_timing: String,
        session: String,
        page: String,
        url: String,
        nav: String,
        release: String,
        env: String,
        device: String,
        browser: String,
        os: String,
        country: String,
    }

    #[derive(Debug, Deserialize)]
    pub struct Batch {
        /// A metric row as format 1 had it, then its `seq`.
        pub(super) metrics: Vec<(super::v1::MetricRow, u64)>,
        pub(super) api_calls: Vec<ApiCallRow>,
    }

    impl Batch {
        /// Today's rows: each API call gets an arrival order from the record's receive time and
        /// its position among the record's calls (the same at every read, so a record shipped
        /// twice gives the same rows).
        pub fn upgrade(self, received_ms: u64) -> super::Batch {
            let api_calls = self.api_calls.into_iter().enumerate().map(|(i, c)| (c, (received_ms << 10) | (i as u64 & 1023))).collect();
            super::v3::Batch { metrics: self.metrics, api_calls }.upgrade()
        }
    }

    impl ApiCallRow {
        /// Today's row, with the arrival order `seq` (format 3 stored a call as these fields and
        /// then `seq`) and no agent's id.
        pub(super) fn with_seq(self, seq: u64) -> super::ApiCallRow {
            let c = self;
            super::ApiCallRow {
                site: c.site,
                event_time: c.event_time,
                received_at: c.received_at,
                route: c.route,
                method: c.method,
                status: c.status,
                ok: c.ok,
                error: c.error,
                duration: c.duration,
                server_timing: c.server_timing,
                session: c.session,
                page: c.page,
                url: c.url,
                nav: c.nav,
                release: c.release,
                env: c.env,
                device: c.device,
                browser: c.browser,
                os: c.os,
                country: c.country,
                seq,
                call_id: String::new(),
            }
        }
    }
}

/// Rows as spool record format 3 stored them (API calls before `call_id`).
pub mod v3 {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    pub struct Batch {
        /// A metric row as format 1 had it, then its `seq`.
        pub(super) metrics: Vec<(super::v1::MetricRow, u64)>,
        /// An API call as format 2 had it, then its `seq`.
        pub(super) api_calls: Vec<(super::v2::ApiCallRow, u64)>,
    }

    impl Batch {
        /// Today's rows: API calls without an agent's id.
        pub fn upgrade(self) -> super::Batch {
            let api_calls = self.api_calls.into_iter().map(|(c, seq)| c.with_seq(seq)).collect();
            let metrics = self.metrics.into_iter().map(|(m, seq)| m.with_seq(seq)).collect();
            super::Batch { metrics, api_calls }
        }
    }
}
