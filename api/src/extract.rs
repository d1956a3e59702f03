//! Request parsing that answers bad input the way the seed (FastAPI) did: 422 with a list of
//! `{type, loc, msg, input}`, never a 500, whatever the body, its encoding or its content type.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Map, Value, json};

use axum::extract::rejection::{BytesRejection, FailedToBufferBody};

use crate::app::AppState;
use crate::error::{AppError, FieldError};

/// A JSON object body: `Content-Type` absent or JSON (`application/json`, `application/*+json`,
/// any parameters such as `charset=utf-8`), at most `MAX_BODY_BYTES`, valid UTF-8 JSON.
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        // Refused before a byte of the body is read: a client that sent `Expect: 100-continue`
        // gets its 413 at once instead of being told to go ahead.
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > state.max_body_bytes as u64) {
            return Err(AppError::PayloadTooLarge {
                limit: state.max_body_bytes,
            });
        }
        let body = tokio::time::timeout(state.body_timeout, Bytes::from_request(request, state))
            .await
            .map_err(|_| AppError::BodyTimeout {
                seconds: state.body_timeout.as_secs(),
            })?
            .map_err(|rejection| match rejection {
                BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                    AppError::PayloadTooLarge {
                        limit: state.max_body_bytes,
                    }
                }
                _ => AppError::BodyUnreadable,
            })?;
        parse_object(content_type.as_deref(), &body).map(Self)
    }
}

/// The decision FastAPI makes for a body parameter, as a pure function.
pub fn parse_object(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Map<String, Value>, AppError> {
    if body.is_empty() {
        return Err(AppError::validation(FieldError::new(
            "missing",
            &["body"],
            "Field required",
            Value::Null,
        )));
    }
    if let Some(content_type) = content_type.filter(|value| !is_json(value)) {
        return Err(AppError::validation(
            FieldError::new(
                "content_type",
                &["body"],
                format!("Content-Type must be application/json, not {content_type:?}"),
                Value::Null,
            )
            .with_ctx(json!({"expected": "application/json"})),
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        AppError::Validation(vec![FieldError {
            kind: "json_invalid",
            loc: vec![Value::from("body"), Value::from(error_offset(body, &error))],
            msg: "JSON decode error".into(),
            input: json!({}),
            ctx: Some(json!({"error": error.to_string()})),
        }])
    })?;
    match value {
        Value::Object(object) => Ok(object),
        other => Err(AppError::validation(FieldError::new(
            "model_attributes_type",
            &["body"],
            "Input should be a valid dictionary or object to extract fields from",
            other,
        ))),
    }
}

/// Byte offset of a JSON syntax error, as FastAPI puts it in `loc`.
fn error_offset(body: &[u8], error: &serde_json::Error) -> usize {
    let mut line = 1;
    let mut offset = 0;
    for (index, byte) in body.iter().enumerate() {
        if line == error.line() {
            offset = index;
            break;
        }
        if *byte == b'\n' {
            line += 1;
        }
    }
    (offset + error.column().saturating_sub(1)).min(body.len())
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A required string field of a JSON object, with pydantic's errors when absent or not a string.
pub fn string_field(object: &Map<String, Value>, name: &str) -> Result<String, AppError> {
    match object.get(name) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(other) => Err(AppError::validation(FieldError::new(
            "string_type",
            &["body", name],
            "Input should be a valid string",
            other.clone(),
        ))),
        None => Err(AppError::validation(FieldError::new(
            "missing",
            &["body", name],
            "Field required",
            Value::Object(object.clone()),
        ))),
    }
}

/// An integer parameter (query or path) with bounds, reported like FastAPI does.
pub fn int_param(
    location: &str,
    name: &str,
    raw: &str,
    min: i64,
    max: i64,
) -> Result<i64, AppError> {
    let loc = [location, name];
    let value: i64 = raw.trim().parse().map_err(|_| {
        AppError::validation(FieldError::new(
            "int_parsing",
            &loc,
            "Input should be a valid integer, unable to parse string as an integer",
            Value::from(raw),
        ))
    })?;
    if value < min {
        return Err(AppError::validation(
            FieldError::new(
                "greater_than_equal",
                &loc,
                format!("Input should be greater than or equal to {min}"),
                Value::from(raw),
            )
            .with_ctx(json!({"ge": min})),
        ));
    }
    if value > max {
        return Err(AppError::validation(
            FieldError::new(
                "less_than_equal",
                &loc,
                format!("Input should be less than or equal to {max}"),
                Value::from(raw),
            )
            .with_ctx(json!({"le": max})),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_error(result: Result<impl std::fmt::Debug, AppError>) -> FieldError {
        match result {
            Err(AppError::Validation(errors)) => errors[0].clone(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_json_content_types_with_parameters_and_none_at_all() {
        for content_type in [
            None,
            Some("application/json"),
            Some("Application/JSON; charset=utf-8"),
            Some("application/merge-patch+json"),
        ] {
            assert!(
                parse_object(content_type, br#"{"text":"a"}"#).is_ok(),
                "{content_type:?}"
            );
        }
    }

    #[test]
    fn refuses_other_content_types_with_a_422() {
        let error = first_error(parse_object(Some("text/plain"), br#"{"text":"a"}"#));
        assert_eq!(error.kind, "content_type");
        let error = first_error(parse_object(
            Some("application/x-www-form-urlencoded"),
            b"text=a",
        ));
        assert_eq!(error.kind, "content_type");
    }

    #[test]
    fn an_empty_body_is_a_missing_body() {
        let error = first_error(parse_object(Some("application/json"), b""));
        assert_eq!((error.kind, error.loc), ("missing", vec![json!("body")]));
    }

    #[test]
    fn malformed_json_reports_its_offset() {
        let error = first_error(parse_object(None, b"{\"text\": }"));
        assert_eq!(error.kind, "json_invalid");
        assert_eq!(error.loc, vec![json!("body"), json!(9)]);
    }

    #[test]
    fn invalid_utf8_and_lone_surrogates_are_json_errors() {
        assert_eq!(
            first_error(parse_object(None, b"{\"text\":\"\xff\"}")).kind,
            "json_invalid"
        );
        assert_eq!(
            first_error(parse_object(None, br#"{"text":"\ud800"}"#)).kind,
            "json_invalid"
        );
        assert_eq!(
            first_error(parse_object(None, br#"{"text":"\udc00x"}"#)).kind,
            "json_invalid"
        );
    }

    #[test]
    fn a_valid_surrogate_pair_is_one_character() {
        let object = parse_object(None, br#"{"text":"\ud83d\ude00"}"#).unwrap();
        assert_eq!(string_field(&object, "text").unwrap(), "\u{1f600}");
    }

    #[test]
    fn non_objects_are_refused() {
        for body in [&b"[]"[..], b"\"text\"", b"42", b"null"] {
            assert_eq!(
                first_error(parse_object(None, body)).kind,
                "model_attributes_type"
            );
        }
    }

    #[test]
    fn string_field_reports_missing_and_wrong_types() {
        let object = parse_object(None, br#"{"text": 5, "other": true}"#).unwrap();
        let error = first_error(string_field(&object, "text"));
        assert_eq!((error.kind, error.input), ("string_type", json!(5)));
        let error = first_error(string_field(&object, "absent"));
        assert_eq!(error.kind, "missing");
        assert_eq!(error.loc, vec![json!("body"), json!("absent")]);
    }

    #[test]
    fn int_param_checks_syntax_and_bounds() {
        assert_eq!(int_param("query", "limit", "10", 1, 1000).unwrap(), 10);
        assert_eq!(
            first_error(int_param("query", "limit", "ten", 1, 1000)).kind,
            "int_parsing"
        );
        assert_eq!(
            first_error(int_param("query", "limit", "0", 1, 1000)).kind,
            "greater_than_equal"
        );
        assert_eq!(
            first_error(int_param("query", "limit", "1001", 1, 1000)).kind,
            "less_than_equal"
        );
        assert_eq!(
            first_error(int_param("path", "id", "99999999999999999999", 1, i64::MAX)).kind,
            "int_parsing"
        );
    }
}
