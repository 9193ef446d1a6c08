//! Transient refusals (issue 24): whatever refuses a request for now (the directory unreachable,
//! or dying mid-call, or its answer cut short, or killed under load; a paused tenant; a deprovision
//! held by the brake) is answered to Okta as 429 with an integer `Retry-After`, the only answer Okta
//! retries by itself (any other error, a 503 included, becomes a failed task the customer's admin must
//! resubmit by hand), and to other clients as 503 with `Retry-After`. Never a 500.

use std::net::SocketAddr;
use std::time::Duration;

use e2e::faults::{Load, Resends, verify};
use e2e::processes::{ProcessStack, Which};
use e2e::{Okta, Reply, TestStack, okta_deactivation, okta_user, poll, poll_for};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use user_directory::store::TenantUpdate;
use uuid::Uuid;

const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// A client that is not Okta (the tenant API, a script, another identity provider).
const OTHER_AGENT: &str = "provisioning-script/2.1";

/// A request as a client other than Okta sends it, with these credentials.
async fn other(method: &str, url: &str, auth: &str, body: Option<Value>) -> Reply {
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .header("Authorization", auth)
        .header("User-Agent", OTHER_AGENT);
    if let Some(b) = body {
        req = req.header("Content-Type", "application/scim+json").body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Reply { status, headers, body }
}

/// The answer is a SCIM error with this status and an integer `Retry-After`; returns the seconds.
fn refused(r: &Reply, status: u16) -> u64 {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.body["schemas"], json!([ERROR]), "{:?}", r.body);
    assert_eq!(r.body["status"], status.to_string(), "{:?}", r.body);
    assert!(!r.body["detail"].as_str().unwrap_or("").is_empty(), "{:?}", r.body);
    let retry_after = r
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After on {} {:?}", r.status, r.body))
        .to_str()
        .unwrap();
    let secs: u64 = retry_after.parse().unwrap_or_else(|_| panic!("Retry-After {retry_after:?} is not an integer"));
    assert!(secs >= 1, "Retry-After {secs}");
    secs
}

async fn pause(stack: &TestStack, paused: bool) {
    stack.store().update_tenant("acme", &TenantUpdate { paused: Some(paused), ..Default::default() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_tenant_is_429_to_okta_and_503_to_others_with_retry_after_and_logged_as_answered() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    pause(&stack, true).await;
    poll("the pause to reach the gateway", || async { (okta.get("/Users?count=1").await.status != 200).then_some(()) })
        .await;

    let r = okta.post("/Users", okta_user("while.paused@acme.com")).await;
    assert_eq!(refused(&r, 429), 300, "the pause's wait");
    assert!(r.body["detail"].as_str().unwrap().contains("paused"), "{:?}", r.body);
    let request_id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    let url = format!("{}/Users", stack.base_url);
    let r = other("POST", &url, &stack.auth(), Some(okta_user("while.paused@acme.com"))).await;
    assert_eq!(refused(&r, 503), 300);
    assert!(r.body["detail"].as_str().unwrap().contains("paused"), "{:?}", r.body);

    // The request log (written in batches, a moment later) keeps what Okta was answered.
    let logged = poll("the refused request in the log", || async {
        let r = okta.api("GET", &format!("/requests/{request_id}"), None).await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(logged.body["status"], 429, "{:?}", logged.body);

    pause(&stack, false).await;
    poll("the unpause to reach the gateway", || async {
        (okta.get("/Users?count=1").await.status == 200).then_some(())
    })
    .await;
    let found = okta.get("/Users?filter=userName%20eq%20%22while.paused%40acme.com%22").await;
    assert_eq!(found.body["totalResults"], 0, "a refused request changed something");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_deprovision_is_429_to_okta_and_503_to_others_with_retry_after() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let mut ids = Vec::new();
    for i in 0..10 {
        let r = okta.post("/Users", okta_user(&format!("held{i}@acme.com"))).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let brake = TenantUpdate { brake_share: Some(0.2), brake_min_users: Some(1), ..Default::default() };
    stack.store().update_tenant("acme", &brake).await.unwrap();
    // 20% of 10: two go through, the third trips the brake.
    for id in &ids[..2] {
        assert_eq!(okta.patch(&format!("/Users/{id}"), okta_deactivation()).await.status, 200);
    }
    let held = okta.patch(&format!("/Users/{}", ids[2]), okta_deactivation()).await;
    assert_eq!(refused(&held, 429), 300, "the brake's wait");
    assert!(held.body["detail"].as_str().unwrap().contains("held"), "{:?}", held.body);
    // Okta's retry (after Retry-After) is held again, and answered the same.
    let again = okta.patch(&format!("/Users/{}", ids[2]), okta_deactivation()).await;
    assert_eq!(refused(&again, 429), 300);
    let deleted = okta.send("DELETE", &format!("/Users/{}", ids[3]), None).await;
    assert_eq!(refused(&deleted, 429), 300);
    // Another client is answered 503, with the same wait.
    let url = format!("{}/Users/{}", stack.base_url, ids[4]);
    let r = other("PATCH", &url, &stack.auth(), Some(okta_deactivation())).await;
    assert_eq!(refused(&r, 503), 300);
    assert!(r.body["detail"].as_str().unwrap().contains("held"), "{:?}", r.body);
    let mut held: Vec<String> =
        stack.store().list_held("acme").await.unwrap().iter().map(|h| h.user_id.to_string()).collect();
    held.sort();
    let mut expected = ids[2..5].to_vec();
    expected.sort();
    assert_eq!(held, expected, "each refused deprovision is held once");
    stack.stop().await;
}

/// A gateway of the stack's settings whose directory is at `directory`.
async fn gateway_to(stack: &mut TestStack, directory: SocketAddr) -> SocketAddr {
    let mut config = stack.gateway_config.clone();
    config.directory_url = format!("http://{directory}");
    config.directory_timeout_secs = 5;
    stack.start_gateway_unready(config).await
}

/// Okta, another client on SCIM, and another on the tenant API, through `gateway`: Okta is
/// answered 429, the others 503, each with the directory's wait, never a 500.
async fn assert_refused_for_now(stack: &TestStack, gateway: SocketAddr) {
    let okta: Okta = stack.okta_at(gateway, &stack.auth());
    for r in [
        okta.get("/Users?filter=userName%20eq%20%22someone%40acme.com%22").await,
        okta.post("/Users", okta_user("someone@acme.com")).await,
        okta.patch(&format!("/Users/{}", Uuid::new_v4()), okta_deactivation()).await,
    ] {
        assert_eq!(refused(&r, 429), 5, "the directory's wait");
    }
    let scim = format!("http://{gateway}/scim/v2/Users?count=1");
    assert_eq!(refused(&other("GET", &scim, &stack.auth(), None).await, 503), 5);
    let api = format!("http://{gateway}/api/v1/users/unlinked");
    assert_eq!(refused(&other("GET", &api, &stack.auth(), None).await, 503), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_unreachable_is_429_to_okta_and_503_to_others_never_500() {
    let mut stack = TestStack::start_with("1s", false).await;
    // A port nothing listens on: every connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gateway = gateway_to(&mut stack, closed).await;
    assert_refused_for_now(&stack, gateway).await;
    stack.stop().await;
}

/// A "directory" that dies in the middle of every call: it takes the connection, reads what the
/// gateway sends (the HTTP/2 preface, the request's frames), and drops the connection with a
/// reset, as the kernel does for a process killed with data unread.
async fn dying_directory() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut read = 0;
                // The preface and the settings come first; the call's HEADERS after them.
                while read < 128 {
                    match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => read += n,
                        _ => break,
                    }
                }
                let _ = socket.set_zero_linger();
                drop(socket);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_dying_mid_call_is_429_to_okta_and_503_to_others_never_500() {
    let mut stack = TestStack::start_with("1s", false).await;
    let dying = dying_directory().await;
    let gateway = gateway_to(&mut stack, dying).await;
    assert_refused_for_now(&stack, gateway).await;
    stack.stop().await;
}

/// A "directory" whose every answer is cut short: a gRPC response whose one message announces
/// 100 bytes and brings 3, then the stream ends cleanly, with no status (what the gateway sees
/// when a proxy between it and a dying directory, or hyper itself for a stream reset with
/// NO_ERROR or CANCEL, ends the stream early).
async fn truncating_directory() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async {
        axum::http::Response::builder()
            .header("content-type", "application/grpc")
            .body(axum::body::Body::from(vec![0u8, 0, 0, 0, 100, 1, 2, 3]))
            .unwrap()
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_answer_cut_short_is_429_to_okta_and_503_to_others_never_500() {
    let mut stack = TestStack::start_with("1s", false).await;
    let truncating = truncating_directory().await;
    let gateway = gateway_to(&mut stack, truncating).await;
    assert_refused_for_now(&stack, gateway).await;
    stack.stop().await;
}

/// user-directory is killed (SIGKILL) five times under a steady Okta-like load through the
/// gateway, and started again each time. Every answer the load got that was not a success is a
/// 429 with an integer `Retry-After` (no 500, no 503: Okta would make those failed tasks), every
/// request succeeded on a retry, and nothing was lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_directory_killed_under_load_is_only_ever_429_to_okta_never_500() {
    let mut stack = ProcessStack::start(&[
        ("SHUTDOWN_DELAY_SECS", "0".to_owned()),
        ("RATE_LIMIT_PER_SECOND", "100000".to_owned()),
        ("RATE_LIMIT_BURST", "100000".to_owned()),
        ("TENANT_MAX_IN_FLIGHT", "100000".to_owned()),
        // Credentials are checked with the directory on most requests, so that the kills are felt
        // there too.
        ("AUTH_CACHE_TTL_SECS", "1".to_owned()),
        // `verify` counts emails one ack wait after the load's start: 65 s with this timeout.
        ("SMTP_TIMEOUT_SECS", "5".to_owned()),
    ])
    .await;
    // The load deactivates about a sixth of its users, at times more than the brake's 20%: held
    // deactivations would be refused (429) until an operator acts, which is not this test's point.
    stack.update_tenant(&TenantUpdate { brake_min_users: Some(1_000_000), ..Default::default() }).await;
    let run = format!("t{}", &Uuid::new_v4().simple().to_string()[..8]);
    // 16 workers: many calls are in flight (some half answered) at each kill.
    let load = Load::start(&stack, &run, 16);
    let gateway = stack.gateway_addr;
    for _ in 0..5 {
        load.progress(40).await;
        let felt = load.ledger.failures.lock().unwrap().len();
        stack.directory.kill().await;
        poll_for(Duration::from_secs(30), "the load to feel the kill", || async {
            (load.ledger.failures.lock().unwrap().len() > felt).then_some(())
        })
        .await;
        // Meanwhile, a client other than Okta is answered 503 with Retry-After.
        let r = other("GET", &format!("http://{gateway}/scim/v2/Users?count=1"), &stack.auth(), None).await;
        assert_eq!(refused(&r, 503), 5, "while the directory is down");
        stack.respawn(Which::Directory);
    }
    load.progress(40).await;
    let ledger = load.finish().await;
    let failures = ledger.failures.lock().unwrap().clone();
    assert!(!failures.is_empty(), "the kills were felt by the client");
    let requests = ledger.requests.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{requests} requests, {} refused for now and retried", failures.len());
    for f in &failures {
        assert_eq!(f.status, Some(429), "of {requests} requests, one was answered other than 429: {f:?}");
        let secs = f.retry_after.as_deref().and_then(|s| s.parse::<u64>().ok());
        assert!(secs.is_some_and(|s| s >= 1), "an integer Retry-After: {f:?}");
        assert_eq!(f.body["schemas"], json!([ERROR]), "a SCIM error: {f:?}");
        assert_eq!(f.body["status"], "429", "{f:?}");
    }
    // Every request was retried until it succeeded (the load asserts each final answer), and the
    // directory holds exactly what was acknowledged, each change once.
    verify(&stack, &run, &ledger, Resends::None).await;
}
