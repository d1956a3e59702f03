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

pub mod azure;
pub mod connect;
mod listen;
pub mod schema;
mod text;
pub mod transfer;

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use futures_util::TryStreamExt;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::changes::{ChangeFeed, Position};
use super::{
    DatabaseStatus, Item, ItemStore, KEY_RETENTION, Once, OpenError, Page, Revision, StoreError,
    error_chain,
};
use crate::domain::{IdempotencyKey, ItemText, now_timestamp};
use schema::SchemaError;

pub use connect::{Credentials, SslMode, Target};

pub use schema::SCHEMA_VERSION;
/// Rows inserted by one statement at most.
const MAX_BATCH: usize = 512;
/// Requests waiting for the inserting task (or for a revision); past this, they wait to queue.
const INSERT_QUEUE: usize = 4096;
/// How long asking the server to cancel a statement may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a readiness probe waits for the server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Retry pause while the server cannot be reached at start-up, doubling up to the maximum.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Pool and timeout settings (`DATABASE_POOL_SIZE`, ...).
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Connections this process opens at most.
    pub size: usize,
    /// How long a request waits for a free connection before a 503.
    pub wait_timeout: Duration,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// How long one statement may run before it is cancelled and the request gets a 503.
    pub statement_timeout: Duration,
    /// Apply missing migrations when connecting; otherwise wait until `items-api migrate` has.
    pub migrate_on_start: bool,
}

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

struct Shared {
    pool: Pool,
    target: Target,
    /// For cancelling a statement that ran out of time.
    tls: MakeRustlsConnect,
    options: PoolOptions,
    /// Connected and migrated: item requests may run.
    ready: AtomicBool,
    /// Why the store is not ready (while `ready` is false).
    not_ready: Mutex<String>,
    /// Requests that found every connection in use and had to wait.
    pool_waits: AtomicU64,
    /// Requests that waited out `wait_timeout` and got a 503.
    pool_timeouts: AtomicU64,
}

/// Why connecting and migrating failed.
enum PrepareError {
    /// Retrying cannot help: the settings or the database must change.
    Fatal(String),
    /// The server is not reachable (yet).
    Retry(String),
}

impl PostgresStore {
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
    app_role: Option<&crate::store::AppRole>,
) -> Result<crate::store::MigrateReport, String> {
    let mut connection = connect::DirectConnection::open(target).await?;
    let migrated = schema::migrate(&mut connection.client)
        .await
        .map_err(|error| error.describe(target))?;
    if let Some(role) = app_role {
        schema::grant(&mut connection.client, role)
            .await
            .map_err(|error| error.describe(target))?;
    }
    Ok(crate::store::MigrateReport {
        from: migrated.from.into(),
        to: migrated.to.into(),
    })
}

fn build_pool(target: &Target, options: &PoolOptions) -> Result<Pool, String> {
    let manager = Manager::from_connect(
        target.driver_config(options.connect_timeout),
        target.connector(),
        // A connection the server closed is noticed by the driver and not handed out again;
        // checking each one with a query first would cost a round trip per request.
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(options.size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.wait_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()
        .map_err(|error| format!("cannot set up the database pool: {error}"))
}

async fn keep_connecting(shared: Arc<Shared>) {
    let mut pause = RETRY_FIRST;
    let mut last_reason = String::new();
    loop {
        tokio::time::sleep(pause).await;
        match shared.prepare().await {
            Ok(()) => {
                tracing::info!(database = %shared.target, "connected to the database; serving");
                return;
            }
            Err(PrepareError::Fatal(reason) | PrepareError::Retry(reason)) => {
                if reason != last_reason {
                    tracing::warn!(database = %shared.target, %reason, "database still not usable");
                    last_reason.clone_from(&reason);
                }
                shared.set_not_ready(reason);
            }
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
}

impl Shared {
    fn set_not_ready(&self, reason: String) {
        *self
            .not_ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason;
    }

    fn not_ready_reason(&self) -> String {
        self.not_ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connects and brings the schema up to date (or, when this process does not migrate,
    /// checks that it is); on success the store is ready. A schema still behind is waited for,
    /// as `items-api migrate` may be running right now.
    async fn prepare(&self) -> Result<(), PrepareError> {
        let mut client = match self.pool.get().await {
            Ok(client) => client,
            Err(error) => return Err(prepare_error(&self.target, &error)),
        };
        let checked = if self.options.migrate_on_start {
            schema::migrate(&mut client).await.map(drop)
        } else {
            schema::check(&client).await.map(drop)
        };
        checked.map_err(|error| {
            let reason = error.describe(&self.target);
            let passes = match error {
                SchemaError::Behind(_) => true,
                SchemaError::Driver(error) => classify(error).is_transient(),
                SchemaError::TooNew(_) | SchemaError::Role(_) => false,
            };
            if passes {
                PrepareError::Retry(reason)
            } else {
                PrepareError::Fatal(reason)
            }
        })?;
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// A pooled connection, or why there is none.
    async fn connection(&self) -> Result<Object, StoreError> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(StoreError::unavailable(format!(
                "the database is not ready: {}",
                self.not_ready_reason()
            )));
        }
        let status = self.pool.status();
        if status.available == 0 && status.size >= status.max_size {
            self.pool_waits.fetch_add(1, Ordering::Relaxed);
        }
        self.pool.get().await.map_err(|error| match error {
            PoolError::Timeout(TimeoutType::Wait) => {
                self.pool_timeouts.fetch_add(1, Ordering::Relaxed);
                StoreError::unavailable(format!(
                    "all {} database connections stayed busy for {} ms",
                    self.options.size,
                    self.options.wait_timeout.as_millis()
                ))
            }
            PoolError::Timeout(_) => StoreError::unavailable(format!(
                "connecting to the database took longer than {} ms",
                self.options.connect_timeout.as_millis()
            )),
            PoolError::Backend(error) => match classify(error) {
                StoreError::Unavailable { cause, .. } => StoreError::Unavailable {
                    reason: "cannot connect to the database".into(),
                    cause,
                },
                failed => failed,
            },
            PoolError::Closed => StoreError::unavailable("shutting down"),
            other => StoreError::failed(other.to_string()),
        })
    }

    /// Runs `statement` on a pooled connection within the statement timeout. A statement that
    /// runs out of time is cancelled on the server and its connection is not reused.
    async fn run<T>(
        &self,
        statement: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        self.run_within(self.options.statement_timeout, Effect::Read, statement)
            .await
    }

    /// As `run`, for a statement that changes the items: when it was sent but its answer is lost
    /// (the connection broke, or the time ran out), whether it committed is not known, and the
    /// error says so.
    async fn write<T>(
        &self,
        statement: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        self.run_within(self.options.statement_timeout, Effect::Write, statement)
            .await
    }

    async fn run_within<T>(
        &self,
        limit: Duration,
        effect: Effect,
        statement: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        let client = self.connection().await?;
        match tokio::time::timeout(limit, statement(&client)).await {
            Ok(Ok(value)) => Ok(value),
            // No SQLSTATE: the connection failed, so the server may or may not have committed.
            Ok(Err(error)) if effect == Effect::Write && error.code().is_none() => Err(
                StoreError::outcome_unknown("the connection failed before the answer came", error),
            ),
            Ok(Err(error)) => Err(classify(error)),
            Err(_) => {
                // Asked before answering, so a statement reported as failed is not left to finish
                // (and perhaps commit) on its own later.
                let cancel = client.cancel_token();
                match tokio::time::timeout(CANCEL_TIMEOUT, cancel.cancel_query(self.tls.clone()))
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot cancel a statement that ran out of time")
                    }
                    Err(_) => {
                        tracing::warn!("cancelling a statement that ran out of time timed out")
                    }
                }
                drop(Object::take(client));
                let reason = format!(
                    "the database did not answer within {} ms",
                    limit.as_millis()
                );
                Err(match effect {
                    // The cancel may have come after the commit.
                    Effect::Write => StoreError::OutcomeUnknown {
                        reason: reason.into(),
                        cause: None,
                    },
                    Effect::Read => StoreError::unavailable(reason),
                })
            }
        }
    }
}

/// Whether a statement changes the items, which decides what a lost answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Read,
    Write,
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
        let (reply, answer) = oneshot::channel();
        let insert = PendingInsert {
            text: text::encode(text.as_str()).into_owned(),
            created_at: created_at.clone(),
            reply,
        };
        self.inserts
            .send(insert)
            .await
            .map_err(|_| StoreError::unavailable("shutting down"))?;
        let id = answer
            .await
            .map_err(|_| StoreError::unavailable("shutting down"))??;
        Ok(Item {
            id,
            text: text.into_string(),
            created_at,
        })
    }

    async fn create_once(&self, text: ItemText, key: IdempotencyKey) -> Result<Once, StoreError> {
        let created_at = now_timestamp();
        let stored = text::encode(text.as_str()).into_owned();
        let retention = KEY_RETENTION.as_secs_f64();
        let claimed = self
            .shared
            .write(async |client| {
                // One round trip: the key is claimed (new, or past its retention) and the item
                // inserted with the id drawn for it, or nothing happens. A replica inserting the
                // same key at the same moment waits for this one to commit, then finds the key.
                client
                    .query_typed_opt(
                        "WITH new AS (SELECT nextval(pg_get_serial_sequence('items', 'id')) AS id),
                         claimed AS (
                           INSERT INTO idempotency_keys
                             (key, fingerprint, item_id, item_text, item_created_at)
                           SELECT $1, $2, new.id, $3, $4 FROM new
                           ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint,
                             item_id = excluded.item_id, item_text = excluded.item_text,
                             item_created_at = excluded.item_created_at, stored_at = now()
                           WHERE idempotency_keys.stored_at < now() - make_interval(secs => $5)
                           RETURNING item_id
                         ), stored AS (
                           INSERT INTO items (id, text, created_at) OVERRIDING SYSTEM VALUE
                           SELECT item_id, $3, $4 FROM claimed
                         )
                         SELECT item_id FROM claimed",
                        &[
                            (&key.as_str(), Type::TEXT),
                            (&key.fingerprint(), Type::TEXT),
                            (&stored, Type::TEXT),
                            (&created_at, Type::TEXT),
                            (&retention, Type::FLOAT8),
                        ],
                    )
                    .await?
                    .map(|row| row.try_get::<_, i64>(0))
                    .transpose()
            })
            .await?;
        if let Some(id) = claimed {
            return Ok(Once::Created(Item {
                id,
                text: text.into_string(),
                created_at,
            }));
        }
        let earlier = self
            .shared
            .run(async |client| {
                client
                    .query_typed_opt(
                        "SELECT fingerprint, item_id, item_text, item_created_at
                         FROM idempotency_keys WHERE key = $1",
                        &[(&key.as_str(), Type::TEXT)],
                    )
                    .await
            })
            .await?;
        let Some(row) = earlier else {
            // Removed as too old between the two statements: the client may simply retry.
            return Err(StoreError::unavailable(
                "the idempotency key expired meanwhile",
            ));
        };
        let fingerprint: String = row.try_get(0).map_err(classify)?;
        if fingerprint != key.fingerprint() {
            return Ok(Once::KeyReused);
        }
        Ok(Once::Replayed(Item {
            id: row.try_get(1).map_err(classify)?,
            text: text::decode(row.try_get(2).map_err(classify)?),
            created_at: text::decode(row.try_get(3).map_err(classify)?),
        }))
    }

    async fn update(&self, id: i64, text: ItemText) -> Result<Option<Item>, StoreError> {
        let stored = text::encode(text.as_str()).into_owned();
        self.shared
            .write(async |client| {
                let row = client
                    .query_typed_opt(
                        "UPDATE items SET text = $1 WHERE id = $2 RETURNING id, text, created_at",
                        &[(&stored, Type::TEXT), (&id, Type::INT8)],
                    )
                    .await?;
                row.as_ref().map(item_from_row).transpose()
            })
            .await
    }

    async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        self.shared
            .write(async |client| {
                let deleted = client
                    .execute_typed("DELETE FROM items WHERE id = $1", &[(&id, Type::INT8)])
                    .await?;
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

/// Every minute, removes the idempotency keys past `KEY_RETENTION`. Each replica does; a delete
/// that finds nothing costs one indexed lookup.
async fn forget_old_keys(shared: Arc<Shared>) {
    let retention = KEY_RETENTION.as_secs_f64();
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if !shared.ready.load(Ordering::Acquire) {
            continue;
        }
        let swept = shared
            .run(async |client| {
                client
                    .execute_typed(
                        "DELETE FROM idempotency_keys
                         WHERE stored_at < now() - make_interval(secs => $1)",
                        &[(&retention, Type::FLOAT8)],
                    )
                    .await
            })
            .await;
        match swept {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "removed old idempotency keys"),
            Err(error) => {
                tracing::debug!(error = %error_chain(&error), "cannot remove old idempotency keys yet")
            }
        }
    }
}

type RevisionReply = oneshot::Sender<Result<Option<Revision>, StoreError>>;

/// Answers everyone waiting for the revision with one read of it. The number is bumped by a
/// trigger in every transaction that changes the items, whoever makes it; a read sent after a
/// caller started waiting sees every write acknowledged before that, so one read serves all the
/// callers queued when it is sent (and a lone caller is served at once).
async fn read_revisions(shared: Arc<Shared>, mut waiting: mpsc::Receiver<RevisionReply>) {
    let mut callers = Vec::with_capacity(64);
    while waiting.recv_many(&mut callers, INSERT_QUEUE).await > 0 {
        let revision = shared.run(read_revision).await.map(Some);
        for caller in callers.drain(..) {
            let answer = match &revision {
                Ok(revision) => Ok(*revision),
                Err(error) => Err(error.copy()),
            };
            let _ = caller.send(answer);
        }
    }
}

/// The revision and item count the trigger keeps (migration 0002).
async fn read_revision(client: &tokio_postgres::Client) -> Result<Revision, tokio_postgres::Error> {
    let row = client
        .query_typed_one("SELECT revision, item_count FROM items_revision", &[])
        .await?;
    Ok(Revision {
        number: row.try_get::<_, i64>(0)?.cast_unsigned(),
        item_count: row.try_get(1)?,
    })
}

/// One create request waiting for its id.
struct PendingInsert {
    text: String,
    created_at: String,
    reply: oneshot::Sender<Result<i64, StoreError>>,
}

/// Inserts what is queued, up to `MAX_BATCH` rows in one statement (one commit, one round trip),
/// and answers each request with its id once the statement has committed. A lone request goes
/// out at once; under load, the requests that arrive during one commit share the next. Either
/// the whole batch is stored or none of it.
async fn insert_batches(shared: Arc<Shared>, mut queue: mpsc::Receiver<PendingInsert>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let texts: Vec<&str> = batch.iter().map(|insert| insert.text.as_str()).collect();
        let created: Vec<&str> = batch
            .iter()
            .map(|insert| insert.created_at.as_str())
            .collect();
        let inserted = shared
            .write(async |client| {
                let rows = client
                    .query_typed(
                        // Ids are drawn in request order and read back by that order.
                        "WITH new AS (
                           SELECT nextval(pg_get_serial_sequence('items', 'id')) AS id,
                                  row.text, row.created_at, row.n
                           FROM unnest($1::text[], $2::text[]) WITH ORDINALITY
                             AS row(text, created_at, n)
                         ), stored AS (
                           INSERT INTO items (id, text, created_at) OVERRIDING SYSTEM VALUE
                           SELECT id, text, created_at FROM new ORDER BY n
                         )
                         SELECT id FROM new ORDER BY n",
                        &[(&texts, Type::TEXT_ARRAY), (&created, Type::TEXT_ARRAY)],
                    )
                    .await?;
                rows.iter()
                    .map(|row| row.try_get::<_, i64>(0))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
        drop((texts, created));
        match inserted {
            Ok(ids) if ids.len() == batch.len() => {
                for (insert, id) in batch.drain(..).zip(ids) {
                    let _ = insert.reply.send(Ok(id));
                }
            }
            Ok(ids) => {
                let error = format!("{} rows inserted for {} requests", ids.len(), batch.len());
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

fn item_from_row(row: &tokio_postgres::Row) -> Result<Item, tokio_postgres::Error> {
    Ok(Item {
        id: row.try_get(0)?,
        text: text::decode(row.try_get(1)?),
        created_at: text::decode(row.try_get(2)?),
    })
}

/// Sorts a driver error into "try again later" (503) and "broken" (500).
fn classify(error: tokio_postgres::Error) -> StoreError {
    if error.code() == Some(&SqlState::DISK_FULL) {
        return StoreError::OutOfSpace(error.into());
    }
    let transient = match error.code() {
        Some(code) => is_transient(code),
        // No SQLSTATE: the connection failed or closed (I/O, TLS, server gone).
        None => {
            error.is_closed()
                || error.as_db_error().is_none() && has_cause::<std::io::Error>(&error)
        }
    };
    if transient {
        StoreError::unavailable_because(
            "the database connection failed or the server is busy",
            error,
        )
    } else {
        StoreError::failed(error)
    }
}

/// Conditions that pass: connection trouble, server starting or stopping, too many clients,
/// out of resources, serialization conflicts, cancelled statements, a read-only failover target.
fn is_transient(code: &SqlState) -> bool {
    let code = code.code();
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "40001" | "40P01" | "55P03" | "57014" | "25006")
}

/// Start-up: a server that is down or starting is waited for; anything else stops the start.
fn prepare_error(target: &Target, error: &PoolError) -> PrepareError {
    let mut reason = format!("cannot connect to {target}: {}", error_chain(error));
    if let Some(token) = target.credential_error() {
        reason = format!("{reason} ({token})");
    }
    let fatal = match error {
        PoolError::Backend(error) => match error.code() {
            Some(code) => !is_transient(code),
            // TLS and certificate problems are settings problems (rustls reports them as I/O
            // errors, so this comes first); other I/O is a server not (yet) reachable; anything
            // else (a password the server wants and does not get, ...) is a settings problem too.
            None => {
                has_cause::<rustls::Error>(error)
                    || error.to_string().contains("TLS")
                    || !(error.is_closed() || has_cause::<std::io::Error>(error))
            }
        },
        PoolError::Timeout(_) => false,
        _ => true,
    };
    if fatal {
        PrepareError::Fatal(reason)
    } else {
        PrepareError::Retry(reason)
    }
}

fn has_cause<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<T>() {
            return true;
        }
        source = cause.source();
    }
    false
}
