//! Liveness and readiness, including a database that stops working.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use items_api::domain::IdempotencyKey;
use items_api::domain::ItemText;
use items_api::feed::ChangeFeed;
use items_api::store::{DatabaseStatus, Item, ItemStore, Once, Page, Revision, StoreError};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::helpers::{TestApp, assert_json_content_type, json_of, router_on};

#[tokio::test]
async fn healthz_is_a_plain_ok() {
    let app = TestApp::spawn().await;
    let response = app.get("/api/healthz").await;
    assert_eq!(response.status(), 200);
    assert_json_content_type(&response);
    assert_eq!(response.text().await.unwrap(), r#"{"status":"ok"}"#);
}

#[tokio::test]
async fn health_reports_build_runtime_and_database_details() {
    let app = TestApp::spawn_with(|config| {
        config.build_version = "9.8.7".into();
        config.build_date = "2026-11-23T00:00:00Z".into();
        config.vcs_ref = "abc1234".into();
    })
    .await;
    app.add("one").await;
    let response = app.get("/api/health").await;
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], "9.8.7");
    assert_eq!(body["build_date"], "2026-11-23T00:00:00Z");
    assert_eq!(body["vcs_ref"], "abc1234");
    assert_eq!(body["environment"], "development");
    assert!(body["uptime_seconds"].is_u64());
    assert!(!body["hostname"].as_str().unwrap().is_empty());
    let mut database = body["database"].clone();
    // The free space changes from one probe to the next; its presence is what is checked.
    let free = database["details"]
        .as_object_mut()
        .and_then(|details| details.remove("free_bytes"));
    assert!(free.is_some_and(|bytes| bytes.as_u64().is_some_and(|bytes| bytes > 0)));
    assert_eq!(
        database,
        json!({
            "backend": "sqlite",
            "reachable": true,
            "writable": true,
            "item_count": 1,
            "journal_mode": "wal",
            "details": {"journal_mode": "wal", "requested_journal_mode": "wal"},
        })
    );
}

#[tokio::test]
async fn health_shows_the_configured_journal_mode() {
    let app = TestApp::spawn_with(|config| {
        config.sqlite_journal_mode = items_api::store::sqlite::JournalMode::Delete;
    })
    .await;
    let body = json_of(app.get("/api/health").await).await;
    assert_eq!(body["database"]["journal_mode"], "delete");
}

/// A store whose database has gone away: every call fails.
struct BrokenStore {
    feed: ChangeFeed,
}

#[async_trait]
impl ItemStore for BrokenStore {
    async fn list(&self, _: Page) -> Result<Vec<Item>, StoreError> {
        Err(StoreError::unavailable("broken"))
    }
    async fn get(&self, _: i64) -> Result<Option<Item>, StoreError> {
        Err(StoreError::unavailable("broken"))
    }
    async fn create(&self, _: ItemText) -> Result<Item, StoreError> {
        Err(broken_sqlite())
    }
    async fn create_once(&self, _: ItemText, _: IdempotencyKey) -> Result<Once, StoreError> {
        Err(broken_sqlite())
    }
    async fn update(&self, _: i64, _: ItemText) -> Result<Option<Item>, StoreError> {
        Err(StoreError::unavailable("broken"))
    }
    async fn delete(&self, _: i64) -> Result<bool, StoreError> {
        Err(StoreError::unavailable("broken"))
    }
    async fn status(&self) -> DatabaseStatus {
        DatabaseStatus {
            backend: "broken",
            details: serde_json::Map::new(),
            reachable: false,
            writable: false,
            item_count: None,
            journal_mode: None,
            error: Some("disk I/O error".into()),
        }
    }
    async fn revision(&self) -> Result<Option<Revision>, StoreError> {
        Err(StoreError::unavailable("broken"))
    }
    fn changes(&self) -> &ChangeFeed {
        &self.feed
    }
    async fn close(&self) {}
}

fn broken_sqlite() -> StoreError {
    StoreError::failed(std::io::Error::other("disk I/O error in /secret/path"))
}

async fn call(path: &str, method: &str, body: &str) -> (u16, Value) {
    let store = BrokenStore {
        feed: ChangeFeed::new_process_feed(0, 0),
    };
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test")
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router_on(Arc::new(store)).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn liveness_does_not_touch_the_database() {
    let (status, body) = call("/api/healthz", "GET", "").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
}

#[tokio::test]
async fn readiness_is_503_when_the_database_is_not_usable() {
    let (status, body) = call("/api/health", "GET", "").await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["database"]["reachable"], false);
    assert_eq!(body["database"]["error"], "disk I/O error");
}

#[tokio::test]
async fn storage_failures_are_opaque_json_errors() {
    let (status, body) = call("/api/items", "GET", "").await;
    assert_eq!(
        (status, body),
        (503, json!({"detail": "Service Unavailable"}))
    );
    let (status, body) = call("/api/items", "POST", r#"{"text":"x"}"#).await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        json!({"detail": "Internal Server Error"}),
        "no internals leak"
    );
}
