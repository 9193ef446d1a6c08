//! user-directory: the owner of all identity data (tenants, API keys, users). It serves the
//! gRPC API the gateway calls, writes every change's lifecycle event to an outbox in the same
//! transaction, and relays the outbox to JetStream.
//!
//! [`Application::build`] wires it from a [`Config`]; [`Application::run_until`] serves until the
//! shutdown future completes. `main.rs` and the tests drive exactly these.

pub mod apikey;
pub mod cli;
pub mod config;
pub mod erasure;
pub mod fairness;
pub mod grpc;
pub mod observe;
pub mod offboard;
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
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;

pub use config::{Config, DatabaseArgs};
pub use store::Store;

/// A built, not yet running, user-directory.
pub struct Application {
    listener: TcpListener,
    store: Store,
    nats: events::NatsArgs,
    client: async_nats::Client,
    /// What callers of `Directory` present; `None` only with `DIRECTORY_INSECURE=true`.
    token: Option<infra::secret::Token>,
    /// The `Admin` service's own port and token, when it is served.
    admin: Option<(TcpListener, infra::secret::Token)>,
    console: grpc::ConsolePolicy,
    /// TLS on the gRPC port (mutual when a client CA is configured).
    tls: Option<tonic::transport::ServerTlsConfig>,
    /// Whether callers must present a certificate of our CA.
    mutual_tls: bool,
    /// The plain-text health-only port, when configured.
    health_listener: Option<TcpListener>,
    retention_days: u32,
    outbox_retention_hours: u32,
    shares: fairness::Shares,
    list_cap: fairness::ListCap,
}

impl Application {
    /// Connects to the database (migrating it) and to NATS, and binds the gRPC port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let tls = server_tls(&config)?;
        let mutual_tls = tls.as_ref().is_some_and(|(_, mutual)| *mutual);
        if let Some((tls, _)) = &tls {
            // Checked now, so that a bad certificate stops the start, not the serving.
            tonic::transport::Server::builder().tls_config(tls.clone()).context("DIRECTORY_TLS_*")?;
        }
        let (token, admin_token, console) = secrets(&config, mutual_tls)?;
        Store::migrate(&config.database).await.context("migrating the directory database")?;
        // Refused when the connections would act as a role row-level security does not bind.
        let pool = config.database.pool_as_checked(store::APP_ROLE).await.context("user-directory's database role")?;
        let store = Store::new(pool, &config.nats.nats_subject_prefix);
        match store.maintenance_warnings().await {
            Ok(warnings) => {
                for warning in warnings {
                    tracing::warn!(
                        "{warning}; statistics go stale and dead rows pile up (outbox, updated users): turn autovacuum on, or run ANALYZE and VACUUM on a schedule (docs/runbook.md)"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the database's maintenance settings"),
        }
        let client = config.nats.connect("user-directory").await.context("connecting to NATS")?;
        let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let admin = match (config.admin_listen, admin_token) {
            (Some(addr), Some(admin_token)) => {
                let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
                Some((listener, admin_token))
            }
            _ => None,
        };
        let health_listener = match config.health_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?),
            None => None,
        };
        Ok(Application {
            listener,
            store,
            nats: config.nats,
            client,
            token,
            admin,
            console,
            tls: tls.map(|(tls, _)| tls),
            mutual_tls,
            health_listener,
            retention_days: config.request_log_retention_days,
            outbox_retention_hours: config.outbox_retention_hours,
            shares: fairness::Shares::new(
                config
                    .tenant_max_connections
                    .unwrap_or_else(|| fairness::Shares::default_for(config.database.database_max_connections)),
            ),
            list_cap: fairness::ListCap::new(config.list_max_members),
        })
    }

    /// The address of the plain-text health-only port, when configured.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address the `Admin` service listens on, when it is served.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
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
        let pruner =
            tokio::spawn(prune(self.store.clone(), self.retention_days, self.outbox_retention_hours, token.clone()));
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<DirectoryServer<grpc::DirectoryService>>().await;
        let stopping = CancellationToken::new();
        let stopping_admin = stopping.clone();
        let stopping_health = stopping.clone();
        let watcher = tokio::spawn(watch_database(self.store.clone(), health_reporter.clone(), stopping.clone()));
        // Shutting down: unready first (gRPC health), then stop accepting and finish in-flight calls.
        let shutdown = async move {
            shutdown.await;
            stopping.cancel();
            health_reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            health_reporter.set_not_serving::<DirectoryServer<grpc::DirectoryService>>().await;
        };
        // The caller's token is checked by the interceptor, on the request's metadata, before the
        // service decodes the body.
        let service = InterceptedService::new(
            DirectoryServer::new(grpc::DirectoryService::new(
                self.store.clone(),
                self.console,
                self.shares,
                self.list_cap,
                erasure::StreamEraser::new(self.client.clone(), self.nats.clone()),
            ))
            .max_decoding_message_size(16 * 1024 * 1024),
            grpc::caller_auth(self.token.clone()),
        );
        let insecure = (self.token.is_none() && !self.mutual_tls).then(|| tokio::spawn(warn_insecure(token.clone())));
        let health_only = self.health_listener.map(|listener| {
            let server = tonic::transport::Server::builder()
                .add_service(health_service.clone())
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), stopping_health.cancelled_owned());
            tokio::spawn(server)
        });
        let admin = self.admin.map(|(listener, admin_token)| {
            let addr = listener.local_addr().ok();
            tracing::info!(addr = ?addr, "user-directory Admin service listening");
            let server = tonic::transport::Server::builder()
                .layer(observe::TraceLayer)
                .add_service(AdminServer::with_interceptor(
                    grpc::AdminService::new(self.store.clone()),
                    grpc::admin_auth(admin_token),
                ))
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), stopping_admin.cancelled_owned());
            tokio::spawn(server)
        });
        tracing::info!(addr = %self.listener.local_addr()?, admin = admin.is_some(), "user-directory listening");
        observe::observe_pool(self.store.pool().clone(), self.store.statements().clone(), "user-directory");
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            server = server.tls_config(tls).context("DIRECTORY_TLS_*")?;
        }
        let result = server
            .layer(observe::TraceLayer)
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpIncoming::from(self.listener).with_nodelay(Some(true)), shutdown)
            .await;
        token.cancel();
        if let Some(admin) = admin {
            match admin.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "the Admin service stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "the Admin service's task failed"),
                Ok(Ok(())) => {}
            }
        }
        if let Some(insecure) = insecure {
            let _ = insecure.await;
        }
        if let Some(health) = health_only {
            let _ = health.await;
        }
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

/// Deletes request-log entries older than the retention, published outbox rows older than
/// theirs, and the brake's ledger older than a week, hourly (every replica may; deletes are
/// idempotent and batched).
async fn prune(store: Store, days: u32, outbox_hours: u32, token: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = every.tick() => {}
        }
        until_done("request log", || store.prune_requests(days)).await;
        until_done("published outbox rows", || store.prune_outbox(outbox_hours, 10_000)).await;
        until_done("deprovision ledger", || store.prune_deprovisions()).await;
    }
}

/// Runs one batched prune until a batch deletes nothing (or fails: the next hour retries).
async fn until_done<F: Future<Output = Result<u64, sqlx::Error>>>(what: &str, mut batch: impl FnMut() -> F) {
    loop {
        match batch().await {
            Ok(0) => return,
            Ok(n) => tracing::info!(deleted = n, "{what} pruned"),
            Err(e) => {
                tracing::warn!(error = %e, "pruning the {what} failed; will retry");
                return;
            }
        }
    }
}

/// The secrets of the configuration, checked: the callers' token (required unless
/// `DIRECTORY_INSECURE=true`), the `Admin` service's (required when it is served), the operator's.
/// Each is kept only as a digest, and each must be at least 32 bytes.
fn secrets(
    config: &Config,
    mutual_tls: bool,
) -> anyhow::Result<(Option<infra::secret::Token>, Option<infra::secret::Token>, grpc::ConsolePolicy)> {
    use infra::secret::Token;
    let token = config.token.as_ref().map(|t| Token::new("DIRECTORY_TOKEN", t)).transpose()?;
    if token.is_none() && !mutual_tls && !config.insecure {
        anyhow::bail!(
            "DIRECTORY_TOKEN is not set (nor mutual TLS): the Directory service would answer anyone who reaches its port. \
             Set DIRECTORY_TOKEN here and on every gateway (docs/deploy.md), or DIRECTORY_INSECURE=true for local development"
        );
    }
    let admin_token = config.admin_token.as_ref().map(|t| Token::new("DIRECTORY_ADMIN_TOKEN", t)).transpose()?;
    match (config.admin_listen, &admin_token) {
        (Some(_), None) => anyhow::bail!("DIRECTORY_ADMIN_LISTEN is set but DIRECTORY_ADMIN_TOKEN is not"),
        (None, Some(_)) => tracing::warn!(
            "DIRECTORY_ADMIN_TOKEN is set but DIRECTORY_ADMIN_LISTEN is not: the Admin service is not served"
        ),
        _ => {}
    }
    let operator = config.operator_token.as_ref().map(|t| Token::new("CONSOLE_OPERATOR_TOKEN", t)).transpose()?;
    let console = grpc::ConsolePolicy {
        operator,
        max_lifetime: std::time::Duration::from_secs(u64::from(config.console_session_max_secs)),
    };
    Ok((token, admin_token, console))
}

/// With `DIRECTORY_INSECURE=true`: says so every minute, so that it is not forgotten in a log.
async fn warn_insecure(token: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = every.tick() => tracing::warn!(
                "DIRECTORY_INSECURE=true: the Directory service answers anyone who reaches its port, without a token"
            ),
        }
    }
}

/// TLS of the gRPC port from `DIRECTORY_TLS_CERT` and `DIRECTORY_TLS_KEY`, mutual (callers must
/// present a certificate `DIRECTORY_TLS_CLIENT_CA` issued) when that is set too; and whether it is.
fn server_tls(config: &Config) -> anyhow::Result<Option<(tonic::transport::ServerTlsConfig, bool)>> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {what} from {}", path.display()))
    };
    match (&config.tls_cert, &config.tls_key) {
        (None, None) if config.tls_client_ca.is_some() => {
            anyhow::bail!("DIRECTORY_TLS_CLIENT_CA needs DIRECTORY_TLS_CERT and DIRECTORY_TLS_KEY")
        }
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            let identity = Identity::from_pem(read("DIRECTORY_TLS_CERT", cert)?, read("DIRECTORY_TLS_KEY", key)?);
            let tls = ServerTlsConfig::new().identity(identity);
            match &config.tls_client_ca {
                Some(ca) => {
                    Ok(Some((tls.client_ca_root(Certificate::from_pem(read("DIRECTORY_TLS_CLIENT_CA", ca)?)), true)))
                }
                None => Ok(Some((tls, false))),
            }
        }
        _ => anyhow::bail!("DIRECTORY_TLS_CERT and DIRECTORY_TLS_KEY go together"),
    }
}
