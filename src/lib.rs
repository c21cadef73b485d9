//! Switchyard: an event-driven streaming bus for integrations.
//!
//! Typed CloudEvents go in over HTTP (and webhooks), land durably on a
//! broker (the embedded log by default), and come out as SSE streams and
//! pages with resumable cursors. See ARCHITECTURE.md for the map.

pub mod asyncapi;
pub mod auth;
pub mod broker;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod cursor;
pub mod event;
pub mod fanout;
pub mod group;
pub mod handler;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod problem;
pub mod reload;
pub mod schedule;
pub mod server;
pub mod telemetry;
pub mod topic;

/// An error and every source below it, joined by ": ": what logs show (a
/// client gets only the top, where it names no backend internals).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
