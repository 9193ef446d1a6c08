//! The SCIM 2.0 protocol core (RFC 7643 / RFC 7644), free of I/O so that it can be tested,
//! fuzzed and shared by the gateway (which parses and validates requests) and user-directory
//! (which applies PATCHes and compiles filters to SQL under its row locks).

pub mod discovery;
pub mod error;
pub mod filter;
pub mod group;
pub mod list;
pub mod patch;
pub mod projection;
pub mod resource;
pub mod schema;
pub mod user;

pub use error::{ERROR_SCHEMA, Error, ScimType, error_body};
pub use group::{GroupDocument, Member, MemberOp};
pub use list::{LIST_RESPONSE_SCHEMA, MAX_PAGE_SIZE, Page, list_response};
pub use patch::{PATCH_OP_SCHEMA, PatchRequest};
pub use user::{ResourceMeta, UserDocument, UserSummary};
