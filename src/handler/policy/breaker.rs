//! A circuit breaker per target: closed → open (after N consecutive
//! failures, or a failure rate over a window) → half-open (after a while,
//! K probes) → closed on their success, open again on a failure.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Failures in a row that open the breaker, unless the handler says.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// Share of failed calls within the window that opens the breaker.
pub const DEFAULT_FAILURE_RATE: f64 = 0.5;
/// The window the failure rate is measured over.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
/// Calls within the window before the failure rate counts.
pub const DEFAULT_MIN_CALLS: u32 = 20;
/// How long an open breaker stays open before it lets probes through.
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(30);
/// Probes a half-open breaker lets through; all must succeed to close it.
pub const DEFAULT_HALF_OPEN_PROBES: u32 = 1;

/// A breaker's settings, from a handler's `[policy.breaker]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSpec {
    pub consecutive_failures: u32,
    pub failure_rate: f64,
    pub window: Duration,
    pub min_calls: u32,
    pub open_for: Duration,
    pub half_open_probes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// A change of state, to log, count and publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

/// Whether a call may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Go,
    /// Not now: try again after this long.
    Wait(Duration),
}

#[derive(Debug)]
pub struct Breaker {
    spec: BreakerSpec,
    state: BreakerState,
    consecutive_failures: u32,
    /// (when, succeeded) of calls inside the window, while closed.
    recent: VecDeque<(Instant, bool)>,
    open_until: Instant,
    probes_in_flight: u32,
    probe_successes: u32,
}

/// How often a caller waiting on a half-open breaker looks again.
const PROBE_POLL: Duration = Duration::from_millis(50);

impl Breaker {
    pub fn new(spec: BreakerSpec) -> Self {
        Self {
            spec,
            state: BreakerState::Closed,
            consecutive_failures: 0,
            recent: VecDeque::new(),
            open_until: Instant::now(),
            probes_in_flight: 0,
            probe_successes: 0,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Asks to make a call. An open breaker whose time is up becomes
    /// half-open (returned as a transition) and lets probes through.
    pub fn acquire(&mut self, now: Instant) -> (Permit, Option<Transition>) {
        let mut transition = None;
        if self.state == BreakerState::Open {
            if now < self.open_until {
                return (Permit::Wait(self.open_until - now), None);
            }
            transition = self.move_to(BreakerState::HalfOpen);
            self.probes_in_flight = 0;
            self.probe_successes = 0;
        }
        if self.state == BreakerState::HalfOpen {
            if self.probes_in_flight + self.probe_successes >= self.spec.half_open_probes {
                return (Permit::Wait(PROBE_POLL), transition);
            }
            self.probes_in_flight += 1;
        }
        (Permit::Go, transition)
    }

    /// Records the result of a call that `acquire` let through.
    pub fn record(&mut self, now: Instant, success: bool) -> Option<Transition> {
        match self.state {
            BreakerState::Closed => {
                self.recent.push_back((now, success));
                while self
                    .recent
                    .front()
                    .is_some_and(|&(at, _)| now.duration_since(at) > self.spec.window)
                {
                    self.recent.pop_front();
                }
                if success {
                    self.consecutive_failures = 0;
                    return None;
                }
                self.consecutive_failures += 1;
                let calls = self.recent.len() as u32;
                let failures = self.recent.iter().filter(|(_, ok)| !ok).count() as f64;
                let rate_exceeded = calls >= self.spec.min_calls
                    && failures / f64::from(calls) >= self.spec.failure_rate;
                if self.consecutive_failures >= self.spec.consecutive_failures || rate_exceeded {
                    return self.open(now);
                }
                None
            }
            BreakerState::HalfOpen => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                if !success {
                    return self.open(now);
                }
                self.probe_successes += 1;
                if self.probe_successes >= self.spec.half_open_probes {
                    self.consecutive_failures = 0;
                    self.recent.clear();
                    return self.move_to(BreakerState::Closed);
                }
                None
            }
            // A call that started before the breaker opened: already counted.
            BreakerState::Open => None,
        }
    }

    fn open(&mut self, now: Instant) -> Option<Transition> {
        self.open_until = now + self.spec.open_for;
        self.recent.clear();
        self.move_to(BreakerState::Open)
    }

    fn move_to(&mut self, to: BreakerState) -> Option<Transition> {
        let from = std::mem::replace(&mut self.state, to);
        (from != to).then_some(Transition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BreakerSpec {
        BreakerSpec {
            consecutive_failures: 3,
            failure_rate: 0.5,
            window: Duration::from_secs(10),
            min_calls: 10,
            open_for: Duration::from_secs(5),
            half_open_probes: 2,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_half_opens_and_closes() {
        let mut breaker = Breaker::new(spec());
        let now = Instant::now();
        for _ in 0..2 {
            assert_eq!(breaker.acquire(now).0, Permit::Go);
            assert_eq!(breaker.record(now, false), None);
        }
        breaker.acquire(now);
        let opened = breaker.record(now, false).unwrap();
        assert_eq!(
            (opened.from, opened.to),
            (BreakerState::Closed, BreakerState::Open)
        );
        assert_eq!(breaker.acquire(now).0, Permit::Wait(Duration::from_secs(5)));

        let later = now + Duration::from_secs(5);
        let (permit, transition) = breaker.acquire(later);
        assert_eq!(permit, Permit::Go);
        assert_eq!(transition.unwrap().to, BreakerState::HalfOpen);
        assert_eq!(breaker.acquire(later).0, Permit::Go, "second probe");
        assert!(
            matches!(breaker.acquire(later).0, Permit::Wait(_)),
            "only two probes"
        );
        assert_eq!(breaker.record(later, true), None);
        assert_eq!(
            breaker.record(later, true).unwrap().to,
            BreakerState::Closed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again() {
        let mut breaker = Breaker::new(spec());
        let now = Instant::now();
        for _ in 0..3 {
            breaker.acquire(now);
            breaker.record(now, false);
        }
        let later = now + Duration::from_secs(6);
        breaker.acquire(later);
        assert_eq!(breaker.record(later, false).unwrap().to, BreakerState::Open);
        assert!(matches!(breaker.acquire(later).0, Permit::Wait(d) if d == Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_rate_over_the_window() {
        let mut breaker = Breaker::new(BreakerSpec {
            consecutive_failures: 100,
            ..spec()
        });
        let now = Instant::now();
        // Alternate: never 100 in a row, but half of 10 calls fail.
        let mut transition = None;
        for i in 0..10 {
            breaker.acquire(now);
            transition = breaker.record(now, i % 2 == 0).or(transition);
        }
        assert_eq!(transition.unwrap().to, BreakerState::Open);
    }
}
