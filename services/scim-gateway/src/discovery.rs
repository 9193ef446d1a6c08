//! The discovery endpoints (RFC 7644 §4): `/ServiceProviderConfig`, `/Schemas[/{id}]` and
//! `/ResourceTypes[/{name}]`. They describe the service, hold no tenant data, and are served
//! without credentials, so that a client can read them before it is configured.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use scim::discovery;

use crate::AppState;
use crate::error::ApiError;
use crate::resources::ResourceId;
use crate::scim_json::respond;

const DOCS: &str = "https://github.com/learning-platform/scim#connecting-okta";

async fn service_provider_config(State(state): State<AppState>, headers: HeaderMap) -> Response {
    respond(StatusCode::OK, &discovery::service_provider_config(&state.base_url(&headers), DOCS), &[])
}

async fn schemas(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = state.base_url(&headers);
    let all = discovery::SCHEMAS.iter().map(|s| discovery::schema_json(s, &base)).collect();
    respond(StatusCode::OK, &scim::list_response(discovery::SCHEMAS.len() as u64, 1, all), &[])
}

async fn schema(
    State(state): State<AppState>,
    headers: HeaderMap,
    ResourceId(id): ResourceId,
) -> Result<Response, ApiError> {
    let s = discovery::find_schema(&id)
        .ok_or_else(|| ApiError::http(StatusCode::NOT_FOUND, &format!("There is no schema {id}.")))?;
    Ok(respond(StatusCode::OK, &discovery::schema_json(s, &state.base_url(&headers)), &[]))
}

async fn resource_types(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = state.base_url(&headers);
    let all = discovery::RESOURCE_TYPES.iter().map(|r| discovery::resource_type_json(r, &base)).collect();
    respond(StatusCode::OK, &scim::list_response(discovery::RESOURCE_TYPES.len() as u64, 1, all), &[])
}

async fn resource_type(
    State(state): State<AppState>,
    headers: HeaderMap,
    ResourceId(name): ResourceId,
) -> Result<Response, ApiError> {
    let r = discovery::find_resource_type(&name)
        .ok_or_else(|| ApiError::http(StatusCode::NOT_FOUND, &format!("There is no resource type {name}.")))?;
    Ok(respond(StatusCode::OK, &discovery::resource_type_json(r, &state.base_url(&headers)), &[]))
}

async fn not_implemented() -> ApiError {
    ApiError::http(StatusCode::NOT_IMPLEMENTED, "This service does not implement this endpoint.")
}

/// The discovery routes, and 501 for the optional endpoints not implemented (`/Bulk`, `/Me`).
pub fn routes() -> axum::Router<AppState> {
    let na = crate::method_not_allowed;
    axum::Router::new()
        .route("/scim/v2/ServiceProviderConfig", get(service_provider_config).fallback(na))
        .route("/scim/v2/Schemas", get(schemas).fallback(na))
        .route("/scim/v2/Schemas/{id}", get(schema).fallback(na))
        .route("/scim/v2/ResourceTypes", get(resource_types).fallback(na))
        .route("/scim/v2/ResourceTypes/{name}", get(resource_type).fallback(na))
        .route("/scim/v2/Bulk", axum::routing::any(not_implemented))
        .route("/scim/v2/Me", axum::routing::any(not_implemented))
}
