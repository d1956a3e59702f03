//! Many writers and readers at once: nothing lost, nothing duplicated, every read consistent.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};

use rstest::rstest;

use crate::helpers::{Backend, TestApp, json_of};

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_posts_all_succeed_with_unique_ids(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let app = Arc::new(app);
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let response = app.post_json(&json!({"text": format!("item {n}")})).await;
                assert_eq!(response.status(), 201);
                json_of(response).await["id"].as_i64().unwrap()
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        assert!(ids.insert(task.await.unwrap()), "duplicate id");
    }
    let listed: HashSet<i64> = app
        .items()
        .await
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, ids);
    assert_eq!(listed.len(), 200);
}

/// Checks that a list response is what some committed state could look like.
fn assert_consistent(items: &[Value]) {
    let ids: Vec<i64> = items
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] > pair[1]),
        "not strictly newest first: {ids:?}"
    );
    for item in items {
        assert!(
            item["text"]
                .as_str()
                .is_some_and(|text| text.starts_with("w"))
        );
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_during_writes_always_see_a_consistent_list_including_acknowledged_items(
    #[case] backend: Backend,
) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let app = Arc::new(app);
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                for n in 0..25 {
                    let item = app.add(&format!("w{writer}-{n}")).await;
                    // Read-your-writes: the acknowledged item is in the very next list.
                    let items = app.items().await;
                    assert!(
                        items.iter().any(|listed| listed["id"] == item["id"]),
                        "acknowledged item missing"
                    );
                    assert_consistent(&items);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let mut last_len = 0;
                for _ in 0..60 {
                    for path in ["/api/items", "/api/items?limit=5"] {
                        let response = app.get(path).await;
                        assert_eq!(response.status(), 200);
                        let items: Vec<Value> = response.json().await.unwrap();
                        assert_consistent(&items);
                        if path == "/api/items" {
                            assert!(items.len() >= last_len, "the list shrank without deletes");
                            last_len = items.len();
                        }
                    }
                }
            })
        })
        .collect();
    for task in writers.into_iter().chain(readers) {
        task.await.unwrap();
    }
    assert_eq!(app.items().await.len(), 200);
}
