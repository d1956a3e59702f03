//! Online backup and offline restore of the SQLite database file.
//!
//! Backup uses `VACUUM INTO`, which reads one consistent snapshot while the service keeps
//! serving (WAL readers do not block the writer), writes a compact copy to a temporary name,
//! checks it, and only then renames it into place: a reader never sees a half-written backup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a backup or restore copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    pub items: i64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("there is no database at {0}")]
    Missing(PathBuf),
    #[error("{0} already exists; choose a new file name or remove it first")]
    Exists(PathBuf),
    #[error("{0} exists: another backup to this name may be running; if none is, remove the file")]
    PartialExists(PathBuf),
    #[error("{0}")]
    Copy(String),
    #[error(transparent)]
    InUse(#[from] super::OpenError),
    #[error("{path} is not a usable items database: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{action} {path}: {cause}")]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{action} {path}: {cause}")]
    Sqlite {
        action: &'static str,
        path: PathBuf,
        cause: rusqlite::Error,
    },
}

/// Writes a consistent copy of `database` to `destination`, which must not exist yet.
pub fn backup(database: &Path, destination: &Path) -> Result<CopyReport, BackupError> {
    if !database.is_file() {
        return Err(BackupError::Missing(database.to_path_buf()));
    }
    write_new_file(destination, |partial| {
        // Read-write because a read-only connection cannot open a WAL database whose -shm file
        // is missing; this connection only ever runs VACUUM INTO, which reads the source.
        let source = open_existing(database, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        source
            .execute("VACUUM INTO ?1", [partial.to_string_lossy()])
            .map(drop)
            .map_err(sqlite("cannot write a backup to", partial))
    })
}

/// Creates the items database `destination` with `write`, which fills a temporary file beside
/// it. The result is checked, flushed, and only then put in place, so a reader never sees a
/// half-written file and an existing file is never replaced.
pub fn write_new_file(
    destination: &Path,
    write: impl FnOnce(&Path) -> Result<(), BackupError>,
) -> Result<CopyReport, BackupError> {
    if destination.exists() {
        return Err(BackupError::Exists(destination.to_path_buf()));
    }
    if let Some(dir) = destination
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| BackupError::Io {
            action: "cannot create the directory",
            path: dir.to_path_buf(),
            cause: source,
        })?;
    }
    let partial = with_suffix(destination, ".partial");
    // Another backup to the same name may be running; its file is not ours to delete.
    if partial.exists() {
        return Err(BackupError::PartialExists(partial));
    }
    let written = write(&partial).and_then(|()| verify(&partial));
    let report = match written {
        Ok(report) => report,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    sync_file(&partial)?;
    // A hard link, unlike rename, fails if the destination appeared meanwhile: never clobber.
    let published = std::fs::hard_link(&partial, destination);
    let _ = std::fs::remove_file(&partial);
    published.map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => BackupError::Exists(destination.to_path_buf()),
        _ => BackupError::Io {
            action: "cannot move the finished backup to",
            path: destination.to_path_buf(),
            cause: source,
        },
    })?;
    sync_parent(destination)?;
    Ok(report)
}

/// Replaces the content of `database` with `backup_file`: all or nothing.
///
/// The backup is checked strictly first (integrity, schema version, and an `items` table the
/// service can serve: see `check_items_table`); then a copy of it is made beside the database with
/// the id sequence moved past every id the database ever handed out, and checked again. Only then
/// is the database touched, in one step: SQLite's backup API copies the staged file in within one
/// write transaction, so a failure at any point leaves the database as it was. Refused while a
/// service holds the database (it caches what it last read).
pub fn restore(backup_file: &Path, database: &Path) -> Result<CopyReport, BackupError> {
    if !backup_file.is_file() {
        return Err(BackupError::Missing(backup_file.to_path_buf()));
    }
    verify(backup_file)?;
    if let Some(dir) = database.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| BackupError::Io {
            action: "cannot create the directory",
            path: dir.to_path_buf(),
            cause: source,
        })?;
    }
    // Refused while a service (or another restore) holds the database: the service caches what
    // it read and would keep handing out what the restore just replaced.
    let _owner = super::claim_owner_lock(database)?;
    // Ids must never be handed out twice, even after going back to an older backup.
    let highest_id = if database.exists() {
        let live = open_existing(database, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        highest_id_ever(&live).map_err(sqlite("cannot read", database))?
    } else {
        0
    };
    // A staging file of an earlier restore that failed; we hold the owner lock, so it is ours.
    let staged = with_suffix(database, ".restoring");
    let _ = std::fs::remove_file(&staged);
    let restored = stage(backup_file, &staged, highest_id).and_then(|()| {
        let mut target = Connection::open(database).map_err(sqlite("cannot open", database))?;
        target
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(sqlite("cannot open", database))?;
        target
            .restore(
                rusqlite::MAIN_DB,
                &staged,
                None::<fn(rusqlite::backup::Progress)>,
            )
            .map_err(sqlite("cannot restore into", database))?;
        // Fold the WAL in, so the file holds everything (and its size means something).
        target
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(sqlite("cannot checkpoint", database))
    });
    let _ = std::fs::remove_file(&staged);
    restored?;
    verify(database)
}

/// Writes `staged`: the backup's content with the id sequence past `highest_id`, checked.
fn stage(backup_file: &Path, staged: &Path, highest_id: i64) -> Result<(), BackupError> {
    let mut copy = Connection::open(staged).map_err(sqlite("cannot create", staged))?;
    copy.restore(
        rusqlite::MAIN_DB,
        backup_file,
        None::<fn(rusqlite::backup::Progress)>,
    )
    .map_err(sqlite("cannot copy the backup to", staged))?;
    raise_id_sequence(&copy, highest_id)
        .map_err(sqlite("cannot keep the id sequence of", staged))?;
    drop(copy);
    verify(staged).map(drop)
}

/// Makes the next id handed out higher than `highest_id` (ids are never reused).
pub(super) fn raise_id_sequence(conn: &Connection, highest_id: i64) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "UPDATE sqlite_sequence SET seq = max(seq, {highest_id}) WHERE name = 'items';
         INSERT INTO sqlite_sequence (name, seq)
           SELECT 'items', {highest_id} WHERE {highest_id} > 0
           AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'items');"
    ))
}

/// The highest id the `items` table ever handed out (0 for a new database).
pub(super) fn highest_id_ever(conn: &Connection) -> rusqlite::Result<i64> {
    let has_table = |name: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |row| row.get::<_, i64>(0),
        )
        .map(|count| count > 0)
    };
    let mut highest = 0;
    if has_table("sqlite_sequence")? {
        let sequence: Option<i64> = conn.query_row(
            "SELECT max(seq) FROM sqlite_sequence WHERE name = 'items'",
            [],
            |row| row.get(0),
        )?;
        highest = sequence.unwrap_or(0);
    }
    if has_table("items")? {
        let max_id: Option<i64> =
            conn.query_row("SELECT max(id) FROM items", [], |row| row.get(0))?;
        highest = highest.max(max_id.unwrap_or(0));
    }
    Ok(highest)
}

/// Checks that `path` is an intact items database and reports its size.
fn verify(path: &Path) -> Result<CopyReport, BackupError> {
    let invalid = |reason: String| BackupError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let conn = open_existing(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(|error| invalid(error.to_string()))?;
    if integrity != "ok" {
        return Err(invalid(format!("integrity check failed: {integrity}")));
    }
    super::check_items_table(&conn).map_err(invalid)?;
    let items: i64 = conn
        .query_row("SELECT count(*) FROM items", [], |row| row.get(0))
        .map_err(|error| invalid(error.to_string()))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|error| invalid(error.to_string()))?;
    if super::known_schema_version(version).is_none() {
        return Err(invalid(format!(
            "its schema version {version} is newer than this build knows ({})",
            super::SCHEMA_VERSION
        )));
    }
    drop(conn);
    let bytes = std::fs::metadata(path)
        .map_err(|source| BackupError::Io {
            action: "cannot read",
            path: path.to_path_buf(),
            cause: source,
        })?
        .len();
    Ok(CopyReport { items, bytes })
}

fn open_existing(path: &Path, mode: OpenFlags) -> Result<Connection, BackupError> {
    let conn = Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sqlite("cannot open", path))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sqlite("cannot open", path))?;
    Ok(conn)
}

fn sqlite(action: &'static str, path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Sqlite {
        action,
        path,
        cause: source,
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Makes a new directory entry durable (the file's own data is synced separately).
fn sync_parent(path: &Path) -> Result<(), BackupError> {
    let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) else {
        return Ok(());
    };
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| BackupError::Io {
            action: "cannot flush the directory",
            path: dir.to_path_buf(),
            cause: source,
        })
}

fn sync_file(path: &Path) -> Result<(), BackupError> {
    std::fs::File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(|source| BackupError::Io {
            action: "cannot flush",
            path: path.to_path_buf(),
            cause: source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database_with(dir: &Path, texts: &[&str]) -> PathBuf {
        let path = dir.join("app.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("../../../migrations/sqlite/0001_items.sql"))
            .unwrap();
        for text in texts {
            conn.execute(
                "INSERT INTO items (text, created_at) VALUES (?1, 'now')",
                [text],
            )
            .unwrap();
        }
        path
    }

    #[test]
    fn backup_copies_every_item_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let database = database_with(dir.path(), &["a", "b"]);
        let target = dir.path().join("backups/one.db");
        let report = backup(&database, &target).unwrap();
        assert_eq!(report.items, 2);
        assert!(!with_suffix(&target, ".partial").exists());
        assert!(matches!(
            backup(&database, &target),
            Err(BackupError::Exists(_))
        ));
    }

    #[test]
    fn backup_leaves_a_partial_file_of_another_backup_alone() {
        let dir = tempfile::tempdir().unwrap();
        let database = database_with(dir.path(), &["a"]);
        let target = dir.path().join("one.db");
        let partial = with_suffix(&target, ".partial");
        std::fs::write(&partial, b"someone else's").unwrap();
        assert!(matches!(
            backup(&database, &target),
            Err(BackupError::PartialExists(_))
        ));
        assert_eq!(std::fs::read(&partial).unwrap(), b"someone else's");
        assert!(!target.exists());
    }

    #[test]
    fn backup_of_a_missing_database_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.db");
        let error = backup(&missing, &dir.path().join("out.db")).unwrap_err();
        assert!(matches!(error, BackupError::Missing(_)));
        assert!(!missing.exists());
    }

    #[test]
    fn restore_replaces_the_database_content() {
        let dir = tempfile::tempdir().unwrap();
        let source_dir = dir.path().join("source");
        std::fs::create_dir(&source_dir).unwrap();
        let saved = database_with(&source_dir, &["x", "y", "z"]);
        let live = database_with(dir.path(), &["old"]);
        let report = restore(&saved, &live).unwrap();
        assert_eq!(report.items, 3);
    }

    #[test]
    fn restore_never_lets_an_id_be_handed_out_twice() {
        let dir = tempfile::tempdir().unwrap();
        let live = database_with(dir.path(), &["a", "b"]);
        let saved = dir.path().join("saved.db");
        backup(&live, &saved).unwrap();
        let conn = Connection::open(&live).unwrap();
        conn.execute(
            "INSERT INTO items (text, created_at) VALUES ('c', 'now')",
            [],
        )
        .unwrap();
        drop(conn);

        restore(&saved, &live).unwrap();
        let conn = Connection::open(&live).unwrap();
        conn.execute(
            "INSERT INTO items (text, created_at) VALUES ('d', 'now')",
            [],
        )
        .unwrap();
        let newest: i64 = conn
            .query_row("SELECT max(id) FROM items", [], |row| row.get(0))
            .unwrap();
        assert_eq!(newest, 4, "id 3 was handed out before the restore");
    }

    #[test]
    fn restore_refuses_a_backup_from_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let source_dir = dir.path().join("source");
        std::fs::create_dir(&source_dir).unwrap();
        let newer = database_with(&source_dir, &["x"]);
        Connection::open(&newer)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let live = database_with(dir.path(), &["keep"]);
        assert!(matches!(
            restore(&newer, &live),
            Err(BackupError::Invalid { .. })
        ));
        assert_eq!(verify(&live).unwrap().items, 1);
    }

    #[test]
    fn restore_refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let live = database_with(dir.path(), &["keep me"]);
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, b"definitely not sqlite").unwrap();
        assert!(restore(&junk, &live).is_err());
        assert_eq!(verify(&live).unwrap().items, 1);
    }

    /// A backup file made with `schema` and one row (when it has the usual columns).
    fn backup_with(dir: &Path, name: &str, schema: &str) -> PathBuf {
        let path = dir.join(name);
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(schema).unwrap();
        let _ = conn.execute(
            "INSERT INTO items (text, created_at) VALUES ('from the backup', 'then')",
            [],
        );
        path
    }

    fn bytes_of(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn restore_refuses_a_backup_the_service_could_not_serve_and_leaves_the_database_as_it_was() {
        let cases = [
            (
                "no autoincrement",
                "CREATE TABLE items (id INTEGER PRIMARY KEY, text TEXT NOT NULL, created_at TEXT NOT NULL)",
                "AUTOINCREMENT",
            ),
            (
                "text ids",
                "CREATE TABLE items (id TEXT PRIMARY KEY, text TEXT NOT NULL, created_at TEXT NOT NULL)",
                "items.id",
            ),
            (
                "an extra required column",
                "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL, \
                 created_at TEXT NOT NULL, owner TEXT NOT NULL)",
                "owner",
            ),
            (
                "a trigger",
                "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL, \
                 created_at TEXT NOT NULL); CREATE TRIGGER purge AFTER INSERT ON items \
                 BEGIN DELETE FROM items; END;",
                "trigger",
            ),
            (
                "a unique index",
                "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL, \
                 created_at TEXT NOT NULL); CREATE UNIQUE INDEX one_each ON items (text);",
                "UNIQUE",
            ),
            (
                "a check constraint",
                "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL \
                 CHECK (length(text) < 3), created_at TEXT NOT NULL)",
                "CHECK",
            ),
            (
                "nullable text",
                "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT, \
                 created_at TEXT NOT NULL)",
                "NOT NULL",
            ),
        ];
        for (case, schema, reason) in cases {
            let dir = tempfile::tempdir().unwrap();
            let live = database_with(dir.path(), &["keep me", "and me"]);
            let before = bytes_of(&live);
            let bad = backup_with(dir.path(), "bad.db", schema);
            let error = restore(&bad, &live).unwrap_err();
            assert!(
                matches!(&error, BackupError::Invalid { reason: found, .. } if found.contains(reason)),
                "{case}: {error}"
            );
            assert_eq!(bytes_of(&live), before, "{case}: the live database changed");
            assert!(!with_suffix(&live, ".restoring").exists(), "{case}");
        }
    }

    #[test]
    fn the_seed_schema_with_extra_optional_columns_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let live = database_with(dir.path(), &["old"]);
        let backup = backup_with(
            dir.path(),
            "extra.db",
            "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL, \
             created_at TEXT NOT NULL, note TEXT, rank INTEGER NOT NULL DEFAULT 0)",
        );
        assert_eq!(restore(&backup, &live).unwrap().items, 1);
    }
}
