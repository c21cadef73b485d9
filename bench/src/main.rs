//! `switchyard-bench`: the load tool behind every speed claim in `bench/`.
//!
//! It owns the measuring harness: it starts the servers under test (a bare
//! axum baseline in-process, the real `switchyard` binary as a child process
//! on a temporary directory), drives them with one client implementation over
//! loopback, and reports each run as a table on stdout plus one JSON line in
//! `bench/results.jsonl`. Speed is claimed only as a ratio to a baseline that
//! the same client measured in the same run.
//!
//! Scenarios (see `bench/README.md`):
//! - `publish`: publish throughput and latency, switchyard against bare axum;
//! - `latency`: publish→SSE delivery latency with many subscribers;
//! - `fanout`: delivery rate, lag and server cost per subscriber at a higher rate;
//! - `webhook`: signed webhook ingestion against plain publish on one server;
//! - `auth`: publish with an HS256 bearer token against publish on a server
//!   that takes none;
//! - `dedupe`: publish to a topic with its default dedupe window against
//!   the same publish with dedupe off;
//! - `tracing`: publish with traces exported over OTLP against the same
//!   publish with no exporter;
//! - `handler`: events delivered by a handler to a local sink against the same
//!   requests made by a plain client loop;
//! - `filter`: a CEL filter passing one event in ten against none, a
//!   handler draining a backlog and SSE fan-out to 100 subscribers;
//! - `backends`: the `publish` load on each backend (embedded, redis, nats,
//!   kafka), each real broker started here, beside `redis-benchmark`;
//! - `scaleout`: three switchyard processes against one on one external
//!   broker (nats, redis): a handler calling a sink that answers after
//!   20 ms, and HTTP queue workers receiving and acking;
//! - `mcp`: agents over MCP (`POST /mcp`, revision 2026-07-28): the
//!   `read_events` tool's throughput against the HTTP API's pages of the
//!   same size, and publish→notification latency with many
//!   `subscriptions/listen` streams;
//! - `micro`: records the estimates that `cargo bench --bench micro`
//!   (criterion, `bench/benches/micro.rs`) left in `target/criterion`, with
//!   the ratio of each benchmark to its group's baseline; it runs nothing;
//! - `all`: every scenario in turn (and `micro`), then the summary table of
//!   `RESULTS.md` regenerated from the newest record of each;
//! - `summary`: only that regeneration, from the records already there.
//!
//! Every run stops by itself: durations are bounded, requests time out, and
//! the child server is killed when the tool exits, fails, panics or is
//! interrupted.
//!
//! The parts: `cli` (subcommands, options, each scenario's settings);
//! `server` (the switchyard server under test, started by the test kit,
//! tests/kit) and `bare` (the in-process baseline and sink); `usage` (CPU
//! and memory from /proc); `stats` (percentiles, medians); `load` (the
//! publish-shaped load client) and `compare` (two sides' rounds compared and
//! judged); `sse` (the publish→SSE measurement); `report` (progress lines,
//! verdicts, results.jsonl and the summary in RESULTS.md); `scenario/`, one
//! file per scenario, and `all`.

mod bare;
mod cli;
mod compare;
mod load;
mod report;
mod scenario;
mod server;
mod sse;
mod stats;
mod usage;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;

use cli::{Cli, Scenario};
use scenario::backends::backends_scenario;
use scenario::mcp::mcp_scenario;
use scenario::micro::{criterion_dir, micro_scenario};
use scenario::scaleout::scaleout_scenario;
use scenario::stream::{StreamKind, stream_scenario};
use scenario::{
    all_scenarios, auth::auth_scenario, dedupe::dedupe_scenario, handler::handler_scenario,
    publish::publish_scenario, webhook::webhook_scenario,
};

/// The topic every scenario publishes to.
const TOPIC: &str = "bench";
/// The one event type the bench topic accepts.
const EVENT_TYPE: &str = "bench.event";
/// Distinct partition keys the events cycle through.
const KEYS: u64 = 64;
const STRUCTURED: &str = "application/cloudevents+json";

/// Size of one published event in the `publish` scenario.
const PUBLISH_BODY_BYTES: usize = 1024;
/// Approximate size of one event in the `latency` and `fanout` scenarios.
const STREAM_EVENT_BYTES: usize = 200;
/// Events per second the `fanout` scenario publishes by default: four times
/// the latency target's rate.
const FANOUT_DEFAULT_RATE: u64 = 200;

/// How long a child server may take to print its address.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// No single request may hang a run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A worker whose request failed to connect waits this long before the next,
/// so a dead server does not turn the run into a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// Pause between publish rounds, so one round's connections are gone before
/// the next starts.
const ROUND_PAUSE: Duration = Duration::from_secs(1);
/// SSE connections opened at once: enough to connect 1,000 quickly, few
/// enough not to overflow the server's accept backlog.
const CONNECT_CONCURRENCY: usize = 64;
/// Time for the server to settle after startup or after the subscribers
/// connect, before its memory is read.
const SETTLE: Duration = Duration::from_secs(1);
/// How long subscribers may take after the last publish to receive the rest.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Cores' worth of CPU used by other processes during a measured window
/// above which the report warns that the machine was not quiet.
const BUSY_MACHINE_CORES: f64 = 0.1;
/// Lines of the server's log shown when it reports warnings or fails.
const LOG_LINES_SHOWN: usize = 10;

/// The webhook source the bench topic declares, and the variable holding its
/// Standard Webhooks secret.
const WEBHOOK_SOURCE: &str = "bench";
const WEBHOOK_SECRET_ENV: &str = "BENCH_WEBHOOK_SECRET";
/// Standard Webhooks secrets are `whsec_` + base64 of random bytes; 32 is
/// what the common providers issue.
const WEBHOOK_SECRET_BYTES: usize = 32;

/// The variable holding the server's HS256 secret (`--jwt-secret`), and the
/// secret's size: 32 random bytes, hex-encoded, as `openssl rand -hex 32`
/// makes (the server wants at least 16 bytes).
const JWT_SECRET_ENV: &str = "SWITCHYARD_JWT_SECRET";
const JWT_SECRET_BYTES: usize = 32;
/// A token outlives the run by at least this much.
const TOKEN_TTL_MARGIN: Duration = Duration::from_secs(3600);
/// How long `switchyard token` may take to print a token.
const TOKEN_MINT_TIMEOUT: Duration = Duration::from_secs(10);

/// The handler under test, its output topics, and the sink it calls.
const HANDLER_NAME: &str = "bench-handler";
const RESULTS_TOPIC: &str = "bench-results";
const DEAD_LETTER_TOPIC: &str = "bench-dead";
const HANDLERS_DIR: &str = "handlers";
const SINK_PATH: &str = "/sink";
/// Calls in flight: the handler's `max_concurrency` and the baseline's
/// concurrent requests alike, so both have the same parallelism.
const HANDLER_CONCURRENCY: usize = 64;
/// How long pre-publishing the handler's backlog may take at most.
const PREPUBLISH_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the sink's count is checked while a handler works.
const SINK_POLL: Duration = Duration::from_millis(20);

/// The targets in bench/README.md.
const PUBLISH_TARGET_RATIO: f64 = 0.5;
const WEBHOOK_TARGET_RATIO: f64 = 0.9;
const AUTH_TARGET_RATIO: f64 = 0.95;
const DEDUPE_TARGET_RATIO: f64 = 0.9;
const TRACING_TARGET_RATIO: f64 = 0.95;
const HANDLER_TARGET_RATIO: f64 = 0.7;
const PUBLISH_TARGET_CONNECTIONS: usize = 64;
const LATENCY_TARGET_P99_MS: f64 = 10.0;
const LATENCY_TARGET_SUBSCRIBERS: usize = 1000;
const LATENCY_TARGET_RATE: u64 = 50;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build of the bench tool; build with --release for numbers that mean anything"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        // Interrupting drops the scenario's future, and with it the guards
        // that kill the child server and remove the temporary directory.
        tokio::select! {
            outcome = run(cli) => outcome,
            signal = interrupted() => signal.and_then(|()| bail!("interrupted")),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn interrupted() -> Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    raise_open_file_limit()?;
    match cli.scenario {
        Scenario::Publish(args) => publish_scenario(&args.params(), &args.server).await,
        Scenario::Webhook(args) => webhook_scenario(&args.params(), &args.server).await,
        Scenario::Auth(args) => auth_scenario(&args.params(), &args.server).await,
        Scenario::Dedupe(args) => dedupe_scenario(&args.params(), &args.server).await,
        Scenario::Tracing(args) => {
            scenario::tracing::tracing_scenario(&args.params(), &args.server).await
        }
        Scenario::Filter(args) => {
            scenario::filter::filter_scenario(&args.params(), &args.server).await
        }
        Scenario::Handler(args) => handler_scenario(&args.params(), &args.server).await,
        Scenario::Backends(args) => backends_scenario(&args.params(), &args.publish.server).await,
        Scenario::Scaleout(args) => scaleout_scenario(&args.params(), &args.server_args()).await,
        Scenario::Mcp(args) => mcp_scenario(&args.params(), &args.server).await,
        Scenario::All(args) => all_scenarios(args.quick, &args.server).await,
        Scenario::Summary => {
            report::write_summary()?;
            eprintln!("summary regenerated in {}", report::RESULTS_MD);
            Ok(())
        }
        Scenario::Micro(args) => micro_scenario(
            &args.criterion_dir.clone().unwrap_or_else(criterion_dir),
            true,
        ),
        Scenario::Latency(args) => {
            stream_scenario(
                StreamKind::Latency,
                &args.params(LATENCY_TARGET_RATE),
                &args.server,
            )
            .await
        }
        Scenario::Fanout(args) => {
            stream_scenario(
                StreamKind::Fanout,
                &args.params(FANOUT_DEFAULT_RATE),
                &args.server,
            )
            .await
        }
    }
}

/// 1,000 subscribers need 1,000 sockets here and in the server (which
/// inherits this limit), more than the usual soft limit of 1,024 allows with
/// everything else open.
fn raise_open_file_limit() -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("reading the open-file limit");
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error()).context("raising the open-file limit");
            }
        }
    }
    Ok(())
}
