//! The command line: one subcommand per scenario, its options, and each
//! scenario's settings once the defaults (full or `--quick`) are applied.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::scenario::backends::BACKENDS_LATENCY_SUBSCRIBERS;
use crate::scenario::mcp::{MCP_NOTIFY_INTERVAL, MCP_REVISION, MCP_TARGET_LIMIT, fill_event_bytes};
use crate::scenario::scaleout::{
    SCALEOUT_CONCURRENCY, SCALEOUT_GROUP_SESSION, SCALEOUT_PARTITIONS, SCALEOUT_PROCESSES,
    SCALEOUT_RECEIVE_LEASE, SCALEOUT_RECEIVE_MAX, SCALEOUT_RECEIVE_WAIT, SCALEOUT_SINK_DELAY_MS,
};
use crate::{HANDLER_CONCURRENCY, LATENCY_TARGET_RATE, PUBLISH_BODY_BYTES, STREAM_EVENT_BYTES};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard-bench",
    about = "Load tool for switchyard: publish throughput against bare axum, publish→SSE latency, SSE fan-out, webhooks, bearer tokens, handlers, backends, several processes on one broker, agents over MCP",
    after_help = "Build first with `cargo build --release --bins --all-features`; the tool runs the `switchyard` binary next to itself. \
                  Results are printed and appended to bench/results.jsonl. `scripts/bench` does it all: setup, build, micro-benchmarks, `all`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// HTTP publish throughput and latency: switchyard vs a bare axum server
    Publish(PublishArgs),
    /// Publish→SSE delivery latency with many subscribers
    Latency(StreamArgs),
    /// SSE fan-out at a higher rate: delivery rate, lag, server memory per subscriber, idle CPU
    Fanout(StreamArgs),
    /// Signed webhook ingestion vs plain publish of the same size, on one switchyard server
    Webhook(PublishArgs),
    /// Publish with an HS256 bearer token on every request vs the same publish to a server without a key
    Auth(PublishArgs),
    /// Publish to a topic with its default dedupe window vs one with dedupe_window = "0"
    Dedupe(PublishArgs),
    /// Publish with OpenTelemetry traces exported over OTLP/HTTP vs no exporter
    Tracing(PublishArgs),
    /// Handler delivery rate to a local sink vs the same requests from a plain client loop
    Handler(HandlerArgs),
    /// A CEL filter passing 10% vs none: a handler draining a backlog, and SSE fan-out to 100 subscribers
    Filter(HandlerArgs),
    /// The publish load and publish→SSE latency on each backend (embedded, redis, nats, kafka), with redis-benchmark beside redis
    Backends(BackendsArgs),
    /// Three switchyard processes against one on one broker (nats, redis): a handler calling a 20 ms sink, and queue receive/ack throughput
    Scaleout(ScaleoutArgs),
    /// Agents over MCP: read_events throughput vs GET pages, and publish→notification latency with many subscriptions/listen streams
    Mcp(McpArgs),
    /// Record the criterion micro-benchmarks' estimates (run `cargo bench --all-features --bench micro` in bench/ first) and their ratios
    Micro(MicroArgs),
    /// Every scenario in turn with its defaults (micro: the estimates `cargo bench` left), then regenerate the summary in bench/RESULTS.md
    All(AllArgs),
    /// Regenerate the summary in bench/RESULTS.md from the newest record of each scenario in results.jsonl; runs nothing
    Summary,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The switchyard binary [default: `switchyard` next to this tool]
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// The server's fsync policy: always or interval
    #[arg(long, default_value = "always")]
    pub fsync: String,
    /// Partitions of the bench topic; the default of 4 makes a group commit
    /// span partitions as it would in production
    #[arg(long, default_value_t = 4)]
    pub partitions: usize,
    /// Where the temporary data directory goes [default: the system temp dir]
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Extra `serve` flags naming an external broker (set by `backends`).
    #[arg(skip)]
    pub broker: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Concurrent connections, each sending requests back to back [default: 64; 16 with --quick]
    #[arg(long)]
    pub connections: Option<usize>,
    /// Measured time per round, e.g. "10s" [default: 10s; 2s with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Unmeasured time at the start of each round [default: 2s; 500ms with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Rounds of each side, run alternately (bare, switchyard, ...; publish, webhook, ...; no token, token, ...) [default: 3; 2 with --quick]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: Option<u32>,
    /// Small defaults for a smoke run of a few seconds
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct BackendsArgs {
    #[command(flatten)]
    pub publish: PublishArgs,
    /// SSE subscribers in each backend's latency run [default: 10]
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Events per second in each backend's latency run [default: 50]
    #[arg(long)]
    pub rate: Option<u64>,
    /// How long each backend's latency run publishes, e.g. "10s" [default: 10s; 2s with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub latency_duration: Option<Duration>,
}

#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// SSE subscribers [default: 1000; 100 with --quick]
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Events published per second [default: latency 50, fanout 200]
    #[arg(long)]
    pub rate: Option<u64>,
    /// How long to publish, e.g. "20s" [default: 20s; 3s with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Time with the subscribers connected and nothing published, to
    /// measure the server's idle CPU [default: 5s; 1s with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub idle: Option<Duration>,
    /// Small defaults for a smoke run of a few seconds
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct HandlerArgs {
    /// Events pre-published for the handler, and requests the baseline makes [default: 20000; 5000 with --quick]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub events: Option<u64>,
    /// Longest wait for the handler to deliver them all, e.g. "60s" [default: 60s; 20s with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Small defaults for a smoke run of a few seconds
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct ScaleoutArgs {
    /// Events the handler delivers in each run [default: 3000; 600 with --quick]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub events: Option<u64>,
    /// Events the queue workers receive and ack in each run [default: 20000; 3000 with --quick]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub queue_events: Option<u64>,
    /// Queue workers in all, the same number in both runs; with three
    /// processes they are split evenly between them (a remainder goes to the
    /// first processes) [default: 9]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub workers: Option<u64>,
    /// Longest wait for one run's events to be delivered or acked, e.g. "120s" [default: 120s; 30s with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Partitions of each run's topic (at least the 3 processes)
    #[arg(long, default_value_t = SCALEOUT_PARTITIONS, value_parser = clap::value_parser!(u64).range(3..=256))]
    pub partitions: u64,
    /// Small defaults for a smoke run
    #[arg(long)]
    pub quick: bool,
    /// The switchyard binary, built with --all-features [default: `switchyard` next to this tool]
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// Where the temporary directories go (the processes' and the brokers') [default: the system temp dir]
    #[arg(long)]
    pub data_root: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Events pre-published to the bench topic, all read in each pass [default: 200000; 20000 with --quick]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub events: Option<u64>,
    /// Events a read asks for, on both sides (1000 is the most either takes)
    #[arg(long, default_value_t = MCP_TARGET_LIMIT, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub limit: u64,
    /// Rounds of each side's reads, run alternately (pages, MCP, ...) [default: 5; 2 with --quick]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: Option<u32>,
    /// Least time each side reads per round: whole passes over the topic until it has passed, e.g. "2s" [default: 2s; 500ms with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Each side's window of single-event reads per round, which measures a call's fixed cost; 0s for none [default: 2s; 500ms with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub small_reads: Option<Duration>,
    /// subscriptions/listen streams on the topic [default: 100; 20 with --quick]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub listeners: Option<u64>,
    /// Events published one at a time while they listen [default: 100; 20 with --quick]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub publishes: Option<u64>,
    /// Time between two publishes; above the server's 100 ms coalescing, each is notified on its own [default: 200ms]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Small defaults for a smoke run of a few seconds
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct AllArgs {
    /// Every scenario's small defaults: about 2 minutes in all instead of about 10
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct MicroArgs {
    /// Criterion's output directory [default: $CRITERION_HOME, else $CARGO_TARGET_DIR/criterion, else target/criterion]
    #[arg(long)]
    pub criterion_dir: Option<PathBuf>,
}

/// The `handler` scenario's settings once defaults are applied.
#[derive(Debug, Clone, Serialize)]
pub struct HandlerParams {
    /// Smoke-run defaults were applied.
    pub quick: bool,
    pub events: u64,
    pub timeout_s: f64,
    pub concurrency: usize,
    pub body_bytes: usize,
    pub fsync: String,
    pub partitions: usize,
}

/// The `scaleout` scenario's settings once defaults are applied.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleoutParams {
    /// Smoke-run defaults were applied.
    pub quick: bool,
    /// Processes in the scaled-out runs (the baseline runs one).
    pub processes: usize,
    /// Their `--group-session`.
    pub group_session: &'static str,
    pub partitions: usize,
    /// Events the handler delivers per run.
    pub handler_events: u64,
    /// The handler's `max_concurrency`, in every process.
    pub handler_concurrency: usize,
    /// How long the sink takes to answer each request.
    pub sink_delay_ms: u64,
    /// Events the queue workers ack per run.
    pub queue_events: u64,
    /// Queue workers in all, in both runs.
    pub workers: usize,
    /// Each receive's `max`, `wait` and `lease`.
    pub receive_max: usize,
    pub receive_wait: &'static str,
    pub receive_lease: &'static str,
    pub timeout_s: f64,
}

/// The `mcp` scenario's settings once defaults are applied.
#[derive(Debug, Clone, Serialize)]
pub struct McpParams {
    /// Smoke-run defaults were applied.
    pub quick: bool,
    /// The MCP revision the client speaks.
    pub revision: &'static str,
    /// Events in the topic, read whole in each pass.
    pub events: u64,
    /// Size of one of them.
    pub event_bytes: usize,
    /// Events a read asks for.
    pub limit: u64,
    pub rounds: u32,
    /// Least time each side reads per round (whole passes).
    pub duration_s: f64,
    /// Each side's single-event reads per round.
    pub small_reads_s: f64,
    pub listeners: usize,
    pub publishes: u64,
    pub interval_ms: u64,
    pub fsync: String,
    pub partitions: usize,
}

/// The `publish` scenario's settings once defaults are applied.
#[derive(Debug, Clone, Serialize)]
pub struct PublishParams {
    /// Smoke-run defaults were applied.
    pub quick: bool,
    pub connections: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub rounds: u32,
    pub body_bytes: usize,
    pub fsync: String,
    pub partitions: usize,
}

/// The `latency` and `fanout` scenarios' settings once defaults are applied.
#[derive(Debug, Clone, Serialize)]
pub struct StreamParams {
    /// Smoke-run defaults were applied.
    pub quick: bool,
    pub subscribers: usize,
    pub rate: u64,
    pub duration_s: f64,
    pub idle_s: f64,
    pub event_bytes: usize,
    pub fsync: String,
    pub partitions: usize,
}

impl PublishArgs {
    /// No options given: every default (as `all` runs it).
    pub fn defaults(quick: bool, server: &ServerArgs) -> Self {
        Self {
            connections: None,
            duration: None,
            warmup: None,
            rounds: None,
            quick,
            server: server.clone(),
        }
    }

    pub fn params(&self) -> PublishParams {
        let quick = self.quick;
        PublishParams {
            quick,
            connections: self.connections.unwrap_or(if quick { 16 } else { 64 }),
            duration_s: secs(self.duration, if quick { 2.0 } else { 10.0 }),
            warmup_s: secs(self.warmup, if quick { 0.5 } else { 2.0 }),
            rounds: self.rounds.unwrap_or(if quick { 2 } else { 3 }),
            body_bytes: PUBLISH_BODY_BYTES,
            fsync: self.server.fsync.clone(),
            partitions: self.server.partitions,
        }
    }
}

/// The `backends` scenario's settings once defaults are applied: the
/// publish load, and the publish→SSE run on the same server after it.
#[derive(Debug, Clone, Serialize)]
pub struct BackendsParams {
    #[serde(flatten)]
    pub publish: PublishParams,
    pub latency: StreamParams,
}

impl BackendsArgs {
    /// `backends` runs four servers, so its rounds are shorter and fewer,
    /// and its latency runs have few subscribers at a modest rate.
    pub fn params(&self) -> BackendsParams {
        let args = &self.publish;
        let quick = args.quick;
        BackendsParams {
            publish: PublishParams {
                duration_s: secs(args.duration, if quick { 2.0 } else { 5.0 }),
                warmup_s: secs(args.warmup, if quick { 0.5 } else { 1.0 }),
                rounds: args.rounds.unwrap_or(1),
                ..args.params()
            },
            latency: StreamParams {
                quick,
                subscribers: self.subscribers.unwrap_or(BACKENDS_LATENCY_SUBSCRIBERS),
                rate: self.rate.unwrap_or(LATENCY_TARGET_RATE),
                duration_s: secs(self.latency_duration, if quick { 2.0 } else { 10.0 }),
                idle_s: 0.0,
                event_bytes: STREAM_EVENT_BYTES,
                fsync: args.server.fsync.clone(),
                partitions: args.server.partitions,
            },
        }
    }
}

impl StreamArgs {
    pub fn params(&self, default_rate: u64) -> StreamParams {
        let quick = self.quick;
        StreamParams {
            quick,
            subscribers: self.subscribers.unwrap_or(if quick { 100 } else { 1000 }),
            rate: self.rate.unwrap_or(default_rate),
            duration_s: secs(self.duration, if quick { 3.0 } else { 20.0 }),
            idle_s: secs(self.idle, if quick { 1.0 } else { 5.0 }),
            event_bytes: STREAM_EVENT_BYTES,
            fsync: self.server.fsync.clone(),
            partitions: self.server.partitions,
        }
    }
}

impl ScaleoutArgs {
    /// No options given but `all`'s binary and data root.
    pub fn defaults(quick: bool, server: &ServerArgs) -> Self {
        Self {
            events: None,
            queue_events: None,
            workers: None,
            timeout: None,
            partitions: SCALEOUT_PARTITIONS,
            quick,
            server: server.server.clone(),
            data_root: server.data_root.clone(),
        }
    }

    pub fn params(&self) -> ScaleoutParams {
        let quick = self.quick;
        ScaleoutParams {
            quick,
            processes: SCALEOUT_PROCESSES,
            group_session: SCALEOUT_GROUP_SESSION,
            partitions: self.partitions as usize,
            handler_events: self.events.unwrap_or(if quick { 600 } else { 3_000 }),
            handler_concurrency: SCALEOUT_CONCURRENCY,
            sink_delay_ms: SCALEOUT_SINK_DELAY_MS,
            queue_events: self
                .queue_events
                .unwrap_or(if quick { 3_000 } else { 20_000 }),
            workers: self.workers.unwrap_or(9) as usize,
            receive_max: SCALEOUT_RECEIVE_MAX,
            receive_wait: SCALEOUT_RECEIVE_WAIT,
            receive_lease: SCALEOUT_RECEIVE_LEASE,
            timeout_s: secs(self.timeout, if quick { 30.0 } else { 120.0 }),
        }
    }

    /// The switchyard binary and data root, as the other scenarios take them.
    pub fn server_args(&self) -> ServerArgs {
        ServerArgs {
            server: self.server.clone(),
            fsync: "always".into(),
            partitions: self.partitions as usize,
            data_root: self.data_root.clone(),
            broker: Vec::new(),
        }
    }
}

impl McpArgs {
    /// No options given: every default (as `all` runs it).
    pub fn defaults(quick: bool, server: &ServerArgs) -> Self {
        Self {
            events: None,
            limit: MCP_TARGET_LIMIT,
            rounds: None,
            duration: None,
            small_reads: None,
            listeners: None,
            publishes: None,
            interval: None,
            quick,
            server: server.clone(),
        }
    }

    pub fn params(&self) -> McpParams {
        let quick = self.quick;
        McpParams {
            quick,
            revision: MCP_REVISION,
            events: self.events.unwrap_or(if quick { 20_000 } else { 200_000 }),
            event_bytes: fill_event_bytes(),
            limit: self.limit,
            rounds: self.rounds.unwrap_or(if quick { 2 } else { 5 }),
            duration_s: secs(self.duration, if quick { 0.5 } else { 2.0 }),
            small_reads_s: secs(self.small_reads, if quick { 0.5 } else { 2.0 }),
            listeners: self.listeners.unwrap_or(if quick { 20 } else { 100 }) as usize,
            publishes: self.publishes.unwrap_or(if quick { 20 } else { 100 }),
            interval_ms: self
                .interval
                .unwrap_or(MCP_NOTIFY_INTERVAL)
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            fsync: self.server.fsync.clone(),
            partitions: self.server.partitions,
        }
    }
}

impl HandlerArgs {
    pub fn params(&self) -> HandlerParams {
        let quick = self.quick;
        HandlerParams {
            quick,
            events: self.events.unwrap_or(if quick { 5_000 } else { 20_000 }),
            timeout_s: secs(self.timeout, if quick { 20.0 } else { 60.0 }),
            concurrency: HANDLER_CONCURRENCY,
            body_bytes: PUBLISH_BODY_BYTES,
            fsync: self.server.fsync.clone(),
            partitions: self.server.partitions,
        }
    }
}

fn secs(value: Option<Duration>, default: f64) -> f64 {
    value.map_or(default, |d| d.as_secs_f64())
}
