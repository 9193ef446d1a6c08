//! Single-statement leases against the test PostgreSQL server: reused without passing through
//! sqlx's pool, never when what ran on them did not complete, and never at the cost of whoever
//! takes a connection from the pool directly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use infra::Statements;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};

fn url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A pool of `max` connections that gives up waiting for one after a second (the pool's own
/// timeout is what a stranded connection would show as).
async fn pool(max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(1))
        .test_before_acquire(false)
        .connect(&url())
        .await
        .expect("the test PostgreSQL server")
}

async fn backend(statements: &Statements) -> i32 {
    statements
        .run(async |c| sqlx::query_scalar::<Postgres, i32>("SELECT pg_backend_pid()").fetch_one(c).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_completed_statement_leaves_its_connection_for_the_next_one() {
    let pool = pool(4).await;
    let statements = Statements::new(pool.clone());
    let first = backend(&statements).await;
    assert_eq!(statements.idle(), 1, "the connection waits in the list");
    assert_eq!(pool.num_idle(), 0, "and not in sqlx's pool, which it did not pass through");
    for _ in 0..5 {
        assert_eq!(backend(&statements).await, first, "the next statements get the same connection");
    }
    assert_eq!(pool.size(), 1);

    // An error the server answered leaves the connection usable: it is kept.
    let mut lease = statements.lease().await.unwrap();
    let failed = sqlx::query_scalar::<Postgres, i32>("SELECT 1 / 0").fetch_one(&mut *lease).await;
    assert!(matches!(failed, Err(sqlx::Error::Database(_))), "{failed:?}");
    lease.after(&failed);
    assert_eq!(statements.idle(), 1);
    let mut lease = statements.lease().await.unwrap();
    let two = sqlx::query_scalar::<Postgres, i32>("SELECT 2").fetch_one(&mut *lease).await.unwrap();
    lease.done();
    assert_eq!(two, 2, "the connection after a failed statement answers the next one");
}

#[tokio::test]
async fn a_statement_dropped_midway_does_not_leave_its_connection_for_the_next_one() {
    let pool = pool(4).await;
    let statements = Statements::new(pool.clone());
    let mut lease = statements.lease().await.unwrap();
    let slow = sqlx::query_scalar::<Postgres, i32>("SELECT 7 FROM pg_sleep(2)").fetch_one(&mut *lease);
    assert!(tokio::time::timeout(Duration::from_millis(100), slow).await.is_err(), "the statement was cut short");
    drop(lease);
    assert_eq!(statements.idle(), 0, "a connection in the middle of a statement is not reused as it is");
    // The next statement gets its own answer, not the one the cut statement left behind.
    let mut lease = statements.lease().await.unwrap();
    let three = sqlx::query_scalar::<Postgres, i32>("SELECT 3").fetch_one(&mut *lease).await.unwrap();
    lease.done();
    assert_eq!(three, 3);
}

#[tokio::test]
async fn connections_idle_in_the_list_do_not_keep_a_transaction_waiting() {
    let pool = pool(2).await;
    let statements = Statements::new(pool.clone());
    // Both of the pool's connections end up idle in the list.
    let (a, b) = (statements.lease().await.unwrap(), statements.lease().await.unwrap());
    a.done();
    b.done();
    assert_eq!((statements.idle(), pool.num_idle(), pool.size()), (2, 0, 2));
    // Without the list's help this would wait out the pool's timeout: the pool has nothing idle.
    let mut tx = statements.waiting(pool.begin()).await.expect("a connection for the transaction");
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn a_transaction_waiting_for_the_pool_gets_the_next_statement_s_connection() {
    let pool = pool(1).await;
    let statements = Statements::new(pool.clone());
    let lease = statements.lease().await.unwrap();
    let waiter = {
        let (statements, pool) = (statements.clone(), pool.clone());
        tokio::spawn(async move {
            let mut tx = statements.waiting(pool.begin()).await?;
            let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok::<i32, sqlx::Error>(one)
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Done while a transaction waits: the connection goes to it, not into the list.
    lease.done();
    assert_eq!(waiter.await.unwrap().expect("the waiting transaction got the connection"), 1);
    assert_eq!(statements.idle(), 0);
}

#[tokio::test]
async fn closing_returns_the_idle_connections_first() {
    let pool = pool(2).await;
    let statements = Statements::new(pool.clone());
    backend(&statements).await;
    assert_eq!(statements.idle(), 1);
    tokio::time::timeout(Duration::from_secs(5), statements.close()).await.expect("the pool closes");
    assert!(pool.is_closed());
    assert_eq!(statements.idle(), 0);
}

#[tokio::test]
async fn more_statements_than_connections_take_turns_without_timing_out() {
    // 16 tasks over 2 connections: most leases wait while the list's connections go round; a
    // lease waiting on the pool alone would wait out its timeout (a second) while they do.
    let pool = pool(2).await;
    let statements = Statements::new(pool.clone());
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let statements = statements.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let mut lease = statements.lease().await?;
                    let n = sqlx::query_scalar::<Postgres, i32>("SELECT $1 FROM pg_sleep(0.002)")
                        .bind(t * 100 + i)
                        .fetch_one(&mut *lease)
                        .await;
                    lease.after(&n);
                    assert_eq!(n?, t * 100 + i);
                }
                Ok::<(), sqlx::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("every statement got a connection in time");
    }
    assert!(pool.size() <= 2);
}

/// Counts the TCP connections made through it to the test PostgreSQL server.
async fn counting_proxy() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let upstream = url();
    let target = upstream.split('@').nth(1).and_then(|rest| rest.split('/').next()).unwrap().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (counter, proxied) = (accepted.clone(), upstream.replacen(&target, &addr.to_string(), 1));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (proxied, accepted)
}

/// A lease that waits while the pool still has room opens a connection and keeps it; it never
/// starts one and drops it midway when another statement's connection comes first (PostgreSQL
/// would start a backend, and the TLS handshake, for nothing: seen as the postmaster's CPU and
/// "could not accept SSL connection: EOF detected" at thousands a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_never_abandons_a_connection_it_started_to_open() {
    let (proxied, accepted) = counting_proxy().await;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .connect_lazy(&proxied)
        .unwrap();
    let statements = Statements::new(pool.clone());
    // Tasks taking turns on short statements: each finds the list empty now and then.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let statements = statements.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    backend(&statements).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let opened = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(pool.size() <= 8);
    assert_eq!(opened, pool.size() as usize, "connections opened ({opened}) that the pool does not hold");
    statements.close().await;
}

/// A table of this test's own (tests run in parallel against one server).
async fn table(pool: &PgPool, name: &str) -> String {
    let table = format!("leased_tx_{name}_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (n int)")))
        .execute(pool)
        .await
        .unwrap();
    table
}

async fn insert(conn: &mut sqlx::PgConnection, table: &str, n: i32) {
    sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {table} VALUES ($1)"))).bind(n).execute(conn).await.unwrap();
}

/// A transaction after whatever came before on the statements' connections: it begins (at depth
/// 0), writes, and commits.
async fn insert_and_commit(statements: &Statements, table: &str) {
    let before = count(statements.pool(), table).await;
    let mut tx = statements.begin("BEGIN").await.expect("the next transaction begins");
    insert(&mut tx, table, 2).await;
    tx.commit().await.unwrap();
    assert_eq!(count(statements.pool(), table).await, before + 1);
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn a_committed_transaction_leaves_its_connection_for_the_next_statement() {
    let pool = pool(4).await;
    let table = table(&pool, "commit").await;
    let statements = Statements::new(pool.clone());
    let first = backend(&statements).await;
    let pool_idle = pool.num_idle();
    let mut tx = statements.begin("BEGIN; SELECT set_config('app.leased', 'yes', true)").await.unwrap();
    assert_eq!(statements.idle(), 0, "the transaction took the list's connection");
    let scoped: String = sqlx::query_scalar("SELECT current_setting('app.leased')").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(scoped, "yes", "what the begin statement set holds inside the transaction");
    insert(&mut tx, &table, 1).await;
    tx.commit().await.unwrap();
    assert_eq!((statements.idle(), pool.num_idle()), (1, pool_idle), "back in the list, not through sqlx's pool");
    assert_eq!(backend(&statements).await, first);
    assert_eq!(count(statements.pool(), &table).await, 1, "committed");
    // The setting was the transaction's own, and the connection is out of any transaction.
    let after = statements
        .run(async |c| {
            let setting: String = sqlx::query_scalar("SELECT coalesce(current_setting('app.leased', true), '')")
                .fetch_one(&mut *c)
                .await?;
            // Two statements out of a transaction are two transactions.
            let xid = "SELECT txid_current()";
            let (a, b): (i64, i64) =
                (sqlx::query_scalar(xid).fetch_one(&mut *c).await?, sqlx::query_scalar(xid).fetch_one(&mut *c).await?);
            Ok((setting, a != b))
        })
        .await
        .unwrap();
    assert_eq!(after, (String::new(), true));
}

#[tokio::test]
async fn a_transaction_dropped_open_is_rolled_back_and_its_connection_not_reused_as_it_is() {
    let pool = pool(1).await;
    let table = table(&pool, "dropped").await;
    let statements = Statements::new(pool.clone());
    let mut tx = statements.begin("BEGIN").await.unwrap();
    insert(&mut tx, &table, 1).await;
    drop(tx);
    assert_eq!(statements.idle(), 0, "not left open in the list");
    // The pool's one connection comes back (rolled back by sqlx's check) for what follows.
    assert_eq!(count(statements.pool(), &table).await, 0, "rolled back");
    insert_and_commit(&statements, &table).await;
}

#[tokio::test]
async fn a_transaction_whose_statement_failed_rolls_back_and_keeps_its_connection() {
    let pool = pool(2).await;
    let table = table(&pool, "failed").await;
    let statements = Statements::new(pool.clone());
    let mut tx = statements.begin("BEGIN").await.unwrap();
    insert(&mut tx, &table, 1).await;
    let failed = sqlx::query_scalar::<Postgres, i32>("SELECT 1 / 0").fetch_one(&mut *tx).await;
    assert!(matches!(failed, Err(sqlx::Error::Database(_))), "{failed:?}");
    tx.rollback().await.unwrap();
    assert_eq!(statements.idle(), 1, "a rollback the server answered leaves the connection usable");
    assert_eq!(count(statements.pool(), &table).await, 0);
    insert_and_commit(&statements, &table).await;
}

#[tokio::test]
async fn a_transaction_waits_in_line_with_the_statements() {
    let pool = pool(1).await;
    let statements = Statements::new(pool.clone());
    let lease = statements.lease().await.unwrap();
    let waiter = {
        let statements = statements.clone();
        tokio::spawn(async move {
            let mut tx = statements.begin("BEGIN").await?;
            let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok::<i32, sqlx::Error>(one)
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    lease.done();
    assert_eq!(waiter.await.unwrap().expect("the transaction got the statement's connection"), 1);
    assert_eq!(statements.idle(), 1, "and left it in the list");
}

#[tokio::test]
async fn a_failed_begin_closes_its_connection() {
    let pool = pool(1).await;
    let statements = Statements::new(pool.clone());
    let first = backend(&statements).await;
    // BEGIN succeeds, what scopes the transaction fails: the server is left in a failed
    // transaction that sqlx's own begin does not roll back.
    let failed = statements.begin("BEGIN; SELECT 1 / 0").await;
    assert!(matches!(failed, Err(sqlx::Error::Database(_))), "{:?}", failed.err());
    let next = backend(&statements).await;
    assert_ne!(next, first, "the connection was closed, not reused in its failed transaction");
}
