//! The access log as the real binary writes it: one JSON line per request, filterable by target.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::BinaryServer;

/// The logged lines that mention `needle`, as JSON, once at least `count` are there.
fn lines_with(server: &BinaryServer, needle: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<Value> = server
            .output
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(needle))
            .map(|line| serde_json::from_str(line).expect("every log line is JSON"))
            .collect();
        if lines.len() >= count || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn get_with_id(server: &BinaryServer, path: &str, request_id: &str) -> u16 {
    reqwest::Client::new()
        .get(server.url(path))
        .header("x-request-id", request_id)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn every_request_gets_one_json_access_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(&dir.path().join("app.db"), &[]);
    assert_eq!(
        get_with_id(&server, "/api/items?limit=5", "log-line-1").await,
        200
    );
    let lines = lines_with(&server, "log-line-1", 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    for (key, expected) in [
        ("message", "request"),
        ("level", "INFO"),
        ("target", "items_api::access"),
        ("method", "GET"),
        ("path", "/api/items"),
        ("version", "HTTP/1.1"),
        ("request_id", "log-line-1"),
    ] {
        assert_eq!(line[key], expected, "{key} in {line}");
    }
    assert_eq!(line["status"], 200);
    assert!(line["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn a_client_error_is_logged_at_info_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(&dir.path().join("app.db"), &[]);
    assert_eq!(
        get_with_id(&server, "/api/items/x", "log-line-422").await,
        422
    );
    let lines = lines_with(&server, "log-line-422", 1);
    assert_eq!(
        (lines[0]["status"].clone(), lines[0]["level"].clone()),
        (422.into(), "INFO".into())
    );
}

#[tokio::test]
async fn the_access_log_can_be_turned_off_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = BinaryServer::start(
        &dir.path().join("app.db"),
        &[("RUST_LOG", "info,items_api::access=warn")],
    );
    assert_eq!(
        get_with_id(&server, "/api/healthz", "log-line-off").await,
        200
    );
    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(10)), 0);
    // The last line of all is out: other events are still logged, the access line is not.
    assert_eq!(lines_with(&server, "\"stopped\"", 1).len(), 1);
    assert!(!server.log_contains("log-line-off"));
}
