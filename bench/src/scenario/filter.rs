//! `filter`: what a CEL filter that passes one event in ten costs, against
//! no filter, in the same run: a handler draining a backlog (every event
//! read, a tenth called), and SSE fan-out to many subscribers (every event
//! read once by the hub, a tenth sent). A filter should make both cheaper,
//! not dearer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

use crate::bare::{BareServer, Hits};
use crate::cli::{HandlerParams, ServerArgs};
use crate::load::{Load, event_id, http_client, publish_body};
use crate::report::{Headline, record, report_log, verdict, warn_if_busy};
use crate::scenario::handler::send_all;
use crate::server::{Setup, Switchyard};
use crate::usage::CpuWindow;
use crate::{
    DEAD_LETTER_TOPIC, HANDLER_NAME, PREPUBLISH_TIMEOUT, RESULTS_TOPIC, SINK_PATH, SINK_POLL, TOPIC,
};

/// Passes the events whose key (`k000`…`k999`) ends in 0: one in ten.
pub const TENTH: &str = r#"data.k.endsWith("0")"#;
/// SSE subscribers per run.
const SUBSCRIBERS: usize = 100;
const ROUNDS: u32 = 3;

#[derive(Debug, Serialize)]
struct Run {
    side: &'static str,
    round: u32,
    /// Events the handler read (handler) or the server published (SSE).
    events: u64,
    /// Calls at the sink, or events the subscribers got in all.
    delivered: u64,
    seconds: f64,
    /// Input events per second.
    events_per_s: f64,
    server_cpu_s: f64,
    server_cpu_us_per_event: f64,
    other_cores: f64,
}

fn handler_definition(sink_url: &str, filter: Option<&str>, concurrency: usize) -> String {
    let filter = filter.map_or_else(String::new, |f| format!("filter = '{f}'\n"));
    format!(
        "name = \"{HANDLER_NAME}\"\n\n[subscribe]\ntopic = \"{TOPIC}\"\nstart = \"earliest\"\n{filter}\n\
         [action]\nkind = \"http\"\nurl = \"{sink_url}\"\nbody = \"data\"\n\n\
         [policy]\nmax_concurrency = {concurrency}\n\n\
         [outputs]\nresults = \"{RESULTS_TOPIC}\"\ndead_letters = \"{DEAD_LETTER_TOPIC}\"\n"
    )
}

/// Publishes `count` 1 KiB events, 64 at a time.
/// How many of `count` pre-published events the filter passes: those
/// whose key (`k000`…, see [`publish_body`]) ends in 0, about 10%.
fn passing(count: u64) -> u64 {
    (0..count)
        .filter(|&n| (n % crate::KEYS).is_multiple_of(10))
        .count() as u64
}

async fn prepublish(server: &Switchyard, count: u64, round: u32) -> Result<()> {
    let client = http_client(64)?;
    let url = server.url(&format!("/v1/topics/{TOPIC}/events"));
    let pad: Arc<str> = Load::Publish.padding().into();
    let (published, first_error) = send_all(count, 64, Instant::now() + PREPUBLISH_TIMEOUT, {
        move |n| {
            let id = event_id(round, 0, n);
            let body = publish_body(&id, n, &pad);
            Load::Publish.request(&client, &url, &id, body)
        }
    })
    .await?;
    if published < count {
        bail!(
            "pre-publishing stored {published} of {count} events; first error: {}",
            first_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// The handler's lag (events not yet handled), from `GET /v1/handlers`.
async fn handler_lag(server: &Switchyard) -> Option<u64> {
    let status: Value = reqwest::get(server.url("/v1/handlers"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    status["handlers"][0]["lag"].as_u64()
}

/// One handler run: a backlog of `events`, then the handler, timed until
/// it has read them all (lag 0, the sink at its count).
async fn handler_run(
    server_args: &ServerArgs,
    params: &HandlerParams,
    (side, filter): (&'static str, Option<&str>),
    round: u32,
    sink: (&str, &Hits),
    log_lines: &mut Vec<String>,
) -> Result<Run> {
    let (sink_url, hits) = sink;
    let setup = Setup {
        handler_outputs: true,
        ..Setup::default()
    };
    let server = Switchyard::start(server_args, &setup)?;
    prepublish(&server, params.events, round).await?;
    hits.reset();
    let server =
        server.restart_with_handler(&handler_definition(sink_url, filter, params.concurrency))?;
    let expected = if filter.is_some() {
        passing(params.events)
    } else {
        params.events
    };
    let window = CpuWindow::start(Some(server.pid()))?;
    let started = Instant::now();
    let timeout = Duration::from_secs_f64(params.timeout_s);
    loop {
        if hits.count() >= expected && handler_lag(&server).await == Some(0) {
            break;
        }
        if started.elapsed() > timeout {
            bail!(
                "{side}: the handler did not finish in {}s ({} of {expected} calls)",
                params.timeout_s,
                hits.count()
            );
        }
        tokio::time::sleep(SINK_POLL).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = window.end()?;
    log_lines.extend(server.log_lines());
    let server_cpu_s = cpu.server_s.unwrap_or(0.0);
    Ok(Run {
        side,
        round,
        events: params.events,
        delivered: hits.count(),
        seconds,
        events_per_s: params.events as f64 / seconds,
        server_cpu_s,
        server_cpu_us_per_event: server_cpu_s * 1e6 / params.events as f64,
        other_cores: cpu.other_s / seconds,
    })
}

/// One SSE run: `SUBSCRIBERS` streams (with `filter`, if any), then
/// `events` published; timed until every subscriber has its share.
async fn sse_run(
    server_args: &ServerArgs,
    params: &HandlerParams,
    (side, filter): (&'static str, Option<&str>),
    round: u32,
    log_lines: &mut Vec<String>,
) -> Result<Run> {
    let server = Switchyard::start(server_args, &Setup::default())?;
    let mut url = server.url(&format!("/v1/topics/{TOPIC}/stream"));
    if let Some(filter) = filter {
        url = format!("{url}?filter={}", urlencode(filter));
    }
    let received = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::builder().no_proxy().build()?;
    let requests = (0..SUBSCRIBERS).map(|_| {
        client
            .get(&url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
    });
    let (responses, failures) = crate::sse::open_streams(requests, "subscriber").await;
    if failures > 0 {
        bail!("{side}: {failures} subscribers could not connect");
    }
    let readers: Vec<_> = responses
        .into_iter()
        .map(|response| {
            let received = Arc::clone(&received);
            tokio::spawn(async move {
                let mut body = response.bytes_stream();
                let mut tail = Vec::new();
                while let Some(Ok(chunk)) = body.next().await {
                    tail.extend_from_slice(&chunk);
                    // Count whole `data:` lines; keep a partial line.
                    let cut = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                    let lines = tail[..cut]
                        .split(|&b| b == b'\n')
                        .filter(|line| line.starts_with(b"data:"))
                        .count();
                    received.fetch_add(lines as u64, Ordering::Relaxed);
                    tail.drain(..cut);
                }
            })
        })
        .collect();
    let per_subscriber = if filter.is_some() {
        passing(params.events)
    } else {
        params.events
    };
    let expected = per_subscriber * SUBSCRIBERS as u64;
    let window = CpuWindow::start(Some(server.pid()))?;
    let started = Instant::now();
    prepublish(&server, params.events, round).await?;
    let timeout = Duration::from_secs_f64(params.timeout_s);
    while received.load(Ordering::Relaxed) < expected {
        if started.elapsed() > timeout {
            bail!(
                "{side}: subscribers got {} of {expected} events in {}s",
                received.load(Ordering::Relaxed),
                params.timeout_s
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = window.end()?;
    for reader in readers {
        reader.abort();
    }
    log_lines.extend(server.log_lines());
    let server_cpu_s = cpu.server_s.unwrap_or(0.0);
    Ok(Run {
        side,
        round,
        events: params.events,
        delivered: received.load(Ordering::Relaxed),
        seconds,
        events_per_s: params.events as f64 / seconds,
        server_cpu_s,
        server_cpu_us_per_event: server_cpu_s * 1e6 / params.events as f64,
        other_cores: cpu.other_s / seconds,
    })
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn median_of(runs: &[Run], side: &str, value: impl Fn(&Run) -> f64) -> f64 {
    crate::stats::median(runs.iter().filter(|r| r.side == side).map(value).collect())
}

fn table(what: &str, runs: &[Run]) {
    println!();
    println!("{what}");
    println!(
        "| {:<16} | {:>7} | {:>9} | {:>8} | {:>10} | {:>11} | {:>9} |",
        "run", "events", "delivered", "seconds", "events/s", "CPU µs/evt", "other CPU"
    );
    println!(
        "|{:-<18}|{:->9}|{:->11}|{:->10}|{:->12}|{:->13}|{:->11}|",
        "", "", "", "", "", "", ""
    );
    for run in runs {
        println!(
            "| {:<16} | {:>7} | {:>9} | {:>8.2} | {:>10.0} | {:>11.0} | {:>9.2} |",
            format!("{} #{}", run.side, run.round),
            run.events,
            run.delivered,
            run.seconds,
            run.events_per_s,
            run.server_cpu_us_per_event,
            run.other_cores
        );
    }
}

const NONE: &str = "no filter";
const FILTERED: &str = "filter 10%";

pub async fn filter_scenario(params: &HandlerParams, server_args: &ServerArgs) -> Result<()> {
    let binary = server_args.describe_binary()?;
    let hits = Arc::new(Hits::new());
    let sink = BareServer::start(SINK_PATH, Some(Arc::clone(&hits)))?;
    let sink_url = sink.url(SINK_PATH);
    let rounds = if params.quick { 1 } else { ROUNDS };
    eprintln!(
        "filter: {} events, {rounds} rounds of each side; handler with {} in flight; SSE to {SUBSCRIBERS} subscribers; filter {TENTH}",
        params.events, params.concurrency
    );
    let mut log_lines = Vec::new();
    let mut handler_runs = Vec::new();
    let mut sse_runs = Vec::new();
    for round in 1..=rounds {
        for side in [(NONE, None), (FILTERED, Some(TENTH))] {
            eprintln!("  handler, {}, round {round}", side.0);
            handler_runs.push(
                handler_run(
                    server_args,
                    params,
                    side,
                    round,
                    (&sink_url, &hits),
                    &mut log_lines,
                )
                .await?,
            );
            eprintln!("  SSE, {}, round {round}", side.0);
            sse_runs.push(sse_run(server_args, params, side, round, &mut log_lines).await?);
        }
    }
    drop(sink);
    table(
        &format!(
            "handler: {} pre-published events drained (lag 0); events/s counts every event read",
            params.events
        ),
        &handler_runs,
    );
    table(
        &format!(
            "SSE: {} events published to {SUBSCRIBERS} subscribers, until each has its share",
            params.events
        ),
        &sse_runs,
    );
    let handler_ratio = median_of(&handler_runs, FILTERED, |r| r.events_per_s)
        / median_of(&handler_runs, NONE, |r| r.events_per_s);
    let sse_ratio = median_of(&sse_runs, NONE, |r| r.server_cpu_us_per_event)
        / median_of(&sse_runs, FILTERED, |r| r.server_cpu_us_per_event).max(f64::MIN_POSITIVE);
    println!();
    println!("handler throughput, filter 10% / no filter (medians): {handler_ratio:.2}×");
    println!(
        "SSE server CPU per published event, no filter / filter 10% (medians): {sse_ratio:.2}×"
    );
    let busiest = handler_runs
        .iter()
        .chain(&sse_runs)
        .map(|r| r.other_cores)
        .fold(0.0, f64::max);
    warn_if_busy(busiest);
    let met = handler_ratio >= 1.0 && sse_ratio >= 1.0;
    let verdict = verdict(
        "a 10% filter cheaper than none (handler events/s and SSE CPU per event, both ≥ 1×)",
        &format!("{} events", params.events),
        !params.quick,
        met,
        "judged without --quick",
    );
    report_log(&log_lines);
    let headline = Headline {
        target: "10% CEL filter cheaper than none (handler, SSE)".into(),
        measured: format!(
            "handler {handler_ratio:.2}× events/s; SSE {sse_ratio:.2}× less CPU per event"
        ),
        verdict,
        busiest_other_cores: Some(busiest),
    };
    record(
        "filter",
        json!(params),
        json!({
            "server_binary": binary,
            "filter": TENTH,
            "subscribers": SUBSCRIBERS,
            "handler": handler_runs,
            "sse": sse_runs,
            "handler_ratio": handler_ratio,
            "sse_cpu_ratio": sse_ratio,
            "server_warnings": log_lines,
        }),
        Some(handler_ratio.min(sse_ratio)),
        &headline,
    )
}
