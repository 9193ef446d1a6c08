//! `user-directory tenant delete SUB --confirm SUB`: offboarding a tenant
//! (docs/adr/0026-offboarding-a-tenant.md). The tenant is suspended first (its credentials stop
//! working, gateways drop it), then every row of it goes, in bounded batches: the directory's
//! tables, the tenant's subjects on the JetStream stream, the notification service's rows, and
//! the `tenants` row last, so that an interrupted run is finished by running the command again.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use clap::Args;
use proto::ErrorKind;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};
use uuid::Uuid;

use crate::Store;
use crate::store::TenantUpdate;
use crate::store::offboard::{count_rows, delete_batch, tenant_tables};

/// The notification service's tables of tenant rows in the order they are emptied (an email
/// points to its decision); any other table with a `tenant_id` column follows.
const NOTIFICATION_ORDER: &[&str] = &["emails", "decisions", "recipients"];

/// How long the command waits for the relay to publish the suspension (so that gateways hear of
/// it) before it deletes the outbox.
const SUSPENSION_WAIT: Duration = Duration::from_secs(15);

/// What `tenant delete` needs: the directory's database, the notification service's, and the
/// event stream (as the directory has them: the same `NATS_*` settings).
#[derive(Debug, Clone, Args)]
pub struct OffboardArgs {
    #[command(flatten)]
    pub db: crate::DatabaseArgs,
    #[command(flatten)]
    pub nats: events::NatsArgs,
    /// PostgreSQL connection URL of the notification service's database.
    #[arg(long, env = "NOTIFICATION_DATABASE_URL", hide_env_values = true)]
    pub notification_database_url: SecretString,
    /// Rows per DELETE: each batch is a transaction of its own, so an interruption loses at
    /// most one batch and a run again goes on from there.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch: i64,
}

/// What a run removed: rows per database and table, and messages of the stream.
#[derive(Debug, Default)]
pub struct Removed {
    pub rows: Vec<(&'static str, String, u64)>,
    pub messages: u64,
}

/// Runs `tenant delete`.
pub async fn delete(subdomain: &str, confirm: &str, args: &OffboardArgs) -> anyhow::Result<()> {
    if confirm != subdomain {
        bail!(
            "refused: --confirm must repeat the subdomain of the tenant to delete ({subdomain}); nothing was deleted"
        );
    }
    Store::migrate(&args.db).await?;
    let store = Store::new(args.db.pool_as(crate::store::APP_ROLE)?, &args.nats.nats_subject_prefix);
    let mut notification = PgConnection::connect_with(
        &args
            .notification_database_url
            .expose_secret()
            .parse::<sqlx::postgres::PgConnectOptions>()
            .context("NOTIFICATION_DATABASE_URL")?
            .disable_statement_logging(),
    )
    .await
    .context("connecting to the notification database")?;
    let mut removed = Removed::default();

    // The tenant's id: from the directory while its row is there, else (a run after one that
    // deleted it) from the recipients the notification service keeps by subdomain.
    let tenant = match store.tenant_by_subdomain(subdomain).await {
        Ok(t) => Some(t),
        Err(e) if e.kind == ErrorKind::NotFound => None,
        Err(e) => return Err(e).context("looking the tenant up"),
    };
    let ids: Vec<Uuid> = match &tenant {
        Some(t) => vec![t.id],
        None => {
            println!(
                "tenant {subdomain}: not in the directory (deleted already); finishing the stream and notifications"
            );
            sqlx::query_scalar("SELECT DISTINCT tenant_id FROM recipients WHERE tenant = $1")
                .bind(subdomain)
                .fetch_all(&mut notification)
                .await
                .context("looking the tenant up in the notification database")?
        }
    };

    if let Some(t) = &tenant {
        println!("tenant {subdomain} ({}): offboarding, {} rows per batch", t.id, args.batch);
        if t.status != "suspended" {
            store
                .update_tenant(subdomain, &TenantUpdate { suspended: Some(true), ..Default::default() })
                .await
                .context("suspending the tenant")?;
            println!("tenant {subdomain}: suspended");
        }
        wait_for_relay(&store, t.id).await?;
        for table in store.offboard_tables().await? {
            let mut n = 0;
            loop {
                let done = store
                    .offboard_batch(&table, t.id, args.batch)
                    .await
                    .with_context(|| format!("deleting from {table} (run the command again to go on)"))?;
                n += done;
                if done == 0 {
                    break;
                }
            }
            println!("directory {table}: {n} rows deleted");
            removed.rows.push(("directory", table, n));
        }
    }

    removed.messages = purge_stream(args, subdomain).await?;

    for id in &ids {
        for table in tenant_tables(&mut notification, NOTIFICATION_ORDER).await? {
            let mut n = 0;
            loop {
                let mut tx = notification.begin().await?;
                let done = delete_batch(&mut tx, &table, *id, args.batch)
                    .await
                    .with_context(|| format!("deleting from the notification database's {table}"))?;
                tx.commit().await?;
                n += done;
                if done == 0 {
                    break;
                }
            }
            println!("notification {table}: {n} rows deleted");
            removed.rows.push(("notification", table, n));
        }
    }

    // The notification consumer may have handled a message of the tenant it had already pulled
    // when the stream was purged: what it wrote since must go before the tenants row does (a run
    // after that finds the tenant only by the recipients it left).
    let mut late = Vec::new();
    for id in &ids {
        for table in tenant_tables(&mut notification, NOTIFICATION_ORDER).await? {
            let n = count_rows(&mut notification, &table, *id).await?;
            if n > 0 {
                late.push(format!("notification {table}: {n}"));
            }
        }
    }
    if !late.is_empty() {
        bail!(
            "rows of {subdomain} were written while it was being deleted ({}): run the command again",
            late.join(", ")
        );
    }

    if let Some(t) = &tenant {
        let left = store.offboard_left(t.id).await?;
        if !left.is_empty() {
            let left: Vec<String> = left.iter().map(|(table, n)| format!("{table}: {n}")).collect();
            bail!(
                "rows of {subdomain} were written while it was being deleted ({}): run the command again",
                left.join(", ")
            );
        }
        let n = store.delete_tenant_row(t.id).await.context("deleting the tenants row (run the command again)")?;
        println!("directory tenants: {n} rows deleted");
        removed.rows.push(("directory", "tenants".to_owned(), n));
    } else if ids.is_empty() {
        println!("tenant {subdomain}: nothing of it is left in the notification database");
    }
    notification.close().await.ok();
    let rows: u64 = removed.rows.iter().map(|(_, _, n)| n).sum();
    println!("tenant {subdomain} offboarded: {rows} rows and {} stream messages removed", removed.messages);
    Ok(())
}

/// Waits (a while) until the relay has published the tenant's events, the suspension among them,
/// so that gateways hear of it before its outbox rows go. Without a relay running, it says so
/// and goes on: the tenant's credentials stop working when its rows are gone anyway.
async fn wait_for_relay(store: &Store, tenant: Uuid) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let n = store.unpublished_events(tenant).await?;
        if n == 0 {
            return Ok(());
        }
        if started.elapsed() > SUSPENSION_WAIT {
            println!(
                "warning: {n} events of the tenant (its suspension among them) are not on the stream after {} s: is a user-directory (its relay) running? Going on",
                SUSPENSION_WAIT.as_secs()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Purges the tenant's subjects (`<prefix>.v1.<subdomain>.>`) from the stream; returns how many
/// messages went.
async fn purge_stream(args: &OffboardArgs, subdomain: &str) -> anyhow::Result<u64> {
    let nats = &args.nats;
    let filter = format!("{}.v1.{subdomain}.>", nats.nats_subject_prefix);
    let client = nats.connect("user-directory-offboard").await.context("connecting to NATS")?;
    let js = jetstream::new(client.clone());
    let stream = match js.get_stream(&nats.nats_stream).await {
        Ok(s) => s,
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            println!("stream {}: does not exist, nothing to purge", nats.nats_stream);
            return Ok(0);
        }
        Err(e) => return Err(e).with_context(|| format!("opening the stream {}", nats.nats_stream)),
    };
    let purged = stream.purge().filter(filter.as_str()).await.with_context(|| format!("purging {filter}"))?;
    println!("stream {}: {} messages purged ({filter})", nats.nats_stream, purged.purged);
    client.flush().await.ok();
    Ok(purged.purged)
}
