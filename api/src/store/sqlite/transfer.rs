//! The SQLite side of `transfer`: a snapshot reader and an all-or-nothing writer, each on its own
//! thread (SQLite calls block).

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::backup::{highest_id_ever, raise_id_sequence};
use super::{SCHEMA_VERSION, item_from_row, known_schema_version};
use crate::store::Item;
use crate::store::bulk::{BATCH, Reader, StoredKey, TransferError, Writer};

const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct SqliteReader {
    total: u64,
    highest_id_ever: i64,
    batches: mpsc::Receiver<Result<Batch, TransferError>>,
    /// The first batch of keys, received while looking for more items.
    keys: Option<Vec<StoredKey>>,
}

/// What the reading thread sends: the items, then the keys.
enum Batch {
    Items(Vec<Item>),
    Keys(Vec<StoredKey>),
}

/// Opens `path` and starts reading it inside one read transaction (in WAL mode a running service
/// keeps writing meanwhile; the reader sees the moment it started).
pub async fn reader(path: &Path) -> Result<SqliteReader, TransferError> {
    if !path.is_file() {
        return Err(TransferError::new(format!(
            "there is no SQLite database at {}",
            path.display()
        )));
    }
    let path = path.to_path_buf();
    let (started, facts) = oneshot::channel();
    let (sender, batches) = mpsc::channel(4);
    std::thread::Builder::new()
        .name("transfer-read".into())
        .spawn(move || read_snapshot(&path, started, &sender))
        .map_err(|error| TransferError::new(format!("cannot start a reader thread: {error}")))?;
    let (total, highest_id_ever) = facts
        .await
        .map_err(|_| TransferError::new("the reader thread stopped"))??;
    Ok(SqliteReader {
        total,
        highest_id_ever,
        batches,
        keys: None,
    })
}

type Facts = Result<(u64, i64), TransferError>;

fn read_snapshot(
    path: &Path,
    started: oneshot::Sender<Facts>,
    batches: &mpsc::Sender<Result<Batch, TransferError>>,
) {
    let failed = |error: rusqlite::Error| {
        TransferError::new(format!("cannot read {}: {error}", path.display()))
    };
    let opened = (|| {
        // Read-write because a read-only connection cannot open a WAL database whose -shm file
        // is missing; `query_only` keeps it from writing.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(failed)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
        conn.execute_batch("PRAGMA query_only = ON; BEGIN;")
            .map_err(failed)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(failed)?;
        if known_schema_version(version).is_none() {
            return Err(TransferError::new(format!(
                "{} has schema version {version}, newer than this build knows ({SCHEMA_VERSION})",
                path.display()
            )));
        }
        let total: i64 = conn
            .query_row("SELECT count(*) FROM items", [], |row| row.get(0))
            .map_err(|error| {
                TransferError::new(format!(
                    "{} is not an items database: {error}",
                    path.display()
                ))
            })?;
        let highest = highest_id_ever(&conn).map_err(failed)?;
        Ok((conn, u64::try_from(total).unwrap_or(0), highest))
    })();
    let conn = match opened {
        Ok((conn, total, highest)) => {
            let _ = started.send(Ok((total, highest)));
            conn
        }
        Err(error) => {
            let _ = started.send(Err(error));
            return;
        }
    };
    let streamed = (|| {
        let mut statement = conn
            .prepare("SELECT id, text, created_at FROM items ORDER BY id")
            .map_err(failed)?;
        let items = statement.query_map([], item_from_row).map_err(failed)?;
        if !send_in_batches(items, Batch::Items, batches).map_err(failed)? {
            return Ok(());
        }
        let has_keys: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'idempotency_keys'",
                [],
                |row| row.get(0),
            )
            .map_err(failed)?;
        if has_keys {
            let mut statement = conn
                .prepare(
                    "SELECT key, fingerprint, item_id, item_text, item_created_at, stored_at
                     FROM idempotency_keys ORDER BY key",
                )
                .map_err(failed)?;
            let keys = statement
                .query_map([], |row| {
                    Ok(StoredKey {
                        key: row.get(0)?,
                        fingerprint: row.get(1)?,
                        item: Item {
                            id: row.get(2)?,
                            text: row.get(3)?,
                            created_at: row.get(4)?,
                        },
                        stored_at: row.get(5)?,
                    })
                })
                .map_err(failed)?;
            send_in_batches(keys, Batch::Keys, batches).map_err(failed)?;
        }
        Ok(())
    })();
    if let Err(error) = streamed {
        let _ = batches.blocking_send(Err(error));
    }
}

/// Sends `rows` in batches of `BATCH`; false when nobody reads any more (the transfer gave up).
fn send_in_batches<T>(
    rows: impl Iterator<Item = rusqlite::Result<T>>,
    batch_of: fn(Vec<T>) -> Batch,
    batches: &mpsc::Sender<Result<Batch, TransferError>>,
) -> rusqlite::Result<bool> {
    let mut batch = Vec::with_capacity(BATCH);
    for row in rows {
        batch.push(row?);
        if batch.len() == BATCH
            && batches
                .blocking_send(Ok(batch_of(std::mem::take(&mut batch))))
                .is_err()
        {
            return Ok(false);
        }
    }
    Ok(batch.is_empty() || batches.blocking_send(Ok(batch_of(batch))).is_ok())
}

#[async_trait]
impl Reader for SqliteReader {
    fn total(&self) -> u64 {
        self.total
    }

    fn highest_id_ever(&self) -> i64 {
        self.highest_id_ever
    }

    async fn next_batch(&mut self) -> Result<Option<Vec<Item>>, TransferError> {
        if self.keys.is_some() {
            return Ok(None);
        }
        match self.batches.recv().await.transpose()? {
            Some(Batch::Items(items)) => Ok(Some(items)),
            Some(Batch::Keys(keys)) => {
                self.keys = Some(keys);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn next_keys(&mut self) -> Result<Option<Vec<StoredKey>>, TransferError> {
        if let Some(keys) = self.keys.take() {
            return Ok(Some(keys));
        }
        match self.batches.recv().await.transpose()? {
            Some(Batch::Keys(keys)) => Ok(Some(keys)),
            Some(Batch::Items(_)) => Err(TransferError::new("items arrived after the keys")),
            None => Ok(None),
        }
    }
}

enum WriteCommand {
    Items(Vec<Item>, oneshot::Sender<Result<(), TransferError>>),
    Keys(Vec<StoredKey>, oneshot::Sender<Result<(), TransferError>>),
    Commit(i64, oneshot::Sender<Result<(), TransferError>>),
}

pub struct SqliteWriter {
    commands: mpsc::Sender<WriteCommand>,
}

/// Creates (or opens) `path`, brings its schema up to date and starts one write transaction. The
/// file must hold no items and no service may be using it.
pub async fn writer(path: &Path) -> Result<SqliteWriter, TransferError> {
    let path = path.to_path_buf();
    let (ready, started) = oneshot::channel();
    let (commands, receiver) = mpsc::channel(2);
    std::thread::Builder::new()
        .name("transfer-write".into())
        .spawn(move || write_all(&path, ready, receiver))
        .map_err(|error| TransferError::new(format!("cannot start a writer thread: {error}")))?;
    started
        .await
        .map_err(|_| TransferError::new("the writer thread stopped"))??;
    Ok(SqliteWriter { commands })
}

/// Answers one step of the writer; false when it failed (the writer then stops and the
/// transaction rolls back).
fn answer(
    reply: oneshot::Sender<Result<(), TransferError>>,
    result: Result<(), TransferError>,
) -> bool {
    let ok = result.is_ok();
    let _ = reply.send(result);
    ok
}

fn write_all(
    path: &Path,
    ready: oneshot::Sender<Result<(), TransferError>>,
    mut commands: mpsc::Receiver<WriteCommand>,
) {
    let failed = |error: rusqlite::Error| {
        TransferError::new(format!("cannot write {}: {error}", path.display()))
    };
    let options = super::SqliteOptions {
        journal_mode: super::JournalMode::Delete,
        synchronous: super::Synchronous::Full,
        busy_timeout: BUSY_TIMEOUT,
        read_connections: 1,
        migrate_on_start: true,
    };
    let opened = super::open_for_writing(path, &options, true)
        .map(|(_, owner, conn, _)| (owner, conn))
        .map_err(|error| TransferError::new(error.to_string()));
    let (owner, mut conn) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(error) => {
            let _ = ready.send(Err(failed(error)));
            return;
        }
    };
    match tx.query_row("SELECT count(*) FROM items", [], |row| row.get::<_, i64>(0)) {
        Ok(0) => {
            let _ = ready.send(Ok(()));
        }
        Ok(count) => {
            let _ = ready.send(Err(TransferError::new(format!(
                "{} already holds {count} items; transfer only into an empty database",
                path.display()
            ))));
            return;
        }
        Err(error) => {
            let _ = ready.send(Err(failed(error)));
            return;
        }
    }
    // Until Commit arrives, dropping `tx` (the transfer failed) rolls everything back.
    while let Some(command) = commands.blocking_recv() {
        match command {
            WriteCommand::Items(items, reply) => {
                let written = (|| {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO items (id, text, created_at) VALUES (?1, ?2, ?3)",
                    )?;
                    for item in &items {
                        insert.execute(rusqlite::params![item.id, item.text, item.created_at])?;
                    }
                    Ok(())
                })();
                if !answer(reply, written.map_err(failed)) {
                    return;
                }
            }
            WriteCommand::Keys(keys, reply) => {
                let written = (|| {
                    let mut insert = tx.prepare_cached(
                        "INSERT OR REPLACE INTO idempotency_keys
                           (key, fingerprint, item_id, item_text, item_created_at, stored_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    for key in &keys {
                        insert.execute(rusqlite::params![
                            key.key,
                            key.fingerprint,
                            key.item.id,
                            key.item.text,
                            key.item.created_at,
                            key.stored_at
                        ])?;
                    }
                    Ok(())
                })();
                if !answer(reply, written.map_err(failed)) {
                    return;
                }
            }
            WriteCommand::Commit(highest_id_ever, reply) => {
                let committed = raise_id_sequence(&tx, highest_id_ever).and_then(|()| tx.commit());
                // Closed and unlocked before the answer: whoever waits for it may start a
                // service on the file at once.
                drop(conn);
                drop(owner);
                let _ = reply.send(committed.map_err(failed));
                return;
            }
        }
    }
}

impl SqliteWriter {
    async fn send(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), TransferError>>) -> WriteCommand,
    ) -> Result<(), TransferError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| TransferError::new("the writer thread stopped"))?;
        answer
            .await
            .map_err(|_| TransferError::new("the writer thread stopped"))?
    }
}

#[async_trait]
impl Writer for SqliteWriter {
    async fn write(&mut self, items: Vec<Item>) -> Result<(), TransferError> {
        self.send(|reply| WriteCommand::Items(items, reply)).await
    }

    async fn write_keys(&mut self, keys: Vec<StoredKey>) -> Result<(), TransferError> {
        self.send(|reply| WriteCommand::Keys(keys, reply)).await
    }

    async fn commit(self: Box<Self>, highest_id_ever: i64) -> Result<(), TransferError> {
        self.send(|reply| WriteCommand::Commit(highest_id_ever, reply))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::open::claim_owner_lock;

    #[tokio::test]
    async fn the_target_is_closed_and_unlocked_when_the_commit_is_answered() {
        // A service started on the target right after a transfer must find it free; the
        // window, if any, is short, so it is tried many times.
        let dir = tempfile::tempdir().unwrap();
        for attempt in 0..200 {
            let path = dir.path().join(format!("target-{attempt}.db"));
            let target: Box<dyn Writer> = Box::new(writer(&path).await.unwrap());
            target.commit(0).await.unwrap();
            let claimed = claim_owner_lock(&path);
            assert!(
                matches!(claimed, Ok(Some(_))),
                "attempt {attempt}: the target is still held after the commit: {claimed:?}"
            );
        }
    }
}
