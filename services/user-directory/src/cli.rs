//! The admin commands of the operator interface. They talk to the database directly, so they work
//! before any server runs (the first tenant of a fresh deployment).

use clap::Subcommand;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::{DatabaseArgs, Store};

/// `user-directory tenant ...`
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its first SCIM API key (shown once).
    Create {
        /// The tenant's subdomain: the "username" its identity provider authenticates with.
        subdomain: String,
        /// The organisation's display name (defaults to the subdomain).
        #[arg(long)]
        name: Option<String>,
        /// Print `{"tenant":…,"apiKey":…}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Set what a SCIM create does with the userName of a user the customer's admin created:
    /// `adopt` links that user (the default), `conflict` answers 409.
    Policy {
        subdomain: String,
        #[arg(value_parser = ["adopt", "conflict"])]
        policy: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List active users that no identity provider has linked: the identity provider cannot
    /// deprovision them until it adopts them (assign them in Okta, or run an Okta import).
    Unlinked {
        subdomain: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// `user-directory key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Issue another key for a tenant (shown once).
    Issue {
        subdomain: String,
        /// A label to tell keys apart.
        #[arg(long, default_value = "")]
        name: String,
        /// Print `{"keyId":…,"apiKey":…}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List a tenant's keys (never the keys themselves).
    List {
        subdomain: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Revoke a key.
    Revoke {
        key_id: Uuid,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

async fn store(db: &DatabaseArgs) -> anyhow::Result<Store> {
    let store = Store::new(db.pool()?, "");
    store.migrate().await?;
    Ok(store)
}

/// Runs a tenant command.
pub async fn tenant(cmd: TenantCommand) -> anyhow::Result<()> {
    match cmd {
        TenantCommand::Create { subdomain, name, json, db } => {
            let store = store(&db).await?;
            let display = name.unwrap_or_else(|| subdomain.clone());
            let (tenant, key) = store.create_tenant(&subdomain, &display).await?;
            if json {
                println!(
                    "{}",
                    json!({"tenant": tenant.subdomain, "tenantId": tenant.id, "keyId": key.id, "apiKey": key.key})
                );
            } else {
                println!("tenant {} created ({})", tenant.subdomain, tenant.id);
                println!("SCIM API key (shown once, store it now): {}", key.key);
            }
            Ok(())
        }
        TenantCommand::Policy { subdomain, policy, db } => {
            store(&db).await?.set_adoption_policy(&subdomain, &policy).await?;
            println!("tenant {subdomain}: adoption policy {policy}");
            Ok(())
        }
        TenantCommand::Unlinked { subdomain, json, db } => {
            let store = store(&db).await?;
            let tenant = store.tenant_by_subdomain(&subdomain).await?;
            let users = store.list_unlinked_users(&tenant).await?;
            let rows: Vec<_> = users
                .iter()
                .map(|u| {
                    let s = u.document.summary();
                    json!({"id": u.id, "userName": s.user_name, "email": s.email, "createdAt": u.created.format(&Rfc3339).ok()})
                })
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else if rows.is_empty() {
                println!("tenant {subdomain}: every active user is linked to the identity provider");
            } else {
                println!("{} active users of {subdomain} are not linked to the identity provider,", rows.len());
                println!("so it cannot deprovision them. Assign them to the app in Okta (or run an import there).");
                for r in rows {
                    println!("  {}  {}", r["id"].as_str().unwrap_or(""), r["userName"].as_str().unwrap_or(""));
                }
            }
            Ok(())
        }
    }
}

/// Runs a key command.
pub async fn key(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Issue { subdomain, name, json, db } => {
            let key = store(&db).await?.issue_key(&subdomain, &name).await?;
            if json {
                println!("{}", json!({"keyId": key.id, "apiKey": key.key}));
            } else {
                println!("key {} issued (shown once, store it now): {}", key.id, key.key);
            }
        }
        KeyCommand::List { subdomain, json, db } => {
            let keys = store(&db).await?.list_keys(&subdomain).await?;
            let fmt = |t: Option<time::OffsetDateTime>| t.and_then(|t| t.format(&Rfc3339).ok());
            if json {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        json!({"keyId": k.id, "name": k.name, "prefix": k.prefix, "createdAt": fmt(Some(k.created_at)),
                               "lastUsedAt": fmt(k.last_used_at), "expiresAt": fmt(k.expires_at), "revokedAt": fmt(k.revoked_at)})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:<36}  {:<14}  {:<20}  {:<20}  {:<8}  name",
                    "key id", "prefix", "created", "last used", "state"
                );
                for k in keys {
                    let state = if k.revoked_at.is_some() { "revoked" } else { "live" };
                    println!(
                        "{:<36}  {:<14}  {:<20}  {:<20}  {:<8}  {}",
                        k.id,
                        k.prefix,
                        fmt(Some(k.created_at)).unwrap_or_default().chars().take(19).collect::<String>(),
                        fmt(k.last_used_at).unwrap_or_else(|| "never".into()).chars().take(19).collect::<String>(),
                        state,
                        k.name
                    );
                }
            }
        }
        KeyCommand::Revoke { key_id, db } => {
            store(&db).await?.revoke_key(key_id).await?;
            println!("key {key_id} revoked");
        }
    }
    Ok(())
}
