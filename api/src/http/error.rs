//! `AppError`, the one error type handlers return, and its JSON form `{"detail": ...}`.
//!
//! Client errors keep FastAPI's shapes so existing clients parse them unchanged: a string detail
//! for 4xx raised by the service, a list of `{type, loc, msg, input}` for 422 validation errors.
//! Server errors never carry internals in the body; the cause is logged with the request id.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::ops::telemetry::ErrorCause;
use crate::store::{StoreError, error_chain};

/// One validation problem, as FastAPI/pydantic report it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// Machine-readable kind, e.g. `missing`, `string_type`, `json_invalid`, `int_parsing`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where the problem is, e.g. `["body", "text"]`, `["query", "limit"]`, or `["body", 9]` (a
    /// byte offset in a body that is not JSON).
    #[schema(schema_with = loc_schema)]
    pub loc: Vec<Value>,
    /// Human-readable message.
    pub msg: String,
    /// The offending input: any JSON value (`null` when there is none).
    pub input: Value,
    /// Extra facts, e.g. the limit that was exceeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub ctx: Option<Value>,
}

/// `loc` as documented: each step a field name or a position.
fn loc_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    ArrayBuilder::new()
        .items(
            OneOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::String))
                .item(ObjectBuilder::new().schema_type(Type::Integer)),
        )
        .build()
}

impl FieldError {
    pub fn new(kind: &'static str, loc: &[&str], msg: impl Into<String>, input: Value) -> Self {
        let loc = loc.iter().map(|part| Value::from(*part)).collect();
        Self::at(kind, loc, msg, input)
    }

    /// With a `loc` that may hold positions as well as names.
    pub fn at(kind: &'static str, loc: Vec<Value>, msg: impl Into<String>, input: Value) -> Self {
        Self {
            kind,
            loc,
            msg: msg.into(),
            input,
            ctx: None,
        }
    }

    pub fn with_ctx(mut self, ctx: Value) -> Self {
        self.ctx = Some(ctx);
        self
    }
}

/// The error body for problems the client can fix or the service reports: `{"detail": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    #[schema(example = "text must not be empty")]
    pub detail: String,
}

/// The 422 body: `{"detail": [FieldError, ...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationBody {
    pub detail: Vec<FieldError>,
}

/// A create's 422: field errors, or an Idempotency-Key used before for another text (a string).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum CreateRejected {
    Fields(ValidationBody),
    KeyReused(ErrorBody),
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A rule of the service refused the input (the seed's `HTTPException(400, ...)`).
    #[error("{0}")]
    BadRequest(String),
    #[error("request validation failed")]
    Validation(Vec<FieldError>),
    #[error("Item not found")]
    ItemNotFound,
    #[error("Request body too large: the limit is {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("could not read the request body")]
    BodyUnreadable,
    #[error("Request body not received within {seconds}s")]
    BodyTimeout { seconds: u64 },
    #[error("A create with this Idempotency-Key is still running; retry once it has finished")]
    KeyInFlight,
    #[error("This Idempotency-Key was used for another item text; use a new key for a new item")]
    KeyReused,
    /// Every change stream slot (`MAX_EVENT_STREAMS`) is taken.
    #[error("Too many open event streams")]
    TooManyStreams { max: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppError {
    pub fn validation(error: FieldError) -> Self {
        Self::Validation(vec![error])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BodyUnreadable => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::ItemNotFound => StatusCode::NOT_FOUND,
            Self::KeyInFlight => StatusCode::CONFLICT,
            Self::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyStreams { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(StoreError::OutOfSpace(_)) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Store(error) if error.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            Self::Validation(errors) => {
                (status, Json(ValidationBody { detail: errors })).into_response()
            }
            Self::Store(error) => {
                // The client gets the reason phrase only (or, when a write may have been stored,
                // that it may have been); the cause goes to the access log, which writes it with
                // the request id.
                let detail = match error {
                    StoreError::OutcomeUnknown { .. } => OUTCOME_UNKNOWN,
                    _ => canonical_reason(status),
                };
                let mut response = detail_response(status, detail);
                response
                    .extensions_mut()
                    .insert(ErrorCause(error_chain(&error)));
                // Transient (stopping, locked by another process): worth a retry soon. A full disk
                // takes someone freeing space: later.
                let retry_after = match status {
                    StatusCode::SERVICE_UNAVAILABLE => Some("1"),
                    StatusCode::INSUFFICIENT_STORAGE => Some("10"),
                    _ => None,
                };
                if let Some(seconds) = retry_after {
                    response.headers_mut().insert(
                        axum::http::header::RETRY_AFTER,
                        axum::http::HeaderValue::from_static(seconds),
                    );
                }
                response
            }
            Self::KeyInFlight => {
                let mut response = detail_response(status, &self.to_string());
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
                response
            }
            Self::BodyTimeout { .. } => {
                // The rest of the body may still be on its way: this connection cannot carry
                // another request, and saying so lets the client stop sending.
                let mut response = detail_response(status, &self.to_string());
                response.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
                response
            }
            Self::TooManyStreams { max } => {
                let mut response = detail_response(status, &self.to_string());
                response.extensions_mut().insert(ErrorCause(format!(
                    "all {max} event streams are in use (MAX_EVENT_STREAMS)"
                )));
                let headers = response.headers_mut();
                // A slot frees only when an open page goes away: not worth asking again at once.
                headers.insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("10"),
                );
                // Pages do not reuse a refused stream's connection; it should not hold a slot.
                headers.insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
                response
            }
            other => detail_response(status, &other.to_string()),
        }
    }
}

/// The 503 detail when a write reached the database but its commit was not confirmed: unlike
/// every other 503, the change may have been made.
pub const OUTCOME_UNKNOWN: &str = "The database did not confirm this write: it may have been \
     stored. Retry a create with the same Idempotency-Key to get its item exactly once; without a \
     key, check whether it was stored before retrying.";

/// `{"detail": message}` with the given status.
pub fn detail_response(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            detail: message.to_owned(),
        }),
    )
        .into_response()
}

/// The standard reason phrase ("Not Found", "Method Not Allowed", ...), as FastAPI words it.
pub fn canonical_reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(response: Response) -> Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn bad_request_is_a_400_with_a_string_detail() {
        let response = AppError::BadRequest("text must not be empty".into()).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            body_of(response).await,
            serde_json::json!({"detail": "text must not be empty"})
        );
    }

    #[tokio::test]
    async fn validation_is_a_422_with_a_list_of_field_errors() {
        let error = FieldError::new("missing", &["body", "text"], "Field required", Value::Null);
        let response = AppError::validation(error).into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body_of(response).await,
            serde_json::json!({"detail": [{"type": "missing", "loc": ["body", "text"],
                                           "msg": "Field required", "input": null}]})
        );
    }

    #[tokio::test]
    async fn storage_failures_hide_their_cause_from_the_client() {
        let cause = std::io::Error::other("disk I/O error at /secret/path");
        let response = AppError::from(StoreError::failed(cause)).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let cause = response.extensions().get::<ErrorCause>().unwrap().0.clone();
        assert!(
            cause.contains("disk I/O error at /secret/path"),
            "the log keeps the cause: {cause}"
        );
        assert_eq!(
            body_of(response).await,
            serde_json::json!({"detail": "Internal Server Error"})
        );
    }

    #[tokio::test]
    async fn an_unavailable_store_is_a_503_with_retry_after() {
        let response = AppError::from(StoreError::unavailable("shutting down")).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(
            body_of(response).await,
            serde_json::json!({"detail": "Service Unavailable"})
        );
    }

    #[tokio::test]
    async fn a_full_stream_table_is_a_503_that_says_so_and_logs_no_database_problem() {
        let response = AppError::TooManyStreams { max: 7 }.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "10");
        assert_eq!(response.headers()["connection"], "close");
        let cause = response.extensions().get::<ErrorCause>().unwrap().0.clone();
        assert_eq!(cause, "all 7 event streams are in use (MAX_EVENT_STREAMS)");
        assert_eq!(
            body_of(response).await,
            serde_json::json!({"detail": "Too many open event streams"})
        );
    }

    #[tokio::test]
    async fn a_full_disk_is_a_507_with_retry_after() {
        let full = std::io::Error::other("database or disk is full");
        let response = AppError::from(StoreError::OutOfSpace(full.into())).into_response();
        assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(response.headers()["retry-after"], "10");
        assert_eq!(
            body_of(response).await,
            serde_json::json!({"detail": "Insufficient Storage"})
        );
    }

    #[test]
    fn error_chain_joins_every_cause() {
        let cause = std::io::Error::other("database or disk is full");
        let chain = error_chain(&StoreError::failed(cause));
        assert_eq!(chain, "database error: database or disk is full");
    }
}
