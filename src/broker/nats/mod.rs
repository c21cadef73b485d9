//! The nats backend: its settings always, its client with the `nats` cargo feature.

#[cfg(feature = "nats")]
mod backend;
pub mod config;

#[cfg(feature = "nats")]
pub use backend::NatsBroker;
pub use config::NatsConfig;
