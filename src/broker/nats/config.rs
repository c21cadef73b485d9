//! The nats backend's settings: `--nats-url` and the `[nats]` table of
//! switchyard.toml, their defaults, and how they resolve.

use serde::Deserialize;

use crate::problem::Problems;

/// The backend's name in `--broker` and `broker = "…"`.
pub const NAME: &str = "nats";
/// The server, unless told.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// The prefix of stream names and subjects, unless told.
pub const DEFAULT_PREFIX: &str = "switchyard";

/// The nats backend's settings: the `[nats]` table of switchyard.toml as it
/// is written (nothing in it can be wrong before the server is reached),
/// every key optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    pub url: String,
    /// Prefix of stream names and subjects.
    pub prefix: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.into(),
            prefix: DEFAULT_PREFIX.into(),
        }
    }
}

/// The nats backend's flags (and their `SWITCHYARD_*` variables).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct NatsFlags {
    /// NATS URL for broker = nats [default: nats://127.0.0.1:4222]
    #[arg(long, env = "SWITCHYARD_NATS_URL")]
    pub nats_url: Option<String>,
}

/// The `[nats]` table with the flags over it; `problems` is for the shape
/// every backend shares.
pub fn resolve(flags: &NatsFlags, mut section: NatsConfig, _problems: &mut Problems) -> NatsConfig {
    if let Some(url) = &flags.nats_url {
        section.url.clone_from(url);
    }
    section
}
