//! The HTTP server: an accept loop over hyper's HTTP/1.1 connections, with the limits
//! `axum::serve` does not set.
//!
//! - **Header timeout** (`HTTP_HEADER_TIMEOUT_SECS`): a client must send a request's headers
//!   within this long of the gateway waiting for them, or the connection is closed (hyper's
//!   `header_read_timeout`; an idle keep-alive connection is closed after the same time).
//! - **Body timeout** (`HTTP_BODY_TIMEOUT_SECS`): reading a request's body may take this long in
//!   all, from its first read ([`DeadlineBody`]); then the request is answered 408 and the
//!   connection is closed (its body was not read to the end).
//! - **Connection cap** (`HTTP_MAX_CONNECTIONS`): at the cap no further connection is accepted
//!   until one closes; new ones wait in the kernel's listen backlog and are served then (a
//!   short burst costs latency, not errors). With the header timeout, a client holding
//!   connections open without sending requests frees its slots within that timeout.
//!
//! HTTP/1.1 only: identity providers and the ingress speak it to the gateway (the Service's
//! `appProtocol: http`), and HTTP/2 over cleartext has no header timeout in hyper.
//!
//! Shutdown is as before: once the shutdown future completes (after `SHUTDOWN_DELAY_SECS` of
//! serving unready), the listener is closed, every connection finishes its in-flight request
//! and closes, and [`serve`] returns when the last one has.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::AppState;

/// The server's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: u32,
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and returns once
/// every connection has finished its in-flight request. Each request carries the peer's
/// [`ConnectInfo<std::net::SocketAddr>`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let stop = CancellationToken::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first: at the cap, nothing is accepted (connections wait in the backlog).
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(Body::new))
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("no longer accepting connections; finishing in-flight requests");
    stop.cancel();
    // Every slot back: every connection has closed.
    let _ = slots.acquire_many(limits.max_connections).await;
}

/// Middleware (outermost): every request body may be read for at most `HTTP_BODY_TIMEOUT_SECS`.
pub async fn body_deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let timeout = state.config.http_body_timeout();
    next.run(request.map(|body| Body::new(DeadlineBody::new(body, timeout)))).await
}

/// A request body that fails with [`BodyTimedOut`] when it is not read to its end within its
/// timeout of the first read. Data already received is always handed out first, so a body sent
/// in full never times out, however late it is read.
pub struct DeadlineBody {
    inner: Body,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
}

impl DeadlineBody {
    pub fn new(inner: Body, timeout: Duration) -> Self {
        DeadlineBody { inner, timeout, deadline: None, timed_out: false }
    }
}

/// The error of a [`DeadlineBody`] read too slowly.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received in time")]
pub struct BodyTimedOut;

/// Whether a body read failed because the client sent it too slowly.
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<BodyTimedOut>())
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(None);
        }
        let timeout = this.timeout;
        let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.timed_out = true;
                Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures::StreamExt as _;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_body_sent_too_slowly_fails_and_one_sent_in_full_does_not() {
        // A body that sends one chunk and then nothing.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
        tx.send(Ok(Bytes::from_static(b"{\"a\":"))).await.unwrap();
        let slow = Body::from_stream(tokio_stream_from(rx));
        let mut stream = Body::new(DeadlineBody::new(slow, Duration::from_secs(5))).into_data_stream();
        assert_eq!(stream.next().await.unwrap().unwrap(), Bytes::from_static(b"{\"a\":"));
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(is_body_timeout(&err), "{err}");
        drop(tx);

        // A body already received is read whatever the time.
        let full = Body::new(DeadlineBody::new(Body::from("{}"), Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(axum::body::to_bytes(full, 100).await.unwrap(), Bytes::from_static(b"{}"));
        // An empty body stays visibly empty (the Content-Type check relies on it).
        assert!(http_body::Body::is_end_stream(&DeadlineBody::new(Body::empty(), Duration::from_secs(5))));
    }

    /// Reads one response's head and body (`Content-Length` bodies only) from a raw connection.
    async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt as _;
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let text = String::from_utf8_lossy(&seen).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return text;
                }
            }
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a whole response: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    }

    /// The accept loop keeps `axum::serve`'s contract: each request has the peer's address; on
    /// shutdown no new connection is accepted, the request in flight is finished, and `serve`
    /// returns once it has.
    #[tokio::test]
    async fn shutdown_stops_accepting_and_finishes_the_request_in_flight() {
        use tokio::io::AsyncWriteExt as _;
        let release = Arc::new(tokio::sync::Notify::new());
        let started = Arc::new(tokio::sync::Notify::new());
        let (r, s) = (release.clone(), started.clone());
        let router = Router::new()
            .route(
                "/peer",
                axum::routing::get(
                    |ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| async move { peer.to_string() },
                ),
            )
            .route(
                "/slow",
                axum::routing::get(move || async move {
                    s.notify_one();
                    r.notified().await;
                    "done"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let limits = Limits { header_timeout: Duration::from_secs(30), max_connections: 10 };
        let server = tokio::spawn(serve(listener, router, limits, async move { shutdown.cancelled().await }));

        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let answer = read_response(&mut client).await;
        assert!(answer.ends_with(&client.local_addr().unwrap().to_string()), "{answer}");

        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        started.notified().await;
        stop.cancel();
        // No longer accepting: a new connection is refused (once the listener is closed).
        let mut refused = false;
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(refused, "still accepting after shutdown");
        assert!(!server.is_finished(), "a request is in flight");
        release.notify_one();
        let answer = read_response(&mut slow).await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"), "{answer}");
        tokio::time::timeout(Duration::from_secs(20), server).await.unwrap().unwrap();
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures::Stream<Item = T> + Send + 'static {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
