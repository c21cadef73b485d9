//! Reporting: progress on stderr, verdicts and warnings on stdout, one JSON
//! line per run in bench/results.jsonl, and the generated summary table in
//! bench/RESULTS.md.

use std::fs;
use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Value, json};

use crate::scenario::ALL_SCENARIOS;
use crate::{BUSY_MACHINE_CORES, LOG_LINES_SHOWN};

/// Where results accumulate, one JSON object per run.
const RESULTS_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results.jsonl");

/// Where `all` regenerates the summary table, between these two markers.
pub const RESULTS_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md");
pub const SUMMARY_BEGIN: &str = "<!-- generated summary: begin (switchyard-bench all) -->";
pub const SUMMARY_END: &str = "<!-- generated summary: end -->";

/// A run in one line of the summary table in RESULTS.md.
#[derive(Debug, Serialize)]
pub struct Headline {
    pub target: String,
    pub measured: String,
    /// `met`, `MISSED`, `not judged: …` or `no target`.
    pub verdict: String,
    /// The most cores other processes kept busy in a measured window; none
    /// where the tool did not measure it (`micro` only reads criterion's
    /// estimates).
    pub busiest_other_cores: Option<f64>,
}

/// Appends one JSON line describing the run to bench/results.jsonl.
pub fn record(
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
pub fn record_line(
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

pub fn machine() -> Value {
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

pub fn rfc3339(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Judges a run against its target and prints `target {what} ({setting}):
/// {verdict}`: `met` or `MISSED` when the run is `comparable` with the
/// target, else `not judged: {conditions}`.
pub fn verdict(what: &str, setting: &str, comparable: bool, met: bool, conditions: &str) -> String {
    let verdict = match (comparable, met) {
        (false, _) => format!("not judged: {conditions}"),
        (true, true) => "met".into(),
        (true, false) => "MISSED".into(),
    };
    println!("target {what} ({setting}): {verdict}");
    verdict
}

/// Says so when other processes used a noticeable share of the machine
/// during a measured window (`busiest`: the most cores in any window).
pub fn warn_if_busy(busiest: f64) {
    if busiest > BUSY_MACHINE_CORES {
        println!(
            "WARNING: other processes kept up to {busiest:.2} cores busy during a measured window; \
             these numbers are skewed (see the `other CPU` column)"
        );
    }
}

pub fn report_log(lines: &[String]) {
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

/// Prints "label: done/total" to stderr once a second until dropped.
pub struct Progress(tokio::task::JoinHandle<()>);

impl Progress {
    pub fn start(
        label: String,
        total: Duration,
        counter: Arc<AtomicU64>,
        unit: &'static str,
    ) -> Self {
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

/// Rewrites the generated summary table in RESULTS.md from the newest record
/// of each scenario in results.jsonl; the text outside the markers is kept.
pub fn write_summary() -> Result<()> {
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
pub fn summary_table(records: &[Value]) -> String {
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
