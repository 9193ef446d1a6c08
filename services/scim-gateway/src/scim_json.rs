//! Reading SCIM request bodies and writing SCIM responses: both `application/scim+json` and
//! `application/json` bodies are accepted (Okta's own test suite sends the latter), anything else
//! non-JSON is a 415; bodies are size-limited and must be JSON (400 `invalidSyntax`); responses
//! are `application/scim+json`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;

use crate::error::ApiError;

/// The media type of every response.
pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// Reads and parses a JSON request body.
pub async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.is_empty() && !essence.ends_with("/json") && !essence.ends_with("+json") {
            return Err(ApiError::http(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "The request body must be JSON (Content-Type application/scim+json or application/json).",
            ));
        }
    }
    let bytes = read_limited(body, limit).await?;
    if nests_deeper_than(&bytes, MAX_DEPTH) {
        return Err(scim::Error::invalid_syntax(format!(
            "The request body nests objects and arrays deeper than {MAX_DEPTH} levels."
        ))
        .into());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::from(scim::Error::invalid_syntax(format!("The request body is not valid JSON: {e}."))))
}

/// The deepest nesting of objects and arrays accepted (a SCIM resource needs four or five).
pub const MAX_DEPTH: usize = 32;

/// Whether JSON text opens more than `max` objects and arrays inside each other (brackets inside
/// strings do not count). Checked before parsing, so no input can make the parser recurse deeply.
fn nests_deeper_than(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// How much of an oversized body is read (and discarded) before answering 413, so that a client
/// still writing its body receives the answer instead of a reset connection.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// The body, if it is at most `limit` bytes; 413 otherwise.
pub(crate) async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut read = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::from(scim::Error::invalid_syntax("The request body could not be read.")))?;
        read += chunk.len();
        if read <= limit {
            buf.extend_from_slice(&chunk);
        } else if read > DRAIN_LIMIT {
            break;
        }
    }
    if read > limit {
        return Err(ApiError::http(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("The request body is larger than {limit} bytes."),
        ));
    }
    Ok(buf)
}

/// A SCIM JSON response.
pub fn respond(status: StatusCode, body: &Value, extra: &[(header::HeaderName, String)]) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name.clone(), v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert!(nests_deeper_than(deep.as_bytes(), 32));
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(!nests_deeper_than(ok.as_bytes(), 32));
        let in_string = format!(r#"{{"a": "{}\"{}"}}"#, "[".repeat(100), "{".repeat(100));
        assert!(!nests_deeper_than(in_string.as_bytes(), 32));
    }
}
