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
}
