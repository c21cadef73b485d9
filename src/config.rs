//! Server configuration: `switchyard.toml` (optional), overridden by
//! command-line flags and `SWITCHYARD_*` environment variables, validated
//! into [`Config`] in one step at startup.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::broker::BrokerConfig;
use crate::broker::embedded::{EmbeddedConfig, FsyncPolicy, MAX_PAYLOAD_BYTES};
use crate::problem::ConfigProblem;

pub const DEFAULT_CONFIG_FILE: &str = "switchyard.toml";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// Time a client has to send a request's headers (and an idle keep-alive
/// connection to send the next request) before the connection is closed.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are accepted and closed at once. The
/// default is this or, when the process may open fewer files, what is left
/// after the descriptors kept for the log and outbound calls.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Descriptors kept out of reach of connections: the log's cached segment
/// files, partition directories, handlers' outbound connections.
pub const RESERVED_FILES: usize = crate::broker::embedded::SEGMENT_FILES_OPEN + 1024;
/// How long a shutdown waits for open requests and streams to finish.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A consumer group unused this long leaves memory.
pub const DEFAULT_GROUP_IDLE: Duration = Duration::from_secs(600);
/// Consumer groups loaded per topic at most.
pub const DEFAULT_MAX_GROUPS_PER_TOPIC: usize = 1000;

/// The validated configuration of `switchyard serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub topics_dir: PathBuf,
    pub handlers_dir: PathBuf,
    pub broker: BrokerConfig,
    /// Largest single event (its JSON form) accepted.
    pub max_event_bytes: usize,
    /// Largest publish request body (a batch) accepted.
    pub max_batch_bytes: usize,
    /// Interval of SSE heartbeat comments.
    pub heartbeat: Duration,
    /// Keys that bearer tokens are checked against; none: no tokens needed.
    pub keys: crate::auth::KeyConfig,
    /// Origins allowed cross-origin access (CORS), exactly as browsers send them.
    pub cors_origins: Vec<String>,
    /// `/metrics` without a token.
    pub metrics_open: bool,
    pub header_timeout: Duration,
    /// Connections served at once; `None`: derived from the open-file limit.
    pub max_connections: Option<usize>,
    pub shutdown_grace: Duration,
    pub groups: crate::group::GroupLimits,
}

/// The file form: every field optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub topics_dir: Option<PathBuf>,
    pub handlers_dir: Option<PathBuf>,
    pub broker: Option<String>,
    pub max_event_bytes: Option<bytesize::ByteSize>,
    pub max_batch_bytes: Option<bytesize::ByteSize>,
    pub heartbeat: Option<String>,
    pub jwt_secret: Option<String>,
    pub jwt_public_key: Option<PathBuf>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    #[serde(default)]
    pub cors_origins: Vec<String>,
    pub allow_anonymous: Option<bool>,
    pub metrics_open: Option<bool>,
    pub header_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub shutdown_grace: Option<String>,
    pub group_idle: Option<String>,
    pub max_groups_per_topic: Option<usize>,
    #[serde(default)]
    pub embedded: EmbeddedFileConfig,
    #[serde(default)]
    pub redis: RedisFileConfig,
    #[serde(default)]
    pub nats: NatsFileConfig,
    #[serde(default)]
    pub kafka: KafkaFileConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaFileConfig {
    pub bootstrap_servers: Option<String>,
    pub replication_factor: Option<i32>,
    /// librdkafka properties passed through (TLS, SASL, …).
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsFileConfig {
    pub url: Option<String>,
    pub prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFileConfig {
    pub url: Option<String>,
    pub prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedFileConfig {
    pub fsync: Option<String>,
    pub fsync_interval: Option<String>,
}

/// Values given on the command line or in the environment; they win over
/// the file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Config file [default: ./switchyard.toml when it exists]
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "SWITCHYARD_LISTEN")]
    pub listen: Option<String>,
    /// Where the embedded broker keeps its log [default: ./data]
    #[arg(long, env = "SWITCHYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Directory of topic definitions [default: ./topics]
    #[arg(long, env = "SWITCHYARD_TOPICS_DIR")]
    pub topics_dir: Option<PathBuf>,
    /// Directory of handler definitions [default: ./handlers]
    #[arg(long, env = "SWITCHYARD_HANDLERS_DIR")]
    pub handlers_dir: Option<PathBuf>,
    /// Broker backend: embedded, or redis, nats, kafka (each when built with its cargo feature) [default: embedded]
    #[arg(long, env = "SWITCHYARD_BROKER")]
    pub broker: Option<String>,
    /// Redis URL for broker = redis [default: redis://127.0.0.1:6379]
    #[arg(long, env = "SWITCHYARD_REDIS_URL")]
    pub redis_url: Option<String>,
    /// NATS URL for broker = nats [default: nats://127.0.0.1:4222]
    #[arg(long, env = "SWITCHYARD_NATS_URL")]
    pub nats_url: Option<String>,
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
    /// When appends are durable: "always" (fsync before answering) or "interval" [default: always]
    #[arg(long, env = "SWITCHYARD_FSYNC")]
    pub fsync: Option<String>,
    /// fsync period in interval mode, e.g. "10ms" [default: 10ms]
    #[arg(long, env = "SWITCHYARD_FSYNC_INTERVAL")]
    pub fsync_interval: Option<String>,
    /// Largest event accepted, e.g. "1MiB" [default: 1MiB]
    #[arg(long, env = "SWITCHYARD_MAX_EVENT_BYTES")]
    pub max_event_bytes: Option<String>,
    /// Interval of SSE heartbeat comments, e.g. "15s" [default: 15s]
    #[arg(long, env = "SWITCHYARD_HEARTBEAT")]
    pub heartbeat: Option<String>,
    /// HS256 secret that bearer tokens are signed with (at least 16 bytes);
    /// prefer the env var: flags show in the process list
    #[arg(long, env = "SWITCHYARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Public key that bearer tokens are signed with (RS256/ES256/EdDSA): a PEM file or a JWKS file
    #[arg(long, env = "SWITCHYARD_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Tokens must carry this issuer (iss)
    #[arg(long, env = "SWITCHYARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Tokens must carry this audience (aud)
    #[arg(long, env = "SWITCHYARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Origins allowed to call the API from a browser (CORS), comma-separated,
    /// e.g. https://dash.example.com
    #[arg(long, env = "SWITCHYARD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Serve a non-loopback address without any token key: everyone may do
    /// anything. Only for networks you trust
    #[arg(long, env = "SWITCHYARD_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
    /// Serve /metrics without a token
    #[arg(long, env = "SWITCHYARD_METRICS_OPEN")]
    pub metrics_open: bool,
    /// Time a client has to send request headers, and an idle connection to
    /// send its next request [default: 10s]
    #[arg(long, env = "SWITCHYARD_HEADER_TIMEOUT")]
    pub header_timeout: Option<String>,
    /// Connections served at once; more are closed at once [default: 10000,
    /// or fewer when the open-file limit leaves less room]
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// On SIGTERM, how long open requests and streams may take before their
    /// connections are closed [default: 10s]
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// A consumer group unused this long (and with no live lease) leaves
    /// memory; its committed cursor stays [default: 10m]
    #[arg(long, env = "SWITCHYARD_GROUP_IDLE")]
    pub group_idle: Option<String>,
    /// Consumer groups loaded per topic at most; more answer 429 [default: 1000]
    #[arg(long, env = "SWITCHYARD_MAX_GROUPS_PER_TOPIC")]
    pub max_groups_per_topic: Option<usize>,
}

impl Config {
    /// Reads the config file (when there is one) and applies `overrides`.
    pub fn load(overrides: &Overrides) -> Result<Self, Vec<ConfigProblem>> {
        let (file_path, file) = match &overrides.config {
            Some(path) => (path.clone(), Some(read_file(path)?)),
            None => {
                let path = PathBuf::from(DEFAULT_CONFIG_FILE);
                let file = if path.exists() {
                    Some(read_file(&path)?)
                } else {
                    None
                };
                (path, file)
            }
        };
        Self::resolve(&file_path, file.unwrap_or_default(), overrides)
    }

    fn resolve(path: &Path, file: FileConfig, o: &Overrides) -> Result<Self, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut problem =
            |key: &str, reason: String| problems.push(ConfigProblem::new(path, key, reason));

        let listen_text = o
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_text.parse().unwrap_or_else(|_| {
            problem(
                "listen",
                format!("{listen_text:?} is not an address like 127.0.0.1:8080"),
            );
            DEFAULT_LISTEN.parse().expect("the default address parses")
        });
        let data_dir = o
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| "data".into());
        let topics_dir = o
            .topics_dir
            .clone()
            .or(file.topics_dir)
            .unwrap_or_else(|| "topics".into());
        let handlers_dir = o
            .handlers_dir
            .clone()
            .or(file.handlers_dir)
            .unwrap_or_else(|| "handlers".into());

        let fsync_text = o
            .fsync
            .clone()
            .or(file.embedded.fsync)
            .unwrap_or_else(|| "always".into());
        let interval_text = o.fsync_interval.clone().or(file.embedded.fsync_interval);
        let fsync = match fsync_text.as_str() {
            "always" => FsyncPolicy::Always,
            "interval" => {
                let text = interval_text.unwrap_or_else(|| "10ms".into());
                match crate::problem::duration(&text, "10ms") {
                    Ok(d) => FsyncPolicy::Interval(d),
                    Err(reason) => {
                        problem("embedded.fsync_interval", reason);
                        FsyncPolicy::Always
                    }
                }
            }
            other => {
                problem(
                    "embedded.fsync",
                    format!("{other:?} is not \"always\" or \"interval\""),
                );
                FsyncPolicy::Always
            }
        };
        let redis_url = o.redis_url.clone().or(file.redis.url);
        let redis_prefix = file.redis.prefix;
        let nats_url = o.nats_url.clone().or(file.nats.url);
        let nats_prefix = file.nats.prefix;
        let kafka_brokers = o.kafka_brokers.clone().or(file.kafka.bootstrap_servers);
        let mut kafka_options = file.kafka.options;
        for option in &o.kafka_options {
            match option.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    kafka_options.insert(key.trim().to_owned(), value.trim().to_owned());
                }
                _ => problem(
                    "--kafka-option",
                    format!("{option:?} is not KEY=VALUE (e.g. sasl.mechanism=PLAIN)"),
                ),
            }
        }
        let kafka_file = (file.kafka.replication_factor, kafka_options);
        let broker_kind = o
            .broker
            .clone()
            .or(file.broker)
            .unwrap_or_else(|| "embedded".into());
        let embedded = BrokerConfig::Embedded(EmbeddedConfig {
            data_dir: data_dir.clone(),
            fsync,
        });
        let broker = match broker_kind.as_str() {
            "embedded" => embedded,
            #[cfg(feature = "redis")]
            "redis" => BrokerConfig::Redis(crate::broker::redis::RedisConfig {
                url: redis_url.unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
                prefix: redis_prefix.unwrap_or_else(|| "switchyard".into()),
            }),
            #[cfg(feature = "nats")]
            "nats" => BrokerConfig::Nats(crate::broker::nats::NatsConfig {
                url: nats_url.unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
                prefix: nats_prefix.unwrap_or_else(|| "switchyard".into()),
            }),
            #[cfg(feature = "kafka")]
            "kafka" => BrokerConfig::Kafka(crate::broker::kafka::KafkaConfig {
                bootstrap_servers: kafka_brokers.unwrap_or_else(|| "127.0.0.1:9092".into()),
                replication_factor: kafka_file.0.unwrap_or(1),
                options: kafka_file.1.into_iter().collect(),
            }),
            other => {
                let built: &[&str] = &[
                    "embedded",
                    #[cfg(feature = "redis")]
                    "redis",
                    #[cfg(feature = "nats")]
                    "nats",
                    #[cfg(feature = "kafka")]
                    "kafka",
                ];
                problem(
                    "broker",
                    format!(
                        "{other:?} is not a broker this build supports ({}); external backends need their cargo feature, e.g. --features redis",
                        built.join(", ")
                    ),
                );
                embedded
            }
        };
        #[cfg(not(feature = "redis"))]
        let _ = (redis_url, redis_prefix);
        #[cfg(not(feature = "nats"))]
        let _ = (nats_url, nats_prefix);
        #[cfg(not(feature = "kafka"))]
        let _ = (kafka_brokers, kafka_file);

        let mut bytes = |key: &str,
                         flag: Option<&String>,
                         from_file: Option<bytesize::ByteSize>,
                         default: usize| {
            let value = match flag {
                Some(text) => match text.parse::<bytesize::ByteSize>() {
                    Ok(size) => size.as_u64() as usize,
                    Err(_) => {
                        problem(key, format!("{text:?} is not a size like \"1MiB\""));
                        default
                    }
                },
                None => from_file.map_or(default, |size| size.as_u64() as usize),
            };
            if value == 0 || value > MAX_PAYLOAD_BYTES {
                problem(
                    key,
                    format!("must be between 1 byte and {MAX_PAYLOAD_BYTES} bytes, got {value}"),
                );
            }
            value
        };
        let max_event_bytes = bytes(
            "max_event_bytes",
            o.max_event_bytes.as_ref(),
            file.max_event_bytes,
            DEFAULT_MAX_EVENT_BYTES,
        );
        let max_batch_bytes = bytes(
            "max_batch_bytes",
            None,
            file.max_batch_bytes,
            DEFAULT_MAX_BATCH_BYTES,
        )
        .max(max_event_bytes);

        let mut duration = |key: &str, text: Option<String>, default: Duration| match text {
            None => default,
            Some(text) => crate::problem::duration(&text, "15s").unwrap_or_else(|reason| {
                problem(key, reason);
                default
            }),
        };
        let heartbeat = duration(
            "heartbeat",
            o.heartbeat.clone().or(file.heartbeat),
            DEFAULT_HEARTBEAT,
        );
        let header_timeout = duration(
            "header_timeout",
            o.header_timeout.clone().or(file.header_timeout),
            DEFAULT_HEADER_TIMEOUT,
        );
        let shutdown_grace = duration(
            "shutdown_grace",
            o.shutdown_grace.clone().or(file.shutdown_grace),
            DEFAULT_SHUTDOWN_GRACE,
        );
        let group_idle = duration(
            "group_idle",
            o.group_idle.clone().or(file.group_idle),
            DEFAULT_GROUP_IDLE,
        );
        let max_groups_per_topic = o
            .max_groups_per_topic
            .or(file.max_groups_per_topic)
            .unwrap_or(DEFAULT_MAX_GROUPS_PER_TOPIC);
        if max_groups_per_topic == 0 {
            problem("max_groups_per_topic", "must be at least 1".into());
        }
        let max_connections = o.max_connections.or(file.max_connections);
        if max_connections == Some(0) {
            problem("max_connections", "must be at least 1".into());
        }

        // An empty value (an unset variable in docker-compose) means none.
        let given = |text: Option<String>| text.filter(|t| !t.trim().is_empty());
        let keys = crate::auth::KeyConfig {
            secret: given(o.jwt_secret.clone().or(file.jwt_secret)),
            public_key: o
                .jwt_public_key
                .clone()
                .or(file.jwt_public_key)
                .filter(|p| !p.as_os_str().is_empty()),
            issuer: given(o.jwt_issuer.clone().or(file.jwt_issuer)),
            audience: given(o.jwt_audience.clone().or(file.jwt_audience)),
        };
        let allow_anonymous = o.allow_anonymous || file.allow_anonymous.unwrap_or(false);
        if !keys.is_set() && !listen.ip().is_loopback() && !allow_anonymous {
            problem(
                "listen",
                format!(
                    "{listen} is reachable from the network but no token key is configured: set SWITCHYARD_JWT_SECRET (or SWITCHYARD_JWT_PUBLIC_KEY), or start with --allow-anonymous to let anyone do anything"
                ),
            );
        }
        let cors_origins: Vec<String> = if o.cors_origins.is_empty() {
            file.cors_origins
        } else {
            o.cors_origins.clone()
        };
        let cors_origins: Vec<String> = cors_origins
            .into_iter()
            .map(|origin| origin.trim().trim_end_matches('/').to_owned())
            .filter(|origin| !origin.is_empty())
            .collect();
        for origin in &cors_origins {
            if origin == "*" || !(origin.starts_with("http://") || origin.starts_with("https://")) {
                problem(
                    "cors_origins",
                    format!(
                        "{origin:?} is not an origin like https://dash.example.com (no wildcards: credentials are allowed)"
                    ),
                );
            }
        }
        let metrics_open = o.metrics_open || file.metrics_open.unwrap_or(false);

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            listen,
            data_dir,
            topics_dir,
            handlers_dir,
            broker,
            max_event_bytes,
            max_batch_bytes,
            heartbeat,
            keys,
            cors_origins,
            metrics_open,
            header_timeout,
            max_connections,
            shutdown_grace,
            groups: crate::group::GroupLimits {
                idle: group_idle,
                max_per_topic: max_groups_per_topic,
            },
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, Vec<ConfigProblem>> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| vec![ConfigProblem::new(path, "", format!("cannot read: {err}"))])?;
    toml::from_str(&text)
        .map_err(|err| vec![ConfigProblem::new(path, "", err.message().to_owned())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_problems_name_the_key() {
        let file: FileConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\nheartbeat = \"2s\"").unwrap();
        let overrides = Overrides {
            listen: Some("127.0.0.1:9100".into()),
            ..Default::default()
        };
        let config = Config::resolve(Path::new("s.toml"), file, &overrides).unwrap();
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.heartbeat, Duration::from_secs(2));

        let overrides = Overrides {
            fsync: Some("sometimes".into()),
            ..Default::default()
        };
        let problems =
            Config::resolve(Path::new("s.toml"), FileConfig::default(), &overrides).unwrap_err();
        assert_eq!(problems[0].key, "embedded.fsync");
    }
}
