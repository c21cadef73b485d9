//! The scenarios, one file each, and `all`, which runs every one in turn
//! and then regenerates the summary in RESULTS.md.

pub mod auth;
pub mod backends;
pub mod dedupe;
pub mod filter;
pub mod handler;
pub mod mcp;
pub mod micro;
pub mod publish;
pub mod scaleout;
pub mod stream;
pub mod tracing;
pub mod webhook;

use std::time::Instant;

use anyhow::{Result, bail};

use crate::cli::{
    BackendsArgs, HandlerArgs, McpArgs, PublishArgs, ScaleoutArgs, ServerArgs, StreamArgs,
};
use crate::report::{RESULTS_MD, write_summary};
use crate::{FANOUT_DEFAULT_RATE, LATENCY_TARGET_RATE};
use auth::auth_scenario;
use backends::backends_scenario;
use dedupe::dedupe_scenario;
use filter::filter_scenario;
use handler::handler_scenario;
use mcp::mcp_scenario;
use micro::{criterion_dir, micro_scenario};
use publish::publish_scenario;
use scaleout::scaleout_scenario;
use stream::{StreamKind, stream_scenario};
use webhook::webhook_scenario;

/// The scenarios `all` runs, in order, and the rows of the summary table.
pub const ALL_SCENARIOS: [&str; 13] = [
    "publish", "latency", "fanout", "webhook", "auth", "dedupe", "tracing", "handler", "filter",
    "backends", "scaleout", "mcp", "micro",
];

pub async fn all_scenarios(quick: bool, server: &ServerArgs) -> Result<()> {
    let started = Instant::now();
    let publish = PublishArgs::defaults(quick, server);
    let stream = StreamArgs {
        subscribers: None,
        rate: None,
        duration: None,
        idle: None,
        quick,
        server: server.clone(),
    };
    let handler = HandlerArgs {
        events: None,
        timeout: None,
        quick,
        server: server.clone(),
    };
    let backends = BackendsArgs {
        publish: PublishArgs::defaults(quick, server),
        subscribers: None,
        rate: None,
        latency_duration: None,
    };
    let scaleout = ScaleoutArgs::defaults(quick, server);
    let mcp = McpArgs::defaults(quick, server);
    let mut failed = Vec::new();
    for scenario in ALL_SCENARIOS {
        eprintln!("\n=== {scenario} ===");
        let outcome = match scenario {
            "publish" => publish_scenario(&publish.params(), server).await,
            "latency" => {
                stream_scenario(
                    StreamKind::Latency,
                    &stream.params(LATENCY_TARGET_RATE),
                    server,
                )
                .await
            }
            "fanout" => {
                stream_scenario(
                    StreamKind::Fanout,
                    &stream.params(FANOUT_DEFAULT_RATE),
                    server,
                )
                .await
            }
            "webhook" => webhook_scenario(&publish.params(), server).await,
            "auth" => auth_scenario(&publish.params(), server).await,
            "dedupe" => dedupe_scenario(&publish.params(), server).await,
            "tracing" => tracing::tracing_scenario(&publish.params(), server).await,
            "handler" => handler_scenario(&handler.params(), server).await,
            "filter" => filter_scenario(&handler.params(), server).await,
            "backends" => backends_scenario(&backends.params(), server).await,
            "scaleout" => scaleout_scenario(&scaleout.params(), &scaleout.server_args()).await,
            "mcp" => mcp_scenario(&mcp.params(), server).await,
            // Only reads what `cargo bench` left; without it the row stays
            // as it was, and the run does not fail.
            "micro" => micro_scenario(&criterion_dir(), false),
            other => unreachable!("{other} is not in ALL_SCENARIOS"),
        };
        // One failing scenario should not cost the others' results.
        if let Err(err) = outcome {
            eprintln!("error: {scenario} failed: {err:#}");
            failed.push(scenario);
        }
    }
    write_summary()?;
    eprintln!(
        "all scenarios took {:.0}s; summary regenerated in {RESULTS_MD}",
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("these scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}
