//! A log writer that never makes a system call on the request path.
//!
//! Each log line is appended to a shared buffer; a background thread writes the buffer out every
//! few milliseconds (or sooner when it fills), so thousands of lines cost one `write(2)`. A
//! channel to a writer thread (tracing-appender) costs more per line: see `docs/benchmarks.md`.
//!
//! Lines reach the output at most `FLUSH_INTERVAL` late. The buffer is bounded: if the output
//! stalls, logging waits instead of growing memory. Dropping the guard flushes everything; lines
//! logged after that are written to the output directly.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Wake the flusher early past this much pending output.
const HIGH_WATER: usize = 256 * 1024;
/// Make loggers wait past this much pending output (the output is not keeping up).
const LIMIT: usize = 8 * 1024 * 1024;

type Output = Box<dyn Write + Send>;

struct Shared {
    state: Mutex<State>,
    /// Signals the flusher: data past the high-water mark, or closing.
    pending: Condvar,
    /// Signals waiting loggers: the buffer was drained.
    drained: Condvar,
}

struct State {
    buffer: Vec<u8>,
    closed: bool,
    /// The output, once no flusher owns it (closed, or no thread could be started).
    direct: Option<Output>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `MakeWriter` to give to a tracing layer.
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

/// Flushes and stops the background thread when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer over `output` and the guard that keeps it flushing.
pub fn batched<W: Write + Send + 'static>(output: W) -> (BatchedWriter, FlushGuard) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buffer: Vec::with_capacity(64 * 1024),
            closed: false,
            // Until the flusher takes it over (and for good, if no thread can be started).
            direct: Some(Box::new(output)),
        }),
        pending: Condvar::new(),
        drained: Condvar::new(),
    });
    let flusher = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || flush_loop(&flusher))
        .ok();
    (
        BatchedWriter {
            shared: Arc::clone(&shared),
        },
        FlushGuard { shared, thread },
    )
}

fn flush_loop(shared: &Shared) {
    let Some(mut output) = shared.lock().direct.take() else {
        return;
    };
    let mut outgoing = Vec::with_capacity(64 * 1024);
    loop {
        {
            let mut state = shared.lock();
            if !state.closed && state.buffer.len() < HIGH_WATER {
                state = shared
                    .pending
                    .wait_timeout(state, FLUSH_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut state.buffer, &mut outgoing);
            if state.closed {
                // Later lines go straight to the output, after everything buffered before them.
                write_out(&mut output, &outgoing);
                state.direct = Some(output);
                return;
            }
        }
        shared.drained.notify_all();
        write_out(&mut output, &outgoing);
        outgoing.clear();
    }
}

/// A failed write (closed stdout) must not take the service down; the lines are lost.
fn write_out(output: &mut Output, bytes: &[u8]) {
    if !bytes.is_empty() {
        let _ = output.write_all(bytes).and_then(|()| output.flush());
    }
}

impl Write for &BatchedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        while state.buffer.len() > LIMIT && !state.closed {
            self.shared.pending.notify_one();
            state = self
                .shared
                .drained
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if let Some(output) = state.direct.as_mut() {
            write_out(output, bytes);
            return Ok(bytes.len());
        }
        state.buffer.extend_from_slice(bytes);
        if state.buffer.len() >= HIGH_WATER {
            self.shared.pending.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedWriter {
    type Writer = &'a BatchedWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.pending.notify_all();
        self.shared.drained.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An in-memory output for tests, usable as a plain writer and as a tracing `MakeWriter`.
#[cfg(test)]
pub(crate) mod testing {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    pub struct Sink(pub Arc<Mutex<Vec<u8>>>);

    impl Sink {
        pub fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Sink;
    use super::*;
    use std::time::Instant;

    #[test]
    fn lines_arrive_in_order_within_the_flush_interval() {
        let sink = Sink::default();
        let (writer, _guard) = batched(sink.clone());
        for n in 0..1000 {
            (&writer)
                .write_all(format!("line {n}\n").as_bytes())
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let expected: String = (0..1000).map(|n| format!("line {n}\n")).collect();
        while sink.0.lock().unwrap().len() < expected.len() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.text(), expected);
    }

    #[test]
    fn dropping_the_guard_flushes_everything() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone());
        (&writer).write_all(b"last words\n").unwrap();
        drop(guard);
        assert_eq!(&*sink.0.lock().unwrap(), b"last words\n");
    }

    #[test]
    fn lines_after_the_guard_is_dropped_still_reach_the_output() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone());
        drop(guard);
        (&writer).write_all(b"after the end\n").unwrap();
        assert_eq!(&*sink.0.lock().unwrap(), b"after the end\n");
    }

    #[test]
    fn many_threads_never_interleave_within_a_line() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone());
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for n in 0..500 {
                        (&writer)
                            .write_all(format!("t{thread} n{n} end\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = sink.text();
        assert_eq!(text.lines().count(), 4000);
        assert!(
            text.lines()
                .all(|line| line.starts_with('t') && line.ends_with(" end"))
        );
    }
}
