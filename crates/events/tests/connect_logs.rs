//! What `NatsArgs::connect` logs: one warning when it connects without credentials, none with
//! them, and never the password, whatever the NATS client logs underneath (everything captured,
//! at trace level). Against the test NATS (`TEST_NATS_URL`, a server without authorization,
//! which lets in both).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn server() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Connects with these settings, capturing every log line; returns them.
async fn connect_and_capture(args: &events::NatsArgs) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // A current-thread runtime: the client's tasks log on this thread, to this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let client = args.connect("connect-logs-test").await.expect("connect");
    client.flush().await.expect("the server answers");
    drop(client);
    captured.text()
}

#[tokio::test]
async fn anonymous_connect_warns_once() {
    let (servers, _) = events::NatsArgs::new(server(), "S", "p").servers_and_credentials().unwrap();
    let plain = servers[0].as_url_str().to_owned();
    let logs = connect_and_capture(&events::NatsArgs::new(plain, "S", "p")).await;
    let warnings: Vec<_> = logs.lines().filter(|l| l.contains(events::NO_CREDENTIALS_WARNING)).collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(warnings[0].contains("WARN"), "{logs}");
}

#[tokio::test]
async fn the_password_is_never_logged() {
    let (servers, _) = events::NatsArgs::new(server(), "S", "p").servers_and_credentials().unwrap();
    let with_password = servers[0].as_url_str().replacen("://", "://user-directory:Sup3rS3cretPw@", 1);
    let args = events::NatsArgs::new(with_password, "S", "p");
    let logs = connect_and_capture(&args).await;
    assert!(logs.contains("CONNECT"), "the client's own trace lines were captured, its CONNECT with them: {logs}");
    assert!(!logs.contains("Sup3rS3cretPw"), "{logs}");
    assert!(!logs.contains(events::NO_CREDENTIALS_WARNING), "credentials were given: {logs}");
    assert!(!format!("{args:?} {}", args.redacted_url()).contains("Sup3rS3cretPw"));
}
