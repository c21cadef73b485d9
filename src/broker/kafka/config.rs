//! The kafka backend's settings: `--kafka-brokers`, `--kafka-option` and
//! the `[kafka]` table of switchyard.toml, their defaults, and how they
//! resolve.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::problem::Problems;

/// The backend's name in `--broker` and `broker = "…"`.
pub const NAME: &str = "kafka";
/// The cluster's bootstrap servers, unless told.
pub const DEFAULT_BOOTSTRAP_SERVERS: &str = "127.0.0.1:9092";
/// Replication factor of the topics Switchyard creates, unless told.
pub const DEFAULT_REPLICATION_FACTOR: i32 = 1;

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// Replication factor of topics Switchyard creates.
    pub replication_factor: i32,
    /// Extra librdkafka properties (TLS, SASL, …), passed through as given.
    pub options: Vec<(String, String)>,
}

/// The kafka backend's flags (and their `SWITCHYARD_*` variables).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct KafkaFlags {
    /// Kafka bootstrap servers for broker = kafka [default: 127.0.0.1:9092]
    #[arg(long, env = "SWITCHYARD_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// A librdkafka property for broker = kafka, e.g. sasl.mechanism=PLAIN;
    /// repeat the flag (or separate with commas in the env var); overrides [kafka.options]
    #[arg(
        long = "kafka-option",
        value_name = "KEY=VALUE",
        env = "SWITCHYARD_KAFKA_OPTIONS",
        value_delimiter = ','
    )]
    pub kafka_options: Vec<String>,
}

/// The `[kafka]` table of switchyard.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    pub bootstrap_servers: Option<String>,
    pub replication_factor: Option<i32>,
    /// librdkafka properties passed through (TLS, SASL, …).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// The settings from `flags`, else `section`, else the defaults; the
/// flags' properties override the file's one by one.
pub fn resolve(flags: &KafkaFlags, section: KafkaSection, problems: &mut Problems) -> KafkaConfig {
    let mut options = section.options;
    for option in &flags.kafka_options {
        match option.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                options.insert(key.trim().to_owned(), value.trim().to_owned());
            }
            _ => problems.problem(
                "--kafka-option",
                format!("{option:?} is not KEY=VALUE (e.g. sasl.mechanism=PLAIN)"),
            ),
        }
    }
    KafkaConfig {
        bootstrap_servers: flags
            .kafka_brokers
            .clone()
            .or(section.bootstrap_servers)
            .unwrap_or_else(|| DEFAULT_BOOTSTRAP_SERVERS.into()),
        replication_factor: section
            .replication_factor
            .unwrap_or(DEFAULT_REPLICATION_FACTOR),
        options: options.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn flag_options_override_the_file_and_must_be_key_value() {
        let mut problems = Problems::new(Path::new("s.toml"));
        let flags = KafkaFlags {
            kafka_options: vec!["acks = 1".into(), "nonsense".into()],
            ..Default::default()
        };
        let section = KafkaSection {
            options: [("acks".to_owned(), "all".to_owned())].into(),
            ..Default::default()
        };
        let config = resolve(&flags, section, &mut problems);
        assert_eq!(config.options, [("acks".to_owned(), "1".to_owned())]);
        assert_eq!(config.bootstrap_servers, DEFAULT_BOOTSTRAP_SERVERS);
        let found = problems.finish(()).unwrap_err();
        assert_eq!(found[0].key, "--kafka-option");
    }
}
