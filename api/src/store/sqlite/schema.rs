//! The schema of a SQLite items database: the migrations, the version check, and what makes an
//! `items` table one this service can serve (the seed's passes unchanged).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::errors::OpenError;

/// Schema migrations, applied in order; `PRAGMA user_version` counts the applied ones.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/sqlite/0001_items.sql"),
    include_str!("../../../migrations/sqlite/0002_idempotency_keys.sql"),
];
/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// A recorded schema version (`PRAGMA user_version`) this build can work with: not negative and
/// not newer than `SCHEMA_VERSION`. Serving and restoring refuse anything else.
pub fn known_schema_version(found: i64) -> Option<usize> {
    usize::try_from(found)
        .ok()
        .filter(|&version| version <= SCHEMA_VERSION)
}

/// Checks that the `items` table is one this service can serve and keep correct: the three
/// columns with their types (`id` an `INTEGER PRIMARY KEY AUTOINCREMENT`, so ids are never
/// reused), no other column a new row would have to fill, and nothing that would refuse or undo
/// a write behind the service's back (triggers, CHECK or UNIQUE constraints, foreign keys).
/// The seed's table passes unchanged. Returns what is wrong, in words.
pub fn check_items_table(conn: &Connection) -> Result<(), String> {
    let read = |error: rusqlite::Error| error.to_string();
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'items'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(read)?;
    let Some(sql) = sql else {
        return Err("it has no items table".into());
    };
    let mut columns = conn.prepare("PRAGMA table_info(items)").map_err(read)?;
    let columns: Vec<(String, String, bool, Option<String>, i64)> = columns
        .query_map([], |row| {
            Ok((
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
            ))
        })
        .map_err(read)?
        .collect::<Result<_, _>>()
        .map_err(read)?;
    let expect = |name: &str, kind: &str, required: bool| -> Result<(), String> {
        match columns.iter().find(|column| column.0 == name) {
            None => Err(format!("items has no column {name}")),
            Some((_, found, _, _, _)) if !found.eq_ignore_ascii_case(kind) => {
                Err(format!("items.{name} is {found:?}, not {kind}"))
            }
            Some((_, _, not_null, _, _)) if required && !not_null => {
                Err(format!("items.{name} is not NOT NULL"))
            }
            Some(_) => Ok(()),
        }
    };
    expect("id", "INTEGER", false)?;
    expect("text", "TEXT", true)?;
    expect("created_at", "TEXT", true)?;
    for (name, _, not_null, default, key) in &columns {
        let ours = ["id", "text", "created_at"].contains(&name.as_str());
        if (name == "id") != (*key == 1) || (!ours && *key > 0) {
            return Err("items.id must be the table's only primary key".into());
        }
        if !ours && *not_null && default.is_none() {
            return Err(format!(
                "items has a column {name} that is NOT NULL without a default: new items could \
                 not be stored"
            ));
        }
    }
    let words: Vec<String> = sql
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .map(str::to_ascii_uppercase)
        .collect();
    if !words.iter().any(|word| word == "AUTOINCREMENT") {
        return Err(
            "items.id is not AUTOINCREMENT: ids of deleted items could be handed out again".into(),
        );
    }
    if let Some(word) = words
        .iter()
        .find(|word| ["CHECK", "REFERENCES", "UNIQUE"].contains(&word.as_str()))
    {
        return Err(format!(
            "items has a {word} constraint that could refuse new items"
        ));
    }
    let trigger: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(read)?;
    if let Some(trigger) = trigger {
        return Err(format!(
            "it has a trigger ({trigger}) that would run behind the service's back"
        ));
    }
    let unique: Option<String> = conn
        .query_row(
            "SELECT name FROM pragma_index_list('items') WHERE \"unique\" AND origin <> 'pk' LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(read)?;
    if let Some(index) = unique {
        return Err(format!(
            "items has a UNIQUE index ({index}) that could refuse new items"
        ));
    }
    Ok(())
}

pub(super) fn schema_version(conn: &Connection, path: &Path) -> Result<usize, OpenError> {
    let applied: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| OpenError::Setup {
            path: path.to_path_buf(),
            cause: source,
        })?;
    known_schema_version(applied).ok_or(OpenError::TooNew {
        path: path.to_path_buf(),
        found: applied,
        known: SCHEMA_VERSION,
    })
}

pub(super) fn migrate_schema(
    conn: &mut Connection,
    path: &Path,
    applied: usize,
) -> Result<(), OpenError> {
    let setup = |source| OpenError::Setup {
        path: path.to_path_buf(),
        cause: source,
    };
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(setup)?;
        tx.execute_batch(sql).map_err(setup)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)
            .map_err(setup)?;
        tx.commit().map_err(setup)?;
        tracing::info!(version = index + 1, "applied database migration");
    }
    Ok(())
}
