//! The HTTP/1.1 accept loop: hyper connections with the limits a server facing the network
//! needs, which `axum::serve` does not offer.
//!
//! - **Request heads:** once the first byte of a request has arrived, its head must be complete
//!   within `HEADER_READ_TIMEOUT_SECS`, or the connection is closed (slowloris).
//! - **Idle keep-alive:** a connection with no request running and no bytes either way for
//!   `KEEPALIVE_TIMEOUT_SECS` is closed. It is longer than the web tier keeps its pooled
//!   connections to us, so that tier never reuses a connection we are just closing.
//! - **Connections:** at most `MAX_CONNECTIONS` at once (kept below the open-file limit); one
//!   more is answered 503 and closed at once, so `accept` never wedges on a full table.
//! - **Stopping:** connections with no request running (idle, or a head half sent) are closed
//!   at once; the others finish their response (graceful shutdown) within the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Connection limits (`HEADER_READ_TIMEOUT_SECS`, `KEEPALIVE_TIMEOUT_SECS`, `MAX_CONNECTIONS`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections: usize,
}

/// File descriptors kept free for the database, logs and the like.
const SPARE_FILES: u64 = 128;

impl Limits {
    /// `max_connections`, lowered to stay below this process's open-file limit.
    pub fn within_open_file_limit(mut self) -> Self {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        if let Some(files) = limit {
            let room = usize::try_from(files.saturating_sub(SPARE_FILES))
                .unwrap_or(usize::MAX)
                .max(1);
            if self.max_connections > room {
                tracing::warn!(
                    max_connections = self.max_connections,
                    open_file_limit = files,
                    using = room,
                    "MAX_CONNECTIONS is above the open-file limit; raise `ulimit -n` to allow more"
                );
                self.max_connections = room;
            }
        }
        self
    }
}

/// The whole answer to a connection over the limit (a fixed text, so no parser or router runs).
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 38\r\n\r\n{\"detail\":\"Too many open connections\"}";

/// Serves `router` on `listener` until `stopping` is cancelled, then waits up to `grace` for the
/// responses still being written. Returns whether every connection finished within it.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stopping: CancellationToken,
    grace: Duration,
) -> bool {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors (or a connection that died in the backlog): wait a
                // moment instead of spinning, and go on.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            connections.spawn(refuse(tcp, peer));
            continue;
        };
        let (router, stopping) = (router.clone(), stopping.clone());
        connections.spawn(async move {
            serve_connection(tcp, router, limits, stopping).await;
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    tokio::time::timeout(grace, connections.wait())
        .await
        .is_ok()
}

async fn refuse(mut tcp: TcpStream, peer: SocketAddr) {
    tracing::warn!(%peer, "connection refused: MAX_CONNECTIONS reached");
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = tcp.write_all(REFUSAL).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

async fn serve_connection(
    tcp: TcpStream,
    router: Router,
    limits: Limits,
    stopping: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: Arc::clone(&activity),
    });
    let requests = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let request = request.map(Body::new);
        let requests = Arc::clone(&requests);
        let router = router.clone();
        requests.request_started();
        async move {
            let response = router.oneshot(request).await;
            requests.request_answered();
            response
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let mut stop_requested = false;
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            _ = connection.as_mut() => return,
            () = tokio::time::sleep_until(deadline.into()) => {
                if activity.expired(&limits) {
                    // Dropping the connection closes it.
                    return;
                }
            }
            () = stopping.cancelled(), if !stop_requested => {
                // A request head still arriving is not waited for. Everything else hyper settles:
                // an idle connection closes at once, and a response still being written (an
                // event stream, a streamed list) is finished first.
                if activity.in_flight() == 0 && activity.head_in_progress() {
                    return;
                }
                stop_requested = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection has been doing, for its timers. Times are milliseconds since `started`.
struct Activity {
    started: Instant,
    /// Last byte read or written.
    last: AtomicU64,
    /// When the first byte of a request head arrived that has not become a request yet.
    head_since: AtomicU64,
    /// Requests handed to the service and not answered yet.
    in_flight: AtomicUsize,
}

const NONE: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn bytes_read(&self) {
        let now = self.now();
        self.last.store(now, Ordering::Relaxed);
        if self.in_flight() == 0 {
            let _ =
                self.head_since
                    .compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn bytes_written(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
        self.last.store(self.now(), Ordering::Relaxed);
    }

    fn request_answered(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.last.store(self.now(), Ordering::Relaxed);
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn head_in_progress(&self) -> bool {
        self.head_since.load(Ordering::Relaxed) != NONE
    }

    /// When the next timer may run out (at the earliest).
    fn deadline(&self, limits: &Limits) -> Instant {
        let head = self.head_since.load(Ordering::Relaxed);
        let (from, timeout) = if head != NONE {
            (head, limits.header_read_timeout)
        } else if self.in_flight() > 0 {
            // A request is running: look again later.
            (self.now(), limits.keepalive_timeout)
        } else {
            (self.last.load(Ordering::Relaxed), limits.keepalive_timeout)
        };
        self.started + Duration::from_millis(from) + timeout + Duration::from_millis(5)
    }

    /// A request head took too long, or the connection sat idle too long.
    fn expired(&self, limits: &Limits) -> bool {
        let now = self.now();
        let head = self.head_since.load(Ordering::Relaxed);
        if head != NONE {
            return now.saturating_sub(head) > millis(limits.header_read_timeout);
        }
        self.in_flight() == 0
            && now.saturating_sub(self.last.load(Ordering::Relaxed))
                > millis(limits.keepalive_timeout)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(NONE)
}

/// A TCP stream that tells its `Activity` about every byte.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, bytes);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.bytes_written();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, buffers);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.bytes_written();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(100),
            keepalive_timeout: Duration::from_millis(300),
            max_connections: 10,
        }
    }

    #[test]
    fn the_refusal_is_a_complete_json_503() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["detail"], "Too many open connections");
    }

    #[test]
    fn a_head_that_started_must_finish_within_the_header_timeout() {
        let activity = Activity::new();
        activity.bytes_read();
        assert!(!activity.expired(&limits()));
        std::thread::sleep(Duration::from_millis(150));
        assert!(activity.expired(&limits()));
    }

    #[test]
    fn a_running_request_is_never_expired_and_idle_time_counts_from_its_answer() {
        let activity = Activity::new();
        activity.bytes_read();
        activity.request_started();
        std::thread::sleep(Duration::from_millis(350));
        assert!(!activity.expired(&limits()), "a request is running");
        activity.request_answered();
        assert!(!activity.expired(&limits()));
        std::thread::sleep(Duration::from_millis(350));
        assert!(
            activity.expired(&limits()),
            "idle past the keep-alive timeout"
        );
    }

    #[test]
    fn body_bytes_of_a_running_request_do_not_start_the_header_timer() {
        let activity = Activity::new();
        activity.request_started();
        activity.bytes_read();
        assert_eq!(activity.head_since.load(Ordering::Relaxed), NONE);
    }
}
