//! Topics: the registry read from `topics/*.toml`, the JSON Schema of each
//! event type, and the choice of partition. Knows nothing of brokers or HTTP.
//! The `[[webhooks]]` that feed a topic are [`webhook`]'s.

pub mod webhook;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use self::webhook::{RawWebhook, TypeRule, WebhookSpec};
use crate::event::CloudEvent;
use crate::problem::{ConfigProblem, Problems, Size, files};

/// Partitions of a topic that declares none.
pub const DEFAULT_PARTITIONS: usize = 1;
/// The most partitions a topic may declare.
pub const MAX_PARTITIONS: usize = 1024;
/// Default size at which the embedded log starts a new segment.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// The smallest segment a topic may ask for.
pub const MIN_SEGMENT_BYTES: u64 = 1024;
/// Longest topic name.
pub const MAX_NAME_BYTES: usize = 200;
/// How long a topic remembers the events published to it, to store a
/// retried publish once (CloudEvents: `source` + `id` name an event).
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The retention a bad one is shown beside, as an example.
const RETENTION_EXAMPLE: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "default_partitions")]
    partitions: usize,
    key: Option<String>,
    retention: Option<String>,
    retention_bytes: Option<Size>,
    segment_bytes: Option<Size>,
    dedupe_window: Option<String>,
    /// Takes scheduled events (a `deliverat` time, or `?delay=`).
    #[serde(default)]
    schedule: bool,
    #[serde(default)]
    types: BTreeMap<String, RawEventType>,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
    #[serde(default)]
    groups: Vec<RawGroup>,
}

/// A `[[groups]]` table: a shared consumer group's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    max_deliveries: Option<u32>,
    dead_letters: Option<String>,
    filter: Option<String>,
}

/// A shared consumer group declared in its topic's file.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// Events delivered this often without an ack go to a dead-letter
    /// topic (and are acked). Groups without one have no limit.
    pub limit: Option<DeliveryLimit>,
    /// Only the events this CEL expression is true of are delivered; the
    /// others count as settled. Declared here, it holds across restarts.
    pub filter: Option<crate::event::Expr>,
}

/// `max_deliveries` and `dead_letters` of a declared group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryLimit {
    pub max_deliveries: u32,
    pub dead_letters: String,
}

fn default_partitions() -> usize {
    DEFAULT_PARTITIONS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEventType {
    schema: RawSchema,
    #[serde(default)]
    description: String,
}

/// A JSON Schema: a file (relative to the topics directory) in a topic
/// file, or the schema itself in a topic defined over the API.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSchema {
    File(String),
    Inline(Value),
}

/// How long and how much a topic keeps. Whole segments are removed, so a
/// partition may briefly hold up to one segment more than the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

pub struct EventType {
    pub description: String,
    /// The schema file, relative to the topics directory.
    pub schema_file: String,
    pub schema: Value,
    validator: jsonschema::Validator,
}

pub struct Topic {
    pub name: String,
    pub description: String,
    pub partitions: usize,
    /// JSON pointer into the event that names the partition key.
    pub key: Option<String>,
    pub retention: Retention,
    pub segment_bytes: u64,
    /// How long a published event's `source` + `id` is remembered: a second
    /// publish of the pair within it appends nothing (zero: off).
    pub dedupe_window: Duration,
    /// Whether events may be published for later (`deliverat`): they wait
    /// in [`SCHEDULE_TOPIC`] until due.
    pub schedule: bool,
    pub types: BTreeMap<String, EventType>,
    /// Webhooks that feed this topic.
    pub webhooks: Vec<WebhookSpec>,
    /// Shared consumer groups with settings, by name.
    pub groups: BTreeMap<String, GroupSpec>,
    /// Where it was declared.
    pub origin: Origin,
}

/// Where a topic was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A file in `topics/` (read-only over the API; `SIGHUP` reloads it).
    File,
    /// `PUT /v1/topics/{name}`, stored in [`CATALOG_TOPIC`].
    Api,
    /// Switchyard's own ([`SCHEDULE_TOPIC`], [`CATALOG_TOPIC`]): not
    /// listed, not published to by clients.
    Switchyard,
}

/// Why an event does not fit its topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {topic:?} does not accept event type {ty:?} (accepted: {})", accepted.join(", "))]
    UnknownType {
        topic: String,
        ty: String,
        accepted: Vec<String>,
    },
    #[error("data at {pointer:?} violates the schema of {ty:?} ({keyword}): {message}")]
    SchemaViolation {
        ty: String,
        pointer: String,
        keyword: String,
        message: String,
    },
    #[error(
        "event type {ty:?} has a JSON schema, so its data must be JSON; it came as bytes (a binary-mode body under a non-JSON Content-Type, or data_base64)"
    )]
    DataNotJson { ty: String },
}

impl Topic {
    /// Checks that the topic accepts the event's type and that its data
    /// satisfies the type's schema.
    pub fn validate(&self, event: &CloudEvent) -> Result<(), TopicError> {
        let Some(event_type) = self.types.get(&event.ty) else {
            return Err(TopicError::UnknownType {
                topic: self.name.clone(),
                ty: event.ty.clone(),
                accepted: self.types.keys().cloned().collect(),
            });
        };
        let data = event.json_data().ok_or_else(|| TopicError::DataNotJson {
            ty: event.ty.clone(),
        })?;
        if let Some(error) = event_type.validator.iter_errors(data).next() {
            return Err(TopicError::SchemaViolation {
                ty: event.ty.clone(),
                pointer: format!("/data{}", error.instance_path().as_str()),
                keyword: error.kind().keyword().to_owned(),
                message: error.to_string(),
            });
        }
        Ok(())
    }

    /// The partition an event goes to: the hash of its key (Kafka's murmur2,
    /// so keyed events land where a Kafka producer would put them), else the
    /// hash of its identity (`source` + `id`).
    pub fn partition_for(&self, key: Option<&str>, identity: &str) -> usize {
        if self.partitions == 1 {
            return 0;
        }
        // Without a key, the identity spreads events as evenly, and sends
        // a retried publish where the first one landed (NATS dedupes per
        // stream, and so per partition).
        let hashed = key.unwrap_or(identity);
        (murmur2(hashed.as_bytes()) & 0x7fff_ffff) as usize % self.partitions
    }

    /// The event's partition key: the topic's key pointer, else the
    /// `partitionkey` extension, else the subject.
    pub fn key_of(&self, event_json: &Value) -> Option<String> {
        let pointers = self
            .key
            .as_deref()
            .into_iter()
            .chain(["/partitionkey", "/subject"]);
        pointers
            .filter_map(|pointer| match event_json.pointer(pointer) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(Value::Bool(b)) => Some(b.to_string()),
                _ => None,
            })
            .next()
    }
}

/// Kafka's murmur2 (the default partitioner's hash), seed 0x9747b28c.
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Whether `name` is a valid topic name: `[a-z0-9][a-z0-9.-]*`.
pub fn is_valid_topic_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.len() <= MAX_NAME_BYTES
}

/// All topics, by name: one registry shared by every clone, so a topic
/// added at run time (or by a reload) is seen everywhere at once.
#[derive(Default, Clone)]
pub struct Topics {
    by_name: Arc<RwLock<BTreeMap<String, Arc<Topic>>>>,
}

impl Topics {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.by_name.read().expect("topics lock poisoned")
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read().get(name).cloned()
    }

    /// The topics as they are now, by name.
    pub fn iter(&self) -> std::vec::IntoIter<Arc<Topic>> {
        self.read()
            .values()
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Every webhook source of every topic.
    pub fn webhook_sources(&self) -> Vec<WebhookSpec> {
        self.iter()
            .flat_map(|topic| topic.webhooks.clone())
            .collect()
    }

    /// Adds `topic`, or replaces the one of its name.
    pub fn insert(&self, topic: Arc<Topic>) {
        let mut by_name = self.by_name.write().expect("topics lock poisoned");
        by_name.insert(topic.name.clone(), topic);
    }

    /// Removes the topic `name`.
    pub fn remove(&self, name: &str) -> Option<Arc<Topic>> {
        let mut by_name = self.by_name.write().expect("topics lock poisoned");
        by_name.remove(name)
    }

    /// Loads every `*.toml` in `dir`. Reports every problem found, not just
    /// the first, so `switchyard check` can list them all.
    pub fn load(dir: &Path) -> Result<Self, Vec<ConfigProblem>> {
        let mut problems = Problems::new(dir);
        let mut by_name = BTreeMap::new();
        let mut webhooks = std::collections::BTreeSet::new();
        let mut dead_letter_topics = Vec::new();
        for (file, raw) in files::read_dir(dir, "topics", false, &mut problems) {
            let Some(topic) = problems.take(resolve(Some(dir), &file, raw)) else {
                continue;
            };
            for webhook in &topic.webhooks {
                if !webhooks.insert(webhook.name.clone()) {
                    problems.push(ConfigProblem::new(
                        &file,
                        "webhooks",
                        format!("webhook source {:?} is declared twice", webhook.name),
                    ));
                }
            }
            for (name, group) in &topic.groups {
                if let Some(limit) = &group.limit {
                    dead_letter_topics.push((
                        file.clone(),
                        name.clone(),
                        limit.dead_letters.clone(),
                    ));
                }
            }
            if by_name.contains_key(&topic.name) {
                problems.push(ConfigProblem::new(
                    &file,
                    "name",
                    format!("topic {:?} is declared twice", topic.name),
                ));
            } else if topic.name.starts_with(RESERVED_PREFIX) {
                problems.push(ConfigProblem::new(
                    &file,
                    "name",
                    format!("names starting with {RESERVED_PREFIX:?} are Switchyard's own (scheduled events, topics defined over the API): pick another name"),
                ));
            } else {
                by_name.insert(topic.name.clone(), Arc::new(topic));
            }
        }
        if by_name.values().any(|t| t.schedule) {
            by_name.insert(SCHEDULE_TOPIC.to_owned(), Arc::new(schedule_topic()));
        }
        by_name.insert(CATALOG_TOPIC.to_owned(), Arc::new(catalog_topic()));
        for (file, group, topic) in dead_letter_topics {
            if !by_name.contains_key(&topic) {
                problems.push(ConfigProblem::new(
                    &file,
                    format!("groups.{group}.dead_letters"),
                    format!("no topic named {topic:?}"),
                ));
            }
        }
        problems.finish(Self {
            by_name: Arc::new(RwLock::new(by_name)),
        })
    }
}

/// Where scheduled events wait until they are due: Switchyard's own topic,
/// there when a topic has `schedule = true`. Clients may read it (what is
/// scheduled), not publish to it.
pub const SCHEDULE_TOPIC: &str = "switchyard.scheduled";
/// The type of an event in [`SCHEDULE_TOPIC`]: its data is the event to
/// publish, its subject the topic, its time the due time.
pub const SCHEDULED_TYPE: &str = "switchyard.scheduled";
/// How far ahead an event may be scheduled.
pub const MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where topics defined over the API are kept: a `switchyard.topic.defined`
/// event (data: the definition; subject: the name) or
/// `switchyard.topic.deleted` per change, the newest per name counting.
/// Every process reads it at start and follows it.
pub const CATALOG_TOPIC: &str = "switchyard.topics";
pub const TOPIC_DEFINED_TYPE: &str = "switchyard.topic.defined";
pub const TOPIC_DELETED_TYPE: &str = "switchyard.topic.deleted";
/// Topic names that are Switchyard's own.
pub const RESERVED_PREFIX: &str = "switchyard.";

/// One of Switchyard's own topics: one partition, events of `types` with
/// any object as data, kept for `retention` (`None`: for ever).
fn own_topic(
    name: &str,
    description: &str,
    types: &[(&str, &str)],
    retention: Option<Duration>,
) -> Topic {
    let types = types
        .iter()
        .map(|(ty, description)| {
            let schema = serde_json::json!({"type": "object"});
            let validator = jsonschema::draft202012::new(&schema).expect("a valid schema");
            let event_type = EventType {
                description: (*description).to_owned(),
                schema_file: String::new(),
                schema,
                validator,
            };
            ((*ty).to_owned(), event_type)
        })
        .collect();
    Topic {
        name: name.to_owned(),
        description: description.to_owned(),
        partitions: 1,
        key: None,
        retention: Retention {
            max_age: retention,
            max_bytes: None,
        },
        segment_bytes: DEFAULT_SEGMENT_BYTES,
        dedupe_window: DEFAULT_DEDUPE_WINDOW,
        schedule: false,
        types,
        webhooks: Vec::new(),
        groups: BTreeMap::new(),
        origin: Origin::Switchyard,
    }
}

fn schedule_topic() -> Topic {
    own_topic(
        SCHEDULE_TOPIC,
        "Scheduled events waiting for their due time (Switchyard's own)",
        &[(
            SCHEDULED_TYPE,
            "An event waiting for its due time: data is the event, subject its topic",
        )],
        // Kept a week past the longest schedule, so none is removed unmoved.
        Some(MAX_SCHEDULE_AHEAD + Duration::from_secs(7 * 24 * 3600)),
    )
}

fn catalog_topic() -> Topic {
    own_topic(
        CATALOG_TOPIC,
        "Topics defined over the API (Switchyard's own)",
        &[
            (
                TOPIC_DEFINED_TYPE,
                "A topic defined or redefined: data is the definition",
            ),
            (TOPIC_DELETED_TYPE, "A topic deleted: subject is its name"),
        ],
        None,
    )
}

impl Topic {
    /// A topic defined over the API (`PUT /v1/topics/{name}`): the topic
    /// file's content as JSON, schemas inline, checked exactly like a file;
    /// problems are named under `what` (the request).
    pub fn from_api(
        name: &str,
        mut definition: Value,
        what: &Path,
    ) -> Result<Topic, Vec<ConfigProblem>> {
        let problem = |key: &str, reason: String| vec![ConfigProblem::new(what, key, reason)];
        let Value::Object(fields) = &mut definition else {
            return Err(problem(
                "",
                "a topic definition is a JSON object".to_owned(),
            ));
        };
        match fields.get("name") {
            None => {
                fields.insert("name".to_owned(), Value::String(name.to_owned()));
            }
            Some(Value::String(given)) if given == name => {}
            Some(given) => {
                return Err(problem(
                    "name",
                    format!("{given} is not the name in the path ({name:?})"),
                ));
            }
        }
        let raw: RawTopic = serde_json::from_value(definition)
            .map_err(|err| problem("", crate::problem::files::plain(&err.to_string())))?;
        if !raw.webhooks.is_empty() {
            return Err(problem(
                "webhooks",
                "webhook sources are declared in topic files (their secrets come from the environment)".to_owned(),
            ));
        }
        if raw.name.starts_with(RESERVED_PREFIX) {
            return Err(problem(
                "name",
                format!("names starting with {RESERVED_PREFIX:?} are Switchyard's own"),
            ));
        }
        let mut topic = resolve(None, what, raw)?;
        topic.origin = Origin::Api;
        Ok(topic)
    }
}

/// Validates the topic read from `file` in `dir` (schema files are relative
/// to `dir`; without one, schemas must be inline).
fn resolve(dir: Option<&Path>, file: &Path, raw: RawTopic) -> Result<Topic, Vec<ConfigProblem>> {
    let mut problems = Problems::new(file);
    if !is_valid_topic_name(&raw.name) {
        problems.problem(
            "name",
            format!(
                "{:?} is not a topic name: use [a-z0-9][a-z0-9.-]*",
                raw.name
            ),
        );
    }
    if raw.partitions == 0 || raw.partitions > MAX_PARTITIONS {
        problems.problem(
            "partitions",
            format!(
                "must be between 1 and {MAX_PARTITIONS}, got {}",
                raw.partitions
            ),
        );
    }
    if let Some(key) = &raw.key
        && !key.starts_with('/')
    {
        problems.problem(
            "key",
            format!("{key:?} is not a JSON pointer (it must start with /)"),
        );
    }
    let max_age =
        problems.optional_duration("retention", raw.retention.as_deref(), RETENTION_EXAMPLE);
    let dedupe_window = match raw.dedupe_window.as_deref() {
        None => DEFAULT_DEDUPE_WINDOW,
        Some(text) => crate::problem::parse_duration(text, "24h")
            .map_err(|reason| problems.problem("dedupe_window", reason))
            .unwrap_or(DEFAULT_DEDUPE_WINDOW),
    };
    let segment_bytes = raw
        .segment_bytes
        .map_or(DEFAULT_SEGMENT_BYTES, |size| size.0);
    if segment_bytes < MIN_SEGMENT_BYTES {
        problems.problem(
            "segment_bytes",
            format!("must be at least {MIN_SEGMENT_BYTES} bytes, got {segment_bytes}"),
        );
    }
    if raw.types.is_empty() {
        problems.problem("types", "a topic must declare at least one event type");
    }
    let mut types = BTreeMap::new();
    for (name, raw_type) in raw.types {
        let key = format!("types.{name:?}.schema");
        let (schema, schema_file, shown) = match raw_type.schema {
            RawSchema::Inline(schema) => (schema, String::new(), "the schema".to_owned()),
            RawSchema::File(file) => {
                let Some(dir) = dir else {
                    problems.problem(
                        &key,
                        "give the JSON Schema itself (an object), not a file name",
                    );
                    continue;
                };
                let path = dir.join(&file);
                match std::fs::read(&path) {
                    Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                        Ok(schema) => (schema, file, path.display().to_string()),
                        Err(err) => {
                            problems.problem(
                                &key,
                                format!("{} is not valid JSON: {err}", path.display()),
                            );
                            continue;
                        }
                    },
                    Err(err) => {
                        problems.problem(&key, format!("cannot read {}: {err}", path.display()));
                        continue;
                    }
                }
            }
        };
        match jsonschema::draft202012::new(&schema) {
            Ok(validator) => {
                types.insert(
                    name,
                    EventType {
                        description: raw_type.description,
                        schema_file,
                        schema,
                        validator,
                    },
                );
            }
            Err(err) => problems.problem(
                &key,
                format!("{shown} is not a valid JSON Schema 2020-12: {err}"),
            ),
        }
    }
    let mut webhooks = Vec::new();
    for (index, raw_webhook) in raw.webhooks.into_iter().enumerate() {
        let Some(spec) = problems.take(raw_webhook.resolve(&raw.name, index, file)) else {
            continue;
        };
        if let TypeRule::Fixed(ty) = &spec.type_rule
            && !spec.accept_undeclared_types
            && !types.contains_key(ty)
        {
            problems.problem(
                &format!("webhooks[{index}].type"),
                format!("type {ty:?} is not declared in [types]"),
            );
        }
        webhooks.push(spec);
    }
    let mut groups = BTreeMap::new();
    for (index, group) in raw.groups.into_iter().enumerate() {
        let key = |field: &str| format!("groups[{index}].{field}");
        if !is_valid_group_name(&group.name) {
            problems.problem(
                &key("name"),
                format!(
                    "{:?} is not a group name: use 1 to 200 letters, digits, '.', '_' and '-', not starting with '.'",
                    group.name
                ),
            );
        }
        let limit = match (group.max_deliveries, group.dead_letters) {
            (Some(max_deliveries), Some(dead_letters)) => {
                if max_deliveries == 0 {
                    problems.problem(&key("max_deliveries"), "must be at least 1");
                }
                if dead_letters == raw.name {
                    problems.problem(
                        &key("dead_letters"),
                        "must be another topic (a dead letter would come back to the group)",
                    );
                }
                Some(DeliveryLimit {
                    max_deliveries,
                    dead_letters,
                })
            }
            (None, None) => None,
            (Some(_), None) => {
                problems.problem(
                    &key("dead_letters"),
                    "is required with max_deliveries (where the events go after their last delivery)",
                );
                None
            }
            (None, Some(_)) => {
                problems.problem(
                    &key("max_deliveries"),
                    "is required with dead_letters (how often an event is delivered before it goes there)",
                );
                None
            }
        };
        let filter = match group.filter.as_deref().map(crate::event::Expr::compile) {
            Some(Err(err)) => {
                problems.problem(&key("filter"), err.to_string());
                None
            }
            Some(Ok(expr)) => Some(expr),
            None => None,
        };
        let spec = GroupSpec { limit, filter };
        if groups.insert(group.name.clone(), spec).is_some() {
            problems.problem(
                &key("name"),
                format!("group {:?} is declared twice", group.name),
            );
        }
    }
    problems.finish(Topic {
        name: raw.name,
        description: raw.description,
        partitions: raw.partitions,
        key: raw.key,
        retention: Retention {
            max_age,
            max_bytes: raw.retention_bytes.map(|size| size.0),
        },
        segment_bytes,
        dedupe_window,
        schedule: raw.schedule,
        types,
        webhooks,
        groups,
        origin: Origin::File,
    })
}

/// The consumer group names brokers accept (as the broker checks them).
fn is_valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn topic_names() {
        for good in ["orders", "a", "github.push", "x-1.y"] {
            assert!(is_valid_topic_name(good), "{good}");
        }
        for bad in ["", "Orders", ".a", "-a", "a b", "a/b", "a_b"] {
            assert!(!is_valid_topic_name(bad), "{bad}");
        }
    }
}
