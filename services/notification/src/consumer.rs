//! The durable JetStream pull consumer. A message is acknowledged only after its decision is
//! committed; a failure to record it is a NAK with a delay (redelivered later); an event of a kind
//! this version does not know waits (NAK, one minute) for a version that does; a message that can
//! never be handled (not an envelope, or malformed ids) is terminated and logged.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use prost::Message as _;
use proto::events::v1::Envelope;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store::{HandleError, Handled, handle};

/// How long the server waits for an acknowledgement before redelivering.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long a failed message waits before redelivery.
const RETRY_DELAY: Duration = Duration::from_secs(2);
/// How long an event of an unknown kind waits for a consumer that knows it.
const UNKNOWN_KIND_DELAY: Duration = Duration::from_secs(60);
const BACKOFF: Duration = Duration::from_secs(1);

/// Consumes until `shutdown` is cancelled; reconnects after failures.
pub async fn run(
    pool: PgPool,
    nats: events::NatsArgs,
    consumer: String,
    client: async_nats::Client,
    shutdown: CancellationToken,
) {
    loop {
        match consume(&pool, &nats, &consumer, &client, &shutdown).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "event consumer interrupted; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(BACKOFF) => {}
        }
    }
}

async fn consume(
    pool: &PgPool,
    nats: &events::NatsArgs,
    name: &str,
    client: &async_nats::Client,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let js = jetstream::new(client.clone());
    let stream = nats.ensure_stream(&js).await?;
    let consumer = stream
        .get_or_create_consumer::<pull::Config>(
            name,
            pull::Config {
                durable_name: Some(name.to_owned()),
                filter_subject: nats.all_subjects(),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: ACK_WAIT,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    tracing::info!(consumer = name, "event consumer running");
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = messages.next() => m,
        };
        let Some(message) = message else { anyhow::bail!("the message stream ended") };
        let message = message?;
        let envelope = match Envelope::decode(message.payload.clone()) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(subject = %message.subject, error = %e, "undecodable event terminated");
                message.ack_with(AckKind::Term).await.map_err(|e| anyhow::anyhow!(e))?;
                continue;
            }
        };
        match handle(pool, &envelope).await {
            Ok(Handled::Decided(d)) => {
                tracing::debug!(event_id = %envelope.event_id, outcome = d.outcome.as_str(), reason = d.reason, "decided");
                message.ack().await.map_err(|e| anyhow::anyhow!(e))?;
            }
            Ok(Handled::AlreadyDecided) => {
                tracing::info!(event_id = %envelope.event_id, "redelivered event already decided");
                message.ack().await.map_err(|e| anyhow::anyhow!(e))?;
            }
            Err(HandleError::Malformed(e)) => {
                tracing::error!(event_id = %envelope.event_id, error = %e, "malformed event terminated");
                message.ack_with(AckKind::Term).await.map_err(|e| anyhow::anyhow!(e))?;
            }
            Err(HandleError::UnknownKind) => {
                tracing::warn!(event_id = %envelope.event_id, subject = %message.subject, "event of an unknown kind left for a newer consumer");
                message.ack_with(AckKind::Nak(Some(UNKNOWN_KIND_DELAY))).await.map_err(|e| anyhow::anyhow!(e))?;
            }
            Err(HandleError::Database(e)) => {
                tracing::warn!(event_id = %envelope.event_id, error = %e, "recording a decision failed; will retry");
                message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await.map_err(|e| anyhow::anyhow!(e))?;
            }
        }
    }
}
