//! `tracing`: publish with traces exported over OTLP/HTTP (to a local
//! endpoint that answers every export at once) against the same publish
//! with no exporter configured: what OpenTelemetry costs when it is on.
//! With it off, a publish's spans are disabled callsites (the bench
//! server logs at `warn`), so the off side is the plain publish path.

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

/// The same load, fresh servers per round, rounds alternating: one side
/// exports every publish's spans (`publish`, `append`) to a collector on
/// loopback, the other has no endpoint.
pub async fn tracing_scenario(params: &PublishParams, server_args: &ServerArgs) -> Result<()> {
    let binary = server_args.describe_binary()?;
    let exports = Arc::new(Hits::new());
    let collector = BareServer::start("/v1/traces", Some(Arc::clone(&exports)))?;
    let off = Setup::default();
    let on = Setup {
        otlp_endpoint: Some(collector.url("")),
        ..Setup::default()
    };
    let fresh = FreshRounds::alternate(
        "tracing",
        [(OFF_SIDE, &off), (ON_SIDE, &on)],
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
    let mut results = Map::new();
    results.insert("otlp_exports".into(), json!(exported));
    let report = Report {
        scenario: "tracing",
        sent: "structured events, each with a new id".into(),
        notes: vec![
            "tracing on: OTEL_EXPORTER_OTLP_ENDPOINT names a local collector (an axum route \
             answering each export at once), spans go out in the SDK's default batches; \
             tracing off: no endpoint"
                .into(),
            "a fresh server per round".into(),
        ],
        findings: vec![format!(
            "the collector received {exported} OTLP exports from the tracing-on rounds"
        )],
        target: TRACING_TARGET_RATIO,
        condition: None,
        verdict_text: format!("tracing on ≥ {TRACING_TARGET_RATIO}× tracing off"),
        headline_target: format!("publish with traces exported ≥ {TRACING_TARGET_RATIO}× without"),
        measured_extra: String::new(),
        keys: ("tracing_off", "tracing_on"),
        results,
    };
    comparison.report(report, params, &rounds, binary, &data_fs, &log_lines)
}
