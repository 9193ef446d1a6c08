//! Compiles a SCIM filter into a parameterised SQL condition on the `users` table.
//!
//! Attributes the system keeps in columns use them (and their indexes): `userName` through
//! `lower(user_name)`, `externalId` case-exact, `active`, names, the primary email, costCenter,
//! division, `meta.created` / `meta.lastModified`. Other attributes of the schemas are read from
//! the jsonb document; multi-valued ones (`emails`, value paths such as
//! `emails[type eq "work"]`) through `EXISTS` over their elements. Every value is a bound
//! parameter; the only text spliced into the SQL is column names and JSON keys taken from the
//! static schema, never from the request. Every leaf is made two-valued with `coalesce`, so that
//! `not` means what the evaluator in the `scim` crate means.

use proto::{DomainError, ErrorKind};
use scim::filter::{AttrPath, CompValue, CompareOp, Filter};
use scim::schema::{Attribute, ENTERPRISE_USER_SCHEMA, Type, USER_RESOURCE, USER_SCHEMA};
use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Bool(bool),
    Time(OffsetDateTime),
    Uuid(Uuid),
}

/// A compiled condition and its values, numbered from the first parameter given to [`compile`].
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFilter {
    pub clause: String,
    pub binds: Vec<Bind>,
}

impl SqlFilter {
    /// The condition that holds for every row.
    pub fn always() -> Self {
        SqlFilter { clause: "TRUE".to_owned(), binds: Vec::new() }
    }

    /// Binds the values, in order, to a query that already bound the parameters before them.
    pub fn bind_all<'q>(&self, mut query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        for b in &self.binds {
            query = match b {
                Bind::Text(s) => query.bind(s.clone()),
                Bind::Bool(v) => query.bind(*v),
                Bind::Time(t) => query.bind(*t),
                Bind::Uuid(u) => query.bind(*u),
            };
        }
        query
    }
}

/// Compiles `filter`; its parameters start at `$first_param`.
pub fn compile(filter: &Filter, first_param: usize) -> Result<SqlFilter, DomainError> {
    let mut c = Compiler { binds: Vec::new(), first_param, aliases: 0 };
    let clause = c.filter(filter)?;
    Ok(SqlFilter { clause, binds: c.binds })
}

fn unsupported(detail: String) -> DomainError {
    DomainError::new(ErrorKind::InvalidFilter, detail)
}

/// How a text expression compares.
#[derive(Clone, Copy)]
enum Case {
    Insensitive,
    Exact,
}

/// What an attribute path designates in SQL.
enum Target {
    Text {
        expr: String,
        case: Case,
    },
    Bool(String),
    Time(String),
    Id,
    /// A JSON text value of a non-string type (a boolean or number kept in the document).
    JsonScalar(String),
    /// A multi-valued attribute: its JSON array, and the attribute for its elements.
    Multi {
        array: String,
        attr: &'static Attribute,
        sub: Option<&'static str>,
    },
}

struct Compiler {
    binds: Vec<Bind>,
    first_param: usize,
    aliases: usize,
}

/// JSON keys come from the static schema; this guards the invariant that they need no quoting.
fn key(k: &str) -> Result<String, DomainError> {
    if k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '$' | '_' | '-')) {
        Ok(format!("'{k}'"))
    } else {
        Err(unsupported(format!("{k} cannot be filtered on")))
    }
}

impl Compiler {
    fn param(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.first_param + self.binds.len() - 1)
    }

    fn filter(&mut self, f: &Filter) -> Result<String, DomainError> {
        match f {
            Filter::And(l, r) => Ok(format!("({} AND {})", self.filter(l)?, self.filter(r)?)),
            Filter::Or(l, r) => Ok(format!("({} OR {})", self.filter(l)?, self.filter(r)?)),
            Filter::Not(inner) => Ok(format!("(NOT {})", self.filter(inner)?)),
            Filter::Present(path) => {
                let target = self.resolve(path)?;
                self.present(&target)
            }
            Filter::Compare(path, op, value) => {
                let target = self.resolve(path)?;
                self.compare(&target, *op, value, path)
            }
            Filter::ValuePath(path, inner) => {
                let Target::Multi { array, attr, .. } = self.resolve(path)? else {
                    return Err(unsupported(format!("{path} is not multi-valued, so it takes no value filter")));
                };
                self.aliases += 1;
                let alias = format!("e{}", self.aliases);
                let cond = self.element_filter(inner, attr, &alias)?;
                Ok(format!(
                    "EXISTS (SELECT 1 FROM jsonb_array_elements({}) AS {alias}(v) WHERE {cond})",
                    array_or_empty(&array)
                ))
            }
        }
    }

    /// A filter inside a value path: attribute names are sub-attributes of `parent`.
    fn element_filter(&mut self, f: &Filter, parent: &'static Attribute, alias: &str) -> Result<String, DomainError> {
        match f {
            Filter::And(l, r) => Ok(format!(
                "({} AND {})",
                self.element_filter(l, parent, alias)?,
                self.element_filter(r, parent, alias)?
            )),
            Filter::Or(l, r) => Ok(format!(
                "({} OR {})",
                self.element_filter(l, parent, alias)?,
                self.element_filter(r, parent, alias)?
            )),
            Filter::Not(inner) => Ok(format!("(NOT {})", self.element_filter(inner, parent, alias)?)),
            Filter::Present(p) | Filter::Compare(p, ..) => {
                if p.urn.is_some() || p.sub.is_some() {
                    return Err(unsupported(format!("{p} cannot be used inside a value filter")));
                }
                let sub = parent
                    .sub(&p.name)
                    .ok_or_else(|| unsupported(format!("{} has no sub-attribute {}", parent.name, p.name)))?;
                let target = element_target(&format!("{alias}.v"), sub)?;
                match f {
                    Filter::Compare(_, op, value) => self.compare(&target, *op, value, p),
                    _ => self.present(&target),
                }
            }
            Filter::ValuePath(p, _) => Err(unsupported(format!("{p}: value filters cannot be nested"))),
        }
    }

    fn resolve(&self, path: &AttrPath) -> Result<Target, DomainError> {
        let unknown = || unsupported(format!("{path} is not an attribute that can be filtered on"));
        let attr = USER_RESOURCE.resolve(path.urn.as_deref(), &path.name).ok_or_else(unknown)?;
        let sub = match &path.sub {
            Some(s) => Some(attr.sub(s).ok_or_else(unknown)?),
            None => None,
        };
        let in_extension = path.urn.as_deref().is_some_and(|u| !u.eq_ignore_ascii_case(USER_SCHEMA));
        let ci = Case::Insensitive;
        let column = |c: &str, case| Target::Text { expr: c.to_owned(), case };
        let target = match (in_extension, attr.name, sub.map(|s| s.name)) {
            (false, "id", None) => Target::Id,
            (false, "userName", None) => column("user_name", ci),
            (false, "externalId", None) => column("external_id", Case::Exact),
            (false, "active", None) => Target::Bool("active".to_owned()),
            (false, "displayName", None) => column("display_name", ci),
            (false, "name", Some("givenName")) => column("given_name", ci),
            (false, "name", Some("familyName")) => column("family_name", ci),
            (false, "meta", Some("created")) => Target::Time("created_at".to_owned()),
            (false, "meta", Some("lastModified")) => Target::Time("updated_at".to_owned()),
            (false, "meta", _) => return Err(unknown()),
            (true, "costCenter", None) => column("cost_center", ci),
            (true, "division", None) => column("division", ci),
            (_, _, _) if attr.multi_valued => {
                Target::Multi { array: json_path(in_extension, attr, None)?, attr, sub: sub.map(|s| s.name) }
            }
            (_, _, _) => {
                let leaf = sub.unwrap_or(attr);
                let expr = json_path(in_extension, attr, sub)?;
                scalar_target(expr, leaf)
            }
        };
        Ok(target)
    }

    fn present(&mut self, target: &Target) -> Result<String, DomainError> {
        Ok(match target {
            Target::Id | Target::Bool(_) | Target::Time(_) => "TRUE".to_owned(),
            Target::Text { expr, .. } | Target::JsonScalar(expr) => {
                format!("coalesce({expr} <> '', FALSE)")
            }
            Target::Multi { array, attr, sub } => {
                let inner = element_target_sub("x.v", attr, *sub)?;
                let cond = match inner {
                    Target::Text { expr, .. } | Target::JsonScalar(expr) => {
                        format!("coalesce({expr} <> '', FALSE)")
                    }
                    _ => "TRUE".to_owned(),
                };
                format!("EXISTS (SELECT 1 FROM jsonb_array_elements({}) AS x(v) WHERE {cond})", array_or_empty(array))
            }
        })
    }

    fn compare(
        &mut self,
        target: &Target,
        op: CompareOp,
        value: &CompValue,
        path: &AttrPath,
    ) -> Result<String, DomainError> {
        if matches!(value, CompValue::Null) {
            return match op {
                CompareOp::Eq => Ok(format!("(NOT {})", self.present(target)?)),
                CompareOp::Ne => self.present(target),
                _ => Err(unsupported(format!("{path}: null can only be compared with eq or ne"))),
            };
        }
        match target {
            Target::Id => {
                let CompValue::Str(s) = value else {
                    return Err(unsupported(format!("{path} is compared with a string")));
                };
                // An id that is not a UUID matches no user.
                let eq = match Uuid::parse_str(s) {
                    Ok(u) => format!("id = {}", self.param(Bind::Uuid(u))),
                    Err(_) => "FALSE".to_owned(),
                };
                match op {
                    CompareOp::Eq => Ok(eq),
                    CompareOp::Ne => Ok(format!("(NOT {eq})")),
                    _ => Err(unsupported(format!("{path} can only be compared with eq or ne"))),
                }
            }
            Target::Bool(col) => {
                let CompValue::Bool(b) = value else {
                    return Err(unsupported(format!("{path} is compared with true or false")));
                };
                let p = self.param(Bind::Bool(*b));
                match op {
                    CompareOp::Eq => Ok(format!("{col} = {p}")),
                    CompareOp::Ne => Ok(format!("{col} <> {p}")),
                    _ => Err(unsupported(format!("{path} can only be compared with eq or ne"))),
                }
            }
            Target::Time(col) => {
                let t = match value {
                    CompValue::Str(s) => OffsetDateTime::parse(s, &Rfc3339).ok(),
                    _ => None,
                }
                .ok_or_else(|| {
                    unsupported(format!("{path} is compared with a date and time such as \"2026-01-31T12:00:00Z\""))
                })?;
                let p = self.param(Bind::Time(t));
                let sql_op = ordering_op(op)
                    .ok_or_else(|| unsupported(format!("{path} cannot be compared with {}", op.as_str())))?;
                Ok(format!("{col} {sql_op} {p}"))
            }
            Target::Text { expr, case } => self.compare_text(expr, *case, op, value, path),
            Target::JsonScalar(expr) => {
                let text = match value {
                    CompValue::Bool(b) => b.to_string(),
                    CompValue::Num(n) => n.to_string(),
                    CompValue::Str(s) => s.clone(),
                    CompValue::Null => String::new(),
                };
                match op {
                    CompareOp::Eq | CompareOp::Ne => {
                        self.compare_text(expr, Case::Insensitive, op, &CompValue::Str(text), path)
                    }
                    _ => Err(unsupported(format!("{path} can only be compared with eq or ne"))),
                }
            }
            Target::Multi { array, attr, sub } => {
                let inner = element_target_sub("x.v", attr, *sub)?;
                let positive = if op == CompareOp::Ne { CompareOp::Eq } else { op };
                let cond = self.compare(&inner, positive, value, path)?;
                let exists = format!(
                    "EXISTS (SELECT 1 FROM jsonb_array_elements({}) AS x(v) WHERE {cond})",
                    array_or_empty(array)
                );
                Ok(if op == CompareOp::Ne { format!("(NOT {exists})") } else { exists })
            }
        }
    }

    fn compare_text(
        &mut self,
        expr: &str,
        case: Case,
        op: CompareOp,
        value: &CompValue,
        path: &AttrPath,
    ) -> Result<String, DomainError> {
        let text = match value {
            CompValue::Str(s) => s.clone(),
            CompValue::Num(n) => n.to_string(),
            CompValue::Bool(b) => b.to_string(),
            CompValue::Null => String::new(),
        };
        let (lhs, wrap): (String, fn(&str) -> String) = match case {
            Case::Insensitive => (format!("lower({expr})"), |p| format!("lower({p})")),
            Case::Exact => (expr.to_owned(), |p| p.to_owned()),
        };
        let cond = match op {
            CompareOp::Co | CompareOp::Sw | CompareOp::Ew => {
                let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                let pattern = match op {
                    CompareOp::Co => format!("%{escaped}%"),
                    CompareOp::Sw => format!("{escaped}%"),
                    _ => format!("%{escaped}"),
                };
                let p = self.param(Bind::Text(pattern));
                format!("{lhs} LIKE {}", wrap(&p))
            }
            CompareOp::Ne => {
                let p = self.param(Bind::Text(text));
                return Ok(format!("({lhs} IS DISTINCT FROM {})", wrap(&p)));
            }
            _ => {
                let sql_op = ordering_op(op)
                    .ok_or_else(|| unsupported(format!("{path} cannot be compared with {}", op.as_str())))?;
                let p = self.param(Bind::Text(text));
                format!("{lhs} {sql_op} {}", wrap(&p))
            }
        };
        Ok(format!("coalesce({cond}, FALSE)"))
    }
}

fn ordering_op(op: CompareOp) -> Option<&'static str> {
    match op {
        CompareOp::Eq => Some("="),
        CompareOp::Gt => Some(">"),
        CompareOp::Ge => Some(">="),
        CompareOp::Lt => Some("<"),
        CompareOp::Le => Some("<="),
        _ => None,
    }
}

fn array_or_empty(array: &str) -> String {
    format!("CASE WHEN jsonb_typeof({array}) = 'array' THEN {array} ELSE '[]'::jsonb END")
}

/// The JSON expression of an attribute in the document: `document->'name'->>'givenName'`, or
/// (for a multi-valued attribute, `sub` None) the array `document->'emails'`.
fn json_path(
    in_extension: bool,
    attr: &'static Attribute,
    sub: Option<&'static Attribute>,
) -> Result<String, DomainError> {
    let base = if in_extension {
        format!("users.document->{}", key(ENTERPRISE_USER_SCHEMA)?)
    } else {
        "users.document".to_owned()
    };
    Ok(match (attr.multi_valued, sub) {
        (true, _) => format!("{base}->{}", key(attr.name)?),
        (false, Some(s)) => format!("{base}->{}->>{}", key(attr.name)?, key(s.name)?),
        (false, None) => format!("{base}->>{}", key(attr.name)?),
    })
}

fn scalar_target(expr: String, leaf: &'static Attribute) -> Target {
    match leaf.kind {
        Type::Boolean | Type::Integer | Type::Decimal => Target::JsonScalar(expr),
        _ => Target::Text { expr, case: if leaf.case_exact { Case::Exact } else { Case::Insensitive } },
    }
}

/// The target for one element of a multi-valued attribute: its sub-attribute, or its `value`.
fn element_target_sub(elem: &str, attr: &'static Attribute, sub: Option<&'static str>) -> Result<Target, DomainError> {
    let leaf = match sub {
        Some(s) => attr.sub(s),
        None => attr.sub("value"),
    }
    .ok_or_else(|| unsupported(format!("{} cannot be compared directly", attr.name)))?;
    element_target(elem, leaf)
}

fn element_target(elem: &str, leaf: &'static Attribute) -> Result<Target, DomainError> {
    Ok(scalar_target(format!("{elem}->>{}", key(leaf.name)?), leaf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(f: &str) -> SqlFilter {
        compile(&scim::filter::parse(f).unwrap(), 2).unwrap()
    }

    #[test]
    fn okta_lookup_uses_the_user_name_index() {
        let c = sql(r#"userName eq "Jane@Acme.com""#);
        assert_eq!(c.clause, "coalesce(lower(user_name) = lower($2), FALSE)");
        assert_eq!(c.binds, vec![Bind::Text("Jane@Acme.com".into())]);
    }

    #[test]
    fn values_are_always_bound_never_spliced() {
        let evil = r#"userName eq "x') OR 1=1 --" or externalId co "%_\\""#;
        let c = sql(evil);
        assert!(!c.clause.contains("OR 1=1"));
        assert!(!c.clause.contains("--"));
        assert_eq!(c.binds.len(), 2);
        assert_eq!(c.binds[1], Bind::Text("%\\%\\_\\\\%".into()));
    }

    #[test]
    fn value_paths_and_multi_valued_attributes_use_exists() {
        let c = sql(r#"emails[type eq "work" and value co "@acme.com"] and active eq true"#);
        assert!(c.clause.starts_with("(EXISTS (SELECT 1 FROM jsonb_array_elements("), "{}", c.clause);
        assert_eq!(c.binds.len(), 3);
        let c = sql(r#"emails.value eq "a@b.c""#);
        assert!(c.clause.contains("x.v->>'value'"), "{}", c.clause);
    }

    #[test]
    fn unsupported_filters_are_invalid_filter() {
        for f in [r#"nope eq "x""#, r#"active gt true"#, r#"meta.created gt "yesterday""#, r#"urn:x:y eq "z""#] {
            let err = compile(&scim::filter::parse(f).unwrap(), 2).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidFilter, "{f}");
        }
    }
}
