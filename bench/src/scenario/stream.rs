//! `latency` and `fanout`: publish→SSE delivery with many subscribers, its
//! completeness, and the server's memory and CPU per subscriber.

use anyhow::{Result, bail};
use serde_json::json;

use crate::cli::{ServerArgs, StreamParams};
use crate::report::{Headline, record, report_log, verdict, warn_if_busy};
use crate::server::{Setup, Switchyard};
use crate::sse::{StreamRun, run_stream};
use crate::stats::mib;
use crate::usage::CpuSplit;
use crate::{LATENCY_TARGET_P99_MS, LATENCY_TARGET_RATE, LATENCY_TARGET_SUBSCRIBERS, SETTLE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Latency,
    Fanout,
}

impl StreamKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Fanout => "fanout",
        }
    }
}

pub async fn stream_scenario(
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
        let verdict = verdict(
            &format!("publish→SSE p99 ≤ {LATENCY_TARGET_P99_MS} ms, nothing missing"),
            "1000 subscribers × 50 events/s",
            comparable,
            lag.p99 <= LATENCY_TARGET_P99_MS && missing == 0,
            "the target is for 1000 subscribers at 50 events/s, without --quick",
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
