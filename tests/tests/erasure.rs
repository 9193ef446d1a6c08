//! Erasure of one person (docs/adr/0025-erasure-of-one-person.md), end to end through the gateway
//! against the real services: a user with distinctive values everywhere the platform keeps
//! anything (their document, a logged lookup and PATCH, a group, an email sent to them, their
//! events), erased; then every table of both databases and every message the stream retains is
//! searched for those values.

use e2e::{Okta, TestStack};
use proto::events::v1::envelope::Payload;
use serde_json::{Value, json};
use sqlx::{PgPool, Row};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const LEARNING: &str = "urn:ietf:params:scim:schemas:extension:learning:2.0:User";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// What names the person, each found nowhere else (the userName without its `@`, which a logged
/// path carries percent-encoded).
const VALUES: [&str; 8] = [
    "zq-erase-me-7731",
    "Quintessa",
    "Vandersloot",
    "qv.private.home",
    "00uERASEME42",
    "BADGE-ZQ-991",
    "CC-ZQ-55",
    "DIV-ZQ-66",
];
const USER_NAME: &str = "zq-erase-me-7731@acme.com";

fn person() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE, LEARNING],
        "userName": USER_NAME,
        "externalId": "00uERASEME42",
        "name": {"givenName": "Quintessa", "familyName": "Vandersloot"},
        "emails": [
            {"primary": true, "value": USER_NAME, "type": "work"},
            {"value": "qv.private.home@mail.example", "type": "home"}
        ],
        "active": true,
        ENTERPRISE: {"costCenter": "CC-ZQ-55", "division": "DIV-ZQ-66"},
        LEARNING: {"customFields": {"badge": "BADGE-ZQ-991"}},
    })
}

/// Every (table, value) of a database where a value is found, in any column: text as the row's
/// text (case-insensitive), byte columns (an event in the outbox) as the value's UTF-8 bytes.
async fn found_in(db: &PgPool, values: &[&str]) -> Vec<(String, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(db)
    .await
    .unwrap();
    assert!(tables.len() >= 3, "{tables:?}");
    let mut found = Vec::new();
    for table in tables {
        let bytea: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1 AND data_type = 'bytea'",
        )
        .bind(&table)
        .fetch_all(db)
        .await
        .unwrap();
        for value in values {
            let mut sql = format!("SELECT count(*) FROM \"{table}\" t WHERE t::text ILIKE '%' || $1 || '%'");
            for c in &bytea {
                sql.push_str(&format!(" OR position(convert_to($1, 'UTF8') in \"{c}\") > 0"));
            }
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(value).fetch_one(db).await.unwrap();
            if n > 0 {
                found.push((table.clone(), (*value).to_owned()));
            }
        }
    }
    found
}

/// Every (stream sequence, value) of a retained message that carries a value.
async fn found_in_stream(stack: &TestStack, values: &[&str]) -> Vec<(u64, String)> {
    let raw = e2e::raw_stream(&stack.nats, &stack.nats_args.nats_stream).await;
    assert!(!raw.is_empty());
    let mut found = Vec::new();
    for (seq, bytes) in raw {
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for v in values {
            if text.contains(&v.to_lowercase()) {
                found.push((seq, (*v).to_owned()));
            }
        }
    }
    found
}

async fn erase(okta: &Okta, id: &str, confirm: &str) -> e2e::Reply {
    okta.api("POST", &format!("/users/{id}/erase"), Some(json!({"confirm": confirm}))).await
}

/// The number of requests the tenant's log holds.
async fn logged(okta: &Okta) -> usize {
    okta.api("GET", "/requests?limit=1000", None).await.body["requests"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_user_leaves_their_data_nowhere_and_their_name_can_be_provisioned_again() {
    let stack = TestStack::start().await;
    let okta = stack.okta();

    // The person, everywhere: created, looked up (their name in a logged path), changed by a
    // PATCH, put in a group (their login as the member's display), made a manager, and sent
    // their first-assignment email.
    let r = okta.post("/Users", person()).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let lookup = okta.get(&format!("/Users?filter=userName%20eq%20%22{}%22", USER_NAME.replace('@', "%40"))).await;
    assert_eq!(lookup.body["totalResults"], 1);
    let patch = json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "title", "value": "Quintessa's title"}]});
    assert_eq!(okta.patch(&format!("/Users/{id}"), patch).await.status, 200);
    let g = okta
        .post("/Groups", json!({"displayName": "Erasure Group", "members": [{"value": id, "display": USER_NAME}]}))
        .await;
    assert_eq!(g.status, 201, "{:?}", g.body);
    let group = g.body["id"].as_str().unwrap().to_owned();
    let role = okta.api("PUT", &format!("/users/{id}/role"), Some(json!({"role": "manager"}))).await;
    assert_eq!(role.status, 200);
    let a = stack.api_post("assignments", json!({"userId": id, "contentId": "c-1", "title": "Safety basics"})).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let email = e2e::poll("the first-assignment email", || async { stack.smtp.received_by(USER_NAME).pop() }).await;
    assert!(email.data.contains("Quintessa"), "the email names them: {}", email.data);
    // And someone else, who must keep everything.
    let other = okta.post("/Users", e2e::okta_user("stays@acme.com")).await;
    let other_id = other.body["id"].as_str().unwrap().to_owned();
    let before = stack.settled_events().await;
    let before_in_dbs = found_in(&stack.directory_db, &VALUES).await;
    assert!(before_in_dbs.len() >= 5, "the values are there to be found: {before_in_dbs:?}");
    assert!(!found_in(&stack.notification_db, &VALUES).await.is_empty(), "the email and the projection name them");
    assert!(!found_in_stream(&stack, &VALUES).await.is_empty());
    // Every request so far is in the log before the erasure reads it.
    e2e::poll("the requests logged", || async { (logged(&okta).await >= 6).then_some(()) }).await;

    // What is refused first: no confirmation, another id as confirmation, another tenant.
    assert_eq!(erase(&okta, &id, "").await.status, 400);
    assert_eq!(erase(&okta, &id, &other_id).await.status, 400);
    let globex_key = stack.add_tenant("globex").await;
    let globex = stack.okta_at(stack.gateway_addr, &e2e::basic("globex", &globex_key));
    let theirs = erase(&globex, &id, &id).await;
    let nobody = uuid::Uuid::now_v7().to_string();
    let missing = erase(&okta, &nobody, &nobody).await;
    assert_eq!((theirs.status, missing.status), (404, 404));
    assert_eq!(theirs.body.to_string().replace(&id, "ID"), missing.body.to_string().replace(&nobody, "ID"));

    let done = erase(&okta, &id, &id).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!((done.body["id"].as_str(), done.body["alreadyErased"].as_bool()), (Some(id.as_str()), Some(false)));
    assert!(done.body["erasedBy"].as_str().unwrap().starts_with("api-key:"), "{:?}", done.body);
    for counted in ["requestLogRowsScrubbed", "outboxEventsScrubbed", "streamMessagesDeleted"] {
        assert!(done.body[counted].as_u64().unwrap() > 0, "{counted}: {:?}", done.body);
    }

    // The notification service takes `user.erased`; then nothing names them anywhere.
    e2e::poll("user.erased decided", || async {
        stack.decisions().await.iter().any(|d| d.event_type == "user.erased").then_some(())
    })
    .await;
    let after = stack.settled_events().await;
    assert_eq!(found_in(&stack.directory_db, &VALUES).await, Vec::<(String, String)>::new(), "directory");
    assert_eq!(found_in(&stack.notification_db, &VALUES).await, Vec::<(String, String)>::new(), "notification");
    assert_eq!(found_in_stream(&stack, &VALUES).await, Vec::<(u64, String)>::new(), "stream");
    // The other user's events are all still there.
    let count_of =
        |events: &[e2e::StreamEvent], who: &str| events.iter().filter(|e| e.envelope.resource_id == who).count();
    assert_eq!(count_of(&after, &other_id), count_of(&before, &other_id));

    // Auditable: who and when, in the row, the event and the request log.
    let row = sqlx::query("SELECT user_name, erased_at, erased_by, role FROM users WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&stack.directory_db)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("user_name"), format!("erased-{id}"));
    assert!(row.get::<Option<time::OffsetDateTime>, _>("erased_at").is_some());
    assert_eq!(row.get::<Option<String>, _>("erased_by").as_deref(), done.body["erasedBy"].as_str());
    assert_eq!(row.get::<String, _>("role"), "manager", "not personal data: kept");
    let erased_event = after
        .iter()
        .find_map(|e| match &e.envelope.payload {
            Some(Payload::UserErased(p)) if e.envelope.resource_id == id => {
                Some((e.subject.clone(), p.erased_by.clone()))
            }
            _ => None,
        })
        .expect("user.erased on the stream");
    assert!(erased_event.0.ends_with(".user.erased"));
    assert_eq!(Some(erased_event.1.as_str()), done.body["erasedBy"].as_str());
    let log = e2e::poll("the erasure in the request log", || async {
        let r = okta.api("GET", "/requests?method=POST&contains=erase", None).await;
        r.body["requests"].as_array()?.iter().find(|q| q["status"] == 200).cloned()
    })
    .await;
    assert_eq!(log["path"], format!("/api/v1/users/{id}/erase"));
    let member = okta.get(&format!("/Groups/{group}")).await;
    assert_eq!(member.body["members"], json!([]), "no longer a member");

    // To SCIM they are missing, like any id of nobody; to reports, a tombstone among the archived.
    for (method, body) in [
        ("GET", None),
        ("PUT", Some(e2e::okta_user(USER_NAME))),
        ("PATCH", Some(e2e::okta_deactivation())),
        ("DELETE", None),
    ] {
        let r = okta.send(method, &format!("/Users/{id}"), body).await;
        assert_eq!(r.status, 404, "{method}: {:?}", r.body);
    }
    let by_name = okta.get(&format!("/Users?filter=userName%20eq%20%22erased-{id}%22")).await;
    assert_eq!(by_name.body["totalResults"], 0);
    let all = okta.get("/Users?count=100").await;
    assert!(all.body["Resources"].as_array().unwrap().iter().all(|u| u["id"] != id.as_str()));
    let report = okta.api("GET", "/reports/learners?include=archived", None).await;
    let tomb = report.body["learners"].as_array().unwrap().iter().find(|l| l["id"] == id.as_str()).unwrap().clone();
    assert_eq!(
        (tomb["userName"].as_str(), tomb["active"].as_bool()),
        (Some(format!("erased-{id}").as_str()), Some(false))
    );
    assert_eq!(tomb["email"], "");
    let active = okta.api("GET", "/reports/learners", None).await;
    assert!(active.body["learners"].as_array().unwrap().iter().all(|l| l["id"] != id.as_str()));
    let assign = stack.api_post("assignments", json!({"userId": id, "contentId": "c-2", "title": "More"})).await;
    assert_eq!(assign.status, 404, "nothing more is assigned to nobody");

    // Requests about them after the erasure are logged as sent (the PUT above named them again);
    // erasing again clears the rows that name their id, and changes nothing else.
    e2e::poll("the 404s logged", || async {
        let r = okta.api("GET", "/requests?method=PUT&status=404", None).await;
        (!r.body["requests"].as_array()?.is_empty()).then_some(())
    })
    .await;
    assert!(!found_in(&stack.directory_db, &VALUES).await.is_empty(), "the PUT's body names them");
    let again = erase(&okta, &id, &id).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!((again.body["alreadyErased"].as_bool(), &again.body["erasedAt"]), (Some(true), &done.body["erasedAt"]));
    assert_eq!(again.body["streamMessagesDeleted"], 0);
    assert!(again.body["requestLogRowsScrubbed"].as_u64().unwrap() >= 4, "{:?}", again.body);
    assert_eq!(found_in(&stack.directory_db, &VALUES).await, Vec::<(String, String)>::new());

    // Their userName is free: Okta provisions the same person again, as a new user.
    let back = okta.post("/Users", person()).await;
    assert_eq!(back.status, 201, "{:?}", back.body);
    assert_ne!(back.body["id"], id.as_str());
    assert!(back.body.get("roles").is_none());

    // Support, from the command line, erases the other user; the event says who.
    let out = std::process::Command::new(e2e::processes::binary("user-directory"))
        .args(["user", "erase", "acme", &other_id, "--by", "bob"])
        .env("DATABASE_URL", e2e::database_url(&stack.directory_database))
        .env("NATS_URL", &stack.nats_args.nats_url)
        .env("NATS_STREAM", &stack.nats_args.nats_stream)
        .env("NATS_SUBJECT_PREFIX", &stack.nats_args.nats_subject_prefix)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("the erasure is complete"), "{said}");
    let by_support = e2e::poll("the CLI's erasure on the stream", || async {
        stack.events().await.into_iter().find_map(|e| match e.envelope.payload {
            Some(Payload::UserErased(p)) if e.envelope.resource_id == other_id => Some(p.erased_by),
            _ => None,
        })
    })
    .await;
    assert_eq!(by_support, "support:bob");
    assert!(found_in_stream(&stack, &["stays@acme.com"]).await.is_empty(), "its events are gone from the stream");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_logged_just_after_the_erasure_scanned_the_log_are_scrubbed_before_it_answers() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    // Created and erased at once: the creation's log record is still in the gateway's queue (it
    // writes every 200 ms) when the erasure first reads the log.
    let r = okta.post("/Users", e2e::okta_user("late-zq-4410@acme.com")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let done = erase(&okta, &id, &id).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert!(done.body["requestLogRowsScrubbed"].as_u64().unwrap() >= 1, "{:?}", done.body);
    assert_eq!(found_in(&stack.directory_db, &["late-zq-4410"]).await, Vec::<(String, String)>::new());
    stack.stop().await;
}
