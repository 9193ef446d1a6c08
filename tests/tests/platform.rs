//! The learning platform's own side of the promise (docs/adr/0024-roles-and-reporting.md), end to
//! end through the gateway against the real services: roles set by the tenant's admin, which no
//! SCIM request changes, and the learners report, which leaves archived users out.

use std::collections::BTreeSet;

use e2e::processes::ProcessStack;
use e2e::{Okta, TestStack};
use proto::events::v1::envelope::Payload;
use serde_json::{Value, json};
use sqlx::Connection as _;

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A user as Okta sends one, with a role of Okta's own and the enterprise attributes the report
/// shows (Okta's Location is costCenter, its Business Unit division).
fn okta_user(user_name: &str, given: &str, cost_center: &str, division: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "userName": user_name,
        "name": {"givenName": given, "familyName": "Family"},
        "emails": [{"primary": true, "value": user_name, "type": "work"}],
        "active": true,
        "roles": [{"value": "admin", "primary": true}],
        ENTERPRISE: {"costCenter": cost_center, "division": division},
    })
}

async fn create(okta: &Okta, body: Value) -> String {
    let r = okta.post("/Users", body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

fn active_patch(active: bool) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"active": active}}]})
}

async fn set_role(okta: &Okta, id: &str, role: &str) -> e2e::Reply {
    okta.api("PUT", &format!("/users/{id}/role"), Some(json!({"role": role}))).await
}

/// The role the report gives a user (archived ones included).
async fn role_of(okta: &Okta, id: &str) -> String {
    let r = okta.api("GET", "/reports/learners?include=archived&limit=1000", None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let row = r.body["learners"].as_array().unwrap().iter().find(|l| l["id"] == id).expect("the user is reported");
    row["role"].as_str().unwrap().to_owned()
}

/// The role each of the user's events carries, in stream order, with the event's name.
fn roles_in_events(events: &[e2e::StreamEvent], id: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.envelope.resource_id == id)
        .filter_map(|e| {
            let (name, user) = match e.envelope.payload.as_ref()? {
                Payload::UserCreated(p) => ("created", p.user.as_ref()),
                Payload::UserUpdated(p) => ("updated", p.user.as_ref()),
                Payload::UserDeactivated(p) => ("deactivated", p.user.as_ref()),
                Payload::UserReactivated(p) => ("reactivated", p.user.as_ref()),
                Payload::UserRoleChanged(p) => ("role_changed", p.user.as_ref()),
                _ => return None,
            };
            Some((name.to_owned(), user?.role.clone()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_the_admin_gives_survives_every_write_okta_sends() {
    let stack = TestStack::start().await;
    let okta = stack.okta();

    // Okta's own `roles` is accepted and ignored: the user is a learner, and nothing echoes it.
    let id = create(&okta, okta_user("ada@acme.com", "Ada", "Paris", "Research")).await;
    let got = okta.get(&format!("/Users/{id}")).await;
    assert!(got.body.get("roles").is_none(), "roles is never returned: {:?}", got.body);
    assert_eq!(role_of(&okta, &id).await, "learner");

    // The admin makes her a manager; the same role again is no change.
    let r = set_role(&okta, &id, "manager").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["role"], "manager");
    assert_eq!(r.body["id"], id.as_str());
    let again = set_role(&okta, &id, "manager").await;
    assert_eq!(again.status, 200, "{:?}", again.body);

    // Okta's PUT (with a role of its own), PATCH of roles and a name, deactivation, reactivation.
    let mut put = okta_user("ada@acme.com", "Ada", "Lyon", "Research");
    put["roles"] = json!([{"value": "learner", "primary": true}]);
    let r = okta.put(&format!("/Users/{id}"), put).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body.get("roles").is_none(), "{:?}", r.body);
    let patch = json!({"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "replace", "path": "roles", "value": [{"value": "learner"}]},
        {"op": "add", "path": "roles[primary eq true].value", "value": "admin"},
        {"op": "replace", "value": {"roles": [{"value": "learner"}], "name.givenName": "Augusta"}},
    ]});
    let r = okta.patch(&format!("/Users/{id}"), patch).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["name"]["givenName"], "Augusta", "the rest of the PATCH applied");
    assert!(r.body.get("roles").is_none(), "{:?}", r.body);
    for active in [false, true] {
        let r = okta.patch(&format!("/Users/{id}"), active_patch(active)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["active"], active);
        assert_eq!(role_of(&okta, &id).await, "manager", "after active={active}");
    }

    // The stream: one role change, naming the key that made it; every later snapshot says manager.
    let events = stack.settled_events().await;
    let roles = roles_in_events(&events, &id);
    let expected: Vec<(String, String)> = [
        ("created", "learner"),
        ("role_changed", "manager"),
        ("updated", "manager"),
        ("updated", "manager"),
        ("deactivated", "manager"),
        ("reactivated", "manager"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(roles, expected);
    let changed = events
        .iter()
        .find_map(|e| match &e.envelope.payload {
            Some(Payload::UserRoleChanged(p)) => Some((e, p.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!((changed.1.old_role.as_str(), changed.1.new_role.as_str()), ("learner", "manager"));
    assert!(changed.0.subject.ends_with(".user.role_changed"), "{}", changed.0.subject);
    let key_id = changed.1.changed_by.strip_prefix("api-key:").expect("changed by an API key");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE id::text = $1")
        .bind(key_id)
        .fetch_one(&stack.directory_db)
        .await
        .unwrap();
    assert_eq!(keys, 1, "changed_by names the tenant's key: {}", changed.1.changed_by);

    // The request log keeps the role change with its event.
    let event_id = changed.0.envelope.event_id.clone();
    let logged = e2e::poll("the role change in the request log", || async {
        let r = okta.api("GET", "/requests?method=PUT&contains=role", None).await;
        r.body["requests"]
            .as_array()?
            .iter()
            .find(|q| q["eventIds"].as_array().is_some_and(|ids| ids.iter().any(|i| i == event_id.as_str())))
            .cloned()
    })
    .await;
    assert_eq!(logged["path"], format!("/api/v1/users/{id}/role"));
    assert_eq!(logged["status"], 200);
    let full = okta.api("GET", &format!("/requests/{}", logged["id"].as_str().unwrap()), None).await;
    assert!(full.body["requestBody"].as_str().unwrap().contains("manager"), "{:?}", full.body);
    // Okta's role PATCH is logged as sent (roles is no secret), though it changed nothing.
    let patch_log = okta.api("GET", "/requests?method=PATCH&contains=Augusta", None).await;
    // Newest first: the oldest is the one that sent the name (later answers carry it too).
    let oldest = patch_log.body["requests"].as_array().and_then(|r| r.last()).expect("the PATCH is logged");
    let patch_id = oldest["id"].as_str().unwrap().to_owned();
    let patch_full = okta.api("GET", &format!("/requests/{patch_id}"), None).await;
    assert!(patch_full.body["requestBody"].as_str().unwrap().contains("roles"), "{:?}", patch_full.body);
    // A role change is not a SCIM request: even a failed one cannot be re-driven, only made again.
    assert_eq!(set_role(&okta, &id, "owner").await.status, 400);
    let failed = e2e::poll("the failed role change in the request log", || async {
        let r = okta.api("GET", "/requests?method=PUT&status=400&contains=role", None).await;
        r.body["requests"].as_array()?.first().cloned()
    })
    .await;
    let redrive = okta.api("POST", &format!("/requests/{}/redrive", failed["id"].as_str().unwrap()), None).await;
    assert_eq!(redrive.status, 409, "{:?}", redrive.body);
    assert!(redrive.body["detail"].as_str().unwrap().contains("Only SCIM requests"), "{:?}", redrive.body);

    // The notification service sends nothing for it, and its projection keeps up: the user's
    // first assignment (made after the change, at the user's new version) is decided at once.
    let a = stack.api_post("assignments", json!({"userId": id, "contentId": "c-1", "title": "Safety"})).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let decisions = e2e::poll("the assignment decided", || async {
        let d = stack.decisions().await;
        d.iter().any(|d| d.event_type == "content.assigned").then_some(d)
    })
    .await;
    let role_decision = decisions.iter().find(|d| d.event_type == "user.role_changed").expect("decided");
    assert_eq!(
        (role_decision.outcome.as_str(), role_decision.reason.as_str()),
        ("no_email", "role_change_sends_nothing")
    );
    let assigned = decisions.iter().find(|d| d.event_type == "content.assigned").unwrap();
    assert_eq!(assigned.reason, "first_assignment");

    // What is refused: an unknown role (named), another tenant's user (as missing), a SCIM key.
    let r = set_role(&okta, &id, "owner").await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("learner, manager, admin"), "{:?}", r.body);
    let other_key = stack.add_tenant("globex").await;
    let globex = stack.okta_at(stack.gateway_addr, &e2e::basic("globex", &other_key));
    let theirs = create(&globex, okta_user("bob@globex.com", "Bob", "Oslo", "Sales")).await;
    let r = set_role(&okta, &theirs, "admin").await;
    let nobody = uuid::Uuid::now_v7().to_string();
    let missing = set_role(&okta, &nobody, "admin").await;
    assert_eq!((r.status, missing.status), (404, 404));
    assert_eq!(r.body.to_string().replace(&theirs, "ID"), missing.body.to_string().replace(&nobody, "ID"));
    assert_eq!(role_of(&globex, &theirs).await, "learner");
    let scim_only = stack.store().issue_key("acme", "okta", None, &["scim".to_owned()]).await.unwrap().key;
    let okta_key = stack.okta_at(stack.gateway_addr, &e2e::basic("acme", &scim_only));
    assert_eq!(set_role(&okta_key, &id, "admin").await.status, 403);
    assert_eq!(role_of(&okta, &id).await, "manager");

    // Support, from the command line, records who they are.
    let out = std::process::Command::new(e2e::processes::binary("user-directory"))
        .args(["user", "role", "acme", &id, "admin", "--by", "alice"])
        .env("DATABASE_URL", e2e::database_url(&stack.directory_database))
        .env("NATS_SUBJECT_PREFIX", &stack.nats_args.nats_subject_prefix)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("manager -> admin"), "{said}");
    assert_eq!(role_of(&okta, &id).await, "admin");
    let by_support = e2e::poll("the CLI's role change on the stream", || async {
        stack.events().await.into_iter().find_map(|e| match e.envelope.payload {
            Some(Payload::UserRoleChanged(p)) if p.new_role == "admin" => Some(p),
            _ => None,
        })
    })
    .await;
    assert_eq!((by_support.old_role.as_str(), by_support.changed_by.as_str()), ("manager", "support:alice"));

    // /Schemas says what happens to roles.
    let schemas = okta.get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:User").await;
    let roles = schemas.body["attributes"].as_array().unwrap().iter().find(|a| a["name"] == "roles").unwrap();
    assert_eq!((roles["mutability"].as_str(), roles["returned"].as_str()), (Some("writeOnly"), Some("never")));
    assert!(roles["description"].as_str().unwrap().contains("ignored"), "{roles:?}");
    stack.stop().await;
}

/// Every learner of the JSON report, page by page (`limit` at a time), in report order.
async fn report_pages(okta: &Okta, query: &str, limit: u32) -> Vec<Value> {
    let (mut rows, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let mut path = format!("/reports/learners?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = okta.api("GET", &path, None).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        let page = r.body["learners"].as_array().unwrap().clone();
        assert!(page.len() <= limit as usize);
        assert_eq!(r.body["count"], page.len());
        rows.extend(page);
        pages += 1;
        assert!(pages < 100, "the cursor moves on");
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return rows,
        }
    }
}

fn ids(rows: &[Value]) -> BTreeSet<String> {
    rows.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

async fn csv_report(okta: &Okta, query: &str) -> (reqwest::header::HeaderMap, Vec<Vec<String>>) {
    let resp = okta
        .http
        .get(format!("{}/reports/learners{query}", okta.base.replace("/scim/v2", "/api/v1")))
        .header("Authorization", &okta.auth)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(&bytes[..]);
    let rows = reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect();
    (headers, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_learners_report_has_exactly_the_active_users_unless_archived_ones_are_asked_for() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let stays = create(&okta, okta_user("stays@acme.com", "Stays", "Paris", "Research")).await;
    let archived = create(&okta, okta_user("archived@acme.com", "Archived", "Paris", "Sales")).await;
    let restored = create(&okta, okta_user("restored@acme.com", "Restored", "Lyon", "Sales")).await;
    let put_off = create(&okta, okta_user("put-off@acme.com", "PutOff", "Lyon", "Research")).await;
    // A name with a comma and quotes, a division a spreadsheet would run as a formula.
    let tricky = create(&okta, okta_user("tricky@acme.com", "Ann, \"Jr.\"", "Oslo", "=HYPERLINK(\"x\")")).await;
    for (id, active) in [(&archived, false), (&restored, false), (&restored, true)] {
        let r = okta.patch(&format!("/Users/{id}"), active_patch(active)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let mut off = okta_user("put-off@acme.com", "PutOff", "Lyon", "Research");
    off["active"] = json!(false);
    assert_eq!(okta.put(&format!("/Users/{put_off}"), off).await.status, 200);
    // One the customer's admin created, and a manager.
    let admin_made = stack
        .api_post("users", json!({"userName": "admin-made@acme.com", "givenName": "Made", "familyName": "Here", "email": "admin-made@acme.com"}))
        .await;
    assert_eq!(admin_made.status, 201, "{:?}", admin_made.body);
    let admin_made = admin_made.body["id"].as_str().unwrap().to_owned();
    assert_eq!(set_role(&okta, &stays, "manager").await.status, 200);
    // Another tenant's users are never in this one's report.
    let other_key = stack.add_tenant("globex").await;
    let globex = stack.okta_at(stack.gateway_addr, &e2e::basic("globex", &other_key));
    let theirs = create(&globex, okta_user("bob@globex.com", "Bob", "Paris", "Research")).await;

    let active: BTreeSet<String> = [&stays, &restored, &tricky, &admin_made].into_iter().cloned().collect();
    let everyone: BTreeSet<String> = active.iter().cloned().chain([archived.clone(), put_off.clone()]).collect();

    // JSON, page by page: exactly the active users, each once, in id order.
    for limit in [1, 2, 1000] {
        let rows = report_pages(&okta, "", limit).await;
        assert_eq!(rows.len(), active.len(), "limit {limit}: each once");
        assert_eq!(ids(&rows), active, "limit {limit}");
        let order: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "by id");
        let with_archived = report_pages(&okta, "&include=archived", limit).await;
        assert_eq!(with_archived.len(), everyone.len());
        assert_eq!(ids(&with_archived), everyone, "limit {limit}");
    }
    let rows = report_pages(&okta, "", 1000).await;
    let row = rows.iter().find(|r| r["id"] == stays.as_str()).unwrap();
    assert_eq!(row["userName"], "stays@acme.com");
    assert_eq!((row["givenName"].as_str(), row["familyName"].as_str()), (Some("Stays"), Some("Family")));
    assert_eq!((row["email"].as_str(), row["role"].as_str()), (Some("stays@acme.com"), Some("manager")));
    assert_eq!((row["costCenter"].as_str(), row["division"].as_str()), (Some("Paris"), Some("Research")));
    assert_eq!(row["active"], true);
    let scim = okta.get(&format!("/Users/{stays}")).await;
    assert_eq!(row["created"], scim.body["meta"]["created"]);
    assert_eq!(row["lastModified"], scim.body["meta"]["lastModified"], "the role change is the last change");
    let archived_rows = report_pages(&okta, "&include=archived", 1000).await;
    for id in [&archived, &put_off] {
        assert_eq!(archived_rows.iter().find(|r| r["id"] == id.as_str()).unwrap()["active"], false);
    }
    assert_eq!(ids(&report_pages(&globex, "", 1000).await), BTreeSet::from([theirs.clone()]));

    // Counts by division and by cost center.
    let by = okta.api("GET", "/reports/learners?groupBy=division", None).await;
    assert_eq!(by.status, 200, "{:?}", by.body);
    assert_eq!(by.body["total"], 4);
    let counts: Vec<(String, u64)> = by.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["division"].as_str().unwrap().to_owned(), g["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        counts,
        [("".to_owned(), 1), ("=HYPERLINK(\"x\")".to_owned(), 1), ("Research".to_owned(), 1), ("Sales".to_owned(), 1)]
    );
    let by = okta.api("GET", "/reports/learners?groupBy=costCenter&include=archived", None).await;
    assert_eq!(by.body["total"], 6);
    assert_eq!(by.body["groups"][0], json!({"costCenter": "Lyon", "count": 2}));

    // CSV: the same users, quoted right, formulas disarmed.
    let (headers, csv) = csv_report(&okta, "").await;
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/csv"), "{headers:?}");
    assert!(headers["content-disposition"].to_str().unwrap().contains("learners.csv"));
    assert_eq!(
        csv[0],
        [
            "id",
            "userName",
            "givenName",
            "familyName",
            "email",
            "role",
            "costCenter",
            "division",
            "active",
            "created",
            "lastModified"
        ]
    );
    let csv_ids: BTreeSet<String> = csv[1..].iter().map(|r| r[0].clone()).collect();
    assert_eq!((csv.len() - 1, csv_ids), (active.len(), active.clone()));
    let tricky_row = csv.iter().find(|r| r[0] == tricky).unwrap();
    assert_eq!((tricky_row[2].as_str(), tricky_row[7].as_str()), ("Ann, \"Jr.\"", "'=HYPERLINK(\"x\")"));
    let (_, all) = csv_report(&okta, "?include=archived").await;
    assert_eq!(all.len() - 1, everyone.len());
    let (_, grouped) = csv_report(&okta, "?groupBy=division").await;
    assert_eq!(grouped[0], ["division", "count"]);
    assert_eq!(grouped.len(), 5);

    // What is refused, and said why.
    for bad in ["include=everyone", "groupBy=team", "limit=0", "limit=1001", "cursor=not-a-cursor"] {
        let r = okta.api("GET", &format!("/reports/learners?{bad}"), None).await;
        assert_eq!(r.status, 400, "{bad}: {:?}", r.body);
        assert!(!r.body["detail"].as_str().unwrap().is_empty());
    }
    let scim_only = stack.store().issue_key("acme", "okta", None, &["scim".to_owned()]).await.unwrap().key;
    let okta_key = stack.okta_at(stack.gateway_addr, &e2e::basic("acme", &scim_only));
    assert_eq!(okta_key.api("GET", "/reports/learners", None).await.status, 403);
    // The platform's new paths, without credentials or with a wrong key: 401, and nothing done.
    let http = reqwest::Client::new();
    let base = format!("http://{}/api/v1", stack.gateway_addr);
    for (method, path, body) in [
        ("GET", "/reports/learners".to_owned(), None),
        ("PUT", format!("/users/{stays}/role"), Some(json!({"role": "admin"}))),
        ("POST", format!("/users/{stays}/erase"), Some(json!({"confirm": stays}))),
    ] {
        for auth in [None, Some(e2e::basic("acme", "lpscim_wrong"))] {
            let mut req = http.request(method.parse().unwrap(), format!("{base}{path}"));
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            if let Some(b) = &body {
                req = req.header("Content-Type", "application/json").body(b.to_string());
            }
            assert_eq!(req.send().await.unwrap().status(), 401, "{method} {path} with {auth:?}");
        }
    }
    assert_eq!(role_of(&okta, &stays).await, "manager");
    assert_eq!(okta.get(&format!("/Users/{stays}")).await.status, 200, "not erased");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_of_a_100000_user_tenant_streams_with_the_gateways_memory_flat() {
    const USERS: u64 = 100_000;
    // What the gateway's peak memory may grow by while it streams the whole report.
    const BOUND_MB: f64 = 8.0;
    let stack = ProcessStack::start(&[]).await;
    let store = stack.store();
    store.seed("big", 0, 0, Some(("acme", USERS))).await.unwrap();
    store.close().await;
    // As a production server's autovacuum would after such a load (this machine's is off, and
    // the directory said so when it started).
    let mut db = sqlx::PgConnection::connect(&stack.directory_db_url).await.unwrap();
    let autovacuum: String = sqlx::query_scalar("SHOW autovacuum").fetch_one(&mut db).await.unwrap();
    assert_eq!(
        stack.directory.log_text().contains("autovacuum = off"),
        autovacuum == "off",
        "the directory's start-up warning"
    );
    sqlx::query("ANALYZE users").execute(&mut db).await.unwrap();

    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/reports/learners", stack.gateway_addr);
    let auth = stack.auth();
    // Warm up with one JSON page as large as a CSV page: the buffers a page needs exist.
    let page = http.get(format!("{url}?limit=1000")).header("Authorization", &auth).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.json::<Value>().await.unwrap()["count"], 1000);
    let (before, _) = stack.gateway.memory_mb();

    let mut resp = http.get(&url).header("Authorization", &auth).header("Accept", "text/csv").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (mut bytes, mut lines, mut peak_seen) = (0usize, 0usize, before);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        peak_seen = peak_seen.max(stack.gateway.memory_mb().0);
    }
    let (_, peak) = stack.gateway.memory_mb();
    let mb = bytes as f64 / 1_048_576.0;
    println!(
        "CSV of {USERS} users: {mb:.1} MB; gateway RSS {before:.1} MB before, peak {peak:.1} MB ({peak_seen:.1} sampled)"
    );
    assert_eq!(lines as u64, USERS + 1, "the header and every user, each once");
    assert!(mb > 2.0 * BOUND_MB, "the report ({mb:.1} MB) is larger than the bound could hide");
    assert!(peak - before < BOUND_MB, "the gateway grew by {:.1} MB (bound {BOUND_MB} MB)", peak - before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_does_not_make_a_held_deprovisioning_stale() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create(&okta, okta_user(&format!("held{i}@acme.com"), "Held", "Paris", "Sales")).await);
    }
    let brake =
        user_directory::store::TenantUpdate { brake_share: Some(0.2), brake_min_users: Some(1), ..Default::default() };
    stack.store().update_tenant("acme", &brake).await.unwrap();
    // 20% of 5: one goes through, the next is held.
    assert_eq!(okta.patch(&format!("/Users/{}", ids[0]), active_patch(false)).await.status, 200);
    let held = okta.patch(&format!("/Users/{}", ids[1]), active_patch(false)).await;
    assert_eq!(held.status, 429, "{:?}", held.body);
    // The admin demotes the person being offboarded, then support releases the hold.
    assert_eq!(set_role(&okta, &ids[1], "manager").await.status, 200);
    assert_eq!(stack.store().resolve_held("acme", true, &[]).await.unwrap(), 1);
    let user = okta.get(&format!("/Users/{}", ids[1])).await;
    assert_eq!(user.body["active"], false, "the held deactivation applied: {:?}", user.body);
    assert_eq!(role_of(&okta, &ids[1]).await, "manager");
    stack.stop().await;
}
