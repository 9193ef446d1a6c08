//! The mass-deprovision brake. A misconfigured identity provider (a rule that unassigns
//! everyone) must not archive a customer's whole workforce in a minute: when more than the
//! tenant's `brake_share` of its active users (and at least `brake_min_users`) would be
//! deactivated within `brake_window_secs`, the brake trips. Further deactivations (and deletions
//! of active users) are then held, answered 503 with Retry-After, and a `tenant.brake_tripped`
//! event is raised. An operator releases them (they apply, and deactivations flow for one window)
//! or rejects them (they are dropped; the identity provider's retries keep being held until the
//! window passes).

use infra::Transaction;
use proto::events::v1::BrakeTripped;
use proto::events::v1::envelope::Payload;
use proto::{DomainError, ErrorKind};
use serde_json::Value;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, Tenant, db_error, end_read};

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
    /// The user's userName, if the user still exists.
    pub user_name: Option<String>,
}

/// What `brake_deprovision` (migration 0014) answered.
enum Verdict {
    Allow,
    /// Trips now, with (recent deactivations, active users).
    Trip(i64, i64),
    /// Tripped earlier in the window.
    Tripped,
    /// The count moved past its margin while the tenant's lock was awaited.
    Unavailable,
}

/// Whether a released change failed for good: the user is gone, is no longer at the version the
/// change was held at, or the change is not valid for them any more. Then it is forgotten; after
/// any other failure (one a retry may get past) it stays held.
fn never_applies(e: &DomainError) -> bool {
    match e.kind {
        ErrorKind::NotFound
        | ErrorKind::VersionMismatch
        | ErrorKind::Uniqueness
        | ErrorKind::InvalidValue
        | ErrorKind::InvalidFilter
        | ErrorKind::InvalidSyntax
        | ErrorKind::InvalidPath
        | ErrorKind::NoTarget
        | ErrorKind::Mutability
        | ErrorKind::TooMany => true,
        ErrorKind::Unauthenticated
        | ErrorKind::Forbidden
        | ErrorKind::RateLimited
        | ErrorKind::Paused
        | ErrorKind::Held
        | ErrorKind::Unavailable
        | ErrorKind::Internal => false,
    }
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
    /// Decides, inside a deprovisioning transaction, whether the deprovision may proceed, and if
    /// so records it in the ledger: one call of `brake_deprovision` (migration 0014, which says
    /// how it counts and locks).
    async fn brake_verdict(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        user_id: Uuid,
    ) -> Result<Verdict, DomainError> {
        let row = sqlx::query("SELECT verdict, recent, active FROM brake_deprovision($1, $2)")
            .bind(tenant.id)
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let read = || -> Result<Verdict, sqlx::Error> {
            Ok(match row.try_get::<&str, _>("verdict")? {
                "allow" => Verdict::Allow,
                "tripped" => Verdict::Tripped,
                "trip" => Verdict::Trip(row.try_get("recent")?, row.try_get("active")?),
                "unavailable" => Verdict::Unavailable,
                other => return Err(sqlx::Error::Protocol(format!("unknown brake verdict {other:?}"))),
            })
        };
        read().map_err(db_error)
    }

    /// Lets a deprovisioning (the deactivation or deletion of an active user, at `version`)
    /// through, recording it in the ledger the brake counts, or holds it: then the transaction is
    /// rolled back, the change is kept for an operator, and the error to answer is returned.
    pub(crate) async fn brake(
        &self,
        mut tx: Transaction,
        tenant: &Tenant,
        user_id: Uuid,
        version: i64,
        brake: &Brake,
    ) -> Result<Transaction, DomainError> {
        let Brake::Enforce(change) = brake else {
            sqlx::query("INSERT INTO deprovisions (tenant_id, user_id) VALUES ($1, $2)")
                .bind(tenant.id)
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            return Ok(tx);
        };
        let verdict = match self.brake_verdict(&mut tx, tenant, user_id).await? {
            // The ledger row is written.
            Verdict::Allow => return Ok(tx),
            Verdict::Unavailable => {
                // More deprovisions committed between the guess and the lock than the margin
                // allowed: this one held the shared lock and could not be counted exactly. Its
                // retry is.
                tracing::warn!(tenant = %tenant.subdomain, "the brake's count moved past its margin during one deprovision; answered 503");
                return Err(DomainError::unavailable());
            }
            verdict => verdict,
        };
        tx.rollback().await.map_err(db_error)?;
        // The tenant is marked tripped before the change is held, each in a transaction of its
        // own and one after the other: a request never holds one connection while it waits for
        // another (with every connection held by a tripping deprovision waiting for a second,
        // the pool would wait out its timeout). A crash in between leaves the tenant tripped and
        // this change unheld, as before: the identity provider's retry is held.
        if let Verdict::Trip(..) = verdict {
            let mut system = self.system().await.map_err(db_error)?;
            sqlx::query("UPDATE tenants SET brake_tripped_at = now(), brake_released_until = NULL WHERE id = $1")
                .bind(tenant.id)
                .execute(&mut *system)
                .await
                .map_err(db_error)?;
            // No event in it (the hold's transaction writes `brake.tripped`): nothing to wake.
            system.commit().await.map_err(db_error)?;
        }
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
        self.commit(hold).await?;
        Err(held_error(tenant.brake_window_secs))
    }

    /// The changes the brake holds for a tenant, oldest first.
    pub async fn list_held(&self, subdomain: &str) -> Result<Vec<HeldInfo>, DomainError> {
        self.list_held_of(&self.tenant_by_subdomain(subdomain).await?).await
    }

    /// [`Store::list_held`] for a tenant already resolved (the console's).
    pub async fn list_held_of(&self, tenant: &Tenant) -> Result<Vec<HeldInfo>, DomainError> {
        let mut tx = self.scoped(tenant).await?;
        let held = sqlx::query_as(
            "SELECT h.id, h.user_id, h.kind, h.held_at, u.user_name FROM held_changes h
             LEFT JOIN users u ON u.tenant_id = h.tenant_id AND u.id = h.user_id
             WHERE h.tenant_id = $1 ORDER BY h.held_at, h.id",
        )
        .bind(tenant.id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        end_read(tx);
        Ok(held)
    }

    /// Releases (applies) or rejects (drops) held changes: those named, or all. A release also
    /// lets deactivations flow for one window. Each released change applies only to the user as
    /// they were when it was held (a later write by the identity provider wins), and is forgotten
    /// only once applied or found never to apply (the user gone or changed since), so a crash
    /// mid-release leaves the rest held. A change that fails otherwise (the database unavailable,
    /// a timeout, a conflict) stops the release with that error: it and the ones after it stay
    /// held, to be released again. Returns how many were resolved.
    pub async fn resolve_held(&self, subdomain: &str, release: bool, ids: &[Uuid]) -> Result<u32, DomainError> {
        self.resolve_held_of(&self.tenant_by_subdomain(subdomain).await?, release, ids).await
    }

    /// [`Store::resolve_held`] for a tenant already resolved.
    pub async fn resolve_held_of(&self, tenant: &Tenant, release: bool, ids: &[Uuid]) -> Result<u32, DomainError> {
        let tenant = tenant.clone();
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
        self.commit(tx).await?;
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
            self.commit(system).await?;
            for (r, held_id) in rows.iter().zip(&held) {
                let user: Uuid = r.try_get("user_id").map_err(db_error)?;
                let version: Option<i64> = r.try_get("user_version").map_err(db_error)?;
                let kind: String = r.try_get("kind").map_err(db_error)?;
                let body: Option<sqlx::types::Json<Value>> = r.try_get("body").map_err(db_error)?;
                let body = body.map(|b| b.0).unwrap_or(Value::Null);
                let id = user.to_string();
                let applied = match kind.as_str() {
                    "patch" => match scim::PatchRequest::parse(&body) {
                        Ok(p) => {
                            self.patch_user_braked(&tenant, &id, &p, version, Brake::Bypass, false).await.map(|_| ())
                        }
                        Err(e) => Err(e.into()),
                    },
                    "replace" => match scim::UserDocument::from_request(body) {
                        Ok(doc) => {
                            self.replace_user_braked(&tenant, &id, doc, version, Brake::Bypass, false).await.map(|_| ())
                        }
                        Err(e) => Err(e.into()),
                    },
                    _ => self.delete_user_braked(&tenant, &id, version, Brake::Bypass).await,
                };
                match applied {
                    Ok(()) => {}
                    // The user may have changed or gone since: the identity provider's state wins.
                    Err(e) if never_applies(&e) => {
                        tracing::warn!(tenant = %tenant.subdomain, kind, error = %e, "a released change no longer applies");
                    }
                    // Not now (the database unavailable, a lock or statement timeout, a conflict):
                    // it stays held, and so do the ones after it, in order, for the next release.
                    // Applying again is safe: a change that did commit finds the user at a later
                    // version, and is then forgotten as stale.
                    Err(e) => {
                        tracing::warn!(tenant = %tenant.subdomain, kind, held = %held_id, error = %e, "a released change could not be applied now; it stays held");
                        return Err(e);
                    }
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
        self.commit(tx).await
    }

    /// Forgets deprovisions older than any brake window (a week), in batches, and their tally;
    /// returns how many.
    pub async fn prune_deprovisions(&self) -> Result<u64, sqlx::Error> {
        let mut tx = self.system().await?;
        sqlx::query("DELETE FROM deprovision_tally WHERE minute < now() - interval '7 days 1 minute'")
            .execute(&mut *tx)
            .await?;
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
