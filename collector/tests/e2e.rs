//! End to end on real parts: ClickHouse, the collector serving the demo page and the built agent,
//! and headless Chromium clicking through the page like a person. The agent's beacons travel
//! on the real unload path (`pagehide` → `sendBeacon`); the numbers are read back through the
//! public query API.
//!
//! Needs the built agent (`scripts/build-agent.sh`, which `make test` runs first).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pulse_collector::config::Config;
use pulse_testkit::browser::{chromium, Browser, Locator};
use pulse_testkit::clickhouse;
use pulse_testkit::http::get;
use serde_json::Value;

const AUTH: (&str, &str) = ("authorization", "Bearer dev-read-key");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Stack {
    running: pulse_collector::Running,
    base: String,
    db: String,
}

async fn stack(test: &str) -> Stack {
    stack_serving(test, repo().join("www")).await
}

/// One browser at a time: three Chromiums beside ClickHouse on a two-core machine make timing
/// unrealistic for every one of them.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn stack_serving(test: &str, www_dir: PathBuf) -> Stack {
    let agent_dir = repo().join("target/agent/dist");
    assert!(
        agent_dir.join("pulse.js").exists(),
        "{} is missing: build the agent with scripts/build-agent.sh (make test does)",
        agent_dir.display()
    );
    let ch = clickhouse();
    let db = ch.fresh_database(test);
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        clickhouse_url: ch.url.clone(),
        clickhouse_database: db.clone(),
        flush_interval_ms: 100,
        www_dir,
        agent_dir,
        spool_dir: pulse_testkit::temp_dir(&format!("spool-{test}")),
        // The demo page calls `/demo/api/*`.
        dev: true,
        // The dashboard tests load it many times over.
        ip_read_rate_per_second: 1_000_000,
        ..Config::default()
    };
    let running = pulse_collector::start(config).await.expect("collector starts");
    let base = format!("http://{}", running.addr);
    Stack { running, base, db }
}

impl Stack {
    async fn read(&self, path_and_query: &str) -> Value {
        let r = get(&format!("{}{path_and_query}", self.base), &[AUTH]).await;
        assert_eq!(r.status, 200, "{path_and_query}: {}", r.text());
        r.json()
    }

    /// The single `group_by=none` row of a metric, once at least `count` values arrived (20 s at most).
    async fn metric(&self, name: &str, count: u64) -> Value {
        for _ in 0..200 {
            let answer = self.read(&format!("/v1/vitals?site=demo&metric={name}&group_by=none")).await;
            if let Some(row) = answer["rows"].as_array().and_then(|r| r.first()) {
                if row["count"].as_u64().unwrap_or(0) >= count {
                    return row.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name}: fewer than {count} values arrived");
    }

    /// `(url, count)` of `metric`'s values of navigations of type `nav`, sorted.
    async fn by_url(&self, metric: &str, nav: &str) -> Vec<(String, u64)> {
        let answer = self.read(&format!("/v1/vitals?site=demo&metric={metric}&group_by=url&nav={nav}")).await;
        let mut rows: Vec<(String, u64)> = answer["rows"]
            .as_array()
            .map(|r| {
                r.iter().map(|row| (row["group"].as_str().unwrap_or_default().to_owned(), row["count"].as_u64().unwrap_or(0))).collect()
            })
            .unwrap_or_default();
        rows.sort();
        rows
    }

    /// The `group_by=route` rows of `/v1/api-calls` by route, once at least `routes` routes
    /// arrived (10 s at most; the caller's assertions say what is missing after that).
    async fn api_routes(&self, routes: usize) -> HashMap<String, Value> {
        let mut rows = HashMap::new();
        for _ in 0..100 {
            let answer = self.read("/v1/api-calls?site=demo&group_by=route").await;
            rows = answer["rows"]
                .as_array()
                .map(|r| r.iter().map(|row| (row["group"].as_str().unwrap_or_default().to_owned(), row.clone())).collect())
                .unwrap_or_default();
            if rows.len() >= routes {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rows
    }
}

async fn click(browser: &Browser, id: &str) {
    browser
        .client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click #{id}: {e}"));
}

/// Hides the page the way a person does — another tab comes to the front for `ms` — and comes back.
async fn hide_behind_another_tab(browser: &Browser, ms: u64) {
    let page = browser.client.window().await.expect("window");
    let tab = browser.client.new_window(true).await.expect("new tab");
    browser.client.switch_to_window(tab.handle).await.expect("switch to the new tab");
    tokio::time::sleep(Duration::from_millis(ms)).await;
    browser.client.switch_to_window(page).await.expect("back to the page");
}

fn number(row: &Value, key: &str) -> f64 {
    row[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {row}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_reports_vitals_api_calls_and_custom_metrics() {
    let _one = ONE_BROWSER.lock().await;
    let stack = stack("e2e_demo").await;
    let browser = chromium().await;

    browser.client.goto(&format!("{}/", stack.base)).await.expect("open the demo page");
    browser.wait_for("return !!window.pulse").await;
    let first_session = browser.js("return window.pulse.session").await;
    let first_page = browser.js("return window.pulse.page").await;
    // Let the promotion banner shift the page (it appears 400 ms after the agent starts).
    browser.wait_for("return !!document.getElementById('promo')").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A real (trusted) click on a handler that blocks the main thread for 300 ms.
    click(&browser, "slow-button").await;
    browser.wait_for("return document.getElementById('slow-result').textContent === 'blocked 300 ms'").await;
    for id in ["fetch-ok", "fetch-fail", "fetch-slow"] {
        click(&browser, id).await;
    }
    browser.wait_for("return document.getElementById('fetch-result').dataset.done === '3'").await;
    click(&browser, "custom").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A second page view in the same tab; leaving the first sends its beacon on pagehide.
    click(&browser, "next-page").await;
    browser.wait_for("return !!window.pulse && location.search === '?page=2'").await;
    let second_session = browser.js("return window.pulse.session").await;
    let second_page = browser.js("return window.pulse.page").await;
    assert_eq!(second_session, first_session, "the session id is kept across page views of the tab");
    assert_ne!(second_page, first_page, "each page view has its own id");
    tokio::time::sleep(Duration::from_millis(300)).await;
    browser.client.goto("about:blank").await.expect("leave the page");
    browser.close().await;

    // Both page views: FCP and TTFB each, with plausible values.
    let fcp = stack.metric("FCP", 2).await;
    assert!(number(&fcp, "min") > 0.0 && number(&fcp, "max") < 10_000.0, "{fcp}");
    let ttfb = stack.metric("TTFB", 2).await;
    assert!(number(&ttfb, "max") <= number(&fcp, "max"), "TTFB before FCP: {ttfb} {fcp}");
    let lcp = stack.metric("LCP", 2).await;
    assert!(number(&lcp, "min") >= number(&fcp, "min"), "LCP ≥ FCP: {lcp} {fcp}");
    let cls = stack.metric("CLS", 2).await;
    assert!(number(&cls, "max") > 0.0, "the promotion shifted the page: {cls}");
    // The blocking handler: 300 ms of processing inside the interaction.
    let inp = stack.metric("INP", 1).await;
    assert!(number(&inp, "max") >= 300.0, "INP includes the 300 ms handler: {inp}");
    let fid = stack.metric("FID", 1).await;
    assert!(number(&fid, "max") >= 0.0 && number(&fid, "max") < number(&inp, "max"), "FID is the delay before the handler: {fid}");

    for (name, row) in [("FCP", &fcp), ("LCP", &lcp), ("CLS", &cls), ("INP", &inp), ("FID", &fid), ("TTFB", &ttfb)] {
        eprintln!("e2e: {name:<5} count {} min {} max {}", row["count"], row["min"], row["max"]);
    }

    // Custom metric and user-timing measure.
    let clicks = stack.metric("demo.clicks", 1).await;
    assert_eq!(number(&clicks, "max"), 1.0);
    let render = stack.metric("demo:render", 2).await;
    assert!(number(&render, "min") >= 0.0);

    // The three API calls: status, errors and the slow one's duration.
    let routes = stack.api_routes(3).await;
    let row = |route: &str| routes.get(route).cloned().unwrap_or_else(|| panic!("{route} missing in {routes:?}"));
    let (ok, fail, slow) = (row("/demo/api/ok"), row("/demo/api/fail"), row("/demo/api/slow"));
    assert_eq!((number(&ok, "count"), number(&ok, "error_rate")), (1.0, 0.0), "{ok}");
    assert_eq!((number(&fail, "count"), number(&fail, "error_rate")), (1.0, 1.0), "{fail}");
    assert!(number(&slow, "p50") >= 800.0, "the slow endpoint waited 800 ms: {slow}");
    let statuses = stack.read("/v1/api-calls?site=demo&group_by=status").await;
    let groups: Vec<String> = statuses["rows"].as_array().map(|r| r.iter().map(|g| g["group"].to_string()).collect()).unwrap_or_default();
    assert!(groups.iter().any(|g| g.contains("500")) && groups.iter().any(|g| g.contains("200")), "{statuses}");

    // The ok endpoint's Server-Timing header travelled with its call.
    let timing = clickhouse().sql(&format!("SELECT server_timing FROM {}.api_calls WHERE route = '/demo/api/ok'", stack.db));
    assert!(timing.contains("\"db\"") && timing.contains("12.5"), "{timing}");
    let error = clickhouse().sql(&format!("SELECT status, ok FROM {}.api_calls WHERE route = '/demo/api/fail'", stack.db));
    assert_eq!(error.split_whitespace().collect::<Vec<_>>(), vec!["500", "0"], "{error}");

    // Stored under one session with two page views, as the browser reported.
    let ch = clickhouse();
    let sessions = ch.sql(&format!("SELECT DISTINCT session FROM {}.metrics WHERE site = 'demo'", stack.db));
    assert_eq!(sessions.trim(), first_session.as_str().unwrap_or_default());
    assert_eq!(ch.count(&format!("SELECT uniqExact(page) FROM {}.metrics WHERE site = 'demo'", stack.db)), 2);
    stack.running.stop().await;
}

/// The dashboard's `format`: ms below a second, seconds above, CLS to three decimals.
fn shown(metric: &str, value: f64) -> String {
    if metric == "CLS" {
        format!("{value:.3}")
    } else if value < 1000.0 {
        format!("{} ms", value.round())
    } else {
        format!("{:.2} s", value / 1000.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_api_answers() {
    use pulse_testkit::{api_call, beacon, metric};
    let _one = ONE_BROWSER.lock().await;
    let stack = stack("e2e_dashboard").await;
    // Known data on two pages: LCP 1000..=3900 ms, INP, CLS, and two API routes, one failing.
    for (i, url) in ["/", "/checkout"].iter().enumerate() {
        let mut metrics = Vec::new();
        // With attribution, for the Diagnose section: LCP subparts adding up to the value, the
        // longest script of each page's interactions (first party on /, third on /checkout),
        // the element of each page's largest shift.
        let script = ["http://localhost:3000/app.js", "https://cdn.widgets.example/w.js"][i];
        for k in 0..30 {
            let k = f64::from(k);
            let lcp = 1000.0 + 100.0 * k + 50.0 * i as f64;
            let mut m = metric("LCP", lcp, 1000.0);
            m["attribution"] = serde_json::json!({"target": "img.hero", "url": "https://img.example/hero.jpg",
                "timeToFirstByte": 100.0, "resourceLoadDelay": 200.0, "resourceLoadDuration": 400.0, "elementRenderDelay": lcp - 700.0});
            metrics.push(m);
            let mut m = metric("INP", 40.0 + 10.0 * k, 1000.0);
            m["attribution"] = serde_json::json!({"interactionTarget": "#buy", "longestScriptURL": script,
                "longestScriptFunction": "onClick", "longestScriptIntersectingDuration": 30.0});
            metrics.push(m);
            let mut m = metric("CLS", 0.01 * k, 1000.0);
            m["attribution"] = serde_json::json!({"largestShiftTarget": (["div.banner", "footer"][i])});
            metrics.push(m);
            metrics.push(metric("FCP", 500.0 + 20.0 * k, 1000.0));
            metrics.push(metric("TTFB", 100.0 + 5.0 * k, 1000.0));
            metrics.push(metric("page.load", 800.0 + 40.0 * k, 1000.0));
        }
        metrics.push(metric("FID", 12.0, 1000.0));
        for k in 0..10 {
            metrics.push(api_call("/api/cart", "GET", if k < 2 { 500 } else { 200 }, 100.0 + 10.0 * f64::from(k)));
            metrics.push(api_call("/api/items/:id", "GET", 200, 40.0));
        }
        let body = beacon("demo", url, metrics).to_string();
        let r = pulse_testkit::http::send(
            "POST",
            &format!("{}/v1/beacon", stack.base),
            &[("content-type", "text/plain"), ("origin", "http://127.0.0.1")],
            body,
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    // A single-page app's route reached by soft navigations: page views of `/shop/cart`.
    let mut soft = beacon("demo", "/shop/cart", (0..5).map(|k| metric("LCP", 300.0 + 10.0 * f64::from(k), 1000.0)).collect());
    soft["nav"] = "soft-navigation".into();
    soft["page"] = "page-soft".into();
    let r = pulse_testkit::http::post_beacon(&stack.base, soft.to_string()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    stack.metric("LCP", 65).await;
    stack.metric("FID", 2).await;
    // API calls are stored apart from vitals: wait for them too before the dashboard reads them.
    assert_eq!(stack.api_routes(2).await.len(), 2, "both API routes stored");

    let browser = chromium().await;
    browser.client.goto(&format!("{}/dashboard.html", stack.base)).await.expect("open the dashboard");
    browser.wait_for("return document.body.dataset.loaded === 'true' && !!document.querySelector('#chart svg')").await;

    for vital in ["LCP", "INP", "CLS", "FCP", "TTFB", "FID"] {
        let api = stack.read(&format!("/v1/vitals?site=demo&metric={vital}&group_by=none")).await;
        let p75 = api["rows"][0]["p75"].as_f64().expect("p75");
        let text = browser.js(&format!("return document.querySelector('[data-metric={vital}] .p75').textContent")).await;
        assert_eq!(text.as_str(), Some(shown(vital, p75).as_str()), "{vital} card shows the API's p75");
        let value = browser.js(&format!("return Number(document.querySelector('[data-metric={vital}] .p75').dataset.value)")).await;
        assert_eq!(value.as_f64(), Some(p75));
    }

    // The page load cards: the API's p75 of the agent's page-load metrics.
    let load = stack.read("/v1/vitals?site=demo&metric=page.load&group_by=none").await;
    let p75 = load["rows"][0]["p75"].as_f64().expect("page.load p75");
    let shown_load = browser.js("return document.querySelector('[data-metric=\"page.load\"] .p75').textContent").await;
    assert_eq!(shown_load.as_str(), Some(shown("page.load", p75).as_str()), "the Load card shows the API's p75");
    let empty = browser.js("return document.querySelector('[data-metric=\"page.dom_content_loaded\"] small').textContent").await;
    assert_eq!(empty.as_str(), Some("No data in this range"));

    // The pages table: one row per page with the API's p75 LCP, routes reached by soft
    // navigation among them.
    let by_url = stack.read("/v1/vitals?site=demo&metric=LCP&group_by=url").await;
    let pages = "return [...document.querySelectorAll('#pages tbody tr')].map(r => [...r.cells].map(c => c.textContent))";
    let rows = browser.js(pages).await;
    let rows = rows.as_array().expect("rows").clone();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for api_row in by_url["rows"].as_array().expect("rows") {
        let page = api_row["group"].as_str().expect("group");
        let shown_row = rows.iter().find(|r| r[0] == page).unwrap_or_else(|| panic!("{page} missing in {rows:?}"));
        assert_eq!(shown_row[1].as_str(), Some(shown("LCP", api_row["p75"].as_f64().expect("p75")).as_str()));
        assert_eq!(shown_row[4].as_str(), Some(api_row["count"].to_string().as_str()));
    }

    // The API routes table: p95 and error rate as the API answers them.
    let routes = stack.read("/v1/api-calls?site=demo&group_by=route").await;
    let shown_routes =
        browser.js("return [...document.querySelectorAll('#routes tbody tr')].map(r => [...r.cells].map(c => c.textContent))").await;
    let cart = shown_routes.as_array().and_then(|r| r.iter().find(|r| r[0] == "/api/cart")).cloned().expect("/api/cart row");
    let api_cart = routes["rows"].as_array().and_then(|r| r.iter().find(|r| r["group"] == "/api/cart")).cloned().expect("/api/cart");
    assert_eq!(cart[1].as_str(), Some("20"));
    assert_eq!(cart[3].as_str(), Some(shown("api", api_cart["p95"].as_f64().expect("p95")).as_str()));
    assert_eq!(cart[4].as_str(), Some("20 %"), "4 of 20 calls failed");

    // The Diagnose section shows what /v1/attribution answers: the LCP breakdown of the page view
    // at the p75, the scripts behind INP with their party, the elements that shift.
    let lcp = stack.read("/v1/attribution?site=demo&metric=LCP&by=subpart").await;
    let expected: Vec<String> = lcp["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .zip(["TTFB", "Load delay", "Load time", "Render delay"])
        .map(|(r, name)| format!("{name} {}", shown("LCP", r["at_p75"].as_f64().expect("at_p75"))))
        .collect();
    let legend = browser.js("return [...document.querySelectorAll('#diag-lcp .legend span')].map(s => s.textContent)").await;
    assert_eq!(legend, serde_json::json!(expected), "{lcp}");
    let inp = stack.read("/v1/attribution?site=demo&metric=INP&by=script&limit=5").await;
    let scripts = browser.js("return [...document.querySelectorAll('#diag-inp li')].map(li => li.textContent)").await;
    let scripts: Vec<String> = scripts.as_array().expect("items").iter().map(|s| s.as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(scripts.len(), inp["rows"].as_array().map_or(0, Vec::len), "{scripts:?} {inp}");
    for row in inp["rows"].as_array().expect("rows") {
        let party = if row["party"] == "first" { "1st party" } else { "3rd party" };
        let text = format!("{}{party} onClick() · 30 page views", row["url"].as_str().expect("url"));
        assert!(scripts.iter().any(|s| s.starts_with(&text)), "{text:?} in {scripts:?}");
    }
    assert!(scripts.iter().any(|s| s.starts_with("https://cdn.widgets.example/w.js3rd party")), "{scripts:?}");
    let shifts = browser.js("return [...document.querySelectorAll('#diag-cls li button')].map(b => b.textContent)").await;
    assert_eq!(shifts, serde_json::json!(["div.banner", "footer"]));
    // A culprit clicked narrows the page table to the pages where it strikes.
    browser
        .js("[...document.querySelectorAll('#diag-inp button')].find(b => b.textContent.includes('cdn.widgets')).click(); return true")
        .await;
    browser
        .wait_for("return !document.getElementById('page-filter').hidden && document.querySelectorAll('#pages tbody tr').length === 1")
        .await;
    let rows = browser.js(pages).await;
    assert_eq!(rows[0][0].as_str(), Some("/checkout"), "{rows}");

    let out = repo().join("target/e2e");
    std::fs::create_dir_all(&out).expect("target/e2e");
    let png = browser.client.screenshot().await.expect("screenshot");
    std::fs::write(out.join("dashboard.png"), png).expect("write the screenshot");
    // The Diagnose section and the page table it narrowed, in view.
    browser.js("document.querySelector('.diagnose').scrollIntoView(); return true").await;
    let png = browser.client.screenshot().await.expect("screenshot");
    std::fs::write(out.join("diagnose.png"), png).expect("write the screenshot");
    browser.js("document.querySelector('#page-filter button').click(); return true").await;
    browser.wait_for("return document.querySelectorAll('#pages tbody tr').length === 3").await;

    // Filters: soft navigations only — the single-page app's route, its page views.
    browser
        .js("const n = document.getElementById('nav'); n.value = 'soft-navigation'; n.dispatchEvent(new Event('change')); return true")
        .await;
    browser.wait_for("return document.querySelectorAll('#pages tbody tr').length === 1").await;
    let rows = browser.js(pages).await;
    assert_eq!((rows[0][0].as_str(), rows[0][4].as_str()), (Some("/shop/cart"), Some("5")), "{rows}");
    browser.js("const n = document.getElementById('nav'); n.value = ''; n.dispatchEvent(new Event('change')); return true").await;
    // Phones only has no data here, and the dashboard says so.
    browser.js("const d = document.getElementById('device'); d.value = 'mobile'; d.dispatchEvent(new Event('change')); return true").await;
    browser.wait_for("return document.querySelector('[data-metric=LCP] small').textContent === 'No data in this range'").await;
    // A wrong read key is an error the page explains.
    browser.js("const k = document.getElementById('key'); k.value = 'wrong'; k.dispatchEvent(new Event('change')); return true").await;
    browser.wait_for("return document.getElementById('status').textContent.includes('check the read key')").await;

    // The printable report (what the dashboard's Report menu opens), rendered by Chromium.
    let report = get(&format!("{}/v1/report?site=demo&period=day", stack.base), &[("authorization", "Bearer dev-read-key")]).await;
    assert_eq!(report.status, 200, "{}", report.text());
    assert_eq!(report.header("content-type"), Some("text/html; charset=utf-8"));
    let file = out.join("report.html");
    std::fs::write(&file, &report.body).expect("write the report");
    browser.client.goto(&format!("file://{}", file.display())).await.expect("open the report");
    let api = stack.read("/v1/vitals?site=demo&metric=LCP&group_by=none").await;
    let shown_p75 = browser.js("return Number(document.querySelector('[data-metric=LCP] b').dataset.p75)").await;
    assert_eq!(shown_p75.as_f64(), api["rows"][0]["p75"].as_f64(), "the report's p75 LCP is the API's");
    let routes_shown = browser.js("return [...document.querySelectorAll('#routes tbody tr')].map(r => r.cells[0].textContent)").await;
    assert_eq!(routes_shown.as_array().and_then(|r| r.first()).and_then(Value::as_str), Some("/api/cart"), "highest error rate first");
    let json_report = stack.read("/v1/report?site=demo&period=day&format=json").await;
    assert_eq!(json_report["vitals"][0]["verdict"], "insufficient_data", "no previous period to compare with: {json_report}");
    // The top culprit per vital, as /v1/attribution answers it.
    let culprit = |metric: &str| {
        json_report["vitals"].as_array().and_then(|v| v.iter().find(|v| v["metric"] == metric)).map(|v| v["culprit"].clone())
    };
    let inp = &culprit("INP").expect("INP");
    assert_eq!(
        (&inp["by"], &inp["name"], &inp["page_views"]),
        (&serde_json::json!("script"), &serde_json::json!("http://localhost:3000/app.js"), &serde_json::json!(30)),
        "{inp}"
    );
    let lcp = &culprit("LCP").expect("LCP");
    assert_eq!(
        (&lcp["by"], &lcp["name"]),
        (&serde_json::json!("subpart"), &serde_json::json!("element_render_delay")),
        "render delay is the largest part: {lcp}"
    );
    assert_eq!(culprit("CLS").expect("CLS")["name"], "div.banner", "ties by name");
    let cards = browser.js("return [...document.querySelectorAll('.card .culprit')].map(c => c.textContent)").await;
    assert!(
        cards.as_array().is_some_and(|c| c
            .iter()
            .any(|c| c == "Top culprit: first-party script http://localhost:3000/app.js onClick() in 50 % of page views")),
        "{cards}"
    );
    let png = browser.client.screenshot().await.expect("screenshot");
    std::fs::write(out.join("report.png"), png).expect("write the screenshot");
    browser.close().await;
    stack.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vite_app_using_the_npm_package_reports_too() {
    let app = repo().join("tests/vite-app/dist");
    assert!(app.join("index.html").exists(), "{} is missing: run scripts/build-npm.sh (make test does)", app.display());
    let _one = ONE_BROWSER.lock().await;
    let stack = stack_serving("e2e_vite", app).await;
    let browser = chromium().await;
    browser.client.goto(&format!("{}/", stack.base)).await.expect("open the Vite app");
    browser.wait_for("return !!window.pulse").await;
    let session = browser.js("return window.pulse.session").await;
    // The late banner shifts the page before any input (shifts right after input do not count).
    browser.wait_for("return !!document.getElementById('late-banner')").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    click(&browser, "slow-button").await;
    browser.wait_for("return window.lcpInClick !== undefined").await;
    assert_eq!(browser.js("return window.lcpInClick").await, false, "LCP is final after the click's next paint, not inside the click");
    click(&browser, "fetch-ok").await;
    click(&browser, "fetch-fail").await;
    browser.wait_for("return document.getElementById('result').dataset.done === '2'").await;

    // Hidden so both Pulse and Google's web-vitals (loaded on the same page) report, then their
    // numbers compared.
    hide_behind_another_tab(&browser, 500).await;
    let pulse_values = browser.js("return window.pulseVitals").await;
    let google_values = browser.js("return window.webVitals").await;
    for name in ["FCP", "LCP", "CLS", "INP", "TTFB"] {
        let (ours, theirs) = (pulse_values[name].as_f64(), google_values[name].as_f64());
        eprintln!("e2e: {name:<5} pulse {ours:?} web-vitals {theirs:?}");
        let (Some(ours), Some(theirs)) = (ours, theirs) else { panic!("{name}: pulse {pulse_values} web-vitals {google_values}") };
        assert!((ours - theirs).abs() <= 1e-9 * theirs.abs().max(1.0), "{name}: pulse {ours} ≠ web-vitals {theirs}");
    }
    let pulse_attribution = browser.js("return window.pulseAttribution").await;
    let google_attribution = browser.js("return window.webAttribution").await;
    // And their attribution, as web-vitals' attribution build gives it.
    for name in ["FCP", "LCP", "CLS", "INP", "TTFB"] {
        let (ours, theirs) = (&pulse_attribution[name], &google_attribution[name]);
        eprintln!("e2e: {name:<5} attribution pulse {ours}\ne2e: {:<5} attribution web-vitals {theirs}", "");
        assert_same_attribution(name, ours, theirs);
    }
    assert_eq!(pulse_attribution["INP"]["interactionTarget"], "#slow-button", "the clicked button, as web-vitals' selector");
    // Chromium has Long Animation Frames: the click's frame names the 250 ms handler of /slow.js
    // (loaded with a query and a fragment, both left out), in the processing phase, and counts
    // the layout it forced as style and layout.
    let inp = &pulse_attribution["INP"];
    for key in [
        "totalScriptDuration",
        "totalStyleAndLayoutDuration",
        "totalPaintDuration",
        "totalUnattributedDuration",
        "longestScriptIntersectingDuration",
        "longestScriptCharPosition",
        "longestScriptDuration",
    ] {
        assert!(inp[key].is_number(), "INP.{key} missing: {inp}");
    }
    assert!(number(inp, "longestScriptDuration") >= 250.0, "{inp}");
    assert!(number(inp, "totalStyleAndLayoutDuration") > 0.0, "the handler's forced layout: {inp}");
    assert_eq!(inp["longestScriptURL"], Value::String(format!("{}/slow.js", stack.base)), "{inp}");
    assert_eq!(inp["longestScriptFunction"], "blockTheMainThread", "{inp}");
    assert_eq!(inp["longestScriptInvokerType"], "event-listener", "{inp}");
    assert_eq!(inp["longestScriptSubpart"], "processing-duration", "{inp}");
    assert!(inp["longestScriptInvoker"].as_str().is_some_and(|i| !i.is_empty()), "{inp}");

    browser.client.goto(&format!("{}/?again", stack.base)).await.expect("reload");
    browser.wait_for("return !!window.pulse").await;
    assert_eq!(browser.js("return window.pulse.session").await, session, "same tab, same session");
    browser.client.goto("about:blank").await.expect("leave the page");
    browser.close().await;

    let fcp = stack.metric("FCP", 2).await;
    assert!(number(&fcp, "min") > 0.0, "{fcp}");
    stack.metric("TTFB", 2).await;
    stack.metric("LCP", 2).await;
    let inp = stack.metric("INP", 1).await;
    assert!(number(&inp, "max") >= 250.0, "the 250 ms handler: {inp}");
    stack.metric("vite.loaded", 2).await;
    // The page load of both loads, measured by the agent and stored as custom metrics.
    for name in ["page.dom_content_loaded", "page.load", "page.resources", "page.slowest.script"] {
        stack.metric(name, 2).await;
    }
    // Each page view's long animation frames, sent when it was hidden or left: the first one's
    // include the click's frame, and /slow.js spent at least its 250 ms in long frames.
    stack.metric("page.long_frames", 2).await;
    let blocking = stack.metric("page.long_frame_blocking", 2).await;
    assert!(number(&blocking, "max") >= 200.0, "the 250 ms task blocks for at least 200 ms: {blocking}");
    let script = stack.metric("page.long_frame_script", 1).await;
    assert!(number(&script, "max") >= 250.0, "{script}");
    let routes = stack.api_routes(2).await;
    let rate = |route: &str| routes.get(route).map(|r| number(r, "error_rate"));
    assert_eq!((rate("/demo/api/ok"), rate("/demo/api/fail")), (Some(0.0), Some(1.0)), "{routes:?}");
    stack.running.stop().await;
}

/// A page whose Content-Security-Policy does not allow WebAssembly (no `'wasm-unsafe-eval'`), and
/// a browser without WebAssembly: `init` rejects with an error that says why, and the page keeps
/// working — its own scripts run and its `fetch` is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_webassembly_cannot_run_init_rejects_and_the_page_keeps_working() {
    let www = pulse_testkit::temp_dir("e2e-no-wasm");
    let page = |policy: &str, script: &str| {
        format!(
            "<!doctype html><html><head>{policy}<script type=\"module\" src=\"/{script}\"></script></head>\
             <body><button id=\"b\" onclick=\"\">b</button></body></html>"
        )
    };
    let csp = "<meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'self'\">";
    std::fs::write(www.join("csp.html"), page(csp, "start.js")).expect("write csp.html");
    std::fs::write(www.join("old.html"), page("", "old.js")).expect("write old.html");
    // The page's own code goes on after `init` settles (it awaits it), and nothing unhandled
    // reaches the window.
    let start = "window.errors = [];\n\
         addEventListener('error', (e) => window.errors.push(String(e.message)));\n\
         addEventListener('unhandledrejection', (e) => window.errors.push(String(e.reason)));\n\
         const { init } = await import('/agent/pulse.js');\n\
         const before = window.fetch;\n\
         try { await init({ endpoint: '/v1/beacon', site: 'demo' }); window.outcome = 'started'; }\n\
         catch (e) { window.outcome = e instanceof Error ? e.message : 'not an Error: ' + e; }\n\
         window.fetchKept = window.fetch === before;\n\
         document.getElementById('b').addEventListener('click', () => { window.clicked = true; });\n";
    std::fs::write(www.join("start.js"), start).expect("write start.js");
    // A browser without WebAssembly: the global is gone before the agent is imported.
    std::fs::write(www.join("old.js"), "globalThis.WebAssembly = undefined;\nawait import('/start.js');\n").expect("write old.js");

    let _one = ONE_BROWSER.lock().await;
    let stack = stack_serving("e2e_no_wasm", www).await;
    let browser = chromium().await;
    for (path, says) in [("csp.html", "'wasm-unsafe-eval'"), ("old.html", "cannot run WebAssembly")] {
        browser.client.goto(&format!("{}/{path}", stack.base)).await.expect("open the page");
        browser.wait_for("return typeof window.outcome === 'string'").await;
        let outcome = browser.js("return window.outcome").await;
        let message = outcome.as_str().unwrap_or_default();
        assert!(message.starts_with("pulse.init: ") && message.contains(says), "{path}: {outcome}");
        assert_eq!(browser.js("return window.fetchKept").await, Value::Bool(true), "{path}: fetch was replaced");
        click(&browser, "b").await;
        assert_eq!(browser.js("return window.clicked === true").await, Value::Bool(true), "{path}: the page's own script stopped");
        assert_eq!(browser.js("return window.errors").await, serde_json::json!([]), "{path}: errors reached the window");
        eprintln!("e2e: {path}: init rejected with {message:?}");
    }
    browser.close().await;
    stack.running.stop().await;
}

/// The handle the shipped bundle returns (`/agent/pulse.js`, as pages load it), driven from a
/// page: errors name what is wrong, a second `init` is refused while one runs, a handle kept
/// across `shutdown()` and a new `init` drives nothing but still answers `stats()`, and what was
/// recorded reaches the collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_handle_keeps_its_documented_api() {
    let www = pulse_testkit::temp_dir("e2e-handle");
    std::fs::write(
        www.join("handle.html"),
        "<!doctype html><html><body><script type=\"module\" src=\"/handle.js\"></script></body></html>",
    )
    .expect("write handle.html");
    let script = "window.errors = [];\n\
         addEventListener('error', (e) => window.errors.push(String(e.message)));\n\
         addEventListener('unhandledrejection', (e) => window.errors.push(String(e.reason)));\n\
         const { init } = await import('/agent/pulse.js');\n\
         const r = {};\n\
         const caught = async (f) => { try { await f(); return 'no error'; } catch (e) { return e.message; } };\n\
         const options = { endpoint: '/v1/beacon', site: 'demo' };\n\
         r.badOption = await caught(() => init({ ...options, nope: 1 }));\n\
         const a = await init(options);\n\
         r.twice = await caught(() => init(options));\n\
         r.ids = [typeof a.session, typeof a.page, a.sampled];\n\
         const seen = [];\n\
         a.onMetric((m) => seen.push(m.name));\n\
         a.record('e2e.handle', 2, { via: 'bundle' });\n\
         r.badName = await caught(() => a.record('Bad Name', 1));\n\
         r.badValue = await caught(() => a.record('e2e.x', 'one'));\n\
         r.seen = seen.slice();\n\
         r.rejected = a.stats().rejectedRecords;\n\
         const firstPage = a.page;\n\
         a.shutdown();\n\
         const last = JSON.stringify(a.stats());\n\
         r.afterShutdown = await caught(() => a.record('e2e.x', 1));\n\
         const b = await init(options);\n\
         a.shutdown();\n\
         a.free();\n\
         b.record('e2e.second', 1);\n\
         r.old = [JSON.stringify(a.stats()) === last, a.stats().sent >= 1, b.stats().sent, a.sampled, a.page];\n\
         r.newPage = typeof b.page === 'string' && b.page !== firstPage;\n\
         b.flush();\n\
         window.results = r;\n";
    std::fs::write(www.join("handle.js"), script).expect("write handle.js");

    let _one = ONE_BROWSER.lock().await;
    let stack = stack_serving("e2e_handle", www).await;
    let browser = chromium().await;
    browser.client.goto(&format!("{}/handle.html", stack.base)).await.expect("open the page");
    browser.wait_for("return !!window.results").await;
    let r = browser.js("return window.results").await;
    eprintln!("e2e: the shipped handle: {r}");
    let text = |key: &str| r[key].as_str().unwrap_or_default().to_owned();
    assert!(text("badOption").starts_with("pulse.init: `nope` is not an option"), "{r}");
    assert!(text("twice").contains("already running"), "{r}");
    assert_eq!(r["ids"], serde_json::json!(["string", "string", true]), "{r}");
    assert!(text("badName").starts_with("pulse.record: "), "{r}");
    assert_eq!(text("badValue"), "pulse.record: value must be a number", "{r}");
    assert_eq!(r["seen"], serde_json::json!(["e2e.handle"]), "onMetric saw the recorded metric: {r}");
    assert_eq!(r["rejected"], serde_json::json!(2), "{r}");
    assert!(text("afterShutdown").contains("shut down"), "{r}");
    assert_eq!(
        r["old"],
        serde_json::json!([true, true, 0, true, null]),
        "the old handle answers its own final stats and sampled, drives nothing: {r}"
    );
    assert_eq!(r["newPage"], serde_json::json!(true), "{r}");
    assert_eq!(browser.js("return window.errors").await, serde_json::json!([]), "errors reached the window");
    browser.close().await;
    // Sent by the first agent's shutdown and by the second's flush.
    for name in ["e2e.handle", "e2e.second"] {
        let row = stack.metric(name, 1).await;
        assert!(number(&row, "max") >= 1.0, "{name}: {row}");
    }
    stack.running.stop().await;
}

/// A single-page app (the Vite app's `spa.html`): two client-side route changes, made by real
/// clicks, are soft navigations. With `softNavigations: true` Pulse reports every navigation's
/// FCP, LCP, CLS, INP and TTFB, and their attribution, exactly as web-vitals 6.2.3 with
/// `reportSoftNavs: true` on the same page load, and the collector stores them as page views of their routes (`nav=soft-navigation`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_page_app_reports_each_soft_navigation_like_web_vitals() {
    let app = repo().join("tests/vite-app/dist");
    assert!(app.join("spa.html").exists(), "{} is missing: run scripts/build-npm.sh (make test does)", app.display());
    let _one = ONE_BROWSER.lock().await;
    let stack = stack_serving("e2e_spa", app).await;
    let browser = chromium().await;
    browser.client.goto(&format!("{}/spa.html", stack.base)).await.expect("open the single-page app");
    browser.wait_for("return !!window.pulse").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Two soft navigations, each followed by a late banner (a layout shift in its page view) and
    // by interactions that count in its INP.
    for (link, path) in [("to-product", "/shop/products/42"), ("to-cart", "/shop/cart")] {
        click(&browser, link).await;
        browser.wait_for(&format!("return document.body.dataset.shifted === '{path}'")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        click(&browser, "slow").await;
        click(&browser, "quick").await;
        tokio::time::sleep(Duration::from_millis(1_200)).await;
    }
    // Hidden, so both libraries report the last page view.
    hide_behind_another_tab(&browser, 1_000).await;

    let ours = final_values(&browser.js("return window.pulseReports").await);
    let theirs = final_values(&browser.js("return window.webVitalsReports").await);
    let navs = browser.js("return window.webVitalsReports.filter((r) => r.name === 'FCP').map((r) => r.nav)").await;
    assert_eq!(navs, serde_json::json!(["navigate", "soft-navigation", "soft-navigation"]), "web-vitals saw two soft navigations");
    for name in ["FCP", "LCP", "CLS", "INP", "TTFB"] {
        let (ours, theirs) = (&ours[name], &theirs[name]);
        eprintln!("e2e: {name:<5} pulse {ours:?}\ne2e: {:<5} web-vitals {theirs:?}", "");
        assert_eq!(ours.len(), theirs.len(), "{name}: one value per navigation: pulse {ours:?}, web-vitals {theirs:?}");
        for (a, b) in ours.iter().zip(theirs) {
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{name}: pulse {ours:?} ≠ web-vitals {theirs:?}");
        }
    }
    assert_eq!(ours["FCP"].len(), 3, "the load and two soft navigations");
    // And the attribution of each navigation's metrics, as web-vitals' attribution build gives it.
    let ours = final_reports(&browser.js("return window.pulseReports").await);
    let theirs = final_reports(&browser.js("return window.webVitalsReports").await);
    for name in ["FCP", "LCP", "CLS", "INP", "TTFB"] {
        for (a, b) in ours[name].iter().zip(&theirs[name]) {
            eprintln!("e2e: {name:<5} attribution pulse {}\ne2e: {:<5} attribution web-vitals {}", a["attribution"], "", b["attribution"]);
            assert_same_attribution(name, &a["attribution"], &b["attribution"]);
        }
    }
    browser.client.goto("about:blank").await.expect("leave the page");
    browser.close().await;

    // Stored as page views of their routes, told apart by `nav` — each metric with the page view
    // it was measured in, also the landing page's LCP, CLS and INP, reported after the URL had
    // changed (at the first soft navigation).
    let soft = vec![("/shop/cart".to_owned(), 1), ("/shop/products/:id".to_owned(), 1)];
    let load = vec![("/spa.html".to_owned(), 1)];
    for _ in 0..100 {
        if stack.by_url("INP", "soft-navigation").await == soft {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for metric in ["FCP", "LCP", "CLS", "INP", "TTFB"] {
        assert_eq!(stack.by_url(metric, "soft-navigation").await, soft, "{metric} of the soft navigations, by route");
        assert_eq!(stack.by_url(metric, "navigate").await, load, "{metric} of the load, on its own URL");
    }
    stack.running.stop().await;
}

/// Each metric's reports as (name → the last report of each instance, in the order instances
/// first reported): the last report of an `id` is its value.
fn final_reports(reports: &Value) -> HashMap<String, Vec<Value>> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut last: HashMap<(String, String), Value> = HashMap::new();
    for r in reports.as_array().expect("an array of reports") {
        let key = (r["name"].as_str().unwrap_or_default().to_owned(), r["id"].as_str().unwrap_or_default().to_owned());
        if !last.contains_key(&key) {
            order.push(key.clone());
        }
        last.insert(key, r.clone());
    }
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for name in ["FCP", "LCP", "CLS", "INP", "TTFB"] {
        out.insert(name.to_owned(), Vec::new());
    }
    for key in order {
        let report = last[&key].clone();
        out.entry(key.0).or_default().push(report);
    }
    out
}

/// The final value of each instance, as [`final_reports`].
fn final_values(reports: &Value) -> HashMap<String, Vec<f64>> {
    final_reports(reports)
        .into_iter()
        .map(|(name, r)| (name, r.iter().map(|r| r["value"].as_f64().unwrap_or(f64::NAN)).collect()))
        .collect()
}

/// Pulse's attribution of a metric equals web-vitals' attribution build's: every field web-vitals
/// sends that Pulse's compact attribution has (numbers to 1e-9, strings exactly), and nothing
/// web-vitals lacks but INP's target. web-vitals adds the interaction's time, its next paint and
/// long animation frames' totals, which Pulse does not send; it leaves the INP target out when it
/// reads the entries' `target` only at the hide, by which time Chromium gives it as null (a probe
/// printed both pointerdown entries with target null and no targetSelector). The agent reads the
/// target when the entry arrives.
fn assert_same_attribution(name: &str, ours: &Value, theirs: &Value) {
    const EXTRAS: [&str; 2] = ["interactionTime", "nextPaintTime"];
    let (Some(ours), Some(theirs)) = (ours.as_object(), theirs.as_object()) else {
        panic!("{name}: no attribution: pulse {ours}, web-vitals {theirs}")
    };
    for (key, theirs) in theirs.iter().filter(|(k, _)| !EXTRAS.contains(&k.as_str())) {
        let ours = ours.get(key).unwrap_or_else(|| panic!("{name}: web-vitals has `{key}`, pulse does not"));
        match (ours.as_f64(), theirs.as_f64()) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{name}.{key}: pulse {a} ≠ web-vitals {b}"),
            _ => assert_eq!(ours, theirs, "{name}.{key}"),
        }
    }
    for key in ours.keys() {
        assert!(
            theirs.contains_key(key) || (name, key.as_str()) == ("INP", "interactionTarget"),
            "{name}: pulse has `{key}`, web-vitals does not"
        );
    }
}
