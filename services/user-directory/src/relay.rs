//! The outbox relay: publishes outbox rows to JetStream in `seq` order, with `Nats-Msg-Id` set to
//! the event id, and marks them published once the server has acknowledged them.
//!
//! Exactly one relay is active per database: it holds a PostgreSQL advisory lock on a connection
//! of its own, and the others wait for it. It wakes when its own process commits events
//! (`Store::commit`), on `NOTIFY outbox` (sent by `announce` of every replica after its commits,
//! never inside a write), and also polls, so a lost notification only delays.
//!
//! Publishes are pipelined, and chained: each carries `Nats-Expected-Last-Msg-Id` = the previous
//! event's id, so the server refuses an event whose predecessor did not arrive, and a lost publish
//! can never let a later event overtake it. After a failure the relay retries from the first
//! unacknowledged row; the server recognises the rows it already stored by `Nats-Msg-Id` (its
//! de-duplication is checked before the chain) and acknowledges them again, so every event is on
//! the stream once, in order. Acknowledged rows are deleted: the outbox is the backlog.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use sqlx::Connection;
use sqlx::postgres::PgListener;
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
/// How often the active relay checks that it still holds the lock.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

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
    // While active, this process's commits wake it directly: `announce` stays quiet.
    let _here = RelayHere::new(store);
    let js = jetstream::new(client.clone());
    let stream = nats.ensure_stream(&js).await?;
    // The chain starts from the last event on the stream.
    let mut last_id = last_message_id(stream).await;
    let mut listener = PgListener::connect_with(store.pool()).await?;
    listener.listen("outbox").await?;
    let mut written = store.written();
    let mut housekeeping = tokio::time::Instant::now();
    loop {
        if housekeeping.elapsed() >= HOUSEKEEPING {
            // If the lock's connection died, so did the lock: another relay may have taken over.
            lock.ping().await?;
            housekeeping = tokio::time::Instant::now();
            let backlog = store.backlog().await?;
            *crate::observe::metrics().backlog.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(backlog);
        }
        // Commits from here on wake the next wait.
        written.borrow_and_update();
        let rows = store.pending_events(BATCH).await?;
        if rows.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = listener.recv() => { n?; }
                _ = written.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            continue;
        }
        let (published, failure) = publish(&js, &rows, &mut last_id).await;
        if !published.is_empty() {
            store.mark_published(&published).await?;
            tracing::debug!(count = published.len(), "events published");
        }
        if let Some(e) = failure {
            return Err(e);
        }
    }
}

/// Marks this process's relay active for as long as it lives.
struct RelayHere(Store);

impl RelayHere {
    fn new(store: &Store) -> Self {
        store.set_relay_here(true);
        RelayHere(store.clone())
    }
}

impl Drop for RelayHere {
    fn drop(&mut self) {
        self.0.set_relay_here(false);
    }
}

/// Tells the relay, when it runs in another replica, that events were committed here:
/// `NOTIFY outbox`, in a short transaction of its own after the commits, once per burst of them
/// (nothing while this process's relay is the active one: it was woken directly). Never inside a
/// write: PostgreSQL serialises the commits of every transaction that notified, through their
/// WAL flush, across the whole cluster.
pub async fn announce(store: Store, shutdown: CancellationToken) {
    let mut written = store.written();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = written.changed() => if changed.is_err() { return },
        }
        written.borrow_and_update();
        if store.relay_here() {
            continue;
        }
        // Nothing in it needs to be durable: its commit does not wait for the WAL flush.
        let notify = "BEGIN; SET LOCAL synchronous_commit = off; SELECT pg_notify('outbox', ''); COMMIT";
        if let Err(e) = sqlx::raw_sql(notify).execute(store.pool()).await {
            tracing::debug!(error = %e, "announcing committed events failed (the relay polls)");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(BACKOFF) => {}
            }
        }
    }
}

/// The `Nats-Msg-Id` of the stream's last message, if it has one.
async fn last_message_id(mut stream: jetstream::stream::Stream) -> Option<String> {
    let last = stream.info().await.ok()?.state.last_sequence;
    if last == 0 {
        return None;
    }
    let message = stream.get_raw_message(last).await.ok()?;
    message.headers.get(async_nats::header::NATS_MESSAGE_ID).map(|v| v.as_str().to_owned())
}

/// The tenant a subject names (`<prefix>.v1.<tenant>.<resource>.<event>`; the prefix may have
/// dots of its own, the last four tokens never do).
fn subject_tenant(subject: &str) -> String {
    let tokens: Vec<&str> = subject.split('.').collect();
    tokens.len().checked_sub(3).and_then(|i| tokens.get(i)).map_or_else(String::new, |t| (*t).to_owned())
}

/// Publishes rows in order, pipelined and chained; returns the seqs of the acknowledged prefix
/// and the error that ended it, if any. `last_id` follows the last acknowledged event.
async fn publish(
    js: &jetstream::Context,
    rows: &[OutboxRow],
    last_id: &mut Option<String>,
) -> (Vec<i64>, Option<anyhow::Error>) {
    let mut pending: Vec<(i64, String, PublishAckFuture, tracing::Span, String)> = Vec::with_capacity(rows.len());
    let mut failure = None;
    let mut previous = last_id.clone();
    for row in rows {
        let id = row.event_id.to_string();
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        if let Some(prev) = &previous {
            headers.insert(async_nats::header::NATS_EXPECTED_LAST_MESSAGE_ID, prev.as_str());
        }
        // The publication continues the trace of the request that wrote the event, and hands it
        // on to the consumers in the message's headers.
        let span = tracing::info_span!(
            "relay.publish",
            otel.kind = "producer",
            event_id = %id,
            subject = %row.subject,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        if row.trace_context.is_some() {
            telemetry::adopt(&span, telemetry::context_of(row.trace_context.as_deref()));
            for (k, v) in telemetry::span_headers(&span) {
                headers.insert(k.as_str(), v.as_str());
            }
        }
        match js.publish_with_headers(row.subject.clone(), headers, row.payload.clone().into()).await {
            Ok(ack) => pending.push((row.seq, id.clone(), ack, span, subject_tenant(&row.subject))),
            Err(e) => {
                failure = Some(anyhow::Error::new(e).context("publishing an event"));
                break;
            }
        }
        previous = Some(id);
    }
    let mut published = Vec::with_capacity(pending.len());
    for (seq, id, ack, span, tenant) in pending {
        match ack.await {
            Ok(_) => {
                published.push(seq);
                *last_id = Some(id);
                crate::observe::metrics().relay_published.add(1, &[telemetry::KeyValue::new("tenant", tenant)]);
                drop(span);
            }
            Err(e) => {
                failure = Some(anyhow::Error::new(e).context("waiting for the stream's acknowledgement"));
                break;
            }
        }
    }
    (published, failure)
}
