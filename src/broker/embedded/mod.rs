//! The embedded broker: a segmented append-only log per topic partition
//! under the data directory, with checksummed records, group commit and
//! durable consumer-group cursors. Nothing to install.
//!
//! Layout: `<data>/topics/<topic>/<partition>/<first offset>.log` and
//! `<data>/groups/<topic>/<group>.cursor`; `<data>/LOCK` keeps a second
//! process off the same directory.
//!
//! Each topic has one writer thread. Publishers send it append requests over
//! a bounded channel; it takes every request waiting, writes them, fsyncs
//! each touched partition once and only then answers them all (group commit).

pub mod config;
mod partition;
mod record;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info};

use self::partition::{Partition, PartitionWriter, SegmentFiles};
use super::identities::IdentityIndex;
use super::local_leases::LocalLeases;
use super::{Appended, Backend, BrokerError, ReadBatch, Record, Result, Retained, StoredEvent};
use crate::cursor::{Cursor, GroupCursor, Place};
use crate::topic::{Retention, Topics};

pub use self::config::{EmbeddedConfig, FsyncPolicy};
pub use self::record::MAX_PAYLOAD_BYTES;

/// Append requests waiting for a topic's writer. When full, publishers wait:
/// that is the backpressure a full disk or a slow fsync exerts.
const APPEND_QUEUE_CAPACITY: usize = 1024;
/// Most bytes one group commit takes before it syncs and answers.
const GROUP_COMMIT_MAX_BYTES: usize = 8 * 1024 * 1024;
/// How often retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(1);
/// Files of sealed segments kept open at most, across every topic: the log's
/// share of the process's file descriptors.
pub const SEGMENT_FILES_OPEN: usize = 1024;

enum Command {
    Append {
        records: Vec<Record>,
        reply: oneshot::Sender<Result<Vec<Appended>>>,
    },
    Tick,
    Close(oneshot::Sender<()>),
}

struct TopicLog {
    name: String,
    partitions: Vec<Arc<Partition>>,
    commands: mpsc::Sender<Command>,
    /// Bumped after every commit; readers waiting for new events watch it.
    committed: watch::Sender<u64>,
    /// Set when a failed write could not be undone: the next append first
    /// retries the undo (the repair), and is refused while that fails.
    failed: AtomicBool,
    /// Why the last append failed, until one succeeds (a full disk, no
    /// file descriptors): readiness reports it.
    write_error: Mutex<Option<String>>,
}

pub struct EmbeddedBroker {
    data_dir: PathBuf,
    fsync: FsyncPolicy,
    /// What the partitions' segment files share (the cache of open ones).
    files: Arc<SegmentFiles>,
    /// Topics by name; one may be added at run time.
    topics: Arc<std::sync::RwLock<HashMap<String, Arc<TopicLog>>>>,
    writers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    ticker: tokio::task::JoinHandle<()>,
    closed: AtomicBool,
    /// One group-cursor commit at a time (each merges into the stored one).
    commits: tokio::sync::Mutex<()>,
    leases: LocalLeases,
    _lock: File,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The embedded log's errors are the OS's (no space, no file descriptors):
/// what a client or an operator can act on, so they are part of the message.
fn unavailable(context: &str, err: impl std::fmt::Display) -> BrokerError {
    BrokerError::unavailable(format!("{context}: {err}"))
}

impl EmbeddedBroker {
    fn log(&self, topic: &str) -> Result<Arc<TopicLog>> {
        self.logs()
            .get(topic)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))
    }

    fn logs(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<TopicLog>>> {
        self.topics.read().expect("topics lock poisoned")
    }

    /// Every topic's log, as they are now.
    fn all_logs(&self) -> Vec<Arc<TopicLog>> {
        self.logs().values().cloned().collect()
    }

    fn group_path(&self, topic: &str, group: &str) -> PathBuf {
        self.data_dir
            .join("groups")
            .join(topic)
            .join(format!("{group}.cursor"))
    }
}

impl Backend for EmbeddedBroker {
    type Config = EmbeddedConfig;
    const KIND: &'static str = "embedded";
    const LOCAL_POSITIONS: bool = true;
    const DENSE_OFFSETS: bool = true;

    async fn open(config: EmbeddedConfig, topics: &Topics) -> Result<Self> {
        let fsync = config.fsync;
        let data_dir = config.data_dir.clone();
        let topics: Vec<_> = topics.iter().collect();
        let opened = tokio::task::spawn_blocking(move || open_all(&data_dir, &topics))
            .await
            .map_err(|err| unavailable("opening the log", err))?
            .map_err(|err| unavailable("opening the log", err))?;
        let (lock, files, logs) = opened;
        let mut by_name = HashMap::new();
        let mut writers = Vec::new();
        for (topic, partition_writers) in logs {
            let (log, handle) = start_writer(&topic, partition_writers, fsync)?;
            writers.push(handle);
            by_name.insert(topic.name.clone(), log);
        }
        let tick = match fsync {
            FsyncPolicy::Always => RETENTION_INTERVAL,
            FsyncPolicy::Interval(interval) => interval.min(RETENTION_INTERVAL),
        };
        let topics = Arc::new(std::sync::RwLock::new(by_name));
        let ticked = Arc::clone(&topics);
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let senders: Vec<_> = ticked
                    .read()
                    .expect("topics lock poisoned")
                    .values()
                    .map(|log| log.commands.clone())
                    .collect();
                for sender in &senders {
                    // A full queue means the writer is busy and will get to
                    // syncing anyway; skip rather than wait.
                    let _ = sender.try_send(Command::Tick);
                }
            }
        });
        let count = topics.read().expect("topics lock poisoned").len();
        info!(data_dir = %config.data_dir.display(), topics = count, "embedded log open");
        Ok(Self {
            data_dir: config.data_dir,
            fsync,
            files,
            topics,
            writers: Mutex::new(writers),
            ticker,
            closed: AtomicBool::new(false),
            commits: tokio::sync::Mutex::new(()),
            leases: LocalLeases::default(),
            _lock: lock,
        })
    }

    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Appended>> {
        let log = self.log(topic)?;
        let (reply, answer) = oneshot::channel();
        log.commands
            .send(Command::Append { records, reply })
            .await
            .map_err(|_| BrokerError::unavailable("the broker is shutting down"))?;
        answer
            .await
            .map_err(|_| BrokerError::unavailable("the log writer stopped"))?
    }

    async fn read(
        &self,
        topic: &str,
        from: &Cursor,
        only: Option<&[bool]>,
        max: usize,
        wait: Duration,
    ) -> Result<ReadBatch> {
        let log = self.log(topic)?;
        check_cursor(&log, from)?;
        if let Some(only) = only {
            // The others read from their end (nothing), and keep their place.
            let mut pinned = from.clone();
            for (partition, log_partition) in log.partitions.iter().enumerate() {
                if !only[partition] {
                    pinned.set(partition, log_partition.end());
                }
            }
            let mut batch = Box::pin(self.read(topic, &pinned, None, max, wait)).await?;
            for (partition, &read) in only.iter().enumerate() {
                if !read {
                    batch.next.set(partition, from.next(partition));
                }
            }
            return Ok(batch);
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = log.committed.subscribe();
        loop {
            changes.mark_unchanged();
            let has_new = log
                .partitions
                .iter()
                .zip(from.offsets())
                .any(|(p, &next)| next != p.end());
            if has_new {
                let read_log = Arc::clone(&log);
                let from = from.clone();
                let batch = tokio::task::spawn_blocking(move || read_now(&read_log, &from, max))
                    .await
                    .map_err(|err| unavailable("reading the log", err))??;
                if !batch.events.is_empty() || wait.is_zero() {
                    return Ok(batch);
                }
            } else if wait.is_zero() {
                return Ok(ReadBatch {
                    events: Vec::new(),
                    next: from.clone(),
                });
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Ok(ReadBatch {
                    events: Vec::new(),
                    next: from.clone(),
                });
            }
        }
    }

    fn partitions(&self, topic: &str) -> Result<usize> {
        Ok(self.log(topic)?.partitions.len())
    }

    async fn retained(&self, topic: &str) -> Result<Vec<Retained>> {
        let log = self.log(topic)?;
        Ok(log
            .partitions
            .iter()
            .map(|p| Retained {
                lost_below: p.start(),
                oldest: p.start(),
                end: p.end(),
            })
            .collect())
    }

    async fn stored_bytes(&self, topic: &str) -> Result<Option<u64>> {
        let log = self.log(topic)?;
        Ok(Some(log.partitions.iter().map(|p| p.bytes()).sum()))
    }

    async fn commit(&self, topic: &str, group: &str, places: &[(usize, Place)]) -> Result<()> {
        let log = self.log(topic)?;
        let _one = self.commits.lock().await;
        let mut cursor = match self.committed(topic, group).await? {
            Some(cursor) => cursor,
            None => GroupCursor::from(&Cursor::start(log.partitions.len())),
        };
        for (partition, place) in places {
            cursor.set(*partition, place.clone());
        }
        check_cursor(&log, &cursor.cursor())?;
        let path = self.group_path(topic, group);
        let text = cursor.to_string();
        tokio::task::spawn_blocking(move || write_atomically(&path, text.as_bytes()))
            .await
            .map_err(|err| unavailable("committing a group cursor", err))?
            .map_err(|err| unavailable("committing a group cursor", err))
    }

    async fn committed(&self, topic: &str, group: &str) -> Result<Option<GroupCursor>> {
        let partitions = self.log(topic)?.partitions.len();
        let path = self.group_path(topic, group);
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => Ok(Some(
                GroupCursor::parse_for(text.trim(), partitions)
                    .map_err(|err| BrokerError::Corrupt(format!("{}: {err}", path.display())))?,
            )),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(unavailable("reading a group cursor", err)),
        }
    }

    async fn groups(&self, topic: &str) -> Result<Vec<String>> {
        self.log(topic)?;
        let dir = self.data_dir.join("groups").join(topic);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(unavailable("listing group cursors", err)),
        };
        let mut names = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|err| unavailable("listing group cursors", err))?
        {
            if let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".cursor"))
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    async fn delete_group(&self, topic: &str, group: &str) -> Result<bool> {
        self.log(topic)?;
        let _one = self.commits.lock().await;
        let path = self.group_path(topic, group);
        tokio::task::spawn_blocking(move || match fs::remove_file(&path) {
            Ok(()) => {
                let dir = path.parent().expect("group paths have a parent");
                File::open(dir)?.sync_all()?;
                Ok(true)
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        })
        .await
        .map_err(|err| unavailable("deleting a group cursor", err))?
        .map_err(|err| unavailable("deleting a group cursor", err))
    }

    async fn lease(&self, scope: &str, item: &str, holder: &str, ttl: Duration) -> Result<bool> {
        Ok(self.leases.lease(scope, item, holder, ttl))
    }

    async fn release(&self, scope: &str, item: &str, holder: &str) -> Result<()> {
        self.leases.release(scope, item, holder);
        Ok(())
    }

    async fn leases(&self, scope: &str) -> Result<Vec<(String, String)>> {
        Ok(self.leases.leases(scope))
    }

    async fn add_topic(&self, topic: &Arc<crate::topic::Topic>) -> Result<()> {
        if self.logs().contains_key(&topic.name) {
            return Ok(());
        }
        let (data_dir, files, opened) = (
            self.data_dir.clone(),
            Arc::clone(&self.files),
            Arc::clone(topic),
        );
        let partition_writers =
            tokio::task::spawn_blocking(move || open_topic(&data_dir, &opened, &files))
                .await
                .map_err(|err| unavailable("opening a topic's log", err))?
                .map_err(|err| unavailable("opening a topic's log", err))?;
        let (log, handle) = start_writer(topic, partition_writers, self.fsync)?;
        self.writers
            .lock()
            .expect("writers lock poisoned")
            .push(handle);
        let mut topics = self.topics.write().expect("topics lock poisoned");
        topics.entry(topic.name.clone()).or_insert(log);
        Ok(())
    }

    async fn health(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BrokerError::unavailable("the broker is shutting down"));
        }
        let logs = self.all_logs();
        if let Some(log) = logs.iter().find(|log| log.failed.load(Ordering::Acquire)) {
            return Err(BrokerError::unavailable(format!(
                "the log of topic {:?} failed a write it could not undo",
                log.name
            )));
        }
        for log in &logs {
            if let Some(err) = log.write_error.lock().expect("write error lock").as_ref() {
                return Err(BrokerError::unavailable(format!(
                    "the last append to topic {:?} failed ({err}); ready again once an append succeeds",
                    log.name
                )));
            }
        }
        Ok(())
    }

    async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.ticker.abort();
        for log in self.all_logs() {
            let (done, wait) = oneshot::channel();
            if log.commands.send(Command::Close(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
        let handles = std::mem::take(&mut *self.writers.lock().expect("writers lock poisoned"));
        let _ = tokio::task::spawn_blocking(move || {
            for handle in handles {
                let _ = handle.join();
            }
        })
        .await;
        info!("embedded log closed");
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

fn check_cursor(log: &TopicLog, cursor: &Cursor) -> Result<()> {
    if cursor.partitions() != log.partitions.len() {
        return Err(crate::cursor::CursorError::PartitionCount {
            found: cursor.partitions(),
            expected: log.partitions.len(),
        }
        .into());
    }
    Ok(())
}

type OpenedLogs = (
    File,
    Arc<SegmentFiles>,
    Vec<(Arc<crate::topic::Topic>, Vec<PartitionWriter>)>,
);

fn open_all(data_dir: &Path, topics: &[Arc<crate::topic::Topic>]) -> io::Result<OpenedLogs> {
    fs::create_dir_all(data_dir)?;
    let lock = File::create(data_dir.join("LOCK"))?;
    lock.try_lock().map_err(|_| {
        io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "another switchyard process holds {}; stop it or choose another --data-dir",
                data_dir.display()
            ),
        )
    })?;
    let files = Arc::new(SegmentFiles::new(SEGMENT_FILES_OPEN));
    let mut logs = Vec::new();
    for topic in topics {
        logs.push((Arc::clone(topic), open_topic(data_dir, topic, &files)?));
    }
    Ok((lock, files, logs))
}

/// Opens (or creates) the partitions of one topic's log.
fn open_topic(
    data_dir: &Path,
    topic: &crate::topic::Topic,
    files: &Arc<SegmentFiles>,
) -> io::Result<Vec<PartitionWriter>> {
    let topic_dir = data_dir.join("topics").join(&topic.name);
    (0..topic.partitions)
        .map(|number| {
            PartitionWriter::open(
                topic_dir.join(number.to_string()),
                number,
                topic.segment_bytes,
                Arc::clone(files),
            )
        })
        .collect()
}

/// Starts the writer thread of one topic's log.
fn start_writer(
    topic: &Arc<crate::topic::Topic>,
    partition_writers: Vec<PartitionWriter>,
    fsync: FsyncPolicy,
) -> Result<(Arc<TopicLog>, std::thread::JoinHandle<()>)> {
    let (commands, receiver) = mpsc::channel(APPEND_QUEUE_CAPACITY);
    let log = Arc::new(TopicLog {
        name: topic.name.clone(),
        partitions: partition_writers
            .iter()
            .map(|w| Arc::clone(&w.partition))
            .collect(),
        commands,
        committed: watch::Sender::new(0),
        failed: AtomicBool::new(false),
        write_error: Mutex::new(None),
    });
    let writer_log = Arc::clone(&log);
    let retention = topic.retention;
    let dedupe_window = topic.dedupe_window;
    let handle = std::thread::Builder::new()
        .name(format!("log-{}", topic.name))
        .spawn(move || {
            let index = recall_identities(&writer_log, dedupe_window);
            let writer = Writer {
                log: &writer_log,
                partitions: partition_writers,
                index,
                sync: fsync == FsyncPolicy::Always,
            };
            run_writer(writer, receiver, retention)
        })
        .map_err(|err| unavailable("starting a log writer", err))?;
    Ok((log, handle))
}

/// Reads up to `max` events across partitions, merged by store time (the
/// order within each partition is kept), and the cursor after them.
/// Up to `max` events after `from`, partitions merged in the order of
/// [`super::merge`] (store time, kept monotonic within a partition), reading
/// only as far into each partition as the merge takes from it.
fn read_now(log: &TopicLog, from: &Cursor, max: usize) -> Result<ReadBatch> {
    let expired = |number: usize| {
        let oldest = log
            .partitions
            .iter()
            .zip(from.offsets())
            .map(|(p, &next)| next.max(p.start()))
            .collect();
        BrokerError::CursorExpired {
            partition: number,
            oldest: Cursor::new(oldest),
        }
    };
    // Per partition with something to read: its events, and the next one
    // keyed by the running maximum of its timestamps.
    let mut heads: Vec<(partition::Events, Option<(i64, StoredEvent)>)> = Vec::new();
    for (partition, &next) in log.partitions.iter().zip(from.offsets()) {
        if next == partition.end() {
            continue;
        }
        let mut events = match partition.events(next) {
            Err(BrokerError::CursorExpired { partition, .. }) => return Err(expired(partition)),
            other => other?,
        };
        let head = events.next_event()?.map(|e| (e.timestamp_ms, e));
        heads.push((events, head));
    }
    let mut next = from.clone();
    let mut out = Vec::new();
    while out.len() < max {
        let Some(i) = heads
            .iter()
            .enumerate()
            .filter_map(|(i, (_, head))| head.as_ref().map(|(time, e)| ((*time, e.partition), i)))
            .min()
            .map(|(_, i)| i)
        else {
            break;
        };
        let (events, head) = &mut heads[i];
        let (time, event) = head.take().expect("chosen heads are present");
        *head = events.next_event()?.map(|e| (time.max(e.timestamp_ms), e));
        next.advance(event.partition, event.offset);
        out.push(event);
    }
    Ok(ReadBatch { events: out, next })
}

/// A topic's writer thread: its partitions, and the identities stored
/// within the topic's dedupe window (`None`: dedupe off).
struct Writer<'a> {
    log: &'a TopicLog,
    partitions: Vec<PartitionWriter>,
    index: Option<IdentityIndex>,
    sync: bool,
}

/// The index of the identities stored within `window`, read back from the
/// log: from the first event of each partition stored since then (found by
/// a binary search over offsets) to its end.
fn recall_identities(log: &TopicLog, window: Duration) -> Option<IdentityIndex> {
    let mut index = IdentityIndex::new(window)?;
    let since = now_ms().saturating_sub(index.window_ms());
    let started = std::time::Instant::now();
    let mut remembered = 0usize;
    for partition in &log.partitions {
        let first_at = |offset: u64| -> Option<StoredEvent> {
            partition.events(offset).ok()?.next_event().ok().flatten()
        };
        let (mut low, mut high) = (partition.start(), partition.end());
        while low < high {
            let probe = low + (high - low) / 2;
            match first_at(probe) {
                None => high = probe,
                Some(event) if event.offset >= high => high = probe,
                Some(event) if event.timestamp_ms >= since => high = event.offset,
                Some(event) => low = event.offset + 1,
            }
        }
        let Ok(mut events) = partition.events(high) else {
            continue;
        };
        while let Ok(Some(event)) = events.next_event() {
            index.insert_stored(&event, &log.name);
            remembered += 1;
        }
    }
    if remembered > 0 {
        info!(topic = %log.name, events = remembered, elapsed_ms = started.elapsed().as_millis() as u64,
            "dedupe index read back from the log");
    }
    Some(index)
}

fn run_writer(mut writer: Writer, mut commands: mpsc::Receiver<Command>, retention: Retention) {
    let log = writer.log;
    let mut last_retention = std::time::Instant::now();
    let mut pending: Option<Command> = None;
    loop {
        let command = match pending.take() {
            Some(command) => command,
            None => match commands.blocking_recv() {
                Some(command) => command,
                None => break,
            },
        };
        match command {
            Command::Tick => {
                if !writer.sync {
                    for partition in &mut writer.partitions {
                        if let Err(err) = partition.sync() {
                            error!(topic = %log.name, partition = partition.partition.number, error = %err, "periodic fsync failed");
                        }
                    }
                }
                if last_retention.elapsed() >= RETENTION_INTERVAL {
                    last_retention = std::time::Instant::now();
                    let max_age_ms = retention.max_age.map(|age| age.as_millis() as i64);
                    for partition in &writer.partitions {
                        partition.partition.apply_retention(
                            now_ms(),
                            max_age_ms,
                            retention.max_bytes,
                        );
                    }
                }
            }
            Command::Close(done) => {
                for partition in &mut writer.partitions {
                    let _ = partition.sync();
                }
                let _ = done.send(());
                break;
            }
            Command::Append { records, reply } => {
                let mut batch = vec![(records, reply)];
                let mut bytes: usize = batch[0].0.iter().map(|r| r.payload.len()).sum();
                while bytes < GROUP_COMMIT_MAX_BYTES {
                    match commands.try_recv() {
                        Ok(Command::Append { records, reply }) => {
                            bytes += records.iter().map(|r| r.payload.len()).sum::<usize>();
                            batch.push((records, reply));
                        }
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                writer.commit_batch(batch);
            }
        }
    }
}

type Batch = Vec<(Vec<Record>, oneshot::Sender<Result<Vec<Appended>>>)>;

impl Writer<'_> {
    fn commit_batch(&mut self, batch: Batch) {
        let log = self.log;
        let writers = &mut self.partitions;
        if log.failed.load(Ordering::Acquire) {
            // An earlier undo failed (out of file descriptors, or the disk):
            // retry it before anything new is written.
            match writers.iter_mut().try_for_each(PartitionWriter::repair) {
                Ok(()) => {
                    info!(topic = %log.name, "the log is repaired; appends go on");
                    log.failed.store(false, Ordering::Release);
                }
                Err(err) => {
                    // The OS's reason (no space, no file descriptors) is what
                    // the client can act on: it is part of the message.
                    let what = format!(
                        "the log of topic {:?} could not undo a failed write and still cannot: {err}",
                        log.name
                    );
                    for (_, reply) in batch {
                        let _ = reply.send(Err(BrokerError::unavailable(what.clone())));
                    }
                    return;
                }
            }
        }
        let now = now_ms();
        let mut answers = Vec::with_capacity(batch.len());
        // Identities staged by this commit: remembered once it is durable.
        let mut fresh: HashMap<&str, Appended> = HashMap::new();
        let index = &self.index;
        let staged: io::Result<()> = (|| {
            for (records, _) in &batch {
                let mut appended = Vec::with_capacity(records.len());
                for record in records {
                    let identity = record.identity.as_str();
                    if let Some(index) = index.as_ref().filter(|_| !identity.is_empty()) {
                        let seen = fresh
                            .get(identity)
                            .map(|at| Appended {
                                duplicate: true,
                                ..*at
                            })
                            .or_else(|| index.get(identity, now));
                        if let Some(seen) = seen {
                            appended.push(seen);
                            continue;
                        }
                    }
                    let (offset, _) = writers[record.partition].stage(now, &record.payload)?;
                    let at = Appended {
                        partition: record.partition,
                        offset,
                        duplicate: false,
                    };
                    if index.is_some() && !identity.is_empty() {
                        fresh.insert(identity, at);
                    }
                    appended.push(at);
                }
                answers.push(appended);
            }
            write_all(writers, self.sync)
        })();
        match staged {
            Ok(()) => {
                for writer in writers.iter_mut() {
                    writer.publish();
                }
                if let Some(index) = &mut self.index {
                    for (identity, at) in fresh {
                        index.insert(identity, at, now, &log.name);
                    }
                }
                log.write_error.lock().expect("write error lock").take();
                log.committed.send_modify(|n| *n += 1);
                for ((_, reply), appended) in batch.into_iter().zip(answers) {
                    let _ = reply.send(Ok(appended));
                }
            }
            Err(err) => {
                error!(topic = %log.name, error = %err, "append failed; undoing the partial write");
                *log.write_error.lock().expect("write error lock") = Some(err.to_string());
                for writer in writers.iter_mut() {
                    if let Err(undo) = writer.rollback() {
                        error!(topic = %log.name, partition = writer.partition.number, error = %undo,
                            "undoing a failed append failed; the next append retries it");
                        log.failed.store(true, Ordering::Release);
                    }
                }
                // The OS's reason (no space, no file descriptors) is what the
                // client can act on: it is part of the message.
                let what = format!("the log could not store the events: {err}");
                for (_, reply) in batch {
                    let _ = reply.send(Err(BrokerError::unavailable(what.clone())));
                }
            }
        }
    }
}

/// Writes (and with `sync`, fsyncs) every touched partition. The fsyncs of
/// different partitions run at once: the device can serve them together,
/// so a group commit costs about one fsync, not one per partition.
fn write_all(writers: &mut [PartitionWriter], sync: bool) -> io::Result<()> {
    let mut touched: Vec<&mut PartitionWriter> =
        writers.iter_mut().filter(|w| w.is_touched()).collect();
    if touched.len() < 2 || !sync {
        return touched.into_iter().try_for_each(|w| w.write(sync));
    }
    let mut results: Vec<io::Result<()>> = touched.iter().map(|_| Ok(())).collect();
    sync_pool().scope(|scope| {
        for (writer, result) in touched.iter_mut().zip(results.iter_mut()) {
            scope.spawn(move |_| *result = writer.write(sync));
        }
    });
    results.into_iter().collect()
}

/// Threads that run the partitions' writes and fsyncs of a group commit
/// side by side, kept for the life of the process (spawning them for each
/// commit cost ~4% of a publish's CPU). They block in the kernel, not on
/// the CPU, so there are more of them than cores.
fn sync_pool() -> &'static rayon_core::ThreadPool {
    static POOL: std::sync::OnceLock<rayon_core::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon_core::ThreadPoolBuilder::new()
            .num_threads(8)
            .thread_name(|i| format!("switchyard-fsync-{i}"))
            .build()
            .expect("the fsync threads start")
    })
}

/// Replaces `path` with `contents` so that a crash leaves the old or the new
/// contents, never a mix.
fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("group paths have a parent");
    fs::create_dir_all(dir)?;
    let temp = path.with_extension("tmp");
    {
        let mut file = File::create(&temp)?;
        io::Write::write_all(&mut file, contents)?;
        file.sync_all()?;
    }
    fs::rename(&temp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
