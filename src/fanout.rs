//! SSE fan-out: one log reader per topic feeds an in-process broadcast; each
//! subscriber follows it with its own cursor and SSE framing.
//!
//! Slow-consumer policy: the broadcast never waits for anyone. A subscriber
//! that falls behind it (its socket is full, or it lagged past the channel's
//! capacity) notices a gap and catches up by reading the log from its own
//! cursor, then rejoins the broadcast. One whose cursor is older than
//! retention gets `event: lagged` and is closed. So no subscriber can slow
//! publishing or another subscriber; the log is the buffer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::broker::{Broker, BrokerError, StoredEvent};
use crate::cursor::{Cursor, StreamCursor};
use crate::event::{EventHead, Filter};
use crate::metrics::Metrics;

/// Batches the broadcast holds for subscribers that are momentarily behind;
/// further behind, they read the log.
const BROADCAST_CAPACITY: usize = 256;
/// Events the hub reads from the log at once, their most bytes, and its
/// first step (the hub is one reader per topic and reads often: it starts
/// at 16 events, so a busy topic costs one read per wake-up).
const HUB_READ_BATCH: usize = 1024;
const HUB_READ_BYTES: (usize, usize) = (4 << 20, 16);
/// How long one hub read waits for new events before it asks again.
const HUB_POLL_WAIT: Duration = Duration::from_secs(1);
/// How often a hub with no subscribers moves its cursor to the end.
const IDLE_HUB_POLL: Duration = Duration::from_millis(50);
/// Events a subscriber reads from the log per step while catching up.
const CATCH_UP_BATCH: usize = 512;
/// Broadcast batches coalesced into one socket write.
const COALESCE_BATCHES: usize = 32;
/// The `retry:` hint sent to clients, in ms.
pub const RETRY_HINT_MS: u64 = 2000;

/// An event as the hub shares it with every subscriber.
pub struct SharedEvent {
    pub partition: usize,
    pub offset: u64,
    pub ty: String,
    pub subject: Option<String>,
    /// The stored CloudEvent JSON (for filter expressions).
    pub payload: Bytes,
    /// `event: <type>\ndata: <json>\n\n`, the part every subscriber shares.
    pub frame_tail: Bytes,
    /// The event as CEL values, made by the first subscriber with a filter
    /// expression and shared by the others.
    cel: std::sync::OnceLock<Option<crate::event::CelEvent>>,
    /// The verdicts of the expressions evaluated on it so far, by their
    /// text: subscribers with the same filter (a dashboard open many
    /// times) evaluate it once per event. At most [`VERDICTS`] are kept.
    verdicts: std::sync::Mutex<Vec<(Arc<str>, bool)>>,
}

impl SharedEvent {
    fn from_stored(event: StoredEvent) -> Self {
        let head = EventHead::parse(&event.payload).unwrap_or(EventHead {
            ty: String::new(),
            subject: None,
        });
        let mut tail = BytesMut::with_capacity(event.payload.len() + head.ty.len() + 16);
        // A type with a line break would end the SSE field early; such
        // events go out as the default `message` type.
        if !head.ty.is_empty() && !head.ty.contains(['\r', '\n']) {
            tail.put_slice(b"event: ");
            tail.put_slice(head.ty.as_bytes());
            tail.put_u8(b'\n');
        }
        tail.put_slice(b"data: ");
        tail.put_slice(&event.payload);
        tail.put_slice(b"\n\n");
        Self {
            partition: event.partition,
            offset: event.offset,
            ty: head.ty,
            subject: head.subject,
            payload: event.payload,
            frame_tail: tail.freeze(),
            cel: std::sync::OnceLock::new(),
            verdicts: std::sync::Mutex::default(),
        }
    }

    /// Whether it passes `filter`: type and subject first; then its
    /// expression, evaluated once per event for all the subscribers that
    /// have the same one, on the event converted for CEL once for all.
    fn passes(&self, filter: &crate::event::Filter) -> bool {
        if !filter.matches(&self.ty, self.subject.as_deref()) {
            return false;
        }
        let Some(expr) = &filter.expr else {
            return true;
        };
        let key = expr.shared_source();
        let known = |verdicts: &[(Arc<str>, bool)]| {
            verdicts
                .iter()
                .find(|(text, _)| Arc::ptr_eq(text, key) || text == key)
                .map(|&(_, verdict)| verdict)
        };
        let lock = || {
            self.verdicts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(verdict) = known(&lock()) {
            return verdict;
        }
        let verdict = self
            .cel
            .get_or_init(|| crate::event::CelEvent::parse(&self.payload))
            .as_ref()
            .is_some_and(|event| expr.passes_prepared(event));
        let mut verdicts = lock();
        if verdicts.len() < VERDICTS && known(&verdicts).is_none() {
            verdicts.push((Arc::clone(key), verdict));
        }
        verdict
    }
}

/// The most filter verdicts an event in the fan-out keeps (see
/// [`SharedEvent::passes`]); more distinct filters are evaluated each time.
const VERDICTS: usize = 16;

type Batch = Arc<[SharedEvent]>;

/// The fan-out hubs, one per topic (one may be added at run time).
#[derive(Clone)]
pub struct Hubs {
    by_topic: Arc<std::sync::RwLock<HashMap<String, broadcast::Sender<Batch>>>>,
    /// Counts the hubs added, so that a stream over topic patterns hears
    /// of a topic created while it runs.
    added: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for Hubs {
    fn default() -> Self {
        Self {
            by_topic: Arc::default(),
            added: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

impl Hubs {
    /// Starts one hub task per topic, each reading its topic's log from the
    /// current end on.
    pub async fn start(
        topics: impl IntoIterator<Item = String>,
        broker: &Arc<Broker>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<Self, BrokerError> {
        let hubs = Self::default();
        for topic in topics {
            hubs.add(&topic, broker, tracker, shutdown).await?;
        }
        Ok(hubs)
    }

    /// Starts the hub of `topic` (nothing when it has one).
    pub async fn add(
        &self,
        topic: &str,
        broker: &Arc<Broker>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<(), BrokerError> {
        if self.subscribe(topic).is_some() {
            return Ok(());
        }
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        let start = broker.latest(topic).await?;
        let mut by_topic = self.by_topic.write().expect("hubs lock poisoned");
        if by_topic.contains_key(topic) {
            return Ok(());
        }
        tracker.spawn(run_hub(
            topic.to_owned(),
            Arc::clone(broker),
            sender.clone(),
            start,
            shutdown.clone(),
        ));
        by_topic.insert(topic.to_owned(), sender);
        drop(by_topic);
        self.added.send_modify(|added| *added += 1);
        Ok(())
    }

    /// Changes each time a hub is added (a topic created at run time): the
    /// topics are then worth listing again.
    pub fn added(&self) -> tokio::sync::watch::Receiver<u64> {
        self.added.subscribe()
    }

    fn subscribe(&self, topic: &str) -> Option<broadcast::Receiver<Batch>> {
        self.by_topic
            .read()
            .expect("hubs lock poisoned")
            .get(topic)
            .map(broadcast::Sender::subscribe)
    }

    /// Tells when `topic`'s head moves (events appended, by this process or
    /// another one on the same broker); `None` for an unknown topic.
    pub fn watch(&self, topic: &str) -> Option<HeadWatch> {
        self.subscribe(topic).map(|receiver| HeadWatch { receiver })
    }
}

/// Follows a topic's head without its events: see [`Hubs::watch`].
pub struct HeadWatch {
    receiver: broadcast::Receiver<Batch>,
}

impl HeadWatch {
    /// A watch on a channel of its own, and what moves it (for tests).
    #[cfg(test)]
    pub(crate) fn channel() -> (impl Fn(), HeadWatch) {
        let (sender, receiver) = broadcast::channel(BROADCAST_CAPACITY);
        let moved = move || {
            let _ = sender.send(Arc::from(Vec::<SharedEvent>::new()));
        };
        (moved, HeadWatch { receiver })
    }

    /// Waits until the head has moved since the last call, then takes
    /// every move that is already known, so that a burst is one answer.
    /// `false` once the hub is gone (shutdown).
    pub async fn moved(&mut self) -> bool {
        use broadcast::error::{RecvError, TryRecvError};
        match self.receiver.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return false,
        }
        loop {
            match self.receiver.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Closed) => return false,
            }
        }
    }
}

async fn run_hub(
    topic: String,
    broker: Arc<Broker>,
    sender: broadcast::Sender<Batch>,
    mut cursor: Cursor,
    shutdown: CancellationToken,
) {
    loop {
        if sender.receiver_count() == 0 {
            // Nobody listens: follow the end without reading events. A new
            // subscriber catches up from its own cursor anyway.
            if let Ok(latest) = broker.latest(&topic).await
                // Someone who joined meanwhile may be waiting for what was
                // appended meanwhile: then read it rather than skip it.
                && sender.receiver_count() == 0
            {
                cursor = latest;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(IDLE_HUB_POLL) => {}
            }
            continue;
        }
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            read = broker.read_bounded(&topic, &cursor, None, HUB_READ_BATCH, HUB_READ_BYTES, HUB_POLL_WAIT) => read,
        };
        match read {
            Ok(batch) => {
                cursor = batch.next;
                if !batch.events.is_empty() {
                    let deliveries: Batch = batch
                        .events
                        .into_iter()
                        .map(SharedEvent::from_stored)
                        .collect();
                    // No receivers is fine: nobody is listening.
                    let _ = sender.send(deliveries);
                }
            }
            Err(BrokerError::CursorExpired { oldest, .. }) => {
                // Retention outran the hub; subscribers notice the gap and
                // decide for themselves from their own cursors.
                warn!(topic = %topic, "fan-out fell behind retention; skipping ahead");
                cursor = oldest;
            }
            Err(err) => {
                warn!(topic = %topic, error = %err.detail(), "fan-out read failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// One SSE client's view of a topic.
pub struct Subscription {
    topic: String,
    broker: Arc<Broker>,
    receiver: broadcast::Receiver<Batch>,
    cursor: Cursor,
    filter: Filter,
    naming: Naming,
    stream: Option<SharedStreamCursor>,
    catching_up: bool,
    greeted: bool,
    done: bool,
    heartbeat: tokio::time::Interval,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    _gauge: GaugeGuard,
}

struct GaugeGuard(prometheus_client::metrics::gauge::Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub struct SubscribeParams {
    pub topic: String,
    pub cursor: Cursor,
    pub filter: Filter,
    pub heartbeat: Duration,
    /// What each event's `event:` line says.
    pub naming: Naming,
    /// In a stream over several topics: the position of all of them,
    /// which each event's id gives (and which the stream greets with).
    pub stream: Option<SharedStreamCursor>,
}

/// The SSE event name (`event:` line) each event goes out with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Its CloudEvent type (the default).
    Type,
    /// None: SSE's default type, `message`, for clients that only listen
    /// to `onmessage`.
    Message,
    /// Its topic's name: a client of a stream over several topics (the
    /// console's live tail) learns which topic each event came from.
    Topic,
}

/// The position of a stream over several topics, shared by the
/// subscriptions it merges (each sets its own topic's part).
pub type SharedStreamCursor = Arc<std::sync::Mutex<StreamCursor>>;

impl Subscription {
    /// Joins the topic's broadcast first, then catches up from `cursor`, so
    /// nothing published in between is missed.
    pub fn new(
        params: SubscribeParams,
        hubs: &Hubs,
        broker: Arc<Broker>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Option<Self> {
        let receiver = hubs.subscribe(&params.topic)?;
        let gauge = metrics.subscriber_gauge(&params.topic);
        gauge.inc();
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + params.heartbeat,
            params.heartbeat,
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(Self {
            topic: params.topic,
            broker,
            receiver,
            cursor: params.cursor,
            filter: params.filter,
            naming: params.naming,
            stream: params.stream,
            catching_up: true,
            greeted: false,
            done: false,
            heartbeat,
            shutdown,
            metrics,
            _gauge: GaugeGuard(gauge),
        })
    }

    /// The next bytes to write to the client; `None` ends the stream.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        if !self.greeted && self.stream.is_none() {
            self.greeted = true;
            // An id-only frame: per the SSE spec it sets the client's last
            // event id without dispatching an event, so even a client that
            // sees no event before reconnecting resumes from here.
            return Some(Bytes::from(format!(
                "retry: {RETRY_HINT_MS}\nid: {}\n\n",
                self.cursor
            )));
        }
        while !self.done {
            if self.catching_up {
                if let Some(chunk) = self.catch_up_step().await {
                    return Some(chunk);
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => self.done = true,
                received = self.receiver.recv() => {
                    let mut out = BytesMut::new();
                    let mut delivered = 0;
                    let mut next = Some(received);
                    let mut batches = 0;
                    while let Some(received) = next.take() {
                        match received {
                            Ok(batch) => delivered += self.frame_live(&batch, &mut out),
                            Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                            Err(broadcast::error::RecvError::Closed) => self.done = true,
                        }
                        batches += 1;
                        if !self.catching_up && !self.done && batches < COALESCE_BATCHES {
                            next = match self.receiver.try_recv() {
                                Ok(batch) => Some(Ok(batch)),
                                Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(broadcast::error::RecvError::Lagged(n))),
                                Err(_) => None,
                            };
                        }
                    }
                    if !out.is_empty() {
                        self.metrics.delivered(&self.topic, delivered);
                        return Some(out.freeze());
                    }
                }
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(b":\n\n")),
            }
        }
        None
    }

    /// Frames the events of a broadcast batch this subscriber has not seen.
    /// A gap (an offset beyond the cursor) switches to catching up.
    fn frame_live(&mut self, batch: &[SharedEvent], out: &mut BytesMut) -> u64 {
        let mut delivered = 0;
        for delivery in batch {
            let next = self.cursor.next(delivery.partition);
            if delivery.offset < next {
                continue;
            }
            if delivery.offset > next {
                self.catching_up = true;
                break;
            }
            self.cursor.advance(delivery.partition, delivery.offset);
            if delivery.passes(&self.filter) {
                self.write_frame(out, &delivery.frame_tail);
                delivered += 1;
            }
        }
        delivered
    }

    fn write_frame(&self, out: &mut BytesMut, frame_tail: &[u8]) {
        use std::fmt::Write;
        out.put_slice(b"id: ");
        match &self.stream {
            Some(stream) => {
                let mut stream = stream
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                stream.set(&self.topic, &self.cursor);
                write!(out, "{stream}")
            }
            None => write!(out, "{}", self.cursor),
        }
        .expect("writing to memory cannot fail");
        out.put_u8(b'\n');
        let tail = match frame_tail.strip_prefix(b"event: ".as_slice()) {
            // The shared frame without its first line.
            Some(named) if self.naming != Naming::Type => {
                let end = named.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
                &named[end..]
            }
            _ => frame_tail,
        };
        if self.naming == Naming::Topic {
            // Topic names are dot-separated words: never a line break.
            out.put_slice(b"event: ");
            out.put_slice(self.topic.as_bytes());
            out.put_u8(b'\n');
        }
        out.put_slice(tail);
    }

    /// Reads the next page of the log from the subscriber's own cursor.
    /// Returns frames to send, or `None` to go on (caught up, or filtered).
    async fn catch_up_step(&mut self) -> Option<Bytes> {
        let read = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => {
                self.done = true;
                return None;
            }
            read = self.broker.read_bounded(&self.topic, &self.cursor, None, CATCH_UP_BATCH, crate::broker::READER_BYTES, Duration::ZERO) => read,
        };
        match read {
            Ok(batch) if batch.events.is_empty() => {
                self.catching_up = false;
                None
            }
            Ok(batch) => {
                let mut out = BytesMut::new();
                let mut delivered = 0;
                for event in batch.events {
                    let delivery = SharedEvent::from_stored(event);
                    self.cursor.advance(delivery.partition, delivery.offset);
                    if delivery.passes(&self.filter) {
                        self.write_frame(&mut out, &delivery.frame_tail);
                        delivered += 1;
                    }
                }
                self.cursor = batch.next;
                if out.is_empty() {
                    return None;
                }
                self.metrics.delivered(&self.topic, delivered);
                Some(out.freeze())
            }
            Err(BrokerError::CursorExpired { oldest, .. }) => {
                self.done = true;
                let data = serde_json::json!({
                    "message": "this subscriber fell behind the topic's retention; events were removed before it read them",
                    "oldest": oldest.to_string(),
                });
                Some(Bytes::from(format!("event: lagged\ndata: {data}\n\n")))
            }
            Err(err) => {
                self.done = true;
                let data = serde_json::json!({ "message": err.to_string() });
                Some(Bytes::from(format!("event: error\ndata: {data}\n\n")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Expr, Filter};

    fn filter(expr: &str) -> Filter {
        Filter {
            expr: Some(Expr::compile(expr).unwrap()),
            ..Filter::default()
        }
    }

    /// Verdicts are shared by the expression's text only: another
    /// expression on the same event gets its own, and a type filter still
    /// applies before a remembered verdict.
    #[test]
    fn one_event_remembers_each_expression_s_verdict_apart() {
        let event = SharedEvent::from_stored(StoredEvent {
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            payload: Bytes::from_static(
                br#"{"specversion":"1.0","id":"1","source":"/t","type":"a","data":{"n":5}}"#,
            ),
        });
        for _ in 0..2 {
            assert!(event.passes(&filter("data.n > 1")));
            assert!(!event.passes(&filter("data.n > 9")));
            assert!(event.passes(&filter("type == 'a'")));
        }
        let mut other_type = filter("data.n > 1");
        other_type.types = Some(["b".to_owned()].into());
        assert!(!event.passes(&other_type));
        assert_eq!(event.verdicts.lock().unwrap().len(), 3);
    }
}
