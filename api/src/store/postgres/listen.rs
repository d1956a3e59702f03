//! The change feed on Postgres: a connection of its own (outside the pool) that `LISTEN`s on
//! `items_changes_<feed>`, where a trigger announces every statement that changed items
//! (migration 0002), whichever process made it. Each announcement names a revision and the changed ids; the
//! listener reads those items once for all its subscribers and publishes them in commit order.
//!
//! Whenever changes may have been missed (before the first connection, while reconnecting, an
//! announcement too big to list its ids), the feed is reset: subscribers read the list again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;
use tokio_postgres::types::Type;

use super::connect::{Connection, Target};
use super::pool::{RETRY_FIRST, RETRY_MAX, Shared};
use super::revision::read_revision;
use super::text::item_from_row;
use crate::feed::{Change, ChangeFeed, Position};
use crate::metrics;
use crate::store::{Item, error_chain};

/// Announcements handled together: their items are read in one query.
const BATCH: usize = 256;

/// One announcement from the trigger.
#[derive(Debug, Deserialize)]
struct Announcement {
    revision: u64,
    total: i64,
    change: String,
    #[serde(default)]
    ids: Vec<i64>,
    /// The `traceparent`s of the requests whose write this is, when they were traced.
    #[serde(default)]
    traces: Option<String>,
}

/// Why listening stopped; it starts again after a pause.
#[derive(Debug, thiserror::Error)]
enum ListenError {
    #[error(transparent)]
    Driver(#[from] tokio_postgres::Error),
    #[error("the listening connection closed")]
    Closed,
    #[error("the database did not answer within {0} ms")]
    Timeout(u128),
    #[error("a notification that is not an announcement of changes: {0}")]
    Malformed(String),
}

/// Listens until the task is aborted, reconnecting after failures; `listening` says whether it
/// is listening right now.
pub(super) async fn listen(
    shared: Arc<Shared>,
    target: Target,
    feed: Arc<ChangeFeed>,
    listening: watch::Sender<bool>,
) {
    let connector = target.connector();
    let mut pause = RETRY_FIRST;
    let mut last_error = String::new();
    let mut sessions = 0_u64;
    loop {
        // The schema the trigger belongs to is in place once the store is ready.
        if !shared.ready.load(Ordering::Acquire) {
            tokio::time::sleep(RETRY_FIRST).await;
            continue;
        }
        let mut config = target.driver_config(shared.options.connect_timeout);
        // So operators can tell it from the pool's connections.
        let name = match config.get_application_name() {
            Some(name) => format!("{name} (change listener)"),
            None => "items-api (change listener)".to_owned(),
        };
        config.application_name(&name);
        let error = match connector.open(&config).await {
            Ok((client, connection)) => {
                sessions += 1;
                let session = Listening {
                    reconnecting: sessions > 1,
                    client: &client,
                    feed: &feed,
                    timeout: shared.options.statement_timeout,
                    listening: &listening,
                };
                let error = session.run(connection, &mut pause).await;
                listening.send_replace(false);
                drop(client);
                error
            }
            Err(error) => error.into(),
        };
        let error = error_chain(&error);
        if error != last_error {
            tracing::warn!(database = %target, %error, "not listening for changes; retrying");
            last_error = error;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

struct Listening<'a> {
    /// Not the first connection this listener made.
    reconnecting: bool,
    client: &'a tokio_postgres::Client,
    feed: &'a ChangeFeed,
    timeout: Duration,
    listening: &'a watch::Sender<bool>,
}

impl Listening<'_> {
    /// Listens on one connection until it fails.
    async fn run(&self, connection: Connection, pause: &mut Duration) -> ListenError {
        let (notifications, mut received) = mpsc::channel(BATCH * 4);
        let driver = tokio::spawn(drive(connection, notifications));
        let error = match self.start().await {
            Ok(mut position) => {
                *pause = RETRY_FIRST;
                self.listening.send_replace(true);
                tracing::info!(feed = %position, "listening for changes");
                if self.reconnecting && metrics::enabled() {
                    ::metrics::counter!(metrics::LISTEN_RECONNECTS).increment(1);
                }
                let mut batch = Vec::with_capacity(BATCH);
                loop {
                    if received.recv_many(&mut batch, BATCH).await == 0 {
                        break ListenError::Closed;
                    }
                    if let Err(error) = self.handle(&mut position, batch.drain(..)).await {
                        break error;
                    }
                }
            }
            Err(error) => error,
        };
        driver.abort();
        error
    }

    /// Listens, then reads where the items stand: every commit after that is announced.
    async fn start(&self) -> Result<Position, ListenError> {
        let feed = self
            .within(
                self.client
                    .query_typed_one("SELECT feed FROM items_revision", &[]),
            )
            .await?
            .try_get::<_, i64>(0)?;
        // The only channel this connection listens on: every notification it gets is ours.
        self.within(
            self.client
                .batch_execute(&format!("LISTEN items_changes_{feed}")),
        )
        .await?;
        let revision = self.within(read_revision(self.client)).await?;
        let position = Position {
            feed: feed.cast_unsigned(),
            revision: revision.number,
        };
        self.feed.skip_to(
            position,
            revision.item_count,
            "the server started listening",
        );
        Ok(position)
    }

    /// Publishes a batch of announcements, in order, reading their items in one query.
    async fn handle(
        &self,
        position: &mut Position,
        batch: impl Iterator<Item = String>,
    ) -> Result<(), ListenError> {
        let mut announcements = Vec::with_capacity(BATCH);
        for payload in batch {
            let announcement: Announcement = serde_json::from_str(&payload)
                .map_err(|error| ListenError::Malformed(format!("{error}: {payload}")))?;
            if let Some(traces) = &announcement.traces {
                crate::traces::record_arrival(
                    traces,
                    "items_changes",
                    &announcement.change,
                    announcement.revision,
                );
            }
            // Already covered by the reading `start` made.
            if announcement.revision > position.revision {
                announcements.push(announcement);
            }
        }
        let listened = self.feed.has_subscribers();
        let wanted: Vec<i64> = announcements
            .iter()
            .filter(|announcement| listened && announcement.change != "delete")
            .flat_map(|announcement| announcement.ids.iter().copied())
            .collect();
        let items = self.read(&wanted).await?;
        for announcement in announcements {
            let next = Position {
                revision: announcement.revision,
                ..*position
            };
            let changes = listened.then(|| changes_of(&announcement, &items));
            match changes.flatten() {
                Some(changes) if announcement.revision == position.revision + 1 => {
                    self.feed
                        .publish(next.revision, changes, announcement.total);
                }
                Some(_) => self
                    .feed
                    .skip_to(next, announcement.total, "changes were missed"),
                None if listened => {
                    self.feed
                        .skip_to(next, announcement.total, "too many changes at once")
                }
                None => self
                    .feed
                    .skip_to(next, announcement.total, "nobody was listening"),
            }
            *position = next;
        }
        Ok(())
    }

    /// The items with these ids that still exist.
    async fn read(&self, ids: &[i64]) -> Result<HashMap<i64, Item>, ListenError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self
            .within(self.client.query_typed(
                "SELECT id, text, created_at FROM items WHERE id = ANY($1)",
                &[(&ids, Type::INT8_ARRAY)],
            ))
            .await?;
        rows.iter()
            .map(|row| item_from_row(row).map(|item| (item.id, item)))
            .collect::<Result<_, _>>()
            .map_err(ListenError::from)
    }

    async fn within<T>(
        &self,
        request: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, ListenError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ListenError::Timeout(self.timeout.as_millis())),
        }
    }
}

/// What an announcement changed, or `None` when it does not say (`reset`). An item created or
/// changed and deleted again before it was read is left out: its deletion follows.
fn changes_of(announcement: &Announcement, items: &HashMap<i64, Item>) -> Option<Vec<Change>> {
    let found = |id: &i64| items.get(id).cloned();
    match announcement.change.as_str() {
        "insert" => Some(
            announcement
                .ids
                .iter()
                .filter_map(found)
                .map(Change::Created)
                .collect(),
        ),
        "update" => Some(
            announcement
                .ids
                .iter()
                .filter_map(found)
                .map(Change::Updated)
                .collect(),
        ),
        "delete" => Some(
            announcement
                .ids
                .iter()
                .map(|&id| Change::Deleted(id))
                .collect(),
        ),
        _ => None,
    }
}

/// Drives the connection, passing notifications on, until it closes or fails.
async fn drive(mut connection: Connection, notifications: mpsc::Sender<String>) {
    let mut messages =
        futures_util::stream::poll_fn(move |context| connection.poll_message(context));
    while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
        match message {
            Ok(AsyncMessage::Notification(notification)) => {
                if notifications
                    .send(notification.payload().to_owned())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "the listening connection closed");
                return;
            }
        }
    }
}
