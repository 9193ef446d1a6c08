//! The PATCH engine (RFC 7644 §3.5.2): parses a PatchOp request and applies it to a canonical
//! document, all operations or none.
//!
//! Liberal in the shapes Okta and Entra send: `op` in any case; path-less `add`/`replace` whose
//! value object has plain, dotted (`name.givenName`) or URN-qualified keys; `"True"`/`"False"` for
//! booleans; `remove` of `members` with a value list; a `replace` through a value filter that
//! matches nothing creates the value when the filter says what it is (`emails[type eq "work"].value`).
//! Read-only attributes inside a path-less value (Okta sends `id`) are ignored; write-only ones
//! (`password`) are accepted and dropped, never stored.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::filter::{AttrPath, CompValue, CompareOp, Filter, PatchPath, Scope, matches, parse_patch_path};
use crate::resource::{coerce, coerce_single, is_stored};
use crate::schema::{Attribute, Mutability, ResourceType};

/// The PatchOp message schema URN.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The most operations one request may carry: what Okta and Entra send at most. Okta's group push
/// carries up to 1,000 membership changes in one PATCH (100 by default, 100 to 1,000 as set at
/// OIN submission; shared/okta/OKTA.md, flow I), each `remove` one operation; Entra sends one
/// operation per attribute. A request over it is a 400 `tooMany` naming the limit: split it.
pub const MAX_OPERATIONS: usize = 1_000;

/// A PATCH operation's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Replace,
    Remove,
}

/// One operation of a PatchOp request.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub op: Op,
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}

/// A parsed PatchOp request.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRequest {
    pub operations: Vec<Operation>,
}

fn get_key<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

impl PatchRequest {
    /// Parses a PatchOp body.
    pub fn parse(body: &Value) -> Result<Self> {
        let Some(obj) = body.as_object() else {
            return Err(Error::invalid_syntax("the PATCH body must be a JSON object with an Operations list"));
        };
        let Some(ops) = get_key(obj, "Operations").and_then(Value::as_array) else {
            return Err(Error::invalid_syntax("the PATCH body has no Operations list"));
        };
        if ops.is_empty() {
            return Err(Error::invalid_value("the PATCH body's Operations list is empty"));
        }
        if ops.len() > MAX_OPERATIONS {
            return Err(Error::new(
                crate::ScimType::TooMany,
                format!(
                    "A PATCH may carry at most {MAX_OPERATIONS} operations; this one has {}. Send it as several PATCH requests.",
                    ops.len()
                ),
            ));
        }
        let operations = ops.iter().enumerate().map(|(i, op)| parse_operation(i, op)).collect::<Result<_>>()?;
        Ok(PatchRequest { operations })
    }

    /// The request as JSON, without the values of write-only attributes (Okta's password sync):
    /// what may travel further than the gateway.
    pub fn to_sanitized_json(&self, rt: &'static ResourceType) -> Value {
        let ops: Vec<Value> = self
            .operations
            .iter()
            .filter_map(|op| {
                let value = match (&op.path, &op.value) {
                    (Some(p), _) if is_write_only(rt, &p.attr) => return None,
                    (None, Some(Value::Object(obj))) => {
                        let kept: Map<String, Value> = obj
                            .iter()
                            .filter(|(k, _)| parse_patch_path(k).map_or(true, |p| !is_write_only(rt, &p.attr)))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        if kept.is_empty() {
                            return None;
                        }
                        Some(Value::Object(kept))
                    }
                    (_, v) => v.clone(),
                };
                let mut o = Map::new();
                o.insert("op".to_owned(), Value::String(op_name(op.op).to_owned()));
                if let Some(p) = &op.path {
                    o.insert("path".to_owned(), Value::String(p.to_string()));
                }
                if let Some(v) = value {
                    o.insert("value".to_owned(), v);
                }
                Some(Value::Object(o))
            })
            .collect();
        serde_json::json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops})
    }

    /// Applies every operation to `doc`, or, if one fails, none.
    pub fn apply(&self, rt: &'static ResourceType, doc: &mut Map<String, Value>) -> Result<()> {
        let mut working = doc.clone();
        for op in &self.operations {
            apply_operation(rt, &mut working, op)?;
        }
        *doc = working;
        Ok(())
    }
}

fn parse_operation(index: usize, op: &Value) -> Result<Operation> {
    let n = index + 1;
    let Some(obj) = op.as_object() else {
        return Err(Error::invalid_syntax(format!("PATCH operation {n} is not an object")));
    };
    let kind = match get_key(obj, "op").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
        Some("add") => Op::Add,
        Some("replace") => Op::Replace,
        Some("remove") => Op::Remove,
        _ => {
            return Err(Error::invalid_syntax(format!("PATCH operation {n}: op must be add, replace or remove")));
        }
    };
    let path = match get_key(obj, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => parse_op_path(s)?,
        Some(_) => {
            return Err(Error::invalid_path(format!("PATCH operation {n}: path must be a string")));
        }
    };
    let value = get_key(obj, "value").cloned();
    match (kind, &path, &value) {
        (Op::Remove, None, _) => Err(Error::no_target(format!("PATCH operation {n}: remove needs a path"))),
        (Op::Add | Op::Replace, _, None) => {
            Err(Error::invalid_value(format!("PATCH operation {n}: {} needs a value", op_name(kind))))
        }
        _ => Ok(Operation { op: kind, path, value }),
    }
}

/// An operation's `path` as the engine reads it: trimmed, and none when blank.
fn parse_op_path(path: &str) -> Result<Option<PatchPath>> {
    let path = path.trim();
    if path.is_empty() {
        return Ok(None);
    }
    parse_patch_path(path).map(Some)
}

/// Whether the engine reads this text (an operation's `path`, or a key of a path-less value or of
/// an extension object inside one) as naming a password: the User's write-only `password` in any
/// spelling the engine accepts (any case, surrounding whitespace, qualified by the core schema's
/// URN, with a value filter or a sub-attribute), or an attribute or sub-attribute called
/// `password` under any other schema (which the engine would store as sent: a secret all the
/// same). The gateway's request log redacts with this, so that what it hides and what the engine
/// takes for a password cannot disagree. A key of a POST or PUT body that
/// [`crate::resource::canonicalize`] drops as the password is one of these too.
pub fn targets_password(path: &str) -> bool {
    let Ok(Some(path)) = parse_op_path(path) else {
        return false;
    };
    // By name, not by mutability: `roles` is write-only too (accepted and ignored), and no secret.
    [Some(path.attr.name.as_str()), path.attr.sub.as_deref(), path.sub.as_deref()]
        .into_iter()
        .flatten()
        .any(|name| name.eq_ignore_ascii_case("password"))
}

fn is_write_only(rt: &'static ResourceType, path: &AttrPath) -> bool {
    let urn = path.urn.as_deref().filter(|u| !u.eq_ignore_ascii_case(rt.schema.id));
    rt.resolve(urn, &path.name).is_some_and(|a| a.mutability == Mutability::WriteOnly)
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Add => "add",
        Op::Replace => "replace",
        Op::Remove => "remove",
    }
}

fn apply_operation(rt: &'static ResourceType, doc: &mut Map<String, Value>, op: &Operation) -> Result<()> {
    let value = op.value.clone().unwrap_or(Value::Null);
    match &op.path {
        Some(path) => apply_path(rt, doc, op.op, path, value, false),
        None => {
            let Value::Object(obj) = value else {
                return Err(Error::invalid_value(format!(
                    "a PATCH {} without a path needs an object value",
                    op_name(op.op)
                )));
            };
            for (key, v) in obj {
                if key.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                if let Some(ext) = rt.extension(&key) {
                    apply_extension_object(rt, doc, op.op, ext.id, v, true)?;
                    continue;
                }
                let path = parse_patch_path(&key)?;
                apply_path(rt, doc, op.op, &path, v, true)?;
            }
            Ok(())
        }
    }
}

/// Applies each key of an object to the extension it belongs to.
fn apply_extension_object(
    rt: &'static ResourceType,
    doc: &mut Map<String, Value>,
    op: Op,
    urn: &str,
    value: Value,
    lenient: bool,
) -> Result<()> {
    match (op, value) {
        (Op::Remove, _) => {
            doc.remove(urn);
            Ok(())
        }
        (_, Value::Object(obj)) => {
            for (k, v) in obj {
                if k.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                let path = PatchPath { attr: attr_path_in(urn, &k)?, filter: None, sub: None };
                apply_path(rt, doc, op, &path, v, lenient)?;
            }
            Ok(())
        }
        (_, Value::Null) => {
            doc.remove(urn);
            Ok(())
        }
        _ => Err(Error::invalid_value(format!("{urn} must be an object"))),
    }
}

fn attr_path_in(urn: &str, key: &str) -> Result<AttrPath> {
    let p = parse_patch_path(key)?;
    Ok(AttrPath { urn: Some(urn.to_owned()), ..p.attr })
}

/// Where an operation lands: the map that holds the attribute (the document, or an extension's
/// object inside it), the attribute's stored name and its definition if the schema has one.
struct Target {
    container: Option<String>,
    key: String,
    attr: Option<&'static Attribute>,
}

fn resolve(rt: &'static ResourceType, path: &AttrPath) -> Result<Target> {
    match &path.urn {
        None => Ok(core_target(rt, &path.name)),
        Some(urn) if urn.eq_ignore_ascii_case(rt.schema.id) => Ok(core_target(rt, &path.name)),
        Some(urn) => match rt.extension(urn) {
            Some(ext) => {
                let attr = ext.attribute(&path.name);
                Ok(Target {
                    container: Some(ext.id.to_owned()),
                    key: attr.map_or_else(|| path.name.clone(), |a| a.name.to_owned()),
                    attr,
                })
            }
            None => Err(Error::invalid_path(format!("the schema {urn} is not supported"))),
        },
    }
}

fn core_target(rt: &'static ResourceType, name: &str) -> Target {
    let attr = rt.attribute(name);
    Target { container: None, key: attr.map_or_else(|| name.to_owned(), |a| a.name.to_owned()), attr }
}

fn apply_path(
    rt: &'static ResourceType,
    doc: &mut Map<String, Value>,
    op: Op,
    path: &PatchPath,
    value: Value,
    lenient: bool,
) -> Result<()> {
    // The whole extension as a path: `urn:…:enterprise:2.0:User`.
    if path.filter.is_none()
        && path.attr.sub.is_none()
        && let Some(urn) = &path.attr.urn
        && let Some(ext) = rt.extension(&format!("{urn}:{}", path.attr.name))
    {
        return apply_extension_object(rt, doc, op, ext.id, value, lenient);
    }
    let target = resolve(rt, &path.attr)?;
    if let Some(attr) = target.attr {
        if attr.mutability == Mutability::WriteOnly {
            // Accepted and dropped: a password sync must succeed, and must never be stored.
            return Ok(());
        }
        if !is_stored(attr) {
            if lenient {
                return Ok(());
            }
            return Err(Error::mutability(format!("{} is read-only", path.attr)));
        }
    }
    let label = path.to_string();
    let result = {
        let container = match &target.container {
            None => &mut *doc,
            Some(urn) => {
                let entry = doc.entry(urn.clone()).or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                match entry.as_object_mut() {
                    Some(obj) => obj,
                    None => return Err(Error::invalid_path(format!("{urn} is not an object"))),
                }
            }
        };
        match &path.filter {
            None => apply_plain(container, &target, path.attr.sub.as_deref(), op, value, &label),
            Some(filter) => apply_filtered(container, &target, filter, path.sub.as_deref(), op, value, &label),
        }
    };
    if let Some(urn) = &target.container
        && doc.get(urn).and_then(Value::as_object).is_some_and(Map::is_empty)
    {
        doc.remove(urn);
    }
    result
}

/// An operation on an attribute or one of its sub-attributes, without a value filter.
fn apply_plain(
    container: &mut Map<String, Value>,
    target: &Target,
    sub: Option<&str>,
    op: Op,
    value: Value,
    label: &str,
) -> Result<()> {
    let key = target.key.as_str();
    let multi = target.attr.is_some_and(|a| a.multi_valued) || container.get(key).is_some_and(Value::is_array);
    if let Some(sub) = sub {
        let sub_attr = target.attr.and_then(|a| a.sub(sub));
        let sub_key = sub_attr.map_or(sub, |s| s.name);
        if sub_attr.is_some_and(|s| s.mutability == Mutability::ReadOnly) {
            return Err(Error::mutability(format!("{label} is read-only")));
        }
        let coerced = match (op, sub_attr) {
            (Op::Remove, _) => Value::Null,
            (_, Some(s)) => coerce_single(s, value, label)?,
            (_, None) => value,
        };
        if multi {
            if let Some(Value::Array(items)) = container.get_mut(key) {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    set_or_remove(item, sub_key, coerced.clone());
                }
            }
        } else {
            let entry = container.entry(key.to_owned()).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Some(obj) = entry.as_object_mut() {
                set_or_remove(obj, sub_key, coerced);
            }
        }
        remove_if_empty(container, key);
        return Ok(());
    }
    let coerced = match (op, target.attr) {
        (Op::Remove, None) => value,
        (_, Some(a)) => coerce(a, value, label)?,
        (_, None) => value,
    };
    match op {
        Op::Remove => {
            match (multi, coerced) {
                // Entra: `{"op":"Remove","path":"members","value":[{"value":"id"}]}`.
                (true, Value::Array(remove)) if !remove.is_empty() => {
                    let ids: Vec<&Value> = remove.iter().map(|r| r.get("value").unwrap_or(r)).collect();
                    if let Some(Value::Array(items)) = container.get_mut(key) {
                        items.retain(|item| !ids.contains(&item.get("value").unwrap_or(item)));
                    }
                    remove_if_empty(container, key);
                }
                _ => {
                    container.remove(key);
                }
            }
        }
        Op::Add if multi => {
            let Value::Array(new) = coerced else {
                return Ok(());
            };
            let entry = container.entry(key.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
            if !entry.is_array() {
                *entry = Value::Array(Vec::new());
            }
            if let Some(items) = entry.as_array_mut() {
                for item in new {
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
                keep_one_primary(items);
            }
            remove_if_empty(container, key);
        }
        Op::Add | Op::Replace => match coerced {
            Value::Object(new) if !multi && target.attr.is_some_and(|a| !a.sub_attributes.is_empty()) => {
                // A complex attribute: the given sub-attributes replace theirs, others stay.
                let entry = container.entry(key.to_owned()).or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Some(obj) = entry.as_object_mut() {
                    for (k, v) in new {
                        set_or_remove(obj, &k, v);
                    }
                }
                remove_if_empty(container, key);
            }
            Value::Array(mut items) => {
                keep_one_primary(&mut items);
                set_or_remove(container, key, Value::Array(items));
                remove_if_empty(container, key);
            }
            other => set_or_remove(container, key, other),
        },
    }
    Ok(())
}

/// An operation through a value filter: `members[value eq "x"]`, `emails[type eq "work"].value`.
fn apply_filtered(
    container: &mut Map<String, Value>,
    target: &Target,
    filter: &Filter,
    sub: Option<&str>,
    op: Op,
    value: Value,
    label: &str,
) -> Result<()> {
    let key = target.key.as_str();
    if target.attr.is_some_and(|a| !a.multi_valued) {
        return Err(Error::invalid_path(format!("{label}: {key} is not multi-valued, so it takes no value filter")));
    }
    let scope = target.attr.map_or(Scope::Untyped, Scope::Complex);
    let sub_attr = sub.and_then(|s| target.attr.and_then(|a| a.sub(s)));
    let sub_key = sub.map(|s| sub_attr.map_or(s, |a| a.name));
    let new_value = match (op, sub_attr, target.attr) {
        (Op::Remove, ..) => Value::Null,
        (_, Some(s), _) => coerce_single(s, value, label)?,
        (_, None, Some(a)) if sub.is_none() => coerce_single(a, value, label)?,
        _ => value,
    };
    let items = match container.get_mut(key) {
        Some(Value::Array(items)) => items,
        _ => {
            container.insert(key.to_owned(), Value::Array(Vec::new()));
            match container.get_mut(key) {
                Some(Value::Array(items)) => items,
                _ => return Err(Error::invalid_path(format!("{label}: {key} is not a list"))),
            }
        }
    };
    let matched: Vec<usize> =
        items.iter().enumerate().filter(|(_, v)| matches(filter, v, scope)).map(|(i, _)| i).collect();
    match op {
        Op::Remove => match sub_key {
            None => {
                let mut i = 0;
                items.retain(|_| {
                    let keep = !matched.contains(&i);
                    i += 1;
                    keep
                });
            }
            Some(s) => {
                for &i in &matched {
                    if let Some(obj) = items.get_mut(i).and_then(Value::as_object_mut) {
                        obj.remove(s);
                    }
                }
            }
        },
        Op::Add | Op::Replace if matched.is_empty() => {
            // Nothing matches: create the value if the filter says what it is (Entra sends
            // `emails[type eq "work"].value` for a user who has no work email yet).
            let Some(mut created) = equalities(filter) else {
                return Err(Error::no_target(format!("{label} matches no value")));
            };
            match (sub_key, new_value) {
                (Some(s), v) => set_or_remove(&mut created, s, v),
                (None, Value::Object(obj)) => created.extend(obj),
                (None, _) => {
                    return Err(Error::invalid_value(format!("{label} needs an object value")));
                }
            }
            items.push(Value::Object(created));
        }
        Op::Add | Op::Replace => {
            for &i in &matched {
                let Some(item) = items.get_mut(i) else {
                    continue;
                };
                match (sub_key, &new_value) {
                    (Some(s), v) => {
                        if let Some(obj) = item.as_object_mut() {
                            set_or_remove(obj, s, v.clone());
                        }
                    }
                    (None, Value::Object(obj)) if op == Op::Add => {
                        if let Some(existing) = item.as_object_mut() {
                            existing.extend(obj.clone());
                        }
                    }
                    (None, v) => *item = v.clone(),
                }
            }
        }
    }
    keep_one_primary(items);
    remove_if_empty(container, key);
    Ok(())
}

/// The attribute values a filter of `eq` comparisons joined by `and` pins down.
fn equalities(filter: &Filter) -> Option<Map<String, Value>> {
    match filter {
        Filter::Compare(AttrPath { urn: None, name, sub: None }, CompareOp::Eq, value) => {
            let v = match value {
                CompValue::Str(s) => Value::String(s.clone()),
                CompValue::Num(n) => Value::Number(n.clone()),
                CompValue::Bool(b) => Value::Bool(*b),
                CompValue::Null => return None,
            };
            let mut m = Map::new();
            m.insert(name.clone(), v);
            Some(m)
        }
        Filter::And(l, r) => {
            let mut m = equalities(l)?;
            m.extend(equalities(r)?);
            Some(m)
        }
        _ => None,
    }
}

fn set_or_remove(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if value.is_null() {
        obj.remove(key);
    } else {
        obj.insert(key.to_owned(), value);
    }
}

fn remove_if_empty(container: &mut Map<String, Value>, key: &str) {
    let empty = match container.get(key) {
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Null) => true,
        _ => false,
    };
    if empty {
        container.remove(key);
    }
}

/// At most one value of a multi-valued attribute may be primary (RFC 7643 §2.4); the latest one
/// written wins.
fn keep_one_primary(items: &mut [Value]) {
    let Some(last) = items.iter().rposition(|v| v.get("primary") == Some(&Value::Bool(true))) else {
        return;
    };
    for (i, item) in items.iter_mut().enumerate() {
        if i != last
            && let Some(obj) = item.as_object_mut()
            && obj.get("primary") == Some(&Value::Bool(true))
        {
            obj.insert("primary".to_owned(), Value::Bool(false));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ScimType;
    use crate::schema::{ENTERPRISE_USER_SCHEMA, USER_RESOURCE};

    fn doc() -> Map<String, Value> {
        json!({
            "userName": "jane@acme.com",
            "active": true,
            "name": {"givenName": "Jane", "familyName": "Doe"},
            "emails": [{"value": "jane@acme.com", "type": "work", "primary": true}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"costCenter": "London"}
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    fn patch(d: &mut Map<String, Value>, ops: Value) -> Result<()> {
        let req = PatchRequest::parse(&json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops}))?;
        req.apply(&USER_RESOURCE, d)
    }

    #[test]
    fn okta_deactivate_and_reactivate_without_path() {
        let mut d = doc();
        patch(&mut d, json!([{"op": "replace", "value": {"active": false}}])).unwrap();
        assert_eq!(d["active"], false);
        patch(&mut d, json!([{"op": "replace", "value": {"active": true}}])).unwrap();
        assert_eq!(d["active"], true);
    }

    #[test]
    fn entra_shapes() {
        let mut d = doc();
        patch(&mut d, json!([{"op": "Replace", "path": "active", "value": "False"}])).unwrap();
        assert_eq!(d["active"], false);
        patch(
            &mut d,
            json!([{"op": "replace", "value": {
                "name.givenName": "Janet",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:division": "Retail",
                "displayName": "Janet D"
            }}]),
        )
        .unwrap();
        assert_eq!(d["name"]["givenName"], "Janet");
        assert_eq!(d["name"]["familyName"], "Doe");
        assert_eq!(d[ENTERPRISE_USER_SCHEMA]["division"], "Retail");
        assert_eq!(d[ENTERPRISE_USER_SCHEMA]["costCenter"], "London");
        patch(&mut d, json!([{"op": "Add", "path": "nickName", "value": "Babs"}])).unwrap();
        assert_eq!(d["nickName"], "Babs");
        patch(&mut d, json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "j@acme.com"}]))
            .unwrap();
        assert_eq!(d["emails"][0]["value"], "j@acme.com");
        patch(&mut d, json!([{"op": "Replace", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1"}]))
            .unwrap();
        assert_eq!(d["phoneNumbers"], json!([{"type": "mobile", "value": "+1"}]));
        patch(
            &mut d,
            json!([{"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "value": 42}]),
        )
        .unwrap();
        assert_eq!(d[ENTERPRISE_USER_SCHEMA]["employeeNumber"], "42");
    }

    #[test]
    fn password_is_accepted_and_never_stored() {
        let mut d = doc();
        let before = d.clone();
        patch(&mut d, json!([{"op": "replace", "value": {"password": "Lstar99&"}}])).unwrap();
        assert_eq!(d, before);
        patch(&mut d, json!([{"op": "replace", "path": "password", "value": "x"}])).unwrap();
        assert_eq!(d, before);
    }

    /// Every spelling of a path or value key that the engine takes for the password.
    const PASSWORD_SPELLINGS: &[&str] = &[
        "password",
        " password",
        "password ",
        "\tPassword\n",
        "PASSWORD",
        "urn:ietf:params:scim:schemas:core:2.0:User:password",
        " URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER:PASSWORD ",
        "password[value eq \"x\"]",
        "password.value",
    ];

    #[test]
    fn every_spelling_the_engine_sets_as_the_password_is_one_targets_password_names() {
        for spelling in PASSWORD_SPELLINGS {
            assert!(targets_password(spelling), "{spelling:?}");
            // The engine accepts it, and drops it as the write-only password: with a path...
            let mut d = doc();
            let before = d.clone();
            patch(&mut d, json!([{"op": "replace", "path": spelling, "value": "SECRET"}])).unwrap();
            assert_eq!(d, before, "{spelling:?} as a path");
            // ...and as a key of a path-less value.
            if !spelling.contains('[') {
                patch(&mut d, json!([{"op": "replace", "value": {*spelling: "SECRET"}}])).unwrap();
                assert_eq!(d, before, "{spelling:?} as a value key");
            }
        }
        // A password under an extension is stored as sent by the engine: a secret all the same.
        for spelling in ["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:password", " Password "] {
            assert!(targets_password(spelling), "{spelling:?}");
        }
        assert!(targets_password("name.password"));
        assert!(targets_password("emails[type eq \"work\"].password"));
        for other in
            ["", "   ", "name.givenName", "passwords", "pass word", "userName", "emails[value eq \"password\"]"]
        {
            assert!(!targets_password(other), "{other:?}");
        }
    }

    #[test]
    fn a_body_key_canonicalize_drops_as_the_password_is_one_targets_password_names() {
        // Whatever spelling of a POST/PUT key the document parser takes for the password (it
        // drops the value), the request log's test names it too.
        let mut keys: Vec<String> = PASSWORD_SPELLINGS.iter().map(|s| (*s).to_owned()).collect();
        keys.extend(["Password", "pAsSwOrD", "urn:ietf:params:scim:schemas:core:2.0:user:Password"].map(str::to_owned));
        let mut dropped = 0;
        for key in keys {
            let doc =
                crate::resource::canonicalize(&USER_RESOURCE, json!({"userName": "u", key.clone(): "SECRET"})).unwrap();
            if !Value::Object(doc).to_string().contains("SECRET") {
                dropped += 1;
                assert!(targets_password(&key), "canonicalize drops {key:?} as the password");
            }
        }
        assert!(dropped >= 6, "the plain and URN-qualified spellings in any case are dropped ({dropped})");
    }

    #[test]
    fn sanitized_json_drops_passwords_and_keeps_the_rest() {
        let req = PatchRequest::parse(&json!({"Operations": [
            {"op": "replace", "value": {"password": "p1", "active": false}},
            {"op": "replace", "path": "password", "value": "p2"},
            {"op": "replace", "value": {"password": "p3"}},
            {"op": "Replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:password", "value": "p4"},
            {"op": "remove", "path": "emails[type eq \"work\"]"}
        ]}))
        .unwrap();
        let out = req.to_sanitized_json(&USER_RESOURCE);
        let text = out.to_string();
        assert!(!text.contains("p1") && !text.contains("p2") && !text.contains("p3") && !text.contains("p4"), "{text}");
        let again = PatchRequest::parse(&out).unwrap();
        assert_eq!(again.operations.len(), 2);
        let mut a = doc();
        let mut b = doc();
        req.apply(&USER_RESOURCE, &mut a).unwrap();
        again.apply(&USER_RESOURCE, &mut b).unwrap();
        assert_eq!(a, b, "the sanitized request does the same");
    }

    #[test]
    fn multi_valued_add_remove_and_filters() {
        let mut d = doc();
        patch(&mut d, json!([{"op": "add", "path": "emails", "value": [{"value": "h@home.net", "type": "home", "primary": true}]}]))
            .unwrap();
        assert_eq!(d["emails"].as_array().unwrap().len(), 2);
        assert_eq!(d["emails"][0]["primary"], false, "only one primary");
        patch(&mut d, json!([{"op": "remove", "path": "emails[type eq \"home\"]"}])).unwrap();
        assert_eq!(d["emails"].as_array().unwrap().len(), 1);
        patch(&mut d, json!([{"op": "remove", "path": "emails[type eq \"nothing\"]"}])).unwrap();
        patch(&mut d, json!([{"op": "remove", "path": "emails", "value": [{"value": "jane@acme.com"}]}])).unwrap();
        assert!(!d.contains_key("emails"));
        patch(&mut d, json!([{"op": "remove", "path": "name.givenName"}])).unwrap();
        assert!(d["name"].get("givenName").is_none());
    }

    #[test]
    fn failures_apply_nothing() {
        let mut d = doc();
        let before = d.clone();
        let err = patch(
            &mut d,
            json!([
                {"op": "replace", "path": "displayName", "value": "X"},
                {"op": "replace", "path": "active", "value": "perhaps"}
            ]),
        )
        .unwrap_err();
        assert_eq!(err.scim_type, ScimType::InvalidValue);
        assert_eq!(d, before);
        let err = patch(&mut d, json!([{"op": "replace", "path": "id", "value": "x"}])).unwrap_err();
        assert_eq!(err.scim_type, ScimType::Mutability);
        let err = patch(&mut d, json!([{"op": "remove"}])).unwrap_err();
        assert_eq!(err.scim_type, ScimType::NoTarget);
        let err = patch(&mut d, json!([{"op": "move", "path": "a"}])).unwrap_err();
        assert_eq!(err.scim_type, ScimType::InvalidSyntax);
        let err =
            patch(&mut d, json!([{"op": "replace", "path": "userName[value eq \"a\"]", "value": "b"}])).unwrap_err();
        assert_eq!(err.scim_type, ScimType::InvalidPath);
        // Okta sends the read-only id inside path-less values; it is ignored.
        patch(&mut d, json!([{"op": "replace", "value": {"id": "x", "displayName": "Y"}}])).unwrap();
        assert_eq!(d["displayName"], "Y");
    }
}
