//! `tracing`: publish with traces exported over OTLP/HTTP (to a local
//! endpoint that answers every export at once) against the same publish
//! with no exporter configured: what OpenTelemetry costs when it is on.
//! A third side samples a tenth of the traces (the SDK's own
//! `parentbased_traceidratio` sampler), the usual setting at high rates.
//! With it off, a publish's span is a disabled callsite (the bench server
//! logs at `warn`), so the off side is the plain publish path.

use std::sync::Arc;

use anyhow::Result;
use serde_json::{Map, json};

use crate::TRACING_TARGET_RATIO;
use crate::bare::{BareServer, Hits};
use crate::cli::{PublishParams, ServerArgs};
use crate::compare::{Comparison, Report};
use crate::load::FreshRounds;
use crate::server::Setup;

const OFF_SIDE: &str = "tracing off";
const ON_SIDE: &str = "tracing on";
const SAMPLED_SIDE: &str = "tracing 10%";
/// The sampled side's share of traces.
const SAMPLE_RATIO: f64 = 0.1;

/// The same load, fresh servers per round, rounds alternating: one side
/// exports every publish's span to a collector on loopback, one exports a
/// tenth of them, the third has no endpoint.
pub async fn tracing_scenario(params: &PublishParams, server_args: &ServerArgs) -> Result<()> {
    let binary = server_args.describe_binary()?;
    let exports = Arc::new(Hits::new());
    let collector = BareServer::start("/v1/traces", Some(Arc::clone(&exports)))?;
    let off = Setup::default();
    let on = Setup {
        otlp_endpoint: Some(collector.url("")),
        ..Setup::default()
    };
    let sampled = Setup {
        trace_sample_ratio: Some(SAMPLE_RATIO),
        ..on.clone()
    };
    let fresh = FreshRounds::alternate(
        "tracing",
        [(OFF_SIDE, &off), (ON_SIDE, &on), (SAMPLED_SIDE, &sampled)],
        server_args,
        params,
    )
    .await?;
    let FreshRounds {
        rounds,
        log_lines,
        data_fs,
    } = fresh;
    let exported = exports.count();
    let comparison = Comparison::of(&rounds, OFF_SIDE, ON_SIDE);
    let sampling = Comparison::of(&rounds, OFF_SIDE, SAMPLED_SIDE);
    let cpu = |c: &Comparison| {
        c.measured
            .server_cpu_us_per_request
            .map_or_else(|| "-".to_owned(), |us| format!("{us:.0} µs"))
    };
    let mut results = Map::new();
    results.insert("otlp_exports".into(), json!(exported));
    results.insert("sampled_ratio".into(), json!(sampling.ratio));
    results.insert("sampled_round_ratios".into(), json!(sampling.round_ratios));
    results.insert(
        "sampled_server_cpu_us_per_request".into(),
        json!(sampling.measured.server_cpu_us_per_request),
    );
    let report = Report {
        scenario: "tracing",
        sent: "structured events, each with a new id".into(),
        notes: vec![
            format!(
                "{ON_SIDE}: OTEL_EXPORTER_OTLP_ENDPOINT names a local collector (an axum route \
                 answering each export at once), spans go out in the SDK's default batches; \
                 {SAMPLED_SIDE}: the same with OTEL_TRACES_SAMPLER=parentbased_traceidratio and \
                 OTEL_TRACES_SAMPLER_ARG={SAMPLE_RATIO}; {OFF_SIDE}: no endpoint"
            ),
            "a fresh server per round".into(),
        ],
        findings: vec![
            format!("the collector received {exported} OTLP exports from the tracing-on rounds"),
            format!(
                "{SAMPLED_SIDE} / {OFF_SIDE}: {} (server CPU per request {} vs {} with every \
                 trace exported)",
                sampling.measured_text(),
                cpu(&sampling),
                cpu(&comparison),
            ),
        ],
        target: TRACING_TARGET_RATIO,
        condition: None,
        verdict_text: format!("tracing on ≥ {TRACING_TARGET_RATIO}× tracing off"),
        headline_target: format!("publish with traces exported ≥ {TRACING_TARGET_RATIO}× without"),
        measured_extra: format!(
            "; {:.2}× with {:.0}% of traces sampled",
            sampling.ratio,
            SAMPLE_RATIO * 100.0
        ),
        keys: ("tracing_off", "tracing_on"),
        results,
    };
    comparison.report(report, params, &rounds, binary, &data_fs, &log_lines)
}
