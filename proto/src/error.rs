//! Domain errors and the one table that maps each to a gRPC code (between the services), an HTTP
//! status and a SCIM `scimType` (to the client). user-directory raises them, sends them as a
//! `tonic::Status` carrying the kind in metadata, and the gateway turns the status back into the
//! same kind and answers with the SCIM error body. Adding a kind means adding one row here.

use scim::ScimType;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// The metadata key that carries the error kind inside a `tonic::Status`.
const KIND_METADATA: &str = "x-error-kind";

/// What tonic (0.14, `codec/decode.rs`) says, as an `INTERNAL` without a source, of a message
/// the stream ended in the middle of: the answer was cut short (a stream reset with `NO_ERROR` or
/// `CANCEL` reaches tonic as a clean end), not refused. `tests/tests/attacks_transient.rs` pins it
/// with a directory whose answers are cut short.
const CUT_SHORT: &str = "Unexpected EOF decoding stream.";

/// What went wrong, in the domain's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Uniqueness,
    InvalidValue,
    InvalidFilter,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    Mutability,
    TooMany,
    VersionMismatch,
    Unauthenticated,
    /// Authenticated, but the credential may not do this (a `scim` key on the console).
    Forbidden,
    RateLimited,
    /// The tenant's provisioning is paused by an operator.
    Paused,
    /// Held by the mass-deprovision brake until an operator releases or rejects it.
    Held,
    Unavailable,
    Internal,
}

/// One row of the table.
struct Row {
    kind: ErrorKind,
    name: &'static str,
    code: Code,
    http: u16,
    scim_type: Option<ScimType>,
    /// The `Retry-After` (seconds) the client is given, for the kinds worth retrying later.
    retry_after: Option<u32>,
}

const fn row(kind: ErrorKind, name: &'static str, code: Code, http: u16, scim_type: Option<ScimType>) -> Row {
    Row { kind, name, code, http, scim_type, retry_after: None }
}

const fn retry(r: Row, after_secs: u32) -> Row {
    Row { retry_after: Some(after_secs), ..r }
}

/// The table. The first row with a given gRPC code is the kind assumed for a status that carries
/// no kind (one raised by tonic itself, such as UNAVAILABLE when the directory cannot be reached).
const TABLE: &[Row] = &[
    row(ErrorKind::NotFound, "not_found", Code::NotFound, 404, None),
    row(ErrorKind::Uniqueness, "uniqueness", Code::AlreadyExists, 409, Some(ScimType::Uniqueness)),
    row(ErrorKind::InvalidValue, "invalid_value", Code::InvalidArgument, 400, Some(ScimType::InvalidValue)),
    row(ErrorKind::InvalidFilter, "invalid_filter", Code::InvalidArgument, 400, Some(ScimType::InvalidFilter)),
    row(ErrorKind::InvalidSyntax, "invalid_syntax", Code::InvalidArgument, 400, Some(ScimType::InvalidSyntax)),
    row(ErrorKind::InvalidPath, "invalid_path", Code::InvalidArgument, 400, Some(ScimType::InvalidPath)),
    row(ErrorKind::NoTarget, "no_target", Code::InvalidArgument, 400, Some(ScimType::NoTarget)),
    row(ErrorKind::Mutability, "mutability", Code::InvalidArgument, 400, Some(ScimType::Mutability)),
    row(ErrorKind::TooMany, "too_many", Code::InvalidArgument, 400, Some(ScimType::TooMany)),
    row(ErrorKind::VersionMismatch, "version_mismatch", Code::FailedPrecondition, 412, None),
    row(ErrorKind::Unauthenticated, "unauthenticated", Code::Unauthenticated, 401, None),
    row(ErrorKind::Forbidden, "forbidden", Code::PermissionDenied, 403, None),
    // The gateway computes the real wait for a rate limit; 1 s is the floor.
    retry(row(ErrorKind::RateLimited, "rate_limited", Code::ResourceExhausted, 429, None), 1),
    // The directory unreachable or gone mid-call, the database down or timed out. 5 s: a
    // restarted directory is back within that; Okta doubles the wait on each repeat, so its 10
    // attempts cover about 85 minutes (5 s + 10 s + ... + 2560 s) of a longer outage.
    retry(row(ErrorKind::Unavailable, "unavailable", Code::Unavailable, 503, None), 5),
    // An operator has to act: retrying every few seconds would only add noise. Answered 429 to
    // Okta like every transient refusal (see `is_transient_refusal`).
    retry(row(ErrorKind::Paused, "paused", Code::Unavailable, 503, None), 300),
    retry(row(ErrorKind::Held, "held", Code::Unavailable, 503, None), 300),
    row(ErrorKind::Internal, "internal", Code::Internal, 500, None),
];

impl ErrorKind {
    fn row(self) -> &'static Row {
        // Every kind has a row: the table test below checks it.
        TABLE.iter().find(|r| r.kind == self).unwrap_or(&TABLE[TABLE.len() - 1])
    }

    /// The gRPC code between services.
    pub fn grpc_code(self) -> Code {
        self.row().code
    }

    /// The HTTP status for the client.
    pub fn http_status(self) -> u16 {
        self.row().http
    }

    /// The `Retry-After` seconds to answer with, for kinds a client should retry later.
    pub fn retry_after_secs(self) -> Option<u32> {
        self.row().retry_after
    }

    /// Whether this is a transient refusal: nothing was done (or, for a call cut off mid-way,
    /// nothing is known to be done) and the same request may be sent again after `Retry-After`.
    /// The gateway answers these 429 to Okta (the only status Okta retries by itself) and 503 to
    /// other clients. A rate limit is a 429 to everyone already.
    pub fn is_transient_refusal(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Paused | ErrorKind::Held)
    }

    /// The SCIM `scimType`, where SCIM defines one.
    pub fn scim_type(self) -> Option<ScimType> {
        self.row().scim_type
    }

    fn from_scim_type(t: ScimType) -> ErrorKind {
        TABLE.iter().find(|r| r.scim_type == Some(t)).map_or(ErrorKind::InvalidValue, |r| r.kind)
    }
}

/// A domain error: a kind and a detail written for whoever reads it (for client errors, the
/// customer's administrator; for server errors, a generic sentence: internals stay in the logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {detail}")]
pub struct DomainError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl DomainError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        DomainError { kind, detail: detail.into() }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        DomainError::new(ErrorKind::NotFound, detail)
    }

    pub fn internal() -> Self {
        DomainError::new(ErrorKind::Internal, "The service failed to process the request. It is safe to retry.")
    }

    pub fn unavailable() -> Self {
        DomainError::new(ErrorKind::Unavailable, "The service is temporarily unavailable. Retry shortly.")
    }

    /// The status user-directory answers with.
    pub fn to_status(&self) -> Status {
        let mut status = Status::new(self.kind.grpc_code(), self.detail.clone());
        status.metadata_mut().insert(KIND_METADATA, MetadataValue::from_static(self.kind.row().name));
        status
    }

    /// The domain error a status stands for. A status without a kind was not chosen by
    /// user-directory (every error it answers carries its kind, see [`DomainError::to_status`]):
    /// it maps through its code, and its message is not shown to clients.
    ///
    /// Without a kind, `UNAVAILABLE`, `DEADLINE_EXCEEDED` and `CANCELLED` (the directory cannot be
    /// reached, or the call took too long) and `UNKNOWN` (what tonic says when it cannot tell: an
    /// I/O error or an h2 error without a reason on a connection that broke mid-call, a response
    /// that ended without a status) are [`ErrorKind::Unavailable`]. So is an `INTERNAL` that this
    /// side made from a transport error (an h2 protocol error or reset of a dying connection: the
    /// status then has the error as its `source`), or tonic's word for a message the stream
    /// ended in the middle of ([`CUT_SHORT`]). An `INTERNAL` the directory answered on the wire
    /// without a kind (tonic's own, such as a message it could not decode) stays
    /// [`ErrorKind::Internal`], as does the directory's own [`DomainError::internal`].
    pub fn from_status(status: &Status) -> Self {
        let kind = status
            .metadata()
            .get(KIND_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|name| TABLE.iter().find(|r| r.name == name))
            .map(|r| r.kind);
        match kind {
            Some(kind) => DomainError::new(kind, status.message()),
            None => match status.code() {
                // An untagged UNAUTHENTICATED is the directory refusing this caller's own
                // credential (its DIRECTORY_TOKEN; the tagged one is the client's key): our
                // configuration, not the client's, and transient while a rotation rolls out.
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Unknown
                | Code::Unauthenticated => DomainError::unavailable(),
                Code::Internal if std::error::Error::source(status).is_some() || status.message() == CUT_SHORT => {
                    DomainError::unavailable()
                }
                _ => DomainError::internal(),
            },
        }
    }

    /// Whether the directory refused the credential a call carried for a client (a key, a
    /// session, an operator token): a tagged UNAUTHENTICATED. An untagged one is the directory
    /// refusing the calling service itself, which is not the client's failure.
    pub fn refuses_client(status: &Status) -> bool {
        status.code() == Code::Unauthenticated && DomainError::from_status(status).kind == ErrorKind::Unauthenticated
    }

    /// The SCIM error body for the client: `{"schemas":[Error],"status":…,"scimType":…,"detail":…}`.
    pub fn scim_body(&self) -> serde_json::Value {
        scim::error_body(self.kind.http_status(), self.kind.scim_type(), &self.detail)
    }
}

impl From<scim::Error> for DomainError {
    fn from(e: scim::Error) -> Self {
        DomainError::new(ErrorKind::from_scim_type(e.scim_type), e.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorKind; 17] = [
        ErrorKind::NotFound,
        ErrorKind::Uniqueness,
        ErrorKind::InvalidValue,
        ErrorKind::InvalidFilter,
        ErrorKind::InvalidSyntax,
        ErrorKind::InvalidPath,
        ErrorKind::NoTarget,
        ErrorKind::Mutability,
        ErrorKind::TooMany,
        ErrorKind::VersionMismatch,
        ErrorKind::Unauthenticated,
        ErrorKind::Forbidden,
        ErrorKind::RateLimited,
        ErrorKind::Paused,
        ErrorKind::Held,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ];

    #[test]
    fn every_kind_has_exactly_one_row_and_survives_the_wire() {
        assert_eq!(TABLE.len(), ALL.len());
        for kind in ALL {
            assert_eq!(TABLE.iter().filter(|r| r.kind == kind).count(), 1, "{kind:?}");
            let e = DomainError::new(kind, "detail");
            assert_eq!(DomainError::from_status(&e.to_status()), e);
            if kind.is_transient_refusal() {
                assert!(kind.retry_after_secs().is_some_and(|s| s >= 1), "{kind:?} names when to retry");
            }
        }
    }

    #[test]
    fn scim_errors_keep_their_type() {
        for t in ScimType::ALL {
            let kind = DomainError::from(scim::Error::new(t, "x")).kind;
            if let Some(mapped) = kind.scim_type() {
                assert!(mapped == t || !TABLE.iter().any(|r| r.scim_type == Some(t)), "{t:?}");
            }
        }
        let e = DomainError::from(scim::Error::invalid_filter("bad"));
        assert_eq!((e.kind.http_status(), e.kind.scim_type()), (400, Some(ScimType::InvalidFilter)));
    }

    #[test]
    fn transport_failures_are_unavailable_and_hide_their_message() {
        let e = DomainError::from_status(&Status::unavailable("tcp connect error 127.0.0.1:50051"));
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(!e.detail.contains("127.0.0.1"));
    }

    #[test]
    fn a_call_that_broke_mid_way_is_unavailable_but_a_deliberate_internal_error_is_not() {
        // What tonic makes of a connection that broke mid-call: UNKNOWN (an I/O error, an h2
        // error without a reason), or INTERNAL from an h2 reset, with the error as its source.
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let broken = Status::from_error(Box::new(reset));
        assert_eq!(broken.code(), Code::Unknown);
        assert_eq!(DomainError::from_status(&broken), DomainError::unavailable());
        let missing_status = Status::unknown("protocol error: missing grpc-status trailer");
        assert_eq!(DomainError::from_status(&missing_status).kind, ErrorKind::Unavailable);
        let mut h2_reset = Status::internal("h2 protocol error: stream error received: unexpected internal error");
        h2_reset.set_source(std::sync::Arc::new(std::io::Error::other("reset")));
        assert_eq!(DomainError::from_status(&h2_reset).kind, ErrorKind::Unavailable);
        assert_eq!(DomainError::from_status(&Status::internal(CUT_SHORT)).kind, ErrorKind::Unavailable);
        // The directory's own INTERNAL carries its kind and stays a server error (500).
        assert_eq!(DomainError::from_status(&DomainError::internal().to_status()), DomainError::internal());
        // So does an INTERNAL the directory's tonic answered on the wire (no kind, no source).
        assert_eq!(DomainError::from_status(&Status::internal("failed to decode")).kind, ErrorKind::Internal);
        assert_eq!(DomainError::from_status(&Status::unimplemented("no such method")).kind, ErrorKind::Internal);
    }
}
