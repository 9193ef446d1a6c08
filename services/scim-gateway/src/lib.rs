//! scim-gateway: the SCIM 2.0 endpoint identity providers talk to. Stateless and horizontally
//! scaled: it authenticates, speaks the SCIM protocol (with the `scim` crate), and calls
//! user-directory over one long-lived gRPC channel.
//!
//! [`Application::build`] wires it from a [`Config`]; [`Application::run_until`] serves until the
//! shutdown future completes, finishing in-flight requests. `main.rs` and the tests drive exactly
//! these.

pub mod auth;
pub mod config;
pub mod console;
pub mod directory;
pub mod discovery;
pub mod error;
pub mod limits;
pub mod observe;
pub mod reports;
pub mod request_log;
pub mod resources;
pub mod revocation;
pub mod scim_json;
pub mod server;
pub mod tenant_api;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub use config::Config;
use error::ApiError;

/// What every handler shares. Cloned for every middleware and handler of every request, so it is
/// one reference-counted pointer: cloning the fields themselves (caches, channels, clients) was a
/// third of the gateway's own CPU time per request (docs/performance.md, finding 10).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct Shared {
    pub config: Arc<Config>,
    pub directory: directory::DirectoryClient,
    health: HealthClient<Channel>,
    pub auth: auth::Authenticator,
    pub limits: limits::Limits,
    /// The request log's queue (none when `REQUEST_LOG=false`).
    pub recorder: Option<request_log::Recorder>,
    /// The digest of `CONSOLE_OPERATOR_TOKEN` (none: no operator can sign in).
    pub operator_token: Option<infra::secret::Token>,
    /// For the console's calls to the notification service (short timeouts: a page never waits
    /// long for a figure).
    pub http: reqwest::Client,
    /// Set when shutdown began: `/readyz` answers 503 so that balancers stop sending requests.
    draining: Arc<std::sync::atomic::AtomicBool>,
}

impl Shared {
    /// The SCIM base URL as clients reach it, for `meta.location`.
    pub fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(public) = &self.config.public_url {
            return format!("{}/scim/v2", public.trim_end_matches('/'));
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        let proto = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .filter(|p| *p == "https" || *p == "http")
            .unwrap_or("http");
        format!("{proto}://{host}/scim/v2")
    }
}

/// A built, not yet running, gateway.
pub struct Application {
    listener: TcpListener,
    router: Router,
    auth: auth::Authenticator,
    revocations: Option<revocation::Subscription>,
    recorder: Option<tokio::task::JoinHandle<()>>,
    draining: Arc<std::sync::atomic::AtomicBool>,
    shutdown_delay: std::time::Duration,
    http_limits: server::Limits,
}

impl Application {
    /// Binds the HTTP port and prepares the channel to user-directory (connected on first use, so
    /// the gateway starts, unready, before the directory does).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let mut endpoint =
            Endpoint::from_shared(config.directory_url.clone()).context("DIRECTORY_URL is not a valid URL")?;
        if let Some(tls) = directory_tls(&config)? {
            endpoint = endpoint.tls_config(tls).context("DIRECTORY_TLS_*")?;
        }
        let channel = endpoint
            .connect_timeout(std::time::Duration::from_secs(2))
            .timeout(config.directory_timeout())
            .tcp_nodelay(true)
            .http2_keep_alive_interval(std::time::Duration::from_secs(30))
            .connect_lazy();
        if let Some(token) = &config.directory_token {
            infra::secret::Token::new("DIRECTORY_TOKEN", token)?;
        }
        let operator_token = config
            .console_operator_token
            .as_ref()
            .map(|t| infra::secret::Token::new("CONSOLE_OPERATOR_TOKEN", t))
            .transpose()?;
        if config.directory_token.is_none() {
            tracing::warn!(
                "DIRECTORY_TOKEN is not set: only a user-directory started with DIRECTORY_INSECURE=true will answer"
            );
        }
        let capture = directory::CaptureEvents::new(channel.clone(), config.directory_token.as_ref())
            .context("DIRECTORY_TOKEN is not a valid header value")?;
        let directory = directory::DirectoryClient::new(capture).max_decoding_message_size(64 * 1024 * 1024);
        let (recorder, recorder_task) = match config.request_log {
            true => {
                let (r, task) = request_log::Recorder::start(directory.clone());
                (Some(r), Some(task))
            }
            false => (None, None),
        };
        let state = AppState(Arc::new(Shared {
            auth: auth::Authenticator::new(
                config.auth_cache_ttl(),
                config.base_domain.clone(),
                config.trust_forwarded_for,
            ),
            limits: limits::Limits::new(
                (config.rate_limit_per_second, config.rate_limit_burst),
                config.tenant_max_in_flight,
                config.auth_failures_per_minute,
                config.console_operator_failures_per_minute,
            ),
            directory,
            operator_token,
            health: HealthClient::new(channel),
            recorder,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(2))
                .build()
                .context("building the HTTP client")?,
            draining: Arc::default(),
            config: Arc::new(config),
        }));
        let listener =
            TcpListener::bind(state.config.listen).await.with_context(|| format!("binding {}", state.config.listen))?;
        Ok(Application {
            listener,
            auth: state.auth.clone(),
            draining: state.draining.clone(),
            shutdown_delay: std::time::Duration::from_secs(state.config.shutdown_delay_secs),
            http_limits: server::Limits {
                header_timeout: state.config.http_header_timeout(),
                max_connections: state.config.http_max_connections,
            },
            revocations: revocation::subscribe(&state.config.nats).await,
            router: router(state),
            recorder: recorder_task,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; then answers `/readyz` with 503 while still serving for
    /// `SHUTDOWN_DELAY_SECS` (balancers take it out meanwhile), stops accepting, finishes
    /// in-flight requests and writes the request log's last records.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(addr = %self.listener.local_addr()?, "scim-gateway listening");
        let (draining, delay) = (self.draining.clone(), self.shutdown_delay);
        let shutdown = async move {
            shutdown.await;
            draining.store(true, std::sync::atomic::Ordering::SeqCst);
            if !delay.is_zero() {
                tracing::info!(delay_secs = delay.as_secs(), "draining: unready, still serving");
                tokio::time::sleep(delay).await;
            }
        };
        let token = CancellationToken::new();
        let listener = self.revocations.map(|s| tokio::spawn(revocation::listen(s, self.auth, token.clone())));
        server::serve(self.listener, self.router, self.http_limits, shutdown).await;
        token.cancel();
        if let Some(listener) = listener {
            let _ = listener.await;
        }
        if let Some(task) = self.recorder
            && tokio::time::timeout(std::time::Duration::from_secs(10), task).await.is_err()
        {
            tracing::warn!("the request log's last records could not be written in time");
        }
        Ok(())
    }
}

/// TLS to user-directory from `DIRECTORY_TLS_CA` (and, for mutual TLS, this gateway's
/// `DIRECTORY_TLS_CERT` and `DIRECTORY_TLS_KEY`).
fn directory_tls(config: &Config) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {what} from {}", path.display()))
    };
    let Some(ca) = &config.directory_tls_ca else {
        if config.directory_tls_cert.is_some() || config.directory_tls_key.is_some() {
            anyhow::bail!("DIRECTORY_TLS_CERT and DIRECTORY_TLS_KEY need DIRECTORY_TLS_CA");
        }
        return Ok(None);
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("DIRECTORY_TLS_CA", ca)?));
    match (&config.directory_tls_cert, &config.directory_tls_key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(read("DIRECTORY_TLS_CERT", cert)?, read("DIRECTORY_TLS_KEY", key)?));
        }
        (None, None) => {}
        _ => anyhow::bail!("DIRECTORY_TLS_CERT and DIRECTORY_TLS_KEY go together"),
    }
    if let Some(domain) = &config.directory_tls_domain {
        tls = tls.domain_name(domain.clone());
    }
    Ok(Some(tls))
}

/// The routes. Only SCIM routes require credentials; health probes never do.
pub fn router(state: AppState) -> Router {
    let tenant_api = tenant_api::routes(&state)
        .route_layer(middleware::from_fn(scim_json::require_json))
        .route_layer(middleware::from_fn_with_state(state.clone(), limits::rate_limit))
        .route_layer(middleware::from_fn(|r, n| auth::require_scope("admin", r, n)));
    let scim = Router::new()
        .merge(scim_routes(&state).route_layer(middleware::from_fn(|r, n| auth::require_scope("scim", r, n))))
        .merge(tenant_api)
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_tenant));
    Router::new()
        .merge(scim)
        .merge(discovery::routes())
        .merge(console::routes(&state))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        // Inside `observe`, so that metrics and traces see the status the client was answered.
        .layer(middleware::from_fn(error::refusals))
        .layer(middleware::from_fn(observe::observe))
        .layer(middleware::from_fn_with_state(state.clone(), server::body_deadline))
        .with_state(state)
}

/// The SCIM resource routes of an authenticated tenant: each request is logged, its body must be
/// JSON (415 otherwise), then it is admitted by the tenant's rate limit and pause. The request
/// log's re-drive sends requests through these.
pub fn scim_routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .merge(resources::routes(resources::Kind::User))
        .merge(resources::routes(resources::Kind::Group))
        .route("/scim/v2/.search", axum::routing::post(resources::search_all).fallback(method_not_allowed))
        .route_layer(middleware::from_fn_with_state(state.clone(), limits::pause))
        .route_layer(middleware::from_fn_with_state(state.clone(), limits::rate_limit))
        .route_layer(middleware::from_fn(scim_json::require_json))
        .route_layer(middleware::from_fn_with_state(state.clone(), request_log::record))
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when user-directory answers its health check and accepts this gateway's token, and not
/// shutting down.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let check = state.health.clone().check(HealthCheckRequest { service: String::new() }).await;
    if !matches!(check.map(|r| r.into_inner().status()), Ok(ServingStatus::Serving)) {
        return (StatusCode::SERVICE_UNAVAILABLE, "user-directory unreachable").into_response();
    }
    match state.directory.clone().ping(proto::directory::v1::PingRequest {}).await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(s) if s.code() == tonic::Code::Unauthenticated => {
            tracing::warn!("user-directory refuses this gateway's DIRECTORY_TOKEN: not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "user-directory refuses this gateway's token").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "user-directory unreachable").into_response(),
    }
}

/// 405 with a SCIM body, for a method a route does not serve (routed before any body is read).
pub async fn method_not_allowed() -> ApiError {
    ApiError::http(StatusCode::METHOD_NOT_ALLOWED, "This method is not supported on this endpoint.")
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::http(StatusCode::NOT_FOUND, "There is no such endpoint.")
}
