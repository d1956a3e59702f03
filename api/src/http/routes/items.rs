//! `/api/items`: list (newest first, optional keyset pages), create, get one, delete.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION, VARY,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::{IdempotencyKey, ItemText, TextError};
use crate::http::error::{AppError, CreateRejected, ErrorBody, FieldError, ValidationBody};
use crate::http::extract::{JsonBody, int_param};
use crate::http::list_cache::Listing;
use crate::http::state::AppState;
use crate::store::{Item, MAX_LIMIT, Once, Page};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_items, create_item))
        .routes(routes!(get_item, update_item, delete_item))
}

/// Query parameters of the list. Both are optional; unknown parameters are ignored.
#[derive(Debug, Default, PartialEq, Eq)]
struct ListQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

/// Written out rather than derived, so that the documented bounds are the ones `parse` applies.
impl IntoParams for ListQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let optional = |name: &str, description: &str, schema: ObjectBuilder| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(schema))
                .build()
        };
        let integer = || {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
        };
        vec![
            optional(
                "limit",
                "Return at most this many items. Without it, the whole list.",
                integer().maximum(Some(MAX_LIMIT)),
            ),
            optional(
                "before",
                "Return only items with an id below this one: pass the last id of the previous \
                 page.",
                integer().format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64))),
            ),
        ]
    }
}

impl ListQuery {
    /// Reads `limit` and `before`, ignoring other parameters (cache busters and the like).
    /// A repeated parameter counts by its last value, as in FastAPI.
    fn parse(query: Option<&str>) -> Result<Self, AppError> {
        let mut parsed = Self::default();
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes());
        for (name, value) in pairs {
            match &*name {
                "limit" => {
                    let limit = int_param("query", "limit", &value, 1, MAX_LIMIT.into())?;
                    parsed.limit = Some(u32::try_from(limit).expect("bounded by MAX_LIMIT"));
                }
                "before" => {
                    parsed.before = Some(int_param("query", "before", &value, 1, i64::MAX)?);
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

impl<S: Sync> FromRequestParts<S> for ListQuery {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Self::parse(parts.uri.query())
    }
}

impl From<ListQuery> for Page {
    fn from(query: ListQuery) -> Self {
        Self {
            limit: query.limit,
            before: query.before,
        }
    }
}

/// The body of a create or an edit request; other fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
struct CreateItem {
    /// Surrounding whitespace is removed (as Python's `str.strip()` does); what is left must not
    /// be empty, so the text needs a character that is not whitespace.
    // The class holds exactly the characters `domain::is_python_whitespace` accepts (tested).
    #[schema(
        example = "  buy milk ",
        min_length = 1,
        pattern = "[^\\t\\n\\u000b\\f\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    text: String,
}

/// List items, newest first.
///
/// Without parameters the whole list, as the original service returned it. With `limit` (and
/// `before` = the last id seen) it pages through the list without skipping or repeating items
/// while others are added. An answer held in memory carries an `ETag`: a client that sends it
/// back in `If-None-Match` gets a 304 with no body while the list is unchanged.
#[utoipa::path(
    get,
    path = "/api/items",
    tag = "items",
    params(
        ListQuery,
        ("if-none-match" = Option<String>, Header,
         description = "An `ETag` from an earlier answer: if the list is unchanged, the answer is \
                        304 with no body."),
    ),
    responses(
        (status = 200, description = "Items, highest id first", body = [Item],
         headers(("etag" = String, description = "Identifies this list; send it back in \
                   `If-None-Match`. Absent on a whole list too long to keep, which is streamed."),
                 ("x-total-count" = i64, description = "How many items the whole list has; \
                   on answers without `before` that carry an `ETag`."))),
        (status = 304, description = "The list is the one `If-None-Match` named",
         headers(("etag" = String, description = "The tag that matched"),
                 ("x-total-count" = i64, description = "How many items the whole list has"))),
        (status = 422, description = "A parameter is not a valid integer or out of range", body = ValidationBody),
    )
)]
async fn list_items(
    State(state): State<AppState>,
    query: ListQuery,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let json = HeaderValue::from_static("application/json");
    let body = match state.lists.list(query.into()).await? {
        Listing::Body(body) => body,
        Listing::Stream(chunks) => {
            let body = axum::body::Body::from_stream(chunks);
            return Ok(([(CONTENT_TYPE, json)], body).into_response());
        }
    };
    // The same URL answers plain or gzipped JSON, so caches must key on Accept-Encoding.
    let vary = (VARY, HeaderValue::from_static("accept-encoding"));
    let etag = HeaderValue::from_maybe_shared(body.etag).expect("W/, quotes and hex digits");
    let total = body
        .total
        .map(|total| [(TOTAL_COUNT, HeaderValue::from(total))]);
    if client_has(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, total, [(ETAG, etag), vary]).into_response());
    }
    Ok(match body.gzip.filter(|_| accepts_gzip(&headers)) {
        Some(gzip) => (
            [
                (CONTENT_TYPE, json),
                (CONTENT_ENCODING, HeaderValue::from_static("gzip")),
                (ETAG, etag),
                vary,
            ],
            total,
            gzip,
        )
            .into_response(),
        None => ([(CONTENT_TYPE, json), (ETAG, etag), vary], total, body.json).into_response(),
    })
}

/// The number of items in the whole list, on first pages and the whole list when held.
const TOTAL_COUNT: HeaderName = HeaderName::from_static("x-total-count");

/// Whether `If-None-Match` names `etag` or is `*`. The comparison is weak, as for every
/// `If-None-Match`: `W/` on either side is ignored.
fn client_has(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    fn opaque(tag: &[u8]) -> &[u8] {
        tag.strip_prefix(b"W/").unwrap_or(tag)
    }
    let ours = opaque(etag.as_bytes());
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || opaque(tag.as_bytes()) == ours)
}

/// Whether `Accept-Encoding` allows gzip (named, or `*`, without `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|parameter| {
                parameter
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// Create an item.
///
/// The text is trimmed of surrounding whitespace (as Python's `str.strip()` does); inner
/// whitespace is kept. `id` and `created_at` are always set by the server.
///
/// With an `Idempotency-Key` the create happens once: a retry with the same key and the same text
/// (on any replica, after a restart, within 24 hours) gets the item the first attempt stored, with
/// the same status and `Idempotent-Replayed: true`, instead of a second item.
#[utoipa::path(
    post,
    path = "/api/items",
    tag = "items",
    params(
        ("idempotency-key" = Option<String>, Header,
         pattern = r#"^(?:[!#-~]{1,255}|"[!#-~]{1,255}")$"#, min_length = 1, max_length = 257,
         description = "A value unique to this create, e.g. a random UUID (1 to 255 visible ASCII \
                        characters, optionally in double quotes). Send it again when retrying \
                        the same create; keys are kept for 24 hours."),
    ),
    request_body(content = CreateItem, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored (committed) item; with a key used before for the \
                                      same text, the item stored then", body = Item,
         headers(("location" = String, description = "URL of the new item"),
                 ("idempotent-replayed" = String, description = "`true` when the answer is the \
                   one a create with the same key got before"))),
        (status = 400, description = "Text is empty after trimming, or the Idempotency-Key is \
                                      not valid", body = ErrorBody,
         example = json!({"detail": "text must not be empty"})),
        (status = 408, description = "Body not received within BODY_TIMEOUT_SECS", body = ErrorBody),
        (status = 409, description = "A create with this Idempotency-Key is still running; \
                                      retry after `Retry-After`", body = ErrorBody),
        (status = 413, description = "Body larger than MAX_BODY_BYTES", body = ErrorBody),
        (status = 422, description = "Body is not a JSON object with a string `text` of at most \
                                      MAX_TEXT_CHARS characters (a list of field errors), or the \
                                      Idempotency-Key was used for another text (a string)",
         body = CreateRejected),
        (status = 503, description = "Not available right now, or the database did not confirm \
                                      the write (it may be stored: retry with the same key)",
         body = ErrorBody),
    )
)]
async fn create_item(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateItem>,
) -> Result<Response, AppError> {
    let text = item_text(&body.text, &state)?;
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        let item = state.store.create(text).await?;
        return Ok(created(&item, false));
    };
    if headers.get_all(IDEMPOTENCY_KEY).iter().count() > 1 {
        return Err(AppError::BadRequest("send one Idempotency-Key".into()));
    }
    let key = IdempotencyKey::parse(value.as_bytes(), &text)
        .map_err(|error| AppError::BadRequest(error.to_string()))?;
    let _running = state.keys_in_flight.claim(key.as_str())?;
    match state.store.create_once(text, key).await? {
        Once::Created(item) => Ok(created(&item, false)),
        Once::Replayed(item) => Ok(created(&item, true)),
        Once::KeyReused => Err(AppError::KeyReused),
    }
}

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The 201 of a create; `replayed` when it repeats the answer an earlier create with the same key got.
fn created(item: &Item, replayed: bool) -> Response {
    let location = HeaderValue::from_str(&format!("/api/items/{}", item.id))
        .expect("a path made of digits is a valid header value");
    let replayed = replayed.then_some([(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    )]);
    (
        StatusCode::CREATED,
        [(LOCATION, location)],
        replayed,
        Json(item),
    )
        .into_response()
}

/// Get one item.
#[utoipa::path(
    get,
    path = "/api/items/{id}",
    tag = "items",
    params(("id" = i64, Path, description = "Item id")),
    responses(
        (status = 200, description = "The item", body = Item),
        (status = 404, description = "No item with this id", body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ValidationBody),
    )
)]
async fn get_item(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Item>, AppError> {
    let id = item_id(&id)?;
    state
        .store
        .get(id)
        .await?
        .map(Json)
        .ok_or(AppError::ItemNotFound)
}

/// Delete an item.
#[utoipa::path(
    delete,
    path = "/api/items/{id}",
    tag = "items",
    params(("id" = i64, Path, description = "Item id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No item with this id", body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ValidationBody),
    )
)]
async fn delete_item(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let id = item_id(&id)?;
    if state.store.delete(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::ItemNotFound)
    }
}

/// Change an item's text.
///
/// The text is trimmed and checked as on create; `id` and `created_at` stay as they were.
#[utoipa::path(
    patch,
    path = "/api/items/{id}",
    tag = "items",
    params(("id" = i64, Path, description = "Item id")),
    request_body(content = CreateItem, content_type = "application/json"),
    responses(
        (status = 200, description = "The item with its new text (committed)", body = Item),
        (status = 400, description = "Text is empty after trimming", body = ErrorBody),
        (status = 404, description = "No item with this id", body = ErrorBody),
        (status = 408, description = "Body not received within BODY_TIMEOUT_SECS", body = ErrorBody),
        (status = 413, description = "Body larger than MAX_BODY_BYTES", body = ErrorBody),
        (status = 422, description = "The id is not an integer, or the body is not a JSON object \
                                       with a string `text` of at most MAX_TEXT_CHARS characters",
         body = ValidationBody),
    )
)]
async fn update_item(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CreateItem>,
) -> Result<Json<Item>, AppError> {
    let id = item_id(&id)?;
    let text = item_text(&body.text, &state)?;
    state
        .store
        .update(id, text)
        .await?
        .map(Json)
        .ok_or(AppError::ItemNotFound)
}

/// The text as stored: a blank one is the seed's 400, a too long one pydantic's 422.
fn item_text(raw: &str, state: &AppState) -> Result<ItemText, AppError> {
    ItemText::parse(raw, state.body_limits.max_text_chars).map_err(|error| match error {
        TextError::Empty => AppError::BadRequest(error.to_string()),
        TextError::TooLong { max } => AppError::validation(
            FieldError::new(
                "string_too_long",
                &["body", "text"],
                error.to_string(),
                raw.into(),
            )
            .with_ctx(serde_json::json!({ "max_length": max })),
        ),
    })
}

fn item_id(raw: &str) -> Result<i64, AppError> {
    int_param("path", "id", raw, i64::MIN, i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI document of these routes.
    fn documented() -> serde_json::Value {
        use utoipa::OpenApi;
        let (_, spec) =
            OpenApiRouter::<AppState>::with_openapi(crate::http::openapi::ApiDoc::openapi())
                .merge(router())
                .split_for_parts();
        serde_json::to_value(spec).unwrap()
    }

    /// The documented pattern for `text`.
    fn documented_text_pattern() -> String {
        documented()["components"]["schemas"]["CreateItem"]["properties"]["text"]["pattern"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn the_documented_page_sizes_are_the_accepted_ones() {
        let spec = documented();
        let limit = &spec["paths"]["/api/items"]["get"]["parameters"][0];
        assert_eq!(limit["name"], "limit");
        let minimum = limit["schema"]["minimum"].as_u64().unwrap();
        let maximum = limit["schema"]["maximum"].as_u64().unwrap();
        for accepted in [minimum, maximum] {
            assert!(ListQuery::parse(Some(&format!("limit={accepted}"))).is_ok());
        }
        for refused in [minimum - 1, maximum + 1] {
            assert!(ListQuery::parse(Some(&format!("limit={refused}"))).is_err());
        }
    }

    #[test]
    fn the_documented_text_pattern_excludes_exactly_pythons_whitespace() {
        // Python's whitespace as runs of code points, written as the pattern writes them.
        let escape = |code: u32| match code {
            0x09 => "\\t".to_owned(),
            0x0a => "\\n".to_owned(),
            0x0c => "\\f".to_owned(),
            0x0d => "\\r".to_owned(),
            0x20 => " ".to_owned(),
            other => format!("\\u{other:04x}"),
        };
        let spaces: Vec<u32> = (0..=0x10_FFFF)
            .filter(|&code| char::from_u32(code).is_some_and(crate::domain::is_python_whitespace))
            .collect();
        let mut class = String::new();
        let mut index = 0;
        while index < spaces.len() {
            let mut end = index;
            // The space is written on its own, after the run before it.
            while end + 1 < spaces.len()
                && spaces[end + 1] == spaces[end] + 1
                && spaces[end + 1] != 0x20
            {
                end += 1;
            }
            // Runs the pattern spells out one by one (the control characters) stay apart.
            if end > index + 1 && spaces[index] > 0x0d {
                class.push_str(&format!(
                    "{}-{}",
                    escape(spaces[index]),
                    escape(spaces[end])
                ));
            } else {
                (index..=end).for_each(|at| class.push_str(&escape(spaces[at])));
            }
            index = end + 1;
        }
        assert_eq!(documented_text_pattern(), format!("[^{class}]"));
    }

    #[test]
    fn gzip_is_accepted_when_named_or_starred_without_q_zero() {
        let accepts = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
            accepts_gzip(&headers)
        };
        assert!(accepts("gzip"));
        assert!(accepts("br, GZIP;q=0.5"));
        assert!(accepts("*"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn no_query_means_the_whole_list() {
        assert_eq!(ListQuery::parse(None).unwrap(), ListQuery::default());
        assert_eq!(ListQuery::parse(Some("")).unwrap(), ListQuery::default());
    }

    #[test]
    fn limit_and_before_are_read_and_unknown_parameters_ignored() {
        let query = ListQuery::parse(Some("_=1700000000&limit=5&before=10&x")).unwrap();
        assert_eq!(
            query,
            ListQuery {
                limit: Some(5),
                before: Some(10)
            }
        );
    }

    #[test]
    fn the_last_of_repeated_parameters_wins() {
        assert_eq!(
            ListQuery::parse(Some("limit=5&limit=7")).unwrap().limit,
            Some(7)
        );
    }

    #[test]
    fn out_of_range_or_malformed_values_are_refused() {
        for query in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "limit=",
            "before=0",
            "before=-3",
            "limit=1.5",
        ] {
            assert!(
                matches!(ListQuery::parse(Some(query)), Err(AppError::Validation(_))),
                "{query}"
            );
        }
    }
}
