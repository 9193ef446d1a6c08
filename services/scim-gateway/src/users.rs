//! `/scim/v2/Users`: list and filter, create, read, replace, patch. The gateway validates what it
//! can before calling user-directory (a malformed filter or body never leaves it), and renders
//! the directory's answer as SCIM.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use proto::directory::v1::{
    CreateUserRequest, GetUserRequest, ListUsersRequest, PatchUserRequest, ReplaceUserRequest, User,
};
use proto::events::v1::Source;
use scim::{Page, PatchRequest, ResourceMeta, UserDocument};
use serde_json::{Map, Value};

use crate::AppState;
use crate::auth::TenantCtx;
use crate::error::ApiError;
use crate::scim_json::{read_json, respond};

type Params = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// `GET /Users[?filter=…&startIndex=…&count=…]`
pub async fn list(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    let Query(params) = params
        .map_err(|_| ApiError::from(scim::Error::invalid_value("The query string is not valid URL encoding.")))?;
    let page = Page::from_params(param(&params, "startIndex"), param(&params, "count"))?;
    let filter = param(&params, "filter").map(str::trim).unwrap_or("");
    if !filter.is_empty() {
        scim::filter::parse(filter)?;
    }
    let reply = state
        .directory
        .clone()
        .list_users(ListUsersRequest {
            tenant_id: tenant.tenant_id.clone(),
            filter: filter.to_owned(),
            start_index: page.start_index,
            count: page.count,
        })
        .await?
        .into_inner();
    let base = state.base_url(&headers);
    let resources = reply.users.iter().map(|u| render(u, &base)).collect::<Result<Vec<_>, _>>()?;
    let body = scim::list_response(reply.total_results, page.start_index, resources);
    Ok(respond(StatusCode::OK, &body, &[]))
}

/// `POST /Users`
pub async fn create(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut doc = UserDocument::from_request(read_json(&headers, body, state.config.max_body_bytes).await?)?;
    doc.validate_new()?;
    let user = state
        .directory
        .clone()
        .create_user(CreateUserRequest {
            tenant_id: tenant.tenant_id.clone(),
            document: encode(&doc)?,
            source: Source::Scim as i32,
        })
        .await?
        .into_inner();
    single(StatusCode::CREATED, &user, &state.base_url(&headers), true)
}

/// `GET /Users/{id}`
pub async fn get(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = state
        .directory
        .clone()
        .get_user(GetUserRequest { tenant_id: tenant.tenant_id.clone(), id })
        .await?
        .into_inner();
    single(StatusCode::OK, &user, &state.base_url(&headers), false)
}

/// `PUT /Users/{id}`
pub async fn replace(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let if_match = if_match(&headers)?;
    let doc = UserDocument::from_request(read_json(&headers, body, state.config.max_body_bytes).await?)?;
    doc.validate()?;
    let user = state
        .directory
        .clone()
        .replace_user(ReplaceUserRequest {
            tenant_id: tenant.tenant_id.clone(),
            id,
            document: encode(&doc)?,
            if_match_version: if_match,
        })
        .await?
        .into_inner();
    single(StatusCode::OK, &user, &state.base_url(&headers), false)
}

/// `PATCH /Users/{id}`
pub async fn patch(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let if_match = if_match(&headers)?;
    let body = read_json(&headers, body, state.config.max_body_bytes).await?;
    PatchRequest::parse(&body)?;
    let user = state
        .directory
        .clone()
        .patch_user(PatchUserRequest {
            tenant_id: tenant.tenant_id.clone(),
            id,
            patch: Bytes::from(body.to_string()),
            if_match_version: if_match,
        })
        .await?
        .into_inner();
    single(StatusCode::OK, &user, &state.base_url(&headers), false)
}

fn encode(doc: &UserDocument) -> Result<Bytes, ApiError> {
    serde_json::to_vec(doc.as_map()).map(Bytes::from).map_err(|_| ApiError::from(proto::DomainError::internal()))
}

/// The version an `If-Match` header requires (`W/"3"` or `"3"`); `*` requires none.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let v = value.to_str().unwrap_or("").trim();
    if v == "*" {
        return Ok(None);
    }
    let tag = v.trim_start_matches("W/").trim_matches('"');
    tag.parse::<i64>().map(Some).map_err(|_| {
        ApiError::from(proto::DomainError::new(
            proto::ErrorKind::VersionMismatch,
            format!("If-Match {v} names no version of this resource."),
        ))
    })
}

fn render(user: &User, base: &str) -> Result<Value, ApiError> {
    let doc: Map<String, Value> =
        serde_json::from_slice(&user.document).map_err(|_| ApiError::from(proto::DomainError::internal()))?;
    let meta = ResourceMeta {
        id: user.id.clone(),
        created: proto::time::from_timestamp(user.created.as_ref()),
        last_modified: proto::time::from_timestamp(user.last_modified.as_ref()),
        version: user.version,
        location: format!("{base}/Users/{}", user.id),
    };
    Ok(UserDocument::from_stored(doc).render(&meta))
}

fn single(status: StatusCode, user: &User, base: &str, with_location: bool) -> Result<Response, ApiError> {
    let body = render(user, base)?;
    let mut headers = vec![(header::ETAG, format!("W/\"{}\"", user.version))];
    if with_location {
        headers.push((header::LOCATION, format!("{base}/Users/{}", user.id)));
    }
    Ok(respond(status, &body, &headers))
}
