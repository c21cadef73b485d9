//! Agents over the Model Context Protocol: `POST /mcp` (Streamable HTTP),
//! served with the official Rust SDK (`rmcp`) for revision 2026-07-28
//! (stateless: each request names its revision in `_meta`) and 2025-11-25
//! (`initialize`, `Mcp-Session-Id`). Each tool is the HTTP API's operation
//! under another name: the same validation, the same errors (a tool error
//! carries the HTTP API's `{"error": {...}}` body), the same cursors, so an
//! agent can move between MCP, SSE and pages with one position.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rmcp::ErrorData as McpError;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, JsonObject,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState};
use crate::auth::Access;
use crate::event::{Attributes, CloudEvent, Filter};

/// Events a `read_events` call returns when `limit` is not given, and the
/// most it may ask for (as pages).
const DEFAULT_READ_LIMIT: usize = 100;
const MAX_READ_LIMIT: usize = 1000;
/// The longest `wait_ms` of a `read_events` long poll.
const MAX_READ_WAIT: Duration = Duration::from_secs(30);
/// What `next_poll_ms` suggests when an agent has read everything.
const IDLE_POLL_MS: u64 = 1000;

/// The `/mcp` service. Hosts are not checked (Switchyard answers on any
/// name it is reached by); a request with an `Origin` header must come from
/// one of `--cors-origins`, so that a web page elsewhere cannot drive a
/// local Switchyard through the browser (DNS rebinding).
pub(super) fn service(state: &Arc<AppState>) -> StreamableHttpService<Mcp, LocalSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_allowed_origins(state.cors_origins.clone())
        .enforce_origin_validation()
        .with_json_response(true)
        .with_cancellation_token(state.shutdown.child_token());
    let state = Arc::clone(state);
    StreamableHttpService::new(
        move || {
            Ok(Mcp {
                state: Arc::clone(&state),
            })
        },
        Default::default(),
        config,
    )
}

#[derive(Clone)]
pub(super) struct Mcp {
    state: Arc<AppState>,
}

impl ServerHandler for Mcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("switchyard", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Switchyard is an event bus. list_topics shows the topics and their event \
                 types; read_events follows a topic from a cursor (keep next_cursor and pass it \
                 as `after` next time: every event comes once, across restarts); publish_event \
                 stores an event; receive/ack/nack/extend consume a topic as a queue.",
            )
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(&[ProtocolVersion::V_2026_07_28, ProtocolVersion::V_2025_11_25])
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        // The guard in front of /mcp put the caller's access there.
        let access = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Access>())
            .cloned()
            .ok_or_else(|| McpError::internal_error("the request carries no access", None))?;
        let arguments = request.arguments.unwrap_or_default();
        let Some(tool) = tools().into_iter().find(|t| t.name == request.name) else {
            return Err(McpError::invalid_params(
                format!("no tool {:?}", request.name),
                Some(
                    json!({ "tools": tools().iter().map(|t| t.name.clone()).collect::<Vec<_>>() }),
                ),
            ));
        };
        let call = Call {
            state: &self.state,
            access: &access,
            arguments,
        };
        let response = match call.run(&tool.name).await {
            Ok(response) => response,
            Err(err) => err.into_response(),
        };
        Ok(tool_result(response).await.into())
    }
}

/// One tool call: the caller's access and the tool's arguments.
struct Call<'a> {
    state: &'a Arc<AppState>,
    access: &'a Access,
    arguments: JsonObject,
}

impl Call<'_> {
    async fn run(self, tool: &str) -> ApiResult<Response> {
        let state = Arc::clone(self.state);
        match tool {
            "list_topics" => {
                self.only(&[])?;
                Ok(super::topics_json(&state, self.access).into_response())
            }
            "describe_topic" => {
                self.only(&["topic"])?;
                let topic = self.topic()?;
                self.access.may_subscribe(&topic).map_err(ApiError::from)?;
                let found = state
                    .topics
                    .get(&topic)
                    .ok_or_else(|| ApiError::unknown_topic(&topic))?;
                let mut described = super::topic_json(found);
                described["head"] = state.broker.latest(&topic).await?.to_string().into();
                Ok(axum::Json(described).into_response())
            }
            "publish_event" => self.publish_event().await,
            "read_events" => self.read_events().await,
            "receive" => {
                let (topic, group) = self.group(&["member", "max", "lease", "wait", "start"])?;
                let query = self.rest(&["topic", "group"])?;
                let query = serde_json::from_value(query).map_err(invalid_arguments)?;
                super::groups::receive(State(state), Path((topic, group)), Ok(Query(query))).await
            }
            "ack" | "nack" | "extend" => {
                let extra = match tool {
                    "nack" => &["receipts", "delay"][..],
                    "extend" => &["receipts", "lease"][..],
                    _ => &["receipts"][..],
                };
                let (topic, group) = self.group(extra)?;
                let body = Bytes::from(self.rest(&["topic", "group"])?.to_string());
                let path = Path((topic, group));
                Ok(match tool {
                    "ack" => super::groups::ack(State(state), path, body)
                        .await
                        .into_response(),
                    "nack" => super::groups::nack(State(state), path, body)
                        .await
                        .into_response(),
                    _ => super::groups::extend(State(state), path, body)
                        .await
                        .into_response(),
                })
            }
            "group_status" => {
                let (topic, group) = self.group(&[])?;
                Ok(super::groups::status(State(state), Path((topic, group)))
                    .await
                    .into_response())
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

    /// `topic` and `group` of a queue tool (besides `extra` arguments), once
    /// the caller may consume them.
    fn group(&self, extra: &[&str]) -> ApiResult<(String, String)> {
        let mut allowed = vec!["topic", "group"];
        allowed.extend_from_slice(extra);
        self.only(&allowed)?;
        let (topic, group) = (self.topic()?, self.required("group")?);
        self.access
            .may_consume(&topic, &group)
            .map_err(ApiError::from)?;
        Ok((topic, group))
    }

    /// The arguments without `taken`, as one JSON object.
    fn rest(&self, taken: &[&str]) -> ApiResult<Value> {
        let rest: JsonObject = self
            .arguments
            .iter()
            .filter(|(k, _)| !taken.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Value::Object(rest))
    }

    async fn publish_event(self) -> ApiResult<Response> {
        self.only(&["topic", "type", "data", "subject", "id"])?;
        let topic = self.topic()?;
        self.access.may_publish(&topic).map_err(ApiError::from)?;
        super::publishable(self.state, &topic)?;
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
        let ingest = Arc::clone(&self.state.ingest);
        let mut published = super::detached(async move {
            ingest
                .publish(&topic, vec![event])
                .await
                .map_err(ApiError::from)
        })
        .await?;
        let published = published
            .pop()
            .ok_or_else(|| ApiError::bad_request("internal", "the publish stored nothing"))?;
        Ok(
            axum::Json(json!({ "id": published.id, "position": published.position }))
                .into_response(),
        )
    }

    async fn read_events(self) -> ApiResult<Response> {
        self.only(&[
            "topic", "after", "from", "limit", "wait_ms", "types", "subject",
        ])?;
        let topic = self.topic()?;
        self.access.may_subscribe(&topic).map_err(ApiError::from)?;
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
        let cursor =
            super::events::resolve_from(self.state, &topic, partitions, &position, parameter)
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
            .filter(|event| {
                let head = Attributes::of(event);
                filter.matches(&head.ty, head.subject.as_deref())
            })
            .collect();
        let latest = self.state.broker.latest(&topic).await?;
        let has_more = (0..partitions).any(|p| batch.next.next(p) < latest.next(p));
        Ok(axum::Json(json!({
            "events": events,
            "next_cursor": batch.next.to_string(),
            "has_more": has_more,
            "next_poll_ms": if has_more { 0 } else { IDLE_POLL_MS },
        }))
        .into_response())
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

fn invalid_arguments(err: serde_json::Error) -> ApiError {
    ApiError::bad_request("invalid_arguments", err.to_string())
}

/// An HTTP answer as a tool result: its JSON body as the structured
/// content, an error status as a tool error (the body names the problem).
async fn tool_result(response: Response) -> CallToolResult {
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
fn tools() -> Vec<Tool> {
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
