//! Two sides' publish rounds compared (the measured side against its
//! baseline, medians and round by round), printed, judged against a target
//! and recorded: the report of every publish-shaped scenario (`publish`,
//! `webhook`, `auth`), which differ only in the words of a `Report`.

use anyhow::Result;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::PUBLISH_TARGET_CONNECTIONS;
use crate::cli::PublishParams;
use crate::load::Round;
use crate::report::{Headline, record, report_log, verdict, warn_if_busy};
use crate::stats::{Percentiles, median};
use crate::usage::CpuSplit;

/// What a publish-shaped scenario says about its run; the rest of its
/// report is the same for all of them (`Comparison::report`).
pub struct Report {
    /// The scenario: the record's name and the settings line's first word.
    pub scenario: &'static str,
    /// What each request carried, for the settings line.
    pub sent: String,
    /// Lines printed between the settings and the table of rounds.
    pub notes: Vec<String>,
    /// Lines printed after the table.
    pub findings: Vec<String>,
    /// The target: the measured side at least this many times its base…
    pub target: f64,
    /// …and this condition, in these words (see `publish_verdict`).
    pub condition: Option<(bool, &'static str)>,
    /// The target in the verdict line and in the summary table.
    pub verdict_text: String,
    pub headline_target: String,
    /// Added to the summary's measured text.
    pub measured_extra: String,
    /// The record's keys for the base side's and the measured side's medians.
    pub keys: (&'static str, &'static str),
    /// More entries for the record's results.
    pub results: Map<String, Value>,
}

/// The per-server medians over rounds.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub requests_per_s: f64,
    pub latency_ms: Percentiles,
    pub errors: u64,
    pub cpu: CpuSplit,
    pub server_cpu_us_per_request: Option<f64>,
    pub server_peak_rss_mib: Option<f64>,
}

impl Summary {
    pub fn of(rounds: &[&Round]) -> Self {
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
    let verdict = verdict(
        what,
        "64 connections, fsync always",
        comparable && !params.quick,
        comparison.ratio >= target,
        &conditions,
    );
    (verdict, busiest)
}

/// Two sides' rounds compared: the side measured against the baseline.
pub struct Comparison {
    pub base_name: &'static str,
    pub measured_name: &'static str,
    pub base: Summary,
    pub measured: Summary,
    /// Measured/base of the medians.
    pub ratio: f64,
    /// Each measured round against the base round just before it: the
    /// spread shows how far to trust the median.
    pub round_ratios: Vec<f64>,
}

impl Comparison {
    pub fn of(rounds: &[Round], base_name: &'static str, measured_name: &'static str) -> Self {
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
    pub fn measured_text(&self) -> String {
        format!(
            "{:.2}× ({:.0} vs {:.0} req/s, medians; rounds {})",
            self.ratio,
            self.measured.requests_per_s,
            self.base.requests_per_s,
            self.spread()
        )
    }

    /// Prints the run (its settings, `report`'s notes, the table of rounds
    /// and medians, the ratios, `report`'s findings), judges it against the
    /// target (`publish_verdict`), shows the server's warnings, and appends
    /// the record: `report`'s results after the binary, where the log
    /// lived, every round, each side's medians, the round ratios and the
    /// server's warnings.
    pub fn report(
        &self,
        report: Report,
        params: &PublishParams,
        rounds: &[Round],
        binary: Value,
        data_fs: &str,
        log_lines: &[String],
    ) -> Result<()> {
        println!();
        println!(
            "{}: {} connections, {} B {}, {}s measured after {}s warm-up, {} partitions, fsync {}, log on {data_fs}",
            report.scenario,
            params.connections,
            params.body_bytes,
            report.sent,
            params.duration_s,
            params.warmup_s,
            params.partitions,
            params.fsync
        );
        for note in &report.notes {
            println!("{note}");
        }
        self.print(rounds);
        for finding in &report.findings {
            println!("{finding}");
        }
        let (verdict, busiest) = publish_verdict(
            params,
            rounds,
            self,
            report.target,
            report.condition,
            &report.verdict_text,
        );
        report_log(log_lines);

        let headline = Headline {
            target: report.headline_target,
            measured: format!("{}{}", self.measured_text(), report.measured_extra),
            verdict,
            busiest_other_cores: Some(busiest),
        };
        let (base_key, measured_key) = report.keys;
        let mut results = Map::new();
        results.insert("server_binary".into(), binary);
        results.insert("data_filesystem".into(), json!(data_fs));
        results.insert("rounds".into(), json!(rounds));
        results.insert(base_key.into(), json!(self.base));
        results.insert(measured_key.into(), json!(self.measured));
        results.insert("round_ratios".into(), json!(self.round_ratios));
        results.insert("server_warnings".into(), json!(log_lines));
        results.extend(report.results);
        record(
            report.scenario,
            json!(params),
            Value::Object(results),
            Some(self.ratio),
            &headline,
        )
    }

    /// The table of rounds and medians, the ratio and the server's CPU per request.
    fn print(&self, rounds: &[Round]) {
        println!();
        print_rounds(rounds);
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

/// The table of every round: which side and round, req/s, latency
/// percentiles, errors, CPU in the measured window and the server's peak RSS.
pub fn print_rounds(rounds: &[Round]) {
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
