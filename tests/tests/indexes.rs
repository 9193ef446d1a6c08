//! Okta's and Entra's lookups are index lookups: with the planner told to avoid sequential scans,
//! the SQL that user-directory compiles for each of them is served by the index made for it. (A condition
//! wrapped in something the index cannot serve, as `coalesce(col = $1, FALSE)` once was, makes the
//! lookup a scan of the tenant's users, and this test fail.) And the outbox relay's round reads the
//! backlog through its partial index, not the published events the outbox keeps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use e2e::TestStack;
use sqlx::Row;
use user_directory::sql_filter::{self, GROUPS, TableSpec, USERS};

/// The plan of a lookup by `filter` in `tenant`'s rows of `spec`'s table, with sequential scans
/// off; `analyze` runs it too (the plan then counts the rows each node returned), and with
/// `generic` it is planned for any value of its parameters, as a prepared statement is after a
/// few executions.
async fn plan(
    db: &sqlx::PgPool,
    spec: &'static TableSpec,
    tenant: uuid::Uuid,
    filter: &str,
    analyze: bool,
    generic: bool,
) -> String {
    let compiled = sql_filter::compile(spec, &scim::filter::parse(filter).unwrap(), 2).unwrap();
    let explain = if analyze { "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)" } else { "EXPLAIN" };
    let sql = format!(
        "{explain} SELECT id FROM {} WHERE tenant_id = $1 AND ({}) LIMIT 100",
        spec.table_name(),
        compiled.clause
    );
    // As the service plans it: its role, bound by row-level security to the tenant (under which
    // an index serves only leakproof operators).
    let mut tx = db.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await.unwrap();
    let mode = if generic { "force_generic_plan" } else { "auto" };
    sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL plan_cache_mode = {mode}"))).execute(&mut *tx).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL ROLE {}", user_directory::store::APP_ROLE)))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let rows = compiled.bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant)).fetch_all(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    rows.iter().map(|r| r.get::<String, _>(0)).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_lookups_use_their_indexes() {
    let stack = TestStack::start_with("1s", false).await;
    let db = &stack.directory_db;
    stack.add_tenant("globex").await;
    let tenants: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM tenants WHERE subdomain IN ('acme', 'globex') ORDER BY subdomain")
            .fetch_all(db)
            .await
            .unwrap();
    let tenant = tenants[0];
    // Both tenants hold the same emails: the email index's keys name the tenant, so a lookup
    // finds only its own tenant's row.
    for t in &tenants {
        sqlx::query(
            "INSERT INTO users (tenant_id, id, user_name, user_name_folded, external_id, active, email, source, created_at, updated_at, document)
             SELECT $1, gen_random_uuid(), 'u' || i || '@acme.com', 'u' || i || '@acme.com', 'ext-' || i, true, 'u' || i || '@acme.com',
                    'scim', now(), now(), jsonb_build_object('userName', 'u' || i || '@acme.com', 'active', true, 'emails', jsonb_build_array(
                        jsonb_build_object('value', 'U' || i || '@Acme.com', 'type', 'work', 'primary', true),
                        jsonb_build_object('value', 'home' || i || '@example.com', 'type', 'home')))
             FROM generate_series(1, 2000) AS i",
        )
        .bind(t)
        .execute(db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO groups (tenant_id, id, display_name, display_name_folded, created_at, updated_at, document)
             SELECT $1, gen_random_uuid(), 'Group ' || i, 'group ' || i, now(), now(), jsonb_build_object('displayName', 'Group ' || i)
             FROM generate_series(1, 500) AS i",
        )
        .bind(t)
        .execute(db)
        .await
        .unwrap();
    }
    sqlx::query("ANALYZE users").execute(db).await.unwrap();
    sqlx::query("ANALYZE groups").execute(db).await.unwrap();
    for (spec, filter, index) in [
        (&USERS, r#"userName eq "U17@Acme.com""#, "users_user_name"),
        (&USERS, r#"externalId eq "ext-17""#, "users_external_id"),
        (&USERS, r#"id eq "0190a4b2-0000-7000-8000-000000000000""#, "users_pkey"),
        (&GROUPS, r#"displayName eq "group 17""#, "groups_display_name"),
    ] {
        let plan = plan(db, spec, tenant, filter, false, false).await;
        assert!(
            plan.contains(&format!("Index Scan using {index}"))
                || plan.contains(&format!("Index Only Scan using {index}")),
            "{filter} is not served by {index}:\n{plan}"
        );
        // Only the row-level security policy's condition is checked on the rows found.
        let filters = plan.lines().filter(|l| l.contains("Filter:") && !l.contains(" OR (tenant_id = $"));
        assert_eq!(filters.count(), 0, "{filter} filters rows after the index:\n{plan}");
    }
    // The email lookups (Entra's, and Okta's spellings) go through the email index to the one
    // row of this tenant, which the exact condition then checks.
    for filter in [
        r#"emails[type eq "work"].value eq "u17@acme.com""#,
        r#"emails.value eq "U17@Acme.COM""#,
        r#"emails[value eq "home17@example.com"]"#,
        r#"emails eq "home17@example.com" and active eq true"#,
    ] {
        for generic in [false, true] {
            let plan = plan(db, &USERS, tenant, filter, true, generic).await;
            // The tenant's one row with that email, found by the email table's key, then read by
            // the user's: another tenant's same email is not even read.
            let found = |node: &str| plan.lines().find(|l| l.contains(node)).map(|l| l.contains("rows=1 "));
            assert_eq!(
                found("Index Only Scan using user_emails_pkey"),
                Some(true),
                "{filter} (generic {generic}):\n{plan}"
            );
            assert_eq!(found("Index Scan using users_pkey"), Some(true), "{filter} (generic {generic}):\n{plan}");
            assert!(!plan.contains("BitmapAnd") && !plan.contains("Seq Scan"), "{filter}:\n{plan}");
            assert!(plan.lines().next().unwrap().contains("rows=1 "), "{filter} finds its user:\n{plan}");
        }
    }
    // A lookup of the work email by a home address finds the candidate and rejects it.
    let plan = plan(db, &USERS, tenant, r#"emails[type eq "work"].value eq "home17@example.com""#, true, false).await;
    assert!(plan.contains("user_emails_pkey"), "{plan}");
    assert!(plan.lines().next().unwrap().contains("rows=0 "), "{plan}");
    stack.stop().await;
}

/// The relay's round reads the backlog, not the whole retention window: with 5,000 published
/// rows kept and a few unpublished, its statements (on a copy of the outbox with its indexes,
/// planned generically as in the function) find the rows to publish through the backlog's
/// partial index, and the rows acknowledged beyond a tail through the stream sequence's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_reads_the_backlog_and_not_the_kept_events() {
    let stack = TestStack::start_with("1s", false).await;
    let db = &stack.directory_db;
    // The stack's relay would publish the unpublished rows at once: these are in a copy, with
    // the outbox's indexes.
    let mut conn = db.acquire().await.unwrap();
    sqlx::query("CREATE TEMP TABLE probe (LIKE outbox INCLUDING ALL)").execute(&mut *conn).await.unwrap();
    sqlx::query(
        "INSERT INTO probe (event_id, tenant_id, subject, payload, stream_seq, published_at)
         SELECT gen_random_uuid(), gen_random_uuid(), 's', '\\x00', CASE WHEN i <= 5000 THEN i END,
                CASE WHEN i <= 5000 THEN now() END
         FROM generate_series(1, 5010) AS i",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("ANALYZE probe").execute(&mut *conn).await.unwrap();
    // `scim_relay_round` runs its statements with parameters, planned once for any value: so
    // here, with generic plans.
    sqlx::query("SET plan_cache_mode = force_generic_plan").execute(&mut *conn).await.unwrap();
    sqlx::query("PREPARE backlog(int) AS SELECT seq FROM probe WHERE stream_seq IS NULL ORDER BY seq LIMIT $1")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "PREPARE beyond(bigint) AS UPDATE probe SET stream_seq = NULL, published_at = NULL WHERE stream_seq > $1",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    for (sql, index) in [
        // The copies of `outbox_unpublished` and `outbox_stream_seq`, as LIKE names them.
        ("EXPLAIN EXECUTE backlog(512)", "probe_seq_idx"),
        ("EXPLAIN EXECUTE beyond(4990)", "probe_stream_seq_idx"),
    ] {
        let rows = sqlx::query(sql).fetch_all(&mut *conn).await.unwrap();
        let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        let plan = plan.join("\n");
        assert!(plan.contains(&format!("using {index} ")), "{sql} does not use {index}:\n{plan}");
    }
    stack.stop().await;
}

/// Plans are only as good as the statistics: the directory says, at start-up, when nothing keeps
/// them (this machine's server runs with autovacuum off), and names a table whose own autovacuum
/// is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_warns_when_nothing_maintains_the_tables() {
    let stack = TestStack::start_with("1s", false).await;
    let db = &stack.directory_db;
    let server_off = sqlx::query_scalar::<_, String>("SHOW autovacuum").fetch_one(db).await.unwrap() == "off";
    let store = stack.store();
    let server = |w: &[String]| w.iter().any(|w| w.contains("autovacuum = off"));
    let warnings = store.maintenance_warnings().await.unwrap();
    assert_eq!(server(&warnings), server_off, "{warnings:?}");
    assert!(!warnings.iter().any(|w| w.contains("for the table")), "{warnings:?}");
    sqlx::query("ALTER TABLE outbox SET (autovacuum_enabled = false)").execute(db).await.unwrap();
    let warnings = store.maintenance_warnings().await.unwrap();
    assert!(warnings.iter().any(|w| w.ends_with("for the table(s) outbox")), "{warnings:?}");
    sqlx::query("ALTER TABLE outbox RESET (autovacuum_enabled)").execute(db).await.unwrap();
    let warnings = store.maintenance_warnings().await.unwrap();
    assert_eq!(warnings.len(), usize::from(server_off), "{warnings:?}");
    stack.stop().await;
}
