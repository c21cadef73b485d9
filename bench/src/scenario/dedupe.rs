//! `dedupe`: publish to a topic that remembers every event's `source` and
//! `id` for its dedupe window (the default, 24 h) against the same publish
//! to a topic with `dedupe_window = "0"`: what idempotent publish costs.

use anyhow::Result;
use serde_json::Map;

use crate::DEDUPE_TARGET_RATIO;
use crate::cli::{PublishParams, ServerArgs};
use crate::compare::{Comparison, Report};
use crate::load::FreshRounds;
use crate::server::Setup;

const OFF_SIDE: &str = "dedupe off";
const ON_SIDE: &str = "dedupe on";

/// The same load, fresh servers per round, rounds alternating: one side's
/// topic has the default dedupe window, the other's none. Every event has a
/// new id, so the window side stores each one too, and pays for looking it
/// up and remembering it.
pub async fn dedupe_scenario(params: &PublishParams, server_args: &ServerArgs) -> Result<()> {
    let binary = server_args.describe_binary()?;
    let off = Setup {
        dedupe_off: true,
        ..Setup::default()
    };
    let on = Setup::default();
    let fresh = FreshRounds::alternate(
        "dedupe",
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
    let comparison = Comparison::of(&rounds, OFF_SIDE, ON_SIDE);
    let report = Report {
        scenario: "dedupe",
        sent: "structured events, each with a new id".into(),
        notes: vec![
            "dedupe on: the topic's default dedupe_window (24h), so each publish is looked up in \
             and added to the embedded log's index of identities; dedupe off: dedupe_window = \"0\""
                .into(),
            "a fresh server per round".into(),
        ],
        findings: Vec::new(),
        target: DEDUPE_TARGET_RATIO,
        condition: None,
        verdict_text: format!("dedupe on ≥ {DEDUPE_TARGET_RATIO}× dedupe off"),
        headline_target: format!("idempotent publish ≥ {DEDUPE_TARGET_RATIO}× dedupe off"),
        measured_extra: String::new(),
        keys: ("dedupe_off", "dedupe_on"),
        results: Map::new(),
    };
    comparison.report(report, params, &rounds, binary, &data_fs, &log_lines)
}
