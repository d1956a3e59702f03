//! Bulk copies between databases: every item (and idempotency key) read from one snapshot, and
//! written into an empty database in one transaction. Each backend implements both sides; the
//! `transfer` command (maintenance/) picks them and drives them.

use async_trait::async_trait;

use super::Item;

/// Items read and written per round.
pub const BATCH: usize = 2000;

/// Why a transfer failed; nothing was committed to the target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransferError(pub String);

impl TransferError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// An idempotency key as stored: what its first create answered, and when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub key: String,
    pub fingerprint: String,
    pub item: Item,
    pub stored_at: i64,
}

/// Reads a database's items in id order, then its idempotency keys, from one snapshot.
#[async_trait]
pub trait Reader: Send {
    /// Items in the snapshot.
    fn total(&self) -> u64;
    /// The highest id the database ever handed out (deleted items included).
    fn highest_id_ever(&self) -> i64;
    /// The next items in id order, `None` after the last.
    async fn next_batch(&mut self) -> Result<Option<Vec<Item>>, TransferError>;
    /// After the items: the next idempotency keys, `None` after the last (or when the database
    /// predates them).
    async fn next_keys(&mut self) -> Result<Option<Vec<StoredKey>>, TransferError>;
}

/// Writes items into an empty database, in one transaction.
#[async_trait]
pub trait Writer: Send {
    async fn write(&mut self, items: Vec<Item>) -> Result<(), TransferError>;
    async fn write_keys(&mut self, keys: Vec<StoredKey>) -> Result<(), TransferError>;
    /// Moves the id sequence past `highest_id_ever` and commits.
    async fn commit(self: Box<Self>, highest_id_ever: i64) -> Result<(), TransferError>;
}
