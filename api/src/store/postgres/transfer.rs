//! The Postgres side of `transfer`: a reader in one repeatable-read snapshot and a writer in one
//! transaction, each on a connection of its own.

use std::pin::Pin;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use tokio_postgres::RowStream;
use tokio_postgres::types::{ToSql, Type};

use super::connect::DirectConnection as Connection;
use super::connect::Target;
use super::schema::SCHEMA_VERSION;
use super::schema::{self, SchemaError};
use super::text::{self, item_from_row};
use crate::store::Item;
use crate::store::bulk::{BATCH, Reader, StoredKey, TransferError, Writer};
use crate::store::error_chain;

async fn connect(target: &Target) -> Result<Connection, TransferError> {
    Connection::open(target).await.map_err(TransferError::new)
}

fn failed(target: &Target, action: &str) -> impl Fn(tokio_postgres::Error) -> TransferError {
    let prefix = format!("cannot {action} {target}");
    move |error| TransferError::new(format!("{prefix}: {}", error_chain(&error)))
}

pub struct PostgresReader {
    total: u64,
    highest_id_ever: i64,
    /// `None` once the last row was read: the driver's stream must not be polled again.
    rows: Option<Pin<Box<RowStream>>>,
    /// Where the keyset over the idempotency keys stands: `None` once they are all read (or the
    /// schema predates them).
    keys_after: Option<String>,
    target: Target,
    // Declared last: the row stream reads through this connection.
    connection: Connection,
}

pub async fn reader(target: &Target) -> Result<PostgresReader, TransferError> {
    let connection = connect(target).await?;
    let client = &connection.client;
    let read = failed(target, "read");
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(&read)?;
    let version: Option<i32> = client
        .query_typed_one(
            "SELECT CASE WHEN to_regclass('items_schema_migrations') IS NULL THEN NULL
                    ELSE (SELECT max(version) FROM items_schema_migrations) END",
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(&read)?;
    // A table without the migrations record is not one this service made.
    let Some(version) = version else {
        return Err(TransferError::new(format!(
            "{target} has no items created by this service (no items_schema_migrations table)"
        )));
    };
    if version > SCHEMA_VERSION {
        return Err(TransferError::new(format!(
            "{target} has schema version {version}, newer than this build knows ({SCHEMA_VERSION})"
        )));
    }
    let row = client
        .query_typed_one(
            "SELECT count(*), greatest(coalesce(max(id), 0),
                    coalesce(pg_sequence_last_value(pg_get_serial_sequence('items', 'id')::regclass), 0))
             FROM items",
            &[],
        )
        .await
        .map_err(&read)?;
    let total: i64 = row.try_get(0).map_err(&read)?;
    let highest_id_ever: i64 = row.try_get(1).map_err(&read)?;
    let rows = client
        .query_typed_raw(
            "SELECT id, text, created_at FROM items ORDER BY id",
            std::iter::empty::<(&(dyn ToSql + Sync), Type)>(),
        )
        .await
        .map_err(&read)?;
    Ok(PostgresReader {
        total: u64::try_from(total).unwrap_or(0),
        highest_id_ever,
        rows: Some(Box::pin(rows)),
        // The table came with schema version 4.
        keys_after: (version >= 4).then(String::new),
        target: target.clone(),
        connection,
    })
}

#[async_trait]
impl Reader for PostgresReader {
    fn total(&self) -> u64 {
        self.total
    }

    fn highest_id_ever(&self) -> i64 {
        self.highest_id_ever
    }

    async fn next_batch(&mut self) -> Result<Option<Vec<Item>>, TransferError> {
        let read = failed(&self.target, "read");
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(rows) = self.rows.as_mut()
            && batch.len() < BATCH
        {
            match rows.try_next().await.map_err(&read)? {
                Some(row) => batch.push(item_from_row(&row).map_err(&read)?),
                None => self.rows = None,
            }
        }
        Ok((!batch.is_empty()).then_some(batch))
    }

    async fn next_keys(&mut self) -> Result<Option<Vec<StoredKey>>, TransferError> {
        let Some(after) = self.keys_after.take() else {
            return Ok(None);
        };
        let read = failed(&self.target, "read");
        let rows = self
            .connection
            .client
            .query_typed(
                "SELECT key, fingerprint, item_id, item_text, item_created_at,
                        extract(epoch FROM stored_at)::bigint
                 FROM idempotency_keys WHERE key > $1 ORDER BY key LIMIT $2",
                &[(&after, Type::TEXT), (&(BATCH as i64), Type::INT8)],
            )
            .await
            .map_err(&read)?;
        let keys = rows
            .iter()
            .map(|row| {
                Ok(StoredKey {
                    key: row.try_get(0)?,
                    fingerprint: row.try_get(1)?,
                    item: Item {
                        id: row.try_get(2)?,
                        text: text::decode(row.try_get(3)?),
                        created_at: text::decode(row.try_get(4)?),
                    },
                    stored_at: row.try_get(5)?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(&read)?;
        if keys.len() == BATCH {
            self.keys_after = keys.last().map(|key| key.key.clone());
        }
        Ok((!keys.is_empty()).then_some(keys))
    }
}

pub struct PostgresWriter {
    connection: Connection,
    target: Target,
}

/// Migrates the database, starts a transaction, locks `items` against other writers and checks
/// that it is empty.
pub async fn writer(target: &Target) -> Result<PostgresWriter, TransferError> {
    let mut connection = connect(target).await?;
    let write = failed(target, "write to");
    schema::migrate(&mut connection.client)
        .await
        .map_err(|error| match error {
            SchemaError::Driver(error) => write(error),
            other => TransferError::new(other.describe(target)),
        })?;
    let client = &connection.client;
    // Readers go on; a running service's writes wait until the transfer commits.
    client
        .batch_execute("BEGIN; LOCK TABLE items IN EXCLUSIVE MODE")
        .await
        .map_err(&write)?;
    let count: i64 = client
        .query_typed_one("SELECT count(*) FROM items", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(&write)?;
    if count > 0 {
        return Err(TransferError::new(format!(
            "{target} already holds {count} items; transfer only into an empty database"
        )));
    }
    Ok(PostgresWriter {
        connection,
        target: target.clone(),
    })
}

#[async_trait]
impl Writer for PostgresWriter {
    async fn write(&mut self, items: Vec<Item>) -> Result<(), TransferError> {
        let ids: Vec<i64> = items.iter().map(|item| item.id).collect();
        let texts: Vec<String> = items
            .iter()
            .map(|item| text::encode(&item.text).into_owned())
            .collect();
        let created: Vec<String> = items
            .iter()
            .map(|item| text::encode(&item.created_at).into_owned())
            .collect();
        self.connection
            .client
            .execute_typed(
                "INSERT INTO items (id, text, created_at) OVERRIDING SYSTEM VALUE
                 SELECT * FROM unnest($1::int8[], $2::text[], $3::text[])",
                &[
                    (&ids, Type::INT8_ARRAY),
                    (&texts, Type::TEXT_ARRAY),
                    (&created, Type::TEXT_ARRAY),
                ],
            )
            .await
            .map_err(failed(&self.target, "write to"))?;
        Ok(())
    }

    async fn write_keys(&mut self, keys: Vec<StoredKey>) -> Result<(), TransferError> {
        let column = |field: fn(&StoredKey) -> String| keys.iter().map(field).collect::<Vec<_>>();
        let names = column(|key| key.key.clone());
        let fingerprints = column(|key| key.fingerprint.clone());
        let texts = column(|key| text::encode(&key.item.text).into_owned());
        let created = column(|key| text::encode(&key.item.created_at).into_owned());
        let ids: Vec<i64> = keys.iter().map(|key| key.item.id).collect();
        let stored_at: Vec<f64> = keys.iter().map(|key| key.stored_at as f64).collect();
        self.connection
            .client
            .execute_typed(
                "INSERT INTO idempotency_keys
                   (key, fingerprint, item_id, item_text, item_created_at, stored_at)
                 SELECT key, fingerprint, item_id, item_text, item_created_at, to_timestamp(at)
                 FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[],
                             $6::float8[])
                   AS key(key, fingerprint, item_id, item_text, item_created_at, at)
                 ON CONFLICT (key) DO NOTHING",
                &[
                    (&names, Type::TEXT_ARRAY),
                    (&fingerprints, Type::TEXT_ARRAY),
                    (&ids, Type::INT8_ARRAY),
                    (&texts, Type::TEXT_ARRAY),
                    (&created, Type::TEXT_ARRAY),
                    (&stored_at, Type::FLOAT8_ARRAY),
                ],
            )
            .await
            .map_err(failed(&self.target, "write to"))?;
        Ok(())
    }

    async fn commit(self: Box<Self>, highest_id_ever: i64) -> Result<(), TransferError> {
        let write = failed(&self.target, "write to");
        let client = &self.connection.client;
        if highest_id_ever > 0 {
            client
                .execute_typed(
                    "SELECT setval(pg_get_serial_sequence('items', 'id'), greatest($1,
                        coalesce(pg_sequence_last_value(pg_get_serial_sequence('items', 'id')::regclass), 0)))",
                    &[(&highest_id_ever, Type::INT8)],
                )
                .await
                .map_err(&write)?;
        }
        client.batch_execute("COMMIT").await.map_err(&write)?;
        Ok(())
    }
}
