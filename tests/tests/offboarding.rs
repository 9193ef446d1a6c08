//! Offboarding a tenant (docs/adr/0026-offboarding-a-tenant.md), end to end: `user-directory
//! tenant delete` run as the operator runs it, against the stack's databases and stream. Of two
//! tenants with data everywhere, the one deleted leaves no row in any table of either database and
//! no message on the stream, even when its first run is killed part way; the other is untouched
//! and goes on working.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::console::ConsoleClient;
use e2e::{Okta, TestStack};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Users, a group of two of them, an assignment (an email), a deactivation (the brake's ledger
/// and tally), a held change, a console session and an extra key: a row in every table.
async fn populate(stack: &TestStack, subdomain: &str, key: &str) -> Okta {
    let okta = stack.okta_at(stack.gateway_addr, &e2e::basic(subdomain, key));
    let mut ids = Vec::new();
    for name in ["ann", "bob", "cy"] {
        let r = okta.post("/Users", e2e::okta_user(&format!("{name}@{subdomain}.com"))).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let group = okta
        .post(
            "/Groups",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Sales",
                   "members": [{"value": ids[0]}, {"value": ids[1]}]}),
        )
        .await;
    assert_eq!(group.status, 201, "{:?}", group.body);
    let r = okta
        .api("POST", "/assignments", Some(json!({"userId": ids[0], "contentId": "c-1", "title": "Course 1"})))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = okta.patch(&format!("/Users/{}", ids[2]), e2e::okta_deactivation()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let tenant = stack.store().tenant_by_subdomain(subdomain).await.unwrap();
    sqlx::query("INSERT INTO held_changes (tenant_id, id, user_id, kind) VALUES ($1, $2, $3::uuid, 'delete')")
        .bind(tenant.id)
        .bind(Uuid::now_v7())
        .bind(&ids[1])
        .execute(&stack.directory_db)
        .await
        .unwrap();
    stack.store().issue_key(subdomain, "extra", None, &[]).await.unwrap();
    let console = ConsoleClient::new(stack.gateway_addr);
    let page = console.sign_in(subdomain, key).await;
    assert_eq!(page.status, 303, "signed in to the console");
    okta
}

/// The tables of a database with a `tenant_id` column.
async fn tenant_tables(db: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.table_name::text FROM information_schema.columns c
         JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

/// A tenant's rows per table of both databases (`tenants` included), and its messages on the
/// stream (sequence and subject).
#[derive(Debug, PartialEq)]
struct Holdings {
    rows: BTreeMap<String, i64>,
    messages: Vec<(u64, String)>,
}

impl Holdings {
    fn total_rows(&self) -> i64 {
        self.rows.values().sum()
    }
}

async fn holdings(stack: &TestStack, id: Uuid, subdomain: &str) -> Holdings {
    let mut rows = BTreeMap::new();
    for (name, db) in [("directory", &stack.directory_db), ("notification", &stack.notification_db)] {
        for table in tenant_tables(db).await {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM \"{table}\" WHERE tenant_id = $1"
            )))
            .bind(id)
            .fetch_one(db)
            .await
            .unwrap();
            rows.insert(format!("{name}.{table}"), n);
        }
    }
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE id = $1 OR subdomain = $2")
        .bind(id)
        .bind(subdomain)
        .fetch_one(&stack.directory_db)
        .await
        .unwrap();
    rows.insert("directory.tenants".into(), tenants);
    let recipients: i64 = sqlx::query_scalar("SELECT count(*) FROM recipients WHERE tenant = $1")
        .bind(subdomain)
        .fetch_one(&stack.notification_db)
        .await
        .unwrap();
    rows.insert("notification.recipients(by subdomain)".into(), recipients);
    let infix = format!(".v1.{subdomain}.");
    let messages = stack
        .events()
        .await
        .into_iter()
        .filter(|e| e.subject.contains(&infix))
        .map(|e| (e.sequence, e.subject))
        .collect();
    Holdings { rows, messages }
}

async fn count(db: &PgPool, sql: &'static str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql).bind(id).fetch_one(db).await.unwrap()
}

/// The command as the operator runs it, configured through the environment.
fn command(stack: &TestStack, args: &[&str]) -> Command {
    let mut c = Command::new(e2e::processes::binary("user-directory"));
    c.args(args)
        .env("DATABASE_URL", e2e::database_url(&stack.directory_database))
        .env("NOTIFICATION_DATABASE_URL", e2e::database_url(&stack.notification_database))
        .env("NATS_URL", e2e::nats_url())
        .env("NATS_STREAM", &stack.nats_args.nats_stream)
        .env("NATS_SUBJECT_PREFIX", &stack.nats_args.nats_subject_prefix);
    c
}

fn run(stack: &TestStack, args: &[&str]) -> (bool, String) {
    let out = command(stack, args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// The rows `table` of `db` the report says it deleted, summed over its lines.
fn reported(said: &str, db: &str, table: &str) -> u64 {
    let prefix = format!("{db} {table}: ");
    said.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn deleting_a_tenant_leaves_no_row_or_message_of_it_and_the_other_tenant_untouched() {
    let stack = TestStack::start().await;
    let globex_key = stack.add_tenant("globex").await;
    let acme_okta = populate(&stack, "acme", &stack.api_key).await;
    let globex_okta = populate(&stack, "globex", &globex_key).await;
    let acme = stack.store().tenant_by_subdomain("acme").await.unwrap().id;
    let globex = stack.store().tenant_by_subdomain("globex").await.unwrap().id;
    // Enough users that a small batch takes a while: the first run is killed part way.
    let bulk = 20_000;
    stack.store().seed("bulk", 0, 0, Some(("acme", bulk))).await.unwrap();

    // Everything settled: the request log written (6 SCIM requests each), the events relayed,
    // the notification service done with them (the assignment's email decided for both).
    for id in [acme, globex] {
        e2e::poll("the request log to be written", || async {
            (count(&stack.directory_db, "SELECT count(*) FROM request_log WHERE tenant_id = $1", id).await >= 5)
                .then_some(())
        })
        .await;
        e2e::poll("the assignment's email", || async {
            (count(&stack.notification_db, "SELECT count(*) FROM emails WHERE tenant_id = $1", id).await >= 1)
                .then_some(())
        })
        .await;
    }
    stack.settled_events().await;
    stack.notifications_idle().await;

    let acme_before = holdings(&stack, acme, "acme").await;
    let globex_before = holdings(&stack, globex, "globex").await;
    for table in [
        "directory.users",
        "directory.groups",
        "directory.group_members",
        "directory.assignments",
        "directory.api_keys",
        "directory.console_sessions",
        "directory.request_log",
        "directory.outbox",
        "directory.deprovisions",
        "directory.deprovision_tally",
        "directory.active_user_tally",
        "directory.held_changes",
        "directory.tenants",
        "notification.recipients",
        "notification.decisions",
        "notification.emails",
    ] {
        for (name, h) in [("acme", &acme_before), ("globex", &globex_before)] {
            assert!(h.rows.get(table).is_some_and(|n| *n > 0), "{name} has rows in {table}: {:?}", h.rows);
        }
    }
    assert!(!acme_before.messages.is_empty() && !globex_before.messages.is_empty());

    // A confirmation that does not repeat the subdomain deletes nothing.
    let (ok, said) = run(&stack, &["tenant", "delete", "acme", "--confirm", "globex", "--batch", "100"]);
    assert!(!ok && said.contains("refused"), "{said}");
    assert_eq!(holdings(&stack, acme, "acme").await, acme_before, "nothing of acme went");
    let acme_status: String = sqlx::query_scalar("SELECT status FROM tenants WHERE id = $1")
        .bind(acme)
        .fetch_one(&stack.directory_db)
        .await
        .unwrap();
    assert_eq!(acme_status, "active", "not even suspended");

    // The first run, killed (SIGKILL) part way through the users.
    let users_before = acme_before.rows["directory.users"];
    let mut first = command(&stack, &["tenant", "delete", "acme", "--confirm", "acme", "--batch", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let users = count(&stack.directory_db, "SELECT count(*) FROM users WHERE tenant_id = $1", acme).await;
        if users > 0 && users < users_before {
            break;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run finished before it could be interrupted ({users} users left): make the data bigger"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "the first run deleted no user in 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let halfway = holdings(&stack, acme, "acme").await;
    let users_left = halfway.rows["directory.users"];
    assert!(
        users_left > 0 && users_left < users_before,
        "interrupted part way: {users_left} of {users_before} users left"
    );
    assert_eq!(halfway.rows["directory.tenants"], 1, "the tenants row goes last: a run again finds the tenant");
    let status: String = sqlx::query_scalar("SELECT status FROM tenants WHERE id = $1")
        .bind(acme)
        .fetch_one(&stack.directory_db)
        .await
        .unwrap();
    assert_eq!(status, "suspended", "suspended before anything was deleted");
    e2e::poll("the suspended tenant's credentials to stop working", || async {
        (acme_okta.get("/Users?count=1").await.status == 401).then_some(())
    })
    .await;

    // Run again: it finishes the job, and says what it removed.
    let (ok, said) = run(&stack, &["tenant", "delete", "acme", "--confirm", "acme", "--batch", "500"]);
    assert!(ok, "{said}");
    println!("the second run's report:\n{said}");
    assert_eq!(reported(&said, "directory", "users") as i64, users_left, "{said}");
    assert_eq!(reported(&said, "directory", "tenants"), 1, "{said}");
    assert!(reported(&said, "notification", "emails") >= 1, "{said}");
    assert!(reported(&said, "notification", "decisions") >= 1, "{said}");
    assert!(said.contains("messages purged"), "{said}");
    assert!(said.contains("tenant acme offboarded"), "{said}");

    let acme_after = holdings(&stack, acme, "acme").await;
    assert_eq!(acme_after.total_rows(), 0, "no row of acme anywhere: {:?}", acme_after.rows);
    assert!(acme_after.messages.is_empty(), "no message of acme on the stream: {:?}", acme_after.messages);
    // Every table was looked at: the same tables as before, all empty of acme.
    assert_eq!(acme_after.rows.keys().collect::<Vec<_>>(), acme_before.rows.keys().collect::<Vec<_>>());

    assert_eq!(holdings(&stack, globex, "globex").await, globex_before, "globex untouched");
    assert_eq!(globex_okta.get("/Users?count=10").await.status, 200, "globex still works");
    let r = globex_okta.post("/Users", e2e::okta_user("dee@globex.com")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    // A third run: nothing is left, and it says so.
    let (ok, said) = run(&stack, &["tenant", "delete", "acme", "--confirm", "acme"]);
    assert!(ok, "{said}");
    assert!(said.contains("deleted already"), "{said}");
    assert!(said.contains("0 rows and 0 stream messages removed"), "{said}");
    stack.stop().await;
}
