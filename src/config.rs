//! Server configuration: `switchyard.toml` (optional), overridden by
//! command-line flags and `SWITCHYARD_*` environment variables, validated
//! into [`Config`] in one step at startup.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::broker::BrokerConfig;
use crate::broker::settings::{self, BrokerFile, BrokerFlags};
use crate::problem::{ConfigProblem, Problems, Size, files};

/// The config file read when `--config` names none, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "switchyard.toml";
/// The address served, unless told.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Where topic files are read from, unless told.
pub const DEFAULT_TOPICS_DIR: &str = "topics";
/// Where handler files are read from, unless told.
pub const DEFAULT_HANDLERS_DIR: &str = "handlers";
/// Largest single event (and single-event request body), unless told.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Largest batch request body, unless told (never below the event limit).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Interval of SSE heartbeat comments, unless told.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// Time a client has to send a request's headers (and an idle keep-alive
/// connection to send the next request) before the connection is closed.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are accepted and closed at once. The
/// default is this or, when the process may open fewer files, what is left
/// after the descriptors kept for the log and outbound calls.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Descriptors kept out of reach of connections: the broker's own (the
/// log's cached segment files), partition directories, handlers' outbound
/// connections.
pub const RESERVED_FILES: usize = settings::FILES_KEPT_OPEN + 1024;
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
    /// This process's name among a group's processes (`--instance`).
    pub instance: Option<String>,
}

/// The file form: the server's keys and the broker's ([`BrokerFile`]).
#[derive(Debug, Default)]
pub struct FileConfig {
    pub server: ServerFile,
    pub broker: BrokerFile,
}

impl FileConfig {
    /// Parses `text`, the contents of `path`; keys that neither the server
    /// nor the broker takes are refused.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Vec<ConfigProblem>> {
        let (broker, server) = files::parse_split(path, text)?;
        Ok(Self { server, broker })
    }
}

/// The server's keys of switchyard.toml: every one optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Option<String>,
    pub topics_dir: Option<PathBuf>,
    pub handlers_dir: Option<PathBuf>,
    pub max_event_bytes: Option<Size>,
    pub max_batch_bytes: Option<Size>,
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
    pub group_session: Option<String>,
    pub instance: Option<String>,
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
    /// Directory of topic definitions [default: ./topics]
    #[arg(long, env = "SWITCHYARD_TOPICS_DIR")]
    pub topics_dir: Option<PathBuf>,
    /// Directory of handler definitions [default: ./handlers]
    #[arg(long, env = "SWITCHYARD_HANDLERS_DIR")]
    pub handlers_dir: Option<PathBuf>,
    // `--broker` and each backend's flags (`broker/<name>/config.rs`).
    #[command(flatten)]
    pub broker: BrokerFlags,
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
    /// With several Switchyard processes on one broker: how long a process
    /// that stopped (killed, cut off) keeps its share of each consumer
    /// group's partitions before the others take them [default: 10s]
    #[arg(long, env = "SWITCHYARD_GROUP_SESSION")]
    pub group_session: Option<String>,
    /// This process's name among the processes sharing a group, as
    /// `GET …/groups/{g}` lists them [default: host-pid-random]
    #[arg(long, env = "SWITCHYARD_INSTANCE")]
    pub instance: Option<String>,
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
        let mut problems = Problems::new(path);
        let (file, broker_file) = (file.server, file.broker);

        let listen_text = o
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_text.parse().unwrap_or_else(|_| {
            problems.problem(
                "listen",
                format!("{listen_text:?} is not an address like 127.0.0.1:8080"),
            );
            DEFAULT_LISTEN.parse().expect("the default address parses")
        });
        let topics_dir = o
            .topics_dir
            .clone()
            .or(file.topics_dir)
            .unwrap_or_else(|| DEFAULT_TOPICS_DIR.into());
        let handlers_dir = o
            .handlers_dir
            .clone()
            .or(file.handlers_dir)
            .unwrap_or_else(|| DEFAULT_HANDLERS_DIR.into());
        let broker = settings::resolve(&o.broker, broker_file, &mut problems);

        let mut bytes = |key: &str, flag: Option<&str>, from_file: Option<Size>, default: usize| {
            let given = match flag {
                Some(text) => problems.size(key, text),
                None => from_file.map(|size| size.0),
            };
            let value = given.map_or(default, |bytes| bytes as usize);
            if value == 0 || value > settings::MAX_EVENT_BYTES {
                problems.problem(
                    key,
                    format!(
                        "must be between 1 byte and {} bytes, got {value}",
                        settings::MAX_EVENT_BYTES
                    ),
                );
            }
            value
        };
        let max_event_bytes = bytes(
            "max_event_bytes",
            o.max_event_bytes.as_deref(),
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

        let mut duration =
            |key: &str, flag: &Option<String>, from_file: Option<String>, default| {
                let text = flag.clone().or(from_file);
                problems.duration(key, text.as_deref(), default)
            };
        let heartbeat = duration("heartbeat", &o.heartbeat, file.heartbeat, DEFAULT_HEARTBEAT);
        let header_timeout = duration(
            "header_timeout",
            &o.header_timeout,
            file.header_timeout,
            DEFAULT_HEADER_TIMEOUT,
        );
        let shutdown_grace = duration(
            "shutdown_grace",
            &o.shutdown_grace,
            file.shutdown_grace,
            DEFAULT_SHUTDOWN_GRACE,
        );
        let group_idle = duration(
            "group_idle",
            &o.group_idle,
            file.group_idle,
            DEFAULT_GROUP_IDLE,
        );
        let group_session = duration(
            "group_session",
            &o.group_session,
            file.group_session,
            crate::broker::membership::DEFAULT_SESSION,
        );
        if group_session < std::time::Duration::from_millis(300) {
            problems.problem("group_session", "must be at least 300ms");
        }
        let instance = o
            .instance
            .clone()
            .or(file.instance)
            .filter(|i| !i.trim().is_empty());
        if let Some(name) = &instance
            && crate::group::check_member(name).is_err()
        {
            problems.problem("instance", "use 1 to 64 letters, digits, '.', '_' and '-'");
        }
        let max_groups_per_topic = o
            .max_groups_per_topic
            .or(file.max_groups_per_topic)
            .unwrap_or(DEFAULT_MAX_GROUPS_PER_TOPIC);
        if max_groups_per_topic == 0 {
            problems.problem("max_groups_per_topic", "must be at least 1");
        }
        let max_connections = o.max_connections.or(file.max_connections);
        if max_connections == Some(0) {
            problems.problem("max_connections", "must be at least 1");
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
            problems.problem(
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
                problems.problem(
                    "cors_origins",
                    format!(
                        "{origin:?} is not an origin like https://dash.example.com (no wildcards: credentials are allowed)"
                    ),
                );
            }
        }
        let metrics_open = o.metrics_open || file.metrics_open.unwrap_or(false);

        problems.finish(Self {
            listen,
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
                session: group_session,
            },
            instance,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, Vec<ConfigProblem>> {
    let text = files::read_text(path).map_err(|problem| vec![problem])?;
    FileConfig::parse(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::{format_duration, stated_default};

    #[test]
    fn flags_win_over_file_and_problems_name_the_key() {
        let file = FileConfig::parse(
            Path::new("s.toml"),
            "listen = \"127.0.0.1:9000\"\nheartbeat = \"2s\"",
        )
        .unwrap();
        let overrides = Overrides {
            listen: Some("127.0.0.1:9100".into()),
            ..Default::default()
        };
        let config = Config::resolve(Path::new("s.toml"), file, &overrides).unwrap();
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.heartbeat, Duration::from_secs(2));

        // A broker's problem (here `--broker`'s) is reported with the rest;
        // each backend's own keys are checked beside it (broker::settings).
        let overrides = Overrides {
            broker: BrokerFlags {
                broker: Some("carrier-pigeon".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let problems =
            Config::resolve(Path::new("s.toml"), FileConfig::default(), &overrides).unwrap_err();
        assert_eq!(problems[0].key, "broker");
    }

    #[test]
    fn the_file_takes_the_server_and_the_broker_keys_and_no_others() {
        let path = Path::new("s.toml");
        let file =
            FileConfig::parse(path, "listen = \"127.0.0.1:9000\"\nbroker = \"x\"\n").unwrap();
        assert_eq!(file.server.listen.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(file.broker.broker.as_deref(), Some("x"));
        let problems = FileConfig::parse(path, "brokr = \"x\"\n").unwrap_err();
        assert_eq!(problems[0].key, "brokr");
        assert!(problems[0].reason.contains("`broker`"), "{}", problems[0]);
        assert!(problems[0].reason.contains("`listen`"), "{}", problems[0]);
    }

    #[test]
    fn help_states_the_defaults() {
        use clap::Args;
        let command = Overrides::augment_args(clap::Command::new("t"));
        let stated = |long| stated_default(&command, long);
        assert_eq!(stated("listen").as_deref(), Some(DEFAULT_LISTEN));
        assert_eq!(
            stated("topics-dir"),
            Some(format!("./{DEFAULT_TOPICS_DIR}"))
        );
        assert_eq!(
            stated("handlers-dir"),
            Some(format!("./{DEFAULT_HANDLERS_DIR}"))
        );
        assert_eq!(stated("broker").as_deref(), Some(settings::DEFAULT_BROKER));
        assert_eq!(stated("max-event-bytes").as_deref(), Some("1MiB"));
        assert_eq!(
            crate::problem::parse_size("1MiB"),
            Ok(DEFAULT_MAX_EVENT_BYTES as u64)
        );
        for (long, default) in [
            ("heartbeat", DEFAULT_HEARTBEAT),
            ("header-timeout", DEFAULT_HEADER_TIMEOUT),
            ("shutdown-grace", DEFAULT_SHUTDOWN_GRACE),
            ("group-idle", DEFAULT_GROUP_IDLE),
        ] {
            assert_eq!(stated(long), Some(format_duration(default)), "{long}");
        }
        assert_eq!(
            stated("max-groups-per-topic"),
            Some(DEFAULT_MAX_GROUPS_PER_TOPIC.to_string())
        );
        assert!(
            stated("max-connections")
                .is_some_and(|text| text.starts_with(&DEFAULT_MAX_CONNECTIONS.to_string())),
        );
    }
}
