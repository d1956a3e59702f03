//! Items API: a small JSON service over SQLite or Postgres, a drop-in replacement for the seed's
//! FastAPI app.
//!
//! The folders are the layers: `http` answers requests (and keeps the list's JSON ready), `store`
//! keeps the items, `feed` carries every committed change to the open event streams,
//! `maintenance` holds the commands run beside the service (migrate, backup, restore, transfer),
//! and `ops` is what running the service needs (logs, metrics, traces, the container health
//! check). `startup` puts them together from the settings in `config`.

/// Settings from the environment and flags, checked at start-up.
pub mod config;
/// Item rules: trimming, timestamps, idempotency keys.
pub mod domain;
/// The change feed: every committed change, in order, for the event streams.
pub mod feed;
/// Routes, middleware, request parsing, errors, the OpenAPI document and the accept loop.
pub mod http;
/// `migrate`, `backup`, `restore` and `transfer`: the commands run beside the service.
pub mod maintenance;
/// What is counted and measured, by name (Prometheus).
pub mod metrics;
/// Logging and the container health-check client.
pub mod ops;
/// `Application`: start, serve, stop.
pub mod startup;
/// The storage interface and its backends (SQLite, Postgres).
pub mod store;
/// What is recorded as spans (OpenTelemetry).
pub mod traces;

pub use config::{Cli, Command, Config};
pub use http::{AppState, app};
pub use startup::Application;
