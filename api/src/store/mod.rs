//! The storage interface: the only way handlers reach the database.
//!
//! `ItemStore` is deliberately small so a second backend (Postgres, for several replicas) can sit
//! beside `sqlite` without touching the routes.

pub mod backup;
pub mod sqlite;

use async_trait::async_trait;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::ItemText;

pub use sqlite::{JournalMode, SqliteOptions, SqliteStore, Synchronous};

/// A stored item, exactly as the seed service returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Item {
    /// Assigned by the database; never reused, higher is newer.
    #[schema(example = 42)]
    pub id: i64,
    /// The trimmed text.
    #[schema(example = "buy milk")]
    pub text: String,
    /// UTC creation time in Python isoformat with microseconds.
    #[schema(example = "2026-01-02T03:04:05.123456+00:00")]
    pub created_at: String,
}

/// Which slice of the list to read, newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Page {
    /// At most this many items; `None` reads them all.
    pub limit: Option<u32>,
    /// Only items with an id below this one (keyset pagination).
    pub before: Option<i64>,
}

/// What the readiness check reports about the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DatabaseStatus {
    /// A read query succeeded.
    pub reachable: bool,
    /// The writer could take the write lock.
    pub writable: bool,
    /// Number of stored items, when reachable.
    pub item_count: Option<i64>,
    /// The journal mode in effect (`wal`, `delete`, ...), when reachable.
    pub journal_mode: Option<String>,
    /// Why the database is not usable, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DatabaseStatus {
    pub fn is_usable(&self) -> bool {
        self.reachable && self.writable
    }
}

/// Storage failures. None of them is the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is shutting down or its writer has stopped; retrying later may work.
    #[error("the database is not accepting requests: {0}")]
    Unavailable(&'static str),
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database worker failed")]
    Worker(#[from] tokio::task::JoinError),
}

impl StoreError {
    /// Failures that go away by themselves: the service is stopping, or the database is locked by
    /// another process (a backup in `delete` journal mode) for longer than the busy timeout.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Sqlite(error) => matches!(
                error.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            Self::Worker(_) => false,
        }
    }
}

#[async_trait]
pub trait ItemStore: Send + Sync + 'static {
    /// Items newest first (highest id first).
    async fn list(&self, page: Page) -> Result<Vec<Item>, StoreError>;

    async fn get(&self, id: i64) -> Result<Option<Item>, StoreError>;

    /// Stores the item; when this returns `Ok` the row is committed.
    async fn create(&self, text: ItemText) -> Result<Item, StoreError>;

    /// Returns whether an item was deleted.
    async fn delete(&self, id: i64) -> Result<bool, StoreError>;

    async fn status(&self) -> DatabaseStatus;

    /// A number that changes whenever the set of items changes, for caching reads.
    /// `None` when the backend cannot tell (for example, other processes write too).
    fn revision(&self) -> Option<u64>;

    /// Whether the store can still work at all (its worker has not died). Checked by liveness,
    /// so a broken process gets restarted; touches no database.
    fn is_alive(&self) -> bool {
        true
    }

    /// Finishes pending writes and leaves the database tidy (WAL checkpointed).
    async fn close(&self);
}
