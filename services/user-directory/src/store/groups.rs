//! Groups and their membership rows. A PATCH's member operations become indexed inserts and
//! deletes (never a rewrite of the whole list), under the group's row lock so that concurrent
//! PATCHes on one group serialise and never lose a member. Every member id must be a user of the
//! same tenant, checked before anything is written.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proto::events::v1::envelope::Payload;
use proto::events::v1::{
    GroupCreated, GroupDeleted, GroupMembersAdded, GroupMembersRemoved, GroupSnapshot, GroupUpdated, Source,
};
use proto::{DomainError, ErrorKind};
use scim::filter::{Filter, Scope, matches};
use scim::schema::GROUP_RESOURCE;
use scim::{GroupDocument, Member, MemberOp, Page};
use serde_json::{Map, Value, json};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PendingEvent, Store, Tenant, db_error, end_read, now};
use crate::fairness::ListCap;
use crate::sql_filter::{self, GROUPS};

/// A group as stored, with its members when they were asked for.
#[derive(Debug, Clone)]
pub struct StoredGroup {
    pub id: Uuid,
    pub version: i64,
    pub created: OffsetDateTime,
    pub last_modified: OffsetDateTime,
    pub document: GroupDocument,
    pub members: Option<Vec<Member>>,
}

const COLUMNS: &str = "id, version, created_at, updated_at, document";

fn group_from_row(row: &PgRow) -> Result<StoredGroup, DomainError> {
    let read = || -> Result<StoredGroup, sqlx::Error> {
        let document: sqlx::types::Json<Map<String, Value>> = row.try_get("document")?;
        Ok(StoredGroup {
            id: row.try_get("id")?,
            version: row.try_get("version")?,
            created: row.try_get("created_at")?,
            last_modified: row.try_get("updated_at")?,
            document: GroupDocument::from_stored(document.0),
            members: None,
        })
    };
    read().map_err(db_error)
}

fn not_found(id: &str) -> DomainError {
    DomainError::not_found(format!("Group {id} not found."))
}

fn write_error(e: sqlx::Error, display_name: &str) -> DomainError {
    match e.as_database_error().and_then(|d| d.constraint()) {
        Some("groups_display_name") => DomainError::new(
            ErrorKind::Uniqueness,
            format!("A group with the displayName \"{display_name}\" already exists."),
        ),
        _ => db_error(e),
    }
}

fn snapshot(doc: &GroupDocument) -> GroupSnapshot {
    GroupSnapshot { display_name: doc.display_name().to_owned(), external_id: doc.external_id().map(str::to_owned) }
}

/// The net effect of a request on the membership.
#[derive(Debug, Default)]
struct Delta {
    added: BTreeSet<Uuid>,
    removed: BTreeSet<Uuid>,
}

impl Delta {
    fn inserted(&mut self, ids: Vec<Uuid>) {
        for id in ids {
            if !self.removed.remove(&id) {
                self.added.insert(id);
            }
        }
    }

    fn deleted(&mut self, ids: Vec<Uuid>) {
        for id in ids {
            if !self.added.remove(&id) {
                self.removed.insert(id);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// What a request's member operations come to, applied in order without touching the database:
/// the stored membership is either kept (less `removed`) or cleared (a replace, or a remove of
/// every member), and `added` is put on top. Every member an `add` or `replace` names is in
/// `checked`, to be verified as a user of the tenant (even one a later operation removes again:
/// a request naming a stranger is refused whole, as before).
#[derive(Debug, Default)]
struct MembershipPlan {
    cleared: bool,
    removed: BTreeSet<Uuid>,
    added: BTreeMap<Uuid, Option<String>>,
    checked: Vec<Member>,
}

impl MembershipPlan {
    fn add(&mut self, members: &[Member]) {
        for m in members {
            self.checked.push(m.clone());
            if let Ok(u) = Uuid::parse_str(&m.value) {
                self.removed.remove(&u);
                // The first display named wins, as when each add was its own INSERT.
                self.added.entry(u).or_insert_with(|| m.display.clone());
            }
        }
    }

    fn remove(&mut self, users: impl IntoIterator<Item = Uuid>) {
        for u in users {
            self.added.remove(&u);
            if !self.cleared {
                self.removed.insert(u);
            }
        }
    }

    fn clear(&mut self) {
        self.cleared = true;
        self.removed.clear();
        self.added.clear();
    }

    fn apply(&mut self, op: &MemberOp) {
        match op {
            MemberOp::Add(members) => self.add(members),
            MemberOp::Replace(members) => {
                self.clear();
                self.add(members);
            }
            MemberOp::Remove(ids) => self.remove(ids.iter().filter_map(|i| Uuid::parse_str(i).ok())),
            MemberOp::RemoveAll => self.clear(),
            MemberOp::RemoveMatching(_) => {}
        }
    }

    /// Removes the members a filter matches, among the members at this point of the request: the
    /// stored ones still kept, and those added so far (with the display they were given).
    fn remove_matching(&mut self, filter: &Filter, stored: &[Member]) {
        let scope = GROUP_RESOURCE.attribute("members").map_or(Scope::Untyped, Scope::Complex);
        let kept = stored
            .iter()
            .filter_map(|m| Uuid::parse_str(&m.value).ok().map(|u| (u, m.display.clone())))
            .filter(|(u, _)| !self.cleared && !self.removed.contains(u) && !self.added.contains_key(u));
        let current: Vec<(Uuid, Option<String>)> =
            kept.chain(self.added.iter().map(|(u, d)| (*u, d.clone()))).collect();
        let matched: Vec<Uuid> = current
            .into_iter()
            .filter(|(u, d)| matches(filter, &json!({"value": u.to_string(), "display": d}), scope))
            .map(|(u, _)| u)
            .collect();
        self.remove(matched);
    }
}

fn ids_of(set: &BTreeSet<Uuid>) -> Vec<String> {
    set.iter().map(Uuid::to_string).collect()
}

impl Store {
    /// The members as (user id, display), once each, if every one is a user of this tenant;
    /// otherwise a 400 naming those that are not.
    async fn existing_users(
        tx: &mut PgConnection,
        tenant: &Tenant,
        members: &[Member],
    ) -> Result<Vec<(Uuid, Option<String>)>, DomainError> {
        let mut wanted: Vec<(Uuid, Option<String>)> = Vec::with_capacity(members.len());
        let mut missing: Vec<&str> = Vec::new();
        let mut seen = BTreeSet::new();
        for m in members {
            match Uuid::parse_str(&m.value) {
                Ok(u) if seen.insert(u) => wanted.push((u, m.display.clone())),
                Ok(_) => {}
                Err(_) => missing.push(&m.value),
            }
        }
        let parsed: Vec<Uuid> = wanted.iter().map(|(u, _)| *u).collect();
        // KEY SHARE: a user being added cannot be deleted until this transaction ends (their
        // deletion then takes the new membership with it, see `drop_memberships`).
        let found: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM users WHERE tenant_id = $1 AND id = ANY($2) AND erased_at IS NULL FOR KEY SHARE",
        )
        .bind(tenant.id)
        .bind(&parsed)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        if found.len() < parsed.len() {
            let found: BTreeSet<Uuid> = found.into_iter().collect();
            let absent: Vec<String> = parsed.iter().filter(|u| !found.contains(u)).map(Uuid::to_string).collect();
            missing.extend(absent.iter().map(String::as_str));
            let shown: Vec<&str> = missing.iter().take(5).copied().collect();
            let more = if missing.len() > 5 { format!(" and {} more", missing.len() - 5) } else { String::new() };
            return Err(DomainError::new(
                ErrorKind::InvalidValue,
                format!(
                    "These members are not users of this tenant: {}{more}. Provision the users before adding them to a group.",
                    shown.join(", ")
                ),
            ));
        }
        if !missing.is_empty() {
            return Err(DomainError::new(
                ErrorKind::InvalidValue,
                format!("These members are not users of this tenant: {}.", missing.join(", ")),
            ));
        }
        Ok(wanted)
    }

    async fn insert_members(
        tx: &mut PgConnection,
        tenant: &Tenant,
        group: Uuid,
        members: &[(Uuid, Option<String>)],
    ) -> Result<Vec<Uuid>, DomainError> {
        let (users, displays): (Vec<Uuid>, Vec<Option<String>>) = members.iter().cloned().unzip();
        sqlx::query_scalar(
            "INSERT INTO group_members (tenant_id, group_id, user_id, display)
             SELECT $1, $2, u, d FROM unnest($3::uuid[], $4::text[]) AS t(u, d)
             ON CONFLICT DO NOTHING RETURNING user_id",
        )
        .bind(tenant.id)
        .bind(group)
        .bind(users)
        .bind(displays)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)
    }

    async fn delete_members(
        tx: &mut PgConnection,
        tenant: &Tenant,
        group: Uuid,
        which: Option<&[Uuid]>,
        keep: Option<&[Uuid]>,
    ) -> Result<Vec<Uuid>, DomainError> {
        sqlx::query_scalar(
            "DELETE FROM group_members WHERE tenant_id = $1 AND group_id = $2
               AND ($3::uuid[] IS NULL OR user_id = ANY($3))
               AND ($4::uuid[] IS NULL OR user_id <> ALL($4))
             RETURNING user_id",
        )
        .bind(tenant.id)
        .bind(group)
        .bind(which)
        .bind(keep)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)
    }

    /// The members of groups, with the display each was given.
    async fn members_of<'e, E: sqlx::PgExecutor<'e>>(
        executor: E,
        tenant: &Tenant,
        groups: &[Uuid],
    ) -> Result<HashMap<Uuid, Vec<Member>>, DomainError> {
        let rows = sqlx::query(
            "SELECT group_id, user_id, display FROM group_members
             WHERE tenant_id = $1 AND group_id = ANY($2) ORDER BY group_id, user_id",
        )
        .bind(tenant.id)
        .bind(groups)
        .fetch_all(executor)
        .await
        .map_err(db_error)?;
        let mut out: HashMap<Uuid, Vec<Member>> = groups.iter().map(|g| (*g, Vec::new())).collect();
        for r in rows {
            let group: Uuid = r.try_get("group_id").map_err(db_error)?;
            let user: Uuid = r.try_get("user_id").map_err(db_error)?;
            out.entry(group)
                .or_default()
                .push(Member { value: user.to_string(), display: r.try_get("display").map_err(db_error)? });
        }
        Ok(out)
    }

    /// Creates a group with its initial members.
    pub async fn create_group(
        &self,
        tenant: &Tenant,
        document: GroupDocument,
        members: Vec<Member>,
    ) -> Result<StoredGroup, DomainError> {
        let id = Uuid::now_v7();
        let at = now();
        let mut tx = self.scoped(tenant).await?;
        let users = Self::existing_users(&mut tx, tenant, &members).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO groups (tenant_id, id, display_name, external_id, version, created_at, updated_at, document,
                display_name_folded)
             VALUES ($1, $2, $3, $4, 1, $5, $5, $6, $7) RETURNING {COLUMNS}"
        )))
        .bind(tenant.id)
        .bind(id)
        .bind(document.display_name())
        .bind(document.external_id())
        .bind(at)
        .bind(sqlx::types::Json(document.as_map()))
        .bind(document.display_name().to_lowercase())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| write_error(e, document.display_name()))?;
        let mut group = group_from_row(&row)?;
        let added = Self::insert_members(&mut tx, tenant, id, &users).await?;
        let payload = Payload::GroupCreated(GroupCreated {
            group: Some(snapshot(&document)),
            member_ids: added.iter().map(Uuid::to_string).collect(),
        });
        self.group_event(&mut tx, tenant, &group, at, payload).await?;
        group.members = Some(Self::members_of(&mut *tx, tenant, &[id]).await?.remove(&id).unwrap_or_default());
        self.commit(tx).await?;
        Ok(group)
    }

    async fn group_event(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        group: &StoredGroup,
        at: OffsetDateTime,
        payload: Payload,
    ) -> Result<(), DomainError> {
        let event = PendingEvent {
            resource_id: group.id,
            resource_version: group.version,
            source: Source::Scim,
            occurred_at: at,
            payload,
        };
        self.append_event(tx, tenant, event).await.map(|_| ())
    }

    /// Removes a deleted user from every group they were in, as a group PATCH removing them would:
    /// each group's version moves on (its ETag changes) and emits `group.members_removed`.
    pub(super) async fn drop_memberships(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        user: Uuid,
        at: OffsetDateTime,
    ) -> Result<(), DomainError> {
        // The groups are locked first, in id order, as every group writer takes its group before
        // its member rows: then a deletion and a group PATCH never wait for each other in a circle.
        sqlx::query(
            "SELECT id FROM groups WHERE tenant_id = $1 AND id IN
                (SELECT group_id FROM group_members WHERE tenant_id = $1 AND user_id = $2)
             ORDER BY id FOR NO KEY UPDATE",
        )
        .bind(tenant.id)
        .bind(user)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let mut groups: Vec<Uuid> =
            sqlx::query_scalar("DELETE FROM group_members WHERE tenant_id = $1 AND user_id = $2 RETURNING group_id")
                .bind(tenant.id)
                .bind(user)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
        if groups.is_empty() {
            return Ok(());
        }
        groups.sort();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE groups SET version = version + 1, updated_at = $3 WHERE tenant_id = $1 AND id = ANY($2)
             RETURNING {COLUMNS}"
        )))
        .bind(tenant.id)
        .bind(&groups)
        .bind(at)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        for row in rows {
            let group = group_from_row(&row)?;
            let payload = Payload::GroupMembersRemoved(GroupMembersRemoved { user_ids: vec![user.to_string()] });
            self.group_event(tx, tenant, &group, at, payload).await?;
        }
        Ok(())
    }

    /// A group by id, with its members if asked.
    pub async fn get_group(&self, tenant: &Tenant, id: &str, with_members: bool) -> Result<StoredGroup, DomainError> {
        let uuid = Uuid::parse_str(id).map_err(|_| not_found(id))?;
        let mut tx = self.scoped(tenant).await?;
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM groups WHERE tenant_id = $1 AND id = $2")))
            .bind(tenant.id)
            .bind(uuid)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .ok_or_else(|| not_found(id))?;
        let mut group = group_from_row(&row)?;
        if with_members {
            group.members = Some(Self::members_of(&mut *tx, tenant, &[uuid]).await?.remove(&uuid).unwrap_or_default());
        }
        end_read(tx);
        Ok(group)
    }

    /// One page of the tenant's groups matching a filter; with `members`, each group's members
    /// within that cap (a group past it is listed without them: `members` stays `None`).
    pub async fn list_groups(
        &self,
        tenant: &Tenant,
        filter: Option<&Filter>,
        page: Page,
        sort: Option<(&str, bool)>,
        members: Option<ListCap>,
    ) -> Result<(u64, Vec<StoredGroup>), DomainError> {
        let compiled = sql_filter::for_list(&GROUPS, filter)?;
        let mut tx = self.scoped(tenant).await?;
        let (total, rows) = Self::list_rows(&mut tx, &GROUPS, COLUMNS, tenant, &compiled, page, sort).await?;
        let mut groups = rows.iter().map(group_from_row).collect::<Result<Vec<_>, _>>()?;
        if let Some(cap) = members.filter(|_| !groups.is_empty()) {
            let ids: Vec<Uuid> = groups.iter().map(|g| g.id).collect();
            let counts: HashMap<Uuid, i64> = sqlx::query_as(
                "SELECT group_id, count(*) FROM group_members WHERE tenant_id = $1 AND group_id = ANY($2)
                 GROUP BY group_id",
            )
            .bind(tenant.id)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?
            .into_iter()
            .collect();
            let chosen = cap.chosen(&ids.iter().map(|id| counts.get(id).copied().unwrap_or(0)).collect::<Vec<_>>());
            let shown: Vec<Uuid> = ids.iter().zip(&chosen).filter(|(_, c)| **c).map(|(id, _)| *id).collect();
            let mut members = Self::members_of(&mut *tx, tenant, &shown).await?;
            for g in &mut groups {
                g.members = members.remove(&g.id);
            }
        }
        end_read(tx);
        Ok((total, groups))
    }

    /// Replaces a group (SCIM PUT). With `members`, the membership becomes exactly that list;
    /// without, it is left alone (a PUT that omits members never empties a group).
    pub async fn replace_group(
        &self,
        tenant: &Tenant,
        id: &str,
        document: GroupDocument,
        members: Option<Vec<Member>>,
        if_match: Option<i64>,
    ) -> Result<StoredGroup, DomainError> {
        let ops = members.map(|m| vec![MemberOp::Replace(m)]).unwrap_or_default();
        self.update_group(tenant, id, if_match, |_| Ok(document), &ops).await
    }

    /// Applies a PATCH to a group.
    pub async fn patch_group(
        &self,
        tenant: &Tenant,
        id: &str,
        patch: &scim::PatchRequest,
        if_match: Option<i64>,
    ) -> Result<StoredGroup, DomainError> {
        let (doc_ops, member_ops) = scim::group::split_patch(patch)?;
        self.update_group(
            tenant,
            id,
            if_match,
            |current| {
                let mut doc = current.clone();
                doc.patch(&doc_ops)?;
                Ok(doc)
            },
            &member_ops,
        )
        .await
    }

    async fn update_group(
        &self,
        tenant: &Tenant,
        id: &str,
        if_match: Option<i64>,
        change: impl FnOnce(&GroupDocument) -> Result<GroupDocument, DomainError>,
        member_ops: &[MemberOp],
    ) -> Result<StoredGroup, DomainError> {
        let uuid = Uuid::parse_str(id).map_err(|_| not_found(id))?;
        let mut tx = self.scoped(tenant).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM groups WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        )))
        .bind(tenant.id)
        .bind(uuid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(id))?;
        let current = group_from_row(&row)?;
        super::users::check_version(if_match, current.version, "Group", id)?;
        let document = change(&current.document)?;
        document.validate()?;
        let delta = self.apply_member_ops(&mut tx, tenant, uuid, member_ops).await?;
        let doc_changed = document != current.document;
        if !doc_changed && delta.is_empty() {
            tx.rollback().await.map_err(db_error)?;
            return Ok(current);
        }
        let at = now();
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE groups SET display_name = $3, external_id = $4, document = $5, version = version + 1, updated_at = $6,
                display_name_folded = $7
             WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
        )))
        .bind(tenant.id)
        .bind(uuid)
        .bind(document.display_name())
        .bind(document.external_id())
        .bind(sqlx::types::Json(document.as_map()))
        .bind(at)
        .bind(document.display_name().to_lowercase())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| write_error(e, document.display_name()))?;
        let group = group_from_row(&row)?;
        if doc_changed {
            let payload = Payload::GroupUpdated(GroupUpdated { group: Some(snapshot(&document)) });
            self.group_event(&mut tx, tenant, &group, at, payload).await?;
        }
        if !delta.added.is_empty() {
            let payload = Payload::GroupMembersAdded(GroupMembersAdded { user_ids: ids_of(&delta.added) });
            self.group_event(&mut tx, tenant, &group, at, payload).await?;
        }
        if !delta.removed.is_empty() {
            let payload = Payload::GroupMembersRemoved(GroupMembersRemoved { user_ids: ids_of(&delta.removed) });
            self.group_event(&mut tx, tenant, &group, at, payload).await?;
        }
        self.commit(tx).await?;
        Ok(group)
    }

    /// Applies a request's member operations with a fixed number of statements, whatever their
    /// number: they are folded into one [`MembershipPlan`] first (the stored members are read once,
    /// and only when a `remove` filter needs them), then every user to add is checked in one
    /// query, the removals are one DELETE and the additions one INSERT.
    async fn apply_member_ops(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        group: Uuid,
        member_ops: &[MemberOp],
    ) -> Result<Delta, DomainError> {
        let mut plan = MembershipPlan::default();
        let mut stored: Option<Vec<Member>> = None;
        for op in member_ops {
            if let MemberOp::RemoveMatching(filter) = op {
                if stored.is_none() {
                    stored =
                        Some(Self::members_of(&mut *tx, tenant, &[group]).await?.remove(&group).unwrap_or_default());
                }
                plan.remove_matching(filter, stored.as_deref().unwrap_or_default());
            } else {
                plan.apply(op);
            }
        }
        let mut delta = Delta::default();
        if !plan.checked.is_empty() {
            Self::existing_users(&mut *tx, tenant, &plan.checked).await?;
        }
        let adding: Vec<(Uuid, Option<String>)> = plan.added.into_iter().collect();
        if plan.cleared {
            let keep: Vec<Uuid> = adding.iter().map(|(u, _)| *u).collect();
            delta.deleted(Self::delete_members(&mut *tx, tenant, group, None, Some(&keep)).await?);
        } else if !plan.removed.is_empty() {
            let which: Vec<Uuid> = plan.removed.iter().copied().collect();
            delta.deleted(Self::delete_members(&mut *tx, tenant, group, Some(&which), None).await?);
        }
        if !adding.is_empty() {
            delta.inserted(Self::insert_members(&mut *tx, tenant, group, &adding).await?);
        }
        Ok(delta)
    }

    /// Deletes a group and its membership.
    pub async fn delete_group(&self, tenant: &Tenant, id: &str, if_match: Option<i64>) -> Result<(), DomainError> {
        let uuid = Uuid::parse_str(id).map_err(|_| not_found(id))?;
        let mut tx = self.scoped(tenant).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM groups WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        )))
        .bind(tenant.id)
        .bind(uuid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(id))?;
        let mut group = group_from_row(&row)?;
        super::users::check_version(if_match, group.version, "Group", id)?;
        sqlx::query("DELETE FROM groups WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.id)
            .bind(uuid)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        group.version += 1;
        self.group_event(&mut tx, tenant, &group, now(), Payload::GroupDeleted(GroupDeleted {})).await?;
        self.commit(tx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::now_v7()).collect()
    }

    fn members(users: &[Uuid]) -> Vec<Member> {
        users.iter().map(|u| Member::new(u.to_string())).collect()
    }

    /// The plan comes to what the operations, applied one by one, would leave: here for Okta's
    /// incremental push (removes, then one add), a replace in the middle, and a filter.
    #[test]
    fn member_operations_fold_into_one_plan_as_if_applied_in_order() {
        let u = ids(6);
        let mut plan = MembershipPlan::default();
        plan.apply(&MemberOp::Remove(vec![u[0].to_string(), u[1].to_string()]));
        plan.apply(&MemberOp::Add(members(&[u[1], u[2]])));
        assert!(!plan.cleared);
        assert_eq!(plan.removed, BTreeSet::from([u[0]]));
        assert_eq!(plan.added.keys().copied().collect::<Vec<_>>(), [u[1], u[2]]);

        // A replace forgets what came before it; what follows applies on top of it.
        plan.apply(&MemberOp::Replace(members(&[u[3], u[4]])));
        plan.apply(&MemberOp::Remove(vec![u[4].to_string(), "not-a-uuid".into()]));
        assert!(plan.cleared && plan.removed.is_empty());
        assert_eq!(plan.added.keys().copied().collect::<Vec<_>>(), [u[3]]);
        // Every member named by an add or replace is checked, even one removed again.
        assert_eq!(plan.checked.len(), 4);

        // A filter sees the stored members still kept and those added so far.
        let mut plan = MembershipPlan::default();
        plan.apply(&MemberOp::Remove(vec![u[0].to_string()]));
        plan.apply(&MemberOp::Add(vec![Member { value: u[5].to_string(), display: Some("x".into()) }]));
        let stored = vec![
            Member { value: u[0].to_string(), display: Some("x".into()) },
            Member { value: u[1].to_string(), display: Some("x".into()) },
            Member { value: u[2].to_string(), display: Some("y".into()) },
        ];
        plan.remove_matching(&scim::filter::parse("display eq \"x\"").unwrap(), &stored);
        assert_eq!(plan.removed, BTreeSet::from([u[0], u[1], u[5]]));
        assert!(plan.added.is_empty());
    }
}
