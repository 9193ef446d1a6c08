//! user-directory's traces and metrics: a span per gRPC call continuing the caller's trace (W3C
//! context in the metadata), `rpc.server.call.duration`, the database pool's connections, the
//! outbox backlog, the relay's publications and the brake's trips.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use telemetry::{Counter, Histogram, KeyValue};
use tracing::Instrument;

use crate::store::Backlog;

/// The instruments, made once from the global meter (after `telemetry::init`).
pub struct Metrics {
    pub rpc_duration: Histogram<f64>,
    pub relay_published: Counter<u64>,
    pub brake_trips: Counter<u64>,
    /// What the active relay saw last (none on a replica whose relay waits).
    pub backlog: Arc<Mutex<Option<Backlog>>>,
}

/// The service's instruments.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = telemetry::meter();
        let backlog: Arc<Mutex<Option<Backlog>>> = Arc::default();
        let rows = backlog.clone();
        meter
            .i64_observable_gauge("outbox.backlog")
            .with_description("Outbox rows not yet published to the stream")
            .with_callback(move |o| {
                if let Some(b) = *rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
                    o.observe(b.rows, &[]);
                }
            })
            .build();
        let age = backlog.clone();
        meter
            .f64_observable_gauge("outbox.oldest_age")
            .with_unit("s")
            .with_description("Age of the oldest unpublished outbox row")
            .with_callback(move |o| {
                if let Some(b) = *age.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
                    o.observe(b.oldest_age_secs, &[]);
                }
            })
            .build();
        Metrics {
            rpc_duration: meter
                .f64_histogram("rpc.server.call.duration")
                .with_unit("s")
                .with_description("Duration of gRPC calls served")
                .build(),
            relay_published: meter
                .u64_counter("relay.published")
                .with_description("Events the relay published to the stream")
                .build(),
            brake_trips: meter
                .u64_counter("brake.trips")
                .with_description("Times the mass-deprovision brake tripped")
                .build(),
            backlog,
        }
    })
}

/// Reports the database pool's connections; those waiting for the next single statement are
/// idle too.
pub fn observe_pool(pool: sqlx::PgPool, statements: infra::Statements, name: &'static str) {
    let max = pool.options().get_max_connections();
    telemetry::observe_pool(name, max, move || (pool.size(), pool.num_idle() + statements.idle()));
}

/// A tower layer for the gRPC server: each call gets a span continuing the caller's trace, and
/// its duration and status are measured.
#[derive(Debug, Clone, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;
    fn layer(&self, inner: S) -> Traced<S> {
        Traced { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S, B, R> tower::Service<Request<B>> for Traced<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        if path.starts_with("/grpc.health.") {
            // Probes (kubelet, the gateway's readiness): not worth a trace or a metric.
            return Box::pin(self.inner.call(request));
        }
        let method = path.rsplit('/').next().unwrap_or(path).to_owned();
        let span = tracing::info_span!(
            "grpc",
            otel.name = %format!("directory/{method}"),
            otel.kind = "server",
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        telemetry::adopt(&span, telemetry::extract_http(request.headers()));
        let started = Instant::now();
        let call = self.inner.call(request);
        let recorded = span.clone();
        Box::pin(
            async move {
                let response = call.await?;
                // Errors come as a trailers-only response: the status is in the headers. A
                // success's status is in the trailers, and is 0.
                let status = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0);
                recorded.record("rpc.grpc.status_code", status);
                metrics().rpc_duration.record(
                    started.elapsed().as_secs_f64(),
                    &[KeyValue::new("rpc.method", method), KeyValue::new("rpc.grpc.status_code", status)],
                );
                Ok(response)
            }
            .instrument(span),
        )
    }
}
