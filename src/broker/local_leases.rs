//! Leases kept in this process, for a backend that only one process uses
//! (the embedded log, behind its data-dir lock).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// (scope, item) → (holder, until).
#[derive(Default)]
pub struct LocalLeases(Mutex<BTreeMap<(String, String), (String, Instant)>>);

impl LocalLeases {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), (String, Instant)>> {
        self.0.lock().expect("lease table lock poisoned")
    }

    pub fn lease(&self, scope: &str, item: &str, holder: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut map = self.map();
        let key = (scope.to_owned(), item.to_owned());
        match map.get(&key) {
            Some((other, until)) if other != holder && *until > now => false,
            _ => {
                map.insert(key, (holder.to_owned(), now + ttl));
                true
            }
        }
    }

    pub fn release(&self, scope: &str, item: &str, holder: &str) {
        let mut map = self.map();
        let key = (scope.to_owned(), item.to_owned());
        if map.get(&key).is_some_and(|(other, _)| other == holder) {
            map.remove(&key);
        }
    }

    pub fn leases(&self, scope: &str) -> Vec<(String, String)> {
        let now = Instant::now();
        let mut map = self.map();
        map.retain(|_, (_, until)| *until > now);
        map.iter()
            .filter(|((s, _), _)| s == scope)
            .map(|((_, item), (holder, _))| (item.clone(), holder.clone()))
            .collect()
    }
}
