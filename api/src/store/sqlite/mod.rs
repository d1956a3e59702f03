//! SQLite backend: one writer thread that commits in batches, and a small pool of readers.
//!
//! Every write goes through the writer, so writers never race for the lock ("database is
//! locked" cannot happen between our own requests). The writer drains whatever is queued and
//! commits it in one transaction: one fsync serves many requests (group commit), and a request is
//! answered only after its transaction committed. Readers use their own connections; in WAL mode
//! they read the last committed snapshot and never wait for the writer.

pub mod backup;
mod errors;
mod open;
mod readers;
mod schema;
pub mod transfer;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{Semaphore, mpsc, oneshot};

use serde_json::json;

pub use super::settings::{JournalMode, SqliteOptions, Synchronous};
use super::{DatabaseStatus, Item, ItemStore, Once, Page, Revision, StoreError, error_chain};
use crate::domain::{IdempotencyKey, ItemText};
use crate::feed::ChangeFeed;
pub use errors::OpenError;
use open::journal_mode_sql;
pub(crate) use open::open_for_writing;
pub use open::{claim_owner_lock, migrate_file, owner_lock_path};
use readers::ReaderPool;
pub(crate) use readers::item_from_row;
pub use schema::{SCHEMA_VERSION, check_items_table, known_schema_version};
use writer::{Outcome, WRITE_QUEUE, Write, WriteCommand, run_writer};

/// How long a readiness probe waits for the writer before calling the database not writable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens the store off the async threads (opening and migrating block).
pub async fn open(path: &Path, options: &SqliteOptions) -> Result<SqliteStore, super::OpenError> {
    let (path, options) = (path.to_path_buf(), options.clone());
    tokio::task::spawn_blocking(move || SqliteStore::open(&path, &options))
        .await
        .map_err(|error| super::OpenError::new(format!("cannot start the database: {error}")))?
        .map_err(super::OpenError::new)
}

pub struct SqliteStore {
    writer: mpsc::Sender<WriteCommand>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<ReaderPool>,
    read_slots: Arc<Semaphore>,
    read_connections: u32,
    /// Kept by the writer: the revision, the item count and what each commit changed.
    feed: Arc<ChangeFeed>,
    journal_mode: JournalMode,
    /// Held while the store is open; see `claim_owner_lock`.
    owner: Mutex<Option<std::fs::File>>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database, then starts the writer thread.
    pub fn open(path: &Path, options: &SqliteOptions) -> Result<Self, OpenError> {
        let (path, owner, conn, _) = open_for_writing(path, options, options.migrate_on_start)?;

        let readers = Arc::new(ReaderPool {
            path: path.clone(),
            busy_timeout: options.busy_timeout,
            idle: Mutex::new(Vec::new()),
        });
        // Open one reader now so a problem shows at start-up, not on the first request.
        let first_reader = readers.open().map_err(|source| OpenError::Setup {
            path: path.clone(),
            cause: source,
        })?;
        readers.give_back(first_reader);

        // Counted once here; from now on only this process writes (the owner lock), so the
        // writer keeps the count exact and readiness probes never scan the table.
        let items = conn
            .query_row("SELECT count(*) FROM items", [], |row| row.get(0))
            .map_err(|source| OpenError::Setup {
                path,
                cause: source,
            })?;
        let feed = Arc::new(ChangeFeed::new_process_feed(0, items));
        let (writer, commands) = mpsc::channel(WRITE_QUEUE);
        let writer_thread = {
            let feed = Arc::clone(&feed);
            std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || run_writer(conn, commands, &feed))
                .map_err(OpenError::Thread)?
        };
        let read_connections = u32::try_from(options.read_connections.max(1)).unwrap_or(u32::MAX);
        Ok(Self {
            writer,
            writer_thread: Mutex::new(Some(writer_thread)),
            readers,
            read_slots: Arc::new(Semaphore::new(read_connections as usize)),
            read_connections,
            feed,
            journal_mode: options.journal_mode,
            owner: Mutex::new(owner),
        })
    }

    /// Runs `query` on a pooled reader connection off the async threads.
    async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        // The blocking task owns the slot: if the request is cancelled (timeout, client gone), the
        // read still counts until it has really finished, so close() waits for it.
        let slot = Arc::clone(&self.read_slots)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::unavailable("shutting down"))?;
        let readers = Arc::clone(&self.readers);
        let span = tracing::Span::current();
        let result = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            span.in_scope(|| readers.with(query))
        })
        .await?;
        Ok(result?)
    }

    async fn apply(&self, write: Write) -> Result<Outcome, StoreError> {
        self.write(|reply| WriteCommand::Write { write, reply })
            .await
    }

    /// Hands a command to the writer thread and waits for its answer.
    async fn write<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriteCommand,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(command(reply))
            .await
            .map_err(|_| StoreError::unavailable("the writer has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::unavailable("the writer has stopped"))?
    }
}

#[async_trait]
impl ItemStore for SqliteStore {
    async fn list(&self, page: Page) -> Result<Vec<Item>, StoreError> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, text, created_at FROM items WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            // LIMIT -1 means no limit in SQLite.
            let limit = page.limit.map_or(-1, i64::from);
            let before = page.before.unwrap_or(i64::MAX);
            let rows = statement.query_map(params![before, limit], item_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn get(&self, id: i64) -> Result<Option<Item>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT id, text, created_at FROM items WHERE id = ?1")?
                .query_row([id], item_from_row)
                .optional()
        })
        .await
    }

    async fn create(&self, text: ItemText) -> Result<Item, StoreError> {
        match self.apply(Write::Insert(text)).await? {
            Outcome::Inserted(item) => Ok(item),
            other => Err(other.mismatch()),
        }
    }

    async fn create_once(&self, text: ItemText, key: IdempotencyKey) -> Result<Once, StoreError> {
        match self.apply(Write::InsertOnce(text, key)).await? {
            Outcome::Once(once) => Ok(once),
            other => Err(other.mismatch()),
        }
    }

    async fn update(&self, id: i64, text: ItemText) -> Result<Option<Item>, StoreError> {
        match self.apply(Write::Update(id, text)).await? {
            Outcome::Updated(item) => Ok(item),
            other => Err(other.mismatch()),
        }
    }

    async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        match self.apply(Write::Delete(id)).await? {
            Outcome::Deleted { deleted, .. } => Ok(deleted),
            other => Err(other.mismatch()),
        }
    }

    async fn status(&self) -> DatabaseStatus {
        let read = self
            .read(|conn| conn.query_row("PRAGMA journal_mode", [], |row| row.get::<_, String>(0)))
            .await;
        let probe = tokio::time::timeout(
            PROBE_TIMEOUT,
            self.write(|reply| WriteCommand::Probe { reply }),
        )
        .await;
        let free = free_bytes(&self.readers.path);
        let write_error = match probe {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error_chain(&error)),
            Err(_) => Some(format!(
                "the writer did not answer within {}s",
                PROBE_TIMEOUT.as_secs()
            )),
        }
        .or_else(|| {
            free.filter(|&bytes| bytes < MIN_FREE_BYTES).map(|bytes| {
                format!(
                    "the database's disk is full: {} KiB free on the filesystem of {}",
                    bytes / 1024,
                    self.readers.path.display()
                )
            })
        });
        let mut details = serde_json::Map::new();
        if let Some(bytes) = free {
            details.insert("free_bytes".into(), json!(bytes));
        }
        details.insert(
            "requested_journal_mode".into(),
            json!(journal_mode_sql(self.journal_mode).to_ascii_lowercase()),
        );
        match read {
            Ok(mode) => {
                let mode = mode.to_ascii_lowercase();
                details.insert("journal_mode".into(), json!(mode));
                DatabaseStatus {
                    backend: "sqlite",
                    reachable: true,
                    writable: write_error.is_none(),
                    item_count: Some(self.feed.revision().item_count),
                    journal_mode: Some(mode),
                    error: write_error,
                    details,
                }
            }
            Err(error) => DatabaseStatus {
                backend: "sqlite",
                reachable: false,
                writable: write_error.is_none(),
                item_count: None,
                journal_mode: None,
                error: Some(error_chain(&error)),
                details,
            },
        }
    }

    async fn revision(&self) -> Result<Option<Revision>, StoreError> {
        // Only this process writes (the owner lock), so its own count is the whole truth.
        Ok(Some(self.feed.revision()))
    }

    fn changes(&self) -> &ChangeFeed {
        &self.feed
    }

    fn is_alive(&self) -> bool {
        // The writer thread holds the receiver; if it has ended, no write can ever succeed.
        !self.writer.is_closed()
    }

    async fn close(&self) {
        // Wait for in-flight reads, then refuse new ones.
        if let Ok(all) = self.read_slots.acquire_many(self.read_connections).await {
            all.forget();
            self.read_slots.close();
        }
        self.readers.close_idle();
        let (reply, done) = oneshot::channel();
        if self
            .writer
            .send(WriteCommand::Close { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
        let thread = self
            .writer_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        // Only now may another process take the database over.
        drop(
            self.owner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }
}

/// Busy and locked (another process holds the lock past the busy timeout) pass by themselves;
/// anything else is a failure.
impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Self::unavailable_because("the database is locked by another process", error)
            }
            Some(rusqlite::ErrorCode::DiskFull) => Self::OutOfSpace(error.into()),
            _ => Self::failed(error),
        }
    }
}

/// Below this much free space on the database's filesystem readiness reports it not writable:
/// a commit needs room for its journal pages, and an operator needs the warning early.
const MIN_FREE_BYTES: u64 = 1024 * 1024;

/// Free bytes (for unprivileged users) on the filesystem that holds `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stats = rustix::fs::statvfs(dir).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{Change, FeedEvent};

    fn open(dir: &Path) -> Result<SqliteStore, OpenError> {
        SqliteStore::open(&dir.join("app.db"), &options())
    }

    fn options() -> SqliteOptions {
        SqliteOptions {
            journal_mode: JournalMode::Wal,
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            read_connections: 2,
            migrate_on_start: true,
        }
    }

    #[tokio::test]
    async fn revision_changes_only_when_items_change_and_carries_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        let revision = async || store.revision().await.unwrap().unwrap();
        let at = |number, item_count| Revision { number, item_count };
        let start = revision().await.number;
        assert!(!store.delete(12345).await.unwrap());
        assert_eq!(revision().await, at(start, 0));
        let item = store
            .create(ItemText::parse("a", 100).unwrap())
            .await
            .unwrap();
        assert_eq!(revision().await, at(start + 1, 1));
        assert!(store.delete(item.id).await.unwrap());
        assert_eq!(revision().await, at(start + 2, 0));
        store.close().await;
    }

    #[tokio::test]
    async fn subscribers_get_each_commit_after_it_and_before_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        let mut subscription = store.changes().subscribe(None);
        let item = store
            .create(ItemText::parse("a", 100).unwrap())
            .await
            .unwrap();
        // The commit was published before the create returned: no waiting needed.
        let FeedEvent::Commit { changes, total, .. } = subscription.live.try_recv().unwrap() else {
            panic!("not a commit");
        };
        assert_eq!(
            (&*changes, total),
            (&[Change::Created(item.clone())][..], 1)
        );
        let edited = store
            .update(item.id, ItemText::parse("b", 100).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(store.delete(item.id).await.unwrap());
        assert!(!store.delete(item.id).await.unwrap());
        let mut rest = Vec::new();
        while let Ok(FeedEvent::Commit { changes, total, .. }) = subscription.live.try_recv() {
            rest.push((changes.to_vec(), total));
        }
        assert_eq!(
            rest,
            [
                (vec![Change::Updated(edited)], 1),
                (vec![Change::Deleted(item.id)], 0)
            ]
        );
        store.close().await;
    }

    #[tokio::test]
    async fn the_item_count_is_kept_by_the_writer_from_the_count_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        let first = store
            .create(ItemText::parse("a", 100).unwrap())
            .await
            .unwrap();
        store
            .create(ItemText::parse("b", 100).unwrap())
            .await
            .unwrap();
        assert!(store.delete(first.id).await.unwrap());
        assert!(!store.delete(first.id).await.unwrap());
        assert_eq!(store.status().await.item_count, Some(1));
        store.close().await;
        let reopened = open(dir.path()).unwrap();
        assert_eq!(reopened.status().await.item_count, Some(1));
        reopened.close().await;
    }

    #[test]
    fn busy_is_transient_and_a_full_disk_is_out_of_space() {
        let failure = |code| {
            StoreError::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert!(failure(rusqlite::ffi::SQLITE_BUSY).is_transient());
        assert!(matches!(
            failure(rusqlite::ffi::SQLITE_FULL),
            StoreError::OutOfSpace(_)
        ));
        assert!(matches!(
            failure(rusqlite::ffi::SQLITE_IOERR),
            StoreError::Failed(_)
        ));
    }

    #[tokio::test]
    async fn writes_after_close_are_refused_as_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        store.close().await;
        let error = store
            .create(ItemText::parse("late", 100).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
        assert!(matches!(
            store.list(Page::default()).await,
            Err(StoreError::Unavailable { .. })
        ));
    }

    #[tokio::test]
    async fn close_checkpoints_the_wal_into_the_main_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        store
            .create(ItemText::parse("kept", 100).unwrap())
            .await
            .unwrap();
        store.close().await;
        let wal = dir.path().join("app.db-wal");
        assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
        let conn = Connection::open(dir.path().join("app.db")).unwrap();
        let count: i64 = conn
            .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 1);
    }

    #[tokio::test]
    async fn a_second_store_on_the_same_file_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path()).unwrap();
        let error = open(dir.path()).err().unwrap();
        assert!(matches!(error, OpenError::InUse { .. }), "{error}");
        first.close().await;
        let second = open(dir.path()).unwrap();
        second.close().await;
    }

    #[test]
    fn a_newer_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("app.db")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let error = open(dir.path()).err().unwrap();
        assert!(
            matches!(error, OpenError::TooNew { found: 99, .. }),
            "{error}"
        );
    }

    #[test]
    fn an_incompatible_items_table_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("app.db")).unwrap();
        conn.execute_batch("CREATE TABLE items (name TEXT)")
            .unwrap();
        drop(conn);
        let error = open(dir.path()).err().unwrap();
        assert!(matches!(error, OpenError::Unusable { .. }), "{error}");
    }

    #[test]
    fn a_table_with_a_trigger_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("app.db")).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER purge AFTER INSERT ON items BEGIN DELETE FROM items; END;",
        )
        .unwrap();
        drop(conn);
        let error = open(dir.path()).err().unwrap();
        assert!(error.to_string().contains("trigger (purge)"), "{error}");
    }

    #[tokio::test]
    async fn odd_rows_written_by_other_tools_are_read_not_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        let conn = Connection::open(dir.path().join("app.db")).unwrap();
        conn.execute(
            "INSERT INTO items (text, created_at) VALUES (?1, 7)",
            [&b"caf\xe9"[..]],
        )
        .unwrap();
        let items = store.list(Page::default()).await.unwrap();
        assert_eq!(items[0].text, "caf\u{fffd}");
        assert_eq!(items[0].created_at, "7");
        store.close().await;
    }
}
