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

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use e2e::TestStack;
use serde_json::json;
use uuid::Uuid;

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
    sqlx::query("ANALYZE group_members").execute(db).await.unwrap();
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
            assert_eq!(okta.patch(&path, add).await.status, 204);
            timings[gi].0.push(t.elapsed().as_secs_f64() * 1000.0);
            let remove = json!({"Operations": [{"op": "remove", "path": format!("members[value eq \"{member}\"]")}]});
            let t = Instant::now();
            assert_eq!(okta.patch(&path, remove).await.status, 204);
            timings[gi].1.push(t.elapsed().as_secs_f64() * 1000.0);
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
    println!("notifications: {per_second:.0} events/s decided from a backlog of {BACKLOG}");

    // Latency at a fixed write rate: each write's commit (the event's occurred_at) to its decision;
    // through the stack's gateway (request log on), then one with the request log off.
    let mut config = stack.gateway_config.clone();
    config.request_log = false;
    let unlogged = stack.start_gateway(config).await;
    let plain = write_latencies(&stack, &stack.okta_at(unlogged, &stack.auth()), "x", RATE, SECONDS).await;
    let logged = write_latencies(&stack, &stack.okta(), "w", RATE, SECONDS).await;
    let p = |l: &[f64]| (percentile(l, 0.5), percentile(l, 0.95), percentile(l, 0.99));
    let ((p50, p95, p99), (q50, _, q99)) = (p(&logged), p(&plain));
    println!(
        "notifications: SCIM write -> decision at {RATE} writes/s: p50 {p50:.1} ms, p95 {p95:.1} ms, p99 {p99:.1} ms"
    );
    println!(
        "notifications: the same with the request log off: p50 {q50:.1} ms, p99 {q99:.1} ms (log on / off: p50 {:.2}, p99 {:.2})",
        p50 / q50,
        p99 / q99
    );
    stack.stop().await;
    json!({"backlog_events_per_second": per_second, "write_rate_per_second": RATE,
           "write_to_decision_ms": {"p50": p50, "p95": p95, "p99": p99, "samples": logged.len()},
           "write_to_decision_ms_request_log_off": {"p50": q50, "p99": q99, "samples": plain.len()}})
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
    for w in writes {
        assert_eq!(w.await.unwrap(), 201);
    }
    stack.wait_for_decisions(decided_before + (rate * seconds) as usize).await;
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

#[tokio::main]
async fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".to_owned());
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    if which == "all" || which == "membership" {
        let result = membership().await;
        std::fs::write(out_dir.join("membership.json"), serde_json::to_string_pretty(&result).unwrap()).unwrap();
    }
    if which == "all" || which == "notifications" {
        let result = notifications().await;
        std::fs::write(out_dir.join("notifications.json"), serde_json::to_string_pretty(&result).unwrap()).unwrap();
    }
}
