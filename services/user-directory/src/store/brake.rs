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

enum Verdict {
    Allow,
    /// Trips now, with (recent deactivations, active users).
    Trip(i64, i64),
    /// Tripped earlier in the window.
    Tripped,
}

/// Whether one more deprovision may pass when `recent` happened in the window and `active` users
/// are active: up to `share` of those active at the window's start (still active, or deprovisioned
/// since), and always up to `min_users`.
fn brake_decision(share: f64, min_users: i64, recent: i64, active: i64) -> Verdict {
    let allowed = min_users.max((share * (active + recent) as f64).ceil() as i64);
    if recent + 1 > allowed { Verdict::Trip(recent, active) } else { Verdict::Allow }
}

/// How `Store::brake_state` counts the window's deprovisions.
#[derive(Debug, Clone, Copy)]
enum Count {
    /// From the tally (migration 0013): every ledger row of the window's minutes, so a user
    /// deprovisioned twice counts twice. Never below the exact count; its cost does not grow with
    /// the window's deprovisions.
    AtMost,
    /// The distinct users of the ledger's window.
    Exactly,
}

struct BrakeState {
    released: bool,
    tripped: bool,
    share: f64,
    min_users: i64,
    /// The deprovisions in the window, as `Count` says.
    recent: i64,
    /// How many deprovisions could be in flight unseen: the server's connection limit.
    slack: i64,
}

impl BrakeState {
    /// The verdict when no count is needed: released (everything passes) or tripped (everything
    /// is held).
    fn settled(&self) -> Option<Verdict> {
        if self.released {
            Some(Verdict::Allow)
        } else if self.tripped {
            Some(Verdict::Tripped)
        } else {
            None
        }
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
    /// Decides, inside a deprovisioning transaction, whether the deprovision may proceed.
    ///
    /// Counting must see every deprovision that could commit beside this one. Near the limit,
    /// deprovisions are counted one after another under an exclusive per-tenant lock (held to
    /// commit). Far from it, where even every other connection the server allows deprovisioning
    /// in this tenant unseen could not reach the limit, they take the lock shared, so that they
    /// neither wait for each other's commits nor overlap an exact count: a tenant's deprovisions
    /// are not serialised until they matter.
    async fn brake_verdict(&self, tx: &mut Transaction<'_, Postgres>, tenant: &Tenant) -> Result<Verdict, DomainError> {
        let guess = self.brake_state(tx, tenant, Count::AtMost).await?;
        if let Some(settled) = guess.settled() {
            return Ok(settled);
        }
        // Far enough even were as many deprovisions again to commit before the lock is taken: then
        // the count under the shared lock cannot find the limit near (which could only be
        // answered 503). Closer than that, the exclusive lock.
        let far = matches!(self.brake_count(tx, tenant, &guess, 2 * guess.slack).await?, Verdict::Allow);
        let lock = if far {
            "SELECT pg_advisory_xact_lock_shared(hashtextextended('brake:' || $1::text, 0))"
        } else {
            "SELECT pg_advisory_xact_lock(hashtextextended('brake:' || $1::text, 0))"
        };
        sqlx::query(lock).bind(tenant.id).execute(&mut **tx).await.map_err(db_error)?;
        // Counted again under the lock: what committed while it was awaited is seen now; near
        // the limit, exactly.
        let state = self.brake_state(tx, tenant, if far { Count::AtMost } else { Count::Exactly }).await?;
        if let Some(settled) = state.settled() {
            return Ok(settled);
        }
        if !far {
            return self.brake_count(tx, tenant, &state, 0).await;
        }
        match self.brake_count(tx, tenant, &state, state.slack).await? {
            Verdict::Allow => Ok(Verdict::Allow),
            // More than `slack` deprovisions committed between the guess and the lock: this one
            // holds the shared lock and cannot be counted exactly. Its retry is.
            _ => {
                tracing::warn!(tenant = %tenant.subdomain, "the brake's count moved past its margin during one deprovision; answered 503");
                Err(DomainError::unavailable())
            }
        }
    }

    /// The tenant's brake settings and its deprovisions in the window, counted as `count` says.
    async fn brake_state(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        tenant: &Tenant,
        count: Count,
    ) -> Result<BrakeState, DomainError> {
        macro_rules! brake_state {
            ($recent:literal) => {
                concat!(
                    "SELECT brake_share, brake_min_users,
                        coalesce(brake_released_until > now(), false) AS released,
                        coalesce(brake_tripped_at > now() - make_interval(secs => brake_window_secs), false) AS tripped,
                        current_setting('max_connections')::bigint AS slack, ",
                    $recent,
                    " AS recent FROM tenants t WHERE t.id = $1"
                )
            };
        }
        let sql = match count {
            Count::AtMost => brake_state!(
                "(SELECT coalesce(sum(n), 0)::bigint FROM deprovision_tally d WHERE d.tenant_id = t.id
                    AND d.minute >= date_trunc('minute', now() - make_interval(secs => t.brake_window_secs)))"
            ),
            Count::Exactly => brake_state!(
                "(SELECT count(DISTINCT d.user_id) FROM deprovisions d WHERE d.tenant_id = t.id
                    AND d.at > now() - make_interval(secs => t.brake_window_secs))"
            ),
        };
        let row = sqlx::query(sql).bind(tenant.id).fetch_one(&mut **tx).await.map_err(db_error)?;
        let read = || -> Result<BrakeState, sqlx::Error> {
            Ok(BrakeState {
                released: row.try_get("released")?,
                tripped: row.try_get("tripped")?,
                share: row.try_get("brake_share")?,
                min_users: i64::from(row.try_get::<i32, _>("brake_min_users")?),
                recent: row.try_get("recent")?,
                slack: row.try_get("slack")?,
            })
        };
        read().map_err(db_error)
    }

    /// The verdict were `unseen` more deprovisions in the window than counted.
    async fn brake_count(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        tenant: &Tenant,
        state: &BrakeState,
        unseen: i64,
    ) -> Result<Verdict, DomainError> {
        let recent = state.recent + unseen;
        if recent < state.min_users {
            return Ok(Verdict::Allow);
        }
        // Past the minimum, the active users decide; counting them all would scan the tenant on
        // every deprovision. With `enough` of them this one is allowed whatever the rest, so the
        // count stops there.
        let enough = ((recent + 1) as f64 / state.share).ceil() as i64;
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT 1 FROM users WHERE tenant_id = $1 AND active LIMIT $2) AS a",
        )
        .bind(tenant.id)
        .bind(enough)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?;
        Ok(brake_decision(state.share, state.min_users, recent, active))
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
            self.commit(system).await?;
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
    /// only once applied, so a crash mid-release leaves the rest held. Returns how many were
    /// resolved.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The active count stops at `ceil((recent + 1) / share)`: the verdict must be the one the
    /// full count would give, for every share, minimum and count.
    #[test]
    fn a_capped_active_count_decides_as_the_full_count_does() {
        for share in [0.01, 0.05, 0.1, 0.2, 0.25, 1.0 / 3.0, 0.5, 0.9, 1.0] {
            for min_users in [0, 1, 10] {
                for recent in min_users..60 {
                    let enough = ((recent + 1) as f64 / share).ceil() as i64;
                    for active in 0..(enough + 50) {
                        let full = brake_decision(share, min_users, recent, active);
                        let capped = brake_decision(share, min_users, recent, active.min(enough));
                        assert_eq!(
                            matches!(full, Verdict::Allow),
                            matches!(capped, Verdict::Allow),
                            "share {share} min {min_users} recent {recent} active {active}"
                        );
                        if let (Verdict::Trip(_, a), Verdict::Trip(_, b)) = (full, capped) {
                            assert_eq!(a, b, "a trip reports the exact active count");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_brake_trips_past_the_share_and_never_below_the_minimum() {
        // 100 active, 20%: the 20th deprovision in the window passes, the 21st trips.
        assert!(matches!(brake_decision(0.2, 10, 19, 81), Verdict::Allow));
        assert!(matches!(brake_decision(0.2, 10, 20, 80), Verdict::Trip(20, 80)));
        // A tiny tenant: the minimum lets 10 through whatever the share.
        assert!(matches!(brake_decision(0.2, 10, 9, 1), Verdict::Allow));
        assert!(matches!(brake_decision(0.2, 10, 10, 0), Verdict::Trip(10, 0)));
    }
}
