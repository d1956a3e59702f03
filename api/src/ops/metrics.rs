//! Prometheus' text exposition on its own listener (`METRICS_ADDR`), never on the public port: the
//! recorder, the `/metrics` route, and the gauges read when Prometheus scrapes (the database's
//! reachability, free disk, the Postgres pool).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{self as names, BATCH_BUCKETS, COMMIT_BUCKETS, DURATION_BUCKETS};
use crate::store::ItemStore;

/// The process-wide recorder: installed on the first call, shared by every later one (tests start
/// several services in one process).
pub fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    let installed = HANDLE.get_or_init(|| {
        let buckets = |builder: PrometheusBuilder, name: &str, buckets: &[f64]| {
            builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                .map_err(|error| error.to_string())
        };
        let builder = buckets(
            PrometheusBuilder::new(),
            names::HTTP_REQUEST_DURATION,
            DURATION_BUCKETS,
        )?;
        let builder = buckets(builder, names::SQLITE_BATCH_SIZE, BATCH_BUCKETS)?;
        let builder = buckets(builder, names::SQLITE_COMMIT_DURATION, COMMIT_BUCKETS)?;
        let handle = builder
            .install_recorder()
            .map_err(|error| format!("cannot install the metrics recorder: {error}"))?;
        names::describe();
        names::enable();
        Ok(handle)
    });
    installed.clone()
}

/// What the build_info gauge says.
pub struct BuildInfo {
    pub version: String,
    pub vcs_ref: String,
    pub backend: &'static str,
}

/// Serves `/metrics` on `listener` until `stopping` is cancelled.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    store: Arc<dyn ItemStore>,
    build: BuildInfo,
    stopping: CancellationToken,
) {
    metrics::gauge!(
        names::BUILD_INFO,
        "version" => build.version,
        "vcs_ref" => build.vcs_ref,
        "backend" => build.backend,
    )
    .set(1.0);
    // Without the exporter's own listener nothing else drains the histograms' buffers.
    let upkeep = {
        let (handle, stopping) = (handle.clone(), stopping.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = every.tick() => handle.run_upkeep(),
                    () = stopping.cancelled() => return,
                }
            }
        })
    };
    let router = Router::new()
        .route("/metrics", get(exposition))
        .with_state((handle, store));
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(stopping.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::warn!(%error, "the metrics listener stopped");
    }
    upkeep.abort();
}

async fn exposition(
    State((handle, store)): State<(PrometheusHandle, Arc<dyn ItemStore>)>,
) -> impl IntoResponse {
    refresh_database_gauges(store.as_ref()).await;
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
}

/// The same facts as `/api/health`, read at the moment Prometheus asks.
async fn refresh_database_gauges(store: &dyn ItemStore) {
    let status = store.status().await;
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    metrics::gauge!(names::DATABASE_REACHABLE).set(flag(status.reachable));
    metrics::gauge!(names::DATABASE_WRITABLE).set(flag(status.writable));
    let number = |value: Option<&Value>| value.and_then(Value::as_f64);
    if let Some(free) = number(status.details.get("free_bytes")) {
        metrics::gauge!(names::DISK_FREE).set(free);
    }
    if let Some(pool) = status.details.get("pool") {
        let field = |name: &str| number(pool.get(name)).unwrap_or(0.0);
        let (size, available) = (field("size"), field("available"));
        metrics::gauge!(names::POOL_CONNECTIONS, "state" => "idle").set(available);
        metrics::gauge!(names::POOL_CONNECTIONS, "state" => "used")
            .set((size - available).max(0.0));
        metrics::gauge!(names::POOL_MAX).set(field("max_size"));
        metrics::gauge!(names::POOL_PENDING).set(field("waiting"));
        metrics::counter!(names::POOL_WAITS).absolute(field("waits") as u64);
        metrics::counter!(names::POOL_TIMEOUTS).absolute(field("timeouts") as u64);
    }
}
