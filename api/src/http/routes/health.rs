//! Health: `/api/healthz` (liveness, no database) and `/api/health` (readiness and details).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::state::AppState;
use crate::store::DatabaseStatus;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(health))
}

#[derive(Serialize, ToSchema)]
struct Liveness {
    #[schema(example = "ok")]
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
struct Readiness {
    /// `ok` when the database is reachable and writable; `stopping` once a stop was requested
    /// (the process still serves for SHUTDOWN_DRAIN_SECS); else `unavailable`.
    #[schema(example = "ok")]
    status: &'static str,
    #[schema(example = "1.4.0")]
    version: String,
    #[schema(example = "2026-11-23T08:00:00Z")]
    build_date: String,
    /// Source revision the binary was built from.
    vcs_ref: String,
    uptime_seconds: u64,
    hostname: String,
    /// `development` or `production`.
    environment: String,
    database: DatabaseStatus,
}

/// Liveness: the process serves HTTP and its storage worker runs. Touches no database.
#[utoipa::path(
    get,
    path = "/api/healthz",
    tag = "health",
    responses(
        (status = 200, description = "The process is alive", body = Liveness),
        (status = 503, description = "The storage worker has stopped; restart the process", body = Liveness),
    )
)]
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    if state.store.is_alive() {
        (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/json")],
            r#"{"status":"ok"}"#,
        )
    } else {
        // The storage worker has died: only a restart helps, which is what liveness is for.
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(CONTENT_TYPE, "application/json")],
            r#"{"status":"unavailable"}"#,
        )
    }
}

/// Readiness and details: version, build, uptime, and whether the database can be read and written.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "The database is not usable, or the process is stopping", body = Readiness),
    )
)]
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let database = state.store.status().await;
    let info = &state.info;
    let stopping = info.stopping.load(Ordering::Acquire);
    let usable = database.is_usable() && !stopping;
    let body = Readiness {
        status: match (stopping, usable) {
            (true, _) => "stopping",
            (false, true) => "ok",
            (false, false) => "unavailable",
        },
        version: info.version.clone(),
        build_date: info.build_date.clone(),
        vcs_ref: info.vcs_ref.clone(),
        uptime_seconds: info.started.elapsed().as_secs(),
        hostname: info.hostname.clone(),
        environment: info.environment.clone(),
        database,
    };
    let status = if usable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
