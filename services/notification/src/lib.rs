//! notification: consumes provisioning events from JetStream with a durable consumer, keeps its
//! own projection of recipients, decides (and records, with the reason) what each event means for
//! someone's inbox, and sends the emails it decided on through SMTP. It never calls back into
//! user-directory to decide.
//!
//! [`Application::build`] wires it from a [`Config`]; [`Application::run_until`] runs until the
//! shutdown future completes. `main.rs` and the tests drive exactly these.

pub mod batch;
pub mod consumer;
pub mod decide;
pub mod mailer;
pub mod store;
pub mod templates;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use infra::DatabaseArgs;
use lettre::message::Mailbox;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::consumer::Worker;
use crate::mailer::Mailer;

/// How email leaves.
#[derive(Debug, Clone, clap::Args)]
pub struct MailArgs {
    /// `smtp://host:port` (add `?tls=required` for STARTTLS), `smtps://host:port`, credentials as
    /// `smtp://user:pass@host`, or `file:///dir` to write `.eml` files.
    #[arg(long, env = "SMTP_URL", default_value = "smtp://127.0.0.1:25", hide_env_values = true)]
    pub smtp_url: String,
    /// The sender of every email.
    #[arg(long, env = "MAIL_FROM", default_value = "Learning Platform <no-reply@learning.example.com>")]
    pub mail_from: String,
    /// How long one SMTP exchange may take, in seconds.
    #[arg(long, env = "SMTP_TIMEOUT_SECS", default_value_t = 30)]
    pub smtp_timeout_secs: u64,
}

impl MailArgs {
    pub fn mailer(&self) -> anyhow::Result<Mailer> {
        Mailer::from_url(&self.smtp_url, Duration::from_secs(self.smtp_timeout_secs)).context("SMTP_URL")
    }

    /// The longest a whole send may take (connecting, then the exchange): beyond it, the
    /// attempt counts as a transient failure.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.smtp_timeout_secs.saturating_mul(2).max(1))
    }

    pub fn from(&self) -> anyhow::Result<Mailbox> {
        self.mail_from.parse().context("MAIL_FROM is not an address")
    }
}

/// Everything the service needs.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "notification", version, about = "Decides and sends provisioning emails")]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub nats: events::NatsArgs,
    #[command(flatten)]
    pub mail: MailArgs,
    /// The durable consumer's name; replicas sharing it share the work.
    #[arg(long, env = "NOTIFICATION_CONSUMER", default_value = "notification")]
    pub consumer: String,
    /// Address of the small HTTP server for health probes.
    #[arg(long, env = "NOTIFICATION_HEALTH_LISTEN", default_value = "0.0.0.0:8081")]
    pub health_listen: SocketAddr,
    /// The platform's sign-in address in emails; `{tenant}` becomes the tenant's subdomain.
    #[arg(long, env = "PLATFORM_URL", default_value = "https://{tenant}.learning.example.com")]
    pub platform_url: String,
    /// The waits between attempts to deliver an email (`ms`, `s`, `m`, `h`); after the last one
    /// the email is dead-lettered.
    #[arg(long, env = "NOTIFICATION_RETRY_DELAYS", default_value = "10s,1m,5m,15m,1h", value_parser = parse_delays)]
    pub retry_delays: Delays,
    /// The secret the gateways present (`authorization: Bearer`) to read a tenant's email
    /// figures on the health port; at least 32 bytes. Without it that route is not served.
    #[arg(long, env = "NOTIFICATION_TOKEN", hide_env_values = true)]
    pub token: Option<secrecy::SecretString>,
    /// The most decisions recorded in one statement (ADR 0027); 1 records each on its own.
    #[arg(long, env = "NOTIFICATION_DECISION_BATCH", default_value_t = batch::MAX_BATCH,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub decision_batch: u16,
}

/// A list of delays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delays(pub Vec<Duration>);

/// Parses `100ms,10s,1m,2h`.
pub fn parse_delays(s: &str) -> Result<Delays, String> {
    let one = |part: &str| -> Result<Duration, String> {
        let part = part.trim();
        let split = part.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| format!("{part}: a number and a unit"))?;
        let (n, unit) = part.split_at(split);
        let n: u64 = n.parse().map_err(|_| format!("{part}: not a number"))?;
        Ok(match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(format!("{part}: the unit is ms, s, m or h")),
        })
    };
    let delays = s.split(',').filter(|p| !p.trim().is_empty()).map(one).collect::<Result<Vec<_>, _>>()?;
    if delays.is_empty() {
        return Err("at least one delay".to_owned());
    }
    Ok(Delays(delays))
}

/// Applies the service's migrations, on a connection of their own: without the pool's statement
/// timeout, since a migration may take long, and so may waiting for another replica's (sqlx
/// holds an advisory lock while it migrates).
pub async fn migrate(db: &infra::DatabaseArgs) -> Result<(), sqlx::migrate::MigrateError> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect_with(&db.options()?).await?;
    sqlx::migrate!("./migrations").run(&mut conn).await?;
    conn.close().await.ok();
    Ok(())
}

/// A built, not yet running, notification service.
pub struct Application {
    worker: Arc<Worker>,
    config: Config,
    client: async_nats::Client,
    health: TcpListener,
    /// What callers of the internal route present (none: the route is not served).
    token: Option<infra::secret::Token>,
}

impl Application {
    /// Connects to its database (migrating it) and to NATS, prepares templates and the mail
    /// transport, and binds the health port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let token = config.token.as_ref().map(|t| infra::secret::Token::new("NOTIFICATION_TOKEN", t)).transpose()?;
        migrate(&config.database).await.context("migrating the notification database")?;
        let pool = config.database.pool()?;
        let db = infra::Statements::new(pool);
        let worker = Arc::new(Worker {
            send_timeout: config.mail.send_timeout(),
            batch: batch::Batcher::start(db.clone(), config.decision_batch),
            db,
            templates: Arc::new(templates::Templates::new()?),
            settings: store::Settings { platform_url: config.platform_url.clone() },
            mailer: config.mail.mailer()?,
            from: config.mail.from()?,
            retry_delays: config.retry_delays.0.clone(),
        });
        let client = config.nats.connect("notification").await.context("connecting to NATS")?;
        let health = TcpListener::bind(config.health_listen)
            .await
            .with_context(|| format!("binding {}", config.health_listen))?;
        Ok(Application { worker, config, client, health, token })
    }

    /// The health server's address (useful with port 0).
    pub fn health_addr(&self) -> std::io::Result<SocketAddr> {
        self.health.local_addr()
    }

    /// Consumes events until `shutdown` completes; the message being handled is finished first.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        // The connections idle in the list of single statements count as idle.
        let db = self.worker.db.clone();
        telemetry::observe_pool("notification", db.pool().options().get_max_connections(), move || {
            (db.pool().size(), db.pool().num_idle() + db.idle())
        });
        let consumer = tokio::spawn(consumer::run(
            self.worker.clone(),
            self.config.nats.clone(),
            self.config.consumer.clone(),
            self.client.clone(),
            token.clone(),
        ));
        tracing::info!(health = %self.health.local_addr()?, "notification running");
        let (db, nats) = (self.worker.db.clone(), self.client.clone());
        let activity_db = self.worker.db.clone();
        let mut app = Router::new().route("/healthz", get(|| async { "ok" })).route(
            "/readyz",
            get(move || {
                let (db, nats) = (db.clone(), nats.clone());
                async move { readiness(&db, &nats).await }
            }),
        );
        if let Some(token) = self.token {
            app = app.route(
                "/internal/v1/tenants/{tenant_id}/emails",
                get(move |headers: axum::http::HeaderMap, path: axum::extract::Path<String>| {
                    let (db, token) = (activity_db.clone(), token.clone());
                    async move {
                        use axum::response::IntoResponse as _;
                        let presented = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                        if !token.matches_bearer(presented) {
                            return (axum::http::StatusCode::UNAUTHORIZED, "the caller's token is missing or wrong")
                                .into_response();
                        }
                        email_activity(&db, &path.0).await
                    }
                }),
            );
        }
        let stop = token.clone();
        let health = tokio::spawn(async move {
            axum::serve(self.health, app).with_graceful_shutdown(async move { stop.cancelled().await }).await
        });
        shutdown.await;
        token.cancel();
        let _ = consumer.await;
        let _ = health.await;
        Ok(())
    }
}

/// Ready when both the database and NATS answer: 200, or 503 naming what does not.
async fn readiness(db: &infra::Statements, nats: &async_nats::Client) -> (axum::http::StatusCode, &'static str) {
    let select = db.run(async |c| sqlx::query("SELECT 1").execute(c).await);
    let db = tokio::time::timeout(std::time::Duration::from_secs(2), select).await.is_ok_and(|r| r.is_ok());
    let broker = nats.connection_state() == async_nats::connection::State::Connected;
    match (db, broker) {
        (true, true) => (axum::http::StatusCode::OK, "ready"),
        (false, _) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
        (true, false) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "NATS unreachable"),
    }
}

/// `GET /internal/v1/tenants/{tenant_id}/emails` (the health port, with `NOTIFICATION_TOKEN`): the
/// tenant's emails of the last 24 hours by status, and the events decided without one by reason,
/// for the console's health page. Counts only: no address, no content.
async fn email_activity(db: &infra::Statements, tenant_id: &str) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let Ok(tenant) = Uuid::parse_str(tenant_id) else {
        return (axum::http::StatusCode::NOT_FOUND, "no such tenant").into_response();
    };
    let since = time::OffsetDateTime::now_utc() - time::Duration::hours(24);
    match store::email_activity(db, tenant, since).await {
        Ok(a) => axum::Json(a).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "reading a tenant's email activity");
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// Re-drives dead letters (all, or one): each is sent again now and its outcome recorded.
/// Returns (sent, still failing).
pub async fn redrive(pool: &PgPool, mail: &MailArgs, only: Option<Uuid>) -> anyhow::Result<(usize, usize)> {
    let db = infra::Statements::new(pool.clone());
    let worker = Worker {
        send_timeout: mail.send_timeout(),
        batch: batch::Batcher::start(db.clone(), 1),
        db: db.clone(),
        templates: Arc::new(templates::Templates::new()?),
        settings: store::Settings { platform_url: String::new() },
        mailer: mail.mailer()?,
        from: mail.from()?,
        // One attempt: a re-drive that fails goes straight back to the dead letters.
        retry_delays: Vec::new(),
    };
    let (mut sent, mut failing) = (0, 0);
    for email in store::dead_letters(&db).await? {
        if only.is_some_and(|id| id != email.id) || !store::revive(&db, email.id).await? {
            continue;
        }
        match worker.deliver(&email, true, "").await? {
            async_nats::jetstream::AckKind::Ack if store::is_sent(&db, email.id).await? => sent += 1,
            _ => failing += 1,
        }
    }
    Ok((sent, failing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse() {
        assert_eq!(
            parse_delays("100ms, 10s,1m,2h").unwrap(),
            Delays(vec![
                Duration::from_millis(100),
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(7200)
            ])
        );
        assert!(parse_delays("").is_err() && parse_delays("10").is_err() && parse_delays("5d").is_err());
    }
}
