//! `/api/items/events`: every change arrives on every open stream, resumes pick up what was
//! missed (or say to read the list again), heartbeats keep idle streams open, and a stop ends
//! them at once.

use std::time::{Duration, Instant};

use futures::StreamExt;
use rstest::rstest;
use serde_json::{Value, json};

use crate::helpers::{Backend, BinaryServer, TestApp, json_of};
use crate::postgres_support::{connect, database, execute};

/// How long a change may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(1);

/// One event as received: its type, data (JSON) and id, when it had one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Received {
    name: String,
    data: Value,
    id: Option<String>,
}

/// An open event stream, read a block at a time.
pub(crate) struct Events {
    body: futures::stream::BoxStream<'static, Result<bytes::Bytes, String>>,
    pending: String,
    /// Comment lines seen (heartbeats).
    comments: usize,
    pub status: u16,
}

impl Events {
    pub(crate) async fn open(url: String, last_event_id: Option<&str>) -> Self {
        Self::open_with_raw_id(url, last_event_id.map(str::as_bytes)).await
    }

    /// With a `Last-Event-ID` of any bytes, not only text.
    async fn open_with_raw_id(url: String, last_event_id: Option<&[u8]>) -> Self {
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            let id = reqwest::header::HeaderValue::from_bytes(id).expect("a header value");
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("the stream is answered");
        let status = response.status().as_u16();
        if status == 200 {
            assert_eq!(
                response.headers()["content-type"],
                "text/event-stream",
                "an event stream"
            );
        }
        Self {
            status,
            body: response
                .bytes_stream()
                .map(|chunk| chunk.map_err(|error| error.to_string()))
                .boxed(),
            pending: String::new(),
            comments: 0,
        }
    }

    /// Over a connection of its own whose receive buffer is small, read only when asked: a
    /// reader that pauses soon fills it, and the server's writes then block.
    async fn open_with_small_window(app: &TestApp, last_event_id: Option<&str>) -> Self {
        use http_body_util::BodyDataStream;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(8 * 1024).unwrap();
        let tcp = socket.connect(app.addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(connection);
        let mut request = hyper::Request::get("/api/items/events").header("host", "test");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let request = request
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        Self {
            status: response.status().as_u16(),
            body: BodyDataStream::new(response.into_body())
                .map(|chunk| chunk.map_err(|error| error.to_string()))
                .boxed(),
            pending: String::new(),
            comments: 0,
        }
    }

    /// The next event within `limit`, or `None` when none came or the stream ended.
    async fn next_within(&mut self, limit: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                if let Some(event) = self.parse(&block) {
                    return Some(event);
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.pending.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    pub(crate) async fn next(&mut self) -> Received {
        self.next_within(ARRIVAL)
            .await
            .expect("an event arrives within a second")
    }

    /// Whether the stream ends within `limit` (events before the end are skipped).
    async fn ends_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
                Err(_) => return false,
            }
        }
    }

    fn parse(&mut self, block: &str) -> Option<Received> {
        let (mut name, mut data, mut id) = (None, String::new(), None);
        for line in block.lines() {
            match line.split_once(':') {
                Some(("", _)) => self.comments += 1,
                Some(("event", value)) => name = Some(value.trim_start().to_owned()),
                Some(("data", value)) => data.push_str(value.trim_start()),
                Some(("id", value)) => id = Some(value.trim_start().to_owned()),
                _ => {}
            }
        }
        let name = name?;
        let data = serde_json::from_str(&data).expect("event data is JSON");
        Some(Received { name, data, id })
    }
}

async fn stream_of(app: &TestApp, last_event_id: Option<&str>) -> Events {
    Events::open(app.url("/api/items/events"), last_event_id).await
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn every_change_arrives_on_every_stream_with_the_new_total(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let mut streams = [stream_of(&app, None).await, stream_of(&app, None).await];
    for stream in &mut streams {
        let ready = stream.next().await;
        assert_eq!(
            (ready.name.as_str(), &ready.data),
            ("ready", &json!({"total": 0}))
        );
        assert!(ready.id.is_some(), "ready names a position");
    }
    // Each change is read before the next is made: on Postgres the listener reads an announced
    // item when the announcement arrives, and one already deleted again is left out (documented).
    let item = app.add("buy milk").await;
    let id = item["id"].as_i64().unwrap();
    for stream in &mut streams {
        let created = stream.next().await;
        assert_eq!(created.name, "created", "{created:?}");
        assert_eq!(created.data, json!({"item": item, "total": 1}));
    }
    let edited = json_of(
        app.client
            .patch(app.url(&format!("/api/items/{id}")))
            .json(&json!({"text": "buy oat milk"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    for stream in &mut streams {
        let updated = stream.next().await;
        assert_eq!(updated.name, "updated");
        assert_eq!(updated.data, json!({"item": edited, "total": 1}));
    }
    let deleted = app.delete(&format!("/api/items/{id}")).await;
    assert_eq!(deleted.status(), 204);
    for stream in &mut streams {
        let gone = stream.next().await;
        assert_eq!(gone.name, "deleted");
        assert_eq!(gone.data, json!({"id": id, "total": 0}));
    }
    // A delete of nothing changes nothing, and says nothing.
    let missing = app.delete("/api/items/999999").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        streams[0].next_within(Duration::from_millis(300)).await,
        None
    );
    app.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_resumed_stream_gets_exactly_what_it_missed(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    // Someone stays connected, so the server keeps what it sends.
    let mut watcher = stream_of(&app, None).await;
    watcher.next().await;
    let mut first = stream_of(&app, None).await;
    first.next().await;
    app.add("one").await;
    let seen = first.next().await;
    drop(first);
    let two = app.add("two").await;
    let three = app.add("three").await;
    for _ in 0..2 {
        watcher.next().await;
    }
    let mut resumed = stream_of(&app, seen.id.as_deref()).await;
    let (a, b) = (resumed.next().await, resumed.next().await);
    assert_eq!((a.name.as_str(), &a.data["item"]), ("created", &two));
    assert_eq!((b.name.as_str(), &b.data["item"]), ("created", &three));
    assert_eq!(resumed.next_within(Duration::from_millis(300)).await, None);
    app.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_position_the_server_cannot_serve_starts_with_a_reset(#[case] backend: Backend) {
    let Some(app) = TestApp::on(backend).await else {
        return;
    };
    let mut stream = stream_of(&app, None).await;
    let ready = stream.next().await;
    let Some((feed, _)) = ready.id.as_deref().and_then(|id| id.split_once('.')) else {
        panic!("ready has a position: {ready:?}");
    };
    app.add("one").await;
    // Once this stream has it, the server's feed has it too (on Postgres it comes a moment after
    // the commit, by notification).
    assert_eq!(stream.next().await.name, "created");
    for resume in [
        // Another server's (or an earlier run's), one ahead of this server, and nonsense.
        "0000000000000001.5".to_owned(),
        format!("{feed}.999999"),
        "not a position".to_owned(),
    ] {
        let mut stream = stream_of(&app, Some(&resume)).await;
        let reset = stream.next().await;
        assert_eq!(reset.name, "reset", "{resume}");
        assert_eq!(reset.data["total"], 1, "{resume}");
        assert!(reset.data["reason"].is_string());
        assert!(reset.id.is_some());
    }
    // Bytes that are not ASCII are no position either (they once counted as no id at all).
    for resume in [&b"\xff\xfe"[..], format!("{feed}.1\u{e9}").as_bytes()] {
        let url = app.url("/api/items/events");
        let mut stream = Events::open_with_raw_id(url, Some(resume)).await;
        let reset = stream.next().await;
        assert_eq!(reset.name, "reset", "{resume:?}");
        assert_eq!(reset.data["total"], 1, "{resume:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats_and_outlives_the_request_timeout() {
    let app = TestApp::spawn_with(|config| {
        config.event_heartbeat_secs = 1;
        config.request_timeout_secs = 2;
        config.body_timeout_secs = 1;
        config.database_statement_timeout_ms = 1000;
    })
    .await;
    let mut stream = stream_of(&app, None).await;
    stream.next().await;
    assert_eq!(stream.next_within(Duration::from_millis(3500)).await, None);
    assert!(
        stream.comments >= 2,
        "heartbeats in 3.5 s: {}",
        stream.comments
    );
    app.add("still open").await;
    assert_eq!(stream.next().await.name, "created");
    app.stop().await;
}

#[tokio::test]
async fn a_stream_quieter_than_the_keepalive_timeout_stays_open() {
    // Heartbeats further apart than the keep-alive timeout: the stream is not idle, it is
    // being answered.
    let app = TestApp::spawn_with(|config| {
        config.keepalive_timeout_secs = 1;
        config.event_heartbeat_secs = 3;
    })
    .await;
    let mut stream = stream_of(&app, None).await;
    stream.next().await;
    assert_eq!(stream.next_within(Duration::from_millis(3500)).await, None);
    assert!(stream.comments >= 1, "a heartbeat came");
    app.add("after a quiet spell").await;
    assert_eq!(stream.next().await.name, "created");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_pauses_for_longer_than_the_keepalive_timeout_gets_every_event_whole() {
    let app = TestApp::spawn_with(|config| config.keepalive_timeout_secs = 1).await;
    let mut stream = Events::open_with_small_window(&app, None).await;
    assert_eq!(stream.next().await.name, "ready");
    // Far more than the socket buffers hold: the server's writes block while the reader
    // pauses.
    let text = "x".repeat(300_000);
    let mut added = Vec::new();
    for n in 0..30 {
        added.push(app.add(&format!("{n} {text}")).await["id"].clone());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in added {
        let created = stream
            .next_within(Duration::from_secs(5))
            .await
            .expect("the stream goes on after the pause");
        assert_eq!(created.name, "created");
        assert_eq!(created.data["item"]["id"], id);
        assert!(
            created.data["item"]["text"]
                .as_str()
                .unwrap()
                .ends_with(&text)
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_stalled_past_the_send_timeout_is_cut_and_resumes_with_the_rest() {
    let app = TestApp::spawn_with(|config| {
        config.send_timeout_secs = 2;
        config.keepalive_timeout_secs = 60;
        config.max_event_streams = Some(1);
    })
    .await;
    let mut stalled = Events::open_with_small_window(&app, None).await;
    let ready = stalled.next().await;
    let text = "x".repeat(300_000);
    let mut added = Vec::new();
    for n in 0..20 {
        added.push(app.add(&format!("{n} {text}")).await["id"].clone());
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    // What reached the reader before the cut: whole events, in order; an event cut short is
    // never parsed, as in a browser.
    let (mut seen, mut last_id) = (Vec::new(), ready.id);
    while let Some(event) = stalled.next_within(Duration::from_secs(2)).await {
        assert_eq!(event.name, "created");
        seen.push(event.data["item"]["id"].clone());
        last_id = event.id;
    }
    assert!(stalled.ends_within(Duration::from_secs(1)).await);
    assert!(seen.len() < added.len(), "the stalled reader was cut");
    assert_eq!(seen, added[..seen.len()]);
    // The stalled stream's slot is free again, and resuming gives exactly the rest.
    let mut resumed = stream_of(&app, last_id.as_deref()).await;
    assert_eq!(resumed.status, 200, "the slot was freed");
    for id in &added[seen.len()..] {
        let created = resumed.next().await;
        assert_eq!(
            (created.name.as_str(), &created.data["item"]["id"]),
            ("created", id)
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn streams_past_the_limit_get_a_json_503_and_a_slot_frees_when_one_closes() {
    let app = TestApp::spawn_with(|config| config.max_event_streams = Some(1)).await;
    let mut first = stream_of(&app, None).await;
    first.next().await;
    let refused = app.get("/api/items/events").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "10");
    // A refused stream does not keep its connection either.
    assert_eq!(refused.headers()["connection"], "close");
    assert_eq!(
        json_of(refused).await,
        json!({"detail": "Too many open event streams"})
    );
    // Other requests go on meanwhile.
    assert_eq!(app.get("/api/items").await.status(), 200);
    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        let stream = stream_of(&app, None).await;
        if stream.status == 200 {
            reopened = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reopened.expect("a slot frees").next().await.name, "ready");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(
        &dir.path().join("app.db"),
        &[("SHUTDOWN_TIMEOUT_SECS", "20")],
    );
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = Events::open(server.url("/api/items/events"), None).await;
        stream.next().await;
        streams.push(stream);
    }
    let asked = Instant::now();
    server.signal("TERM");
    for stream in &mut streams {
        assert!(stream.ends_within(Duration::from_secs(3)).await);
    }
    let mut server = server;
    assert_eq!(server.wait(Duration::from_secs(5)), 0);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "stopped in {:?}, not after the 20 s grace",
        asked.elapsed()
    );
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_a_change_through_any_process_or_by_hand_reaches_every_process() {
    let Some(url) = database().await else { return };
    let (first, second) = (
        TestApp::on_url(&url, |_| {}).await,
        TestApp::on_url(&url, |_| {}).await,
    );
    let mut on_first = stream_of(&first, None).await;
    let mut on_second = stream_of(&second, None).await;
    let ready = [on_first.next().await, on_second.next().await];
    assert_eq!(
        ready[0].id, ready[1].id,
        "both processes name the same position"
    );

    let item = first.add("through the first").await;
    for stream in [&mut on_first, &mut on_second] {
        let created = stream.next().await;
        assert_eq!(
            (created.name.as_str(), &created.data["item"]),
            ("created", &item)
        );
    }
    execute(
        &url,
        "INSERT INTO items (text, created_at) VALUES ('by hand', '2026-01-01T00:00:00.000000+00:00');
         DELETE FROM items WHERE text = 'through the first'",
    )
    .await
    .unwrap();
    let mut last_seen = None;
    for stream in [&mut on_first, &mut on_second] {
        let created = stream.next().await;
        assert_eq!(created.name, "created");
        assert_eq!(created.data["item"]["text"], "by hand");
        let deleted = stream.next().await;
        assert_eq!(deleted.data, json!({"id": item["id"], "total": 1}));
        last_seen = deleted.id;
    }
    // A page that loses its stream to the first process resumes on the second (as behind a
    // load balancer) and gets exactly what it missed.
    drop(on_first);
    let later = first.add("later").await;
    assert_eq!(on_second.next().await.data["item"], later);
    let mut resumed = stream_of(&second, last_seen.as_deref()).await;
    let missed = resumed.next().await;
    assert_eq!(
        (missed.name.as_str(), &missed.data["item"]),
        ("created", &later)
    );
    first.stop().await;
    second.stop().await;
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_a_lost_listener_resets_its_streams_and_listens_again() {
    let Some(url) = database().await else { return };
    // Named, so this test finds its own listener among those of tests running beside it.
    let name = format!("events_{}", std::process::id());
    let app = TestApp::on_url(&format!("{url}&application_name={name}"), |_| {}).await;
    let mut stream = stream_of(&app, None).await;
    stream.next().await;
    let admin = connect(&url).await.unwrap();
    let ended: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1",
            &[&format!("{name} (change listener)")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ended, 1, "the listener's connection was found");
    // Made while the listener is away (it waits before connecting again).
    let missed = app.add("while the listener was away").await;
    let reset = stream
        .next_within(Duration::from_secs(5))
        .await
        .expect("a reset once the listener is back");
    assert_eq!(reset.name, "reset");
    if reset.data["total"] == 0 {
        // The listener came back before the add: then the add arrives as usual.
        assert_eq!(stream.next().await.data["item"], missed);
    } else {
        assert_eq!(reset.data["total"], 1, "the reset counts the missed item");
    }
    let after = app.add("after").await;
    assert_eq!(stream.next().await.data["item"], after);
    app.stop().await;
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_a_statement_too_big_to_announce_item_by_item_resets() {
    let Some(url) = database().await else { return };
    let app = TestApp::on_url(&url, |_| {}).await;
    let mut stream = stream_of(&app, None).await;
    stream.next().await;
    execute(
        &url,
        "INSERT INTO items (text, created_at) \
         SELECT 'bulk ' || n, '2026-01-01T00:00:00.000000+00:00' FROM generate_series(1, 2000) n",
    )
    .await
    .unwrap();
    let reset = stream.next().await;
    assert_eq!(reset.name, "reset");
    assert_eq!(reset.data["total"], 2000);
    let listed = app.get("/api/items?limit=1").await;
    assert_eq!(listed.headers()["x-total-count"], "2000");
    app.stop().await;
}

#[tokio::test]
async fn a_page_open_across_a_restore_of_an_older_backup_is_told_to_read_the_list_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let location = items_api::store::Location::Sqlite(db.clone());
    let app = TestApp::spawn_on(&db, |_| {}).await;
    app.add("in the backup").await;
    let backup = dir.path().join("backup.db");
    items_api::maintenance::backup(&location, &backup)
        .await
        .unwrap();
    // What an open page then holds: an item the backup does not have, and a position after it.
    let mut page = stream_of(&app, None).await;
    assert_eq!(page.next().await.name, "ready");
    let later = app.add("added after the backup").await;
    let created = page.next().await;
    assert_eq!(created.name, "created");
    let position = created
        .id
        .expect("the last event of a commit carries its position");
    app.stop().await;

    items_api::maintenance::restore(&location, &backup)
        .await
        .unwrap();
    let app = TestApp::spawn_on(&db, |_| {}).await;
    // The browser reconnects with its position: the restored database cannot resume it.
    let mut resumed = stream_of(&app, Some(&position)).await;
    assert_eq!(resumed.next().await.name, "reset");
    // Re-read, the list no longer has what the page held; its id is never handed out again.
    let held = format!("/api/items/{}", later["id"]);
    assert_eq!(app.get(&held).await.status(), 404);
    let new = app.add("after the restore").await;
    assert!(
        new["id"].as_i64() > later["id"].as_i64(),
        "{new} after {later}"
    );
    app.stop().await;
}
