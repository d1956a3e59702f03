//! Serialized list responses, reused until the items change.
//!
//! The list is read far more often than it changes, and serializing thousands of items costs
//! more than sending them. An entry is tagged with the store revision read *before* its query
//! ran; a write bumps the revision after it commits and before it is acknowledged, so a reader
//! that saw the acknowledgement can never be served an entry from before the write.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use bytes::Bytes;

/// Distinct first pages kept at once (one per `limit` value).
const MAX_ENTRIES: usize = 32;
/// Bytes kept at once. Items can be up to a megabyte each, so the entry count alone would not
/// bound memory; a body that does not fit is served but not kept.
const MAX_BYTES: usize = 32 * 1024 * 1024;

#[derive(Default)]
pub struct ListCache {
    entries: RwLock<Entries>,
    /// One rebuild at a time: after a write, a burst of readers waits for one query instead of
    /// each running its own (which costs CPU and, for big lists, memory).
    rebuilding: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Entries {
    revision: u64,
    bytes: usize,
    /// Keyed by the page size; `None` is the whole list.
    bodies: HashMap<Option<u32>, Bytes>,
}

impl ListCache {
    /// The cached body for this revision and page size, or `build`'s result (then cached).
    /// Without a revision (the store cannot tell when data changes) nothing is cached.
    pub async fn get_or_build<E, F>(
        &self,
        revision: Option<u64>,
        limit: Option<u32>,
        build: F,
    ) -> Result<Bytes, E>
    where
        F: Future<Output = Result<Bytes, E>>,
    {
        let Some(revision) = revision else {
            return build.await;
        };
        if let Some(hit) = self.lookup(revision, limit) {
            return Ok(hit);
        }
        let _rebuilding = self.rebuilding.lock().await;
        // Whoever held the lock may have built exactly this entry.
        if let Some(hit) = self.lookup(revision, limit) {
            return Ok(hit);
        }
        let body = build.await?;
        self.insert(revision, limit, body.clone());
        Ok(body)
    }

    fn lookup(&self, revision: u64, limit: Option<u32>) -> Option<Bytes> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        (entries.revision == revision)
            .then(|| entries.bodies.get(&limit).cloned())
            .flatten()
    }

    fn insert(&self, revision: u64, limit: Option<u32>, body: Bytes) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if revision > entries.revision {
            entries.revision = revision;
            entries.bodies.clear();
            entries.bytes = 0;
        }
        // An entry built from an older revision is already stale: drop it.
        let fits = entries.bodies.len() < MAX_ENTRIES && entries.bytes + body.len() <= MAX_BYTES;
        if revision == entries.revision && fits && !entries.bodies.contains_key(&limit) {
            entries.bytes += body.len();
            entries.bodies.insert(limit, body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    async fn get(
        cache: &ListCache,
        revision: Option<u64>,
        limit: Option<u32>,
        fresh: &'static str,
    ) -> Bytes {
        cache
            .get_or_build(revision, limit, async {
                Ok::<_, Infallible>(Bytes::from(fresh))
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn serves_the_cached_body_while_the_revision_holds() {
        let cache = ListCache::default();
        assert_eq!(get(&cache, Some(1), None, "first").await, "first");
        assert_eq!(get(&cache, Some(1), None, "second").await, "first");
    }

    #[tokio::test]
    async fn a_new_revision_rebuilds() {
        let cache = ListCache::default();
        get(&cache, Some(1), None, "old").await;
        assert_eq!(get(&cache, Some(2), None, "new").await, "new");
        assert_eq!(get(&cache, Some(2), None, "newer").await, "new");
    }

    #[tokio::test]
    async fn a_body_built_from_an_older_revision_is_not_kept() {
        let cache = ListCache::default();
        get(&cache, Some(5), None, "current").await;
        assert_eq!(get(&cache, Some(4), Some(10), "stale").await, "stale");
        assert_eq!(get(&cache, Some(5), Some(10), "fresh").await, "fresh");
    }

    #[tokio::test]
    async fn page_sizes_are_cached_separately() {
        let cache = ListCache::default();
        get(&cache, Some(1), Some(10), "ten").await;
        assert_eq!(get(&cache, Some(1), Some(20), "twenty").await, "twenty");
        assert_eq!(get(&cache, Some(1), Some(10), "other").await, "ten");
    }

    #[tokio::test]
    async fn concurrent_misses_build_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cache = std::sync::Arc::new(ListCache::default());
        let builds = std::sync::Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (cache, builds) = (cache.clone(), builds.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_build(Some(1), None, async {
                            builds.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            Ok::<_, Infallible>(Bytes::from("body"))
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), "body");
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn memory_is_bounded_in_bytes_not_just_entries() {
        let cache = ListCache::default();
        let big = || async { Ok::<_, Infallible>(Bytes::from(vec![b'x'; MAX_BYTES / 2 + 1])) };
        cache.get_or_build(Some(1), Some(1), big()).await.unwrap();
        cache.get_or_build(Some(1), Some(2), big()).await.unwrap();
        let kept = cache.entries.read().unwrap();
        assert_eq!(
            kept.bodies.len(),
            1,
            "the second body did not fit and was not kept"
        );
        assert!(kept.bytes <= MAX_BYTES);
    }

    #[tokio::test]
    async fn without_a_revision_nothing_is_cached() {
        let cache = ListCache::default();
        get(&cache, None, None, "a").await;
        assert_eq!(get(&cache, None, None, "b").await, "b");
    }
}
