//! `items-api transfer`: copies every item from one database to another, either backend to either
//! backend, with ids, texts and timestamps unchanged, and the idempotency keys with them (a retry
//! after the move still finds its item).
//!
//! The source is read as one consistent snapshot (a service may keep running on it); the target
//! must hold no items and is written in one transaction, so a failed transfer leaves it empty.
//! The id sequence of the target moves past the highest id the source ever handed out, so no id
//! is handed out twice. Afterwards the target is read back and compared with what was read from
//! the source: same number of items and the same SHA-256 over every item in id order.

use std::time::{Duration, Instant};

pub use crate::store::bulk::TransferError;
use crate::store::bulk::{Reader, Writer};
use crate::store::{Item, Location, postgres, sqlite};

/// How far a transfer has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub copied: u64,
    pub total: u64,
}

/// What a finished transfer copied and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReport {
    pub items: u64,
    /// Idempotency keys copied along.
    pub keys: u64,
    /// Where the target's id sequence now stands.
    pub highest_id_ever: i64,
    /// SHA-256 over every item, in id order, equal on both sides.
    pub checksum: String,
    pub elapsed: Duration,
}

/// Copies every item from `from` to `to`, then checks `to` against what was read.
pub async fn transfer(
    from: &Location,
    to: &Location,
    mut progress: impl FnMut(Progress),
) -> Result<TransferReport, TransferError> {
    let started = Instant::now();
    if same_database(from, to) {
        return Err(TransferError::new(format!(
            "--from and --to name the same database ({from})"
        )));
    }
    let mut source = reader(from).await?;
    let mut target = writer(to).await?;
    let total = source.total();
    let mut digest = Digest::default();
    progress(Progress { copied: 0, total });
    while let Some(items) = source.next_batch().await? {
        digest.add(&items);
        target.write(items).await?;
        progress(Progress {
            copied: digest.count,
            total,
        });
    }
    let mut keys = 0;
    while let Some(batch) = source.next_keys().await? {
        keys += batch.len() as u64;
        target.write_keys(batch).await?;
    }
    let highest_id_ever = source.highest_id_ever().max(digest.highest_id);
    drop(source);
    target.commit(highest_id_ever).await?;

    let copied = digest.finish();
    let mut check = reader(to).await?;
    let mut read_back = Digest::default();
    while let Some(items) = check.next_batch().await? {
        read_back.add(&items);
    }
    let read_back = read_back.finish();
    if read_back != copied {
        return Err(TransferError::new(format!(
            "the target does not match what was read: {} items read, {} in the target \
             (checksums {} and {}); the target may have been written to meanwhile",
            copied.0, read_back.0, copied.1, read_back.1
        )));
    }
    Ok(TransferReport {
        items: copied.0,
        keys,
        highest_id_ever,
        checksum: copied.1,
        elapsed: started.elapsed(),
    })
}

/// Where a bulk copy reads from: a snapshot of the database at `location`.
async fn reader(location: &Location) -> Result<Box<dyn Reader>, TransferError> {
    Ok(match location {
        Location::Sqlite(path) => Box::new(sqlite::transfer::reader(path).await?),
        Location::Postgres(target) => Box::new(postgres::transfer::reader(target).await?),
    })
}

/// Where a bulk copy writes to: the empty database at `location`.
async fn writer(location: &Location) -> Result<Box<dyn Writer>, TransferError> {
    Ok(match location {
        Location::Sqlite(path) => Box::new(sqlite::transfer::writer(path).await?),
        Location::Postgres(target) => Box::new(postgres::transfer::writer(target).await?),
    })
}

fn same_database(from: &Location, to: &Location) -> bool {
    match (from, to) {
        (Location::Sqlite(a), Location::Sqlite(b)) => {
            a == b
                || a.canonicalize()
                    .ok()
                    .is_some_and(|a| b.canonicalize().ok() == Some(a))
        }
        (Location::Postgres(a), Location::Postgres(b)) => a.to_string() == b.to_string(),
        _ => false,
    }
}

/// Count and SHA-256 over items in id order. Each field is length-prefixed, so no two different
/// lists hash alike by shifting bytes between fields.
struct Digest {
    context: ring::digest::Context,
    count: u64,
    highest_id: i64,
}

impl Default for Digest {
    fn default() -> Self {
        Self {
            context: ring::digest::Context::new(&ring::digest::SHA256),
            count: 0,
            highest_id: 0,
        }
    }
}

impl Digest {
    fn add(&mut self, items: &[Item]) {
        for item in items {
            self.context.update(&item.id.to_be_bytes());
            for field in [&item.text, &item.created_at] {
                self.context.update(&(field.len() as u64).to_be_bytes());
                self.context.update(field.as_bytes());
            }
            self.count += 1;
            self.highest_id = self.highest_id.max(item.id);
        }
    }

    fn finish(self) -> (u64, String) {
        let hash = self.context.finish();
        let hex: String = hash
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        (self.count, hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: i64, text: &str, created_at: &str) -> Item {
        Item {
            id,
            text: text.into(),
            created_at: created_at.into(),
        }
    }

    fn digest_of(items: &[Item]) -> (u64, String) {
        let mut digest = Digest::default();
        digest.add(items);
        digest.finish()
    }

    #[test]
    fn the_checksum_sees_every_field_and_the_boundaries_between_them() {
        let base = digest_of(&[item(1, "ab", "c")]);
        assert_ne!(base, digest_of(&[item(1, "a", "bc")]));
        assert_ne!(base, digest_of(&[item(2, "ab", "c")]));
        assert_ne!(base, digest_of(&[item(1, "ab", "d")]));
        assert_eq!(base, digest_of(&[item(1, "ab", "c")]));
        assert_eq!(base.1.len(), 64);
    }

    #[test]
    fn batches_hash_like_one_list() {
        let items = [item(1, "a", "t"), item(2, "b", "t"), item(5, "c", "t")];
        let mut split = Digest::default();
        split.add(&items[..1]);
        split.add(&items[1..]);
        assert_eq!(split.finish(), digest_of(&items));
    }

    #[tokio::test]
    async fn a_database_is_not_transferred_onto_itself() {
        let location = Location::Sqlite("same.db".into());
        let error = transfer(&location, &location, |_| {}).await.unwrap_err();
        assert!(error.0.contains("same database"), "{error}");
    }
}
