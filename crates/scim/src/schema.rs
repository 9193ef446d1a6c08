//! The schemas this service implements (RFC 7643 §4 and §8.7), as static attribute definitions.
//!
//! They drive everything that depends on an attribute's characteristics: canonical names (SCIM
//! attribute names are case-insensitive), `caseExact` in filters, mutability in PATCH, what is
//! never returned (`password`), and the discovery endpoints.

/// The core User schema URN.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The core Group schema URN.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// The enterprise User extension URN.
pub const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// Our own User extension: what the learning platform needs that SCIM does not carry.
pub const LEARNING_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:learning:2.0:User";

/// An attribute's data type (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

/// When an attribute may be written (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

/// How unique an attribute's values are (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

/// When an attribute is returned (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

/// One attribute definition.
#[derive(Debug, Clone, Copy)]
pub struct Attribute {
    pub name: &'static str,
    pub kind: Type,
    pub multi_valued: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    /// For references: what they may point at (`User`, `Group`, `external`, `uri`).
    pub reference_types: &'static [&'static str],
    pub description: &'static str,
    pub sub_attributes: &'static [Attribute],
}

impl Attribute {
    /// The sub-attribute of this complex attribute with that name (case-insensitive).
    pub fn sub(&self, name: &str) -> Option<&'static Attribute> {
        find(self.sub_attributes, name)
    }
}

/// One schema: its URN and top-level attributes.
#[derive(Debug)]
pub struct Schema {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: &'static [Attribute],
}

impl Schema {
    /// The attribute of this schema with that name (case-insensitive).
    pub fn attribute(&self, name: &str) -> Option<&'static Attribute> {
        find(self.attributes, name)
    }
}

/// A resource type: its core schema, its extensions and the attributes common to all resources.
#[derive(Debug)]
pub struct ResourceType {
    pub name: &'static str,
    pub endpoint: &'static str,
    pub schema: &'static Schema,
    pub extensions: &'static [&'static Schema],
}

impl ResourceType {
    /// Looks up a top-level attribute of the core schema or the common attributes.
    pub fn attribute(&self, name: &str) -> Option<&'static Attribute> {
        find(COMMON, name).or_else(|| self.schema.attribute(name))
    }

    /// The extension schema whose URN this is (case-insensitive).
    pub fn extension(&self, urn: &str) -> Option<&'static Schema> {
        self.extensions.iter().copied().find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// The attribute a URN-qualified or plain name designates. `urn` is the schema part (core or
    /// extension), `name` the attribute within it.
    pub fn resolve(&self, urn: Option<&str>, name: &str) -> Option<&'static Attribute> {
        match urn {
            None => self.attribute(name),
            Some(u) if u.eq_ignore_ascii_case(self.schema.id) => self.attribute(name),
            Some(u) => self.extension(u).and_then(|s| s.attribute(name)),
        }
    }
}

fn find(attrs: &'static [Attribute], name: &str) -> Option<&'static Attribute> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

const fn attr(name: &'static str, kind: Type) -> Attribute {
    Attribute {
        name,
        kind,
        multi_valued: false,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        uniqueness: Uniqueness::None,
        reference_types: &[],
        description: "",
        sub_attributes: &[],
    }
}

const fn string(name: &'static str) -> Attribute {
    attr(name, Type::String)
}

const fn complex(name: &'static str, subs: &'static [Attribute]) -> Attribute {
    Attribute { sub_attributes: subs, ..attr(name, Type::Complex) }
}

const fn multi(a: Attribute) -> Attribute {
    Attribute { multi_valued: true, ..a }
}

const fn required(a: Attribute) -> Attribute {
    Attribute { required: true, ..a }
}

const fn exact(a: Attribute) -> Attribute {
    Attribute { case_exact: true, ..a }
}

const fn read_only(a: Attribute) -> Attribute {
    Attribute { mutability: Mutability::ReadOnly, ..a }
}

const fn immutable(a: Attribute) -> Attribute {
    Attribute { mutability: Mutability::Immutable, ..a }
}

const fn always(a: Attribute) -> Attribute {
    Attribute { returned: Returned::Always, ..a }
}

const fn unique(a: Attribute) -> Attribute {
    Attribute { uniqueness: Uniqueness::Server, ..a }
}

const fn refs(a: Attribute, types: &'static [&'static str]) -> Attribute {
    Attribute { reference_types: types, ..a }
}

const fn described(a: Attribute, description: &'static str) -> Attribute {
    Attribute { description, ..a }
}

/// The sub-attributes shared by the multi-valued "plural" attributes (phoneNumbers, ims, ...).
const PLURAL_SUBS: &[Attribute] = &[string("value"), string("display"), string("type"), attr("primary", Type::Boolean)];

/// Emails: as [`PLURAL_SUBS`], with a value required.
const EMAIL_SUBS: &[Attribute] =
    &[required(string("value")), string("display"), string("type"), attr("primary", Type::Boolean)];

/// Attributes every resource has (RFC 7643 §3.1).
pub const COMMON: &[Attribute] = &[
    described(
        always(read_only(exact(unique(string("id"))))),
        "Unique identifier of the resource, assigned by the service provider.",
    ),
    described(exact(string("externalId")), "Identifier of the resource in the provisioning client (Okta's user id)."),
    read_only(complex(
        "meta",
        &[
            read_only(exact(string("resourceType"))),
            read_only(attr("created", Type::DateTime)),
            read_only(attr("lastModified", Type::DateTime)),
            read_only(exact(refs(attr("location", Type::Reference), &["uri"]))),
            read_only(exact(string("version"))),
        ],
    )),
];

const USER_ATTRIBUTES: &[Attribute] = &[
    described(
        required(unique(string("userName"))),
        "Unique identifier of the user, typically their work email; unique per tenant regardless of case.",
    ),
    described(
        required(complex(
            "name",
            &[
                string("formatted"),
                required(string("familyName")),
                required(string("givenName")),
                string("middleName"),
                string("honorificPrefix"),
                string("honorificSuffix"),
            ],
        )),
        "The user's name; givenName and familyName are required to create a user.",
    ),
    string("displayName"),
    string("nickName"),
    refs(attr("profileUrl", Type::Reference), &["external"]),
    string("title"),
    string("userType"),
    string("preferredLanguage"),
    string("locale"),
    string("timezone"),
    described(attr("active", Type::Boolean), "false archives the user (kept and retrievable); true restores them."),
    Attribute {
        mutability: Mutability::WriteOnly,
        returned: Returned::Never,
        description: "Accepted and discarded: the platform signs users in through their identity provider.",
        ..exact(string("password"))
    },
    described(
        required(multi(complex("emails", EMAIL_SUBS))),
        "Email addresses; one is required to create a user, the primary one receives the platform's emails.",
    ),
    multi(complex("phoneNumbers", PLURAL_SUBS)),
    multi(complex("ims", PLURAL_SUBS)),
    multi(complex(
        "photos",
        &[
            exact(refs(attr("value", Type::Reference), &["external"])),
            string("display"),
            string("type"),
            attr("primary", Type::Boolean),
        ],
    )),
    multi(complex(
        "addresses",
        &[
            string("formatted"),
            string("streetAddress"),
            string("locality"),
            string("region"),
            string("postalCode"),
            string("country"),
            string("type"),
            attr("primary", Type::Boolean),
        ],
    )),
    read_only(multi(complex(
        "groups",
        &[
            read_only(exact(string("value"))),
            read_only(refs(attr("$ref", Type::Reference), &["User", "Group"])),
            read_only(string("display")),
            read_only(string("type")),
        ],
    ))),
    multi(complex("entitlements", PLURAL_SUBS)),
    // Roles are the platform's, set by the tenant's admin (ADR 0024): what an identity provider
    // sends is accepted and never stored, as a password is.
    Attribute {
        mutability: Mutability::WriteOnly,
        returned: Returned::Never,
        description: "Accepted and ignored: roles (learner, manager, admin) are managed in the learning platform by the tenant's admin; provisioning never changes them.",
        ..multi(complex("roles", PLURAL_SUBS))
    },
    multi(complex(
        "x509Certificates",
        &[attr("value", Type::Binary), string("display"), string("type"), attr("primary", Type::Boolean)],
    )),
];

/// The core User schema.
pub static USER: Schema =
    Schema { id: USER_SCHEMA, name: "User", description: "User Account", attributes: USER_ATTRIBUTES };

/// The enterprise User extension (RFC 7643 §4.3): where Okta puts costCenter and division.
pub static ENTERPRISE_USER: Schema = Schema {
    id: ENTERPRISE_USER_SCHEMA,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attributes: &[
        string("employeeNumber"),
        string("costCenter"),
        string("organization"),
        string("division"),
        string("department"),
        complex(
            "manager",
            &[exact(string("value")), refs(attr("$ref", Type::Reference), &["User"]), read_only(string("displayName"))],
        ),
    ],
};

/// Our User extension: what the seed article says SCIM could not carry. `customFields` is a map:
/// a complex attribute whose sub-attributes are the customer's own keys (it declares none), so an
/// identity provider maps an attribute to `customFields.<key>` and filters read
/// `…:customFields.badge eq "B-1"`.
pub static LEARNING_USER: Schema = Schema {
    id: LEARNING_USER_SCHEMA,
    name: "LearningUser",
    description: "Learning platform user attributes",
    attributes: &[
        // A calendar date, not an instant (SCIM's dateTime is an instant): kept as sent; written
        // as ISO 8601 (2024-03-01) it sorts and compares as text.
        described(string("hireDate"), "When the user joined the organisation, as an ISO 8601 date (2024-03-01)."),
        described(
            complex("customFields", &[]),
            "Customer-defined fields: an object of string values under keys the customer chooses (customFields.badge).",
        ),
    ],
};

/// The core Group schema.
pub static GROUP: Schema = Schema {
    id: GROUP_SCHEMA,
    name: "Group",
    description: "Group",
    attributes: &[
        described(required(unique(string("displayName"))), "The group's name, unique per tenant regardless of case."),
        multi(complex(
            "members",
            &[
                immutable(exact(string("value"))),
                immutable(refs(attr("$ref", Type::Reference), &["User"])),
                // Kept as the client gave it (Okta sends the user's login), returned as given.
                string("display"),
            ],
        )),
    ],
};

/// The User resource type.
pub static USER_RESOURCE: ResourceType =
    ResourceType { name: "User", endpoint: "/Users", schema: &USER, extensions: &[&ENTERPRISE_USER, &LEARNING_USER] };

/// The Group resource type.
pub static GROUP_RESOURCE: ResourceType =
    ResourceType { name: "Group", endpoint: "/Groups", schema: &GROUP, extensions: &[] };

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_lookup_ignores_case_and_covers_common_attributes() {
        assert_eq!(USER_RESOURCE.attribute("USERNAME").map(|a| a.name), Some("userName"));
        assert_eq!(USER_RESOURCE.attribute("externalid").map(|a| a.name), Some("externalId"));
        assert!(USER_RESOURCE.attribute("externalid").is_some_and(|a| a.case_exact));
        assert!(USER_RESOURCE.attribute("nope").is_none());
        let emails = USER_RESOURCE.attribute("emails");
        assert!(emails.is_some_and(|a| a.multi_valued && a.sub("VALUE").is_some()));
    }

    #[test]
    fn extension_attributes_resolve_through_their_urn() {
        let urn = ENTERPRISE_USER_SCHEMA.to_ascii_lowercase();
        let a = USER_RESOURCE.resolve(Some(&urn), "costcenter");
        assert_eq!(a.map(|a| a.name), Some("costCenter"));
        assert_eq!(USER_RESOURCE.resolve(Some(USER_SCHEMA), "userName").map(|a| a.name), Some("userName"));
        assert!(USER_RESOURCE.resolve(Some("urn:x"), "userName").is_none());
    }
}
