//! The User resource: validating a document for create and replace, the typed summary the
//! directory keeps in columns and puts in events, and the rendered SCIM representation.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Result};
use crate::group::Member;
use crate::patch::PatchRequest;
use crate::resource::canonicalize;
use crate::schema::{ENTERPRISE_USER_SCHEMA, USER, USER_RESOURCE, USER_SCHEMA};

/// The longest userName accepted.
pub const MAX_USER_NAME_LENGTH: usize = 256;

/// A user's canonical SCIM document: what the client wrote, without `id`, `meta`, `schemas`,
/// read-only and write-only attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct UserDocument(Map<String, Value>);

/// The typed facts about a user that the system reasons about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserSummary {
    pub user_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub given_name: String,
    pub family_name: String,
    /// As sent; empty when the client sent none (see [`UserSummary::name_to_show`]).
    pub display_name: String,
    pub email: String,
    pub locale: String,
    pub cost_center: String,
    pub division: String,
}

impl UserSummary {
    /// How to address the user: their displayName, else their full name, else their userName.
    pub fn name_to_show(&self) -> String {
        if !self.display_name.trim().is_empty() {
            return self.display_name.clone();
        }
        let full = format!("{} {}", self.given_name, self.family_name).trim().to_owned();
        if full.is_empty() { self.user_name.clone() } else { full }
    }
}

/// What the service provider owns about a resource and renders into `id` and `meta`.
#[derive(Debug, Clone)]
pub struct ResourceMeta {
    pub id: String,
    pub created: OffsetDateTime,
    pub last_modified: OffsetDateTime,
    pub version: i64,
    /// The absolute URL of the resource.
    pub location: String,
}

impl ResourceMeta {
    /// The weak ETag for this version, as `meta.version` and the `ETag` header carry it.
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

impl UserDocument {
    /// Reads a request body (POST or PUT).
    pub fn from_request(body: Value) -> Result<Self> {
        canonicalize(&USER_RESOURCE, body).map(UserDocument)
    }

    /// Wraps a document read back from storage, which was canonical when written.
    pub fn from_stored(doc: Map<String, Value>) -> Self {
        UserDocument(doc)
    }

    /// The document.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The document, by value.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// Checks a new user: the attributes every user of the platform needs. The details are
    /// written for the customer's administrator, who reads them in Okta's task list.
    pub fn validate_new(&mut self) -> Result<()> {
        self.validate()?;
        let s = self.summary();
        if s.given_name.trim().is_empty() {
            return Err(Error::invalid_value(
                "The user has no first name (name.givenName). Give the user a first name in your identity provider, or map one to name.givenName.",
            ));
        }
        if s.family_name.trim().is_empty() {
            return Err(Error::invalid_value(
                "The user has no last name (name.familyName). Give the user a last name in your identity provider, or map one to name.familyName.",
            ));
        }
        if s.email.trim().is_empty() {
            return Err(Error::invalid_value(
                "The user has no email address (emails[].value). Give the user an email address in your identity provider, or map one to the primary email.",
            ));
        }
        self.0.entry("active").or_insert(Value::Bool(true));
        Ok(())
    }

    /// Checks what every stored user must have: a userName.
    pub fn validate(&self) -> Result<()> {
        match self.0.get("userName") {
            Some(Value::String(u)) if !u.trim().is_empty() => {
                if u.chars().count() > MAX_USER_NAME_LENGTH {
                    return Err(Error::invalid_value(format!(
                        "The userName is longer than {MAX_USER_NAME_LENGTH} characters."
                    )));
                }
                Ok(())
            }
            _ => Err(Error::invalid_value(
                "The user has no userName. Every user needs a userName (usually the work email address); check the Username mapping of the app in your identity provider.",
            )),
        }
    }

    /// Replaces this document with `new` (SCIM PUT). An absent `active` keeps the current state,
    /// so that a PUT never archives or restores a user by omission.
    pub fn replace_with(&self, mut new: UserDocument) -> Result<UserDocument> {
        new.validate()?;
        if !new.0.contains_key("active") {
            new.0.insert("active".to_owned(), Value::Bool(self.summary().active));
        }
        Ok(new)
    }

    /// Applies a PATCH, all of it or nothing; the result must still be a valid user. Removing
    /// `active` unassigns the attribute; the platform keeps the user's state (only `true`
    /// restores and only `false` archives, see [`UserDocument::active`]).
    pub fn patch(&mut self, request: &PatchRequest) -> Result<()> {
        let mut working = self.0.clone();
        request.apply(&USER_RESOURCE, &mut working)?;
        let candidate = UserDocument(working);
        candidate.validate()?;
        *self = candidate;
        Ok(())
    }

    /// `active` as the document says it: `None` when unassigned (a PATCH removed it), in which
    /// case a write keeps the user's state as it was.
    pub fn active(&self) -> Option<bool> {
        self.0.get("active").and_then(Value::as_bool)
    }

    /// The typed summary.
    pub fn summary(&self) -> UserSummary {
        let d = Value::Object(self.0.clone());
        let name = d.get("name").cloned().unwrap_or(Value::Null);
        let given_name = str_at(&name, "givenName").to_owned();
        let family_name = str_at(&name, "familyName").to_owned();
        let display_name = str_at(&d, "displayName").to_owned();
        let email = d
            .get("emails")
            .and_then(Value::as_array)
            .and_then(|emails| {
                emails.iter().find(|e| e.get("primary") == Some(&Value::Bool(true))).or_else(|| emails.first())
            })
            .map(|e| str_at(e, "value").to_owned())
            .unwrap_or_default();
        let locale = match str_at(&d, "locale") {
            "" => str_at(&d, "preferredLanguage").to_owned(),
            l => l.to_owned(),
        };
        let ext = d.get(ENTERPRISE_USER_SCHEMA).cloned().unwrap_or(Value::Null);
        UserSummary {
            user_name: str_at(&d, "userName").to_owned(),
            external_id: d.get("externalId").and_then(Value::as_str).map(str::to_owned),
            active: d.get("active").and_then(Value::as_bool).unwrap_or(true),
            given_name,
            family_name,
            display_name,
            email,
            locale,
            cost_center: str_at(&ext, "costCenter").to_owned(),
            division: str_at(&ext, "division").to_owned(),
        }
    }

    /// The SCIM representation: `schemas`, `id`, the document, the user's `groups` when loaded
    /// (each with its `$ref` under `base_url`), `meta`.
    pub fn render(&self, meta: &ResourceMeta, groups: Option<&[Member]>, base_url: &str) -> Value {
        let mut schemas = vec![Value::String(USER_SCHEMA.to_owned())];
        for ext in USER_RESOURCE.extensions {
            if self.0.contains_key(ext.id) {
                schemas.push(Value::String(ext.id.to_owned()));
            }
        }
        let mut out = Map::new();
        out.insert("schemas".to_owned(), Value::Array(schemas));
        out.insert("id".to_owned(), Value::String(meta.id.clone()));
        // Schema order first (what people read first: externalId, userName, name, ...), then
        // extensions and attributes outside the schemas, as stored.
        let ordered = ["externalId"].into_iter().chain(USER.attributes.iter().map(|a| a.name));
        for name in ordered {
            if let Some(v) = self.0.get(name) {
                out.insert(name.to_owned(), v.clone());
            }
        }
        for (k, v) in &self.0 {
            if !out.contains_key(k) {
                out.insert(k.clone(), v.clone());
            }
        }
        if let Some(groups) = groups {
            let rendered: Vec<Value> = groups
                .iter()
                .map(|g| {
                    json!({"value": g.value, "display": g.display.clone().unwrap_or_default(), "type": "direct",
                           "$ref": format!("{base_url}/Groups/{}", g.value)})
                })
                .collect();
            out.insert("groups".to_owned(), Value::Array(rendered));
        }
        out.insert("meta".to_owned(), render_meta("User", meta));
        Value::Object(out)
    }
}

/// The `meta` attribute of a resource.
pub fn render_meta(resource_type: &str, meta: &ResourceMeta) -> Value {
    json!({
        "resourceType": resource_type,
        "created": format_time(meta.created),
        "lastModified": format_time(meta.last_modified),
        "location": meta.location,
        "version": meta.etag(),
    })
}

/// Formats a timestamp as RFC 3339, the SCIM dateTime form.
pub fn format_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::PATCH_OP_SCHEMA;

    fn okta_body() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "userName": "Jane.Doe@acme.com",
            "name": {"givenName": "Jane", "familyName": "Doe"},
            "emails": [{"primary": true, "value": "jane.doe@acme.com", "type": "work"}],
            "displayName": "Jane Doe",
            "locale": "en-US",
            "externalId": "00ujl29u0le5T6Aj10h7",
            "groups": [],
            "password": "1mz050nq",
            "active": true,
            ENTERPRISE_USER_SCHEMA: {"costCenter": "London", "division": "Retail Banking"}
        })
    }

    #[test]
    fn summary_of_an_okta_user() {
        let mut doc = UserDocument::from_request(okta_body()).unwrap();
        doc.validate_new().unwrap();
        let s = doc.summary();
        assert_eq!(s.user_name, "Jane.Doe@acme.com");
        assert_eq!(s.external_id.as_deref(), Some("00ujl29u0le5T6Aj10h7"));
        assert!(s.active);
        assert_eq!((s.given_name.as_str(), s.family_name.as_str()), ("Jane", "Doe"));
        assert_eq!(s.email, "jane.doe@acme.com");
        assert_eq!(s.locale, "en-US");
        assert_eq!((s.cost_center.as_str(), s.division.as_str()), ("London", "Retail Banking"));
    }

    #[test]
    fn missing_required_attributes_are_explained() {
        for (remove, needle) in [("userName", "userName"), ("name", "first name"), ("emails", "email")] {
            let mut body = okta_body();
            body.as_object_mut().unwrap().remove(remove);
            let mut doc = UserDocument::from_request(body).unwrap();
            let err = doc.validate_new().unwrap_err();
            assert_eq!(err.scim_type, crate::ScimType::InvalidValue);
            assert!(err.detail.contains(needle), "{}", err.detail);
        }
        let mut body = okta_body();
        body["name"] = json!({"givenName": "Jane"});
        let err = UserDocument::from_request(body).unwrap().validate_new().unwrap_err();
        assert!(err.detail.contains("last name"));
    }

    #[test]
    fn render_adds_id_meta_and_schemas_and_keeps_user_name_case() {
        let mut doc = UserDocument::from_request(okta_body()).unwrap();
        doc.validate_new().unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        let meta = ResourceMeta {
            id: "u1".into(),
            created: now,
            last_modified: now,
            version: 3,
            location: "http://x/scim/v2/Users/u1".into(),
        };
        let out = doc.render(
            &meta,
            Some(&[Member { value: "g1".into(), display: Some("Sales".into()) }]),
            "http://x/scim/v2",
        );
        assert_eq!(out["id"], "u1");
        assert_eq!(out["userName"], "Jane.Doe@acme.com");
        assert_eq!(out["schemas"][1], ENTERPRISE_USER_SCHEMA);
        assert_eq!(out["meta"]["resourceType"], "User");
        assert_eq!(out["meta"]["version"], "W/\"3\"");
        assert_eq!(out["meta"]["created"], "1970-01-01T00:00:00Z");
        assert!(out.get("password").is_none());
        let keys: Vec<&str> = out.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(&keys[..4], ["schemas", "id", "externalId", "userName"]);
        assert_eq!(keys.last(), Some(&"meta"));
        assert_eq!(out["groups"][0]["$ref"], "http://x/scim/v2/Groups/g1");
    }

    #[test]
    fn put_without_active_keeps_state_and_patch_must_leave_a_user_name() {
        let mut doc = UserDocument::from_request(okta_body()).unwrap();
        doc.validate_new().unwrap();
        let req = PatchRequest::parse(
            &json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "replace", "value": {"active": false}}]}),
        )
        .unwrap();
        doc.patch(&req).unwrap();
        let mut body = okta_body();
        body.as_object_mut().unwrap().remove("active");
        let replaced = doc.replace_with(UserDocument::from_request(body).unwrap()).unwrap();
        assert!(!replaced.summary().active);
        let remove_active = PatchRequest::parse(&json!({"Operations": [{"op": "remove", "path": "active"}]})).unwrap();
        doc.patch(&remove_active).unwrap();
        assert_eq!(doc.active(), None, "removing active unassigns it; the store keeps the state");
        let req = PatchRequest::parse(&json!({"Operations": [{"op": "remove", "path": "userName"}]})).unwrap();
        let before = doc.clone();
        assert!(doc.patch(&req).is_err());
        assert_eq!(doc, before);
    }
}
