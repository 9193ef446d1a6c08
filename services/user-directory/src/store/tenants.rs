//! Tenants (their lifecycle, pause, limits and brake settings) and their API keys. Key rows are
//! tenant-scoped by row-level security; authentication looks keys up by hash across tenants,
//! in a system transaction. Changes gateways must hear about at once (suspension, pause,
//! revocation) are events, written to the outbox in the same transaction.

use std::sync::Arc;

use proto::events::v1::envelope::Payload;
use proto::events::v1::{KeyRevoked, Source, TenantChanged};
use proto::{DomainError, ErrorKind};
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PendingEvent, Store, db_error, end_read, now};
use crate::apikey;

/// A customer organisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: Uuid,
    pub subdomain: String,
    pub display_name: String,
    /// `active` or `suspended` (no credential works).
    pub status: String,
    /// Provisioning paused by an operator: SCIM requests are refused with Retry-After (429 to
    /// Okta, 503 to other clients).
    pub paused: bool,
    /// What a SCIM POST does with the userName of an admin-created user: `adopt` or `conflict`.
    pub adoption_policy: String,
    /// Requests per second and burst; `None` for the deployment's default.
    pub rate_limit_per_second: Option<i32>,
    pub rate_limit_burst: Option<i32>,
    /// Requests in flight at once in each gateway replica; `None` for the deployment's default.
    pub max_in_flight: Option<i32>,
    pub brake_share: f64,
    pub brake_window_secs: i32,
    pub brake_min_users: i32,
    pub brake_tripped_at: Option<OffsetDateTime>,
    pub brake_released_until: Option<OffsetDateTime>,
}

/// A key as listed: never the key itself.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub scopes: Vec<String>,
}

/// What a key may open: the SCIM API (an identity provider's key), and the console and tenant
/// API (an admin's key).
pub const SCOPES: [&str; 2] = ["scim", "admin"];

/// The scopes asked for, checked; none asked for is both (what keys did before scopes existed).
pub fn scopes(asked: &[String]) -> Result<Vec<String>, DomainError> {
    if asked.is_empty() {
        return Ok(SCOPES.iter().map(|s| (*s).to_owned()).collect());
    }
    let mut out: Vec<String> = Vec::new();
    for s in asked {
        let s = s.trim().to_ascii_lowercase();
        if !SCOPES.contains(&s.as_str()) {
            return Err(DomainError::new(ErrorKind::InvalidValue, format!("{s:?} is not a scope: scim or admin.")));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// A key just issued: the only moment the key exists in clear.
#[derive(Debug)]
pub struct IssuedKey {
    pub id: Uuid,
    pub key: String,
}

/// A successful authentication: the tenant, and which key opened it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub tenant: Tenant,
    pub key_id: Uuid,
    pub scopes: Vec<String>,
}

/// Changes an operator makes to a tenant; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantUpdate {
    pub suspended: Option<bool>,
    pub paused: Option<bool>,
    pub adoption_policy: Option<String>,
    pub rate_limit_per_second: Option<i32>,
    pub rate_limit_burst: Option<i32>,
    pub max_in_flight: Option<i32>,
    pub brake_share: Option<f64>,
    pub brake_window_secs: Option<i32>,
    pub brake_min_users: Option<i32>,
}

/// Whether a subdomain is a valid DNS label of ours: lower-case letters, digits and inner hyphens.
pub fn valid_subdomain(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first() != Some(&b'-')
        && b.last() != Some(&b'-')
}

fn unauthenticated() -> DomainError {
    DomainError::new(ErrorKind::Unauthenticated, "The credentials are not valid.")
}

const TENANT_COLUMNS: &str = "t.id, t.subdomain, t.display_name, t.status, t.paused, t.adoption_policy,
    t.rate_limit_per_second, t.rate_limit_burst, t.max_in_flight, t.brake_share, t.brake_window_secs, t.brake_min_users,
    t.brake_tripped_at, t.brake_released_until";

fn tenant_from_row(row: &sqlx::postgres::PgRow) -> Result<Tenant, sqlx::Error> {
    Ok(Tenant {
        id: row.try_get("id")?,
        subdomain: row.try_get("subdomain")?,
        display_name: row.try_get("display_name")?,
        status: row.try_get("status")?,
        paused: row.try_get("paused")?,
        adoption_policy: row.try_get("adoption_policy")?,
        rate_limit_per_second: row.try_get("rate_limit_per_second")?,
        rate_limit_burst: row.try_get("rate_limit_burst")?,
        max_in_flight: row.try_get("max_in_flight")?,
        brake_share: row.try_get("brake_share")?,
        brake_window_secs: row.try_get("brake_window_secs")?,
        brake_min_users: row.try_get("brake_min_users")?,
        brake_tripped_at: row.try_get("brake_tripped_at")?,
        brake_released_until: row.try_get("brake_released_until")?,
    })
}

fn no_tenant(subdomain: &str) -> DomainError {
    DomainError::not_found(format!("There is no tenant {subdomain}."))
}

impl Store {
    /// Creates a tenant and its first key.
    pub async fn create_tenant(&self, subdomain: &str, display_name: &str) -> Result<(Tenant, IssuedKey), DomainError> {
        if !valid_subdomain(subdomain) {
            return Err(DomainError::new(
                ErrorKind::InvalidValue,
                "A subdomain is 1 to 63 lower-case letters, digits or inner hyphens.",
            ));
        }
        let id = Uuid::now_v7();
        let mut tx = self.system().await.map_err(db_error)?;
        sqlx::query("INSERT INTO tenants (id, subdomain, display_name) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(subdomain)
            .bind(display_name)
            .execute(&mut *tx)
            .await
            .map_err(|e| match e.as_database_error().and_then(|d| d.constraint()) {
                Some("tenants_subdomain_key") => {
                    DomainError::new(ErrorKind::Uniqueness, format!("The tenant {subdomain} already exists."))
                }
                _ => db_error(e),
            })?;
        let key = insert_key(&mut tx, id, "initial", None, &scopes(&[])?).await?;
        self.commit(tx).await?;
        Ok((self.tenant_by_subdomain(subdomain).await?, key))
    }

    /// A tenant by subdomain (never cached: for admin commands).
    pub async fn tenant_by_subdomain(&self, subdomain: &str) -> Result<Tenant, DomainError> {
        let query =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TENANT_COLUMNS} FROM tenants t WHERE t.subdomain = $1")))
                .bind(subdomain);
        let row = self
            .single(async |c| query.fetch_optional(c).await)
            .await
            .map_err(db_error)?
            .ok_or_else(|| no_tenant(subdomain))?;
        tenant_from_row(&row).map_err(db_error)
    }

    /// A tenant by id, cached briefly (changes reach other replicas within the cache's life).
    pub async fn tenant(&self, id: Uuid) -> Result<Arc<Tenant>, DomainError> {
        if let Some(t) = self.tenants.get(&id).await {
            return Ok(t);
        }
        let query = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TENANT_COLUMNS} FROM tenants t WHERE t.id = $1")))
            .bind(id);
        let row = self.single(async |c| query.fetch_optional(c).await).await.map_err(db_error)?;
        let tenant =
            Arc::new(row.as_ref().map(tenant_from_row).transpose().map_err(db_error)?.ok_or_else(unauthenticated)?);
        self.tenants.insert(id, tenant.clone()).await;
        Ok(tenant)
    }

    /// Changes a tenant; a change of status or pause is an event gateways act on at once.
    pub async fn update_tenant(&self, subdomain: &str, u: &TenantUpdate) -> Result<Tenant, DomainError> {
        if u.adoption_policy.as_deref().is_some_and(|p| !matches!(p, "adopt" | "conflict")) {
            return Err(DomainError::new(ErrorKind::InvalidValue, "The adoption policy is adopt or conflict."));
        }
        if u.brake_share.is_some_and(|s| !(s > 0.0 && s <= 1.0)) {
            return Err(DomainError::new(ErrorKind::InvalidValue, "The brake share is above 0 and at most 1."));
        }
        if [u.rate_limit_per_second, u.rate_limit_burst, u.max_in_flight, u.brake_window_secs]
            .iter()
            .flatten()
            .any(|v| *v <= 0)
            || u.brake_min_users.is_some_and(|v| v < 0)
        {
            return Err(DomainError::new(ErrorKind::InvalidValue, "Limits and windows are positive numbers."));
        }
        if u.brake_window_secs.is_some_and(|w| w > 7 * 24 * 3600) {
            return Err(DomainError::new(ErrorKind::InvalidValue, "The brake window is at most a week (604800 s)."));
        }
        let before = self.tenant_by_subdomain(subdomain).await?;
        let mut tx = self.system().await.map_err(db_error)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tenants t SET
                status = coalesce(CASE WHEN $2 THEN 'suspended' WHEN NOT $2 THEN 'active' END, status),
                paused = coalesce($3, paused),
                adoption_policy = coalesce($4, adoption_policy),
                rate_limit_per_second = coalesce($5, rate_limit_per_second),
                rate_limit_burst = coalesce($6, rate_limit_burst),
                brake_share = coalesce($7, brake_share),
                brake_window_secs = coalesce($8, brake_window_secs),
                brake_min_users = coalesce($9, brake_min_users),
                max_in_flight = coalesce($10, max_in_flight)
             WHERE subdomain = $1 RETURNING {TENANT_COLUMNS}"
        )))
        .bind(subdomain)
        .bind(u.suspended)
        .bind(u.paused)
        .bind(&u.adoption_policy)
        .bind(u.rate_limit_per_second)
        .bind(u.rate_limit_burst)
        .bind(u.brake_share)
        .bind(u.brake_window_secs)
        .bind(u.brake_min_users)
        .bind(u.max_in_flight)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(|| no_tenant(subdomain))?;
        let after = tenant_from_row(&row).map_err(db_error)?;
        // Gateways cache what they enforce (status, pause, rate limits): any change of it is news.
        let limits = |t: &Tenant| (t.rate_limit_per_second, t.rate_limit_burst, t.max_in_flight);
        if after.status != before.status || after.paused != before.paused || limits(&after) != limits(&before) {
            let payload = Payload::TenantChanged(TenantChanged { status: after.status.clone(), paused: after.paused });
            self.tenant_event(&mut tx, &after, payload).await?;
        }
        self.commit(tx).await?;
        self.tenants.invalidate(&after.id).await;
        Ok(after)
    }

    /// Sets what a SCIM create does with the userName of a user the customer's admin created.
    pub async fn set_adoption_policy(&self, subdomain: &str, policy: &str) -> Result<(), DomainError> {
        let update = TenantUpdate { adoption_policy: Some(policy.to_owned()), ..Default::default() };
        self.update_tenant(subdomain, &update).await.map(|_| ())
    }

    /// Writes a tenant-level event (its resource is the tenant, or a key of it).
    pub(crate) async fn tenant_event(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        payload: Payload,
    ) -> Result<(), DomainError> {
        let event = PendingEvent {
            resource_id: tenant.id,
            resource_version: 0,
            source: Source::Unspecified,
            occurred_at: now(),
            payload,
        };
        self.append_event(tx, tenant, event).await.map(|_| ())
    }

    /// Issues another key for a tenant (several live keys let a key rotate without downtime),
    /// optionally expiring, with the scopes asked for (none: both).
    pub async fn issue_key(
        &self,
        subdomain: &str,
        name: &str,
        expires_at: Option<OffsetDateTime>,
        scopes: &[String],
    ) -> Result<IssuedKey, DomainError> {
        let tenant = self.tenant_by_subdomain(subdomain).await?;
        self.issue_key_of(&tenant, name, expires_at, scopes).await
    }

    /// [`Store::issue_key`] for a tenant already resolved (the console's).
    pub async fn issue_key_of(
        &self,
        tenant: &Tenant,
        name: &str,
        expires_at: Option<OffsetDateTime>,
        scopes: &[String],
    ) -> Result<IssuedKey, DomainError> {
        let scopes = self::scopes(scopes)?;
        if expires_at.is_some_and(|e| e <= OffsetDateTime::now_utc()) {
            return Err(DomainError::new(ErrorKind::InvalidValue, "A key's expiry is in the future."));
        }
        if name.chars().count() > 100 {
            return Err(DomainError::new(ErrorKind::InvalidValue, "A key's name is at most 100 characters."));
        }
        let mut tx = self.scoped(tenant).await?;
        let key = insert_key(&mut tx, tenant.id, name, expires_at, &scopes).await?;
        self.commit(tx).await?;
        Ok(key)
    }

    /// A tenant's keys, newest first.
    pub async fn list_keys(&self, subdomain: &str) -> Result<Vec<ApiKeyInfo>, DomainError> {
        self.list_keys_of(&self.tenant_by_subdomain(subdomain).await?).await
    }

    /// [`Store::list_keys`] for a tenant already resolved.
    pub async fn list_keys_of(&self, tenant: &Tenant) -> Result<Vec<ApiKeyInfo>, DomainError> {
        let mut tx = self.scoped(tenant).await?;
        let keys = sqlx::query_as(
            "SELECT id, name, prefix, created_at, last_used_at, expires_at, revoked_at, scopes
             FROM api_keys WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC",
        )
        .bind(tenant.id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        end_read(tx);
        Ok(keys)
    }

    /// Revokes a key; gateways hear of it through an event and stop accepting it at once (their
    /// cache's life, a few seconds, bounds it if the event is missed). Revoking twice is fine.
    /// With `of`, only a key of that tenant (another tenant's is not found).
    pub async fn revoke_key(&self, key_id: Uuid, of: Option<&Tenant>) -> Result<(), DomainError> {
        let mut tx = self.system().await.map_err(db_error)?;
        // The tenant comes with the key, on the transaction's connection: looking it up (the
        // cache may not have it) would wait for a second connection while holding this one.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE api_keys k SET revoked_at = coalesce(k.revoked_at, now()) FROM tenants t
             WHERE k.id = $1 AND ($2::uuid IS NULL OR k.tenant_id = $2) AND t.id = k.tenant_id
             RETURNING {TENANT_COLUMNS}"
        )))
        .bind(key_id)
        .bind(of.map(|t| t.id))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let row = row.ok_or_else(|| DomainError::not_found(format!("There is no key {key_id}.")))?;
        let tenant = tenant_from_row(&row).map_err(db_error)?;
        let event = PendingEvent {
            resource_id: key_id,
            resource_version: 0,
            source: Source::Unspecified,
            occurred_at: now(),
            payload: Payload::KeyRevoked(KeyRevoked {}),
        };
        self.append_event(&mut tx, &tenant, event).await?;
        self.commit(tx).await
    }

    /// The tenant a presented key belongs to. With a subdomain (Basic auth, or a tenant host), the
    /// key must belong to that tenant. Every failure is the same error, so that a caller cannot
    /// tell an unknown tenant, a wrong, revoked or expired key, or a suspended tenant apart.
    pub async fn authenticate(&self, key: &str, subdomain: Option<&str>) -> Result<Authenticated, DomainError> {
        let mut tx = self.system().await.map_err(db_error)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT k.id AS key_id, k.scopes AS key_scopes, {TENANT_COLUMNS}
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL
               AND (k.expires_at IS NULL OR k.expires_at > now())"
        )))
        .bind(apikey::hash(key))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(unauthenticated)?;
        let tenant = tenant_from_row(&row).map_err(db_error)?;
        if tenant.status != "active" || subdomain.is_some_and(|s| s != tenant.subdomain) {
            return Err(unauthenticated());
        }
        let key_id: Uuid = row.try_get("key_id").map_err(db_error)?;
        let scopes: Vec<String> = row.try_get("key_scopes").map_err(db_error)?;
        // At most one write a minute per key: "last used" is for humans, not for auditing.
        sqlx::query(
            "UPDATE api_keys SET last_used_at = now()
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        )
        .bind(key_id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        // No event written: nothing for the relay.
        tx.commit().await.map_err(db_error)?;
        Ok(Authenticated { tenant, key_id, scopes })
    }
}

async fn insert_key(
    tx: &mut PgConnection,
    tenant_id: Uuid,
    name: &str,
    expires_at: Option<OffsetDateTime>,
    scopes: &[String],
) -> Result<IssuedKey, DomainError> {
    let new = apikey::generate().map_err(|e| {
        tracing::error!(error = %e, "no randomness for a key");
        DomainError::internal()
    })?;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, expires_at, scopes)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(name)
    .bind(&new.prefix)
    .bind(&new.hash)
    .bind(expires_at)
    .bind(scopes)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    Ok(IssuedKey { id, key: new.key })
}

#[cfg(test)]
mod tests {
    use super::valid_subdomain;

    #[test]
    fn subdomains_are_dns_labels() {
        for ok in ["acme", "a", "acme-corp", "a1"] {
            assert!(valid_subdomain(ok), "{ok}");
        }
        for bad in ["", "-acme", "acme-", "Acme", "ac_me", "ac.me", &"a".repeat(64)] {
            assert!(!valid_subdomain(bad), "{bad}");
        }
    }
}
