//! Which failures are worth retrying, and how long to wait before the next
//! attempt: exponential backoff with full jitter, capped, honouring a
//! server's `Retry-After`.

use std::time::{Duration, SystemTime};

/// Attempts per event (the first call included), unless the handler says.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The first backoff's ceiling, unless the handler says.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(200);
/// The most any backoff waits, unless the handler says.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Longest `Retry-After` we honour; beyond it a server's hint is ignored in
/// favour of our own backoff cap.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Whether a response status is worth retrying: 408, 425, 429 and 5xx.
/// Other statuses outside 2xx are permanent: retrying cannot help.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || (500..600).contains(&status)
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or_default(),
    };
    (delay <= MAX_RETRY_AFTER).then_some(delay)
}

/// The wait before attempt `attempt + 1` (attempt counts from 1): a random
/// duration in [0, min(cap, initial × 2^(attempt-1))] ("full jitter"), or the
/// server's `Retry-After` when that is longer.
pub fn backoff(
    attempt: u32,
    initial: Duration,
    cap: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ceiling = initial.saturating_mul(1u32 << exponent).min(cap);
    let jittered = ceiling.mul_f64(fastrand::f64());
    retry_after.map_or(jittered, |hint| hint.max(jittered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for status in [408, 425, 429, 500, 502, 503, 599] {
            assert!(is_retryable_status(status), "{status}");
        }
        for status in [300, 400, 401, 403, 404, 409, 410, 422] {
            assert!(!is_retryable_status(status), "{status}");
        }
    }

    #[test]
    fn backoff_stays_within_the_exponential_ceiling_and_the_cap() {
        let initial = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        for attempt in 1..12 {
            let ceiling = (initial * 2u32.pow(attempt - 1)).min(cap);
            for _ in 0..200 {
                assert!(backoff(attempt, initial, cap, None) <= ceiling);
            }
        }
        let hint = Duration::from_secs(5);
        assert!(backoff(1, initial, cap, Some(hint)) >= hint);
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("99999", now), None);
    }
}
