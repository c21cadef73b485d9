//! A handler's recent history, for `GET /v1/handlers`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::AtomicI64;

use serde_json::Value;

use crate::cursor::Cursor;

/// Outcomes and call latencies kept for the success rate and percentiles.
const STATS_WINDOW: usize = 1000;

/// Recent history, for `GET /v1/handlers`.
#[derive(Default)]
pub struct Stats {
    pub in_flight: AtomicI64,
    outcomes: Mutex<VecDeque<bool>>,
    latencies_ms: Mutex<VecDeque<f64>>,
    pub last_error: Mutex<Option<Value>>,
    pub committed: Mutex<Option<Cursor>>,
}

impl Stats {
    pub(super) fn record_outcome(&self, succeeded: bool) {
        Self::push(&self.outcomes, succeeded);
    }

    pub(super) fn record_latency(&self, ms: f64) {
        Self::push(&self.latencies_ms, ms);
    }

    fn push<T>(queue: &Mutex<VecDeque<T>>, value: T) {
        let mut queue = queue.lock().expect("stats lock poisoned");
        if queue.len() == STATS_WINDOW {
            queue.pop_front();
        }
        queue.push_back(value);
    }

    /// Share of recent outcomes that succeeded, if there were any.
    pub fn success_rate(&self) -> Option<f64> {
        let outcomes = self.outcomes.lock().expect("stats lock poisoned");
        (!outcomes.is_empty())
            .then(|| outcomes.iter().filter(|ok| **ok).count() as f64 / outcomes.len() as f64)
    }

    /// (p50, p99) of recent call latencies in ms.
    pub fn latency_ms(&self) -> Option<(f64, f64)> {
        let mut samples: Vec<f64> = self
            .latencies_ms
            .lock()
            .expect("stats lock poisoned")
            .iter()
            .copied()
            .collect();
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }
}
