//! The request log: every SCIM request a tenant's identity provider makes (time, method, path,
//! status, latency, user agent, the ids of the events it caused, and both bodies with secrets
//! redacted) is recorded in the tenant's log in user-directory, so that support can answer "what
//! did Okta send, and what did we say?" and re-drive a failed request.
//!
//! Recording never slows provisioning down: records are queued to a background task that writes
//! them in batches; if the directory cannot keep up, the queue's overflow is dropped (and logged),
//! never the request. Each response carries its record's id in `X-Request-Id`.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use proto::directory::v1::{RecordRequestsRequest, RequestRecord};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::AppState;
use crate::auth::TenantCtx;
use crate::directory::{DirectoryClient, EVENT_IDS};

/// What replaces a secret in a logged body.
pub const REDACTED: &str = "[redacted]";
/// What ends a body cut to the size the log keeps.
pub const TRUNCATED: &str = "…[truncated]";

/// The user agent of an operator's console requests in the request log.
pub const OPERATOR_AGENT: &str = "console (operator)";

/// The queue to the recorder task.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<RequestRecord>,
}

const QUEUE: usize = 10_000;
const BATCH: usize = 500;
const LINGER: Duration = Duration::from_millis(200);

impl Recorder {
    /// Starts the task that writes queued records; it ends once every `Recorder` is dropped and
    /// the queue is drained.
    pub fn start(directory: DirectoryClient) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        (Recorder { queue }, tokio::spawn(write_batches(directory, rx)))
    }

    /// Records an operator's console request in the tenant's log (method, path and outcome; no
    /// bodies), so that the customer sees what our support looked at and did.
    pub fn audit(&self, tenant_id: &str, method: &str, path: &str, status: u16, took: Duration) {
        self.record(RequestRecord {
            id: Uuid::now_v7().to_string(),
            tenant_id: tenant_id.to_owned(),
            at: Some(proto::time::to_timestamp(OffsetDateTime::now_utc())),
            method: method.to_owned(),
            path: path.to_owned(),
            status: u32::from(status),
            latency_ms: took.as_secs_f64() * 1000.0,
            user_agent: OPERATOR_AGENT.to_owned(),
            ..Default::default()
        });
    }

    fn record(&self, record: RequestRecord) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(record) {
            tracing::warn!("request log queue full: a record was dropped");
        }
    }
}

async fn write_batches(mut directory: DirectoryClient, mut rx: mpsc::Receiver<RequestRecord>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // Linger a moment, so that a busy gateway writes a few large batches rather than one
        // transaction per request.
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        let request = RecordRequestsRequest { records: std::mem::take(&mut batch) };
        for attempt in 1..=3 {
            match directory.record_requests(request.clone()).await {
                Ok(_) => break,
                Err(e) if attempt < 3 => {
                    tracing::warn!(error = %e.message(), attempt, "writing the request log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e.message(), dropped = request.records.len(), "writing the request log failed");
                }
            }
        }
    }
}

/// Middleware on SCIM routes (inside authentication, outside the limits, so that 429 and 503
/// answers are logged too).
pub async fn record(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<TenantCtx>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(recorder) = state.recorder.clone() else {
        return next.run(request).await;
    };
    let started = Instant::now();
    let at = OffsetDateTime::now_utc();
    let method = request.method().to_string();
    let path = request.uri().path_and_query().map_or_else(|| request.uri().path().to_owned(), |p| p.to_string());
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(512).collect())
        .unwrap_or_default();
    let max = state.config.request_log_max_body_bytes;
    let (parts, body) = request.into_parts();
    let (response, request_body, event_ids) =
        match crate::scim_json::read_limited(body, state.config.max_body_bytes).await {
            Ok(bytes) => {
                let logged = redact_body(&bytes, max);
                let request = Request::from_parts(parts, Body::from(bytes));
                let (response, ids) = EVENT_IDS
                    .scope(RefCell::new(Vec::new()), async {
                        let response = next.run(request).await;
                        (response, EVENT_IDS.with(|ids| ids.take()))
                    })
                    .await;
                (response, logged, ids)
            }
            Err(e) => (e.into_response(), Some("(larger than the limit: not kept)".to_owned()), Vec::new()),
        };
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let id = Uuid::now_v7();
    recorder.record(RequestRecord {
        id: id.to_string(),
        tenant_id: ctx.tenant_id.clone(),
        at: Some(proto::time::to_timestamp(at)),
        method,
        path,
        status: u32::from(parts.status.as_u16()),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        user_agent,
        event_ids,
        request_body,
        response_body: response_text(&bytes, max),
    });
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        parts.headers.insert("x-request-id", v);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// A body as the log keeps it: JSON with secrets redacted, cut to `max` bytes; nothing for an
/// empty body; a note for anything that is not JSON (which could hide a secret in any form).
/// Only a body that could name a secret (the word, or a `\u` escape that could spell it) is
/// rewritten; any other is kept as sent.
pub fn redact_body(bytes: &[u8], max: usize) -> Option<String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let not_kept = || Some(format!("({} bytes, not JSON: not kept)", bytes.len()));
    let may_hold_secret = contains_ignoring_case(bytes, b"password") || contains_ignoring_case(bytes, b"\\u");
    if !may_hold_secret {
        return match (serde_json::from_slice::<serde::de::IgnoredAny>(bytes), std::str::from_utf8(bytes)) {
            (Ok(_), Ok(text)) => Some(cut(text.trim().to_owned(), max)),
            _ => not_kept(),
        };
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
        return not_kept();
    };
    redact(&mut value);
    Some(cut(value.to_string(), max))
}

/// A response body as the log keeps it: ours, so it should hold no secret (write-only attributes
/// are never returned), but one that names a password attribute is redacted like a request all
/// the same; cut to `max` bytes.
fn response_text(bytes: &[u8], max: usize) -> Option<String> {
    if contains_ignoring_case(bytes, b"password")
        && let Ok(mut value) = serde_json::from_slice::<Value>(bytes)
    {
        redact(&mut value);
        return Some(cut(value.to_string(), max));
    }
    let text = String::from_utf8_lossy(bytes);
    (!text.trim().is_empty()).then(|| cut(text.into_owned(), max))
}

fn contains_ignoring_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Cuts text to at most `max` bytes (on a character boundary), marking the cut.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
        text.push_str(TRUNCATED);
    }
    text
}

/// Whether an attribute name (possibly URN-qualified, any case) is a secret.
fn is_secret(name: &str) -> bool {
    let last = name.rsplit([':', '.']).next().unwrap_or(name);
    last.eq_ignore_ascii_case("password") || name.eq_ignore_ascii_case("authorization")
}

/// Replaces every secret: `password` attributes at any depth, and the value of a PATCH operation
/// whose `path` names one.
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let path_is_secret =
                map.iter().any(|(k, v)| k.eq_ignore_ascii_case("path") && v.as_str().is_some_and(is_secret));
            for (k, v) in map.iter_mut() {
                if is_secret(k) || (path_is_secret && k.eq_ignore_ascii_case("value")) {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// A logged body made fit to send again: redacted secrets are left out (the directory never
/// stores them anyway). `None` when the body was cut or not kept.
pub fn redrivable(body: &str) -> Option<Value> {
    let mut value: Value = serde_json::from_str(body).ok()?;
    strip_redacted(&mut value);
    Some(value)
}

fn strip_redacted(value: &mut Value) {
    let redacted = |v: &Value| v.as_str() == Some(REDACTED);
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !redacted(v));
            map.values_mut().for_each(strip_redacted);
        }
        Value::Array(items) => {
            items.retain(|v| !v.as_object().is_some_and(|o| o.values().any(redacted)));
            items.iter_mut().for_each(strip_redacted);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn passwords_are_redacted_wherever_okta_puts_them() {
        let create = json!({"userName": "a@b.c", "password": "hunter2",
            "urn:ietf:params:scim:schemas:core:2.0:User:password": "x", "name": {"givenName": "A"}});
        let patch = json!({"Operations": [
            {"op": "replace", "value": {"password": "p1", "active": false}},
            {"op": "replace", "path": "password", "value": "p2"},
            {"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:password", "value": "p3"},
            {"op": "replace", "path": "name.givenName", "value": "Bo"}]});
        for body in [create, patch] {
            let logged = redact_body(body.to_string().as_bytes(), 65536).unwrap();
            for secret in ["hunter2", "\"x\"", "p1", "p2", "p3"] {
                assert!(!logged.contains(secret), "{secret} in {logged}");
            }
            assert!(logged.contains(REDACTED));
        }
        let logged = redact_body(b"password=hunter2", 65536).unwrap();
        assert!(!logged.contains("hunter2"));
        // A key spelled with escapes is still the key.
        let escaped = br#"{"\u0070assword": "hunter2", "userName": "a"}"#;
        assert!(!redact_body(escaped, 65536).unwrap().contains("hunter2"));
        // Bodies without secrets are kept as sent.
        assert_eq!(redact_body(br#"{"userName": "a"}"#, 65536).unwrap(), r#"{"userName": "a"}"#);
        assert_eq!(redact_body(b"user=a", 65536).unwrap(), "(6 bytes, not JSON: not kept)");
    }

    #[test]
    fn bodies_are_cut_and_cut_bodies_cannot_be_redriven() {
        let body = json!({"userName": "x".repeat(100)}).to_string();
        let logged = redact_body(body.as_bytes(), 40).unwrap();
        assert!(logged.ends_with(TRUNCATED) && logged.len() < 60);
        assert!(redrivable(&logged).is_none());
        assert_eq!(redact_body(b"  ", 40), None);
    }

    #[test]
    fn redriven_bodies_leave_secrets_out() {
        let patch = json!({"Operations": [
            {"op": "replace", "path": "password", "value": "p"},
            {"op": "replace", "value": {"password": "p", "active": false}}]});
        let logged = redact_body(patch.to_string().as_bytes(), 65536).unwrap();
        assert_eq!(
            redrivable(&logged).unwrap(),
            json!({"Operations": [{"op": "replace", "value": {"active": false}}]})
        );
    }
}
