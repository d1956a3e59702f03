//! What the service counts and measures, by name, with the help text and unit Prometheus shows.
//! Names follow the OpenTelemetry semantic conventions where one exists (`http.server.*`,
//! `db.client.connection.*`), in Prometheus' spelling; the rest start with `items_`.
//!
//! Recording goes through the `metrics` facade: without `METRICS_ADDR` no recorder is installed
//! and every call here is a no-op. The exposition lives in `ops::metrics`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, PoisonError, RwLock};

use axum::http::Method;
use metrics::{Histogram, Unit, describe_counter, describe_gauge, describe_histogram};

pub const HTTP_REQUEST_DURATION: &str = "http_server_request_duration_seconds";
pub const HTTP_ACTIVE_REQUESTS: &str = "http_server_active_requests";
pub const CONNECTIONS_OPEN: &str = "items_http_connections_open";
pub const CONNECTIONS_REFUSED: &str = "items_http_connections_refused_total";
pub const STREAMS_OPEN: &str = "items_event_streams_open";
pub const STREAMS_LIMIT: &str = "items_event_streams_limit";
pub const STREAMS_REFUSED: &str = "items_event_streams_refused_total";
pub const EVENTS_SENT: &str = "items_events_sent_total";
pub const EVENT_RESETS: &str = "items_event_resets_total";
pub const LIST_CACHE_REQUESTS: &str = "items_list_cache_requests_total";
pub const SQLITE_BATCH_SIZE: &str = "items_sqlite_write_batch_size";
pub const SQLITE_COMMIT_DURATION: &str = "items_sqlite_commit_duration_seconds";
pub const POOL_CONNECTIONS: &str = "db_client_connection_count";
pub const POOL_MAX: &str = "db_client_connection_max";
pub const POOL_PENDING: &str = "db_client_connection_pending_requests";
pub const POOL_WAITS: &str = "items_db_pool_waits_total";
pub const POOL_TIMEOUTS: &str = "items_db_pool_timeouts_total";
pub const LISTEN_RECONNECTS: &str = "items_postgres_listen_reconnects_total";
pub const DATABASE_REACHABLE: &str = "items_database_reachable";
pub const DATABASE_WRITABLE: &str = "items_database_writable";
pub const DISK_FREE: &str = "items_database_disk_free_bytes";
pub const BUILD_INFO: &str = "items_build_info";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether a recorder is installed: the hot paths skip their bookkeeping when none is.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Called once the recorder is installed.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Every request's duration, by route, method and status class.
pub static REQUESTS: LazyLock<RequestDurations> = LazyLock::new(RequestDurations::default);

/// Request durations, from a cached cache hit to a slow statement that runs out of time.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Writes committed together, up to the writer's batch limit.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// One commit, from the page cache to a slow disk's fsync.
pub const COMMIT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Tells the recorder what each name means, and starts every counter at zero (a dashboard or an
/// alert can then tell "nothing happened" from "not reported"); done once, at installation.
pub fn describe() {
    for name in [
        CONNECTIONS_REFUSED,
        STREAMS_REFUSED,
        EVENT_RESETS,
        LISTEN_RECONNECTS,
    ] {
        metrics::counter!(name).absolute(0);
    }
    for event in ["ready", "reset", "created", "updated", "deleted"] {
        metrics::counter!(EVENTS_SENT, "event" => event).absolute(0);
    }
    for result in ["hit", "miss"] {
        metrics::counter!(LIST_CACHE_REQUESTS, "result" => result).absolute(0);
    }
    for name in [HTTP_ACTIVE_REQUESTS, CONNECTIONS_OPEN, STREAMS_OPEN] {
        metrics::gauge!(name).set(0.0);
    }
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Requests answered, by method, route template and status class, and how long each took \
         until its response head (a stream counts until it started)"
    );
    describe_gauge!(HTTP_ACTIVE_REQUESTS, "Requests being handled now");
    describe_gauge!(CONNECTIONS_OPEN, "Client connections open now");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections refused at once because MAX_CONNECTIONS were open"
    );
    describe_gauge!(STREAMS_OPEN, "Change streams (/api/items/events) open now");
    describe_gauge!(
        STREAMS_LIMIT,
        "Change streams allowed at once (MAX_EVENT_STREAMS in force)"
    );
    describe_counter!(
        STREAMS_REFUSED,
        "Change streams refused because every slot was taken"
    );
    describe_counter!(EVENTS_SENT, "Change events sent to streams, by event type");
    describe_counter!(
        EVENT_RESETS,
        "Resets sent to streams: the page must read the list again"
    );
    describe_counter!(
        LIST_CACHE_REQUESTS,
        "List reads answered from the cache (hit) or built anew (miss)"
    );
    describe_histogram!(
        SQLITE_BATCH_SIZE,
        Unit::Count,
        "Writes the SQLite writer committed in one transaction"
    );
    describe_histogram!(
        SQLITE_COMMIT_DURATION,
        Unit::Seconds,
        "How long the SQLite writer's commit (with its fsync) took"
    );
    describe_gauge!(
        POOL_CONNECTIONS,
        "Postgres pool connections, by state: idle or used"
    );
    describe_gauge!(
        POOL_MAX,
        "Postgres pool connections allowed (DATABASE_POOL_SIZE)"
    );
    describe_gauge!(
        POOL_PENDING,
        "Requests waiting for a free Postgres connection now"
    );
    describe_counter!(
        POOL_WAITS,
        "Requests that found every Postgres connection busy and waited"
    );
    describe_counter!(
        POOL_TIMEOUTS,
        "Requests that waited DATABASE_POOL_TIMEOUT_MS for a connection and got a 503"
    );
    describe_counter!(
        LISTEN_RECONNECTS,
        "Times the Postgres change listener connected again after losing its connection"
    );
    describe_gauge!(
        DATABASE_REACHABLE,
        "1 when a read of the database succeeded at the last scrape"
    );
    describe_gauge!(
        DATABASE_WRITABLE,
        "1 when the database could take a write at the last scrape"
    );
    describe_gauge!(
        DISK_FREE,
        Unit::Bytes,
        "Free space on the SQLite database's filesystem"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels say which build serves and on which backend"
    );
}

/// The request histograms by route, method and status class, looked up once: building a metric
/// key (labels, hashing) for every request would cost more than the recording itself. Looked up
/// by the route as it comes (no allocation), then among the few methods and classes it sees.
#[derive(Default)]
pub struct RequestDurations {
    known: RwLock<HashMap<String, Vec<Seen>>>,
}

/// One method and status class seen on a route, and its histogram.
type Seen = (Method, u16, Histogram);

impl RequestDurations {
    /// Records one request. `route` is the route template (`/api/items/{id}`), never the path.
    pub fn record(&self, method: &Method, route: &str, status: u16, seconds: f64) {
        let class = status / 100;
        let found = self
            .known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(route)
            .and_then(|seen| {
                seen.iter()
                    .find(|(known, known_class, _)| known == method && *known_class == class)
                    .map(|(_, _, histogram)| histogram.clone())
            });
        let histogram = found.unwrap_or_else(|| {
            let histogram = metrics::histogram!(
                HTTP_REQUEST_DURATION,
                "http_request_method" => method.as_str().to_owned(),
                "http_route" => route.to_owned(),
                "status_class" => format!("{class}xx"),
            );
            self.known
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(route.to_owned())
                .or_default()
                .push((method.clone(), class, histogram.clone()));
            histogram
        });
        histogram.record(seconds);
    }
}
