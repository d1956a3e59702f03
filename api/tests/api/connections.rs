//! Connection limits of the real server: slow request heads, idle keep-alive connections, the
//! connection limit, and a stop that does not wait on connections with no request running.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::helpers::{BinaryServer, TestApp};

/// Reads until the server closes the connection (or `limit` passes); returns what came and
/// whether it was closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return (String::from_utf8_lossy(&received).into_owned(), true),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&received).into_owned(), true);
            }
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), false),
        }
    }
}

async fn app_with_short_timeouts() -> TestApp {
    TestApp::spawn_with(|config| {
        config.header_read_timeout_secs = 1;
        config.keepalive_timeout_secs = 2;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_stops_arriving_is_closed_after_the_header_timeout() {
    let app = app_with_short_timeouts().await;
    let addr = app.addr;
    let (closed, waited) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /api/items HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        let started = Instant::now();
        let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
        (closed, started.elapsed())
    })
    .await
    .unwrap();
    assert!(closed, "the half-sent head was kept open");
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    let app = app_with_short_timeouts().await;
    let addr = app.addr;
    let (response, closed, waited) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /api/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let started = Instant::now();
        let (response, closed) = read_until_closed(&mut stream, Duration::from_secs(6));
        (response, closed, started.elapsed())
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(closed, "the idle connection was kept open");
    // Idle for more than the header timeout (1 s): the keep-alive timeout (2 s) applies.
    assert!(
        waited >= Duration::from_millis(1900),
        "closed after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_limit_gets_a_json_503_at_once_and_the_others_are_served() {
    let app = TestApp::spawn_with(|config| config.max_connections = 3).await;
    let addr = app.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut extra = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        let (refusal, closed) = read_until_closed(&mut extra, Duration::from_secs(5));
        let refused_in = started.elapsed();
        let mut first = held.into_iter().next().unwrap();
        first
            .write_all(b"GET /api/healthz HTTP/1.0\r\n\r\n")
            .unwrap();
        let (served, _) = read_until_closed(&mut first, Duration::from_secs(5));
        (refusal, closed, refused_in, served)
    })
    .await
    .unwrap();
    let (refusal, closed, refused_in, served) = outcome;
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    assert!(refusal.contains("retry-after: 1"), "{refusal}");
    assert!(
        refusal.ends_with(r#"{"detail":"Too many open connections"}"#),
        "{refusal}"
    );
    assert!(
        closed && refused_in < Duration::from_secs(2),
        "{refused_in:?}"
    );
    assert!(
        served.starts_with("HTTP/1.0 200"),
        "a held connection is served: {served}"
    );
}

#[test]
fn sigterm_does_not_wait_for_connections_with_no_request_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = BinaryServer::start(
        &dir.path().join("app.db"),
        &[
            ("SHUTDOWN_TIMEOUT_SECS", "20"),
            ("HEADER_READ_TIMEOUT_SECS", "60"),
        ],
    );
    let mut held = Vec::new();
    for n in 0..20 {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        if n % 2 == 0 {
            stream
                .write_all(b"GET /api/items HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
        } else {
            stream
                .write_all(b"GET /api/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
        }
        held.push(stream);
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(15)), 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopping took {:?}: it waited on idle or half-sent connections",
        started.elapsed()
    );
}
