//! One handler at work: consume its topic in its consumer group, run the
//! action per event under its policies, publish the outcome, then ack.
//!
//! Acking is committing the group cursor: it only moves past an event once
//! that event's outcome (result or dead letter) is durable, so a crash costs
//! a redelivery, never an outcome. The cursor is the lowest offset still in
//! flight per partition, committed at most every `COMMIT_INTERVAL`.
//!
//! Exactly one outcome per event, even across a crash: with each commit the
//! handler also records, for its output topics, a cursor before every
//! outcome of an event the commit does not cover yet (the output topics'
//! ends when the oldest unacked event was read). On start it reads the
//! outputs from there, and acks on sight the redelivered events that already
//! have an outcome.
//!
//! Several processes running the same handler on one broker split the
//! topic's partitions (`crate::broker::membership`): each consumes, calls for and
//! commits only the partitions it owns. A partition handed back is drained
//! first (its calls in flight finish, it is committed); one taken up starts
//! from the group's committed offset, after reading the outcomes stored
//! since (by whichever process), so an event moved between processes still
//! gets one outcome, and events of one key stay in order. The outputs'
//! cursors are kept per partition for this (`<group>.outcomes.p<N>`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::outcome::{Recorded, source_of};
use super::worker::Worker;
use crate::broker::membership::{Change, Membership};
use crate::broker::{BrokerError, StoredEvent};
use crate::cursor::{Cursor, Pending};
use crate::event::Attributes;

/// Events read but not yet acked, at most; reading pauses beyond it.
const READ_AHEAD: usize = 1024;
/// Events asked for per read.
const READ_BATCH: usize = 256;
/// How long one read waits for new events.
const READ_WAIT: Duration = Duration::from_secs(1);
/// Acks are committed at most this often.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
/// How long shutdown waits for calls in flight before leaving them unacked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long to wait before asking the broker again after it failed.
const BROKER_RETRY: Duration = Duration::from_secs(1);

/// A read event waiting for, or under, handling.
struct Job {
    partition: usize,
    offset: u64,
    key: Option<String>,
    event: Value,
    head: Attributes,
    payload: Bytes,
}

/// A job's end: acked when its outcome is durable.
struct Done {
    partition: usize,
    offset: u64,
    key: Option<String>,
    acked: bool,
}

/// Consumes until shutdown.
pub(super) async fn run(worker: Arc<Worker>) {
    let Some(start) = starting_cursor(&worker).await else {
        return;
    };
    let (topic, group) = (&worker.spec.topic, &worker.spec.group);
    let (membership, changes) = loop {
        match Membership::join(Arc::clone(&worker.broker), topic, group, worker.session).await {
            Ok(joined) => break joined,
            Err(err) => {
                warn!(handler = %worker.spec.name, error = %err.detail(), "cannot join the handler's group; retrying");
                tokio::select! {
                    _ = worker.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(BROKER_RETRY) => {}
                }
            }
        }
    };
    info!(handler = %worker.spec.name, topic = %topic, group = %group, partitions = ?membership.owned(), "handler started");
    *worker.stats.committed.lock().expect("stats lock poisoned") = Some(start.clone());
    let partitions = start.partitions();
    let mut consumer = Consumer {
        worker: Arc::clone(&worker),
        committed: start.clone(),
        pending: Pending::new(start),
        owned: vec![false; partitions],
        running: vec![0; partitions],
        giving: Vec::new(),
        batches: BTreeMap::new(),
        next_batch: 0,
        already_done: HashSet::new(),
        busy_keys: HashSet::new(),
        waiting: HashMap::new(),
        tasks: JoinSet::new(),
        done: mpsc::channel(READ_AHEAD + 1),
        dirty: false,
    };
    consumer.run(changes).await;
    membership.leave().await;
}

/// The group's cursor, creating it on first run.
async fn starting_cursor(worker: &Worker) -> Option<Cursor> {
    let (topic, group) = (&worker.spec.topic, &worker.spec.group);
    loop {
        let found = worker
            .broker
            .committed_or_start(topic, group, worker.spec.start_earliest)
            .await
            .map(|c| c.cursor());
        match found {
            Ok(cursor) => return Some(cursor),
            Err(err) => {
                warn!(handler = %worker.spec.name, error = %err.detail(), "cannot read the group cursor; retrying");
                tokio::select! {
                    _ = worker.shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(BROKER_RETRY) => {}
                }
            }
        }
    }
}

/// The consumer group under which the outputs' cursor for `partition` of
/// the input is kept.
fn outputs_group(worker: &Worker, partition: usize) -> String {
    format!("{}.p{partition}", worker.spec.outputs_group())
}

/// (source, id) of every event of `partitions` with an outcome stored
/// after their last commit: their redeliveries are acked without another
/// call.
async fn recent_outcomes(
    worker: &Worker,
    partitions: &[usize],
) -> Result<HashSet<(String, String)>, BrokerError> {
    let mut found = HashSet::new();
    let me = source_of(&worker.spec.name);
    for topic in worker.spec.outputs() {
        // From the oldest of the partitions' outputs cursors; a new one
        // starts at the latest: nothing of ours is there yet.
        let mut from: Option<Cursor> = None;
        for &partition in partitions {
            let cursor = worker
                .broker
                .committed_or_start(topic, &outputs_group(worker, partition), false)
                .await?
                .cursor();
            from = Some(match from {
                None => cursor,
                Some(older) => Cursor::new(
                    older
                        .offsets()
                        .iter()
                        .zip(cursor.offsets())
                        .map(|(&a, &b)| a.min(b))
                        .collect(),
                ),
            });
        }
        let Some(from) = from else { continue };
        worker
            .broker
            .scan(topic, from, None, |stored| {
                if let Some(outcome) = Recorded::parse(&stored.payload)
                    && outcome.source == me
                {
                    let input = outcome.input();
                    found.insert((input.source, input.id));
                }
            })
            .await?;
    }
    Ok(found)
}

/// The consuming loop's state: what is read, in flight, and committed.
struct Consumer {
    worker: Arc<Worker>,
    committed: Cursor,
    /// How far it has read, and the events read but not yet acked, each
    /// with the read batch it came in.
    pending: Pending<u64>,
    /// Partitions this process owns now: only their events are handled.
    owned: Vec<bool>,
    /// Calls in flight per partition.
    running: Vec<usize>,
    /// Partitions being handed back, with whom to tell when they are.
    giving: Vec<(Vec<usize>, tokio::sync::oneshot::Sender<()>)>,
    /// Per read batch with unacked events: the output topics' ends when it
    /// was read, and how many of its events are unacked.
    batches: BTreeMap<u64, (Vec<Cursor>, usize)>,
    next_batch: u64,
    /// Events whose outcome was stored before a crash: ack on sight.
    already_done: HashSet<(String, String)>,
    /// Keys with an event in flight (ordered handlers only).
    busy_keys: HashSet<String>,
    /// Events waiting for their key's earlier event to finish.
    waiting: HashMap<String, VecDeque<Job>>,
    tasks: JoinSet<()>,
    done: (mpsc::Sender<Done>, mpsc::Receiver<Done>),
    dirty: bool,
}

impl Consumer {
    fn in_flight(&self) -> usize {
        self.pending.len()
    }

    async fn run(&mut self, mut changes: mpsc::UnboundedReceiver<Change>) {
        let worker = Arc::clone(&self.worker);
        let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
        loop {
            let reading = self.in_flight() < READ_AHEAD && self.owned.contains(&true);
            tokio::select! {
                biased;
                _ = worker.shutdown.cancelled() => break,
                Some(change) = changes.recv() => {
                    if !self.change(change).await {
                        break;
                    }
                }
                Some(done) = self.done.1.recv() => {
                    self.finish(done);
                    self.hand_back().await;
                }
                _ = commit_tick.tick(), if self.dirty => self.commit().await,
                read = worker.broker.read_only(&worker.spec.topic, self.pending.read_cursor(), Some(&self.owned), READ_BATCH, READ_WAIT), if reading => {
                    match read {
                        Ok(batch) => {
                            if batch.events.is_empty() || self.dispatch_batch(batch.events).await {
                                self.pending.read_to(batch.next);
                            } else {
                                // Not dispatched: read the same events again.
                                tokio::select! {
                                    _ = worker.shutdown.cancelled() => break,
                                    _ = tokio::time::sleep(BROKER_RETRY) => {}
                                }
                            }
                        }
                        Err(BrokerError::CursorExpired { oldest, .. }) => {
                            warn!(handler = %worker.spec.name, "events expired before this handler read them; skipping to the oldest retained");
                            self.pending.skip_to(&oldest);
                            self.dirty = true;
                        }
                        Err(err) => {
                            warn!(handler = %worker.spec.name, error = %err.detail(), "reading the topic failed; retrying");
                            tokio::select! {
                                _ = worker.shutdown.cancelled() => break,
                                _ = tokio::time::sleep(BROKER_RETRY) => {}
                            }
                        }
                    }
                }
            }
        }
        // Let calls in flight finish (their outcome then counts) for a
        // moment; whatever is left stays unacked and is redelivered.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        while let Ok(done) = self.done.1.try_recv() {
            self.finish(done);
        }
        self.commit().await;
        info!(handler = %worker.spec.name, cursor = %self.committed, "handler stopped");
    }

    /// Applies a membership change; false when shutdown came first.
    async fn change(&mut self, change: Change) -> bool {
        match change {
            Change::Gained(partitions) => {
                let worker = Arc::clone(&self.worker);
                let (topic, group) = (&worker.spec.topic, &worker.spec.group);
                loop {
                    let found = async {
                        let committed = worker
                            .broker
                            .committed_or_start(topic, group, worker.spec.start_earliest)
                            .await?
                            .cursor();
                        let done = recent_outcomes(&worker, &partitions).await?;
                        Ok::<_, BrokerError>((committed, done))
                    }
                    .await;
                    match found {
                        Ok((committed, done)) => {
                            for &partition in &partitions {
                                self.pending.restart(partition, committed.next(partition));
                                self.committed.set(partition, committed.next(partition));
                                self.owned[partition] = true;
                            }
                            self.already_done.extend(done);
                            info!(handler = %worker.spec.name, partitions = ?partitions, "handler took partitions up");
                            return true;
                        }
                        Err(err) => {
                            warn!(handler = %worker.spec.name, error = %err.detail(), "cannot take partitions up; retrying");
                            tokio::select! {
                                _ = worker.shutdown.cancelled() => return false,
                                _ = tokio::time::sleep(BROKER_RETRY) => {}
                            }
                        }
                    }
                }
            }
            Change::Give { partitions, done } => {
                self.stop_taking(&partitions);
                self.giving.push((partitions, done));
                self.hand_back().await;
                true
            }
            Change::Lost(partitions) => {
                self.stop_taking(&partitions);
                for &partition in &partitions {
                    self.pending.forget(partition);
                }
                true
            }
        }
    }

    /// No more events of `partitions` start here; the waiting ones stay
    /// unacked (so they are committed as not done).
    fn stop_taking(&mut self, partitions: &[usize]) {
        for &partition in partitions {
            self.owned[partition] = false;
        }
        for jobs in self.waiting.values_mut() {
            jobs.retain(|job| !partitions.contains(&job.partition));
        }
        self.waiting.retain(|_, jobs| !jobs.is_empty());
    }

    /// Finishes the hand-backs whose calls in flight are all done: commits
    /// their partitions, forgets them, and says so.
    async fn hand_back(&mut self) {
        if self.giving.is_empty() {
            return;
        }
        let (ready, busy): (Vec<_>, Vec<_>) = std::mem::take(&mut self.giving)
            .into_iter()
            .partition(|(partitions, _)| partitions.iter().all(|&p| self.running[p] == 0));
        self.giving = busy;
        for (partitions, done) in ready {
            self.commit_partitions(&partitions).await;
            for &partition in &partitions {
                self.pending.forget(partition);
            }
            let _ = done.send(());
        }
    }

    /// Dispatches a read batch; false when it could not (the outputs' ends
    /// are unknown: the broker failed), and the batch must be read again.
    async fn dispatch_batch(&mut self, events: Vec<StoredEvent>) -> bool {
        // Every outcome of these events will land after the outputs' ends
        // as they are now.
        let Some(outputs) = self.worker.outputs_latest().await else {
            warn!(handler = %self.worker.spec.name, "cannot read the output topics' ends; reading the batch again");
            return false;
        };
        let batch = self.next_batch;
        self.next_batch += 1;
        self.batches.insert(batch, (outputs, 0));
        for stored in events {
            self.dispatch(stored, batch);
        }
        if self
            .batches
            .get(&batch)
            .is_some_and(|(_, unacked)| *unacked == 0)
        {
            self.batches.remove(&batch);
        }
        true
    }

    fn dispatch(&mut self, stored: StoredEvent, batch: u64) {
        let worker = &self.worker;
        let event: Value = match serde_json::from_slice(&stored.payload) {
            Ok(event) => event,
            Err(err) => {
                // Stored events are always JSON; never stall on one that is not.
                warn!(handler = %worker.spec.name, partition = stored.partition, offset = stored.offset, error = %err, "skipping an unreadable event");
                return;
            }
        };
        let head = Attributes::of(&event);
        if !worker.wants(&head, &event) || !self.owned[stored.partition] {
            return;
        }
        if self
            .already_done
            .remove(&(head.source.clone(), head.id.clone()))
        {
            self.dirty = true;
            return;
        }
        let key = worker
            .spec
            .policy
            .ordered_by_key
            .then(|| worker.topic.key_of(&event))
            .flatten();
        self.pending.insert(stored.partition, stored.offset, batch);
        if let Some((_, unacked)) = self.batches.get_mut(&batch) {
            *unacked += 1;
        }
        let job = Job {
            partition: stored.partition,
            offset: stored.offset,
            key,
            event,
            head,
            payload: stored.payload,
        };
        match &job.key {
            Some(key) if self.busy_keys.contains(key) => {
                self.waiting.entry(key.clone()).or_default().push_back(job);
            }
            _ => self.start(job),
        }
    }

    fn start(&mut self, job: Job) {
        if let Some(key) = &job.key {
            self.busy_keys.insert(key.clone());
        }
        self.running[job.partition] += 1;
        let worker = Arc::clone(&self.worker);
        let done = self.done.0.clone();
        self.tasks.spawn(async move {
            let acked = worker.handle(job.event, job.payload, job.head).await;
            let _ = done
                .send(Done {
                    partition: job.partition,
                    offset: job.offset,
                    key: job.key,
                    acked,
                })
                .await;
        });
    }

    fn finish(&mut self, done: Done) {
        self.running[done.partition] -= 1;
        if done.acked
            && let Some(batch) = self.pending.remove(done.partition, done.offset)
        {
            self.dirty = true;
            if let Some((_, unacked)) = self.batches.get_mut(&batch) {
                *unacked -= 1;
                if *unacked == 0 {
                    self.batches.remove(&batch);
                }
            }
        }
        // Reap finished tasks so the set does not grow.
        while self.tasks.try_join_next().is_some() {}
        if let Some(key) = done.key {
            let next = self.waiting.get_mut(&key).and_then(VecDeque::pop_front);
            match next {
                Some(job) => self.start(job),
                None => {
                    self.waiting.remove(&key);
                    self.busy_keys.remove(&key);
                }
            }
        }
    }

    /// Commits the lowest unacked offset of each owned partition.
    async fn commit(&mut self) {
        let owned = crate::broker::membership::marked(&self.owned);
        if self.commit_partitions(&owned).await {
            self.dirty = false;
        }
    }

    /// Commits the lowest unacked offset of those of `partitions` that
    /// moved, and their outputs' cursors; false when the broker refused
    /// (try again).
    async fn commit_partitions(&mut self, partitions: &[usize]) -> bool {
        let cursor = self.pending.commit_point();
        let moved: Vec<usize> = partitions
            .iter()
            .copied()
            .filter(|&p| cursor.next(p) != self.committed.next(p))
            .collect();
        if moved.is_empty() {
            return true;
        }
        let partitions = &moved[..];
        let worker = Arc::clone(&self.worker);
        // The outputs' cursor for this commit: before every outcome of an
        // event it leaves unacked. Taken before the commit, stored after it,
        // so a crash in between leaves an older (still safe) one.
        let outputs = match self.batches.values().next() {
            Some((outputs, _)) => Some(outputs.clone()),
            None => worker.outputs_latest().await,
        };
        if let Err(err) = worker
            .broker
            .commit_partitions(&worker.spec.topic, &worker.spec.group, &cursor, partitions)
            .await
        {
            warn!(handler = %worker.spec.name, error = %err.detail(), "committing the group cursor failed; will retry");
            return false;
        }
        for &partition in partitions {
            self.committed.set(partition, cursor.next(partition));
        }
        *worker.stats.committed.lock().expect("stats lock poisoned") = Some(self.committed.clone());
        let mut stored = true;
        for (topic, position) in worker
            .spec
            .outputs()
            .into_iter()
            .zip(outputs.into_iter().flatten())
        {
            for &partition in partitions {
                let group = outputs_group(&worker, partition);
                if let Err(err) = worker.broker.commit(topic, &group, &position).await {
                    warn!(handler = %worker.spec.name, error = %err.detail(), "committing the outputs cursor failed; will retry");
                    stored = false;
                }
            }
        }
        stored
    }
}
