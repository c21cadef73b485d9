//! `publish`: publish throughput and latency, switchyard against a bare
//! axum server that does no work, rounds alternating.

use anyhow::Result;
use serde_json::Map;

use crate::bare::BareServer;
use crate::cli::{PublishParams, ServerArgs};
use crate::compare::{Comparison, Report};
use crate::load::{FreshRounds, Load, drive_publish};
use crate::server::Setup;
use crate::{PUBLISH_TARGET_RATIO, ROUND_PAUSE, TOPIC};

/// The names of the two servers in tables and results.
const BARE: &str = "bare axum";
const SWITCHYARD: &str = "switchyard";

pub async fn publish_scenario(params: &PublishParams, server_args: &ServerArgs) -> Result<()> {
    let binary = server_args.describe_binary()?;
    let bare = BareServer::start("/v1/topics/{topic}/events", None)?;
    let path = format!("/v1/topics/{TOPIC}/events");
    let mut fresh = FreshRounds::default();
    eprintln!(
        "publish: {} connections, {}s warm-up + {}s measured, {} rounds per server, fsync {}",
        params.connections, params.warmup_s, params.duration_s, params.rounds, params.fsync
    );
    for round in 1..=params.rounds {
        fresh
            .rounds
            .push(drive_publish(BARE, &Load::Publish, bare.url(&path), round, params, None).await?);
        tokio::time::sleep(ROUND_PAUSE).await;
        let setup = Setup::default();
        fresh
            .run(
                SWITCHYARD,
                &Load::Publish,
                (server_args, &setup),
                round,
                params,
            )
            .await?;
    }
    drop(bare);

    let FreshRounds {
        rounds,
        log_lines,
        data_fs,
    } = fresh;
    let comparison = Comparison::of(&rounds, BARE, SWITCHYARD);
    let report = Report {
        scenario: "publish",
        sent: "structured events".into(),
        notes: vec![
            "CPU columns: seconds in the measured window; client = this tool (and the in-process bare server), other = the rest of the machine".into(),
        ],
        findings: Vec::new(),
        target: PUBLISH_TARGET_RATIO,
        condition: None,
        verdict_text: format!("≥ {PUBLISH_TARGET_RATIO}× bare axum"),
        headline_target: format!("publish ≥ {PUBLISH_TARGET_RATIO}× bare axum"),
        measured_extra: String::new(),
        keys: ("bare", "switchyard"),
        results: Map::new(),
    };
    comparison.report(report, params, &rounds, binary, &data_fs, &log_lines)
}
