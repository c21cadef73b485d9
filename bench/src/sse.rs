//! The publish→SSE measurement shared by `latency`, `fanout` and
//! `backends`: subscribers that record each event's delay, and a publisher
//! on a fixed schedule.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::cli::StreamParams;
use crate::load::http_client;
use crate::report::Progress;
use crate::server::Switchyard;
use crate::stats::Percentiles;
use crate::usage::{CpuSplit, CpuWindow, ProcUsage};
use crate::{
    CONNECT_CONCURRENCY, CONNECT_TIMEOUT, DRAIN_TIMEOUT, EVENT_TYPE, KEYS, REQUEST_TIMEOUT, SETTLE,
    STREAM_EVENT_BYTES, STRUCTURED, TOPIC,
};

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
pub struct PublishTally {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latencies: Vec<u64>,
    pub first_sent_ns: u64,
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
pub struct StreamRun {
    pub connected: usize,
    pub connect_failures: usize,
    pub expected: u64,
    pub received: u64,
    pub missing: u64,
    /// Subscribers that missed at least one event.
    pub incomplete: u64,
    pub duplicates: u64,
    pub problems: u64,
    pub first_problem: Option<String>,
    pub published: PublishTally,
    pub publish_latency: Percentiles,
    /// Publish → receive over all deliveries.
    pub lag: Percentiles,
    pub deliveries_per_s: f64,
    pub before_subscribers: ProcUsage,
    pub with_subscribers: ProcUsage,
    pub rss_per_subscriber: f64,
    /// Everyone connected, nothing published; `None` when `idle_s` is 0.
    pub idle: Option<CpuSplit>,
    pub publish_cpu: CpuSplit,
    /// CPU seconds of the process `broker_pid` in the publishing window.
    pub broker_cpu_s: Option<f64>,
}

/// The publish→SSE measurement shared by `latency`, `fanout` and
/// `backends`: connects `params.subscribers` SSE clients to the bench topic
/// of a running server, lets `params.idle_s` pass, publishes `params.rate`
/// events/s for `params.duration_s`, and collects what each subscriber got.
pub async fn run_stream(
    server: &Switchyard,
    params: &StreamParams,
    label: &str,
    broker_pid: Option<u32>,
) -> Result<StreamRun> {
    let total = (params.rate as f64 * params.duration_s).round() as u64;
    let pid = server.pid();
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
    let requests = (0..params.subscribers).map(|_| {
        sse.get(&stream_url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
    });
    let (responses, connect_failures) = open_streams(requests, "subscriber").await;
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

/// Sends `requests` (each opening a long-lived stream), a few at a time:
/// the answers that came with a success status, and how many did not (the
/// first failure is printed, naming the `what` that could not connect).
pub async fn open_streams(
    requests: impl Iterator<Item = reqwest::RequestBuilder>,
    what: &str,
) -> (Vec<reqwest::Response>, usize) {
    let attempts: Vec<Result<reqwest::Response, String>> = futures::stream::iter(requests)
        .map(|request| async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, request.send()).await {
                Ok(Ok(response)) if response.status().is_success() => Ok(response),
                Ok(Ok(response)) => {
                    let status = response.status();
                    Err(format!(
                        "{status}: {}",
                        response.text().await.unwrap_or_default()
                    ))
                }
                Ok(Err(err)) => Err(format!("{err:#}")),
                Err(_) => Err(format!("no answer in {REQUEST_TIMEOUT:?}")),
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut responses = Vec::with_capacity(attempts.len());
    let mut failures = 0;
    for attempt in attempts {
        match attempt {
            Ok(response) => responses.push(response),
            Err(err) => {
                if failures == 0 {
                    eprintln!("  a {what} could not connect: {err}");
                }
                failures += 1;
            }
        }
    }
    (responses, failures)
}
