//! The tools: each is an HTTP API operation under another name, with the
//! same validation and errors (a tool error carries the HTTP API's
//! `{"error": {...}}` body) and the same cursors.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rmcp::model::{CallToolResult, JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use super::super::{ApiError, ApiResult, AppState};
use crate::event::{CloudEvent, Filter};

/// Events a `read_events` call returns when `limit` is not given, and the
/// most it may ask for (as pages).
const DEFAULT_READ_LIMIT: usize = 100;
const MAX_READ_LIMIT: usize = 1000;
/// The longest `wait_ms` of a `read_events` long poll.
const MAX_READ_WAIT: Duration = Duration::from_secs(30);
/// What `next_poll_ms` suggests when an agent has read everything.
const IDLE_POLL_MS: u64 = 1000;

/// What a tool answers: its JSON, or an HTTP handler's answer (turned
/// into the tool result by [`tool_result`]).
pub(super) enum Answer {
    Json(Value),
    Http(Response),
}

/// One tool call: the tool's arguments and the request's `_meta`. The
/// caller's access was checked before ([`super::wants`]).
pub(super) struct Call<'a> {
    pub state: &'a Arc<AppState>,
    /// Who calls: `list_topics` shows only what they may see.
    pub access: &'a crate::auth::Access,
    pub arguments: JsonObject,
    /// W3C trace context from the request's `_meta`, for published events.
    pub traceparent: Option<String>,
}

impl Call<'_> {
    pub async fn run(self, tool: &str) -> ApiResult<Answer> {
        let state = Arc::clone(self.state);
        match tool {
            "list_topics" => {
                self.only(&[])?;
                Ok(Answer::Json(
                    super::super::topics_json(&state, self.access).0,
                ))
            }
            "describe_topic" => {
                self.only(&["topic"])?;
                Ok(Answer::Json(
                    super::resources::describe(&state, &self.topic()?).await?,
                ))
            }
            "publish_event" => self.publish_event().await.map(Answer::Json),
            "read_events" => self.read_events().await.map(Answer::Json),
            "get_event" => {
                self.only(&["topic", "id", "after"])?;
                let (topic, id) = (self.topic()?, self.required("id")?);
                let after = self.string("after")?;
                Ok(Answer::Json(
                    super::resources::find_event(&state, &topic, &id, after.as_deref()).await?,
                ))
            }
            "receive" => {
                let (topic, group) =
                    self.group(&["member", "max", "lease", "wait", "start", "filter"])?;
                let query = serde_json::from_value(self.rest(&["topic", "group"]))
                    .map_err(|err| ApiError::bad_request("invalid_arguments", err.to_string()))?;
                super::super::groups::receive(State(state), Path((topic, group)), Ok(Query(query)))
                    .await
                    .map(Answer::Http)
            }
            "ack" | "nack" | "extend" => {
                let extra = match tool {
                    "nack" => &["receipts", "delay"][..],
                    "extend" => &["receipts", "lease"][..],
                    _ => &["receipts"][..],
                };
                let (topic, group) = self.group(extra)?;
                let body = Bytes::from(self.rest(&["topic", "group"]).to_string());
                let path = Path((topic, group));
                Ok(Answer::Http(match tool {
                    "ack" => super::super::groups::ack(State(state), path, body)
                        .await
                        .into_response(),
                    "nack" => super::super::groups::nack(State(state), path, body)
                        .await
                        .into_response(),
                    _ => super::super::groups::extend(State(state), path, body)
                        .await
                        .into_response(),
                }))
            }
            "group_status" => {
                let (topic, group) = self.group(&[])?;
                Ok(Answer::Http(
                    super::super::groups::status(State(state), Path((topic, group)))
                        .await
                        .into_response(),
                ))
            }
            "handler_status" => {
                self.only(&["handler"])?;
                let mut status = state.handlers.status().await;
                if let Some(name) = self.string("handler")? {
                    let handlers = status["handlers"].as_array_mut();
                    let found = handlers
                        .and_then(|list| list.iter().find(|h| h["name"] == name.as_str()).cloned());
                    let found = found.ok_or_else(|| {
                        ApiError::new(
                            axum::http::StatusCode::NOT_FOUND,
                            "unknown_handler",
                            format!("no handler named {name:?}"),
                        )
                        .with("handler", name.as_str())
                    })?;
                    status = json!({ "handlers": [found] });
                }
                Ok(Answer::Json(status))
            }
            "replay_dead_letters" => {
                self.only(&["handler", "ids", "from", "to"])?;
                let name = self.required("handler")?;
                let body = Bytes::from(self.rest(&["handler"]).to_string());
                Ok(Answer::Http(
                    super::super::handlers::replay(State(state), Path(name), body)
                        .await
                        .into_response(),
                ))
            }
            other => Err(ApiError::bad_request(
                "unknown_tool",
                format!("no tool {other:?}"),
            )),
        }
    }

    /// Refuses arguments the tool does not take.
    fn only(&self, allowed: &[&str]) -> ApiResult<()> {
        match self
            .arguments
            .keys()
            .find(|k| !allowed.contains(&k.as_str()))
        {
            Some(unknown) => Err(ApiError::bad_request(
                "invalid_arguments",
                format!(
                    "unknown argument {unknown:?} (this tool takes: {})",
                    allowed.join(", ")
                ),
            )
            .with("argument", unknown.as_str())),
            None => Ok(()),
        }
    }

    fn string(&self, name: &str) -> ApiResult<Option<String>> {
        match self.arguments.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(ApiError::bad_request(
                "invalid_arguments",
                format!("argument {name:?} must be a string"),
            )
            .with("argument", name)),
        }
    }

    fn required(&self, name: &str) -> ApiResult<String> {
        self.string(name)?.filter(|s| !s.is_empty()).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_arguments",
                format!("argument {name:?} is required"),
            )
            .with("argument", name)
        })
    }

    fn topic(&self) -> ApiResult<String> {
        self.required("topic")
    }

    /// `topic` and `group` of a queue tool (besides `extra` arguments).
    fn group(&self, extra: &[&str]) -> ApiResult<(String, String)> {
        let mut allowed = vec!["topic", "group"];
        allowed.extend_from_slice(extra);
        self.only(&allowed)?;
        Ok((self.topic()?, self.required("group")?))
    }

    /// The arguments without `taken`, as one JSON object.
    fn rest(&self, taken: &[&str]) -> Value {
        let rest: JsonObject = self
            .arguments
            .iter()
            .filter(|(k, _)| !taken.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Value::Object(rest)
    }

    async fn publish_event(self) -> ApiResult<Value> {
        self.only(&["topic", "type", "data", "subject", "id", "key"])?;
        let topic = self.topic()?;
        super::super::publishable(self.state, &topic)?;
        let ty = self.required("type")?;
        let Some(data) = self.arguments.get("data").cloned() else {
            return Err(ApiError::bad_request(
                "invalid_arguments",
                "argument \"data\" is required (the event's JSON payload)",
            )
            .with("argument", "data"));
        };
        let mut event = CloudEvent::wrap(format!("/topics/{topic}"), ty, data);
        event.subject = self.string("subject")?.filter(|s| !s.is_empty());
        if let Some(id) = self.string("id")?.filter(|s| !s.is_empty()) {
            event.id = id;
        }
        if let Some(key) = self.string("key")?.filter(|s| !s.is_empty()) {
            event.extensions.insert("partitionkey".into(), key.into());
        }
        if let Some(traceparent) = self.traceparent {
            event
                .extensions
                .insert("traceparent".into(), traceparent.into());
        }
        let ingest = Arc::clone(&self.state.ingest);
        let mut published = super::super::detached(async move {
            ingest
                .publish(&topic, vec![event])
                .await
                .map_err(ApiError::from)
        })
        .await?;
        let published = published.pop().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the publish stored nothing",
            )
        })?;
        Ok(json!({
            "id": published.id,
            "position": published.position,
            "duplicate": published.duplicate,
        }))
    }

    async fn read_events(self) -> ApiResult<Value> {
        self.only(&[
            "topic", "after", "from", "limit", "wait_ms", "types", "subject", "filter",
        ])?;
        let topic = self.topic()?;
        let partitions = self
            .state
            .topics
            .get(&topic)
            .map(|t| t.partitions)
            .ok_or_else(|| ApiError::unknown_topic(&topic))?;
        let (after, from) = (self.string("after")?, self.string("from")?);
        let (parameter, position) = match (after, from) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_arguments",
                    "give `after` (a cursor) or `from` (earliest, latest or a time), not both",
                )
                .with("argument", "from"));
            }
            (Some(cursor), None) => ("after", cursor),
            (None, from) => ("from", from.unwrap_or_else(|| "earliest".into())),
        };
        if parameter == "after" && (position == "earliest" || position == "latest") {
            return Err(ApiError::bad_request(
                "invalid_arguments",
                "`after` takes a cursor (next_cursor of an earlier read); use `from` for earliest or latest",
            )
            .with("argument", "after"));
        }
        let cursor = super::super::events::resolve_from(
            self.state, &topic, partitions, &position, parameter,
        )
        .await?;
        let limit = self.number("limit", DEFAULT_READ_LIMIT as u64, 1, MAX_READ_LIMIT as u64)?;
        let wait_ms = self.number("wait_ms", 0, 0, MAX_READ_WAIT.as_millis() as u64)?;
        let filter = Filter {
            types: match self.arguments.get("types") {
                None | Some(Value::Null) => None,
                Some(Value::Array(items)) => Some(
                    items
                        .iter()
                        .map(|item| item.as_str().map(str::to_owned))
                        .collect::<Option<_>>()
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "invalid_arguments",
                                "argument \"types\" must be a list of event types",
                            )
                            .with("argument", "types")
                        })?,
                ),
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "invalid_arguments",
                        "argument \"types\" must be a list of event types",
                    )
                    .with("argument", "types"));
                }
            },
            subject_prefix: self.string("subject")?,
            expr: self
                .string("filter")?
                .map(|text| super::super::events::compile_filter(&text, "filter"))
                .transpose()?,
        };
        let batch = self
            .state
            .broker
            .read_bounded(
                &topic,
                &cursor,
                None,
                limit as usize,
                crate::broker::READER_BYTES,
                Duration::from_millis(wait_ms),
            )
            .await?;
        let events: Vec<Value> = batch
            .events
            .iter()
            .filter_map(|event| serde_json::from_slice::<Value>(&event.payload).ok())
            .filter(|event| filter.matches_event(event))
            .collect();
        let latest = self.state.broker.latest(&topic).await?;
        let has_more = (0..partitions).any(|p| batch.next.next(p) < latest.next(p));
        Ok(json!({
            "events": events,
            "next_cursor": batch.next.to_string(),
            "has_more": has_more,
            "next_poll_ms": if has_more { 0 } else { IDLE_POLL_MS },
        }))
    }

    fn number(&self, name: &str, default: u64, min: u64, max: u64) -> ApiResult<u64> {
        let value = match self.arguments.get(name) {
            None | Some(Value::Null) => return Ok(default),
            Some(value) => value.as_u64(),
        };
        value.filter(|v| (min..=max).contains(v)).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_arguments",
                format!("argument {name:?} must be a whole number from {min} to {max}"),
            )
            .with("argument", name)
            .with("max", max)
        })
    }
}

/// A tool's answer as a tool result: its JSON (an HTTP answer's body) as the structured
/// content, an error status as a tool error (the body names the problem).
pub(super) async fn tool_result(answer: ApiResult<Answer>) -> CallToolResult {
    let response = match answer {
        // Built here: no round trip through HTTP bytes.
        Ok(Answer::Json(value)) => return CallToolResult::structured(value),
        Ok(Answer::Http(response)) => response,
        Err(err) => err.into_response(),
    };
    let failed = !response.status().is_success();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let value: Value = serde_json::from_slice(&body).unwrap_or_else(
        |_| json!({ "error": { "code": "internal", "message": String::from_utf8_lossy(&body) } }),
    );
    if failed {
        CallToolResult::structured_error(value)
    } else {
        CallToolResult::structured(value)
    }
}

/// The tools, with their input and output schemas.
pub(super) static TOOLS: LazyLock<Vec<Tool>> = LazyLock::new(catalogue);

fn catalogue() -> Vec<Tool> {
    let topic =
        json!({ "type": "string", "description": "A topic name (list_topics shows them)." });
    let group = json!({ "type": "string", "description": "A consumer group: the workers sharing a queue." });
    let receipts = json!({ "type": "array", "items": { "type": "string" }, "minItems": 1, "maxItems": 1000, "description": "Receipts from receive." });
    let settled = |verb: &str| json!({ "type": "object", "properties": { verb: { "type": "integer" } }, "required": [verb] });
    let topic_shape = json!({
        "type": "object",
        "properties": {
            "name": { "type": "string" },
            "description": { "type": "string" },
            "partitions": { "type": "integer" },
            "types": { "type": "object", "description": "Event type → its description and JSON Schema." },
        },
        "required": ["name", "partitions", "types"],
    });
    let deliveries = json!({
        "type": "object",
        "properties": { "deliveries": { "type": "array", "items": {
            "type": "object",
            "properties": { "receipt": { "type": "string" }, "attempt": { "type": "integer" }, "event": { "type": "object" } },
            "required": ["receipt", "attempt", "event"],
        } } },
        "required": ["deliveries"],
    });
    let read_only = || ToolAnnotations::new().read_only(true);
    vec![
        tool(
            "list_topics",
            "List the topics this caller may see, with their event types and JSON Schemas.",
            json!({ "type": "object", "properties": {} }),
            json!({ "type": "object", "properties": { "topics": { "type": "array", "items": topic_shape } }, "required": ["topics"] }),
            Some(read_only()),
        ),
        tool(
            "describe_topic",
            "One topic: partitions, retention, event types with their JSON Schemas, and `head`, the cursor after its newest event.",
            json!({ "type": "object", "properties": { "topic": topic }, "required": ["topic"] }),
            topic_shape.clone(),
            Some(read_only()),
        ),
        tool(
            "publish_event",
            "Publish one event (a CloudEvent is built around `data`), validated against the event type's JSON Schema like an HTTP publish. Answers once it is durable, with its id and position.",
            json!({
                "type": "object",
                "properties": {
                    "topic": topic,
                    "type": { "type": "string", "description": "The event type; the topic must declare it." },
                    "data": { "description": "The event's payload (JSON)." },
                    "subject": { "type": "string" },
                    "id": { "type": "string", "description": "The event id (default: a new UUID); a repeated id is still stored again." },
                    "key": { "type": "string", "description": "Partition key (the CloudEvents partitionkey): events with one key stay in order. Default: the topic's key, else the subject." },
                },
                "required": ["topic", "type", "data"],
            }),
            json!({ "type": "object", "properties": { "id": { "type": "string" }, "position": { "type": "string" } }, "required": ["id", "position"] }),
            Some(ToolAnnotations::new().read_only(false).destructive(false)),
        ),
        tool(
            "read_events",
            "Read a topic's events in order from a position. Keep `next_cursor` and pass it as `after` next time: every event comes exactly once, across restarts of the agent or of Switchyard (the cursor is the same as SSE ids and pages use). `wait_ms` waits for new events when there are none.",
            json!({
                "type": "object",
                "properties": {
                    "topic": topic,
                    "after": { "type": "string", "description": "A cursor: next_cursor of an earlier read." },
                    "from": { "type": "string", "description": "Where to start without a cursor: earliest (default), latest, or an RFC 3339 time." },
                    "limit": { "type": "integer", "minimum": 1, "maximum": MAX_READ_LIMIT },
                    "wait_ms": { "type": "integer", "minimum": 0, "maximum": MAX_READ_WAIT.as_millis() as u64 },
                    "types": { "type": "array", "items": { "type": "string" }, "description": "Only these event types." },
                                        "subject": { "type": "string", "description": "Only events whose subject starts with this." },
                    "filter": { "type": "string", "description": "A CEL expression over the event: only those it is true of, e.g. data.amount > 100 && data.currency == \"EUR\"." },
                },
                "required": ["topic"],
            }),
            json!({
                "type": "object",
                "properties": {
                    "events": { "type": "array", "items": { "type": "object" } },
                    "next_cursor": { "type": "string" },
                    "has_more": { "type": "boolean" },
                    "next_poll_ms": { "type": "integer" },
                },
                "required": ["events", "next_cursor", "has_more", "next_poll_ms"],
            }),
            Some(read_only()),
        ),
        tool(
            "get_event",
            "One event by its id. Searches the topic from `after` (a cursor; default the oldest retained event) for at most 100000 events; when it stops short it says where to go on.",
            json!({
                "type": "object",
                "properties": {
                    "topic": topic,
                    "id": { "type": "string", "description": "The event's id." },
                    "after": { "type": "string", "description": "A cursor to search from (e.g. `searched_to` of an earlier call)." },
                },
                "required": ["topic", "id"],
            }),
            json!({
                "type": "object",
                "properties": {
                    "event": { "type": "object" },
                    "position": { "type": "string", "description": "The cursor right after the event." },
                },
                "required": ["event", "position"],
            }),
            Some(read_only()),
        ),
        tool(
            "receive",
            "Lease up to `max` events of a topic's consumer group (a queue): each goes to one worker at a time until acked, nacked or its lease runs out.",
            json!({
                "type": "object",
                "properties": {
                    "topic": topic, "group": group,
                    "member": { "type": "string", "description": "This worker's name (the group's status lists leases by it)." },
                    "max": { "type": "integer", "minimum": 1, "maximum": 1000 },
                    "lease": { "type": "string", "description": "How long the events stay leased, e.g. 30s." },
                    "wait": { "type": "string", "description": "How long to wait for events when there are none, e.g. 5s." },
                    "start": { "type": "string", "enum": ["earliest", "latest"], "description": "Where a new group starts." },
                    "filter": { "type": "string", "description": "A CEL expression over the event, fixed when this receive creates the group: only the events it is true of are delivered, e.g. data.amount > 100." },
                },
                "required": ["topic", "group"],
            }),
            deliveries,
            None,
        ),
        tool(
            "ack",
            "Finish received events: answers once that is committed; they are not delivered again.",
            json!({ "type": "object", "properties": { "topic": topic, "group": group, "receipts": receipts }, "required": ["topic", "group", "receipts"] }),
            settled("acked"),
            None,
        ),
        tool(
            "nack",
            "Hand received events back: due again after `delay` (e.g. 10s; default at once), for any worker.",
            json!({ "type": "object", "properties": { "topic": topic, "group": group, "receipts": receipts, "delay": { "type": "string" } }, "required": ["topic", "group", "receipts"] }),
            settled("nacked"),
            None,
        ),
        tool(
            "extend",
            "Renew the leases of received events for `lease` from now (default 30s).",
            json!({ "type": "object", "properties": { "topic": topic, "group": group, "receipts": receipts, "lease": { "type": "string" } }, "required": ["topic", "group", "receipts"] }),
            settled("extended"),
            None,
        ),
        tool(
            "group_status",
            "Where a consumer group is: committed cursor, events outstanding and leased, members and processes.",
            json!({ "type": "object", "properties": { "topic": topic, "group": group }, "required": ["topic", "group"] }),
            json!({ "type": "object", "properties": { "committed": { "type": "string" } }, "required": ["committed"] }),
            Some(read_only()),
        ),
        tool(
            "handler_status",
            "The handlers (workers that deliver a topic's events to a target): health, throughput, latency, lag, breaker state per target, dead letters. Needs the admin scope.",
            json!({ "type": "object", "properties": { "handler": { "type": "string", "description": "Only this handler." } } }),
            json!({ "type": "object", "properties": { "handlers": { "type": "array", "items": { "type": "object" } } }, "required": ["handlers"] }),
            Some(read_only()),
        ),
        tool(
            "replay_dead_letters",
            "Deliver a handler's unresolved dead letters again (all of them, or `ids`, or a cursor range `from`/`to` over the dead-letter topic). Answers at once with what is being replayed and what was skipped; each letter's outcome appears in the handler's result or dead-letter topic. Needs the admin scope.",
            json!({
                "type": "object",
                "properties": {
                    "handler": { "type": "string" },
                    "ids": { "type": "array", "items": { "type": "string" }, "description": "Dead-letter event ids." },
                    "from": { "type": "string", "description": "A cursor over the dead-letter topic." },
                    "to": { "type": "string", "description": "A cursor over the dead-letter topic." },
                },
                "required": ["handler"],
            }),
            json!({
                "type": "object",
                "properties": {
                    "replaying": { "type": "integer" },
                    "ids": { "type": "array", "items": { "type": "string" } },
                    "skipped": {},
                },
                "required": ["replaying", "ids"],
            }),
            Some(ToolAnnotations::new().read_only(false).destructive(false)),
        ),
    ]
}

fn tool(
    name: &'static str,
    description: &'static str,
    input: Value,
    output: Value,
    annotations: Option<ToolAnnotations>,
) -> Tool {
    let object = |value: Value| match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    };
    let tool = Tool::new(name, description, object(input)).with_raw_output_schema(object(output));
    match annotations {
        Some(annotations) => tool.with_annotations(annotations),
        None => tool,
    }
}
