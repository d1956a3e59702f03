//! How driver errors map to the service's: what passes by itself (503 with `Retry-After`) and what
//! does not, at start-up and per request.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use super::connect::Target;
use crate::store::{StoreError, error_chain};

/// Why connecting and migrating failed.
pub(super) enum PrepareError {
    /// Retrying cannot help: the settings or the database must change.
    Fatal(String),
    /// The server is not reachable (yet).
    Retry(String),
}

/// Sorts a driver error into "try again later" (503) and "broken" (500).
pub(super) fn classify(error: tokio_postgres::Error) -> StoreError {
    if error.code() == Some(&SqlState::DISK_FULL) {
        return StoreError::OutOfSpace(error.into());
    }
    let transient = match error.code() {
        Some(code) => is_transient(code),
        // No SQLSTATE: the connection failed or closed (I/O, TLS, server gone).
        None => {
            error.is_closed()
                || error.as_db_error().is_none() && has_cause::<std::io::Error>(&error)
        }
    };
    if transient {
        StoreError::unavailable_because(
            "the database connection failed or the server is busy",
            error,
        )
    } else {
        StoreError::failed(error)
    }
}

/// Conditions that pass: connection trouble, server starting or stopping, too many clients,
/// out of resources, serialization conflicts, cancelled statements, a read-only failover target.
pub(super) fn is_transient(code: &SqlState) -> bool {
    let code = code.code();
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "40001" | "40P01" | "55P03" | "57014" | "25006")
}

/// Start-up: a server that is down or starting is waited for; anything else stops the start.
pub(super) fn prepare_error(target: &Target, error: &PoolError) -> PrepareError {
    let mut reason = format!("cannot connect to {target}: {}", error_chain(error));
    if let Some(token) = target.credential_error() {
        reason = format!("{reason} ({token})");
    }
    let fatal = match error {
        PoolError::Backend(error) => match error.code() {
            Some(code) => !is_transient(code),
            // TLS and certificate problems are settings problems (rustls reports them as I/O
            // errors, so this comes first); other I/O is a server not (yet) reachable; anything
            // else (a password the server wants and does not get, ...) is a settings problem too.
            None => {
                has_cause::<rustls::Error>(error)
                    || error.to_string().contains("TLS")
                    || !(error.is_closed() || has_cause::<std::io::Error>(error))
            }
        },
        PoolError::Timeout(_) => false,
        _ => true,
    };
    if fatal {
        PrepareError::Fatal(reason)
    } else {
        PrepareError::Retry(reason)
    }
}

pub(super) fn has_cause<T: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<T>() {
            return true;
        }
        source = cause.source();
    }
    false
}
