//! The provisioning event stream as both ends see it: the NATS settings every service takes from
//! the environment, the subject of each event (`<prefix>.v1.<tenant>.<resource>.<event>`), and the
//! JetStream stream that holds them (`PROVISIONING`, file storage, server-side de-duplication on
//! `Nats-Msg-Id`).
//!
//! The stream name and subject prefix are settings so that tests can run side by side on one NATS
//! server, each with a stream of its own; production keeps the defaults.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use proto::events::v1::envelope::Payload;

/// NATS settings shared by the services.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// The NATS server(s), comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// The JetStream stream that holds provisioning events.
    #[arg(long, env = "NATS_STREAM", default_value = "PROVISIONING")]
    pub nats_stream: String,
    /// The first token of every event subject.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "provisioning")]
    pub nats_subject_prefix: String,
}

impl NatsArgs {
    /// The subject of one event.
    pub fn subject(&self, tenant: &str, payload: &Payload) -> String {
        subject(&self.nats_subject_prefix, tenant, payload)
    }

    /// The wildcard covering every tenant-level event (what gateways listen to).
    pub fn tenant_subjects(&self) -> String {
        format!("{}.v1.*.tenant.>", self.nats_subject_prefix)
    }

    /// The wildcard covering every event.
    pub fn all_subjects(&self) -> String {
        format!("{}.v1.>", self.nats_subject_prefix)
    }

    /// Connects to NATS. The client reconnects by itself for as long as the process lives.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(self.nats_url.as_str())
            .await
    }

    /// Creates the stream if it does not exist, and returns it.
    pub async fn ensure_stream(&self, js: &jetstream::Context) -> Result<stream::Stream, EventsError> {
        js.get_or_create_stream(stream::Config {
            name: self.nats_stream.clone(),
            subjects: vec![self.all_subjects()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            max_age: Duration::from_secs(30 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| EventsError::Stream(e.to_string()))
    }
}

/// The subject of one event: `<prefix>.v1.<tenant>.<resource>.<event>`.
pub fn subject(prefix: &str, tenant: &str, payload: &Payload) -> String {
    let (resource, event) = event_name(payload);
    format!("{prefix}.v1.{tenant}.{resource}.{event}")
}

/// The `<resource>.<event>` part of an event's subject.
pub fn event_name(payload: &Payload) -> (&'static str, &'static str) {
    match payload {
        Payload::UserCreated(_) => ("user", "created"),
        Payload::UserUpdated(_) => ("user", "updated"),
        Payload::UserDeactivated(_) => ("user", "deactivated"),
        Payload::UserReactivated(_) => ("user", "reactivated"),
        Payload::UserDeleted(_) => ("user", "deleted"),
        Payload::UserLinked(_) => ("user", "linked"),
        Payload::GroupCreated(_) => ("group", "created"),
        Payload::GroupUpdated(_) => ("group", "updated"),
        Payload::GroupDeleted(_) => ("group", "deleted"),
        Payload::GroupMembersAdded(_) => ("group", "members_added"),
        Payload::GroupMembersRemoved(_) => ("group", "members_removed"),
        Payload::ContentAssigned(_) => ("content", "assigned"),
        Payload::TenantChanged(_) => ("tenant", "changed"),
        Payload::KeyRevoked(_) => ("tenant", "key_revoked"),
        Payload::BrakeTripped(_) => ("tenant", "brake_tripped"),
    }
}

/// Failures talking to JetStream.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("jetstream stream: {0}")]
    Stream(String),
}

#[cfg(test)]
mod tests {
    use proto::events::v1::UserCreated;

    use super::*;

    #[test]
    fn subjects_follow_the_operator_interface() {
        let args = NatsArgs {
            nats_url: String::new(),
            nats_stream: "PROVISIONING".into(),
            nats_subject_prefix: "provisioning".into(),
        };
        let payload = Payload::UserCreated(UserCreated::default());
        assert_eq!(args.subject("acme", &payload), "provisioning.v1.acme.user.created");
        assert_eq!(args.all_subjects(), "provisioning.v1.>");
    }
}
