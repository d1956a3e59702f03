//! The storage interface: the only way handlers reach the database.
//!
//! `ItemStore` is all the serving side knows about storage. Each backend lives in its own module
//! (`sqlite`, `postgres`, one file per part) and is picked by `open` from the settings.
//!
//! Who may name a backend: the request-serving side (http/, startup) never does. `config` names
//! only the plain settings data of `settings` (journal mode, pool size, how to sign in), because
//! every setting is declared in one place. `maintenance` (migrate, backup, restore, transfer) may
//! name the backends, because those commands are about one backend's files or roles by nature.
//! `bulk` is the interface both backends implement for copying every item between databases.

pub mod bulk;
pub mod location;
pub mod postgres;
pub mod settings;
pub mod sqlite;
mod traced;

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{IdempotencyKey, ItemText};
use crate::feed::ChangeFeed;

pub use crate::domain::Item;
pub use crate::feed::Revision;
pub use location::{Location, LocationError};
use settings::{PoolOptions, SqliteOptions};
pub use traced::traced;

/// What a create with an idempotency key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Once {
    /// Stored now.
    Created(Item),
    /// The key was used before for the same text: what that create stored.
    Replayed(Item),
    /// The key was used before for another text.
    KeyReused,
}

impl Once {
    /// The item created, now or before.
    pub fn item(&self) -> Option<&Item> {
        match self {
            Self::Created(item) | Self::Replayed(item) => Some(item),
            Self::KeyReused => None,
        }
    }
}

/// How long idempotency keys are kept at least; a retry after that creates a new item.
pub const KEY_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// The largest page a client may ask for.
pub const MAX_LIMIT: u32 = 1000;

/// Which slice of the list to read, newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Page {
    /// At most this many items; `None` reads them all.
    pub limit: Option<u32>,
    /// Only items with an id below this one (keyset pagination).
    pub before: Option<i64>,
}

/// What the readiness check reports about the database.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DatabaseStatus {
    /// Which backend serves the items: `sqlite` or `postgres`.
    #[schema(example = "sqlite")]
    pub backend: &'static str,
    /// A read query succeeded.
    pub reachable: bool,
    /// A write could be made right now.
    pub writable: bool,
    /// Number of stored items when reachable.
    pub item_count: Option<i64>,
    /// SQLite only, as before `backend` existed: the journal mode in effect (`wal`, `delete`).
    /// The same value is in `details`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_mode: Option<String>,
    /// Why the database is not usable, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Backend-specific facts (journal mode, pool use, server version, ...).
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl DatabaseStatus {
    pub fn is_usable(&self) -> bool {
        self.reachable && self.writable
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Storage failures. None of them is the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not accepting requests right now (stopping, not connected yet, every connection busy,
    /// connection lost, locked by another process); retrying later may work.
    #[error("the database is not available: {reason}")]
    Unavailable {
        reason: Cow<'static, str>,
        #[source]
        cause: Option<BoxError>,
    },
    /// The database's disk is full: writes fail until space is freed; reads go on.
    #[error("the database's disk is full")]
    OutOfSpace(#[source] BoxError),
    /// A write was sent but whether it committed is not known (the connection broke, or the
    /// answer took too long, between sending it and hearing back). Retrying it with the same
    /// idempotency key finds out; retrying without one may store it twice.
    #[error("the database did not confirm the write: {reason}")]
    OutcomeUnknown {
        reason: Cow<'static, str>,
        #[source]
        cause: Option<BoxError>,
    },
    /// A failure that retrying will not fix.
    #[error("database error")]
    Failed(#[source] BoxError),
}

impl StoreError {
    pub fn unavailable(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            cause: None,
        }
    }

    pub fn unavailable_because(
        reason: impl Into<Cow<'static, str>>,
        cause: impl Into<BoxError>,
    ) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            cause: Some(cause.into()),
        }
    }

    pub fn failed(cause: impl Into<BoxError>) -> Self {
        Self::Failed(cause.into())
    }

    /// The same failure again, for each of several requests that shared one statement.
    pub fn copy(&self) -> Self {
        use std::error::Error;
        let cause = self.source().map(error_chain);
        match self {
            Self::Unavailable { reason, .. } => Self::Unavailable {
                reason: reason.clone(),
                cause: cause.map(Into::into),
            },
            Self::OutcomeUnknown { reason, .. } => Self::OutcomeUnknown {
                reason: reason.clone(),
                cause: cause.map(Into::into),
            },
            Self::OutOfSpace(_) => Self::OutOfSpace(cause.unwrap_or_default().into()),
            Self::Failed(_) => Self::Failed(cause.unwrap_or_default().into()),
        }
    }

    pub fn outcome_unknown(
        reason: impl Into<Cow<'static, str>>,
        cause: impl Into<BoxError>,
    ) -> Self {
        Self::OutcomeUnknown {
            reason: reason.into(),
            cause: Some(cause.into()),
        }
    }

    /// Failures that go away by themselves, answered 503 with `Retry-After`.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::OutcomeUnknown { .. })
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::failed(error)
    }
}

#[async_trait]
pub trait ItemStore: Send + Sync + 'static {
    /// Items newest first (highest id first).
    async fn list(&self, page: Page) -> Result<Vec<Item>, StoreError>;

    async fn get(&self, id: i64) -> Result<Option<Item>, StoreError>;

    /// Stores the item; when this returns `Ok` the row is committed.
    async fn create(&self, text: ItemText) -> Result<Item, StoreError>;

    /// Stores the item unless `key` was used before: then answers with what that first create
    /// stored (same text), or refuses (another text). The item and the key commit together.
    async fn create_once(&self, text: ItemText, key: IdempotencyKey) -> Result<Once, StoreError>;

    /// Replaces an item's text, keeping its id and `created_at`; `None` when there is no such
    /// item. When this returns `Ok` the change is committed.
    async fn update(&self, id: i64, text: ItemText) -> Result<Option<Item>, StoreError>;

    /// Returns whether an item was deleted.
    async fn delete(&self, id: i64) -> Result<bool, StoreError>;

    async fn status(&self) -> DatabaseStatus;

    /// Where the items stand, for reusing what was read. Once a write has been acknowledged,
    /// every later call returns a revision from after it. `None` when the backend cannot tell.
    async fn revision(&self) -> Result<Option<Revision>, StoreError>;

    /// Every committed change, in order, for the event stream.
    fn changes(&self) -> &ChangeFeed;

    /// Whether the store can still work at all (its worker has not died). Checked by liveness,
    /// so a broken process gets restarted; touches no database.
    fn is_alive(&self) -> bool {
        true
    }

    /// Finishes pending writes and releases the database.
    async fn close(&self);
}

/// Settings every backend draws from; each reads the part that concerns it.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub location: Location,
    /// Postgres: where to listen for changes, when not at `location`.
    pub listen: Option<postgres::Target>,
    pub sqlite: SqliteOptions,
    pub postgres: PoolOptions,
}

/// Why the store could not be opened; the message says what to change.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct OpenError(BoxError);

impl OpenError {
    fn new(error: impl Into<BoxError>) -> Self {
        Self(error.into())
    }

    /// The setting names a place the database cannot be (`DB_PATH` under a file, or read-only):
    /// the setting must change, as for a bad value.
    pub fn is_setting(&self) -> bool {
        self.0
            .downcast_ref::<sqlite::OpenError>()
            .is_some_and(sqlite::OpenError::is_setting)
    }
}

/// Opens (and migrates) the database the settings name.
pub async fn open(settings: &StoreSettings) -> Result<Arc<dyn ItemStore>, OpenError> {
    Ok(match &settings.location {
        Location::Sqlite(path) => Arc::new(sqlite::open(path, &settings.sqlite).await?),
        Location::Postgres(target) => Arc::new(
            postgres::PostgresStore::open(target, settings.listen.as_ref(), &settings.postgres)
                .await?,
        ),
    })
}

/// "outer: inner: innermost" on one line, each cause once, so one log line explains a failure.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
