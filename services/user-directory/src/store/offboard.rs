//! Offboarding a tenant (docs/adr/0026-offboarding-a-tenant.md): every row of it in the
//! directory's tables, deleted in bounded batches, each batch a transaction of its own, the
//! `tenants` row last. An interrupted run loses at most one batch; the next run finds the tenant
//! by its subdomain and goes on where the last one stopped.

use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::Store;

/// The directory's tables of tenant rows in the order offboarding empties them: children before
/// the parents their foreign keys point to (memberships and assignments before users and groups,
/// console sessions before keys), users before the active-user tally (a deleted active user's
/// trigger writes to the tally). A table with a `tenant_id` column that is not named here (a
/// later migration's) is emptied after these, before the `tenants` row.
pub const DIRECTORY_ORDER: &[&str] = &[
    "group_members",
    "assignments",
    "held_changes",
    "deprovisions",
    "console_sessions",
    "request_log",
    "outbox",
    "users",
    "groups",
    "deprovision_tally",
    "active_user_tally",
    "api_keys",
];

/// The tables with a `tenant_id` column on `conn`'s database, `first` in its order, then the
/// others by name. Only plain lower-case identifiers are returned (they are put into SQL).
pub async fn tenant_tables(conn: &mut PgConnection, first: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    let found: Vec<String> = sqlx::query_scalar(
        "SELECT c.table_name::text FROM information_schema.columns c
         JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = current_schema() AND c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE'
         ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut tables: Vec<String> =
        first.iter().filter(|t| found.iter().any(|f| f == *t)).map(|t| (*t).to_owned()).collect();
    tables.extend(found.into_iter().filter(|f| !first.contains(&f.as_str()) && plain_identifier(f)));
    Ok(tables)
}

fn plain_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Deletes at most `batch` rows of the tenant from `table` (a name [`tenant_tables`] returned);
/// returns how many. By row address, so that one statement serves every table whatever its key.
pub async fn delete_batch(conn: &mut PgConnection, table: &str, tenant: Uuid, batch: i64) -> Result<u64, sqlx::Error> {
    if !plain_identifier(table) {
        return Err(sqlx::Error::Protocol(format!("not a table name: {table:?}")));
    }
    let sql = format!(
        "DELETE FROM \"{table}\" WHERE tenant_id = $1
         AND ctid = ANY (ARRAY(SELECT ctid FROM \"{table}\" WHERE tenant_id = $1 LIMIT $2))"
    );
    let done = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(batch).execute(&mut *conn).await?;
    Ok(done.rows_affected())
}

/// How many rows of the tenant `table` holds.
pub async fn count_rows(conn: &mut PgConnection, table: &str, tenant: Uuid) -> Result<i64, sqlx::Error> {
    if !plain_identifier(table) {
        return Err(sqlx::Error::Protocol(format!("not a table name: {table:?}")));
    }
    let sql = format!("SELECT count(*) FROM \"{table}\" WHERE tenant_id = $1");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(tenant).fetch_one(&mut *conn).await
}

impl Store {
    /// The directory's tables of tenant rows, in the order offboarding empties them.
    pub async fn offboard_tables(&self) -> Result<Vec<String>, sqlx::Error> {
        let mut tx = self.system().await?;
        let tables = tenant_tables(&mut tx, DIRECTORY_ORDER).await?;
        tx.commit().await?;
        Ok(tables)
    }

    /// Deletes one batch of the tenant's rows of `table`, in a transaction of its own without the
    /// requests' statement timeout (a batch is small, but a table without an index on
    /// `tenant_id`, the outbox, is scanned); returns how many rows went.
    pub async fn offboard_batch(&self, table: &str, tenant: Uuid, batch: i64) -> Result<u64, sqlx::Error> {
        let mut tx = self.system_unbounded().await?;
        let n = delete_batch(&mut tx, table, tenant, batch).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// How many rows of the tenant are left in each table (those with any).
    pub async fn offboard_left(&self, tenant: Uuid) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let mut tx = self.system_unbounded().await?;
        let mut left = Vec::new();
        for table in tenant_tables(&mut tx, DIRECTORY_ORDER).await? {
            let n = count_rows(&mut tx, &table, tenant).await?;
            if n > 0 {
                left.push((table, n));
            }
        }
        tx.commit().await?;
        Ok(left)
    }

    /// The tenant's events not yet on the stream.
    pub async fn unpublished_events(&self, tenant: Uuid) -> Result<i64, sqlx::Error> {
        let mut tx = self.system().await?;
        let n = sqlx::query("SELECT count(*) AS n FROM outbox WHERE tenant_id = $1 AND stream_seq IS NULL")
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        tx.commit().await?;
        Ok(n)
    }

    /// Deletes the `tenants` row, the last of the tenant; refused by the foreign keys while any
    /// row of the tenant is left (one written since its table was emptied: run again).
    pub async fn delete_tenant_row(&self, tenant: Uuid) -> Result<u64, sqlx::Error> {
        let mut tx = self.system().await?;
        let n = sqlx::query("DELETE FROM tenants WHERE id = $1").bind(tenant).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}
