//! Fairness and containment: each tenant's token bucket (so that one tenant's burst cannot slow
//! another down), each tenant's cap on requests in flight (so that one tenant's slow requests
//! cannot hold every connection to the directory), and the budget of failed authentications per
//! source address and per subdomain (so that guessing keys is slow and cheap to refuse).
//!
//! Buckets live in this gateway replica's memory (governor's GCRA), so a tenant's limit applies
//! per replica. Credentials that authenticated recently are never refused for someone else's
//! failures: Okta's egress addresses are shared by many Okta customers, and one customer's
//! misconfigured key must not stop another's provisioning.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use moka::future::Cache;
use proto::{DomainError, ErrorKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::AppState;
use crate::auth::TenantCtx;
use crate::error::ApiError;

/// A bucket and the quota it was built with (a tenant's limit may change).
struct Bucket {
    quota: (u32, u32),
    limiter: DefaultDirectRateLimiter,
}

impl Bucket {
    fn new((per_second, burst): (u32, u32)) -> Arc<Self> {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Arc::new(Bucket {
            quota: (per_second, burst.get()),
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
        })
    }

    /// Takes a token, or says how long until one is available.
    fn take(&self) -> Result<(), Duration> {
        self.limiter.check().map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// A tenant's requests in flight, and the cap it was built with (a tenant's cap may change).
struct InFlight {
    cap: u32,
    slots: Arc<Semaphore>,
}

/// The gateway's limits.
#[derive(Clone)]
pub struct Limits {
    default_rate: (u32, u32),
    tenants: Cache<String, Arc<Bucket>>,
    default_in_flight: u32,
    in_flight: Cache<String, Arc<InFlight>>,
    failures_per_minute: u32,
    /// Failure budgets, by source address and by subdomain.
    ip_failures: Cache<IpAddr, Arc<Bucket>>,
    subdomain_failures: Cache<String, Arc<Bucket>>,
    /// Where the budget ran out: refused until the instant stored.
    blocked_ips: Cache<IpAddr, std::time::Instant>,
    blocked_subdomains: Cache<String, std::time::Instant>,
    /// Digests of credentials that authenticated recently.
    known_good: Cache<[u8; 32], ()>,
    /// Failed operator sign-ins from anywhere: one budget for every address together, since one
    /// token opens every tenant's console, and the instant until which operator sign-ins are
    /// refused once it is spent.
    operator_failures: Arc<Bucket>,
    operator_blocked: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

const RATE_LIMITED: &str = "Too many requests for this organisation. Retry after the number of seconds in Retry-After.";
const IN_FLIGHT_LIMITED: &str =
    "Too many requests in progress at once for this organisation. Retry after the number of seconds in Retry-After.";
const AUTH_LIMITED: &str = "Too many failed authentications from this address or for this organisation. Retry after the number of seconds in Retry-After.";

/// A bounded cache whose entries go after `secs` unused.
fn idle<K, V>(secs: u64) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder().max_capacity(100_000).time_to_idle(Duration::from_secs(secs)).build()
}

/// A budget of `n` a minute (at least 1), all of it available at once, refilled evenly.
fn per_minute_budget(n: u32) -> Arc<Bucket> {
    let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Arc::new(Bucket { quota: (0, n.get()), limiter: RateLimiter::direct(Quota::per_minute(n)) })
}

impl Limits {
    pub fn new(
        default_rate: (u32, u32),
        default_in_flight: u32,
        failures_per_minute: u32,
        operator_failures_per_minute: u32,
    ) -> Self {
        Limits {
            default_in_flight: default_in_flight.max(1),
            in_flight: idle(3600),
            operator_failures: per_minute_budget(operator_failures_per_minute),
            operator_blocked: Arc::default(),
            default_rate,
            tenants: idle(3600),
            failures_per_minute: failures_per_minute.max(1),
            ip_failures: idle(600),
            subdomain_failures: idle(600),
            blocked_ips: idle(600),
            blocked_subdomains: idle(600),
            known_good: Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(24 * 3600)).build(),
        }
    }

    /// Takes one of the tenant's tokens.
    pub async fn admit(&self, ctx: &TenantCtx) -> Result<(), ApiError> {
        let quota = match ctx.rate_limit {
            Some((per_second, 0)) => (per_second, per_second.saturating_mul(2)),
            Some(q) => q,
            None => self.default_rate,
        };
        let mut bucket = self.tenants.get_with_by_ref(&ctx.tenant_id, async { Bucket::new(quota) }).await;
        if bucket.quota != quota {
            bucket = Bucket::new(quota);
            self.tenants.insert(ctx.tenant_id.clone(), bucket.clone()).await;
        }
        bucket.take().map_err(|wait| ApiError::rate_limited(RATE_LIMITED, wait))
    }

    /// Takes one of the tenant's slots for a request in flight, given back when the permit is
    /// dropped; none free: 429 with `Retry-After: 1`.
    pub async fn enter(&self, ctx: &TenantCtx) -> Result<OwnedSemaphorePermit, ApiError> {
        let cap = ctx.max_in_flight.unwrap_or(self.default_in_flight).max(1);
        let new = || Arc::new(InFlight { cap, slots: Arc::new(Semaphore::new(cap as usize)) });
        let mut slots = self.in_flight.get_with_by_ref(&ctx.tenant_id, async { new() }).await;
        if slots.cap != cap {
            // Requests holding the old slots finish as they are; new ones count against the new cap.
            slots = new();
            self.in_flight.insert(ctx.tenant_id.clone(), slots.clone()).await;
        }
        slots
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::rate_limited(IN_FLIGHT_LIMITED, Duration::from_secs(1)))
    }

    /// Whether credentials not in the cache may be checked now: refused (429) while the source
    /// address or the subdomain has spent its failure budget, unless these very credentials
    /// authenticated recently. A subdomain's block holds only against addresses that failed
    /// recently themselves: a guesser spread over many addresses gets one try from each, and the
    /// tenant's own identity provider (which has not failed) is not locked out by them.
    pub async fn may_try(
        &self,
        ip: Option<IpAddr>,
        subdomain: Option<&str>,
        credentials: &[u8; 32],
    ) -> Result<(), ApiError> {
        let now = std::time::Instant::now();
        let mut until = None;
        if let Some(ip) = ip {
            until = until.max(self.blocked_ips.get(&ip).await.filter(|t| *t > now));
        }
        let failed_here = match ip {
            Some(ip) => self.ip_failures.contains_key(&ip),
            None => true,
        };
        if let (Some(sub), true) = (subdomain, failed_here) {
            until = until.max(self.blocked_subdomains.get(sub).await.filter(|t| *t > now));
        }
        match until {
            Some(until) if !self.known_good.contains_key(credentials) => {
                Err(ApiError::rate_limited(AUTH_LIMITED, until - now))
            }
            _ => Ok(()),
        }
    }

    /// Spends one failure from the address's and the subdomain's budgets.
    pub async fn auth_failed(&self, ip: Option<IpAddr>, subdomain: Option<&str>, credentials: Option<&[u8; 32]>) {
        if let Some(c) = credentials {
            self.known_good.invalidate(c).await;
        }
        if let Some(ip) = ip {
            let bucket = self.ip_failures.get_with(ip, async { self.failure_budget() }).await;
            if let Err(wait) = bucket.take() {
                tracing::warn!(%ip, "failed authentications over budget: address refused for a while");
                self.blocked_ips.insert(ip, std::time::Instant::now() + wait).await;
            }
        }
        if let Some(sub) = subdomain {
            let bucket = self.subdomain_failures.get_with_by_ref(sub, async { self.failure_budget() }).await;
            if let Err(wait) = bucket.take() {
                tracing::warn!(subdomain = sub, "failed authentications over budget: subdomain refused for a while");
                self.blocked_subdomains.insert(sub.to_owned(), std::time::Instant::now() + wait).await;
            }
        }
    }

    /// A budget of `failures_per_minute`, all of it available at once, refilled evenly.
    fn failure_budget(&self) -> Arc<Bucket> {
        per_minute_budget(self.failures_per_minute)
    }

    /// Whether an operator sign-in may be tried now: refused (429) while the operators' global
    /// failure budget is spent, whatever the address.
    pub fn operator_may_try(&self) -> Result<(), ApiError> {
        let now = std::time::Instant::now();
        let until = *self.operator_blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match until.filter(|t| *t > now) {
            Some(until) => Err(ApiError::rate_limited(AUTH_LIMITED, until - now)),
            None => Ok(()),
        }
    }

    /// Spends one failure from the operators' global budget.
    pub fn operator_failed(&self) {
        if let Err(wait) = self.operator_failures.take() {
            tracing::warn!("failed operator sign-ins over the global budget: operator sign-in refused for a while");
            *self.operator_blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(std::time::Instant::now() + wait);
        }
    }

    /// Remembers credentials that authenticated.
    pub async fn auth_succeeded(&self, credentials: &[u8; 32]) {
        self.known_good.insert(*credentials, ()).await;
    }
}

/// Middleware: the tenant's rate limit, then its cap on requests in flight (each 429 with an
/// integer `Retry-After`); the slot is held until the handler has answered.
pub async fn rate_limit(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<TenantCtx>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Err(e) = state.limits.admit(&ctx).await {
        crate::observe::refused("rate_limited", Some(&ctx.subdomain));
        return Err(e);
    }
    let _slot = match state.limits.enter(&ctx).await {
        Ok(slot) => slot,
        Err(e) => {
            crate::observe::refused("in_flight", Some(&ctx.subdomain));
            return Err(e);
        }
    };
    Ok(next.run(request).await)
}

/// Middleware on SCIM routes: a paused tenant's requests are refused with `Retry-After` (429 to
/// Okta, 503 to others: see [`crate::error::answer_refusal`]; never a silent success), and
/// nothing is changed.
pub async fn pause(
    Extension(ctx): Extension<Arc<TenantCtx>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if ctx.paused {
        crate::observe::refused("paused", Some(&ctx.subdomain));
        return Err(ApiError::from(DomainError::new(
            ErrorKind::Paused,
            "Provisioning for this organisation is paused by an operator. Nothing was changed; retry later.",
        )));
    }
    Ok(next.run(request).await)
}
