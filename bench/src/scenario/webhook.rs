//! `webhook`: signed webhook ingestion against plain publish of the same
//! size, on one switchyard server.

use anyhow::Result;
use serde_json::{Map, json};

use crate::cli::{PublishParams, ServerArgs};
use crate::compare::{Comparison, Report};
use crate::load::{Load, drive_publish, webhook_secret};
use crate::server::{Setup, Switchyard};
use crate::{ROUND_PAUSE, TOPIC, WEBHOOK_SOURCE, WEBHOOK_TARGET_RATIO};

/// The two sides of the `webhook` scenario, both on one switchyard server.
const PUBLISH_SIDE: &str = "publish";
const WEBHOOK_SIDE: &str = "webhook";

/// Webhook ingestion against plain publish: the same client, the same
/// server process, the same body size, rounds alternating.
pub async fn webhook_scenario(params: &PublishParams, server_args: &ServerArgs) -> Result<()> {
    let binary = server_args.describe_binary()?;
    let (secret, key) = webhook_secret();
    let setup = Setup {
        webhook_secret: Some(secret),
        ..Setup::default()
    };
    let server = Switchyard::start(server_args, &setup)?;
    let pid = server.pid();
    let data_fs = server.data_filesystem();
    let publish_url = server.url(&format!("/v1/topics/{TOPIC}/events"));
    let webhook_url = server.url(&format!("/v1/webhooks/{WEBHOOK_SOURCE}"));
    let webhook = Load::Webhook(key);
    eprintln!(
        "webhook: {} connections, {}s warm-up + {}s measured, {} rounds of each, fsync {}",
        params.connections, params.warmup_s, params.duration_s, params.rounds, params.fsync
    );
    let mut rounds = Vec::new();
    for round in 1..=params.rounds {
        // One server throughout (its log grows), so alternating rounds give
        // both sides the same share of a larger log.
        rounds.push(
            drive_publish(
                PUBLISH_SIDE,
                &Load::Publish,
                publish_url.clone(),
                round,
                params,
                Some(pid),
            )
            .await?,
        );
        tokio::time::sleep(ROUND_PAUSE).await;
        rounds.push(
            drive_publish(
                WEBHOOK_SIDE,
                &webhook,
                webhook_url.clone(),
                round,
                params,
                Some(pid),
            )
            .await?,
        );
        tokio::time::sleep(ROUND_PAUSE).await;
    }
    let log_lines = server.log_lines();
    drop(server);

    let comparison = Comparison::of(&rounds, PUBLISH_SIDE, WEBHOOK_SIDE);
    let duplicates: u64 = rounds.iter().map(|r| r.duplicates).sum();
    let mut results = Map::new();
    results.insert("duplicates".into(), json!(duplicates));
    let report = Report {
        scenario: "webhook",
        sent: format!(
            "bodies (structured CloudEvents to publish, Standard Webhooks-signed JSON to /v1/webhooks/{WEBHOOK_SOURCE})"
        ),
        notes: vec![
            "one switchyard server for all rounds; CPU columns: seconds in the measured window, other = the rest of the machine".into(),
        ],
        findings: vec![format!(
            "webhooks answered as duplicates (stored nothing): {duplicates}"
        )],
        target: WEBHOOK_TARGET_RATIO,
        condition: Some((duplicates == 0, "no duplicates")),
        verdict_text: format!("webhook ≥ {WEBHOOK_TARGET_RATIO}× publish"),
        headline_target: format!("webhook ≥ {WEBHOOK_TARGET_RATIO}× publish"),
        measured_extra: String::new(),
        keys: ("publish", "webhook"),
        results,
    };
    comparison.report(report, params, &rounds, binary, &data_fs, &log_lines)
}
