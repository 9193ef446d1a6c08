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
    /// The bearer token the gRPC `Admin` service requires. Without it the `Admin` service is not
    /// served at all (the CLI, which talks to the database, still works).
    #[arg(long, env = "DIRECTORY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<secrecy::SecretString>,
    /// How many days the request log keeps a tenant's SCIM requests.
    #[arg(long, env = "REQUEST_LOG_RETENTION_DAYS", default_value_t = 30)]
    pub request_log_retention_days: u32,
}
