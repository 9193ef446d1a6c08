//! The notification binary: the consumer (default), `migrate` for its own database, and the
//! dead-letter commands.

use clap::{Parser, Subcommand};
use infra::DatabaseArgs;
use notification::{Application, Config, MailArgs};
use uuid::Uuid;

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
    /// Emails whose last delivery attempt failed.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
}

#[derive(Subcommand)]
enum DeadLetters {
    /// List them.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Send them (all, or one by id) again now.
    Redrive {
        /// One email's id; all of them when absent.
        id: Option<Uuid>,
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        mail: MailArgs,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = telemetry::init("notification");
    let result = run().await;
    telemetry.shutdown();
    result
}

async fn run() -> anyhow::Result<()> {
    let config = match Cli::parse().command {
        None => Config::parse_from(["notification"]),
        Some(Command::Serve(config)) => *config,
        Some(Command::Migrate(db)) => {
            notification::migrate(&db).await?;
            println!("migrated");
            return Ok(());
        }
        Some(Command::DeadLetters(DeadLetters::List { json, db })) => {
            let letters = notification::store::dead_letters(&infra::Statements::new(db.pool()?)).await?;
            if json {
                let rows: Vec<_> = letters
                    .iter()
                    .map(|e| serde_json::json!({"id": e.id, "eventId": e.event_id, "template": e.template, "attempts": e.attempts, "lastError": e.last_error}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{} dead letter(s)", letters.len());
                for e in letters {
                    println!(
                        "  {}  {:<17} attempts {}  {}",
                        e.id,
                        e.template,
                        e.attempts,
                        e.last_error.unwrap_or_default()
                    );
                }
            }
            return Ok(());
        }
        Some(Command::DeadLetters(DeadLetters::Redrive { id, db, mail })) => {
            let (sent, failing) = notification::redrive(&db.pool()?, &mail, id).await?;
            println!("re-driven: {sent} sent, {failing} still failing");
            return Ok(());
        }
    };
    Application::build(config).await?.run_until(infra::shutdown_signal()).await
}
