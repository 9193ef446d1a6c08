//! The request log: every SCIM request a tenant's identity provider makes (time, method, path,
//! status, latency, user agent, the ids of the events it caused, and both bodies with secrets
//! redacted) is recorded in the tenant's log in user-directory, so that support can answer "what
//! did Okta send, and what did we say?" and re-drive a failed request.
//!
//! Recording never slows provisioning down: records are queued to a background task that writes
//! them in batches; if the directory cannot keep up, the queue's overflow is dropped (and counted
//! in the log), never the request. The queue and each batch are bounded in bytes as well as in
//! records, so that large bodies (a list page's response is kept up to
//! `REQUEST_LOG_MAX_BODY_BYTES`) bound the memory they hold on both sides and every batch fits
//! the directory's message limit. Each response carries its record's id in `X-Request-Id`.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
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
    queue: mpsc::Sender<Queued>,
    /// The bytes the queue may still take.
    room: Arc<Semaphore>,
    /// Records dropped since the writer last said so.
    dropped: Arc<AtomicU64>,
}

/// A queued record and the bytes of the queue's room it holds until it is written.
struct Queued {
    record: RequestRecord,
    room: OwnedSemaphorePermit,
}

const QUEUE: usize = 10_000;
/// The most the queue holds, in bytes of records.
const QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// A batch is written once it holds this many records or bytes: one gRPC message, well within
/// the directory's decoding limit (16 MiB).
const BATCH: usize = 500;
const BATCH_BYTES: usize = 1024 * 1024;
const LINGER: Duration = Duration::from_millis(200);

impl Recorder {
    /// Starts the task that writes queued records; it ends once every `Recorder` is dropped and
    /// the queue is drained.
    pub fn start(directory: DirectoryClient) -> (Self, tokio::task::JoinHandle<()>) {
        let (recorder, rx) = Recorder::queue(QUEUE_BYTES);
        let dropped = recorder.dropped.clone();
        (recorder, tokio::spawn(write_batches(directory, rx, dropped)))
    }

    fn queue(bytes: usize) -> (Self, mpsc::Receiver<Queued>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let recorder = Recorder { queue, room: Arc::new(Semaphore::new(bytes)), dropped: Arc::default() };
        (recorder, rx)
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
        let room = u32::try_from(size(&record)).ok().and_then(|n| self.room.clone().try_acquire_many_owned(n).ok());
        let queued = match room {
            Some(room) => self.queue.try_send(Queued { record, room }).is_ok(),
            None => false,
        };
        if !queued {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What a record holds in memory, near enough: its text and a fixed part.
fn size(r: &RequestRecord) -> usize {
    let bodies = r.request_body.as_ref().map_or(0, String::len) + r.response_body.as_ref().map_or(0, String::len);
    let ids = r.event_ids.iter().map(String::len).sum::<usize>();
    256 + bodies + ids + r.id.len() + r.tenant_id.len() + r.method.len() + r.path.len() + r.user_agent.len()
}

/// The next batch: what is queued, then what comes within [`LINGER`] (so that a busy gateway
/// writes a few large batches rather than one transaction per request), up to [`BATCH`] records
/// or [`BATCH_BYTES`]. `None` once every sender is gone and the queue is drained.
async fn next_batch(rx: &mut mpsc::Receiver<Queued>) -> Option<Vec<Queued>> {
    let first = rx.recv().await?;
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut bytes = first.room.num_permits();
    let mut batch = vec![first];
    while batch.len() < BATCH && bytes < BATCH_BYTES {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(q)) => {
                bytes += q.room.num_permits();
                batch.push(q);
            }
            _ => break,
        }
    }
    Some(batch)
}

async fn write_batches(mut directory: DirectoryClient, mut rx: mpsc::Receiver<Queued>, dropped: Arc<AtomicU64>) {
    while let Some(batch) = next_batch(&mut rx).await {
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(dropped = lost, "request log queue full: records were dropped");
        }
        // The room is given back once the batch is written (or given up).
        let (records, _room): (Vec<_>, Vec<_>) = batch.into_iter().map(|q| (q.record, q.room)).unzip();
        let request = RecordRequestsRequest { records };
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

/// What the log keeps of the body of a request refused with 429 for the tenant's own load (its
/// rate limit, its cap on requests in flight): nothing (the refusal's own short answer is kept).
/// A tenant over its limits sends the most, and its refused bodies would cost the log's queue,
/// the directory and the database most when they can least afford it; its client sends them
/// again. A transient refusal of ours (a pause, a held deprovision, a database outage or timeout)
/// keeps its body, answered 429 or 503, so that support can re-drive it.
pub const REFUSED_BODY: &str = "(refused with 429: not kept)";

/// Middleware on SCIM routes (inside authentication, outside the limits, so that 429 and 503
/// answers are logged too; the request body of a 429 for the tenant's own load is not kept, see
/// [`REFUSED_BODY`]).
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
    let okta = crate::error::is_okta(request.headers());
    let max = state.config.request_log_max_body_bytes;
    let (parts, body) = request.into_parts();
    let (response, request_body, event_ids) =
        match crate::scim_json::read_limited(body, state.config.max_body_bytes).await {
            Ok(bytes) => {
                let request = Request::from_parts(parts, Body::from(bytes.clone()));
                let (mut response, ids) = EVENT_IDS
                    .scope(RefCell::new(Vec::new()), async {
                        let response = next.run(request).await;
                        (response, EVENT_IDS.with(|ids| ids.take()))
                    })
                    .await;
                crate::error::answer_refusal(&mut response, okta);
                let logged = if crate::error::is_throttled(&response) {
                    (!bytes.is_empty()).then(|| REFUSED_BODY.to_owned())
                } else {
                    redact_body(&bytes, max)
                };
                (response, logged, ids)
            }
            Err(e) => {
                let note = match e.status() {
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE => "(larger than the limit: not kept)",
                    _ => "(not received in full: not kept)",
                };
                (e.into_response(), Some(note.to_owned()), Vec::new())
            }
        };
    // The log keeps what the client is answered: a transient refusal's status for this client.
    let mut response = response;
    crate::error::answer_refusal(&mut response, okta);
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
            (Ok(_), Ok(text)) => Some(cut(text.trim(), max)),
            _ => not_kept(),
        };
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
        return not_kept();
    };
    redact(&mut value);
    Some(cut(&value.to_string(), max))
}

/// A response body as the log keeps it: ours, so it should hold no secret (write-only attributes
/// are never returned), but one that names a password attribute is redacted like a request all
/// the same; cut to `max` bytes.
fn response_text(bytes: &[u8], max: usize) -> Option<String> {
    if contains_ignoring_case(bytes, b"password")
        && let Ok(mut value) = serde_json::from_slice::<Value>(bytes)
    {
        redact(&mut value);
        return Some(cut(&value.to_string(), max));
    }
    let text = String::from_utf8_lossy(bytes);
    (!text.trim().is_empty()).then(|| cut(&text, max))
}

fn contains_ignoring_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Text cut to at most `max` bytes (on a character boundary), the cut marked; a copy of only
/// what is kept, so that a queued record holds no more memory than its text.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    [&text[..at], TRUNCATED].concat()
}

/// Whether an attribute name or PATCH path is a secret: whatever the PATCH engine's own path
/// parser reads as a password ([`scim::patch::targets_password`]: any case, surrounding
/// whitespace, URN-qualified, with a value filter or a sub-attribute; which also covers every key
/// the user document parser takes for the password), and, more broadly, any name whose last
/// segment is `password` (so that what the engine rejects is hidden too) or `authorization`.
fn is_secret(name: &str) -> bool {
    let last = name.rsplit([':', '.']).next().unwrap_or(name).trim();
    scim::patch::targets_password(name)
        || last.eq_ignore_ascii_case("password")
        || name.trim().eq_ignore_ascii_case("authorization")
}

/// Replaces every secret: `password` attributes at any depth, and the value of a PATCH operation
/// whose `path` names one. Keys are matched in any case, as the PATCH engine reads them.
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

/// What of a logged request can be sent again: its body made fit to send (`None`: it had none),
/// or why it cannot be (the API's 409 says it; the console offers no re-drive button). One
/// place for the rules, which the API and the console both follow.
pub fn redrive_body(r: &RequestRecord) -> Result<Option<Value>, &'static str> {
    if !r.path.starts_with("/scim/") {
        return Err("Only SCIM requests can be re-driven; make this change again instead.");
    }
    if r.path.contains("(erased)") {
        // The directory's erasure cut what named the person out of the path (ADR 0025).
        return Err("This request named a user whose data was erased; it is kept without what named them.");
    }
    if r.status < 400 {
        return Err("This request succeeded; only failed requests can be re-driven.");
    }
    if r.status == 412 {
        // Its If-Match is not logged: sent again it would apply to whatever the resource is now.
        return Err(
            "This request failed its If-Match precondition; re-driving it without one would overwrite a newer version.",
        );
    }
    match r.request_body.as_deref() {
        None => Ok(None),
        Some(logged) => {
            redrivable(logged).map(Some).ok_or("The logged body was cut or not kept; this request cannot be re-driven.")
        }
    }
}

/// A logged body made fit to send again: redacted secrets are left out (the directory never
/// stores them anyway). `None` when the body was cut or not kept.
fn redrivable(body: &str) -> Option<Value> {
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

    /// Every spelling of the password the PATCH engine or the user document parser accepts, in
    /// a path and as a key: none reaches the log.
    #[test]
    fn passwords_are_redacted_in_every_spelling_the_engine_accepts() {
        let spellings = [
            "password",
            " password",
            "password ",
            "\tPassword\n",
            "PASSWORD",
            "urn:ietf:params:scim:schemas:core:2.0:User:password",
            " URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER:PASSWORD",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:password",
            "password[value eq \"x\"]",
            "password.value",
        ];
        for (i, spelling) in spellings.iter().enumerate() {
            let secret = format!("S3cret-{i}");
            let bodies = [
                json!({"Operations": [{"op": "replace", "path": spelling, "value": secret}]}),
                json!({"Operations": [{"OP": "Replace", "PATH": spelling, "VALUE": {"value": secret}}]}),
                json!({"Operations": [{"op": "replace", "value": {*spelling: secret, "active": false}}]}),
                json!({"Operations": [{"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                    "value": {*spelling: secret}}]}),
                json!({"userName": "a", *spelling: secret}),
                json!({"userName": "a", "urn:ietf:params:scim:schemas:core:2.0:User": {*spelling: secret}}),
            ];
            for body in bodies {
                let logged = redact_body(body.to_string().as_bytes(), 65536).unwrap();
                assert!(!logged.contains(&secret), "{spelling:?}: {logged}");
                assert!(logged.contains(REDACTED), "{logged}");
            }
        }
        // The engine's own reading: a path it trims is the password, as is a key it parses.
        for spelling in spellings {
            assert!(is_secret(spelling), "{spelling:?}");
        }
        assert!(!is_secret("name.givenName") && !is_secret("passwords") && !is_secret("userName"));
    }

    fn with_body(bytes: usize) -> RequestRecord {
        RequestRecord { id: Uuid::now_v7().to_string(), response_body: Some("x".repeat(bytes)), ..Default::default() }
    }

    #[tokio::test]
    async fn the_queue_holds_a_bounded_number_of_bytes_and_counts_what_it_drops() {
        let (recorder, mut rx) = Recorder::queue(3 * size(&with_body(700)));
        for _ in 0..4 {
            recorder.record(with_body(700));
        }
        assert_eq!(recorder.dropped.load(Ordering::Relaxed), 1, "three fit, the fourth does not");
        // A written record gives its room back.
        drop(rx.recv().await.unwrap());
        recorder.record(with_body(700));
        assert_eq!(recorder.dropped.load(Ordering::Relaxed), 1);
        recorder.record(with_body(10));
        assert_eq!(recorder.dropped.load(Ordering::Relaxed), 2, "no room left");
        drop(recorder);
        let mut left = 0;
        while rx.recv().await.is_some() {
            left += 1;
        }
        assert_eq!(left, 3);
    }

    #[tokio::test]
    async fn a_batch_ends_at_its_record_or_byte_bound() {
        let (recorder, mut rx) = Recorder::queue(QUEUE_BYTES);
        for _ in 0..5 {
            recorder.record(with_body(300 * 1024));
        }
        assert_eq!(next_batch(&mut rx).await.unwrap().len(), 4, "four reach a MiB");
        assert_eq!(next_batch(&mut rx).await.unwrap().len(), 1);
        for _ in 0..600 {
            recorder.record(with_body(10));
        }
        assert_eq!(next_batch(&mut rx).await.unwrap().len(), BATCH);
        assert_eq!(next_batch(&mut rx).await.unwrap().len(), 100);
        assert_eq!(recorder.dropped.load(Ordering::Relaxed), 0);
        drop(recorder);
        assert!(next_batch(&mut rx).await.is_none());
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
