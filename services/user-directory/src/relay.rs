//! The outbox relay: publishes outbox rows to JetStream in `seq` order, with `Nats-Msg-Id` set to
//! the event id, and marks them published once the server has acknowledged them.
//!
//! Exactly one relay is active per database: it holds a PostgreSQL advisory lock on a connection
//! of its own, and the others wait for it. It wakes when its own process commits events
//! (`Store::commit`), on `NOTIFY outbox` (sent by `announce` of every replica after its commits,
//! never inside a write), and also polls, so a lost notification only delays.
//!
//! Publishes are pipelined, and chained: each expects the stream's tail to be exactly its
//! predecessor, by id (`Nats-Expected-Last-Msg-Id`) and by stream sequence
//! (`Nats-Expected-Last-Sequence`), so the server refuses an event whose predecessor did not
//! arrive, and a lost publish can never let a later event overtake it. Both are needed: the server
//! checks de-duplication first, so an id alone lets a chain continue behind a predecessor that is
//! a duplicate stored by an earlier, failed round (whose publications may still arrive after a
//! reconnection), even though a row between them was refused; the sequence says how many events
//! the stream holds, which only the whole chain can satisfy. Seen once under a broker restart
//! (a user's events stored as versions 2, 3, 1) before the sequence was added.
//!
//! After a failure the relay retries from the first unacknowledged row, from the tail the stream
//! really has (read after the connection has flushed whatever the failed round still had in
//! flight); the server recognises the rows it already stored by `Nats-Msg-Id` and acknowledges
//! them again, so every event is on the stream once, in order.
//!
//! Acknowledged rows are kept, with the stream sequence the server stored them at, for the
//! retention window (`OUTBOX_RETENTION_HOURS`; ADR 0022): each time the relay reads the stream's
//! tail (when it becomes active, and after every failure) the rows acknowledged beyond that tail
//! are ones the stream lost (a broker that lost its disk, or crashed before its fsync), and are
//! published again, same ids, before anything newer.

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
const BATCH: i32 = 512;
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
    let mut lock = store.statements().waiting(store.pool().acquire()).await?.detach();
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
    let stream = nats.reconcile_stream(&js).await?;
    // Whatever an earlier, failed round still had in flight reaches the server first; the chain
    // then starts from the stream's real tail.
    client.flush().await?;
    let mut tail = stream_tail(&stream).await?;
    // The tail just read, for the next round to compare the acknowledged rows with.
    let mut fresh_tail = Some(tail.seq);
    let mut listener = store.statements().waiting(PgListener::connect_with(store.pool())).await?;
    listener.listen("outbox").await?;
    let mut written = store.written();
    let mut housekeeping = tokio::time::Instant::now();
    // The rows the stream acknowledged in the last round, forgotten by the next.
    let mut published = Vec::new();
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
        let rows = store.relay_round(&published, fresh_tail.take(), BATCH).await?;
        published.clear();
        if rows.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = listener.recv() => { n?; }
                _ = written.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            continue;
        }
        let failure;
        (published, failure) = publish(&js, &rows, &mut tail).await;
        if !published.is_empty() {
            tracing::debug!(count = published.len(), "events published");
        }
        if let Some(e) = failure {
            if published.is_empty() {
                return Err(e);
            }
            // Progress, then a refusal (typically: a row the stream already held, acknowledged
            // as a duplicate, so the expectations of the rows after it were one ahead). Start
            // again from the stream's tail.
            tracing::debug!(error = %e, "a round ended early; continuing from the stream's tail");
            client.flush().await?;
            tail = stream_tail(&stream).await?;
            fresh_tail = Some(tail.seq);
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
        if let Err(e) = store.statements().waiting(sqlx::raw_sql(notify).execute(store.pool())).await {
            tracing::debug!(error = %e, "announcing committed events failed (the relay polls)");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(BACKOFF) => {}
            }
        }
    }
}

/// Where the stream ends: its last sequence, and the `Nats-Msg-Id` stored there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tail {
    seq: u64,
    id: Option<String>,
}

/// The stream's tail as the server has it now. An error is an error: a chain never starts
/// without knowing where it continues.
async fn stream_tail(stream: &jetstream::stream::Stream) -> anyhow::Result<Tail> {
    let mut stream = stream.clone();
    let info = stream.info().await?;
    // A clustered stream without a leader (its quorum lost) can still be answered for, with an
    // empty state: that is not its tail, and taking it for one would make every kept row look
    // lost and be published again.
    if info.cluster.as_ref().is_some_and(|c| c.leader.as_deref().unwrap_or("").is_empty()) {
        anyhow::bail!("the stream has no leader (no quorum): its tail is unknown");
    }
    let seq = info.state.last_sequence;
    if seq == 0 {
        return Ok(Tail::default());
    }
    let id = match stream.get_raw_message(seq).await {
        Ok(m) => m.headers.get(async_nats::header::NATS_MESSAGE_ID).map(|v| v.as_str().to_owned()),
        // The last message aged out (max_age): the sequence alone holds the chain.
        Err(e) if e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => None,
        Err(e) => return Err(e.into()),
    };
    Ok(Tail { seq, id })
}

/// The tenant a subject names (`<prefix>.v1.<tenant>.<resource>.<event>`; the prefix may have
/// dots of its own, the last four tokens never do).
fn subject_tenant(subject: &str) -> String {
    let tokens: Vec<&str> = subject.split('.').collect();
    tokens.len().checked_sub(3).and_then(|i| tokens.get(i)).map_or_else(String::new, |t| (*t).to_owned())
}

/// Publishes rows in order, pipelined and chained; returns the acknowledged prefix (each row's
/// seq, and the stream sequence its event is stored at) and the error that ended it, if any.
/// `tail` follows the events this round stored.
async fn publish(
    js: &jetstream::Context,
    rows: &[OutboxRow],
    tail: &mut Tail,
) -> (Vec<(i64, u64)>, Option<anyhow::Error>) {
    let mut pending: Vec<(i64, String, PublishAckFuture, tracing::Span, String)> = Vec::with_capacity(rows.len());
    let mut failure = None;
    let mut previous = tail.clone();
    for row in rows {
        let id = row.event_id.to_string();
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        if let Some(prev) = &previous.id {
            headers.insert(async_nats::header::NATS_EXPECTED_LAST_MESSAGE_ID, prev.as_str());
        }
        // 0 is "no expectation" to the server: only the very first event of an empty stream.
        if previous.seq > 0 {
            headers.insert(async_nats::header::NATS_EXPECTED_LAST_SEQUENCE, previous.seq.to_string().as_str());
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
        previous = Tail { seq: previous.seq + 1, id: Some(id) };
    }
    let mut published = Vec::with_capacity(pending.len());
    for (seq, id, ack, span, tenant) in pending {
        match ack.await {
            Ok(ack) => {
                published.push((seq, ack.sequence));
                // A duplicate was stored before (an earlier round's): the tail did not move.
                if !ack.duplicate {
                    *tail = Tail { seq: ack.sequence, id: Some(id) };
                }
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

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn row(seq: i64, prefix: &str) -> OutboxRow {
        OutboxRow {
            seq,
            event_id: Uuid::now_v7(),
            subject: format!("{prefix}.v1.acme.user.updated"),
            payload: seq.to_string().into_bytes(),
            trace_context: None,
        }
    }

    async fn stored(stream: &jetstream::stream::Stream) -> Vec<String> {
        let mut stream = stream.clone();
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut ids = Vec::new();
        for seq in 1..=last {
            let m = stream.get_raw_message(seq).await.unwrap();
            ids.push(m.headers.get(async_nats::header::NATS_MESSAGE_ID).unwrap().as_str().to_owned());
        }
        ids
    }

    /// The hole an id-only chain has: the server checks de-duplication before the chain, so a
    /// row stored by an earlier round (its snapshot did not have U1 yet) is acknowledged as a
    /// duplicate in the middle of this round's chain, and U2 behind it found its expected
    /// predecessor at the tail although U1 had been refused. With the stream sequence expected
    /// too, U2 is refused, and the next rounds store U1 before it.
    #[tokio::test]
    async fn a_duplicate_inside_a_chain_does_not_let_an_event_overtake_a_refused_one() {
        let url = std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        let client = async_nats::connect(&url).await.expect("NATS (TEST_NATS_URL)");
        let js = jetstream::new(client);
        let unique = Uuid::new_v4().simple().to_string();
        let nats = events::NatsArgs::new(url, format!("RELAYTEST_{unique}"), format!("relaytest{unique}"));
        let stream = nats.ensure_stream(&js).await.unwrap();
        let prefix = nats.nats_subject_prefix.clone();
        let (l, y, u1, z, u2) = (row(1, &prefix), row(2, &prefix), row(3, &prefix), row(4, &prefix), row(5, &prefix));
        let id = |r: &OutboxRow| r.event_id.to_string();

        let mut tail = Tail::default();
        assert!(publish(&js, std::slice::from_ref(&l), &mut tail).await.1.is_none());
        let read_before = stream_tail(&stream).await.unwrap();
        assert_eq!(read_before, tail);
        // The earlier round's Y and Z land after this round read the tail.
        let mut stale = read_before.clone();
        assert!(publish(&js, &[y.clone(), z.clone()], &mut stale).await.1.is_none());

        let mut tail = read_before;
        let (published, failure) = publish(&js, &[y.clone(), u1.clone(), z.clone(), u2.clone()], &mut tail).await;
        assert_eq!(published, vec![(2, 2)], "Y is acknowledged (a duplicate, stored at 2), U1 refused");
        assert!(failure.is_some());
        assert_eq!(stored(&stream).await, vec![id(&l), id(&y), id(&z)], "U2 did not get in ahead of U1");

        // The relay goes on from the stream's real tail until everything is acknowledged.
        let mut pending = vec![u1.clone(), z.clone(), u2.clone()];
        for _ in 0..5 {
            if pending.is_empty() {
                break;
            }
            let mut tail = stream_tail(&stream).await.unwrap();
            let (published, _) = publish(&js, &pending, &mut tail).await;
            pending.retain(|r| !published.iter().any(|(seq, _)| *seq == r.seq));
        }
        assert!(pending.is_empty());
        assert_eq!(stored(&stream).await, vec![id(&l), id(&y), id(&z), id(&u1), id(&u2)]);
        js.delete_stream(&nats.nats_stream).await.unwrap();
    }
}
