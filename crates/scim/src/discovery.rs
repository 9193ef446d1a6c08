//! The discovery resources (RFC 7643 §5-7, RFC 7644 §4): `/ServiceProviderConfig`, `/Schemas`
//! and `/ResourceTypes`, rendered from the same static definitions the rest of the crate obeys, so
//! that what is advertised is exactly what is implemented.

use serde_json::{Map, Value, json};

use crate::list::MAX_PAGE_SIZE;
use crate::schema::{
    Attribute, ENTERPRISE_USER, GROUP, GROUP_RESOURCE, LEARNING_USER, Mutability, ResourceType, Returned, Schema, Type,
    USER, USER_RESOURCE, Uniqueness,
};

/// The ServiceProviderConfig schema URN.
pub const SERVICE_PROVIDER_CONFIG_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
/// The ResourceType schema URN.
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
/// The Schema schema URN.
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// Every schema served, in the order `/Schemas` lists them.
pub const SCHEMAS: [&Schema; 4] = [&USER, &ENTERPRISE_USER, &LEARNING_USER, &GROUP];

/// Every resource type served.
pub const RESOURCE_TYPES: [&ResourceType; 2] = [&USER_RESOURCE, &GROUP_RESOURCE];

fn type_name(t: Type) -> &'static str {
    match t {
        Type::String => "string",
        Type::Boolean => "boolean",
        Type::Decimal => "decimal",
        Type::Integer => "integer",
        Type::DateTime => "dateTime",
        Type::Binary => "binary",
        Type::Reference => "reference",
        Type::Complex => "complex",
    }
}

fn mutability_name(m: Mutability) -> &'static str {
    match m {
        Mutability::ReadOnly => "readOnly",
        Mutability::ReadWrite => "readWrite",
        Mutability::Immutable => "immutable",
        Mutability::WriteOnly => "writeOnly",
    }
}

fn returned_name(r: Returned) -> &'static str {
    match r {
        Returned::Always => "always",
        Returned::Never => "never",
        Returned::Default => "default",
        Returned::Request => "request",
    }
}

fn uniqueness_name(u: Uniqueness) -> &'static str {
    match u {
        Uniqueness::None => "none",
        Uniqueness::Server => "server",
        Uniqueness::Global => "global",
    }
}

fn attribute_json(a: &Attribute) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(a.name));
    o.insert("type".into(), json!(type_name(a.kind)));
    o.insert("multiValued".into(), json!(a.multi_valued));
    o.insert("description".into(), json!(a.description));
    o.insert("required".into(), json!(a.required));
    o.insert("caseExact".into(), json!(a.case_exact));
    o.insert("mutability".into(), json!(mutability_name(a.mutability)));
    o.insert("returned".into(), json!(returned_name(a.returned)));
    o.insert("uniqueness".into(), json!(uniqueness_name(a.uniqueness)));
    if a.kind == Type::Reference {
        o.insert("referenceTypes".into(), json!(a.reference_types));
    }
    if a.kind == Type::Complex {
        o.insert("subAttributes".into(), Value::Array(a.sub_attributes.iter().map(attribute_json).collect()));
    }
    Value::Object(o)
}

/// One schema as `/Schemas/{id}` serves it.
pub fn schema_json(schema: &Schema, base_url: &str) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": schema.id,
        "name": schema.name,
        "description": schema.description,
        "attributes": schema.attributes.iter().map(attribute_json).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base_url}/Schemas/{}", schema.id)},
    })
}

/// The schema with this URN (case-insensitive).
pub fn find_schema(id: &str) -> Option<&'static Schema> {
    SCHEMAS.into_iter().find(|s| s.id.eq_ignore_ascii_case(id))
}

/// One resource type as `/ResourceTypes/{name}` serves it.
pub fn resource_type_json(rt: &ResourceType, base_url: &str) -> Value {
    let extensions: Vec<Value> = rt.extensions.iter().map(|s| json!({"schema": s.id, "required": false})).collect();
    let mut v = json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": rt.name,
        "name": rt.name,
        "endpoint": rt.endpoint,
        "description": rt.schema.description,
        "schema": rt.schema.id,
        "meta": {"resourceType": "ResourceType", "location": format!("{base_url}/ResourceTypes/{}", rt.name)},
    });
    if !extensions.is_empty()
        && let Some(o) = v.as_object_mut()
    {
        o.insert("schemaExtensions".into(), Value::Array(extensions));
    }
    v
}

/// The resource type with this name (case-insensitive).
pub fn find_resource_type(name: &str) -> Option<&'static ResourceType> {
    RESOURCE_TYPES.into_iter().find(|r| r.name.eq_ignore_ascii_case(name))
}

/// `/ServiceProviderConfig`: exactly the features implemented.
pub fn service_provider_config(base_url: &str, documentation_uri: &str) -> Value {
    json!({
        "schemas": [SERVICE_PROVIDER_CONFIG_SCHEMA],
        "documentationUri": documentation_uri,
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_PAGE_SIZE},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "authenticationSchemes": [
            {
                "type": "httpbasic",
                "name": "HTTP Basic",
                "description": "The tenant's subdomain as the username and its SCIM API key as the password.",
                "specUri": "https://www.rfc-editor.org/info/rfc7617",
                "primary": true
            },
            {
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "The tenant's SCIM API key as a Bearer token.",
                "specUri": "https://www.rfc-editor.org/info/rfc6750"
            }
        ],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base_url}/ServiceProviderConfig")},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_describe_what_is_enforced() {
        let user = schema_json(&USER, "http://x/scim/v2");
        let attrs = user["attributes"].as_array().unwrap();
        let user_name = attrs.iter().find(|a| a["name"] == "userName").unwrap();
        assert_eq!((user_name["required"].as_bool(), user_name["uniqueness"].as_str()), (Some(true), Some("server")));
        let password = attrs.iter().find(|a| a["name"] == "password").unwrap();
        assert_eq!(
            (password["mutability"].as_str(), password["returned"].as_str()),
            (Some("writeOnly"), Some("never"))
        );
        let groups = attrs.iter().find(|a| a["name"] == "groups").unwrap();
        assert_eq!(groups["mutability"], "readOnly");
        assert!(groups["subAttributes"].as_array().unwrap().iter().any(|s| s["name"] == "$ref"));
        assert_eq!(user["meta"]["location"], format!("http://x/scim/v2/Schemas/{}", USER.id));
    }

    #[test]
    fn resource_types_list_their_extensions() {
        let rt = resource_type_json(&USER_RESOURCE, "b");
        let exts: Vec<&str> =
            rt["schemaExtensions"].as_array().unwrap().iter().map(|e| e["schema"].as_str().unwrap()).collect();
        assert_eq!(exts, [ENTERPRISE_USER.id, LEARNING_USER.id]);
        assert!(resource_type_json(&GROUP_RESOURCE, "b").get("schemaExtensions").is_none());
        assert!(find_resource_type("user").is_some() && find_schema(&GROUP.id.to_lowercase()).is_some());
    }
}
