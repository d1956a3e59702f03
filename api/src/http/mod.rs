//! The HTTP side: `app()` (every route and middleware layer, in one place), the handlers, request
//! parsing, errors, the OpenAPI document and the accept loop.

pub mod error;
pub mod extract;
pub mod host;
pub mod keys_in_flight;
pub mod list_cache;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod state;
pub mod static_files;
pub mod streams;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::DefaultBodyLimit;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware;
use axum::response::Response;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::ops::telemetry::{self, ErrorCause, X_REQUEST_ID};
pub use error::OUTCOME_UNKNOWN;
use error::{canonical_reason, detail_response};
use openapi::{ApiDoc, docs_router};
pub use state::{AppState, BodyLimits, EventStreams, ServiceInfo};

/// Settings that shape the router and nothing else.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// A request that takes longer gets a 503.
    pub request_timeout: Duration,
    /// Serve the web page from here, for paths that are not API routes.
    pub static_dir: Option<PathBuf>,
}

/// The whole HTTP service. Layers, outermost first: request id (check, set) → access log →
/// request id (echo) → `nosniff` → `Connection: close` while stopping → `Host` check → JSON
/// errors → timeout → panic → 500 → routes.
pub fn app(state: AppState, options: RouterOptions) -> Router {
    let (api, mut spec) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::router())
        .split_for_parts();
    openapi::document_text_limit(&mut spec, state.body_limits.max_text_chars);
    let mut router = api.merge(docs_router(spec, &state.info.version));
    if let Some(dir) = &options.static_dir {
        router = router.fallback_service(static_files::router(dir));
    }
    let info = Arc::clone(&state.info);
    router
        .layer(DefaultBodyLimit::max(state.body_limits.max_bytes))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .map_request(drop_unusable_request_id)
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(middleware::from_fn(telemetry::access_log))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(SetResponseHeaderLayer::if_not_present(
                    X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .map_response(move |response| close_when_stopping(&info, response))
                .layer(host::RequireHostLayer)
                .map_response(json_errors)
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    options.request_timeout,
                ))
                .layer(CatchPanicLayer::custom(panic_response)),
        )
}

/// While the process drains (SHUTDOWN_DRAIN_SECS), each response tells the client to close the
/// connection after it. A proxy that keeps connections open, such as the web tier behind a
/// Kubernetes Service (which stops sending new connections here but not the kept-alive ones),
/// then reconnects to a replica that is not stopping, instead of reusing ours until we close
/// them under its next request.
fn close_when_stopping(info: &state::ServiceInfo, mut response: Response) -> Response {
    if info.stopping.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Gives every error response a JSON body, whoever produced it: the router (404, and 405 with
/// its `Allow` header), the timeout, the panic handler or the static files. Handler errors are
/// JSON already and pass through untouched.
fn json_errors<B>(response: axum::http::Response<B>) -> Response
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let (mut parts, body) = response.into_parts();
    let status = parts.status;
    let is_error = status.is_client_error() || status.is_server_error();
    let is_json = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !is_error || is_json {
        return Response::from_parts(parts, Body::new(body));
    }
    let replacement = detail_response(status, canonical_reason(status));
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, replacement.into_body())
}

/// A caller's `X-Request-Id` is kept only if it is a plain token (letters, digits, `._:-`, at
/// most 128 bytes), the same rule as the Nginx tier; otherwise a new id is generated. Ids end up
/// in logs and response headers, so they must not carry anything else.
fn drop_unusable_request_id(mut request: axum::extract::Request) -> axum::extract::Request {
    let usable = request.headers().get(X_REQUEST_ID).is_none_or(|id| {
        let id = id.as_bytes();
        !id.is_empty()
            && id.len() <= 128
            && id
                .iter()
                .all(|byte| byte.is_ascii_alphanumeric() || b"._:-".contains(byte))
    });
    if !usable {
        request.headers_mut().remove(X_REQUEST_ID);
    }
    request
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    let mut response = detail_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    response
        .extensions_mut()
        .insert(ErrorCause(format!("handler panicked: {message}")));
    response
}
