//! Fairness between tenants (docs/adr/0023-fairness-between-tenants.md), end to end through the
//! gateway against the real services: each limit on its own (the statement timeout, the cap on
//! requests in flight, a tenant's share of the directory's connections, memberships in list
//! responses, the PATCH operation limit, refused bodies kept out of the request log), then the
//! noisy neighbour: one tenant at its worst beside another running Okta's user flow.

use std::net::SocketAddr;

use e2e::{Okta, TestStack};
use scim_gateway::request_log::REFUSED_BODY;
use serde_json::{Value, json};
use uuid::Uuid;

const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Another user-directory on the stack's database, set up by `tune`, whose connections carry
/// `application_name` (to find them in `pg_stat_activity`), and a gateway in front of it, set up
/// by `tune_gateway`; returns the gateway's address once it is ready.
async fn tuned(
    stack: &mut TestStack,
    application_name: &str,
    tune: impl FnOnce(&mut user_directory::Config),
    tune_gateway: impl FnOnce(&mut scim_gateway::Config),
) -> SocketAddr {
    let mut config = e2e::directory_config(&stack.directory_database, &stack.nats_args, &stack.directory_token);
    let url = format!("{}?application_name={application_name}", e2e::database_url(&stack.directory_database));
    config.database = infra::DatabaseArgs::new(&url);
    tune(&mut config);
    let directory = stack.start_directory(config).await;
    let mut gateway = stack.gateway_config.clone();
    gateway.directory_url = format!("http://{directory}");
    tune_gateway(&mut gateway);
    stack.start_gateway(gateway).await
}

/// Backends of `application_name` waiting for a row lock.
async fn lock_waiters(stack: &TestStack, application_name: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock' ORDER BY pid",
    )
    .bind(application_name)
    .fetch_all(&stack.directory_db)
    .await
    .unwrap()
}

/// A transaction holding the row lock of these users, as a long write of theirs would.
async fn lock_users(stack: &TestStack, ids: &[&str]) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = stack.directory_db.begin().await.unwrap();
    let ids: Vec<Uuid> = ids.iter().map(|i| Uuid::parse_str(i).unwrap()).collect();
    let n =
        sqlx::query("SELECT 1 FROM users WHERE id = ANY($1) FOR UPDATE").bind(&ids).execute(&mut *tx).await.unwrap();
    assert_eq!(n.rows_affected(), ids.len() as u64);
    tx
}

async fn create_user(okta: &Okta, name: &str) -> String {
    let r = okta.post("/Users", e2e::okta_user(&format!("{name}@acme.com"))).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

fn integer_retry_after(r: &e2e::Reply) -> u64 {
    let v = r.headers.get("retry-after").unwrap_or_else(|| panic!("no Retry-After: {:?}", r.body));
    v.to_str().unwrap().parse().unwrap_or_else(|_| panic!("Retry-After is not an integer: {v:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_its_timeout_is_a_transient_refusal_and_its_connection_serves_the_next_request() {
    let mut stack = TestStack::start_with("1s", false).await;
    let app = "fairness-timeout";
    // One connection, so that the request after the timeout is served by the very connection
    // whose statement was cancelled (or by a new one, which the check below would see).
    let gateway = tuned(
        &mut stack,
        app,
        |c| {
            c.database.database_statement_timeout_ms = 300;
            c.database.database_max_connections = 1;
        },
        |_| {},
    )
    .await;
    let okta = stack.okta_at(gateway, &stack.auth());
    let id = create_user(&stack.okta(), "slow").await;
    let path = format!("/Users/{id}");
    let mut body = e2e::okta_user("slow@acme.com");
    body["name"]["familyName"] = json!("Changed");

    // The user's row is locked: the PUT's statement waits for it until the timeout cancels it.
    let lock = lock_users(&stack, &[&id]).await;
    let put = tokio::spawn({
        let (okta, path, body) = (okta.clone(), path.clone(), body.clone());
        async move { okta.put(&path, body).await }
    });
    let pid =
        e2e::poll("the PUT to wait on the lock", || async { lock_waiters(&stack, app).await.first().copied() }).await;
    let r = put.await.unwrap();
    assert_eq!(r.status, 429, "to Okta, a statement timeout is a 429 it retries: {:?}", r.body);
    assert!(integer_retry_after(&r) >= 1);
    assert_eq!(r.body["status"], "429");
    // Any other client: 503 with Retry-After.
    let other = reqwest::Client::new()
        .put(format!("http://{gateway}/scim/v2{path}"))
        .header("Authorization", stack.auth())
        .header("Content-Type", "application/scim+json")
        .header("User-Agent", "curl/8.5")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 503);
    assert!(other.headers().get("retry-after").unwrap().to_str().unwrap().parse::<u64>().is_ok());

    // Once the lock is gone, the same request succeeds, on the same connection.
    lock.rollback().await.unwrap();
    let r = okta.put(&path, body).await;
    assert_eq!((r.status, &r.body["name"]["familyName"]), (200, &json!("Changed")), "{:?}", r.body);
    let backends: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query NOT LIKE '%advisory_lock%'",
    )
    .bind(app)
    .fetch_all(&stack.directory_db)
    .await
    .unwrap();
    assert_eq!(backends, [pid], "the pool's one connection is the one whose statement was cancelled");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_cap_and_the_connection_share_hold_back_the_busy_tenant_only() {
    let mut stack = TestStack::start_with("1s", false).await;
    let app = "fairness-share";
    // Two connections, one per tenant at most; no statement timeout, so that requests wait on a
    // lock for as long as the test holds it. The busy tenant has its own cap of two requests in
    // flight (as support sets it: `tenant limits acme --in-flight 2`), below the gateway's 8.
    let gateway = tuned(
        &mut stack,
        app,
        |c| {
            c.database.database_statement_timeout_ms = 0;
            c.database.database_max_connections = 2;
            c.tenant_max_connections = Some(1);
        },
        |g| g.tenant_max_in_flight = 8,
    )
    .await;
    let own_cap = user_directory::store::TenantUpdate { max_in_flight: Some(2), ..Default::default() };
    stack.store().update_tenant("acme", &own_cap).await.unwrap();
    let busy = stack.okta_at(gateway, &stack.auth());
    let quiet_key = stack.add_tenant("quiet").await;
    let quiet = stack.okta_at(gateway, &e2e::basic("quiet", &quiet_key));
    let (a, b) = (create_user(&stack.okta(), "a").await, create_user(&stack.okta(), "b").await);
    let lock = lock_users(&stack, &[&a, &b]).await;

    // The busy tenant's first write holds its one connection, waiting on the lock.
    let write = |id: &String| {
        let (okta, path) = (busy.clone(), format!("/Users/{id}"));
        tokio::spawn(async move { okta.patch(&path, e2e::okta_deactivation()).await })
    };
    let first = write(&a);
    e2e::poll("the first write to wait on the lock", || async {
        (lock_waiters(&stack, app).await.len() == 1).then_some(())
    })
    .await;
    // Four more at once, for the one slot left: one is admitted (and waits in the directory for
    // the tenant's share, not for a connection); the gateway refuses the other three at once.
    let mut more: Vec<_> = (0..4).map(|_| write(&b)).collect();
    e2e::poll("three of the four to be answered", || async {
        (more.iter().filter(|t| t.is_finished()).count() >= 3).then_some(())
    })
    .await;
    let admitted = more.remove(more.iter().position(|t| !t.is_finished()).expect("one is still in flight"));
    for refused in more {
        let refused = refused.await.unwrap();
        assert_eq!(refused.status, 429, "{:?}", refused.body);
        assert_eq!(integer_retry_after(&refused), 1);
        assert!(refused.body["detail"].as_str().unwrap().contains("in progress at once"), "{:?}", refused.body);
    }

    // The other tenant is served meanwhile, on the connection the busy one may not take.
    let started = std::time::Instant::now();
    for _ in 0..5 {
        let r = quiet.get("/Users?filter=userName%20eq%20%22nobody%40quiet.example%22").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let created = quiet.post("/Users", e2e::okta_user(&format!("{}@quiet.example", Uuid::new_v4()))).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
    }
    assert_eq!(lock_waiters(&stack, app).await.len(), 1, "the busy tenant's second write never got a connection");
    println!("the quiet tenant's 10 requests took {:?} while the busy tenant was held", started.elapsed());

    lock.rollback().await.unwrap();
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{:?}", first.body);
    // The admitted one waited for the share: served once the first was done, or refused as
    // transient (429, Retry-After) had it waited more than 5 s.
    let second = admitted.await.unwrap();
    assert!(second.status == 200 || (second.status == 429 && integer_retry_after(&second) >= 1), "{second:?}");
    assert_eq!(busy.get(&format!("/Users/{a}")).await.status, 200, "the busy tenant is served again");
    stack.stop().await;
}

fn has_members(resource: &Value, attribute: &str) -> Option<usize> {
    resource.get(attribute).map(|m| m.as_array().unwrap().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_responses_never_carry_more_members_than_the_cap() {
    let mut stack = TestStack::start_with("1s", false).await;
    // A cap of 2 per resource, so 200 per page.
    let gateway = tuned(&mut stack, "fairness-list", |c| c.list_max_members = 2, |_| {}).await;
    let okta = stack.okta_at(gateway, &stack.auth());
    let tenant = stack.store().tenant_by_subdomain("acme").await.unwrap();
    let mut users = Vec::new();
    for i in 0..3 {
        users.push(create_user(&okta, &format!("m{i}")).await);
    }
    let members = |ids: &[String]| ids.iter().map(|u| scim::Member::new(u.clone())).collect::<Vec<_>>();
    let group = |name: String| scim::GroupDocument::from_request(json!({"displayName": name})).unwrap().0;
    // In creation (and so list) order: one group over the cap, 101 at it, one empty.
    let big = stack.store().create_group(&tenant, group("big".into()), members(&users)).await.unwrap().id.to_string();
    for i in 0..101 {
        stack.store().create_group(&tenant, group(format!("pair {i:03}")), members(&users[..2])).await.unwrap();
    }
    let empty = stack.store().create_group(&tenant, group("empty".into()), vec![]).await.unwrap().id.to_string();

    let list = okta.get("/Groups?startIndex=1&count=1000").await;
    assert_eq!(list.status, 200);
    let groups = list.body["Resources"].as_array().unwrap();
    assert_eq!((groups.len(), &list.body["itemsPerPage"]), (103, &json!(103)), "the page is never shortened");
    assert_eq!(groups[0]["id"], big.as_str());
    assert_eq!(has_members(&groups[0], "members"), None, "a group over the cap is listed without members");
    for g in &groups[1..101] {
        assert_eq!(has_members(g, "members"), Some(2), "{}", g["displayName"]);
    }
    assert_eq!(has_members(&groups[101], "members"), None, "past the page's 200 members: listed without them");
    assert_eq!((groups[102]["id"].as_str(), has_members(&groups[102], "members")), (Some(empty.as_str()), Some(0)));
    let total: usize = groups.iter().filter_map(|g| has_members(g, "members")).sum();
    assert_eq!(total, 200);

    // Read by id, the group comes whole; a listing without members carries none.
    assert_eq!(has_members(&okta.get(&format!("/Groups/{big}")).await.body, "members"), Some(3));
    let lean = okta.get("/Groups?excludedAttributes=members&count=1000").await.body;
    assert!(lean["Resources"].as_array().unwrap().iter().all(|g| g.get("members").is_none()));

    // Users: m0 and m1 are in 102 groups, m2 in one; a page of users carries m2's only.
    let list = okta.get("/Users?count=1000").await;
    let by_id = |id: &str| list.body["Resources"].as_array().unwrap().iter().find(|u| u["id"] == id).unwrap().clone();
    assert_eq!(has_members(&by_id(&users[0]), "groups"), None);
    assert_eq!(has_members(&by_id(&users[2]), "groups"), Some(1));
    assert_eq!(has_members(&okta.get(&format!("/Users/{}", users[0])).await.body, "groups"), Some(102));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_of_okta_s_maximum_is_applied_whole_and_one_more_operation_is_a_400_naming_the_limit() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let tenant = stack.store().tenant_by_subdomain("acme").await.unwrap();
    stack.store().seed("patch", 0, 0, Some(("acme", 700))).await.unwrap();
    let ids: Vec<String> = sqlx::query_scalar::<_, Uuid>("SELECT id FROM users WHERE tenant_id = $1 ORDER BY id")
        .bind(tenant.id)
        .fetch_all(&stack.directory_db)
        .await
        .unwrap()
        .iter()
        .map(Uuid::to_string)
        .collect();
    assert_eq!(ids.len(), 700);
    let first: Vec<scim::Member> = ids[..600].iter().map(|u| scim::Member::new(u.clone())).collect();
    let doc = scim::GroupDocument::from_request(json!({"displayName": "Many"})).unwrap().0;
    let group = stack.store().create_group(&tenant, doc, first).await.unwrap();
    let path = format!("/Groups/{}", group.id);

    // 1,000 operations: 500 members out, 400 removals of strangers, 100 members in.
    let mut ops: Vec<Value> =
        ids[..500].iter().map(|m| json!({"op": "remove", "path": format!("members[value eq \"{m}\"]")})).collect();
    ops.extend((0..400).map(|_| json!({"op": "remove", "path": format!("members[value eq \"{}\"]", Uuid::now_v7())})));
    ops.extend(ids[600..].iter().map(|m| json!({"op": "add", "path": "members", "value": [{"value": m}]})));
    assert_eq!(ops.len(), scim::patch::MAX_OPERATIONS);

    let mut over = ops.clone();
    over.push(json!({"op": "replace", "path": "displayName", "value": "Renamed"}));
    let r = okta.patch(&path, json!({"schemas": [PATCH_SCHEMA], "Operations": over})).await;
    assert_eq!((r.status, &r.body["scimType"]), (400, &json!("tooMany")), "{:?}", r.body);
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains("at most 1000 operations") && detail.contains("1001"), "{detail}");
    assert_eq!(okta.get(&path).await.body["meta"]["version"], "W/\"1\"", "nothing was applied");

    let r = okta.patch(&path, json!({"schemas": [PATCH_SCHEMA], "Operations": ops})).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let got = okta.get(&path).await.body;
    let members: std::collections::BTreeSet<&str> =
        got["members"].as_array().unwrap().iter().map(|m| m["value"].as_str().unwrap()).collect();
    let expected: std::collections::BTreeSet<&str> = ids[500..].iter().map(String::as_str).collect();
    assert_eq!(members, expected);
    assert_eq!(got["meta"]["version"], "W/\"2\"", "one request, one version");
    let events = stack.wait_for_events(3).await;
    let changes: Vec<(usize, usize)> = events
        .iter()
        .filter_map(|e| match e.envelope.payload.as_ref()? {
            proto::events::v1::envelope::Payload::GroupMembersAdded(a) => Some((a.user_ids.len(), 0)),
            proto::events::v1::envelope::Payload::GroupMembersRemoved(r) => Some((0, r.user_ids.len())),
            _ => None,
        })
        .collect();
    assert_eq!(changes, [(100, 0), (0, 500)], "one event each way, naming exactly who changed");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_with_429_is_logged_without_its_body() {
    let stack = TestStack::start_with("1s", false).await;
    let key = stack.add_tenant("metered").await;
    let update = user_directory::store::TenantUpdate {
        rate_limit_per_second: Some(1),
        rate_limit_burst: Some(1),
        ..Default::default()
    };
    stack.store().update_tenant("metered", &update).await.unwrap();
    let okta = stack.okta_at(stack.gateway_addr, &e2e::basic("metered", &key));
    let marker = format!("marker{}", Uuid::new_v4().simple());
    // Creates until the limit refuses one (the second, unless the machine took a second between).
    let mut statuses = Vec::new();
    while !statuses.contains(&429) {
        assert!(statuses.len() < 20, "the rate limit never refused: {statuses:?}");
        let i = statuses.len();
        statuses.push(okta.post("/Users", e2e::okta_user(&format!("{marker}{i}@metered.example"))).await.status);
    }
    assert_eq!(statuses[0], 201);
    let refused = statuses.iter().filter(|s| **s == 429).count() as i64;
    let sent = statuses.len();
    let rows: Vec<(i32, Option<String>, Option<String>)> = e2e::poll("every request in the log", || async {
        let rows: Vec<(i32, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT l.status, l.request_body, l.response_body FROM request_log l JOIN tenants t ON t.id = l.tenant_id
             WHERE t.subdomain = 'metered' ORDER BY l.at",
        )
        .fetch_all(&stack.directory_db)
        .await
        .unwrap();
        (rows.len() == sent).then_some(rows)
    })
    .await;
    for (status, request, response) in &rows {
        if *status == 429 {
            assert_eq!(request.as_deref(), Some(REFUSED_BODY), "a 429's request body is not kept");
            assert!(response.as_deref().unwrap_or("").contains("Too many requests"), "{response:?}");
        } else {
            assert!(request.as_deref().unwrap().contains(&marker), "other requests keep their body");
        }
    }
    assert_eq!(rows.iter().filter(|r| r.0 == 429).count() as i64, refused);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_tenant_at_its_worst_does_not_fail_a_single_request_of_another() {
    let mut stack = TestStack::start_with("1s", false).await;
    // The deployment's default limits (the stack's gateway has them out of the way).
    let mut config = stack.gateway_config.clone();
    config.tenant_max_in_flight = scim_gateway::config::DEFAULT_TENANT_MAX_IN_FLIGHT;
    let gateway = stack.start_gateway(config).await;
    let noisy_key = stack.add_tenant("noisy").await;
    let noisy = stack.okta_at(gateway, &e2e::basic("noisy", &noisy_key));
    let quiet = stack.okta_at(gateway, &stack.auth());
    // The quiet tenant deactivates every user it creates: not a mass deprovision to hold.
    let brake_off = user_directory::store::TenantUpdate { brake_min_users: Some(100_000_000), ..Default::default() };
    stack.store().update_tenant("acme", &brake_off).await.unwrap();
    let noise = e2e::noisy::Noise { users: 20_000, group_members: 1_100, workers: 16 };
    let (group, members) = e2e::noisy::prepare(stack.store(), &stack.directory_db, "noisy", noise).await;
    // 25 users of Okta's flow (125 requests) beside the noise: enough for every kind of request
    // to meet it many times, at half the machine time of 40 (CI's wall time).
    const QUIET_USERS: usize = 25;
    let (alone, beside, noisy_statuses) = e2e::noisy::run(&quiet, &noisy, &group, &members, noise, QUIET_USERS).await;
    println!("quiet tenant, Okta's user flow alone:            {}", alone.summary());
    println!("quiet tenant, the same beside the noisy tenant:  {}", beside.summary());
    println!("noisy tenant's answers: {noisy_statuses:?}");
    assert!(alone.all_succeeded(), "{:?}", alone.failures);
    assert!(beside.all_succeeded(), "every request of the quiet tenant succeeds: {:?}", beside.failures);
    assert_eq!(beside.latencies.len(), QUIET_USERS * 5);
    assert!(noisy_statuses.contains_key(e2e::noisy::CAPPED), "the noisy tenant met its cap: {noisy_statuses:?}");
    assert!(!noisy_statuses.contains_key("500"), "never a 500: {noisy_statuses:?}");
    stack.stop().await;
}
