//! The mass-deprovision brake. A misconfigured identity provider (a rule that unassigns
//! everyone) must not archive a customer's whole workforce in a minute: when more than the
//! tenant's `brake_share` of its active users (and at least `brake_min_users`) would be
//! deactivated within `brake_window_secs`, the brake trips. Further deactivations (and deletions
//! of active users) are then held, answered 503 with Retry-After, and a `tenant.brake_tripped`
//! event is raised. An operator releases them (they apply, and deactivations flow for one window)
//! or rejects them (they are dropped; the identity provider's retries keep being held until the
//! window passes).

use proto::events::v1::BrakeTripped;
use proto::events::v1::envelope::Payload;
use proto::{DomainError, ErrorKind};
use serde_json::Value;
use sqlx::{Postgres, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, Tenant, db_error};

/// What a held change was, to apply it on release.
#[derive(Debug, Clone)]
pub enum HeldChange {
    /// A PATCH (its sanitised body).
    Patch(Value),
    /// A PUT (the document).
    Replace(Value),
    Delete,
}

impl HeldChange {
    fn kind(&self) -> &'static str {
        match self {
            HeldChange::Patch(_) => "patch",
            HeldChange::Replace(_) => "replace",
            HeldChange::Delete => "delete",
        }
    }

    fn body(&self) -> Option<&Value> {
        match self {
            HeldChange::Patch(v) | HeldChange::Replace(v) => Some(v),
            HeldChange::Delete => None,
        }
    }
}

/// Whether a deactivation is subject to the brake.
#[derive(Debug, Clone)]
pub enum Brake {
    Enforce(HeldChange),
    /// An operator's release: applies whatever the brake says.
    Bypass,
}

/// A held change as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HeldInfo {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: String,
    pub held_at: OffsetDateTime,
}

enum Verdict {
    Allow,
    /// Trips now, with (recent deactivations, active users).
    Trip(i64, i64),
    /// Tripped earlier in the window.
    Tripped,
}

fn held_error(window_secs: i32) -> DomainError {
    DomainError::new(
        ErrorKind::Held,
        format!(
            "Deactivations are held for this tenant: too many of its users were deactivated within {} minutes, which looks like a misconfiguration. An operator must release or reject the held changes.",
            window_secs / 60
        ),
    )
}

impl Store {
    /// Decides, inside a deactivating transaction, whether the deactivation may proceed. Takes a
    /// per-tenant lock so that concurrent deactivations are counted one after another.
    async fn brake_verdict(&self, tx: &mut Transaction<'_, Postgres>, tenant: &Tenant) -> Result<Verdict, DomainError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('brake:' || $1::text, 0))")
            .bind(tenant.id)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        let row = sqlx::query(
            "SELECT brake_share, brake_window_secs, brake_min_users,
                    coalesce(brake_released_until > now(), false) AS released,
                    coalesce(brake_tripped_at > now() - make_interval(secs => brake_window_secs), false) AS tripped,
                    (SELECT count(DISTINCT d.user_id) FROM deprovisions d WHERE d.tenant_id = t.id
                        AND d.at > now() - make_interval(secs => t.brake_window_secs)) AS recent,
                    (SELECT count(*) FROM users u WHERE u.tenant_id = t.id AND u.active) AS active
             FROM tenants t WHERE t.id = $1",
        )
        .bind(tenant.id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?;
        let get = |c: &str| -> Result<i64, DomainError> { row.try_get(c).map_err(db_error) };
        let released: bool = row.try_get("released").map_err(db_error)?;
        let tripped: bool = row.try_get("tripped").map_err(db_error)?;
        if released {
            return Ok(Verdict::Allow);
        }
        if tripped {
            return Ok(Verdict::Tripped);
        }
        let share: f64 = row.try_get("brake_share").map_err(db_error)?;
        let min_users = i64::from(row.try_get::<i32, _>("brake_min_users").map_err(db_error)?);
        let (recent, active) = (get("recent")?, get("active")?);
        // The share of those active at the window's start (still active, or deactivated since).
        let allowed = min_users.max((share * (active + recent) as f64).ceil() as i64);
        Ok(if recent + 1 > allowed { Verdict::Trip(recent, active) } else { Verdict::Allow })
    }

    /// Lets a deprovisioning (the deactivation or deletion of an active user, at `version`)
    /// through, recording it in the ledger the brake counts, or holds it: then the transaction is
    /// rolled back, the change is kept for an operator, and the error to answer is returned.
    pub(crate) async fn brake(
        &self,
        tx: Transaction<'static, Postgres>,
        tenant: &Tenant,
        user_id: Uuid,
        version: i64,
        brake: &Brake,
    ) -> Result<Transaction<'static, Postgres>, DomainError> {
        let mut tx = tx;
        // What is to be held, and why; nothing when the brake lets it through.
        let hold = match brake {
            Brake::Bypass => None,
            Brake::Enforce(change) => match self.brake_verdict(&mut tx, tenant).await? {
                Verdict::Allow => None,
                verdict => Some((change, verdict)),
            },
        };
        let Some((change, verdict)) = hold else {
            sqlx::query("INSERT INTO deprovisions (tenant_id, user_id) VALUES ($1, $2)")
                .bind(tenant.id)
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            return Ok(tx);
        };
        tx.rollback().await.map_err(db_error)?;
        let mut hold = self.scoped(tenant).await?;
        sqlx::query(
            "INSERT INTO held_changes (tenant_id, id, user_id, kind, body, user_version) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, user_id) DO UPDATE
             SET kind = excluded.kind, body = excluded.body, user_version = excluded.user_version, held_at = now()",
        )
        .bind(tenant.id)
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(change.kind())
        .bind(change.body().map(sqlx::types::Json))
        .bind(version)
        .execute(&mut *hold)
        .await
        .map_err(db_error)?;
        if let Verdict::Trip(recent, active) = verdict {
            let mut system = self.system().await.map_err(db_error)?;
            sqlx::query("UPDATE tenants SET brake_tripped_at = now(), brake_released_until = NULL WHERE id = $1")
                .bind(tenant.id)
                .execute(&mut *system)
                .await
                .map_err(db_error)?;
            system.commit().await.map_err(db_error)?;
            let payload = Payload::BrakeTripped(BrakeTripped {
                recent_deactivations: recent,
                active_users: active,
                window_secs: tenant.brake_window_secs,
            });
            self.tenant_event(&mut hold, tenant, payload).await?;
            tracing::warn!(tenant = %tenant.subdomain, recent, active, "mass-deprovision brake tripped");
            crate::observe::metrics()
                .brake_trips
                .add(1, &[telemetry::KeyValue::new("tenant", tenant.subdomain.clone())]);
        }
        hold.commit().await.map_err(db_error)?;
        Err(held_error(tenant.brake_window_secs))
    }

    /// The changes the brake holds for a tenant, oldest first.
    pub async fn list_held(&self, subdomain: &str) -> Result<Vec<HeldInfo>, DomainError> {
        let tenant = self.tenant_by_subdomain(subdomain).await?;
        let mut tx = self.scoped(&tenant).await?;
        let held = sqlx::query_as(
            "SELECT id, user_id, kind, held_at FROM held_changes WHERE tenant_id = $1 ORDER BY held_at, id",
        )
        .bind(tenant.id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(held)
    }

    /// Releases (applies) or rejects (drops) held changes: those named, or all. A release also
    /// lets deactivations flow for one window. Each released change applies only to the user as
    /// they were when it was held (a later write by the identity provider wins), and is forgotten
    /// only once applied, so a crash mid-release leaves the rest held. Returns how many were
    /// resolved.
    pub async fn resolve_held(&self, subdomain: &str, release: bool, ids: &[Uuid]) -> Result<u32, DomainError> {
        let tenant = self.tenant_by_subdomain(subdomain).await?;
        let mut tx = self.scoped(&tenant).await?;
        let rows = sqlx::query(
            "SELECT id, user_id, kind, body, user_version FROM held_changes
             WHERE tenant_id = $1 AND (cardinality($2::uuid[]) = 0 OR id = ANY($2)) ORDER BY held_at, id",
        )
        .bind(tenant.id)
        .bind(ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        let held: Vec<Uuid> = rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>().map_err(db_error)?;
        if !release {
            self.forget_held(&tenant, &held).await?;
        } else {
            let mut system = self.system().await.map_err(db_error)?;
            sqlx::query(
                "UPDATE tenants SET brake_tripped_at = NULL,
                    brake_released_until = now() + make_interval(secs => brake_window_secs) WHERE id = $1",
            )
            .bind(tenant.id)
            .execute(&mut *system)
            .await
            .map_err(db_error)?;
            system.commit().await.map_err(db_error)?;
            for (r, held_id) in rows.iter().zip(&held) {
                let user: Uuid = r.try_get("user_id").map_err(db_error)?;
                let version: Option<i64> = r.try_get("user_version").map_err(db_error)?;
                let kind: String = r.try_get("kind").map_err(db_error)?;
                let body: Option<sqlx::types::Json<Value>> = r.try_get("body").map_err(db_error)?;
                let body = body.map(|b| b.0).unwrap_or(Value::Null);
                let id = user.to_string();
                let applied = match kind.as_str() {
                    "patch" => match scim::PatchRequest::parse(&body) {
                        Ok(p) => self.patch_user_braked(&tenant, &id, &p, version, Brake::Bypass).await.map(|_| ()),
                        Err(e) => Err(e.into()),
                    },
                    "replace" => match scim::UserDocument::from_request(body) {
                        Ok(doc) => {
                            self.replace_user_braked(&tenant, &id, doc, version, Brake::Bypass).await.map(|_| ())
                        }
                        Err(e) => Err(e.into()),
                    },
                    _ => self.delete_user_braked(&tenant, &id, version, Brake::Bypass).await,
                };
                if let Err(e) = applied {
                    // The user may have changed or gone since: the identity provider's state wins.
                    tracing::warn!(tenant = %tenant.subdomain, kind, error = %e, "a released change no longer applies");
                }
                self.forget_held(&tenant, std::slice::from_ref(held_id)).await?;
            }
        }
        Ok(u32::try_from(held.len()).unwrap_or(u32::MAX))
    }

    async fn forget_held(&self, tenant: &Tenant, ids: &[Uuid]) -> Result<(), DomainError> {
        let mut tx = self.scoped(tenant).await?;
        sqlx::query("DELETE FROM held_changes WHERE tenant_id = $1 AND id = ANY($2)")
            .bind(tenant.id)
            .bind(ids)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    /// Forgets deprovisions older than any brake window (a week), in batches; returns how many.
    pub async fn prune_deprovisions(&self) -> Result<u64, sqlx::Error> {
        let mut tx = self.system().await?;
        let done = sqlx::query(
            "DELETE FROM deprovisions WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM deprovisions WHERE at < now() - interval '7 days' LIMIT 10000))",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(done)
    }
}
