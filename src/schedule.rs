//! Scheduled events: one published with a `deliverat` time still to come
//! waits in [`SCHEDULE_TOPIC`] (durable like any event), and this task
//! publishes it to its topic when it is due; from then on handlers, groups,
//! SSE and pages see it like any other event.
//!
//! Crash-safe by idempotent publish: the task commits, as the consumer
//! group [`GROUP`] of the schedule topic, the oldest waiting event it has
//! not moved yet; after a restart it reads on from there and publishes
//! again what was due, and a publish of an event already moved is a
//! duplicate (within the topic's dedupe window). With several processes on
//! one broker, the holder of the lease [`LEASE_SCOPE`] moves them (on Kafka,
//! whose leases are per process, each process does, and the dedupe window
//! catches all but racing copies).
//!
//! Memory: the due time and offset of each waiting event read (not the
//! event: it is read again when due), at most [`MAX_WAITING`]; beyond that
//! it reads no further until some are moved.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::broker::{Broker, BrokerError};
use crate::cursor::Cursor;
use crate::event::CloudEvent;
use crate::ingest::{Ingest, IngestError, Undeclared};
use crate::topic::SCHEDULE_TOPIC;

/// The schedule topic's consumer group: its committed cursor is the oldest
/// waiting event not moved yet.
pub const GROUP: &str = "switchyard.scheduler";
/// The lease the process that moves events holds.
pub const LEASE_SCOPE: &str = "switchyard.scheduler";
const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often due events are looked for: a due event is published at most
/// about this late (plus the publish).
const TICK: Duration = Duration::from_millis(200);
/// Waiting events read into memory at most.
const MAX_WAITING: usize = 1_000_000;
/// After a broker error, the wait before starting over.
const RETRY: Duration = Duration::from_secs(1);

/// Starts moving due events, when some topic takes scheduled events.
pub fn start(
    broker: Arc<Broker>,
    ingest: Arc<Ingest>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        let holder = crate::broker::membership::process_name();
        loop {
            let leased = broker
                .lease(LEASE_SCOPE, SCHEDULE_TOPIC, holder, LEASE_TTL)
                .await;
            let outcome = match leased {
                Ok(true) => move_due(&broker, &ingest, &shutdown, holder).await,
                // Another process moves them; look again later.
                Ok(false) => Ok(()),
                Err(err) => Err(err),
            };
            if let Err(err) = outcome {
                warn!(error = %err.detail(), "scheduled events: starting over");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
        let _ = broker.release(LEASE_SCOPE, SCHEDULE_TOPIC, holder).await;
    });
}

/// What the task knows of a waiting event.
#[derive(Deserialize)]
struct Waiting {
    time: String,
    subject: String,
    data: serde_json::Value,
}

fn due_ms(time: &str) -> Option<i64> {
    let due =
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).ok()?;
    Some((due.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads the schedule from the committed cursor on and publishes each
/// event when due, while this process holds the lease; returns when it
/// loses it, at shutdown, or on a broker error.
async fn move_due(
    broker: &Broker,
    ingest: &Ingest,
    shutdown: &CancellationToken,
    holder: &str,
) -> Result<(), BrokerError> {
    let mut read_to = broker
        .committed_or_start(SCHEDULE_TOPIC, GROUP, true)
        .await?
        .cursor();
    let mut committed = read_to.clone();
    // (due, offset), and the offsets alone (the oldest is the commit).
    let mut by_due: BTreeMap<(i64, u64), ()> = BTreeMap::new();
    let mut offsets: BTreeSet<u64> = BTreeSet::new();
    let mut renewed = tokio::time::Instant::now();
    info!("scheduled events: moving them to their topics when due");
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if renewed.elapsed() > LEASE_TTL / 3 {
            if !broker
                .lease(LEASE_SCOPE, SCHEDULE_TOPIC, holder, LEASE_TTL)
                .await?
            {
                return Ok(());
            }
            renewed = tokio::time::Instant::now();
        }
        if offsets.len() < MAX_WAITING {
            let batch = broker.read(SCHEDULE_TOPIC, &read_to, 256, TICK).await?;
            for event in &batch.events {
                match serde_json::from_slice::<Waiting>(&event.payload)
                    .ok()
                    .and_then(|w| due_ms(&w.time))
                {
                    Some(due) => {
                        by_due.insert((due, event.offset), ());
                        offsets.insert(event.offset);
                    }
                    None => error!(
                        offset = event.offset,
                        "scheduled events: an event without a due time; skipping it"
                    ),
                }
            }
            read_to = batch.next;
        } else {
            tokio::time::sleep(TICK).await;
        }
        let now = now_ms();
        while let Some((&(due, offset), ())) = by_due.first_key_value() {
            if due > now {
                break;
            }
            publish_waiting(broker, ingest, offset).await?;
            by_due.pop_first();
            offsets.remove(&offset);
        }
        // Everything below the oldest still waiting is moved.
        let low = offsets
            .first()
            .map_or_else(|| read_to.clone(), |&offset| Cursor::new(vec![offset]));
        if low != committed {
            broker.commit(SCHEDULE_TOPIC, GROUP, &low).await?;
            committed = low;
        }
    }
}

/// Publishes the waiting event at `offset` to its topic. One its topic
/// refuses now (its schema changed meanwhile, the topic is gone) is logged
/// and dropped: there is no client left to tell.
async fn publish_waiting(broker: &Broker, ingest: &Ingest, offset: u64) -> Result<(), BrokerError> {
    let batch = match broker
        .read(
            SCHEDULE_TOPIC,
            &Cursor::new(vec![offset]),
            1,
            Duration::ZERO,
        )
        .await
    {
        Ok(batch) => batch,
        Err(BrokerError::CursorExpired { .. }) => {
            error!(
                offset,
                "scheduled events: removed by retention before it was due"
            );
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    let Some(stored) = batch.events.first().filter(|e| e.offset == offset) else {
        return Ok(());
    };
    let Ok(waiting) = serde_json::from_slice::<Waiting>(&stored.payload) else {
        return Ok(());
    };
    let event = match CloudEvent::from_json(waiting.data) {
        Ok(event) => event,
        Err(err) => {
            error!(offset, error = %err, "scheduled events: not a CloudEvent; dropping it");
            return Ok(());
        }
    };
    match ingest
        .publish_checked(&waiting.subject, vec![event], Undeclared::Accept)
        .await
    {
        Ok(_) => Ok(()),
        Err(IngestError::Broker(err)) => Err(err),
        Err(err) => {
            error!(offset, topic = %waiting.subject, error = %err, "scheduled events: its topic refuses it now; dropping it");
            Ok(())
        }
    }
}
