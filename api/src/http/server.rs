//! The HTTP/1.1 accept loop: hyper connections with the limits a server facing the network
//! needs, which `axum::serve` does not offer.
//!
//! - **Request heads:** once the first byte of a request has arrived, its head must be complete
//!   within `HEADER_READ_TIMEOUT_SECS`, however slowly the rest trickles in, and may be at most
//!   `MAX_HEADER_BYTES` long (431 past it), which bounds what a half-sent head holds.
//! - **Idle keep-alive:** a connection with no request running, no response being written and
//!   no bytes either way for `KEEPALIVE_TIMEOUT_SECS` is closed. It is longer than the web tier
//!   keeps its pooled connections to us, so that tier never reuses a connection we are closing.
//! - **Stalled readers:** a response (an event stream, a long list) whose client has taken no
//!   byte for `SEND_TIMEOUT_SECS` while more waits is cut, and the kernel drops a peer that
//!   acknowledges nothing for as long (`TCP_USER_TIMEOUT`).
//! - **Connections:** at most `MAX_CONNECTIONS` at once (kept below the open-file limit); one
//!   more is answered 503 and closed at once, so `accept` never wedges on a full table.
//! - **Stopping:** connections with no request running (idle, or a head half sent) are closed
//!   at once; the others finish their response (graceful shutdown) within the grace period.

use crate::metrics;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Connection limits (`HEADER_READ_TIMEOUT_SECS`, `KEEPALIVE_TIMEOUT_SECS`, `SEND_TIMEOUT_SECS`,
/// `MAX_CONNECTIONS`, `MAX_HEADER_BYTES`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub send_timeout: Duration,
    pub max_connections: usize,
    /// At least hyper's floor for its buffers (8192), which the setting's range ensures.
    pub max_header_bytes: usize,
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
    tokio::spawn(keep_the_timer_driver_due(stopping.clone()));
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
        let measured = metrics::enabled();
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if measured {
                ::metrics::counter!(metrics::CONNECTIONS_REFUSED).increment(1);
            }
            connections.spawn(refuse(tcp, peer));
            continue;
        };
        if measured {
            ::metrics::gauge!(metrics::CONNECTIONS_OPEN).increment(1.0);
        }
        drop_unacknowledging_peers(&tcp, limits.send_timeout);
        let (router, stopping) = (router.clone(), stopping.clone());
        connections.spawn(async move {
            serve_connection(tcp, router, limits, stopping).await;
            drop(slot);
            if measured {
                ::metrics::gauge!(metrics::CONNECTIONS_OPEN).decrement(1.0);
            }
        });
    }
    drop(listener);
    connections.close();
    tokio::time::timeout(grace, connections.wait())
        .await
        .is_ok()
}

/// How often the timer driver is due while serving: more often than any per-request timer
/// (request timeout, header timeout) runs out.
const TIMER_DRIVER_TICK: Duration = Duration::from_secs(1);

/// Every request arms a timeout. When the driver last went to sleep until a later deadline (an
/// idle connection's keep-alive), tokio wakes it early to take the new one, with a system call
/// per request. A timer that is always due sooner than any of them saves that call.
async fn keep_the_timer_driver_due(stopping: CancellationToken) {
    let mut tick = tokio::time::interval(TIMER_DRIVER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopping.cancelled() => return,
        }
    }
}

/// A peer that takes none of what was sent for this long (gone, or its window shut) is dropped
/// by the kernel, even when what waits is too little for a write of ours to block on.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn drop_unacknowledging_peers(tcp: &TcpStream, after: Duration) {
    let millis = u32::try_from(after.as_millis()).unwrap_or(u32::MAX);
    let _ = rustix::net::sockopt::set_tcp_user_timeout(tcp, millis);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn drop_unacknowledging_peers(_tcp: &TcpStream, _after: Duration) {}

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
        let activity = Arc::clone(&requests);
        let has_body = !hyper::body::Body::is_end_stream(request.body());
        activity.request_started(has_body);
        let request = if has_body {
            let watcher = Arc::clone(&activity);
            request.map(|body| Body::new(RequestBody::new(body, watcher)))
        } else {
            request.map(Body::new)
        };
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            response.map(|response| response.map(|body| ResponseBody::new(body, activity)))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(limits.max_header_bytes)
        .max_header_size(limits.max_header_bytes)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let mut stop = std::pin::pin!(stopping.cancelled());
    let mut timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    let mut armed: Option<Instant> = None;
    let mut stop_requested = false;
    // Every change to `activity` happens while the connection is polled (its reads and writes,
    // the service and the bodies all run inside it), so the timer is set right after each poll:
    // a head that starts or a write that blocks is timed from that moment.
    std::future::poll_fn(|cx| {
        loop {
            if connection.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            if !stop_requested && stop.as_mut().poll(cx).is_ready() {
                // A request head still arriving is not waited for. Everything else hyper
                // settles: an idle connection closes at once, and a response still being
                // written (an event stream, a streamed list) is finished first.
                if activity.in_flight() == 0 && activity.head_in_progress() {
                    return Poll::Ready(());
                }
                stop_requested = true;
                connection.as_mut().graceful_shutdown();
                continue;
            }
            // Only an earlier deadline re-arms the timer; a later one is found when it fires.
            if let Some(deadline) = activity.deadline(&limits)
                && armed.is_none_or(|at| deadline < at)
            {
                timer.as_mut().reset(deadline.into());
                armed = Some(deadline);
            }
            if armed.is_some() && timer.as_mut().poll(cx).is_ready() {
                armed = None;
                if activity.expired(&limits) {
                    // Dropping the connection closes it.
                    return Poll::Ready(());
                }
                continue;
            }
            return Poll::Pending;
        }
    })
    .await;
}

/// What a connection has been doing, for its timers. Times are milliseconds since `started`.
/// HTTP/1.1 runs one request at a time, so "the request" below is the current one.
struct Activity {
    started: Instant,
    /// Last byte read or written.
    last: AtomicU64,
    /// When the first byte of a request head arrived that has not become a request yet.
    head_since: AtomicU64,
    /// Requests handed to the service whose response has not been written to the end.
    in_flight: AtomicUsize,
    /// Whether the request's body has been read to its end (or it had none): bytes read after
    /// that, while the response is still being written, belong to the next request's head.
    body_done: AtomicBool,
    /// Whether such bytes came; the head timer starts when the response is done.
    early_head: AtomicBool,
    /// Since when a write has found the socket full, with nothing taken since.
    blocked_since: AtomicU64,
}

const NONE: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            in_flight: AtomicUsize::new(0),
            body_done: AtomicBool::new(true),
            early_head: AtomicBool::new(false),
            blocked_since: AtomicU64::new(NONE),
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
        } else if self.body_done.load(Ordering::Relaxed) {
            self.early_head.store(true, Ordering::Relaxed);
        }
    }

    fn bytes_written(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
        self.blocked_since.store(NONE, Ordering::Relaxed);
    }

    fn write_blocked(&self) {
        let _ = self.blocked_since.compare_exchange(
            NONE,
            self.now(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn request_started(&self, has_body: bool) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
        self.early_head.store(false, Ordering::Relaxed);
        self.body_done.store(!has_body, Ordering::Relaxed);
        self.last.store(self.now(), Ordering::Relaxed);
    }

    fn request_body_done(&self) {
        self.body_done.store(true, Ordering::Relaxed);
    }

    /// The response has been written to its end (or abandoned).
    fn response_done(&self) {
        let now = self.now();
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.last.store(now, Ordering::Relaxed);
        if self.early_head.swap(false, Ordering::Relaxed) {
            // Timed from now: hyper parses what it holds of the next head only from here.
            self.head_since.store(now, Ordering::Relaxed);
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn head_in_progress(&self) -> bool {
        self.head_since.load(Ordering::Relaxed) != NONE
    }

    /// The timers that run now, as (since, how long).
    fn timers(&self, limits: &Limits) -> [Option<(u64, Duration)>; 3] {
        let head = self.head_since.load(Ordering::Relaxed);
        let blocked = self.blocked_since.load(Ordering::Relaxed);
        let idle = head == NONE && self.in_flight() == 0;
        [
            (head != NONE).then_some((head, limits.header_read_timeout)),
            (blocked != NONE).then_some((blocked, limits.send_timeout)),
            idle.then(|| (self.last.load(Ordering::Relaxed), limits.keepalive_timeout)),
        ]
    }

    /// When the first running timer runs out, if any runs.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        self.timers(limits)
            .into_iter()
            .flatten()
            .map(|(since, timeout)| {
                self.started + Duration::from_millis(since) + timeout + Duration::from_millis(5)
            })
            .min()
    }

    /// A request head took too long, a write has been blocked too long, or the connection sat
    /// idle too long.
    fn expired(&self, limits: &Limits) -> bool {
        let now = self.now();
        self.timers(limits)
            .into_iter()
            .flatten()
            .any(|(since, timeout)| now.saturating_sub(since) > millis(timeout))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(NONE)
}

/// A request body that tells its `Activity` when it has been read to the end.
struct RequestBody {
    inner: Incoming,
    activity: Arc<Activity>,
}

impl RequestBody {
    fn new(inner: Incoming, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.activity.request_body_done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that tells its `Activity` when it has been written to the end, or dropped
/// (hyper drops it once done; a closed connection drops it unfinished).
struct ResponseBody {
    inner: Body,
    activity: Option<Arc<Activity>>,
}

impl ResponseBody {
    fn new(inner: Body, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity: Some(activity),
        }
    }

    fn done(&mut self) {
        if let Some(activity) = self.activity.take() {
            activity.response_done();
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.done();
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A TCP stream that tells its `Activity` about every byte, and about writes the socket refuses.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    fn wrote(&self, polled: &Poll<std::io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(written)) if *written > 0 => self.activity.bytes_written(),
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(_) => {}
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, bytes);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, buffers);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(100),
            keepalive_timeout: Duration::from_millis(300),
            send_timeout: Duration::from_millis(200),
            max_connections: 10,
            max_header_bytes: 8192,
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
        std::thread::sleep(Duration::from_millis(50));
        activity.bytes_read();
        let deadline = activity.deadline(&limits()).unwrap();
        assert!(
            deadline <= activity.started + Duration::from_millis(110),
            "more bytes do not move the deadline"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert!(activity.expired(&limits()));
    }

    #[test]
    fn a_response_being_written_is_never_idle_and_idle_time_counts_from_its_end() {
        let activity = Activity::new();
        activity.bytes_read();
        activity.request_started(false);
        assert_eq!(activity.deadline(&limits()), None, "no timer runs");
        std::thread::sleep(Duration::from_millis(350));
        assert!(!activity.expired(&limits()), "a response is being written");
        activity.response_done();
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
        activity.request_started(true);
        activity.bytes_read();
        activity.response_done();
        assert!(!activity.head_in_progress());
    }

    #[test]
    fn bytes_after_the_body_start_the_next_heads_timer_when_the_response_ends() {
        let activity = Activity::new();
        activity.request_started(true);
        activity.bytes_read();
        activity.request_body_done();
        activity.bytes_read();
        assert!(!activity.head_in_progress(), "not while the response runs");
        activity.response_done();
        assert!(activity.head_in_progress());
        std::thread::sleep(Duration::from_millis(150));
        assert!(activity.expired(&limits()));
    }

    #[test]
    fn a_write_the_socket_refuses_for_the_send_timeout_expires_even_mid_response() {
        let activity = Activity::new();
        activity.request_started(false);
        activity.write_blocked();
        std::thread::sleep(Duration::from_millis(120));
        activity.write_blocked();
        assert!(!activity.expired(&limits()));
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            activity.expired(&limits()),
            "blocked since the first refusal"
        );
        activity.bytes_written();
        assert!(!activity.expired(&limits()), "a byte taken resets it");
    }
}
