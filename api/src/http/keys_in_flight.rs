//! Idempotency keys in flight: a create with a key holds it until answered, so a second request
//! with the same key on this process gets 409 (the draft's "still being processed"); across
//! replicas the database makes the later one wait and then replays the first.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use crate::http::error::AppError;

/// The idempotency keys whose create is running in this process.
#[derive(Debug, Default)]
pub struct KeysInFlight(Mutex<HashSet<String>>);

impl KeysInFlight {
    pub fn claim(self: &Arc<Self>, key: &str) -> Result<KeyClaim, AppError> {
        let mut running = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !running.insert(key.to_owned()) {
            return Err(AppError::KeyInFlight);
        }
        Ok(KeyClaim {
            keys: Arc::clone(self),
            key: key.to_owned(),
        })
    }
}

/// Holds a key in `KeysInFlight` until dropped (answered, or the request abandoned).
pub struct KeyClaim {
    keys: Arc<KeysInFlight>,
    key: String,
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        self.keys
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}
