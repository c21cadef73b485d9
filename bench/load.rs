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
//! - `handler`: events delivered by a handler to a local sink against the same
//!   requests made by a plain client loop;
//! - `backends`: the `publish` load on each backend (embedded, redis, nats,
//!   kafka), each real broker started here, beside `redis-benchmark`;
//! - `micro`: records the estimates that `cargo bench --bench micro`
//!   (criterion, `bench/micro.rs`) left in `target/criterion`, with the
//!   ratio of each benchmark to its group's baseline; it runs nothing;
//! - `all`: every scenario in turn (and `micro`), then the summary table of
//!   `RESULTS.md` regenerated from the newest record of each.
//!
//! Every run stops by itself: durations are bounded, requests time out, and
//! the child server is killed when the tool exits, fails, panics or is
//! interrupted.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::{Parser, Subcommand};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

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
/// Where results accumulate, one JSON object per run.
const RESULTS_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/results.jsonl");

/// Where `all` regenerates the summary table, between these two markers.
const RESULTS_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/RESULTS.md");
const SUMMARY_BEGIN: &str = "<!-- generated summary: begin (switchyard-bench all) -->";
const SUMMARY_END: &str = "<!-- generated summary: end -->";

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
const HANDLER_TARGET_RATIO: f64 = 0.7;
const PUBLISH_TARGET_CONNECTIONS: usize = 64;
const LATENCY_TARGET_P99_MS: f64 = 10.0;
const LATENCY_TARGET_SUBSCRIBERS: usize = 1000;
const LATENCY_TARGET_RATE: u64 = 50;

#[derive(Debug, Parser)]
#[command(
    name = "switchyard-bench",
    about = "Load tool for switchyard: publish throughput against bare axum, publish→SSE latency, SSE fan-out, webhooks, bearer tokens, handlers",
    after_help = "Build first with `cargo build --release --bins --all-features`; the tool runs the `switchyard` binary next to itself. \
                  Results are printed and appended to bench/results.jsonl. `scripts/bench` does it all: setup, build, micro-benchmarks, `all`."
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
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
    /// Handler delivery rate to a local sink vs the same requests from a plain client loop
    Handler(HandlerArgs),
    /// The publish load and publish→SSE latency on each backend (embedded, redis, nats, kafka), with redis-benchmark beside redis
    Backends(BackendsArgs),
    /// Record the criterion micro-benchmarks' estimates (run `cargo bench --all-features --bench micro` first) and their ratios
    Micro(MicroArgs),
    /// Every scenario in turn with its defaults (micro: the estimates `cargo bench` left), then regenerate the summary in bench/RESULTS.md
    All(AllArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct ServerArgs {
    /// The switchyard binary [default: `switchyard` next to this tool]
    #[arg(long)]
    server: Option<PathBuf>,
    /// The server's fsync policy: always or interval
    #[arg(long, default_value = "always")]
    fsync: String,
    /// Partitions of the bench topic; the default of 4 makes a group commit
    /// span partitions as it would in production
    #[arg(long, default_value_t = 4)]
    partitions: usize,
    /// Where the temporary data directory goes [default: the system temp dir]
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Extra `serve` flags naming an external broker (set by `backends`).
    #[arg(skip)]
    broker: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct PublishArgs {
    /// Concurrent connections, each sending requests back to back [default: 64; 16 with --quick]
    #[arg(long)]
    connections: Option<usize>,
    /// Measured time per round, e.g. "10s" [default: 10s; 2s with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Unmeasured time at the start of each round [default: 2s; 500ms with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// Rounds of each side, run alternately (bare, switchyard, ...; publish, webhook, ...; no token, token, ...) [default: 3; 2 with --quick]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: Option<u32>,
    /// Small defaults for a smoke run of a few seconds
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
struct BackendsArgs {
    #[command(flatten)]
    publish: PublishArgs,
    /// SSE subscribers in each backend's latency run [default: 10]
    #[arg(long)]
    subscribers: Option<usize>,
    /// Events per second in each backend's latency run [default: 50]
    #[arg(long)]
    rate: Option<u64>,
    /// How long each backend's latency run publishes, e.g. "10s" [default: 10s; 2s with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    latency_duration: Option<Duration>,
}

#[derive(Debug, clap::Args)]
struct StreamArgs {
    /// SSE subscribers [default: 1000; 100 with --quick]
    #[arg(long)]
    subscribers: Option<usize>,
    /// Events published per second [default: latency 50, fanout 200]
    #[arg(long)]
    rate: Option<u64>,
    /// How long to publish, e.g. "20s" [default: 20s; 3s with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Time with the subscribers connected and nothing published, to
    /// measure the server's idle CPU [default: 5s; 1s with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    idle: Option<Duration>,
    /// Small defaults for a smoke run of a few seconds
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
struct HandlerArgs {
    /// Events pre-published for the handler, and requests the baseline makes [default: 20000; 5000 with --quick]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    events: Option<u64>,
    /// Longest wait for the handler to deliver them all, e.g. "60s" [default: 60s; 20s with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Small defaults for a smoke run of a few seconds
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
struct AllArgs {
    /// Every scenario's small defaults: about 2 minutes in all instead of about 10
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
struct MicroArgs {
    /// Criterion's output directory [default: $CRITERION_HOME, else $CARGO_TARGET_DIR/criterion, else target/criterion]
    #[arg(long)]
    criterion_dir: Option<PathBuf>,
}

/// The `handler` scenario's settings once defaults are applied.
#[derive(Debug, Clone, Serialize)]
struct HandlerParams {
    /// Smoke-run defaults were applied.
    quick: bool,
    events: u64,
    timeout_s: f64,
    concurrency: usize,
    body_bytes: usize,
    fsync: String,
    partitions: usize,
}

/// The `publish` scenario's settings once defaults are applied.
#[derive(Debug, Clone, Serialize)]
struct PublishParams {
    /// Smoke-run defaults were applied.
    quick: bool,
    connections: usize,
    duration_s: f64,
    warmup_s: f64,
    rounds: u32,
    body_bytes: usize,
    fsync: String,
    partitions: usize,
}

/// The `latency` and `fanout` scenarios' settings once defaults are applied.
#[derive(Debug, Clone, Serialize)]
struct StreamParams {
    /// Smoke-run defaults were applied.
    quick: bool,
    subscribers: usize,
    rate: u64,
    duration_s: f64,
    idle_s: f64,
    event_bytes: usize,
    fsync: String,
    partitions: usize,
}

impl PublishArgs {
    /// No options given: every default (as `all` runs it).
    fn defaults(quick: bool, server: &ServerArgs) -> Self {
        Self {
            connections: None,
            duration: None,
            warmup: None,
            rounds: None,
            quick,
            server: server.clone(),
        }
    }

    fn params(&self) -> PublishParams {
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
struct BackendsParams {
    #[serde(flatten)]
    publish: PublishParams,
    latency: StreamParams,
}

impl BackendsArgs {
    /// `backends` runs four servers, so its rounds are shorter and fewer,
    /// and its latency runs have few subscribers at a modest rate.
    fn params(&self) -> BackendsParams {
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
    fn params(&self, default_rate: u64) -> StreamParams {
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

impl HandlerArgs {
    fn params(&self) -> HandlerParams {
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
        Scenario::Handler(args) => handler_scenario(&args.params(), &args.server).await,
        Scenario::Backends(args) => backends_scenario(&args.params(), &args.publish.server).await,
        Scenario::All(args) => all_scenarios(args.quick, &args.server).await,
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

// ---------------------------------------------------------------------------
// The servers under test
// ---------------------------------------------------------------------------

impl ServerArgs {
    /// The switchyard binary to run, which must exist.
    fn binary(&self) -> Result<PathBuf> {
        let binary = match &self.server {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .context("finding this program's path")?
                .with_file_name("switchyard"),
        };
        if !binary.is_file() {
            bail!(
                "the switchyard binary is not at {}; build it with `cargo build --release --bins` (or pass --server PATH)",
                binary.display()
            );
        }
        Ok(binary)
    }

    /// Where the binary is and when it was built; warns when the crate's
    /// sources are newer, since the results would then describe old code.
    fn describe_binary(&self) -> Result<Value> {
        let binary = self.binary()?;
        let built = fs::metadata(&binary)?.modified()?;
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let newest_source = [manifest_dir.join("src"), manifest_dir.join("Cargo.toml")]
            .iter()
            .filter_map(|path| newest_modification(path))
            .max();
        let stale = newest_source.is_some_and(|newest| newest > built);
        if stale {
            eprintln!(
                "warning: {} is older than the sources in {}; rebuild with `cargo build --release --bins`",
                binary.display(),
                manifest_dir.display()
            );
        }
        Ok(json!({ "path": binary, "built": rfc3339(built), "older_than_sources": stale }))
    }
}

/// The latest modification time of `path` or anything under it.
fn newest_modification(path: &Path) -> Option<SystemTime> {
    let metadata = fs::metadata(path).ok()?;
    let own = metadata.modified().ok();
    if !metadata.is_dir() {
        return own;
    }
    fs::read_dir(path)
        .ok()?
        .filter_map(|entry| newest_modification(&entry.ok()?.path()))
        .chain(own)
        .max()
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(root: Option<&Path>) -> Result<Self> {
        let root = root.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path = root.join(format!("switchyard-bench-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What a scenario needs declared beyond the bench topic.
#[derive(Debug, Default)]
struct Setup {
    /// Declare the webhook source `bench` on the bench topic, signed with
    /// this `whsec_…` secret.
    webhook_secret: Option<String>,
    /// Declare the handler's output topics.
    handler_outputs: bool,
    /// Start the server with this HS256 secret, so that it asks every
    /// publish for a bearer token.
    jwt_secret: Option<String>,
}

/// The real server, running as a child process on a fresh data directory.
/// Dropping it kills the process, then removes the directory (once no
/// restarted server shares it).
struct Switchyard {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    /// Held open so the server never writes to a closed pipe.
    _stdout: Option<BufReader<ChildStdout>>,
    /// The environment the server was started with, kept for a restart.
    env: Vec<(&'static str, String)>,
    dir: Arc<TempDir>,
}

impl Switchyard {
    fn start(args: &ServerArgs, setup: &Setup) -> Result<Self> {
        let dir = TempDir::new(args.data_root.as_deref())?;
        let topics = dir.0.join("topics");
        fs::create_dir_all(&topics)?;
        fs::create_dir_all(dir.0.join(HANDLERS_DIR))?;
        let webhook = setup.webhook_secret.as_ref().map_or_else(String::new, |_| {
            format!(
                "\n[[webhooks]]\nsource = \"{WEBHOOK_SOURCE}\"\nscheme = \"standard-webhooks\"\n\
                 secrets_env = [\"{WEBHOOK_SECRET_ENV}\"]\ntype = {{ fixed = \"{EVENT_TYPE}\" }}\n"
            )
        });
        write_topic(&topics, TOPIC, args.partitions, &webhook)?;
        if setup.handler_outputs {
            // Outcome events are stored whatever their type; a topic only
            // needs one declared type to exist.
            for name in [RESULTS_TOPIC, DEAD_LETTER_TOPIC] {
                write_topic(&topics, name, 1, "")?;
            }
        }
        // Permissive on purpose: the bench measures the bus, not the schema.
        fs::write(
            topics.join(format!("{EVENT_TYPE}.schema.json")),
            r#"{"type":"object"}"#,
        )?;
        let env = setup
            .webhook_secret
            .iter()
            .map(|secret| (WEBHOOK_SECRET_ENV, secret.clone()))
            .chain(
                setup
                    .jwt_secret
                    .iter()
                    .map(|secret| (JWT_SECRET_ENV, secret.clone())),
            )
            .collect();
        Self::spawn(args, Arc::new(dir), env)
    }

    /// Stops the server, adds a handler definition to its handlers directory
    /// and starts it again on the same data.
    fn restart_with_handler(mut self, args: &ServerArgs, definition: &str) -> Result<Self> {
        self.stop();
        let file = self
            .dir
            .0
            .join(HANDLERS_DIR)
            .join(format!("{HANDLER_NAME}.toml"));
        fs::write(&file, definition).with_context(|| format!("writing {}", file.display()))?;
        let (dir, env) = (Arc::clone(&self.dir), std::mem::take(&mut self.env));
        drop(self);
        Self::spawn(args, dir, env)
    }

    fn spawn(
        args: &ServerArgs,
        dir: Arc<TempDir>,
        env: Vec<(&'static str, String)>,
    ) -> Result<Self> {
        let binary = args.binary()?;
        let log = dir.0.join("server.log");
        // Appended to, so a restart keeps the first run's warnings.
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut child = known_environment(&mut Command::new(&binary))
            .args(["serve", "--listen", "127.0.0.1:0", "--fsync", &args.fsync])
            .arg("--data-dir")
            .arg(dir.0.join("data"))
            .arg("--topics-dir")
            .arg(dir.0.join("topics"))
            .arg("--handlers-dir")
            .arg(dir.0.join(HANDLERS_DIR))
            .args(&args.broker)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(key, value)| (key, value)))
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        // Read the first line on a thread so a silent server cannot hang us.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line).map(|_| line);
            let _ = sender.send((read, reader));
        });
        // From here on, dropping `server` kills the child, whatever happens.
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            _stdout: None,
            env,
            dir,
        };
        let line = match receiver.recv_timeout(SERVER_START_TIMEOUT) {
            Ok((Ok(line), reader)) => {
                server._stdout = Some(reader);
                line
            }
            Ok((Err(err), _)) => {
                return Err(server.did_not_start(&format!("reading its output failed: {err}")));
            }
            Err(_) => {
                return Err(server
                    .did_not_start(&format!("it printed nothing in {SERVER_START_TIMEOUT:?}")));
            }
        };
        match line
            .trim()
            .strip_prefix("switchyard listening on http://")
            .and_then(|addr| addr.parse().ok())
        {
            Some(addr) => server.addr = addr,
            None => {
                return Err(server.did_not_start(&format!("its first line was {:?}", line.trim())));
            }
        }
        Ok(server)
    }

    /// Stops the server and explains why, with the end of its log.
    fn did_not_start(&mut self, reason: &str) -> anyhow::Error {
        self.stop();
        let log = log_tail(&self.log).join("\n");
        anyhow::anyhow!("the switchyard server did not start: {reason}\nits log:\n{log}")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn usage(&self) -> Result<ProcUsage> {
        ProcUsage::read(self.child.id())
    }

    /// Warnings and errors the server logged, for the report.
    fn log_lines(&self) -> Vec<String> {
        log_tail(&self.log)
    }

    fn data_filesystem(&self) -> String {
        filesystem_of(&self.dir.0)
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        // Kill before the fields drop, so the data directory goes after.
        self.stop();
    }
}

/// Takes every `SWITCHYARD_*` variable of the caller's environment out of
/// `command`'s, so the server starts from a known configuration whatever the
/// caller's shell has: a `SWITCHYARD_JWT_SECRET` there, say, would refuse
/// every publish without a token, a `SWITCHYARD_CONFIG` would add settings.
fn known_environment(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHYARD_") {
            command.env_remove(key);
        }
    }
    command
}

/// Writes a topic file declaring the bench event type, plus `extra` TOML.
fn write_topic(topics: &Path, name: &str, partitions: usize, extra: &str) -> Result<()> {
    let file = topics.join(format!("{name}.toml"));
    fs::write(
        &file,
        format!(
            "name = \"{name}\"\ndescription = \"switchyard-bench load\"\npartitions = {partitions}\n\
             key = \"/data/k\"\n\n[types.\"{EVENT_TYPE}\"]\nschema = \"{EVENT_TYPE}.schema.json\"\n{extra}"
        ),
    )
    .with_context(|| format!("writing {}", file.display()))
}

fn log_tail(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[lines.len().saturating_sub(LOG_LINES_SHOWN)..].to_vec()
}

/// The filesystem type holding `path` (from /proc/mounts): fsync on tmpfs
/// costs nothing, so results must say where the log lived.
fn filesystem_of(path: &Path) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, mount_point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount_point)
                .then(|| (mount_point.len(), fs_type.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, fs_type)| fs_type)
}

/// A process's CPU time and memory, from /proc.
#[derive(Debug, Clone, Copy)]
struct ProcUsage {
    user_seconds: f64,
    system_seconds: f64,
    rss_bytes: u64,
    peak_rss_bytes: u64,
}

impl ProcUsage {
    fn read(pid: u32) -> Result<Self> {
        let stat =
            fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
        // The command name may hold spaces and parentheses: fields are
        // counted from the last ')'. utime and stime are fields 14 and 15,
        // that is the 12th and 13th after it.
        let after_name = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |index: usize| -> Result<u64> {
            fields
                .get(index)
                .and_then(|f| f.parse().ok())
                .context("parsing /proc/PID/stat")
        };
        let user_seconds = ticks(11)? as f64 / ticks_per_second();
        let system_seconds = ticks(12)? as f64 / ticks_per_second();

        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .context("reading /proc/PID/status")?;
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            user_seconds,
            system_seconds,
            rss_bytes: kib("VmRSS:") * 1024,
            peak_rss_bytes: kib("VmHWM:") * 1024,
        })
    }

    fn cpu_seconds(&self) -> f64 {
        self.user_seconds + self.system_seconds
    }
}

/// CPU time of this process, the server under test and everything else on
/// the machine over a window. The client and server share the machine's
/// cores, and anything else running (a build, say) skews both: a run with
/// much `other` CPU time is not to be trusted.
struct CpuWindow {
    machine_busy_s: f64,
    client: ProcUsage,
    server: Option<ProcUsage>,
    server_pid: Option<u32>,
}

/// The window's CPU seconds by whom.
#[derive(Debug, Clone, Copy, Serialize)]
struct CpuSplit {
    /// This process: the load client (and the bare server, in bare rounds).
    client_s: f64,
    server_s: Option<f64>,
    server_system_s: Option<f64>,
    /// Busy CPU time of every other process and the kernel's own threads.
    other_s: f64,
}

impl CpuWindow {
    fn start(server_pid: Option<u32>) -> Result<Self> {
        Ok(Self {
            machine_busy_s: machine_busy_seconds()?,
            client: ProcUsage::read(std::process::id())?,
            server: server_pid.map(ProcUsage::read).transpose()?,
            server_pid,
        })
    }

    fn end(&self) -> Result<CpuSplit> {
        let later = Self::start(self.server_pid)?;
        let client_s = later.client.cpu_seconds() - self.client.cpu_seconds();
        let server_s = later
            .server
            .zip(self.server)
            .map(|(b, a)| b.cpu_seconds() - a.cpu_seconds());
        let server_system_s = later
            .server
            .zip(self.server)
            .map(|(b, a)| b.system_seconds - a.system_seconds);
        let machine_s = later.machine_busy_s - self.machine_busy_s;
        Ok(CpuSplit {
            client_s,
            server_s,
            server_system_s,
            other_s: (machine_s - client_s - server_s.unwrap_or(0.0)).max(0.0),
        })
    }
}

/// Seconds all CPUs together have been busy since boot, from /proc/stat.
fn machine_busy_seconds() -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .context("parsing /proc/stat")?
        .split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and
    // iowait are busy (guest time is already counted in user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(index, _)| !matches!(index, 3 | 4))
        .map(|(_, ticks)| ticks)
        .sum();
    Ok(busy as f64 / ticks_per_second())
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// Requests a bare server answered, and when the first and last arrived:
/// the handler scenario's sink rate is measured where the requests land.
struct Hits {
    /// Shared with the progress line.
    count: Arc<AtomicU64>,
    /// Nanoseconds since `epoch`.
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    epoch: Instant,
}

impl Hits {
    fn new() -> Self {
        Self {
            count: Arc::new(AtomicU64::new(0)),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        self.first_ns.store(u64::MAX, Ordering::SeqCst);
        self.last_ns.store(0, Ordering::SeqCst);
    }

    fn hit(&self) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.first_ns.fetch_min(now, Ordering::Relaxed);
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Requests since the last reset and the time from the first to the last.
    fn span(&self) -> (u64, Duration) {
        let (first, last) = (
            self.first_ns.load(Ordering::SeqCst),
            self.last_ns.load(Ordering::SeqCst),
        );
        (
            self.count(),
            Duration::from_nanos(last.saturating_sub(first)),
        )
    }

    fn rate(&self) -> f64 {
        let (count, span) = self.span();
        count as f64 / span.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// The baseline: an axum server whose route `path` reads the body and
/// answers `{}` (counting into `hits` if given). It runs on its own runtime
/// and threads, sized like switchyard's, so it does not share the client's
/// scheduler: the same footing as a separate process.
struct BareServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BareServer {
    fn start(path: &'static str, hits: Option<Arc<Hits>>) -> Result<Self> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the bare server")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime =
            tokio::runtime::Runtime::new().context("starting the bare server's runtime")?;
        let thread = std::thread::Builder::new()
            .name("bare-axum".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let app = axum::Router::new().route(
                        path,
                        axum::routing::post(move |_body: bytes::Bytes| {
                            let hits = hits.clone();
                            async move {
                                if let Some(hits) = hits {
                                    hits.hit();
                                }
                                (
                                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                                    "{}",
                                )
                            }
                        }),
                    );
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("a std listener converts");
                    tokio::select! {
                        served = axum::serve(listener, app) => {
                            if let Err(err) = served {
                                eprintln!("bare server: {err}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                // Open keep-alive connections would otherwise hold it up.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of samples in nanoseconds; sorts them.
    fn of(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1] as f64 / 1e6
        };
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Prints "label: done/total" to stderr once a second until dropped.
struct Progress(tokio::task::JoinHandle<()>);

impl Progress {
    fn start(label: String, total: Duration, counter: Arc<AtomicU64>, unit: &'static str) -> Self {
        Self(tokio::spawn(async move {
            let started = Instant::now();
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            ticks.tick().await;
            let mut last = 0;
            loop {
                ticks.tick().await;
                let now = counter.load(Ordering::Relaxed);
                eprintln!(
                    "  {label}: {:>4.0}s of {:.0}s, {now} {unit} ({} in the last second)",
                    started.elapsed().as_secs_f64(),
                    total.as_secs_f64(),
                    now - last
                );
                last = now;
            }
        }))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------------
// publish: switchyard against bare axum
// ---------------------------------------------------------------------------

/// The names of the two servers in tables and results.
const BARE: &str = "bare axum";
const SWITCHYARD: &str = "switchyard";

/// One round of load against one server.
#[derive(Debug, Clone, Serialize)]
struct Round {
    server: &'static str,
    round: u32,
    requests_per_s: f64,
    latency_ms: Percentiles,
    ok: u64,
    /// Non-2xx answers.
    errors_status: u64,
    /// Requests that got no answer (connect failure, reset, timeout).
    errors_transport: u64,
    /// Webhooks answered `"duplicate": true`, stored nothing (counted in `ok`).
    duplicates: u64,
    /// CPU time during the measured window.
    cpu: CpuSplit,
    /// The switchyard process's peak resident memory (VmHWM).
    server_peak_rss_mib: Option<f64>,
}

/// What one client connection saw.
#[derive(Default)]
struct WorkerTally {
    latencies: Vec<u64>,
    errors_status: u64,
    errors_transport: u64,
    duplicates: u64,
    first_error: Option<String>,
}

/// What the load workers send.
#[derive(Clone)]
enum Load {
    /// 1 KiB structured CloudEvents to `POST /v1/topics/bench/events`.
    Publish,
    /// The same, each with this `Authorization: Bearer …` header (built
    /// once, so the client does no per-request work for it beyond sending it).
    Authorized(reqwest::header::HeaderValue),
    /// 1 KiB JSON bodies to `POST /v1/webhooks/bench`, signed per Standard
    /// Webhooks with this key (the secret without `whsec_`, decoded).
    Webhook(Arc<[u8]>),
}

impl Load {
    fn body(&self, id: &str, seq: u64, pad: &str) -> String {
        match self {
            Self::Publish | Self::Authorized(_) => publish_body(id, seq, pad),
            Self::Webhook(_) => webhook_body(seq, pad),
        }
    }

    /// Fills each body up to `PUBLISH_BODY_BYTES`.
    fn padding(&self) -> String {
        // Ids are fixed-width, so one length stands for all.
        let unpadded = self.body(&event_id(0, 0, 0), 0, "").len();
        "x".repeat(PUBLISH_BODY_BYTES.saturating_sub(unpadded))
    }

    fn request(
        &self,
        client: &reqwest::Client,
        url: &str,
        id: &str,
        body: String,
    ) -> reqwest::RequestBuilder {
        let request = client.post(url).timeout(REQUEST_TIMEOUT);
        match self {
            Self::Publish => request
                .header(reqwest::header::CONTENT_TYPE, STRUCTURED)
                .body(body),
            Self::Authorized(authorization) => request
                .header(reqwest::header::CONTENT_TYPE, STRUCTURED)
                .header(reqwest::header::AUTHORIZATION, authorization.clone())
                .body(body),
            Self::Webhook(key) => {
                let timestamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
                    .to_string();
                let signature = sign_webhook(key, id, &timestamp, body.as_bytes());
                request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header("webhook-id", id)
                    .header("webhook-timestamp", timestamp)
                    .header("webhook-signature", format!("v1,{signature}"))
                    .body(body)
            }
        }
    }
}

/// A unique, fixed-width id: a source deduplicates webhook ids, so a reused
/// one would be answered without being stored.
fn event_id(round: u32, worker: usize, seq: u64) -> String {
    format!("{round:02}-{worker:04}-{seq:012}")
}

/// A 1 KiB structured CloudEvent; `id` and `k` vary, `pad` fills it up.
fn publish_body(id: &str, seq: u64, pad: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"/bench","type":"{EVENT_TYPE}","data":{{"k":"k{:03}","pad":"{pad}"}}}}"#,
        seq % KEYS
    )
}

/// A webhook's body: the event's data, keyed like a published event's.
fn webhook_body(seq: u64, pad: &str) -> String {
    format!(r#"{{"k":"k{:03}","pad":"{pad}"}}"#, seq % KEYS)
}

/// A fresh `whsec_…` secret and the key it encodes.
fn webhook_secret() -> (String, Arc<[u8]>) {
    let key: Vec<u8> = (0..WEBHOOK_SECRET_BYTES)
        .map(|_| fastrand::u8(..))
        .collect();
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(&key)
    );
    (secret, key.into())
}

/// Standard Webhooks: base64 of HMAC-SHA256 over `id.timestamp.body`.
fn sign_webhook(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
        mac.update(part);
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn http_client(pool: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(pool)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .context("building the HTTP client")
}

/// Drives one server with `connections` workers, each posting `load` back
/// to back, and measures what completes inside the window after the warm-up.
/// `server` names the rounds; `usage_of` is the server process to measure.
async fn drive_publish(
    server: &'static str,
    load: &Load,
    url: String,
    round: u32,
    params: &PublishParams,
    usage_of: Option<u32>,
) -> Result<Round> {
    let label = format!("{server}, round {round}");
    let client = http_client(params.connections)?;
    let pad: Arc<str> = load.padding().into();
    let warmup = Duration::from_secs_f64(params.warmup_s);
    let window = Duration::from_secs_f64(params.duration_s);
    let started = Instant::now();
    let measure_from = started + warmup;
    let end = measure_from + window;
    let completed = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        label.clone(),
        warmup + window,
        Arc::clone(&completed),
        "requests",
    );

    let workers: Vec<_> = (0..params.connections)
        .map(|worker| {
            let (client, url, pad, completed, load) = (
                client.clone(),
                url.clone(),
                Arc::clone(&pad),
                Arc::clone(&completed),
                load.clone(),
            );
            tokio::spawn(async move {
                let mut tally = WorkerTally::default();
                for seq in 0.. {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let id = event_id(round, worker, seq);
                    let request = load.request(&client, &url, &id, load.body(&id, seq, &pad));
                    let outcome = match request.send().await {
                        // Read the whole answer so the connection is reused.
                        Ok(response) => {
                            let status = response.status();
                            let body = response.bytes().await;
                            Ok((status, body))
                        }
                        Err(err) => Err(err),
                    };
                    let done = Instant::now();
                    completed.fetch_add(1, Ordering::Relaxed);
                    let counted = sent >= measure_from && done <= end;
                    match outcome {
                        Ok((status, Ok(body))) if status.is_success() => {
                            if counted {
                                tally.latencies.push((done - sent).as_nanos() as u64);
                                if is_duplicate(&body) {
                                    tally.duplicates += 1;
                                }
                            }
                        }
                        Ok((status, body)) => {
                            if counted {
                                tally.errors_status += 1;
                            }
                            if tally.first_error.is_none() {
                                let body = body
                                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                                    .unwrap_or_default();
                                tally.first_error = Some(format!("{status}: {body}"));
                            }
                        }
                        Err(err) => {
                            if counted {
                                tally.errors_transport += 1;
                            }
                            if tally.first_error.is_none() {
                                tally.first_error = Some(format!("{err:#}"));
                            }
                            tokio::time::sleep(ERROR_BACKOFF).await;
                        }
                    }
                }
                tally
            })
        })
        .collect();

    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_window = CpuWindow::start(usage_of)?;
    let mut latencies = Vec::new();
    let (mut errors_status, mut errors_transport, mut duplicates, mut first_error) =
        (0, 0, 0, None);
    for worker in workers {
        let tally = worker.await.context("a load worker panicked")?;
        latencies.extend(tally.latencies);
        errors_status += tally.errors_status;
        errors_transport += tally.errors_transport;
        duplicates += tally.duplicates;
        first_error = first_error.or(tally.first_error);
    }
    let cpu = cpu_window.end()?;
    let peak_rss = usage_of
        .map(ProcUsage::read)
        .transpose()?
        .map(|u| mib(u.peak_rss_bytes));
    drop(progress);
    if let Some(error) = first_error {
        eprintln!("  {label}: first error: {error}");
    }
    let ok = latencies.len() as u64;
    Ok(Round {
        server,
        round,
        requests_per_s: ok as f64 / window.as_secs_f64(),
        latency_ms: Percentiles::of(&mut latencies),
        ok,
        errors_status,
        errors_transport,
        duplicates,
        cpu,
        server_peak_rss_mib: peak_rss,
    })
}

/// Whether a webhook answer says the delivery id was seen before. Only a
/// webhook answer holds the key, so publish answers cost a failed search.
fn is_duplicate(body: &[u8]) -> bool {
    const MARK: &[u8] = br#""duplicate":true"#;
    body.windows(MARK.len()).any(|window| window == MARK)
}

/// The per-server medians over rounds.
#[derive(Debug, Serialize)]
struct Summary {
    requests_per_s: f64,
    latency_ms: Percentiles,
    errors: u64,
    cpu: CpuSplit,
    server_cpu_us_per_request: Option<f64>,
    server_peak_rss_mib: Option<f64>,
}

impl Summary {
    fn of(rounds: &[&Round]) -> Self {
        let med = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(|r| f(r)).collect());
        let opt = |f: &dyn Fn(&Round) -> Option<f64>| {
            let values: Vec<f64> = rounds.iter().filter_map(|r| f(r)).collect();
            (!values.is_empty()).then(|| median(values))
        };
        Self {
            requests_per_s: med(&|r| r.requests_per_s),
            latency_ms: Percentiles {
                p50: med(&|r| r.latency_ms.p50),
                p90: med(&|r| r.latency_ms.p90),
                p99: med(&|r| r.latency_ms.p99),
                p999: med(&|r| r.latency_ms.p999),
                max: med(&|r| r.latency_ms.max),
            },
            errors: rounds
                .iter()
                .map(|r| r.errors_status + r.errors_transport)
                .sum(),
            cpu: CpuSplit {
                client_s: med(&|r| r.cpu.client_s),
                server_s: opt(&|r| r.cpu.server_s),
                server_system_s: opt(&|r| r.cpu.server_system_s),
                other_s: med(&|r| r.cpu.other_s),
            },
            server_cpu_us_per_request: opt(&|r| {
                r.cpu.server_s.map(|cpu| cpu * 1e6 / r.ok.max(1) as f64)
            }),
            server_peak_rss_mib: opt(&|r| r.server_peak_rss_mib),
        }
    }
}

async fn publish_scenario(params: &PublishParams, server_args: &ServerArgs) -> Result<()> {
    let binary = server_args.describe_binary()?;
    let bare = BareServer::start("/v1/topics/{topic}/events", None)?;
    let path = format!("/v1/topics/{TOPIC}/events");
    let mut rounds = Vec::new();
    let mut log_lines = Vec::new();
    let mut data_fs = String::new();
    eprintln!(
        "publish: {} connections, {}s warm-up + {}s measured, {} rounds per server, fsync {}",
        params.connections, params.warmup_s, params.duration_s, params.rounds, params.fsync
    );
    for round in 1..=params.rounds {
        rounds
            .push(drive_publish(BARE, &Load::Publish, bare.url(&path), round, params, None).await?);
        tokio::time::sleep(ROUND_PAUSE).await;

        // A fresh server and log per round, so rounds do not inherit each
        // other's segments or memory.
        let server = Switchyard::start(server_args, &Setup::default())?;
        data_fs = server.data_filesystem();
        let pid = server.child.id();
        rounds.push(
            drive_publish(
                SWITCHYARD,
                &Load::Publish,
                server.url(&path),
                round,
                params,
                Some(pid),
            )
            .await?,
        );
        log_lines.extend(server.log_lines());
        drop(server);
        tokio::time::sleep(ROUND_PAUSE).await;
    }
    drop(bare);

    let comparison = Comparison::of(&rounds, BARE, SWITCHYARD);
    println!();
    println!(
        "publish: {} connections, {} B structured events, {}s measured after {}s warm-up, {} partitions, fsync {}, log on {data_fs}",
        params.connections,
        params.body_bytes,
        params.duration_s,
        params.warmup_s,
        params.partitions,
        params.fsync
    );
    println!(
        "CPU columns: seconds in the measured window; client = this tool (and the in-process bare server), other = the rest of the machine"
    );
    comparison.print(&rounds);
    let (verdict, busiest) = publish_verdict(
        params,
        &rounds,
        &comparison,
        PUBLISH_TARGET_RATIO,
        None,
        &format!("≥ {PUBLISH_TARGET_RATIO}× bare axum"),
    );
    report_log(&log_lines);

    let headline = Headline {
        target: format!("publish ≥ {PUBLISH_TARGET_RATIO}× bare axum"),
        measured: comparison.measured_text(),
        verdict,
        busiest_other_cores: Some(busiest),
    };
    record(
        "publish",
        json!(params),
        json!({
            "server_binary": binary,
            "data_filesystem": data_fs,
            "rounds": rounds,
            "bare": comparison.base,
            "switchyard": comparison.measured,
            "round_ratios": comparison.round_ratios,
            "server_warnings": log_lines,
        }),
        Some(comparison.ratio),
        &headline,
    )
}

/// The two sides of the `webhook` scenario, both on one switchyard server.
const PUBLISH_SIDE: &str = "publish";
const WEBHOOK_SIDE: &str = "webhook";

/// Webhook ingestion against plain publish: the same client, the same
/// server process, the same body size, rounds alternating.
async fn webhook_scenario(params: &PublishParams, server_args: &ServerArgs) -> Result<()> {
    let binary = server_args.describe_binary()?;
    let (secret, key) = webhook_secret();
    let setup = Setup {
        webhook_secret: Some(secret),
        ..Setup::default()
    };
    let server = Switchyard::start(server_args, &setup)?;
    let pid = server.child.id();
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
    println!();
    println!(
        "webhook: {} connections, {} B bodies (structured CloudEvents to publish, Standard Webhooks-signed JSON to /v1/webhooks/{WEBHOOK_SOURCE}), \
         {}s measured after {}s warm-up, {} partitions, fsync {}, log on {data_fs}",
        params.connections,
        params.body_bytes,
        params.duration_s,
        params.warmup_s,
        params.partitions,
        params.fsync
    );
    println!(
        "one switchyard server for all rounds; CPU columns: seconds in the measured window, other = the rest of the machine"
    );
    comparison.print(&rounds);
    println!("webhooks answered as duplicates (stored nothing): {duplicates}");
    let (verdict, busiest) = publish_verdict(
        params,
        &rounds,
        &comparison,
        WEBHOOK_TARGET_RATIO,
        Some((duplicates == 0, "no duplicates")),
        &format!("webhook ≥ {WEBHOOK_TARGET_RATIO}× publish"),
    );
    report_log(&log_lines);

    let headline = Headline {
        target: format!("webhook ≥ {WEBHOOK_TARGET_RATIO}× publish"),
        measured: comparison.measured_text(),
        verdict,
        busiest_other_cores: Some(busiest),
    };
    record(
        "webhook",
        json!(params),
        json!({
            "server_binary": binary,
            "data_filesystem": data_fs,
            "rounds": rounds,
            "publish": comparison.base,
            "webhook": comparison.measured,
            "round_ratios": comparison.round_ratios,
            "duplicates": duplicates,
            "server_warnings": log_lines,
        }),
        Some(comparison.ratio),
        &headline,
    )
}

/// The two sides of the `auth` scenario, each on servers of its own.
const NO_TOKEN_SIDE: &str = "no token";
const TOKEN_SIDE: &str = "token";

/// A fresh HS256 secret: random bytes, hex-encoded.
fn jwt_secret() -> String {
    (0..JWT_SECRET_BYTES)
        .map(|_| format!("{:02x}", fastrand::u8(..)))
        .collect()
}

/// Mints a token that may publish to the bench topic for `ttl`, with the
/// server binary's own `switchyard token` (as an operator would), signed
/// with `secret`.
async fn mint_token(server_args: &ServerArgs, secret: &str, ttl: Duration) -> Result<String> {
    let binary = server_args.binary()?;
    let ttl = format!("{}s", ttl.as_secs());
    let args = [
        "token",
        "--publish",
        TOPIC,
        "--ttl",
        &ttl,
        "--subject",
        "switchyard-bench",
    ];
    let started = Instant::now();
    // The token is a few hundred bytes: it fits in the pipe, so the child
    // never blocks on it before exiting.
    let mut child = ChildGuard(
        known_environment(&mut Command::new(&binary))
            .args(args)
            .env(JWT_SECRET_ENV, secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} token", binary.display()))?,
    );
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        if started.elapsed() > TOKEN_MINT_TIMEOUT {
            bail!("`switchyard token` printed nothing in {TOKEN_MINT_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let read = |pipe: Option<&mut dyn std::io::Read>| {
        let mut text = String::new();
        if let Some(pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text.trim().to_owned()
    };
    let token = read(child.0.stdout.as_mut().map(|p| p as &mut dyn std::io::Read));
    if !status.success() || token.is_empty() {
        let stderr = read(child.0.stderr.as_mut().map(|p| p as &mut dyn std::io::Read));
        bail!(
            "`{} {}` failed ({status}): {stderr}",
            binary.display(),
            args.join(" ")
        );
    }
    Ok(token)
}

/// Checks that a server started with the secret refuses a publish without
/// a token (else the token rounds would measure nothing) and accepts one
/// with it (else every request of the round would fail).
async fn check_token_required(server: &Switchyard, path: &str, token: &Load) -> Result<()> {
    let client = http_client(1)?;
    let url = server.url(path);
    let id = event_id(0, 0, 0);
    for (load, wanted) in [
        (&Load::Publish, reqwest::StatusCode::UNAUTHORIZED),
        (token, reqwest::StatusCode::OK),
    ] {
        let response = load
            .request(&client, &url, &id, load.body(&id, 0, ""))
            .send()
            .await
            .context("checking that the server asks for the token")?;
        let status = response.status();
        if status != wanted {
            let body = response.text().await.unwrap_or_default();
            let with = if wanted.is_success() {
                "with"
            } else {
                "without"
            };
            bail!("a publish {with} the token was answered {status} ({body}), not {wanted}");
        }
    }
    Ok(())
}

/// Publish with an HS256 bearer token on every request against the same
/// publish to a server started without a key (no header): the same client,
/// body and connections, a fresh server per round, rounds alternating.
async fn auth_scenario(params: &PublishParams, server_args: &ServerArgs) -> Result<()> {
    let binary = server_args.describe_binary()?;
    let secret = jwt_secret();
    // The token must outlive every server of the run, each started within
    // SERVER_START_TIMEOUT.
    let per_round = 2.0
        * (params.warmup_s
            + params.duration_s
            + (ROUND_PAUSE + SERVER_START_TIMEOUT).as_secs_f64());
    let ttl = TOKEN_TTL_MARGIN + Duration::from_secs_f64(per_round * f64::from(params.rounds));
    let token = mint_token(server_args, &secret, ttl).await?;
    let mut authorization = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .context("the minted token is not a valid header value")?;
    authorization.set_sensitive(true);
    let token_load = Load::Authorized(authorization);
    let without_key = Setup::default();
    let with_key = Setup {
        jwt_secret: Some(secret),
        ..Setup::default()
    };
    let path = format!("/v1/topics/{TOPIC}/events");
    let mut rounds = Vec::new();
    let mut log_lines = Vec::new();
    let mut data_fs = String::new();
    eprintln!(
        "auth: {} connections, {}s warm-up + {}s measured, {} rounds of each, fsync {}; token of {} B",
        params.connections,
        params.warmup_s,
        params.duration_s,
        params.rounds,
        params.fsync,
        token.len()
    );
    for round in 1..=params.rounds {
        for (side, setup, load) in [
            (NO_TOKEN_SIDE, &without_key, &Load::Publish),
            (TOKEN_SIDE, &with_key, &token_load),
        ] {
            // A fresh server and log per round, as in `publish`: the two
            // sides need servers started differently, and neither inherits
            // the other's segments or memory.
            let server = Switchyard::start(server_args, setup)?;
            data_fs = server.data_filesystem();
            if setup.jwt_secret.is_some() {
                check_token_required(&server, &path, load).await?;
            }
            let pid = server.child.id();
            rounds.push(
                drive_publish(side, load, server.url(&path), round, params, Some(pid)).await?,
            );
            log_lines.extend(server.log_lines());
            drop(server);
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }

    let comparison = Comparison::of(&rounds, NO_TOKEN_SIDE, TOKEN_SIDE);
    println!();
    println!(
        "auth: {} connections, {} B structured events, {}s measured after {}s warm-up, {} partitions, fsync {}, log on {data_fs}",
        params.connections,
        params.body_bytes,
        params.duration_s,
        params.warmup_s,
        params.partitions,
        params.fsync
    );
    println!(
        "token: HS256, {} B, may publish to {TOPIC:?}, minted by `switchyard token`, sent as `Authorization: Bearer` on every request \
         to a server started with {JWT_SECRET_ENV}; no token: a server started without a key, no header",
        token.len()
    );
    println!(
        "a fresh server per round; CPU columns: seconds in the measured window, other = the rest of the machine"
    );
    comparison.print(&rounds);
    let (verdict, busiest) = publish_verdict(
        params,
        &rounds,
        &comparison,
        AUTH_TARGET_RATIO,
        None,
        &format!("token ≥ {AUTH_TARGET_RATIO}× no token"),
    );
    report_log(&log_lines);

    let cpu_text = match (
        comparison.measured.server_cpu_us_per_request,
        comparison.base.server_cpu_us_per_request,
    ) {
        (Some(token), Some(none)) => {
            format!("; server CPU {token:.0} vs {none:.0} µs/request")
        }
        _ => String::new(),
    };
    let headline = Headline {
        target: format!("publish with a token ≥ {AUTH_TARGET_RATIO}× without"),
        measured: format!("{}{cpu_text}", comparison.measured_text()),
        verdict,
        busiest_other_cores: Some(busiest),
    };
    record(
        "auth",
        json!(params),
        json!({
            "server_binary": binary,
            "data_filesystem": data_fs,
            "jwt": {
                "alg": "HS256",
                "token_bytes": token.len(),
                "publish": [TOPIC],
                "ttl_s": ttl.as_secs(),
                "minted_by": "switchyard token",
            },
            "rounds": rounds,
            "no_token": comparison.base,
            "token": comparison.measured,
            "round_ratios": comparison.round_ratios,
            "server_warnings": log_lines,
        }),
        Some(comparison.ratio),
        &headline,
    )
}

/// The most cores other processes kept busy in any round's window.
fn busiest_round(rounds: &[Round], params: &PublishParams) -> f64 {
    rounds
        .iter()
        .map(|r| r.cpu.other_s / params.duration_s)
        .fold(0.0, f64::max)
}

/// `met`/`MISSED`, or why the run is not comparable with the target.
/// Judges a publish-shaped comparison against `target`× its base and prints
/// the verdict: judged only with 64 connections, fsync always, without
/// --quick, and `extra` (a condition and its words) when given. Also warns
/// when the machine was busy; returns the verdict and the busiest other-core
/// load.
fn publish_verdict(
    params: &PublishParams,
    rounds: &[Round],
    comparison: &Comparison,
    target: f64,
    extra: Option<(bool, &str)>,
    what: &str,
) -> (String, f64) {
    let busiest = busiest_round(rounds, params);
    warn_if_busy(busiest);
    let comparable = params.connections == PUBLISH_TARGET_CONNECTIONS
        && params.fsync == "always"
        && extra.is_none_or(|(holds, _)| holds);
    let conditions = match extra {
        Some((_, words)) => {
            format!(
                "the target is for 64 connections with fsync always, without --quick, and {words}"
            )
        }
        None => "the target is for 64 connections with fsync always, without --quick".to_owned(),
    };
    let verdict = judge(
        comparable && !params.quick,
        comparison.ratio >= target,
        &conditions,
    );
    println!("target {what} (64 connections, fsync always): {verdict}");
    (verdict, busiest)
}

fn judge(comparable: bool, met: bool, conditions: &str) -> String {
    match (comparable, met) {
        (false, _) => format!("not judged: {conditions}"),
        (true, true) => "met".into(),
        (true, false) => "MISSED".into(),
    }
}

/// Two sides' rounds compared: the side measured against the baseline.
struct Comparison {
    base_name: &'static str,
    measured_name: &'static str,
    base: Summary,
    measured: Summary,
    /// Measured/base of the medians.
    ratio: f64,
    /// Each measured round against the base round just before it: the
    /// spread shows how far to trust the median.
    round_ratios: Vec<f64>,
}

impl Comparison {
    fn of(rounds: &[Round], base_name: &'static str, measured_name: &'static str) -> Self {
        let of = |name: &str| {
            rounds
                .iter()
                .filter(|r| r.server == name)
                .collect::<Vec<_>>()
        };
        let ratio_of = |measured: f64, base: f64| measured / base.max(f64::MIN_POSITIVE);
        let base = Summary::of(&of(base_name));
        let measured = Summary::of(&of(measured_name));
        Self {
            ratio: ratio_of(measured.requests_per_s, base.requests_per_s),
            round_ratios: of(base_name)
                .iter()
                .zip(of(measured_name))
                .map(|(base, measured)| ratio_of(measured.requests_per_s, base.requests_per_s))
                .collect(),
            base_name,
            measured_name,
            base,
            measured,
        }
    }

    fn spread(&self) -> String {
        let spread: Vec<String> = self
            .round_ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect();
        spread.join(", ")
    }

    /// The ratio, both medians and the round-by-round spread, for a headline.
    fn measured_text(&self) -> String {
        format!(
            "{:.2}× ({:.0} vs {:.0} req/s, medians; rounds {})",
            self.ratio,
            self.measured.requests_per_s,
            self.base.requests_per_s,
            self.spread()
        )
    }

    /// The table of rounds and medians, the ratio and the server's CPU per request.
    fn print(&self, rounds: &[Round]) {
        println!();
        println!(
            "| {:<18} | {:>8} | {:>7} | {:>7} | {:>7} | {:>7} | {:>6} | {:>10} | {:>10} | {:>9} | {:>8} |",
            "server",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p999 ms",
            "errors",
            "server CPU",
            "client CPU",
            "other CPU",
            "peak RSS"
        );
        println!(
            "|{:-<20}|{:->10}|{:->9}|{:->9}|{:->9}|{:->9}|{:->8}|{:->12}|{:->12}|{:->11}|{:->10}|",
            "", "", "", "", "", "", "", "", "", "", ""
        );
        for round in rounds {
            print_row(
                &format!("{} #{}", round.server, round.round),
                round.requests_per_s,
                &round.latency_ms,
                round.errors_status + round.errors_transport,
                &round.cpu,
                round.server_peak_rss_mib,
            );
        }
        for (name, summary) in [
            (self.base_name, &self.base),
            (self.measured_name, &self.measured),
        ] {
            print_row(
                &format!("{name} median"),
                summary.requests_per_s,
                &summary.latency_ms,
                summary.errors,
                &summary.cpu,
                summary.server_peak_rss_mib,
            );
        }
        println!();
        println!(
            "ratio {}/{} (medians): {:.3}; round by round: {}",
            self.measured_name,
            self.base_name,
            self.ratio,
            self.spread()
        );
        for (name, summary) in [
            (self.base_name, &self.base),
            (self.measured_name, &self.measured),
        ] {
            if let (Some(per_request), Some(cpu), Some(system)) = (
                summary.server_cpu_us_per_request,
                summary.cpu.server_s,
                summary.cpu.server_system_s,
            ) {
                println!(
                    "switchyard CPU per request in the {name} rounds: {per_request:.0} µs ({:.0} % of it in the kernel)",
                    system / cpu.max(f64::MIN_POSITIVE) * 100.0
                );
            }
        }
    }
}

fn print_row(
    name: &str,
    rps: f64,
    latency: &Percentiles,
    errors: u64,
    cpu: &CpuSplit,
    rss: Option<f64>,
) {
    let server_cpu = cpu
        .server_s
        .map_or_else(|| "-".into(), |c| format!("{c:.2}"));
    let rss = rss.map_or_else(|| "-".into(), |r| format!("{r:.0} MiB"));
    println!(
        "| {name:<18} | {rps:>8.0} | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.2} | {errors:>6} | {server_cpu:>10} | {:>10.2} | {:>9.2} | {rss:>8} |",
        latency.p50, latency.p90, latency.p99, latency.p999, cpu.client_s, cpu.other_s
    );
}

/// Says so when other processes used a noticeable share of the machine
/// during a measured window (`busiest`: the most cores in any window).
fn warn_if_busy(busiest: f64) {
    if busiest > BUSY_MACHINE_CORES {
        println!(
            "WARNING: other processes kept up to {busiest:.2} cores busy during a measured window; \
             these numbers are skewed (see the `other CPU` column)"
        );
    }
}

fn report_log(lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    println!();
    println!(
        "the server logged {} warning/error lines; the last:",
        lines.len()
    );
    for line in lines.iter().rev().take(LOG_LINES_SHOWN).rev() {
        println!("  {line}");
    }
}

// ---------------------------------------------------------------------------
// latency and fanout: publish → SSE
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Latency,
    Fanout,
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Fanout => "fanout",
        }
    }
}

/// The part of a received event the subscriber reads.
#[derive(Deserialize)]
struct Received {
    data: Stamp,
}

#[derive(Deserialize)]
struct Stamp {
    seq: u64,
    sent_ns: u64,
}

/// What one subscriber saw.
#[derive(Default)]
struct SubscriberTally {
    latencies: Vec<u64>,
    duplicates: u64,
    /// `lagged` or `error` events, unparsable data, or a stream that broke.
    problems: u64,
    first_problem: Option<String>,
    /// When the last event arrived, in ns since the run's epoch.
    last_received_ns: u64,
}

impl SubscriberTally {
    fn problem(&mut self, what: String) {
        self.problems += 1;
        self.first_problem.get_or_insert(what);
    }
}

/// An event of about `STREAM_EVENT_BYTES` carrying its sequence number and
/// the time it was sent, in ns since the run's epoch (one monotonic clock
/// for the publisher and every subscriber, all in this process).
fn stream_body(seq: u64, sent_ns: u64, pad: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"e-{seq:012}","source":"/bench","type":"{EVENT_TYPE}","data":{{"k":"k{:03}","seq":{seq},"sent_ns":{sent_ns},"pad":"{pad}"}}}}"#,
        seq % KEYS
    )
}

/// Reads one subscriber's stream until it has every event or is cancelled.
async fn follow(
    response: reqwest::Response,
    total: u64,
    epoch: Instant,
    delivered: Arc<AtomicU64>,
    cancel: CancellationToken,
) -> SubscriberTally {
    let mut tally = SubscriberTally {
        latencies: Vec::with_capacity(total as usize),
        ..SubscriberTally::default()
    };
    let mut seen = vec![false; total as usize];
    let mut events = response.bytes_stream().eventsource();
    while (tally.latencies.len() as u64) < total {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            next = events.next() => next,
        };
        let event = match next {
            Some(Ok(event)) => event,
            Some(Err(err)) => {
                tally.problem(format!("the stream broke: {err}"));
                break;
            }
            None => {
                tally.problem("the server ended the stream".into());
                break;
            }
        };
        let received_ns = epoch.elapsed().as_nanos() as u64;
        match event.event.as_str() {
            EVENT_TYPE => {}
            "lagged" | "error" => {
                tally.problem(format!("event: {}: {}", event.event, event.data));
                continue;
            }
            _ => continue,
        }
        match serde_json::from_str::<Received>(&event.data) {
            Ok(Received { data }) if data.seq < total => {
                let slot = &mut seen[data.seq as usize];
                if *slot {
                    tally.duplicates += 1;
                } else {
                    *slot = true;
                    tally
                        .latencies
                        .push(received_ns.saturating_sub(data.sent_ns));
                    tally.last_received_ns = received_ns;
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => tally.problem("an event with an unknown sequence number".into()),
            Err(err) => tally.problem(format!("unparsable event data: {err}")),
        }
    }
    tally
}

/// What the publisher saw.
#[derive(Default)]
struct PublishTally {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<u64>,
    first_sent_ns: u64,
}

/// Publishes `total` events at `rate` per second on a fixed schedule. Each
/// publish is its own task so a slow answer does not delay the next send.
async fn publish_at_rate(
    client: reqwest::Client,
    url: String,
    rate: u64,
    total: u64,
    epoch: Instant,
) -> PublishTally {
    // Longer numbers later make events a few bytes larger: "about" 200 B.
    let pad: Arc<str> = "x"
        .repeat(STREAM_EVENT_BYTES.saturating_sub(stream_body(0, 0, "").len()))
        .into();
    let start = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::with_capacity(total as usize);
    let mut first_sent_ns = 0;
    for seq in 0..total {
        tokio::time::sleep_until(start + interval.mul_f64(seq as f64)).await;
        let (client, url, pad) = (client.clone(), url.clone(), Arc::clone(&pad));
        let sent_ns = epoch.elapsed().as_nanos() as u64;
        if seq == 0 {
            first_sent_ns = sent_ns;
        }
        tasks.push(tokio::spawn(async move {
            let request = client
                .post(&url)
                .timeout(REQUEST_TIMEOUT)
                .header(reqwest::header::CONTENT_TYPE, STRUCTURED)
                .body(stream_body(seq, sent_ns, &pad));
            let outcome = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let _ = response.bytes().await;
                    Ok(())
                }
                Ok(response) => {
                    let status = response.status();
                    Err(format!(
                        "{status}: {}",
                        response.text().await.unwrap_or_default()
                    ))
                }
                Err(err) => Err(format!("{err:#}")),
            };
            (outcome, epoch.elapsed().as_nanos() as u64 - sent_ns)
        }));
    }
    let mut tally = PublishTally {
        first_sent_ns,
        ..PublishTally::default()
    };
    for task in tasks {
        match task.await {
            Ok((Ok(()), latency)) => {
                tally.ok += 1;
                tally.latencies.push(latency);
            }
            Ok((Err(err), _)) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(err);
            }
            Err(err) => {
                tally.errors += 1;
                tally
                    .first_error
                    .get_or_insert(format!("publish task failed: {err}"));
            }
        }
    }
    tally
}

/// What one publish→SSE run measured on a running server.
struct StreamRun {
    connected: usize,
    connect_failures: usize,
    expected: u64,
    received: u64,
    missing: u64,
    /// Subscribers that missed at least one event.
    incomplete: u64,
    duplicates: u64,
    problems: u64,
    first_problem: Option<String>,
    published: PublishTally,
    publish_latency: Percentiles,
    /// Publish → receive over all deliveries.
    lag: Percentiles,
    deliveries_per_s: f64,
    before_subscribers: ProcUsage,
    with_subscribers: ProcUsage,
    rss_per_subscriber: f64,
    /// Everyone connected, nothing published; `None` when `idle_s` is 0.
    idle: Option<CpuSplit>,
    publish_cpu: CpuSplit,
    /// CPU seconds of the process `broker_pid` in the publishing window.
    broker_cpu_s: Option<f64>,
}

/// The publish→SSE measurement shared by `latency`, `fanout` and
/// `backends`: connects `params.subscribers` SSE clients to the bench topic
/// of a running server, lets `params.idle_s` pass, publishes `params.rate`
/// events/s for `params.duration_s`, and collects what each subscriber got.
async fn run_stream(
    server: &Switchyard,
    params: &StreamParams,
    label: &str,
    broker_pid: Option<u32>,
) -> Result<StreamRun> {
    let total = (params.rate as f64 * params.duration_s).round() as u64;
    let pid = server.child.id();
    let before_subscribers = server.usage()?;

    // Connect every subscriber before the first publish. The server fixes a
    // subscriber's cursor and joins it to the broadcast before it answers,
    // so once the headers are here it will see every later event.
    let sse = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()?;
    let stream_url = server.url(&format!("/v1/topics/{TOPIC}/stream"));
    let connected_at = Instant::now();
    let attempts: Vec<Result<reqwest::Response, String>> =
        futures::stream::iter(0..params.subscribers)
            .map(|_| {
                let request = sse
                    .get(&stream_url)
                    .header(reqwest::header::ACCEPT, "text/event-stream");
                async move {
                    match tokio::time::timeout(REQUEST_TIMEOUT, request.send()).await {
                        Ok(Ok(response)) if response.status().is_success() => Ok(response),
                        Ok(Ok(response)) => Err(format!("{}", response.status())),
                        Ok(Err(err)) => Err(format!("{err:#}")),
                        Err(_) => Err(format!("no answer in {REQUEST_TIMEOUT:?}")),
                    }
                }
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect()
            .await;
    let mut responses = Vec::with_capacity(params.subscribers);
    let mut connect_failures = 0;
    for attempt in attempts {
        match attempt {
            Ok(response) => responses.push(response),
            Err(err) => {
                if connect_failures == 0 {
                    eprintln!("  a subscriber could not connect: {err}");
                }
                connect_failures += 1;
            }
        }
    }
    let connected = responses.len();
    eprintln!(
        "  {connected} subscribers connected in {:.1}s",
        connected_at.elapsed().as_secs_f64()
    );

    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let cancel = CancellationToken::new();
    let subscribers: Vec<_> = responses
        .into_iter()
        .map(|response| {
            tokio::spawn(follow(
                response,
                total,
                epoch,
                Arc::clone(&delivered),
                cancel.clone(),
            ))
        })
        .collect();

    tokio::time::sleep(SETTLE).await;
    let with_subscribers = server.usage()?;
    let idle = if params.idle_s > 0.0 {
        let idle_window = CpuWindow::start(Some(pid))?;
        tokio::time::sleep(Duration::from_secs_f64(params.idle_s)).await;
        Some(idle_window.end()?)
    } else {
        None
    };
    let rss_per_subscriber = (with_subscribers
        .rss_bytes
        .saturating_sub(before_subscribers.rss_bytes)) as f64
        / connected.max(1) as f64;

    let publisher = http_client(CONNECT_CONCURRENCY)?;
    let progress = Progress::start(
        format!("{label} deliveries"),
        Duration::from_secs_f64(params.duration_s),
        Arc::clone(&delivered),
        "delivered",
    );
    let publish_url = server.url(&format!("/v1/topics/{TOPIC}/events"));
    let broker_usage = || broker_pid.and_then(|pid| ProcUsage::read(pid).ok());
    let broker_before = broker_usage();
    let publish_window = CpuWindow::start(Some(pid))?;
    let mut published = publish_at_rate(publisher, publish_url, params.rate, total, epoch).await;
    let publish_cpu = publish_window.end()?;
    let broker_cpu_s = broker_before
        .zip(broker_usage())
        .map(|(a, b)| b.cpu_seconds() - a.cpu_seconds());

    // Give stragglers a bounded time to receive the rest, then stop them.
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    let expected = total * connected as u64;
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    drop(progress);

    let mut latencies = Vec::with_capacity(expected as usize);
    let (mut duplicates, mut problems, mut incomplete, mut last_received_ns) = (0, 0, 0, 0);
    let mut first_problem = None;
    for subscriber in subscribers {
        let tally = subscriber.await.context("a subscriber task panicked")?;
        if (tally.latencies.len() as u64) < total {
            incomplete += 1;
        }
        duplicates += tally.duplicates;
        problems += tally.problems;
        last_received_ns = last_received_ns.max(tally.last_received_ns);
        first_problem = first_problem.or(tally.first_problem);
        latencies.extend(tally.latencies);
    }

    let received = latencies.len() as u64;
    let delivery_window_s = (last_received_ns.saturating_sub(published.first_sent_ns)) as f64 / 1e9;
    Ok(StreamRun {
        connected,
        connect_failures,
        expected,
        received,
        missing: expected - received,
        incomplete,
        duplicates,
        problems,
        first_problem,
        publish_latency: Percentiles::of(&mut published.latencies),
        published,
        lag: Percentiles::of(&mut latencies),
        deliveries_per_s: received as f64 / delivery_window_s.max(f64::MIN_POSITIVE),
        before_subscribers,
        with_subscribers,
        rss_per_subscriber,
        idle,
        publish_cpu,
        broker_cpu_s,
    })
}

async fn stream_scenario(
    kind: StreamKind,
    params: &StreamParams,
    server_args: &ServerArgs,
) -> Result<()> {
    if params.rate == 0 || params.subscribers == 0 {
        bail!("--rate and --subscribers must be at least 1");
    }
    let binary = server_args.describe_binary()?;
    let total = (params.rate as f64 * params.duration_s).round() as u64;
    eprintln!(
        "{}: {} subscribers, {} events/s for {}s ({total} events, {} deliveries expected), fsync {}",
        kind.name(),
        params.subscribers,
        params.rate,
        params.duration_s,
        total * params.subscribers as u64,
        params.fsync
    );
    let server = Switchyard::start(server_args, &Setup::default())?;
    tokio::time::sleep(SETTLE).await;
    let run = run_stream(&server, params, kind.name(), None).await?;
    let end = server.usage()?;
    let log_lines = server.log_lines();
    let data_fs = server.data_filesystem();
    drop(server);

    let StreamRun {
        connected,
        connect_failures,
        expected,
        received,
        missing,
        incomplete,
        duplicates,
        problems,
        first_problem,
        published,
        publish_latency,
        lag,
        deliveries_per_s,
        before_subscribers,
        with_subscribers,
        rss_per_subscriber,
        idle,
        publish_cpu,
        broker_cpu_s: _,
    } = run;
    let idle = idle.unwrap_or(CpuSplit {
        client_s: 0.0,
        server_s: None,
        server_system_s: None,
        other_s: 0.0,
    });
    let idle_cpu_percent = idle.server_s.unwrap_or(0.0) / params.idle_s * 100.0;
    let percent_of_run = |cpu: f64| cpu / params.duration_s * 100.0;
    let server_cpu = publish_cpu.server_s.unwrap_or(0.0);

    println!();
    println!(
        "{}: {connected} SSE subscribers, {} events/s of ~{} B for {}s, {} partitions, fsync {}, log on {data_fs}",
        kind.name(),
        params.rate,
        params.event_bytes,
        params.duration_s,
        params.partitions,
        params.fsync
    );
    println!();
    println!("| {:<44} | {:>18} |", "measure", "value");
    println!("|{:-<46}|{:->20}|", "", "");
    let row = |name: &str, value: String| println!("| {name:<44} | {value:>18} |");
    row(
        "events published (ok / errors)",
        format!("{} / {}", published.ok, published.errors),
    );
    row(
        "publish latency p50 / p99 ms",
        format!("{:.2} / {:.2}", publish_latency.p50, publish_latency.p99),
    );
    row(
        "deliveries (received / expected)",
        format!("{received} / {expected}"),
    );
    row("deliveries missing", missing.to_string());
    row(
        "subscribers missing at least one event",
        incomplete.to_string(),
    );
    row("duplicate deliveries", duplicates.to_string());
    row(
        "subscriber problems (lagged, error, broken)",
        problems.to_string(),
    );
    row(
        "subscribers that failed to connect",
        connect_failures.to_string(),
    );
    row("deliveries/s", format!("{deliveries_per_s:.0}"));
    row("publish→receive p50 ms", format!("{:.2}", lag.p50));
    row("publish→receive p90 ms", format!("{:.2}", lag.p90));
    row("publish→receive p99 ms", format!("{:.2}", lag.p99));
    row("publish→receive p999 ms", format!("{:.2}", lag.p999));
    row("publish→receive max ms", format!("{:.2}", lag.max));
    row(
        "server RSS before subscribers",
        format!("{:.1} MiB", mib(before_subscribers.rss_bytes)),
    );
    row(
        "server RSS with subscribers",
        format!("{:.1} MiB", mib(with_subscribers.rss_bytes)),
    );
    row(
        "server RSS per subscriber",
        format!("{:.1} KiB", rss_per_subscriber / 1024.0),
    );
    row(
        "server peak RSS",
        format!("{:.1} MiB", mib(end.peak_rss_bytes)),
    );
    row(
        "server idle CPU with subscribers",
        format!("{idle_cpu_percent:.1} %"),
    );
    row(
        "other processes' CPU while idle",
        format!(
            "{:.2} s ({:.0} %)",
            idle.other_s,
            idle.other_s / params.idle_s * 100.0
        ),
    );
    row(
        "server CPU while publishing",
        format!("{server_cpu:.2} s ({:.0} %)", percent_of_run(server_cpu)),
    );
    row(
        "  of which in the kernel",
        format!("{:.2} s", publish_cpu.server_system_s.unwrap_or(0.0)),
    );
    row(
        "bench client CPU while publishing",
        format!(
            "{:.2} s ({:.0} %)",
            publish_cpu.client_s,
            percent_of_run(publish_cpu.client_s)
        ),
    );
    row(
        "other processes' CPU while publishing",
        format!(
            "{:.2} s ({:.0} %)",
            publish_cpu.other_s,
            percent_of_run(publish_cpu.other_s)
        ),
    );
    println!();
    let busiest = f64::max(
        idle.other_s / params.idle_s,
        publish_cpu.other_s / params.duration_s,
    );
    warn_if_busy(busiest);
    if let Some(problem) = &first_problem {
        println!("first subscriber problem: {problem}");
    }
    if let Some(error) = &published.first_error {
        println!("first publish error: {error}");
    }
    let headline = if kind == StreamKind::Latency {
        let comparable = params.subscribers == LATENCY_TARGET_SUBSCRIBERS
            && params.rate == LATENCY_TARGET_RATE
            && !params.quick;
        let verdict = judge(
            comparable,
            lag.p99 <= LATENCY_TARGET_P99_MS && missing == 0,
            "the target is for 1000 subscribers at 50 events/s, without --quick",
        );
        println!(
            "target publish→SSE p99 ≤ {LATENCY_TARGET_P99_MS} ms, nothing missing (1000 subscribers × 50 events/s): {verdict}"
        );
        Headline {
            target: format!("publish→SSE p99 ≤ {LATENCY_TARGET_P99_MS} ms, nothing missing"),
            measured: format!(
                "p99 {:.1} ms (p50 {:.1} ms), {missing} of {expected} deliveries missing, {} subscribers",
                lag.p99, lag.p50, params.subscribers
            ),
            verdict,
            busiest_other_cores: Some(busiest),
        }
    } else {
        Headline {
            target: "none: fan-out cost, for information".into(),
            measured: format!(
                "{deliveries_per_s:.0} deliveries/s to {} subscribers, p99 {:.1} ms, {missing} missing, \
                 {:.1} KiB RSS per subscriber",
                params.subscribers,
                lag.p99,
                rss_per_subscriber / 1024.0
            ),
            verdict: "no target".into(),
            busiest_other_cores: Some(busiest),
        }
    };
    report_log(&log_lines);

    record(
        kind.name(),
        json!(params),
        json!({
            "server_binary": binary,
            "data_filesystem": data_fs,
            "connected": connected,
            "connect_failures": connect_failures,
            "published_ok": published.ok,
            "publish_errors": published.errors,
            "publish_latency_ms": publish_latency,
            "deliveries_expected": expected,
            "deliveries_received": received,
            "deliveries_missing": missing,
            "subscribers_incomplete": incomplete,
            "duplicates": duplicates,
            "subscriber_problems": problems,
            "deliveries_per_s": deliveries_per_s,
            "publish_to_receive_ms": lag,
            "server_rss_before_subscribers_mib": mib(before_subscribers.rss_bytes),
            "server_rss_with_subscribers_mib": mib(with_subscribers.rss_bytes),
            "server_rss_per_subscriber_kib": rss_per_subscriber / 1024.0,
            "server_peak_rss_mib": mib(end.peak_rss_bytes),
            "server_idle_cpu_percent": idle_cpu_percent,
            "idle_cpu": idle,
            "publish_cpu": publish_cpu,
            "server_warnings": log_lines,
        }),
        None,
        &headline,
    )
}

// ---------------------------------------------------------------------------
// handler: a handler's delivery rate against a plain client loop
// ---------------------------------------------------------------------------

/// One pass of requests arriving at the sink.
#[derive(Debug, Serialize)]
struct SinkRun {
    /// Requests the sink answered.
    requests: u64,
    /// Requests per second at the sink, from its first request to its last.
    requests_per_s: f64,
    /// From the sink's first request to its last.
    seconds: f64,
    /// Requests the client saw fail (baseline only).
    errors: u64,
    cpu: CpuSplit,
    /// The window the CPU was measured over.
    window_s: f64,
}

impl SinkRun {
    fn other_cores(&self) -> f64 {
        self.cpu.other_s / self.window_s.max(f64::MIN_POSITIVE)
    }
}

/// The handler file under test: every bench event, earliest first, POSTed
/// as its data to the sink, 64 calls in flight.
fn handler_definition(sink_url: &str) -> String {
    format!(
        "name = \"{HANDLER_NAME}\"\n\n[subscribe]\ntopic = \"{TOPIC}\"\nstart = \"earliest\"\n\n\
         [action]\nkind = \"http\"\nurl = \"{sink_url}\"\nbody = \"data\"\n\n\
         [policy]\nmax_concurrency = {HANDLER_CONCURRENCY}\n\n\
         [outputs]\nresults = \"{RESULTS_TOPIC}\"\ndead_letters = \"{DEAD_LETTER_TOPIC}\"\n"
    )
}

/// Sends `count` requests from `concurrency` workers claiming numbers
/// 0..count from a shared counter, until done or `deadline`; `send` makes
/// request `n`. Returns the requests answered 2xx and the first failure.
async fn send_all<F>(
    count: u64,
    concurrency: usize,
    deadline: Instant,
    send: F,
) -> Result<(u64, Option<String>)>
where
    F: Fn(u64) -> reqwest::RequestBuilder + Clone + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, send) = (Arc::clone(&next), send.clone());
            tokio::spawn(async move {
                let (mut ok, mut first_error) = (0u64, None);
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count || Instant::now() >= deadline {
                        break;
                    }
                    let failure = match send(n).send().await {
                        Ok(response) if response.status().is_success() => {
                            // Read the whole answer so the connection is reused.
                            let _ = response.bytes().await;
                            ok += 1;
                            None
                        }
                        Ok(response) => Some(format!(
                            "{}: {}",
                            response.status(),
                            response.text().await.unwrap_or_default()
                        )),
                        Err(err) => Some(format!("{err:#}")),
                    };
                    if let Some(failure) = failure {
                        first_error.get_or_insert(failure);
                        tokio::time::sleep(ERROR_BACKOFF).await;
                    }
                }
                (ok, first_error)
            })
        })
        .collect();
    let (mut ok, mut first_error) = (0, None);
    for worker in workers {
        let (worker_ok, worker_error) = worker.await.context("a load worker panicked")?;
        ok += worker_ok;
        first_error = first_error.or(worker_error);
    }
    Ok((ok, first_error))
}

/// The baseline: the same requests the handler makes (the events' data,
/// POSTed to the sink), from a plain client loop with the same concurrency.
async fn baseline_to_sink(
    sink_url: &str,
    hits: &Hits,
    params: &HandlerParams,
    pad: &Arc<str>,
) -> Result<SinkRun> {
    let client = http_client(params.concurrency)?;
    hits.reset();
    let cpu_window = CpuWindow::start(None)?;
    let started = Instant::now();
    let progress = Progress::start(
        "baseline".into(),
        Duration::from_secs_f64(params.timeout_s),
        Arc::clone(&hits.count),
        "requests",
    );
    let (url, pad) = (sink_url.to_owned(), Arc::clone(pad));
    let (ok, first_error) = send_all(
        params.events,
        params.concurrency,
        started + Duration::from_secs_f64(params.timeout_s),
        move |n| {
            client
                .post(&url)
                .timeout(REQUEST_TIMEOUT)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(webhook_body(n, &pad))
        },
    )
    .await?;
    drop(progress);
    let window_s = started.elapsed().as_secs_f64();
    let cpu = cpu_window.end()?;
    if let Some(error) = first_error {
        eprintln!("  baseline: first error: {error}");
    }
    let (requests, span) = hits.span();
    Ok(SinkRun {
        requests,
        requests_per_s: hits.rate(),
        seconds: span.as_secs_f64(),
        errors: params.events - ok,
        cpu,
        window_s,
    })
}

async fn handler_scenario(params: &HandlerParams, server_args: &ServerArgs) -> Result<()> {
    let binary = server_args.describe_binary()?;
    let hits = Arc::new(Hits::new());
    let sink = BareServer::start(SINK_PATH, Some(Arc::clone(&hits)))?;
    let sink_url = sink.url(SINK_PATH);
    let pad: Arc<str> = Load::Publish.padding().into();
    let timeout = Duration::from_secs_f64(params.timeout_s);
    eprintln!(
        "handler: {} events, {} in flight, up to {}s, fsync {}",
        params.events, params.concurrency, params.timeout_s, params.fsync
    );

    let before = baseline_to_sink(&sink_url, &hits, params, &pad).await?;

    // The backlog goes in before the handler exists, so the measurement is
    // the handler draining it, not the publishers' pace.
    let setup = Setup {
        handler_outputs: true,
        ..Setup::default()
    };
    let server = Switchyard::start(server_args, &setup)?;
    let data_fs = server.data_filesystem();
    let client = http_client(params.concurrency)?;
    let events_url = server.url(&format!("/v1/topics/{TOPIC}/events"));
    let publish_pad = Arc::clone(&pad);
    let (published, first_error) = send_all(
        params.events,
        params.concurrency,
        Instant::now() + PREPUBLISH_TIMEOUT,
        move |n| {
            let id = event_id(0, 0, n);
            let body = publish_body(&id, n, &publish_pad);
            Load::Publish.request(&client, &events_url, &id, body)
        },
    )
    .await?;
    if published < params.events {
        bail!(
            "pre-publishing stored {published} of {} events; first error: {}",
            params.events,
            first_error.unwrap_or_default()
        );
    }

    hits.reset();
    let server = server.restart_with_handler(server_args, &handler_definition(&sink_url))?;
    let pid = server.child.id();
    let cpu_window = CpuWindow::start(Some(pid))?;
    let started = Instant::now();
    let progress = Progress::start(
        "handler".into(),
        timeout,
        Arc::clone(&hits.count),
        "sink requests",
    );
    while hits.count() < params.events && started.elapsed() < timeout {
        tokio::time::sleep(SINK_POLL).await;
    }
    drop(progress);
    let window_s = started.elapsed().as_secs_f64();
    let cpu = cpu_window.end()?;
    let (requests, span) = hits.span();
    let handled = SinkRun {
        requests,
        requests_per_s: hits.rate(),
        seconds: span.as_secs_f64(),
        errors: 0,
        cpu,
        window_s,
    };
    let status: Value = match reqwest::get(server.url("/v1/handlers")).await {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let server_peak_rss = mib(server.usage()?.peak_rss_bytes);
    let log_lines = server.log_lines();
    drop(server);

    let after = baseline_to_sink(&sink_url, &hits, params, &pad).await?;
    drop(sink);

    let baseline_rate = median(vec![before.requests_per_s, after.requests_per_s]);
    let ratio = handled.requests_per_s / baseline_rate.max(f64::MIN_POSITIVE);
    let complete = handled.requests >= params.events;
    let server_cpu = handled.cpu.server_s.unwrap_or(0.0);

    println!();
    println!(
        "handler: {} pre-published 1 KiB events drained by a handler (http action, body = data, max_concurrency {}) \
         to an in-process sink, against the same {} POSTs from a plain client loop with {} in flight; \
         {} partitions, fsync {}, log on {data_fs}",
        params.events,
        params.concurrency,
        params.events,
        params.concurrency,
        params.partitions,
        params.fsync
    );
    println!(
        "rates are counted at the sink, first request to last; CPU columns: seconds in the window, \
         client = this tool (and the sink), other = the rest of the machine"
    );
    println!();
    println!(
        "| {:<18} | {:>8} | {:>9} | {:>9} | {:>6} | {:>10} | {:>10} | {:>9} |",
        "sender", "requests", "req/s", "seconds", "errors", "server CPU", "client CPU", "other CPU"
    );
    println!(
        "|{:-<20}|{:->10}|{:->11}|{:->11}|{:->8}|{:->12}|{:->12}|{:->11}|",
        "", "", "", "", "", "", "", ""
    );
    for (name, run) in [
        ("baseline before", &before),
        ("handler", &handled),
        ("baseline after", &after),
    ] {
        let server_cpu = run
            .cpu
            .server_s
            .map_or_else(|| "-".into(), |c| format!("{c:.2}"));
        println!(
            "| {name:<18} | {:>8} | {:>9.0} | {:>9.2} | {:>6} | {server_cpu:>10} | {:>10.2} | {:>9.2} |",
            run.requests,
            run.requests_per_s,
            run.seconds,
            run.errors,
            run.cpu.client_s,
            run.cpu.other_s
        );
    }
    println!();
    println!(
        "ratio handler/baseline: {ratio:.3} ({:.0} vs {baseline_rate:.0} req/s, baseline the mean of before and after)",
        handled.requests_per_s
    );
    println!(
        "switchyard CPU per handled event: {:.0} µs; peak RSS {server_peak_rss:.0} MiB",
        server_cpu * 1e6 / handled.requests.max(1) as f64
    );
    if !complete {
        println!(
            "INCOMPLETE: the sink got {} of {} events within {}s",
            handled.requests, params.events, params.timeout_s
        );
    }
    println!("handler status at the end: {status}");
    let busiest = [&before, &handled, &after]
        .iter()
        .map(|run| run.other_cores())
        .fold(0.0, f64::max);
    warn_if_busy(busiest);
    let verdict = judge(
        !params.quick && complete && params.fsync == "always",
        ratio >= HANDLER_TARGET_RATIO,
        "the target needs every event delivered with fsync always, without --quick",
    );
    println!(
        "target handler ≥ {HANDLER_TARGET_RATIO}× a plain client loop (64 in flight): {verdict}"
    );
    report_log(&log_lines);

    let headline = Headline {
        target: format!("handler ≥ {HANDLER_TARGET_RATIO}× plain client loop"),
        measured: format!(
            "{ratio:.2}× ({:.0} vs {baseline_rate:.0} req/s at the sink; {} of {} events delivered)",
            handled.requests_per_s, handled.requests, params.events
        ),
        verdict,
        busiest_other_cores: Some(busiest),
    };
    record(
        "handler",
        json!(params),
        json!({
            "server_binary": binary,
            "data_filesystem": data_fs,
            "baseline_before": before,
            "handler": handled,
            "baseline_after": after,
            "baseline_requests_per_s": baseline_rate,
            "complete": complete,
            "server_cpu_us_per_event": server_cpu * 1e6 / handled.requests.max(1) as f64,
            "server_peak_rss_mib": server_peak_rss,
            "handler_status": status,
            "server_warnings": log_lines,
        }),
        Some(ratio),
        &headline,
    )
}

// ---------------------------------------------------------------------------
// all: every scenario, then the summary in RESULTS.md
// ---------------------------------------------------------------------------

/// The scenarios `all` runs, in order, and the rows of the summary table.
const ALL_SCENARIOS: [&str; 8] = [
    "publish", "latency", "fanout", "webhook", "auth", "handler", "backends", "micro",
];

async fn all_scenarios(quick: bool, server: &ServerArgs) -> Result<()> {
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
            "handler" => handler_scenario(&handler.params(), server).await,
            "backends" => backends_scenario(&backends.params(), server).await,
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

/// Rewrites the generated summary table in RESULTS.md from the newest record
/// of each scenario in results.jsonl; the text outside the markers is kept.
fn write_summary() -> Result<()> {
    let records =
        fs::read_to_string(RESULTS_FILE).with_context(|| format!("reading {RESULTS_FILE}"))?;
    let records: Vec<Value> = records
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let table = summary_table(&records);
    let current = fs::read_to_string(RESULTS_MD).unwrap_or_default();
    let updated = match (current.find(SUMMARY_BEGIN), current.find(SUMMARY_END)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{table}{}",
            &current[..begin],
            &current[end + SUMMARY_END.len()..]
        ),
        _ => format!("{current}\n## Generated summary\n\n{table}\n"),
    };
    fs::write(RESULTS_MD, updated).with_context(|| format!("writing {RESULTS_MD}"))
}

/// The generated summary, markers included: one row per scenario of
/// [`ALL_SCENARIOS`], from the newest of `records` (oldest first) for it.
fn summary_table(records: &[Value]) -> String {
    let mut table = format!(
        "{SUMMARY_BEGIN}\n\
         Generated by `switchyard-bench all` from the newest record of each scenario in \
         `results.jsonl`; `other CPU` is the most cores other processes kept busy in a \
         measured window (above {BUSY_MACHINE_CORES} the run was skewed by other load; \
         not measured for `micro`, which reads criterion's estimates).\n\n\
         | scenario | target | measured | verdict | other CPU | run |\n|---|---|---|---|---:|---|\n"
    );
    for scenario in ALL_SCENARIOS {
        let Some(newest) = records.iter().rev().find(|r| r["scenario"] == scenario) else {
            table.push_str(&format!("| `{scenario}` | | not run yet | | | |\n"));
            continue;
        };
        let text = |value: &Value| value.as_str().unwrap_or("").to_owned();
        let headline = &newest["headline"];
        let (target, measured, verdict, other) = if headline.is_object() {
            (
                text(&headline["target"]),
                text(&headline["measured"]),
                text(&headline["verdict"]),
                headline["busiest_other_cores"]
                    .as_f64()
                    .map_or_else(String::new, |cores| format!("{cores:.2}")),
            )
        } else {
            let kept = "recorded before headlines were kept; see the record";
            (String::new(), kept.into(), String::new(), String::new())
        };
        let quick = if newest["params"]["quick"] == true {
            ", --quick"
        } else {
            ""
        };
        let dirty = if newest["git_dirty"] == true {
            "+dirty"
        } else {
            ""
        };
        table.push_str(&format!(
            "| `{scenario}` | {target} | {measured} | {verdict} | {other} | {} `{}`{dirty}{quick} |\n",
            text(&newest["timestamp"]).get(..16).unwrap_or_default().replace('T', " "),
            text(&newest["git_commit"]),
        ));
    }
    table.push_str(SUMMARY_END);
    table
}

// ---------------------------------------------------------------------------
// micro: the criterion micro-benchmarks, as `cargo bench` left them
// ---------------------------------------------------------------------------

/// A group of bench/micro.rs: its baseline and the benchmarks compared with
/// it, each named as criterion names it (`group/benchmark`).
struct MicroGroup {
    baseline: &'static str,
    measured: &'static [&'static str],
}

/// Every benchmark of bench/micro.rs. Each ratio is a benchmark's mean over
/// its group's baseline's.
const MICRO_GROUPS: [MicroGroup; 3] = [
    MicroGroup {
        baseline: "event/parse",
        measured: &["event/parse_validate"],
    },
    MicroGroup {
        baseline: "webhook_verify/hmac_sha256_baseline",
        measured: &[
            "webhook_verify/standard-webhooks",
            "webhook_verify/github",
            "webhook_verify/stripe",
            "webhook_verify/slack",
            "webhook_verify/shopify",
            "webhook_verify/hmac",
        ],
    },
    MicroGroup {
        baseline: "log_append/fsync_interval_10ms",
        measured: &["log_append/fsync_always"],
    },
];

/// Criterion's `--quick` keeps exactly 2 samples; a full run keeps the
/// configured sample size (20 in bench/micro.rs, at least 10).
const CRITERION_QUICK_SAMPLES: usize = 2;
/// Estimates written further apart than this come from different
/// `cargo bench` runs (a whole run takes about 1.5 minutes).
const MICRO_SAME_RUN: Duration = Duration::from_secs(600);

/// Every benchmark of [`MICRO_GROUPS`], each group's baseline first.
fn micro_ids() -> impl Iterator<Item = &'static str> {
    MICRO_GROUPS
        .iter()
        .flat_map(|group| std::iter::once(group.baseline).chain(group.measured.iter().copied()))
}

/// Where criterion writes, as criterion itself chooses it.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
            PathBuf::from,
        )
        .join("criterion")
}

/// One benchmark's estimate of the mean time per iteration.
#[derive(Debug, Clone, Serialize)]
struct MicroBench {
    id: &'static str,
    /// criterion's point estimate of the mean.
    mean_ns: f64,
    /// criterion's confidence interval of the mean (95 % by default).
    mean_low_ns: f64,
    mean_high_ns: f64,
    /// Samples taken: 2 in a `--quick` run; none when `sample.json` is missing.
    samples: Option<usize>,
    /// When criterion wrote the estimate.
    written: String,
    #[serde(skip)]
    written_at: SystemTime,
}

impl MicroBench {
    /// Reads `<dir>/<id>/new/estimates.json` (and `sample.json` beside it);
    /// `Ok(None)` when criterion has not written it.
    fn read(dir: &Path, id: &'static str) -> Result<Option<Self>> {
        let new = dir.join(id).join("new");
        let path = new.join("estimates.json");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        let estimates: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing {}", path.display()))?;
        let number = |value: &Value, what: &str| {
            value
                .as_f64()
                .with_context(|| format!("{} has no number at {what}", path.display()))
        };
        let mean = &estimates["mean"];
        let interval = &mean["confidence_interval"];
        let samples = fs::read(new.join("sample.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|sample| Some(sample["iters"].as_array()?.len()));
        let written_at = fs::metadata(&path)?.modified()?;
        Ok(Some(Self {
            id,
            mean_ns: number(&mean["point_estimate"], "mean.point_estimate")?,
            mean_low_ns: number(
                &interval["lower_bound"],
                "mean.confidence_interval.lower_bound",
            )?,
            mean_high_ns: number(
                &interval["upper_bound"],
                "mean.confidence_interval.upper_bound",
            )?,
            samples,
            written: rfc3339(written_at),
            written_at,
        }))
    }

    /// The part of the id after the group.
    fn name(&self) -> &'static str {
        self.id.split_once('/').map_or(self.id, |(_, name)| name)
    }
}

/// A benchmark's mean over its group's baseline's.
#[derive(Debug, Serialize)]
struct MicroRatio {
    benchmark: &'static str,
    baseline: &'static str,
    ratio: f64,
    /// Seconds between the two estimates; above [`MICRO_SAME_RUN`] they come
    /// from different runs and the ratio is not a claim.
    written_apart_s: f64,
}

/// Every benchmark's estimate, with the ratios to the baselines.
#[derive(Debug)]
struct MicroRun {
    dir: PathBuf,
    benches: Vec<MicroBench>,
    ratios: Vec<MicroRatio>,
    /// Some estimate came from `cargo bench … -- --quick`.
    quick: bool,
    /// Some estimate is older than the sources it measured.
    older_than_sources: bool,
}

impl MicroRun {
    /// The estimates in `dir`, or which benchmarks have none.
    fn read(dir: &Path) -> Result<std::result::Result<Self, Vec<&'static str>>> {
        let mut benches = Vec::new();
        let mut missing = Vec::new();
        for id in micro_ids() {
            match MicroBench::read(dir, id)? {
                Some(bench) => benches.push(bench),
                None => missing.push(id),
            }
        }
        if !missing.is_empty() {
            return Ok(Err(missing));
        }
        let of = |id: &str| {
            benches
                .iter()
                .find(|bench| bench.id == id)
                .expect("every benchmark was read")
        };
        let ratios = MICRO_GROUPS
            .iter()
            .flat_map(|group| group.measured.iter().map(move |&id| (group.baseline, id)))
            .map(|(baseline, id)| {
                let (base, bench) = (of(baseline), of(id));
                let apart = bench
                    .written_at
                    .duration_since(base.written_at)
                    .or_else(|_| base.written_at.duration_since(bench.written_at))
                    .unwrap_or_default();
                MicroRatio {
                    benchmark: id,
                    baseline,
                    ratio: bench.mean_ns / base.mean_ns,
                    written_apart_s: apart.as_secs_f64(),
                }
            })
            .collect();
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let newest_source = [
            manifest_dir.join("src"),
            manifest_dir.join("bench/micro.rs"),
            manifest_dir.join("Cargo.toml"),
        ]
        .iter()
        .filter_map(|path| newest_modification(path))
        .max();
        let oldest = benches.iter().map(|bench| bench.written_at).min();
        Ok(Ok(Self {
            dir: dir.to_path_buf(),
            quick: benches
                .iter()
                .any(|bench| bench.samples.is_some_and(|n| n <= CRITERION_QUICK_SAMPLES)),
            older_than_sources: newest_source.zip(oldest).is_some_and(|(s, o)| s > o),
            benches,
            ratios,
        }))
    }

    fn bench(&self, id: &str) -> &MicroBench {
        self.benches
            .iter()
            .find(|bench| bench.id == id)
            .expect("every benchmark was read")
    }

    /// The summary row: each group's baseline, then each benchmark's ratio.
    fn headline(&self) -> Headline {
        let groups = MICRO_GROUPS.iter().map(|group| {
            let base = self.bench(group.baseline);
            let measured = group
                .measured
                .iter()
                .map(|&id| {
                    let bench = self.bench(id);
                    format!(
                        "{} {:.2}× ({})",
                        bench.name(),
                        bench.mean_ns / base.mean_ns,
                        format_ns(bench.mean_ns)
                    )
                })
                .collect::<Vec<_>>();
            format!(
                "{} {}: {}",
                group.baseline,
                format_ns(base.mean_ns),
                measured.join(", ")
            )
        });
        let mixed = self
            .ratios
            .iter()
            .any(|ratio| ratio.written_apart_s > MICRO_SAME_RUN.as_secs_f64());
        Headline {
            target: "none: criterion mean per iteration, as a ratio to its group's baseline, for information".into(),
            measured: groups.collect::<Vec<_>>().join("; "),
            verdict: if mixed {
                "no target; some ratios mix runs, see the record".into()
            } else {
                "no target".into()
            },
            busiest_other_cores: None,
        }
    }

    fn print(&self) {
        let written = self.benches.iter().map(|bench| bench.written_at);
        let (first, last) = (written.clone().min(), written.max());
        println!();
        println!(
            "micro: criterion's estimates in {}, written {} to {}",
            self.dir.display(),
            first.map(rfc3339).unwrap_or_default(),
            last.map(rfc3339).unwrap_or_default(),
        );
        println!(
            "| benchmark                                |       mean |        [low, high] | samples |    ratio |"
        );
        println!(
            "|------------------------------------------|------------|--------------------|---------|----------|"
        );
        for bench in &self.benches {
            let ratio = self
                .ratios
                .iter()
                .find(|ratio| ratio.benchmark == bench.id)
                .map_or_else(|| "1 (base)".into(), |ratio| format!("{:.2}×", ratio.ratio));
            println!(
                "| {:<40} | {:>10} | {:>18} | {:>7} | {ratio:>8} |",
                bench.id,
                format_ns(bench.mean_ns),
                format!(
                    "[{}, {}]",
                    format_ns(bench.mean_low_ns),
                    format_ns(bench.mean_high_ns)
                ),
                bench.samples.map_or_else(|| "?".into(), |n| n.to_string()),
            );
        }
        for ratio in &self.ratios {
            if ratio.written_apart_s > MICRO_SAME_RUN.as_secs_f64() {
                println!(
                    "WARNING: {} and {} were measured {:.0} s apart, in different runs; rerun `cargo bench --all-features --bench micro`",
                    ratio.benchmark, ratio.baseline, ratio.written_apart_s
                );
            }
        }
        if self.quick {
            println!(
                "WARNING: some estimates come from `cargo bench … -- --quick` (2 samples): a smoke run, not a claim"
            );
        }
        if self.older_than_sources {
            println!(
                "WARNING: some estimates are older than the sources (src/, bench/micro.rs, Cargo.toml); rerun `cargo bench --all-features --bench micro`"
            );
        }
    }

    /// The record's `params` and `results`.
    fn params(&self) -> Value {
        json!({
            "quick": self.quick,
            "criterion_dir": self.dir,
            "statistic": "mean.point_estimate of <group>/<benchmark>/new/estimates.json, in ns",
        })
    }

    fn results(&self) -> Value {
        json!({
            "benches": self.benches,
            "ratios": self.ratios,
            "estimates_older_than_sources": self.older_than_sources,
        })
    }
}

/// `micro`: records the estimates the last `cargo bench --bench micro` left
/// in `dir`. When some are missing it fails if `required`, and otherwise says
/// so and records nothing.
fn micro_scenario(dir: &Path, required: bool) -> Result<()> {
    let run = match MicroRun::read(dir)? {
        Ok(run) => run,
        Err(missing) => {
            let what = if missing.len() == micro_ids().count() {
                "no criterion estimates".to_owned()
            } else {
                format!("no criterion estimates for {}", missing.join(", "))
            };
            let message = format!(
                "{what} in {}; run `cargo bench --all-features --bench micro` (or scripts/bench) first",
                dir.display()
            );
            if required {
                bail!(message);
            }
            eprintln!("micro skipped, nothing recorded: {message}");
            return Ok(());
        }
    };
    run.print();
    let headline = run.headline();
    println!("{}", headline.measured);
    record("micro", run.params(), run.results(), None, &headline)
}

/// A time in nanoseconds in the unit that suits it, to 3 significant digits.
fn format_ns(ns: f64) -> String {
    let (value, unit) = if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    if value >= 100.0 {
        format!("{value:.0} {unit}")
    } else if value >= 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.2} {unit}")
    }
}

fn rfc3339(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// backends: the publish load on each backend
// ---------------------------------------------------------------------------

/// How long a broker gets to listen, and `redis-benchmark` to finish.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(10);
const NATIVE_BENCH_TIMEOUT: Duration = Duration::from_secs(120);
/// Requests `redis-benchmark` makes, from as many connections as the
/// switchyard client.
const NATIVE_BENCH_REQUESTS: u64 = 100_000;

/// The backends, in the order they run; the first is the baseline.
const BACKENDS: [&str; 4] = ["embedded", "redis", "nats", "kafka"];
/// SSE subscribers in each backend's latency run: few, so the broker's read
/// path, not the fan-out, sets the latency.
const BACKENDS_LATENCY_SUBSCRIBERS: usize = 10;

/// A child process killed (and reaped) when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real broker on a free loopback port with a temporary directory,
/// started as tests/it/conformance.rs starts it. Dropping it kills the
/// process, then removes the directory.
struct Broker {
    child: ChildGuard,
    port: u16,
    _dir: TempDir,
}

/// The server binary a backend needs.
fn broker_binary(backend: &str) -> Option<&'static str> {
    match backend {
        "redis" => Some("redis-server"),
        "nats" => Some("nats-server"),
        "kafka" => Some("tansu"),
        _ => None,
    }
}

/// Whether `name` is an executable file on PATH.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

impl Broker {
    async fn start(backend: &str, binary: &str, root: Option<&Path>) -> Result<Self> {
        let dir = TempDir::new(root)?;
        let port = free_port()?;
        let port_arg = port.to_string();
        let listener = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(binary);
        match backend {
            "redis" => {
                command
                    .args(["--port", &port_arg, "--bind", "127.0.0.1", "--save", ""])
                    .args(["--appendonly", "yes", "--appendfsync", "always"])
                    .arg("--dir")
                    .arg(&dir.0);
            }
            "nats" => {
                command
                    .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
                    .arg(dir.0.join("js"));
            }
            _ => {
                // tansu reads .env from its working directory: give it an empty one.
                command
                    .current_dir(&dir.0)
                    .args(["broker", "--listener-url", &listener])
                    .args(["--advertised-listener-url", &listener])
                    // On disk (SQLite), like the other brokers' logs here.
                    .args(["--storage-engine", "sqlite://tansu.db"]);
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let broker = Self {
            child: ChildGuard(child),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + BROKER_START_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("{binary} did not listen on 127.0.0.1:{port} in {BROKER_START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(broker)
    }

    /// The `serve` flags that point switchyard at this broker.
    fn serve_args(&self, backend: &str) -> Vec<String> {
        let port = self.port;
        match backend {
            "redis" => vec![
                "--broker".into(),
                "redis".into(),
                "--redis-url".into(),
                format!("redis://127.0.0.1:{port}"),
            ],
            "nats" => vec![
                "--broker".into(),
                "nats".into(),
                "--nats-url".into(),
                format!("nats://127.0.0.1:{port}"),
            ],
            _ => vec![
                "--broker".into(),
                "kafka".into(),
                "--kafka-brokers".into(),
                format!("127.0.0.1:{port}"),
            ],
        }
    }
}

/// What `redis-benchmark` measured: 1 KiB `XADD`s on the same server.
#[derive(Debug, Clone, Serialize)]
struct NativeBench {
    command: String,
    requests_per_s: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// CPU of everything but this tool during the run (redis-benchmark,
    /// redis-server, anything else), as cores.
    cpu_other_cores: f64,
}

/// Runs `redis-benchmark` against the broker on `port`, bounded in time.
async fn redis_benchmark(port: u16, connections: usize) -> Result<NativeBench> {
    let value = "x".repeat(PUBLISH_BODY_BYTES);
    let port_arg = port.to_string();
    let requests = NATIVE_BENCH_REQUESTS.to_string();
    let connections_arg = connections.to_string();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port_arg,
        "-n",
        &requests,
        "-c",
        &connections_arg,
        "-P",
        "1",
        "--csv",
        "XADD",
        "redis-benchmark-stream",
        "*",
        "e",
        &value,
    ];
    let shown = format!(
        "redis-benchmark -h 127.0.0.1 -p PORT -n {requests} -c {connections} -P 1 --csv XADD redis-benchmark-stream '*' e <{PUBLISH_BODY_BYTES} B value>"
    );
    eprintln!("native: {shown}");
    let out = TempDir::new(None)?;
    let out_file = out.0.join("redis-benchmark.csv");
    let window = CpuWindow::start(None)?;
    let started = Instant::now();
    let mut child = ChildGuard(
        Command::new("redis-benchmark")
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_file)?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-benchmark")?,
    );
    loop {
        if let Some(status) = child.0.try_wait()? {
            if !status.success() {
                bail!("redis-benchmark failed: {status}");
            }
            break;
        }
        if started.elapsed() > NATIVE_BENCH_TIMEOUT {
            bail!("redis-benchmark did not finish in {NATIVE_BENCH_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // redis-benchmark is not this tool: all of its CPU, and redis-server's,
    // shows as `other`.
    let cpu = window.end()?;
    let csv = fs::read_to_string(&out_file)?;
    // "test","rps","avg","min","p50","p95","p99","max": the last line.
    let fields: Vec<f64> = csv
        .lines()
        .last()
        .unwrap_or_default()
        .rsplit(',')
        .take(7)
        .map(|field| field.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    let [max, p99, p95, p50, _min, _avg, rps] = fields[..] else {
        bail!("cannot read redis-benchmark's output: {csv:?}");
    };
    Ok(NativeBench {
        command: shown,
        requests_per_s: rps,
        p50_ms: p50,
        p95_ms: p95,
        p99_ms: p99,
        max_ms: max,
        cpu_other_cores: cpu.other_s / elapsed.max(f64::MIN_POSITIVE),
    })
}

/// The publish→SSE table of `backends`: one row per backend and round.
fn print_backend_latencies(
    results: &[BackendResult],
    params: &StreamParams,
    embedded_p99: Option<f64>,
) {
    println!();
    println!(
        "publish→SSE latency: {} subscribers, {} events/s of ~{} B for {}s, on each backend's server after its publish load",
        params.subscribers, params.rate, params.event_bytes, params.duration_s
    );
    println!(
        "| backend  | round | received / expected | p50 ms | p90 ms | p99 ms | p999 ms | max ms | missing | dup | problems | p99 vs embedded | other cores |"
    );
    println!(
        "|----------|-------|---------------------|--------|--------|--------|---------|--------|---------|-----|----------|-----------------|-------------|"
    );
    for result in results {
        if result.latency.is_empty() {
            let why = result
                .latency_error
                .clone()
                .or_else(|| result.skipped.clone())
                .unwrap_or_default();
            println!("| {:<8} | {why} |", result.backend);
            continue;
        }
        for run in &result.latency {
            let lag = &run.publish_to_receive_ms;
            let ratio = embedded_p99.map_or_else(|| "-".into(), |e| format!("{:.2}×", lag.p99 / e));
            println!(
                "| {:<8} | {:>5} | {:>19} | {:>6.2} | {:>6.2} | {:>6.2} | {:>7.2} | {:>6.2} | {:>7} | {:>3} | {:>8} | {ratio:>15} | {:>11.2} |",
                result.backend,
                run.round,
                format!(
                    "{} / {}",
                    run.deliveries_expected - run.deliveries_missing,
                    run.deliveries_expected
                ),
                lag.p50,
                lag.p90,
                lag.p99,
                lag.p999,
                lag.max,
                run.deliveries_missing,
                run.duplicates,
                run.subscriber_problems + run.publish_errors + run.connect_failures as u64,
                run.other_cores,
            );
            for problem in run.first_problem.iter().chain(&run.first_publish_error) {
                println!("  {} #{}: {problem}", result.backend, run.round);
            }
        }
    }
}

/// One backend's publish→SSE run (`run_stream`), as recorded.
#[derive(Debug, Clone, Serialize)]
struct BackendLatency {
    round: u32,
    subscribers: usize,
    connect_failures: usize,
    published_ok: u64,
    publish_errors: u64,
    first_publish_error: Option<String>,
    publish_latency_ms: Percentiles,
    deliveries_expected: u64,
    deliveries_missing: u64,
    duplicates: u64,
    subscriber_problems: u64,
    first_problem: Option<String>,
    publish_to_receive_ms: Percentiles,
    cpu: CpuSplit,
    broker_cpu_s: Option<f64>,
    /// Cores other processes kept busy while publishing, the broker's taken out.
    other_cores: f64,
}

impl BackendLatency {
    fn of(round: u32, run: StreamRun, params: &StreamParams) -> Self {
        let other_s = run.publish_cpu.other_s - run.broker_cpu_s.unwrap_or(0.0);
        Self {
            round,
            subscribers: run.connected,
            connect_failures: run.connect_failures,
            published_ok: run.published.ok,
            publish_errors: run.published.errors,
            first_publish_error: run.published.first_error,
            publish_latency_ms: run.publish_latency,
            deliveries_expected: run.expected,
            deliveries_missing: run.missing,
            duplicates: run.duplicates,
            subscriber_problems: run.problems,
            first_problem: run.first_problem,
            publish_to_receive_ms: run.lag,
            cpu: run.publish_cpu,
            broker_cpu_s: run.broker_cpu_s,
            other_cores: other_s.max(0.0) / params.duration_s,
        }
    }
}

/// One backend's outcome over the run.
#[derive(Debug, Serialize)]
struct BackendResult {
    backend: &'static str,
    /// Why it did not run, if it did not.
    skipped: Option<String>,
    summary: Option<Summary>,
    /// Median req/s over embedded's.
    ratio_to_embedded: Option<f64>,
    native: Vec<NativeBench>,
    /// Median switchyard req/s over median native req/s.
    ratio_to_native: Option<f64>,
    /// Publish→SSE runs, one per round, and why one failed.
    latency: Vec<BackendLatency>,
    latency_error: Option<String>,
    /// Median publish→receive p99 over embedded's.
    latency_p99_ratio_to_embedded: Option<f64>,
    server_warnings: Vec<String>,
}

async fn backends_scenario(all_params: &BackendsParams, server_args: &ServerArgs) -> Result<()> {
    let (params, stream) = (&all_params.publish, &all_params.latency);
    if stream.rate == 0 || stream.subscribers == 0 {
        bail!("--rate and --subscribers must be at least 1");
    }
    let binary = server_args.describe_binary()?;
    let path = format!("/v1/topics/{TOPIC}/events");
    eprintln!(
        "backends: {} connections, {}s warm-up + {}s measured, then {} SSE subscribers × {} events/s for {}s; {} round(s) per backend, fsync {}",
        params.connections,
        params.warmup_s,
        params.duration_s,
        stream.subscribers,
        stream.rate,
        stream.duration_s,
        params.rounds,
        params.fsync
    );
    let mut skipped: Vec<(&'static str, String)> = Vec::new();
    for backend in BACKENDS {
        if let Some(server_binary) = broker_binary(backend)
            && !on_path(server_binary)
        {
            skipped.push((
                backend,
                format!("skipped: {server_binary} is not installed"),
            ));
        }
    }
    let mut rounds: Vec<Round> = Vec::new();
    let mut native: Vec<NativeBench> = Vec::new();
    let mut warnings: Vec<(&'static str, String)> = Vec::new();
    let mut data_fs = String::new();
    // (backend, round, the broker process's CPU seconds in the window)
    let mut broker_cpu: Vec<(&'static str, u32, Option<f64>)> = Vec::new();
    let mut latencies: Vec<(&'static str, BackendLatency)> = Vec::new();
    let mut latency_errors: Vec<(&'static str, String)> = Vec::new();
    for round in 1..=params.rounds {
        for backend in BACKENDS {
            if skipped.iter().any(|(name, _)| *name == backend) {
                continue;
            }
            let outcome = async {
                let broker = match broker_binary(backend) {
                    Some(server_binary) => Some(
                        Broker::start(backend, server_binary, server_args.data_root.as_deref())
                            .await?,
                    ),
                    None => None,
                };
                let mut args = server_args.clone();
                args.broker = broker
                    .as_ref()
                    .map_or_else(Vec::new, |b| b.serve_args(backend));
                let server = Switchyard::start(&args, &Setup::default())?;
                data_fs = server.data_filesystem();
                let pid = server.child.id();
                // The broker's CPU over the measured window, sampled on the
                // same clock as drive_publish's window.
                let broker_pid = broker.as_ref().map(|b| b.child.0.id());
                let warmup = Duration::from_secs_f64(params.warmup_s);
                let broker_before = tokio::spawn(async move {
                    tokio::time::sleep(warmup).await;
                    broker_pid.map(ProcUsage::read).transpose().ok().flatten()
                });
                let measured = drive_publish(
                    backend,
                    &Load::Publish,
                    server.url(&path),
                    round,
                    params,
                    Some(pid),
                )
                .await;
                let broker_after = broker_pid.map(ProcUsage::read).transpose().ok().flatten();
                let broker_before = broker_before.await.ok().flatten();
                let broker_cpu_s = broker_before
                    .zip(broker_after)
                    .map(|(a, b)| b.cpu_seconds() - a.cpu_seconds());
                // Publish→SSE latency on the same server and broker, after
                // the throughput load (subscribers start at the end of it).
                let latency = match &measured {
                    Ok(_) => {
                        tokio::time::sleep(ROUND_PAUSE).await;
                        run_stream(&server, stream, &format!("{backend} latency"), broker_pid)
                            .await
                            .map(|run| BackendLatency::of(round, run, stream))
                            .map_err(|err| format!("{err:#}"))
                    }
                    Err(_) => Err("the publish load failed".into()),
                };
                let lines = server.log_lines();
                drop(server);
                let measured = measured?;
                // The broker's own client on the same broker, switchyard stopped.
                let native_run = match &broker {
                    Some(b) if backend == "redis" && on_path("redis-benchmark") => {
                        Some(redis_benchmark(b.port, params.connections).await?)
                    }
                    _ => None,
                };
                anyhow::Ok((measured, broker_cpu_s, native_run, lines, latency))
            }
            .await;
            match outcome {
                Ok((measured, broker_cpu_s, native_run, lines, latency)) => {
                    match latency {
                        Ok(latency) => latencies.push((backend, latency)),
                        Err(err) => {
                            eprintln!("error: backend {backend}: the latency run failed: {err}");
                            latency_errors.push((backend, err));
                        }
                    }
                    broker_cpu.push((backend, measured.round, broker_cpu_s));
                    rounds.push(measured);
                    native.extend(native_run);
                    warnings.extend(lines.into_iter().map(|line| (backend, line)));
                }
                Err(err) => {
                    eprintln!("error: backend {backend} failed: {err:#}");
                    skipped.push((backend, format!("failed: {err:#}")));
                }
            }
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }

    let of = |name: &str| {
        rounds
            .iter()
            .filter(|r| r.server == name)
            .collect::<Vec<_>>()
    };
    let embedded_rps = {
        let embedded = of("embedded");
        (!embedded.is_empty()).then(|| Summary::of(&embedded).requests_per_s)
    };
    let native_rps =
        (!native.is_empty()).then(|| median(native.iter().map(|n| n.requests_per_s).collect()));
    let latency_of = |name: &str| {
        latencies
            .iter()
            .filter(|(backend, _)| *backend == name)
            .map(|(_, latency)| latency.clone())
            .collect::<Vec<_>>()
    };
    // Median over rounds of one latency percentile.
    let median_lag = |runs: &[BackendLatency], pick: fn(&Percentiles) -> f64| {
        (!runs.is_empty()).then(|| {
            median(
                runs.iter()
                    .map(|r| pick(&r.publish_to_receive_ms))
                    .collect(),
            )
        })
    };
    let embedded_p99 = median_lag(&latency_of("embedded"), |p| p.p99);
    let results: Vec<BackendResult> = BACKENDS
        .iter()
        .map(|&backend| {
            let mine = of(backend);
            let summary = (!mine.is_empty()).then(|| Summary::of(&mine));
            let rps = summary.as_ref().map(|s| s.requests_per_s);
            let redis = backend == "redis";
            BackendResult {
                backend,
                skipped: skipped
                    .iter()
                    .find(|(name, _)| *name == backend)
                    .map(|(_, why)| why.clone()),
                ratio_to_embedded: rps.zip(embedded_rps).map(|(r, e)| r / e),
                native: if redis { native.clone() } else { Vec::new() },
                ratio_to_native: rps.zip(native_rps).filter(|_| redis).map(|(r, n)| r / n),
                summary,
                latency_p99_ratio_to_embedded: median_lag(&latency_of(backend), |p| p.p99)
                    .zip(embedded_p99)
                    .map(|(p99, e)| p99 / e),
                latency: latency_of(backend),
                latency_error: latency_errors
                    .iter()
                    .find(|(name, _)| *name == backend)
                    .map(|(_, err)| err.clone()),
                server_warnings: warnings
                    .iter()
                    .filter(|(name, _)| *name == backend)
                    .map(|(_, line)| line.clone())
                    .collect(),
            }
        })
        .collect();

    println!();
    println!(
        "backends: publish load, {} connections, {} B structured events, {}s measured after {}s warm-up, {} round(s), {} partitions, fsync {}, data on {data_fs}",
        params.connections,
        params.body_bytes,
        params.duration_s,
        params.warmup_s,
        params.rounds,
        params.partitions,
        params.fsync
    );
    println!(
        "CPU columns: seconds in the measured window; client = this tool, other = the rest of the machine (including the broker process)"
    );
    println!(
        "| server             |    req/s |  p50 ms |  p90 ms |  p99 ms | p999 ms | errors | server CPU | client CPU | other CPU | peak RSS |"
    );
    println!(
        "|--------------------|----------|---------|---------|---------|---------|--------|------------|------------|-----------|----------|"
    );
    for r in &rounds {
        print_row(
            &format!("{} #{}", r.server, r.round),
            r.requests_per_s,
            &r.latency_ms,
            r.errors_status + r.errors_transport,
            &r.cpu,
            r.server_peak_rss_mib,
        );
    }
    println!();
    println!(
        "| backend  |    req/s |  p50 ms |  p99 ms | errors | vs embedded | vs native | native req/s | native p50/p99 ms |"
    );
    println!(
        "|----------|----------|---------|---------|--------|-------------|-----------|--------------|-------------------|"
    );
    let mut parts = Vec::new();
    for result in &results {
        let Some(summary) = &result.summary else {
            let why = result.skipped.clone().unwrap_or_default();
            println!("| {:<8} | {why} |", result.backend);
            parts.push(format!("{} {why}", result.backend));
            continue;
        };
        let ratio = |r: Option<f64>| r.map_or_else(|| "-".into(), |r| format!("{r:.2}×"));
        let native_median = result
            .native
            .iter()
            .map(|n| n.requests_per_s)
            .collect::<Vec<_>>();
        let (native_rps_text, native_latency) = match result.native.first() {
            Some(first) => (
                format!("{:.0}", median(native_median)),
                format!("{:.2} / {:.2}", first.p50_ms, first.p99_ms),
            ),
            None if result.backend == "embedded" => ("-".into(), "-".into()),
            None if result.backend == "redis" => ("redis-benchmark missing".into(), "-".into()),
            None => ("no native tool".into(), "-".into()),
        };
        println!(
            "| {:<8} | {:>8.0} | {:>7.2} | {:>7.2} | {:>6} | {:>11} | {:>9} | {native_rps_text:>12} | {native_latency:>17} |",
            result.backend,
            summary.requests_per_s,
            summary.latency_ms.p50,
            summary.latency_ms.p99,
            summary.errors,
            ratio(result.ratio_to_embedded),
            ratio(result.ratio_to_native),
        );
        let mut part = format!(
            "{} {:.0} req/s p50 {:.1} p99 {:.1} ms",
            result.backend, summary.requests_per_s, summary.latency_ms.p50, summary.latency_ms.p99
        );
        if result.backend != "embedded" {
            part.push_str(&format!(" ({})", ratio(result.ratio_to_embedded)));
        }
        if let Some(r) = result.ratio_to_native {
            part.push_str(&format!(", {r:.2}× redis-benchmark XADD"));
        }
        if summary.errors > 0 {
            part.push_str(&format!(", {} errors", summary.errors));
        }
        let runs = &result.latency;
        if let (Some(p50), Some(p99), Some(p999)) = (
            median_lag(runs, |p| p.p50),
            median_lag(runs, |p| p.p99),
            median_lag(runs, |p| p.p999),
        ) {
            let missing: u64 = runs.iter().map(|r| r.deliveries_missing).sum();
            part.push_str(&format!(
                ", SSE p50 {p50:.1} p99 {p99:.1} p999 {p999:.1} ms, {missing} missing"
            ));
            if let Some(r) = result
                .latency_p99_ratio_to_embedded
                .filter(|_| result.backend != "embedded")
            {
                part.push_str(&format!(" (p99 {r:.2}×)"));
            }
        } else if let Some(err) = &result.latency_error {
            part.push_str(&format!(", SSE latency failed: {err}"));
        }
        parts.push(part);
    }
    println!(
        "native: redis-benchmark (XADD of a {PUBLISH_BODY_BYTES} B field, same connections, on the same fsync-always redis after switchyard stopped); \
         no native load tool is installed for nats or kafka, so they are switchyard-only"
    );
    print_backend_latencies(&results, stream, embedded_p99);
    // The broker is part of the system under test, not foreign load: its CPU
    // comes off `other` before judging how busy the machine was.
    let broker_cpu_of = |r: &Round| {
        broker_cpu
            .iter()
            .find(|(name, round, _)| *name == r.server && *round == r.round)
            .and_then(|(_, _, cpu)| *cpu)
    };
    for r in &rounds {
        if let Some(cpu) = broker_cpu_of(r) {
            println!(
                "{} #{}: the broker process used {cpu:.2} CPU s of the {:.2} `other` in the window",
                r.server, r.round, r.cpu.other_s
            );
        }
    }
    let busiest = rounds
        .iter()
        .map(|r| (r.cpu.other_s - broker_cpu_of(r).unwrap_or(0.0)).max(0.0) / params.duration_s)
        .chain(latencies.iter().map(|(_, l)| l.other_cores))
        .fold(0.0, f64::max);
    warn_if_busy(busiest);
    for (backend, line) in &warnings {
        println!("server log ({backend}): {line}");
    }

    let headline = Headline {
        target: "none: publish and publish→SSE latency on each backend, for information".into(),
        measured: parts.join("; "),
        verdict: "no target".into(),
        busiest_other_cores: Some(busiest),
    };
    record(
        "backends",
        json!(all_params),
        json!({
            "server_binary": binary,
            "data_filesystem": data_fs,
            "rounds": rounds,
            "broker_cpu_s": broker_cpu
                .iter()
                .map(|(backend, round, cpu)| json!({"backend": backend, "round": round, "cpu_s": cpu}))
                .collect::<Vec<_>>(),
            "backends": results,
        }),
        None,
        &headline,
    )?;
    if rounds.is_empty() {
        bail!("no backend ran");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------

/// A run in one line of the summary table in RESULTS.md.
#[derive(Debug, Serialize)]
struct Headline {
    target: String,
    measured: String,
    /// `met`, `MISSED`, `not judged: …` or `no target`.
    verdict: String,
    /// The most cores other processes kept busy in a measured window; none
    /// where the tool did not measure it (`micro` only reads criterion's
    /// estimates).
    busiest_other_cores: Option<f64>,
}

/// Appends one JSON line describing the run to bench/results.jsonl.
fn record(
    scenario: &str,
    params: Value,
    results: Value,
    ratio: Option<f64>,
    headline: &Headline,
) -> Result<()> {
    let line = record_line(scenario, params, results, ratio, headline);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(RESULTS_FILE)
        .with_context(|| format!("opening {RESULTS_FILE}"))?;
    writeln!(file, "{line}").with_context(|| format!("writing {RESULTS_FILE}"))?;
    eprintln!("recorded in {RESULTS_FILE}");
    Ok(())
}

/// The run's record: what it measured, on which commit and machine.
fn record_line(
    scenario: &str,
    params: Value,
    results: Value,
    ratio: Option<f64>,
    headline: &Headline,
) -> Value {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Uncommitted changes mean the commit alone does not name what ran.
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let timestamp = rfc3339(SystemTime::now());
    json!({
        "scenario": scenario,
        "timestamp": timestamp,
        "git_commit": commit,
        "git_dirty": dirty,
        "machine": machine(),
        "params": params,
        "results": results,
        "ratio": ratio,
        "headline": headline,
    })
}

fn machine() -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown", |(_, name)| name.trim());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, usize::from),
        "cpu_model": model,
        "memory_gib": (mem_kib as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `<dir>/<id>/new/{estimates,sample}.json` as criterion does.
    fn write_estimate(dir: &Path, id: &str, mean_ns: f64, samples: usize) {
        let new = dir.join(id).join("new");
        fs::create_dir_all(&new).unwrap();
        let estimate = |value: f64| {
            json!({
                "confidence_interval": {"confidence_level": 0.95, "lower_bound": value * 0.99, "upper_bound": value * 1.01},
                "point_estimate": value,
                "standard_error": value * 0.01,
            })
        };
        let estimates = json!({
            "mean": estimate(mean_ns),
            "median": estimate(mean_ns * 0.98),
            "median_abs_dev": estimate(1.0),
            "slope": estimate(mean_ns * 1.02),
            "std_dev": estimate(2.0),
        });
        fs::write(new.join("estimates.json"), estimates.to_string()).unwrap();
        let iters: Vec<f64> = (1..=samples).map(|n| n as f64).collect();
        let times: Vec<f64> = iters.iter().map(|n| n * mean_ns).collect();
        let sample = json!({"sampling_mode": "Linear", "iters": iters, "times": times});
        fs::write(new.join("sample.json"), sample.to_string()).unwrap();
    }

    /// Every benchmark of bench/micro.rs: baselines at `base` ns, the others
    /// at 1.5 times that, but `fsync_always` at 25 times.
    fn write_all(dir: &Path, base: f64, samples: usize) {
        for group in &MICRO_GROUPS {
            write_estimate(dir, group.baseline, base, samples);
            for &id in group.measured {
                let factor = if id == "log_append/fsync_always" {
                    25.0
                } else {
                    1.5
                };
                write_estimate(dir, id, base * factor, samples);
            }
        }
    }

    #[test]
    fn missing_estimates_say_how_to_get_them() {
        let dir = TempDir::new(None).unwrap();
        let missing = MicroRun::read(&dir.0).unwrap().unwrap_err();
        assert_eq!(missing.len(), 11);
        let err = micro_scenario(&dir.0, true).unwrap_err().to_string();
        assert!(err.starts_with("no criterion estimates in "), "{err}");
        assert!(
            err.contains("run `cargo bench --all-features --bench micro` (or scripts/bench)"),
            "{err}"
        );
        // As `all` runs it: skipped, not failed, nothing recorded.
        micro_scenario(&dir.0, false).unwrap();

        write_estimate(&dir.0, "event/parse", 6000.0, 20);
        let missing = MicroRun::read(&dir.0).unwrap().unwrap_err();
        assert_eq!(missing.len(), 10);
        let err = micro_scenario(&dir.0, true).unwrap_err().to_string();
        assert!(
            err.starts_with("no criterion estimates for event/parse_validate, webhook_verify/"),
            "{err}"
        );
    }

    #[test]
    fn micro_record_has_times_ratios_and_a_summary_row() {
        let dir = TempDir::new(None).unwrap();
        write_all(&dir.0, 10_000.0, 20);
        let run = MicroRun::read(&dir.0).unwrap().unwrap();
        assert!(!run.quick);
        assert_eq!(run.benches.len(), 11);
        assert_eq!(run.ratios.len(), 8);
        for ratio in &run.ratios {
            let expected = if ratio.benchmark == "log_append/fsync_always" {
                25.0
            } else {
                1.5
            };
            assert!((ratio.ratio - expected).abs() < 1e-9, "{ratio:?}");
            assert!(ratio.written_apart_s < MICRO_SAME_RUN.as_secs_f64());
        }
        let headline = run.headline();
        assert_eq!(headline.verdict, "no target");
        assert_eq!(
            headline.measured,
            "event/parse 10.0 µs: parse_validate 1.50× (15.0 µs); \
             webhook_verify/hmac_sha256_baseline 10.0 µs: standard-webhooks 1.50× (15.0 µs), \
             github 1.50× (15.0 µs), stripe 1.50× (15.0 µs), slack 1.50× (15.0 µs), \
             shopify 1.50× (15.0 µs), hmac 1.50× (15.0 µs); \
             log_append/fsync_interval_10ms 10.0 µs: fsync_always 25.00× (250 µs)"
        );

        let line = record_line("micro", run.params(), run.results(), None, &headline);
        assert_eq!(line["params"]["quick"], false);
        assert_eq!(line["results"]["benches"][1]["id"], "event/parse_validate");
        assert_eq!(line["results"]["benches"][1]["mean_ns"], 15_000.0);
        assert_eq!(line["results"]["benches"][1]["samples"], 20);
        assert_eq!(line["results"]["ratios"][0]["ratio"], 1.5);
        assert!(line["headline"]["busiest_other_cores"].is_null());
        // The record as it would be read back from results.jsonl.
        let line: Value = serde_json::from_str(&line.to_string()).unwrap();
        let table = summary_table(&[line]);
        assert!(table.starts_with(SUMMARY_BEGIN) && table.ends_with(SUMMARY_END));
        assert!(table.contains("| `publish` | | not run yet | | | |\n"));
        let row = table
            .lines()
            .find(|row| row.starts_with("| `micro` |"))
            .expect("a micro row");
        assert!(
            row.starts_with(&format!(
                "| `micro` | {} | {} | no target |  | ",
                headline.target, headline.measured
            )),
            "{row}"
        );
        assert!(!row.contains("--quick"), "{row}");
    }

    #[test]
    fn quick_estimates_are_marked_quick() {
        let dir = TempDir::new(None).unwrap();
        write_all(&dir.0, 800.0, CRITERION_QUICK_SAMPLES);
        let run = MicroRun::read(&dir.0).unwrap().unwrap();
        assert!(run.quick);
        let headline = run.headline();
        assert!(
            headline
                .measured
                .starts_with("event/parse 800 ns: parse_validate 1.50× (1.20 µs)"),
            "{}",
            headline.measured
        );
        let line = record_line("micro", run.params(), run.results(), None, &headline);
        let table = summary_table(&[line]);
        let row = table.lines().find(|row| row.starts_with("| `micro` |"));
        assert!(row.unwrap().ends_with(", --quick |"), "{row:?}");
    }

    #[test]
    fn times_have_three_significant_digits() {
        assert_eq!(format_ns(795.4), "795 ns");
        assert_eq!(format_ns(5977.7), "5.98 µs");
        assert_eq!(format_ns(76_800.0), "76.8 µs");
        assert_eq!(format_ns(243_000.0), "243 µs");
        assert_eq!(format_ns(3_300_000.0), "3.30 ms");
        assert_eq!(format_ns(12.0), "12.0 ns");
    }
}
