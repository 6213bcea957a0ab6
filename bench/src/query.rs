//! Query latency over realistic synthetic traffic spread over 30 days (1 M and 10 M rows;
//! `--quick`: 100 k and 1 M; `--big`: 10 M and 100 M): Zipf-distributed pages (2 000), five
//! browsers, five systems, ten countries, three releases, three navigation types, three device
//! classes, and 10 % of CLS and INP page views reported twice. Loaded into the raw table, made final
//! by the collector's own finalizer (timed), then the API's answers (exact for 24 h, rollups per
//! query shape for 30 days) beside the same question asked of the raw table with `quantileExact`,
//! the two taken in turns (after one untimed run of each) while no background finalizer runs.
//! Disk bytes per stored metric, for every table, are printed too.

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

const SECTION: &str = "4. query latency and storage (median of 5; API vs the raw table in ClickHouse)";
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

/// Median wall times (ms) of `REPEAT` runs of two requests taken in turns (so both see the same
/// machine), after one untimed run of each; and the first one's last answer.
async fn timed_pair(client: &Http, first: (&str, &str, Option<&str>, &str), second: (&str, &str, Option<&str>, &str)) -> (f64, f64, Bytes) {
    let (mut a_times, mut b_times) = (Vec::new(), Vec::new());
    let mut last = Bytes::new();
    for run in 0..=REPEAT {
        for (i, (method, url, auth, body)) in [first, second].into_iter().enumerate() {
            let started = Instant::now();
            let (status, bytes) = request(client, method, url, auth, body).await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&bytes));
            if run == 0 {
                continue; // warm-up
            }
            if i == 0 {
                a_times.push(ms);
                last = bytes;
            } else {
                b_times.push(ms);
            }
        }
    }
    (median(&mut a_times), median(&mut b_times), last)
}

/// Rows spread over the last 30 days, as the agent would report them (see the module docs).
fn load_sql(db: &str, rows: u64) -> String {
    // u(k): a uniform number in [0, 1) from the row number, one stream per k.
    let u = |k: u32| format!("(cityHash64(number, {k}) % 1000000) / 1000000");
    let pick = |list: &str, k: u32| format!("arrayElement([{list}], toUInt32(cityHash64(number, {k}) % length([{list}])) + 1)");
    format!(
        "INSERT INTO {db}.metrics (site, event_time, received_at, name, value, delta, rating, metric_id, session, page, url, nav, release,
            device, browser, os, country, ect, seq)
         SELECT 'demo', t, t, name, value, value, rating, id, concat('s-', toString(intDiv(pv, 4))), concat('p-', toString(pv)),
            concat('/page/', toString(toUInt32(exp({zipf} * log(2000))) - 1)),
            {nav}, {release}, {device}, {browser}, {os}, {country}, '4g', number
         FROM (SELECT number, toDateTime(toUInt32(now()) - intDiv(number * 2592000, {rows})) AS t,
                 arrayElement(['LCP', 'INP', 'CLS', 'FCP', 'TTFB'], number % 5 + 1) AS name,
                 multiIf(name = 'CLS', {u2} * {u3} * 0.5, name = 'INP', 40 + {u2} * {u3} * 900, 300 + {u2} * {u3} * 6000) AS value,
                 multiIf(name = 'CLS', multiIf(value <= 0.1, 1, value <= 0.25, 2, 3), name = 'INP', multiIf(value <= 200, 1, value <= 500, 2, 3),
                     multiIf(value <= 2500, 1, value <= 4000, 2, 3)) AS rating,
                 -- A tenth of CLS and INP page views reported twice: this row repeats the page view of the row 5 before.
                 if((name = 'CLS' OR name = 'INP') AND number >= 5 AND cityHash64(number, 9) % 10 = 0, toUInt64(number - 5), number) AS pv,
                 concat('v5-', toString(pv)) AS id
               FROM numbers({rows}))",
        zipf = u(1),
        u2 = u(2),
        u3 = u(3),
        nav = pick("'navigate', 'navigate', 'navigate', 'reload', 'back-forward'", 4),
        release = pick("'2.4.0', '2.4.1', '2.5.0'", 5),
        device = pick("'desktop', 'mobile', 'mobile', 'tablet'", 6),
        browser = pick("'Chrome', 'Chrome', 'Safari', 'Firefox', 'Edge', 'Samsung Internet'", 7),
        os = pick("'Windows', 'Android', 'iOS', 'macOS', 'Linux'", 8),
        country = pick("'US', 'DE', 'FR', 'GB', 'IN', 'BR', 'JP', 'CA', 'NL', 'ES'", 10),
    )
}

pub async fn run(report: &mut Report, quick: bool, big: bool) {
    let sizes: [u64; 2] = match (quick, big) {
        (_, true) => [10_000_000, 100_000_000],
        (true, false) => [100_000, 1_000_000],
        (false, false) => [1_000_000, 10_000_000],
    };
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let ch = clickhouse();
    for rows in sizes {
        let db = ch.fresh_database(&format!("bench_query_{rows}"));
        let config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            clickhouse_url: ch.url.clone(),
            clickhouse_database: db.clone(),
            spool_dir: pulse_testkit::temp_dir("bench-query-spool"),
            // The background finalizer's first run would come an hour after start: none runs
            // while queries are timed (this bench drives it below).
            finalize_interval_seconds: 3_600,
            // Queries are timed back to back: no per-client limit on reads.
            ip_read_rate_per_second: 1_000_000,
            ..Config::default()
        };
        let running = pulse_collector::start(config).await.expect("collector starts");
        let label = if rows >= 1_000_000 { format!("{} M rows", rows / 1_000_000) } else { format!("{} k rows", rows / 1_000) };

        let started = Instant::now();
        let (status, body) = request(&client, "POST", &format!("{}/", ch.url), None, &load_sql(&db, rows)).await;
        assert_eq!(status, 200, "load: {}", String::from_utf8_lossy(&body));
        // A long insert may answer before its last rows are in (seen at 100 M rows): wait.
        let count_sql = format!("SELECT count() FROM {db}.metrics FORMAT TSV");
        let deadline = Instant::now() + Duration::from_secs(1_800);
        loop {
            let (_, n) = request(&client, "POST", &format!("{}/", ch.url), None, &count_sql).await;
            if String::from_utf8_lossy(&n).trim().parse::<u64>().ok() == Some(rows) {
                break;
            }
            assert!(Instant::now() < deadline, "the raw table did not reach {rows} rows");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        report.add(SECTION, format!("{label}: load into the raw table"), started.elapsed().as_secs_f64() * 1000.0, "ms");
        // What the hourly retention job keeps: `metrics_recent` holds the last days only (the
        // load copied all 30 into it).
        let app = &running.app;
        pulse_collector::storage::retention::drop_expired(
            &app.clickhouse,
            &db,
            time::OffsetDateTime::now_utc(),
            pulse_collector::storage::retention::Keep { raw: 30, rollups: 400, alert_events: 90 },
        )
        .await
        .expect("retention runs");

        // The collector's finalizer over the whole history (what it does an hour at a time).
        let started = Instant::now();
        let mut now = time::OffsetDateTime::now_utc();
        // The lease goes to a collector that has been around for an interval: a first heartbeat
        // an interval ago.
        let _ = app.finalizer.run(app, now - time::Duration::hours(1)).await.expect("finalizer runs");
        while app.finalizer.run(app, now).await.expect("finalizer runs") == pulse_collector::storage::finalize::Outcome::NotLeader {
            now += time::Duration::minutes(2);
        }
        report.add(
            SECTION,
            format!("{label}: finalize 30 days (metrics_final, rollups, histograms)"),
            started.elapsed().as_secs_f64() * 1000.0,
            "ms",
        );
        disk_figures(report, &client, &ch.url, &db, &label, rows).await;

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
            ("p75 LCP by page, 24 h", "/v1/vitals?site=demo&metric=LCP&group_by=url&limit=10000&from=now-24h&to=now", raw("86400", "url")),
            (
                "p75 LCP by page, 30 days",
                "/v1/vitals?site=demo&metric=LCP&group_by=url&limit=10000&from=now-30d&to=now",
                raw("2592000", "url"),
            ),
            (
                "p75 LCP by hour, 30 days (series)",
                "/v1/vitals/series?site=demo&metric=LCP&interval=1h&percentile=75&from=now-30d&to=now",
                raw("2592000", "toStartOfHour(event_time)"),
            ),
            (
                "p75 LCP by browser, 30 days",
                "/v1/vitals?site=demo&metric=LCP&group_by=browser&from=now-30d&to=now",
                raw("2592000", "browser"),
            ),
        ];
        for (question, path, sql) in questions {
            let path = relative_times(path);
            let raw_url = format!("{}/", ch.url);
            let (api_ms, raw_ms, answer) = timed_pair(&client, ("GET", &api(&path), key, ""), ("POST", &raw_url, None, &sql)).await;
            let answer = serde_json::from_slice::<Value>(&answer).unwrap_or_default();
            let (source, estimate) = (answer["source"].as_str().unwrap_or_default(), answer["estimate"].as_str().unwrap_or_default());
            report.compare(
                SECTION,
                format!("{label}: {question} — API ({source}, {estimate})"),
                api_ms,
                "ms",
                "raw table, quantileExact",
                raw_ms,
            );
        }
        running.stop().await;
        // PULSE_BENCH_KEEP=1 keeps the databases (to look at a query's plan afterwards).
        if std::env::var_os("PULSE_BENCH_KEEP").is_none() {
            let _ = request(&client, "POST", &format!("{}/", ch.url), None, &format!("DROP DATABASE IF EXISTS {db}")).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Disk bytes per raw row: the raw table, `metrics_final`, and all rollups; and how many rows the
/// page rollup keeps per raw row.
async fn disk_figures(report: &mut Report, client: &Http, url: &str, db: &str, label: &str, rows: u64) {
    let sql = format!(
        "SELECT multiIf(table = 'metrics', 'raw', table = 'metrics_final', 'final', startsWith(table, 'rollup_'), 'rollups (t-digest)',
                startsWith(table, 'running_') OR startsWith(table, 'hist_'), 'histograms', table = 'metrics_recent', 'recent raw (3 days)',
                'other') AS k,
            sum(bytes_on_disk), sum(rows)
         FROM system.parts WHERE database = '{db}' AND active GROUP BY k ORDER BY k FORMAT TSV"
    );
    let (_, body) = request(client, "POST", &format!("{url}/"), None, &sql).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut total = 0.0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        if let [kind, bytes, _] = fields.as_slice() {
            let bytes: f64 = bytes.parse().unwrap_or(0.0);
            total += bytes;
            report.add(SECTION, format!("{label}: disk bytes per stored metric, {kind}"), bytes / rows as f64, "B");
        }
    }
    report.add(SECTION, format!("{label}: disk bytes per stored metric, all tables"), total / rows as f64, "B");
    let sql = format!(
        "SELECT (SELECT sum(rows) FROM system.parts WHERE database = '{db}' AND table = 'rollup_page_1d' AND active) / {rows} FORMAT TSV"
    );
    let (_, body) = request(client, "POST", &format!("{url}/"), None, &sql).await;
    let ratio: f64 = String::from_utf8_lossy(&body).trim().parse().unwrap_or(f64::NAN);
    report.add(SECTION, format!("{label}: page rollup (daily) rows per raw row"), ratio, "");
}

/// `now-24h` / `now-30d` / `now` as epoch ms (the API takes RFC 3339 or epoch ms), so the range
/// is exactly what it says (a range a little over 24 h would be answered from rollups).
fn relative_times(path: &str) -> String {
    let now = pulse_testkit::now_ms() as u64;
    path.replace("from=now-24h", &format!("from={}", now - 86_400_000))
        .replace("from=now-30d", &format!("from={}", now - 2_592_000_000))
        .replace("to=now", &format!("to={now}"))
}
