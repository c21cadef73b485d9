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
use crate::topic::{MAX_SCHEDULE_AHEAD, SCHEDULE_TOPIC, SCHEDULED_TYPE, Topic, TopicError, Topics};

/// Where a published event is: its id and the cursor right after it (or,
/// for an event scheduled for later, when it is due).
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// The due time of an event that waits until then
    /// ([`crate::topic::SCHEDULE_TOPIC`]); it has no position yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<String>,
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
    #[error("event {index}: deliverat: {reason}")]
    Schedule { index: usize, reason: String },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Where an event of a publish went: the `n`th record for its topic, or
/// the `n`th for the schedule topic (with its due time).
enum Slot {
    Now(usize),
    Later(usize, String),
}

/// The extension attribute that holds when an event is due (RFC 3339): one
/// published before then waits in [`SCHEDULE_TOPIC`].
pub const DELIVER_AT: &str = "deliverat";

/// When `event` is due, if it names a time still to come (milliseconds
/// since the epoch), checked against the topic and the longest schedule.
fn due_later(event: &CloudEvent, topic: &Topic, now_ms: i64) -> Result<Option<i64>, String> {
    let Some(value) = event.extensions.get(DELIVER_AT) else {
        return Ok(None);
    };
    let text = value
        .as_str()
        .ok_or_else(|| "must be an RFC 3339 time (a string)".to_owned())?;
    let due = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|err| {
            format!("{text:?} is not an RFC 3339 time like 2026-12-01T09:00:00Z ({err})")
        })?;
    let due_ms = (due.unix_timestamp_nanos() / 1_000_000) as i64;
    if due_ms <= now_ms {
        return Ok(None);
    }
    if !topic.schedule {
        return Err(format!(
            "topic {:?} does not take scheduled events: set `schedule = true` in its file",
            topic.name
        ));
    }
    let ahead = std::time::Duration::from_millis((due_ms - now_ms) as u64);
    if ahead > MAX_SCHEDULE_AHEAD {
        return Err(format!(
            "{text} is more than {} ahead",
            crate::problem::format_duration(MAX_SCHEDULE_AHEAD)
        ));
    }
    Ok(Some(due_ms))
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
        let now_ms = now_millis();
        // Events due now go to the topic; ones due later wait in the
        // schedule topic. Each answer: an index into one or the other.
        let mut answers: Vec<(String, Slot)> = Vec::new();
        let mut records = Vec::with_capacity(events.len());
        let mut waiting = Vec::new();
        // Events without a trace of their own join the one being recorded
        // (a publish request's, a webhook delivery's).
        let trace = crate::telemetry::traceparent(&tracing::Span::current());
        for (index, mut event) in events.into_iter().enumerate() {
            if let Some(trace) = &trace {
                crate::telemetry::inherit(&mut event, trace, None);
            }
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
            let due = due_later(&event, &topic, now_ms)
                .map_err(|reason| IngestError::Schedule { index, reason })?;
            if due.is_none() {
                answers.push((event.id.clone(), Slot::Now(records.len())));
                records.push(self.record(&topic, index, &event)?);
                continue;
            }
            let schedule = self
                .topics
                .get(SCHEDULE_TOPIC)
                .ok_or_else(|| IngestError::UnknownTopic(SCHEDULE_TOPIC.to_owned()))?;
            let due_text = event.extensions[DELIVER_AT]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            // Named like the event, so that a retried schedule is a duplicate.
            let waiting_event = CloudEvent {
                id: event.id.clone(),
                source: event.source.clone(),
                ty: SCHEDULED_TYPE.to_owned(),
                time: Some(due_text.clone()),
                subject: Some(topic_name.to_owned()),
                datacontenttype: Some("application/json".to_owned()),
                dataschema: None,
                data: Some(crate::event::Data::Json(event.to_json())),
                extensions: Default::default(),
            };
            answers.push((event.id.clone(), Slot::Later(waiting.len(), due_text)));
            waiting.push(self.record(&schedule, index, &waiting_event)?);
        }
        // Positions name the other partitions as they were before this
        // append: resuming from one may repeat an event published
        // concurrently, but never skips one.
        let mut positions = Vec::new();
        if !records.is_empty() {
            let before = self.ends.before_append(topic_name).await?;
            let appended = self.broker.append(topic_name, records).await?;
            self.ends.appended(topic_name, &appended);
            let stored = appended.iter().filter(|at| !at.duplicate).count() as u64;
            self.metrics
                .published(topic_name, stored, started.elapsed().as_secs_f64());
            positions = appended
                .into_iter()
                .map(|at| {
                    let mut position = before.clone();
                    position.advance(at.partition, at.offset);
                    (position.to_string(), at.duplicate)
                })
                .collect();
        }
        // A batch of both kinds is two appends: when the second fails, a
        // retry of the whole batch finds the first stored (a duplicate).
        let mut scheduled = Vec::new();
        if !waiting.is_empty() {
            scheduled = self.broker.append(SCHEDULE_TOPIC, waiting).await?;
        }
        Ok(answers
            .into_iter()
            .map(|(id, answer)| match answer {
                Slot::Now(i) => Published {
                    id,
                    position: Some(positions[i].0.clone()),
                    scheduled: None,
                    duplicate: positions[i].1,
                },
                Slot::Later(i, due) => Published {
                    id,
                    position: None,
                    scheduled: Some(due),
                    duplicate: scheduled[i].duplicate,
                },
            })
            .collect())
    }

    /// The record that stores `event` in `topic` (its partition chosen).
    fn record(
        &self,
        topic: &Topic,
        index: usize,
        event: &CloudEvent,
    ) -> Result<Record, IngestError> {
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
        Ok(Record {
            partition,
            key,
            identity,
            payload: Bytes::from(payload),
        })
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
