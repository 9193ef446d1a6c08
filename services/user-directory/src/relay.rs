//! The outbox relay: publishes outbox rows to JetStream in `seq` order, with `Nats-Msg-Id` set to
//! the event id, and marks them published once the server has acknowledged them.
//!
//! Exactly one relay is active per database: it holds a PostgreSQL advisory lock on a connection
//! of its own, and the others wait for it. It wakes on `NOTIFY outbox` (sent at commit by a
//! trigger) and also polls, so a lost notification only delays. Publishes are pipelined; after a
//! failure the batch is retried from the first unacknowledged row, and JetStream's de-duplication
//! window drops the rows it already stored, so every event is on the stream once.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::store::{OutboxRow, Store};

/// The advisory lock key of the relay ("outbox" in ASCII).
const LOCK_KEY: i64 = 0x6f7574626f78;
/// The most rows published per round.
const BATCH: i64 = 512;
/// How often the relay looks for rows without being woken.
const POLL: Duration = Duration::from_millis(500);
/// How long to wait after a failure, and between attempts to become the active relay.
const BACKOFF: Duration = Duration::from_secs(1);

/// Runs the relay until `shutdown` is cancelled.
pub async fn run(store: Store, nats: events::NatsArgs, client: async_nats::Client, shutdown: CancellationToken) {
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = lead(&store, &nats, &client, &shutdown) => r,
        };
        match result {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "outbox relay interrupted; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(BACKOFF) => {}
        }
    }
}

/// Becomes the active relay, then publishes until shutdown or a failure.
async fn lead(
    store: &Store,
    nats: &events::NatsArgs,
    client: &async_nats::Client,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    // The lock lives as long as this connection, which is kept out of the pool.
    let mut lock = store.pool().acquire().await?.detach();
    while !sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)").bind(LOCK_KEY).fetch_one(&mut lock).await? {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(BACKOFF * 2) => {}
        }
    }
    tracing::info!("outbox relay active");
    let js = jetstream::new(client.clone());
    nats.ensure_stream(&js).await?;
    let mut listener = PgListener::connect_with(store.pool()).await?;
    listener.listen("outbox").await?;
    loop {
        let rows = store.pending_events(BATCH).await?;
        if rows.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = listener.recv() => { n?; }
                _ = tokio::time::sleep(POLL) => { still_holding(&mut lock).await?; }
            }
            continue;
        }
        let (published, failure) = publish(&js, &rows).await;
        if !published.is_empty() {
            store.mark_published(&published).await?;
            tracing::debug!(count = published.len(), "events published");
        }
        if let Some(e) = failure {
            return Err(e);
        }
    }
}

/// Checks the lock's connection is alive: if it died, so did the lock, and another relay may
/// have taken over.
async fn still_holding(lock: &mut PgConnection) -> anyhow::Result<()> {
    lock.ping().await?;
    Ok(())
}

/// Publishes rows in order, pipelined; returns the seqs of the acknowledged prefix and the error
/// that ended it, if any.
async fn publish(js: &jetstream::Context, rows: &[OutboxRow]) -> (Vec<i64>, Option<anyhow::Error>) {
    let mut pending: Vec<(i64, PublishAckFuture)> = Vec::with_capacity(rows.len());
    let mut failure = None;
    for row in rows {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, row.event_id.to_string().as_str());
        match js.publish_with_headers(row.subject.clone(), headers, row.payload.clone().into()).await {
            Ok(ack) => pending.push((row.seq, ack)),
            Err(e) => {
                failure = Some(anyhow::Error::new(e).context("publishing an event"));
                break;
            }
        }
    }
    let mut published = Vec::with_capacity(pending.len());
    for (seq, ack) in pending {
        match ack.await {
            Ok(_) => published.push(seq),
            Err(e) => {
                failure = Some(anyhow::Error::new(e).context("waiting for the stream's acknowledgement"));
                break;
            }
        }
    }
    (published, failure)
}
