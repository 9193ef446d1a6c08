//! Issue 24, NATS: a NATS server configured as the project ships it (`deploy/nats`: one user per
//! service, least privilege, bcrypt-hashed passwords, rendered by the shipped script) refuses
//! anonymous clients, and a client holding the gateway's or the notification service's
//! credentials can neither publish an event, nor read the stream, nor make a consumer of its own.
//! The forged `user.created` and `content.assigned` it tries send no email, while the real flow,
//! each service with its own credentials, still sends exactly one; and the very same forged bytes
//! published by a user who may (the directory's) would have sent one.
//!
//! Also: NATS over TLS (`NATS_TLS_CA`, `NATS_TLS_REQUIRED`) and a `.creds` file (`NATS_CREDS`)
//! against a server in operator/JWT mode.
//!
//! The servers are the tests' own (free ports, their own storage), so nothing else on the
//! machine's NATS is touched.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use e2e::faults::PrivateNats;
use e2e::{NatsSetup, TestStack, basic, poll};
use prost::Message;
use proto::events::v1::envelope::Payload;
use proto::events::v1::{ContentAssigned, Envelope, Source, UserCreated, UserSnapshot};
use serde_json::json;
use uuid::Uuid;

const ATTACKER: &str = "attacker@evil.test";

/// A client with these credentials, and the errors the server sends it (permission violations).
async fn client_as(nats: &PrivateNats, user: &str, password: &str) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    seen.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(format!("127.0.0.1:{}", nats.port))
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"));
    (client, errors)
}

/// A JetStream context that gives up on an unanswered request quickly (a refused request is
/// never answered).
fn js(client: &async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new().timeout(Duration::from_secs(1)).build(client.clone())
}

/// Waits for the server's permissions violation naming `what` (e.g. `Publish to "subject"`).
async fn refused(errors: &Arc<Mutex<Vec<String>>>, what: &str) {
    let needle = format!("permissions violation for {}", what.to_lowercase());
    poll(&format!("the server to refuse: {what}"), || async {
        errors.lock().unwrap().iter().any(|e| e.to_lowercase().contains(&needle)).then_some(())
    })
    .await;
}

/// The stream's last sequence, as the directory's user (which may read its stream) sees it.
async fn last_sequence(observer: &jetstream::Context, stream: &str) -> u64 {
    observer.get_stream(stream).await.unwrap().info().await.unwrap().state.last_sequence
}

/// Everything a client that may not publish events tries: forged events by core NATS and by
/// JetStream, reading the stream and its messages, a consumer of its own, listening in on every
/// event and on other clients' inboxes. Each is refused by the server.
async fn attack(
    name: &str,
    client: &async_nats::Client,
    errors: &Arc<Mutex<Vec<String>>>,
    stack: &TestStack,
    forged: &[(String, Vec<u8>)],
) {
    let stream = stack.nats_args.nats_stream.clone();
    let prefix = stack.nats_args.nats_subject_prefix.clone();
    let context = js(client);
    for (subject, payload) in forged {
        client.publish(subject.clone(), payload.clone().into()).await.unwrap();
        client.flush().await.unwrap();
        refused(errors, &format!("Publish to \"{subject}\"")).await;
        // Through JetStream: no acknowledgement, ever (the message never reached the stream).
        let ack = match context.publish(subject.clone(), payload.clone().into()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        assert!(ack.is_err(), "{name}: JetStream acknowledged a forged {subject}");
    }
    // The stream's messages, by the JetStream API.
    let direct = context.get_stream(&stream).await;
    if name == "scim-gateway" {
        assert!(direct.is_err(), "{name} may not even look at the stream");
        refused(errors, &format!("Publish to \"$JS.API.STREAM.INFO.{stream}\"")).await;
    }
    let get = client
        .request(format!("$JS.API.STREAM.MSG.GET.{stream}"), serde_json::to_vec(&json!({"seq": 1})).unwrap().into());
    let got = tokio::time::timeout(Duration::from_secs(1), get).await;
    assert!(!matches!(got, Ok(Ok(_))), "{name} read a message of the stream");
    refused(errors, &format!("Publish to \"$JS.API.STREAM.MSG.GET.{stream}\"")).await;
    // A consumer of its own, durable or ephemeral, to read every event.
    let evil = pull::Config { durable_name: Some("evil".into()), ..Default::default() };
    assert!(context.create_consumer_on_stream(evil, stream.clone()).await.is_err(), "{name}: a consumer of its own");
    refused(errors, &format!("Publish to \"$JS.API.CONSUMER.CREATE.{stream}.evil\"")).await;
    let ephemeral = pull::Config::default();
    assert!(
        context.create_consumer_on_stream(ephemeral, stream.clone()).await.is_err(),
        "{name}: an ephemeral consumer"
    );
    refused(errors, &format!("Publish to \"$JS.API.CONSUMER.CREATE.{stream}\"")).await;
    // Listening to every event on core NATS, or to everyone's inboxes (the gateway's user only:
    // the directory and notification users take replies on `_INBOX.>`).
    let all = format!("{prefix}.v1.>");
    let _sub = client.subscribe(all.clone()).await.unwrap();
    client.flush().await.unwrap();
    refused(errors, &format!("Subscription to \"{all}\"")).await;
    if name == "scim-gateway" {
        let _inboxes = client.subscribe("_INBOX.>").await.unwrap();
        client.flush().await.unwrap();
        refused(errors, "Subscription to \"_INBOX.>\"").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_refuses_anonymous_and_other_services_credentials_and_forged_events_send_no_email() {
    let id = Uuid::new_v4().simple().to_string();
    let (stream, prefix) = (format!("ATTACK_{id}"), format!("t{id}"));
    let (nats, passwords) = PrivateNats::start_secured(&stream, &prefix, "notification");
    let server = format!("nats://127.0.0.1:{}", nats.port);

    // No credentials, or wrong ones: not even a connection.
    let anonymous = async_nats::ConnectOptions::new().connect(server.as_str()).await;
    let e = anonymous.expect_err("an anonymous client is refused");
    assert_eq!(e.kind(), async_nats::ConnectErrorKind::AuthorizationViolation, "{e}");
    let wrong = async_nats::ConnectOptions::with_user_and_password("notification".into(), "guess".into())
        .connect(server.as_str())
        .await;
    assert_eq!(
        wrong.expect_err("a wrong password is refused").kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation
    );

    // The stack, each service with its own credentials (in NATS_URL, as the chart's Secrets give them).
    let args = |user: &str, password: &str| events::NatsArgs::new(nats.url_as(user, password), &stream, &prefix);
    let stack = TestStack::start_with_nats(NatsSetup {
        directory: args("user-directory", &passwords.user_directory),
        gateway: args("scim-gateway", &passwords.scim_gateway),
        notification: args("notification", &passwords.notification),
        observer_url: nats.url_as("user-directory", &passwords.user_directory),
    })
    .await;
    let observer = js(&stack.nats);

    // The real flow: Okta provisions Jane (no email), her first assignment is her first email.
    let okta = stack.okta();
    let jane = okta.post("/Users", e2e::okta_user("jane@acme.com")).await;
    assert_eq!(jane.status, 201, "{:?}", jane.body);
    let jane = jane.body["id"].as_str().unwrap().to_owned();
    let r = stack.api_post("assignments", json!({"userId": jane, "contentId": "c-1", "title": "Course 1"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let email = poll("jane's first email", || async { stack.smtp.received_by("jane@acme.com").pop() }).await;
    assert!(email.data.contains("Course 1"), "{}", email.data);
    let events = stack.settled_events().await;
    assert_eq!(events.len(), 2, "user.created and content.assigned");

    // The forgeries: a user the customer's admin created (welcomed at once) at the attacker's
    // address, and content assigned to them; well-formed events with fresh ids.
    let real_created = events[0].envelope.clone();
    let evil_user = Uuid::now_v7().to_string();
    let created = Envelope {
        event_id: Uuid::now_v7().to_string(),
        resource_id: evil_user.clone(),
        resource_version: 1,
        source: Source::Admin as i32,
        payload: Some(Payload::UserCreated(UserCreated {
            user: Some(UserSnapshot {
                user_name: ATTACKER.into(),
                given_name: "Eve".into(),
                family_name: "Attacker".into(),
                display_name: "Eve Attacker".into(),
                email: ATTACKER.into(),
                active: true,
                ..Default::default()
            }),
        })),
        ..real_created.clone()
    };
    let assigned = Envelope {
        event_id: Uuid::now_v7().to_string(),
        resource_id: Uuid::now_v7().to_string(),
        resource_version: 1,
        source: Source::Admin as i32,
        payload: Some(Payload::ContentAssigned(ContentAssigned {
            user_id: evil_user.clone(),
            content_id: "phish".into(),
            title: "Click here to reset your password".into(),
            user_version: 1,
        })),
        ..real_created.clone()
    };
    let forged: Vec<(String, Vec<u8>)> = [created, assigned]
        .iter()
        .map(|e| (stack.nats_args.subject(&e.tenant, e.payload.as_ref().unwrap()), e.encode_to_vec()))
        .collect();
    assert!(forged[0].0.ends_with(".acme.user.created") && forged[1].0.ends_with(".acme.content.assigned"));
    let before = last_sequence(&observer, &stream).await;

    // The gateway's credentials: subscribe to revocations, nothing else.
    let (gateway, gateway_errors) = client_as(&nats, "scim-gateway", &passwords.scim_gateway).await;
    attack("scim-gateway", &gateway, &gateway_errors, &stack, &forged).await;
    // The notification service's credentials: its own consumer, no publishing of events.
    let (notifier, notifier_errors) = client_as(&nats, "notification", &passwords.notification).await;
    attack("notification", &notifier, &notifier_errors, &stack, &forged).await;

    // Nothing reached the stream, so nothing can reach anyone's mailbox. The consumer has
    // handled everything there is (its position, read with the notification's own user).
    assert_eq!(last_sequence(&observer, &stream).await, before, "the stream did not grow");
    let notifier_js = js(&notifier);
    poll("the consumer to have handled the stream", || async {
        let mut s = notifier_js.get_stream(&stream).await.ok()?;
        let last = s.info().await.ok()?.state.last_sequence;
        let mut c: jetstream::consumer::PullConsumer = s.get_consumer("notification").await.ok()?;
        let info = c.info().await.ok()?;
        (info.ack_floor.stream_sequence >= last && info.num_ack_pending == 0).then_some(())
    })
    .await;
    assert!(stack.smtp.received_by(ATTACKER).is_empty(), "no email to the attacker");
    assert_eq!(stack.smtp.received().len(), 1, "exactly one email: jane's");
    assert_eq!(stack.decisions().await.len(), 2, "a decision for each real event, none for a forged one");

    // The gateway's user still hears revocations: a revoked key dies on a gateway that would
    // otherwise cache it for five minutes.
    let mut config = stack.gateway_config.clone();
    config.auth_cache_ttl_secs = 300;
    let mut stack = stack;
    let gateway_addr = stack.start_gateway(config).await;
    let issued = stack.store().issue_key("acme", "rotating", None, &[]).await.unwrap();
    let client = stack.okta_at(gateway_addr, &basic("acme", &issued.key));
    assert_eq!(client.get("/Users?count=1").await.status, 200);
    stack.store().revoke_key(issued.id, None).await.unwrap();
    let started = std::time::Instant::now();
    poll("the revoked key to be refused", || async {
        (client.get("/Users?count=1").await.status == 401).then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5), "revocation came through NATS, not the cache's expiry");

    // The control: the same forged bytes, published by a user who may publish events, do send
    // the attacker a welcome email. What stopped them above was the server's permissions.
    let (directory, _) = client_as(&nats, "user-directory", &passwords.user_directory).await;
    let directory_js = js(&directory);
    for (subject, payload) in &forged {
        directory_js.publish(subject.clone(), payload.clone().into()).await.unwrap().await.unwrap();
    }
    poll("the forged event, published by the directory's user, to send an email", || async {
        stack.smtp.received_by(ATTACKER).pop()
    })
    .await;

    // The notification's own consumer still works with its user (it consumed the control).
    let s = notifier_js.get_stream(&stream).await.unwrap();
    let mut c: jetstream::consumer::PullConsumer = s.get_consumer("notification").await.unwrap();
    assert!(c.info().await.unwrap().delivered.stream_sequence >= before + 2);

    // With the shipped permissions, the directory's user may do what an erasure needs on the
    // stream (read the tenant's user events, delete those that name the person), and does.
    let named = |events: &[e2e::StreamEvent]| {
        events.iter().filter(|e| e.envelope.resource_id == jane && e.subject.ends_with(".user.created")).count()
    };
    assert_eq!(named(&stack.events().await), 1);
    let erased = okta.api("POST", &format!("/users/{jane}/erase"), Some(json!({"confirm": jane}))).await;
    assert_eq!(erased.status, 200, "{:?}", erased.body);
    assert_eq!(erased.body["streamMessagesDeleted"], 1, "{:?}", erased.body);
    assert_eq!(named(&stack.events().await), 0, "jane's creation is gone from the stream");
    stack.stop().await;
}

/// Whether a client made from these settings gets connected within two seconds.
async fn connects(args: &events::NatsArgs) -> bool {
    let Ok(client) = args.connect("tls-test").await else {
        return false;
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), client.flush()).await, Ok(Ok(())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_with_the_configured_ca_and_never_in_plaintext_when_required() {
    let pki = e2e::pki::Pki::new();
    let server = pki.issue(&pki.ca("ca"), "server");
    let (ca, cert, key) = (pki.path("ca.pem"), server.cert, server.key);
    let id = Uuid::new_v4().simple().to_string();
    let (stream, prefix) = (format!("TLS_{id}"), format!("t{id}"));
    let tls = format!("tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}", cert.display(), key.display());
    let (nats, passwords) = PrivateNats::start_secured_with(&stream, &prefix, "notification", &tls);
    let url = nats.url_as("user-directory", &passwords.user_directory);

    // With the CA (NATS_TLS_CA): connected, and JetStream works (the directory makes its stream).
    let mut args = events::NatsArgs::new(url.as_str(), &stream, &prefix);
    args.nats_tls_ca = Some(ca.clone());
    assert!(connects(&args).await, "TLS with the configured CA");
    let client = args.connect("tls-test").await.unwrap();
    args.ensure_stream(&jetstream::new(client)).await.expect("the directory's stream, over TLS");
    // Without it, the server's certificate is not trusted: no connection.
    let untrusted = events::NatsArgs::new(url.as_str(), &stream, &prefix);
    assert!(!connects(&untrusted).await, "a certificate of an unknown CA was accepted");
    // A CA file that is not there is a configuration error, reported at once.
    let mut missing = events::NatsArgs::new(url.as_str(), &stream, &prefix);
    missing.nats_tls_ca = Some(pki.path("absent.pem"));
    assert!(matches!(missing.connect("tls-test").await, Err(events::EventsError::TlsCa(_))));

    // NATS_TLS_REQUIRED against a server without TLS: no plaintext fallback.
    let (plain, plain_passwords) = PrivateNats::start_secured(&stream, &prefix, "notification");
    let plain_url = plain.url_as("user-directory", &plain_passwords.user_directory);
    assert!(connects(&events::NatsArgs::new(plain_url.as_str(), &stream, &prefix)).await, "plaintext when allowed");
    let mut required = events::NatsArgs::new(plain_url.as_str(), &stream, &prefix);
    required.nats_tls_required = true;
    assert!(!connects(&required).await, "NATS_TLS_REQUIRED talked plaintext");
}

/// A NATS JWT (the nats-io/jwt v2 format): `claims` with `jti`, `iat`, `iss` and `sub` filled in,
/// signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine;
    use sha2::Digest;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut claims = json!({
        "jti": "", "iat": 1_700_000_000, "iss": issuer.public_key(), "name": name, "sub": subject, "nats": nats,
    });
    let id = sha2::Sha512_256::digest(serde_json::to_vec(&claims).unwrap());
    claims["jti"] = json!(data_encoding::BASE32_NOPAD.encode(&id));
    let signed = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&json!({"typ": "JWT", "alg": "ed25519-nkey"})).unwrap()),
        b64(&serde_json::to_vec(&claims).unwrap())
    );
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64(&signature))
}

/// NATS_CREDS: a server in operator/JWT mode (an operator, an account, the gateway's user with
/// the shipped permissions) admits the service with its `.creds` file, and nobody without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_creds_file_in_operator_mode() {
    let dir = std::env::temp_dir().join(format!("scimtest_natscreds_{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (operator, account, user) =
        (nkeys::KeyPair::new_operator(), nkeys::KeyPair::new_account(), nkeys::KeyPair::new_user());
    let prefix = format!("t{}", Uuid::new_v4().simple());
    let operator_jwt = jwt(&operator, &operator.public_key(), "test", json!({"type": "operator", "version": 2}));
    let limits = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1});
    let account_jwt =
        jwt(&operator, &account.public_key(), "SCIM", json!({"limits": limits, "type": "account", "version": 2}));
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "scim-gateway",
        json!({"pub": {"deny": [">"]}, "sub": {"allow": [format!("{prefix}.v1.*.tenant.>")]},
               "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}),
    );
    let creds = dir.join("scim-gateway.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    let config = dir.join("operator.conf");
    std::fs::write(
        &config,
        format!(
            "operator: {operator_jwt}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {account_jwt}\n}}\n",
            account.public_key()
        ),
    )
    .unwrap();
    let port = e2e::processes::free_addr().port();
    let _server = KillOnDrop(
        std::process::Command::new("/usr/sbin/nats-server")
            .arg("-c")
            .arg(&config)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server"),
    );
    let url = format!("nats://127.0.0.1:{port}");
    poll("the operator-mode server to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
    })
    .await;

    let mut args = events::NatsArgs::new(url.as_str(), "PROVISIONING", &prefix);
    args.nats_creds = Some(creds.clone());
    assert!(connects(&args).await, "NATS_CREDS admits the service");
    let anonymous = async_nats::ConnectOptions::new().connect(url.as_str()).await;
    assert!(anonymous.is_err(), "an anonymous client is refused");
    // Its user's permissions hold: subscribing to revocations works, publishing an event does not.
    let (client, errors) = {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        let client = async_nats::ConnectOptions::with_credentials_file(&creds)
            .await
            .unwrap()
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        seen.lock().unwrap().push(e.to_string());
                    }
                }
            })
            .connect(url.as_str())
            .await
            .unwrap();
        (client, errors)
    };
    let subject = format!("{prefix}.v1.acme.user.created");
    client.publish(subject.clone(), "forged".into()).await.unwrap();
    client.flush().await.unwrap();
    refused(&errors, &format!("Publish to \"{subject}\"")).await;
    // A credentials file that is not there is a configuration error, reported at once.
    args.nats_creds = Some(dir.join("absent.creds"));
    assert!(matches!(args.connect("creds-test").await, Err(events::EventsError::CredentialsFile { .. })));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server process, stopped however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
