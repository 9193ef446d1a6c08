//! Evaluates a filter against a JSON resource (or against one value of a multi-valued attribute,
//! for value paths), honouring each attribute's `caseExact` and type from the schema.
//!
//! Semantics where RFC 7644 leaves room: a comparison on a multi-valued attribute holds when any
//! value satisfies it; on a multi-valued complex attribute without a sub-attribute it compares the
//! `value` sub-attribute; `ne` is the negation of `eq` (so it holds for an absent attribute);
//! `eq null` holds for an absent attribute.

use std::cmp::Ordering;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{AttrPath, CompValue, CompareOp, Filter};
use crate::schema::{Attribute, ResourceType, Type};

/// What the attribute names of a filter are relative to.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// A whole resource of this type.
    Resource(&'static ResourceType),
    /// One value of this complex attribute (inside a value path).
    Complex(&'static Attribute),
    /// Anything without a schema: every string compares case-insensitively.
    Untyped,
}

impl Scope {
    fn attribute(self, path: &AttrPath) -> Option<&'static Attribute> {
        let top = match self {
            Scope::Resource(rt) => rt.resolve(path.urn.as_deref(), &path.name),
            Scope::Complex(parent) => parent.sub(&path.name),
            Scope::Untyped => None,
        }?;
        match &path.sub {
            Some(sub) => top.sub(sub),
            None => Some(top),
        }
    }
}

/// Whether `resource` satisfies `filter`.
pub fn matches(filter: &Filter, resource: &Value, scope: Scope) -> bool {
    match filter {
        Filter::And(l, r) => matches(l, resource, scope) && matches(r, resource, scope),
        Filter::Or(l, r) => matches(l, resource, scope) || matches(r, resource, scope),
        Filter::Not(inner) => !matches(inner, resource, scope),
        Filter::Present(path) => values(resource, path).iter().any(|v| is_present(v)),
        Filter::Compare(path, op, value) => {
            let attr = scope.attribute(path);
            let vals = values(resource, path);
            match (op, value) {
                (CompareOp::Eq, CompValue::Null) => !vals.iter().any(|v| is_present(v)),
                (CompareOp::Ne, CompValue::Null) => vals.iter().any(|v| is_present(v)),
                (CompareOp::Ne, _) => !vals.iter().any(|v| compare(v, CompareOp::Eq, value, attr)),
                _ => vals.iter().any(|v| compare(v, *op, value, attr)),
            }
        }
        Filter::ValuePath(path, inner) => {
            let inner_scope = match scope.attribute(path) {
                Some(a) => Scope::Complex(a),
                None => Scope::Untyped,
            };
            raw_values(resource, path).0.iter().any(|v| matches(inner, v, inner_scope))
        }
    }
}

fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// A key of a JSON object, matched case-insensitively as SCIM attribute names are.
pub(crate) fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

/// The values of the attribute (without descending into a sub-attribute), arrays flattened, and
/// whether the attribute held a list (a multi-valued attribute).
fn raw_values<'a>(resource: &'a Value, path: &AttrPath) -> (Vec<&'a Value>, bool) {
    let Some(obj) = resource.as_object() else {
        return (Vec::new(), false);
    };
    let container = match &path.urn {
        Some(urn) => match get_ci(obj, urn).and_then(Value::as_object) {
            Some(ext) => Some(ext),
            // The core schema's URN qualifies attributes that live at the top level.
            None if urn.to_ascii_lowercase().contains(":core:") => Some(obj),
            None => None,
        },
        None => Some(obj),
    };
    match container.and_then(|c| get_ci(c, &path.name)) {
        Some(Value::Array(items)) => (items.iter().collect(), true),
        Some(v) => (vec![v], false),
        None => (Vec::new(), false),
    }
}

/// The values a comparison applies to: the sub-attribute if named, else the attribute itself,
/// else (multi-valued complex) each value's `value`.
fn values<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let (raw, multi) = raw_values(resource, path);
    let sub = path.sub.as_deref().or_else(|| {
        // A multi-valued complex attribute compared directly: compare its "value".
        raw.first().filter(|v| multi && v.is_object()).map(|_| "value")
    });
    match sub {
        None => raw,
        Some(sub) => raw
            .into_iter()
            .filter_map(|v| v.as_object().and_then(|o| get_ci(o, sub)))
            .flat_map(|v| match v {
                Value::Array(items) => items.iter().collect::<Vec<_>>(),
                other => vec![other],
            })
            .collect(),
    }
}

fn compare(actual: &Value, op: CompareOp, expected: &CompValue, attr: Option<&Attribute>) -> bool {
    let case_exact = attr.is_some_and(|a| a.case_exact);
    let is_date = attr.is_some_and(|a| a.kind == Type::DateTime);
    match (actual, expected) {
        (Value::String(a), CompValue::Str(e)) if is_date => {
            match (OffsetDateTime::parse(a, &Rfc3339), OffsetDateTime::parse(e, &Rfc3339)) {
                (Ok(a), Ok(e)) => ordered(op, a.cmp(&e)),
                _ => compare_strings(a, op, e, case_exact),
            }
        }
        (Value::String(a), CompValue::Str(e)) => compare_strings(a, op, e, case_exact),
        // An unquoted number compared with a string attribute (Entra's unquoted ids).
        (Value::String(a), CompValue::Num(n)) => compare_strings(a, op, &n.to_string(), case_exact),
        (Value::Bool(a), CompValue::Bool(e)) => match op {
            CompareOp::Eq => a == e,
            CompareOp::Ne => a != e,
            _ => false,
        },
        // Booleans sent as strings ("True") by Entra may have been stored as such.
        (Value::String(a), CompValue::Bool(e)) => match op {
            CompareOp::Eq => a.eq_ignore_ascii_case(&e.to_string()),
            _ => false,
        },
        (Value::Number(a), CompValue::Num(e)) => match (a.as_f64(), e.as_f64()) {
            (Some(a), Some(e)) => a.partial_cmp(&e).is_some_and(|o| ordered(op, o)),
            _ => false,
        },
        _ => false,
    }
}

fn compare_strings(a: &str, op: CompareOp, e: &str, case_exact: bool) -> bool {
    let (a, e) = if case_exact { (a.to_owned(), e.to_owned()) } else { (a.to_lowercase(), e.to_lowercase()) };
    match op {
        CompareOp::Co => a.contains(&e),
        CompareOp::Sw => a.starts_with(&e),
        CompareOp::Ew => a.ends_with(&e),
        _ => ordered(op, a.cmp(&e)),
    }
}

fn ordered(op: CompareOp, o: Ordering) -> bool {
    match op {
        CompareOp::Eq => o == Ordering::Equal,
        CompareOp::Ne => o != Ordering::Equal,
        CompareOp::Gt => o == Ordering::Greater,
        CompareOp::Ge => o != Ordering::Less,
        CompareOp::Lt => o == Ordering::Less,
        CompareOp::Le => o != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::filter::parse;
    use crate::schema::USER_RESOURCE;

    fn user() -> Value {
        json!({
            "userName": "Jane.Doe@Acme.com",
            "externalId": "00uAbC",
            "active": false,
            "name": {"givenName": "Jane", "familyName": "Doe"},
            "emails": [
                {"value": "jane@acme.com", "type": "work", "primary": true},
                {"value": "jd@home.net", "type": "home"}
            ],
            "meta": {"lastModified": "2026-01-02T03:04:05Z"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"costCenter": "London"}
        })
    }

    fn eval(f: &str) -> bool {
        matches(&parse(f).unwrap(), &user(), Scope::Resource(&USER_RESOURCE))
    }

    #[test]
    fn user_name_is_case_insensitive_and_external_id_case_exact() {
        assert!(eval(r#"userName eq "jane.doe@acme.com""#));
        assert!(eval(r#"USERNAME eq "JANE.DOE@ACME.COM""#));
        assert!(eval(r#"externalId eq "00uAbC""#));
        assert!(!eval(r#"externalId eq "00uabc""#));
    }

    #[test]
    fn operators() {
        assert!(eval(r#"userName sw "jane""#));
        assert!(eval(r#"userName ew "ACME.COM""#));
        assert!(eval(r#"userName co "doe@""#));
        assert!(eval(r#"userName ne "x""#));
        assert!(eval("active eq false"));
        assert!(!eval("active eq true"));
        assert!(eval("title eq null"));
        assert!(eval("name.givenName pr"));
        assert!(eval("name pr"), "a complex attribute is present when it has a value");
        assert!(!eval("nickName pr"));
        assert!(!eval("title pr"));
        assert!(eval(r#"meta.lastModified gt "2026-01-01T00:00:00Z""#));
        assert!(eval(r#"meta.lastModified gt "2026-01-02T03:30:00+01:00""#), "compares instants, not strings");
        assert!(eval(r#"not (userName eq "x")"#));
    }

    #[test]
    fn multi_valued_and_value_paths() {
        assert!(eval(r#"emails co "home.net""#));
        assert!(eval(r#"emails.value eq "jd@home.net""#));
        assert!(eval(r#"emails[type eq "work" and value co "@acme.com"]"#));
        assert!(!eval(r#"emails[type eq "home" and value co "@acme.com"]"#));
        assert!(eval(r#"emails[type eq "work"].value eq "JANE@acme.com""#));
    }

    #[test]
    fn extension_attributes_by_urn() {
        assert!(eval(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter eq "london""#));
        assert!(eval(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "jane""#));
    }
}
