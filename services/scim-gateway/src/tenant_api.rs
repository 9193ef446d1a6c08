//! The tenant REST API (`/api/v1`), for what is not SCIM: users created by the customer's own
//! admin (who get a welcome email, unlike provisioned ones), the list of users the identity
//! provider has not linked, content assignments, users' platform roles, the erasure of a user's
//! data, the learners report ([`crate::reports`]), and the request log (read, and re-drive a
//! failed request). Same credentials as SCIM; JSON in and out (and CSV for the report); errors in
//! the SCIM error format, like everything the gateway answers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use proto::directory::v1::{
    Assignment, CreateAssignmentRequest, CreateResourceRequest, EraseUserRequest, GetAssignmentRequest,
    GetRequestRequest, ListRequestsRequest, ListUnlinkedUsersRequest, RequestRecord, Resource, ResourceType,
    SetUserRoleRequest,
};
use proto::events::v1::Source;
use scim::UserDocument;
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;

use crate::AppState;
use crate::auth::TenantCtx;
use crate::error::ApiError;
use crate::scim_json::read_json;

fn field<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| scim::Error::invalid_value(format!("{name} is required and must be a non-empty string.")).into())
}

/// A user as this API (and the console) shows one.
pub(crate) fn user_json(r: &Resource) -> Result<Value, ApiError> {
    let doc: Map<String, Value> =
        serde_json::from_slice(&r.document).map_err(|_| ApiError::from(proto::DomainError::internal()))?;
    let s = UserDocument::from_stored(doc).summary();
    let source = match Source::try_from(r.source) {
        Ok(Source::Admin) => "admin",
        Ok(Source::Import) => "import",
        _ => "scim",
    };
    Ok(json!({
        "id": r.id,
        "userName": s.user_name,
        "givenName": s.given_name,
        "familyName": s.family_name,
        "email": s.email,
        "active": s.active,
        "role": r.role,
        "source": source,
        "created": scim::user::format_time(proto::time::from_timestamp(r.created.as_ref())),
        "lastModified": scim::user::format_time(proto::time::from_timestamp(r.last_modified.as_ref())),
    }))
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// `POST /api/v1/users` `{"userName","givenName","familyName","email"}`: a user created by the
/// customer's admin (source `admin`).
pub async fn create_user(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_json(&headers, body, state.config.max_body_bytes).await?;
    let email = field(&body, "email")?;
    let scim_body = json!({
        "userName": field(&body, "userName")?,
        "name": {"givenName": field(&body, "givenName")?, "familyName": field(&body, "familyName")?},
        "emails": [{"value": email, "type": "work", "primary": true}],
        "active": true,
    });
    let mut doc = UserDocument::from_request(scim_body)?;
    doc.validate_new()?;
    let created = state
        .directory
        .clone()
        .create_resource(CreateResourceRequest {
            tenant_id: tenant.tenant_id.clone(),
            r#type: ResourceType::User as i32,
            document: Bytes::from(Value::Object(doc.into_map()).to_string()),
            source: Source::Admin as i32,
        })
        .await?
        .into_inner();
    Ok(json_response(StatusCode::CREATED, user_json(&created)?))
}

/// Who a role change is recorded as made by when it is not the API key itself (the console puts
/// its session's here).
#[derive(Debug, Clone)]
pub struct ChangedBy(pub String);

/// Who makes a change, as its event records it: the console's session, or else the API key.
fn actor(tenant: &TenantCtx, console: Option<Extension<ChangedBy>>) -> String {
    console.map_or_else(|| format!("api-key:{}", tenant.key_id), |Extension(c)| c.0)
}

/// `PUT /api/v1/users/{id}/role` `{"role":"manager"}`: gives a user of the tenant a platform role
/// (`learner`, `manager`, `admin`; 404 for any other tenant's id). The event `user.role_changed`
/// names the key that changed it; the request log keeps the request with that event's id. The
/// role the user has already is no change (200, no event).
pub async fn set_role(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    changed_by: Option<Extension<ChangedBy>>,
    crate::resources::ResourceId(id): crate::resources::ResourceId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_json(&headers, body, state.config.max_body_bytes).await?;
    let role = field(&body, "role")?;
    let changed_by = actor(&tenant, changed_by);
    let user = state
        .directory
        .clone()
        .set_user_role(SetUserRoleRequest {
            tenant_id: tenant.tenant_id.clone(),
            user_id: id,
            role: role.to_owned(),
            changed_by,
        })
        .await?
        .into_inner();
    Ok(json_response(StatusCode::OK, user_json(&user)?))
}

/// `POST /api/v1/users/{id}/erase` `{"confirm":"<the same id>"}`: erases the user's personal data
/// (GDPR art. 17) everywhere the platform keeps it; the id stays, and is missing to SCIM from
/// then on (404 for any other tenant's id, as for a missing one). The answer says what was done;
/// a 503 means the event stream's part is not done yet, and the same request finishes it.
pub async fn erase_user(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    changed_by: Option<Extension<ChangedBy>>,
    crate::resources::ResourceId(id): crate::resources::ResourceId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_json(&headers, body, state.config.max_body_bytes).await?;
    if body.get("confirm").and_then(Value::as_str) != Some(id.as_str()) {
        return Err(scim::Error::invalid_value(
            "An erasure cannot be undone: confirm it with {\"confirm\": \"<the user's id>\"}.",
        )
        .into());
    }
    let erased_by = actor(&tenant, changed_by);
    let done = state
        .directory
        .clone()
        .erase_user(EraseUserRequest { tenant_id: tenant.tenant_id.clone(), user_id: id, erased_by })
        .await?
        .into_inner();
    Ok(json_response(
        StatusCode::OK,
        json!({
            "id": done.user_id,
            "erased": true,
            "erasedAt": scim::user::format_time(proto::time::from_timestamp(done.erased_at.as_ref())),
            "erasedBy": done.erased_by,
            "alreadyErased": done.already_erased,
            "requestLogRowsScrubbed": done.request_log_rows,
            "outboxEventsScrubbed": done.outbox_events,
            "streamMessagesDeleted": done.stream_messages,
        }),
    ))
}

/// `GET /api/v1/users/unlinked`: active users the identity provider has not linked, which it
/// therefore cannot deprovision.
pub async fn unlinked_users(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
) -> Result<Response, ApiError> {
    let reply = state
        .directory
        .clone()
        .list_unlinked_users(ListUnlinkedUsersRequest { tenant_id: tenant.tenant_id.clone() })
        .await?
        .into_inner();
    let users = reply.resources.iter().map(user_json).collect::<Result<Vec<_>, _>>()?;
    Ok(json_response(
        StatusCode::OK,
        json!({
            "users": users,
            "count": users.len(),
            "whatToDo": "Okta can only deprovision users it has linked. Assign these users to the app in Okta (or run an import there) so that Okta links them; until then, deactivating them in Okta changes nothing here.",
        }),
    ))
}

/// `POST /api/v1/assignments` `{"userId","contentId","title"}`: assigns content to a user of the
/// tenant (404 for any other id). The first assignment a user ever gets triggers their first
/// email; assigning the same content again changes nothing (200 with the assignment).
pub async fn create_assignment(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_json(&headers, body, state.config.max_body_bytes).await?;
    let assignment = state
        .directory
        .clone()
        .create_assignment(CreateAssignmentRequest {
            tenant_id: tenant.tenant_id.clone(),
            user_id: field(&body, "userId")?.to_owned(),
            content_id: field(&body, "contentId")?.to_owned(),
            title: field(&body, "title")?.to_owned(),
        })
        .await?
        .into_inner();
    let status = if assignment.created_now { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json_response(status, assignment_json(&assignment)))
}

fn assignment_json(a: &Assignment) -> Value {
    json!({
        "id": a.id,
        "userId": a.user_id,
        "contentId": a.content_id,
        "title": a.title,
        "created": scim::user::format_time(proto::time::from_timestamp(a.created.as_ref())),
    })
}

/// `GET /api/v1/assignments/{id}`.
pub async fn get_assignment(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    crate::resources::ResourceId(id): crate::resources::ResourceId,
) -> Result<Response, ApiError> {
    let assignment = state
        .directory
        .clone()
        .get_assignment(GetAssignmentRequest { tenant_id: tenant.tenant_id.clone(), id })
        .await?
        .into_inner();
    Ok(json_response(StatusCode::OK, assignment_json(&assignment)))
}

/// A logged request; with its bodies when `full`.
fn request_json(r: &RequestRecord, full: bool) -> Value {
    let mut v = json!({
        "id": r.id,
        "at": scim::user::format_time(proto::time::from_timestamp(r.at.as_ref())),
        "method": r.method,
        "path": r.path,
        "status": r.status,
        "latencyMs": (r.latency_ms * 1000.0).round() / 1000.0,
        "userAgent": r.user_agent,
        "eventIds": r.event_ids,
    });
    if full {
        v["requestBody"] = json!(r.request_body);
        v["responseBody"] = json!(r.response_body);
    }
    v
}

fn time_param(
    q: &std::collections::HashMap<String, String>,
    name: &str,
) -> Result<Option<prost_types::Timestamp>, ApiError> {
    q.get(name)
        .map(|v| {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map(proto::time::to_timestamp)
                .map_err(|_| scim::Error::invalid_value(format!("{name} must be an RFC 3339 date-time.")).into())
        })
        .transpose()
}

/// A request log status filter: a code (`409`), a class (`4xx`) or `failed` (400 and above);
/// none is `(0, 0)`, any status.
pub(crate) fn status_range(filter: Option<&str>) -> Result<(u32, u32), ApiError> {
    Ok(match filter.map(str::to_ascii_lowercase) {
        None => (0, 0),
        Some(s) if s.is_empty() => (0, 0),
        Some(s) if s == "failed" => (400, 599),
        Some(s) if s.len() == 3 && s.ends_with("xx") && s.as_bytes()[0].is_ascii_digit() => {
            let class = u32::from(s.as_bytes()[0] - b'0');
            (class * 100, class * 100 + 99)
        }
        Some(s) => match s.parse::<u32>() {
            Ok(code) if (100..600).contains(&code) => (code, code),
            _ => return Err(scim::Error::invalid_value("status must be a code (409), a class (4xx) or failed.").into()),
        },
    })
}

/// `GET /api/v1/requests?since=&until=&method=&status=&contains=&limit=`: the tenant's logged
/// SCIM requests, newest first. `status` is a code (`409`), a class (`4xx`) or `failed` (400 and
/// above); `contains` matches the path or either body (a userName, an id).
pub async fn list_requests(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    query: Result<Query<std::collections::HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|_| ApiError::from(scim::Error::invalid_value("The query string is not valid URL encoding.")))?;
    let (status_min, status_max) = status_range(q.get("status").map(String::as_str))?;
    let limit =
        match q.get("limit") {
            None => 100,
            Some(l) => l.parse::<u32>().ok().filter(|l| (1..=1000).contains(l)).ok_or_else(|| {
                ApiError::from(scim::Error::invalid_value("limit must be an integer from 1 to 1000."))
            })?,
        };
    let reply = state
        .directory
        .clone()
        .list_requests(ListRequestsRequest {
            tenant_id: tenant.tenant_id.clone(),
            since: time_param(&q, "since")?,
            until: time_param(&q, "until")?,
            method: q.get("method").cloned().unwrap_or_default(),
            status_min,
            status_max,
            contains: q.get("contains").cloned().unwrap_or_default(),
            limit,
        })
        .await?
        .into_inner();
    let requests: Vec<Value> = reply.records.iter().map(|r| request_json(r, false)).collect();
    Ok(json_response(StatusCode::OK, json!({"count": requests.len(), "requests": requests})))
}

async fn logged(state: &AppState, tenant: &TenantCtx, id: String) -> Result<RequestRecord, ApiError> {
    Ok(state
        .directory
        .clone()
        .get_request(GetRequestRequest { tenant_id: tenant.tenant_id.clone(), id })
        .await?
        .into_inner())
}

/// `GET /api/v1/requests/{id}`: one logged request with its (redacted) bodies.
pub async fn get_request(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    crate::resources::ResourceId(id): crate::resources::ResourceId,
) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, request_json(&logged(&state, &tenant, id).await?, true)))
}

/// `POST /api/v1/requests/{id}/redrive`: sends a failed request again, as it was logged (secrets,
/// which are never kept, left out), through the same rate limit, pause and request log as any
/// SCIM request; answers with what that request got. The new request's log id is in
/// `X-Request-Id`, and `X-Redrive-Of` names the original.
pub async fn redrive(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    crate::resources::ResourceId(id): crate::resources::ResourceId,
) -> Result<Response, ApiError> {
    let original = logged(&state, &tenant, id).await?;
    let conflict = |detail: &str| ApiError::from(proto::DomainError::new(proto::ErrorKind::Uniqueness, detail));
    let body = match crate::request_log::redrive_body(&original).map_err(conflict)? {
        None => Body::empty(),
        Some(v) => Body::from(v.to_string()),
    };
    let method =
        Method::from_bytes(original.method.as_bytes()).map_err(|_| conflict("The logged method is not valid."))?;
    let request = axum::http::Request::builder()
        .method(method)
        .uri(&original.path)
        .header(header::CONTENT_TYPE, crate::scim_json::SCIM_CONTENT_TYPE)
        .header(header::USER_AGENT, format!("request-log-redrive/{}", original.id))
        .body(body)
        .map_err(|_| conflict("The logged path is not valid."))?;
    let mut response = through_scim(&state, tenant, request).await;
    if let Ok(v) = HeaderValue::from_str(&original.id) {
        response.headers_mut().insert("x-redrive-of", v);
    }
    Ok(response)
}

/// Sends a request made here (a re-drive, the console's connection test) through the SCIM routes
/// as `tenant`, with the same rate limit, pause and request log as the identity provider's.
pub(crate) async fn through_scim(
    state: &AppState,
    tenant: Arc<TenantCtx>,
    mut request: axum::http::Request<Body>,
) -> Response {
    request.extensions_mut().insert(tenant);
    let router = crate::scim_routes(state).fallback(crate::not_found).with_state(state.clone());
    router.oneshot(request).await.unwrap_or_else(|never| match never {})
}

/// The tenant API's writes that the request log keeps, as it keeps SCIM's: a role change, an
/// erasure.
fn logged_routes(state: &AppState) -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/v1/users/{id}/role", axum::routing::put(set_role).fallback(crate::method_not_allowed))
        .route("/api/v1/users/{id}/erase", axum::routing::post(erase_user).fallback(crate::method_not_allowed))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::request_log::record))
}

/// Sends a request made by the console through the tenant API's logged routes as `tenant`, so
/// that it is logged as the API's own.
pub(crate) async fn through_api(
    state: &AppState,
    tenant: Arc<TenantCtx>,
    mut request: axum::http::Request<Body>,
) -> Response {
    request.extensions_mut().insert(tenant);
    let router = logged_routes(state).fallback(crate::not_found).with_state(state.clone());
    router.oneshot(request).await.unwrap_or_else(|never| match never {})
}

/// The tenant API's routes (credentials are checked by the caller's layer).
pub fn routes(state: &AppState) -> axum::Router<AppState> {
    use axum::routing::{get, post};
    logged_routes(state)
        .route("/api/v1/reports/learners", get(crate::reports::learners).fallback(crate::method_not_allowed))
        .route("/api/v1/users", post(create_user).fallback(crate::method_not_allowed))
        .route("/api/v1/users/unlinked", get(unlinked_users).fallback(crate::method_not_allowed))
        .route("/api/v1/assignments", post(create_assignment).fallback(crate::method_not_allowed))
        .route("/api/v1/assignments/{id}", get(get_assignment).fallback(crate::method_not_allowed))
        .route("/api/v1/requests", get(list_requests).fallback(crate::method_not_allowed))
        .route("/api/v1/requests/{id}", get(get_request).fallback(crate::method_not_allowed))
        .route("/api/v1/requests/{id}/redrive", post(redrive).fallback(crate::method_not_allowed))
}
