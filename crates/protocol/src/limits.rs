//! Size and count limits of the wire format. The agent stays under them; the collector enforces them.

/// Largest beacon body in bytes: the browser's keepalive budget shared by `sendBeacon` and
/// `fetch(..., {keepalive: true})` is 64 KiB per page, so the agent splits larger batches.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most metrics in one beacon. The agent sends 50 at a time; this leaves room for a backlog
/// flushed on page hide, and stops one request from carrying an unbounded amount of work.
pub const MAX_METRICS_PER_BEACON: usize = 500;
/// Longest plausible duration of anything we time, in ms (one hour). Longer values are clock
/// jumps or tabs left in the background, and would poison percentiles.
pub const MAX_DURATION_MS: f64 = 3_600_000.0;
/// Largest plausible CLS score. Real pages stay far below 1; 10 means something is broken.
pub const MAX_CLS: f64 = 10.0;
/// Largest magnitude of a custom metric value.
pub const MAX_CUSTOM_VALUE: f64 = 1e12;
/// Longest site key (`[A-Za-z0-9_-]`, see `validate::site_key`).
pub const MAX_SITE_KEY_LEN: usize = 64;
/// Longest session id, page id or metric id.
pub const MAX_ID_LEN: usize = 128;
/// Highest report number (`n`) of one vital's id: a page view reports each vital a few times.
pub const MAX_REPORTS: u32 = 1_000_000;
/// Longest URL or route before normalisation.
pub const MAX_URL_LEN: usize = 2048;
/// Longest route kept after normalisation; longer ones are cut (on a char boundary).
pub const MAX_ROUTE_LEN: usize = 512;
/// Longest short string: release, env, method, connection type, attribution string.
pub const MAX_SHORT_LEN: usize = 256;
/// Longest error message of a failed API call.
pub const MAX_ERROR_LEN: usize = 512;
/// Longest custom metric name (`[a-z][a-z0-9_.:-]{0,63}`).
pub const MAX_CUSTOM_NAME_LEN: usize = 64;
/// Longest HTTP method of an API call.
pub const MAX_METHOD_LEN: usize = 16;
/// Longest effective connection type (`4g`, `slow-2g`).
pub const MAX_ECT_LEN: usize = 16;
/// Largest plausible device pixel ratio.
pub const MAX_DPR: f64 = 16.0;
/// Largest plausible `navigator.deviceMemory`, GiB (browsers report at most 8 today).
pub const MAX_MEMORY_GIB: f64 = 1024.0;
/// Most plausible `navigator.hardwareConcurrency`.
pub const MAX_CORES: u32 = 1024;
/// Widest or tallest plausible viewport, CSS pixels.
pub const MAX_VIEWPORT_PX: u32 = 100_000;
/// Longest attribution key (`[A-Za-z0-9_]`).
pub const MAX_ATTRIBUTION_KEY_LEN: usize = 64;
/// Most tags on a custom metric.
pub const MAX_TAGS: usize = 16;
/// Longest tag key (tag keys follow the custom-name pattern).
pub const MAX_TAG_KEY_LEN: usize = 64;
/// Most attribution entries on one vital.
pub const MAX_ATTRIBUTION_ENTRIES: usize = 32;
/// Most `Server-Timing` entries kept on one API call.
pub const MAX_SERVER_TIMINGS: usize = 16;
/// How long before the envelope's `sent_at` a metric may have been measured (24 h): the agent
/// never keeps metrics longer than a page lives plus a retry.
pub const MAX_METRIC_AGE_MS: f64 = 24.0 * 3_600_000.0;
/// How far after `sent_at` a metric's `at` may lie (clock steps between reading two clocks).
pub const MAX_METRIC_FUTURE_MS: f64 = 60_000.0;
/// Earliest plausible `sent_at`: 2020-01-01T00:00:00Z in epoch ms. Older means a broken clock
/// or a value in seconds instead of milliseconds.
pub const MIN_EPOCH_MS: f64 = 1_577_836_800_000.0;
