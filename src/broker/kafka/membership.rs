//! Group membership on Kafka itself: each Switchyard process serving a
//! group is a member of the Kafka consumer group `<group>.members`
//! subscribed to the topic with cooperative-sticky assignment, so Kafka's
//! group coordinator decides which process owns which partition. The
//! member consumes nothing (its partitions stay paused): Switchyard reads
//! and commits (under `<group>`) as on every backend. A revoked partition
//! is handed back before the rebalance completes; one lost (the session
//! lapsed) is dropped at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::KafkaBroker;
use super::backend::unavailable;
use crate::broker::Result;
use crate::broker::membership::Change;

/// How long a consumer may take to hand partitions back.
const GIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long joining waits for the first assignment.
const FIRST_ASSIGNMENT: Duration = Duration::from_secs(15);

struct Member {
    topic: String,
    group: String,
    owned: Arc<Mutex<BTreeSet<usize>>>,
    changes: mpsc::UnboundedSender<Change>,
    /// Told once, at the first assignment.
    first: Mutex<Option<oneshot::Sender<()>>>,
    /// Leaving: revocations need no hand-back (the consumer is done).
    leaving: AtomicBool,
    runtime: tokio::runtime::Handle,
}

impl ClientContext for Member {}

impl Member {
    fn partitions(&self, list: &TopicPartitionList) -> Vec<usize> {
        list.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition() as usize)
            .collect()
    }
}

impl ConsumerContext for Member {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let partitions = self.partitions(list);
        {
            let mut owned = self.owned.lock().expect("ownership lock poisoned");
            for partition in &partitions {
                owned.remove(partition);
            }
        }
        if partitions.is_empty() || self.leaving.load(Ordering::Acquire) {
            return;
        }
        if consumer.assignment_lost() {
            warn!(topic = %self.topic, group = %self.group, partitions = ?partitions, "group partitions lost: the Kafka session lapsed");
            let _ = self.changes.send(Change::Lost(partitions));
            return;
        }
        info!(process = crate::broker::membership::process_name(), topic = %self.topic, group = %self.group, partitions = ?partitions, "handing group partitions back (Kafka rebalance)");
        let (done, answered) = oneshot::channel();
        if self.changes.send(Change::Give { partitions, done }).is_ok() {
            // This is the poll thread: the rebalance waits for the hand-back.
            let waited = self
                .runtime
                .block_on(async { tokio::time::timeout(GIVE_TIMEOUT, answered).await });
            if waited.is_err() {
                warn!(topic = %self.topic, group = %self.group, "handing partitions back took too long; releasing them anyway");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(list) = rebalance else {
            return;
        };
        // Nothing is read through this consumer.
        if list.count() > 0
            && let Err(err) = consumer.pause(list)
        {
            warn!(topic = %self.topic, group = %self.group, error = %err, "cannot pause the membership consumer's partitions");
        }
        let partitions = self.partitions(list);
        if !partitions.is_empty() {
            info!(process = crate::broker::membership::process_name(), topic = %self.topic, group = %self.group, partitions = ?partitions, "group partitions taken (Kafka rebalance)");
            self.owned
                .lock()
                .expect("ownership lock poisoned")
                .extend(partitions.iter().copied());
            let _ = self.changes.send(Change::Gained(partitions));
        }
        if let Some(first) = self.first.lock().expect("first lock poisoned").take() {
            let _ = first.send(());
        }
    }
}

impl KafkaBroker {
    /// Joins `<group>.members` on `topic`; the returned task polls the
    /// membership until `stop`, then leaves the Kafka group. Returns once
    /// the first assignment arrived (or after a while without one).
    pub async fn join_group(
        &self,
        topic: &str,
        group: &str,
        session: Duration,
        owned: Arc<Mutex<BTreeSet<usize>>>,
        changes: mpsc::UnboundedSender<Change>,
        stop: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let (first, assigned) = oneshot::channel();
        let member = Member {
            topic: topic.to_owned(),
            group: group.to_owned(),
            owned,
            changes,
            first: Mutex::new(Some(first)),
            leaving: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::current(),
        };
        let session_ms = session.as_millis().max(1) as u64;
        let consumer: BaseConsumer<Member> = Self::client_config(
            self.config(),
            &[
                ("group.id", format!("{group}.members")),
                // How the group's status names this process (unique, with
                // its name first: two processes given one name stay two).
                ("client.id", crate::broker::membership::holder().to_owned()),
                ("enable.auto.commit", "false".into()),
                ("enable.auto.offset.store", "false".into()),
                // Incremental: a rebalance moves only what must move.
                ("partition.assignment.strategy", "cooperative-sticky".into()),
                ("session.timeout.ms", session_ms.to_string()),
                // Rebalances reach a member with its heartbeat: at least
                // every second, so a partition handed back moves at once.
                (
                    "heartbeat.interval.ms",
                    (session_ms / 3).clamp(1, 1000).to_string(),
                ),
            ],
        )
        .create_with_context(member)
        .map_err(unavailable)?;
        consumer.subscribe(&[topic]).map_err(unavailable)?;
        let task = tokio::task::spawn_blocking(move || {
            while !stop.is_cancelled() {
                // Paused: polling serves the rebalances and heartbeats.
                if let Some(Err(err)) = consumer.poll(Duration::from_millis(100)) {
                    warn!(error = %err, "Kafka group membership");
                }
            }
            consumer.context().leaving.store(true, Ordering::Release);
            consumer.unsubscribe();
            let _ = consumer.poll(Duration::from_millis(100));
            consumer
                .context()
                .owned
                .lock()
                .expect("ownership lock poisoned")
                .clear();
            // Dropping the consumer closes it: Kafka hands its partitions
            // to the other members now.
        });
        let _ = tokio::time::timeout(FIRST_ASSIGNMENT, assigned).await;
        Ok(task)
    }
}

impl KafkaBroker {
    /// Each member of `<group>.members` (by the process name it gave as
    /// its client id) and the partitions of `topic` Kafka assigned it.
    pub async fn ownership(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<BTreeMap<String, Vec<usize>>> {
        let watcher = self.watcher();
        let (topic, group) = (topic.to_owned(), format!("{group}.members"));
        tokio::task::spawn_blocking(move || {
            let list = watcher
                .fetch_group_list(Some(&group), Duration::from_secs(5))
                .map_err(unavailable)?;
            let mut owned = BTreeMap::new();
            for info in list.groups().iter().filter(|g| g.name() == group) {
                for member in info.members() {
                    let partitions = member
                        .assignment()
                        .map(|bytes| assigned(bytes, &topic))
                        .unwrap_or_default();
                    owned
                        .entry(crate::broker::membership::name_of(member.client_id()))
                        .or_insert_with(Vec::new)
                        .extend(partitions);
                }
            }
            Ok(owned)
        })
        .await
        .map_err(unavailable)?
    }
}

/// The partitions of `topic` in a consumer-protocol assignment: version
/// (i16), then per topic its name (i16 length, bytes) and partitions (i32
/// count, i32 each), then user data. Anything malformed reads as none.
fn assigned(bytes: &[u8], topic: &str) -> Vec<usize> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if bytes.len() < n {
            return None;
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Some(head)
    }
    fn int(bytes: &mut &[u8], n: usize) -> Option<i64> {
        let raw = take(bytes, n)?;
        Some(match n {
            2 => i16::from_be_bytes([raw[0], raw[1]]) as i64,
            _ => i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as i64,
        })
    }
    let parse = || -> Option<Vec<usize>> {
        let mut bytes = bytes;
        int(&mut bytes, 2)?;
        let mut found = Vec::new();
        for _ in 0..int(&mut bytes, 4)?.max(0) {
            let length = int(&mut bytes, 2)?.max(0) as usize;
            let name = take(&mut bytes, length)?;
            for _ in 0..int(&mut bytes, 4)?.max(0) {
                let partition = int(&mut bytes, 4)?;
                if name == topic.as_bytes() {
                    found.push(partition as usize);
                }
            }
        }
        found.sort_unstable();
        Some(found)
    };
    parse().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_consumer_protocol_assignment() {
        let mut bytes = vec![0, 1, 0, 0, 0, 2];
        for (topic, partitions) in [("other", vec![0i32]), ("work", vec![3, 1])] {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for p in partitions {
                bytes.extend(p.to_be_bytes());
            }
        }
        bytes.extend([0, 0, 0, 0]);
        assert_eq!(super::assigned(&bytes, "work"), vec![1, 3]);
        assert_eq!(super::assigned(&bytes[..9], "work"), Vec::<usize>::new());
    }
}
