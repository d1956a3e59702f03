//! The web page from `STATIC_DIR`, so one process can serve the whole app (`cargo run --release`).
//!
//! In the container setup Nginx serves these files instead, with its own headers. The ones here
//! are the baseline for a page served without it: revalidation, a strict Content-Security-Policy,
//! `nosniff` and no referrer.

use std::path::Path;

use axum::Router;
use axum::http::StatusCode;
use axum::http::{HeaderName, HeaderValue, header};
use axum::routing::get_service;
use tower::ServiceBuilder;
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
        // Revalidate every time (ETag/Last-Modified make that cheap): a new release shows at once.
        .layer(header(header::CACHE_CONTROL, "no-cache"))
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
    Router::new().fallback_service(files)
}
