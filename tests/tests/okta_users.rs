//! Okta's user flows end to end (../shared/okta/OKTA.md flows A, C, E, F, G, H): gateway ->
//! user-directory -> PostgreSQL -> outbox -> JetStream -> notification, asserting the HTTP
//! bodies, the events on the stream in order, and the notification decisions.

use e2e::{Okta, Reply, TestStack, basic};
use proto::events::v1::Source;
use proto::events::v1::envelope::Payload;
use serde_json::{Value, json};
use sqlx::Row;

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Okta's create body (flow C2), with the enterprise extension mapped from Location and Business
/// Unit, and the random password Okta always sends.
fn okta_create_body(user_name: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "userName": user_name,
        "name": {"givenName": "Jane", "familyName": "Doe", "middleName": ""},
        "emails": [{"primary": true, "value": "jane.doe@acme.com", "type": "work"}],
        "displayName": "Jane Doe",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "password": "1mz050nq-never-stored",
        "active": true,
        ENTERPRISE: {"costCenter": "London", "division": "Retail Banking"}
    })
}

fn assert_scim_json(reply: &Reply) {
    let ct = reply.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(ct.starts_with("application/scim+json"), "content type {ct}");
}

fn assert_error(reply: &Reply, status: u16, scim_type: Option<&str>) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_scim_json(reply);
    assert_eq!(reply.body["schemas"], json!([ERROR_SCHEMA]));
    assert_eq!(reply.body["status"], json!(status.to_string()), "status is a string");
    assert!(reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()), "a detail is given");
    if let Some(t) = scim_type {
        assert_eq!(reply.body["scimType"], t, "{:?}", reply.body);
    }
}

fn assert_list(reply: &Reply, total: u64) {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_scim_json(reply);
    assert_eq!(reply.body["schemas"], json!([LIST_SCHEMA]));
    assert_eq!(reply.body["totalResults"], json!(total));
    assert!(reply.body["startIndex"].is_u64());
    let resources = reply.body["Resources"].as_array().expect("Resources is a list");
    assert_eq!(reply.body["itemsPerPage"], json!(resources.len()));
}

async fn lookup(okta: &Okta, user_name_query: &str) -> Reply {
    okta.get(&format!("/Users?filter=userName{user_name_query}&startIndex=1&count=100")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_provisions_updates_archives_and_restores_a_user() {
    let stack = TestStack::start().await;
    let okta = stack.okta();

    // A: test connection, on an empty tenant.
    let reply = okta.get("/Users?startIndex=1&count=2").await;
    assert_list(&reply, 0);
    assert_eq!(reply.body["startIndex"], 1);

    // C1: the existence check, spaces as %20.
    assert_list(&lookup(&okta, "%20eq%20%22Jane.Doe%40acme.com%22").await, 0);

    // C2: create with Okta's real body.
    let created = okta.post("/Users", okta_create_body("Jane.Doe@acme.com")).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_scim_json(&created);
    let user = &created.body;
    let id = user["id"].as_str().expect("an id").to_owned();
    assert_eq!(user["userName"], "Jane.Doe@acme.com", "userName exactly as sent");
    assert_eq!(user["schemas"], json!([USER_SCHEMA, ENTERPRISE]));
    assert_eq!(user["active"], true);
    assert_eq!(user["externalId"], "00ujl29u0le5T6Aj10h7");
    assert_eq!(user["name"]["givenName"], "Jane");
    assert_eq!(user["emails"][0]["value"], "jane.doe@acme.com");
    assert_eq!(user["locale"], "en-US");
    assert_eq!(user[ENTERPRISE], json!({"costCenter": "London", "division": "Retail Banking"}));
    assert!(user.get("password").is_none(), "the password is never echoed");
    assert!(user.get("groups").is_none_or(|g| g == &json!([])));
    assert_eq!(user["meta"]["resourceType"], "User");
    assert_eq!(user["meta"]["version"], "W/\"1\"");
    assert_eq!(user["meta"]["created"], user["meta"]["lastModified"]);
    let location = format!("{}/Users/{id}", stack.base_url);
    assert_eq!(user["meta"]["location"], location);
    assert_eq!(created.headers["location"], location.as_str());
    assert_eq!(created.headers["etag"], "W/\"1\"");

    // C1 again, spaces as +, another case: the same user.
    let found = lookup(&okta, "+eq+%22jane.doe%40ACME.COM%22").await;
    assert_list(&found, 1);
    assert_eq!(found.body["Resources"][0], *user);

    // E: profile update, GET then PUT with Okta's body (read-only id and oddly formatted meta).
    let got = okta.get(&format!("/Users/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, *user);
    let mut put_body = okta_create_body("Jane.Doe@acme.com");
    put_body["id"] = json!(id);
    put_body["meta"] = json!({"resourceType": "User", "created": "04-12-2018 00:00:00", "version": "v1.0"});
    put_body["name"]["givenName"] = json!("Janet");
    put_body["password"] = json!("TkdFNVdIVkxhM2c9");
    let updated = okta.put(&format!("/Users/{id}"), put_body.clone()).await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    assert_eq!(updated.body["id"], id);
    assert_eq!(updated.body["name"]["givenName"], "Janet");
    assert_eq!(updated.body["meta"]["version"], "W/\"2\"");
    assert_eq!(updated.body["meta"]["created"], user["meta"]["created"]);
    assert_ne!(updated.body["meta"]["lastModified"], user["meta"]["lastModified"]);
    // The same PUT again changes nothing: no new version, no event.
    let again = okta.put(&format!("/Users/{id}"), put_body).await;
    assert_eq!(again.body["meta"]["version"], "W/\"2\"");

    // F: deactivate (OIN template: path-less PATCH). The user is archived, not removed.
    let deactivate = json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"active": false}}]});
    let archived = okta.patch(&format!("/Users/{id}"), deactivate).await;
    assert_eq!(archived.status, 200, "{:?}", archived.body);
    assert_eq!(archived.body["active"], false);
    let got = okta.get(&format!("/Users/{id}")).await;
    assert_eq!((got.status, &got.body["active"]), (200, &json!(false)));
    let found = lookup(&okta, "%20eq%20%22jane.doe%40acme.com%22").await;
    assert_list(&found, 1);
    assert_eq!(found.body["Resources"][0]["active"], false, "archived users stay visible to the filter");

    // G: reactivate: the same id comes back.
    let reactivate = json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"active": true}}]});
    let restored = okta.patch(&format!("/Users/{id}"), reactivate).await;
    assert_eq!((restored.status, &restored.body["id"], &restored.body["active"]), (200, &json!(id), &json!(true)));

    // A password under the core schema's URN is still a password: never stored or echoed.
    let mut urn_body = okta.get(&format!("/Users/{id}")).await.body;
    urn_body["urn:ietf:params:scim:schemas:core:2.0:User:password"] = json!("urn-spelled-secret");
    urn_body["urn:ietf:params:scim:schemas:core:2.0:User"] = json!({"password": "urn-spelled-secret"});
    let same = okta.put(&format!("/Users/{id}"), urn_body).await;
    assert_eq!(same.status, 200, "{:?}", same.body);
    assert!(!same.body.to_string().contains("urn-spelled-secret"));

    // H: password sync is accepted and ignored.
    let password =
        json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"password": "Lstar99&"}}]});
    let synced = okta.patch(&format!("/Users/{id}"), password).await;
    assert_eq!(synced.status, 200);
    assert_eq!(synced.body["meta"]["version"], restored.body["meta"]["version"], "nothing changed");

    // The path form, and Entra's string boolean; then the AIW flavour: PUT with active true.
    let by_path =
        json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    assert_eq!(okta.patch(&format!("/Users/{id}"), by_path).await.body["active"], false);
    let mut aiw = okta.get(&format!("/Users/{id}")).await.body;
    aiw["active"] = json!(true);
    let restored = okta.put(&format!("/Users/{id}"), aiw).await;
    assert_eq!((restored.status, &restored.body["active"]), (200, &json!(true)));
    assert_eq!(restored.body["meta"]["version"], "W/\"6\"");

    // Events: one per committed change, in commit order, on the documented subjects.
    let events = stack.settled_events().await;
    assert_eq!(events.len(), 6, "one event per committed change, no more");
    let kinds: Vec<&str> = events.iter().map(|e| e.subject.rsplit('.').next().unwrap()).collect();
    assert_eq!(kinds, ["created", "updated", "deactivated", "reactivated", "deactivated", "reactivated"]);
    for (i, e) in events.iter().enumerate() {
        let prefix = &stack.nats_args.nats_subject_prefix;
        assert!(e.subject.starts_with(&format!("{prefix}.v1.acme.user.")), "{}", e.subject);
        assert_eq!(e.msg_id.as_deref(), Some(e.envelope.event_id.as_str()), "Nats-Msg-Id is the event id");
        assert_eq!(e.envelope.resource_id, id);
        assert_eq!(e.envelope.resource_version, i as i64 + 1, "versions in order");
        assert_eq!(e.envelope.tenant, "acme");
        assert_eq!(e.envelope.source, Source::Scim as i32, "provisioned by SCIM");
        uuid::Uuid::parse_str(&e.envelope.event_id).unwrap();
    }
    match &events[0].envelope.payload {
        Some(Payload::UserCreated(c)) => {
            let u = c.user.as_ref().unwrap();
            assert_eq!(
                (u.user_name.as_str(), u.email.as_str(), u.role.as_str()),
                ("Jane.Doe@acme.com", "jane.doe@acme.com", "learner")
            );
            assert_eq!((u.cost_center.as_str(), u.division.as_str()), ("London", "Retail Banking"));
        }
        other => panic!("first event is {other:?}"),
    }
    match &events[2].envelope.payload {
        Some(Payload::UserDeactivated(d)) => assert!(!d.user.as_ref().unwrap().active),
        other => panic!("third event is {other:?}"),
    }

    // Notification: one decision per event; the welcome email was suppressed, with the reason.
    let decisions = stack.wait_for_decisions(6).await;
    assert_eq!(decisions.len(), 6);
    let created = decisions.iter().find(|d| d.event_type == "user.created").unwrap();
    assert_eq!(created.event_id.to_string(), events[0].envelope.event_id);
    assert_eq!(
        (created.outcome.as_str(), created.reason.as_str()),
        ("suppressed", "welcome_suppressed_scim_provisioned")
    );
    assert!(decisions.iter().filter(|d| d.event_type != "user.created").all(|d| d.outcome == "no_email"));
    let recipient =
        sqlx::query("SELECT active, version, email FROM recipients").fetch_one(&stack.notification_db).await.unwrap();
    assert!(recipient.get::<bool, _>("active"));
    assert_eq!(recipient.get::<i64, _>("version"), 6);

    // The platform side: a learner, never a password.
    let row = sqlx::query("SELECT role, source, document::text AS doc FROM users")
        .fetch_one(&stack.directory_db)
        .await
        .unwrap();
    assert_eq!((row.get::<String, _>("role").as_str(), row.get::<String, _>("source").as_str()), ("learner", "scim"));
    let outbox: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT payload FROM outbox").fetch_all(&stack.directory_db).await.unwrap();
    for secret in ["1mz050nq-never-stored", "TkdFNVdIVkxhM2c9", "Lstar99&", "urn-spelled-secret"] {
        assert!(!row.get::<String, _>("doc").contains(secret), "a password was stored");
        assert!(outbox.iter().all(|p| !String::from_utf8_lossy(p).contains(secret)), "a password was published");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_is_a_scim_error_a_customer_can_read() {
    let stack = TestStack::start().await;
    let okta = stack.okta();
    let anon = |auth: &str| Okta { auth: auth.to_owned(), ..okta.clone() };

    // 401 for a missing header, a wrong key, an unknown subdomain, Okta's "non-token", a bad Bearer.
    for auth in [
        String::new(),
        basic("acme", "lpscim_wrong"),
        basic("nosuchtenant", &stack.api_key),
        "non-token".to_owned(),
        "Bearer lpscim_wrong".to_owned(),
    ] {
        let reply = anon(&auth).get("/Users?filter=userName%20eq%20%22X%22").await;
        assert_error(&reply, 401, None);
        assert!(reply.headers.get("www-authenticate").is_some());
    }
    // A Bearer key works on its own, and on its tenant's host, but not on another tenant's host.
    assert_eq!(anon(&format!("Bearer {}", stack.api_key)).get("/Users").await.status, 200);
    let on_host = |host: &str| {
        okta.http
            .get(format!("{}/Users", stack.base_url))
            .header("Host", host)
            .header("Authorization", format!("Bearer {}", stack.api_key))
            .send()
    };
    assert_eq!(on_host("acme.scim.test").await.unwrap().status(), 200);
    assert_eq!(on_host("globex.scim.test").await.unwrap().status(), 401);

    // 400 invalidValue for each missing required attribute, with a readable detail.
    for (path, word) in [("userName", "userName"), ("name", "first name"), ("emails", "email")] {
        let mut body = okta_create_body("someone@acme.com");
        body.as_object_mut().unwrap().remove(path);
        let reply = okta.post("/Users", body).await;
        assert_error(&reply, 400, Some("invalidValue"));
        assert!(reply.body["detail"].as_str().unwrap().contains(word), "{}", reply.body["detail"]);
    }
    let mut body = okta_create_body("someone@acme.com");
    body["name"] = json!({"givenName": "Only"});
    assert_error(&okta.post("/Users", body).await, 400, Some("invalidValue"));

    // 409 uniqueness for the same userName in another case.
    assert_eq!(okta.post("/Users", okta_create_body("Dup@Acme.com")).await.status, 201);
    assert_error(&okta.post("/Users", okta_create_body("dup@acme.COM")).await, 409, Some("uniqueness"));

    // 404 for unknown ids of any shape.
    for id in ["00919288221112222", "010101001010101011001010101011", "9a4c2b1e-5f1b-4c43-9a8a-3c2f4f7b9e10"] {
        assert_error(&okta.get(&format!("/Users/{id}")).await, 404, None);
    }

    // Another tenant's user is indistinguishable from a missing one, and untouched.
    let acme_user = okta.post("/Users", okta_create_body("private@acme.com")).await.body;
    let acme_id = acme_user["id"].as_str().unwrap();
    let globex = anon(&basic("globex", &stack.add_tenant("globex").await));
    let missing = globex.get("/Users/9a4c2b1e-5f1b-4c43-9a8a-3c2f4f7b9e10").await;
    let foreign = globex.get(&format!("/Users/{acme_id}")).await;
    assert_error(&foreign, 404, None);
    assert_eq!(
        foreign.body["detail"].as_str().unwrap().replace(acme_id, "ID"),
        missing.body["detail"].as_str().unwrap().replace("9a4c2b1e-5f1b-4c43-9a8a-3c2f4f7b9e10", "ID")
    );
    assert_error(&globex.put(&format!("/Users/{acme_id}"), okta_create_body("stolen@globex.com")).await, 404, None);
    let patch = json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"active": false}}]});
    assert_error(&globex.patch(&format!("/Users/{acme_id}"), patch).await, 404, None);
    assert_list(&globex.get("/Users?filter=userName%20eq%20%22private%40acme.com%22").await, 0);
    assert_list(&globex.get("/Users").await, 0);
    assert_eq!(okta.get(&format!("/Users/{acme_id}")).await.body, acme_user, "acme's user is unchanged");

    // Filters: malformed or unsupported is 400 invalidFilter, never a full list.
    for filter in ["userName%20zz%20%22x%22", "nosuchattr%20eq%20%22x%22", "userName%20eq", "(userName%20eq%20%22x%22"]
    {
        assert_error(&okta.get(&format!("/Users?filter={filter}")).await, 400, Some("invalidFilter"));
    }
    assert_error(&okta.get("/Users?startIndex=abc").await, 400, Some("invalidValue"));

    // Bodies: malformed JSON, non-JSON media types; both JSON media types accepted.
    let raw = |ct: &'static str, body: &'static str| {
        okta.http
            .post(format!("{}/Users", stack.base_url))
            .header("Authorization", stack.auth())
            .header("Content-Type", ct)
            .body(body)
            .send()
    };
    let reply = raw("application/scim+json", "{not json").await.unwrap();
    assert_eq!(reply.status(), 400);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["scimType"], "invalidSyntax");
    assert_eq!(raw("text/plain", "hello").await.unwrap().status(), 415);
    let json_body = r#"{"userName":"plain@acme.com","name":{"givenName":"P","familyName":"J"},"emails":[{"value":"plain@acme.com"}]}"#;
    assert_eq!(raw("application/json", json_body).await.unwrap().status(), 201);

    // Wrong methods and unknown routes are SCIM errors too.
    assert_error(&okta.send("DELETE", "/Users", None).await, 405, None);
    assert_error(&okta.get("/Nothing").await, 404, None);
    stack.stop().await;
}

/// A user's write changes the document it read under the user's row lock: concurrent PATCHes of
/// one user, each adding an email, all land, each once, each with a version and a `user.updated`
/// event of its own. (It fails when the write does not hold the lock from its read, and when a
/// compare-and-set write skips the version check: docs/performance.md, finding 18.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_of_one_user_lose_no_update() {
    use futures::StreamExt;
    let stack = TestStack::start().await;
    let okta = stack.okta();
    let created = okta.post("/Users", okta_create_body("busy@acme.com")).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let added: Vec<String> = (0..24).map(|i| format!("busy{i}@acme.com")).collect();
    let statuses: Vec<u16> = futures::stream::iter(added.clone())
        .map(|email| {
            let (okta, path) = (okta.clone(), format!("/Users/{id}"));
            async move {
                let body = json!({"schemas": [PATCH_SCHEMA], "Operations": [
                    {"op": "add", "path": "emails", "value": [{"value": email, "type": "other"}]}]});
                okta.patch(&path, body).await.status
            }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let user = okta.get(&format!("/Users/{id}")).await;
    let emails: Vec<&str> =
        user.body["emails"].as_array().unwrap().iter().map(|e| e["value"].as_str().unwrap()).collect();
    for email in &added {
        assert_eq!(emails.iter().filter(|e| *e == email).count(), 1, "{email} in {emails:?}");
    }
    assert_eq!(user.body["meta"]["version"], "W/\"25\"");
    let events = stack.settled_events().await;
    let mut versions: Vec<i64> = events
        .iter()
        .filter(|e| e.subject.ends_with(".user.updated") && e.envelope.resource_id == id)
        .map(|e| e.envelope.resource_version)
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (2..=25).collect::<Vec<i64>>());
    stack.stop().await;
}
