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

    /// A pool that connects on first use, so that a service starts (and reports itself not
    /// ready) while its database is still coming up.
    pub fn pool(&self) -> Result<PgPool, sqlx::Error> {
        let options: PgConnectOptions = self.database_url.expose_secret().parse()?;
        // Statements carry no values (every value is bound), but they are noise in the logs.
        let options = options.disable_statement_logging();
        Ok(PgPoolOptions::new()
            .max_connections(self.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options))
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
