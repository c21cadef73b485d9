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
//! one broker, the one that owns the schedule topic's partition in that
//! group (`crate::broker::membership`, Kafka's own group on Kafka) moves
//! them.
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

use crate::broker::membership::{Change, Membership};
use crate::broker::{Broker, BrokerError};
use crate::cursor::Cursor;
use crate::event::CloudEvent;
use crate::ingest::{Ingest, IngestError, Undeclared};
use crate::topic::SCHEDULE_TOPIC;

/// The schedule topic's consumer group: its committed cursor is the oldest
/// waiting event not moved yet.
pub const GROUP: &str = "switchyard.scheduler";
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
    session: Duration,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        let ingest = &ingest;
        loop {
            let joined = Membership::join(Arc::clone(&broker), SCHEDULE_TOPIC, GROUP, session);
            let (membership, mut changes) = tokio::select! {
                _ = shutdown.cancelled() => return,
                joined = joined => match joined {
                    Ok(joined) => joined,
                    Err(err) => {
                        warn!(error = %err.detail(), "scheduled events: cannot join the scheduler group; retrying");
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                },
            };
            // The mover runs while this process owns the schedule topic's
            // one partition.
            let mut mover: Option<(CancellationToken, tokio::task::JoinHandle<()>)> = None;
            let stop_mover = async |mover: &mut Option<(CancellationToken, tokio::task::JoinHandle<()>)>| {
                if let Some((stop, task)) = mover.take() {
                    stop.cancel();
                    let _ = task.await;
                }
            };
            loop {
                let change = tokio::select! {
                    _ = shutdown.cancelled() => None,
                    change = changes.recv() => change,
                };
                match change {
                    Some(Change::Gained(partitions)) if partitions.contains(&0) => {
                        stop_mover(&mut mover).await;
                        let stop = shutdown.child_token();
                        let task = tokio::spawn({
                            let (broker, ingest, stop) = (Arc::clone(&broker), Arc::clone(ingest), stop.clone());
                            async move { keep_moving(&broker, &ingest, &stop).await }
                        });
                        mover = Some((stop, task));
                    }
                    Some(Change::Gained(_)) => {}
                    Some(Change::Give { done, .. }) => {
                        stop_mover(&mut mover).await;
                        let _ = done.send(());
                    }
                    Some(Change::Lost(_)) => stop_mover(&mut mover).await,
                    None => {
                        stop_mover(&mut mover).await;
                        break;
                    }
                }
            }
            membership.leave().await;
            if shutdown.is_cancelled() {
                return;
            }
        }
    });
}

/// Moves due events until `stop`, starting over after a broker error.
async fn keep_moving(broker: &Broker, ingest: &Ingest, stop: &CancellationToken) {
    while !stop.is_cancelled() {
        if let Err(err) = move_due(broker, ingest, stop).await {
            warn!(error = %err.detail(), "scheduled events: starting over");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }
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
/// event when due; returns at `stop` (this process no longer owns the
/// schedule, or shuts down) or on a broker error.
async fn move_due(
    broker: &Broker,
    ingest: &Ingest,
    stop: &CancellationToken,
) -> Result<(), BrokerError> {
    let mut read_to = broker
        .committed_or_start(SCHEDULE_TOPIC, GROUP, true)
        .await?
        .cursor();
    let mut committed = read_to.clone();
    // (due, offset), and the offsets alone (the oldest is the commit).
    let mut by_due: BTreeMap<(i64, u64), ()> = BTreeMap::new();
    let mut offsets: BTreeSet<u64> = BTreeSet::new();
    info!("scheduled events: this process moves them to their topics when due");
    loop {
        if stop.is_cancelled() {
            return Ok(());
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
