//! Items API: a small JSON service over SQLite, a drop-in replacement for the seed's FastAPI app.

/// `app()`: routes and middleware; `AppState`.
pub mod app;
/// Settings from the environment and flags, checked at start-up.
pub mod config;
/// Item rules: trimming and timestamps.
pub mod domain;
/// `AppError` and its JSON form.
pub mod error;
/// Request parsing with FastAPI-compatible validation errors.
pub mod extract;
/// The container health-check client.
pub mod healthcheck;
/// Cached list responses.
pub mod list_cache;
/// Batched, non-blocking log output.
pub mod log_writer;
/// OpenAPI document and Swagger UI.
pub mod openapi;
/// HTTP handlers.
pub mod routes;
/// The accept loop: connection limits and timeouts, graceful stop.
pub mod server;
/// `Application`: start, serve, stop.
pub mod startup;
/// The web page from `STATIC_DIR`.
pub mod static_files;
/// Storage interface and the SQLite backend.
pub mod store;
/// Logging setup and request spans.
pub mod telemetry;

pub use app::{AppState, app};
pub use config::{Cli, Command, Config};
pub use startup::Application;
