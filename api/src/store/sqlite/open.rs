//! Opening a database file for writing: the directory, the owner lock that keeps a second process
//! (or a restore) off a file in use, the connection's pragmas, and the schema brought up to date.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::errors::OpenError;
use super::schema::{SCHEMA_VERSION, check_items_table, migrate_schema, schema_version};
use super::{JournalMode, SqliteOptions, Synchronous};

pub(super) fn journal_mode_sql(mode: JournalMode) -> &'static str {
    match mode {
        JournalMode::Wal => "WAL",
        JournalMode::Delete => "DELETE",
    }
}

pub(super) fn synchronous_sql(synchronous: Synchronous) -> &'static str {
    match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    }
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

pub(super) fn open_writer(path: &Path, options: &SqliteOptions) -> Result<Connection, OpenError> {
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
    let requested = journal_mode_sql(options.journal_mode);
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
        synchronous_sql(options.synchronous)
    ))
    .map_err(setup)?;
    Ok(conn)
}

/// The database claimed by this process, its writing connection with the schema brought up to
/// date (or checked, without `migrate`), and the schema version it had before.
pub(super) type Claimed = (PathBuf, Option<std::fs::File>, Connection, usize);

pub(crate) fn open_for_writing(
    path: &Path,
    options: &SqliteOptions,
    migrate: bool,
) -> Result<Claimed, OpenError> {
    let path = path.to_path_buf();
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        // The nearest part of the path that exists must be a directory for the rest to be made.
        if let Some(file) = dir
            .ancestors()
            .find(|part| part.exists())
            .filter(|part| !part.is_dir())
        {
            return Err(OpenError::UnderAFile {
                file: file.to_path_buf(),
                path: path.clone(),
            });
        }
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
