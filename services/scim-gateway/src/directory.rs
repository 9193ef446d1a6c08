//! The channel to user-directory, wrapped so that the ids of the events a call caused (the
//! directory answers writes with them in `x-event-ids`) reach the request log without every
//! handler passing them along: they are collected into the calling request's task-local list.
//! It also hands the calling request's trace context on, in the call's metadata.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http;
use tonic::transport::Channel;

tokio::task_local! {
    /// The event ids of the request being served (set up by the request log).
    pub static EVENT_IDS: RefCell<Vec<String>>;
}

/// The directory client the gateway uses.
pub type DirectoryClient = proto::directory::v1::directory_client::DirectoryClient<CaptureEvents<Channel>>;

/// A service that presents the gateway's token on every call and notes `x-event-ids` of every
/// response.
#[derive(Debug, Clone)]
pub struct CaptureEvents<S> {
    inner: S,
    /// `Bearer <DIRECTORY_TOKEN>`, marked sensitive (never logged); none without a token.
    authorization: Option<http::HeaderValue>,
}

impl<S> CaptureEvents<S> {
    pub fn new(inner: S, token: Option<&secrecy::SecretString>) -> Result<Self, http::header::InvalidHeaderValue> {
        use secrecy::ExposeSecret as _;
        let authorization = token
            .map(|t| {
                http::HeaderValue::from_str(&format!("Bearer {}", t.expose_secret().trim())).map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
            })
            .transpose()?;
        Ok(CaptureEvents { inner, authorization })
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for CaptureEvents<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The call continues the request's trace in user-directory.
        telemetry::inject_http(request.headers_mut());
        if let Some(authorization) = &self.authorization {
            request.headers_mut().insert(http::header::AUTHORIZATION, authorization.clone());
        }
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            if let Some(ids) = response.headers().get("x-event-ids").and_then(|v| v.to_str().ok()) {
                let ids = ids.split(',').map(str::to_owned);
                // Outside a logged request (the recorder's own calls) there is no list: nothing to note.
                let _ = EVENT_IDS.try_with(|list| list.borrow_mut().extend(ids));
            }
            Ok(response)
        })
    }
}
