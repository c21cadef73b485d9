//! `switchyard-testkit`: the one place that starts the real processes
//! Switchyard's integration tests (`tests/it`) and its load tool (`bench/`)
//! drive, so that both run them alike:
//!
//! - [`Serve`] starts `switchyard serve` (the binary's path is passed in:
//!   `CARGO_BIN_EXE_switchyard` exists only in the main package's tests) on
//!   a free loopback port, waits until it says where it listens, copies its
//!   stderr to `server.log`, and kills it when the [`Switchyard`] handle is
//!   dropped;
//! - [`BrokerServer`] starts an external broker (redis-server, nats-server
//!   with JetStream, tansu on its SQLite storage) on a free loopback port
//!   with a temporary directory of its own, waits for its port, and kills it
//!   when dropped.
//!
//! Dev-only (`publish = false`): nothing here is part of the server.

mod broker;
mod process;
mod switchyard;

pub use broker::{BrokerServer, Kind};
pub use process::{KillOnDrop, free_port, known_environment, on_path};
pub use switchyard::{Limits, Serve, Switchyard};
