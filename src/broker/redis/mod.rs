//! The redis backend: its settings always, its client with the `redis` cargo feature.

#[cfg(feature = "redis")]
mod backend;
pub mod config;

#[cfg(feature = "redis")]
pub use backend::RedisBroker;
pub use config::RedisConfig;
