//! The transactional outbox: an event is a row written in the same transaction as the change it
//! describes, so that no committed change lacks its event and no event describes a change that
//! rolled back. The relay publishes rows in `seq` order.

use prost::Message;
use proto::DomainError;
use proto::events::v1::envelope::Payload;
use proto::events::v1::{Envelope, Source};
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, Tenant, db_error, end_read};

tokio::task_local! {
    /// The ids of the events the current request wrote, when the caller collects them (the
    /// gRPC layer does, and returns them to the gateway for its request log).
    pub static EVENT_IDS: std::cell::RefCell<Vec<Uuid>>;
}

/// An event about to be written: what changed, on which resource, at which version.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub resource_id: Uuid,
    pub resource_version: i64,
    pub source: Source,
    pub occurred_at: OffsetDateTime,
    pub payload: Payload,
}

/// An outbox row to publish.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub event_id: Uuid,
    pub subject: String,
    pub payload: Vec<u8>,
    /// The W3C traceparent of the request that wrote it.
    pub trace_context: Option<String>,
}

/// The outbox's backlog: rows not yet published, and the age of the oldest in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    pub rows: i64,
    pub oldest_age_secs: f64,
}

/// An outbox row about to be written: the event's id, subject, encoded envelope and the trace.
pub(crate) struct NewOutboxRow {
    pub event_id: Uuid,
    pub subject: String,
    pub payload: Vec<u8>,
    pub trace_context: Option<String>,
}

impl Store {
    /// Writes an event inside the caller's transaction; returns its id.
    pub(crate) async fn append_event(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        event: PendingEvent,
    ) -> Result<Uuid, DomainError> {
        let row = self.outbox_row(tenant, event);
        sqlx::query(
            "INSERT INTO outbox (event_id, tenant_id, subject, payload, trace_context) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(row.event_id)
        .bind(tenant.id)
        .bind(row.subject)
        .bind(row.payload)
        .bind(row.trace_context)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        Ok(row.event_id)
    }

    /// The outbox row of an event (given a new id, which the request's event ids collect), for
    /// the caller to write in the transaction of the change it describes.
    pub(crate) fn outbox_row(&self, tenant: &Tenant, event: PendingEvent) -> NewOutboxRow {
        let event_id = Uuid::now_v7();
        let subject = events::subject(&self.subject_prefix, &tenant.subdomain, &event.payload);
        let envelope = Envelope {
            event_id: event_id.to_string(),
            tenant_id: tenant.id.to_string(),
            tenant: tenant.subdomain.clone(),
            tenant_name: tenant.display_name.clone(),
            occurred_at: Some(proto::time::to_timestamp(event.occurred_at)),
            resource_id: event.resource_id.to_string(),
            resource_version: event.resource_version,
            source: event.source as i32,
            payload: Some(event.payload),
        };
        let _ = EVENT_IDS.try_with(|ids| ids.borrow_mut().push(event_id));
        NewOutboxRow {
            event_id,
            subject,
            payload: envelope.encode_to_vec(),
            trace_context: telemetry::current_traceparent(),
        }
    }

    /// A round of the relay: records where the stream stored the events it acknowledged in the
    /// previous round (`published`: outbox seq and stream sequence; the rows are kept for the
    /// retention window); when the relay has just read the stream's tail (`tail`), makes every
    /// row acknowledged beyond it unpublished again (the stream lost those events: they are
    /// published again, same ids, before anything newer); then returns the oldest unpublished
    /// rows in `seq` order. One statement (ADR 0019).
    pub async fn relay_round(
        &self,
        published: &[(i64, u64)],
        tail: Option<u64>,
        limit: i32,
    ) -> Result<Vec<OutboxRow>, sqlx::Error> {
        let seqs: Vec<i64> = published.iter().map(|(seq, _)| *seq).collect();
        let stream_seqs: Vec<i64> = published.iter().map(|(_, s)| i64::try_from(*s).unwrap_or(i64::MAX)).collect();
        let tail = tail.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
        let query = sqlx::query("SELECT * FROM scim_relay_round($1, $2, $3, $4)")
            .bind(seqs)
            .bind(stream_seqs)
            .bind(tail)
            .bind(limit);
        let rows = self.single(async |c| query.fetch_all(c).await).await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxRow {
                    seq: r.try_get("seq")?,
                    event_id: r.try_get("event_id")?,
                    subject: r.try_get("subject")?,
                    payload: r.try_get("payload")?,
                    trace_context: r.try_get("trace_context")?,
                })
            })
            .collect()
    }

    /// Forgets up to `limit` published rows older than the retention window; returns how many.
    pub async fn prune_outbox(&self, retention_hours: u32, limit: i32) -> Result<u64, sqlx::Error> {
        let query = sqlx::query_scalar::<_, i64>("SELECT scim_prune_outbox(now() - make_interval(hours => $1), $2)")
            .bind(i32::try_from(retention_hours).unwrap_or(i32::MAX))
            .bind(limit);
        let n = self.single(async |c| query.fetch_one(c).await).await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// Makes a tenant's published events since `since` unpublished again, for the relay to
    /// publish them once more with the same ids (after the stream lost them). Returns how many,
    /// and when the oldest row the outbox still keeps for the tenant was written (what is older
    /// was pruned and cannot be republished).
    pub async fn republish(
        &self,
        tenant: Uuid,
        since: OffsetDateTime,
    ) -> Result<(u64, Option<OffsetDateTime>), sqlx::Error> {
        // An operator's command, over as many rows as the tenant wrote since: no time limit.
        let mut tx = self.system_unbounded().await?;
        let done = sqlx::query(
            "UPDATE outbox SET stream_seq = NULL, published_at = NULL
             WHERE tenant_id = $1 AND created_at >= $2 AND stream_seq IS NOT NULL",
        )
        .bind(tenant)
        .bind(since)
        .execute(&mut *tx)
        .await?;
        let oldest: Option<OffsetDateTime> =
            sqlx::query_scalar("SELECT min(created_at) FROM outbox WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok((done.rows_affected(), oldest))
    }

    /// How many rows wait to be published, and since when.
    pub async fn backlog(&self) -> Result<Backlog, sqlx::Error> {
        let mut tx = self.system().await?;
        let row = sqlx::query(
            "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age
             FROM outbox WHERE stream_seq IS NULL",
        )
        .fetch_one(&mut *tx)
        .await?;
        end_read(tx);
        Ok(Backlog { rows: row.try_get("n")?, oldest_age_secs: row.try_get("age")? })
    }
}
