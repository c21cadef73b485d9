//! Integration tests: the real `switchyard` binary over loopback HTTP, on
//! real files. Each test has its own workspace (topics, data) and server.

mod access;
mod asyncapi;
mod bounds;
mod browser;
mod cli;
mod conformance;
mod console;
mod crash;
mod filter;
mod groups;
mod handler;
mod harness;
mod mcp;
mod processes;
mod publish;
mod read;
mod reload;
mod schedule;
mod sink;
mod sse;
mod telemetry;
mod webhook;
