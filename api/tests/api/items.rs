//! The items contract: list, create, get, delete, pagination.

use serde_json::{Value, json};

use rstest::rstest;

use crate::helpers::{
    Backend, TestApp, assert_json_content_type, assert_python_isoformat, assert_validation_error,
    json_of,
};

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn list_starts_as_an_empty_json_array(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let response = app.get("/api/items").await;
    assert_eq!(response.status(), 200);
    assert_json_content_type(&response);
    assert_eq!(response.text().await.unwrap(), "[]");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn create_answers_201_with_the_stored_item_and_its_location(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let response = app.post_json(&json!({"text": "buy milk"})).await;
    assert_eq!(response.status(), 201);
    assert_json_content_type(&response);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let item = json_of(response).await;
    assert_eq!(item["text"], "buy milk");
    assert!(item["id"].as_i64().unwrap() >= 1);
    assert_python_isoformat(&item["created_at"]);
    assert_eq!(location, format!("/api/items/{}", item["id"]));
    let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "exactly id, text, created_at: {item}");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn create_trims_surrounding_whitespace_like_python_and_keeps_inner_whitespace(
    #[case] backend: Backend,
) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let item = app
        .add(" \t\u{a0}\u{3000}buy   oat\tmilk\u{2028}\u{1f}\n")
        .await;
    assert_eq!(item["text"], "buy   oat\tmilk");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn create_rejects_blank_text_with_400_and_stores_nothing(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    for blank in ["", "   ", "\n\t\r", "\u{a0}\u{2003}\u{3000}"] {
        let response = app.post_json(&json!({"text": blank})).await;
        assert_eq!(response.status(), 400, "{blank:?}");
        assert_json_content_type(&response);
        assert_eq!(
            json_of(response).await,
            json!({"detail": "text must not be empty"})
        );
    }
    assert!(app.items().await.is_empty());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn client_sent_id_created_at_and_unknown_fields_are_ignored(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let response = app
        .post_json(&json!({"text": "x", "id": 999, "created_at": "1999-01-01", "extra": [1, 2]}))
        .await;
    let item = json_of(response).await;
    assert_eq!(item["id"], 1);
    assert_ne!(item["created_at"], "1999-01-01");
    assert!(item.get("extra").is_none());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn unusual_text_is_stored_and_returned_byte_for_byte(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let samples = [
        "emoji 😀 and a flag 🇺🇦",
        "right-to-left שלום",
        "nul\u{0}inside",
        "quotes \" and \\ backslash",
        "<img src=x onerror=alert(1)>",
        "\u{200b}zero-width stays\u{200b}",
    ];
    for text in samples {
        let item = app.add(text).await;
        assert_eq!(item["text"], text);
        let fetched = json_of(app.get(&format!("/api/items/{}", item["id"])).await).await;
        assert_eq!(fetched["text"], text);
    }
    let long = "x".repeat(500_000);
    assert_eq!(
        app.add(&long).await["text"].as_str().unwrap().len(),
        500_000
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn list_is_newest_first(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    for text in ["first", "second", "third"] {
        app.add(text).await;
    }
    let texts: Vec<Value> = app
        .items()
        .await
        .iter()
        .map(|item| item["text"].clone())
        .collect();
    assert_eq!(texts, vec![json!("third"), json!("second"), json!("first")]);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn get_returns_one_item_or_a_json_404(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let item = app.add("one").await;
    let response = app.get(&format!("/api/items/{}", item["id"])).await;
    assert_eq!(response.status(), 200);
    assert_eq!(json_of(response).await, item);

    let missing = app.get("/api/items/424242").await;
    assert_eq!(missing.status(), 404);
    assert_json_content_type(&missing);
    assert_eq!(json_of(missing).await, json!({"detail": "Item not found"}));
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_non_integer_item_id_is_a_422(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let response = app.get("/api/items/abc").await;
    assert_validation_error(response, "int_parsing", json!(["path", "id"])).await;
    let response = app
        .client
        .delete(app.url("/api/items/1.5"))
        .send()
        .await
        .unwrap();
    assert_validation_error(response, "int_parsing", json!(["path", "id"])).await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn delete_removes_the_item_once(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let keep = app.add("keep").await;
    let gone = app.add("gone").await;
    let url = app.url(&format!("/api/items/{}", gone["id"]));

    let response = app.client.delete(&url).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.text().await.unwrap().is_empty());
    assert_eq!(app.items().await, vec![keep]);

    let again = app.client.delete(&url).send().await.unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(json_of(again).await, json!({"detail": "Item not found"}));
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn ids_are_never_reused_after_a_delete(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let first = app.add("a").await;
    app.client
        .delete(app.url(&format!("/api/items/{}", first["id"])))
        .send()
        .await
        .unwrap();
    let second = app.add("b").await;
    assert!(second["id"].as_i64() > first["id"].as_i64());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn keyset_pages_cover_the_list_without_gaps_or_repeats(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    for n in 0..25 {
        app.add(&format!("item {n}")).await;
    }
    let mut seen = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let path = match before {
            Some(id) => format!("/api/items?limit=10&before={id}"),
            None => "/api/items?limit=10".to_owned(),
        };
        let page: Vec<Value> = json_of(app.get(&path).await)
            .await
            .as_array()
            .unwrap()
            .clone();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        before = page.last().unwrap()["id"].as_i64();
        seen.extend(page.into_iter().map(|item| item["id"].as_i64().unwrap()));
    }
    let expected: Vec<i64> = (1..=25).rev().collect();
    assert_eq!(seen, expected);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_newest_page_reflects_each_write_at_once(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    for n in 0..5 {
        let item = app.add(&format!("n{n}")).await;
        let page = json_of(app.get("/api/items?limit=2").await).await;
        assert_eq!(
            page[0], item,
            "a cached page must never hide an acknowledged write"
        );
        let whole = app.items().await;
        assert_eq!(whole[0], item);
        assert_eq!(whole.len(), n + 1);
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn unknown_query_parameters_are_ignored(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    app.add("a").await;
    let response = app
        .get("/api/items?_=1700000000000&cachebust&sort=whatever")
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(json_of(response).await.as_array().unwrap().len(), 1);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn invalid_pagination_values_are_422(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let cases = [
        ("limit=abc", "int_parsing", "limit"),
        ("limit=0", "greater_than_equal", "limit"),
        ("limit=1001", "less_than_equal", "limit"),
        ("limit=-1", "greater_than_equal", "limit"),
        ("before=x", "int_parsing", "before"),
        ("before=0", "greater_than_equal", "before"),
        ("limit=99999999999999999999999", "int_parsing", "limit"),
    ];
    for (query, kind, name) in cases {
        let response = app.get(&format!("/api/items?{query}")).await;
        assert_validation_error(response, kind, json!(["query", name])).await;
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn head_requests_get_headers_without_a_body(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let response = app.client.head(app.url("/api/items")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_json_content_type(&response);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_list_worth_compressing_comes_gzipped_to_a_client_that_accepts_it(
    #[case] backend: Backend,
) {
    use std::io::Read;
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    for n in 0..40 {
        app.add(&format!(
            "item number {n} with enough text to be worth compressing"
        ))
        .await;
    }
    let plain = app.get("/api/items").await;
    assert_eq!(plain.headers()["vary"], "accept-encoding");
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();

    let zipped = app
        .client
        .get(app.url("/api/items"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.status(), 200);
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    assert_json_content_type(&zipped);
    let zipped = zipped.bytes().await.unwrap();
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
    assert!(
        zipped.len() < plain.len() / 3,
        "{} of {}",
        zipped.len(),
        plain.len()
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_list_read_from_an_id_is_streamed_in_pages_and_matches_the_whole_list(
    #[case] backend: Backend,
) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    // More than one page of the streamed list (1000 items each).
    let bodies: Vec<Value> = (0..1500)
        .map(|n| json!({ "text": format!("item {n}") }))
        .collect();
    let posts = bodies.iter().map(|body| app.post_json(body));
    for response in futures::future::join_all(posts).await {
        assert_eq!(response.status(), 201);
    }
    let whole = app.get("/api/items").await.bytes().await.unwrap();
    let streamed = app.get("/api/items?before=9223372036854775807").await;
    assert_eq!(streamed.status(), 200);
    assert_json_content_type(&streamed);
    assert!(
        streamed.headers().get("content-length").is_none(),
        "sent as it is read"
    );
    assert_eq!(streamed.bytes().await.unwrap(), whole);
}

fn etag_of(response: &reqwest::Response) -> String {
    response.headers()["etag"].to_str().unwrap().to_owned()
}

async fn get_if_none_match(app: &TestApp, path: &str, tags: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header("if-none-match", tags)
        .send()
        .await
        .unwrap()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_unchanged_list_answers_304_to_its_etag_and_every_change_gives_a_new_one(
    #[case] backend: Backend,
) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    app.add("first").await;
    let first = app.get("/api/items?limit=10").await;
    let tag = etag_of(&first);
    assert!(tag.starts_with("W/\""), "a weak tag: {tag}");

    let unchanged = get_if_none_match(&app, "/api/items?limit=10", &tag).await;
    assert_eq!(unchanged.status(), 304);
    assert_eq!(etag_of(&unchanged), tag);
    assert_eq!(unchanged.headers()["vary"], "accept-encoding");
    assert!(unchanged.bytes().await.unwrap().is_empty());

    let added = app.add("second").await;
    let after_add = get_if_none_match(&app, "/api/items?limit=10", &tag).await;
    assert_eq!(after_add.status(), 200);
    let tag_after_add = etag_of(&after_add);
    assert_ne!(tag_after_add, tag);
    assert_eq!(json_of(after_add).await[0]["text"], "second");

    let deleted = app
        .client
        .delete(app.url(&format!("/api/items/{}", added["id"])))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let after_delete = get_if_none_match(&app, "/api/items?limit=10", &tag_after_add).await;
    assert_eq!(after_delete.status(), 200);
    assert_ne!(etag_of(&after_delete), tag_after_add);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_etag_names_the_list_whichever_way_it_was_read_or_encoded(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    for n in 0..40 {
        app.add(&format!("item {n}, long enough to be worth compressing"))
            .await;
    }
    let cached = etag_of(&app.get("/api/items?limit=100").await);
    let whole = etag_of(&app.get("/api/items").await);
    let uncached = etag_of(
        &app.get("/api/items?limit=100&before=9223372036854775807")
            .await,
    );
    let zipped = app
        .client
        .get(app.url("/api/items?limit=100"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    assert_eq!([&whole, &etag_of(&zipped)], [&cached, &cached]);
    // A later page carries no total, so it is another representation with a tag of its own,
    // the same each time it is read.
    assert_ne!(uncached, cached);
    let again = etag_of(
        &app.get("/api/items?limit=100&before=9223372036854775807")
            .await,
    );
    assert_eq!(again, uncached);
    // Strong or weak, among others, or `*`: all name the current list.
    let opaque = cached.trim_start_matches("W/");
    for tags in [
        opaque.to_owned(),
        format!("\"other\", {cached}"),
        "*".to_owned(),
    ] {
        let response = get_if_none_match(&app, "/api/items?limit=100", &tags).await;
        assert_eq!(response.status(), 304, "If-None-Match: {tags}");
    }
    let stale = get_if_none_match(&app, "/api/items?limit=100", "W/\"0000000000000000\"").await;
    assert_eq!(stale.status(), 200);
}

async fn patch_json(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .patch(app.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_edit_replaces_the_text_trimmed_and_keeps_the_id_and_creation_time(
    #[case] backend: Backend,
) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let item = app.add("buy milk").await;
    app.add("newer").await;
    let path = format!("/api/items/{}", item["id"]);
    let tag_before = etag_of(&app.get("/api/items?limit=10").await);

    let response = patch_json(&app, &path, &json!({"text": "  buy oat milk\n"})).await;
    assert_eq!(response.status(), 200);
    assert_json_content_type(&response);
    let edited = json_of(response).await;
    assert_eq!(
        edited,
        json!({"id": item["id"], "text": "buy oat milk", "created_at": item["created_at"]})
    );
    assert_eq!(json_of(app.get(&path).await).await, edited);
    // The list shows the edit at once, in the item's place, under a new tag.
    let listed = app.get("/api/items?limit=10").await;
    assert_ne!(etag_of(&listed), tag_before);
    let listed = json_of(listed).await;
    assert_eq!(listed[1], edited);
    assert_eq!(app.items().await[1], edited);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_edit_is_refused_as_a_create_would_be_and_changes_nothing(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let item = app.add("keep me").await;
    let path = format!("/api/items/{}", item["id"]);

    let blank = patch_json(&app, &path, &json!({"text": " \t "})).await;
    assert_eq!(blank.status(), 400);
    assert_eq!(
        json_of(blank).await,
        json!({"detail": "text must not be empty"})
    );
    let missing = patch_json(&app, &path, &json!({"txt": "x"})).await;
    assert_validation_error(missing, "missing", json!(["body", "text"])).await;
    let unknown = patch_json(&app, "/api/items/999999", &json!({"text": "x"})).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(json_of(unknown).await, json!({"detail": "Item not found"}));
    let bad_id = patch_json(&app, "/api/items/abc", &json!({"text": "x"})).await;
    assert_validation_error(bad_id, "int_parsing", json!(["path", "id"])).await;

    assert_eq!(json_of(app.get(&path).await).await, item);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_text_over_max_text_chars_is_a_422_string_too_long_on_create_and_edit(
    #[case] backend: Backend,
) {
    let Some(app) = TestApp::on_with(backend, |config| config.max_text_chars = 5).await else {
        return;
    };
    // Five characters (ten bytes) fit; surrounding whitespace does not count.
    let item = app.add("  ééééé  ").await;
    assert_eq!(item["text"], "ééééé");
    let path = format!("/api/items/{}", item["id"]);

    let expected = |input: &str| {
        json!({"detail": [{
            "type": "string_too_long",
            "loc": ["body", "text"],
            "msg": "String should have at most 5 characters",
            "input": input,
            "ctx": {"max_length": 5},
        }]})
    };
    let create = app.post_json(&json!({"text": "123456"})).await;
    assert_eq!(create.status(), 422);
    assert_eq!(json_of(create).await, expected("123456"));
    let edit = patch_json(&app, &path, &json!({"text": "abcdef"})).await;
    assert_eq!(edit.status(), 422);
    assert_eq!(json_of(edit).await, expected("abcdef"));

    assert_eq!(app.items().await, vec![item]);
    let spec = json_of(app.get("/api/openapi.json").await).await;
    assert_eq!(
        spec["components"]["schemas"]["CreateItem"]["properties"]["text"]["maxLength"],
        5
    );
}
