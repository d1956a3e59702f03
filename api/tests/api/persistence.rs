//! Data survives restarts, and database files written by the seed service open unchanged.

use rusqlite::Connection;
use serde_json::json;

use crate::helpers::{TestApp, seed_database};

#[tokio::test]
async fn items_survive_a_restart_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("data/app.db");
    let app = TestApp::spawn_on(&db_path, |_| {}).await;
    let first = app.add("persist me").await;
    let second = app.add("and me").await;
    app.stop().await;

    let app = TestApp::spawn_on(&db_path, |_| {}).await;
    assert_eq!(app.items().await, vec![second, first]);
    let third = app.add("after restart").await;
    assert_eq!(third["id"], 3);
    app.stop().await;
}

#[tokio::test]
async fn a_database_written_by_the_seed_service_opens_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    seed_database(&db_path);

    let app = TestApp::spawn_on(&db_path, |_| {}).await;
    assert_eq!(
        app.items().await,
        vec![
            json!({"id": 3, "text": "ünïcödé ✓", "created_at": "2025-03-04T05:06:09.000001+00:00"}),
            json!({"id": 1, "text": "from python", "created_at": "2025-03-04T05:06:07.891011+00:00"}),
        ]
    );
    // AUTOINCREMENT: the deleted id 2 and the last id 3 are never handed out again.
    assert_eq!(app.add("new").await["id"], 4);
    app.stop().await;

    let conn = Connection::open(&db_path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        version, 2,
        "the seed schema counts as migration 1; 2 adds the idempotency keys beside it"
    );
    let schema: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'items'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(
        schema.contains("id INTEGER PRIMARY KEY AUTOINCREMENT"),
        "{schema}"
    );
}

#[tokio::test]
async fn a_fresh_database_has_the_seed_schema_and_a_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("nested/dirs/app.db");
    let app = TestApp::spawn_on(&db_path, |_| {}).await;
    app.add("x").await;
    app.stop().await;

    let conn = Connection::open(&db_path).unwrap();
    let columns: Vec<(String, String, bool)> = conn
        .prepare("SELECT name, type, \"notnull\" FROM pragma_table_info('items') ORDER BY cid")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        columns,
        vec![
            ("id".into(), "INTEGER".into(), false),
            ("text".into(), "TEXT".into(), true),
            ("created_at".into(), "TEXT".into(), true),
        ]
    );
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 2);
}

#[tokio::test]
async fn a_seed_service_can_read_what_we_wrote() {
    // The other direction of drop-in: rolling back to the seed keeps the data readable.
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let app = TestApp::spawn_on(&db_path, |_| {}).await;
    let item = app.add("readable by python").await;
    app.stop().await;

    let conn = Connection::open(&db_path).unwrap();
    let (id, text, created_at): (i64, String, String) = conn
        .query_row(
            "SELECT id, text, created_at FROM items ORDER BY id DESC",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        json!({"id": id, "text": text, "created_at": created_at}),
        item
    );
}
