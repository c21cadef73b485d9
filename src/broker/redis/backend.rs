//! Redis Streams backend: one stream per topic partition
//! (`<prefix>:{<topic>}:<partition>`), one field `e` holding the structured
//! CloudEvent; group cursors in a hash (`<prefix>:groups:{<topic>}`).
//!
//! Positions: a stream id `ms-seq` is the offset `ms << 20 | seq`, so cursors
//! keep their "next offset per partition" form. Appends run as one Lua
//! script: it trims each stream's head to the topic's retention and records
//! the newest id it removed (`<prefix>:trimmed:{<topic>}`), so a cursor at or
//! below that id has lost events: expired. (Redis 7.0's own
//! `max-deleted-entry-id` does not count trimming.) The same script keeps
//! a topic's dedupe window: a key per stored identity
//! (`<prefix>:seen:{<topic>}:<partition>:<digest>`, expiring with the
//! window) holds the stream id it was stored at.
//!
//! Durability is Redis's: a 2xx means Redis accepted the event. Run Redis
//! with `appendonly yes` and `appendfsync always` for the embedded log's
//! promise; `everysec` may lose the last second on power loss.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncConnectionConfig, Value};
use tracing::warn;

use super::RedisConfig;
use crate::broker::identities::digest_hex;
use crate::broker::{
    Appended, Backend, BrokerError, ReadBatch, Record, Result, Retained, StoredEvent, check_cursor,
    merge,
};
use crate::cursor::{Cursor, GroupCursor, Place};
use crate::topic::Topics;

/// Bits of an offset that hold the sequence part of a stream id.
const SEQ_BITS: u32 = 20;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// How long one command may take before the broker counts as unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Appends one unit atomically, each event once within the topic's dedupe
/// window. KEYS[1]: the trimmed-ids hash; then per record, its stream and
/// its dedupe key. ARGV[1]: the retention cutoff id, or ""; ARGV[2]: the
/// dedupe window in ms; then per record, "1" when it is deduped, and its
/// payload. Answers per record its stream id and 1 when it was a duplicate
/// (the id is then the one stored first). Exact trimming (not `~`):
/// approximate trimming keeps whole radix nodes and so would keep expired
/// events.
static APPEND: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local answers = {}
for i = 1, (#KEYS - 1) / 2 do
  local key, seen_key = KEYS[2 * i], KEYS[2 * i + 1]
  local dedupe, payload = ARGV[1 + 2 * i] == '1', ARGV[2 + 2 * i]
  local seen = dedupe and redis.call('GET', seen_key)
  if seen then
    answers[#answers + 1] = {seen, 1}
  else
    if ARGV[1] ~= '' then
      local old = redis.call('XREVRANGE', key, '(' .. ARGV[1], '-', 'COUNT', 1)
      if #old > 0 then
        redis.call('HSET', KEYS[1], key, old[1][1])
        redis.call('XTRIM', key, 'MINID', ARGV[1])
      end
    end
    local id = redis.call('XADD', key, '*', 'e', payload)
    if dedupe then
      redis.call('SET', seen_key, id, 'PX', ARGV[2])
    end
    answers[#answers + 1] = {id, 0}
  end
end
return answers
",
    )
});

/// Merges some partitions' next offsets into a group's stored cursor.
/// KEYS[1]: the groups hash. ARGV[1]: the group; ARGV[2]: the topic's
/// partitions; ARGV[3..]: partition, offset pairs.
static COMMIT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local next = {}
for i = 1, tonumber(ARGV[2]) do next[i] = '0' end
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored then
  local i = 1
  for part in string.gmatch(stored, '[^.]+') do next[i] = part; i = i + 1 end
end
for j = 3, #ARGV, 2 do next[tonumber(ARGV[j]) + 1] = ARGV[j + 1] end
redis.call('HSET', KEYS[1], ARGV[1], table.concat(next, '.'))
",
    )
});

/// Leases: a hash per scope, item → `<until ms> <holder>`, timed by the
/// Redis server's clock (so the processes' clocks need not agree).
/// KEYS[1]: the scope's hash. ARGV[1]: item; ARGV[2]: holder; ARGV[3]:
/// ttl in ms. Returns 1 when the holder has the lease.
static LEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held then
  local sep = string.find(held, ' ', 1, true)
  if string.sub(held, sep + 1) ~= ARGV[2] and tonumber(string.sub(held, 1, sep - 1)) > now then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now + tonumber(ARGV[3])) .. ' ' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], 86400000)
return 1
",
    )
});

/// KEYS[1]: the scope's hash; ARGV[1]: item; ARGV[2]: holder.
static RELEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and string.sub(held, string.find(held, ' ', 1, true) + 1) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
",
    )
});

/// KEYS[1]: the scope's hash. Drops lapsed leases; returns the live ones
/// as item, holder, item, holder…
static LEASES: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local sep = string.find(all[i + 1], ' ', 1, true)
  if tonumber(string.sub(all[i + 1], 1, sep - 1)) > now then
    live[#live + 1] = all[i]
    live[#live + 1] = string.sub(all[i + 1], sep + 1)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return live
",
    )
});

#[derive(Clone, Copy)]
struct TopicInfo {
    partitions: usize,
    max_age: Option<Duration>,
    dedupe_window: Duration,
}

pub struct RedisBroker {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    /// Topics by name; one may be added at run time.
    topics: std::sync::RwLock<HashMap<String, TopicInfo>>,
}

/// A stream's bounds, from `XINFO STREAM`.
#[derive(Debug, Default, Clone, Copy)]
struct Bounds {
    /// Offset of the oldest entry still there, if any.
    first: Option<u64>,
    /// Offset after the newest entry ever added.
    end: u64,
    /// Offsets at or below this were trimmed.
    max_deleted: Option<u64>,
}

fn unavailable(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BrokerError {
    BrokerError::unavailable_from("the Redis request failed", err)
}

/// `ms-seq` → offset.
fn encode(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq) = (ms.parse::<u64>().ok()?, seq.parse::<u64>().ok()?);
    (seq <= SEQ_MASK && ms < (1 << (64 - SEQ_BITS))).then_some(ms << SEQ_BITS | seq)
}

/// offset → `ms-seq`.
fn decode(offset: u64) -> String {
    format!("{}-{}", offset >> SEQ_BITS, offset & SEQ_MASK)
}

impl RedisBroker {
    fn topic(&self, topic: &str) -> Result<TopicInfo> {
        self.topics
            .read()
            .expect("topics lock poisoned")
            .get(topic)
            .copied()
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))
    }

    /// The hash of the newest id trimmed from each stream.
    fn trimmed_key(&self, topic: &str) -> String {
        format!("{}:trimmed:{{{topic}}}", self.prefix)
    }

    fn key(&self, topic: &str, partition: usize) -> String {
        // The braces keep a topic's streams in one Redis Cluster slot.
        format!("{}:{{{topic}}}:{partition}", self.prefix)
    }

    async fn bounds(&self, topic: &str) -> Result<Vec<Bounds>> {
        let info = self.topic(topic)?;
        let mut pipe = redis::pipe();
        for partition in 0..info.partitions {
            pipe.cmd("EXISTS").arg(self.key(topic, partition));
        }
        let exists: Vec<bool> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let mut bounds = vec![Bounds::default(); info.partitions];
        let mut pipe = redis::pipe();
        let present: Vec<usize> = (0..info.partitions).filter(|&p| exists[p]).collect();
        if present.is_empty() {
            return Ok(bounds);
        }
        for &partition in &present {
            pipe.cmd("XINFO")
                .arg("STREAM")
                .arg(self.key(topic, partition));
        }
        let keys: Vec<String> = present.iter().map(|&p| self.key(topic, p)).collect();
        pipe.cmd("HMGET").arg(self.trimmed_key(topic)).arg(&keys);
        let mut replies: Vec<Value> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let trimmed: Vec<Option<String>> = match replies.pop() {
            Some(reply) => redis::from_redis_value(reply).map_err(unavailable)?,
            None => Vec::new(),
        };
        for ((partition, reply), trimmed) in present.into_iter().zip(replies).zip(trimmed) {
            bounds[partition] = parse_bounds(reply);
            bounds[partition].max_deleted = trimmed.as_deref().and_then(encode);
        }
        Ok(bounds)
    }

    fn groups_key(&self, topic: &str) -> String {
        format!("{}:groups:{{{topic}}}", self.prefix)
    }

    fn lease_key(&self, scope: &str) -> String {
        format!("{}:leases:{scope}", self.prefix)
    }
}

impl Backend for RedisBroker {
    type Config = RedisConfig;
    const KIND: &'static str = "redis";
    const LOCAL_POSITIONS: bool = false;
    const DENSE_OFFSETS: bool = false;

    async fn open(config: RedisConfig, topics: &Topics) -> Result<Self> {
        let client = redis::Client::open(config.url.as_str()).map_err(unavailable)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = client
            .get_connection_manager_with_config(manager_config)
            .await
            .map_err(unavailable)?;
        let broker = Self {
            client,
            conn,
            prefix: config.prefix,
            topics: Default::default(),
        };
        for topic in topics.iter() {
            broker.add_topic(&topic).await?;
        }
        Ok(broker)
    }

    /// Streams are created by their first append: only the settings.
    async fn add_topic(&self, topic: &std::sync::Arc<crate::topic::Topic>) -> Result<()> {
        if topic.retention.max_bytes.is_some() {
            warn!(topic = %topic.name, "retention_bytes is not supported on Redis; only the age limit applies");
        }
        let info = TopicInfo {
            partitions: topic.partitions,
            max_age: topic.retention.max_age,
            dedupe_window: topic.dedupe_window,
        };
        let mut topics = self.topics.write().expect("topics lock poisoned");
        topics.entry(topic.name.clone()).or_insert(info);
        Ok(())
    }

    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Appended>> {
        let info = self.topic(topic)?;
        let min_id = info.max_age.map(|age| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            format!("{}-0", now.saturating_sub(age).as_millis())
        });
        let mut invocation = APPEND.prepare_invoke();
        invocation.key(self.trimmed_key(topic));
        invocation.arg(min_id.unwrap_or_default());
        invocation.arg(info.dedupe_window.as_millis() as u64);
        for record in &records {
            let dedupe = !info.dedupe_window.is_zero() && !record.identity.is_empty();
            invocation.key(self.key(topic, record.partition));
            // Per partition: a retry lands where the first one did.
            invocation.key(format!(
                "{}:seen:{{{topic}}}:{}:{}",
                self.prefix,
                record.partition,
                digest_hex(&record.identity)
            ));
            invocation.arg(if dedupe { "1" } else { "0" });
            invocation.arg(record.payload.as_ref());
        }
        let answers: Vec<(String, u8)> = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        records
            .iter()
            .zip(answers)
            .map(|(record, (id, duplicate))| {
                let offset =
                    encode(&id).ok_or_else(|| unavailable(format!("unexpected stream id {id}")))?;
                Ok(Appended {
                    partition: record.partition,
                    offset,
                    duplicate: duplicate == 1,
                })
            })
            .collect()
    }

    fn partitions(&self, topic: &str) -> Result<usize> {
        Ok(self.topic(topic)?.partitions)
    }

    async fn retained(&self, topic: &str) -> Result<Vec<Retained>> {
        let bounds = self.bounds(topic).await?;
        Ok(bounds
            .iter()
            .map(|b| Retained {
                lost_below: b.max_deleted.map_or(0, |deleted| deleted + 1),
                oldest: b.first.unwrap_or(b.end),
                end: b.end,
            })
            .collect())
    }

    async fn read(
        &self,
        topic: &str,
        from: &Cursor,
        only: Option<&[bool]>,
        max: usize,
        wait: Duration,
    ) -> Result<ReadBatch> {
        let info = self.topic(topic)?;
        let retained = self.retained(topic).await?;
        check_cursor(from, &retained)?;
        let read: Vec<usize> = (0..info.partitions)
            .filter(|&p| only.is_none_or(|only| only[p]))
            .collect();
        if read.is_empty() {
            tokio::time::sleep(wait).await;
            return Ok(merge(from, Vec::new(), max));
        }
        let keys: Vec<String> = read.iter().map(|&p| self.key(topic, p)).collect();
        // XREAD returns entries after an id: the one just before `next`.
        let after: Vec<String> = read
            .iter()
            .map(|&p| from.next(p))
            .map(|next| {
                if next == 0 {
                    "0-0".to_owned()
                } else {
                    decode(next - 1)
                }
            })
            .collect();
        let mut options = StreamReadOptions::default().count(max);
        let reply: Option<StreamReadReply> = if wait.is_zero() {
            redis::AsyncCommands::xread_options(&mut self.conn.clone(), &keys, &after, &options)
                .await
                .map_err(unavailable)?
        } else {
            // A blocking read holds its connection: give it its own.
            options = options.block(wait.as_millis() as usize);
            let config = AsyncConnectionConfig::new()
                .set_response_timeout(Some(wait + RESPONSE_TIMEOUT))
                .set_connection_timeout(Some(CONNECT_TIMEOUT));
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(unavailable)?;
            redis::AsyncCommands::xread_options(&mut conn, &keys, &after, &options)
                .await
                .map_err(unavailable)?
        };
        let mut events = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(partition) = keys.iter().position(|k| *k == stream.key).map(|i| read[i])
            else {
                continue;
            };
            for entry in stream.ids {
                let Some(offset) = encode(&entry.id) else {
                    continue;
                };
                let payload = match entry.map.get("e") {
                    Some(Value::BulkString(bytes)) => Bytes::from(bytes.clone()),
                    _ => {
                        return Err(BrokerError::Corrupt(format!(
                            "stream entry {} has no event",
                            entry.id
                        )));
                    }
                };
                events.push(StoredEvent {
                    partition,
                    offset,
                    timestamp_ms: (offset >> SEQ_BITS) as i64,
                    payload,
                });
            }
        }
        Ok(merge(from, events, max))
    }

    async fn commit(&self, topic: &str, group: &str, places: &[(usize, Place)]) -> Result<()> {
        let partitions = self.topic(topic)?.partitions;
        let mut invocation = COMMIT.key(self.groups_key(topic));
        invocation.arg(group).arg(partitions);
        for (partition, place) in places {
            invocation.arg(*partition).arg(place.to_string());
        }
        invocation
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn lease(&self, scope: &str, item: &str, holder: &str, ttl: Duration) -> Result<bool> {
        LEASE
            .key(self.lease_key(scope))
            .arg(item)
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map(|taken| taken == 1)
            .map_err(unavailable)
    }

    async fn release(&self, scope: &str, item: &str, holder: &str) -> Result<()> {
        RELEASE
            .key(self.lease_key(scope))
            .arg(item)
            .arg(holder)
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn leases(&self, scope: &str) -> Result<Vec<(String, String)>> {
        let flat: Vec<String> = LEASES
            .key(self.lease_key(scope))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let mut pairs: Vec<(String, String)> = flat
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect();
        pairs.sort();
        Ok(pairs)
    }

    async fn committed(&self, topic: &str, group: &str) -> Result<Option<GroupCursor>> {
        let partitions = self.topic(topic)?.partitions;
        let text: Option<String> = redis::cmd("HGET")
            .arg(self.groups_key(topic))
            .arg(group)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        text.map(|t| {
            GroupCursor::parse_for(&t, partitions)
                .map_err(|e| BrokerError::Corrupt(format!("group cursor: {e}")))
        })
        .transpose()
    }

    async fn groups(&self, topic: &str) -> Result<Vec<String>> {
        self.topic(topic)?;
        redis::cmd("HKEYS")
            .arg(self.groups_key(topic))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn delete_group(&self, topic: &str, group: &str) -> Result<bool> {
        self.topic(topic)?;
        redis::cmd("HDEL")
            .arg(self.groups_key(topic))
            .arg(group)
            .query_async::<i64>(&mut self.conn.clone())
            .await
            .map(|removed| removed > 0)
            .map_err(unavailable)
    }

    async fn health(&self) -> Result<()> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn.clone())
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

/// Reads first entry, last generated id and max deleted id from an
/// `XINFO STREAM` reply (a flat key/value array in RESP2, a map in RESP3).
fn parse_bounds(reply: Value) -> Bounds {
    let pairs: Vec<(String, Value)> = match reply {
        Value::Array(items) => items
            .chunks_exact(2)
            .filter_map(|pair| match &pair[0] {
                Value::BulkString(k) => {
                    Some((String::from_utf8_lossy(k).into_owned(), pair[1].clone()))
                }
                Value::SimpleString(k) => Some((k.clone(), pair[1].clone())),
                _ => None,
            })
            .collect(),
        Value::Map(items) => items
            .into_iter()
            .filter_map(|(k, v)| match k {
                Value::BulkString(k) => Some((String::from_utf8_lossy(&k).into_owned(), v)),
                Value::SimpleString(k) => Some((k, v)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let text = |value: &Value| match value {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut bounds = Bounds::default();
    for (key, value) in pairs {
        match key.as_str() {
            "last-generated-id" => {
                bounds.end = text(&value).and_then(|id| encode(&id)).map_or(0, |o| o + 1)
            }
            "first-entry" => {
                if let Value::Array(entry) = value {
                    bounds.first = entry.first().and_then(text).and_then(|id| encode(&id));
                }
            }
            _ => {}
        }
    }
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_offsets_round_trip() {
        for id in ["0-0", "0-1", "1795318477645-0", "1795318477645-1048575"] {
            assert_eq!(decode(encode(id).unwrap()), id);
        }
        assert!(encode("1-1048576").is_none(), "sequence out of range");
        assert!(encode("x").is_none());
        assert!(encode("1-2") < encode("2-0"));
    }
}
