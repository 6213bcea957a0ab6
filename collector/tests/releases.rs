//! `POST /v1/releases` on the real collector and a real ClickHouse: write keys only, every bad
//! body refused naming its field (and counted), and a release declared twice stored once.

use std::net::SocketAddr;

use pulse_collector::config::{Config, ReadKey, SiteConfig, WriteKey};
use pulse_testkit::http::{get, send, Response};
use pulse_testkit::{clickhouse, temp_dir};
use serde_json::json;

const CI_KEY: &str = "ci-key";
const SHOP_KEY: &str = "shop-ci-key";

async fn collector(test: &str) -> (pulse_collector::Running, String, String) {
    let ch = clickhouse();
    let db = ch.fresh_database(test);
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        clickhouse_url: ch.url.clone(),
        clickhouse_database: db.clone(),
        ip_read_rate_per_second: 1_000_000,
        spool_dir: temp_dir(&format!("spool-{test}")),
        alert_evaluator: false,
        sites: vec![SiteConfig::dev(), SiteConfig::parse("shop=https://shop.example").expect("site")],
        read_keys: vec![ReadKey { key: "reader".into(), sites: None }],
        write_keys: vec![WriteKey { key: CI_KEY.into(), sites: None }, WriteKey { key: SHOP_KEY.into(), sites: Some(vec!["shop".into()]) }],
        ..Config::default()
    };
    let running = pulse_collector::start(config).await.expect("collector starts");
    let base = format!("http://{}", running.addr);
    (running, base, db)
}

async fn declare(base: &str, key: Option<&str>, body: &str) -> Response {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    send("POST", &format!("{base}/v1/releases"), &headers, body.to_owned()).await
}

fn body(site: &str, release: &str) -> String {
    json!({"site": site, "release": release}).to_string()
}

fn counted(metrics: &str, outcome: &str) -> u64 {
    let prefix = format!("pulse_release_declarations_total{{outcome=\"{outcome}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_write_keys_declare_and_only_for_their_sites() {
    let (running, base, db) = collector("releases_auth").await;
    let releases = || clickhouse().count(&format!("SELECT count() FROM {db}.releases"));
    for (key, why) in [(None, "no key"), (Some("reader"), "a read key"), (Some("ci-ke"), "a wrong key")] {
        let r = declare(&base, key, &body("demo", "2.4.1")).await;
        assert_eq!(r.status, 401, "{why}: {}", r.text());
        assert!(r.json()["error"].as_str().unwrap_or("").contains("write key"), "{why}: {}", r.text());
    }
    let r = declare(&base, Some(SHOP_KEY), &body("demo", "2.4.1")).await;
    assert_eq!((r.status, r.json()["field"].clone()), (403, json!("site")), "a key for shop only: {}", r.text());
    assert_eq!(releases(), 0, "nothing refused is stored");
    // A write key reads nothing.
    let auth = format!("Bearer {CI_KEY}");
    let r = get(&format!("{base}/v1/vitals?site=demo&metric=LCP"), &[("authorization", auth.as_str())]).await;
    assert_eq!(r.status, 401, "{}", r.text());

    let first = declare(&base, Some(CI_KEY), &body("demo", "2.4.1")).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let first = first.json();
    assert_eq!((first["site"].clone(), first["release"].clone(), first["created"].clone()), (json!("demo"), json!("2.4.1"), json!(true)));
    let shop = declare(&base, Some(SHOP_KEY), &body("shop", "2.4.1")).await;
    assert_eq!(shop.status, 201, "the same name on another site is another release: {}", shop.text());
    // Declared twice is one release, with its first time.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = declare(&base, Some(CI_KEY), &body("demo", "2.4.1")).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!((again.json()["created"].clone(), again.json()["declared_at"].clone()), (json!(false), first["declared_at"].clone()));
    assert_eq!(releases(), 2);
    let metrics = get(&format!("{base}/metrics"), &[]).await.text();
    assert_eq!((counted(&metrics, "declared"), counted(&metrics, "declared_again")), (2, 1), "{metrics}");
    assert_eq!((counted(&metrics, "unauthorized"), counted(&metrics, "forbidden")), (3, 1), "{metrics}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_declarations_name_their_field_and_are_counted() {
    let (running, base, db) = collector("releases_invalid").await;
    let long = "1".repeat(257);
    let cases: Vec<(String, Option<&str>, &str)> = vec![
        ("not json".to_owned(), None, "not JSON"),
        ("[\"demo\", \"2.4.1\"]".to_owned(), None, "JSON object"),
        (json!({"release": "2.4.1"}).to_string(), Some("site"), "site: is required"),
        (json!({"site": 7, "release": "2.4.1"}).to_string(), Some("site"), "site: must be a string"),
        (body("nope", "2.4.1"), Some("site"), "site: \"nope\" is not a configured site"),
        (json!({"site": "demo"}).to_string(), Some("release"), "release: is required"),
        (body("demo", ""), Some("release"), "release: must not be empty"),
        (body("demo", &long), Some("release"), "release: is longer than 256 bytes"),
        (body("demo", "2.4.1\n"), Some("release"), "release: contains characters that are not allowed"),
    ];
    for (text, field, message) in &cases {
        let r = declare(&base, Some(CI_KEY), text).await;
        assert_eq!(r.status, 400, "{text}: {}", r.text());
        let answer = r.json();
        assert_eq!(answer["field"].as_str(), *field, "{text}: {answer}");
        assert!(answer["error"].as_str().unwrap_or("").contains(message), "{text}: {answer}");
        // A good declaration right after a bad one is still taken.
        assert_eq!(declare(&base, Some(CI_KEY), &body("demo", "ok")).await.status / 100, 2);
    }
    assert_eq!(clickhouse().count(&format!("SELECT count() FROM {db}.releases")), 1, "only the good one, once");
    let metrics = get(&format!("{base}/metrics"), &[]).await.text();
    let refused: u64 = ["malformed", "invalid_site", "unknown_site", "invalid_release"].iter().map(|o| counted(&metrics, o)).sum();
    assert_eq!(refused, cases.len() as u64, "{metrics}");
    assert_eq!(counted(&metrics, "invalid_release"), 4, "{metrics}");
    running.stop().await;
}
