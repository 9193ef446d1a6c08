//! The request log: every SCIM request a tenant's identity provider made, as the gateway recorded
//! it (bodies already redacted there), kept for `REQUEST_LOG_RETENTION_DAYS`.

use proto::DomainError;
use sqlx::{AssertSqlSafe, QueryBuilder, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, Tenant, db_error, end_read};

/// One logged request.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub at: OffsetDateTime,
    pub method: String,
    pub path: String,
    pub status: i32,
    pub latency_ms: f64,
    pub user_agent: String,
    pub event_ids: Vec<Uuid>,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
}

/// What to look for in the log.
#[derive(Debug, Clone, Default)]
pub struct RequestQuery {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub method: Option<String>,
    pub status_min: Option<i32>,
    pub status_max: Option<i32>,
    /// Text the path or the bodies contain.
    pub contains: Option<String>,
    pub limit: i64,
}

const COLUMNS: &str =
    "tenant_id, id, at, method, path, status, latency_ms, user_agent, event_ids, request_body, response_body";

fn from_row(r: &sqlx::postgres::PgRow) -> Result<LoggedRequest, sqlx::Error> {
    Ok(LoggedRequest {
        tenant_id: r.try_get("tenant_id")?,
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        method: r.try_get("method")?,
        path: r.try_get("path")?,
        status: r.try_get("status")?,
        latency_ms: r.try_get("latency_ms")?,
        user_agent: r.try_get("user_agent")?,
        event_ids: r.try_get("event_ids")?,
        request_body: r.try_get("request_body")?,
        response_body: r.try_get("response_body")?,
    })
}

impl Store {
    /// Stores a batch of records (from any tenants: the gateway batches across them).
    pub async fn record_requests(&self, records: &[LoggedRequest]) -> Result<(), DomainError> {
        if records.is_empty() {
            return Ok(());
        }
        // One statement whatever the batch's size, its columns as arrays: a VALUES list per size
        // would be a statement of its own, parsed and planned by PostgreSQL and kept prepared
        // on every pooled connection (up to 100 each, at up to 5,500 parameters apiece).
        fn column<'a, T>(records: &'a [LoggedRequest], f: impl Fn(&'a LoggedRequest) -> T) -> Vec<T> {
            records.iter().map(f).collect()
        }
        // A row's event ids as an array literal: unnest cannot take an array of arrays of
        // different lengths.
        let event_ids = column(records, |r| {
            format!("{{{}}}", r.event_ids.iter().map(Uuid::to_string).collect::<Vec<_>>().join(","))
        });
        // One statement that scopes itself (ADR 0019): no transaction waits for a connection.
        let query = sqlx::query("SELECT scim_record_requests($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
            .bind(column(records, |r| r.tenant_id))
            .bind(column(records, |r| r.id))
            .bind(column(records, |r| r.at))
            .bind(column(records, |r| r.method.as_str()))
            .bind(column(records, |r| r.path.as_str()))
            .bind(column(records, |r| r.status))
            .bind(column(records, |r| r.latency_ms))
            .bind(column(records, |r| r.user_agent.as_str()))
            .bind(event_ids)
            .bind(column(records, |r| r.request_body.as_deref()))
            .bind(column(records, |r| r.response_body.as_deref()));
        self.single(async |c| query.execute(c).await).await.map(drop).map_err(db_error)
    }

    /// A tenant's logged requests, newest first.
    pub async fn list_requests(
        &self,
        tenant: &Tenant,
        query: &RequestQuery,
    ) -> Result<Vec<LoggedRequest>, DomainError> {
        let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM request_log WHERE tenant_id = "));
        q.push_bind(tenant.id);
        if let Some(since) = query.since {
            q.push(" AND at >= ").push_bind(since);
        }
        if let Some(until) = query.until {
            q.push(" AND at < ").push_bind(until);
        }
        if let Some(m) = &query.method {
            q.push(" AND method = ").push_bind(m.to_ascii_uppercase());
        }
        if let Some(min) = query.status_min {
            q.push(" AND status >= ").push_bind(min);
        }
        if let Some(max) = query.status_max {
            q.push(" AND status <= ").push_bind(max);
        }
        if let Some(text) = query.contains.as_ref().filter(|t| !t.is_empty()) {
            let like = format!("%{}%", text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            q.push(" AND (path ILIKE ").push_bind(like.clone());
            q.push(" OR request_body ILIKE ").push_bind(like.clone());
            q.push(" OR response_body ILIKE ").push_bind(like).push(")");
        }
        q.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(query.limit.clamp(1, 1000));
        let mut tx = self.scoped(tenant).await?;
        let rows = q.build().fetch_all(&mut *tx).await.map_err(db_error)?;
        end_read(tx);
        rows.iter().map(from_row).collect::<Result<_, _>>().map_err(db_error)
    }

    /// One logged request of a tenant.
    pub async fn get_request(&self, tenant: &Tenant, id: &str) -> Result<LoggedRequest, DomainError> {
        let missing = || DomainError::not_found(format!("There is no logged request {id}."));
        let uuid = Uuid::parse_str(id).map_err(|_| missing())?;
        let mut tx = self.scoped(tenant).await?;
        let row =
            sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM request_log WHERE tenant_id = $1 AND id = $2")))
                .bind(tenant.id)
                .bind(uuid)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?
                .ok_or_else(missing)?;
        end_read(tx);
        from_row(&row).map_err(db_error)
    }

    /// Deletes requests older than `days`, a batch at a time; returns how many went.
    pub async fn prune_requests(&self, days: u32) -> Result<u64, sqlx::Error> {
        let mut tx = self.system().await?;
        let done = sqlx::query(
            "DELETE FROM request_log WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM request_log
             WHERE at < now() - make_interval(days => $1) LIMIT 10000)",
        )
        .bind(i32::try_from(days).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
