//! The OpenAPI document (3.1, generated from the route annotations) and the offline Swagger UI.

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Items API",
        description = "A list of short text items: list (newest first, in pages), add (once, with \
                       an `Idempotency-Key`), edit, delete, and follow every change as it \
                       happens. Errors are JSON: `{\"detail\": \"...\"}`, or for 422 a list of \
                       `{type, loc, msg, input}`.",
        license(name = "MIT", identifier = "MIT"),
    ),
    tags(
        (name = "items", description = "Stored items, newest first, and their changes"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

/// Path of the interactive documentation.
pub const DOCS_PATH: &str = "/api/docs";
/// Path of the machine-readable document.
pub const SPEC_PATH: &str = "/api/openapi.json";

/// Documents the configured `MAX_TEXT_CHARS` as the body's `maxLength`.
pub fn document_text_limit(spec: &mut utoipa::openapi::OpenApi, max_chars: usize) {
    use utoipa::openapi::{RefOr, Schema};
    let body = spec
        .components
        .as_mut()
        .and_then(|components| components.schemas.get_mut("CreateItem"));
    if let Some(RefOr::T(Schema::Object(body))) = body
        && let Some(RefOr::T(Schema::Object(text))) = body.properties.get_mut("text")
    {
        text.max_length = Some(max_chars);
    }
}

/// Serves the spec and Swagger UI; the UI's files are compiled in, nothing is fetched at run time.
pub fn docs_router<S>(mut spec: utoipa::openapi::OpenApi, version: &str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    version.clone_into(&mut spec.info.version);
    SwaggerUi::new(DOCS_PATH).url(SPEC_PATH, spec).into()
}
