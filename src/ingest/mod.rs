//! The way into the bus: type check, schema validation, partitioning and a
//! durable append. Every producer path (HTTP publish, webhooks) ends here.

mod ends;
pub mod webhook;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;

use self::ends::KnownEnds;
use crate::broker::{Broker, BrokerError, Record};
use crate::event::{CloudEvent, now_rfc3339};
use crate::metrics::Metrics;
use crate::topic::{TopicError, Topics};

/// Where a published event is: its id and the cursor right after it.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub id: String,
    pub position: String,
    /// The topic had stored an event with this `source` and `id` within
    /// its dedupe window: nothing was appended; `position` is that one's.
    pub duplicate: bool,
}

/// What to do with an event type the topic does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undeclared {
    Refuse,
    /// Store it; there is no schema to check it against.
    Accept,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("event {index}: {source}")]
    Topic {
        index: usize,
        #[source]
        source: TopicError,
    },
    #[error(
        "event {index} is {size} bytes as JSON, over the limit of {limit} bytes (max_event_bytes)"
    )]
    TooLarge {
        index: usize,
        size: usize,
        limit: usize,
    },
    #[error("event {index}: {source}")]
    Invalid {
        index: usize,
        #[source]
        source: crate::event::EventError,
    },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

pub struct Ingest {
    topics: Topics,
    broker: Arc<Broker>,
    ends: KnownEnds,
    metrics: Arc<Metrics>,
    max_event_bytes: usize,
}

impl Ingest {
    pub fn new(
        topics: Topics,
        broker: Arc<Broker>,
        metrics: Arc<Metrics>,
        max_event_bytes: usize,
    ) -> Self {
        Self {
            topics,
            ends: KnownEnds::new(Arc::clone(&broker)),
            broker,
            metrics,
            max_event_bytes,
        }
    }

    /// Validates every event, then appends them all as one unit. Answers
    /// only after the events are durable; nothing is appended when any
    /// event is refused.
    pub async fn publish(
        &self,
        topic_name: &str,
        events: Vec<CloudEvent>,
    ) -> Result<Vec<Published>, IngestError> {
        self.publish_checked(topic_name, events, Undeclared::Refuse)
            .await
    }

    /// Like [`Ingest::publish`]; `undeclared` says whether event types the
    /// topic does not declare are refused or stored without a schema check.
    pub async fn publish_checked(
        &self,
        topic_name: &str,
        events: Vec<CloudEvent>,
        undeclared: Undeclared,
    ) -> Result<Vec<Published>, IngestError> {
        let topic = self
            .topics
            .get(topic_name)
            .ok_or_else(|| IngestError::UnknownTopic(topic_name.to_owned()))?;
        let started = Instant::now();
        let mut ids = Vec::with_capacity(events.len());
        let mut records = Vec::with_capacity(events.len());
        for (index, mut event) in events.into_iter().enumerate() {
            event
                .check_stored_form()
                .map_err(|source| IngestError::Invalid { index, source })?;
            let declared = topic.types.contains_key(&event.ty);
            if declared || undeclared == Undeclared::Refuse {
                topic
                    .validate(&event)
                    .map_err(|source| IngestError::Topic { index, source })?;
            }
            if event.time.is_none() {
                event.time = Some(now_rfc3339());
            }
            let json = event.to_json();
            let key = topic.key_of(&json);
            let identity = crate::broker::identities::identity(&event.source, &event.id);
            let partition = topic.partition_for(key.as_deref(), &identity);
            let payload = serde_json::to_vec(&json).expect("a JSON value always serializes");
            if payload.len() > self.max_event_bytes {
                return Err(IngestError::TooLarge {
                    index,
                    size: payload.len(),
                    limit: self.max_event_bytes,
                });
            }
            records.push(Record {
                partition,
                key,
                identity,
                payload: Bytes::from(payload),
            });
            ids.push(event.id);
        }

        // Positions name the other partitions as they were before this
        // append: resuming from one may repeat an event published
        // concurrently, but never skips one.
        let before = self.ends.before_append(topic_name).await?;
        let appended = self.broker.append(topic_name, records).await?;
        self.ends.appended(topic_name, &appended);
        let stored = appended.iter().filter(|at| !at.duplicate).count() as u64;
        self.metrics
            .published(topic_name, stored, started.elapsed().as_secs_f64());
        Ok(ids
            .into_iter()
            .zip(appended)
            .map(|(id, at)| {
                let mut position = before.clone();
                position.advance(at.partition, at.offset);
                Published {
                    id,
                    position: position.to_string(),
                    duplicate: at.duplicate,
                }
            })
            .collect())
    }
}
