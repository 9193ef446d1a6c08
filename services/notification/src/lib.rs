//! notification: consumes provisioning events from JetStream with a durable consumer, keeps its
//! own projection of recipients, and records one decision per event (send, suppress, nothing,
//! with the reason). It never calls back into user-directory to decide.
//!
//! [`Application::build`] wires it from a [`Config`]; [`Application::run_until`] runs until the
//! shutdown future completes. `main.rs` and the tests drive exactly these.

pub mod consumer;
pub mod decide;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use infra::DatabaseArgs;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Everything the service needs.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "notification", version, about = "Decides and sends provisioning emails")]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub nats: events::NatsArgs,
    /// The durable consumer's name; replicas sharing it share the work.
    #[arg(long, env = "NOTIFICATION_CONSUMER", default_value = "notification")]
    pub consumer: String,
    /// Address of the small HTTP server for health probes.
    #[arg(long, env = "NOTIFICATION_HEALTH_LISTEN", default_value = "0.0.0.0:8081")]
    pub health_listen: SocketAddr,
}

/// Applies the service's migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await
}

/// A built, not yet running, notification service.
pub struct Application {
    pool: PgPool,
    config: Config,
    client: async_nats::Client,
    health: TcpListener,
}

impl Application {
    /// Connects to its database (migrating it) and to NATS, and binds the health port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = config.database.pool()?;
        migrate(&pool).await.context("migrating the notification database")?;
        let client = config.nats.connect("notification").await.context("connecting to NATS")?;
        let health = TcpListener::bind(config.health_listen)
            .await
            .with_context(|| format!("binding {}", config.health_listen))?;
        Ok(Application { pool, config, client, health })
    }

    /// The health server's address (useful with port 0).
    pub fn health_addr(&self) -> std::io::Result<SocketAddr> {
        self.health.local_addr()
    }

    /// Consumes events until `shutdown` completes; the message being handled is finished first.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        let consumer = tokio::spawn(consumer::run(
            self.pool.clone(),
            self.config.nats.clone(),
            self.config.consumer.clone(),
            self.client.clone(),
            token.clone(),
        ));
        tracing::info!(health = %self.health.local_addr()?, "notification running");
        let app = Router::new().route("/healthz", get(|| async { "ok" }));
        let stop = token.clone();
        let health = tokio::spawn(async move {
            axum::serve(self.health, app).with_graceful_shutdown(async move { stop.cancelled().await }).await
        });
        shutdown.await;
        token.cancel();
        let _ = consumer.await;
        let _ = health.await;
        Ok(())
    }
}
