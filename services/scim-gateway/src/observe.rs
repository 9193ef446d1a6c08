//! The gateway's traces and metrics: a span per request (continuing an incoming W3C context, and
//! handed on to user-directory in the gRPC metadata), `http.server.request.duration` by tenant,
//! route, method and status, failed authentications, and requests refused by a limit or a pause.
//! Routes are templates (`/scim/v2/Users/{id}`), never paths: paths and queries hold personal data.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use telemetry::{Counter, Histogram, KeyValue};
use tracing::Instrument;

use crate::auth::TenantCtx;

struct Metrics {
    duration: Histogram<f64>,
    auth_failures: Counter<u64>,
    refused: Counter<u64>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = telemetry::meter();
        Metrics {
            duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP requests served")
                .build(),
            auth_failures: meter.u64_counter("auth.failures").with_description("Failed authentications").build(),
            refused: meter
                .u64_counter("requests.refused")
                .with_description("Requests refused by a rate limit, a failed-auth block or a pause")
                .build(),
        }
    })
}

/// Counts a failed authentication (`reason`: `missing`, `invalid`).
pub fn auth_failed(reason: &'static str) {
    metrics().auth_failures.add(1, &[KeyValue::new("reason", reason)]);
}

/// Counts a refused request (`reason`: `rate_limited`, `in_flight`, `auth_limited`, `paused`).
pub fn refused(reason: &'static str, tenant: Option<&str>) {
    let tenant = KeyValue::new("tenant", tenant.unwrap_or("").to_owned());
    metrics().refused.add(1, &[KeyValue::new("reason", reason), tenant]);
}

/// Middleware (outermost, after routing): the request's span and its measurements.
pub async fn observe(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = request.method().clone();
    if route == "/healthz" || route == "/readyz" {
        // Probes: every few seconds from every kubelet; not worth a trace or a metric.
        return next.run(request).await;
    }
    let span = tracing::info_span!(
        "http",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        tenant = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    telemetry::adopt(&span, telemetry::extract_http(request.headers()));
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let tenant = response.extensions().get::<Arc<TenantCtx>>().map(|t| t.subdomain.clone()).unwrap_or_default();
    span.record("http.response.status_code", status);
    if !tenant.is_empty() {
        span.record("tenant", tenant.as_str());
    }
    if status >= 500 {
        span.in_scope(|| tracing::warn!(status, "request failed"));
    }
    metrics().duration.record(
        started.elapsed().as_secs_f64(),
        &[
            KeyValue::new("tenant", tenant),
            KeyValue::new("http.route", route),
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ],
    );
    response
}
