//! The broker's share of the server's configuration: `--broker` (which
//! backend runs) and every backend's flags and keys, listed once. Each
//! backend owns its settings in its folder (`broker/<name>/config.rs`: its
//! flags, its `[<name>]` table of switchyard.toml, its defaults and its
//! `resolve`); this module gathers them, so that `config.rs` names none.
//!
//! A backend's flags and table are always accepted, even in a build without
//! its cargo feature; only the chosen backend's settings are resolved.

use std::path::PathBuf;

use serde::Deserialize;

use super::{BrokerConfig, embedded, kafka, nats, redis};
use crate::problem::Problems;

/// The backend that runs unless told.
pub const DEFAULT_BROKER: &str = embedded::config::NAME;

/// Every backend's name, and whether this build has its client (its cargo
/// feature).
const BACKENDS: [(&str, bool); 4] = [
    (embedded::config::NAME, true),
    (redis::config::NAME, cfg!(feature = "redis")),
    (nats::config::NAME, cfg!(feature = "nats")),
    (kafka::config::NAME, cfg!(feature = "kafka")),
];

/// The largest event any backend is asked to store: the embedded log's
/// record limit, which every backend keeps to so that events move freely
/// between them.
pub const MAX_EVENT_BYTES: usize = embedded::MAX_PAYLOAD_BYTES;

/// File descriptors the broker may keep open besides one per partition
/// (the embedded log's cache of sealed segment files).
pub const FILES_KEPT_OPEN: usize = embedded::SEGMENT_FILES_OPEN;

/// The broker's flags (and their `SWITCHYARD_*` variables), flattened into
/// `switchyard serve`'s.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct BrokerFlags {
    /// Broker backend: embedded, or redis, nats, kafka (each when built with its cargo feature) [default: embedded]
    #[arg(long, env = "SWITCHYARD_BROKER")]
    pub broker: Option<String>,
    #[command(flatten)]
    pub embedded: embedded::config::EmbeddedFlags,
    #[command(flatten)]
    pub redis: redis::config::RedisFlags,
    #[command(flatten)]
    pub nats: nats::config::NatsFlags,
    #[command(flatten)]
    pub kafka: kafka::config::KafkaFlags,
}

/// The broker's keys of switchyard.toml: `broker`, the embedded log's
/// `data_dir` (a top-level key, where it has always been) and each
/// backend's table. The server's own keys are the rest of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerFile {
    pub broker: Option<String>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub embedded: embedded::config::EmbeddedSection,
    #[serde(default)]
    pub redis: redis::config::RedisConfig,
    #[serde(default)]
    pub nats: nats::config::NatsConfig,
    #[serde(default)]
    pub kafka: kafka::config::KafkaSection,
}

/// The backend that `flags` or the file name, with its settings resolved;
/// problems are reported under the file's keys.
pub fn resolve(flags: &BrokerFlags, file: BrokerFile, problems: &mut Problems) -> BrokerConfig {
    let name = flags.broker.as_deref().or(file.broker.as_deref());
    let log = |problems: &mut Problems| {
        BrokerConfig::Embedded(embedded::config::resolve(
            &flags.embedded,
            file.data_dir,
            file.embedded,
            problems,
        ))
    };
    match name.unwrap_or(DEFAULT_BROKER) {
        embedded::config::NAME => log(problems),
        #[cfg(feature = "redis")]
        redis::config::NAME => {
            BrokerConfig::Redis(redis::config::resolve(&flags.redis, file.redis, problems))
        }
        #[cfg(feature = "nats")]
        nats::config::NAME => {
            BrokerConfig::Nats(nats::config::resolve(&flags.nats, file.nats, problems))
        }
        #[cfg(feature = "kafka")]
        kafka::config::NAME => {
            BrokerConfig::Kafka(kafka::config::resolve(&flags.kafka, file.kafka, problems))
        }
        other => {
            let built: Vec<&str> = BACKENDS
                .iter()
                .filter(|(_, built)| *built)
                .map(|(name, _)| *name)
                .collect();
            problems.problem(
                "broker",
                format!(
                    "{other:?} is not a broker this build supports ({}); external backends need their cargo feature, e.g. --features redis",
                    built.join(", ")
                ),
            );
            log(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn resolved(broker: &str) -> Result<BrokerConfig, Vec<crate::problem::ConfigProblem>> {
        let mut problems = Problems::new(Path::new("s.toml"));
        let flags = BrokerFlags {
            broker: Some(broker.into()),
            ..Default::default()
        };
        let config = resolve(&flags, BrokerFile::default(), &mut problems);
        problems.finish(config)
    }

    #[test]
    fn a_backends_problems_name_its_keys() {
        let mut problems = Problems::new(Path::new("s.toml"));
        let flags = BrokerFlags {
            embedded: embedded::config::EmbeddedFlags {
                fsync: Some("sometimes".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        resolve(&flags, BrokerFile::default(), &mut problems);
        let problems = problems.finish(()).unwrap_err();
        assert_eq!(problems[0].key, "embedded.fsync");
    }

    #[test]
    fn help_states_each_backends_defaults() {
        use clap::Args;

        use crate::problem::{format_duration, stated_default};
        let command = BrokerFlags::augment_args(clap::Command::new("t"));
        let stated = |long| stated_default(&command, long);
        let defaults = [
            ("broker", DEFAULT_BROKER.to_owned()),
            (
                "data-dir",
                format!("./{}", embedded::config::DEFAULT_DATA_DIR),
            ),
            ("fsync", embedded::config::DEFAULT_FSYNC.to_owned()),
            (
                "fsync-interval",
                format_duration(embedded::config::DEFAULT_FSYNC_INTERVAL),
            ),
            ("redis-url", redis::config::DEFAULT_URL.to_owned()),
            ("nats-url", nats::config::DEFAULT_URL.to_owned()),
            (
                "kafka-brokers",
                kafka::config::DEFAULT_BOOTSTRAP_SERVERS.to_owned(),
            ),
        ];
        for (long, default) in defaults {
            assert_eq!(stated(long), Some(default), "--{long}");
        }
    }

    #[test]
    fn every_backend_this_build_has_can_be_chosen_and_no_other() {
        for (name, built) in BACKENDS {
            assert_eq!(resolved(name).is_ok(), built, "{name}");
        }
        let problems = resolved("rabbitmq").unwrap_err();
        assert_eq!(problems[0].key, "broker");
        assert!(
            problems[0].reason.contains("need their cargo feature"),
            "{}",
            problems[0].reason
        );
    }
}
