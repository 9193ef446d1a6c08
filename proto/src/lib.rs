//! The contracts between the services: the gRPC API of user-directory (`directory.v1`), the event
//! envelope on JetStream (`events.v1`), and [`error`], the one table that maps each domain error
//! to a gRPC code, an HTTP status and a SCIM `scimType`.

pub mod error;
pub mod time;

/// The gRPC API of user-directory.
pub mod directory {
    pub mod v1 {
        tonic::include_proto!("directory.v1");
    }
}

/// The event envelope and payloads.
pub mod events {
    pub mod v1 {
        tonic::include_proto!("events.v1");
    }
}

pub use error::{DomainError, ErrorKind};

/// The platform roles the tenant's admin can give a user (`SetUserRole`, `UserSnapshot.role`;
/// ADR 0024): every provisioned user is the first.
pub const ROLES: [&str; 3] = ["learner", "manager", "admin"];
