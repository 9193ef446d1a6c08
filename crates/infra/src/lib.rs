//! Plumbing every service binary shares: PostgreSQL settings and the pool built from them, and
//! the signal that asks a service to drain and stop.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

/// Database settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL of the service's own database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: SecretString,
    /// The most connections the pool opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
}

impl DatabaseArgs {
    /// Settings for a URL, with the default pool size.
    pub fn new(url: &str) -> Self {
        DatabaseArgs { database_url: SecretString::from(url.to_owned()), database_max_connections: 16 }
    }

    /// The connection options.
    pub fn options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        let options: PgConnectOptions = self.database_url.expose_secret().parse()?;
        // Statements carry no values (every value is bound), but they are noise in the logs.
        Ok(options.disable_statement_logging())
    }

    /// A pool that connects on first use, so that a service starts (and reports itself not
    /// ready) while its database is still coming up.
    pub fn pool(&self) -> Result<PgPool, sqlx::Error> {
        Ok(self.pool_options().connect_lazy_with(self.options()?))
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
            .connect_lazy_with(self.options()?))
    }

    /// No ping before each use (a round trip per transaction): a connection the server closed
    /// fails its statement, the request is answered 503 with `Retry-After`, and the pool drops it.
    fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
    }
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
