//! Tenants and their API keys.

use std::sync::Arc;

use proto::{DomainError, ErrorKind};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, db_error};
use crate::apikey;

/// A customer organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: Uuid,
    pub subdomain: String,
    pub display_name: String,
    pub status: String,
    /// What a SCIM POST does with the userName of an admin-created user: `adopt` or `conflict`.
    pub adoption_policy: String,
}

/// A key as listed: never the key itself.
#[derive(Debug, Clone)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

/// A key just issued: the only moment the key exists in clear.
#[derive(Debug)]
pub struct IssuedKey {
    pub id: Uuid,
    pub key: String,
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

fn tenant_from_row(row: &sqlx::postgres::PgRow) -> Result<Tenant, sqlx::Error> {
    Ok(Tenant {
        id: row.try_get("id")?,
        subdomain: row.try_get("subdomain")?,
        display_name: row.try_get("display_name")?,
        status: row.try_get("status")?,
        adoption_policy: row.try_get("adoption_policy")?,
    })
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
        let tenant = Tenant {
            id: Uuid::now_v7(),
            subdomain: subdomain.to_owned(),
            display_name: display_name.to_owned(),
            status: "active".to_owned(),
            adoption_policy: "adopt".to_owned(),
        };
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("INSERT INTO tenants (id, subdomain, display_name) VALUES ($1, $2, $3)")
            .bind(tenant.id)
            .bind(&tenant.subdomain)
            .bind(&tenant.display_name)
            .execute(&mut *tx)
            .await
            .map_err(|e| match e.as_database_error().and_then(|d| d.constraint()) {
                Some("tenants_subdomain_key") => {
                    DomainError::new(ErrorKind::Uniqueness, format!("The tenant {subdomain} already exists."))
                }
                _ => db_error(e),
            })?;
        let key = insert_key(&mut tx, tenant.id, "initial").await?;
        tx.commit().await.map_err(db_error)?;
        Ok((tenant, key))
    }

    /// A tenant by subdomain.
    pub async fn tenant_by_subdomain(&self, subdomain: &str) -> Result<Tenant, DomainError> {
        let row = sqlx::query(
            "SELECT id, subdomain, display_name, status, adoption_policy FROM tenants WHERE subdomain = $1",
        )
        .bind(subdomain)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        match row {
            Some(row) => tenant_from_row(&row).map_err(db_error),
            None => Err(DomainError::not_found(format!("There is no tenant {subdomain}."))),
        }
    }

    /// A tenant by id, cached.
    pub async fn tenant(&self, id: Uuid) -> Result<Arc<Tenant>, DomainError> {
        if let Some(t) = self.tenants.get(&id).await {
            return Ok(t);
        }
        let row = sqlx::query("SELECT id, subdomain, display_name, status, adoption_policy FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        let tenant =
            Arc::new(row.as_ref().map(tenant_from_row).transpose().map_err(db_error)?.ok_or_else(unauthenticated)?);
        self.tenants.insert(id, tenant.clone()).await;
        Ok(tenant)
    }

    /// Sets what a SCIM POST does with the userName of a user the customer's admin created.
    pub async fn set_adoption_policy(&self, subdomain: &str, policy: &str) -> Result<(), DomainError> {
        if !matches!(policy, "adopt" | "conflict") {
            return Err(DomainError::new(ErrorKind::InvalidValue, "The adoption policy is adopt or conflict."));
        }
        let done = sqlx::query("UPDATE tenants SET adoption_policy = $2 WHERE subdomain = $1")
            .bind(subdomain)
            .bind(policy)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(DomainError::not_found(format!("There is no tenant {subdomain}.")));
        }
        self.tenants.invalidate_all();
        Ok(())
    }

    /// Issues another key for a tenant (several live keys let a key rotate without downtime).
    pub async fn issue_key(&self, subdomain: &str, name: &str) -> Result<IssuedKey, DomainError> {
        let tenant = self.tenant_by_subdomain(subdomain).await?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let key = insert_key(&mut tx, tenant.id, name).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(key)
    }

    /// A tenant's keys, newest first.
    pub async fn list_keys(&self, subdomain: &str) -> Result<Vec<ApiKeyInfo>, DomainError> {
        let tenant = self.tenant_by_subdomain(subdomain).await?;
        let rows = sqlx::query(
            "SELECT id, name, prefix, created_at, last_used_at, expires_at, revoked_at
             FROM api_keys WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC",
        )
        .bind(tenant.id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(ApiKeyInfo {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    prefix: r.try_get("prefix")?,
                    created_at: r.try_get("created_at")?,
                    last_used_at: r.try_get("last_used_at")?,
                    expires_at: r.try_get("expires_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }

    /// Revokes a key. Revoking a revoked key changes nothing.
    pub async fn revoke_key(&self, key_id: Uuid) -> Result<(), DomainError> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1")
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(DomainError::not_found(format!("There is no key {key_id}.")));
        }
        Ok(())
    }

    /// The tenant a presented key belongs to. With a subdomain (Basic auth, or a tenant host), the
    /// key must belong to that tenant. Every failure is the same error, so that a caller cannot
    /// tell an unknown tenant from a wrong key.
    pub async fn authenticate(&self, key: &str, subdomain: Option<&str>) -> Result<Tenant, DomainError> {
        let row = sqlx::query(
            "SELECT k.id AS key_id, t.id, t.subdomain, t.display_name, t.status, t.adoption_policy
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL
               AND (k.expires_at IS NULL OR k.expires_at > now())",
        )
        .bind(apikey::hash(key))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .ok_or_else(unauthenticated)?;
        let tenant = tenant_from_row(&row).map_err(db_error)?;
        if tenant.status != "active" || subdomain.is_some_and(|s| s != tenant.subdomain) {
            return Err(unauthenticated());
        }
        let key_id: Uuid = row.try_get("key_id").map_err(db_error)?;
        // At most one write a minute per key: "last used" is for humans, not for auditing.
        sqlx::query(
            "UPDATE api_keys SET last_used_at = now()
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        )
        .bind(key_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(tenant)
    }
}

async fn insert_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant_id: Uuid,
    name: &str,
) -> Result<IssuedKey, DomainError> {
    let new = apikey::generate().map_err(|e| {
        tracing::error!(error = %e, "no randomness for a key");
        DomainError::internal()
    })?;
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(tenant_id)
        .bind(name)
        .bind(&new.prefix)
        .bind(&new.hash)
        .execute(&mut **tx)
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
