//! The tenant console (`/console`): server-rendered pages where a customer's admin, and our
//! support, see provisioning as it happens. See docs/adr/0016-tenant-console.md.
//!
//! Sign-in: a tenant's admin with an `admin`-scoped key (a `scim` key is refused), or an operator
//! with `CONSOLE_OPERATOR_TOKEN` and the tenant's subdomain. The session lives in user-directory
//! (the gateway stays stateless); the cookie carries only its random id, `HttpOnly`,
//! `SameSite=Strict` and `Secure` (unless `CONSOLE_COOKIE_SECURE=false`). A new id is made at
//! every sign-in and the one the browser had is ended (no session fixation). Every form carries
//! the session's CSRF token, checked here for every POST before any handler runs; the sign-in
//! form carries a token of its own (double-submit cookie). Sessions end after
//! `CONSOLE_IDLE_SECS` without use, `CONSOLE_SESSION_MAX_SECS` (a directory setting) after
//! sign-in, at sign-out, with their key, and (an operator's) when the operator token changes: the
//! directory checks the operator token again itself (docs/adr/0020-trust-inside-the-deployment.md).
//!
//! Every page is scoped to the session's tenant through the same directory calls as the API:
//! another tenant's ids are simply not found. An operator may look at everything, and may only
//! resolve held deprovisions and re-drive requests; each of an operator's requests is written to
//! the tenant's request log.

mod pages;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use minijinja::{Environment, Value, context};
use proto::directory::v1::{Session, SessionRef};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::TenantCtx;

/// The signed-in session of a console request.
#[derive(Clone)]
pub struct Console {
    pub session: Session,
    /// The tenant as the API's handlers see it (for re-drives and the connection test).
    pub tenant: Arc<TenantCtx>,
}

/// The fields of a POSTed form whose CSRF token was checked.
#[derive(Clone, Default)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }
}

/// The largest form the console accepts.
const MAX_FORM: usize = 64 * 1024;

/// The pages' templates, part of the binary.
const SOURCES: [(&str, &str); 11] = [
    ("layout.html", include_str!("templates/layout.html")),
    ("signin.html", include_str!("templates/signin.html")),
    ("message.html", include_str!("templates/message.html")),
    ("setup.html", include_str!("templates/setup.html")),
    ("health.html", include_str!("templates/health.html")),
    ("requests.html", include_str!("templates/requests.html")),
    ("request.html", include_str!("templates/request.html")),
    ("users.html", include_str!("templates/users.html")),
    ("held.html", include_str!("templates/held.html")),
    ("confirm.html", include_str!("templates/confirm.html")),
    ("keys.html", include_str!("templates/keys.html")),
];

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in SOURCES {
        // One that does not parse is missing, and its pages answer 500 (a unit test parses all).
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "a console template does not parse");
        }
    }
    env
});

/// What every page's response carries: no caching (pages show secrets once, and tenant data),
/// no framing, no scripts or styles but our own, no referrer.
fn secure_headers(headers: &mut HeaderMap) {
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// A page from a template, with `status`.
pub fn render(status: StatusCode, template: &str, ctx: Value) -> Response {
    match TEMPLATES.get_template(template).and_then(|t| t.render(ctx)) {
        Ok(html) => {
            let mut response = (status, html).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            response
        }
        Err(e) => {
            tracing::error!(template, error = %e, "rendering a console page");
            (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be rendered.").into_response()
        }
    }
}

/// A page of a signed-in session: the template gets `tenant`, `operator`, `csrf` and `page`
/// (which navigation entry is current) besides `ctx`.
pub fn page(console: &Console, page: &str, template: &str, ctx: Value) -> Response {
    page_with_status(console, StatusCode::OK, page, template, ctx)
}

pub fn page_with_status(console: &Console, status: StatusCode, page: &str, template: &str, ctx: Value) -> Response {
    let s = &console.session;
    let common = context! {
        tenant => context! { subdomain => s.subdomain, name => s.display_name, paused => s.paused },
        operator => s.operator,
        csrf => s.csrf_token,
        page => page,
    };
    render(status, template, context! { ..ctx, ..common })
}

/// A short page saying what happened (a refusal, an error), inside or outside a session.
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    render(status, "message.html", context! { title => title, text => text })
}

/// The session cookie's name: `__Host-` binds it to this host, over HTTPS, for every path.
fn session_cookie(state: &AppState) -> &'static str {
    if state.config.console_cookie_secure { "__Host-console" } else { "console" }
}

/// The sign-in form's own token's cookie.
fn signin_cookie(state: &AppState) -> &'static str {
    if state.config.console_cookie_secure { "__Host-console-signin" } else { "console-signin" }
}

/// A `Set-Cookie` value; `None` clears the cookie.
fn set_cookie(state: &AppState, name: &str, value: Option<&str>) -> HeaderValue {
    let secure = if state.config.console_cookie_secure { "; Secure" } else { "" };
    let (value, age) = match value {
        Some(v) => (v, ""),
        None => ("", "; Max-Age=0"),
    };
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}{age}"))
        .unwrap_or_else(|_| HeaderValue::from_static("console=; Path=/; Max-Age=0"))
}

/// A cookie's value as the browser sent it.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether two secrets are equal, compared as digests (the comparison's time says nothing).
fn same_secret(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string()
}

/// A 303 to `to`.
pub fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Reads a urlencoded form of at most [`MAX_FORM`] bytes.
async fn read_form(body: Body) -> Option<Vec<(String, String)>> {
    let bytes = crate::scim_json::read_limited(body, MAX_FORM).await.ok()?;
    serde_urlencoded::from_bytes(&bytes).ok()
}

/// Middleware on every signed-in page: resolves the session (none, or ended: to the sign-in
/// page), checks every POST's CSRF token, and writes an operator's requests to the tenant's log.
async fn require_session(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let name = session_cookie(&state);
    let is_get = request.method() == Method::GET;
    let to_signin = || {
        let mut r = if is_get {
            see_other("/console/signin")
        } else {
            message(StatusCode::FORBIDDEN, "Signed out", "Your session has ended. Sign in again.")
        };
        r.headers_mut().insert(header::SET_COOKIE, set_cookie(&state, name, None));
        r
    };
    let Some(id) = cookie(request.headers(), name) else {
        return to_signin();
    };
    let reply = state
        .directory
        .clone()
        .get_session(SessionRef { session_id: id, idle_secs: state.config.console_idle_secs })
        .await;
    let session = match reply {
        Ok(s) => s.into_inner(),
        Err(s) if proto::DomainError::refuses_client(&s) => return to_signin(),
        Err(s) => {
            tracing::warn!(error = %s.message(), "console session lookup failed");
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "The service is unavailable. Retry shortly.",
            );
        }
    };
    let (mut parts, body) = request.into_parts();
    let mut fields = Form::default();
    if parts.method == Method::POST {
        let Some(form) = read_form(body).await else {
            return message(StatusCode::BAD_REQUEST, "Bad form", "The form could not be read.");
        };
        fields = Form(form);
        if !fields.get("_csrf").is_some_and(|t| same_secret(t, &session.csrf_token)) {
            tracing::warn!(tenant = %session.subdomain, "console form without a valid CSRF token refused");
            return message(
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form did not come from this session's pages. Reload the page and try again.",
            );
        }
    }
    let tenant = Arc::new(TenantCtx {
        tenant_id: session.tenant_id.clone(),
        subdomain: session.subdomain.clone(),
        key_id: if session.operator { "operator".to_owned() } else { session.key_id.clone() },
        paused: session.paused,
        rate_limit: None,
        max_in_flight: None,
        scopes: vec!["admin".to_owned()],
    });
    let operator = session.operator;
    let (method, path) = (parts.method.to_string(), parts.uri.to_string());
    parts.extensions.insert(Console { session, tenant: tenant.clone() });
    parts.extensions.insert(fields);
    let started = std::time::Instant::now();
    let mut response = next.run(Request::from_parts(parts, Body::empty())).await;
    if operator && let Some(recorder) = &state.recorder {
        recorder.audit(&tenant.tenant_id, &method, &path, response.status().as_u16(), started.elapsed());
    }
    secure_headers(response.headers_mut());
    response
}

async fn with_secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    secure_headers(response.headers_mut());
    response
}

/// `/console` redirects to the first page; the sign-in pages and the static files need no
/// session; everything else does.
pub fn routes(state: &AppState) -> Router<AppState> {
    use axum::routing::{get, post};
    let signed_in = Router::new()
        .route("/console/setup", get(pages::setup))
        .route("/console/setup/test", post(pages::test_connection))
        .route("/console/health", get(pages::health))
        .route("/console/requests", get(pages::requests))
        .route("/console/requests/{id}", get(pages::request))
        .route("/console/requests/{id}/redrive", post(pages::redrive))
        .route("/console/users", get(pages::users))
        .route("/console/users/{id}/role", post(pages::set_role))
        .route("/console/reports/learners.csv", get(pages::learners_csv))
        .route("/console/held", get(pages::held).post(pages::resolve_held))
        .route("/console/keys", get(pages::keys).post(pages::issue_key))
        .route("/console/keys/{id}/revoke", post(pages::revoke_key))
        .route("/console/signout", post(pages::signout))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_session));
    Router::new()
        .route("/console", get(|| async { see_other("/console/health") }))
        .route("/console/signin", get(pages::signin_form).post(pages::signin))
        .route(
            "/console/static/console.css",
            get(|| async { static_file("text/css", include_str!("static/console.css")) }),
        )
        .route(
            "/console/static/console.js",
            get(|| async { static_file("text/javascript", include_str!("static/console.js")) }),
        )
        .route_layer(middleware::from_fn(with_secure_headers))
        .merge(signed_in)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Query parameters, lenient: a malformed query is an empty one.
pub fn query(uri: &axum::http::Uri) -> HashMap<String, String> {
    uri.query().and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for (name, source) in SOURCES {
            Environment::new().template_from_str(source).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(TEMPLATES.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("console-signin=a; console=b; other=c"));
        assert_eq!(cookie(&h, "console").as_deref(), Some("b"));
        assert_eq!(cookie(&h, "console-signin").as_deref(), Some("a"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn pages_escape_what_they_show() {
        let html = TEMPLATES
            .get_template("message.html")
            .unwrap()
            .render(context! { title => "t", text => "<script>alert(1)</script>" })
            .unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }
}
