//! Shared consumer groups ("queues"): several workers receive from one
//! group and each event goes to one of them at a time, under a lease.
//! `ack` finishes an event; `nack` (or a lease that runs out, as when a
//! worker dies) makes it due again, for any member. At-least-once.
//!
//! One mechanism for every backend, built on the broker contract's `read`
//! and `commit`: the group's committed place in each partition is its
//! lowest unacked offset together with the offsets above it acked already
//! (a [`crate::cursor::Place`]), committed before an ack is answered. After
//! a restart, or when a partition moves to another process, the group
//! resumes from it: every event that was not acked is delivered again, an
//! acked one is not (beyond [`crate::cursor::MAX_DONE_RANGES`] gaps in one
//! partition, the highest acked ones may come again). The leases
//! themselves live in the Switchyard process that serves the group.
//!
//! Several Switchyard processes on one broker split a group's partitions
//! (`crate::broker::membership`): each process leases, and commits, only the events
//! of the partitions it owns, so no event is leased by two processes at
//! once. A receipt is settled where it was received; another process of
//! the group answers with the name of the one to use. A partition handed
//! back (a process left, or one joined) takes its unsettled leases with
//! it: their events are delivered again by the new owner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::broker::membership::{Change, Membership};
use crate::broker::{Broker, BrokerError};
use crate::cursor::{GroupCursor, Pending};
use crate::event::{Attributes, Expr};
use crate::ingest::{Ingest, IngestError, Undeclared};
use crate::topic::{GroupSpec, Topics};

/// Most events a group holds read but unacked, by count and by bytes: past
/// either it stops reading until acks make room.
const MAX_OUTSTANDING: usize = 10_000;
const MAX_OUTSTANDING_BYTES: usize = 4 << 20;
/// Events read from the broker at a time (the rest wait for other members).
const READ_BATCH: usize = 256;
/// Longest single wait on the broker, so waiters also see nacks come due.
const READ_SLICE: Duration = Duration::from_millis(100);
/// A member that has not received for this long, and holds no lease, is
/// no longer listed in the group's status.
const MEMBER_IDLE: Duration = Duration::from_secs(60);
/// Members listed at most (the least recently seen leave first).
const MAX_MEMBERS: usize = 1000;
/// The member name of a receive that gives none.
pub const DEFAULT_MEMBER: &str = "default";
/// The type of a group's dead letter: an event delivered `max_deliveries`
/// times without an ack.
pub const DEAD_LETTER_TYPE: &str = "switchyard.group.failed";
/// When storing dead letters fails (the broker is down), how long until
/// the events are tried again.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(5);
/// Dead letters stored per step before the group's cursor is committed.
const DEAD_LETTER_BATCH: usize = 64;
/// Dead-lettered events remembered, so that a late ack of one answers
/// `lease_expired` rather than `acked`.
const DEAD_LETTERED_KEPT: usize = 10_000;

/// Where a group without a committed cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(
        "group {group:?} on topic {topic:?} belongs to handler {handler:?}; pick another group name"
    )]
    Reserved {
        topic: String,
        group: String,
        handler: String,
    },
    #[error("receipt {0:?} is not one this server hands out (epoch.partition.offset.lease)")]
    BadReceipt(String),
    #[error("member name {0:?} is not valid: use 1 to 64 letters, digits, '.', '_' and '-'")]
    BadMember(String),
    #[error(
        "topic {topic:?} has {limit} consumer groups loaded already (the most per topic); an idle group leaves memory after the group idle time"
    )]
    TooMany { topic: String, limit: usize },
    #[error(
        "group {group:?} was created with {}; this receive asks for filter {given:?} (a group's filter is fixed when it is created: use another group name, or delete the group first)",
        fixed.as_deref().map_or("no filter".to_owned(), |f| format!("filter {f:?}"))
    )]
    FilterMismatch {
        group: String,
        fixed: Option<String>,
        given: String,
    },
    #[error(
        "group {group:?} on topic {topic:?} is in use ({}); stop its workers (and let other processes unload it) first",
        activity.describe()
    )]
    Active {
        topic: String,
        group: String,
        activity: Activity,
    },
    #[error("group {group:?} has never consumed topic {topic:?}")]
    Unknown { topic: String, group: String },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Who uses a group now, as far as this process can see: what keeps a
/// reset or a delete from going ahead.
#[derive(Debug, Default, serde::Serialize)]
pub struct Activity {
    /// Members (of this process) holding a live lease or waiting in a
    /// receive.
    pub members: Vec<String>,
    /// Live leases in this process.
    pub leased: usize,
    /// Other Switchyard processes serving the group (they have it loaded,
    /// whether or not their members hold leases: this process cannot see
    /// those).
    pub processes: Vec<String>,
}

impl Activity {
    pub fn is_active(&self) -> bool {
        !self.members.is_empty() || self.leased > 0 || !self.processes.is_empty()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.members.is_empty() {
            parts.push(format!("members {}", self.members.join(", ")));
        }
        if self.leased > 0 {
            parts.push(format!("{} events leased", self.leased));
        }
        if !self.processes.is_empty() {
            parts.push(format!("served by processes {}", self.processes.join(", ")));
        }
        parts.join("; ")
    }
}

/// One event handed to one member.
#[derive(Debug, Clone)]
pub struct LeasedEvent {
    /// What `ack` and `nack` take; valid while the lease holds.
    pub receipt: String,
    /// 1 on the first delivery of this event since the server started.
    pub attempt: u32,
    pub payload: Bytes,
}

/// What an ack or nack did.
#[derive(Debug, Default)]
pub struct Settled {
    pub settled: usize,
    /// Receipts whose lease had run out (the event is due again or leased
    /// to another member): the work they stand for must be treated as lost.
    pub expired: Vec<String>,
    /// Receipts of partitions this process does not own (now): settled
    /// only where they were received, if that process still owns them.
    pub elsewhere: Vec<String>,
}

impl Settled {
    /// None settled: this process serves none of the receipts' partitions.
    pub fn elsewhere(receipts: Vec<String>) -> Self {
        Self {
            settled: 0,
            expired: Vec::new(),
            elsewhere: receipts,
        }
    }
}

/// The partition a receipt names, if it is one of ours at all.
pub fn receipt_partition(text: &str) -> Option<usize> {
    text.split('.').nth(1)?.parse().ok()
}

/// Every shared group of this process, created on first use.
pub struct Groups {
    broker: Arc<Broker>,
    /// Where declared groups' dead letters go.
    ingest: Arc<Ingest>,
    topics: Topics,
    /// (topic, group) pairs that handlers consume: not for sharing.
    reserved: HashMap<(String, String), String>,
    groups: tokio::sync::Mutex<HashMap<(String, String), Arc<Group>>>,
    limits: GroupLimits,
}

/// How many groups a process keeps in memory, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// A group unused this long, with no live lease, leaves memory (its
    /// committed cursor stays on the broker; unacked events come back).
    pub idle: Duration,
    /// Groups loaded per topic at most.
    pub max_per_topic: usize,
    /// How long a process that stopped keeps its partitions of a group
    /// (see `crate::broker::membership`).
    pub session: Duration,
}

impl Groups {
    /// `reserved` maps the (topic, group) of each handler to its name.
    pub fn new(
        broker: Arc<Broker>,
        ingest: Arc<Ingest>,
        topics: Topics,
        reserved: HashMap<(String, String), String>,
        limits: GroupLimits,
    ) -> Self {
        Self {
            broker,
            ingest,
            topics,
            reserved,
            groups: tokio::sync::Mutex::new(HashMap::new()),
            limits,
        }
    }

    /// The group, loaded from its committed cursor, or created at `start`
    /// (and that position committed, so that a restart keeps it).
    /// `filter`: the receive's; the group's own is fixed when it is loaded
    /// (its file's, else the first receive's), and a receive that names
    /// another one is refused.
    pub async fn open(
        &self,
        topic: &str,
        group: &str,
        start: Start,
        filter: Option<Expr>,
    ) -> Result<Arc<Group>, GroupError> {
        let key = (topic.to_owned(), group.to_owned());
        self.not_reserved(&key)?;
        let spec = self
            .topics
            .get(topic)
            .and_then(|t| t.groups.get(group).cloned());
        let mismatch = |fixed: Option<&Expr>| match &filter {
            Some(given) if fixed != Some(given) => Err(GroupError::FilterMismatch {
                group: group.to_owned(),
                fixed: fixed.map(|f| f.source().to_owned()),
                given: given.source().to_owned(),
            }),
            _ => Ok(()),
        };
        let mut groups = self.groups.lock().await;
        if let Some(found) = groups.get(&key) {
            mismatch(found.filter.as_ref())?;
            found.touch();
            return Ok(Arc::clone(found));
        }
        let filter = match &spec {
            Some(spec) => {
                mismatch(spec.filter.as_ref())?;
                spec.filter.clone()
            }
            None => filter,
        };
        let now = Instant::now();
        groups.retain(|_, group| !group.evictable(now, self.limits.idle));
        let loaded = groups.keys().filter(|(t, _)| t == topic).count();
        if loaded >= self.limits.max_per_topic {
            return Err(GroupError::TooMany {
                topic: key.0,
                limit: self.limits.max_per_topic,
            });
        }
        let committed = self
            .broker
            .committed_or_start(topic, group, start == Start::Earliest)
            .await?;
        let (membership, mut changes) =
            Membership::join(Arc::clone(&self.broker), topic, group, self.limits.session).await?;
        let opened = Arc::new(Group::new(
            Arc::clone(&self.broker),
            Arc::clone(&self.ingest),
            spec,
            filter,
            &key,
            committed,
            membership,
        ));
        // The first share, before anyone receives.
        while let Ok(change) = changes.try_recv() {
            opened.change(change).await;
        }
        tokio::spawn(Group::follow(Arc::downgrade(&opened), changes));
        groups.insert(key, Arc::clone(&opened));
        Ok(opened)
    }

    /// Hands every loaded group's partitions back at once (the process is
    /// stopping): each commits, then leaves, so that the other processes
    /// take the partitions without waiting for the session timeout.
    pub async fn leave_all(&self) {
        let loaded: Vec<Arc<Group>> = self.groups.lock().await.drain().map(|(_, g)| g).collect();
        for group in loaded {
            group.leave().await;
        }
    }

    /// The group if this process serves it already.
    pub async fn loaded(&self, topic: &str, group: &str) -> Option<Arc<Group>> {
        let key = (topic.to_owned(), group.to_owned());
        let found = self.groups.lock().await.get(&key).cloned()?;
        found.touch();
        Some(found)
    }

    fn not_reserved(&self, key: &(String, String)) -> Result<(), GroupError> {
        match self.reserved.get(key) {
            Some(handler) => Err(GroupError::Reserved {
                topic: key.0.clone(),
                group: key.1.clone(),
                handler: handler.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The handler that consumes in this group, if one does.
    pub fn handler_of(&self, topic: &str, group: &str) -> Option<&str> {
        self.reserved
            .get(&(topic.to_owned(), group.to_owned()))
            .map(String::as_str)
    }

    /// The filter a group has, or would have if loaded now: its file's, or
    /// the one it was loaded with here.
    pub async fn filter_of(&self, topic: &str, group: &str) -> Option<String> {
        if let Some(spec) = self
            .topics
            .get(topic)
            .and_then(|t| t.groups.get(group).cloned())
        {
            return spec.filter.map(|f| f.source().to_owned());
        }
        let key = (topic.to_owned(), group.to_owned());
        let groups = self.groups.lock().await;
        groups
            .get(&key)?
            .filter
            .as_ref()
            .map(|f| f.source().to_owned())
    }

    /// Who uses the group now: this process's members and leases, and the
    /// other processes that serve it.
    pub async fn activity(&self, topic: &str, group: &str) -> Result<Activity, GroupError> {
        let loaded = {
            let key = (topic.to_owned(), group.to_owned());
            self.groups.lock().await.get(&key).cloned()
        };
        self.activity_of(topic, group, loaded.as_deref()).await
    }

    async fn activity_of(
        &self,
        topic: &str,
        group: &str,
        loaded: Option<&Group>,
    ) -> Result<Activity, GroupError> {
        let mut activity = loaded.map(Group::activity).unwrap_or_default();
        let ownership =
            crate::broker::membership::ownership(&self.broker, topic, group, None).await;
        match ownership {
            Ok(ownership) => {
                activity.processes = ownership
                    .processes
                    .into_keys()
                    .filter(|process| *process != ownership.this_process)
                    .collect();
            }
            // A Kafka-protocol broker that cannot describe groups (tansu):
            // only this process is seen.
            Err(_) if self.broker.kind() == "kafka" => {}
            Err(err) => return Err(err.into()),
        }
        Ok(activity)
    }

    /// Sets the group's committed cursor to `to` (`None`: removes it, so
    /// that the next receive creates the group afresh at its `start`), when
    /// nobody uses the group. The loaded group (if any) is unloaded first,
    /// so that nothing it held is committed over the new cursor; the next
    /// receive loads the group from it. Answers whether the group had a
    /// committed cursor.
    pub async fn replace(
        &self,
        topic: &str,
        group: &str,
        to: Option<&crate::cursor::Cursor>,
    ) -> Result<bool, GroupError> {
        let key = (topic.to_owned(), group.to_owned());
        self.not_reserved(&key)?;
        // Held throughout: no receive loads the group meanwhile.
        let mut groups = self.groups.lock().await;
        let loaded = groups.get(&key).cloned();
        let activity = self.activity_of(topic, group, loaded.as_deref()).await?;
        if activity.is_active() {
            return Err(GroupError::Active {
                topic: key.0,
                group: key.1,
                activity,
            });
        }
        if let Some(loaded) = loaded {
            groups.remove(&key);
            // Commits nothing after this: its partitions are handed back.
            loaded.leave().await;
        }
        match to {
            Some(cursor) => {
                let existed = self.broker.committed_places(topic, group).await?.is_some();
                self.broker.commit(topic, group, cursor).await?;
                Ok(existed)
            }
            None => Ok(self.broker.delete_group(topic, group).await?),
        }
    }
}

/// A shared consumer group on one topic.
pub struct Group {
    broker: Arc<Broker>,
    ingest: Arc<Ingest>,
    /// Its settings, when its topic's file declares it.
    spec: Option<GroupSpec>,
    /// Only events this is true of are delivered; the others count as
    /// settled. Fixed when the group is loaded.
    filter: Option<Expr>,
    topic: String,
    name: String,
    partitions: usize,
    /// Random per load, in every receipt: a receipt from before a restart
    /// names a lease that no longer exists.
    epoch: u32,
    state: Mutex<State>,
    /// One broker read at a time; the others wait for what it brings.
    reading: tokio::sync::Mutex<()>,
    /// Serialises commits, so that they land in increasing order; holds the
    /// places last committed.
    committed: tokio::sync::Mutex<GroupCursor>,
    changed: tokio::sync::Notify,
    last_used: Mutex<Instant>,
    /// A task is storing dead letters.
    dead_lettering: std::sync::atomic::AtomicBool,
    /// Its share of the group's partitions among the processes serving it.
    membership: tokio::sync::Mutex<Option<Membership>>,
}

struct State {
    /// When each member last received.
    members: HashMap<Arc<str>, Instant>,
    /// Members waiting in a receive now, and how many receives each.
    receiving: HashMap<Arc<str>, usize>,
    /// The latest dead-lettered events (partition, offset), oldest first.
    dead_lettered: std::collections::VecDeque<(usize, u64)>,
    /// How far the broker was read, and what is read and not yet acked.
    outstanding: Pending<Entry>,
    outstanding_bytes: usize,
    /// The partitions this process owns: it reads and leases only these.
    owned: Vec<bool>,
    /// Per partition, how often it was taken up or handed back: a read
    /// that started before leaves such a partition's place alone.
    moves: Vec<u64>,
}

struct Entry {
    payload: Bytes,
    deliveries: u32,
    lease: Lease,
}

enum Lease {
    /// Due for delivery from this instant.
    Due(Instant),
    /// Delivered as often as the group allows: on its way to the
    /// dead-letter topic (held until it is stored there, or set due again
    /// if that fails).
    DeadLettering,
    Held {
        id: u64,
        until: Instant,
        member: Arc<str>,
    },
}

impl State {
    /// What receipts of `partition` carry: the group's epoch, changed each
    /// time the partition moves, so that a receipt from before a move (a
    /// partition handed back and taken up again) holds no lease.
    fn epoch(&self, base: u32, partition: usize) -> u32 {
        base.wrapping_add((self.moves[partition] as u32).wrapping_mul(0x9e37_79b9))
    }

    /// Drops what is read of `partition` (it moved away, or is taken up
    /// again from its committed offset).
    fn forget(&mut self, partition: usize) {
        self.moves[partition] += 1;
        let bytes: usize = self
            .outstanding
            .iter_mut()
            .filter(|(p, _, _)| *p == partition)
            .map(|(_, _, entry)| entry.payload.len())
            .sum();
        self.outstanding_bytes -= bytes;
        self.outstanding.forget(partition);
    }
}

/// Group status for `GET /v1/topics/{topic}/groups/{group}`.
#[derive(Debug, serde::Serialize)]
pub struct GroupStatus {
    /// The CEL filter fixed when the group was created, if any.
    pub filter: Option<String>,
    pub committed: String,
    pub read: String,
    pub outstanding: usize,
    pub leased: usize,
    /// Each member seen lately: its live leases and how long ago it last
    /// received.
    pub members: std::collections::BTreeMap<String, MemberStatus>,
    /// The Switchyard processes serving the group and the partitions each
    /// owns (absent when the broker could not be asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<crate::broker::membership::Ownership>,
    /// Why `processes` is absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes_unknown: Option<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct MemberStatus {
    pub leased: usize,
    /// `None` for a member that holds leases but is no longer listed as seen.
    pub last_receive_ms_ago: Option<u64>,
}

impl Group {
    fn new(
        broker: Arc<Broker>,
        ingest: Arc<Ingest>,
        spec: Option<GroupSpec>,
        filter: Option<Expr>,
        key: &(String, String),
        committed: GroupCursor,
        membership: Membership,
    ) -> Self {
        Self {
            broker,
            ingest,
            spec,
            filter,
            topic: key.0.clone(),
            name: key.1.clone(),
            partitions: committed.partitions(),
            epoch: unguessable() as u32,
            state: Mutex::new(State {
                members: HashMap::new(),
                receiving: HashMap::new(),
                dead_lettered: std::collections::VecDeque::new(),
                owned: vec![false; committed.partitions()],
                moves: vec![0; committed.partitions()],
                outstanding: Pending::new(committed.cursor()),
                outstanding_bytes: 0,
            }),
            reading: tokio::sync::Mutex::new(()),
            committed: tokio::sync::Mutex::new(committed),
            changed: tokio::sync::Notify::new(),
            last_used: Mutex::new(Instant::now()),
            dead_lettering: std::sync::atomic::AtomicBool::new(false),
            membership: tokio::sync::Mutex::new(Some(membership)),
        }
    }

    /// Applies membership changes while the group is loaded.
    async fn follow(
        group: std::sync::Weak<Self>,
        mut changes: tokio::sync::mpsc::UnboundedReceiver<Change>,
    ) {
        while let Some(change) = changes.recv().await {
            let Some(group) = group.upgrade() else { return };
            group.change(change).await;
        }
    }

    async fn change(&self, change: Change) {
        match change {
            Change::Gained(partitions) => {
                // From the committed offsets, as another process left them.
                let committed = loop {
                    match self.broker.committed_places(&self.topic, &self.name).await {
                        Ok(Some(cursor)) => break cursor,
                        Ok(None) => break self.committed.lock().await.clone(),
                        Err(err) => {
                            tracing::warn!(topic = %self.topic, group = %self.name, error = %err.detail(), "cannot read the group cursor to take partitions up; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                };
                {
                    let mut last = self.committed.lock().await;
                    let mut state = self.state();
                    for &partition in &partitions {
                        let place = committed.place(partition).clone();
                        state.forget(partition);
                        state.outstanding.restart_at(partition, place.clone());
                        state.owned[partition] = true;
                        last.set(partition, place);
                    }
                }
                self.changed.notify_waiters();
            }
            Change::Give { partitions, done } => {
                // Handed back at once: the leases go with the partitions
                // (in one step, so none is handed out meanwhile), and the
                // lowest offsets they left unsettled are committed.
                let mut committed = self.committed.lock().await;
                let point = {
                    let mut state = self.state();
                    let point = state.outstanding.commit_places(|entry| entry.deliveries);
                    for &partition in &partitions {
                        state.owned[partition] = false;
                        state.forget(partition);
                    }
                    point
                };
                if let Err(err) = self.commit_at(&mut committed, &point, &partitions).await {
                    tracing::warn!(topic = %self.topic, group = %self.name, error = %crate::error_chain(&err), "cannot commit partitions handed back; their events since the last commit come again");
                }
                let _ = done.send(());
            }
            Change::Lost(partitions) => {
                let mut state = self.state();
                for &partition in &partitions {
                    state.owned[partition] = false;
                    state.forget(partition);
                }
            }
        }
    }

    /// Commits and hands every partition back (the process is stopping).
    async fn leave(&self) {
        // Committed, then dropped under the commit lock: an ack after this
        // finds its lease gone (the event comes again from the new owner)
        // rather than being answered without a commit.
        let mut committed = self.committed.lock().await;
        let (owned, done) = self.commit_owned(&mut committed).await;
        if let Err(err) = done {
            tracing::warn!(topic = %self.topic, group = %self.name, error = %crate::error_chain(&err), "cannot commit on leaving; events since the last commit come again");
        }
        {
            let mut state = self.state();
            for &partition in &owned {
                state.owned[partition] = false;
                state.forget(partition);
            }
        }
        drop(committed);
        if let Some(membership) = self.membership.lock().await.take() {
            membership.leave().await;
        }
    }

    fn touch(&self) {
        *self.last_used.lock().expect("group clock lock poisoned") = Instant::now();
    }

    /// Unused for `idle`, no request holds it, and no lease is live.
    fn evictable(self: &Arc<Self>, now: Instant, idle: Duration) -> bool {
        let last = *self.last_used.lock().expect("group clock lock poisoned");
        if now.saturating_duration_since(last) < idle || Arc::strong_count(self) > 1 {
            return false;
        }
        let state = self.state();
        !state
            .outstanding
            .values()
            .any(|entry| matches!(entry.lease, Lease::Held { until, .. } if until > now))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("group state lock poisoned")
    }

    /// Up to `max` due events, each leased for `lease`; waits up to `wait`
    /// for the first one.
    pub async fn receive(
        self: &Arc<Self>,
        member: &str,
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<LeasedEvent>, GroupError> {
        let member: Arc<str> = Arc::from(member);
        self.seen(&member);
        let _receiving = Receiving::new(self, &member);
        let deadline = Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (taken, exhausted, next_due, room) = self.take(&member, max, lease);
            if exhausted {
                self.start_dead_lettering();
            }
            if !taken.is_empty() {
                return Ok(self.counted(taken).await);
            }
            let now = Instant::now();
            let until = next_due.map_or(deadline, |due| due.min(deadline));
            if room && let Ok(_reading) = self.reading.try_lock() {
                let slice = until.saturating_duration_since(now).min(READ_SLICE);
                self.fill(slice).await?;
                if Instant::now() >= deadline {
                    let (taken, exhausted, _, _) = self.take(&member, max, lease);
                    if exhausted {
                        self.start_dead_lettering();
                    }
                    return Ok(self.counted(taken).await);
                }
                continue;
            }
            if now >= deadline {
                return Ok(Vec::new());
            }
            // Another member is reading (or the group is full): wait for
            // what it brings, an ack, or the next lease to come due.
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(until.min(now + READ_SLICE)) => {}
            }
        }
    }

    /// Commits the delivery counts of `taken` before they go out, so that
    /// `attempt` (and the group's maximum of deliveries) carries across a
    /// restart, a kill and a partition move. When the broker does not take
    /// the commit they go out all the same: an event may then count one
    /// delivery fewer after a restart than it had.
    async fn counted(&self, taken: Vec<LeasedEvent>) -> Vec<LeasedEvent> {
        if !taken.is_empty()
            && let Err(err) = self.commit().await
        {
            tracing::warn!(topic = %self.topic, group = %self.name, error = %crate::error_chain(&err), "cannot commit delivery counts; after a restart they may count from an earlier number");
        }
        taken
    }

    /// Leases due events; also says when the next one comes due and whether
    /// there is room to read more.
    fn take(
        &self,
        member: &Arc<str>,
        max: usize,
        lease: Duration,
    ) -> (Vec<LeasedEvent>, bool, Option<Instant>, bool) {
        let now = Instant::now();
        let mut state = self.state();
        let mut taken = Vec::new();
        let mut exhausted = false;
        let max_deliveries = self
            .spec
            .as_ref()
            .and_then(|spec| spec.limit.as_ref())
            .map(|limit| limit.max_deliveries);
        let mut next_due: Option<Instant> = None;
        let epochs: Vec<u32> = (0..self.partitions)
            .map(|p| state.epoch(self.epoch, p))
            .collect();
        for (partition, offset, entry) in state.outstanding.iter_mut() {
            let due = match entry.lease {
                Lease::Due(at) => at,
                Lease::Held { until, .. } => until,
                Lease::DeadLettering => continue,
            };
            if due > now || taken.len() >= max {
                next_due = Some(next_due.map_or(due, |next| next.min(due)));
                continue;
            }
            if max_deliveries.is_some_and(|max| entry.deliveries >= max) {
                entry.lease = Lease::DeadLettering;
                exhausted = true;
                continue;
            }
            // Random, so that one receipt reveals nothing of another's:
            // only the member that received a lease can settle it.
            let id = unguessable();
            entry.lease = Lease::Held {
                id,
                until: now + lease,
                member: Arc::clone(member),
            };
            entry.deliveries += 1;
            taken.push(LeasedEvent {
                receipt: format!("{:08x}.{partition}.{offset}.{id}", epochs[partition]),
                attempt: entry.deliveries,
                payload: entry.payload.clone(),
            });
        }
        let room = state.outstanding.len() < MAX_OUTSTANDING
            && state.outstanding_bytes < MAX_OUTSTANDING_BYTES;
        (taken, exhausted, next_due, room)
    }

    /// Starts storing the exhausted events as dead letters, in a task of
    /// its own (one per group at a time), so that no receive waits for it.
    fn start_dead_lettering(self: &Arc<Self>) {
        if !self
            .dead_lettering
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            tokio::spawn(Arc::clone(self).dead_letter_all());
        }
    }

    /// Stores every exhausted event on the group's dead-letter topic, then
    /// acks it (and commits). If the broker refuses, the rest are due again
    /// after `DEAD_LETTER_RETRY`, to be tried once more.
    async fn dead_letter_all(self: Arc<Self>) {
        use std::sync::atomic::Ordering;
        loop {
            let batch: Vec<(usize, u64, u32, Bytes)> = {
                let mut state = self.state();
                state
                    .outstanding
                    .iter_mut()
                    .filter(|(_, _, entry)| matches!(entry.lease, Lease::DeadLettering))
                    .take(DEAD_LETTER_BATCH)
                    .map(|(p, o, entry)| (p, o, entry.deliveries, entry.payload.clone()))
                    .collect()
            };
            if batch.is_empty() {
                self.dead_lettering.store(false, Ordering::Release);
                // One marked after the look above, before the flag fell:
                // this task takes it, unless a new one has.
                let more = self
                    .state()
                    .outstanding
                    .values()
                    .any(|entry| matches!(entry.lease, Lease::DeadLettering));
                if more && !self.dead_lettering.swap(true, Ordering::AcqRel) {
                    continue;
                }
                return;
            }
            let mut settled = 0;
            for (partition, offset, deliveries, payload) in batch {
                if !self
                    .store_dead_letter(partition, offset, deliveries, &payload)
                    .await
                {
                    // The broker refused: everything still waiting is due
                    // again later.
                    let due = Instant::now() + DEAD_LETTER_RETRY;
                    let mut state = self.state();
                    for (_, _, entry) in state.outstanding.iter_mut() {
                        if matches!(entry.lease, Lease::DeadLettering) {
                            entry.lease = Lease::Due(due);
                        }
                    }
                    break;
                }
                let mut state = self.state();
                if let Some(entry) = state.outstanding.remove(partition, offset) {
                    state.outstanding_bytes -= entry.payload.len();
                }
                state.dead_lettered.push_back((partition, offset));
                if state.dead_lettered.len() > DEAD_LETTERED_KEPT {
                    state.dead_lettered.pop_front();
                }
                settled += 1;
            }
            if settled > 0 {
                self.changed.notify_waiters();
                if let Err(err) = self.commit().await {
                    tracing::warn!(topic = %self.topic, group = %self.name, error = %crate::error_chain(&err), "committing after dead letters failed; the next ack commits");
                }
            }
        }
    }

    /// Stores one exhausted event's dead letter; false when the broker
    /// refused (try again later). Its id names the event's place, so a
    /// retry is the same event (NATS drops it as a duplicate).
    async fn store_dead_letter(
        &self,
        partition: usize,
        offset: u64,
        deliveries: u32,
        payload: &Bytes,
    ) -> bool {
        let Some(spec) = self.spec.as_ref().and_then(|spec| spec.limit.as_ref()) else {
            return true;
        };
        let input: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let head = Attributes::of(&input);
        let data = serde_json::json!({
            "topic": self.topic,
            "group": self.name,
            "reason": format!("delivered {deliveries} times without an ack"),
            "deliveries": deliveries,
            "event": input,
        });
        let source = format!("/topics/{}/groups/{}", self.topic, self.name);
        let mut letter = head.cause(source, DEAD_LETTER_TYPE, data);
        letter.id = format!("{partition}.{offset}");
        let mut shrunk = false;
        loop {
            let published = self
                .ingest
                .publish_checked(&spec.dead_letters, vec![letter.clone()], Undeclared::Accept)
                .await;
            match published {
                Ok(_) => return true,
                Err(IngestError::Broker(err)) => {
                    tracing::warn!(topic = %self.topic, group = %self.name, error = %err.detail(), "cannot store a dead letter yet; trying again later");
                    return false;
                }
                // Too large or otherwise unstorable as it is: once more
                // with the event's summary in place of the event.
                Err(err) if !shrunk => {
                    head.shrink(&mut letter, &err.to_string());
                    shrunk = true;
                }
                // Not even that (the dead-letter topic's schema for the
                // type refuses it): said loudly, and acked like a handler's
                // unstorable outcome, rather than stalling the group.
                Err(err) => {
                    tracing::error!(topic = %self.topic, group = %self.name, partition, offset, error = %err, "a dead letter cannot be stored on {}; the event is acked without one", spec.dead_letters);
                    return true;
                }
            }
        }
    }

    /// One broker read into the outstanding set (the caller holds `reading`).
    async fn fill(&self, wait: Duration) -> Result<(), GroupError> {
        let mut skipped = false;
        let (from, room, moves, owned) = {
            let state = self.state();
            let room = MAX_OUTSTANDING_BYTES.saturating_sub(state.outstanding_bytes);
            (
                state.outstanding.read_cursor().clone(),
                room.max(1),
                state.moves.clone(),
                state.owned.clone(),
            )
        };
        match self
            .broker
            .read_bounded(
                &self.topic,
                &from,
                Some(&owned),
                READ_BATCH,
                (room, 1),
                wait,
            )
            .await
        {
            Ok(batch) => {
                // Evaluated before the state is locked: a filter costs.
                let passes: Vec<bool> = batch
                    .events
                    .iter()
                    .map(|event| {
                        self.filter.as_ref().is_none_or(|filter| {
                            serde_json::from_slice(&event.payload)
                                .is_ok_and(|json| filter.passes(&json))
                        })
                    })
                    .collect();
                skipped = passes.iter().any(|passes| !passes);
                let now = Instant::now();
                let mut state = self.state();
                for (event, passes) in batch.events.into_iter().zip(passes) {
                    // One the filter refuses is never inserted: read and
                    // not outstanding, it counts as settled.
                    if !passes
                        || !state.owned[event.partition]
                        || state.moves[event.partition] != moves[event.partition]
                        || state.outstanding.settled(event.partition, event.offset)
                    {
                        continue;
                    }
                    state.outstanding_bytes += event.payload.len();
                    // Delivered before it moved here (or before a restart).
                    let deliveries = state.outstanding.tries(event.partition, event.offset);
                    state.outstanding.insert(
                        event.partition,
                        event.offset,
                        Entry {
                            payload: event.payload,
                            deliveries,
                            lease: Lease::Due(now),
                        },
                    );
                }
                // A partition that moved meanwhile keeps its new place.
                let mut next = batch.next;
                for (partition, &before) in moves.iter().enumerate() {
                    if state.moves[partition] != before {
                        next.set(partition, state.outstanding.read_cursor().next(partition));
                    }
                }
                state.outstanding.read_to(next);
            }
            Err(BrokerError::CursorExpired { oldest, .. }) => {
                tracing::warn!(topic = %self.topic, group = %self.name, "events expired before the group read them; skipping to the oldest retained");
                self.state().outstanding.skip_to(&oldest);
            }
            Err(err) => return Err(err.into()),
        }
        self.changed.notify_waiters();
        // Events the filter refused are settled: committed now, so that
        // the group's lag drops and a restart does not read them again.
        if skipped && let Err(err) = self.commit().await {
            tracing::warn!(topic = %self.topic, group = %self.name, error = %crate::error_chain(&err), "cannot commit past filtered events; the next ack commits");
        }
        Ok(())
    }

    /// Finishes the events of `receipts` and commits the group's cursor
    /// before returning. A receipt for an event already acked counts as
    /// settled (acks may be retried).
    pub async fn ack(&self, receipts: &[String]) -> Result<Settled, GroupError> {
        let parsed = self.parse_all(receipts)?;
        let mut settled = Settled::default();
        let mut removed = Vec::new();
        {
            let mut state = self.state();
            for (text, receipt) in receipts.iter().zip(parsed) {
                if !state.owned[receipt.partition] {
                    settled.elsewhere.push(text.clone());
                    continue;
                }
                let epoch = state.epoch(self.epoch, receipt.partition);
                match state.outstanding.get(receipt.partition, receipt.offset) {
                    Some(entry) if receipt.holds(entry, epoch) => {
                        let entry = state
                            .outstanding
                            .remove(receipt.partition, receipt.offset)
                            .expect("present");
                        state.outstanding_bytes -= entry.payload.len();
                        settled.settled += 1;
                        removed.push((receipt.partition, receipt.offset, entry));
                    }
                    Some(_) => settled.expired.push(text.clone()),
                    None if state
                        .outstanding
                        .was_read(receipt.partition, receipt.offset)
                        && receipt.epoch == epoch
                        && !state
                            .dead_lettered
                            .contains(&(receipt.partition, receipt.offset)) =>
                    {
                        settled.settled += 1;
                    }
                    None => settled.expired.push(text.clone()),
                }
            }
        }
        self.changed.notify_waiters();
        if let Err(err) = self.commit().await {
            // Not acked after all: the answer says so, and a retry of the
            // same receipts settles them.
            let mut state = self.state();
            for (partition, offset, entry) in removed {
                if state.owned[partition] && state.outstanding.get(partition, offset).is_none() {
                    state.outstanding_bytes += entry.payload.len();
                    state.outstanding.insert(partition, offset, entry);
                }
            }
            return Err(err);
        }
        Ok(settled)
    }

    /// Makes the events of `receipts` due again after `delay`, for any
    /// member.
    pub fn nack(&self, receipts: &[String], delay: Duration) -> Result<Settled, GroupError> {
        let parsed = self.parse_all(receipts)?;
        let mut settled = Settled::default();
        let due = Instant::now() + delay;
        {
            let mut state = self.state();
            for (text, receipt) in receipts.iter().zip(parsed) {
                if !state.owned[receipt.partition] {
                    settled.elsewhere.push(text.clone());
                    continue;
                }
                let epoch = state.epoch(self.epoch, receipt.partition);
                match state.outstanding.get_mut(receipt.partition, receipt.offset) {
                    Some(entry) if receipt.holds(entry, epoch) => {
                        entry.lease = Lease::Due(due);
                        settled.settled += 1;
                    }
                    _ => settled.expired.push(text.clone()),
                }
            }
        }
        self.changed.notify_waiters();
        Ok(settled)
    }

    /// Renews the leases of `receipts` for `lease` from now (a member still
    /// working on them).
    pub fn extend(&self, receipts: &[String], lease: Duration) -> Result<Settled, GroupError> {
        let parsed = self.parse_all(receipts)?;
        let mut settled = Settled::default();
        let until = Instant::now() + lease;
        let mut state = self.state();
        for (text, receipt) in receipts.iter().zip(parsed) {
            if !state.owned[receipt.partition] {
                settled.elsewhere.push(text.clone());
                continue;
            }
            let epoch = state.epoch(self.epoch, receipt.partition);
            match state.outstanding.get_mut(receipt.partition, receipt.offset) {
                Some(entry) if receipt.holds(entry, epoch) => {
                    if let Lease::Held { until: held, .. } = &mut entry.lease {
                        *held = until;
                    }
                    settled.settled += 1;
                }
                _ => settled.expired.push(text.clone()),
            }
        }
        Ok(settled)
    }

    /// Notes that `member` received now; forgets members long gone.
    fn seen(&self, member: &Arc<str>) {
        let now = Instant::now();
        let mut state = self.state();
        state.members.insert(Arc::clone(member), now);
        if state.members.len() > MAX_MEMBERS {
            let holding: std::collections::HashSet<Arc<str>> = state
                .outstanding
                .values()
                .filter_map(|e| match &e.lease {
                    Lease::Held { until, member, .. } if *until > now => Some(Arc::clone(member)),
                    _ => None,
                })
                .collect();
            state.members.retain(|name, last| {
                now.saturating_duration_since(*last) < MEMBER_IDLE || holding.contains(name)
            });
            while state.members.len() > MAX_MEMBERS {
                let oldest = state
                    .members
                    .iter()
                    .min_by_key(|(_, last)| **last)
                    .map(|(name, _)| Arc::clone(name))
                    .expect("more than MAX_MEMBERS");
                state.members.remove(&oldest);
            }
        }
    }

    fn parse_all(&self, receipts: &[String]) -> Result<Vec<Receipt>, GroupError> {
        receipts
            .iter()
            .map(|text| Receipt::parse(text, self.partitions))
            .collect()
    }

    /// Commits the place of each partition it owns.
    async fn commit(&self) -> Result<(), GroupError> {
        let mut committed = self.committed.lock().await;
        self.commit_owned(&mut committed).await.1
    }

    /// Commits the place of each partition it owns (the caller holds the
    /// commit lock): those partitions, and how the commit went.
    async fn commit_owned(
        &self,
        committed: &mut GroupCursor,
    ) -> (Vec<usize>, Result<(), GroupError>) {
        // Which partitions are owned and where they are, in one look: a
        // partition handed back or lost meanwhile has forgotten its unacked
        // events, and committing its read position would settle them.
        let (owned, cursor) = {
            let state = self.state();
            let owned = crate::broker::membership::marked(&state.owned);
            (
                owned,
                state.outstanding.commit_places(|entry| entry.deliveries),
            )
        };
        let done = self.commit_at(committed, &cursor, &owned).await;
        (owned, done)
    }

    /// Commits `cursor`'s places of those `partitions` that changed since
    /// `committed` (the caller holds its lock), and notes them there.
    async fn commit_at(
        &self,
        committed: &mut GroupCursor,
        cursor: &GroupCursor,
        partitions: &[usize],
    ) -> Result<(), GroupError> {
        if partitions
            .iter()
            .any(|&p| cursor.place(p) != committed.place(p))
        {
            self.broker
                .commit_places(&self.topic, &self.name, cursor, partitions)
                .await?;
            for &partition in partitions {
                committed.set(partition, cursor.place(partition).clone());
            }
        }
        Ok(())
    }

    pub async fn status(&self) -> GroupStatus {
        // The broker's cursor covers the partitions other processes own.
        let committed = match self.broker.committed(&self.topic, &self.name).await {
            Ok(Some(cursor)) => cursor.to_string(),
            _ => self.committed.lock().await.cursor().to_string(),
        };
        let this = crate::broker::membership::marked(&self.state().owned);
        let (processes, processes_unknown) = match crate::broker::membership::ownership(
            &self.broker,
            &self.topic,
            &self.name,
            Some(this),
        )
        .await
        {
            Ok(ownership) => (Some(ownership), None),
            Err(err) => (None, Some(err.detail())),
        };
        let state = self.state();
        let now = Instant::now();
        let ago = |last: Instant| Some(now.saturating_duration_since(last).as_millis() as u64);
        let mut members: std::collections::BTreeMap<String, MemberStatus> = state
            .members
            .iter()
            .filter(|(_, last)| now.saturating_duration_since(**last) < MEMBER_IDLE)
            .map(|(name, last)| {
                let status = MemberStatus {
                    leased: 0,
                    last_receive_ms_ago: ago(*last),
                };
                (name.to_string(), status)
            })
            .collect();
        let mut leased = 0;
        for entry in state.outstanding.values() {
            if let Lease::Held { until, member, .. } = &entry.lease
                && *until > now
            {
                leased += 1;
                let last = state.members.get(member).copied();
                members
                    .entry(member.to_string())
                    .or_insert(MemberStatus {
                        leased: 0,
                        last_receive_ms_ago: last.and_then(ago),
                    })
                    .leased += 1;
            }
        }
        GroupStatus {
            filter: self.filter.as_ref().map(|f| f.source().to_owned()),
            committed,
            read: state.outstanding.read_cursor().to_string(),
            outstanding: state.outstanding.len(),
            leased,
            members,
            processes,
            processes_unknown,
        }
    }
}

impl Group {
    /// Members holding a live lease or waiting in a receive, and the live
    /// leases (dead letters being stored count as leased: their task
    /// commits when done).
    fn activity(&self) -> Activity {
        let now = Instant::now();
        let state = self.state();
        let mut members: std::collections::BTreeSet<String> =
            state.receiving.keys().map(|m| m.to_string()).collect();
        let mut leased = 0;
        for entry in state.outstanding.values() {
            match &entry.lease {
                Lease::Held { until, member, .. } if *until > now => {
                    leased += 1;
                    members.insert(member.to_string());
                }
                Lease::DeadLettering => leased += 1,
                _ => {}
            }
        }
        Activity {
            members: members.into_iter().collect(),
            leased,
            processes: Vec::new(),
        }
    }
}

/// A member's receive in progress, listed in its group's state while it
/// lasts (a reset waits for none).
struct Receiving<'a> {
    group: &'a Group,
    member: Arc<str>,
}

impl<'a> Receiving<'a> {
    fn new(group: &'a Group, member: &Arc<str>) -> Self {
        *group
            .state()
            .receiving
            .entry(Arc::clone(member))
            .or_default() += 1;
        Self {
            group,
            member: Arc::clone(member),
        }
    }
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        let mut state = self.group.state();
        if let Some(count) = state.receiving.get_mut(&self.member) {
            *count -= 1;
            if *count == 0 {
                state.receiving.remove(&self.member);
            }
        }
    }
}

/// Checks a member name (what `GET …/groups/{g}` lists leases under), as
/// the caller of [`Group::receive`] must.
pub fn check_member(member: &str) -> Result<(), GroupError> {
    let valid = (1..=64).contains(&member.len())
        && member
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(GroupError::BadMember(member.chars().take(80).collect()))
    }
}

/// 64 bits from the operating system's secure generator.
fn unguessable() -> u64 {
    getrandom::u64().expect("the operating system's random source is available")
}

/// A receipt taken apart: `epoch.partition.offset.lease`.
struct Receipt {
    epoch: u32,
    partition: usize,
    offset: u64,
    lease: u64,
}

impl Receipt {
    fn parse(text: &str, partitions: usize) -> Result<Self, GroupError> {
        let bad = || GroupError::BadReceipt(text.chars().take(80).collect());
        let mut parts = text.split('.');
        let mut next = || parts.next().ok_or_else(bad);
        let epoch = u32::from_str_radix(next()?, 16).map_err(|_| bad())?;
        let partition: usize = next()?.parse().map_err(|_| bad())?;
        let offset: u64 = next()?.parse().map_err(|_| bad())?;
        let lease: u64 = next()?.parse().map_err(|_| bad())?;
        if parts.next().is_some() || partition >= partitions {
            return Err(bad());
        }
        Ok(Self {
            epoch,
            partition,
            offset,
            lease,
        })
    }

    /// Whether this receipt's lease on `entry` still holds.
    fn holds(&self, entry: &Entry, epoch: u32) -> bool {
        self.epoch == epoch
            && matches!(entry.lease, Lease::Held { id, until, .. } if id == self.lease && until > Instant::now())
    }
}
