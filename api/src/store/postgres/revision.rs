//! The revision and item count the triggers keep, read once for every caller waiting at the time.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::inserts::INSERT_QUEUE;
use super::pool::Shared;
use crate::store::{Revision, StoreError};

pub(super) type RevisionReply = oneshot::Sender<Result<Option<Revision>, StoreError>>;

/// Answers everyone waiting for the revision with one read of it. The number is bumped by a
/// trigger in every transaction that changes the items, whoever makes it; a read sent after a
/// caller started waiting sees every write acknowledged before that, so one read serves all the
/// callers queued when it is sent (and a lone caller is served at once).
pub(super) async fn read_revisions(
    shared: Arc<Shared>,
    mut waiting: mpsc::Receiver<RevisionReply>,
) {
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
pub(super) async fn read_revision(
    client: &tokio_postgres::Client,
) -> Result<Revision, tokio_postgres::Error> {
    let row = client
        .query_typed_one("SELECT revision, item_count FROM items_revision", &[])
        .await?;
    Ok(Revision {
        number: row.try_get::<_, i64>(0)?.cast_unsigned(),
        item_count: row.try_get(1)?,
    })
}
