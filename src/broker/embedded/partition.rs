//! One partition of the embedded log: a directory of segment files named by
//! their first offset, recovered on open, read by many, written by one.
//!
//! Readers see only committed records: the writer publishes a segment's new
//! end, size and index entries under the state lock after the records are
//! durable, never before.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tracing::warn;

use super::record::{self, Reader};
use crate::broker::{BrokerError, StoredEvent};

/// Distance in bytes between entries of a segment's sparse offset index.
const INDEX_INTERVAL_BYTES: u64 = 4096;

struct Segment {
    base: u64,
    path: PathBuf,
    /// The active segment's file, shared with the writer; sealed segments
    /// are opened on demand through the [`SegmentFiles`] cache.
    file: Option<Arc<File>>,
    /// The offset after the last committed record.
    end: u64,
    /// Committed bytes.
    size: u64,
    /// (offset, file position) every `INDEX_INTERVAL_BYTES` or so.
    index: Vec<(u64, u64)>,
    /// Timestamp of the last record, for age-based retention.
    last_timestamp_ms: i64,
}

impl Segment {
    fn position_of(&self, offset: u64) -> u64 {
        let i = self.index.partition_point(|&(o, _)| o <= offset);
        if i == 0 { 0 } else { self.index[i - 1].1 }
    }
}

#[derive(Default)]
struct State {
    segments: Vec<Segment>,
}

/// Open files of sealed segments, shared by every partition of the log and
/// capped, so that a log of many segments holds a bounded number of file
/// descriptors (the least recently read is closed first; a reader that
/// holds it keeps it open until done).
pub struct SegmentFiles {
    capacity: usize,
    clock: AtomicU64,
    open: Mutex<HashMap<PathBuf, (Arc<File>, u64)>>,
}

impl SegmentFiles {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            clock: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, path: &Path) -> io::Result<Arc<File>> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock().expect("segment file cache lock poisoned");
        if let Some((file, used)) = open.get_mut(path) {
            *used = now;
            return Ok(Arc::clone(file));
        }
        if open.len() >= self.capacity {
            let oldest = open
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(path, _)| path.clone());
            if let Some(oldest) = oldest {
                open.remove(&oldest);
            }
        }
        let file = Arc::new(File::open(path)?);
        open.insert(path.to_owned(), (Arc::clone(&file), now));
        Ok(file)
    }

    fn forget(&self, path: &Path) {
        self.open
            .lock()
            .expect("segment file cache lock poisoned")
            .remove(path);
    }
}

pub struct Partition {
    pub number: usize,
    dir: PathBuf,
    /// The partition's directory, kept open: making a new segment durable
    /// (and undoing one) needs no new file descriptor.
    dir_file: File,
    files: Arc<SegmentFiles>,
    state: RwLock<State>,
    /// First retained offset; mirrors `state` for lock-free checks.
    start: AtomicU64,
    /// Next offset to be committed; mirrors `state` for lock-free checks.
    end: AtomicU64,
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// A partition's committed events in offset order, read a chunk at a time
/// as they are asked for.
pub struct Events {
    partition: usize,
    /// The offset wanted next.
    next: u64,
    plan: std::vec::IntoIter<Reader>,
    current: Option<Reader>,
}

impl Events {
    pub fn next_event(&mut self) -> Result<Option<StoredEvent>, BrokerError> {
        loop {
            let reader = match &mut self.current {
                Some(reader) => reader,
                None => match self.plan.next() {
                    Some(reader) => self.current.insert(reader),
                    None => return Ok(None),
                },
            };
            let record = match reader.next_record() {
                Ok(Ok(Some(record))) => record,
                Ok(Ok(None)) => {
                    self.current = None;
                    continue;
                }
                Ok(Err(reason)) => {
                    return Err(corrupt(
                        self.partition,
                        format!("at byte {}: {reason}", reader.position()),
                    ));
                }
                Err(err) => {
                    return Err(BrokerError::unavailable(format!(
                        "reading the log failed: {err}"
                    )));
                }
            };
            // The index points at or before the wanted offset.
            if record.offset < self.next {
                continue;
            }
            self.next = record.offset + 1;
            return Ok(Some(StoredEvent {
                partition: self.partition,
                offset: record.offset,
                timestamp_ms: record.timestamp_ms,
                payload: record.payload,
            }));
        }
    }
}

fn corrupt(partition: usize, err: impl std::fmt::Display) -> BrokerError {
    BrokerError::Corrupt(format!("partition {partition}: {err}"))
}

impl Partition {
    pub fn start(&self) -> u64 {
        self.start.load(Ordering::Acquire)
    }

    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// The bytes of its segment files.
    pub fn bytes(&self) -> u64 {
        let state = self.state.read().expect("partition lock poisoned");
        state.segments.iter().map(|s| s.size).sum()
    }

    /// The committed events from `from` on, read lazily.
    pub fn events(&self, from: u64) -> Result<Events, BrokerError> {
        // Plan the reads under the lock, do the I/O without it.
        let state = self.state.read().expect("partition lock poisoned");
        let start = state.segments.first().map_or(0, |s| s.base);
        let end = state.segments.last().map_or(0, |s| s.end);
        if from < start {
            return Err(BrokerError::CursorExpired {
                partition: self.number,
                oldest: crate::cursor::Cursor::new(vec![start]),
            });
        }
        if from > end {
            return Err(BrokerError::CursorAhead {
                partition: self.number,
                end,
            });
        }
        let first = state
            .segments
            .partition_point(|s| s.base <= from)
            .saturating_sub(1);
        let plan: Vec<Reader> = state.segments[first..]
            .iter()
            .filter(|s| s.end > from)
            .map(|s| {
                let file = match &s.file {
                    Some(file) => Arc::clone(file),
                    None => self.files.get(&s.path).map_err(|err| {
                        BrokerError::unavailable(format!("cannot open {}: {err}", s.path.display()))
                    })?,
                };
                Ok(Reader::new(file, s.position_of(from), s.size))
            })
            .collect::<Result<_, BrokerError>>()?;
        Ok(Events {
            partition: self.number,
            next: from,
            plan: plan.into_iter(),
            current: None,
        })
    }

    /// Removes whole sealed segments that are older than `max_age_ms` or that
    /// push the partition over `max_bytes`. The active segment always stays.
    pub fn apply_retention(&self, now_ms: i64, max_age_ms: Option<i64>, max_bytes: Option<u64>) {
        let mut removed = Vec::new();
        {
            let mut state = self.state.write().expect("partition lock poisoned");
            let mut total: u64 = state.segments.iter().map(|s| s.size).sum();
            while state.segments.len() > 1 {
                let oldest = &state.segments[0];
                let too_old = max_age_ms.is_some_and(|age| oldest.last_timestamp_ms < now_ms - age);
                let too_big = max_bytes.is_some_and(|limit| total > limit);
                if !(too_old || too_big) {
                    break;
                }
                total -= oldest.size;
                removed.push(state.segments.remove(0));
            }
            if let Some(first) = state.segments.first() {
                self.start.store(first.base, Ordering::Release);
            }
        }
        for segment in removed {
            self.files.forget(&segment.path);
            // Readers holding the file keep reading it; unlinking is safe.
            if let Err(err) = fs::remove_file(&segment.path) {
                warn!(path = %segment.path.display(), error = %err, "removing an expired segment failed");
            }
        }
    }
}

/// The single writer of a partition. It stages records, then commits
/// (flush + fsync + publish) or rolls back to the last commit.
pub struct PartitionWriter {
    pub partition: Arc<Partition>,
    segment_bytes: u64,
    /// Active segment: base, file, bytes written (committed or not).
    active_base: u64,
    active_file: Arc<File>,
    active_size: u64,
    next_offset: u64,
    last_timestamp_ms: i64,
    /// Encoded records not yet written to the active file.
    buffer: Vec<u8>,
    staged: Staged,
    /// Records written but not yet fsynced (interval mode).
    pub unsynced: bool,
}

/// Everything since the last commit, to publish or to undo.
#[derive(Default)]
struct Staged {
    touched: bool,
    /// Segments sealed or created since the last commit, oldest first: the
    /// committed active segment first (if it was sealed), then new ones.
    progress: Vec<SegmentProgress>,
    /// Files that need an fsync before commit (sealed segments).
    sealed_files: Vec<Arc<File>>,
    new_files: Vec<(u64, PathBuf, Arc<File>)>,
    /// The committed state to return to on rollback.
    committed: Option<Committed>,
}

struct Committed {
    active_base: u64,
    active_file: Arc<File>,
    active_size: u64,
    next_offset: u64,
    last_timestamp_ms: i64,
}

/// What a segment gained since the last commit.
struct SegmentProgress {
    base: u64,
    end: u64,
    size: u64,
    last_timestamp_ms: i64,
    index: Vec<(u64, u64)>,
    last_indexed_pos: Option<u64>,
}

impl PartitionWriter {
    /// Opens (recovering) or creates the partition in `dir`.
    pub fn open(
        dir: PathBuf,
        number: usize,
        segment_bytes: u64,
        files: Arc<SegmentFiles>,
    ) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        let mut bases: Vec<u64> = fs::read_dir(&dir)?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name();
                let name = name.to_str()?;
                name.strip_suffix(".log")?.parse::<u64>().ok()
            })
            .collect();
        bases.sort_unstable();
        let mut segments = Vec::new();
        let count = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let segment = recover_segment(&dir, number, base)?;
            if segment.size == 0 && i + 1 < count {
                fs::remove_file(&segment.path)?;
                continue;
            }
            segments.push(segment);
        }
        let dir_file = File::open(&dir)?;
        if segments.is_empty() {
            segments.push(create_segment(&dir, 0)?);
            dir_file.sync_all()?;
        }
        // Only the active segment keeps its file open.
        let sealed = segments.len() - 1;
        for segment in &mut segments[..sealed] {
            segment.file = None;
        }
        let active = segments.last().expect("at least one segment");
        let writer_state = (
            active.base,
            Arc::clone(active.file.as_ref().expect("the active segment is open")),
            active.size,
            active.end,
        );
        let last_timestamp_ms = segments
            .iter()
            .map(|s| s.last_timestamp_ms)
            .max()
            .unwrap_or(0);
        let start = segments[0].base;
        let partition = Arc::new(Partition {
            number,
            dir,
            dir_file,
            files,
            start: AtomicU64::new(start),
            end: AtomicU64::new(writer_state.3),
            state: RwLock::new(State { segments }),
        });
        Ok(Self {
            partition,
            segment_bytes,
            active_base: writer_state.0,
            active_file: writer_state.1,
            active_size: writer_state.2,
            next_offset: writer_state.3,
            last_timestamp_ms,
            buffer: Vec::new(),
            staged: Staged::default(),
            unsynced: false,
        })
    }

    /// Stages one record; returns its offset. Nothing is visible or durable
    /// until `commit`.
    pub fn stage(&mut self, now_ms: i64, payload: &[u8]) -> io::Result<(u64, i64)> {
        if !self.staged.touched {
            self.staged.touched = true;
            self.staged.committed = Some(Committed {
                active_base: self.active_base,
                active_file: Arc::clone(&self.active_file),
                active_size: self.active_size,
                next_offset: self.next_offset,
                last_timestamp_ms: self.last_timestamp_ms,
            });
            self.staged.progress.push(self.progress_of_active());
        }
        let len = record::encoded_len(payload.len());
        if self.active_size > 0 && self.active_size + len > self.segment_bytes {
            self.roll()?;
        }
        // Timestamps never go backwards within a partition.
        let timestamp_ms = now_ms.max(self.last_timestamp_ms);
        let offset = self.next_offset;
        let pos = self.active_size;
        let progress = self
            .staged
            .progress
            .last_mut()
            .expect("progress for the active segment");
        if progress
            .last_indexed_pos
            .is_none_or(|last| pos - last >= INDEX_INTERVAL_BYTES)
        {
            progress.index.push((offset, pos));
            progress.last_indexed_pos = Some(pos);
        }
        record::encode(&mut self.buffer, offset, timestamp_ms, payload);
        self.active_size += len;
        self.next_offset += 1;
        self.last_timestamp_ms = timestamp_ms;
        progress.end = self.next_offset;
        progress.size = self.active_size;
        progress.last_timestamp_ms = timestamp_ms;
        Ok((offset, timestamp_ms))
    }

    fn progress_of_active(&self) -> SegmentProgress {
        let state = self
            .partition
            .state
            .read()
            .expect("partition lock poisoned");
        let last_indexed_pos = state
            .segments
            .last()
            .and_then(|s| s.index.last().map(|&(_, pos)| pos));
        SegmentProgress {
            base: self.active_base,
            end: self.next_offset,
            size: self.active_size,
            last_timestamp_ms: self.last_timestamp_ms,
            index: Vec::new(),
            last_indexed_pos,
        }
    }

    fn flush_buffer(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            let pos = self.active_size - self.buffer.len() as u64;
            self.active_file.write_all_at(&self.buffer, pos)?;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the next offset.
    fn roll(&mut self) -> io::Result<()> {
        self.flush_buffer()?;
        let dir = self.partition.dir.clone();
        let base = self.next_offset;
        let path = segment_path(&dir, base);
        let file = Arc::new(open_segment_file(&path)?);
        self.staged
            .sealed_files
            .push(std::mem::replace(&mut self.active_file, Arc::clone(&file)));
        self.staged.new_files.push((base, path, file));
        self.active_base = base;
        self.active_size = 0;
        self.staged.progress.push(SegmentProgress {
            base,
            end: base,
            size: 0,
            last_timestamp_ms: self.last_timestamp_ms,
            index: Vec::new(),
            last_indexed_pos: None,
        });
        Ok(())
    }

    pub fn is_touched(&self) -> bool {
        self.staged.touched
    }

    /// Writes staged records to the file and, when `sync`, makes them
    /// durable (fsync of data files and, for new segments, the directory).
    pub fn write(&mut self, sync: bool) -> io::Result<()> {
        self.flush_buffer()?;
        if sync {
            for file in &self.staged.sealed_files {
                file.sync_data()?;
            }
            self.active_file.sync_data()?;
            if !self.staged.new_files.is_empty() {
                self.partition.dir_file.sync_all()?;
            }
        } else {
            self.unsynced = true;
        }
        Ok(())
    }

    /// fsyncs what interval mode wrote without syncing.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.active_file.sync_data()?;
            self.partition.dir_file.sync_all()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Makes the staged records visible to readers.
    pub fn publish(&mut self) {
        let staged = std::mem::take(&mut self.staged);
        if !staged.touched {
            return;
        }
        let mut new_files = staged.new_files.into_iter();
        let mut state = self
            .partition
            .state
            .write()
            .expect("partition lock poisoned");
        for progress in staged.progress {
            let existing = state
                .segments
                .iter_mut()
                .rev()
                .find(|s| s.base == progress.base);
            let segment = match existing {
                Some(segment) => segment,
                None => {
                    let (base, path, file) = new_files.next().expect("a file for each new segment");
                    debug_assert_eq!(base, progress.base);
                    // The segment before it is sealed now: its file goes.
                    if let Some(sealed) = state.segments.last_mut() {
                        sealed.file = None;
                    }
                    state.segments.push(Segment {
                        base,
                        path,
                        file: Some(file),
                        end: base,
                        size: 0,
                        index: Vec::new(),
                        last_timestamp_ms: progress.last_timestamp_ms,
                    });
                    state.segments.last_mut().expect("just pushed")
                }
            };
            segment.end = progress.end;
            segment.size = progress.size;
            segment.last_timestamp_ms = progress.last_timestamp_ms;
            segment.index.extend(progress.index);
        }
        self.partition
            .end
            .store(self.next_offset, Ordering::Release);
    }

    /// Undoes everything staged since the last commit: new segment files are
    /// removed and the active file is cut back to its committed size.
    pub fn rollback(&mut self) -> io::Result<()> {
        let staged = std::mem::take(&mut self.staged);
        self.buffer.clear();
        let Some(committed) = staged.committed else {
            return Ok(());
        };
        for (_, path, _) in &staged.new_files {
            let _ = fs::remove_file(path);
        }
        self.active_base = committed.active_base;
        self.active_file = committed.active_file;
        self.active_size = committed.active_size;
        self.next_offset = committed.next_offset;
        self.last_timestamp_ms = committed.last_timestamp_ms;
        self.repair()
    }

    /// Cuts the active file back to its committed size and makes that
    /// durable; what a rollback ends with, and what a failed one retries.
    /// Needs no new file descriptor.
    pub fn repair(&mut self) -> io::Result<()> {
        self.active_file.set_len(self.active_size)?;
        self.active_file.sync_all()?;
        self.partition.dir_file.sync_all()
    }
}

fn open_segment_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn create_segment(dir: &Path, base: u64) -> io::Result<Segment> {
    let path = segment_path(dir, base);
    let file = Arc::new(open_segment_file(&path)?);
    Ok(Segment {
        base,
        path,
        file: Some(file),
        end: base,
        size: 0,
        index: Vec::new(),
        last_timestamp_ms: 0,
    })
}

/// Scans a segment, checking every record, and cuts off whatever follows
/// the last valid one (a torn write from a crash, or corruption).
fn recover_segment(dir: &Path, partition: usize, base: u64) -> io::Result<Segment> {
    let mut segment = create_segment(dir, base)?;
    let file = Arc::clone(segment.file.as_ref().expect("a created segment is open"));
    let file_len = file.metadata()?.len();
    let mut reader = Reader::new(Arc::clone(&file), 0, file_len);
    let mut expected = base;
    let mut last_indexed: Option<u64> = None;
    let problem = loop {
        let pos = reader.position();
        match reader.next_record()? {
            Ok(Some(record)) if record.offset == expected => {
                if last_indexed.is_none_or(|last| pos - last >= INDEX_INTERVAL_BYTES) {
                    segment.index.push((record.offset, pos));
                    last_indexed = Some(pos);
                }
                segment.last_timestamp_ms = record.timestamp_ms;
                expected += 1;
            }
            Ok(Some(_)) => break Some("offset out of sequence"),
            Ok(None) => break None,
            Err(reason) => break Some(reason),
        }
    };
    let valid_len = reader.position();
    if let Some(reason) = problem {
        warn!(
            partition,
            segment = %segment.path.display(),
            at_byte = valid_len,
            discarded_bytes = file_len - valid_len,
            reason,
            "truncating the log after its last valid record"
        );
        file.set_len(valid_len)?;
        file.sync_all()?;
    }
    segment.end = expected;
    segment.size = valid_len;
    Ok(segment)
}
