//! `CachedLists`: the list as JSON, read through a cache of serialized responses that are reused
//! until the items change. Backend-neutral: it wraps any `ItemStore`.
//!
//! The list is read far more often than it changes, and serializing thousands of items costs
//! more than sending them. An entry is tagged with the store revision read *before* its query
//! ran; a write bumps the revision after it commits and before it is acknowledged, so a reader
//! that saw the acknowledgement can never be served an entry from before the write.
//!
//! A body worth compressing is also kept gzipped, compressed once per revision: a client (or the
//! Nginx tier) that accepts gzip gets those bytes instead of compressing the same list again for
//! every request.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use futures_util::Stream;

use crate::metrics;
use crate::store::{Item, ItemStore, MAX_LIMIT, Page, Revision, StoreError, error_chain};

/// Distinct first pages kept at once (one per `limit` value).
const MAX_ENTRIES: usize = 32;
/// Bytes kept at once (plain and gzipped together). Items can be up to a megabyte each, so the
/// entry count alone would not bound memory; a body that does not fit is served but not kept.
const MAX_BYTES: usize = 32 * 1024 * 1024;
/// The whole list is kept only up to this size; a longer one is streamed to every client in
/// pages instead, so no request ever holds it all in memory.
const WHOLE_LIST_LIMIT: usize = 8 * 1024 * 1024;
/// Smaller bodies are sent as they are: compressing them saves less than it costs.
const GZIP_FROM: usize = 1024;
/// Larger bodies are compressed on a blocking thread, so a big list does not stall other requests.
const GZIP_INLINE_UP_TO: usize = 64 * 1024;

/// What reading the start of the whole list gave.
enum Prefix {
    /// The whole list, `[...]`.
    Complete(Bytes),
    /// Its first items (an unclosed `[...`) and the id to read on from (exclusive).
    Partial { json: Vec<u8>, before: i64 },
}

/// How to answer a request for the whole list.
enum WholeList {
    Body(ListBody),
    /// Send `json` (an unclosed array), then the items below `before` (all when `None`).
    Stream {
        json: Vec<u8>,
        before: Option<i64>,
    },
}

/// A list response: the JSON, the same gzipped when it is worth it, and its entity tag, made
/// once per body rather than once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListBody {
    pub json: Bytes,
    pub gzip: Option<Bytes>,
    /// A weak entity tag, `W/"<16 hex digits>"`: the plain and the gzipped bytes are one list.
    pub etag: Bytes,
    /// How many items the whole list had when this was read, when known.
    pub total: Option<i64>,
}

/// A hash of the bytes and the total (a deletion further down changes the total, not the page):
/// the same list gives the same tag in every process of one build (`DefaultHasher::new` has
/// fixed keys), so replicas behind one address agree on it.
fn etag_of(json: &[u8], total: Option<i64>) -> Bytes {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(json);
    total.hash(&mut hasher);
    Bytes::from(format!("W/\"{:016x}\"", hasher.finish()))
}

impl ListBody {
    fn plain(json: Bytes, total: Option<i64>) -> Self {
        let etag = etag_of(&json, total);
        Self {
            json,
            gzip: None,
            etag,
            total,
        }
    }

    /// Compresses `json` when it is big enough to be worth it.
    pub async fn new(json: Bytes, total: Option<i64>) -> Self {
        let gzip = if json.len() < GZIP_FROM {
            None
        } else if json.len() <= GZIP_INLINE_UP_TO {
            Some(gzip(&json))
        } else {
            let source = json.clone();
            tokio::task::spawn_blocking(move || gzip(&source))
                .await
                .ok()
        };
        let etag = etag_of(&json, total);
        Self {
            json,
            gzip,
            etag,
            total,
        }
    }

    fn size(&self) -> usize {
        self.json.len() + self.gzip.as_ref().map_or(0, Bytes::len)
    }
}

fn gzip(json: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 4),
        flate2::Compression::new(5),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(json);
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// A list read: one body, or, for a list too long to hold, the body as it is read.
pub enum Listing {
    Body(ListBody),
    /// Chunks of one JSON array, a page of items at a time (see `stream_list`).
    Stream(Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>),
}

/// The store's list, as JSON, cached per store revision.
pub struct CachedLists {
    store: Arc<dyn ItemStore>,
    cache: ListCache,
}

impl CachedLists {
    pub fn new(store: Arc<dyn ItemStore>) -> Self {
        Self {
            store,
            cache: ListCache::default(),
        }
    }

    /// The items of `page` as a JSON array, newest first. The whole list and first pages (what
    /// clients poll) come from the cache when nothing changed since; deeper pages vary too much
    /// to be worth keeping.
    pub async fn list(&self, page: Page) -> Result<Listing, StoreError> {
        match (page.limit, page.before) {
            // The whole list: kept while it is small enough, else streamed in pages.
            (None, None) => {
                let revision = self.store.revision().await?;
                let read = read_whole_list_start(&*self.store);
                Ok(match self.cache.whole_list(revision, read).await? {
                    WholeList::Body(body) => Listing::Body(body),
                    WholeList::Stream { json, before } => {
                        stream_list(Arc::clone(&self.store), json, before)
                    }
                })
            }
            (None, Some(before)) => Ok(stream_list(
                Arc::clone(&self.store),
                b"[".to_vec(),
                Some(before),
            )),
            (Some(_), before) => {
                let revision = match before {
                    None => self.store.revision().await?,
                    Some(_) => None,
                };
                let read = async {
                    Ok::<_, StoreError>(Bytes::from(array_of(&self.store.list(page).await?)))
                };
                let body = self.cache.get_or_build(revision, page.limit, read).await?;
                Ok(Listing::Body(body))
            }
        }
    }
}

/// Appends `items` as elements of a JSON array; `wrote` says whether elements came before (a
/// comma goes first then) and is set once one is written.
fn write_elements(json: &mut Vec<u8>, items: &[Item], wrote: &mut bool) {
    for item in items {
        if *wrote {
            json.push(b',');
        }
        serde_json::to_writer(&mut *json, item).expect("integers and strings always serialize");
        *wrote = true;
    }
}

/// `items` as a JSON array, byte for byte what serializing the `Vec` gives.
fn array_of(items: &[Item]) -> Vec<u8> {
    let mut json = Vec::with_capacity(64 + items.len() * 96);
    json.push(b'[');
    write_elements(&mut json, items, &mut false);
    json.push(b']');
    json
}

/// A long list is read in pages of the largest size a client may ask for: a size every backend
/// serves well. Pages of `MAX_LIMIT` items, newest first, from below `before` (from the newest when `None`).
fn chunk_below(before: Option<i64>) -> Page {
    Page {
        limit: Some(MAX_LIMIT),
        before,
    }
}

/// Whether a page read with `chunk_below` was the last one.
fn is_last_chunk(items: &[Item]) -> bool {
    items.len() < MAX_LIMIT as usize
}

/// The start of the whole list, newest first: all of it, or as much as passes
/// `WHOLE_LIST_LIMIT` bytes.
async fn read_whole_list_start(store: &dyn ItemStore) -> Result<Prefix, StoreError> {
    let mut json = b"[".to_vec();
    let mut wrote = false;
    let mut before = None;
    loop {
        let items = store.list(chunk_below(before)).await?;
        write_elements(&mut json, &items, &mut wrote);
        match items.last() {
            Some(last) if !is_last_chunk(&items) => {
                before = Some(last.id);
                if json.len() > WHOLE_LIST_LIMIT {
                    return Ok(Prefix::Partial {
                        json,
                        before: last.id,
                    });
                }
            }
            _ => {
                json.push(b']');
                return Ok(Prefix::Complete(Bytes::from(json)));
            }
        }
    }
}

/// A list sent as it is read, a page of items at a time: `json` (an unclosed array, possibly
/// with items), then every item below `before`. Memory stays at one page whatever the list's
/// size. Pages are read one after another, not in one snapshot: items added meanwhile are newer
/// than the first page and not included; one deleted meanwhile may or may not be. A storage error
/// mid-way ends the stream with that error before the closing bracket, so the client sees an
/// incomplete response, never a short valid list.
fn stream_list(store: Arc<dyn ItemStore>, json: Vec<u8>, before: Option<i64>) -> Listing {
    struct Reading {
        store: Arc<dyn ItemStore>,
        pending: Vec<u8>,
        wrote: bool,
        before: Option<i64>,
        done: bool,
    }
    let start = Reading {
        store,
        // `json` is `[` and the elements written so far.
        wrote: json.len() > 1,
        pending: json,
        before,
        done: false,
    };
    let pages = futures_util::stream::unfold(start, |mut reading| async move {
        if reading.done {
            return None;
        }
        let mut chunk = std::mem::take(&mut reading.pending);
        match reading.store.list(chunk_below(reading.before)).await {
            Ok(items) => {
                write_elements(&mut chunk, &items, &mut reading.wrote);
                match items.last() {
                    Some(last) if !is_last_chunk(&items) => reading.before = Some(last.id),
                    _ => {
                        chunk.push(b']');
                        reading.done = true;
                    }
                }
                Some((Ok(Bytes::from(chunk)), reading))
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "a streamed list broke off");
                reading.done = true;
                Some((Err(error), reading))
            }
        }
    });
    Listing::Stream(Box::pin(pages))
}

#[derive(Default)]
struct ListCache {
    entries: RwLock<Entries>,
    /// One rebuild at a time: after a write, a burst of readers waits for one query instead of
    /// each running its own (which costs CPU and, for big lists, memory).
    rebuilding: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Entries {
    revision: u64,
    /// The whole list of this revision was over `WHOLE_LIST_LIMIT`: do not try to keep it.
    whole_too_big: bool,
    bytes: usize,
    /// Keyed by the page size; `None` is the whole list.
    bodies: HashMap<Option<u32>, ListBody>,
}

/// A whole list too big to keep is read anew every time: a miss.
fn count_whole_list(known: &WholeList) {
    count_lookup(match known {
        WholeList::Body(_) => "hit",
        WholeList::Stream { .. } => "miss",
    });
}

fn count_lookup(result: &'static str) {
    if metrics::enabled() {
        ::metrics::counter!(metrics::LIST_CACHE_REQUESTS, "result" => result).increment(1);
    }
}

impl ListCache {
    /// The cached body for this revision and page size, or `build`'s result (then cached).
    /// Without a revision (the store cannot tell when data changes) nothing is cached.
    async fn get_or_build<E, F>(
        &self,
        revision: Option<Revision>,
        limit: Option<u32>,
        build: F,
    ) -> Result<ListBody, E>
    where
        F: Future<Output = Result<Bytes, E>>,
    {
        let Some(Revision {
            number: revision,
            item_count,
        }) = revision
        else {
            return Ok(ListBody::plain(build.await?, None));
        };
        if let Some(hit) = self.lookup(revision, limit) {
            count_lookup("hit");
            return Ok(hit);
        }
        let _rebuilding = self.rebuilding.lock().await;
        // Whoever held the lock may have built exactly this entry.
        if let Some(hit) = self.lookup(revision, limit) {
            count_lookup("hit");
            return Ok(hit);
        }
        count_lookup("miss");
        let json = build.await?;
        // Compressed only what will be kept: a body too big for the cache is sent as it is.
        let body = if json.len() <= MAX_BYTES {
            ListBody::new(json, Some(item_count)).await
        } else {
            ListBody::plain(json, Some(item_count))
        };
        self.insert(revision, limit, body.clone());
        Ok(body)
    }

    /// The whole list (no `limit`, no `before`) for `revision`: the kept body, or, when it is
    /// too big to keep, where the caller must go on streaming it. `read` reads the list from the
    /// newest item until its end or until it has passed `WHOLE_LIST_LIMIT` bytes of JSON.
    async fn whole_list<E, F>(&self, revision: Option<Revision>, read: F) -> Result<WholeList, E>
    where
        F: Future<Output = Result<Prefix, E>>,
    {
        let start = || WholeList::Stream {
            json: b"[".to_vec(),
            before: None,
        };
        let Some(Revision {
            number: revision,
            item_count,
        }) = revision
        else {
            return Ok(start());
        };
        let known = |cache: &Self| -> Option<WholeList> {
            let entries = cache.entries.read().unwrap_or_else(PoisonError::into_inner);
            if entries.revision != revision {
                return None;
            }
            if entries.whole_too_big {
                return Some(start());
            }
            entries.bodies.get(&None).cloned().map(WholeList::Body)
        };
        if let Some(known) = known(self) {
            count_whole_list(&known);
            return Ok(known);
        }
        let _rebuilding = self.rebuilding.lock().await;
        if let Some(known) = known(self) {
            count_whole_list(&known);
            return Ok(known);
        }
        count_lookup("miss");
        match read.await? {
            Prefix::Complete(json) => {
                let body = ListBody::new(json, Some(item_count)).await;
                self.insert(revision, None, body.clone());
                Ok(WholeList::Body(body))
            }
            Prefix::Partial { json, before } => {
                let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
                if revision >= entries.revision {
                    if revision > entries.revision {
                        entries.revision = revision;
                        entries.bodies.clear();
                        entries.bytes = 0;
                    }
                    entries.whole_too_big = true;
                }
                Ok(WholeList::Stream {
                    json,
                    before: Some(before),
                })
            }
        }
    }

    fn lookup(&self, revision: u64, limit: Option<u32>) -> Option<ListBody> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        (entries.revision == revision)
            .then(|| entries.bodies.get(&limit).cloned())
            .flatten()
    }

    fn insert(&self, revision: u64, limit: Option<u32>, body: ListBody) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if revision > entries.revision {
            entries.revision = revision;
            entries.whole_too_big = false;
            entries.bodies.clear();
            entries.bytes = 0;
        }
        // An entry built from an older revision is already stale: drop it.
        let fits = entries.bodies.len() < MAX_ENTRIES && entries.bytes + body.size() <= MAX_BYTES;
        if revision == entries.revision && fits && !entries.bodies.contains_key(&limit) {
            entries.bytes += body.size();
            entries.bodies.insert(limit, body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    fn at(number: u64) -> Option<Revision> {
        Some(Revision {
            number,
            item_count: 0,
        })
    }

    async fn get(
        cache: &ListCache,
        revision: Option<u64>,
        limit: Option<u32>,
        fresh: &'static str,
    ) -> Bytes {
        cache
            .get_or_build(revision.and_then(at), limit, async {
                Ok::<_, Infallible>(Bytes::from(fresh))
            })
            .await
            .unwrap()
            .json
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
                        .get_or_build(at(1), None, async {
                            builds.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            Ok::<_, Infallible>(Bytes::from("body"))
                        })
                        .await
                        .unwrap()
                        .json
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
        // Random bytes: gzip cannot shrink them, so both halves count in full.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let noise: Vec<u8> = (0..MAX_BYTES / 4 + 1)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        let big = || {
            let noise = noise.clone();
            async move { Ok::<_, Infallible>(Bytes::from(noise)) }
        };
        cache.get_or_build(at(1), Some(1), big()).await.unwrap();
        cache.get_or_build(at(1), Some(2), big()).await.unwrap();
        let kept = cache.entries.read().unwrap();
        assert_eq!(
            kept.bodies.len(),
            1,
            "the second body did not fit and was not kept"
        );
        assert!(kept.bytes <= MAX_BYTES);
    }

    #[tokio::test]
    async fn a_big_body_is_kept_gzipped_too_and_a_small_one_is_not() {
        use std::io::Read;
        let json = Bytes::from(format!("[{}]", vec!["{\"id\":1}"; 400].join(",")));
        let body = ListBody::new(json.clone(), None).await;
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&body.gzip.as_ref().unwrap()[..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, json);
        assert!(body.gzip.unwrap().len() < json.len() / 4);
        assert_eq!(ListBody::new(Bytes::from("[]"), None).await.gzip, None);
    }

    #[tokio::test]
    async fn the_etag_follows_the_json_and_the_total_whether_cached_or_not() {
        let json = Bytes::from_static(b"[{\"id\":1}]");
        let cached = ListBody::new(json.clone(), Some(5)).await;
        assert_eq!(cached.etag, ListBody::plain(json.clone(), Some(5)).etag);
        assert_eq!(cached.etag.len(), "W/\"\"".len() + 16);
        let other = ListBody::plain(Bytes::from_static(b"[{\"id\":2}]"), Some(5));
        assert_ne!(cached.etag, other.etag);
        assert_ne!(cached.etag, ListBody::plain(json, Some(4)).etag);
    }

    #[tokio::test]
    async fn without_a_revision_nothing_is_cached() {
        let cache = ListCache::default();
        get(&cache, None, None, "a").await;
        assert_eq!(get(&cache, None, None, "b").await, "b");
    }
}
