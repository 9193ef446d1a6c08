//! The durable JetStream pull consumer. A message is acknowledged only after its decision is
//! committed and, when it decided to send, after the send's outcome is recorded:
//! - sent: recorded, acknowledged;
//! - rejected for good (5xx, an invalid address): recorded as failed, acknowledged, not retried;
//! - transient failure (4xx, refused or dropped connection, timeout): recorded, NAKed with the
//!   next delay of `NOTIFICATION_RETRY_DELAYS`; after the last one the email is dead-lettered
//!   (`notification dead-letters` lists and re-drives them).
//!
//! A redelivered event finds its decision: it sends only an email still unsent, never a second.
//! Each attempt first claims the email (status `sending`, with a lease longer than a send can
//! take), so a redelivery racing a slow send, or a re-drive racing the consumer, cannot send it
//! twice. Attempts are counted on the email, not by deliveries of the message (which a database
//! hiccup or an unknown recipient also spend), and the consumer redelivers without limit, so the
//! last attempt is always recorded. The one window left: a crash after the SMTP server accepted
//! an email and before `mark_sent` committed (one statement) sends it again once the lease
//! expires; the `Message-ID` is the event's, so receiving systems can recognise the duplicate.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::MessagesErrorKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, AckKind, Message};
use futures::StreamExt;
use lettre::message::Mailbox;
use prost::Message as _;
use proto::events::v1::Envelope;
use telemetry::{Counter, KeyValue};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::mailer::{Mailer, OutgoingEmail, SendError};
use crate::store::{self, EmailRow, HandleError, Handled, Settings, handle};
use crate::templates::Templates;

/// How long an event of an unknown kind (or a template that fails) waits for a newer version.
const WAIT_FOR_NEWER: Duration = Duration::from_secs(60);
/// How long a message waits after a database failure.
const DB_RETRY: Duration = Duration::from_secs(2);
const BACKOFF: Duration = Duration::from_secs(1);
/// The first wait of an assignment for its user's latest change; each next one is twice as long,
/// up to `RECIPIENT_WAIT_MAX`.
const RECIPIENT_WAIT: Duration = Duration::from_secs(1);
const RECIPIENT_WAIT_MAX: Duration = Duration::from_secs(15);
/// How many events are decided at once. One user's events go to one lane and are decided one
/// after another, in stream order; other users' in parallel, so that one decision's commit or
/// one slow send does not hold up the rest.
const LANES: usize = 16;
/// Messages waiting in a lane; beyond that the consumer stops pulling.
const LANE_QUEUE: usize = 8;

/// The consumer's instruments.
struct Metrics {
    emails: Counter<u64>,
    redeliveries: Counter<u64>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = telemetry::meter();
        Metrics {
            emails: meter
                .u64_counter("emails")
                .with_description("Email outcomes: sent, suppressed, failed (for good), dead (after the last attempt)")
                .build(),
            redeliveries: meter
                .u64_counter("consumer.redeliveries")
                .with_description("Events delivered again to the consumer")
                .build(),
        }
    })
}

/// Counts an email outcome: `detail` is the template of an email that was sent or failed, and
/// the decision's reason of one that was suppressed.
fn count_email(outcome: &'static str, tenant: &str, detail: (&'static str, &str)) {
    metrics().emails.add(
        1,
        &[
            KeyValue::new("outcome", outcome),
            KeyValue::new("tenant", tenant.to_owned()),
            KeyValue::new(detail.0, detail.1.to_owned()),
        ],
    );
}

/// The consumer's backlog as the server sees it: (not yet delivered, delivered but unacknowledged).
static LAG: std::sync::Mutex<Option<(u64, u64)>> = std::sync::Mutex::new(None);

fn observe_lag() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let meter = telemetry::meter();
        let read = |pick: fn((u64, u64)) -> u64| {
            move |o: &dyn telemetry::AsyncInstrument<i64>| {
                if let Some(lag) = *LAG.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
                    o.observe(i64::try_from(pick(lag)).unwrap_or(i64::MAX), &[]);
                }
            }
        };
        meter
            .i64_observable_gauge("consumer.pending")
            .with_description("Events on the stream not yet delivered to the consumer")
            .with_callback(read(|l| l.0))
            .build();
        meter
            .i64_observable_gauge("consumer.ack_pending")
            .with_description("Events delivered and not yet acknowledged")
            .with_callback(read(|l| l.1))
            .build();
    });
}

/// Everything handling a message needs.
pub struct Worker {
    /// The longest one send may take (then it counts as a transient failure).
    pub send_timeout: Duration,
    /// The service's database: single statements on leased connections, transactions waiting.
    pub db: infra::Statements,
    /// Decisions recorded together with other lanes'.
    pub batch: crate::batch::Batcher,
    pub templates: Arc<Templates>,
    pub settings: Settings,
    pub mailer: Mailer,
    pub from: Mailbox,
    /// The waits between delivery attempts; attempts = delays + 1.
    pub retry_delays: Vec<Duration>,
}

impl Worker {
    fn max_attempts(&self) -> u64 {
        self.retry_delays.len() as u64 + 1
    }

    fn delay_after(&self, attempt: u64) -> Duration {
        let i = usize::try_from(attempt.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .min(self.retry_delays.len().saturating_sub(1));
        self.retry_delays.get(i).copied().unwrap_or(BACKOFF)
    }

    /// The email as it goes out: its Message-ID is the event's, stable across retries.
    pub fn outgoing(&self, email: &EmailRow) -> OutgoingEmail {
        let domain = self.from.email.domain().to_owned();
        OutgoingEmail {
            message_id: format!("<{}@{domain}>", email.event_id),
            to: email.to.clone(),
            subject: email.subject.clone(),
            text: email.text.clone(),
            html: email.html.clone(),
        }
    }

    /// How long a claim on an email lasts: longer than any send.
    pub fn lease(&self) -> Duration {
        self.send_timeout + Duration::from_secs(30)
    }

    /// How long JetStream waits for an answer before redelivering: longer than a claim.
    fn ack_wait(&self) -> Duration {
        self.lease() + Duration::from_secs(30)
    }

    /// Whether an assignment still waiting for its user's latest change, at its `attempt`, `age`
    /// after it was published, is decided without it (no email) instead of waiting on. The
    /// change is right behind it on the stream, so it comes unless it is lost for good (aged out
    /// of the stream, say): redelivered after the ack wait at the latest when its delivery was
    /// lost, after a few seconds when its decision failed. So the wait ends only when the event
    /// is as old as every email retry together (as long as an email is tried), and this consumer
    /// has asked again for at least three ack waits; both, so that neither a backlog (old events
    /// met late) nor an outage of the database (deliveries spent in seconds) ends it early.
    fn gives_up_waiting(&self, attempt: u64, age: Duration) -> bool {
        gives_up_waiting(attempt, age, self.ack_wait(), self.retry_delays.iter().sum())
    }

    /// Makes one delivery attempt of an unsent email, if no one else is making one, and records
    /// the outcome; returns how to answer the message. A re-drive's failure ends the email again.
    /// `tenant` (the subdomain, when known) labels the outcome's metric.
    pub async fn deliver(&self, email: &EmailRow, redrive: bool, tenant: &str) -> Result<AckKind, sqlx::Error> {
        let claimed = tokio::time::Instant::now();
        let Some(claim) = store::claim(&self.db, email.id, self.lease()).await? else {
            return Ok(match store::email(&self.db, email.id).await? {
                // Another worker is sending it: look again once its claim would have expired.
                Some(e) if e.status == "sending" => AckKind::Nak(Some(self.lease())),
                _ => AckKind::Ack,
            });
        };
        let email = &claim.email;
        let attempt = u64::try_from(email.attempts).unwrap_or(0) + 1;
        let span = tracing::info_span!("smtp.send", otel.kind = "client", email_id = %email.id, template = %email.template, attempt);
        let sent = tokio::time::timeout(self.send_timeout, self.mailer.send(&self.from, &self.outgoing(email)))
            .instrument(span)
            .await
            .unwrap_or_else(|_| Err(SendError::Transient(format!("no answer within {:?}", self.send_timeout))));
        let outcome = match &sent {
            Ok(()) => Some("sent"),
            Err(SendError::Permanent(_)) => Some("failed"),
            Err(SendError::Transient(_)) if redrive || attempt >= self.max_attempts() => Some("dead"),
            Err(SendError::Transient(_)) => None,
        };
        if let Some(outcome) = outcome {
            count_email(outcome, tenant, ("template", &email.template));
        }
        match sent {
            Ok(()) => {
                if self.mark_sent(&claim, claimed + self.lease()).await? {
                    tracing::info!(email_id = %email.id, template = %email.template, "email sent");
                } else {
                    tracing::warn!(email_id = %email.id, "email sent after its claim expired; another attempt may send it too");
                }
                Ok(AckKind::Ack)
            }
            Err(SendError::Permanent(e)) => {
                store::record_failure(&self.db, &claim, &e, Some("failed")).await?;
                tracing::warn!(email_id = %email.id, error = %scrub(&e), "email rejected for good; not retried");
                Ok(AckKind::Ack)
            }
            Err(SendError::Transient(e)) if redrive || attempt >= self.max_attempts() => {
                store::record_failure(&self.db, &claim, &e, Some("dead")).await?;
                tracing::error!(email_id = %email.id, attempts = attempt, error = %scrub(&e), "email dead-lettered after its last attempt");
                Ok(AckKind::Ack)
            }
            Err(SendError::Transient(e)) => {
                store::record_failure(&self.db, &claim, &e, None).await?;
                let delay = self.delay_after(attempt);
                tracing::warn!(email_id = %email.id, attempt, retry_in = ?delay, error = %scrub(&e), "email not sent; will retry");
                Ok(AckKind::Nak(Some(delay)))
            }
        }
    }

    /// Records a sent email. The SMTP server has accepted it: if the database cannot be told
    /// (an outage, a restart), asking again while the claim lasts (until `lease_end`) is what
    /// keeps a redelivery from sending it a second time; only past the lease, when another
    /// attempt may claim it, does the error go back to the caller.
    async fn mark_sent(&self, claim: &store::Claim, lease_end: tokio::time::Instant) -> Result<bool, sqlx::Error> {
        let mut wait = Duration::from_millis(100);
        loop {
            match store::mark_sent(&self.db, claim).await {
                Ok(marked) => return Ok(marked),
                Err(e) if tokio::time::Instant::now() + wait < lease_end => {
                    tracing::warn!(email_id = %claim.email.id, error = %e, "recording a sent email failed; asking again while the claim lasts");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Handles one message; returns how to answer it.
    async fn process(&self, message: &Message, envelope: Decoded) -> Result<AckKind, sqlx::Error> {
        let info = message.info().ok();
        let attempt = info.as_ref().map_or(1, |i| i.delivered.max(1) as u64);
        // How long the event has been on the stream.
        let age = info
            .and_then(|i| Duration::try_from(time::OffsetDateTime::now_utc() - i.published).ok())
            .unwrap_or_default();
        let envelope = match envelope {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(subject = %message.subject, error = %e, "undecodable event terminated");
                return Ok(AckKind::Term);
            }
        };
        let give_up = self.gives_up_waiting(attempt, age);
        match handle(&self.db, &self.batch, &self.templates, &self.settings, &envelope, give_up).await {
            Ok(Handled::Decided { email: Some(email), .. } | Handled::AlreadyDecided { email: Some(email) })
                if email.is_unsent() =>
            {
                self.deliver(&email, false, &envelope.tenant).await
            }
            Ok(Handled::Decided { decision, .. }) => {
                if decision.outcome.as_str() == "suppressed" {
                    count_email("suppressed", &envelope.tenant, ("reason", decision.reason));
                }
                tracing::debug!(event_id = %envelope.event_id, outcome = decision.outcome.as_str(), reason = decision.reason, "decided");
                Ok(AckKind::Ack)
            }
            Ok(Handled::AlreadyDecided { .. }) => {
                tracing::info!(event_id = %envelope.event_id, "redelivered event already decided");
                Ok(AckKind::Ack)
            }
            // The user's latest change is behind it, usually by moments: ask again soon, not on
            // the emails' retry schedule (minutes), which would hold the email that long after
            // the change has come.
            Err(HandleError::RecipientUnknown) => Ok(AckKind::Nak(Some(recipient_wait(attempt)))),
            Err(HandleError::Malformed(e)) => {
                tracing::error!(event_id = %envelope.event_id, error = %e, "malformed event terminated");
                Ok(AckKind::Term)
            }
            Err(HandleError::UnknownKind) => {
                tracing::warn!(event_id = %envelope.event_id, subject = %message.subject, "event of an unknown kind left for a newer consumer");
                Ok(AckKind::Nak(Some(WAIT_FOR_NEWER)))
            }
            Err(HandleError::Render(e)) => {
                tracing::error!(event_id = %envelope.event_id, error = %e, "an email template failed; waiting for a fixed version");
                Ok(AckKind::Nak(Some(WAIT_FOR_NEWER)))
            }
            Err(HandleError::Database(e)) => Err(e),
        }
    }
}

/// How long an assignment waits, after its `attempt`, before it is asked again whether its
/// user's latest change has reached the projection.
fn recipient_wait(attempt: u64) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1)).unwrap_or(u32::MAX).min(16);
    RECIPIENT_WAIT.saturating_mul(1 << doublings).min(RECIPIENT_WAIT_MAX)
}

/// `Worker::gives_up_waiting`, given the ack wait and the emails' retry delays together.
fn gives_up_waiting(attempt: u64, age: Duration, ack_wait: Duration, email_retries: Duration) -> bool {
    let asked = 3 * ack_wait;
    age >= email_retries.max(asked) && waited_for_recipient(attempt) >= asked
}

/// The waits before `attempt`, had every earlier delivery of the message been such a wait.
fn waited_for_recipient(attempt: u64) -> Duration {
    let mut total = Duration::ZERO;
    for k in 1..attempt {
        let wait = recipient_wait(k);
        if wait == RECIPIENT_WAIT_MAX {
            // Every wait from here on is the longest.
            return total + wait.saturating_mul(u32::try_from(attempt - k).unwrap_or(u32::MAX));
        }
        total += wait;
    }
    total
}

/// Consumes until `shutdown` is cancelled; reconnects after failures.
pub async fn run(
    worker: Arc<Worker>,
    nats: events::NatsArgs,
    consumer: String,
    client: async_nats::Client,
    shutdown: CancellationToken,
) {
    loop {
        match consume(&worker, &nats, &consumer, &client, &shutdown).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "event consumer interrupted; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(BACKOFF) => {}
        }
    }
}

async fn consume(
    worker: &Arc<Worker>,
    nats: &events::NatsArgs,
    name: &str,
    client: &async_nats::Client,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let js = jetstream::new(client.clone());
    let stream = nats.ensure_stream(&js).await?;
    let config = pull::Config {
        durable_name: Some(name.to_owned()),
        filter_subject: nats.all_subjects(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        // Longer than a claimed send can take, so a slow send is not redelivered meanwhile.
        ack_wait: worker.ack_wait(),
        // Without limit: attempts are counted on the email, and the last one ends it.
        max_deliver: -1,
        ..Default::default()
    };
    // Create or update, so that a durable consumer left by an older release takes this one's
    // settings; if the server refuses the update, the existing consumer is used as it is.
    let consumer = match stream.create_consumer(config.clone()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(consumer = name, error = %e, "could not update the durable consumer; using it as it is");
            stream.get_or_create_consumer::<pull::Config>(name, config).await?
        }
    };
    let mut messages = consumer.messages().await?;
    tracing::info!(consumer = name, "event consumer running");
    observe_lag();
    let (lanes, workers): (Vec<_>, Vec<_>) = (0..LANES)
        .map(|_| {
            let (lane, mut queue) = tokio::sync::mpsc::channel::<(Message, Decoded)>(LANE_QUEUE);
            let worker = worker.clone();
            let drain = tokio::spawn(async move {
                while let Some((message, envelope)) = queue.recv().await {
                    answer(&worker, message, envelope).await;
                }
            });
            (lane, drain)
        })
        .unzip();
    let result = dispatch(&consumer, &mut messages, &lanes, client, shutdown).await;
    // What was handed to a lane is decided and answered before this returns (at shutdown too).
    drop(lanes);
    for w in workers {
        let _ = w.await;
    }
    result
}

/// A message's event, decoded once (by the dispatcher, which needs it to choose the lane).
type Decoded = Result<Envelope, prost::DecodeError>;

/// The lane of an event: by the user it is about (a content assignment's user, otherwise the
/// resource), so that one user's events stay in order.
fn lane_of(envelope: &Decoded) -> usize {
    use std::hash::{Hash, Hasher};
    let key = match envelope {
        Ok(Envelope { payload: Some(proto::events::v1::envelope::Payload::ContentAssigned(a)), .. }) => &a.user_id,
        Ok(e) => &e.resource_id,
        Err(_) => "",
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % LANES as u64) as usize
}

/// Pulls messages and hands each to its lane until shutdown or a failure.
async fn dispatch(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    messages: &mut pull::Stream,
    lanes: &[tokio::sync::mpsc::Sender<(Message, Decoded)>],
    client: &async_nats::Client,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut lag = tokio::time::interval(Duration::from_secs(5));
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = lag.tick() => {
                if let Ok(info) = consumer.get_info().await {
                    let ack_pending = u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX);
                    *LAG.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((info.num_pending, ack_pending));
                }
                continue;
            }
            m = messages.next() => m,
        };
        let Some(message) = message else { anyhow::bail!("the message stream ended") };
        let message = match message {
            Ok(m) => m,
            // The server's heartbeats stopped: the connection dropped, or the server restarted.
            // The stream sends its pull request again once the client has reconnected, so it
            // goes on. A new stream instead would leave what the server had just sent to this
            // one unanswered until the ack wait runs out (minutes), and the assignments behind
            // those events waiting as long. Only a consumer the server no longer has, with the
            // connection up, needs a new one.
            Err(e) if e.kind() == MessagesErrorKind::MissingHeartbeat => {
                match consumer.get_info().await {
                    Ok(_) => tracing::info!("missed the server's heartbeat; the consumer is there, going on"),
                    Err(_) if client.connection_state() != async_nats::connection::State::Connected => {
                        tracing::info!("missed the server's heartbeat while disconnected; going on after reconnection");
                    }
                    Err(e) => anyhow::bail!("missed the server's heartbeat, and the consumer is not found: {e}"),
                }
                continue;
            }
            Err(e) => return Err(anyhow::anyhow!(e)),
        };
        let envelope = Envelope::decode(message.payload.clone());
        if lanes[lane_of(&envelope)].send((message, envelope)).await.is_err() {
            anyhow::bail!("a lane of the consumer stopped");
        }
    }
}

/// Decides one message and answers it (ack, nak with a delay, or term).
async fn answer(worker: &Worker, message: Message, envelope: Decoded) {
    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
    if delivered > 1 {
        metrics().redeliveries.add(1, &[]);
    }
    let header = |k: &str| message.headers.as_ref().and_then(|h| h.get(k)).map(|v| v.as_str().to_owned());
    let span = tracing::info_span!(
        "event.process",
        otel.kind = "consumer",
        subject = %message.subject,
        event_id = %header(async_nats::header::NATS_MESSAGE_ID.as_ref()).unwrap_or_default(),
        delivered,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    telemetry::adopt(&span, telemetry::extract(header));
    let answer = match worker.process(&message, envelope).instrument(span.clone()).await {
        Ok(answer) => answer,
        Err(e) => {
            span.in_scope(|| tracing::warn!(subject = %message.subject, error = %e, "recording failed; will retry"));
            AckKind::Nak(Some(DB_RETRY))
        }
    };
    if let Err(e) = message.ack_with(answer).await {
        tracing::warn!(subject = %message.subject, error = %e, "answering a message failed; it will be redelivered");
    }
}

/// An SMTP error as the log shows it: mail servers quote the recipient's address in their
/// answers, and addresses stay out of the logs (the emails table keeps the whole answer).
pub fn scrub(error: &str) -> String {
    error
        .split_inclusive(|c: char| c.is_whitespace() || c == '<' || c == '>')
        .map(|word| {
            let bare = word.trim_end_matches(|c: char| c.is_whitespace() || c == '<' || c == '>');
            if bare.contains('@') { word.replacen(bare, "[address]", 1) } else { word.to_owned() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{gives_up_waiting, recipient_wait, scrub, waited_for_recipient};

    #[test]
    fn an_assignment_asks_again_for_its_user_soon_and_gives_up_late() {
        let s = Duration::from_secs;
        let waits: Vec<Duration> = (1..=7).map(recipient_wait).collect();
        assert_eq!(waits, [s(1), s(2), s(4), s(8), s(15), s(15), s(15)]);
        assert_eq!(recipient_wait(u64::MAX), s(15));
        assert_eq!(waited_for_recipient(1), s(0));
        assert_eq!(waited_for_recipient(2), s(1));
        assert_eq!(waited_for_recipient(7), s(1 + 2 + 4 + 8 + 15 + 15));
        assert_eq!(waited_for_recipient(100), s(1 + 2 + 4 + 8) + s(15) * 95);

        // Ack wait 2 min, emails retried for 81 min (the defaults).
        let (ack_wait, retries) = (s(120), s(81 * 60));
        let enough = (1..).find(|&a| waited_for_recipient(a) >= 3 * ack_wait).unwrap();
        assert!(gives_up_waiting(enough, retries, ack_wait, retries));
        // A backlog: an old event met for the first times is waited for.
        assert!(!gives_up_waiting(enough - 1, s(24 * 3600), ack_wait, retries));
        // A database outage: many deliveries in a short time.
        assert!(!gives_up_waiting(10_000, s(600), ack_wait, retries));
        // Short email retries: still three ack waits of asking.
        assert!(!gives_up_waiting(enough - 1, s(3600), ack_wait, s(1)));
        assert!(gives_up_waiting(enough, 3 * ack_wait, ack_wait, s(1)));
    }

    #[test]
    fn addresses_are_scrubbed_from_smtp_errors() {
        assert_eq!(
            scrub("550 5.1.1 <jane@acme.com>: Recipient address rejected: jane@acme.com unknown"),
            "550 5.1.1 <[address]>: Recipient address rejected: [address] unknown"
        );
        assert_eq!(scrub("connection refused"), "connection refused");
    }
}
