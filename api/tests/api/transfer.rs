//! `items-api transfer` and `backup`/`restore` across backends, through the real binary.

use serde_json::{Value, json};

use crate::helpers::{BinaryServer, TestApp, run_binary, seed_database};
use crate::postgres_support::{fresh_database_url, unavailable};

async fn postgres_url() -> Option<String> {
    match fresh_database_url().await {
        Ok(url) => Some(url),
        Err(reason) => {
            unavailable(&reason);
            None
        }
    }
}

fn transfer(from: &str, to: &str) -> (i32, String, String) {
    run_binary(&["transfer", "--from", from, "--to", to], &[])
}

/// The seed's rows as the API lists them (id 2 was deleted; 3 is the highest id handed out).
fn seed_items() -> Value {
    json!([
        {"id": 3, "text": "ünïcödé ✓", "created_at": "2025-03-04T05:06:09.000001+00:00"},
        {"id": 1, "text": "from python", "created_at": "2025-03-04T05:06:07.891011+00:00"},
    ])
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn a_seed_written_file_moves_to_postgres_unchanged_and_ids_continue_past_it() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seed.db");
    seed_database(&file);
    let (code, stdout, stderr) = transfer(file.to_str().unwrap(), &url);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("transfer: 2 items copied"), "{stdout}");
    assert!(stdout.contains("verified"), "{stdout}");
    assert!(stderr.contains("2 of 2 items (100%)"), "progress: {stderr}");

    let app = TestApp::on_url(&url, |_| {}).await;
    assert_eq!(Value::from(app.items().await), seed_items());
    // The seed handed out ids 1 to 3; the next one is 4 on Postgres too.
    assert_eq!(app.add("after the move").await["id"], 4);
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn postgres_moves_back_to_a_sqlite_file_with_odd_texts_and_the_id_sequence() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let app = TestApp::on_url(&url, |_| {}).await;
    let texts = [
        "plain",
        "nul\u{0}inside",
        "noncharacter \u{ffff} kept",
        "emoji 😀",
        "שלום",
    ];
    let mut items = Vec::new();
    for text in texts {
        items.push(app.add(text).await);
    }
    let newest = app.add("deleted newest").await;
    let deleted = app
        .client
        .delete(app.url(&format!("/api/items/{}", newest["id"])))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let listed = app.items().await;
    app.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("back/app.db");
    let (code, stdout, stderr) = transfer(&url, &format!("sqlite://{}", file.display()));
    assert_eq!(code, 0, "{stdout}{stderr}");

    let sqlite = TestApp::spawn_on(&file, |_| {}).await;
    assert_eq!(sqlite.items().await, listed);
    let next = sqlite.add("next").await;
    assert_eq!(
        next["id"].as_i64().unwrap(),
        newest["id"].as_i64().unwrap() + 1,
        "the deleted newest id is not handed out again"
    );
    sqlite.stop().await;
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn a_target_that_holds_items_is_refused_and_left_as_it_was() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seed.db");
    seed_database(&file);
    let app = TestApp::on_url(&url, |_| {}).await;
    app.add("already here").await;
    let before = app.items().await;

    let (code, _, stderr) = transfer(file.to_str().unwrap(), &url);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("already holds 1 items"), "{stderr}");
    assert_eq!(app.items().await, before);

    let (code, _, stderr) = transfer(&url, file.to_str().unwrap());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("already holds 2 items"), "{stderr}");
    let seed = TestApp::spawn_on(&file, |_| {}).await;
    assert_eq!(Value::from(seed.items().await), seed_items());
    seed.stop().await;
}

#[test]
fn a_missing_source_is_refused_and_creates_no_target() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("new.db");
    let (code, _, stderr) = transfer(
        dir.path().join("none.db").to_str().unwrap(),
        target.to_str().unwrap(),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("there is no SQLite database"), "{stderr}");
    assert!(!target.exists());
}

#[test]
fn sqlite_to_sqlite_copies_a_snapshot_while_the_service_keeps_writing() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let server = BinaryServer::start(&live, &[]);
    let client = reqwest::blocking::Client::new();
    let post = |n: usize| {
        let response = client
            .post(server.url("/api/items"))
            .json(&json!({"text": format!("item {n}")}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 201);
    };
    (0..2500).for_each(post);
    let copy = dir.path().join("copy.db");
    let (code, stdout, stderr) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| (2500..3000).for_each(post));
        let result = transfer(live.to_str().unwrap(), copy.to_str().unwrap());
        writer.join().unwrap();
        result
    });
    assert_eq!(code, 0, "{stdout}{stderr}");
    // More than one batch: progress is reported along the way.
    assert!(
        stderr
            .lines()
            .filter(|line| line.starts_with("transfer:"))
            .count()
            >= 2,
        "{stderr}"
    );
    let listed: Vec<Value> = client
        .get(server.url("/api/items"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed.len(), 3000);
    drop(server);
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let copied: Vec<(i64, String, String)> = conn
        .prepare("SELECT id, text, created_at FROM items ORDER BY id DESC")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        (2500..=3000).contains(&copied.len()),
        "{} copied",
        copied.len()
    );
    assert!(
        stdout.contains(&format!("{} items copied", copied.len())),
        "{stdout}"
    );
    // A snapshot: exactly the oldest items, each unchanged.
    let oldest = &listed[listed.len() - copied.len()..];
    for ((id, text, created_at), item) in copied.iter().zip(oldest) {
        assert_eq!(
            json!({"id": id, "text": text, "created_at": created_at}),
            *item
        );
    }
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn backup_from_postgres_writes_a_sqlite_file_and_restore_points_to_transfer() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let app = TestApp::on_url(&url, |_| {}).await;
    app.add("backed up").await;
    let listed = app.items().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");

    let (code, stdout, stderr) = run_binary(
        &["backup", file.to_str().unwrap()],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("backup: 1 items"), "{stdout}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("backup.db")],
        "nothing left beside the backup"
    );
    let copy = TestApp::spawn_on(&file, |_| {}).await;
    assert_eq!(copy.items().await, listed);
    copy.stop().await;

    let (code, _, stderr) = run_binary(
        &["restore", file.to_str().unwrap()],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("items-api transfer --from"), "{stderr}");
}
