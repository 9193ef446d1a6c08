//! Tenancy and security: many customers share one deployment, so one tenant never sees, changes or
//! slows down another; a leaked key is contained; a misconfigured Okta cannot archive a customer in
//! a minute; and every SCIM request is on the record, without its secrets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use e2e::{Okta, Reply, TestStack, basic, poll};
use futures::StreamExt;
use proto::directory::v1::admin_client::AdminClient;
use proto::directory::v1::{IssueKeyRequest, RevokeKeyRequest, TenantRef};
use proto::events::v1::envelope::Payload;
use serde_json::{Value, json};
use sqlx::Row;
use user_directory::store::TenantUpdate;
use uuid::Uuid;

const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
use e2e::{OKTA_PASSWORD as PASSWORD, okta_deactivation as deactivate, okta_user as user};

async fn create_user(okta: &Okta, name: &str) -> String {
    let r = okta.post("/Users", user(name)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

/// Creates `n` users one after another, named `<prefix><i>@<domain>`; returns their ids.
async fn create_users(okta: &Okta, prefix: &str, domain: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(create_user(okta, &format!("{prefix}{i}@{domain}")).await);
    }
    ids
}

/// The deprovisions the brake's tally holds (migration 0013), over every tenant.
async fn tally(stack: &TestStack) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(n), 0)::bigint FROM deprovision_tally")
        .fetch_one(&stack.directory_db)
        .await
        .unwrap()
}

fn retry_after(r: &Reply) -> u64 {
    r.headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After on {} {:?}", r.status, r.body))
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is an integer number of seconds")
}

fn assert_scim_error(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    assert_eq!(r.body["status"], status.to_string());
    assert!(!r.body["detail"].as_str().unwrap_or("").is_empty());
}

async fn update(stack: &TestStack, subdomain: &str, u: TenantUpdate) {
    stack.store().update_tenant(subdomain, &u).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_hides_other_tenants_even_from_an_unscoped_query() {
    let stack = TestStack::start_with("1s", false).await;
    let acme = stack.okta();
    create_user(&acme, "ann@acme.com").await;
    create_user(&acme, "bob@acme.com").await;
    let globex_key = stack.add_tenant("globex").await;
    let globex = stack.okta_at(stack.gateway_addr, &basic("globex", &globex_key));
    create_user(&globex, "gil@globex.com").await;

    let store = stack.store();
    let acme_tenant = store.tenant_by_subdomain("acme").await.unwrap();
    let globex_tenant = store.tenant_by_subdomain("globex").await.unwrap();
    let mut tx = store.tenant_transaction(&globex_tenant).await.unwrap();
    // No tenant condition at all: the policy still admits only globex's rows.
    let names: Vec<String> =
        sqlx::query_scalar("SELECT user_name FROM users ORDER BY user_name").fetch_all(&mut *tx).await.unwrap();
    assert_eq!(names, ["gil@globex.com"]);
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(keys, 1);
    // Asking for acme's rows by id finds nothing; changing them changes nothing.
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE tenant_id = $1")
        .bind(acme_tenant.id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    let changed = sqlx::query("UPDATE users SET active = false WHERE tenant_id = $1")
        .bind(acme_tenant.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 0);
    // Writing a row for acme from globex's transaction is refused outright.
    let forged = sqlx::query("INSERT INTO held_changes (tenant_id, id, user_id, kind) VALUES ($1, $2, $3, 'delete')")
        .bind(acme_tenant.id)
        .bind(Uuid::new_v4())
        .bind(Uuid::new_v4())
        .execute(&mut *tx)
        .await;
    assert!(forged.unwrap_err().to_string().contains("row-level security"));
    drop(tx);

    // A transaction of the service's role that names no tenant sees no tenant's rows.
    let mut bare = store.pool().begin().await.unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut *bare).await.unwrap();
    assert_eq!(all, 0);
    drop(bare);

    // A read in one statement (migration 0011) scopes its own transaction and nothing after it:
    // on the same pooled connection, a statement that names no tenant sees nothing again, and
    // the function finds no user of another tenant.
    let ann: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE user_name = 'ann@acme.com'")
        .fetch_one(&stack.directory_db)
        .await
        .unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    let found: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM scim_user_by_id($1, $2, true)")
        .bind(acme_tenant.id)
        .bind(ann)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(found, [ann]);
    let after: (i64, String) =
        sqlx::query_as("SELECT count(*), coalesce(current_setting('app.tenant_id', true), '') FROM users")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(after, (0, String::new()));
    let across: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM scim_user_by_id($1, $2, true)")
        .bind(globex_tenant.id)
        .bind(ann)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert!(across.is_empty());
    drop(conn);
    // While the database itself holds all three.
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&stack.directory_db).await.unwrap();
    assert_eq!(total, 3);
    stack.stop().await;
}

/// Replaces `id` in a response so that the answers about two ids can be compared.
fn normalized(r: &Reply, id: &str) -> (u16, String) {
    (r.status, r.body.to_string().replace(id, "<id>"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_ids_are_indistinguishable_from_missing_ones_on_every_endpoint() {
    let stack = TestStack::start_with("1s", false).await;
    let acme = stack.okta();
    let user_id = create_user(&acme, "victim@acme.com").await;
    let group = acme
        .post("/Groups", json!({"schemas": [GROUP], "displayName": "Acme staff", "members": [{"value": user_id}]}))
        .await;
    assert_eq!(group.status, 201);
    let group_id = group.body["id"].as_str().unwrap().to_owned();
    let assigned =
        acme.api("POST", "/assignments", Some(json!({"userId": user_id, "contentId": "c-1", "title": "Safety"}))).await;
    assert_eq!(assigned.status, 201, "{:?}", assigned.body);
    let assignment_id = assigned.body["id"].as_str().unwrap().to_owned();
    let failed = acme.post("/Users", user("victim@acme.com")).await;
    assert_eq!(failed.status, 409);
    let request_id = failed.headers["x-request-id"].to_str().unwrap().to_owned();
    poll("acme's request to be logged", || async {
        (acme.api("GET", &format!("/requests/{request_id}"), None).await.status == 200).then_some(())
    })
    .await;

    let globex_key = stack.add_tenant("globex").await;
    let globex = stack.okta_at(stack.gateway_addr, &basic("globex", &globex_key));
    let own = globex.post("/Groups", json!({"schemas": [GROUP], "displayName": "Globex staff"})).await;
    let own_group = own.body["id"].as_str().unwrap().to_owned();

    let before_user = acme.get(&format!("/Users/{user_id}")).await.body;
    let before_group = acme.get(&format!("/Groups/{group_id}")).await.body;
    let before_assignment = acme.api("GET", &format!("/assignments/{assignment_id}"), None).await.body;
    let acme_events = |events: &[e2e::StreamEvent]| events.iter().filter(|e| e.envelope.tenant == "acme").count();
    let events_before = acme_events(&stack.settled_events().await);

    // Every endpoint and method that takes an id, with acme's id and with an id nobody has.
    type Probe = (&'static str, &'static str, fn(&str, &str) -> String, Option<fn(&str) -> Value>);
    let scim: Vec<Probe> = vec![
        ("GET", "user", |id, _| format!("/Users/{id}"), None),
        ("PUT", "user", |id, _| format!("/Users/{id}"), Some(|_| user("taken.over@globex.com"))),
        ("PATCH", "user", |id, _| format!("/Users/{id}"), Some(|_| deactivate())),
        ("DELETE", "user", |id, _| format!("/Users/{id}"), None),
        ("GET", "user", |id, _| format!("/Users?filter=id%20eq%20%22{id}%22"), None),
        ("GET", "user", |id, _| format!("/Users/{id}?attributes=groups"), None),
        ("POST", "user", |_, _| "/Users/.search".into(), Some(|id| json!({"filter": format!("id eq \"{id}\"")}))),
        ("POST", "user", |_, _| "/.search".into(), Some(|id| json!({"filter": format!("id eq \"{id}\"")}))),
        ("GET", "group", |id, _| format!("/Groups/{id}"), None),
        (
            "PUT",
            "group",
            |id, _| format!("/Groups/{id}"),
            Some(|_| json!({"schemas": [GROUP], "displayName": "Mine now"})),
        ),
        (
            "PATCH",
            "group",
            |id, _| format!("/Groups/{id}"),
            Some(|_| json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"displayName": "Mine"}}]})),
        ),
        ("DELETE", "group", |id, _| format!("/Groups/{id}"), None),
        ("GET", "user", |id, _| format!("/Groups?filter=members.value%20eq%20%22{id}%22"), None),
        // Globex's own group, given acme's user as a member.
        (
            "PATCH",
            "user",
            |_, own| format!("/Groups/{own}"),
            Some(
                |id| json!({"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]}),
            ),
        ),
        (
            "PUT",
            "user",
            |_, own| format!("/Groups/{own}"),
            Some(|id| json!({"schemas": [GROUP], "displayName": "Globex staff", "members": [{"value": id}]})),
        ),
        (
            "POST",
            "user",
            |_, _| "/Groups".into(),
            Some(|id| json!({"schemas": [GROUP], "displayName": format!("probe {id}"), "members": [{"value": id}]})),
        ),
    ];
    let api: Vec<Probe> = vec![
        ("GET", "assignment", |id, _| format!("/assignments/{id}"), None),
        (
            "POST",
            "user",
            |_, _| "/assignments".into(),
            Some(|id| json!({"userId": id, "contentId": format!("c-{id}"), "title": "Probe"})),
        ),
        ("GET", "request", |id, _| format!("/requests/{id}"), None),
        ("POST", "request", |id, _| format!("/requests/{id}/redrive"), None),
    ];
    let target = |kind: &str| match kind {
        "user" => user_id.clone(),
        "group" => group_id.clone(),
        "assignment" => assignment_id.clone(),
        _ => request_id.clone(),
    };
    let mut probed = 0;
    for (is_api, probes) in [(false, &scim), (true, &api)] {
        for (method, kind, path, body) in probes {
            let real = target(kind);
            let missing = Uuid::now_v7().to_string();
            let mut answers = Vec::new();
            for id in [&real, &missing] {
                let (path, body) = (path(id, &own_group), body.map(|b| b(id)));
                let r =
                    if is_api { globex.api(method, &path, body).await } else { globex.send(method, &path, body).await };
                answers.push(normalized(&r, id));
            }
            assert_eq!(answers[0], answers[1], "{method} {kind}: acme's id answered differently from a missing one");
            assert!(
                answers[0].0 == 404 || answers[0].0 < 300 || answers[0].0 == 400,
                "{method} {kind}: {:?}",
                answers[0]
            );
            probed += 1;
        }
    }
    assert_eq!(probed, 20);
    // Okta's lookup by userName (one statement of its own): acme's user is not there for globex,
    // with or without their groups, and is for acme.
    for attributes in ["", "&attributes=groups"] {
        let path = format!("/Users?filter=userName%20eq%20%22VICTIM%40acme.com%22{attributes}");
        let theirs = globex.get(&path).await;
        assert_eq!((theirs.status, &theirs.body["totalResults"]), (200, &json!(0)), "{path}: {:?}", theirs.body);
        assert_eq!(theirs.body["Resources"].as_array().map_or(0, Vec::len), 0, "{path}");
        let own = acme.get(&path).await;
        assert_eq!(own.body["totalResults"], json!(1), "{path}: {:?}", own.body);
        assert_eq!(own.body["Resources"][0]["id"], json!(user_id), "{path}");
        if !attributes.is_empty() {
            assert_eq!(own.body["Resources"][0]["groups"][0]["value"], json!(group_id), "{path}: {:?}", own.body);
        }
    }

    // Nothing of acme's changed, and acme raised no event.
    assert_eq!(acme.get(&format!("/Users/{user_id}")).await.body, before_user);
    assert_eq!(acme.get(&format!("/Groups/{group_id}")).await.body, before_group);
    assert_eq!(acme.api("GET", &format!("/assignments/{assignment_id}"), None).await.body, before_assignment);
    assert_eq!(acme_events(&stack.settled_events().await), events_before);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_rotates_under_load_without_one_failed_request() {
    let stack = TestStack::start_with("1s", false).await;
    let old_key = stack.api_key.clone();
    let old_id: Uuid = stack.store().list_keys("acme").await.unwrap()[0].id;
    // (key, generation), and how many requests are in flight with the old key.
    let current = Arc::new(RwLock::new((old_key.clone(), 0u32)));
    let old_in_flight = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (current, in_flight, stop) = (current.clone(), old_in_flight.clone(), stop.clone());
        let base = stack.base_url.clone();
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut statuses = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (key, generation) = {
                    let guard = current.read().unwrap();
                    if guard.1 == 0 {
                        in_flight.fetch_add(1, Ordering::SeqCst);
                    }
                    guard.clone()
                };
                let okta = Okta { base: base.clone(), auth: basic("acme", &key), http: http.clone() };
                let r = if i % 2 == 0 {
                    okta.post("/Users", user(&format!("w{w}-{i}@acme.com"))).await
                } else {
                    okta.get("/Users?filter=userName%20eq%20%22nobody%40acme.com%22").await
                };
                if generation == 0 {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                statuses.push(r.status);
                i += 1;
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The operator issues a new key, the customer puts it into Okta, the operator revokes the old.
    let new_key = stack.store().issue_key("acme", "rotated", None, &[]).await.unwrap();
    *current.write().unwrap() = (new_key.key.clone(), 1);
    poll("the old key's requests to finish", || async { (old_in_flight.load(Ordering::SeqCst) == 0).then_some(()) })
        .await;
    stack.store().revoke_key(old_id, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    assert!(all.len() > 40, "only {} requests", all.len());
    let failed: Vec<_> = all.iter().filter(|s| !(200..300).contains(*s)).collect();
    assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), all.len());
    // And the old key is dead.
    let okta = stack.okta_at(stack.gateway_addr, &basic("acme", &old_key));
    poll("the old key to be refused", || async { (okta.get("/Users?count=1").await.status == 401).then_some(()) })
        .await;
    stack.stop().await;
}

/// Polls a gateway until it answers `status`; returns how long that took.
async fn until_status(okta: &Okta, status: u16) -> Duration {
    let started = Instant::now();
    poll(&format!("{} to answer {status}", okta.base), || async {
        (okta.get("/Users?count=1").await.status == status).then_some(())
    })
    .await;
    started.elapsed()
}

/// The bound the operator interface states: a revoked key, a suspended or a paused tenant reaches
/// every gateway within AUTH_CACHE_TTL_SECS (5 s), and through the event much sooner. The gateways
/// here cache for 5 minutes, so only the event can be what stops the key.
const REVOCATION_BOUND: Duration = Duration::from_secs(5);

async fn admin_client(addr: SocketAddr) -> AdminClient<tonic::transport::Channel> {
    AdminClient::connect(format!("http://{addr}")).await.unwrap()
}

fn with_token<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {}", e2e::ADMIN_TOKEN).parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_suspension_and_pause_reach_every_gateway_within_the_bound() {
    let mut stack = TestStack::start_with("1s", false).await;
    let mut config = stack.gateway_config.clone();
    config.auth_cache_ttl_secs = 300;
    let gateways = [stack.start_gateway(config.clone()).await, stack.start_gateway(config).await];

    // The Admin API refuses a caller without the token.
    let mut admin = admin_client(stack.admin_addr).await;
    let refused = admin.get_tenant(TenantRef { subdomain: "acme".into() }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let issued =
        admin.issue_key(with_token(IssueKeyRequest { subdomain: "acme".into(), ..Default::default() })).await.unwrap();
    let issued = issued.into_inner();
    assert!(issued.api_key.starts_with("lpscim_"), "keys have a recognisable prefix");

    let clients: Vec<Okta> = gateways.iter().map(|g| stack.okta_at(*g, &basic("acme", &issued.api_key))).collect();
    for c in &clients {
        assert_eq!(c.get("/Users?count=1").await.status, 200);
    }
    admin.revoke_key(with_token(RevokeKeyRequest { key_id: issued.key_id })).await.unwrap();
    for c in &clients {
        let took = until_status(c, 401).await;
        assert!(took < REVOCATION_BOUND, "the revoked key still worked after {took:?}");
    }
    // The tenant's other key is untouched.
    let others: Vec<Okta> = gateways.iter().map(|g| stack.okta_at(*g, &stack.auth())).collect();
    for c in &others {
        assert_eq!(c.get("/Users?count=1").await.status, 200);
    }

    update(&stack, "acme", TenantUpdate { suspended: Some(true), ..Default::default() }).await;
    for c in &others {
        let took = until_status(c, 401).await;
        assert!(took < REVOCATION_BOUND, "the suspended tenant still worked after {took:?}");
    }
    update(&stack, "acme", TenantUpdate { suspended: Some(false), paused: Some(true), ..Default::default() }).await;
    for c in &others {
        let took = until_status(c, 503).await;
        assert!(took < REVOCATION_BOUND, "the paused tenant still provisioned after {took:?}");
    }
    update(&stack, "acme", TenantUpdate { paused: Some(false), ..Default::default() }).await;
    for c in &others {
        until_status(c, 200).await;
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_tenant_gets_503_with_retry_after_and_nothing_changes() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    update(&stack, "acme", TenantUpdate { paused: Some(true), ..Default::default() }).await;
    until_status(&okta, 503).await;
    let r = okta.post("/Users", user("while.paused@acme.com")).await;
    assert_scim_error(&r, 503);
    assert_eq!(retry_after(&r), 300);
    assert!(r.body["detail"].as_str().unwrap().contains("paused"));
    // The tenant API still answers: the customer can read why.
    let log = okta.api("GET", "/requests?status=503", None).await;
    assert_eq!(log.status, 200);

    update(&stack, "acme", TenantUpdate { paused: Some(false), ..Default::default() }).await;
    until_status(&okta, 200).await;
    let found = okta.get("/Users?filter=userName%20eq%20%22while.paused%40acme.com%22").await;
    assert_eq!(found.body["totalResults"], 0, "a paused request changed something");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_limit_gets_429_with_retry_after_and_others_do_not_notice() {
    let stack = TestStack::start_with("1s", false).await;
    let acme = stack.okta();
    let globex_key = stack.add_tenant("globex").await;
    let globex = stack.okta_at(stack.gateway_addr, &basic("globex", &globex_key));
    update(
        &stack,
        "acme",
        TenantUpdate { rate_limit_per_second: Some(1), rate_limit_burst: Some(3), ..Default::default() },
    )
    .await;
    let limited = poll("acme's limit to apply", || async {
        let mut statuses = Vec::new();
        for _ in 0..8 {
            let r = acme.get("/Users?count=1").await;
            statuses.push(r.status);
            if r.status == 429 {
                return Some((statuses, r));
            }
        }
        None
    })
    .await;
    let (statuses, r) = limited;
    assert!(statuses.iter().filter(|s| **s == 200).count() <= 4, "the burst is 3: {statuses:?}");
    assert_scim_error(&r, 429);
    let wait = retry_after(&r);
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // Another tenant on the same gateway is not slowed down.
    for _ in 0..20 {
        assert_eq!(globex.get("/Users?count=1").await.status, 200);
    }
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(acme.get("/Users?count=1").await.status, 200, "after waiting Retry-After the request is admitted");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_is_limited_per_address_and_per_subdomain() {
    let mut stack = TestStack::start_with("1s", false).await;
    let mut config = stack.gateway_config.clone();
    config.auth_failures_per_minute = 5;
    config.trust_forwarded_for = true;
    let addr = stack.start_gateway(config).await;
    let http = reqwest::Client::new();
    let attempt = |ip: &str, auth: &str| {
        http.get(format!("http://{addr}/scim/v2/Users?count=1"))
            .header("Authorization", auth)
            .header("X-Forwarded-For", format!("203.0.113.9, {ip}"))
            .send()
    };
    // The real credentials work once on this gateway (they are remembered as good).
    assert_eq!(attempt("198.51.100.1", &stack.auth()).await.unwrap().status(), 200);

    // One address guessing keys for many subdomains: 5 failures are answered 401, then 429.
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses
            .push(attempt("192.0.2.1", &basic(&format!("guess{i}"), "lpscim_wrong")).await.unwrap().status().as_u16());
    }
    assert_eq!(&statuses[..5], [401; 5]);
    assert_eq!(statuses[7], 429, "{statuses:?}");
    let r = attempt("192.0.2.1", &basic("acme", "lpscim_wrong")).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    // Another address is not affected, and known-good credentials from the blocked one still work.
    assert_eq!(attempt("192.0.2.2", &basic("other", "lpscim_wrong")).await.unwrap().status(), 401);
    assert_eq!(attempt("192.0.2.1", &stack.auth()).await.unwrap().status(), 200);

    // Many addresses guessing one subdomain's key: after 5 failures the subdomain refuses unknown
    // credentials from every address that failed, and each new address gets a single try, while
    // its real key keeps working and a new key from an address that never failed is checked.
    for i in 0..6 {
        attempt(&format!("10.0.0.{i}"), &basic("acme", "lpscim_wrong")).await.unwrap();
    }
    assert_eq!(attempt("10.0.0.1", &basic("acme", "lpscim_wrong2")).await.unwrap().status(), 429);
    assert_eq!(attempt("10.0.1.1", &basic("acme", "lpscim_wrong")).await.unwrap().status(), 401);
    assert_eq!(attempt("10.0.1.1", &basic("acme", "lpscim_wrong")).await.unwrap().status(), 429);
    let fresh = stack.store().issue_key("acme", "fresh", None, &[]).await.unwrap();
    assert_eq!(attempt("10.0.0.2", &basic("acme", &fresh.key)).await.unwrap().status(), 429);
    assert_eq!(attempt("10.0.1.2", &basic("acme", &fresh.key)).await.unwrap().status(), 200);
    assert_eq!(attempt("10.0.1.3", &stack.auth()).await.unwrap().status(), 200);
    assert_eq!(attempt("10.0.1.4", &basic("globex", "lpscim_wrong")).await.unwrap().status(), 401);
    stack.stop().await;
}

async fn active(okta: &Okta, id: &str) -> Option<bool> {
    let r = okta.get(&format!("/Users/{id}")).await;
    (r.status == 200).then(|| r.body["active"].as_bool().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brake_holds_a_mass_deactivation_until_an_operator_releases_or_rejects_it() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let ids = create_users(&okta, "staff", "acme.com", 20).await;
    update(
        &stack,
        "acme",
        TenantUpdate {
            brake_share: Some(0.2),
            brake_min_users: Some(3),
            brake_window_secs: Some(3600),
            ..Default::default()
        },
    )
    .await;
    // 20% of 20 active users is 4: those go through.
    for id in &ids[..4] {
        assert_eq!(okta.patch(&format!("/Users/{id}"), deactivate()).await.status, 200);
    }
    // The fifth trips the brake: held, 503 with Retry-After, and an event.
    let held = okta.patch(&format!("/Users/{}", ids[4]), deactivate()).await;
    assert_scim_error(&held, 503);
    assert_eq!(retry_after(&held), 300);
    assert!(held.body["detail"].as_str().unwrap().contains("held"));
    assert_eq!(
        okta.put(&format!("/Users/{}", ids[5]), json!({"userName": "staff5@acme.com", "active": false})).await.status,
        503
    );
    assert_eq!(okta.send("DELETE", &format!("/Users/{}", ids[6]), None).await.status, 503);
    // Okta retries: still held, not held twice.
    assert_eq!(okta.patch(&format!("/Users/{}", ids[4]), deactivate()).await.status, 503);
    // Everything else still flows.
    let rename =
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "name.givenName", "value": "Renamed"}]});
    assert_eq!(okta.patch(&format!("/Users/{}", ids[7]), rename).await.status, 200);
    for id in &ids[4..7] {
        assert_eq!(active(&okta, id).await, Some(true));
    }
    let mut held: Vec<String> =
        stack.store().list_held("acme").await.unwrap().iter().map(|h| h.user_id.to_string()).collect();
    held.sort();
    let mut expected = ids[4..7].to_vec();
    expected.sort();
    assert_eq!(held, expected);
    let events = stack.settled_events().await;
    let trips: Vec<_> = events.iter().filter(|e| e.subject.ends_with(".tenant.brake_tripped")).collect();
    assert_eq!(trips.len(), 1);
    // It says what it weighed: the window's 4 deactivations against the 16 users still active.
    let Some(Payload::BrakeTripped(trip)) = &trips[0].envelope.payload else { panic!("{:?}", trips[0]) };
    assert_eq!((trip.recent_deactivations, trip.active_users), (4, 16));

    // The operator checked with the customer: the deactivations are real. Release applies them.
    assert_eq!(stack.store().resolve_held("acme", true, &[]).await.unwrap(), 3);
    assert_eq!(active(&okta, &ids[4]).await, Some(false));
    assert_eq!(active(&okta, &ids[5]).await, Some(false));
    assert_eq!(active(&okta, &ids[6]).await, None, "the held delete was applied");
    assert!(stack.store().list_held("acme").await.unwrap().is_empty());
    // And deactivations flow for the rest of the window.
    assert_eq!(okta.patch(&format!("/Users/{}", ids[8]), deactivate()).await.status, 200);

    // Another tenant's misconfiguration is rejected instead: nothing is deactivated.
    let globex_key = stack.add_tenant("globex").await;
    let globex = stack.okta_at(stack.gateway_addr, &basic("globex", &globex_key));
    let gids = create_users(&globex, "g", "globex.com", 5).await;
    update(&stack, "globex", TenantUpdate { brake_share: Some(0.2), brake_min_users: Some(1), ..Default::default() })
        .await;
    assert_eq!(globex.patch(&format!("/Users/{}", gids[0]), deactivate()).await.status, 200);
    assert_eq!(globex.patch(&format!("/Users/{}", gids[1]), deactivate()).await.status, 503);
    assert_eq!(stack.store().resolve_held("globex", false, &[]).await.unwrap(), 1);
    assert_eq!(active(&globex, &gids[1]).await, Some(true));
    // acme's released window is acme's alone.
    assert_eq!(globex.patch(&format!("/Users/{}", gids[2]), deactivate()).await.status, 503);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_deletes_count_toward_the_brake_and_a_released_change_yields_to_a_later_write() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let ids = create_users(&okta, "hd", "acme.com", 10).await;
    update(&stack, "acme", TenantUpdate { brake_share: Some(0.2), brake_min_users: Some(1), ..Default::default() })
        .await;
    // Entra deletes instead of deactivating: 20% of 10 go, the third deletion is held.
    assert_eq!(okta.send("DELETE", &format!("/Users/{}", ids[0]), None).await.status, 204);
    assert_eq!(okta.send("DELETE", &format!("/Users/{}", ids[1]), None).await.status, 204);
    assert_eq!(okta.send("DELETE", &format!("/Users/{}", ids[2]), None).await.status, 503);
    assert_eq!(okta.patch(&format!("/Users/{}", ids[3]), deactivate()).await.status, 503);
    // The identity provider changes its mind about ids[3] (a write that is not a deactivation).
    let rename =
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "name.givenName", "value": "Kept"}]});
    assert_eq!(okta.patch(&format!("/Users/{}", ids[3]), rename).await.status, 200);
    // Released: the deletion applies; the deactivation was of an older version and does not.
    assert_eq!(stack.store().resolve_held("acme", true, &[]).await.unwrap(), 2);
    assert_eq!(active(&okta, &ids[2]).await, None);
    let kept = okta.get(&format!("/Users/{}", ids[3])).await;
    assert_eq!((kept.body["active"].as_bool(), kept.body["name"]["givenName"].as_str()), (Some(true), Some("Kept")));
    assert!(stack.store().list_held("acme").await.unwrap().is_empty());
    stack.stop().await;
}

async fn logged(okta: &Okta, query: &str, n: usize) -> Vec<Value> {
    poll(&format!("{n} logged requests for {query}"), || async {
        let r = okta.api("GET", &format!("/requests?{query}"), None).await;
        let list = r.body["requests"].as_array().cloned().unwrap_or_default();
        (list.len() >= n).then_some(list)
    })
    .await
}

/// The gateway writes the log in batches of any size, each as one statement: rows with no, one and
/// several event ids, bodies absent, empty or full of what an array literal would have to escape,
/// come back as sent, and a batch written twice (the gateway retries a failed write) lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_logged_requests_comes_back_as_sent_and_a_retried_batch_lands_once() {
    use user_directory::store::{LoggedRequest, RequestQuery};
    let stack = TestStack::start_with("1s", false).await;
    let tenant = stack.store().tenant_by_subdomain("acme").await.unwrap();
    let at = time::OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let record =
        |i: i64, event_ids: Vec<Uuid>, request_body: Option<&str>, response_body: Option<&str>| LoggedRequest {
            tenant_id: tenant.id,
            id: Uuid::new_v4(),
            at: at + time::Duration::milliseconds(i),
            method: ["GET", "POST", "PATCH"][i as usize % 3].to_owned(),
            path: format!("/scim/v2/Users/{i}"),
            status: 200 + i as i32,
            latency_ms: 0.125 * i as f64,
            user_agent: format!("Okta SCIM Client {i}"),
            event_ids,
            request_body: request_body.map(str::to_owned),
            response_body: response_body.map(str::to_owned),
        };
    let mut batch = vec![
        record(0, vec![], None, None),
        record(1, vec![Uuid::new_v4()], Some(r#"{"a": "b,c", "d": ["{x}", "\\\"q\\\""]}"#), Some("")),
        record(2, vec![Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()], Some("NULL"), Some("naïve\n\t\"é")),
    ];
    batch.extend((3..40).map(|i| record(i, vec![Uuid::new_v4(); (i % 4) as usize], Some("{}"), None)));
    stack.store().record_requests(&batch).await.unwrap();
    stack.store().record_requests(&batch).await.unwrap();
    stack.store().record_requests(&batch[..1]).await.unwrap();
    let query = RequestQuery { since: Some(at), limit: 1000, ..Default::default() };
    let mut stored = stack.store().list_requests(&tenant, &query).await.unwrap();
    stored.reverse();
    assert_eq!(stored, batch);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scim_request_is_logged_redacted_and_a_failed_one_can_be_redriven() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let created = okta.post("/Users", user("logged@acme.com")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let set_password =
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "password", "value": PASSWORD}]});
    assert_eq!(okta.patch(&format!("/Users/{id}"), set_password).await.status, 200);

    let list = logged(&okta, "contains=logged%40acme.com", 1).await;
    let entry = list.iter().find(|e| e["method"] == "POST").unwrap();
    assert_eq!(entry["path"], "/scim/v2/Users");
    assert_eq!(entry["status"], 201);
    assert_eq!(entry["userAgent"], "Okta SCIM Client 1.0.0");
    assert!(entry["latencyMs"].as_f64().unwrap() > 0.0);
    assert_eq!(entry["id"], created.headers["x-request-id"].to_str().unwrap());
    // Its event ids are the events the create caused.
    let events = stack.settled_events().await;
    let created_event = events.iter().find(|e| e.envelope.resource_id == id).unwrap();
    assert_eq!(entry["eventIds"], json!([created_event.envelope.event_id]));
    let full = okta.api("GET", &format!("/requests/{}", entry["id"].as_str().unwrap()), None).await;
    let body = full.body["requestBody"].as_str().unwrap();
    assert!(body.contains("logged@acme.com") && body.contains("[redacted]") && !body.contains(PASSWORD), "{body}");
    assert!(full.body["responseBody"].as_str().unwrap().contains(&id));

    // A request that failed (the tenant was paused) is re-driven once the cause is gone.
    update(&stack, "acme", TenantUpdate { paused: Some(true), ..Default::default() }).await;
    until_status(&okta, 503).await;
    let failed = okta.post("/Users", user("retried@acme.com")).await;
    assert_eq!(failed.status, 503);
    let failed_id = failed.headers["x-request-id"].to_str().unwrap().to_owned();
    update(&stack, "acme", TenantUpdate { paused: Some(false), ..Default::default() }).await;
    until_status(&okta, 200).await;
    logged(&okta, "status=failed&method=POST", 1).await;
    let redriven = okta.api("POST", &format!("/requests/{failed_id}/redrive"), None).await;
    assert_eq!(redriven.status, 201, "{:?}", redriven.body);
    assert_eq!(redriven.body["userName"], "retried@acme.com");
    assert_eq!(redriven.headers["x-redrive-of"], failed_id.as_str());
    let found = okta.get("/Users?filter=userName%20eq%20%22retried%40acme.com%22").await;
    assert_eq!(found.body["totalResults"], 1);
    // The re-drive is itself logged; a request that succeeded cannot be re-driven.
    let again = redriven.headers["x-request-id"].to_str().unwrap().to_owned();
    poll("the re-drive to be logged", || async {
        (okta.api("GET", &format!("/requests/{again}"), None).await.status == 200).then_some(())
    })
    .await;
    let refused = okta.api("POST", &format!("/requests/{again}/redrive"), None).await;
    assert_scim_error(&refused, 409);
    // Nor can one that failed its If-Match: its precondition is not kept, so it would overwrite.
    let stale = okta
        .http
        .patch(format!("{}/Users/{id}", okta.base))
        .header("Authorization", &okta.auth)
        .header("If-Match", "W/\"999\"")
        .header("Content-Type", "application/scim+json")
        .body(deactivate().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let stale_id = stale.headers()["x-request-id"].to_str().unwrap().to_owned();
    poll("the stale write to be logged", || async {
        (okta.api("GET", &format!("/requests/{stale_id}"), None).await.status == 200).then_some(())
    })
    .await;
    assert_scim_error(&okta.api("POST", &format!("/requests/{stale_id}/redrive"), None).await, 409);
    assert_eq!(active(&okta, &id).await, Some(true));
    assert_scim_error(&okta.api("GET", "/requests?status=teapot", None).await, 400);

    // Retention: entries older than the configured days are pruned.
    stack.store().prune_requests(0).await.unwrap();
    assert_eq!(okta.api("GET", "/requests", None).await.body["count"], 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_and_no_okta_password_is_stored_in_clear_anywhere() {
    let stack = TestStack::start().await;
    let okta = stack.okta();
    let id = create_user(&okta, "secretive@acme.com").await;
    let mut put = user("secretive@acme.com");
    put["name"]["givenName"] = json!("Changed");
    assert_eq!(okta.put(&format!("/Users/{id}"), put).await.status, 200);
    for op in [
        json!({"op": "replace", "path": "password", "value": PASSWORD}),
        json!({"op": "replace", "value": {"password": PASSWORD, "title": "Engineer"}}),
    ] {
        assert_eq!(
            okta.patch(&format!("/Users/{id}"), json!({"schemas": [PATCH], "Operations": [op]})).await.status,
            200
        );
    }
    let admin = okta.api("POST", "/users", Some(json!({"userName": "admin.made@acme.com", "givenName": "A", "familyName": "B", "email": "admin.made@acme.com"}))).await;
    assert_eq!(admin.status, 201);
    let second = stack.store().issue_key("acme", "second", None, &[]).await.unwrap();
    let globex_key = stack.add_tenant("globex").await;
    logged(&okta, "contains=secretive", 4).await;
    stack.settled_events().await;
    stack.notifications_idle().await;

    let secrets = [PASSWORD, stack.api_key.as_str(), second.key.as_str(), globex_key.as_str()];
    let mut scanned = String::new();
    for db in [&stack.directory_db, &stack.notification_db] {
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
                .fetch_all(db)
                .await
                .unwrap();
        for table in tables {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT t::text AS row FROM \"{table}\" t")))
                .fetch_all(db)
                .await
                .unwrap();
            for r in rows {
                scanned.push_str(&r.get::<String, _>("row"));
                scanned.push('\n');
            }
        }
    }
    let mut stream_text = String::new();
    for e in stack.events().await {
        stream_text.push_str(&format!("{:?}\n", e.envelope));
    }
    // The scan sees the data (users, logged requests, key prefixes)...
    assert!(scanned.contains("secretive@acme.com") && scanned.contains("[redacted]"));
    assert!(scanned.contains(&stack.api_key[..13]), "key prefixes are kept to recognise keys");
    assert!(stream_text.contains("secretive@acme.com"));
    // ...and none of the secrets.
    for secret in secrets {
        assert!(!scanned.contains(secret), "a secret is stored in clear");
        assert!(!stream_text.contains(secret), "a secret is on the stream");
    }
    stack.stop().await;
}

/// Far from the limit, concurrent deprovisions take the brake's lock shared (they do not wait
/// for each other's commits); near it, one at a time. Across that switch the count stays exact:
/// 150 concurrent deactivations against a limit of `max_connections + 20` let exactly that many
/// through and hold the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deactivations_are_counted_exactly_across_the_shared_and_exclusive_lock() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let slack: i64 = sqlx::query_scalar("SELECT current_setting('max_connections')::bigint")
        .fetch_one(&stack.directory_db)
        .await
        .unwrap();
    // The first 20 deprovisions are far from the limit even with twice the slack (shared lock),
    // the rest near it (exclusive), and 30 are held.
    let limit = 2 * slack + 20;
    let users = limit + 30;
    assert!(users <= 400, "the test needs max_connections <= 175 (it is {slack})");
    let ids: Vec<String> = futures::stream::iter(0..users)
        .map(|i| {
            let okta = okta.clone();
            async move { create_user(&okta, &format!("crowd{i}@acme.com")).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    // A tiny share: the minimum is the limit.
    update(
        &stack,
        "acme",
        TenantUpdate {
            brake_share: Some(0.01),
            brake_min_users: Some(i32::try_from(limit).unwrap()),
            ..Default::default()
        },
    )
    .await;
    let retried = Arc::new(AtomicUsize::new(0));
    let outcomes: Vec<u16> = futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let (okta, retried) = (okta.clone(), retried.clone());
            async move {
                // Okta retries a 503; one that is held stays held.
                loop {
                    let r = okta.patch(&format!("/Users/{id}"), deactivate()).await;
                    let held = r.status == 503 && r.body["detail"].as_str().is_some_and(|d| d.contains("held"));
                    if r.status != 503 || held {
                        return r.status;
                    }
                    retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let passed = outcomes.iter().filter(|s| **s == 200).count();
    let held = outcomes.iter().filter(|s| **s == 503).count();
    assert_eq!(passed as i64, limit, "exactly the limit passes: {outcomes:?}");
    assert_eq!(held as i64, users - limit);
    // Crossing from the shared to the exclusive lock asks no client to retry.
    assert_eq!(retried.load(Ordering::Relaxed), 0, "deprovisions answered 503 without being held");
    let inactive: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE NOT active").fetch_one(&stack.directory_db).await.unwrap();
    assert_eq!(inactive, limit);
    assert_eq!(stack.store().list_held("acme").await.unwrap().len() as i64, users - limit);
    // The tally the brake's quick check reads (migration 0013) counted every deprovision.
    let ledger: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deprovisions").fetch_one(&stack.directory_db).await.unwrap();
    assert_eq!((tally(&stack).await, ledger), (limit, limit));
}

/// The brake's quick check reads a tally of the ledger's rows, which counts a user deprovisioned
/// twice twice; near the limit the brake counts distinct users in the ledger, so a user
/// deactivated, restored and deactivated again within the window counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deprovisioned_twice_in_the_window_counts_once() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let ids = create_users(&okta, "again", "acme.com", 3).await;
    update(&stack, "acme", TenantUpdate { brake_share: Some(0.01), brake_min_users: Some(2), ..Default::default() })
        .await;
    let restore = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": true}}]});
    let path = |id: &String| format!("/Users/{id}");
    assert_eq!(okta.patch(&path(&ids[0]), deactivate()).await.status, 200);
    assert_eq!(okta.patch(&path(&ids[0]), restore).await.status, 200);
    assert_eq!(okta.patch(&path(&ids[0]), deactivate()).await.status, 200);
    assert_eq!(tally(&stack).await, 2, "two deprovisions of one user");
    // One user so far: a second passes (the limit is 2), a third is held.
    assert_eq!(okta.patch(&path(&ids[1]), deactivate()).await.status, 200);
    let held = okta.patch(&path(&ids[2]), deactivate()).await;
    assert_eq!(held.status, 503);
    assert!(held.body["detail"].as_str().unwrap().contains("held"));
    stack.stop().await;
}

/// Each tenant's active users, as counted and as the brake's tally holds them (migration 0014).
async fn active_users(stack: &TestStack) -> (Vec<(Uuid, i64)>, Vec<(Uuid, i64)>) {
    let counted = sqlx::query_as(
        "SELECT t.id, count(u.id) FILTER (WHERE u.active) FROM tenants t LEFT JOIN users u ON u.tenant_id = t.id
         GROUP BY t.id ORDER BY t.id",
    )
    .fetch_all(&stack.directory_db)
    .await
    .unwrap();
    let tallied = sqlx::query_as(
        "SELECT t.id, coalesce(sum(a.n), 0)::bigint FROM tenants t LEFT JOIN active_user_tally a ON a.tenant_id = t.id
         GROUP BY t.id ORDER BY t.id",
    )
    .fetch_all(&stack.directory_db)
    .await
    .unwrap();
    (counted, tallied)
}

/// The brake weighs deprovisions against the tenant's active users, which it reads from a tally
/// kept by triggers on `users` rather than counting them: every way a user becomes active or not
/// (created active or not, by Okta or the customer's admin, archived and restored by PATCH or PUT,
/// deleted, seeded in bulk) moves it, per tenant, and nothing else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_user_tally_follows_every_way_a_user_becomes_active_or_not() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let globex_key = stack.add_tenant("globex").await;
    let globex = stack.okta_at(stack.gateway_addr, &basic("globex", &globex_key));
    let ids = create_users(&okta, "tally", "acme.com", 6).await;
    create_users(&globex, "tally", "globex.com", 3).await;
    let mut asleep = user("asleep@acme.com");
    asleep["active"] = json!(false);
    let inactive = okta.post("/Users", asleep).await;
    assert_eq!(inactive.status, 201, "{:?}", inactive.body);
    let admin = stack
        .api_post(
            "users",
            json!({"userName": "admin-made@acme.com", "givenName": "A", "familyName": "B", "email": "admin-made@acme.com"}),
        )
        .await;
    assert_eq!(admin.status, 201, "{:?}", admin.body);
    let (counted, tallied) = active_users(&stack).await;
    assert_eq!(counted, tallied);
    assert_eq!(counted.iter().map(|(_, n)| n).sum::<i64>(), 6 + 3 + 1);

    let path = |id: &String| format!("/Users/{id}");
    let restore = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": true}}]});
    let rename =
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "name.givenName", "value": "Renamed"}]});
    assert_eq!(okta.patch(&path(&ids[0]), deactivate()).await.status, 200);
    assert_eq!(okta.patch(&path(&ids[0]), deactivate()).await.status, 200, "no change: not counted again");
    assert_eq!(okta.patch(&path(&ids[1]), deactivate()).await.status, 200);
    assert_eq!(okta.patch(&path(&ids[1]), restore.clone()).await.status, 200);
    let put = okta.put(&path(&ids[2]), json!({"userName": "tally2@acme.com", "active": false})).await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(okta.patch(&path(&ids[3]), rename).await.status, 200);
    assert_eq!(okta.send("DELETE", &path(&ids[4]), None).await.status, 204);
    assert_eq!(okta.send("DELETE", &path(&ids[0]), None).await.status, 204, "an archived user's deletion");
    let restored = okta.patch(&format!("/Users/{}", inactive.body["id"].as_str().unwrap()), restore).await;
    assert_eq!(restored.status, 200);
    let (counted, tallied) = active_users(&stack).await;
    assert_eq!(counted, tallied);
    // acme: 6 - ids[0], ids[2], ids[4] + the restored one + the admin's; globex untouched.
    assert_eq!(counted.iter().map(|(_, n)| n).sum::<i64>(), 5 + 3);

    // The seeding tool writes users set-wise, into an existing tenant and into new ones.
    stack.store().seed("bulk", 3, 50, Some(("globex", 120))).await.unwrap();
    let (counted, tallied) = active_users(&stack).await;
    assert_eq!(counted, tallied);
    assert_eq!(counted.iter().map(|(_, n)| n).sum::<i64>(), 5 + 3 + 120 + 3 * 50);
    stack.stop().await;
}

/// The brake's rule (`brake_allows`, migration 0014): up to `share` of the users active at the
/// window's start (active now plus deprovisioned since), and always up to the minimum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brake_trips_past_the_share_and_never_below_the_minimum() {
    let stack = TestStack::start_with("1s", false).await;
    for (share, min_users, recent, active, allows) in [
        // 100 active at the start, 20%: the 20th deprovision in the window passes, the 21st trips.
        (0.2, 10_i64, 19_i64, 81_i64, true),
        (0.2, 10, 20, 80, false),
        // A tiny tenant: the minimum lets 10 through whatever the share.
        (0.2, 10, 9, 1, true),
        (0.2, 10, 10, 0, false),
        // A share is rounded up: 1 of 3 at 0.34 rounds 1.02 up to 2.
        (0.34, 0, 1, 2, true),
        (0.34, 0, 2, 1, false),
    ] {
        let got: bool = sqlx::query_scalar("SELECT brake_allows($1, $2, $3, $4)")
            .bind(share)
            .bind(min_users)
            .bind(recent)
            .bind(active)
            .fetch_one(&stack.directory_db)
            .await
            .unwrap();
        assert_eq!(got, allows, "share {share} min {min_users} recent {recent} active {active}");
    }
    stack.stop().await;
}

/// Revoking a key reads its tenant on the connection it already holds: a revocation never waits
/// for a second connection while holding one (with every connection held by such waits, the pool
/// would time out and answer 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_holds_one_connection_at_a_time() {
    let stack = TestStack::start().await;
    let issued = stack.store().issue_key("acme", "spare", None, &[]).await.unwrap();
    // A store of its own (its tenant cache empty) on a pool of one connection.
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with((*stack.directory_db.connect_options()).clone())
        .await
        .unwrap();
    let store = user_directory::Store::new(one, "single");
    store.revoke_key(issued.id, None).await.expect("revoked on one connection");
    let revoked: bool = sqlx::query_scalar("SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = $1")
        .bind(issued.id)
        .fetch_one(&stack.directory_db)
        .await
        .unwrap();
    assert!(revoked);
    store.close().await;
    stack.stop().await;
}
