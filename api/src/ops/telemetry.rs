//! Logging: JSON or human-readable lines, and one access-log line per request. Every line is a
//! tracing event, formatted by tracing-subscriber and written through `log_writer`.
//!
//! The access line carries everything about the request (method, path, status, latency, request
//! id) and, for a 5xx, the cause that the handler attached to the response: one line tells the
//! whole story, and no per-request span has to be formatted on the hot path.

use std::io::IsTerminal;
use std::time::Instant;

use std::sync::LazyLock;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, Version};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry_sdk::trace::SdkTracer;
use tracing::Instrument;
use tracing::Level;
use tracing::Subscriber;
use tracing_subscriber::filter::{FilterExt, Targets, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::metrics;
use crate::ops::json_lines::JsonLines;
use crate::ops::log_writer::{self, FlushGuard};
use crate::ops::traces as ops_traces;
use crate::traces;
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of the access line: `RUST_LOG=info,items_api::access=warn` turns it off alone.
const ACCESS_TARGET: &str = "items_api::access";

/// The request id header, named once: looking a header up by a string parses the name first.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route label of a request no route matched (the page's files, a 404).
const UNMATCHED: &str = "unmatched";

/// Requests in progress; created on first use, after the recorder is installed.
static ACTIVE_REQUESTS: LazyLock<::metrics::Gauge> =
    LazyLock::new(|| ::metrics::gauge!(metrics::HTTP_ACTIVE_REQUESTS));

/// Why a request failed on the server side, attached to the response by whoever produced the
/// 5xx and written by the access log. Never sent to the client.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

/// Installs the global subscriber, writing to stdout in batches (see `log_writer`), and, with
/// `tracer`, exporting the spans of `traces::TARGET` through it. `RUST_LOG` filters the log lines
/// alone: the exported spans never show in them. Hold the returned guard until exit: dropping it
/// flushes every pending line.
pub fn init(format: LogFormat, filter: &str, tracer: Option<SdkTracer>) -> FlushGuard {
    let ansi = std::io::stdout().is_terminal();
    let (stdout, guard) = log_writer::batched(std::io::stdout());
    let _ = subscriber(format, filter, tracer, stdout, ansi).try_init();
    guard
}

/// The log lines of `filter` to `writer`, and with `tracer` the exported spans.
fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    tracer: Option<SdkTracer>,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logged = filter.and(filter_fn(|metadata| {
        !(metadata.is_span() && metadata.target() == traces::TARGET)
    }));
    // Filtered even when absent: a missing layer counts as one that wants every span, and the
    // registry would then create the spans that no line shows, for every request.
    let exported_targets = match &tracer {
        Some(_) => Targets::new().with_target(traces::TARGET, Level::INFO),
        None => Targets::new(),
    };
    let exported = tracer
        .map(|tracer| {
            traces::enable();
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_tracked_inactivity(false)
        })
        .with_filter(exported_targets);
    let registry = tracing_subscriber::registry().with(exported);
    match format {
        LogFormat::Json => Box::new(registry.with(json_layer(writer).with_filter(logged))),
        LogFormat::Pretty => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(writer)
                    .with_filter(logged),
            ),
        ),
    }
}

/// One JSON object per line, event fields at the top level beside timestamp, level and target.
fn json_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(JsonLines)
        .with_writer(writer)
}

/// Middleware: runs the request (inside a debug-level span, so `RUST_LOG=debug` ties inner
/// events to it) and writes the access line when the response is ready.
pub async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Cheap clones (reference-counted bytes): the request itself moves into the handler.
    let method = request.method().clone();
    let uri = request.uri().clone();
    let version = request.version();
    let request_id = request.headers().get(X_REQUEST_ID).cloned();
    let request_id = request_id
        .as_ref()
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    let path = uri.path();
    let measured = metrics::enabled();
    let traced = traces::enabled();
    // The route template, never the path: ids must not multiply the series.
    let route = (measured || traced)
        .then(|| request.extensions().get::<MatchedPath>().cloned())
        .flatten();
    if measured {
        ACTIVE_REQUESTS.increment(1.0);
    }
    let (span, trace_id) = if traced {
        let span = server_span(&request, route.as_ref(), request_id);
        let trace_id = span.context().span().span_context().trace_id();
        (span, Some(trace_id))
    } else {
        let trace_id = ops_traces::caller_trace_id(request.headers());
        let span = tracing::debug_span!("request", %method, path, request_id);
        (span, trace_id)
    };
    let response = next.run(request).instrument(span.clone()).await;
    if measured {
        ACTIVE_REQUESTS.decrement(1.0);
        let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
        metrics::REQUESTS.record(
            &method,
            route,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    if traced {
        let status = response.status();
        // Signed: the OpenTelemetry layer exports unsigned numbers as text.
        span.record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", status.as_str());
        }
    }
    drop(span);
    let trace_id = trace_id.map(|id| id.to_string());
    let trace_id = trace_id.as_deref();

    let status = response.status().as_u16();
    // Rounded to microseconds so logs show 0.261, not 0.26099999999999995.
    let latency_ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    let version = http_version(version);
    let cause = response
        .extensions()
        .get::<ErrorCause>()
        .map(|cause| cause.0.as_str());
    match (status, cause) {
        (500.., Some(cause)) if status != 503 => {
            tracing::error!(target: ACCESS_TARGET, method = method.as_str(), path, version, status, latency_ms, request_id, trace_id, error = cause, "request failed");
        }
        (500.., cause) => {
            tracing::warn!(target: ACCESS_TARGET, method = method.as_str(), path, version, status, latency_ms, request_id, trace_id, error = cause, "request failed");
        }
        _ => {
            tracing::info!(target: ACCESS_TARGET, method = method.as_str(), path, version, status, latency_ms, request_id, trace_id, "request");
        }
    }
    response
}

/// The span exported for a request (OpenTelemetry's HTTP server conventions), continuing the
/// caller's trace when it sent one.
fn server_span(request: &Request, route: Option<&MatchedPath>, request_id: &str) -> tracing::Span {
    let method = request.method().as_str();
    let name = match route {
        Some(route) => format!("{method} {}", route.as_str()),
        None => method.to_owned(),
    };
    let span = tracing::info_span!(
        target: traces::TARGET,
        "request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route.map(MatchedPath::as_str),
        url.path = request.uri().path(),
        network.protocol.version = protocol_version(request.version()),
        http.request.id = request_id,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    // A context without a valid span (no or a bad `traceparent`) leaves the span a root.
    let _ = span.set_parent(ops_traces::caller_context(request.headers()));
    span
}

/// The version alone (`1.1`), as the conventions write it.
fn protocol_version(version: Version) -> &'static str {
    http_version(version)
        .strip_prefix("HTTP/")
        .unwrap_or_default()
}

fn http_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_tracer_a_span_that_no_line_shows_is_never_created() {
        for format in [LogFormat::Json, LogFormat::Pretty] {
            let subscriber = subscriber(format, "info", None, std::io::sink, false);
            tracing::subscriber::with_default(subscriber, || {
                // The access log's span at info, and a trace span with nothing to export it:
                // recording them would cost every request for nothing.
                assert!(tracing::debug_span!("request").is_disabled());
                assert!(tracing::info_span!(target: traces::TARGET, "request").is_disabled());
                assert!(!tracing::info_span!("shown").is_disabled());
            });
        }
    }
}
