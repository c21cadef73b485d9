//! An AsyncAPI 3.0 document of what this Switchyard serves, generated from
//! the loaded topics, handlers and webhook sources: per topic a channel for
//! publishing (`POST /v1/topics/{topic}/events`) and one for following it
//! over SSE (`GET …/stream`), each carrying one message per event type (the
//! CloudEvents envelope with the type's JSON Schema as `data`); a channel per
//! webhook source; the handlers as the operations that write their outcome
//! topics; bearer tokens as the security scheme. `GET /v1/asyncapi.json`
//! serves it, `switchyard asyncapi` prints it.

use serde_json::{Map, Value, json};

use std::sync::Arc;

use crate::handler::HandlerSpec;
use crate::topic::{Topic, Topics};

/// What the document describes.
pub struct Described {
    pub topics: Vec<Arc<Topic>>,
    pub handlers: Vec<HandlerSpec>,
    /// Where the server is reached (`host:port`), when known.
    pub host: Option<String>,
    /// Whether requests need a bearer token.
    pub secured: bool,
}

impl Described {
    /// Everything loaded.
    pub fn all(topics: &Topics, handlers: Vec<HandlerSpec>) -> Self {
        Self {
            topics: topics
                .iter()
                .filter(|topic| topic.origin != crate::topic::Origin::Switchyard)
                .collect(),
            handlers,
            host: None,
            secured: false,
        }
    }
}

/// AsyncAPI keys (channels, operations) take `[A-Za-z0-9_-]`; topic names
/// may hold dots.
fn key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The message of one event type of one topic: the structured CloudEvent.
fn message(topic: &Topic, ty: &str, description: &str, schema: &Value) -> Value {
    // The type's schema describes `data`. Its `$schema` (draft 2020-12)
    // is left out: AsyncAPI's schema format is its own JSON Schema dialect.
    let mut data = schema.clone();
    if let Some(object) = data.as_object_mut() {
        object.remove("$schema");
    }
    json!({
        "name": ty,
        "title": ty,
        "summary": description,
        "contentType": "application/cloudevents+json",
        "payload": {
            "type": "object",
            "description": format!("A CloudEvent of type {ty} on topic {}", topic.name),
            "required": ["specversion", "id", "source", "type"],
            "properties": {
                "specversion": { "type": "string", "const": "1.0" },
                "id": { "type": "string", "description": "Unique per source" },
                "source": { "type": "string", "description": "Who produced it (a URI-reference)" },
                "type": { "type": "string", "const": ty },
                "subject": { "type": "string" },
                "time": { "type": "string", "format": "date-time" },
                "datacontenttype": { "type": "string" },
                "traceparent": { "type": "string", "description": "W3C trace context" },
                "data": data,
            },
        },
    })
}

fn message_key(topic: &str, ty: &str) -> String {
    key(&format!("{topic}__{ty}"))
}

/// The channel messages of a topic, as references to the components.
fn channel_messages(topic: &Topic) -> Map<String, Value> {
    topic
        .types
        .keys()
        .map(|ty| {
            let reference = format!("#/components/messages/{}", message_key(&topic.name, ty));
            (key(ty), json!({ "$ref": reference }))
        })
        .collect()
}

/// Every message of a channel, for an operation.
fn operation_messages(channel: &str, topic: &Topic) -> Vec<Value> {
    topic
        .types
        .keys()
        .map(|ty| json!({ "$ref": format!("#/channels/{channel}/messages/{}", key(ty)) }))
        .collect()
}

pub fn document(described: &Described) -> Value {
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    let security = if described.secured {
        json!([{ "$ref": "#/components/securitySchemes/bearer" }])
    } else {
        json!([])
    };
    let mut operation =
        |id: String, action: &str, channel: &str, topic: &Topic, text: String, method: &str| {
            operations.insert(
                id,
                json!({
                    "action": action,
                    "channel": { "$ref": format!("#/channels/{channel}") },
                    "summary": text,
                    "messages": operation_messages(channel, topic),
                    "security": security,
                    "bindings": { "http": { "method": method } },
                }),
            );
        };
    for topic in &described.topics {
        for (ty, declared) in &topic.types {
            messages.insert(
                message_key(&topic.name, ty),
                message(topic, ty, &declared.description, &declared.schema),
            );
        }
        let name = &topic.name;
        let publish = key(name);
        let stream = format!("{publish}_stream");
        channels.insert(
            publish.clone(),
            json!({
                "address": format!("/v1/topics/{name}/events"),
                "title": name,
                "description": topic.description,
                "messages": channel_messages(topic),
            }),
        );
        channels.insert(
            stream.clone(),
            json!({
                "address": format!("/v1/topics/{name}/stream"),
                "title": format!("{name} (SSE)"),
                "description": format!("Server-Sent Events of topic {name}: one event per CloudEvent, its id the cursor to resume from (Last-Event-ID)"),
                "messages": channel_messages(topic),
            }),
        );
        operation(
            format!("publish_{publish}"),
            "receive",
            &publish,
            topic,
            format!(
                "Publish events to {name}: validated against their type's schema, answered once durable"
            ),
            "POST",
        );
        operation(
            format!("follow_{publish}"),
            "send",
            &stream,
            topic,
            format!("Follow {name} over SSE from a cursor or time"),
            "GET",
        );
        for source in &topic.webhooks {
            let channel = format!("webhook_{}", key(&source.name));
            channels.insert(
                channel.clone(),
                json!({
                    "address": format!("/v1/webhooks/{}", source.name),
                    "title": format!("webhook {}", source.name),
                    "description": format!(
                        "Signed deliveries ({} scheme) into topic {name}; only genuine ones get in, once",
                        source.scheme.name()
                    ),
                    "messages": channel_messages(topic),
                }),
            );
            operation(
                format!("receive_{channel}"),
                "receive",
                &channel,
                topic,
                format!("Receive {} webhooks into {name}", source.name),
                "POST",
            );
        }
    }
    // Handlers: the operations that write their outcome topics.
    for handler in &described.handlers {
        for output in handler.outputs() {
            let Some(topic) = described.topics.iter().find(|t| t.name == output) else {
                continue;
            };
            operation(
                format!("{}_to_{}", key(&handler.name), key(output)),
                "send",
                &format!("{}_stream", key(output)),
                topic,
                format!(
                    "Handler {}: delivers {}'s events to its target and publishes the outcomes to {output}",
                    handler.name, handler.topic
                ),
                "GET",
            );
        }
    }
    let mut server = json!({
        "host": described.host.clone().unwrap_or_else(|| "localhost:8080".into()),
        "protocol": "http",
        "description": "Switchyard's HTTP API: publish, SSE, webhooks",
    });
    if described.secured {
        server["security"] = security.clone();
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Switchyard",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The topics, event types, webhook sources and handlers this Switchyard serves. Events are CloudEvents; each type's data has a JSON Schema.",
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": { "switchyard": server },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A token from `switchyard token` (or your issuer) with publish / subscribe / consume / admin scopes",
                },
            },
        },
    })
}
