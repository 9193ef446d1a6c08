//! How a revoked key, a suspended tenant or a paused one reaches every gateway within a second:
//! user-directory emits `tenant.key_revoked` and `tenant.changed` events, and each gateway listens
//! to them on plain NATS (no durable consumer: a gateway only cares about what happens while it
//! runs) and drops what it cached. If NATS is unreachable, the cache's time to live
//! (`AUTH_CACHE_TTL_SECS`) still bounds how long a revoked key keeps working.

use futures::StreamExt;
use prost::Message as _;
use proto::events::v1::Envelope;
use proto::events::v1::envelope::Payload;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;

/// Applies one event to the cache.
pub fn apply(auth: &Authenticator, envelope: &Envelope) {
    match envelope.payload {
        Some(Payload::KeyRevoked(_)) => {
            tracing::info!(tenant = %envelope.tenant, key_id = %envelope.resource_id, "key revoked: dropped from the cache");
            auth.forget_key(&envelope.resource_id);
        }
        Some(Payload::TenantChanged(_)) => {
            tracing::info!(tenant = %envelope.tenant, "tenant changed: dropped from the cache");
            auth.forget_tenant(&envelope.tenant_id);
        }
        _ => {}
    }
}

/// A subscription to tenant events.
pub struct Subscription {
    client: async_nats::Client,
    subscriber: async_nats::Subscriber,
}

/// Subscribes, and waits (briefly) until the server has the subscription, so that a gateway
/// that reports itself built misses no revocation. When NATS is unreachable the client keeps
/// trying in the background and the gateway serves meanwhile.
pub async fn subscribe(nats: &events::NatsArgs) -> Option<Subscription> {
    let unbounded = "revocations reach this gateway only through the cache's time to live";
    let client = match nats.connect("scim-gateway").await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "NATS unreachable: {unbounded}");
            return None;
        }
    };
    let subject = nats.tenant_subjects();
    let subscriber = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "subscribing to tenant events failed: {unbounded}");
            return None;
        }
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), client.flush()).await {
        Ok(Ok(())) => tracing::info!(%subject, "listening for revocations"),
        _ => tracing::warn!(%subject, "NATS not reachable yet; revocations will be heard once it is"),
    }
    Some(Subscription { client, subscriber })
}

/// Applies tenant events until `token` is cancelled.
pub async fn listen(subscription: Subscription, auth: Authenticator, token: CancellationToken) {
    let Subscription { client, mut subscriber } = subscription;
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            message = subscriber.next() => match message {
                Some(m) => match Envelope::decode(m.payload) {
                    Ok(envelope) => apply(&auth, &envelope),
                    Err(e) => tracing::warn!(subject = %m.subject, error = %e, "undecodable tenant event ignored"),
                },
                None => break,
            },
        }
    }
    let _ = subscriber.unsubscribe().await;
    drop(client);
}
