//! The admin commands of the operator interface. They talk to the database directly, so they work
//! before any server runs (the first tenant of a fresh deployment). The gRPC `Admin` service
//! offers the same operations over the network.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::store::{RequestQuery, TenantUpdate};
use crate::{DatabaseArgs, Store};

/// What every admin command needs: the database, and the subject prefix the events it writes
/// (a revocation, a pause) are published under.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "provisioning")]
    pub nats_subject_prefix: String,
}

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
        admin: AdminArgs,
    },
    /// Show a tenant's state and settings.
    Show {
        subdomain: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Suspend a tenant: no credential of it works until it is resumed.
    Suspend {
        subdomain: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Resume a suspended tenant.
    Resume {
        subdomain: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Pause a tenant's provisioning: SCIM requests are refused with Retry-After, nothing is
    /// changed or lost: Okta gets 429 (it waits and retries by itself, doubling the wait, 10
    /// times; a 503 would be a failed task to resubmit by hand), other clients 503.
    Pause {
        subdomain: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Resume a paused tenant's provisioning.
    Unpause {
        subdomain: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set a tenant's rate limit, requests in flight and mass-deprovision brake.
    Limits {
        subdomain: String,
        /// Requests per second.
        #[arg(long)]
        rate: Option<i32>,
        /// Requests accepted at once after a quiet period (default: twice the rate).
        #[arg(long)]
        burst: Option<i32>,
        /// Requests in flight at once in each gateway replica (default: the gateway's
        /// TENANT_MAX_IN_FLIGHT); beyond it the tenant is answered 429 with Retry-After.
        #[arg(long)]
        in_flight: Option<i32>,
        /// The share of active users (0 to 1) whose deactivation within the window trips the brake.
        #[arg(long)]
        brake_share: Option<f64>,
        /// The window the brake counts deactivations in, in seconds.
        #[arg(long)]
        brake_window_secs: Option<i32>,
        /// The brake never trips below this many deactivations in the window.
        #[arg(long)]
        brake_min_users: Option<i32>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set what a SCIM create does with the userName of a user the customer's admin created:
    /// `adopt` links that user (the default), `conflict` answers 409.
    Policy {
        subdomain: String,
        #[arg(value_parser = ["adopt", "conflict"])]
        policy: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List active users that no identity provider has linked: the identity provider cannot
    /// deprovision them until it adopts them (assign them in Okta, or run an Okta import).
    Unlinked {
        subdomain: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The request log: the tenant's SCIM requests, newest first (bodies redacted).
    Requests {
        subdomain: String,
        /// Only since this many minutes ago.
        #[arg(long)]
        since_minutes: Option<i64>,
        /// Only this HTTP method (GET, POST, PUT, PATCH, DELETE).
        #[arg(long)]
        method: Option<String>,
        /// Only failed requests (status 400 and above).
        #[arg(long)]
        failed: bool,
        /// Only requests whose path or bodies contain this (a userName, an id).
        #[arg(long)]
        contains: Option<String>,
        /// At most this many (newest first).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Offboard a tenant: suspend it, then delete every row of it in both databases (in
    /// batches) and its messages on the stream. Run it again to finish an interrupted run.
    Delete {
        subdomain: String,
        /// The subdomain again: nothing is deleted unless it matches.
        #[arg(long)]
        confirm: String,
        #[command(flatten)]
        args: Box<crate::offboard::OffboardArgs>,
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
        /// The key stops working after this many days.
        #[arg(long)]
        expires_in_days: Option<i64>,
        /// What the key opens: `scim` (the identity provider's), `admin` (the tenant console and
        /// API); repeat for both, which is the default.
        #[arg(long = "scope", value_parser = ["scim", "admin"])]
        scopes: Vec<String>,
        /// Print `{"keyId":…,"apiKey":…}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List a tenant's keys (never the keys themselves).
    List {
        subdomain: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a key: it stops working on every gateway within seconds.
    Revoke {
        key_id: Uuid,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `user-directory held ...`: deactivations held by the mass-deprovision brake.
#[derive(Debug, Subcommand)]
pub enum HeldCommand {
    /// List them.
    List {
        subdomain: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Apply them (all, or the ids given); deactivations then flow for one brake window.
    Release {
        subdomain: String,
        ids: Vec<Uuid>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Drop them (all, or the ids given); the brake stays tripped until its window passes.
    Reject {
        subdomain: String,
        ids: Vec<Uuid>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `user-directory user ...`: what support does to one user of a tenant.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Give a user a platform role (learner, manager, admin), as the tenant's admin would; the
    /// event `user.role_changed` records who did it.
    Role {
        subdomain: String,
        user_id: String,
        #[arg(value_parser = proto::ROLES)]
        role: String,
        /// Who is changing it (recorded in the event as `support:<by>`).
        #[arg(long, env = "USER", default_value = "support")]
        by: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Erase a user's personal data (a GDPR art. 17 request): in the directory's database now,
    /// in the notification service's when it takes the event `user.erased`, and from the event
    /// stream. The id stays, missing to SCIM. Run it again to finish an interrupted erasure.
    Erase {
        subdomain: String,
        user_id: String,
        /// Who is erasing them (recorded as `support:<by>`).
        #[arg(long, env = "USER", default_value = "support")]
        by: String,
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        nats: events::NatsArgs,
    },
}

/// Runs a user command.
pub async fn user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Erase { subdomain, user_id, by, db, nats } => {
            let store = store(&AdminArgs { db, nats_subject_prefix: nats.nats_subject_prefix.clone() }).await?;
            let tenant = store.tenant_by_subdomain(&subdomain).await?;
            let client = nats.connect("user-directory-cli").await.context("connecting to NATS")?;
            let eraser = crate::erasure::StreamEraser::new(client, nats);
            let by = format!("support:{by}");
            let (done, messages) =
                crate::erasure::erase(&store, &eraser, &tenant, &user_id, &by, crate::erasure::RELAY_WAIT_CLI).await?;
            if done.already {
                println!(
                    "user {user_id} of {subdomain} was erased at {} by {}",
                    fmt(Some(done.erased_at)).unwrap_or_default(),
                    done.erased_by
                );
            }
            println!(
                "user {user_id} of {subdomain} erased: request log rows scrubbed {}, outbox events scrubbed {}, stream messages deleted {messages}; the erasure is complete",
                done.request_log_rows, done.outbox_events
            );
        }
        UserCommand::Role { subdomain, user_id, role, by, admin } => {
            let store = store(&admin).await?;
            let tenant = store.tenant_by_subdomain(&subdomain).await?;
            let before = store.get_user(&tenant, &user_id, false).await?;
            let user = store.set_role(&tenant, &user_id, &role, &format!("support:{by}")).await?;
            if before.role == user.role {
                println!("user {user_id} of {subdomain} is already {role}: nothing changed");
            } else {
                println!(
                    "user {user_id} of {subdomain}: role {} -> {} (version {})",
                    before.role, user.role, user.version
                );
            }
        }
    }
    Ok(())
}

/// `user-directory seed`: bulk test data (benchmarks, capacity tests; never production).
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// How many tenants to create (`<prefix>-<n>`).
    #[arg(long, default_value_t = 100)]
    tenants: u64,
    /// Users per created tenant.
    #[arg(long, default_value_t = 100)]
    users_per_tenant: u64,
    /// Prefix of the tenants' subdomains and of the users' names (lower-case letters, digits, dashes).
    #[arg(long, default_value = "seed")]
    prefix: String,
    /// Also add users to this existing tenant...
    #[arg(long)]
    into: Option<String>,
    /// ... this many.
    #[arg(long, default_value_t = 0)]
    into_users: u64,
    #[command(flatten)]
    admin: AdminArgs,
}

/// Runs `seed`.
pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let store = store(&args.admin).await?;
    let started = std::time::Instant::now();
    let into = args.into.as_deref().map(|s| (s, args.into_users));
    let done = store.seed(&args.prefix, args.tenants, args.users_per_tenant, into).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {} tenants and {} users in {secs:.1} s ({:.0} users/s); {} users in all",
        done.tenants,
        done.users,
        done.users as f64 / secs.max(0.001),
        store.count_all_users().await?
    );
    Ok(())
}

async fn store(admin: &AdminArgs) -> anyhow::Result<Store> {
    Store::migrate(&admin.db).await?;
    Ok(Store::new(admin.db.pool_as(crate::store::APP_ROLE)?, &admin.nats_subject_prefix))
}

fn fmt(t: Option<OffsetDateTime>) -> Option<String> {
    t.and_then(|t| t.format(&Rfc3339).ok())
}

async fn update(admin: &AdminArgs, subdomain: &str, u: TenantUpdate, what: &str) -> anyhow::Result<()> {
    let t = store(admin).await?.update_tenant(subdomain, &u).await?;
    println!(
        "tenant {}: {what} (status {}, {})",
        t.subdomain,
        t.status,
        if t.paused { "paused" } else { "provisioning" }
    );
    Ok(())
}

/// Runs a tenant command.
pub async fn tenant(cmd: TenantCommand) -> anyhow::Result<()> {
    match cmd {
        TenantCommand::Create { subdomain, name, json, admin } => {
            let store = store(&admin).await?;
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
        }
        TenantCommand::Show { subdomain, admin } => {
            let t = store(&admin).await?.tenant_by_subdomain(&subdomain).await?;
            println!(
                "{}",
                json!({"id": t.id, "subdomain": t.subdomain, "name": t.display_name, "status": t.status, "paused": t.paused,
                       "adoptionPolicy": t.adoption_policy, "rateLimitPerSecond": t.rate_limit_per_second,
                       "rateLimitBurst": t.rate_limit_burst, "maxInFlight": t.max_in_flight, "brakeShare": t.brake_share,
                       "brakeWindowSecs": t.brake_window_secs, "brakeMinUsers": t.brake_min_users,
                       "brakeTrippedAt": fmt(t.brake_tripped_at), "brakeReleasedUntil": fmt(t.brake_released_until)})
            );
        }
        TenantCommand::Suspend { subdomain, admin } => {
            update(&admin, &subdomain, TenantUpdate { suspended: Some(true), ..Default::default() }, "suspended")
                .await?;
        }
        TenantCommand::Resume { subdomain, admin } => {
            update(&admin, &subdomain, TenantUpdate { suspended: Some(false), ..Default::default() }, "resumed")
                .await?;
        }
        TenantCommand::Pause { subdomain, admin } => {
            update(&admin, &subdomain, TenantUpdate { paused: Some(true), ..Default::default() }, "paused").await?;
        }
        TenantCommand::Unpause { subdomain, admin } => {
            update(&admin, &subdomain, TenantUpdate { paused: Some(false), ..Default::default() }, "unpaused").await?;
        }
        TenantCommand::Limits {
            subdomain,
            rate,
            burst,
            in_flight,
            brake_share,
            brake_window_secs,
            brake_min_users,
            admin,
        } => {
            let u = TenantUpdate {
                rate_limit_per_second: rate,
                rate_limit_burst: burst,
                max_in_flight: in_flight,
                brake_share,
                brake_window_secs,
                brake_min_users,
                ..Default::default()
            };
            update(&admin, &subdomain, u, "limits set").await?;
        }
        TenantCommand::Policy { subdomain, policy, admin } => {
            store(&admin).await?.set_adoption_policy(&subdomain, &policy).await?;
            println!("tenant {subdomain}: adoption policy {policy}");
        }
        TenantCommand::Unlinked { subdomain, json, admin } => {
            let store = store(&admin).await?;
            let tenant = store.tenant_by_subdomain(&subdomain).await?;
            let users = store.list_unlinked_users(&tenant).await?;
            let rows: Vec<_> = users
                .iter()
                .map(|u| {
                    let s = u.document.summary();
                    json!({"id": u.id, "userName": s.user_name, "email": s.email, "createdAt": fmt(Some(u.created))})
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
        }
        TenantCommand::Requests { subdomain, since_minutes, method, failed, contains, limit, json, admin } => {
            let store = store(&admin).await?;
            let tenant = store.tenant_by_subdomain(&subdomain).await?;
            let query = RequestQuery {
                since: since_minutes.map(|m| OffsetDateTime::now_utc() - Duration::minutes(m)),
                method,
                status_min: failed.then_some(400),
                contains,
                limit,
                ..Default::default()
            };
            for r in store.list_requests(&tenant, &query).await? {
                if json {
                    println!(
                        "{}",
                        json!({"id": r.id, "at": fmt(Some(r.at)), "method": r.method, "path": r.path, "status": r.status,
                               "latencyMs": r.latency_ms, "userAgent": r.user_agent, "eventIds": r.event_ids,
                               "request": r.request_body, "response": r.response_body})
                    );
                } else {
                    println!(
                        "{}  {}  {:>3}  {:>7.1} ms  {} {}",
                        fmt(Some(r.at)).unwrap_or_default(),
                        r.id,
                        r.status,
                        r.latency_ms,
                        r.method,
                        r.path
                    );
                }
            }
        }
        TenantCommand::Delete { subdomain, confirm, args } => {
            crate::offboard::delete(&subdomain, &confirm, &args).await?;
        }
    }
    Ok(())
}

/// `user-directory outbox ...`
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Publish a tenant's events since a time again, with the same ids, after the stream lost
    /// them (runbook: disaster). Always safe: the consumers de-duplicate by event id. The
    /// running relay publishes them, in their original order, behind nothing newer.
    Republish {
        /// The tenant's subdomain.
        #[arg(long)]
        tenant: String,
        /// From when (RFC 3339, e.g. 2026-12-07T10:00:00Z): events written at or after it.
        #[arg(long, value_parser = rfc3339)]
        since: OffsetDateTime,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

fn rfc3339(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("not an RFC 3339 time ({e}): e.g. 2026-12-07T10:00:00Z"))
}

/// Runs an outbox command.
pub async fn outbox(cmd: OutboxCommand) -> anyhow::Result<()> {
    match cmd {
        OutboxCommand::Republish { tenant, since, admin } => {
            let store = store(&admin).await?;
            let t = store.tenant_by_subdomain(&tenant).await?;
            let (n, oldest) = store.republish(t.id, since).await?;
            println!(
                "{n} events of {tenant} since {} queued to be published again",
                fmt(Some(since)).unwrap_or_default()
            );
            match oldest {
                Some(oldest) if oldest > since => println!(
                    "warning: the outbox keeps {tenant}'s events only since {} (OUTBOX_RETENTION_HOURS): older ones cannot be republished",
                    fmt(Some(oldest)).unwrap_or_default()
                ),
                None => println!("warning: the outbox keeps no event of {tenant}"),
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Runs a key command.
pub async fn key(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Issue { subdomain, name, expires_in_days, scopes, json, admin } => {
            let expires = expires_in_days.map(|d| OffsetDateTime::now_utc() + Duration::days(d));
            let key = store(&admin).await?.issue_key(&subdomain, &name, expires, &scopes).await?;
            if json {
                println!("{}", json!({"keyId": key.id, "apiKey": key.key, "expiresAt": fmt(expires)}));
            } else {
                println!("key {} issued (shown once, store it now): {}", key.id, key.key);
            }
        }
        KeyCommand::List { subdomain, json, admin } => {
            let keys = store(&admin).await?.list_keys(&subdomain).await?;
            if json {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        json!({"keyId": k.id, "name": k.name, "prefix": k.prefix, "scopes": k.scopes, "createdAt": fmt(Some(k.created_at)),
                               "lastUsedAt": fmt(k.last_used_at), "expiresAt": fmt(k.expires_at), "revokedAt": fmt(k.revoked_at)})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                let short = |t: Option<OffsetDateTime>, none: &str| {
                    fmt(t).map_or_else(|| none.to_owned(), |s| s.chars().take(19).collect())
                };
                println!(
                    "{:<36}  {:<14}  {:<10}  {:<19}  {:<19}  {:<19}  {:<8}  name",
                    "key id", "prefix", "scopes", "created", "last used", "expires", "state"
                );
                for k in keys {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else if k.expires_at.is_some_and(|e| e <= OffsetDateTime::now_utc()) {
                        "expired"
                    } else {
                        "live"
                    };
                    println!(
                        "{:<36}  {:<14}  {:<10}  {:<19}  {:<19}  {:<19}  {:<8}  {}",
                        k.id,
                        k.prefix,
                        k.scopes.join(","),
                        short(Some(k.created_at), ""),
                        short(k.last_used_at, "never"),
                        short(k.expires_at, "never"),
                        state,
                        k.name
                    );
                }
            }
        }
        KeyCommand::Revoke { key_id, admin } => {
            store(&admin).await?.revoke_key(key_id, None).await?;
            println!("key {key_id} revoked");
        }
    }
    Ok(())
}

/// Runs a held-changes command.
pub async fn held(cmd: HeldCommand) -> anyhow::Result<()> {
    match cmd {
        HeldCommand::List { subdomain, json, admin } => {
            let held = store(&admin).await?.list_held(&subdomain).await?;
            if json {
                let rows: Vec<_> = held
                    .iter()
                    .map(|h| json!({"id": h.id, "userId": h.user_id, "kind": h.kind, "heldAt": fmt(Some(h.held_at))}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{} held change(s) for {subdomain}", held.len());
                for h in held {
                    println!(
                        "  {}  {:<8} user {}  held {}",
                        h.id,
                        h.kind,
                        h.user_id,
                        fmt(Some(h.held_at)).unwrap_or_default()
                    );
                }
            }
        }
        HeldCommand::Release { subdomain, ids, admin } => {
            let n = store(&admin)
                .await?
                .resolve_held(&subdomain, true, &ids)
                .await
                .context("releasing held changes (those not applied stay held: release them again)")?;
            println!("{n} held change(s) released and applied");
        }
        HeldCommand::Reject { subdomain, ids, admin } => {
            let n = store(&admin).await?.resolve_held(&subdomain, false, &ids).await?;
            println!("{n} held change(s) rejected");
        }
    }
    Ok(())
}
