//! Turning what a client sent into the canonical document we store: attribute names in their
//! schema spelling (SCIM names are case-insensitive), values coerced to their schema type where an
//! identity provider is known to send another (`"True"` for a boolean, a bare string for a complex
//! value), and everything the client may not write dropped: read-only attributes (`id`, `meta`,
//! `groups`), `schemas` (we compute it) and write-only ones (`password`, which must never be
//! stored). Attributes outside the schemas are kept as sent, so that they round-trip.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Result};
use crate::schema::{Attribute, Mutability, ResourceType, Type};

/// Whether a client may write this attribute at all (read-only and write-only ones are dropped).
pub(crate) fn is_stored(attr: &Attribute) -> bool {
    matches!(attr.mutability, Mutability::ReadWrite | Mutability::Immutable)
}

/// The canonical document for a resource body. Fails only on a value whose type cannot be read as
/// the attribute's type.
///
/// Core attributes may arrive qualified by the core schema's URN (`urn:…:core:2.0:User:userName`,
/// RFC 7644 §3.10) or nested under it (`"urn:…:core:2.0:User": {…}`); both are read as the plain
/// attribute, so that a write-only attribute can never slip into storage under another spelling.
pub fn canonicalize(rt: &'static ResourceType, body: Value) -> Result<Map<String, Value>> {
    let Value::Object(body) = body else {
        return Err(Error::invalid_syntax("the request body must be a JSON object"));
    };
    let mut entries: Vec<(String, Value)> = Vec::with_capacity(body.len());
    for (key, value) in body {
        if key.eq_ignore_ascii_case(rt.schema.id) {
            match value {
                Value::Object(inner) => entries.extend(inner),
                Value::Null => {}
                _ => return Err(Error::invalid_value(format!("{} must be an object", rt.schema.id))),
            }
        } else if let Some(name) = strip_core_urn(rt, &key) {
            entries.push((name.to_owned(), value));
        } else {
            entries.push((key, value));
        }
    }
    let mut doc = Map::new();
    for (key, value) in entries {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some(ext) = rt.extension(&key) {
            let Value::Object(inner) = value else {
                if value.is_null() {
                    continue;
                }
                return Err(Error::invalid_value(format!("{} must be an object", ext.id)));
            };
            let mut out = Map::new();
            for (k, v) in inner {
                if k.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                match ext.attribute(&k) {
                    Some(a) if !is_stored(a) => {}
                    Some(a) => insert_non_null(&mut out, a.name, coerce(a, v, a.name)?),
                    None => insert_non_null(&mut out, &k, v),
                }
            }
            if !out.is_empty() {
                doc.insert(ext.id.to_owned(), Value::Object(out));
            }
            continue;
        }
        match rt.attribute(&key) {
            Some(a) if !is_stored(a) => {}
            Some(a) => insert_non_null(&mut doc, a.name, coerce(a, value, a.name)?),
            None => insert_non_null(&mut doc, &key, value),
        }
    }
    Ok(doc)
}

/// `urn:…:core:2.0:User:userName` -> `userName`.
fn strip_core_urn<'k>(rt: &ResourceType, key: &'k str) -> Option<&'k str> {
    let prefix = key.get(..rt.schema.id.len())?;
    if !prefix.eq_ignore_ascii_case(rt.schema.id) {
        return None;
    }
    key.get(rt.schema.id.len()..)?.strip_prefix(':').filter(|n| !n.is_empty())
}

fn insert_non_null(map: &mut Map<String, Value>, key: &str, value: Value) {
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.to_owned(), value);
    }
}

/// Coerces a value to the attribute's type and canonicalizes sub-attribute names. `label` names
/// the attribute in error details.
pub fn coerce(attr: &Attribute, value: Value, label: &str) -> Result<Value> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    if attr.multi_valued {
        let items = match value {
            Value::Array(items) => items,
            single => vec![single],
        };
        let items = items
            .into_iter()
            .map(|v| coerce_single(attr, v, label))
            .filter(|v| !matches!(v, Ok(Value::Null)))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Value::Array(items));
    }
    coerce_single(attr, value, label)
}

/// Coerces one value (of a single-valued attribute, or one element of a multi-valued one).
pub fn coerce_single(attr: &Attribute, value: Value, label: &str) -> Result<Value> {
    match (attr.kind, value) {
        (_, Value::Null) => Ok(Value::Null),
        (Type::Complex, Value::Object(obj)) => {
            let mut out = Map::new();
            for (k, v) in obj {
                match attr.sub(&k) {
                    Some(s) if s.mutability == Mutability::ReadOnly => {}
                    Some(s) => insert_non_null(&mut out, s.name, coerce_single(s, v, &format!("{label}.{}", s.name))?),
                    None => insert_non_null(&mut out, &k, v),
                }
            }
            Ok(Value::Object(out))
        }
        // A bare value where a complex one is expected (Entra's `manager: "id"`): it is the value.
        (Type::Complex, v @ (Value::String(_) | Value::Number(_))) if attr.sub("value").is_some() => {
            let mut out = Map::new();
            out.insert("value".to_owned(), v);
            Ok(Value::Object(out))
        }
        (Type::Complex, _) => Err(Error::invalid_value(format!("{label} must be an object"))),
        (Type::Boolean, Value::Bool(b)) => Ok(Value::Bool(b)),
        (Type::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
        (Type::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
        (Type::Boolean, other) => Err(Error::invalid_value(format!("{label} must be true or false, not {other}"))),
        (Type::Integer | Type::Decimal, Value::Number(n)) => Ok(Value::Number(n)),
        (Type::Integer | Type::Decimal, Value::String(s)) => match serde_json::from_str::<Value>(s.trim()) {
            Ok(Value::Number(n)) => Ok(Value::Number(n)),
            _ => Err(Error::invalid_value(format!("{label} must be a number, not \"{s}\""))),
        },
        (Type::Integer | Type::Decimal, other) => {
            Err(Error::invalid_value(format!("{label} must be a number, not {other}")))
        }
        // Kept as sent, but only if it is one: filters compare dateTimes as instants.
        (Type::DateTime, Value::String(s)) => match OffsetDateTime::parse(&s, &Rfc3339) {
            Ok(_) => Ok(Value::String(s)),
            Err(_) => Err(Error::invalid_value(format!(
                "{label} must be a date and time such as \"2026-01-31T09:00:00Z\", not \"{s}\""
            ))),
        },
        (_, Value::String(s)) => Ok(Value::String(s)),
        (_, Value::Number(n)) => Ok(Value::String(n.to_string())),
        (_, Value::Bool(b)) => Ok(Value::String(b.to_string())),
        (_, other) => Err(Error::invalid_value(format!("{label} must be a string, not {}", kind_of(&other)))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::{ENTERPRISE_USER_SCHEMA, USER_RESOURCE};

    #[test]
    fn okta_create_body_is_canonicalized_and_secrets_dropped() {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "USERNAME": "Jane@Acme.com",
            "name": {"GivenName": "Jane", "familyName": "Doe", "middleName": ""},
            "emails": [{"primary": "True", "value": "jane@acme.com", "type": "work"}],
            "locale": "en-US",
            "externalId": "00u1",
            "groups": [],
            "password": "1mz050nq",
            "id": "attacker-chosen",
            "meta": {"created": "04-12-2018 00:00:00"},
            "active": "true",
            "customThing": {"a": 1},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": {"costcenter": "London", "division": "Retail"}
        });
        let doc = canonicalize(&USER_RESOURCE, body).unwrap();
        assert_eq!(doc["userName"], "Jane@Acme.com");
        assert_eq!(doc["name"]["givenName"], "Jane");
        assert_eq!(doc["emails"][0]["primary"], true);
        assert_eq!(doc["active"], true);
        assert_eq!(doc["customThing"]["a"], 1);
        assert_eq!(doc[ENTERPRISE_USER_SCHEMA]["costCenter"], "London");
        for gone in ["password", "groups", "id", "meta", "schemas"] {
            assert!(!doc.contains_key(gone), "{gone} must not be stored");
        }
        assert!(!Value::Object(doc).to_string().contains("1mz050nq"));
    }

    #[test]
    fn core_urn_spellings_are_the_plain_attributes() {
        let doc = canonicalize(
            &USER_RESOURCE,
            json!({
                "urn:ietf:params:scim:schemas:core:2.0:User:userName": "u",
                "urn:ietf:params:scim:schemas:core:2.0:User:password": "s3cret",
                "URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER": {"password": "s3cret2", "title": "Eng", "groups": []}
            }),
        )
        .unwrap();
        assert_eq!(doc["userName"], "u");
        assert_eq!(doc["title"], "Eng");
        let text = Value::Object(doc).to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!text.contains("groups"));
    }

    #[test]
    fn wrong_types_are_invalid_values_naming_the_attribute() {
        let err = canonicalize(&USER_RESOURCE, json!({"userName": "a", "active": "maybe"})).unwrap_err();
        assert!(err.detail.contains("active"), "{}", err.detail);
        let err = canonicalize(&USER_RESOURCE, json!({"userName": ["a"]})).unwrap_err();
        assert!(err.detail.contains("userName"), "{}", err.detail);
        let err = canonicalize(&USER_RESOURCE, json!(["not an object"])).unwrap_err();
        assert_eq!(err.scim_type, crate::ScimType::InvalidSyntax);
    }

    #[test]
    fn date_times_must_be_rfc3339() {
        let created = crate::schema::COMMON.iter().find_map(|a| a.sub("created")).unwrap();
        let ok = coerce_single(created, json!("2026-01-31T09:00:00+01:00"), "created").unwrap();
        assert_eq!(ok, "2026-01-31T09:00:00+01:00", "kept as sent");
        let err = coerce_single(created, json!("31/01/2026"), "meta.created").unwrap_err();
        assert!(err.detail.contains("meta.created"), "{}", err.detail);
    }

    #[test]
    fn our_extension_round_trips() {
        let learning = "urn:ietf:params:scim:schemas:extension:learning:2.0:User";
        let doc = canonicalize(
            &USER_RESOURCE,
            json!({learning: {"schemas": [learning], "hiredate": "2024-03-01", "customFields": {"badge": "B-1", "Floor": "3"}}}),
        )
        .unwrap();
        assert_eq!(doc[learning], json!({"hireDate": "2024-03-01", "customFields": {"badge": "B-1", "Floor": "3"}}));
    }

    #[test]
    fn single_values_of_multi_valued_attributes_become_lists() {
        let doc = canonicalize(&USER_RESOURCE, json!({"emails": {"value": "a@b.c"}})).unwrap();
        assert_eq!(doc["emails"], json!([{"value": "a@b.c"}]));
        let doc = canonicalize(
            &USER_RESOURCE,
            json!({"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": "boss-id"}}),
        )
        .unwrap();
        assert_eq!(doc[ENTERPRISE_USER_SCHEMA]["manager"]["value"], "boss-id");
    }
}
