//! `ChangeFeed`: the changes to the items in commit order, for the event stream. Backend-neutral:
//! each backend publishes what it committed (SQLite from its writer, Postgres from its listener),
//! and readers subscribe here.
//!
//! A position in the feed is the store revision after a commit, so on Postgres every replica
//! names the same moment by the same position and a client may resume on any of them. Recent
//! commits are kept so a reconnecting client gets what it missed; when they are no longer kept,
//! or the backend could not say what changed, the client is told to read the list again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use crate::domain::Item;

/// A number that changes whenever the items change, and how many items there are then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    pub number: u64,
    pub item_count: i64,
}

/// Commits kept for clients that resume.
const KEPT_COMMITS: usize = 1024;
/// Bytes of item text kept for them at most: items can be long, and so can a burst of them.
const KEPT_TEXT_BYTES: usize = 8 * 1024 * 1024;
/// Commits a subscriber may fall behind by before it is told to read the list again.
const SUBSCRIBER_BACKLOG: usize = 1024;

/// One change to one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created(Item),
    Updated(Item),
    Deleted(i64),
}

impl Change {
    fn text_bytes(&self) -> usize {
        match self {
            Self::Created(item) | Self::Updated(item) => item.text.len(),
            Self::Deleted(_) => 0,
        }
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// Where the feed stands when a subscriber starts without a position.
    Ready { position: Position, total: i64 },
    /// What one commit changed, in order; `total` is the item count after it.
    Commit {
        position: Position,
        changes: Arc<[Change]>,
        total: i64,
    },
    /// Changes may have been missed: read the list again.
    Reset {
        position: Position,
        total: i64,
        reason: &'static str,
    },
}

/// A point in the feed: which feed (a process on SQLite, a database on Postgres) and the revision
/// there. Written `<feed>.<revision>`, the event id clients send back in `Last-Event-ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub feed: u64,
    pub revision: u64,
}

impl Position {
    pub fn parse(text: &str) -> Option<Self> {
        let (feed, revision) = text.trim().split_once('.')?;
        Some(Self {
            feed: u64::from_str_radix(feed, 16).ok()?,
            revision: revision.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{:016x}.{}", self.feed, self.revision)
    }
}

/// A subscriber's start: what it missed (or where the feed stands), then the live events.
pub struct Subscription {
    pub first: Vec<FeedEvent>,
    pub live: broadcast::Receiver<FeedEvent>,
}

struct State {
    /// The feed's name in positions.
    feed: u64,
    /// Contiguous commits ending at the current revision.
    recent: VecDeque<FeedEvent>,
    recent_text_bytes: usize,
}

pub struct ChangeFeed {
    state: Mutex<State>,
    sender: broadcast::Sender<FeedEvent>,
    /// The current revision and item count. Atomics, because every list request reads them (see
    /// `revision`): a lock there would be taken by every request thread in turn. Written only
    /// under the lock, the count first, so a reader without it sees a count at least as new as
    /// the revision it read, and one holding it sees the two as they go together.
    revision: AtomicU64,
    total: AtomicI64,
}

impl ChangeFeed {
    pub fn new(position: Position, total: i64) -> Self {
        Self {
            state: Mutex::new(State {
                feed: position.feed,
                recent: VecDeque::new(),
                recent_text_bytes: 0,
            }),
            sender: broadcast::channel(SUBSCRIBER_BACKLOG).0,
            revision: AtomicU64::new(position.revision),
            total: AtomicI64::new(total),
        }
    }

    /// A feed named after this moment: positions from an earlier process never match it.
    pub fn new_process_feed(revision: u64, total: i64) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let feed =
            u64::try_from(started.as_nanos()).unwrap_or(u64::MAX) ^ u64::from(std::process::id());
        Self::new(Position { feed, revision }, total)
    }

    /// Whether anyone is listening: without subscribers, nothing needs to be built.
    pub fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn position(&self) -> Position {
        self.position_in(&self.lock())
    }

    /// The current position; `state` is the locked state, which holds the feed's name.
    fn position_in(&self, state: &State) -> Position {
        Position {
            feed: state.feed,
            revision: self.revision.load(Ordering::Acquire),
        }
    }

    /// The revision of the last commit recorded, with the item count after it.
    pub fn revision(&self) -> Revision {
        Revision {
            number: self.revision.load(Ordering::Acquire),
            item_count: self.total.load(Ordering::Acquire),
        }
    }

    fn set_revision(&self, revision: u64, total: i64) {
        self.total.store(total, Ordering::Release);
        self.revision.store(revision, Ordering::Release);
    }

    /// Records a commit that brought the items to `revision`.
    pub fn publish(&self, revision: u64, changes: Vec<Change>, total: i64) {
        let mut state = self.lock();
        if revision != self.revision.load(Ordering::Acquire) + 1 {
            // Whatever came between is not known here: those resuming from before it re-read.
            state.forget_recent();
        }
        self.set_revision(revision, total);
        let event = FeedEvent::Commit {
            position: self.position_in(&state),
            changes: changes.into(),
            total,
        };
        state.keep(event.clone());
        // No receivers is not an error: the event is kept for those who resume.
        let _ = self.sender.send(event);
    }

    /// Records that the items reached `position` by changes nobody is told about (nobody was
    /// listening, or the backend cannot say what they were): subscribers, and clients resuming
    /// from before, read the list again.
    pub fn skip_to(&self, position: Position, total: i64, reason: &'static str) {
        let mut state = self.lock();
        state.feed = position.feed;
        self.set_revision(position.revision, total);
        state.forget_recent();
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(FeedEvent::Reset {
                position,
                total,
                reason,
            });
        }
    }

    /// Starts a subscriber after `resume` (an event id it received before), or at the current
    /// position. Events published from now on reach `live`, none twice and none missed.
    pub fn subscribe(&self, resume: Option<&str>) -> Subscription {
        let state = self.lock();
        let live = self.sender.subscribe();
        let (position, total) = (self.position_in(&state), self.total.load(Ordering::Acquire));
        let reset = |reason| FeedEvent::Reset {
            position,
            total,
            reason,
        };
        let first = match resume {
            None => vec![FeedEvent::Ready { position, total }],
            Some(text) => match Position::parse(text) {
                Some(seen) if seen == position => Vec::new(),
                Some(seen) if seen.feed == position.feed && seen.revision < position.revision => {
                    let oldest_kept = state.recent.front().map(|event| event.revision());
                    if oldest_kept.is_some_and(|oldest| oldest <= seen.revision + 1) {
                        state
                            .recent
                            .iter()
                            .filter(|event| event.revision() > seen.revision)
                            .cloned()
                            .collect()
                    } else {
                        vec![reset("the changes since are no longer kept")]
                    }
                }
                Some(seen) if seen.feed == position.feed => {
                    vec![reset("the position is ahead of this server")]
                }
                _ => vec![reset(
                    "the position is from another server or an earlier run",
                )],
            },
        };
        Subscription { first, live }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn forget_recent(&mut self) {
        self.recent.clear();
        self.recent_text_bytes = 0;
    }

    fn keep(&mut self, event: FeedEvent) {
        if let FeedEvent::Commit { changes, .. } = &event {
            self.recent_text_bytes += changes.iter().map(Change::text_bytes).sum::<usize>();
        }
        self.recent.push_back(event);
        while self.recent.len() > KEPT_COMMITS
            || (self.recent_text_bytes > KEPT_TEXT_BYTES && self.recent.len() > 1)
        {
            if let Some(FeedEvent::Commit { changes, .. }) = self.recent.pop_front() {
                self.recent_text_bytes -= changes.iter().map(Change::text_bytes).sum::<usize>();
            }
        }
    }
}

impl FeedEvent {
    pub fn position(&self) -> Position {
        match self {
            Self::Ready { position, .. }
            | Self::Commit { position, .. }
            | Self::Reset { position, .. } => *position,
        }
    }

    fn revision(&self) -> u64 {
        self.position().revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: i64) -> Item {
        Item {
            id,
            text: format!("item {id}"),
            created_at: "2026-12-01T00:00:00.000000+00:00".into(),
        }
    }

    fn feed() -> ChangeFeed {
        ChangeFeed::new(
            Position {
                feed: 0xabc,
                revision: 10,
            },
            0,
        )
    }

    fn revisions(events: &[FeedEvent]) -> Vec<u64> {
        events.iter().map(FeedEvent::revision).collect()
    }

    #[test]
    fn positions_read_back_what_they_write() {
        let position = Position {
            feed: 0xabc,
            revision: 42,
        };
        assert_eq!(position.to_string(), "0000000000000abc.42");
        assert_eq!(Position::parse(&position.to_string()), Some(position));
        for bad in ["", "42", "x.1", "abc.", "abc.-1", "abc.1.2"] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_new_subscriber_learns_where_the_feed_stands_then_gets_each_commit() {
        let feed = feed();
        let mut subscription = feed.subscribe(None);
        assert!(matches!(
            subscription.first[..],
            [FeedEvent::Ready { total: 0, .. }]
        ));
        feed.publish(11, vec![Change::Created(item(1))], 1);
        match subscription.live.try_recv().unwrap() {
            FeedEvent::Commit {
                position,
                changes,
                total,
            } => {
                assert_eq!(position.revision, 11);
                assert_eq!(&*changes, &[Change::Created(item(1))]);
                assert_eq!(total, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_resuming_subscriber_gets_exactly_the_commits_it_missed() {
        let feed = feed();
        let start = feed.position().to_string();
        for (revision, id) in (11..=13).zip(1..) {
            feed.publish(revision, vec![Change::Created(item(id))], id);
        }
        assert_eq!(revisions(&feed.subscribe(Some(&start)).first), [11, 12, 13]);
        let after_12 = Position {
            revision: 12,
            ..feed.position()
        };
        assert_eq!(
            revisions(&feed.subscribe(Some(&after_12.to_string())).first),
            [13]
        );
        let now = feed.position().to_string();
        assert!(feed.subscribe(Some(&now)).first.is_empty());
    }

    #[test]
    fn a_position_that_cannot_be_served_resets() {
        let feed = feed();
        feed.publish(11, vec![Change::Deleted(1)], 0);
        let foreign = Position {
            feed: 1,
            revision: 10,
        };
        let ahead = Position {
            revision: 99,
            ..feed.position()
        };
        for resume in [foreign.to_string(), ahead.to_string(), "garbage".into()] {
            let first = feed.subscribe(Some(&resume)).first;
            assert!(
                matches!(first[..], [FeedEvent::Reset { position, .. }] if position.revision == 11),
                "{resume}: {first:?}"
            );
        }
    }

    #[test]
    fn a_skip_resets_listeners_and_forgets_what_came_before() {
        let feed = feed();
        let before = feed.position().to_string();
        feed.publish(11, vec![Change::Deleted(1)], 0);
        let mut subscription = feed.subscribe(None);
        feed.skip_to(
            Position {
                revision: 15,
                ..feed.position()
            },
            3,
            "test",
        );
        assert!(matches!(
            subscription.live.try_recv().unwrap(),
            FeedEvent::Reset { total: 3, .. }
        ));
        assert!(matches!(
            feed.subscribe(Some(&before)).first[..],
            [FeedEvent::Reset { .. }]
        ));
    }

    #[test]
    fn kept_commits_are_bounded_by_count_and_by_text() {
        let feed = feed();
        let start = feed.position().to_string();
        for revision in 11..11 + KEPT_COMMITS as u64 + 5 {
            feed.publish(revision, vec![Change::Deleted(1)], 0);
        }
        assert_eq!(feed.lock().recent.len(), KEPT_COMMITS);
        assert!(matches!(
            feed.subscribe(Some(&start)).first[..],
            [FeedEvent::Reset { .. }]
        ));

        let long = Item {
            text: "x".repeat(KEPT_TEXT_BYTES / 2 + 1),
            ..item(1)
        };
        let next = feed.position().revision + 1;
        for revision in next..next + 3 {
            feed.publish(revision, vec![Change::Updated(long.clone())], 1);
        }
        assert!(feed.lock().recent_text_bytes <= KEPT_TEXT_BYTES);
        assert_eq!(feed.lock().recent.len(), 1);
    }
}
