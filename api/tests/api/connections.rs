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

/// The header timeout at 1 s and the keep-alive timeout far above it, so a head that is timed
/// by the wrong one shows.
async fn app_with_a_short_header_timeout() -> TestApp {
    TestApp::spawn_with(|config| {
        config.header_read_timeout_secs = 1;
        config.keepalive_timeout_secs = 30;
    })
    .await
}

/// Closed, and within the header timeout (1 s) plus a second of its head's first byte.
fn assert_closed_by_the_header_timeout(closed: bool, waited: Duration) {
    assert!(closed, "the half-sent head was kept open for {waited:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited <= Duration::from_secs(2),
        "closed {waited:?} after the head's first byte, not within 1 to 2 s"
    );
}

/// Reads one response whose body is `Content-Length` long, leaving the connection open.
fn read_one_response(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let n = stream.read(&mut buffer).expect("a response arrives");
        assert!(n > 0, "closed before a whole response: {text}");
        received.extend_from_slice(&buffer[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_stops_arriving_is_closed_after_the_header_timeout() {
    let app = app_with_a_short_header_timeout().await;
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
    assert_closed_by_the_header_timeout(closed, waited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_trickled_a_byte_at_a_time_is_closed_after_the_header_timeout() {
    let app = app_with_a_short_header_timeout().await;
    let addr = app.addr;
    let (closed, waited) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let started = Instant::now();
        std::thread::spawn(move || {
            let head = b"GET /api/items HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            for byte in head.iter().chain(std::iter::repeat(&b'a')).take(200) {
                if writer.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
        (closed, started.elapsed())
    })
    .await
    .unwrap();
    assert_closed_by_the_header_timeout(closed, waited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_request_head_on_a_kept_alive_connection_is_closed_after_the_header_timeout() {
    let app = app_with_a_short_header_timeout().await;
    let addr = app.addr;
    let (first, closed, waited) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /api/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let first = read_one_response(&mut stream);
        std::thread::sleep(Duration::from_millis(300));
        stream
            .write_all(b"GET /api/items HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        let started = Instant::now();
        let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
        (first, closed, started.elapsed())
    })
    .await
    .unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert_closed_by_the_header_timeout(closed, waited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_the_size_limit_gets_431_and_one_within_it_is_served() {
    let app = TestApp::spawn().await;
    let addr = app.addr;
    let answers = tokio::task::spawn_blocking(move || {
        // The default limit is 32 KiB; browsers and proxies send a few KiB at most.
        [20_000, 40_000].map(|filler| {
            let mut stream = TcpStream::connect(addr).unwrap();
            let head = format!(
                "GET /api/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
                "a".repeat(filler)
            );
            stream.write_all(head.as_bytes()).unwrap();
            read_until_closed(&mut stream, Duration::from_secs(5)).0
        })
    })
    .await
    .unwrap();
    assert!(answers[0].starts_with("HTTP/1.1 200"), "{}", answers[0]);
    assert!(answers[1].starts_with("HTTP/1.1 431"), "{}", answers[1]);
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

/// Asks for the change stream on a connection of its own; returns the answer's head (and a
/// refusal's body) and the connection, which a stream keeps.
fn ask_for_a_stream(addr: std::net::SocketAddr) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /api/items/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = read_one_response(&mut stream);
    (answer, stream)
}

#[test]
fn under_a_low_open_file_limit_event_streams_still_leave_connections_for_requests() {
    // 300 files leave 172 connections (128 stay free for the database, logs and the like): the
    // stream limit follows that, whether it is the default or set higher.
    for setting in [None, Some("1000")] {
        let dir = tempfile::tempdir().unwrap();
        let env: Vec<(&str, &str)> = setting
            .map(|n| ("MAX_EVENT_STREAMS", n))
            .into_iter()
            .collect();
        let server =
            BinaryServer::start_with_open_file_limit(300, &dir.path().join("app.db"), &env);
        let (mut streams, mut refusals) = (Vec::new(), Vec::new());
        for _ in 0..172 {
            let (answer, connection) = ask_for_a_stream(server.addr);
            if answer.starts_with("HTTP/1.1 200") {
                streams.push(connection);
            } else {
                // Closed, as a browser's EventSource does after a refusal.
                refusals.push(answer);
            }
        }
        assert!(
            !streams.is_empty() && !refusals.is_empty(),
            "{setting:?}: {} streams open, {} refused",
            streams.len(),
            refusals.len()
        );
        let refusal = &refusals[0];
        assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
        assert!(refusal.contains("retry-after: 10"), "{refusal}");
        assert!(
            refusal.ends_with(r#"{"detail":"Too many open event streams"}"#),
            "{refusal}"
        );
        for _ in 0..20 {
            let mut probe = TcpStream::connect(server.addr).unwrap();
            probe
                .write_all(b"GET /api/healthz HTTP/1.0\r\n\r\n")
                .unwrap();
            let (answer, _) = read_until_closed(&mut probe, Duration::from_secs(5));
            assert!(answer.starts_with("HTTP/1.0 200"), "{setting:?}: {answer}");
        }
        let mut post = TcpStream::connect(server.addr).unwrap();
        post.write_all(
            b"POST /api/items HTTP/1.0\r\nContent-Type: application/json\r\n\
              Content-Length: 12\r\n\r\n{\"text\":\"a\"}",
        )
        .unwrap();
        let (answer, _) = read_until_closed(&mut post, Duration::from_secs(5));
        assert!(answer.starts_with("HTTP/1.0 201"), "{setting:?}: {answer}");
        assert!(
            !server.log_contains("the database is not available"),
            "a full stream table is not a database problem"
        );
        assert!(
            server.log_contains("event streams are in use"),
            "refusals are logged as what they are"
        );
        if setting.is_some() {
            assert!(
                server.log_contains("MAX_EVENT_STREAMS is not below"),
                "lowering the setting is logged"
            );
        }
    }
}
