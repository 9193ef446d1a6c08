//! SCIM errors as the protocol defines them (RFC 7644 §3.12): the `scimType` keywords, the error
//! a parser or validator of this crate raises, and the JSON body every error response carries.
//!
//! Which HTTP status and gRPC code a *domain* error gets is decided in one table in the `proto`
//! crate; this module only knows the protocol's own vocabulary.

use serde_json::{Value, json};

/// The error message schema URN.
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The `scimType` keywords of RFC 7644 §3.12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScimType {
    InvalidFilter,
    TooMany,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
    InvalidVers,
    Sensitive,
}

impl ScimType {
    /// Every keyword, for lookups by name.
    pub const ALL: [ScimType; 10] = [
        ScimType::InvalidFilter,
        ScimType::TooMany,
        ScimType::Uniqueness,
        ScimType::Mutability,
        ScimType::InvalidSyntax,
        ScimType::InvalidPath,
        ScimType::NoTarget,
        ScimType::InvalidValue,
        ScimType::InvalidVers,
        ScimType::Sensitive,
    ];

    /// The keyword as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
            ScimType::Sensitive => "sensitive",
        }
    }

    /// The keyword for a wire string, if it is one.
    pub fn parse(s: &str) -> Option<ScimType> {
        ScimType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for ScimType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request that the protocol rejects: malformed, invalid or not applicable. The `detail` is
/// written for the customer's administrator, who sees it verbatim in Okta's task list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{scim_type}: {detail}")]
pub struct Error {
    pub scim_type: ScimType,
    pub detail: String,
}

impl Error {
    pub fn new(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Error { scim_type, detail: detail.into() }
    }
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Error::new(ScimType::InvalidValue, detail)
    }
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Error::new(ScimType::InvalidFilter, detail)
    }
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Error::new(ScimType::InvalidSyntax, detail)
    }
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Error::new(ScimType::InvalidPath, detail)
    }
    pub fn no_target(detail: impl Into<String>) -> Self {
        Error::new(ScimType::NoTarget, detail)
    }
    pub fn mutability(detail: impl Into<String>) -> Self {
        Error::new(ScimType::Mutability, detail)
    }
}

/// Convenience alias for this crate's fallible operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The body of an error response: `{"schemas":[Error], "status":"404", "scimType":…, "detail":…}`.
/// `status` is a string, as RFC 7644 specifies.
pub fn error_body(status: u16, scim_type: Option<ScimType>, detail: &str) -> Value {
    let mut body = json!({
        "schemas": [ERROR_SCHEMA],
        "status": status.to_string(),
        "detail": detail,
    });
    if let (Some(t), Some(obj)) = (scim_type, body.as_object_mut()) {
        obj.insert("scimType".to_owned(), Value::String(t.as_str().to_owned()));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scim_types_round_trip_through_their_wire_names() {
        for t in ScimType::ALL {
            assert_eq!(ScimType::parse(t.as_str()), Some(t));
        }
        assert_eq!(ScimType::parse("nope"), None);
    }

    #[test]
    fn error_body_has_string_status_and_optional_scim_type() {
        let b = error_body(409, Some(ScimType::Uniqueness), "taken");
        assert_eq!(b["status"], "409");
        assert_eq!(b["scimType"], "uniqueness");
        assert_eq!(b["schemas"][0], ERROR_SCHEMA);
        let b = error_body(404, None, "gone");
        assert!(b.get("scimType").is_none());
        assert_eq!(b["detail"], "gone");
    }
}
