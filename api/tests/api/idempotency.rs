//! `Idempotency-Key` on `POST /api/items`: a retry with the same key and text gets the first
//! attempt's item, once, on either backend, across restarts, backups and transfers; another text
//! is refused; a key still running is a 409; and a write whose commit was not confirmed says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use items_api::domain::{IdempotencyKey, ItemText};
use items_api::feed::ChangeFeed;
use items_api::store::{DatabaseStatus, Item, ItemStore, Once, Page, Revision, StoreError};
use rstest::rstest;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::helpers::{Backend, TestApp, json_of, router_on};

async fn post_keyed(app: &TestApp, key: &str, text: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/items"))
        .header("idempotency-key", key)
        .json(&json!({ "text": text }))
        .send()
        .await
        .expect("POST is answered")
}

fn replayed(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true")
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_retry_with_the_same_key_and_text_gets_the_first_item_and_stores_nothing_more(
    #[case] backend: Backend,
) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let first = post_keyed(&app, "0d9b7a52-6f1e-4f4e-9d0c-1a2b3c4d5e6f", "buy milk").await;
    assert_eq!(first.status(), 201);
    assert!(!replayed(&first));
    let location = first.headers()["location"].clone();
    let first = json_of(first).await;
    // The draft's form: the key as a quoted string; and the text with other surrounding spaces.
    let again = post_keyed(
        &app,
        "\"0d9b7a52-6f1e-4f4e-9d0c-1a2b3c4d5e6f\"",
        "  buy milk ",
    )
    .await;
    assert_eq!(again.status(), 201);
    assert!(replayed(&again));
    assert_eq!(again.headers()["location"], location);
    assert_eq!(json_of(again).await, first);
    assert_eq!(app.items().await, vec![first.clone()]);

    // What was answered then, whatever happened to the item since.
    let path = format!("/api/items/{}", first["id"]);
    assert_eq!(app.delete(&path).await.status(), 204);
    let after_delete = post_keyed(&app, "0d9b7a52-6f1e-4f4e-9d0c-1a2b3c4d5e6f", "buy milk").await;
    assert_eq!(json_of(after_delete).await, first);
    assert!(app.items().await.is_empty());
    app.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_same_key_with_another_text_is_refused_and_stores_nothing(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    assert_eq!(post_keyed(&app, "key-1", "first").await.status(), 201);
    let other = post_keyed(&app, "key-1", "second").await;
    assert_eq!(other.status(), 422);
    let body = json_of(other).await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("used for another item text")),
        "{body}"
    );
    assert_eq!(app.items().await.len(), 1);
    // Keys are independent of each other, and a create without a key is as before.
    assert_eq!(post_keyed(&app, "key-2", "second").await.status(), 201);
    assert_eq!(app.add("no key").await["text"], "no key");
    assert_eq!(app.items().await.len(), 3);
    app.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_key_that_is_not_visible_ascii_or_too_long_is_a_400(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    for bad in ["", "has space", &"k".repeat(256), "\"\""] {
        let response = post_keyed(&app, bad, "x").await;
        assert_eq!(response.status(), 400, "{bad:?}");
        let body = json_of(response).await;
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|detail| detail.starts_with("Idempotency-Key must be")),
            "{body}"
        );
    }
    let twice = app
        .client
        .post(app.url("/api/items"))
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    assert!(app.items().await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_whose_first_create_still_runs_is_a_409_and_the_first_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let app = Arc::new(TestApp::spawn_on(&db, |_| {}).await);
    // Another process holds the write lock: the first create waits for it.
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let first = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { post_keyed(&app, "slow-key", "once").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let second = post_keyed(&app, "slow-key", "once").await;
    assert_eq!(second.status(), 409);
    assert_eq!(second.headers()["retry-after"], "1");
    locker.execute_batch("COMMIT").unwrap();
    let first = first.await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(!replayed(&first));
    let retried = post_keyed(&app, "slow-key", "once").await;
    assert!(replayed(&retried));
    assert_eq!(app.items().await.len(), 1);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_requests_with_one_key_store_one_item(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let app = Arc::new(app);
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let response = post_keyed(&app, "together", "one item").await;
                let status = response.status().as_u16();
                let fresh = status == 201 && !replayed(&response);
                let body = json_of(response).await;
                (status, fresh, body)
            })
        })
        .collect();
    let mut created = Vec::new();
    for task in tasks {
        let (status, fresh, body) = task.await.unwrap();
        assert!(status == 201 || status == 409, "{status} {body}");
        if status == 201 {
            created.push((fresh, body["id"].clone()));
        }
    }
    assert_eq!(created.iter().filter(|(fresh, _)| *fresh).count(), 1);
    assert!(created.iter().all(|(_, id)| *id == created[0].1));
    assert_eq!(app.items().await.len(), 1);
}

#[tokio::test]
async fn keys_survive_a_restart_a_backup_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let app = TestApp::spawn_on(&db, |_| {}).await;
    let first = json_of(post_keyed(&app, "kept", "durable").await).await;
    app.stop().await;

    let app = TestApp::spawn_on(&db, |_| {}).await;
    let after_restart = post_keyed(&app, "kept", "durable").await;
    assert!(replayed(&after_restart));
    assert_eq!(json_of(after_restart).await, first);
    app.stop().await;

    let copy = dir.path().join("backup.db");
    items_api::maintenance::backup(&items_api::store::Location::Sqlite(db.clone()), &copy)
        .await
        .unwrap();
    let restored_path = dir.path().join("restored.db");
    items_api::maintenance::restore(
        &items_api::store::Location::Sqlite(restored_path.clone()),
        &copy,
    )
    .await
    .unwrap();
    let restored = TestApp::spawn_on(&restored_path, |_| {}).await;
    let after_restore = post_keyed(&restored, "kept", "durable").await;
    assert!(replayed(&after_restore));
    assert_eq!(json_of(after_restore).await, first);
    restored.stop().await;
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn keys_move_with_the_items_to_postgres_and_back() {
    let Some(url) = crate::postgres_support::database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let app = TestApp::spawn_on(&db, |_| {}).await;
    let mut first = Vec::new();
    for n in 0..3 {
        let text = format!("moved {n} \u{0} \u{ffff}");
        first.push(json_of(post_keyed(&app, &format!("key-{n}"), &text).await).await);
    }
    app.stop().await;

    let sqlite = items_api::store::Location::Sqlite(db.clone());
    let postgres = items_api::store::Location::parse(&url, "test", &Default::default()).unwrap();
    let report = items_api::maintenance::transfer::transfer(&sqlite, &postgres, |_| {})
        .await
        .unwrap();
    assert_eq!(report.keys, 3);
    let on_postgres = TestApp::on_url(&url, |_| {}).await;
    for (n, item) in first.iter().enumerate() {
        let text = format!("moved {n} \u{0} \u{ffff}");
        let again = post_keyed(&on_postgres, &format!("key-{n}"), &text).await;
        assert!(replayed(&again));
        assert_eq!(&json_of(again).await, item);
    }
    on_postgres.stop().await;

    let back = items_api::store::Location::Sqlite(dir.path().join("back.db"));
    let report = items_api::maintenance::transfer::transfer(&postgres, &back, |_| {})
        .await
        .unwrap();
    assert_eq!(report.keys, 3);
    let items_api::store::Location::Sqlite(back_path) = &back else {
        unreachable!()
    };
    let on_sqlite = TestApp::spawn_on(back_path, |_| {}).await;
    let again = post_keyed(&on_sqlite, "key-1", "moved 1 \u{0} \u{ffff}").await;
    assert_eq!(json_of(again).await, first[1]);
    on_sqlite.stop().await;
}

#[tokio::test]
async fn a_key_past_its_retention_creates_a_new_item_and_old_keys_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let app = TestApp::spawn_on(&db, |_| {}).await;
    let first = json_of(post_keyed(&app, "old", "again").await).await;
    app.stop().await;
    let day_and_a_bit = items_api::store::KEY_RETENTION.as_secs() as i64 + 60;
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE idempotency_keys SET stored_at = stored_at - ?1",
            [day_and_a_bit],
        )
        .unwrap();
    let app = TestApp::spawn_on(&db, |_| {}).await;
    let second = post_keyed(&app, "old", "again").await;
    assert!(!replayed(&second));
    assert_ne!(json_of(second).await["id"], first["id"]);
    app.stop().await;

    // The writer's first transaction after a start sweeps keys past the retention.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&format!(
            "INSERT INTO idempotency_keys VALUES ('stale', 'x', 1, 't', 'c', {});",
            time::OffsetDateTime::now_utc().unix_timestamp() - day_and_a_bit
        ))
        .unwrap();
    let app = TestApp::spawn_on(&db, |_| {}).await;
    app.add("any write").await;
    app.stop().await;
    let left: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM idempotency_keys WHERE key = 'stale'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn on_postgres_a_key_past_its_retention_creates_a_new_item() {
    let served = match crate::postgres_support::fresh_app_role_url().await {
        Ok(url) => url,
        Err(reason) => return crate::postgres_support::unavailable(&reason),
    };
    let app = TestApp::spawn_with(|config| {
        config.database_url = items_api::config::DatabaseUrl(served.clone());
    })
    .await;
    let first = json_of(post_keyed(&app, "old", "again").await).await;
    let admin = crate::postgres_support::shared().unwrap().admin_url.clone();
    let schema = crate::postgres_support::schema_of(&served);
    crate::postgres_support::execute(
        &admin,
        &format!(
            "UPDATE {schema}.idempotency_keys SET stored_at = stored_at - interval '25 hours'"
        ),
    )
    .await
    .unwrap();
    let second = post_keyed(&app, "old", "again").await;
    assert!(!replayed(&second));
    assert_ne!(json_of(second).await["id"], first["id"]);
    let third = post_keyed(&app, "old", "again").await;
    assert!(replayed(&third));
    app.stop().await;
}

/// A store whose first keyed create commits but is then reported unconfirmed, as when the
/// connection breaks between the commit and its answer.
struct UnconfirmedOnce {
    inner: Arc<dyn ItemStore>,
    lost: AtomicBool,
}

#[async_trait]
impl ItemStore for UnconfirmedOnce {
    async fn list(&self, page: Page) -> Result<Vec<Item>, StoreError> {
        self.inner.list(page).await
    }
    async fn get(&self, id: i64) -> Result<Option<Item>, StoreError> {
        self.inner.get(id).await
    }
    async fn create(&self, text: ItemText) -> Result<Item, StoreError> {
        self.inner.create(text).await
    }
    async fn create_once(&self, text: ItemText, key: IdempotencyKey) -> Result<Once, StoreError> {
        let once = self.inner.create_once(text, key).await?;
        if !self.lost.swap(true, Ordering::SeqCst) {
            let cause = std::io::Error::other("connection reset after COMMIT");
            return Err(StoreError::outcome_unknown("the answer was lost", cause));
        }
        Ok(once)
    }
    async fn update(&self, id: i64, text: ItemText) -> Result<Option<Item>, StoreError> {
        self.inner.update(id, text).await
    }
    async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        self.inner.delete(id).await
    }
    async fn status(&self) -> DatabaseStatus {
        self.inner.status().await
    }
    async fn revision(&self) -> Result<Option<Revision>, StoreError> {
        self.inner.revision().await
    }
    fn changes(&self) -> &ChangeFeed {
        self.inner.changes()
    }
    async fn close(&self) {
        self.inner.close().await;
    }
}

async fn send(router: &axum::Router, method: &str, body: Value) -> (u16, Option<String>, Value) {
    let request = Request::builder()
        .method(method)
        .uri("/api/items")
        .header("host", "test")
        .header("content-type", "application/json")
        .header("idempotency-key", "lost-answer")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, retry_after, body)
}

#[tokio::test]
async fn an_unconfirmed_commit_says_so_and_a_keyed_retry_gets_the_stored_item_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = items_api::Config::with_defaults(dir.path().join("app.db"));
    let store = items_api::store::open(&config.store_settings().unwrap())
        .await
        .unwrap();
    let router = router_on(Arc::new(UnconfirmedOnce {
        inner: Arc::clone(&store),
        lost: AtomicBool::new(false),
    }));
    let (status, retry_after, body) = send(&router, "POST", json!({"text": "maybe"})).await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")));
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("did not confirm") && detail.contains("same Idempotency-Key"),
        "distinct from a plain 503: {detail}"
    );
    assert_ne!(detail, "Service Unavailable");

    let (status, _, item) = send(&router, "POST", json!({"text": "maybe"})).await;
    assert_eq!(status, 201);
    assert_eq!(item["text"], "maybe");
    let stored = store.list(Page::default()).await.unwrap();
    assert_eq!(stored.len(), 1, "stored exactly once");
    assert_eq!(json!(stored[0].id), item["id"]);
    store.close().await;
}
