//! Compiles a SCIM filter into a parameterised SQL condition on the `users` or `groups` table,
//! and a `sortBy` into an ORDER BY expression.
//!
//! Attributes the system keeps in columns use them (and their indexes): `userName` through
//! `lower(user_name)`, `externalId` case-exact, `active`, names, the primary email, costCenter,
//! division, a group's `displayName`, `meta.created` / `meta.lastModified`. Membership
//! (`members.value`, a user's `groups.value`) is an `EXISTS` on the membership rows. Other
//! attributes of the schemas are read from the jsonb document; multi-valued ones (`emails`, value
//! paths such as `emails[type eq "work"]`) through `EXISTS` over their elements. Every value is a
//! bound parameter; the only text spliced into the SQL is table, column names and JSON keys taken
//! from static definitions, never from the request. Under a `not`, every leaf is made two-valued
//! with `coalesce`, so that `not` means what the evaluator in the `scim` crate means; elsewhere a
//! NULL excludes the row as FALSE would, and the bare comparison lets PostgreSQL use the index.

use proto::{DomainError, ErrorKind};
use scim::filter::{AttrPath, CompValue, CompareOp, Filter};
use scim::schema::{Attribute, GROUP_RESOURCE, ResourceType, Type, USER_RESOURCE};
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

    /// The folded userName a user list's condition asks for when it is exactly `userName eq
    /// "..."`, however spelled (Okta's lookup before every create); `None` for any other.
    pub fn user_name_lookup(&self) -> Option<&str> {
        match (self.clause.as_str(), self.binds.as_slice()) {
            ("users.user_name_folded = $2", [Bind::Text(folded)]) => Some(folded),
            _ => None,
        }
    }

    /// Binds the values, in order, to a query that already bound the parameters before them.
    pub fn bind_all<'q>(&self, mut query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        for b in &self.binds {
            query = match b {
                Bind::Text(s) => query.bind(s.clone()),
                Bind::Time(t) => query.bind(*t),
                Bind::Uuid(u) => query.bind(*u),
            };
        }
        query
    }
}

/// How a column-backed attribute is stored.
#[derive(Debug, Clone, Copy)]
enum ColumnKind {
    Text(Case),
    Time,
    Id,
}

/// A column that backs a core attribute or sub-attribute.
#[derive(Debug, Clone, Copy)]
struct Column {
    attr: &'static str,
    sub: Option<&'static str>,
    column: &'static str,
    kind: ColumnKind,
}

const fn col(attr: &'static str, sub: Option<&'static str>, column: &'static str, kind: ColumnKind) -> Column {
    Column { attr, sub, column, kind }
}

/// The membership rows seen from a table: which column of `group_members` is this row's id,
/// and which is the other side's.
#[derive(Debug, Clone, Copy)]
struct Membership {
    attr: &'static str,
    own: &'static str,
    other: &'static str,
}

/// A table that holds one sub-attribute of a multi-valued attribute's elements, folded with
/// `lower`, with a b-tree index (migration 0025): `(tenant_id, <column>, user_id)`.
#[derive(Debug, Clone, Copy)]
struct ElementIndex {
    attr: &'static str,
    sub: &'static str,
    table: &'static str,
    column: &'static str,
}

/// The parameter that holds the tenant's id in every statement a compiled condition is put in
/// (`WHERE tenant_id = $1 AND (...)`); the condition's own parameters follow it.
const TENANT_PARAM: &str = "$1";

/// One resource type's table.
#[derive(Debug)]
pub struct TableSpec {
    rt: &'static ResourceType,
    table: &'static str,
    columns: &'static [Column],
    membership: Membership,
    /// What rows SCIM sees at all (an erased user is missing).
    visible: &'static str,
    /// The element index an equality on its sub-attribute can use.
    element_index: Option<ElementIndex>,
}

const FOLDED: ColumnKind = ColumnKind::Text(Case::Folded);

/// The `users` table.
pub static USERS: TableSpec = TableSpec {
    rt: &USER_RESOURCE,
    table: "users",
    // Only columns whose value is exactly the attribute's (absent or not): the other typed
    // columns hold '' for an absent attribute, which the document does not.
    columns: &[
        col("id", None, "id", ColumnKind::Id),
        col("userName", None, "user_name_folded", FOLDED),
        col("externalId", None, "external_id", ColumnKind::Text(Case::Exact)),
        col("meta", Some("created"), "created_at", ColumnKind::Time),
        col("meta", Some("lastModified"), "updated_at", ColumnKind::Time),
    ],
    membership: Membership { attr: "groups", own: "user_id", other: "group_id" },
    visible: "users.erased_at IS NULL",
    // Okta's and Entra's lookups by email.
    element_index: Some(ElementIndex { attr: "emails", sub: "value", table: "user_emails", column: "email" }),
};

/// The `groups` table.
pub static GROUPS: TableSpec = TableSpec {
    rt: &GROUP_RESOURCE,
    table: "groups",
    columns: &[
        col("id", None, "id", ColumnKind::Id),
        col("displayName", None, "display_name_folded", FOLDED),
        col("externalId", None, "external_id", ColumnKind::Text(Case::Exact)),
        col("meta", Some("created"), "created_at", ColumnKind::Time),
        col("meta", Some("lastModified"), "updated_at", ColumnKind::Time),
    ],
    membership: Membership { attr: "members", own: "group_id", other: "user_id" },
    visible: "true",
    element_index: None,
};

impl TableSpec {
    /// The table's name.
    pub fn table_name(&self) -> &'static str {
        self.table
    }

    /// The condition of the rows SCIM sees.
    pub fn visible(&self) -> &'static str {
        self.visible
    }
}

/// Compiles `filter` for a table; its parameters start at `$first_param`.
pub fn compile(spec: &'static TableSpec, filter: &Filter, first_param: usize) -> Result<SqlFilter, DomainError> {
    debug_assert!(first_param >= 2, "{TENANT_PARAM} is the tenant's id");
    let mut c = Compiler { spec, binds: Vec::new(), first_param, aliases: 0, negated: 0 };
    let clause = c.filter(filter)?;
    Ok(SqlFilter { clause, binds: c.binds })
}

/// The condition of a list query (its parameters after the tenant's `$1`): the filter's, or
/// every row without one.
pub fn for_list(spec: &'static TableSpec, filter: Option<&Filter>) -> Result<SqlFilter, DomainError> {
    filter.map_or_else(|| Ok(SqlFilter::always()), |f| compile(spec, f, 2))
}

/// The ORDER BY expression for `sortBy` (RFC 7644 §3.4.2.3): a multi-valued attribute sorts by
/// its first value.
pub fn sort_expression(spec: &'static TableSpec, sort_by: &str) -> Result<String, DomainError> {
    let path = scim::filter::parse_attr_list(sort_by)
        .map_err(|e| DomainError::new(ErrorKind::InvalidValue, e.detail))?
        .into_iter()
        .next()
        .ok_or_else(|| DomainError::new(ErrorKind::InvalidValue, "sortBy names no attribute."))?;
    let mut c = Compiler { spec, binds: Vec::new(), first_param: 1, aliases: 0, negated: 0 };
    let invalid = || DomainError::new(ErrorKind::InvalidValue, format!("{path} cannot be sorted on."));
    let target = c.resolve(&path).map_err(|_| invalid())?;
    if !c.binds.is_empty() {
        return Err(invalid());
    }
    Ok(match target {
        Target::Id => format!("{}.id", spec.table),
        Target::Time(col) => col,
        Target::Text { expr, case: Case::Insensitive } => format!("lower({expr})"),
        Target::Text { expr, case: Case::Exact | Case::Folded } | Target::JsonScalar(expr) => expr,
        Target::Multi { array, attr, sub } => {
            let leaf = sub.or_else(|| attr.sub("value").map(|a| a.name)).ok_or_else(invalid)?;
            format!("lower(({array})->0->>{})", key(leaf)?)
        }
        Target::Membership { .. } => return Err(invalid()),
    })
}

fn unsupported(detail: String) -> DomainError {
    DomainError::new(ErrorKind::InvalidFilter, detail)
}

/// How a text expression compares.
#[derive(Debug, Clone, Copy)]
enum Case {
    /// `lower()` on both sides, in the database.
    Insensitive,
    Exact,
    /// A column the service stores lower-cased (Unicode, independent of the database's locale):
    /// the value is lower-cased here and compared as is.
    Folded,
}

/// What an attribute path designates in SQL.
enum Target {
    Text {
        expr: String,
        case: Case,
    },
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
    /// A group's `members` or a user's `groups`: the membership rows.
    Membership {
        sub: Option<&'static str>,
    },
}

struct Compiler {
    spec: &'static TableSpec,
    binds: Vec<Bind>,
    first_param: usize,
    aliases: usize,
    /// How many `not`s enclose what is being compiled.
    negated: usize,
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
            Filter::Not(inner) => {
                self.negated += 1;
                let inner = self.filter(inner);
                self.negated -= 1;
                Ok(format!("(NOT {})", inner?))
            }
            Filter::Present(path) => {
                let target = self.resolve(path)?;
                self.present(&target)
            }
            Filter::Compare(path, op, value) => {
                let target = self.resolve(path)?;
                self.compare(&target, *op, value, path)
            }
            Filter::ValuePath(path, inner) => {
                let target = self.resolve(path)?;
                if let Target::Membership { .. } = target {
                    // members[value eq "id"]: the same as members.value eq "id".
                    return self.membership_value_path(inner, path);
                }
                let Target::Multi { array, attr, .. } = target else {
                    return Err(unsupported(format!("{path} is not multi-valued, so it takes no value filter")));
                };
                self.aliases += 1;
                let alias = format!("e{}", self.aliases);
                let cond = self.element_filter(inner, attr, &alias)?;
                let exists = format!(
                    "EXISTS (SELECT 1 FROM jsonb_array_elements({}) AS {alias}(v) WHERE {cond})",
                    array_or_empty(&array)
                );
                Ok(self.with_element_index(exists, attr, |sub| element_equality(inner, sub)))
            }
        }
    }

    /// `exists` (an element of `attr` matches), and, when the table indexes a sub-attribute of
    /// `attr` and `exists` requires it to equal a value (`equal(sub)`), the index's condition
    /// beside it: implied by `exists`, so the result is the same, only found through the index.
    /// Not under a `not`, where no index helps.
    fn with_element_index(
        &mut self,
        exists: String,
        attr: &'static Attribute,
        equal: impl Fn(&str) -> Option<String>,
    ) -> String {
        let Some(index) = self.spec.element_index.filter(|i| i.attr == attr.name) else { return exists };
        // The index folds with `lower`, as the comparison does for a sub-attribute that is not
        // case-exact; a case-exact one would need keys of its own.
        if self.negated > 0 || attr.sub(index.sub).is_none_or(|s| s.case_exact) {
            return exists;
        }
        let Some(value) = equal(index.sub) else { return exists };
        let p = self.param(Bind::Text(value));
        // The ids that table finds for this tenant; the rows are then read by primary key. (Not a
        // GIN index on the document: under row-level security PostgreSQL uses an index only for
        // leakproof operators, and `@>` is not one.)
        format!(
            "({exists} AND {t}.id = ANY (ARRAY(SELECT k.user_id FROM {} k WHERE k.tenant_id = {TENANT_PARAM} AND k.{} = lower({p}))))",
            index.table,
            index.column,
            t = self.spec.table
        )
    }

    fn membership_value_path(&mut self, inner: &Filter, path: &AttrPath) -> Result<String, DomainError> {
        match inner {
            Filter::And(l, r) => {
                Ok(format!("({} AND {})", self.membership_value_path(l, path)?, self.membership_value_path(r, path)?))
            }
            Filter::Or(l, r) => {
                Ok(format!("({} OR {})", self.membership_value_path(l, path)?, self.membership_value_path(r, path)?))
            }
            Filter::Compare(p, op, v) if p.urn.is_none() && p.sub.is_none() => {
                let sub = Some(if p.name.eq_ignore_ascii_case("value") { "value" } else { "other" });
                self.compare(&Target::Membership { sub }, *op, v, path)
            }
            _ => Err(unsupported(format!("{path}[...]: only value comparisons are supported"))),
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
            Filter::Not(inner) => {
                self.negated += 1;
                let inner = self.element_filter(inner, parent, alias);
                self.negated -= 1;
                Ok(format!("(NOT {})", inner?))
            }
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

    fn resolve(&mut self, path: &AttrPath) -> Result<Target, DomainError> {
        let unknown = || unsupported(format!("{path} is not an attribute that can be filtered on"));
        let rt = self.spec.rt;
        let attr = rt.resolve(path.urn.as_deref(), &path.name).ok_or_else(unknown)?;
        let extension = path.urn.as_deref().and_then(|u| rt.extension(u));
        // An open map (a complex attribute with no declared sub-attributes, such as our
        // customFields): any key is a sub-attribute, and the key is a bound value too.
        if attr.kind == Type::Complex && attr.sub_attributes.is_empty() {
            let Some(sub) = &path.sub else { return Err(unknown()) };
            let base = match extension {
                Some(ext) => format!("{}.document->{}", self.spec.table, key(ext.id)?),
                None => format!("{}.document", self.spec.table),
            };
            let k = self.param(Bind::Text(sub.clone()));
            // Keys are attribute names, so compared ignoring case, as the evaluator does: the
            // key as written first, else one that differs only in case.
            let map = format!("{base}->{}", key(attr.name)?);
            let expr = format!(
                "coalesce({map}->>{k}, (SELECT e.value FROM jsonb_each_text({map}) e WHERE lower(e.key) = lower({k}) LIMIT 1))"
            );
            return Ok(Target::Text { expr, case: Case::Insensitive });
        }
        let sub = match &path.sub {
            Some(s) => Some(attr.sub(s).ok_or_else(unknown)?),
            None => None,
        };
        let table = self.spec.table;
        if let Some(c) = self
            .spec
            .columns
            .iter()
            .find(|c| extension.is_none() && c.attr == attr.name && c.sub == sub.map(|s| s.name))
        {
            let column = format!("{table}.{}", c.column);
            return Ok(match c.kind {
                ColumnKind::Text(case) => Target::Text { expr: column, case },
                ColumnKind::Time => Target::Time(column),
                ColumnKind::Id => Target::Id,
            });
        }
        if extension.is_none() && attr.name == self.spec.membership.attr {
            return Ok(Target::Membership { sub: sub.map(|s| s.name) });
        }
        if attr.name == "meta" {
            return Err(unknown());
        }
        let base = match extension {
            Some(ext) => format!("{table}.document->{}", key(ext.id)?),
            None => format!("{table}.document"),
        };
        Ok(if attr.multi_valued {
            Target::Multi { array: format!("{base}->{}", key(attr.name)?), attr, sub: sub.map(|s| s.name) }
        } else {
            let leaf = sub.unwrap_or(attr);
            let expr = match sub {
                Some(s) => format!("{base}->{}->>{}", key(attr.name)?, key(s.name)?),
                None => format!("{base}->>{}", key(attr.name)?),
            };
            scalar_target(expr, leaf)
        })
    }

    fn present(&mut self, target: &Target) -> Result<String, DomainError> {
        Ok(match target {
            Target::Id => "TRUE".to_owned(),
            Target::Time(expr) => format!("({expr} IS NOT NULL)"),
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
            Target::Membership { .. } => self.membership_exists(None),
        })
    }

    /// `EXISTS` over this row's membership rows, optionally for one other id.
    fn membership_exists(&self, other: Option<String>) -> String {
        let (t, m) = (self.spec.table, self.spec.membership);
        let and = other.map(|p| format!(" AND m.{} = {p}", m.other)).unwrap_or_default();
        format!(
            "EXISTS (SELECT 1 FROM group_members m WHERE m.tenant_id = {t}.tenant_id AND m.{} = {t}.id{and})",
            m.own
        )
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
                    Ok(u) => format!("{}.id = {}", self.spec.table, self.param(Bind::Uuid(u))),
                    Err(_) => "FALSE".to_owned(),
                };
                match op {
                    CompareOp::Eq => Ok(eq),
                    CompareOp::Ne => Ok(format!("(NOT {eq})")),
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
            Target::Membership { sub } => {
                if sub.is_some_and(|s| s != "value") {
                    return Err(unsupported(format!("{path}: only the value of a membership can be filtered on")));
                }
                let (CompareOp::Eq | CompareOp::Ne, CompValue::Str(id)) = (op, value) else {
                    return Err(unsupported(format!("{path} is compared with eq or ne and an id")));
                };
                // An id that is not a UUID is nobody's member.
                let exists = match Uuid::parse_str(id) {
                    Ok(u) => {
                        let p = self.param(Bind::Uuid(u));
                        self.membership_exists(Some(p))
                    }
                    Err(_) => "FALSE".to_owned(),
                };
                Ok(if op == CompareOp::Ne { format!("(NOT {exists})") } else { exists })
            }
            Target::Multi { array, attr, sub } => {
                let inner = element_target_sub("x.v", attr, *sub)?;
                let positive = if op == CompareOp::Ne { CompareOp::Eq } else { op };
                let cond = self.compare(&inner, positive, value, path)?;
                let exists = format!(
                    "EXISTS (SELECT 1 FROM jsonb_array_elements({}) AS x(v) WHERE {cond})",
                    array_or_empty(array)
                );
                if op == CompareOp::Ne {
                    return Ok(format!("(NOT {exists})"));
                }
                let compared = sub.unwrap_or("value");
                Ok(self.with_element_index(exists, attr, |indexed| match (op, value) {
                    (CompareOp::Eq, CompValue::Str(s)) if compared.eq_ignore_ascii_case(indexed) => Some(s.clone()),
                    _ => None,
                }))
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
        let text = if let Case::Folded = case { text.to_lowercase() } else { text };
        let (lhs, wrap): (String, fn(&str) -> String) = match case {
            Case::Insensitive => (format!("lower({expr})"), |p| format!("lower({p})")),
            Case::Exact | Case::Folded => (expr.to_owned(), |p| p.to_owned()),
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
        // Outside any `not`, a NULL (an absent value) already excludes the row as FALSE would,
        // and the bare comparison can use the column's index; under a `not` it must be FALSE.
        Ok(if self.negated > 0 { format!("coalesce({cond}, FALSE)") } else { cond })
    }
}

/// The value a value filter requires `sub` of its element to equal of its element (a comparison that is the filter,
/// or one of its top-level `and`s): `emails[type eq "work" and value eq "x"]`, and Entra's
/// `emails[type eq "work"].value eq "x"`, which the parser reads as the same.
fn element_equality(f: &Filter, sub: &str) -> Option<String> {
    match f {
        Filter::Compare(p, CompareOp::Eq, CompValue::Str(s))
            if p.urn.is_none() && p.sub.is_none() && p.name.eq_ignore_ascii_case(sub) =>
        {
            Some(s.clone())
        }
        Filter::And(l, r) => element_equality(l, sub).or_else(|| element_equality(r, sub)),
        _ => None,
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

fn scalar_target(expr: String, leaf: &'static Attribute) -> Target {
    match leaf.kind {
        Type::Boolean | Type::Integer | Type::Decimal => Target::JsonScalar(expr),
        // Stored only when valid RFC 3339 (checked on write), so the cast cannot fail.
        Type::DateTime => Target::Time(format!("({expr})::timestamptz")),
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
        compile(&USERS, &scim::filter::parse(f).unwrap(), 2).unwrap()
    }

    #[test]
    fn okta_lookup_uses_the_user_name_index() {
        let c = sql(r#"userName eq "Jane@Acme.com""#);
        assert_eq!(c.clause, "users.user_name_folded = $2", "a bare comparison, which the index serves");
        assert_eq!(c.binds, vec![Bind::Text("jane@acme.com".into())], "folded here, whatever the database locale");
        let lookup = |f: &str| {
            for_list(&USERS, Some(&scim::filter::parse(f).unwrap())).unwrap().user_name_lookup().map(str::to_owned)
        };
        assert_eq!(lookup(r#"userName eq "Jane@Acme.com""#).as_deref(), Some("jane@acme.com"));
        let urn = r#"urn:ietf:params:scim:schemas:core:2.0:User:USERNAME eq "Jane""#;
        assert_eq!(lookup(urn).as_deref(), Some("jane"), "the same lookup, spelled with its schema");
        for other in [
            r#"userName ne "jane""#,
            r#"userName sw "jane""#,
            r#"externalId eq "jane""#,
            r#"userName eq "jane" and active eq true"#,
            r#"not (userName eq "jane")"#,
        ] {
            assert_eq!(lookup(other), None, "{other}");
        }
        // Under a `not`, an absent value must count as not equal.
        let c = sql(r#"not (externalId eq "x")"#);
        assert_eq!(c.clause, "(NOT coalesce(users.external_id = $2, FALSE))");
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
    fn email_equalities_use_the_email_index() {
        let keys =
            "users.id = ANY (ARRAY(SELECT k.user_id FROM user_emails k WHERE k.tenant_id = $1 AND k.email = lower(";
        for (filter, value_param) in [
            (r#"emails.value eq "A@b.c""#, "$3"),
            (r#"emails eq "A@b.c""#, "$3"),
            // Entra's lookup, and the same written inside the brackets, in either order.
            (r#"emails[type eq "work"].value eq "A@b.c""#, "$4"),
            (r#"emails[value eq "A@b.c" and type eq "work"]"#, "$4"),
            (r#"emails[type eq "work" and value eq "A@b.c"] and active eq true"#, "$4"),
        ] {
            let c = sql(filter);
            assert!(c.clause.contains(&format!("{keys}{value_param}))))")), "{filter}: {}", c.clause);
            assert_eq!(c.binds.iter().filter(|b| **b == Bind::Text("A@b.c".into())).count(), 2, "{filter}");
        }
        for other in [
            r#"emails.value co "a@b.c""#,
            r#"emails.value ne "a@b.c""#,
            r#"emails.type eq "work""#,
            r#"emails[type eq "work" or value eq "a@b.c"]"#,
            r#"emails[not (value eq "a@b.c")]"#,
            r#"not (emails.value eq "a@b.c")"#,
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "a""#,
        ] {
            assert!(!sql(other).clause.contains("user_emails"), "{other}: {}", sql(other).clause);
        }
        let groups = compile(&GROUPS, &scim::filter::parse(r#"members.value eq "a""#).unwrap(), 2).unwrap();
        assert!(!groups.clause.contains("user_emails"));
    }

    #[test]
    fn open_map_keys_are_bound() {
        let c = sql(r#"urn:ietf:params:scim:schemas:extension:learning:2.0:User:customFields.badge eq "B-1""#);
        assert!(c.clause.contains("->'customFields'->>$2"), "{}", c.clause);
        assert_eq!(c.binds, vec![Bind::Text("badge".into()), Bind::Text("B-1".into())]);
        let evil = sql(r#"urn:ietf:params:scim:schemas:extension:learning:2.0:User:customFields.a' pr"#.replace("a'", "a-b").as_str());
        assert!(!evil.clause.contains("a-b"));
        assert!(
            sort_expression(&USERS, "urn:ietf:params:scim:schemas:extension:learning:2.0:User:customFields.badge")
                .is_err()
        );
    }

    #[test]
    fn membership_and_groups() {
        let c = sql(r#"groups.value eq "0193b7a4-3c1e-7000-8000-000000000001""#);
        assert!(c.clause.contains("m.user_id = users.id AND m.group_id = $2"), "{}", c.clause);
        let g =
            compile(&GROUPS, &scim::filter::parse(r#"displayName eq "Sales" and members[value eq "x"]"#).unwrap(), 2)
                .unwrap();
        assert!(g.clause.contains("groups.display_name_folded = $2") && g.clause.contains("FALSE"), "{}", g.clause);
        assert_eq!(sort_expression(&USERS, "userName").unwrap(), "users.user_name_folded");
        assert_eq!(sort_expression(&USERS, "meta.created").unwrap(), "users.created_at");
        assert!(sort_expression(&USERS, "nope").is_err());
        let ext = sql(r#"urn:ietf:params:scim:schemas:extension:learning:2.0:User:hireDate pr"#);
        assert!(
            ext.clause
                .contains("users.document->'urn:ietf:params:scim:schemas:extension:learning:2.0:User'->>'hireDate'"),
            "{}",
            ext.clause
        );
    }

    #[test]
    fn unsupported_filters_are_invalid_filter() {
        for f in [r#"nope eq "x""#, r#"active gt true"#, r#"meta.created gt "yesterday""#, r#"urn:x:y eq "z""#] {
            let err = compile(&USERS, &scim::filter::parse(f).unwrap(), 2).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidFilter, "{f}");
        }
    }
}
