//! `/api/items/events`: the changes to the items as Server-Sent Events, for pages that stay open.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt, stream};
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::feed::{Change, ChangeFeed, FeedEvent, Subscription};
use crate::http::error::AppError;
use crate::http::state::AppState;
use crate::http::streams::StreamSlot;
use crate::metrics;
use crate::store::{Item, ItemStore};

/// How soon a browser reconnects after the stream ends (a restart, a deploy).
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(item_events))
}

/// Follow changes to the items.
///
/// A stream of Server-Sent Events (`text/event-stream`) that stays open. Each change made
/// through any server on the same database arrives as one event:
///
/// - `created` and `updated`: `{"item": Item, "total": N}`;
/// - `deleted`: `{"id": N, "total": N}`.
///
/// `total` is the number of items after the change. A stream opened without `Last-Event-ID`
/// starts with `ready` (`{"total": N}`). Event ids name positions: send the last one received
/// back in `Last-Event-ID` (browsers do this when they reconnect) to get the changes since. When
/// they cannot be given (too old, another database, changes the server could not follow), the
/// stream starts with `reset` (`{"total": N, "reason": "..."}`), which also comes whenever the
/// server itself may have missed changes: read the list again then. A comment line is sent when
/// the stream is otherwise idle, so proxies keep it open. The stream ends when the server stops;
/// reconnect.
#[utoipa::path(
    get,
    path = "/api/items/events",
    tag = "items",
    params(
        ("last-event-id" = Option<String>, Header,
         description = "The id of the last event received: the stream resumes after it."),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream",
         body = String,
         example = "event: created\nid: 0000000000abcdef.43\ndata: {\"item\":{\"id\":42,\"text\":\"buy milk\",\"created_at\":\"2026-01-02T03:04:05.123456+00:00\"},\"total\":7}\n\n"),
        (status = 503, description = "As many streams as MAX_EVENT_STREAMS are open", body = crate::http::error::ErrorBody),
    )
)]
async fn item_events(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let streams = &state.event_streams;
    let slot = streams.slot()?;
    // Bytes that are not text are no position either: the feed answers them with `reset`.
    let resume = headers
        .get("last-event-id")
        .map(|value| String::from_utf8_lossy(value.as_bytes()));
    let subscription = state.store.changes().subscribe(resume.as_deref());
    let events = events(Arc::clone(&state.store), subscription, slot).take_until(streams.stopped());
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(streams.heartbeat()))
        .into_response();
    // Proxies that honour it (Nginx does) pass each event on at once instead of buffering.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The subscription as SSE events; `slot` is held for as long as the stream lives.
fn events(
    store: Arc<dyn ItemStore>,
    subscription: Subscription,
    slot: StreamSlot,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let Subscription { first, live } = subscription;
    let reconnect = Event::default().retry(RECONNECT_AFTER).comment("");
    let first = stream::iter(first);
    let live = stream::unfold((store, live, slot), |(store, mut live, slot)| async move {
        let event = match live.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(_)) => behind(store.changes()),
            Err(RecvError::Closed) => return None,
        };
        Some((event, (store, live, slot)))
    });
    stream::once(async { reconnect })
        .chain(
            first
                .chain(live)
                .flat_map(|event| stream::iter(to_sse(&event))),
        )
        .map(Ok)
}

/// Counts what one feed event sends, by SSE event type.
fn count_sent(event: &FeedEvent) {
    let sent = |name: &'static str, events: usize| {
        ::metrics::counter!(metrics::EVENTS_SENT, "event" => name).increment(events as u64);
    };
    match event {
        FeedEvent::Ready { .. } => sent("ready", 1),
        FeedEvent::Reset { .. } => {
            sent("reset", 1);
            ::metrics::counter!(metrics::EVENT_RESETS).increment(1);
        }
        FeedEvent::Commit { changes, .. } => {
            for change in changes.iter() {
                sent(
                    match change {
                        Change::Created(_) => "created",
                        Change::Updated(_) => "updated",
                        Change::Deleted(_) => "deleted",
                    },
                    1,
                );
            }
        }
    }
}

/// A subscriber too slow to take every event is told to read the list again.
fn behind(feed: &ChangeFeed) -> FeedEvent {
    FeedEvent::Reset {
        position: feed.position(),
        total: feed.revision().item_count,
        reason: "this client fell behind",
    }
}

/// One feed event as SSE events: the id (the position after it) goes on the last, so a client
/// that reconnects mid-commit gets the whole commit again rather than half of it.
fn to_sse(event: &FeedEvent) -> Vec<Event> {
    if metrics::enabled() {
        count_sent(event);
    }
    let position = event.position().to_string();
    let mut events = match event {
        FeedEvent::Ready { total, .. } => {
            vec![named("ready", &json!({ "total": total }))]
        }
        FeedEvent::Reset { total, reason, .. } => {
            vec![named("reset", &json!({ "total": total, "reason": reason }))]
        }
        FeedEvent::Commit { changes, total, .. } => changes
            .iter()
            .map(|change| {
                let total = *total;
                match change {
                    Change::Created(item) => named("created", &ItemChange { item, total }),
                    Change::Updated(item) => named("updated", &ItemChange { item, total }),
                    Change::Deleted(id) => named("deleted", &Deletion { id: *id, total }),
                }
            })
            .collect(),
    };
    if let Some(last) = events.pop() {
        events.push(last.id(position));
    }
    events
}

/// `created` and `updated`: the item as the other routes write it.
#[derive(Serialize)]
struct ItemChange<'a> {
    item: &'a Item,
    total: i64,
}

#[derive(Serialize)]
struct Deletion {
    id: i64,
    total: i64,
}

fn named(name: &'static str, data: &impl Serialize) -> Event {
    let json = serde_json::to_string(data).expect("integers and strings always serialize");
    Event::default().event(name).data(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::Position;

    fn render(event: &FeedEvent) -> String {
        use http_body_util::BodyExt;
        let events = stream::iter(to_sse(event).into_iter().map(Ok::<_, Infallible>));
        let body = Sse::new(events).into_response().into_body();
        let bytes = futures::executor::block_on(body.collect())
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn each_change_of_a_commit_is_an_event_and_only_the_last_carries_the_position() {
        let item = Item {
            id: 7,
            text: "two\nlines".into(),
            created_at: "2026-12-01T00:00:00.000000+00:00".into(),
        };
        let event = FeedEvent::Commit {
            position: Position {
                feed: 0xab,
                revision: 9,
            },
            changes: vec![Change::Created(item), Change::Deleted(3)].into(),
            total: 4,
        };
        assert_eq!(
            render(&event),
            "event: created\n\
             data: {\"item\":{\"id\":7,\"text\":\"two\\nlines\",\"created_at\":\"2026-12-01T00:00:00.000000+00:00\"},\"total\":4}\n\n\
             event: deleted\n\
             data: {\"id\":3,\"total\":4}\n\
             id: 00000000000000ab.9\n\n"
        );
    }

    #[test]
    fn ready_and_reset_say_where_the_feed_stands() {
        let position = Position {
            feed: 1,
            revision: 2,
        };
        assert_eq!(
            render(&FeedEvent::Ready { position, total: 5 }),
            "event: ready\ndata: {\"total\":5}\nid: 0000000000000001.2\n\n"
        );
        assert_eq!(
            render(&FeedEvent::Reset {
                position,
                total: 5,
                reason: "why"
            }),
            "event: reset\ndata: {\"reason\":\"why\",\"total\":5}\nid: 0000000000000001.2\n\n"
        );
    }
}
