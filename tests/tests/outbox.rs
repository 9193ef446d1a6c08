//! How the relay is woken: never by a NOTIFY inside a write (PostgreSQL serialises the commits of
//! every transaction that notified, through their WAL flush, across the cluster), but by the
//! writing process after its commits, and by `announce` for relays in other processes.

use std::time::Duration;

use e2e::TestStack;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

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
