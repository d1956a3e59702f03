//! Integration tests: the real service over real HTTP on an ephemeral port with a temporary
//! database (in-process), or the real binary where signals and exit codes matter.

mod big_lists;
mod cli;
mod concurrency;
mod connections;
mod errors;
mod events;
mod health;
mod helpers;
mod idempotency;
mod items;
mod logs;
mod metrics;
mod migrate;
mod persistence;
mod postgres;
mod postgres_support;
mod proxy;
mod shutdown;
mod static_and_docs;
mod traces;
mod transfer;
