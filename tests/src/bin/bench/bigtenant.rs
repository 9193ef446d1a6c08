//! `bigtenant`: every lookup Okta and Entra send, in a tenant of `BENCH_BIG_TENANT_USERS`
//! (200,000) users and in one of 100, measured alternately on the release binaries at
//! concurrency 8. A lookup whose latency grows with the tenant's size (a scan of the tenant's
//! documents where an index should answer) shows as a large / small ratio of the p50s above 1.5.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::load;
use e2e::processes::ProcessStack;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{analyze_stack, check_tally, env_u64, generator_share, measured, own_cpu, stack_settings};

/// The small tenant's users.
const SMALL_USERS: u64 = 100;
/// Groups of each tenant.
const GROUPS: u64 = 10;
/// How many values of each kind are looked up, per tenant (drawn at random from the tenant).
const SAMPLES: i64 = 1000;

/// A lookup: its figure's key, its label and its filter (of the sampled user or group).
struct Lookup {
    key: &'static str,
    label: &'static str,
    resource: &'static str,
    filter: fn(&Sample) -> String,
}

/// One user's (or group's) values as seeded.
#[derive(Debug, Clone)]
struct Sample {
    user_name: String,
    external_id: String,
    email: String,
    group: String,
}

const LOOKUPS: [Lookup; 5] = [
    Lookup {
        key: "bigtenant_user_name_eq",
        label: "userName eq",
        resource: "Users",
        filter: |s| format!("userName eq \"{}\"", s.user_name),
    },
    Lookup {
        key: "bigtenant_external_id_eq",
        label: "externalId eq",
        resource: "Users",
        filter: |s| format!("externalId eq \"{}\"", s.external_id),
    },
    Lookup {
        key: "bigtenant_work_email_eq",
        label: "emails[type eq \"work\"].value eq",
        resource: "Users",
        filter: |s| format!("emails[type eq \"work\"].value eq \"{}\"", s.email),
    },
    Lookup {
        key: "bigtenant_emails_value_eq",
        label: "emails.value eq",
        resource: "Users",
        filter: |s| format!("emails.value eq \"{}\"", s.email),
    },
    Lookup {
        key: "bigtenant_group_display_name_eq",
        label: "Groups displayName eq",
        resource: "Groups",
        filter: |s| format!("displayName eq \"{}\"", s.group),
    },
];

/// Percent-encodes a query parameter's value (all but unreserved characters).
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Seeds a tenant in SQL (as `user-directory seed` does, but with the documents an identity
/// provider sends): `users` users with a userName, an Okta-like externalId, a name, a displayName
/// and one work email (not the userName), and `GROUPS` groups with a displayName and externalId.
async fn seed(db: &sqlx::PgPool, tenant: Uuid, domain: &str, users: u64) {
    const CHUNK: u64 = 50_000;
    let mut from = 1;
    while from <= users {
        let to = (from + CHUNK - 1).min(users);
        sqlx::query(
            "INSERT INTO users (tenant_id, id, user_name, user_name_folded, external_id, active, given_name,
                family_name, display_name, email, locale, source, created_at, updated_at, document)
             SELECT $1, gen_random_uuid(), u.login, lower(u.login), u.ext, true, u.given, u.family,
                    u.given || ' ' || u.family, u.mail, 'en-US', 'scim', now(), now(),
                    jsonb_build_object('userName', u.login, 'externalId', u.ext,
                        'name', jsonb_build_object('givenName', u.given, 'familyName', u.family,
                                                   'formatted', u.given || ' ' || u.family),
                        'displayName', u.given || ' ' || u.family,
                        'emails', jsonb_build_array(jsonb_build_object('value', u.mail, 'type', 'work', 'primary', true)),
                        'active', true, 'locale', 'en-US')
             FROM generate_series($2::bigint, $3::bigint) AS g,
                  LATERAL (SELECT 'Given' || (g % 997) AS given, 'Family' || g AS family) AS n,
                  LATERAL (SELECT n.given, n.family,
                                  'login' || g || '@' || $4 AS login,
                                  lower(n.given || '.' || n.family) || '@mail.' || $4 AS mail,
                                  '00u' || substr(md5($4 || g), 1, 17) AS ext) AS u",
        )
        .bind(tenant)
        .bind(i64::try_from(from).unwrap())
        .bind(i64::try_from(to).unwrap())
        .bind(domain)
        .execute(db)
        .await
        .unwrap();
        from = to + 1;
    }
    sqlx::query(
        "INSERT INTO groups (tenant_id, id, display_name, display_name_folded, external_id, created_at, updated_at, document)
         SELECT $1, gen_random_uuid(), n.name, lower(n.name), n.ext, now(), now(),
                jsonb_build_object('displayName', n.name, 'externalId', n.ext)
         FROM generate_series(1, $2::bigint) AS g,
              LATERAL (SELECT 'Team ' || g || ' of ' || $3 AS name, '00g' || substr(md5($3 || 'g' || g), 1, 17) AS ext) AS n",
    )
    .bind(tenant)
    .bind(i64::try_from(GROUPS).unwrap())
    .bind(domain)
    .execute(db)
    .await
    .unwrap();
}

/// `SAMPLES` of a tenant's users' values (and its groups' names, in turn), at random.
async fn samples(db: &sqlx::PgPool, tenant: Uuid) -> Vec<Sample> {
    let users: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT user_name, external_id, document->'emails'->0->>'value' FROM users WHERE tenant_id = $1
         ORDER BY random() LIMIT $2",
    )
    .bind(tenant)
    .bind(SAMPLES)
    .fetch_all(db)
    .await
    .unwrap();
    let groups: Vec<String> = sqlx::query_scalar("SELECT display_name FROM groups WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_all(db)
        .await
        .unwrap();
    users
        .into_iter()
        .enumerate()
        .map(|(i, (user_name, external_id, email))| Sample {
            user_name,
            external_id,
            email,
            group: groups[i % groups.len()].clone(),
        })
        .collect()
}

pub async fn bigtenant() -> Value {
    let big_users = env_u64("BENCH_BIG_TENANT_USERS", 200_000);
    let rounds = usize::try_from(env_u64("BENCH_BIG_TENANT_ROUNDS", 4)).unwrap();
    // Each (lookup, tenant) cell is measured `rounds` times for half of BENCH_SECONDS.
    let cell = Duration::from_millis((env_u64("BENCH_SECONDS", 5) * 500).max(1000));
    let stack = ProcessStack::start(&stack_settings()).await;
    let store = stack.store();
    let (big, big_key) = store.create_tenant("bigco", "Big Co").await.unwrap();
    let (small, small_key) = store.create_tenant("smallco", "Small Co").await.unwrap();
    store.close().await;
    let db = sqlx::PgPool::connect(&stack.directory_db_url).await.unwrap();
    let started = Instant::now();
    seed(&db, big.id, "bigco.example", big_users).await;
    seed(&db, small.id, "smallco.example", SMALL_USERS).await;
    let seeding = started.elapsed().as_secs_f64();
    println!("bigtenant: seeded {big_users} + {SMALL_USERS} users and {GROUPS} groups per tenant in {seeding:.0} s");
    analyze_stack(&stack).await;
    let tenants = [("small", small.id, small_key.key, "smallco"), ("large", big.id, big_key.key, "bigco")];
    let mut clients = Vec::new();
    let mut paths: Vec<Vec<Arc<Vec<String>>>> = Vec::new();
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    for (_, id, key, subdomain) in &tenants {
        clients.push(load::Client {
            http: http.clone(),
            base: format!("http://{}/scim/v2", stack.gateway_addr),
            auth: e2e::basic(subdomain, key),
        });
        let picked = samples(&db, *id).await;
        paths.push(
            LOOKUPS
                .iter()
                .map(|l| {
                    Arc::new(
                        picked.iter().map(|s| format!("/{}?filter={}", l.resource, encode(&(l.filter)(s)))).collect(),
                    )
                })
                .collect(),
        );
    }
    db.close().await;
    // [tenant][lookup]: latencies of the successful lookups, and the failed ones.
    let mut latencies = vec![vec![Vec::<f64>::new(); LOOKUPS.len()]; 2];
    let mut errors = vec![vec![0usize; LOOKUPS.len()]; 2];
    let own_before = own_cpu();
    for round in 0..rounds {
        for (li, lookup) in LOOKUPS.iter().enumerate() {
            // Alternate which tenant goes first, so that neither always meets the other's cache.
            let order = if (round + li) % 2 == 0 { [0, 1] } else { [1, 0] };
            for t in order {
                let tally = load::run_lookups(&clients[t], lookup.key, paths[t][li].clone(), 8, cell).await;
                check_tally(&format!("bigtenant {} in the {} tenant", lookup.label, tenants[t].0), &tally);
                latencies[t][li].extend(tally.all_latencies());
                errors[t][li] += tally.failures();
            }
        }
    }
    let generator = generator_share(own_before, own_cpu());
    println!(
        "\nbigtenant: lookups at concurrency 8, {rounds} alternated rounds of {:.1} s per tenant; tenants of {SMALL_USERS} and {big_users} users",
        cell.as_secs_f64()
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10} {:>8} {:>7}",
        "lookup", "p50 small", "p50 large", "p99 small", "p99 large", "p50 x", "errors"
    );
    let mut out = serde_json::Map::new();
    for (li, lookup) in LOOKUPS.iter().enumerate() {
        let stats: Vec<(f64, f64, usize)> = (0..2)
            .map(|t| {
                let l = &mut latencies[t][li];
                l.sort_by(f64::total_cmp);
                (load::percentile(l, 0.5), load::percentile(l, 0.99), l.len())
            })
            .collect();
        let ratio = stats[1].0 / stats[0].0.max(0.001);
        if stats[0].2 > 0 && stats[1].2 > 0 {
            measured(lookup.key, ratio);
        }
        println!(
            "{:<34} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>8.2} {:>7}",
            lookup.label,
            stats[0].0,
            stats[1].0,
            stats[0].1,
            stats[1].1,
            ratio,
            errors[0][li] + errors[1][li]
        );
        let side = |t: usize| {
            json!({"p50_ms": load::round(stats[t].0), "p99_ms": load::round(stats[t].1),
                   "samples": stats[t].2, "errors": errors[t][li]})
        };
        out.insert(
            lookup.key.to_owned(),
            json!({"filter": lookup.label, "small": side(0), "large": side(1),
                   "ratio_p50_large_over_small": (ratio * 100.0).round() / 100.0}),
        );
    }
    println!("load generator: {:.0}% of the machine during the lookups", generator * 100.0);
    json!({
        "large_tenant_users": big_users, "small_tenant_users": SMALL_USERS, "groups_per_tenant": GROUPS,
        "concurrency": 8, "rounds": rounds, "seconds_per_cell": cell.as_secs_f64(), "seeding_seconds": seeding,
        "generator_cpu_share": (generator * 1000.0).round() / 1000.0,
        "lookups": out,
    })
}
