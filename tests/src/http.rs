//! A minimal HTTP/1.1 client for tests (hyper, which the workspace already builds).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A response, read whole.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request. `headers` are (name, value) pairs. Panics when no answer comes.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response {
    try_send(method, url, headers, body).await.unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// Sends one request; an error when the connection fails or breaks before the whole answer.
pub async fn try_send(method: &str, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Result<Response, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Response { status, headers, body })
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Response {
    send("GET", url, headers, Bytes::new()).await
}

/// POSTs a beacon as `sendBeacon` does (`text/plain`), from a localhost page.
pub async fn post_beacon(base: &str, body: impl Into<Bytes>) -> Response {
    send("POST", &format!("{base}/v1/beacon"), &[("content-type", "text/plain;charset=UTF-8"), ("origin", "http://localhost:3000")], body)
        .await
}
