//! Logging: JSON or human-readable lines, and one access-log line per request.
//!
//! The access line carries everything about the request (method, path, status, latency, request
//! id) and, for a 5xx, the cause that the handler attached to the response: one line tells the
//! whole story, and no per-request span has to be formatted on the hot path.

use std::io::IsTerminal;
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Why a request failed on the server side, attached to the response by whoever produced the
/// 5xx and written by the access log. Never sent to the client.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

/// Installs the global subscriber. A second call (tests start many servers) is a no-op.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal()))
            .try_init(),
    };
}

/// Middleware: runs the request (inside a debug-level span, so `RUST_LOG=debug` ties inner
/// events to it) and writes the access line when the response is ready.
pub async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let version = request.version();
    let request_id = request
        .headers()
        .get("x-request-id")
        .cloned()
        .unwrap_or(HeaderValue::from_static(""));
    let request_id = String::from_utf8_lossy(request_id.as_bytes()).into_owned();
    let span = tracing::debug_span!("request", %method, %path, %request_id);
    let response = next.run(request).instrument(span).await;

    let status = response.status().as_u16();
    // Rounded to microseconds so logs show 0.261, not 0.26099999999999995.
    let latency_ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    let cause = response
        .extensions()
        .get::<ErrorCause>()
        .map(|cause| cause.0.as_str());
    match (status, cause) {
        (500.., Some(cause)) if status != 503 => {
            tracing::error!(%method, %path, ?version, status, latency_ms, %request_id, error = cause, "request failed");
        }
        (500.., cause) => {
            tracing::warn!(%method, %path, ?version, status, latency_ms, %request_id, error = cause, "request failed");
        }
        _ => {
            tracing::info!(%method, %path, ?version, status, latency_ms, %request_id, "request");
        }
    }
    response
}
