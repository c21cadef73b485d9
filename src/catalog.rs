//! Topics defined at run time (`PUT /v1/topics/{name}`), kept in the
//! broker itself so that they survive restarts and every Switchyard process
//! on one broker sees them: each change is an event in [`CATALOG_TOPIC`]
//! (the definition as given, or a deletion), the newest per name counting.
//! A process reads the whole topic at start, then follows it.
//!
//! A definition is checked exactly like a topic file ([`Topic::from_api`]).
//! Topics from files stay read-only here. A topic is created in the broker
//! before its definition is stored, so whoever learns of it can use it.
//! Redefining a topic replaces its description, key, types and groups at
//! once; its partitions cannot change, and its retention and dedupe window
//! in the broker stay as created until a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::{Broker, BrokerError};
use crate::cursor::Cursor;
use crate::event::CloudEvent;
use crate::fanout::Hubs;
use crate::ingest::{Ingest, IngestError, Undeclared};
use crate::problem::ConfigProblem;
use crate::topic::{CATALOG_TOPIC, Origin, TOPIC_DEFINED_TYPE, TOPIC_DELETED_TYPE, Topic, Topics};

/// After a broker error, the wait before following again.
const RETRY: Duration = Duration::from_secs(1);
/// How long one read of the catalog waits for a change.
const FOLLOW_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the topic definition has {} problem(s)", .0.len())]
    Invalid(Vec<ConfigProblem>),
    #[error("topic {0:?} is declared in a file (topics/): change it there, then send SIGHUP")]
    ReadOnly(String),
    #[error(
        "topic {name:?} has {existing} partitions; a definition cannot change them (asked for {asked})"
    )]
    PartitionsFixed {
        name: String,
        existing: usize,
        asked: usize,
    },
    #[error("unknown topic {0:?}")]
    Unknown(String),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// A change read from the catalog.
enum Change {
    Defined(Topic),
    Deleted(String),
}

fn parse(event: &[u8]) -> Option<Change> {
    let value: Value = serde_json::from_slice(event).ok()?;
    let name = value["subject"].as_str()?.to_owned();
    match value["type"].as_str()? {
        TOPIC_DEFINED_TYPE => {
            match Topic::from_api(&name, value["data"].clone(), Path::new(CATALOG_TOPIC)) {
                Ok(topic) => Some(Change::Defined(topic)),
                Err(problems) => {
                    let problems: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                    warn!(topic = %name, ?problems, "a stored topic definition no longer checks; skipping it");
                    None
                }
            }
        }
        TOPIC_DELETED_TYPE => Some(Change::Deleted(name)),
        _ => None,
    }
}

/// Applies one change to the registry (and the broker, and the hubs once
/// they run). A definition of a name a file or Switchyard declares, or one
/// that changes the partitions, is skipped with a warning.
async fn apply(
    change: Change,
    topics: &Topics,
    broker: &Arc<Broker>,
    hubs: Option<(&Hubs, &TaskTracker, &CancellationToken)>,
) -> Result<(), BrokerError> {
    match change {
        Change::Defined(topic) => {
            if let Some(existing) = topics.get(&topic.name) {
                if existing.origin != Origin::Api {
                    warn!(topic = %topic.name, "a topic defined over the API has the name of a declared one; the file wins");
                    return Ok(());
                }
                if existing.partitions != topic.partitions {
                    warn!(topic = %topic.name, "a stored definition changes the partitions; skipping it");
                    return Ok(());
                }
            }
            let topic = Arc::new(topic);
            broker.add_topic(&topic).await?;
            topics.insert(Arc::clone(&topic));
            if let Some((hubs, tracker, shutdown)) = hubs {
                hubs.add(&topic.name, broker, tracker, shutdown).await?;
            }
        }
        Change::Deleted(name) => {
            if topics.get(&name).is_some_and(|t| t.origin == Origin::Api) {
                topics.remove(&name);
            }
        }
    }
    Ok(())
}

/// Reads the whole catalog into `topics` (before the hubs start); returns
/// where it ends, to follow from.
pub async fn recover(topics: &Topics, broker: &Arc<Broker>) -> Result<Cursor, BrokerError> {
    let mut changes = Vec::new();
    let from = broker.earliest(CATALOG_TOPIC).await?;
    let end = broker
        .scan(CATALOG_TOPIC, from, None, |event| {
            changes.extend(parse(&event.payload));
        })
        .await?;
    let count = changes.len();
    for change in changes {
        apply(change, topics, broker, None).await?;
    }
    if count > 0 {
        let defined = topics.iter().filter(|t| t.origin == Origin::Api).count();
        info!(
            changes = count,
            topics = defined,
            "topics defined over the API read back"
        );
    }
    Ok(end)
}

/// Defines, redefines and deletes topics over the API, and follows what
/// other processes do.
pub struct Catalog {
    topics: Topics,
    broker: Arc<Broker>,
    ingest: Arc<Ingest>,
    hubs: Hubs,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Catalog {
    pub fn new(
        topics: Topics,
        broker: Arc<Broker>,
        ingest: Arc<Ingest>,
        hubs: Hubs,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            topics,
            broker,
            ingest,
            hubs,
            tracker,
            shutdown,
        })
    }

    /// Follows the catalog from `from`: changes other processes make.
    pub fn follow(self: &Arc<Self>, from: Cursor) {
        let catalog = Arc::clone(self);
        self.tracker.spawn(async move {
            let mut cursor = from;
            loop {
                let read = tokio::select! {
                    _ = catalog.shutdown.cancelled() => return,
                    read = catalog.broker.read(CATALOG_TOPIC, &cursor, 64, FOLLOW_WAIT) => read,
                };
                let batch = match read {
                    Ok(batch) => batch,
                    Err(err) => {
                        warn!(error = %err.detail(), "cannot follow the topic catalog; retrying");
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                };
                for event in &batch.events {
                    if let Some(change) = parse(&event.payload)
                        && let Err(err) = catalog.apply(change).await
                    {
                        warn!(error = %err.detail(), "cannot serve a topic defined over the API yet");
                    }
                }
                cursor = batch.next;
            }
        });
    }

    async fn apply(&self, change: Change) -> Result<(), BrokerError> {
        let hubs = (&self.hubs, &self.tracker, &self.shutdown);
        apply(change, &self.topics, &self.broker, Some(hubs)).await
    }

    /// Defines (or redefines) topic `name`; true when it is new.
    pub async fn define(
        &self,
        name: &str,
        definition: Value,
    ) -> Result<(bool, Arc<Topic>), CatalogError> {
        let what = format!("PUT /v1/topics/{name}");
        let topic = Topic::from_api(name, definition.clone(), Path::new(&what))
            .map_err(CatalogError::Invalid)?;
        let existing = self.topics.get(name);
        if let Some(existing) = &existing {
            if existing.origin != Origin::Api {
                return Err(CatalogError::ReadOnly(name.to_owned()));
            }
            if existing.partitions != topic.partitions {
                return Err(CatalogError::PartitionsFixed {
                    name: name.to_owned(),
                    existing: existing.partitions,
                    asked: topic.partitions,
                });
            }
        }
        let mut stored = definition;
        stored["name"] = json!(name);
        self.store(name, TOPIC_DEFINED_TYPE, stored).await?;
        self.apply(Change::Defined(topic)).await?;
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| CatalogError::Unknown(name.to_owned()))?;
        Ok((existing.is_none(), topic))
    }

    /// Deletes topic `name` (defined over the API). Its events stay in the
    /// broker: defining it again finds them.
    pub async fn delete(&self, name: &str) -> Result<(), CatalogError> {
        match self.topics.get(name) {
            None => return Err(CatalogError::Unknown(name.to_owned())),
            Some(topic) if topic.origin != Origin::Api => {
                return Err(CatalogError::ReadOnly(name.to_owned()));
            }
            Some(_) => {}
        }
        self.store(name, TOPIC_DELETED_TYPE, json!({})).await?;
        self.apply(Change::Deleted(name.to_owned())).await?;
        Ok(())
    }

    /// Stores a change durably, after creating the topic in the broker for
    /// a definition (so whoever reads the change can use the topic).
    async fn store(&self, name: &str, ty: &str, data: Value) -> Result<(), CatalogError> {
        if ty == TOPIC_DEFINED_TYPE {
            let topic = Topic::from_api(name, data.clone(), Path::new(CATALOG_TOPIC))
                .map_err(CatalogError::Invalid)?;
            self.broker.add_topic(&Arc::new(topic)).await?;
        }
        let mut event = CloudEvent::wrap("/switchyard/topics".to_owned(), ty.to_owned(), data);
        event.subject = Some(name.to_owned());
        self.ingest
            .publish_checked(CATALOG_TOPIC, vec![event], Undeclared::Refuse)
            .await?;
        Ok(())
    }
}
