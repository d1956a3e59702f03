//! Every HTTP route under `/api`, each documented in the OpenAPI spec by its own annotation.

pub mod events;
pub mod health;
pub mod items;

use utoipa_axum::router::OpenApiRouter;

use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(events::router())
        .merge(health::router())
        .merge(items::router())
}
