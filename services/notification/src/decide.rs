//! The rules: what, if anything, to send for an event, given what the service knows of the
//! recipient before the event. Pure, so that every rule is a unit test.
//!
//! - A user an identity provider creates (or links) gets no welcome email: provisioning is silent.
//! - A user the customer's admin creates gets the welcome email.
//! - A user's first assignment ever gets the first-assignment email (for a provisioned user, the
//!   first contact: a greeting, what was assigned, how to sign in); later ones the assignment email.
//! - Archived users receive nothing (restored users do again); deleted users nothing.

use proto::events::v1::envelope::Payload;
use proto::events::v1::{Envelope, Source};

use crate::templates::Template;

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Send,
    Suppressed,
    NoEmail,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Send => "send",
            Outcome::Suppressed => "suppressed",
            Outcome::NoEmail => "no_email",
        }
    }
}

/// A decision, its reason (a stable code, recorded and shown to support), and the email to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason: &'static str,
    pub template: Option<Template>,
}

const fn no_email(reason: &'static str) -> Decision {
    Decision { outcome: Outcome::NoEmail, reason, template: None }
}

const fn suppressed(reason: &'static str) -> Decision {
    Decision { outcome: Outcome::Suppressed, reason, template: None }
}

const fn send(reason: &'static str, template: Template) -> Decision {
    Decision { outcome: Outcome::Send, reason, template: Some(template) }
}

/// What the service knows of a recipient, before the event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipientState {
    pub active: bool,
    pub deleted: bool,
    pub has_email: bool,
    /// Whether their first-assignment email was already decided.
    pub had_first_email: bool,
}

/// Decides for one event. `None` when it cannot be decided yet: an assignment for a recipient
/// this service has not heard of (their own event is still on its way).
pub fn decide(envelope: &Envelope, recipient: Option<&RecipientState>) -> Option<Decision> {
    let source = Source::try_from(envelope.source).unwrap_or(Source::Unspecified);
    Some(match &envelope.payload {
        Some(Payload::UserCreated(created)) => match source {
            Source::Scim => suppressed("welcome_suppressed_scim_provisioned"),
            Source::Import => suppressed("welcome_suppressed_imported"),
            // Only a user the customer's own admin created is welcomed; anything else is silent.
            Source::Unspecified => suppressed("welcome_suppressed_unknown_source"),
            Source::Admin => match created.user.as_ref() {
                Some(u) if !u.active => suppressed("archived_receives_nothing"),
                Some(u) if u.email.trim().is_empty() => suppressed("no_email_address"),
                Some(_) => send("admin_created_user_welcomed", Template::Welcome),
                None => no_email("unknown_event"),
            },
        },
        Some(Payload::UserLinked(_)) => suppressed("welcome_suppressed_linked_by_scim"),
        Some(Payload::UserUpdated(_)) => no_email("profile_update_sends_nothing"),
        Some(Payload::UserDeactivated(_)) => no_email("archive_sends_nothing"),
        Some(Payload::UserReactivated(_)) => no_email("restore_sends_nothing"),
        Some(Payload::UserDeleted(_)) => no_email("delete_sends_nothing"),
        Some(Payload::UserRoleChanged(_)) => no_email("role_change_sends_nothing"),
        Some(Payload::UserErased(_)) => no_email("erased_receives_nothing"),
        Some(
            Payload::GroupCreated(_)
            | Payload::GroupUpdated(_)
            | Payload::GroupDeleted(_)
            | Payload::GroupMembersAdded(_)
            | Payload::GroupMembersRemoved(_),
        ) => no_email("groups_send_nothing"),
        Some(Payload::TenantChanged(_) | Payload::KeyRevoked(_) | Payload::BrakeTripped(_)) => {
            no_email("tenant_events_send_nothing")
        }
        Some(Payload::ContentAssigned(_)) => {
            let r = recipient?;
            if r.deleted {
                no_email("deleted_receives_nothing")
            } else if !r.active {
                suppressed("archived_receives_nothing")
            } else if !r.has_email {
                suppressed("no_email_address")
            } else if !r.had_first_email {
                send("first_assignment", Template::FirstAssignment)
            } else {
                send("assignment", Template::Assignment)
            }
        }
        None => no_email("unknown_event"),
    })
}

#[cfg(test)]
mod tests {
    use proto::events::v1::{ContentAssigned, UserCreated, UserDeactivated, UserLinked, UserSnapshot};

    use super::*;

    fn env(payload: Payload, source: Source) -> Envelope {
        Envelope { payload: Some(payload), source: source as i32, ..Default::default() }
    }

    fn created(active: bool, email: &str) -> Payload {
        Payload::UserCreated(UserCreated {
            user: Some(UserSnapshot { active, email: email.into(), ..Default::default() }),
        })
    }

    fn assigned() -> Envelope {
        env(Payload::ContentAssigned(ContentAssigned::default()), Source::Scim)
    }

    fn state(active: bool, deleted: bool, had_first_email: bool) -> RecipientState {
        RecipientState { active, deleted, has_email: true, had_first_email }
    }

    #[test]
    fn provisioning_is_silent_and_admins_welcome() {
        assert_eq!(decide(&env(created(true, "a@b.c"), Source::Scim), None).unwrap().outcome, Outcome::Suppressed);
        assert_eq!(
            decide(&env(Payload::UserLinked(UserLinked::default()), Source::Scim), None).unwrap().outcome,
            Outcome::Suppressed
        );
        let admin = decide(&env(created(true, "a@b.c"), Source::Admin), None).unwrap();
        assert_eq!((admin.outcome, admin.template), (Outcome::Send, Some(Template::Welcome)));
        assert_eq!(
            decide(&env(created(false, "a@b.c"), Source::Admin), None).unwrap().reason,
            "archived_receives_nothing"
        );
        assert_eq!(decide(&env(created(true, ""), Source::Admin), None).unwrap().reason, "no_email_address");
        // A producer that forgot the source does not send a welcome by accident.
        assert_eq!(
            decide(&env(created(true, "a@b.c"), Source::Unspecified), None).unwrap().outcome,
            Outcome::Suppressed
        );
    }

    #[test]
    fn assignments_first_contact_then_assignment_emails() {
        let first = decide(&assigned(), Some(&state(true, false, false))).unwrap();
        assert_eq!((first.outcome, first.template), (Outcome::Send, Some(Template::FirstAssignment)));
        let later = decide(&assigned(), Some(&state(true, false, true))).unwrap();
        assert_eq!(later.template, Some(Template::Assignment));
        assert_eq!(decide(&assigned(), Some(&state(false, false, false))).unwrap().reason, "archived_receives_nothing");
        assert_eq!(decide(&assigned(), Some(&state(false, true, false))).unwrap().reason, "deleted_receives_nothing");
        assert_eq!(decide(&assigned(), None), None, "an unknown recipient waits");
    }

    #[test]
    fn lifecycle_changes_send_nothing() {
        let d = decide(&env(Payload::UserDeactivated(UserDeactivated::default()), Source::Scim), None).unwrap();
        assert_eq!(d.outcome, Outcome::NoEmail);
        assert_eq!(decide(&Envelope::default(), None).unwrap().reason, "unknown_event");
    }
}
