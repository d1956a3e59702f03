//! What the service records as spans for OpenTelemetry: a server span per request and a client
//! span per database call, under one target of their own. The export lives in `ops::traces`.
//!
//! Without an OTLP endpoint no span of this target is ever created: the hot paths check
//! `enabled()` first, so requests pay nothing for tracing they do not do.

use std::sync::atomic::{AtomicBool, Ordering};

/// The target of every span meant for export; the log output never shows them.
pub const TARGET: &str = "items_api::spans";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Called once the exporter is installed.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The W3C `traceparent` of the span the caller is in, when spans are exported and it is sampled:
/// what a write hands to the database, so the processes that announce its change can link to it.
pub fn current_traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !enabled() {
        return None;
    }
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    (span_context.is_valid() && span_context.is_sampled()).then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// Records that a change made elsewhere arrived here to be passed on to the change streams: a
/// consumer span of its own, linked to the traces of the writes that made the change (`traces`,
/// comma-separated `traceparent`s).
pub fn record_arrival(traces: &str, channel: &str, change: &str, revision: u64) {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !enabled() {
        return;
    }
    let span = tracing::info_span!(
        target: TARGET,
        "change",
        otel.name = format!("receive {channel}"),
        otel.kind = "consumer",
        messaging.operation.type = "receive",
        messaging.destination.name = channel,
        items.change = change,
        // Signed: the OpenTelemetry layer exports unsigned numbers as text.
        items.revision = i64::try_from(revision).unwrap_or(i64::MAX),
    );
    let propagator = opentelemetry_sdk::propagation::TraceContextPropagator::new();
    for traceparent in traces.split(',').map(str::trim) {
        let carrier =
            std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let context = propagator.extract(&carrier);
        let linked = context.span().span_context().clone();
        if linked.is_valid() {
            span.add_link(linked);
        }
    }
}
