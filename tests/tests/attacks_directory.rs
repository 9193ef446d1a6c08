//! Attacks from inside the deployment on user-directory's gRPC port and on the console's operator
//! sign-in (issue 24). Each test is what an attacker with a foothold in the cluster would try;
//! each failed before the directory required its callers' token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::console::ConsoleClient;
use e2e::pki::{Issued, Pki};
use e2e::{OPERATOR_TOKEN, TestStack, poll};
use proto::directory::v1::directory_client::DirectoryClient;
use proto::directory::v1::*;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use user_directory::store::{SessionLimits, SessionOwner};

async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

/// `message` with `authorization: Bearer <token>`, or without any when `token` is `None`.
fn call<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// What the attacker could have written or read: rows of every table a `Directory` method writes.
async fn footprint(stack: &TestStack) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for table in
        ["api_keys", "console_sessions", "users", "groups", "request_log", "assignments", "held_changes", "outbox"]
    {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&stack.directory_db)
            .await
            .unwrap();
        out.push((table.to_owned(), n));
    }
    let keys: Vec<(Option<time::OffsetDateTime>, Option<time::OffsetDateTime>)> =
        sqlx::query_as("SELECT revoked_at, last_used_at FROM api_keys ORDER BY id")
            .fetch_all(&stack.directory_db)
            .await
            .unwrap();
    out.push((
        "api_keys revoked or used".to_owned(),
        keys.iter().filter(|(r, u)| r.is_some() || u.is_some()).count() as i64,
    ));
    out
}

/// A call's status code.
fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    match r {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

/// Calls every method of `Directory` with what an attacker would send (the tenant's real id and
/// key, an operator session, a key for itself); returns each method's status code.
async fn every_method(
    client: &mut DirectoryClient<Channel>,
    token: Option<&str>,
    tenant_id: &str,
    api_key: &str,
) -> Vec<(&'static str, tonic::Code)> {
    let t = || tenant_id.to_owned();
    let user = br#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"mallory@evil.test"}"#.to_vec();
    vec![
        ("Ping", code(client.ping(call(PingRequest {}, token)).await)),
        (
            "Authenticate",
            code(
                client
                    .authenticate(call(
                        AuthenticateRequest { api_key: api_key.to_owned(), subdomain: Some("acme".into()) },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "CreateResource",
            code(
                client
                    .create_resource(call(
                        CreateResourceRequest {
                            tenant_id: t(),
                            r#type: ResourceType::User as i32,
                            document: user.clone().into(),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "GetResource",
            code(
                client
                    .get_resource(call(
                        GetResourceRequest { tenant_id: t(), r#type: ResourceType::User as i32, ..Default::default() },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "ListResources",
            code(
                client
                    .list_resources(call(
                        ListResourcesRequest {
                            tenant_id: t(),
                            r#type: ResourceType::User as i32,
                            ..Default::default()
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "ReplaceResource",
            code(
                client
                    .replace_resource(call(
                        ReplaceResourceRequest {
                            tenant_id: t(),
                            r#type: ResourceType::User as i32,
                            document: user.clone().into(),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "PatchResource",
            code(
                client
                    .patch_resource(call(
                        PatchResourceRequest {
                            tenant_id: t(),
                            r#type: ResourceType::User as i32,
                            ..Default::default()
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "DeleteResource",
            code(
                client
                    .delete_resource(call(
                        DeleteResourceRequest {
                            tenant_id: t(),
                            r#type: ResourceType::User as i32,
                            ..Default::default()
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "ListUnlinkedUsers",
            code(client.list_unlinked_users(call(ListUnlinkedUsersRequest { tenant_id: t() }, token)).await),
        ),
        (
            "CreateAssignment",
            code(
                client
                    .create_assignment(call(CreateAssignmentRequest { tenant_id: t(), ..Default::default() }, token))
                    .await,
            ),
        ),
        (
            "GetAssignment",
            code(
                client.get_assignment(call(GetAssignmentRequest { tenant_id: t(), ..Default::default() }, token)).await,
            ),
        ),
        (
            "RecordRequests",
            code(
                client
                    .record_requests(call(
                        RecordRequestsRequest {
                            records: vec![RequestRecord {
                                id: uuid::Uuid::now_v7().to_string(),
                                tenant_id: t(),
                                method: "POST".into(),
                                path: "/scim/v2/Users".into(),
                                status: 201,
                                ..Default::default()
                            }],
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "ListRequests",
            code(client.list_requests(call(ListRequestsRequest { tenant_id: t(), ..Default::default() }, token)).await),
        ),
        (
            "GetRequest",
            code(client.get_request(call(GetRequestRequest { tenant_id: t(), ..Default::default() }, token)).await),
        ),
        (
            "CreateSession",
            code(
                client
                    .create_session(call(
                        CreateSessionRequest {
                            subdomain: "acme".into(),
                            operator: true,
                            idle_secs: 1800,
                            ..Default::default()
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "GetSession",
            code(client.get_session(call(SessionRef { session_id: "0".repeat(64), idle_secs: 1800 }, token)).await),
        ),
        (
            "EndSession",
            code(client.end_session(call(SessionRef { session_id: "0".repeat(64), idle_secs: 0 }, token)).await),
        ),
        ("ListTenantKeys", code(client.list_tenant_keys(call(TenantScope { tenant_id: t() }, token)).await)),
        (
            "IssueTenantKey",
            code(
                client
                    .issue_tenant_key(call(
                        IssueTenantKeyRequest {
                            tenant_id: t(),
                            name: "mallory".into(),
                            scopes: vec!["scim".into(), "admin".into()],
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "RevokeTenantKey",
            code(
                client
                    .revoke_tenant_key(call(
                        RevokeTenantKeyRequest { tenant_id: t(), key_id: uuid::Uuid::nil().to_string() },
                        token,
                    ))
                    .await,
            ),
        ),
        ("ListTenantHeld", code(client.list_tenant_held(call(TenantScope { tenant_id: t() }, token)).await)),
        (
            "ResolveTenantHeld",
            code(
                client
                    .resolve_tenant_held(call(
                        ResolveTenantHeldRequest { tenant_id: t(), release: true, ids: vec![] },
                        token,
                    ))
                    .await,
            ),
        ),
        ("TenantActivity", code(client.tenant_activity(call(TenantScope { tenant_id: t() }, token)).await)),
        (
            "SetUserRole",
            code(
                client
                    .set_user_role(call(
                        SetUserRoleRequest { tenant_id: t(), role: "admin".into(), ..Default::default() },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "ReportLearners",
            code(
                client
                    .report_learners(call(ReportLearnersRequest { tenant_id: t(), ..Default::default() }, token))
                    .await,
            ),
        ),
        (
            "CountLearners",
            code(
                client.count_learners(call(CountLearnersRequest { tenant_id: t(), ..Default::default() }, token)).await,
            ),
        ),
        (
            "EraseUser",
            code(
                client
                    .erase_user(call(
                        EraseUserRequest { tenant_id: t(), erased_by: "mallory".into(), ..Default::default() },
                        token,
                    ))
                    .await,
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_directory_method_refuses_a_caller_without_the_token_before_reading_or_writing_anything() {
    let stack = TestStack::start_with("1s", false).await;
    // Traffic of the tenant's own, so that there is something to read and to damage.
    assert_eq!(stack.okta().post("/Users", e2e::okta_user("alice@acme.test")).await.status, 201);
    let tenant_id = stack.store().tenant_by_subdomain("acme").await.unwrap().id.to_string();
    let mut client = DirectoryClient::new(channel(stack.directory_addr).await);
    poll("the create to be in the request log", || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM request_log").fetch_one(&stack.directory_db).await.unwrap();
        (n == 1).then_some(())
    })
    .await;
    let before = footprint(&stack).await;

    for (who, token) in [
        ("no token", None),
        ("a wrong token", Some("x".repeat(64))),
        ("the admin token", Some(e2e::ADMIN_TOKEN.to_owned())),
    ] {
        let codes = every_method(&mut client, token.as_deref(), &tenant_id, &stack.api_key).await;
        let mut tried: Vec<&str> = codes.iter().map(|(m, _)| *m).collect();
        tried.sort_unstable();
        assert_eq!(tried, directory_methods(), "every method of Directory is tried");
        for (method, code) in codes {
            assert_eq!(code, tonic::Code::Unauthenticated, "{method} with {who}");
        }
    }
    assert_eq!(footprint(&stack).await, before, "nothing was written, no key was used or revoked");

    // The same calls with the gateway's token are served: the refusals above were the token's.
    let served = every_method(&mut client, Some(&stack.directory_token), &tenant_id, &stack.api_key).await;
    let authenticate = served.iter().find(|(m, _)| *m == "Authenticate").unwrap().1;
    assert_eq!(authenticate, tonic::Code::Ok, "the key authenticates for the gateway");
    let issued = served.iter().find(|(m, _)| *m == "IssueTenantKey").unwrap().1;
    assert_eq!(issued, tonic::Code::Ok, "the gateway (for a signed-in admin) may issue keys");
    // Only the session calls, which check credentials of their own (an operator token, a live
    // session), still say Unauthenticated.
    for (method, code) in &served {
        if !["CreateSession", "GetSession"].contains(method) {
            assert_ne!(*code, tonic::Code::Unauthenticated, "{method} with the gateway's token");
        }
    }
    stack.stop().await;
}

/// A codec that sends bytes as they are: a body that is no protobuf message at all.
#[derive(Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf as _;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_call(addr: SocketAddr, token: Option<&str>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel(addr).await);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/directory.v1.Directory/CreateResource");
    // Not a protobuf message: a field of wire type 7, which does not exist.
    grpc.unary(call(vec![0xff, 0xff, 0xff, 0xff], token), path, Raw).await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_checked_before_the_body_is_decoded() {
    let stack = TestStack::start_with("1s", false).await;
    // With the token, the garbage body reaches the decoder, which refuses it.
    let decoded = raw_call(stack.directory_addr, Some(&stack.directory_token)).await;
    assert_ne!(decoded.code(), tonic::Code::Unauthenticated, "{decoded:?}");
    assert!(decoded.message().to_lowercase().contains("decode"), "the decoder refused it: {decoded:?}");
    // Without it, the call is refused before the decoder sees a byte.
    let refused = raw_call(stack.directory_addr, None).await;
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_service_has_a_port_of_its_own_and_the_directory_port_does_not_serve_it() {
    use proto::directory::v1::admin_client::AdminClient;
    let stack = TestStack::start_with("1s", false).await;
    let on_directory_port = AdminClient::new(channel(stack.directory_addr).await)
        .issue_key(call(IssueKeyRequest { subdomain: "acme".into(), ..Default::default() }, Some(e2e::ADMIN_TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(on_directory_port.code(), tonic::Code::Unimplemented, "Admin is not served on the callers' port");
    let mut admin = AdminClient::new(channel(stack.admin_addr).await);
    for token in [None, Some(stack.directory_token.as_str())] {
        let refused =
            admin.issue_key(call(IssueKeyRequest { subdomain: "acme".into(), ..Default::default() }, token)).await;
        assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated, "the gateway's token is not the admin's");
    }
    let issued = admin
        .issue_key(call(IssueKeyRequest { subdomain: "acme".into(), ..Default::default() }, Some(e2e::ADMIN_TOKEN)))
        .await;
    assert!(issued.is_ok(), "{issued:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_without_a_token_or_with_short_tokens_refuses_to_start() {
    let stack = TestStack::start_with("1s", false).await;
    let config = || e2e::directory_config(&stack.directory_database, &stack.nats_args, &stack.directory_token);
    let refused = |mut c: user_directory::Config, what: &'static str| async move {
        c.listen = "127.0.0.1:0".parse().unwrap();
        match user_directory::Application::build(c).await {
            Ok(_) => panic!("a directory with {what} started"),
            Err(e) => format!("{e:#}"),
        }
    };
    let mut c = config();
    c.token = None;
    assert!(refused(c, "no DIRECTORY_TOKEN").await.contains("DIRECTORY_TOKEN is not set"));
    let mut c = config();
    c.token = Some("short".to_owned().into());
    assert!(refused(c, "a short DIRECTORY_TOKEN").await.contains("DIRECTORY_TOKEN is 5 bytes long"));
    let mut c = config();
    c.admin_token = Some("0123456789abcdef0123456789abcde".to_owned().into());
    assert!(refused(c, "a short admin token").await.contains("DIRECTORY_ADMIN_TOKEN is 31 bytes long"));
    let mut c = config();
    c.operator_token = Some("operator".to_owned().into());
    assert!(refused(c, "a short operator token").await.contains("CONSOLE_OPERATOR_TOKEN is 8 bytes long"));
    let mut c = config();
    c.admin_token = None;
    assert!(refused(c, "an Admin port without its token").await.contains("DIRECTORY_ADMIN_TOKEN is not"));

    // DIRECTORY_INSECURE=true is the way to run without one, and then anyone is served.
    let mut c = config();
    c.token = None;
    c.insecure = true;
    c.admin_listen = None;
    let insecure = user_directory::Application::build(c).await.expect("an insecure directory starts");
    let addr = insecure.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(insecure.run_until(stop.clone().cancelled_owned()));
    let answered = DirectoryClient::new(channel(addr).await)
        .authenticate(AuthenticateRequest { api_key: stack.api_key.clone(), subdomain: Some("acme".into()) })
        .await;
    assert!(answered.is_ok(), "{answered:?}");
    stop.cancel();
    serving.await.unwrap().unwrap();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_session_cannot_be_forged_even_with_the_gateways_token() {
    let stack = TestStack::start_with("1s", false).await;
    let mut client = DirectoryClient::new(channel(stack.directory_addr).await);
    let token = Some(stack.directory_token.as_str());
    // A compromised gateway (it has the directory token) asks for an operator session for a
    // tenant, without the operator token, or with a wrong one, or with a key's session flag.
    let forged = [
        CreateSessionRequest { subdomain: "acme".into(), operator: true, idle_secs: 1800, ..Default::default() },
        CreateSessionRequest {
            subdomain: "acme".into(),
            operator: true,
            idle_secs: 1800,
            operator_token: Some("test-operator-token-of-32-bytes?".into()),
            ..Default::default()
        },
        CreateSessionRequest {
            subdomain: "acme".into(),
            operator: true,
            idle_secs: 1800,
            operator_token: Some(String::new()),
            ..Default::default()
        },
    ];
    for request in forged {
        let refused = client.create_session(call(request.clone(), token)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{request:?}");
    }
    let sessions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM console_sessions").fetch_one(&stack.directory_db).await.unwrap();
    assert_eq!(sessions, 0, "no session was made");
    // With the operator token, it is one.
    let real = client
        .create_session(call(
            CreateSessionRequest {
                subdomain: "acme".into(),
                operator: true,
                idle_secs: 1800,
                operator_token: Some(OPERATOR_TOKEN.into()),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(real.session.unwrap().operator);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_operator_token_ends_the_sessions_it_opened() {
    let mut stack = TestStack::start_with("1s", false).await;
    let console = ConsoleClient::new(stack.gateway_addr);
    assert_eq!(console.sign_in_operator("acme", OPERATOR_TOKEN).await.status, 303);
    assert_eq!(console.get("/console/health").await.status, 200, "signed in with the current token");
    let session = console.cookie("console").unwrap();

    // The token is rotated: a directory and a gateway started with the new one (as a rollout
    // restarts them), on the same database.
    const ROTATED: &str = "the-rotated-operator-token-32-b!";
    let mut config = e2e::directory_config(&stack.directory_database, &stack.nats_args, &stack.directory_token);
    config.operator_token = Some(ROTATED.to_owned().into());
    config.admin_listen = None;
    let directory = stack.start_directory(config).await;
    let mut gateway_config = stack.gateway_config.clone();
    gateway_config.directory_url = format!("http://{directory}");
    gateway_config.console_operator_token = Some(ROTATED.to_owned().into());
    let gateway = stack.start_gateway(gateway_config).await;

    let after = ConsoleClient::new(gateway);
    after.set_cookie("console", &session);
    assert_eq!(after.get("/console/health").await.location(), Some("/console/signin"), "the old token's session ended");
    assert_eq!(after.sign_in_operator("acme", OPERATOR_TOKEN).await.status, 401, "the old token opens nothing");
    let fresh = ConsoleClient::new(gateway);
    assert_eq!(fresh.sign_in_operator("acme", ROTATED).await.status, 303);
    assert_eq!(fresh.get("/console/health").await.status, 200, "the new token opens a session");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_ends_at_its_absolute_lifetime_however_active() {
    let stack = TestStack::start_with("1s", false).await;
    let admin = stack.store().issue_key("acme", "console", None, &["admin".to_owned()]).await.unwrap().key;
    let limits = SessionLimits {
        idle: Duration::from_secs(1800),
        max_lifetime: Duration::from_secs(2),
        operator_generation: None,
    };
    let opened = Instant::now();
    let (id, _) = stack.store().create_session("acme", SessionOwner::Admin { api_key: &admin }, &limits).await.unwrap();
    // Used continuously (every 100 ms, far within the idle time), it still ends.
    poll("the session to end", || async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stack.store().session(&id, &limits).await.is_err().then_some(())
    })
    .await;
    let lived = opened.elapsed();
    assert!(lived >= Duration::from_secs(2), "it lived its lifetime: {lived:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sign_in_failures_spend_a_global_budget_whatever_the_address() {
    let mut stack = TestStack::start_with("1s", false).await;
    let mut config = stack.gateway_config.clone();
    config.trust_forwarded_for = true;
    config.console_operator_failures_per_minute = 3;
    let gateway = stack.start_gateway(config).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // Each attempt from an address and for a subdomain of its own: no per-address or
    // per-subdomain budget is ever spent past its first failure.
    let attempt = |i: u32, token: &'static str| {
        let http = http.clone();
        async move {
            let console = ConsoleClient::new(gateway);
            let form = console.get("/console/signin").await;
            let signin = form.field("_signin").unwrap();
            let cookie = format!("{}={signin}", cookie_name(&form));
            let body = serde_urlencoded::to_string([
                ("_signin", signin.as_str()),
                ("subdomain", if i == 99 { "acme".to_owned() } else { format!("nosuch{i}") }.as_str()),
                ("operator_token", token),
            ])
            .unwrap();
            http.post(format!("http://{gateway}/console/signin"))
                .header("x-forwarded-for", format!("203.0.113.{i}"))
                .header("cookie", cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Three failures are the budget; the fourth goes over it.
    for i in 1..=4 {
        assert_eq!(attempt(i, "guess-guess-guess-guess-guess-guess").await, 401, "attempt {i}");
    }
    // The budget is spent: even the right token, from a fresh address, is refused for now.
    assert_eq!(attempt(99, OPERATOR_TOKEN).await, 429);
    // An admin's sign-in is not an operator's: it is not refused.
    let admin = stack.store().issue_key("acme", "console", None, &["admin".to_owned()]).await.unwrap().key;
    assert_eq!(ConsoleClient::new(gateway).sign_in("acme", &admin).await.status, 303);
    stack.stop().await;
}

/// The name of the sign-in form's cookie, as the page set it.
fn cookie_name(page: &e2e::console::Page) -> String {
    let set = page.headers.get("set-cookie").unwrap().to_str().unwrap();
    set.split_once('=').unwrap().0.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_the_wrong_token_is_not_ready_and_serves_nothing() {
    let mut stack = TestStack::start_with("1s", false).await;
    let mut config = stack.gateway_config.clone();
    config.directory_token = Some("w".repeat(40).into());
    let gateway = stack.start_gateway_unready(config).await;
    let ready = reqwest::get(format!("http://{gateway}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("token"));
    // Not the client's failure: a transient refusal Okta retries (as during a token rotation),
    // never a 401 that would make Okta's admin think the key is wrong, nor a 500.
    let okta = stack.okta_at(gateway, &stack.auth());
    let refused = okta.get("/Users?count=1").await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert!(refused.headers.get("retry-after").unwrap().to_str().unwrap().parse::<u32>().is_ok());
    // The stack's own gateway, with the right token, is ready.
    let ok = reqwest::get(format!("http://{}/readyz", stack.gateway_addr)).await.unwrap();
    assert_eq!(ok.status(), 200);
    stack.stop().await;
}

/// Connects to `url` with `tls` and calls Authenticate with `key`: what a caller gets.
async fn authenticate_over(
    url: String,
    tls: Option<tonic::transport::ClientTlsConfig>,
    key: &str,
) -> Result<AuthenticateResponse, String> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url).unwrap().connect_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let channel = endpoint.connect().await.map_err(|e| format!("connect: {e:?}"))?;
    DirectoryClient::new(channel)
        .authenticate(AuthenticateRequest { api_key: key.to_owned(), subdomain: Some("acme".into()) })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("call: {s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_only_callers_holding_a_certificate_of_our_ca_are_served() {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut stack = TestStack::start_with("1s", false).await;
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let server = pki.issue(&ca, "directory");
    let gateway_cert = pki.issue(&ca, "gateway");
    let rogue_ca = pki.ca("rogue-ca");
    let rogue = pki.issue(&rogue_ca, "rogue");

    // A directory with mutual TLS and no token: the certificate is the caller's credential.
    let mut config = e2e::directory_config(&stack.directory_database, &stack.nats_args, &stack.directory_token);
    config.token = None;
    config.admin_listen = None;
    config.tls_cert = Some(server.cert.clone());
    config.tls_key = Some(server.key.clone());
    config.tls_client_ca = Some(pki.path("ca.pem"));
    config.health_listen = Some("127.0.0.1:0".parse().unwrap());
    let directory = user_directory::Application::build(config).await.expect("a directory with mutual TLS starts");
    let (addr, health) = (directory.local_addr().unwrap(), directory.health_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(directory.run_until(stop.clone().cancelled_owned()));

    // A gateway with its certificate provisions as usual.
    let mut gateway_config = stack.gateway_config.clone();
    gateway_config.directory_url = format!("https://localhost:{}", addr.port());
    gateway_config.directory_token = None;
    gateway_config.directory_tls_ca = Some(pki.path("ca.pem"));
    gateway_config.directory_tls_cert = Some(gateway_cert.cert.clone());
    gateway_config.directory_tls_key = Some(gateway_cert.key.clone());
    let gateway = stack.start_gateway(gateway_config).await;
    let okta = stack.okta_at(gateway, &stack.auth());
    let created = okta.post("/Users", e2e::okta_user("tls@acme.test")).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(okta.get(&format!("/Users/{id}")).await.status, 200);

    let url = format!("https://localhost:{}", addr.port());
    let ca_pem = std::fs::read(pki.path("ca.pem")).unwrap();
    let trusting = || ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem));
    let identity = |i: &Issued| Identity::from_pem(std::fs::read(&i.cert).unwrap(), std::fs::read(&i.key).unwrap());
    // The attacks: plain text, TLS without a certificate, a certificate of another CA.
    let plain = authenticate_over(format!("http://127.0.0.1:{}", addr.port()), None, &stack.api_key).await;
    assert!(plain.is_err(), "plain text is refused: {plain:?}");
    let anonymous = authenticate_over(url.clone(), Some(trusting()), &stack.api_key).await;
    assert!(anonymous.is_err(), "TLS without a client certificate is refused: {anonymous:?}");
    let forged = authenticate_over(url.clone(), Some(trusting().identity(identity(&rogue))), &stack.api_key).await;
    assert!(forged.is_err(), "a certificate of another CA is refused: {forged:?}");
    // With a certificate of ours, the same call is answered.
    let ours = authenticate_over(url, Some(trusting().identity(identity(&gateway_cert))), &stack.api_key).await;
    assert_eq!(ours.unwrap().subdomain, "acme");

    // The kubelet's probe reads health on a plain port that serves nothing else.
    let mut probe = tonic_health_client(health).await;
    let status = probe
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving);
    let on_health_port = authenticate_over(format!("http://{health}"), None, &stack.api_key).await.unwrap_err();
    assert!(on_health_port.contains("Unimplemented"), "Directory is not served on the health port: {on_health_port}");

    stop.cancel();
    serving.await.unwrap().unwrap();
    stack.stop().await;
}

async fn tonic_health_client(addr: SocketAddr) -> tonic_health::pb::health_client::HealthClient<Channel> {
    tonic_health::pb::health_client::HealthClient::new(channel(addr).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notification_services_tenant_figures_answer_only_the_gateways_token() {
    let stack = TestStack::start().await;
    let tenant_id = stack.store().tenant_by_subdomain("acme").await.unwrap().id;
    let base = stack.gateway_config.notification_url.clone();
    let http = reqwest::Client::new();
    poll("the notification service's health port", || async {
        http.get(format!("{base}/healthz")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;
    let url = format!("{base}/internal/v1/tenants/{tenant_id}/emails");
    let status = |token: Option<String>| {
        let request = http.get(&url);
        let request = match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(None).await, 401, "no token");
    assert_eq!(status(Some("x".repeat(64))).await, 401, "a wrong token");
    assert_eq!(status(Some(stack.directory_token.clone())).await, 401, "the directory's token is not this one");
    use secrecy::ExposeSecret as _;
    let token = stack.gateway_config.notification_token.as_ref().unwrap().expose_secret().to_owned();
    assert_eq!(status(Some(token)).await, 200, "the gateway's token reads the figures");
    stack.stop().await;
}

/// The methods of the `Directory` service, as its proto file declares them.
fn directory_methods() -> Vec<&'static str> {
    let proto = include_str!("../../proto/proto/directory/v1/directory.proto");
    let service = proto.split("service Directory {").nth(1).and_then(|s| s.split("\n}").next()).unwrap();
    let mut methods: Vec<&str> =
        service.lines().filter_map(|l| l.trim().strip_prefix("rpc ")).filter_map(|l| l.split('(').next()).collect();
    methods.sort_unstable();
    methods
}
