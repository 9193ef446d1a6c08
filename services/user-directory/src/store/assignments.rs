//! Content assignments: stored, and announced with a `content.assigned` event in the same
//! transaction. The user must be a user of the tenant; an archived user's assignment is stored
//! too (the notification service decides not to email them).

use proto::DomainError;
use proto::events::v1::envelope::Payload;
use proto::events::v1::{ContentAssigned, Source};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PendingEvent, Store, Tenant, db_error, now};

/// An assignment as stored.
#[derive(Debug, Clone)]
pub struct StoredAssignment {
    pub id: Uuid,
    pub user_id: Uuid,
    pub content_id: String,
    pub title: String,
    pub created: OffsetDateTime,
    /// False when the content was already assigned (nothing new happened).
    pub created_now: bool,
}

/// The longest content id and title accepted.
const MAX_LEN: usize = 512;

fn not_found(id: &str) -> DomainError {
    DomainError::not_found(format!("User {id} not found."))
}

fn assignment_from_row(row: &sqlx::postgres::PgRow, created_now: bool) -> Result<StoredAssignment, sqlx::Error> {
    Ok(StoredAssignment {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        content_id: row.try_get("content_id")?,
        title: row.try_get("title")?,
        created: row.try_get("created_at")?,
        created_now,
    })
}

impl Store {
    /// An assignment by id, within the tenant.
    pub async fn get_assignment(&self, tenant: &Tenant, id: &str) -> Result<StoredAssignment, DomainError> {
        let missing = || DomainError::not_found(format!("Assignment {id} not found."));
        let uuid = Uuid::parse_str(id).map_err(|_| missing())?;
        let mut tx = self.scoped(tenant).await?;
        let row = sqlx::query(
            "SELECT id, user_id, content_id, title, created_at FROM assignments WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.id)
        .bind(uuid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(missing)?;
        self.commit(tx).await?;
        assignment_from_row(&row, false).map_err(db_error)
    }

    /// Assigns content to a user; assigning it again returns the existing assignment.
    pub async fn create_assignment(
        &self,
        tenant: &Tenant,
        user_id: &str,
        content_id: &str,
        title: &str,
    ) -> Result<StoredAssignment, DomainError> {
        for (name, v) in [("contentId", content_id), ("title", title)] {
            if v.trim().is_empty() || v.chars().count() > MAX_LEN {
                return Err(DomainError::new(
                    proto::ErrorKind::InvalidValue,
                    format!("{name} is required, at most {MAX_LEN} characters."),
                ));
            }
        }
        let user = Uuid::parse_str(user_id).map_err(|_| not_found(user_id))?;
        let mut tx = self.scoped(tenant).await?;
        // The user's row lock orders this event after the user's own events.
        let found: Option<(String, i64)> = sqlx::query_as(
            "SELECT source, version FROM users WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL FOR SHARE",
        )
        .bind(tenant.id)
        .bind(user)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let (source, user_version) = found.ok_or_else(|| not_found(user_id))?;
        let at = now();
        let inserted = sqlx::query(
            "INSERT INTO assignments (tenant_id, id, user_id, content_id, title, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, user_id, content_id) DO NOTHING
             RETURNING id",
        )
        .bind(tenant.id)
        .bind(Uuid::now_v7())
        .bind(user)
        .bind(content_id)
        .bind(title)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let row = sqlx::query(
            "SELECT id, user_id, content_id, title, created_at FROM assignments
             WHERE tenant_id = $1 AND user_id = $2 AND content_id = $3",
        )
        .bind(tenant.id)
        .bind(user)
        .bind(content_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        let assignment = assignment_from_row(&row, inserted.is_some()).map_err(db_error)?;
        if assignment.created_now {
            let event = PendingEvent {
                resource_id: assignment.id,
                resource_version: 1,
                source: if source == "admin" { Source::Admin } else { Source::Scim },
                occurred_at: at,
                payload: Payload::ContentAssigned(ContentAssigned {
                    user_id: user.to_string(),
                    content_id: content_id.to_owned(),
                    title: title.to_owned(),
                    user_version,
                }),
            };
            self.append_event(&mut tx, tenant, event).await?;
        }
        self.commit(tx).await?;
        Ok(assignment)
    }
}
