//! The tenant console's sessions and the figures its health page shows. A session belongs to one
//! tenant: an admin's (opened with an `admin`-scoped key) or one of our operators'. The cookie
//! carries a 256-bit random id; only its SHA-256 is stored, so a copy of the table opens nothing.

use proto::{DomainError, ErrorKind};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, Tenant, db_error, end_read};

/// A live console session.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub tenant: Tenant,
    /// The admin's key; `None` for an operator.
    pub key_id: Option<Uuid>,
    pub operator: bool,
    pub csrf_token: String,
}

/// One hour of a tenant's SCIM traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourActivity {
    pub hour: OffsetDateTime,
    pub requests: i64,
    pub errors: i64,
    pub events: i64,
}

/// What the console's health page shows.
#[derive(Debug, Clone)]
pub struct Activity {
    /// The last 24 hours, oldest first, empty hours included.
    pub hours: Vec<HourActivity>,
    pub last_success_at: Option<OffsetDateTime>,
    pub last_failure_at: Option<OffsetDateTime>,
    pub held: i64,
    pub active_users: i64,
    pub archived_users: i64,
    pub groups: i64,
}

/// Who opens a session.
#[derive(Debug, Clone, Copy)]
pub enum SessionOwner<'a> {
    /// A tenant's admin, with an `admin`-scoped key of the tenant.
    Admin { api_key: &'a str },
    /// One of our operators, whose token (checked by the caller) has this generation.
    Operator { generation: &'a [u8] },
}

/// When sessions end, besides sign-out and their key's revocation.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Not seen for this long.
    pub idle: std::time::Duration,
    /// Opened this long ago, however active.
    pub max_lifetime: std::time::Duration,
    /// An operator's session lives while the operator token that opened it is the current one
    /// (this generation); with none configured, no operator session lives.
    pub operator_generation: Option<Vec<u8>>,
}

fn random_token() -> Result<String, DomainError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "no randomness for a session");
        DomainError::internal()
    })?;
    Ok(hex::encode(bytes))
}

fn hash(session_id: &str) -> Vec<u8> {
    crate::apikey::hash(session_id)
}

fn ended() -> DomainError {
    DomainError::new(ErrorKind::Unauthenticated, "The session has ended. Sign in again.")
}

impl Store {
    /// Opens a session: an admin's (the key must be the tenant's, live, and `admin`-scoped: a
    /// `scim` key is refused as forbidden) or an operator's (the caller checked the operator
    /// token; the session records its generation). Sessions of the tenant idle for longer than
    /// `limits.idle`, or older than `limits.max_lifetime`, are forgotten on the way. Returns the
    /// session id, shown once, for the cookie.
    pub async fn create_session(
        &self,
        subdomain: &str,
        owner: SessionOwner<'_>,
        limits: &SessionLimits,
    ) -> Result<(String, ConsoleSession), DomainError> {
        let (tenant, key_id, generation) = match owner {
            SessionOwner::Admin { api_key } => {
                let auth = self.authenticate(api_key, Some(subdomain)).await?;
                if !auth.scopes.iter().any(|s| s == "admin") {
                    return Err(DomainError::new(
                        ErrorKind::Forbidden,
                        "This key is for the identity provider (scope scim); the console needs a key with the admin scope.",
                    ));
                }
                (auth.tenant, Some(auth.key_id), None)
            }
            SessionOwner::Operator { generation } => (
                self.tenant_by_subdomain(subdomain)
                    .await
                    .map_err(|_| DomainError::new(ErrorKind::Unauthenticated, "There is no such tenant."))?,
                None,
                Some(generation),
            ),
        };
        let (id, csrf_token) = (random_token()?, random_token()?);
        let mut tx = self.scoped(&tenant).await?;
        sqlx::query(
            "DELETE FROM console_sessions WHERE tenant_id = $1
               AND (last_seen_at < now() - make_interval(secs => $2) OR created_at < now() - make_interval(secs => $3))",
        )
        .bind(tenant.id)
        .bind(limits.idle.as_secs_f64())
        .bind(limits.max_lifetime.as_secs_f64())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, tenant_id, key_id, operator, csrf_token, operator_generation)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hash(&id))
        .bind(tenant.id)
        .bind(key_id)
        .bind(key_id.is_none())
        .bind(&csrf_token)
        .bind(generation)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok((id, ConsoleSession { tenant, key_id, operator: key_id.is_none(), csrf_token }))
    }

    /// The live session `session_id` names, marked seen now. A session has ended when it was not
    /// seen for `limits.idle`, when it was opened longer than `limits.max_lifetime` ago, when its
    /// key was revoked or expired, (for an admin's) when the tenant was suspended, and (for an
    /// operator's) when the operator token is no longer the one that opened it.
    pub async fn session(&self, session_id: &str, limits: &SessionLimits) -> Result<ConsoleSession, DomainError> {
        let mut tx = self.system().await.map_err(db_error)?;
        let row = sqlx::query(
            "UPDATE console_sessions s SET last_seen_at = now()
             FROM tenants t
             WHERE s.id_hash = $1 AND t.id = s.tenant_id
               AND s.last_seen_at > now() - make_interval(secs => $2)
               AND s.created_at > now() - make_interval(secs => $3)
               AND ((s.operator AND s.operator_generation = $4)
                    OR (NOT s.operator AND t.status = 'active' AND EXISTS (
                    SELECT 1 FROM api_keys k WHERE k.id = s.key_id AND k.revoked_at IS NULL
                      AND (k.expires_at IS NULL OR k.expires_at > now()))))
             RETURNING s.tenant_id, s.key_id, s.operator, s.csrf_token",
        )
        .bind(hash(session_id))
        .bind(limits.idle.as_secs_f64())
        .bind(limits.max_lifetime.as_secs_f64())
        .bind(limits.operator_generation.as_deref())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(ended)?;
        tx.commit().await.map_err(db_error)?;
        let tenant_id: Uuid = row.try_get("tenant_id").map_err(db_error)?;
        Ok(ConsoleSession {
            tenant: (*self.tenant(tenant_id).await?).clone(),
            key_id: row.try_get("key_id").map_err(db_error)?,
            operator: row.try_get("operator").map_err(db_error)?,
            csrf_token: row.try_get("csrf_token").map_err(db_error)?,
        })
    }

    /// Ends a session (signing out twice is fine).
    pub async fn end_session(&self, session_id: &str) -> Result<(), DomainError> {
        let mut tx = self.system().await.map_err(db_error)?;
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(hash(session_id))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    /// The figures of the console's health page: the request log's last 24 hours by hour (the
    /// events each hour's requests caused), the last success and failure, what the brake holds,
    /// and how many users and groups the tenant has.
    pub async fn activity(&self, tenant: &Tenant) -> Result<Activity, DomainError> {
        let mut tx = self.scoped(tenant).await?;
        let hours = sqlx::query(
            "SELECT h AS hour, count(r.id) AS requests, count(r.id) FILTER (WHERE r.status >= 400) AS errors,
                    coalesce(sum(cardinality(r.event_ids)), 0)::bigint AS events
             FROM generate_series(date_trunc('hour', now()) - interval '23 hours', date_trunc('hour', now()),
                                  interval '1 hour') h
             LEFT JOIN request_log r ON r.tenant_id = $1 AND r.at >= h AND r.at < h + interval '1 hour'
             GROUP BY h ORDER BY h",
        )
        .bind(tenant.id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?
        .iter()
        .map(|r| {
            Ok(HourActivity {
                hour: r.try_get("hour")?,
                requests: r.try_get("requests")?,
                errors: r.try_get("errors")?,
                events: r.try_get("events")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(db_error)?;
        let row = sqlx::query(
            "SELECT
                (SELECT at FROM request_log WHERE tenant_id = $1 AND status < 400 ORDER BY at DESC LIMIT 1) AS ok,
                (SELECT at FROM request_log WHERE tenant_id = $1 AND status >= 400 ORDER BY at DESC LIMIT 1) AS failed,
                (SELECT count(*) FROM held_changes WHERE tenant_id = $1) AS held,
                (SELECT count(*) FROM users WHERE tenant_id = $1 AND archived_at IS NULL) AS active,
                (SELECT count(*) FROM users WHERE tenant_id = $1 AND archived_at IS NOT NULL) AS archived,
                (SELECT count(*) FROM groups WHERE tenant_id = $1) AS groups",
        )
        .bind(tenant.id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        end_read(tx);
        let get = |name: &str| row.try_get::<i64, _>(name).map_err(db_error);
        Ok(Activity {
            hours,
            last_success_at: row.try_get("ok").map_err(db_error)?,
            last_failure_at: row.try_get("failed").map_err(db_error)?,
            held: get("held")?,
            active_users: get("active")?,
            archived_users: get("archived")?,
            groups: get("groups")?,
        })
    }
}
