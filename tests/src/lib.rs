//! The end-to-end harness: [`TestStack`] starts user-directory, scim-gateway and notification
//! in-process (through the same `Application::build` / `run_until` their `main`s use) against the
//! real PostgreSQL and NATS JetStream, each test with databases and a stream of its own, so that
//! tests run in parallel and repeatedly without colliding. [`runscope`] replays Okta's Runscope
//! test suites against it.
//!
//! `TEST_DATABASE_URL` (an admin connection, default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and `TEST_NATS_URL` (default `nats://127.0.0.1:4222`) say where the servers are.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cluster;
pub mod console;
pub mod faults;
pub mod load;
pub mod noisy;
pub mod otlp;
pub mod pki;
pub mod processes;
pub mod runscope;
pub mod smtp;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use base64::Engine;
use prost::Message;
use proto::events::v1::Envelope;
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The admin connection URL of the test PostgreSQL server.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The test NATS server.
pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// The URL of a database on the test server.
pub fn database_url(name: &str) -> String {
    let admin = admin_database_url();
    let base = admin.split('?').next().unwrap_or(&admin);
    let (server, _) = base.rsplit_once('/').expect("TEST_DATABASE_URL names a database");
    format!("{server}/{name}")
}

/// Logs of the services, shown for failing tests (`RUST_LOG` to change the level).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// One event as it is on the stream.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub sequence: u64,
    pub subject: String,
    pub msg_id: Option<String>,
    pub envelope: Envelope,
}

/// One recorded notification decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedDecision {
    pub event_id: Uuid,
    pub event_type: String,
    pub outcome: String,
    pub reason: String,
}

/// What the cleanup of a stack removes, even when a test panics.
struct Cleanup {
    databases: Vec<String>,
    stream: String,
    /// The servers they are on.
    admin_url: String,
    nats_url: String,
}

impl Cleanup {
    fn new(databases: Vec<String>, stream: String) -> Cleanup {
        Cleanup { databases, stream, admin_url: admin_database_url(), nats_url: nats_url() }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let databases = std::mem::take(&mut self.databases);
        let stream = std::mem::take(&mut self.stream);
        let (admin_url, nats_url) = (self.admin_url.clone(), self.nats_url.clone());
        // A runtime of its own: this may run while the test's runtime is unwinding.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    for db in databases {
                        let _ =
                            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")))
                                .execute(&mut admin)
                                .await;
                    }
                }
                if let Ok(client) = try_connect_as(&nats_url).await {
                    let _ = jetstream::new(client).delete_stream(&stream).await;
                }
            });
        })
        .join();
    }
}

/// The three services, running, with one tenant provisioned.
pub struct TestStack {
    /// `http://127.0.0.1:<port>/scim/v2`
    pub base_url: String,
    pub gateway_addr: SocketAddr,
    pub directory_addr: SocketAddr,
    /// Where the directory's gRPC Admin service listens (a port of its own).
    pub admin_addr: SocketAddr,
    /// The `DIRECTORY_TOKEN` the stack's directory requires of its callers.
    pub directory_token: String,
    /// The name of the directory's database (for another directory on it).
    pub directory_database: String,
    /// The name of the notification service's database.
    pub notification_database: String,
    pub tenant: String,
    pub api_key: String,
    pub nats: async_nats::Client,
    pub nats_args: events::NatsArgs,
    pub directory_db: PgPool,
    pub notification_db: PgPool,
    /// The SMTP server the notification service sends to.
    pub smtp: std::sync::Arc<smtp::SmtpSink>,
    /// The notification service's mail settings (for re-driving dead letters as the CLI does).
    pub mail: notification::MailArgs,
    notification_config: notification::Config,
    /// The configuration the stack's gateway runs with (tests derive others from it).
    pub gateway_config: scim_gateway::Config,
    directory: user_directory::Store,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    _cleanup: Cleanup,
}

impl TestStack {
    /// Starts everything, with a tenant `acme`; failed emails are retried 3 times, quickly.
    pub async fn start() -> TestStack {
        TestStack::start_with_retries("200ms,400ms,800ms").await
    }

    /// Starts everything, with these waits between email delivery attempts.
    pub async fn start_with_retries(retry_delays: &str) -> TestStack {
        TestStack::start_with(retry_delays, true).await
    }

    /// Starts everything, the notification service only if asked (see [`TestStack::start_notification`]).
    pub async fn start_with(retry_delays: &str, with_notification: bool) -> TestStack {
        TestStack::start_inner(retry_delays, with_notification, None).await
    }

    /// Starts everything against a NATS server of the test's own, each service with the settings
    /// (credentials) given; the notification service once the directory has made the stream.
    pub async fn start_with_nats(setup: NatsSetup) -> TestStack {
        TestStack::start_inner("200ms,400ms,800ms", true, Some(setup)).await
    }

    async fn start_inner(retry_delays: &str, with_notification: bool, setup: Option<NatsSetup>) -> TestStack {
        init_logging();
        let smtp = smtp::SmtpSink::start().await;
        let mail = notification::MailArgs {
            smtp_url: smtp.url(),
            mail_from: "Learning Platform <no-reply@learning.test>".into(),
            smtp_timeout_secs: 5,
        };
        let id = Uuid::new_v4().simple().to_string();
        let dir_db = format!("scimtest_{id}_dir");
        let notif_db = format!("scimtest_{id}_notif");
        // A stream on a server of the test's own goes with the server.
        let stream = if setup.is_some() { String::new() } else { format!("TEST_{id}") };
        let cleanup = Cleanup::new(vec![dir_db.clone(), notif_db.clone()], stream);
        let mut admin = PgConnection::connect(&admin_database_url()).await.expect("connect to the test PostgreSQL");
        for db in [&dir_db, &notif_db] {
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\""))).execute(&mut admin).await.unwrap();
        }
        let nats_args = events::NatsArgs::new(nats_url(), cleanup.stream.clone(), format!("t{id}"));
        let (nats_args, directory_nats, gateway_nats, notification_nats, observer_url) = match &setup {
            Some(s) => (
                s.directory.clone(),
                s.directory.clone(),
                s.gateway.clone(),
                s.notification.clone(),
                s.observer_url.clone(),
            ),
            None => (nats_args.clone(), nats_args.clone(), nats_args.clone(), nats_args, nats_url()),
        };
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let directory_token = random_token();
        let directory =
            user_directory::Application::build(directory_config(&dir_db, &directory_nats, &directory_token))
                .await
                .expect("build user-directory");
        let directory_addr = directory.local_addr().unwrap();
        let admin_addr = directory.admin_addr().expect("the Admin service is served");
        let store = directory.store().clone();
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            directory.run_until(async move { stop.cancelled().await }).await.unwrap();
        }));

        // The notification service's health port is chosen now, so that the gateway's console can
        // be told where to read email figures (the service itself may start later, or never).
        let notification_health: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut gateway_config = gateway_config(directory_addr, &gateway_nats, &directory_token);
        gateway_config.notification_url = format!("http://{notification_health}");
        let notification_token = random_token();
        gateway_config.notification_token = Some(notification_token.clone().into());
        let gateway_addr = spawn_gateway(gateway_config.clone(), &shutdown, &mut tasks).await;

        let notification_config = notification::Config {
            database: infra::DatabaseArgs::new(&database_url(&notif_db)),
            nats: notification_nats,
            consumer: "notification".into(),
            health_listen: notification_health,
            mail: mail.clone(),
            platform_url: "https://{tenant}.learning.test".into(),
            retry_delays: notification::parse_delays(retry_delays).unwrap(),
            token: Some(notification_token.into()),
            // The bench's `BENCH_DECISION_BATCH=1` measures each decision recorded alone.
            decision_batch: std::env::var("BENCH_DECISION_BATCH")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(notification::batch::MAX_BATCH),
        };

        let (_, key) = store.create_tenant("acme", "Acme Corp").await.unwrap();
        let mut stack = TestStack {
            base_url: format!("http://{gateway_addr}/scim/v2"),
            gateway_addr,
            directory_addr,
            admin_addr,
            directory_token,
            directory_database: dir_db.clone(),
            notification_database: notif_db.clone(),
            tenant: "acme".into(),
            api_key: key.key,
            nats: connect_as(&observer_url).await,
            nats_args,
            directory_db: PgPool::connect(&database_url(&dir_db)).await.unwrap(),
            notification_db: PgPool::connect(&database_url(&notif_db)).await.unwrap(),
            smtp,
            mail,
            notification_config,
            gateway_config,
            directory: store,
            shutdown,
            tasks,
            _cleanup: cleanup,
        };
        if with_notification {
            if setup.is_some() {
                // Its user may not create the stream: the directory does, at its start.
                let js = jetstream::new(stack.nats.clone());
                let stream = stack.nats_args.nats_stream.clone();
                poll("the directory to create the stream", || async { js.get_stream(&stream).await.ok().map(|_| ()) })
                    .await;
            }
            stack.start_notification().await;
        }
        stack.wait_until_ready().await;
        stack
    }

    /// Starts one more gateway (another replica, or one with other settings); returns its address
    /// once it is ready.
    pub async fn start_gateway(&mut self, config: scim_gateway::Config) -> SocketAddr {
        let addr = spawn_gateway(config, &self.shutdown, &mut self.tasks).await;
        let url = format!("http://{addr}/readyz");
        let client = reqwest::Client::new();
        poll("the new gateway to become ready", || async {
            client.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
        addr
    }

    /// Starts one more user-directory (another replica, or one with other settings) on the
    /// stack's directory database; returns its gRPC address once it listens.
    pub async fn start_directory(&mut self, config: user_directory::Config) -> SocketAddr {
        let directory = user_directory::Application::build(config).await.expect("build user-directory");
        let addr = directory.local_addr().unwrap();
        let stop = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            directory.run_until(async move { stop.cancelled().await }).await.unwrap();
        }));
        addr
    }

    /// Starts one more gateway without waiting for it to become ready (its directory may be one
    /// that never answers); returns its address, accepting connections.
    pub async fn start_gateway_unready(&mut self, config: scim_gateway::Config) -> SocketAddr {
        spawn_gateway(config, &self.shutdown, &mut self.tasks).await
    }

    /// A client for another gateway (or other credentials).
    pub fn okta_at(&self, addr: SocketAddr, auth: &str) -> Okta {
        Okta { base: format!("http://{addr}/scim/v2"), auth: auth.to_owned(), http: reqwest::Client::new() }
    }

    /// Starts the notification service (when the stack was started without it).
    pub async fn start_notification(&mut self) {
        let notifier =
            notification::Application::build(self.notification_config.clone()).await.expect("build notification");
        let stop = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            notifier.run_until(async move { stop.cancelled().await }).await.unwrap();
        }));
    }

    async fn wait_until_ready(&self) {
        let url = format!("http://{}/readyz", self.gateway_addr);
        let client = reqwest::Client::new();
        poll("the gateway to become ready", || async {
            client.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
    }

    /// Creates another tenant; returns its API key.
    pub async fn add_tenant(&self, subdomain: &str) -> String {
        self.directory.create_tenant(subdomain, subdomain).await.unwrap().1.key
    }

    /// The directory's store, for admin operations.
    pub fn store(&self) -> &user_directory::Store {
        &self.directory
    }

    /// `Basic base64(tenant:key)`.
    pub fn auth(&self) -> String {
        basic(&self.tenant, &self.api_key)
    }

    /// A client that sends Okta's headers and this tenant's credentials.
    pub fn okta(&self) -> Okta {
        Okta { base: self.base_url.clone(), auth: self.auth(), http: reqwest::Client::new() }
    }

    /// Every event on this stack's stream, in stream order.
    pub async fn events(&self) -> Vec<StreamEvent> {
        read_stream(&self.nats, &self.nats_args.nats_stream).await
    }

    /// Every event, once the outbox is empty (every committed change relayed): exactly what the
    /// stream holds, so a test can assert the count.
    pub async fn settled_events(&self) -> Vec<StreamEvent> {
        poll("the outbox to drain", || async {
            let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE stream_seq IS NULL")
                .fetch_one(&self.directory_db)
                .await
                .ok()?;
            (backlog == 0).then_some(())
        })
        .await;
        self.events().await
    }

    /// Waits until the stream holds at least `n` events; returns them all.
    pub async fn wait_for_events(&self, n: usize) -> Vec<StreamEvent> {
        poll(&format!("{n} events on the stream"), || async {
            let events = self.events().await;
            (events.len() >= n).then_some(events)
        })
        .await
    }

    /// Every decision the notification service recorded, oldest first.
    pub async fn decisions(&self) -> Vec<RecordedDecision> {
        sqlx::query("SELECT event_id, event_type, outcome, reason FROM decisions ORDER BY decided_at, event_id")
            .fetch_all(&self.notification_db)
            .await
            .unwrap()
            .iter()
            .map(|r| RecordedDecision {
                event_id: r.get("event_id"),
                event_type: r.get("event_type"),
                outcome: r.get("outcome"),
                reason: r.get("reason"),
            })
            .collect()
    }

    /// Waits until at least `n` decisions are recorded; returns them all.
    pub async fn wait_for_decisions(&self, n: usize) -> Vec<RecordedDecision> {
        poll(&format!("{n} notification decisions"), || async {
            let d = self.decisions().await;
            (d.len() >= n).then_some(d)
        })
        .await
    }

    /// The tenant API: `POST /api/v1/<path>` with this tenant's credentials.
    pub async fn api_post(&self, path: &str, body: serde_json::Value) -> Reply {
        let okta = self.okta();
        let resp = okta
            .http
            .post(format!("http://{}/api/v1/{path}", self.gateway_addr))
            .header("Authorization", &okta.auth)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(serde_json::Value::Null);
        Reply { status, headers, body }
    }

    /// Waits until the notification service has handled every message on the stream.
    pub async fn notifications_idle(&self) {
        let js = jetstream::new(self.nats.clone());
        poll("the notification consumer to catch up", || async {
            let mut stream = js.get_stream(&self.nats_args.nats_stream).await.ok()?;
            let last = stream.info().await.ok()?.state.last_sequence;
            let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer("notification").await.ok()?;
            let info = consumer.info().await.ok()?;
            (info.ack_floor.stream_sequence >= last && info.num_ack_pending == 0).then_some(())
        })
        .await;
    }

    /// Stops the services and waits for them to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

/// A stack's NATS settings on a server of the test's own: each service's (with its credentials),
/// and the URL of the stack's own client (`TestStack::nats`: reading the stream needs a user that
/// may, such as the directory's).
#[derive(Debug, Clone)]
pub struct NatsSetup {
    pub directory: events::NatsArgs,
    pub gateway: events::NatsArgs,
    pub notification: events::NatsArgs,
    pub observer_url: String,
}

/// A plain client of the server(s) in `url` (comma-separated, as `NATS_URL`); credentials in the
/// URL are presented (async-nats itself ignores them).
pub async fn connect_as(url: &str) -> async_nats::Client {
    try_connect_as(url).await.expect("connect to NATS")
}

/// [`connect_as`], failing rather than panicking.
pub async fn try_connect_as(url: &str) -> anyhow::Result<async_nats::Client> {
    let args = events::NatsArgs::new(url, "", "");
    let (servers, credentials) = args.servers_and_credentials()?;
    let options = match credentials {
        events::Credentials::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        _ => async_nats::ConnectOptions::new(),
    };
    Ok(options.connect(servers).await?)
}

/// The console's operator token in tests (32 bytes, the least a token may have).
pub const OPERATOR_TOKEN: &str = "test-operator-token-of-32-bytes!";

/// The token of the directory's gRPC Admin service in tests.
pub const ADMIN_TOKEN: &str = "test-admin-token-of-32-bytes-ok!";

/// A token of 32 random bytes, hex: what `make run` generates for `DIRECTORY_TOKEN`.
pub fn random_token() -> String {
    Uuid::new_v4().simple().to_string() + &Uuid::new_v4().simple().to_string()
}

/// The directory settings of a test stack: `token` is the `DIRECTORY_TOKEN` its gateways present;
/// the Admin service on a port of its own.
pub fn directory_config(database: &str, nats: &events::NatsArgs, token: &str) -> user_directory::Config {
    user_directory::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: infra::DatabaseArgs::new(&database_url(database)),
        nats: nats.clone(),
        token: Some(token.to_owned().into()),
        tls_cert: None,
        tls_key: None,
        tls_client_ca: None,
        health_listen: None,
        insecure: false,
        admin_token: Some(ADMIN_TOKEN.to_owned().into()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        operator_token: Some(OPERATOR_TOKEN.to_owned().into()),
        console_session_max_secs: 8 * 3600,
        request_log_retention_days: 30,
        outbox_retention_hours: 72,
        tenant_max_connections: None,
        list_max_members: 1000,
    }
}

/// The gateway settings of a test stack: limits high enough that only the tests about limits meet
/// them (those set a tenant's own limit, or start a gateway with lower ones).
fn gateway_config(directory_addr: SocketAddr, nats: &events::NatsArgs, token: &str) -> scim_gateway::Config {
    scim_gateway::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        directory_url: format!("http://{directory_addr}"),
        directory_token: Some(token.to_owned().into()),
        directory_tls_ca: None,
        directory_tls_cert: None,
        directory_tls_key: None,
        directory_tls_domain: None,
        public_url: None,
        base_domain: Some("scim.test".into()),
        auth_cache_ttl_secs: 5,
        max_body_bytes: 1024 * 1024,
        http_header_timeout_secs: 10,
        http_body_timeout_secs: 30,
        http_max_connections: 10_000,
        directory_timeout_secs: 30,
        rate_limit_per_second: 100_000,
        rate_limit_burst: 100_000,
        tenant_max_in_flight: 100_000,
        auth_failures_per_minute: 1000,
        console_operator_failures_per_minute: 1000,
        trust_forwarded_for: false,
        request_log: true,
        request_log_max_body_bytes: 64 * 1024,
        nats: nats.clone(),
        shutdown_delay_secs: 0,
        console_operator_token: Some(OPERATOR_TOKEN.to_owned().into()),
        console_cookie_secure: false,
        console_idle_secs: 1800,
        notification_url: String::new(),
        notification_token: None,
    }
}

async fn spawn_gateway(
    config: scim_gateway::Config,
    shutdown: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> SocketAddr {
    let gateway = scim_gateway::Application::build(config).await.expect("build scim-gateway");
    let addr = gateway.local_addr().unwrap();
    let stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        gateway.run_until(async move { stop.cancelled().await }).await.unwrap();
    }));
    addr
}

/// Every event on a stream, in stream order.
pub async fn read_stream(nats: &async_nats::Client, name: &str) -> Vec<StreamEvent> {
    raw_stream_messages(nats, name)
        .await
        .into_iter()
        .map(|m| StreamEvent {
            sequence: m.sequence,
            subject: m.subject.to_string(),
            msg_id: m.headers.get(async_nats::header::NATS_MESSAGE_ID).map(|v| v.as_str().to_owned()),
            envelope: Envelope::decode(m.payload).unwrap(),
        })
        .collect()
}

/// Every message the stream retains, as stored: (stream sequence, payload bytes).
pub async fn raw_stream(nats: &async_nats::Client, name: &str) -> Vec<(u64, bytes::Bytes)> {
    raw_stream_messages(nats, name).await.into_iter().map(|m| (m.sequence, m.payload)).collect()
}

async fn raw_stream_messages(
    nats: &async_nats::Client,
    name: &str,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    use async_nats::jetstream::context::GetStreamErrorKind;
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let js = jetstream::new(nats.clone());
    // For 60 s at most: a stream without a quorum, or a client without the right, fails the test.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let again = |e: &dyn std::fmt::Display| {
        assert!(std::time::Instant::now() < deadline, "reading the stream {name}: {e}");
        tokio::time::sleep(Duration::from_millis(200))
    };
    // A stream that is there but has no leader for a moment (a cluster's node just came back)
    // answers with errors: asked again, never taken for an empty stream or a missing message.
    let mut stream = loop {
        match js.get_stream(name).await {
            Ok(s) => break s,
            Err(e)
                if matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                return Vec::new();
            }
            Err(e) => again(&e).await,
        }
    };
    let last = loop {
        match stream.info().await {
            Ok(info) => break info.state.last_sequence,
            Err(e) => again(&e).await,
        }
    };
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = loop {
            match stream.get_raw_message(seq).await {
                Ok(m) => break Some(m),
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break None,
                Err(e) => again(&e).await,
            }
        };
        if let Some(m) = m {
            out.push(m);
        }
    }
    out
}

/// What Okta sends as a user's password: it must never be stored, logged or shown anywhere.
pub const OKTA_PASSWORD: &str = "Okta-Sent-This-Pa55word!";

/// A user as Okta creates one: names, a primary work email equal to the userName, active, and
/// the password Okta sends along.
pub fn okta_user(name: &str) -> serde_json::Value {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Given", "familyName": "Family"},
        "emails": [{"primary": true, "value": name, "type": "work"}],
        "active": true,
        "password": OKTA_PASSWORD,
    })
}

/// Okta's deactivation: a path-less PATCH replacing `active`.
pub fn okta_deactivation() -> serde_json::Value {
    serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                       "Operations": [{"op": "replace", "value": {"active": false}}]})
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Polls `check` until it returns a value, for at most 20 seconds.
pub async fn poll<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll_for(Duration::from_secs(20), what, check).await
}

/// `poll`, for as long as `limit`.
pub async fn poll_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A response: status, headers and JSON body (Null when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

/// An HTTP client that behaves like Okta's SCIM client (its headers, its credentials).
#[derive(Clone)]
pub struct Okta {
    pub base: String,
    pub auth: String,
    pub http: reqwest::Client,
}

impl Okta {
    /// Sends a request with Okta's headers; `path_and_query` is relative to the SCIM base URL.
    pub async fn send(&self, method: &str, path_and_query: &str, body: Option<serde_json::Value>) -> Reply {
        self.send_to(method, format!("{}{path_and_query}", self.base), body).await
    }

    /// The tenant API (`/api/v1<path>`) with the same credentials.
    pub async fn api(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Reply {
        self.send_to(method, format!("{}{path}", self.base.replace("/scim/v2", "/api/v1")), body).await
    }

    async fn send_to(&self, method: &str, url: String, body: Option<serde_json::Value>) -> Reply {
        let mut req = self
            .http
            .request(method.parse().unwrap(), url)
            .header("Authorization", &self.auth)
            .header("Accept", "application/scim+json")
            .header("Accept-Charset", "utf-8")
            .header("User-Agent", "Okta SCIM Client 1.0.0");
        if let Some(b) = body {
            req = req.header("Content-Type", "application/scim+json; charset=utf-8").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None).await
    }
    pub async fn post(&self, path: &str, body: serde_json::Value) -> Reply {
        self.send("POST", path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: serde_json::Value) -> Reply {
        self.send("PUT", path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: serde_json::Value) -> Reply {
        self.send("PATCH", path, Some(body)).await
    }
}
