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
