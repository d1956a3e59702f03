//! The read side: connections opened on demand and kept for reuse (WAL readers never wait for the
//! writer), and how a row becomes an item.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Row};

use crate::store::Item;

pub(crate) fn item_from_row(row: &Row<'_>) -> rusqlite::Result<Item> {
    Ok(Item {
        id: row.get(0)?,
        text: lossless_text(row, 1)?,
        created_at: lossless_text(row, 2)?,
    })
}

/// Reads a TEXT column without failing the whole list on one odd row: SQLite does not check
/// UTF-8, and files written by other tools may hold blobs or numbers in text columns.
pub(super) fn lossless_text(row: &Row<'_>, index: usize) -> rusqlite::Result<String> {
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

/// Reader connections, opened on demand and kept for reuse.
pub(super) struct ReaderPool {
    pub(super) path: PathBuf,
    pub(super) busy_timeout: Duration,
    pub(super) idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    pub(super) fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(self.busy_timeout)?;
        // Readers must never write, whatever a future query says.
        conn.execute_batch("PRAGMA query_only = ON;")?;
        Ok(conn)
    }

    pub(super) fn with<T>(
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

    pub(super) fn give_back(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }

    pub(super) fn close_idle(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
