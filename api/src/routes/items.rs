//! `/api/items`: list (newest first, optional keyset pages), create, get one, delete.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, LOCATION, VARY};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::ItemText;
use crate::error::{AppError, ErrorBody, ValidationBody};
use crate::extract::{JsonObject, int_param, string_field};
use crate::store::{Item, Page};

/// Largest page a client may ask for.
pub const MAX_LIMIT: i64 = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_items, create_item))
        .routes(routes!(get_item, delete_item))
}

/// Query parameters of the list. Both are optional; unknown parameters are ignored.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documents the parameters; they are parsed by `parse_page`.
struct ListQuery {
    /// Return at most this many items (1 to 1000). Without it, the whole list.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Return only items with an id below this one: pass the last id of the previous page.
    #[param(minimum = 1)]
    before: Option<i64>,
}

/// The body of a create request; other fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // Documents the body; it is parsed by `JsonObject` and `string_field`.
struct CreateItem {
    /// Surrounding whitespace is removed; must not be empty afterwards.
    #[schema(example = "  buy milk ")]
    text: String,
}

/// List items, newest first.
///
/// Without parameters the whole list, as the original service returned it. With `limit` (and
/// `before` = the last id seen) it pages through the list without skipping or repeating items
/// while others are added.
#[utoipa::path(
    get,
    path = "/api/items",
    tag = "items",
    params(ListQuery),
    responses(
        (status = 200, description = "Items, highest id first", body = [Item]),
        (status = 422, description = "A parameter is not a valid integer or out of range", body = ValidationBody),
    )
)]
async fn list_items(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let page = parse_page(query.as_deref())?;
    // Only first pages are cached: they are what clients poll; deeper pages vary too much.
    let revision = match page.before {
        None => state.store.revision().await?,
        Some(_) => None,
    };
    let body = state
        .list_cache
        .get_or_build(revision, page.limit, async {
            let items = state.store.list(page).await?;
            let json = serde_json::to_vec(&items).expect("integers and strings always serialize");
            Ok::<_, AppError>(Bytes::from(json))
        })
        .await?;
    let json = HeaderValue::from_static("application/json");
    // The same URL answers plain or gzipped JSON, so caches must key on Accept-Encoding.
    let vary = (VARY, HeaderValue::from_static("accept-encoding"));
    Ok(match body.gzip.filter(|_| accepts_gzip(&headers)) {
        Some(gzip) => (
            [
                (CONTENT_TYPE, json),
                (CONTENT_ENCODING, HeaderValue::from_static("gzip")),
                vary,
            ],
            gzip,
        )
            .into_response(),
        None => ([(CONTENT_TYPE, json), vary], body.json).into_response(),
    })
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
#[utoipa::path(
    post,
    path = "/api/items",
    tag = "items",
    request_body(content = CreateItem, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored (committed) item", body = Item,
         headers(("location" = String, description = "URL of the new item"))),
        (status = 400, description = "Text is empty after trimming", body = ErrorBody,
         example = json!({"detail": "text must not be empty"})),
        (status = 408, description = "Body not received within BODY_TIMEOUT_SECS", body = ErrorBody),
        (status = 413, description = "Body larger than MAX_BODY_BYTES", body = ErrorBody),
        (status = 422, description = "Body is not a JSON object with a string `text`", body = ValidationBody),
    )
)]
async fn create_item(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Result<Response, AppError> {
    let raw = string_field(&body, "text")?;
    let text = ItemText::parse(&raw).map_err(|error| AppError::BadRequest(error.to_string()))?;
    let item = state.store.create(text).await?;
    let location = HeaderValue::from_str(&format!("/api/items/{}", item.id))
        .expect("a path made of digits is a valid header value");
    Ok((StatusCode::CREATED, [(LOCATION, location)], Json(item)).into_response())
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

fn item_id(raw: &str) -> Result<i64, AppError> {
    int_param("path", "id", raw, i64::MIN, i64::MAX)
}

/// Reads `limit` and `before`; other parameters (cache busters and the like) are ignored.
/// A repeated parameter counts by its last value, as in FastAPI.
fn parse_page(query: Option<&str>) -> Result<Page, AppError> {
    let mut page = Page::default();
    let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes());
    for (name, value) in pairs {
        match &*name {
            "limit" => {
                let limit = int_param("query", "limit", &value, 1, MAX_LIMIT)?;
                page.limit = Some(u32::try_from(limit).expect("bounded by MAX_LIMIT"));
            }
            "before" => page.before = Some(int_param("query", "before", &value, 1, i64::MAX)?),
            _ => {}
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(parse_page(None).unwrap(), Page::default());
        assert_eq!(parse_page(Some("")).unwrap(), Page::default());
    }

    #[test]
    fn limit_and_before_are_read_and_unknown_parameters_ignored() {
        let page = parse_page(Some("_=1700000000&limit=5&before=10&x")).unwrap();
        assert_eq!(
            page,
            Page {
                limit: Some(5),
                before: Some(10)
            }
        );
    }

    #[test]
    fn the_last_of_repeated_parameters_wins() {
        assert_eq!(parse_page(Some("limit=5&limit=7")).unwrap().limit, Some(7));
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
                matches!(parse_page(Some(query)), Err(AppError::Validation(_))),
                "{query}"
            );
        }
    }
}
