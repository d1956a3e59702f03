//! The limits every change stream shares: how many may be open at once, their heartbeat, and the
//! stop that ends them all when serving ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::http::error::AppError;
use crate::metrics;

/// One stream's slot, free again when dropped (the stream ended).
pub struct StreamSlot {
    _permit: OwnedSemaphorePermit,
    measured: bool,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if self.measured {
            ::metrics::gauge!(metrics::STREAMS_OPEN).decrement(1.0);
        }
    }
}

pub struct EventStreams {
    slots: Arc<Semaphore>,
    max: usize,
    heartbeat: Duration,
    stopping: CancellationToken,
}

impl EventStreams {
    pub fn new(max: usize, heartbeat: Duration, stopping: CancellationToken) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            heartbeat,
            stopping,
        }
    }

    /// A slot for one more stream, held for as long as it lives; refused past `MAX_EVENT_STREAMS`.
    pub fn slot(&self) -> Result<StreamSlot, AppError> {
        let measured = metrics::enabled();
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => {
                if measured {
                    ::metrics::gauge!(metrics::STREAMS_OPEN).increment(1.0);
                }
                Ok(StreamSlot {
                    _permit: permit,
                    measured,
                })
            }
            Err(_) => {
                if measured {
                    ::metrics::counter!(metrics::STREAMS_REFUSED).increment(1);
                }
                Err(AppError::TooManyStreams { max: self.max })
            }
        }
    }

    /// How often an idle stream gets a comment line.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// Completes when serving stops, which ends every stream.
    pub fn stopped(&self) -> WaitForCancellationFutureOwned {
        self.stopping.clone().cancelled_owned()
    }
}
