//! The user-directory binary: the gRPC server (default) and the admin commands of the operator
//! interface (`migrate`, `tenant create`, `key issue|list|revoke`).

use clap::{Parser, Subcommand};
use user_directory::{Application, Config, DatabaseArgs, Store, cli};

#[derive(Parser)]
#[command(name = "user-directory", version, about = "Identity data, gRPC API and event outbox")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API and relay events (the default).
    Serve(Box<Config>),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(cli::TenantCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(cli::KeyCommand),
    /// One user of a tenant: their platform role, the erasure of their data.
    #[command(subcommand)]
    User(cli::UserCommand),
    /// Deactivations held by the mass-deprovision brake.
    #[command(subcommand)]
    Held(cli::HeldCommand),
    /// The outbox of events (kept after publication for OUTBOX_RETENTION_HOURS).
    #[command(subcommand)]
    Outbox(cli::OutboxCommand),
    /// Bulk test data: many tenants of many users (benchmarks and capacity tests only).
    Seed(Box<cli::SeedArgs>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = telemetry::init("user-directory");
    let result = match Cli::parse().command {
        None => serve(Config::parse_from(["user-directory"])).await,
        Some(Command::Serve(config)) => serve(*config).await,
        Some(Command::Migrate(db)) => {
            Store::migrate(&db).await?;
            println!("migrated");
            Ok(())
        }
        Some(Command::Tenant(cmd)) => cli::tenant(cmd).await,
        Some(Command::Key(cmd)) => cli::key(cmd).await,
        Some(Command::User(cmd)) => cli::user(cmd).await,
        Some(Command::Held(cmd)) => cli::held(cmd).await,
        Some(Command::Outbox(cmd)) => cli::outbox(cmd).await,
        Some(Command::Seed(args)) => cli::seed(*args).await,
    };
    telemetry.shutdown();
    result
}

async fn serve(config: Config) -> anyhow::Result<()> {
    Application::build(config).await?.run_until(infra::shutdown_signal()).await
}
