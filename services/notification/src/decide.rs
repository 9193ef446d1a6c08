//! The rules: what, if anything, to send for an event. Pure, so that every rule is a unit test.
//!
//! Provisioning is silent: a user an identity provider creates gets no welcome email (the first
//! email such a user ever receives is for the first content assigned to them). Profile updates,
//! archiving and restoring send nothing.

use proto::events::v1::envelope::Payload;
use proto::events::v1::{Envelope, Source};

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Suppressed,
    NoEmail,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Suppressed => "suppressed",
            Outcome::NoEmail => "no_email",
        }
    }
}

/// A decision and its reason (a stable code, recorded and shown to support).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason: &'static str,
}

/// Decides for one event.
pub fn decide(envelope: &Envelope) -> Decision {
    let source = Source::try_from(envelope.source).unwrap_or(Source::Unspecified);
    match (&envelope.payload, source) {
        (Some(Payload::UserCreated(_)), Source::Scim) => {
            Decision { outcome: Outcome::Suppressed, reason: "welcome_suppressed_scim_provisioned" }
        }
        (Some(Payload::UserCreated(_)), Source::Import) => {
            Decision { outcome: Outcome::Suppressed, reason: "welcome_suppressed_imported" }
        }
        (Some(Payload::UserCreated(_)), _) => {
            Decision { outcome: Outcome::NoEmail, reason: "welcome_email_not_enabled" }
        }
        (Some(Payload::UserUpdated(_)), _) => {
            Decision { outcome: Outcome::NoEmail, reason: "profile_update_sends_nothing" }
        }
        (Some(Payload::UserDeactivated(_)), _) => {
            Decision { outcome: Outcome::NoEmail, reason: "archive_sends_nothing" }
        }
        (Some(Payload::UserReactivated(_)), _) => {
            Decision { outcome: Outcome::NoEmail, reason: "restore_sends_nothing" }
        }
        (Some(Payload::UserLinked(_)), _) => {
            Decision { outcome: Outcome::Suppressed, reason: "welcome_suppressed_linked_by_scim" }
        }
        (Some(Payload::UserDeleted(_)), _) => Decision { outcome: Outcome::NoEmail, reason: "delete_sends_nothing" },
        (
            Some(
                Payload::GroupCreated(_)
                | Payload::GroupUpdated(_)
                | Payload::GroupDeleted(_)
                | Payload::GroupMembersAdded(_)
                | Payload::GroupMembersRemoved(_),
            ),
            _,
        ) => Decision { outcome: Outcome::NoEmail, reason: "groups_send_nothing" },
        (None, _) => Decision { outcome: Outcome::NoEmail, reason: "unknown_event" },
    }
}

#[cfg(test)]
mod tests {
    use proto::events::v1::{UserCreated, UserDeactivated, UserReactivated, UserUpdated};

    use super::*;

    fn env(payload: Payload, source: Source) -> Envelope {
        Envelope { payload: Some(payload), source: source as i32, ..Default::default() }
    }

    #[test]
    fn scim_provisioning_is_silent() {
        let d = decide(&env(Payload::UserCreated(UserCreated::default()), Source::Scim));
        assert_eq!(d.outcome, Outcome::Suppressed);
        assert_eq!(d.reason, "welcome_suppressed_scim_provisioned");
    }

    #[test]
    fn lifecycle_changes_send_nothing() {
        for p in [
            Payload::UserUpdated(UserUpdated::default()),
            Payload::UserDeactivated(UserDeactivated::default()),
            Payload::UserReactivated(UserReactivated::default()),
        ] {
            assert_eq!(decide(&env(p, Source::Scim)).outcome, Outcome::NoEmail);
        }
        assert_eq!(decide(&Envelope::default()).reason, "unknown_event");
    }
}
