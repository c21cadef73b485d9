//! The dedupe index: delivery ids seen per source, each until its window
//! ends. A per-id async lock serialises concurrent attempts of one delivery,
//! so that exactly one of them appends.
//!
//! Memory: one entry per delivery inside the window. Expired entries are
//! swept when the index has doubled since the last sweep (and has at least
//! `SWEEP_AT_LEAST` entries), so sweeping costs O(1) per insert on average
//! however large the window makes the index.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::OwnedMutexGuard;

const SWEEP_AT_LEAST: usize = 4096;

/// Per delivery: when its window ends (ms since the epoch), once stored.
type Slot = Arc<tokio::sync::Mutex<Option<i64>>>;

#[derive(Default)]
pub struct Dedupe {
    slots: Mutex<HashMap<(String, String), Slot>>,
    /// Entries left by the last sweep.
    after_last_sweep: AtomicUsize,
}

impl Dedupe {
    /// Locks the slot of one delivery; the guard holds when its window ends
    /// if it was stored before. Set it after storing the event.
    pub async fn lock(&self, source: &str, delivery_id: &str) -> OwnedMutexGuard<Option<i64>> {
        let slot = {
            let mut slots = self.slots.lock().expect("dedupe lock poisoned");
            let key = (source.to_owned(), delivery_id.to_owned());
            match slots.get(&key) {
                Some(slot) => Arc::clone(slot),
                None => {
                    let slot = Slot::default();
                    slots.insert(key, Arc::clone(&slot));
                    let threshold =
                        (2 * self.after_last_sweep.load(Ordering::Relaxed)).max(SWEEP_AT_LEAST);
                    if slots.len() >= threshold {
                        sweep(&mut slots);
                        self.after_last_sweep.store(slots.len(), Ordering::Relaxed);
                    }
                    slot
                }
            }
        };
        slot.lock_owned().await
    }

    /// Records a delivery found in the log at start.
    pub fn remember(&self, source: &str, delivery_id: &str, expires_ms: i64) {
        let slot = Arc::new(tokio::sync::Mutex::new(Some(expires_ms)));
        let mut slots = self.slots.lock().expect("dedupe lock poisoned");
        slots.insert((source.to_owned(), delivery_id.to_owned()), slot);
    }
}

/// Drops entries nobody holds whose window is over (or that never stored).
fn sweep(slots: &mut HashMap<(String, String), Slot>) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    slots.retain(|_, slot| {
        if Arc::strong_count(slot) > 1 {
            return true;
        }
        match slot.try_lock() {
            Ok(expires) => expires.is_some_and(|at| at > now_ms),
            Err(_) => true,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_attempts_of_one_delivery_take_turns() {
        let dedupe = Arc::new(Dedupe::default());
        let mut first = dedupe.lock("s", "d1").await;
        let second = {
            let dedupe = Arc::clone(&dedupe);
            tokio::spawn(async move { *dedupe.lock("s", "d1").await })
        };
        tokio::task::yield_now().await;
        assert!(
            !second.is_finished(),
            "the second attempt waits for the first"
        );
        *first = Some(i64::MAX);
        drop(first);
        assert_eq!(second.await.unwrap(), Some(i64::MAX));
        assert_eq!(
            *dedupe.lock("s", "d2").await,
            None,
            "other ids are independent"
        );
        assert_eq!(
            *dedupe.lock("t", "d1").await,
            None,
            "other sources are independent"
        );
    }
}
