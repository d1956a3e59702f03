//! The web page from `STATIC_DIR`, so one process can serve the whole app (`cargo run --release`).
//!
//! In the container setup Nginx serves these files instead. The headers here are the same in
//! substance: gzip, the same caching per kind of file, a strict Content-Security-Policy, `nosniff`
//! and no referrer.

use std::path::Path;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get_service;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'self'; form-action 'self'; \
                                       frame-ancestors 'none'; object-src 'none'";

/// A router for the app's fallback: files from `dir`, `index.html` for directories.
pub fn router(dir: &Path) -> Router {
    let header = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    let files = ServiceBuilder::new()
        .layer(CompressionLayer::new().gzip(true))
        .layer(header(
            header::CONTENT_SECURITY_POLICY,
            CONTENT_SECURITY_POLICY,
        ))
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header(header::REFERRER_POLICY, "no-referrer"))
        .service(ServeDir::new(dir).append_index_html_on_directories(true));
    // Only GET and HEAD read files; any other method on a path that is not an API route is
    // simply unknown (404), not "method not allowed" on a file.
    let files = get_service(files).fallback(|| async { StatusCode::NOT_FOUND });
    Router::new()
        .fallback_service(files)
        .layer(middleware::from_fn(cache_control))
}

/// The file names carry no content hash, so scripts and styles are kept a short while and then
/// revalidated (a cheap 304 by ETag/Last-Modified), images a day, and the page itself is always
/// revalidated so a new release shows at once.
fn cache_policy(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map(|(_, extension)| extension);
    match extension.map(str::to_ascii_lowercase).as_deref() {
        Some("css" | "js") => "public, max-age=600",
        Some("svg" | "ico" | "png" | "webp") => "public, max-age=86400",
        _ => "no-cache",
    }
}

async fn cache_control(request: Request, next: Next) -> Response {
    let policy = cache_policy(request.uri().path());
    let mut response = next.run(request).await;
    if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    }
    response
}
