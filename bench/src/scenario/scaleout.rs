//! `scaleout`: three switchyard processes on one external broker against
//! one. For NATS JetStream and Redis in turn (a fresh broker each, started
//! by the test kit as `backends` starts it), four runs, each on a topic of
//! its own (6 partitions) and a fresh set of processes:
//!
//! - **handler**: a handler (http action, `max_concurrency = 16`, results
//!   and dead letters stored) calls an in-process sink that answers each
//!   request after 20 ms; one process, then three with the same handler
//!   definition (each owns a third of the partitions). Rate: distinct
//!   events answered by the sink per second.
//! - **queue**: HTTP workers loop over receive (max 50, wait 500 ms) and
//!   ack on the group `workers`; one process with W workers, then three
//!   processes with the same W in all, split evenly between them, each
//!   worker on one process. Rate: acks per second.
//!
//! Each run measures from when every process is up and the group's
//! partitions are split between them:
//!
//! - handler: the processes start on an empty topic; probe events (60 at
//!   a time, distinct keys) are published until every process has stored
//!   an outcome for some (so each owns partitions: its quota is only
//!   reached once all three are members), then 2 s more for any hand-back
//!   to finish. Then the sink stops answering (it holds the calls), the N
//!   events are published, every process fills its 16 calls in flight, and
//!   the sink opens: the rate is N over the time from opening to its last
//!   answer, so neither the start-up nor the publishing is counted.
//! - queue: the M events are published first; each process joins the group
//!   with one receive (`max=1&lease=100ms`: at most one event per process
//!   is leased and comes back 100 ms later); the tool waits until the
//!   group status (`processes.processes`) shows the partitions split
//!   evenly; then the workers start, and the rate is M over the time from
//!   their start to the M-th ack.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use switchyard_testkit::{self as kit, BrokerServer, Kind};

use crate::bare::{BareServer, Hits};
use crate::cli::{ScaleoutParams, ServerArgs};
use crate::load::http_client;
use crate::report::{Headline, Progress, record, verdict, warn_if_busy};
use crate::server::{temp_dir, write_topics};
use crate::usage::{CpuWindow, ProcUsage};
use crate::{
    DEAD_LETTER_TOPIC, ERROR_BACKOFF, EVENT_TYPE, HANDLERS_DIR, LOG_LINES_SHOWN,
    PREPUBLISH_TIMEOUT, REQUEST_TIMEOUT, RESULTS_TOPIC, SERVER_START_TIMEOUT, SINK_PATH, SINK_POLL,
};

/// Processes in the scaled-out runs, their session timeout, and the
/// partitions of each run's topic.
pub const SCALEOUT_PROCESSES: usize = 3;
pub const SCALEOUT_GROUP_SESSION: &str = "3s";
pub const SCALEOUT_PARTITIONS: u64 = 6;
/// The handler's `max_concurrency`, in each process.
pub const SCALEOUT_CONCURRENCY: usize = 16;
/// How long the sink takes to answer a call.
pub const SCALEOUT_SINK_DELAY_MS: u64 = 20;
/// Each queue worker's receive.
pub const SCALEOUT_RECEIVE_MAX: usize = 50;
pub const SCALEOUT_RECEIVE_WAIT: &str = "500ms";
pub const SCALEOUT_RECEIVE_LEASE: &str = "30s";
/// The target in bench/README.md: handler delivery with three processes
/// against one.
pub const SCALEOUT_TARGET_RATIO: f64 = 2.5;

/// The backends, in the order they run.
const BACKENDS: [Kind; 2] = [Kind::Nats, Kind::Redis];
/// Events per published batch, and batches in flight.
const PUBLISH_BATCH: usize = 250;
const PUBLISH_IN_FLIGHT: usize = 4;
const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";
/// Events per probe while waiting for the handler's partitions to split:
/// with distinct keys, 60 events miss one of 6 partitions with probability
/// (5/6)^60 ≈ 2e-5.
const PROBE_EVENTS: u64 = 60;
/// Probe events are numbered from here, apart from the measured ones.
const PROBE_BASE: u64 = 1 << 40;
/// How long the partitions may take to split between the processes.
const SPLIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for the group's coordinators (one look a second) to settle: before
/// the first probe, and after the split is seen.
const SPLIT_SETTLE: Duration = Duration::from_secs(2);
/// How long the tool waits, after publishing, for every process to have
/// its calls in flight at the held sink.
const FILL_TIMEOUT: Duration = Duration::from_secs(5);
/// The handler's call timeout: the calls wait at the held sink while the
/// backlog is published.
const HANDLER_CALL_TIMEOUT: &str = "60s";
/// The queue run's consumer group.
const QUEUE_GROUP: &str = "workers";

/// CPU seconds over a measured window, by whom.
#[derive(Debug, Clone, Copy, Serialize)]
struct ClusterCpu {
    window_s: f64,
    /// Every switchyard process of the run together.
    servers_s: f64,
    broker_s: f64,
    /// This tool: the sink or the queue workers.
    client_s: f64,
    /// Everything else on the machine.
    other_s: f64,
}

impl ClusterCpu {
    fn other_cores(&self) -> f64 {
        self.other_s / self.window_s.max(f64::MIN_POSITIVE)
    }
}

struct ClusterCpuWindow {
    machine: CpuWindow,
    pids: Vec<u32>,
    servers_s: f64,
    broker_s: f64,
    started: Instant,
}

fn cpu_seconds(pids: &[u32]) -> Result<f64> {
    pids.iter()
        .map(|&pid| ProcUsage::read(pid).map(|usage| usage.cpu_seconds()))
        .sum()
}

impl ClusterCpuWindow {
    /// `pids`: the servers; `broker`: the broker's.
    fn start(pids: Vec<u32>, broker: u32) -> Result<Self> {
        Ok(Self {
            machine: CpuWindow::start(None)?,
            servers_s: cpu_seconds(&pids)?,
            broker_s: cpu_seconds(&[broker])?,
            pids,
            started: Instant::now(),
        })
    }

    fn end(&self, broker: u32) -> Result<ClusterCpu> {
        let servers_s = cpu_seconds(&self.pids)? - self.servers_s;
        let broker_s = cpu_seconds(&[broker])? - self.broker_s;
        let window_s = self.started.elapsed().as_secs_f64();
        // Without a server pid, `other` is the machine minus this tool.
        let split = self.machine.end()?;
        Ok(ClusterCpu {
            window_s,
            servers_s,
            broker_s,
            client_s: split.client_s,
            other_s: (split.other_s - servers_s - broker_s).max(0.0),
        })
    }
}

/// The handler's target: answers `{}` to `POST /sink` after a fixed delay,
/// and can hold every call (closed) until it is opened, so that a measured
/// run starts with every process busy.
struct SlowSink {
    server: BareServer,
    state: Arc<SinkState>,
}

struct SinkState {
    delay: Duration,
    hits: Hits,
    open: tokio::sync::watch::Sender<bool>,
    /// Calls held while closed.
    waiting: AtomicU64,
    /// The `n` of every event answered since the last reset.
    seen: Mutex<HashSet<u64>>,
    /// When it last opened, in nanoseconds since `hits.epoch`.
    opened_ns: AtomicU64,
}

impl SlowSink {
    fn start(delay: Duration) -> Result<Self> {
        let (open, _) = tokio::sync::watch::channel(true);
        let state = Arc::new(SinkState {
            delay,
            hits: Hits::new(),
            open,
            waiting: AtomicU64::new(0),
            seen: Mutex::new(HashSet::new()),
            opened_ns: AtomicU64::new(0),
        });
        let shared = Arc::clone(&state);
        let app = axum::Router::new().route(
            SINK_PATH,
            axum::routing::post(move |body: bytes::Bytes| {
                let state = Arc::clone(&shared);
                async move {
                    state.answer(&body).await;
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        "{}",
                    )
                }
            }),
        );
        Ok(Self {
            server: BareServer::serve(app)?,
            state,
        })
    }

    fn url(&self) -> String {
        self.server.url(SINK_PATH)
    }

    /// Holds every call from now on.
    fn close(&self) {
        self.state.open.send_replace(false);
    }

    /// Lets every call through (the held ones first).
    fn open(&self) {
        let now = self.state.hits.epoch.elapsed().as_nanos() as u64;
        self.state.opened_ns.store(now, Ordering::SeqCst);
        self.state.open.send_replace(true);
    }

    fn reset(&self) {
        self.state.hits.reset();
        self.state.seen.lock().expect("sink lock poisoned").clear();
    }

    fn waiting(&self) -> u64 {
        self.state.waiting.load(Ordering::SeqCst)
    }

    /// Distinct events answered since the last reset.
    fn delivered(&self) -> u64 {
        self.state.seen.lock().expect("sink lock poisoned").len() as u64
    }

    /// From the last opening to the last answer.
    fn seconds_since_open(&self) -> f64 {
        let opened = self.state.opened_ns.load(Ordering::SeqCst);
        let last = self.state.hits.last_ns.load(Ordering::SeqCst);
        last.saturating_sub(opened) as f64 / 1e9
    }
}

impl SinkState {
    async fn answer(&self, body: &[u8]) {
        let mut open = self.open.subscribe();
        let closed = !*open.borrow_and_update();
        if closed {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let _ = open.wait_for(|open| *open).await;
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        tokio::time::sleep(self.delay).await;
        let n = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|data| data["n"].as_u64());
        if let Some(n) = n {
            self.seen.lock().expect("sink lock poisoned").insert(n);
        }
        self.hits.hit();
    }
}

/// What every run needs: the settings, the binary, the broker, a client.
struct Ctx<'a> {
    backend: &'static str,
    params: &'a ScaleoutParams,
    binary: PathBuf,
    data_root: Option<PathBuf>,
    broker: &'a BrokerServer,
    client: reqwest::Client,
}

/// One run's switchyard processes (`p1`, `p2`, …), all on the broker, with
/// the same topics and handlers directories; each has its own working and
/// data directory (and `server.log`). Dropping it kills them, then removes
/// the directory.
struct Cluster {
    /// Declared first, so that they are killed before the directory goes.
    processes: Vec<(String, kit::Switchyard)>,
    topic: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Writes `topic` (and the handler outputs' topics, and `handler`'s
    /// file if given) and starts `count` processes on them.
    fn start(
        ctx: &Ctx<'_>,
        topic: &str,
        count: usize,
        handler: Option<(&str, String)>,
    ) -> Result<Self> {
        let dir = temp_dir(ctx.data_root.as_deref())?;
        let topics = dir.path().join("topics");
        let handlers = dir.path().join(HANDLERS_DIR);
        fs::create_dir_all(&topics)?;
        fs::create_dir_all(&handlers)?;
        write_topics(&topics, topic, ctx.params.partitions, "", "", true)?;
        if let Some((name, definition)) = handler {
            let file = handlers.join(format!("{name}.toml"));
            fs::write(&file, definition).with_context(|| format!("writing {}", file.display()))?;
        }
        let mut processes = Vec::new();
        for i in 1..=count {
            let name = format!("p{i}");
            let home = dir.path().join(&name);
            fs::create_dir_all(&home)?;
            let server = kit::Serve::new(&ctx.binary, &home)
                .rust_log("warn")
                .start_timeout(SERVER_START_TIMEOUT)
                .arg("--data-dir")
                .arg(home.join("data"))
                .arg("--topics-dir")
                .arg(&topics)
                .arg("--handlers-dir")
                .arg(&handlers)
                .args(ctx.broker.serve_args())
                .args([
                    "--instance",
                    &name,
                    "--group-session",
                    SCALEOUT_GROUP_SESSION,
                ])
                .start()
                .with_context(|| format!("starting switchyard process {name}"))?;
            processes.push((name, server));
        }
        Ok(Self {
            processes,
            topic: topic.to_owned(),
            _dir: dir,
        })
    }

    fn url(&self, process: usize, path: &str) -> String {
        format!("{}{path}", self.processes[process].1.url())
    }

    fn events_url(&self) -> String {
        self.url(0, &format!("/v1/topics/{}/events", self.topic))
    }

    fn group_url(&self, process: usize) -> String {
        self.url(
            process,
            &format!("/v1/topics/{}/groups/{QUEUE_GROUP}", self.topic),
        )
    }

    fn pids(&self) -> Vec<u32> {
        self.processes
            .iter()
            .map(|(_, server)| server.pid())
            .collect()
    }

    fn names(&self) -> Vec<String> {
        self.processes
            .iter()
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Warnings and errors each process logged.
    fn log_lines(&self) -> Vec<String> {
        self.processes
            .iter()
            .flat_map(|(name, server)| {
                server
                    .log_tail(LOG_LINES_SHOWN)
                    .into_iter()
                    .map(move |line| format!("{name}: {line}"))
            })
            .collect()
    }
}

/// A structured CloudEvent of ~140 B whose key (`data.k`) is its own.
pub(crate) fn event_json(prefix: &str, n: u64) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"{prefix}-{n:09}","source":"/bench","type":"{EVENT_TYPE}","data":{{"k":"{prefix}-{n:09}","n":{n}}}}}"#
    )
}

/// Publishes events `range` in batches; returns the seconds it took. (`mcp`
/// fills its topic with it too.)
pub(crate) async fn publish_events(
    client: &reqwest::Client,
    url: &str,
    prefix: &str,
    range: Range<u64>,
) -> Result<f64> {
    let started = Instant::now();
    let numbers: Vec<u64> = range.collect();
    let batches: Vec<String> = numbers
        .chunks(PUBLISH_BATCH)
        .map(|chunk| {
            let events: Vec<String> = chunk.iter().map(|&n| event_json(prefix, n)).collect();
            format!("[{}]", events.join(","))
        })
        .collect();
    let sends = futures::stream::iter(batches)
        .map(|body| async move {
            let response = client
                .post(url)
                .timeout(REQUEST_TIMEOUT)
                .header(reqwest::header::CONTENT_TYPE, BATCH_CONTENT_TYPE)
                .body(body)
                .send()
                .await
                .context("publishing a batch")?;
            let status = response.status();
            if !status.is_success() {
                bail!(
                    "publishing a batch: {status}: {}",
                    response.text().await.unwrap_or_default()
                );
            }
            anyhow::Ok(())
        })
        .buffer_unordered(PUBLISH_IN_FLIGHT)
        .collect::<Vec<_>>();
    let outcomes = tokio::time::timeout(PREPUBLISH_TIMEOUT, sends)
        .await
        .with_context(|| format!("publishing took more than {PREPUBLISH_TIMEOUT:?}"))?;
    for outcome in outcomes {
        outcome?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The handler definition of a run: every event of `topic`, earliest
/// first, POSTed as its data to the sink, 16 calls in flight per process.
fn handler_definition(name: &str, topic: &str, sink_url: &str) -> String {
    format!(
        "name = \"{name}\"\n\n[subscribe]\ntopic = \"{topic}\"\nstart = \"earliest\"\n\n\
         [action]\nkind = \"http\"\nurl = \"{sink_url}\"\nbody = \"data\"\n\n\
         [policy]\nmax_concurrency = {SCALEOUT_CONCURRENCY}\ntimeout = \"{HANDLER_CALL_TIMEOUT}\"\n\n\
         [outputs]\nresults = \"{RESULTS_TOPIC}\"\ndead_letters = \"{DEAD_LETTER_TOPIC}\"\n"
    )
}

/// Outcomes (results and dead letters) `handler` stored in each process
/// so far, from its `/metrics`.
async fn handled(ctx: &Ctx<'_>, cluster: &Cluster, handler: &str) -> Result<Vec<u64>> {
    let label = format!("handler=\"{handler}\"");
    let mut counts = Vec::new();
    for process in 0..cluster.processes.len() {
        let text = ctx
            .client
            .get(cluster.url(process, "/metrics"))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("reading /metrics")?
            .text()
            .await?;
        let count: f64 = text
            .lines()
            .filter(|line| {
                line.starts_with("switchyard_handler_outcomes_total{") && line.contains(&label)
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        counts.push(count as u64);
    }
    Ok(counts)
}

fn deltas(after: &[u64], before: &[u64]) -> Vec<u64> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect()
}

/// Probes until every process stores outcomes for some events (so each
/// owns partitions), then lets the coordinators settle. Returns the probes
/// it took.
async fn wait_for_handler_split(ctx: &Ctx<'_>, cluster: &Cluster, handler: &str) -> Result<u32> {
    let deadline = Instant::now() + SPLIT_TIMEOUT;
    let events_url = cluster.events_url();
    let prefix = format!("{}-probe", cluster.topic);
    tokio::time::sleep(SPLIT_SETTLE).await;
    let mut round = 0u32;
    loop {
        round += 1;
        let before = handled(ctx, cluster, handler).await?;
        let first = PROBE_BASE + u64::from(round) * 1_000;
        publish_events(
            &ctx.client,
            &events_url,
            &prefix,
            first..first + PROBE_EVENTS,
        )
        .await?;
        let got = loop {
            let got = deltas(&handled(ctx, cluster, handler).await?, &before);
            if got.iter().sum::<u64>() >= PROBE_EVENTS || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if got.iter().sum::<u64>() >= PROBE_EVENTS && got.iter().all(|&n| n > 0) {
            tokio::time::sleep(SPLIT_SETTLE).await;
            return Ok(round);
        }
        if Instant::now() > deadline {
            bail!(
                "the handler's partitions were not split between the {} processes within {SPLIT_TIMEOUT:?}: outcomes of the last {PROBE_EVENTS} probe events per process: {got:?}",
                cluster.processes.len()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One handler run, as recorded.
#[derive(Debug, Serialize)]
struct HandlerRun {
    processes: usize,
    events: u64,
    /// Distinct events the sink answered.
    delivered: u64,
    /// Calls it answered (more than `delivered` if an event was called twice).
    requests: u64,
    /// From opening the sink to its last answer.
    seconds: f64,
    /// `delivered` / `seconds`.
    requests_per_s: f64,
    /// Calls held at the sink when it opened: 16 per process when every
    /// process had its calls in flight.
    waiting_at_open: u64,
    /// Outcomes each process stored for the measured events.
    per_process: BTreeMap<String, u64>,
    /// Publishing the events, while the sink held its calls.
    publish_s: f64,
    /// From the first process's start until the split was seen and settled.
    split_s: f64,
    probes: u32,
    complete: bool,
    cpu: ClusterCpu,
    server_warnings: Vec<String>,
}

async fn handler_run(ctx: &Ctx<'_>, sink: &SlowSink, processes: usize) -> Result<HandlerRun> {
    let params = ctx.params;
    let events = params.handler_events;
    let topic = format!("scale-h{processes}");
    let name = format!("scaleout-h{processes}");
    let timeout = Duration::from_secs_f64(params.timeout_s);
    sink.open();
    sink.reset();
    let started = Instant::now();
    let cluster = Cluster::start(
        ctx,
        &topic,
        processes,
        Some((&name, handler_definition(&name, &topic, &sink.url()))),
    )?;
    eprintln!(
        "{} handler, {processes} process(es): started; probing until the partitions are split",
        ctx.backend
    );
    let probes = wait_for_handler_split(ctx, &cluster, &name).await?;
    let split_s = started.elapsed().as_secs_f64();

    sink.close();
    sink.reset();
    let publish_s = publish_events(&ctx.client, &cluster.events_url(), &topic, 0..events).await?;
    let full = (SCALEOUT_CONCURRENCY * processes) as u64;
    let filling = Instant::now();
    while sink.waiting() < full.min(events) && filling.elapsed() < FILL_TIMEOUT {
        tokio::time::sleep(SINK_POLL).await;
    }
    let before = handled(ctx, &cluster, &name).await?;
    let cpu_window = ClusterCpuWindow::start(cluster.pids(), ctx.broker.pid())?;
    let waiting_at_open = sink.waiting();
    let opened = Instant::now();
    sink.open();
    let progress = Progress::start(
        format!("{} handler, {processes} process(es)", ctx.backend),
        timeout,
        Arc::clone(&sink.state.hits.count),
        "sink requests",
    );
    while sink.delivered() < events && opened.elapsed() < timeout {
        tokio::time::sleep(SINK_POLL).await;
    }
    drop(progress);
    let cpu = cpu_window.end(ctx.broker.pid())?;
    let seconds = sink.seconds_since_open();
    let delivered = sink.delivered();
    let requests = sink.state.hits.count();
    // Outcomes are stored just after the sink's answer.
    let settle = Instant::now() + Duration::from_secs(10);
    let per_process = loop {
        let got = deltas(&handled(ctx, &cluster, &name).await?, &before);
        if got.iter().sum::<u64>() >= delivered || Instant::now() > settle {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Ok(HandlerRun {
        processes,
        events,
        delivered,
        requests,
        seconds,
        requests_per_s: delivered as f64 / seconds.max(f64::MIN_POSITIVE),
        waiting_at_open,
        per_process: cluster.names().into_iter().zip(per_process).collect(),
        publish_s,
        split_s,
        probes,
        complete: delivered >= events,
        cpu,
        server_warnings: cluster.log_lines(),
    })
}

/// One queue run, as recorded.
#[derive(Debug, Serialize)]
struct QueueRun {
    processes: usize,
    workers: usize,
    workers_per_process: Vec<usize>,
    events: u64,
    /// Receipts acked (200, or settled beside a 409).
    acked: u64,
    /// From the workers' start to the `events`-th ack.
    seconds: f64,
    acks_per_s: f64,
    receives: u64,
    empty_receives: u64,
    /// Receipts an ack did not settle (409: lease expired, or another
    /// process's).
    unsettled: u64,
    /// Failed requests (neither 200 nor an ack's 409).
    errors: u64,
    first_error: Option<String>,
    /// Acks through each process.
    per_process: BTreeMap<String, u64>,
    /// Publishing the events, before the processes joined the group.
    publish_s: f64,
    /// From the joins until the group status showed the partitions split.
    split_s: f64,
    complete: bool,
    cpu: ClusterCpu,
    server_warnings: Vec<String>,
}

/// `workers` split as evenly as can be over `processes`, the remainder to
/// the first.
fn spread(workers: usize, processes: usize) -> Vec<usize> {
    (0..processes)
        .map(|i| workers / processes + usize::from(i < workers % processes))
        .collect()
}

/// The partitions each process should own once the group is settled, as
/// membership.rs assigns them: partitions / processes, one more for the
/// first `partitions % processes`.
fn quotas(partitions: usize, processes: usize) -> Vec<usize> {
    let mut quotas = spread(partitions, processes);
    quotas.sort_unstable();
    quotas
}

/// Waits until the group status of the processes shows every process
/// owning its quota of partitions.
async fn wait_for_queue_split(ctx: &Ctx<'_>, cluster: &Cluster) -> Result<()> {
    let expected = quotas(ctx.params.partitions, cluster.processes.len());
    let deadline = Instant::now() + SPLIT_TIMEOUT;
    loop {
        let mut owned: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for process in 0..cluster.processes.len() {
            let status: Value = ctx
                .client
                .get(cluster.group_url(process))
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .context("reading the group's status")?
                .json()
                .await?;
            if let Ok(processes) = serde_json::from_value::<BTreeMap<String, Vec<u64>>>(
                status["processes"]["processes"].clone(),
            ) {
                owned.extend(processes);
            }
        }
        let mut counts: Vec<usize> = owned.values().map(Vec::len).filter(|&n| n > 0).collect();
        counts.sort_unstable();
        if counts == expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the group's partitions were not split as {expected:?} within {SPLIT_TIMEOUT:?}: {owned:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What one queue worker did.
#[derive(Default)]
struct WorkerTally {
    acked: u64,
    receives: u64,
    empty_receives: u64,
    unsettled: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Shared by the workers of a run.
struct QueueProgress {
    acked: Arc<AtomicU64>,
    total: u64,
    deadline: Instant,
    /// When the `total`-th ack came.
    finished: Mutex<Option<Instant>>,
}

/// Receives and acks on one process until the run's total is acked.
async fn queue_worker(
    client: reqwest::Client,
    group_url: String,
    member: String,
    shared: Arc<QueueProgress>,
) -> WorkerTally {
    let receive_url = format!(
        "{group_url}/receive?member={member}&max={SCALEOUT_RECEIVE_MAX}&wait={SCALEOUT_RECEIVE_WAIT}&lease={SCALEOUT_RECEIVE_LEASE}&start=earliest"
    );
    let ack_url = format!("{group_url}/ack");
    let mut tally = WorkerTally::default();
    let failed = |tally: &mut WorkerTally, error: String| {
        tally.errors += 1;
        tally.first_error.get_or_insert(error);
    };
    while shared.acked.load(Ordering::SeqCst) < shared.total && Instant::now() < shared.deadline {
        let received = async {
            let response = client
                .post(&receive_url)
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await?;
            let status = response.status();
            let body: Value = response.json().await?;
            if !status.is_success() {
                bail!("receive: {status}: {body}");
            }
            let receipts: Vec<String> = body["deliveries"]
                .as_array()
                .context("receive: no deliveries")?
                .iter()
                .filter_map(|d| d["receipt"].as_str().map(str::to_owned))
                .collect();
            anyhow::Ok(receipts)
        }
        .await;
        let receipts = match received {
            Ok(receipts) => receipts,
            Err(err) => {
                failed(&mut tally, format!("{err:#}"));
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        tally.receives += 1;
        if receipts.is_empty() {
            tally.empty_receives += 1;
            continue;
        }
        let count = receipts.len() as u64;
        let acked = async {
            let response = client
                .post(&ack_url)
                .timeout(REQUEST_TIMEOUT)
                .json(&json!({ "receipts": receipts }))
                .send()
                .await?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            match status.as_u16() {
                200 => Ok(count),
                // Receipts named as expired (or another process's) did
                // not settle; the others did.
                409 => {
                    let unsettled: usize = ["expired", "receipts"]
                        .iter()
                        .map(|field| body["error"][*field].as_array().map_or(0, Vec::len))
                        .sum();
                    Ok(count.saturating_sub(unsettled as u64))
                }
                _ => bail!("ack: {status}: {body}"),
            }
        }
        .await;
        let settled = match acked {
            Ok(settled) => settled,
            Err(err) => {
                failed(&mut tally, format!("{err:#}"));
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        tally.acked += settled;
        tally.unsettled += count - settled;
        let before = shared.acked.fetch_add(settled, Ordering::SeqCst);
        if before < shared.total && before + settled >= shared.total {
            *shared.finished.lock().expect("lock poisoned") = Some(Instant::now());
        }
    }
    tally
}

async fn queue_run(ctx: &Ctx<'_>, processes: usize) -> Result<QueueRun> {
    let params = ctx.params;
    let events = params.queue_events;
    let topic = format!("scale-q{processes}");
    let cluster = Cluster::start(ctx, &topic, processes, None)?;
    eprintln!(
        "{} queue, {processes} process(es): started; publishing {events} events",
        ctx.backend
    );
    let publish_s = publish_events(&ctx.client, &cluster.events_url(), &topic, 0..events).await?;
    // Each process joins the group with its first receive.
    let joining = Instant::now();
    for process in 0..processes {
        let url = format!(
            "{}/receive?member=join&max=1&lease=100ms&start=earliest",
            cluster.group_url(process)
        );
        let response = ctx
            .client
            .post(url)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .context("joining the group")?;
        if !response.status().is_success() {
            bail!(
                "joining the group: {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
    }
    wait_for_queue_split(ctx, &cluster).await?;
    let split_s = joining.elapsed().as_secs_f64();

    let per_process = spread(params.workers, processes);
    let client = http_client(params.workers)?;
    let shared = Arc::new(QueueProgress {
        acked: Arc::new(AtomicU64::new(0)),
        total: events,
        deadline: Instant::now() + Duration::from_secs_f64(params.timeout_s),
        finished: Mutex::new(None),
    });
    let progress = Progress::start(
        format!("{} queue, {processes} process(es)", ctx.backend),
        Duration::from_secs_f64(params.timeout_s),
        Arc::clone(&shared.acked),
        "acks",
    );
    let cpu_window = ClusterCpuWindow::start(cluster.pids(), ctx.broker.pid())?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for (process, &count) in per_process.iter().enumerate() {
        for worker in 0..count {
            workers.push((
                process,
                tokio::spawn(queue_worker(
                    client.clone(),
                    cluster.group_url(process),
                    format!("w{worker}"),
                    Arc::clone(&shared),
                )),
            ));
        }
    }
    let mut tallies = Vec::new();
    for (process, worker) in workers {
        tallies.push((process, worker.await.context("a queue worker panicked")?));
    }
    let cpu = cpu_window.end(ctx.broker.pid())?;
    drop(progress);
    let finished = shared
        .finished
        .lock()
        .expect("lock poisoned")
        .unwrap_or_else(Instant::now);
    let seconds = finished.duration_since(started).as_secs_f64();
    let acked = shared.acked.load(Ordering::SeqCst);
    let names = cluster.names();
    let mut by_process: BTreeMap<String, u64> = names.iter().map(|n| (n.clone(), 0)).collect();
    for (process, tally) in &tallies {
        *by_process.entry(names[*process].clone()).or_default() += tally.acked;
    }
    let sum = |pick: fn(&WorkerTally) -> u64| tallies.iter().map(|(_, t)| pick(t)).sum::<u64>();
    Ok(QueueRun {
        processes,
        workers: params.workers,
        workers_per_process: per_process,
        events,
        acked,
        seconds,
        acks_per_s: acked.min(events) as f64 / seconds.max(f64::MIN_POSITIVE),
        receives: sum(|t| t.receives),
        empty_receives: sum(|t| t.empty_receives),
        unsettled: sum(|t| t.unsettled),
        errors: sum(|t| t.errors),
        first_error: tallies.iter().find_map(|(_, t)| t.first_error.clone()),
        per_process: by_process,
        publish_s,
        split_s,
        complete: acked >= events,
        cpu,
        server_warnings: cluster.log_lines(),
    })
}

/// One backend's runs.
#[derive(Debug, Default, Serialize)]
struct BackendResult {
    backend: &'static str,
    /// Why it did not run, if it did not.
    skipped: Option<String>,
    /// Runs that failed, and why.
    errors: Vec<String>,
    /// One process, then three.
    handler: Vec<HandlerRun>,
    queue: Vec<QueueRun>,
    /// Three processes' rate over one's.
    handler_ratio: Option<f64>,
    queue_ratio: Option<f64>,
}

async fn backend_runs(
    kind: Kind,
    params: &ScaleoutParams,
    server_args: &ServerArgs,
    sink: &SlowSink,
) -> BackendResult {
    let mut result = BackendResult {
        backend: kind.name(),
        ..BackendResult::default()
    };
    if !kind.installed() {
        result.skipped = Some(format!("skipped: {} is not installed", kind.binary()));
        return result;
    }
    let setup = || -> Result<(BrokerServer, PathBuf, reqwest::Client)> {
        Ok((
            BrokerServer::start_in(kind, server_args.data_root.as_deref())?,
            server_args.binary()?,
            http_client(16)?,
        ))
    };
    let (broker, binary, client) = match setup() {
        Ok(setup) => setup,
        Err(err) => {
            result.skipped = Some(format!("failed: {err:#}"));
            return result;
        }
    };
    let ctx = Ctx {
        backend: kind.name(),
        params,
        binary,
        data_root: server_args.data_root.clone(),
        broker: &broker,
        client,
    };
    for processes in [1, params.processes] {
        match handler_run(&ctx, sink, processes).await {
            Ok(run) => result.handler.push(run),
            Err(err) => {
                eprintln!(
                    "error: {} handler, {processes} process(es): {err:#}",
                    kind.name()
                );
                result
                    .errors
                    .push(format!("handler, {processes} process(es): {err:#}"));
            }
        }
    }
    for processes in [1, params.processes] {
        match queue_run(&ctx, processes).await {
            Ok(run) => result.queue.push(run),
            Err(err) => {
                eprintln!(
                    "error: {} queue, {processes} process(es): {err:#}",
                    kind.name()
                );
                result
                    .errors
                    .push(format!("queue, {processes} process(es): {err:#}"));
            }
        }
    }
    let ratio = |one: Option<f64>, many: Option<f64>| {
        one.zip(many)
            .map(|(one, many)| many / one.max(f64::MIN_POSITIVE))
    };
    let handler_rate = |n: usize| {
        result
            .handler
            .iter()
            .find(|r| r.processes == n)
            .map(|r| r.requests_per_s)
    };
    let queue_rate = |n: usize| {
        result
            .queue
            .iter()
            .find(|r| r.processes == n)
            .map(|r| r.acks_per_s)
    };
    let (handler_ratio, queue_ratio) = (
        ratio(handler_rate(1), handler_rate(params.processes)),
        ratio(queue_rate(1), queue_rate(params.processes)),
    );
    result.handler_ratio = handler_ratio;
    result.queue_ratio = queue_ratio;
    result
}

fn split_text(per_process: &BTreeMap<String, u64>) -> String {
    per_process
        .values()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" / ")
}

fn print_results(results: &[BackendResult], params: &ScaleoutParams) {
    println!();
    println!(
        "scaleout: {} switchyard processes against 1 on one broker (--instance p1..p{}, --group-session {}), \
         each run on a topic of its own with {} partitions and fresh processes; events of ~140 B, each with its own key",
        params.processes, params.processes, params.group_session, params.partitions
    );
    println!(
        "handler: http action to an in-process sink answering after {} ms, max_concurrency {} per process, results stored; \
         {} events published while the sink held its calls, rate = events / (sink opened → its last answer)",
        params.sink_delay_ms, params.handler_concurrency, params.handler_events
    );
    println!(
        "queue: {} HTTP workers in all (split evenly over the processes), each looping receive (max {}, wait {}, lease {}) + ack; \
         {} events published before the processes joined, rate = acks / (workers started → last ack)",
        params.workers,
        params.receive_max,
        params.receive_wait,
        params.receive_lease,
        params.queue_events
    );
    println!(
        "CPU columns: seconds in the measured window (servers = every switchyard process of the run, client = this tool); \
         other = the rest of the machine, in cores"
    );
    println!();
    println!(
        "| backend | test    | processes | per process (events) |  events | seconds |   rate/s | 3 vs 1 | servers CPU | broker CPU | client CPU | other cores |"
    );
    println!(
        "|---------|---------|-----------|----------------------|---------|---------|----------|--------|-------------|------------|------------|-------------|"
    );
    for result in results {
        if let Some(why) = &result.skipped {
            println!("| {:<7} | {why} |", result.backend);
            continue;
        }
        let ratio_text = |processes: usize, ratio: Option<f64>| {
            if processes == 1 {
                String::new()
            } else {
                ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}×"))
            }
        };
        for run in &result.handler {
            println!(
                "| {:<7} | handler | {:>9} | {:>20} | {:>7} | {:>7.2} | {:>8.0} | {:>6} | {:>11.2} | {:>10.2} | {:>10.2} | {:>11.2} |",
                result.backend,
                run.processes,
                split_text(&run.per_process),
                run.delivered,
                run.seconds,
                run.requests_per_s,
                ratio_text(run.processes, result.handler_ratio),
                run.cpu.servers_s,
                run.cpu.broker_s,
                run.cpu.client_s,
                run.cpu.other_cores(),
            );
        }
        for run in &result.queue {
            println!(
                "| {:<7} | queue   | {:>9} | {:>20} | {:>7} | {:>7.2} | {:>8.0} | {:>6} | {:>11.2} | {:>10.2} | {:>10.2} | {:>11.2} |",
                result.backend,
                format!("{} ({}w)", run.processes, run.workers),
                split_text(&run.per_process),
                run.acked,
                run.seconds,
                run.acks_per_s,
                ratio_text(run.processes, result.queue_ratio),
                run.cpu.servers_s,
                run.cpu.broker_s,
                run.cpu.client_s,
                run.cpu.other_cores(),
            );
        }
    }
    println!();
    for result in results {
        for run in &result.handler {
            println!(
                "{} handler, {} process(es): split seen after {:.1}s ({} probe(s)); {} events published in {:.2}s while held; \
                 {} calls held at the sink when it opened (max {}); {} calls for {} distinct events{}",
                result.backend,
                run.processes,
                run.split_s,
                run.probes,
                run.events,
                run.publish_s,
                run.waiting_at_open,
                run.processes * params.handler_concurrency,
                run.requests,
                run.delivered,
                if run.complete { "" } else { " — INCOMPLETE" },
            );
        }
        for run in &result.queue {
            println!(
                "{} queue, {} process(es), workers {:?}: {} events published in {:.2}s; split seen {:.1}s after the joins; \
                 {} receives ({} empty), {} receipts unsettled, {} errors{}{}",
                result.backend,
                run.processes,
                run.workers_per_process,
                run.events,
                run.publish_s,
                run.split_s,
                run.receives,
                run.empty_receives,
                run.unsettled,
                run.errors,
                run.first_error
                    .as_ref()
                    .map_or_else(String::new, |e| format!(" (first: {e})")),
                if run.complete { "" } else { " — INCOMPLETE" },
            );
        }
        for error in &result.errors {
            println!("{}: FAILED {error}", result.backend);
        }
        let warnings: Vec<&String> = result
            .handler
            .iter()
            .flat_map(|r| &r.server_warnings)
            .chain(result.queue.iter().flat_map(|r| &r.server_warnings))
            .collect();
        for line in warnings.iter().rev().take(LOG_LINES_SHOWN).rev() {
            println!("server log ({}): {line}", result.backend);
        }
    }
}

pub async fn scaleout_scenario(params: &ScaleoutParams, server_args: &ServerArgs) -> Result<()> {
    if params.partitions < params.processes {
        bail!(
            "--partitions must be at least the {} processes",
            params.processes
        );
    }
    if params.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let binary = server_args.describe_binary()?;
    let sink = SlowSink::start(Duration::from_millis(params.sink_delay_ms))?;
    eprintln!(
        "scaleout: 1 vs {} processes on {}; handler: {} events to a {} ms sink, max_concurrency {}; queue: {} events, {} workers",
        params.processes,
        BACKENDS.map(Kind::name).join(" and "),
        params.handler_events,
        params.sink_delay_ms,
        params.handler_concurrency,
        params.queue_events,
        params.workers
    );
    let mut results = Vec::new();
    for kind in BACKENDS {
        eprintln!("\n--- {} ---", kind.name());
        results.push(backend_runs(kind, params, server_args, &sink).await);
    }
    drop(sink);
    print_results(&results, params);

    let busiest = results
        .iter()
        .flat_map(|r| {
            r.handler
                .iter()
                .map(|run| run.cpu.other_cores())
                .chain(r.queue.iter().map(|run| run.cpu.other_cores()))
        })
        .fold(0.0, f64::max);
    warn_if_busy(busiest);
    let all_complete = results.iter().all(|r| {
        r.skipped.is_none() && r.handler.len() == 2 && r.handler.iter().all(|run| run.complete)
    });
    let handler_ratios: Vec<f64> = results.iter().filter_map(|r| r.handler_ratio).collect();
    let lowest = handler_ratios.iter().copied().reduce(f64::min);
    let verdict = verdict(
        &format!("3 processes ≥ {SCALEOUT_TARGET_RATIO}× one process (handler, 20 ms sink)"),
        "nats and redis, max_concurrency 16 per process, 6 partitions",
        !params.quick
            && all_complete
            && params.handler_concurrency == SCALEOUT_CONCURRENCY
            && params.partitions == SCALEOUT_PARTITIONS as usize
            && params.processes == 3,
        lowest.is_some_and(|r| r >= SCALEOUT_TARGET_RATIO),
        "the target needs every handler event delivered on both backends, 6 partitions, without --quick",
    );
    let parts: Vec<String> = results
        .iter()
        .map(|r| {
            if let Some(why) = &r.skipped {
                return format!("{} {why}", r.backend);
            }
            let rate = |runs: &[f64]| {
                runs.iter()
                    .map(|v| format!("{v:.0}"))
                    .collect::<Vec<_>>()
                    .join(" vs ")
            };
            let handler: Vec<f64> = r.handler.iter().map(|run| run.requests_per_s).collect();
            let queue: Vec<f64> = r.queue.iter().map(|run| run.acks_per_s).collect();
            let ratio = |x: Option<f64>| x.map_or_else(|| "-".into(), |x| format!("{x:.2}×"));
            let mut part = format!(
                "{}: handler {} ({} req/s at the sink, 1 vs {}), queue {} ({} acks/s)",
                r.backend,
                ratio(r.handler_ratio),
                rate(&handler),
                params.processes,
                ratio(r.queue_ratio),
                rate(&queue)
            );
            if !r.errors.is_empty() {
                part.push_str(&format!(", {} run(s) failed", r.errors.len()));
            }
            part
        })
        .collect();
    let headline = Headline {
        target: format!("3 processes ≥ {SCALEOUT_TARGET_RATIO}× one process (handler, 20 ms sink)"),
        measured: parts.join("; "),
        verdict,
        busiest_other_cores: Some(busiest),
    };
    record(
        "scaleout",
        json!(params),
        json!({
            "server_binary": binary,
            "event_bytes": event_json("scale-h1", 0).len(),
            "backends": results,
        }),
        lowest,
        &headline,
    )?;
    if results
        .iter()
        .all(|r| r.handler.is_empty() && r.queue.is_empty())
    {
        bail!("no run of scaleout succeeded");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_and_partitions_are_spread_evenly() {
        assert_eq!(spread(9, 3), vec![3, 3, 3]);
        assert_eq!(spread(8, 3), vec![3, 3, 2]);
        assert_eq!(spread(9, 1), vec![9]);
        assert_eq!(quotas(6, 3), vec![2, 2, 2]);
        assert_eq!(quotas(7, 3), vec![2, 2, 3]);
    }

    #[test]
    fn events_are_batched_as_json() {
        let event: Value = serde_json::from_str(&event_json("t", 7)).unwrap();
        assert_eq!(event["data"]["n"], 7);
        assert_eq!(event["data"]["k"], "t-000000007");
        assert_eq!(event["id"], "t-000000007");
    }

    #[test]
    fn handler_definition_names_the_sink_and_the_policy() {
        let definition = handler_definition("h", "t", "http://127.0.0.1:1/sink");
        assert!(definition.contains("max_concurrency = 16"));
        assert!(definition.contains("url = \"http://127.0.0.1:1/sink\""));
        assert!(definition.contains("topic = \"t\""));
    }
}
