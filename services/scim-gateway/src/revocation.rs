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

/// Listens until `token` is cancelled. Subscribing is retried: the gateway serves meanwhile.
pub async fn listen(nats: events::NatsArgs, auth: Authenticator, token: CancellationToken) {
    let client = tokio::select! {
        _ = token.cancelled() => return,
        c = nats.connect("scim-gateway") => match c {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "NATS unreachable: revocations reach this gateway only through the cache's time to live");
                return;
            }
        },
    };
    let subject = nats.tenant_subjects();
    let mut subscription = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "subscribing to tenant events failed: revocations reach this gateway only through the cache's time to live");
            return;
        }
    };
    tracing::info!(%subject, "listening for revocations");
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            message = subscription.next() => match message {
                Some(m) => match Envelope::decode(m.payload) {
                    Ok(envelope) => apply(&auth, &envelope),
                    Err(e) => tracing::warn!(subject = %m.subject, error = %e, "undecodable tenant event ignored"),
                },
                None => break,
            },
        }
    }
    let _ = subscription.unsubscribe().await;
}
