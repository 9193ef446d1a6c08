//! Users: typed columns for what the system reasons about, beside the canonical SCIM document.
//! Writes take the row lock, bump the version, and append their lifecycle event in the same
//! transaction; a write that changes nothing is not a change (no version, no event).

use std::collections::HashMap;

use proto::events::v1::envelope::Payload;
use proto::events::v1::{
    Source, UserCreated, UserDeactivated, UserDeleted, UserLinked, UserReactivated, UserRoleChanged, UserSnapshot,
    UserUpdated,
};
use proto::{DomainError, ErrorKind};
use scim::filter::Filter;
use scim::{Member, Page, UserDocument, UserSummary};

use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Brake, HeldChange, PendingEvent, Store, Tenant, db_error, end_read, now};
use crate::fairness::ListCap;
use crate::sql_filter::{self, TableSpec, USERS};

/// A user as stored.
#[derive(Debug, Clone)]
pub struct StoredUser {
    pub id: Uuid,
    pub version: i64,
    pub created: OffsetDateTime,
    pub last_modified: OffsetDateTime,
    pub source: Source,
    /// The platform's state: false when archived. It follows the document's `active` whenever that
    /// is set, and stays as it was while `active` is unassigned.
    pub active: bool,
    pub document: UserDocument,
    /// The platform role (`learner`, `manager`, `admin`): set by the tenant's admin, never by SCIM.
    pub role: String,
    /// The groups the user belongs to, when they were asked for.
    pub groups: Option<Vec<Member>>,
}

const COLUMNS: &str = "id, version, created_at, updated_at, source, active, document, role";

/// `COLUMNS` and the groups each user is a member of (`[[id, displayName], ...]`), in the same
/// query: one round trip, not two. `scim_user_by_id` (migration 0011) reads a single user the
/// same way.
const COLUMNS_WITH_GROUPS: &str = "id, version, created_at, updated_at, source, active, document, role,
    (SELECT coalesce(json_agg(json_build_array(g.id, g.display_name) ORDER BY g.display_name, g.id), '[]')
     FROM group_members m JOIN groups g ON g.tenant_id = m.tenant_id AND g.id = m.group_id
     WHERE m.tenant_id = users.tenant_id AND m.user_id = users.id) AS member_of";

/// `COLUMNS` and how many groups each user is in (for a list, which carries a user's groups
/// only within its cap: [`ListCap`]).
const COLUMNS_WITH_GROUP_COUNT: &str = "id, version, created_at, updated_at, source, active, document, role,
    (SELECT count(*) FROM group_members m WHERE m.tenant_id = users.tenant_id AND m.user_id = users.id) AS group_count";

/// The groups of users, each user's in the order a read by id gives them (by displayName, then id).
async fn groups_of(
    tx: &mut PgConnection,
    tenant: &Tenant,
    users: &[Uuid],
) -> Result<HashMap<Uuid, Vec<Member>>, DomainError> {
    if users.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, Uuid, Option<String>)> = sqlx::query_as(
        "SELECT m.user_id, g.id, g.display_name FROM group_members m
         JOIN groups g ON g.tenant_id = m.tenant_id AND g.id = m.group_id
         WHERE m.tenant_id = $1 AND m.user_id = ANY($2) ORDER BY m.user_id, g.display_name, g.id",
    )
    .bind(tenant.id)
    .bind(users)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?;
    let mut out: HashMap<Uuid, Vec<Member>> = HashMap::new();
    for (user, group, display) in rows {
        out.entry(user).or_default().push(Member { value: group.to_string(), display });
    }
    Ok(out)
}

/// The role every provisioned user gets. Nothing in SCIM changes it.
const LEARNER: &str = proto::ROLES[0];

fn source_name(s: Source) -> &'static str {
    match s {
        Source::Admin => "admin",
        Source::Import => "import",
        Source::Scim | Source::Unspecified => "scim",
    }
}

pub(super) fn parse_source(s: &str) -> Source {
    match s {
        "admin" => Source::Admin,
        "import" => Source::Import,
        _ => Source::Scim,
    }
}

fn user_from_row(row: &PgRow) -> Result<StoredUser, DomainError> {
    let read = || -> Result<StoredUser, sqlx::Error> {
        let document: sqlx::types::Json<Map<String, Value>> = row.try_get("document")?;
        let source: String = row.try_get("source")?;
        Ok(StoredUser {
            id: row.try_get("id")?,
            version: row.try_get("version")?,
            created: row.try_get("created_at")?,
            last_modified: row.try_get("updated_at")?,
            source: parse_source(&source),
            active: row.try_get("active")?,
            document: UserDocument::from_stored(document.0),
            role: row.try_get("role")?,
            groups: None,
        })
    };
    read().map_err(db_error)
}

/// A user read with `COLUMNS_WITH_GROUPS`.
fn user_with_groups_from_row(row: &PgRow) -> Result<StoredUser, DomainError> {
    let mut user = user_from_row(row)?;
    let groups: sqlx::types::Json<Vec<(Uuid, Option<String>)>> = row.try_get("member_of").map_err(db_error)?;
    user.groups = Some(groups.0.into_iter().map(|(id, display)| Member { value: id.to_string(), display }).collect());
    Ok(user)
}

fn not_found(id: &str) -> DomainError {
    DomainError::not_found(format!("User {id} not found."))
}

/// A user-name clash is the client's 409; anything else is ours.
fn write_error(e: sqlx::Error, user_name: &str) -> DomainError {
    match e.as_database_error().and_then(|d| d.constraint()) {
        Some("users_user_name") => {
            DomainError::new(ErrorKind::Uniqueness, format!("A user with the userName \"{user_name}\" already exists."))
        }
        _ => db_error(e),
    }
}

/// Checks an `If-Match` version against the stored one.
pub(super) fn check_version(expected: Option<i64>, actual: i64, kind: &str, id: &str) -> Result<(), DomainError> {
    match expected {
        Some(v) if v != actual => Err(DomainError::new(
            ErrorKind::VersionMismatch,
            format!("{kind} {id} has changed: its version is {actual}, not {v}."),
        )),
        _ => Ok(()),
    }
}

fn snapshot(s: &UserSummary, role: &str) -> UserSnapshot {
    UserSnapshot {
        user_name: s.user_name.clone(),
        external_id: s.external_id.clone(),
        given_name: s.given_name.clone(),
        family_name: s.family_name.clone(),
        display_name: s.name_to_show(),
        email: s.email.clone(),
        locale: s.locale.clone(),
        active: s.active,
        role: role.to_owned(),
        cost_center: s.cost_center.clone(),
        division: s.division.clone(),
    }
}

/// The event for a change: an archive or restore if the state flipped, otherwise an update.
fn change_payload(was_active: bool, new: &UserSummary, role: &str) -> Payload {
    let user = Some(snapshot(new, role));
    match (was_active, new.active) {
        (true, false) => Payload::UserDeactivated(UserDeactivated { user }),
        (false, true) => Payload::UserReactivated(UserReactivated { user }),
        _ => Payload::UserUpdated(UserUpdated { user }),
    }
}

fn document_json(doc: &UserDocument) -> sqlx::types::Json<&Map<String, Value>> {
    sqlx::types::Json(doc.as_map())
}

impl Store {
    /// Creates a user; 409 if the userName exists in any case.
    ///
    /// A SCIM create whose userName belongs to a user the customer's admin created before
    /// provisioning follows the tenant's adoption policy: `adopt` links that user (their profile
    /// becomes the identity provider's, the answer is that user), `conflict` is the usual 409.
    pub async fn create_user(
        &self,
        tenant: &Tenant,
        document: UserDocument,
        source: Source,
    ) -> Result<StoredUser, DomainError> {
        match self.insert_user(tenant, &document, source).await {
            Err(e)
                if e.kind == ErrorKind::Uniqueness && source == Source::Scim && tenant.adoption_policy == "adopt" =>
            {
                match self.adopt(tenant, document).await? {
                    Some(adopted) => Ok(adopted),
                    None => Err(e),
                }
            }
            other => other,
        }
    }

    /// Links the admin-created user with this userName, if there is one.
    async fn adopt(&self, tenant: &Tenant, document: UserDocument) -> Result<Option<StoredUser>, DomainError> {
        let mut tx = self.scoped(tenant).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS_WITH_GROUPS} FROM users
             WHERE tenant_id = $1 AND user_name_folded = $2 AND source <> 'scim' AND erased_at IS NULL FOR UPDATE"
        )))
        .bind(tenant.id)
        .bind(document.summary().user_name.to_lowercase())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let current = user_with_groups_from_row(&row)?;
        let document = current.document.replace_with(document)?;
        let adopted = self.write_user(&mut tx, tenant, &current, document, true).await?;
        self.commit(tx).await?;
        Ok(Some(adopted))
    }

    async fn insert_user(
        &self,
        tenant: &Tenant,
        document: &UserDocument,
        source: Source,
    ) -> Result<StoredUser, DomainError> {
        let s = document.summary();
        let id = Uuid::now_v7();
        let at = now();
        let payload = Payload::UserCreated(UserCreated { user: Some(snapshot(&s, LEARNER)) });
        let event = self.outbox_row(
            tenant,
            PendingEvent { resource_id: id, resource_version: 1, source, occurred_at: at, payload },
        );
        // One statement, its own transaction: the user and its event (migration 0011).
        let query = sqlx::query(
            "SELECT * FROM scim_create_user($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                $16, $17, $18, $19, $20, $21)",
        )
        .bind(tenant.id)
        .bind(id)
        .bind(&s.user_name)
        .bind(s.user_name.to_lowercase())
        .bind(&s.external_id)
        .bind(s.active)
        .bind(&s.given_name)
        .bind(&s.family_name)
        .bind(&s.display_name)
        .bind(&s.email)
        .bind(&s.locale)
        .bind(&s.cost_center)
        .bind(&s.division)
        .bind(LEARNER)
        .bind(source_name(source))
        .bind(document_json(document))
        .bind(at)
        .bind(event.event_id)
        .bind(event.subject)
        .bind(event.payload)
        .bind(event.trace_context);
        let row = self.single(async |c| query.fetch_one(c).await).await.map_err(|e| write_error(e, &s.user_name))?;
        self.wrote();
        // A new user belongs to no group yet.
        Ok(StoredUser { groups: Some(Vec::new()), ..user_from_row(&row)? })
    }

    /// A user by id, with their groups if asked. An id that is not a UUID is simply not found.
    pub async fn get_user(&self, tenant: &Tenant, id: &str, with_groups: bool) -> Result<StoredUser, DomainError> {
        let uuid = Uuid::parse_str(id).map_err(|_| not_found(id))?;
        // One statement, scoped to the tenant by the function (migration 0011).
        let query =
            sqlx::query("SELECT * FROM scim_user_by_id($1, $2, $3)").bind(tenant.id).bind(uuid).bind(with_groups);
        let row = self
            .single(async |c| query.fetch_optional(c).await)
            .await
            .map_err(db_error)?
            .ok_or_else(|| not_found(id))?;
        if with_groups { user_with_groups_from_row(&row) } else { user_from_row(&row) }
    }

    /// One page of the tenant's users matching a filter, and the total count; with `groups`, each
    /// user's groups within that cap (a user past it is listed without them: `groups` stays
    /// `None`).
    pub async fn list_users(
        &self,
        tenant: &Tenant,
        filter: Option<&Filter>,
        page: Page,
        sort: Option<(&str, bool)>,
        groups: Option<ListCap>,
    ) -> Result<(u64, Vec<StoredUser>), DomainError> {
        // Okta's lookup by userName, first page: one statement, scoped by the function (migration
        // 0017). userName is unique per tenant, so the page holds every match: one user, whose
        // groups come whole, as a read by id.
        let compiled = sql_filter::for_list(&USERS, filter)?;
        if let Some(folded) = compiled.user_name_lookup().filter(|_| page.start_index == 1 && page.count > 0) {
            let read = if groups.is_some() { user_with_groups_from_row } else { user_from_row };
            let query = sqlx::query("SELECT * FROM scim_user_by_user_name($1, $2, $3)")
                .bind(tenant.id)
                .bind(folded)
                .bind(groups.is_some());
            let rows = self.single(async |c| query.fetch_all(c).await).await.map_err(db_error)?;
            let users = rows.iter().map(read).collect::<Result<Vec<_>, _>>()?;
            return Ok((users.len() as u64, users));
        }
        let mut tx = self.scoped(tenant).await?;
        let columns = if groups.is_some() { COLUMNS_WITH_GROUP_COUNT } else { COLUMNS };
        let (total, rows) = Self::list_rows(&mut tx, &USERS, columns, tenant, &compiled, page, sort).await?;
        let mut users = rows.iter().map(user_from_row).collect::<Result<Vec<_>, _>>()?;
        if let Some(cap) = groups.filter(|_| !users.is_empty()) {
            let counts = rows.iter().map(|r| r.try_get::<i64, _>("group_count")).collect::<Result<Vec<_>, _>>();
            let chosen = cap.chosen(&counts.map_err(db_error)?);
            let shown: Vec<Uuid> = users.iter().zip(&chosen).filter(|(_, c)| **c).map(|(u, _)| u.id).collect();
            let mut member_of = groups_of(&mut tx, tenant, &shown).await?;
            for (user, shown) in users.iter_mut().zip(chosen) {
                if shown {
                    user.groups = Some(member_of.remove(&user.id).unwrap_or_default());
                }
            }
        }
        end_read(tx);
        Ok((total, users))
    }

    /// One page of a table's rows matching a filter ([`sql_filter::for_list`]), in the requested
    /// order (default: by id, which for UUIDv7 is creation order; ties always broken by id so pages
    /// are stable), and the total count.
    pub(super) async fn list_rows(
        conn: &mut PgConnection,
        spec: &'static TableSpec,
        columns: &str,
        tenant: &Tenant,
        compiled: &sql_filter::SqlFilter,
        page: Page,
        sort: Option<(&str, bool)>,
    ) -> Result<(u64, Vec<PgRow>), DomainError> {
        let table = spec.table_name();
        let order = match sort {
            Some((by, descending)) => {
                let dir = if descending { "DESC NULLS LAST" } else { "ASC NULLS LAST" };
                format!(
                    "{} {dir}, {table}.id {}",
                    sql_filter::sort_expression(spec, by)?,
                    if descending { "DESC" } else { "ASC" }
                )
            }
            None => format!("{table}.id"),
        };
        let limit = i64::from(page.count);
        let offset = i64::from(page.start_index) - 1;
        let n = compiled.binds.len();
        let rows = if page.count == 0 {
            Vec::new()
        } else {
            // The page is cut before its columns are computed: PostgreSQL computes the select
            // list (for users, their groups' subquery) for every row an OFFSET skips too. The
            // page keeps the table's name, so `order` applies to it unchanged.
            let sql = format!(
                "SELECT {columns} FROM (SELECT * FROM {table} WHERE tenant_id = $1 AND {} AND ({}) ORDER BY {order}
                 LIMIT ${} OFFSET ${}) {table} ORDER BY {order}",
                spec.visible(),
                compiled.clause,
                n + 2,
                n + 3
            );
            let query = compiled.bind_all(sqlx::query(AssertSqlSafe(sql)).bind(tenant.id));
            query.bind(limit).bind(offset).fetch_all(&mut *conn).await.map_err(db_error)?
        };
        // A first page that is not full holds everything: no count query needed (Okta's lookups).
        let total = if offset == 0 && (rows.len() as i64) < limit {
            rows.len() as u64
        } else {
            let sql = format!(
                "SELECT count(*) FROM {table} WHERE tenant_id = $1 AND {} AND ({})",
                spec.visible(),
                compiled.clause
            );
            let query = compiled.bind_all(sqlx::query(AssertSqlSafe(sql)).bind(tenant.id));
            let row = query.fetch_one(&mut *conn).await.map_err(db_error)?;
            let count: i64 = row.try_get(0).map_err(db_error)?;
            u64::try_from(count).unwrap_or(0)
        };
        Ok((total, rows))
    }

    /// Replaces a user's document (SCIM PUT); the user as written, with their groups if asked.
    pub async fn replace_user(
        &self,
        tenant: &Tenant,
        id: &str,
        document: UserDocument,
        if_match: Option<i64>,
        with_groups: bool,
    ) -> Result<StoredUser, DomainError> {
        let held = HeldChange::Replace(Value::Object(document.as_map().clone()));
        self.replace_user_braked(tenant, id, document, if_match, Brake::Enforce(held), with_groups).await
    }

    pub(crate) async fn replace_user_braked(
        &self,
        tenant: &Tenant,
        id: &str,
        document: UserDocument,
        if_match: Option<i64>,
        brake: Brake,
        with_groups: bool,
    ) -> Result<StoredUser, DomainError> {
        self.update_user(tenant, id, if_match, brake, with_groups, |current| Ok(current.replace_with(document)?)).await
    }

    /// Applies a PATCH to a user; the user as written, with their groups if asked.
    pub async fn patch_user(
        &self,
        tenant: &Tenant,
        id: &str,
        patch: &scim::PatchRequest,
        if_match: Option<i64>,
        with_groups: bool,
    ) -> Result<StoredUser, DomainError> {
        let held = HeldChange::Patch(patch.to_sanitized_json(&scim::schema::USER_RESOURCE));
        self.patch_user_braked(tenant, id, patch, if_match, Brake::Enforce(held), with_groups).await
    }

    pub(crate) async fn patch_user_braked(
        &self,
        tenant: &Tenant,
        id: &str,
        patch: &scim::PatchRequest,
        if_match: Option<i64>,
        brake: Brake,
        with_groups: bool,
    ) -> Result<StoredUser, DomainError> {
        self.update_user(tenant, id, if_match, brake, with_groups, |current| {
            let mut doc = current.clone();
            doc.patch(patch)?;
            Ok(doc)
        })
        .await
    }

    /// Read-modify-write under the row lock, so that concurrent writers never lose an update.
    /// A deactivation goes through the mass-deprovision brake. The groups, when asked for, are
    /// read with the row (a user's write does not change them): no second read after the write.
    async fn update_user(
        &self,
        tenant: &Tenant,
        id: &str,
        if_match: Option<i64>,
        brake: Brake,
        with_groups: bool,
        change: impl FnOnce(&UserDocument) -> Result<UserDocument, DomainError>,
    ) -> Result<StoredUser, DomainError> {
        let uuid = Uuid::parse_str(id).map_err(|_| not_found(id))?;
        let mut tx = self.scoped(tenant).await?;
        let columns = if with_groups { COLUMNS_WITH_GROUPS } else { COLUMNS };
        // NO KEY UPDATE: a group write adding this user (KEY SHARE) need not wait for it.
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {columns} FROM users WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL FOR NO KEY UPDATE"
        )))
        .bind(tenant.id)
        .bind(uuid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(id))?;
        let current = if with_groups { user_with_groups_from_row(&row)? } else { user_from_row(&row)? };
        check_version(if_match, current.version, "User", id)?;
        let document = change(&current.document)?;
        if document == current.document {
            tx.rollback().await.map_err(db_error)?;
            return Ok(current);
        }
        if current.active && document.active() == Some(false) {
            tx = self.brake(tx, tenant, current.id, current.version, &brake).await?;
        }
        let updated = self.write_user(&mut tx, tenant, &current, document, false).await?;
        self.commit(tx).await?;
        Ok(updated)
    }

    /// Writes a changed document. A SCIM write that gives an admin-created user an externalId
    /// (or a SCIM create that `adopt`s them) links the user: from then on the identity provider
    /// provisions them, and the event is `user.linked`.
    async fn write_user(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        current: &StoredUser,
        document: UserDocument,
        adopt: bool,
    ) -> Result<StoredUser, DomainError> {
        let mut s = document.summary();
        s.active = document.active().unwrap_or(current.active);
        let has_external_id = s.external_id.as_deref().is_some_and(|x| !x.trim().is_empty());
        let linking = current.source != Source::Scim && (adopt || has_external_id);
        let source = if linking { Source::Scim } else { current.source };
        let at = now();
        let mut payloads = Vec::with_capacity(2);
        if linking {
            payloads.push(Payload::UserLinked(UserLinked { user: Some(snapshot(&s, &current.role)) }));
        }
        // A link that also archives or restores says so too: consumers of `user.deactivated` /
        // `user.reactivated` must not have to read it out of the link's snapshot.
        if !linking || current.active != s.active {
            payloads.push(change_payload(current.active, &s, &current.role));
        }
        // The row is locked: the version this write gives it is the next one.
        let events = payloads.into_iter().map(|payload| {
            self.outbox_row(
                tenant,
                PendingEvent {
                    resource_id: current.id,
                    resource_version: current.version + 1,
                    source,
                    occurred_at: at,
                    payload,
                },
            )
        });
        let (mut ids, mut subjects, mut bodies, mut trace) = (Vec::new(), Vec::new(), Vec::new(), None);
        for event in events {
            ids.push(event.event_id);
            subjects.push(event.subject);
            bodies.push(event.payload);
            trace = event.trace_context;
        }
        // The row and its events in one statement (one round trip, not one per row).
        let row = sqlx::query(AssertSqlSafe(format!(
            "WITH updated AS (
                UPDATE users SET user_name = $3, external_id = $4, active = $5,
                    archived_at = CASE WHEN $5 THEN NULL ELSE coalesce(archived_at, $13) END,
                    given_name = $6, family_name = $7, display_name = $8, email = $9, locale = $10,
                    cost_center = $11, division = $12, version = version + 1, updated_at = $13, document = $14,
                    user_name_folded = $15, source = $16
                WHERE tenant_id = $1 AND id = $2
                RETURNING {COLUMNS}
             ), events AS (
                INSERT INTO outbox (event_id, tenant_id, subject, payload, trace_context)
                SELECT e.event_id, $1, e.subject, e.payload, $20
                FROM unnest($17::uuid[], $18::text[], $19::bytea[]) WITH ORDINALITY AS e(event_id, subject, payload, n)
                WHERE EXISTS (SELECT 1 FROM updated)
                ORDER BY e.n
             )
             SELECT * FROM updated"
        )))
        .bind(tenant.id)
        .bind(current.id)
        .bind(&s.user_name)
        .bind(&s.external_id)
        .bind(s.active)
        .bind(&s.given_name)
        .bind(&s.family_name)
        .bind(&s.display_name)
        .bind(&s.email)
        .bind(&s.locale)
        .bind(&s.cost_center)
        .bind(&s.division)
        .bind(at)
        .bind(document_json(&document))
        .bind(s.user_name.to_lowercase())
        .bind(source_name(source))
        .bind(ids)
        .bind(subjects)
        .bind(bodies)
        .bind(trace)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| write_error(e, &s.user_name))?;
        // The user's groups are as they were read with the locked row.
        Ok(StoredUser { groups: current.groups.clone(), ..user_from_row(&row)? })
    }

    /// Active users that no identity provider has linked (created by the customer's admin, never
    /// adopted): what support must act on before a deprovisioning silently fails.
    pub async fn list_unlinked_users(&self, tenant: &Tenant) -> Result<Vec<StoredUser>, DomainError> {
        let mut tx = self.scoped(tenant).await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND source <> 'scim' AND active ORDER BY id LIMIT 10000"
        )))
        .bind(tenant.id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit(tx).await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Gives a user one of the platform's [`proto::ROLES`]: the tenant's admin (or support) does, never
    /// SCIM. The user's version moves and the event `user.role_changed` says who did it; giving
    /// the role the user has is no change (no version, no event). An archived user keeps the role
    /// they are given, and has it again when restored.
    pub async fn set_role(
        &self,
        tenant: &Tenant,
        id: &str,
        role: &str,
        changed_by: &str,
    ) -> Result<StoredUser, DomainError> {
        if !proto::ROLES.contains(&role) {
            return Err(DomainError::new(
                ErrorKind::InvalidValue,
                format!("role must be one of {}.", proto::ROLES.join(", ")),
            ));
        }
        let uuid = Uuid::parse_str(id).map_err(|_| not_found(id))?;
        let mut tx = self.scoped(tenant).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL FOR NO KEY UPDATE"
        )))
        .bind(tenant.id)
        .bind(uuid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(id))?;
        let current = user_from_row(&row)?;
        if current.role == role {
            tx.rollback().await.map_err(db_error)?;
            return Ok(current);
        }
        let at = now();
        let mut s = current.document.summary();
        s.active = current.active;
        let payload = Payload::UserRoleChanged(UserRoleChanged {
            user: Some(snapshot(&s, role)),
            old_role: current.role.clone(),
            new_role: role.to_owned(),
            changed_by: changed_by.to_owned(),
        });
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE users SET role = $3, version = version + 1, updated_at = $4
             WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
        )))
        .bind(tenant.id)
        .bind(uuid)
        .bind(role)
        .bind(at)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        // A change of the identity provider's held by the brake applies to the version it saw; a
        // role is not what it changes, so the held change follows the user's new version (else
        // a release would drop a deprovisioning as stale).
        sqlx::query(
            "UPDATE held_changes SET user_version = $3 + 1 WHERE tenant_id = $1 AND user_id = $2 AND user_version = $3",
        )
        .bind(tenant.id)
        .bind(uuid)
        .bind(current.version)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let event = PendingEvent {
            resource_id: current.id,
            resource_version: current.version + 1,
            source: current.source,
            occurred_at: at,
            payload,
        };
        self.append_event(&mut tx, tenant, event).await?;
        self.commit(tx).await?;
        user_from_row(&row)
    }

    /// Deletes a user (SCIM DELETE; Entra's hard delete). Their memberships go with them.
    pub async fn delete_user(&self, tenant: &Tenant, id: &str, if_match: Option<i64>) -> Result<(), DomainError> {
        self.delete_user_braked(tenant, id, if_match, Brake::Enforce(HeldChange::Delete)).await
    }

    /// Deletes a user; deleting an active user goes through the mass-deprovision brake.
    ///
    /// The user's row lock lets group writers add them meanwhile (they only need it to stay), so
    /// a membership can appear after this deletion removed the others; the database then refuses
    /// to delete the user (no cascade: that membership would vanish without its group's event)
    /// and the deletion starts over.
    pub(crate) async fn delete_user_braked(
        &self,
        tenant: &Tenant,
        id: &str,
        if_match: Option<i64>,
        brake: Brake,
    ) -> Result<(), DomainError> {
        let uuid = Uuid::parse_str(id).map_err(|_| not_found(id))?;
        for _ in 0..3 {
            if self.try_delete_user(tenant, id, uuid, if_match, &brake).await? {
                return Ok(());
            }
        }
        Err(DomainError::new(
            ErrorKind::Unavailable,
            format!("User {id} kept being added to groups while it was being deleted; try again."),
        ))
    }

    /// One attempt at a deletion: false when a membership appeared meanwhile.
    async fn try_delete_user(
        &self,
        tenant: &Tenant,
        id: &str,
        uuid: Uuid,
        if_match: Option<i64>,
        brake: &Brake,
    ) -> Result<bool, DomainError> {
        let mut tx = self.scoped(tenant).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL FOR NO KEY UPDATE"
        )))
        .bind(tenant.id)
        .bind(uuid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(id))?;
        let user = user_from_row(&row)?;
        check_version(if_match, user.version, "User", id)?;
        if user.active {
            tx = self.brake(tx, tenant, user.id, user.version, brake).await?;
        }
        let at = now();
        self.drop_memberships(&mut tx, tenant, user.id, at).await?;
        let deleted = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.id)
            .bind(uuid)
            .execute(&mut *tx)
            .await;
        match deleted {
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23503") => {
                tracing::debug!(user = %user.id, "a membership appeared during a deletion; starting over");
                return Ok(false);
            }
            other => other.map_err(db_error)?,
        };
        let event = PendingEvent {
            resource_id: user.id,
            resource_version: user.version + 1,
            source: user.source,
            occurred_at: at,
            payload: Payload::UserDeleted(UserDeleted {}),
        };
        self.append_event(&mut tx, tenant, event).await?;
        self.commit(tx).await?;
        Ok(true)
    }
}
