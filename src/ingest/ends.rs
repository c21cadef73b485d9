//! Where each partition of a topic ends, as far as this process knows: the
//! base of the positions that publishes answer with.
//!
//! A position names the other partitions as they were before the append;
//! any value at or below their true ends keeps the promise (resuming may
//! repeat an event, never skip one). The embedded log knows its ends for
//! free, so it is asked every time. An external broker costs a round trip
//! per partition (Kafka: a ListOffsets each), so there the ends come from
//! this process's own appends and a `latest` at most every `REFRESH`: a
//! position may then lag events that other Switchyard instances published
//! in the last second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::broker::{Appended, Broker, BrokerError};
use crate::cursor::Cursor;

/// Oldest view of an external broker's ends a position is built on.
const REFRESH: Duration = Duration::from_secs(1);

pub struct KnownEnds {
    broker: Arc<Broker>,
    topics: Mutex<HashMap<String, Known>>,
}

struct Known {
    ends: Cursor,
    refreshed: Instant,
    refreshing: bool,
}

impl KnownEnds {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self {
            broker,
            topics: Mutex::new(HashMap::new()),
        }
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.topics.lock().expect("known ends lock poisoned")
    }

    /// Ends at or below the true ones, to build positions on.
    pub async fn before_append(&self, topic: &str) -> Result<Cursor, BrokerError> {
        if self.broker.latest_is_cheap() {
            return self.broker.latest(topic).await;
        }
        if let Some(known) = self.topics().get_mut(topic) {
            // Fresh enough, or another publish is already asking.
            if known.refreshing || known.refreshed.elapsed() < REFRESH {
                return Ok(known.ends.clone());
            }
            known.refreshing = true;
        }
        let latest = self.broker.latest(topic).await;
        let mut topics = self.topics();
        if let Some(known) = topics.get_mut(topic) {
            known.refreshing = false;
        }
        let latest = latest?;
        let known = topics.entry(topic.to_owned()).or_insert_with(|| Known {
            ends: latest.clone(),
            refreshed: Instant::now(),
            refreshing: false,
        });
        known.ends = Cursor::new(
            known
                .ends
                .offsets()
                .iter()
                .zip(latest.offsets())
                .map(|(&known, &latest)| known.max(latest))
                .collect(),
        );
        known.refreshed = Instant::now();
        Ok(known.ends.clone())
    }

    /// Records where this process's own appends landed.
    pub fn appended(&self, topic: &str, appended: &[Appended]) {
        if let Some(known) = self.topics().get_mut(topic) {
            for at in appended {
                if known.ends.next(at.partition) <= at.offset {
                    known.ends.advance(at.partition, at.offset);
                }
            }
        }
    }
}
