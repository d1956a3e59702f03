//! The page from STATIC_DIR (what `cargo run --release` serves) and the API documentation.

use std::path::PathBuf;

use serde_json::Value;

use crate::helpers::{TestApp, json_of};

fn web_static() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web/static")
}

#[tokio::test]
async fn with_static_dir_the_page_is_served_at_the_root_beside_the_api() {
    let app = TestApp::spawn_with(|config| config.static_dir = Some(web_static())).await;
    let page = app.get("/").await;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    assert!(html.contains("<html"), "{html}");

    // The API keeps answering JSON, and an unknown path is still a JSON 404.
    assert_eq!(app.get("/api/healthz").await.status(), 200);
    let missing = app.get("/no-such-file.js").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(json_of(missing).await["detail"], "Not Found");
    for path in ["/api/nope", "/index.html", "/"] {
        let response = app.client.post(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "POST {path}");
        assert_eq!(json_of(response).await["detail"], "Not Found");
    }
}

#[tokio::test]
async fn the_page_is_served_gzipped_and_cached_as_the_nginx_tier_serves_it() {
    let app = TestApp::spawn_with(|config| config.static_dir = Some(web_static())).await;
    for (path, cache_control) in [
        ("/", "no-cache"),
        ("/app.js", "public, max-age=600"),
        ("/app.css", "public, max-age=600"),
        ("/favicon.svg", "public, max-age=86400"),
    ] {
        let response = app
            .client
            .get(app.url(path))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["cache-control"], cache_control, "{path}");
        assert_eq!(response.headers()["content-encoding"], "gzip", "{path}");
        let validator = response.headers()["last-modified"].clone();
        // A revalidation is a 304 that keeps the policy.
        let again = app
            .client
            .get(app.url(path))
            .header("if-modified-since", validator)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["cache-control"], cache_control, "{path}");
    }
    let plain = app.get("/app.js").await;
    assert!(plain.headers().get("content-encoding").is_none());
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_describes_every_route() {
    let app = TestApp::spawn_with(|config| config.build_version = "2.3.4".into()).await;
    let response = app.get("/api/openapi.json").await;
    assert_eq!(response.status(), 200);
    let spec: Value = json_of(response).await;
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        spec["openapi"]
    );
    assert_eq!(spec["info"]["version"], "2.3.4");
    for (path, methods) in [
        ("/api/items", &["get", "post"][..]),
        ("/api/items/{id}", &["get", "patch", "delete"]),
        ("/api/healthz", &["get"]),
        ("/api/health", &["get"]),
    ] {
        for method in methods {
            assert!(
                spec["paths"][path][method].is_object(),
                "{method} {path} is not documented"
            );
        }
    }
    let create = &spec["paths"]["/api/items"]["post"]["responses"];
    for status in ["201", "400", "413", "422"] {
        assert!(
            create[status].is_object(),
            "POST /api/items does not document {status}"
        );
    }
}

#[tokio::test]
async fn the_docs_page_works_offline() {
    let app = TestApp::spawn().await;
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/api/docs"))
        .send()
        .await
        .unwrap();
    assert!(redirect.status().is_redirection());

    let page = app.get("/api/docs/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the docs page loads something remote"
    );
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
    ] {
        let response = app.get(&format!("/api/docs/{asset}")).await;
        assert_eq!(response.status(), 200, "{asset}");
    }
    let initializer = app
        .get("/api/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(initializer.contains("/api/openapi.json"), "{initializer}");
}
