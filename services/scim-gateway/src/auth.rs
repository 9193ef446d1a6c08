//! Authentication: HTTP Basic (`subdomain:key`, what Okta's SCIM 2.0 template sends) or Bearer
//! (the key alone; its tenant comes from the key, and on a tenant host `<subdomain>.<BASE_DOMAIN>`
//! it must be that tenant's). user-directory checks the key; a success is cached for at most
//! `AUTH_CACHE_TTL_SECS`, and dropped sooner when the key is revoked or the tenant changes (the
//! directory's events reach every gateway, see [`crate::revocation`]). Every failure is the same
//! 401, so a caller learns nothing about which tenants exist; failures are rate-limited per source
//! address and per subdomain (see [`crate::limits`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use moka::future::Cache;
use proto::directory::v1::AuthenticateRequest;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// The authenticated tenant of a request, as the directory described it.
#[derive(Debug, Clone)]
pub struct TenantCtx {
    pub tenant_id: String,
    pub subdomain: String,
    /// The key presented (its id), so that its revocation drops it from the cache.
    pub key_id: String,
    /// Provisioning paused by an operator.
    pub paused: bool,
    /// The tenant's own rate limit (per second, burst), if it has one.
    pub rate_limit: Option<(u32, u32)>,
    /// The tenant's own limit on requests in flight at once, if it has one.
    pub max_in_flight: Option<u32>,
    /// What the key opens: `scim` (the SCIM API), `admin` (the tenant API and console).
    pub scopes: Vec<String>,
}

impl TenantCtx {
    pub fn may(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Middleware (inside [`require_tenant`]): the key must have `scope`; a valid key without it is
/// answered 403, as it is a real key of the tenant's, used for what it was not issued for.
pub async fn require_scope(scope: &'static str, request: Request, next: Next) -> Result<Response, ApiError> {
    match request.extensions().get::<Arc<TenantCtx>>() {
        Some(t) if t.may(scope) => Ok(next.run(request).await),
        _ => Err(ApiError::from(proto::DomainError::new(
            proto::ErrorKind::Forbidden,
            match scope {
                "scim" => {
                    "This key is not for SCIM (it lacks the scim scope): give the identity provider a key with the scim scope."
                }
                _ => {
                    "This key is for the identity provider (scope scim); the tenant API needs a key with the admin scope."
                }
            },
        ))),
    }
}

/// Credentials as presented.
#[derive(Debug, PartialEq, Eq)]
struct Credentials {
    subdomain: Option<String>,
    key: String,
}

const INVALID: &str =
    "The credentials are not valid. Use the tenant's subdomain as the username and its SCIM API key as the password.";

/// A cache of successful credential checks, keyed by a hash of the credentials.
#[derive(Clone)]
pub struct Authenticator {
    cache: Cache<[u8; 32], Arc<TenantCtx>>,
    /// Moves on at every invalidation: a check that started before one may be stale, and is not
    /// cached (a revocation arriving while the directory answers would otherwise be missed).
    epoch: Arc<AtomicU64>,
    base_domain: Option<String>,
    trust_forwarded_for: bool,
}

impl Authenticator {
    pub fn new(ttl: Duration, base_domain: Option<String>, trust_forwarded_for: bool) -> Self {
        Authenticator {
            cache: Cache::builder().max_capacity(100_000).time_to_live(ttl).support_invalidation_closures().build(),
            epoch: Arc::new(AtomicU64::new(0)),
            base_domain,
            trust_forwarded_for,
        }
    }

    /// Drops every cached success of a tenant (suspended, resumed, paused, limits changed).
    pub fn forget_tenant(&self, tenant_id: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let id = tenant_id.to_owned();
        if let Err(e) = self.cache.invalidate_entries_if(move |_, ctx| ctx.tenant_id == id) {
            tracing::error!(error = %e, "invalidating cached credentials");
            self.cache.invalidate_all();
        }
    }

    /// Drops every cached success of a key (revoked).
    pub fn forget_key(&self, key_id: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let id = key_id.to_owned();
        if let Err(e) = self.cache.invalidate_entries_if(move |_, ctx| ctx.key_id == id) {
            tracing::error!(error = %e, "invalidating cached credentials");
            self.cache.invalidate_all();
        }
    }

    /// The client's address: the connection's peer, or behind a trusted proxy the address it
    /// appended to `X-Forwarded-For`.
    pub(crate) fn client_ip(&self, request: &Request) -> Option<IpAddr> {
        if self.trust_forwarded_for {
            let forwarded = request.headers().get_all("x-forwarded-for").iter().next_back();
            if let Some(ip) = forwarded
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
            {
                return Some(ip);
            }
        }
        request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())
    }

    fn credentials(&self, headers: &HeaderMap) -> Result<Credentials, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthenticated(
                "Authentication is required: send the tenant's subdomain and SCIM API key with HTTP Basic authentication, or the key as a Bearer token.",
            ));
        };
        let value = value.to_str().map_err(|_| ApiError::unauthenticated(INVALID))?.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::unauthenticated(INVALID))?;
            let (user, key) = decoded.split_once(':').ok_or_else(|| ApiError::unauthenticated(INVALID))?;
            return Ok(Credentials { subdomain: Some(user.trim().to_ascii_lowercase()), key: key.to_owned() });
        }
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            return Ok(Credentials { subdomain: self.host_subdomain(headers), key: rest.to_owned() });
        }
        Err(ApiError::unauthenticated(INVALID))
    }

    /// The tenant a request's Host names, when tenant hosts are configured.
    fn host_subdomain(&self, headers: &HeaderMap) -> Option<String> {
        let base = self.base_domain.as_deref()?;
        let host = headers.get(header::HOST)?.to_str().ok()?;
        let host = host.split(':').next()?.to_ascii_lowercase();
        let sub = host.strip_suffix(base)?.strip_suffix('.')?;
        (!sub.is_empty() && !sub.contains('.')).then(|| sub.to_owned())
    }
}

fn cache_key(c: &Credentials) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(c.subdomain.as_deref().unwrap_or("").as_bytes());
    h.update([0]);
    h.update(c.key.as_bytes());
    h.finalize().into()
}

/// Middleware: authenticates, then hands the tenant to the handler as an extension.
pub async fn require_tenant(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let ip = state.auth.client_ip(&request);
    let credentials = match state.auth.credentials(request.headers()) {
        Ok(c) => c,
        Err(e) => {
            crate::observe::auth_failed("malformed");
            state.limits.auth_failed(ip, None, None).await;
            return Err(e);
        }
    };
    let key = cache_key(&credentials);
    let tenant = match state.auth.cache.get(&key).await {
        Some(t) => t,
        None => {
            if let Err(e) = state.limits.may_try(ip, credentials.subdomain.as_deref(), &key).await {
                crate::observe::refused("auth_limited", credentials.subdomain.as_deref());
                return Err(e);
            }
            let subdomain = credentials.subdomain.clone();
            let epoch = state.auth.epoch.load(Ordering::SeqCst);
            let reply = state
                .directory
                .clone()
                .authenticate(AuthenticateRequest { api_key: credentials.key, subdomain: credentials.subdomain })
                .await;
            let reply = match reply {
                Ok(r) => r.into_inner(),
                Err(s) if proto::DomainError::refuses_client(&s) => {
                    crate::observe::auth_failed("invalid");
                    state.limits.auth_failed(ip, subdomain.as_deref(), Some(&key)).await;
                    tracing::info!(ip = ?ip, "authentication failed");
                    return Err(ApiError::unauthenticated(INVALID));
                }
                Err(s) => return Err(ApiError::from(s)),
            };
            state.limits.auth_succeeded(&key).await;
            let rate_limit =
                (reply.rate_limit_per_second > 0).then_some((reply.rate_limit_per_second, reply.rate_limit_burst));
            let ctx = Arc::new(TenantCtx {
                tenant_id: reply.tenant_id,
                subdomain: reply.subdomain,
                key_id: reply.key_id,
                paused: reply.paused,
                rate_limit,
                max_in_flight: (reply.max_in_flight > 0).then_some(reply.max_in_flight),
                scopes: reply.scopes,
            });
            if state.auth.epoch.load(Ordering::SeqCst) == epoch {
                state.auth.cache.insert(key, ctx.clone()).await;
            }
            ctx
        }
    };
    request.extensions_mut().insert(tenant.clone());
    let mut response = next.run(request).await;
    // For the request's span and metrics, which are outside this middleware.
    response.extensions_mut().insert(tenant);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn creds(auth: &str, host: Option<&str>) -> Result<Credentials, ApiError> {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        if let Some(host) = host {
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        Authenticator::new(Duration::from_secs(1), Some("scim.example.com".into()), false).credentials(&h)
    }

    #[test]
    fn basic_splits_on_the_first_colon() {
        let b = base64::engine::general_purpose::STANDARD.encode("Acme:key:with:colons");
        assert_eq!(
            creds(&format!("Basic {b}"), None).unwrap(),
            Credentials { subdomain: Some("acme".into()), key: "key:with:colons".into() }
        );
    }

    #[test]
    fn bearer_takes_the_tenant_from_a_tenant_host_only() {
        assert_eq!(creds("Bearer k1", Some("acme.scim.example.com:443")).unwrap().subdomain.as_deref(), Some("acme"));
        assert_eq!(creds("Bearer k1", Some("scim.example.com")).unwrap().subdomain, None);
        assert_eq!(creds("bearer k1", Some("evil.com")).unwrap().subdomain, None);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in ["non-token", "Basic !!!", "Basic bm9jb2xvbg==", "Bearer", "Digest x"] {
            assert!(creds(bad, None).is_err(), "{bad}");
        }
    }
}
