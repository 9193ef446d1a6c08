//! All SQL of user-directory lives here: tenants and keys, users, the outbox. Handlers call these
//! methods and never write SQL themselves. Every user query is scoped by tenant id; dynamic SQL
//! (filters) comes only from [`crate::sql_filter`], which binds every value.

mod assignments;
mod brake;
mod console;
mod erasure;
mod groups;
pub mod offboard;
mod outbox;
mod reports;
mod requests;
mod seed;
mod tenants;
mod users;

use std::sync::Arc;
use std::time::Duration;

use infra::Transaction;
use moka::future::Cache;
use proto::DomainError;
use sqlx::{Connection, PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

pub use assignments::StoredAssignment;
pub use brake::{Brake, HeldChange, HeldInfo};
pub use console::{Activity, ConsoleSession, HourActivity, SessionLimits, SessionOwner};
pub use erasure::{ERASED_BODY, Erasure, tombstone_name};
pub use groups::StoredGroup;
pub use outbox::{Backlog, EVENT_IDS, OutboxRow, PendingEvent};
pub use reports::{Grouping, LearnerRow, MAX_PAGE as REPORT_MAX_PAGE};
pub use requests::{LoggedRequest, RequestQuery};
pub use seed::Seeded;
pub use tenants::{ApiKeyInfo, Authenticated, IssuedKey, SCOPES, Tenant, TenantUpdate, scopes};
pub use users::StoredUser;

/// The directory's database.
#[derive(Clone)]
pub struct Store {
    /// Statements and transactions on connections of the pool, without sqlx's round trip on
    /// release.
    statements: infra::Statements,
    /// Counts commits that may have written events: the relay wakes on a change.
    written: Arc<tokio::sync::watch::Sender<u64>>,
    /// Whether this process's relay is the active one (then its commits need no NOTIFY).
    relay_here: Arc<std::sync::atomic::AtomicBool>,
    /// Tenants by id. A tenant's id and subdomain never change; its status may, so entries expire.
    tenants: Cache<Uuid, Arc<Tenant>>,
    subject_prefix: Arc<str>,
}

impl Store {
    /// A store over a pool; events get subjects under `subject_prefix`.
    pub fn new(pool: PgPool, subject_prefix: &str) -> Self {
        Store {
            statements: infra::Statements::new(pool),
            written: Arc::new(tokio::sync::watch::Sender::new(0)),
            relay_here: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            tenants: Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(5)).build(),
            subject_prefix: subject_prefix.into(),
        }
    }

    /// Commits a transaction that may have written events, and wakes the relay.
    ///
    /// The relay is woken from here, after the commit, not by a `NOTIFY` inside the transaction:
    /// PostgreSQL serialises the commits of every transaction that notified, across the whole
    /// cluster and through the WAL flush, which made every SCIM write wait for the one before.
    pub(crate) async fn commit(&self, tx: Transaction) -> Result<(), DomainError> {
        tx.commit().await.map_err(db_error)?;
        self.wrote();
        Ok(())
    }

    /// Wakes the relay after a statement that wrote events in a transaction of its own.
    pub(crate) fn wrote(&self) {
        self.written.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records whether this process's relay is the active one.
    pub(crate) fn set_relay_here(&self, active: bool) {
        self.relay_here.store(active, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this process's relay is the active one.
    pub(crate) fn relay_here(&self) -> bool {
        self.relay_here.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Follows the commits that may have written events (`changed()` completes after one).
    pub(crate) fn written(&self) -> tokio::sync::watch::Receiver<u64> {
        self.written.subscribe()
    }

    /// The pool, for the relay's listener and for tests. An idle connection held for single
    /// statements goes back to it first if it has none.
    pub fn pool(&self) -> &PgPool {
        self.statements.pool()
    }

    /// Statements and transactions on leased connections (see [`infra::Statements`]); whoever
    /// takes a connection from the pool directly does it through [`infra::Statements::waiting`].
    pub fn statements(&self) -> &infra::Statements {
        &self.statements
    }

    /// Closes the pool (see [`infra::Statements::close`]).
    pub async fn close(&self) {
        self.statements.close().await;
    }

    /// Runs a request that is one statement on a leased connection ([`infra::Statements::run`]).
    pub(crate) async fn single<T>(
        &self,
        run: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        self.statements.run(run).await
    }

    /// What keeps the tables' statistics and dead rows in hand is switched off: the server's
    /// `autovacuum` (or `track_counts`, without which it does nothing), or a table's own
    /// `autovacuum_enabled`. Each is a sentence for the log; none, when all is well.
    ///
    /// Without it, statements planned while a table was small keep planning as if it still were
    /// (sequential scans of grown tables: GET by id was seen 18 times slower until an ANALYZE),
    /// and the outbox's published rows, deleted past their retention, and every updated user's
    /// old row stay as dead rows that each read steps over.
    pub async fn maintenance_warnings(&self) -> Result<Vec<String>, sqlx::Error> {
        let mut warnings = Vec::new();
        let settings: Vec<(String, String)> = self
            .single(async |c| {
                sqlx::query_as(
                    "SELECT name, setting FROM pg_settings WHERE name IN ('autovacuum', 'track_counts') ORDER BY name",
                )
                .fetch_all(c)
                .await
            })
            .await?;
        for (name, setting) in settings.iter().filter(|(_, s)| s == "off") {
            warnings.push(format!(
                "the database server runs with {name} = {setting}: nothing analyzes or vacuums the tables on its own"
            ));
        }
        let tables: Vec<String> = self
            .single(async |c| {
                sqlx::query_scalar(
                    "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = current_schema() AND c.relkind = 'r'
                       AND 'autovacuum_enabled=false' = ANY (c.reloptions) ORDER BY 1",
                )
                .fetch_all(c)
                .await
            })
            .await?;
        if !tables.is_empty() {
            warnings.push(format!("autovacuum is switched off for the table(s) {}", tables.join(", ")));
        }
        Ok(warnings)
    }

    /// Applies pending migrations, on a connection of the login role (the pool's connections act
    /// as the application role, which owns nothing).
    pub async fn migrate(db: &infra::DatabaseArgs) -> Result<(), sqlx::migrate::MigrateError> {
        let mut conn = PgConnection::connect_with(&db.options()?).await?;
        sqlx::migrate!("./migrations").run(&mut conn).await?;
        conn.close().await.ok();
        Ok(())
    }

    /// A transaction scoped to a tenant: row-level security admits only that tenant's rows,
    /// whatever the statements inside it ask for.
    pub async fn tenant_transaction(&self, tenant: &Tenant) -> Result<Transaction, DomainError> {
        self.scoped(tenant).await
    }

    pub(crate) async fn scoped(&self, tenant: &Tenant) -> Result<Transaction, DomainError> {
        self.statements.begin(scope(tenant)).await.map_err(db_error)
    }

    /// A transaction that may see every tenant's rows: the relay, authentication by key hash,
    /// admin commands. Never used on behalf of a tenant's request.
    pub(crate) async fn system(&self) -> Result<Transaction, sqlx::Error> {
        self.statements.begin("BEGIN; SELECT set_config('app.system', 'on', true)").await
    }

    /// A [`Store::system`] transaction whose statements have no time limit
    /// (`DATABASE_STATEMENT_TIMEOUT_MS` is for requests): an operator's bulk work, such as seeding.
    pub(crate) async fn system_unbounded(&self) -> Result<Transaction, sqlx::Error> {
        self.statements
            .begin("BEGIN; SELECT set_config('app.system', 'on', true), set_config('statement_timeout', '0', true)")
            .await
    }
}

/// The statement that begins a transaction and scopes it to the tenant: one round trip. The only
/// value in it is a UUID formatted by us (hex digits and dashes), never text from a request.
fn scope(tenant: &Tenant) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("BEGIN; SELECT set_config('app.tenant_id', '{}', true)", tenant.id.hyphenated()))
}

/// Ends a transaction that only read. Dropped rather than committed: sqlx queues its `ROLLBACK`
/// and sends it with the check its pool makes of every connection it takes back, after the
/// answer has gone (a `COMMIT` would keep the answer waiting for its round trip).
pub(crate) fn end_read(tx: Transaction) {
    drop(tx);
}

/// The role the service's connections act as (see the row-level security migration).
pub const APP_ROLE: &str = "scim_directory_app";

/// The current time, at the precision PostgreSQL keeps, so that what a write returns is exactly
/// what a later read returns.
pub(crate) fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

/// SQLSTATEs that say "not now" rather than "never": the server is down, starting, shutting
/// down, out of connections, or not accepting them (08, 57P0x, 53300, 55000); conflicts a
/// retry resolves (serialization failure, deadlock); and timeouts (57014, a statement cancelled
/// by `statement_timeout` or an operator; 55P03, a lock not granted within `lock_timeout`).
/// These are answered as a transient refusal (503, or 429 to Okta), never a 500.
fn transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("57P")
        || matches!(code, "53300" | "55000" | "40001" | "40P01" | "57014" | "55P03")
}

/// Maps a database failure to the domain: connectivity is "unavailable" (retry), anything else is
/// internal. The cause goes to the log, not to the client.
pub(crate) fn db_error(e: sqlx::Error) -> DomainError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            tracing::warn!(error = %e, "database unavailable");
            DomainError::unavailable()
        }
        sqlx::Error::Database(ref d) if d.code().is_some_and(|c| transient(&c)) => {
            tracing::warn!(error = %e, "database unavailable");
            DomainError::unavailable()
        }
        e => {
            tracing::error!(error = %e, "database error");
            DomainError::internal()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::transient;

    #[test]
    fn timeouts_and_lost_connections_are_transient_and_bugs_are_not() {
        for code in ["08006", "57P01", "53300", "40001", "40P01", "57014", "55P03"] {
            assert!(transient(code), "{code}");
        }
        for code in ["23505", "42601", "22P02", "42P01"] {
            assert!(!transient(code), "{code}");
        }
    }
}
