//! Configuration, read from the environment (or the equivalent flags).

use std::net::SocketAddr;
use std::time::Duration;

/// A tenant's requests in flight at once per replica, unless `TENANT_MAX_IN_FLIGHT` or the
/// tenant's own limit says otherwise.
pub const DEFAULT_TENANT_MAX_IN_FLIGHT: u32 = 8;

/// Everything the gateway needs.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "scim-gateway", version, about = "SCIM 2.0 endpoint for identity providers")]
pub struct Config {
    /// Address the HTTP server listens on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// user-directory's gRPC endpoint.
    #[arg(long, env = "DIRECTORY_URL", default_value = "http://127.0.0.1:50051")]
    pub directory_url: String,
    /// The secret this gateway presents to user-directory on every call (the directory's
    /// `DIRECTORY_TOKEN`, the same value); at least 32 bytes. Without it, calls carry no token and
    /// only a directory started with `DIRECTORY_INSECURE=true` answers them.
    #[arg(long, env = "DIRECTORY_TOKEN", hide_env_values = true)]
    pub directory_token: Option<secrecy::SecretString>,
    /// TLS to user-directory (`DIRECTORY_URL` then starts with `https://`): the CA (PEM) that
    /// issued the directory's certificate.
    #[arg(long, env = "DIRECTORY_TLS_CA")]
    pub directory_tls_ca: Option<std::path::PathBuf>,
    /// This gateway's client certificate chain (PEM) for mutual TLS with user-directory.
    #[arg(long, env = "DIRECTORY_TLS_CERT")]
    pub directory_tls_cert: Option<std::path::PathBuf>,
    /// The private key of `DIRECTORY_TLS_CERT` (PEM).
    #[arg(long, env = "DIRECTORY_TLS_KEY")]
    pub directory_tls_key: Option<std::path::PathBuf>,
    /// The name the directory's certificate must carry, when not the host of `DIRECTORY_URL`.
    #[arg(long, env = "DIRECTORY_TLS_DOMAIN")]
    pub directory_tls_domain: Option<String>,
    /// The public origin clients reach us at (for example `https://scim.example.com`), used in
    /// `meta.location`. Without it the request's Host and X-Forwarded-Proto are used.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The domain under which tenants have hosts (`acme.<BASE_DOMAIN>`). With it, a Bearer key
    /// presented on a tenant host must belong to that tenant.
    #[arg(long, env = "BASE_DOMAIN")]
    pub base_domain: Option<String>,
    /// How long a successful credential check is reused, in seconds. Revocations, suspensions and
    /// pauses reach the cache through events within a second; this is the bound when NATS is
    /// unreachable.
    #[arg(long, env = "AUTH_CACHE_TTL_SECS", default_value_t = 5)]
    pub auth_cache_ttl_secs: u64,
    /// A tenant's requests per second, unless the tenant has its own limit (per gateway replica).
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = 50)]
    pub rate_limit_per_second: u32,
    /// A tenant's burst: requests accepted at once after a quiet period.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,
    /// A tenant's requests in flight at once (per replica), unless the tenant has its own limit;
    /// beyond it the tenant's requests are answered 429 with `Retry-After` until one finishes, so
    /// that no tenant holds more than its share of the directory's connections.
    #[arg(long, env = "TENANT_MAX_IN_FLIGHT", default_value_t = DEFAULT_TENANT_MAX_IN_FLIGHT, value_parser = clap::value_parser!(u32).range(1..))]
    pub tenant_max_in_flight: u32,
    /// Failed authentications accepted per minute from one source address, and for one
    /// subdomain; beyond that, unknown credentials are answered 429 until the budget refills.
    #[arg(long, env = "AUTH_FAILURES_PER_MINUTE", default_value_t = 30)]
    pub auth_failures_per_minute: u32,
    /// Take the client's address from the last `X-Forwarded-For` entry (set this only behind a
    /// proxy that appends it, such as the ingress); otherwise the connection's peer address.
    #[arg(long, env = "TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,
    /// Record every SCIM request in the tenant's request log.
    #[arg(long, env = "REQUEST_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub request_log: bool,
    /// The most of a request or response body the request log keeps, in bytes.
    #[arg(long, env = "REQUEST_LOG_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub request_log_max_body_bytes: usize,
    #[command(flatten)]
    pub nats: events::NatsArgs,
    /// The largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers, in seconds, from the moment the
    /// gateway waits for them (so also how long an idle keep-alive connection is kept); then the
    /// connection is closed. Bounds slow-header ("slowloris") clients. The default, 65, is above
    /// ingress-nginx's upstream keep-alive (60 s), so that the proxy, not the gateway, closes an
    /// idle connection: a request the proxy sends just as the gateway closes would be a 502.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_SECS", default_value_t = 65, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout_secs: u64,
    /// How long reading a request's body may take in all, in seconds, from the first read; then
    /// the request is answered 408 and the connection closed. Bounds slow-body clients.
    #[arg(long, env = "HTTP_BODY_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_body_timeout_secs: u64,
    /// The most client connections open at once. Beyond it the gateway accepts no more until one
    /// closes: further connections wait in the listen backlog (and are served then), they are
    /// not refused.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,
    /// How long a call to user-directory may take, in seconds (Okta gives up after 60).
    #[arg(long, env = "DIRECTORY_TIMEOUT_SECS", default_value_t = 30)]
    pub directory_timeout_secs: u64,
    /// On SIGTERM: how long to keep serving, unready, before no longer accepting connections, in
    /// seconds, so that load balancers stop sending requests first. In-flight requests are then
    /// finished whatever this is.
    #[arg(long, env = "SHUTDOWN_DELAY_SECS", default_value_t = 5)]
    pub shutdown_delay_secs: u64,
    /// The token our support signs in to any tenant's console with (read-only, except the
    /// actions that say otherwise; every action is in the tenant's request log). Without it,
    /// operators cannot sign in.
    #[arg(long, env = "CONSOLE_OPERATOR_TOKEN", hide_env_values = true)]
    pub console_operator_token: Option<secrecy::SecretString>,
    /// Failed operator sign-ins accepted per minute from all addresses together (per replica);
    /// beyond that every operator sign-in is answered 429 until the budget refills.
    #[arg(long, env = "CONSOLE_OPERATOR_FAILURES_PER_MINUTE", default_value_t = 10)]
    pub console_operator_failures_per_minute: u32,
    /// Console cookies are `Secure` (sent over HTTPS only); turn off only for a local run over
    /// plain HTTP.
    #[arg(long, env = "CONSOLE_COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub console_cookie_secure: bool,
    /// The notification service's health address, where the console's health page reads a
    /// tenant's email figures (inside the cluster only); empty: the page shows none.
    #[arg(long, env = "NOTIFICATION_URL", default_value = "http://127.0.0.1:8081")]
    pub notification_url: String,
    /// The secret presented to the notification service for those figures (its
    /// `NOTIFICATION_TOKEN`); without it the page shows none.
    #[arg(long, env = "NOTIFICATION_TOKEN", hide_env_values = true)]
    pub notification_token: Option<secrecy::SecretString>,
    /// A console session not used for this long ends, in seconds.
    #[arg(long, env = "CONSOLE_IDLE_SECS", default_value_t = 1800, value_parser = clap::value_parser!(u32).range(60..=604_800))]
    pub console_idle_secs: u32,
}

impl Config {
    pub fn auth_cache_ttl(&self) -> Duration {
        Duration::from_secs(self.auth_cache_ttl_secs)
    }

    pub fn directory_timeout(&self) -> Duration {
        Duration::from_secs(self.directory_timeout_secs)
    }

    pub fn http_header_timeout(&self) -> Duration {
        Duration::from_secs(self.http_header_timeout_secs)
    }

    pub fn http_body_timeout(&self) -> Duration {
        Duration::from_secs(self.http_body_timeout_secs)
    }
}
