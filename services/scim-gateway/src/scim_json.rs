//! Reading SCIM request bodies and writing SCIM responses: both `application/scim+json` and
//! `application/json` bodies are accepted (Okta's own test suite sends the latter; Okta's
//! provisioning and Entra send the former), anything else is a 415; bodies are size-limited and
//! must be JSON (400 `invalidSyntax`); responses are `application/scim+json`.
//!
//! [`require_json`] guards every write of the SCIM routes and the tenant API: a browser that
//! cached a tenant's Basic credentials can be made to send a cross-site POST without a preflight
//! only with a "simple" body (`text/plain`, form-encoded, multipart, or no Content-Type at all);
//! none of those is accepted.

use axum::body::{Body, HttpBody as _};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;

use crate::error::ApiError;

/// The media type of every response.
pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// Whether a Content-Type is one of the two JSON media types we read, parameters
/// (`; charset=utf-8`) allowed, in any case.
pub fn is_json_content_type(value: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json") || essence.eq_ignore_ascii_case(SCIM_CONTENT_TYPE)
}

fn unsupported_media_type() -> ApiError {
    ApiError::http(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "The request body must be JSON (Content-Type application/scim+json or application/json).",
    )
}

/// Middleware: a POST, PUT or PATCH that carries a body must say it is JSON, and one that names a
/// Content-Type must name a JSON one; 415 (a SCIM error body) before anything is read otherwise.
/// A write without a body and without a Content-Type (a re-drive's POST) passes.
pub async fn require_json(request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::POST | Method::PUT | Method::PATCH) {
        let acceptable = match request.headers().get(header::CONTENT_TYPE) {
            Some(ct) => is_json_content_type(ct),
            None => request.body().is_end_stream(),
        };
        if !acceptable {
            return unsupported_media_type().into_response();
        }
    }
    next.run(request).await
}

/// Reads and parses a JSON request body.
pub async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE)
        && !is_json_content_type(ct)
    {
        return Err(unsupported_media_type());
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
        let chunk = chunk.map_err(|e| match crate::server::is_body_timeout(&e) {
            true => ApiError::http(StatusCode::REQUEST_TIMEOUT, "The request body was not received in time."),
            false => ApiError::from(scim::Error::invalid_syntax("The request body could not be read.")),
        })?;
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
    fn only_the_two_json_media_types_are_json() {
        for ok in [
            "application/json",
            "application/scim+json",
            "application/scim+json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            " application/json ",
        ] {
            assert!(is_json_content_type(&HeaderValue::from_static(ok)), "{ok}");
        }
        for refused in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/json",
            "application/merge-patch+json",
            "application/jsonx",
            "",
        ] {
            assert!(!is_json_content_type(&HeaderValue::from_static(refused)), "{refused}");
        }
    }

    #[tokio::test]
    async fn writes_with_a_body_must_say_json() {
        use tower::ServiceExt as _;
        let app = axum::Router::new()
            .route("/w", axum::routing::any(|| async { "ok" }))
            .route_layer(axum::middleware::from_fn(require_json));
        let send = |method: &str, ct: Option<&str>, body: &'static str| {
            let mut request = axum::http::Request::builder().method(method).uri("/w");
            if let Some(ct) = ct {
                request = request.header(header::CONTENT_TYPE, ct);
            }
            let app = app.clone();
            let request = request.body(Body::from(body)).unwrap();
            async move { app.oneshot(request).await.unwrap().status() }
        };
        for method in ["POST", "PUT", "PATCH"] {
            assert_eq!(send(method, Some("application/scim+json; charset=utf-8"), "{}").await, StatusCode::OK);
            assert_eq!(send(method, Some("application/json"), "{}").await, StatusCode::OK);
            assert_eq!(send(method, Some("text/plain"), "{}").await, StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert_eq!(
                send(method, Some("application/x-www-form-urlencoded"), "").await,
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            );
            assert_eq!(send(method, None, "{}").await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "a body without a type");
            assert_eq!(send(method, None, "").await, StatusCode::OK, "no body, no type");
        }
        // Reads and deletes are not writes with a body (Okta's DELETE carries a Content-Type).
        assert_eq!(send("GET", Some("text/plain"), "").await, StatusCode::OK);
        assert_eq!(send("DELETE", Some("application/scim+json; charset=utf-8"), "").await, StatusCode::OK);
    }

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
