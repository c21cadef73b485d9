//! Logs and traces. Logs go to stderr as text or JSON; traces are exported
//! over OTLP/HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, named by
//! `OTEL_SERVICE_NAME` (default `switchyard`); the SDK's own variables
//! (`OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`, …) apply.
//!
//! One trace runs from a producer through the bus to a target and back: a
//! request's W3C `traceparent` is the parent of the publish span, whose
//! context is stored in the event's `traceparent` extension (CloudEvents
//! distributed tracing); a handler's delivery continues that trace, sends
//! its own `traceparent` on the outbound call, and its result or dead
//! letter carries it on. Without an exporter no trace is built: the spans
//! are plain `tracing` spans, and a request's `traceparent` is stored in
//! the event as it came.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether traces are exported (set once, at start).
static EXPORTING: AtomicBool = AtomicBool::new(false);
/// Whether log lines are JSON, which name the trace (set once, at start).
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Whether spans carry OpenTelemetry contexts worth propagating.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Flushes and stops the exporter when dropped (outside the runtime).
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("warning: the trace exporter did not shut down cleanly: {err}");
        }
    }
}

fn configured(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Starts logging (and exporting traces when configured). Call before the
/// async runtime starts; keep the answer until it has stopped.
pub fn init(json: bool) -> Telemetry {
    JSON_LOGS.store(json, Ordering::Relaxed);
    // rmcp's service logs an ERROR for every MCP client that hangs up with
    // a stream open (a normal end of a listen): not an operator's problem,
    // so its service log is off; the rest of rmcp logs warnings.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn,rmcp::service=off"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match json {
        true => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        false => {
            // Colour only for a person at a terminal, and never with NO_COLOR.
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            logs.with_ansi(colour).boxed()
        }
    };
    let (traces, provider, problem) = match exporter() {
        Ok(Some(provider)) => {
            let tracer = provider.tracer("switchyard");
            // Spans carry their own fields, not where and on which thread
            // they ran (a cost per span that nobody reads). Entering a span
            // does not make its context OpenTelemetry's current one: nothing
            // here reads that (contexts are taken from the spans), and it
            // cost a thread-local push and pop on every poll of a span's
            // future.
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_context_activation(false)
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                    meta.is_span()
                        && meta.target().starts_with("switchyard")
                        && *meta.level() <= tracing::Level::INFO
                }));
            EXPORTING.store(true, Ordering::Relaxed);
            (Some(layer), Some(provider), None)
        }
        Ok(None) => (None, None, None),
        Err(problem) => (None, None, Some(problem)),
    };
    // `RUST_LOG` filters the log lines only: spans are exported at their
    // own level whatever it says.
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .init();
    if let Some(problem) = problem {
        tracing::warn!(%problem, "traces are not exported");
    }
    Telemetry { provider }
}

fn exporter() -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, String> {
    if !configured("OTEL_EXPORTER_OTLP_ENDPOINT")
        && !configured("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|err| format!("the OTLP exporter: {err}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !configured("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("switchyard");
    }
    Ok(Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// Whether `text` is a valid W3C `traceparent`.
pub fn is_traceparent(text: &str) -> bool {
    let carrier = HashMap::from([("traceparent".to_owned(), text.to_owned())]);
    TraceContextPropagator::new()
        .extract(&carrier)
        .span()
        .span_context()
        .is_valid()
}

/// Makes `span` a child of the W3C context `traceparent` (and
/// `tracestate`), when traces are exported and the context is valid.
pub fn continue_trace(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|_| exporting()) else {
        return;
    };
    let mut carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    if let Some(tracestate) = tracestate {
        carrier.insert("tracestate".to_owned(), tracestate.to_owned());
    }
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// `span`'s W3C `traceparent`, when traces are exported.
pub fn traceparent(span: &Span) -> Option<String> {
    if !exporting() {
        return None;
    }
    let context = span.context();
    let ids = context.span().span_context().clone();
    ids.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            ids.trace_id(),
            ids.span_id(),
            ids.trace_flags().to_u8()
        )
    })
}

/// Records `span`'s trace and span ids in its `trace_id` and `span_id`
/// fields (declared empty by the span), so that JSON log lines written
/// within it carry them; nothing when traces are not exported or logs
/// are text.
pub fn record_ids(span: &Span) {
    if !exporting() || !JSON_LOGS.load(Ordering::Relaxed) {
        return;
    }
    let context = span.context();
    let ids = context.span().span_context().clone();
    if ids.is_valid() {
        span.record("trace_id", ids.trace_id().to_string());
        span.record("span_id", ids.span_id().to_string());
    }
}

/// Gives `event` the trace `traceparent` (and `tracestate`) unless it
/// carries one of its own (a producer's, per CloudEvents distributed
/// tracing).
pub fn inherit(event: &mut crate::event::CloudEvent, traceparent: &str, tracestate: Option<&str>) {
    if event.extensions.contains_key("traceparent") {
        return;
    }
    event
        .extensions
        .insert("traceparent".into(), traceparent.into());
    if let Some(tracestate) = tracestate {
        event
            .extensions
            .entry("tracestate".to_owned())
            .or_insert_with(|| tracestate.into());
    }
}
