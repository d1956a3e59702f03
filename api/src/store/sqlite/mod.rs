//! SQLite backend: one writer thread that commits in batches, and a small pool of readers.
//!
//! Every write goes through the writer, so writers never race for the lock ("database is
//! locked" cannot happen between our own requests). The writer drains whatever is queued and
//! commits it in one transaction: one fsync serves many requests (group commit), and a request is
//! answered only after its transaction committed. Readers use their own connections; in WAL mode
//! they read the last committed snapshot and never wait for the writer.

pub mod backup;
pub mod transfer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::{Semaphore, mpsc, oneshot};

use serde_json::json;

use super::changes::{Change, ChangeFeed, Position};
use super::{
    DatabaseStatus, Item, ItemStore, KEY_RETENTION, Once, Page, Revision, StoreError, error_chain,
};
use crate::domain::{IdempotencyKey, ItemText, now_timestamp};

/// Schema migrations, applied in order; `PRAGMA user_version` counts the applied ones.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/sqlite/0001_items.sql"),
    include_str!("../../../migrations/sqlite/0002_idempotency_keys.sql"),
];
/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// A recorded schema version (`PRAGMA user_version`) this build can work with: not negative and
/// not newer than `SCHEMA_VERSION`. Serving and restoring refuse anything else.
pub fn known_schema_version(found: i64) -> Option<usize> {
    usize::try_from(found)
        .ok()
        .filter(|&version| version <= SCHEMA_VERSION)
}

/// Checks that the `items` table is one this service can serve and keep correct: the three
/// columns with their types (`id` an `INTEGER PRIMARY KEY AUTOINCREMENT`, so ids are never
/// reused), no other column a new row would have to fill, and nothing that would refuse or undo
/// a write behind the service's back (triggers, CHECK or UNIQUE constraints, foreign keys).
/// The seed's table passes unchanged. Returns what is wrong, in words.
pub fn check_items_table(conn: &Connection) -> Result<(), String> {
    let read = |error: rusqlite::Error| error.to_string();
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'items'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(read)?;
    let Some(sql) = sql else {
        return Err("it has no items table".into());
    };
    let mut columns = conn.prepare("PRAGMA table_info(items)").map_err(read)?;
    let columns: Vec<(String, String, bool, Option<String>, i64)> = columns
        .query_map([], |row| {
            Ok((
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
            ))
        })
        .map_err(read)?
        .collect::<Result<_, _>>()
        .map_err(read)?;
    let expect = |name: &str, kind: &str, required: bool| -> Result<(), String> {
        match columns.iter().find(|column| column.0 == name) {
            None => Err(format!("items has no column {name}")),
            Some((_, found, _, _, _)) if !found.eq_ignore_ascii_case(kind) => {
                Err(format!("items.{name} is {found:?}, not {kind}"))
            }
            Some((_, _, not_null, _, _)) if required && !not_null => {
                Err(format!("items.{name} is not NOT NULL"))
            }
            Some(_) => Ok(()),
        }
    };
    expect("id", "INTEGER", false)?;
    expect("text", "TEXT", true)?;
    expect("created_at", "TEXT", true)?;
    for (name, _, not_null, default, key) in &columns {
        let ours = ["id", "text", "created_at"].contains(&name.as_str());
        if (name == "id") != (*key == 1) || (!ours && *key > 0) {
            return Err("items.id must be the table's only primary key".into());
        }
        if !ours && *not_null && default.is_none() {
            return Err(format!(
                "items has a column {name} that is NOT NULL without a default: new items could \
                 not be stored"
            ));
        }
    }
    let words: Vec<String> = sql
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .map(str::to_ascii_uppercase)
        .collect();
    if !words.iter().any(|word| word == "AUTOINCREMENT") {
        return Err(
            "items.id is not AUTOINCREMENT: ids of deleted items could be handed out again".into(),
        );
    }
    if let Some(word) = words
        .iter()
        .find(|word| ["CHECK", "REFERENCES", "UNIQUE"].contains(&word.as_str()))
    {
        return Err(format!(
            "items has a {word} constraint that could refuse new items"
        ));
    }
    let trigger: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(read)?;
    if let Some(trigger) = trigger {
        return Err(format!(
            "it has a trigger ({trigger}) that would run behind the service's back"
        ));
    }
    let unique: Option<String> = conn
        .query_row(
            "SELECT name FROM pragma_index_list('items') WHERE \"unique\" AND origin <> 'pk' LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(read)?;
    if let Some(index) = unique {
        return Err(format!(
            "items has a UNIQUE index ({index}) that could refuse new items"
        ));
    }
    Ok(())
}

/// Upper bound on writes committed together, so one transaction stays short.
const MAX_BATCH: usize = 512;
/// Writes waiting for the writer; past this, handlers wait (backpressure) instead of queueing more.
const WRITE_QUEUE: usize = 4096;
/// How long a readiness probe waits for the writer before calling the database not writable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JournalMode {
    /// Write-ahead log: readers never block on the writer. Needs a local filesystem.
    Wal,
    /// Rollback journal: works on network shares (Azure Files/SMB) where WAL's shared memory does not.
    Delete,
}

impl JournalMode {
    fn as_sql(self) -> &'static str {
        match self {
            Self::Wal => "WAL",
            Self::Delete => "DELETE",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged write survives a power loss.
    Full,
    /// In WAL mode, fsync only at checkpoints: survives a crash of the process, but the last
    /// commits may be lost on power loss. Faster on slow disks.
    Normal,
}

impl Synchronous {
    fn as_sql(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub journal_mode: JournalMode,
    pub synchronous: Synchronous,
    pub busy_timeout: Duration,
    pub read_connections: usize,
    /// Apply missing migrations when opening; otherwise refuse a file whose schema is behind.
    pub migrate_on_start: bool,
}

/// Why the database could not be opened. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the database directory {path}: {cause}")]
    CreateDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot open the database {path}: {cause}")]
    Open {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error(
        "the database {path} is read-only: the service needs to write to it and to its directory"
    )]
    ReadOnly { path: PathBuf },
    #[error(
        "the database {path} has schema version {found}, newer than this build knows ({known}); \
         run a newer release or restore a backup"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error(
        "the database {path} has schema version {found}, this build needs {known}; run \
         `items-api migrate` first, or set MIGRATE_ON_START=true"
    )]
    Behind {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    #[error("the database {path} cannot be served: {reason}")]
    Unusable { path: PathBuf, reason: String },
    #[error("cannot prepare the database {path}: {cause}")]
    Setup {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error("cannot start the database writer thread: {0}")]
    Thread(std::io::Error),
    #[error(
        "the database {path} is in use by another process (another items-api serving it, or a \
         restore); stop that first (lock file: {lock})"
    )]
    InUse { path: PathBuf, lock: String },
    #[error("cannot create the lock file {path}: {cause}")]
    LockFile {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// The file whose OS lock marks a database as served by one process.
pub fn owner_lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Claims the database for this process: a second service, or a restore, on the same file is
/// refused instead of silently sharing it (each would cache what the other changed). An OS lock
/// (flock) on `<database>.lock`, released when the file is closed or the process dies, even on
/// SIGKILL. Where the filesystem cannot lock, the claim is skipped with a warning.
pub fn claim_owner_lock(database: &Path) -> Result<Option<std::fs::File>, OpenError> {
    let lock_path = owner_lock_path(database);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|cause| OpenError::LockFile {
            path: lock_path.clone(),
            cause,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::InUse {
            path: database.to_path_buf(),
            lock: lock_path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(error)) => {
            tracing::warn!(%error, lock = %lock_path.display(), "cannot lock the database owner file; continuing without");
            Ok(None)
        }
    }
}

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
            json!(self.journal_mode.as_sql().to_ascii_lowercase()),
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

pub(super) fn item_from_row(row: &Row<'_>) -> rusqlite::Result<Item> {
    Ok(Item {
        id: row.get(0)?,
        text: lossless_text(row, 1)?,
        created_at: lossless_text(row, 2)?,
    })
}

/// Reads a TEXT column without failing the whole list on one odd row: SQLite does not check
/// UTF-8, and files written by other tools may hold blobs or numbers in text columns.
fn lossless_text(row: &Row<'_>, index: usize) -> rusqlite::Result<String> {
    use rusqlite::types::ValueRef;
    Ok(match row.get_ref(index)? {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            String::from_utf8_lossy(bytes).into_owned()
        }
        ValueRef::Integer(number) => number.to_string(),
        ValueRef::Real(number) => number.to_string(),
        ValueRef::Null => String::new(),
    })
}

fn open_writer(path: &Path, options: &SqliteOptions) -> Result<Connection, OpenError> {
    let path = &path.to_path_buf();
    let setup = |source| OpenError::Setup {
        path: path.clone(),
        cause: source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|source| OpenError::Open {
        path: path.clone(),
        cause: source,
    })?;
    conn.busy_timeout(options.busy_timeout).map_err(setup)?;
    // SQLite silently falls back to read-only when the file is not writable; a write shows it.
    let read_only = || OpenError::ReadOnly { path: path.clone() };
    if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
        return Err(read_only());
    }
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
        .map_err(|source| match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ReadOnly) => read_only(),
            _ => OpenError::Open {
                path: path.clone(),
                cause: source,
            },
        })?;
    let requested = options.journal_mode.as_sql();
    let mode: String = conn
        .query_row(&format!("PRAGMA journal_mode = {requested}"), [], |row| {
            row.get(0)
        })
        .map_err(setup)?;
    if !mode.eq_ignore_ascii_case(requested) {
        tracing::warn!(requested, actual = %mode, "the filesystem refused the requested journal mode");
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};",
        options.synchronous.as_sql()
    ))
    .map_err(setup)?;
    Ok(conn)
}

/// The database claimed by this process, its writing connection with the schema brought up to
/// date (or checked, without `migrate`), and the schema version it had before.
type Claimed = (PathBuf, Option<std::fs::File>, Connection, usize);

pub(super) fn open_for_writing(
    path: &Path,
    options: &SqliteOptions,
    migrate: bool,
) -> Result<Claimed, OpenError> {
    let path = path.to_path_buf();
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
            path: dir.to_path_buf(),
            cause: source,
        })?;
    }
    let owner = claim_owner_lock(&path)?;
    let mut conn = open_writer(&path, options)?;
    let before = schema_version(&conn, &path)?;
    if migrate {
        migrate_schema(&mut conn, &path, before)?;
    } else if before < SCHEMA_VERSION {
        return Err(OpenError::Behind {
            path,
            found: before,
            known: SCHEMA_VERSION,
        });
    }
    check_items_table(&conn).map_err(|reason| OpenError::Unusable {
        path: path.clone(),
        reason,
    })?;
    Ok((path, owner, conn, before))
}

/// `items-api migrate` on a SQLite file: the schema versions before and after.
pub fn migrate_file(path: &Path, options: &SqliteOptions) -> Result<(usize, usize), OpenError> {
    let (_, _owner, _, before) = open_for_writing(path, options, true)?;
    Ok((before, before.max(SCHEMA_VERSION)))
}

fn schema_version(conn: &Connection, path: &Path) -> Result<usize, OpenError> {
    let applied: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| OpenError::Setup {
            path: path.to_path_buf(),
            cause: source,
        })?;
    known_schema_version(applied).ok_or(OpenError::TooNew {
        path: path.to_path_buf(),
        found: applied,
        known: SCHEMA_VERSION,
    })
}

fn migrate_schema(conn: &mut Connection, path: &Path, applied: usize) -> Result<(), OpenError> {
    let setup = |source| OpenError::Setup {
        path: path.to_path_buf(),
        cause: source,
    };
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(setup)?;
        tx.execute_batch(sql).map_err(setup)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)
            .map_err(setup)?;
        tx.commit().map_err(setup)?;
        tracing::info!(version = index + 1, "applied database migration");
    }
    Ok(())
}

/// Reader connections, opened on demand and kept for reuse.
struct ReaderPool {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(self.busy_timeout)?;
        // Readers must never write, whatever a future query says.
        conn.execute_batch("PRAGMA query_only = ON;")?;
        Ok(conn)
    }

    fn with<T>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = query(&conn);
        self.give_back(conn);
        result
    }

    fn give_back(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }

    fn close_idle(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum WriteCommand {
    Write {
        write: Write,
        reply: Reply<Outcome>,
    },
    /// Takes and releases the write lock: proves the database is writable right now.
    Probe {
        reply: Reply<()>,
    },
    /// Checkpoints and stops the writer after the writes queued before it.
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// One change a client asked for.
enum Write {
    Insert(ItemText),
    InsertOnce(ItemText, IdempotencyKey),
    Update(i64, ItemText),
    Delete(i64),
}

/// What a write did, once it ran.
#[derive(Debug)]
enum Outcome {
    Inserted(Item),
    Once(Once),
    Updated(Option<Item>),
    Deleted { id: i64, deleted: bool },
}

impl Outcome {
    /// What the write changed, or `None` when it changed no item.
    fn change(&self) -> Option<Change> {
        match self {
            Self::Inserted(item) | Self::Once(Once::Created(item)) => {
                Some(Change::Created(item.clone()))
            }
            Self::Updated(Some(item)) => Some(Change::Updated(item.clone())),
            Self::Deleted { id, deleted: true } => Some(Change::Deleted(*id)),
            _ => None,
        }
    }

    fn changed_an_item(&self) -> bool {
        matches!(
            self,
            Self::Inserted(_)
                | Self::Once(Once::Created(_))
                | Self::Updated(Some(_))
                | Self::Deleted { deleted: true, .. }
        )
    }

    /// How the write changed the item count.
    fn count_change(&self) -> i64 {
        match self {
            Self::Inserted(_) | Self::Once(Once::Created(_)) => 1,
            Self::Deleted { deleted: true, .. } => -1,
            _ => 0,
        }
    }

    /// The error for a caller that got an outcome of another kind of write than it sent.
    fn mismatch(self) -> StoreError {
        StoreError::failed(format!(
            "the writer answered {self:?} to another kind of write"
        ))
    }
}

/// One write inside a batch, answered once the batch's fate is known.
struct Applied {
    reply: Reply<Outcome>,
    result: rusqlite::Result<Outcome>,
}

impl Applied {
    fn changed_an_item(&self) -> bool {
        self.result.as_ref().is_ok_and(Outcome::changed_an_item)
    }

    /// Answers with the write's own result: its transaction committed.
    fn answer(self) {
        let _ = self.reply.send(self.result.map_err(StoreError::from));
    }

    /// Answers with the error that rolled its transaction back.
    fn answer_rolled_back(self, error: &rusqlite::Error) {
        let _ = self.reply.send(Err(commit_error(error)));
    }
}

/// A failed commit, for the writes in it. An I/O error during COMMIT leaves open whether the
/// transaction reached the disk (SQLite settles it when the database is next opened).
fn commit_error(error: &rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::SystemIoFailure) => {
            StoreError::outcome_unknown("the commit failed with an I/O error", copy_error(error))
        }
        _ => copy_error(error).into(),
    }
}

fn run_writer(mut conn: Connection, mut commands: mpsc::Receiver<WriteCommand>, feed: &ChangeFeed) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut keys = KeySweep::default();
    while let Some(first) = commands.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if let Some(closed) = apply_batch(&mut conn, &mut batch, feed, &mut keys) {
            commands.close();
            // Writes that raced with shutdown are refused rather than left unanswered.
            while let Ok(late) = commands.try_recv() {
                refuse(late);
            }
            checkpoint(&conn);
            drop(conn);
            let _ = closed.send(());
            return;
        }
    }
    checkpoint(&conn);
}

/// Removes idempotency keys past `KEY_RETENTION`, at most once a minute, inside a write
/// transaction that runs anyway.
#[derive(Default)]
struct KeySweep {
    last: Option<std::time::Instant>,
}

impl KeySweep {
    const EVERY: Duration = Duration::from_secs(60);

    fn due(&mut self) -> bool {
        let due = self.last.is_none_or(|last| last.elapsed() >= Self::EVERY);
        if due {
            self.last = Some(std::time::Instant::now());
        }
        due
    }
}

/// Applies queued commands; returns the close request if one was among them.
fn apply_batch(
    conn: &mut Connection,
    batch: &mut Vec<WriteCommand>,
    feed: &ChangeFeed,
    keys: &mut KeySweep,
) -> Option<oneshot::Sender<()>> {
    let mut writes = Vec::with_capacity(batch.len());
    let mut probes = Vec::new();
    let mut close = None;
    for command in batch.drain(..) {
        match command {
            WriteCommand::Write { write, reply } => writes.push((write, reply)),
            WriteCommand::Probe { reply } => probes.push(reply),
            WriteCommand::Close { reply } => close = Some(reply),
        }
    }
    if !writes.is_empty() {
        commit_writes(conn, writes, feed, keys);
    }
    for reply in probes {
        let result = conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;");
        let _ = reply.send(result.map_err(StoreError::from));
    }
    close
}

/// Runs the writes in one transaction and answers each only after the commit.
fn commit_writes(
    conn: &mut Connection,
    writes: Vec<(Write, Reply<Outcome>)>,
    feed: &ChangeFeed,
    keys: &mut KeySweep,
) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(error) => {
            tracing::error!(%error, "cannot begin a write transaction");
            for (_, reply) in writes {
                let _ = reply.send(Err(copy_error(&error).into()));
            }
            return;
        }
    };
    let mut applied = Vec::with_capacity(writes.len());
    let mut aborted: Option<rusqlite::Error> = None;
    for (write, reply) in writes {
        if let Some(error) = &aborted {
            let _ = reply.send(Err(copy_error(error).into()));
            continue;
        }
        let result = apply(&tx, write);
        // Some errors (disk full, I/O) roll back the whole transaction; nothing after them may
        // run outside it, or a write would commit while its client is told it failed.
        if let Err(error) = &result
            && tx.is_autocommit()
        {
            aborted = Some(copy_error(error));
        }
        applied.push(Applied { reply, result });
    }
    if aborted.is_none() && keys.due() {
        // Best effort: an old key left for the next sweep harms nobody.
        if let Err(error) = forget_old_keys(&tx) {
            tracing::warn!(%error, "cannot remove old idempotency keys");
        }
    }
    let changed = applied.iter().any(Applied::changed_an_item);
    let committed = match aborted {
        Some(error) => Err(error),
        None => tx.commit(),
    };
    match committed {
        Ok(()) => {
            // Recorded before any write is answered: see `ItemStore::revision`.
            if changed {
                record_commit(feed, &applied);
            }
            applied.into_iter().for_each(Applied::answer);
        }
        Err(error) => {
            tracing::error!(%error, writes = applied.len(), "write transaction failed; nothing was stored");
            for outcome in applied {
                outcome.answer_rolled_back(&error);
            }
        }
    }
}

fn apply(tx: &Connection, write: Write) -> rusqlite::Result<Outcome> {
    match write {
        Write::Insert(text) => insert(tx, text).map(Outcome::Inserted),
        Write::InsertOnce(text, key) => insert_once(tx, text, &key).map(Outcome::Once),
        Write::Update(id, text) => update(tx, id, text).map(Outcome::Updated),
        Write::Delete(id) => delete(tx, id).map(|deleted| Outcome::Deleted { id, deleted }),
    }
}

/// Moves the feed to the next revision, telling subscribers what changed if there are any.
fn record_commit(feed: &ChangeFeed, applied: &[Applied]) {
    let Revision { number, item_count } = feed.revision();
    let outcomes = || {
        applied
            .iter()
            .filter_map(|write| write.result.as_ref().ok())
    };
    let total = item_count + outcomes().map(Outcome::count_change).sum::<i64>();
    if feed.has_subscribers() {
        let changes = outcomes().filter_map(Outcome::change).collect();
        feed.publish(number + 1, changes, total);
    } else {
        let position = Position {
            revision: number + 1,
            ..feed.position()
        };
        feed.skip_to(position, total, "nobody was listening");
    }
}

fn insert(tx: &Connection, text: ItemText) -> rusqlite::Result<Item> {
    let created_at = now_timestamp();
    let id = tx
        .prepare_cached("INSERT INTO items (text, created_at) VALUES (?1, ?2) RETURNING id")?
        .query_row(params![text.as_str(), created_at], |row| row.get(0))?;
    Ok(Item {
        id,
        text: text.into_string(),
        created_at,
    })
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Inserts unless `key` was used within `KEY_RETENTION`; records the key with what it created.
fn insert_once(tx: &Connection, text: ItemText, key: &IdempotencyKey) -> rusqlite::Result<Once> {
    let kept_since = unix_now() - KEY_RETENTION.as_secs() as i64;
    let earlier = tx
        .prepare_cached(
            "SELECT fingerprint, item_id, item_text, item_created_at FROM idempotency_keys
             WHERE key = ?1 AND stored_at >= ?2",
        )?
        .query_row(params![key.as_str(), kept_since], |row| {
            Ok((
                row.get::<_, String>(0)?,
                Item {
                    id: row.get(1)?,
                    text: row.get(2)?,
                    created_at: row.get(3)?,
                },
            ))
        })
        .optional()?;
    if let Some((fingerprint, item)) = earlier {
        return Ok(if fingerprint == key.fingerprint() {
            Once::Replayed(item)
        } else {
            Once::KeyReused
        });
    }
    let item = insert(tx, text)?;
    // REPLACE: a key older than the retention may still be there until the next sweep.
    tx.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys
           (key, fingerprint, item_id, item_text, item_created_at, stored_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        key.as_str(),
        key.fingerprint(),
        item.id,
        item.text,
        item.created_at,
        unix_now()
    ])?;
    Ok(Once::Created(item))
}

fn forget_old_keys(tx: &Connection) -> rusqlite::Result<usize> {
    let kept_since = unix_now() - KEY_RETENTION.as_secs() as i64;
    tx.prepare_cached("DELETE FROM idempotency_keys WHERE stored_at < ?1")?
        .execute([kept_since])
}

fn update(tx: &Connection, id: i64, text: ItemText) -> rusqlite::Result<Option<Item>> {
    tx.prepare_cached("UPDATE items SET text = ?1 WHERE id = ?2 RETURNING id, text, created_at")?
        .query_row(params![text.as_str(), id], item_from_row)
        .optional()
}

fn delete(tx: &Connection, id: i64) -> rusqlite::Result<bool> {
    let deleted = tx
        .prepare_cached("DELETE FROM items WHERE id = ?1")?
        .execute([id])?;
    Ok(deleted > 0)
}

/// Answers a command that arrived after shutdown began.
fn refuse(command: WriteCommand) {
    let closed = || StoreError::unavailable("shutting down");
    match command {
        WriteCommand::Write { reply, .. } => {
            let _ = reply.send(Err(closed()));
        }
        WriteCommand::Probe { reply } => {
            let _ = reply.send(Err(closed()));
        }
        WriteCommand::Close { reply } => {
            let _ = reply.send(());
        }
    }
}

/// `rusqlite::Error` is not `Clone`; a batch failure is reported to every request in it.
fn copy_error(error: &rusqlite::Error) -> rusqlite::Error {
    match error {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// Folds the WAL back into the database file so a stopped service leaves one tidy file.
fn checkpoint(conn: &Connection) {
    let mode: rusqlite::Result<String> =
        conn.query_row("PRAGMA journal_mode", [], |row| row.get(0));
    if !matches!(mode.as_deref(), Ok(mode) if mode.eq_ignore_ascii_case("wal")) {
        return;
    }
    // TRUNCATE resets SQLite's frame counters, so the WAL's size is measured beforehand.
    let wal_bytes = conn
        .path()
        .and_then(|path| std::fs::metadata(format!("{path}-wal")).ok())
        .map_or(0, |metadata| metadata.len());
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    }) {
        Ok(0) => tracing::info!(wal_bytes, "WAL checkpointed"),
        Ok(_) => {
            tracing::warn!("WAL checkpoint could not complete; SQLite finishes it on next open")
        }
        Err(error) => {
            tracing::warn!(%error, "WAL checkpoint failed; SQLite finishes it on next open")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::changes::FeedEvent;

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
