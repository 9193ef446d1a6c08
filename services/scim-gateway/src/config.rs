//! Configuration, read from the environment (or the equivalent flags).

use std::net::SocketAddr;
use std::time::Duration;

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
    /// The public origin clients reach us at (for example `https://scim.example.com`), used in
    /// `meta.location`. Without it the request's Host and X-Forwarded-Proto are used.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The domain under which tenants have hosts (`acme.<BASE_DOMAIN>`). With it, a Bearer key
    /// presented on a tenant host must belong to that tenant.
    #[arg(long, env = "BASE_DOMAIN")]
    pub base_domain: Option<String>,
    /// How long a successful credential check is reused, in seconds. This is the bound on how
    /// long a revoked key keeps working on a gateway.
    #[arg(long, env = "AUTH_CACHE_TTL_SECS", default_value_t = 5)]
    pub auth_cache_ttl_secs: u64,
    /// The largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How long a call to user-directory may take, in seconds (Okta gives up after 60).
    #[arg(long, env = "DIRECTORY_TIMEOUT_SECS", default_value_t = 30)]
    pub directory_timeout_secs: u64,
}

impl Config {
    pub fn auth_cache_ttl(&self) -> Duration {
        Duration::from_secs(self.auth_cache_ttl_secs)
    }

    pub fn directory_timeout(&self) -> Duration {
        Duration::from_secs(self.directory_timeout_secs)
    }
}
