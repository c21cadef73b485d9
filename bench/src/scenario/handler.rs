//! `handler`: a handler's delivery rate to an in-process sink against the
//! same requests from a plain client loop, before and after.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::bare::{BareServer, Hits};
use crate::cli::{HandlerParams, ServerArgs};
use crate::load::{Load, event_id, http_client, publish_body, webhook_body};
use crate::report::{Headline, Progress, record, report_log, verdict, warn_if_busy};
use crate::server::{Setup, Switchyard};
use crate::stats::{median, mib};
use crate::usage::{CpuSplit, CpuWindow};
use crate::{
    DEAD_LETTER_TOPIC, ERROR_BACKOFF, HANDLER_CONCURRENCY, HANDLER_NAME, HANDLER_TARGET_RATIO,
    PREPUBLISH_TIMEOUT, REQUEST_TIMEOUT, RESULTS_TOPIC, SINK_PATH, SINK_POLL, TOPIC,
};

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
    pub fn other_cores(&self) -> f64 {
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
pub(crate) async fn send_all<F>(
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

pub async fn handler_scenario(params: &HandlerParams, server_args: &ServerArgs) -> Result<()> {
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
    let server = server.restart_with_handler(&handler_definition(&sink_url))?;
    let pid = server.pid();
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
    let verdict = verdict(
        &format!("handler ≥ {HANDLER_TARGET_RATIO}× a plain client loop"),
        "64 in flight",
        !params.quick && complete && params.fsync == "always",
        ratio >= HANDLER_TARGET_RATIO,
        "the target needs every event delivered with fsync always, without --quick",
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
