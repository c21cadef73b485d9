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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::action::{self, CallResult};
use super::config::HandlerSpec;
use super::policy::breaker::{Breaker, Permit, Transition};
use super::policy::retry::backoff;
use crate::broker::{Broker, BrokerError, StoredEvent};
use crate::cursor::Cursor;
use crate::event::{CloudEvent, now_rfc3339};
use crate::ingest::{Ingest, Undeclared};
use crate::metrics::Metrics;
use crate::stream::Filter;
use crate::topic::Topic;

/// Events read but not yet acked, at most; reading pauses beyond it.
const READ_AHEAD: usize = 1024;
/// Events asked for per read.
const READ_BATCH: usize = 256;
const READ_WAIT: Duration = Duration::from_secs(1);
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
/// How long shutdown waits for calls in flight before leaving them unacked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Outcomes and latencies kept for the status endpoint.
const STATS_WINDOW: usize = 1000;

pub const RESULT_TYPE: &str = "switchyard.handler.succeeded";
pub const DEAD_LETTER_TYPE: &str = "switchyard.handler.failed";
pub const BREAKER_TYPE: &str = "switchyard.handler.breaker";

/// Recent history, for `GET /v1/handlers`.
#[derive(Default)]
pub struct Stats {
    pub in_flight: AtomicI64,
    outcomes: Mutex<VecDeque<bool>>,
    latencies_ms: Mutex<VecDeque<f64>>,
    pub last_error: Mutex<Option<Value>>,
    pub committed: Mutex<Option<Cursor>>,
}

impl Stats {
    fn push<T>(queue: &Mutex<VecDeque<T>>, value: T) {
        let mut queue = queue.lock().expect("stats lock poisoned");
        if queue.len() == STATS_WINDOW {
            queue.pop_front();
        }
        queue.push_back(value);
    }

    /// Share of recent outcomes that succeeded, if there were any.
    pub fn success_rate(&self) -> Option<f64> {
        let outcomes = self.outcomes.lock().expect("stats lock poisoned");
        (!outcomes.is_empty())
            .then(|| outcomes.iter().filter(|ok| **ok).count() as f64 / outcomes.len() as f64)
    }

    /// (p50, p99) of recent call latencies in ms.
    pub fn latency_ms(&self) -> Option<(f64, f64)> {
        let mut samples: Vec<f64> = self
            .latencies_ms
            .lock()
            .expect("stats lock poisoned")
            .iter()
            .copied()
            .collect();
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }
}

/// One call's record in a dead letter's attempt history.
fn attempt_record(attempt: u32, result: &CallResult, duration: Duration) -> Value {
    let (status, error) = match result {
        CallResult::Success { status, .. } => (Some(*status), None),
        CallResult::Retryable { reason, status, .. } | CallResult::Permanent { reason, status } => {
            (*status, Some(reason.clone()))
        }
    };
    json!({
        "attempt": attempt,
        "at": now_rfc3339(),
        "status": status,
        "error": error,
        "duration_ms": duration.as_secs_f64() * 1000.0,
    })
}

/// What handling an event came to.
enum Outcome {
    Succeeded {
        status: u16,
        headers: serde_json::Map<String, Value>,
        body: Value,
        attempts: u32,
        duration: Duration,
    },
    Failed {
        reason: String,
        permanent: bool,
        attempts: Vec<Value>,
    },
}

pub struct Worker {
    pub spec: HandlerSpec,
    /// The events it takes (its subscribe types and subject prefix).
    filter: Filter,
    topic: Arc<Topic>,
    broker: Arc<Broker>,
    ingest: Arc<Ingest>,
    client: reqwest::Client,
    breakers: Mutex<HashMap<String, Breaker>>,
    limiter: Option<DefaultDirectRateLimiter>,
    concurrency: Semaphore,
    pub stats: Stats,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

/// A read event waiting for, or under, handling.
struct Job {
    partition: usize,
    offset: u64,
    key: Option<String>,
    event: Value,
    payload: Bytes,
}

/// A job's end: acked when its outcome is durable.
struct Done {
    partition: usize,
    offset: u64,
    key: Option<String>,
    acked: bool,
}

impl Worker {
    pub fn new(
        spec: HandlerSpec,
        topic: Arc<Topic>,
        broker: Arc<Broker>,
        ingest: Arc<Ingest>,
        client: reqwest::Client,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let limiter = spec.policy.rate_limit.map(|rate| {
            // No burst: calls are spaced evenly, so the target never sees
            // more than the rate over any interval.
            let period = Duration::from_secs_f64(1.0 / rate);
            RateLimiter::direct(Quota::with_period(period).expect("a positive period"))
        });
        let filter = Filter {
            types: (!spec.types.is_empty()).then(|| spec.types.iter().cloned().collect()),
            subject_prefix: spec.subject_prefix.clone(),
        };
        Self {
            concurrency: Semaphore::new(spec.policy.max_concurrency),
            filter,
            spec,
            topic,
            broker,
            ingest,
            client,
            breakers: Mutex::new(HashMap::new()),
            limiter,
            stats: Stats::default(),
            metrics,
            shutdown,
        }
    }

    /// The group's cursor to start from, creating it on first run.
    async fn starting_cursor(&self) -> Option<Cursor> {
        let (topic, group) = (&self.spec.topic, &self.spec.group);
        loop {
            let found = self
                .broker
                .committed_or_start(topic, group, self.spec.start_earliest)
                .await;
            match found {
                Ok(cursor) => return Some(cursor),
                Err(err) => {
                    warn!(handler = %self.spec.name, error = %err, "cannot read the group cursor; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn outputs_latest(&self) -> Option<Vec<Cursor>> {
        let mut cursors = Vec::new();
        for topic in self.spec.outputs() {
            cursors.push(self.broker.latest(topic).await.ok()?);
        }
        Some(cursors)
    }

    /// (source, id) of every event with an outcome stored after the last
    /// commit: their redeliveries are acked without another call.
    async fn recent_outcomes(&self) -> Result<HashSet<(String, String)>, BrokerError> {
        let mut found = HashSet::new();
        let me = format!("/handlers/{}", self.spec.name);
        for topic in self.spec.outputs() {
            // A new group starts at the latest: nothing of ours is there yet.
            let mut cursor = self
                .broker
                .committed_or_start(topic, &self.spec.outputs_group(), false)
                .await?;
            loop {
                let batch = self
                    .broker
                    .read(topic, &cursor, 512, Duration::ZERO)
                    .await?;
                if batch.events.is_empty() {
                    break;
                }
                for stored in &batch.events {
                    let Ok(outcome) = serde_json::from_slice::<Value>(&stored.payload) else {
                        continue;
                    };
                    let ty = outcome.get("type").and_then(Value::as_str);
                    if outcome.get("source").and_then(Value::as_str) == Some(me.as_str())
                        && matches!(ty, Some(RESULT_TYPE | DEAD_LETTER_TYPE))
                        && let (Some(source), Some(id)) = (
                            outcome
                                .pointer("/data/event/source")
                                .and_then(Value::as_str),
                            outcome.pointer("/data/event/id").and_then(Value::as_str),
                        )
                    {
                        found.insert((source.to_owned(), id.to_owned()));
                    }
                }
                cursor = batch.next;
            }
        }
        Ok(found)
    }

    /// Consumes until shutdown.
    pub async fn run(self: Arc<Self>) {
        let Some(start) = self.starting_cursor().await else {
            return;
        };
        let already_done = loop {
            match self.recent_outcomes().await {
                Ok(found) => break found,
                Err(err) => {
                    warn!(handler = %self.spec.name, error = %err, "cannot read recent outcomes; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        info!(handler = %self.spec.name, topic = %self.spec.topic, group = %self.spec.group, cursor = %start, "handler started");
        *self.stats.committed.lock().expect("stats lock poisoned") = Some(start.clone());
        let mut consumer = Consumer {
            worker: Arc::clone(&self),
            read_cursor: start.clone(),
            committed: start,
            pending: vec![BTreeMap::new(); self.topic.partitions],
            batches: BTreeMap::new(),
            next_batch: 0,
            already_done,
            busy_keys: HashSet::new(),
            waiting: HashMap::new(),
            tasks: JoinSet::new(),
            done: mpsc::channel(READ_AHEAD + 1),
            dirty: false,
        };
        consumer.run().await;
    }

    /// Handles one event through the action and its policies; `None` when
    /// shutdown interrupted it (it stays unacked and comes again).
    async fn deliver(&self, event: &Value, payload: &Bytes) -> Option<Outcome> {
        let policy = &self.spec.policy;
        let started = Instant::now();
        let mut attempts = Vec::new();
        let keep_headers = self.spec.action.result_headers();
        for attempt in 1..=policy.max_attempts {
            let prepared = match self.spec.action.prepare(&self.client, event, payload) {
                Ok(prepared) => prepared,
                Err(reason) => {
                    return Some(Outcome::Failed {
                        reason,
                        permanent: true,
                        attempts,
                    });
                }
            };
            let target = prepared.target.clone();
            self.wait_for_breaker(&target).await?;
            if let Some(limiter) = &self.limiter {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    _ = limiter.until_ready() => {}
                }
            }
            let permit = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                permit = self.concurrency.acquire() => permit.expect("the semaphore is never closed"),
            };
            let call_started = Instant::now();
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                result = action::call(prepared, policy.timeout, keep_headers) => result,
            };
            drop(permit);
            let took = call_started.elapsed();
            Stats::push(&self.stats.latencies_ms, took.as_secs_f64() * 1000.0);
            self.metrics
                .handler_call(&self.spec.name, took.as_secs_f64());
            // A target that answers 4xx is healthy: only retryable failures
            // count against its breaker.
            let healthy = !matches!(result, CallResult::Retryable { .. });
            let transition =
                self.breaker(&target, |b| b.record(tokio::time::Instant::now(), healthy));
            if let Some(transition) = transition {
                self.breaker_changed(&target, transition).await;
            }
            attempts.push(attempt_record(attempt, &result, took));
            match result {
                CallResult::Success {
                    status,
                    headers,
                    body,
                } => {
                    return Some(Outcome::Succeeded {
                        status,
                        headers,
                        body,
                        attempts: attempt,
                        duration: started.elapsed(),
                    });
                }
                CallResult::Permanent { reason, .. } => {
                    return Some(Outcome::Failed {
                        reason,
                        permanent: true,
                        attempts,
                    });
                }
                CallResult::Retryable {
                    reason,
                    retry_after,
                    ..
                } => {
                    *self.stats.last_error.lock().expect("stats lock poisoned") =
                        Some(json!({"at": now_rfc3339(), "error": reason}));
                    if attempt == policy.max_attempts {
                        return Some(Outcome::Failed {
                            reason: format!("gave up after {attempt} attempts: {reason}"),
                            permanent: false,
                            attempts,
                        });
                    }
                    let wait = backoff(
                        attempt,
                        policy.backoff_initial,
                        policy.backoff_max,
                        retry_after,
                    );
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    fn breaker<T>(&self, target: &str, f: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut breakers = self.breakers.lock().expect("breaker lock poisoned");
        let breaker = breakers
            .entry(target.to_owned())
            .or_insert_with(|| Breaker::new(self.spec.policy.breaker));
        f(breaker)
    }

    /// Waits while the target's breaker is open; `None` on shutdown.
    async fn wait_for_breaker(&self, target: &str) -> Option<()> {
        loop {
            let (permit, transition) =
                self.breaker(target, |b| b.acquire(tokio::time::Instant::now()));
            if let Some(transition) = transition {
                self.breaker_changed(target, transition).await;
            }
            match permit {
                Permit::Go => return Some(()),
                Permit::Wait(wait) => tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                },
            }
        }
    }

    pub fn breaker_states(&self) -> serde_json::Map<String, Value> {
        let breakers = self.breakers.lock().expect("breaker lock poisoned");
        breakers
            .iter()
            .map(|(target, b)| (target.clone(), Value::from(b.state().name())))
            .collect()
    }

    /// Logs, counts and publishes a breaker's change of state.
    async fn breaker_changed(&self, target: &str, transition: Transition) {
        let (from, to) = (transition.from.name(), transition.to.name());
        warn!(handler = %self.spec.name, target, from, to, "circuit breaker changed state");
        self.metrics.handler_breaker(&self.spec.name, to);
        let topic = self
            .spec
            .results
            .as_deref()
            .unwrap_or(&self.spec.dead_letters);
        let event = CloudEvent::wrap(
            format!("/handlers/{}", self.spec.name),
            BREAKER_TYPE.to_owned(),
            json!({"handler": self.spec.name, "target": target, "from": from, "to": to}),
        );
        if let Err(err) = self
            .ingest
            .publish_checked(topic, vec![event], Undeclared::Accept)
            .await
        {
            warn!(handler = %self.spec.name, error = %err, "could not publish a breaker event");
        }
    }

    /// Handles one event to a durable outcome; false when interrupted.
    async fn handle(&self, event: Value, payload: Bytes) -> bool {
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let outcome = self.deliver(&event, &payload).await;
        let acked = match outcome {
            Some(outcome) => self.publish_outcome(&event, outcome).await,
            None => false,
        };
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        acked
    }

    /// Publishes the outcome, retrying until it is durable or shutdown.
    async fn publish_outcome(&self, source: &Value, outcome: Outcome) -> bool {
        let succeeded = matches!(outcome, Outcome::Succeeded { .. });
        Stats::push(&self.stats.outcomes, succeeded);
        self.metrics.handler_outcome(
            &self.spec.name,
            if succeeded { "succeeded" } else { "failed" },
        );
        let (topic, event) = match outcome {
            Outcome::Succeeded {
                status,
                headers,
                body,
                attempts,
                duration,
            } => {
                let Some(results) = &self.spec.results else {
                    return true;
                };
                let data = json!({
                    "handler": self.spec.name,
                    "event": summary(source),
                    "status": status,
                    "headers": headers,
                    "body": body,
                    "attempts": attempts,
                    "duration_ms": duration.as_secs_f64() * 1000.0,
                });
                (
                    results.as_str(),
                    self.outcome_event(source, RESULT_TYPE, data),
                )
            }
            Outcome::Failed {
                reason,
                permanent,
                attempts,
            } => {
                warn!(handler = %self.spec.name, event = %source["id"], reason = %reason, "dead-lettering an event");
                *self.stats.last_error.lock().expect("stats lock poisoned") =
                    Some(json!({"at": now_rfc3339(), "error": reason}));
                let data = json!({
                    "handler": self.spec.name,
                    "reason": reason,
                    "permanent": permanent,
                    "attempts": attempts,
                    "event": source,
                });
                (
                    self.spec.dead_letters.as_str(),
                    self.outcome_event(source, DEAD_LETTER_TYPE, data),
                )
            }
        };
        let mut event = event;
        let mut shrunk = false;
        loop {
            match self
                .ingest
                .publish_checked(topic, vec![event.clone()], Undeclared::Accept)
                .await
            {
                Ok(_) => return true,
                // Too large or otherwise unstorable as it is: never retried
                // as it is. Stored once more without the bulky parts (the
                // source event, the target's answer), with a marker.
                Err(err) if !matches!(err, crate::ingest::IngestError::Broker(_)) => {
                    if shrunk {
                        tracing::error!(handler = %self.spec.name, topic, error = %err, "an outcome cannot be stored even without its bulky parts; dropping it");
                        return true;
                    }
                    warn!(handler = %self.spec.name, topic, error = %err, "an outcome cannot be stored as it is; storing it truncated");
                    shrink_outcome(&mut event, source, &err.to_string());
                    shrunk = true;
                }
                Err(err) => {
                    warn!(handler = %self.spec.name, topic, error = %err, "cannot store an outcome yet; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// A result or dead-letter event, caused by `source`.
    fn outcome_event(&self, source: &Value, ty: &str, data: Value) -> CloudEvent {
        let mut event =
            CloudEvent::wrap(format!("/handlers/{}", self.spec.name), ty.to_owned(), data);
        event.subject = source
            .get("subject")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(id) = source.get("id").and_then(Value::as_str) {
            event
                .extensions
                .insert("causationid".into(), Value::from(id));
            let correlation = source
                .get("correlationid")
                .and_then(Value::as_str)
                .unwrap_or(id);
            event
                .extensions
                .insert("correlationid".into(), Value::from(correlation));
        }
        for carried in ["traceparent", "tracestate"] {
            if let Some(value) = source.get(carried).and_then(Value::as_str) {
                event.extensions.insert(carried.into(), Value::from(value));
            }
        }
        event
    }

    /// Re-drives an event (from a dead letter) through the handler.
    pub async fn redrive(self: Arc<Self>, event: Value) {
        let payload = Bytes::from(serde_json::to_vec(&event).expect("JSON serializes"));
        self.handle(event, payload).await;
    }

    /// Whether a dead letter's event may be re-driven: it must still be an
    /// event this handler takes, valid against its topic's type and schema
    /// (a dead letter stored truncated, or one that is not what it seems,
    /// is not sent to the target).
    pub fn replayable(&self, event: &Value) -> Result<(), String> {
        let parsed = CloudEvent::from_json(event.clone()).map_err(|err| err.to_string())?;
        self.topic
            .validate(&parsed)
            .map_err(|err| err.to_string())?;
        if !self.wants(event) {
            return Err(format!(
                "type {:?} or its subject is not one this handler takes",
                parsed.ty
            ));
        }
        Ok(())
    }

    fn wants(&self, event: &Value) -> bool {
        let ty = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.filter
            .matches(ty, event.get("subject").and_then(Value::as_str))
    }

    /// Events not yet acked: latest minus committed, over all partitions.
    pub async fn lag(&self) -> Option<u64> {
        let committed = self
            .stats
            .committed
            .lock()
            .expect("stats lock poisoned")
            .clone()?;
        let latest = self.broker.latest(&self.spec.topic).await.ok()?;
        Some(
            latest
                .offsets()
                .iter()
                .zip(committed.offsets())
                .map(|(end, next)| end.saturating_sub(*next))
                .sum(),
        )
    }
}

/// Replaces an outcome's bulky parts (the source event, the target's
/// answer) with a summary and a `truncated` marker saying why.
fn shrink_outcome(event: &mut CloudEvent, source: &Value, why: &str) {
    if let Some(crate::event::Data::Json(Value::Object(data))) = &mut event.data {
        if data.contains_key("event") {
            data.insert("event".into(), summary(source));
        }
        if data.contains_key("body") {
            data.insert("body".into(), Value::Null);
        }
        data.insert("truncated".into(), json!({ "reason": why }));
    }
}

fn summary(event: &Value) -> Value {
    json!({
        "id": event.get("id"),
        "type": event.get("type"),
        "source": event.get("source"),
        "subject": event.get("subject"),
    })
}

/// The consuming loop's state: what is read, in flight, and committed.
struct Consumer {
    worker: Arc<Worker>,
    read_cursor: Cursor,
    committed: Cursor,
    /// Offsets read but not yet acked, per partition, with the read batch
    /// each came in.
    pending: Vec<BTreeMap<u64, u64>>,
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
        self.pending.iter().map(BTreeMap::len).sum()
    }

    async fn run(&mut self) {
        let worker = Arc::clone(&self.worker);
        let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
        loop {
            let reading = self.in_flight() < READ_AHEAD;
            tokio::select! {
                biased;
                _ = worker.shutdown.cancelled() => break,
                Some(done) = self.done.1.recv() => self.finish(done),
                _ = commit_tick.tick(), if self.dirty => self.commit().await,
                read = worker.broker.read(&worker.spec.topic, &self.read_cursor, READ_BATCH, READ_WAIT), if reading => {
                    match read {
                        Ok(batch) => {
                            if !batch.events.is_empty() {
                                self.dispatch_batch(batch.events).await;
                            }
                            self.read_cursor = batch.next;
                        }
                        Err(BrokerError::CursorExpired { oldest, .. }) => {
                            warn!(handler = %worker.spec.name, "events expired before this handler read them; skipping to the oldest retained");
                            self.read_cursor = oldest;
                            self.dirty = true;
                        }
                        Err(err) => {
                            warn!(handler = %worker.spec.name, error = %err, "reading the topic failed; retrying");
                            tokio::select! {
                                _ = worker.shutdown.cancelled() => break,
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
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

    async fn dispatch_batch(&mut self, events: Vec<StoredEvent>) {
        // Every outcome of these events will land after the outputs' ends
        // as they are now.
        let Some(outputs) = self.worker.outputs_latest().await else {
            warn!(handler = %self.worker.spec.name, "an output topic is unknown to the broker");
            return;
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
        if !worker.wants(&event) {
            return;
        }
        let identity = (
            event
                .get("source")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            event
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        );
        if self.already_done.remove(&identity) {
            self.dirty = true;
            return;
        }
        let key = worker
            .spec
            .policy
            .ordered_by_key
            .then(|| worker.topic.key_of(&event))
            .flatten();
        self.pending[stored.partition].insert(stored.offset, batch);
        if let Some((_, unacked)) = self.batches.get_mut(&batch) {
            *unacked += 1;
        }
        let job = Job {
            partition: stored.partition,
            offset: stored.offset,
            key,
            event,
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
        let worker = Arc::clone(&self.worker);
        let done = self.done.0.clone();
        self.tasks.spawn(async move {
            let acked = worker.handle(job.event, job.payload).await;
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
        if done.acked
            && let Some(batch) = self.pending[done.partition].remove(&done.offset)
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

    /// Commits the lowest unacked offset of each partition.
    async fn commit(&mut self) {
        let cursor = Cursor::lowest_pending(&self.pending, &self.read_cursor);
        if cursor == self.committed {
            self.dirty = false;
            return;
        }
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
            .commit(&worker.spec.topic, &worker.spec.group, &cursor)
            .await
        {
            warn!(handler = %worker.spec.name, error = %err, "committing the group cursor failed; will retry");
            return;
        }
        *worker.stats.committed.lock().expect("stats lock poisoned") = Some(cursor.clone());
        self.committed = cursor;
        self.dirty = false;
        let group = worker.spec.outputs_group();
        for (topic, position) in worker
            .spec
            .outputs()
            .into_iter()
            .zip(outputs.into_iter().flatten())
        {
            if let Err(err) = worker.broker.commit(topic, &group, &position).await {
                warn!(handler = %worker.spec.name, error = %err, "committing the outputs cursor failed; will retry");
                self.dirty = true;
            }
        }
    }
}
