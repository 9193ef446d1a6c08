//! Every error leaves the gateway as a SCIM error body (`urn:…:Error`, `status` as a string, a
//! `detail`), with the HTTP status the domain error table in `proto::error` assigns.

use axum::http::{HeaderValue, StatusCode, header};
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
}

impl ApiError {
    /// A response for a status outside the domain table (405, 413, 415, route not found).
    pub fn http(status: StatusCode, detail: &str) -> Self {
        ApiError {
            status,
            body: scim::error_body(status.as_u16(), None, detail),
            www_authenticate: false,
            retry_after: None,
        }
    }

    /// 429: the tenant (or, for failed authentication, the caller) must wait this long.
    pub fn rate_limited(detail: &str, wait: std::time::Duration) -> Self {
        let mut e = ApiError::from(DomainError::new(ErrorKind::RateLimited, detail));
        // Whole seconds, rounded up: Okta reads only an integer, and waits 5 minutes without one.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        e.retry_after = Some(u32::try_from(secs.max(1)).unwrap_or(u32::MAX));
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
        if matches!(e.kind, ErrorKind::Internal | ErrorKind::Unavailable) {
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
        response
    }
}
