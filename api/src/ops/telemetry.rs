//! Logging: JSON or human-readable lines, and one access-log line per request.
//!
//! The access line carries everything about the request (method, path, status, latency, request
//! id) and, for a 5xx, the cause that the handler attached to the response: one line tells the
//! whole story, and no per-request span has to be formatted on the hot path.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::Request;
use axum::http::Version;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::ops::log_writer::{self, BatchedWriter, FlushGuard};

/// Where `access_log` writes its JSON line directly, set by `init` for JSON logs. The same line
/// as a tracing event through the JSON formatter cost about 9 of the 31 microseconds of CPU that a
/// `/api/healthz` request took; formatted here it costs about 1. Unset (pretty logs, tests), the
/// line goes through tracing. The level filter (`RUST_LOG`) applies either way.
static JSON_ACCESS_LINES: OnceLock<BatchedWriter> = OnceLock::new();

/// The target of the access line, as a tracing event here would have it.
const ACCESS_TARGET: &str = module_path!();

/// Why a request failed on the server side, attached to the response by whoever produced the
/// 5xx and written by the access log. Never sent to the client.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

/// Installs the global subscriber, writing to stdout in batches (see `log_writer`). Hold the
/// returned guard until exit: dropping it flushes every pending line.
pub fn init(format: LogFormat, filter: &str) -> FlushGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stdout().is_terminal();
    let (stdout, guard) = log_writer::batched(std::io::stdout());
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => {
            let installed = registry.with(json_layer(stdout.clone())).try_init();
            if installed.is_ok() {
                // Only beside the subscriber that owns the same writer and format.
                let _ = JSON_ACCESS_LINES.set(stdout);
            }
            installed
        }
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(stdout),
            )
            .try_init(),
    };
    guard
}

/// One JSON object per line, event fields at the top level beside timestamp, level and target.
fn json_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
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
    let request_id = request.headers().get("x-request-id").cloned();
    let request_id = request_id
        .as_ref()
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    let path = uri.path();
    let span = tracing::debug_span!("request", %method, path, request_id);
    let response = next.run(request).instrument(span).await;

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
            tracing::error!(%method, path, version, status, latency_ms, request_id, error = cause, "request failed");
        }
        (500.., cause) => {
            tracing::warn!(%method, path, version, status, latency_ms, request_id, error = cause, "request failed");
        }
        _ if !tracing::enabled!(tracing::Level::INFO) => {}
        _ => match JSON_ACCESS_LINES.get() {
            Some(mut writer) => {
                let line = AccessLine {
                    method: method.as_str(),
                    path,
                    version,
                    status,
                    latency_ms,
                    request_id,
                };
                // One write call per line, so lines never interleave; it cannot fail.
                let _ = writer.write_all(&line.to_json(time::OffsetDateTime::now_utc()));
            }
            None => {
                tracing::info!(target: ACCESS_TARGET, %method, path, version, status, latency_ms, request_id, "request");
            }
        },
    }
    response
}

/// One successful request, as `access_log` writes it.
struct AccessLine<'a> {
    method: &'a str,
    path: &'a str,
    version: &'static str,
    status: u16,
    latency_ms: f64,
    request_id: &'a str,
}

impl AccessLine<'_> {
    /// The line exactly as tracing-subscriber's flattened JSON formatter writes the
    /// `tracing::info!` event above (same keys, order and number formats), newline included.
    fn to_json(&self, now: time::OffsetDateTime) -> Vec<u8> {
        let mut line = Vec::with_capacity(256);
        let _ = write!(
            line,
            r#"{{"timestamp":"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z","level":"INFO","message":"request","method":"#,
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.microsecond()
        );
        // serde_json escapes strings and prints floats exactly as the tracing formatter does
        // (it uses serde_json too); writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut line, self.method);
        line.extend_from_slice(br#","path":"#);
        let _ = serde_json::to_writer(&mut line, self.path);
        line.extend_from_slice(br#","version":"#);
        let _ = serde_json::to_writer(&mut line, self.version);
        let _ = write!(line, r#","status":{},"latency_ms":"#, self.status);
        let _ = serde_json::to_writer(&mut line, &self.latency_ms);
        line.extend_from_slice(br#","request_id":"#);
        let _ = serde_json::to_writer(&mut line, self.request_id);
        line.extend_from_slice(br#","target":"#);
        let _ = serde_json::to_writer(&mut line, ACCESS_TARGET);
        line.extend_from_slice(b"}\n");
        line
    }
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
    use crate::ops::log_writer::testing::Sink;
    use axum::http::Method;
    use time::macros::datetime;

    /// What the tracing JSON formatter writes for the access event with these fields.
    fn tracing_line(line: &AccessLine<'_>, method: Method) -> String {
        let capture = Sink::default();
        let subscriber = tracing_subscriber::registry().with(json_layer(capture.clone()));
        let AccessLine {
            path,
            version,
            status,
            latency_ms,
            request_id,
            ..
        } = *line;
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: ACCESS_TARGET, %method, path, version, status, latency_ms, request_id, "request");
        });
        capture.text()
    }

    /// `{"timestamp":"2026-01-02T03:04:05.000007Z",` has a fixed width; the rest must match.
    fn split_timestamp(line: &str) -> (&str, &str) {
        line.split_at(r#"{"timestamp":"2026-01-02T03:04:05.000007Z","#.len())
    }

    #[test]
    fn hand_written_access_line_is_byte_for_byte_the_tracing_json_line() {
        let cases = [
            (
                Method::GET,
                "/api/healthz",
                "HTTP/1.1",
                200,
                0.036,
                "9f1c-0a",
            ),
            (Method::POST, "/api/items", "HTTP/1.0", 201, 1.0, ""),
            (
                Method::DELETE,
                "/api/items/\"x\"\\\u{7}ünï",
                "HTTP/2",
                404,
                12.345,
                "a:b.c-d_e",
            ),
            (
                Method::from_bytes(b"PURGE").unwrap(),
                "/",
                "HTTP/1.1",
                405,
                1e-3,
                "id",
            ),
        ];
        for (method, path, version, status, latency_ms, request_id) in cases {
            let line = AccessLine {
                method: method.as_str(),
                path,
                version,
                status,
                latency_ms,
                request_id,
            };
            let ours = String::from_utf8(line.to_json(time::OffsetDateTime::now_utc())).unwrap();
            let theirs = tracing_line(&line, method.clone());
            let (our_stamp, our_rest) = split_timestamp(&ours);
            let (their_stamp, their_rest) = split_timestamp(&theirs);
            assert_eq!(our_rest, their_rest, "{method} {path}");
            assert_eq!(our_stamp.len(), their_stamp.len());
            assert!(their_stamp.ends_with(r#"Z","#), "{their_stamp}");
            assert!(ours.ends_with('\n') && ours.matches('\n').count() == 1);
            let parsed: serde_json::Value = serde_json::from_str(&ours).unwrap();
            assert_eq!(parsed["path"], path);
        }
    }

    #[test]
    fn access_line_timestamp_is_utc_with_microseconds() {
        let line = AccessLine {
            method: "GET",
            path: "/",
            version: "HTTP/1.1",
            status: 200,
            latency_ms: 0.5,
            request_id: "",
        };
        let json = line.to_json(datetime!(2026-01-02 03:04:05.000007 UTC));
        let json = String::from_utf8(json).unwrap();
        assert!(
            json.starts_with(r#"{"timestamp":"2026-01-02T03:04:05.000007Z","level":"INFO","#),
            "{json}"
        );
    }
}
