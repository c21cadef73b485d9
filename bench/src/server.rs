//! The switchyard server under test: its topics (and webhook source,
//! handler outputs, token secret) written into a fresh temporary directory,
//! the binary started there by the test kit (tests/kit) and killed when
//! dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use switchyard_testkit as kit;

use crate::cli::ServerArgs;
use crate::report::rfc3339;
use crate::usage::ProcUsage;
use crate::{
    DEAD_LETTER_TOPIC, EVENT_TYPE, HANDLER_NAME, HANDLERS_DIR, JWT_SECRET_ENV, LOG_LINES_SHOWN,
    RESULTS_TOPIC, SERVER_START_TIMEOUT, TOPIC, WEBHOOK_SECRET_ENV, WEBHOOK_SOURCE,
};

impl ServerArgs {
    /// The switchyard binary to run, which must exist.
    pub fn binary(&self) -> Result<PathBuf> {
        let binary = match &self.server {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .context("finding this program's path")?
                .with_file_name("switchyard"),
        };
        if !binary.is_file() {
            bail!(
                "the switchyard binary is not at {}; build it with `cargo build --release --bins` (or pass --server PATH)",
                binary.display()
            );
        }
        Ok(binary)
    }

    /// Where the binary is and when it was built; warns when the crate's
    /// sources are newer, since the results would then describe old code.
    pub fn describe_binary(&self) -> Result<Value> {
        let binary = self.binary()?;
        let built = fs::metadata(&binary)?.modified()?;
        let manifest_dir = repository();
        let newest_source = [manifest_dir.join("src"), manifest_dir.join("Cargo.toml")]
            .iter()
            .filter_map(|path| newest_modification(path))
            .max();
        let stale = newest_source.is_some_and(|newest| newest > built);
        if stale {
            eprintln!(
                "warning: {} is older than the sources in {}; rebuild with `cargo build --release --bins`",
                binary.display(),
                manifest_dir.display()
            );
        }
        Ok(json!({ "path": binary, "built": rfc3339(built), "older_than_sources": stale }))
    }
}

/// The repository this tool was built in: the server's sources (the
/// `switchyard` package), `bench/`, `target/`.
pub fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the repository")
}

/// The latest modification time of `path` or anything under it.
pub fn newest_modification(path: &Path) -> Option<SystemTime> {
    let metadata = fs::metadata(path).ok()?;
    let own = metadata.modified().ok();
    if !metadata.is_dir() {
        return own;
    }
    fs::read_dir(path)
        .ok()?
        .filter_map(|entry| newest_modification(&entry.ok()?.path()))
        .chain(own)
        .max()
}

/// What a scenario needs declared beyond the bench topic.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// Declare the webhook source `bench` on the bench topic, signed with
    /// this `whsec_…` secret.
    pub webhook_secret: Option<String>,
    /// Declare the handler's output topics.
    pub handler_outputs: bool,
    /// Start the server with this HS256 secret, so that it asks every
    /// publish for a bearer token.
    pub jwt_secret: Option<String>,
    /// Turn the bench topic's dedupe window off (`dedupe_window = "0"`).
    pub dedupe_off: bool,
    /// Export traces to this OTLP/HTTP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: Option<String>,
    /// Sample this share of new traces (the SDK's
    /// `parentbased_traceidratio` sampler); all of them when `None`.
    pub trace_sample_ratio: Option<f64>,
}

/// The real server, running as a child process (started by the test kit)
/// on a fresh data directory. Dropping it kills the process, then removes
/// the directory.
pub struct Switchyard {
    /// Declared first, so that it is killed before the directory goes.
    process: kit::Switchyard,
    dir: tempfile::TempDir,
}

impl Switchyard {
    pub fn start(args: &ServerArgs, setup: &Setup) -> Result<Self> {
        let dir = temp_dir(args.data_root.as_deref())?;
        let topics = dir.path().join("topics");
        fs::create_dir_all(&topics)?;
        fs::create_dir_all(dir.path().join(HANDLERS_DIR))?;
        let webhook = setup.webhook_secret.as_ref().map_or_else(String::new, |_| {
            format!(
                "\n[[webhooks]]\nsource = \"{WEBHOOK_SOURCE}\"\nscheme = \"standard-webhooks\"\n\
                 secrets_env = [\"{WEBHOOK_SECRET_ENV}\"]\ntype = {{ fixed = \"{EVENT_TYPE}\" }}\n"
            )
        });
        // Top-level keys go before the topic's tables.
        let dedupe = if setup.dedupe_off {
            "dedupe_window = \"0\"\n"
        } else {
            ""
        };
        write_topics(
            &topics,
            TOPIC,
            args.partitions,
            dedupe,
            &webhook,
            setup.handler_outputs,
        )?;
        // Its log is appended to, so a restart keeps the first run's warnings.
        let mut serve = kit::Serve::new(args.binary()?, dir.path())
            .rust_log("warn")
            .start_timeout(SERVER_START_TIMEOUT)
            .args(["--fsync", &args.fsync])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--topics-dir")
            .arg(topics)
            .arg("--handlers-dir")
            .arg(dir.path().join(HANDLERS_DIR))
            .args(&args.broker);
        if let Some(secret) = &setup.webhook_secret {
            serve = serve.env(WEBHOOK_SECRET_ENV, secret);
        }
        if let Some(secret) = &setup.jwt_secret {
            serve = serve.env(JWT_SECRET_ENV, secret);
        }
        if let Some(endpoint) = &setup.otlp_endpoint {
            serve = serve.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
        }
        if let Some(ratio) = setup.trace_sample_ratio {
            serve = serve
                .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
                .env("OTEL_TRACES_SAMPLER_ARG", ratio.to_string());
        }
        Ok(Self {
            process: serve.start()?,
            dir,
        })
    }

    /// Stops the server, adds a handler definition to its handlers directory
    /// and starts it again on the same data.
    pub fn restart_with_handler(mut self, definition: &str) -> Result<Self> {
        self.process.kill();
        let file = self
            .dir
            .path()
            .join(HANDLERS_DIR)
            .join(format!("{HANDLER_NAME}.toml"));
        fs::write(&file, definition).with_context(|| format!("writing {}", file.display()))?;
        let Self { process, dir } = self;
        Ok(Self {
            process: process.restart()?,
            dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.process.url())
    }

    pub fn usage(&self) -> Result<ProcUsage> {
        ProcUsage::read(self.pid())
    }

    /// Warnings and errors the server logged, for the report.
    pub fn log_lines(&self) -> Vec<String> {
        self.process.log_tail(LOG_LINES_SHOWN)
    }

    pub fn data_filesystem(&self) -> String {
        filesystem_of(self.dir.path())
    }
}

/// A fresh directory under `root` (the system temp dir if `None`), removed
/// when dropped.
pub fn temp_dir(root: Option<&Path>) -> Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("switchyard-bench-");
    match root {
        Some(root) => builder.tempdir_in(root),
        None => builder.tempdir(),
    }
    .context("creating a temporary directory")
}

/// The bench topic `name` (with `settings`, its own TOML keys, and
/// `tables`), the handler outputs' topics when `outputs`, and the event
/// type's schema, into `topics`.
pub fn write_topics(
    topics: &Path,
    name: &str,
    partitions: usize,
    settings: &str,
    tables: &str,
    outputs: bool,
) -> Result<()> {
    write_topic(topics, name, partitions, settings, tables)?;
    if outputs {
        // Outcome events are stored whatever their type; a topic only
        // needs one declared type to exist.
        for name in [RESULTS_TOPIC, DEAD_LETTER_TOPIC] {
            write_topic(topics, name, 1, "", "")?;
        }
    }
    // Permissive on purpose: the bench measures the bus, not the schema.
    fs::write(
        topics.join(format!("{EVENT_TYPE}.schema.json")),
        r#"{"type":"object"}"#,
    )?;
    Ok(())
}

/// A topic file declaring the bench event type, with `settings` (TOML
/// keys) and `tables` (TOML tables) of its own.
fn write_topic(
    topics: &Path,
    name: &str,
    partitions: usize,
    settings: &str,
    tables: &str,
) -> Result<()> {
    let file = topics.join(format!("{name}.toml"));
    fs::write(
        &file,
        format!(
            "name = \"{name}\"\ndescription = \"switchyard-bench load\"\npartitions = {partitions}\n\
             key = \"/data/k\"\n{settings}\n[types.\"{EVENT_TYPE}\"]\nschema = \"{EVENT_TYPE}.schema.json\"\n{tables}"
        ),
    )
    .with_context(|| format!("writing {}", file.display()))
}

/// The filesystem type holding `path` (from /proc/mounts): fsync on tmpfs
/// costs nothing, so results must say where the log lived.
fn filesystem_of(path: &Path) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, mount_point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount_point)
                .then(|| (mount_point.len(), fs_type.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, fs_type)| fs_type)
}
