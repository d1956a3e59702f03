//! Items API: a small JSON service over SQLite or Postgres, a drop-in replacement for the seed's
//! FastAPI app.
//!
//! The folders are the layers: `http` answers requests, `store` keeps the items, `ops` is what
//! running the service needs (logging, the container health check). `startup` puts them together
//! from the settings in `config`.

/// Settings from the environment and flags, checked at start-up.
pub mod config;
/// Item rules: trimming and timestamps.
pub mod domain;
/// Routes, middleware, request parsing, errors, the OpenAPI document and the accept loop.
pub mod http;
/// Logging and the container health-check client.
pub mod ops;
/// `Application`: start, serve, stop.
pub mod startup;
/// The storage interface, its backends (SQLite, Postgres) and the list cache.
pub mod store;

pub use config::{Cli, Command, Config};
pub use http::{AppState, app};
pub use startup::Application;
