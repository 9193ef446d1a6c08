//! The tenant REST API (`/api/v1`), for what is not SCIM: users created by the customer's own
//! admin (who get a welcome email, unlike provisioned ones), and the list of users the identity
//! provider has not linked. Same credentials as SCIM; JSON in and out; errors in the SCIM error
//! format, like everything the gateway answers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use proto::directory::v1::{
    CreateAssignmentRequest, CreateResourceRequest, ListUnlinkedUsersRequest, Resource, ResourceType,
};
use proto::events::v1::Source;
use scim::UserDocument;
use serde_json::{Map, Value, json};

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

/// A user as this API shows one.
fn user_json(r: &Resource) -> Result<Value, ApiError> {
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
        "source": source,
        "created": scim::user::format_time(proto::time::from_timestamp(r.created.as_ref())),
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
    Ok(json_response(
        status,
        json!({
            "id": assignment.id,
            "userId": assignment.user_id,
            "contentId": assignment.content_id,
            "title": assignment.title,
            "created": scim::user::format_time(proto::time::from_timestamp(assignment.created.as_ref())),
        }),
    ))
}

/// The tenant API's routes (credentials are checked by the caller's layer).
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/v1/users", post(create_user).fallback(crate::method_not_allowed))
        .route("/api/v1/users/unlinked", get(unlinked_users).fallback(crate::method_not_allowed))
        .route("/api/v1/assignments", post(create_assignment).fallback(crate::method_not_allowed))
}
