//! The notification database: the recipients projection and the decisions log. Recording a
//! decision and updating the projection happen in one transaction, keyed by event id, so that a
//! redelivered event finds its decision and changes nothing.

use proto::events::v1::envelope::Payload;
use proto::events::v1::{Envelope, Source, UserSnapshot};
use sqlx::PgPool;
use uuid::Uuid;

use crate::decide::{Decision, decide};

/// The outcome of handling an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Decided(Decision),
    /// The event was decided before (a redelivery): nothing was done.
    AlreadyDecided,
}

/// An event that cannot be handled as it is (malformed ids): retrying will not help.
#[derive(Debug, thiserror::Error)]
#[error("malformed event: {0}")]
pub struct Malformed(pub &'static str);

/// Failures while handling an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// An event of a kind this build does not know (a newer producer during a rolling deploy):
    /// it must wait for a consumer that does, not be dropped.
    #[error("an event of a kind this version does not know")]
    UnknownKind,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The user as an event describes them, for user events that carry one.
fn snapshot(payload: &Payload) -> Option<&UserSnapshot> {
    match payload {
        Payload::UserCreated(e) => e.user.as_ref(),
        Payload::UserUpdated(e) => e.user.as_ref(),
        Payload::UserDeactivated(e) => e.user.as_ref(),
        Payload::UserReactivated(e) => e.user.as_ref(),
        Payload::UserLinked(e) => e.user.as_ref(),
        _ => None,
    }
}

fn source_name(s: i32) -> &'static str {
    match Source::try_from(s) {
        Ok(Source::Admin) => "admin",
        Ok(Source::Import) => "import",
        _ => "scim",
    }
}

/// Decides an event and records the decision and the projection change, once.
pub async fn handle(pool: &PgPool, envelope: &Envelope) -> Result<Handled, HandleError> {
    let event_id = Uuid::parse_str(&envelope.event_id).map_err(|_| Malformed("event_id"))?;
    let tenant_id = Uuid::parse_str(&envelope.tenant_id).map_err(|_| Malformed("tenant_id"))?;
    let resource_id = Uuid::parse_str(&envelope.resource_id).map_err(|_| Malformed("resource_id"))?;
    let payload = envelope.payload.as_ref().ok_or(HandleError::UnknownKind)?;
    let (resource, event) = events::event_name(payload);
    let decision = decide(envelope);

    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO decisions (event_id, tenant_id, resource_id, event_type, outcome, reason)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(tenant_id)
    .bind(resource_id)
    .bind(format!("{resource}.{event}"))
    .bind(decision.outcome.as_str())
    .bind(decision.reason)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(Handled::AlreadyDecided);
    }
    if let Some(user) = snapshot(payload) {
        sqlx::query(
            "INSERT INTO recipients (tenant_id, user_id, tenant, email, given_name, family_name, display_name,
                locale, active, source, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET
                tenant = excluded.tenant, email = excluded.email, given_name = excluded.given_name,
                family_name = excluded.family_name, display_name = excluded.display_name,
                locale = excluded.locale, active = excluded.active, source = excluded.source,
                version = excluded.version, updated_at = now()
             WHERE recipients.version < excluded.version",
        )
        .bind(tenant_id)
        .bind(resource_id)
        .bind(&envelope.tenant)
        .bind(&user.email)
        .bind(&user.given_name)
        .bind(&user.family_name)
        .bind(&user.display_name)
        .bind(&user.locale)
        .bind(user.active)
        .bind(source_name(envelope.source))
        .bind(envelope.resource_version)
        .execute(&mut *tx)
        .await?;
    }
    if let Payload::UserDeleted(_) = payload {
        sqlx::query(
            "UPDATE recipients SET deleted = true, active = false, version = $3, updated_at = now()
             WHERE tenant_id = $1 AND user_id = $2 AND version < $3",
        )
        .bind(tenant_id)
        .bind(resource_id)
        .bind(envelope.resource_version)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Handled::Decided(decision))
}
