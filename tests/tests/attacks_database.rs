//! Attacks on the database layer (issue 24): the directory must not run without row-level
//! security unless told to, and a released deprovision the database failed to apply for a moment
//! must not be lost.
//!
//! Roles are cluster-wide and tests run in parallel against one server: these tests never alter
//! or drop the shared `scim_directory_app`; the roles they need are their own (uuid-suffixed) and
//! dropped at the end.

use e2e::{TestStack, admin_database_url, database_url, nats_url, okta_user};
use infra::{ActingRole, DatabaseArgs, RowSecurityError};
use proto::ErrorKind;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use user_directory::store::{APP_ROLE, TenantUpdate};
use uuid::Uuid;

/// What a test creates on the server, removed even when it panics: its database, then its role.
struct Owned {
    database: String,
    role: String,
}

impl Drop for Owned {
    fn drop(&mut self) {
        let (database, role) = (self.database.clone(), self.role.clone());
        // A runtime of its own: this may run while the test's runtime is unwinding.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_database_url()).await {
                    for sql in [
                        format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
                        format!("DROP ROLE IF EXISTS \"{role}\""),
                    ] {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await;
                    }
                }
            });
        })
        .join();
    }
}

/// The URL of `database` on the test server, logging in as `role`.
fn url_as(role: &str, database: &str) -> String {
    let mut url = reqwest::Url::parse(&database_url(database)).unwrap();
    url.set_username(role).unwrap();
    url.set_password(None).unwrap();
    url.to_string()
}

fn directory_config(database: DatabaseArgs, id: &str) -> user_directory::Config {
    let nats = events::NatsArgs::new(nats_url(), format!("TEST_{id}"), format!("t{id}"));
    let mut config = e2e::directory_config("unused", &nats, &e2e::random_token());
    config.database = database;
    config.admin_listen = None;
    config
}

/// The pool keeps its login role when that role may not assume `scim_directory_app` (here: a role
/// of the test's own, with BYPASSRLS and no membership). Row-level security would then not apply
/// to anything the directory does: it refuses to start, naming the role and the way out; with
/// `DATABASE_ALLOW_BYPASS_RLS=true` it starts (and is then indeed unprotected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_whose_connections_would_bypass_row_level_security_refuses_to_start() {
    let id = Uuid::new_v4().simple().to_string();
    let owned = Owned { database: format!("scimtest_{id}_rls"), role: format!("scimtest_{id}_login") };
    let (db, login) = (owned.database.clone(), owned.role.clone());
    let mut admin = PgConnection::connect(&admin_database_url()).await.unwrap();
    for sql in [
        format!("CREATE ROLE \"{login}\" LOGIN NOSUPERUSER BYPASSRLS"),
        format!("CREATE DATABASE \"{db}\" OWNER \"{login}\""),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.unwrap();
    }
    // The schema as any deployment has it (migrated by a superuser, which creates the shared app
    // role if this server has none yet), and the login role may use its tables; it is not a
    // member of the app role.
    user_directory::Store::migrate(&DatabaseArgs::new(&database_url(&db))).await.unwrap();
    let mut in_db = PgConnection::connect(&database_url(&db)).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"{login}\""
    )))
    .execute(&mut in_db)
    .await
    .unwrap();
    in_db.close().await.unwrap();
    let member: bool = sqlx::query_scalar("SELECT pg_has_role($1, $2, 'MEMBER')")
        .bind(&login)
        .bind(APP_ROLE)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(!member);

    let args = DatabaseArgs::new(&url_as(&login, &db));
    let refused = match user_directory::Application::build(directory_config(args.clone(), &id)).await {
        Ok(_) => panic!("the directory started with connections that bypass row-level security"),
        Err(e) => format!("{e:#}"),
    };
    for needle in [login.as_str(), "BYPASSRLS", APP_ROLE, "DATABASE_ALLOW_BYPASS_RLS", "row-level security"] {
        assert!(refused.contains(needle), "{needle:?} not in the refusal: {refused}");
    }

    // Allowed knowingly: it starts, and row-level security indeed binds nothing it does.
    let mut allowed = args;
    allowed.database_allow_bypass_rls = true;
    let app = user_directory::Application::build(directory_config(allowed, &id)).await.unwrap();
    let acting = ActingRole::of(app.store().pool()).await.unwrap();
    assert_eq!((acting.name.as_str(), acting.superuser, acting.bypass_rls), (login.as_str(), false, true));
    app.store().create_tenant("acme", "Acme").await.unwrap();
    // No tenant scope, no system flag: the policies would show nothing; BYPASSRLS shows the key.
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys").fetch_one(app.store().pool()).await.unwrap();
    assert_eq!(keys, 1);
    app.store().close().await;
    drop(app);
    drop(owned);
}

/// The same check below the directory, where the login role is a superuser (as in tests and
/// `make run`): a pool asked to act as a role that does not exist keeps the superuser, and is
/// refused; allowed, it is built and acts as the superuser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_keeps_a_superuser_login_role_is_refused() {
    let missing: &'static str = Box::leak(format!("scimtest_{}_missing", Uuid::new_v4().simple()).into_boxed_str());
    let args = DatabaseArgs::new(&admin_database_url());
    let login: String = {
        let mut c = PgConnection::connect(&admin_database_url()).await.unwrap();
        sqlx::query_scalar("SELECT current_user::text").fetch_one(&mut c).await.unwrap()
    };
    match args.pool_as_checked(missing).await {
        Ok(_) => panic!("a pool acting as the superuser {login} was built"),
        Err(RowSecurityError::Bypassed { acting, wanted }) => {
            assert_eq!((acting.name.as_str(), acting.superuser, wanted), (login.as_str(), true, missing));
            let text = RowSecurityError::Bypassed { acting, wanted }.to_string();
            for needle in [login.as_str(), "SUPERUSER", missing, "DATABASE_ALLOW_BYPASS_RLS"] {
                assert!(text.contains(needle), "{needle:?} not in the refusal: {text}");
            }
        }
        Err(e) => panic!("refused for another reason: {e}"),
    }
    let mut allowed = args;
    allowed.database_allow_bypass_rls = true;
    let pool = allowed.pool_as_checked(missing).await.unwrap();
    let acting = ActingRole::of(&pool).await.unwrap();
    assert_eq!((acting.name.as_str(), acting.superuser), (login.as_str(), true));
    pool.close().await;
}

/// The normal stack logs in as the superuser `postgres` and switches to `scim_directory_app`, which
/// row-level security binds: it starts without the override, and its connections act as the app
/// role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_logging_in_as_a_superuser_acts_as_the_app_role_and_starts() {
    let stack = TestStack::start_with("1s", false).await;
    let acting = ActingRole::of(stack.store().pool()).await.unwrap();
    assert_eq!(acting, ActingRole { name: APP_ROLE.to_owned(), superuser: false, bypass_rls: false });
    // An unscoped query of the app role sees no tenant's key.
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys").fetch_one(stack.store().pool()).await.unwrap();
    assert_eq!(keys, 0);
    stack.stop().await;
}

/// A released deprovision that the database could not apply at that moment (here: the user's row
/// locked by another transaction past the releasing connection's `lock_timeout`) stays held, with
/// the ones after it; released again once the database lets it, it applies exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_fails_for_a_moment_keeps_the_change_held_and_applies_it_once_later() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let mut ids = Vec::new();
    for i in 0..10 {
        let r = okta.post("/Users", okta_user(&format!("rel{i}@acme.com"))).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let limits = TenantUpdate { brake_share: Some(0.2), brake_min_users: Some(1), ..Default::default() };
    stack.store().update_tenant("acme", &limits).await.unwrap();
    // 20% of 10 go through; the next two are held (429 to Okta, which retries it).
    for (i, id) in ids[..4].iter().enumerate() {
        let r = okta.patch(&format!("/Users/{id}"), e2e::okta_deactivation()).await;
        assert_eq!(r.status, if i < 2 { 200 } else { 429 }, "{:?}", r.body);
    }
    let held_before = stack.store().list_held("acme").await.unwrap();
    let held_users: Vec<String> = held_before.iter().map(|h| h.user_id.to_string()).collect();
    assert_eq!(held_users, ids[2..4].to_vec());

    // Another transaction holds the first held user's row; the releasing connections give up
    // waiting for a lock after 100 ms.
    let mut blocker = stack.directory_db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(Uuid::parse_str(&ids[2]).unwrap())
        .execute(&mut *blocker)
        .await
        .unwrap();
    let options: PgConnectOptions =
        (*stack.directory_db.connect_options()).clone().options([("role", APP_ROLE), ("lock_timeout", "100ms")]);
    let impatient = user_directory::Store::new(
        PgPoolOptions::new().max_connections(2).connect_with(options).await.unwrap(),
        &stack.nats_args.nats_subject_prefix,
    );
    let failed = impatient.resolve_held("acme", true, &[]).await.unwrap_err();
    assert_eq!(failed.kind, ErrorKind::Unavailable, "{failed}");
    impatient.close().await;

    // Nothing was applied, nothing forgotten.
    let held_after = stack.store().list_held("acme").await.unwrap();
    assert_eq!(
        held_after.iter().map(|h| (h.id, h.user_id)).collect::<Vec<_>>(),
        held_before.iter().map(|h| (h.id, h.user_id)).collect::<Vec<_>>()
    );
    blocker.rollback().await.unwrap();
    for id in &ids[2..4] {
        assert_eq!(okta.get(&format!("/Users/{id}")).await.body["active"], true);
    }

    // Released again: both apply, once each; a further release finds nothing.
    assert_eq!(stack.store().resolve_held("acme", true, &[]).await.unwrap(), 2);
    assert!(stack.store().list_held("acme").await.unwrap().is_empty());
    assert_eq!(stack.store().resolve_held("acme", true, &[]).await.unwrap(), 0);
    for id in &ids[2..4] {
        assert_eq!(okta.get(&format!("/Users/{id}")).await.body["active"], false);
    }
    let events = stack.settled_events().await;
    for id in &ids[..4] {
        let deactivations =
            events.iter().filter(|e| e.envelope.resource_id == *id && e.subject.ends_with(".user.deactivated")).count();
        assert_eq!(deactivations, 1, "user {id}");
    }
    stack.stop().await;
}
