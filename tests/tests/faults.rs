//! Faults: processes killed (SIGKILL: the services, nats-server, PostgreSQL's postmaster),
//! PostgreSQL restarted, the mail server gone, requests retried. Each fault test runs the
//! services' binaries against a PostgreSQL and a nats-server of its own (so stopping or killing
//! them disturbs nothing else), under a steady Okta-like load, and then checks every promise
//! (`e2e::faults::verify`): every write answered 2xx is in the database, each user at the version
//! its acknowledged changes add up to; every committed change has exactly one event on the
//! stream, in commit order per user; no email is lost and none is sent twice.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use e2e::faults::{Failure, Ledger, Load, PrivateNats, PrivatePostgres, Resends, verify};
use e2e::processes::{ProcessStack, Which};
use e2e::{TestStack, poll};
use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// A stack of the services' binaries on servers of its own.
async fn private_stack() -> (PrivatePostgres, PrivateNats, ProcessStack) {
    let (pg, nats) = tokio::task::spawn_blocking(|| (PrivatePostgres::start(), PrivateNats::start())).await.unwrap();
    let env = [
        ("SHUTDOWN_DELAY_SECS", "0".to_owned()),
        // The notification consumer's ack wait is the send timeout + 60 s, and `verify` counts
        // emails one ack wait after the last disturbance: a 5 s send timeout (sends to the test's
        // own SMTP sink take milliseconds) keeps that at 65 s instead of 90.
        ("SMTP_TIMEOUT_SECS", "5".to_owned()),
        // The load is one tenant's: out of its limits' way.
        ("RATE_LIMIT_PER_SECOND", "100000".to_owned()),
        ("RATE_LIMIT_BURST", "100000".to_owned()),
        ("TENANT_MAX_IN_FLIGHT", "100000".to_owned()),
    ];
    let stack = ProcessStack::start_on(&pg.servers_with(&nats), &env).await;
    (pg, nats, stack)
}

/// Everyone the SMTP sink has received a message for so far (lowercase).
fn delivered(stack: &ProcessStack) -> HashSet<String> {
    stack.smtp.received().into_iter().flat_map(|m| m.to).map(|t| t.to_ascii_lowercase()).collect()
}

fn run_id() -> String {
    format!("f{}", &Uuid::new_v4().simple().to_string()[..8])
}

/// 1. user-directory is killed (SIGKILL) mid-load and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn directory_killed_mid_load_loses_and_doubles_nothing() {
    let (_pg, _nats, mut stack) = private_stack().await;
    let run = run_id();
    let load = Load::start(&stack, &run, 4);
    load.progress(40).await;
    stack.directory.kill().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.respawn(Which::Directory);
    load.progress(40).await;
    let ledger = load.finish().await;
    assert!(!ledger.failures.lock().unwrap().is_empty(), "the crash was felt by the client");
    verify(&stack, &run, &ledger, Resends::None).await;
}

/// 2. The single nats-server (streams of one replica: the R1 case) is killed (SIGKILL) and stays
/// down for 30 s: SCIM writes keep succeeding (the outbox holds the events), everything is
/// relayed once it is back (from what it had written to its storage before it died), and no
/// service is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_killed_and_down_for_30_seconds_writes_go_on_and_everything_is_relayed_after() {
    let (_pg, mut nats, mut stack) = private_stack().await;
    let run = run_id();
    let load = Load::start(&stack, &run, 4);
    load.progress(20).await;
    let down = Instant::now();
    tokio::task::block_in_place(|| nats.kill_server());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let up = Instant::now();
    let during = load.ledger.acknowledged_between(down, up);
    let failed = load.ledger.failures_between(down, up);
    tokio::task::block_in_place(|| nats.start_server());
    // What the consumer had been sent but not answered, or answered unheard, comes again.
    load.ledger.disturbed(Instant::now());
    load.progress(20).await;
    let ledger = load.finish().await;
    assert!(during >= 50, "writes went on while the broker was down ({during} acknowledged)");
    assert!(failed.is_empty(), "no request failed while the broker was down: {failed:?}");
    for which in [Which::Directory, Which::Gateway, Which::Notification] {
        assert!(stack.service(which).running(), "{which:?} still runs: nothing was restarted");
    }
    verify(&stack, &run, &ledger, Resends::None).await;
}

/// Every failure the (Okta) load met was a 429 SCIM error with Retry-After (a transient refusal
/// is a 429 to Okta), the outage was felt, none after the database was back was a 500, and every
/// service still runs (it recovered by itself).
fn assert_refused_for_now_only(stack: &mut ProcessStack, ledger: &Ledger, down: Instant, up: Instant) {
    let failures = ledger.failures.lock().unwrap().clone();
    assert!(!ledger.failures_between(down, up).is_empty(), "the outage was felt while the database was down");
    let after: Vec<&Failure> = failures.iter().filter(|f| f.at >= up).collect();
    assert!(after.iter().all(|f| f.status != Some(500)), "no 500 once the database was back: {after:#?}");
    for f in &failures {
        assert_eq!(f.status, Some(429), "every failure, over the whole load, was a 429 answer: {f:?}");
        let secs = f.retry_after.as_deref().and_then(|s| s.parse::<u64>().ok());
        assert!(secs.is_some_and(|s| s >= 1), "with an integer Retry-After: {f:?}");
        assert_eq!(f.body["schemas"], json!([ERROR]), "a SCIM error: {f:?}");
    }
    eprintln!("{} failures, {} of them after the database was back", failures.len(), after.len());
    for which in [Which::Directory, Which::Gateway, Which::Notification] {
        assert!(stack.service(which).running(), "{which:?} still runs: it recovered by itself");
    }
}

/// 3. PostgreSQL restarts (fast shutdown, as an operator's restart): meanwhile the gateway
/// answers 503 (429 to Okta), a SCIM error with Retry-After; the services recover by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_restart_answers_503_with_retry_after_and_recovers_by_itself() {
    let (pg, _nats, mut stack) = private_stack().await;
    let run = run_id();
    let load = Load::start(&stack, &run, 4);
    load.progress(30).await;
    let down = Instant::now();
    tokio::task::block_in_place(|| pg.stop_server());
    // A request while the database is down.
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://{}/scim/v2/Users?filter=userName%20eq%20%22nobody%22", stack.gateway_addr))
        .header("Authorization", stack.auth())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some(), "503 names when to retry");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/scim+json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["schemas"], json!([ERROR]));
    assert_eq!(body["status"], "503");
    tokio::time::sleep(Duration::from_secs(5)).await;
    tokio::task::block_in_place(|| pg.start_server());
    let up = Instant::now();
    // The notification service's database went too: its decisions and sends were retried.
    load.ledger.disturbed(up);
    load.progress(30).await;
    let ledger = load.finish().await;
    assert_refused_for_now_only(&mut stack, &ledger, down, up);
    // A send the SMTP server accepted just as the database went is recorded once it is back,
    // within the send's claim: nothing is sent twice.
    verify(&stack, &run, &ledger, Resends::None).await;
}

/// 3b. PostgreSQL crashes: its postmaster is killed (SIGKILL) under load and started again a few
/// seconds later, recovering from its WAL. Meanwhile every refusal is a 429 to Okta with
/// Retry-After; the services recover by themselves; every write acknowledged before the crash
/// is there after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_crash_sigkill_of_the_postmaster_recovers_and_keeps_every_acknowledged_write() {
    let (pg, _nats, mut stack) = private_stack().await;
    let run = run_id();
    let load = Load::start(&stack, &run, 4);
    load.progress(30).await;
    let logged = pg.server_log().len();
    let down = Instant::now();
    tokio::task::block_in_place(|| pg.crash_server());
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| pg.start_server());
    let up = Instant::now();
    load.ledger.disturbed(up);
    let log = pg.server_log();
    let restart = &log[logged..];
    assert!(
        restart.contains("was not properly shut down; automatic recovery in progress")
            && restart.contains("redo starts at"),
        "the server ran crash recovery from its WAL: {restart}"
    );
    load.progress(30).await;
    let ledger = load.finish().await;
    assert_refused_for_now_only(&mut stack, &ledger, down, up);
    // As in the restart: a send accepted as the database died is recorded once it is back.
    verify(&stack, &run, &ledger, Resends::None).await;
}

/// 4. The notification service is killed (SIGKILL) while it sends, and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notification_killed_while_sending_loses_no_email() {
    // The killed process's claims and unanswered messages come back after its lease and the ack
    // wait (send timeout + 30 s, + 30 s more): the 5 s send timeout of every fault stack keeps
    // the wait near a minute.
    let (_pg, _nats, mut stack) = private_stack().await;
    let run = run_id();
    let load = Load::start(&stack, &run, 4);
    poll("emails being sent", || async { (stack.smtp.received().len() >= 5).then_some(()) }).await;
    stack.notification.kill().await;
    // What the dead sender had already written may still be in the sink's socket: a message is
    // delivered before the crash if the sink receives it from the dead process's sessions.
    poll("the dead sender's SMTP sessions to end", || async { (stack.smtp.open_sessions() == 0).then_some(()) }).await;
    let before = delivered(&stack);
    load.progress(20).await;
    stack.respawn(Which::Notification);
    load.ledger.disturbed(Instant::now());
    load.progress(20).await;
    let ledger = load.finish().await;
    // A crash between the SMTP server's acceptance and the record of it sends that message once
    // more (same Message-ID): the one window SMTP leaves open (docs/reliability.md). Each of the
    // sender's lanes (`SEND_LANES`, 16) can be in that window when it dies, so as many may be;
    // only messages delivered before the crash, and each once.
    verify(&stack, &run, &ledger, Resends::OnceOf(before)).await;
}

/// 5. The SMTP server is gone for 60 s: emails wait and are retried, none lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smtp_down_for_60_seconds_delays_emails_but_loses_none() {
    let (_pg, _nats, stack) = private_stack().await;
    let run = run_id();
    let load = Load::start(&stack, &run, 2);
    poll("emails being sent", || async { (!stack.smtp.received().is_empty()).then_some(()) }).await;
    stack.smtp.stop();
    // A session already past its message when the server went may still finish recording it
    // (the lanes send several at once): the outage is counted from a second later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = stack.smtp.received().len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(stack.smtp.received().len(), before, "nothing was delivered while the server was down");
    stack.smtp.restart();
    load.ledger.disturbed(Instant::now());
    load.progress(10).await;
    let ledger = load.finish().await;
    verify(&stack, &run, &ledger, Resends::None).await;
}

/// 6. The gateway is killed (SIGKILL) mid-request, several times: the client's retries (as
/// Okta's) never create a user twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_killed_mid_request_retries_create_no_duplicate() {
    let (_pg, _nats, mut stack) = private_stack().await;
    let run = run_id();
    let load = Load::start(&stack, &run, 8);
    for _ in 0..3 {
        load.progress(30).await;
        stack.gateway.kill().await;
        stack.respawn(Which::Gateway);
    }
    load.progress(30).await;
    let ledger = load.finish().await;
    let lost = ledger.failures.lock().unwrap().iter().filter(|f| f.status.is_none()).count();
    assert!(lost > 0, "some requests were cut off by the kills");
    verify(&stack, &run, &ledger, Resends::None).await;
}

fn rename(given: &str) -> Value {
    json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "name.givenName", "value": given}]})
}

/// 7. Okta's retries: the same POST twice is a 409 and one user; the same PATCH twice is one
/// change (one version, one event).
#[tokio::test]
async fn the_same_post_or_patch_twice_is_one_user_and_one_change() {
    let stack = TestStack::start().await;
    let okta = stack.okta();
    let user = json!({"schemas": [USER], "userName": "twice@acme.com", "name": {"givenName": "Twice", "familyName": "Sent"},
        "emails": [{"value": "twice@acme.com", "primary": true}], "active": true});
    let first = okta.post("/Users", user.clone()).await;
    assert_eq!(first.status, 201);
    let second = okta.post("/Users", user).await;
    assert_eq!(second.status, 409);
    assert_eq!(second.body["scimType"], "uniqueness");
    let found = okta.get("/Users?filter=userName%20eq%20%22twice@acme.com%22").await;
    assert_eq!(found.body["totalResults"], 1);
    let id = first.body["id"].as_str().unwrap();
    let a = okta.patch(&format!("/Users/{id}"), rename("Again")).await;
    let b = okta.patch(&format!("/Users/{id}"), rename("Again")).await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.body["meta"]["version"], b.body["meta"]["version"], "the second PATCH changed nothing");
    let events = stack.settled_events().await;
    let mine: Vec<_> = events.iter().filter(|e| e.envelope.resource_id == id).collect();
    assert_eq!(mine.len(), 2, "created, renamed once: {mine:?}");
}

/// 32 parallel PATCHes, then 32 parallel PUTs, on one user and on one group: no update lost,
/// versions strictly increasing, events in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_and_puts_lose_no_update_and_keep_versions_in_order() {
    let stack = TestStack::start().await;
    let okta = stack.okta();
    let created = okta
        .post(
            "/Users",
            json!({"schemas": [USER], "userName": "busy@acme.com", "name": {"givenName": "B", "familyName": "Usy"},
            "emails": [{"value": "busy@acme.com", "primary": true}]}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let path = format!("/Users/{id}");
    let phones: Vec<String> = (0..32).map(|i| format!("+1555000{i:04}")).collect();
    let answers: Vec<u16> = futures::stream::iter(phones.clone())
        .map(|p| {
            let (okta, path) = (okta.clone(), path.clone());
            async move {
                let add = json!({"schemas": [PATCH], "Operations": [{"op": "add", "path": "phoneNumbers",
                    "value": [{"value": p, "type": "work"}]}]});
                okta.patch(&path, add).await.status
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    let now = okta.get(&path).await;
    let mut stored: Vec<String> =
        now.body["phoneNumbers"].as_array().unwrap().iter().map(|p| p["value"].as_str().unwrap().to_owned()).collect();
    stored.sort();
    assert_eq!(stored, phones, "every PATCH's phone number is kept");
    let answers: Vec<u16> = futures::stream::iter(0..32)
        .map(|i| {
            let (okta, path) = (okta.clone(), path.clone());
            async move {
                let put = json!({"schemas": [USER], "userName": "busy@acme.com", "title": format!("Title {i}"),
                    "name": {"givenName": "B", "familyName": "Usy"},
                    "emails": [{"value": "busy@acme.com", "primary": true}]});
                okta.put(&path, put).await.status
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    assert_eq!(okta.get(&path).await.body["meta"]["version"], "W/\"65\"", "1 create + 32 PATCHes + 32 PUTs");

    let group = okta.post("/Groups", json!({"schemas": [GROUP], "displayName": "Busy"})).await;
    let gid = group.body["id"].as_str().unwrap().to_owned();
    let mut members = Vec::new();
    for i in 0..32 {
        let name = format!("member{i}@acme.com");
        let m = okta
            .post("/Users", json!({"schemas": [USER], "userName": name, "name": {"givenName": "M", "familyName": "Ember"}, "emails": [{"value": name, "primary": true}]}))
            .await;
        assert_eq!(m.status, 201, "{:?}", m.body);
        members.push(m.body["id"].as_str().unwrap().to_owned());
    }
    let gpath = format!("/Groups/{gid}");
    let answers: Vec<u16> = futures::stream::iter(members.clone())
        .map(|m| {
            let (okta, gpath) = (okta.clone(), gpath.clone());
            async move {
                let add = json!({"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": m}]}]});
                okta.patch(&gpath, add).await.status
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(answers.iter().all(|s| *s == 204 || *s == 200), "{answers:?}");
    let g = okta.get(&gpath).await;
    assert_eq!(g.body["members"].as_array().unwrap().len(), 32, "no member lost");
    let answers: Vec<u16> = futures::stream::iter(0..32)
        .map(|i| {
            let (okta, gpath, members) = (okta.clone(), gpath.clone(), members.clone());
            async move {
                let all: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
                okta.put(&gpath, json!({"schemas": [GROUP], "displayName": format!("Busy {i}"), "members": all}))
                    .await
                    .status
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");

    let events = stack.settled_events().await;
    for (resource, expected_last) in [(&id, 65), (&gid, 1 + 32 + 32)] {
        let versions: Vec<i64> = events
            .iter()
            .filter(|e| &e.envelope.resource_id == resource)
            .map(|e| e.envelope.resource_version)
            .collect();
        assert_eq!(versions, (1..=expected_last).collect::<Vec<i64>>(), "one event per version, in order");
    }
}
