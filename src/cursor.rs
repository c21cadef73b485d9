//! Cursors: an opaque string naming a position in every partition of a topic.
//!
//! A cursor holds, for each partition, the offset of the next event to read.
//! Resuming from a cursor yields every later event once, in order per
//! partition. The text form is the offsets joined by `.` (`0.17.4.9`);
//! clients treat it as opaque.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    next: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("cursor {0:?} is not of the form N.N.N (one offset per partition)")]
    Malformed(String),
    #[error("cursor names {found} partitions but the topic has {expected}")]
    PartitionCount { found: usize, expected: usize },
}

impl Cursor {
    pub fn new(next: Vec<u64>) -> Self {
        Self { next }
    }

    /// The cursor at the very start of every partition.
    pub fn start(partitions: usize) -> Self {
        Self::new(vec![0; partitions])
    }

    /// Parses and checks that it fits a topic with `partitions` partitions.
    pub fn parse_for(text: &str, partitions: usize) -> Result<Self, CursorError> {
        let cursor: Cursor = text.parse()?;
        if cursor.partitions() != partitions {
            return Err(CursorError::PartitionCount {
                found: cursor.partitions(),
                expected: partitions,
            });
        }
        Ok(cursor)
    }

    pub fn partitions(&self) -> usize {
        self.next.len()
    }

    /// The offset of the next event to read in `partition`.
    pub fn next(&self, partition: usize) -> u64 {
        self.next[partition]
    }

    pub fn offsets(&self) -> &[u64] {
        &self.next
    }

    /// Places `partition` at `next`.
    pub fn set(&mut self, partition: usize, next: u64) {
        self.next[partition] = next;
    }

    /// Moves past the event at `offset` in `partition`.
    pub fn advance(&mut self, partition: usize, offset: u64) {
        self.next[partition] = offset + 1;
    }
}

/// A consumer's place in a topic (a shared group's, a handler's): how far
/// it has read, and the events read but not yet acked, per partition by
/// offset, each with what the consumer keeps for it.
#[derive(Debug)]
pub struct Pending<V> {
    read: Cursor,
    unacked: Vec<BTreeMap<u64, V>>,
}

impl<V> Pending<V> {
    /// Nothing read yet: reading starts at `start`.
    pub fn new(start: Cursor) -> Self {
        let unacked = (0..start.partitions()).map(|_| BTreeMap::new()).collect();
        Self {
            read: start,
            unacked,
        }
    }

    /// Where the next read starts.
    pub fn read_cursor(&self) -> &Cursor {
        &self.read
    }

    /// After a read: the next one starts at `next`.
    pub fn read_to(&mut self, next: Cursor) {
        self.read = next;
    }

    /// After the events before `oldest` expired unread: reading goes on
    /// from there (never back).
    pub fn skip_to(&mut self, oldest: &Cursor) {
        let merged = self
            .read
            .offsets()
            .iter()
            .zip(oldest.offsets())
            .map(|(&read, &oldest)| read.max(oldest))
            .collect();
        self.read = Cursor::new(merged);
    }

    /// Takes `partition` up from `next` (it moved to this consumer):
    /// forgets what was read of it before.
    pub fn restart(&mut self, partition: usize, next: u64) {
        self.read.set(partition, next);
        self.unacked[partition].clear();
    }

    /// Forgets the unacked events of `partition` (it moved away).
    pub fn forget(&mut self, partition: usize) {
        self.unacked[partition].clear();
    }

    /// Whether the event at `offset` in `partition` was read already.
    pub fn was_read(&self, partition: usize, offset: u64) -> bool {
        offset < self.read.next(partition)
    }

    /// A read event, now unacked.
    pub fn insert(&mut self, partition: usize, offset: u64, value: V) {
        self.unacked[partition].insert(offset, value);
    }

    pub fn get(&self, partition: usize, offset: u64) -> Option<&V> {
        self.unacked.get(partition)?.get(&offset)
    }

    pub fn get_mut(&mut self, partition: usize, offset: u64) -> Option<&mut V> {
        self.unacked.get_mut(partition)?.get_mut(&offset)
    }

    /// Acks an event: what was kept for it, if it was unacked.
    pub fn remove(&mut self, partition: usize, offset: u64) -> Option<V> {
        self.unacked.get_mut(partition)?.remove(&offset)
    }

    /// Events unacked.
    pub fn len(&self) -> usize {
        self.unacked.iter().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.unacked.iter().all(BTreeMap::is_empty)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.unacked.iter().flat_map(BTreeMap::values)
    }

    /// Every unacked event as (partition, offset, value), in partition and
    /// offset order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, u64, &mut V)> {
        self.unacked
            .iter_mut()
            .enumerate()
            .flat_map(|(partition, events)| {
                events
                    .iter_mut()
                    .map(move |(&offset, value)| (partition, offset, value))
            })
    }

    /// What to commit: in each partition the lowest unacked offset, else how
    /// far it has read. Everything before it is done; a restart redelivers
    /// from it.
    pub fn commit_point(&self) -> Cursor {
        Cursor::new(
            self.unacked
                .iter()
                .zip(self.read.offsets())
                .map(|(unacked, &read)| unacked.keys().next().copied().unwrap_or(read))
                .collect(),
        )
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, offset) in self.next.iter().enumerate() {
            if index > 0 {
                f.write_str(".")?;
            }
            write!(f, "{offset}")?;
        }
        Ok(())
    }
}

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || CursorError::Malformed(text.chars().take(64).collect());
        if text.is_empty() {
            return Err(malformed());
        }
        text.split('.')
            .map(|part| {
                // Only plain digits: `+1` or ` 1` would parse but are not ours.
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(malformed());
                }
                part.parse::<u64>().map_err(|_| malformed())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn text_form_round_trips(offsets in proptest::collection::vec(any::<u64>(), 1..64)) {
            let cursor = Cursor::new(offsets);
            prop_assert_eq!(cursor.to_string().parse::<Cursor>().unwrap(), cursor);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".*") {
            let _ = text.parse::<Cursor>();
        }
    }

    #[test]
    fn rejects_wrong_partition_count_and_junk() {
        assert_eq!(
            Cursor::parse_for("1.2", 3),
            Err(CursorError::PartitionCount {
                found: 2,
                expected: 3
            })
        );
        for junk in ["", ".", "1..2", "a", "-1", "+1", "1.2 "] {
            assert!(junk.parse::<Cursor>().is_err(), "{junk:?}");
        }
    }

    #[test]
    fn pending_commits_the_lowest_unacked_offset_else_the_read_position() {
        let mut pending = Pending::new(Cursor::new(vec![0, 5]));
        for offset in 0..4 {
            pending.insert(0, offset, ());
        }
        pending.read_to(Cursor::new(vec![4, 5]));
        assert_eq!(pending.commit_point(), Cursor::new(vec![0, 5]));
        // Acked out of order: the commit stays below the oldest unacked.
        pending.remove(0, 2);
        pending.remove(0, 0);
        assert_eq!(pending.commit_point(), Cursor::new(vec![1, 5]));
        assert_eq!(pending.len(), 2);
        pending.remove(0, 1);
        pending.remove(0, 3);
        assert_eq!(pending.commit_point(), Cursor::new(vec![4, 5]));
        assert!(pending.is_empty());
        assert!(pending.was_read(0, 3) && !pending.was_read(0, 4));
        // Expired events are skipped forward, never back.
        pending.skip_to(&Cursor::new(vec![2, 9]));
        assert_eq!(pending.read_cursor(), &Cursor::new(vec![4, 9]));
    }
}
