//! user-directory: the owner of all identity data (tenants, API keys, users). It serves the
//! gRPC API the gateway calls, writes every change's lifecycle event to an outbox in the same
//! transaction, and relays the outbox to JetStream.
//!
//! [`Application::build`] wires it from a [`Config`]; [`Application::run_until`] serves until the
//! shutdown future completes. `main.rs` and the tests drive exactly these.

pub mod apikey;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod observe;
pub mod relay;
pub mod sql_filter;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use proto::directory::v1::admin_server::AdminServer;
use proto::directory::v1::directory_server::DirectoryServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

pub use config::{Config, DatabaseArgs};
pub use store::Store;

/// A built, not yet running, user-directory.
pub struct Application {
    listener: TcpListener,
    store: Store,
    nats: events::NatsArgs,
    client: async_nats::Client,
    admin_token: Option<secrecy::SecretString>,
    retention_days: u32,
}

impl Application {
    /// Connects to the database (migrating it) and to NATS, and binds the gRPC port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Store::migrate(&config.database).await.context("migrating the directory database")?;
        // Refused when the connections would act as a role row-level security does not bind.
        let pool = config.database.pool_as_checked(store::APP_ROLE).await.context("user-directory's database role")?;
        let store = Store::new(pool, &config.nats.nats_subject_prefix);
        let client = config.nats.connect("user-directory").await.context("connecting to NATS")?;
        let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        Ok(Application {
            listener,
            store,
            nats: config.nats,
            client,
            admin_token: config.admin_token,
            retention_days: config.request_log_retention_days,
        })
    }

    /// The address the gRPC server listens on (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The store, for admin commands and tests.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves gRPC and runs the outbox relay until `shutdown` completes; then stops accepting,
    /// finishes in-flight calls and stops the relay.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        let relay = tokio::spawn(relay::run(self.store.clone(), self.nats.clone(), self.client.clone(), token.clone()));
        let announcer = tokio::spawn(relay::announce(self.store.clone(), token.clone()));
        let pruner = tokio::spawn(prune_request_log(self.store.clone(), self.retention_days, token.clone()));
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<DirectoryServer<grpc::DirectoryService>>().await;
        let stopping = CancellationToken::new();
        let watcher = tokio::spawn(watch_database(self.store.clone(), health_reporter.clone(), stopping.clone()));
        // Shutting down: unready first (gRPC health), then stop accepting and finish in-flight calls.
        let shutdown = async move {
            shutdown.await;
            stopping.cancel();
            health_reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            health_reporter.set_not_serving::<DirectoryServer<grpc::DirectoryService>>().await;
        };
        let service = DirectoryServer::new(grpc::DirectoryService::new(self.store.clone()))
            .max_decoding_message_size(16 * 1024 * 1024);
        let admin = self.admin_token.map(|token| {
            AdminServer::with_interceptor(grpc::AdminService::new(self.store.clone()), grpc::admin_auth(token))
        });
        tracing::info!(addr = %self.listener.local_addr()?, admin = admin.is_some(), "user-directory listening");
        observe::observe_pool(self.store.pool().clone(), self.store.statements().clone(), "user-directory");
        let result = tonic::transport::Server::builder()
            .layer(observe::TraceLayer)
            .add_service(health_service)
            .add_service(service)
            .add_optional_service(admin)
            .serve_with_incoming_shutdown(TcpIncoming::from(self.listener).with_nodelay(Some(true)), shutdown)
            .await;
        token.cancel();
        let _ = relay.await;
        let _ = announcer.await;
        let _ = pruner.await;
        let _ = watcher.await;
        if let Err(e) = self.client.flush().await {
            tracing::warn!(error = %e, "flushing NATS at shutdown");
        }
        result.context("serving gRPC")
    }
}

/// Keeps the gRPC health status (what the gateway's `/readyz` and the kubelet's probe read) in
/// step with the database: NOT_SERVING while PostgreSQL does not answer, checked every 2 s.
async fn watch_database(store: Store, health: tonic_health::server::HealthReporter, stopping: CancellationToken) {
    let mut serving = true;
    loop {
        let ok = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            store.single(async |c| sqlx::query("SELECT 1").execute(c).await),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if stopping.is_cancelled() {
            return;
        }
        if ok != serving {
            serving = ok;
            let status =
                if ok { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
            health.set_service_status("", status).await;
            if ok {
                health.set_serving::<DirectoryServer<grpc::DirectoryService>>().await;
                tracing::info!("database reachable again: serving");
            } else {
                health.set_not_serving::<DirectoryServer<grpc::DirectoryService>>().await;
                tracing::warn!("database unreachable: not serving (readiness false)");
            }
        }
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
    }
}

/// Deletes request-log entries older than the retention, and the brake's ledger older than a
/// week, hourly (every replica may; deletes are
/// idempotent and batched).
async fn prune_request_log(store: Store, days: u32, token: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = every.tick() => {}
        }
        loop {
            match store.prune_requests(days).await {
                Ok(0) => break,
                Ok(n) => tracing::info!(deleted = n, days, "request log pruned"),
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the request log failed; will retry");
                    break;
                }
            }
        }
        loop {
            match store.prune_deprovisions().await {
                Ok(0) => break,
                Ok(n) => tracing::info!(deleted = n, "deprovision ledger pruned"),
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the deprovision ledger failed; will retry");
                    break;
                }
            }
        }
    }
}
