//! Logging, tracing, metrics and context propagation shared by the services.
//!
//! - Logs: `tracing` with a filter from `RUST_LOG` (default `info`), written as JSON lines (for log
//!   collectors) or, with `LOG_FORMAT=text`, as human-readable lines (for `make run`), always on
//!   stderr so that commands' output on stdout stays machine-readable. The span of each hop (an
//!   HTTP request, a gRPC call, a relayed or consumed event) carries `trace_id` and `span_id`, so
//!   every JSON line logged inside it names its trace.
//! - Traces and metrics: exported over OTLP (gRPC) when the standard variables are set
//!   (`OTEL_EXPORTER_OTLP_ENDPOINT`, or the per-signal `..._TRACES_ENDPOINT` /
//!   `..._METRICS_ENDPOINT`); off otherwise. `OTEL_SERVICE_NAME` defaults to the binary's name,
//!   `OTEL_RESOURCE_ATTRIBUTES` adds to the resource, `OTEL_METRIC_EXPORT_INTERVAL` (ms) sets how
//!   often metrics are pushed.
//! - Propagation: W3C `traceparent` across gRPC metadata, NATS headers and the outbox.
//!
//! Messages are lower-case and structured; no personal data and no secret is ever a field or an
//! attribute (an email is logged as its domain at most; tenants are named by subdomain).

use std::collections::HashMap;

use opentelemetry::propagation::Injector;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

pub use opentelemetry::KeyValue;
pub use opentelemetry::metrics::{AsyncInstrument, Counter, Histogram, Meter};

/// The installed exporters; [`Telemetry::shutdown`] flushes them (call it last, at shutdown).
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Whether traces are exported.
    pub fn exporting(&self) -> bool {
        self.tracer.is_some()
    }

    /// Exports what is buffered and stops the exporters.
    pub fn shutdown(self) {
        if let Some(t) = self.tracer
            && let Err(e) = t.shutdown()
        {
            eprintln!("flushing traces at shutdown: {e}");
        }
        if let Some(m) = self.meter
            && let Err(e) = m.shutdown()
        {
            eprintln!("flushing metrics at shutdown: {e}");
        }
    }
}

fn set(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.trim().is_empty())
}

/// Installs the global subscriber, propagator and (when configured) the OTLP exporters. Call
/// once, first thing in `main`, inside the Tokio runtime; `service` names the service unless
/// `OTEL_SERVICE_NAME` does.
pub fn init(service: &str) -> Telemetry {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let name = std::env::var("OTEL_SERVICE_NAME").ok().filter(|n| !n.trim().is_empty());
    let resource = Resource::builder().with_service_name(name.unwrap_or_else(|| service.to_owned())).build();
    let any = set("OTEL_EXPORTER_OTLP_ENDPOINT");
    let mut telemetry = Telemetry::default();
    let mut problems = Vec::new();
    if any || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
            Ok(exporter) => {
                telemetry.tracer = Some(
                    SdkTracerProvider::builder().with_resource(resource.clone()).with_batch_exporter(exporter).build(),
                );
            }
            Err(e) => problems.push(format!("traces: {e}")),
        }
    }
    if any || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
        match opentelemetry_otlp::MetricExporter::builder().with_tonic().build() {
            Ok(exporter) => {
                let provider =
                    SdkMeterProvider::builder().with_resource(resource).with_periodic_exporter(exporter).build();
                global::set_meter_provider(provider.clone());
                telemetry.meter = Some(provider);
            }
            Err(e) => problems.push(format!("metrics: {e}")),
        }
    }

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let text = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"));
    let logs = if text {
        fmt::layer().with_writer(std::io::stderr).with_target(false).boxed()
    } else {
        fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    };
    let otel = telemetry.tracer.as_ref().map(|p| {
        let tracer = p.tracer(service.to_owned());
        tracing_opentelemetry::layer().with_tracer(tracer).with_tracked_inactivity(false)
    });
    // Already installed (a test harness did it first): keep that one.
    let _ = tracing_subscriber::registry().with(filter).with(logs).with(otel).try_init();
    for p in problems {
        tracing::error!(problem = %p, "OpenTelemetry export could not be set up; continuing without it");
    }
    telemetry
}

/// The meter every instrument of the services is made from.
pub fn meter() -> Meter {
    global::meter("provisioning")
}

/// Reports a connection pool (`db.client.connection.count` by state, and `.max`): `read` answers
/// (open connections, idle ones).
pub fn observe_pool(name: &'static str, max: u32, read: impl Fn() -> (u32, usize) + Send + Sync + 'static) {
    let meter = meter();
    meter
        .i64_observable_gauge("db.client.connection.count")
        .with_description("Database connections, by state")
        .with_callback(move |o| {
            let (size, idle) = read();
            let idle = i64::try_from(idle).unwrap_or(0);
            let pool = KeyValue::new("db.client.connection.pool.name", name);
            o.observe(idle, &[pool.clone(), KeyValue::new("db.client.connection.state", "idle")]);
            o.observe(i64::from(size) - idle, &[pool, KeyValue::new("db.client.connection.state", "used")]);
        })
        .build();
    meter
        .i64_observable_gauge("db.client.connection.max")
        .with_description("The pool's connection limit")
        .with_callback(move |o| o.observe(i64::from(max), &[KeyValue::new("db.client.connection.pool.name", name)]))
        .build();
}

/// The current span's context as W3C headers (`traceparent`, maybe `tracestate`); empty when
/// nothing is traced.
pub fn current_headers() -> HashMap<String, String> {
    headers_of(&Span::current().context())
}

/// A context as W3C headers.
pub fn headers_of(cx: &Context) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if cx.span().span_context().is_valid() {
        global::get_text_map_propagator(|p| p.inject_context(cx, &mut MapInjector(&mut map)));
    }
    map
}

/// A span's context as W3C headers (to hand on what it started).
pub fn span_headers(span: &Span) -> HashMap<String, String> {
    headers_of(&span.context())
}

/// The context a stored `traceparent` names.
pub fn context_of(traceparent: Option<&str>) -> Context {
    extract(|k| (k == "traceparent").then(|| traceparent.map(str::to_owned)).flatten())
}

/// The current span's `traceparent`, to keep beside work that continues later (the outbox).
pub fn current_traceparent() -> Option<String> {
    current_headers().remove("traceparent")
}

/// The context W3C headers describe (an empty one when they describe none).
pub fn extract(get: impl Fn(&str) -> Option<String>) -> Context {
    let map: HashMap<String, String> =
        ["traceparent", "tracestate"].iter().filter_map(|k| get(k).map(|v| ((*k).to_owned(), v))).collect();
    global::get_text_map_propagator(|p| p.extract(&map))
}

/// The context an HTTP (or gRPC) request's headers carry.
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    extract(|k| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned))
}

/// Writes the current span's context into HTTP (or gRPC) headers.
pub fn inject_http(headers: &mut http::HeaderMap) {
    for (k, v) in current_headers() {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(k), http::HeaderValue::try_from(v)) {
            headers.insert(name, value);
        }
    }
}

/// Makes `span` continue the trace of `parent` (when there is one) and records its ids in the
/// span's `trace_id` / `span_id` fields, so that logs inside it name their trace. Call right
/// after creating the span, before entering it.
pub fn adopt(span: &Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    record_ids(span);
}

/// Records a span's trace and span ids into its `trace_id` / `span_id` fields (declared
/// `tracing::field::Empty`).
pub fn record_ids(span: &Span) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}

struct MapInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}
