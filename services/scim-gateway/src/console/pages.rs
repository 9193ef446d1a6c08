//! The console's pages. Each reads or changes the session's tenant only, through the directory
//! calls the API uses; what the directory refuses becomes a short page saying why.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use minijinja::{Value, context};
use proto::directory::v1::{
    CreateSessionRequest, GetRequestRequest, IssueTenantKeyRequest, ListRequestsRequest, ListResourcesRequest,
    ListUnlinkedUsersRequest, ResolveTenantHeldRequest, ResourceType, RevokeTenantKeyRequest, SessionRef, TenantScope,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Console, Form, message, page, page_with_status, query, see_other};
use crate::AppState;
use crate::error::ApiError;

fn time(t: Option<&prost_types::Timestamp>) -> Option<String> {
    t.map(|t| {
        let t = proto::time::from_timestamp(Some(t));
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    })
}

/// A page saying what went wrong with a directory call.
fn failed(console: &Console, e: impl Into<ApiError>) -> Response {
    let e = e.into();
    page_with_status(
        console,
        e.status(),
        "",
        "message.html",
        context! { title => e.status().canonical_reason().unwrap_or("Error"), text => e.detail() },
    )
}

/// What an operator may not do (a customer's own decisions: their keys).
fn customers_only(console: &Console) -> Option<Response> {
    console.session.operator.then(|| {
        page_with_status(
            console,
            StatusCode::FORBIDDEN,
            "",
            "message.html",
            context! {
                title => "Not for operators",
                text => "Operators can look at this tenant, resolve held deprovisions and re-drive requests; keys and roles are the customer's own.",
            },
        )
    })
}

// ----- Sign-in and sign-out -----

fn signin_page(state: &AppState, status: StatusCode, error: Option<&str>, subdomain: &str) -> Response {
    let token = super::random_token();
    let mut r = super::render(
        status,
        "signin.html",
        context! {
            signin_token => token,
            error => error,
            subdomain => subdomain,
            operators => state.operator_token.is_some(),
        },
    );
    r.headers_mut().append(header::SET_COOKIE, super::set_cookie(state, super::signin_cookie(state), Some(&token)));
    r
}

/// `GET /console/signin`.
pub async fn signin_form(State(state): State<AppState>) -> Response {
    signin_page(&state, StatusCode::OK, None, "")
}

/// `POST /console/signin`: `subdomain` and `key` (an admin), or `subdomain` and `operator_token`.
/// Failures count against the same limits as the API's failed authentications.
pub async fn signin(State(state): State<AppState>, request: Request) -> Response {
    let ip = state.auth.client_ip(&request);
    let headers = request.headers().clone();
    let Some(form) = super::read_form(request.into_body()).await.map(Form) else {
        return message(StatusCode::BAD_REQUEST, "Bad form", "The form could not be read.");
    };
    let expected = super::cookie(&headers, super::signin_cookie(&state));
    if !matches!((form.get("_signin"), &expected), (Some(a), Some(b)) if super::same_secret(a, b)) {
        return signin_page(&state, StatusCode::FORBIDDEN, Some("The sign-in form expired. Try again."), "");
    }
    let subdomain = form.get("subdomain").unwrap_or("").trim().to_ascii_lowercase();
    let key = form.get("key").unwrap_or("").trim().to_owned();
    let operator_token = form.get("operator_token").unwrap_or("").trim().to_owned();
    let operator = key.is_empty() && !operator_token.is_empty();
    if subdomain.is_empty() || (key.is_empty() && operator_token.is_empty()) {
        return signin_page(&state, StatusCode::BAD_REQUEST, Some("Enter the subdomain and a key."), &subdomain);
    }
    let secret = if operator { &operator_token } else { &key };
    let credentials: [u8; 32] = Sha256::digest(format!("console\0{subdomain}\0{secret}").as_bytes()).into();
    if let Err(e) = state.limits.may_try(ip, Some(&subdomain), &credentials).await {
        return signin_page(&state, e.status(), Some(e.detail()), &subdomain);
    }
    let invalid = "The subdomain or the key is not valid.";
    if operator {
        if let Err(e) = state.limits.operator_may_try() {
            return signin_page(&state, e.status(), Some(e.detail()), &subdomain);
        }
        if !state.operator_token.as_ref().is_some_and(|t| t.matches(&operator_token)) {
            state.limits.auth_failed(ip, Some(&subdomain), Some(&credentials)).await;
            state.limits.operator_failed();
            tracing::info!(ip = ?ip, "console operator sign-in failed");
            return signin_page(&state, StatusCode::UNAUTHORIZED, Some(invalid), &subdomain);
        }
    }
    let reply = state
        .directory
        .clone()
        .create_session(CreateSessionRequest {
            subdomain: subdomain.clone(),
            api_key: (!operator).then_some(key),
            operator,
            idle_secs: state.config.console_idle_secs,
            operator_token: operator.then_some(operator_token),
        })
        .await;
    let created = match reply {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::PermissionDenied => {
            return signin_page(&state, StatusCode::FORBIDDEN, Some(s.message()), &subdomain);
        }
        Err(s) if proto::DomainError::refuses_client(&s) => {
            state.limits.auth_failed(ip, Some(&subdomain), Some(&credentials)).await;
            if operator {
                state.limits.operator_failed();
            }
            tracing::info!(ip = ?ip, "console sign-in failed");
            return signin_page(&state, StatusCode::UNAUTHORIZED, Some(invalid), &subdomain);
        }
        Err(s) => return signin_page(&state, ApiError::from(s).status(), Some("The service is unavailable."), ""),
    };
    state.limits.auth_succeeded(&credentials).await;
    // Whatever session id the browser had (even one planted by someone else) ends here: the
    // signed-in session always has an id made now.
    if let Some(old) = super::cookie(&headers, super::session_cookie(&state)) {
        let _ = state.directory.clone().end_session(SessionRef { session_id: old, idle_secs: 0 }).await;
    }
    if operator {
        tracing::info!(tenant = %subdomain, "console: an operator signed in");
    }
    let mut r = see_other("/console/health");
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, super::set_cookie(&state, super::session_cookie(&state), Some(&created.session_id)));
    h.append(header::SET_COOKIE, super::set_cookie(&state, super::signin_cookie(&state), None));
    if let (Some(recorder), true) = (&state.recorder, operator)
        && let Some(s) = &created.session
    {
        recorder.audit(&s.tenant_id, "POST", "/console/signin", 303, std::time::Duration::ZERO);
    }
    r
}

/// `POST /console/signout`.
pub async fn signout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = super::cookie(&headers, super::session_cookie(&state)) {
        let _ = state.directory.clone().end_session(SessionRef { session_id: id, idle_secs: 0 }).await;
    }
    let mut r = see_other("/console/signin");
    r.headers_mut().insert(header::SET_COOKIE, super::set_cookie(&state, super::session_cookie(&state), None));
    r
}

// ----- Setup -----

/// The attributes to map in Okta, as (Okta's profile attribute, our SCIM attribute).
const MAPPING: [(&str, &str); 6] = [
    ("userName", "userName"),
    ("firstName", "name.givenName"),
    ("lastName", "name.familyName"),
    ("email", "emails[type eq \"work\"].value"),
    ("Location", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter"),
    ("Business Unit", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:division"),
];

fn setup_page(state: &AppState, console: &Console, headers: &HeaderMap, test: Value) -> Response {
    let mapping: Vec<Value> = MAPPING.iter().map(|(okta, scim)| context! { okta => okta, scim => scim }).collect();
    page(
        console,
        "setup",
        "setup.html",
        context! { base_url => state.base_url(headers), mapping => mapping, test => test },
    )
}

/// `GET /console/setup`.
pub async fn setup(
    State(state): State<AppState>,
    Extension(console): Extension<Console>,
    headers: HeaderMap,
) -> Response {
    setup_page(&state, &console, &headers, Value::from(()))
}

/// `POST /console/setup/test`: sends the request Okta's "Test Connector Configuration" sends
/// first, through the same path as Okta's (limits, pause, request log), and shows the answer.
pub async fn test_connection(
    State(state): State<AppState>,
    Extension(console): Extension<Console>,
    headers: HeaderMap,
) -> Response {
    let request = axum::http::Request::get("/scim/v2/Users?startIndex=1&count=2")
        .header(header::USER_AGENT, "console connection test")
        .body(Body::empty())
        .unwrap_or_default();
    let response = crate::tenant_api::through_scim(&state, console.tenant.clone(), request).await;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1024 * 1024).await.unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    let test = context! {
        ok => status.is_success(),
        status => status.as_u16(),
        total => body.get("totalResults").and_then(serde_json::Value::as_u64),
        detail => body.get("detail").and_then(serde_json::Value::as_str),
    };
    setup_page(&state, &console, &headers, test)
}

// ----- Health -----

/// `GET /console/health`: the last 24 hours.
pub async fn health(State(state): State<AppState>, Extension(console): Extension<Console>) -> Response {
    let scope = TenantScope { tenant_id: console.session.tenant_id.clone() };
    let a = match state.directory.clone().tenant_activity(scope).await {
        Ok(a) => a.into_inner(),
        Err(e) => return failed(&console, e),
    };
    let peak = a.hours.iter().map(|h| h.requests).max().unwrap_or(0).max(1);
    // Bars of a 24 x 100 chart: each hour's requests, and its errors inside it.
    let hours: Vec<Value> = a
        .hours
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let height = |n: u32| (f64::from(n) * 100.0 / f64::from(peak)).round();
            context! {
                x => i * 10,
                requests => h.requests,
                errors => h.errors,
                events => h.events,
                h_requests => height(h.requests),
                h_errors => height(h.errors),
                label => time(h.hour.as_ref()).map(|t| t[11..16].to_owned()),
            }
        })
        .collect();
    let sum = |f: fn(&proto::directory::v1::HourActivity) -> u32| a.hours.iter().map(|h| u64::from(f(h))).sum::<u64>();
    let recent_failures = state
        .directory
        .clone()
        .list_requests(ListRequestsRequest {
            tenant_id: console.session.tenant_id.clone(),
            status_min: 400,
            status_max: 599,
            limit: 5,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().records.iter().map(record_row).collect::<Vec<_>>())
        .unwrap_or_default();
    let emails = email_activity(&state, &console.session.tenant_id).await;
    page(
        &console,
        "health",
        "health.html",
        context! {
            emails => emails,
            hours => hours,
            peak => peak,
            requests => sum(|h| h.requests),
            errors => sum(|h| h.errors),
            events => sum(|h| h.events),
            last_success => time(a.last_success_at.as_ref()),
            last_failure => time(a.last_failure_at.as_ref()),
            held => a.held,
            brake_tripped => a.brake_tripped,
            paused => a.paused,
            active_users => a.active_users,
            archived_users => a.archived_users,
            groups => a.groups,
            recent_failures => recent_failures,
        },
    )
}

/// The tenant's emails of the last 24 hours, from the notification service; `None` when it does
/// not answer (the page says so rather than waiting).
async fn email_activity(state: &AppState, tenant_id: &str) -> Option<Value> {
    use secrecy::ExposeSecret as _;
    let base = state.config.notification_url.trim_end_matches('/');
    let token = state.config.notification_token.as_ref()?;
    if base.is_empty() {
        return None;
    }
    let url = format!("{base}/internal/v1/tenants/{tenant_id}/emails");
    let response =
        state.http.get(url).bearer_auth(token.expose_secret().trim()).send().await.ok()?.error_for_status().ok()?;
    let a: serde_json::Value = response.json().await.ok()?;
    let suppressed: Vec<Value> = a["suppressed"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| Some(context! { reason => r[0].as_str()?.replace('_', " "), count => r[1].as_i64()? }))
                .collect()
        })
        .unwrap_or_default();
    Some(context! {
        sent => a["sent"].as_i64(),
        pending => a["pending"].as_i64(),
        failed => a["failed"].as_i64(),
        dead => a["dead"].as_i64(),
        suppressed => suppressed,
    })
}

// ----- Request log -----

fn record_row(r: &proto::directory::v1::RequestRecord) -> Value {
    context! {
        id => r.id,
        at => time(r.at.as_ref()),
        method => r.method,
        path => r.path,
        status => r.status,
        failed => r.status >= 400,
        latency => format!("{:.1}", r.latency_ms),
        agent => r.user_agent,
        events => r.event_ids.len(),
    }
}

/// `GET /console/requests?method=&status=&contains=&hours=`.
pub async fn requests(State(state): State<AppState>, Extension(console): Extension<Console>, uri: Uri) -> Response {
    let q = query(&uri);
    let get = |k: &str| q.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let (method, status, contains, hours) =
        (get("method").to_ascii_uppercase(), get("status"), get("contains"), get("hours"));
    let filters = context! { method => method, status => status, contains => contains, hours => hours };
    let (status_min, status_max) = match crate::tenant_api::status_range(Some(&status)) {
        Ok(r) => r,
        Err(e) => {
            return page_with_status(
                &console,
                StatusCode::BAD_REQUEST,
                "requests",
                "requests.html",
                context! { filters => filters, error => e.detail(), records => Vec::<Value>::new() },
            );
        }
    };
    let since = hours
        .parse::<i64>()
        .ok()
        .filter(|h| (1..=24 * 90).contains(h))
        .map(|h| proto::time::to_timestamp(time::OffsetDateTime::now_utc() - time::Duration::hours(h)));
    let reply = state
        .directory
        .clone()
        .list_requests(ListRequestsRequest {
            tenant_id: console.session.tenant_id.clone(),
            since,
            until: None,
            method: if matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                method.clone()
            } else {
                String::new()
            },
            status_min,
            status_max,
            contains: contains.chars().take(200).collect(),
            limit: 200,
        })
        .await;
    match reply {
        Ok(r) => {
            let records: Vec<Value> = r.into_inner().records.iter().map(record_row).collect();
            page(&console, "requests", "requests.html", context! { filters => filters, records => records })
        }
        Err(e) => failed(&console, e),
    }
}

/// A logged body, indented when it is JSON.
fn pretty(body: Option<&str>) -> Option<String> {
    body.map(|b| {
        serde_json::from_str::<serde_json::Value>(b)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| b.to_owned())
    })
}

/// `GET /console/requests/{id}`: one request, its bodies (redacted), and the events it caused.
pub async fn request(
    State(state): State<AppState>,
    Extension(console): Extension<Console>,
    Path(id): Path<String>,
) -> Response {
    let reply = state
        .directory
        .clone()
        .get_request(GetRequestRequest { tenant_id: console.session.tenant_id.clone(), id })
        .await;
    let r = match reply {
        Ok(r) => r.into_inner(),
        Err(e) => return failed(&console, e),
    };
    let redrivable = crate::request_log::redrive_body(&r).is_ok();
    page(
        &console,
        "requests",
        "request.html",
        context! {
            r => record_row(&r),
            request_body => pretty(r.request_body.as_deref()),
            response_body => pretty(r.response_body.as_deref()),
            event_ids => r.event_ids,
            redrivable => redrivable,
        },
    )
}

/// `POST /console/requests/{id}/redrive`: the tenant API's re-drive; shows what it got.
pub async fn redrive(
    State(state): State<AppState>,
    Extension(console): Extension<Console>,
    Path(id): Path<String>,
) -> Response {
    let result = crate::tenant_api::redrive(
        State(state.clone()),
        Extension(console.tenant.clone()),
        crate::resources::ResourceId(id.clone()),
    )
    .await;
    let response = match result {
        Ok(r) => r,
        Err(e) => return failed(&console, e),
    };
    let status = response.status();
    let new_id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = axum::body::to_bytes(response.into_body(), 1024 * 1024).await.unwrap_or_default();
    page(
        &console,
        "requests",
        "message.html",
        context! {
            title => if status.is_success() { "Re-driven: it succeeded" } else { "Re-driven: it failed again" },
            text => format!("The request was sent again and answered {}.", status.as_u16()),
            body => pretty(std::str::from_utf8(&body).ok()),
            link => new_id.map(|n| format!("/console/requests/{n}")),
            back => format!("/console/requests/{id}"),
        },
    )
}

// ----- Users -----

/// A SCIM string literal: quotes and backslashes escaped.
fn scim_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn user_row(r: &proto::directory::v1::Resource) -> Option<serde_json::Value> {
    let mut u = crate::tenant_api::user_json(r).ok()?;
    u["linked"] = json!(u["source"] == "scim");
    Some(u)
}

/// `GET /console/users?q=`: users whose userName, name or email contains `q` (the first 50), and
/// the users the identity provider has not linked.
pub async fn users(State(state): State<AppState>, Extension(console): Extension<Console>, uri: Uri) -> Response {
    let q = query(&uri).get("q").map(|s| s.trim().chars().take(200).collect::<String>()).unwrap_or_default();
    let filter = if q.is_empty() {
        String::new()
    } else {
        let v = scim_string(&q);
        format!("userName co {v} or name.givenName co {v} or name.familyName co {v} or emails.value co {v}")
    };
    let tenant_id = console.session.tenant_id.clone();
    let found = state
        .directory
        .clone()
        .list_resources(ListResourcesRequest {
            tenant_id: tenant_id.clone(),
            r#type: ResourceType::User as i32,
            filter,
            start_index: 1,
            count: 50,
            sort_by: "meta.lastModified".to_owned(),
            descending: true,
            include_membership: false,
        })
        .await;
    let found = match found {
        Ok(r) => r.into_inner(),
        Err(e) => return failed(&console, e),
    };
    let unlinked = state
        .directory
        .clone()
        .list_unlinked_users(ListUnlinkedUsersRequest { tenant_id })
        .await
        .map(|r| r.into_inner().resources.iter().filter_map(user_row).collect::<Vec<_>>())
        .unwrap_or_default();
    page(
        &console,
        "users",
        "users.html",
        context! {
            q => q,
            total => found.total_results,
            users => Value::from_serialize(found.resources.iter().filter_map(user_row).collect::<Vec<_>>()),
            unlinked => Value::from_serialize(&unlinked),
            roles => proto::ROLES,
        },
    )
}

/// `POST /console/users/{id}/role` (`role`): the admin gives a user a platform role, through the
/// tenant API's own route (so the request log keeps it, with its event); recorded as changed by
/// `console:<the session's key id>`. Roles are the customer's own decisions: not for operators.
pub async fn set_role(
    State(state): State<AppState>,
    Extension(console): Extension<Console>,
    Extension(form): Extension<Form>,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = customers_only(&console) {
        return refused;
    }
    // Ids are UUIDs: anything else names no user, and must not reach the path as anything else.
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return failed(&console, ApiError::http(StatusCode::NOT_FOUND, "There is no user with that id."));
    }
    let body = json!({"role": form.get("role").unwrap_or_default()});
    let request = axum::http::Request::builder()
        .method(axum::http::Method::PUT)
        .uri(format!("/api/v1/users/{id}/role"))
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .header(axum::http::header::USER_AGENT, "console")
        .extension(crate::tenant_api::ChangedBy(format!("console:{}", console.session.key_id)))
        .body(Body::from(body.to_string()));
    let Ok(request) = request else {
        return failed(&console, ApiError::http(StatusCode::NOT_FOUND, "There is no user with that id."));
    };
    let response = crate::tenant_api::through_api(&state, console.tenant.clone(), request).await;
    if response.status().is_success() {
        return see_other("/console/users");
    }
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let detail = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "The role could not be changed.".to_owned());
    page_with_status(
        &console,
        status,
        "users",
        "message.html",
        context! { title => "The role was not changed", text => detail, back => "/console/users" },
    )
}

/// `GET /console/reports/learners.csv[?include=archived]`: the learners report, streamed as the
/// API's `Accept: text/csv` gives it.
pub async fn learners_csv(State(state): State<AppState>, Extension(console): Extension<Console>, uri: Uri) -> Response {
    let include_archived = query(&uri).get("include").is_some_and(|v| v == "archived");
    match crate::reports::learners_csv(&state, &console.session.tenant_id, include_archived).await {
        Ok(r) => r,
        Err(e) => failed(&console, e),
    }
}

// ----- Held deprovisions -----

async fn held_page(state: &AppState, console: &Console, notice: Option<String>) -> Response {
    let tenant_id = console.session.tenant_id.clone();
    let held = match state.directory.clone().list_tenant_held(TenantScope { tenant_id }).await {
        Ok(h) => h.into_inner().held,
        Err(e) => return failed(console, e),
    };
    let rows: Vec<_> = held
        .iter()
        .take(200)
        .map(|h| {
            context! {
                id => h.id,
                user_id => h.user_id,
                user_name => (!h.user_name.is_empty()).then_some(&h.user_name),
                kind => if h.kind == "delete" { "delete" } else { "deactivate" },
                held_at => time(h.held_at.as_ref()),
            }
        })
        .collect();
    page(console, "held", "held.html", context! { held => rows, total => held.len(), notice => notice })
}

/// `GET /console/held`.
pub async fn held(State(state): State<AppState>, Extension(console): Extension<Console>) -> Response {
    held_page(&state, &console, None).await
}

/// `POST /console/held` `action=release|reject`, `ids` (none: all): asks for a confirmation
/// first, then resolves.
pub async fn resolve_held(
    State(state): State<AppState>,
    Extension(console): Extension<Console>,
    Extension(form): Extension<Form>,
) -> Response {
    let release = match form.get("action") {
        Some("release") => true,
        Some("reject") => false,
        _ => return message(StatusCode::BAD_REQUEST, "Bad form", "Choose release or reject."),
    };
    let ids = form.all("ids");
    if form.get("confirmed") != Some("yes") {
        let what = if ids.is_empty() {
            "every held deprovision".to_owned()
        } else {
            format!("{} held deprovision(s)", ids.len())
        };
        let text = if release {
            format!(
                "Release {what}? Each user is deactivated (or deleted) as the identity provider asked, unless it changed them since; deprovisions then flow without the brake for one window."
            )
        } else {
            format!("Reject {what}? The users stay as they are; the identity provider is not told.")
        };
        return page(
            &console,
            "held",
            "confirm.html",
            context! {
                title => if release { "Release held deprovisions" } else { "Reject held deprovisions" },
                text => text,
                action => "/console/held",
                fields => vec![("action", if release { "release" } else { "reject" }), ("confirmed", "yes")],
                ids => ids,
                button => if release { "Yes, release" } else { "Yes, reject" },
                back => "/console/held",
            },
        );
    }
    let reply = state
        .directory
        .clone()
        .resolve_tenant_held(ResolveTenantHeldRequest { tenant_id: console.session.tenant_id.clone(), release, ids })
        .await;
    match reply {
        Ok(r) => {
            let n = r.into_inner().resolved;
            let notice = format!("{} {n} held deprovision(s).", if release { "Released" } else { "Rejected" });
            held_page(&state, &console, Some(notice)).await
        }
        Err(e) => failed(&console, e),
    }
}

// ----- Keys -----

async fn keys_page(state: &AppState, console: &Console, issued: Value, notice: Option<&str>) -> Response {
    let scope = TenantScope { tenant_id: console.session.tenant_id.clone() };
    let keys = match state.directory.clone().list_tenant_keys(scope).await {
        Ok(k) => k.into_inner().keys,
        Err(e) => return failed(console, e),
    };
    let now = time::OffsetDateTime::now_utc();
    let rows: Vec<Value> = keys
        .iter()
        .map(|k| {
            let expired = k.expires_at.as_ref().is_some_and(|e| proto::time::from_timestamp(Some(e)) <= now);
            context! {
                id => k.id,
                name => k.name,
                prefix => k.prefix,
                scopes => k.scopes.join(", "),
                created => time(k.created_at.as_ref()),
                last_used => time(k.last_used_at.as_ref()),
                state => if k.revoked_at.is_some() { "revoked" } else if expired { "expired" } else { "live" },
                yours => k.id == console.session.key_id,
            }
        })
        .collect();
    page(console, "keys", "keys.html", context! { keys => rows, issued => issued, notice => notice })
}

/// `GET /console/keys`.
pub async fn keys(State(state): State<AppState>, Extension(console): Extension<Console>) -> Response {
    keys_page(&state, &console, Value::from(()), None).await
}

/// `POST /console/keys` `name`, `scope` (repeated): issues a key and shows it, once.
pub async fn issue_key(
    State(state): State<AppState>,
    Extension(console): Extension<Console>,
    Extension(form): Extension<Form>,
) -> Response {
    if let Some(refused) = customers_only(&console) {
        return refused;
    }
    let scopes = form.all("scope");
    if scopes.is_empty() {
        return keys_page(
            &state,
            &console,
            Value::from(()),
            Some("Choose what the key opens: SCIM, the console, or both."),
        )
        .await;
    }
    let name = form.get("name").unwrap_or("").trim().to_owned();
    let reply = state
        .directory
        .clone()
        .issue_tenant_key(IssueTenantKeyRequest { tenant_id: console.session.tenant_id.clone(), name, scopes })
        .await;
    match reply {
        Ok(k) => {
            let k = k.into_inner();
            keys_page(&state, &console, context! { id => k.key_id, key => k.api_key }, None).await
        }
        Err(e) => failed(&console, e),
    }
}

/// `POST /console/keys/{id}/revoke`.
pub async fn revoke_key(
    State(state): State<AppState>,
    Extension(console): Extension<Console>,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = customers_only(&console) {
        return refused;
    }
    let reply = state
        .directory
        .clone()
        .revoke_tenant_key(RevokeTenantKeyRequest { tenant_id: console.session.tenant_id.clone(), key_id: id.clone() })
        .await;
    match reply {
        // Revoking the key this session was opened with ends the session.
        Ok(_) if id == console.session.key_id => see_other("/console/signin"),
        Ok(_) => {
            keys_page(&state, &console, Value::from(()), Some("The key is revoked: it stops working within seconds."))
                .await
        }
        Err(e) => failed(&console, e),
    }
}
