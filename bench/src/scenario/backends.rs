//! `backends`: the `publish` load and a publish→SSE latency run against
//! switchyard on each backend in turn (embedded, redis, nats, kafka), each
//! external broker started by the test kit as the conformance tests start
//! it, and `redis-benchmark` on the same redis beside it.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::json;
use switchyard_testkit::{BrokerServer, KillOnDrop, Kind, on_path};

use crate::cli::{BackendsParams, ServerArgs, StreamParams};
use crate::compare::{Summary, print_rounds};
use crate::load::{Load, Round, drive_publish};
use crate::report::{Headline, record, warn_if_busy};
use crate::server::{Setup, Switchyard, temp_dir};
use crate::sse::{StreamRun, run_stream};
use crate::stats::{Percentiles, median};
use crate::usage::{CpuSplit, CpuWindow, ProcUsage};
use crate::{PUBLISH_BODY_BYTES, ROUND_PAUSE, TOPIC};

/// How long `redis-benchmark` may take to finish.
const NATIVE_BENCH_TIMEOUT: Duration = Duration::from_secs(120);
/// Requests `redis-benchmark` makes, from as many connections as the
/// switchyard client.
const NATIVE_BENCH_REQUESTS: u64 = 100_000;

/// The backends, in the order they run; the first is the baseline.
const BACKENDS: [&str; 4] = ["embedded", "redis", "nats", "kafka"];
/// SSE subscribers in each backend's latency run: few, so the broker's read
/// path, not the fan-out, sets the latency.
pub const BACKENDS_LATENCY_SUBSCRIBERS: usize = 10;

/// The external broker a backend needs (none for the embedded log).
fn broker_kind(backend: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|kind| kind.name() == backend)
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
    let out = temp_dir(None)?;
    let out_file = out.path().join("redis-benchmark.csv");
    let window = CpuWindow::start(None)?;
    let started = Instant::now();
    let mut child = KillOnDrop(
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
    pub fn of(round: u32, run: StreamRun, params: &StreamParams) -> Self {
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

pub async fn backends_scenario(
    all_params: &BackendsParams,
    server_args: &ServerArgs,
) -> Result<()> {
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
        if let Some(kind) = broker_kind(backend)
            && !kind.installed()
        {
            skipped.push((
                backend,
                format!("skipped: {} is not installed", kind.binary()),
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
                let broker = match broker_kind(backend) {
                    Some(kind) => Some(BrokerServer::start_in(
                        kind,
                        server_args.data_root.as_deref(),
                    )?),
                    None => None,
                };
                let mut args = server_args.clone();
                args.broker = broker
                    .as_ref()
                    .map_or_else(Vec::new, BrokerServer::serve_args);
                let server = Switchyard::start(&args, &Setup::default())?;
                data_fs = server.data_filesystem();
                let pid = server.pid();
                // The broker's CPU over the measured window, sampled on the
                // same clock as drive_publish's window.
                let broker_pid = broker.as_ref().map(BrokerServer::pid);
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
    print_rounds(&rounds);
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
