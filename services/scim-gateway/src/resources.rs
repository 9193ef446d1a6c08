//! `/scim/v2/Users` and `/scim/v2/Groups`: list, search, create, read, replace, patch, delete.
//! One set of handlers serves both resource types; what differs (validation, rendering, which
//! attribute holds membership) is in [`Kind`]. The gateway validates what it can before calling
//! user-directory (a malformed filter, body or PATCH never leaves it), then renders the answer as
//! SCIM and applies `attributes` / `excludedAttributes`.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use proto::directory::v1::{
    CreateResourceRequest, DeleteResourceRequest, GetResourceRequest, ListResourcesRequest, PatchResourceRequest,
    ReplaceResourceRequest, Resource, ResourceType,
};
use proto::events::v1::Source;
use proto::{DomainError, ErrorKind};
use scim::projection::Projection;
use scim::schema::{GROUP_RESOURCE, USER_RESOURCE};
use scim::{GroupDocument, Member, Page, PatchRequest, ResourceMeta, UserDocument};
use serde_json::{Map, Value};

use crate::AppState;
use crate::auth::TenantCtx;
use crate::error::ApiError;
use crate::scim_json::{read_json, respond};

/// The SearchRequest message schema URN.
const SEARCH_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// A SCIM resource type served by these handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    fn proto(self) -> i32 {
        match self {
            Kind::User => ResourceType::User as i32,
            Kind::Group => ResourceType::Group as i32,
        }
    }

    fn resource_type(self) -> &'static scim::schema::ResourceType {
        match self {
            Kind::User => &USER_RESOURCE,
            Kind::Group => &GROUP_RESOURCE,
        }
    }

    /// The attribute that holds membership: a user's `groups`, a group's `members`.
    fn membership_attribute(self) -> &'static str {
        match self {
            Kind::User => "groups",
            Kind::Group => "members",
        }
    }

    /// Validates a POST or PUT body and returns what to send to the directory: for a user the
    /// canonical document (Okta's password already dropped), for a group the body (its members
    /// travel with it).
    fn prepare(self, body: Value, new: bool) -> Result<Bytes, ApiError> {
        let doc = match self {
            Kind::User => {
                let mut doc = UserDocument::from_request(body)?;
                if new {
                    doc.validate_new()?;
                } else {
                    doc.validate()?;
                }
                Value::Object(doc.into_map())
            }
            Kind::Group => {
                let (doc, _) = GroupDocument::from_request(body.clone())?;
                doc.validate()?;
                body
            }
        };
        Ok(Bytes::from(doc.to_string()))
    }

    fn render(self, r: &Resource, base: &str) -> Result<Value, ApiError> {
        let doc: Map<String, Value> =
            serde_json::from_slice(&r.document).map_err(|_| ApiError::from(DomainError::internal()))?;
        let endpoint = self.resource_type().endpoint;
        let meta = ResourceMeta {
            id: r.id.clone(),
            created: proto::time::from_timestamp(r.created.as_ref()),
            last_modified: proto::time::from_timestamp(r.last_modified.as_ref()),
            version: r.version,
            location: format!("{base}{endpoint}/{}", r.id),
        };
        let membership: Option<Vec<Member>> = r.membership_loaded.then(|| {
            r.membership.iter().map(|m| Member { value: m.value.clone(), display: m.display.clone() }).collect()
        });
        Ok(match self {
            Kind::User => UserDocument::from_stored(doc).render(&meta, membership.as_deref(), base),
            Kind::Group => GroupDocument::from_stored(doc).render(&meta, membership.as_deref(), base),
        })
    }
}

type Params = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

/// The `{id}` of a resource URL. One that cannot even be decoded names no resource: 404, as SCIM
/// JSON like every other answer.
pub struct ResourceId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ResourceId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| ResourceId(id))
            .map_err(|_| ApiError::http(StatusCode::NOT_FOUND, "There is no resource with that id."))
    }
}

fn params(p: Params) -> Result<Vec<(String, String)>, ApiError> {
    p.map(|Query(v)| v)
        .map_err(|_| ApiError::from(scim::Error::invalid_value("The query string is not valid URL encoding.")))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn projection(params: &[(String, String)]) -> Result<Projection, ApiError> {
    Ok(Projection::parse(param(params, "attributes"), param(params, "excludedAttributes"))?)
}

/// The query of a list or search request, whichever way it arrived.
#[derive(Clone)]
struct ListQuery {
    filter: String,
    page: Page,
    sort_by: String,
    descending: bool,
    projection: Projection,
}

fn sort_order(order: Option<&str>) -> Result<bool, ApiError> {
    match order.map(str::trim) {
        None | Some("") => Ok(false),
        Some(o) if o.eq_ignore_ascii_case("ascending") => Ok(false),
        Some(o) if o.eq_ignore_ascii_case("descending") => Ok(true),
        Some(o) => Err(scim::Error::invalid_value(format!("sortOrder is ascending or descending, not \"{o}\"")).into()),
    }
}

impl ListQuery {
    fn from_params(p: &[(String, String)]) -> Result<Self, ApiError> {
        Ok(ListQuery {
            filter: param(p, "filter").map(str::trim).unwrap_or("").to_owned(),
            page: Page::from_params(param(p, "startIndex"), param(p, "count"))?,
            sort_by: param(p, "sortBy").unwrap_or("").trim().to_owned(),
            descending: sort_order(param(p, "sortOrder"))?,
            projection: projection(p)?,
        })
    }

    /// A `POST …/.search` body (RFC 7644 §3.4.3).
    fn from_search(body: &Value) -> Result<Self, ApiError> {
        let obj =
            body.as_object().ok_or_else(|| scim::Error::invalid_syntax("The search request must be a JSON object."))?;
        let get = |name: &str| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
        let text = |name: &str| -> Result<Option<String>, ApiError> {
            match get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(Value::Array(items)) => {
                    Ok(Some(items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")))
                }
                Some(_) => Err(scim::Error::invalid_value(format!("{name} has the wrong type.")).into()),
            }
        };
        let (start, count) = (text("startIndex")?, text("count")?);
        let (attributes, excluded) = (text("attributes")?, text("excludedAttributes")?);
        Ok(ListQuery {
            filter: text("filter")?.unwrap_or_default().trim().to_owned(),
            page: Page::from_params(start.as_deref(), count.as_deref())?,
            sort_by: text("sortBy")?.unwrap_or_default().trim().to_owned(),
            descending: sort_order(text("sortOrder")?.as_deref())?,
            projection: Projection::parse(attributes.as_deref(), excluded.as_deref())?,
        })
    }
}

/// One page of one resource type, rendered and projected, and the type's total.
async fn page_of(
    kind: Kind,
    state: &AppState,
    tenant: &TenantCtx,
    base: &str,
    q: &ListQuery,
    page: Page,
) -> Result<(u64, Vec<Value>), ApiError> {
    let reply = state
        .directory
        .clone()
        .list_resources(ListResourcesRequest {
            tenant_id: tenant.tenant_id.clone(),
            r#type: kind.proto(),
            filter: q.filter.clone(),
            start_index: page.start_index,
            count: page.count,
            sort_by: q.sort_by.clone(),
            descending: q.descending,
            include_membership: q.projection.wants(kind.membership_attribute()),
        })
        .await?
        .into_inner();
    let rt = kind.resource_type();
    let resources = reply
        .resources
        .iter()
        .map(|r| {
            let mut v = kind.render(r, base)?;
            q.projection.apply(rt, &mut v);
            Ok(v)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok((reply.total_results, resources))
}

async fn list_with(
    kind: Kind,
    state: &AppState,
    tenant: &TenantCtx,
    headers: &HeaderMap,
    q: ListQuery,
) -> Result<Response, ApiError> {
    if !q.filter.is_empty() {
        scim::filter::parse(&q.filter)?;
    }
    let (total, resources) = page_of(kind, state, tenant, &state.base_url(headers), &q, q.page).await?;
    Ok(respond(StatusCode::OK, &scim::list_response(total, q.page.start_index, resources), &[]))
}

/// One type's page for a search across types; a filter on attributes this type does not have
/// selects none of its resources (RFC 7644 §3.4.3).
async fn page_or_none(
    kind: Kind,
    state: &AppState,
    tenant: &TenantCtx,
    base: &str,
    q: &ListQuery,
    page: Page,
) -> Result<(u64, Vec<Value>), ApiError> {
    match page_of(kind, state, tenant, base, q, page).await {
        Err(e) if e.scim_type() == Some(scim::ScimType::InvalidFilter) => Ok((0, Vec::new())),
        other => other,
    }
}

/// One resource type's part of a root search: one that cannot be sorted by `sortBy` (a group by
/// `userName`) comes unsorted; the error only when neither type can (see `search_all`).
async fn part_of_search(
    kind: Kind,
    state: &AppState,
    tenant: &TenantCtx,
    base: &str,
    q: &ListQuery,
    page: Page,
) -> Result<((u64, Vec<Value>), Option<ApiError>), ApiError> {
    match page_or_none(kind, state, tenant, base, q, page).await {
        Err(e) if !q.sort_by.is_empty() && e.scim_type() == Some(scim::ScimType::InvalidValue) => {
            let unsorted = ListQuery { sort_by: String::new(), ..q.clone() };
            Ok((page_or_none(kind, state, tenant, base, &unsorted, page).await?, Some(e)))
        }
        other => other.map(|part| (part, None)),
    }
}

/// `POST /.search`: users then groups, paged as one list (a sortBy orders each type's part).
pub async fn search_all(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_json(&headers, body, state.config.max_body_bytes).await?;
    let q = ListQuery::from_search(&body)?;
    if !q.filter.is_empty() {
        scim::filter::parse(&q.filter)?;
    }
    let base = state.base_url(&headers);
    let ((users_total, mut resources), users_unsorted) =
        part_of_search(Kind::User, &state, &tenant, &base, &q, q.page).await?;
    // The groups follow the users: skip as many as the page starts past the last user.
    let groups_page = Page {
        start_index: u32::try_from(u64::from(q.page.start_index).saturating_sub(users_total))
            .unwrap_or(u32::MAX)
            .max(1),
        count: q.page.count.saturating_sub(u32::try_from(resources.len()).unwrap_or(u32::MAX)),
    };
    let ((groups_total, groups), groups_unsorted) =
        part_of_search(Kind::Group, &state, &tenant, &base, &q, groups_page).await?;
    if let (Some(e), Some(_)) = (users_unsorted, groups_unsorted) {
        return Err(e);
    }
    resources.extend(groups);
    let body = scim::list_response(users_total + groups_total, q.page.start_index, resources);
    Ok(respond(StatusCode::OK, &body, &[]))
}

/// `GET /{Users|Groups}[?filter=…&startIndex=…&count=…&sortBy=…&attributes=…]`
pub async fn list(
    kind: Kind,
    state: AppState,
    tenant: Arc<TenantCtx>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, ApiError> {
    let q = ListQuery::from_params(&params(p)?)?;
    list_with(kind, &state, &tenant, &headers, q).await
}

/// `POST /{Users|Groups}/.search`
pub async fn search(
    kind: Kind,
    state: AppState,
    tenant: Arc<TenantCtx>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_json(&headers, body, state.config.max_body_bytes).await?;
    if let Some(schemas) = body.get("schemas").and_then(Value::as_array)
        && !schemas.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(SEARCH_REQUEST_SCHEMA)))
    {
        return Err(
            scim::Error::invalid_value(format!("A search request lists the schema {SEARCH_REQUEST_SCHEMA}.")).into()
        );
    }
    let q = ListQuery::from_search(&body)?;
    list_with(kind, &state, &tenant, &headers, q).await
}

/// `POST /{Users|Groups}`
pub async fn create(
    kind: Kind,
    state: AppState,
    tenant: Arc<TenantCtx>,
    headers: HeaderMap,
    p: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let projection = projection(&params(p)?)?;
    let document = kind.prepare(read_json(&headers, body, state.config.max_body_bytes).await?, true)?;
    let created = state
        .directory
        .clone()
        .create_resource(CreateResourceRequest {
            tenant_id: tenant.tenant_id.clone(),
            r#type: kind.proto(),
            document,
            source: Source::Scim as i32,
        })
        .await?
        .into_inner();
    single(kind, StatusCode::CREATED, &created, &state.base_url(&headers), &projection, true)
}

/// `GET /{Users|Groups}/{id}`; `If-None-Match` with the current version answers 304.
pub async fn get(
    kind: Kind,
    state: AppState,
    tenant: Arc<TenantCtx>,
    id: String,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, ApiError> {
    let projection = projection(&params(p)?)?;
    let resource = fetch(kind, &state, &tenant, id, projection.wants(kind.membership_attribute())).await?;
    if let Some(tags) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let current = etag(resource.version);
        if tags
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == current || t.trim_start_matches("W/") == current.trim_start_matches("W/"))
        {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, current)]).into_response());
        }
    }
    single(kind, StatusCode::OK, &resource, &state.base_url(&headers), &projection, false)
}

async fn fetch(
    kind: Kind,
    state: &AppState,
    tenant: &TenantCtx,
    id: String,
    include_membership: bool,
) -> Result<Resource, ApiError> {
    let request =
        GetResourceRequest { tenant_id: tenant.tenant_id.clone(), r#type: kind.proto(), id, include_membership };
    Ok(state.directory.clone().get_resource(request).await?.into_inner())
}

/// `PUT /{Users|Groups}/{id}`
pub async fn replace(
    kind: Kind,
    state: AppState,
    tenant: Arc<TenantCtx>,
    id: String,
    headers: HeaderMap,
    p: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let projection = projection(&params(p)?)?;
    let if_match = if_match(&headers)?;
    let document = kind.prepare(read_json(&headers, body, state.config.max_body_bytes).await?, false)?;
    let resource = state
        .directory
        .clone()
        .replace_resource(ReplaceResourceRequest {
            tenant_id: tenant.tenant_id.clone(),
            r#type: kind.proto(),
            id,
            document,
            if_match_version: if_match,
            include_membership: projection.wants(kind.membership_attribute()),
        })
        .await?
        .into_inner();
    single(kind, StatusCode::OK, &resource, &state.base_url(&headers), &projection, false)
}

/// `PATCH /{Users|Groups}/{id}`: 200 with the resource; for a group, 204 unless `attributes` or
/// `excludedAttributes` ask for a representation (RFC 7644 §3.5.2 allows either). A group's answer
/// would carry its whole member list, and a PATCH that adds one member to a group of 100,000
/// must not cost a 100,000-member response; Entra asks for 204 anyway.
pub async fn patch(
    kind: Kind,
    state: AppState,
    tenant: Arc<TenantCtx>,
    id: String,
    headers: HeaderMap,
    p: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let projection = projection(&params(p)?)?;
    let if_match = if_match(&headers)?;
    let body = read_json(&headers, body, state.config.max_body_bytes).await?;
    let request = PatchRequest::parse(&body)?;
    if kind == Kind::Group {
        scim::group::split_patch(&request)?;
    }
    // Okta's password sync goes no further than here; a PATCH of nothing else changes nothing.
    let sanitized = request.to_sanitized_json(kind.resource_type());
    if sanitized["Operations"].as_array().is_some_and(Vec::is_empty) {
        let resource = fetch(kind, &state, &tenant, id.clone(), projection.wants(kind.membership_attribute())).await?;
        if let Some(expected) = if_match
            && expected != resource.version
        {
            let detail = format!("The resource has changed: its version is {}, not {expected}.", resource.version);
            return Err(DomainError::new(ErrorKind::VersionMismatch, detail).into());
        }
        return single(kind, StatusCode::OK, &resource, &state.base_url(&headers), &projection, false);
    }
    let quiet = kind == Kind::Group && projection.is_identity();
    let resource = state
        .directory
        .clone()
        .patch_resource(PatchResourceRequest {
            tenant_id: tenant.tenant_id.clone(),
            r#type: kind.proto(),
            id,
            patch: Bytes::from(sanitized.to_string()),
            if_match_version: if_match,
            include_membership: !quiet && projection.wants(kind.membership_attribute()),
        })
        .await?
        .into_inner();
    if quiet {
        return Ok((StatusCode::NO_CONTENT, [(header::ETAG, etag(resource.version))]).into_response());
    }
    single(kind, StatusCode::OK, &resource, &state.base_url(&headers), &projection, false)
}

/// `DELETE /{Users|Groups}/{id}`: 204, then 404.
pub async fn delete(
    kind: Kind,
    state: AppState,
    tenant: Arc<TenantCtx>,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let if_match = if_match(&headers)?;
    state
        .directory
        .clone()
        .delete_resource(DeleteResourceRequest {
            tenant_id: tenant.tenant_id.clone(),
            r#type: kind.proto(),
            id,
            if_match_version: if_match,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// The version an `If-Match` header requires (`W/"3"` or `"3"`); `*` requires none.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let v = value.to_str().unwrap_or("").trim();
    if v == "*" {
        return Ok(None);
    }
    let tag = v.trim_start_matches("W/").trim_matches('"');
    tag.parse::<i64>().map(Some).map_err(|_| {
        ApiError::from(DomainError::new(
            ErrorKind::VersionMismatch,
            format!("If-Match {v} names no version of this resource."),
        ))
    })
}

fn single(
    kind: Kind,
    status: StatusCode,
    r: &Resource,
    base: &str,
    projection: &Projection,
    created: bool,
) -> Result<Response, ApiError> {
    let mut body = kind.render(r, base)?;
    let location = body["meta"]["location"].as_str().unwrap_or_default().to_owned();
    projection.apply(kind.resource_type(), &mut body);
    let mut headers = vec![(header::ETAG, etag(r.version))];
    if created {
        headers.push((header::LOCATION, location));
    }
    Ok(respond(status, &body, &headers))
}

/// Adapts the handlers above to axum: one closure per route, with the kind baked in.
pub fn routes(kind: Kind) -> axum::Router<AppState> {
    use axum::routing::{get as on_get, post as on_post};
    let base = match kind {
        Kind::User => "/scim/v2/Users",
        Kind::Group => "/scim/v2/Groups",
    };
    type T = Extension<Arc<TenantCtx>>;
    axum::Router::new()
        .route(
            base,
            on_get(move |State(s): State<AppState>, Extension(t): T, h: HeaderMap, p: Params| list(kind, s, t, h, p))
                .post(move |State(s): State<AppState>, Extension(t): T, h: HeaderMap, p: Params, b: Body| {
                    create(kind, s, t, h, p, b)
                })
                .fallback(crate::method_not_allowed),
        )
        .route(
            &format!("{base}/.search"),
            on_post(move |State(s): State<AppState>, Extension(t): T, h: HeaderMap, b: Body| search(kind, s, t, h, b))
                .fallback(crate::method_not_allowed),
        )
        .route(
            &format!("{base}/{{id}}"),
            on_get(
                move |State(s): State<AppState>,
                      Extension(t): T,
                      ResourceId(id): ResourceId,
                      h: HeaderMap,
                      p: Params| { get(kind, s, t, id, h, p) },
            )
            .put(
                move |State(s): State<AppState>,
                      Extension(t): T,
                      ResourceId(id): ResourceId,
                      h: HeaderMap,
                      p: Params,
                      b: Body| { replace(kind, s, t, id, h, p, b) },
            )
            .patch(
                move |State(s): State<AppState>,
                      Extension(t): T,
                      ResourceId(id): ResourceId,
                      h: HeaderMap,
                      p: Params,
                      b: Body| { patch(kind, s, t, id, h, p, b) },
            )
            .delete(move |State(s): State<AppState>, Extension(t): T, ResourceId(id): ResourceId, h: HeaderMap| {
                delete(kind, s, t, id, h)
            })
            .fallback(crate::method_not_allowed),
        )
}
