//! The event tier on a NATS JetStream cluster, crashed the way machines crash. Each test runs the
//! services' binaries against a PostgreSQL and a 3-node NATS cluster of its own (the stream has
//! three replicas, `NATS_STREAM_REPLICAS=3`, and every service lists the three nodes), under a
//! steady Okta-like load, SIGKILLs nodes, and then checks every promise (`e2e::faults::verify`):
//! every write answered 2xx is in the database; every committed change has exactly one event on
//! the stream, in commit order per user; every owed email is sent, once.

use std::time::{Duration, Instant};

use e2e::cluster::NatsCluster;
use e2e::faults::{Load, PrivatePostgres, Resends, verify};
use e2e::poll_for;
use e2e::processes::{ProcessStack, Servers, Which};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// A PostgreSQL and a NATS cluster of the test's own, and the services on them.
/// The stream gets `replicas`.
async fn cluster_stack(replicas: u8) -> (PrivatePostgres, NatsCluster, ProcessStack) {
    let pg = tokio::task::spawn_blocking(PrivatePostgres::start).await.unwrap();
    let cluster = NatsCluster::start().await;
    let servers = Servers {
        postgres_admin_url: format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port),
        nats_url: cluster.url(),
    };
    let env = [
        ("NATS_STREAM_REPLICAS", replicas.to_string()),
        ("SHUTDOWN_DELAY_SECS", "0".to_owned()),
        ("RATE_LIMIT_PER_SECOND", "100000".to_owned()),
        ("RATE_LIMIT_BURST", "100000".to_owned()),
        ("TENANT_MAX_IN_FLIGHT", "100000".to_owned()),
        // A revocation must come through NATS, not through the cache's expiry.
        ("AUTH_CACHE_TTL_SECS", "600".to_owned()),
        // `verify` counts emails one ack wait after the last disturbance: 65 s with this timeout.
        ("SMTP_TIMEOUT_SECS", "5".to_owned()),
    ];
    let stack = ProcessStack::start_on(&servers, &env).await;
    (pg, cluster, stack)
}

fn run_id() -> String {
    format!("c{}", &Uuid::new_v4().simple().to_string()[..8])
}

/// The stream's last sequence, as its leader has it now; `None` without a leader (a stream
/// without a quorum may still be answered for, leaderless and with an empty state).
async fn stream_last(cluster: &NatsCluster, stream: &str) -> Option<u64> {
    let client = e2e::try_connect_as(&cluster.url()).await.ok()?;
    let mut s = async_nats::jetstream::new(client).get_stream(stream).await.ok()?;
    let info = s.info().await.ok()?;
    info.cluster.as_ref()?.leader.as_ref().filter(|l| !l.is_empty())?;
    Some(info.state.last_sequence)
}

/// Events not yet published (the outbox's backlog).
async fn backlog(stack: &ProcessStack) -> i64 {
    let mut db = PgConnection::connect(&stack.directory_db_url).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE stream_seq IS NULL").fetch_one(&mut db).await.unwrap()
}

/// While the cluster is in the state the test made, the relay goes on publishing and the
/// notification service goes on sending: the stream grows by `n` events and more emails arrive.
async fn events_and_emails_flow(cluster: &NatsCluster, stack: &ProcessStack, n: u64, what: &str) {
    let from = stream_last(cluster, &stack.stream).await.unwrap_or(0);
    let emails = stack.smtp.received().len();
    poll_for(Duration::from_secs(60), &format!("{n} more events on the stream {what}"), || async {
        (stream_last(cluster, &stack.stream).await? >= from + n).then_some(())
    })
    .await;
    poll_for(Duration::from_secs(60), &format!("more emails {what}"), || async {
        (stack.smtp.received().len() > emails).then_some(())
    })
    .await;
}

/// A key revoked now stops working at the gateway within 20 s (its cache keeps keys for ten
/// minutes in these tests): the revocation came through the gateway's NATS subscription.
async fn revocation_reaches_the_gateway(stack: &ProcessStack) {
    let store = stack.store();
    let key = store.issue_key("acme", "revoked in a crash test", None, &["scim".to_owned()]).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://{}/scim/v2/Users?count=1", stack.gateway_addr);
    let status = |auth: String| {
        let (http, url) = (http.clone(), url.clone());
        async move { http.get(&url).header("Authorization", auth).send().await.map(|r| r.status().as_u16()).ok() }
    };
    assert_eq!(status(e2e::basic("acme", &key.key)).await, Some(200), "the new key works (and is cached)");
    store.revoke_key(key.id, None).await.unwrap();
    poll_for(Duration::from_secs(20), "the revoked key to be refused", || async {
        (status(e2e::basic("acme", &key.key)).await == Some(401)).then_some(())
    })
    .await;
    store.close().await;
}

/// The load ends: no SCIM request of it failed, no service was restarted, and every promise holds.
async fn nothing_failed_nothing_restarted_nothing_lost(load: Load, stack: &mut ProcessStack, run: &str) {
    let ledger = load.finish().await;
    let failures = ledger.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "no SCIM request failed: {failures:?}");
    for which in [Which::Directory, Which::Gateway, Which::Notification] {
        assert!(stack.service(which).running(), "{which:?} still runs: nothing was restarted");
    }
    // The stream kept every event it acknowledged (two of three nodes had each): the relay
    // never took a leaderless answer for the stream's tail and published kept events again.
    let logs = stack.all_logs();
    assert!(!logs.contains("the stream lost events it had acknowledged"), "the relay saw a loss that did not happen");
    verify(stack, run, &ledger, Resends::None).await;
}

/// 1. The stream's leader node is SIGKILLed under load and started again later: no SCIM write
/// fails (the gateway's answers never wait on NATS), events go on being published and emails
/// sent while it is down, no service restarts, and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_leader_killed_loses_and_doubles_nothing() {
    let (_pg, mut cluster, mut stack) = cluster_stack(3).await;
    cluster.wait_current(&stack.stream).await;
    assert_eq!(cluster.replicas(&stack.stream).await.map(|r| r.0), Some(3), "the stream has three replicas");
    let run = run_id();
    let load = Load::start(&stack, &run, 4);
    load.progress(40).await;
    let leader = cluster.stream_leader(&stack.stream).await;
    tokio::task::block_in_place(|| cluster.kill_node(leader));
    events_and_emails_flow(&cluster, &stack, 50, "with the leader down").await;
    let new_leader = cluster.stream_leader(&stack.stream).await;
    assert_ne!(new_leader, leader, "another node leads the stream");
    revocation_reaches_the_gateway(&stack).await;
    load.progress(40).await;
    tokio::task::block_in_place(|| cluster.start_node(leader));
    // The notification service's connection or its consumer's leader may have been on a node
    // that went: what it had been sent comes again one ack wait later.
    load.ledger.disturbed(Instant::now());
    cluster.wait_current(&stack.stream).await;
    load.progress(40).await;
    nothing_failed_nothing_restarted_nothing_lost(load, &mut stack, &run).await;
}

/// 2. A second node is SIGKILLed while the first is down: the stream has lost its quorum and
/// stores nothing. SCIM writes go on succeeding (the outbox holds their events), and once the
/// nodes are back everything is relayed, once and in order, without restarting a service.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_lost_writes_go_on_and_everything_is_relayed_once_it_returns() {
    let (_pg, mut cluster, mut stack) = cluster_stack(3).await;
    let run = run_id();
    let load = Load::start(&stack, &run, 4);
    load.progress(30).await;
    let first = cluster.stream_leader(&stack.stream).await;
    tokio::task::block_in_place(|| cluster.kill_node(first));
    load.progress(20).await;
    let second = (0..3).find(|i| *i != first).unwrap();
    tokio::task::block_in_place(|| cluster.kill_node(second));
    let lost = Instant::now();
    let interrupted = |stack: &ProcessStack| stack.directory.log_text().matches("outbox relay interrupted").count();
    let before = interrupted(&stack);
    // Without a quorum nothing is stored: the relay's publications fail, the backlog grows, and
    // the writes go on being acknowledged.
    load.progress(60).await;
    poll_for(Duration::from_secs(60), "the relay to fail and a backlog of 50 events", || async {
        (interrupted(&stack) > before && backlog(&stack).await >= 50).then_some(())
    })
    .await;
    let during = load.ledger.acknowledged_between(lost, Instant::now());
    assert!(during >= 60, "writes went on without a quorum ({during} acknowledged)");
    // No leader: nothing can be stored (nor the stream's state even read).
    assert_eq!(stream_last(&cluster, &stack.stream).await, None, "the stream has no leader without a quorum");
    tokio::task::block_in_place(|| {
        cluster.start_node(second);
        cluster.start_node(first);
    });
    load.ledger.disturbed(Instant::now());
    load.progress(30).await;
    cluster.wait_current(&stack.stream).await;
    nothing_failed_nothing_restarted_nothing_lost(load, &mut stack, &run).await;
}

/// 3. A stream made with one replica (an installation that began on a single server) is given the
/// configured three when user-directory restarts with `NATS_STREAM_REPLICAS=3`, its consumer
/// follows, and events and emails flow on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_one_replica_stream_gets_three_when_user_directory_restarts_with_three() {
    let (_pg, cluster, mut stack) = cluster_stack(1).await;
    let run = run_id();
    let load = Load::start(&stack, &run, 2);
    load.progress(20).await;
    assert_eq!(cluster.replicas(&stack.stream).await.map(|r| r.0), Some(1));
    stack.respawn_with(Which::Directory, &[("NATS_STREAM_REPLICAS", "3".to_owned())]);
    poll_for(Duration::from_secs(60), "the stream to have three current replicas", || async {
        (cluster.replicas(&stack.stream).await? == (3, 2)).then_some(())
    })
    .await;
    assert!(stack.directory.log_text().contains("the stream's replica count changed"));
    let js = async_nats::jetstream::new(e2e::connect_as(&cluster.url()).await);
    poll_for(Duration::from_secs(60), "the consumer to have three replicas", || async {
        let stream = js.get_stream(&stack.stream).await.ok()?;
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("notification").await.ok()?;
        let info = consumer.info().await.ok()?;
        (info.cluster.as_ref()?.replicas.len() == 2).then_some(())
    })
    .await;
    events_and_emails_flow(&cluster, &stack, 20, "on three replicas").await;
    load.finish().await;
}
