//! What running the service needs besides answering requests.

/// The container health-check client (`items-api healthcheck`).
pub mod healthcheck;
/// The JSON log line.
pub mod json_lines;
/// Batched, non-blocking log output.
pub mod log_writer;
/// Prometheus' exposition on METRICS_ADDR.
pub mod metrics;
/// Logging setup and the access log.
pub mod telemetry;
/// The OpenTelemetry trace export (OTLP), and continuing a caller's trace.
pub mod traces;
