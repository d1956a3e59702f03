//! Bad input of every kind gets a clear JSON error and never a 500, and stores nothing.

use serde_json::json;

use rstest::rstest;

use crate::helpers::{
    Backend, TestApp, assert_json_content_type, assert_validation_error, json_of,
};

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_missing_text_field_is_a_422(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let response = app.post_json(&json!({"txt": "typo"})).await;
    assert_validation_error(response, "missing", json!(["body", "text"])).await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_text_that_is_not_a_string_is_a_422(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    for text in [
        json!(5),
        json!(null),
        json!(true),
        json!(["a"]),
        json!({"a": 1}),
        json!(1.5),
    ] {
        let response = app.post_json(&json!({ "text": text })).await;
        assert_validation_error(response, "string_type", json!(["body", "text"])).await;
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn malformed_json_is_a_422(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    for body in [
        "{",
        "{\"text\": }",
        "{'text': 'single quotes'}",
        "text=hello",
        "{\"text\":\"a\"} trailing",
    ] {
        let response = app.post_raw(Some("application/json"), body).await;
        assert_eq!(response.status(), 422, "{body}");
        let detail = json_of(response).await;
        assert_eq!(detail["detail"][0]["type"], "json_invalid", "{body}");
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn invalid_utf8_is_a_422(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let response = app
        .post_raw(Some("application/json"), b"{\"text\":\"caf\xe9\"}".to_vec())
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(json_of(response).await["detail"][0]["type"], "json_invalid");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_empty_body_is_a_422(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let response = app.post_raw(Some("application/json"), "").await;
    assert_validation_error(response, "missing", json!(["body"])).await;
    let response = app.post_raw(None, "").await;
    assert_validation_error(response, "missing", json!(["body"])).await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_body_that_is_not_an_object_is_a_422(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    for body in ["[]", "[{\"text\":\"a\"}]", "\"text\"", "42", "null", "true"] {
        let response = app.post_raw(Some("application/json"), body).await;
        assert_validation_error(response, "model_attributes_type", json!(["body"])).await;
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_lone_surrogate_escape_is_refused_not_a_500(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    for body in [
        r#"{"text":"\ud800"}"#,
        r#"{"text":"a\udfffb"}"#,
        r#"{"text":"\ud800\u0041"}"#,
    ] {
        let response = app.post_raw(Some("application/json"), body).await;
        assert_eq!(response.status(), 422, "{body}");
    }
    let pair = app
        .post_raw(Some("application/json"), r#"{"text":"\ud83d\ude00"}"#)
        .await;
    assert_eq!(pair.status(), 201);
    assert_eq!(json_of(pair).await["text"], "😀");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn json_without_a_content_type_is_accepted_like_fastapi(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let response = app.post_raw(None, r#"{"text":"no header"}"#).await;
    assert_eq!(response.status(), 201);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn json_content_types_with_a_charset_are_accepted(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    for content_type in [
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "APPLICATION/JSON",
    ] {
        let response = app.post_raw(Some(content_type), r#"{"text":"ok"}"#).await;
        assert_eq!(response.status(), 201, "{content_type}");
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn other_content_types_are_a_422_not_a_500(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "\u{7f}",
    ] {
        let response = app
            .client
            .post(app.url("/api/items"))
            .header("content-type", content_type.as_bytes())
            .body(r#"{"text":"a"}"#)
            .send()
            .await;
        // reqwest refuses some header bytes itself; what it sends must be answered with a 422.
        if let Ok(response) = response {
            assert_validation_error(response, "content_type", json!(["body"])).await;
        }
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_body_over_the_limit_is_a_json_413(#[case] backend: Backend) {
    let Some(app) = TestApp::on_with(backend, |config| config.max_body_bytes = 1024).await else {
        return;
    };
    let big = json!({"text": "x".repeat(2000)}).to_string();
    let response = app.post_raw(Some("application/json"), big.clone()).await;
    assert_eq!(response.status(), 413);
    assert_json_content_type(&response);
    let detail = json_of(response).await["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains("1024"), "{detail}");

    // Without a Content-Length (chunked), the limit still holds.
    let stream = futures::stream::iter(
        big.into_bytes()
            .chunks(100)
            .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
            .collect::<Vec<_>>(),
    );
    let response = app
        .post_raw(Some("application/json"), reqwest::Body::wrap_stream(stream))
        .await;
    assert_eq!(response.status(), 413);
    assert!(app.items().await.is_empty());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_body_that_stops_arriving_is_a_json_408_and_nothing_is_stored(#[case] backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let Some(app) = TestApp::on_with(backend, |config| config.body_timeout_secs = 1).await else {
        return;
    };
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let body = r#"{"text":"never finished"}"#;
    let head = format!(
        "POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..8]).await.unwrap();
    let started = std::time::Instant::now();
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut response),
    )
    .await
    .expect("the server answers and closes the connection")
    .unwrap();
    let response = String::from_utf8(response).unwrap();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{response}"
    );
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    assert!(
        response.ends_with(r#"{"detail":"Request body not received within 1s"}"#),
        "{response}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert!(app.items().await.is_empty());

    // A body that arrives in time, in pieces, is still fine.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..8]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stream.write_all(&body.as_bytes()[8..]).await.unwrap();
    let mut first = vec![0; 12];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 201");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_default_limit_is_one_mebibyte(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let under = json!({"text": "y".repeat(1_000_000)}).to_string();
    assert_eq!(
        app.post_raw(Some("application/json"), under).await.status(),
        201
    );
    let over = json!({"text": "y".repeat(1_048_576)}).to_string();
    assert_eq!(
        app.post_raw(Some("application/json"), over).await.status(),
        413
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_unknown_route_is_a_json_404(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    for path in [
        "/",
        "/api",
        "/api/nope",
        "/api/items/1/extra",
        "/index.html",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_json_content_type(&response);
        assert_eq!(json_of(response).await, json!({"detail": "Not Found"}));
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_wrong_method_is_a_json_405_with_an_allow_header(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let cases = [
        (reqwest::Method::PUT, "/api/items", "GET,HEAD,POST"),
        (reqwest::Method::DELETE, "/api/items", "GET,HEAD,POST"),
        (reqwest::Method::POST, "/api/healthz", "GET,HEAD"),
        (
            reqwest::Method::PUT,
            "/api/items/1",
            "GET,HEAD,PATCH,DELETE",
        ),
    ];
    for (method, path, allow) in cases {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_json_content_type(&response);
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        assert_eq!(
            json_of(response).await,
            json!({"detail": "Method Not Allowed"})
        );
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn none_of_the_bad_requests_stored_anything(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let bodies = [
        "",
        "{",
        "[]",
        r#"{"text":1}"#,
        r#"{"text":"  "}"#,
        r#"{"text":"\ud800"}"#,
        r#"{"other":"x"}"#,
    ];
    for body in bodies {
        let status = app.post_raw(Some("application/json"), body).await.status();
        assert!(status.is_client_error(), "{body} -> {status}");
    }
    assert!(app.items().await.is_empty());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn every_error_response_carries_a_request_id(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let responses = [
        app.get("/api/nope").await,
        app.post_raw(Some("application/json"), "{").await,
        app.client.put(app.url("/api/items")).send().await.unwrap(),
    ];
    for response in responses {
        assert!(
            response.headers().contains_key("x-request-id"),
            "{}",
            response.status()
        );
    }
}

#[tokio::test]
async fn expect_100_continue_with_a_body_over_the_limit_gets_a_413_at_once_not_a_go_ahead() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(|config| config.max_body_bytes = 1024).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            b"POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0; 2048];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("an answer without sending the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert!(
        answer.contains(r#""detail":"Request body too large: the limit is 1024 bytes""#),
        "{answer}"
    );
}
