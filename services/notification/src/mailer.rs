//! Sending: SMTP through lettre (pooled connections, timeouts, STARTTLS or TLS as `SMTP_URL`
//! says: `smtp://host:port`, `smtp://host:port?tls=required`, `smtps://host:port`, credentials as
//! `smtp://user:pass@host`), or `file:///dir` to write `.eml` files (local runs). Failures are
//! sorted into transient (retry later: 4xx, refused or dropped connections, timeouts) and
//! permanent (5xx, an address that is not one): the consumer acts on the difference.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart, header};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// What to send.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    /// Stable across retries, so receivers can recognise a duplicate (`Message-ID`).
    pub message_id: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("transient: {0}")]
    Transient(String),
    #[error("permanent: {0}")]
    Permanent(String),
}

/// A mail transport.
#[derive(Clone)]
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

impl Mailer {
    /// The transport for an `SMTP_URL`.
    pub fn from_url(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        if let Some(dir) = url.strip_prefix("file://") {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir)?;
            return Ok(Mailer::File(AsyncFileTransport::new(dir)));
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?.timeout(Some(timeout)).build();
        Ok(Mailer::Smtp(transport))
    }

    /// Sends one email from `from`.
    pub async fn send(&self, from: &Mailbox, email: &OutgoingEmail) -> Result<(), SendError> {
        let to: Mailbox =
            email.to.parse().map_err(|e| SendError::Permanent(format!("the recipient address is not valid: {e}")))?;
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(email.message_id.clone()))
            .header(header::MIME_VERSION_1_0)
            .multipart(MultiPart::alternative_plain_html(email.text.clone(), email.html.clone()))
            .map_err(|e| SendError::Permanent(format!("the message could not be built: {e}")))?;
        match self {
            Mailer::Smtp(t) => t.send(message).await.map(|_| ()).map_err(|e| {
                if e.is_permanent() {
                    SendError::Permanent(e.to_string())
                } else {
                    // 4xx, connection refused or dropped, timeouts, TLS hiccups: try again later.
                    SendError::Transient(e.to_string())
                }
            }),
            Mailer::File(t) => t.send(message).await.map(|_| ()).map_err(|e| SendError::Transient(e.to_string())),
        }
    }
}
