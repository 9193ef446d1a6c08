//! The notification binary: the consumer (default) and `migrate` for its own database.

use clap::{Parser, Subcommand};
use infra::DatabaseArgs;
use notification::{Application, Config};

#[derive(Parser)]
#[command(name = "notification", version, about = "Decides and sends provisioning emails")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume events (the default).
    Serve(Box<Config>),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let config = match Cli::parse().command {
        None => Config::parse_from(["notification"]),
        Some(Command::Serve(config)) => *config,
        Some(Command::Migrate(db)) => {
            notification::migrate(&db.pool()?).await?;
            println!("migrated");
            return Ok(());
        }
    };
    Application::build(config).await?.run_until(infra::shutdown_signal()).await
}
