//! The tenant console over HTTP: who may sign in (scopes, operators), the session's protections
//! (CSRF, fixation, sign-out, idle, revocation), isolation between tenants, and the pages'
//! data following real SCIM traffic. The browser tests (tests/tests/console_browser.rs) drive
//! the same pages in Chromium.

use std::time::Duration;

use e2e::console::ConsoleClient;
use e2e::{OPERATOR_TOKEN, TestStack, basic, poll};
use serde_json::{Value, json};
use user_directory::store::{SessionLimits, SessionOwner, TenantUpdate};

use e2e::{OKTA_PASSWORD as PASSWORD, okta_deactivation as deactivate, okta_user as user};

async fn key(stack: &TestStack, subdomain: &str, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    stack.store().issue_key(subdomain, "test", None, &scopes).await.unwrap().key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_open_only_what_their_scopes_say() {
    let stack = TestStack::start_with("1s", false).await;
    let scim = key(&stack, "acme", &["scim"]).await;
    let admin = key(&stack, "acme", &["admin"]).await;
    let scim_client = stack.okta_at(stack.gateway_addr, &basic("acme", &scim));
    let admin_client = stack.okta_at(stack.gateway_addr, &basic("acme", &admin));

    // The identity provider's key: SCIM yes; the tenant API and the console no (403, saying why).
    assert_eq!(scim_client.get("/Users?startIndex=1&count=2").await.status, 200);
    let r = scim_client.api("GET", "/requests", None).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    assert!(r.body["detail"].as_str().unwrap().contains("admin scope"));
    let console = ConsoleClient::new(stack.gateway_addr);
    let page = console.sign_in("acme", &scim).await;
    assert_eq!(page.status, 403);
    assert!(page.html.contains("admin scope"), "{}", page.html);
    assert_eq!(console.cookie("console"), None, "no session for a scim key");
    assert_eq!(console.get("/console/health").await.location(), Some("/console/signin"));

    // The admin's key: the tenant API and the console yes; SCIM no.
    let r = admin_client.get("/Users").await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("scim scope"));
    assert_eq!(admin_client.api("GET", "/requests", None).await.status, 200);
    let page = console.sign_in("acme", &admin).await;
    assert_eq!((page.status, page.location()), (303, Some("/console/health")));
    let health = console.get("/console/health").await;
    assert_eq!(health.status, 200, "{}", health.html);
    assert!(health.html.contains("acme"));

    // Keys made before scopes existed (and the first key of a tenant) open both.
    assert_eq!(stack.okta().get("/Users").await.status, 200);
    assert_eq!(stack.okta().api("GET", "/requests", None).await.status, 200);

    // Wrong keys and wrong tenants are the same 401 page.
    let other = ConsoleClient::new(stack.gateway_addr);
    assert_eq!(other.sign_in("acme", "lpscim_wrong").await.status, 401);
    assert_eq!(other.sign_in("globex", &admin).await.status, 401);
    assert_eq!(other.cookie("console"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_needs_the_sessions_csrf_token() {
    let stack = TestStack::start_with("1s", false).await;
    let admin = key(&stack, "acme", &["admin"]).await;
    let console = ConsoleClient::new(stack.gateway_addr);
    let keys_before = stack.store().list_keys("acme").await.unwrap().len();

    // The sign-in form carries a token of its own, bound to a cookie: a form posted from
    // elsewhere (no cookie, or another token) signs nobody in.
    let r = console.post("/console/signin", &[("subdomain", "acme"), ("key", &admin)]).await;
    assert_eq!(r.status, 403);
    let form = console.get("/console/signin").await;
    let r = console.post("/console/signin", &[("_signin", "forged"), ("subdomain", "acme"), ("key", &admin)]).await;
    assert_eq!(r.status, 403);
    assert!(form.field("_signin").is_some());
    assert_eq!(console.cookie("console"), None);

    assert_eq!(console.sign_in("acme", &admin).await.status, 303);
    let page = console.get("/console/keys").await;
    let issue = [("name", "from-a-forged-form"), ("scope", "scim")];
    // No token, a wrong token, another session's token: refused before anything happens.
    assert_eq!(console.post("/console/keys", &issue).await.status, 403);
    let mut forged = vec![("_csrf", "0000")];
    forged.extend_from_slice(&issue);
    assert_eq!(console.post("/console/keys", &forged).await.status, 403);
    let other = ConsoleClient::new(stack.gateway_addr);
    other.sign_in("acme", &admin).await;
    let other_page = other.get("/console/keys").await;
    let theirs = other_page.field("_csrf").unwrap();
    let mut foreign = vec![("_csrf", theirs.as_str())];
    foreign.extend_from_slice(&issue);
    assert_eq!(console.post("/console/keys", &foreign).await.status, 403);
    assert_eq!(console.post("/console/signout", &[]).await.status, 403, "sign-out is a form too");
    assert_eq!(stack.store().list_keys("acme").await.unwrap().len(), keys_before, "no key was issued");

    // With the token: the key is issued and shown once.
    let issued = console.submit(&page, "/console/keys", &issue).await;
    assert_eq!(issued.status, 200, "{}", issued.html);
    let new_key = issued.by_id("new-key").unwrap();
    assert!(new_key.starts_with("lpscim_"));
    let keys = stack.store().list_keys("acme").await.unwrap();
    assert_eq!(keys.len(), keys_before + 1);
    assert_eq!(keys[0].scopes, vec!["scim"]);
    assert!(!console.get("/console/keys").await.html.contains(&new_key), "shown once");
    // Every console page forbids caching and framing.
    assert_eq!(issued.headers["cache-control"], "no-store");
    assert!(issued.headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_made_at_sign_in_and_end_at_sign_out_idle_and_revocation() {
    let stack = TestStack::start_with("1s", false).await;
    let admin = key(&stack, "acme", &["admin"]).await;

    // Fixation: a session id planted in the browser before sign-in is never the one signed in.
    let console = ConsoleClient::new(stack.gateway_addr);
    console.set_cookie("console", "planted-by-someone-else");
    assert_eq!(console.sign_in("acme", &admin).await.status, 303);
    let first = console.cookie("console").unwrap();
    assert_ne!(first, "planted-by-someone-else");
    let planted = ConsoleClient::new(stack.gateway_addr);
    planted.set_cookie("console", "planted-by-someone-else");
    assert_eq!(planted.get("/console/health").await.location(), Some("/console/signin"));
    // Signing in again makes a new id and ends the one the browser had.
    let copy = ConsoleClient::new(stack.gateway_addr);
    copy.set_cookie("console", &first);
    assert_eq!(copy.get("/console/health").await.status, 200);
    assert_eq!(console.sign_in("acme", &admin).await.status, 303);
    let second = console.cookie("console").unwrap();
    assert_ne!(second, first);
    assert_eq!(copy.get("/console/health").await.location(), Some("/console/signin"));
    // The cookie: HttpOnly, SameSite=Strict, the whole site (Secure is on outside local runs).
    let page = console.sign_in("acme", &admin).await;
    let set = page.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
    let session = set.iter().find(|c| c.starts_with("console=")).unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attribute), "{session}");
    }

    // Sign-out ends it on the server, not only in the browser.
    let health = console.get("/console/health").await;
    let id = console.cookie("console").unwrap();
    assert_eq!(console.submit(&health, "/console/signout", &[]).await.location(), Some("/console/signin"));
    let replay = ConsoleClient::new(stack.gateway_addr);
    replay.set_cookie("console", &id);
    assert_eq!(replay.get("/console/health").await.location(), Some("/console/signin"));

    // Revoking the key a session was opened with ends the session.
    console.sign_in("acme", &admin).await;
    assert_eq!(console.get("/console/health").await.status, 200);
    let key_id = stack.store().list_keys("acme").await.unwrap().iter().find(|k| k.scopes == ["admin"]).unwrap().id;
    stack.store().revoke_key(key_id, None).await.unwrap();
    assert_eq!(console.get("/console/health").await.location(), Some("/console/signin"));

    // Idle: a session not seen for the idle time has ended (the gateway's is CONSOLE_IDLE_SECS).
    let admin = key(&stack, "acme", &["admin"]).await;
    let limits = |idle| SessionLimits { idle, max_lifetime: Duration::from_secs(3600), operator_generation: None };
    let (id, _) = stack
        .store()
        .create_session("acme", SessionOwner::Admin { api_key: &admin }, &limits(Duration::from_secs(1800)))
        .await
        .unwrap();
    assert!(stack.store().session(&id, &limits(Duration::from_secs(2))).await.is_ok());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(stack.store().session(&id, &limits(Duration::from_secs(2))).await.is_err(), "idle for longer than 2 s");
    assert!(stack.store().session(&id, &limits(Duration::from_secs(1800))).await.is_ok(), "seen 2 s ago");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_admin_cannot_reach_another_tenants_data() {
    let stack = TestStack::start_with("1s", false).await;
    let globex_key = stack.add_tenant("globex").await;
    let globex = stack.okta_at(stack.gateway_addr, &basic("globex", &globex_key));
    let r = globex.post("/Users", user("gil@globex.com")).await;
    assert_eq!(r.status, 201);
    let globex_request = r.headers["x-request-id"].to_str().unwrap().to_owned();
    let globex_keys = stack.store().list_keys("globex").await.unwrap();
    let acme_admin = key(&stack, "acme", &["admin"]).await;
    let console = ConsoleClient::new(stack.gateway_addr);
    console.sign_in("acme", &acme_admin).await;
    poll("globex's request to be logged", || async {
        stack.okta_at(stack.gateway_addr, &basic("globex", &globex_key)).api("GET", "/requests", None).await.body
            ["count"]
            .as_u64()
            .filter(|n| *n >= 1)
    })
    .await;

    // Another tenant's request, key and user: exactly as missing as an id that never existed.
    let never = uuid::Uuid::now_v7().to_string();
    let theirs = console.get(&format!("/console/requests/{globex_request}")).await;
    let nobody = console.get(&format!("/console/requests/{never}")).await;
    assert_eq!((theirs.status, nobody.status), (404, 404));
    assert_eq!(theirs.html.replace(&globex_request, "ID"), nobody.html.replace(&never, "ID"), "the same page");
    let page = console.get("/console/keys").await;
    let revoke = console.submit(&page, &format!("/console/keys/{}/revoke", globex_keys[0].id), &[]).await;
    assert_eq!(revoke.status, 404);
    assert_eq!(globex.get("/Users").await.status, 200, "globex's key still works");
    let redrive = console.submit(&page, &format!("/console/requests/{globex_request}/redrive"), &[]).await;
    assert_eq!(redrive.status, 404);
    // Nothing of globex shows on acme's pages.
    for path in ["/console/users?q=gil", "/console/requests?contains=gil", "/console/keys", "/console/health"] {
        let p = console.get(path).await;
        assert_eq!(p.status, 200, "{path}");
        assert!(!p.html.contains("gil@globex.com") && !p.html.contains("globex"), "{path}: {}", p.html);
    }
    // A session cookie is the tenant's: the subdomain signed in with decides, not the form.
    let other = ConsoleClient::new(stack.gateway_addr);
    assert_eq!(other.sign_in("globex", &acme_admin).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_any_tenant_read_only_and_every_step_is_on_the_tenants_record() {
    let stack = TestStack::start_with("1s", false).await;
    let console = ConsoleClient::new(stack.gateway_addr);
    assert_eq!(console.sign_in_operator("acme", "not-the-token").await.status, 401);
    assert_eq!(console.sign_in_operator("nosuchtenant", OPERATOR_TOKEN).await.status, 401);
    assert_eq!(console.sign_in_operator("acme", OPERATOR_TOKEN).await.status, 303);
    let health = console.get("/console/health").await;
    assert_eq!(health.status, 200);
    assert!(health.html.contains("operator"));
    let keys = console.get("/console/keys").await;
    assert!(!keys.html.contains("Issue a key"), "no issuing form for operators");
    let before = stack.store().list_keys("acme").await.unwrap();
    let refused = console.submit(&keys, "/console/keys", &[("name", "x"), ("scope", "scim")]).await;
    assert_eq!(refused.status, 403);
    let refused = console.submit(&keys, &format!("/console/keys/{}/revoke", before[0].id), &[]).await;
    assert_eq!(refused.status, 403);
    let after = stack.store().list_keys("acme").await.unwrap();
    assert_eq!(after.len(), before.len());
    assert!(after.iter().all(|k| k.revoked_at.is_none()));

    // The tenant's own log shows what the operator looked at and tried.
    let okta = stack.okta();
    let log = poll("the operator's steps to be logged", || async {
        let r = okta.api("GET", "/requests", None).await;
        let operator: Vec<Value> = r.body["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["userAgent"] == "console (operator)")
            .cloned()
            .collect();
        (operator.len() >= 5).then_some(operator)
    })
    .await;
    let seen: Vec<(String, u64)> =
        log.iter().map(|r| (r["path"].as_str().unwrap().to_owned(), r["status"].as_u64().unwrap())).collect();
    for expected in [("/console/signin", 303), ("/console/health", 200), ("/console/keys", 200), ("/console/keys", 403)]
    {
        assert!(seen.contains(&(expected.0.to_owned(), expected.1)), "{expected:?} in {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_follow_okta_traffic_and_release_what_the_brake_holds() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let admin = key(&stack, "acme", &["admin"]).await;
    let console = ConsoleClient::new(stack.gateway_addr);
    console.sign_in("acme", &admin).await;

    // Setup: what to type into Okta, and the connection test Okta runs first.
    let setup = console.get("/console/setup").await;
    assert_eq!(setup.by_id("username").as_deref(), Some("acme"));
    assert!(setup.by_id("base-url").unwrap().ends_with("/scim/v2"), "{:?}", setup.by_id("base-url"));
    let tested = console.submit(&setup, "/console/setup/test", &[]).await;
    assert!(tested.by_id("test-result").unwrap().starts_with("Connected: answered 200"), "{}", tested.html);

    // Okta creates and deactivates a user: the log shows both, with their events and no password.
    let r = okta.post("/Users", user("ann@acme.com")).await;
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(okta.patch(&format!("/Users/{id}"), deactivate()).await.status, 200);
    let conflict = okta.post("/Users", user("ann@acme.com")).await;
    assert_eq!(conflict.status, 409);
    let list = poll("the requests to be logged", || async {
        let p = console.get("/console/requests?contains=ann%40acme.com").await;
        // The header row and the three requests.
        (p.html.matches("<tr").count() > 3).then_some(p)
    })
    .await;
    assert!(list.html.contains("POST") && list.html.contains("409"));
    let created = r.headers["x-request-id"].to_str().unwrap();
    let detail = console.get(&format!("/console/requests/{created}")).await;
    assert_eq!(detail.by_id("status").as_deref(), Some("201"));
    assert!(!detail.html.contains(PASSWORD) && detail.html.contains("[redacted]"));
    let events = &detail.html[detail.html.find("id=\"events\"").unwrap()..];
    let events = &events[..events.find("</dd>").unwrap()];
    let created_event =
        stack.settled_events().await.iter().find(|e| e.envelope.resource_id == id).unwrap().envelope.event_id.clone();
    assert!(events.contains(&created_event), "the event it caused: {events}");
    let failed = console.get("/console/requests?status=409").await;
    assert!(failed.html.contains("409") && !failed.html.contains(">201<"));
    assert_eq!(console.get("/console/requests?status=abc").await.status, 400);

    // Health counts them; users shows the archived user.
    let health = console.get("/console/health").await;
    let n = |id: &str| health.by_id(id).unwrap().parse::<u64>().unwrap();
    assert!(n("requests-24h") >= 4, "{}", health.html);
    assert!(n("errors-24h") >= 1);
    assert!(n("events-24h") >= 2);
    assert_ne!(health.by_id("last-success").as_deref(), Some("none in the log"));
    let users = console.get("/console/users?q=ann").await;
    assert!(users.html.contains("ann@acme.com") && users.html.contains("archived"), "{}", users.html);

    // The brake trips on a mass deactivation; the admin releases one held change after confirming.
    let mut ids = Vec::new();
    for i in 0..10 {
        let r = okta.post("/Users", user(&format!("staff{i}@acme.com"))).await;
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let update = TenantUpdate { brake_share: Some(0.2), brake_min_users: Some(1), ..Default::default() };
    stack.store().update_tenant("acme", &update).await.unwrap();
    let mut held = Vec::new();
    for id in &ids {
        if okta.patch(&format!("/Users/{id}"), deactivate()).await.status == 429 {
            held.push(id.clone());
        }
    }
    assert!(held.len() >= 2, "the brake held some");
    let page = console.get("/console/held").await;
    assert!(page.html.contains("staff"), "{}", page.html);
    let listed = stack.store().list_held("acme").await.unwrap();
    for h in &listed {
        let name = h.user_name.as_deref().expect("a held user's userName");
        assert!(name.starts_with("staff") && page.html.contains(name), "{name} on {}", page.html);
    }
    let first = listed[0].id.to_string();
    let confirm = console.submit(&page, "/console/held", &[("action", "release"), ("ids", &first)]).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.html.contains("Yes, release"));
    assert_eq!(stack.store().list_held("acme").await.unwrap().len(), listed.len(), "nothing before confirming");
    let done = console
        .submit(&confirm, "/console/held", &[("action", "release"), ("confirmed", "yes"), ("ids", &first)])
        .await;
    assert!(done.html.contains("Released 1 held deprovision"), "{}", done.html);
    assert_eq!(stack.store().list_held("acme").await.unwrap().len(), listed.len() - 1);
    let released = listed[0].user_id.to_string();
    assert_eq!(okta.get(&format!("/Users/{released}")).await.body["active"], false);
    // Reject the rest: they stay active.
    let page = console.get("/console/held").await;
    let done = console.submit(&page, "/console/held", &[("action", "reject"), ("confirmed", "yes")]).await;
    assert!(done.html.contains("Rejected"), "{}", done.html);
    assert!(done.by_id("no-held").is_some());
    for h in &listed[1..] {
        assert_eq!(okta.get(&format!("/Users/{}", h.user_id)).await.body["active"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_page_shows_emails_sent_and_suppressed_with_their_reasons() {
    let stack = TestStack::start().await;
    let okta = stack.okta();
    let admin = key(&stack, "acme", &["admin"]).await;
    let console = ConsoleClient::new(stack.gateway_addr);
    console.sign_in("acme", &admin).await;

    // A provisioned user: no welcome email (suppressed). Their first assignment: one email.
    let r = okta.post("/Users", user("ann@acme.com")).await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    let a =
        okta.api("POST", "/assignments", Some(json!({"userId": id, "contentId": "c1", "title": "Safety 101"}))).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    poll("the email to be sent", || async { (!stack.smtp.received_by("ann@acme.com").is_empty()).then_some(()) }).await;
    let health = poll("the figures to show the email", || async {
        let p = console.get("/console/health").await;
        p.by_id("emails").filter(|t| t.starts_with("1 sent")).map(|_| p)
    })
    .await;
    let suppressed = &health.html[health.html.find("id=\"suppressed\"").expect("suppressed reasons")..];
    let suppressed = &suppressed[..suppressed.find("</ul>").unwrap()];
    let reasons: Vec<(String, String)> =
        sqlx::query_as("SELECT reason, count(*)::text FROM decisions WHERE outcome = 'suppressed' GROUP BY reason")
            .fetch_all(&stack.notification_db)
            .await
            .unwrap();
    assert!(!reasons.is_empty());
    for (reason, count) in reasons {
        assert!(suppressed.contains(&format!("{}: {count}", reason.replace('_', " "))), "{reason} in {suppressed}");
    }
    // Another tenant's figures are its own.
    let globex = stack.add_tenant("globex").await;
    let other = ConsoleClient::new(stack.gateway_addr);
    other.sign_in("globex", &globex).await;
    assert!(other.get("/console/health").await.by_id("emails").unwrap().starts_with("0 sent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_sets_a_role_on_the_users_page_and_downloads_the_learners_report() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let ada = okta.post("/Users", e2e::okta_user("ada@acme.com")).await.body["id"].as_str().unwrap().to_owned();
    let gone = okta.post("/Users", e2e::okta_user("gone@acme.com")).await.body["id"].as_str().unwrap().to_owned();
    assert_eq!(okta.patch(&format!("/Users/{gone}"), e2e::okta_deactivation()).await.status, 200);
    let admin_key = key(&stack, "acme", &["admin"]).await;
    let console = ConsoleClient::new(stack.gateway_addr);
    assert_eq!(console.sign_in("acme", &admin_key).await.status, 303);

    // The Users page: a role control for each user, and the report's links.
    let page = console.get("/console/users").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains(&format!("action=\"/console/users/{ada}/role\"")), "{}", page.html);
    assert!(page.html.contains("href=\"/console/reports/learners.csv\""));
    assert!(page.html.contains("href=\"/console/reports/learners.csv?include=archived\""));
    let set = console.submit(&page, &format!("/console/users/{ada}/role"), &[("role", "manager")]).await;
    assert_eq!((set.status, set.location()), (303, Some("/console/users")));
    let after = console.get("/console/users").await;
    assert!(after.html.contains("<option value=\"manager\" selected>"), "the page shows it");
    let event = poll("the console's role change on the stream", || async {
        stack.events().await.into_iter().find_map(|e| match e.envelope.payload {
            Some(proto::events::v1::envelope::Payload::UserRoleChanged(p)) => Some(p),
            _ => None,
        })
    })
    .await;
    assert_eq!(event.new_role, "manager");
    let key_id: String =
        sqlx::query_scalar("SELECT id::text FROM api_keys WHERE name = 'test' ORDER BY created_at DESC LIMIT 1")
            .fetch_one(&stack.directory_db)
            .await
            .unwrap();
    assert_eq!(event.changed_by, format!("console:{key_id}"));
    // A role that is none is refused, and says why; without the session's token, nothing happens.
    let bad = console.submit(&after, &format!("/console/users/{ada}/role"), &[("role", "owner")]).await;
    assert_eq!(bad.status, 400);
    assert!(bad.html.contains("learner, manager, admin"), "{}", bad.html);
    let forged = console.post(&format!("/console/users/{ada}/role"), &[("_csrf", "0000"), ("role", "admin")]).await;
    assert_eq!(forged.status, 403);

    // The CSV: the active users only, or with the archived.
    let csv = console.get("/console/reports/learners.csv").await;
    assert_eq!(csv.status, 200);
    assert!(csv.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(csv.html.starts_with("id,userName,"), "{}", csv.html);
    assert!(csv.html.contains(&format!("{ada},ada@acme.com,")) && csv.html.contains(",manager,"));
    assert!(!csv.html.contains(&gone));
    let all = console.get("/console/reports/learners.csv?include=archived").await;
    assert!(all.html.contains(&gone));

    // Roles are the customer's: an operator sees them, and may not change one.
    let operator = ConsoleClient::new(stack.gateway_addr);
    assert_eq!(operator.sign_in_operator("acme", OPERATOR_TOKEN).await.status, 303);
    let seen = operator.get("/console/users").await;
    assert!(!seen.html.contains(&format!("action=\"/console/users/{ada}/role\"")));
    let refused = operator.submit(&seen, &format!("/console/users/{ada}/role"), &[("role", "admin")]).await;
    assert_eq!(refused.status, 403);
    let report = okta.api("GET", "/reports/learners", None).await;
    let row = report.body["learners"].as_array().unwrap().iter().find(|l| l["id"] == ada.as_str()).cloned();
    assert_eq!(row.unwrap()["role"], "manager");
}
