//! `make bench`: measurements taken as ratios within one run (the machines are shared and noisy,
//! so only a comparison made in the same process under the same noise means anything).
//!
//! `membership`: adding and removing one member of a group of 10 and of a group of 100,000,
//! interleaved; the ratio of the medians says whether membership changes cost the same whatever
//! the group's size (they are single-row writes). Writes `target/bench/membership.json`.
//!
//! `notifications`: events per second through the notification consumer (a backlog of user
//! events decided from a standing start), and the latency from a SCIM write's commit to its
//! notification decision at a fixed write rate. Writes `target/bench/notifications.json`.
//!
//! `scim`: the services' release binaries in processes of their own, driven by closed-loop clients
//! at concurrency 1, 8 and 32: Okta's provisioning mix per user (filter, create, get, put,
//! deactivate), creates alone, GET by id, `userName eq` lookups and list pages; req/s and
//! p50/p95/p99 per request type, errors, and each service's RSS. In the same run, the machine's
//! ceiling for the same work: pgbench with our transactions' shape (a user row and an outbox row;
//! a point select by tenant and folded userName) on our schema, at the same concurrency; SCIM
//! figures are printed as ratios of it. Writes `target/bench/scim.json`.
//!
//! `noisy`: the noisy neighbour (tests/src/noisy.rs) on the release binaries: one tenant runs
//! expensive filters, large group listings and 1,000-operation PATCHes from 32 workers while
//! another runs Okta's user flow; the quiet tenant's p50/p99 alone and beside the noise, side by
//! side. Writes `target/bench/noisy.json`.
//!
//! `bigtenant` (bench/bigtenant.rs): Okta's and Entra's lookups in a tenant of 200,000 users and
//! in one of 100, alternated; the ratio of the p50s per lookup. Writes `target/bench/bigtenant.json`.
//!
//! `import` (bench/import.rs): one tenant's Okta import of 100,000 users beside 100 tenants running
//! Okta's user flow; their p99 alone and beside. Writes `target/bench/import.json`.
//!
//! Only successful requests count as throughput; any failed request fails the run (it exits
//! non-zero at the end), and so does a figure past its floor in the summary (bench/summary.rs),
//! written to `target/bench/summary.json`. The PostgreSQL server's `fsync`, `synchronous_commit`
//! and `autovacuum` are printed first and recorded in every result; the bench ANALYZEs after each
//! phase that grows tables, as autovacuum would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use e2e::TestStack;
use e2e::load::{self, Work};
use e2e::processes::{ProcessStack, Which};
use serde_json::json;
use uuid::Uuid;

// The crate root is tests/src/bin/bench.rs: its modules live in bench/ beside it.
#[path = "bench/bigtenant.rs"]
mod bigtenant;
#[path = "bench/import.rs"]
mod import;
#[path = "bench/summary.rs"]
mod summary;
use summary::measured;

/// A number from the environment, or `default`.
fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// What failed in this run (a request that should have succeeded, in any scenario): printed at
/// the end, and the run exits non-zero, after every scenario has printed its figures.
static FAILURES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records a failure of the run (and says it at once, where it happened).
fn fail(what: String) {
    eprintln!("FAILED: {what}");
    FAILURES.lock().unwrap().push(what);
}

/// Records the failed requests of a measurement, if any.
fn check_tally(what: &str, tally: &load::Tally) {
    if tally.failures() > 0 {
        let cut =
            if tally.flows_cut > 0 { format!(", {} Okta flows cut short", tally.flows_cut) } else { String::new() };
        fail(format!(
            "{what}: {} of {} requests failed {:?}{cut}",
            tally.failures(),
            tally.failures() + tally.successes(),
            tally.errors
        ));
    }
}

/// Records a seeding through SCIM that created fewer users than asked.
fn check_seeded(what: &str, seeded: usize, asked: usize) {
    if seeded < asked {
        fail(format!("{what}: {} of {asked} seeding creates failed", asked - seeded));
    }
}

/// Reads `fsync`, `synchronous_commit` and `autovacuum` of the server the bench runs on: the
/// settings that decide what its figures mean, printed at the start and put in every JSON result.
async fn server_settings() -> serde_json::Value {
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&e2e::admin_database_url()).await.unwrap();
    let mut out = serde_json::Map::new();
    for name in ["fsync", "synchronous_commit", "autovacuum"] {
        let value: String =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}"))).fetch_one(&mut admin).await.unwrap();
        out.insert(name.to_owned(), json!(value));
    }
    serde_json::Value::Object(out)
}

/// `ANALYZE`s each database (by URL): what a production server's autovacuum does after a table
/// grows, and this one may not (`autovacuum = off` here): without it the planner plans for the
/// tables as they were before a seeding or a measurement that created users.
async fn analyze(urls: &[&str]) {
    for url in urls {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.unwrap();
        sqlx::query("ANALYZE").execute(&mut c).await.unwrap();
        let _ = sqlx::Connection::close(c).await;
    }
}

/// [`analyze`] of a process stack's two databases.
async fn analyze_stack(stack: &ProcessStack) {
    analyze(&[&stack.directory_db_url, &stack.notification_db_url]).await;
}

const BIG: i64 = 100_000;
const SMALL: i64 = 10;
const ROUNDS: usize = 300;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn membership() -> serde_json::Value {
    let stack = TestStack::start().await;
    let okta = stack.okta();
    let tenant = stack.store().tenant_by_subdomain("acme").await.unwrap();
    let db = &stack.directory_db;
    // Seeded in SQL: 100,000 users through HTTP would measure something else.
    sqlx::query(
        "INSERT INTO users (tenant_id, id, user_name, user_name_folded, active, source, created_at, updated_at, document)
         SELECT $1, gen_random_uuid(), 'u' || g || '@acme.com', 'u' || g || '@acme.com', true, 'scim', now(), now(),
                jsonb_build_object('userName', 'u' || g || '@acme.com', 'active', true)
         FROM generate_series(1, $2) AS g",
    )
    .bind(tenant.id)
    .bind(BIG + SMALL + ROUNDS as i64 * 2)
    .execute(db)
    .await
    .unwrap();
    let users: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE tenant_id = $1 ORDER BY id")
        .bind(tenant.id)
        .fetch_all(db)
        .await
        .unwrap();
    let mut groups = Vec::new();
    for (name, size, offset) in [("small", SMALL, 0), ("big", BIG, SMALL)] {
        let g = okta.post("/Groups", json!({"displayName": name})).await.body["id"].as_str().unwrap().to_owned();
        sqlx::query("INSERT INTO group_members (tenant_id, group_id, user_id) SELECT $1, $2, unnest($3::uuid[])")
            .bind(tenant.id)
            .bind(Uuid::parse_str(&g).unwrap())
            .bind(&users[offset as usize..(offset + size) as usize])
            .execute(db)
            .await
            .unwrap();
        groups.push((name, g));
    }
    // Everything seeded above (users, groups, members), as autovacuum would before production's
    // first request.
    sqlx::query("ANALYZE").execute(db).await.unwrap();
    let spare = &users[(BIG + SMALL) as usize..];
    let mut timings: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
    for round in 0..ROUNDS {
        // Alternate which group goes first, so that neither always meets a warm or cold cache.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for &gi in &order {
            let member = spare[round * 2 + gi].to_string();
            let path = format!("/Groups/{}", groups[gi].1);
            let add = json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": member}]}]});
            let t = Instant::now();
            let status = okta.patch(&path, add).await.status;
            timings[gi].0.push(t.elapsed().as_secs_f64() * 1000.0);
            if status != 204 {
                fail(format!("membership: adding a member answered {status}"));
            }
            let remove = json!({"Operations": [{"op": "remove", "path": format!("members[value eq \"{member}\"]")}]});
            let t = Instant::now();
            let status = okta.patch(&path, remove).await.status;
            timings[gi].1.push(t.elapsed().as_secs_f64() * 1000.0);
            if status != 204 {
                fail(format!("membership: removing a member answered {status}"));
            }
        }
    }
    let mut result = serde_json::Map::new();
    println!("membership: one-member PATCH latency (ms), {ROUNDS} rounds, interleaved");
    println!("  {:<22} {:>8} {:>8} {:>8}", "", "p50", "p95", "p99");
    let mut medians = Vec::new();
    for (gi, (name, _)) in groups.iter().enumerate() {
        for (what, samples) in [("add", &timings[gi].0), ("remove", &timings[gi].1)] {
            let mut s = samples.clone();
            s.sort_by(f64::total_cmp);
            let (p50, p95, p99) = (percentile(&s, 0.5), percentile(&s, 0.95), percentile(&s, 0.99));
            let size = if *name == "big" { BIG } else { SMALL };
            println!("  {:<22} {p50:>8.2} {p95:>8.2} {p99:>8.2}", format!("{what} @ {size} members"));
            result.insert(format!("{what}_{size}"), json!({"p50_ms": p50, "p95_ms": p95, "p99_ms": p99}));
            medians.push(p50);
        }
    }
    let add_ratio = medians[2] / medians[0];
    let remove_ratio = medians[3] / medians[1];
    println!("  ratio 100,000 / 10 members: add {add_ratio:.2}, remove {remove_ratio:.2} (1.00 = same cost)");
    result.insert("ratio_add_big_over_small".into(), json!(add_ratio));
    result.insert("ratio_remove_big_over_small".into(), json!(remove_ratio));
    stack.stop().await;
    serde_json::Value::Object(result)
}

/// Events per second the consumer decides from a backlog, and write-to-decision latency.
async fn notifications() -> serde_json::Value {
    const BACKLOG: usize = 3000;
    const RATE: u64 = 500;
    const SECONDS: u64 = 6;
    // The backlog: events written while the notification service is not running.
    let mut stack = TestStack::start_with("1s", false).await;
    let tenant = stack.store().tenant_by_subdomain("acme").await.unwrap();
    for i in 0..BACKLOG {
        let mut doc = scim::UserDocument::from_request(json!({
            "userName": format!("b{i}@acme.com"), "name": {"givenName": "B", "familyName": format!("{i}")},
            "emails": [{"value": format!("b{i}@acme.com")}]
        }))
        .unwrap();
        doc.validate_new().unwrap();
        stack.store().create_user(&tenant, doc, proto::events::v1::Source::Scim).await.unwrap();
    }
    stack.settled_events().await;
    let started = Instant::now();
    stack.start_notification().await;
    stack.wait_for_decisions(BACKLOG).await;
    let per_second = BACKLOG as f64 / started.elapsed().as_secs_f64();
    analyze_test_stack(&stack).await;
    println!("notifications: {per_second:.0} events/s decided from a backlog of {BACKLOG}");

    // Latency at a fixed write rate: each write's commit (the event's occurred_at) to its decision;
    // through the stack's gateway (request log on), then one with the request log off.
    let mut config = stack.gateway_config.clone();
    config.request_log = false;
    let unlogged = stack.start_gateway(config).await;
    let plain = write_latencies(&stack, &stack.okta_at(unlogged, &stack.auth()), "x", RATE, SECONDS).await;
    analyze_test_stack(&stack).await;
    let logged = write_latencies(&stack, &stack.okta(), "w", RATE, SECONDS).await;
    let p = |l: &[f64]| (percentile(l, 0.5), percentile(l, 0.95), percentile(l, 0.99));
    let ((p50, p95, p99), (q50, _, q99)) = (p(&logged), p(&plain));
    measured("write_to_decision_p99_ms", p99);
    println!(
        "notifications: SCIM write -> decision at {RATE} writes/s: p50 {p50:.1} ms, p95 {p95:.1} ms, p99 {p99:.1} ms"
    );
    println!(
        "notifications: the same with the request log off: p50 {q50:.1} ms, p99 {q99:.1} ms (log on / off: p50 {:.2}, p99 {:.2})",
        p50 / q50,
        p99 / q99
    );
    stack.stop().await;
    // The machine's own floor for this latency: a decision follows two commits (the write's, then
    // the decision's), so the commit latency of our write's shape at the same rate bounds it.
    let scratch = Scratch::create().await;
    let commits = load::pgbench_latencies(&scratch.url, load::PGBENCH_INSERT, 8, RATE, SECONDS, &scratch.vars());
    scratch.drop().await;
    let mut result = json!({"backlog_events_per_second": per_second, "write_rate_per_second": RATE,
           "write_to_decision_ms": {"p50": p50, "p95": p95, "p99": p99, "samples": logged.len()},
           "write_to_decision_ms_request_log_off": {"p50": q50, "p99": q99, "samples": plain.len()}});
    if commits.is_empty() {
        eprintln!("notifications: pgbench is not installed: no commit-latency floor measured");
        return result;
    }
    let (c50, c95, c99) = p(&commits);
    println!(
        "notifications: the machine's commit latency at {RATE} transactions/s (pgbench, our write's shape): p50 {c50:.1} ms, p95 {c95:.1} ms, p99 {c99:.1} ms (write -> decision / commit: p50 {:.1}, p99 {:.1})",
        p50 / c50,
        p99 / c99
    );
    result["machine_commit_ms"] = json!({"p50": c50, "p95": c95, "p99": c99, "samples": commits.len()});
    result
}

/// [`analyze`] of an in-process stack's two databases.
async fn analyze_test_stack(stack: &TestStack) {
    for db in [&stack.directory_db, &stack.notification_db] {
        sqlx::query("ANALYZE").execute(db).await.unwrap();
    }
}

/// Writes `rate` users a second for `seconds` through `okta`; returns each write's commit to
/// decision latency (ms), sorted.
async fn write_latencies(stack: &TestStack, okta: &e2e::Okta, prefix: &str, rate: u64, seconds: u64) -> Vec<f64> {
    let before: std::collections::HashSet<String> =
        stack.events().await.into_iter().map(|e| e.envelope.event_id).collect();
    let decided_before = stack.decisions().await.len();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut writes = Vec::new();
    for i in 0..(rate * seconds) {
        ticker.tick().await;
        let okta = okta.clone();
        let name = format!("{prefix}{i}@acme.com");
        writes.push(tokio::spawn(async move {
            let body =
                json!({"userName": name, "name": {"givenName": "W", "familyName": "R"}, "emails": [{"value": name}]});
            okta.post("/Users", body).await.status
        }));
    }
    let mut written = 0;
    for w in writes {
        match w.await {
            Ok(201) => written += 1,
            Ok(status) => fail(format!("notifications: a write at {rate}/s answered {status}")),
            Err(e) => fail(format!("notifications: a write at {rate}/s had no answer: {e}")),
        }
    }
    stack.wait_for_decisions(decided_before + written).await;
    let occurred: std::collections::HashMap<String, f64> = stack
        .events()
        .await
        .into_iter()
        .filter(|e| !before.contains(&e.envelope.event_id))
        .map(|e| {
            let t = e.envelope.occurred_at.unwrap_or_default();
            (e.envelope.event_id, t.seconds as f64 + f64::from(t.nanos) / 1e9)
        })
        .collect();
    let decided: Vec<(String, f64)> =
        sqlx::query_as("SELECT event_id::text, extract(epoch FROM decided_at)::float8 FROM decisions")
            .fetch_all(&stack.notification_db)
            .await
            .unwrap();
    let mut latencies: Vec<f64> =
        decided.iter().filter_map(|(id, at)| occurred.get(id).map(|o| (at - o) * 1000.0)).collect();
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// A scratch database with the directory's schema, one tenant and 10,000 of its users, for
/// pgbench to run our statements' shapes on.
struct Scratch {
    name: String,
    url: String,
    tenant: String,
    /// `SEEDED`, as pgbench takes it.
    seeded: String,
    admin: sqlx::PgConnection,
}

/// How many users a scratch database holds (`:seeded` in the pgbench scripts).
const SEEDED: i64 = 10_000;

impl Scratch {
    async fn create() -> Scratch {
        let name = format!("scimbench_{}", Uuid::new_v4().simple());
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&e2e::admin_database_url()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await.unwrap();
        let url = e2e::database_url(&name);
        let db = infra::DatabaseArgs::new(&url);
        user_directory::Store::migrate(&db).await.unwrap();
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let tenant = Uuid::new_v4();
        sqlx::query("INSERT INTO tenants (id, subdomain, display_name) VALUES ($1, 'bench', 'Bench')")
            .bind(tenant)
            .execute(&pool)
            .await
            .unwrap();
        let seed = "INSERT INTO users (tenant_id, id, user_name, user_name_folded, active, source, created_at, updated_at, document)
             SELECT $1, gen_random_uuid(), 'seed' || i || '@acme.com', 'seed' || i || '@acme.com', true, 'scim', now(), now(),
                    jsonb_build_object('userName', 'seed' || i || '@acme.com')
             FROM generate_series(0, $2 - 1) AS i";
        sqlx::query(seed).bind(tenant).bind(SEEDED).execute(&pool).await.unwrap();
        sqlx::query("ANALYZE").execute(&pool).await.unwrap();
        pool.close().await;
        Scratch { name, url, tenant: tenant.to_string(), seeded: SEEDED.to_string(), admin }
    }

    /// pgbench's `-D` variables for the scripts in `load`.
    fn vars(&self) -> [(&'static str, &str); 3] {
        [("tenant", &self.tenant), ("seeded", &self.seeded), ("prefix", "seed")]
    }

    async fn drop(mut self) {
        let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut self.admin).await;
    }
}

/// pgbench's transactions per second for our insert and select shapes, per concurrency.
async fn ceilings(levels: &[usize], seconds: u64) -> Vec<(usize, f64, f64)> {
    let scratch = Scratch::create().await;
    let vars = scratch.vars();
    let mut out = Vec::new();
    for &c in levels {
        let insert = load::pgbench_tps(&scratch.url, load::PGBENCH_INSERT, c, seconds, &vars);
        // The inserts grew the table the select reads.
        analyze(&[&scratch.url]).await;
        let select = load::pgbench_tps(&scratch.url, load::PGBENCH_SELECT, c, seconds, &vars);
        eprintln!("pgbench c={c}: insert {insert:.0} tps, select {select:.0} tps");
        out.push((c, insert, select));
    }
    scratch.drop().await;
    out
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat` (in the kernel's
/// USER_HZ ticks, 100 a second on Linux); 0 where it cannot be read.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // After the command's closing parenthesis: state, then utime and stime at 12th and 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The CPU seconds used so far by the stack's services and by every PostgreSQL process of the
/// machine (the server the bench runs against; nothing else uses it meanwhile).
fn cpu_sample(services: [Option<u32>; 3]) -> [f64; 4] {
    let [gateway, directory, notification] = services.map(|pid| pid.map_or(0.0, cpu_seconds));
    let postgres: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .map(cpu_seconds)
        .sum();
    [gateway, directory, notification, postgres]
}

/// The bench process's own CPU seconds so far, and when they were read.
fn own_cpu() -> (Instant, f64) {
    (Instant::now(), cpu_seconds(std::process::id()))
}

/// The machine's cores (what a CPU share is a share of).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The load generator's share of the machine between two [`own_cpu`] samples: the bench
/// process's CPU seconds over wall seconds x cores (1.0 = every core busy with it). The generator
/// runs in this process; a share well below 1 says it was not what limited the figure.
fn generator_share(from: (Instant, f64), to: (Instant, f64)) -> f64 {
    let wall = (to.0 - from.0).as_secs_f64().max(1e-9);
    (to.1 - from.1) / (wall * cores() as f64)
}

/// The services' settings under load: warnings only, the tenant's limits out of the way (its rate,
/// requests in flight, and a share of the connections as large as the pool: one tenant's load is
/// measured against the machine; the noisy neighbour puts the fairness limits back, [`FAIRNESS`]),
/// the pools sized by `BENCH_DATABASE_MAX_CONNECTIONS` (8) and the request log switched by
/// `BENCH_REQUEST_LOG` if set (on otherwise), and the notification service's batch of decisions
/// by `BENCH_DECISION_BATCH` if set (64 otherwise).
fn stack_settings() -> Vec<(&'static str, String)> {
    let pool = std::env::var("BENCH_DATABASE_MAX_CONNECTIONS").unwrap_or_else(|_| "8".to_owned());
    let mut settings = vec![
        ("RUST_LOG", "warn".to_owned()),
        ("RATE_LIMIT_PER_SECOND", "1000000".to_owned()),
        ("RATE_LIMIT_BURST", "1000000".to_owned()),
        ("TENANT_MAX_IN_FLIGHT", "1000000".to_owned()),
        ("TENANT_MAX_CONNECTIONS", pool.clone()),
        ("DATABASE_MAX_CONNECTIONS", pool),
    ];
    // `false` measures what the request log costs (it is on in production and by default here).
    if let Ok(on) = std::env::var("BENCH_REQUEST_LOG") {
        settings.push(("REQUEST_LOG", on));
    }
    // `1` measures the notification service recording each decision alone (ADR 0027).
    if let Ok(n) = std::env::var("BENCH_DECISION_BATCH") {
        settings.push(("NOTIFICATION_DECISION_BATCH", n));
    }
    settings
}

/// `BENCH_SERVICES_ENV` (`NAME=value,NAME=value`): settings every service gets on top of a
/// scenario's own, for trying one out (a fairness limit, say) without changing the code.
fn services_env() -> Vec<(&'static str, String)> {
    let all = std::env::var("BENCH_SERVICES_ENV").unwrap_or_default();
    all.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (&*Box::leak(k.trim().to_owned().into_boxed_str()), v.trim().to_owned()))
        .collect()
}

async fn scim() -> serde_json::Value {
    // BENCH_LEVELS (e.g. "32") and BENCH_WORK (e.g. "get_by_id,create") narrow the run, for
    // profiling one scenario.
    let levels: Vec<usize> = std::env::var("BENCH_LEVELS")
        .ok()
        .map(|s| s.split(',').filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 32]);
    let only: Option<Vec<String>> =
        std::env::var("BENCH_WORK").ok().map(|s| s.split(',').map(|w| w.trim().to_owned()).collect());
    let seconds = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5u64);
    let ceilings = ceilings(&levels, seconds).await;
    let stack = ProcessStack::start(&stack_settings()).await;
    // The mix deactivates every user it creates: a mass deprovisioning the brake would rightly
    // hold at its default share. The brake stays engaged as in production (past its default
    // minimum it weighs every deactivation against the tenant's active users, the 2,000 seeded
    // below and those in flight) at a share that lets a whole tenant's deprovisioning pass.
    stack.update_tenant(&user_directory::store::TenantUpdate { brake_share: Some(1.0), ..Default::default() }).await;
    let client = load::Client {
        http: reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap(),
        base: format!("http://{}/scim/v2", stack.gateway_addr),
        auth: stack.auth(),
    };
    let existing = std::sync::Arc::new(load::seed(&client, "read", 2000, 16).await);
    check_seeded("scim", existing.len(), 2000);
    analyze_stack(&stack).await;
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut results = Vec::new();
    // The largest peak of any service under the Okta mix, across its measurements.
    let mut mix_peak = 0.0f64;
    // Each service's largest peak over every measurement.
    let mut run_peaks = [0.0f64; 3];
    println!(
        "\n{:>4}  {:<10} {:>8} {:>8} {:>8} {:>8} {:>7}  {:>9} {:>6}",
        "conc", "work", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "ceiling", "ratio"
    );
    for (c, insert_tps, select_tps) in &ceilings {
        for (work, label) in [
            (Work::OktaMix, "okta_mix"),
            (Work::Create, "create"),
            (Work::GetById, "get_by_id"),
            (Work::Filter, "filter_eq"),
            (Work::ListPage, "list_page"),
        ] {
            if only.as_ref().is_some_and(|o| !o.iter().any(|w| w == label)) {
                continue;
            }
            // CPU per request: the machine is saturated at 32, so this moves least with noise. From
            // the end of the run's warm-up (0.5 s) to its end.
            let services = [&stack.gateway, &stack.directory, &stack.notification];
            let pids = services.map(|s| s.pid());
            // Each service's peak memory is then this measurement's.
            let peaks_reset = services.iter().all(|s| s.reset_peak_memory());
            let first = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                (cpu_sample(pids), own_cpu())
            });
            let mut tally = load::run(
                &client,
                work,
                *c,
                Duration::from_secs(seconds),
                existing.clone(),
                &format!("{run_id}-{label}-c{c}"),
            )
            .await;
            let ((before, own_before), after, own_after) = (first.await.unwrap(), cpu_sample(pids), own_cpu());
            let generator = generator_share(own_before, own_after);
            if matches!(work, Work::OktaMix | Work::Create) {
                // It created users (and their decisions): the next measurement meets the tables
                // as autovacuum would leave them.
                analyze_stack(&stack).await;
            }
            let requests = tally.successes().max(1) as f64;
            let cpu_ms: Vec<f64> =
                before.iter().zip(after).map(|(b, a)| ((a - b) * 1e6 / requests).round() / 1000.0).collect();
            let summary = tally.summary();
            let all = tally.all_latencies();
            let errors = tally.failures();
            check_tally(&format!("scim {label} c={c}"), &tally);
            let ceiling = match work {
                Work::Create => Some(*insert_tps),
                Work::GetById => Some(*select_tps),
                _ => None,
            };
            let ratio = ceiling.filter(|c| *c > 0.0).map(|c| tally.rate() / c);
            let peaks = services.map(|s| s.memory_mb().1);
            for (run, p) in run_peaks.iter_mut().zip(peaks) {
                *run = run.max(p);
            }
            if *c == 32 {
                let insert = Some(*insert_tps).filter(|t| *t > 0.0);
                match work {
                    Work::Create => ratio.into_iter().for_each(|r| measured("create_ratio_c32", r)),
                    Work::GetById => {
                        ratio.into_iter().for_each(|r| measured("get_by_id_ratio_c32", r));
                        measured("get_by_id_services_cpu_ms_c32", cpu_ms[0] + cpu_ms[1]);
                    }
                    Work::OktaMix => {
                        insert.into_iter().for_each(|t| measured("okta_mix_ratio_c32", tally.rate() / t));
                        measured("okta_mix_postgres_cpu_ms_c32", cpu_ms[3]);
                    }
                    _ => {}
                }
            }
            if work == Work::OktaMix {
                mix_peak = mix_peak.max(peaks.iter().copied().fold(0.0, f64::max));
                measured("okta_mix_peak_rss_mb", mix_peak);
            }
            println!(
                "{:>4}  {:<10} {:>8.0} {:>8.1} {:>8.1} {:>8.1} {:>7}  {:>9} {:>6}",
                c,
                label,
                tally.rate(),
                load::percentile(&all, 0.5),
                load::percentile(&all, 0.95),
                load::percentile(&all, 0.99),
                errors,
                ceiling.map_or("-".to_owned(), |v| format!("{v:.0}")),
                ratio.map_or("-".to_owned(), |r| format!("{:.0}%", r * 100.0)),
            );
            println!(
                "{:>16} CPU ms per request: gateway {}, directory {}, notification {}, PostgreSQL {}; load generator {:.0}% of the machine ({} cores)",
                "",
                cpu_ms[0],
                cpu_ms[1],
                cpu_ms[2],
                cpu_ms[3],
                generator * 100.0,
                cores()
            );
            println!(
                "{:>16} peak RSS{}: gateway {:.1}, directory {:.1}, notification {:.1} MB",
                "",
                if peaks_reset { " during it" } else { " since start" },
                peaks[0],
                peaks[1],
                peaks[2]
            );
            let cpu =
                json!({"gateway": cpu_ms[0], "directory": cpu_ms[1], "notification": cpu_ms[2], "postgres": cpu_ms[3]});
            results.push(json!({"concurrency": c, "work": label, "result": summary,
                "ceiling_tps": ceiling, "ratio_of_ceiling": ratio.map(|r| (r * 1000.0).round() / 1000.0),
                "cpu_ms_per_request": cpu,
                "peak_rss_mb": {"gateway": peaks[0], "directory": peaks[1], "notification": peaks[2],
                                "of_this_measurement": peaks_reset},
                "generator_cpu_share": (generator * 1000.0).round() / 1000.0}));
        }
    }
    let memory: serde_json::Map<String, serde_json::Value> = [&stack.gateway, &stack.directory, &stack.notification]
        .iter()
        .zip(run_peaks)
        .map(|(s, measured_peak)| {
            // The peak since the last reset (the last measurement) and those of every measurement.
            let (now, last) = s.memory_mb();
            let peak = last.max(measured_peak);
            println!("RSS {:<15} {now:>6.1} MB now, {peak:>6.1} MB peak over the measurements", s.name);
            (s.name.clone(), json!({"rss_mb": now, "peak_rss_mb": peak}))
        })
        .collect();
    json!({
        "seconds_per_measurement": seconds,
        "pgbench": ceilings.iter().map(|(c, i, s)| json!({"concurrency": c, "insert_tps": load::round(*i), "select_tps": load::round(*s)})).collect::<Vec<_>>(),
        "scim": results,
        "memory": memory,
    })
}

/// Latency of Okta's and Entra's lookups with 10,000 users in the database, then with 1,000,000
/// (seeded over 10,000 tenants): the indexes must keep them where they were.
async fn scale() -> serde_json::Value {
    let seconds = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5u64);
    let total: u64 = std::env::var("BENCH_SCALE_USERS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let stack = ProcessStack::start(&stack_settings()).await;
    let db = infra::DatabaseArgs::new(&stack.directory_db_url);
    let store = user_directory::Store::new(db.pool_as(user_directory::store::APP_ROLE).unwrap(), "bench");
    let client = load::Client {
        http: reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap(),
        base: format!("http://{}/scim/v2", stack.gateway_addr),
        auth: stack.auth(),
    };
    let existing = std::sync::Arc::new(load::seed(&client, "scale", 2000, 16).await);
    check_seeded("scale", existing.len(), 2000);
    store.seed("small", 80, 100, None).await.unwrap();
    analyze_stack(&stack).await;
    let works = [
        (Work::Filter, "filter_eq"),
        (Work::ExternalIdEq, "external_id_eq"),
        (Work::EmailEq, "email_eq"),
        (Work::GetById, "get_by_id"),
        (Work::ListPage, "list_page"),
    ];
    let mut stages = Vec::new();
    for stage in 0..2 {
        if stage == 1 {
            let started = Instant::now();
            let tenants = total.saturating_sub(10_000) / 100;
            let done = store.seed("large", tenants, 100, None).await.unwrap();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "seeded {} users over {} tenants in {secs:.0} s ({:.0} users/s)",
                done.users,
                done.tenants,
                done.users as f64 / secs
            );
            analyze_stack(&stack).await;
        }
        let users = store.count_all_users().await.unwrap();
        let mut row = serde_json::Map::new();
        for (work, label) in works {
            let mut tally = load::run(
                &client,
                work,
                8,
                Duration::from_secs(seconds),
                existing.clone(),
                &format!("scale{stage}{label}"),
            )
            .await;
            check_tally(&format!("scale {label} with {users} users"), &tally);
            row.insert(label.to_owned(), tally.summary());
        }
        stages.push(json!({"users": users, "results": row}));
    }
    println!(
        "\n{:<15} {:>12} {:>12} {:>12} {:>12} {:>8} {:>8}",
        "work", "p50 @small", "p50 @large", "p99 @small", "p99 @large", "p50 x", "errors"
    );
    for (_, label) in works {
        let get = |s: usize, q: &str| stages[s]["results"][label]["types"][label][q].as_f64().unwrap_or(0.0);
        println!(
            "{label:<15} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>8.2} {:>8}",
            get(0, "p50_ms"),
            get(1, "p50_ms"),
            get(0, "p99_ms"),
            get(1, "p99_ms"),
            get(1, "p50_ms") / get(0, "p50_ms").max(0.001),
            get(0, "errors") + get(1, "errors"),
        );
    }
    json!({"concurrency": 8, "seconds_per_measurement": seconds, "stages": stages})
}

/// The settings [`stack_settings`] lifts that the noisy neighbour keeps at their defaults.
const FAIRNESS: [&str; 2] = ["TENANT_MAX_IN_FLIGHT", "TENANT_MAX_CONNECTIONS"];

/// The noisy neighbour on the release binaries (`BENCH_NOISY_USERS` in the noisy tenant, 100,000
/// by default; `BENCH_NOISY_FLOWS` quiet users per phase, 200): every quiet request must succeed.
async fn noisy() -> serde_json::Value {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
    let noise = e2e::noisy::Noise { users: env("BENCH_NOISY_USERS", 100_000), group_members: 1_100, workers: 32 };
    let flows = usize::try_from(env("BENCH_NOISY_FLOWS", 200)).unwrap();
    // The deployment's defaults for the fairness limits (the rate limit stays out of the way).
    let settings: Vec<_> = stack_settings().into_iter().filter(|(k, _)| !FAIRNESS.contains(k)).collect();
    let stack = ProcessStack::start(&settings).await;
    stack
        .update_tenant(&user_directory::store::TenantUpdate {
            brake_min_users: Some(100_000_000),
            ..Default::default()
        })
        .await;
    let store = stack.store();
    let (_, key) = store.create_tenant("noisy", "Noisy").await.unwrap();
    let admin_db = sqlx::PgPool::connect(&stack.directory_db_url).await.unwrap();
    let (group, members) = e2e::noisy::prepare(&store, &admin_db, "noisy", noise).await;
    store.close().await;
    let okta = |auth: String| e2e::Okta {
        base: format!("http://{}/scim/v2", stack.gateway_addr),
        auth,
        http: reqwest::Client::new(),
    };
    let (quiet, noisy) = (okta(stack.auth()), okta(e2e::basic("noisy", &key.key)));
    analyze_stack(&stack).await;
    let (alone, beside, noisy_statuses) = e2e::noisy::run(&quiet, &noisy, &group, &members, noise, flows).await;
    let (a, b) = (alone.summary(), beside.summary());
    println!("\nnoisy neighbour: the quiet tenant's Okta user flow ({flows} users, 5 requests each, 2 at a time)");
    println!("{:<22} {:>10} {:>10} {:>10}", "", "alone", "beside", "x");
    for q in ["p50_ms", "p99_ms"] {
        let (x, y) = (a[q].as_f64().unwrap_or(0.0), b[q].as_f64().unwrap_or(0.0));
        println!("{q:<22} {x:>10.1} {y:>10.1} {:>10.1}", y / x.max(0.001));
    }
    println!("quiet statuses beside the noise: {}", b["statuses"]);
    println!("noisy tenant's answers: {noisy_statuses:?}");
    // The noisy tenant's refusals are the point of the scenario; the quiet tenant must have none.
    for (phase, flow) in [("alone", &alone), ("beside the noise", &beside)] {
        if !flow.all_succeeded() {
            fail(format!("noisy: a quiet request failed {phase}: {:?} {:?}", flow.statuses, flow.failures));
        }
    }
    json!({
        "noisy_users": noise.users, "noisy_workers": noise.workers, "quiet_users_per_phase": flows,
        "alone": a, "beside": b,
        "noisy_statuses": noisy_statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}

/// The scenarios of `all`, in order; `soak` runs alone (`make soak`).
const SCENARIOS: [&str; 7] = ["membership", "scim", "scale", "noisy", "notifications", "bigtenant", "import"];

#[tokio::main]
async fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".to_owned());
    if which != "all" && which != "soak" && !SCENARIOS.contains(&which.as_str()) {
        eprintln!("bench: no scenario {which:?}: one of all, soak, {}", SCENARIOS.join(", "));
        std::process::exit(2);
    }
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let settings = server_settings().await;
    println!(
        "PostgreSQL server: fsync = {}, synchronous_commit = {}, autovacuum = {}{}",
        settings["fsync"].as_str().unwrap_or("?"),
        settings["synchronous_commit"].as_str().unwrap_or("?"),
        settings["autovacuum"].as_str().unwrap_or("?"),
        if settings["autovacuum"] == "off" { " (the bench ANALYZEs after each phase that grows tables)" } else { "" }
    );
    for scenario in SCENARIOS.into_iter().chain(["soak"]) {
        // Not part of `all`: `make soak`.
        let run = if scenario == "soak" { which == "soak" } else { which == "all" || which == scenario };
        if !run {
            continue;
        }
        let mut result = match scenario {
            "membership" => membership().await,
            "scim" => scim().await,
            "scale" => scale().await,
            "noisy" => noisy().await,
            "notifications" => notifications().await,
            "bigtenant" => bigtenant::bigtenant().await,
            "import" => import::import_scenario().await,
            _ => soak().await,
        };
        if let Some(o) = result.as_object_mut() {
            o.insert("postgres_settings".to_owned(), settings.clone());
        }
        std::fs::write(out_dir.join(format!("{scenario}.json")), serde_json::to_string_pretty(&result).unwrap())
            .unwrap();
    }
    let failures = FAILURES.lock().unwrap().clone();
    let ran: Vec<&str> = SCENARIOS.into_iter().filter(|s| which == "all" || which == *s).collect();
    let floors_met = summary::report(&ran, &settings, &failures, &out_dir.join("summary.json"));
    if !floors_met {
        println!("\nFAILED: a figure is past its floor (summary above)");
    }
    if !failures.is_empty() {
        println!("\nFAILED: {} failure(s) in this run:", failures.len());
        for f in &failures {
            println!("  {f}");
        }
    }
    if !floors_met || !failures.is_empty() {
        std::process::exit(1);
    }
}

/// Open file descriptors of a process (Linux).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Steady Okta-like load for `SOAK_MINUTES` (30): each service's memory and open file
/// descriptors sampled every 30 s, then every promise checked as the fault tests check it.
/// Flat means the last third of the samples is within 10% (memory) / 10 fds of the first third
/// after warm-up.
async fn soak() -> serde_json::Value {
    let minutes: u64 = std::env::var("SOAK_MINUTES").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let mut stack = ProcessStack::start(&stack_settings()).await;
    stack
        .update_tenant(&user_directory::store::TenantUpdate {
            brake_min_users: Some(100_000_000),
            ..Default::default()
        })
        .await;
    let run = format!("soak{}", &Uuid::new_v4().simple().to_string()[..8]);
    let load = e2e::faults::Load::start(&stack, &run, 8);
    let started = std::time::Instant::now();
    let mut samples = Vec::new();
    println!("{:>6}  {:<15} {:>8} {:>5}", "min", "service", "RSS MB", "fds");
    while started.elapsed() < Duration::from_secs(minutes * 60) {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let at = started.elapsed().as_secs_f64() / 60.0;
        for which in [Which::Directory, Which::Gateway, Which::Notification] {
            let service = stack.service(which);
            let (rss, _) = service.memory_mb();
            let fds = service.pid().map_or(0, open_fds);
            println!("{at:>6.1}  {:<15} {rss:>8.1} {fds:>5}", service.name);
            samples.push(json!({"minute": load::round(at), "service": service.name, "rss_mb": rss, "fds": fds}));
        }
    }
    let ledger = load.finish().await;
    let requests = ledger.requests.load(std::sync::atomic::Ordering::Relaxed);
    e2e::faults::verify(&stack, &run, &ledger, e2e::faults::Resends::None).await;
    let mut verdicts = serde_json::Map::new();
    for name in ["user-directory", "scim-gateway", "notification"] {
        let mine: Vec<&serde_json::Value> = samples.iter().filter(|s| s["service"] == name).collect();
        let third = (mine.len() / 3).max(1);
        let mean = |xs: &[&serde_json::Value], k: &str| {
            xs.iter().map(|s| s[k].as_f64().unwrap_or(0.0)).sum::<f64>() / xs.len() as f64
        };
        // The first sample is warm-up.
        let first = &mine[1.min(mine.len() - 1)..(1 + third).min(mine.len())];
        let last = &mine[mine.len() - third..];
        let (rss0, rss1, fd0, fd1) =
            (mean(first, "rss_mb"), mean(last, "rss_mb"), mean(first, "fds"), mean(last, "fds"));
        let flat = rss1 <= rss0 * 1.1 && fd1 <= fd0 + 10.0;
        println!(
            "{name:<15} RSS {rss0:.1} -> {rss1:.1} MB, fds {fd0:.0} -> {fd1:.0}: {}",
            if flat { "flat" } else { "GROWING" }
        );
        verdicts.insert(
            name.to_owned(),
            json!({"rss_mb_first": rss0, "rss_mb_last": rss1, "fds_first": fd0, "fds_last": fd1, "flat": flat}),
        );
    }
    println!("{requests} requests, {} users provisioned; every promise held", ledger.users.lock().unwrap().len());
    json!({"minutes": minutes, "requests": requests, "samples": samples, "verdicts": verdicts})
}
