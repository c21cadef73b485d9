//! Which events a topic stored within its dedupe window, by identity
//! (`source` + `id`): the index behind idempotent publish on the backends
//! that have no dedupe of their own. Redis checks in its append script and
//! NATS JetStream by `Nats-Msg-Id`, atomically with the append. The
//! embedded log (one process) keeps the index in its writer thread. On
//! Kafka, which has no conditional append, a [`SharedIndex`] reads what
//! every process appended up to the topic's end before it decides: a retry
//! sent after the first attempt was answered is caught wherever it lands;
//! two attempts in flight at the same moment in two processes may both be
//! stored (in one process they take turns).
//!
//! Memory: an entry is a 128-bit digest of the identity and where the event
//! landed (about 60 bytes with the map's overhead), kept until its window
//! ends, and at most [`MAX_IDENTITIES`] per topic: past that the oldest are
//! forgotten first, so a topic published faster than that many events per
//! window dedupes over a shorter window (logged once).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::{Appended, Broker, Record, Result, StoredEvent};
use crate::cursor::Cursor;
use crate::topic::{Topic, Topics};

/// Identities remembered per topic at most (about 60 MB).
pub const MAX_IDENTITIES: usize = 1 << 20;

/// The identity of an event: CloudEvents says `source` and `id` name it.
/// (A NUL is in neither, so no two pairs give the same identity.)
pub fn identity(source: &str, id: &str) -> String {
    format!("{source}\0{id}")
}

/// The identity of a stored event, if its payload names one.
pub fn identity_of(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        source: std::borrow::Cow<'a, str>,
    }
    let head: Head = serde_json::from_slice(payload).ok()?;
    Some(identity(&head.source, &head.id))
}

type Key = u128;

fn key(identity: &str) -> Key {
    let digest = Sha256::digest(identity.as_bytes());
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

/// An identity as 32 hex digits: what a broker keeps of it (NATS's
/// `Nats-Msg-Id`, Redis's dedupe keys), short and free of odd bytes.
pub fn digest_hex(identity: &str) -> String {
    format!("{:032x}", key(identity))
}

/// One topic's identities within its window.
pub struct IdentityIndex {
    window_ms: i64,
    entries: HashMap<Key, (Appended, i64)>,
    /// (expiry, key) in the order stored: expiries only grow, so the
    /// front is the next to expire.
    order: VecDeque<(i64, Key)>,
    warned: bool,
}

impl IdentityIndex {
    /// `None` when the window is zero (dedupe off).
    pub fn new(window: Duration) -> Option<Self> {
        (!window.is_zero()).then(|| Self {
            window_ms: window.as_millis().min(i64::MAX as u128) as i64,
            entries: HashMap::new(),
            order: VecDeque::new(),
            warned: false,
        })
    }

    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// Where the event with `identity` was stored, if within the window.
    pub fn get(&self, identity: &str, now_ms: i64) -> Option<Appended> {
        self.entries
            .get(&key(identity))
            .filter(|(_, expires)| *expires > now_ms)
            .map(|(at, _)| Appended {
                duplicate: true,
                ..*at
            })
    }

    /// Remembers an event stored at `stored_ms`; the first store of an
    /// identity is the one a duplicate is answered with.
    pub fn insert(&mut self, identity: &str, at: Appended, stored_ms: i64, topic: &str) {
        let expires = stored_ms.saturating_add(self.window_ms);
        self.expire(stored_ms);
        let key = key(identity);
        if self.entries.get(&key).is_some_and(|(_, e)| *e > stored_ms) {
            return;
        }
        if self.entries.len() >= MAX_IDENTITIES {
            if !self.warned {
                self.warned = true;
                warn!(
                    topic,
                    max = MAX_IDENTITIES,
                    "more events in the dedupe window than the index holds; the oldest are forgotten first (a shorter dedupe_window avoids this)"
                );
            }
            if let Some((_, oldest)) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (at, expires));
        self.order.push_back((expires, key));
    }

    /// Remembers a stored event read back from the log.
    pub fn insert_stored(&mut self, event: &StoredEvent, topic: &str) {
        if let Some(identity) = identity_of(&event.payload) {
            let at = Appended {
                partition: event.partition,
                offset: event.offset,
                duplicate: false,
            };
            self.insert(&identity, at, event.timestamp_ms, topic);
        }
    }

    /// Forgets what expired by `now_ms`.
    fn expire(&mut self, now_ms: i64) {
        while let Some(&(expires, key)) = self.order.front() {
            if expires > now_ms {
                break;
            }
            self.order.pop_front();
            if self.entries.get(&key).is_some_and(|(_, e)| *e == expires) {
                self.entries.remove(&key);
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The dedupe of a backend whose appends are unconditional and which
/// several processes may share (Kafka): per topic, the index and how far
/// into the log it has read.
pub struct SharedIndex {
    topics: std::sync::RwLock<HashMap<String, Arc<TopicIndex>>>,
}

struct TopicIndex {
    index: Mutex<IdentityIndex>,
    /// Where the index has read to (`None`: not yet read back).
    read_to: tokio::sync::Mutex<Option<Cursor>>,
    /// Identities being appended by this process: one attempt at a time.
    in_flight: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl SharedIndex {
    pub fn new(topics: &Topics) -> Self {
        let index = Self {
            topics: Default::default(),
        };
        for topic in topics.iter() {
            index.add(&topic);
        }
        index
    }

    /// Keeps the dedupe window of `topic` (nothing when it has none, or
    /// is kept already).
    pub fn add(&self, topic: &Topic) {
        let Some(index) = IdentityIndex::new(topic.dedupe_window) else {
            return;
        };
        let mut topics = self.topics.write().expect("dedupe topics lock");
        topics.entry(topic.name.clone()).or_insert_with(|| {
            Arc::new(TopicIndex {
                index: Mutex::new(index),
                read_to: tokio::sync::Mutex::new(None),
                in_flight: Mutex::new(HashMap::new()),
            })
        });
    }

    /// Appends the records not stored within the topic's window (with
    /// `store`, the backend's own append), answering the first store for
    /// the others.
    pub async fn append(
        &self,
        broker: &Broker,
        topic: &str,
        records: Vec<Record>,
        store: impl AsyncFnOnce(Vec<Record>) -> Result<Vec<Appended>>,
    ) -> Result<Vec<Appended>> {
        let found = self
            .topics
            .read()
            .expect("dedupe topics lock")
            .get(topic)
            .cloned();
        let Some(state) = found else {
            return store(records).await;
        };
        let _held = state.hold(&records).await;
        // The end as of now: every append answered before this one began
        // lies below it.
        let end = broker.latest(topic).await?;
        state.read_up_to(broker, topic, end).await?;
        let now = now_ms();
        // Per record: where it is already (`Ok`), or which stored record
        // it is (`Err`, an index into `to_store`).
        let mut answers: Vec<std::result::Result<Appended, usize>> = Vec::new();
        let mut to_store: Vec<Record> = Vec::new();
        {
            let index = state.index.lock().expect("dedupe index lock");
            let mut in_batch: HashMap<&str, usize> = HashMap::new();
            for record in &records {
                let identity = record.identity.as_str();
                if identity.is_empty() {
                    answers.push(Err(to_store.len()));
                    to_store.push(record.clone());
                } else if let Some(at) = index.get(identity, now) {
                    answers.push(Ok(at));
                } else if let Some(&slot) = in_batch.get(identity) {
                    answers.push(Err(slot));
                } else {
                    in_batch.insert(identity, to_store.len());
                    answers.push(Err(to_store.len()));
                    to_store.push(record.clone());
                }
            }
        }
        let identities: Vec<String> = to_store.iter().map(|r| r.identity.clone()).collect();
        let stored = if to_store.is_empty() {
            Vec::new()
        } else {
            store(to_store).await?
        };
        {
            let mut index = state.index.lock().expect("dedupe index lock");
            for (identity, at) in identities.iter().zip(&stored) {
                if !identity.is_empty() {
                    index.insert(identity, *at, now, topic);
                }
            }
        }
        // A second record of one identity in the batch is its duplicate.
        let mut first = vec![true; stored.len()];
        Ok(answers
            .into_iter()
            .map(|answer| match answer {
                Ok(at) => at,
                Err(slot) => Appended {
                    duplicate: !std::mem::replace(&mut first[slot], false),
                    ..stored[slot]
                },
            })
            .collect())
    }
}

impl TopicIndex {
    /// Waits until no other append of this process holds one of the
    /// records' identities, then holds them all until the guards drop.
    async fn hold(&self, records: &[Record]) -> Vec<Held<'_>> {
        let mut keys: Vec<Key> = records
            .iter()
            .filter(|r| !r.identity.is_empty())
            .map(|r| key(&r.identity))
            .collect();
        // In one order, so that two batches never wait on each other.
        keys.sort_unstable();
        keys.dedup();
        let mut held = Vec::with_capacity(keys.len());
        for key in keys {
            let lock = {
                let mut in_flight = self.in_flight.lock().expect("in-flight lock");
                Arc::clone(in_flight.entry(key).or_default())
            };
            let guard = lock.lock_owned().await;
            held.push(Held {
                owner: self,
                key,
                guard: Some(guard),
            });
        }
        held
    }

    /// Reads what the log holds below `end` into the index (at the first
    /// call, from the start of the window).
    async fn read_up_to(&self, broker: &Broker, topic: &str, end: Cursor) -> Result<()> {
        let mut read_to = self.read_to.lock().await;
        let (from, first) = match read_to.take() {
            Some(cursor) => (cursor, false),
            None => {
                let window_ms = self.index.lock().expect("dedupe index lock").window_ms();
                let since = broker
                    .position_at(topic, now_ms().saturating_sub(window_ms))
                    .await?;
                (since, true)
            }
        };
        // Never ahead of the end (a log emptied by retention may restart
        // its offsets: tansu does).
        let from = Cursor::new(
            (0..end.partitions())
                .map(|p| from.next(p).min(end.next(p)))
                .collect(),
        );
        let mut remembered = 0usize;
        let reached = broker
            .scan(topic, from.clone(), Some(&end), |event| {
                self.index
                    .lock()
                    .expect("dedupe index lock")
                    .insert_stored(event, topic);
                remembered += 1;
            })
            .await;
        match reached {
            Ok(reached) => {
                if first && remembered > 0 {
                    info!(
                        topic,
                        events = remembered,
                        "dedupe index read back from the log"
                    );
                }
                // The scan may have read past `end` in some partitions
                // without visiting those events: read on from `end` there.
                let offsets = (0..end.partitions())
                    .map(|p| reached.next(p).min(end.next(p)).max(from.next(p)))
                    .collect();
                *read_to = Some(Cursor::new(offsets));
                Ok(())
            }
            Err(err) => {
                if !first {
                    *read_to = Some(from);
                }
                Err(err)
            }
        }
    }
}

/// One held identity; dropping it lets the next attempt in.
struct Held<'a> {
    owner: &'a TopicIndex,
    key: Key,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut in_flight = self.owner.in_flight.lock().expect("in-flight lock");
        // Nobody else waits for it: forget the lock.
        if in_flight
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            in_flight.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Appended {
        Appended {
            partition: 0,
            offset,
            duplicate: false,
        }
    }

    #[test]
    fn an_identity_is_remembered_for_its_window_only() {
        let mut index = IdentityIndex::new(Duration::from_secs(10)).unwrap();
        index.insert(&identity("s", "1"), at(4), 1_000, "t");
        let found = index.get(&identity("s", "1"), 10_999).unwrap();
        assert_eq!((found.offset, found.duplicate), (4, true));
        assert!(index.get(&identity("s", "1"), 11_000).is_none());
        assert!(index.get(&identity("s", "2"), 2_000).is_none());
        assert!(index.get(&identity("t", "1"), 2_000).is_none());
        // The first store wins within the window.
        index.insert(&identity("s", "1"), at(9), 2_000, "t");
        assert_eq!(index.get(&identity("s", "1"), 2_000).unwrap().offset, 4);
        // Expired entries leave the map as later ones come.
        index.insert(&identity("s", "3"), at(10), 20_000, "t");
        assert_eq!(index.entries.len(), 1);
    }

    #[test]
    fn dedupe_off_has_no_index() {
        assert!(IdentityIndex::new(Duration::ZERO).is_none());
    }

    #[test]
    fn source_and_id_cannot_run_into_each_other() {
        assert_ne!(identity("a b", "c"), identity("a", "b c"));
    }
}
