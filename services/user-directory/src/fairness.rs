//! What keeps one tenant from starving the others in this replica: each tenant's calls hold at
//! most their share of the database connections (`TENANT_MAX_CONNECTIONS`), and a list response
//! carries at most so many members (or groups) per resource and per page (`LIST_MAX_MEMBERS`).
//! The gateway caps each tenant's requests in flight in front of this; the statement timeout
//! (`DATABASE_STATEMENT_TIMEOUT_MS`) bounds how long each one holds a connection.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use proto::DomainError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::store::Tenant;

/// How long a call waits for its tenant's share before it is refused as transient: what the
/// pool itself waits for a connection.
const SHARE_WAIT: Duration = infra::ACQUIRE_TIMEOUT;

/// Each tenant's share of this replica's database connections.
#[derive(Clone)]
pub struct Shares {
    per_tenant: u32,
    tenants: Cache<Uuid, Arc<Semaphore>>,
}

/// A tenant, with one of its connection shares for as long as the call lasts.
pub struct TenantCall {
    tenant: Arc<Tenant>,
    _share: OwnedSemaphorePermit,
}

impl Deref for TenantCall {
    type Target = Tenant;

    fn deref(&self) -> &Tenant {
        &self.tenant
    }
}

impl Shares {
    /// `per_tenant` connections for each tenant (at least 1).
    pub fn new(per_tenant: u32) -> Self {
        Shares {
            per_tenant: per_tenant.max(1),
            tenants: Cache::builder().max_capacity(100_000).time_to_idle(Duration::from_secs(600)).build(),
        }
    }

    /// The share of a pool of `pool` connections a tenant gets unless configured: half of it (at
    /// least 1), so that the other tenants always have the other half.
    pub fn default_for(pool: u32) -> u32 {
        (pool / 2).max(1)
    }

    /// Waits for one of the tenant's shares (a transient refusal after [`SHARE_WAIT`]).
    pub async fn enter(&self, tenant: Arc<Tenant>) -> Result<TenantCall, DomainError> {
        let semaphore =
            self.tenants.get_with(tenant.id, async { Arc::new(Semaphore::new(self.per_tenant as usize)) }).await;
        match tokio::time::timeout(SHARE_WAIT, semaphore.acquire_owned()).await {
            Ok(Ok(share)) => Ok(TenantCall { tenant, _share: share }),
            _ => {
                tracing::warn!(tenant = %tenant.id, "a tenant's calls waited too long for its share of the database connections");
                Err(DomainError::unavailable())
            }
        }
    }
}

/// How many members (of a group) or groups (of a user) a list response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCap {
    /// Per resource: a resource with more is listed without them.
    pub per_resource: u32,
    /// Per page, all resources together: past it, the page's next resources are listed without
    /// them.
    pub per_page: u32,
}

impl ListCap {
    /// `per_resource` each, and a page of 100 resources at that cap (Okta pages by 100).
    pub fn new(per_resource: u32) -> Self {
        let per_resource = per_resource.max(1);
        ListCap { per_resource, per_page: per_resource.saturating_mul(100) }
    }

    /// Which resources of a page carry their membership, given how many each has, in page order.
    pub fn chosen(&self, counts: &[i64]) -> Vec<bool> {
        let mut budget = i64::from(self.per_page);
        counts
            .iter()
            .map(|&n| {
                let fits = n <= i64::from(self.per_resource) && n <= budget;
                if fits {
                    budget -= n;
                }
                fits
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_over_the_cap_or_past_the_page_budget_goes_without_its_members() {
        let cap = ListCap { per_resource: 3, per_page: 5 };
        assert_eq!(cap.chosen(&[0, 3, 4, 2, 1, 0]), [true, true, false, true, false, true]);
        assert_eq!(ListCap::new(1000).per_page, 100_000);
    }

    #[tokio::test]
    async fn a_tenant_holds_at_most_its_share_and_another_tenant_is_not_held_up() {
        let shares = Shares::new(2);
        let tenant = |id| {
            Arc::new(Tenant {
                id,
                subdomain: String::new(),
                display_name: String::new(),
                status: "active".into(),
                paused: false,
                adoption_policy: "conflict".into(),
                rate_limit_per_second: None,
                rate_limit_burst: None,
                max_in_flight: None,
                brake_share: 0.0,
                brake_window_secs: 1,
                brake_min_users: 1,
                brake_tripped_at: None,
                brake_released_until: None,
            })
        };
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let first = shares.enter(tenant(a)).await.unwrap();
        let _second = shares.enter(tenant(a)).await.unwrap();
        let third = tokio::spawn({
            let shares = shares.clone();
            let t = tenant(a);
            async move { shares.enter(t).await.map(|_| ()) }
        });
        // Another tenant is served at once while the first has used its share.
        tokio::time::timeout(Duration::from_secs(1), shares.enter(tenant(b))).await.unwrap().unwrap();
        assert!(!third.is_finished(), "a third call of the same tenant waits");
        drop(first);
        third.await.unwrap().unwrap();
        assert_eq!(Shares::default_for(8), 4);
        assert_eq!(Shares::default_for(1), 1);
    }
}
