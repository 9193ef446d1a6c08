//! The Group resource. A group's members are not part of its stored document: user-directory
//! keeps them as rows, so that adding one member to a group of 100,000 costs what it costs for a
//! group of 10. This module separates them: from request bodies, and from PATCH operations,
//! which become [`MemberOp`]s the store applies incrementally.

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::filter::{AttrPath, CompValue, CompareOp, Filter};
use crate::patch::{Op, Operation, PatchRequest};
use crate::resource::canonicalize;
use crate::schema::{GROUP_RESOURCE, GROUP_SCHEMA};
use crate::user::{ResourceMeta, render_meta};

/// The longest displayName accepted.
pub const MAX_DISPLAY_NAME_LENGTH: usize = 256;

/// A group's canonical SCIM document, without `members`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDocument(Map<String, Value>);

/// A change to a group's membership, in request order.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberOp {
    /// Adds these users (already members stay, unchanged).
    Add(Vec<Member>),
    /// Removes these users (non-members are ignored).
    Remove(Vec<String>),
    /// Removes the members a filter on `value` or `display` selects.
    RemoveMatching(Filter),
    /// Removes every member.
    RemoveAll,
    /// Makes these users the whole membership.
    Replace(Vec<Member>),
}

/// A reference to another resource: a group's member (with the `display` the client gave it,
/// if any), or a group a user belongs to (with the group's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub value: String,
    pub display: Option<String>,
}

impl Member {
    pub fn new(value: impl Into<String>) -> Self {
        Member { value: value.into(), display: None }
    }
}

/// The members in a `members` value: a list (or one) of `{"value": id, "display": …}` or bare ids.
pub fn members_in(value: &Value) -> Result<Vec<Member>> {
    let items = match value {
        Value::Array(items) => items.as_slice(),
        Value::Null => &[],
        single => std::slice::from_ref(single),
    };
    let no_value = || Error::invalid_value("every member needs a value: the id of a user");
    items
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(Member::new(s.clone())),
            Value::Object(o) => {
                let get =
                    |name: &str| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.as_str());
                let value = get("value").ok_or_else(no_value)?;
                let display = get("display").map(|d| d.chars().take(MAX_DISPLAY_NAME_LENGTH).collect());
                Ok(Member { value: value.to_owned(), display })
            }
            _ => Err(no_value()),
        })
        .collect()
}

/// Just the ids of a `members` value.
fn member_ids(value: &Value) -> Result<Vec<String>> {
    Ok(members_in(value)?.into_iter().map(|m| m.value).collect())
}

fn is_members(path: &AttrPath) -> bool {
    path.name.eq_ignore_ascii_case("members")
        && path.urn.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(GROUP_SCHEMA))
}

/// `value eq "x" or value eq "y"`: the ids, if the filter is only that.
fn value_equalities(filter: &Filter) -> Option<Vec<String>> {
    match filter {
        Filter::Compare(AttrPath { urn: None, name, sub: None }, CompareOp::Eq, CompValue::Str(v))
            if name.eq_ignore_ascii_case("value") =>
        {
            Some(vec![v.clone()])
        }
        Filter::Or(l, r) => {
            let mut ids = value_equalities(l)?;
            ids.extend(value_equalities(r)?);
            Some(ids)
        }
        _ => None,
    }
}

/// Splits a PATCH into the operations on the group's document and those on its members.
pub fn split_patch(request: &PatchRequest) -> Result<(PatchRequest, Vec<MemberOp>)> {
    let mut doc_ops = Vec::new();
    let mut member_ops = Vec::new();
    for op in &request.operations {
        match &op.path {
            Some(path) if is_members(&path.attr) => {
                if path.attr.sub.is_some() || path.sub.is_some() {
                    return Err(Error::mutability(
                        "a member's value, type and $ref cannot be changed; remove and add the member instead",
                    ));
                }
                let value = op.value.clone().unwrap_or(Value::Null);
                member_ops.push(match (op.op, &path.filter) {
                    (Op::Add, None) => MemberOp::Add(members_in(&value)?),
                    (Op::Replace, None) => MemberOp::Replace(members_in(&value)?),
                    (Op::Remove, None) if value.is_null() => MemberOp::RemoveAll,
                    (Op::Remove, None) => MemberOp::Remove(member_ids(&value)?),
                    (Op::Remove, Some(f)) => match value_equalities(f) {
                        Some(ids) => MemberOp::Remove(ids),
                        None => MemberOp::RemoveMatching(f.clone()),
                    },
                    (Op::Add | Op::Replace, Some(_)) => {
                        return Err(Error::invalid_path(
                            "members[...] can only be removed; add or replace members by value",
                        ));
                    }
                });
            }
            Some(_) => doc_ops.push(op.clone()),
            None => {
                let Some(Value::Object(obj)) = &op.value else {
                    doc_ops.push(op.clone());
                    continue;
                };
                let mut rest = Map::new();
                for (k, v) in obj {
                    if k.eq_ignore_ascii_case("members") {
                        member_ops.push(match op.op {
                            Op::Replace => MemberOp::Replace(members_in(v)?),
                            _ => MemberOp::Add(members_in(v)?),
                        });
                    } else {
                        rest.insert(k.clone(), v.clone());
                    }
                }
                if !rest.is_empty() {
                    doc_ops.push(Operation { op: op.op, path: None, value: Some(Value::Object(rest)) });
                }
            }
        }
    }
    Ok((PatchRequest { operations: doc_ops }, member_ops))
}

impl GroupDocument {
    /// Reads a request body (POST or PUT): the document, and the members if `members` was given.
    pub fn from_request(mut body: Value) -> Result<(Self, Option<Vec<Member>>)> {
        let members = match body.as_object_mut() {
            Some(obj) => match obj.keys().find(|k| k.eq_ignore_ascii_case("members")).cloned() {
                Some(k) => Some(members_in(&obj.remove(&k).unwrap_or(Value::Null))?),
                None => None,
            },
            None => None,
        };
        let doc = canonicalize(&GROUP_RESOURCE, body)?;
        Ok((GroupDocument(doc), members))
    }

    /// Wraps a stored document.
    pub fn from_stored(doc: Map<String, Value>) -> Self {
        GroupDocument(doc)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Checks what every group must have: a displayName.
    pub fn validate(&self) -> Result<()> {
        match self.0.get("displayName") {
            Some(Value::String(d)) if !d.trim().is_empty() => {
                if d.chars().count() > MAX_DISPLAY_NAME_LENGTH {
                    return Err(Error::invalid_value(format!(
                        "The group's displayName is longer than {MAX_DISPLAY_NAME_LENGTH} characters."
                    )));
                }
                Ok(())
            }
            _ => Err(Error::invalid_value("The group has no displayName. Every group needs a name.")),
        }
    }

    /// Applies document operations (no `members`), all or nothing.
    pub fn patch(&mut self, request: &PatchRequest) -> Result<()> {
        if request.operations.is_empty() {
            return Ok(());
        }
        let mut working = self.0.clone();
        request.apply(&GROUP_RESOURCE, &mut working)?;
        let candidate = GroupDocument(working);
        candidate.validate()?;
        *self = candidate;
        Ok(())
    }

    pub fn display_name(&self) -> &str {
        self.0.get("displayName").and_then(Value::as_str).unwrap_or("")
    }

    pub fn external_id(&self) -> Option<&str> {
        self.0.get("externalId").and_then(Value::as_str)
    }

    /// The SCIM representation; `members` when loaded, each with its `$ref` under `base_url` and
    /// the `display` it was given.
    pub fn render(&self, meta: &ResourceMeta, members: Option<&[Member]>, base_url: &str) -> Value {
        let mut out = Map::new();
        out.insert("schemas".to_owned(), json!([GROUP_SCHEMA]));
        out.insert("id".to_owned(), Value::String(meta.id.clone()));
        for name in ["externalId", "displayName"] {
            if let Some(v) = self.0.get(name) {
                out.insert(name.to_owned(), v.clone());
            }
        }
        for (k, v) in &self.0 {
            if !out.contains_key(k) && !k.eq_ignore_ascii_case("members") {
                out.insert(k.clone(), v.clone());
            }
        }
        if let Some(members) = members {
            let rendered: Vec<Value> = members
                .iter()
                .map(|m| {
                    let mut o = Map::new();
                    o.insert("value".to_owned(), Value::String(m.value.clone()));
                    o.insert("$ref".to_owned(), Value::String(format!("{base_url}/Users/{}", m.value)));
                    if let Some(d) = &m.display {
                        o.insert("display".to_owned(), Value::String(d.clone()));
                    }
                    Value::Object(o)
                })
                .collect();
            out.insert("members".to_owned(), Value::Array(rendered));
        }
        out.insert("meta".to_owned(), render_meta("Group", meta));
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::PATCH_OP_SCHEMA;

    fn split(ops: Value) -> Result<(PatchRequest, Vec<MemberOp>)> {
        split_patch(&PatchRequest::parse(&json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops}))?)
    }

    #[test]
    fn okta_group_push_operations() {
        let (doc, members) = split(json!([
            {"op": "replace", "value": {"id": "g1", "displayName": "Sales"}},
            {"op": "remove", "path": "members[value eq \"u1\"]"},
            {"op": "remove", "path": "members[value eq \"u2\" or value eq \"u3\"]"},
            {"op": "add", "path": "members", "value": [{"value": "u4", "display": "a@b.c"}, {"value": "u5"}]}
        ]))
        .unwrap();
        assert_eq!(doc.operations.len(), 1);
        assert_eq!(
            members,
            vec![
                MemberOp::Remove(vec!["u1".into()]),
                MemberOp::Remove(vec!["u2".into(), "u3".into()]),
                MemberOp::Add(vec![Member { value: "u4".into(), display: Some("a@b.c".into()) }, Member::new("u5")]),
            ]
        );
    }

    #[test]
    fn push_now_entra_and_path_less_shapes() {
        let (_, m) = split(json!([{"op": "replace", "path": "members", "value": []}])).unwrap();
        assert_eq!(m, vec![MemberOp::Replace(vec![])]);
        let (_, m) = split(json!([{"op": "Remove", "path": "members", "value": [{"value": "u1"}]}])).unwrap();
        assert_eq!(m, vec![MemberOp::Remove(vec!["u1".into()])]);
        let (_, m) = split(json!([{"op": "remove", "path": "members"}])).unwrap();
        assert_eq!(m, vec![MemberOp::RemoveAll]);
        let (doc, m) = split(json!([{"op": "replace", "value": {"members": [{"value": "u9"}]}}])).unwrap();
        assert!(doc.operations.is_empty());
        assert_eq!(m, vec![MemberOp::Replace(vec![Member::new("u9")])]);
        let (_, m) = split(json!([{"op": "remove", "path": "members[display eq \"x\"]"}])).unwrap();
        assert!(matches!(m[0], MemberOp::RemoveMatching(_)));
        assert!(split(json!([{"op": "replace", "path": "members[value eq \"a\"].value", "value": "b"}])).is_err());
        assert!(split(json!([{"op": "add", "path": "members", "value": [{"display": "no id"}]}])).is_err());
    }

    #[test]
    fn bodies_separate_members_and_render_refs() {
        let (doc, members) = GroupDocument::from_request(json!({
            "schemas": [GROUP_SCHEMA], "displayName": "Sales", "members": [{"value": "u1", "display": "x"}], "id": "ignored"
        }))
        .unwrap();
        doc.validate().unwrap();
        assert_eq!(members, Some(vec![Member { value: "u1".into(), display: Some("x".into()) }]));
        assert!(!doc.as_map().contains_key("members") && !doc.as_map().contains_key("id"));
        let meta = ResourceMeta {
            id: "g1".into(),
            created: time::OffsetDateTime::UNIX_EPOCH,
            last_modified: time::OffsetDateTime::UNIX_EPOCH,
            version: 1,
            location: "http://h/scim/v2/Groups/g1".into(),
        };
        let out = doc.render(
            &meta,
            Some(&[Member { value: "u1".into(), display: Some("Jane".into()) }, Member::new("u2")]),
            "http://h/scim/v2",
        );
        assert_eq!(out["members"][0], json!({"value": "u1", "$ref": "http://h/scim/v2/Users/u1", "display": "Jane"}));
        assert_eq!(
            out["members"][1],
            json!({"value": "u2", "$ref": "http://h/scim/v2/Users/u2"}),
            "no display invented"
        );
        assert_eq!(out["displayName"], "Sales");
        assert!(GroupDocument::from_request(json!({"displayName": ""})).unwrap().0.validate().is_err());
    }
}
