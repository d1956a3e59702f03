//! Idempotency keys on Postgres: a keyed create claims its key in the batch that stores its item
//! (see `inserts`); a retry finds what the first stored; each replica sweeps keys past their
//! retention.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_postgres::types::Type;

use super::errors::classify;
use super::pool::Shared;
use super::text;
use crate::domain::IdempotencyKey;
use crate::store::{Item, KEY_RETENTION, Once, StoreError, error_chain};

/// What a create whose key was taken answers: the item the key's first create stored (same
/// text), or a refusal (another text).
pub(super) async fn earlier(shared: &Shared, key: &IdempotencyKey) -> Result<Once, StoreError> {
    let earlier = shared
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

/// Every minute, removes the idempotency keys past `KEY_RETENTION`. Each replica does; a delete
/// that finds nothing costs one indexed lookup.
pub(super) async fn forget_old_keys(shared: Arc<Shared>) {
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
