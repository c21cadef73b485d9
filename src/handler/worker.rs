//! One handler's work on one event: the action under its policies
//! (timeout, retries with backoff, a circuit breaker per target, the rate
//! limit and the concurrency cap), then its outcome stored durably.
//! Consuming the topic, and acking, is `consumer.rs`'s.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, warn};

use super::action::{self, CallResult};
use super::config::HandlerSpec;
use super::outcome::{BREAKER_TYPE, Outcome, RESOLVED_TYPE, attempt_record, source_of};
use super::policy::breaker::{Breaker, Permit, Transition};
use super::policy::retry::backoff;
use super::stats::Stats;
use crate::broker::Broker;
use crate::cursor::Cursor;
use crate::event::Filter;
use crate::event::{Attributes, CloudEvent, now_rfc3339};
use crate::ingest::{Ingest, IngestError, Undeclared};
use crate::metrics::Metrics;
use crate::topic::Topic;

/// How long to wait before storing an outcome again after the broker
/// refused it.
const OUTCOME_RETRY: Duration = Duration::from_secs(1);

pub struct Worker {
    pub spec: HandlerSpec,
    /// The events it takes (its subscribe types and subject prefix).
    filter: Filter,
    pub(super) topic: Arc<Topic>,
    pub(super) broker: Arc<Broker>,
    ingest: Arc<Ingest>,
    client: reqwest::Client,
    breakers: Mutex<HashMap<String, Breaker>>,
    limiter: Option<DefaultDirectRateLimiter>,
    concurrency: Semaphore,
    pub stats: Stats,
    metrics: Arc<Metrics>,
    pub(super) shutdown: CancellationToken,
    /// The group session timeout (see `crate::broker::membership`).
    pub(super) session: Duration,
}

impl Worker {
    pub fn new(
        spec: HandlerSpec,
        topic: Arc<Topic>,
        services: &super::Services,
        client: reqwest::Client,
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
            expr: spec.filter.clone(),
        };
        Self {
            concurrency: Semaphore::new(spec.policy.max_concurrency),
            filter,
            spec,
            topic,
            broker: Arc::clone(&services.broker),
            ingest: Arc::clone(&services.ingest),
            client,
            breakers: Mutex::new(HashMap::new()),
            limiter,
            stats: Stats::default(),
            metrics: Arc::clone(&services.metrics),
            shutdown: services.shutdown.clone(),
            session: services.session,
        }
    }

    /// The output topics' ends: every outcome stored from now on lands
    /// after them.
    pub(super) async fn outputs_latest(&self) -> Option<Vec<Cursor>> {
        let mut cursors = Vec::new();
        for topic in self.spec.outputs() {
            cursors.push(self.broker.latest(topic).await.ok()?);
        }
        Some(cursors)
    }

    /// Handles one event through the action and its policies; `None` when
    /// shutdown interrupted it (it stays unacked and comes again).
    pub(super) async fn deliver(&self, event: &Value, payload: &Bytes) -> Option<Outcome> {
        let policy = &self.spec.policy;
        let started = Instant::now();
        let mut attempts = Vec::new();
        let keep_headers = self.spec.action.result_headers();
        for attempt in 1..=policy.max_attempts {
            let attempt_span = tracing::info_span!("attempt", attempt);
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
            let permit = async {
                self.wait_for_breaker(&target).await?;
                if let Some(limiter) = &self.limiter {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        _ = limiter.until_ready() => {}
                    }
                }
                tokio::select! {
                    _ = self.shutdown.cancelled() => None,
                    permit = self.concurrency.acquire() => Some(permit.expect("the semaphore is never closed")),
                }
            }
            .instrument(attempt_span.clone())
            .await?;
            let call_span = tracing::info_span!(
                parent: &attempt_span,
                "call",
                otel.kind = "client",
                server.address = %target,
                http.response.status_code = tracing::field::Empty,
            );
            // The target joins the trace: this call's context, or (not
            // exporting) the event's own.
            let mut prepared = prepared;
            if let Some(traceparent) = crate::telemetry::traceparent(&call_span)
                .or_else(|| event["traceparent"].as_str().map(str::to_owned))
            {
                prepared.request = prepared.request.header("traceparent", traceparent);
            }
            let call_started = Instant::now();
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                result = action::call(prepared, policy.timeout, keep_headers).instrument(call_span.clone()) => result,
            };
            if let Some(status) = result.status() {
                call_span.record("http.response.status_code", i64::from(status));
            }
            drop(call_span);
            drop(attempt_span);
            drop(permit);
            let took = call_started.elapsed();
            self.stats.record_latency(took.as_secs_f64() * 1000.0);
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
            source_of(&self.spec.name),
            BREAKER_TYPE.to_owned(),
            json!({"handler": self.spec.name, "target": target, "from": from, "to": to}),
        );
        if let Err(err) = self
            .ingest
            .publish_checked(topic, vec![event], Undeclared::Accept)
            .await
        {
            warn!(handler = %self.spec.name, error = %crate::error_chain(&err), "could not publish a breaker event");
        }
    }

    /// Handles one event to a durable outcome; false when interrupted.
    pub(super) async fn handle(&self, event: Value, payload: Bytes, mut head: Attributes) -> bool {
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let span = self.delivery_span(&mut head);
        let acked = async {
            match self.deliver(&event, &payload).await {
                Some(outcome) => self.store_outcome(&event, &head, outcome).await,
                None => false,
            }
        }
        .instrument(span)
        .await;
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        acked
    }

    /// The span of one event's delivery, continuing the event's trace; its
    /// outcome (in `head`) continues from it.
    fn delivery_span(&self, head: &mut Attributes) -> tracing::Span {
        let span = tracing::info_span!(
            "handler",
            otel.kind = "consumer",
            handler = %self.spec.name,
            event = %head.id,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        crate::telemetry::continue_trace(
            &span,
            head.traceparent.as_deref(),
            head.tracestate.as_deref(),
        );
        crate::telemetry::record_ids(&span);
        if let Some(traceparent) = crate::telemetry::traceparent(&span) {
            head.traceparent = Some(traceparent);
        }
        span
    }

    /// Stores the outcome, retrying until it is durable or shutdown.
    async fn store_outcome(&self, input: &Value, head: &Attributes, outcome: Outcome) -> bool {
        let succeeded = outcome.succeeded();
        self.stats.record_outcome(succeeded);
        self.metrics.handler_outcome(
            &self.spec.name,
            if succeeded { "succeeded" } else { "failed" },
        );
        if let Outcome::Failed { reason, .. } = &outcome {
            warn!(handler = %self.spec.name, event = %head.id, reason = %reason, "dead-lettering an event");
            *self.stats.last_error.lock().expect("stats lock poisoned") =
                Some(json!({"at": now_rfc3339(), "error": reason}));
        }
        let Some((topic, mut event)) = outcome.into_event(&self.spec, input, head) else {
            return true;
        };
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
                // input event, the target's answer), with a marker.
                Err(err) if !matches!(err, IngestError::Broker(_)) => {
                    if shrunk {
                        tracing::error!(handler = %self.spec.name, topic, error = %err, "an outcome cannot be stored even without its bulky parts; dropping it");
                        return true;
                    }
                    warn!(handler = %self.spec.name, topic, error = %err, "an outcome cannot be stored as it is; storing it truncated");
                    head.shrink(&mut event, &err.to_string());
                    shrunk = true;
                }
                Err(err) => {
                    warn!(handler = %self.spec.name, topic, error = %crate::error_chain(&err), "cannot store an outcome yet; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(OUTCOME_RETRY) => {}
                    }
                }
            }
        }
    }

    /// Re-drives the event of dead letter `letter` through the handler;
    /// once its new outcome is durable, marks the letter resolved (on the
    /// dead-letter topic), so that replay does not send it again.
    pub async fn redrive(self: Arc<Self>, letter: String, event: Value) {
        let payload = Bytes::from(serde_json::to_vec(&event).expect("JSON serializes"));
        let mut head = Attributes::of(&event);
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let span = self.delivery_span(&mut head);
        async {
            if let Some(outcome) = self.deliver(&event, &payload).await {
                let succeeded = outcome.succeeded();
                if self.store_outcome(&event, &head, outcome).await {
                    self.resolve(&letter, &head, succeeded).await;
                }
            }
        }
        .instrument(span)
        .await;
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Stores that dead letter `letter` is resolved: its event has a new
    /// final outcome (a result, or a new dead letter that replay may send).
    async fn resolve(&self, letter: &str, head: &Attributes, succeeded: bool) {
        let data = json!({
            "handler": self.spec.name,
            "dead_letter": letter,
            "outcome": if succeeded { "succeeded" } else { "failed" },
        });
        let marker = head.cause(source_of(&self.spec.name), RESOLVED_TYPE, data);
        loop {
            match self
                .ingest
                .publish_checked(
                    &self.spec.dead_letters,
                    vec![marker.clone()],
                    Undeclared::Accept,
                )
                .await
            {
                Ok(_) => return,
                Err(err) => {
                    warn!(handler = %self.spec.name, error = %crate::error_chain(&err), "cannot mark a replayed dead letter resolved yet; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(OUTCOME_RETRY) => {}
                    }
                }
            }
        }
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
        if !self.wants(&Attributes::of(event), event) {
            return Err(format!(
                "type {:?} or its subject is not one this handler takes",
                parsed.ty
            ));
        }
        Ok(())
    }

    /// Whether the handler takes the event (its types, subject prefix and
    /// filter).
    pub(super) fn wants(&self, head: &Attributes, event: &Value) -> bool {
        self.filter.matches_head(head, event)
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
