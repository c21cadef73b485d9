//! NATS JetStream backend: one stream per topic partition
//! (`<PREFIX>_<topic>_<p>`, subject `<prefix>.<topic>.<p>`), file storage,
//! with the topic's retention as the stream's max age and max bytes. Group
//! cursors live in a stream that keeps the last message per subject
//! (`<prefix>.groups.<topic>.<group>`), as a key-value bucket would.
//!
//! Positions: a stream's sequences are dense from 1, so the offset of a
//! message is its sequence − 1 and a cursor keeps its "next offset per
//! partition" form. Retention removes a stream's head: a cursor below the
//! first sequence has lost events.
//!
//! Publishing awaits the JetStream ack and sets `Nats-Msg-Id` to a digest of
//! the event's source and id, so a retried publish within the stream's
//! duplicate window (the topic's `dedupe_window`) stores the event once; the
//! ack names the one stored first. A 2xx means JetStream stored it; its file store
//! syncs to disk on its own schedule (`sync_interval`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures::StreamExt;

use super::NatsConfig;
use crate::broker::identities::digest_hex;
use crate::broker::{
    Appended, Backend, BrokerError, ReadBatch, Record, Result, Retained, StoredEvent, check_cursor,
    merge,
};
use crate::cursor::{Cursor, GroupCursor, Place};
use crate::topic::Topics;

/// How long a request to the server may take before the broker counts as
/// unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages fetched concurrently while reading one partition.
const READ_CONCURRENCY: usize = 64;

struct TopicStreams {
    streams: Vec<stream::Stream>,
    subjects: Vec<String>,
    /// Whether appends carry `Nats-Msg-Id` (the topic's dedupe window).
    dedupe: bool,
}

pub struct NatsBroker {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    groups: stream::Stream,
    /// Lease tables, one message per scope (`<prefix>.leases.<hex scope>`).
    leases: stream::Stream,
    prefix: String,
    /// Topics by name; one may be added at run time.
    topics: std::sync::RwLock<HashMap<String, Arc<TopicStreams>>>,
}

fn unavailable(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BrokerError {
    BrokerError::unavailable_from("the NATS request failed", err)
}

impl NatsBroker {
    fn topic(&self, topic: &str) -> Result<Arc<TopicStreams>> {
        self.topics
            .read()
            .expect("topics lock poisoned")
            .get(topic)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))
    }

    /// (first offset still there, offset after the last) per partition.
    async fn bounds(&self, topic: &str) -> Result<Vec<(u64, u64)>> {
        let streams = self.topic(topic)?;
        let mut bounds = Vec::with_capacity(streams.streams.len());
        for stream in &streams.streams {
            let mut stream = stream.clone();
            let info = stream.info().await.map_err(unavailable)?;
            let state = &info.state;
            // An empty stream reports first = last + 1.
            let first = state.first_sequence.max(1) - 1;
            bounds.push((first.min(state.last_sequence), state.last_sequence));
        }
        Ok(bounds)
    }

    fn group_subject(&self, topic: &str, group: &str) -> String {
        format!("{}.groups.{topic}.{group}", self.prefix)
    }

    fn lease_subject(&self, scope: &str) -> String {
        format!("{}.leases.{}", self.prefix, hex::encode(scope))
    }

    /// The last message on `subject` of `stream` (one kept per subject):
    /// its sequence and payload.
    async fn last(&self, stream: &stream::Stream, subject: &str) -> Result<Option<(u64, Vec<u8>)>> {
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(message) => Ok(Some((message.sequence, message.payload.to_vec()))),
            Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(unavailable(err)),
        }
    }

    /// Compare and set on the last message of `subject`: `change` sees what
    /// is stored and answers what to store instead (`None`: nothing) and
    /// the result; if another process stored in between, once more.
    async fn update<R>(
        &self,
        stream: &stream::Stream,
        subject: &str,
        mut change: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, R),
    ) -> Result<R> {
        for _ in 0..CAS_ATTEMPTS {
            let stored = self.last(stream, subject).await?;
            let (replacement, result) = change(stored.as_ref().map(|(_, bytes)| bytes.as_slice()));
            let Some(replacement) = replacement else {
                return Ok(result);
            };
            let mut headers = async_nats::HeaderMap::new();
            let expected = stored.as_ref().map_or(0, |(sequence, _)| *sequence);
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                expected.to_string().as_str(),
            );
            let ack = self
                .jetstream
                .publish_with_headers(subject.to_owned(), headers, replacement.into())
                .await
                .map_err(unavailable)?
                .await;
            match ack {
                Ok(_) => return Ok(result),
                Err(err)
                    if err.kind()
                        == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence => {}
                Err(err) => return Err(unavailable(err)),
            }
        }
        Err(BrokerError::unavailable(format!(
            "{subject}: changed by others {CAS_ATTEMPTS} times in a row"
        )))
    }
}

/// Compare-and-set attempts before giving up (each lost to another writer).
const CAS_ATTEMPTS: usize = 20;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A lease scope's leases, one message: item → holder and expiry (by the
/// processes' wall clocks, which must agree to well within a lease).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct LeaseTable(std::collections::BTreeMap<String, Held>);

#[derive(serde::Serialize, serde::Deserialize)]
struct Held {
    holder: String,
    until_ms: i64,
}

impl LeaseTable {
    fn parse(stored: Option<&[u8]>) -> Self {
        stored
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or_default()
    }

    /// Without the lapsed leases.
    fn render(mut self, now: i64) -> Vec<u8> {
        self.0.retain(|_, held| held.until_ms > now);
        serde_json::to_vec(&self).expect("a lease table serialises")
    }
}

impl Backend for NatsBroker {
    type Config = NatsConfig;
    const KIND: &'static str = "nats";
    const LOCAL_POSITIONS: bool = false;
    const DENSE_OFFSETS: bool = true;

    async fn open(config: NatsConfig, topics: &Topics) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .connection_timeout(REQUEST_TIMEOUT)
            .retry_on_initial_connect()
            .connect(config.url.as_str())
            .await
            .map_err(unavailable)?;
        let jetstream = jetstream::new(client.clone());
        let groups = jetstream
            .get_or_create_stream(stream::Config {
                name: format!("{}_GROUPS", config.prefix.to_uppercase()),
                subjects: vec![format!("{}.groups.>", config.prefix)],
                storage: stream::StorageType::File,
                max_messages_per_subject: 1,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let leases = jetstream
            .get_or_create_stream(stream::Config {
                name: format!("{}_LEASES", config.prefix.to_uppercase()),
                subjects: vec![format!("{}.leases.>", config.prefix)],
                storage: stream::StorageType::File,
                max_messages_per_subject: 1,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let broker = Self {
            client,
            jetstream,
            groups,
            leases,
            prefix: config.prefix,
            topics: Default::default(),
        };
        for topic in topics.iter() {
            broker.add_topic(&topic).await?;
        }
        Ok(broker)
    }

    /// A stream per partition, created or brought up to the topic's
    /// settings (its retention and dedupe window may have changed).
    async fn add_topic(&self, topic: &Arc<crate::topic::Topic>) -> Result<()> {
        if self.topic(&topic.name).is_ok() {
            return Ok(());
        }
        let mut streams = Vec::new();
        let mut subjects = Vec::new();
        for partition in 0..topic.partitions {
            let subject = format!("{}.{}.{partition}", self.prefix, topic.name);
            let name = format!(
                "{}_{}_{partition}",
                self.prefix.to_uppercase(),
                topic.name.replace('.', "_")
            );
            let max_age = topic.retention.max_age.unwrap_or_default();
            // JetStream keeps a window no longer than the stream's age
            // limit (a duplicate of an event that aged out is new).
            let duplicate_window = match topic.dedupe_window {
                window if window.is_zero() => Duration::ZERO,
                window if max_age.is_zero() => window,
                window => window.min(max_age),
            };
            let stream_config = stream::Config {
                name: name.clone(),
                subjects: vec![subject.clone()],
                storage: stream::StorageType::File,
                max_age,
                max_bytes: topic.retention.max_bytes.map_or(-1, |b| b as i64),
                duplicate_window,
                ..Default::default()
            };
            self.jetstream
                .create_or_update_stream(stream_config)
                .await
                .map_err(unavailable)?;
            let stream = self.jetstream.get_stream(name).await.map_err(unavailable)?;
            streams.push(stream);
            subjects.push(subject);
        }
        let streams = Arc::new(TopicStreams {
            streams,
            subjects,
            dedupe: !topic.dedupe_window.is_zero(),
        });
        let mut topics = self.topics.write().expect("topics lock poisoned");
        topics.entry(topic.name.clone()).or_insert(streams);
        Ok(())
    }

    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Appended>> {
        let streams = self.topic(topic)?;
        // Publish all, then await the acks: one round trip for the batch.
        let mut pending = Vec::with_capacity(records.len());
        for record in &records {
            let mut headers = async_nats::HeaderMap::new();
            if streams.dedupe && !record.identity.is_empty() {
                headers.insert("Nats-Msg-Id", digest_hex(&record.identity).as_str());
            }
            let ack = self
                .jetstream
                .publish_with_headers(
                    streams.subjects[record.partition].clone(),
                    headers,
                    record.payload.clone(),
                )
                .await
                .map_err(unavailable)?;
            pending.push(ack);
        }
        let mut appended = Vec::with_capacity(records.len());
        for (record, ack) in records.iter().zip(pending) {
            let ack = ack.await.map_err(unavailable)?;
            // A duplicate's ack names the sequence of the event stored first.
            appended.push(Appended {
                partition: record.partition,
                offset: ack.sequence - 1,
                duplicate: ack.duplicate,
            });
        }
        Ok(appended)
    }

    fn partitions(&self, topic: &str) -> Result<usize> {
        Ok(self.topic(topic)?.streams.len())
    }

    async fn retained(&self, topic: &str) -> Result<Vec<Retained>> {
        let bounds = self.bounds(topic).await?;
        Ok(bounds
            .iter()
            .map(|&(first, end)| Retained {
                lost_below: first,
                oldest: first,
                end,
            })
            .collect())
    }

    async fn read(
        &self,
        topic: &str,
        from: &Cursor,
        only: Option<&[bool]>,
        max: usize,
        wait: Duration,
    ) -> Result<ReadBatch> {
        let streams = self.topic(topic)?;
        let reads = |partition: usize| only.is_none_or(|only| only[partition]);
        // Subscribe before looking, so an event published in between wakes us.
        let mut wakeup = if wait.is_zero() {
            None
        } else {
            let mut subscriptions = Vec::new();
            for (_, subject) in streams
                .subjects
                .iter()
                .enumerate()
                .filter(|(p, _)| reads(*p))
            {
                subscriptions.push(
                    self.client
                        .subscribe(subject.clone())
                        .await
                        .map_err(unavailable)?,
                );
            }
            Some(futures::stream::select_all(subscriptions))
        };
        let retained = self.retained(topic).await?;
        check_cursor(from, &retained)?;
        let nothing_new = retained
            .iter()
            .zip(from.offsets())
            .enumerate()
            .all(|(p, (r, &next))| next == r.end || !reads(p));
        if nothing_new && let Some(wakeup) = &mut wakeup {
            if tokio::time::timeout(wait, wakeup.next()).await.is_err() {
                return Ok(ReadBatch {
                    events: Vec::new(),
                    next: from.clone(),
                });
            }
            return Box::pin(self.read(topic, from, only, max, Duration::ZERO)).await;
        }
        let mut events = Vec::new();
        for (partition, range) in retained.iter().enumerate().filter(|(p, _)| reads(*p)) {
            let next = from.next(partition);
            let count = (range.end - next).min(max as u64);
            let stream = &streams.streams[partition];
            let fetched: Vec<_> = futures::stream::iter(next + 1..=next + count)
                .map(|sequence| async move { (sequence, stream.get_raw_message(sequence).await) })
                .buffered(READ_CONCURRENCY)
                .collect()
                .await;
            for (sequence, message) in fetched {
                match message {
                    Ok(message) => events.push(StoredEvent {
                        partition,
                        offset: sequence - 1,
                        timestamp_ms: (message.time.unix_timestamp_nanos() / 1_000_000) as i64,
                        payload: message.payload,
                    }),
                    // Removed by retention between the bounds and the get.
                    Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
                    Err(err) => return Err(unavailable(err)),
                }
            }
        }
        Ok(merge(from, events, max))
    }

    async fn commit(&self, topic: &str, group: &str, places: &[(usize, Place)]) -> Result<()> {
        let partitions = self.topic(topic)?.streams.len();
        let subject = self.group_subject(topic, group);
        self.update(&self.groups, &subject, |stored| {
            let mut cursor = stored
                .and_then(|bytes| {
                    GroupCursor::parse_for(&String::from_utf8_lossy(bytes), partitions).ok()
                })
                .unwrap_or_else(|| GroupCursor::from(&Cursor::start(partitions)));
            for (partition, place) in places {
                cursor.set(*partition, place.clone());
            }
            (Some(cursor.to_string().into_bytes()), ())
        })
        .await
    }

    async fn lease(&self, scope: &str, item: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let now = now_ms();
        self.update(&self.leases, &self.lease_subject(scope), |stored| {
            let mut table = LeaseTable::parse(stored);
            match table.0.get(item) {
                Some(held) if held.holder != holder && held.until_ms > now => (None, false),
                _ => {
                    table.0.insert(
                        item.to_owned(),
                        Held {
                            holder: holder.to_owned(),
                            until_ms: now + ttl.as_millis() as i64,
                        },
                    );
                    (Some(table.render(now)), true)
                }
            }
        })
        .await
    }

    async fn release(&self, scope: &str, item: &str, holder: &str) -> Result<()> {
        let now = now_ms();
        self.update(&self.leases, &self.lease_subject(scope), |stored| {
            let mut table = LeaseTable::parse(stored);
            if table.0.get(item).is_some_and(|held| held.holder == holder) {
                table.0.remove(item);
                (Some(table.render(now)), ())
            } else {
                (None, ())
            }
        })
        .await
    }

    async fn leases(&self, scope: &str) -> Result<Vec<(String, String)>> {
        let now = now_ms();
        let stored = self.last(&self.leases, &self.lease_subject(scope)).await?;
        let table = LeaseTable::parse(stored.as_ref().map(|(_, bytes)| bytes.as_slice()));
        Ok(table
            .0
            .into_iter()
            .filter(|(_, held)| held.until_ms > now)
            .map(|(item, held)| (item, held.holder))
            .collect())
    }

    async fn committed(&self, topic: &str, group: &str) -> Result<Option<GroupCursor>> {
        let partitions = self.topic(topic)?.streams.len();
        let message = match self
            .groups
            .get_last_raw_message_by_subject(&self.group_subject(topic, group))
            .await
        {
            Ok(message) => message,
            Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok(None);
            }
            Err(err) => return Err(unavailable(err)),
        };
        let text = String::from_utf8_lossy(&message.payload);
        GroupCursor::parse_for(&text, partitions)
            .map(Some)
            .map_err(|e| BrokerError::Corrupt(format!("group cursor: {e}")))
    }

    async fn groups(&self, topic: &str) -> Result<Vec<String>> {
        self.topic(topic)?;
        let root = format!("{}.groups.", self.prefix);
        let mut subjects = self
            .groups
            .info_with_subjects(format!("{root}{topic}.>"))
            .await
            .map_err(unavailable)?;
        let mut qualified = Vec::new();
        while let Some(entry) = subjects.next().await {
            let (subject, _) = entry.map_err(unavailable)?;
            if let Some(name) = subject.strip_prefix(&root) {
                qualified.push(name.to_owned());
            }
        }
        let known: Vec<String> = self
            .topics
            .read()
            .expect("topics lock poisoned")
            .keys()
            .cloned()
            .collect();
        Ok(groups_of(
            topic,
            known.iter().map(String::as_str),
            qualified,
        ))
    }

    async fn delete_group(&self, topic: &str, group: &str) -> Result<bool> {
        self.topic(topic)?;
        self.groups
            .purge()
            .filter(self.group_subject(topic, group))
            .await
            .map(|purged| purged.purged > 0)
            .map_err(unavailable)
    }

    async fn stored_bytes(&self, topic: &str) -> Result<Option<u64>> {
        let streams = self.topic(topic)?;
        let mut bytes = 0;
        for stream in &streams.streams {
            bytes += stream
                .clone()
                .info()
                .await
                .map_err(unavailable)?
                .state
                .bytes;
        }
        Ok(Some(bytes))
    }

    async fn health(&self) -> Result<()> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(unavailable("not connected"));
        }
        // A JetStream request proves the server stores again. (Account info
        // would do, but its reply does not parse from nats-server 2.9.)
        self.groups
            .clone()
            .info()
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

/// The groups of `topic` among `qualified` names `<topic>.<group>` (how
/// the groups stream's subjects name them). Topic and group names may both
/// hold dots, so a name belongs to the longest known topic it starts
/// with: `orders.eu.x` is group `x` of topic `orders.eu` when that topic
/// exists, else group `eu.x` of `orders`.
fn groups_of<'a>(
    topic: &str,
    known_topics: impl Iterator<Item = &'a str> + Clone,
    qualified: impl IntoIterator<Item = String>,
) -> Vec<String> {
    let prefix = format!("{topic}.");
    qualified
        .into_iter()
        .filter_map(|name| {
            let group = name.strip_prefix(&prefix)?;
            let longer = known_topics.clone().any(|other| {
                other.len() > topic.len()
                    && other.starts_with(&prefix)
                    && name.starts_with(&format!("{other}."))
            });
            (!longer && crate::broker::check_group_name(group).is_ok()).then(|| group.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::groups_of;

    #[test]
    fn a_qualified_group_name_belongs_to_the_longest_known_topic() {
        let known = ["orders", "orders.eu", "shop"];
        let qualified = || {
            [
                "orders.billing",
                "orders.eu.mail",
                "orders.eu",
                "shop.x",
                "orders..bad",
            ]
            .map(String::from)
        };
        let mut of_orders = groups_of("orders", known.iter().copied(), qualified());
        of_orders.sort();
        // `orders.eu` alone is group `eu` of `orders` (topic `orders.eu`
        // would need a group after it).
        assert_eq!(of_orders, ["billing", "eu"]);
        assert_eq!(
            groups_of("orders.eu", known.iter().copied(), qualified()),
            ["mail"]
        );
        assert_eq!(groups_of("shop", known.iter().copied(), qualified()), ["x"]);
    }
}
