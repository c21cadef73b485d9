//! The kafka backend: its settings always, its client with the `kafka` cargo feature.

#[cfg(feature = "kafka")]
mod backend;
pub mod config;
#[cfg(feature = "kafka")]
pub mod membership;

#[cfg(feature = "kafka")]
pub use backend::KafkaBroker;
pub use config::KafkaConfig;
