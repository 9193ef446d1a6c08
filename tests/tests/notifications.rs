//! Notifications end to end, through a real SMTP server speaking SMTP over TCP (the test sink):
//! provisioning is silent, the first email a provisioned user gets is for their first assignment,
//! admins' users are welcomed, archived users get nothing and restored ones do again, and every
//! email is sent exactly once through redeliveries, outages, rejections and re-drives.

use std::time::Duration;

use async_nats::jetstream;
use e2e::{Okta, TestStack, poll};
use proto::events::v1::envelope::Payload;
use proto::events::v1::{ContentAssigned, Envelope};
use serde_json::json;
use sqlx::Row;

const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn scim_user(okta: &Okta, email: &str, given: &str) -> String {
    let r = okta
        .post(
            "/Users",
            json!({
                "userName": email, "displayName": format!("{given} Doe"),
                "name": {"givenName": given, "familyName": "Doe"},
                "emails": [{"value": email, "primary": true, "type": "work"}], "externalId": format!("00u{given}"),
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn admin_user(stack: &TestStack, email: &str) -> String {
    let r = stack
        .api_post("users", json!({"userName": email, "givenName": "Ada", "familyName": "Admin", "email": email}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn assign(stack: &TestStack, user: &str, content: &str) -> u16 {
    stack
        .api_post("assignments", json!({"userId": user, "contentId": content, "title": format!("Course {content}")}))
        .await
        .status
}

async fn active(okta: &Okta, id: &str, on: bool) {
    let r = okta
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": on}}]}),
        )
        .await;
    assert_eq!(r.status, 200);
}

async fn decision_for(stack: &TestStack, event_type: &str, resource: &str) -> (String, String) {
    let row = sqlx::query("SELECT outcome, reason FROM decisions WHERE event_type = $1 AND resource_id = $2::uuid")
        .bind(event_type)
        .bind(resource)
        .fetch_one(&stack.notification_db)
        .await
        .unwrap_or_else(|e| panic!("no decision for {event_type} ({resource}): {e}"));
    (row.get("outcome"), row.get("reason"))
}

/// An assignment of content to `user`, in the tenant of the event `like`, made when the user was
/// at `user_version`.
fn assignment_after(like: &Envelope, user: &str, user_version: i64) -> Envelope {
    Envelope {
        event_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: like.tenant_id.clone(),
        tenant: like.tenant.clone(),
        resource_id: uuid::Uuid::now_v7().to_string(),
        resource_version: 1,
        payload: Some(Payload::ContentAssigned(ContentAssigned {
            user_id: user.to_owned(),
            content_id: "c1".into(),
            title: "Course".into(),
            user_version,
        })),
        ..Default::default()
    }
}

/// The latest email to `to`, once there is one: (status, attempts, last error).
async fn email_status(stack: &TestStack, to: &str) -> Option<(String, i32, Option<String>)> {
    let row = sqlx::query(
        "SELECT status, attempts, last_error FROM emails WHERE to_address = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(to)
    .fetch_optional(&stack.notification_db)
    .await
    .unwrap()?;
    Some((row.get("status"), row.get("attempts"), row.get("last_error")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_from_silent_provisioning_to_the_first_assignment() {
    let stack = TestStack::start().await;
    let okta = stack.okta();

    // Provisioning is silent.
    let jane = scim_user(&okta, "jane@acme.com", "Jane").await;
    stack.wait_for_decisions(1).await;
    stack.notifications_idle().await;
    assert!(stack.smtp.received().is_empty(), "a provisioned user gets no welcome email");

    // The customer's admin's user is welcomed.
    let ada = admin_user(&stack, "ada@acme.com").await;
    let welcome = poll("the welcome email", || async { stack.smtp.received_by("ada@acme.com").pop() }).await;
    assert_eq!(welcome.header("Subject").as_deref(), Some("Welcome to Acme Corp's learning platform"));
    assert_eq!(welcome.from, "no-reply@learning.test");

    // Jane's first assignment is her first contact: greeting, what, how to sign in.
    assert_eq!(assign(&stack, &jane, "fire-101").await, 201);
    let first = poll("the first-assignment email", || async { stack.smtp.received_by("jane@acme.com").pop() }).await;
    assert_eq!(first.header("Subject").as_deref(), Some("Acme Corp has assigned you \"Course fire-101\""));
    for words in [
        "Hello Jane Doe",
        "Welcome to Acme Corp's learning platform",
        "Course fire-101",
        "How to sign in",
        "https://acme.learning.test",
        "jane@acme.com",
    ] {
        assert!(first.data.contains(words), "missing {words:?} in\n{}", first.data);
    }
    assert!(first.header("Content-Type").unwrap().starts_with("multipart/alternative"));
    let event_id: String = sqlx::query_scalar("SELECT event_id::text FROM emails WHERE to_address = 'jane@acme.com'")
        .fetch_one(&stack.notification_db)
        .await
        .unwrap();
    assert_eq!(first.header("Message-ID").as_deref(), Some(format!("<{event_id}@learning.test>").as_str()));

    // Later assignments get the assignment email; the same content again is the same assignment.
    assert_eq!(assign(&stack, &jane, "gdpr-201").await, 201);
    poll("the assignment email", || async { (stack.smtp.received_by("jane@acme.com").len() == 2).then_some(()) }).await;
    let second = stack.smtp.received_by("jane@acme.com").pop().unwrap();
    assert_eq!(second.header("Subject").as_deref(), Some("New for you: \"Course gdpr-201\""));
    assert_eq!(assign(&stack, &jane, "gdpr-201").await, 200, "already assigned");

    // Archived: the assignment is stored, nothing is sent. Restored: emails again.
    active(&okta, &jane, false).await;
    let archived = stack
        .api_post("assignments", json!({"userId": jane, "contentId": "archived-301", "title": "Course archived-301"}))
        .await;
    assert_eq!(archived.status, 201);
    stack.settled_events().await;
    stack.notifications_idle().await;
    assert_eq!(
        decision_for(&stack, "content.assigned", archived.body["id"].as_str().unwrap()).await,
        ("suppressed".into(), "archived_receives_nothing".into())
    );
    active(&okta, &jane, true).await;
    assert_eq!(assign(&stack, &jane, "back-401").await, 201);
    poll("an email after the restore", || async { (stack.smtp.received_by("jane@acme.com").len() == 3).then_some(()) })
        .await;

    // The admin's user's first assignment is their first-assignment email too.
    assert_eq!(assign(&stack, &ada, "onboarding").await, 201);
    poll("ada's first assignment", || async { (stack.smtp.received_by("ada@acme.com").len() == 2).then_some(()) })
        .await;
    assert!(stack.smtp.received_by("ada@acme.com")[1].data.contains("Your first course is waiting"));

    // Unknown, other tenants' and deleted users: 404, like any missing id.
    assert_eq!(assign(&stack, "9a4c2b1e-5f1b-4c43-9a8a-3c2f4f7b9e10", "x").await, 404);
    assert_eq!(assign(&stack, "not-a-uuid", "x").await, 404);
    let globex = Okta { auth: e2e::basic("globex", &stack.add_tenant("globex").await), ..okta.clone() };
    let spy = scim_user(&globex, "spy@globex.com", "Spy").await;
    assert_eq!(assign(&stack, &spy, "x").await, 404);
    assert_eq!(okta.send("DELETE", &format!("/Users/{jane}"), None).await.status, 204);
    assert_eq!(assign(&stack, &jane, "late").await, 404);

    // Exactly the emails above, nothing twice; every event decided once.
    let events = stack.settled_events().await;
    stack.notifications_idle().await;
    assert_eq!(stack.smtp.received().len(), 5, "welcome, 3 for jane, 1 for ada");
    assert_eq!(stack.decisions().await.len(), events.len());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_sends_nothing_twice() {
    let stack = TestStack::start().await;
    let okta = stack.okta();
    let jane = scim_user(&okta, "jane@acme.com", "Jane").await;
    assert_eq!(assign(&stack, &jane, "c1").await, 201);
    poll("the email", || async { stack.smtp.received_by("jane@acme.com").pop() }).await;
    // The same event delivered again (a copy on the stream under another message id, as a
    // consumer would see after an ack was lost).
    let events = stack.settled_events().await;
    let assigned = events.iter().find(|e| e.subject.ends_with(".content.assigned")).unwrap();
    let js = jetstream::new(stack.nats.clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, "a-redelivery");
    let payload = prost::Message::encode_to_vec(&assigned.envelope);
    js.publish_with_headers(assigned.subject.clone(), headers, payload.into()).await.unwrap().await.unwrap();
    stack.notifications_idle().await;
    assert_eq!(stack.smtp.received_by("jane@acme.com").len(), 1, "one email for one event");

    // Whoever would send an email claims it first: one claim at a time, a sent email never, and a
    // claim whose worker died (its lease passed) can be taken over.
    let pool = &stack.notification_db;
    let db = &infra::Statements::new(pool.clone());
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM emails").fetch_one(pool).await.unwrap();
    let lease = Duration::from_secs(60);
    assert!(notification::store::claim(db, id, lease).await.unwrap().is_none(), "a sent email is not claimed");
    sqlx::query("UPDATE emails SET status = 'pending' WHERE id = $1").bind(id).execute(pool).await.unwrap();
    let first = notification::store::claim(db, id, lease).await.unwrap().expect("a pending email is claimed");
    assert!(notification::store::claim(db, id, lease).await.unwrap().is_none(), "claimed twice");
    sqlx::query("UPDATE emails SET lease_until = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    let second = notification::store::claim(db, id, lease).await.unwrap().expect("an expired claim is taken over");
    // The first claimer, late, records nothing over the second's claim.
    notification::store::record_failure(db, &first, "late", None).await.unwrap();
    assert!(!notification::store::mark_sent(db, &first).await.unwrap(), "a stale claim recorded a send");
    let status: String =
        sqlx::query_scalar("SELECT status FROM emails WHERE id = $1").bind(id).fetch_one(pool).await.unwrap();
    assert_eq!(status, "sending", "a stale claim changed the email");
    assert!(notification::store::mark_sent(db, &second).await.unwrap());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_delays_the_email_and_it_arrives_once() {
    let stack = TestStack::start_with_retries("300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms").await;
    let okta = stack.okta();
    let jane = scim_user(&okta, "jane@acme.com", "Jane").await;
    stack.smtp.stop();
    assert_eq!(assign(&stack, &jane, "c1").await, 201);
    poll("a failed attempt", || async {
        let (status, attempts, error) = email_status(&stack, "jane@acme.com").await?;
        (status == "pending" && attempts >= 2 && error.is_some()).then_some(())
    })
    .await;
    stack.smtp.restart();
    poll("the email after the outage", || async { stack.smtp.received_by("jane@acme.com").pop() }).await;
    stack.notifications_idle().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(stack.smtp.received_by("jane@acme.com").len(), 1, "delivered once");
    assert_eq!(email_status(&stack, "jane@acme.com").await.unwrap().0, "sent");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_rejection_is_recorded_and_not_retried() {
    let stack = TestStack::start().await;
    stack.smtp.refuse("reject", true);
    admin_user(&stack, "reject.me@acme.com").await;
    let (status, attempts, error) = poll("the rejection", || async {
        let s = email_status(&stack, "reject.me@acme.com").await?;
        (s.0 == "failed").then_some(s)
    })
    .await;
    assert_eq!((status.as_str(), attempts), ("failed", 1));
    assert!(error.unwrap().contains("550"));
    stack.notifications_idle().await;
    // Longer than every retry delay together: still one attempt.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(stack.smtp.attempts("reject.me@acme.com"), 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_failed_attempt_dead_letters_and_a_redrive_delivers() {
    let stack = TestStack::start().await;
    stack.smtp.refuse("flaky", false);
    admin_user(&stack, "flaky@acme.com").await;
    let (_, attempts, error) = poll("the dead letter", || async {
        let s = email_status(&stack, "flaky@acme.com").await?;
        (s.0 == "dead").then_some(s)
    })
    .await;
    assert_eq!(attempts, 4, "1 attempt + 3 retries");
    assert!(error.unwrap().contains("451"));
    assert_eq!(stack.smtp.attempts("flaky@acme.com"), 4);
    let letters =
        notification::store::dead_letters(&infra::Statements::new(stack.notification_db.clone())).await.unwrap();
    assert_eq!(letters.len(), 1);

    // The server is fixed; the operator re-drives (what `notification dead-letters redrive` runs).
    stack.smtp.accept_all();
    let (sent, failing) = notification::redrive(&stack.notification_db, &stack.mail, None).await.unwrap();
    assert_eq!((sent, failing), (1, 0));
    assert_eq!(stack.smtp.received_by("flaky@acme.com").len(), 1);
    assert_eq!(email_status(&stack, "flaky@acme.com").await.unwrap().0, "sent");
    assert!(
        notification::store::dead_letters(&infra::Statements::new(stack.notification_db.clone()))
            .await
            .unwrap()
            .is_empty()
    );
    let again = notification::redrive(&stack.notification_db, &stack.mail, None).await.unwrap();
    assert_eq!(again, (0, 0), "nothing left to re-drive");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_waits_for_the_users_latest_change_to_be_known() {
    use notification::store::{HandleError, Handled, Settings, handle};

    let stack = TestStack::start().await;
    let okta = stack.okta();
    let jane = scim_user(&okta, "jane@acme.com", "Jane").await;
    stack.wait_for_decisions(1).await;
    let created = stack.settled_events().await.remove(0).envelope;
    // Assigned after a change (version 2) whose event has not reached the notification service
    // (held back by a retry): deciding now would miss that jane was archived.
    let assigned = assignment_after(&created, &jane, 2);
    let templates = notification::templates::Templates::new().unwrap();
    let settings = Settings { platform_url: "https://{tenant}.learning.test".into() };
    let db = &infra::Statements::new(stack.notification_db.clone());
    let batch = &notification::batch::Batcher::start(db.clone(), notification::batch::MAX_BATCH);
    let early = handle(db, batch, &templates, &settings, &assigned, false).await;
    assert!(matches!(early, Err(HandleError::RecipientUnknown)), "{early:?}");
    active(&okta, &jane, false).await;
    stack.wait_for_decisions(2).await;
    match handle(db, batch, &templates, &settings, &assigned, false).await.unwrap() {
        Handled::Decided { decision, email } => {
            assert_eq!(decision.reason, "archived_receives_nothing");
            assert!(email.is_none());
        }
        other => panic!("{other:?}"),
    }
    stack.stop().await;
}

/// A user's event is decided in one statement, outside a transaction (nothing to read, no email):
/// delivered again it is decided once, and an older event of the same user, decided later, never
/// moves the projection back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_event_is_decided_once_and_never_moves_the_projection_back() {
    use notification::store::{Handled, Settings, handle};

    let stack = TestStack::start().await;
    let okta = stack.okta();
    let jane = scim_user(&okta, "jane@acme.com", "Jane").await;
    active(&okta, &jane, false).await;
    stack.wait_for_decisions(2).await;
    let events = stack.settled_events().await;
    let created = events.iter().find(|e| e.subject.ends_with(".user.created")).unwrap().envelope.clone();
    let templates = notification::templates::Templates::new().unwrap();
    let settings = Settings { platform_url: "https://{tenant}.learning.test".into() };
    let pool = &stack.notification_db;
    let db = &infra::Statements::new(pool.clone());
    let batch = &notification::batch::Batcher::start(db.clone(), notification::batch::MAX_BATCH);
    let again = handle(db, batch, &templates, &settings, &created, false).await.unwrap();
    assert_eq!(again, Handled::AlreadyDecided { email: None });
    // The creation's snapshot (version 1, active) under a new event id: a decision of its own,
    // but the projection stays at the archive (version 2).
    let late = Envelope { event_id: uuid::Uuid::now_v7().to_string(), ..created.clone() };
    match handle(db, batch, &templates, &settings, &late, false).await.unwrap() {
        Handled::Decided { decision, email } => {
            assert_eq!(decision.reason, "welcome_suppressed_scim_provisioned");
            assert!(email.is_none());
        }
        other => panic!("{other:?}"),
    }
    let (active, version): (bool, i64) =
        sqlx::query_as("SELECT active, version FROM recipients").fetch_one(pool).await.unwrap();
    assert_eq!((active, version), (false, 2), "an older snapshot moved the projection back");
    let decided: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_type, count(*) FROM decisions GROUP BY event_type ORDER BY event_type")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(decided, [("user.created".to_owned(), 2), ("user.deactivated".to_owned(), 1)]);
    stack.stop().await;
}

/// Decisions are recorded in batches (one statement, one commit, for what the lanes have decided
/// meanwhile), and still once per event: 200 users' events decided at once, each event twice at
/// the same moment and every user's older snapshot too, give one decision per event, each
/// reported decided exactly once, and projections at the newest version. An event the database
/// refuses (a NUL in a name) fails alone: its batch is written again one decision at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_batched_and_still_once_per_event() {
    use notification::store::{Handled, Settings, handle};
    use proto::events::v1::{UserSnapshot, UserUpdated};

    // The running consumer has nothing to do with these events (they are handed to `handle`).
    let stack = TestStack::start().await;
    let templates = std::sync::Arc::new(notification::templates::Templates::new().unwrap());
    let settings = Settings { platform_url: "https://{tenant}.learning.test".into() };
    let pool = &stack.notification_db;
    let db = infra::Statements::new(pool.clone());
    let batch = notification::batch::Batcher::start(db.clone(), notification::batch::MAX_BATCH);
    let tenant = uuid::Uuid::now_v7().to_string();
    let event = |user: &str, version: i64, given: &str| Envelope {
        event_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant.clone(),
        tenant: "acme".into(),
        resource_id: user.to_owned(),
        resource_version: version,
        payload: Some(Payload::UserUpdated(UserUpdated {
            user: Some(UserSnapshot {
                user_name: format!("{user}@acme.com"),
                email: format!("{user}@acme.com"),
                given_name: given.to_owned(),
                active: true,
                ..Default::default()
            }),
        })),
        ..Default::default()
    };
    let users: Vec<String> = (0..200).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let mut envelopes = Vec::new();
    for u in &users {
        envelopes.push(event(u, 3, "New"));
        envelopes.push(event(u, 2, "Old"));
    }
    let poisoned = event(&uuid::Uuid::now_v7().to_string(), 1, "Nul\0");
    // Every event twice, all at once, and the poisoned one among them.
    let tasks: Vec<_> = envelopes
        .iter()
        .chain(envelopes.iter())
        .chain(std::iter::once(&poisoned))
        .cloned()
        .map(|e| {
            let (db, batch, templates, settings) = (db.clone(), batch.clone(), templates.clone(), settings.clone());
            tokio::spawn(
                async move { (e.event_id.clone(), handle(&db, &batch, &templates, &settings, &e, false).await) },
            )
        })
        .collect();
    let mut decided_now: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut failed = Vec::new();
    for t in tasks {
        let (id, handled) = t.await.unwrap();
        match handled {
            Ok(Handled::Decided { email: None, .. }) => *decided_now.entry(id).or_default() += 1,
            Ok(Handled::AlreadyDecided { email: None }) => {}
            Ok(other) => panic!("{other:?}"),
            Err(e) => failed.push((id, e.to_string())),
        }
    }
    assert_eq!(
        failed.len(),
        1,
        "only the poisoned event fails: {} failed, the first {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(failed[0].0, poisoned.event_id);
    assert_eq!(decided_now.len(), envelopes.len(), "every event decided");
    assert!(decided_now.values().all(|n| *n == 1), "an event reported decided twice");
    let (decisions, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM decisions WHERE tenant_id = $1::uuid")
            .bind(&tenant)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((decisions, distinct), (envelopes.len() as i64, envelopes.len() as i64));
    let projected: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, given_name FROM recipients WHERE tenant_id = $1::uuid")
            .bind(&tenant)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(projected.len(), users.len());
    assert!(projected.iter().all(|(v, g)| *v == 3 && g == "New"), "a projection moved back: {projected:?}");
    // Fewer commits than decisions: the batches carried several (the decisions' transaction ids).
    let commits: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM decisions").fetch_one(pool).await.unwrap();
    assert!(commits < decisions, "{commits} commits for {decisions} decisions: nothing was batched");
    stack.stop().await;
}

/// The event of a user's change can reach the consumer after an assignment that waits for it
/// (its delivery was lost with a consumer's connection and comes back after the ack wait; its
/// decision failed and is retried). Once it has come, the assignment is decided within seconds,
/// not on the emails' retry schedule (here an hour), and its email knows the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_assignment_is_decided_soon_after_its_users_change_arrives() {
    let stack = TestStack::start_with_retries("1h").await;
    let okta = stack.okta();
    let jane = scim_user(&okta, "jane@acme.com", "Jane").await;
    stack.wait_for_decisions(1).await;
    let created = stack.settled_events().await.remove(0);
    // The assignment comes first: it was made after jane's change (version 2), which is late.
    let assigned = assignment_after(&created.envelope, &jane, 2);
    let js = jetstream::new(stack.nats.clone());
    let subject = created.subject.replace(".user.created", ".content.assigned");
    let payload = prost::Message::encode_to_vec(&assigned);
    js.publish(subject, payload.into()).await.unwrap().await.unwrap();
    poll("the assignment asked again, still waiting for jane's change", || async {
        let stream = js.get_stream(&stack.nats_args.nats_stream).await.ok()?;
        let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer("notification").await.ok()?;
        let info = consumer.info().await.ok()?;
        (info.num_redelivered >= 1 && info.num_ack_pending == 1).then_some(())
    })
    .await;
    assert_eq!(stack.decisions().await.len(), 1, "the assignment is not decided without jane's change");

    let r = okta
        .patch(
            &format!("/Users/{jane}"),
            json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": "Janet Doe"}]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let email = poll("the assignment's email", || async { stack.smtp.received_by("jane@acme.com").pop() }).await;
    assert!(email.data.contains("Hello Janet Doe"), "the email knows the change:\n{}", email.data);
    assert_eq!(decision_for(&stack, "content.assigned", &assigned.resource_id).await.1, "first_assignment");
    stack.stop().await;
}
