//! The outbox: how the relay is woken (never by a NOTIFY inside a write: PostgreSQL serialises the
//! commits of every transaction that notified, through their WAL flush, across the cluster; but by
//! the writing process after its commits, and by `announce` for relays in other processes); what
//! it keeps after publication, and how what the stream lost is published again.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use e2e::TestStack;
use serde_json::json;
use sqlx::postgres::PgListener;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[tokio::test]
async fn commits_are_announced_after_the_fact_and_no_write_notifies_inside_its_transaction() {
    let stack = TestStack::start().await;
    let triggers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'outbox'::regclass AND NOT tgisinternal")
            .fetch_one(&stack.directory_db)
            .await
            .unwrap();
    assert_eq!(triggers, 0, "no trigger on the outbox: a NOTIFY in a write would serialise all commits");

    // The stack's relay listens; another replica (a store of its own, whose relay is not the
    // active one) announces its commits.
    let mut listener = PgListener::connect_with(&stack.directory_db).await.unwrap();
    listener.listen("outbox").await.unwrap();
    let store = user_directory::Store::new(stack.directory_db.clone(), "replica");
    let stop = CancellationToken::new();
    let announcer = tokio::spawn(user_directory::relay::announce(store.clone(), stop.clone()));
    // A write that commits an event (tenant.created).
    store.create_tenant("announced", "Announced Inc").await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(20), listener.recv()).await;
    assert!(heard.is_ok_and(|n| n.is_ok_and(|n| n.channel() == "outbox")), "the commit was announced");
    stop.cancel();
    announcer.await.unwrap();
}

/// What the outbox holds, in `seq` order: each event's id, where the stream stored it, and when.
async fn rows(stack: &TestStack) -> Vec<(i64, Uuid, Option<i64>, Option<OffsetDateTime>, OffsetDateTime)> {
    sqlx::query_as("SELECT seq, event_id, stream_seq, published_at, created_at FROM outbox ORDER BY seq")
        .fetch_all(&stack.directory_db)
        .await
        .unwrap()
}

async fn create(stack: &TestStack, name: &str) -> String {
    let r = stack.okta().post("/Users", e2e::okta_user(name)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

/// A published event stays in the outbox with the stream sequence it was stored at, until the
/// retention window has passed; then it is pruned in batches of at most the limit.
#[tokio::test]
async fn published_events_are_kept_with_their_stream_sequence_and_pruned_after_the_retention() {
    let stack = TestStack::start().await;
    for i in 1..=6 {
        create(&stack, &format!("kept{i}@acme.com")).await;
    }
    let events = stack.settled_events().await;
    let stored: HashMap<String, u64> = events.iter().map(|e| (e.msg_id.clone().unwrap(), e.sequence)).collect();
    let kept = rows(&stack).await;
    assert_eq!(kept.len(), events.len(), "every published event is kept");
    for (seq, id, stream_seq, published_at, _) in &kept {
        assert_eq!(
            stream_seq.map(|s| s as u64),
            stored.get(&id.to_string()).copied(),
            "row {seq}: its stream sequence"
        );
        assert!(published_at.is_some(), "row {seq}: when it was published");
    }

    // All but the last are older than the retention window.
    let last = kept.last().unwrap().0;
    sqlx::query("UPDATE outbox SET published_at = now() - interval '73 hours' WHERE seq < $1")
        .bind(last)
        .execute(&stack.directory_db)
        .await
        .unwrap();
    let store = user_directory::Store::new(stack.directory_db.clone(), "unused");
    let mut batches = Vec::new();
    loop {
        let n = store.prune_outbox(72, 2).await.unwrap();
        batches.push(n);
        if n < 2 {
            break;
        }
    }
    let prunable = kept.len() as u64 - 1;
    let mut expected = vec![2; usize::try_from(prunable / 2).unwrap()];
    expected.push(prunable % 2);
    assert_eq!(batches, expected, "{prunable} rows, in batches of at most 2");
    let left: Vec<i64> = rows(&stack).await.iter().map(|r| r.0).collect();
    assert_eq!(left, vec![last], "only the event inside the window is kept");
}

/// A stream that lost events it had acknowledged (here: all of them, the stream deleted, as a
/// single broker that lost its disk would be): the relay finds the acknowledged rows beyond the
/// stream's tail and publishes them again, same ids, in their order, before anything newer. The
/// notification service de-duplicates by id: no email is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_stream_lost_are_published_again_with_the_same_ids_and_no_email_twice() {
    let stack = TestStack::start().await;
    let ann = create(&stack, "ann@acme.com").await;
    create(&stack, "bob@acme.com").await;
    let assigned =
        stack.api_post("assignments", json!({"userId": ann, "contentId": "course-1", "title": "Safety 101"})).await;
    assert!((200..300).contains(&assigned.status), "{:?}", assigned.body);
    let before = stack.settled_events().await;
    stack.notifications_idle().await;
    assert_eq!(stack.smtp.received_by("ann@acme.com").len(), 1);

    jetstream::new(stack.nats.clone()).delete_stream(&stack.nats_args.nats_stream).await.unwrap();
    // The next event finds the stream gone, its tail at 0, and everything before it lost.
    create(&stack, "cy@acme.com").await;
    let after = stack.settled_events().await;
    let outbox: Vec<String> = rows(&stack).await.iter().map(|r| r.1.to_string()).collect();
    let stream: Vec<String> = after.iter().map(|e| e.msg_id.clone().unwrap()).collect();
    assert_eq!(stream, outbox, "every event once, in the order they were written");
    assert_eq!(after.len(), before.len() + 1);
    stack.notifications_idle().await;
    assert_eq!(stack.smtp.received_by("ann@acme.com").len(), 1, "the assignment's email was not sent again");
}

/// `user-directory outbox republish --tenant SUB --since TIME`: the tenant's events since then are
/// published again with their ids (a stream that still has them recognises them: nothing is
/// stored twice); older ones, and other tenants', are left alone. A bad time or an unknown tenant
/// is refused.
#[tokio::test]
async fn the_republish_command_publishes_a_tenants_events_since_a_time_again() {
    let stack = TestStack::start().await;
    create(&stack, "early@acme.com").await;
    stack.settled_events().await;
    let since = rows(&stack).await.last().unwrap().4 + time::Duration::milliseconds(1);
    create(&stack, "late1@acme.com").await;
    create(&stack, "late2@acme.com").await;
    // Another tenant's event since then, which the command leaves alone.
    let store = user_directory::Store::new(stack.directory_db.clone(), &stack.nats_args.nats_subject_prefix);
    let (_, key) = store.create_tenant("othertenant", "Other Inc").await.unwrap();
    let other = stack.okta_at(stack.gateway_addr, &e2e::basic("othertenant", &key.key));
    assert_eq!(other.post("/Users", e2e::okta_user("someone@other.com")).await.status, 201);
    let before = stack.settled_events().await;
    let kept = rows(&stack).await;
    let acme: Uuid = sqlx::query_scalar("SELECT id FROM tenants WHERE subdomain = $1")
        .bind(&stack.tenant)
        .fetch_one(&stack.directory_db)
        .await
        .unwrap();
    let tenant_of: HashMap<i64, Uuid> = sqlx::query_as("SELECT seq, tenant_id FROM outbox")
        .fetch_all(&stack.directory_db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let newer = kept.iter().filter(|r| r.4 >= since && tenant_of[&r.0] == acme).count();
    assert_eq!(newer, 2, "two events of the tenant since then");
    assert!(kept.iter().any(|r| r.4 >= since && tenant_of[&r.0] != acme), "and one of another tenant");

    let url = e2e::database_url(&stack.directory_database);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(e2e::processes::binary("user-directory"))
            .args(args)
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let since_text = since.format(&time::format_description::well_known::Rfc3339).unwrap();
    let (ok, said) = run(&["outbox", "republish", "--tenant", &stack.tenant, "--since", &since_text]);
    assert!(ok, "{said}");
    assert!(said.contains(&format!("{newer} events of {}", stack.tenant)), "{said}");

    let after = stack.settled_events().await;
    assert_eq!(after.len(), before.len(), "the stream recognised every id: nothing stored twice");
    let again = rows(&stack).await;
    assert_eq!(again.len(), kept.len());
    for (old, new) in kept.iter().zip(&again) {
        assert_eq!(old.2, new.2, "row {}: the same stream sequence", old.0);
        if old.4 < since || tenant_of[&old.0] != acme {
            assert_eq!(old.3, new.3, "row {}: older, or another tenant's, left alone", old.0);
        } else {
            assert!(new.3 > old.3, "row {}: published again", old.0);
        }
    }

    let (ok, said) = run(&["outbox", "republish", "--tenant", &stack.tenant, "--since", "yesterday"]);
    assert!(!ok && said.contains("RFC 3339"), "{said}");
    let (ok, said) = run(&["outbox", "republish", "--tenant", "nosuchtenant", "--since", &since_text]);
    assert!(!ok && said.contains("no tenant nosuchtenant"), "{said}");
}
