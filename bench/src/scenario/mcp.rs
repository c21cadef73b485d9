//! `mcp`: agents over the Model Context Protocol (`POST /mcp`, revision
//! 2026-07-28: stateless, one JSON-RPC message per POST, no session) on one
//! server, measured beside the HTTP API in the same run:
//!
//! - **reads**: the bench topic, pre-filled with `--events` (200,000) small
//!   events, is read from its earliest event to its end by one client loop,
//!   `--limit` (1,000) events a request: `GET /v1/topics/bench/events?from=
//!   <cursor>&limit=…` (pages), then `tools/call read_events` with `after` =
//!   the previous `next_cursor` (MCP), whole passes over the topic for at
//!   least `--duration` (2 s) per side and round; rounds alternate, and the
//!   ratio MCP ÷ pages of the median rates is judged (the target: ≥ 0.7×).
//!   Each round
//!   also reads one event a request for `--small-reads` (2 s) on each side:
//!   the server's CPU per request there is the fixed cost of a call, which
//!   splits the large reads' cost into per call and per event.
//! - **notifications**: `--listeners` (100) `subscriptions/listen` streams
//!   on `switchyard://topics/bench`; one event is published at a time every
//!   `--interval` (200 ms, twice the server's 100 ms coalescing, so that
//!   each publish is a notification of its own), `--publishes` (100) times,
//!   and each listener notes when its `notifications/resources/updated`
//!   arrives. Reported: publish→notification p50/p90/p99/max over all
//!   (publish, listener) pairs, the pairs where none came, and the server's
//!   open files with the streams and after they close.
//!
//! A notification carries only the topic's URI, not which publish it is
//! for, so the publisher makes the attribution exact: it publishes the next
//! event only once every listener has heard of the last one (or
//! [`NOTIFY_WAIT`] has passed, which is then counted as late); the first
//! notification a listener gets after publish `i` was sent is publish `i`'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::scaleout::{event_json, publish_events};
use crate::cli::{McpParams, ServerArgs};
use crate::load::http_client;
use crate::report::{Headline, record, report_log, verdict, warn_if_busy};
use crate::server::{Setup, Switchyard};
use crate::stats::{Percentiles, median, mib};
use crate::usage::{CpuSplit, CpuWindow};
use crate::{
    CONNECT_TIMEOUT, EVENT_TYPE, KEYS, REQUEST_TIMEOUT, ROUND_PAUSE, SETTLE, STRUCTURED, TOPIC,
};

/// The revision the client speaks: stateless, each request naming it in
/// its `MCP-Protocol-Version` header and its `_meta`.
pub const MCP_REVISION: &str = "2026-07-28";
/// The target in bench/README.md: `read_events` through MCP at least this
/// many times the rate of the HTTP API's pages, both at 1,000 events a
/// request (the most either takes).
pub const MCP_TARGET_RATIO: f64 = 0.7;
pub const MCP_TARGET_LIMIT: u64 = 1000;
/// Time between two publishes while the agents listen: the server sends a
/// listener at most one notification per 100 ms, so at 200 ms each publish
/// is heard on its own.
pub const MCP_NOTIFY_INTERVAL: Duration = Duration::from_millis(200);
/// How long the publisher waits, past the interval, for every listener to
/// hear of a publish before it sends the next; a pair still unheard then is
/// counted as late (and, if nothing comes later either, as missing).
const NOTIFY_WAIT: Duration = Duration::from_secs(5);
/// How long a listener may take to be acknowledged.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the tool waits for the server to close its end of the
/// listeners' streams once they are closed here: two of rmcp's 15 s SSE
/// keep-alives and some (a write to a closed socket may succeed once).
/// Not with `--quick`, which waits a second.
const RELEASE_WAIT: Duration = Duration::from_secs(35);
const QUICK_RELEASE_WAIT: Duration = Duration::from_secs(1);
/// How often the publisher looks whether everyone heard.
const HEARD_POLL: Duration = Duration::from_millis(1);
/// Prefix of the pre-filled events' ids and keys (each its own key, so
/// they spread over the partitions).
const FILL_PREFIX: &str = "mcp";
const UPDATED: &str = "notifications/resources/updated";
const ACKNOWLEDGED: &str = "notifications/subscriptions/acknowledged";

/// The two ways of reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Side {
    /// `GET /v1/topics/{topic}/events?from=…&limit=…`.
    Pages,
    /// `tools/call read_events` on `POST /mcp`.
    Mcp,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Self::Pages => "GET pages",
            Self::Mcp => "MCP read_events",
        }
    }
}

/// A page of the HTTP API: only the count of events and the cursor are
/// read, so both sides' client does the same work per event (scan, skip).
#[derive(Deserialize)]
struct Page {
    events: Vec<IgnoredAny>,
    next: String,
}

/// A JSON-RPC answer.
#[derive(Deserialize)]
struct RpcAnswer<T> {
    result: Option<T>,
}

/// A `tools/call` result. Its `content` (the same JSON again, as text, for
/// clients that do not read structured content) is skipped unread.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolAnswer<T> {
    structured_content: Option<T>,
    #[serde(default)]
    is_error: bool,
}

#[derive(Deserialize)]
struct ReadEvents {
    events: Vec<IgnoredAny>,
    next_cursor: String,
}

/// One read's outcome.
struct Read {
    events: u64,
    next: String,
    /// The answer's body.
    bytes: u64,
}

/// Headers and `_meta` of a stateless 2026-07-28 request. `name` is the
/// tool of a `tools/call` (`Mcp-Name`).
fn mcp_post(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    name: Option<&str>,
) -> reqwest::RequestBuilder {
    let request = client
        .post(url)
        .header(
            reqwest::header::ACCEPT,
            "application/json, text/event-stream",
        )
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("MCP-Protocol-Version", MCP_REVISION)
        .header("Mcp-Method", method);
    match name {
        Some(name) => request.header("Mcp-Name", name),
        None => request,
    }
}

/// A JSON-RPC request with the revision's `_meta` in its params.
fn rpc_body(id: u64, method: &str, mut params: Value) -> String {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MCP_REVISION,
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }).to_string()
}

/// Reads the bench topic on either side, from a cursor.
struct Reader {
    client: reqwest::Client,
    pages_url: String,
    mcp_url: String,
    next_id: u64,
}

impl Reader {
    /// Up to `limit` events after `cursor` (`None`: from the earliest).
    async fn read(&mut self, side: Side, cursor: Option<&str>, limit: u64) -> Result<Read> {
        let request = match side {
            Side::Pages => self
                .client
                .get(&self.pages_url)
                .query(&[("from", cursor.unwrap_or("earliest"))])
                .query(&[("limit", limit)]),
            Side::Mcp => {
                let mut arguments = json!({ "topic": TOPIC, "limit": limit });
                match cursor {
                    Some(cursor) => arguments["after"] = cursor.into(),
                    None => arguments["from"] = "earliest".into(),
                }
                self.next_id += 1;
                let body = rpc_body(
                    self.next_id,
                    "tools/call",
                    json!({ "name": "read_events", "arguments": arguments }),
                );
                mcp_post(
                    &self.client,
                    &self.mcp_url,
                    "tools/call",
                    Some("read_events"),
                )
                .body(body)
            }
        };
        let response = request
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .with_context(|| format!("{}: no answer", side.name()))?;
        let status = response.status();
        let json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/json"));
        let body = response
            .bytes()
            .await
            .with_context(|| format!("{}: reading the answer", side.name()))?;
        let failed = || {
            let text = String::from_utf8_lossy(&body);
            let shown: String = text.chars().take(400).collect();
            anyhow::anyhow!("{}: answered {status}: {shown}", side.name())
        };
        if !status.is_success() || !json {
            return Err(failed());
        }
        let (events, next) = match side {
            Side::Pages => {
                let page: Page = serde_json::from_slice(&body).map_err(|_| failed())?;
                (page.events.len(), page.next)
            }
            Side::Mcp => {
                let answer: RpcAnswer<ToolAnswer<ReadEvents>> =
                    serde_json::from_slice(&body).map_err(|_| failed())?;
                match answer.result {
                    Some(ToolAnswer {
                        structured_content: Some(read),
                        is_error: false,
                    }) => (read.events.len(), read.next_cursor),
                    _ => return Err(failed()),
                }
            }
        };
        Ok(Read {
            events: events as u64,
            next,
            bytes: body.len() as u64,
        })
    }
}

/// How long a pass reads.
#[derive(Clone, Copy)]
enum Until {
    /// Whole passes over the topic (`total` events from the earliest),
    /// again until `at_least` has passed: a short pass would leave the
    /// CPU figures (10 ms clock ticks) too coarse.
    Whole { total: u64, at_least: Duration },
    /// For this long, from the earliest (again from the earliest should
    /// the end come first).
    For(Duration),
}

/// One side's pass over the topic.
#[derive(Debug, Clone, Serialize)]
struct ReadPass {
    side: Side,
    round: u32,
    limit: u64,
    /// Whole passes over the topic (none for single-event reads).
    passes: u64,
    events: u64,
    requests: u64,
    seconds: f64,
    events_per_s: f64,
    requests_per_s: f64,
    /// Answer bytes (bodies) per event read.
    bytes_per_event: f64,
    bytes_per_request: f64,
    /// From sending a request to its answer's last byte.
    request_ms: Percentiles,
    /// Every pass read every event of the topic, no more.
    complete: bool,
    cpu: CpuSplit,
    server_cpu_us_per_request: Option<f64>,
    client_cpu_us_per_request: f64,
}

impl ReadPass {
    fn other_cores(&self) -> f64 {
        self.cpu.other_s / self.seconds.max(f64::MIN_POSITIVE)
    }
}

/// Reads the topic from its earliest event on `side`, `limit` events a
/// request, one request at a time, `until` it is read or the time is up.
async fn read_pass(
    reader: &mut Reader,
    side: Side,
    round: u32,
    limit: u64,
    until: Until,
    server_pid: u32,
) -> Result<ReadPass> {
    let mut cursor: Option<String> = None;
    let (mut events, mut requests, mut bytes, mut passes, mut in_pass) = (0, 0, 0, 0, 0);
    let mut latencies = Vec::new();
    let mut complete = true;
    let cpu_window = CpuWindow::start(Some(server_pid))?;
    let started = Instant::now();
    loop {
        let sent = Instant::now();
        let read = reader.read(side, cursor.as_deref(), limit).await?;
        latencies.push(sent.elapsed().as_nanos() as u64);
        requests += 1;
        events += read.events;
        in_pass += read.events;
        bytes += read.bytes;
        cursor = Some(read.next);
        match until {
            Until::Whole { total, at_least } => {
                // The end came before every event did, or more came than
                // were published: either way not the topic that was meant.
                if read.events == 0 || in_pass > total {
                    complete = false;
                    break;
                }
                if in_pass == total {
                    passes += 1;
                    in_pass = 0;
                    cursor = None;
                    if started.elapsed() >= at_least {
                        break;
                    }
                }
            }
            Until::For(window) => {
                if read.events == 0 {
                    cursor = None;
                }
                if started.elapsed() >= window {
                    break;
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_window.end()?;
    let per = |value: f64, count: u64| value / count.max(1) as f64;
    Ok(ReadPass {
        side,
        round,
        limit,
        passes,
        events,
        requests,
        seconds,
        events_per_s: events as f64 / seconds.max(f64::MIN_POSITIVE),
        requests_per_s: requests as f64 / seconds.max(f64::MIN_POSITIVE),
        bytes_per_event: per(bytes as f64, events),
        bytes_per_request: per(bytes as f64, requests),
        request_ms: Percentiles::of(&mut latencies),
        complete,
        server_cpu_us_per_request: cpu.server_s.map(|s| per(s * 1e6, requests)),
        client_cpu_us_per_request: per(cpu.client_s * 1e6, requests),
        cpu,
    })
}

/// Medians of one side's passes of one kind (large or small reads).
#[derive(Debug, Serialize)]
struct SideSummary {
    events_per_s: f64,
    requests_per_s: f64,
    events_per_request: f64,
    bytes_per_event: f64,
    bytes_per_request: f64,
    request_ms_p50: f64,
    request_ms_p99: f64,
    server_cpu_us_per_request: Option<f64>,
    client_cpu_us_per_request: f64,
}

impl SideSummary {
    fn of(passes: &[&ReadPass]) -> Self {
        let med = |f: &dyn Fn(&ReadPass) -> f64| median(passes.iter().map(|p| f(p)).collect());
        let server: Vec<f64> = passes
            .iter()
            .filter_map(|p| p.server_cpu_us_per_request)
            .collect();
        Self {
            events_per_s: med(&|p| p.events_per_s),
            requests_per_s: med(&|p| p.requests_per_s),
            events_per_request: med(&|p| p.events as f64 / p.requests.max(1) as f64),
            bytes_per_event: med(&|p| p.bytes_per_event),
            bytes_per_request: med(&|p| p.bytes_per_request),
            request_ms_p50: med(&|p| p.request_ms.p50),
            request_ms_p99: med(&|p| p.request_ms.p99),
            server_cpu_us_per_request: (!server.is_empty()).then(|| median(server)),
            client_cpu_us_per_request: med(&|p| p.client_cpu_us_per_request),
        }
    }
}

/// A side's server CPU per request split into what a call costs whatever
/// it reads (measured with one event a request) and what each event adds.
#[derive(Debug, Serialize)]
struct CostSplit {
    fixed_us_per_request: f64,
    us_per_event: f64,
}

impl CostSplit {
    fn of(large: &SideSummary, small: &SideSummary) -> Option<Self> {
        let (large_us, small_us) = (
            large.server_cpu_us_per_request?,
            small.server_cpu_us_per_request?,
        );
        let extra_events = large.events_per_request - small.events_per_request;
        (extra_events > 0.0).then(|| Self {
            fixed_us_per_request: small_us,
            us_per_event: (large_us - small_us) / extra_events,
        })
    }
}

/// Publish times and who heard, shared by the publisher and the listeners.
struct Schedule {
    /// 1 + the index of the publish last sent (0: none yet).
    generation: AtomicU64,
    /// When each publish was sent, in ns since the run's epoch.
    sent_ns: Vec<AtomicU64>,
    /// Listeners that heard of each publish.
    heard: Vec<AtomicU64>,
}

/// What one listener saw.
#[derive(Default)]
struct ListenerTally {
    acknowledged: bool,
    /// Each publish heard (its index), and the time from just before it
    /// was sent to this listener's first notification after it, in ns.
    latencies: Vec<(usize, u64)>,
    /// Notifications before the first publish (a server may announce the
    /// head once when the stream starts).
    early: u64,
    /// Notifications beyond the first after a publish.
    extra: u64,
    problems: u64,
    first_problem: Option<String>,
}

impl ListenerTally {
    fn problem(&mut self, what: String) {
        self.problems += 1;
        self.first_problem.get_or_insert(what);
    }
}

/// Follows one `subscriptions/listen` stream: its acknowledgment (counted
/// in `acked`), then each `notifications/resources/updated`, until
/// cancelled or the stream ends.
async fn listen(
    response: reqwest::Response,
    uri: Arc<str>,
    schedule: Arc<Schedule>,
    epoch: Instant,
    acked: Arc<AtomicU64>,
    cancel: CancellationToken,
) -> ListenerTally {
    let mut tally = ListenerTally::default();
    let mut last_heard = 0;
    let mut events = response.bytes_stream().eventsource();
    loop {
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
        if event.data.trim().is_empty() {
            continue;
        }
        let message: Value = match serde_json::from_str(&event.data) {
            Ok(message) => message,
            Err(err) => {
                tally.problem(format!("unparsable message: {err}"));
                continue;
            }
        };
        match message["method"].as_str() {
            Some(ACKNOWLEDGED) => {
                let accepted = message
                    .pointer("/params/notifications/resourceSubscriptions")
                    .and_then(Value::as_array)
                    .is_some_and(|uris| uris.iter().any(|u| u.as_str() == Some(&*uri)));
                if !accepted {
                    tally.problem(format!("acknowledged without {uri}: {message}"));
                    break;
                }
                if !tally.acknowledged {
                    tally.acknowledged = true;
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(UPDATED)
                if message.pointer("/params/uri").and_then(Value::as_str) == Some(&*uri) =>
            {
                let generation = schedule.generation.load(Ordering::Acquire);
                if generation == 0 {
                    tally.early += 1;
                } else if generation > last_heard {
                    last_heard = generation;
                    let index = generation as usize - 1;
                    let sent = schedule.sent_ns[index].load(Ordering::Acquire);
                    tally
                        .latencies
                        .push((index, received_ns.saturating_sub(sent)));
                    schedule.heard[index].fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.extra += 1;
                }
            }
            _ => tally.problem(format!("an unexpected message: {message}")),
        }
    }
    tally
}

/// Size of one of the events the topic is filled with.
pub fn fill_event_bytes() -> usize {
    event_json(FILL_PREFIX, 0).len()
}

/// A ~200 B event of its own key, published while the agents listen.
fn notify_body(seq: u64) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"notify-{seq:09}","source":"/bench","type":"{EVENT_TYPE}","data":{{"k":"k{:03}","seq":{seq},"pad":"{}"}}}}"#,
        seq % KEYS,
        "x".repeat(100)
    )
}

/// Percentiles of values that may be negative, in ms (nearest rank).
#[derive(Debug, Default, Serialize)]
struct SignedPercentiles {
    p50: f64,
    p99: f64,
    min: f64,
    max: f64,
}

impl SignedPercentiles {
    /// Of samples in ns; sorts them.
    fn of(samples: &mut [i64]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1] as f64 / 1e6
        };
        if samples.is_empty() {
            return Self::default();
        }
        Self {
            p50: at(0.50),
            p99: at(0.99),
            min: at(0.0),
            max: at(1.0),
        }
    }
}

/// Open files of a process (`/proc/PID/fd`).
fn open_files(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .context("reading /proc/PID/fd")?
        .count())
}

/// What the notification run measured.
#[derive(Debug, Serialize)]
struct NotifyRun {
    listeners: usize,
    connect_failures: usize,
    /// Listeners acknowledged before the first publish.
    acknowledged: u64,
    published_ok: u64,
    publish_errors: u64,
    first_publish_error: Option<String>,
    publish_ms: Percentiles,
    /// Publishes × acknowledged listeners.
    pairs: u64,
    heard: u64,
    /// Pairs with no notification after the publish.
    missing: u64,
    /// Publishes the next one waited for past the interval (not everyone
    /// had heard yet).
    late_publishes: u64,
    /// Notifications before the first publish, all listeners together.
    early_notifications: u64,
    extra_notifications: u64,
    problems: u64,
    first_problem: Option<String>,
    publish_to_notification_ms: Percentiles,
    /// The same, counted from the publish's answer instead: what the
    /// notification path adds after the event is stored.
    after_publish_answer_ms: SignedPercentiles,
    connect_s: f64,
    server_open_files_before: usize,
    server_open_files_with_listeners: usize,
    /// After the listeners closed their streams, once back to `before`
    /// or after `release_wait_s`.
    server_open_files_after: usize,
    /// How long that took; `None`: not within `release_wait_s`.
    server_files_released_s: Option<f64>,
    release_wait_s: f64,
    server_rss_before_mib: f64,
    server_rss_with_listeners_mib: f64,
    /// The publishing window.
    seconds: f64,
    cpu: CpuSplit,
}

impl NotifyRun {
    fn other_cores(&self) -> f64 {
        self.cpu.other_s / self.seconds.max(f64::MIN_POSITIVE)
    }
}

/// Opens the listeners, publishes one event at a time, and collects when
/// each listener heard of each publish.
async fn notify_run(server: &Switchyard, params: &McpParams) -> Result<NotifyRun> {
    let pid = server.pid();
    let uri: Arc<str> = format!("switchyard://topics/{TOPIC}").into();
    let mcp_url = server.url("/mcp");
    let listen_body = |id: u64| {
        rpc_body(
            id,
            "subscriptions/listen",
            json!({ "notifications": { "resourceSubscriptions": [&*uri] } }),
        )
    };
    let server_open_files_before = open_files(pid)?;
    let server_rss_before = server.usage()?.rss_bytes;
    // Streams stay open for the whole run: no pool limit, no timeout but
    // the connect's.
    let streams = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()?;
    let connected_at = Instant::now();
    let requests = (0..params.listeners as u64)
        .map(|id| mcp_post(&streams, &mcp_url, "subscriptions/listen", None).body(listen_body(id)));
    let (responses, connect_failures) = crate::sse::open_streams(requests, "listener").await;

    let epoch = Instant::now();
    let schedule = Arc::new(Schedule {
        generation: AtomicU64::new(0),
        sent_ns: (0..params.publishes).map(|_| AtomicU64::new(0)).collect(),
        heard: (0..params.publishes).map(|_| AtomicU64::new(0)).collect(),
    });
    let acked = Arc::new(AtomicU64::new(0));
    let cancel = CancellationToken::new();
    let listeners: Vec<_> = responses
        .into_iter()
        .map(|response| {
            tokio::spawn(listen(
                response,
                Arc::clone(&uri),
                Arc::clone(&schedule),
                epoch,
                Arc::clone(&acked),
                cancel.clone(),
            ))
        })
        .collect();
    let connected = listeners.len() as u64;
    let ack_deadline = Instant::now() + ACK_TIMEOUT;
    while acked.load(Ordering::Relaxed) < connected && Instant::now() < ack_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let acknowledged = acked.load(Ordering::Relaxed);
    let connect_s = connected_at.elapsed().as_secs_f64();
    eprintln!(
        "  {acknowledged} of {} listeners acknowledged in {connect_s:.1}s",
        params.listeners
    );
    if acknowledged == 0 {
        cancel.cancel();
        bail!("no subscriptions/listen stream was acknowledged");
    }
    // The acknowledgment goes out just before the server starts watching
    // the topic: let every listener settle before the first publish.
    tokio::time::sleep(SETTLE).await;
    let server_open_files_with_listeners = open_files(pid)?;
    let server_rss_with = server.usage()?.rss_bytes;

    let publisher = http_client(1)?;
    let events_url = server.url(&format!("/v1/topics/{TOPIC}/events"));
    let interval = Duration::from_secs_f64(params.interval_ms as f64 / 1000.0);
    let everyone_heard =
        |index: usize| schedule.heard[index].load(Ordering::Relaxed) >= acknowledged;
    let (mut published_ok, mut publish_errors, mut late_publishes) = (0, 0, 0);
    let mut first_publish_error = None;
    // Per publish, from just before it was sent to its answer.
    let mut answered_after_ns: Vec<Option<u64>> = vec![None; params.publishes as usize];
    let cpu_window = CpuWindow::start(Some(pid))?;
    let started = Instant::now();
    let mut next_at = started;
    for seq in 0..params.publishes {
        let index = seq as usize;
        if index > 0 {
            // Only once the last publish is heard everywhere (or given up
            // on) is the next one's notification certain to be its own.
            let deadline = next_at + NOTIFY_WAIT;
            while !everyone_heard(index - 1) && Instant::now() < deadline {
                tokio::time::sleep(HEARD_POLL).await;
            }
            if Instant::now() > next_at + HEARD_POLL {
                late_publishes += 1;
            }
        }
        tokio::time::sleep_until(next_at.into()).await;
        // The next publish comes an interval after this one at the
        // earliest: closer, its notification could be coalesced with this.
        next_at = Instant::now() + interval;
        let sent_ns = epoch.elapsed().as_nanos() as u64;
        schedule.sent_ns[index].store(sent_ns, Ordering::Release);
        schedule.generation.store(seq + 1, Ordering::Release);
        let outcome = publisher
            .post(&events_url)
            .timeout(REQUEST_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, STRUCTURED)
            .body(notify_body(seq))
            .send()
            .await;
        match outcome {
            Ok(response) if response.status().is_success() => {
                let _ = response.bytes().await;
                published_ok += 1;
                answered_after_ns[index] = Some(epoch.elapsed().as_nanos() as u64 - sent_ns);
            }
            Ok(response) => {
                publish_errors += 1;
                let status = response.status();
                first_publish_error.get_or_insert(format!(
                    "{status}: {}",
                    response.text().await.unwrap_or_default()
                ));
            }
            Err(err) => {
                publish_errors += 1;
                first_publish_error.get_or_insert(format!("{err:#}"));
            }
        }
    }
    if let Some(last) = (params.publishes as usize).checked_sub(1) {
        let deadline = Instant::now() + NOTIFY_WAIT;
        while !everyone_heard(last) && Instant::now() < deadline {
            tokio::time::sleep(HEARD_POLL).await;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_window.end()?;
    cancel.cancel();

    let mut pairs_heard = Vec::with_capacity((params.publishes * acknowledged) as usize);
    let (mut early, mut extra, mut problems) = (0, 0, 0);
    let mut first_problem = None;
    for listener in listeners {
        let tally = listener.await.context("a listener task panicked")?;
        early += tally.early;
        extra += tally.extra;
        problems += tally.problems;
        first_problem = first_problem.or(tally.first_problem);
        if tally.acknowledged {
            pairs_heard.extend(tally.latencies);
        }
    }
    drop(streams);
    // Every stream is closed on this side now; the server lets go of its
    // end when it notices (at the latest when it next writes to it).
    let closed_at = Instant::now();
    let release_wait = if params.quick {
        QUICK_RELEASE_WAIT
    } else {
        RELEASE_WAIT
    };
    let mut server_open_files_after = open_files(pid)?;
    while server_open_files_after > server_open_files_before && closed_at.elapsed() < release_wait {
        tokio::time::sleep(Duration::from_millis(100)).await;
        server_open_files_after = open_files(pid)?;
    }
    let server_files_released_s = (server_open_files_after <= server_open_files_before)
        .then(|| closed_at.elapsed().as_secs_f64());
    let heard = pairs_heard.len() as u64;
    let mut latencies: Vec<u64> = pairs_heard.iter().map(|&(_, ns)| ns).collect();
    // Negative: the notification came before the publish's own answer.
    let mut after_answer: Vec<i64> = pairs_heard
        .iter()
        .filter_map(|&(index, ns)| Some(ns as i64 - answered_after_ns[index]? as i64))
        .collect();
    let mut publish_latencies: Vec<u64> = answered_after_ns.iter().flatten().copied().collect();
    let pairs = params.publishes * acknowledged;
    Ok(NotifyRun {
        listeners: params.listeners,
        connect_failures,
        acknowledged,
        published_ok,
        publish_errors,
        first_publish_error,
        publish_ms: Percentiles::of(&mut publish_latencies),
        pairs,
        heard,
        missing: pairs.saturating_sub(heard),
        late_publishes,
        early_notifications: early,
        extra_notifications: extra,
        problems,
        first_problem,
        publish_to_notification_ms: Percentiles::of(&mut latencies),
        after_publish_answer_ms: SignedPercentiles::of(&mut after_answer),
        connect_s,
        server_open_files_before,
        server_open_files_with_listeners,
        server_open_files_after,
        server_files_released_s,
        release_wait_s: release_wait.as_secs_f64(),
        server_rss_before_mib: mib(server_rss_before),
        server_rss_with_listeners_mib: mib(server_rss_with),
        seconds,
        cpu,
    })
}

fn print_passes(passes: &[ReadPass]) {
    println!(
        "| {:<16} | {:>5} | {:>5} | {:>6} | {:>9} | {:>8} | {:>6} | {:>9} | {:>8} | {:>7} | {:>7} | {:>8} | {:>11} | {:>11} | {:>9} |",
        "side",
        "round",
        "limit",
        "passes",
        "events",
        "requests",
        "s",
        "events/s",
        "req/s",
        "p50 ms",
        "p99 ms",
        "B/event",
        "server µs/r",
        "client µs/r",
        "other CPU"
    );
    println!(
        "|{:-<18}|{:->7}|{:->7}|{:->8}|{:->11}|{:->10}|{:->8}|{:->11}|{:->10}|{:->9}|{:->9}|{:->10}|{:->13}|{:->13}|{:->11}|",
        "", "", "", "", "", "", "", "", "", "", "", "", "", "", ""
    );
    for pass in passes {
        let server = pass
            .server_cpu_us_per_request
            .map_or_else(|| "-".into(), |us| format!("{us:.0}"));
        let incomplete = if pass.complete { "" } else { " (incomplete)" };
        println!(
            "| {:<16} | {:>5} | {:>5} | {:>6} | {:>9} | {:>8} | {:>6.2} | {:>9.0} | {:>8.0} | {:>7.2} | {:>7.2} | {:>8.0} | {:>11} | {:>11.0} | {:>9.2} |{incomplete}",
            pass.side.name(),
            pass.round,
            pass.limit,
            pass.passes,
            pass.events,
            pass.requests,
            pass.seconds,
            pass.events_per_s,
            pass.requests_per_s,
            pass.request_ms.p50,
            pass.request_ms.p99,
            pass.bytes_per_event,
            server,
            pass.client_cpu_us_per_request,
            pass.cpu.other_s,
        );
    }
}

/// Reads on both sides and the notifications, on one server.
pub async fn mcp_scenario(params: &McpParams, server_args: &ServerArgs) -> Result<()> {
    if params.events == 0 || params.rounds == 0 || params.limit == 0 {
        bail!("--events, --rounds and --limit must be at least 1");
    }
    let binary = server_args.describe_binary()?;
    eprintln!(
        "mcp: {} events read {} at a time, {} rounds per side (+ {}s of single-event reads each); \
         {} listeners × {} publishes every {} ms; revision {MCP_REVISION}, fsync {}",
        params.events,
        params.limit,
        params.rounds,
        params.small_reads_s,
        params.listeners,
        params.publishes,
        params.interval_ms,
        params.fsync
    );
    let server = Switchyard::start(server_args, &Setup::default())?;
    let pid = server.pid();
    let data_fs = server.data_filesystem();
    let fill_client = http_client(4)?;
    let fill_s = publish_events(
        &fill_client,
        &server.url(&format!("/v1/topics/{TOPIC}/events")),
        FILL_PREFIX,
        0..params.events,
    )
    .await?;
    drop(fill_client);
    eprintln!(
        "  {} events published in {fill_s:.1}s (batches of 250)",
        params.events
    );
    tokio::time::sleep(SETTLE).await;

    let mut reader = Reader {
        client: http_client(1)?,
        pages_url: server.url(&format!("/v1/topics/{TOPIC}/events")),
        mcp_url: server.url("/mcp"),
        next_id: 0,
    };
    // One unmeasured pass each: the log in the page cache, the server's
    // lazily built parts (the tool catalogue) built, connections open.
    for side in [Side::Pages, Side::Mcp] {
        let warmup = read_pass(
            &mut reader,
            side,
            0,
            params.limit,
            Until::Whole {
                total: params.events,
                at_least: Duration::ZERO,
            },
            pid,
        )
        .await?;
        if !warmup.complete {
            bail!(
                "{}: read {} of the {} events published",
                side.name(),
                warmup.events,
                params.events
            );
        }
    }
    let small = Duration::from_secs_f64(params.small_reads_s);
    let mut passes = Vec::new();
    let mut small_passes = Vec::new();
    for round in 1..=params.rounds {
        for side in [Side::Pages, Side::Mcp] {
            let pass = read_pass(
                &mut reader,
                side,
                round,
                params.limit,
                Until::Whole {
                    total: params.events,
                    at_least: Duration::from_secs_f64(params.duration_s),
                },
                pid,
            )
            .await?;
            eprintln!(
                "  {}, round {round}: {:.0} events/s",
                side.name(),
                pass.events_per_s
            );
            passes.push(pass);
        }
        if params.small_reads_s > 0.0 {
            for side in [Side::Pages, Side::Mcp] {
                small_passes
                    .push(read_pass(&mut reader, side, round, 1, Until::For(small), pid).await?);
            }
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
    drop(reader);

    eprintln!(
        "  {} listeners, one publish every {} ms",
        params.listeners, params.interval_ms
    );
    let notify = notify_run(&server, params).await?;
    let end = server.usage()?;
    let log_lines = server.log_lines();
    drop(server);

    let of = |list: &[ReadPass], side: Side| {
        SideSummary::of(&list.iter().filter(|p| p.side == side).collect::<Vec<_>>())
    };
    let (pages, mcp) = (of(&passes, Side::Pages), of(&passes, Side::Mcp));
    let (pages_small, mcp_small) = (of(&small_passes, Side::Pages), of(&small_passes, Side::Mcp));
    let ratio = mcp.events_per_s / pages.events_per_s.max(f64::MIN_POSITIVE);
    let round_ratios: Vec<f64> = passes
        .chunks(2)
        .filter_map(|pair| match pair {
            [base, measured] => {
                Some(measured.events_per_s / base.events_per_s.max(f64::MIN_POSITIVE))
            }
            _ => None,
        })
        .collect();
    let spread = round_ratios
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    let pages_cost = CostSplit::of(&pages, &pages_small);
    let mcp_cost = CostSplit::of(&mcp, &mcp_small);
    let all_complete = passes.iter().all(|p| p.complete);

    println!();
    println!(
        "mcp reads: {} events of ~{} B in the bench topic ({} partitions, fsync {}, log on {data_fs}), \
         read from the earliest by one client loop, {} a request, whole passes for at least {}s per side and round; \
         MCP revision {MCP_REVISION}",
        params.events,
        params.event_bytes,
        params.partitions,
        params.fsync,
        params.limit,
        params.duration_s
    );
    println!(
        "per request: p50/p99 from sending to the answer's last byte; server/client µs/r: CPU per request in the pass"
    );
    println!();
    print_passes(&passes);
    if !small_passes.is_empty() {
        println!();
        println!(
            "single-event reads (limit 1), {}s per side and round:",
            params.small_reads_s
        );
        print_passes(&small_passes);
    }
    println!();
    println!(
        "ratio MCP/pages (median events/s): {ratio:.3} ({:.0} vs {:.0} events/s); round by round: {spread}",
        mcp.events_per_s, pages.events_per_s
    );
    let mut findings = vec![format!(
        "answer bytes per event: MCP {:.0} vs pages {:.0} ({:.2}×: the tool result holds the events twice, \
         as structuredContent and again as escaped text in content)",
        mcp.bytes_per_event,
        pages.bytes_per_event,
        mcp.bytes_per_event / pages.bytes_per_event.max(f64::MIN_POSITIVE)
    )];
    if let (Some(m), Some(p)) = (
        mcp.server_cpu_us_per_request,
        pages.server_cpu_us_per_request,
    ) {
        findings.push(format!(
            "server CPU per {}-event request: MCP {m:.0} µs vs pages {p:.0} µs ({:.2}×); client CPU: MCP {:.0} vs pages {:.0} µs",
            params.limit,
            m / p.max(f64::MIN_POSITIVE),
            mcp.client_cpu_us_per_request,
            pages.client_cpu_us_per_request
        ));
    }
    if let (Some(m), Some(p)) = (&mcp_cost, &pages_cost) {
        let per_request = mcp.events_per_request;
        let fixed_extra = m.fixed_us_per_request - p.fixed_us_per_request;
        let event_extra = (m.us_per_event - p.us_per_event) * (per_request - 1.0);
        findings.push(format!(
            "server CPU split (limit 1 = a call's fixed cost): MCP {:.0} µs per call + {:.2} µs per event, \
             pages {:.0} µs + {:.2} µs; of MCP's extra {:.0} µs per {:.0}-event request, {:.0} µs is per call and {:.0} µs per event",
            m.fixed_us_per_request,
            m.us_per_event,
            p.fixed_us_per_request,
            p.us_per_event,
            fixed_extra + event_extra,
            per_request,
            fixed_extra,
            event_extra
        ));
    }
    for finding in &findings {
        println!("{finding}");
    }

    println!();
    println!(
        "mcp notifications: {} subscriptions/listen streams on switchyard://topics/{TOPIC}, \
         {} publishes of one ~{} B event every {} ms",
        notify.listeners,
        params.publishes,
        notify_body(0).len(),
        params.interval_ms
    );
    println!();
    println!("| {:<44} | {:>22} |", "measure", "value");
    println!("|{:-<46}|{:->24}|", "", "");
    let row = |name: &str, value: String| println!("| {name:<44} | {value:>22} |");
    let lag = &notify.publish_to_notification_ms;
    row(
        "listeners acknowledged / failed to connect",
        format!("{} / {}", notify.acknowledged, notify.connect_failures),
    );
    row(
        "publishes (ok / errors)",
        format!("{} / {}", notify.published_ok, notify.publish_errors),
    );
    row(
        "publish latency p50 / p99 ms",
        format!(
            "{:.2} / {:.2}",
            notify.publish_ms.p50, notify.publish_ms.p99
        ),
    );
    row(
        "(publish, listener) pairs heard / all",
        format!("{} / {}", notify.heard, notify.pairs),
    );
    row("pairs missing a notification", notify.missing.to_string());
    row(
        "publishes delayed (someone had not heard)",
        notify.late_publishes.to_string(),
    );
    row(
        "notifications before the first publish",
        notify.early_notifications.to_string(),
    );
    row(
        "extra notifications after a publish",
        notify.extra_notifications.to_string(),
    );
    row("listener problems", notify.problems.to_string());
    row("publish→notification p50 ms", format!("{:.2}", lag.p50));
    row("publish→notification p90 ms", format!("{:.2}", lag.p90));
    row("publish→notification p99 ms", format!("{:.2}", lag.p99));
    row("publish→notification max ms", format!("{:.2}", lag.max));
    let after = &notify.after_publish_answer_ms;
    row(
        "publish answer→notification p50 / p99 ms",
        format!("{:.2} / {:.2}", after.p50, after.p99),
    );
    row(
        "server open files: before / with / after",
        format!(
            "{} / {} / {}",
            notify.server_open_files_before,
            notify.server_open_files_with_listeners,
            notify.server_open_files_after
        ),
    );
    row(
        "server closed the streams' files within",
        notify.server_files_released_s.map_or_else(
            || format!("not in {}s", notify.release_wait_s),
            |s| format!("{s:.1} s"),
        ),
    );
    row(
        "server RSS before / with listeners",
        format!(
            "{:.1} / {:.1} MiB",
            notify.server_rss_before_mib, notify.server_rss_with_listeners_mib
        ),
    );
    row(
        "server CPU while publishing",
        format!(
            "{:.2} s of {:.1} s",
            notify.cpu.server_s.unwrap_or(0.0),
            notify.seconds
        ),
    );
    row(
        "server peak RSS",
        format!("{:.1} MiB", mib(end.peak_rss_bytes)),
    );
    println!();
    if let Some(problem) = &notify.first_problem {
        println!("first listener problem: {problem}");
    }
    if let Some(error) = &notify.first_publish_error {
        println!("first publish error: {error}");
    }

    let busiest = passes
        .iter()
        .chain(&small_passes)
        .map(ReadPass::other_cores)
        .fold(notify.other_cores(), f64::max);
    warn_if_busy(busiest);
    let target = format!("MCP read_events ≥ {MCP_TARGET_RATIO}× GET pages");
    let verdict = verdict(
        &target,
        "1000 events a request, one client loop",
        !params.quick && params.limit == MCP_TARGET_LIMIT && all_complete,
        ratio >= MCP_TARGET_RATIO,
        "the target is for 1000 events a request, every pass complete, without --quick",
    );
    report_log(&log_lines);

    let headline = Headline {
        target: format!("{target}; publish→notification p99 for information"),
        measured: format!(
            "{ratio:.2}× ({:.0} vs {:.0} events/s, medians; rounds {spread}); notifications to {} listeners \
             p50 {:.1} p99 {:.1} max {:.1} ms, {} of {} missing",
            mcp.events_per_s,
            pages.events_per_s,
            notify.acknowledged,
            lag.p50,
            lag.p99,
            lag.max,
            notify.missing,
            notify.pairs
        ),
        verdict,
        busiest_other_cores: Some(busiest),
    };
    record(
        "mcp",
        json!(params),
        json!({
            "server_binary": binary,
            "data_filesystem": data_fs,
            "event_bytes": fill_event_bytes(),
            "fill_s": fill_s,
            "rounds": passes,
            "small_reads": small_passes,
            "pages": pages,
            "mcp": mcp,
            "pages_small": pages_small,
            "mcp_small": mcp_small,
            "round_ratios": round_ratios,
            "pages_cost": pages_cost,
            "mcp_cost": mcp_cost,
            "findings": findings,
            "notify": notify,
            "server_peak_rss_mib": mib(end.peak_rss_bytes),
            "server_warnings": log_lines,
        }),
        Some(ratio),
        &headline,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_revision_in_their_meta() {
        let body: Value =
            serde_json::from_str(&rpc_body(7, "tools/call", json!({ "name": "read_events" })))
                .unwrap();
        assert_eq!(body["id"], 7);
        assert_eq!(body["method"], "tools/call");
        assert_eq!(body["params"]["name"], "read_events");
        assert_eq!(
            body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
            MCP_REVISION
        );
    }

    #[test]
    fn a_tool_answer_is_read_from_its_structured_content() {
        let answer = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"{\"events\":[{}]}"}],
            "structuredContent":{"events":[{"id":"a"},{"id":"b"}],"next_cursor":"c","has_more":true,"next_poll_ms":0},"isError":false}}"#;
        let answer: RpcAnswer<ToolAnswer<ReadEvents>> = serde_json::from_str(answer).unwrap();
        let result = answer.result.unwrap();
        assert!(!result.is_error);
        let read = result.structured_content.unwrap();
        assert_eq!(read.events.len(), 2);
        assert_eq!(read.next_cursor, "c");
    }

    #[test]
    fn notify_events_are_about_200_bytes() {
        let event: Value = serde_json::from_str(&notify_body(3)).unwrap();
        assert_eq!(event["data"]["seq"], 3);
        assert!((150..250).contains(&notify_body(3).len()));
    }
}
