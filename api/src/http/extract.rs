//! Request parsing that answers bad input the way the seed (FastAPI) did: 422 with a list of
//! `{type, loc, msg, input}`, never a 500, whatever the body, its encoding or its content type.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::{AppError, FieldError};
use super::state::AppState;

/// A JSON body parsed into `T` (the type the OpenAPI document describes). `Content-Type` absent
/// or JSON (`application/json`, `application/*+json`, any parameters such as `charset=utf-8`),
/// at most `MAX_BODY_BYTES`, valid UTF-8 JSON, an object with `T`'s fields.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limits = state.body_limits;
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
        let too_large = AppError::PayloadTooLarge {
            limit: limits.max_bytes,
        };
        if declared.is_some_and(|length| length > limits.max_bytes as u64) {
            return Err(too_large);
        }
        let body = tokio::time::timeout(limits.timeout, Bytes::from_request(request, state))
            .await
            .map_err(|_| AppError::BodyTimeout {
                seconds: limits.timeout.as_secs(),
            })?
            .map_err(|rejection| match rejection {
                BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                    too_large
                }
                _ => AppError::BodyUnreadable,
            })?;
        parse_body(content_type.as_deref(), &body).map(Self)
    }
}

/// The decision FastAPI makes for a body parameter of model `T`, as a pure function.
pub fn parse_body<T: DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, AppError> {
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
    // Read as a JSON value first, as Python's `json.loads` does: a repeated key counts by its last
    // value, and the offending input of an error can be quoted back.
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        AppError::Validation(vec![FieldError {
            kind: "json_invalid",
            loc: vec![Value::from("body"), Value::from(error_offset(body, &error))],
            msg: "JSON decode error".into(),
            input: json!({}),
            ctx: Some(json!({"error": error.to_string()})),
        }])
    })?;
    // A struct also deserializes from an array of its fields; a model only from an object.
    if !value.is_object() {
        return Err(AppError::validation(FieldError::new(
            "model_attributes_type",
            &["body"],
            "Input should be a valid dictionary or object to extract fields from",
            value,
        )));
    }
    serde_path_to_error::deserialize(&value)
        .map_err(|error| AppError::validation(field_error(&value, &error)))
}

/// A deserialization error of a field as pydantic reports it: `loc` from the path that
/// `serde_path_to_error` recorded, `input` the value found there.
fn field_error(body: &Value, error: &serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let mut loc = vec![Value::from("body")];
    let mut found = Some(body);
    for segment in error.path().iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => {
                loc.push(Value::from(*index));
                found = found.and_then(|value| value.get(index));
            }
            serde_path_to_error::Segment::Map { key } => {
                loc.push(Value::from(key.as_str()));
                found = found.and_then(|value| value.get(key));
            }
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    let input = found.cloned().unwrap_or(Value::Null);
    // serde words these two errors the same way for every type (`de::Error::missing_field` and
    // `invalid_type`); anything else is reported with serde's own message.
    let message = error.inner().to_string();
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        loc.push(Value::from(field));
        return FieldError::at("missing", loc, "Field required", input);
    }
    if message.starts_with("invalid type:") && message.ends_with("expected a string") {
        return FieldError::at("string_type", loc, "Input should be a valid string", input);
    }
    FieldError::at("value_error", loc, message, input)
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

    #[derive(Debug, serde::Deserialize)]
    struct Model {
        text: String,
    }

    fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Model, AppError> {
        parse_body(content_type, body)
    }

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
                parse(content_type, br#"{"text":"a"}"#).is_ok(),
                "{content_type:?}"
            );
        }
    }

    #[test]
    fn refuses_other_content_types_with_a_422() {
        let error = first_error(parse(Some("text/plain"), br#"{"text":"a"}"#));
        assert_eq!(error.kind, "content_type");
        let error = first_error(parse(Some("application/x-www-form-urlencoded"), b"text=a"));
        assert_eq!(error.kind, "content_type");
    }

    #[test]
    fn an_empty_body_is_a_missing_body() {
        let error = first_error(parse(Some("application/json"), b""));
        assert_eq!((error.kind, error.loc), ("missing", vec![json!("body")]));
    }

    #[test]
    fn malformed_json_reports_its_offset() {
        let error = first_error(parse(None, b"{\"text\": }"));
        assert_eq!(error.kind, "json_invalid");
        assert_eq!(error.loc, vec![json!("body"), json!(9)]);
    }

    #[test]
    fn invalid_utf8_and_lone_surrogates_are_json_errors() {
        assert_eq!(
            first_error(parse(None, b"{\"text\":\"\xff\"}")).kind,
            "json_invalid"
        );
        assert_eq!(
            first_error(parse(None, br#"{"text":"\ud800"}"#)).kind,
            "json_invalid"
        );
        assert_eq!(
            first_error(parse(None, br#"{"text":"\udc00x"}"#)).kind,
            "json_invalid"
        );
    }

    #[test]
    fn a_valid_surrogate_pair_is_one_character() {
        let model = parse(None, br#"{"text":"\ud83d\ude00"}"#).unwrap();
        assert_eq!(model.text, "\u{1f600}");
    }

    #[test]
    fn non_objects_are_refused_even_an_array_of_the_fields() {
        for body in [&b"[]"[..], b"[\"text\"]", b"\"text\"", b"42", b"null"] {
            let error = first_error(parse(None, body));
            assert_eq!(error.kind, "model_attributes_type");
            assert_eq!(error.input, serde_json::from_slice::<Value>(body).unwrap());
        }
    }

    #[test]
    fn a_field_of_the_wrong_type_is_quoted_back_at_its_path() {
        let error = first_error(parse(None, br#"{"text": 5, "other": true}"#));
        assert_eq!(error.kind, "string_type");
        assert_eq!(error.loc, vec![json!("body"), json!("text")]);
        assert_eq!(error.input, json!(5));
    }

    #[test]
    fn a_missing_field_quotes_the_whole_object() {
        let error = first_error(parse(None, br#"{"other": true}"#));
        assert_eq!(error.kind, "missing");
        assert_eq!(error.loc, vec![json!("body"), json!("text")]);
        assert_eq!(error.input, json!({"other": true}));
    }

    #[test]
    fn a_repeated_key_counts_by_its_last_value() {
        assert_eq!(
            parse(None, br#"{"text":"a","text":"b"}"#).unwrap().text,
            "b"
        );
        assert_eq!(
            first_error(parse(None, br#"{"text":"a","text":1}"#)).kind,
            "string_type"
        );
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
