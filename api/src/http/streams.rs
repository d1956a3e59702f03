//! The limits every change stream shares: how many may be open at once, their heartbeat, and the
//! stop that ends them all when serving ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::http::error::AppError;

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
    pub fn slot(&self) -> Result<OwnedSemaphorePermit, AppError> {
        Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| AppError::TooManyStreams { max: self.max })
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
