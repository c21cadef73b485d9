//! The redis backend's settings: `--redis-url` and the `[redis]` table of
//! switchyard.toml, their defaults, and how they resolve.

use serde::Deserialize;

use crate::problem::Problems;

/// The backend's name in `--broker` and `broker = "…"`.
pub const NAME: &str = "redis";
/// The server, unless told.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// The prefix of every key Switchyard writes, unless told.
pub const DEFAULT_PREFIX: &str = "switchyard";

/// The redis backend's settings: the `[redis]` table of switchyard.toml as it
/// is written (nothing in it can be wrong before the server is reached),
/// every key optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    /// Prefix of every key Switchyard writes.
    pub prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.into(),
            prefix: DEFAULT_PREFIX.into(),
        }
    }
}

/// The redis backend's flags (and their `SWITCHYARD_*` variables).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct RedisFlags {
    /// Redis URL for broker = redis [default: redis://127.0.0.1:6379]
    #[arg(long, env = "SWITCHYARD_REDIS_URL")]
    pub redis_url: Option<String>,
}

/// The `[redis]` table with the flags over it; `problems` is for the shape
/// every backend shares.
pub fn resolve(
    flags: &RedisFlags,
    mut section: RedisConfig,
    _problems: &mut Problems,
) -> RedisConfig {
    if let Some(url) = &flags.redis_url {
        section.url.clone_from(url);
    }
    section
}
