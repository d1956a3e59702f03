//! A list too big to keep in memory: streamed whole, page by page, on both backends.

use serde_json::Value;

use crate::helpers::TestApp;
use crate::postgres_support::{execute, fresh_database_url, unavailable};

/// Enough items that the whole list's JSON passes the 8 MiB the service keeps in memory.
const ITEMS: i64 = 80_000;
const TEXT: &str =
    "an item long enough that eighty thousand of them make a list of more than eight mebibytes";

async fn assert_the_whole_list_streams(app: &TestApp) {
    for _ in 0..2 {
        // The second time the service already knows the list is too big to keep.
        let response = app.get("/api/items").await;
        assert_eq!(response.status(), 200);
        assert!(
            response.headers().get("content-length").is_none(),
            "not built in memory"
        );
        let items: Vec<Value> = response.json().await.unwrap();
        assert_eq!(items.len() as i64, ITEMS);
        assert!(
            items
                .windows(2)
                .all(|pair| pair[0]["id"].as_i64() > pair[1]["id"].as_i64()),
            "newest first"
        );
        assert_eq!(items[0]["id"], ITEMS);
        assert_eq!(items[items.len() - 1]["id"], 1);
    }
}

#[tokio::test]
async fn a_whole_sqlite_list_too_big_to_keep_is_streamed_complete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    TestApp::spawn_on(&path, |_| {}).await.stop().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO items (text, created_at) SELECT ?2, '2026-01-01T00:00:00.000000+00:00' FROM n",
        rusqlite::params![ITEMS, TEXT],
    )
    .unwrap();
    drop(conn);
    let app = TestApp::spawn_on(&path, |_| {}).await;
    assert_the_whole_list_streams(&app).await;
    app.stop().await;
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn a_whole_postgres_list_too_big_to_keep_is_streamed_complete() {
    let url = match fresh_database_url().await {
        Ok(url) => url,
        Err(reason) => return unavailable(&reason),
    };
    let app = TestApp::on_url(&url, |_| {}).await;
    execute(
        &url,
        &format!(
            "INSERT INTO items (text, created_at) SELECT '{TEXT}', \
             '2026-01-01T00:00:00.000000+00:00' FROM generate_series(1, {ITEMS})"
        ),
    )
    .await
    .unwrap();
    assert_the_whole_list_streams(&app).await;
}
