//! Notifications: one message per alert transition, shaped for each kind of receiver, delivered
//! with retries.
//!
//! - `webhook`: Pulse's JSON ([`Message`]); with a `secret`, the body's HMAC-SHA256 in
//!   `X-Pulse-Signature: sha256=<hex>`.
//! - `slack`: an incoming-webhook payload (`text` and a `blocks` section).
//! - `pagerduty`: Events API v2 — `trigger` for firing, severity changes and reminders, `resolve`
//!   when resolved, with the alert's fingerprint as `dedup_key`, so PagerDuty keeps one incident
//!   per alert.
//!
//! Page URLs, release names and group values in a notice come from beacons, that is from anyone:
//! they are data, never markup. Each is cut to [`MAX_VALUE_CHARS`] and the summary to
//! [`MAX_SUMMARY_CHARS`] ([`capped`]); Slack's text has `&`, `<` and `>` escaped ([`mrkdwn`]), so
//! `<!channel>` pings nobody and `<https://evil|Log in>` is no link, its blocks are `verbatim`
//! (Slack links no bare URL or name in them), and the one link is the dashboard's, which Pulse
//! builds. The webhook's JSON and PagerDuty's fields are plain text: receivers must not read them
//! as markup.
//!
//! Each delivery is tried 3 times (1 s, then 2 s apart), which rides out a blip; a notice still
//! undelivered stays owed in `alert_deliveries` and is sent again at each evaluation (see
//! [`super::Alerts`]), which rides out an outage or a restart. Failures are counted in
//! `pulse_alert_notifications_total{outcome="failed"}` and shown on the alert. URLs are logged
//! without their path or query (Slack and PagerDuty put secrets there).

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

use super::rules::{Notifier, NotifierKind};

const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(10);

/// Longest page URL, release name or group in a notice, in chars: enough to recognise a page
/// (routes are at most 512 bytes, release names 256), short enough for a phone's notification.
pub const MAX_VALUE_CHARS: usize = 120;
/// Longest summary, in chars: PagerDuty refuses a `summary` over 1024.
pub const MAX_SUMMARY_CHARS: usize = 1024;

/// `text` cut to at most `max` chars, the last of them `…` when it was cut.
pub fn capped(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((end, _)) if text.chars().count() > max => format!("{}…", &text[..end]),
        _ => text.to_owned(),
    }
}

/// `text` as Slack `mrkdwn` shows it literally: `&`, `<` and `>` as entities (Slack's escaping;
/// `<…>` is how mentions, channel pings and links are written, so none survives).
pub fn mrkdwn(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A link target Pulse built, for Slack's `<url|text>`: only `http(s)` URLs, with `|` (which would
/// end the target) percent-encoded and the rest escaped; anything else is no link.
fn slack_link(url: &str, text: &str) -> String {
    if url.starts_with("https://") || url.starts_with("http://") {
        format!("<{}|{}>", mrkdwn(&url.replace('|', "%7C")), mrkdwn(text))
    } else {
        mrkdwn(text)
    }
}

/// What one alert transition says; the webhook body as is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub version: u32,
    /// `firing` or `resolved`.
    pub status: String,
    /// `firing`, `severity_changed`, `reminder` or `resolved`.
    pub notice: String,
    pub rule: String,
    pub site: String,
    pub group: String,
    pub metric: String,
    pub stat: String,
    pub severity: Option<String>,
    pub value: Option<f64>,
    pub threshold: f64,
    pub samples: u64,
    pub window: String,
    /// RFC 3339: when the alert started firing.
    pub started_at: String,
    /// RFC 3339: this evaluation.
    pub at: String,
    pub summary: String,
    pub dashboard: String,
    /// Stable per rule and group: PagerDuty's `dedup_key`.
    pub fingerprint: String,
}

/// The HTTP client of the notifiers (HTTPS with the webpki roots, or plain HTTP).
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub fn client() -> HttpClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
    Client::builder(TokioExecutor::new()).build(https)
}

/// The body a notifier receives for `message`.
pub fn body(notifier: &Notifier, message: &Message) -> Value {
    match notifier.kind {
        NotifierKind::Webhook => serde_json::to_value(message).unwrap_or(Value::Null),
        NotifierKind::Slack => {
            let icon = match (message.status.as_str(), message.severity.as_deref()) {
                ("resolved", _) => ":large_green_circle:",
                (_, Some("critical")) => ":red_circle:",
                _ => ":large_orange_circle:",
            };
            let summary = mrkdwn(&capped(&message.summary, MAX_SUMMARY_CHARS));
            let text = |s: &str| mrkdwn(&capped(s, MAX_VALUE_CHARS));
            json!({
                "text": format!("{icon} {summary}"),
                "unfurl_links": false,
                "unfurl_media": false,
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "verbatim": true, "text": format!("{icon} *{}* — {summary}", text(&message.rule))}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "verbatim": true, "text": format!(
                        "{} · site {} · {}",
                        slack_link(&message.dashboard, "Open the Pulse dashboard"),
                        text(&message.site),
                        text(&message.notice)
                    )}]},
                ],
            })
        }
        NotifierKind::PagerDuty => {
            let routing_key = notifier.routing_key.clone().unwrap_or_default();
            if message.status == "resolved" {
                json!({"routing_key": routing_key, "event_action": "resolve", "dedup_key": message.fingerprint})
            } else {
                json!({
                    "routing_key": routing_key,
                    "event_action": "trigger",
                    "dedup_key": message.fingerprint,
                    "payload": {
                        "summary": capped(&message.summary, MAX_SUMMARY_CHARS),
                        "source": format!("pulse/{}", message.site),
                        "severity": message.severity.as_deref().unwrap_or("warning"),
                        "timestamp": message.at,
                        "component": message.site,
                        "group": capped(&message.group, MAX_VALUE_CHARS),
                        "class": message.metric,
                        "custom_details": serde_json::to_value(message).unwrap_or(Value::Null),
                    },
                    "links": [{"href": message.dashboard, "text": "Pulse dashboard"}],
                })
            }
        }
    }
}

/// `sha256=<hex>` of the body under the secret.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::from("sha256=");
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// The URL without path and query, for logs.
pub fn redacted(url: &str) -> String {
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{}://{host}/…", &url[..i])
        }
        None => "…".into(),
    }
}

/// Sends a body made by [`body`] to `notifier`, retrying; `Err` holds the last failure.
pub async fn deliver(client: &HttpClient, notifier: &Notifier, body: &[u8]) -> Result<(), String> {
    let mut backoff = FIRST_BACKOFF;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match send(client, notifier, body).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                tracing::warn!(notifier = %notifier.name, url = %redacted(&notifier.url), attempt, %err, "notification not delivered");
                last = err;
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    Err(last)
}

async fn send(client: &HttpClient, notifier: &Notifier, body: &[u8]) -> Result<(), String> {
    let mut request = hyper::Request::post(&notifier.url).header("content-type", "application/json").header("user-agent", "pulse-alerts");
    if let (NotifierKind::Webhook, Some(secret)) = (notifier.kind, &notifier.secret) {
        request = request.header("x-pulse-signature", signature(secret, body));
    }
    let request = request.body(Full::new(Bytes::copy_from_slice(body))).map_err(|e| e.to_string())?;
    // The whole exchange, answer body included, within the timeout: a stalled receiver cannot
    // hold a delivery (and the notices queued behind it) forever.
    let exchange = async {
        let response = client.request(request).await.map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        Ok::<_, String>(status)
    };
    let status = tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))??;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(group: &str, summary: &str) -> Message {
        Message {
            version: 1,
            status: "firing".into(),
            notice: "firing".into(),
            rule: "page-lcp".into(),
            site: "shop".into(),
            group: group.into(),
            metric: "LCP".into(),
            stat: "p75".into(),
            severity: Some("warning".into()),
            value: Some(3000.0),
            threshold: 2500.0,
            samples: 50,
            window: "600s".into(),
            started_at: "2026-12-01T00:00:00Z".into(),
            at: "2026-12-01T00:00:00Z".into(),
            summary: summary.into(),
            dashboard: "https://pulse.example/dashboard.html?site=shop&metric=LCP".into(),
            fingerprint: "0123456789abcdef".into(),
        }
    }

    fn notifier(kind: NotifierKind) -> Notifier {
        Notifier { name: "n".into(), kind, url: "https://hooks.example/x".into(), secret: None, routing_key: Some("k".into()) }
    }

    #[test]
    fn mrkdwn_escapes_what_slack_reads_as_markup() {
        assert_eq!(mrkdwn("/<!channel>"), "/&lt;!channel&gt;");
        assert_eq!(mrkdwn("<https://evil|Log in>"), "&lt;https://evil|Log in&gt;");
        assert_eq!(mrkdwn("a &amp; b"), "a &amp;amp; b", "an entity in data stays text");
        assert_eq!(mrkdwn("/checkout → 2.4.1"), "/checkout → 2.4.1");
    }

    #[test]
    fn capped_cuts_on_chars_and_marks_the_cut() {
        assert_eq!(capped("/checkout", 9), "/checkout");
        assert_eq!(capped("/checkout", 5), "/che…");
        assert_eq!(capped("éééé", 3), "éé…");
        assert_eq!(capped("", 3), "");
    }

    #[test]
    fn slack_shows_data_as_text_and_links_only_the_dashboard() {
        let m = message("/<!channel>", "Firing: p75 LCP for url /<!channel> and <https://evil|Log in> is 3000 ms");
        let body = body(&notifier(NotifierKind::Slack), &m);
        let text = body.to_string();
        assert!(!text.contains("<!channel>") && !text.contains("<https://evil"), "{text}");
        assert!(text.contains("/&lt;!channel&gt;") && text.contains("&lt;https://evil|Log in&gt;"), "{text}");
        assert_eq!(text.matches('<').count(), 1, "one link: {text}");
        assert!(text.contains("<https://pulse.example/dashboard.html?site=shop&amp;metric=LCP|Open the Pulse dashboard>"), "{text}");
        assert_eq!(body["blocks"][0]["text"]["verbatim"], true);
        assert_eq!(body["unfurl_links"], false);
    }

    #[test]
    fn long_data_is_capped_for_every_notifier() {
        let long = format!("/{}", "a".repeat(5000));
        let m = message(&long, &format!("Firing: {long}"));
        let slack = body(&notifier(NotifierKind::Slack), &m);
        let text = slack["text"].as_str().unwrap_or_default();
        assert_eq!(text.split_once(' ').map(|(_, summary)| summary.chars().count()), Some(MAX_SUMMARY_CHARS), "{text}");
        let pd = body(&notifier(NotifierKind::PagerDuty), &m);
        assert_eq!(pd["payload"]["summary"].as_str().map(|t| t.chars().count()), Some(MAX_SUMMARY_CHARS));
        assert_eq!(pd["payload"]["group"].as_str().map(|t| t.chars().count()), Some(MAX_VALUE_CHARS));
    }

    #[test]
    fn a_dashboard_link_that_is_no_http_url_is_no_link() {
        assert_eq!(slack_link("javascript:alert(1)", "Open"), "Open");
        assert_eq!(slack_link("https://p.example/?a=1|x>y", "Open"), "<https://p.example/?a=1%7Cx&gt;y|Open>");
    }

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn logged_urls_hide_paths_and_credentials() {
        assert_eq!(redacted("https://hooks.slack.com/services/T0/B0/secret"), "https://hooks.slack.com/…");
        assert_eq!(redacted("https://user:pw@hooks.example/x?token=1"), "https://hooks.example/…");
    }
}
