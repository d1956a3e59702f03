//! The schema: the migrations in order, the check a process makes when it does not migrate, and
//! the rights of the role the service signs in as when migrations run under another one.
//!
//! `items_schema_migrations` records each applied migration with the oldest schema version
//! whose builds still serve correctly after it (`compatible_from`). A build meeting a newer
//! schema serves it when every migration past its own is marked compatible with it, so an image
//! can be rolled back after an additive migration.

use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient};

use crate::store::settings::{AppRole, RoleCreation};

struct Migration {
    sql: &'static str,
    /// Builds that know at least this schema version keep working once it is applied.
    compatible_from: i32,
}

/// Applied in order; version N is the N-th.
const MIGRATIONS: &[Migration] = &[
    Migration {
        sql: include_str!("../../../migrations/postgres/0001_items.sql"),
        compatible_from: 1,
    },
    Migration {
        sql: include_str!("../../../migrations/postgres/0002_change_feed.sql"),
        compatible_from: 2,
    },
    Migration {
        sql: include_str!("../../../migrations/postgres/0003_least_privilege.sql"),
        compatible_from: 2,
    },
    Migration {
        sql: include_str!("../../../migrations/postgres/0004_idempotency_keys.sql"),
        compatible_from: 3,
    },
    Migration {
        sql: include_str!("../../../migrations/postgres/0005_traced_changes.sql"),
        compatible_from: 3,
    },
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Taken (for the migrating transaction only) by every process that migrates, so replicas
/// starting together apply each migration once. Any fixed number; these bytes spell "itemsapi".
const MIGRATION_LOCK: i64 = 0x6974_656d_7361_7069;

#[derive(Debug)]
pub enum SchemaError {
    /// Newer than this build, with a migration this build cannot serve.
    TooNew(i32),
    /// Older than this build (0: no schema at all), and this process does not migrate.
    Behind(i32),
    /// The app role cannot be given its rights; the message says why.
    Role(String),
    Driver(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for SchemaError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Driver(error)
    }
}

impl SchemaError {
    /// What is wrong with the database at `target` and what to do, in one line.
    pub fn describe(&self, target: &impl std::fmt::Display) -> String {
        match self {
            Self::TooNew(found) => format!(
                "the database {target} has schema version {found}, newer than this build knows \
                 ({SCHEMA_VERSION}) and not compatible with it; run a newer release"
            ),
            Self::Behind(0) => format!(
                "the database {target} has no items schema yet (this build needs version \
                 {SCHEMA_VERSION}); run `items-api migrate` as the database owner, or set \
                 MIGRATE_ON_START=true"
            ),
            Self::Behind(found) => format!(
                "the database {target} has schema version {found}, this build needs \
                 {SCHEMA_VERSION}; run `items-api migrate` as the database owner, or set \
                 MIGRATE_ON_START=true"
            ),
            Self::Role(reason) => reason.clone(),
            Self::Driver(error) => format!(
                "cannot read the schema of {target}: {}",
                crate::store::error_chain(error)
            ),
        }
    }
}

/// The schema version recorded, 0 when there is none.
async fn applied_version(client: &impl GenericClient) -> Result<i32, tokio_postgres::Error> {
    let recorded: bool = client
        .query_typed_one(
            "SELECT to_regclass('items_schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .try_get(0)?;
    if !recorded {
        return Ok(0);
    }
    client
        .query_typed_one(
            "SELECT coalesce(max(version), 0) FROM items_schema_migrations",
            &[],
        )
        .await?
        .try_get(0)
}

/// Whether every migration past this build's is marked compatible with it.
async fn newer_is_compatible(client: &impl GenericClient) -> Result<bool, tokio_postgres::Error> {
    let oldest: Option<i32> = client
        .query_typed_one(
            // Through the row as JSON: a table written before the column existed has none.
            "SELECT max(coalesce((to_jsonb(m) ->> 'compatible_from')::integer, m.version))
             FROM items_schema_migrations m WHERE m.version > $1",
            &[(&SCHEMA_VERSION, Type::INT4)],
        )
        .await?
        .try_get(0)?;
    Ok(oldest.is_none_or(|oldest| oldest <= SCHEMA_VERSION))
}

/// For a process that does not migrate: the schema version found, when this build can serve it.
pub async fn check(client: &Client) -> Result<i32, SchemaError> {
    let found = applied_version(client).await?;
    if found < SCHEMA_VERSION {
        return Err(SchemaError::Behind(found));
    }
    if found > SCHEMA_VERSION && !newer_is_compatible(client).await? {
        return Err(SchemaError::TooNew(found));
    }
    Ok(found)
}

/// Schema versions before and after `migrate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
}

/// Applies the missing migrations in one transaction, under a transaction-scoped advisory lock
/// (a session lock would not survive PgBouncer's transaction pooling).
pub async fn migrate(client: &mut Client) -> Result<Migrated, SchemaError> {
    let transaction = client.transaction().await?;
    // IF NOT EXISTS reports an existing table as a NOTICE, which reads like an error in the log.
    transaction
        .batch_execute("SET LOCAL client_min_messages = warning")
        .await?;
    transaction
        .execute_typed(
            "SELECT pg_advisory_xact_lock($1)",
            &[(&MIGRATION_LOCK, Type::INT8)],
        )
        .await?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS items_schema_migrations (
               version integer PRIMARY KEY,
               applied_at timestamptz NOT NULL DEFAULT now()
             );
             ALTER TABLE items_schema_migrations ADD COLUMN IF NOT EXISTS compatible_from integer",
        )
        .await?;
    let from = applied_version(&transaction).await?;
    if from > SCHEMA_VERSION && !newer_is_compatible(&transaction).await? {
        return Err(SchemaError::TooNew(from));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(from.max(0) as usize) {
        let version = index as i32 + 1;
        transaction.batch_execute(migration.sql).await?;
        transaction
            .execute_typed(
                "INSERT INTO items_schema_migrations (version, compatible_from) VALUES ($1, $2)",
                &[
                    (&version, Type::INT4),
                    (&migration.compatible_from, Type::INT4),
                ],
            )
            .await?;
        tracing::info!(version, "applied database migration");
    }
    // The table this build needs, whoever created it.
    transaction
        .batch_execute("SELECT id, text, created_at FROM items LIMIT 0")
        .await?;
    transaction.commit().await?;
    Ok(Migrated {
        from,
        to: from.max(SCHEMA_VERSION),
    })
}

/// Gives `role` what serving needs and nothing more: reading and writing the items (and drawing
/// their ids) and the idempotency keys, reading the revision and the schema version. The change bookkeeping runs with
/// its owner's rights (migration 0003) and LISTEN needs no grant. Creates the role first when
/// it is missing and `role.create` says how.
pub async fn grant(client: &mut Client, role: &AppRole) -> Result<(), SchemaError> {
    let transaction = client.transaction().await?;
    let existing = transaction
        .query_typed_opt(
            "SELECT rolsuper, rolname = current_user,
                    pg_has_role(rolname, (SELECT relowner FROM pg_class
                                          WHERE oid = 'items'::regclass), 'USAGE')
             FROM pg_roles WHERE rolname = $1",
            &[(&role.name, Type::TEXT)],
        )
        .await?;
    let name = &role.name;
    if let Some(row) = &existing {
        let (superuser, is_self, owns): (bool, bool, bool) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if superuser || is_self || owns {
            return Err(SchemaError::Role(format!(
                "the role {name} is a superuser, the migrating role itself, or the owner of the \
                 items: serving as it would not be least privilege; name a role of its own"
            )));
        }
    }
    match (&existing, &role.create) {
        (None, RoleCreation::Existing) => {
            return Err(SchemaError::Role(format!(
                "the role {name} does not exist; create it, or name its password file \
                 (MIGRATE_APP_ROLE_PASSWORD_FILE) or its Entra object id \
                 (MIGRATE_APP_ROLE_ENTRA_OBJECT_ID) so that migrate creates it"
            )));
        }
        (_, RoleCreation::Password(password)) => {
            let verb = if existing.is_some() {
                "ALTER"
            } else {
                "CREATE"
            };
            // Quoted by the server: a password may hold any character.
            let statement: String = transaction
                .query_typed_one(
                    &format!("SELECT format('{verb} ROLE %I LOGIN PASSWORD %L', $1, $2)"),
                    &[(name, Type::TEXT), (password, Type::TEXT)],
                )
                .await?
                .try_get(0)?;
            transaction.batch_execute(&statement).await?;
        }
        (None, RoleCreation::EntraObjectId(object_id)) => {
            // Azure Database for PostgreSQL maps a database role to an Entra principal this way
            // only; a plain CREATE ROLE could not sign in with a token.
            transaction
                .execute_typed(
                    "SELECT pgaadauth_create_principal_with_oid($1, $2, 'service', false, false)",
                    &[(name, Type::TEXT), (object_id, Type::TEXT)],
                )
                .await?;
        }
        (Some(_), RoleCreation::Existing | RoleCreation::EntraObjectId(_)) => {}
    }
    let grants: String = transaction
        .query_typed_one(
            "SELECT concat_ws(';',
               format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), $1),
               format('GRANT USAGE ON SCHEMA %I TO %I', n.nspname, $1),
               format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.items TO %I', n.nspname, $1),
               format('GRANT USAGE ON SEQUENCE %s TO %I', pg_get_serial_sequence(
                 format('%I.items', n.nspname), 'id'), $1),
               format('GRANT SELECT ON %I.items_revision, %I.items_schema_migrations TO %I',
                 n.nspname, n.nspname, $1),
               format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.idempotency_keys TO %I',
                 n.nspname, $1))
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = 'items'::regclass",
            &[(name, Type::TEXT)],
        )
        .await?
        .try_get(0)?;
    transaction.batch_execute(&grants).await?;
    transaction.commit().await?;
    tracing::info!(role = %name, "granted the serving rights");
    Ok(())
}
