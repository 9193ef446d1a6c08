//! Erasure of one person (GDPR art. 17; ADR 0025). In one transaction, under the user's row lock:
//! the user becomes a tombstone (`erased-<id>`: no name, email, externalId, custom field or
//! document beyond that; id, role and dates stay), their memberships and held changes go, the
//! request log's rows that name them lose their bodies (and the query of their path), the
//! outbox's copies of their events carry the tombstone instead of their data, and the event
//! `user.erased` says who did it. The stream's copies are removed afterwards
//! ([`crate::erasure`]). Erasing an erased user changes nothing here and is not an error: a
//! request cut short can be made again.

use prost::Message as _;
use proto::DomainError;
use proto::events::v1::envelope::Payload;
use proto::events::v1::{Envelope, UserErased, UserSnapshot};
use serde_json::Value;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PendingEvent, Store, Tenant, db_error, now};

/// The request log is read this many rows at a time.
const LOG_PAGE: i64 = 500;

/// A value shorter than this is not looked for (a one-letter externalId would match everything).
const MIN_NEEDLE: usize = 4;

/// What an erasure did.
#[derive(Debug, Clone)]
pub struct Erasure {
    pub user_id: Uuid,
    pub erased_at: OffsetDateTime,
    pub erased_by: String,
    /// Whether the user was erased before this call (which then changed nothing).
    pub already: bool,
    pub request_log_rows: u64,
    pub outbox_events: u64,
}

/// The user's name on the tombstone.
pub fn tombstone_name(id: Uuid) -> String {
    format!("erased-{id}")
}

/// What a consumer may keep of an erased user.
fn tombstone_snapshot(id: Uuid, role: &str) -> UserSnapshot {
    UserSnapshot { user_name: tombstone_name(id), role: role.to_owned(), ..Default::default() }
}

/// The values that name the user: their id, userName, every email, externalId (lower-cased).
fn needles(id: Uuid, document: &Value, user_name: &str, external_id: Option<&str>) -> Vec<String> {
    let mut out = vec![id.to_string(), user_name.to_lowercase()];
    if let Some(x) = external_id {
        out.push(x.to_lowercase());
    }
    if let Some(emails) = document.get("emails").and_then(Value::as_array) {
        out.extend(emails.iter().filter_map(|e| e.get("value")?.as_str()).map(str::to_lowercase));
    }
    out.retain(|n| n.trim().chars().count() >= MIN_NEEDLE);
    out.sort();
    out.dedup();
    out
}

/// A logged path as it may name the user: percent-decoded (`+` as a space), lower-cased.
fn readable_path(path: &str) -> String {
    percent_encoding::percent_decode_str(&path.replace('+', " ")).decode_utf8_lossy().to_lowercase()
}

/// A logged path that named the user in itself (not in its query).
pub const ERASED_PATH: &str = "/(erased)";

fn path_part(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

/// The logged path of a row that names the user: the query (a filter on them) goes.
fn erased_path(path: &str) -> String {
    match path.split_once('?') {
        Some((p, _)) => format!("{p}?(erased)"),
        None => path.to_owned(),
    }
}

/// What a logged body that named an erased user becomes.
pub const ERASED_BODY: &str = "(erased: this request named a user whose data was erased)";

impl Store {
    /// Erases a user of the tenant (404 for any other id, as for any missing user).
    pub async fn erase_user(&self, tenant: &Tenant, id: &str, erased_by: &str) -> Result<Erasure, DomainError> {
        let missing = || DomainError::not_found(format!("User {id} not found."));
        let uuid = Uuid::parse_str(id).map_err(|_| missing())?;
        let mut tx = self.scoped(tenant).await?;
        // The scans below read the tenant's whole request log and the outbox (bounded by their
        // retentions): an erasure is rare and must finish, so no statement of it is cut short.
        sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await.map_err(db_error)?;
        let row = sqlx::query(
            "SELECT version, role, user_name, external_id, document, erased_at, erased_by, source FROM users
             WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(tenant.id)
        .bind(uuid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(missing)?;
        let erased_at: Option<OffsetDateTime> = row.try_get("erased_at").map_err(db_error)?;
        if let Some(at) = erased_at {
            // Erased before: what the values named is gone, but a request about them by id may
            // have been logged since (the gateway's log is written in batches): those rows go too.
            let request_log_rows = scrub_request_log(&mut tx, tenant, uuid, &[uuid.to_string()]).await?;
            self.commit(tx).await?;
            return Ok(Erasure {
                user_id: uuid,
                erased_at: at,
                erased_by: row.try_get::<Option<String>, _>("erased_by").map_err(db_error)?.unwrap_or_default(),
                already: true,
                request_log_rows,
                outbox_events: 0,
            });
        }
        let version: i64 = row.try_get("version").map_err(db_error)?;
        let role: String = row.try_get("role").map_err(db_error)?;
        let user_name: String = row.try_get("user_name").map_err(db_error)?;
        let external_id: Option<String> = row.try_get("external_id").map_err(db_error)?;
        let document: sqlx::types::Json<Value> = row.try_get("document").map_err(db_error)?;
        let source: String = row.try_get("source").map_err(db_error)?;
        let needles = needles(uuid, &document.0, &user_name, external_id.as_deref());
        let at = now();

        self.drop_memberships(&mut tx, tenant, uuid, at).await?;
        sqlx::query("DELETE FROM held_changes WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.id)
            .bind(uuid)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let request_log_rows = scrub_request_log(&mut tx, tenant, uuid, &needles).await?;
        let outbox_events = scrub_outbox(&mut tx, tenant, uuid, &role).await?;

        let name = tombstone_name(uuid);
        let tombstone = serde_json::json!({"userName": name, "active": false});
        sqlx::query(
            "UPDATE users SET user_name = $3, user_name_folded = $3, external_id = NULL, active = false,
                archived_at = coalesce(archived_at, $4), given_name = '', family_name = '', display_name = '',
                email = '', locale = '', cost_center = '', division = '', document = $5,
                version = version + 1, updated_at = $4, erased_at = $4, erased_by = $6
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.id)
        .bind(uuid)
        .bind(&name)
        .bind(at)
        .bind(sqlx::types::Json(&tombstone))
        .bind(erased_by)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let event = PendingEvent {
            resource_id: uuid,
            resource_version: version + 1,
            source: super::users::parse_source(&source),
            occurred_at: at,
            payload: Payload::UserErased(UserErased { erased_by: erased_by.to_owned() }),
        };
        self.append_event(&mut tx, tenant, event).await?;
        self.commit(tx).await?;
        tracing::info!(tenant = %tenant.subdomain, user = %uuid, erased_by, request_log_rows, outbox_events, "user erased");
        Ok(Erasure {
            user_id: uuid,
            erased_at: at,
            erased_by: erased_by.to_owned(),
            already: false,
            request_log_rows,
            outbox_events,
        })
    }

    /// Whether events about the user wait in the outbox, not yet on the stream (the stream's
    /// copies can only be removed once they are there).
    pub async fn user_events_unpublished(&self, tenant: &Tenant, user: Uuid) -> Result<bool, DomainError> {
        let mut tx = self.scoped(tenant).await?;
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE tenant_id = $1 AND stream_seq IS NULL
                AND position(convert_to($2, 'UTF8') in payload) > 0)",
        )
        .bind(tenant.id)
        .bind(user.to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        super::end_read(tx);
        Ok(waiting)
    }
}

/// Replaces the bodies (and the path's query) of the tenant's logged requests that name the user.
async fn scrub_request_log(
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    user: Uuid,
    needles: &[String],
) -> Result<u64, DomainError> {
    let (mut after, mut scrubbed) = (Uuid::nil(), 0u64);
    let id = user.to_string();
    loop {
        let rows = sqlx::query(
            "SELECT id, path, request_body, response_body FROM request_log
             WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(tenant.id)
        .bind(after)
        .bind(LOG_PAGE)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(last) = rows.last() else { return Ok(scrubbed) };
        after = last.try_get("id").map_err(db_error)?;
        let (mut ids, mut paths) = (Vec::new(), Vec::new());
        for r in &rows {
            let path: String = r.try_get("path").map_err(db_error)?;
            let bodies: [Option<String>; 2] =
                [r.try_get("request_body").map_err(db_error)?, r.try_get("response_body").map_err(db_error)?];
            let in_path = readable_path(&path);
            let names = |text: &str| needles.iter().any(|n| text.contains(n.as_str()));
            let in_bodies = bodies.iter().flatten().any(|b| names(&b.to_lowercase()));
            if names(&in_path) || in_bodies {
                ids.push(r.try_get::<Uuid, _>("id").map_err(db_error)?);
                // The id in a path names nobody once the user is erased; anything else may.
                let names_in_path =
                    needles.iter().any(|n| *n != id && readable_path(path_part(&path)).contains(n.as_str()));
                paths.push(if names_in_path { ERASED_PATH.to_owned() } else { erased_path(&path) });
            }
        }
        if !ids.is_empty() {
            let done = sqlx::query(
                "UPDATE request_log l SET path = e.path,
                    request_body = CASE WHEN l.request_body IS NULL THEN NULL ELSE $3 END,
                    response_body = CASE WHEN l.response_body IS NULL THEN NULL ELSE $3 END
                 FROM unnest($2::uuid[], $4::text[]) AS e(id, path)
                 WHERE l.tenant_id = $1 AND l.id = e.id",
            )
            .bind(tenant.id)
            .bind(&ids)
            .bind(ERASED_BODY)
            .bind(&paths)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            scrubbed += done.rows_affected();
        }
    }
}

/// Gives the outbox's copies of the user's events the tombstone instead of their data.
async fn scrub_outbox(
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    user: Uuid,
    role: &str,
) -> Result<u64, DomainError> {
    let rows = sqlx::query(
        "SELECT seq, payload FROM outbox WHERE tenant_id = $1 AND position(convert_to($2, 'UTF8') in payload) > 0
         FOR UPDATE",
    )
    .bind(tenant.id)
    .bind(user.to_string())
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?;
    let (mut seqs, mut payloads) = (Vec::new(), Vec::new());
    for r in &rows {
        let bytes: Vec<u8> = r.try_get("payload").map_err(db_error)?;
        let Ok(mut envelope) = Envelope::decode(bytes.as_slice()) else { continue };
        if envelope.resource_id != user.to_string() || !tombstone_payload(&mut envelope.payload, user, role) {
            continue;
        }
        seqs.push(r.try_get::<i64, _>("seq").map_err(db_error)?);
        payloads.push(envelope.encode_to_vec());
    }
    if seqs.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "UPDATE outbox o SET payload = e.payload FROM unnest($2::bigint[], $3::bytea[]) AS e(seq, payload)
         WHERE o.tenant_id = $1 AND o.seq = e.seq",
    )
    .bind(tenant.id)
    .bind(&seqs)
    .bind(&payloads)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    Ok(done.rows_affected())
}

/// Replaces the user's snapshot in an event about them; false if the event carries none.
fn tombstone_payload(payload: &mut Option<Payload>, user: Uuid, role: &str) -> bool {
    match payload.as_mut().and_then(events::user_snapshot_field) {
        Some(snapshot) => {
            *snapshot = Some(tombstone_snapshot(user, role));
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_values_looked_for_are_the_ones_that_name_the_user() {
        let id = Uuid::now_v7();
        let doc =
            serde_json::json!({"emails": [{"value": "Ada@Acme.com"}, {"value": "ada.home@mail.test"}, {"value": "x"}]});
        let n = needles(id, &doc, "ADA@acme.com", Some("00u1"));
        let mut expected = vec![id.to_string(), "00u1".into(), "ada.home@mail.test".into(), "ada@acme.com".into()];
        expected.sort();
        assert_eq!(n, expected);
        assert!(!needles(id, &doc, "ada", Some("7")).contains(&"7".to_owned()), "too short to look for");
    }

    #[test]
    fn a_filter_in_a_logged_path_is_found_however_it_was_encoded() {
        let p = "/scim/v2/Users?filter=userName%20eq%20%22ada%40acme.com%22&startIndex=1";
        assert!(readable_path(p).contains("ada@acme.com"));
        assert!(
            readable_path("/scim/v2/Users?filter=userName+eq+%22Ada%40Acme.com%22")
                .contains("username eq \"ada@acme.com\"")
        );
        assert_eq!(erased_path(p), "/scim/v2/Users?(erased)");
        assert_eq!(erased_path("/scim/v2/Users/1"), "/scim/v2/Users/1");
    }
}
