//! The writer thread: every write goes through it, in batches committed as one transaction (one
//! fsync serves many requests), each answered only after its commit, and every commit recorded in
//! the change feed before any of its writes is answered.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::readers::item_from_row;
use crate::domain::{IdempotencyKey, ItemText, now_timestamp};
use crate::feed::{Change, ChangeFeed, Position};
use crate::metrics;
use crate::store::{Item, KEY_RETENTION, Once, Revision, StoreError};

/// Upper bound on writes committed together, so one transaction stays short.
pub(super) const MAX_BATCH: usize = 512;
/// Writes waiting for the writer; past this, handlers wait (backpressure) instead of queueing more.
pub(super) const WRITE_QUEUE: usize = 4096;

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum WriteCommand {
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
pub(super) enum Write {
    Insert(ItemText),
    InsertOnce(ItemText, IdempotencyKey),
    Update(i64, ItemText),
    Delete(i64),
}

/// What a write did, once it ran.
#[derive(Debug)]
pub(super) enum Outcome {
    Inserted(Item),
    Once(Once),
    Updated(Option<Item>),
    Deleted { id: i64, deleted: bool },
}

impl Outcome {
    /// What the write changed, or `None` when it changed no item.
    pub(super) fn change(&self) -> Option<Change> {
        match self {
            Self::Inserted(item) | Self::Once(Once::Created(item)) => {
                Some(Change::Created(item.clone()))
            }
            Self::Updated(Some(item)) => Some(Change::Updated(item.clone())),
            Self::Deleted { id, deleted: true } => Some(Change::Deleted(*id)),
            _ => None,
        }
    }

    pub(super) fn changed_an_item(&self) -> bool {
        matches!(
            self,
            Self::Inserted(_)
                | Self::Once(Once::Created(_))
                | Self::Updated(Some(_))
                | Self::Deleted { deleted: true, .. }
        )
    }

    /// How the write changed the item count.
    pub(super) fn count_change(&self) -> i64 {
        match self {
            Self::Inserted(_) | Self::Once(Once::Created(_)) => 1,
            Self::Deleted { deleted: true, .. } => -1,
            _ => 0,
        }
    }

    /// The error for a caller that got an outcome of another kind of write than it sent.
    pub(super) fn mismatch(self) -> StoreError {
        StoreError::failed(format!(
            "the writer answered {self:?} to another kind of write"
        ))
    }
}

/// One write inside a batch, answered once the batch's fate is known.
pub(super) struct Applied {
    reply: Reply<Outcome>,
    result: rusqlite::Result<Outcome>,
}

impl Applied {
    pub(super) fn changed_an_item(&self) -> bool {
        self.result.as_ref().is_ok_and(Outcome::changed_an_item)
    }

    /// Answers with the write's own result: its transaction committed.
    pub(super) fn answer(self) {
        let _ = self.reply.send(self.result.map_err(StoreError::from));
    }

    /// Answers with the error that rolled its transaction back.
    pub(super) fn answer_rolled_back(self, error: &rusqlite::Error) {
        let _ = self.reply.send(Err(commit_error(error)));
    }
}

/// A failed commit, for the writes in it. An I/O error during COMMIT leaves open whether the
/// transaction reached the disk (SQLite settles it when the database is next opened).
pub(super) fn commit_error(error: &rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::SystemIoFailure) => {
            StoreError::outcome_unknown("the commit failed with an I/O error", copy_error(error))
        }
        _ => copy_error(error).into(),
    }
}

pub(super) fn run_writer(
    mut conn: Connection,
    mut commands: mpsc::Receiver<WriteCommand>,
    feed: &ChangeFeed,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut keys = KeySweep::default();
    if metrics::enabled() {
        // Shown from the first scrape, before any write: a rate needs a sample from before.
        let _ = ::metrics::histogram!(metrics::SQLITE_BATCH_SIZE);
        let _ = ::metrics::histogram!(metrics::SQLITE_COMMIT_DURATION);
    }
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
pub(super) struct KeySweep {
    last: Option<std::time::Instant>,
}

impl KeySweep {
    const EVERY: Duration = Duration::from_secs(60);

    pub(super) fn due(&mut self) -> bool {
        let due = self.last.is_none_or(|last| last.elapsed() >= Self::EVERY);
        if due {
            self.last = Some(std::time::Instant::now());
        }
        due
    }
}

/// Applies queued commands; returns the close request if one was among them.
pub(super) fn apply_batch(
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
pub(super) fn commit_writes(
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
    let started = std::time::Instant::now();
    let committed = match aborted {
        Some(error) => Err(error),
        None => tx.commit(),
    };
    if metrics::enabled() {
        ::metrics::histogram!(metrics::SQLITE_BATCH_SIZE).record(applied.len() as f64);
        ::metrics::histogram!(metrics::SQLITE_COMMIT_DURATION)
            .record(started.elapsed().as_secs_f64());
    }
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

pub(super) fn apply(tx: &Connection, write: Write) -> rusqlite::Result<Outcome> {
    match write {
        Write::Insert(text) => insert(tx, text).map(Outcome::Inserted),
        Write::InsertOnce(text, key) => insert_once(tx, text, &key).map(Outcome::Once),
        Write::Update(id, text) => update(tx, id, text).map(Outcome::Updated),
        Write::Delete(id) => delete(tx, id).map(|deleted| Outcome::Deleted { id, deleted }),
    }
}

/// Moves the feed to the next revision, telling subscribers what changed if there are any.
pub(super) fn record_commit(feed: &ChangeFeed, applied: &[Applied]) {
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

pub(super) fn insert(tx: &Connection, text: ItemText) -> rusqlite::Result<Item> {
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
pub(super) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Inserts unless `key` was used within `KEY_RETENTION`; records the key with what it created.
pub(super) fn insert_once(
    tx: &Connection,
    text: ItemText,
    key: &IdempotencyKey,
) -> rusqlite::Result<Once> {
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

pub(super) fn forget_old_keys(tx: &Connection) -> rusqlite::Result<usize> {
    let kept_since = unix_now() - KEY_RETENTION.as_secs() as i64;
    tx.prepare_cached("DELETE FROM idempotency_keys WHERE stored_at < ?1")?
        .execute([kept_since])
}

pub(super) fn update(tx: &Connection, id: i64, text: ItemText) -> rusqlite::Result<Option<Item>> {
    tx.prepare_cached("UPDATE items SET text = ?1 WHERE id = ?2 RETURNING id, text, created_at")?
        .query_row(params![text.as_str(), id], item_from_row)
        .optional()
}

pub(super) fn delete(tx: &Connection, id: i64) -> rusqlite::Result<bool> {
    let deleted = tx
        .prepare_cached("DELETE FROM items WHERE id = ?1")?
        .execute([id])?;
    Ok(deleted > 0)
}

/// Answers a command that arrived after shutdown began.
pub(super) fn refuse(command: WriteCommand) {
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
pub(super) fn copy_error(error: &rusqlite::Error) -> rusqlite::Error {
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
pub(super) fn checkpoint(conn: &Connection) {
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
