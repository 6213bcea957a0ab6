//! Query latency: synthetic metrics spread over 30 days (1 M and 10 M rows; `--quick`: 100 k and
//! 1 M), loaded through the real schema so the rollup views fill as in production. The API's
//! answers (rollups for long ranges) beside the same question asked of the raw table directly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pulse_collector::config::Config;
use pulse_testkit::clickhouse;
use serde_json::Value;

use crate::report::{median, Report};

const SECTION: &str = "4. query latency (median of 5; API vs the raw table in ClickHouse)";
const REPEAT: usize = 5;

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn request(client: &Http, method: &str, url: &str, auth: Option<&str>, body: &str) -> (u16, Bytes) {
    let mut builder = hyper::Request::builder().method(method).uri(url);
    if let Some(key) = auth {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    let response = client.request(builder.body(Full::new(Bytes::from(body.to_owned()))).expect("request")).await.expect("response");
    let status = response.status().as_u16();
    (status, response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default())
}

/// Median wall time of `REPEAT` runs of one request, ms; and the last answer.
async fn timed(client: &Http, method: &str, url: &str, auth: Option<&str>, body: &str) -> (f64, Bytes) {
    let mut times = Vec::new();
    let mut last = Bytes::new();
    for _ in 0..REPEAT {
        let started = Instant::now();
        let (status, bytes) = request(client, method, url, auth, body).await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&bytes));
        last = bytes;
    }
    (median(&mut times), last)
}

pub async fn run(report: &mut Report, quick: bool) {
    let sizes: [u64; 2] = if quick { [100_000, 1_000_000] } else { [1_000_000, 10_000_000] };
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let ch = clickhouse();
    for rows in sizes {
        let db = ch.fresh_database(&format!("bench_query_{rows}"));
        let config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            clickhouse_url: ch.url.clone(),
            clickhouse_database: db.clone(),
            spool_dir: pulse_testkit::temp_dir("bench-query-spool"),
            ..Config::default()
        };
        let running = pulse_collector::start(config).await.expect("collector starts");
        let label = if rows >= 1_000_000 { format!("{} M rows", rows / 1_000_000) } else { format!("{} k rows", rows / 1_000) };

        // Spread over the last 30 days; 50 pages, three device classes, five vitals.
        let load = format!(
            "INSERT INTO {db}.metrics SELECT 'demo', toDateTime(toUInt32(now()) - intDiv(number * 2592000, {rows})), now(), \
             arrayElement(['LCP','INP','CLS','FCP','TTFB'], number % 5 + 1), \
             if(number % 5 = 2, ((number * 7919) % 1000) / 1000, toFloat64((number * 7919) % 6000)), 0, 1, \
             concat('v1-', toString(number)), concat('s-', toString(number % 50000)), concat('p-', toString(intDiv(number, 20))), \
             concat('/page/', toString(number % 50)), 'navigate', '1.2.3', '', arrayElement(['desktop','mobile','tablet'], number % 3 + 1), \
             'Chrome', 'Linux', '', '4g', 1280, 800, 2, 8, 8, 0, '', [], [] FROM numbers({rows})"
        );
        let started = Instant::now();
        let (status, body) = request(&client, "POST", &format!("{}/", ch.url), None, &load).await;
        assert_eq!(status, 200, "load: {}", String::from_utf8_lossy(&body));
        report.add(
            SECTION,
            format!("{label}: load through the schema (raw + rollup views)"),
            started.elapsed().as_secs_f64() * 1000.0,
            "ms",
        );

        let base = format!("http://{}", running.addr);
        let api = |q: &str| format!("{base}{q}");
        let key = Some("dev-read-key");
        let raw = |range: &str, group: &str| {
            format!(
                "SELECT {group}, quantileExact(0.75)(value) FROM {db}.metrics WHERE site = 'demo' AND name = 'LCP' \
                 AND event_time >= now() - {range} GROUP BY {group} ORDER BY {group} FORMAT JSON"
            )
        };
        let questions = [
            ("p75 LCP by page, 24 h", "/v1/vitals?site=demo&metric=LCP&group_by=url&from=now-24h&to=now", raw("86400", "url")),
            ("p75 LCP by page, 30 days", "/v1/vitals?site=demo&metric=LCP&group_by=url&from=now-30d&to=now", raw("2592000", "url")),
            (
                "p75 LCP by hour, 30 days (series)",
                "/v1/vitals/series?site=demo&metric=LCP&interval=1h&percentile=75&from=now-30d&to=now",
                raw("2592000", "toStartOfHour(event_time)"),
            ),
        ];
        for (question, path, sql) in questions {
            let path = relative_times(path);
            let (api_ms, answer) = timed(&client, "GET", &api(&path), key, "").await;
            let source =
                serde_json::from_slice::<Value>(&answer).ok().and_then(|v| v["source"].as_str().map(str::to_owned)).unwrap_or_default();
            let (raw_ms, _) = timed(&client, "POST", &format!("{}/", ch.url), None, &sql).await;
            report.compare(SECTION, format!("{label}: {question} — API ({source})"), api_ms, "ms", "raw table, quantileExact", raw_ms);
        }
        running.stop().await;
        let _ = request(&client, "POST", &format!("{}/", ch.url), None, &format!("DROP DATABASE IF EXISTS {db}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `now-24h` / `now-30d` / `now` as epoch ms (the API takes RFC 3339 or epoch ms), so the range
/// is exactly what it says (a range a little over 24 h would be answered from rollups).
fn relative_times(path: &str) -> String {
    let now = pulse_testkit::now_ms() as u64;
    path.replace("from=now-24h", &format!("from={}", now - 86_400_000))
        .replace("from=now-30d", &format!("from={}", now - 2_592_000_000))
        .replace("to=now", &format!("to={now}"))
}
