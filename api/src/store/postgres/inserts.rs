//! Creates, batched: whatever is queued goes out as one INSERT (one commit, one round trip), each
//! request answered once that statement has committed. A create with an idempotency key claims
//! its key in the same statement and is stored only if the key is new (or past its retention).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::{ToSql, Type};

use super::pool::Shared;
use super::traces;
use crate::store::{KEY_RETENTION, StoreError};

/// Requests waiting for the inserting task (or for a revision); past this, they wait to queue.
pub(super) const INSERT_QUEUE: usize = 4096;
/// Rows inserted by one statement at most.
const MAX_BATCH: usize = 512;

/// One create request waiting for its answer.
pub(super) struct PendingInsert {
    pub text: String,
    pub created_at: String,
    /// An idempotency key and the fingerprint of the text: stored only if the key is free.
    pub key: Option<(String, String)>,
    /// The request's `traceparent`, when spans are exported.
    pub trace: Option<String>,
    pub reply: oneshot::Sender<Result<Inserted, StoreError>>,
}

/// What became of one queued create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Inserted {
    /// Stored, with this id.
    Stored(i64),
    /// Its key was taken already: nothing stored.
    KeyTaken,
}

/// Inserts what is queued, up to `MAX_BATCH` rows in one statement (one commit, one round trip),
/// and answers each request once the statement has committed. A lone request goes out at once;
/// under load, the requests that arrive during one commit share the next. Either the whole batch
/// is stored or none of it (bar the rows whose key was taken).
pub(super) async fn insert_batches(shared: Arc<Shared>, mut queue: mpsc::Receiver<PendingInsert>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let inserted = if batch.iter().any(|insert| insert.key.is_some()) {
            insert_keyed(&shared, &batch).await
        } else {
            insert_plain(&shared, &batch).await
        };
        match inserted {
            Ok(rows) if rows.len() == batch.len() => {
                for (insert, row) in batch.drain(..).zip(rows) {
                    let _ = insert.reply.send(Ok(row));
                }
            }
            Ok(rows) => {
                let error = format!("{} rows inserted for {} requests", rows.len(), batch.len());
                for insert in batch.drain(..) {
                    let _ = insert.reply.send(Err(StoreError::failed(error.clone())));
                }
            }
            Err(error) => {
                for insert in batch.drain(..) {
                    let _ = insert.reply.send(Err(error.copy()));
                }
            }
        }
    }
}

/// The texts and creation times of a batch, in request order.
fn texts_and_times(batch: &[PendingInsert]) -> (Vec<&str>, Vec<&str>) {
    batch
        .iter()
        .map(|insert| (insert.text.as_str(), insert.created_at.as_str()))
        .unzip()
}

/// The traces of a batch's requests, for the announcement of its change.
fn traces_of(batch: &[PendingInsert]) -> Option<String> {
    traces::joined(batch.iter().map(|insert| insert.trace.as_deref()))
}

/// Creates without keys: the statement the service ran before keys existed.
async fn insert_plain(
    shared: &Shared,
    batch: &[PendingInsert],
) -> Result<Vec<Inserted>, StoreError> {
    let (texts, created) = texts_and_times(batch);
    let trace = traces_of(batch);
    let sql = traces::statement(
        // Ids are drawn in request order and read back by that order.
        "WITH new AS (
           SELECT nextval(pg_get_serial_sequence('items', 'id')) AS id,
                  row.text, row.created_at, row.n
           FROM unnest($1::text[], $2::text[]) WITH ORDINALITY
             AS row(text, created_at, n) /* traces */
         ), stored AS (
           INSERT INTO items (id, text, created_at) OVERRIDING SYSTEM VALUE
           SELECT id, text, created_at FROM new ORDER BY n
         )
         SELECT id FROM new ORDER BY n",
        "CROSS JOIN",
        3,
        trace.as_deref(),
    );
    shared
        .write(async |client| {
            let mut parameters: Vec<(&(dyn ToSql + Sync), Type)> =
                vec![(&texts, Type::TEXT_ARRAY), (&created, Type::TEXT_ARRAY)];
            if let Some(trace) = &trace {
                parameters.push((trace, Type::TEXT));
            }
            let rows = client.query_typed(&sql, &parameters).await?;
            rows.iter()
                .map(|row| row.try_get::<_, i64>(0).map(Inserted::Stored))
                .collect()
        })
        .await
}

/// Creates of which some carry a key. A key is claimed when new or past its retention; a row
/// whose key is taken draws an id it never uses. Two requests with one key never share a batch
/// (a process holds a key until its create is answered), and another replica's statement with
/// the same key waits for this one to commit.
async fn insert_keyed(
    shared: &Shared,
    batch: &[PendingInsert],
) -> Result<Vec<Inserted>, StoreError> {
    let (texts, created) = texts_and_times(batch);
    let keys: Vec<Option<&str>> = batch
        .iter()
        .map(|insert| insert.key.as_ref().map(|(key, _)| key.as_str()))
        .collect();
    let fingerprints: Vec<Option<&str>> = batch
        .iter()
        .map(|insert| {
            insert
                .key
                .as_ref()
                .map(|(_, fingerprint)| fingerprint.as_str())
        })
        .collect();
    let retention = KEY_RETENTION.as_secs_f64();
    let trace = traces_of(batch);
    let sql = traces::statement(
        "WITH new AS (
           SELECT nextval(pg_get_serial_sequence('items', 'id')) AS id,
                  row.text, row.created_at, row.key, row.fingerprint, row.n
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
             WITH ORDINALITY AS row(text, created_at, key, fingerprint, n) /* traces */
         ), claimed AS (
           INSERT INTO idempotency_keys
             (key, fingerprint, item_id, item_text, item_created_at)
           SELECT key, fingerprint, id, text, created_at FROM new
           WHERE key IS NOT NULL
           ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint,
             item_id = excluded.item_id, item_text = excluded.item_text,
             item_created_at = excluded.item_created_at, stored_at = now()
           WHERE idempotency_keys.stored_at < now() - make_interval(secs => $5)
           RETURNING item_id
         ), kept AS (
           SELECT new.*, (new.key IS NULL OR claimed.item_id IS NOT NULL) AS stored
           FROM new LEFT JOIN claimed ON claimed.item_id = new.id
         ), stored AS (
           INSERT INTO items (id, text, created_at) OVERRIDING SYSTEM VALUE
           SELECT id, text, created_at FROM kept WHERE stored ORDER BY n
         )
       SELECT id, stored FROM kept ORDER BY n",
        "CROSS JOIN",
        6,
        trace.as_deref(),
    );
    shared
        .write(async |client| {
            let mut parameters: Vec<(&(dyn ToSql + Sync), Type)> = vec![
                (&texts, Type::TEXT_ARRAY),
                (&created, Type::TEXT_ARRAY),
                (&keys, Type::TEXT_ARRAY),
                (&fingerprints, Type::TEXT_ARRAY),
                (&retention, Type::FLOAT8),
            ];
            if let Some(trace) = &trace {
                parameters.push((trace, Type::TEXT));
            }
            let rows = client.query_typed(&sql, &parameters).await?;
            rows.iter()
                .map(|row| {
                    Ok(if row.try_get::<_, bool>(1)? {
                        Inserted::Stored(row.try_get(0)?)
                    } else {
                        Inserted::KeyTaken
                    })
                })
                .collect()
        })
        .await
}
