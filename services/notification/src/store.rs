//! The notification database: the recipients projection, the decisions log and the emails.
//! Deciding, updating the projection and (when sending) queueing the rendered email happen in one
//! transaction keyed by the event id, so that a redelivered event finds its decision and its
//! email, and acts on neither twice.
//!
//! Every statement that is not part of a transaction runs on a leased connection
//! ([`infra::Statements`], ADR 0018): most events are decided in one statement, which then costs
//! one round trip, not two (sqlx's check on release).

use std::sync::LazyLock;

use infra::Statements;
use proto::events::v1::envelope::Payload;
use proto::events::v1::{Envelope, Source};
use sqlx::postgres::PgArguments;
use sqlx::query::QueryScalar;
use sqlx::{AssertSqlSafe, PgConnection, PgExecutor, Postgres, Row};
use uuid::Uuid;

use crate::batch::{Batcher, Decided, Recipient};
use crate::decide::{Decision, Outcome, RecipientState, decide};
use crate::templates::{EmailContext, RenderError, Template, Templates};

/// An email the service decided to send, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub to: String,
    pub template: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

impl EmailRow {
    /// Still to be sent: waiting for an attempt, or in one (possibly of a worker that died).
    pub fn is_unsent(&self) -> bool {
        self.status == "pending" || self.status == "sending"
    }
}

/// The outcome of handling an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Decided now; the email to send, if any.
    Decided { decision: Decision, email: Option<EmailRow> },
    /// Decided before (a redelivery): its email, if any, in whatever state it reached.
    AlreadyDecided { email: Option<EmailRow> },
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
    /// An assignment for a user whose own event has not arrived yet.
    #[error("the recipient is not known yet")]
    RecipientUnknown,
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// What rendering needs beyond the recipient.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The platform's sign-in address; `{tenant}` becomes the tenant's subdomain.
    pub platform_url: String,
}

fn source_name(s: i32) -> &'static str {
    match Source::try_from(s) {
        Ok(Source::Admin) => "admin",
        Ok(Source::Import) => "import",
        _ => "scim",
    }
}

const EMAIL_COLUMNS: &str =
    "id, event_id, to_address, template, subject, body_text, body_html, status, attempts, last_error";

fn email_from_row(r: &sqlx::postgres::PgRow) -> Result<EmailRow, sqlx::Error> {
    Ok(EmailRow {
        id: r.try_get("id")?,
        event_id: r.try_get("event_id")?,
        to: r.try_get("to_address")?,
        template: r.try_get("template")?,
        subject: r.try_get("subject")?,
        text: r.try_get("body_text")?,
        html: r.try_get("body_html")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
    })
}

async fn email_of(db: impl PgExecutor<'_>, event_id: Uuid) -> Result<Option<EmailRow>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!("SELECT {EMAIL_COLUMNS} FROM emails WHERE event_id = $1")))
        .bind(event_id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(email_from_row).transpose()
}

/// The recipient's row, locked for this transaction.
async fn recipient(
    tx: &mut PgConnection,
    tenant_id: Uuid,
    user_id: Uuid,
) -> Result<Option<sqlx::postgres::PgRow>, sqlx::Error> {
    sqlx::query("SELECT * FROM recipients WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE")
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await
}

fn state_of(row: &sqlx::postgres::PgRow) -> Result<RecipientState, sqlx::Error> {
    let email: String = row.try_get("email")?;
    let first: Option<time::OffsetDateTime> = row.try_get("first_email_at")?;
    Ok(RecipientState {
        active: row.try_get("active")?,
        deleted: row.try_get("deleted")?,
        has_email: !email.trim().is_empty(),
        had_first_email: first.is_some(),
    })
}

/// Decides an event, once, and queues its email. With `give_up`, an assignment for an unknown
/// recipient is decided (no email) instead of waiting. Decisions that need nothing but their own
/// statement go through `batch`, with other lanes' ([`crate::batch`]).
pub async fn handle(
    db: &Statements,
    batch: &Batcher,
    templates: &Templates,
    settings: &Settings,
    envelope: &Envelope,
    give_up: bool,
) -> Result<Handled, HandleError> {
    let event_id = Uuid::parse_str(&envelope.event_id).map_err(|_| Malformed("event_id"))?;
    let tenant_id = Uuid::parse_str(&envelope.tenant_id).map_err(|_| Malformed("tenant_id"))?;
    let resource_id = Uuid::parse_str(&envelope.resource_id).map_err(|_| Malformed("resource_id"))?;
    let payload = envelope.payload.as_ref().ok_or(HandleError::UnknownKind)?;
    let user_id = match payload {
        Payload::ContentAssigned(a) => Uuid::parse_str(&a.user_id).map_err(|_| Malformed("user_id"))?,
        _ => resource_id,
    };
    let ids = Ids { event: event_id, tenant: tenant_id, resource: resource_id, user: user_id };

    // Most events (a user's creation by SCIM, updates, archives, restores, links, groups, tenants)
    // are decided without the recipient and queue no email: their decision and the projection's
    // update are one statement, atomic by itself, shared with the other lanes' decisions of the
    // moment (one commit for them all). The recipient's row is still locked by the statement's
    // upsert, so an assignment being decided for the same user meanwhile is waited for.
    if !needs_transaction(payload)
        && let Some(decision) = decide(envelope, None).filter(|d| d.template.is_none())
    {
        if !batch.record(decided(envelope, payload, &ids, &decision)).await? {
            return Ok(Handled::AlreadyDecided { email: db.run(async |c| email_of(c, event_id).await).await? });
        }
        return Ok(Handled::Decided { decision, email: None });
    }

    let mut tx = db.begin("BEGIN").await?;
    // One round trip: whether the event is decided already, and the recipient's row, locked.
    let row = sqlx::query(
        "SELECT d.event_id IS NOT NULL AS decided, r.user_id IS NOT NULL AS known,
                r.email, r.first_email_at, r.active, r.deleted, r.version
         FROM (SELECT $1::uuid AS event_id) e
         LEFT JOIN decisions d ON d.event_id = e.event_id
         LEFT JOIN LATERAL (SELECT * FROM recipients WHERE tenant_id = $2 AND user_id = $3 FOR UPDATE) r ON true",
    )
    .bind(event_id)
    .bind(tenant_id)
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;
    if row.try_get("decided")? {
        let email = email_of(&mut *tx, event_id).await?;
        tx.rollback().await?;
        return Ok(Handled::AlreadyDecided { email });
    }
    let before = if row.try_get("known")? { Some(row) } else { None };
    if let Payload::ContentAssigned(a) = payload {
        // The assignment came after the user's latest change; until that change has reached the
        // projection (its event may be waiting for a retry), the recipient is not known well
        // enough to decide (an archive would be missed).
        let known: Option<i64> = before.as_ref().map(|r| r.try_get("version")).transpose()?;
        if known.is_some_and(|v| v < a.user_version) && !give_up {
            return Err(HandleError::RecipientUnknown);
        }
    }
    let state = before.as_ref().map(state_of).transpose()?;
    let decision = match decide(envelope, state.as_ref()) {
        Some(d) => d,
        None if give_up => Decision { outcome: Outcome::NoEmail, reason: "unknown_recipient", template: None },
        None => return Err(HandleError::RecipientUnknown),
    };
    if record(envelope, payload, &ids, &decision).fetch_one(&mut *tx).await? == 0 {
        // Another consumer decided it in the meantime.
        let email = email_of(&mut *tx, event_id).await?;
        tx.rollback().await?;
        return Ok(Handled::AlreadyDecided { email });
    }
    project(&mut tx, envelope, payload, tenant_id, user_id, &decision).await?;
    let email = match decision.template {
        Some(template) => {
            Some(queue_email(&mut tx, templates, settings, event_id, tenant_id, user_id, template, payload).await?)
        }
        None => None,
    };
    tx.commit().await?;
    Ok(Handled::Decided { decision, email })
}

/// The ids an event's handling works with.
struct Ids {
    event: Uuid,
    tenant: Uuid,
    resource: Uuid,
    /// The recipient: the user the event is about, or the one an assignment is for.
    user: Uuid,
}

/// The statement recording a decision; an event that carries the user's state updates the
/// projection in the same statement. It counts the decisions it recorded: 0 if the event was
/// decided already.
fn record<'q>(
    envelope: &'q Envelope,
    payload: &'q Payload,
    ids: &Ids,
    decision: &Decision,
) -> QueryScalar<'q, Postgres, i64, PgArguments> {
    static DECIDE_ONLY: LazyLock<String> =
        LazyLock::new(|| format!("WITH decided AS ({DECIDE} RETURNING event_id) SELECT count(*) FROM decided"));
    static DECIDE_AND_PROJECT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH decided AS ({DECIDE} RETURNING event_id), projected AS ({PROJECT} {UPSERT_RECIPIENT})
             SELECT count(*) FROM decided"
        )
    });
    let user = events::user_snapshot(payload);
    let (resource, event) = events::event_name(payload);
    let sql = if user.is_some() { &DECIDE_AND_PROJECT } else { &DECIDE_ONLY };
    let query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.as_str()))
        .bind(ids.event)
        .bind(ids.tenant)
        .bind(ids.resource)
        .bind(format!("{resource}.{event}"))
        .bind(decision.outcome.as_str())
        .bind(decision.reason);
    match user {
        Some(user) => query
            .bind(ids.user)
            .bind(&envelope.tenant)
            .bind(&envelope.tenant_name)
            .bind(&user.user_name)
            .bind(&user.email)
            .bind(&user.given_name)
            .bind(&user.family_name)
            .bind(&user.display_name)
            .bind(&user.locale)
            .bind(user.active)
            .bind(source_name(envelope.source))
            .bind(envelope.resource_version),
        None => query,
    }
}

/// A decision and the projection's update, for [`Batcher::record`].
fn decided(envelope: &Envelope, payload: &Payload, ids: &Ids, decision: &Decision) -> Decided {
    let (resource, event) = events::event_name(payload);
    Decided {
        event: ids.event,
        tenant_id: ids.tenant,
        resource: ids.resource,
        event_type: format!("{resource}.{event}"),
        outcome: decision.outcome.as_str(),
        reason: decision.reason,
        recipient: events::user_snapshot(payload).map(|user| Recipient {
            user: ids.user,
            tenant: envelope.tenant.clone(),
            tenant_name: envelope.tenant_name.clone(),
            user_name: user.user_name.clone(),
            email: user.email.clone(),
            given_name: user.given_name.clone(),
            family_name: user.family_name.clone(),
            display_name: user.display_name.clone(),
            locale: user.locale.clone(),
            active: user.active,
            source: source_name(envelope.source),
            version: envelope.resource_version,
        }),
    }
}

/// Records a decision ($1 event, $2 tenant, $3 resource, $4 event type, $5 outcome, $6 reason);
/// nothing if the event was decided meanwhile.
const DECIDE: &str = "INSERT INTO decisions (event_id, tenant_id, resource_id, event_type, outcome, reason)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING";

/// The projection's update from a user's snapshot ($7 user, $8.. what the event says), part of
/// the statement that records the decision (`decided`): only a new decision moves it, and never
/// back to an older version.
const PROJECT: &str = "INSERT INTO recipients (tenant_id, user_id, tenant, tenant_name, user_name, email, given_name,
        family_name, display_name, locale, active, source, version)
     SELECT $2, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18 WHERE EXISTS (SELECT 1 FROM decided)";

/// How a user's snapshot updates a recipient's row that exists: never back to an older version.
/// One event's statement ([`PROJECT`]) and a batch's ([`crate::batch`]) both end with it.
pub(crate) const UPSERT_RECIPIENT: &str = "ON CONFLICT (tenant_id, user_id) DO UPDATE SET
        tenant = excluded.tenant, tenant_name = excluded.tenant_name, user_name = excluded.user_name,
        email = excluded.email, given_name = excluded.given_name, family_name = excluded.family_name,
        display_name = excluded.display_name, locale = excluded.locale, active = excluded.active,
        source = excluded.source, version = excluded.version, updated_at = now()
     WHERE recipients.version < excluded.version";

/// Whether an event's handling takes more than the statement recording its decision: an
/// assignment reads the recipient (and may mark their first email), a deletion marks the
/// projection deleted (`project`). Any email queued also does (checked by the caller).
fn needs_transaction(payload: &Payload) -> bool {
    matches!(payload, Payload::ContentAssigned(_) | Payload::UserDeleted(_) | Payload::UserErased(_))
}

/// Updates the projection with what the event says beyond the user's snapshot (which the
/// decision's statement has written); only events that [`needs_transaction`] come here with
/// anything to do.
async fn project(
    tx: &mut PgConnection,
    envelope: &Envelope,
    payload: &Payload,
    tenant_id: Uuid,
    user_id: Uuid,
    decision: &Decision,
) -> Result<(), sqlx::Error> {
    match payload {
        Payload::UserDeleted(_) => {
            sqlx::query(
                "UPDATE recipients SET deleted = true, active = false, version = $3, updated_at = now()
                 WHERE tenant_id = $1 AND user_id = $2 AND version < $3",
            )
            .bind(tenant_id)
            .bind(user_id)
            .bind(envelope.resource_version)
            .execute(&mut *tx)
            .await?;
        }
        Payload::UserErased(_) => {
            // The projection becomes the tombstone (kept, so that an older event cannot bring
            // the person back), and their emails keep only what the audit needs: when, which
            // template, what became of it (an SMTP error may name the address: it goes too).
            // One not sent yet never will be; one being sent at this moment may still go out.
            sqlx::query(
                "UPDATE recipients SET user_name = 'erased-' || user_id, email = '', given_name = '',
                    family_name = '', display_name = '', locale = '', deleted = true, active = false,
                    version = greatest(version, $3), updated_at = now()
                 WHERE tenant_id = $1 AND user_id = $2",
            )
            .bind(tenant_id)
            .bind(user_id)
            .bind(envelope.resource_version)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE emails SET to_address = '', subject = '(erased)', body_text = '(erased)',
                    body_html = '(erased)',
                    last_error = CASE WHEN status = 'pending' THEN 'the recipient was erased'
                        WHEN last_error IS NULL THEN NULL ELSE '(erased: it named the recipient)' END,
                    status = CASE WHEN status = 'pending' THEN 'dead' ELSE status END
                 WHERE tenant_id = $1 AND user_id = $2",
            )
            .bind(tenant_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        }
        Payload::ContentAssigned(_) if decision.template == Some(Template::FirstAssignment) => {
            sqlx::query("UPDATE recipients SET first_email_at = now() WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        _ => {}
    }
    Ok(())
}

/// Renders the email for the recipient as the projection now knows them, and queues it.
#[allow(clippy::too_many_arguments)]
async fn queue_email(
    tx: &mut PgConnection,
    templates: &Templates,
    settings: &Settings,
    event_id: Uuid,
    tenant_id: Uuid,
    user_id: Uuid,
    template: Template,
    payload: &Payload,
) -> Result<EmailRow, HandleError> {
    let row = recipient(tx, tenant_id, user_id).await?.ok_or(HandleError::RecipientUnknown)?;
    let get = |c: &str| -> Result<String, sqlx::Error> { row.try_get(c) };
    let (given, family, display, user_name) =
        (get("given_name")?, get("family_name")?, get("display_name")?, get("user_name")?);
    let full = format!("{given} {family}").trim().to_owned();
    let name = [display, full, user_name.clone()].into_iter().find(|n| !n.trim().is_empty()).unwrap_or_default();
    let tenant = get("tenant")?;
    let tenant_name = match get("tenant_name")? {
        n if n.trim().is_empty() => tenant.clone(),
        n => n,
    };
    let title = match payload {
        Payload::ContentAssigned(a) => a.title.clone(),
        _ => String::new(),
    };
    let ctx = EmailContext {
        name,
        user_name,
        tenant_name,
        sign_in_url: settings.platform_url.replace("{tenant}", &tenant),
        title,
    };
    let rendered = templates.render(template, &get("locale")?, &ctx)?;
    let email = EmailRow {
        id: Uuid::now_v7(),
        event_id,
        to: get("email")?,
        template: template.name().to_owned(),
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        status: "pending".to_owned(),
        attempts: 0,
        last_error: None,
    };
    sqlx::query(
        "INSERT INTO emails (id, event_id, tenant_id, user_id, template, to_address, subject, body_text, body_html)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(email.id)
    .bind(event_id)
    .bind(tenant_id)
    .bind(user_id)
    .bind(&email.template)
    .bind(&email.to)
    .bind(&email.subject)
    .bind(&email.text)
    .bind(&email.html)
    .execute(&mut *tx)
    .await?;
    Ok(email)
}

/// One worker's claim on an email for one send attempt.
#[derive(Debug, Clone)]
pub struct Claim {
    pub email: EmailRow,
    /// Names this claim: only its holder records the attempt's outcome.
    pub token: Uuid,
}

/// Claims an unsent email for one send attempt, for `lease`: `None` when it is sent or ended
/// already, or another worker holds a live claim. Only the claimer sends and records.
pub async fn claim(db: &Statements, id: Uuid, lease: std::time::Duration) -> Result<Option<Claim>, sqlx::Error> {
    let token = Uuid::now_v7();
    let query = sqlx::query(AssertSqlSafe(format!(
        "UPDATE emails SET status = 'sending', lease_until = now() + make_interval(secs => $2), claim_id = $3
         WHERE id = $1 AND (status = 'pending' OR (status = 'sending' AND lease_until < now()))
         RETURNING {EMAIL_COLUMNS}"
    )))
    .bind(id)
    .bind(lease.as_secs_f64())
    .bind(token);
    let row = db.run(async |c| query.fetch_optional(c).await).await?;
    Ok(row.as_ref().map(email_from_row).transpose()?.map(|email| Claim { email, token }))
}

/// An email as it is now.
pub async fn email(db: &Statements, id: Uuid) -> Result<Option<EmailRow>, sqlx::Error> {
    let query = sqlx::query(AssertSqlSafe(format!("SELECT {EMAIL_COLUMNS} FROM emails WHERE id = $1"))).bind(id);
    let row = db.run(async |c| query.fetch_optional(c).await).await?;
    row.as_ref().map(email_from_row).transpose()
}

/// Records that the SMTP server accepted the claimed email. Done right after its answer, so that
/// the window in which a crash could lead to a second send is one statement wide. Returns false
/// when the claim was no longer this worker's (its lease expired and another took it over).
pub async fn mark_sent(db: &Statements, claim: &Claim) -> Result<bool, sqlx::Error> {
    let query = sqlx::query(
        "UPDATE emails SET status = 'sent', attempts = attempts + 1, sent_at = now(), finished_at = now(),
            last_error = NULL, lease_until = NULL, claim_id = NULL
         WHERE id = $1 AND status = 'sending' AND claim_id = $2",
    )
    .bind(claim.email.id)
    .bind(claim.token);
    let done = db.run(async |c| query.execute(c).await).await?;
    Ok(done.rows_affected() == 1)
}

/// Records the claimed attempt's failure; `final_status` ends the email (`failed` for a permanent
/// rejection, `dead` after the last attempt), `None` puts it back to pending for a retry. An
/// email whose recipient was erased meanwhile (no address left) is dead, its error not kept.
pub async fn record_failure(
    db: &Statements,
    claim: &Claim,
    error: &str,
    final_status: Option<&str>,
) -> Result<(), sqlx::Error> {
    let query = sqlx::query(
        "UPDATE emails SET attempts = attempts + 1,
            last_error = CASE WHEN to_address = '' THEN 'the recipient was erased' ELSE $2 END,
            status = CASE WHEN to_address = '' THEN 'dead' ELSE coalesce($3, 'pending') END,
            finished_at = CASE WHEN $3 IS NULL AND to_address <> '' THEN NULL ELSE now() END,
            lease_until = NULL, claim_id = NULL
         WHERE id = $1 AND status = 'sending' AND claim_id = $4",
    )
    .bind(claim.email.id)
    .bind(error)
    .bind(final_status)
    .bind(claim.token);
    db.run(async |c| query.execute(c).await).await?;
    Ok(())
}

/// Whether an email was sent.
pub async fn is_sent(db: &Statements, id: Uuid) -> Result<bool, sqlx::Error> {
    let query = sqlx::query_scalar("SELECT status FROM emails WHERE id = $1").bind(id);
    let status: Option<String> = db.run(async |c| query.fetch_optional(c).await).await?;
    Ok(status.as_deref() == Some("sent"))
}

/// The dead letters: emails whose last delivery attempt failed, oldest first (not those of an
/// erased recipient, which have no address left to send to).
pub async fn dead_letters(db: &Statements) -> Result<Vec<EmailRow>, sqlx::Error> {
    let query = sqlx::query(AssertSqlSafe(format!(
        "SELECT {EMAIL_COLUMNS} FROM emails WHERE status = 'dead' AND to_address <> '' ORDER BY created_at"
    )));
    let rows = db.run(async |c| query.fetch_all(c).await).await?;
    rows.iter().map(email_from_row).collect()
}

/// Puts a dead letter back to pending (for a re-drive); false if it was not dead (or its
/// recipient was erased).
pub async fn revive(db: &Statements, id: Uuid) -> Result<bool, sqlx::Error> {
    let query = sqlx::query(
        "UPDATE emails SET status = 'pending', finished_at = NULL WHERE id = $1 AND status = 'dead' AND to_address <> ''",
    )
    .bind(id);
    let done = db.run(async |c| query.execute(c).await).await?;
    Ok(done.rows_affected() == 1)
}

/// A tenant's emails and decisions since `since`: emails by status, and the events decided
/// without an email (suppressed, by reason). For the tenant console's health page.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EmailActivity {
    pub sent: i64,
    pub pending: i64,
    pub failed: i64,
    pub dead: i64,
    /// `(reason, count)`, most frequent first.
    pub suppressed: Vec<(String, i64)>,
}

pub async fn email_activity(
    db: &Statements,
    tenant_id: Uuid,
    since: time::OffsetDateTime,
) -> Result<EmailActivity, sqlx::Error> {
    let mut a = EmailActivity::default();
    let query =
        sqlx::query_as("SELECT status, count(*) FROM emails WHERE tenant_id = $1 AND created_at >= $2 GROUP BY status")
            .bind(tenant_id)
            .bind(since);
    let rows: Vec<(String, i64)> = db.run(async |c| query.fetch_all(c).await).await?;
    for (status, n) in rows {
        match status.as_str() {
            "sent" => a.sent = n,
            "failed" => a.failed = n,
            "dead" => a.dead = n,
            _ => a.pending += n,
        }
    }
    let query = sqlx::query_as(
        "SELECT reason, count(*) AS n FROM decisions
         WHERE tenant_id = $1 AND decided_at >= $2 AND outcome = 'suppressed'
         GROUP BY reason ORDER BY n DESC, reason",
    )
    .bind(tenant_id)
    .bind(since);
    a.suppressed = db.run(async |c| query.fetch_all(c).await).await?;
    Ok(a)
}
