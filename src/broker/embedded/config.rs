//! The embedded log's settings: `--data-dir`, `--fsync` and
//! `--fsync-interval`, the `data_dir` key and the `[embedded]` table of
//! switchyard.toml, their defaults, and how they resolve.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::problem::Problems;

/// The backend's name in `--broker` and `broker = "…"`.
pub const NAME: &str = "embedded";
/// Where the log lives, unless told.
pub const DEFAULT_DATA_DIR: &str = "data";
/// When appends are durable, unless told (see [`FsyncPolicy`]).
pub const DEFAULT_FSYNC: &str = "always";
/// The fsync period in interval mode, unless told.
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_millis(10);

/// When appends become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before answering: an acknowledged event survives power loss.
    Always,
    /// Answer after the write and fsync every interval: an acknowledged
    /// event survives a process crash but not a power loss within it.
    Interval(Duration),
}

#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
}

/// The embedded log's flags (and their `SWITCHYARD_*` variables).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct EmbeddedFlags {
    /// Where the embedded broker keeps its log [default: ./data]
    #[arg(long, env = "SWITCHYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// When appends are durable: "always" (fsync before answering) or "interval" [default: always]
    #[arg(long, env = "SWITCHYARD_FSYNC")]
    pub fsync: Option<String>,
    /// fsync period in interval mode, e.g. "10ms" [default: 10ms]
    #[arg(long, env = "SWITCHYARD_FSYNC_INTERVAL")]
    pub fsync_interval: Option<String>,
}

/// The `[embedded]` table of switchyard.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSection {
    pub fsync: Option<String>,
    pub fsync_interval: Option<String>,
}

/// The settings from `flags`, else the file (`data_dir`, a top-level key
/// of switchyard.toml, and `section`), else the defaults.
pub fn resolve(
    flags: &EmbeddedFlags,
    data_dir: Option<PathBuf>,
    section: EmbeddedSection,
    problems: &mut Problems,
) -> EmbeddedConfig {
    let fsync = flags.fsync.as_deref().or(section.fsync.as_deref());
    let interval = flags
        .fsync_interval
        .as_deref()
        .or(section.fsync_interval.as_deref());
    let interval_mode = problems.one_of(
        "embedded.fsync",
        fsync.unwrap_or(DEFAULT_FSYNC),
        &[("always", false), ("interval", true)],
    );
    let fsync = if interval_mode == Some(true) {
        FsyncPolicy::Interval(problems.duration(
            "embedded.fsync_interval",
            interval,
            DEFAULT_FSYNC_INTERVAL,
        ))
    } else {
        FsyncPolicy::Always
    };
    EmbeddedConfig {
        data_dir: flags
            .data_dir
            .clone()
            .or(data_dir)
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
        fsync,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let mut problems = Problems::new(Path::new("s.toml"));
        let flags = EmbeddedFlags {
            fsync_interval: Some("5ms".into()),
            ..Default::default()
        };
        let section = EmbeddedSection {
            fsync: Some("interval".into()),
            fsync_interval: Some("1s".into()),
        };
        let config = resolve(&flags, Some("d".into()), section, &mut problems);
        assert_eq!(
            config.fsync,
            FsyncPolicy::Interval(Duration::from_millis(5))
        );
        assert_eq!(config.data_dir, Path::new("d"));
        assert!(problems.finish(()).is_ok());
    }
}
