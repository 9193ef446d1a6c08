//! Plumbing every service binary shares: PostgreSQL settings and the pool built from them, and
//! the signal that asks a service to drain and stop.

pub mod secret;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgTransactionManager};
use sqlx::{ConnectOptions, PgConnection, PgPool, Postgres, SqlSafeStr};
use sqlx_core::transaction::TransactionManager;
use tokio::sync::oneshot;

/// The pool's size unless `DATABASE_MAX_CONNECTIONS` says otherwise: PostgreSQL spends less CPU per
/// request on fewer backends than its cores can run at once (docs/performance.md, finding 27).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;

/// How long a request waits for a connection of the pool before it is refused as transient.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one statement of a service may run unless `DATABASE_STATEMENT_TIMEOUT_MS` says
/// otherwise: far above any statement a SCIM request makes (milliseconds), far below the time
/// Okta waits for an answer (60 s).
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u32 = 5_000;

/// Database settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL of the service's own database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: SecretString,
    /// The most connections the pool opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub database_max_connections: u32,
    /// The longest one statement may run on the pool's connections, in milliseconds (PostgreSQL's
    /// `statement_timeout`, set when each connection opens); 0 for no limit. A statement past it
    /// is cancelled and its request refused as transient, with `Retry-After` (429 to Okta, 503 to
    /// others), so that no request holds one of the pool's connections, which every tenant
    /// shares, for longer. Migrations run on a connection of their own, without it.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = DEFAULT_STATEMENT_TIMEOUT_MS)]
    pub database_statement_timeout_ms: u32,
    /// Start even when the role the connections act as bypasses row-level security (a superuser,
    /// or a role with BYPASSRLS): one warning is logged instead of refusing to start. Only
    /// user-directory checks (its tables have the policies); see [`DatabaseArgs::pool_as_checked`].
    #[arg(long, env = "DATABASE_ALLOW_BYPASS_RLS", default_value_t = false)]
    pub database_allow_bypass_rls: bool,
}

impl DatabaseArgs {
    /// Settings for a URL, with the default pool size.
    pub fn new(url: &str) -> Self {
        DatabaseArgs {
            database_url: SecretString::from(url.to_owned()),
            database_max_connections: DEFAULT_MAX_CONNECTIONS,
            database_statement_timeout_ms: DEFAULT_STATEMENT_TIMEOUT_MS,
            database_allow_bypass_rls: false,
        }
    }

    /// The connection options.
    pub fn options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        let options: PgConnectOptions = self.database_url.expose_secret().parse()?;
        // Statements carry no values (every value is bound), but they are noise in the logs.
        Ok(options.disable_statement_logging())
    }

    /// The options of the pool's connections: [`DatabaseArgs::options`] with the statement
    /// timeout.
    fn pool_connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        Ok(self.options()?.options([("statement_timeout", self.database_statement_timeout_ms)]))
    }

    /// A pool that connects on first use, so that a service starts (and reports itself not
    /// ready) while its database is still coming up.
    pub fn pool(&self) -> Result<PgPool, sqlx::Error> {
        Ok(self.pool_options().connect_lazy_with(self.pool_connect_options()?))
    }

    /// As [`DatabaseArgs::pool`], but every connection acts as `role` (when that role exists and
    /// the login role may assume it): the role row-level security is written for.
    pub fn pool_as(&self, role: &'static str) -> Result<PgPool, sqlx::Error> {
        Ok(self
            .pool_options()
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    let usable: bool = sqlx::query_scalar(
                        "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)
                            THEN pg_has_role(current_user, $1, 'MEMBER') ELSE false END",
                    )
                    .bind(role)
                    .fetch_one(&mut *conn)
                    .await?;
                    if usable {
                        sqlx::query("SELECT set_config('role', $1, false)").bind(role).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(self.pool_connect_options()?))
    }

    /// [`DatabaseArgs::pool_as`], once it is known that row-level security binds the role its
    /// connections act as: one connection is opened now, and the role in effect on it (after the
    /// switch to `role`, or the login role where that switch did not happen) is looked at. A
    /// superuser, or a role with BYPASSRLS, is refused unless `DATABASE_ALLOW_BYPASS_RLS` allows
    /// it (then one warning is logged): the policies would not apply, silently.
    pub async fn pool_as_checked(&self, role: &'static str) -> Result<PgPool, RowSecurityError> {
        let pool = self.pool_as(role)?;
        let acting = ActingRole::of(&pool).await?;
        if acting.bypasses_row_security() {
            let refusal = RowSecurityError::Bypassed { acting: acting.clone(), wanted: role };
            if !self.database_allow_bypass_rls {
                pool.close().await;
                return Err(refusal);
            }
            tracing::warn!(role = %acting.name, "DATABASE_ALLOW_BYPASS_RLS=true: starting although {refusal}");
        } else if acting.name != role {
            tracing::info!(role = %acting.name, wanted = role, "the database connections act as the login role, which row-level security binds");
        }
        Ok(pool)
    }

    /// No ping before each use (a round trip per transaction): a connection the server closed
    /// fails its statement, the request is refused with `Retry-After` (503; 429 to Okta), and the
    /// pool drops it.
    fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.database_max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
    }
}

/// The role a pool's connections act as (`current_user`, which reflects the switch to the
/// application role), and whether it is exempt from row-level security.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActingRole {
    pub name: String,
    /// SUPERUSER: bypasses every policy.
    pub superuser: bool,
    /// BYPASSRLS: bypasses every policy.
    pub bypass_rls: bool,
}

impl ActingRole {
    /// The role a connection of `pool` acts as (the pool's `after_connect` has run on it).
    pub async fn of(pool: &PgPool) -> Result<ActingRole, sqlx::Error> {
        let (name, superuser, bypass_rls) = sqlx::query_as(
            "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(pool)
        .await?;
        Ok(ActingRole { name, superuser, bypass_rls })
    }

    /// Whether row-level security's policies do not apply to it.
    pub fn bypasses_row_security(&self) -> bool {
        self.superuser || self.bypass_rls
    }

    fn attributes(&self) -> &'static str {
        match (self.superuser, self.bypass_rls) {
            (true, true) => "SUPERUSER and BYPASSRLS",
            (true, false) => "SUPERUSER",
            _ => "BYPASSRLS",
        }
    }
}

/// Why [`DatabaseArgs::pool_as_checked`] refused.
#[derive(Debug, thiserror::Error)]
pub enum RowSecurityError {
    #[error(
        "the database connections would act as role \"{name}\", which is {attributes}: row-level security (tenant isolation) would not apply. {fix} \
         DATABASE_ALLOW_BYPASS_RLS=true starts anyway, knowingly without row-level security (docs/runbook.md, \"Row-level security refused\")",
        name = acting.name,
        attributes = acting.attributes(),
        fix = if acting.name == *wanted {
            format!("Make it NOSUPERUSER NOBYPASSRLS (ALTER ROLE \"{wanted}\" NOSUPERUSER NOBYPASSRLS).")
        } else {
            format!("The role \"{wanted}\" the connections switch to does not exist or the login role may not assume it: create it (NOLOGIN NOSUPERUSER NOBYPASSRLS) and grant it to the login role, or log in as a role that is neither SUPERUSER nor BYPASSRLS.")
        }
    )]
    Bypassed { acting: ActingRole, wanted: &'static str },
    #[error("checking the role the database connections act as: {0}")]
    Database(#[from] sqlx::Error),
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (Kubernetes), the signals that ask a service to drain
/// and stop.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
}

/// Connections for requests that are one statement, handed from one to the next without sqlx's
/// round trip on release.
///
/// sqlx tests every connection it takes back into its pool with a round trip of its own (`Sync`,
/// answered by `ReadyForQuery`), and cannot be told not to: for a request that is one statement
/// (a read by id, a create), that is a second wake-up of the server and of the service per
/// request (docs/performance.md, finding 21). A [`Lease`] whose statement completed goes back
/// into a short list of this process ([`Lease::done`]) and the next statement takes it from
/// there; a lease dropped otherwise (an error, a future dropped midway) returns through sqlx,
/// which tests the connection and closes it if it is broken. A [`Transaction`]
/// ([`Statements::begin`]) is a lease too: back into the list once committed or rolled back,
/// through sqlx (which rolls it back) if dropped open (finding 25).
///
/// The list holds connections of the same sqlx pool, which counts them as in use, so that
/// `DATABASE_MAX_CONNECTIONS` stays the bound on connections. A lease finding the list empty takes
/// one from the pool if it has one idle or room for one; if it is full, the lease waits in line
/// for the next connection put back (handed to the longest waiting first) or for one from the
/// pool, whichever comes first. Whoever takes a connection from the pool otherwise (the relay's
/// listener, its lock) does it through [`Statements::waiting`]: while one waits, leases go back
/// through sqlx (to the one waiting), and one idle connection of the list is handed back at once
/// when the pool has none. Connections leave the list for sqlx's own lifetime and idle handling
/// after [`RECYCLE_AFTER`] of use, or when found idle for longer than [`IDLE_AFTER`].
#[derive(Clone)]
pub struct Statements {
    pool: PgPool,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Callers of [`Statements::waiting`] not yet served.
    waiting: AtomicUsize,
}

#[derive(Default)]
struct State {
    /// Idle connections, the most recently used last.
    idle: Vec<Idle>,
    /// Leases waiting for a connection, the longest waiting first.
    queue: VecDeque<oneshot::Sender<Idle>>,
}

struct Idle {
    conn: PoolConnection<Postgres>,
    /// When the connection was taken from sqlx's pool.
    leased: Instant,
    /// When it was last put back here.
    since: Instant,
}

/// How long a connection goes round this list before it passes through sqlx's pool again (where
/// its age and health are looked at).
pub const RECYCLE_AFTER: Duration = Duration::from_secs(60);

/// How long a connection stays idle in this list before it goes back to sqlx's pool (which closes
/// connections idle for long).
pub const IDLE_AFTER: Duration = Duration::from_secs(10);

impl Statements {
    /// Single statements over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Statements { pool, shared: Arc::default() }
    }

    /// A connection for one statement (or a few), within the pool's acquire timeout. Never for a
    /// transaction begun by hand (one left open on a connection idle in the list would keep its
    /// locks until the connection's next statement): [`Statements::begin`] is for those.
    pub async fn lease(&self) -> Result<Lease, sqlx::Error> {
        let lease = |conn, leased| Lease { conn, leased, shared: self.shared.clone() };
        let handed = {
            let mut state = self.shared.lock();
            // The longest idle (the first) goes back to sqlx's pool once idle for long.
            if state.idle.first().is_some_and(|i| i.since.elapsed() > IDLE_AFTER) {
                drop(state.idle.remove(0));
            }
            if let Some(i) = state.idle.pop() {
                return Ok(lease(i.conn, i.leased));
            }
            // A pool with a connection idle, or room to open one, gives it without waiting: taken
            // from the pool alone. Racing that with a hand-over would drop a connection being opened
            // midway whenever a statement finished first, and PostgreSQL would have started a
            // backend (and a TLS handshake) for nothing, thousands of times a second.
            if self.pool_can_give() {
                None
            } else {
                // Leases that gave up (the pool served them) leave their place behind.
                state.queue.retain(|waiter| !waiter.is_closed());
                let (tx, rx) = oneshot::channel();
                state.queue.push_back(tx);
                Some(rx)
            }
        };
        let Some(handed) = handed else {
            // As a transaction would: should the pool fill up meanwhile, statements finishing
            // go back through it to this one.
            return Ok(lease(self.waiting(self.pool.acquire()).await?, Instant::now()));
        };
        // The pool is full and busy: whichever comes first, a connection put back here or one the
        // pool frees (its acquire only waits in line, which it may stop doing at any time).
        // A connection handed over as this gives up (it took one from the pool, or timed out)
        // is dropped with the receiver: back through sqlx.
        tokio::select! {
            Ok(i) = handed => Ok(lease(i.conn, i.leased)),
            conn = self.pool.acquire() => Ok(lease(conn?, Instant::now())),
        }
    }

    /// Runs one statement (`run` may run a few; never a transaction) on a leased connection, and
    /// puts the connection back as [`Lease::after`] says.
    pub async fn run<T>(
        &self,
        run: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let mut lease = self.lease().await?;
        let result = run(&mut lease).await;
        lease.after(&result);
        result
    }

    /// A transaction on a leased connection, begun by `begin` (`BEGIN`, and what else scopes it,
    /// in one simple query): its connection goes back into the list once it has committed or
    /// rolled back, and through sqlx's pool (which rolls it back with its check) if it is dropped
    /// open. The connection waits for the pool as any lease does, in the same line.
    pub async fn begin(&self, begin: impl SqlSafeStr) -> Result<Transaction, sqlx::Error> {
        let mut lease = self.lease().await?;
        if let Err(e) = PgTransactionManager::begin(&mut lease, Some(begin.into_sql_str())).await {
            // Whatever the failure left on the server (a transaction begun whose scope failed,
            // which sqlx does not roll back), the connection is closed, not reused.
            lease.conn.close_on_drop();
            return Err(e);
        }
        Ok(Transaction { lease: Some(lease) })
    }

    /// Runs `acquire` (anything that takes a connection from the pool directly) so that
    /// connections held idle here do not keep it waiting.
    pub async fn waiting<T>(&self, acquire: impl Future<Output = T>) -> T {
        self.shared.waiting.fetch_add(1, Ordering::SeqCst);
        let _served = Served(&self.shared);
        self.shed();
        acquire.await
    }

    /// The pool, for whoever takes a connection from it directly (through
    /// [`Statements::waiting`]). An idle connection of the list goes back to it first if it has
    /// none.
    pub fn pool(&self) -> &PgPool {
        self.shed();
        &self.pool
    }

    /// Hands one idle connection of the list back to the pool if the pool has none left to give.
    pub fn shed(&self) {
        if !self.pool_can_give()
            && let Some(i) = self.shared.lock().idle.pop()
        {
            drop(i.conn);
        }
    }

    /// Whether the pool has a connection idle or room to open one.
    fn pool_can_give(&self) -> bool {
        self.pool.num_idle() > 0 || self.pool.size() < self.pool.options().get_max_connections()
    }

    /// Closes the pool, once the connections idle in the list are back in it (sqlx's `close`
    /// waits for every connection it counts as in use).
    pub async fn close(&self) {
        let idle = std::mem::take(&mut self.shared.lock().idle);
        drop(idle);
        self.pool.close().await;
    }

    /// How many connections are idle in the list.
    pub fn idle(&self) -> usize {
        self.shared.lock().idle.len()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Ends a [`Statements::waiting`] call, however it ends.
struct Served<'a>(&'a Shared);

impl Drop for Served<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection from [`Statements::lease`].
pub struct Lease {
    conn: PoolConnection<Postgres>,
    leased: Instant,
    shared: Arc<Shared>,
}

impl Lease {
    /// Puts the connection back for the next statement if what was run on it completed: an
    /// answer, or an error the server sent. Any other error (the connection's own) returns it
    /// through sqlx, as dropping the lease does.
    pub fn after<T>(self, result: &Result<T, sqlx::Error>) {
        if matches!(result, Ok(_) | Err(sqlx::Error::Database(_))) {
            self.done();
        }
    }

    /// Puts the connection back for the next statement: call it once what was run on it has
    /// completed. Dropping the lease instead returns the connection through sqlx.
    pub fn done(self) {
        let Lease { conn, leased, shared } = self;
        if shared.waiting.load(Ordering::SeqCst) > 0 || leased.elapsed() > RECYCLE_AFTER {
            return drop(conn);
        }
        let mut idle = Idle { conn, leased, since: Instant::now() };
        let mut state = shared.lock();
        // To the longest waiting lease still waiting; otherwise into the list.
        while let Some(waiter) = state.queue.pop_front() {
            match waiter.send(idle) {
                Ok(()) => return,
                Err(back) => idle = back,
            }
        }
        state.idle.push(idle);
    }
}

/// A transaction from [`Statements::begin`]. Dropped open (an error, a future dropped midway), it
/// is rolled back by sqlx's check as its connection goes back into sqlx's pool, never left open
/// on a connection idle in the list.
pub struct Transaction {
    /// Taken when the transaction ends.
    lease: Option<Lease>,
}

impl Transaction {
    /// Commits; the connection goes back into the list.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.end(PgTransactionManager::commit).await
    }

    /// Rolls back, and waits for it; the connection goes back into the list.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        self.end(PgTransactionManager::rollback).await
    }

    async fn end(
        &mut self,
        end: impl AsyncFnOnce(&mut PgConnection) -> Result<(), sqlx::Error>,
    ) -> Result<(), sqlx::Error> {
        let Some(mut lease) = self.lease.take() else { return Ok(()) };
        let ended = end(&mut lease).await;
        if ended.is_ok() {
            lease.done();
        } else {
            // Whatever the server made of it, the connection goes back through sqlx with a
            // rollback queued (harmless when there is no transaction left).
            self.lease = Some(lease);
        }
        ended
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if let Some(mut lease) = self.lease.take() {
            PgTransactionManager::start_rollback(&mut lease);
        }
    }
}

impl std::ops::Deref for Transaction {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.lease.as_deref().unwrap_or_else(|| unreachable!("a transaction is used only before it ends"))
    }
}

impl std::ops::DerefMut for Transaction {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.lease.as_deref_mut().unwrap_or_else(|| unreachable!("a transaction is used only before it ends"))
    }
}

impl std::ops::Deref for Lease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
