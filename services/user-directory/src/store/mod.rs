//! All SQL of user-directory lives here: tenants and keys, users, the outbox. Handlers call these
//! methods and never write SQL themselves. Every user query is scoped by tenant id; dynamic SQL
//! (filters) comes only from [`crate::sql_filter`], which binds every value.

mod assignments;
mod groups;
mod outbox;
mod tenants;
mod users;

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use proto::DomainError;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

pub use assignments::StoredAssignment;
pub use groups::StoredGroup;
pub use outbox::{OutboxRow, PendingEvent};
pub use tenants::{ApiKeyInfo, IssuedKey, Tenant};
pub use users::StoredUser;

/// The directory's database.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// Tenants by id. A tenant's id and subdomain never change; its status may, so entries expire.
    tenants: Cache<Uuid, Arc<Tenant>>,
    subject_prefix: Arc<str>,
}

impl Store {
    /// A store over a pool; events get subjects under `subject_prefix`.
    pub fn new(pool: PgPool, subject_prefix: &str) -> Self {
        Store {
            pool,
            tenants: Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(30)).build(),
            subject_prefix: subject_prefix.into(),
        }
    }

    /// The pool, for the relay's listener and for health checks.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations").run(&self.pool).await
    }
}

/// The current time, at the precision PostgreSQL keeps, so that what a write returns is exactly
/// what a later read returns.
pub(crate) fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

/// Maps a database failure to the domain: connectivity is "unavailable" (retry), anything else is
/// internal. The cause goes to the log, not to the client.
pub(crate) fn db_error(e: sqlx::Error) -> DomainError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            tracing::warn!(error = %e, "database unavailable");
            DomainError::unavailable()
        }
        e => {
            tracing::error!(error = %e, "database error");
            DomainError::internal()
        }
    }
}
