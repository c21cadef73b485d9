//! Cursors: an opaque string naming a position in every partition of a topic.
//!
//! A cursor holds, for each partition, the offset of the next event to read.
//! Resuming from a cursor yields every later event once, in order per
//! partition. The text form is the offsets joined by `.` (`0.17.4.9`);
//! clients treat it as opaque.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
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

/// Most ranges of settled offsets a [`Place`] keeps; above them, events
/// settled out of order are delivered again after a move or a restart
/// (at-least-once), and the stored place stays small (within Kafka's
/// default 4 KiB of commit metadata).
pub const MAX_DONE_RANGES: usize = 64;

/// Most delivery counts a [`Place`] keeps (the oldest events'); an event
/// beyond them that comes again after a move or a restart counts its
/// deliveries from there.
pub const MAX_TRIES: usize = 128;

/// A consumer group's committed place in one partition: the next offset to
/// deliver, the offsets above it already settled (acked while an earlier
/// event was still out), which whoever takes the partition up next does
/// not deliver again, and how often the unsettled ones were delivered.
///
/// Text form: `next`, then `:` and the settled half-open ranges relative
/// to `next`, then `;` and `offset*count` delivery counts relative to
/// `next`: `17:2-4;0*3` is 17 (delivered 3 times), with 19 and 20
/// settled. No `.`, so a group's places join like a cursor's offsets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Place {
    pub next: u64,
    /// Sorted, disjoint, apart from each other and from `next`.
    pub done: Vec<Range<u64>>,
    /// (offset, deliveries) of unsettled events, by offset, none settled.
    pub tries: Vec<(u64, u32)>,
}

impl Place {
    pub fn at(next: u64) -> Self {
        Self {
            next,
            done: Vec::new(),
            tries: Vec::new(),
        }
    }

    /// `next` with the settled `ranges` (sorted, disjoint) above it: ranges
    /// that touch are joined, one starting at `next` moves `next` past it,
    /// and beyond [`MAX_DONE_RANGES`] the highest are dropped.
    pub fn new(mut next: u64, ranges: impl IntoIterator<Item = Range<u64>>) -> Self {
        let mut done: Vec<Range<u64>> = Vec::new();
        for range in ranges {
            let start = range.start.max(next);
            if start >= range.end {
                continue;
            }
            match done.last_mut() {
                Some(last) if last.end >= start => last.end = last.end.max(range.end),
                _ if start == next => next = range.end,
                _ => done.push(start..range.end),
            }
        }
        done.truncate(MAX_DONE_RANGES);
        Self {
            next,
            done,
            tries: Vec::new(),
        }
    }

    /// With delivery counts (by offset): those of unsettled events, the
    /// first [`MAX_TRIES`].
    pub fn with_tries(mut self, tries: impl IntoIterator<Item = (u64, u32)>) -> Self {
        let mut kept: Vec<(u64, u32)> = tries
            .into_iter()
            .filter(|&(offset, count)| count > 0 && offset >= self.next && !self.is_done(offset))
            .collect();
        kept.sort_unstable();
        kept.dedup_by_key(|(offset, _)| *offset);
        kept.truncate(MAX_TRIES);
        self.tries = kept;
        self
    }

    /// Whether `offset` is settled.
    pub fn is_done(&self, offset: u64) -> bool {
        offset < self.next || self.done.iter().any(|range| range.contains(&offset))
    }

    /// What the place holds beyond `next`, as text (`:a-b,c-d;e*n`), empty
    /// when nothing: what Kafka keeps as a commit's metadata.
    pub fn extra_text(&self) -> String {
        let mut text = String::new();
        for (index, range) in self.done.iter().enumerate() {
            text.push(if index == 0 { ':' } else { ',' });
            text.push_str(&format!(
                "{}-{}",
                range.start - self.next,
                range.end - self.next
            ));
        }
        for (index, (offset, count)) in self.tries.iter().enumerate() {
            text.push(if index == 0 { ';' } else { ',' });
            text.push_str(&format!("{}*{count}", offset - self.next));
        }
        text
    }

    /// Reads `next` with [`Place::extra_text`]'s form.
    pub fn with_extra_text(next: u64, text: &str) -> Option<Self> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let number = |s: &str| digits(s).then(|| s.parse::<u64>().ok()).flatten();
        let (done, tries) = text.split_once(';').unwrap_or((text, ""));
        if text.contains(';') && tries.is_empty() {
            return None;
        }
        let done = match done.strip_prefix(':') {
            Some("") => return None,
            Some(done) => done,
            None if done.is_empty() => "",
            None => return None,
        };
        let mut ranges = Vec::new();
        for part in done.split(',').filter(|_| !done.is_empty()) {
            let (start, end) = part.split_once('-')?;
            let start = next.checked_add(number(start)?)?;
            let end = next.checked_add(number(end)?)?;
            if start <= next
                || end <= start
                || ranges.last().is_some_and(|r: &Range<u64>| r.end >= start)
            {
                return None;
            }
            ranges.push(start..end);
        }
        let mut counts = Vec::new();
        for part in tries.split(',').filter(|_| !tries.is_empty()) {
            let (offset, count) = part.split_once('*')?;
            let offset = next.checked_add(number(offset)?)?;
            let count = u32::try_from(number(count)?).ok()?;
            if count == 0 || counts.last().is_some_and(|&(o, _)| o >= offset) {
                return None;
            }
            counts.push((offset, count));
        }
        let place = Self::new(next, ranges).with_tries(counts.iter().copied());
        (place.tries.len() == counts.len()).then_some(place)
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.next, self.extra_text())
    }
}

/// A consumer group's committed places, one per partition; its text form
/// is theirs joined by `.` (a plain cursor's text is one with nothing
/// settled above `next`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCursor {
    places: Vec<Place>,
}

impl GroupCursor {
    pub fn new(places: Vec<Place>) -> Self {
        Self { places }
    }

    pub fn partitions(&self) -> usize {
        self.places.len()
    }

    pub fn place(&self, partition: usize) -> &Place {
        &self.places[partition]
    }

    pub fn set(&mut self, partition: usize, place: Place) {
        self.places[partition] = place;
    }

    /// Where each partition resumes.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.places.iter().map(|p| p.next).collect())
    }

    /// Parses and checks that it fits a topic with `partitions` partitions.
    pub fn parse_for(text: &str, partitions: usize) -> Result<Self, CursorError> {
        let malformed = || CursorError::Malformed(text.chars().take(64).collect());
        let places = text
            .split('.')
            .map(|part| {
                let split = part.find([':', ';']).unwrap_or(part.len());
                let next: Cursor = part[..split].parse().map_err(|_| malformed())?;
                if next.partitions() != 1 {
                    return Err(malformed());
                }
                Place::with_extra_text(next.next(0), &part[split..]).ok_or_else(malformed)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if places.len() != partitions {
            return Err(CursorError::PartitionCount {
                found: places.len(),
                expected: partitions,
            });
        }
        Ok(Self::new(places))
    }
}

impl From<&Cursor> for GroupCursor {
    fn from(cursor: &Cursor) -> Self {
        Self::new(
            cursor
                .offsets()
                .iter()
                .map(|&next| Place::at(next))
                .collect(),
        )
    }
}

impl fmt::Display for GroupCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, place) in self.places.iter().enumerate() {
            if index > 0 {
                f.write_str(".")?;
            }
            write!(f, "{place}")?;
        }
        Ok(())
    }
}

/// A consumer's place in a topic (a shared group's, a handler's): how far
/// it has read, and the events read but not yet acked, per partition by
/// offset, each with what the consumer keeps for it.
#[derive(Debug)]
pub struct Pending<V> {
    read: Cursor,
    unacked: Vec<BTreeMap<u64, V>>,
    /// Per partition, offsets at or above `read` settled before a restart
    /// (a [`Place`]'s `done`): not to be taken again.
    settled: Vec<Vec<Range<u64>>>,
    /// Per partition, deliveries of events at or above `read` counted
    /// before a restart (a [`Place`]'s `tries`).
    tries: Vec<BTreeMap<u64, u32>>,
}

impl<V> Pending<V> {
    /// Nothing read yet: reading starts at `start`.
    pub fn new(start: Cursor) -> Self {
        let unacked = (0..start.partitions()).map(|_| BTreeMap::new()).collect();
        let settled = vec![Vec::new(); start.partitions()];
        let tries = vec![BTreeMap::new(); start.partitions()];
        Self {
            read: start,
            unacked,
            settled,
            tries,
        }
    }

    /// Where the next read starts.
    pub fn read_cursor(&self) -> &Cursor {
        &self.read
    }

    /// After a read: the next one starts at `next`.
    pub fn read_to(&mut self, next: Cursor) {
        self.read = next;
        for (partition, settled) in self.settled.iter_mut().enumerate() {
            let read = self.read.next(partition);
            settled.retain(|range| range.end > read);
            self.tries[partition].retain(|&offset, _| offset >= read);
        }
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
        self.restart_at(partition, Place::at(next));
    }

    /// Takes `partition` up from a group's committed `place`: the events
    /// it names as settled are not taken again ([`Pending::settled`]).
    pub fn restart_at(&mut self, partition: usize, place: Place) {
        self.read.set(partition, place.next);
        self.unacked[partition].clear();
        self.settled[partition] = place.done;
        self.tries[partition] = place.tries.into_iter().collect();
    }

    /// Forgets the unacked events of `partition` (it moved away).
    pub fn forget(&mut self, partition: usize) {
        self.unacked[partition].clear();
        self.settled[partition].clear();
        self.tries[partition].clear();
    }

    /// How often the event at `offset` in `partition` was delivered before
    /// the partition was taken up (0: never, as far as is known).
    pub fn tries(&self, partition: usize, offset: u64) -> u32 {
        self.tries[partition].get(&offset).copied().unwrap_or(0)
    }

    /// Whether the event at `offset` in `partition` was settled before the
    /// partition was taken up (so reading it again skips it).
    pub fn settled(&self, partition: usize, offset: u64) -> bool {
        self.settled[partition]
            .iter()
            .any(|range| range.contains(&offset))
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

    /// What a shared group commits: [`Pending::commit_point`], with the
    /// events above it that are settled already (acked out of order, or
    /// settled before a restart and not read again yet), so that they are
    /// not delivered again after a move or a restart, and how often the
    /// unsettled ones were delivered (`deliveries` of what is kept for one).
    pub fn commit_places(&self, deliveries: impl Fn(&V) -> u32) -> GroupCursor {
        let places = self
            .unacked
            .iter()
            .zip(self.read.offsets())
            .zip(self.settled.iter().zip(&self.tries))
            .map(|((unacked, &read), (settled, tries))| {
                let mut ranges = Vec::new();
                let mut from = None::<u64>;
                for &offset in unacked.keys() {
                    if let Some(start) = from.filter(|&start| start < offset) {
                        ranges.push(start..offset);
                    }
                    from = Some(offset + 1);
                }
                let next = unacked.keys().next().copied().unwrap_or(read);
                if let Some(start) = from.filter(|&start| start < read) {
                    ranges.push(start..read);
                }
                ranges.extend(settled.iter().cloned());
                ranges.sort_by_key(|range| range.start);
                let counted = unacked.iter().map(|(&offset, v)| (offset, deliveries(v)));
                let carried = tries.iter().map(|(&offset, &count)| (offset, count));
                Place::new(next, ranges).with_tries(counted.chain(carried))
            })
            .collect();
        GroupCursor::new(places)
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

/// The position of a stream over several topics: a cursor per topic, as
/// text `orders:0.17.4.9,github:3` (topic names hold no `:` or `,`). It is
/// the SSE id of `GET /v1/stream`, so `Last-Event-ID` resumes every topic
/// of the set exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamCursor {
    by_topic: BTreeMap<String, Cursor>,
}

impl StreamCursor {
    pub fn get(&self, topic: &str) -> Option<&Cursor> {
        self.by_topic.get(topic)
    }

    pub fn set(&mut self, topic: &str, cursor: &Cursor) {
        match self.by_topic.get_mut(topic) {
            Some(held) => held.clone_from(cursor),
            None => {
                self.by_topic.insert(topic.to_owned(), cursor.clone());
            }
        }
    }
}

impl fmt::Display for StreamCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (topic, cursor)) in self.by_topic.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{topic}:{cursor}")?;
        }
        Ok(())
    }
}

impl FromStr for StreamCursor {
    type Err = CursorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || CursorError::Malformed(text.to_owned());
        let mut by_topic = BTreeMap::new();
        for part in text.split(',').filter(|part| !part.is_empty()) {
            let (topic, cursor) = part.split_once(':').ok_or_else(malformed)?;
            if topic.is_empty() || by_topic.contains_key(topic) {
                return Err(malformed());
            }
            by_topic.insert(topic.to_owned(), cursor.parse().map_err(|_| malformed())?);
        }
        Ok(Self { by_topic })
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
            let _ = GroupCursor::parse_for(&text, 2);
        }

        #[test]
        fn places_round_trip(next in 0u64..1 << 40, gaps in proptest::collection::vec((1u64..50, 1u64..50), 0..80)) {
            let mut at = next;
            let ranges: Vec<Range<u64>> = gaps.iter().map(|&(gap, len)| {
                let range = at + gap..at + gap + len;
                at = range.end;
                range
            }).collect();
            let place = Place::new(next, ranges);
            let cursor = GroupCursor::new(vec![place.clone(), Place::at(7)]);
            prop_assert_eq!(GroupCursor::parse_for(&cursor.to_string(), 2).unwrap(), cursor);
            prop_assert_eq!(Place::with_extra_text(next, &place.extra_text()), Some(place));
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

    #[test]
    fn a_group_commits_what_is_acked_above_its_oldest_unacked_event() {
        let mut pending = Pending::new(Cursor::new(vec![10, 0]));
        for offset in 10..20 {
            pending.insert(0, offset, ());
        }
        pending.read_to(Cursor::new(vec![20, 0]));
        // 10 and 14 still out; 11-13 and 15-19 acked.
        for offset in [11, 12, 13, 15, 16, 17, 18, 19] {
            pending.remove(0, offset);
        }
        let places = pending.commit_places(|_| 0);
        assert_eq!(places.to_string(), "10:1-4,5-10.0");
        assert_eq!(places.place(0).done, vec![11..14, 15..20]);
        assert_eq!(places.cursor(), Cursor::new(vec![10, 0]));
        assert_eq!(
            GroupCursor::parse_for("10:1-4,5-10.0", 2),
            Ok(places.clone())
        );

        // Taken up elsewhere from those places: 11-13 and 15-19 are not
        // taken again, and stay settled until read past.
        let mut again = Pending::new(Cursor::new(vec![0, 0]));
        again.restart_at(0, places.place(0).clone());
        assert!(again.settled(0, 12) && again.settled(0, 19));
        assert!(!again.settled(0, 10) && !again.settled(0, 14) && !again.settled(0, 20));
        assert_eq!(again.commit_places(|_| 0).place(0), places.place(0));
        again.insert(0, 10, ());
        again.read_to(Cursor::new(vec![12, 0]));
        again.remove(0, 10);
        // 10 acked: the place moves up to 14, the oldest one still due.
        assert_eq!(again.commit_places(|_| 0).to_string(), "14:1-6.0");
    }

    #[test]
    fn a_group_commits_how_often_its_unsettled_events_were_delivered() {
        let mut pending: Pending<u32> = Pending::new(Cursor::new(vec![10]));
        pending.insert(0, 10, 2);
        pending.insert(0, 11, 0);
        pending.insert(0, 12, 1);
        pending.read_to(Cursor::new(vec![13]));
        pending.remove(0, 11);
        let places = pending.commit_places(|&n| n);
        assert_eq!(places.to_string(), "10:1-2;0*2,2*1");
        assert_eq!(
            GroupCursor::parse_for("10:1-2;0*2,2*1", 1),
            Ok(places.clone())
        );
        assert_eq!(
            GroupCursor::parse_for("10;0*2", 1).unwrap().place(0).tries,
            vec![(10, 2)]
        );

        // Taken up elsewhere: the counts go on from there, and are kept
        // for events not read again yet.
        let mut again: Pending<u32> = Pending::new(Cursor::new(vec![0]));
        again.restart_at(0, places.place(0).clone());
        assert_eq!(
            (again.tries(0, 10), again.tries(0, 12), again.tries(0, 13)),
            (2, 1, 0)
        );
        assert_eq!(again.commit_places(|&n| n), places);
        again.insert(0, 10, 3);
        again.read_to(Cursor::new(vec![11]));
        assert_eq!(again.commit_places(|&n| n).to_string(), "10:1-2;0*3,2*1");
    }

    #[test]
    fn places_join_touching_ranges_and_keep_a_bounded_number() {
        assert_eq!(Place::new(5, [5..7, 9..10, 10..12]).to_string(), "7:2-5");
        let many = Place::new(0, (0..200).map(|n| 2 * n + 1..2 * n + 2));
        assert_eq!(many.done.len(), MAX_DONE_RANGES);
        assert!(
            many.to_string().len() < 1024,
            "fits Kafka's commit metadata"
        );
        // A plain cursor's text is a group cursor with nothing settled.
        let plain = GroupCursor::parse_for("3.4", 2).unwrap();
        assert_eq!(plain.cursor(), Cursor::new(vec![3, 4]));
        for junk in [
            "3:",
            "3:0-2.4",
            "3:2-2.4",
            "3:4-6,5-7.4",
            "3:x-1.4",
            "3:1.4:",
            "3;",
            "3;1*0.4",
            "3;2*1,1*1.4",
            "3;1.4",
            "3:1-2:3-4.4",
        ] {
            assert!(GroupCursor::parse_for(junk, 2).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn stream_cursors_round_trip() {
        let text = "github:3,orders.eu:0.17.4.9";
        let cursor: StreamCursor = text.parse().unwrap();
        assert_eq!(cursor.to_string(), text);
        assert_eq!(
            cursor.get("orders.eu"),
            Some(&Cursor::new(vec![0, 17, 4, 9]))
        );
        for bad in ["orders", "orders:x", ":1", "a:1,a:2"] {
            assert!(bad.parse::<StreamCursor>().is_err(), "{bad}");
        }
        assert_eq!("".parse::<StreamCursor>().unwrap(), StreamCursor::default());
    }
}
