//! Decisions recorded together: most events (a user's creation by SCIM, updates, archives,
//! restores, groups) are decided without reading anything and queue no email, and each used to
//! cost a commit of its own, the second durable commit of every SCIM write. The consumer's lanes
//! hand those decisions here; one task writes whatever has gathered while the previous write was
//! committing, all in one statement (one commit), and answers each lane, which only then
//! acknowledges its message to JetStream. Under a trickle every batch holds one decision and
//! waits for nothing; under load, one commit carries up to a lane's worth each.
//!
//! Exactly once holds as it did for one decision: the decision is keyed by the event id (`ON
//! CONFLICT DO NOTHING`), and the statement says which of its events it decided now, so a
//! redelivered event, in a batch or not, finds its decision and acts on nothing twice. A batch that
//! fails is written again one decision per statement, so that one event the database refuses
//! holds up no other.

use std::collections::HashSet;
use std::sync::LazyLock;

use infra::Statements;
use sqlx::{AssertSqlSafe, PgConnection};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::store::UPSERT_RECIPIENT;

/// At most this many decisions in one statement, by default (`NOTIFICATION_DECISION_BATCH`).
pub const MAX_BATCH: u16 = 64;

/// One decision to record, and the recipient's state when the event carries it.
#[derive(Debug, Clone)]
pub struct Decided {
    pub event: Uuid,
    pub tenant_id: Uuid,
    pub resource: Uuid,
    pub event_type: String,
    pub outcome: &'static str,
    pub reason: &'static str,
    pub recipient: Option<Recipient>,
}

/// The projection's row as a user event's snapshot gives it.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub user: Uuid,
    pub tenant: String,
    pub tenant_name: String,
    pub user_name: String,
    pub email: String,
    pub given_name: String,
    pub family_name: String,
    pub display_name: String,
    pub locale: String,
    pub active: bool,
    pub source: &'static str,
    pub version: i64,
}

struct Pending {
    decided: Decided,
    /// Whether it was decided now (false: decided before).
    answer: oneshot::Sender<Result<bool, sqlx::Error>>,
}

/// The handle lanes record their decisions through; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the task that writes batches of at most `max` decisions on `db`; it ends when
    /// every handle is dropped.
    pub fn start(db: Statements, max: u16) -> Batcher {
        let max = usize::from(max.max(1));
        let (queue, pending) = mpsc::channel(max * 4);
        tokio::spawn(write_batches(db, pending, max));
        Batcher { queue }
    }

    /// Records a decision (and the projection's update it carries) durably; whether the event
    /// was decided now, false if it had been before.
    pub async fn record(&self, decided: Decided) -> Result<bool, sqlx::Error> {
        let (answer, answered) = oneshot::channel();
        let gone = || sqlx::Error::Protocol("the decisions' writer stopped".to_owned());
        self.queue.send(Pending { decided, answer }).await.map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }
}

async fn write_batches(db: Statements, mut pending: mpsc::Receiver<Pending>, max: usize) {
    // A decision held back from the batch before: it starts the next one.
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match pending.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut batch = vec![first];
        // No two decisions of one event, and no two updates of one recipient, in one statement
        // (the lanes keep a user's events one after another, so this is a safeguard).
        let mut events: HashSet<Uuid> = HashSet::from([batch[0].decided.event]);
        let mut recipients: HashSet<(Uuid, Uuid)> = batch[0].decided.recipient_key().into_iter().collect();
        while batch.len() < max {
            let Ok(next) = pending.try_recv() else { break };
            let key = next.decided.recipient_key();
            if events.contains(&next.decided.event) || key.is_some_and(|k| recipients.contains(&k)) {
                carried = Some(next);
                break;
            }
            events.insert(next.decided.event);
            recipients.extend(key);
            batch.push(next);
        }
        let rows: Vec<Decided> = batch.iter().map(|p| p.decided.clone()).collect();
        match db.run(async |c| write(c, &rows).await).await {
            Ok(now) => {
                for p in batch {
                    let _ = p.answer.send(Ok(now.contains(&p.decided.event)));
                }
            }
            Err(e) if batch.len() == 1 => {
                let _ = batch.into_iter().next().map(|p| p.answer.send(Err(e)));
            }
            Err(e) => {
                tracing::warn!(decisions = batch.len(), error = %e, "recording a batch of decisions failed; recording them one by one");
                for p in batch {
                    let one = std::slice::from_ref(&p.decided);
                    let result = db.run(async |c| write(c, one).await).await;
                    let _ = p.answer.send(result.map(|now| now.contains(&p.decided.event)));
                }
            }
        }
    }
}

impl Decided {
    fn recipient_key(&self) -> Option<(Uuid, Uuid)> {
        self.recipient.as_ref().map(|r| (self.tenant_id, r.user))
    }
}

/// Records `rows` in one statement; the events it decided now.
async fn write(conn: &mut PgConnection, rows: &[Decided]) -> Result<HashSet<Uuid>, sqlx::Error> {
    // The decisions, then the projection's updates of those decided now, never back to an older
    // version (as one event's statement in `store`).
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH decided AS (
                INSERT INTO decisions (event_id, tenant_id, resource_id, event_type, outcome, reason)
                SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[])
                ON CONFLICT (event_id) DO NOTHING RETURNING event_id
            ), projected AS (
                INSERT INTO recipients (tenant_id, user_id, tenant, tenant_name, user_name, email, given_name,
                    family_name, display_name, locale, active, source, version)
                SELECT r.tenant_id, r.user_id, r.tenant, r.tenant_name, r.user_name, r.email, r.given_name,
                    r.family_name, r.display_name, r.locale, r.active, r.source, r.version
                FROM unnest($7::uuid[], $8::uuid[], $9::uuid[], $10::text[], $11::text[], $12::text[], $13::text[],
                            $14::text[], $15::text[], $16::text[], $17::text[], $18::bool[], $19::text[], $20::int8[])
                     AS r(event_id, tenant_id, user_id, tenant, tenant_name, user_name, email, given_name,
                          family_name, display_name, locale, active, source, version)
                JOIN decided USING (event_id)
                {UPSERT_RECIPIENT}
            )
            SELECT event_id FROM decided"
        )
    });
    let column = |f: fn(&Decided) -> Uuid| rows.iter().map(f).collect::<Vec<_>>();
    let text = |f: fn(&Decided) -> &str| rows.iter().map(|r| f(r).to_owned()).collect::<Vec<_>>();
    let projected: Vec<(&Decided, &Recipient)> =
        rows.iter().filter_map(|d| d.recipient.as_ref().map(|r| (d, r))).collect();
    let of = |f: fn(&Recipient) -> &str| projected.iter().map(|(_, r)| f(r).to_owned()).collect::<Vec<_>>();
    let decided: Vec<Uuid> = sqlx::query_scalar(AssertSqlSafe(SQL.as_str()))
        .bind(column(|d| d.event))
        .bind(column(|d| d.tenant_id))
        .bind(column(|d| d.resource))
        .bind(text(|d| &d.event_type))
        .bind(text(|d| d.outcome))
        .bind(text(|d| d.reason))
        .bind(projected.iter().map(|(d, _)| d.event).collect::<Vec<_>>())
        .bind(projected.iter().map(|(d, _)| d.tenant_id).collect::<Vec<_>>())
        .bind(projected.iter().map(|(_, r)| r.user).collect::<Vec<_>>())
        .bind(of(|r| &r.tenant))
        .bind(of(|r| &r.tenant_name))
        .bind(of(|r| &r.user_name))
        .bind(of(|r| &r.email))
        .bind(of(|r| &r.given_name))
        .bind(of(|r| &r.family_name))
        .bind(of(|r| &r.display_name))
        .bind(of(|r| &r.locale))
        .bind(projected.iter().map(|(_, r)| r.active).collect::<Vec<_>>())
        .bind(of(|r| r.source))
        .bind(projected.iter().map(|(_, r)| r.version).collect::<Vec<_>>())
        .fetch_all(conn)
        .await?;
    Ok(decided.into_iter().collect())
}
