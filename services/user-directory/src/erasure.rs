//! The stream's side of an erasure (ADR 0025): the events about an erased user that carry their
//! data are deleted from the JetStream stream. The databases' side ([`Store::erase_user`]) comes
//! first; then every event about the user must have reached the stream (the relay publishes the
//! outbox in order, and the outbox's copies were given the tombstone in the erasure's
//! transaction, so one published after it names nobody), and the tenant's user events are read
//! once, deleting those that still name them. Run again, it finds nothing more to delete. It
//! needs of NATS only what the relay has and `STREAM.MSG.DELETE` (deploy/nats/auth.conf.template).

use std::time::Duration;

use async_nats::jetstream::{self, stream::RawMessageErrorKind};
use prost::Message as _;
use proto::events::v1::Envelope;
use proto::{DomainError, ErrorKind};
use uuid::Uuid;

use crate::store::{Store, Tenant, tombstone_name};

/// How long the API's erasure waits for the relay to publish the user's last events: well within
/// the gateway's deadline for a directory call (30 s), so that the caller gets this service's
/// answer; the command line waits longer ([`RELAY_WAIT_CLI`]).
pub const RELAY_WAIT: Duration = Duration::from_secs(10);

/// How long `user-directory user erase` waits for the relay.
pub const RELAY_WAIT_CLI: Duration = Duration::from_secs(60);

/// How long after its first pass an erasure reads the request log again, by the user's id: a
/// gateway writes its log in batches (every 200 ms, and later while the directory refuses them),
/// so a request about the user made just before the erasure may be written just after its scan.
pub const LATE_LOG_WAIT: Duration = Duration::from_secs(1);

/// An erasure, whole: the databases' part, the stream's, then the second pass over the request
/// log ([`LATE_LOG_WAIT`]); what it did.
pub async fn erase(
    store: &Store,
    eraser: &StreamEraser,
    tenant: &Tenant,
    user_id: &str,
    erased_by: &str,
    relay_wait: Duration,
) -> Result<(crate::store::Erasure, u64), DomainError> {
    let mut done = store.erase_user(tenant, user_id, erased_by).await?;
    let stream_messages = eraser.purge(store, tenant, done.user_id, relay_wait).await?;
    tokio::time::sleep(LATE_LOG_WAIT).await;
    done.request_log_rows += store.erase_user(tenant, user_id, erased_by).await?.request_log_rows;
    Ok((done, stream_messages))
}

/// Deletes an erased user's events from the stream.
#[derive(Clone)]
pub struct StreamEraser {
    js: jetstream::Context,
    nats: events::NatsArgs,
}

fn unavailable(what: impl std::fmt::Display) -> DomainError {
    DomainError::new(
        ErrorKind::Unavailable,
        format!(
            "The user is erased in the databases, but their events could not all be removed from the event stream yet ({what}). Make the same request again."
        ),
    )
}

impl StreamEraser {
    pub fn new(client: async_nats::Client, nats: events::NatsArgs) -> Self {
        StreamEraser { js: jetstream::new(client), nats }
    }

    /// Waits up to `wait` for the user's events to be on the stream, then deletes those that
    /// carry their data; returns how many it deleted.
    pub async fn purge(&self, store: &Store, tenant: &Tenant, user: Uuid, wait: Duration) -> Result<u64, DomainError> {
        let deadline = tokio::time::Instant::now() + wait;
        while store.user_events_unpublished(tenant, user).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable("the relay has not published them yet"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stream = self.js.get_stream(&self.nats.nats_stream).await.map_err(unavailable)?;
        let subjects = format!("{}.v1.{}.user.>", self.nats.nats_subject_prefix, tenant.subdomain);
        let (id, tombstone) = (user.to_string(), tombstone_name(user));
        // One message at a time, the next of the tenant's user subjects after the last one read:
        // the stream-get request the relay's permissions already allow (no consumer to create).
        let (mut next, mut deleted) = (1u64, 0);
        loop {
            let message = match stream.get_first_raw_message_by_subject(&subjects, next).await {
                Ok(m) => m,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(unavailable(e)),
            };
            next = message.sequence + 1;
            let Ok(envelope) = Envelope::decode(message.payload) else { continue };
            // Only a snapshot carries their data, and the tombstone's none.
            let names_them =
                envelope.payload.as_ref().and_then(events::user_snapshot).is_some_and(|u| u.user_name != tombstone);
            if envelope.resource_id != id || !names_them {
                continue;
            }
            stream.delete_message(message.sequence).await.map_err(unavailable)?;
            deleted += 1;
        }
        Ok(deleted)
    }
}
