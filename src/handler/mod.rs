//! Handler workers: each file in `handlers/` subscribes to a topic in a
//! consumer group, runs one action per event (an HTTP call or a signed
//! webhook) under timeout, retry, breaker, rate-limit and concurrency
//! policies, and publishes the outcome as an event: a result, or a dead
//! letter with the reason and the attempt history.

pub mod action;
pub mod config;
mod consumer;
mod outcome;
pub mod policy;
mod stats;
mod worker;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::config::{HandlerSpec, load};
use self::outcome::Recorded;
pub use self::outcome::{BREAKER_TYPE, DEAD_LETTER_TYPE, RESULT_TYPE};
use self::worker::Worker;
use crate::broker::{Broker, BrokerError};
use crate::cursor::Cursor;
use crate::event::Attributes;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::topic::Topics;

/// Connections kept open per target host between calls.
const IDLE_CONNECTIONS_PER_HOST: usize = 64;

/// Which dead letters to re-drive.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySelection {
    /// Dead-letter event ids; all of the handler's when empty.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Cursor range over the dead-letter topic (default: all of it).
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no handler named {0:?}")]
    UnknownHandler(String),
    #[error("{0}: {1}")]
    BadCursor(&'static str, crate::cursor::CursorError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// What a replay does: the dead letters re-driven, and those it skipped
/// with the reason (no longer valid for the topic, stored truncated).
#[derive(Debug, serde::Serialize)]
pub struct Replay {
    pub ids: Vec<String>,
    pub skipped: Vec<Value>,
}

/// What every handler of the process works with.
#[derive(Clone)]
pub struct Services {
    pub broker: Arc<Broker>,
    pub ingest: Arc<Ingest>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the process stops.
    pub shutdown: CancellationToken,
    /// The group session timeout (see `crate::broker::membership`).
    pub session: Duration,
}

/// All running handlers. A reload (`SIGHUP`) replaces the whole set: the
/// old one drains (stops taking events, finishes what is in flight,
/// commits) before the new one starts, so no group has two consumers here.
#[derive(Clone, Default)]
pub struct Handlers {
    running: Arc<std::sync::RwLock<Arc<Generation>>>,
    /// One reload at a time.
    reloading: Arc<tokio::sync::Mutex<()>>,
    broker: Option<Arc<Broker>>,
    tracker: TaskTracker,
    /// Dead letters being replayed now (a second replay skips them).
    replaying: Arc<std::sync::Mutex<HashSet<String>>>,
}

/// One set of handlers, started together and stopped together.
#[derive(Default)]
struct Generation {
    workers: Vec<Arc<Worker>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Generation {
    /// Starts a worker per handler; their tasks count on `tracker` too
    /// (the process waits for them at shutdown).
    fn start(
        specs: Vec<HandlerSpec>,
        topics: &Topics,
        services: &Services,
        tracker: &TaskTracker,
    ) -> Self {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST)
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("the HTTP client builds");
        let stop = services.shutdown.child_token();
        let services = Services {
            shutdown: stop.clone(),
            ..services.clone()
        };
        let workers: Vec<Arc<Worker>> = specs
            .into_iter()
            .map(|spec| {
                let topic = topics
                    .get(&spec.topic)
                    .expect("handler topics are checked at load");
                Arc::new(Worker::new(spec, topic, &services, client.clone()))
            })
            .collect();
        let tasks = TaskTracker::new();
        for worker in &workers {
            let run = tasks.track_future(consumer::run(Arc::clone(worker)));
            tracker.spawn(run);
        }
        tasks.close();
        Self {
            workers,
            stop,
            tasks,
        }
    }

    /// Stops taking events and waits until every worker has finished.
    async fn drain(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

impl Handlers {
    fn workers(&self) -> Vec<Arc<Worker>> {
        self.running
            .read()
            .expect("handlers lock poisoned")
            .workers
            .clone()
    }

    /// The running handlers' definitions.
    pub fn specs(&self) -> Vec<HandlerSpec> {
        self.workers()
            .iter()
            .map(|worker| worker.spec.clone())
            .collect()
    }

    /// Which handler writes each output topic: clients may not publish
    /// there.
    pub fn output_of(&self, topic: &str) -> Option<String> {
        self.workers()
            .iter()
            .find(|worker| worker.spec.outputs().contains(&topic))
            .map(|worker| worker.spec.name.clone())
    }

    /// Starts a worker per handler, each spawned on `tracker`.
    pub fn start(
        specs: Vec<HandlerSpec>,
        topics: &Topics,
        services: &Services,
        tracker: &TaskTracker,
    ) -> Self {
        let generation = Generation::start(specs, topics, services, tracker);
        Self {
            running: Arc::new(std::sync::RwLock::new(Arc::new(generation))),
            reloading: Arc::default(),
            broker: Some(Arc::clone(&services.broker)),
            tracker: tracker.clone(),
            replaying: Arc::default(),
        }
    }

    /// Replaces the running handlers with `specs`: the old ones drain
    /// first, then the new ones start.
    pub async fn reload(&self, specs: Vec<HandlerSpec>, topics: &Topics, services: &Services) {
        let _one = self.reloading.lock().await;
        let old = Arc::clone(&self.running.read().expect("handlers lock poisoned"));
        old.drain().await;
        let generation = Generation::start(specs, topics, services, &self.tracker);
        *self.running.write().expect("handlers lock poisoned") = Arc::new(generation);
    }

    fn worker(&self, name: &str) -> Option<Arc<Worker>> {
        self.workers().into_iter().find(|w| w.spec.name == name)
    }

    /// Per handler: lag, in flight, breakers, success rate, latency, last
    /// error and health.
    pub async fn status(&self) -> Value {
        let workers = self.workers();
        let mut handlers = Vec::with_capacity(workers.len());
        for worker in &workers {
            let stats = &worker.stats;
            let success_rate = stats.success_rate();
            let health = match success_rate {
                None => "healthy",
                Some(rate) if rate >= 0.95 => "healthy",
                Some(rate) if rate >= 0.8 => "degraded",
                Some(_) => "unhealthy",
            };
            let latency = stats
                .latency_ms()
                .map(|(p50, p99)| json!({"p50": p50, "p99": p99}));
            let last_error = stats
                .last_error
                .lock()
                .expect("stats lock poisoned")
                .clone();
            handlers.push(json!({
                "name": worker.spec.name,
                "description": worker.spec.description,
                "topic": worker.spec.topic,
                "group": worker.spec.group,
                "lag": worker.lag().await,
                "in_flight": stats.in_flight.load(Ordering::Relaxed),
                "breakers": worker.breaker_states(),
                "success_rate": success_rate,
                "latency_ms": latency,
                "last_error": last_error,
                "health": health,
                "results": worker.spec.results,
                "dead_letters": worker.spec.dead_letters,
            }));
        }
        json!({ "handlers": handlers })
    }

    /// Re-drives the selected dead letters of handler `name` through it.
    /// Returns the ids of the dead letters being replayed; their new
    /// outcomes arrive as events.
    pub async fn replay(
        &self,
        name: &str,
        selection: ReplaySelection,
    ) -> Result<Replay, ReplayError> {
        let worker = self
            .worker(name)
            .ok_or_else(|| ReplayError::UnknownHandler(name.to_owned()))?;
        let broker = self
            .broker
            .as_ref()
            .expect("started handlers have a broker");
        let topic = &worker.spec.dead_letters;
        let partitions = broker.latest(topic).await?.partitions();
        let parse = |which: &'static str, text: &str| {
            Cursor::parse_for(text, partitions).map_err(|e| ReplayError::BadCursor(which, e))
        };
        let from = match &selection.from {
            Some(text) => parse("from", text)?,
            None => broker.earliest(topic).await?,
        };
        let until = match &selection.to {
            Some(text) => parse("to", text)?,
            None => broker.latest(topic).await?,
        };
        let wanted: HashSet<&str> = selection.ids.iter().map(String::as_str).collect();
        // Every dead letter of this handler in the range, and every
        // resolution of one (from the start: a resolution may follow its
        // letter by any distance).
        let mut letters: Vec<(String, Value)> = Vec::new();
        let mut resolved: HashSet<String> = HashSet::new();
        broker
            .scan(topic, broker.earliest(topic).await?, None, |stored| {
                let Some(recorded) = Recorded::parse_any(&stored.payload) else {
                    return;
                };
                if let Some(letter) = recorded.resolves(name) {
                    resolved.insert(letter.to_owned());
                } else if recorded.is_dead_letter_of(name)
                    && (wanted.is_empty() || wanted.contains(recorded.id.as_str()))
                    && stored.offset >= from.next(stored.partition)
                    && stored.offset < until.next(stored.partition)
                {
                    letters.push((recorded.id, recorded.data.event));
                }
            })
            .await?;
        let mut chosen = Vec::new();
        let mut skipped = Vec::new();
        let mut found: HashSet<String> = HashSet::new();
        let mut inputs: HashSet<(String, String)> = HashSet::new();
        let mut replaying = self.replaying.lock().expect("replay lock poisoned");
        // Newest first: of several letters of one event, the latest is sent.
        for (id, event) in letters.into_iter().rev() {
            found.insert(id.clone());
            let input = Attributes::of(&event);
            let reason = if resolved.contains(&id) {
                Some("resolved already: a replay of it reached its final outcome".to_owned())
            } else if replaying.contains(&id) {
                Some("being replayed now".to_owned())
            } else if !inputs.insert((input.source.clone(), input.id.clone())) {
                Some("a later dead letter of the same event is replayed instead".to_owned())
            } else {
                worker.replayable(&event).err()
            };
            match reason {
                Some(reason) => skipped.push(json!({"id": id, "reason": reason})),
                None => chosen.push((id, event)),
            }
        }
        for id in &selection.ids {
            if !found.contains(id) {
                skipped.push(
                    json!({"id": id, "reason": "no dead letter of this handler has this id"}),
                );
            }
        }
        let ids: Vec<String> = chosen.iter().map(|(id, _)| id.clone()).collect();
        for (id, event) in chosen {
            replaying.insert(id.clone());
            let worker = Arc::clone(&worker);
            let replaying = Arc::clone(&self.replaying);
            self.tracker.spawn(async move {
                worker.redrive(id.clone(), event).await;
                replaying.lock().expect("replay lock poisoned").remove(&id);
            });
        }
        Ok(Replay { ids, skipped })
    }
}
