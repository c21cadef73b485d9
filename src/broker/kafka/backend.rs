//! Kafka backend (rdkafka): a Kafka topic per Switchyard topic, created with
//! its partitions when missing. Events are written in the CloudEvents Kafka
//! binding's binary mode: `ce_*` headers, `content-type` for
//! `datacontenttype`, the data as the value and the partition key as the
//! key, so any Kafka consumer with a CloudEvents SDK reads them. Offsets are
//! Kafka's own; group cursors are committed offsets of a consumer group.
//!
//! The producer is idempotent with `acks=all`: a 2xx means every in-sync
//! replica has the event. Consumers are `BaseConsumer`s driven on blocking
//! threads (dropping a `StreamConsumer` can hang, rust-rdkafka issue 509).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Map, Value};

use super::KafkaConfig;
use crate::broker::identities::SharedIndex;
use crate::broker::{
    Appended, Backend, BrokerError, ReadBatch, Record, Result, Retained, StoredEvent, check_cursor,
    merge,
};
use crate::cursor::{Cursor, GroupCursor, Place};
use crate::topic::{Topic, Topics};

/// How long a request may take before the broker counts as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message the producer sends and topics accept: above the largest
/// event Switchyard takes (`max_event_bytes` is at most 64 MiB).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024 + 64 * 1024;
/// How long a read polls for messages it knows are there.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The Kafka topic that lists the groups with committed offsets, as
/// `groups` answers them (Kafka's ListGroups would, but tansu does not
/// answer it): a record per group that commits (key `<topic>\n<group>`,
/// value `1`) or is deleted (empty value), read whole. Not a Switchyard
/// topic name (those have no `_`).
const GROUPS_TOPIC: &str = "_switchyard_groups";

pub struct KafkaBroker {
    config: KafkaConfig,
    producer: FutureProducer,
    /// Creates topics, also ones added at run time.
    admin: AdminClient<DefaultClientContext>,
    /// One reading consumer per topic; reads take turns on it.
    readers: std::sync::RwLock<HashMap<String, Arc<Mutex<BaseConsumer>>>>,
    /// Asks for watermarks (thread-safe, never assigned), so that finding
    /// the ends of a topic does not wait for a read in progress.
    watcher: Arc<BaseConsumer>,
    /// Committing consumers per (topic, group).
    groups: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    /// Topics by name; one may be added at run time.
    topics: std::sync::RwLock<HashMap<String, Arc<Topic>>>,
    leases: crate::broker::local_leases::LocalLeases,
    /// Kafka appends unconditionally: the dedupe window is kept here.
    dedupe: SharedIndex,
    /// Groups this process has listed on `GROUPS_TOPIC` (`<topic>\n<group>`).
    registered: Mutex<HashSet<String>>,
}

pub(super) fn unavailable(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BrokerError {
    BrokerError::unavailable_from("the Kafka request failed", err)
}

impl KafkaBroker {
    /// Settings every client shares; `role` adds the producer's or a
    /// consumer's. The user's options go last, so they win.
    fn create<T: rdkafka::config::FromClientConfig>(
        config: &KafkaConfig,
        role: &[(&str, String)],
    ) -> Result<T> {
        Self::client_config(config, role)
            .create()
            .map_err(unavailable)
    }

    /// The client settings for `role`: ours, then the user's
    /// `--kafka-option`s over them.
    pub(super) fn client_config(config: &KafkaConfig, role: &[(&str, String)]) -> ClientConfig {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("socket.timeout.ms", "5000")
            .set("socket.connection.setup.timeout.ms", "5000")
            // Back within a second of the broker (librdkafka waits up to
            // 10 s between reconnects by default).
            .set("reconnect.backoff.max.ms", "1000");
        for (key, value) in role {
            client.set(*key, value);
        }
        for (key, value) in &config.options {
            client.set(key, value);
        }
        client
    }

    pub(super) fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// The consumer that asks the cluster about metadata (never assigned).
    pub(super) fn watcher(&self) -> Arc<BaseConsumer> {
        Arc::clone(&self.watcher)
    }

    fn consumer(config: &KafkaConfig, group: &str) -> Result<BaseConsumer> {
        Self::create(
            config,
            &[
                ("group.id", group.to_owned()),
                ("enable.auto.commit", "false".into()),
                ("enable.auto.offset.store", "false".into()),
                ("enable.partition.eof", "false".into()),
                // Reads ask for messages they know exist: do not linger.
                ("fetch.wait.max.ms", "10".into()),
                ("fetch.error.backoff.ms", "10".into()),
                // Room for the largest event in one fetch.
                (
                    "fetch.max.bytes",
                    (MAX_MESSAGE_BYTES + (1 << 20)).to_string(),
                ),
                (
                    "max.partition.fetch.bytes",
                    (MAX_MESSAGE_BYTES + (1 << 20)).to_string(),
                ),
                (
                    "receive.message.max.bytes",
                    (MAX_MESSAGE_BYTES + (2 << 20)).to_string(),
                ),
            ],
        )
    }

    /// Creates a Kafka topic; one that exists is kept as it is.
    async fn create_topic(&self, wanted: &NewTopic<'_>) -> Result<()> {
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        for result in self
            .admin
            .create_topics([wanted], &options)
            .await
            .map_err(unavailable)?
        {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(unavailable(format!("creating topic {topic}: {code}")));
                }
            }
        }
        Ok(())
    }

    fn topic(&self, topic: &str) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .expect("topics lock poisoned")
            .get(topic)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))
    }

    /// (low, high) watermarks per partition.
    async fn watermarks(&self, topic: &str) -> Result<Vec<(u64, u64)>> {
        let partitions = self.topic(topic)?.partitions;
        let watcher = Arc::clone(&self.watcher);
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            (0..partitions)
                .map(|p| {
                    watcher
                        .fetch_watermarks(&topic, p as i32, REQUEST_TIMEOUT)
                        .map(|(low, high)| (low.max(0) as u64, high.max(0) as u64))
                        .map_err(unavailable)
                })
                .collect()
        })
        .await
        .map_err(unavailable)?
    }

    /// Reads exactly the `counts` messages known to follow `from`.
    async fn fetch(
        &self,
        topic: &str,
        from: &Cursor,
        counts: Vec<u64>,
        max: usize,
    ) -> Result<ReadBatch> {
        let reader = Arc::clone(
            self.readers
                .read()
                .expect("readers lock poisoned")
                .get(topic)
                .expect("a reader per topic"),
        );
        let topic_name = topic.to_owned();
        let from_offsets = from.offsets().to_vec();
        let events = tokio::task::spawn_blocking(move || -> Result<Vec<StoredEvent>> {
            let reader = reader.lock().expect("reader lock poisoned");
            let mut assignment = TopicPartitionList::new();
            for (partition, (&next, &count)) in from_offsets.iter().zip(&counts).enumerate() {
                if count > 0 {
                    assignment
                        .add_partition_offset(
                            &topic_name,
                            partition as i32,
                            Offset::Offset(next as i64),
                        )
                        .map_err(unavailable)?;
                }
            }
            reader.assign(&assignment).map_err(unavailable)?;
            let mut wanted: u64 = counts.iter().sum();
            let mut events = Vec::new();
            let mut last_error = None;
            let deadline = std::time::Instant::now() + FETCH_TIMEOUT;
            while wanted > 0 && std::time::Instant::now() < deadline {
                let Some(message) = reader.poll(Duration::from_millis(100)) else {
                    continue;
                };
                // Errors here are librdkafka's reports of connection trouble
                // (also from an outage already over): it retries by itself.
                let message = match message {
                    Ok(message) => message,
                    Err(err) => {
                        last_error = Some(err);
                        continue;
                    }
                };
                let partition = message.partition() as usize;
                let offset = message.offset() as u64;
                let end = from_offsets[partition] + counts[partition];
                if offset < from_offsets[partition] || offset >= end {
                    continue;
                }
                events.push(StoredEvent {
                    partition,
                    offset,
                    timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
                    payload: from_binary(&message)?,
                });
                wanted -= 1;
            }
            reader.unassign().map_err(unavailable)?;
            if events.is_empty() {
                // They exist (the watermarks say so) but did not come: that
                // is an outage, not the end of the topic.
                return Err(unavailable(match last_error {
                    Some(err) => format!("no message arrived within {FETCH_TIMEOUT:?}: {err}"),
                    None => format!("no message arrived within {FETCH_TIMEOUT:?}"),
                }));
            }
            Ok(events)
        })
        .await
        .map_err(unavailable)??;
        Ok(merge(from, events, max))
    }

    /// Notes on `GROUPS_TOPIC` that the group exists (once per process) or
    /// was deleted.
    async fn list_group(&self, topic: &str, group: &str, exists: bool) -> Result<()> {
        let key = format!("{topic}\n{group}");
        let known = self
            .registered
            .lock()
            .expect("registered lock poisoned")
            .contains(&key);
        if known && exists {
            return Ok(());
        }
        let value: &[u8] = if exists { b"1" } else { b"" };
        let record = FutureRecord::<String, [u8]>::to(GROUPS_TOPIC)
            .partition(0)
            .key(&key)
            .payload(value);
        self.producer
            .send(record, REQUEST_TIMEOUT)
            .await
            .map_err(|(err, _)| unavailable(err))?;
        let mut registered = self.registered.lock().expect("registered lock poisoned");
        if exists {
            registered.insert(key);
        } else {
            registered.remove(&key);
        }
        Ok(())
    }

    /// Every `<topic>\n<group>` that `GROUPS_TOPIC` lists as existing.
    async fn listed_groups(&self) -> Result<Vec<String>> {
        let reader: BaseConsumer = Self::consumer(&self.config, "switchyard-groups-reader")?;
        tokio::task::spawn_blocking(move || {
            let (low, high) = reader
                .fetch_watermarks(GROUPS_TOPIC, 0, REQUEST_TIMEOUT)
                .map_err(unavailable)?;
            let mut listed = BTreeMap::new();
            if high > low {
                let mut assignment = TopicPartitionList::new();
                assignment
                    .add_partition_offset(GROUPS_TOPIC, 0, Offset::Offset(low))
                    .map_err(unavailable)?;
                reader.assign(&assignment).map_err(unavailable)?;
                let deadline = std::time::Instant::now() + FETCH_TIMEOUT;
                let mut next = low;
                while next < high {
                    if std::time::Instant::now() >= deadline {
                        return Err(unavailable(format!(
                            "{GROUPS_TOPIC} did not arrive within {FETCH_TIMEOUT:?}"
                        )));
                    }
                    let Some(Ok(message)) = reader.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    next = message.offset() + 1;
                    if let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) {
                        let exists = message.payload().is_some_and(|v| !v.is_empty());
                        listed.insert(key.to_owned(), exists);
                    }
                }
            }
            Ok(listed
                .into_iter()
                .filter_map(|(key, exists)| exists.then_some(key))
                .collect())
        })
        .await
        .map_err(unavailable)?
    }

    fn group(&self, topic: &str, group: &str) -> Result<Arc<BaseConsumer>> {
        let key = format!("{topic}\n{group}");
        let mut groups = self.groups.lock().expect("groups lock poisoned");
        if let Some(consumer) = groups.get(&key) {
            return Ok(Arc::clone(consumer));
        }
        let consumer = Arc::new(Self::consumer(
            &self.config,
            &format!("switchyard.{topic}.{group}"),
        )?);
        groups.insert(key, Arc::clone(&consumer));
        Ok(consumer)
    }
}

impl Backend for KafkaBroker {
    type Config = KafkaConfig;
    const KIND: &'static str = "kafka";
    const LOCAL_POSITIONS: bool = false;
    const DENSE_OFFSETS: bool = true;

    async fn open(config: KafkaConfig, topics: &Topics) -> Result<Self> {
        let producer: FutureProducer = Self::create(
            &config,
            &[
                ("enable.idempotence", "true".into()),
                ("message.max.bytes", MAX_MESSAGE_BYTES.to_string()),
                ("acks", "all".into()),
                ("message.timeout.ms", "10000".into()),
                ("linger.ms", "1".into()),
            ],
        )?;
        let admin: AdminClient<DefaultClientContext> = Self::create(&config, &[])?;
        let broker = Self {
            producer,
            admin,
            readers: Default::default(),
            watcher: Arc::new(Self::consumer(&config, "switchyard-watcher")?),
            groups: Mutex::new(HashMap::new()),
            leases: Default::default(),
            dedupe: SharedIndex::new(topics),
            registered: Mutex::new(HashSet::new()),
            topics: Default::default(),
            config,
        };
        // Where groups are listed (tansu answers no ListGroups): one
        // partition, kept whole (a group's record may be years old).
        let listing = NewTopic::new(
            GROUPS_TOPIC,
            1,
            TopicReplication::Fixed(broker.config.replication_factor),
        )
        .set("retention.ms", "-1")
        .set("retention.bytes", "-1");
        broker.create_topic(&listing).await?;
        for topic in topics.iter() {
            broker.add_topic(&topic).await?;
        }
        Ok(broker)
    }

    /// Creates the Kafka topic (one that exists is kept as it is) and its
    /// reading consumer.
    async fn add_topic(&self, topic: &Arc<Topic>) -> Result<()> {
        if self.topic(&topic.name).is_ok() {
            return Ok(());
        }
        let mut settings = vec![
            ("max.message.bytes", MAX_MESSAGE_BYTES.to_string()),
            // Kafka's default, stated: retention deletes old records.
            ("cleanup.policy", "delete".to_owned()),
        ];
        if let Some(age) = topic.retention.max_age {
            settings.push(("retention.ms", age.as_millis().to_string()));
        }
        if let Some(bytes) = topic.retention.max_bytes {
            settings.push(("retention.bytes", bytes.to_string()));
        }
        settings.push(("segment.bytes", topic.segment_bytes.to_string()));
        let replication = TopicReplication::Fixed(self.config.replication_factor);
        let wanted = settings.iter().fold(
            NewTopic::new(&topic.name, topic.partitions as i32, replication),
            |wanted, (key, value)| wanted.set(key, value),
        );
        self.create_topic(&wanted).await?;
        let reader = Self::consumer(&self.config, &format!("switchyard-reader-{}", topic.name))?;
        self.readers
            .write()
            .expect("readers lock poisoned")
            .entry(topic.name.clone())
            .or_insert_with(|| Arc::new(Mutex::new(reader)));
        self.dedupe.add(topic);
        self.topics
            .write()
            .expect("topics lock poisoned")
            .entry(topic.name.clone())
            .or_insert_with(|| Arc::clone(topic));
        Ok(())
    }

    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Appended>> {
        self.topic(topic)?;
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            // Binary mode splits the event into headers and value: the one
            // parse a backend needs (the key travels with the record).
            let event: Value = serde_json::from_slice(&record.payload).map_err(|e| {
                BrokerError::Internal(format!("an event to append is not JSON: {e}"))
            })?;
            let (headers, value) = to_binary(&event);
            let mut message = FutureRecord::<String, Vec<u8>>::to(topic)
                .partition(record.partition as i32)
                .headers(headers);
            if let Some(key) = &record.key {
                message = message.key(key);
            }
            if let Some(value) = &value {
                message = message.payload(value);
            }
            deliveries.push(
                self.producer
                    .send_result(message)
                    .map_err(|(err, _)| unavailable(err))?,
            );
        }
        let mut appended = Vec::with_capacity(records.len());
        for delivery in deliveries {
            let delivered = delivery
                .await
                .map_err(|_| unavailable("the producer stopped"))?
                .map_err(|(err, _)| unavailable(err))?;
            appended.push(Appended {
                duplicate: false,
                partition: delivered.partition as usize,
                offset: delivered.offset as u64,
            });
        }
        Ok(appended)
    }

    fn partitions(&self, topic: &str) -> Result<usize> {
        Ok(self.topic(topic)?.partitions)
    }

    async fn retained(&self, topic: &str) -> Result<Vec<Retained>> {
        let marks = self.watermarks(topic).await?;
        Ok(marks
            .iter()
            .map(|&(low, high)| Retained {
                lost_below: low,
                oldest: low,
                end: high,
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
        self.topic(topic)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let retained = self.retained(topic).await?;
            check_cursor(from, &retained)?;
            let available: Vec<u64> = retained
                .iter()
                .zip(from.offsets())
                .enumerate()
                .map(|(p, (r, &next))| {
                    if only.is_none_or(|only| only[p]) {
                        (r.end - next).min(max as u64)
                    } else {
                        0
                    }
                })
                .collect();
            if available.iter().any(|&n| n > 0) {
                return self.fetch(topic, from, available, max).await;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(ReadBatch {
                    events: Vec::new(),
                    next: from.clone(),
                });
            }
            // Kafka has no cheap "wake me on append": look again shortly.
            tokio::time::sleep(Duration::from_millis(20).min(wait)).await;
        }
    }

    async fn commit(&self, topic: &str, group: &str, places: &[(usize, Place)]) -> Result<()> {
        self.topic(topic)?;
        // Listed first: a group with committed offsets is always listed.
        self.list_group(topic, group, true).await?;
        let consumer = self.group(topic, group)?;
        let offsets = {
            let mut list = TopicPartitionList::new();
            for (partition, place) in places {
                let mut entry = list.add_partition(topic, *partition as i32);
                entry
                    .set_offset(Offset::Offset(place.next as i64))
                    .map_err(unavailable)?;
                // What is settled above the offset, and the delivery counts,
                // ride as the commit's metadata.
                entry.set_metadata(place.extra_text());
            }
            list
        };
        tokio::task::spawn_blocking(move || {
            consumer
                .commit(&offsets, CommitMode::Sync)
                .map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    async fn committed(&self, topic: &str, group: &str) -> Result<Option<GroupCursor>> {
        let partitions = self.topic(topic)?.partitions;
        let consumer = self.group(topic, group)?;
        let mut wanted = TopicPartitionList::new();
        for partition in 0..partitions {
            wanted.add_partition(topic, partition as i32);
        }
        let topic = topic.to_owned();
        let committed = tokio::task::spawn_blocking(move || {
            consumer.committed_offsets(wanted, REQUEST_TIMEOUT)
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        let mut places = Vec::with_capacity(partitions);
        for partition in 0..partitions {
            let Some(entry) = committed.find_partition(&topic, partition as i32) else {
                return Ok(None);
            };
            match entry.offset() {
                // Metadata that is not ours (another client committed)
                // settles nothing above the offset.
                Offset::Offset(offset) => places.push(
                    Place::with_extra_text(offset as u64, entry.metadata())
                        .unwrap_or_else(|| Place::at(offset as u64)),
                ),
                // Never committed.
                _ => return Ok(None),
            }
        }
        Ok(Some(GroupCursor::new(places)))
    }

    fn shared_index(&self) -> Option<&SharedIndex> {
        Some(&self.dedupe)
    }

    async fn groups(&self, topic: &str) -> Result<Vec<String>> {
        self.topic(topic)?;
        let prefix = format!("{topic}\n");
        let listed: Vec<String> = self
            .listed_groups()
            .await?
            .into_iter()
            .filter_map(|key| key.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        // Listed, then deleted by another process, or never committed.
        let mut names = Vec::new();
        for group in listed {
            if self.committed(topic, &group).await?.is_some() {
                names.push(group);
            }
        }
        Ok(names)
    }

    /// Kafka's DeleteGroups: the group id and its committed offsets go.
    async fn delete_group(&self, topic: &str, group: &str) -> Result<bool> {
        self.topic(topic)?;
        if self.committed(topic, group).await?.is_none() {
            return Ok(false);
        }
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let id = format!("switchyard.{topic}.{group}");
        for result in self
            .admin
            .delete_groups(&[&id], &options)
            .await
            .map_err(unavailable)?
        {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
                Err((group, code)) => {
                    return Err(unavailable(format!("deleting group {group}: {code}")));
                }
            }
        }
        self.list_group(topic, group, false).await?;
        Ok(true)
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

    /// Ready when both the producer (writes) and the watcher (the ends of
    /// topics, which every read asks for) reach the cluster.
    async fn health(&self) -> Result<()> {
        let producer = self.producer.clone();
        let watcher = Arc::clone(&self.watcher);
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, REQUEST_TIMEOUT)
                .map_err(unavailable)?;
            watcher
                .fetch_metadata(None, REQUEST_TIMEOUT)
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }
}

/// A structured CloudEvent as Kafka binary-mode headers and value.
fn to_binary(event: &Value) -> (OwnedHeaders, Option<Vec<u8>>) {
    let binary = crate::event::to_binary(event);
    let mut headers = OwnedHeaders::new();
    for (name, text) in &binary.attributes {
        headers = headers.insert(Header {
            key: &format!("ce_{name}"),
            value: Some(text.as_bytes()),
        });
    }
    if let Some(content_type) = &binary.content_type {
        headers = headers.insert(Header {
            key: "content-type",
            value: Some(content_type.as_bytes()),
        });
    }
    (headers, binary.data)
}

/// A Kafka binary-mode message back into the structured CloudEvent JSON.
fn from_binary<M: Message>(message: &M) -> Result<Bytes> {
    let mut event = Map::new();
    let mut content_type = None;
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            let Some(value) = header.value else {
                continue;
            };
            let text = String::from_utf8_lossy(value).into_owned();
            if let Some(name) = header.key.strip_prefix("ce_") {
                event.insert(name.to_owned(), Value::String(text));
            } else if header.key.eq_ignore_ascii_case("content-type") {
                content_type = Some(text);
            }
        }
    }
    if !event.contains_key("specversion") {
        return Err(BrokerError::Corrupt(format!(
            "message at offset {} is not a binary-mode CloudEvent",
            message.offset()
        )));
    }
    if let Some(value) = message.payload() {
        let data = match content_type.as_deref() {
            Some(ct) if !crate::event::is_json_media_type(ct) => match std::str::from_utf8(value) {
                Ok(text) if ct.starts_with("text/") => Value::String(text.to_owned()),
                _ => {
                    event.insert(
                        "data_base64".into(),
                        Value::String(base64::engine::general_purpose::STANDARD.encode(value)),
                    );
                    Value::Null
                }
            },
            _ => serde_json::from_slice(value).unwrap_or_else(|_| {
                event.insert(
                    "data_base64".into(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(value)),
                );
                Value::Null
            }),
        };
        if !data.is_null() {
            event.insert("data".into(), data);
        }
    }
    if let Some(content_type) = content_type {
        event.insert("datacontenttype".into(), Value::String(content_type));
    }
    Ok(Bytes::from(
        serde_json::to_vec(&Value::Object(event)).expect("JSON serializes"),
    ))
}
