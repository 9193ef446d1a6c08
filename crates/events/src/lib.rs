//! The provisioning event stream as both ends see it: the NATS settings every service takes from
//! the environment, the subject of each event (`<prefix>.v1.<tenant>.<resource>.<event>`), and the
//! JetStream stream that holds them (`PROVISIONING`, file storage, server-side de-duplication on
//! `Nats-Msg-Id`).
//!
//! The stream name and subject prefix are settings so that tests can run side by side on one NATS
//! server, each with a stream of its own; production keeps the defaults.

use std::time::Duration;

use std::path::PathBuf;

use async_nats::ServerAddr;
use async_nats::jetstream::{self, stream};
use proto::events::v1::UserSnapshot;
use proto::events::v1::envelope::Payload;

/// NATS settings shared by the services.
///
/// Credentials come from `NATS_CREDS` (a `.creds` file: a user JWT and its nkey seed, for a
/// server in operator/JWT mode) or from the URL (`nats://user:password@host:4222`, or
/// `nats://token@host:4222`). Without either the service connects anonymously, which only a
/// server without authorization accepts (local development); it says so once, at connect.
/// `Debug` hides the URL's password; log [`NatsArgs::redacted_url`], never `nats_url`.
#[derive(Clone, clap::Args)]
pub struct NatsArgs {
    /// The NATS server(s), comma-separated; may carry the credentials
    /// (`nats://user:password@host:4222`).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// The JetStream stream that holds provisioning events.
    #[arg(long, env = "NATS_STREAM", default_value = "PROVISIONING")]
    pub nats_stream: String,
    /// The first token of every event subject.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "provisioning")]
    pub nats_subject_prefix: String,
    /// A NATS credentials file (user JWT and nkey seed), instead of credentials in the URL.
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// A PEM file of the CA(s) that signed the NATS servers' certificates; implies TLS.
    #[arg(long, env = "NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS (also implied by `tls://` URLs and `NATS_TLS_CA`).
    #[arg(long, env = "NATS_TLS_REQUIRED", default_value_t = false)]
    pub nats_tls_required: bool,
    /// How many servers of the NATS cluster keep each event (the stream's replicas): 1 for a
    /// single server, 3 in production (a node may be lost, with its disk, without losing one).
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_stream_replicas: u8,
}

/// The warning of a service that connects without credentials.
pub const NO_CREDENTIALS_WARNING: &str =
    "connecting to NATS without credentials: only for a server without authorization (local development)";

impl std::fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsArgs")
            .field("nats_url", &self.redacted_url())
            .field("nats_stream", &self.nats_stream)
            .field("nats_subject_prefix", &self.nats_subject_prefix)
            .field("nats_creds", &self.nats_creds)
            .field("nats_tls_ca", &self.nats_tls_ca)
            .field("nats_tls_required", &self.nats_tls_required)
            .field("nats_stream_replicas", &self.nats_stream_replicas)
            .finish()
    }
}

/// How a service proves who it is to NATS. `Debug` shows no password or token.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// None: only a server without authorization lets it in.
    Anonymous,
    /// A user and password from the URL.
    UserPassword { user: String, password: String },
    /// A token from the URL (`nats://token@host`).
    Token(String),
    /// A credentials file (`NATS_CREDS`).
    File(PathBuf),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::UserPassword { user, .. } => write!(f, "UserPassword {{ user: {user:?}, password: *** }}"),
            Credentials::Token(_) => f.write_str("Token(***)"),
            Credentials::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl NatsArgs {
    /// Settings for these servers, stream and prefix, without credentials file or TLS options.
    pub fn new(nats_url: impl Into<String>, stream: impl Into<String>, subject_prefix: impl Into<String>) -> NatsArgs {
        NatsArgs {
            nats_url: nats_url.into(),
            nats_stream: stream.into(),
            nats_subject_prefix: subject_prefix.into(),
            nats_creds: None,
            nats_tls_ca: None,
            nats_tls_required: false,
            nats_stream_replicas: 1,
        }
    }

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

    /// `NATS_URL` with every password (or token) replaced by `***`: what may be logged.
    pub fn redacted_url(&self) -> String {
        self.nats_url.split(',').map(redact).collect::<Vec<_>>().join(",")
    }

    /// The servers, without credentials, and the credentials to present to them.
    pub fn servers_and_credentials(&self) -> Result<(Vec<ServerAddr>, Credentials), EventsError> {
        let mut servers = Vec::new();
        let mut from_url: Option<Credentials> = None;
        for (i, part) in self.nats_url.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
            let addr: ServerAddr = part.parse().map_err(|_| EventsError::Url(i + 1))?;
            let mut url = addr.into_inner();
            let user = decode(url.username()).ok_or(EventsError::Url(i + 1))?;
            let password = url.password().map(decode).map(|p| p.ok_or(EventsError::Url(i + 1))).transpose()?;
            let credentials = match (user.is_empty(), password) {
                (true, None) => None,
                (false, None) => Some(Credentials::Token(user)),
                (_, Some(password)) => Some(Credentials::UserPassword { user, password }),
            };
            if let Some(c) = credentials {
                match &from_url {
                    Some(known) if *known != c => return Err(EventsError::DifferentCredentials),
                    _ => from_url = Some(c),
                }
                url.set_username("").map_err(|()| EventsError::Url(i + 1))?;
                url.set_password(None).map_err(|()| EventsError::Url(i + 1))?;
            }
            servers.push(ServerAddr::from_url(url).map_err(|_| EventsError::Url(i + 1))?);
        }
        if servers.is_empty() {
            return Err(EventsError::NoServer);
        }
        let credentials = match (from_url, &self.nats_creds) {
            (Some(_), Some(_)) => return Err(EventsError::TwoCredentials),
            (Some(c), None) => c,
            (None, Some(path)) => Credentials::File(path.clone()),
            (None, None) => Credentials::Anonymous,
        };
        Ok((servers, credentials))
    }

    /// Connects to NATS with this service's credentials (and TLS when configured). The client
    /// reconnects by itself for as long as the process lives; what the server refuses (a wrong
    /// password, a subject this service may not use) is logged as a warning.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, EventsError> {
        let (servers, credentials) = self.servers_and_credentials()?;
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                if let async_nats::Event::ServerError(e) = event {
                    tracing::warn!(error = %e, "the NATS server refused something");
                }
            });
        options = match credentials {
            Credentials::Anonymous => {
                tracing::warn!("{NO_CREDENTIALS_WARNING}");
                options
            }
            Credentials::UserPassword { user, password } => options.user_and_password(user, password),
            Credentials::Token(token) => options.token(token),
            Credentials::File(path) => options
                .credentials_file(&path)
                .await
                .map_err(|source| EventsError::CredentialsFile { path: path.clone(), source })?,
        };
        if let Some(ca) = &self.nats_tls_ca {
            if !ca.is_file() {
                return Err(EventsError::TlsCa(ca.clone()));
            }
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if self.nats_tls_required {
            options = options.require_tls(true);
        }
        Ok(options.connect(servers).await?)
    }

    /// The stream's configuration.
    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.nats_stream.clone(),
            subjects: vec![self.all_subjects()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            max_age: Duration::from_secs(30 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            num_replicas: usize::from(self.nats_stream_replicas),
            ..Default::default()
        }
    }

    /// Creates the stream if it does not exist, and returns it.
    pub async fn ensure_stream(&self, js: &jetstream::Context) -> Result<stream::Stream, EventsError> {
        js.get_or_create_stream(self.stream_config()).await.map_err(|e| EventsError::Stream(e.to_string()))
    }

    /// [`NatsArgs::ensure_stream`], and an existing stream with another replica count is given
    /// this one's (`NATS_STREAM_REPLICAS` raised from 1 to 3 when a cluster replaces a single
    /// server): what the directory, the stream's owner, does at start.
    pub async fn reconcile_stream(&self, js: &jetstream::Context) -> Result<stream::Stream, EventsError> {
        let mut stream = self.ensure_stream(js).await?;
        let info = stream.info().await.map_err(|e| EventsError::Stream(e.to_string()))?;
        let (had, wanted) = (info.config.num_replicas, usize::from(self.nats_stream_replicas));
        if had != wanted {
            let config = stream::Config { num_replicas: wanted, ..info.config.clone() };
            js.update_stream(config)
                .await
                .map_err(|e| EventsError::Stream(format!("setting {wanted} replicas: {e}")))?;
            tracing::info!(stream = %self.nats_stream, from = had, to = wanted, "the stream's replica count changed");
            stream = js.get_stream(&self.nats_stream).await.map_err(|e| EventsError::Stream(e.to_string()))?;
        }
        Ok(stream)
    }
}

/// The field of a user event that holds the user as they are after it (their snapshot), for the
/// events that carry one: what a consumer projects, and what an erasure replaces by a tombstone.
pub fn user_snapshot_field(payload: &mut Payload) -> Option<&mut Option<UserSnapshot>> {
    match payload {
        Payload::UserCreated(p) => Some(&mut p.user),
        Payload::UserUpdated(p) => Some(&mut p.user),
        Payload::UserDeactivated(p) => Some(&mut p.user),
        Payload::UserReactivated(p) => Some(&mut p.user),
        Payload::UserLinked(p) => Some(&mut p.user),
        Payload::UserRoleChanged(p) => Some(&mut p.user),
        _ => None,
    }
}

/// The user's snapshot an event carries, if it carries one ([`user_snapshot_field`]).
pub fn user_snapshot(payload: &Payload) -> Option<&UserSnapshot> {
    match payload {
        Payload::UserCreated(p) => p.user.as_ref(),
        Payload::UserUpdated(p) => p.user.as_ref(),
        Payload::UserDeactivated(p) => p.user.as_ref(),
        Payload::UserReactivated(p) => p.user.as_ref(),
        Payload::UserLinked(p) => p.user.as_ref(),
        Payload::UserRoleChanged(p) => p.user.as_ref(),
        _ => None,
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
        Payload::UserRoleChanged(_) => ("user", "role_changed"),
        Payload::UserErased(_) => ("user", "erased"),
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

/// One server URL with its password (or token) replaced by `***`.
fn redact(part: &str) -> String {
    match part.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (scheme, userinfo) = userinfo.split_once("://").map_or(("", userinfo), |(s, u)| (s, u));
            let scheme = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}{user}:***@{host}"),
                None => format!("{scheme}***@{host}"),
            }
        }
        None => part.to_owned(),
    }
}

/// A percent-decoded URL component.
fn decode(component: &str) -> Option<String> {
    percent_encoding::percent_decode_str(component).decode_utf8().ok().map(|c| c.into_owned())
}

/// Failures configuring NATS and talking to JetStream. None of them shows a password.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("jetstream stream: {0}")]
    Stream(String),
    #[error("NATS_URL: server {0} of the list is not a valid NATS URL")]
    Url(usize),
    #[error("NATS_URL names no server")]
    NoServer,
    #[error("NATS_URL: the servers carry different credentials")]
    DifferentCredentials,
    #[error("NATS credentials both in NATS_URL and in NATS_CREDS: set one")]
    TwoCredentials,
    #[error("reading the NATS credentials file {path}: {source}")]
    CredentialsFile { path: PathBuf, source: std::io::Error },
    #[error("NATS_TLS_CA: {0} is not a readable file")]
    TlsCa(PathBuf),
    #[error("connecting to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
}

#[cfg(test)]
mod tests {
    use proto::events::v1::UserCreated;

    use super::*;

    #[test]
    fn subjects_follow_the_operator_interface() {
        let args = NatsArgs::new("", "PROVISIONING", "provisioning");
        let payload = Payload::UserCreated(UserCreated::default());
        assert_eq!(args.subject("acme", &payload), "provisioning.v1.acme.user.created");
        assert_eq!(args.all_subjects(), "provisioning.v1.>");
    }

    #[test]
    fn credentials_come_from_the_url_and_never_show() {
        let args = NatsArgs::new(
            "nats://user-directory:p%40ss:w0rd@nats-0:4222, tls://user-directory:p%40ss:w0rd@nats-1",
            "PROVISIONING",
            "provisioning",
        );
        let (servers, credentials) = args.servers_and_credentials().unwrap();
        assert_eq!(
            credentials,
            Credentials::UserPassword { user: "user-directory".into(), password: "p@ss:w0rd".into() }
        );
        let urls: Vec<_> = servers.iter().map(|s| s.as_url_str().to_owned()).collect();
        assert_eq!(urls, ["nats://nats-0:4222", "tls://nats-1"]);
        assert_eq!(servers[1].port(), 4222);
        assert!(servers[1].tls_required());

        let shown = format!("{} {args:?}", args.redacted_url());
        assert!(!shown.contains("p%40ss") && !shown.contains("w0rd"), "{shown}");
        assert!(shown.contains("nats://user-directory:***@nats-0:4222"), "{shown}");
        assert_eq!(NatsArgs::new("nats://s3cret@h:4222", "S", "p").redacted_url(), "nats://***@h:4222");
        let debug = format!("{credentials:?} {:?}", Credentials::Token("s3cret".into()));
        assert!(!debug.contains("w0rd") && !debug.contains("s3cret") && debug.contains("user-directory"), "{debug}");
    }

    #[test]
    fn a_token_a_file_or_nothing() {
        let token = NatsArgs::new("nats://s3cret@127.0.0.1:4222", "S", "p");
        assert_eq!(token.servers_and_credentials().unwrap().1, Credentials::Token("s3cret".into()));
        let none = NatsArgs::new("127.0.0.1:4222", "S", "p");
        assert_eq!(none.servers_and_credentials().unwrap().1, Credentials::Anonymous);
        let mut file = NatsArgs::new("nats://127.0.0.1:4222", "S", "p");
        file.nats_creds = Some("/run/secrets/nats.creds".into());
        assert_eq!(file.servers_and_credentials().unwrap().1, Credentials::File("/run/secrets/nats.creds".into()));
        let mut both = NatsArgs::new("nats://u:p@127.0.0.1:4222", "S", "p");
        both.nats_creds = Some("/run/secrets/nats.creds".into());
        assert!(matches!(both.servers_and_credentials(), Err(EventsError::TwoCredentials)));
        let different = NatsArgs::new("nats://u:p@a:4222,nats://u:q@b:4222", "S", "p");
        assert!(matches!(different.servers_and_credentials(), Err(EventsError::DifferentCredentials)));
        let err = NatsArgs::new("http://u:secret@a", "S", "p").servers_and_credentials().unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }
}
