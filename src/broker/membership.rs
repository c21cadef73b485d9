//! Several Switchyard processes sharing one consumer group (a handler's, or
//! a queue's) on one broker split its partitions between them: each
//! partition is owned by one process at a time, which alone reads it,
//! leases its events and commits its offsets. Kafka's model, built on three
//! broker primitives (`lease`, `release`, `leases`), so it is the same on
//! every backend:
//!
//! - each process holds a member lease on `<topic>/<group>/members`, renewed
//!   every third of the session timeout; one that stops renewing (killed,
//!   cut off) drops out after the session timeout;
//! - from the sorted member list each process works out its quota
//!   (partitions / members, the first `partitions % members` one more), and
//!   takes free partitions (an owner lease on `<topic>/<group>/owners`, item
//!   the partition) while under it;
//! - over its quota (a process joined), it hands the extra partitions back:
//!   its consumer stops taking their events, finishes or gives up what is in
//!   flight, commits, and only then is the owner lease released, so no
//!   partition ever has two owners that both know it;
//! - leaving (SIGTERM), it hands every partition back at once;
//! - an owner lease it fails to renew (the broker was unreachable for about
//!   a session) counts as lost: the consumer stops at once and commits
//!   nothing more for it.
//!
//! The embedded log has one process (its data-dir lock): the same code runs
//! on leases kept in memory, and that process owns every partition.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::{Broker, BrokerError};

/// The session timeout unless configured: how long a process that stopped
/// renewing keeps its partitions.
pub const DEFAULT_SESSION: Duration = Duration::from_secs(10);
/// The longest pause between two looks at a group.
const MAX_TICK: Duration = Duration::from_secs(1);
/// How long a consumer may take to hand a partition back before the owner
/// lease is released anyway.
const GIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// This process's name among the members of a group, as status shows it:
/// `--instance`, else host, pid and a random part.
pub fn process_name() -> &'static str {
    PROCESS.get_or_init(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "switchyard".to_owned());
        let random = getrandom::u32().unwrap_or_default() & 0xffff;
        format!("{host}-{}-{random:04x}", std::process::id())
    })
}

static PROCESS: OnceLock<String> = OnceLock::new();

/// What this process holds its leases as: its name and a random part, so
/// that two processes given the same `--instance` (a copied setting) never
/// share a partition; a restarted process is always a new member.
pub(crate) fn holder() -> &'static str {
    HOLDER.get_or_init(|| {
        let random = getrandom::u32().unwrap_or_default();
        format!("{}{HOLDER_MARK}{random:08x}", process_name())
    })
}

static HOLDER: OnceLock<String> = OnceLock::new();
const HOLDER_MARK: char = '~';

/// The process name of a lease holder.
pub(crate) fn name_of(holder: &str) -> String {
    holder
        .rsplit_once(HOLDER_MARK)
        .map_or(holder, |(name, _)| name)
        .to_owned()
}

/// Names this process (`--instance`); before any group is joined.
pub fn set_process_name(name: &str) {
    let _ = PROCESS.set(name.to_owned());
}

/// The partitions marked in `owned` (a consumer's view of its share).
pub fn marked(owned: &[bool]) -> Vec<usize> {
    (0..owned.len()).filter(|&p| owned[p]).collect()
}

/// What the coordinator tells a group's consumer.
#[derive(Debug)]
pub enum Change {
    /// Now owned: consume them from the group's committed offsets.
    Gained(Vec<usize>),
    /// Hand them back: stop taking their events, finish (or give up) what
    /// is in flight, commit them, then answer on `done`.
    Give {
        partitions: Vec<usize>,
        done: oneshot::Sender<()>,
    },
    /// No longer owned (the lease lapsed): stop at once, commit nothing.
    Lost(Vec<usize>),
}

/// This process's membership of one group.
pub struct Membership {
    /// The partitions owned now.
    owned: Arc<Mutex<BTreeSet<usize>>>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Who owns what in a group, as `GET …/groups/{g}` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ownership {
    /// Each live member process and the partitions it owns.
    pub processes: BTreeMap<String, Vec<usize>>,
    /// This process's name.
    pub this_process: String,
    /// The partitions this process owns (when it serves the group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owned_here: Option<Vec<usize>>,
}

struct Coordinator {
    broker: Arc<Broker>,
    topic: String,
    group: String,
    partitions: usize,
    session: Duration,
    me: String,
    owned: Arc<Mutex<BTreeSet<usize>>>,
    changes: mpsc::UnboundedSender<Change>,
    /// When every owner lease was last renewed.
    renewed: Instant,
}

impl Membership {
    /// Joins the group and takes a first share before returning (on a
    /// group no other process serves: every partition), then keeps the
    /// share fair in the background. Changes arrive on the receiver; the
    /// first share is also sent there, as `Gained`.
    pub async fn join(
        broker: Arc<Broker>,
        topic: &str,
        group: &str,
        session: Duration,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Change>), BrokerError> {
        let partitions = broker.partitions(topic)?;
        let (changes, receiver) = mpsc::unbounded_channel();
        let owned = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = CancellationToken::new();
        // Kafka has group membership of its own: its coordinator assigns.
        #[cfg(feature = "kafka")]
        if let Broker::Kafka(kafka) = &*broker {
            let task = kafka
                .join_group(
                    topic,
                    group,
                    session,
                    Arc::clone(&owned),
                    changes,
                    stop.clone(),
                )
                .await?;
            return Ok((
                Self {
                    owned,
                    stop,
                    task: Some(task),
                },
                receiver,
            ));
        }
        let mut coordinator = Coordinator {
            broker,
            topic: topic.to_owned(),
            group: group.to_owned(),
            partitions,
            session,
            me: holder().to_owned(),
            owned: Arc::clone(&owned),
            changes,
            renewed: Instant::now(),
        };
        coordinator.step().await?;
        let task = tokio::spawn(coordinator.run(stop.clone()));
        Ok((
            Self {
                owned,
                stop,
                task: Some(task),
            },
            receiver,
        ))
    }

    /// The partitions this process owns now.
    pub fn owned(&self) -> Vec<usize> {
        self.owned
            .lock()
            .expect("ownership lock poisoned")
            .iter()
            .copied()
            .collect()
    }

    /// Leaves the group: releases every owner lease and the member lease,
    /// so the others take the partitions at once. The caller has committed
    /// what it finished.
    pub async fn leave(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Who owns which partition of the group, and who is a member. `this`:
/// the partitions this process owns, if it serves the group, for a broker
/// that cannot tell about the others (a Kafka-protocol broker without
/// `DescribeGroups`, such as tansu): then only this process is listed.
pub async fn ownership(
    broker: &Broker,
    topic: &str,
    group: &str,
    this: Option<Vec<usize>>,
) -> Result<Ownership, BrokerError> {
    #[cfg(feature = "kafka")]
    if let Broker::Kafka(kafka) = broker {
        let processes = match (kafka.ownership(topic, group).await, &this) {
            (Ok(processes), _) => processes,
            (Err(_), Some(owned)) => BTreeMap::from([(process_name().to_owned(), owned.clone())]),
            (Err(err), None) => return Err(err),
        };
        return Ok(Ownership {
            processes,
            this_process: process_name().to_owned(),
            owned_here: this,
        });
    }
    let mut processes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (member, _) in broker.leases(&members_scope(topic, group)).await? {
        processes.entry(name_of(&member)).or_default();
    }
    for (item, holder) in broker.leases(&owners_scope(topic, group)).await? {
        if let Ok(partition) = item.parse() {
            processes
                .entry(name_of(&holder))
                .or_default()
                .push(partition);
        }
    }
    for owned in processes.values_mut() {
        owned.sort_unstable();
    }
    Ok(Ownership {
        processes,
        this_process: process_name().to_owned(),
        owned_here: this,
    })
}

fn members_scope(topic: &str, group: &str) -> String {
    format!("{topic}/{group}/members")
}

fn owners_scope(topic: &str, group: &str) -> String {
    format!("{topic}/{group}/owners")
}

impl Coordinator {
    /// How often to renew and look at the group: a third of the session,
    /// and at least every second, so that a partition another process
    /// handed back is taken up within about a second.
    fn tick(&self) -> Duration {
        (self.session / 3).min(MAX_TICK)
    }

    fn owned(&self) -> BTreeSet<usize> {
        self.owned.lock().expect("ownership lock poisoned").clone()
    }

    async fn run(mut self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.tick()) => {}
            }
            if let Err(err) = self.step().await {
                warn!(topic = %self.topic, group = %self.group, error = %err.detail(), "group membership: the broker failed; trying again");
                self.lose_if_lapsed();
            }
        }
        self.leave().await;
    }

    /// One round: renew, look at the members, take or hand back partitions.
    async fn step(&mut self) -> Result<(), BrokerError> {
        let (members_scope, owners_scope) = (
            members_scope(&self.topic, &self.group),
            owners_scope(&self.topic, &self.group),
        );
        self.broker
            .lease(&members_scope, &self.me, &self.me, self.session)
            .await?;
        self.renew().await?;
        let mut members: Vec<String> = self
            .broker
            .leases(&members_scope)
            .await?
            .into_iter()
            .map(|(member, _)| member)
            .collect();
        if !members.contains(&self.me) {
            members.push(self.me.clone());
            members.sort();
        }
        let rank = members.iter().position(|m| *m == self.me).expect("listed");
        let n = members.len();
        let quota = self.partitions / n + usize::from(rank < self.partitions % n);
        let owned = self.owned();
        if owned.len() > quota {
            let extra: Vec<usize> = owned
                .iter()
                .rev()
                .take(owned.len() - quota)
                .copied()
                .collect();
            self.give(extra).await;
            return Ok(());
        }
        if owned.len() < quota {
            let taken: BTreeSet<usize> = self
                .broker
                .leases(&owners_scope)
                .await?
                .into_iter()
                .filter_map(|(item, _)| item.parse().ok())
                .collect();
            // This member's own stripe first, so that members starting
            // together rarely reach for the same partition.
            let mut free: Vec<usize> = (0..self.partitions)
                .filter(|p| !taken.contains(p) && !owned.contains(p))
                .collect();
            free.sort_by_key(|p| (p % n != rank % n, *p));
            let mut gained = Vec::new();
            for partition in free.into_iter().take(quota - owned.len()) {
                if self
                    .broker
                    .lease(
                        &owners_scope,
                        &partition.to_string(),
                        &self.me,
                        self.session,
                    )
                    .await?
                {
                    gained.push(partition);
                }
            }
            if !gained.is_empty() {
                info!(topic = %self.topic, group = %self.group, partitions = ?gained, members = n, "group partitions taken");
                self.owned
                    .lock()
                    .expect("ownership lock poisoned")
                    .extend(gained.iter().copied());
                let _ = self.changes.send(Change::Gained(gained));
            }
        }
        Ok(())
    }

    /// Renews every owner lease; one another process holds now is lost.
    async fn renew(&mut self) -> Result<(), BrokerError> {
        let scope = owners_scope(&self.topic, &self.group);
        let mut lost = Vec::new();
        for partition in self.owned() {
            if !self
                .broker
                .lease(&scope, &partition.to_string(), &self.me, self.session)
                .await?
            {
                lost.push(partition);
            }
        }
        self.renewed = Instant::now();
        if !lost.is_empty() {
            self.lose(lost);
        }
        Ok(())
    }

    /// When the leases may have lapsed unrenewed, the partitions count as
    /// another process's already.
    fn lose_if_lapsed(&mut self) {
        if self.renewed.elapsed() + self.tick() >= self.session {
            let all: Vec<usize> = self.owned().into_iter().collect();
            if !all.is_empty() {
                self.lose(all);
            }
        }
    }

    fn lose(&mut self, lost: Vec<usize>) {
        warn!(topic = %self.topic, group = %self.group, partitions = ?lost, "group partitions lost: their leases lapsed");
        {
            let mut owned = self.owned.lock().expect("ownership lock poisoned");
            for partition in &lost {
                owned.remove(partition);
            }
        }
        let _ = self.changes.send(Change::Lost(lost));
    }

    /// Asks the consumer to hand `partitions` back, renewing their leases
    /// while it does, then releases them.
    async fn give(&mut self, partitions: Vec<usize>) {
        info!(topic = %self.topic, group = %self.group, partitions = ?partitions, "handing group partitions back");
        {
            let mut owned = self.owned.lock().expect("ownership lock poisoned");
            for partition in &partitions {
                owned.remove(partition);
            }
        }
        let (done, mut answered) = oneshot::channel();
        let sent = self.changes.send(Change::Give {
            partitions: partitions.clone(),
            done,
        });
        let scope = owners_scope(&self.topic, &self.group);
        if sent.is_ok() {
            let give_up = Instant::now() + GIVE_TIMEOUT;
            loop {
                tokio::select! {
                    _ = &mut answered => break,
                    _ = tokio::time::sleep_until(give_up) => {
                        warn!(topic = %self.topic, group = %self.group, "handing partitions back took too long; releasing them anyway");
                        break;
                    }
                    _ = tokio::time::sleep(self.tick()) => {
                        // Keep everything held meanwhile: the member, the
                        // partitions kept, the ones being handed back.
                        let members = members_scope(&self.topic, &self.group);
                        let _ = self.broker.lease(&members, &self.me, &self.me, self.session).await;
                        if let Err(err) = self.renew().await {
                            warn!(topic = %self.topic, group = %self.group, error = %err.detail(), "group membership: the broker failed; trying again");
                            self.lose_if_lapsed();
                        }
                        for partition in &partitions {
                            let _ = self.broker.lease(&scope, &partition.to_string(), &self.me, self.session).await;
                        }
                    }
                }
            }
        }
        for partition in partitions {
            if let Err(err) = self
                .broker
                .release(&scope, &partition.to_string(), &self.me)
                .await
            {
                warn!(topic = %self.topic, group = %self.group, partition, error = %err.detail(), "cannot release a partition; it comes free after the session timeout");
            }
        }
    }

    /// Releases everything this process holds in the group.
    async fn leave(&mut self) {
        let scope = owners_scope(&self.topic, &self.group);
        for partition in self.owned() {
            let _ = self
                .broker
                .release(&scope, &partition.to_string(), &self.me)
                .await;
        }
        self.owned.lock().expect("ownership lock poisoned").clear();
        let _ = self
            .broker
            .release(&members_scope(&self.topic, &self.group), &self.me, &self.me)
            .await;
        info!(topic = %self.topic, group = %self.group, "left the group");
    }
}
