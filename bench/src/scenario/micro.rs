//! `micro`: records the estimates that the criterion micro-benchmarks
//! (`cargo bench --all-features --bench micro` in bench/,
//! bench/benches/micro.rs) left in
//! target/criterion, with each benchmark's ratio to its group's baseline.
//! It runs nothing itself.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::report::{Headline, record, rfc3339};
use crate::server::{newest_modification, repository};

/// A group of bench/benches/micro.rs: its baseline and the benchmarks compared with
/// it, each named as criterion names it (`group/benchmark`).
struct MicroGroup {
    baseline: &'static str,
    measured: &'static [&'static str],
}

/// Every benchmark of bench/benches/micro.rs. Each ratio is a benchmark's mean over
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
/// configured sample size (20 in bench/benches/micro.rs, at least 10).
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
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repository().join("target"), PathBuf::from)
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
    pub fn read(dir: &Path, id: &'static str) -> Result<Option<Self>> {
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
    pub fn name(&self) -> &'static str {
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
    pub fn read(dir: &Path) -> Result<std::result::Result<Self, Vec<&'static str>>> {
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
        let manifest_dir = repository();
        let newest_source = [
            manifest_dir.join("src"),
            manifest_dir.join("bench/benches/micro.rs"),
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

    pub fn print(&self) {
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
                    "WARNING: {} and {} were measured {:.0} s apart, in different runs; rerun `cargo bench --all-features --bench micro` in bench/",
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
                "WARNING: some estimates are older than the sources (src/, bench/benches/micro.rs, Cargo.toml); rerun `cargo bench --all-features --bench micro` in bench/"
            );
        }
    }

    /// The record's `params` and `results`.
    pub fn params(&self) -> Value {
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
pub fn micro_scenario(dir: &Path, required: bool) -> Result<()> {
    let run = match MicroRun::read(dir)? {
        Ok(run) => run,
        Err(missing) => {
            let what = if missing.len() == micro_ids().count() {
                "no criterion estimates".to_owned()
            } else {
                format!("no criterion estimates for {}", missing.join(", "))
            };
            let message = format!(
                "{what} in {}; in bench/, run `cargo bench --all-features --bench micro` (or scripts/bench) first",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{SUMMARY_BEGIN, SUMMARY_END, record_line, summary_table};

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

    /// Every benchmark of bench/benches/micro.rs: baselines at `base` ns, the others
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
        let dir = tempfile::tempdir().unwrap();
        let missing = MicroRun::read(dir.path()).unwrap().unwrap_err();
        assert_eq!(missing.len(), 11);
        let err = micro_scenario(dir.path(), true).unwrap_err().to_string();
        assert!(err.starts_with("no criterion estimates in "), "{err}");
        assert!(
            err.contains("run `cargo bench --all-features --bench micro` (or scripts/bench)"),
            "{err}"
        );
        // As `all` runs it: skipped, not failed, nothing recorded.
        micro_scenario(dir.path(), false).unwrap();

        write_estimate(dir.path(), "event/parse", 6000.0, 20);
        let missing = MicroRun::read(dir.path()).unwrap().unwrap_err();
        assert_eq!(missing.len(), 10);
        let err = micro_scenario(dir.path(), true).unwrap_err().to_string();
        assert!(
            err.starts_with("no criterion estimates for event/parse_validate, webhook_verify/"),
            "{err}"
        );
    }

    #[test]
    fn micro_record_has_times_ratios_and_a_summary_row() {
        let dir = tempfile::tempdir().unwrap();
        write_all(dir.path(), 10_000.0, 20);
        let run = MicroRun::read(dir.path()).unwrap().unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        write_all(dir.path(), 800.0, CRITERION_QUICK_SAMPLES);
        let run = MicroRun::read(dir.path()).unwrap().unwrap();
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
