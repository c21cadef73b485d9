//! The broker contract: one interface, several backends.
//!
//! ```text
//! append(topic, records) -> positions         durable when it returns
//! read(topic, from, max, wait) -> events      replay, catch-up and tailing
//! commit / committed(topic, group)            durable consumer-group cursors
//! groups(topic) / delete_group(topic, group)  list and remove group cursors
//! earliest / latest / health / close
//! ```
//!
//! Backends are a closed enum: `match` shows the whole set. Only this module
//! and its children name a concrete broker.

mod contract;
pub mod embedded;
pub mod identities;
pub mod kafka;
pub(crate) mod local_leases;
pub mod membership;
pub mod nats;
pub mod redis;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::cursor::{Cursor, GroupCursor, Place};
use crate::topic::Topics;

pub use contract::Backend;

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// An event to append, already assigned to a partition.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: usize,
    /// The partition key ingest hashed (Kafka stores it as the message key).
    pub key: Option<String>,
    /// `source` and `id`, which name the event ([`identities::identity`]):
    /// an identity stored within the topic's dedupe window is not stored
    /// again. Empty: never deduped.
    pub identity: String,
    /// The event in the CloudEvents JSON format.
    pub payload: Bytes,
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub partition: usize,
    pub offset: u64,
    /// The topic stored an event of the same identity within its dedupe
    /// window: nothing was appended, and this is where that one is.
    pub duplicate: bool,
}

/// An event read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub partition: usize,
    pub offset: u64,
    /// Milliseconds since the Unix epoch at which the broker stored it.
    pub timestamp_ms: i64,
    pub payload: Bytes,
}

/// A page of events and the cursor that follows the last of them.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    pub events: Vec<StoredEvent>,
    pub next: Cursor,
}

/// Bytes of events one reader (a page, an SSE subscriber catching up) holds
/// at once, and its first step: a stalled reader costs about this much (and
/// at most one event more) beyond socket buffers.
pub const READER_BYTES: (usize, usize) = (1 << 20, 1);

/// Events and bytes per page of [`Broker::scan`] (the first step 64).
const SCAN_BATCH: usize = 4096;
const SCAN_BYTES: (usize, usize) = (4 << 20, 64);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error(
        "cursor is older than the retained log in partition {partition}; the oldest available cursor is {oldest}"
    )]
    CursorExpired { partition: usize, oldest: Cursor },
    #[error(
        "cursor is ahead of the log in partition {partition} (which ends at offset {end}); was the data directory reset?"
    )]
    CursorAhead { partition: usize, end: u64 },
    #[error("cursor does not fit the topic: {0}")]
    BadCursor(#[from] crate::cursor::CursorError),
    #[error("invalid consumer group name {0:?}: use letters, digits, '.', '_' and '-'")]
    BadGroup(String),
    /// The broker cannot store or serve right now; the caller may retry.
    /// `what` is safe to show clients: what failed and, where the OS says
    /// why (no space, no file descriptors), why. A client library's error,
    /// with its details (hosts, protocol state), is the source, for the log
    /// and for operators (`/readyz`).
    #[error("broker unavailable: {what}")]
    Unavailable {
        what: String,
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A caller broke the contract (a bug, not a state to retry): 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BrokerError {
    /// Unavailable for a reason that needs no detail.
    pub fn unavailable(what: impl Into<String>) -> Self {
        Self::Unavailable {
            what: what.into(),
            source: None,
        }
    }

    /// Unavailable because of `source` (an I/O error, the client library's
    /// error), which stays in the chain for the log.
    pub fn unavailable_from(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Unavailable {
            what: what.into(),
            source: Some(Arc::from(source.into())),
        }
    }

    /// Whether a retry later may succeed (maps to 503 + Retry-After).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// The error and every source below it, for logs and operators.
    pub fn detail(&self) -> String {
        crate::error_chain(self)
    }
}

/// Which backend to run, and its settings.
#[derive(Debug, Clone)]
pub enum BrokerConfig {
    Embedded(embedded::EmbeddedConfig),
    #[cfg(feature = "redis")]
    Redis(redis::RedisConfig),
    #[cfg(feature = "nats")]
    Nats(nats::NatsConfig),
    #[cfg(feature = "kafka")]
    Kafka(kafka::KafkaConfig),
}

/// A running broker backend.
pub enum Broker {
    Embedded(embedded::EmbeddedBroker),
    #[cfg(feature = "redis")]
    Redis(redis::RedisBroker),
    #[cfg(feature = "nats")]
    Nats(Box<nats::NatsBroker>),
    #[cfg(feature = "kafka")]
    Kafka(Box<kafka::KafkaBroker>),
}

/// `dispatch!(self, b => expr)`: `expr` with `b` bound to the running
/// backend; the one place besides `open` that lists the variants.
macro_rules! dispatch {
    ($broker:expr, $b:ident => $body:expr) => {
        match $broker {
            Broker::Embedded($b) => $body,
            #[cfg(feature = "redis")]
            Broker::Redis($b) => $body,
            #[cfg(feature = "nats")]
            Broker::Nats($b) => {
                let $b = &**$b;
                $body
            }
            #[cfg(feature = "kafka")]
            Broker::Kafka($b) => {
                let $b = &**$b;
                $body
            }
        }
    };
}

/// The same, for the backend's type: `kind!(self, B => B::KIND)`.
macro_rules! kind {
    ($broker:expr, $t:ident => $body:expr) => {
        match $broker {
            Broker::Embedded(_) => {
                type $t = embedded::EmbeddedBroker;
                $body
            }
            #[cfg(feature = "redis")]
            Broker::Redis(_) => {
                type $t = redis::RedisBroker;
                $body
            }
            #[cfg(feature = "nats")]
            Broker::Nats(_) => {
                type $t = nats::NatsBroker;
                $body
            }
            #[cfg(feature = "kafka")]
            Broker::Kafka(_) => {
                type $t = kafka::KafkaBroker;
                $body
            }
        }
    };
}

impl Broker {
    /// Opens the configured backend for every topic in `topics`.
    pub async fn open(config: &BrokerConfig, topics: &Topics) -> Result<Self> {
        Ok(match config.clone() {
            BrokerConfig::Embedded(config) => {
                Self::Embedded(embedded::EmbeddedBroker::open(config, topics).await?)
            }
            #[cfg(feature = "redis")]
            BrokerConfig::Redis(config) => {
                Self::Redis(redis::RedisBroker::open(config, topics).await?)
            }
            #[cfg(feature = "nats")]
            BrokerConfig::Nats(config) => {
                Self::Nats(Box::new(nats::NatsBroker::open(config, topics).await?))
            }
            #[cfg(feature = "kafka")]
            BrokerConfig::Kafka(config) => {
                Self::Kafka(Box::new(kafka::KafkaBroker::open(config, topics).await?))
            }
        })
    }

    /// See [`Backend::add_topic`].
    pub async fn add_topic(&self, topic: &Arc<crate::topic::Topic>) -> Result<()> {
        dispatch!(self, b => b.add_topic(topic).await)
    }

    /// See [`Backend::stored_bytes`].
    pub async fn stored_bytes(&self, topic: &str) -> Result<Option<u64>> {
        dispatch!(self, b => b.stored_bytes(topic).await)
    }

    /// Partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> Result<usize> {
        dispatch!(self, b => b.partitions(topic))
    }

    pub fn kind(&self) -> &'static str {
        kind!(self, B => B::KIND)
    }

    /// Whether `latest` is a cheap, in-process answer (else a round trip to
    /// the broker, worth caching).
    pub fn latest_is_cheap(&self) -> bool {
        kind!(self, B => B::LOCAL_POSITIONS)
    }

    /// Appends records atomically as one unit: either all are durable when
    /// this returns `Ok`, or the error says none were acknowledged.
    pub async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Appended>> {
        let partitions = dispatch!(self, b => b.partitions(topic))?;
        if let Some(record) = records.iter().find(|r| r.partition >= partitions) {
            return Err(BrokerError::Internal(format!(
                "partition {} out of range for topic {topic:?} ({partitions} partitions)",
                record.partition
            )));
        }
        let store = async |records| dispatch!(self, b => b.append(topic, records).await);
        match dispatch!(self, b => b.shared_index()) {
            Some(index) => index.append(self, topic, records, store).await,
            None => store(records).await,
        }
    }

    /// Reads up to `max` events after `from`, in order per partition. When
    /// there are none yet, waits up to `wait` for some to arrive.
    pub async fn read(
        &self,
        topic: &str,
        from: &Cursor,
        max: usize,
        wait: Duration,
    ) -> Result<ReadBatch> {
        self.read_only(topic, from, None, max, wait).await
    }

    /// [`Broker::read`] of the partitions marked in `only`.
    pub async fn read_only(
        &self,
        topic: &str,
        from: &Cursor,
        only: Option<&[bool]>,
        max: usize,
        wait: Duration,
    ) -> Result<ReadBatch> {
        dispatch!(self, b => b.read(topic, from, only, max, wait).await)
    }

    /// Like [`Broker::read`] (see [`READER_BYTES`]), but stops before the
    /// events add up to more than `max_bytes` (always at least one event), so that
    /// what a reader holds is bounded in bytes, not only in events. Reads in
    /// steps: `first` events, then as many as the average size so far says
    /// fit (at most four times the step before). A reader that must stay
    /// near `max_bytes` starts at 1; one that wants few round trips starts
    /// higher and may hold `first` events at once.
    pub async fn read_bounded(
        &self,
        topic: &str,
        from: &Cursor,
        only: Option<&[bool]>,
        max: usize,
        (max_bytes, first): (usize, usize),
        wait: Duration,
    ) -> Result<ReadBatch> {
        let mut batch = ReadBatch {
            events: Vec::new(),
            next: from.clone(),
        };
        let mut bytes = 0usize;
        let mut step = first.clamp(1, max.max(1));
        while batch.events.len() < max && bytes < max_bytes {
            let wait = if batch.events.is_empty() {
                wait
            } else {
                Duration::ZERO
            };
            let read = self.read_only(topic, &batch.next, only, step, wait).await?;
            let exhausted = read.events.len() < step;
            let mut took_all = true;
            for event in read.events {
                // Never past `max_bytes`, unless one event alone is larger.
                let over = bytes + event.payload.len() > max_bytes;
                if batch.events.len() >= max || (over && !batch.events.is_empty()) {
                    took_all = false;
                    break;
                }
                bytes += event.payload.len();
                batch.next.advance(event.partition, event.offset);
                batch.events.push(event);
            }
            if took_all {
                // The backend's own cursor: it may step over gaps.
                batch.next = read.next;
            }
            if exhausted || !took_all || batch.events.is_empty() {
                break;
            }
            // As many as the average size so far says still fit; none: done
            // (rather than read one more only to put it back).
            let average = (bytes / batch.events.len()).max(1);
            step = (max_bytes.saturating_sub(bytes) / average)
                .min(step * 4)
                .min(max - batch.events.len().min(max));
            if step == 0 {
                break;
            }
        }
        Ok(batch)
    }

    /// Reads `topic` from `from` to its end, or up to `until` (exclusive in
    /// each partition), in pages bounded in bytes, handing every event to
    /// `visit`; events that expire before it reaches them are skipped.
    /// Returns the cursor after the last event read.
    pub async fn scan(
        &self,
        topic: &str,
        from: Cursor,
        until: Option<&Cursor>,
        mut visit: impl FnMut(&StoredEvent),
    ) -> Result<Cursor> {
        let mut cursor = from;
        loop {
            let read = self
                .read_bounded(topic, &cursor, None, SCAN_BATCH, SCAN_BYTES, Duration::ZERO)
                .await;
            let batch = match read {
                Ok(batch) => batch,
                // Expired before it was scanned (retention ran meanwhile, or
                // `from` was old): what is gone is gone; go on from what is
                // retained.
                Err(BrokerError::CursorExpired { oldest, .. }) => {
                    cursor = oldest;
                    continue;
                }
                Err(err) => return Err(err),
            };
            if batch.events.is_empty() {
                return Ok(cursor);
            }
            for event in &batch.events {
                if until.is_none_or(|until| event.offset < until.next(event.partition)) {
                    visit(event);
                }
            }
            cursor = batch.next;
            if let Some(until) = until
                && (0..cursor.partitions()).all(|p| cursor.next(p) >= until.next(p))
            {
                return Ok(cursor);
            }
        }
    }

    /// The cursor at the first event of each partition stored at or after
    /// `time_ms` (milliseconds since the Unix epoch): resuming from it yields
    /// what was stored from then on. One mechanism for every backend: a
    /// binary search per partition over its offsets, reading one event per
    /// step, so it costs a few dozen reads, not a scan. Store times are
    /// taken as not going backwards within a partition (a clock that steps
    /// back may move the answer by the size of the step).
    pub async fn position_at(&self, topic: &str, time_ms: i64) -> Result<Cursor> {
        let retained = dispatch!(self, b => b.retained(topic).await)?;
        let ends: Vec<u64> = retained.iter().map(|r| r.end).collect();
        let mut next = Vec::with_capacity(retained.len());
        for (partition, range) in retained.iter().enumerate() {
            // The answer lies in [low, high]: every event below `low` is
            // older than `time_ms`; `high` is at or after it (or the end).
            let (mut low, mut high) = (range.oldest, range.end);
            while low < high {
                let probe = low + (high - low) / 2;
                match self.first_at(topic, &ends, partition, probe).await? {
                    // Nothing in [probe, high): the answer is at or below it.
                    None => high = probe,
                    Some((offset, _)) if offset >= high => high = probe,
                    Some((offset, stored)) if stored >= time_ms => high = offset,
                    Some((offset, _)) => low = offset + 1,
                }
            }
            next.push(high);
        }
        Ok(Cursor::new(next))
    }

    /// The offset and store time of the first event of `partition` at or
    /// after `offset`, if any (the other partitions read from `ends`, so
    /// only events published meanwhile come from them, and are skipped).
    async fn first_at(
        &self,
        topic: &str,
        ends: &[u64],
        partition: usize,
        offset: u64,
    ) -> Result<Option<(u64, i64)>> {
        let mut from = ends.to_vec();
        from[partition] = offset;
        loop {
            let batch = self
                .read(topic, &Cursor::new(from.clone()), 16, Duration::ZERO)
                .await?;
            if batch.events.is_empty() {
                return Ok(None);
            }
            if let Some(event) = batch.events.iter().find(|e| e.partition == partition) {
                return Ok(Some((event.offset, event.timestamp_ms)));
            }
            from = batch.next.offsets().to_vec();
            from[partition] = offset;
        }
    }

    /// Checks that `cursor` fits `topic` and lies in its retained log.
    pub async fn check(&self, topic: &str, cursor: &Cursor) -> Result<()> {
        let retained = dispatch!(self, b => b.retained(topic).await)?;
        check_cursor(cursor, &retained)
    }

    /// The events of `partition` from `place` up to `end` that are not
    /// settled (a group's lag there), counting at most `cap` of them where
    /// offsets are not dense: (lag, whether the count stopped at `cap`).
    pub async fn lag(
        &self,
        topic: &str,
        partition: usize,
        place: &Place,
        end: u64,
        cap: u64,
    ) -> Result<(u64, bool)> {
        let settled = |below: u64| -> u64 {
            place
                .done
                .iter()
                .map(|range| range.end.min(below).saturating_sub(range.start))
                .sum()
        };
        if kind!(self, B => B::DENSE_OFFSETS) {
            let between = end.saturating_sub(place.next);
            return Ok((between.saturating_sub(settled(end)), false));
        }
        let partitions = self.partitions(topic)?;
        let mut only = vec![false; partitions];
        only[partition] = true;
        let mut from = self.latest(topic).await?;
        from.set(partition, place.next);
        let mut counted = 0u64;
        loop {
            let batch = match self
                .read_only(topic, &from, Some(&only), SCAN_BATCH, Duration::ZERO)
                .await
            {
                Ok(batch) => batch,
                // Expired unread: what is retained is what lags.
                Err(BrokerError::CursorExpired { oldest, .. }) => {
                    from = oldest;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let done = batch.events.is_empty();
            for event in &batch.events {
                let settled = place.done.iter().any(|range| range.contains(&event.offset));
                if event.partition == partition && event.offset < end && !settled {
                    counted += 1;
                }
            }
            if done || counted >= cap || batch.next.next(partition) >= end {
                return Ok((counted.min(cap), counted >= cap));
            }
            from = batch.next;
        }
    }

    /// The cursor before the oldest retained event of every partition.
    pub async fn earliest(&self, topic: &str) -> Result<Cursor> {
        let retained = dispatch!(self, b => b.retained(topic).await)?;
        Ok(Cursor::new(retained.iter().map(|r| r.oldest).collect()))
    }

    /// The cursor after the newest stored event of every partition.
    pub async fn latest(&self, topic: &str) -> Result<Cursor> {
        let retained = dispatch!(self, b => b.retained(topic).await)?;
        Ok(Cursor::new(retained.iter().map(|r| r.end).collect()))
    }

    /// Stores a consumer group's cursor durably.
    pub async fn commit(&self, topic: &str, group: &str, cursor: &Cursor) -> Result<()> {
        let all: Vec<usize> = (0..cursor.partitions()).collect();
        self.commit_partitions(topic, group, cursor, &all).await
    }

    /// Stores the offsets of `partitions` of `cursor` as the group's,
    /// keeping the group's other partitions as they are.
    pub async fn commit_partitions(
        &self,
        topic: &str,
        group: &str,
        cursor: &Cursor,
        partitions: &[usize],
    ) -> Result<()> {
        self.commit_places(topic, group, &GroupCursor::from(cursor), partitions)
            .await
    }

    /// Stores the places of `partitions` of `cursor` (with what is settled
    /// above each) as the group's, keeping its other partitions as they are.
    pub async fn commit_places(
        &self,
        topic: &str,
        group: &str,
        cursor: &GroupCursor,
        partitions: &[usize],
    ) -> Result<()> {
        check_group_name(group)?;
        let expected = dispatch!(self, b => b.partitions(topic))?;
        if cursor.partitions() != expected || partitions.iter().any(|&p| p >= expected) {
            return Err(BrokerError::Internal(format!(
                "a cursor for {} partitions committed on topic {topic:?} ({expected} partitions)",
                cursor.partitions()
            )));
        }
        let places: Vec<(usize, Place)> = partitions
            .iter()
            .map(|&p| (p, cursor.place(p).clone()))
            .collect();
        if places.is_empty() {
            return Ok(());
        }
        dispatch!(self, b => b.commit(topic, group, &places).await)
    }

    /// See [`Backend::lease`].
    pub async fn lease(
        &self,
        scope: &str,
        item: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool> {
        dispatch!(self, b => b.lease(scope, item, holder, ttl).await)
    }

    /// See [`Backend::release`].
    pub async fn release(&self, scope: &str, item: &str, holder: &str) -> Result<()> {
        dispatch!(self, b => b.release(scope, item, holder).await)
    }

    /// See [`Backend::leases`].
    pub async fn leases(&self, scope: &str) -> Result<Vec<(String, String)>> {
        dispatch!(self, b => b.leases(scope).await)
    }

    /// The consumer group's last committed cursor, if it ever committed.
    pub async fn committed(&self, topic: &str, group: &str) -> Result<Option<Cursor>> {
        Ok(self
            .committed_places(topic, group)
            .await?
            .map(|c| c.cursor()))
    }

    /// The group's last committed places (with what is settled above each
    /// partition's cursor), if it ever committed.
    pub async fn committed_places(&self, topic: &str, group: &str) -> Result<Option<GroupCursor>> {
        check_group_name(group)?;
        dispatch!(self, b => b.committed(topic, group).await)
    }

    /// The groups with a committed cursor on `topic`, sorted.
    pub async fn groups(&self, topic: &str) -> Result<Vec<String>> {
        let mut names = dispatch!(self, b => b.groups(topic).await)?;
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Removes the group's committed cursor; true when it had one.
    pub async fn delete_group(&self, topic: &str, group: &str) -> Result<bool> {
        check_group_name(group)?;
        dispatch!(self, b => b.delete_group(topic, group).await)
    }

    /// The group's committed cursor; a group that never committed starts at
    /// the earliest or the latest event and commits that at once, so that a
    /// restart keeps its place.
    pub async fn committed_or_start(
        &self,
        topic: &str,
        group: &str,
        start_earliest: bool,
    ) -> Result<GroupCursor> {
        if let Some(cursor) = self.committed_places(topic, group).await? {
            return Ok(cursor);
        }
        let cursor = if start_earliest {
            self.earliest(topic).await?
        } else {
            self.latest(topic).await?
        };
        self.commit(topic, group, &cursor).await?;
        Ok(GroupCursor::from(&cursor))
    }

    /// `Ok` when the broker can take writes.
    pub async fn health(&self) -> Result<()> {
        dispatch!(self, b => b.health().await)
    }

    /// Flushes and stops; appends after this fail as unavailable.
    pub async fn close(&self) {
        dispatch!(self, b => b.close().await)
    }
}

/// What a backend retains of one partition, for checking cursors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retained {
    /// Positions below this were removed: a cursor there has lost events.
    pub lost_below: u64,
    /// The oldest position to resume from.
    pub oldest: u64,
    /// The position after the newest event.
    pub end: u64,
}

/// Checks that `from` fits the partitions and is neither older than what is
/// retained nor ahead of the end.
pub fn check_cursor(from: &Cursor, retained: &[Retained]) -> Result<()> {
    if from.partitions() != retained.len() {
        return Err(crate::cursor::CursorError::PartitionCount {
            found: from.partitions(),
            expected: retained.len(),
        }
        .into());
    }
    for (partition, range) in retained.iter().enumerate() {
        let next = from.next(partition);
        if next < range.lost_below {
            let oldest = retained
                .iter()
                .zip(from.offsets())
                .map(|(r, &n)| n.max(r.oldest))
                .collect();
            return Err(BrokerError::CursorExpired {
                partition,
                oldest: Cursor::new(oldest),
            });
        }
        if next > range.end {
            return Err(BrokerError::CursorAhead {
                partition,
                end: range.end,
            });
        }
    }
    Ok(())
}

/// Merges events read from several partitions into a page of at most `max`:
/// ordered by store time, except that each partition's events stay in
/// offset order (a clock that stepped back cannot reorder a partition, so
/// cutting the page never skips an event). Returns the cursor after them.
pub fn merge(from: &Cursor, mut events: Vec<StoredEvent>, max: usize) -> ReadBatch {
    events.sort_by_key(|e| (e.partition, e.offset));
    // Within a partition, order by the running maximum of the timestamps.
    let mut keyed: Vec<(i64, StoredEvent)> = Vec::with_capacity(events.len());
    let mut running: Option<(usize, i64)> = None;
    for event in events {
        let time = match running {
            Some((partition, time)) if partition == event.partition => time.max(event.timestamp_ms),
            _ => event.timestamp_ms,
        };
        running = Some((event.partition, time));
        keyed.push((time, event));
    }
    keyed.sort_by_key(|(time, e)| (*time, e.partition, e.offset));
    let mut next = from.clone();
    let events: Vec<StoredEvent> = keyed
        .into_iter()
        .take(max)
        .map(|(_, event)| event)
        .collect();
    for event in &events {
        next.advance(event.partition, event.offset);
    }
    ReadBatch { events, next }
}

pub(crate) fn check_group_name(group: &str) -> Result<()> {
    let valid = !group.is_empty()
        && group.len() <= 200
        && !group.starts_with('.')
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(BrokerError::BadGroup(group.chars().take(64).collect()))
    }
}
