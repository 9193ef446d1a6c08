//! `attributes` and `excludedAttributes` (RFC 7644 §3.4.2.5): which attributes of a resource a
//! response carries. Applied to the rendered resource, so it works the same for every resource
//! type. `id` and `schemas` are always returned; attributes the schema marks `returned: always`
//! cannot be excluded.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::filter::AttrPath;
use crate::filter::parse_attr_list;
use crate::schema::{ResourceType, Returned};

/// The attributes a request asked for, or asked to leave out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Projection {
    attributes: Vec<AttrPath>,
    excluded: Vec<AttrPath>,
}

impl Projection {
    /// Reads the comma-separated query parameters (either may be absent or empty).
    pub fn parse(attributes: Option<&str>, excluded: Option<&str>) -> Result<Self> {
        let attributes = parse_attr_list(attributes.unwrap_or(""))?;
        let excluded = parse_attr_list(excluded.unwrap_or(""))?;
        if !attributes.is_empty() && !excluded.is_empty() {
            return Err(Error::invalid_value("attributes and excludedAttributes cannot be used together."));
        }
        Ok(Projection { attributes, excluded })
    }

    /// Whether the response may need `name` (a top-level attribute of the core schema), so that a
    /// store can skip loading what will not be returned (a group's members, a user's groups).
    pub fn wants(&self, name: &str) -> bool {
        let named =
            |p: &AttrPath| p.urn.as_deref().is_none_or(|u| u.contains(":core:")) && p.name.eq_ignore_ascii_case(name);
        if !self.attributes.is_empty() {
            return self.attributes.iter().any(named);
        }
        !self.excluded.iter().any(|p| named(p) && p.sub.is_none())
    }

    /// Whether nothing is projected away.
    pub fn is_identity(&self) -> bool {
        self.attributes.is_empty() && self.excluded.is_empty()
    }

    /// Applies the projection to a rendered resource.
    pub fn apply(&self, rt: &'static ResourceType, resource: &mut Value) {
        let Some(obj) = resource.as_object_mut() else { return };
        if !self.attributes.is_empty() {
            let mut kept = Map::new();
            for (key, value) in obj.iter() {
                if key == "schemas" || key == "id" || is_always(rt, key) {
                    kept.insert(key.clone(), value.clone());
                    continue;
                }
                if let Some(v) = select(rt, key, value, &self.attributes) {
                    kept.insert(key.clone(), v);
                }
            }
            *obj = kept;
        } else {
            for path in &self.excluded {
                exclude(rt, obj, path);
            }
        }
        // `schemas` lists only the extensions still present.
        let present: Vec<String> = obj.keys().cloned().collect();
        if let Some(Value::Array(schemas)) = obj.get_mut("schemas") {
            schemas.retain(|s| {
                s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(rt.schema.id) || present.iter().any(|k| k == s))
            });
        }
    }
}

fn is_always(rt: &'static ResourceType, key: &str) -> bool {
    rt.attribute(key).is_some_and(|a| a.returned == Returned::Always)
}

fn is_extension_key(rt: &'static ResourceType, key: &str) -> bool {
    rt.extension(key).is_some()
}

/// Whether a requested path designates the top-level `key` (an attribute, or an extension).
fn matches_key(rt: &'static ResourceType, path: &AttrPath, key: &str) -> bool {
    match &path.urn {
        None => path.name.eq_ignore_ascii_case(key),
        Some(urn) if urn.eq_ignore_ascii_case(rt.schema.id) => path.name.eq_ignore_ascii_case(key),
        Some(urn) => {
            // `urn:…:enterprise:2.0:User` itself, parsed as urn `urn:…:2.0` and name `User`.
            format!("{urn}:{}", path.name).eq_ignore_ascii_case(key) || urn.eq_ignore_ascii_case(key)
        }
    }
}

/// The part of `value` (at top-level `key`) that the requested paths select.
fn select(rt: &'static ResourceType, key: &str, value: &Value, paths: &[AttrPath]) -> Option<Value> {
    let mut whole = false;
    let mut subs: Vec<(&str, Option<&str>)> = Vec::new();
    for p in paths.iter().filter(|p| matches_key(rt, p, key)) {
        let is_ext_whole = p.urn.as_deref().is_some_and(|u| format!("{u}:{}", p.name).eq_ignore_ascii_case(key));
        if is_extension_key(rt, key) && !is_ext_whole {
            // urn:…:attr[.sub] inside an extension.
            subs.push((p.name.as_str(), p.sub.as_deref()));
        } else if let Some(sub) = &p.sub {
            subs.push((sub.as_str(), None));
        } else {
            whole = true;
        }
    }
    if whole {
        return Some(value.clone());
    }
    if subs.is_empty() {
        return None;
    }
    let pick = |obj: &Map<String, Value>| -> Map<String, Value> {
        let mut out = Map::new();
        for (name, inner) in &subs {
            if let Some((k, v)) = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                let v = match (inner, v) {
                    (Some(inner), Value::Object(o)) => {
                        let mut m = Map::new();
                        if let Some((ik, iv)) = o.iter().find(|(ik, _)| ik.eq_ignore_ascii_case(inner)) {
                            m.insert(ik.clone(), iv.clone());
                        }
                        Value::Object(m)
                    }
                    _ => v.clone(),
                };
                out.insert(k.clone(), v);
            }
        }
        out
    };
    match value {
        Value::Object(o) => Some(Value::Object(pick(o))),
        Value::Array(items) => Some(Value::Array(
            items.iter().map(|i| i.as_object().map_or_else(|| i.clone(), |o| Value::Object(pick(o)))).collect(),
        )),
        other => Some(other.clone()),
    }
}

fn exclude(rt: &'static ResourceType, obj: &mut Map<String, Value>, path: &AttrPath) {
    let Some(key) = obj.keys().find(|k| matches_key(rt, path, k)).cloned() else { return };
    if key == "id" || key == "schemas" || is_always(rt, &key) {
        return;
    }
    let is_ext_whole = path.urn.as_deref().is_some_and(|u| format!("{u}:{}", path.name).eq_ignore_ascii_case(&key));
    let sub = if is_extension_key(rt, &key) && !is_ext_whole { Some(path.name.as_str()) } else { path.sub.as_deref() };
    match sub {
        None => {
            obj.remove(&key);
        }
        Some(sub) => {
            let strip = |o: &mut Map<String, Value>| {
                if let Some(k) = o.keys().find(|k| k.eq_ignore_ascii_case(sub)).cloned() {
                    o.remove(&k);
                }
            };
            match obj.get_mut(&key) {
                Some(Value::Object(o)) => strip(o),
                Some(Value::Array(items)) => items.iter_mut().filter_map(Value::as_object_mut).for_each(strip),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::{ENTERPRISE_USER_SCHEMA, USER_RESOURCE, USER_SCHEMA};

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "id": "u1",
            "userName": "jane",
            "name": {"givenName": "Jane", "familyName": "Doe"},
            "emails": [{"value": "a@b.c", "type": "work"}],
            "active": true,
            ENTERPRISE_USER_SCHEMA: {"costCenter": "London", "division": "Retail"},
            "meta": {"resourceType": "User"}
        })
    }

    fn project(attrs: Option<&str>, excluded: Option<&str>) -> Value {
        let mut u = user();
        Projection::parse(attrs, excluded).unwrap().apply(&USER_RESOURCE, &mut u);
        u
    }

    #[test]
    fn attributes_keep_only_what_is_asked_plus_id_and_schemas() {
        let u = project(Some("userName,name.givenName,emails.value"), None);
        assert_eq!(
            u,
            json!({"schemas": [USER_SCHEMA], "id": "u1", "userName": "jane", "name": {"givenName": "Jane"}, "emails": [{"value": "a@b.c"}]})
        );
        let u = project(Some(&format!("{ENTERPRISE_USER_SCHEMA}:costCenter")), None);
        assert_eq!(u[ENTERPRISE_USER_SCHEMA], json!({"costCenter": "London"}));
        assert_eq!(u["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
        let u = project(Some(ENTERPRISE_USER_SCHEMA), None);
        assert_eq!(u[ENTERPRISE_USER_SCHEMA]["division"], "Retail");
    }

    #[test]
    fn excluded_attributes_remove_but_never_id() {
        let u = project(None, Some("emails,name.familyName,id,meta"));
        assert!(u.get("emails").is_none() && u.get("meta").is_none());
        assert_eq!(u["name"], json!({"givenName": "Jane"}));
        assert_eq!(u["id"], "u1");
        let u = project(None, Some(ENTERPRISE_USER_SCHEMA));
        assert!(u.get(ENTERPRISE_USER_SCHEMA).is_none());
        assert_eq!(u["schemas"], json!([USER_SCHEMA]));
    }

    #[test]
    fn wants_tells_what_to_load() {
        assert!(!Projection::parse(None, Some("members")).unwrap().wants("members"));
        assert!(Projection::parse(None, Some("members.display")).unwrap().wants("members"));
        assert!(!Projection::parse(Some("displayName"), None).unwrap().wants("members"));
        assert!(Projection::parse(None, None).unwrap().wants("members"));
        assert!(Projection::parse(Some("x"), Some("y")).is_err());
    }
}
