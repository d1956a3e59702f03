//! The connection pool and what runs on it: connecting (and migrating, or waiting for the schema)
//! in the background until the server answers, and each statement run within its time, with a
//! lost answer to a write reported as such.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::connect::Target;
use super::errors::{PrepareError, classify, prepare_error};
use super::schema::{self, SchemaError};
use crate::store::StoreError;
use crate::store::settings::PoolOptions;

/// How long asking the server to cancel a statement may take.
pub(super) const CANCEL_TIMEOUT: Duration = Duration::from_secs(1);
/// Retry pause while the server cannot be reached at start-up, doubling up to the maximum.
pub(super) const RETRY_FIRST: Duration = Duration::from_millis(250);
pub(super) const RETRY_MAX: Duration = Duration::from_secs(5);

pub(super) struct Shared {
    pub(super) pool: Pool,
    pub(super) target: Target,
    /// For cancelling a statement that ran out of time.
    pub(super) tls: MakeRustlsConnect,
    pub(super) options: PoolOptions,
    /// Connected and migrated: item requests may run.
    pub(super) ready: AtomicBool,
    /// Why the store is not ready (while `ready` is false).
    pub(super) not_ready: Mutex<String>,
    /// Requests that found every connection in use and had to wait.
    pub(super) pool_waits: AtomicU64,
    /// Requests that waited out `wait_timeout` and got a 503.
    pub(super) pool_timeouts: AtomicU64,
}

pub(super) fn build_pool(target: &Target, options: &PoolOptions) -> Result<Pool, String> {
    let manager = Manager::from_connect(
        target.driver_config(options.connect_timeout),
        target.connector(),
        // A connection the server closed is noticed by the driver and not handed out again;
        // checking each one with a query first would cost a round trip per request.
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(options.size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.wait_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()
        .map_err(|error| format!("cannot set up the database pool: {error}"))
}

pub(super) async fn keep_connecting(shared: Arc<Shared>) {
    let mut pause = RETRY_FIRST;
    let mut last_reason = String::new();
    loop {
        tokio::time::sleep(pause).await;
        match shared.prepare().await {
            Ok(()) => {
                tracing::info!(database = %shared.target, "connected to the database; serving");
                return;
            }
            Err(PrepareError::Fatal(reason) | PrepareError::Retry(reason)) => {
                if reason != last_reason {
                    tracing::warn!(database = %shared.target, %reason, "database still not usable");
                    last_reason.clone_from(&reason);
                }
                shared.set_not_ready(reason);
            }
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
}

impl Shared {
    pub(super) fn set_not_ready(&self, reason: String) {
        *self
            .not_ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason;
    }

    pub(super) fn not_ready_reason(&self) -> String {
        self.not_ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connects and brings the schema up to date (or, when this process does not migrate,
    /// checks that it is); on success the store is ready. A schema still behind is waited for,
    /// as `items-api migrate` may be running right now.
    pub(super) async fn prepare(&self) -> Result<(), PrepareError> {
        let mut client = match self.pool.get().await {
            Ok(client) => client,
            Err(error) => return Err(prepare_error(&self.target, &error)),
        };
        let checked = if self.options.migrate_on_start {
            schema::migrate(&mut client).await.map(drop)
        } else {
            schema::check(&client).await.map(drop)
        };
        checked.map_err(|error| {
            let reason = error.describe(&self.target);
            let passes = match error {
                SchemaError::Behind(_) => true,
                SchemaError::Driver(error) => classify(error).is_transient(),
                SchemaError::TooNew(_) | SchemaError::Role(_) => false,
            };
            if passes {
                PrepareError::Retry(reason)
            } else {
                PrepareError::Fatal(reason)
            }
        })?;
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// A pooled connection, or why there is none.
    pub(super) async fn connection(&self) -> Result<Object, StoreError> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(StoreError::unavailable(format!(
                "the database is not ready: {}",
                self.not_ready_reason()
            )));
        }
        let status = self.pool.status();
        if status.available == 0 && status.size >= status.max_size {
            self.pool_waits.fetch_add(1, Ordering::Relaxed);
        }
        self.pool.get().await.map_err(|error| match error {
            PoolError::Timeout(TimeoutType::Wait) => {
                self.pool_timeouts.fetch_add(1, Ordering::Relaxed);
                StoreError::unavailable(format!(
                    "all {} database connections stayed busy for {} ms",
                    self.options.size,
                    self.options.wait_timeout.as_millis()
                ))
            }
            PoolError::Timeout(_) => StoreError::unavailable(format!(
                "connecting to the database took longer than {} ms",
                self.options.connect_timeout.as_millis()
            )),
            PoolError::Backend(error) => match classify(error) {
                StoreError::Unavailable { cause, .. } => StoreError::Unavailable {
                    reason: "cannot connect to the database".into(),
                    cause,
                },
                failed => failed,
            },
            PoolError::Closed => StoreError::unavailable("shutting down"),
            other => StoreError::failed(other.to_string()),
        })
    }

    /// Runs `statement` on a pooled connection within the statement timeout. A statement that
    /// runs out of time is cancelled on the server and its connection is not reused.
    pub(super) async fn run<T>(
        &self,
        statement: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        self.run_within(self.options.statement_timeout, Effect::Read, statement)
            .await
    }

    /// As `run`, for a statement that changes the items: when it was sent but its answer is lost
    /// (the connection broke, or the time ran out), whether it committed is not known, and the
    /// error says so.
    pub(super) async fn write<T>(
        &self,
        statement: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        self.run_within(self.options.statement_timeout, Effect::Write, statement)
            .await
    }

    pub(super) async fn run_within<T>(
        &self,
        limit: Duration,
        effect: Effect,
        statement: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        let client = self.connection().await?;
        match tokio::time::timeout(limit, statement(&client)).await {
            Ok(Ok(value)) => Ok(value),
            // No SQLSTATE: the connection failed, so the server may or may not have committed.
            Ok(Err(error)) if effect == Effect::Write && error.code().is_none() => Err(
                StoreError::outcome_unknown("the connection failed before the answer came", error),
            ),
            Ok(Err(error)) => Err(classify(error)),
            Err(_) => {
                // Asked before answering, so a statement reported as failed is not left to finish
                // (and perhaps commit) on its own later.
                let cancel = client.cancel_token();
                match tokio::time::timeout(CANCEL_TIMEOUT, cancel.cancel_query(self.tls.clone()))
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot cancel a statement that ran out of time")
                    }
                    Err(_) => {
                        tracing::warn!("cancelling a statement that ran out of time timed out")
                    }
                }
                drop(Object::take(client));
                let reason = format!(
                    "the database did not answer within {} ms",
                    limit.as_millis()
                );
                Err(match effect {
                    // The cancel may have come after the commit.
                    Effect::Write => StoreError::OutcomeUnknown {
                        reason: reason.into(),
                        cause: None,
                    },
                    Effect::Read => StoreError::unavailable(reason),
                })
            }
        }
    }
}

/// Whether a statement changes the items, which decides what a lost answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    Read,
    Write,
}
