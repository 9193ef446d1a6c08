//! Authentication: HTTP Basic (`subdomain:key`, what Okta's SCIM 2.0 template sends) or Bearer
//! (the key alone; its tenant comes from the key, and on a tenant host `<subdomain>.<BASE_DOMAIN>`
//! it must be that tenant's). user-directory checks the key; a success is reused for a few seconds
//! (`AUTH_CACHE_TTL_SECS`, the bound on a revoked key's remaining life). Every failure is the same
//! 401, so a caller learns nothing about which tenants exist.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use moka::future::Cache;
use proto::directory::v1::AuthenticateRequest;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// The authenticated tenant of a request.
#[derive(Debug, Clone)]
pub struct TenantCtx {
    pub tenant_id: String,
    pub subdomain: String,
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
    base_domain: Option<String>,
}

impl Authenticator {
    pub fn new(ttl: Duration, base_domain: Option<String>) -> Self {
        Authenticator { cache: Cache::builder().max_capacity(100_000).time_to_live(ttl).build(), base_domain }
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
    let credentials = state.auth.credentials(request.headers())?;
    let key = cache_key(&credentials);
    let tenant = match state.auth.cache.get(&key).await {
        Some(t) => t,
        None => {
            let mut client = state.directory.clone();
            let reply = client
                .authenticate(AuthenticateRequest { api_key: credentials.key, subdomain: credentials.subdomain })
                .await
                .map_err(|s| match s.code() {
                    tonic::Code::Unauthenticated => ApiError::unauthenticated(INVALID),
                    _ => ApiError::from(s),
                })?
                .into_inner();
            let ctx = Arc::new(TenantCtx { tenant_id: reply.tenant_id, subdomain: reply.subdomain });
            state.auth.cache.insert(key, ctx.clone()).await;
            ctx
        }
    };
    request.extensions_mut().insert(tenant);
    Ok(next.run(request).await)
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
        Authenticator::new(Duration::from_secs(1), Some("scim.example.com".into())).credentials(&h)
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
