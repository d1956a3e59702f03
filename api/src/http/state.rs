//! `AppState`: what every handler shares.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::http::keys_in_flight::KeysInFlight;
use crate::http::list_cache::CachedLists;
pub use crate::http::streams::EventStreams;
use crate::store::ItemStore;

/// Cheap to clone: everything is behind an `Arc` or `Copy`.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn ItemStore>,
    /// The list, read through its cache.
    pub lists: Arc<CachedLists>,
    pub info: Arc<ServiceInfo>,
    pub body_limits: BodyLimits,
    /// Behind an `Arc`: the state is cloned for every request, and cloning the stop token inside
    /// takes a lock.
    pub event_streams: Arc<EventStreams>,
    /// Idempotency keys whose create is running now.
    pub keys_in_flight: Arc<KeysInFlight>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn ItemStore>,
        info: ServiceInfo,
        body_limits: BodyLimits,
        event_streams: EventStreams,
    ) -> Self {
        Self {
            lists: Arc::new(CachedLists::new(Arc::clone(&store))),
            store,
            info: Arc::new(info),
            body_limits,
            event_streams: Arc::new(event_streams),
            keys_in_flight: Arc::default(),
        }
    }
}

/// What a request body may be: the body extractor answers 413 and 408 by the first two, the item
/// handlers 422 by the third.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// How long the body may take to arrive.
    pub timeout: Duration,
    /// The longest item text, in characters.
    pub max_text_chars: usize,
}

/// Facts about this process, reported by `/api/health`.
#[derive(Debug)]
pub struct ServiceInfo {
    pub version: String,
    pub build_date: String,
    pub vcs_ref: String,
    pub hostname: String,
    pub environment: String,
    pub started: Instant,
    /// Set when a stop was requested: readiness then fails, so load balancers stop sending
    /// requests while the ones already on their way are still served.
    pub stopping: AtomicBool,
}
