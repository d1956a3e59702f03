//! Postgres backend, for running several API processes on one database.
//!
//! Reads, updates and deletes each borrow a pooled connection and run one statement in
//! autocommit; creates are queued and inserted in batches, one statement per round trip (see
//! `insert_batches`). A 201 is sent only after its insert committed (`synchronous_commit` is the
//! server's business). Statements go out unnamed (parse, bind and execute in one round trip),
//! never as prepared statements kept on the connection, so the pool works through PgBouncer in
//! transaction mode. The store keeps no items in the process; the list cache around it asks for
//! the revision (one small read) before it reuses anything, so what one replica committed, every
//! replica reads next.
//!
//! The service starts even while the server is unreachable or its schema is not migrated yet:
//! it reports not ready, answers 503, and connects (and migrates, with `MIGRATE_ON_START`) in
//! the background as soon as it can. Problems retrying cannot fix (a wrong password, a missing
//! database, a newer schema) stop the start instead.

pub mod connect;
mod errors;
mod inserts;
mod keys;
mod listen;
mod pool;
mod revision;
pub mod schema;
mod text;
mod traces;
pub mod transfer;

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::types::{ToSql, Type};

use super::{
    DatabaseStatus, Item, ItemStore, Once, OpenError, Page, Revision, StoreError, error_chain,
};
use crate::domain::{IdempotencyKey, ItemText, now_timestamp};
use crate::feed::{ChangeFeed, Position};
use errors::PrepareError;
use inserts::{INSERT_QUEUE, Inserted, PendingInsert, insert_batches};
use keys::forget_old_keys;
use pool::{Effect, Shared, build_pool, keep_connecting};
use revision::{RevisionReply, read_revisions};
use text::item_from_row;

pub use connect::{SslMode, Target};

pub use super::settings::PoolOptions;
pub use schema::SCHEMA_VERSION;
/// How long a readiness probe waits for the server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct PostgresStore {
    shared: Arc<Shared>,
    /// Inserts waiting for the inserting task (see `insert_batches`).
    inserts: mpsc::Sender<PendingInsert>,
    inserter: JoinHandle<()>,
    /// Callers of `revision` waiting for the next read of it (see `read_revisions`).
    revision_readers: mpsc::Sender<RevisionReply>,
    revision_reader: JoinHandle<()>,
    /// Connects and migrates in the background when the server was not reachable at start-up.
    connector: Mutex<Option<JoinHandle<()>>>,
    feed: Arc<ChangeFeed>,
    /// Fills the feed from the server's announcements (see `listen`).
    listener: JoinHandle<()>,
    listening: watch::Receiver<bool>,
    /// Removes idempotency keys past their retention (see `forget_old_keys`).
    key_sweeper: JoinHandle<()>,
}

impl PostgresStore {
    /// Queues one create for the inserting task and waits for its answer.
    async fn insert(
        &self,
        text: &ItemText,
        created_at: &str,
        key: Option<(String, String)>,
    ) -> Result<Inserted, StoreError> {
        let (reply, answer) = oneshot::channel();
        let insert = PendingInsert {
            text: text::encode(text.as_str()).into_owned(),
            created_at: created_at.to_owned(),
            key,
            trace: crate::traces::current_traceparent(),
            reply,
        };
        self.inserts
            .send(insert)
            .await
            .map_err(|_| StoreError::unavailable("shutting down"))?;
        answer
            .await
            .map_err(|_| StoreError::unavailable("shutting down"))?
    }

    /// Builds the pool and connects and migrates. An unreachable server is retried in the
    /// background (the store reports not ready meanwhile); any other failure is returned.
    /// Changes are listened for on `listen_target` (a direct connection when `target` goes
    /// through a pooler that cannot pass notifications on), else on `target`.
    pub async fn open(
        target: &Target,
        listen_target: Option<&Target>,
        options: &PoolOptions,
    ) -> Result<Self, OpenError> {
        let pool = build_pool(target, options).map_err(OpenError::new)?;
        let shared = Arc::new(Shared {
            pool,
            target: target.clone(),
            tls: target.tls(),
            options: options.clone(),
            ready: AtomicBool::new(false),
            not_ready: Mutex::new("connecting to the database".into()),
            pool_waits: AtomicU64::new(0),
            pool_timeouts: AtomicU64::new(0),
        });
        let (inserts, queue) = mpsc::channel(INSERT_QUEUE);
        let (revision_readers, waiting) = mpsc::channel(INSERT_QUEUE);
        // Named and positioned once the listener has connected.
        let feed = Arc::new(ChangeFeed::new(
            Position {
                feed: 0,
                revision: 0,
            },
            0,
        ));
        let (listening_sender, listening) = watch::channel(false);
        let listener = tokio::spawn(listen::listen(
            Arc::clone(&shared),
            listen_target.unwrap_or(target).clone(),
            Arc::clone(&feed),
            listening_sender,
        ));
        let store = Self {
            shared: Arc::clone(&shared),
            inserts,
            inserter: tokio::spawn(insert_batches(Arc::clone(&shared), queue)),
            revision_readers,
            revision_reader: tokio::spawn(read_revisions(Arc::clone(&shared), waiting)),
            connector: Mutex::new(None),
            feed,
            listener,
            listening,
            key_sweeper: tokio::spawn(forget_old_keys(Arc::clone(&shared))),
        };
        match shared.prepare().await {
            Ok(()) => {
                // So a page that connects once the service answers is told every change. The
                // listener keeps trying if this runs out; meanwhile pages read the list.
                let mut listening = store.listening.clone();
                let started = listening.wait_for(|listening| *listening);
                if tokio::time::timeout(options.connect_timeout, started)
                    .await
                    .is_err()
                {
                    tracing::warn!(database = %target, "not listening for changes yet; serving");
                }
            }
            Err(PrepareError::Fatal(reason)) => {
                store.close().await;
                return Err(OpenError::new(reason));
            }
            Err(PrepareError::Retry(reason)) => {
                tracing::warn!(database = %target, %reason, "database not reachable yet; serving 503 until it is");
                shared.set_not_ready(reason);
                let task = tokio::spawn(keep_connecting(Arc::clone(&shared)));
                *store
                    .connector
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(task);
            }
        }
        Ok(store)
    }
}

/// `items-api migrate` on Postgres: applies the missing migrations, then gives the app role its
/// rights.
pub async fn migrate(
    target: &Target,
    app_role: Option<&super::settings::AppRole>,
) -> Result<schema::Migrated, String> {
    let mut connection = connect::DirectConnection::open(target).await?;
    let migrated = schema::migrate(&mut connection.client)
        .await
        .map_err(|error| error.describe(target))?;
    if let Some(role) = app_role {
        schema::grant(&mut connection.client, role)
            .await
            .map_err(|error| error.describe(target))?;
    }
    Ok(migrated)
}

#[async_trait]
impl ItemStore for PostgresStore {
    async fn list(&self, page: Page) -> Result<Vec<Item>, StoreError> {
        let before = page.before.unwrap_or(i64::MAX);
        // LIMIT NULL means no limit.
        let limit = page.limit.map(i64::from);
        self.shared
            .run(async |client| {
                let rows = client
                    .query_typed_raw(
                        "SELECT id, text, created_at FROM items WHERE id < $1 ORDER BY id DESC LIMIT $2",
                        [(&before as &(dyn tokio_postgres::types::ToSql + Sync), Type::INT8), (&limit, Type::INT8)],
                    )
                    .await?;
                let mut rows = pin!(rows);
                let mut items = Vec::with_capacity(page.limit.map_or(64, |limit| limit as usize));
                while let Some(row) = rows.try_next().await? {
                    items.push(item_from_row(&row)?);
                }
                Ok(items)
            })
            .await
    }

    async fn get(&self, id: i64) -> Result<Option<Item>, StoreError> {
        self.shared
            .run(async |client| {
                let row = client
                    .query_typed_opt(
                        "SELECT id, text, created_at FROM items WHERE id = $1",
                        &[(&id, Type::INT8)],
                    )
                    .await?;
                row.as_ref().map(item_from_row).transpose()
            })
            .await
    }

    async fn create(&self, text: ItemText) -> Result<Item, StoreError> {
        let created_at = now_timestamp();
        match self.insert(&text, &created_at, None).await? {
            Inserted::Stored(id) => Ok(Item {
                id,
                text: text.into_string(),
                created_at,
            }),
            Inserted::KeyTaken => Err(StoreError::failed("a create without a key was refused")),
        }
    }

    async fn create_once(&self, text: ItemText, key: IdempotencyKey) -> Result<Once, StoreError> {
        let created_at = now_timestamp();
        let claim = (key.as_str().to_owned(), key.fingerprint().to_owned());
        match self.insert(&text, &created_at, Some(claim)).await? {
            Inserted::Stored(id) => Ok(Once::Created(Item {
                id,
                text: text.into_string(),
                created_at,
            })),
            Inserted::KeyTaken => keys::earlier(&self.shared, &key).await,
        }
    }

    async fn update(&self, id: i64, text: ItemText) -> Result<Option<Item>, StoreError> {
        let stored = text::encode(text.as_str()).into_owned();
        let trace = crate::traces::current_traceparent();
        let sql = traces::statement(
            "UPDATE items SET text = $1 /* traces */ WHERE id = $2 RETURNING id, text, created_at",
            "FROM",
            3,
            trace.as_deref(),
        );
        self.shared
            .write(async |client| {
                let mut parameters: Vec<(&(dyn ToSql + Sync), Type)> =
                    vec![(&stored, Type::TEXT), (&id, Type::INT8)];
                if let Some(trace) = &trace {
                    parameters.push((trace, Type::TEXT));
                }
                let row = client.query_typed_opt(&sql, &parameters).await?;
                row.as_ref().map(item_from_row).transpose()
            })
            .await
    }

    async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        let trace = crate::traces::current_traceparent();
        let sql = traces::statement(
            "DELETE FROM items /* traces */ WHERE id = $1",
            "USING",
            2,
            trace.as_deref(),
        );
        self.shared
            .write(async |client| {
                let mut parameters: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&id, Type::INT8)];
                if let Some(trace) = &trace {
                    parameters.push((trace, Type::TEXT));
                }
                let deleted = client.execute_typed(&sql, &parameters).await?;
                Ok(deleted > 0)
            })
            .await
    }

    async fn status(&self) -> DatabaseStatus {
        let shared = &self.shared;
        let pool = shared.pool.status();
        let mut details = serde_json::Map::new();
        details.insert("server".into(), json!(shared.target.to_string()));
        details.insert("sslmode".into(), json!(shared.target.ssl_mode().as_str()));
        details.insert(
            "pool".into(),
            json!({
                "max_size": pool.max_size,
                "size": pool.size,
                "available": pool.available,
                "waiting": pool.waiting,
                "waits": shared.pool_waits.load(Ordering::Relaxed),
                "timeouts": shared.pool_timeouts.load(Ordering::Relaxed),
            }),
        );
        details.insert("schema_version".into(), json!(SCHEMA_VERSION));
        details.insert(
            "listening_for_changes".into(),
            json!(*self.listening.borrow()),
        );
        let probe = shared
            .run_within(shared.options.statement_timeout.min(PROBE_TIMEOUT), Effect::Read, async |client| {
                client
                    .query_typed_one(
                        "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on', \
                                current_setting('server_version'), \
                                (SELECT item_count FROM items_revision)",
                        &[],
                    )
                    .await
            })
            .await;
        let unusable = |error: String, details| DatabaseStatus {
            backend: "postgres",
            reachable: false,
            writable: false,
            item_count: None,
            journal_mode: None,
            error: Some(error),
            details,
        };
        let row = match probe {
            Ok(row) => row,
            Err(error) => {
                let mut reason = error_chain(&error);
                if let Some(token) = shared.target.credential_error() {
                    reason = format!("{reason} ({token})");
                }
                return unusable(reason, details);
            }
        };
        let decoded = (|| -> Result<_, tokio_postgres::Error> {
            Ok((
                row.try_get::<_, bool>(0)?,
                row.try_get::<_, String>(1)?,
                row.try_get::<_, Option<i64>>(2)?,
            ))
        })();
        let (read_only, version, item_count) = match decoded {
            Ok(values) => values,
            Err(error) => return unusable(error.to_string(), details),
        };
        details.insert("server_version".into(), json!(version));
        DatabaseStatus {
            backend: "postgres",
            reachable: true,
            writable: !read_only,
            item_count,
            journal_mode: None,
            error: read_only
                .then(|| "the server is read-only (a standby, or in recovery)".to_owned()),
            details,
        }
    }

    async fn revision(&self) -> Result<Option<Revision>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.revision_readers
            .send(reply)
            .await
            .map_err(|_| StoreError::unavailable("shutting down"))?;
        answer
            .await
            .map_err(|_| StoreError::unavailable("shutting down"))?
    }

    fn changes(&self) -> &ChangeFeed {
        &self.feed
    }

    async fn close(&self) {
        let connector = self
            .connector
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = connector {
            task.abort();
        }
        // In-flight requests have finished (or run out of grace); nothing is left to insert.
        self.inserter.abort();
        self.revision_reader.abort();
        self.listener.abort();
        self.key_sweeper.abort();
        self.shared.pool.close();
    }
}
