//! Requests as a reverse proxy sends them: HTTP/1.0, `Connection: close`, foreign `Host`,
//! `X-Forwarded-*`, and request ids.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestApp;

/// Sends raw bytes and reads until the server closes the connection.
async fn raw_exchange(app: &TestApp, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8(response).unwrap()
}

#[tokio::test]
async fn nginx_style_http10_requests_work_and_close_the_connection() {
    let app = TestApp::spawn().await;
    let body = r#"{"text":"via proxy"}"#;
    let post = format!(
        "POST /api/items HTTP/1.0\r\nHost: example.org\r\nConnection: close\r\n\
         X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 203.0.113.7\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = raw_exchange(&app, post.as_bytes()).await;
    assert!(
        response.starts_with("HTTP/1.0 201") || response.starts_with("HTTP/1.1 201"),
        "{response}"
    );
    assert!(response.contains("via proxy"));

    let get = b"GET /api/items HTTP/1.0\r\nHost: web.internal:8080\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(&app, get).await;
    assert!(response.contains(" 200 "), "{response}");
    assert!(response.contains("via proxy"));
}

#[tokio::test]
async fn http11_with_connection_close_and_an_ip_host_works() {
    let app = TestApp::spawn().await;
    let request = format!(
        "GET /api/healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        app.addr
    );
    let response = raw_exchange(&app, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");
}

#[tokio::test]
async fn a_garbage_request_line_is_answered_with_a_4xx() {
    let app = TestApp::spawn().await;
    let response = raw_exchange(&app, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 4"),
        "{response}"
    );
    // The server is still fine afterwards.
    assert_eq!(app.get("/api/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_request_id_from_the_proxy_is_echoed() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/api/items"))
        .header("x-request-id", "nginx-4f2a9c")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "nginx-4f2a9c");
}

#[tokio::test]
async fn an_unusable_request_id_is_replaced() {
    let app = TestApp::spawn().await;
    for bad in ["has space", "quote\"", &"x".repeat(129), "semi;colon"] {
        let response = app
            .client
            .get(app.url("/api/healthz"))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let echoed = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(echoed, bad);
        assert_eq!(echoed.len(), 36, "a fresh UUID: {echoed}");
    }
}

#[tokio::test]
async fn a_request_id_is_generated_when_absent() {
    let app = TestApp::spawn().await;
    let first = app.get("/api/healthz").await.headers()["x-request-id"].clone();
    let second = app.get("/api/healthz").await.headers()["x-request-id"].clone();
    assert_eq!(first.len(), 36, "a UUID: {first:?}");
    assert_ne!(first, second);
}

#[tokio::test]
async fn http11_without_a_host_or_any_request_with_two_is_a_json_400() {
    let app = TestApp::spawn().await;
    for request in [
        &b"GET /api/healthz HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET http://example.org/api/healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /api/healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        b"GET /api/healthz HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        b"POST /api/items HTTP/1.1\r\nConnection: close\r\nContent-Type: application/json\r\n\
          Content-Length: 12\r\n\r\n{\"text\":\"a\"}",
    ] {
        let shown = String::from_utf8_lossy(request);
        let response = raw_exchange(&app, request).await;
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let head = head.to_ascii_lowercase();
        assert_eq!(head.split(' ').nth(1), Some("400"), "{shown}: {response}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("x-request-id: "), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains("Host")),
            "{body}"
        );
    }
    assert!(app.items().await.is_empty(), "nothing was stored");
    // HTTP/1.0 had no Host header: a request without one is served.
    let response = raw_exchange(&app, b"GET /api/healthz HTTP/1.0\r\n\r\n").await;
    assert!(response.contains(" 200 "), "{response}");
}
