//! Every error leaves the gateway as a SCIM error body (`urn:…:Error`, `status` as a string, a
//! `detail`), with the HTTP status the domain error table in `proto::error` assigns.
//!
//! A transient refusal (the request was not carried out and may be sent again later: the
//! directory unreachable or gone mid-call, a database outage or timeout, a paused tenant, a
//! deprovision held by the brake) always carries an integer `Retry-After`, and its status depends
//! on who asks: Okta retries only a 429 (after `Retry-After`, doubling the wait, 10 times) and
//! makes anything else, a 503 included, a failed task that the customer's admin must find and
//! retry by hand, so Okta is answered 429; every other client 503. The decision is made in one
//! place, [`answer_refusal`], which [`refusals`] applies to every response of the router (and the
//! request log to what it records): a handler only says "transient" by returning an [`ApiError`]
//! of a transient kind.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use proto::{DomainError, ErrorKind};

use crate::scim_json::SCIM_CONTENT_TYPE;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
    www_authenticate: bool,
    /// Seconds for `Retry-After` (429 and 503).
    retry_after: Option<u32>,
    /// A transient refusal: its status is decided by [`answer_refusal`].
    transient: bool,
    /// Refused for the caller's own load (a rate limit, the cap on requests in flight, the
    /// failed-authentication budget): see [`is_throttled`].
    throttled: bool,
}

/// Marks a response refused for the caller's own load.
#[derive(Debug, Clone, Copy)]
struct Throttled;

/// Whether a response refused the request for the caller's own load (429 from a limit), as
/// opposed to a transient refusal of ours (which may be answered 429 too, to Okta).
pub fn is_throttled(response: &Response) -> bool {
    response.extensions().get::<Throttled>().is_some()
}

/// Marks a response as a transient refusal until [`answer_refusal`] gives it the status for its
/// client.
#[derive(Debug, Clone)]
struct Refusal {
    detail: String,
    retry_after: u32,
}

impl ApiError {
    /// A response for a status outside the domain table (405, 413, 415, route not found).
    pub fn http(status: StatusCode, detail: &str) -> Self {
        ApiError {
            status,
            body: scim::error_body(status.as_u16(), None, detail),
            www_authenticate: false,
            retry_after: None,
            transient: false,
            throttled: false,
        }
    }

    /// 429: the tenant (or, for failed authentication, the caller) must wait this long.
    pub fn rate_limited(detail: &str, wait: std::time::Duration) -> Self {
        let mut e = ApiError::from(DomainError::new(ErrorKind::RateLimited, detail));
        // Whole seconds, rounded up: Okta reads only an integer, and waits 5 minutes without one.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        e.retry_after = Some(u32::try_from(secs.max(1)).unwrap_or(u32::MAX));
        e.throttled = true;
        e
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What the error says, for a person.
    pub fn detail(&self) -> &str {
        self.body.get("detail").and_then(serde_json::Value::as_str).unwrap_or("")
    }

    /// 401 with the challenges for the schemes we accept.
    pub fn unauthenticated(detail: &str) -> Self {
        let mut e = ApiError::from(DomainError::new(ErrorKind::Unauthenticated, detail));
        e.www_authenticate = true;
        e
    }
}

impl ApiError {
    /// The `scimType` of this error, if it has one.
    pub fn scim_type(&self) -> Option<scim::ScimType> {
        self.body.get("scimType").and_then(|v| v.as_str()).and_then(scim::ScimType::parse)
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let status = StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError {
            status,
            body: e.scim_body(),
            www_authenticate: e.kind == ErrorKind::Unauthenticated,
            retry_after: e.kind.retry_after_secs(),
            transient: e.kind.is_transient_refusal(),
            throttled: false,
        }
    }
}

impl From<scim::Error> for ApiError {
    fn from(e: scim::Error) -> Self {
        ApiError::from(DomainError::from(e))
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        let e = DomainError::from_status(&s);
        if s.code() == tonic::Code::Unauthenticated && e.kind == ErrorKind::Unavailable {
            tracing::error!(
                "user-directory refuses this gateway's DIRECTORY_TOKEN (or certificate): answered as unavailable"
            );
        } else if matches!(e.kind, ErrorKind::Internal | ErrorKind::Unavailable) {
            tracing::warn!(code = ?s.code(), message = s.message(), "directory call failed");
        }
        ApiError::from(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
        if self.www_authenticate {
            headers
                .append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"SCIM\", charset=\"UTF-8\""));
            headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"SCIM\""));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.throttled {
            response.extensions_mut().insert(Throttled);
        }
        if let (true, Some(retry_after)) = (self.transient, self.retry_after) {
            let detail = self.detail().to_owned();
            response.extensions_mut().insert(Refusal { detail, retry_after });
        }
        response
    }
}

/// Whether a request comes from Okta's SCIM client (`User-Agent: Okta SCIM Client 1.0.0`): its
/// user agent starts with `Okta`, in any case (a public codebase matches `Okta SCIM client`, and
/// nothing else calls itself Okta; a 429 with `Retry-After` is a correct answer to anyone).
pub fn is_okta(headers: &HeaderMap) -> bool {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.as_bytes().get(..4))
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"okta"))
}

/// The status of a transient refusal: 429 to Okta (the only status it retries by itself), 503
/// to everyone else.
pub fn refusal_status(okta: bool) -> StatusCode {
    if okta { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::SERVICE_UNAVAILABLE }
}

/// Gives a transient refusal the status for its client (see [`refusal_status`]), with the SCIM
/// body to match and an integer `Retry-After`. Any other response is left as it is; a refusal
/// is answered once (the mark is taken off), so applying this twice changes nothing.
pub fn answer_refusal(response: &mut Response, okta: bool) {
    let Some(refusal) = response.extensions_mut().remove::<Refusal>() else {
        return;
    };
    let status = refusal_status(okta);
    *response.status_mut() = status;
    let body = scim::error_body(status.as_u16(), None, &refusal.detail).to_string();
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
    headers.insert(header::RETRY_AFTER, HeaderValue::from(refusal.retry_after.max(1)));
    *response.body_mut() = axum::body::Body::from(body);
}

/// Middleware (on the whole router): every transient refusal gets the status for its client.
pub async fn refusals(request: Request, next: Next) -> Response {
    let okta = is_okta(request.headers());
    let mut response = next.run(request).await;
    answer_refusal(&mut response, okta);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(user_agent: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::USER_AGENT, HeaderValue::from_str(user_agent).unwrap());
        h
    }

    async fn answered(e: ApiError, user_agent: &str) -> (StatusCode, Option<String>, serde_json::Value) {
        let mut response = e.into_response();
        answer_refusal(&mut response, is_okta(&headers(user_agent)));
        let retry_after = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let status = StatusCode::from_u16(
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["status"].as_str().unwrap().parse().unwrap(),
        )
        .unwrap();
        (status, retry_after, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn okta_is_recognised_by_its_user_agent_in_any_case() {
        assert!(is_okta(&headers("Okta SCIM Client 1.0.0")));
        assert!(is_okta(&headers("okta SCIM client")));
        assert!(!is_okta(&headers("curl/8.5")));
        assert!(!is_okta(&headers("Oka")));
        assert!(!is_okta(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn every_transient_refusal_is_429_to_okta_and_503_to_others_with_an_integer_retry_after() {
        let transient = [
            (DomainError::unavailable(), "5"),
            (DomainError::new(ErrorKind::Paused, "paused"), "300"),
            (DomainError::new(ErrorKind::Held, "held"), "300"),
            (DomainError::from_status(&tonic::Status::unknown("connection reset")), "5"),
        ];
        for (e, secs) in transient {
            let (status, retry_after, body) = answered(ApiError::from(e.clone()), "Okta SCIM Client 1.0.0").await;
            assert_eq!((status, retry_after.as_deref()), (StatusCode::TOO_MANY_REQUESTS, Some(secs)), "{e:?}");
            assert_eq!(body["detail"], e.detail);
            let (status, retry_after, _) = answered(ApiError::from(e.clone()), "curl/8.5").await;
            assert_eq!((status, retry_after.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some(secs)), "{e:?}");
        }
        // Not transient: unchanged for Okta.
        let (status, retry_after, _) = answered(ApiError::from(DomainError::internal()), "Okta SCIM Client").await;
        assert_eq!((status, retry_after), (StatusCode::INTERNAL_SERVER_ERROR, None));
        let (status, _, _) = answered(ApiError::from(DomainError::not_found("gone")), "Okta SCIM Client").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
