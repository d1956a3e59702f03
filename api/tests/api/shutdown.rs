//! SIGTERM and Ctrl-C with the real binary: in-flight requests finish, acknowledged writes
//! survive, the WAL is checkpointed, and the exit code is 0.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::BinaryServer;

const BODY: &str = r#"{"text":"sent slowly across a shutdown"}"#;

/// Opens a POST and sends only half its body, so the request is in flight.
fn start_slow_post(server: &BinaryServer) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        BODY.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&BODY.as_bytes()[..10]).unwrap();
    stream
}

fn wal_is_empty(db_path: &std::path::Path) -> bool {
    let wal = db_path.with_file_name("app.db-wal");
    !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let mut server = BinaryServer::start(&db_path, &[]);
    let mut stream = start_slow_post(&server);
    std::thread::sleep(Duration::from_millis(200));

    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused once shutdown began...
    assert!(
        TcpStream::connect(server.addr).is_err(),
        "still accepting after SIGTERM"
    );
    // ...but the request already in flight completes.
    stream.write_all(&BODY.as_bytes()[10..]).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    assert_eq!(server.wait(Duration::from_secs(10)), 0);
    assert!(
        server.log_contains("WAL checkpointed"),
        "{:?}",
        server.output.lock().unwrap()
    );
    assert!(
        wal_is_empty(&db_path),
        "the WAL was not folded into the database"
    );
    let conn = rusqlite::Connection::open(&db_path).unwrap();
    let stored: String = conn
        .query_row("SELECT text FROM items", [], |row| row.get(0))
        .unwrap();
    assert_eq!(stored, "sent slowly across a shutdown");
}

#[test]
fn a_stalled_request_cannot_hold_shutdown_past_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = BinaryServer::start(
        &dir.path().join("app.db"),
        &[("SHUTDOWN_TIMEOUT_SECS", "1")],
    );
    let _stalled = start_slow_post(&server);
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(10)), 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn ctrl_c_stops_the_service_with_exit_code_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = BinaryServer::start(&dir.path().join("app.db"), &[]);
    server.signal("INT");
    assert_eq!(server.wait(Duration::from_secs(10)), 0);
}

/// Writers POSTing distinct items until the service stops answering; records what was
/// acknowledged with 201 (a refusal while shutting down is allowed, it stores nothing).
struct WriteLoad {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    acknowledged: Arc<std::sync::Mutex<Vec<i64>>>,
}

impl WriteLoad {
    fn start(url: String, writers: usize, per_writer: usize) -> Self {
        let client = reqwest::Client::new();
        let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..writers)
            .map(|writer| {
                let (client, url, acknowledged) =
                    (client.clone(), url.clone(), Arc::clone(&acknowledged));
                tokio::spawn(async move {
                    for n in 0..per_writer {
                        let body = serde_json::json!({"text": format!("w{writer}-{n}")});
                        let Ok(response) = client.post(&url).json(&body).send().await else {
                            break;
                        };
                        if response.status() != 201 {
                            break;
                        }
                        let Ok(item) = response.json::<Value>().await else {
                            break;
                        };
                        acknowledged
                            .lock()
                            .unwrap()
                            .push(item["id"].as_i64().unwrap());
                    }
                })
            })
            .collect();
        Self {
            tasks,
            acknowledged,
        }
    }

    /// Waits for every writer and returns the acknowledged ids.
    async fn finish(self) -> Vec<i64> {
        for task in self.tasks {
            task.await.unwrap();
        }
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        assert!(
            !acknowledged.is_empty(),
            "the load did not run before the signal"
        );
        acknowledged
    }
}

fn assert_none_lost(acknowledged: &[i64], stored: &HashSet<i64>) {
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !stored.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_write_acknowledged_before_sigterm_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let mut server = BinaryServer::start(&db_path, &[]);
    let load = WriteLoad::start(server.url("/api/items"), 8, 200);
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.signal("TERM");
    let acknowledged = load.finish().await;
    assert_eq!(server.wait(Duration::from_secs(10)), 0);

    let conn = rusqlite::Connection::open(&db_path).unwrap();
    let stored: HashSet<i64> = conn
        .prepare("SELECT id FROM items")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_none_lost(&acknowledged, &stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_write_acknowledged_before_sigkill_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let mut server = BinaryServer::start(&db_path, &[]);
    let load = WriteLoad::start(server.url("/api/items"), 8, 500);
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.signal("KILL");
    let acknowledged = load.finish().await;
    server.wait(Duration::from_secs(10));

    // The next start recovers the WAL; every acknowledged row must be there.
    let server = BinaryServer::start(&db_path, &[]);
    let items: Vec<Value> = reqwest::get(server.url("/api/items"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: HashSet<i64> = items
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect();
    assert_none_lost(&acknowledged, &stored);
}

#[test]
fn with_a_drain_period_readiness_fails_at_once_while_requests_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        BinaryServer::start(&dir.path().join("app.db"), &[("SHUTDOWN_DRAIN_SECS", "2")]);
    let client = reqwest::blocking::Client::new();
    let before = client.get(server.url("/api/health")).send().unwrap();
    assert_eq!(before.status(), 200);
    assert!(before.headers().get("connection").is_none());

    let asked = Instant::now();
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    let health = client.get(server.url("/api/health")).send().unwrap();
    assert_eq!(health.status(), 503);
    assert_eq!(health.json::<Value>().unwrap()["status"], "stopping");
    assert_eq!(
        client
            .get(server.url("/api/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );
    let created = client
        .post(server.url("/api/items"))
        .json(&serde_json::json!({"text": "during the drain"}))
        .send()
        .unwrap();
    assert_eq!(
        created.status(),
        201,
        "requests are served during the drain"
    );
    assert_eq!(
        created.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "a kept-alive connection is handed back during the drain"
    );

    assert_eq!(server.wait(Duration::from_secs(15)), 0);
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "stopped before the drain period ended"
    );
}
