//! The contract every broker backend keeps. [`super::Broker`] dispatches to
//! the backends (a closed enum, so `match` shows the whole set) and derives
//! what is the same for all of them once: partition checks, earliest and
//! latest from the retained range, "committed, else start and commit",
//! bounded reads.

use std::time::Duration;

use super::{Appended, ReadBatch, Record, Result, Retained};
use crate::cursor::{Cursor, GroupCursor, Place};
use crate::topic::Topics;

/// One broker backend. Every method is cancel-safe in the sense that
/// matters here: dropping a call never acknowledges what it did not store.
///
/// Errors: `UnknownTopic` for a topic it was not opened with;
/// `Unavailable` (with the backend's error as its source) when a retry later
/// may succeed; `CursorExpired` / `CursorAhead` / `BadCursor` from `read`
/// (see [`super::check_cursor`]); `Corrupt` for stored bytes that fail their
/// check. Never a panic on what a client sent.
// `async fn` in a public trait cannot promise `Send` futures to generic
// callers; there are none: `Broker` calls each backend by its concrete type,
// whose futures are known to be `Send`.
#[allow(async_fn_in_trait)]
pub trait Backend: Sized {
    /// Its settings (`broker/<name>/config.rs`).
    type Config;
    /// Its name in `--broker`, `/readyz` and logs.
    const KIND: &'static str;
    /// Whether [`Backend::retained`] is answered in-process (else it costs a
    /// round trip, worth caching).
    const LOCAL_POSITIONS: bool;
    /// Whether a partition's offsets are dense (each event one more than
    /// the one before), so that the events between two offsets are their
    /// difference; else they are counted by reading.
    const DENSE_OFFSETS: bool;

    /// Connects (or opens the log), creating what the topics need.
    async fn open(config: Self::Config, topics: &Topics) -> Result<Self>;

    /// Creates what `topic` needs, added at run time, and serves it from
    /// now on (nothing when it is served already).
    async fn add_topic(&self, topic: &std::sync::Arc<crate::topic::Topic>) -> Result<()>;

    /// Partitions of `topic`.
    fn partitions(&self, topic: &str) -> Result<usize>;

    /// Stores `records` (their partitions already checked) and answers where
    /// they landed, in order. `Ok` means durable as the backend promises;
    /// on `Err` none of them counts as acknowledged. A record whose identity
    /// the topic stored within its dedupe window is not stored again: its
    /// answer is where that one is, marked `duplicate` (unless the backend
    /// has a [`Backend::shared_index`], which checks before this is called).
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Appended>>;

    /// The dedupe index [`super::Broker::append`] keeps for this backend,
    /// when its appends cannot check for a stored identity themselves
    /// (`None`: `append` stores each identity once within the topic's
    /// dedupe window on its own).
    fn shared_index(&self) -> Option<&super::identities::SharedIndex> {
        None
    }

    /// Up to `max` events after `from`, in order per partition (see
    /// [`super::merge`]); when there are none yet, waits up to `wait`.
    /// `only`: the partitions to read (by index; `None`: all); the others
    /// keep their place in the answer's cursor.
    async fn read(
        &self,
        topic: &str,
        from: &Cursor,
        only: Option<&[bool]>,
        max: usize,
        wait: Duration,
    ) -> Result<ReadBatch>;

    /// What each partition retains, in partition order.
    async fn retained(&self, topic: &str) -> Result<Vec<Retained>>;

    /// Stores the places of some partitions of a consumer group durably
    /// (the next offset, and what is settled above it), keeping the
    /// others: processes sharing a group each commit the partitions they
    /// own. A group never committed before starts the others at 0.
    async fn commit(&self, topic: &str, group: &str, places: &[(usize, Place)]) -> Result<()>;

    /// The group's last committed places, if it ever committed.
    async fn committed(&self, topic: &str, group: &str) -> Result<Option<GroupCursor>>;

    /// The names of the groups that have a committed cursor on `topic`, in
    /// any order (handlers' groups too: they commit like any other).
    async fn groups(&self, topic: &str) -> Result<Vec<String>>;

    /// Removes the group's committed cursor: `committed` answers `None`
    /// afterwards, and a `commit` starts the group afresh. True when there
    /// was one. Leases (membership) are not touched.
    async fn delete_group(&self, topic: &str, group: &str) -> Result<bool>;

    /// Takes, or renews, the lease on `item` in `scope` for `holder`, for
    /// `ttl` from now: true when `holder` has it, false when another holder
    /// has a live lease on it. The group membership of several processes
    /// (`crate::broker::membership`) is built on these three.
    async fn lease(&self, scope: &str, item: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Gives up `holder`'s lease on `item` (nothing when another holds it).
    async fn release(&self, scope: &str, item: &str, holder: &str) -> Result<()>;

    /// The live leases in `scope`: (item, holder), sorted by item.
    async fn leases(&self, scope: &str) -> Result<Vec<(String, String)>>;

    /// The bytes `topic` takes in storage, when the backend can tell
    /// cheaply (the embedded log's segments, a NATS stream's state); `None`
    /// when it cannot (Redis, Kafka).
    async fn stored_bytes(&self, _topic: &str) -> Result<Option<u64>> {
        Ok(None)
    }

    /// `Ok` when the backend can take writes.
    async fn health(&self) -> Result<()>;

    /// Flushes and stops; appends after this fail as unavailable.
    async fn close(&self) {}
}
