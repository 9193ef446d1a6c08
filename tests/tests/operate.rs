//! Operating the services as deployed: each service's binary in its own process, configured by
//! the environment. One trace follows a create through all three services to the SMTP send, the
//! metrics arrive over OTLP, the logs name the trace; and a gateway sent SIGTERM under load
//! drains without failing one request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use e2e::otlp::{OtlpReceiver, ReceivedSpan};
use e2e::processes::{ProcessStack, Service, free_addr};
use e2e::{TestStack, poll};
use serde_json::json;

/// The spans of the trace whose gateway span has this route, once they include every `wanted`
/// (service, span name).
async fn trace_with(otlp: &OtlpReceiver, route: &str, wanted: &[(&str, &str)]) -> Vec<ReceivedSpan> {
    poll(&format!("one trace from the gateway's {route} through {wanted:?}"), || async {
        let spans = otlp.spans();
        let roots = spans.iter().filter(|s| s.service == "scim-gateway" && s.attribute("http.route") == Some(route));
        for root in roots {
            let trace: Vec<ReceivedSpan> = spans.iter().filter(|s| s.trace_id == root.trace_id).cloned().collect();
            if wanted.iter().all(|(service, name)| trace.iter().any(|s| s.service == *service && s.name == *name)) {
                return Some(trace);
            }
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_the_three_services_and_the_metrics_arrive() {
    let otlp = OtlpReceiver::start().await;
    let stack = ProcessStack::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ])
    .await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", stack.gateway_addr);

    // Okta creates a user (silently), and the customer's admin creates one (a welcome email).
    let created = http
        .post(format!("{base}/scim/v2/Users"))
        .header("Authorization", stack.auth())
        .header("Content-Type", "application/scim+json")
        .body(
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "traced@acme.com",
                "name": {"givenName": "Tracy", "familyName": "Traced"},
                "emails": [{"primary": true, "value": "traced@acme.com", "type": "work"}],
                "active": true
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let admin = http
        .post(format!("{base}/api/v1/users"))
        .header("Authorization", stack.auth())
        .json(&json!({"userName": "welcomed@acme.com", "givenName": "Wendy", "familyName": "Welcomed", "email": "welcomed@acme.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 201);

    // The SCIM create: gateway -> user-directory (gRPC) -> relay -> NATS -> notification.
    let scim = trace_with(
        &otlp,
        "/scim/v2/Users",
        &[
            ("scim-gateway", "POST /scim/v2/Users"),
            ("user-directory", "directory/CreateResource"),
            ("user-directory", "relay.publish"),
            ("notification", "event.process"),
        ],
    )
    .await;
    let root = scim.iter().find(|s| s.service == "scim-gateway").unwrap();
    assert_eq!(root.attribute("tenant"), Some("acme"));
    assert_eq!(root.attribute("http.response.status_code"), Some("201"));
    assert!(root.parent_span_id.is_empty(), "the request starts the trace");
    // Each hop is the child of the one before it.
    let parent_of = |name: &str| {
        let span = scim.iter().find(|s| s.name == name).unwrap();
        scim.iter().find(|s| s.span_id == span.parent_span_id).map(|p| p.name.clone())
    };
    assert_eq!(parent_of("directory/CreateResource").as_deref(), Some("POST /scim/v2/Users"));
    assert_eq!(parent_of("relay.publish").as_deref(), Some("directory/CreateResource"));
    assert_eq!(parent_of("event.process").as_deref(), Some("relay.publish"));
    let consumed = scim.iter().find(|s| s.name == "event.process").unwrap();
    let event_id = consumed.attribute("event_id").unwrap();
    assert_eq!(scim.iter().find(|s| s.name == "relay.publish").unwrap().attribute("event_id"), Some(event_id));

    // The admin's create reaches the SMTP server in the same trace.
    let welcome = trace_with(
        &otlp,
        "/api/v1/users",
        &[("user-directory", "relay.publish"), ("notification", "event.process"), ("notification", "smtp.send")],
    )
    .await;
    let trace_id = &welcome[0].trace_id;
    // The notification's JSON log lines inside that trace name it.
    let log = poll("the notification's log to name the trace", || async {
        let log = stack.notification.log_text();
        log.contains(&format!("\"trace_id\":\"{trace_id}\"")).then_some(log)
    })
    .await;
    assert!(log.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "JSON lines only");

    // No personal data in any span: no email address, no name.
    for span in otlp.spans() {
        for (k, v) in &span.attributes {
            assert!(!v.contains('@') && !v.contains("Tracy") && !v.contains("Wendy"), "{} {k}={v}", span.name);
        }
    }

    // The metrics arrive, each from the service that keeps it.
    let wanted = [
        ("scim-gateway", "http.server.request.duration"),
        ("user-directory", "rpc.server.call.duration"),
        ("user-directory", "relay.published"),
        ("user-directory", "outbox.backlog"),
        ("user-directory", "outbox.oldest_age"),
        ("user-directory", "db.client.connection.count"),
        ("notification", "db.client.connection.count"),
        ("notification", "emails"),
        ("notification", "consumer.pending"),
    ];
    poll("the metrics", || async {
        let got: BTreeSet<(String, String)> = otlp.metrics().into_iter().map(|m| (m.service, m.name)).collect();
        wanted.iter().all(|(s, n)| got.contains(&((*s).to_owned(), (*n).to_owned()))).then_some(())
    })
    .await;
}

/// A client-side balancer over gateway instances, as a Kubernetes Service does it: it sends only
/// to instances whose `/readyz` answered 200 at its last look (every 50 ms), and retries nothing.
struct Balancer {
    urls: Vec<String>,
    ready: Vec<AtomicBool>,
    next: AtomicUsize,
}

impl Balancer {
    fn pick(&self) -> Option<usize> {
        (0..self.urls.len())
            .map(|_| self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len())
            .find(|i| self.ready[*i].load(Ordering::SeqCst))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_sent_sigterm_under_load_fails_no_request() {
    let stack = TestStack::start_with("1s", false).await;
    let dir = std::env::temp_dir();
    let mut gateways: Vec<Service> = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let addr = free_addr();
        let env: Vec<(String, String)> = [
            ("GATEWAY_LISTEN", addr.to_string()),
            ("DIRECTORY_URL", format!("http://{}", stack.directory_addr)),
            ("DIRECTORY_TOKEN", stack.directory_token.clone()),
            ("NATS_URL", stack.nats_args.nats_url.clone()),
            ("NATS_STREAM", stack.nats_args.nats_stream.clone()),
            ("NATS_SUBJECT_PREFIX", stack.nats_args.nats_subject_prefix.clone()),
            ("SHUTDOWN_DELAY_SECS", "2".to_owned()),
            ("RATE_LIMIT_PER_SECOND", "100000".to_owned()),
            ("RATE_LIMIT_BURST", "100000".to_owned()),
            ("TENANT_MAX_IN_FLIGHT", "100000".to_owned()),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
        gateways.push(Service::start("scim-gateway", &env, &dir));
        urls.push(format!("http://{addr}"));
    }
    let balancer = Arc::new(Balancer {
        ready: urls.iter().map(|_| AtomicBool::new(false)).collect(),
        urls,
        next: AtomicUsize::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let probe = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let watcher = {
        let (balancer, stop) = (balancer.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                for (i, url) in balancer.urls.iter().enumerate() {
                    let ok = probe.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status().is_success());
                    balancer.ready[i].store(ok, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    poll("both gateways to be ready", || async {
        balancer.ready.iter().all(|r| r.load(Ordering::SeqCst)).then_some(())
    })
    .await;

    // Eight clients, creating and reading users as fast as they can.
    let served: Arc<Vec<AtomicUsize>> = Arc::new((0..2).map(|_| AtomicUsize::new(0)).collect());
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let auth = stack.auth();
    let http = reqwest::Client::new();
    let mut clients = Vec::new();
    for c in 0..8 {
        let (balancer, stop, served, failures, auth, http) =
            (balancer.clone(), stop.clone(), served.clone(), failures.clone(), auth.clone(), http.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let Some(i) = balancer.pick() else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                n += 1;
                let request = if n % 2 == 0 {
                    http.get(format!("{}/scim/v2/Users?count=1", balancer.urls[i]))
                } else {
                    let name = format!("drain{c}-{n}@acme.com");
                    http.post(format!("{}/scim/v2/Users", balancer.urls[i])).header("Content-Type", "application/scim+json").body(
                        json!({"userName": name, "name": {"givenName": "D", "familyName": "R"}, "emails": [{"value": name, "primary": true}]})
                            .to_string(),
                    )
                };
                match request.header("Authorization", &auth).send().await {
                    Ok(r) if r.status().is_success() => {
                        served[i].fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.lock().unwrap().push(format!("instance {i}: status {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("instance {i}: {e}")),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = served[0].load(Ordering::SeqCst);
    assert!(before > 0, "the first gateway served nothing before SIGTERM");
    gateways[0].terminate();
    let exited = tokio::time::timeout(Duration::from_secs(20), gateways[0].wait()).await;
    let after_exit = served[1].load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    watcher.await.unwrap();
    assert_eq!(exited.ok(), Some(true), "the gateway exited cleanly after draining");
    assert!(served[1].load(Ordering::SeqCst) > after_exit, "the other gateway kept serving");
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{} failed requests: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    let log = gateways[0].log_text();
    assert!(log.contains("draining: unready, still serving"), "{log}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_false_while_the_database_is_unreachable_and_comes_back_by_itself() {
    let stack = TestStack::start_with("1s", false).await;
    let http = reqwest::Client::new();
    let readyz = format!("http://{}/readyz", stack.gateway_addr);
    let status = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    assert_eq!(status(readyz.clone()).await, 200);
    // The directory's database refuses connections, and its open ones are cut.
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&stack.directory_db).await.unwrap();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&e2e::admin_database_url()).await.unwrap();
    let cut = |allow: bool| format!("ALTER DATABASE \"{db}\" WITH ALLOW_CONNECTIONS {allow}");
    sqlx::query(sqlx::AssertSqlSafe(cut(false))).execute(&mut admin).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&db)
    .execute(&mut admin)
    .await
    .unwrap();
    poll("the gateway to report itself unready", || async { (status(readyz.clone()).await == 503).then_some(()) })
        .await;
    // Requests meanwhile are a SCIM 429 to Okta (503 to others) with Retry-After, never a hang
    // or a 500.
    let okta = stack.okta();
    let during = okta.get("/Users?count=1").await;
    assert_eq!(during.status, 429, "{:?}", during.body);
    assert!(during.headers.contains_key("retry-after"));
    assert_eq!(during.body["status"], "429");
    // Back: ready again, and serving, without a restart.
    sqlx::query(sqlx::AssertSqlSafe(cut(true))).execute(&mut admin).await.unwrap();
    poll("the gateway to report itself ready again", || async { (status(readyz.clone()).await == 200).then_some(()) })
        .await;
    poll("requests to succeed again", || async { (okta.get("/Users?count=1").await.status == 200).then_some(()) })
        .await;
    stack.stop().await;
}
