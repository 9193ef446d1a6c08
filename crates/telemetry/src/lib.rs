//! Logging and tracing setup shared by the services: `tracing` with a filter from `RUST_LOG`
//! (default `info`), written as JSON lines (for log collectors) or, with `LOG_FORMAT=text`, as
//! human-readable lines (for `make run`), always on stderr so that commands' output on stdout
//! stays machine-readable.
//!
//! Messages are lower-case and structured; no personal data and no secret is ever a field (an
//! email is logged as its domain at most).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let text = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"));
    let result = if text {
        fmt().with_writer(std::io::stderr).with_env_filter(filter).with_target(false).try_init()
    } else {
        fmt()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_env_filter(filter)
            .try_init()
    };
    // Already installed (a test harness did it first): keep that one.
    drop(result);
}
