//! Why a SQLite database could not be opened, each message saying what to fix.

use std::path::PathBuf;

/// Why the database could not be opened. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the database directory {path}: {cause}")]
    CreateDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "the database {path} cannot be created: {file} is a file, not a directory; set DB_PATH \
         to a file in a directory"
    )]
    UnderAFile { path: PathBuf, file: PathBuf },
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

impl OpenError {
    /// What `DB_PATH` names cannot hold a database: the setting must change.
    pub fn is_setting(&self) -> bool {
        matches!(
            self,
            Self::UnderAFile { .. } | Self::CreateDir { .. } | Self::ReadOnly { .. }
        )
    }
}
