//! Reporting: the tenant's learners as the platform reports them (ADR 0024). Archived users are
//! kept but left out unless asked for. Pages go by id (keyset), so a report of any size is read
//! in bounded pages, each one index range of the users' primary key.

use proto::DomainError;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, Tenant, db_error, end_read};

/// A report page holds at most this many learners.
pub const MAX_PAGE: u32 = 1000;

/// One learner of a report.
#[derive(Debug, Clone)]
pub struct LearnerRow {
    pub id: Uuid,
    pub user_name: String,
    pub given_name: String,
    pub family_name: String,
    pub email: String,
    pub role: String,
    pub cost_center: String,
    pub division: String,
    pub active: bool,
    pub created: OffsetDateTime,
    pub last_modified: OffsetDateTime,
}

/// What learners are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Division,
    CostCenter,
}

impl Store {
    /// The learners after `after` (by id), at most `limit` ([`MAX_PAGE`]); archived ones only when
    /// asked for.
    pub async fn report_learners(
        &self,
        tenant: &Tenant,
        include_archived: bool,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<LearnerRow>, DomainError> {
        let mut tx = self.scoped(tenant).await?;
        let rows = sqlx::query(
            "SELECT id, user_name, given_name, family_name, email, role, cost_center, division, active,
                    created_at, updated_at
             FROM users WHERE tenant_id = $1 AND id > $2 AND ($3 OR active)
             ORDER BY id LIMIT $4",
        )
        .bind(tenant.id)
        .bind(after.unwrap_or(Uuid::nil()))
        .bind(include_archived)
        .bind(i64::from(limit.clamp(1, MAX_PAGE)))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        end_read(tx);
        let read = |r: &sqlx::postgres::PgRow| -> Result<LearnerRow, sqlx::Error> {
            Ok(LearnerRow {
                id: r.try_get("id")?,
                user_name: r.try_get("user_name")?,
                given_name: r.try_get("given_name")?,
                family_name: r.try_get("family_name")?,
                email: r.try_get("email")?,
                role: r.try_get("role")?,
                cost_center: r.try_get("cost_center")?,
                division: r.try_get("division")?,
                active: r.try_get("active")?,
                created: r.try_get("created_at")?,
                last_modified: r.try_get("updated_at")?,
            })
        };
        rows.iter().map(read).collect::<Result<_, _>>().map_err(db_error)
    }

    /// How many learners there are by division or cost center (those without one under `""`),
    /// the largest first.
    pub async fn count_learners(
        &self,
        tenant: &Tenant,
        include_archived: bool,
        by: Grouping,
    ) -> Result<Vec<(String, i64)>, DomainError> {
        let column = match by {
            Grouping::Division => "division",
            Grouping::CostCenter => "cost_center",
        };
        let mut tx = self.scoped(tenant).await?;
        let counts = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {column}, count(*) FROM users WHERE tenant_id = $1 AND ($2 OR active)
             GROUP BY 1 ORDER BY 2 DESC, {column} COLLATE \"C\""
        )))
        .bind(tenant.id)
        .bind(include_archived)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        end_read(tx);
        Ok(counts)
    }
}
