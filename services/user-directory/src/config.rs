//! Configuration, read from the environment (or the equivalent flags).

use std::net::SocketAddr;

pub use infra::DatabaseArgs;

/// Everything the server needs.
#[derive(Debug, Clone, clap::Parser)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "DIRECTORY_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub nats: events::NatsArgs,
    /// The secret every caller of the `Directory` service (the gateways) presents, as
    /// `authorization: Bearer <token>`; at least 32 bytes. Without it (and without mutual TLS) the
    /// directory refuses to start, unless `DIRECTORY_INSECURE=true`.
    #[arg(long, env = "DIRECTORY_TOKEN", hide_env_values = true)]
    pub token: Option<secrecy::SecretString>,
    /// Mutual TLS on the gRPC port (with `DIRECTORY_TLS_KEY`): this server's certificate chain,
    /// PEM. With `DIRECTORY_TLS_CLIENT_CA` too, only callers with a certificate that CA issued
    /// can connect, and `DIRECTORY_TOKEN` becomes optional (both are checked when both are set).
    #[arg(long, env = "DIRECTORY_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of `DIRECTORY_TLS_CERT`, PEM.
    #[arg(long, env = "DIRECTORY_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The CA (PEM) whose certificates callers must present (mutual TLS).
    #[arg(long, env = "DIRECTORY_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// A plain-text port serving only the gRPC health service (for the kubelet's gRPC probe, which
    /// cannot speak TLS). Off by default.
    #[arg(long, env = "DIRECTORY_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Serve `Directory` to anyone who reaches the port, without a token (local development only:
    /// a warning is logged every minute).
    #[arg(long, env = "DIRECTORY_INSECURE", default_value_t = false, action = clap::ArgAction::Set)]
    pub insecure: bool,
    /// The bearer token the gRPC `Admin` service requires (at least 32 bytes).
    #[arg(long, env = "DIRECTORY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<secrecy::SecretString>,
    /// Where the gRPC `Admin` service listens, a port of its own. Without it (the default) the
    /// `Admin` service is not served at all (the CLI, which talks to the database, still works);
    /// with it, `DIRECTORY_ADMIN_TOKEN` is required.
    #[arg(long, env = "DIRECTORY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Our support's console sign-in token (the gateway's `CONSOLE_OPERATOR_TOKEN`, the same
    /// secret): only its digest is kept, and an operator session is opened only when the token
    /// presented is this one. Sessions it opened end when it changes. Without it no operator can
    /// sign in.
    #[arg(long, env = "CONSOLE_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<secrecy::SecretString>,
    /// The absolute lifetime of a console session, in seconds, however active it is.
    #[arg(long, env = "CONSOLE_SESSION_MAX_SECS", default_value_t = 8 * 3600, value_parser = clap::value_parser!(u32).range(60..=604_800))]
    pub console_session_max_secs: u32,
    /// How many days the request log keeps a tenant's SCIM requests.
    #[arg(long, env = "REQUEST_LOG_RETENTION_DAYS", default_value_t = 30)]
    pub request_log_retention_days: u32,
    /// The most of this replica's database connections one tenant's calls hold at once; its
    /// further calls wait for one of its own (up to 5 s, then they are refused as transient, with
    /// `Retry-After`). Default: half of `DATABASE_MAX_CONNECTIONS` (at least 1), so that however
    /// busy one tenant is, the others always have the other half.
    #[arg(long, env = "TENANT_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub tenant_max_connections: Option<u32>,
    /// The most members of a group (or groups of a user) one resource carries in a list
    /// response; a resource with more is listed without them (`GET` it by id for all). A page
    /// carries at most 100 times this many in all; past that, its next resources are listed
    /// without them too.
    #[arg(long, env = "LIST_MAX_MEMBERS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub list_max_members: u32,
    /// How many hours the outbox keeps an event after the stream acknowledged it, so that what
    /// a broker loses can be published again (`user-directory outbox republish`; ADR 0022).
    #[arg(long, env = "OUTBOX_RETENTION_HOURS", default_value_t = 72, value_parser = clap::value_parser!(u32).range(1..=8760))]
    pub outbox_retention_hours: u32,
}
