//! Policies that wrap every action call: retry with backoff, and a circuit
//! breaker per target. Rate limiting and concurrency live in the runtime
//! (a token bucket and a semaphore).

pub mod breaker;
pub mod retry;
