//! Every status code of the ingest and query contract, driven through the router with `oneshot`.
//! No ClickHouse and no shipper: the test reads what ingest appended to the spool.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use pulse_collector::config::{Config, SiteConfig};
use pulse_collector::spool::Spool;
use pulse_collector::storage::rows::Batch;
use pulse_collector::{router, App};
use pulse_testkit::{api_call, beacon, metric};
use serde_json::{json, Value};
use tower::ServiceExt;

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

struct Harness {
    router: Router,
    app: Arc<App>,
}

fn harness(config: Config) -> Harness {
    let dir = pulse_testkit::temp_dir("router-spool");
    let spool = Spool::open(&dir, config.spool_max_bytes, config.queue_capacity).expect("spool opens");
    let app = Arc::new(App::new(Config { spool_dir: dir, ..config }, spool).expect("valid config"));
    Harness { router: router(app.clone()), app }
}

impl Harness {
    /// Every beacon's rows in the spool, oldest first.
    fn spooled(&self) -> Vec<Batch> {
        let records = self.app.spool.read(None, u64::MAX, None).expect("spool reads");
        records.into_iter().map(|r| r.batch.expect("record decodes")).collect()
    }
}

fn test_config() -> Config {
    Config {
        // Nothing listens here: the router tests never reach ClickHouse.
        clickhouse_url: "http://127.0.0.1:9".into(),
        country_header: Some("cf-ipcountry".into()),
        sites: vec![SiteConfig::dev(), SiteConfig::parse("shop=https://*.shop.example").expect("valid site")],
        ..Config::default()
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn call(router: &Router, request: Request<Body>) -> Reply {
    let mut request = request;
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([198, 51, 100, 7], 40000))));
    let response = router.clone().oneshot(request).await.expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    Reply { status, headers, body }
}

fn post(body: impl Into<Body>, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::post("/v1/beacon").header("content-type", "text/plain;charset=UTF-8");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(body.into()).expect("request")
}

fn localhost() -> [(&'static str, &'static str); 2] {
    [("origin", "http://localhost:5173"), ("user-agent", IPHONE)]
}

#[tokio::test]
async fn accepted_beacons_are_validated_enriched_and_queued() {
    let h = harness(test_config());
    let body = beacon(
        "demo",
        "https://example.com/users/42/orders?tab=1",
        vec![
            json!({"name": "LCP", "value": 4200.0, "at": pulse_testkit::now_ms(), "rating": "good", "id": "v5-1"}),
            json!({"name": "CLS", "value": null, "at": pulse_testkit::now_ms()}),
            json!({"name": "INP", "value": "slow", "at": pulse_testkit::now_ms()}),
            api_call("/api/cart/9?x=1", "post", 503, 87.0),
            json!({"name": "checkout.step", "value": 2.0, "at": pulse_testkit::now_ms(), "tags": {"plan": "pro"}}),
        ],
    );
    let mut headers = localhost().to_vec();
    headers.push(("cf-ipcountry", "nz"));
    let reply = call(&h.router, post(body.to_string(), &headers)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.header("access-control-allow-origin"), Some("http://localhost:5173"));
    let receipt = reply.json();
    assert_eq!(receipt["accepted"], 3);
    assert_eq!(receipt["rejected"][0], json!({"index": 1, "error": "value: must be a finite number"}));
    assert_eq!(receipt["rejected"][1]["index"], 2);
    let parse_error = receipt["rejected"][1]["error"].as_str().unwrap_or("");
    assert!(parse_error.starts_with("value: invalid type: string \"slow\", expected f64"), "{parse_error}");

    let spooled = h.spooled();
    assert_eq!(spooled.len(), 1, "one record per beacon");
    let batch = &spooled[0];
    assert_eq!(batch.metrics.len(), 2);
    let lcp = &batch.metrics[0];
    assert_eq!(
        (lcp.name.as_str(), lcp.rating, lcp.url.as_str()),
        ("LCP", 3, "/users/:id/orders"),
        "rating recomputed (poor), url normalised"
    );
    assert_eq!((lcp.device.as_str(), lcp.browser.as_str(), lcp.os.as_str(), lcp.country.as_str()), ("mobile", "Safari", "iPhone", "NZ"));
    assert_eq!(lcp.metric_id, "v5-1");
    let custom = &batch.metrics[1];
    assert_eq!((custom.tag_keys.clone(), custom.tag_values.clone()), (vec!["plan".to_owned()], vec!["pro".to_owned()]));
    let call = &batch.api_calls[0];
    assert_eq!((call.route.as_str(), call.method.as_str(), call.status, call.ok), ("/api/cart/:id", "POST", 503, 0));

    let metrics = h.app.telemetry.render();
    assert!(metrics.contains("pulse_metrics_rejected_total{reason=\"not_finite\"} 1"), "{metrics}");
    assert!(metrics.contains("pulse_metrics_rejected_total{reason=\"parse\"} 1"), "{metrics}");
    assert!(metrics.contains("pulse_metrics_accepted_total{kind=\"api\"} 1"), "{metrics}");
}

#[tokio::test]
async fn envelope_errors_are_400_with_the_field() {
    let h = harness(test_config());
    let mut wrong_type = beacon("demo", "/", vec![]);
    wrong_type["sent_at"] = json!("yesterday");
    let mut bad_version = beacon("demo", "/", vec![]);
    bad_version["v"] = json!(2);
    let mut missing = beacon("demo", "/", vec![]);
    missing.as_object_mut().expect("object").remove("session");
    let cases = [
        ("{not json", "", "malformed JSON body"),
        (&format!("{} trailing", beacon("demo", "/", vec![])), "", "trailing"),
        (&wrong_type.to_string(), "sent_at", "sent_at: invalid type: string \"yesterday\""),
        (&bad_version.to_string(), "v", "v: version 2 is not supported"),
        (&missing.to_string(), "", "missing field `session`"),
    ];
    for (body, field, message) in cases {
        let reply = call(&h.router, post(body.to_owned(), &localhost())).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let error = reply.json();
        assert!(error["error"].as_str().unwrap_or("").contains(message), "{body} → {error}");
        if !field.is_empty() {
            assert_eq!(error["field"], field, "{body}");
        }
    }
}

#[tokio::test]
async fn unknown_sites_and_foreign_origins_are_403() {
    let h = harness(test_config());
    let reply = call(&h.router, post(beacon("nope", "/", vec![]).to_string(), &localhost())).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["error"], "unknown site key \"nope\"");

    let reply = call(&h.router, post(beacon("shop", "/", vec![]).to_string(), &localhost())).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "localhost may not send for shop");
    assert!(reply.json()["error"].as_str().unwrap_or("").contains("may not send beacons for site \"shop\""));

    let reply = call(&h.router, post(beacon("shop", "/", vec![]).to_string(), &[("origin", "https://www.shop.example")])).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let reply = call(&h.router, post(beacon("shop", "/", vec![]).to_string(), &[])).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "server-side senders have no Origin");
}

#[tokio::test]
async fn bodies_over_64_kib_are_413_with_or_without_a_length() {
    let h = harness(test_config());
    let big = "x".repeat(64 * 1024 + 1);
    let reply = call(&h.router, post(big.clone(), &localhost())).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    // A streamed body carries no Content-Length; the limit still holds.
    let stream = futures_stream(big.into_bytes());
    let reply = call(&h.router, post(Body::from_stream(stream), &localhost())).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.json()["error"].as_str().unwrap_or("").contains("larger than 65536 bytes"));
}

fn futures_stream(bytes: Vec<u8>) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    tokio_stream::iter(chunks)
}

#[tokio::test]
async fn other_content_types_are_415() {
    let h = harness(test_config());
    let request =
        Request::post("/v1/beacon").header("content-type", "application/x-www-form-urlencoded").body(Body::from("a=b")).expect("request");
    assert_eq!(call(&h.router, request).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let json = Request::post("/v1/beacon")
        .header("content-type", "application/json")
        .body(Body::from(beacon("demo", "/", vec![]).to_string()))
        .expect("request");
    assert_eq!(call(&h.router, json).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn floods_are_429_with_retry_after() {
    let h = harness(Config { ip_rate_per_second: 1, ..test_config() });
    let body = beacon("demo", "/", vec![]).to_string();
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(call(&h.router, post(body.clone(), &localhost())).await.status.as_u16());
        }
        out
    };
    assert_eq!(statuses, vec![202, 202, 429, 429], "burst of 2, then throttled");
    let reply = call(&h.router, post(body.clone(), &localhost())).await;
    assert_eq!(reply.header("retry-after"), Some("1"));

    // A site is charged only for beacons with something to keep.
    let h = harness(Config { sites: vec![SiteConfig { rate_per_second: Some(1), ..SiteConfig::dev() }], ..test_config() });
    for _ in 0..5 {
        assert_eq!(
            call(&h.router, post(body.clone(), &localhost())).await.status,
            StatusCode::ACCEPTED,
            "an empty beacon costs the site nothing"
        );
    }
    let body = beacon("demo", "/", vec![metric("LCP", 1000.0, 0.0)]).to_string();
    for _ in 0..2 {
        assert_eq!(call(&h.router, post(body.clone(), &localhost())).await.status, StatusCode::ACCEPTED);
    }
    let reply = call(&h.router, post(body, &localhost())).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(reply.json()["error"].as_str().unwrap_or("").contains("site"));
}

#[tokio::test]
async fn a_full_spool_is_503_and_a_closed_one_too() {
    let h = harness(Config { spool_max_bytes: 2_000, ..test_config() });
    let body = beacon("demo", "/", vec![metric("LCP", 1000.0, 0.0)]).to_string();
    assert_eq!(call(&h.router, post(body.clone(), &localhost())).await.status, StatusCode::ACCEPTED);
    let mut accepted = 1;
    let reply = loop {
        let reply = call(&h.router, post(body.clone(), &localhost())).await;
        if reply.status != StatusCode::ACCEPTED {
            break reply;
        }
        accepted += 1;
        assert!(accepted < 100, "a 2 000-byte spool never filled");
    };
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("30"));
    assert!(reply.json()["error"].as_str().unwrap_or("").contains("spool is full"));
    assert_eq!(h.spooled().len(), accepted, "everything acknowledged is in the spool");
    h.app.spool.close();
    let reply = call(&h.router, post(body, &localhost())).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("5"));
    let reply = call(&h.router, Request::get("/healthz").body(Body::empty()).expect("request")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "a closed spool takes no beacons: unhealthy");
}

#[tokio::test]
async fn cors_preflight_names_allowed_origins_only() {
    let h = harness(test_config());
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/beacon")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .body(Body::empty())
            .expect("request")
    };
    let reply = call(&h.router, preflight("https://checkout.shop.example")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://checkout.shop.example"));
    assert_eq!(reply.header("access-control-allow-credentials"), Some("true"));
    assert!(reply.header("access-control-allow-methods").unwrap_or("").contains("POST"));
    assert!(reply.header("access-control-allow-headers").unwrap_or("").contains("content-type"));

    let reply = call(&h.router, preflight("https://evil.example")).await;
    assert_eq!(reply.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn read_api_needs_the_key_and_checks_parameters_before_any_query() {
    let h = harness(test_config());
    let get = |uri: &str, key: Option<&str>| {
        let mut b = Request::get(uri);
        if let Some(key) = key {
            b = b.header("authorization", format!("Bearer {key}"));
        }
        b.body(Body::empty()).expect("request")
    };
    let reply = call(&h.router, get("/v1/vitals?site=demo&metric=LCP", None)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    assert_eq!(call(&h.router, get("/v1/vitals?site=demo&metric=LCP", Some("wrong"))).await.status, StatusCode::UNAUTHORIZED);
    for near_miss in ["dev-read-kez", "dev-read-key2", "dev-read-ke"] {
        assert_eq!(call(&h.router, get("/v1/vitals?site=demo&metric=LCP", Some(near_miss))).await.status, StatusCode::UNAUTHORIZED);
    }

    let cases = [
        ("/v1/vitals?site=demo&metric=XYZ", "metric"),
        ("/v1/vitals?site=demo", "metric"),
        ("/v1/vitals?site=nope&metric=LCP", "site"),
        ("/v1/vitals?site=demo&metric=LCP&from=2026-11-23T00:00:00Z&to=2026-11-22T00:00:00Z", "from"),
        ("/v1/vitals?site=demo&metric=LCP&group_by=color", "group_by"),
        ("/v1/vitals?site=demo&metric=LCP&to=10000000000000000000000000000000000000", "to"),
        ("/v1/vitals?site=demo&metric=LCP&percentiles=75,abc", "percentiles"),
        ("/v1/vitals?site=demo&metric=LCP&format=xml", "format"),
        ("/v1/vitals?site=demo&metric=LCP&percentiles=90&source=rollup&from=1700000000000&to=1710000000000", "source"),
        ("/v1/vitals?site=demo&metric=LCP%27%20OR%201%3D1--", "metric"),
        ("/v1/vitals/series?site=demo&metric=LCP&interval=5m", "interval"),
        ("/v1/vitals/series?site=demo&metric=LCP&interval=1m&from=1700000000000&to=1710000000000", "interval"),
        ("/v1/vitals/series?site=demo&metric=LCP&percentile=50,75", "percentile"),
        ("/v1/api-calls?site=demo&group_by=url", "group_by"),
        ("/v1/api-calls?site=demo&status=abc", "status"),
        ("/v1/api-calls?site=demo&bogus=1", "query"),
    ];
    for (uri, param) in cases {
        let reply = call(&h.router, get(uri, Some("dev-read-key"))).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(reply.json()["field"], param, "{uri}: {}", reply.json());
    }
}

#[tokio::test]
async fn health_is_degraded_without_clickhouse_and_metrics_are_served() {
    let h = harness(test_config());
    let body = beacon("demo", "/", vec![metric("LCP", 1000.0, 0.0), metric("FCP", 900.0, 0.0)]).to_string();
    assert_eq!(call(&h.router, post(body, &localhost())).await.status, StatusCode::ACCEPTED);
    let reply = call(&h.router, Request::get("/healthz").body(Body::empty()).expect("request")).await;
    assert_eq!(reply.status, StatusCode::OK, "beacons are still accepted into the spool");
    let health = reply.json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["services"]["clickhouse"]["status"], "down");
    assert_eq!(health["spool"]["rows"], 2);
    assert_eq!(health["spool"]["records"], 1);
    assert!(health["spool"]["bytes"].as_u64().unwrap_or(0) > 0);
    assert!(health["spool"]["oldest_age_seconds"].as_f64().is_some_and(|a| (0.0..60.0).contains(&a)), "{health}");

    let reply = call(&h.router, Request::get("/metrics").body(Body::empty()).expect("request")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = String::from_utf8(reply.body).expect("utf8");
    assert!(text.contains("pulse_http_requests_total{route=\"/healthz\",status=\"200\"} 1"), "{text}");
    assert!(text.contains("pulse_queue_depth 1"), "{text}");
    assert!(text.contains("pulse_spool_rows 2"), "{text}");
    assert!(text.contains("pulse_spool_oldest_age_seconds"), "{text}");
}

#[tokio::test]
async fn the_agent_is_served_with_its_mime_types_and_cache_headers() {
    let dir = std::env::temp_dir().join(format!("pulse-agent-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("pulse.js"), "export async function init() {}").expect("entry");
    std::fs::write(dir.join("pulse.0123abcd89.js"), "export default 1;").expect("glue");
    std::fs::write(dir.join("pulse_bg.0123abcd89.wasm"), b"\0asm\x01\0\0\0").expect("wasm");
    let h = harness(Config { agent_dir: dir.clone(), dev: true, ..test_config() });
    let get = |path: &str| Request::get(path).body(Body::empty()).expect("request");

    let entry = call(&h.router, get("/agent/pulse.js")).await;
    assert_eq!(entry.status, StatusCode::OK);
    assert_eq!(entry.header("content-type"), Some("text/javascript"));
    assert_eq!(entry.header("cache-control"), Some("no-cache"), "the entry is revalidated so new builds show at once");
    let glue = call(&h.router, get("/agent/pulse.0123abcd89.js")).await;
    assert_eq!(glue.header("cache-control"), Some("public, max-age=31536000, immutable"));
    let wasm = call(&h.router, get("/agent/pulse_bg.0123abcd89.wasm")).await;
    assert_eq!(wasm.header("content-type"), Some("application/wasm"), "needed for streaming compilation");
    assert_eq!(wasm.header("cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(wasm.body, b"\0asm\x01\0\0\0");
    let missing = call(&h.router, get("/agent/nope.js")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.header("cache-control"), None, "a 404 is not cached for a year");

    // The demo endpoints, on in dev mode, off when configured so, and never without dev mode.
    let ok = call(&h.router, get("/demo/api/ok")).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.header("server-timing").is_some_and(|v| v.contains("db;dur=")));
    assert_eq!(call(&h.router, get("/demo/api/fail")).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    let off = harness(Config { agent_dir: dir.clone(), dev: true, demo_api: false, ..test_config() });
    assert_eq!(call(&off.router, get("/demo/api/ok")).await.status, StatusCode::NOT_FOUND);
    let production = harness(Config { agent_dir: dir.clone(), ..test_config() });
    assert_eq!(call(&production.router, get("/demo/api/ok")).await.status, StatusCode::NOT_FOUND);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_read_key_limited_to_a_site_reads_only_that_site() {
    use pulse_collector::config::ReadKey;
    let keys = vec![ReadKey { key: "all".into(), sites: None }, ReadKey { key: "shop-only".into(), sites: Some(vec!["shop".into()]) }];
    let h = harness(Config { read_keys: keys, ..test_config() });
    let get =
        |uri: &str, key: &str| Request::get(uri).header("authorization", format!("Bearer {key}")).body(Body::empty()).expect("request");
    assert_eq!(call(&h.router, get("/v1/alerts/rules?site=shop", "shop-only")).await.status, StatusCode::OK);
    let reply = call(&h.router, get("/v1/alerts/rules?site=demo", "shop-only")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["field"], "site");
    // Every read endpoint refuses the other site, and a question about all sites.
    for uri in [
        "/v1/vitals?site=demo&metric=LCP",
        "/v1/compare?site=demo&metric=LCP&a=release:1&b=release:2",
        "/v1/report?site=demo",
        "/v1/alerts",
    ] {
        assert_eq!(call(&h.router, get(uri, "shop-only")).await.status, StatusCode::FORBIDDEN, "{uri}");
    }
    assert_eq!(call(&h.router, get("/v1/alerts/rules?site=demo", "all")).await.status, StatusCode::OK);
    assert_eq!(call(&h.router, get("/v1/alerts/rules?site=demo", "nobody")).await.status, StatusCode::UNAUTHORIZED);
}

/// Every route but ingest and the agent's files has a per-client quota: past its burst a client
/// gets 429 with Retry-After, while its beacons and another client's reads still pass.
#[tokio::test]
async fn reads_are_rate_limited_per_client_and_ingest_is_not() {
    let h = harness(Config { ip_read_rate_per_second: 1, ..test_config() });
    let from = |path: &str, ip: [u8; 4]| {
        let mut request = Request::get(path).body(Body::empty()).expect("request");
        request.extensions_mut().insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        request
    };
    let send = |request: Request<Body>| async { h.router.clone().oneshot(request).await.expect("router answers") };
    // A burst of two (twice the rate), then refused.
    for _ in 0..2 {
        assert_eq!(send(from("/metrics", [198, 51, 100, 7])).await.status(), StatusCode::OK);
    }
    let refused = send(from("/healthz", [198, 51, 100, 7])).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().get("retry-after").is_some());
    let body = refused.into_body().collect().await.expect("body").to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("too many requests"), "{body:?}");
    assert_eq!(send(from("/v1/vitals?site=demo&metric=LCP", [198, 51, 100, 7])).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another client reads; the limited one still sends beacons (`call` uses its address).
    assert_eq!(send(from("/metrics", [203, 0, 113, 9])).await.status(), StatusCode::OK);
    let body = beacon("demo", "/", vec![metric("LCP", 1000.0, 0.0)]).to_string();
    assert_eq!(call(&h.router, post(body, &localhost())).await.status, StatusCode::ACCEPTED);
    let metrics = send(from("/metrics", [203, 0, 113, 9])).await.into_body().collect().await.expect("body").to_bytes();
    let metrics = String::from_utf8_lossy(&metrics);
    for route in ["/healthz", "/v1/vitals"] {
        assert!(
            metrics.contains(&format!("pulse_http_requests_total{{route=\"{route}\",status=\"429\"}} 1")),
            "counted by route: {metrics}"
        );
    }
}

/// Without a read key `/healthz` shows statuses and numbers; error texts need a key.
#[tokio::test]
async fn health_details_need_a_read_key() {
    let h = harness(test_config());
    let anonymous = call(&h.router, Request::get("/healthz").body(Body::empty()).expect("request")).await.json();
    assert_eq!(anonymous["services"]["clickhouse"]["status"], "down", "not seen up yet: {anonymous}");
    assert_eq!(anonymous["services"]["clickhouse"].get("error"), None, "{anonymous}");
    assert_eq!(anonymous["services"]["writer"].get("last_error"), None, "{anonymous}");
    assert_eq!(anonymous.get("cardinality"), None, "{anonymous}");
    let keyed = Request::get("/healthz").header("authorization", "Bearer dev-read-key").body(Body::empty()).expect("request");
    let detailed = call(&h.router, keyed).await.json();
    assert_eq!(detailed["services"]["clickhouse"]["error"], "not checked yet", "{detailed}");
    assert!(detailed["cardinality"].is_array() && detailed.get("details").is_none(), "{detailed}");
}

/// A ClickHouse that stops answering holds a read no longer than `read_timeout_seconds`: the
/// answer is a 503 naming the setting, with `Retry-After`.
#[tokio::test]
async fn a_read_from_a_server_that_never_answers_times_out() {
    let h = harness(Config {
        clickhouse_url: pulse_testkit::silent_server(),
        read_max_execution_seconds: 1,
        read_timeout_seconds: 2,
        ..test_config()
    });
    let request = Request::get("/v1/vitals?site=demo&metric=LCP").header("authorization", "Bearer dev-read-key").body(Body::empty());
    let reply = call(&h.router, request.expect("request")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert!(reply.json()["error"].as_str().is_some_and(|e| e.contains("read_timeout_seconds (2 s)")), "{:?}", reply.json());
}

/// A `range:` side of a comparison is capped as `from`/`to` are, and the answer names the side.
#[tokio::test]
async fn a_comparison_side_spanning_years_is_refused_naming_the_side() {
    let h = harness(test_config());
    let uri = "/v1/compare?site=demo&metric=LCP&a=range:2020-01-01T00:00:00Z..2026-01-01T00:00:00Z&b=range:2026-01-01T00:00:00Z..2026-01-02T00:00:00Z";
    let reply =
        call(&h.router, Request::get(uri).header("authorization", "Bearer dev-read-key").body(Body::empty()).expect("request")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let body = reply.json();
    assert_eq!((body["field"].as_str(), body["error"].as_str()), (Some("a"), Some("a: ranges are limited to 800 days")), "{body}");
    let from_to = "/v1/vitals?site=demo&metric=LCP&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z";
    let reply =
        call(&h.router, Request::get(from_to).header("authorization", "Bearer dev-read-key").body(Body::empty()).expect("request")).await;
    assert_eq!((reply.status, reply.json()["field"].as_str().map(str::to_owned)), (StatusCode::BAD_REQUEST, Some("from".into())));
}
