//! Cursors: an opaque string naming a position in every partition of a topic.
//!
//! A cursor holds, for each partition, the offset of the next event to read.
//! Resuming from a cursor yields every later event once, in order per
//! partition. The text form is the offsets joined by `.` (`0.17.4.9`);
//! clients treat it as opaque.

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

    /// Moves past the event at `offset` in `partition`.
    pub fn advance(&mut self, partition: usize, offset: u64) {
        self.next[partition] = offset + 1;
    }

    /// What a consumer commits (a shared group, a handler): in each
    /// partition the lowest offset still pending (read, not yet acked), else
    /// where it has read to. Everything before it is done; a restart
    /// redelivers from it.
    pub fn lowest_pending<V>(
        pending: &[std::collections::BTreeMap<u64, V>],
        read: &Cursor,
    ) -> Cursor {
        Cursor::new(
            pending
                .iter()
                .zip(read.offsets())
                .map(|(pending, &read)| pending.keys().next().copied().unwrap_or(read))
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
}
